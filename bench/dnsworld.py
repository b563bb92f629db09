"""bench/dnsworld.py DIR DATASET...: keep the test DNS server up for a
benchmark script (bench/lib.sh, start_dns).

Starts tests/proto/dnsworld.py's DnsWorld in DIR with the named data sets
(tests/dns/NAME.conf), writes "PORT PID" to DIR/ready once unbound answers,
and on SIGTERM or SIGINT stops unbound (by its PID) and exits.
"""
import os
import signal
import sys
import time

stop = []


def on_signal(signum, frame):
    stop.append(signum)


# Handlers first: a SIGTERM during start-up must still stop unbound.
signal.signal(signal.SIGTERM, on_signal)
signal.signal(signal.SIGINT, on_signal)
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "proto"))
from dnsworld import DnsWorld  # noqa: E402

w = DnsWorld(sys.argv[1], data=sys.argv[2:] or None)
try:
    w.start()
    with open(os.path.join(sys.argv[1], "ready.tmp"), "w") as f:
        f.write("%d %d\n" % (w.port, w.pid))
    os.rename(os.path.join(sys.argv[1], "ready.tmp"), os.path.join(sys.argv[1], "ready"))
    # A short sleep, not signal.pause(): a signal that lands between the
    # test and the wait must not leave the helper waiting for ever.
    while not stop:
        time.sleep(0.2)
finally:
    w.stop()
