"""The RFC 7208 test suite, run against `moat spf` through a real DNS server.

Data: ../shared/testdata/spf/rfc7208-tests.yml (the openspf/pyspf suite,
16 scenarios, 203 tests; FORMAT.md beside it describes the format and the
driver conventions), found through $MOAT_SHARED like the other tests that
read shared data.  One pytest case per test, id "scenario/test" (the
scenario's description in lower case, words joined by "-"), e.g.
`pytest -rA tests/proto/test_spf_suite.py -k "macro-expansion-rules/"`.

Each case serves its scenario's zone data from tests/proto/spfdns.py (a
DNS responder in this process, on a free 127.0.0.1 port, UDP and TCP) and
runs a fresh `moat spf -c CONF --ip HOST --sender MAILFROM --helo HELO
--default-explanation DEFAULT`, whose configuration points moat's resolver
at that responder (dns_forwarders); being a new process each time, moat's
cache and libunbound's start empty.  The case passes when the first
output line `result: R` names one of the acceptable results (a warning
when it is not the preferred, first one) and, when the suite gives one,
the `explanation: TEXT` line matches exactly.  A failure message lists
what moat printed and every question the responder saw.

The first tests check the responder itself through moat's resolver
(`moat dns`), so they run even while `moat spf` does not exist yet.
"""

import os
import re
import socket
import struct
import subprocess
import warnings
from pathlib import Path

import pytest

import dnsworld
from moatlib import SANITIZER_MARKERS, moat_bin
from spfdns import SpfDns

MOAT = moat_bin()
SHARED = Path(os.environ.get("MOAT_SHARED", str(Path(__file__).resolve().parents[3] / "shared")))
SUITE = SHARED / "testdata" / "spf" / "rfc7208-tests.yml"

# Small, so that the six tests that wait for a TIMEOUT name cost little
# (1 s is dns_timeout's minimum in main.cf, src/config/params.def), with
# room for a slow machine: a real answer arrives in milliseconds.
DNS_TIMEOUT = "2s"
DEFAULT_EXPLANATION = "DEFAULT"

# Tests that cannot pass, each with the reason; docs/spf.md
# ("Conformance") lists the same.  Anything else that fails is moat's bug.
XFAIL = {
    "macro-expansion-rules/v-macro-ip6":
        "the suite expects %{ir} of an IPv6 client in upper-case hex (pyspf's output); moat writes "
        "lower case, as RFC 7208 section 7.4's own example does; the result (fail) matches, only the "
        "explanation's letter case differs, and DNS ignores case",
}


class SpfPreferenceWarning(UserWarning):
    """moat gave an acceptable result that is not the suite's preferred one."""


def _slug(text):
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


class Case:
    def __init__(self, scenario, name, data, zonedata):
        self.id = "%s/%s" % (_slug(scenario), name)
        self.name = name
        self.data = data
        self.zonedata = zonedata
        res = data["result"]
        self.results = list(res) if isinstance(res, list) else [res]
        self.explanation = data.get("explanation")


def _load():
    """(cases, problem): every test of the suite, or why there are none."""
    try:
        import yaml
    except ImportError:
        return [], "PyYAML missing (Debian's python3-yaml)"
    if not SUITE.exists():
        return [], "SPF test suite not found at %s (set MOAT_SHARED)" % SUITE
    cases = []
    with open(SUITE, "rb") as f:
        for doc in yaml.safe_load_all(f):
            if not doc:
                continue
            for name, data in doc["tests"].items():
                cases.append(Case(doc["description"], name, data, doc.get("zonedata") or {}))
    return cases, None


CASES, LOAD_PROBLEM = _load()


def run(*args, timeout=60):
    r = subprocess.run([MOAT, *args], capture_output=True, text=True, errors="replace",
                       timeout=timeout)
    for marker in SANITIZER_MARKERS:
        assert marker not in r.stderr, r.stderr
    return r


# ------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def spf_dns():
    dns = SpfDns().start()
    yield dns
    dns.stop()
    assert not dns.errors, "spfdns thread errors: %s" % dns.errors


@pytest.fixture(autouse=True)
def _responder_healthy(spf_dns):
    yield
    assert not spf_dns.errors, "spfdns thread errors: %s" % spf_dns.errors


@pytest.fixture(scope="module")
def spf_conf(tmp_path_factory, spf_dns):
    d = tmp_path_factory.mktemp("spfconf")
    (d / "main.cf").write_text(
        "# written by tests/proto/test_spf_suite.py\n"
        "myhostname = receiver.example.test\n"
        "dns_forwarders = %s\n"
        "dns_timeout = %s\n" % (spf_dns.forwarders, DNS_TIMEOUT))
    (d / "master.cf").write_text("127.0.0.1:2525 inet n - n - - smtpd\n")
    return str(d)


@pytest.fixture(scope="module")
def moat_spf_present():
    if not os.access(MOAT, os.X_OK):
        pytest.fail("moat binary %s not found; run `make build/asan/moat`" % MOAT)
    r = run("spf", "--help")
    if 'unknown command "spf"' in r.stderr:
        pytest.skip("this moat binary has no `spf` command yet")


# ------------------------------------------- the responder, through moat dns

def moat_dns(dns, *args):
    """{(name, type): rest of moat dns's line} for TYPE NAME... questions."""
    r = run("dns", "--forwarders", dns.forwarders, "--timeout", "1", *args)
    assert r.returncode in (0, 1), r.stderr
    out = {}
    for line in r.stdout.splitlines():
        name, qtype, rest = line.split(" ", 2)
        out[(name, qtype)] = re.sub(r" \((\d+ms|cache)\)$", "", rest)
    return out


def test_responder_records_and_negative_answers(spf_dns):
    spf_dns.set_zone({
        "Mixed.Example.com": [{"A": "192.0.2.1"}, {"AAAA": "CAFE:BABE::4"},
                              {"MX": [10, "MX.example.com."]}, {"TXT": ["v=spf1 ", "a", " -all"]}],
        "4.3.2.1.in-addr.arpa": [{"PTR": "mixed.example.com"}],
        "alias.example.com": [{"CNAME": "mixed.example.com"}],
    })
    got = moat_dns(spf_dns, "A", "mixed.example.com", "alias.example.com", "nowhere.example.com")
    assert got[("mixed.example.com", "A")] == "OK 192.0.2.1"
    assert got[("alias.example.com", "A")] == "OK 192.0.2.1"           # CNAME followed
    assert got[("nowhere.example.com", "A")] == "NXDOMAIN -"
    got = moat_dns(spf_dns, "AAAA", "mixed.example.com", "4.3.2.1.in-addr.arpa")
    assert got[("mixed.example.com", "AAAA")] == "OK cafe:babe::4"
    assert got[("4.3.2.1.in-addr.arpa", "AAAA")] == "NODATA -"          # name exists
    got = moat_dns(spf_dns, "MX", "mixed.example.com")
    assert got[("mixed.example.com", "MX")] == "OK 10 mx.example.com"
    got = moat_dns(spf_dns, "PTR", "4.3.2.1.in-addr.arpa")
    assert got[("4.3.2.1.in-addr.arpa", "PTR")] == "OK mixed.example.com"
    got = moat_dns(spf_dns, "TXT", "mixed.example.com")
    assert got[("mixed.example.com", "TXT")] == 'OK "v=spf1 a -all"'   # strings joined
    # Names match in any case (moat's resolver asks in lower case, so on
    # the wire); the question comes back as it was asked.
    r = dnsworld.lookup(spf_dns.port, "mIXED.eXAMPLE.COM", "A")
    assert r.rcode == "NOERROR" and [(a.name, a.text) for a in r.answers] == [("mIXED.eXAMPLE.COM", "192.0.2.1")]


def test_responder_spf_records_served_as_txt(spf_dns):
    spf_dns.set_zone({
        "copied.example.net": [{"SPF": "v=spf1 -all"}],
        "both.example.net": [{"TXT": "v=spf1 +all"}, {"SPF": "v=spf1 -all"}],
        "spfonly.example.net": [{"SPF": "v=spf1 -all"}, {"TXT": "NONE"}],
    })
    got = moat_dns(spf_dns, "TXT", "copied.example.net", "both.example.net", "spfonly.example.net")
    assert got[("copied.example.net", "TXT")] == 'OK "v=spf1 -all"'
    assert got[("both.example.net", "TXT")] == 'OK "v=spf1 +all"'
    assert got[("spfonly.example.net", "TXT")] == "NODATA -"
    # and type 99 itself, on the wire
    r = dnsworld.lookup(spf_dns.port, "spfonly.example.net", 99)
    assert r.rcode == "NOERROR" and [a.type for a in r.answers] == ["99"]


def test_responder_timeouts(spf_dns):
    spf_dns.set_zone({
        "txtfirst.example.net": [{"TXT": "v=spf1 -all"}, "TIMEOUT", {"A": "192.0.2.9"}],
        "dead.example.net": ["TIMEOUT"],
    })
    got = moat_dns(spf_dns, "TXT", "txtfirst.example.net", "dead.example.net", "error.example.net")
    assert got[("txtfirst.example.net", "TXT")] == 'OK "v=spf1 -all"'  # a record before TIMEOUT
    assert got[("dead.example.net", "TXT")].startswith("TEMPFAIL timeout")
    assert got[("error.example.net", "TXT")].startswith("TEMPFAIL timeout")   # pyspf's error. names
    got = moat_dns(spf_dns, "A", "txtfirst.example.net")
    assert got[("txtfirst.example.net", "A")].startswith("TEMPFAIL timeout")  # after TIMEOUT
    outcomes = {(q[1], q[2]): q[3] for q in spf_dns.queries()}
    assert outcomes[("dead.example.net", "TXT")] == "timeout"


def _raw_flags(port, name, qtype):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.settimeout(2)
        s.sendto(dnsworld.build_query(name, qtype, 4242), ("127.0.0.1", port))
        msg = s.recv(65535)
    finally:
        s.close()
    _qid, flags, _qd, an, _ns, _ar = struct.unpack("!HHHHHH", msg[:12])
    return flags, an, len(msg)


def test_responder_long_txt_split_and_truncated_to_tcp(spf_dns):
    long_record = "v=spf1 " + " ".join("ip4:192.0.2.%d" % i for i in range(1, 60)) + " -all"
    assert len(long_record) > 512
    spf_dns.set_zone({"long.example.org": [{"TXT": long_record}],
                      "short.example.org": [{"TXT": "v=spf1 -all"}]})
    flags, an, size = _raw_flags(spf_dns.port, "long.example.org", "TXT")
    assert flags & 0x0200 and an == 0 and size <= 512                    # TC over UDP
    flags, an, _ = _raw_flags(spf_dns.port, "short.example.org", "TXT")
    assert not flags & 0x0200 and an == 1
    spf_dns.set_zone({"long.example.org": [{"TXT": long_record}]})
    got = moat_dns(spf_dns, "TXT", "long.example.org")
    assert got[("long.example.org", "TXT")] == 'OK "%s"' % long_record  # 255-octet pieces, joined
    protos = [q[0] for q in spf_dns.queries() if q[1] == "long.example.org"]
    assert "udp" in protos and "tcp" in protos


def test_responder_zone_replaced_without_restart(spf_dns):
    port = spf_dns.port
    spf_dns.set_zone({"swap.example.com": [{"A": "192.0.2.1"}]})
    assert moat_dns(spf_dns, "A", "swap.example.com")[("swap.example.com", "A")] == "OK 192.0.2.1"
    spf_dns.set_zone({"swap.example.com": [{"A": "192.0.2.2"}]})
    assert moat_dns(spf_dns, "A", "swap.example.com")[("swap.example.com", "A")] == "OK 192.0.2.2"
    spf_dns.set_zone({})
    assert moat_dns(spf_dns, "A", "swap.example.com")[("swap.example.com", "A")] == "NXDOMAIN -"
    assert spf_dns.port == port


# ------------------------------------------------------------ the suite

def _params():
    if LOAD_PROBLEM:
        return [pytest.param(None, id="suite-not-loaded")]
    out = []
    for c in CASES:
        marks = [pytest.mark.xfail(reason=XFAIL[c.id], strict=True)] if c.id in XFAIL else []
        out.append(pytest.param(c, id=c.id, marks=marks))
    return out


def test_suite_complete():
    """All 203 tests of the 2014.04 + 2019.08 suite are here, ids unique."""
    if LOAD_PROBLEM:
        pytest.fail(LOAD_PROBLEM)
    ids = [c.id for c in CASES]
    assert len(ids) == 203 and len(set(ids)) == 203
    assert not set(XFAIL) - set(ids), "XFAIL names unknown tests"


@pytest.mark.parametrize("case", _params())
def test_rfc7208(case, spf_dns, spf_conf, moat_spf_present):
    if case is None:
        pytest.fail(LOAD_PROBLEM)
    t = case.data
    spf_dns.set_zone(case.zonedata)
    r = run("spf", "-c", spf_conf, "--ip", str(t["host"]), "--sender", str(t["mailfrom"]),
            "--helo", str(t["helo"]), "--default-explanation", DEFAULT_EXPLANATION)
    lines = r.stdout.splitlines()
    got = lines[0][len("result: "):] if lines and lines[0].startswith("result: ") else None
    expl = [l[len("explanation: "):] for l in lines if l.startswith("explanation: ")]

    def evidence():
        return ("%s (RFC 7208 %s): %s\nexpected %s%s, got %s\nmoat spf exit %d, stdout:\n%s"
                "stderr:\n%s\nDNS questions:\n%s"
                % (case.id, t.get("spec"), " ".join(str(t.get("description", "")).split()),
                   " or ".join(case.results),
                   "" if case.explanation is None else " with explanation %r" % case.explanation,
                   got, r.returncode, r.stdout, r.stderr[-3000:],
                   "\n".join("  %s %s %s: %s" % q for q in spf_dns.queries()) or "  (none)"))

    assert got is not None, "no `result:` line\n" + evidence()
    assert got in case.results, evidence()
    if case.explanation is not None:
        assert expl == [case.explanation], evidence()
    if got != case.results[0]:
        warnings.warn(SpfPreferenceWarning("%s: %s accepted, %s preferred"
                                           % (case.id, got, case.results[0])))
