"""SIGHUP (reload) and SIGTERM (graceful stop)."""

import signal
import socket

import pytest

from moatlib import HOSTNAME, Client, ConnectionClosed, check, simple_message, wait_for


def banner(m):
    with m.connect() as c:
        text = c.greeting.lines[0] if c.greeting.code == 220 else None
        c.quit()
        return text


def not_accepting(m):
    """True once a new connection is refused, or closed/421'd without a 220."""
    try:
        c = Client(m.port, greeting=False, timeout=3)
    except OSError:
        return True
    with c:
        try:
            r = c.reply(timeout=3)
        except (ConnectionClosed, socket.timeout, OSError):
            return True
        return r.code != 220


# ------------------------------------------------------------ SIGHUP

def test_reload_changes_banner_keeps_sessions(moat_factory):
    m = moat_factory()
    old = m.connect()
    try:
        old.ehlo()
        old.mail()
        old.rcpt("sig-old@example.test")
        m.main["smtpd_banner"] = "$myhostname ESMTP reloaded"
        m.reload()
        wait_for(lambda: banner(m) == "%s ESMTP reloaded" % HOSTNAME, timeout=10,
                 interval=0.2, what="the new banner")
        # The session opened before the reload finishes its transaction.
        old.data(simple_message("before reload"))
        old.quit()
    finally:
        old.close()
    m.wait_mails("sig-old", 1)
    with m.connect() as c:
        c.ehlo()
        c.sendmail("a@b.test", ["sig-new@example.test"], simple_message("after reload"))
        c.quit()
    m.wait_mails("sig-new", 1)
    assert m.running()


def test_reload_twice(moat_factory):
    m = moat_factory()
    for i in range(2):
        m.main["smtpd_banner"] = "$myhostname ESMTP gen%d" % i
        m.reload()
        wait_for(lambda: banner(m) == "%s ESMTP gen%d" % (HOSTNAME, i), timeout=10,
                 interval=0.2, what="banner gen%d" % i)


def test_reload_changes_parameters(moat_factory):
    # Not only the banner: limits come from the new config too.
    m = moat_factory()
    with m.connect() as c:
        c.ehlo()
        c.expect("MAIL FROM:<a@b.test> SIZE=5000", 250, "2.1.0", "Ok")
        c.quit()
    m.main["message_size_limit"] = "4000"
    m.main["smtpd_banner"] = "$myhostname ESMTP small"
    m.reload()
    wait_for(lambda: banner(m) == "%s ESMTP small" % HOSTNAME, timeout=10, interval=0.2,
             what="reloaded config")
    with m.connect() as c:
        c.ehlo()
        c.expect("MAIL FROM:<a@b.test> SIZE=5000", 552, "5.3.4", "Message size exceeds fixed limit")
        c.quit()


@pytest.mark.parametrize("bad", ["this line has no equals sign",
                                 "smtpd_timeout = banana",
                                 "line_length_limit = 5"])
def test_reload_invalid_config_keeps_old(moat_factory, bad):
    m = moat_factory()
    before = banner(m)
    m.main["smtpd_banner"] = "$myhostname ESMTP must-not-appear"
    m.main_extra_lines = [bad]
    m.reload()
    m.wait_log(r"main\.cf:\d+")
    assert m.running()
    assert banner(m) == before
    with m.connect() as c:
        c.ehlo()
        c.sendmail("a@b.test", ["sig-bad@example.test"], simple_message("still serving"))
        c.quit()
    m.wait_mails("sig-bad", 1)
    # Fixing the file and reloading again works.
    m.main_extra_lines = []
    m.main["smtpd_banner"] = "$myhostname ESMTP fixed"
    m.reload()
    wait_for(lambda: banner(m) == "%s ESMTP fixed" % HOSTNAME, timeout=10, interval=0.2,
             what="the fixed banner")


def test_reload_changes_mydestination(moat_factory):
    # the client (127.0.0.1) outside mynetworks: other.test is refused until it is ours
    m = moat_factory(main={"mynetworks": "192.0.2.0/24",
                           "smtpd_recipient_restrictions": "permit_mynetworks, reject_unauth_destination"})
    with m.connect() as c:
        c.ehlo()
        c.mail()
        c.expect("RCPT TO:<sig-dest@other.test>", 554, "5.7.1", "<sig-dest@other.test>: Relay access denied")
        c.quit()
    m.main["mydestination"] = "localhost, example.test, other.test"
    m.main["smtpd_banner"] = "$myhostname ESMTP dest"
    m.reload()
    wait_for(lambda: banner(m) == "%s ESMTP dest" % HOSTNAME, timeout=10, interval=0.2,
             what="reloaded config")
    with m.connect() as c:
        c.ehlo()
        c.sendmail("a@b.test", ["sig-dest@other.test"], simple_message("dest"))
        c.quit()
    m.wait_mails("sig-dest", 1)


def test_reload_adds_service(moat_factory):
    m = moat_factory()
    port2 = m.alloc_port()
    # (-o values cannot contain spaces without Postfix's { } quoting.)
    m.master_extra = ["127.0.0.1:%d inet n - n - - smtpd" % port2,
                      "  -o smtpd_banner=second.example.test"]
    m.reload()
    m.wait_listening(port=port2)

    def second():
        with Client(port2) as c:
            return c.greeting.lines[0] == "second.example.test"
    wait_for(second, timeout=10, interval=0.2, what="the new service")
    assert banner(m) == "%s ESMTP moat" % HOSTNAME


# ------------------------------------------------------------ SIGTERM

def test_sigterm_idle_exits_zero(moat_factory):
    m = moat_factory()
    m.signal(signal.SIGTERM)
    assert m.wait_exit(15) == 0, m.stderr()


def test_sigterm_lets_open_session_finish(moat_factory):
    m = moat_factory(main={"moat_shutdown_timeout": "20s"})
    c = m.connect()
    try:
        c.ehlo()
        c.mail()
        c.rcpt("sig-term@example.test")
        m.signal(signal.SIGTERM)
        wait_for(lambda: not_accepting(m), timeout=10, interval=0.2,
                 what="the listener to stop accepting")
        qid = c.data(simple_message("during shutdown"))
        assert qid
        # Then the server may end the session itself (421 4.3.2, Postfix's
        # "Service shutting down") or still answer QUIT.
        try:
            c.send(b"QUIT\r\n")
        except OSError:
            pass
        end = c.replies_until_close()
        assert len(end) == 1 and (end[0].code, end[0].enh) in ((221, "2.0.0"), (421, "4.3.2")), end
    finally:
        c.close()
    assert m.wait_exit(15) == 0, m.stderr()
    # Delivered before the exit, or (still queued) after a restart: once.
    if not m.mails("sig-term"):
        m.start()
    m.wait_mails("sig-term", 1)
    m.wait_queue_empty()
    assert len(m.mails("sig-term")) == 1


def test_sigterm_shutdown_timeout_closes_idle_session(moat_factory):
    m = moat_factory(main={"moat_shutdown_timeout": "1s"})
    c = m.connect(timeout=20)
    try:
        c.ehlo()
        m.signal(signal.SIGTERM)
        assert c.wait_closed(15), "session not closed after moat_shutdown_timeout"
        # If the server said goodbye, it was a 421.
        if c.buf:
            assert c.buf.startswith(b"421 "), c.buf
    finally:
        c.close()
    assert m.wait_exit(15) == 0, m.stderr()


def test_sigterm_mid_data_loses_nothing_accepted(moat_factory):
    # A message cut off by the shutdown is not accepted and not delivered.
    m = moat_factory(main={"moat_shutdown_timeout": "1s"})
    c = m.connect(timeout=20)
    try:
        c.ehlo()
        c.mail()
        c.rcpt("sig-cut@example.test")
        check(c.cmd("DATA"), 354)
        c.send(b"Subject: cut\r\n\r\nhalf")
        m.signal(signal.SIGTERM)
        assert c.wait_closed(15)
        assert b"250 " not in c.buf
    finally:
        c.close()
    assert m.wait_exit(15) == 0, m.stderr()
    assert m.queue_files("active") == []
    m.start()
    with m.connect() as c2:
        c2.ehlo()
        c2.sendmail("a@b.test", ["sig-cut-after@example.test"], simple_message("after"))
        c2.quit()
    m.wait_mails("sig-cut-after", 1)
    m.wait_queue_empty()
    assert m.mails("sig-cut") == []
    assert m.queue_files("incoming") == []
