"""Many sessions at once on one event loop."""

import re
import threading

from moatlib import check, simple_message, wait_for

N = 200
BOXES = 20


def test_200_concurrent_sessions(moat_factory):
    m = moat_factory()
    barrier = threading.Barrier(N, timeout=60)
    results = [None] * N

    def worker(i):
        try:
            with m.connect(timeout=60) as c:
                check(c.greeting, 220)
                barrier.wait()      # every session is open before any sends
                c.ehlo("c%d.test" % i)
                qid = c.sendmail("s%d@b.test" % i, ["conc%d@example.test" % (i % BOXES)],
                                 simple_message("msg%d" % i))
                c.quit()
                results[i] = qid
        except Exception as e:      # reported below, with the session number
            results[i] = e
            barrier.abort()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(N)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    errors = [(i, r) for i, r in enumerate(results) if not isinstance(r, str)]
    assert not errors, "%d sessions failed, first: %r" % (len(errors), errors[:3])
    assert len(set(results)) == N, "queue IDs are not unique"

    def delivered():
        return sum(len(m.mails("conc%d" % b)) for b in range(BOXES)) >= N
    wait_for(delivered, timeout=60, interval=0.2, what="%d deliveries" % N)
    m.wait_queue_empty(timeout=30)
    seen = []
    for b in range(BOXES):
        for mail in m.mails("conc%d" % b):
            mo = re.search(rb"\nSubject: msg(\d+)\n", mail)
            assert mo, mail[:300]
            i = int(mo.group(1))
            assert i % BOXES == b, "msg%d landed in conc%d" % (i, b)
            seen.append(i)
    assert sorted(seen) == list(range(N)), "missing or duplicated: %s" % (
        sorted(set(range(N)) ^ set(seen)) or "duplicates")


def test_slow_client_does_not_block_others(shared_moat):
    m = shared_moat
    slow = m.connect()
    try:
        slow.ehlo()
        slow.mail()
        slow.rcpt("conc-slow@example.test")
        check(slow.cmd("DATA"), 354)
        slow.send(b"Subject: slow\r\n\r\nstarted")
        # Meanwhile other sessions run whole transactions.
        for i in range(5):
            with m.connect() as c:
                c.ehlo()
                c.sendmail("a@b.test", ["conc-fast@example.test"], simple_message("fast%d" % i))
                c.quit()
        m.wait_mails("conc-fast", 5)
        slow.send(b" and finished\r\n.\r\n")
        check(slow.reply(), 250, "2.0.0")
        slow.quit()
    finally:
        slow.close()
    mail = m.wait_mails("conc-slow", 1)[0]
    assert mail.endswith(b"\n\nstarted and finished\n")


def test_half_open_sessions_do_not_block_accept(shared_moat):
    # Clients that connect and say nothing (or half a line) hold a session
    # each, but never the loop.
    m = shared_moat
    idle = []
    try:
        for i in range(30):
            c = m.connect()
            if i % 2:
                c.send(b"EHLO half-a-li")
            idle.append(c)
        with m.connect() as c:
            c.ehlo()
            c.sendmail("a@b.test", ["conc-past-idle@example.test"], simple_message("past idle"))
            c.quit()
        m.wait_mails("conc-past-idle", 1)
    finally:
        for c in idle:
            c.close()
