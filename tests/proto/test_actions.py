"""access(5) message actions through a live moat: HOLD, REDIRECT, BCC,
FILTER and DISCARD, from check_recipient_access / check_sender_access
with inline: and texthash: tables.

What is checked is what a postmaster sees: the SMTP replies, Postfix's
"ID: hold: RCPT from ..." log lines, the queue directory (hold/ID,
active/ID and the queue file's action records, docs/queue.md), the
Maildirs that do or do not receive the message, and the queue manager's
delivery lines (to=<redirect>, orig_to=<original>, deferred reasons).
"""
import os
import re
import time

from moatlib import check, queued_id, simple_message, wait_for

OUTSIDE = "127.0.0.2"
TRUST = {"mynetworks": "127.0.0.1/32"}
SESSION_TAIL = r"from=<a@b\.test> to=<%s> proto=ESMTP helo=<client\.test>"


def gateway(moat_factory, main, tables=None):
    cfg = dict(TRUST)
    cfg.update(main)
    m = moat_factory(main=cfg, start=False)
    for name, text in (tables or {}).items():
        with open(os.path.join(m.dir, name), "w") as f:
            f.write(text)
    m.start()
    return m


def send(m, rcpts, sender="a@b.test", subject="actions"):
    """One message from an outside client; returns its queue ID."""
    with m.connect(source=OUTSIDE) as c:
        c.ehlo()
        check(c.cmd("MAIL FROM:<%s>" % sender), 250)
        for r in rcpts:
            check(c.cmd("RCPT TO:<%s>" % r), 250, what=r)
        check(c.cmd("DATA"), 354)
        c.send(simple_message(subject) + ".\r\n")
        qid = queued_id(c.reply())
        c.quit()
    return qid


def queue_file(m, sub, qid):
    with open(os.path.join(m.main["queue_directory"], sub, qid), "rb") as f:
        return f.read()


def records(data):
    """The action records of a queue file: the lines between the content
    and the trailer, found from the trailer's content length."""
    head, _, rest = data.partition(b"\ncontent\n")
    trailer = data[-30:]
    assert trailer.startswith(b"MOAT-END "), trailer
    size = int(trailer[9:29])
    return rest[size:-30].decode().splitlines()


def quiet_for(m, seconds=0.5):
    """Give the queue manager time to do what it must not do."""
    time.sleep(seconds)


# ---------------------------------------------------------------- HOLD

def test_actions_hold_goes_to_hold_queue_and_is_not_delivered(moat_factory):
    m = gateway(moat_factory, {"smtpd_recipient_restrictions":
                               "check_recipient_access inline:{h@example.test=HOLD}, reject_unauth_destination"})
    qid = send(m, ["h@example.test", "u@example.test"])
    line = m.wait_log(r"^.*: hold: RCPT from .*$")[0].group(0)
    assert re.search(r"smtpd\[\d+\]: %s: hold: RCPT from [\w.-]+\[127\.0\.0\.2\]: <h@example\.test>: "
                     r"Recipient address triggers HOLD action; %s$" % (qid, SESSION_TAIL % r"h@example\.test"),
                     line), line
    assert m.queue_files("hold") == [qid]
    assert m.queue_files("active") == []
    quiet_for(m)
    assert m.mails("h") == [] and m.mails("u") == []
    assert not re.search(r"qmgr\[\d+\]: %s: from=" % qid, m.log()), "the qmgr touched a held message"
    # The held file is an ordinary, complete queue file with both recipients.
    data = queue_file(m, "hold", qid)
    assert b"\nrcpt P h@example.test\nrcpt P u@example.test\n" in data

    # A restart leaves it held (recovery never looks into hold/).
    m.restart()
    quiet_for(m)
    assert m.queue_files("hold") == [qid] and m.mails("u") == []

    # Released by moving it into active/; SIGHUP makes the daemon rescan.
    q = m.main["queue_directory"]
    os.rename(os.path.join(q, "hold", qid), os.path.join(q, "active", qid))
    m.reload()
    m.wait_mails("h")
    m.wait_mails("u")
    m.wait_queue_empty()
    m.wait_log(r"qmgr\[\d+\]: %s: removed" % qid)


def test_actions_hold_text_and_sender_access(moat_factory):
    m = gateway(moat_factory, {"smtpd_sender_restrictions": "check_sender_access texthash:$config_directory/senders"},
                tables={"senders": "a@b.test HOLD looks like a phish\n"})
    qid = send(m, ["u@example.test"])
    m.wait_log(r"%s: hold: RCPT from [\w.-]+\[127\.0\.0\.2\]: <a@b\.test>: Sender address looks like a phish; %s$"
               % (qid, SESSION_TAIL % r"u@example\.test"))
    assert m.queue_files("hold") == [qid]
    quiet_for(m)
    assert m.mails("u") == []


def test_actions_hold_at_end_of_data(moat_factory):
    """Decided after the content: the action still reaches the queue file."""
    m = gateway(moat_factory, {"smtpd_end_of_data_restrictions": "check_sender_access inline:{a@b.test=HOLD}"})
    qid = send(m, ["u@example.test"])
    m.wait_log(r"%s: hold: END-OF-MESSAGE from .*<a@b\.test>: Sender address triggers HOLD action;" % qid)
    assert m.queue_files("hold") == [qid]
    quiet_for(m)
    assert m.mails("u") == []


def test_actions_hold_then_a_later_reject_still_rejects(moat_factory):
    """HOLD does not end the list (Postfix: "we may still change our mind")."""
    m = gateway(moat_factory, {"smtpd_recipient_restrictions":
                               "check_sender_access inline:{a@b.test=HOLD}, "
                               "check_recipient_access inline:{bad@example.test=REJECT}, reject_unauth_destination"})
    with m.connect(source=OUTSIDE) as c:
        c.ehlo()
        check(c.cmd("MAIL FROM:<a@b.test>"), 250)
        check(c.cmd("RCPT TO:<bad@example.test>"), 554, "5.7.1")
        check(c.cmd("RCPT TO:<u@example.test>"), 250)
        check(c.cmd("DATA"), 354)
        c.send(simple_message("hold-reject") + ".\r\n")
        qid = queued_id(c.reply())
        c.quit()
    assert m.queue_files("hold") == [qid]
    assert b"rcpt P bad@example.test" not in queue_file(m, "hold", qid)


# ---------------------------------------------------------------- REDIRECT

def test_actions_redirect_delivers_only_to_the_target(moat_factory):
    m = gateway(moat_factory, {"smtpd_sender_restrictions": "check_sender_access texthash:$config_directory/senders"},
                tables={"senders": "a@b.test REDIRECT quarantine@example.test\n"})
    qid = send(m, ["u@example.test", "v@example.test"])
    m.wait_log(r"%s: redirect: RCPT from .*<a@b\.test>: Sender address triggers REDIRECT "
               r"quarantine@example\.test; %s$" % (qid, SESSION_TAIL % r"u@example\.test"))
    mail = m.wait_mails("quarantine")[0]
    assert len(m.wait_mails("quarantine")) == 1, "one delivery stands for every recipient"
    assert b"\nDelivered-To: quarantine@example.test\n" in b"\n" + mail
    m.wait_queue_empty()
    for orig in ("u", "v"):
        m.wait_log(r"local\[\d+\]: %s: to=<quarantine@example\.test>, orig_to=<%s@example\.test>, relay=local, "
                   r".*status=sent" % (qid, orig))
    assert m.mails("u") == [] and m.mails("v") == []


def test_actions_redirect_to_a_remote_address_waits(moat_factory):
    m = gateway(moat_factory, {"smtpd_recipient_restrictions":
                               "check_recipient_access inline:{ {u@example.test=REDIRECT x@elsewhere.test} }, "
                               "reject_unauth_destination",
                               "minimal_backoff_time": "1h", "maximal_backoff_time": "1h",
                               "transport_maps": "inline:{ {elsewhere.test=retry:4.4.1 no route today} }"})
    qid = send(m, ["u@example.test"])
    # One delivery to the remote address stands for the recipient; it waits.
    m.wait_log(r"retry\[\d+\]: %s: to=<x@elsewhere\.test>, orig_to=<u@example\.test>, relay=none, .*"
               r"dsn=4\.4\.1, status=deferred \(no route today\)" % qid)
    wait_for(lambda: m.queue_files("deferred") == [qid], what="the message in deferred/")
    assert "redirect x@elsewhere.test" in records(queue_file(m, "deferred", qid))
    assert m.mails("u") == []


# ---------------------------------------------------------------- BCC

def test_actions_bcc_adds_a_recipient(moat_factory):
    m = gateway(moat_factory, {"smtpd_recipient_restrictions":
                               "check_recipient_access inline:{ {u@example.test=BCC archive@example.test} }, "
                               "reject_unauth_destination"})
    qid = send(m, ["u@example.test"])
    m.wait_log(r"%s: bcc: RCPT from .*<u@example\.test>: Recipient address triggers BCC archive@example\.test;"
               % qid)
    m.wait_mails("u")
    archived = m.wait_mails("archive")[0]
    assert b"\nDelivered-To: archive@example.test\n" in b"\n" + archived
    m.wait_queue_empty()
    m.wait_log(r"local\[\d+\]: %s: to=<archive@example\.test>, relay=local, .*status=sent" % qid)


def test_actions_bcc_and_filter_recorded_in_the_queue_file(moat_factory):
    """HOLD keeps the file for inspection: the records follow the content."""
    m = gateway(moat_factory, {"smtpd_recipient_restrictions":
                               "check_recipient_access texthash:$config_directory/rcpt, reject_unauth_destination",
                               "smtpd_sender_restrictions": "check_sender_access inline:{a@b.test=HOLD}"},
                tables={"rcpt": "u@example.test BCC archive@example.test\n"
                                "v@example.test BCC archive@example.test\n"
                                "w@example.test BCC u@example.test\n"
                                "f@example.test FILTER smtp:[127.0.0.1]:10025\n"})
    qid = send(m, ["u@example.test", "v@example.test", "w@example.test", "f@example.test"])
    data = queue_file(m, "hold", qid)
    assert data.startswith(b"MOAT-QUEUE 2\n")
    # archive@ once (two BCC actions), u@ not again (already a recipient).
    assert records(data) == ["filter smtp:[127.0.0.1]:10025", "bcc P archive@example.test"]


# ---------------------------------------------------------------- FILTER

def test_actions_filter_is_recorded_logged_and_deferred(moat_factory):
    m = gateway(moat_factory, {"smtpd_sender_restrictions": "check_sender_access texthash:$config_directory/senders"},
                tables={"senders": "b.test FILTER smtp:[127.0.0.1]:10025\n"})
    qid = send(m, ["u@example.test"])
    m.wait_log(r"%s: filter: RCPT from .*<a@b\.test>: Sender address triggers FILTER smtp:\[127\.0\.0\.1\]:10025; %s$"
               % (qid, SESSION_TAIL % r"u@example\.test"))
    # The filter (nothing listens there) is the only way out: deferred,
    # never delivered around it, never lost.
    m.wait_log(r"smtp\[\d+\]: %s: to=<u@example\.test>, relay=none, .*"
               r"status=deferred \(connect to 127\.0\.0\.1\[127\.0\.0\.1\]:10025: Connection refused\)" % qid)
    wait_for(lambda: m.queue_files("deferred") == [qid], what="the message in deferred/")
    assert records(queue_file(m, "deferred", qid)) == ["filter smtp:[127.0.0.1]:10025"]
    assert m.mails("u") == []


# ---------------------------------------------------------------- DISCARD

def test_actions_discard_accepts_and_drops(moat_factory):
    m = gateway(moat_factory, {"smtpd_sender_restrictions": "check_sender_access texthash:$config_directory/senders"},
                tables={"senders": "a@b.test DISCARD\n"})
    with m.connect(source=OUTSIDE) as c:
        c.ehlo()
        check(c.cmd("MAIL FROM:<a@b.test>"), 250)
        check(c.cmd("RCPT TO:<u@example.test>"), 250)
        check(c.cmd("DATA"), 354)
        c.send(simple_message("discard") + ".\r\n")
        queued_id(c.reply())
        c.quit()
    m.wait_log(r"discard: RCPT from .*<a@b\.test>: Sender address triggers DISCARD action;")
    quiet_for(m)
    assert m.mails("u") == []
    assert m.queue_files("active") == [] and m.queue_files("hold") == []


def test_actions_redirect_without_domain_fails_closed(moat_factory):
    m = gateway(moat_factory, {"smtpd_recipient_restrictions":
                               "check_recipient_access inline:{ {u@example.test=REDIRECT nobody} }, "
                               "reject_unauth_destination"})
    with m.connect(source=OUTSIDE) as c:
        c.ehlo()
        check(c.cmd("MAIL FROM:<a@b.test>"), 250)
        check(c.cmd("RCPT TO:<u@example.test>"), 451, "4.3.5")
        c.quit()
    m.wait_log(r"warning: access table inline:.* entry \"u@example\.test\" requires user@domain target")
