"""Relay delivery through the queue manager, against real receivers
(tests/proto/sink.py): transport_maps next hops, the message arriving
intact, Postfix log lines, per-destination concurrency and recipient
limits, deferral with backoff and the retry that delivers, and a receiver
that answers garbage.

Every address is loopback; every process is stopped by PID (fixtures)."""

import os
import re
import time

from moatlib import simple_message, wait_for
from queuelib import relay_moat, send

LOGRE_SENT = (r"moat/smtp\[\d+\]: %s: to=<%s>, relay=127\.0\.0\.1\[127\.0\.0\.1\]:%d, "
              r"delay=[\d.]+, delays=[\d.]+/[\d.]+/[\d.]+/[\d.]+, dsn=2\.0\.0, status=sent \(250 .*\)$")


def test_relay_delivers_intact_and_logs(moat_factory, sink_factory):
    sink = sink_factory()
    m = relay_moat(moat_factory, {"relay.test": sink})
    msg = simple_message(subject="relay one", body="first line\r\n.leading dot\r\nlast line")
    qid = send(m, "a@b.test", ["u@relay.test"], msg)
    got = sink.wait_messages(1)[0]
    assert got["mail_from"] == "a@b.test"
    assert got["rcpt_tos"] == ["u@relay.test"]
    data = got["data"]
    # moat's Received: header first, then the message exactly as sent.
    assert data.startswith(b"Received: from ")
    assert data.endswith(msg.encode()), data
    assert b"\r\n.leading dot\r\n" in data
    m.wait_log(LOGRE_SENT % (qid, re.escape("u@relay.test"), sink.port))
    m.wait_log(r"moat/qmgr\[\d+\]: %s: from=<a@b\.test>, size=\d+, nrcpt=1 \(queue active\)$" % qid)
    m.wait_log(r"moat/qmgr\[\d+\]: %s: removed$" % qid)
    m.wait_queue_empty()
    assert m.queue_files("defer") == [] and m.queue_files("bounce") == []


def test_concurrency_limit_two_is_never_exceeded(moat_factory, sink_factory):
    sink = sink_factory(script={"delay": {"data_end": 0.3}})
    m = relay_moat(moat_factory, {"relay.test": sink},
                   main={"relay_destination_concurrency_limit": "2"})
    for i in range(20):
        send(m, "a@b.test", ["u%d@relay.test" % i], simple_message(subject="c%d" % i))
    sink.wait_messages(20, timeout=60)
    m.wait_queue_empty(timeout=30)
    st = sink.stats()
    assert st["transactions"] == 20
    assert st["max_concurrent"] <= 2, st
    # Deliveries did overlap: the limit, not a lack of work, is what bounded them.
    assert st["max_concurrent"] == 2, st


def test_recipient_limit_splits_transactions(moat_factory, sink_factory):
    sink = sink_factory()
    m = relay_moat(moat_factory, {"relay.test": sink},
                   main={"default_destination_recipient_limit": "2"})
    rcpts = ["r%d@relay.test" % i for i in range(5)]
    qid = send(m, "a@b.test", rcpts, simple_message(subject="five"))
    msgs = sink.wait_messages(3)
    m.wait_log(r"moat/qmgr\[\d+\]: %s: removed$" % qid)
    assert sorted(len(x["rcpt_tos"]) for x in msgs) == [1, 2, 2]
    assert sorted(r for x in msgs for r in x["rcpt_tos"]) == rcpts
    assert sink.stats()["transactions"] == 3


def test_4xx_defers_with_backoff_then_delivers(moat_factory, sink_factory):
    sink = sink_factory(script={"rcpt": {"*": "450 4.2.0 try later"}})
    m = relay_moat(moat_factory, {"relay.test": sink},
                   main={"minimal_backoff_time": "2s",
                         "maximal_backoff_time": "4s",
                         "queue_run_delay": "1s"})
    qid = send(m, "a@b.test", ["u@relay.test"], simple_message(subject="later"))
    m.wait_log(r"moat/smtp\[\d+\]: %s: to=<u@relay\.test>, relay=127\.0\.0\.1\[127\.0\.0\.1\]:%d, .*"
               r"dsn=4\.2\.0, status=deferred \(host 127\.0\.0\.1\[127\.0\.0\.1\] said: 450 4\.2\.0 try later "
               r"\(in reply to RCPT TO command\)\)$" % (qid, sink.port))
    wait_for(lambda: m.queue_files("deferred") == [qid], what="the message in deferred/")
    # The file's mtime is its next attempt: in the future.
    mtime = os.stat(m.queue_path("deferred", qid)).st_mtime
    assert mtime > time.time(), (mtime, time.time())
    # `moat queue list` reads the reason from the defer log.
    assert m.queue_files("defer") == [qid]
    sink.set_script({})
    sink.wait_messages(1, timeout=30)
    m.wait_log(LOGRE_SENT % (qid, re.escape("u@relay.test"), sink.port), timeout=30)
    m.wait_queue_empty(timeout=20)
    assert m.queue_files("defer") == []


def test_garbage_reply_is_a_protocol_error_and_a_deferral(moat_factory, sink_factory):
    sink = sink_factory(script={"garbage_at": "rcpt"})
    m = relay_moat(moat_factory, {"relay.test": sink},
                   main={"minimal_backoff_time": "60s", "maximal_backoff_time": "60s"})
    qid = send(m, "a@b.test", ["u@relay.test"], simple_message(subject="garbage"))
    line = m.wait_log(r"moat/smtp\[\d+\]: %s: to=<u@relay\.test>, .* status=deferred \(.*\)$" % qid)[0].group(0)
    assert "protocol error" in line, line
    m.wait_log(r"moat/smtp\[\d+\]: warning: .*protocol error")
    wait_for(lambda: m.queue_files("deferred") == [qid], what="the message in deferred/")
    assert sink.messages() == []
    assert m.running()


def test_discard_and_error_transports(moat_factory, sink_factory):
    sink = sink_factory()
    m = moat_factory(start=False, main={"relay_domains": "drop.test, err.test, relay.test"},
                     files={"transport": "drop.test discard:\nerr.test error:5.7.1 go away\n"})
    m.main["transport_maps"] = "texthash:" + m.path("transport")
    m.start()
    qid = send(m, "sender@example.test", ["x@drop.test", "y@err.test"], simple_message(subject="d"))
    m.wait_log(r"moat/discard\[\d+\]: %s: to=<x@drop\.test>, relay=none, .*dsn=2\.0\.0, status=sent \(drop\.test\)$"
               % qid)
    m.wait_log(r"moat/error\[\d+\]: %s: to=<y@err\.test>, relay=none, .*dsn=5\.7\.1, status=bounced \(go away\)$"
               % qid)
    m.wait_log(r"moat/bounce\[\d+\]: %s: sender non-delivery notification: [0-9A-F]+$" % qid)
    m.wait_mails("sender", 1)
    m.wait_queue_empty()
    assert sink.messages() == []


def test_unknown_transport_defers(moat_factory):
    m = moat_factory(start=False, main={"relay_domains": "x.test", "minimal_backoff_time": "60s"},
                     files={"transport": "x.test nosuch:[127.0.0.1]:9\n"})
    m.main["transport_maps"] = "texthash:" + m.path("transport")
    m.start()
    qid = send(m, "a@b.test", ["u@x.test"], simple_message(subject="u"))
    m.wait_log(r"moat/qmgr\[\d+\]: %s: to=<u@x\.test>, relay=none, .*dsn=4\.3\.0, "
               r"status=deferred \(mail transport unavailable\)$" % qid)
    wait_for(lambda: m.queue_files("deferred") == [qid], what="the message in deferred/")


def test_pflogsumm_reads_relay_and_bounce_lines(moat_factory, sink_factory):
    import subprocess
    sink = sink_factory(script={"rcpt": {"bad@relay.test": "550 5.1.1 no such user",
                                         "later@slow.test": "450 4.2.0 later", "*": "250 2.1.5 Ok"}})
    m = relay_moat(moat_factory, {"relay.test": sink, "slow.test": sink},
                   main={"minimal_backoff_time": "60s", "maximal_backoff_time": "60s"})
    for i in range(3):
        send(m, "sender@example.test", ["ok%d@relay.test" % i], simple_message(subject="p%d" % i))
    send(m, "sender@example.test", ["bad@relay.test"], simple_message(subject="bad"))
    qid = send(m, "sender@example.test", ["later@slow.test"], simple_message(subject="later"))
    sink.wait_messages(3)
    m.wait_mails("sender", 1)      # the notice for bad@
    wait_for(lambda: m.queue_files("deferred") == [qid], what="the deferred message")
    m.wait_log(r"moat/qmgr\[\d+\]: [0-9A-F]+: removed$", count=5)   # 3 + bad + its notice
    m.stop()
    out = subprocess.run(["pflogsumm", "--syslog-name=moat", m.main["maillog_file"]],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    totals = out.stdout.split("Grand Totals", 1)
    assert len(totals) == 2, out.stdout
    counts = {}
    for line in totals[1].splitlines():
        mo = re.match(r"^\s+(\d+)\s+(received|delivered|deferred|bounced)\b", line)
        if mo and mo.group(2) not in counts:
            counts[mo.group(2)] = int(mo.group(1))
    # Received counts smtpd's client= lines (the notice has none, as in
    # Postfix); delivered: 3 relayed + the notice in the sender's Maildir.
    assert counts == {"received": 5, "delivered": 4, "deferred": 1, "bounced": 1}, out.stdout
    # The bounce and deferral details name the reasons from the log lines.
    assert "no such user" in out.stdout and "later" in out.stdout, out.stdout


def test_reload_switches_routing_for_new_messages(moat_factory, sink_factory):
    first = sink_factory(name="first")
    second = sink_factory(name="second")
    m = relay_moat(moat_factory, {"relay.test": first})
    send(m, "a@b.test", ["u@relay.test"], simple_message(subject="before"))
    first.wait_messages(1)
    m.set_file("transport", "relay.test relay:[%s]:%d\n" % (second.host, second.port))
    m.reload()
    m.wait_log(r"moat/master\[\d+\]: reload -- ")
    # The reload is asynchronous to this client: wait until the new table is in use.
    def routed_to_second():
        send(m, "a@b.test", ["v@relay.test"], simple_message(subject="after"))
        return second.messages()
    wait_for(routed_to_second, timeout=20, interval=0.5, what="delivery through the new route")
    assert [x["rcpt_tos"] for x in first.messages()][0] == ["u@relay.test"]
    m.wait_queue_empty()


def test_dead_destination_is_skipped(moat_factory):
    from moatlib import free_port
    port = free_port()   # nothing listens there
    m = moat_factory(start=False, main={"relay_domains": "down.test",
                                        "relay_destination_concurrency_limit": "1",
                                        "default_destination_recipient_limit": "1",
                                        "minimal_backoff_time": "60s", "maximal_backoff_time": "60s"},
                     files={"transport": "down.test relay:[127.0.0.1]:%d\n" % port})
    m.main["transport_maps"] = "texthash:" + m.path("transport")
    m.start()
    qid = send(m, "a@b.test", ["a@down.test", "b@down.test", "c@down.test"], simple_message(subject="down"))
    refused = r"connect to 127\.0\.0\.1\[127\.0\.0\.1\]:%d: Connection refused" % port
    # One connection attempt; the other requests are deferred without one.
    m.wait_log(r"moat/smtp\[\d+\]: %s: to=<a@down\.test>, relay=none, .*status=deferred \(%s\)$" % (qid, refused))
    for r in ("b", "c"):
        m.wait_log(r"moat/qmgr\[\d+\]: %s: to=<%s@down\.test>, relay=none, .*status=deferred "
                   r"\(delivery temporarily suspended: %s\)$" % (qid, r, refused))
    wait_for(lambda: m.queue_files("deferred") == [qid], what="the message in deferred/")
