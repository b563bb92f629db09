"""Postfix-format logging, checked line by line and through pflogsumm
(a log analyser no one here wrote)."""

import re
import subprocess

from moatlib import LOCAL_CLIENT_RE, LOG_LINE_RE, check, simple_message

PROGS = {"smtpd", "cleanup", "qmgr", "local", "master"}

# The local client is not in mynetworks here, so relaying is refused by
# the recipient restrictions (the Postfix default relay restrictions would
# answer 454; reject_unauth_destination gives the 554 of Postfix's logs).
RELAY_GUARD_MAIN = {"mynetworks": "192.0.2.0/24", "smtpd_relay_restrictions": "",
                    "smtpd_recipient_restrictions": "permit_mynetworks, reject_unauth_destination"}


def session_lines(m, qid):
    return [l for l in m.log_lines() if (" %s: " % qid) in l]


def test_every_line_is_postfix_format(moat_factory):
    m = moat_factory(main=RELAY_GUARD_MAIN)
    with m.connect() as c:
        c.ehlo()
        c.sendmail("a@b.test", ["log-fmt@example.test"], simple_message("fmt"))
        c.mail()
        check(c.cmd("RCPT TO:<x@other.test>"), 554)
        c.quit()
    m.wait_mails("log-fmt", 1)
    m.wait_log(r"moat/smtpd\[\d+\]: disconnect from ")
    m.wait_log(r"moat/qmgr\[\d+\]: [0-9A-F]+: removed")
    lines = m.log_lines()
    assert lines
    for line in lines:
        mo = LOG_LINE_RE.match(line)
        assert mo, "not a Postfix-format log line: %r" % line
        assert mo.group("prog") == "moat", line
        assert mo.group("service") in PROGS, line


def test_full_session_log(moat_factory):
    m = moat_factory()
    with m.connect() as c:
        c.ehlo("client.test")
        qid = c.sendmail("a@b.test", ["log-full@example.test"],
                         simple_message("full", msgid="full.1@b.test"))
        c.quit()
    m.wait_mails("log-full", 1)
    m.wait_log(r"moat/qmgr\[\d+\]: %s: removed$" % qid)
    m.wait_log(r"moat/smtpd\[\d+\]: disconnect from ")
    log = m.log()
    c_ = LOCAL_CLIENT_RE
    expected = [
        r"moat/smtpd\[\d+\]: connect from %s$" % c_,
        r"moat/smtpd\[\d+\]: %s: client=%s$" % (qid, c_),
        r"moat/cleanup\[\d+\]: %s: message-id=<full\.1@b\.test>$" % qid,
        r"moat/qmgr\[\d+\]: %s: from=<a@b\.test>, size=\d+, nrcpt=1 \(queue active\)$" % qid,
        r"moat/local\[\d+\]: %s: to=<log-full@example\.test>, relay=local, .*"
        r"status=sent \(delivered to maildir\)$" % qid,
        r"moat/qmgr\[\d+\]: %s: removed$" % qid,
    ]
    pos = 0
    lines = log.splitlines()
    for rx in expected:
        for k in range(pos, len(lines)):
            if re.search(rx, lines[k]):
                pos = k + 1
                break
        else:
            raise AssertionError("no line /%s/ after line %d in:\n%s" % (rx, pos, log))
    # The disconnect line comes after connect; it may precede delivery.
    assert re.search(r"moat/smtpd\[\d+\]: disconnect from %s ehlo=1 mail=1 rcpt=1 data=1 quit=1 "
                     r"commands=5$" % c_, log, re.M), log
    # The size logged by qmgr is the queued message's size, not zero.
    size = int(re.search(r"%s: from=<a@b\.test>, size=(\d+)" % qid, log).group(1))
    assert size > 50


def test_local_line_fields(moat_factory):
    # pflogsumm and every Postfix log tool parse these fields in this order.
    m = moat_factory()
    with m.connect() as c:
        c.ehlo()
        qid = c.sendmail("a@b.test", ["log-fields@example.test"], simple_message("fields"))
        c.quit()
    ms = m.wait_log(r"moat/local\[\d+\]: %s: (to=.*)$" % qid)
    text = ms[0].group(1)
    assert re.fullmatch(r"to=<log-fields@example\.test>, relay=local, delay=[\d.]+, "
                        r"(?:delays=[\d./]+, )?dsn=2\.0\.0, status=sent \(delivered to maildir\)",
                        text), text


def test_relay_reject_log(moat_factory):
    m = moat_factory(main=RELAY_GUARD_MAIN)
    with m.connect() as c:
        check(c.cmd("EHLO x"), 250)
        c.mail()
        check(c.cmd("RCPT TO:<u@other.test>"), 554)
        c.quit()
    m.wait_log(r"moat/smtpd\[\d+\]: NOQUEUE: reject: RCPT from %s: 554 5\.7\.1 <u@other\.test>: "
               r"Relay access denied; from=<a@b\.test> to=<u@other\.test> proto=ESMTP helo=<x> "
               r"rule=recipient:reject_unauth_destination$"
               % LOCAL_CLIENT_RE)


def test_relay_reject_log_smtp_proto(moat_factory):
    m = moat_factory(main=RELAY_GUARD_MAIN)
    with m.connect() as c:
        check(c.cmd("HELO y"), 250)
        c.mail()
        check(c.cmd("RCPT TO:<u@other.test>"), 554)
        c.quit()
    m.wait_log(r"NOQUEUE: reject: RCPT from %s: 554 5\.7\.1 <u@other\.test>: Relay access denied; "
               r"from=<a@b\.test> to=<u@other\.test> proto=SMTP helo=<y> rule=recipient:reject_unauth_destination$"
               % LOCAL_CLIENT_RE)


def test_disconnect_counts_failures(moat_factory):
    # Postfix's form: name=ok/total when some failed, name=n when all passed.
    m = moat_factory(main=RELAY_GUARD_MAIN)
    with m.connect() as c:
        c.ehlo()
        c.mail()
        c.rcpt("log-cnt@example.test")
        check(c.cmd("RCPT TO:<u@other.test>"), 554)
        c.data(simple_message("counts"))
        c.quit()
    m.wait_log(r"moat/smtpd\[\d+\]: disconnect from %s ehlo=1 mail=1 rcpt=1/2 data=1 quit=1 "
               r"commands=5/6$" % LOCAL_CLIENT_RE)


def test_lost_connection_logged(moat_factory):
    m = moat_factory()
    c = m.connect()
    c.ehlo()
    c.mail()
    c.close()
    m.wait_log(r"moat/smtpd\[\d+\]: lost connection after MAIL from %s$" % LOCAL_CLIENT_RE)
    m.wait_log(r"moat/smtpd\[\d+\]: disconnect from %s ehlo=1 mail=1 commands=2$" % LOCAL_CLIENT_RE)


def test_pflogsumm_counts(moat_factory):
    m = moat_factory(main=RELAY_GUARD_MAIN)
    with m.connect() as c:
        c.ehlo()
        for i in range(3):
            c.sendmail("a@b.test", ["log-sum%d@example.test" % i], simple_message("sum%d" % i))
        c.mail()
        check(c.cmd("RCPT TO:<r1@other.test>"), 554)
        check(c.cmd("RCPT TO:<r2@elsewhere.test>"), 554)
        c.quit()
    for i in range(3):
        m.wait_mails("log-sum%d" % i, 1)
    m.wait_queue_empty()
    m.wait_log(r"moat/qmgr\[\d+\]: [0-9A-F]+: removed$", count=3)
    m.wait_log(r"moat/local\[\d+\]: .*status=sent", count=3)
    m.stop()
    out = subprocess.run(["pflogsumm", "--syslog-name=moat", m.main["maillog_file"]],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    totals = out.stdout.split("Grand Totals", 1)
    assert len(totals) == 2, out.stdout
    counts = {}
    for line in totals[1].splitlines():
        mo = re.match(r"^\s+(\d+)\s+(received|delivered|rejected)\b", line)
        if mo and mo.group(2) not in counts:
            counts[mo.group(2)] = int(mo.group(1))
    assert counts == {"received": 3, "delivered": 3, "rejected": 2}, out.stdout

