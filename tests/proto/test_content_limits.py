"""Bad and huge input through the content stage (src/content): what a
client gets for the messages a hostile or broken sender writes.

Each case ends in a clean reply with an enhanced status code and a log
line, or in acceptance (with the log line the docs name where there is
one), never in a crash (conftest fails a test whose daemon printed a
sanitizer report or died), and a second client completes a transaction
while the bad one is in flight (the daemon's loop is not stuck on it).

  - 10,000 MIME parts;
  - 1,000 levels of multipart nesting (550 5.6.0 with checks configured;
    accepted and logged without);
  - a 10 MB single header (552 5.3.4 over message_size_limit; with the
    limit raised, accepted with the header cut to header_size_limit);
  - NUL bytes and invalid UTF-8 in headers and body (regexp and pcre);
  - a missing closing boundary; an unterminated header section;
  - a boundary longer than mime_boundary_length_limit;
  - very long body lines (checked in pieces of line_length_limit, the
    message itself unchanged).

Big inputs are built by generators and sent in chunks.
"""

import re
import threading

import pytest

from moatlib import LOCAL_CLIENT_RE, check, queued_id, simple_message

ENV_RE = (r" from %s; from=<a@b\.test> to=<[^>]+> proto=ESMTP helo=<client\.test>: "
          % LOCAL_CLIENT_RE)

CHECK_PARAMS = ("header_checks", "mime_header_checks", "nested_header_checks", "body_checks")


def content_moat(moat_factory, tables, main=None):
    """A daemon whose four check parameters are exactly tables:
    {param: regexp text or (type, text)}; the others are set empty."""
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


class Bystander(threading.Thread):
    """A second client doing an ordinary transaction while the bad one is
    being sent and processed."""

    def __init__(self, m, user):
        super().__init__(daemon=True)
        self.m = m
        self.user = user
        self.error = None

    def run(self):
        try:
            with self.m.connect(timeout=60) as c:
                c.ehlo("bystander.test")
                c.sendmail("a@b.test", [self.user + "@example.test"],
                           simple_message("bystander"))
                c.quit()
        except BaseException as e:   # reported by finish()
            self.error = e

    def finish(self):
        self.join(90)
        assert not self.is_alive(), "the second client's transaction did not finish"
        if self.error:
            raise AssertionError("the second client failed: %r" % (self.error,))
        self.m.wait_mails(self.user, 1)


def crlf_lines(lines):
    """Text lines (str or bytes, no line ends) -> CRLF bytes, dot-stuffed."""
    out = []
    for line in lines:
        if isinstance(line, str):
            line = line.encode()
        if line.startswith(b"."):
            line = b"." + line
        out.append(line + b"\r\n")
    return b"".join(out)


def chunked(gen, size=1 << 16):
    """Join a generator of byte strings into chunks of about size bytes."""
    buf = []
    n = 0
    for piece in gen:
        buf.append(piece)
        n += len(piece)
        if n >= size:
            yield b"".join(buf)
            buf = []
            n = 0
    if buf:
        yield b"".join(buf)


def transaction(m, payload, user, bystander):
    """MAIL, RCPT user@example.test, DATA, payload (an iterable of CRLF,
    dot-stuffed byte chunks, or bytes), the dot; bystander@example.test
    gets an ordinary message from a second client meanwhile.  Returns the
    reply to the end of DATA."""
    if isinstance(payload, bytes):
        payload = [payload]
    b = Bystander(m, bystander)
    with m.connect(timeout=120) as c:
        c.ehlo("client.test")
        c.mail("a@b.test")
        c.rcpt(user + "@example.test")
        c.expect("DATA", 354)
        b.start()
        for chunk in chunked(payload):
            c.send(chunk)
        c.send(b".\r\n")
        r = c.reply(timeout=120)
        c.quit()
    b.finish()
    return r


def head(subject, extra=()):
    return ["From: <a@b.test>", "To: <u@example.test>", "Subject: %s" % subject,
            "Message-ID: <%s@b.test>" % re.sub(r"\W", "-", subject), "MIME-Version: 1.0"] + list(extra)


def delivered_body(m, user):
    """The body (after the first empty line) of user's one delivered mail."""
    mails = m.wait_mails(user, 1, timeout=30)
    assert len(mails) == 1, "expected one mail for %s, got %d" % (user, len(mails))
    return mails[0].partition(b"\n\n")[2]


def lf_body(payload):
    """What the body of payload looks like in a Maildir file."""
    data = b"".join(payload) if not isinstance(payload, bytes) else payload
    body = data.partition(b"\r\n\r\n")[2]
    lines = body.split(b"\r\n")
    return b"\n".join(l[1:] if l.startswith(b"..") else l for l in lines)


def cleanup_reject(m, kind, text_re, dsn, reply_text):
    m.wait_log(r": [0-9A-F]+: reject: %s %s%s%s %s$"
               % (kind, text_re, ENV_RE, re.escape(dsn), re.escape(reply_text)), timeout=30)


# ------------------------------------------------------ 10,000 MIME parts

def many_parts(n, boundary="many-parts"):
    yield crlf_lines(head("many parts", ['Content-Type: multipart/mixed; boundary="%s"' % boundary, ""]))
    for i in range(n):
        yield crlf_lines(["--" + boundary, "Content-Type: text/plain",
                          "Content-Description: part-%d" % i, "", "part %d" % i])
    yield crlf_lines(["--%s--" % boundary])


def test_ten_thousand_parts_every_part_checked(moat_factory):
    m = content_moat(moat_factory, {
        "mime_header_checks": "/^Content-Description: part-9999$/ REJECT last part seen\n",
        "body_checks": "/^never-in-these-parts$/ REJECT no\n"})
    r = transaction(m, list(many_parts(10000)), "parts-rej", "parts-rej-by")
    check(r, 550, "5.7.1", "last part seen")
    cleanup_reject(m, "header", r"Content-Description: part-9999", "5.7.1", "last part seen")


def test_ten_thousand_parts_accepted(moat_factory):
    m = content_moat(moat_factory, {
        "mime_header_checks": "/^Content-Description: part-10000$/ REJECT no such part\n",
        "body_checks": "/^never-in-these-parts$/ REJECT no\n"})
    payload = list(many_parts(10000))
    queued_id(transaction(m, payload, "parts-ok", "parts-ok-by"))
    body = delivered_body(m, "parts-ok")
    assert body.split(b"\n").count(b"--many-parts") == 10000
    assert body == lf_body(payload)


# -------------------------------------------------- 1,000-level nesting

def deep_nesting(depth):
    yield crlf_lines(head("deep multipart", ['Content-Type: multipart/mixed; boundary="L0"', ""]))
    for i in range(depth):
        yield crlf_lines(["--L%d" % i, 'Content-Type: multipart/mixed; boundary="L%d"' % (i + 1), ""])
    yield crlf_lines(["--L%d" % depth, "Content-Type: text/plain", "", "innermost",
                      "--L%d--" % depth])
    for i in reversed(range(depth)):
        yield crlf_lines(["--L%d--" % i])


def test_deep_nesting_with_checks_is_a_mime_error(moat_factory):
    # Postfix reports MIME errors only when checks are configured; the
    # reply is 550 5.6.0 and cleanup logs the reject.
    m = content_moat(moat_factory, {"header_checks": "/^X-Never:/ REJECT no\n"})
    r = transaction(m, list(deep_nesting(1000)), "nest-rej", "nest-rej-by")
    check(r, 550, "5.6.0", "MIME nesting exceeds safety limit")
    m.wait_log(r": [0-9A-F]+: reject: mime-error MIME nesting exceeds safety limit: .* from %s; "
               r"from=<a@b\.test> to=<nest-rej@example\.test>$" % LOCAL_CLIENT_RE, timeout=30)


def test_deep_nesting_without_checks_is_accepted(moat_factory):
    m = content_moat(moat_factory, {})
    payload = list(deep_nesting(1000))
    qid = queued_id(transaction(m, payload, "nest-ok", "nest-ok-by"))
    # content.h and docs/content.md: without checks the body is not parsed
    # (as in Postfix), so there is no MIME error: delivered unchanged.
    assert delivered_body(m, "nest-ok") == lf_body(payload)
    assert not re.search(r": %s: \w+: mime-error" % qid, m.log())


def test_nesting_at_the_limit_is_fine(moat_factory):
    m = content_moat(moat_factory, {
        "header_checks": "/^X-Never:/ REJECT no\n",
        "body_checks": "/^innermost$/ REJECT innermost seen\n"},
        main={"mime_nesting_limit": "100"})
    # 50 levels: under the limit, so the innermost body line is checked.
    r = transaction(m, list(deep_nesting(50)), "nest-50", "nest-50-by")
    check(r, 550, "5.7.1", "innermost seen")
    cleanup_reject(m, "body", "innermost", "5.7.1", "innermost seen")


# ------------------------------------------------ a 10 MB single header

BIG = 10 * 1024 * 1024


def big_header(total):
    """One logical header of about total bytes (folded at 78), then
    another header and a body."""
    yield crlf_lines(head("big header"))
    yield b"X-Big: start"
    fold = b"\r\n\t" + b"x" * 75
    block = fold * 1000
    n = total // len(fold)
    for _ in range(n // 1000):
        yield block
    yield fold * (n % 1000)
    yield b"\r\n" + crlf_lines(["X-After: after-big", "", "body after the big header"])


def test_big_header_over_message_size_limit(moat_factory):
    m = content_moat(moat_factory, {"header_checks": "/^X-Never:/ REJECT no\n"})
    r = transaction(m, big_header(BIG), "bighdr-552", "bighdr-552-by")
    check(r, 552, "5.3.4", "Message size exceeds fixed limit")
    m.wait_log(r"reject: END-OF-MESSAGE from .*552 5\.3\.4 Message size exceeds fixed limit", timeout=30)
    assert m.mails("bighdr-552") == []


def test_big_header_is_cut_to_header_size_limit(moat_factory):
    limit = 102400
    m = content_moat(moat_factory, {
        "header_checks": "/^X-After: after-big$/ WARN after seen\n/^X-Never:/ REJECT no\n"},
        main={"message_size_limit": str(BIG * 2), "header_size_limit": str(limit)})
    qid = queued_id(transaction(m, big_header(BIG), "bighdr", "bighdr-by"))
    mail = m.wait_mails("bighdr", 1, timeout=30)[0]
    hdrs, _, body = mail.partition(b"\n\n")
    assert body == b"body after the big header\n"
    lines = hdrs.split(b"\n")
    start = next(i for i, l in enumerate(lines) if l.startswith(b"X-Big: "))
    end = start + 1
    while end < len(lines) and lines[end][:1] in (b" ", b"\t"):
        end += 1
    big = b"\n".join(lines[start:end])
    assert limit - 200 <= len(big) <= limit + 2, len(big)
    assert set(big[len(b"X-Big: start"):]) <= set(b"\n\tx")
    # The header after the cut one is still a header, and still checked.
    assert b"X-After: after-big" in lines[end:]
    m.wait_log(r": %s: warning: header X-After: after-big%safter seen$" % (qid, ENV_RE), timeout=30)
    # The cut is logged (docs/content.md).
    m.wait_log(r": %s: warning: mime-error message header length exceeds safety limit: X-Big: start"
               % qid, timeout=30)


# ------------------------------------------ NUL bytes and invalid UTF-8

BAD_BYTES_HEADERS = [
    b"X-Nul: before\x00after",
    b"X-Bad-UTF8: \xc3\x28 \xed\xa0\x80 \xf8\x88\x80\x80\x80 \xff\xfe",
]
BAD_BYTES_BODY = [
    b"a NUL \x00 in a body line",
    b"\x00\x00\x00",
    b"invalid UTF-8: \xc3\x28 \xe2\x82 \xf0\x28\x8c\xbc \xff",
    b"overlong: \xc0\xaf \xe0\x80\xaf",
]


@pytest.mark.parametrize("kind", ["regexp", "pcre"])
def test_nul_and_invalid_utf8_accepted_unchanged(moat_factory, kind):
    m = content_moat(moat_factory, {
        "header_checks": (kind, "/^X-Never:/ REJECT no\n"),
        "body_checks": (kind, "/never-in-this-body/ REJECT no\n")})
    payload = crlf_lines(head("bad bytes") + BAD_BYTES_HEADERS + [b""] + BAD_BYTES_BODY)
    queued_id(transaction(m, payload, "bad-" + kind, "bad-by-" + kind))
    assert delivered_body(m, "bad-" + kind) == lf_body(payload)


@pytest.mark.parametrize("kind", ["regexp", "pcre"])
def test_invalid_utf8_header_still_checked(moat_factory, kind):
    m = content_moat(moat_factory, {
        "header_checks": (kind, "/^X-Bad-UTF8: .*hdr-utf8-marker/ REJECT bad utf8 header\n")})
    payload = crlf_lines(head("bad header") + [b"X-Bad-UTF8: \xc3\x28 \xff\xfe hdr-utf8-marker \x00tail",
                                               b""] + BAD_BYTES_BODY)
    r = transaction(m, payload, "badh-" + kind, "badh-by-" + kind)
    check(r, 550, "5.7.1", "bad utf8 header")
    cleanup_reject(m, "header", r"X-Bad-UTF8: .*hdr-utf8-marker.*", "5.7.1", "bad utf8 header")


@pytest.mark.parametrize("kind", ["regexp", "pcre"])
def test_invalid_utf8_body_still_checked(moat_factory, kind):
    m = content_moat(moat_factory, {
        "body_checks": (kind, "/body-utf8-marker/ REJECT bad utf8 body\n")})
    payload = crlf_lines(head("bad body") + BAD_BYTES_HEADERS + [b""] + BAD_BYTES_BODY +
                         [b"\xf8\x88\x80 \xc3\x28 body-utf8-marker \xff"])
    r = transaction(m, payload, "badb-" + kind, "badb-by-" + kind)
    check(r, 550, "5.7.1", "bad utf8 body")
    cleanup_reject(m, "body", r".*body-utf8-marker.*", "5.7.1", "bad utf8 body")


# ------------------------------------------ a missing closing boundary

UNCLOSED_RULES = {
    "mime_header_checks": "/^Content-Description: unclosed-marker$/ REJECT last part header\n",
    "body_checks": "/^unclosed-body-marker$/ REJECT last part body\n",
}


def unclosed(last_headers=(), last_body="the last part, never closed"):
    return crlf_lines(head("unclosed", ['Content-Type: multipart/mixed; boundary="open"', "",
                                        "preamble", "--open", "Content-Type: text/plain", "",
                                        "first part", "--open", "Content-Type: text/plain"]
                           + list(last_headers) + ["", last_body]))


def test_missing_closing_boundary_accepted(moat_factory):
    m = content_moat(moat_factory, UNCLOSED_RULES)
    payload = unclosed()
    queued_id(transaction(m, payload, "unclosed", "unclosed-by"))
    assert delivered_body(m, "unclosed") == lf_body(payload)


def test_missing_closing_boundary_last_part_still_checked(moat_factory):
    m = content_moat(moat_factory, UNCLOSED_RULES)
    r = transaction(m, unclosed(["Content-Description: unclosed-marker"]), "unclosed-h",
                    "unclosed-h-by")
    check(r, 550, "5.7.1", "last part header")
    cleanup_reject(m, "header", "Content-Description: unclosed-marker", "5.7.1", "last part header")
    r = transaction(m, unclosed(last_body="unclosed-body-marker"), "unclosed-b", "unclosed-b-by")
    check(r, 550, "5.7.1", "last part body")
    cleanup_reject(m, "body", "unclosed-body-marker", "5.7.1", "last part body")


# ---------------------------------------- an unterminated header section

def test_headers_only_message_last_header_checked(moat_factory):
    # The message ends inside the header section: no empty line, no body.
    # The last header (folded) is still checked when the message ends.
    m = content_moat(moat_factory, {"header_checks": "/^X-Tail: folded tail-marker$/ REJECT tail header\n"})
    payload = crlf_lines(head("headers only") + ["X-Tail: folded", " tail-marker"])
    r = transaction(m, payload, "hdronly-rej", "hdronly-rej-by")
    check(r, 550, "5.7.1", "tail header")
    cleanup_reject(m, "header", "X-Tail: folded tail-marker", "5.7.1", "tail header")


def test_headers_only_message_accepted(moat_factory):
    m = content_moat(moat_factory, {"header_checks": "/^X-Never:/ REJECT no\n"})
    payload = crlf_lines(head("headers only") + ["X-Tail: folded", " tail"])
    queued_id(transaction(m, payload, "hdronly", "hdronly-by"))
    mail = m.wait_mails("hdronly", 1)[0]
    assert b"\nX-Tail: folded\n tail\n" in mail


def test_part_header_section_unterminated(moat_factory):
    m = content_moat(moat_factory, {
        "mime_header_checks": "/^Content-Description: part-tail-marker$/ REJECT part tail\n"})
    payload = crlf_lines(head("part headers unterminated",
                              ['Content-Type: multipart/mixed; boundary="pt"', "", "--pt",
                               "Content-Type: text/plain", "", "one", "--pt",
                               "Content-Type: text/plain", "Content-Description: part-tail-marker"]))
    r = transaction(m, payload, "parttail", "parttail-by")
    check(r, 550, "5.7.1", "part tail")
    cleanup_reject(m, "header", "Content-Description: part-tail-marker", "5.7.1", "part tail")


# ------------------------------------- boundaries over the length limit

@pytest.mark.parametrize("length,limit", [(200, 70), (5000, None), (100000, None)])
def test_long_boundary_accepted_unchanged(moat_factory, length, limit):
    main = {"mime_boundary_length_limit": str(limit)} if limit else {}
    m = content_moat(moat_factory, {
        "mime_header_checks": "/^Content-Description: never-here$/ REJECT no\n",
        "body_checks": "/^never-in-this-body$/ REJECT no\n"}, main=main)
    b = ("b" * 50 + "0123456789") * (length // 60 + 1)
    b = b[:length]
    payload = crlf_lines(head("long boundary", ['Content-Type: multipart/mixed; boundary="%s"' % b, "",
                                                "--" + b, "Content-Type: text/plain", "", "part one",
                                                "--" + b, "Content-Type: text/plain", "", "part two",
                                                "--%s--" % b]))
    user = "longb-%d" % length
    queued_id(transaction(m, payload, user, user + "-by"))
    assert delivered_body(m, user) == lf_body(payload)


@pytest.mark.parametrize("length,limit", [(200, 70), (5000, None), (100000, None)])
def test_long_boundary_parts_still_checked(moat_factory, length, limit):
    # The boundary is cut to the limit and matched as a prefix (Postfix),
    # so a long boundary cannot hide a part's headers from the checks.
    main = {"mime_boundary_length_limit": str(limit)} if limit else {}
    m = content_moat(moat_factory, {
        "mime_header_checks": "/^Content-Description: behind-long-boundary$/ REJECT part seen\n"},
        main=main)
    b = ("c" * 50 + "9876543210") * (length // 60 + 1)
    b = b[:length]
    payload = crlf_lines(head("long boundary", ['Content-Type: multipart/mixed; boundary="%s"' % b, "",
                                                "--" + b, "Content-Type: text/plain", "", "part one",
                                                "--" + b, "Content-Type: text/plain",
                                                "Content-Description: behind-long-boundary", "",
                                                "part two", "--%s--" % b]))
    user = "longbc-%d" % length
    r = transaction(m, payload, user, user + "-by")
    check(r, 550, "5.7.1", "part seen")
    cleanup_reject(m, "header", "Content-Description: behind-long-boundary", "5.7.1", "part seen")


# ------------------------------------------------- very long body lines

LONG_RULES = "/^piece-marker/ REJECT piece start\n/inside-marker/ REJECT inside piece\n"


def long_line_message(line):
    return crlf_lines(head("long line") + ["", "short first line", line, "short last line"])


@pytest.mark.parametrize("offset,reply", [
    (2048 * 10, "piece start"),          # a piece begins exactly here
    (30000, "inside piece"),             # wholly inside piece 14 (28672..30720)
])
def test_long_line_checked_in_pieces(moat_factory, offset, reply):
    m = content_moat(moat_factory, {"body_checks": LONG_RULES})
    marker = "piece-marker" if reply == "piece start" else "inside-marker"
    line = "x" * offset + marker + "y" * (1024 * 1024)
    r = transaction(m, long_line_message(line), "long-rej", "long-rej-by")
    check(r, 550, "5.7.1", reply)
    # The logged piece is cut at 200 characters, as Postfix does.
    cleanup_reject(m, "body", r"\S+", "5.7.1", reply)


def test_long_line_piece_boundary_splits_a_match(moat_factory):
    # A phrase across two pieces is in neither (Postfix does the same).
    m = content_moat(moat_factory, {"body_checks": LONG_RULES})
    line = "x" * (2048 * 5 - 6) + "inside-marker" + "y" * 5000
    payload = long_line_message(line)
    queued_id(transaction(m, payload, "long-split", "long-split-by"))
    assert delivered_body(m, "long-split") == lf_body(payload)


def test_one_megabyte_line_delivered_unchanged(moat_factory):
    m = content_moat(moat_factory, {"body_checks": LONG_RULES,
                                    "header_checks": "/^X-Never:/ REJECT no\n"})
    line = "".join("%07d " % i for i in range(1024 * 1024 // 8))
    payload = long_line_message(line)
    queued_id(transaction(m, payload, "long-ok", "long-ok-by"))
    body = delivered_body(m, "long-ok")
    assert body == lf_body(payload)
    assert body.split(b"\n")[1] == line.encode()
