"""moat's resolver (src/dns/) against the real DNS test world, through
`moat dns` (docs/dns.md, "The resolver").

The binary is $MOAT_BIN (default build/asan/moat, so every run is also a
leak check: LeakSanitizer reports at exit, and run() fails on any
sanitizer line).  The DNS server is tests/proto/dnsworld.py's unbound
(tests/dns/README.md lists the names): the shared `dns_world` for tests
that only read, a private one for the test that pauses it.

Output contract: one line per query, in the order given,
    NAME TYPE STATUS ANSWER (Nms|cache)
and with --stats a last line
    stats: lookups=N cache_hits=N coalesced=N queries=N timeouts=N tempfails=N in_flight=N cached=N
Exit status 0 when every query was answered (OK/NODATA/NXDOMAIN), 1 when
one failed temporarily, 2 on a usage or configuration error.
"""
import os
import re
import subprocess
import time

import pytest

from moatlib import SANITIZER_MARKERS, moat_bin, wait_for

MOAT = moat_bin()

LINE_RE = re.compile(r"^(?P<name>\S+) (?P<type>[A-Z]+) (?P<status>OK|NODATA|NXDOMAIN|TEMPFAIL) "
                     r"(?P<answer>.*) \((?P<how>\d+ms|cache)\)$")


def check_stderr(err):
    for marker in SANITIZER_MARKERS:
        assert marker not in err, err


def run(*args, timeout=60):
    r = subprocess.run([MOAT, "dns", *args], capture_output=True, text=True, timeout=timeout)
    check_stderr(r.stderr)
    return r


def parse(stdout):
    """(lines as dicts, stats dict or None)."""
    lines, stats = [], None
    for raw in stdout.splitlines():
        if raw.startswith("stats: "):
            stats = {k: int(v) for k, v in (kv.split("=") for kv in raw[7:].split())}
            continue
        m = LINE_RE.match(raw)
        assert m, "unexpected output line %r in:\n%s" % (raw, stdout)
        lines.append(m.groupdict())
    return lines, stats


def resolve(world, qtype, *names, extra=()):
    r = run("--forwarders", world.forwarders, "--stats", *extra, qtype, *names)
    lines, stats = parse(r.stdout)
    return r, lines, stats


def answers(lines):
    return [(l["name"], l["status"], l["answer"]) for l in lines]


# ------------------------------------------------------------ every type

def test_a_records(dns_world):
    r, lines, _ = resolve(dns_world, "A", "listed.client.test", "Good.Client.TEST.",
                          "2.0.0.127.zen.dnsbl.test", "q7.dead.dnsbl.test")
    assert r.returncode == 0, r.stdout + r.stderr
    assert answers(lines) == [
        ("listed.client.test", "OK", "127.0.0.2"),
        ("good.client.test", "OK", "127.0.0.10"),
        ("2.0.0.127.zen.dnsbl.test", "OK", "127.0.0.2 127.0.0.4"),
        ("q7.dead.dnsbl.test", "OK", "127.0.0.2"),
    ]
    assert all(l["type"] == "A" for l in lines)


def test_aaaa(dns_world):
    _, lines, _ = resolve(dns_world, "AAAA", "aaaaonly.test", "aonly.test")
    assert answers(lines) == [("aaaaonly.test", "OK", "2001:db8::23"),
                              ("aonly.test", "NODATA", "-")]


def test_mx_sorted_and_null_mx(dns_world):
    r, lines, _ = resolve(dns_world, "MX", "hasmx.test", "nullmx.test", "spammer.test",
                          "badmx.test", "aonly.test")
    assert r.returncode == 0
    assert answers(lines) == [
        ("hasmx.test", "OK", "10 mx1.hasmx.test, 20 mx2.hasmx.test"),
        ("nullmx.test", "OK", "0 ."),
        ("spammer.test", "OK", "10 mx1.hasmx.test"),
        ("badmx.test", "OK", "10 mx.evil.test"),
        ("aonly.test", "NODATA", "-"),
    ]


def test_txt(dns_world):
    _, lines, _ = resolve(dns_world, "TXT", "2.0.0.127.zen.dnsbl.test", "3.0.0.127.bl.dnsbl.test",
                          "spammer.test.rhsbl.test", "aonly.test")
    assert answers(lines) == [
        ("2.0.0.127.zen.dnsbl.test", "OK", '"Listed in zen, see https://zen.dnsbl.test/q/127.0.0.2"'),
        ("3.0.0.127.bl.dnsbl.test", "OK", '"bl lists 127.0.0.3"'),
        ("spammer.test.rhsbl.test", "OK", '"spammer.test is a spam domain"'),
        ("aonly.test", "NODATA", "-"),
    ]


def test_ptr(dns_world):
    # 127.in-addr.arpa must go to the forwarder, not libunbound's built-in
    # local zone (which would say NXDOMAIN for all but 127.0.0.1).
    six = "1." + "0." * 31 + "ip6.arpa"
    _, lines, _ = resolve(dns_world, "PTR", "2.0.0.127.in-addr.arpa", "11.0.0.127.in-addr.arpa",
                          "12.0.0.127.in-addr.arpa", "1.0.0.127.in-addr.arpa", six)
    assert answers(lines) == [
        ("2.0.0.127.in-addr.arpa", "OK", "listed.client.test"),
        ("11.0.0.127.in-addr.arpa", "OK", "liar.client.test"),
        ("12.0.0.127.in-addr.arpa", "NXDOMAIN", "-"),
        ("1.0.0.127.in-addr.arpa", "OK", "localhost"),
        (six, "OK", "localhost"),
    ]


def test_ns(dns_world):
    _, lines, _ = resolve(dns_world, "NS", "hasmx.test", "badns.test", "aonly.test")
    assert answers(lines) == [("hasmx.test", "OK", "ns1.hasmx.test"),
                              ("badns.test", "OK", "ns.evil.test"),
                              ("aonly.test", "NODATA", "-")]


def test_nxdomain_and_nodata(dns_world):
    r, lines, stats = resolve(dns_world, "A", "nxdomain.test", "deep.under.nxdomain.test",
                              "nxhost.test", "nothing.test", "aaaaonly.test")
    assert r.returncode == 0, "NXDOMAIN and NODATA are answers, not failures"
    assert [(l["name"], l["status"]) for l in lines] == [
        ("nxdomain.test", "NXDOMAIN"), ("deep.under.nxdomain.test", "NXDOMAIN"),
        ("nxhost.test", "NXDOMAIN"), ("nothing.test", "NODATA"), ("aaaaonly.test", "NODATA")]
    assert stats["queries"] == 5


def test_impossible_names_are_not_asked(dns_world):
    long_label = "a" * 64 + ".test"
    r, lines, stats = resolve(dns_world, "A", "a..b.test", long_label, "sp ace.test")
    assert [l["status"] for l in lines] == ["NXDOMAIN"] * 3
    assert lines[2]["name"] == "sp\\032ace.test"   # echoed as one word
    # an empty label and a 64-octet label are never sent; a space is an
    # octet like others (an SPF macro can make one): sent escaped, and the
    # world has no such name
    assert stats["queries"] == 1
    assert stats["lookups"] == 3


# ------------------------------------------------------------- failures

def test_timeout_is_a_tempfail(dns_world):
    r, lines, stats = resolve(dns_world, "A", "timeout.test", "aonly.test", extra=("--timeout", "1"))
    assert r.returncode == 1
    assert lines[0]["name"] == "timeout.test"
    assert lines[0]["status"] == "TEMPFAIL"
    assert lines[0]["answer"] == "timeout after 1 s"
    assert lines[1]["status"] == "OK", "one name timing out must not hold up the others"
    assert stats["timeouts"] == 1 and stats["tempfails"] == 1


def test_timeout_for_ptr_and_fractional_timeout(dns_world):
    r, lines, _ = resolve(dns_world, "PTR", "13.0.0.127.in-addr.arpa", extra=("--timeout", "0.5"))
    assert r.returncode == 1
    assert answers(lines) == [("13.0.0.127.in-addr.arpa", "TEMPFAIL", "timeout after 0.5 s")]


def test_servfail_is_a_tempfail_and_never_cached(dns_world):
    r, lines, stats = resolve(dns_world, "A", "servfail.test", "x.servfail.test",
                              extra=("--repeat", "2"))
    assert r.returncode == 1
    assert [(l["status"], l["answer"]) for l in lines] == [("TEMPFAIL", "SERVFAIL")] * 4
    assert all(l["how"] != "cache" for l in lines)
    assert stats["cache_hits"] == 0
    assert stats["queries"] == 4
    _, lines, _ = resolve(dns_world, "PTR", "15.0.0.127.in-addr.arpa")
    assert answers(lines) == [("15.0.0.127.in-addr.arpa", "TEMPFAIL", "SERVFAIL")]


# --------------------------------------------------- coalescing and cache

def test_identical_queries_are_coalesced(dns_world):
    r, lines, stats = resolve(dns_world, "MX", "hasmx.test", "HASMX.test", "hasmx.test.",
                              "hasmx.test", "spammer.test")
    assert [l["answer"] for l in lines[:4]] == ["10 mx1.hasmx.test, 20 mx2.hasmx.test"] * 4
    assert stats["lookups"] == 5
    assert stats["coalesced"] == 3
    assert stats["queries"] == 2
    # A and MX of one name are different questions
    _, _, stats = resolve(dns_world, "A", "hasmx.test", "mx1.hasmx.test", "mx1.hasmx.test")
    assert stats["queries"] == 2 and stats["coalesced"] == 1


def test_cache_hits_positive_and_negative(dns_world):
    r, lines, stats = resolve(dns_world, "A", "aonly.test", "nxdomain.test", "nothing.test",
                              extra=("--repeat", "3"))
    assert len(lines) == 9
    assert [l["how"] == "cache" for l in lines] == [False] * 3 + [True] * 6
    assert [l["status"] for l in lines[6:]] == ["OK", "NXDOMAIN", "NODATA"]
    assert stats["queries"] == 3
    assert stats["cache_hits"] == 6
    assert stats["cached"] == 3


def test_ttl_expiry(dns_world):
    # ttl1.test has a TTL of one second; aonly.test 300.
    r, lines, stats = resolve(dns_world, "A", "ttl1.test", "aonly.test",
                              extra=("--repeat", "2", "--interval", "2.5"))
    assert [(l["name"], l["how"] == "cache") for l in lines] == [
        ("ttl1.test", False), ("aonly.test", False), ("ttl1.test", False), ("aonly.test", True)]
    assert lines[2]["answer"] == "127.0.0.40"
    assert stats["queries"] == 3


def test_cache_size_bound(dns_world):
    names = ["n%d.nxdomain.test" % i for i in range(150)]
    r, lines, stats = resolve(dns_world, "A", *names, extra=("--cache-size", "100"))
    assert [l["status"] for l in lines] == ["NXDOMAIN"] * 150
    assert stats["cached"] == 100


# ------------------------------------------------------------ configuration

def write_conf(tmp_path, **params):
    d = tmp_path / "conf"
    d.mkdir()
    base = {"myhostname": "mx.example.test", "mydestination": "example.test",
            "queue_directory": str(tmp_path / "queue"), "data_directory": str(tmp_path / "data")}
    base.update(params)
    (d / "main.cf").write_text("".join("%s = %s\n" % kv for kv in base.items()))
    (d / "master.cf").write_text("127.0.0.1:2525 inet n - n - - smtpd\n")
    return str(d)


def test_parameters_from_main_cf(dns_world, tmp_path):
    conf = write_conf(tmp_path, dns_forwarders="[127.0.0.1]:%d" % dns_world.port,
                      dns_timeout="1s", dns_cache_size="100")
    r = run("-c", conf, "--stats", "A", "timeout.test", "aonly.test")
    lines, stats = parse(r.stdout)
    assert answers(lines) == [("timeout.test", "TEMPFAIL", "timeout after 1 s"),
                              ("aonly.test", "OK", "127.0.0.23")]
    # the command line wins over main.cf
    r = run("-c", conf, "--forwarders", "127.0.0.1@%d" % dns_world.port, "--timeout", "2",
            "A", "timeout.test")
    assert parse(r.stdout)[0][0]["answer"] == "timeout after 2 s"


def test_bad_forwarders_are_refused(tmp_path):
    for bad in ("dns.example", "127.0.0.1@0", "[::1", "127.0.0.1@53x"):
        r = run("--forwarders", bad, "A", "aonly.test")
        assert r.returncode == 2, bad
        assert "bad forwarder" in r.stderr, r.stderr
    conf = write_conf(tmp_path, dns_forwarders="resolver.example.test")
    r = run("-c", conf, "A", "aonly.test")
    assert r.returncode == 2
    assert "bad forwarder" in r.stderr


def test_usage_errors():
    assert run("CNAME", "x.test").returncode == 2
    assert run("A").returncode == 2
    assert run("--bench").returncode == 2        # needs --names or --prefix
    r = run("--help")
    assert r.returncode == 0 and "NAME TYPE STATUS ANSWER" in r.stdout


# ------------------------------------------ one long-lived resolver (--stdin)

class Resolver:
    """`moat dns --stdin`: one resolver, fed line by line."""

    def __init__(self, world, *extra):
        self.proc = subprocess.Popen([MOAT, "dns", "--forwarders", world.forwarders, *extra,
                                      "--stdin"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, bufsize=1)

    def ask(self, line):
        """Send "TYPE NAME..." and return its parsed result lines."""
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        n = len(line.split()) - 1
        out = [self.proc.stdout.readline() for _ in range(n)]
        assert all(out), "moat dns ended early: %r" % out
        return parse("".join(out))[0]

    def stats(self):
        self.proc.stdin.write("stats\n")
        self.proc.stdin.flush()
        return parse(self.proc.stdout.readline())[1]

    def close(self):
        self.proc.stdin.close()
        rest = self.proc.stdout.read()
        err = self.proc.stderr.read()
        rc = self.proc.wait(timeout=60)
        check_stderr(err)
        return rc, rest, err


def test_stdin_one_resolver(dns_world):
    r = Resolver(dns_world, "--timeout", "1", "--stats")
    try:
        first = r.ask("MX hasmx.test")
        assert first[0]["how"] != "cache"
        again = r.ask("MX hasmx.test nullmx.test")
        assert [l["how"] == "cache" for l in again] == [True, False]
        assert r.ask("TXT 2.0.0.127.bl.dnsbl.test")[0]["answer"] == '"bl says 127.0.0.2 is bad"'
        s = r.stats()
        assert s["lookups"] == 4 and s["cache_hits"] == 1 and s["queries"] == 3
        r.proc.stdin.write("BOGUS x.test\n")
        r.proc.stdin.flush()
        assert r.proc.stdout.readline().startswith("error: ")
    finally:
        rc, rest, _ = r.close()
    assert rest.startswith("stats: ")   # --stats at the end of input
    assert rc == 1                      # the bad line


def test_forwarder_paused_and_resumed(dns_world_private):
    """A forwarder that stops answering (SIGSTOP) for long enough that
    libunbound gives up on it is used again soon after it comes back
    (SIGCONT): infra-keep-probing and a short infra-host-ttl."""
    w = dns_world_private
    r = Resolver(w, "--timeout", "1")
    try:
        assert r.ask("A aonly.test")[0]["status"] == "OK"
        w.pause()
        failed = []
        t0 = time.monotonic()
        n = 0
        # Long enough that libunbound marks the server down (it then
        # answers SERVFAIL at once instead of waiting).
        while time.monotonic() - t0 < 9:
            n += 1
            line = r.ask("A p%d.nxdomain.test" % n)[0]
            failed.append((line["status"], line["answer"]))
            if line["answer"] == "SERVFAIL":
                time.sleep(0.1)
        assert all(s == "TEMPFAIL" for s, _ in failed), failed
        assert ("TEMPFAIL", "timeout after 1 s") in failed
        w.resume()

        def recovered():
            nonlocal n
            n += 1
            line = r.ask("A r%d.nxdomain.test" % n)[0]
            return line["status"] == "NXDOMAIN"
        # Functional bound, not a benchmark: "used again within seconds",
        # where libunbound's defaults would wait up to 15 minutes.
        wait_for(recovered, timeout=20, interval=0.2, what="the resumed forwarder to be used again")
        # and the cache still works after the outage
        assert r.ask("A aonly.test")[0]["how"] == "cache"
    finally:
        if w.paused:
            w.resume()
        r.close()


def test_exit_with_queries_in_flight_is_clean(dns_world):
    """Waiters timed out, libunbound still waits for the server: the
    resolver is freed with those queries outstanding (LeakSanitizer
    checks at exit), and the late answers never reach a freed waiter."""
    names = ["t%d.timeout.test" % i for i in range(20)]
    r, lines, stats = resolve(dns_world, "TXT", *names, extra=("--timeout", "0.3"))
    assert [l["status"] for l in lines] == ["TEMPFAIL"] * 20
    assert stats["timeouts"] == 20
    assert stats["in_flight"] == 0


# ---------------------------------------------------------------- --bench

def test_bench_runs(dns_world):
    r = run("--bench", "--forwarders", dns_world.forwarders, "--prefix", "dead.dnsbl.test",
            "--count", "300", "--concurrency", "20")
    assert r.returncode == 0, r.stderr
    out = r.stdout
    rows = {}
    for line in out.splitlines():
        m = re.match(r"^  (\S.*?)\s{2,}([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)$", line)
        if m:
            rows[m.group(1)] = [int(x) for x in m.groups()[4:]]
    # ok, neg, tempfail, cached per phase
    assert rows["cold cache (upstream)"] == [300, 0, 0, 0], out
    assert rows["moat cache (warm)"] == [300, 0, 0, 300], out
    assert rows["libunbound cache only"] == [300, 0, 0, 0], out
