"""SMTP smuggling: DATA ends only at <CR><LF>.<CR><LF>.

An attacker hides a second transaction behind a non-standard end of data
("\\n.\\n", "\\r.\\r", ...) hoping that one hop ends the message there and
another does not.  moat must see one message, deliver it once, and write it
with every bare CR/LF turned into a real line end so that no later hop can
disagree about where lines end.
"""

import pytest

from moatlib import check, queued_id

# Byte sequences that some software has taken for an end of data, and that
# must be content here.  None of them contains "\r\n.\r\n".
VARIANTS = {
    "lf-dot-lf": b"\n.\n",
    "lf-dot-crlf": b"\n.\r\n",
    "crlf-dot-lf": b"\r\n.\n",
    "cr-dot-cr": b"\r.\r",
    "crlf-dot-cr": b"\r\n.\r",
    "cr-dot-crlf": b"\r.\r\n",
    "lf-dot-cr": b"\n.\r",
    "cr-dot-lf": b"\r.\n",
    "crlf-dot-cr-crlf": b"\r\n.\r\r\n",
    "crlf-dot-lf-crlf": b"\r\n.\n\r\n",
    "lf-dot-lf-crlf": b"\n.\n\r\n",
    "crlf-space-dot-crlf": b"\r\n .\r\n",
    "crlf-dotdot-crlf": b"\r\n..\r\n",
    "crlf-dot-space-crlf": b"\r\n. \r\n",
}

SMUGGLED = (b"MAIL FROM:<evil@x.test>\r\n"
            b"RCPT TO:<victim@example.test>\r\n"
            b"DATA\r\n"
            b"Subject: smuggled\r\n\r\nsmuggled body\r\n")

SHARED_MAIN = {"smtpd_forbid_bare_newline": "normalize"}


def send_with_variant(m, user, variant, chunked=False):
    """One session: a message whose body hides SMUGGLED behind variant."""
    head = b"Subject: carrier\r\n\r\nline1"
    payload = head + variant + SMUGGLED + b".\r\n"
    # The only real end of data is the last one.
    assert b"\r\n.\r\n" not in b"\r\n" + head + variant + SMUGGLED
    with m.connect() as c:
        c.ehlo()
        c.mail("a@b.test")
        c.rcpt(user + "@example.test")
        check(c.cmd("DATA"), 354)
        if chunked:
            for b in payload:
                c.send(bytes([b]))
        else:
            c.send(payload)
        c.send(b"QUIT\r\n")
        replies = c.replies_until_close()
    return replies


def assert_single_message(m, user, replies):
    # Exactly: the 250 for the one message, then the 221 for QUIT.  A
    # server fooled by the variant answers MAIL/RCPT/DATA/end as well.
    assert [r.code for r in replies] == [250, 221], replies
    queued_id(replies[0])
    mails = m.wait_mails(user, 1)
    m.wait_queue_empty()
    mails = m.mails(user)
    assert len(mails) == 1, "expected one delivery, got %d" % len(mails)
    assert m.mails("victim") == [], "the smuggled message was delivered"
    mail = mails[0]
    assert b"\r" not in mail, "delivered file contains a bare CR: %r" % mail
    lines = mail.split(b"\n")
    # The bare CR/LF ended a line: the would-be commands are lines of their own.
    assert b"line1" in lines, lines
    assert b"MAIL FROM:<evil@x.test>" in lines, lines
    assert b"RCPT TO:<victim@example.test>" in lines, lines
    assert b"smuggled body" in lines, lines
    return mail


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_smuggling_variant(shared_moat, name):
    user = "smug-" + name
    replies = send_with_variant(shared_moat, user, VARIANTS[name])
    assert_single_message(shared_moat, user, replies)


@pytest.mark.parametrize("name", ["lf-dot-lf", "cr-dot-cr", "crlf-dot-cr", "crlf-dot-lf"])
def test_smuggling_variant_byte_by_byte(shared_moat, name):
    user = "smugb-" + name
    replies = send_with_variant(shared_moat, user, VARIANTS[name], chunked=True)
    assert_single_message(shared_moat, user, replies)


def test_bare_lf_and_cr_become_line_ends(shared_moat):
    with shared_moat.connect() as c:
        c.ehlo()
        c.mail()
        c.rcpt("smug-lines@example.test")
        check(c.cmd("DATA"), 354)
        c.send(b"Subject: lines\r\n\r\na\nb\rc\r\nd\r\r\ne\n\nf\r\n.\r\n")
        queued_id(c.reply())
        c.quit()
    mail = shared_moat.wait_mails("smug-lines", 1)[0]
    assert b"\r" not in mail
    body = mail.split(b"\n\n", 1)[1]
    # "d\r\r\n": the bare CR ends "d", the CRLF ends an empty line.
    assert body == b"a\nb\nc\nd\n\ne\n\nf\n", body


def test_bare_lf_after_data_command_is_not_terminator(shared_moat):
    # "DATA\r\n" then ".\n": the first CRLF is real, but ".\n" is not ".\r\n".
    with shared_moat.connect() as c:
        c.ehlo()
        c.mail()
        c.rcpt("smug-first@example.test")
        check(c.cmd("DATA"), 354)
        c.send(b".\n" + SMUGGLED + b".\r\nQUIT\r\n")
        replies = c.replies_until_close()
    assert [r.code for r in replies] == [250, 221], replies
    shared_moat.wait_mails("smug-first", 1)
    shared_moat.wait_queue_empty()
    assert len(shared_moat.mails("smug-first")) == 1
    assert shared_moat.mails("victim") == []


def test_bdat_with_embedded_terminators(shared_moat):
    # Under BDAT the byte count decides, so every dot-line sequence is content.
    p = b"Subject: bdat-smuggle\r\n\r\nx\r\n.\r\n" + SMUGGLED + b".\r\n"
    with shared_moat.connect() as c:
        c.ehlo()
        c.mail()
        c.rcpt("smug-bdat@example.test")
        c.send(b"BDAT %d LAST\r\n" % len(p) + p + b"QUIT\r\n")
        replies = c.replies_until_close()
    assert [r.code for r in replies] == [250, 221], replies
    shared_moat.wait_mails("smug-bdat", 1)
    shared_moat.wait_queue_empty()
    assert len(shared_moat.mails("smug-bdat")) == 1
    assert shared_moat.mails("victim") == []


# ------------------------------------------------------------ reject mode

def reject_moat(moat_factory):
    # mynetworks is 127.0.0.2 so that 127.0.0.1 is not excluded.
    return moat_factory(main={"smtpd_forbid_bare_newline": "reject",
                              "mynetworks": "127.0.0.2/32"})


@pytest.mark.parametrize("body", [b"a\nb\r\n", b"a\r\n.\nb\r\n", b"a\n.\n"])
def test_reject_mode_bare_lf(moat_factory, body):
    m = reject_moat(moat_factory)
    with m.connect() as c:
        c.ehlo()
        c.mail()
        c.rcpt("rej@example.test")
        check(c.cmd("DATA"), 354)
        c.send(b"Subject: bare\r\n\r\n" + body + b"\r\n.\r\n")
        check(c.reply(), 550, "5.5.2", "Error: bare <LF> received")
        # The session goes on and a clean message is accepted.
        c.sendmail("a@b.test", ["rej@example.test"], "Subject: clean\r\n\r\nclean\r\n")
        c.quit()
    mails = m.wait_mails("rej", 1)
    m.wait_queue_empty()
    mails = m.mails("rej")
    assert len(mails) == 1
    assert b"Subject: clean" in mails[0]


def test_reject_mode_excluded_client(moat_factory):
    m = reject_moat(moat_factory)
    with m.connect(source="127.0.0.2") as c:
        c.ehlo()
        c.mail()
        c.rcpt("rej-excl@example.test")
        check(c.cmd("DATA"), 354)
        c.send(b"Subject: bare\r\n\r\na\nb\r\n.\r\n")
        queued_id(c.reply())
        c.quit()
    mail = m.wait_mails("rej-excl", 1)[0]
    assert b"\r" not in mail
    assert mail.endswith(b"\n\na\nb\n")


def test_reject_mode_clean_message(moat_factory):
    m = reject_moat(moat_factory)
    with m.connect() as c:
        c.ehlo()
        c.sendmail("a@b.test", ["rej-clean@example.test"], "Subject: c\r\n\r\nfine\r\n")
        c.quit()
    m.wait_mails("rej-clean", 1)


def test_reject_mode_custom_code(moat_factory):
    m = moat_factory(main={"smtpd_forbid_bare_newline": "reject",
                           "smtpd_forbid_bare_newline_reject_code": "450",
                           "mynetworks": "127.0.0.2/32"})
    with m.connect() as c:
        c.ehlo()
        c.mail()
        c.rcpt("rej-code@example.test")
        check(c.cmd("DATA"), 354)
        c.send(b"Subject: bare\r\n\r\na\nb\r\n.\r\n")
        r = c.reply()
        assert r.code == 450, r
        assert r.msg.endswith("Error: bare <LF> received"), r
        c.quit()
    m.wait_queue_empty()
    assert m.mails("rej-code") == []
