"""Virus scanning (content_scanner) through a live moat and a real clamd.

clamd is Debian's, private to the tests (tests/proto/clamdlib.py): its
only signature is the EICAR test file's MD5 and size, so it reports
"Moat-Test-EICAR.UNOFFICIAL FOUND" for a message that carries EICAR as a
(base64) MIME attachment, and nothing else.  What is checked is what a
postmaster sees: the reply to the end of DATA or BDAT LAST, the queue
(nothing queued after a reject; hold/ for hold), the delivered file (its
X-Virus-Status: header) and the cleanup log lines.

The faults a real clamd produces on demand are tested here: stopped
(refused / no socket), paused (no verdict: content_scanner_timeout),
StreamMaxLength exceeded (clamd's ERROR while we are still sending).  The
rest (garbage, a close mid-stream) is in tests/unit/test_clamd.c.
"""
import base64
import re
import socket
import time

import pytest

from clamdlib import EICAR, VIRUS_NAME, Clamd, clamd_available
from moatlib import Client, check, header_fields, queued_id, split_headers, wait_for

pytestmark = pytest.mark.skipif(not clamd_available(), reason="clamd not installed")

VIRUS_REPLY = "message rejected: virus found: " + VIRUS_NAME
SESSION_TAIL = r"from=<a@b\.test> to=<%s> proto=ESMTP helo=<client\.test>"
CLIENT_RE = r"[\w.-]+\[127\.0\.0\.1\]"


def mime_message(attachment, subject="virus test", name="eicar.com", filler=0):
    """A multipart message with attachment base64-encoded (CRLF lines);
    filler: that many bytes of plain text before it."""
    b64 = base64.encodebytes(attachment).decode().replace("\n", "\r\n")
    text = "hello, see the attachment\r\n" + ("x" * 70 + "\r\n") * (filler // 72)
    return ("From: <a@b.test>\r\nTo: <u@example.test>\r\nSubject: %s\r\n"
            "Message-ID: <%s.%d@b.test>\r\nMIME-Version: 1.0\r\n"
            "Content-Type: multipart/mixed; boundary=\"==b==\"\r\n\r\n"
            "--==b==\r\nContent-Type: text/plain\r\n\r\n%s"
            "--==b==\r\nContent-Type: application/octet-stream; name=\"%s\"\r\n"
            "Content-Transfer-Encoding: base64\r\n"
            "Content-Disposition: attachment; filename=\"%s\"\r\n\r\n%s"
            "--==b==--\r\n" % (subject, re.sub(r"\W", "", subject), time.monotonic_ns(), text, name, name, b64))


def eicar_message(**kw):
    return mime_message(EICAR, **kw)


def clean_message(**kw):
    return mime_message(b"just some harmless bytes\n" * 4, name="notes.txt", **kw)


def scan_moat(moat_factory, spec, **main):
    cfg = {"content_scanner": spec, "content_scanner_timeout": "30s"}
    cfg.update({k: str(v) for k, v in main.items()})
    return moat_factory(main=cfg)


def send(m, message, rcpt="u@example.test", port=None):
    """One transaction; the reply to the end of DATA."""
    with (Client(port) if port else m.connect()) as c:
        c.ehlo()
        check(c.cmd("MAIL FROM:<a@b.test>"), 250)
        check(c.cmd("RCPT TO:<%s>" % rcpt), 250)
        check(c.cmd("DATA"), 354)
        c.send(dotted(message))
        r = c.reply(timeout=60)
        c.quit()
    return r


def dotted(message):
    data = message.encode() if isinstance(message, str) else message
    lines = data.split(b"\r\n")
    if lines[-1] == b"":
        lines.pop()
    return b"".join((b"." + l if l.startswith(b".") else l) + b"\r\n" for l in lines) + b".\r\n"


def nothing_queued(m):
    time.sleep(0.3)
    assert m.queue_snapshot() == {}, m.queue_snapshot()
    assert m.mails("u") == []


def delivered_one(m, user="u"):
    mails = m.wait_mails(user)
    assert len(mails) == 1, mails
    return mails[0]


def virus_status(mail):
    head, _ = split_headers(mail)
    return [v.decode() for n, v in header_fields(head) if n.lower() == "x-virus-status"]


# ------------------------------------------------------------ verdicts

@pytest.mark.parametrize("kind", ["unix", "inet"])
def test_virus_eicar_rejected_clean_queued(moat_factory, clamd, kind):
    m = scan_moat(moat_factory, clamd.unix_spec if kind == "unix" else clamd.inet_spec)
    with m.connect() as c:
        c.ehlo()
        check(c.cmd("MAIL FROM:<a@b.test>"), 250)
        check(c.cmd("RCPT TO:<u@example.test>"), 250)
        check(c.cmd("DATA"), 354)
        c.send(dotted(eicar_message()))
        check(c.reply(), 554, "5.7.0", VIRUS_REPLY)
        # the session goes on: the next transaction is scanned and clean
        qid = c.sendmail("a@b.test", ["u@example.test"], clean_message())
        c.quit()
    line = m.wait_log(r"^.*cleanup\[\d+\]: \w+: reject: virus .*$")[0].group(0)
    assert re.search(r"cleanup\[\d+\]: [0-9A-F]+: reject: virus %s from %s; %s: 5\.7\.0 %s$"
                     % (re.escape(VIRUS_NAME), CLIENT_RE, SESSION_TAIL % r"u@example\.test", re.escape(VIRUS_REPLY)),
                     line), line
    mail = delivered_one(m)
    assert virus_status(mail) == []   # a clean message is not marked
    assert b"harmless bytes" in base64.b64decode(mail.split(b"filename=\"notes.txt\"\n\n")[1].split(b"--==b==")[0])
    m.wait_queue_empty()
    # exactly one message made it: the rejected one was never queued
    assert len(re.findall(r"qmgr\[\d+\]: [0-9A-F]+: from=", m.log())) == 1
    assert re.search(r"%s: removed" % qid, m.log())


def test_virus_bdat_last(moat_factory, clamd):
    m = scan_moat(moat_factory, clamd.unix_spec)
    data = eicar_message().encode()
    half = len(data) // 2
    with m.connect() as c:
        c.ehlo()
        check(c.cmd("MAIL FROM:<a@b.test>"), 250)
        check(c.cmd("RCPT TO:<u@example.test>"), 250)
        c.send(b"BDAT %d\r\n" % half + data[:half])
        check(c.reply(), 250, "2.0.0")
        c.send(b"BDAT %d LAST\r\n" % (len(data) - half) + data[half:])
        check(c.reply(), 554, "5.7.0", VIRUS_REPLY)
        c.quit()
    nothing_queued(m)


def test_virus_action_hold(moat_factory, clamd):
    m = scan_moat(moat_factory, clamd.unix_spec, content_scanner_virus_action="hold")
    qid = queued_id(send(m, eicar_message()))
    line = m.wait_log(r"^.*: hold: virus .*$")[0].group(0)
    assert re.search(r"cleanup\[\d+\]: %s: hold: virus %s from %s; %s: " % (
        qid, re.escape(VIRUS_NAME), CLIENT_RE, SESSION_TAIL % r"u@example\.test"), line), line
    assert m.queue_files("hold") == [qid]
    time.sleep(0.3)
    assert m.mails("u") == []


def test_virus_action_discard(moat_factory, clamd):
    m = scan_moat(moat_factory, clamd.unix_spec, content_scanner_virus_action="discard")
    qid = queued_id(send(m, eicar_message()))
    line = m.wait_log(r"^.*: discard: virus .*$")[0].group(0)
    assert re.search(r"cleanup\[\d+\]: %s: discard: virus %s from %s; %s: " % (
        qid, re.escape(VIRUS_NAME), CLIENT_RE, SESSION_TAIL % r"u@example\.test"), line), line
    m.wait_queue_empty()
    assert m.mails("u") == [] and m.queue_files("hold") == []
    # and a clean one still goes through
    queued_id(send(m, clean_message()))
    assert virus_status(delivered_one(m)) == []


def test_virus_action_header(moat_factory, clamd):
    m = scan_moat(moat_factory, clamd.inet_spec, content_scanner_virus_action="header")
    qid = queued_id(send(m, eicar_message()))
    m.wait_log(r"cleanup\[\d+\]: %s: warning: virus %s from %s; " % (qid, re.escape(VIRUS_NAME), CLIENT_RE))
    mail = delivered_one(m)
    assert virus_status(mail) == ["Infected (%s)" % VIRUS_NAME]
    head, _ = split_headers(mail)
    names = [n.lower() for n, _ in header_fields(head)]
    # at the top of the message: above our own Received: line
    assert names.index("x-virus-status") < names.index("received"), names


# ------------------------------------------------------ clamd unavailable

def test_virus_scanner_down_defers_then_recovers(moat_factory, tmp_path_factory):
    own = Clamd()
    try:
        own.start()
        m = scan_moat(moat_factory, own.unix_spec)
        own.stop()
        check(send(m, clean_message()), 451, "4.3.0", "Error: virus scanner unavailable")
        line = m.wait_log(r"^.*virus scanner .* failed: .*$")[0].group(0)
        assert re.search(r"cleanup\[\d+\]: warning: [0-9A-F]+: virus scanner %s failed: connect: "
                         r"No such file or directory$" % re.escape(own.unix_spec), line), line
        nothing_queued(m)
        # back up: the same daemon scans again, nothing to reconfigure
        own.start()
        check(send(m, eicar_message()), 554, "5.7.0", VIRUS_REPLY)
        queued_id(send(m, clean_message()))
        delivered_one(m)
    finally:
        own.remove()


def test_virus_scanner_refused_inet(moat_factory):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    m = scan_moat(moat_factory, "clamd:inet:127.0.0.1:%d" % port)
    check(send(m, eicar_message()), 451, "4.3.0", "Error: virus scanner unavailable")
    m.wait_log(r"virus scanner clamd:inet:127\.0\.0\.1:%d failed: connect: Connection refused$" % port)
    nothing_queued(m)


def test_virus_fail_action_accept_marks_unscanned(moat_factory):
    m = scan_moat(moat_factory, "clamd:unix:/nonexistent/clamd.sock", content_scanner_fail_action="accept")
    queued_id(send(m, eicar_message()))
    mail = delivered_one(m)
    assert virus_status(mail) == ["Unscanned (connect: No such file or directory)"]
    m.wait_log(r"warning: [0-9A-F]+: virus scanner clamd:unix:/nonexistent/clamd\.sock failed: ")


def test_virus_timeout_when_clamd_hangs(moat_factory):
    own = Clamd()
    try:
        own.start()
        m = scan_moat(moat_factory, own.inet_spec, content_scanner_timeout="1s")
        with own.paused():
            check(send(m, clean_message()), 451, "4.3.0", "Error: virus scanner unavailable")
        m.wait_log(r"virus scanner %s failed: timeout (waiting for the verdict|sending)$" % re.escape(own.inet_spec))
        nothing_queued(m)
    finally:
        own.remove()


def test_virus_clamd_stream_limit_is_a_failure(moat_factory):
    """clamd's StreamMaxLength below the message: clamd answers "INSTREAM
    size limit exceeded. ERROR" and closes while moat is still sending;
    that is a scanner failure (deferred, or accepted as unscanned), never
    a clean verdict."""
    own = Clamd(stream_max_length="200K")
    try:
        own.start()
        m = scan_moat(moat_factory, own.unix_spec)
        big = eicar_message(filler=1024 * 1024)
        check(send(m, big), 451, "4.3.0", "Error: virus scanner unavailable")
        m.wait_log(r"virus scanner %s failed: INSTREAM size limit exceeded\. ERROR$" % re.escape(own.unix_spec))
        nothing_queued(m)
        m2 = scan_moat(moat_factory, own.unix_spec, content_scanner_fail_action="accept")
        queued_id(send(m2, big))
        assert virus_status(delivered_one(m2)) == ["Unscanned (INSTREAM size limit exceeded. ERROR)"]
    finally:
        own.remove()


# ------------------------------------------------------------ not scanned

def test_virus_size_limit_skips_the_scan(moat_factory, clamd):
    m = scan_moat(moat_factory, clamd.unix_spec, content_scanner_size_limit=20000)
    qid = queued_id(send(m, eicar_message(filler=50000)))
    m.wait_log(r"cleanup\[\d+\]: %s: virus scan skipped: message larger than content_scanner_size_limit "
               r"\(20000 bytes\)" % qid)
    assert virus_status(delivered_one(m)) == []
    # below the limit: scanned
    check(send(m, eicar_message()), 554, "5.7.0", VIRUS_REPLY)


def test_virus_no_milters_service_skips_the_scan(moat_factory, clamd):
    m = moat_factory(main={"content_scanner": clamd.unix_spec}, start=False)
    port2 = m.alloc_port()
    m.master_extra.append("127.0.0.1:%d inet n - n - - smtpd\n  -o receive_override_options=no_milters" % port2)
    m.start()
    m.wait_listening(port=port2)
    check(send(m, eicar_message()), 554, "5.7.0", VIRUS_REPLY)
    qid = queued_id(send(m, eicar_message(), port=port2))
    delivered_one(m)
    assert not re.search(r"%s: \w+: virus" % qid, m.log())


def test_virus_bad_scanner_spec_is_a_config_error(moat_factory):
    m = moat_factory(main={"content_scanner": "clamd:tcp:127.0.0.1:3310"}, start=False)
    with pytest.raises(AssertionError):
        m.start()
    assert 'content_scanner: "clamd:tcp:127.0.0.1:3310": need clamd:unix:/path or clamd:inet:host:port' \
        in m.stderr() + m.log()


# ------------------------------------------------------- nothing blocks

def test_virus_slow_client_and_hung_clamd_block_nobody(moat_factory):
    """A client that trickles its message and a session waiting on a
    clamd that does not answer: other sessions on the same daemon are
    served meanwhile (a service without the scanner, and a scanned one
    whose verdict comes once clamd is back)."""
    own = Clamd()
    try:
        own.start()
        m = moat_factory(main={"content_scanner": own.unix_spec, "content_scanner_timeout": "60s"}, start=False)
        port2 = m.alloc_port()
        m.master_extra.append("127.0.0.1:%d inet n - n - - smtpd\n  -o receive_override_options=no_milters"
                              % port2)
        m.start()
        m.wait_listening(port=port2)
        data = dotted(eicar_message())
        slow, hung = m.connect(), m.connect()
        for c in (slow, hung):
            c.ehlo()
            check(c.cmd("MAIL FROM:<a@b.test>"), 250)
            check(c.cmd("RCPT TO:<u@example.test>"), 250)
            check(c.cmd("DATA"), 354)
        slow.send(data[:200])              # and then nothing for a while
        own.pause()
        hung.send(data)                    # its verdict is owed by a stopped clamd
        time.sleep(0.5)
        # a third session, on the service without the scanner, gets through
        queued_id(send(m, clean_message(subject="meanwhile"), port=port2))
        m.wait_mails("u")
        # the slow client goes on, a little at a time
        for i in range(200, len(data), 400):
            slow.send(data[i:i + 400])
            time.sleep(0.01)
        own.resume()
        check(hung.reply(timeout=30), 554, "5.7.0", VIRUS_REPLY)
        check(slow.reply(timeout=30), 554, "5.7.0", VIRUS_REPLY)
        for c in (slow, hung):
            c.quit()
            c.close()
        assert len(m.mails("u")) == 1
    finally:
        own.remove()


def test_virus_many_sessions_at_once(moat_factory, clamd):
    """Ten sessions with messages in flight together, every other one
    infected: each gets its own verdict (one clamd connection each)."""
    m = scan_moat(moat_factory, clamd.unix_spec)
    clients = []
    for i in range(10):
        c = m.connect()
        c.ehlo()
        check(c.cmd("MAIL FROM:<a@b.test>"), 250)
        check(c.cmd("RCPT TO:<u@example.test>"), 250)
        check(c.cmd("DATA"), 354)
        clients.append(c)
    for i, c in enumerate(clients):
        c.send(dotted(eicar_message(subject="m%d" % i) if i % 2 else clean_message(subject="m%d" % i)))
    for i, c in enumerate(clients):
        r = c.reply(timeout=30)
        if i % 2:
            check(r, 554, "5.7.0", VIRUS_REPLY)
        else:
            queued_id(r)
        c.quit()
        c.close()
    wait_for(lambda: len(m.mails("u")) == 5, 20, what="5 clean messages")
    assert len(m.wait_log(r": reject: virus ", count=5)) == 5
