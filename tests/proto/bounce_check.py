"""Validate a moat delivery status notification with Python's email package.

Owns: what "a well-formed notice" means to the protocol tests (RFC 6522
multipart/report, RFC 3464 message/delivery-status, the original message
or its header, lines of at most 998 bytes).  It only reads; it never
changes what it is given.

    from bounce_check import parse_dsn
    dsn = parse_dsn(raw_bytes)      # AssertionError when malformed
    dsn["recipients"][0]["final"]   # "bob@example.com"

parse_dsn(raw) takes the notice as received (bytes or str; LF or CRLF line
ends; headers a delivery agent added on top, such as Return-Path or
Delivered-To, are fine) and returns a dict:

    to, from_, subject, date, message_id, auto_submitted   header values (str)
    explanation        part 1, the text for humans (str)
    reporting_mta      "dns; mx.example.net"
    queue_id           X-Moat-Queue-ID (the original message's ID)
    sender             X-Moat-Sender, decoded ("" for the null sender)
    arrival_date, received_from_mta                            (str or None)
    recipients         one dict per recipient block:
        final          Final-Recipient, type removed and decoded ("bob@example.com")
        final_type     "rfc822" or "utf-8"
        original       Original-Recipient decoded, or None
        action         "failed" / "delayed" / ...
        status         "5.1.1"
        diagnostic     Diagnostic-Code as written ("smtp; 550 5.1.1 ..."), or None
        remote_mta, last_attempt, will_retry_until             (str or None)
    original_type      "message/rfc822" or "text/rfc822-headers"
    original_headers   an email.message.EmailMessage: the returned message
                       (message/rfc822: with its body) or its header only
    message            the whole parsed notice
"""

import email
import email.policy
import re
from email.parser import BytesParser

ACTIONS = {"failed", "delayed", "delivered", "relayed", "expanded"}
STATUS_RE = re.compile(r"^[245]\.\d{1,3}\.\d{1,3}$")
XTEXT_CHAR_RE = re.compile(r"\\x\{([0-9A-Fa-f]{1,6})\}")


def decode_typed_address(value):
    """'rfc822; a@b' -> ('rfc822', 'a@b'); 'utf-8; j\\x{F8}rn@b' ->
    ('utf-8', 'jørn@b') (RFC 6533 utf-8-addr-xtext)."""
    assert value is not None, "missing address field"
    value = str(value)
    assert ";" in value, "address field without a type: %r" % value
    typ, addr = value.split(";", 1)
    typ = typ.strip().lower()
    addr = addr.strip()
    if typ == "utf-8":
        addr = XTEXT_CHAR_RE.sub(lambda m: chr(int(m.group(1), 16)), addr)
    return typ, addr


def _check_lines(raw):
    for n, line in enumerate(raw.split(b"\n"), 1):
        if line.endswith(b"\r"):
            line = line[:-1]
        assert len(line) <= 998, "line %d is %d bytes long (limit 998)" % (n, len(line))


def _get(block, name):
    v = block.get(name)
    return None if v is None else str(v)


def _is_ascii(text):
    return all(ord(c) < 128 for c in text)


def parse_dsn(raw):
    if isinstance(raw, str):
        raw = raw.encode("utf-8", "surrogateescape")
    _check_lines(raw)
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert not msg.defects, "notice defects: %r" % msg.defects
    assert msg.get_content_type() == "multipart/report", msg.get_content_type()
    assert (msg.get_param("report-type") or "").lower() == "delivery-status", \
        "report-type is %r" % msg.get_param("report-type")
    assert msg["MIME-Version"] is not None, "no MIME-Version"
    parts = msg.get_payload()
    assert isinstance(parts, list) and len(parts) == 3, \
        "want 3 parts, got %s" % (len(parts) if isinstance(parts, list) else "none")
    text, status, original = parts
    for p in parts:
        assert not p.defects, "part defects: %r" % p.defects

    assert text.get_content_type() == "text/plain", text.get_content_type()
    explanation = text.get_content()
    assert explanation.strip(), "empty explanation"
    assert _is_ascii(explanation), "non-ASCII in the explanation (charset us-ascii)"

    assert status.get_content_type() == "message/delivery-status", status.get_content_type()
    blocks = status.get_payload()
    assert isinstance(blocks, list) and len(blocks) >= 2, \
        "delivery-status needs a per-message block and at least one recipient block"
    for b in blocks:
        for k, v in b.items():
            assert _is_ascii(k + str(v)), "non-ASCII in delivery-status field %s" % k
    per_msg = blocks[0]
    reporting = _get(per_msg, "Reporting-MTA")
    assert reporting and ";" in reporting, "Reporting-MTA missing or untyped: %r" % reporting
    assert _get(per_msg, "Final-Recipient") is None, "per-message block holds recipient fields"

    recipients = []
    for b in blocks[1:]:
        ftype, final = decode_typed_address(_get(b, "Final-Recipient"))
        action = (_get(b, "Action") or "").strip().lower()
        assert action in ACTIONS, "bad Action %r" % action
        st = (_get(b, "Status") or "").strip()
        assert STATUS_RE.match(st), "bad Status %r" % st
        orig = _get(b, "Original-Recipient")
        diag = _get(b, "Diagnostic-Code")
        if diag is not None:
            assert ";" in diag, "Diagnostic-Code without a type: %r" % diag
        recipients.append({
            "final": final,
            "final_type": ftype,
            "original": decode_typed_address(orig)[1] if orig is not None else None,
            "action": action,
            "status": st,
            "diagnostic": diag,
            "remote_mta": _get(b, "Remote-MTA"),
            "last_attempt": _get(b, "Last-Attempt-Date"),
            "will_retry_until": _get(b, "Will-Retry-Until"),
        })

    otype = original.get_content_type()
    if otype == "message/rfc822":
        inner = original.get_payload()
        assert isinstance(inner, list) and len(inner) == 1, "message/rfc822 without a message"
        original_headers = inner[0]
    else:
        assert otype == "text/rfc822-headers", "third part is %s" % otype
        data = original.get_payload(decode=True) or b""
        original_headers = BytesParser(policy=email.policy.default).parsebytes(data, headersonly=True)

    sender = _get(per_msg, "X-Moat-Sender")
    return {
        "to": _get(msg, "To"),
        "from_": _get(msg, "From"),
        "subject": _get(msg, "Subject"),
        "date": _get(msg, "Date"),
        "message_id": _get(msg, "Message-Id"),
        "auto_submitted": _get(msg, "Auto-Submitted"),
        "explanation": explanation,
        "reporting_mta": reporting,
        "queue_id": _get(per_msg, "X-Moat-Queue-ID"),
        "sender": decode_typed_address(sender)[1] if sender is not None else None,
        "arrival_date": _get(per_msg, "Arrival-Date"),
        "received_from_mta": _get(per_msg, "Received-From-MTA"),
        "recipients": recipients,
        "original_type": otype,
        "original_headers": original_headers,
        "message": msg,
    }
