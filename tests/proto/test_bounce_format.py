"""The notices bounce_build() writes, read back by Python's email package.

There is no command that prints a notice, so the unit test
bounce_samples_written (tests/unit/test_bounce.c) writes one of each kind
to bounce-samples/ next to the unit binary; `make test` runs the unit
tests before these.  BOUNCE_SAMPLES_DIR overrides the directory.  This
also tests tests/proto/bounce_check.py itself, which the queue tests use
on notices that travelled through a real delivery.
"""

import os
import pathlib

import pytest

from bounce_check import decode_typed_address, parse_dsn

ROOT = pathlib.Path(__file__).resolve().parents[2]


def samples_dir():
    if os.environ.get("BOUNCE_SAMPLES_DIR"):
        return pathlib.Path(os.environ["BOUNCE_SAMPLES_DIR"])
    if os.environ.get("MOAT_BIN"):
        return pathlib.Path(os.environ["MOAT_BIN"]).resolve().parent / "bounce-samples"
    return ROOT / "build" / "asan" / "bounce-samples"


def sample(name):
    path = samples_dir() / name
    if not path.exists():
        pytest.skip("%s not found: run the unit tests first (`make unit`; "
                    "the bounce_samples_written test writes it)" % path)
    return path.read_bytes()


def test_failed_notice():
    d = parse_dsn(sample("failed.eml"))
    assert d["to"] == "alice@example.org"
    assert d["subject"] == "Undelivered Mail Returned to Sender"
    assert d["from_"].startswith("MAILER-DAEMON@mx.example.net")
    assert d["auto_submitted"] == "auto-replied"
    assert d["message_id"] == "<00F0418A2B3C4D.1700000120123456@mx.example.net>"
    assert "mx.example.net" in d["explanation"]
    assert "postmaster" in d["explanation"]
    assert d["reporting_mta"] == "dns; mx.example.net"
    assert d["queue_id"] == "00F0418A2B3C4D"
    assert d["sender"] == "alice@example.org"
    assert d["received_from_mta"] == "dns; client.example.org ([192.0.2.7])"
    assert d["arrival_date"] == "Tue, 14 Nov 2023 22:13:20 +0000"
    bob, jorn = d["recipients"]
    assert bob == {
        "final": "bob@example.com", "final_type": "rfc822",
        "original": "bob.alias@example.com", "action": "failed", "status": "5.1.1",
        "diagnostic": "smtp; 550 5.1.1 <bob@example.com>: User unknown",
        "remote_mta": "dns; mx.example.com",
        "last_attempt": "Tue, 14 Nov 2023 22:14:20 +0000", "will_retry_until": None,
    }
    # A UTF-8 address travels 7-bit (RFC 6533 utf-8-addr-xtext) and decodes back.
    assert jorn["final"] == "j\u00f8rn@example.com"
    assert jorn["final_type"] == "utf-8"
    assert jorn["original"] is None
    assert jorn["status"] == "5.2.2"
    assert d["original_type"] == "message/rfc822"
    orig = d["original_headers"]
    assert orig["Subject"] == "lunch"
    assert orig.get_content() == "Shall we meet at noon?\n-- \nAlice\n"


def test_delay_warning():
    d = parse_dsn(sample("delayed.eml"))
    assert d["subject"] == "Delayed Mail (still being retried)"
    (carol,) = d["recipients"]
    assert carol["action"] == "delayed"
    assert carol["status"] == "4.4.1"
    assert carol["will_retry_until"] == "Sun, 19 Nov 2023 22:13:20 +0000"
    assert carol["diagnostic"].startswith("X-Moat; connect to mx.example.net")
    assert "Sun, 19 Nov 2023" in d["explanation"]
    # A warning returns the header only, even of a small message.
    assert d["original_type"] == "text/rfc822-headers"
    assert d["original_headers"]["Subject"] == "lunch"
    assert d["original_headers"]["Message-Id"] == "<lunch-1@example.org>"


def test_double_bounce_to_postmaster():
    d = parse_dsn(sample("double.eml"))
    assert d["to"] == "postmaster"
    assert d["subject"] == "Postmaster Copy: Undelivered Mail"
    assert d["sender"] == ""
    assert [r["action"] for r in d["recipients"]] == ["failed"]
    assert d["original_type"] == "message/rfc822"


def test_over_size_limit_headers_only():
    raw = sample("headers-only.eml")
    d = parse_dsn(raw)
    assert d["original_type"] == "text/rfc822-headers"
    h = d["original_headers"]
    assert h["Subject"] == "gro\u00df"
    # The 1757-byte header field was folded, and unfolds to the original.
    assert str(h["X-Long"]) == " ".join(["filler"] * 250)
    # The content held the first boundary candidate: the notice took another.
    assert h["X-Trap"] == "--moat-00F0418A2B3C4D.1700000120123456"
    assert d["message"].get_boundary() != "moat-00F0418A2B3C4D.1700000120123456"
    (r,) = d["recipients"]
    assert r["diagnostic"] == "smtp; 554 5.7.1 Rejected:" + " because" * 200
    assert b"K\xc3\xa4se" not in raw   # the body stayed home


def test_crlf_and_prepended_headers_are_accepted():
    raw = sample("failed.eml")
    crlf = b"Return-Path: <>\r\nDelivered-To: alice@example.org\r\n" + raw.replace(b"\n", b"\r\n")
    d = parse_dsn(crlf)
    assert d["recipients"][0]["final"] == "bob@example.com"


@pytest.mark.parametrize("damage", [
    (b"Action: failed\n", b""),                               # required field gone
    (b"Status: 5.1.1\n", b"Status: 5.1\n"),                   # malformed status
    (b"report-type=delivery-status", b"report-type=disposition-notification"),
    (b"Content-Type: message/delivery-status", b"Content-Type: text/plain"),
    (b"Reporting-MTA: dns; mx.example.net\n", b""),
    (b"Subject: lunch\n", b"Subject: " + b"x" * 1000 + b"\n"),  # over-long line
])
def test_parse_dsn_rejects_damage(damage):
    raw = sample("failed.eml")
    old, new = damage
    assert old in raw
    with pytest.raises(AssertionError):
        parse_dsn(raw.replace(old, new, 1))


def test_parse_dsn_rejects_missing_closing_boundary():
    raw = sample("failed.eml")
    cut = raw.rindex(b"\n--moat-")
    with pytest.raises(AssertionError):
        parse_dsn(raw[:cut + 1])


def test_decode_typed_address():
    assert decode_typed_address("rfc822; a+b@example.com") == ("rfc822", "a+b@example.com")
    assert decode_typed_address("utf-8; \\x{2B}\\x{E9}@x") == ("utf-8", "+\u00e9@x")
    assert decode_typed_address("rfc822;") == ("rfc822", "")
