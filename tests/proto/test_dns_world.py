"""The DNS test world answers as tests/dns/README.md documents.

Other tests are written against these names; these tests pin the contract
down so that a change to tests/dns/*.conf that breaks it fails here first,
with a message naming the record, rather than somewhere in a moat test.
"""

import os
import socket
from concurrent.futures import ThreadPoolExecutor

import pytest

import dnsworld
from dnsworld import DnsWorld, DnsWorldError


def rev4(addr, zone):
    return ".".join(reversed(addr.split("."))) + "." + zone


def rev6(addr, zone):
    packed = socket.inet_pton(socket.AF_INET6, addr)
    nibbles = []
    for b in reversed(packed):
        nibbles += ["%x" % (b & 0xF), "%x" % (b >> 4)]
    return ".".join(nibbles) + "." + zone


def answers(w, name, qtype):
    rcode, data = w.query(name, qtype)
    assert rcode == "NOERROR", "%s %s: %s" % (name, qtype, rcode)
    return sorted(data)


def assert_nxdomain(w, name, qtype="A"):
    assert w.query(name, qtype) == ("NXDOMAIN", []), "%s %s should not exist" % (name, qtype)


def assert_nodata(w, name, qtype):
    assert w.query(name, qtype) == ("NOERROR", []), "%s should exist without %s" % (name, qtype)


# ------------------------------------------------------------- reverse DNS

FCRDNS = [   # client address, PTR name; the name's A is the address
    ("127.0.0.1", "localhost"),
    ("127.0.0.2", "listed.client.test"),
    ("127.0.0.3", "only-bl.client.test"),
    ("127.0.0.10", "good.client.test"),
    ("127.0.0.14", "friend.client.test"),
    ("127.0.0.16", "good16.client.test"),
]


@pytest.mark.parametrize("addr,name", FCRDNS)
def test_ptr_forward_confirms(dns_world, addr, name):
    assert answers(dns_world, rev4(addr, "in-addr.arpa"), "PTR") == [name]
    assert answers(dns_world, name, "A") == [addr]


def test_liar_ptr_does_not_forward_confirm(dns_world):
    assert answers(dns_world, "11.0.0.127.in-addr.arpa", "PTR") == ["liar.client.test"]
    assert answers(dns_world, "liar.client.test", "A") == ["127.0.0.99"]


def test_no_ptr_is_nxdomain(dns_world):
    assert_nxdomain(dns_world, "12.0.0.127.in-addr.arpa", "PTR")
    assert_nxdomain(dns_world, "250.0.0.127.in-addr.arpa", "PTR")


def test_ptr_servfail(dns_world):
    assert dns_world.query("15.0.0.127.in-addr.arpa", "PTR") == ("SERVFAIL", [])


def test_ipv6_loopback_ptr(dns_world):
    assert answers(dns_world, rev6("::1", "ip6.arpa"), "PTR") == ["localhost"]
    assert answers(dns_world, "localhost", "AAAA") == ["::1"]


def test_parents_of_reverse_names_exist(dns_world):
    # No NXDOMAIN above a name that exists (RFC 8020 resolvers would
    # believe it): in-addr.arpa and 0.0.127.in-addr.arpa are empty
    # non-terminals.
    for name in ("arpa", "in-addr.arpa", "127.in-addr.arpa", "0.0.127.in-addr.arpa",
                 "ip6.arpa"):
        assert dns_world.query(name, "PTR") == ("NOERROR", []), name


# ------------------------------------------------------------ DNSBL zones

def test_zen_lists_127_0_0_2_with_two_codes_and_reason(dns_world):
    q = rev4("127.0.0.2", "zen.dnsbl.test")
    assert answers(dns_world, q, "A") == ["127.0.0.2", "127.0.0.4"]
    assert answers(dns_world, q, "TXT") == ["Listed in zen, see https://zen.dnsbl.test/q/127.0.0.2"]


def test_bl_lists_127_0_0_2_and_127_0_0_3(dns_world):
    assert answers(dns_world, rev4("127.0.0.2", "bl.dnsbl.test"), "A") == ["127.0.0.2"]
    assert answers(dns_world, rev4("127.0.0.2", "bl.dnsbl.test"), "TXT") == ["bl says 127.0.0.2 is bad"]
    assert answers(dns_world, rev4("127.0.0.3", "bl.dnsbl.test"), "A") == ["127.0.0.3"]
    assert answers(dns_world, rev4("127.0.0.3", "bl.dnsbl.test"), "TXT") == ["bl lists 127.0.0.3"]


def test_only_bl_client_is_not_in_zen(dns_world):
    assert_nxdomain(dns_world, rev4("127.0.0.3", "zen.dnsbl.test"))


@pytest.mark.parametrize("addr", ["127.0.0.1", "127.0.0.10", "127.0.0.11", "127.0.0.12"])
@pytest.mark.parametrize("zone", ["zen.dnsbl.test", "bl.dnsbl.test", "wl.dnswl.test"])
def test_unlisted_clients(dns_world, addr, zone):
    assert_nxdomain(dns_world, rev4(addr, zone))
    assert_nxdomain(dns_world, rev4(addr, zone), "TXT")


def test_friend_is_listed_and_allowlisted(dns_world):
    assert answers(dns_world, rev4("127.0.0.14", "zen.dnsbl.test"), "A") == ["127.0.0.2"]
    assert answers(dns_world, rev4("127.0.0.14", "wl.dnswl.test"), "A") == ["127.0.10.2"]
    assert answers(dns_world, rev4("127.0.0.14", "wl.dnswl.test"), "TXT") != []
    assert_nxdomain(dns_world, rev4("127.0.0.14", "bl.dnsbl.test"))


def test_listed_client_is_not_allowlisted(dns_world):
    # The scoring tests rely on 127.0.0.2 NOT being rescued by wl.dnswl.test.
    assert_nxdomain(dns_world, rev4("127.0.0.2", "wl.dnswl.test"))


def test_pbl_style_code(dns_world):
    assert answers(dns_world, rev4("127.0.0.16", "zen.dnsbl.test"), "A") == ["127.0.0.10"]
    assert_nxdomain(dns_world, rev4("127.0.0.16", "bl.dnsbl.test"))


@pytest.mark.parametrize("addr", ["::1", "2001:db8::1"])
def test_ipv6_client_listed_in_nibble_form(dns_world, addr):
    q = rev6(addr, "zen.dnsbl.test")
    assert answers(dns_world, q, "A") == ["127.0.0.2"]
    assert answers(dns_world, q, "TXT") == ["v6 listed"]
    assert_nxdomain(dns_world, rev6(addr, "bl.dnsbl.test"))
    assert_nxdomain(dns_world, rev6("2001:db8::2", "zen.dnsbl.test"))


@pytest.mark.parametrize("zone", ["zen.dnsbl.test", "bl.dnsbl.test"])
def test_rfc5782_test_points(dns_world, zone):
    assert "127.0.0.2" in answers(dns_world, "2.0.0.127." + zone, "A")
    assert answers(dns_world, "2.0.0.127." + zone, "TXT") != []
    assert_nxdomain(dns_world, "1.0.0.127." + zone)


@pytest.mark.parametrize("addr", ["127.0.0.1", "127.0.0.10", "192.0.2.77", "::1"])
def test_dead_list_answers_everything(dns_world, addr):
    q = rev6(addr, "dead.dnsbl.test") if ":" in addr else rev4(addr, "dead.dnsbl.test")
    assert answers(dns_world, q, "A") == ["127.0.0.2"]
    assert answers(dns_world, q, "TXT") != []


@pytest.mark.parametrize("addr", ["127.0.0.1", "127.0.0.2", "192.0.2.77"])
def test_error_code_list(dns_world, addr):
    assert answers(dns_world, rev4(addr, "err.dnsbl.test"), "A") == ["127.255.255.254"]


@pytest.mark.parametrize("addr", ["127.0.0.1", "127.0.0.2", "192.0.2.77"])
def test_wildcard_list_outside_127(dns_world, addr):
    assert answers(dns_world, rev4(addr, "wild.dnsbl.test"), "A") == ["192.0.2.1"]


def test_answer_everything_zones_have_no_other_types(dns_world):
    # A wildcard zone answers A (and TXT), not MX: NODATA, with the SOA.
    r = dns_world.lookup("2.0.0.127.dead.dnsbl.test", "MX")
    assert (r.rcode, r.answers) == ("NOERROR", [])
    assert [a.type for a in r.authority] == ["SOA"]


# ------------------------------------------------------------ RHSBL / RHSWL

@pytest.mark.parametrize("domain,reason", [
    ("spammer.test", "spammer.test is a spam domain"),
    ("bad-helo.test", "bad-helo.test is a spam domain"),
    ("listed.client.test", "listed.client.test is a spam host"),
])
def test_rhsbl_listings(dns_world, domain, reason):
    assert answers(dns_world, domain + ".rhsbl.test", "A") == ["127.0.0.2"]
    assert answers(dns_world, domain + ".rhsbl.test", "TXT") == [reason]


@pytest.mark.parametrize("domain", ["friend.test", "good.client.test", "hasmx.test",
                                    "aonly.test", "only-bl.client.test", "invalid"])
def test_rhsbl_not_listed(dns_world, domain):
    assert_nxdomain(dns_world, domain + ".rhsbl.test")


def test_rhsbl_rfc5782_test_points(dns_world):
    assert answers(dns_world, "test.rhsbl.test", "A") == ["127.0.0.2"]
    assert_nxdomain(dns_world, "invalid.rhsbl.test")


def test_rhswl(dns_world):
    assert answers(dns_world, "friend.test.rhswl.test", "A") == ["127.0.0.2"]
    assert_nxdomain(dns_world, "spammer.test.rhswl.test")
    assert_nxdomain(dns_world, "good.client.test.rhswl.test")


# ------------------------------------------------------------------ domains

def test_hasmx(dns_world):
    assert answers(dns_world, "hasmx.test", "MX") == ["10 mx1.hasmx.test", "20 mx2.hasmx.test"]
    assert answers(dns_world, "mx1.hasmx.test", "A") == ["127.0.0.20"]
    assert answers(dns_world, "mx2.hasmx.test", "A") == ["127.0.0.21"]
    assert answers(dns_world, "hasmx.test", "NS") == ["ns1.hasmx.test"]
    assert answers(dns_world, "ns1.hasmx.test", "A") == ["127.0.0.22"]
    assert_nodata(dns_world, "hasmx.test", "A")


def test_aonly_and_aaaaonly(dns_world):
    assert answers(dns_world, "aonly.test", "A") == ["127.0.0.23"]
    assert_nodata(dns_world, "aonly.test", "MX")
    assert_nodata(dns_world, "aonly.test", "AAAA")
    assert answers(dns_world, "aaaaonly.test", "AAAA") == ["2001:db8::23"]
    assert_nodata(dns_world, "aaaaonly.test", "A")
    assert_nodata(dns_world, "aaaaonly.test", "MX")


def test_nothing_exists_without_address_or_mx(dns_world):
    assert answers(dns_world, "nothing.test", "TXT") != []
    for t in ("A", "AAAA", "MX"):
        assert_nodata(dns_world, "nothing.test", t)


@pytest.mark.parametrize("name", ["nxdomain.test", "www.nxdomain.test", "nxhost.test"])
@pytest.mark.parametrize("qtype", ["A", "AAAA", "MX", "TXT", "NS"])
def test_nxdomain(dns_world, name, qtype):
    assert_nxdomain(dns_world, name, qtype)


def test_null_mx(dns_world):
    assert answers(dns_world, "nullmx.test", "MX") == ["0 ."]
    assert answers(dns_world, "nullmx.test", "A") == ["127.0.0.24"]


def test_bad_mx_and_ns_hosts(dns_world):
    assert answers(dns_world, "badmx.test", "MX") == ["10 mx.evil.test"]
    assert answers(dns_world, "mx.evil.test", "A") == ["127.0.0.66"]
    assert answers(dns_world, "badns.test", "NS") == ["ns.evil.test"]
    assert answers(dns_world, "ns.evil.test", "A") == ["127.0.0.67"]
    assert answers(dns_world, "badns.test", "A") == ["127.0.0.68"]


def test_spammer_friend_and_bad_helo(dns_world):
    assert answers(dns_world, "spammer.test", "A") == ["127.0.0.30"]
    assert answers(dns_world, "spammer.test", "MX") == ["10 mx1.hasmx.test"]
    assert answers(dns_world, "friend.test", "A") == ["127.0.0.31"]
    assert answers(dns_world, "bad-helo.test", "A") == ["127.0.0.32"]


# ------------------------------------------------- delivery (deliver.test)

def test_mx_preference_pair(dns_world):
    assert answers(dns_world, "mxpref.deliver.test", "MX") == ["10 mx1.deliver.test",
                                                               "20 mx2.deliver.test"]
    assert answers(dns_world, "mx1.deliver.test", "A") == ["127.0.0.61"]
    assert answers(dns_world, "mx2.deliver.test", "A") == ["127.0.0.62"]
    assert_nodata(dns_world, "mxpref.deliver.test", "A")
    assert_nodata(dns_world, "mx1.deliver.test", "AAAA")


def test_mx_fallback_past_a_dead_host(dns_world):
    assert answers(dns_world, "mxfallback.deliver.test", "MX") == ["10 dead.deliver.test",
                                                                   "20 mx2.deliver.test"]
    assert answers(dns_world, "dead.deliver.test", "A") == ["127.0.0.60"]


def test_a_fallback_without_mx(dns_world):
    assert answers(dns_world, "amx.deliver.test", "A") == ["127.0.0.63"]
    assert_nodata(dns_world, "amx.deliver.test", "MX")
    assert_nodata(dns_world, "amx.deliver.test", "AAAA")


def test_mx_host_without_address(dns_world):
    assert answers(dns_world, "noaddr.deliver.test", "MX") == ["10 nowhere.deliver.test"]
    for t in ("A", "AAAA"):
        assert_nxdomain(dns_world, "nowhere.deliver.test", t)


def test_mx_that_points_back_at_the_tests_hostname(dns_world):
    import moatlib
    assert answers(dns_world, "loop.deliver.test", "MX") == ["10 " + moatlib.HOSTNAME]
    assert answers(dns_world, moatlib.HOSTNAME, "A") == ["127.0.0.1"]
    assert_nodata(dns_world, moatlib.HOSTNAME, "MX")
    # example.test (every test's mydestination) holds no records itself.
    for t in ("A", "MX"):
        assert_nodata(dns_world, "example.test", t)
    assert_nxdomain(dns_world, "other.example.test")


def test_ipv6_only_destination(dns_world):
    assert answers(dns_world, "six.deliver.test", "AAAA") == ["::1"]
    assert_nodata(dns_world, "six.deliver.test", "A")
    assert_nodata(dns_world, "six.deliver.test", "MX")


def test_deliver_test_has_no_other_names(dns_world):
    for name in ("deliver.test", "www.deliver.test", "mx3.deliver.test"):
        r = dns_world.query(name, "A")
        assert r in (("NXDOMAIN", []), ("NOERROR", [])), (name, r)
    assert_nxdomain(dns_world, "mx3.deliver.test")


def test_no_ns_above_the_test_domains(dns_world):
    # check_*_ns_access walks up from aonly.test and finds nothing.
    assert_nodata(dns_world, "aonly.test", "NS")
    assert_nodata(dns_world, "test", "NS")


def test_timeout_names_get_no_answer(dns_world):
    # Every type, at the name and below it, and client 127.0.0.13's PTR;
    # asked all at once so that the 2 s waits overlap.
    probes = [(n, t) for n in ("timeout.test", "host.timeout.test")
              for t in ("A", "AAAA", "MX", "TXT", "NS", "PTR", "SOA")]
    probes.append(("13.0.0.127.in-addr.arpa", "PTR"))

    def probe(nt):
        try:
            return dns_world.lookup(nt[0], nt[1], timeout=2.0)
        except TimeoutError:
            return "timeout"

    with ThreadPoolExecutor(len(probes)) as pool:
        results = dict(zip(probes, pool.map(probe, probes)))
    assert results == {p: "timeout" for p in probes}


@pytest.mark.parametrize("qtype", ["A", "AAAA", "MX", "TXT", "NS"])
def test_servfail_names(dns_world, qtype):
    # An answer (not a timeout): the stub server refuses at once.
    for name in ("servfail.test", "host.servfail.test"):
        assert dns_world.query(name, qtype) == ("SERVFAIL", []), name


# --------------------------------------------------------------------- TTLs

def test_ttls(dns_world):
    r = dns_world.lookup("hasmx.test", "MX")
    assert {a.ttl for a in r.answers} == {300}
    r = dns_world.lookup("ttl1.test", "A")
    assert [(a.text, a.ttl) for a in r.answers] == [("127.0.0.40", 1)]


@pytest.mark.parametrize("name,qtype,zone", [
    ("nxdomain.test", "A", "test"),
    ("nothing.test", "MX", "test"),
    ("12.0.0.127.in-addr.arpa", "PTR", "arpa"),
    ("1.0.0.127.zen.dnsbl.test", "A", "test"),
    ("nothing.example", "A", ""),
])
def test_negative_answers_carry_soa_minimum_60(dns_world, name, qtype, zone):
    r = dns_world.lookup(name, qtype)
    assert r.answers == []
    assert len(r.authority) == 1
    soa = r.authority[0]
    assert (soa.type, soa.name, soa.ttl) == ("SOA", zone, 60)
    assert soa.text.split()[-1] == "60"


# ------------------------------------------------------- nothing else exists

@pytest.mark.parametrize("name", ["www.example.net", "example.net", "localhost.localdomain",
                                  "net", "www.google.de", "1.1.1.1.in-addr.arpa"])
def test_everything_else_is_nxdomain_locally(dns_world, name):
    # Answered from the static root zone, never from the Internet.
    r = dns_world.lookup(name, "A")
    assert r.rcode == "NXDOMAIN"
    assert [a.type for a in r.authority] == ["SOA"]


# -------------------------------------------------------- the server itself

def test_forwarders_string(dns_world):
    assert dns_world.forwarders == "127.0.0.1@%d" % dns_world.port
    assert dns_world.port != 53


def test_shared_world_refuses_pause(dns_world):
    with pytest.raises(DnsWorldError):
        dns_world.pause()
    assert dns_world.query("aonly.test", "A") == ("NOERROR", ["127.0.0.23"])


def test_pause_and_resume(dns_world_private):
    w = dns_world_private
    assert w.query("aonly.test", "A") == ("NOERROR", ["127.0.0.23"])
    w.pause()
    with pytest.raises(TimeoutError):
        w.lookup("aonly.test", "A", timeout=1.0)
    w.resume()
    assert w.query("aonly.test", "A") == ("NOERROR", ["127.0.0.23"])


def test_stop_by_pid_and_restart(dns_world_private):
    w = dns_world_private
    pid = w.pid
    assert os.path.exists(w.pid_path)
    assert w.stop() == 0
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    w.restart()
    assert w.pid != pid
    assert w.query("hasmx.test", "MX")[0] == "NOERROR"


def test_stop_while_paused(dns_world_private):
    w = dns_world_private
    w.pause()
    assert w.stop() == 0


def test_data_sets_load_separately(tmp_path):
    with DnsWorld(tmp_path / "w", data=["world"]) as w:
        assert w.query("aonly.test", "A") == ("NOERROR", ["127.0.0.23"])
        assert_nxdomain(w, "spike.porcupine.org")
    with DnsWorld(tmp_path / "r", data=["postfix-replay"]) as w:
        assert answers(w, "spike.porcupine.org", "A") == ["168.100.3.2"]
        assert_nxdomain(w, "aonly.test")
    with pytest.raises(DnsWorldError):
        DnsWorld(tmp_path / "x", data=["no-such-set"])


def test_log_file_in_temp_dir(dns_world):
    assert os.path.dirname(dns_world.log_path) == dns_world.dir
    with open(dns_world.log_path) as f:
        assert "start of service" in f.read()


def test_query_encoder_rejects_bad_names():
    with pytest.raises(ValueError):
        dnsworld.encode_name("a..b")
    with pytest.raises(ValueError):
        dnsworld.encode_name("x" * 64 + ".test")


# ------------------------------------------- the Postfix replay zone data

def test_replay_porcupine_hosts(dns_world):
    w = dns_world
    assert answers(w, "spike.porcupine.org", "A") == ["168.100.3.2"]
    assert answers(w, "spike.porcupine.org", "AAAA") != []
    assert_nodata(w, "spike.porcupine.org", "MX")
    assert answers(w, "fist.porcupine.org", "A") == ["168.100.3.4"]
    for t in ("AAAA", "MX"):
        assert_nodata(w, "fist.porcupine.org", t)
    assert answers(w, "xn--1xa.porcupine.org", "MX") == ["10 spike.porcupine.org"]
    for t in ("A", "AAAA"):
        assert_nodata(w, "xn--1xa.porcupine.org", t)
    assert answers(w, "nullmx.porcupine.org", "MX") == ["0 ."]
    assert answers(w, "nullmx.porcupine.org", "A") != []
    assert_nodata(w, "nullmx.porcupine.org", "AAAA")
    for t in ("A", "AAAA", "MX"):
        assert_nxdomain(w, "nxdomain.porcupine.org", t)


def test_replay_server_access_data(dns_world):
    w = dns_world
    assert answers(w, "www.porcupine.org", "MX") == ["10 spike.porcupine.org"]
    assert answers(w, "www.porcupine.org", "A") != ["168.100.3.2"]
    assert_nodata(w, "www.porcupine.org", "NS")
    ns = answers(w, "porcupine.org", "NS")
    assert "168.100.3.75" in [a for n in ns for a in answers(w, n, "A")]
    ns = answers(w, "maildaemon.org", "NS")
    assert "168.100.3.75" in [a for n in ns for a in answers(w, n, "A")]
    mx = answers(w, "postfix.org", "MX")
    hosts = [m.split()[1] for m in mx]
    assert "168.100.3.2" not in [a for h in hosts for a in answers(w, h, "A")]
    for t in ("MX", "NS", "A"):
        assert_nxdomain(w, "example.tld", t)
        assert_nxdomain(w, "tld", t)


def test_replay_mx_backup(dns_world):
    w = dns_world
    assert answers(w, "backup.porcupine.org", "MX") == ["10 fist.porcupine.org",
                                                         "20 wzv.porcupine.org"]
    assert answers(w, "porcupine.org", "MX") == ["10 spike.porcupine.org"]
    assert answers(w, "ibm.com", "MX") != []


def test_replay_dnsxl(dns_world):
    w = dns_world
    q = "2.0.0.127.dnsbltest.porcupine.org"
    assert answers(w, q, "A") == ["127.0.0.2"]
    assert answers(w, q, "TXT") == ["DNS blocklist test"]
    assert answers(w, "3.0.0.127.dnsbltest.porcupine.org", "A") == ["127.0.0.3"]
    assert_nxdomain(w, "1.0.0.127.dnsbltest.porcupine.org")
    assert_nxdomain(w, "2.3.100.168.dnsbltest.porcupine.org")
    assert answers(w, "example.tld.rhsbl.porcupine.org", "TXT") == ["RHSBL test"]
    assert_nxdomain(w, "sdomain.rhsbl.porcupine.org")
    assert answers(w, "example.tld.dnswl.porcupine.org", "A") == ["127.0.0.2"]
    assert_nxdomain(w, "spike.porcupine.org.dnswl.porcupine.org")
    assert answers(w, "2.3.100.168.wild.porcupine.org", "A") == ["127.0.0.2"]
    assert_nxdomain(w, "2.3.100.168.porcupine.org")


@pytest.mark.parametrize("name", ["foo", "bad.domain", "no.sender.domain",
                                  "no.recipient.domain", "123.123.123.123"])
def test_replay_unknown_names(dns_world, name):
    for t in ("A", "AAAA", "MX"):
        assert_nxdomain(dns_world, name, t)
