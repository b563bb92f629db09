"""The queue across crashes and restarts: kill -9 in the middle of a
delivery loses nothing and repeats only what was not yet recorded;
SIGTERM lets a delivery in flight finish and be recorded; corrupt files in
deferred/ go to corrupt/ (at start-up and from a running scan) while the
queue keeps going; deferred mail that is not due stays deferred across a
restart."""

import os
import time

from moatlib import simple_message, wait_for
from queuelib import relay_moat, send


def status_of(m, queue, qid, rcpt):
    """The status byte of rcpt in the queue file, or None."""
    try:
        with open(m.queue_path(queue, qid), "rb") as f:
            for line in f:
                if line.startswith(b"rcpt ") and line.rstrip(b"\n")[7:] == rcpt.encode():
                    return line[5:6].decode()
                if line == b"content\n":
                    break
    except FileNotFoundError:
        pass
    return None


def delivered_to(sink):
    return [r for msg in sink.messages() for r in msg["rcpt_tos"]]


def test_kill9_mid_delivery_loses_nothing(moat_factory, sink_factory):
    fast = sink_factory(name="fast")
    slow = sink_factory(name="slow", script={"delay": {"data_end": 30}})
    m = relay_moat(moat_factory, {"fast.test": fast, "slow.test": slow},
                   main={"default_destination_recipient_limit": "1"})
    rcpts = ["r1@fast.test", "r2@slow.test", "r3@slow.test"]
    qid = send(m, "a@b.test", rcpts, simple_message(subject="crash"))
    fast.wait_messages(1)
    # r1 is confirmed (marked D in the queue file) before the crash.
    wait_for(lambda: status_of(m, "active", qid, "r1@fast.test") == "D", what="r1 recorded")
    # Both slow deliveries are inside DATA when moat dies.
    wait_for(lambda: sum(1 for _, c in slow.commands() if c.upper() == "DATA") >= 2,
             timeout=20, what="DATA at the slow sink")
    m.kill9()
    assert status_of(m, "active", qid, "r2@slow.test") == "P"
    assert status_of(m, "active", qid, "r3@slow.test") == "P"

    slow.set_script({})
    m.start()
    wait_for(lambda: {"r2@slow.test", "r3@slow.test"} <= set(delivered_to(slow)), timeout=30,
             what="r2 and r3 delivered after the restart")
    m.wait_log(r"moat/qmgr\[\d+\]: %s: removed$" % qid, timeout=20)
    m.wait_queue_empty()
    # At least once for everyone, and the confirmed one was not sent again.
    assert delivered_to(fast) == ["r1@fast.test"]
    assert "r1@fast.test" not in delivered_to(slow)


def test_sigterm_waits_for_the_delivery_in_flight(moat_factory, sink_factory):
    sink = sink_factory(script={"delay": {"data_end": 1.5}})
    m = relay_moat(moat_factory, {"relay.test": sink})
    qid = send(m, "a@b.test", ["u@relay.test"], simple_message(subject="graceful"))
    wait_for(lambda: any(c.upper() == "DATA" for _, c in sink.commands()), what="DATA at the sink")
    assert m.stop() == 0
    assert delivered_to(sink) == ["u@relay.test"]
    # Recorded and removed before the exit: nothing to deliver again.
    assert "%s: removed" % qid in m.log()
    assert m.queue_snapshot() == {}


def test_corrupt_deferred_files_go_to_corrupt(moat_factory, sink_factory):
    sink = sink_factory()
    m = relay_moat(moat_factory, {"relay.test": sink}, main={"queue_run_delay": "1s"}, start=False)
    qdir = m.main["queue_directory"]
    os.makedirs(os.path.join(qdir, "deferred"), exist_ok=True)
    with open(os.path.join(qdir, "deferred", "0011223344AABB"), "wb") as f:
        f.write(b"MOAT-QUEUE 1\nnot really\n")
    m.start()
    # At start-up: recovery validates deferred/ too.
    m.wait_log(r"moat/qmgr\[\d+\]: warning: corrupt queue file deferred/0011223344AABB: .*; moved to .*corrupt/0011223344AABB$")
    assert "0011223344AABB" in m.queue_files("corrupt")

    # While running: a scan brings it to active/, the load sets it aside.
    path = os.path.join(qdir, "deferred", "00112233445566")
    with open(path, "wb") as f:
        f.write(b"\x00garbage\xff" * 10)
    past = time.time() - 60
    os.utime(path, (past, past))
    m.wait_log(r"moat/qmgr\[\d+\]: warning: 00112233445566: corrupt queue file: .*; moved to corrupt/$", timeout=15)
    assert "00112233445566" in m.queue_files("corrupt")
    # ... and the queue keeps going.
    qid = send(m, "a@b.test", ["u@relay.test"], simple_message(subject="after the debris"))
    sink.wait_messages(1)
    m.wait_log(r"moat/qmgr\[\d+\]: %s: removed$" % qid)
    assert m.running()


def test_deferred_mail_survives_a_restart(moat_factory, sink_factory):
    sink = sink_factory(script={"rcpt": {"*": "450 4.2.0 not yet"}})
    m = relay_moat(moat_factory, {"relay.test": sink},
                   main={"minimal_backoff_time": "1h", "maximal_backoff_time": "2h"})
    qid = send(m, "a@b.test", ["u@relay.test"], simple_message(subject="patience"))
    wait_for(lambda: m.queue_files("deferred") == [qid], what="the message in deferred/")
    before = os.stat(m.queue_path("deferred", qid)).st_mtime
    m.stop()
    sink.set_script({})
    m.start()
    m.wait_log(r"moat/master\[\d+\]: daemon started")
    # Not due yet: still deferred, untouched, not delivered.
    time.sleep(1.5)
    assert m.queue_files("deferred") == [qid]
    assert os.stat(m.queue_path("deferred", qid)).st_mtime == before
    assert sink.messages() == []
    # `moat queue flush` (the control socket) makes it due now.
    r = m.run_cli("queue", "flush")
    assert r.returncode == 0, (r.stdout, r.stderr)
    sink.wait_messages(1, timeout=20)
    m.wait_log(r"moat/qmgr\[\d+\]: %s: removed$" % qid)
