"""`moat queue` (list, show, flush, delete, hold, release, requeue).

Two halves:
  * without a daemon, on queue files this module writes itself in the
    documented format (docs/queue.md), so every detail of the output is
    known in advance: exact list/show/JSON output, every command's effect
    on the directories, the mail log lines, the errors and exit codes;
  * against the real daemon: mail relayed to a dead next hop
    ([127.0.0.1]:PORT where nothing listens) sits in deferred/ (long
    backoffs keep it there), then the commands run while the daemon runs
    and after it stopped, and a sink started on PORT receives what flush,
    release and requeue send on.
"""

import json
import os
import re
import time

import pytest

from moatlib import Client, wait_for
from sink import free_port_for

# ------------------------------------------------------------ queue files


def _enc(v):
    out = bytearray()
    for ch in v.encode():
        if ch == 0x25 or ch < 0x20 or ch == 0x7F:
            out += b"%%%02X" % ch
        else:
            out.append(ch)
    return bytes(out)


def qfile_bytes(qid, sender, rcpts, content, arrival_usec, filter_=None, redirect=None, bcc=()):
    """A complete queue file; rcpts: [(status, address)], status P/D/F."""
    extra = b""
    if filter_:
        extra += b"filter " + _enc(filter_) + b"\n"
    if redirect:
        extra += b"redirect " + _enc(redirect) + b"\n"
    for st, a in bcc:
        extra += b"bcc " + st.encode() + b" " + _enc(a) + b"\n"
    head = [b"MOAT-QUEUE %d" % (2 if extra else 1), b"id " + _enc(qid), b"arrival %d" % arrival_usec,
            b"client_name client.example.org", b"client_addr 192.0.2.7", b"helo client.example.org",
            b"protocol ESMTP", b"sender " + _enc(sender), b"body_type ", b"smtputf8 no",
            b"nrcpt %d" % len(rcpts)]
    head += [b"rcpt " + st.encode() + b" " + _enc(a) for st, a in rcpts]
    head.append(b"content")
    return b"\n".join(head) + b"\n" + content + extra + b"MOAT-END %020d\n" % len(content)


def _tok(v):
    if v == "":
        return b"-"
    if v == "-":
        return b"%2D"
    out = bytearray()
    for ch in v.encode():
        if ch in (0x25, 0x20) or ch < 0x20 or ch == 0x7F:
            out += b"%%%02X" % ch
        else:
            out.append(ch)
    return bytes(out)


def qlog_bytes(recs):
    """recs: [(rcpt, dsn, text)] -> defer/bounce log lines."""
    return b"".join(b" ".join([_tok(r), b"-", _tok(d), b"1600000000000000", b"none", _tok(t), b"-"]) + b"\n"
                    for r, d, t in recs)


QUEUES = ("incoming", "active", "deferred", "hold", "corrupt", "defer", "bounce")


class Spool:
    def __init__(self, moat):
        self.dir = moat.main["queue_directory"]
        for q in QUEUES:
            os.makedirs(os.path.join(self.dir, q), exist_ok=True)

    def path(self, queue, qid):
        return os.path.join(self.dir, queue, qid)

    def put(self, queue, qid, data, mtime=None):
        p = self.path(queue, qid)
        with open(p, "wb") as f:
            f.write(data)
        if mtime is not None:
            os.utime(p, (mtime, mtime))

    def where(self, qid):
        return [q for q in QUEUES[:5] if os.path.exists(self.path(q, qid))]

    def ids(self, queue):
        return sorted(os.listdir(os.path.join(self.dir, queue)))


def mailq_time(sec):
    return time.strftime("%a %b %e %H:%M:%S", time.localtime(sec))


T1 = 1600000000           # arrival of the older message
T2 = 1600000100
ID1 = "0A0000000000B1"
ID2 = "0A0000000000B2"
ID3 = "0A0000000000B3"
REFUSED = "connect to 127.0.0.1[127.0.0.1]:9: Connection refused"
CONTENT1 = b"Subject: first\nFrom: alice@example.org\n\nbody one\n"
CONTENT2 = b"Subject: second\n\nbody two\n"


@pytest.fixture
def offline(moat_factory):
    """A configured but stopped moat with three messages: ID1 deferred (two
    pending recipients with a reason, one done, one failed), ID2 held (null
    sender, a filter record and a bcc), ID3 active."""
    m = moat_factory(start=False)
    m.write_config()
    sp = Spool(m)
    sp.put("deferred", ID1, qfile_bytes(ID1, "alice@example.org",
                                        [("P", "bob@example.com"), ("D", "done@example.com"),
                                         ("P", "carol@example.net"), ("F", "gone@example.com")],
                                        CONTENT1, T1 * 1000000 + 123456), mtime=T1 + 3600)
    sp.put("defer", ID1, qlog_bytes([("bob@example.com", "4.4.1", REFUSED),
                                     ("carol@example.net", "4.4.1", REFUSED)]))
    sp.put("bounce", ID1, qlog_bytes([("gone@example.com", "5.1.1", "host mx said: 550 5.1.1 no such user")]))
    sp.put("hold", ID2, qfile_bytes(ID2, "", [("P", "dan@example.com")], CONTENT2, T2 * 1000000,
                                    filter_="smtp:[127.0.0.1]:10025", bcc=[("P", "archive@example.com")]))
    sp.put("active", ID3, qfile_bytes(ID3, "eve@example.org", [("P", "frank@example.com")], b"x\n",
                                      (T2 + 50) * 1000000))
    return m, sp


def q(m, *args):
    return m.run_cli("queue", *args)


# ------------------------------------------------------------ offline: list and show


def test_list_exact_output(offline):
    m, _ = offline
    r = q(m, "list")
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""
    col = " " * 46
    want = (
        "-Queue ID-      --Size-- ----Arrival Time---  -Sender/Recipient-------\n"
        "%s        %d %s  alice@example.org\n" % (ID1, len(CONTENT1), mailq_time(T1))
        + "(%s)\n" % REFUSED
        + col + "bob@example.com\n"
        + col + "carol@example.net\n"
        "\n"
        "%s!       %d %s  MAILER-DAEMON\n" % (ID2, len(CONTENT2), mailq_time(T2))
        + col + "dan@example.com\n"
        + col + "archive@example.com\n"
        "\n"
        "%s*        2 %s  eve@example.org\n" % (ID3, mailq_time(T2 + 50))
        + col + "frank@example.com\n"
        "\n"
        "-- 1 Kbytes in 3 Requests.\n")
    assert r.stdout == want


def test_list_json(offline):
    m, _ = offline
    r = q(m, "list", "--json")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert [d["id"] for d in data] == [ID1, ID2, ID3]
    d1 = data[0]
    assert d1["queue"] == "deferred"
    assert d1["size"] == len(CONTENT1)
    assert d1["arrival"] == T1
    assert d1["next_attempt"] == T1 + 3600
    assert d1["sender"] == "alice@example.org"
    assert d1["recipients"] == [
        {"address": "bob@example.com", "status": "pending", "reason": REFUSED},
        {"address": "done@example.com", "status": "done", "reason": None},
        {"address": "carol@example.net", "status": "pending", "reason": REFUSED},
        {"address": "gone@example.com", "status": "failed", "reason": "host mx said: 550 5.1.1 no such user"},
    ]
    assert data[1]["queue"] == "hold" and data[1]["sender"] == "" and data[1]["next_attempt"] is None
    assert [x["address"] for x in data[1]["recipients"]] == ["dan@example.com", "archive@example.com"]
    assert data[2]["queue"] == "active"


def test_list_empty(moat_factory):
    m = moat_factory(start=False)
    m.write_config()
    Spool(m)
    r = q(m, "list")
    assert (r.returncode, r.stdout) == (0, "Mail queue is empty\n")
    r = q(m, "list", "--json")
    assert (r.returncode, json.loads(r.stdout)) == (0, [])


def test_list_escapes_control_bytes_and_skips_debris(offline):
    m, sp = offline
    sp.put("defer", ID1, qlog_bytes([("bob@example.com", "4.4.1", "evil \x1b[31m red\r\nfake line")]))
    sp.put("deferred", "0A0000000000C0", b"not a queue file\n")
    sp.put("incoming", "0A0000000000C1", b"MOAT-QUEUE 1\nid 0A0000000000C1\n")   # being written
    r = q(m, "list")
    assert r.returncode == 0
    assert "(evil \\x1B[31m red\\x0D\\x0Afake line)\n" in r.stdout
    assert "\x1b" not in r.stdout
    assert "0A0000000000C1" not in r.stdout
    assert "0A0000000000C0" not in r.stdout
    assert "0A0000000000C0: cannot read the queue file" in r.stderr
    assert "in 3 Requests" in r.stdout


def test_show_whole_message(offline):
    m, _ = offline
    r = q(m, "show", ID1)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert out.startswith("*** ENVELOPE RECORDS deferred/%s ***\n" % ID1)
    for line in ("queue_id: %s" % ID1, "queue: deferred", "message_size: %d" % len(CONTENT1),
                 "arrival_time: %s (%d.123456)" % (time.strftime("%a %b %e %H:%M:%S %Y", time.localtime(T1)), T1),
                 "next_attempt: %s" % time.strftime("%a %b %e %H:%M:%S %Y", time.localtime(T1 + 3600)),
                 "client_name: client.example.org", "client_address: 192.0.2.7",
                 "helo_name: client.example.org", "protocol: ESMTP", "sender: alice@example.org",
                 "recipient: bob@example.com [pending] (4.4.1 %s)" % REFUSED,
                 "recipient: done@example.com [done]",
                 "recipient: carol@example.net [pending] (4.4.1 %s)" % REFUSED,
                 "recipient: gone@example.com [failed] (5.1.1 host mx said: 550 5.1.1 no such user)"):
        assert line + "\n" in out, line
    assert out.endswith("*** MESSAGE CONTENTS deferred/%s ***\n%s*** END OF MESSAGE deferred/%s ***\n"
                        % (ID1, CONTENT1.decode(), ID1))


def test_show_parts_and_records(offline):
    m, _ = offline
    r = q(m, "show", ID2, "--header")
    assert (r.returncode, r.stdout) == (0, "Subject: second\n")
    r = q(m, "show", "--body", ID2)
    assert (r.returncode, r.stdout) == (0, "body two\n")
    r = q(m, "show", "--envelope", ID2)
    assert r.returncode == 0
    assert "sender: \n" in r.stdout
    assert "recipient: dan@example.com [pending]\n" in r.stdout
    assert "bcc: archive@example.com [pending]\n" in r.stdout
    assert "filter: smtp:[127.0.0.1]:10025\n" in r.stdout
    assert "***" not in r.stdout and "Subject" not in r.stdout
    assert r.stdout.startswith("queue_id: %s\n" % ID2)
    r = q(m, "show", "--header", "--body", ID2)   # both: the content as it is
    assert r.stdout == CONTENT2.decode()


def test_show_errors(offline):
    m, sp = offline
    r = q(m, "show", "0A0000000000FF")
    assert (r.returncode, r.stderr) == (1, "moat queue: 0A0000000000FF: no such message\n")
    sp.put("corrupt", "0A0000000000C2", b"garbage")
    r = q(m, "show", "0A0000000000C2")
    assert r.returncode == 1
    assert r.stderr.startswith("moat queue: 0A0000000000C2: malformed queue file in corrupt/: ")


# ------------------------------------------------------------ offline: changes


def test_hold_release_requeue_delete_offline(offline):
    m, sp = offline
    r = q(m, "hold", ID1)
    assert (r.returncode, r.stdout) == (0, "moat queue: held 1 message\n")
    assert sp.where(ID1) == ["hold"]
    # mtime survives the moves (it is the deferred queue's next attempt)
    assert int(os.stat(sp.path("hold", ID1)).st_mtime) == T1 + 3600

    r = q(m, "hold", ID1)
    assert r.returncode == 0
    assert r.stdout == "moat queue: %s: already on hold\nmoat queue: held 0 messages\n" % ID1

    r = q(m, "requeue", ID1)
    assert r.returncode == 0
    assert "%s: on hold: it stays held" % ID1 in r.stdout
    assert sp.where(ID1) == ["hold"]

    r = q(m, "release", "ALL")
    assert r.returncode == 0, r.stderr
    assert r.stdout == ("moat queue: released 2 messages\n"
                        "moat queue: the daemon is not running; messages are delivered at its next start\n")
    assert sp.ids("hold") == [] and sp.ids("active") == [ID1, ID2, ID3]

    r = q(m, "hold", "ALL")
    assert (r.returncode, r.stdout) == (0, "moat queue: held 3 messages\n")
    r = q(m, "release", ID2)
    assert r.returncode == 0 and sp.where(ID2) == ["active"]

    r = q(m, "delete", ID1)
    assert (r.returncode, r.stdout) == (0, "moat queue: deleted 1 message\n")
    assert sp.where(ID1) == []
    assert not os.path.exists(sp.path("defer", ID1)) and not os.path.exists(sp.path("bounce", ID1))

    log = m.log()
    for text in ("%s: placed on hold" % ID1, "%s: released from hold" % ID2, "%s: removed" % ID1,
                 "Deleted: 1 message", "Placed on hold: 3 messages", "Released from hold: 2 messages"):
        assert re.search(r"^\w{3} [ \d]\d \d\d:\d\d:\d\d \S+ moat/postsuper\[\d+\]: %s$" % re.escape(text),
                         log, re.M), (text, log)


def test_requeue_and_delete_deferred_only(offline):
    m, sp = offline
    sp.put("deferred", "0A0000000000D1", qfile_bytes("0A0000000000D1", "a@b", [("P", "c@d")], b"x\n", 1))
    r = q(m, "requeue", "ALL")
    assert (r.returncode, r.stdout.splitlines()[0]) == (0, "moat queue: requeued 2 messages")
    assert sp.ids("deferred") == [] and sp.ids("active") == sorted([ID1, ID3, "0A0000000000D1"])
    assert "Requeued: 2 messages" in m.log()

    sp.put("deferred", "0A0000000000D2", qfile_bytes("0A0000000000D2", "a@b", [("P", "c@d")], b"x\n", 1))
    r = q(m, "delete", "ALL", "--deferred")
    assert (r.returncode, r.stdout) == (0, "moat queue: deleted 1 message\n")
    assert sp.ids("deferred") == [] and len(sp.ids("active")) == 3 and sp.ids("hold") == [ID2]
    r = q(m, "delete", "--deferred", ID3)
    assert (r.returncode, r.stderr) == (1, "moat queue: %s: not in the deferred queue\n" % ID3)
    assert sp.where(ID3) == ["active"]

    # ALL leaves incoming/ (being written) and corrupt/ alone.
    sp.put("incoming", "0A0000000000E1", b"partial")
    sp.put("corrupt", "0A0000000000E2", b"junk")
    r = q(m, "delete", "ALL")
    assert (r.returncode, r.stdout) == (0, "moat queue: deleted 4 messages\n")
    assert sp.ids("incoming") == ["0A0000000000E1"] and sp.ids("corrupt") == ["0A0000000000E2"]
    r = q(m, "delete", "0A0000000000E1")
    assert r.returncode == 1
    assert "0A0000000000E1: still being received (incoming queue)" in r.stderr
    # A corrupt file can be removed by name.
    r = q(m, "delete", "0A0000000000E2")
    assert (r.returncode, sp.ids("corrupt")) == (0, [])


def test_flush_without_daemon(offline):
    m, sp = offline
    before = time.time()
    r = q(m, "flush")
    assert r.returncode == 1
    assert r.stderr == ("moat queue: the daemon is not running (queue_directory %s); messages are "
                        "delivered at its next start\n" % sp.dir)
    # ... and they are: the deferred files are due now.
    assert os.stat(sp.path("deferred", ID1)).st_mtime >= before - 1
    r = q(m, "flush", ID3)
    assert (r.returncode, r.stderr) == (1, "moat queue: %s: not in the deferred queue (it is in active/)\n" % ID3)


def test_errors_and_usage(moat_factory):
    m = moat_factory(start=False, main={"queue_directory": "/nonexistent/moat-queue"})
    m.write_config()
    # Not an ID: refused before anything looks at the (missing) queue.
    for args in (("show", "../etc"), ("delete", "abc"), ("hold", "0A0A0A0A0A0A0A0A0A0A0A0A0A"),
                 ("flush", "0a1")):
        r = q(m, *args)
        assert r.returncode == 1, args
        assert re.match(r"^moat queue: \S+: not a queue ID", r.stderr), (args, r.stderr)
    r = q(m, "list")
    assert r.returncode == 1 and "queue_directory /nonexistent/moat-queue" in r.stderr
    for args in ((), ("frobnicate",), ("show",), ("delete",), ("list", "extra"), ("hold", "ALL", "0A"),
                 ("show", "--json", "0A"), ("hold", "--deferred", "ALL"), ("flush", "ALL")):
        r = q(m, *args)
        assert r.returncode == 2, (args, r.stderr)
    r = m.run_cli("queue", "--help")
    assert r.returncode == 0 and "usage: moat queue" in r.stdout


def test_unknown_ids_are_errors_but_the_rest_happens(offline):
    m, sp = offline
    r = q(m, "hold", "0A0000000000FF", ID3)
    assert r.returncode == 1
    assert r.stderr == "moat queue: 0A0000000000FF: no such message\n"
    assert r.stdout == "moat queue: held 1 message\n"
    assert sp.where(ID3) == ["hold"]


# ------------------------------------------------------------ with the daemon

DEAD = "dead.test"


@pytest.fixture
def relay(moat_factory, sink_factory):
    """A daemon relaying dead.test to [127.0.0.1]:PORT, nothing listening
    there yet; long backoffs keep deferred mail deferred.  Returns (moat,
    sink-not-started, spool)."""
    port = free_port_for("127.0.0.1")
    m = moat_factory(
        main={
            "relay_domains": DEAD,
            "minimal_backoff_time": "3600s",
            "maximal_backoff_time": "7200s",
            "queue_run_delay": "3600s",
            "smtp_connect_timeout": "5s",
        },
        files={"transport": "%s smtp:[127.0.0.1]:%d\n" % (DEAD, port)},
        build_maps=["transport"],
        start=False)
    m.main["transport_maps"] = "hash:" + m.path("transport")
    m.start()
    sink = sink_factory(host="127.0.0.1", port=port, start=False)
    return m, sink, Spool(m)


def send(m, rcpts, subject="queued"):
    body = "Subject: %s\r\nFrom: alice@example.org\r\n\r\nhello\r\n" % subject
    with Client(m.port) as c:
        c.ehlo()
        qid = c.sendmail("alice@example.org", rcpts, body)   # asserts the 250
        c.quit()
    return qid


def wait_deferred(m, sp, qid, nreasons=1):
    """Until qid sits in deferred/ with its reasons logged."""
    def ready():
        if sp.where(qid) != ["deferred"]:
            return None
        try:
            with open(sp.path("defer", qid), "rb") as f:
                return f.read().count(b"\n") >= nreasons
        except FileNotFoundError:
            return None
    wait_for(ready, timeout=20, what="%s in deferred/ (log:\n%s)" % (qid, m.log()[-3000:]))


def wait_gone(sp, qid):
    wait_for(lambda: sp.where(qid) == [], timeout=20, what="%s delivered" % qid)


def test_live_list_hold_flush_release(relay):
    m, sink, sp = relay
    a = send(m, ["a@%s" % DEAD, "b@%s" % DEAD], "first")
    wait_deferred(m, sp, a, 2)
    b = send(m, ["c@%s" % DEAD], "second")
    wait_deferred(m, sp, b)

    r = q(m, "list")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].startswith("-Queue ID-")
    ia = lines.index(next(l for l in lines if l.startswith(a)))
    assert re.match(r"^%s  +\d+ \w{3} \w{3} [ \d]\d \d\d:\d\d:\d\d  alice@example.org$" % a, lines[ia])
    assert lines[ia + 1].startswith("(") and lines[ia + 1].endswith(")")
    assert "127.0.0.1" in lines[ia + 1]
    assert lines[ia + 2].strip() == "a@%s" % DEAD and lines[ia + 3].strip() == "b@%s" % DEAD
    assert lines[-1] == "-- 1 Kbytes in 2 Requests."
    data = json.loads(q(m, "list", "--json").stdout)
    assert [d["id"] for d in data] == [a, b]
    assert all(d["queue"] == "deferred" and d["next_attempt"] > time.time() + 600 for d in data)
    assert all(rc["status"] == "pending" and "127.0.0.1" in rc["reason"] for d in data for rc in d["recipients"])

    r = q(m, "show", a)
    assert r.returncode == 0
    assert "recipient: a@%s [pending] (4." % DEAD in r.stdout
    assert "Subject: first\n" in r.stdout

    # Hold b; bring the next hop up; flush delivers a only.
    r = q(m, "hold", b)
    assert (r.returncode, sp.where(b)) == (0, ["hold"])
    assert "%s!" % b in q(m, "list").stdout
    sink.start()
    r = q(m, "flush")
    assert r.returncode == 0, r.stderr
    assert re.match(r"^ok \d+\n$", r.stdout), r.stdout
    msgs = sink.wait_messages(1)
    assert sorted(msgs[0]["rcpt_tos"]) == ["a@%s" % DEAD, "b@%s" % DEAD]
    wait_gone(sp, a)
    assert sp.where(b) == ["hold"]
    assert not os.path.exists(sp.path("defer", a))

    # Release: to active/ and a rescan, so it goes at once.
    r = q(m, "release", b)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "moat queue: released 1 message\n"
    sink.wait_messages(2)
    wait_gone(sp, b)
    assert q(m, "list").stdout == "Mail queue is empty\n"
    m.wait_log(r"moat/postsuper\[\d+\]: %s: released from hold$" % b)


def test_live_delete_and_requeue(relay):
    m, sink, sp = relay
    a = send(m, ["d@%s" % DEAD], "doomed")
    b = send(m, ["e@%s" % DEAD], "requeued")
    wait_deferred(m, sp, a)
    wait_deferred(m, sp, b)

    r = q(m, "delete", a)
    assert (r.returncode, r.stdout) == (0, "moat queue: deleted 1 message\n")
    assert sp.where(a) == [] and not os.path.exists(sp.path("defer", a))
    m.wait_log(r"moat/postsuper\[\d+\]: %s: removed$" % a)

    # requeue: deferred -> active and a rescan, so the daemon tries it at
    # once; but its next hop is still marked unreachable (for
    # minimal_backoff_time), so it is deferred again.  flush revives the
    # destination, as postqueue -f does.
    sink.start()
    r = q(m, "requeue", b)
    assert (r.returncode, r.stdout) == (0, "moat queue: requeued 1 message\n")
    m.wait_log(r"moat/postsuper\[\d+\]: %s: requeued$" % b)
    m.wait_log(r"%s: from=<alice@example.org>, .*\(queue active\)$" % b, count=2)
    wait_deferred(m, sp, b)
    r = q(m, "flush", b)
    assert (r.returncode, r.stdout) == (0, "ok 1\n"), r.stderr
    msgs = sink.wait_messages(1)
    assert len(msgs) == 1 and b"Subject: requeued" in msgs[0]["data"]
    wait_gone(sp, b)

    # flush ID of a message that is no longer queued: an error, exit 1.
    c = send(m, ["f@%s" % DEAD], "delivered at once")
    sink.wait_messages(2)
    wait_gone(sp, c)
    r = q(m, "flush", c)
    assert (r.returncode, r.stderr) == (1, "moat queue: %s: no such message\n" % c)


def test_commands_with_the_daemon_stopped(relay):
    m, sink, sp = relay
    a = send(m, ["g@%s" % DEAD], "flushed at start")
    b = send(m, ["h@%s" % DEAD], "held then released")
    c = send(m, ["i@%s" % DEAD], "deleted")
    d = send(m, ["j@%s" % DEAD], "requeued while stopped")
    for qid in (a, b, c, d):
        wait_deferred(m, sp, qid)
    assert m.stop() == 0

    r = q(m, "list", "--json")
    assert sorted(x["id"] for x in json.loads(r.stdout)) == sorted([a, b, c, d])
    r = q(m, "flush")
    assert r.returncode == 1
    assert "the daemon is not running (queue_directory %s)" % sp.dir in r.stderr
    assert q(m, "hold", b).returncode == 0
    assert q(m, "delete", c).returncode == 0
    r = q(m, "release", b)
    assert r.returncode == 0 and "the daemon is not running" in r.stdout
    r = q(m, "requeue", d)
    assert r.returncode == 0 and "the daemon is not running" in r.stdout
    assert sp.where(b) == ["active"] and sp.where(c) == [] and sp.where(a) == ["deferred"]
    assert sp.where(d) == ["active"]

    # The next start delivers the released and requeued ones (active/) and
    # the flushed one (due now).
    sink.start()
    m.start()
    msgs = sink.wait_messages(3)
    subjects = sorted(re.search(rb"Subject: ([^\r\n]*)", x["data"]).group(1) for x in msgs)
    assert subjects == [b"flushed at start", b"held then released", b"requeued while stopped"]
    for qid in (a, b, d):
        wait_gone(sp, qid)


def test_second_daemon_on_the_same_queue_is_refused(relay, moat_factory):
    m, _, sp = relay
    other = moat_factory(main={"queue_directory": sp.dir}, start=False)
    with pytest.raises(AssertionError) as e:
        other.start()
    assert "another moat daemon is running on this queue" in str(e.value)
    assert m.running()
    r = q(m, "flush")
    assert r.returncode == 0, r.stderr


def _control(sp):
    import socket
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(30)
    s.connect(os.path.join(sp.dir, "control"))
    return s


def _reply(s):
    data = b""
    while True:
        chunk = s.recv(4096)
        if not chunk:
            return data
        data += chunk


def test_control_socket_of_the_daemon(relay):
    import stat
    m, _, sp = relay
    path = os.path.join(sp.dir, "control")
    st = os.lstat(path)
    assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600
    for request, want in ((b"ping\n", b"ok %d\n" % m.pid), (b"rescan\n", b"ok 0\n"),
                          (b"flush\n", b"ok 0\n"), (b"status\n", b"error unknown command\n"),
                          (b"flush ../../x\n", b"error invalid queue id\n"),
                          (b"x" * 600, b"error request too long\n")):
        with _control(sp) as s:
            s.sendall(request)
            assert _reply(s) == want, request
    # A client that says nothing is dropped (after 5 s), with no reply.
    with _control(sp) as s:
        assert _reply(s) == b""
    assert m.running()

    # kill -9 leaves the socket file behind; the next start replaces it.
    m.kill9()
    assert os.path.exists(path)
    r = q(m, "flush")
    assert r.returncode == 1 and "the daemon is not running" in r.stderr
    m.start()
    r = q(m, "flush")
    assert (r.returncode, r.stdout) == (0, "ok 0\n"), r.stderr
