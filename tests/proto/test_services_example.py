"""The shipped examples/submission/ configuration (main.cf, master.cf and
its tables), run as it is on a test machine: one daemon, four doors.

The files are copied into the daemon's directory and only what cannot
work here is rewritten, in Python, one commented change each
(example_config): the certificate paths (tlslib makes them), the
services' ports (loopback, free), the relay host (a sink), the AUTH
backend (moat's own password table instead of a Dovecot socket), table
and spool paths, and the test DNS server.  Everything else (levels,
restrictions, per-service -o overrides) is the example's.

Checked: `moat config check` passes; the port 25 service offers STARTTLS
and no AUTH; submission requires STARTTLS, then AUTH, and relays for
alice; smtps is implicit TLS with AUTH; the re-injection service takes
mail from 127.0.0.1 without TLS.
"""

import base64
import os
import re
import shutil

import pytest

import moatlib
from moatlib import Client, check, simple_message
from sink import Sink, free_port_for
from test_smtp_auth import USERS, crypt_hash, sent_to_sink
from test_starttls import client_context, ehlo_keywords, starttls, tls_client
from tlslib import Pki

EXAMPLE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "examples", "submission")
MYHOSTNAME = "mx.example.org"          # the example's own name: kept
ALICE_PLAIN = "AUTH PLAIN " + base64.b64encode(b"\0alice\0" + USERS["alice"].encode()).decode()


# ------------------------------------------------------------ rewriting

def logical_lines(text):
    """main.cf as a list of logical entries (a parameter with its
    continuation lines, or a comment/blank line), each a list of lines."""
    out = []
    for line in text.splitlines():
        if line[:1] in (" ", "\t") and line.strip() and out and not out[-1][0].lstrip().startswith("#"):
            out[-1].append(line)
        else:
            out.append([line])
    return out


def set_params(text, changes):
    """Replace each parameter of changes where main.cf sets it, or append
    it; every other line stays as it is."""
    entries = logical_lines(text)
    done = set()
    for i, entry in enumerate(entries):
        m = re.match(r"^([A-Za-z0-9_]+)\s*=", entry[0])
        if m and m.group(1) in changes:
            entries[i] = ["%s = %s" % (m.group(1), changes[m.group(1)])]
            done.add(m.group(1))
    lines = [line for entry in entries for line in entry]
    lines += ["%s = %s" % (k, v) for k, v in changes.items() if k not in done]
    return "\n".join(lines) + "\n"


def example_config(m, pki, sink_port):
    """Copy the example into m.dir and make it runnable here."""
    for name in os.listdir(EXAMPLE):
        shutil.copy(os.path.join(EXAMPLE, name), m.path(name))

    rsa = pki.issue(MYHOSTNAME)
    ecdsa = pki.issue(MYHOSTNAME, ec=True)
    with open(m.path("sasl_passwd"), "a") as f:
        # The shipped table has no users (a comment shows the format).
        f.write("alice %s\n" % crypt_hash(USERS["alice"], "-6"))

    changes = {
        # /etc/moat/tls/*.pem do not exist here: tlslib's key+chain files.
        "smtpd_tls_chain_files": "%s, %s" % (rsa.chain, ecdsa.chain),
        # The mail store is a sink on a loopback port.
        "relayhost": "[127.0.0.1]:%d" % sink_port,
        # No Dovecot in this test: the built-in backend the example's
        # comment offers, with the copied table (alice added above).
        "smtpd_sasl_type": "moat",
        "smtpd_sasl_password_maps": "texthash:" + m.path("sasl_passwd"),
        # The tables live in the test directory, not /etc/moat.
        "smtp_tls_policy_maps": "texthash:" + m.path("tls_policy"),
        "smtpd_sender_login_maps": "texthash:" + m.path("sender_login"),
        # Spool, state and log in the test directory (moatlib reads them there).
        "queue_directory": m.main["queue_directory"],
        "data_directory": m.main["data_directory"],
        "mail_spool_directory": m.main["mail_spool_directory"],
        "maillog_file": m.main["maillog_file"],
        # No error delays: the tests provoke refusals on purpose.
        "smtpd_error_sleep_time": "0",
    }
    if moatlib.DEFAULT_DNS_FORWARDERS:
        # Every name lookup goes to the test DNS server, never the machine's.
        changes["dns_forwarders"] = moatlib.DEFAULT_DNS_FORWARDERS
    with open(m.path("main.cf")) as f:
        main_cf = f.read()
    with open(m.path("main.cf"), "w") as f:
        f.write(set_params(main_cf, changes))

    # Ports 25, 587, 465 and 10026 are not ours to take: each service
    # listens on a free loopback port instead (same order, same options).
    m.ports = {name: m.alloc_port() for name in ("smtp", "submission", "smtps", "reinject")}
    names = {"smtp": "smtp", "submission": "submission", "smtps": "smtps", "127.0.0.1:10026": "reinject"}
    with open(m.path("master.cf")) as f:
        master = f.read().splitlines()
    out = []
    for line in master:
        first = line.split(None, 1)[0] if line.strip() and line[:1] not in (" ", "\t", "#") else None
        if first in names:
            line = "127.0.0.1:%d%s" % (m.ports[names[first]], line[len(first):])
        out.append(line)
    with open(m.path("master.cf"), "w") as f:
        f.write("\n".join(out) + "\n")
    m.port = m.ports["smtp"]


# ------------------------------------------------------------ the daemon

def shared_setup(m):
    m.pki = Pki(os.path.join(m.dir, "pki"))
    m.sink_port = free_port_for("127.0.0.1")
    example_config(m, m.pki, m.sink_port)
    # moatlib would write its own main.cf/master.cf over the example's.
    m.write_config = lambda: None


@pytest.fixture(scope="module")
def sink(tmp_path_factory, shared_moat):
    s = Sink(tmp_path_factory.mktemp("examplesink"), port=shared_moat.sink_port)
    s.start()
    yield s
    s.stop()
    assert not s.problems(), s.problems()


@pytest.fixture(scope="module")
def ex(shared_moat, sink):
    for port in shared_moat.ports.values():
        shared_moat.wait_listening(port=port)
    return shared_moat


@pytest.fixture(scope="module")
def ctx(shared_moat):
    return client_context(shared_moat.pki)


def relayed(sink, rcpt):
    """What the sink received for rcpt (the relayhost's side)."""
    return sent_to_sink(sink, rcpt)


# ------------------------------------------------------------ tests

def test_config_check_passes(shared_moat):
    r = shared_moat.run_cli("config", "check")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().endswith("configuration OK: 4 services"), r.stdout


def test_port_25_offers_starttls_no_auth(ex, ctx, sink):
    with Client(ex.ports["smtp"]) as c:
        assert c.greeting.text.startswith(MYHOSTNAME), c.greeting
        kw = ehlo_keywords(c.ehlo())
        assert "STARTTLS" in kw and "AUTH" not in kw, kw
        check(c.cmd(ALICE_PLAIN), 503, "5.5.1", "Error: authentication not enabled")
        starttls(c, ctx, server_hostname=MYHOSTNAME)
        kw = ehlo_keywords(c.ehlo())
        assert "AUTH" not in kw and "STARTTLS" not in kw, kw
        check(c.cmd(ALICE_PLAIN), 503, "5.5.1", "Error: authentication not enabled")
        # The example's inbound policy: a domain that does not resolve
        # (the test DNS world has no far.test) is refused, and 127.0.0.0/8
        # is the example's mynetworks, which relays (hasmx.test resolves).
        c.mail("a@b.test")
        check(c.cmd("RCPT TO:<u@far.test>"), 450, "4.1.2", "<u@far.test>: Recipient address rejected: "
              "Domain not found")
        c.rcpt("u@hasmx.test")
        c.data(simple_message("port 25"))
        c.quit()
    data = relayed(sink, "u@hasmx.test")["data"]
    assert re.search(rb"with ESMTPS id ", data), data[:1000]


def test_submission_requires_starttls_then_auth(ex, ctx, sink):
    with Client(ex.ports["submission"]) as c:
        kw = ehlo_keywords(c.ehlo())
        assert "STARTTLS" in kw and "AUTH" not in kw, kw
        check(c.cmd("MAIL FROM:<alice@example.org>"), 530, "5.7.0", "Must issue a STARTTLS command first")
        check(c.cmd(ALICE_PLAIN), 530, "5.7.0", "Must issue a STARTTLS command first")
        starttls(c, ctx, server_hostname=MYHOSTNAME)
        r = c.ehlo()
        assert "AUTH PLAIN LOGIN" in r.lines and "AUTH=PLAIN LOGIN" in r.lines, r
        # not logged in: nothing goes anywhere
        c.mail("someone@elsewhere.test")
        check(c.cmd("RCPT TO:<friend@far.test>"), 554, "5.7.1")
        check(c.cmd("RSET"), 250)
        check(c.cmd(ALICE_PLAIN), 235, "2.7.0", "Authentication successful")
        c.sendmail("alice@example.org", ["friend@far.test"], simple_message("from alice"))
        c.quit()
    data = relayed(sink, "friend@far.test")["data"]
    assert b"(Authenticated sender: alice)" in data, data[:1000]
    assert re.search(rb"with ESMTPSA id ", data), data[:1000]
    assert b"(using TLSv1.3 with cipher " in data, data[:1000]
    ex.wait_log(r"[0-9A-F]+: client=\S+\[127\.0\.0\.1\], sasl_method=PLAIN, sasl_username=alice$")


def test_submission_sender_login_mismatch(ex, ctx):
    with Client(ex.ports["submission"]) as c:
        c.ehlo()
        starttls(c, ctx, server_hostname=MYHOSTNAME)
        c.ehlo()
        check(c.cmd(ALICE_PLAIN), 235)
        # bob@example.org belongs to bob (sender_login); with
        # smtpd_delay_reject (the default) the sender restrictions answer
        # at RCPT
        c.mail("bob@example.org")
        check(c.cmd("RCPT TO:<friend@far.test>"), 553, "5.7.1",
              "<bob@example.org>: Sender address rejected: not owned by user alice")
        check(c.cmd("RSET"), 250)
        c.mail("alice@example.org")
        c.rcpt("friend@far.test")
        c.quit()


def test_smtps_implicit_tls_and_auth(ex, ctx, sink):
    with tls_client(ex.ports["smtps"], ctx, server_hostname=MYHOSTNAME) as c:
        check(c.greeting, 220)
        r = c.ehlo()
        assert "AUTH PLAIN LOGIN" in r.lines and "STARTTLS" not in ehlo_keywords(r), r
        check(c.cmd(ALICE_PLAIN), 235, "2.7.0")
        c.sendmail("alice@example.org", ["smtps@far.test"], simple_message("smtps"))
        c.quit()
    assert b"with ESMTPSA id" in relayed(sink, "smtps@far.test")["data"]


def test_reinjection_port_plaintext_from_loopback(ex, sink):
    with Client(ex.ports["reinject"]) as c:
        kw = ehlo_keywords(c.ehlo())
        assert "STARTTLS" not in kw and "AUTH" not in kw, kw
        c.sendmail("filter@example.org", ["back@far.test"], simple_message("re-injected"))
        c.quit()
    data = relayed(sink, "back@far.test")["data"]
    assert re.search(rb"with ESMTP id ", data), data[:1000]
