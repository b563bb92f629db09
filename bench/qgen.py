"""bench/qgen.py QUEUE_DIR COUNT [--queue deferred] [--age SECONDS] [--rcpts N]
[--domain D] [--size BYTES]: write COUNT queue files for the queue
manager benchmark (bench/queue.sh).

Writes complete, valid version 1 queue files (docs/queue.md: envelope,
content, trailer) straight into QUEUE_DIR/QUEUE/, as if that many messages
had been accepted AGE seconds ago and deferred since, and sets each file's
mtime (in deferred/, the time of its next attempt) AGE seconds in the past,
so every one is due at once.  IDs are 14 hex digits, unique within a run.

No fsync: the files are test data, and the benchmark measures moat, not
this script.  Prints "wrote N files in S s" on stderr.  Must never write
outside QUEUE_DIR.
"""

import argparse
import os
import sys
import time


def enc(v):
    """docs/queue.md's value encoding: %, bytes below 0x20 and DEL as %XX."""
    out = []
    for ch in v.encode():
        if ch == 0x25 or ch < 0x20 or ch == 0x7F:
            out.append("%%%02X" % ch)
        else:
            out.append(chr(ch))
    return "".join(out)


def content_for(qid, size):
    head = ("Received: from client.bench.test (client.bench.test [127.0.0.2])\n"
            "\tby bench.example.test (moat) with ESMTP id %s\n"
            "From: <bench@client.bench.test>\nTo: <bench@deferred.bench.test>\n"
            "Subject: deferred %s\nMessage-ID: <%s@client.bench.test>\n\n" % (qid, qid, qid))
    body = ""
    while len(head) + len(body) < size:
        body += "deferred mail for the queue manager benchmark, line of text\n"
    return (head + body).encode()


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("queue_dir")
    ap.add_argument("count", type=int)
    ap.add_argument("--queue", default="deferred", choices=("deferred", "active"))
    ap.add_argument("--age", type=float, default=3600.0,
                    help="seconds since arrival; the mtime is set as far in the past")
    ap.add_argument("--rcpts", type=int, default=1)
    ap.add_argument("--domain", default="deferred.bench.test")
    ap.add_argument("--size", type=int, default=400, help="approximate content bytes")
    a = ap.parse_args(argv)
    d = os.path.join(a.queue_dir, a.queue)
    os.makedirs(d, mode=0o700, exist_ok=True)
    t0 = time.monotonic()
    now = time.time()
    when = now - a.age
    arrival = int(when * 1e6)
    # 6 digits of seconds as moat's IDs (mod 2^24), then a counter in 8.
    prefix = "%06X" % (int(when) & 0xFFFFFF)
    for i in range(a.count):
        qid = "%s%08X" % (prefix, i)
        content = content_for(qid, a.size)
        rcpts = "".join("rcpt P %s\n" % enc("u%d.%d@%s" % (i, r, a.domain)) for r in range(a.rcpts))
        env = ("MOAT-QUEUE 1\nid %s\narrival %d\nclient_name client.bench.test\n"
               "client_addr 127.0.0.2\nhelo client.bench.test\nprotocol ESMTP\n"
               "sender bench@client.bench.test\nbody_type \nsmtputf8 no\nnrcpt %d\n%scontent\n"
               % (qid, arrival + i, a.rcpts, rcpts)).encode()
        trailer = b"MOAT-END %020d\n" % len(content)
        path = os.path.join(d, qid)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, env + content + trailer)
            os.utime(fd, (when, when))
        finally:
            os.close(fd)
    print("wrote %d files in %.1f s" % (a.count, time.monotonic() - t0), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
