"""Address verification end to end (docs/verify.md): reject_unverified_sender
and reject_unverified_recipient in a running moat, probing real receivers
(tests/proto/sink.py) reached through transport_maps: one that accepts
a@ and refuses b@ with 550 5.1.1, one that never answers RCPT in time.
Asserts the replies (the remote 550 quoted as in seed 000), the probe's
transcript (MAIL, RCPT, RSET: never DATA), the cache (negative caching on
and off, one probe for many concurrent checks, results shared by two
moats through Redis), the in-progress answer, and the seed gateway
running with reject_unverified_sender.

Every address is loopback; every process is stopped by PID (fixtures)."""

import re
import threading

from moatlib import Client, wait_for
from queuelib import relay_moat
from seedlib import SEED, seed_gateway

USER_UNKNOWN = "550 5.1.1 <b@ok.test>: Recipient address rejected: User unknown"


def receivers(sink_factory, slow=False):
    ok = sink_factory(name="ok", script={"rcpt": {"b@ok.test": USER_UNKNOWN, "*": "250 2.1.5 Ok"}})
    if not slow:
        return ok, None
    sl = sink_factory(name="slow", host="127.0.0.1", script={"delay": {"rcpt": 30}})
    return ok, sl


def verify_moat(moat_factory, ok, slow=None, main=None, start=True, **kw):
    """A moat whose restrictions verify senders and recipients, with
    ok.test (and slow.test) relayed to the sinks."""
    routes = {"ok.test": ok}
    if slow:
        routes["slow.test"] = slow
    conf = {
        "smtpd_sender_restrictions": "reject_unverified_sender",
        "smtpd_recipient_restrictions": "reject_unverified_recipient, permit_mynetworks, reject_unauth_destination",
        "smtp_rcpt_timeout": "2s",
        "address_verify_poll_delay": "1s",
    }
    conf.update(main or {})
    return relay_moat(moat_factory, routes, main=conf, start=start, **kw)


def rcpt_reply(m, sender, rcpt, source=None):
    with Client(m.port, source=source, timeout=30) as c:
        c.ehlo()
        r = c.cmd("MAIL FROM:<%s>" % sender)
        assert r.code == 250, r
        r = c.cmd("RCPT TO:<%s>" % rcpt, timeout=30)
        c.quit()
    return r


def probes_for(sink, addr):
    return [line for _, line in sink.commands() if line.upper() == "RCPT TO:<%s>" % addr.upper()]


def test_sender_accepted_and_rejected_with_the_remote_reply(moat_factory, sink_factory):
    ok, _ = receivers(sink_factory)
    m = verify_moat(moat_factory, ok, main={"unverified_sender_reject_code": "550"})
    r = rcpt_reply(m, "a@ok.test", "u@ok.test")
    assert r.code == 250, r
    r = rcpt_reply(m, "b@ok.test", "u@ok.test")
    assert r.code == 550, r
    assert str(r).startswith("550 5.1.7 <b@ok.test>: Sender address rejected: undeliverable address: "
                             "host 127.0.0.1[127.0.0.1] said: " + USER_UNKNOWN
                             + " (in reply to RCPT TO command)"), str(r)
    m.wait_log(r"moat/verify\[\d+\]: <b@ok\.test>: undeliverable: host 127\.0\.0\.1\[127\.0\.0\.1\] said: 550")
    # The probes: MAIL FROM the double-bounce address, RCPT, RSET; never DATA.
    cmds = [line for _, line in ok.commands()]
    assert any(re.match(r"MAIL FROM:<double-bounce@", c) for c in cmds), cmds
    assert any(c.upper() == "RSET" for c in cmds), cmds
    assert not any(c.upper() == "DATA" for c in cmds), cmds
    assert ok.stats()["transactions"] == 0


def test_default_reject_code_is_450(moat_factory, sink_factory):
    ok, _ = receivers(sink_factory)
    m = verify_moat(moat_factory, ok)
    r = rcpt_reply(m, "b@ok.test", "u@ok.test")
    assert str(r).startswith("450 4.1.7 <b@ok.test>: Sender address rejected: undeliverable address: host "), str(r)


def test_recipient_verification(moat_factory, sink_factory):
    ok, _ = receivers(sink_factory)
    m = verify_moat(moat_factory, ok, main={"unverified_recipient_reject_code": "550"})
    assert rcpt_reply(m, "", "a@ok.test").code == 250
    r = rcpt_reply(m, "", "b@ok.test")
    assert str(r).startswith("550 5.1.1 <b@ok.test>: Recipient address rejected: undeliverable address: "
                             "host 127.0.0.1[127.0.0.1] said: " + USER_UNKNOWN), str(r)
    # unverified_recipient_reject_reason replaces the probe's text
    m.set_main(unverified_recipient_reject_reason="No such user here")
    m.reload()
    wait_for(lambda: "No such user here" in str(rcpt_reply(m, "", "b@ok.test")), timeout=15,
             what="the reload")
    r = rcpt_reply(m, "", "b@ok.test")
    assert str(r) == "550 5.1.1 <b@ok.test>: Recipient address rejected: undeliverable address: No such user here", \
        str(r)


def test_slow_receiver_is_a_temporary_failure(moat_factory, sink_factory):
    ok, slow = receivers(sink_factory, slow=True)
    m = verify_moat(moat_factory, ok, slow, main={"address_verify_poll_count": "5",
                                                   "address_verify_poll_delay": "2s"})
    r = rcpt_reply(m, "", "c@slow.test")
    assert r.code == 450, r
    assert str(r).startswith("450 4.1.1 <c@slow.test>: Recipient address rejected: unverified address: "
                             "conversation with 127.0.0.1[127.0.0.1] timed out while sending RCPT TO"), str(r)


def test_in_progress_then_the_cached_result(moat_factory, sink_factory):
    ok, _ = receivers(sink_factory)
    # One look only: the first check of a new address never waits.
    m = verify_moat(moat_factory, ok, main={"address_verify_poll_count": "1",
                                            "unverified_recipient_reject_code": "550"})
    r = rcpt_reply(m, "", "b@ok.test")
    assert str(r) == "450 4.1.1 <b@ok.test>: Recipient address rejected: Address verification in progress", str(r)
    m.wait_log(r"moat/verify\[\d+\]: <b@ok\.test>: undeliverable")
    r = rcpt_reply(m, "", "b@ok.test")
    assert r.code == 550 and "said: " + USER_UNKNOWN in str(r), str(r)
    assert len(probes_for(ok, "b@ok.test")) == 1


def test_negative_cache_on_and_off(moat_factory, sink_factory):
    ok, _ = receivers(sink_factory)
    m = verify_moat(moat_factory, ok)
    for _ in range(3):
        assert rcpt_reply(m, "", "b@ok.test").code == 450
    assert len(probes_for(ok, "b@ok.test")) == 1
    for _ in range(2):
        assert rcpt_reply(m, "", "a@ok.test").code == 250
    assert len(probes_for(ok, "a@ok.test")) == 1

    ok2, _ = receivers(sink_factory)
    m2 = verify_moat(moat_factory, ok2, main={"address_verify_negative_cache": "no"})
    for _ in range(3):
        assert rcpt_reply(m2, "", "b@ok.test").code == 450
    assert len(probes_for(ok2, "b@ok.test")) == 3
    for _ in range(2):
        assert rcpt_reply(m2, "", "a@ok.test").code == 250
    assert len(probes_for(ok2, "a@ok.test")) == 1


def test_memory_cache_when_address_verify_map_is_empty(moat_factory, sink_factory):
    ok, _ = receivers(sink_factory)
    m = verify_moat(moat_factory, ok, main={"address_verify_map": ""})
    for _ in range(2):
        assert rcpt_reply(m, "", "a@ok.test").code == 250
    assert len(probes_for(ok, "a@ok.test")) == 1


def test_one_probe_for_many_concurrent_checks(moat_factory, sink_factory):
    ok = sink_factory(name="ok", script={"delay": {"rcpt": 1.5},
                                         "rcpt": {"b@ok.test": USER_UNKNOWN, "*": "250 2.1.5 Ok"}})
    m = verify_moat(moat_factory, ok, main={"address_verify_poll_count": "10"})
    results = []

    def one(i):
        results.append(rcpt_reply(m, "b@ok.test", "u%d@ok.test" % i))

    ts = [threading.Thread(target=one, args=(i,)) for i in range(6)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(60)
    assert len(results) == 6
    for r in results:
        assert str(r).startswith("450 4.1.7 <b@ok.test>: Sender address rejected: undeliverable address"), str(r)
    assert len(probes_for(ok, "b@ok.test")) == 1


def test_local_addresses_need_no_probe(moat_factory, sink_factory):
    ok, _ = receivers(sink_factory)
    m = verify_moat(moat_factory, ok)
    assert rcpt_reply(m, "x@example.test", "anyone@example.test").code == 250
    assert ok.stats()["sessions"] == 0


def test_error_transport_answers_without_a_probe(moat_factory, sink_factory):
    ok, _ = receivers(sink_factory)
    m = verify_moat(moat_factory, ok, start=False, main={"unverified_recipient_reject_code": "550"})
    m.files["transport"] += "gone.test error:5.1.2 This domain is gone\n"
    m.main["relay_domains"] += ", gone.test"
    m.start()
    r = rcpt_reply(m, "", "x@gone.test")
    assert str(r) == ("550 5.1.1 <x@gone.test>: Recipient address rejected: undeliverable address: "
                      "This domain is gone"), str(r)


def test_results_shared_by_two_moats_through_redis(moat_factory, sink_factory, redis_server):
    ok, _ = receivers(sink_factory)
    main = {"state_store": redis_server.url}
    m1 = verify_moat(moat_factory, ok, main=main)
    m2 = verify_moat(moat_factory, ok, main=main)
    assert rcpt_reply(m1, "", "b@ok.test").code == 450
    assert rcpt_reply(m1, "", "a@ok.test").code == 250
    assert redis_server.cli("EXISTS", "vrfy:b@ok.test").strip() == "1"
    before = len(ok.commands())
    r = rcpt_reply(m2, "", "b@ok.test")
    assert r.code == 450 and "said: " + USER_UNKNOWN in str(r), str(r)
    assert rcpt_reply(m2, "", "a@ok.test").code == 250
    assert len(ok.commands()) == before   # m2 asked nobody


# ------------------------------------------------------------ the seed gateway

def test_seed_gateway_runs_with_reject_unverified_sender(tmp_path, sink_factory, dns_world):
    if not (SEED / "main.cf").exists():
        import pytest
        pytest.skip("%s not present" % SEED)
    ok = sink_factory(name="senders", script={"rcpt": {"departed@hasmx.test": "550 5.1.1 <departed@hasmx.test>: "
                                                       "User unknown in local recipient table",
                                                       "*": "250 2.1.5 Ok"}})
    relay = sink_factory(name="relay")

    def as_expected(text):
        assert "reject_unverified_sender" in text
        assert re.search(r"(?m)^body_checks = pcre:", text)

    with seed_gateway(tmp_path, dns_world, {"hasmx.test": ok.port, "example.test": relay.port},
                      as_expected) as (d, port):
            r = rcpt_reply(_Port(port), "someone@hasmx.test",
                           "u@example.test", source="127.0.0.10")
            assert r.code == 250, r
            r = rcpt_reply(_Port(port), "departed@hasmx.test", "u@example.test", source="127.0.0.10")
            # seed 000: the remote refusal, quoted
            assert str(r).startswith("450 4.1.7 <departed@hasmx.test>: Sender address rejected: undeliverable address: "
                                     "host 127.0.0.1[127.0.0.1] said: 550 5.1.1 <departed@hasmx.test>: User unknown in "
                                     "local recipient table (in reply to RCPT TO command)"), str(r)


class _Port:
    def __init__(self, port):
        self.port = port
