"""Durability: a 250 after DATA means the message survives kill -9;
an interrupted write never turns into a delivery."""

import os
import re

from moatlib import check, simple_message, wait_for


def blocked_spool(m):
    """Point mail_spool_directory below a regular file: every Maildir
    delivery fails (temporarily) and the message stays queued."""
    blocker = os.path.join(m.dir, "blocker")
    with open(blocker, "w") as f:
        f.write("not a directory\n")
    return os.path.join(blocker, "mail") + "/"


def test_kill9_after_250_loses_nothing(moat_factory):
    m = moat_factory(start=False)
    good_spool = m.main["mail_spool_directory"]
    m.main["mail_spool_directory"] = blocked_spool(m)
    m.start()
    with m.connect() as c:
        c.ehlo()
        qid = c.sendmail("a@b.test", ["dur@example.test", "dur2@example.test"],
                         simple_message("durable"))
        c.quit()
    # Delivery was tried and failed: the file waits in deferred/ for its
    # next attempt (minimal_backoff_time away).
    m.wait_log(r"moat/local\[\d+\]: %s: to=<dur@example\.test>.*status=deferred" % qid)
    wait_for(lambda: qid in m.queue_files("deferred"), what="the message in deferred/")
    m.kill9()
    # Due at once after the restart (its next attempt is the file's mtime).
    os.utime(m.queue_path("deferred", qid), (0, 0))

    m.main["mail_spool_directory"] = good_spool
    m.start()
    for user in ("dur", "dur2"):
        m.wait_mails(user, 1)
    m.wait_queue_empty()
    m.wait_log(r"moat/qmgr\[\d+\]: %s: removed" % qid)
    for user in ("dur", "dur2"):
        mails = m.mails(user)
        assert len(mails) == 1, "%s got %d copies" % (user, len(mails))
        assert b"Subject: durable" in mails[0]


def test_kill9_right_after_250(moat_factory):
    # No blocker: the kill catches deliveries in whatever state they are.
    # The contract is at-least-once (a Maildir file written just before
    # its success was recorded may be delivered again), so every accepted
    # message must arrive, duplicates allowed.
    m = moat_factory()
    with m.connect() as c:
        c.ehlo()
        for i in range(5):
            c.sendmail("a@b.test", ["dur-fast@example.test"], simple_message("fast%d" % i))
    m.kill9()
    m.start()
    subjects = set()

    def all_five():
        subjects.clear()
        for mail in m.mails("dur-fast"):
            mo = re.search(rb"\nSubject: (fast\d)\n", mail)
            assert mo, mail
            subjects.add(mo.group(1).decode())
        return len(subjects) == 5
    wait_for(all_five, timeout=15, what="all five messages")
    m.wait_queue_empty()
    assert subjects == {"fast%d" % i for i in range(5)}


def test_deferred_retry_after_reload(moat_factory):
    # A deferred message is retried (queue_run_delay) with the reloaded
    # configuration, without a restart.
    m = moat_factory(start=False)
    good_spool = m.main["mail_spool_directory"]
    m.main["mail_spool_directory"] = blocked_spool(m)
    m.main["queue_run_delay"] = "1s"
    m.main["minimal_backoff_time"] = "1s"
    m.main["maximal_backoff_time"] = "1s"
    m.start()
    with m.connect() as c:
        c.ehlo()
        qid = c.sendmail("a@b.test", ["dur-retry@example.test"], simple_message("retry"))
        c.quit()
    m.wait_log(r"moat/local\[\d+\]: %s: to=<dur-retry@example\.test>.*status=deferred" % qid)
    m.main["mail_spool_directory"] = good_spool
    m.reload()
    m.wait_mails("dur-retry", 1, timeout=20)
    m.wait_queue_empty()
    assert len(m.mails("dur-retry")) == 1


def test_kill9_mid_data_delivers_nothing(moat_factory):
    # Killed before the 250: the half-written message is not accepted, so
    # it must never be delivered; its incoming/ file is cleaned at start.
    m = moat_factory()
    c = m.connect()
    try:
        c.ehlo()
        c.mail()
        c.rcpt("dur-half@example.test")
        check(c.cmd("DATA"), 354)
        c.send(b"Subject: half\r\n\r\n" + b"some content\r\n" * 20000)
        m.kill9()
    finally:
        c.close()
    m.start()
    assert m.queue_files("incoming") == []
    with m.connect() as c:
        c.ehlo()
        c.sendmail("a@b.test", ["dur-whole@example.test"], simple_message("whole"))
        c.quit()
    m.wait_mails("dur-whole", 1)
    m.wait_queue_empty()
    assert m.mails("dur-half") == []


def test_incoming_leftovers_removed_at_start(moat_factory):
    m = moat_factory(start=False)
    incoming = os.path.join(m.main["queue_directory"], "incoming")
    os.makedirs(incoming, exist_ok=True)
    partial = os.path.join(incoming, "0123ABCD")
    with open(partial, "wb") as f:
        f.write(b"sender a@b.test\nrecipient dur-ghost@example.test\n"
                b"Subject: half written\n\nthis message was never acc")
    m.start()
    wait_for(lambda: not os.path.exists(partial), timeout=10, what="leftover removed")
    # Push a real message through, so that a queue pass has surely run.
    with m.connect() as c:
        c.ehlo()
        c.sendmail("a@b.test", ["dur-real@example.test"], simple_message("real"))
        c.quit()
    m.wait_mails("dur-real", 1)
    m.wait_queue_empty()
    assert m.mails("dur-ghost") == []
    assert m.all_mailboxes() == ["dur-real"]


def test_corrupt_active_file_moved_aside(moat_factory):
    m = moat_factory(start=False)
    active = os.path.join(m.main["queue_directory"], "active")
    os.makedirs(active, exist_ok=True)
    bad = os.path.join(active, "BADF00D1")
    with open(bad, "wb") as f:
        f.write(b"\x00garbage that is not a queue file\xff\n")
    m.start()
    wait_for(lambda: "BADF00D1" in m.queue_files("corrupt"), timeout=10,
             what="the corrupt file in corrupt/")
    assert not os.path.exists(bad)
    with m.connect() as c:
        c.ehlo()
        c.sendmail("a@b.test", ["dur-after-corrupt@example.test"], simple_message("ok"))
        c.quit()
    m.wait_mails("dur-after-corrupt", 1)
    assert m.all_mailboxes() == ["dur-after-corrupt"]


def test_restart_with_empty_queue_delivers_nothing_twice(moat_factory):
    m = moat_factory()
    with m.connect() as c:
        c.ehlo()
        c.sendmail("a@b.test", ["dur-once@example.test"], simple_message("once"))
        c.quit()
    m.wait_mails("dur-once", 1)
    m.wait_queue_empty()
    m.restart()
    # A message through the restarted daemon proves its queue scan is done.
    with m.connect() as c:
        c.ehlo()
        c.sendmail("a@b.test", ["dur-once2@example.test"], simple_message("twice?"))
        c.quit()
    m.wait_mails("dur-once2", 1)
    m.wait_queue_empty()
    assert len(m.mails("dur-once")) == 1
