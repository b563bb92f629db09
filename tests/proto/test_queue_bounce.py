"""Bounces through the queue manager: a 5xx for one recipient returns a
well-formed DSN (parsed with Python's email package, tests/proto/bounce_check.py)
to the sender while the others are delivered; mail from <> is never
bounced to <> (the postmaster gets one double bounce); a message past
maximal_queue_lifetime expires and is returned.

The senders live in mydestination (example.test), so notices land in
their Maildirs; the receivers are sinks (tests/proto/sink.py)."""

import re
import time

from bounce_check import parse_dsn
from moatlib import simple_message, wait_for
from queuelib import relay_moat, send


def test_5xx_bounces_one_recipient_others_delivered(moat_factory, sink_factory):
    sink = sink_factory(script={"rcpt": {"bad@relay.test": "550 5.1.1 <bad@relay.test>: no such user",
                                         "*": "250 2.1.5 Ok"}})
    m = relay_moat(moat_factory, {"relay.test": sink})
    msg = simple_message(subject="bounce me", msgid="bounce-me@b.test")
    qid = send(m, "sender@example.test", ["good@relay.test", "bad@relay.test"], msg)
    got = sink.wait_messages(1)
    assert got[0]["rcpt_tos"] == ["good@relay.test"]
    m.wait_log(r"moat/smtp\[\d+\]: %s: to=<bad@relay\.test>, relay=127\.0\.0\.1\[127\.0\.0\.1\]:%d, .*"
               r"dsn=5\.1\.1, status=bounced \(host 127\.0\.0\.1\[127\.0\.0\.1\] said: 550 5\.1\.1 "
               r"<bad@relay\.test>: no such user \(in reply to RCPT TO command\)\)$" % (qid, sink.port))
    notice_line = m.wait_log(r"moat/bounce\[\d+\]: %s: sender non-delivery notification: ([0-9A-F]+)$" % qid)
    newid = notice_line[0].group(1)
    m.wait_log(r"moat/qmgr\[\d+\]: %s: removed$" % qid)
    raw = m.wait_mails("sender", 1)[0]
    dsn = parse_dsn(raw)
    assert dsn["to"] == "sender@example.test"
    assert "MAILER-DAEMON" in dsn["from_"]
    assert dsn["queue_id"] == qid
    assert dsn["sender"] == "sender@example.test"
    assert len(dsn["recipients"]) == 1
    r = dsn["recipients"][0]
    assert r["final"] == "bad@relay.test"
    assert r["action"] == "failed"
    assert r["status"] == "5.1.1"
    assert r["diagnostic"].startswith("smtp; 550 5.1.1"), r["diagnostic"]
    assert dsn["original_type"] == "message/rfc822"
    assert dsn["original_headers"]["Message-ID"] == "<bounce-me@b.test>"
    # The notice went out with the null sender and was itself delivered and removed.
    assert raw.startswith(b"Return-Path: <>\n")
    m.wait_log(r"moat/qmgr\[\d+\]: %s: from=<>, size=\d+, nrcpt=1 \(queue active\)$" % newid)
    m.wait_log(r"moat/qmgr\[\d+\]: %s: removed$" % newid)
    m.wait_queue_empty()


def test_no_bounce_to_null_sender_double_bounce_once(moat_factory, sink_factory):
    sink = sink_factory(script={"rcpt": {"*": "550 5.1.1 no such user"}})
    m = relay_moat(moat_factory, {"relay.test": sink},
                   main={"2bounce_notice_recipient": "postmaster@example.test"})
    qid = send(m, "", ["bad@relay.test"], simple_message(subject="from nobody"))
    line = m.wait_log(r"moat/bounce\[\d+\]: %s: postmaster non-delivery notification: ([0-9A-F]+)$" % qid)
    newid = line[0].group(1)
    raw = m.wait_mails("postmaster", 1)[0]
    dsn = parse_dsn(raw)
    assert dsn["to"] == "postmaster@example.test"
    assert dsn["sender"] == ""
    assert dsn["recipients"][0]["final"] == "bad@relay.test"
    assert raw.startswith(b"Return-Path: <double-bounce@mx.example.test>\n"), raw[:200]
    m.wait_log(r"moat/qmgr\[\d+\]: %s: removed$" % newid)
    m.wait_queue_empty()
    # Never a notice addressed to <>: the sink only ever saw the one bounced RCPT.
    assert sink.stats()["rcpt_replies"] == {"550": 1}, sink.stats()
    assert len(m.mails("postmaster")) == 1
    assert "sender non-delivery notification" not in m.log()


def test_failed_double_bounce_is_dropped(moat_factory, sink_factory):
    # The postmaster's own address bounces: the double bounce fails, and is dropped.
    sink = sink_factory(script={"rcpt": {"*": "550 5.1.1 no such user"}})
    m = relay_moat(moat_factory, {"relay.test": sink},
                   main={"2bounce_notice_recipient": "postmaster@relay.test"})
    qid = send(m, "", ["bad@relay.test"], simple_message(subject="twice"))
    line = m.wait_log(r"moat/bounce\[\d+\]: %s: postmaster non-delivery notification: ([0-9A-F]+)$" % qid)
    newid = line[0].group(1)
    m.wait_log(r"moat/qmgr\[\d+\]: %s: from=<double-bounce@mx\.example\.test>: "
               r"undeliverable postmaster notification discarded$" % newid)
    m.wait_log(r"moat/qmgr\[\d+\]: %s: removed$" % newid)
    m.wait_queue_empty()
    assert sink.stats()["rcpt_replies"] == {"550": 2}, sink.stats()


def test_queue_lifetime_expiry_returns_to_sender(moat_factory, sink_factory):
    sink = sink_factory(script={"rcpt": {"*": "451 4.3.0 busy, come back"}})
    m = relay_moat(moat_factory, {"relay.test": sink},
                   main={"maximal_queue_lifetime": "3s",
                         "minimal_backoff_time": "1s",
                         "maximal_backoff_time": "1s",
                         "queue_run_delay": "1s"})
    qid = send(m, "sender@example.test", ["slow@relay.test"], simple_message(subject="too slow"))
    m.wait_log(r"moat/qmgr\[\d+\]: %s: from=<sender@example\.test>, status=expired, returned to sender$"
               % qid, timeout=30)
    m.wait_log(r"moat/bounce\[\d+\]: %s: sender non-delivery notification: [0-9A-F]+$" % qid)
    m.wait_log(r"moat/qmgr\[\d+\]: %s: removed$" % qid)
    dsn = parse_dsn(m.wait_mails("sender", 1)[0])
    r = dsn["recipients"][0]
    assert r["final"] == "slow@relay.test"
    assert r["action"] == "failed"
    assert r["status"] == "4.3.0"
    assert "busy, come back" in dsn["explanation"]
    assert "expired" in dsn["explanation"]
    # It was retried before it expired.
    assert sink.stats()["rcpt_replies"].get("451", 0) >= 2
    m.wait_queue_empty()
