"""Limits on what a client may send: line length, message size,
recipients, errors, junk commands, idle time, concurrent sessions."""

import socket
import struct
import time

import pytest

from moatlib import HOSTNAME, LOCAL_CLIENT_RE, Client, check, dot_stuff, queued_id, simple_message, wait_for


# ------------------------------------------------------------ line length

@pytest.mark.parametrize("size", [2100, 5000, 200000])
def test_line_too_long(shared_moat, size):
    with shared_moat.connect() as c:
        c.ehlo()
        # The tail of the long line must not be read as a command of its own.
        c.send(b"NOOP " + b"x" * (size - 10) + b"QUIT\r\nNOOP\r\n")
        r = c.reply()
        check(r, 500, "5.5.2", "Error: line too long")
        check(c.reply(), 250, "2.0.0", "Ok")
        c.send(b"QUIT\r\n")
        rest = c.replies_until_close()
        assert [x.code for x in rest] == [221], rest


def test_long_line_in_mail_command(shared_moat):
    with shared_moat.connect() as c:
        c.ehlo()
        c.send(b"MAIL FROM:<" + b"a" * 3000 + b"@b.test>\r\n")
        check(c.reply(), 500, "5.5.2", "Error: line too long")
        # No transaction was started by the truncated command.
        c.expect("RCPT TO:<u@example.test>", 503, "5.5.1", "Error: need MAIL command")
        c.quit()


def test_line_length_limit_configurable(moat_factory):
    m = moat_factory(main={"line_length_limit": "1024"})
    with m.connect() as c:
        c.ehlo()
        c.send(b"NOOP " + b"y" * 1500 + b"\r\n")
        check(c.reply(), 500, "5.5.2", "Error: line too long")
        c.expect("NOOP", 250, "2.0.0", "Ok")
        c.quit()


def test_long_content_lines_are_not_command_lines(shared_moat):
    # line_length_limit is about commands; a 5000-byte body line is
    # still delivered (it may be folded, but no byte may be lost).
    long = b"z" * 5000
    with shared_moat.connect() as c:
        c.ehlo()
        c.mail()
        c.rcpt("lim-longbody@example.test")
        check(c.cmd("DATA"), 354)
        c.send(b"Subject: long\r\n\r\n" + long + b"\r\nend\r\n.\r\n")
        queued_id(c.reply())
        c.quit()
    mail = shared_moat.wait_mails("lim-longbody", 1)[0]
    body = mail.split(b"\n\n", 1)[1]
    assert body.replace(b"\n", b"") == long + b"end"


# ------------------------------------------------------------ message size

def test_message_size_limit_data(moat_factory):
    m = moat_factory(main={"message_size_limit": "2000"})
    with m.connect() as c:
        c.ehlo()
        c.mail()
        c.rcpt("lim-size@example.test")
        check(c.cmd("DATA"), 354)
        big = "Subject: big\r\n\r\n" + ("0123456789" * 10 + "\r\n") * 40
        c.send(dot_stuff(big))
        check(c.reply(), 552, "5.3.4", "Message size exceeds fixed limit")
        # The session continues and the transaction is over.
        c.expect("RCPT TO:<lim-size@example.test>", 503, "5.5.1", "Error: need MAIL command")
        qid = c.sendmail("a@b.test", ["lim-size@example.test"], "Subject: small\r\n\r\nsmall\r\n")
        c.quit()
    mails = m.wait_mails("lim-size", 1)
    m.wait_queue_empty()
    mails = m.mails("lim-size")
    assert len(mails) == 1 and b"Subject: small" in mails[0]
    assert qid


def test_message_size_limit_huge_stream(moat_factory):
    # Far over the limit: the server keeps reading to the end of data
    # (it must not answer in the middle of DATA) and nothing is queued.
    m = moat_factory(main={"message_size_limit": "10000"})
    with m.connect() as c:
        c.ehlo()
        c.mail()
        c.rcpt("lim-huge@example.test")
        check(c.cmd("DATA"), 354)
        chunk = (b"x" * 998 + b"\r\n") * 100
        for _ in range(30):
            c.send(chunk)
        c.send(b".\r\n")
        check(c.reply(timeout=30), 552, "5.3.4", "Message size exceeds fixed limit")
        c.expect("NOOP", 250, "2.0.0", "Ok")
        c.quit()
    m.wait_queue_empty()
    assert m.mails("lim-huge") == []
    assert m.queue_files("incoming") == [] and m.queue_files("active") == []


def test_message_size_limit_mail_size_param(moat_factory):
    m = moat_factory(main={"message_size_limit": "2000"})
    with m.connect() as c:
        c.ehlo()
        c.expect("MAIL FROM:<a@b.test> SIZE=2001", 552, "5.3.4", "Message size exceeds fixed limit")
        c.expect("MAIL FROM:<a@b.test> SIZE=1999", 250, "2.1.0", "Ok")
        c.quit()


def test_message_size_limit_bdat(moat_factory):
    m = moat_factory(main={"message_size_limit": "2000"})
    with m.connect() as c:
        c.ehlo()
        c.mail()
        c.rcpt("lim-bdat@example.test")
        p = b"Subject: big\r\n\r\n" + b"y" * 5000 + b"\r\n"
        c.send(b"BDAT %d LAST\r\n" % len(p) + p)
        r = c.reply()
        check(r, 552, "5.3.4")
        c.quit()
    m.wait_queue_empty()
    assert m.mails("lim-bdat") == []


# ------------------------------------------------------------ recipients

def test_recipient_limit(moat_factory):
    m = moat_factory(main={"smtpd_recipient_limit": "3"})
    with m.connect() as c:
        c.ehlo()
        c.mail()
        for i in range(3):
            c.rcpt("lim-r%d@example.test" % i)
        c.expect("RCPT TO:<lim-r3@example.test>", 452, "4.5.3", "Error: too many recipients")
        c.expect("RCPT TO:<lim-r4@example.test>", 452, "4.5.3", "Error: too many recipients")
        c.data(simple_message("rcptlimit"))
        c.quit()
    for i in range(3):
        m.wait_mails("lim-r%d" % i, 1)
    m.wait_queue_empty()
    assert m.mails("lim-r3") == [] and m.mails("lim-r4") == []


def test_recipient_limit_resets_per_transaction(moat_factory):
    m = moat_factory(main={"smtpd_recipient_limit": "2"})
    with m.connect() as c:
        c.ehlo()
        for t in range(2):
            c.mail()
            c.rcpt("lim-t%d-a@example.test" % t)
            c.rcpt("lim-t%d-b@example.test" % t)
            c.expect("RCPT TO:<lim-x@example.test>", 452, "4.5.3", "Error: too many recipients")
            c.expect("RSET", 250, "2.0.0", "Ok")
        c.quit()


# ------------------------------------------------------------ error limits

def test_hard_error_limit(moat_factory):
    m = moat_factory(main={"smtpd_soft_error_limit": "2", "smtpd_hard_error_limit": "4",
                           "smtpd_error_sleep_time": "0"})
    with m.connect() as c:
        c.ehlo()
        for i in range(4):
            c.expect("BOGUS%d" % i, 502, "5.5.2", "Error: command not recognized")
        # Postfix sends the 421 at once after the error that reached the
        # limit; a server that waits for the next command is as correct.
        try:
            c.send(b"NOOP\r\n")
        except OSError:
            pass
        replies = c.replies_until_close(timeout=10)
        assert replies, "no 421 before close"
        check(replies[0], 421, "4.7.0", "%s Error: too many errors" % HOSTNAME)
        assert len(replies) == 1, replies


def test_errors_below_hard_limit_keep_session(moat_factory):
    m = moat_factory(main={"smtpd_soft_error_limit": "2", "smtpd_hard_error_limit": "10",
                           "smtpd_error_sleep_time": "0"})
    with m.connect() as c:
        c.ehlo()
        for i in range(8):
            c.expect("BOGUS%d" % i, 502, "5.5.2", "Error: command not recognized")
        c.sendmail("a@b.test", ["lim-err@example.test"], simple_message("after errors"))
        c.quit()
    m.wait_mails("lim-err", 1)


def test_soft_error_limit_delays_replies(moat_factory):
    # Only a lower bound is checked: a delay the server is configured to
    # make cannot be shortened by a slow machine, so this cannot flake.
    m = moat_factory(main={"smtpd_soft_error_limit": "2", "smtpd_hard_error_limit": "100",
                           "smtpd_error_sleep_time": "2s"})
    with m.connect(timeout=20) as c:
        c.ehlo()
        c.expect("BOGUS1", 502, "5.5.2")
        c.expect("BOGUS2", 502, "5.5.2")
        t0 = time.monotonic()
        c.expect("BOGUS3", 502, "5.5.2")
        assert time.monotonic() - t0 >= 1.5, "no error delay after the soft limit"
        c.close()


def test_junk_command_limit(moat_factory):
    m = moat_factory(main={"smtpd_junk_command_limit": "3", "smtpd_hard_error_limit": "2",
                           "smtpd_error_sleep_time": "0"})
    with m.connect() as c:
        c.ehlo()
        for _ in range(3):
            c.expect("NOOP", 250, "2.0.0", "Ok")
        closed_by_421 = False
        for _ in range(10):
            c.send(b"NOOP\r\n")
            r = c.reply()
            if r.code == 421:
                check(r, 421, "4.7.0", "%s Error: too many errors" % HOSTNAME)
                closed_by_421 = True
                break
            check(r, 250, "2.0.0")
        assert closed_by_421, "junk NOOPs never counted as errors"
        assert c.wait_closed(5)


def test_junk_commands_below_limit(shared_moat):
    # The default limit (100) leaves room for ordinary chatter.
    with shared_moat.connect() as c:
        c.ehlo()
        for _ in range(30):
            c.expect("NOOP", 250, "2.0.0", "Ok")
            c.expect("RSET", 250, "2.0.0", "Ok")
        c.quit()


# ------------------------------------------------------------ timeout

def test_timeout_after_ehlo(moat_factory):
    m = moat_factory(main={"smtpd_timeout": "2s"})
    with m.connect(timeout=15) as c:
        c.ehlo()
        r = c.replies_until_close(timeout=15)
        assert len(r) == 1, r
        check(r[0], 421, "4.4.2", "%s Error: timeout exceeded" % HOSTNAME)
    m.wait_log(r"moat/smtpd\[\d+\]: timeout after EHLO from %s$" % LOCAL_CLIENT_RE)


def test_timeout_in_data(moat_factory):
    m = moat_factory(main={"smtpd_timeout": "2s"})
    with m.connect(timeout=15) as c:
        c.ehlo()
        c.mail()
        c.rcpt("lim-to@example.test")
        check(c.cmd("DATA"), 354)
        c.send(b"Subject: slow\r\n\r\nhalf a mess")
        r = c.replies_until_close(timeout=15)
        assert len(r) == 1, r
        check(r[0], 421, "4.4.2", "%s Error: timeout exceeded" % HOSTNAME)
    m.wait_log(r"moat/smtpd\[\d+\]: timeout after (?:DATA|END-OF-MESSAGE)\b.* from %s$" % LOCAL_CLIENT_RE)
    m.wait_queue_empty()
    assert m.mails("lim-to") == []


def test_timeout_before_any_command(moat_factory):
    m = moat_factory(main={"smtpd_timeout": "2s"})
    with m.connect(timeout=15) as c:
        r = c.replies_until_close(timeout=15)
        assert len(r) == 1, r
        check(r[0], 421, "4.4.2", "%s Error: timeout exceeded" % HOSTNAME)
    m.wait_log(r"moat/smtpd\[\d+\]: timeout after CONNECT from %s$" % LOCAL_CLIENT_RE)


def test_activity_resets_timeout(moat_factory):
    # Commands every second keep a session alive well past smtpd_timeout.
    m = moat_factory(main={"smtpd_timeout": "2s"})
    with m.connect(timeout=15) as c:
        c.ehlo()
        for _ in range(5):
            time.sleep(1)
            c.expect("NOOP", 250, "2.0.0", "Ok")
        c.quit()


# ------------------------------------------------------------ sessions

def test_max_sessions(moat_factory):
    m = moat_factory(main={"moat_max_sessions": "5"})
    # The start-up probe's session must be gone before we count.
    clients = []
    try:
        def five():
            for c in clients:
                c.close()
            clients.clear()
            for _ in range(5):
                c = m.connect(greeting=False)
                clients.append(c)
                r = c.reply()
                if r.code != 220:
                    return False
            return True
        wait_for(five, timeout=10, interval=0.2, what="5 sessions greeted")
        sixth = m.connect(greeting=False)
        r = sixth.replies_until_close(timeout=10)
        assert len(r) == 1, r
        check(r[0], 421, "4.7.0", "%s Error: too many connections" % HOSTNAME)
        sixth.close()
        # Sessions still open keep working.
        clients[0].ehlo()
        clients[0].quit()

        # A freed slot is usable again.
        def greeted():
            c = m.connect(greeting=False)
            r = c.reply()
            if r.code == 220:
                clients.append(c)
                return True
            c.close()
            return False
        wait_for(greeted, timeout=10, interval=0.2, what="a slot after one session quit")
        clients[-1].ehlo()
        clients[-1].sendmail("a@b.test", ["lim-slot@example.test"], simple_message("slot"))
        clients[-1].quit()
    finally:
        for c in clients:
            c.close()
    m.wait_mails("lim-slot", 1)


def test_service_maxproc(moat_factory):
    # master.cf's maxproc column caps one service's sessions.
    m = moat_factory(start=False)
    port2 = m.alloc_port()
    m.master_extra = ["127.0.0.1:%d inet n - n - 2 smtpd" % port2]
    m.start()
    m.wait_listening(port=port2)
    held = []
    try:
        def two():
            for c in held:
                c.close()
            held.clear()
            for _ in range(2):
                c = Client(port2, greeting=False)
                held.append(c)
                if c.reply().code != 220:
                    return False
            return True
        wait_for(two, timeout=10, interval=0.2, what="2 sessions on the capped service")
        third = Client(port2, greeting=False)
        r = third.replies_until_close(timeout=10)
        third.close()
        assert len(r) == 1, r
        check(r[0], 421, "4.7.0", "%s Error: too many connections" % HOSTNAME)
        # The other service is not capped by it.
        with m.connect() as c:
            c.ehlo()
            c.quit()
    finally:
        for c in held:
            c.close()


def test_abrupt_disconnects_do_not_leak_sessions(moat_factory):
    # Sessions that end with a reset, mid-command or mid-data, must give
    # back their slot.
    m = moat_factory(main={"moat_max_sessions": "3"})
    for i in range(12):
        s = socket.create_connection(("127.0.0.1", m.port), timeout=10)
        s.recv(1000)
        if i % 3 == 0:
            s.sendall(b"EHLO x\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<u@example.test>\r\nDATA\r\n")
            time.sleep(0.05)
            s.sendall(b"Subject: partial\r\n\r\nhalf")
        elif i % 3 == 1:
            s.sendall(b"NOOP")    # half a command
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()                 # RST

    def usable():
        c = m.connect(greeting=False)
        try:
            return c.reply().code == 220
        finally:
            c.close()
    for _ in range(3):
        wait_for(usable, timeout=10, interval=0.2, what="free session slots")
    with m.connect() as c:
        c.ehlo()
        c.sendmail("a@b.test", ["lim-abrupt@example.test"], simple_message("abrupt"))
        c.quit()
    m.wait_mails("lim-abrupt", 1)
    m.wait_queue_empty()
    assert m.mails("u") == []
