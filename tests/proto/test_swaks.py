"""swaks, a real SMTP client written by someone else, against moat."""

import re
import shutil
import subprocess

import pytest

pytestmark = pytest.mark.skipif(shutil.which("swaks") is None,
                                reason="swaks is not installed (scripts/deps.sh installs it)")

# swaks connects from 127.0.0.1: keep it outside mynetworks, so that mail for
# other domains meets the relay guard instead of being relayed.
SHARED_MAIN = {"mynetworks": "192.0.2.0/24",
               "smtpd_recipient_restrictions": "permit_mynetworks, reject_unauth_destination"}


def swaks(m, *args, timeout=60):
    cmd = ["swaks", "--server", "127.0.0.1:%d" % m.port, "--timeout", "20"] + list(args)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def test_swaks_plain(shared_moat):
    r = swaks(shared_moat, "--to", "swaks-plain@example.test", "--from", "a@b.test")
    assert r.returncode == 0, r.stdout + r.stderr
    mail = shared_moat.wait_mails("swaks-plain", 1)[0]
    assert mail.startswith(b"Return-Path: <a@b.test>\n")
    assert re.search(rb"\nSubject: test ", mail), mail


def test_swaks_pipeline(shared_moat):
    r = swaks(shared_moat, "--pipeline", "--to", "swaks-pipe@example.test", "--from", "a@b.test")
    assert r.returncode == 0, r.stdout + r.stderr
    shared_moat.wait_mails("swaks-pipe", 1)


def test_swaks_protocol_esmtp(shared_moat):
    r = swaks(shared_moat, "--protocol", "ESMTP", "--to", "swaks-esmtp@example.test",
              "--from", "a@b.test")
    assert r.returncode == 0, r.stdout + r.stderr
    mail = shared_moat.wait_mails("swaks-esmtp", 1)[0]
    assert re.search(rb"\n\s+by mx\.example\.test \(moat\) with ESMTP id ", mail), mail


def test_swaks_protocol_smtp(shared_moat):
    r = swaks(shared_moat, "--protocol", "SMTP", "--to", "swaks-smtp@example.test",
              "--from", "a@b.test")
    assert r.returncode == 0, r.stdout + r.stderr
    mail = shared_moat.wait_mails("swaks-smtp", 1)[0]
    assert re.search(rb"\n\s+by mx\.example\.test \(moat\) with SMTP id ", mail), mail


def test_swaks_multiple_recipients(shared_moat):
    r = swaks(shared_moat, "--to", "swaks-m1@example.test,swaks-m2@example.test",
              "--from", "a@b.test", "--pipeline")
    assert r.returncode == 0, r.stdout + r.stderr
    shared_moat.wait_mails("swaks-m1", 1)
    shared_moat.wait_mails("swaks-m2", 1)


def test_swaks_body_with_dots(shared_moat, tmp_path):
    body = tmp_path / "body.txt"
    body.write_bytes(b"Subject: dots\r\n\r\n.one dot\r\n..two dots\r\nend\r\n")
    r = swaks(shared_moat, "--to", "swaks-dots@example.test", "--from", "a@b.test",
              "--data", "@%s" % body)
    assert r.returncode == 0, r.stdout + r.stderr
    mail = shared_moat.wait_mails("swaks-dots", 1)[0]
    # swaks may add an empty line before its own end of data.
    assert mail.rstrip(b"\n").endswith(b"\n\n.one dot\n..two dots\nend"), mail


def test_swaks_relay_denied(shared_moat):
    # swaks exits 24 when the server refuses RCPT.
    r = swaks(shared_moat, "--to", "u@other.test", "--from", "a@b.test")
    assert r.returncode == 24, r.stdout + r.stderr
    assert "554 5.7.1 <u@other.test>: Relay access denied" in r.stdout


def test_swaks_eight_bit(shared_moat, tmp_path):
    body = tmp_path / "body8.txt"
    body.write_bytes("Subject: 8bit\r\n\r\nGrüße\r\n".encode())
    r = swaks(shared_moat, "--to", "swaks-8bit@example.test", "--from", "a@b.test",
              "--data", "@%s" % body, "--protocol", "ESMTP")
    assert r.returncode == 0, r.stdout + r.stderr
    mail = shared_moat.wait_mails("swaks-8bit", 1)[0]
    assert mail.rstrip(b"\n").endswith("\n\nGrüße".encode()), mail
