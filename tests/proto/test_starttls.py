"""STARTTLS and implicit TLS through a live moat, with real TLS clients
(Python's ssl module, `openssl s_client`).

One daemon for most of the module, with one listener per TLS setup
(shared_setup): "may" on the main port, none, encrypt, the legacy
smtpd_enforce_tls, implicit TLS with a 2 s handshake limit, and a port
without smtpd_forbid_unauth_pipelining where the STARTTLS injection
reaches the discard path.  The certificates (tests/proto/tlslib.py: a
private CA, one server certificate for mx.example.test, client
certificates) are made once, in the shared daemon's directory.  Tests
that change certificates or need restrictions of their own start their
own daemon.

Checked: the EHLO keyword and every STARTTLS reply; the session forgets
the plaintext EHLO (RFC 3207 4.2) and the disconnect line counts
starttls=1; plaintext pipelined after STARTTLS is never answered
(CVE-2011-0411); level encrypt refuses mail commands with 530; implicit
TLS greets only after the handshake and a plaintext client gets nothing;
clients that stall or send garbage mid-handshake are logged and cut while
other clients carry on; Received: and the loglevel-1 summary; client
certificates with permit_tls_all_clientcerts and check_ccert_access;
SIGHUP re-reads the certificate files.

The helpers starttls(), tls_client() and client_context() are used by
test_smtp_auth.py and test_services_example.py too.
"""

import os
import re
import select
import shutil
import socket
import ssl
import subprocess
import time

import pytest

from moatlib import HOSTNAME, LOCAL_CLIENT_RE, Client, check, simple_message, wait_for
from tlslib import OPENSSL, Pki

READY = "Ready to start TLS"
NOT_YET = "Must issue a STARTTLS command first"
GREETING = "%s ESMTP moat" % HOSTNAME
# What OpenSSL says about a handshake it refused ("error:0A00010B:SSL
# routines::wrong version number"): not a lost connection nor a timeout.
OPENSSL_REASON = r"error:[0-9A-F]{8}:SSL routines:"


# ------------------------------------------------------------ helpers

def client_context(pki, cert=None):
    """A client context that trusts only the test CA and checks the
    server name; cert (a tlslib.Issued) is presented when asked."""
    ctx = ssl.create_default_context(cafile=pki.ca_file)
    if cert is not None:
        ctx.load_cert_chain(cert.cert, cert.key)
    return ctx


def starttls(c, ctx, server_hostname=HOSTNAME):
    """STARTTLS on a moatlib.Client, then the handshake on its socket; the
    Client carries on over TLS (its recv/sendall are the SSL socket's)."""
    check(c.cmd("STARTTLS"), 220, "2.0.0", READY, what="STARTTLS")
    assert c.buf == b"", "bytes after the 220 in plaintext: %r" % c.buf
    c.sock = ctx.wrap_socket(c.sock, server_hostname=server_hostname)
    return c


def tls_client(port, ctx, server_hostname=HOSTNAME, **kw):
    """A Client on an implicit-TLS port: handshake first, then the greeting."""
    c = Client(port, greeting=False, **kw)
    try:
        c.sock = ctx.wrap_socket(c.sock, server_hostname=server_hostname)
        c.greeting = c.reply()
    except BaseException:
        c.close()
        raise
    return c


def ehlo_keywords(r):
    return [line.split(" ", 1)[0].split("=", 1)[0] for line in r.lines[1:]]


def client_hello():
    """The bytes of a real TLS ClientHello, made in memory by Python's ssl."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_side=False, server_hostname=HOSTNAME)
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    hello = outgoing.read()
    assert hello[:1] == b"\x16" and len(hello) > 100, hello[:20]
    return hello


def disconnect_line(m, client_re=LOCAL_CLIENT_RE, count=1):
    return m.wait_log(r"moat/smtpd\[\d+\]: disconnect from %s (.*)$" % client_re, count=count)[-1].group(1)


# ------------------------------------------------------------ the daemon

SHARED_MAIN = {
    "smtpd_tls_security_level": "may",
    "smtpd_tls_loglevel": "1",
    "smtpd_tls_received_header": "yes",
    "smtpd_helo_required": "yes",
}

PORTS = ("none", "encrypt", "legacy", "wrapper", "inject", "proxywrap")


def shared_setup(m):
    m.pki = Pki(os.path.join(m.dir, "pki"))
    m.cert = m.pki.issue(HOSTNAME)
    m.main["smtpd_tls_cert_file"] = m.cert.cert
    m.main["smtpd_tls_key_file"] = m.cert.key
    m.ports = {name: m.alloc_port() for name in PORTS}
    svc = "127.0.0.1:%d inet n - n - - smtpd"
    m.master_extra += [
        svc % m.ports["none"], "  -o smtpd_tls_security_level=none",
        svc % m.ports["encrypt"], "  -o smtpd_tls_security_level=encrypt",
        # Postfix's obsolete switches, read when the level is empty.
        svc % m.ports["legacy"], "  -o smtpd_tls_security_level=", "  -o smtpd_use_tls=yes",
        "  -o smtpd_enforce_tls=yes",
        svc % m.ports["wrapper"], "  -o smtpd_tls_wrappermode=yes", "  -o smtpd_starttls_timeout=2s",
        # Without the pipelining guard, the injected command reaches the
        # handshake and must be thrown away there.
        svc % m.ports["inject"], "  -o smtpd_forbid_unauth_pipelining=no",
        "  -o smtpd_starttls_timeout=2s",
        # Implicit TLS behind HAProxy: the PROXY header, then the handshake.
        svc % m.ports["proxywrap"], "  -o smtpd_tls_wrappermode=yes",
        "  -o smtpd_upstream_proxy_protocol=haproxy",
    ]


@pytest.fixture(scope="module")
def tm(shared_moat):
    for port in shared_moat.ports.values():
        shared_moat.wait_listening(port=port)
    return shared_moat


@pytest.fixture(scope="module")
def pki(tm):
    return tm.pki


@pytest.fixture(scope="module")
def ctx(pki):
    return client_context(pki)


@pytest.fixture(scope="module")
def client_certs(pki):
    """alice and bob from the CA (ECDSA: cheap), mallory self-signed."""
    return {"alice": pki.issue("alice", client=True, ec=True),
            "bob": pki.issue("bob", client=True, ec=True),
            "mallory": pki.self_signed("mallory", ec=True)}


# ------------------------------------------------------------ STARTTLS

def test_ehlo_offers_starttls_until_tls_is_active(tm, ctx):
    with tm.connect() as c:
        assert "STARTTLS" in ehlo_keywords(c.ehlo())
        starttls(c, ctx)
        assert c.sock.version() == "TLSv1.3"
        kw = ehlo_keywords(c.ehlo())
        assert "STARTTLS" not in kw, kw
        check(c.cmd("STARTTLS"), 554, "5.5.1", "Error: TLS already active")
        c.quit()


def test_starttls_syntax_and_sequence(tm, ctx):
    with tm.connect() as c:
        c.ehlo()
        check(c.cmd("STARTTLS now"), 501, "5.5.4", "Syntax: STARTTLS")
        c.mail("a@b.test")
        check(c.cmd("STARTTLS"), 503, "5.5.1", "Error: MAIL transaction in progress")
        check(c.cmd("RSET"), 250)
        starttls(c, ctx)          # the session is still good for it
        c.ehlo()
        check(c.cmd("NOOP"), 250)
        c.quit()


def test_no_tls_on_the_service(tm):
    with Client(tm.ports["none"]) as c:
        assert "STARTTLS" not in ehlo_keywords(c.ehlo())
        check(c.cmd("STARTTLS"), 502, "5.5.1")
        c.mail("a@b.test")        # the session goes on in plaintext
        c.quit()


def test_no_certificate_no_starttls(moat_factory):
    """Level may without any certificate: nothing to offer (as Postfix, which
    then runs without TLS); the daemon still starts."""
    m = moat_factory(main={"smtpd_tls_security_level": "may"})
    with m.connect() as c:
        assert "STARTTLS" not in ehlo_keywords(c.ehlo())
        check(c.cmd("STARTTLS"), 502, "5.5.1")
        c.quit()
    m.wait_log(r"warning: .*no server certificate.*STARTTLS is not offered")


def test_handshake_forgets_the_plaintext_session(tm, ctx):
    """RFC 3207 4.2: after TLS the client must say EHLO again (with
    smtpd_helo_required, MAIL first is refused); the disconnect line counts
    the STARTTLS."""
    with tm.connect(source="127.0.0.5") as c:
        c.ehlo("before.tls")
        starttls(c, ctx)
        check(c.cmd("MAIL FROM:<a@b.test>"), 503, "5.5.1", "Error: send HELO/EHLO first")
        c.ehlo("after.tls")
        qid = c.sendmail("a@b.test", ["tls-reset@example.test"], simple_message("reset"))
        c.quit()
    line = disconnect_line(tm, r"\S+\[127\.0\.0\.5\]")
    assert re.search(r"\bstarttls=1\b", line), line
    assert re.search(r"\behlo=2\b", line), line
    assert re.search(r"\bmail=1/2\b", line), line
    mail = tm.wait_mails("tls-reset", 1)[0]
    assert b"Received: from after.tls (" in mail, mail[:600]
    assert b"before.tls" not in mail
    assert qid.encode() in mail


def test_starttls_injection_is_discarded(tm, ctx):
    """CVE-2011-0411: a command pipelined after STARTTLS in plaintext must
    never be answered, neither in plaintext nor inside TLS."""
    with Client(tm.ports["inject"], source="127.0.0.6") as c:
        c.ehlo()
        c.send(b"STARTTLS\r\nRSET\r\n")
        check(c.reply(), 220, "2.0.0", READY)
        assert c.buf == b""
        c.sock = ctx.wrap_socket(c.sock, server_hostname=HOSTNAME)
        # The first reply inside TLS must be HELP's 214, not RSET's 250.
        check(c.cmd("HELP"), 214)
        c.ehlo()
        c.quit()
    tm.wait_log(r"warning: \S+\[127\.0\.0\.6\]: discarding 6 bytes of plaintext pipelined after STARTTLS")
    line = disconnect_line(tm, r"\S+\[127\.0\.0\.6\]")
    assert "rset" not in line, line
    assert re.search(r"\bstarttls=1\b", line), line


def test_starttls_injection_refused_by_the_pipelining_guard(tm):
    """With smtpd_forbid_unauth_pipelining (the default) the same bytes end
    the session before any handshake: STARTTLS must be the last command of
    its group."""
    with Client(tm.port, source="127.0.0.7") as c:
        c.ehlo()
        c.send(b"STARTTLS\r\nRSET\r\n")
        replies = c.replies_until_close()
        assert [r.code for r in replies] == [554], replies
        check(replies[0], 554, "5.5.0", "Error: SMTP protocol synchronization")
    tm.wait_log(r"improper command pipelining after STARTTLS from \S+\[127\.0\.0\.7\]: RSET")


@pytest.mark.parametrize("service", ["encrypt", "legacy"])
def test_encrypt_level_requires_starttls(tm, ctx, service):
    port = tm.ports[service]
    with Client(port) as c:
        assert "STARTTLS" in ehlo_keywords(c.ehlo())
        for line in ("MAIL FROM:<a@b.test>", "RCPT TO:<u@example.test>", "DATA",
                     "VRFY u@example.test", "AUTH PLAIN AGFsaWNlAHNlY3JldA=="):
            check(c.cmd(line), 530, "5.7.0", NOT_YET, what=line)
        check(c.cmd("NOOP"), 250, what="NOOP")
        check(c.cmd("RSET"), 250, what="RSET")
        c.ehlo()
        starttls(c, ctx)
        c.ehlo()
        c.sendmail("a@b.test", ["tls-%s@example.test" % service], simple_message(service))
        c.quit()
    tm.wait_mails("tls-" + service, 1)
    with Client(port) as c:
        c.quit()                  # QUIT works in plaintext too


# ------------------------------------------------------------ implicit TLS

def test_implicit_tls(tm, ctx):
    with tls_client(tm.ports["wrapper"], ctx) as c:
        check(c.greeting, 220)
        assert c.greeting.text == GREETING, c.greeting
        kw = ehlo_keywords(c.ehlo())
        assert "STARTTLS" not in kw, kw
        check(c.cmd("STARTTLS"), 554, "5.5.1", "Error: TLS already active")
        c.sendmail("a@b.test", ["tls-wrapped@example.test"], simple_message("wrapped"))
        c.quit()
    mail = tm.wait_mails("tls-wrapped", 1)[0]
    assert re.search(rb"\n\tby mx\.example\.test \(moat\) with ESMTPS id ", mail), mail[:800]


def _bio_session(port, ctx, header):
    """One implicit-TLS session behind a PROXY header, the header and the
    ClientHello sent in one write (so both arrive together), driven over
    memory BIOs.  Returns the decrypted server bytes up to the close."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(incoming, outgoing, server_hostname=HOSTNAME)
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    sock.sendall(header + outgoing.read())
    got, said = b"", 0
    deadline = time.time() + 10
    while time.time() < deadline:
        data = sock.recv(65536)
        if not data:
            break
        incoming.write(data)
        try:
            tls.do_handshake()
            while True:
                got += tls.read(65536)
        except (ssl.SSLWantReadError, ssl.SSLZeroReturnError):
            pass
        if said == 0 and b"220 " in got:
            tls.write(b"EHLO proxied.test\r\n")
            said = 1
        elif said == 1 and b"\r\n250 " in got:
            tls.write(b"QUIT\r\n")
            said = 2
        pending = outgoing.read()
        if pending:
            sock.sendall(pending)
    sock.close()
    return got


def test_implicit_tls_behind_a_proxy_header(tm, ctx):
    """The ClientHello is already in moat's plaintext buffer when TLS
    starts (TLS then filters over that buffer).  Every session gets its
    greeting, the EHLO reply and the 221 to QUIT: nothing is lost when the
    session closes."""
    for i in range(10):
        got = _bio_session(tm.ports["proxywrap"], ctx,
                           b"PROXY TCP4 192.0.2.%d 127.0.0.1 40000 465\r\n" % (i + 1))
        assert got.startswith(b"220 "), got
        assert b"\r\n250 " in got and got.endswith(b"221 2.0.0 Bye\r\n"), got
    tm.wait_log(r"connect from unknown\[192\.0\.2\.10\]")


def test_implicit_tls_plaintext_client_gets_nothing(tm):
    with Client(tm.ports["wrapper"], source="127.0.0.8", greeting=False) as c:
        c.send(b"EHLO plain.test\r\n")
        assert c.wait_closed(10), "the server kept a plaintext client on the TLS port"
        assert b"220" not in c.buf and b"250" not in c.buf, c.buf
    tm.wait_log(r"SSL_accept error from \S+\[127\.0\.0\.8\]: ")
    tm.wait_log(r"lost connection after CONNECT from \S+\[127\.0\.0\.8\]")
    tm.wait_log(r"disconnect from \S+\[127\.0\.0\.8\]")
    # what OpenSSL refused, as for any failed handshake (not "lost connection":
    # the client is still there, talking plaintext)
    tm.wait_log(r"SSL_accept error from \S+\[127\.0\.0\.8\]: " + OPENSSL_REASON, timeout=2)


# ------------------------------------------------------------ bad handshakes

def test_stalled_handshakes_cost_no_other_session(tm, ctx):
    """Two clients stall on the implicit-TLS port (smtpd_starttls_timeout=2s):
    one sends nothing, one half a ClientHello.  A third client does a whole
    TLS transaction meanwhile; the stalled ones are logged and cut."""
    hello = client_hello()
    silent = Client(tm.ports["wrapper"], source="127.0.0.9", greeting=False)
    half = Client(tm.ports["wrapper"], source="127.0.0.10", greeting=False)
    try:
        half.send(hello[:len(hello) // 2])
        with tm.connect() as c:
            c.ehlo()
            starttls(c, ctx)
            c.ehlo()
            c.sendmail("a@b.test", ["tls-meanwhile@example.test"], simple_message("meanwhile"))
            c.quit()
        with tls_client(tm.ports["wrapper"], ctx) as c:
            c.ehlo()
            c.quit()
        assert silent.wait_closed(15), "a silent TLS client was never cut"
        assert half.wait_closed(15), "a half handshake was never cut"
        assert silent.buf == b"", silent.buf
    finally:
        silent.close()
        half.close()
    tm.wait_mails("tls-meanwhile", 1)
    for addr in ("127.0.0.9", "127.0.0.10"):
        tm.wait_log(r"SSL_accept error from \S+\[%s\]: timeout$" % re.escape(addr))
        tm.wait_log(r"disconnect from \S+\[%s\]" % re.escape(addr))


def test_garbage_instead_of_a_client_hello(tm):
    with Client(tm.ports["inject"], source="127.0.0.11") as c:
        c.ehlo()
        check(c.cmd("STARTTLS"), 220, "2.0.0", READY)
        c.send(b"GET / HTTP/1.0\r\nHost: mx.example.test\r\n\r\n")
        assert c.wait_closed(10), "the server kept a client that sent garbage for a ClientHello"
        assert not re.search(rb"^[245]\d\d[ -]", c.buf, re.M), c.buf   # no SMTP reply
    tm.wait_log(r"SSL_accept error from \S+\[127\.0\.0\.11\]: ")
    tm.wait_log(r"lost connection after STARTTLS from \S+\[127\.0\.0\.11\]")
    tm.wait_log(r"disconnect from \S+\[127\.0\.0\.11\]")
    # and the daemon is fine
    with tm.connect() as c:
        c.ehlo()
        c.quit()
    # the reason is OpenSSL's (a bad record), not a lost connection
    tm.wait_log(r"SSL_accept error from \S+\[127\.0\.0\.11\]: " + OPENSSL_REASON, timeout=2)


# ------------------------------------------------------------ what is recorded

def test_received_header_and_log_summary(tm, ctx):
    with tm.connect(source="127.0.0.12") as c:
        c.ehlo()
        starttls(c, ctx)
        cipher = c.sock.cipher()[0]
        c.ehlo("tls.client.test")
        c.sendmail("a@b.test", ["tls-received@example.test"], simple_message("received"))
        c.quit()
    mail = tm.wait_mails("tls-received", 1)[0]
    head = mail.split(b"\n\n", 1)[0].decode()
    rcvd = re.search(r"^Received: from tls\.client\.test .*?(?=^\S)", head + "\nX:", re.M | re.S)
    assert rcvd, head
    rcvd = rcvd.group(0)
    assert "\n\t(using TLSv1.3 with cipher %s (" % cipher in rcvd, rcvd
    assert "(No client certificate requested)" in rcvd, rcvd
    assert re.search(r"\n\tby mx\.example\.test \(moat\) with ESMTPS id ", rcvd), rcvd
    tm.wait_log(r"moat/smtpd\[\d+\]: Anonymous TLS connection established from \S+\[127\.0\.0\.12\]: "
                r"TLSv1\.3 with cipher %s \(\d+/\d+ bits\)" % re.escape(cipher))


def test_plaintext_received_header_has_no_tls(tm):
    with tm.connect() as c:
        c.ehlo()
        c.sendmail("a@b.test", ["tls-plain@example.test"], simple_message("plain"))
        c.quit()
    mail = tm.wait_mails("tls-plain", 1)[0]
    assert b"(using TLS" not in mail
    assert re.search(rb"\n\tby mx\.example\.test \(moat\) with ESMTP id ", mail), mail[:800]


def _read_until(proc, pattern, timeout=20.0):
    """Read proc.stdout until a line matches pattern; the text read."""
    rx = re.compile(pattern, re.M)
    out = b""
    deadline = time.monotonic() + timeout
    fd = proc.stdout.fileno()
    while not rx.search(out.decode("utf-8", "replace")):
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError("s_client: no /%s/ in %r" % (pattern, out))
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            chunk = os.read(fd, 65536)
            if not chunk:
                raise AssertionError("s_client ended before /%s/: %r" % (pattern, out))
            out += chunk
    return out.decode("utf-8", "replace")


def test_openssl_s_client_transaction(tm, pki):
    """`openssl s_client -starttls smtp` does the EHLO and STARTTLS; the
    test types the rest, one command group at a time (moat refuses
    commands pipelined without PIPELINING's rules)."""
    cmd = [OPENSSL, "s_client", "-starttls", "smtp", "-connect", "127.0.0.1:%d" % tm.port,
           "-quiet", "-crlf", "-nocommands", "-CAfile", pki.ca_file, "-verify_return_error",
           "-verify_hostname", HOSTNAME]
    p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        def say(text, expect):
            p.stdin.write(text.encode())
            p.stdin.flush()
            return _read_until(p, expect)
        say("EHLO s-client.test\n", r"^250 ")
        say("MAIL FROM:<a@b.test>\n", r"^250 2\.1\.0 Ok")
        say("RCPT TO:<tls-sclient@example.test>\n", r"^250 2\.1\.5 Ok")
        say("DATA\n", r"^354 ")
        body = simple_message("s_client").replace("\r\n", "\n")
        queued = say(body + ".\n", r"^250 2\.0\.0 Ok: queued as [0-9A-F]+")
        say("QUIT\n", r"^221 2\.0\.0 Bye")
        p.stdin.close()
        rc = p.wait(20)
        err = p.stderr.read().decode("utf-8", "replace")
        assert rc == 0, err
        assert "verify return:1" in err, err
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(10)
    qid = re.search(r"queued as ([0-9A-F]+)", queued).group(1)
    mail = tm.wait_mails("tls-sclient", 1)[0]
    assert re.search(rb"with ESMTPS id %s" % qid.encode(), mail), mail[:800]


# ------------------------------------------------------------ client certificates

def _ccert_moat(moat_factory, pki, restrictions, files=None):
    """A daemon that asks for client certificates and relays only for the
    restrictions given ("{dir}" in them: the daemon's directory)."""
    cert = pki.issue(HOSTNAME, ec=True)
    m = moat_factory(start=False, files=files, main={
        "mynetworks": "192.0.2.0/24",      # 127.0.0.1 relays only through a certificate
        "smtpd_tls_security_level": "may",
        "smtpd_tls_cert_file": cert.cert,
        "smtpd_tls_key_file": cert.key,
        "smtpd_tls_ask_ccert": "yes",
        "smtpd_tls_CAfile": pki.ca_file,
        "smtpd_tls_loglevel": "1",
    })
    restrictions = restrictions.format(dir=m.dir)
    m.main["smtpd_relay_restrictions"] = restrictions + ", reject_unauth_destination"
    m.main["smtpd_recipient_restrictions"] = restrictions + ", reject"
    m.start()
    return m


def _relay_reply(m, ctx, source):
    with m.connect(source=source) as c:
        c.ehlo()
        starttls(c, ctx)
        c.ehlo()
        c.mail("a@b.test")
        r = c.cmd("RCPT TO:<u@far.test>")
        c.quit()
    return r


def test_permit_tls_all_clientcerts(moat_factory, pki, client_certs):
    m = _ccert_moat(moat_factory, pki, "permit_tls_all_clientcerts")
    check(_relay_reply(m, client_context(pki, client_certs["alice"]), "127.0.0.21"), 250, "2.1.5")
    m.wait_log(r"Trusted TLS connection established from \S+\[127\.0\.0\.21\]: TLSv1\.3 with cipher ")
    check(_relay_reply(m, client_context(pki), "127.0.0.22"), 554, "5.7.1")
    m.wait_log(r"Anonymous TLS connection established from \S+\[127\.0\.0\.22\]")
    # a certificate that does not chain to smtpd_tls_CAfile is no pass
    check(_relay_reply(m, client_context(pki, client_certs["mallory"]), "127.0.0.23"), 554, "5.7.1")
    m.wait_log(r"Untrusted TLS connection established from \S+\[127\.0\.0\.23\]")


def test_check_ccert_access_fingerprint(moat_factory, pki, client_certs):
    fp = Pki.fingerprint(client_certs["alice"].cert, "sha256")
    m = _ccert_moat(moat_factory, pki, "check_ccert_access texthash:{dir}/ccerts",
                    files={"ccerts": "%s OK\n" % fp})
    check(_relay_reply(m, client_context(pki, client_certs["alice"]), "127.0.0.24"), 250, "2.1.5")
    check(_relay_reply(m, client_context(pki, client_certs["bob"]), "127.0.0.25"), 554, "5.7.1")
    check(_relay_reply(m, client_context(pki), "127.0.0.26"), 554, "5.7.1")


# ------------------------------------------------------------ reload

def _served_cert(port, pki):
    """The certificate (DER) a new STARTTLS session is shown."""
    with Client(port) as c:
        c.ehlo()
        starttls(c, client_context(pki))
        der = c.sock.getpeercert(binary_form=True)
        c.quit()
        return der


def _der(path):
    with open(path) as f:
        return ssl.PEM_cert_to_DER_cert(f.read())


def test_sighup_rereads_certificates(moat_factory, pki):
    first = pki.issue(HOSTNAME, ec=True)
    second = pki.issue("mx2.example.test", ec=True, san=[HOSTNAME])
    m = moat_factory(start=False, main={"smtpd_tls_security_level": "may"})
    os.makedirs(m.dir, exist_ok=True)
    cert, key = m.path("server.pem"), m.path("server.key")
    shutil.copy(first.cert, cert)
    shutil.copy(first.key, key)
    m.main.update(smtpd_tls_cert_file=cert, smtpd_tls_key_file=key)
    m.start()
    assert _served_cert(m.port, pki) == _der(first.cert)
    # An open session keeps its TLS across the reload.
    old = m.connect()
    try:
        old.ehlo()
        starttls(old, client_context(pki))
        old.ehlo()
        shutil.copy(second.cert, cert)
        shutil.copy(second.key, key)
        m.reload()
        wait_for(lambda: _served_cert(m.port, pki) == _der(second.cert), timeout=10, interval=0.2,
                 what="the new certificate")
        old.sendmail("a@b.test", ["tls-reload@example.test"], simple_message("across reload"))
        old.quit()
    finally:
        old.close()
    m.wait_mails("tls-reload", 1)
