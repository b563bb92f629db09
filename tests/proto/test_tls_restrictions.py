"""The TLS issue's restrictions and limits through `moat check`.

permit_tls_clientcerts / permit_tls_all_clientcerts with relay_clientcerts,
check_ccert_access, check_sasl_access, reject_plaintext_session and the
sender login mismatch family with smtpd_sender_login_maps, decided by the
real binary from real tables (`moat map build`); the client's TLS session
and login are described with moat check's --tls, --ccert-* and --sasl-*
options (docs/check.md).  The fingerprints are those of certificates made
by tlslib for this module (Postfix's form, sha256).  The STARTTLS and AUTH
rate limits read counters from a real redis-server, which this module
fills the way the daemon would have (moat check itself never writes).

SMTP-level tests (the session filling the same state from a real TLS
handshake and a real AUTH) live with the session's own tests.
"""
import os
import re
import subprocess
import time

import pytest

import moatlib
import tlslib

from moatlib import SANITIZER_MARKERS, moat_bin

MOAT = moat_bin()

BASE_MAIN = {
    "myhostname": "mx.example.test",
    "mydestination": "example.test, localhost",
    "myorigin": "example.test",
    "mynetworks": "127.0.0.1/32",
    "queue_directory": "queue",
    "data_directory": "data",
    "mail_spool_directory": "mail/",
}
MASTER = "127.0.0.1:2525 inet n - n - - smtpd\n"
DENIED = "554 5.7.1 <u@other.test>: Relay access denied"


def run(*args, cwd=None):
    r = subprocess.run([MOAT, *args], capture_output=True, text=True, cwd=cwd, timeout=60)
    for marker in SANITIZER_MARKERS:
        assert marker not in r.stderr + r.stdout, r.stderr
    return r


@pytest.fixture(autouse=True)
def _binary():
    if not os.access(MOAT, os.X_OK):
        pytest.fail("moat binary %s not found; run `make build/asan/moat`" % MOAT)


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    """Two client certificates (ECDSA: cheap): alice's from the test CA,
    mallory's self-signed; their certificate and public-key fingerprints."""
    pki = tlslib.Pki(tmp_path_factory.mktemp("pki"))
    alice = pki.issue("alice", ec=True, client=True)
    mallory = pki.self_signed("mallory", ec=True)
    f = tlslib.Pki.fingerprint
    return {"alice": f(alice.cert), "alice_pk": f(alice.cert, pubkey=True),
            "mallory": f(mallory.cert), "mallory_pk": f(mallory.cert, pubkey=True)}


def confdir(tmp_path, main=None, tables=None):
    """main.cf + master.cf in tmp_path/conf; every table is compiled with
    `moat map build` (hash: in main.cf)."""
    d = tmp_path / "conf"
    d.mkdir(exist_ok=True)
    settings = dict(BASE_MAIN)
    if moatlib.DEFAULT_DNS_FORWARDERS:   # the test DNS server, never the machine's resolver
        settings["dns_forwarders"] = moatlib.DEFAULT_DNS_FORWARDERS
    settings.update(main or {})
    (d / "main.cf").write_text("".join("%s = %s\n" % kv for kv in settings.items()))
    (d / "master.cf").write_text(MASTER)
    for name, text in (tables or {}).items():
        (d / name).write_text(text)
        r = run("map", "build", str(d / name))
        assert r.returncode == 0, r.stderr
    return str(d)


def check(d, *args):
    # a verified client name: no PTR lookups
    return run("check", "-c", d, "--client", "192.0.2.1", "--client-name", "client.example.net",
               "--helo", "client.example.net", *args)


def line_of(r, prefix):
    ls = [l for l in r.stdout.splitlines() if l.startswith(prefix)]
    assert len(ls) == 1, "expected one %r line in:\n%s%s" % (prefix, r.stdout, r.stderr)
    return ls[0]


def reply_of(r, prefix):
    return line_of(r, prefix)[len(prefix):]


# ------------------------------------------------------- client certificates

def test_permit_tls_clientcerts_by_fingerprint(tmp_path, certs):
    d = confdir(tmp_path, {"relay_clientcerts": "hash:$config_directory/relay_clientcerts",
                           "smtpd_relay_restrictions": "permit_tls_clientcerts, reject_unauth_destination"},
                tables={"relay_clientcerts": "# the value is not used\n%s alice\n%s mallory's key\n"
                        % (certs["alice"], certs["mallory_pk"])})
    # alice's certificate, verified or not (a listed print needs no CA)
    r = check(d, "--ccert-fingerprint", certs["alice"], "--ccert-pubkey-fingerprint", certs["alice_pk"],
              "--from", "a@b.test", "--rcpt", "u@other.test", "--trace")
    assert r.returncode == 0, r.stdout + r.stderr
    assert reply_of(r, "STARTTLS: ") == "220 2.0.0 Ready to start TLS"
    assert reply_of(r, "RCPT TO:<u@other.test>: ") == "250 2.1.5 Ok"
    assert re.search(r"permit_tls_clientcerts: fingerprint %s found in hash:\S+/relay_clientcerts at "
                     r"\S+/relay_clientcerts:2$" % re.escape(certs["alice"]), r.stdout, re.M), r.stdout
    # mallory's self-signed certificate: listed by its public key
    r = check(d, "--ccert-fingerprint", certs["mallory"], "--ccert-pubkey-fingerprint", certs["mallory_pk"],
              "--rcpt", "u@other.test", "--trace")
    assert r.returncode == 0, r.stdout
    assert "public key fingerprint %s found" % certs["mallory_pk"] in r.stdout
    # the same certificate without its key's print: not listed
    r = check(d, "--ccert-fingerprint", certs["mallory"], "--rcpt", "u@other.test")
    assert r.returncode == 1
    assert reply_of(r, "RCPT TO:<u@other.test>: ").startswith(DENIED + "; rule=relay:reject_unauth_destination")
    # TLS without a certificate, and no TLS at all
    for extra in (["--tls"], []):
        r = check(d, *extra, "--rcpt", "u@other.test")
        assert reply_of(r, "RCPT TO:<u@other.test>: ").startswith(DENIED), r.stdout
    assert "STARTTLS" not in r.stdout


def test_permit_tls_all_clientcerts_needs_a_verified_certificate(tmp_path, certs):
    d = confdir(tmp_path, {"smtpd_relay_restrictions": "permit_tls_all_clientcerts, reject_unauth_destination"})
    r = check(d, "--ccert-fingerprint", certs["alice"], "--ccert-verified", "--ccert-subject", "alice",
              "--rcpt", "u@other.test", "--trace")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "permit_tls_all_clientcerts: the client certificate (alice) is verified" in r.stdout
    r = check(d, "--ccert-fingerprint", certs["mallory"], "--ccert-subject", "mallory", "--rcpt", "u@other.test")
    assert r.returncode == 1
    assert reply_of(r, "RCPT TO:<u@other.test>: ").startswith(DENIED)


def test_check_ccert_access(tmp_path, certs):
    d = confdir(tmp_path, {"smtpd_client_restrictions": "check_ccert_access hash:$config_directory/ccert_access"},
                tables={"ccert_access": "%s REJECT certificate revoked\n%s 450 4.7.1 key under review\n"
                        % (certs["alice"], certs["mallory_pk"])})
    r = check(d, "--ccert-fingerprint", certs["alice"], "--ccert-verified", "--ccert-subject", "alice",
              "--rcpt", "u@example.test")
    assert r.returncode == 1
    assert re.fullmatch(r"554 5\.7\.1 <alice>: Client certificate rejected: certificate revoked; "
                        r"rule=client:check_ccert_access hash:\S+/ccert_access table=\S+/ccert_access:1",
                        reply_of(r, "RCPT TO:<u@example.test>: ")), r.stdout
    # by the public key, and whatever the issuer
    r = check(d, "--ccert-fingerprint", certs["mallory"], "--ccert-pubkey-fingerprint", certs["mallory_pk"],
              "--ccert-subject", "mallory", "--rcpt", "u@example.test")
    assert reply_of(r, "RCPT TO:<u@example.test>: ").startswith(
        "450 4.7.1 <mallory>: Client certificate rejected: key under review;")
    # no certificate: nothing to look up
    r = check(d, "--tls", "--rcpt", "u@example.test")
    assert r.returncode == 0, r.stdout


# --------------------------------------------------------- plaintext, logins

def test_reject_plaintext_session(tmp_path):
    d = confdir(tmp_path, {"smtpd_recipient_restrictions": "reject_plaintext_session, permit_mynetworks, "
                                                           "reject_unauth_destination"})
    r = check(d, "--from", "a@b.test", "--rcpt", "u@example.test")
    assert r.returncode == 1
    assert reply_of(r, "RCPT TO:<u@example.test>: ") == (
        "450 4.7.1 Session encryption is required; rule=recipient:reject_plaintext_session")
    r = check(d, "--tls", "--tls-protocol", "TLSv1.2", "--tls-cipher", "ECDHE-RSA-AES128-GCM-SHA256",
              "--from", "a@b.test", "--rcpt", "u@example.test", "--trace")
    assert r.returncode == 0, r.stdout
    assert "reject_plaintext_session: the session is encrypted (TLSv1.2)" in r.stdout
    # plaintext_reject_code
    d = confdir(tmp_path, {"plaintext_reject_code": "554",
                           "smtpd_recipient_restrictions": "reject_plaintext_session, reject_unauth_destination"})
    r = check(d, "--rcpt", "u@example.test")
    assert reply_of(r, "RCPT TO:<u@example.test>: ").startswith("554 5.7.1 Session encryption is required;")


def test_check_sasl_access(tmp_path):
    d = confdir(tmp_path, {"smtpd_sasl_auth_enable": "yes",
                           "smtpd_relay_restrictions": "check_sasl_access hash:$config_directory/sasl_access, "
                                                       "permit_sasl_authenticated, reject_unauth_destination"},
                tables={"sasl_access": "mallory REJECT account locked\n"})
    r = check(d, "--tls", "--sasl-user", "mallory", "--rcpt", "u@other.test")
    assert r.returncode == 1
    assert reply_of(r, "AUTH PLAIN: ") == "235 2.7.0 Authentication successful"
    assert re.fullmatch(r"554 5\.7\.1 <mallory>: SASL login name rejected: account locked; "
                        r"rule=relay:check_sasl_access hash:\S+ table=\S+/sasl_access:1",
                        reply_of(r, "RCPT TO:<u@other.test>: ")), r.stdout
    r = check(d, "--tls", "--sasl-user", "alice", "--sasl-method", "LOGIN", "--rcpt", "u@other.test")
    assert r.returncode == 0, r.stdout
    assert reply_of(r, "AUTH LOGIN: ") == "235 2.7.0 Authentication successful"
    assert "AUTH needs TLS" not in r.stderr
    # AUTH only over TLS (moat's default): said, and simulated anyway
    r = check(d, "--sasl-user", "alice", "--rcpt", "u@other.test")
    assert r.returncode == 0
    assert "smtpd_tls_auth_only = yes: AUTH needs TLS" in r.stderr


LOGINS = ("alice@example.test alice\n"
          "shared@example.test alice, bob\n"
          "@partner.test partner\n"
          "carol carol\n")


def test_sender_login_mismatch(tmp_path):
    d = confdir(tmp_path, {"smtpd_sasl_auth_enable": "yes", "recipient_delimiter": "+",
                           "smtpd_sender_login_maps": "hash:$config_directory/logins",
                           "smtpd_sender_restrictions": "reject_sender_login_mismatch"},
                tables={"logins": LOGINS})

    def rcpt(sender, *login):
        args = ["--tls"] + (["--sasl-user", login[0]] if login else [])
        r = check(d, *args, "--from", sender, "--rcpt", "u@example.test")
        return r.returncode, reply_of(r, "RCPT TO:<u@example.test>: ")

    assert rcpt("alice@example.test", "alice") == (0, "250 2.1.5 Ok")
    assert rcpt("alice+lists@example.test", "alice") == (0, "250 2.1.5 Ok")
    assert rcpt("shared@example.test", "bob") == (0, "250 2.1.5 Ok")
    assert rcpt("anyone@partner.test", "partner") == (0, "250 2.1.5 Ok")
    assert rcpt("carol@example.test", "carol") == (0, "250 2.1.5 Ok")   # a bare local part: local domain
    code, reply = rcpt("alice@example.test", "bob")
    assert code == 1
    assert re.fullmatch(r"553 5\.7\.1 <alice@example\.test>: Sender address rejected: not owned by user bob; "
                        r"rule=sender:reject_sender_login_mismatch table=\S+/logins:1", reply), reply
    assert rcpt("carol@elsewhere.test", "carol")[1].startswith(
        "553 5.7.1 <carol@elsewhere.test>: Sender address rejected: not owned by user carol;")
    assert rcpt("alice@example.test")[1].startswith(
        "553 5.7.1 <alice@example.test>: Sender address rejected: not logged in;")
    assert rcpt("nobody@nowhere.test") == (0, "250 2.1.5 Ok")
    assert rcpt("nobody@nowhere.test", "alice")[1].startswith("553 5.7.1 <nobody@nowhere.test>: ")


def test_known_sender_login_mismatch_and_sasl_off(tmp_path):
    main = {"smtpd_sasl_auth_enable": "yes", "smtpd_sender_login_maps": "hash:$config_directory/logins",
            "smtpd_sender_restrictions": "reject_known_sender_login_mismatch"}
    d = confdir(tmp_path, main, tables={"logins": LOGINS})
    r = check(d, "--tls", "--sasl-user", "alice", "--from", "nobody@nowhere.test", "--rcpt", "u@example.test")
    assert r.returncode == 0, r.stdout
    r = check(d, "--tls", "--sasl-user", "bob", "--from", "alice@example.test", "--rcpt", "u@example.test")
    assert r.returncode == 1
    # without SASL the restriction is ignored, with the server's warning
    main["smtpd_sasl_auth_enable"] = "no"
    d = confdir(tmp_path, main)
    r = check(d, "--sasl-user", "bob", "--from", "alice@example.test", "--rcpt", "u@example.test")
    assert r.returncode == 0, r.stdout
    assert ("  log: warning: restriction `reject_known_sender_login_mismatch' ignored: no SASL support "
            "(smtpd_sasl_auth_enable = no)") in r.stdout
    assert "smtpd_sasl_auth_enable = no" in r.stderr


def test_unused_broken_tables_do_not_stop_the_configuration(tmp_path):
    # a relay_clientcerts table that does not exist: an error only where a
    # restriction uses it, named by its main.cf line
    d = confdir(tmp_path, {"relay_clientcerts": "hash:$config_directory/nosuch"})
    r = check(d, "--rcpt", "u@example.test")
    assert r.returncode == 0, r.stdout + r.stderr
    d = confdir(tmp_path, {"relay_clientcerts": "hash:$config_directory/nosuch",
                           "smtpd_relay_restrictions": "permit_tls_clientcerts, reject_unauth_destination"})
    r = check(d, "--rcpt", "u@example.test")
    assert r.returncode == 2
    assert re.search(r"main\.cf:\d+: .*nosuch", r.stderr), r.stderr


# ------------------------------------------------------ STARTTLS and AUTH

def window_keys(kind, addr, unit=86400):
    now = int(time.time())
    start = now - now % unit
    # the next window too, should the check cross into it
    return ["rate:%s:%s:%d" % (kind, addr, w) for w in (start, start + unit)]


def test_starttls_and_auth_rate_limits(tmp_path, redis_server):
    d = confdir(tmp_path, {"state_store": redis_server.url, "anvil_rate_time_unit": "1d",
                           "smtpd_client_new_tls_session_rate_limit": "3", "smtpd_client_auth_rate_limit": "3",
                           "smtpd_sasl_auth_enable": "yes"})
    args = ["--tls", "--sasl-user", "alice", "--from", "alice@example.test", "--rcpt", "u@example.test"]
    # under the limits: the counters are read (moat check writes nothing)
    r = check(d, *args, "--trace")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "smtpd_client_new_tls_session_rate_limit: rate:tls:192.0.2.1:" in r.stdout
    assert "= 0 new sessions (limit 3)" in r.stdout
    assert redis_server.cli("KEYS", "rate:*") == ""

    # three AUTH commands counted by the daemon: the fourth is refused, and
    # the client stays unauthenticated (the transaction goes on)
    for k in window_keys("auth", "192.0.2.1"):
        redis_server.cli("SET", k, "3")
    r = check(d, *args)
    assert reply_of(r, "AUTH PLAIN: ") == "450 4.7.1 Error: too many AUTH commands from 192.0.2.1; rule=limits:anvil"
    assert ("  log: warning: AUTH command rate limit exceeded: 4 from client.example.net[192.0.2.1] "
            "for service 127.0.0.1:2525") in r.stdout
    assert reply_of(r, "MAIL FROM:<alice@example.test>: ") == "250 2.1.0 Ok"

    # three new TLS sessions: the next STARTTLS is refused before the
    # handshake, and the server hangs up
    for k in window_keys("tls", "192.0.2.1"):
        redis_server.cli("SET", k, "3")
    r = check(d, *args)
    assert r.returncode == 1
    assert reply_of(r, "STARTTLS: ") == (
        "421 4.7.0 mx.example.test Error: too many new TLS sessions from 192.0.2.1; rule=limits:anvil")
    assert ("  log: warning: New TLS session rate limit exceeded: 4 from client.example.net[192.0.2.1] "
            "for service 127.0.0.1:2525") in r.stdout
    assert reply_of(r, "AUTH PLAIN: ") == "(not sent: the server closed the connection)"
    assert reply_of(r, "RCPT TO:<u@example.test>: ") == "(not sent: the server closed the connection)"

    # another client, and the exempt one (mynetworks), are not limited
    r = run("check", "-c", d, "--client", "127.0.0.1", "--client-name", "localhost", *args)
    assert r.returncode == 0, r.stdout
    assert redis_server.cli("GET", window_keys("tls", "192.0.2.1")[0]) == "3"


def test_implicit_tls_service_rate_limit(tmp_path, redis_server):
    d = confdir(tmp_path, {"state_store": redis_server.url, "anvil_rate_time_unit": "1d",
                           "smtpd_client_new_tls_session_rate_limit": "1", "smtpd_tls_wrappermode": "yes"})
    r = check(d, "--rcpt", "u@example.test")
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.splitlines()[0] == "TLS handshake (smtpd_tls_wrappermode): ok"
    for k in window_keys("tls", "192.0.2.1"):
        redis_server.cli("SET", k, "1")
    r = check(d, "--rcpt", "u@example.test")
    assert r.returncode == 1
    assert r.stdout.splitlines()[:3] == [
        "TLS handshake (smtpd_tls_wrappermode): 421 4.7.0 mx.example.test Error: too many new TLS sessions "
        "from 192.0.2.1; rule=limits:anvil",
        "  log: warning: New TLS session rate limit exceeded: 2 from client.example.net[192.0.2.1] for service "
        "127.0.0.1:2525",
        "  log: wrapper mode: the server closes the connection without a reply",
    ]
    assert reply_of(r, "CONNECT from client.example.net[192.0.2.1]: ") == \
        "(not sent: the server closed the connection)"


def test_options_that_need_each_other(tmp_path):
    d = confdir(tmp_path)
    r = check(d, "--ccert-verified", "--rcpt", "u@example.test")
    assert r.returncode == 2
    assert "--ccert-fingerprint FP" in r.stderr
    r = check(d, "--sasl-method", "PLAIN", "--rcpt", "u@example.test")
    assert r.returncode == 2
    r = run("check", "--script", "-", "--tls")
    assert r.returncode == 2


def test_script_fingerprint_command(tmp_path, certs):
    # Postfix's driver: "fingerprint FP" makes a TLS session whose client
    # certificate and key share that print
    tables = tmp_path / "t"
    tables.mkdir()
    (tables / "certs").write_text("%s alice\n" % certs["alice"])
    r = run("map", "build", str(tables / "certs"))
    assert r.returncode == 0, r.stderr
    script = ("relay_clientcerts hash:%s/certs\n"
              "recipient_restrictions permit_tls_clientcerts,reject_unauth_destination\n"
              "client foo 192.0.2.1\n"
              "rcpt u@other.test\n"
              "fingerprint %s\n"
              "rcpt u@other.test\n" % (tables, certs["alice"]))
    r = subprocess.run([MOAT, "check", "--script", "-"], input=script, capture_output=True, text=True,
                       cwd=tmp_path, timeout=60)
    out = [l for l in r.stdout.splitlines() if not l.startswith("moat: ")]
    assert r.returncode == 0, r.stderr

    def after(cmd, nth=0):
        idx = [i for i, l in enumerate(out) if l == ">>> " + cmd][nth]
        return out[idx + 1]

    assert after("rcpt u@other.test", 0).startswith("554 5.7.1 <u@other.test>: Relay access denied")
    assert after("fingerprint %s" % certs["alice"]) == "OK"
    assert after("rcpt u@other.test", 1) == "OK"
