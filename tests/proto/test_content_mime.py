"""MIME through the content stage, end to end: which checks see which
lines of a MIME message (src/content, docs/content.md).

Every test runs a real daemon with its own tables and sends real
messages (built with Python's email package, or by hand where the exact
bytes matter).  What is asserted is what a client and a postmaster see:
the reply to the end of DATA, the cleanup log line, and the delivered
Maildir file.

  - mime_header_checks see the MIME headers of every part, at any depth,
    and header_checks do not;
  - nested_header_checks see the headers of a message/rfc822 attachment,
    and header_checks do not;
  - body_checks see the body lines of every part (and of attached
    messages), never headers;
  - body_checks_size_limit counts per part;
  - body_checks_decode = yes decodes base64 and quoted-printable text
    parts for body_checks, = no leaves them as they are (Postfix);
  - Ryan Finnie's MIME torture test passes through byte for byte, and a
    rule on one of its deepest parts fires;
  - strict_mime_encoding_domain.
"""

import email.charset
import email.policy
import os
import re
from email.mime.application import MIMEApplication
from email.mime.message import MIMEMessage
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText

import pytest

from moatlib import LOCAL_CLIENT_RE, check, dot_stuff, queued_id

TORTURE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..",
                       "shared", "testdata", "mime", "rf-mime-torture-test-1.0.eml")

# The cleanup reject line after the queue ID, up to the reply text.
ENV_RE = (r" from %s; from=<a@b\.test> to=<u@example\.test> proto=ESMTP helo=<client\.test>: "
          % LOCAL_CLIENT_RE)


# ------------------------------------------------------------ helpers

CHECK_PARAMS = ("header_checks", "mime_header_checks", "nested_header_checks", "body_checks")


def content_moat(moat_factory, tables, main=None):
    """A daemon whose four check parameters are exactly what tables says:
    {param: "regexp table text"} (or (type, text)); a parameter not named
    is set empty, so that the $header_checks defaults of
    mime_header_checks and nested_header_checks do not blur which class
    saw a line."""
    m = moat_factory(main=main, start=False)
    for param in CHECK_PARAMS:
        spec = tables.get(param)
        if spec is None:
            m.main[param] = ""
            continue
        kind, text = spec if isinstance(spec, tuple) else ("regexp", spec)
        name = "%s.%s" % (param, kind)
        m.set_file(name, text)
        m.main[param] = "%s:%s" % (kind, m.path(name))
    m.start()
    return m


def crlf(data):
    """LF (or CRLF) lines -> CRLF lines, as bytes."""
    if isinstance(data, str):
        data = data.encode()
    return re.sub(rb"\r?\n", b"\r\n", data)


def send(m, message, rcpt="u@example.test"):
    """One transaction; the reply to the end of DATA."""
    with m.connect() as c:
        c.ehlo("client.test")
        c.mail("a@b.test")
        c.rcpt(rcpt)
        c.expect("DATA", 354)
        c.send(dot_stuff(crlf(message)))
        r = c.reply(timeout=60)
        c.quit()
    return r


def accepted(m, message, user):
    """Send to user@example.test, expect 250, return the delivered file."""
    r = send(m, message, user + "@example.test")
    qid = queued_id(r)
    mails = m.wait_mails(user, 1)
    assert len(mails) == 1, mails
    return qid, mails[0]


def rejected(m, message, text, kind, logged):
    """Expect "550 5.7.1 text" and the cleanup line "reject: KIND LOGGED"
    (LOGGED a regex for the checked line)."""
    r = send(m, message)
    check(r, 550, "5.7.1", text, what="end of data")
    m.wait_log(r": [0-9A-F]+: reject: %s %s%s5\.7\.1 %s$" % (kind, logged, ENV_RE, re.escape(text)))
    return r


def entity(headers, body):
    """A MIME entity (headers, empty line, body), LF lines."""
    return "".join(h + "\n" for h in headers) + "\n" + body


def multipart(parts, boundary, subtype="mixed", extra=()):
    body = "This is a multi-part message in MIME format.\n\n"
    body += "".join("--%s\n%s\n" % (boundary, p) for p in parts)
    body += "--%s--\n" % boundary
    return entity(['Content-Type: multipart/%s; boundary="%s"' % (subtype, boundary)] + list(extra),
                  body)


def text_part(text, extra=()):
    return entity(["Content-Type: text/plain; charset=us-ascii"] + list(extra), text)


def rfc822_part(inner, extra=()):
    return entity(["Content-Type: message/rfc822"] + list(extra), inner)


def message(top, subject="mime test", extra=()):
    """Primary headers followed by top (an entity: its headers continue the
    primary header block)."""
    hdrs = ["From: <a@b.test>", "To: <u@example.test>", "Subject: %s" % subject,
            "Message-ID: <%s@b.test>" % re.sub(r"\W", "-", subject), "MIME-Version: 1.0"]
    return "".join(h + "\n" for h in list(hdrs) + list(extra)) + top


def nested_multipart(part, depth, tag="n"):
    """part wrapped in depth levels of multipart/mixed (each level with a
    plain text sibling first)."""
    for i in range(depth):
        part = multipart([text_part("level %d filler\n" % i), part], "%s-level-%d" % (tag, i))
    return part


def same_body(mail, sent):
    """The delivered body (after the first empty line) is the sent one."""
    sent = crlf(sent).replace(b"\r\n", b"\n")
    got = delivered_rest(mail)
    assert got.partition(b"\n\n")[2] == sent.partition(b"\n\n")[2]


def delivered_rest(mail):
    """A delivered file without moat's Return-Path, Delivered-To and
    Received: what the client sent (LF lines)."""
    lines = mail.split(b"\n")
    assert lines[0].startswith(b"Return-Path: "), lines[0]
    assert lines[1].startswith(b"Delivered-To: "), lines[1]
    assert lines[2].startswith(b"Received: "), lines[2]
    i = 3
    while i < len(lines) and lines[i][:1] in (b" ", b"\t"):
        i += 1
    return b"\n".join(lines[i:])


# ------------------------------------------------- mime_header_checks

MIME_RULES = ("/^Content-Description: mime-marker$/ REJECT mime header seen\n"
              "/^Content-Disposition: attachment; filename=\"?evil\\.exe\"?$/ REJECT no exe\n")
HEADER_RULES = "/^Content-Description: header-marker$/ REJECT header_checks saw a MIME header\n"


@pytest.fixture
def mime_moat(moat_factory):
    return content_moat(moat_factory, {"mime_header_checks": MIME_RULES,
                                       "header_checks": HEADER_RULES})


@pytest.mark.parametrize("depth", [0, 1, 2, 5, 20])
def test_mime_header_checks_see_parts_at_any_depth(mime_moat, depth):
    part = text_part("the marked part\n", extra=["Content-Description: mime-marker"])
    top = multipart([text_part("first part\n"), nested_multipart(part, depth, "d%d" % depth)],
                    "top-boundary")
    rejected(mime_moat, message(top, "depth %d" % depth), "mime header seen", "header",
             r"Content-Description: mime-marker")


def test_mime_header_checks_unmarked_message_passes(mime_moat):
    top = multipart([text_part("first\n"), nested_multipart(text_part("deep\n"), 5)], "b-clean")
    msg = message(top, "clean mime")
    _, mail = accepted(mime_moat, msg, "mime-clean")
    same_body(mail, msg)


def test_mime_header_checks_in_attached_message(mime_moat):
    # A part of a multipart inside a message/rfc822 attachment.
    inner = message(multipart([text_part("x\n", extra=["Content-Description: mime-marker"])],
                              "inner-b"), "inner")
    top = multipart([text_part("see attachment\n"), rfc822_part(inner)], "outer-b")
    rejected(mime_moat, message(top, "attached"), "mime header seen", "header",
             r"Content-Description: mime-marker")


def test_mime_header_checks_email_package_attachment(mime_moat):
    msg = MIMEMultipart()
    msg["From"] = "a@b.test"
    msg["To"] = "u@example.test"
    msg["Subject"] = "an attachment"
    msg.attach(MIMEText("please run the attachment\n"))
    att = MIMEApplication(b"MZ\x90\x00not really a program", "octet-stream")
    att.add_header("Content-Disposition", "attachment", filename="evil.exe")
    msg.attach(att)
    rejected(mime_moat, msg.as_bytes(policy=email.policy.SMTP), "no exe", "header",
             r"Content-Disposition: attachment; filename=\"?evil\.exe\"?")


def test_header_checks_do_not_see_part_headers(mime_moat):
    part = text_part("x\n", extra=["Content-Description: header-marker"])
    msg = message(multipart([part], "hb"), "header marker in a part")
    _, mail = accepted(mime_moat, msg, "mime-hc-parts")
    same_body(mail, msg)


# ------------------------------------------------- nested_header_checks

NESTED_SUBJECT = "Subject: nested-marker"


def attached(depth=1, subject=NESTED_SUBJECT):
    """A message whose attached message (depth levels of message/rfc822
    inside multipart/mixed) has the marker Subject."""
    inner = "From: <x@y.test>\nTo: <z@y.test>\n%s\n\nthe attached message's body\n" % subject
    for i in range(depth):
        inner = message(multipart([text_part("forwarded\n"), rfc822_part(inner)], "fwd-%d" % i),
                        "forward %d" % i)
    return inner


def test_nested_header_checks_see_attached_headers(moat_factory):
    m = content_moat(moat_factory, {
        "header_checks": "/^Subject: nested-marker$/ REJECT primary saw it\n",
        "nested_header_checks": "/^Subject: nested-marker$/ REJECT nested saw it\n"})
    for depth in (1, 3):
        rejected(m, attached(depth), "nested saw it", "header", r"Subject: nested-marker")
    # The same header as a primary header goes to header_checks.
    rejected(m, "From: <a@b.test>\nTo: <u@example.test>\n%s\n\nbody\n" % NESTED_SUBJECT,
             "primary saw it", "header", r"Subject: nested-marker")


def test_nested_header_checks_with_email_package(moat_factory):
    m = content_moat(moat_factory, {
        "nested_header_checks": "/^X-Mailer: nested-mailer/ REJECT nested mailer\n"})
    inner = MIMEText("inner body\n")
    inner["Subject"] = "inner"
    inner["X-Mailer"] = "nested-mailer 1.0"
    outer = MIMEMultipart()
    outer["From"] = "a@b.test"
    outer["To"] = "u@example.test"
    outer["Subject"] = "fwd"
    outer.attach(MIMEText("see the attached message\n"))
    outer.attach(MIMEMessage(inner))
    rejected(m, outer.as_bytes(policy=email.policy.SMTP), "nested mailer", "header",
             r"X-Mailer: nested-mailer 1\.0")


def test_header_checks_do_not_see_attached_headers(moat_factory):
    m = content_moat(moat_factory, {
        "header_checks": "/^Subject: nested-marker$/ REJECT primary saw it\n"})
    msg = attached(1)
    _, mail = accepted(m, msg, "nested-not-hc")
    same_body(mail, msg)


# ------------------------------------------------------ body_checks

BODY_RULES = ("/^Content-Type: application\\/x-body-marker/ REJECT body_checks saw a MIME header\n"
              "/^X-Body-Marker:/ REJECT body_checks saw a header\n"
              "/bodyphrase-xyzzy/ REJECT body phrase\n")


@pytest.fixture
def body_moat(moat_factory):
    return content_moat(moat_factory, {"body_checks": BODY_RULES})


@pytest.mark.parametrize("where", ["plain", "second-part", "deep-part", "attached-message",
                                   "after-last-part"])
def test_body_checks_see_every_part(body_moat, where):
    line = "a line with bodyphrase-xyzzy in it\n"
    if where == "plain":
        msg = "From: <a@b.test>\nTo: <u@example.test>\nSubject: plain\n\nhello\n" + line
    elif where == "second-part":
        msg = message(multipart([text_part("one\n"), text_part("two\n" + line)], "bp2"), where)
    elif where == "deep-part":
        msg = message(multipart([text_part("one\n"), nested_multipart(text_part(line), 4)], "bp3"),
                      where)
    elif where == "attached-message":
        inner = "Subject: inner\n\ninner body\n" + line
        msg = message(multipart([text_part("one\n"), rfc822_part(inner)], "bp4"), where)
    else:
        # The epilogue after the closing boundary is body text too.
        msg = message(multipart([text_part("one\n")], "bp5") + line, where)
    rejected(body_moat, msg, "body phrase", "body", r"a line with bodyphrase-xyzzy in it")


def test_body_checks_do_not_see_headers(body_moat):
    # A part's MIME header, a primary header and an attached message's
    # header, each of which a body rule would match as a body line.
    inner = "Subject: inner\nX-Body-Marker: nested\n\ninner body\n"
    top = multipart([
        entity(["Content-Type: application/x-body-marker"], "aGVsbG8=\n"),
        rfc822_part(inner),
    ], "bh")
    msg = message(top, "headers only", extra=["X-Body-Marker: primary"])
    _, mail = accepted(body_moat, msg, "body-headers")
    same_body(mail, msg)


def test_body_checks_size_limit_per_part(moat_factory):
    """body_checks_size_limit counts per body part: a match past the limit
    inside a part is not seen; in the next part (a fresh count) it is."""
    m = content_moat(moat_factory, {"body_checks": "/sizephrase-plugh/ REJECT body phrase\n"},
                     main={"body_checks_size_limit": "2048"})
    filler = "".join("filler line %04d of a long first part, nothing to see here\n" % i
                     for i in range(200))      # about 12 KB, six times the limit
    past = text_part(filler + "sizephrase-plugh past the limit\n")

    msg = message(multipart([past, text_part("clean second part\n")], "sz1"), "past limit")
    _, mail = accepted(m, msg, "size-past")
    same_body(mail, msg)

    plain = "From: <a@b.test>\nTo: <u@example.test>\nSubject: plain\n\n" + filler + \
        "sizephrase-plugh past the limit\n"
    accepted(m, plain, "size-plain")

    msg = message(multipart([past, text_part("sizephrase-plugh at the start of part two\n")],
                            "sz2"), "next part")
    rejected(m, msg, "body phrase", "body", r"sizephrase-plugh at the start of part two")


# ------------------------------------------------- body_checks_decode

# The second phrase is for a text the email package encodes: it escapes
# only the non-ASCII letter ("p=C3=AFlls"), so that the raw line does not
# match.
PHRASE_RULE = ("/buy cheap pills now/ REJECT decoded phrase\n"
               "/p\u00efll offer for sale/ REJECT decoded phrase\n")


def base64_text_message():
    """A text/plain part in base64 (the email package's choice for utf-8)."""
    msg = MIMEMultipart()
    msg["From"] = "a@b.test"
    msg["To"] = "u@example.test"
    msg["Subject"] = "base64 text"
    part = MIMEText("Hello.\nIt is time to buy cheap pills now, friend \u263a\nBye.\n",
                    "plain", "utf-8")
    assert part["Content-Transfer-Encoding"] == "base64"
    msg.attach(MIMEText("cover note\n"))
    msg.attach(part)
    raw = msg.as_bytes(policy=email.policy.SMTP)
    assert b"buy cheap" not in raw
    return raw


def qp_text_message():
    """A quoted-printable part whose phrase is split by =20 escapes and a
    soft line break (written by hand so that the split is where we want)."""
    body = ("Hello there,=20this is the time to buy=20che=\n"
            "ap=20pills=20now=21\n"
            "Regards=2C the sender\n")
    part = entity(["Content-Type: text/plain; charset=utf-8",
                   "Content-Transfer-Encoding: quoted-printable"], body)
    raw = message(multipart([text_part("cover\n"), part], "qp-b"), "qp text")
    assert "buy cheap" not in raw
    return raw


def qp_email_package_message():
    cs = email.charset.Charset("utf-8")
    cs.body_encoding = email.charset.QP
    text = "caf\u00e9 " + "na\u00efve " * 12 + "and then a p\u00efll offer for sale\n"
    part = MIMEText(text, "plain", cs)
    assert part["Content-Transfer-Encoding"] == "quoted-printable"
    part["From"] = "a@b.test"
    part["To"] = "u@example.test"
    part["Subject"] = "qp single part"
    raw = part.as_bytes(policy=email.policy.SMTP)
    assert b"ll offer for sale" in raw and "p\u00efll".encode() not in raw
    return raw


DECODE_CASES = {"base64": base64_text_message, "qp-by-hand": qp_text_message,
                "qp-email-package": qp_email_package_message}


@pytest.mark.parametrize("case", sorted(DECODE_CASES))
def test_body_checks_decode_yes(moat_factory, case):
    m = content_moat(moat_factory, {"body_checks": PHRASE_RULE},
                     main={"body_checks_decode": "yes"})
    r = send(m, DECODE_CASES[case]())
    check(r, 550, "5.7.1", "decoded phrase", what="end of data")
    m.wait_log(r": [0-9A-F]+: reject: body .*(?:buy cheap pills now|ll offer for sale).*"
               r"%s5\.7\.1 decoded phrase$" % ENV_RE)


@pytest.mark.parametrize("case", sorted(DECODE_CASES))
def test_body_checks_decode_no(moat_factory, case):
    m = content_moat(moat_factory, {"body_checks": PHRASE_RULE},
                     main={"body_checks_decode": "no"})
    raw = DECODE_CASES[case]()
    _, mail = accepted(m, raw, "decode-no")
    # Decoding is for the checks only: the message is delivered as sent.
    same_body(mail, raw)


def test_body_checks_decode_leaves_non_text_parts(moat_factory):
    # Only text/* parts are decoded: the phrase base64-encoded in an
    # application/octet-stream attachment is not seen.
    m = content_moat(moat_factory, {"body_checks": PHRASE_RULE},
                     main={"body_checks_decode": "yes"})
    msg = MIMEMultipart()
    msg["From"] = "a@b.test"
    msg["To"] = "u@example.test"
    msg["Subject"] = "binary"
    msg.attach(MIMEText("cover\n"))
    msg.attach(MIMEApplication(b"buy cheap pills now\n", "octet-stream"))
    accepted(m, msg.as_bytes(policy=email.policy.SMTP), "decode-binary")


# ------------------------------------------------- the MIME torture test

def torture_bytes():
    with open(TORTURE, "rb") as f:
        data = f.read()
    # The first line is an mbox separator, not part of the message.
    assert data.startswith(b"From rfinnie@"), data[:40]
    return data.split(b"\n", 1)[1]


# Rules that look at every class and never match the torture test, so
# that the whole content stage runs over it.
TORTURE_QUIET = {
    "header_checks": "/^Subject: never-in-torture/ REJECT no\n/^Received:/ WARN seen\n",
    "mime_header_checks": "/^Content-Type: application\\/x-never/ REJECT no\n",
    "nested_header_checks": "/^X-Never-Nested:/ REJECT no\n",
    "body_checks": "/never-in-the-torture-body/ REJECT no\n",
}


def test_torture_passes_unchanged(moat_factory):
    m = content_moat(moat_factory, TORTURE_QUIET, main={"body_checks_decode": "yes"})
    data = torture_bytes()
    _, mail = accepted(m, data, "torture")
    assert delivered_rest(mail) == data


def test_torture_deep_part_rule_fires(moat_factory):
    # dot.gif sits in multipart/mixed < multipart/signed < message/rfc822
    # < multipart/mixed: four levels down.
    rules = dict(TORTURE_QUIET)
    rules["mime_header_checks"] = "/^Content-Type: image\\/gif; name=dot\\.gif$/ REJECT deep gif\n"
    m = content_moat(moat_factory, rules)
    rejected(m, torture_bytes(), "deep gif", "header", r"Content-Type: image/gif; name=dot\.gif")


def test_torture_folded_mime_header_is_unfolded(moat_factory):
    # A folded Content-Description of an attached message's part is
    # checked unfolded (the line break removed, the white space kept).
    rules = dict(TORTURE_QUIET)
    rules["mime_header_checks"] = "/flesh is spongy, and    bruised\\. --Zapp$/ REJECT zapp\n"
    m = content_moat(moat_factory, rules)
    rejected(m, torture_bytes(), "zapp", "header", r"Content-Description: The spirit is willing.*")


# ------------------------------------------------ strict_mime_encoding_domain

def bad_domain_messages():
    """Composite types with an encoding other than 7bit/8bit/binary."""
    mp = message(entity(['Content-Type: multipart/mixed; boundary="bd"',
                         "Content-Transfer-Encoding: base64"],
                        "--bd\nContent-Type: text/plain\n\nhi\n--bd--\n"), "multipart base64")
    inner = "Subject: inner\n\ninner body\n"
    rfc = message(multipart([text_part("fwd\n"),
                             entity(["Content-Type: message/rfc822",
                                     "Content-Transfer-Encoding: quoted-printable"], inner)],
                            "bd2"), "rfc822 qp")
    return {"multipart-base64": mp, "rfc822-qp": rfc}


@pytest.mark.parametrize("case", ["multipart-base64", "rfc822-qp"])
def test_strict_mime_encoding_domain_rejects(moat_factory, case):
    # Header checks are configured, so the MIME error is a reject either
    # way (Postfix reports MIME errors only when checks are on).
    m = content_moat(moat_factory, {"header_checks": "/^X-Never:/ REJECT no\n"},
                     main={"strict_mime_encoding_domain": "yes"})
    r = send(m, bad_domain_messages()[case])
    check(r, 550, "5.6.0", "invalid message/* or multipart/* encoding domain", what="end of data")
    m.wait_log(r": [0-9A-F]+: reject: mime-error invalid message/\* or multipart/\* encoding domain: "
               r".* from %s; from=<a@b\.test> to=<u@example\.test>$" % LOCAL_CLIENT_RE)


@pytest.mark.parametrize("case", ["multipart-base64", "rfc822-qp"])
def test_strict_mime_encoding_domain_off_accepts(moat_factory, case):
    m = content_moat(moat_factory, {"header_checks": "/^X-Never:/ REJECT no\n"},
                     main={"strict_mime_encoding_domain": "no"})
    msg = bad_domain_messages()[case]
    _, mail = accepted(m, msg, "strict-off")
    same_body(mail, msg)


def test_strict_mime_encoding_domain_allows_identity_encodings(moat_factory):
    m = content_moat(moat_factory, {"header_checks": "/^X-Never:/ REJECT no\n"},
                     main={"strict_mime_encoding_domain": "yes"})
    msg = message(entity(['Content-Type: multipart/mixed; boundary="ok"',
                          "Content-Transfer-Encoding: 7bit"],
                         "--ok\nContent-Type: text/plain\nContent-Transfer-Encoding: base64\n\n"
                         "aGk=\n--ok--\n"), "strict ok")
    accepted(m, msg, "strict-ok")
