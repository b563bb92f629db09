"""`moat content check`: one message through the content stage (docs/content.md).

The binary is $MOAT_BIN (default build/asan/moat).  Each test writes a
small configuration (main.cf, master.cf, check tables) into pytest's
tmp_path and runs the real command on a message file or standard input;
nothing listens on the network.  The seed rules are the seeds' own files
(../shared/examples/seed-gateway, or $MOAT_SHARED/examples/seed-gateway).

Output contract:
    decision: CLASS FILE:LINE: ACTION: header|body TEXT[: DETAIL]
    note: CLASS: header|body TEXT: NOTE            (--trace)
    scanner: clean|infected NAME|failed REASON      (--scan)
    result: accept [hold] [redirect=A] [bcc=A,B] [filter=T:D]
          | reject CODE X.Y.Z TEXT | defer CODE X.Y.Z TEXT | discard
    output:                                         (--output; the message follows)
Exit 0: accepted (DISCARD and HOLD too); 1: rejected or deferred; 2: usage
or configuration error (file:line: message).
"""
import base64
import os
import re
import subprocess
from pathlib import Path

import pytest

from clamdlib import EICAR, VIRUS_NAME
from moatlib import SANITIZER_MARKERS, moat_bin

MOAT = moat_bin()

SEEDS = Path(os.environ.get("MOAT_SHARED") or Path(__file__).resolve().parents[3] / "shared") \
    / "examples" / "seed-gateway"

BASE_MAIN = {
    "myhostname": "mx.example.test",
    "mydestination": "example.test, localhost",
    "mynetworks": "127.0.0.1/32",
    "queue_directory": "queue",
    "data_directory": "data",
    "mail_spool_directory": "mail/",
}
MASTER = "127.0.0.1:2525 inet n - n - - smtpd\n"


def run(*args, stdin=None, cwd=None):
    r = subprocess.run([MOAT, *args], input=stdin, capture_output=True, cwd=cwd, timeout=60)
    out = r.stdout.decode("utf-8", "replace")
    err = r.stderr.decode("utf-8", "replace")
    for marker in SANITIZER_MARKERS:
        assert marker not in err, err
    r.out, r.err = out, err
    return r


@pytest.fixture(autouse=True)
def _check_command_present():
    if not os.access(MOAT, os.X_OK):
        pytest.fail("moat binary %s not found; run `make build/asan/moat`" % MOAT)
    r = subprocess.run([MOAT, "content", "check", "--help"], capture_output=True, text=True, timeout=60)
    if r.returncode != 0 or "not implemented" in r.stderr:
        pytest.skip("this moat binary has no `content check` command yet")


def confdir(tmp_path, main=None, master=MASTER, tables=None):
    d = tmp_path / "conf"
    d.mkdir(exist_ok=True)
    settings = dict(BASE_MAIN)
    settings.update(main or {})
    with open(d / "main.cf", "w") as f:
        for k, v in settings.items():
            f.write("%s = %s\n" % (k, v))
    if master is not None:
        (d / "master.cf").write_text(master)
    for name, text in (tables or {}).items():
        (d / name).write_text(text)
    return d


def seed_conf(tmp_path, main=None, master=MASTER):
    for name in ("header_checks", "mime_header_checks", "body_checks"):
        if not (SEEDS / name).exists():
            pytest.fail("seed table %s missing (set MOAT_SHARED)" % (SEEDS / name))
    settings = {
        "header_checks": "regexp:%s" % (SEEDS / "header_checks"),
        "mime_header_checks": "regexp:%s" % (SEEDS / "mime_header_checks"),
        "body_checks": "pcre:%s" % (SEEDS / "body_checks"),
    }
    settings.update(main or {})
    return confdir(tmp_path, settings, master)


def message(path, text, crlf=False):
    data = text.replace("\n", "\r\n") if crlf else text
    path.write_bytes(data.encode("utf-8"))
    return str(path)


def check(d, *args, stdin=None):
    return run("content", "check", "-c", str(d), *args, stdin=stdin)


def lines_of(r, prefix):
    return [l for l in r.out.splitlines() if l.startswith(prefix)]


def result(r):
    ls = lines_of(r, "result: ")
    assert len(ls) == 1, "expected one result line in:\n%s%s" % (r.out, r.err)
    return ls[0]


def output_of(r):
    assert "\noutput:\n" in "\n" + r.out, r.out
    return ("\n" + r.out).split("\noutput:\n", 1)[1]


PLAIN = ("From: Ann <ann@example.test>\n"
         "To: bob@example.test\n"
         "Subject: lunch\n"
         "Message-ID: <m1@example.test>\n"
         "\n"
         "See you at noon.\n")


def with_header(header, body="hello\n"):
    return ("From: ann@example.test\n%s\nSubject: test\n\n%s" % (header, body))


def attachment(disposition, ctype="application/octet-stream"):
    return ("From: ann@example.test\n"
            "To: bob@example.test\n"
            "Subject: the file\n"
            "MIME-Version: 1.0\n"
            "Content-Type: multipart/mixed; boundary=\"XYZ\"\n"
            "\n"
            "--XYZ\n"
            "Content-Type: text/plain\n"
            "\n"
            "see attached\n"
            "--XYZ\n"
            "Content-Type: %s\n"
            "Content-Disposition: %s\n"
            "Content-Transfer-Encoding: base64\n"
            "\n"
            "TVqQAAMAAAAEAAAA//8AALgAAAAAAAAAQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\n"
            "--XYZ--\n" % (ctype, disposition))


# ---------------------------------------------------------------- usage

def test_usage_and_help(tmp_path):
    r = run("content")
    assert r.returncode == 2
    assert "usage: moat content check" in r.err
    r = run("content", "frobnicate")
    assert r.returncode == 2
    r = run("content", "check", "--help")
    assert r.returncode == 0
    assert "usage: moat content check" in r.out
    d = confdir(tmp_path)
    r = check(d, "--no-such-option")
    assert r.returncode == 2
    r = check(d, "a", "b")
    assert r.returncode == 2
    r = check(d, str(tmp_path / "missing.eml"))
    assert r.returncode == 2
    assert "missing.eml" in r.err


def test_config_error_names_file_and_line(tmp_path):
    d = confdir(tmp_path, {"header_checks": "regexp:$config_directory/hc"},
                tables={"hc": "/^Subject: ok/ REJECT\n/unclosed( REJECT\n"})
    r = check(d, message(tmp_path / "m.eml", PLAIN))
    assert r.returncode == 2, r.out + r.err
    assert re.search(r"main\.cf:\d+: .*hc:2: ", r.err), r.err
    assert "result:" not in r.out

    d = confdir(tmp_path, {"body_checks": "regexp:$config_directory/nothere"})
    r = check(d, message(tmp_path / "m.eml", PLAIN))
    assert r.returncode == 2
    assert "nothere" in r.err


def test_unknown_service_is_an_error(tmp_path):
    d = confdir(tmp_path)
    r = check(d, "--service", "nosuch", message(tmp_path / "m.eml", PLAIN))
    assert r.returncode == 2
    assert 'no smtpd service "nosuch"' in r.err


# ---------------------------------------------------------------- verdicts

def test_clean_message_accepted(tmp_path):
    d = seed_conf(tmp_path)
    r = check(d, message(tmp_path / "m.eml", PLAIN))
    assert r.returncode == 0, r.out + r.err
    assert r.out.splitlines() == ["result: accept"]


def test_no_checks_configured_accepts(tmp_path):
    d = confdir(tmp_path)
    r = check(d, message(tmp_path / "m.eml", with_header("To: user%other@relay.test@example.test")))
    assert r.returncode == 0
    assert result(r) == "result: accept"


def test_seed_004_directed_routing(tmp_path):
    d = seed_conf(tmp_path)
    r = check(d, message(tmp_path / "m.eml", with_header("To: user%other.test@relay.example.test")))
    assert r.returncode == 1, r.out + r.err
    assert result(r) == "result: reject 550 5.7.1 Directed routing rejected"
    dec = lines_of(r, "decision: ")
    assert dec == ["decision: header_checks %s:5: reject: header To: user%%other.test@relay.example.test: "
                   "550 5.7.1 Directed routing rejected" % (SEEDS / "header_checks")], r.out


def test_seed_004_exploder_negation_and_substitution(tmp_path):
    d = seed_conf(tmp_path)
    r = check(d, message(tmp_path / "m.eml", with_header("To: list-outgoing@lists.example.test")))
    assert r.returncode == 1
    assert result(r) == "result: reject 550 5.7.1 Use list@lists.example.test instead of the outgoing address"
    # the negated pattern: owner-... is let through
    r = check(d, message(tmp_path / "m.eml", with_header("To: owner-list-outgoing@lists.example.test")))
    assert r.returncode == 0, r.out
    assert result(r) == "result: accept"


def test_seed_004_worm_subject_default_text(tmp_path):
    d = seed_conf(tmp_path)
    r = check(d, message(tmp_path / "m.eml",
                         "From: a@example.test\nSubject: C:\\CoolProgs\\Pretty Park.exe\n\nhi\n"))
    assert r.returncode == 1
    assert result(r) == "result: reject 550 5.7.1 message content rejected"


def test_seed_003_third_party_dsn(tmp_path):
    d = seed_conf(tmp_path)
    dsn = ("From: MAILER-DAEMON@elsewhere.test\n"
           "To: victim@example.test\n"
           "Subject: Undelivered Mail Returned to Sender\n"
           "MIME-Version: 1.0\n"
           "Content-Type: multipart/report; report-type=delivery-status;\n"
           "\tboundary=\"B1\"\n"
           "\n"
           "--B1\n"
           "Content-Type: text/plain\n"
           "\n"
           "Your message could not be delivered.\n"
           "--B1--\n")
    r = check(d, message(tmp_path / "m.eml", dsn))
    assert r.returncode == 1, r.out + r.err
    assert result(r) == "result: reject 550 5.7.1 no third-party DSNs"
    # The header is checked unfolded: the continuation line's break is gone,
    # its tab kept.
    dec = lines_of(r, "decision: header_checks ")
    assert len(dec) == 1, r.out
    assert "header Content-Type: multipart/report; report-type=delivery-status;\tboundary=\"B1\"" in dec[0], dec[0]


def test_seed_001_attachment_extension(tmp_path):
    d = seed_conf(tmp_path)
    r = check(d, message(tmp_path / "m.eml", attachment('attachment; filename="Update-KB3374-x86.exe"')))
    assert r.returncode == 1, r.out + r.err
    assert result(r) == "result: reject 550 5.7.1 Attachment type not allowed"
    dec = lines_of(r, "decision: ")
    assert len(dec) == 1
    assert dec[0].startswith("decision: mime_header_checks %s:2: reject: header Content-Disposition: "
                             % (SEEDS / "mime_header_checks")), dec[0]
    r = check(d, message(tmp_path / "m.eml", attachment('attachment; filename="report.pdf"')))
    assert r.returncode == 0, r.out
    assert result(r) == "result: accept"


def test_attachment_name_in_rfc2231_is_decoded_for_the_check(tmp_path):
    d = seed_conf(tmp_path)
    r = check(d, message(tmp_path / "m.eml",
                         attachment("attachment; filename*=UTF-8''Rechnung%2Eexe")))
    assert r.returncode == 1, r.out + r.err
    assert result(r) == "result: reject 550 5.7.1 Attachment type not allowed"


def test_attachment_name_in_rfc2047_is_decoded_for_the_check(tmp_path):
    d = seed_conf(tmp_path)
    r = check(d, message(tmp_path / "m.eml",
                         attachment('attachment; filename="=?UTF-8?B?aW52b2ljZS5leGU=?="')))
    assert r.returncode == 1, r.out + r.err
    assert result(r) == "result: reject 550 5.7.1 Attachment type not allowed"


def test_seed_001_phone_number_in_body(tmp_path):
    d = seed_conf(tmp_path)
    text = ("From: a@example.test\nTo: b@example.test\nSubject: offer\n\n"
            "Great prices!\nCall now: 4 g 5 (7-4-o 12 12\nBye\n")
    r = check(d, message(tmp_path / "m.eml", text))
    assert r.returncode == 1, r.out + r.err
    assert result(r) == "result: reject 550 5.7.1 Spam advertising detected"
    dec = lines_of(r, "decision: ")
    assert dec == ["decision: body_checks %s:3: reject: body Call now: 4 g 5 (7-4-o 12 12: "
                   "550 5.7.1 Spam advertising detected" % (SEEDS / "body_checks")], r.out


def test_crlf_and_stdin(tmp_path):
    d = seed_conf(tmp_path)
    data = with_header("To: list-outgoing@lists.example.test").replace("\n", "\r\n").encode()
    r = check(d, stdin=data)
    assert r.returncode == 1, r.out + r.err
    assert result(r) == "result: reject 550 5.7.1 Use list@lists.example.test instead of the outgoing address"
    r = check(d, "-", stdin=PLAIN.replace("\n", "\r\n").encode())
    assert r.returncode == 0
    assert result(r) == "result: accept"


# ---------------------------------------------------------------- actions

ACTIONS = ("/^Subject: hold/ HOLD quarantined\n"
           "/^Subject: discard/ DISCARD dropped\n"
           "/^Subject: defer/ DEFER\n"
           "/^Subject: later/ 450 4.2.0 mailbox busy\n"
           "/^Subject: custom/ 554 5.7.9 go away\n"
           "/^Subject: soft reject/ REJECT 4.7.0 not now\n"
           "/^X-Route: redirect/ REDIRECT catch@example.test\n"
           "/^X-Copy: (.*)/ BCC $1@example.test\n"
           "/^X-Filter:/ FILTER smtp:[127.0.0.1]:10025\n"
           "/^X-Drop:/ IGNORE\n"
           "/^Subject: (rename.*)/ REPLACE Subject: [checked] $1\n"
           "/^X-Mark:/ PREPEND X-Seen: yes\n"
           "/^X-Warn:/ WARN looked at\n"
           "/^X-Bad:/ FROBNICATE\n")


def actions_conf(tmp_path, master=MASTER):
    return confdir(tmp_path, {"header_checks": "regexp:$config_directory/hc",
                              "body_checks": "regexp:$config_directory/bc"}, master=master,
                   tables={"hc": ACTIONS,
                           "bc": "/^secret line/ REPLACE [removed]\n/^drop this/ IGNORE\n"
                                 "/^tag me/ PREPEND (tagged)\n"})


@pytest.mark.parametrize("subject,status,res", [
    ("hold", 0, "result: accept hold"),
    ("discard", 0, "result: discard"),
    ("defer", 1, "result: defer 451 4.7.1 service unavailable"),
    ("later", 1, "result: defer 450 4.2.0 mailbox busy"),
    ("custom", 1, "result: reject 554 5.7.9 go away"),
    ("soft reject", 1, "result: defer 451 4.7.0 not now"),
])
def test_message_actions(tmp_path, subject, status, res):
    d = actions_conf(tmp_path)
    r = check(d, message(tmp_path / "m.eml", "From: a@example.test\nSubject: %s\n\nhi\n" % subject))
    assert r.returncode == status, r.out + r.err
    assert result(r) == res


def test_redirect_bcc_filter_in_result(tmp_path):
    d = actions_conf(tmp_path)
    # REDIRECT ends the checks, as in Postfix: the HOLD after it is not seen.
    text = ("From: a@example.test\nX-Copy: audit\nX-Copy: legal\n"
            "X-Filter: yes\nX-Route: redirect\nSubject: hold\n\nhi\n")
    r = check(d, message(tmp_path / "m.eml", text))
    assert r.returncode == 0, r.out + r.err
    assert result(r) == ("result: accept redirect=catch@example.test bcc=audit@example.test,legal@example.test "
                         "filter=smtp:[127.0.0.1]:10025")
    verbs = [l.split(": ")[2] for l in lines_of(r, "decision: ")]
    assert verbs == ["bcc", "bcc", "filter", "redirect"], r.out


def test_edits_in_output(tmp_path):
    d = actions_conf(tmp_path)
    text = ("From: a@example.test\n"
            "X-Drop: this header goes\n"
            "Subject: rename me\n"
            "X-Mark: 1\n"
            "X-Warn: 1\n"
            "X-Bad: 1\n"
            "\n"
            "first\n"
            "secret line 42\n"
            "drop this line\n"
            "tag me\n"
            "last\n")
    r = check(d, "--output", message(tmp_path / "m.eml", text, crlf=True))
    assert r.returncode == 0, r.out + r.err
    assert result(r) == "result: accept"
    out = output_of(r)
    assert "\r" not in out
    assert out == ("From: a@example.test\n"
                   "Subject: [checked] rename me\n"
                   "X-Seen: yes\n"
                   "X-Mark: 1\n"
                   "X-Warn: 1\n"
                   "X-Bad: 1\n"
                   "\n"
                   "first\n"
                   "[removed]\n"
                   "(tagged)\n"
                   "tag me\n"
                   "last\n"), out
    verbs = [l.split(": ")[2] for l in lines_of(r, "decision: ")]
    assert verbs == ["ignore", "replace", "prepend", "warning", "replace", "ignore", "prepend"], r.out
    # The unknown action is a warning with file and line, and the header passes.
    assert re.search(r"hc, line 14: unknown command in header_checks: FROBNICATE", r.err), r.err
    # WARN is logged as Postfix's cleanup logs it.
    assert re.search(r"\(check\): warning: header X-Warn: 1 from unknown\[127\.0\.0\.1\];.*: looked at", r.err), r.err


def test_output_keeps_mbox_from_line(tmp_path):
    # The line is kept, as the server would get it; it is no header, so
    # (as in Postfix) the header section ends before it, and a note says so.
    d = confdir(tmp_path)
    text = "From ann@example.test Mon Jan  1 00:00:00 2024\n" + PLAIN
    r = check(d, "--output", message(tmp_path / "m.eml", text))
    assert r.returncode == 0, r.out + r.err
    out = output_of(r)
    assert "From ann@example.test Mon Jan  1 00:00:00 2024\nFrom: Ann <ann@example.test>\n" in out, out
    assert out.endswith("See you at noon.\n")
    assert 'mbox "From " line' in r.err


def test_reject_prints_no_message(tmp_path):
    d = seed_conf(tmp_path)
    r = check(d, "--output", message(tmp_path / "m.eml", with_header("To: list-outgoing@lists.example.test")))
    assert r.returncode == 1
    assert output_of(r) == ""


def test_envelope_options_in_log_lines(tmp_path):
    d = seed_conf(tmp_path)
    r = check(d, "--client", "mail.sender.test[192.0.2.7]", "--helo", "mail.sender.test",
              "--sender", "<ann@sender.test>", "--rcpt", "bob@example.test",
              message(tmp_path / "m.eml", with_header("To: list-outgoing@lists.example.test")))
    assert r.returncode == 1
    assert re.search(r"cleanup.*\(check\): reject: header To: list-outgoing@lists\.example\.test from "
                     r"mail\.sender\.test\[192\.0\.2\.7\]; from=<ann@sender\.test> to=<bob@example\.test> "
                     r"proto=ESMTP helo=<mail\.sender\.test>: 5\.7\.1 Use list@lists\.example\.test instead "
                     r"of the outgoing address", r.err), r.err


def test_service_choice_and_no_header_body_checks(tmp_path):
    master = ("127.0.0.1:2525 inet n - n - - smtpd\n"
              "127.0.0.1:10026 inet n - n - - smtpd\n"
              "  -o receive_override_options=no_header_body_checks\n")
    d = seed_conf(tmp_path, master=master)
    m = message(tmp_path / "m.eml", with_header("To: list-outgoing@lists.example.test"))
    r = check(d, m)
    assert r.returncode == 1
    r = check(d, "--service", "127.0.0.1:2525", m)
    assert r.returncode == 1
    r = check(d, "--service", "127.0.0.1:10026", m)
    assert r.returncode == 0, r.out + r.err
    assert result(r) == "result: accept"
    assert lines_of(r, "decision: ") == []
    assert "no_header_body_checks" in r.err


def test_trace_keeps_the_decisions(tmp_path):
    d = seed_conf(tmp_path)
    r = check(d, "--trace", message(tmp_path / "m.eml", attachment('attachment; filename="x.scr"')))
    assert r.returncode == 1
    assert any(l.startswith("decision: mime_header_checks ") for l in r.out.splitlines()), r.out
    for l in r.out.splitlines():
        assert l.startswith(("decision: ", "note: ", "result: ")), l


def test_long_line_shown_cut(tmp_path):
    d = confdir(tmp_path, {"header_checks": "regexp:$config_directory/hc"},
                tables={"hc": "/^X-Long: a+$/ WARN long\n"})
    r = check(d, message(tmp_path / "m.eml", "From: a@example.test\nX-Long: " + "a" * 500 + "\n\nhi\n"))
    assert r.returncode == 0
    dec = lines_of(r, "decision: ")
    assert len(dec) == 1
    assert "header X-Long: " + "a" * (200 - len("X-Long: ")) + "...: long" in dec[0], dec[0]


def test_scan_without_scanner_is_an_error(tmp_path):
    d = confdir(tmp_path)
    r = check(d, "--scan", message(tmp_path / "m.eml", PLAIN))
    assert r.returncode == 2
    assert "content_scanner is not set" in r.err


def test_scan_with_scanner_down(tmp_path):
    # Nothing listens on the socket: the scan fails, and the fail action
    # decides (defer by default, accept with a header when configured).
    sock = tmp_path / "no-clamd.sock"
    d = confdir(tmp_path, {"content_scanner": "clamd:unix:%s" % sock, "content_scanner_timeout": "5s"})
    m = message(tmp_path / "m.eml", PLAIN)
    r = check(d, "--scan", m)
    assert r.returncode == 1, r.out + r.err
    assert len(lines_of(r, "scanner: failed ")) == 1, r.out
    assert result(r) == "result: defer 451 4.3.0 Error: virus scanner unavailable"
    d = confdir(tmp_path, {"content_scanner": "clamd:unix:%s" % sock, "content_scanner_timeout": "5s",
                           "content_scanner_fail_action": "accept"})
    r = check(d, "--scan", "--output", m)
    assert r.returncode == 0, r.out + r.err
    assert result(r) == "result: accept"
    assert output_of(r).startswith("X-Virus-Status: Unscanned (")


def deep_message(levels):
    out = ["From: a@example.test", "Subject: deep", "MIME-Version: 1.0",
           'Content-Type: multipart/mixed; boundary="b0"', ""]
    for i in range(1, levels):
        out += ["--b%d" % (i - 1), 'Content-Type: multipart/mixed; boundary="b%d"' % i, ""]
    out += ["--b%d" % (levels - 1), "Content-Type: text/plain", "", "hi", ""]
    return "\n".join(out)


def test_mime_limits_notes_and_reply(tmp_path):
    d = seed_conf(tmp_path, {"mime_nesting_limit": "20", "header_size_limit": "2048"})
    r = check(d, "--trace", message(tmp_path / "m.eml", deep_message(1000)))
    assert r.returncode == 1, r.out + r.err
    assert result(r) == "result: reject 550 5.6.0 MIME nesting exceeds safety limit"
    assert any(l.startswith("note: ") and l.endswith(": MIME nesting exceeds safety limit")
               for l in r.out.splitlines()), r.out
    # A header over header_size_limit is cut (noted) and the message goes on.
    r = check(d, "--trace", "--output",
              message(tmp_path / "m.eml", "From: a@example.test\nX-Big: " + "a" * 100000 + "\n\nbody\n"))
    assert r.returncode == 0, r.out + r.err
    notes = lines_of(r, "note: header_checks: header X-Big: ")
    assert any(n.endswith("...: header truncated at header_size_limit") for n in notes), r.out
    out = output_of(r)
    assert len(out) < 4096 and out.endswith("\n\nbody\n"), out[-200:]
    # Without any checks configured a MIME error is logged, not refused.
    d = confdir(tmp_path, {"mime_nesting_limit": "20"})
    r = check(d, message(tmp_path / "m.eml", deep_message(50)))
    assert r.returncode == 0, r.out + r.err
    assert result(r) == "result: accept"


# ---------------------------------------------------------------- --scan with a real clamd

def eicar_message():
    b64 = base64.b64encode(EICAR).decode()
    return ("From: a@example.test\nTo: b@example.test\nSubject: test file\nMIME-Version: 1.0\n"
            "Content-Type: multipart/mixed; boundary=\"B\"\n\n"
            "--B\nContent-Type: text/plain\n\nsee attached\n"
            "--B\nContent-Type: application/octet-stream; name=\"eicar.com.txt\"\n"
            "Content-Transfer-Encoding: base64\n\n%s\n--B--\n" % b64)


def test_scan_infected_rejected(tmp_path, clamd):
    d = confdir(tmp_path, {"content_scanner": clamd.unix_spec})
    r = check(d, "--scan", message(tmp_path / "m.eml", eicar_message()))
    assert r.returncode == 1, r.out + r.err
    assert lines_of(r, "scanner: ") == ["scanner: infected " + VIRUS_NAME]
    assert result(r) == "result: reject 554 5.7.0 message rejected: virus found: " + VIRUS_NAME


def test_scan_clean_over_inet(tmp_path, clamd):
    d = confdir(tmp_path, {"content_scanner": clamd.inet_spec})
    r = check(d, "--scan", message(tmp_path / "m.eml", PLAIN))
    assert r.returncode == 0, r.out + r.err
    assert r.out.splitlines() == ["scanner: clean", "result: accept"]


@pytest.mark.parametrize("action,status,res", [
    ("hold", 0, "result: accept hold"),
    ("discard", 0, "result: discard"),
    ("header", 0, "result: accept"),
])
def test_scan_virus_actions(tmp_path, clamd, action, status, res):
    d = confdir(tmp_path, {"content_scanner": clamd.unix_spec, "content_scanner_virus_action": action})
    r = check(d, "--scan", "--output", message(tmp_path / "m.eml", eicar_message()))
    assert r.returncode == status, r.out + r.err
    assert result(r) == res
    if action == "header":
        assert output_of(r).startswith("X-Virus-Status: Infected (%s)\nFrom: a@example.test\n" % VIRUS_NAME)


def test_scan_skipped_by_no_milters_and_size_limit(tmp_path, clamd):
    master = ("127.0.0.1:2525 inet n - n - - smtpd\n"
              "127.0.0.1:10026 inet n - n - - smtpd\n"
              "  -o receive_override_options=no_milters\n")
    d = confdir(tmp_path, {"content_scanner": clamd.unix_spec}, master=master)
    m = message(tmp_path / "m.eml", eicar_message())
    r = check(d, "--scan", "--service", "127.0.0.1:10026", m)
    assert r.returncode == 0, r.out + r.err
    assert lines_of(r, "scanner: ") == ["scanner: skipped (receive_override_options = no_milters)"]
    d = confdir(tmp_path, {"content_scanner": clamd.unix_spec, "content_scanner_size_limit": "100"})
    r = check(d, "--scan", m)
    assert r.returncode == 0, r.out + r.err
    assert lines_of(r, "scanner: ")[0].startswith("scanner: skipped (message larger than content_scanner_size_limit")
