"""The correspondent allow list: recipients of mail from trusted clients
(mynetworks, SASL) are remembered in the state store when
correspondent_allow_list = yes, and permit_known_correspondent lets mail
from them pass the checks that follow it.

What is checked: a reply from an address a local user wrote to passes
where a stranger is refused; mail from an untrusted client records
nothing; addresses compare without case; without the setting nothing is
recorded; `moat check --trace` reads the same store and explains the
decision (and writes nothing); two moats share the list through Redis.
"""

import time

from moatlib import Client, check, simple_message, wait_for

LOCAL_USER = "127.0.0.1"
OUTSIDE = "127.0.0.9"

RESTRICTIONS = "permit_mynetworks, reject_unauth_destination, permit_known_correspondent, reject"


def main_cf(**extra):
    main = {
        "mynetworks": "127.0.0.1/32",
        "smtpd_client_event_limit_exceptions": "127.0.0.0/8",
        "correspondent_allow_list": "yes",
        "smtpd_recipient_restrictions": RESTRICTIONS,
        "default_transport": "discard",
    }
    main.update(extra)
    return main


def send(m, source, sender, rcpt):
    with Client(m.port, source=source) as c:
        c.ehlo()
        c.mail(sender)
        r = c.cmd("RCPT TO:<%s>" % rcpt)
        if r.code == 250:
            assert c.data(simple_message())   # the queue ID
        c.quit()
        return r


def test_reply_from_a_correspondent_passes_a_stranger_does_not(moat_factory):
    m = moat_factory(main=main_cf())
    # a stranger first: refused by the final reject
    r = send(m, OUTSIDE, "friend@remote.test", "user@example.test")
    check(r, 554, "5.7.1")
    # the local user writes to friend@remote.test ...
    check(send(m, LOCAL_USER, "user@example.test", "Friend@Remote.TEST"), 250)
    # ... whose reply now passes (the record is written after the
    # message is queued, asynchronously: allow it a moment)
    wait_for(lambda: send(m, OUTSIDE, "friend@remote.test", "user@example.test").code == 250,
             timeout=10, what="the correspondent to be known")
    # a different address is still a stranger
    check(send(m, OUTSIDE, "other@remote.test", "user@example.test"), 554, "5.7.1")
    m.wait_log(r"rule=recipient:reject\b")


def test_untrusted_clients_record_nothing(moat_factory):
    m = moat_factory(main=main_cf(smtpd_recipient_restrictions="permit_mynetworks, reject_unauth_destination, "
                                  "permit_known_correspondent, check_sender_access inline:{outside@remote.test=OK}, "
                                  "reject"))
    # an outside client (allowed by the sender table) writes to local users:
    check(send(m, OUTSIDE, "outside@remote.test", "user@example.test"), 250)
    time.sleep(0.5)
    # user@example.test did not become a correspondent
    check(send(m, OUTSIDE, "user@example.test", "user@example.test"), 554)


def test_switched_off_records_nothing(moat_factory):
    m = moat_factory(main=main_cf(correspondent_allow_list="no"))
    check(send(m, LOCAL_USER, "user@example.test", "friend@remote.test"), 250)
    time.sleep(0.5)
    check(send(m, OUTSIDE, "friend@remote.test", "user@example.test"), 554)


def test_check_trace_reads_the_store(moat_factory):
    m = moat_factory(main=main_cf())
    check(send(m, LOCAL_USER, "user@example.test", "friend@remote.test"), 250)
    wait_for(lambda: send(m, OUTSIDE, "friend@remote.test", "user@example.test").code == 250,
             timeout=10, what="the correspondent to be known")
    out = m.run_cli("check", "--client", OUTSIDE, "--from", "friend@remote.test", "--rcpt",
                    "user@example.test", "--trace", check=True).stdout
    assert "permit_known_correspondent: friend@remote.test: a known correspondent" in out, out
    out = m.run_cli("check", "--client", OUTSIDE, "--from", "nobody@remote.test", "--rcpt",
                    "user@example.test", "--trace").stdout
    assert "not a known correspondent" in out, out
    assert "554 5.7.1" in out, out


def test_shared_through_redis(moat_factory, redis_server):
    store = "redis://127.0.0.1:%d/0" % redis_server.port
    a = moat_factory(main=main_cf(state_store=store))
    b = moat_factory(main=main_cf(state_store=store))
    check(send(a, LOCAL_USER, "user@example.test", "friend@remote.test"), 250)
    wait_for(lambda: send(b, OUTSIDE, "friend@remote.test", "user@example.test").code == 250,
             timeout=10, what="moat b to know the correspondent moat a recorded")
