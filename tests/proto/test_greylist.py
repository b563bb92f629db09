"""check_greylist end to end: a real client (smtplib) is refused with
451 4.7.1, retries after a short greylist_delay and is accepted, and the
relayed message carries X-Greylist:; auto-allow after N passes; the
client, recipient and DNS allow lists; the fcrdns identity (two pool
addresses under one domain in the DNS test world share a triplet); two
moats sharing one Redis; a store that is down (defer or skip); and the
postmaster's `moat greylist list|allow|remove|stats`.

Tests sleep only as long as the configured delay (1-2 s), never assert
timings.  Every address is loopback; every process is stopped by PID.
"""

import smtplib
import time

import pytest

from moatlib import simple_message, wait_for
from queuelib import relay_moat

RESTRICTIONS = "reject_unauth_destination, check_greylist"


def grey_moat(moat_factory, sink=None, **extra):
    """A moat that greylists relay.test's recipients: relayed to sink, or
    (sink None: tests that need no delivered message) discarded."""
    main = {
        "smtpd_recipient_restrictions": RESTRICTIONS,
        "greylist_delay": "2s",
        "smtpd_client_event_limit_exceptions": "127.0.0.0/8",
    }
    main.update(extra)
    if sink is None:
        main.update({"relay_domains": "relay.test", "default_transport": "discard"})
        return moat_factory(main=main)
    return relay_moat(moat_factory, {"relay.test": sink}, main=main)


def smtp_send(m, source, sender, rcpts, subject="greylist"):
    """One transaction with smtplib from source; {rcpt: (code, text)} of
    the refused recipients ({} when all were accepted)."""
    msg = simple_message(subject=subject)
    with smtplib.SMTP("127.0.0.1", m.port, source_address=(source, 0), timeout=20) as s:
        s.ehlo("client.test")
        try:
            refused = s.sendmail(sender, rcpts, msg)
        except smtplib.SMTPRecipientsRefused as e:
            refused = e.recipients
        return {r: (code, text.decode() if isinstance(text, bytes) else text)
                for r, (code, text) in refused.items()}


def greylisted(refused, rcpt):
    code, text = refused[rcpt]
    assert code == 451, refused
    assert text.startswith("4.7.1 <%s>: Recipient address rejected: Greylisted, please try again in " % rcpt), text
    return int(text.split("try again in ")[1].split()[0])


def test_greylisted_then_accepted_with_header(moat_factory, sink_factory):
    sink = sink_factory()
    m = grey_moat(moat_factory, sink)
    refused = smtp_send(m, "127.0.0.2", "bounce-123@sender.test", ["u@relay.test"])
    assert greylisted(refused, "u@relay.test") in (1, 2)
    m.wait_log(r"NOQUEUE: reject: RCPT from \S+\[127\.0\.0\.2\]: 451 4\.7\.1 <u@relay\.test>: Recipient address "
               r"rejected: Greylisted, please try again in \d seconds; from=<bounce-123@sender\.test> "
               r"to=<u@relay\.test> proto=ESMTP helo=<client\.test>.*rule=recipient:check_greylist")
    # an immediate retry: still greylisted (VERP number changed: same triplet)
    refused = smtp_send(m, "127.0.0.3", "bounce-456@sender.test", ["u@relay.test"])
    assert greylisted(refused, "u@relay.test") <= 2
    time.sleep(2.2)
    assert smtp_send(m, "127.0.0.2", "bounce-789@sender.test", ["u@relay.test"], subject="retry") == {}
    got = sink.wait_messages(1)[0]
    data = got["data"].decode()
    head = data.split("\r\n\r\n", 1)[0]
    assert "\r\nX-Greylist: delayed " in "\r\n" + head, head
    line = [x for x in head.split("\r\n") if x.startswith("X-Greylist:")][0]
    delayed = int(line.split()[2])
    assert delayed >= 2
    assert line.startswith("X-Greylist: delayed %d seconds by moat at " % delayed), line
    m.wait_log(r"info: greylist: pass: delayed \d+ s: triplet 127\.0\.0\.0/bounce-#@sender\.test/u@relay\.test")
    # passed: later mail of the triplet goes through at once, without a header
    assert smtp_send(m, "127.0.0.2", "bounce-1@sender.test", ["u@relay.test"], subject="third") == {}
    msgs = sink.wait_messages(2)
    third = [x for x in msgs if b"Subject: third" in x["data"]][0]
    assert b"X-Greylist:" not in third["data"]


def test_auto_allow_after_passes(moat_factory):
    m = grey_moat(moat_factory, greylist_delay="1s", greylist_auto_allow_count="1")
    greylisted(smtp_send(m, "127.0.0.2", "a@sender.test", ["one@relay.test"]), "one@relay.test")
    time.sleep(1.2)
    assert smtp_send(m, "127.0.0.2", "a@sender.test", ["one@relay.test"]) == {}
    # one pass is enough: another recipient and sender, from the same /24
    wait_for(lambda: smtp_send(m, "127.0.0.9", "b@other.test", ["two@relay.test"]) == {},
             timeout=10, what="the client network to be auto-allowed")
    out = m.run_cli("greylist", "stats", check=True).stdout
    assert "clients allowed: 1\n" in out, out


def test_allow_lists(moat_factory, dns_world):
    m = grey_moat(moat_factory,
                  greylist_client_netmask="32",
                  greylist_client_allow_maps="127.0.0.5, inline:{ 127.0.0.6=OK }",
                  greylist_recipient_allow_maps="inline:{ postmaster@=OK }",
                  greylist_dnswl_sites="wl.dnswl.test")
    assert smtp_send(m, "127.0.0.5", "a@sender.test", ["u@relay.test"]) == {}
    assert smtp_send(m, "127.0.0.6", "a@sender.test", ["u@relay.test"]) == {}
    # 127.0.0.14 is listed in wl.dnswl.test (tests/dns/world.conf)
    assert smtp_send(m, "127.0.0.14", "a@sender.test", ["u@relay.test"]) == {}
    refused = smtp_send(m, "127.0.0.7", "a@sender.test", ["u@relay.test", "postmaster@relay.test"])
    greylisted(refused, "u@relay.test")
    assert "postmaster@relay.test" not in refused
    out = m.run_cli("check", "--client", "127.0.0.14", "--from", "a@sender.test", "--rcpt", "u@relay.test",
                    "--trace").stdout
    assert "greylist_dnswl_sites: client 127.0.0.14 is listed in wl.dnswl.test" in out, out


def test_fcrdns_identity_shares_a_triplet_across_a_pool(moat_factory, dns_world):
    # tests/dns/world.conf, "greylist" section: 127.0.60.1 is
    # out-1.mail.grey-pool.test, 127.0.61.1 is out-2.grey-pool.test
    m = grey_moat(moat_factory, greylist_identity="fcrdns")
    greylisted(smtp_send(m, "127.0.60.1", "news@grey-pool.test", ["u@relay.test"]), "u@relay.test")
    time.sleep(2.2)
    # the retry comes from the other host of the pool, in another /24
    assert smtp_send(m, "127.0.61.1", "news@grey-pool.test", ["u@relay.test"]) == {}
    out = m.run_cli("greylist", "list", check=True).stdout
    assert out.startswith("grey-pool.test news@grey-pool.test u@relay.test "), out
    assert " passed " in out, out
    # without a confirmed name the identity stays the network
    greylisted(smtp_send(m, "127.0.62.1", "news@grey-pool.test", ["u@relay.test"]), "u@relay.test")


def test_two_moats_share_greylisting_through_redis(moat_factory, sink_factory, redis_server):
    sink = sink_factory()
    a = grey_moat(moat_factory, sink, state_store=redis_server.url)
    b = grey_moat(moat_factory, sink, state_store=redis_server.url)
    greylisted(smtp_send(a, "127.0.0.2", "a@sender.test", ["u@relay.test"]), "u@relay.test")
    # b knows the triplet: the same wait, not a new one
    wait_for(lambda: redis_server.cli("EXISTS", "grey:127.0.0.0/a@sender.test/u@relay.test") == "1",
             timeout=10, what="moat a's triplet in redis")
    time.sleep(2.2)
    assert smtp_send(b, "127.0.0.2", "a@sender.test", ["u@relay.test"]) == {}
    assert sink.wait_messages(1)[0]["rcpt_tos"] == ["u@relay.test"]


@pytest.mark.parametrize("action", ["defer", "skip"])
def test_store_down(moat_factory, redis_server, action):
    m = grey_moat(moat_factory, state_store=redis_server.url, state_store_fail_action=action)
    redis_server.stop()
    refused = smtp_send(m, "127.0.0.2", "a@sender.test", ["u@relay.test"])
    if action == "defer":
        code, text = refused["u@relay.test"]
        assert code == 451 and text.startswith("4.3.0 "), refused
        assert "Temporary state store failure" in text, text
    else:
        assert refused == {}
    m.wait_log(r"warning: .*check_greylist: state store redis://127\.0\.0\.1:\d+/0: ")


def test_cli_list_allow_remove_stats(moat_factory):
    m = grey_moat(moat_factory, greylist_delay="1s", greylist_auto_allow_count="3")
    greylisted(smtp_send(m, "127.0.0.2", "a@sender.test", ["u@relay.test"]), "u@relay.test")
    greylisted(smtp_send(m, "127.0.0.2", "", ["v@relay.test"]), "v@relay.test")
    greylisted(smtp_send(m, "127.0.1.2", "b@sender.test", ["u@relay.test"]), "u@relay.test")
    time.sleep(1.2)
    assert smtp_send(m, "127.0.0.2", "a@sender.test", ["u@relay.test"]) == {}

    def listing():
        return m.run_cli("greylist", "list", check=True).stdout.splitlines()
    wait_for(lambda: any(" passed " in x for x in listing()), timeout=10, what="the pass to be recorded")
    rows = listing()
    assert len(rows) == 3, rows
    fields = [r.split() for r in rows]
    assert [f[:3] for f in fields] == [["127.0.0.0", "<>", "v@relay.test"],
                                       ["127.0.0.0", "a@sender.test", "u@relay.test"],
                                       ["127.0.1.0", "b@sender.test", "u@relay.test"]], rows
    assert [f[6] for f in fields] == ["pending", "passed", "pending"], rows
    assert fields[0][5].endswith("s")            # age
    out = m.run_cli("greylist", "list", "--prefix", "127.0.1.0/", check=True).stdout
    assert out.startswith("127.0.1.0 b@sender.test u@relay.test "), out and len(out.splitlines()) == 1

    out = m.run_cli("greylist", "stats", check=True).stdout
    assert out == "triplets pending: 2\ntriplets passed: 1\nclients allowed: 0\nclients counting: 1\n", out

    # allow: the client's network passes at once from now on
    r = m.run_cli("greylist", "allow", "127.0.1.77", check=True)
    assert "greyok:127.0.1.0" in r.stdout
    assert smtp_send(m, "127.0.1.3", "new@sender.test", ["w@relay.test"]) == {}
    out = m.run_cli("greylist", "stats", check=True).stdout
    assert "clients allowed: 1\n" in out, out

    # remove one triplet by key, then a whole client
    r = m.run_cli("greylist", "remove", "grey:127.0.0.0//v@relay.test", check=True)
    assert "removed grey:127.0.0.0//v@relay.test" in r.stdout
    r = m.run_cli("greylist", "remove", "127.0.1.0/24", check=True)
    assert "removed 2 entries of identity 127.0.1.0" in r.stdout, r.stdout
    rows = listing()
    assert len(rows) == 1 and rows[0].startswith("127.0.0.0 a@sender.test u@relay.test"), rows
    # and the client is greylisted again
    greylisted(smtp_send(m, "127.0.1.3", "new@sender.test", ["w@relay.test"]), "w@relay.test")

    # errors: exit 1 and a message; usage: exit 2
    r = m.run_cli("greylist", "remove", "grey:nothing/x@y/z@w")
    assert r.returncode == 1 and "no such entry" in r.stderr, r
    r = m.run_cli("greylist", "allow", "mx.example.test")
    assert r.returncode == 1 and "greylist_identity = ip" in r.stderr, r
    r = m.run_cli("greylist", "allow", "127.0.0.0/16")
    assert r.returncode == 1 and "wider than a client network" in r.stderr, r
    r = m.run_cli("greylist", "frobnicate")
    assert r.returncode == 2 and "unknown command" in r.stderr, r


def test_spf_identity_shares_a_triplet_across_a_senders_hosts(moat_factory, dns_world):
    # tests/dns/world.conf, "spf" section: spf-pass.test sends from
    # 127.0.70.0/24; with greylist_identity = spf its mail is one client
    # whichever host of that network (or of another /24) retries.
    m = grey_moat(moat_factory, greylist_identity="spf", greylist_client_netmask="32")
    greylisted(smtp_send(m, "127.0.70.1", "news@spf-pass.test", ["u@relay.test"]), "u@relay.test")
    time.sleep(2.2)
    assert smtp_send(m, "127.0.70.2", "news@spf-pass.test", ["u@relay.test"]) == {}
    out = m.run_cli("greylist", "list", check=True).stdout
    assert out.startswith("spf-pass.test news@spf-pass.test u@relay.test "), out
    # no SPF pass (spf-fail.test does not list 127.0.71.1): the network, as ip would
    greylisted(smtp_send(m, "127.0.71.1", "x@spf-soft.test", ["u@relay.test"]), "u@relay.test")
    out = m.run_cli("check", "--client", "127.0.71.1", "--from", "x@spf-soft.test", "--rcpt", "u@relay.test",
                    "--trace").stdout
    assert "no SPF pass: client network 127.0.71.1/32" in out, out
    # `moat greylist allow` takes a domain for this identity
    assert m.run_cli("greylist", "allow", "spf-soft.test").returncode == 0


