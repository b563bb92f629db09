"""Rate limits and abuse memory (src/policy/anvil.c, docs/limits.md) with
real sockets from non-exempt loopback sources (127.0.0.2 ...; moat's
mynetworks and smtpd_client_event_limit_exceptions are 127.0.0.1/32):
the connection count and rate limits, the message and recipient rate
limits, five-fifties (a client collecting 5xx replies is blocked and
refused at connect), dictionary attacks (unknown recipients: cut
mid-session and refused at connect), blocks shared by two moats through
Redis, `moat block list/remove/export` with and without the daemon, and
a state store that is down (limits skip with a warning, mail flows).

Rate windows are fixed windows of anvil_rate_time_unit; the tests use an
hour so that a window boundary inside a test is unlikely.
"""

import re
import subprocess

import pytest

from moatlib import HOSTNAME, Client, ConnectionClosed, check, free_port, simple_message, wait_for

OUT = "127.0.0.2"      # an "Internet" client: not in mynetworks
OUT2 = "127.0.0.3"

BASE = {
    "mynetworks": "127.0.0.1/32",
    "smtpd_client_event_limit_exceptions": "127.0.0.1/32",
    "anvil_rate_time_unit": "3600s",
    "smtpd_relay_restrictions": "permit_mynetworks, reject_unauth_destination",
}


def cfg(**kw):
    d = dict(BASE)
    d.update({k: str(v) for k, v in kw.items()})
    return d


def refused_at_connect(port, source, text):
    """A connection from source gets 421 4.7.0 text instead of the greeting,
    then the server closes."""
    c = Client(port, source=source, greeting=False)
    try:
        r = c.reply()
        check(r, 421, "4.7.0", text)
        assert c.wait_closed(5), "server did not hang up after 421"
    finally:
        c.close()


def greeted(port, source):
    c = Client(port, source=source)
    check(c.greeting, 220)
    return c


# ------------------------------------------------------- connection count

def test_connection_count_limit(moat_factory):
    m = moat_factory(main=cfg(smtpd_client_connection_count_limit=2))
    a = greeted(m.port, OUT)
    b = greeted(m.port, OUT)
    refused_at_connect(m.port, OUT, "%s Error: too many connections from %s" % (HOSTNAME, OUT))
    m.wait_log(r"warning: Connection concurrency limit exceeded: 3 from \S+\[127\.0\.0\.2\] for service \S+")
    # another client is not affected; the exempt one neither
    d = greeted(m.port, OUT2)
    exempt = [greeted(m.port, "127.0.0.1") for _ in range(3)]
    # a closed session frees its place
    a.quit()
    wait_for(lambda: _greets(m.port, OUT), what="a free connection slot")
    for c in [b, d] + exempt:
        c.quit()


def _greets(port, source):
    c = Client(port, source=source, greeting=False)
    try:
        r = c.reply()
        if r.code == 220:
            c.quit()
            return True
        return False
    except ConnectionClosed:
        return False
    finally:
        c.close()


# -------------------------------------------------------- connection rate

def test_connection_rate_limit(moat_factory):
    m = moat_factory(main=cfg(smtpd_client_connection_rate_limit=3))
    for _ in range(3):
        greeted(m.port, OUT).quit()
    refused_at_connect(m.port, OUT, "%s Error: too many connections from %s" % (HOSTNAME, OUT))
    m.wait_log(r"warning: Connection rate limit exceeded: 4 from \S+\[127\.0\.0\.2\] for service \S+")
    greeted(m.port, OUT2).quit()
    for _ in range(5):
        greeted(m.port, "127.0.0.1").quit()


# ------------------------------------------------- message / recipient rate

@pytest.mark.parametrize("delay_reject", ["no", "yes"])
def test_message_rate_limit(moat_factory, delay_reject):
    m = moat_factory(main=cfg(smtpd_client_message_rate_limit=2, smtpd_delay_reject=delay_reject))
    with greeted(m.port, OUT) as c:
        c.ehlo()
        for _ in range(2):
            c.mail("a@b.test")
            check(c.cmd("RSET"), 250)
        check(c.cmd("MAIL FROM:<a@b.test>"), 450, "4.7.1", "Error: too much mail from %s" % OUT)
        c.quit()
    m.wait_log(r"warning: Message delivery request rate limit exceeded: 3 from \S+\[127\.0\.0\.2\] "
               r"for service \S+")
    # the count is per client, across sessions
    with greeted(m.port, OUT) as c:
        c.ehlo()
        check(c.cmd("MAIL FROM:<a@b.test>"), 450, "4.7.1", "Error: too much mail from %s" % OUT)
        c.quit()
    with greeted(m.port, OUT2) as c:
        c.ehlo()
        c.sendmail("a@b.test", ["u@example.test"], simple_message("other client"))
        c.quit()


def test_recipient_rate_limit(moat_factory):
    m = moat_factory(main=cfg(smtpd_client_recipient_rate_limit=3))
    with greeted(m.port, OUT) as c:
        c.ehlo()
        c.mail("a@b.test")
        for i in range(3):
            c.rcpt("u%d@example.test" % i)
        check(c.cmd("RCPT TO:<u9@example.test>"), 450, "4.7.1", "Error: too many recipients from %s" % OUT)
        # the accepted ones still get their mail
        c.data(simple_message("three recipients"))
        c.quit()
    m.wait_log(r"warning: Recipient address rate limit exceeded: 4 from \S+\[127\.0\.0\.2\] for service \S+")
    m.wait_mails("u0")
    with greeted(m.port, "127.0.0.1") as c:
        c.ehlo()
        c.mail("a@b.test")
        for i in range(6):
            c.rcpt("v%d@example.test" % i)
        c.quit()


# ---------------------------------------------------------- five-fifties

FIVE_FIFTIES = cfg(smtpd_client_reject_limit=5, smtpd_client_block_time="3600s", smtpd_client_abuse_window="600s")


def hammer_5xx(m, source, n):
    """n relay attempts from source, each refused 554 5.7.1."""
    with greeted(m.port, source) as c:
        c.ehlo()
        c.mail("spam@b.test")
        for i in range(n):
            check(c.cmd("RCPT TO:<x%d@elsewhere.test>" % i), 554, "5.7.1")
        return c


def test_five_fifties_blocked(moat_factory):
    m = moat_factory(main=FIVE_FIFTIES)
    with greeted(m.port, OUT) as c:
        c.ehlo()
        c.mail("spam@b.test")
        for i in range(5):
            check(c.cmd("RCPT TO:<x%d@elsewhere.test>" % i), 554, "5.7.1")
        m.wait_log(r"warning: blocking 127\.0\.0\.2 for 3600 seconds: 5 5xx replies in 600 seconds")
        # cut mid-session: the next RCPT sees the block
        r = c.cmd("RCPT TO:<u@example.test>")
        check(r, 421, "4.7.0", "%s Error: too many errors from %s" % (HOSTNAME, OUT))
        assert c.wait_closed(5)
    refused_at_connect(m.port, OUT, "%s Error: too many errors from %s" % (HOSTNAME, OUT))
    m.wait_log(r"warning: blocked client refused: \S+\[127\.0\.0\.2\] for service \S+: 5 5xx replies")
    # others are not blocked: another source, and the exempt one (never counted)
    greeted(m.port, OUT2).quit()
    with greeted(m.port, "127.0.0.1") as c:
        c.ehlo()
        c.mail("a@b.test")
        for i in range(8):
            check(c.cmd("RCPT TO:<x%d@elsewhere.test>" % i), 250)   # mynetworks relays
        c.quit()
    greeted(m.port, "127.0.0.1").quit()


def test_bad_commands_count_as_5xx(moat_factory):
    m = moat_factory(main=cfg(smtpd_client_reject_limit=3))
    with greeted(m.port, OUT) as c:
        for _ in range(3):
            r = c.cmd("BOGUS")
            assert r.code >= 500, r
        c.quit()
    m.wait_log(r"warning: blocking 127\.0\.0\.2 for 3600 seconds: 3 5xx replies in 3600 seconds")
    refused_at_connect(m.port, OUT, "%s Error: too many errors from %s" % (HOSTNAME, OUT))


# ------------------------------------------------------ dictionary attack

DICTIONARY = cfg(smtpd_client_unknown_recipient_limit=4, relay_domains="relay.test",
                 relay_recipient_maps="inline:{known@relay.test=x}")


def test_dictionary_attack(moat_factory):
    m = moat_factory(main=DICTIONARY)
    with greeted(m.port, OUT) as c:
        c.ehlo()
        c.mail("harvest@b.test")
        c.rcpt("known@relay.test")
        for i in range(4):
            check(c.cmd("RCPT TO:<guess%d@relay.test>" % i), 550, "5.1.1")
        m.wait_log(r"warning: blocking 127\.0\.0\.2 for 3600 seconds: 4 unknown recipients in 3600 seconds")
        check(c.cmd("RCPT TO:<guess9@relay.test>"), 421, "4.7.0",
              "%s Error: too many unknown recipients from %s" % (HOSTNAME, OUT))
        assert c.wait_closed(5)
    refused_at_connect(m.port, OUT, "%s Error: too many unknown recipients from %s" % (HOSTNAME, OUT))
    # relay-denied replies are 5xx but not unknown recipients: no block
    with greeted(m.port, OUT2) as c:
        c.ehlo()
        c.mail("a@b.test")
        for i in range(6):
            check(c.cmd("RCPT TO:<x%d@elsewhere.test>" % i), 554, "5.7.1")
        c.quit()
    greeted(m.port, OUT2).quit()


# ------------------------------------------------------------ moat block

def test_block_cli(moat_factory):
    m = moat_factory(main=FIVE_FIFTIES)
    hammer_5xx(m, OUT, 5)
    m.wait_log(r"warning: blocking 127\.0\.0\.2 ")
    hammer_5xx(m, OUT2, 5)
    m.wait_log(r"warning: blocking 127\.0\.0\.3 ")

    r = m.run_cli("block", "list", check=True)
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["CLIENT", "REASON", "SINCE", "EXPIRES", "EVENTS"], r.stdout
    rows = [l for l in lines[1:]]
    assert len(rows) == 2, r.stdout
    assert re.match(r"^127\.0\.0\.2 +5xx replies +\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ +"
                    r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ +5$", rows[0]), rows[0]
    assert rows[1].startswith("127.0.0.3 "), rows

    r = m.run_cli("block", "export", "--format", "plain", check=True)
    assert r.stdout == "127.0.0.2\n127.0.0.3\n"
    r = m.run_cli("block", "export", "--format", "plain", "--family", "inet6", check=True)
    assert r.stdout == ""

    r = m.run_cli("block", "export", "--format", "nftables", check=True)
    out = r.stdout.splitlines()
    assert "flush set inet filter moat_blocked" in out
    assert "flush set inet filter moat_blocked6" in out
    add = [l for l in out if l.startswith("add element")]
    assert len(add) == 1, r.stdout
    assert re.match(r"^add element inet filter moat_blocked \{ 127\.0\.0\.2 timeout (\d+)s, "
                    r"127\.0\.0\.3 timeout (\d+)s \}$", add[0]), add[0]
    secs = [int(x) for x in re.findall(r"timeout (\d+)s", add[0])]
    assert all(3500 < s <= 3601 for s in secs), secs   # the store rounds expiry up
    r = m.run_cli("block", "export", "--format", "nftables", "--family", "inet", "--set", "mx_bad", check=True)
    assert "flush set inet filter mx_bad" in r.stdout.splitlines()
    assert "moat_blocked6" not in r.stdout and "mx_bad6" not in r.stdout

    # remove: the client is let in again, and starts counting afresh
    r = m.run_cli("block", "remove", OUT, check=True)
    assert r.stdout == "removed 127.0.0.2\n"
    greeted(m.port, OUT).quit()
    refused_at_connect(m.port, OUT2, "%s Error: too many errors from %s" % (HOSTNAME, OUT2))
    r = m.run_cli("block", "remove", OUT)
    assert r.returncode == 1 and "127.0.0.2: not blocked" in r.stderr
    hammer_5xx(m, OUT, 4)    # below the limit again: the counter was reset
    greeted(m.port, OUT).quit()

    # without the daemon: the same store, read and changed
    m.stop()
    r = m.run_cli("block", "list", check=True)
    assert len(r.stdout.splitlines()) == 2 and "127.0.0.3" in r.stdout
    r = m.run_cli("block", "remove", OUT2, check=True)
    assert r.stdout == "removed 127.0.0.3\n"
    r = m.run_cli("block", "list", check=True)
    assert r.stdout == "no blocked clients\n"
    m.start()
    greeted(m.port, OUT2).quit()


def test_block_cli_usage(moat_factory):
    m = moat_factory(main=FIVE_FIFTIES, start=False)
    m.write_config()
    for args in (("block",), ("block", "export"), ("block", "export", "--format", "iptables"),
                 ("block", "remove"), ("block", "list", "--format", "plain"), ("block", "frobnicate"),
                 ("block", "export", "--format", "nftables", "--set", "bad name")):
        r = m.run_cli(*args)
        assert r.returncode == 2, (args, r.stdout, r.stderr)
        assert "usage: moat block" in r.stderr


# ----------------------------------------------------- shared through redis

def test_block_shared_by_two_moats(moat_factory, redis_server):
    main = cfg(smtpd_client_reject_limit=3, state_store=redis_server.url)
    a = moat_factory(main=main)
    b = moat_factory(main=main)
    hammer_5xx(a, OUT, 3)
    a.wait_log(r"warning: blocking 127\.0\.0\.2 for 3600 seconds: 3 5xx replies")
    assert redis_server.cli("EXISTS", "block:127.0.0.2") == "1"
    refused_at_connect(b.port, OUT, "%s Error: too many errors from %s" % (HOSTNAME, OUT))
    refused_at_connect(a.port, OUT, "%s Error: too many errors from %s" % (HOSTNAME, OUT))
    r = b.run_cli("block", "list", check=True)
    assert "127.0.0.2" in r.stdout
    b.run_cli("block", "remove", OUT, check=True)
    greeted(a.port, OUT).quit()
    greeted(b.port, OUT).quit()


def test_rates_shared_by_two_moats(moat_factory, redis_server):
    main = cfg(smtpd_client_connection_rate_limit=3, state_store=redis_server.url)
    a = moat_factory(main=main)
    b = moat_factory(main=main)
    greeted(a.port, OUT).quit()
    greeted(b.port, OUT).quit()
    greeted(a.port, OUT).quit()
    refused_at_connect(b.port, OUT, "%s Error: too many connections from %s" % (HOSTNAME, OUT))


# ------------------------------------------------------------ store down

def test_store_down_limits_skip(moat_factory):
    dead = "redis://127.0.0.1:%d/0" % free_port()
    m = moat_factory(main=cfg(state_store=dead, smtpd_client_connection_rate_limit=1,
                              smtpd_client_message_rate_limit=1, smtpd_client_recipient_rate_limit=1,
                              smtpd_client_reject_limit=1, smtpd_delay_reject="no"))
    for i in range(2):
        with greeted(m.port, OUT) as c:
            c.ehlo()
            c.sendmail("a@b.test", ["u@example.test", "w@example.test"], simple_message("flows %d" % i))
            check(c.cmd("RCPT TO:<x@elsewhere.test>"), 503)   # no transaction: a 5xx, not counted anywhere
            c.quit()
    m.wait_mails("u", 2)
    m.wait_log(r"warning: smtpd_client_connection_rate_limit: state store redis://127\.0\.0\.1:\d+/0: .*limit skipped")
    m.wait_log(r"warning: smtpd_client_message_rate_limit: state store .*limit skipped")
    m.wait_log(r"warning: smtpd_client_recipient_rate_limit: state store .*limit skipped")
    m.wait_log(r"warning: client blocks: state store .*check skipped")
    m.wait_log(r"warning: cannot count 5xx replies from 127\.0\.0\.2: state store")


# ------------------------------------------------------------- moat check

def test_check_trace_shows_limits(moat_factory):
    m = moat_factory(main=cfg(smtpd_client_connection_rate_limit=5, smtpd_client_reject_limit=2))
    r = m.run_cli("check", "--client", OUT, "--from", "a@b.test", "--rcpt", "u@example.test", "--trace")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "limits:" in r.stdout and "127.0.0.2 is not blocked" in r.stdout, r.stdout
    r = m.run_cli("check", "--client", "127.0.0.1", "--from", "a@b.test", "--rcpt", "u@example.test", "--trace")
    assert "127.0.0.1 is exempt (smtpd_client_event_limit_exceptions" in r.stdout, r.stdout
