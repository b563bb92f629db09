"""SMTP AUTH (RFC 4954) through a live moat, with real clients: Python's
smtplib (starttls, auth_plain, auth_login), swaks (--tls, --tlsc, --auth)
and a raw client for the protocol corners.

Two backends: moat's own password table (smtpd_sasl_type = moat,
smtpd_sasl_password_maps = texthash: of SHA-512-crypt and SHA-256-crypt
hashes made by `openssl passwd`) in the module's shared daemon, and a
private Dovecot (tests/proto/dovecotlib.py, a passwd-file userdb) started
by the tests that need it, then stopped under moat's feet.

The shared daemon relays through relayhost to a sink; 127.0.0.1 is not
in mynetworks, so relaying takes permit_sasl_authenticated.  Its
listeners: the main port (STARTTLS may, AUTH only over TLS, the default),
broken_sasl_auth_clients, AUTH off, a submission-style port (encrypt,
permit_sasl_authenticated or reject) and an smtps-style one (implicit
TLS).

Checked: where AUTH is announced (never in plaintext with
smtpd_tls_auth_only), 538 before TLS, 235/535/454 and the RFC 4954
errors (*, bad base64, unknown mechanism, sequence), the log lines
(sasl_method, sasl_username, the failure line) and that no password or
base64 response ever reaches the log, ESMTPSA and the Authenticated
sender comment in Received:, MAIL FROM ... AUTH=, the AUTH rate limit
and five-fifties.
"""

import base64
import os
import re
import shutil
import signal
import smtplib
import subprocess

import pytest

from dovecotlib import Dovecot, dovecot_available
from moatlib import HOSTNAME, Client, check, simple_message, wait_for
from sink import Sink, free_port_for
from test_starttls import client_context, ehlo_keywords, starttls
from tlslib import OPENSSL, Pki

USERS = {"alice": "Wonder-land 42", "bob": "b0b's secret"}
WRONG = "not-the-password-7"
ALICE_PLAIN = base64.b64encode(b"\0alice\0" + USERS["alice"].encode()).decode()


def crypt_hash(password, method):
    """A crypt(3) hash by `openssl passwd` (-6 SHA-512-crypt, -5 SHA-256)."""
    r = subprocess.run([OPENSSL, "passwd", method, "-stdin"], input=password + "\n",
                       capture_output=True, text=True, check=True)
    return r.stdout.strip()


def secrets_of(user, password):
    """Everything about a credential that must never be in a log."""
    p = password.encode()
    u = user.encode()
    return [password,
            base64.b64encode(p).decode(),
            base64.b64encode(b"\0" + u + b"\0" + p).decode(),
            base64.b64encode(u + b"\0" + u + b"\0" + p).decode()]


def assert_no_secrets(m, *creds):
    text = m.log() + m.stderr()
    for user, password in creds:
        for s in secrets_of(user, password):
            assert s not in text, "credential material %r in the log" % s


# ------------------------------------------------------------ the daemon

SHARED_MAIN = {
    "mynetworks": "192.0.2.0/24",
    "smtpd_tls_security_level": "may",
    "smtpd_tls_received_header": "yes",
    "smtpd_sasl_auth_enable": "yes",
    "smtpd_sasl_type": "moat",
    "smtpd_sasl_authenticated_header": "yes",
    "smtpd_relay_restrictions": "permit_mynetworks, permit_sasl_authenticated, reject_unauth_destination",
}

PORTS = ("broken", "noauth", "submission", "smtps")


def shared_setup(m):
    m.pki = Pki(os.path.join(m.dir, "pki"))
    cert = m.pki.issue(HOSTNAME, ec=True)
    m.main["smtpd_tls_cert_file"] = cert.cert
    m.main["smtpd_tls_key_file"] = cert.key
    m.files["sasl_passwd"] = ("# user -> crypt(3) hash\nalice %s\nbob %s\n"
                              % (crypt_hash(USERS["alice"], "-6"), crypt_hash(USERS["bob"], "-5")))
    m.main["smtpd_sasl_password_maps"] = "texthash:" + m.path("sasl_passwd")
    # The sink starts with the module's fixture, before anything is sent.
    m.sink_port = free_port_for("127.0.0.1")
    m.main["relayhost"] = "[127.0.0.1]:%d" % m.sink_port
    m.ports = {name: m.alloc_port() for name in PORTS}
    svc = "127.0.0.1:%d inet n - n - - smtpd"
    user_rules = ["  -o smtpd_recipient_restrictions=permit_sasl_authenticated,reject",
                  "  -o smtpd_relay_restrictions=permit_sasl_authenticated,reject"]
    m.master_extra += [
        svc % m.ports["broken"], "  -o broken_sasl_auth_clients=yes",
        svc % m.ports["noauth"], "  -o smtpd_sasl_auth_enable=no",
        svc % m.ports["submission"], "  -o smtpd_tls_security_level=encrypt", *user_rules,
        svc % m.ports["smtps"], "  -o smtpd_tls_wrappermode=yes", *user_rules,
    ]


@pytest.fixture(scope="module")
def sink(tmp_path_factory, shared_moat):
    s = Sink(tmp_path_factory.mktemp("authsink"), port=shared_moat.sink_port)
    s.start()
    yield s
    s.stop()
    problems = s.problems()
    assert not problems, problems


@pytest.fixture(scope="module")
def am(shared_moat, sink):
    for port in shared_moat.ports.values():
        shared_moat.wait_listening(port=port)
    return shared_moat


@pytest.fixture(scope="module")
def ctx(am):
    return client_context(am.pki)


def lenient_context(pki):
    """For smtplib, which names the server by the address it dialled: the
    chain is still verified against the test CA, the name is not."""
    c = client_context(pki)
    c.check_hostname = False
    return c


def tls_session(port, ctx, source=None):
    """A raw client past STARTTLS and a new EHLO; its EHLO reply."""
    c = Client(port, source=source) if source else Client(port)
    c.ehlo()
    starttls(c, ctx)
    return c, c.ehlo()


def sent_to_sink(sink, rcpt, timeout=20.0):
    """The last transaction the sink accepted for rcpt (waits for one)."""
    def found():
        msgs = [msg for msg in sink.messages() if rcpt in msg["rcpt_tos"]]
        return msgs[-1] if msgs else None
    try:
        return wait_for(found, timeout, what="a message for %s at the sink" % rcpt)
    except AssertionError:
        raise AssertionError("nothing for %s at the sink: %s" % (rcpt, [m["rcpt_tos"] for m in sink.messages()]))


# ------------------------------------------------------------ announcing

def test_auth_announced_only_over_tls(am, ctx):
    with am.connect() as c:
        kw = ehlo_keywords(c.ehlo())
        assert "AUTH" not in kw, kw
        check(c.cmd("AUTH PLAIN " + ALICE_PLAIN), 538, "5.7.11",
              "Encryption required for requested authentication mechanism")
        starttls(c, ctx)
        r = c.ehlo()
        assert "AUTH PLAIN LOGIN" in r.lines, r
        assert not any(line.startswith("AUTH=") for line in r.lines), r
        c.quit()


def test_broken_sasl_auth_clients(am, ctx):
    c, r = tls_session(am.ports["broken"], ctx)
    with c:
        assert "AUTH PLAIN LOGIN" in r.lines, r
        assert "AUTH=PLAIN LOGIN" in r.lines, r
        check(c.cmd("AUTH PLAIN " + ALICE_PLAIN), 235, "2.7.0", "Authentication successful")
        c.quit()


def test_auth_not_enabled(am, ctx):
    c, r = tls_session(am.ports["noauth"], ctx)
    with c:
        assert "AUTH" not in ehlo_keywords(r), r
        check(c.cmd("AUTH PLAIN " + ALICE_PLAIN), 503, "5.5.1", "Error: authentication not enabled")
        c.quit()


# ------------------------------------------------------------ smtplib

def smtplib_session(m, port, pki):
    s = smtplib.SMTP("127.0.0.1", port, local_hostname="client.example.org", timeout=20)
    s.ehlo()
    assert s.has_extn("starttls")
    s.starttls(context=lenient_context(pki))
    s.ehlo()
    return s


@pytest.mark.parametrize("mech", ["PLAIN", "LOGIN"])
def test_smtplib_login_and_relay(am, sink, mech):
    s = smtplib_session(am, am.port, am.pki)
    try:
        assert s.esmtp_features["auth"].split() == ["PLAIN", "LOGIN"], s.esmtp_features
        s.user, s.password = "alice", USERS["alice"]
        if mech == "PLAIN":
            code, text = s.auth("PLAIN", s.auth_plain)
        else:
            # no initial response: the whole 334 Username:/Password: dialogue
            code, text = s.auth("LOGIN", s.auth_login, initial_response_ok=False)
        assert (code, text) == (235, b"2.7.0 Authentication successful")
        rcpt = "auth-%s@far.test" % mech.lower()
        s.sendmail("alice@example.org", [rcpt], simple_message("auth " + mech))
        s.quit()
    finally:
        s.close()
    msg = sent_to_sink(sink, rcpt)
    data = msg["data"]
    assert re.search(rb"\(Authenticated sender: alice\)\r?\n", data), data[:1000]
    assert re.search(rb"\n\tby mx\.example\.test \(moat\) with ESMTPSA id ", data), data[:1000]
    assert b"(using TLSv1.3 with cipher " in data, data[:1000]
    am.wait_log(r"moat/smtpd\[\d+\]: [0-9A-F]+: client=\S+\[127\.0\.0\.1\], sasl_method=%s, "
                r"sasl_username=alice$" % mech)
    assert_no_secrets(am, ("alice", USERS["alice"]))


@pytest.mark.parametrize("mech", ["PLAIN", "LOGIN"])
def test_smtplib_wrong_password(am, mech):
    s = smtplib_session(am, am.port, am.pki)
    try:
        s.user, s.password = "alice", WRONG
        with pytest.raises(smtplib.SMTPAuthenticationError) as e:
            if mech == "PLAIN":
                s.auth("PLAIN", s.auth_plain)
            else:
                s.auth("LOGIN", s.auth_login, initial_response_ok=False)
        assert e.value.smtp_code == 535, e.value
        assert e.value.smtp_error.startswith(b"5.7.8 Error: authentication failed"), e.value
        # the session goes on, unauthenticated: no relaying
        code, _ = s.mail("alice@example.org")
        assert code == 250
        code, text = s.rcpt("nobody@far.test")
        assert code == 554 and b"Relay access denied" in text, (code, text)
        s.quit()
    finally:
        s.close()
    am.wait_log(r"warning: \S+\[127\.0\.0\.1\]: SASL %s authentication failed: .*sasl_username=alice$" % mech)
    assert_no_secrets(am, ("alice", WRONG), ("alice", USERS["alice"]))


def test_unknown_user_looks_like_a_wrong_password(am, ctx):
    c, _ = tls_session(am.port, ctx)
    with c:
        resp = base64.b64encode(b"\0mallory\0" + WRONG.encode()).decode()
        r = c.cmd("AUTH PLAIN " + resp)
        check(r, 535, "5.7.8")
        assert r.msg.startswith("Error: authentication failed"), r
        c.quit()
    assert_no_secrets(am, ("mallory", WRONG))


# ------------------------------------------------------------ protocol corners

def test_auth_protocol_errors(am, ctx):
    c = Client(am.port)
    with c:
        c.ehlo()
        starttls(c, ctx)
        # RFC 3207: the plaintext EHLO is forgotten
        check(c.cmd("AUTH PLAIN " + ALICE_PLAIN), 503, "5.5.1", "Error: send HELO/EHLO first")
        c.ehlo()
        check(c.cmd("AUTH"), 501, "5.5.4", "Syntax: AUTH mechanism")
        check(c.cmd("AUTH CRAM-MD5"), 504, "5.5.4", "Unrecognized authentication type")
        # "*" aborts an exchange
        check(c.cmd("AUTH LOGIN"), 334, msg="VXNlcm5hbWU6")          # "Username:"
        check(c.cmd("*"), 501, "5.7.0", "Authentication aborted")
        # a response that is not base64, as initial response and as a reply
        check(c.cmd("AUTH PLAIN !!!"), 501, "5.5.2", "Cannot decode response")
        r = c.cmd("AUTH PLAIN")
        check(r, 334)
        assert r.text == "", r
        check(c.cmd("not base64 at all"), 501, "5.5.2", "Cannot decode response")
        # no AUTH inside a transaction
        c.mail("a@b.test")
        check(c.cmd("AUTH PLAIN " + ALICE_PLAIN), 503, "5.5.1", "Error: MAIL transaction in progress")
        check(c.cmd("RSET"), 250)
        # lower-case mechanism names are fine; once is enough
        check(c.cmd("AUTH plain " + ALICE_PLAIN), 235, "2.7.0", "Authentication successful")
        check(c.cmd("AUTH PLAIN " + ALICE_PLAIN), 503, "5.5.1", "Error: already authenticated")
        c.quit()
    am.wait_log(r"warning: \S+\[127\.0\.0\.1\]: SASL LOGIN authentication aborted")
    assert_no_secrets(am, ("alice", USERS["alice"]))


def test_mail_from_auth_parameter(am, ctx):
    c, _ = tls_session(am.port, ctx)
    with c:
        check(c.cmd("AUTH PLAIN " + ALICE_PLAIN), 235, "2.7.0")
        check(c.cmd("MAIL FROM:<alice@example.org> AUTH=<alice@example.org>"), 250, "2.1.0", "Ok")
        check(c.cmd("RSET"), 250)
        check(c.cmd("MAIL FROM:<alice@example.org> AUTH=<>"), 250, "2.1.0", "Ok")
        c.quit()


def test_relay_needs_auth(am, ctx):
    c, _ = tls_session(am.port, ctx)
    with c:
        c.mail("alice@example.org")
        r = c.cmd("RCPT TO:<who@far.test>")
        check(r, 554, "5.7.1", "<who@far.test>: Relay access denied")
        c.quit()


# ------------------------------------------------------------ swaks

def swaks(port, *args):
    cmd = ["swaks", "--server", "127.0.0.1:%d" % port, "--timeout", "20",
           "--from", "alice@example.org", "--helo", "client.example.org"] + list(args)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)


needs_swaks = pytest.mark.skipif(shutil.which("swaks") is None, reason="swaks is not installed")


@needs_swaks
@pytest.mark.parametrize("mech", ["PLAIN", "LOGIN"])
def test_swaks_submission(am, sink, mech):
    rcpt = "swaks-%s@far.test" % mech.lower()
    r = swaks(am.ports["submission"], "--tls", "--auth", mech, "--auth-user", "alice",
              "--auth-password", USERS["alice"], "--to", rcpt)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "235 2.7.0 Authentication successful" in r.stdout
    msg = sent_to_sink(sink, rcpt)
    assert b"with ESMTPSA id" in msg["data"], msg["data"][:800]


@needs_swaks
def test_swaks_submission_refuses_without_auth(am):
    r = swaks(am.ports["submission"], "--tls", "--to", "swaks-noauth@far.test")
    assert r.returncode != 0, r.stdout
    assert re.search(r"<~\*? 554 5\.7\.1 ", r.stdout), r.stdout
    # and without TLS, nothing but the way to TLS
    r = swaks(am.ports["submission"], "--to", "swaks-plain@far.test")
    assert r.returncode != 0, r.stdout
    assert "530 5.7.0 Must issue a STARTTLS command first" in r.stdout, r.stdout


@needs_swaks
def test_swaks_smtps(am, sink):
    rcpt = "swaks-smtps@far.test"
    r = swaks(am.ports["smtps"], "--tlsc", "--auth", "PLAIN", "--auth-user", "bob",
              "--auth-password", USERS["bob"], "--to", rcpt)
    assert r.returncode == 0, r.stdout + r.stderr
    msg = sent_to_sink(sink, rcpt)
    assert b"(Authenticated sender: bob)" in msg["data"], msg["data"][:800]
    am.wait_log(r"[0-9A-F]+: client=\S+\[127\.0\.0\.1\], sasl_method=PLAIN, sasl_username=bob$")
    assert_no_secrets(am, ("bob", USERS["bob"]))


# ------------------------------------------------------------ limits

def _limits_moat(moat_factory, pki, **extra):
    cert = pki.issue(HOSTNAME, ec=True)
    main = {
        "mynetworks": "127.0.0.1/32",
        "smtpd_client_event_limit_exceptions": "127.0.0.1/32",
        "anvil_rate_time_unit": "3600s",
        "smtpd_tls_security_level": "may",
        "smtpd_tls_cert_file": cert.cert,
        "smtpd_tls_key_file": cert.key,
        "smtpd_sasl_auth_enable": "yes",
        "smtpd_sasl_type": "moat",
    }
    main.update({k: str(v) for k, v in extra.items()})
    m = moat_factory(start=False, main=main,
                     files={"sasl_passwd": "alice %s\n" % crypt_hash(USERS["alice"], "-6")})
    m.main["smtpd_sasl_password_maps"] = "texthash:" + m.path("sasl_passwd")
    m.start()
    return m


def wrong_plain(user="alice"):
    return "AUTH PLAIN " + base64.b64encode(b"\0" + user.encode() + b"\0" + WRONG.encode()).decode()


def test_auth_rate_limit(moat_factory, am):
    m = _limits_moat(moat_factory, am.pki, smtpd_client_auth_rate_limit=2)
    ctx = client_context(am.pki)
    c, _ = tls_session(m.port, ctx, source="127.0.0.2")
    with c:
        check(c.cmd(wrong_plain()), 535, "5.7.8")
        check(c.cmd(wrong_plain()), 535, "5.7.8")
        check(c.cmd("AUTH PLAIN " + ALICE_PLAIN), 450, "4.7.1", "Error: too many AUTH commands from 127.0.0.2")
        c.quit()
    m.wait_log(r"warning: AUTH command rate limit exceeded: 3 from \S+\[127\.0\.0\.2\] for service ")
    # the exempt client is not counted
    c, _ = tls_session(m.port, ctx, source="127.0.0.1")
    with c:
        check(c.cmd(wrong_plain()), 535)
        check(c.cmd(wrong_plain()), 535)
        check(c.cmd("AUTH PLAIN " + ALICE_PLAIN), 235)
        c.quit()


def test_failed_auth_counts_toward_five_fifties(moat_factory, am):
    m = _limits_moat(moat_factory, am.pki, smtpd_client_reject_limit=3, smtpd_client_block_time="3600s",
                     smtpd_client_abuse_window="600s")
    ctx = client_context(am.pki)
    c, _ = tls_session(m.port, ctx, source="127.0.0.3")
    with c:
        for _ in range(3):
            check(c.cmd(wrong_plain()), 535, "5.7.8")
    m.wait_log(r"warning: blocking 127\.0\.0\.3 for 3600 seconds: 3 5xx replies in 600 seconds")

    # The line above is logged when the count reaches the limit; the block
    # itself is written to the state store a moment later.
    def greeting():
        with Client(m.port, source="127.0.0.3", greeting=False) as c:
            r = c.reply()
            if r.code == 220:
                c.quit()
                return None
            return r
    r = wait_for(greeting, timeout=10, interval=0.05, what="the block of 127.0.0.3")
    check(r, 421, "4.7.0", "%s Error: too many errors from 127.0.0.3" % HOSTNAME)


# ------------------------------------------------------------ Dovecot

needs_dovecot = pytest.mark.skipif(not dovecot_available(),
                                   reason="dovecot-core is not installed (scripts/deps.sh installs it)")


@pytest.fixture(scope="module")
def dovecot():
    d = Dovecot(users=USERS)
    d.start()
    yield d
    d.remove()


def _dovecot_moat(moat_factory, pki, path):
    cert = pki.issue(HOSTNAME, ec=True)
    return moat_factory(main={
        "mynetworks": "192.0.2.0/24",
        "smtpd_tls_security_level": "may",
        "smtpd_tls_cert_file": cert.cert,
        "smtpd_tls_key_file": cert.key,
        "smtpd_sasl_auth_enable": "yes",
        "smtpd_sasl_type": "dovecot",
        "smtpd_sasl_path": path,
    })


@needs_dovecot
def test_dovecot_plain_login_and_failure(moat_factory, am, dovecot):
    m = _dovecot_moat(moat_factory, am.pki, dovecot.socket)
    for mech in ("PLAIN", "LOGIN"):
        s = smtplib_session(m, m.port, am.pki)
        try:
            assert sorted(s.esmtp_features["auth"].split()) == ["LOGIN", "PLAIN"], s.esmtp_features
            s.user, s.password = "alice", USERS["alice"]
            if mech == "PLAIN":
                code, text = s.auth("PLAIN", s.auth_plain)
            else:
                code, text = s.auth("LOGIN", s.auth_login, initial_response_ok=False)
            assert (code, text) == (235, b"2.7.0 Authentication successful")
            s.sendmail("alice@example.org", ["dove-%s@example.test" % mech.lower()], simple_message(mech))
            s.quit()
        finally:
            s.close()
        m.wait_log(r"[0-9A-F]+: client=\S+\[127\.0\.0\.1\], sasl_method=%s, sasl_username=alice$" % mech)
    mail = m.wait_mails("dove-plain", 1)[0]
    assert b"with ESMTPSA id" in mail, mail[:800]
    s = smtplib_session(m, m.port, am.pki)
    try:
        s.user, s.password = "alice", WRONG
        with pytest.raises(smtplib.SMTPAuthenticationError) as e:
            s.auth("PLAIN", s.auth_plain)
        assert e.value.smtp_code == 535 and e.value.smtp_error.startswith(b"5.7.8 "), e.value
        s.quit()
    finally:
        s.close()
    m.wait_log(r"warning: \S+\[127\.0\.0\.1\]: SASL PLAIN authentication failed: .*sasl_username=alice$")
    assert_no_secrets(m, ("alice", USERS["alice"]), ("alice", WRONG))


def _alive(pid):
    """Running (a zombie nobody reaped yet counts as gone)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def stop_dovecot(d, timeout=10.0):
    """d.stop(), then the children its master leaves behind: Dovecot's
    auth process keeps serving the clients already connected (moat's
    connection) after the master is gone, so a stop is not a stop for
    moat until those are gone too.  They are found by the instance's
    unique directory name in their process titles and stopped by PID."""
    d.stop()
    tag = os.path.basename(d.dir)
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/cmdline" % entry, "rb") as f:
                title = f.read()
        except OSError:
            continue
        if tag.encode() in title and b"dovecot" in title:
            pids.append(int(entry))
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    wait_for(lambda: not any(_alive(pid) for pid in pids), timeout=timeout,
             what="dovecot's leftover processes to exit")
    return pids


@needs_dovecot
def test_dovecot_stopped(moat_factory, am):
    """Dovecot gone: 454 4.7.0, for the session that was already talking
    and for a new one; AUTH stays announced (moat keeps the mechanisms of
    its last handshake) and the session goes on.  Dovecot back: moat
    reconnects by itself and AUTH works again."""
    with Dovecot(users=USERS) as d:
        m = _dovecot_moat(moat_factory, am.pki, d.socket)
        ctx = client_context(am.pki)
        c, r = tls_session(m.port, ctx)
        with c:
            assert "AUTH PLAIN LOGIN" in r.lines, r
            stop_dovecot(d)
            check(c.cmd("AUTH PLAIN " + ALICE_PLAIN), 454, "4.7.0",
                  "Temporary authentication failure: no connection to the authentication server")
            check(c.cmd("NOOP"), 250)
            c.quit()
        m.wait_log(r"warning: SASL: Dovecot at %s: lost connection" % re.escape(d.socket))
        m.wait_log(r"warning: \S+\[127\.0\.0\.1\]: SASL PLAIN authentication failed: "
                   r"no connection to the authentication server$")
        c, r = tls_session(m.port, ctx)
        with c:
            assert "AUTH PLAIN LOGIN" in r.lines, r
            check(c.cmd("AUTH PLAIN " + ALICE_PLAIN), 454, "4.7.0")
            c.mail("a@b.test")               # unauthenticated mail still flows
            c.rcpt("dove-down@example.test")
            c.quit()
        d.start()
        m.wait_log(r"SASL: Dovecot at %s: connected" % re.escape(d.socket), timeout=40)
        c, r = tls_session(m.port, ctx)
        with c:
            check(c.cmd("AUTH PLAIN " + ALICE_PLAIN), 235, "2.7.0")
            c.quit()
        stop_dovecot(d)    # nothing of it outlives the test, even with moat connected
    assert_no_secrets(m, ("alice", USERS["alice"]))
