"""`moat check`: a simulated transaction through the restriction engine.

The binary is $MOAT_BIN (default build/asan/moat).  Each test writes a
small configuration (main.cf, master.cf, tables built with `moat map
build`) into pytest's tmp_path; nothing listens on the network.

Output contract (docs/check.md): one line per command,
    COMMAND: REPLY[; rule=CLASS:RESTRICTION][ table=FILE:LINE]
then indented "  log: " / "  action: " lines and, with --trace, the
engine's trace lines.  Exit 0: every recipient accepted; 1: anything
rejected or deferred; 2: usage or configuration error (file:line).
"""
import os
import shutil
import re
import subprocess

import pytest

import moatlib

from moatlib import SANITIZER_MARKERS, moat_bin

MOAT = moat_bin()

BASE_MAIN = {
    "myhostname": "mx.example.test",
    "mydestination": "example.test, localhost",
    "mynetworks": "127.0.0.1/32",
    "queue_directory": "queue",
    "data_directory": "data",
    "mail_spool_directory": "mail/",
}
MASTER = "127.0.0.1:2525 inet n - n - - smtpd\n"


def run(*args, cwd=None):
    r = subprocess.run([MOAT, *args], capture_output=True, text=True, cwd=cwd, timeout=60)
    for marker in SANITIZER_MARKERS:
        assert marker not in r.stderr, r.stderr
    return r


@pytest.fixture(autouse=True)
def _check_command_present():
    if not os.access(MOAT, os.X_OK):
        pytest.fail("moat binary %s not found; run `make build/asan/moat`" % MOAT)
    r = subprocess.run([MOAT, "check", "--help"], capture_output=True, text=True, timeout=60)
    if 'unknown command "check"' in r.stderr:
        pytest.skip("this moat binary has no `check` command yet (main.c dispatch to cmd_check)")


def confdir(tmp_path, main=None, master=MASTER, tables=None, build=()):
    """Write main.cf/master.cf (+ table sources) into tmp_path/conf; `build`
    names tables to compile with `moat map build`."""
    d = tmp_path / "conf"
    d.mkdir(exist_ok=True)
    settings = dict(BASE_MAIN)
    if moatlib.DEFAULT_DNS_FORWARDERS:   # the test DNS server, never the machine's resolver
        settings["dns_forwarders"] = moatlib.DEFAULT_DNS_FORWARDERS
    settings.update(main or {})
    with open(d / "main.cf", "w") as f:
        for k, v in settings.items():
            f.write("%s = %s\n" % (k, v))
    if master is not None:
        (d / "master.cf").write_text(master)
    for name, text in (tables or {}).items():
        (d / name).write_text(text)
    for name in build:
        r = run("map", "build", str(d / name))
        assert r.returncode == 0, r.stderr
    return str(d)


def check(d, *args):
    return run("check", "-c", d, *args)


def lines_of(r, prefix):
    return [l for l in r.stdout.splitlines() if l.startswith(prefix)]


def line_of(r, prefix):
    ls = lines_of(r, prefix)
    assert len(ls) == 1, "expected one %r line in:\n%s%s" % (prefix, r.stdout, r.stderr)
    return ls[0]


# ---------------------------------------------------------------- verdicts

def test_local_recipient_accepted_exit_0(tmp_path):
    d = confdir(tmp_path)
    r = check(d, "--client", "192.0.2.1", "--helo", "client.test", "--from", "a@b.test",
              "--rcpt", "u@example.test")
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.splitlines() == [
        "CONNECT from unknown[192.0.2.1]: 220 mx.example.test ESMTP moat",
        "EHLO client.test: 250 mx.example.test",
        "MAIL FROM:<a@b.test>: 250 2.1.0 Ok",
        "RCPT TO:<u@example.test>: 250 2.1.5 Ok",
        "DATA: 354 End data with <CR><LF>.<CR><LF>",
        "END-OF-DATA: 250 2.0.0 Ok: queued",
    ]


def test_relay_denied_default_relay_restrictions(tmp_path):
    # Postfix's default smtpd_relay_restrictions end in defer_unauth_destination.
    d = confdir(tmp_path)
    r = check(d, "--client", "192.0.2.1", "--from", "a@b.test", "--rcpt", "u@other.test")
    assert r.returncode == 1
    l = line_of(r, "RCPT TO:<u@other.test>: ")
    assert re.fullmatch(r"RCPT TO:<u@other\.test>: 4\d\d 4\.7\.1 <u@other\.test>: Relay access denied; "
                        r"rule=relay:defer_unauth_destination", l), l
    # Nothing accepted: DATA gets the server's answer.
    assert line_of(r, "DATA: ") == "DATA: 503 5.5.1 Error: need RCPT command"


def test_relay_denied_reject_unauth_destination(tmp_path):
    d = confdir(tmp_path, {"smtpd_relay_restrictions": "",
                           "smtpd_recipient_restrictions": "permit_mynetworks, reject_unauth_destination"})
    r = check(d, "--client", "192.0.2.1", "--rcpt", "u@other.test", "--rcpt", "u@example.test")
    assert r.returncode == 1
    assert line_of(r, "RCPT TO:<u@other.test>: ") == (
        "RCPT TO:<u@other.test>: 554 5.7.1 <u@other.test>: Relay access denied; "
        "rule=recipient:reject_unauth_destination")
    assert line_of(r, "RCPT TO:<u@example.test>: ") == "RCPT TO:<u@example.test>: 250 2.1.5 Ok"
    # One recipient was accepted, so the transaction goes on.
    assert line_of(r, "DATA: ") == "DATA: 354 End data with <CR><LF>.<CR><LF>"


def test_trusted_client_relays_and_trace_shows_the_route(tmp_path):
    # permit_mynetworks permits relaying: the recipient is accepted and the
    # trace says where the queue manager would send it.
    d = confdir(tmp_path)
    r = check(d, "--client", "127.0.0.1", "--trace", "--rcpt", "u@other.test", "--rcpt", "u@localhost")
    assert r.returncode == 0, r.stdout + r.stderr
    assert line_of(r, "RCPT TO:<u@other.test>: ") == "RCPT TO:<u@other.test>: 250 2.1.5 Ok"
    assert line_of(r, "  route: u@other.test: ") == (
        "  route: u@other.test: class default -> smtp:other.test (default_transport)")
    assert line_of(r, "  route: u@localhost: ") == (
        "  route: u@localhost: class local (mydestination) -> local:localhost (local_transport)")
    # no route lines without --trace (the output contract stays one line per command)
    r = check(d, "--client", "127.0.0.1", "--rcpt", "u@other.test")
    assert not lines_of(r, "  route:"), r.stdout


def test_sasl_user_is_permitted_to_relay(tmp_path):
    d = confdir(tmp_path)
    r = check(d, "--client", "192.0.2.1", "--sasl-user", "alice", "--rcpt", "u@other.test")
    assert r.returncode == 0, r.stdout
    assert line_of(r, "RCPT TO:") == "RCPT TO:<u@other.test>: 250 2.1.5 Ok"


def test_relay_domains_and_relay_recipient_maps(tmp_path):
    d = confdir(tmp_path, {"relay_domains": "relay.test, hash:$config_directory/relays",
                           "relay_recipient_maps": "hash:$config_directory/relay_rcpts",
                           "transport_maps": "hash:$config_directory/transport"},
                tables={"relays": "table.test OK\n",
                        "relay_rcpts": "known@relay.test x\n@sub.table.test x\n",
                        "transport": "# seed 003's tunnel\nrelay.test relay:[127.0.0.1]:1767\n"},
                build=("relays", "relay_rcpts", "transport"))
    r = check(d, "--client", "192.0.2.1", "--trace", "--rcpt", "known@relay.test", "--rcpt", "u@sub.table.test",
              "--rcpt", "unknown@relay.test")
    assert r.returncode == 1
    assert line_of(r, "RCPT TO:<known@relay.test>: ") == "RCPT TO:<known@relay.test>: 250 2.1.5 Ok"
    assert line_of(r, "RCPT TO:<u@sub.table.test>: ") == "RCPT TO:<u@sub.table.test>: 250 2.1.5 Ok"
    assert line_of(r, "RCPT TO:<unknown@relay.test>: ") == (
        "RCPT TO:<unknown@relay.test>: 550 5.1.1 <unknown@relay.test>: Recipient address rejected: "
        "User unknown in relay recipient table; rule=recipient:smtpd_reject_unlisted_recipient")
    # the trace names the relay_domains entry and the relay_recipient_maps line
    out = r.stdout
    assert "relay: defer_unauth_destination: known@relay.test is in relay_domains (relay.test)" in out, out
    assert "u@sub.table.test is in relay_domains (hash:%s/relays:1 (key table.test))" % d in out, out
    assert ("smtpd_reject_unlisted_recipient: known@relay.test found in relay_recipient_maps hash:%s/relay_rcpts "
            "at %s/relay_rcpts:1" % (d, d)) in out, out
    assert "smtpd_reject_unlisted_recipient: @relay.test not found in hash:%s/relay_rcpts" % d in out, out
    # and the route: seed 003's tunnel for relay.test, the class default for the other
    assert line_of(r, "  route: known@relay.test: ") == (
        "  route: known@relay.test: class relay (relay_domains) -> relay:[127.0.0.1]:1767 "
        "(transport_maps hash:%s/transport:2)" % d)
    assert line_of(r, "  route: u@sub.table.test: ") == (
        "  route: u@sub.table.test: class relay (relay_domains) -> relay:sub.table.test (relay_transport)")


def test_filter_action_and_content_filter_routes(tmp_path):
    d = confdir(tmp_path, {"content_filter": "scan:[127.0.0.1]:10025",
                           "smtpd_recipient_restrictions":
                               "check_recipient_access texthash:$config_directory/filters, reject_unauth_destination"},
                tables={"filters": "f@example.test FILTER smtp:[127.0.0.1]:10099\n"})
    r = check(d, "--client", "192.0.2.1", "--trace", "--rcpt", "u@example.test", "--rcpt", "f@example.test")
    assert r.returncode == 0, r.stdout + r.stderr
    assert line_of(r, "  route: u@example.test: ") == (
        "  route: u@example.test: class local (mydestination) -> scan:[127.0.0.1]:10025 (content_filter)")
    assert line_of(r, "  route: f@example.test: ") == (
        "  route: f@example.test: class local (mydestination) -> smtp:[127.0.0.1]:10099 (FILTER action)")


def test_routing_table_that_does_not_open_is_a_configuration_error(tmp_path):
    d = confdir(tmp_path, {"transport_maps": "hash:$config_directory/nosuch"})
    r = check(d, "--client", "192.0.2.1", "--rcpt", "u@example.test")
    assert r.returncode == 2
    assert re.search(r"main\.cf:\d+: .*nosuch", r.stderr), r.stderr
    assert r.stdout == ""


def test_bare_recipient_completed_like_the_server(tmp_path):
    d = confdir(tmp_path, {"myorigin": "example.test"})
    r = check(d, "--client", "192.0.2.1", "--rcpt", "postmaster")
    assert r.returncode == 0, r.stdout
    assert line_of(r, "RCPT TO:") == "RCPT TO:<postmaster@example.test>: 250 2.1.5 Ok"


def test_smtp_protocol_uses_helo(tmp_path):
    d = confdir(tmp_path)
    r = check(d, "--client", "192.0.2.1", "--smtp", "--helo", "h.test", "--rcpt", "u@example.test")
    assert r.returncode == 0
    assert "HELO h.test: 250 mx.example.test" in r.stdout.splitlines()


def test_client_name_and_ipv6(tmp_path):
    d = confdir(tmp_path)
    r = check(d, "--client", "2001:db8::1", "--client-name", "mail.client.test", "--rcpt", "u@example.test")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[0] == "CONNECT from mail.client.test[2001:db8::1]: 220 mx.example.test ESMTP moat"


# ---------------------------------------------------------------- tables

SENDERS = (
    "# sender access\n"
    "friend@bad.test    OK\n"
    "spam@bad.test      REJECT go away\n"
    "bad.test           550 5.7.0 whole domain\n"
)


def test_table_hit_names_file_and_line_at_rcpt(tmp_path):
    # smtpd_delay_reject = yes (default): the sender class runs at RCPT.
    d = confdir(tmp_path, {"smtpd_sender_restrictions": "check_sender_access hash:sender"},
                tables={"sender": SENDERS}, build=["sender"])
    r = check(d, "--client", "192.0.2.1", "--from", "spam@bad.test", "--rcpt", "u@example.test")
    assert r.returncode == 1
    assert line_of(r, "MAIL FROM:") == "MAIL FROM:<spam@bad.test>: 250 2.1.0 Ok"
    l = line_of(r, "RCPT TO:")
    assert l.startswith("RCPT TO:<u@example.test>: 554 5.7.1 <spam@bad.test>: Sender address rejected: go away; "
                        "rule=sender:check_sender_access hash:"), l
    assert l.endswith(" table=%s/sender:3" % d), l


def test_table_hit_at_mail_without_delay_reject(tmp_path):
    d = confdir(tmp_path, {"smtpd_sender_restrictions": "check_sender_access hash:sender",
                           "smtpd_delay_reject": "no"},
                tables={"sender": SENDERS}, build=["sender"])
    r = check(d, "--client", "192.0.2.1", "--from", "x@sub.bad.test", "--rcpt", "u@example.test")
    assert r.returncode == 1
    l = line_of(r, "MAIL FROM:")
    assert l.startswith("MAIL FROM:<x@sub.bad.test>: 550 5.7.0 <x@sub.bad.test>: Sender address rejected: "
                        "whole domain; rule=sender:check_sender_access hash:"), l
    assert l.endswith(" table=%s/sender:4" % d), l
    # OK for one sender: permitted everywhere.
    r = check(d, "--client", "192.0.2.1", "--from", "friend@bad.test", "--rcpt", "u@example.test")
    assert r.returncode == 0, r.stdout


def test_null_sender_table(tmp_path):
    d = confdir(tmp_path, {"smtpd_sender_restrictions": "check_sender_access hash:null_sender"},
                tables={"null_sender": "<>      550 no third-party DSNs\n"}, build=["null_sender"])
    for given in ("<>", ""):
        r = check(d, "--client", "192.0.2.1", "--from", given, "--rcpt", "u@example.test")
        assert r.returncode == 1
        assert line_of(r, "MAIL FROM:") == "MAIL FROM:<>: 250 2.1.0 Ok"
        l = line_of(r, "RCPT TO:")
        assert l.startswith("RCPT TO:<u@example.test>: 550 5.7.1 <>: Sender address rejected: "
                            "no third-party DSNs;"), l
        assert l.endswith("table=%s/null_sender:1" % d), l


def test_inline_table_has_no_file_line(tmp_path):
    d = confdir(tmp_path, {"smtpd_client_restrictions": "check_client_access inline:{ {192.0.2.7=REJECT no thanks} }"})
    r = check(d, "--client", "192.0.2.7", "--rcpt", "u@example.test")
    assert r.returncode == 1
    l = line_of(r, "RCPT TO:")
    assert "554 5.7.1 <unknown[192.0.2.7]>: Client host rejected: no thanks; rule=client:check_client_access" in l, l
    assert " table=" not in l


def test_defer_if_permit(tmp_path):
    d = confdir(tmp_path, {"smtpd_client_restrictions":
                           "check_client_access inline:{ {192.0.2.9=DEFER_IF_PERMIT slow down} }, permit"})
    r = check(d, "--client", "192.0.2.9", "--rcpt", "u@example.test")
    assert r.returncode == 1
    l = line_of(r, "RCPT TO:")
    assert l.startswith("RCPT TO:<u@example.test>: 450 4.7.1 <unknown[192.0.2.9]>: Client host rejected: slow down"), l
    # Another client: the entry does not apply.
    assert check(d, "--client", "192.0.2.8", "--rcpt", "u@example.test").returncode == 0


def test_warn_if_reject_logs_and_accepts(tmp_path):
    d = confdir(tmp_path, {"smtpd_helo_restrictions": "warn_if_reject reject_non_fqdn_helo_hostname"})
    r = check(d, "--client", "192.0.2.1", "--helo", "nodots", "--rcpt", "u@example.test")
    assert r.returncode == 0, r.stdout
    assert line_of(r, "RCPT TO:").startswith("RCPT TO:<u@example.test>: 250 2.1.5 Ok")
    logs = lines_of(r, "  log: ")
    assert any("reject_warning" in l and "<nodots>" in l and "need fully-qualified hostname" in l
               for l in logs), r.stdout


def test_discard_action_reported(tmp_path):
    d = confdir(tmp_path, {"smtpd_recipient_restrictions":
                           "check_recipient_access inline:{trap@example.test=DISCARD}, reject_unauth_destination"})
    r = check(d, "--client", "192.0.2.1", "--from", "a@b.test", "--rcpt", "trap@example.test",
              "--rcpt", "other@example.test")
    assert r.returncode == 0, r.stdout
    out = r.stdout.splitlines()
    i = out.index("RCPT TO:<trap@example.test>: 250 2.1.5 Ok")
    assert out[i + 1].startswith("  log: discard: RCPT from unknown[192.0.2.1]: <trap@example.test>:"), out
    assert out[i + 2].startswith("  action: DISCARD"), out
    # The server skips the restrictions for the rest of the message, and
    # the message is accepted and dropped.
    assert "RCPT TO:<other@example.test>: 250 2.1.5 Ok" in out
    assert out[-2:] == ["END-OF-DATA: 250 2.0.0 Ok: queued",
                        "  action: DISCARD (the message is accepted and dropped)"]


# ---------------------------------------------------------------- the session's rules

def test_refused_connect_makes_every_command_503(tmp_path):
    d = confdir(tmp_path, {"smtpd_delay_reject": "no",
                           "smtpd_client_restrictions": "check_client_access inline:{ {192.0.2.66=REJECT go away} }"})
    r = check(d, "--client", "192.0.2.66", "--helo", "h.test", "--from", "a@b.test", "--rcpt", "u@example.test")
    assert r.returncode == 1
    denied = "503 5.7.0 Error: access denied for unknown[192.0.2.66]"
    assert r.stdout.splitlines() == [
        "CONNECT from unknown[192.0.2.66]: 554 5.7.1 <unknown[192.0.2.66]>: Client host rejected: go away; "
        "rule=client:check_client_access inline:{ {192.0.2.66=REJECT go away} }",
        "EHLO h.test: " + denied,
        "MAIL FROM:<a@b.test>: " + denied,
        "RCPT TO:<u@example.test>: " + denied,
        "DATA: " + denied,
    ]


def test_refused_helo_then_helo_required(tmp_path):
    d = confdir(tmp_path, {"smtpd_delay_reject": "no", "smtpd_helo_required": "yes",
                           "smtpd_helo_restrictions": "reject_non_fqdn_helo_hostname"})
    r = check(d, "--client", "192.0.2.1", "--helo", "nodots", "--from", "a@b.test", "--rcpt", "u@example.test")
    assert r.returncode == 1
    out = r.stdout.splitlines()
    assert out[1] == ("EHLO nodots: 504 5.5.2 <nodots>: Helo command rejected: need fully-qualified hostname; "
                      "rule=helo:reject_non_fqdn_helo_hostname")
    assert out[2] == "MAIL FROM:<a@b.test>: 503 5.5.1 Error: send HELO/EHLO first"
    assert out[3] == "RCPT TO:<u@example.test>: 503 5.5.1 Error: need MAIL command"


def test_refused_mail_leaves_no_transaction(tmp_path):
    d = confdir(tmp_path, {"smtpd_delay_reject": "no", "smtpd_sender_restrictions": "reject_non_fqdn_sender"})
    r = check(d, "--client", "192.0.2.1", "--from", "a@nodots", "--rcpt", "u@example.test")
    assert r.returncode == 1
    out = r.stdout.splitlines()
    assert out[1].startswith("MAIL FROM:<a@nodots>: 504 5.5.2 <a@nodots>: Sender address rejected")
    assert out[2] == "RCPT TO:<u@example.test>: 503 5.5.1 Error: need MAIL command"
    assert out[3] == "DATA: 503 5.5.1 Error: need RCPT command"


def test_postponed_defer_if_permit_answers_at_rcpt(tmp_path):
    d = confdir(tmp_path, {"smtpd_delay_reject": "no", "smtpd_client_restrictions":
                           "check_client_access inline:{ {192.0.2.9=DEFER_IF_PERMIT later please} }"})
    r = check(d, "--client", "192.0.2.9", "--from", "a@b.test", "--rcpt", "u@example.test")
    assert r.returncode == 1
    out = r.stdout.splitlines()
    assert out[0].startswith("CONNECT from unknown[192.0.2.9]: 220 ")
    assert out[1] == "MAIL FROM:<a@b.test>: 250 2.1.0 Ok"
    assert out[2] == ("RCPT TO:<u@example.test>: 450 4.7.1 <unknown[192.0.2.9]>: Client host rejected: later please; "
                      "rule=postponed:defer_if_permit")


def test_bare_postmaster_skips_restrictions(tmp_path):
    d = confdir(tmp_path, {"myorigin": "example.test", "smtpd_recipient_restrictions": "reject"})
    r = check(d, "--client", "192.0.2.1", "--from", "a@b.test", "--rcpt", "postmaster", "--rcpt", "u@example.test")
    out = r.stdout.splitlines()
    assert "RCPT TO:<postmaster@example.test>: 250 2.1.5 Ok" in out
    assert any(l.startswith("RCPT TO:<u@example.test>: 554 5.7.1 ") and "rule=recipient:reject" in l for l in out), out


def test_reject_footer_and_sleep(tmp_path):
    d = confdir(tmp_path, {"smtpd_reject_footer": "See https://help.example.test/$client_address",
                           "smtpd_client_restrictions": "sleep 2, check_client_access inline:{192.0.2.5=REJECT}"})
    r = check(d, "--client", "192.0.2.5", "--from", "a@b.test", "--rcpt", "u@example.test")
    assert r.returncode == 1
    out = r.stdout.splitlines()
    i = [k for k, l in enumerate(out) if l.startswith("RCPT TO:")][0]
    # a multi-line reply as sent: "554-" on all lines but the last
    assert out[i].startswith("RCPT TO:<u@example.test>: 554-5.7.1 <unknown[192.0.2.5]>: Client host rejected: "
                             "Access denied; rule=client:check_client_access"), out
    assert out[i + 1] == "  | 554 5.7.1 See https://help.example.test/192.0.2.5", out
    assert "  action: the reply waits 2 seconds (sleep)" in out[i + 2:], out


# ---------------------------------------------------------------- --trace

def test_trace_shows_classes_steps_keys_and_table_line(tmp_path):
    d = confdir(tmp_path, {
        "smtpd_client_restrictions": "permit_mynetworks",
        "smtpd_sender_restrictions": "check_sender_access hash:sender",
        "smtpd_recipient_restrictions": "reject_unauth_destination",
    }, tables={"sender": SENDERS}, build=["sender"])
    r = check(d, "--trace", "--client", "192.0.2.1", "--from", "spam@bad.test", "--rcpt", "u@example.test")
    assert r.returncode == 1
    out = r.stdout
    rcpt_at = out.index("RCPT TO:<u@example.test>:")
    trace = out[rcpt_at:].split("\n", 1)[1]
    # every class that ran, in order, each step by name
    assert re.search(r"client: .*permit_mynetworks", trace), trace
    assert re.search(r"sender: .*check_sender_access", trace), trace
    assert trace.index("client:") < trace.index("sender:")
    # the keys tried (the full address first), the table line, the verdict
    assert "spam@bad.test" in trace
    assert "%s/sender:3" % d in trace, trace
    assert "REJECT" in trace.upper()
    # the recipient class never ran: the sender class rejected first
    assert "reject_unauth_destination" not in trace
    # Without --trace there is none of it.
    r2 = check(d, "--client", "192.0.2.1", "--from", "spam@bad.test", "--rcpt", "u@example.test")
    assert "permit_mynetworks" not in r2.stdout


def test_trace_names_the_matching_line_and_verdict(tmp_path):
    d = confdir(tmp_path, {"smtpd_sender_restrictions": "check_sender_access hash:sender"},
                tables={"sender": SENDERS}, build=["sender"])
    r = check(d, "--trace", "--client", "192.0.2.1", "--from", "x@sub.bad.test", "--rcpt", "u@example.test")
    assert r.returncode == 1
    trace = r.stdout.splitlines()
    assert "  sender: check_sender_access hash:sender: bad.test found at %s/sender:4: 550 5.7.0 whole domain" % d \
        in trace, r.stdout
    assert ("  verdict: 550 5.7.0 <x@sub.bad.test>: Sender address rejected: whole domain "
            "(rule=sender:check_sender_access hash:sender)") in trace, r.stdout


def test_trace_lists_every_key_tried(tmp_path):
    d = confdir(tmp_path, {"smtpd_sender_restrictions": "check_sender_access hash:sender"},
                tables={"sender": SENDERS}, build=["sender"])
    r = check(d, "--trace", "--client", "192.0.2.1", "--from", "x@sub.bad.test", "--rcpt", "u@example.test")
    trace = r.stdout[r.stdout.index("RCPT TO:"):]
    # access(5) order: the full address, then the domain and its parents
    for key in ("x@sub.bad.test", "sub.bad.test"):
        assert re.search(r"^  sender: .*\b%s\b" % re.escape(key), trace, re.M), (key, trace)
    r = check(d, "--trace", "--client", "192.0.2.1", "--from", "nobody@else.test", "--rcpt", "u@example.test")
    trace = r.stdout[r.stdout.index("RCPT TO:"):]
    for key in ("nobody@else.test", "else.test", "nobody@"):
        assert re.search(r"^  sender: .*\b%s" % re.escape(key), trace, re.M), (key, trace)


def test_trace_of_a_permit(tmp_path):
    d = confdir(tmp_path, {"smtpd_recipient_restrictions": "permit_mynetworks, reject_unauth_destination"})
    r = check(d, "--trace", "--client", "127.0.0.1", "--rcpt", "u@example.test")
    assert r.returncode == 0, r.stdout
    trace = r.stdout.split("RCPT TO:<u@example.test>: 250 2.1.5 Ok", 1)[1]
    assert re.search(r"^  relay: permit_mynetworks\b.*-> OK$", trace, re.M), trace
    assert re.search(r"^  recipient: permit_mynetworks\b.*-> OK$", trace, re.M), trace
    assert re.search(r"^  verdict: permit$", trace, re.M), trace


# ---------------------------------------------------------------- services, Postfix dirs

def test_service_selects_overrides(tmp_path):
    d = confdir(tmp_path, master=MASTER + "127.0.0.1:10026 inet n - n - - smtpd\n"
                "  -o smtpd_client_restrictions=reject\n")
    assert check(d, "--client", "192.0.2.1", "--rcpt", "u@example.test").returncode == 0
    r = check(d, "--service", "127.0.0.1:10026", "--client", "192.0.2.1", "--rcpt", "u@example.test")
    assert r.returncode == 1
    assert "rule=client:reject" in line_of(r, "RCPT TO:")
    r = check(d, "--service", "nosuch", "--client", "192.0.2.1", "--rcpt", "u@example.test")
    assert r.returncode == 2
    assert 'no smtpd service "nosuch"' in r.stderr


POSTFIX_MASTER = """\
# Postfix master process configuration file.
smtp      inet  n       -       y       -       -       smtpd
pickup    unix  n       -       y       60      1       pickup
cleanup   unix  n       -       y       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       y       -       -       trivial-rewrite
bounce    unix  -       -       y       -       0       bounce
smtp      unix  -       -       y       -       -       smtp
relay     unix  -       -       y       -       -       smtp
        -o syslog_name=postfix/$service_name
local     unix  -       n       n       -       -       local
"""


def test_postfix_style_directory(tmp_path):
    d = confdir(tmp_path, {"smtpd_relay_restrictions": "",
                           "smtpd_recipient_restrictions": "permit_mynetworks, reject_unauth_destination"},
                master=POSTFIX_MASTER)
    r = check(d, "--client", "192.0.2.1", "--rcpt", "u@other.test")
    assert r.returncode == 1
    assert "rule=recipient:reject_unauth_destination" in line_of(r, "RCPT TO:")


# ---------------------------------------------------------------- errors

def test_unknown_restriction_is_a_config_error(tmp_path):
    d = confdir(tmp_path, {"smtpd_recipient_restrictions": "reject_frobnicated, reject_unauth_destination"})
    r = check(d, "--client", "192.0.2.1", "--rcpt", "u@example.test")
    assert r.returncode == 2
    assert r.stdout == ""
    assert re.search(r"^%s/main\.cf:\d+: .*reject_frobnicated" % re.escape(d), r.stderr, re.M), r.stderr


def test_not_yet_supported_parameter_is_a_config_error(tmp_path):
    d = confdir(tmp_path, {"sender_canonical_maps": "regexp:/x"})
    r = check(d, "--client", "192.0.2.1", "--rcpt", "u@example.test")
    assert r.returncode == 2
    assert re.search(r"^%s/main\.cf:\d+: sender_canonical_maps: not supported by this version of moat"
                     % re.escape(d), r.stderr, re.M), r.stderr


def test_open_relay_guard_is_a_config_error(tmp_path):
    d = confdir(tmp_path, {"smtpd_relay_restrictions": "permit", "smtpd_recipient_restrictions": "permit"})
    r = check(d, "--client", "192.0.2.1", "--rcpt", "u@example.test")
    assert r.returncode == 2
    assert "open relay" in r.stderr


def test_missing_table_is_a_config_error(tmp_path):
    d = confdir(tmp_path, {"smtpd_sender_restrictions": "check_sender_access hash:nosuch"})
    r = check(d, "--client", "192.0.2.1", "--rcpt", "u@example.test")
    assert r.returncode == 2
    assert "nosuch" in r.stderr


def test_main_cf_syntax_error(tmp_path):
    d = confdir(tmp_path)
    with open(os.path.join(d, "main.cf"), "a") as f:
        f.write("message_size_limit = big\n")
    r = check(d, "--client", "192.0.2.1", "--rcpt", "u@example.test")
    assert r.returncode == 2
    assert re.search(r"^%s/main\.cf:\d+: bad integer value" % re.escape(d), r.stderr, re.M), r.stderr


@pytest.mark.parametrize("args, why", [
    ([], "--client"),
    (["--client", "192.0.2.1"], "--rcpt"),
    (["--client", "not-an-ip", "--rcpt", "u@example.test"], "not an IPv4 or IPv6 address"),
    (["--client", "192.0.2.1", "--rcpt", "u@example.test", "extra"], "unexpected argument"),
    (["--client", "192.0.2.1", "--rcpt", "u@example.test", "--bogus"], "usage"),
])
def test_usage_errors(tmp_path, args, why):
    d = confdir(tmp_path)
    r = check(d, *args)
    assert r.returncode == 2
    assert why in r.stderr
    assert r.stdout == ""


def test_missing_config_directory(tmp_path):
    r = run("check", "-c", str(tmp_path / "nope"), "--client", "192.0.2.1", "--rcpt", "u@example.test")
    assert r.returncode == 2
    assert "nope" in r.stderr


def test_help(tmp_path):
    r = run("check", "--help")
    assert r.returncode == 0
    assert "usage: moat check" in r.stdout


# ---------------------------------------------------------------- --script

def test_script_mode_basics(tmp_path):
    d = confdir(tmp_path)
    script = tmp_path / "t.in"
    script.write_text(
        "# comment\n"
        "\n"
        "smtpd_delay_reject 0\n"
        "mynetworks 127.0.0.0/8\n"
        "client_restrictions permit_mynetworks,check_client_access,inline:{192.0.2.1=REJECT}\n"
        "client foo 192.0.2.1\n"
        "client localhost 127.0.0.1\n"
        "helo_restrictions reject_non_fqdn_helo_hostname\n"
        "helo foo\n"
        "helo foo.test\n"
        "restriction_class strict,reject\n"
        "recipient_restrictions check_recipient_access,inline:{u@x.test=strict},reject_unauth_destination\n"
        "rcpt u@x.test\n"
        "bogus command with many words\n")
    r = run("check", "-c", d, "--script", str(script))
    assert r.returncode == 0, r.stderr
    out = r.stdout.splitlines()
    assert out[:5] == [">>> # comment", ">>> ", ">>> smtpd_delay_reject 0", "OK", ">>> mynetworks 127.0.0.0/8"]

    def reply(cmd):
        i = out.index(">>> " + cmd)
        return [l for l in out[i + 1:] if not l.startswith("moat: ")][0]
    assert reply("client foo 192.0.2.1") == \
        "554 5.7.1 <foo[192.0.2.1]>: Client host rejected: Access denied; rule=client:check_client_access inline:{192.0.2.1=REJECT}"
    assert reply("client localhost 127.0.0.1") == "OK"
    assert reply("helo foo").startswith("504 5.5.2 <foo>: Helo command rejected: need fully-qualified hostname")
    assert reply("helo foo.test") == "OK"
    assert reply("rcpt u@x.test").startswith("554 5.7.1 <u@x.test>: ")
    assert reply("bogus command with many words") == "bad command"


def test_script_mode_unsupported_restriction_only_breaks_its_class(tmp_path):
    script = tmp_path / "t.in"
    script.write_text(
        "smtpd_delay_reject 0\n"
        "client_restrictions reject_frobnicated_client\n"
        "client foo 192.0.2.1\n"
        "helo_restrictions reject_non_fqdn_helo_hostname\n"
        "helo foo\n")
    r = run("check", "--script", str(script), cwd=tmp_path)
    out = r.stdout.splitlines()
    i = out.index(">>> client foo 192.0.2.1")
    assert "unknown restriction" in out[i + 1]
    assert out[i + 2] == "451 4.3.5 Server configuration error"
    i = out.index(">>> helo foo")
    assert out[i + 1].startswith("504 5.5.2 <foo>: Helo command rejected")


def test_script_excludes_transaction_options(tmp_path):
    r = run("check", "--script", "-", "--client", "192.0.2.1")
    assert r.returncode == 2


SEED_GATEWAY = os.environ.get("MOAT_SEED_GATEWAY", os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "shared", "examples", "seed-gateway"))


def test_seed_gateway_loads_whole(tmp_path):
    # The seeds' whole configuration loads now: content checks, policy
    # services, address verification and relaying are all implemented, so
    # moat check runs it (nothing is named as unsupported) and a trusted
    # client's recipient (in a domain the test DNS knows) is accepted.
    d = tmp_path / "seed"
    shutil.copytree(SEED_GATEWAY, d)
    for name in ("allowed-spammers", "spammer-networks", "smtpd_helo_restrictions", "null_sender",
                 "access_sender", "sender_access", "access_recipient", "transport"):
        assert run("map", "build", str(d / name)).returncode == 0
    if moatlib.DEFAULT_DNS_FORWARDERS:
        with open(d / "main.cf", "a") as f:
            f.write("dns_forwarders = %s\ndns_timeout = 5s\n" % moatlib.DEFAULT_DNS_FORWARDERS)
    r = check(str(d), "--client", "127.0.0.1", "--client-name", "localhost", "--helo", "mx.example.test",
              "--from", "a@example.test", "--rcpt", "u@hasmx.test")
    assert "not supported by this version of moat" not in r.stderr, r.stderr
    assert r.returncode == 0, r.stdout + r.stderr
    assert line_of(r, "RCPT TO:") == "RCPT TO:<u@hasmx.test>: 250 2.1.5 Ok", r.stdout


def test_script_mode_trace(tmp_path):
    script = tmp_path / "t.in"
    script.write_text("smtpd_delay_reject 0\n"
                      "helo_restrictions check_helo_access,inline:{bad.test=REJECT}\n"
                      "helo x.bad.test\n")
    r = run("check", "--trace", "--script", str(script), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    out = r.stdout.splitlines()
    i = out.index(">>> helo x.bad.test")
    assert out[i + 1] == "moat: trace: helo: check_helo_access inline:{bad.test=REJECT}: x.bad.test not found", out
    assert out[i + 2].startswith("moat: trace: helo: check_helo_access inline:{bad.test=REJECT}: bad.test found"), out
    assert any(l.startswith("moat: trace: verdict: 554 5.7.1 <x.bad.test>: Helo command rejected") for l in out), out
    assert out[-1].startswith("554 5.7.1 <x.bad.test>: Helo command rejected: Access denied; rule=helo:"), out
