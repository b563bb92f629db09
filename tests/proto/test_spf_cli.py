"""`moat spf`: one SPF evaluation from the command line (docs/spf.md).

The binary is $MOAT_BIN (default build/asan/moat).  Each test serves its
own zone from a small authoritative DNS responder on UDP 127.0.0.1 (a
thread of this process, written here: A, AAAA, MX, TXT, PTR, SERVFAIL,
and names it never answers) and points moat at it with dns_forwarders,
so the command runs the real resolver, memo and replay loop.

Output contract: "result:", "domain:", "mechanism:" (when a term or
"default" decided), "explanation:" (fail only), "problem:" (temperror and
permerror only), "trace:" lines with --trace, then "Received-SPF:".
Exit 0 for any result, 2 for usage or configuration errors.  The RFC 7208
suite itself runs in test_spf_suite.py.
"""
import ipaddress
import socket
import struct
import subprocess
import threading

import pytest

from moatlib import SANITIZER_MARKERS, moat_bin

MOAT = moat_bin()

TYPES = {"A": 1, "PTR": 12, "MX": 15, "TXT": 16, "AAAA": 28}


def _name(text):
    out = b""
    for label in text.rstrip(".").split("."):
        if label:
            out += bytes([len(label)]) + label.encode("ascii")
    return out + b"\0"


def _rdata(rtype, value):
    if rtype == "A":
        return socket.inet_aton(value)
    if rtype == "AAAA":
        return ipaddress.IPv6Address(value).packed
    if rtype == "MX":
        pref, host = value.split(" ", 1)
        return struct.pack("!H", int(pref)) + _name(host)
    if rtype == "PTR":
        return _name(value)
    raw = value.encode("latin-1")
    out = b""
    while True:
        out += bytes([min(len(raw), 255)]) + raw[:255]
        raw = raw[255:]
        if not raw:
            return out


class Zone:
    """{name: [(TYPE, value)...]}; a name mapped to "SERVFAIL" or "DROP"
    fails that way; any other name is NXDOMAIN."""

    def __init__(self, records):
        self.records = {k.lower(): v for k, v in records.items()}
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.sock.settimeout(0.1)   # so that close() is seen at once
        self.asked = []
        self.stopping = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def close(self):
        self.stopping = True
        self.thread.join(5)
        self.sock.close()

    def _serve(self):
        while not self.stopping:
            try:
                q, peer = self.sock.recvfrom(4096)
            except socket.timeout:
                continue
            except OSError:
                return
            reply = self._answer(q)
            if reply:
                try:
                    self.sock.sendto(reply, peer)
                except OSError:
                    return

    def _answer(self, q):
        qid, flags = struct.unpack("!HH", q[:4])
        off, labels = 12, []
        while q[off]:
            labels.append(q[off + 1:off + 1 + q[off]].decode("latin-1"))
            off += 1 + q[off]
        qtype = struct.unpack("!H", q[off + 1:off + 3])[0]
        question = q[12:off + 5]
        name = ".".join(labels).lower()
        self.asked.append((name, qtype))
        recs = self.records.get(name)
        if recs == "DROP":
            return None
        rcode, answers = 3, []
        if recs == "SERVFAIL":
            rcode = 2
        elif recs is not None:
            rcode = 0
            for rtype, value in recs:
                if TYPES[rtype] == qtype:
                    rd = _rdata(rtype, value)
                    answers.append(b"\xc0\x0c" + struct.pack("!HHIH", qtype, 1, 60, len(rd)) + rd)
        head = struct.pack("!HHHHHH", qid, 0x8480 | (flags & 0x0100) | rcode, 1, len(answers), 0, 0)
        return head + question + b"".join(answers)


ZONE = {
    "pass.spf.test": [("TXT", "v=spf1 include:inc.spf.test -all exp=why.%{d}")],
    "inc.spf.test": [("TXT", "v=spf1 ip4:127.0.0.0/24 ip6:2001:db8::/32 ~all")],
    "why.pass.spf.test": [("TXT", "%{i} is not one of %{d}'s senders")],
    "noexp.spf.test": [("TXT", "v=spf1 mx:mx.spf.test -all")],
    "mx.spf.test": [("MX", "10 mail.spf.test")],
    "mail.spf.test": [("A", "127.0.0.25")],
    "helo.spf.test": [("TXT", "v=spf1 a -all"), ("A", "127.0.0.30")],
    "bad.spf.test": [("TXT", "v=spf1 ip4:127.0.0.1 moo -all")],
    "slow.spf.test": [("TXT", "v=spf1 a:dead.spf.test -all")],
    "dead.spf.test": "DROP",
    "broken.spf.test": "SERVFAIL",
    "plain.spf.test": [("TXT", "just text")],
}


@pytest.fixture
def zone():
    z = Zone(ZONE)
    yield z
    z.close()


@pytest.fixture
def conf(tmp_path, zone):
    d = tmp_path / "conf"
    d.mkdir()
    (d / "main.cf").write_text("myhostname = mx.spf.test\ndns_forwarders = 127.0.0.1@%d\n"
                               "dns_timeout = 1s\n" % zone.port)
    (d / "master.cf").write_text("127.0.0.1:2525 inet n - n - - smtpd\n")
    return str(d)


def spf(conf, *args):
    r = subprocess.run([MOAT, "spf", "-c", conf, *args], capture_output=True, text=True, timeout=60)
    for marker in SANITIZER_MARKERS:
        assert marker not in r.stderr, r.stderr
    return r


def fields(r):
    out = {}
    for line in r.stdout.splitlines():
        key, _, value = line.partition(": ")
        if key != "trace":
            assert key not in out, r.stdout
            out[key] = value
    return out


def test_pass_through_include(conf):
    r = spf(conf, "--ip", "127.0.0.9", "--sender", "user@pass.spf.test", "--helo", "client.example")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [
        "result: pass",
        "domain: pass.spf.test",
        "mechanism: include:inc.spf.test",
        "Received-SPF: pass (mx.spf.test: domain of user@pass.spf.test designates 127.0.0.9 as "
        "permitted sender) client-ip=127.0.0.9; envelope-from=\"user@pass.spf.test\"; "
        "helo=client.example; receiver=mx.spf.test; identity=mailfrom; mechanism=\"include:inc.spf.test\";",
    ]


def test_fail_with_the_domains_explanation(conf):
    r = spf(conf, "--ip", "127.0.1.9", "--sender", "<user@pass.spf.test>", "--helo", "client.example")
    assert r.returncode == 0, r.stderr
    f = fields(r)
    assert f["result"] == "fail"
    assert f["mechanism"] == "-all"
    assert f["explanation"] == "127.0.1.9 is not one of pass.spf.test's senders"
    assert f["Received-SPF"].startswith("fail (mx.spf.test: domain of user@pass.spf.test does not designate")


def test_default_explanation_and_its_override(conf):
    args = ("--ip", "2001:db9::1", "--sender", "a@noexp.spf.test", "--helo", "h.example")
    f = fields(spf(conf, *args))
    assert f["result"] == "fail"
    assert f["explanation"] == ("See https://www.open-spf.org/Why?s=a%40noexp.spf.test"
                                "&i=2.0.0.1.0.d.b.9.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.1"
                                "&ip=2001%3Adb9%3A%3A1&r=mx.spf.test")
    f = fields(spf(conf, *args, "--default-explanation", "DEFAULT"))
    assert f["explanation"] == "DEFAULT"


def test_mx_and_trace(conf, zone):
    r = spf(conf, "--ip", "127.0.0.25", "--sender", "a@noexp.spf.test", "--helo", "h.example", "--trace")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == "result: pass"
    assert lines[-1].startswith("Received-SPF: pass ")
    trace = [l[len("trace: "):] for l in lines if l.startswith("trace: ")]
    assert trace, r.stdout
    assert any(l.startswith("dns: TXT noexp.spf.test -> ") for l in trace), trace
    assert "noexp.spf.test: mx:mx.spf.test -> match: pass" in trace
    assert trace[-1] == "result: pass"
    # the record, the MX and its host: nothing asked twice
    assert sorted(zone.asked) == sorted({("noexp.spf.test", 16), ("mx.spf.test", 15), ("mail.spf.test", 1)})


def test_helo_identity(conf):
    f = fields(spf(conf, "--ip", "127.0.0.30", "--sender", "<>", "--helo", "helo.spf.test"))
    assert (f["result"], f["domain"], f["mechanism"]) == ("pass", "helo.spf.test", "a")
    assert "identity=helo;" in f["Received-SPF"]
    f = fields(spf(conf, "--ip", "127.0.0.31", "--sender", "x@pass.spf.test", "--helo", "helo.spf.test",
                   "--helo-identity"))
    assert (f["result"], f["domain"]) == ("fail", "helo.spf.test")
    assert "explanation" in f


def test_errors_and_none(conf):
    f = fields(spf(conf, "--ip", "127.0.0.1", "--sender", "x@bad.spf.test", "--helo", "h"))
    assert f["result"] == "permerror"
    assert f["problem"] == 'bad.spf.test: term "moo": unknown mechanism'
    assert "mechanism" not in f and "explanation" not in f
    assert 'problem="bad.spf.test: term \\"moo\\": unknown mechanism";' in f["Received-SPF"]

    f = fields(spf(conf, "--ip", "127.0.0.1", "--sender", "x@broken.spf.test", "--helo", "h"))
    assert f["result"] == "temperror"
    assert "SERVFAIL" in f["problem"]

    r = spf(conf, "--ip", "127.0.0.1", "--sender", "x@slow.spf.test", "--helo", "h")
    assert r.returncode == 0
    f = fields(r)
    assert f["result"] == "temperror"
    assert f["problem"].startswith("a:dead.spf.test: DNS A dead.spf.test: timeout")

    for sender in ("x@plain.spf.test", "x@nowhere.spf.test", "x@[127.0.0.1]", "x@localhost"):
        f = fields(spf(conf, "--ip", "127.0.0.1", "--sender", sender, "--helo", "h"))
        assert f["result"] == "none", sender
        assert set(f) == {"result", "domain", "Received-SPF"}, sender


def test_usage_errors(conf, tmp_path):
    for args in ((), ("--sender", "a@b.test"), ("--ip", "1.2.3"), ("--ip", "127.0.0.1", "extra"),
                 ("--ip", "127.0.0.1", "--bogus")):
        r = spf(conf, *args)
        assert r.returncode == 2, args
        assert r.stdout == ""
        assert "usage: moat spf" in r.stderr
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "main.cf").write_text("dns_forwarders = not an address\n")
    r = spf(str(bad), "--ip", "127.0.0.1", "--sender", "a@b.test", "--helo", "h")
    assert r.returncode == 2
    assert "dns_forwarders" in r.stderr
    r = subprocess.run([MOAT, "spf", "--help"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "usage: moat spf" in r.stdout
