"""header_checks(5) through a live moat: header_checks, mime_header_checks,
nested_header_checks and body_checks with every action, end to end.

What is checked is what the client and the postmaster see: the reply to
the end of DATA and to BDAT LAST ("550 5.7.1 text", 4NN/5NN, DEFER's
451 4.7.1), Postfix's cleanup log lines ("QID: reject: header Subject:
... from host[addr]; from=<s> to=<r> proto=ESMTP helo=<h>: 5.7.1 text"),
the queue (nothing queued after a reject; hold/ for HOLD; the action
records of the queue file for FILTER/BCC, docs/queue.md) and the
delivered Maildir file (IGNORE/REPLACE/PREPEND edits, folded headers
removed whole).  Also: the session goes on after a content reject
(pipelined commands after the dot answered in order), receive_override_
options = no_header_body_checks on a second service, our own Received:
header seen by header_checks, and SIGHUP picking up an edited table.

Clients are smtplib (a real client no one here wrote) and moatlib's raw
client (BDAT, pipelining, exact reply bytes).  Most tests share one
daemon whose tables select a rule by Subject (or another header); each
test uses its own recipient local part, so no test reads another's mail.
"""
import re
import signal
import smtplib
import time

from moatlib import (LOCAL_CLIENT_RE, Client, check, dot_stuff, header_fields, queued_id,
                     simple_message, split_headers, wait_for)

HEADER_CHECKS = r"""# header_checks of the shared daemon (regexp)
/^Subject: reject-default/              REJECT
/^Subject: reject-text (.*)$/           REJECT no $1 here
/^Subject: code-450/                    450 try again later please
/^Subject: code-554/                    554 go away
/^Subject: defer-default/               DEFER
/^Subject: defer-text/                  DEFER come back tomorrow
/^Subject: warn-me/                     WARN suspicious subject
/^Subject: info-me/                     INFO noted subject
/^Subject: discard-me/                  DISCARD dropped by the test
/^Subject: hold-me/                     HOLD held by the test
/^Subject: redirect-me/                 REDIRECT quarantine@example.test
/^Subject: bcc-me/                      BCC archive@example.test
/^Subject: filter-me/                   FILTER smtp:[127.0.0.1]:10025
/^Subject: long-subject/                REJECT long subject
/^Subject: dunno-me/                    DUNNO
/^Subject: ok-me/                       OK
/^Subject: (dunno|ok)-me/               REJECT never reached: the first match wins
/^X-Hold-Too:/                          HOLD
/^X-Drop-Me:/                           IGNORE
/^X-Replace-Me: (.*)$/                  REPLACE X-Replaced: was $1
/^X-Prepend-Me:/                        PREPEND X-Prepended: yes
/^Received: from seen-by-checks\.test .*by mx\.example\.test \(moat\)/  REJECT our Received header was checked
/^Content-Type: application\/x-header-class/  REJECT primary headers are header_checks
"""

MIME_HEADER_CHECKS = r"""# mime_header_checks of the shared daemon (regexp)
/^Content-Disposition: .*filename="?blocked\.bin"?/   REJECT mime said no
/^Content-Type: application\/x-mime-hold/              HOLD
/^Content-Type: application\/x-header-class/           REJECT mime_header_checks saw it
/^Subject: mime-only/                                   REJECT mime_header_checks saw a Subject
"""

NESTED_HEADER_CHECKS = r"""# nested_header_checks of the shared daemon (regexp)
/^Subject: nested-reject/     REJECT nested said no
"""

# pcre: $1 from a capture; caseless by default, the i flag toggles that
# (pcre_table(5)).
BODY_CHECKS = r"""# body_checks of the shared daemon (pcre)
/^body-reject (\w+)/          REJECT body said $1
/^BODY-CASE$/i                REJECT case matters with the i flag
/^body-caseless$/             REJECT caseless by default
/^body-discard/               DISCARD
/^body-drop-this-line/        IGNORE
/^body-replace-this/          REPLACE replaced body line
/^body-prepend-here/          PREPEND prepended body line
/^body-warn/                  WARN body warning
/^body-hold/                  HOLD
/^body-code-552 (.*)$/        552 5.7.0 body $1
"""

def shared_setup(m):
    m.files.update({"header_checks": HEADER_CHECKS, "mime_header_checks": MIME_HEADER_CHECKS,
                    "nested_header_checks": NESTED_HEADER_CHECKS, "body_checks": BODY_CHECKS})
    m.main.update({"header_checks": "regexp:" + m.path("header_checks"),
                   "mime_header_checks": "regexp:" + m.path("mime_header_checks"),
                   "nested_header_checks": "regexp:" + m.path("nested_header_checks"),
                   "body_checks": "pcre:" + m.path("body_checks")})
    # The re-injection service of seed 001: no header or body checks.
    m.unchecked_port = m.alloc_port()
    m.master_extra += ["127.0.0.1:%d inet n - n - - smtpd" % m.unchecked_port,
                       "  -o receive_override_options=no_header_body_checks"]


# A tab of an unfolded header in a log line (kept, or escaped by the logger).
TAB = r"(?:\t|\\t|#011| )"


def tail(rcpt, helo="client\\.test", sender="a@b\\.test"):
    """The end of a cleanup log line, as a regex."""
    return r"from %s; from=<%s> to=<%s> proto=ESMTP helo=<%s>" % (LOCAL_CLIENT_RE, sender,
                                                                   re.escape(rcpt), helo)


def msg(subject, body="hello world", extra=()):
    return simple_message(subject, body, extra_headers=extra)


def end_of_data(m, rcpt, message, helo="client.test", port=None, quit=True):
    """One transaction by the raw client; the reply to the dot."""
    with Client(port or m.port) as c:
        c.ehlo(helo)
        c.mail("a@b.test")
        c.rcpt(rcpt)
        check(c.cmd("DATA"), 354)
        c.send(dot_stuff(message))
        r = c.reply()
        if quit:
            c.quit()
    return r


def log_qid(m, pattern):
    """The queue ID of the (last) cleanup line matching pattern (after the QID)."""
    ms = m.wait_log(r"cleanup\[\d+\]: (?P<qid>[0-9A-F]+): " + pattern)
    return ms[-1].group("qid")


def assert_not_queued(m, qid, user):
    """Nothing of qid anywhere in the queue, no delivery, no qmgr line."""
    time.sleep(0.3)      # what must not happen has had time to happen
    for q in m.QUEUES:
        assert qid not in m.queue_files(q), (q, m.queue_snapshot())
    assert m.mails(user) == []
    assert not re.search(r"(?:qmgr|local)\[\d+\]: %s: " % qid, m.log()), m.log()[-2000:]


def delivered(m, user):
    """The one delivered mail of user as (header fields, body)."""
    mails = m.wait_mails(user, 1)
    assert len(mails) == 1, mails
    head, body = split_headers(mails[0])
    return header_fields(head), body


def names(fields):
    return [n for n, _ in fields]


def queue_file(m, sub, qid):
    with open(m.queue_path(sub, qid), "rb") as f:
        return f.read()


def records(data):
    """The action records of a queue file (docs/queue.md): the lines
    between the content and the 30-byte trailer."""
    _, _, rest = data.partition(b"\ncontent\n")
    trailer = data[-30:]
    assert trailer.startswith(b"MOAT-END "), trailer
    size = int(trailer[9:29])
    return rest[size:-30].decode().splitlines()


# ---------------------------------------------------------------- REJECT

def test_reject_default_text(shared_moat):
    m = shared_moat
    r = end_of_data(m, "hc-rej-default@example.test", msg("reject-default"))
    check(r, 550, "5.7.1", "message content rejected")
    assert r.raw == b"550 5.7.1 message content rejected\r\n", r
    qid = log_qid(m, r"reject: header Subject: reject-default %s: 5\.7\.1 message content rejected$"
                  % tail("hc-rej-default@example.test"))
    assert_not_queued(m, qid, "hc-rej-default")


def test_reject_with_text_and_dollar_one(shared_moat):
    m = shared_moat
    r = end_of_data(m, "hc-rej-text@example.test", msg("reject-text cheap pills"))
    check(r, 550, "5.7.1", "no cheap pills here")
    qid = log_qid(m, r"reject: header Subject: reject-text cheap pills %s: 5\.7\.1 no cheap pills here$"
                  % tail("hc-rej-text@example.test"))
    assert_not_queued(m, qid, "hc-rej-text")


def test_reject_through_smtplib(shared_moat):
    m = shared_moat
    with smtplib.SMTP("127.0.0.1", m.port, local_hostname="smtplib.test", timeout=20) as s:
        try:
            s.sendmail("a@b.test", ["hc-smtplib@example.test"], msg("reject-text smtplib").encode())
            raise AssertionError("the message was accepted")
        except smtplib.SMTPDataError as e:
            assert e.smtp_code == 550, e
            assert e.smtp_error == b"5.7.1 no smtplib here", e
        # The session goes on: the next message is accepted.
        s.sendmail("a@b.test", ["hc-smtplib@example.test"], msg("clean after reject").encode())
    m.wait_log(r"reject: header Subject: reject-text smtplib %s: 5\.7\.1 no smtplib here$"
               % tail("hc-smtplib@example.test", helo=r"smtplib\.test"))
    fields, _ = delivered(m, "hc-smtplib")
    assert ("Subject", b"clean after reject") in fields


def test_reject_reply_to_bdat_last(shared_moat):
    m = shared_moat
    with m.connect() as c:
        c.ehlo()
        c.mail("a@b.test")
        c.rcpt("hc-bdat@example.test")
        p1 = msg("reject-text chunked").encode()
        p2 = b"more body\r\n"
        c.send(b"BDAT %d\r\n" % len(p1) + p1)
        check(c.reply(), 250, "2.0.0", "Ok: %d bytes" % len(p1))
        c.send(b"BDAT %d LAST\r\n" % len(p2) + p2)
        r = c.reply()
        check(r, 550, "5.7.1", "no chunked here")
        # The same session goes on without RSET.
        c.mail("a@b.test")
        c.rcpt("hc-bdat@example.test")
        p = msg("bdat clean").encode()
        c.send(b"BDAT %d LAST\r\n" % len(p) + p)
        queued_id(c.reply())
        c.quit()
    qid = log_qid(m, r"reject: header Subject: reject-text chunked %s: 5\.7\.1 no chunked here$"
                  % tail("hc-bdat@example.test"))
    fields, _ = delivered(m, "hc-bdat")
    assert ("Subject", b"bdat clean") in fields
    for q in m.QUEUES:
        assert qid not in m.queue_files(q)


def test_codes_4nn_and_5nn(shared_moat):
    m = shared_moat
    r = end_of_data(m, "hc-code@example.test", msg("code-450"))
    check(r, 450, "4.7.1", "try again later please")
    r = end_of_data(m, "hc-code@example.test", msg("code-554"))
    check(r, 554, "5.7.1", "go away")
    m.wait_log(r"(?:reject|defer): header Subject: code-450 %s: 4\.7\.1 try again later please$"
               % tail("hc-code@example.test"))
    m.wait_log(r"reject: header Subject: code-554 %s: 5\.7\.1 go away$" % tail("hc-code@example.test"))
    time.sleep(0.3)
    assert m.mails("hc-code") == []


def test_defer_default_and_text(shared_moat):
    """DEFER is Postfix's CLEANUP_STAT_DEFER: 451 4.7.1, "service unavailable"."""
    m = shared_moat
    r = end_of_data(m, "hc-defer@example.test", msg("defer-default"))
    check(r, 451, "4.7.1", "service unavailable")
    r = end_of_data(m, "hc-defer@example.test", msg("defer-text"))
    check(r, 451, "4.7.1", "come back tomorrow")
    qid = log_qid(m, r"(?:reject|defer): header Subject: defer-text %s: 4\.7\.1 come back tomorrow$"
                  % tail("hc-defer@example.test"))
    assert_not_queued(m, qid, "hc-defer")


def test_body_reject_pcre_dollar_one(shared_moat):
    m = shared_moat
    r = end_of_data(m, "bc-rej@example.test", msg("body", "first line\r\nbody-reject viagra now\r\nlast"))
    check(r, 550, "5.7.1", "body said viagra")
    qid = log_qid(m, r"reject: body body-reject viagra now %s: 5\.7\.1 body said viagra$"
                  % tail("bc-rej@example.test"))
    assert_not_queued(m, qid, "bc-rej")


def test_body_code_with_its_own_status(shared_moat):
    m = shared_moat
    r = end_of_data(m, "bc-code@example.test", msg("body", "body-code-552 too much"))
    check(r, 552, "5.7.0", "body too much")


def test_pcre_case_rules(shared_moat):
    """pcre tables match caseless unless the rule's i flag toggles that."""
    m = shared_moat
    check(end_of_data(m, "bc-case@example.test", msg("case", "BODY-CASE")), 550, "5.7.1",
          "case matters with the i flag")
    queued_id(end_of_data(m, "bc-case@example.test", msg("case", "body-case")))
    check(end_of_data(m, "bc-case@example.test", msg("case", "BODY-CaseLess")), 550, "5.7.1",
          "caseless by default")
    fields, body = delivered(m, "bc-case")
    assert body == b"body-case\n"


def test_header_text_in_the_log_is_cut_at_200(shared_moat):
    m = shared_moat
    subject = "long-subject " + "x" * 300
    check(end_of_data(m, "hc-long@example.test", msg(subject)), 550, "5.7.1", "long subject")
    line = m.wait_log(r"^.*: reject: header Subject: long-subject .*$")[-1].group(0)
    logged = re.search(r": reject: header (.*) from %s;" % LOCAL_CLIENT_RE, line).group(1)
    assert logged == ("Subject: " + subject)[:200], line


def test_folded_header_in_tiny_packets(shared_moat):
    """The header is assembled across writes and its continuation lines
    before it is checked ($1 spans the fold)."""
    m = shared_moat
    text = dot_stuff("From: <a@b.test>\r\nSubject: reject-text split\r\n\tacross packets\r\n"
                     "To: <hc-tiny@example.test>\r\n\r\nbody\r\n")
    with m.connect() as c:
        c.ehlo()
        c.mail("a@b.test")
        c.rcpt("hc-tiny@example.test")
        check(c.cmd("DATA"), 354)
        for i in range(0, len(text), 3):
            c.send(text[i:i + 3])
            time.sleep(0.001)
        r = c.reply()
        c.quit()
    check(r, 550, "5.7.1", "no split\tacross packets here")


def test_reject_log_names_the_first_recipient(shared_moat):
    m = shared_moat
    with m.connect() as c:
        c.ehlo()
        c.mail("a@b.test")
        c.rcpt("hc-multi-a@example.test")
        c.rcpt("hc-multi-b@example.test")
        check(c.cmd("DATA"), 354)
        c.send(dot_stuff(msg("reject-text two recipients")))
        check(c.reply(), 550, "5.7.1", "no two recipients here")
        c.quit()
    qid = log_qid(m, r"reject: header Subject: reject-text two recipients %s: 5\.7\.1 no two recipients here$"
                  % tail("hc-multi-a@example.test"))
    assert_not_queued(m, qid, "hc-multi-a")
    assert m.mails("hc-multi-b") == []


# ---------------------------------------------------------------- the session goes on

def test_pipelined_commands_after_the_rejected_dot(shared_moat):
    m = shared_moat
    with m.connect() as c:
        c.ehlo()
        c.mail("a@b.test")
        c.rcpt("hc-pipe@example.test")
        check(c.cmd("DATA"), 354)
        # RFC 2920: content may open a group; DATA ends it.
        c.send(dot_stuff(msg("reject-text pipelined"))
               + b"MAIL FROM:<a@b.test>\r\nRCPT TO:<hc-pipe@example.test>\r\nDATA\r\n")
        rs = [c.reply() for _ in range(4)]
        assert [x.code for x in rs] == [550, 250, 250, 354], rs
        check(rs[0], 550, "5.7.1", "no pipelined here")
        check(rs[1], 250, "2.1.0", "Ok")
        check(rs[2], 250, "2.1.5", "Ok")
        c.send(dot_stuff(msg("pipelined clean")) + b"QUIT\r\n")
        rs = c.replies_until_close()
    assert [x.code for x in rs] == [250, 221], rs
    queued_id(rs[0])
    fields, _ = delivered(m, "hc-pipe")
    assert ("Subject", b"pipelined clean") in fields


def test_second_reject_in_one_session(shared_moat):
    m = shared_moat
    with m.connect() as c:
        c.ehlo()
        for subject, text in (("reject-text one", "no one here"), ("defer-text", "come back tomorrow"),
                              ("reject-default", "message content rejected")):
            c.mail("a@b.test")
            c.rcpt("hc-twice@example.test")
            check(c.cmd("DATA"), 354)
            c.send(dot_stuff(msg(subject)))
            r = c.reply()
            assert r.msg == text, r
        qid = c.sendmail("a@b.test", ["hc-twice@example.test"], msg("finally clean"))
        c.quit()
    fields, _ = delivered(m, "hc-twice")
    assert ("Subject", b"finally clean") in fields
    assert ("id %s" % qid).encode() in dict(fields)["Received"]


# ---------------------------------------------------------------- WARN, INFO, DISCARD, DUNNO, OK

def test_warn_logs_and_delivers(shared_moat):
    m = shared_moat
    qid = queued_id(end_of_data(m, "hc-warn@example.test", msg("warn-me please")))
    m.wait_log(r"cleanup\[\d+\]: %s: warning: header Subject: warn-me please %s: suspicious subject$"
               % (qid, tail("hc-warn@example.test")))
    fields, _ = delivered(m, "hc-warn")
    assert ("Subject", b"warn-me please") in fields


def test_info_logs_and_delivers(shared_moat):
    m = shared_moat
    qid = queued_id(end_of_data(m, "hc-info@example.test", msg("info-me", "body-warn line\r\nrest")))
    m.wait_log(r"cleanup\[\d+\]: %s: info: header Subject: info-me %s: noted subject$"
               % (qid, tail("hc-info@example.test")))
    m.wait_log(r"cleanup\[\d+\]: %s: warning: body body-warn line %s: body warning$"
               % (qid, tail("hc-info@example.test")))
    _, body = delivered(m, "hc-info")
    assert body == b"body-warn line\nrest\n"


def test_discard_answers_250_and_drops(shared_moat):
    m = shared_moat
    qid = queued_id(end_of_data(m, "hc-discard@example.test", msg("discard-me")))
    m.wait_log(r"cleanup\[\d+\]: %s: discard: header Subject: discard-me %s: dropped by the test$"
               % (qid, tail("hc-discard@example.test")))
    qid2 = queued_id(end_of_data(m, "hc-discard@example.test", msg("body discard", "body-discard")))
    m.wait_log(r"cleanup\[\d+\]: %s: discard: body body-discard %s" % (qid2, tail("hc-discard@example.test")))
    assert_not_queued(m, qid, "hc-discard")
    assert_not_queued(m, qid2, "hc-discard")


def test_dunno_and_ok_end_the_search(shared_moat):
    m = shared_moat
    queued_id(end_of_data(m, "hc-dunno@example.test", msg("dunno-me")))
    queued_id(end_of_data(m, "hc-dunno@example.test", msg("ok-me")))
    assert len(m.wait_mails("hc-dunno", 2)) == 2
    assert "never reached" not in m.log()


# ---------------------------------------------------------------- HOLD, REDIRECT, BCC, FILTER

def test_hold_header_and_body(shared_moat):
    m = shared_moat
    qid = queued_id(end_of_data(m, "hc-hold@example.test", msg("hold-me")))
    m.wait_log(r"cleanup\[\d+\]: %s: hold: header Subject: hold-me %s: held by the test$"
               % (qid, tail("hc-hold@example.test")))
    qid2 = queued_id(end_of_data(m, "hc-hold@example.test", msg("body hold", "x\r\nbody-hold\r\ny")))
    m.wait_log(r"cleanup\[\d+\]: %s: hold: body body-hold %s" % (qid2, tail("hc-hold@example.test")))
    wait_for(lambda: {qid, qid2} <= set(m.queue_files("hold")), what="both messages in hold/")
    time.sleep(0.3)
    assert m.mails("hc-hold") == []
    assert qid not in m.queue_files("active") and qid2 not in m.queue_files("active")
    data = queue_file(m, "hold", qid)
    assert b"\nrcpt P hc-hold@example.test\n" in data
    assert b"\nSubject: hold-me\n" in data


def test_redirect(shared_moat):
    m = shared_moat
    qid = queued_id(end_of_data(m, "hc-redirect@example.test", msg("redirect-me")))
    m.wait_log(r"cleanup\[\d+\]: %s: redirect: header Subject: redirect-me %s: quarantine@example\.test$"
               % (qid, tail("hc-redirect@example.test")))
    m.wait_log(r"local\[\d+\]: %s: to=<quarantine@example\.test>, orig_to=<hc-redirect@example\.test>, "
               r".*status=sent" % qid)
    got = [x for x in m.mails("quarantine") if b"\nSubject: redirect-me\n" in x]
    assert len(got) == 1
    assert m.mails("hc-redirect") == []


def test_bcc(shared_moat):
    m = shared_moat
    qid = queued_id(end_of_data(m, "hc-bcc@example.test", msg("bcc-me")))
    m.wait_log(r"cleanup\[\d+\]: %s: bcc: header Subject: bcc-me %s: archive@example\.test$"
               % (qid, tail("hc-bcc@example.test")))
    fields, _ = delivered(m, "hc-bcc")
    assert ("Subject", b"bcc-me") in fields
    m.wait_log(r"local\[\d+\]: %s: to=<archive@example\.test>, relay=local, .*status=sent" % qid)
    assert any(b"\nSubject: bcc-me\n" in x for x in m.mails("archive"))


def test_filter_and_bcc_recorded_in_the_queue_file(shared_moat):
    """X-Hold-Too: keeps the file in hold/ so its records can be read."""
    m = shared_moat
    qid = queued_id(end_of_data(m, "hc-filter@example.test",
                                msg("filter-me", extra=("X-Hold-Too: yes",))))
    m.wait_log(r"cleanup\[\d+\]: %s: filter: header Subject: filter-me %s: smtp:\[127\.0\.0\.1\]:10025$"
               % (qid, tail("hc-filter@example.test")))
    wait_for(lambda: qid in m.queue_files("hold"), what="the message in hold/")
    assert records(queue_file(m, "hold", qid)) == ["filter smtp:[127.0.0.1]:10025"]

    qid = queued_id(end_of_data(m, "hc-filter@example.test", msg("bcc-me", extra=("X-Hold-Too: yes",))))
    wait_for(lambda: qid in m.queue_files("hold"), what="the message in hold/")
    assert records(queue_file(m, "hold", qid)) == ["bcc P archive@example.test"]


# ---------------------------------------------------------------- IGNORE, REPLACE, PREPEND

def test_header_edits_in_the_delivered_message(shared_moat):
    m = shared_moat
    message = ("From: <a@b.test>\r\n"
               "To: <hc-edit@example.test>\r\n"
               "X-Drop-Me: first line\r\n"
               "\tsecond line of the dropped header\r\n"
               "  third line\r\n"
               "Subject: edits\r\n"
               "X-Replace-Me: abc\r\n"
               " def\r\n"
               "X-Keep: 1\r\n"
               "X-Prepend-Me: here\r\n"
               "Message-ID: <edits@b.test>\r\n"
               "\r\n"
               "line one\r\n"
               "body-drop-this-line please\r\n"
               "body-replace-this line\r\n"
               "body-prepend-here\r\n"
               "X-Drop-Me: in the body, not a header\r\n"
               "last line\r\n")
    qid = queued_id(end_of_data(m, "hc-edit@example.test", message))
    fields, body = delivered(m, "hc-edit")
    assert "X-Drop-Me" not in names(fields)
    # REPLACE sees the unfolded header ($1 spans the continuation).
    assert ("X-Replaced", b"was abc def") in fields
    assert "X-Replace-Me" not in names(fields)
    i = names(fields).index("X-Prepend-Me")
    assert fields[i - 1] == ("X-Prepended", b"yes"), fields
    assert names(fields)[-8:] == ["From", "To", "Subject", "X-Replaced", "X-Keep", "X-Prepended",
                                  "X-Prepend-Me", "Message-ID"], fields
    assert body == (b"line one\n"
                    b"replaced body line\n"
                    b"prepended body line\n"
                    b"body-prepend-here\n"
                    b"X-Drop-Me: in the body, not a header\n"
                    b"last line\n"), body
    m.wait_log(r"cleanup\[\d+\]: %s: replace: header X-Replace-Me: abc def %s: X-Replaced: was abc def$"
               % (qid, tail("hc-edit@example.test")))
    m.wait_log(r"cleanup\[\d+\]: %s: prepend: header X-Prepend-Me: here %s: X-Prepended: yes$"
               % (qid, tail("hc-edit@example.test")))


# ---------------------------------------------------------------- the classes

MULTIPART = ("From: <a@b.test>\r\n"
             "To: <u@example.test>\r\n"
             "Subject: {subject}\r\n"
             "MIME-Version: 1.0\r\n"
             "Content-Type: multipart/mixed; boundary=\"b1\"\r\n"
             "\r\n"
             "preamble\r\n"
             "--b1\r\n"
             "Content-Type: text/plain\r\n"
             "\r\n"
             "text part\r\n"
             "--b1\r\n"
             "{part}"
             "--b1--\r\n")


def test_mime_header_checks_on_a_part(shared_moat):
    m = shared_moat
    part = ("Content-Type: application/octet-stream\r\n"
            "Content-Disposition: attachment;\r\n\tfilename=\"blocked.bin\"\r\n"
            "\r\nAAAA\r\n")
    r = end_of_data(m, "mh-part@example.test", MULTIPART.format(subject="mime", part=part))
    check(r, 550, "5.7.1", "mime said no")
    m.wait_log(r"reject: header Content-Disposition: attachment;%sfilename=\"blocked\.bin\" %s: "
               r"5\.7\.1 mime said no$" % (TAB, tail("mh-part@example.test")))
    part = ("Content-Type: application/x-mime-hold\r\n\r\nAAAA\r\n")
    qid = queued_id(end_of_data(m, "mh-part@example.test", MULTIPART.format(subject="mime hold", part=part)))
    wait_for(lambda: qid in m.queue_files("hold"), what="the message in hold/")
    # An innocent attachment passes.
    part = ("Content-Type: application/octet-stream\r\n"
            "Content-Disposition: attachment; filename=\"fine.bin\"\r\n\r\nAAAA\r\n")
    queued_id(end_of_data(m, "mh-part@example.test", MULTIPART.format(subject="mime ok", part=part)))
    m.wait_mails("mh-part", 1)


def test_primary_headers_go_to_header_checks(shared_moat):
    """A primary Content-Type: is header_checks' first (docs/content.md);
    the same header in a part is mime_header_checks' only."""
    m = shared_moat
    r = end_of_data(m, "mh-class@example.test",
                    msg("class", extra=("MIME-Version: 1.0", "Content-Type: application/x-header-class")))
    check(r, 550, "5.7.1", "primary headers are header_checks")
    part = "Content-Type: application/x-header-class\r\n\r\nAAAA\r\n"
    r = end_of_data(m, "mh-class@example.test", MULTIPART.format(subject="class", part=part))
    check(r, 550, "5.7.1", "mime_header_checks saw it")
    # A primary MIME header is also tried on a separate mime_header_checks
    # (docs/content.md: so that the seeds' rules work in either list) ...
    qid = queued_id(end_of_data(m, "mh-class@example.test",
                                msg("class hold", extra=("MIME-Version: 1.0",
                                                         "Content-Type: application/x-mime-hold"))))
    wait_for(lambda: qid in m.queue_files("hold"), what="the message in hold/")
    # ... a primary header that is not a MIME header is not.
    queued_id(end_of_data(m, "mh-class@example.test", msg("mime-only")))
    m.wait_mails("mh-class", 1)


def test_nested_header_checks_on_an_attached_message(shared_moat):
    m = shared_moat
    part = ("Content-Type: message/rfc822\r\n"
            "\r\n"
            "From: <x@y.test>\r\n"
            "Subject: nested-reject me\r\n"
            "\r\n"
            "inner body\r\n")
    r = end_of_data(m, "nh@example.test", MULTIPART.format(subject="outer", part=part))
    check(r, 550, "5.7.1", "nested said no")
    m.wait_log(r"reject: header Subject: nested-reject me %s: 5\.7\.1 nested said no$" % tail("nh@example.test"))
    # header_checks do not see nested headers: a rule of theirs is not applied there.
    part = ("Content-Type: message/rfc822\r\n\r\n"
            "Subject: reject-default\r\n\r\ninner body\r\n")
    queued_id(end_of_data(m, "nh@example.test", MULTIPART.format(subject="outer ok", part=part)))
    # nested_header_checks do not see primary headers.
    queued_id(end_of_data(m, "nh@example.test", msg("nested-reject at the top")))
    assert len(m.wait_mails("nh", 2)) == 2


def test_body_checks_do_not_see_headers(shared_moat):
    m = shared_moat
    queued_id(end_of_data(m, "bc-nohdr@example.test",
                          msg("body-reject header", extra=("X-Note: body-reject header",))))
    m.wait_mails("bc-nohdr", 1)


# ---------------------------------------------------------------- our own Received:

def test_our_received_header_is_seen_by_header_checks(shared_moat):
    m = shared_moat
    r = end_of_data(m, "hc-rcvd@example.test", msg("received"), helo="seen-by-checks.test")
    check(r, 550, "5.7.1", "our Received header was checked")
    line = m.wait_log(r"^.*: reject: header Received: from seen-by-checks\.test .*$")[-1].group(0)
    # Unfolded: the continuation's line break is gone, its tab kept (a
    # log may show the tab as white space or escaped).
    assert re.search(r"reject: header Received: from seen-by-checks\.test \((?:localhost|unknown) "
                     r"\[127\.0\.0\.1\]\)%sby mx\.example\.test \(moat\) with ESMTP id [0-9A-F]+%s"
                     r"for <hc-rcvd@example\.test>; " % (TAB, TAB), line), line
    queued_id(end_of_data(m, "hc-rcvd@example.test", msg("received"), helo="other.test"))
    m.wait_mails("hc-rcvd", 1)


# ---------------------------------------------------------------- receive_override_options

def test_no_header_body_checks_service_skips_the_checks(shared_moat):
    m = shared_moat
    m.wait_listening(port=m.unchecked_port)
    message = msg("reject-text unchecked", "body-reject unchecked")
    qid = queued_id(end_of_data(m, "ro-skip@example.test", message, port=m.unchecked_port))
    fields, body = delivered(m, "ro-skip")
    assert ("Subject", b"reject-text unchecked") in fields
    assert body == b"body-reject unchecked\n"
    assert not re.search(r"%s: reject: " % qid, m.log())
    # Edits are checks too: nothing is removed there.
    qid = queued_id(end_of_data(m, "ro-skip2@example.test", msg("plain", extra=("X-Drop-Me: stays",)),
                                port=m.unchecked_port))
    fields, _ = delivered(m, "ro-skip2")
    assert ("X-Drop-Me", b"stays") in fields
    # The main port still rejects the same message.
    check(end_of_data(m, "ro-main@example.test", message), 550, "5.7.1", "no unchecked here")


# ---------------------------------------------------------------- reload

def test_sighup_picks_up_an_edited_header_checks_file(moat_factory):
    m = moat_factory(start=False, files={"hc": "/^Subject: old-rule/ REJECT old rule\n"})
    m.main["header_checks"] = "regexp:" + m.path("hc")
    m.start()
    check(end_of_data(m, "reload@example.test", msg("old-rule")), 550, "5.7.1", "old rule")
    queued_id(end_of_data(m, "reload@example.test", msg("new-rule")))
    m.set_file("hc", "/^Subject: new-rule/ REJECT new rule\n")
    m.signal(signal.SIGHUP)
    m.wait_log(r"reload -- version")

    def new_rule_applies():
        r = end_of_data(m, "reload@example.test", msg("new-rule"))
        return r if r.code == 550 else None
    r = wait_for(new_rule_applies, timeout=10, what="the edited table to apply")
    check(r, 550, "5.7.1", "new rule")
    queued_id(end_of_data(m, "reload@example.test", msg("old-rule")))
    assert len(m.wait_mails("reload", 2)) >= 2


def test_broken_table_is_a_startup_error(moat_factory):
    """Fail closed: a malformed rule names file:line, the daemon does not start."""
    m = moat_factory(start=False, files={"hc": "/^Subject: fine/ REJECT\n/^Subject: (broken/ REJECT\n"})
    m.main["header_checks"] = "regexp:" + m.path("hc")
    try:
        m.start(timeout=10)
        started = True
    except AssertionError:
        started = False
    assert not started, "moat started with a malformed header_checks table"
    text = m.stderr() + m.log()
    assert re.search(re.escape(m.path("hc")) + r":2: ", text), text
