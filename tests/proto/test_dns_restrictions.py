"""DNS-based restrictions against the real test DNS server (issue 4).

Every case goes through both doors: a live SMTP session (moatlib.Client
bound to a 127.0.0.x source address, so that the client plays a listed,
unlisted, nameless or lying host of tests/dns/README.md) and `moat check`
on the same configuration and service.  The two doors must give the same
RCPT reply, and that reply is checked against Postfix's (the formats of
smtpd_check.c, the .ref files in shared/testdata/postfix/smtpd/).  Where
moat goes beyond Postfix (a DNS list that fails temporarily defers instead
of being ignored, list health, reject_dnsbl_score) the texts are moat's.

To keep the run short, one daemon carries many services (one master.cf
entry each, its restrictions as -o overrides naming main.cf variables), a
second one carries the cases that need other reply codes in main.cf, and
`moat check` runs while the live session runs, so a case that waits for a
DNS timeout waits once.  Only the failure tests (a server paused mid-run,
an unreachable resolver, the prefetch probe) get daemons and DNS servers
of their own.
"""
import os
import re
import socket
import subprocess
from concurrent.futures import ThreadPoolExecutor

import pytest

from conftest import _LIVE
from dnsworld import DnsWorld
from moatlib import SANITIZER_MARKERS, Client, Moat, check, free_port, moat_bin, wait_for

MOAT = moat_bin()
DNS_TIMEOUT = "2s"

# ------------------------------------------------------------------ tables

RBL_REPLIES = (
    # Keyed by the list as written in the restriction (Postfix: the whole
    # "zone=filter" text), the value a reply template.
    "zen.dnsbl.test $rbl_code 5.7.1 code=$rbl_code class=$rbl_class what=$rbl_what "
    "domain=$rbl_domain reason=$rbl_reason client=$client_address\n"
    # Postfix's own smtpd_check_access:44 shape.
    "zen.dnsbl.test=127.0.0.4 451 4.7.1 $rbl_class [$rbl_what] blocked using "
    "$rbl_domain=127.0.0.4${rbl_reason?; $rbl_reason}\n"
    # A code without an enhanced status code: the class digit comes from the code.
    "rhsbl.test 550 $rbl_class <$rbl_what> listed by $rbl_domain: $rbl_reason\n"
)

EVIL_NAMES = (
    "mx.evil.test REJECT evil mx host\n"
    "ns.evil.test REJECT evil ns host\n"
)

EVIL_ADDRS = (
    "127.0.0.66 REJECT evil mx address\n"
    "127.0.0.67 REJECT evil ns address\n"
    "127.0.0.68 REJECT evil domain address\n"
    "127.0.0.3 REJECT evil client address\n"
)

TABLES = {"rbl_replies": RBL_REPLIES, "evil_names": EVIL_NAMES, "evil_addrs": EVIL_ADDRS}

SCORE_SITES = "zen.dnsbl.test*3, bl.dnsbl.test*2, wl.dnswl.test*-5"
RELAY_GUARD = "permit_mynetworks, reject_unauth_destination"


def access_service(kind, table):
    """check_<target>_<kind>_access on one table for all four targets."""
    t = "texthash:$config_directory/" + table
    return {
        "smtpd_client_restrictions": "check_client_%s_access %s" % (kind, t),
        "smtpd_helo_restrictions": "check_helo_%s_access %s" % (kind, t),
        "smtpd_sender_restrictions": "check_sender_%s_access %s" % (kind, t),
        "smtpd_relay_restrictions": "check_recipient_%s_access %s, %s" % (kind, t, RELAY_GUARD),
    }


# One listener per entry; each value: the service's -o overrides.
SERVICES = {
    "zen": {"smtpd_client_restrictions": "reject_rbl_client zen.dnsbl.test"},
    "zen2": {"smtpd_client_restrictions": "reject_rbl_client zen.dnsbl.test=127.0.0.2"},
    "zen3": {"smtpd_client_restrictions": "reject_rbl_client zen.dnsbl.test=127.0.0.3"},
    "zen4": {"smtpd_client_restrictions": "reject_rbl_client zen.dnsbl.test=127.0.0.4"},
    "zenrange": {"smtpd_client_restrictions": "reject_rbl_client zen.dnsbl.test=127.0.0.[2..4]"},
    "zen450": {"smtpd_client_restrictions": "reject_rbl_client zen.dnsbl.test",
               "maps_rbl_reject_code": "450"},
    "replymaps": {"rbl_reply_maps": "texthash:$config_directory/rbl_replies",
                  "smtpd_client_restrictions": "reject_rbl_client zen.dnsbl.test=127.0.0.4, "
                                               "reject_rbl_client bl.dnsbl.test=127.0.0.3, "
                                               "reject_rbl_client zen.dnsbl.test",
                  "smtpd_sender_restrictions": "reject_rhsbl_sender rhsbl.test"},
    "maps_rbl": {"maps_rbl_domains": "bl.dnsbl.test, zen.dnsbl.test",
                 "smtpd_client_restrictions": "reject_maps_rbl"},
    "rhsbl_client": {"smtpd_client_restrictions": "reject_rhsbl_client rhsbl.test"},
    "rhsbl_reverse": {"smtpd_client_restrictions": "reject_rhsbl_reverse_client rhsbl.test"},
    "rhsbl_helo": {"smtpd_helo_restrictions": "reject_rhsbl_helo rhsbl.test"},
    "rhsbl_sender": {"smtpd_sender_restrictions": "reject_rhsbl_sender rhsbl.test"},
    "rhsbl_rcpt": {"smtpd_relay_restrictions": "permit_mynetworks, reject_rhsbl_recipient rhsbl.test, "
                                               "reject_unauth_destination"},
    "dnswl": {"smtpd_client_restrictions": "permit_dnswl_client wl.dnswl.test, reject_rbl_client zen.dnsbl.test"},
    "dnswl_relay": {"smtpd_relay_restrictions": "permit_dnswl_client wl.dnswl.test, reject_unauth_destination"},
    "dnswl_servfail": {"smtpd_client_restrictions": "permit_dnswl_client servfail.test, "
                                                    "reject_rbl_client zen.dnsbl.test"},
    "rhswl": {"smtpd_client_restrictions": "permit_rhswl_client rhswl.test, reject_rbl_client zen.dnsbl.test"},
    "unknown_sender": {"smtpd_sender_restrictions": "reject_unknown_sender_domain"},
    "unknown_rcpt": {"smtpd_relay_restrictions": "reject_unknown_recipient_domain, " + RELAY_GUARD},
    "unknown_helo": {"smtpd_helo_restrictions": "reject_unknown_helo_hostname"},
    "unknown_client": {"smtpd_client_restrictions": "reject_unknown_client_hostname"},
    "unknown_client_reject": {"smtpd_client_restrictions": "reject_unknown_client_hostname, reject"},
    "unknown_reverse": {"smtpd_client_restrictions": "reject_unknown_reverse_client_hostname"},
    "acc_mx_names": access_service("mx", "evil_names"),
    "acc_mx_addrs": access_service("mx", "evil_addrs"),
    "acc_ns_names": access_service("ns", "evil_names"),
    "acc_ns_addrs": access_service("ns", "evil_addrs"),
    "acc_a": access_service("a", "evil_addrs"),
    "score3": {"dnsbl_sites": SCORE_SITES, "reject_dnsbl_score": "3",
               "smtpd_client_restrictions": "reject_dnsbl_score"},
    "score4": {"dnsbl_sites": SCORE_SITES, "reject_dnsbl_score": "4",
               "smtpd_client_restrictions": "reject_dnsbl_score"},
    "score5": {"dnsbl_sites": SCORE_SITES, "reject_dnsbl_score": "5",
               "smtpd_client_restrictions": "reject_dnsbl_score"},
    # zen alone reaches the threshold; timeout.test never answers.
    "score_fast": {"dnsbl_sites": "zen.dnsbl.test*3, timeout.test*1", "reject_dnsbl_score": "3",
                   "smtpd_client_restrictions": "reject_dnsbl_score"},
    "score_broken": {"dnsbl_sites": "err.dnsbl.test*5, wild.dnsbl.test*5", "reject_dnsbl_score": "5",
                     "smtpd_client_restrictions": "reject_dnsbl_score"},
    "score_dead": {"dnsbl_sites": "dead.dnsbl.test*5", "reject_dnsbl_score": "5",
                   "smtpd_client_restrictions": "reject_dnsbl_score"},
    "dead": {"smtpd_client_restrictions": "reject_rbl_client dead.dnsbl.test"},
    "err": {"smtpd_client_restrictions": "reject_rbl_client err.dnsbl.test"},
    "wild": {"smtpd_client_restrictions": "reject_rbl_client wild.dnsbl.test"},
    "list_timeout": {"smtpd_client_restrictions": "reject_rbl_client timeout.test, permit"},
    "list_servfail": {"smtpd_client_restrictions": "reject_rbl_client servfail.test"},
    "rhsbl_servfail": {"smtpd_sender_restrictions": "reject_rhsbl_sender servfail.test"},
}

# The second daemon: reply codes and texts that live in main.cf.
CUSTOM_MAIN = {
    "default_rbl_reply": "$rbl_code Go away: $rbl_class $rbl_what is on $rbl_domain${rbl_reason?: $rbl_reason}",
    "maps_rbl_reject_code": "521",
    "unknown_address_reject_code": "550",
    "unknown_client_reject_code": "550",
    "unknown_hostname_reject_code": "550",
}
CUSTOM_SERVICES = {
    "zen": SERVICES["zen"],
    "rhsbl_helo": SERVICES["rhsbl_helo"],
    "unknown_sender": SERVICES["unknown_sender"],
    "unknown_rcpt": SERVICES["unknown_rcpt"],
    "unknown_helo": SERVICES["unknown_helo"],
    "unknown_client": SERVICES["unknown_client"],
    "unknown_reverse": SERVICES["unknown_reverse"],
}


def world_main(world, **extra):
    main = {"dns_forwarders": world.forwarders, "dns_timeout": DNS_TIMEOUT,
            "mynetworks": "127.0.0.1/32", "mydestination": "localhost, example.test"}
    main.update(extra)
    return main


# ------------------------------------------------------------- daemons

def free_port6():
    """A free port on ::1, or None when this host has no IPv6 loopback."""
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
            return s.getsockname()[1]
    except OSError:
        return None


class Gateway:
    """One moat with a listener per service; `moat check --service` names
    the same master.cf entry, so both doors read the same configuration."""

    def __init__(self, base, main, services, tables=None, v6_service=None):
        self.m = Moat(base, main=main)
        self.ports = {}
        used = {self.m.port}
        for name, opts in services.items():
            port = free_port()
            while port in used:
                port = free_port()
            used.add(port)
            self.ports[name] = ("127.0.0.1", port)
            self.m.master_extra.append("127.0.0.1:%d inet n - n - - smtpd" % port)
            for k, v in opts.items():
                # -o values cannot hold spaces: name a main.cf variable.
                var = "svc_%s_%s" % (name, k)
                self.m.main[var] = v
                self.m.master_extra.append("  -o %s=$%s" % (k, var))
        port = free_port6() if v6_service else None
        if port:
            self.ports[v6_service + "6"] = ("::1", port)
            self.m.master_extra.append("[::1]:%d inet n - n - - smtpd" % port)
            for k in services[v6_service]:
                self.m.master_extra.append("  -o %s=$svc_%s_%s" % (k, v6_service, k))
        for name, text in (tables or {}).items():
            with open(os.path.join(self.m.dir, name), "w") as f:
                f.write(text)

    @property
    def dir(self):
        return self.m.dir

    def service(self, name):
        host, port = self.ports[name]
        return ("[%s]:%d" if ":" in host else "%s:%d") % (host, port)

    def connect(self, name, source=None, **kw):
        host, port = self.ports[name]
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        return Client(port, host=host, source=source, family=family, **kw)

    def start(self):
        try:
            self.m.start()
            for host, port in self.ports.values():
                if host == "127.0.0.1":
                    self.m.wait_listening(port=port)
        except BaseException:
            self.m.stop()
            raise
        _LIVE.append(self.m)
        return self

    def stop(self):
        try:
            rc = self.m.stop()
        finally:
            _LIVE.remove(self.m)
        problems = self.m.problems()
        assert rc in (None, 0), "moat exited with %s:\n%s" % (rc, self.m.stderr()[-3000:])
        assert not problems, "\n\n".join(problems)


@pytest.fixture(scope="module")
def gw(dns_world, tmp_path_factory):
    g = Gateway(tmp_path_factory.mktemp("dnsgw"), world_main(dns_world), SERVICES, TABLES, v6_service="zen")
    g.start()
    yield g
    g.stop()


@pytest.fixture(scope="module")
def gw2(dns_world, tmp_path_factory):
    g = Gateway(tmp_path_factory.mktemp("dnsgw2"), world_main(dns_world, **CUSTOM_MAIN), CUSTOM_SERVICES)
    g.start()
    yield g
    g.stop()


# ------------------------------------------------------------- the two doors

RCPT_LINE = re.compile(r"^RCPT TO:<(?P<rcpt>[^>]*)>: (?P<reply>.*?)"
                       r"(?:; rule=(?P<rule>.*?))?(?: table=(?P<table>\S+))?$")


class Outcome:
    def __init__(self, live, reply, rule, table, stdout):
        self.live = live            # the session's RCPT Reply, or None (check only)
        self.reply = reply          # moat check's RCPT reply (the session's agrees)
        self.rule = rule            # moat check's rule=, None when accepted
        self.table = table
        self.stdout = stdout        # moat check's whole output (with --trace)
        self.code = int(reply[:3])

    def __repr__(self):
        return "Outcome(%r, rule=%r)" % (self.reply, self.rule)


def run_check(gw, svc, client, helo, sender, rcpt, extra=()):
    return subprocess.Popen([MOAT, "check", "-c", gw.dir, "--service", gw.service(svc), "--trace",
                             "--client", client, "--helo", helo, "--from", sender, "--rcpt", rcpt, *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def check_result(proc, rcpt):
    out, err = proc.communicate(timeout=60)
    for marker in SANITIZER_MARKERS:
        assert marker not in err, err
    assert proc.returncode in (0, 1), "moat check failed (%s):\n%s%s" % (proc.returncode, out, err)
    ms = [RCPT_LINE.match(l) for l in out.splitlines() if l.startswith("RCPT TO:")]
    assert len(ms) == 1 and ms[0], "no single RCPT line in moat check's output:\n%s" % out
    m = ms[0]
    assert m.group("rcpt") == rcpt, out
    return m.group("reply"), m.group("rule"), m.group("table"), out


def live_rcpt(gw, svc, client, helo, sender, rcpt):
    """EHLO, MAIL, RCPT from `client`: with smtpd_delay_reject = yes
    (the default) every class answers at RCPT."""
    source = None if ":" in client else client
    with gw.connect(svc, source=source, timeout=30) as c:
        check(c.greeting, 220, what="greeting")
        check(c.cmd("EHLO " + helo), 250, what="EHLO")
        check(c.cmd("MAIL FROM:<%s>" % sender), 250, what="MAIL")
        r = c.cmd("RCPT TO:<%s>" % rcpt)
        c.quit()
    return r


def both(gw, svc, client, helo="client.test", sender="a@b.test", rcpt="u@example.test", live=True,
         check_args=(), same=lambda reply: reply):
    """The RCPT reply through a live session and through `moat check`; they
    must agree (on same(reply), when part of a reply may differ)."""
    proc = run_check(gw, svc, client, helo, sender, rcpt, check_args)
    try:
        r = live_rcpt(gw, svc, client, helo, sender, rcpt) if live else None
    except BaseException:
        proc.kill()
        proc.communicate()
        raise
    reply, rule, table, out = check_result(proc, rcpt)
    if r is not None:
        assert same(str(r)) == same(reply), (
            "the two doors disagree:\n  session:     %s\n  moat check:  %s\n%s" % (str(r), reply, out))
    return Outcome(r, reply, rule, table, out)


def expect(o, reply, rule=None):
    assert o.reply == reply, "expected %r, got %r\n%s" % (reply, o.reply, o.stdout)
    if rule is not None:
        assert o.rule == rule, "expected rule=%s, got %s" % (rule, o.rule)


OK = "250 2.1.5 Ok"


def ok(o):
    expect(o, OK)
    assert o.rule is None


def tempfail(o, enh):
    """A temporary failure: 450 (never 5xx, never a silent 250)."""
    assert o.code == 450 and o.reply.startswith("450 %s " % enh), o.reply + "\n" + o.stdout


def count_log(m, pattern):
    return len(re.findall(pattern, m.log(), re.M))


# ===================================================== reject_rbl_client

ZEN_2 = "Listed in zen, see https://zen.dnsbl.test/q/127.0.0.2"
ZEN_14 = "Listed in zen, see https://zen.dnsbl.test/q/127.0.0.14"
ZEN_16 = "Listed in zen (policy), see https://zen.dnsbl.test/q/127.0.0.16"


def blocked(what, zone, reason, code="554 5.7.1", rclass="Client host"):
    """Postfix's default_rbl_reply, expanded."""
    return "%s Service unavailable; %s [%s] blocked using %s; %s" % (code, rclass, what, zone, reason)


def test_rbl_client_listed_with_txt_reason(gw):
    o = both(gw, "zen", "127.0.0.2")
    expect(o, blocked("127.0.0.2", "zen.dnsbl.test", ZEN_2), "client:reject_rbl_client zen.dnsbl.test")
    # Postfix's reject log line, with the client's forward-confirmed name.
    gw.m.wait_log(r"moat/smtpd\[\d+\]: NOQUEUE: reject: RCPT from listed\.client\.test\[127\.0\.0\.2\]: "
                  + re.escape(blocked("127.0.0.2", "zen.dnsbl.test", ZEN_2))
                  + r"; from=<a@b\.test> to=<u@example\.test> proto=ESMTP helo=<client\.test>")


@pytest.mark.parametrize("client", ["127.0.0.10", "127.0.0.3", "127.0.0.12"])
def test_rbl_client_not_listed(gw, client):
    ok(both(gw, "zen", client))


@pytest.mark.parametrize("svc, client, reason", [
    ("zen2", "127.0.0.2", ZEN_2),          # answers 127.0.0.2 and 127.0.0.4: =127.0.0.2 matches
    ("zen2", "127.0.0.16", None),          # answers 127.0.0.10 only
    ("zen3", "127.0.0.2", None),           # neither answer is 127.0.0.3
    ("zen4", "127.0.0.2", ZEN_2),          # the second answer matches
    ("zenrange", "127.0.0.2", ZEN_2),
    ("zenrange", "127.0.0.16", None),      # the PBL-style 127.0.0.10 is outside [2..4]
    ("zen", "127.0.0.16", ZEN_16),         # without a filter any answer lists
])
def test_rbl_client_reply_filters(gw, svc, client, reason):
    o = both(gw, svc, client)
    if reason is None:
        ok(o)
    else:
        # $rbl_domain is the zone without the filter; the rule keeps it.
        expect(o, blocked(client, "zen.dnsbl.test", reason),
               "client:reject_rbl_client " + SERVICES[svc]["smtpd_client_restrictions"].split(" ", 1)[1])


def test_rbl_reply_maps_keyed_by_list(gw):
    # The zone=filter entry: Postfix's smtpd_check_access:44 template.
    o = both(gw, "replymaps", "127.0.0.2")
    expect(o, "451 4.7.1 Client host [127.0.0.2] blocked using zen.dnsbl.test=127.0.0.4; " + ZEN_2,
           "client:reject_rbl_client zen.dnsbl.test=127.0.0.4")
    assert o.table and o.table.endswith("/rbl_replies:2"), o.table
    # Every template name, and $client_address from the session.
    o = both(gw, "replymaps", "127.0.0.14")
    expect(o, "554 5.7.1 code=554 class=Client host what=127.0.0.14 domain=zen.dnsbl.test reason=%s "
              "client=127.0.0.14" % ZEN_14, "client:reject_rbl_client zen.dnsbl.test")
    assert o.table and o.table.endswith("/rbl_replies:1"), o.table
    # A list with no entry gets default_rbl_reply.
    o = both(gw, "replymaps", "127.0.0.3")
    expect(o, blocked("127.0.0.3", "bl.dnsbl.test", "bl lists 127.0.0.3"),
           "client:reject_rbl_client bl.dnsbl.test=127.0.0.3")
    assert o.table is None
    # A template code without a DSN: 5.7.1 follows the code's class.
    o = both(gw, "replymaps", "127.0.0.10", sender="x@spammer.test")
    expect(o, "550 5.7.1 Sender address <x@spammer.test> listed by rhsbl.test: spammer.test is a spam domain",
           "sender:reject_rhsbl_sender rhsbl.test")


def test_maps_rbl_reject_code_per_service(gw):
    o = both(gw, "zen450", "127.0.0.2")
    expect(o, blocked("127.0.0.2", "zen.dnsbl.test", ZEN_2, code="450 4.7.1"))


def test_default_rbl_reply_and_reject_code_changed(gw2):
    o = both(gw2, "zen", "127.0.0.2")
    expect(o, "521 5.7.1 Go away: Client host 127.0.0.2 is on zen.dnsbl.test: " + ZEN_2)
    o = both(gw2, "rhsbl_helo", "127.0.0.10", helo="bad-helo.test")
    expect(o, "521 5.7.1 Go away: Helo command bad-helo.test is on rhsbl.test: bad-helo.test is a spam domain")
    ok(both(gw2, "zen", "127.0.0.10"))


@pytest.mark.parametrize("client, zone, reason", [
    ("127.0.0.2", "bl.dnsbl.test", "bl says 127.0.0.2 is bad"),   # maps_rbl_domains in order
    ("127.0.0.14", "zen.dnsbl.test", ZEN_14),
    ("127.0.0.10", None, None),
])
def test_reject_maps_rbl(gw, client, zone, reason):
    o = both(gw, "maps_rbl", client)
    if zone is None:
        ok(o)
    else:
        expect(o, blocked(client, zone, reason), "client:reject_maps_rbl")


@pytest.mark.parametrize("client, live", [("2001:db8::1", False), ("::1", True)])
def test_rbl_client_ipv6_nibbles(gw, client, live):
    if live and "zen6" not in gw.ports:
        pytest.skip("no IPv6 loopback on this host")
    o = both(gw, "zen6" if live else "zen", client, live=live)
    expect(o, blocked(client, "zen.dnsbl.test", "v6 listed"))
    if live:
        gw.m.wait_log(r"NOQUEUE: reject: RCPT from localhost\[::1\]: 554 5\.7\.1 Service unavailable; "
                      r"Client host \[::1\] blocked using zen\.dnsbl\.test; v6 listed;")


def test_rbl_client_ipv6_not_listed(gw):
    ok(both(gw, "zen", "2001:db8::2", live=False))


# ===================================================== RHSBL, allow lists

def test_rhsbl_client_and_reverse_client(gw):
    expect(both(gw, "rhsbl_client", "127.0.0.2"),
           blocked("listed.client.test", "rhsbl.test", "listed.client.test is a spam host"),
           "client:reject_rhsbl_client rhsbl.test")
    expect(both(gw, "rhsbl_reverse", "127.0.0.2"),
           blocked("listed.client.test", "rhsbl.test", "listed.client.test is a spam host",
                   rclass="Unverified Client host"),
           "client:reject_rhsbl_reverse_client rhsbl.test")
    ok(both(gw, "rhsbl_client", "127.0.0.10"))
    ok(both(gw, "rhsbl_client", "127.0.0.12"))     # no name: nothing to look up
    ok(both(gw, "rhsbl_reverse", "127.0.0.11"))    # liar.client.test is not listed


@pytest.mark.parametrize("helo, listed", [
    ("bad-helo.test", True), ("good.client.test", False), ("[127.0.0.10]", False)])
def test_rhsbl_helo(gw, helo, listed):
    o = both(gw, "rhsbl_helo", "127.0.0.10", helo=helo)
    if listed:
        expect(o, blocked(helo, "rhsbl.test", "bad-helo.test is a spam domain", rclass="Helo command"),
               "helo:reject_rhsbl_helo rhsbl.test")
    else:
        ok(o)


def test_rhsbl_sender_and_recipient(gw):
    expect(both(gw, "rhsbl_sender", "127.0.0.10", sender="x@spammer.test"),
           blocked("x@spammer.test", "rhsbl.test", "spammer.test is a spam domain", rclass="Sender address"),
           "sender:reject_rhsbl_sender rhsbl.test")
    ok(both(gw, "rhsbl_sender", "127.0.0.10", sender="x@friend.test"))
    expect(both(gw, "rhsbl_rcpt", "127.0.0.10", rcpt="x@spammer.test"),
           blocked("x@spammer.test", "rhsbl.test", "spammer.test is a spam domain", rclass="Recipient address"),
           "relay:reject_rhsbl_recipient rhsbl.test")
    ok(both(gw, "rhsbl_rcpt", "127.0.0.10", rcpt="u@example.test"))


def test_permit_dnswl_client_rescues_listed_client(gw):
    ok(both(gw, "dnswl", "127.0.0.14"))      # zen lists it, wl.dnswl.test allows it
    expect(both(gw, "dnswl", "127.0.0.2"), blocked("127.0.0.2", "zen.dnsbl.test", ZEN_2))


def test_permit_dnswl_client_never_overrides_reject_unauth_destination(gw):
    o = both(gw, "dnswl_relay", "127.0.0.14", rcpt="x@other.test")
    expect(o, "554 5.7.1 <x@other.test>: Relay access denied", "relay:reject_unauth_destination")
    ok(both(gw, "dnswl_relay", "127.0.0.14"))


def test_permit_dnswl_client_failing_turns_reject_into_deferral(gw):
    # Postfix: an allow list that fails temporarily raises defer_if_reject,
    # so the later zen reject becomes a 450; an unlisted client passes.
    # (Postfix's text is "<127.0.0.2>: Client host rejected: Service
    # unavailable"; moat names the client as name[address] and adds the
    # list: see the report, the text is not pinned here.)
    o = both(gw, "dnswl_servfail", "127.0.0.2")
    tempfail(o, "4.7.1")
    assert "Client host rejected: Service unavailable" in o.reply, o.reply
    ok(both(gw, "dnswl_servfail", "127.0.0.10"))


def test_permit_rhswl_client(gw):
    # No client address of the test world has a PTR name in rhswl.test, so
    # the allow-listed case is moat check's --client-name (a verified name).
    ok(both(gw, "rhswl", "127.0.0.2", live=False, check_args=("--client-name", "friend.test")))
    expect(both(gw, "rhswl", "127.0.0.2", live=False, check_args=("--client-name", "spammer.test")),
           blocked("127.0.0.2", "zen.dnsbl.test", ZEN_2))
    # listed.client.test is not allow-listed: zen still rejects (both doors).
    expect(both(gw, "rhswl", "127.0.0.2"), blocked("127.0.0.2", "zen.dnsbl.test", ZEN_2))


# ===================================================== unknown domains

def sender_not_found(addr, code="450 4.1.8"):
    return "%s <%s>: Sender address rejected: Domain not found" % (code, addr)


def rcpt_not_found(addr, code="450 4.1.2"):
    return "%s <%s>: Recipient address rejected: Domain not found" % (code, addr)


@pytest.mark.parametrize("domain, reply", [
    ("hasmx.test", OK),
    ("aonly.test", OK),
    ("aaaaonly.test", OK),
    ("nothing.test", sender_not_found("a@nothing.test")),
    ("nxdomain.test", sender_not_found("a@nxdomain.test")),
    ("deep.nxdomain.test", sender_not_found("a@deep.nxdomain.test")),
    ("nullmx.test", "550 5.7.27 <a@nullmx.test>: Sender address rejected: "
                    "Domain nullmx.test does not accept mail (nullMX)"),
    ("servfail.test", sender_not_found("a@servfail.test")),     # temporary: defer_if_permit
    ("example.test", OK),                                       # local: never looked up
])
def test_reject_unknown_sender_domain(gw, domain, reply):
    o = both(gw, "unknown_sender", "127.0.0.10", sender="a@" + domain)
    expect(o, reply)
    if reply != OK:
        assert o.rule == "sender:reject_unknown_sender_domain", o.rule


def test_unknown_sender_domain_servfail_is_logged(gw):
    both(gw, "unknown_sender", "127.0.0.10", sender="b@servfail.test")
    gw.m.wait_log(r"warning: reject_unknown_sender_domain: DNS lookup of servfail\.test failed: SERVFAIL")


@pytest.mark.parametrize("domain, reply", [
    ("nothing.test", sender_not_found("a@nothing.test", "550 5.1.8")),
    ("nxdomain.test", sender_not_found("a@nxdomain.test", "550 5.1.8")),
    ("nullmx.test", "550 5.7.27 <a@nullmx.test>: Sender address rejected: "
                    "Domain nullmx.test does not accept mail (nullMX)"),
    ("servfail.test", sender_not_found("a@servfail.test")),     # never 5xx for a temporary error
    ("timeout.test", sender_not_found("a@timeout.test")),       # nor for a timeout
    ("hasmx.test", OK),
])
def test_unknown_address_reject_code_550(gw2, domain, reply):
    expect(both(gw2, "unknown_sender", "127.0.0.10", sender="a@" + domain), reply)


def test_unknown_sender_domain_timeout_logged(gw2):
    gw2.m.wait_log(r"warning: reject_unknown_sender_domain: DNS lookup of timeout\.test failed: .*timeout")


# The recipient cases come from the trusted client: permit_mynetworks after
# the DNS check shows what it decided (a remote domain that passes is
# relayed: the trusted client may send anywhere).
@pytest.mark.parametrize("svc_code, domain, reply", [
    ("450", "hasmx.test", OK),
    ("450", "nothing.test", rcpt_not_found("x@nothing.test")),
    ("450", "nxdomain.test", rcpt_not_found("x@nxdomain.test")),
    ("450", "nullmx.test", "556 5.1.10 <x@nullmx.test>: Recipient address rejected: "
                           "Domain nullmx.test does not accept mail (nullMX)"),
    ("450", "servfail.test", rcpt_not_found("x@servfail.test")),
    ("550", "nxdomain.test", rcpt_not_found("x@nxdomain.test", "550 5.1.2")),
    ("550", "servfail.test", rcpt_not_found("x@servfail.test")),
])
def test_reject_unknown_recipient_domain(gw, gw2, svc_code, domain, reply):
    g = gw if svc_code == "450" else gw2
    o = both(g, "unknown_rcpt", "127.0.0.1", rcpt="x@" + domain)
    expect(o, reply)
    if reply == OK:
        assert o.rule is None, o.rule
    else:
        assert o.rule == "relay:reject_unknown_recipient_domain", o.rule


def test_unknown_recipient_domain_skips_local_domains(gw):
    ok(both(gw, "unknown_rcpt", "127.0.0.10", rcpt="u@example.test"))   # example.test is NXDOMAIN in DNS


# ===================================================== HELO and client names

def helo_not_found(helo, code="450 4.7.1"):
    return "%s <%s>: Helo command rejected: Host not found" % (code, helo)


@pytest.mark.parametrize("helo, reply", [
    ("hasmx.test", OK),               # an MX is enough
    ("aonly.test", OK),
    ("aaaaonly.test", OK),
    ("nullmx.test", OK),              # it has an address (smtpd_nullmx.ref: HELO accepted)
    ("[127.0.0.10]", OK),             # address literals are not looked up
    ("nxhost.test", helo_not_found("nxhost.test")),
    ("nothing.test", helo_not_found("nothing.test")),
    ("servfail.test", helo_not_found("servfail.test")),
])
def test_reject_unknown_helo_hostname(gw, helo, reply):
    o = both(gw, "unknown_helo", "127.0.0.10", helo=helo)
    expect(o, reply)
    if reply != OK:
        assert o.rule == "helo:reject_unknown_helo_hostname"


def test_unknown_hostname_reject_code(gw2):
    expect(both(gw2, "unknown_helo", "127.0.0.10", helo="nxhost.test"), helo_not_found("nxhost.test", "550 5.7.1"))
    expect(both(gw2, "unknown_helo", "127.0.0.10", helo="servfail.test"), helo_not_found("servfail.test"))


def cannot_find(client, code="450 4.7.1", what="hostname"):
    return "%s Client host rejected: cannot find your %s, [%s]" % (code, what, client)


@pytest.mark.parametrize("client, reply", [
    ("127.0.0.10", OK),
    ("127.0.0.14", OK),
    ("127.0.0.11", cannot_find("127.0.0.11")),     # the PTR name does not resolve back
    ("127.0.0.12", cannot_find("127.0.0.12")),     # no PTR
    ("127.0.0.15", cannot_find("127.0.0.15")),     # SERVFAIL
])
def test_reject_unknown_client_hostname(gw, client, reply):
    o = both(gw, "unknown_client", client)
    expect(o, reply)
    if reply != OK:
        assert o.rule == "client:reject_unknown_client_hostname"


@pytest.mark.parametrize("client, reply", [
    ("127.0.0.10", OK),
    ("127.0.0.11", cannot_find("127.0.0.11", "550 5.7.1")),
    ("127.0.0.12", cannot_find("127.0.0.12", "550 5.7.1")),
    ("127.0.0.15", cannot_find("127.0.0.15")),                # temporary: 450 whatever the code
    ("127.0.0.13", cannot_find("127.0.0.13")),                # the PTR query times out
])
def test_unknown_client_reject_code(gw2, client, reply):
    expect(both(gw2, "unknown_client", client), reply)


def test_unknown_client_temporary_failure_defers_at_once(gw):
    # Postfix (smtpd_check.c): "Deferrals must not be postponed after client
    # hostname lookup failure" -- a later reject must not turn the 450 into
    # a 5xx.
    expect(both(gw, "unknown_client_reject", "127.0.0.15"), cannot_find("127.0.0.15"),
           "client:reject_unknown_client_hostname")
    expect(both(gw, "unknown_client_reject", "127.0.0.10"),
           "554 5.7.1 <good.client.test[127.0.0.10]>: Client host rejected: Access denied", "client:reject")


@pytest.mark.parametrize("client, reply", [
    ("127.0.0.10", OK),
    ("127.0.0.11", OK),                                      # a PTR is all it asks for
    ("127.0.0.12", cannot_find("127.0.0.12", what="reverse hostname")),
    ("127.0.0.15", cannot_find("127.0.0.15", what="reverse hostname")),
])
def test_reject_unknown_reverse_client_hostname(gw, client, reply):
    expect(both(gw, "unknown_reverse", client), reply)


def test_unknown_reverse_client_reject_code(gw2):
    expect(both(gw2, "unknown_reverse", "127.0.0.12"),
           cannot_find("127.0.0.12", "550 5.7.1", what="reverse hostname"))


def test_client_names_in_log_lines(gw):
    both(gw, "unknown_client", "127.0.0.11")
    both(gw, "unknown_client", "127.0.0.10")
    m = gw.m
    m.wait_log(r"moat/smtpd\[\d+\]: connect from unknown\[127\.0\.0\.11\]$")
    # Postfix's warning for a name that does not forward-confirm.
    m.wait_log(r"moat/smtpd\[\d+\]: warning: hostname liar\.client\.test does not resolve to address 127\.0\.0\.11$")
    m.wait_log(r"moat/smtpd\[\d+\]: NOQUEUE: reject: RCPT from unknown\[127\.0\.0\.11\]: "
               + re.escape(cannot_find("127.0.0.11")) + r"; from=<a@b\.test> to=<u@example\.test> "
               r"proto=ESMTP helo=<client\.test>")
    m.wait_log(r"moat/smtpd\[\d+\]: connect from good\.client\.test\[127\.0\.0\.10\]$")
    m.wait_log(r"moat/smtpd\[\d+\]: disconnect from good\.client\.test\[127\.0\.0\.10\] ")
    # moat check names the client as the session does.
    out = both(gw, "unknown_client", "127.0.0.11", live=False).stdout
    assert out.startswith("CONNECT from unknown[127.0.0.11]: 220 "), out
    assert "hostname liar.client.test does not resolve to address 127.0.0.11" in out, out
    out = both(gw, "unknown_client", "127.0.0.10", live=False).stdout
    assert out.startswith("CONNECT from good.client.test[127.0.0.10]: 220 "), out


# ===================================================== check_*_{a,mx,ns}_access

def access_reply(target, value, text):
    """An access table REJECT: Postfix's "<value>: Class rejected: text"."""
    rclass = {"client": "Client host", "helo": "Helo command", "sender": "Sender address",
              "recipient": "Recipient address"}[target]
    return "554 5.7.1 <%s>: %s rejected: %s" % (value, rclass, text)


def access_case(gw, svc, target, value):
    client, helo, sender, rcpt = "127.0.0.10", "client.test", "a@b.test", "u@example.test"
    if target == "client":
        client = value
    elif target == "helo":
        helo = value
    elif target == "sender":
        sender = value
    else:
        rcpt = value
    return both(gw, svc, client, helo=helo, sender=sender, rcpt=rcpt)


@pytest.mark.parametrize("svc, target, value, text", [
    # MX hosts by name, then by address; a domain without MX is its own host.
    ("acc_mx_names", "helo", "badmx.test", "evil mx host"),
    ("acc_mx_names", "sender", "a@badmx.test", "evil mx host"),
    ("acc_mx_names", "recipient", "x@badmx.test", "evil mx host"),
    ("acc_mx_names", "sender", "a@hasmx.test", None),
    ("acc_mx_names", "sender", "a@nxdomain.test", None),
    ("acc_mx_addrs", "sender", "a@badmx.test", "evil mx address"),
    ("acc_mx_addrs", "helo", "badmx.test", "evil mx address"),
    ("acc_mx_addrs", "client", "127.0.0.3", "evil client address"),   # only-bl.client.test: no MX
    ("acc_mx_addrs", "client", "127.0.0.10", None),
    # NS hosts; a name without NS inherits its parent's.
    ("acc_ns_names", "helo", "badns.test", "evil ns host"),
    ("acc_ns_names", "sender", "a@badns.test", "evil ns host"),
    ("acc_ns_names", "recipient", "x@badns.test", "evil ns host"),
    ("acc_ns_names", "sender", "a@mx1.hasmx.test", None),             # ns1.hasmx.test is fine
    ("acc_ns_names", "client", "127.0.0.10", None),                   # no NS up to the TLD
    ("acc_ns_addrs", "sender", "a@badns.test", "evil ns address"),
    ("acc_ns_addrs", "helo", "badns.test", "evil ns address"),
    # The addresses of the name itself.
    ("acc_a", "helo", "badns.test", "evil domain address"),
    ("acc_a", "sender", "a@badns.test", "evil domain address"),
    ("acc_a", "recipient", "x@badns.test", "evil domain address"),
    ("acc_a", "client", "127.0.0.3", "evil client address"),
    ("acc_a", "client", "127.0.0.12", None),                          # no name, nothing to look up
    ("acc_a", "sender", "a@hasmx.test", None),                        # no A record
])
def test_dns_access(gw, svc, target, value, text):
    o = access_case(gw, svc, target, value)
    if text is None:
        if target == "recipient":
            expect(o, "554 5.7.1 <%s>: Relay access denied" % value)
        else:
            ok(o)
        return
    shown = {"client": "%s[%s]" % ("only-bl.client.test", value)}.get(target, value)
    kind = svc.split("_")[1]
    cls = {"client": "client", "helo": "helo", "sender": "sender", "recipient": "relay"}[target]
    expect(o, access_reply(target, shown, text))
    assert o.rule.startswith("%s:check_%s_%s_access texthash:" % (cls, target, kind)), o.rule


def test_dns_access_ns_walks_up_from_nxdomain(gw):
    # nosuch.badns.test does not exist; its parent badns.test has NS ns.evil.test.
    expect(both(gw, "acc_ns_names", "127.0.0.10", helo="nosuch.badns.test"),
           access_reply("helo", "nosuch.badns.test", "evil ns host"))


# ===================================================== reject_dnsbl_score

def score_free(reply):
    """A score reject without its lists and sum: once the threshold is
    reached moat stops waiting, so they depend on which answers had
    arrived (the doors may differ there, by design)."""
    return re.sub(r" blocked using [a-z., ]+; DNSBL score \d+$", " blocked using ...", reply)


SCORES = {"127.0.0.2": 5, "127.0.0.3": 2, "127.0.0.14": -2, "127.0.0.16": 3, "127.0.0.10": 0}


@pytest.mark.parametrize("threshold", [3, 4, 5])
@pytest.mark.parametrize("client", sorted(SCORES))
def test_reject_dnsbl_score(gw, threshold, client):
    score = SCORES[client]
    o = both(gw, "score%d" % threshold, client, same=score_free)
    if score >= threshold:
        for reply in (o.reply, str(o.live)):
            m = re.fullmatch(r"554 5\.7\.1 Service unavailable; Client host \[%s\] blocked using "
                             r"[a-z., ]+; DNSBL score (\d+)" % re.escape(client), reply)
            assert m and threshold <= int(m.group(1)) <= score, reply
        assert o.rule == "client:reject_dnsbl_score"
    else:
        ok(o)
        assert re.search(r"^  client: reject_dnsbl_score: score %d < %d: " % (score, threshold), o.stdout, re.M), \
            o.stdout


def test_dnsbl_score_log_and_trace_show_each_list(gw):
    # Threshold 5 needs every list's answer (wl.dnswl.test's too: a list
    # still running with a negative weight counts as listed), so the sum
    # and the lists are the same through both doors.
    o = both(gw, "score5", "127.0.0.2")
    assert o.reply.startswith("554 5.7.1 Service unavailable; Client host [127.0.0.2] blocked using "), o
    assert o.reply.endswith("; DNSBL score 5"), o
    each = (r"127\.0\.0\.2 score 5 >= 5: zen\.dnsbl\.test=127\.0\.0\.2\*3 bl\.dnsbl\.test=127\.0\.0\.2\*2 "
            r"wl\.dnswl\.test=none; from=<a@b\.test> to=<u@example\.test> proto=ESMTP helo=<client\.test>")
    gw.m.wait_log(r"moat/smtpd\[\d+\]: .*dnsbl_score: RCPT from listed\.client\.test\[127\.0\.0\.2\]: " + each)
    assert re.search(r"^  log: dnsbl_score: RCPT from listed\.client\.test\[127\.0\.0\.2\]: " + each, o.stdout,
                     re.M), o.stdout
    for line in (r"A 2\.0\.0\.127\.zen\.dnsbl\.test -> 127\.0\.0\.2 127\.0\.0\.4",
                 r"A 2\.0\.0\.127\.bl\.dnsbl\.test -> 127\.0\.0\.2",
                 r"A 2\.0\.0\.127\.wl\.dnswl\.test -> NXDOMAIN"):
        assert re.search(r"^  client: dns: %s \((\d+ ms|cache)\)$" % line, o.stdout, re.M), (line, o.stdout)
    # The allow list's negative weight in the sum.
    o = both(gw, "score3", "127.0.0.14")
    assert re.search(r"^  client: reject_dnsbl_score: score -2 < 3: zen\.dnsbl\.test=127\.0\.0\.2\*3 "
                     r"bl\.dnsbl\.test=none wl\.dnswl\.test=127\.0\.10\.2\*-5$", o.stdout, re.M), o.stdout


def test_dnsbl_score_does_not_wait_once_reached(gw):
    # timeout.test never answers; zen's weight alone reaches the threshold.
    o = both(gw, "score_fast", "127.0.0.2")
    assert o.reply.startswith("554 5.7.1 Service unavailable; Client host [127.0.0.2] blocked using zen.dnsbl.test")
    assert "(lists still running not waited for)" in o.stdout, o.stdout


# ===================================================== list health

def test_list_answering_error_codes_is_ignored_and_logged_once(gw):
    for client in ("127.0.0.10", "127.0.0.2", "127.0.0.10"):
        ok(both(gw, "err", client))
    warning = r"moat/smtpd\[\d+\]: warning: dnsbl err\.dnsbl\.test: .*127\.255\.255\.254.*: ignoring its answers$"
    gw.m.wait_log(warning)
    ok(both(gw, "err", "127.0.0.3"))
    assert count_log(gw.m, warning) == 1, gw.m.log()


def test_list_answering_outside_loopback_is_ignored_and_logged_once(gw):
    for client in ("127.0.0.10", "127.0.0.2", "127.0.0.10"):
        ok(both(gw, "wild", client))
    warning = r"moat/smtpd\[\d+\]: warning: dnsbl wild\.dnsbl\.test: .*192\.0\.2\.1.*: ignoring its answers$"
    gw.m.wait_log(warning)
    ok(both(gw, "wild", "127.0.0.3"))
    assert count_log(gw.m, warning) == 1, gw.m.log()


def test_broken_lists_never_score(gw):
    ok(both(gw, "score_broken", "127.0.0.2"))
    ok(both(gw, "score_broken", "127.0.0.10"))


def test_dead_list_is_ignored_and_logged_once(gw):
    for client in ("127.0.0.10", "127.0.0.3", "127.0.0.10"):
        ok(both(gw, "dead", client))
    warning = r"moat/smtpd\[\d+\]: warning: dnsbl dead\.dnsbl\.test: .*127\.0\.0\.1.*: ignoring its answers$"
    gw.m.wait_log(warning)
    assert count_log(gw.m, warning) == 1, gw.m.log()


def test_dead_list_never_scores(gw):
    ok(both(gw, "score_dead", "127.0.0.10"))


# ===================================================== temporary failures

def test_list_timeout_defers(gw):
    # With defer_if_permit (the default reject_tempfail_action) the
    # permit at the end of the list becomes the 450: never a silent 250.
    o = both(gw, "list_timeout", "127.0.0.10")
    tempfail(o, "4.7.1")
    assert "timeout.test" in o.reply, o.reply
    gw.m.wait_log(r"warning: reject_rbl_client timeout\.test: DNS lookup of 10\.0\.0\.127\.timeout\.test failed: "
                  r".*timeout")


def test_list_servfail_defers(gw):
    o = both(gw, "list_servfail", "127.0.0.2")
    tempfail(o, "4.7.1")
    assert "servfail.test" in o.reply, o.reply
    o = both(gw, "rhsbl_servfail", "127.0.0.10", sender="x@spammer.test")
    tempfail(o, "4.7.1")


def test_world_paused_mid_run(dns_world_private, moat_factory):
    w = dns_world_private
    m = moat_factory(main=world_main(w, dns_timeout="1s",
                                     smtpd_client_restrictions="reject_rbl_client zen.dnsbl.test, permit"))
    g = Doors(m)
    expect(g.both("127.0.0.2"), blocked("127.0.0.2", "zen.dnsbl.test", ZEN_2))
    w.pause()
    try:
        o = g.both("127.0.0.3")     # nothing about 127.0.0.3 is cached
        tempfail(o, "4.7.1")
        assert "zen.dnsbl.test" in o.reply, o.reply
        m.wait_log(r"warning: reject_rbl_client zen\.dnsbl\.test: DNS lookup of 3\.0\.0\.127\.zen\.dnsbl\.test "
                   r"failed: .*timeout")
        m.wait_log(r"NOQUEUE: reject: RCPT from unknown\[127\.0\.0\.3\]: 450 4\.7\.1 ")
    finally:
        w.resume()
    # New sessions work again, with names that were never asked before.
    o = g.both("127.0.0.16")
    expect(o, blocked("127.0.0.16", "zen.dnsbl.test", ZEN_16))
    ok(g.both("127.0.0.10"))
    m.wait_log(r"connect from good16\.client\.test\[127\.0\.0\.16\]$")


def test_unreachable_resolver(moat_factory):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as hole:
        hole.bind(("127.0.0.1", 0))
        port = hole.getsockname()[1]
    m = moat_factory(main={"dns_forwarders": "127.0.0.1@%d" % port, "dns_timeout": "1s",
                           "mynetworks": "127.0.0.1/32", "mydestination": "localhost, example.test",
                           "smtpd_client_restrictions": "reject_rbl_client zen.dnsbl.test"})
    o = Doors(m).both("127.0.0.2")
    assert 400 <= o.code < 500, o.reply


class Doors:
    """both() for a daemon of its own (its first service)."""

    def __init__(self, m):
        self.m = m
        self.dir = m.dir
        self.ports = {"main": ("127.0.0.1", m.port)}

    def service(self, name):
        return "127.0.0.1:%d" % self.ports[name][1]

    def connect(self, name, source=None, **kw):
        return Client(self.ports[name][1], source=source, **kw)

    def both(self, client, **kw):
        return both(self, "main", client, **kw)


# ===================================================== prefetch, disconnects

def test_prefetch_answers_rcpt_from_cache(tmp_path, moat_factory):
    # The DNSBL answers (A and TXT) must be asked before RCPT: with the
    # server stopped after MAIL, the RCPT is still decided, with the reason.
    with DnsWorld(tmp_path / "world", log_queries=True) as w:
        m = moat_factory(main=world_main(w, dns_timeout="1s",
                                         smtpd_client_restrictions="reject_rbl_client zen.dnsbl.test"))
        with m.connect(source="127.0.0.2") as c:
            check(c.greeting, 220)
            check(c.cmd("EHLO client.test"), 250)
            check(c.cmd("MAIL FROM:<a@b.test>"), 250)

            def asked(qtype):
                with open(w.log_path) as f:
                    return re.search(r"2\.0\.0\.127\.zen\.dnsbl\.test\. %s IN" % qtype, f.read())
            wait_for(lambda: asked("A") and asked("TXT"), 10, what="the zen A and TXT queries before RCPT")
            w.pause()
            try:
                r = c.cmd("RCPT TO:<u@example.test>")
            finally:
                w.resume()
            c.quit()
        assert str(r) == blocked("127.0.0.2", "zen.dnsbl.test", ZEN_2), r


def test_client_disconnecting_during_dns(gw):
    # Gone while its client names are looked up (the PTR query times out).
    c = gw.connect("unknown_client", source="127.0.0.13", greeting=False)
    c.close()
    # Gone while its RCPT waits for a DNS list that never answers.
    c = gw.connect("list_timeout", source="127.0.0.10")
    check(c.cmd("EHLO client.test"), 250)
    check(c.cmd("MAIL FROM:<a@b.test>"), 250)
    c.send("RCPT TO:<u@example.test>\r\n")
    c.close()
    # Sessions that ask the same questions while those queries are still
    # running (coalesced with them), so they complete after the first
    # clients are gone.
    with ThreadPoolExecutor(2) as pool:
        f1 = pool.submit(live_rcpt, gw, "unknown_client", "127.0.0.13", "client.test", "a@b.test", "u@example.test")
        f2 = pool.submit(live_rcpt, gw, "list_timeout", "127.0.0.10", "client.test", "a@b.test", "u@example.test")
        assert str(f1.result(60)) == cannot_find("127.0.0.13")
        r2 = f2.result(60)
        assert r2.code == 450 and r2.enh == "4.7.1", r2
    # The server is healthy.
    expect(both(gw, "zen", "127.0.0.2"), blocked("127.0.0.2", "zen.dnsbl.test", ZEN_2))
    assert gw.m.running()
    assert gw.m.problems() == []


# ===================================================== moat check --trace

def test_check_trace_shows_queries_answers_and_errors(gw):
    out = both(gw, "zen", "127.0.0.2", live=False).stdout
    assert re.search(r"^  client: dns: A 2\.0\.0\.127\.zen\.dnsbl\.test -> 127\.0\.0\.2 127\.0\.0\.4 "
                     r"\((\d+ ms|cache)\)$", out, re.M), out
    assert re.search(r'^  client: dns: TXT 2\.0\.0\.127\.zen\.dnsbl\.test -> "%s" \((\d+ ms|cache)\)$'
                     % re.escape(ZEN_2), out, re.M), out
    assert re.search(r"^  client: dns: name listed\.client\.test \(forward-confirmed\), "
                     r"reverse name listed\.client\.test \(found\)$", out, re.M), out
    out = both(gw, "list_servfail", "127.0.0.10", live=False).stdout
    assert re.search(r"^  client: dns: A 10\.0\.0\.127\.servfail\.test -> TEMPFAIL \(SERVFAIL\) \(\d+ ms\)$",
                     out, re.M), out
    out = both(gw, "unknown_sender", "127.0.0.10", sender="a@nxdomain.test", live=False).stdout
    assert re.search(r"^  sender: dns: MX nxdomain\.test -> NXDOMAIN \((\d+ ms|cache)\)$", out, re.M), out


def test_check_trace_shows_client_name_queries(gw):
    out = both(gw, "unknown_client", "127.0.0.11", live=False).stdout
    assert re.search(r"dns: PTR 11\.0\.0\.127\.in-addr\.arpa -> liar\.client\.test \((\d+ ms|cache)\)$",
                     out, re.M), out
    assert re.search(r"dns: A liar\.client\.test -> 127\.0\.0\.99 \((\d+ ms|cache)\)$", out, re.M), out


def test_check_trace_marks_cached_answers(gw, dns_world):
    script = ("dns_forwarders %s\nsmtpd_delay_reject 0\nclient_restrictions reject_rbl_client,zen.dnsbl.test\n"
              "client one 127.0.0.2\nclient two 127.0.0.2\n" % dns_world.forwarders)
    r = subprocess.run([MOAT, "check", "-c", gw.dir, "--trace", "--script", "-"], input=script,
                       capture_output=True, text=True, timeout=60)
    second = r.stdout.split(">>> client two 127.0.0.2", 1)[1]
    assert re.search(r"dns: A 2\.0\.0\.127\.zen\.dnsbl\.test -> 127\.0\.0\.2 127\.0\.0\.4 \(cache\)$",
                     second, re.M), r.stdout
