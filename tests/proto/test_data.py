"""Message content: DATA and BDAT end to end, down to the Maildir file.

Each test uses its own recipient local part, so tests sharing the
module's daemon never read each other's mail.
"""

import os
import re

import pytest

from moatlib import HOSTNAME, check, dot_stuff, queued_id, simple_message

DATE_RE = (r"(?:(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun), )?\d{1,2} "
           r"(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) \d{4} "
           r"\d\d:\d\d:\d\d [+-]\d{4}(?: \([^)]*\))?")


def one_mail(m, user):
    mails = m.wait_mails(user, 1)
    assert len(mails) == 1, "expected one mail for %s, got %d" % (user, len(mails))
    return mails[0]


def strip_delivery_headers(mail):
    """Check and remove Return-Path, Delivered-To and Received; return
    (return_path, delivered_to, received, rest)."""
    lines = mail.split(b"\n")
    m1 = re.match(rb"^Return-Path: <(.*)>$", lines[0])
    assert m1, "first line is not Return-Path: %r" % lines[0]
    m2 = re.match(rb"^Delivered-To: <?([^<>]*)>?$", lines[1])
    assert m2, "second line is not Delivered-To: %r" % lines[1]
    assert lines[2].startswith(b"Received: "), "third line is not Received: %r" % lines[2]
    i = 3
    while i < len(lines) and lines[i][:1] in (b" ", b"\t"):
        i += 1
    received = b"\n".join(lines[2:i])
    rest = b"\n".join(lines[i:])
    return m1.group(1).decode(), m2.group(1).decode(), received.decode(), rest


def test_data_delivery(shared_moat):
    msg = simple_message("plain", "line one\r\nline two")
    with shared_moat.connect() as c:
        c.ehlo("client.test")
        qid = c.sendmail("a@b.test", ["data-plain@example.test"], msg)
        c.quit()
    mail = one_mail(shared_moat, "data-plain")
    assert b"\r" not in mail, "delivered file must have LF line endings"
    rp, dt, received, rest = strip_delivery_headers(mail)
    assert rp == "a@b.test"
    assert dt == "data-plain@example.test"
    assert ("id %s" % qid) in received
    assert rest == msg.replace("\r\n", "\n").encode()


def test_queue_id_and_queue_cleanup(shared_moat):
    with shared_moat.connect() as c:
        c.ehlo()
        qid = c.sendmail("a@b.test", ["data-qid@example.test"], simple_message("qid"))
        c.quit()
    assert re.fullmatch(r"[0-9A-F]+", qid)
    one_mail(shared_moat, "data-qid")
    shared_moat.wait_queue_empty()
    assert qid not in shared_moat.queue_files("active")


def test_queue_ids_unique(shared_moat):
    ids = []
    with shared_moat.connect() as c:
        c.ehlo()
        for i in range(5):
            ids.append(c.sendmail("a@b.test", ["data-uniq@example.test"], simple_message("u%d" % i)))
        c.quit()
    assert len(set(ids)) == 5, ids
    assert len(shared_moat.wait_mails("data-uniq", 5)) == 5


def test_received_header_esmtp(shared_moat):
    with shared_moat.connect() as c:
        c.ehlo("helo.name.test")
        qid = c.sendmail("a@b.test", ["data-rcvd@example.test"], simple_message("rcvd"))
        c.quit()
    _, _, received, _ = strip_delivery_headers(one_mail(shared_moat, "data-rcvd"))
    lines = received.split("\n")
    assert re.fullmatch(r"Received: from helo\.name\.test \((?:localhost|unknown) \[127\.0\.0\.1\]\)",
                        lines[0]), received
    assert re.fullmatch(r"\s+by %s \(moat\) with ESMTP id %s" % (re.escape(HOSTNAME), qid),
                        lines[1]), received
    assert re.fullmatch(r"\s+for <data-rcvd@example\.test>; " + DATE_RE, lines[2]), received
    assert len(lines) == 3, received


def test_received_header_helo_is_smtp(shared_moat):
    with shared_moat.connect() as c:
        check(c.cmd("HELO old.client.test"), 250)
        qid = c.sendmail("a@b.test", ["data-helo@example.test"], simple_message("helo"))
        c.quit()
    _, _, received, _ = strip_delivery_headers(one_mail(shared_moat, "data-helo"))
    assert received.startswith("Received: from old.client.test ("), received
    assert re.search(r"\bwith SMTP id %s\b" % qid, received), received


def test_received_header_two_recipients_has_no_for(shared_moat):
    with shared_moat.connect() as c:
        c.ehlo()
        c.sendmail("a@b.test", ["data-two-a@example.test", "data-two-b@example.test"],
                   simple_message("two"))
        c.quit()
    for user in ("data-two-a", "data-two-b"):
        rp, dt, received, _ = strip_delivery_headers(one_mail(shared_moat, user))
        assert dt == user + "@example.test"
        assert rp == "a@b.test"
        assert " for <" not in received, received
        assert re.search(r";\s+" + DATE_RE + r"$", received), received


def test_null_sender_return_path(shared_moat):
    with shared_moat.connect() as c:
        c.ehlo()
        c.sendmail("", ["data-null@example.test"], simple_message("null"))
        c.quit()
    rp, _, _, _ = strip_delivery_headers(one_mail(shared_moat, "data-null"))
    assert rp == ""


def test_mailbox_name_lower_cased(shared_moat):
    with shared_moat.connect() as c:
        c.ehlo()
        c.sendmail("a@b.test", ["Data-Case@Example.Test"], simple_message("case"))
        c.quit()
    one_mail(shared_moat, "data-case")


def test_dot_unstuffing(shared_moat):
    with shared_moat.connect() as c:
        c.ehlo()
        c.mail()
        c.rcpt("data-dots@example.test")
        check(c.cmd("DATA"), 354)
        c.send(b"Subject: dots\r\n\r\n"
               b"..leading\r\n"
               b"..\r\n"
               b"...\r\n"
               b"no.dot.here\r\n"
               b" .space-dot\r\n"
               b".single\r\n"
               b"end\r\n.\r\n")
        queued_id(c.reply())
        c.quit()
    _, _, _, rest = strip_delivery_headers(one_mail(shared_moat, "data-dots"))
    assert rest == (b"Subject: dots\n\n.leading\n.\n..\nno.dot.here\n .space-dot\n"
                    b"single\nend\n")


def test_data_terminator_right_after_data(shared_moat):
    # An empty message: the CRLF that ended the DATA command is the first
    # CRLF of <CRLF>.<CRLF>.
    with shared_moat.connect() as c:
        c.ehlo()
        c.mail()
        c.rcpt("data-empty@example.test")
        check(c.cmd("DATA"), 354)
        c.send(b".\r\n")
        queued_id(c.reply())
        c.quit()
    mail = one_mail(shared_moat, "data-empty")
    _, _, _, rest = strip_delivery_headers(mail)
    assert rest.strip(b"\n") == b""


def test_eight_bit_body(shared_moat):
    body = "Grüße aus Köln — ünïcödé\r\n\xa0".encode("utf-8") + b"\xff\xfe raw bytes"
    with shared_moat.connect() as c:
        c.ehlo()
        c.expect("MAIL FROM:<a@b.test> BODY=8BITMIME", 250, "2.1.0", "Ok")
        c.rcpt("data-8bit@example.test")
        check(c.cmd("DATA"), 354)
        c.send(b"Subject: 8bit\r\n\r\n" + body + b"\r\n.\r\n")
        queued_id(c.reply())
        c.quit()
    _, _, _, rest = strip_delivery_headers(one_mail(shared_moat, "data-8bit"))
    assert rest == b"Subject: 8bit\n\n" + body.replace(b"\r\n", b"\n") + b"\n"


def test_two_messages_one_session(shared_moat):
    with shared_moat.connect() as c:
        c.ehlo()
        q1 = c.sendmail("a@b.test", ["data-seq@example.test"], simple_message("first"))
        q2 = c.sendmail("a@b.test", ["data-seq@example.test"], simple_message("second"))
        c.quit()
    assert q1 != q2
    mails = shared_moat.wait_mails("data-seq", 2)
    subjects = sorted(re.search(rb"\nSubject: (\w+)", x).group(1) for x in mails)
    assert subjects == [b"first", b"second"]


def test_large_message(shared_moat):
    # ~2 MB, long lines and many lines: crosses every internal buffer size.
    line = b"x" * 998
    body = b"\r\n".join(line[:(i * 37) % 998] for i in range(2100))
    with shared_moat.connect() as c:
        c.ehlo()
        c.mail()
        c.rcpt("data-large@example.test")
        check(c.cmd("DATA"), 354)
        c.send(b"Subject: large\r\n\r\n" + body + b"\r\n.\r\n")
        queued_id(c.reply(timeout=30))
        c.quit()
    _, _, _, rest = strip_delivery_headers(one_mail(shared_moat, "data-large"))
    assert rest == b"Subject: large\n\n" + body.replace(b"\r\n", b"\n") + b"\n"


def test_data_split_in_tiny_packets(shared_moat):
    payload = dot_stuff(simple_message("tiny", ".dotted\r\nline"))
    with shared_moat.connect() as c:
        c.ehlo()
        c.mail()
        c.rcpt("data-tiny@example.test")
        check(c.cmd("DATA"), 354)
        for i in range(0, len(payload), 3):
            c.send(payload[i:i + 3])
        queued_id(c.reply())
        c.quit()
    _, _, _, rest = strip_delivery_headers(one_mail(shared_moat, "data-tiny"))
    assert b"\n.dotted\nline\n" in rest


def test_client_vanishes_mid_data(shared_moat):
    # Nothing may be queued or delivered for an interrupted message, and the
    # server must keep serving.
    c = shared_moat.connect()
    c.ehlo()
    c.mail()
    c.rcpt("data-vanish@example.test")
    check(c.cmd("DATA"), 354)
    c.send(b"Subject: vanish\r\n\r\npartial body\r\n")
    c.close()
    with shared_moat.connect() as c2:
        c2.ehlo()
        c2.sendmail("a@b.test", ["data-vanish-after@example.test"], simple_message("after"))
        c2.quit()
    one_mail(shared_moat, "data-vanish-after")
    shared_moat.wait_queue_empty()
    assert shared_moat.mails("data-vanish") == []


# ------------------------------------------------------------ BDAT

def test_bdat_chunks(shared_moat):
    with shared_moat.connect() as c:
        c.ehlo()
        c.mail()
        c.rcpt("bdat-chunks@example.test")
        part1 = b"Subject: bdat\r\n\r\nfirst "
        part2 = b"line\r\n..not unstuffed\r\n.\r\n"
        part3 = b"last line\r\n"
        c.send(b"BDAT %d\r\n" % len(part1) + part1)
        check(c.reply(), 250, "2.0.0", "Ok: %d bytes" % len(part1))
        c.send(b"BDAT %d\r\n" % len(part2) + part2)
        check(c.reply(), 250, "2.0.0", "Ok: %d bytes" % len(part2))
        c.send(b"BDAT %d LAST\r\n" % len(part3) + part3)
        queued_id(c.reply())
        c.quit()
    _, _, _, rest = strip_delivery_headers(one_mail(shared_moat, "bdat-chunks"))
    # BDAT content is taken as is: no dot-unstuffing, no terminator.
    assert rest == b"Subject: bdat\n\nfirst line\n..not unstuffed\n.\nlast line\n"


def test_bdat_crlf_split_across_chunks(shared_moat):
    with shared_moat.connect() as c:
        c.ehlo()
        c.mail()
        c.rcpt("bdat-split@example.test")
        p1 = b"Subject: split\r\n\r\nab\r"
        p2 = b"\ncd\r\n"
        c.send(b"BDAT %d\r\n" % len(p1) + p1)
        check(c.reply(), 250, "2.0.0")
        c.send(b"BDAT %d LAST\r\n" % len(p2) + p2)
        queued_id(c.reply())
        c.quit()
    _, _, _, rest = strip_delivery_headers(one_mail(shared_moat, "bdat-split"))
    assert rest == b"Subject: split\n\nab\ncd\n"


def test_bdat_zero_last_after_chunk(shared_moat):
    with shared_moat.connect() as c:
        c.ehlo()
        c.mail()
        c.rcpt("bdat-zero@example.test")
        p = b"Subject: zero\r\n\r\nbody\r\n"
        c.send(b"BDAT %d\r\n" % len(p) + p)
        check(c.reply(), 250, "2.0.0", "Ok: %d bytes" % len(p))
        c.send(b"BDAT 0 LAST\r\n")
        queued_id(c.reply())
        c.quit()
    _, _, _, rest = strip_delivery_headers(one_mail(shared_moat, "bdat-zero"))
    assert rest == b"Subject: zero\n\nbody\n"


def test_bdat_zero_last_only(shared_moat):
    with shared_moat.connect() as c:
        c.ehlo()
        c.mail()
        c.rcpt("bdat-empty@example.test")
        c.send(b"BDAT 0 LAST\r\n")
        queued_id(c.reply())
        c.quit()
    one_mail(shared_moat, "bdat-empty")


def test_bdat_last_without_final_newline(shared_moat):
    with shared_moat.connect() as c:
        c.ehlo()
        c.mail()
        c.rcpt("bdat-nonl@example.test")
        p = b"Subject: nonl\r\n\r\nno newline at end"
        c.send(b"BDAT %d LAST\r\n" % len(p) + p)
        queued_id(c.reply())
        c.quit()
    _, _, _, rest = strip_delivery_headers(one_mail(shared_moat, "bdat-nonl"))
    assert rest == b"Subject: nonl\n\nno newline at end\n"


def test_bdat_without_rcpt_discards_chunk(shared_moat):
    with shared_moat.connect() as c:
        c.ehlo()
        c.mail()
        # The chunk looks like commands; it must be read and thrown away,
        # never executed.
        payload = b"QUIT\r\nQUIT"
        c.send(b"BDAT %d\r\n" % len(payload) + payload)
        check(c.reply(), 503, "5.5.1", "Error: need RCPT command")
        c.expect("NOOP", 250, "2.0.0", "Ok")
        c.quit()


def test_bdat_without_mail_discards_chunk(shared_moat):
    with shared_moat.connect() as c:
        c.ehlo()
        payload = b"RSET\r\nQUIT\r\n"
        c.send(b"BDAT %d LAST\r\n" % len(payload) + payload)
        r = c.reply()
        check(r, 503, "5.5.1")
        c.expect("NOOP", 250, "2.0.0", "Ok")
        c.quit()


@pytest.mark.parametrize("line", [b"BDAT x", b"BDAT", b"BDAT -1", b"BDAT 10 NOTLAST", b"BDAT 1x"])
def test_bdat_syntax_closes(shared_moat, line):
    with shared_moat.connect() as c:
        c.ehlo()
        c.mail()
        c.rcpt("bdat-syntax@example.test")
        c.send(line + b"\r\n")
        r = c.replies_until_close()
        assert len(r) >= 1, "no reply to %r" % line
        check(r[0], 501, "5.5.4", "Syntax: BDAT count [LAST]")
    assert shared_moat.mails("bdat-syntax") == []


def test_data_after_bdat(shared_moat):
    with shared_moat.connect() as c:
        c.ehlo()
        c.mail()
        c.rcpt("bdat-data@example.test")
        p = b"Subject: x\r\n\r\n"
        c.send(b"BDAT %d\r\n" % len(p) + p)
        check(c.reply(), 250, "2.0.0")
        r = c.cmd("DATA")
        check(r, 503, "5.5.1")
        c.quit()


def test_bdat_then_rset_then_data(shared_moat):
    # RSET drops a half-sent BDAT message; a DATA transaction then works.
    with shared_moat.connect() as c:
        c.ehlo()
        c.mail()
        c.rcpt("bdat-rset@example.test")
        p = b"Subject: dropped\r\n\r\n"
        c.send(b"BDAT %d\r\n" % len(p) + p)
        check(c.reply(), 250, "2.0.0")
        c.expect("RSET", 250, "2.0.0", "Ok")
        c.sendmail("a@b.test", ["bdat-rset@example.test"], simple_message("kept"))
        c.quit()
    mails = shared_moat.wait_mails("bdat-rset", 1)
    shared_moat.wait_queue_empty()
    mails = shared_moat.mails("bdat-rset")
    assert len(mails) == 1
    assert b"Subject: kept" in mails[0]
    assert b"dropped" not in mails[0]


def test_bdat_large_chunk(shared_moat):
    body = (b"0123456789" * 100 + b"\r\n") * 1500    # ~1.5 MB in one chunk
    with shared_moat.connect() as c:
        c.ehlo()
        c.mail()
        c.rcpt("bdat-large@example.test")
        p = b"Subject: big\r\n\r\n" + body
        c.send(b"BDAT %d LAST\r\n" % len(p) + p)
        queued_id(c.reply(timeout=30))
        c.quit()
    _, _, _, rest = strip_delivery_headers(one_mail(shared_moat, "bdat-large"))
    assert rest == b"Subject: big\n\n" + body.replace(b"\r\n", b"\n")


# ------------------------------------------------------------ mailboxes

def delivered_files(root):
    """Every file in a Maildir new/ directory anywhere below root."""
    out = []
    for d, _, files in os.walk(root):
        if os.path.basename(d) == "new":
            out += [os.path.join(d, f) for f in files]
    return out


@pytest.mark.parametrize("local", ['"../../escape"', '"a/b"', '".."', '".hidden"', '"/abs"'])
def test_mailbox_name_cannot_escape_spool(moat_factory, local):
    m = moat_factory()
    with m.connect() as c:
        c.ehlo()
        c.mail()
        c.expect("RCPT TO:<%s@example.test>" % local, 250, "2.1.5", "Ok")
        qid = c.data(simple_message("escape"))
        c.quit()
    m.wait_log(r"moat/local\[\d+\]: %s: to=<.*status=sent" % qid)
    spool = os.path.realpath(os.path.join(m.dir, "mail"))
    everywhere = delivered_files(m.dir)
    assert len(everywhere) == 1, everywhere
    path = os.path.realpath(everywhere[0])
    assert path.startswith(spool + os.sep), path
    mailbox = os.path.relpath(path, spool).split(os.sep)[0]
    assert mailbox not in (".", "..") and not mailbox.startswith("."), mailbox
    assert not os.path.exists(os.path.join(m.dir, "escape"))
    assert not os.path.exists(os.path.join(os.path.dirname(m.dir), "escape"))


def test_recipient_delimiter(moat_factory):
    m = moat_factory(main={"recipient_delimiter": "+"})
    with m.connect() as c:
        c.ehlo()
        c.sendmail("a@b.test", ["Data-Ext+Folder@example.test"], simple_message("ext"))
        c.quit()
    mail = one_mail(m, "data-ext")
    assert b"Subject: ext" in mail
    assert m.all_mailboxes() == ["data-ext"]


def test_smtputf8_message_delivered(shared_moat):
    with shared_moat.connect() as c:
        c.ehlo()
        c.expect("MAIL FROM:<sénder@b.test> SMTPUTF8", 250, "2.1.0", "Ok")
        c.expect("RCPT TO:<data-utf8@example.test>", 250, "2.1.5", "Ok")
        check(c.cmd("DATA"), 354)
        c.send("Subject: ünïcödé\r\n\r\nbody ✓\r\n.\r\n".encode())
        queued_id(c.reply())
        c.quit()
    mail = one_mail(shared_moat, "data-utf8")
    assert mail.startswith("Return-Path: <sénder@b.test>\n".encode()), mail
    assert mail.endswith("Subject: ünïcödé\n\nbody ✓\n".encode()), mail


def test_client_vanishes_mid_bdat(shared_moat):
    c = shared_moat.connect()
    c.ehlo()
    c.mail()
    c.rcpt("bdat-vanish@example.test")
    c.send(b"BDAT 1000 LAST\r\nSubject: cut\r\n\r\nonly part of the chunk")
    c.close()
    # A huge announced chunk must not be allocated up front either.
    c = shared_moat.connect()
    c.ehlo()
    c.mail()
    c.rcpt("bdat-vanish@example.test")
    c.send(b"BDAT 18000000000000000000 LAST\r\nabc")
    c.close()
    with shared_moat.connect() as c2:
        c2.ehlo()
        c2.sendmail("a@b.test", ["bdat-vanish-after@example.test"], simple_message("after"))
        c2.quit()
    one_mail(shared_moat, "bdat-vanish-after")
    shared_moat.wait_queue_empty()
    assert shared_moat.mails("bdat-vanish") == []


def test_bdat_chunk_over_size_limit_is_refused(shared_moat):
    # A chunk larger than message_size_limit: refused (552 5.3.4), and the
    # session stays usable or ends cleanly; never a crash or a hang.
    with shared_moat.connect() as c:
        c.ehlo()
        c.mail()
        c.rcpt("bdat-huge@example.test")
        c.send(b"BDAT 20480000 LAST\r\n")
        chunk = b"x" * 998 + b"\r\n"
        for _ in range(20480000 // len(chunk)):
            c.send(chunk)
        c.send(b"y" * (20480000 % len(chunk)))
        r = c.reply(timeout=60)
        check(r, 552, "5.3.4")
    shared_moat.wait_queue_empty()
    assert shared_moat.mails("bdat-huge") == []
