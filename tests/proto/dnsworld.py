"""The DNS test world: a private unbound serving fixed zones on loopback.

Owns: one unbound process per DnsWorld, started from the data files in
tests/dns/ (see tests/dns/README.md for every name and what it answers),
listening on 127.0.0.1 on a free high port, stopped by its PID.

Must never: query the Internet (the root zone is `static`, so every name
the data does not define is NXDOMAIN), bind port 53 on 127.0.0.1, or touch
/etc/resolv.conf or any system service.

    w = DnsWorld(tmpdir)                 # data: "world" and "postfix-replay"
    w.start()                            # returns once it answers a query
    w.forwarders                         # "127.0.0.1@PORT" for dns_forwarders
    w.query("zen.dnsbl.test", "A")       # -> ("NXDOMAIN", [])
    w.pause(); w.resume()                # SIGSTOP / SIGCONT: a server that
                                         # stops answering mid-run
    w.stop()

The query helpers are a small hand-written DNS client (no dnspython on the
test machines): one UDP question with RD set, the reply parsed enough to
show each record as text.
"""

import atexit
import os
import random
import signal
import socket
import struct
import subprocess
import time
from collections import namedtuple

HERE = os.path.dirname(os.path.abspath(__file__))
DATA_DIR = os.path.normpath(os.path.join(HERE, "..", "dns"))
UNBOUND = os.environ.get("MOAT_TEST_UNBOUND", "/usr/sbin/unbound")

# Every data set, loaded by default.  Each is tests/dns/NAME.conf.
DATA_SETS = ("world", "postfix-replay")

TYPES = {"A": 1, "NS": 2, "CNAME": 5, "SOA": 6, "PTR": 12, "MX": 15,
         "TXT": 16, "AAAA": 28, "ANY": 255}
TYPE_NAMES = {v: k for k, v in TYPES.items()}
RCODES = {0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN",
          4: "NOTIMP", 5: "REFUSED"}

Record = namedtuple("Record", "name type ttl text")
Reply = namedtuple("Reply", "rcode answers authority")

_LIVE = []   # started and not yet stopped; stopped at interpreter exit


class DnsWorldError(Exception):
    pass


# ------------------------------------------------------------ wire format

def encode_name(name):
    out = b""
    for label in name.rstrip(".").split("."):
        if not label:
            if name.strip(".") == "":
                break
            raise ValueError("empty label in %r" % name)
        raw = label.encode("ascii")
        if len(raw) > 63:
            raise ValueError("label over 63 octets in %r" % name)
        out += bytes([len(raw)]) + raw
    return out + b"\0"


def build_query(name, qtype, qid):
    code = TYPES[qtype.upper()] if isinstance(qtype, str) else int(qtype)
    header = struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0)   # RD
    return header + encode_name(name) + struct.pack("!HH", code, 1)


def _read_name(msg, off):
    """(name, offset after the name) with compression pointers followed."""
    labels = []
    end = None
    hops = 0
    while True:
        n = msg[off]
        if n & 0xC0 == 0xC0:
            if end is None:
                end = off + 2
            off = ((n & 0x3F) << 8) | msg[off + 1]
            hops += 1
            if hops > 64:
                raise DnsWorldError("compression loop")
            continue
        off += 1
        if n == 0:
            break
        labels.append(msg[off:off + n].decode("ascii", "replace"))
        off += n
    return ".".join(labels), (end if end is not None else off)


def _rdata_text(msg, rtype, off, rdlen):
    rd = msg[off:off + rdlen]
    if rtype == 1 and rdlen == 4:
        return socket.inet_ntop(socket.AF_INET, rd)
    if rtype == 28 and rdlen == 16:
        return socket.inet_ntop(socket.AF_INET6, rd)
    if rtype in (2, 5, 12):
        return _read_name(msg, off)[0]
    if rtype == 15:
        pref = struct.unpack("!H", rd[:2])[0]
        return "%d %s" % (pref, _read_name(msg, off + 2)[0] or ".")
    if rtype == 16:
        # The character-strings of one record, concatenated (RFC 7208
        # style), which is also how moat's resolver presents TXT data.
        parts, i = [], 0
        while i < len(rd):
            n = rd[i]
            parts.append(rd[i + 1:i + 1 + n].decode("utf-8", "replace"))
            i += 1 + n
        return "".join(parts)
    if rtype == 6:
        mname, o = _read_name(msg, off)
        rname, o = _read_name(msg, o)
        serial, refresh, retry, expire, minimum = struct.unpack("!IIIII", msg[o:o + 20])
        return "%s %s %d %d %d %d %d" % (mname, rname, serial, refresh, retry,
                                         expire, minimum)
    return rd.hex()


def parse_reply(msg, qid=None):
    if len(msg) < 12:
        raise DnsWorldError("short reply")
    rid, flags, qd, an, ns, _ar = struct.unpack("!HHHHHH", msg[:12])
    if qid is not None and rid != qid:
        raise DnsWorldError("reply id %d, query id %d" % (rid, qid))
    off = 12
    for _ in range(qd):
        _, off = _read_name(msg, off)
        off += 4
    sections = []
    for count in (an, ns):
        recs = []
        for _ in range(count):
            name, off = _read_name(msg, off)
            rtype, _cls, ttl, rdlen = struct.unpack("!HHIH", msg[off:off + 10])
            off += 10
            recs.append(Record(name, TYPE_NAMES.get(rtype, str(rtype)), ttl,
                               _rdata_text(msg, rtype, off, rdlen)))
            off += rdlen
        sections.append(recs)
    return Reply(RCODES.get(flags & 0xF, str(flags & 0xF)), sections[0], sections[1])


def lookup(port, name, qtype, timeout=2.0, host="127.0.0.1"):
    """One UDP question to host:port.  Raises TimeoutError when nothing
    answers within timeout seconds (no retransmission: a dropped query is
    what the timeout names are for)."""
    qid = random.randrange(1, 0xFFFF)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.settimeout(timeout)
        sock.connect((host, port))
        sock.send(build_query(name, qtype, qid))
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no answer for %s %s within %.1f s" % (name, qtype, timeout))
            sock.settimeout(left)
            try:
                msg = sock.recv(65535)
            except socket.timeout:
                raise TimeoutError("no answer for %s %s within %.1f s" % (name, qtype, timeout)) from None
            except ConnectionRefusedError:
                raise DnsWorldError("nothing listens on %s:%d" % (host, port)) from None
            if len(msg) >= 2 and struct.unpack("!H", msg[:2])[0] == qid:
                return parse_reply(msg, qid)
    finally:
        sock.close()


# ------------------------------------------------------------- the server

def _free_port():
    """A port free for both UDP and TCP on 127.0.0.1 right now."""
    for _ in range(50):
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        u.bind(("127.0.0.1", 0))
        port = u.getsockname()[1]
        t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            t.bind(("127.0.0.1", port))
        except OSError:
            continue
        finally:
            t.close()
            u.close()
        return port
    raise DnsWorldError("no free port")


class DnsWorld:
    def __init__(self, tmpdir, data=None, extra_interfaces=(), log_queries=False,
                 verbosity=1, shared=False):
        """tmpdir: a directory of its own (created if missing).  data: the
        data sets to load (names of tests/dns/*.conf), default all.
        extra_interfaces: more "addr@port" to listen on, e.g. for a peer
        that only reads resolv.conf.  log_queries: unbound logs every query
        it receives (to log_path).  shared: one server for many tests,
        which must therefore never be paused or stopped by a test."""
        self.dir = str(tmpdir)
        os.makedirs(self.dir, exist_ok=True)
        self.data = tuple(DATA_SETS if data is None else data)
        for d in self.data:
            if not os.path.exists(os.path.join(DATA_DIR, d + ".conf")):
                raise DnsWorldError("unknown data set %r (no tests/dns/%s.conf)" % (d, d))
        self.extra_interfaces = tuple(extra_interfaces)
        self.log_queries = log_queries
        self.verbosity = verbosity
        self.shared = shared
        self.port = None
        self.proc = None
        self.paused = False
        self.conf_path = os.path.join(self.dir, "unbound.conf")
        self.log_path = os.path.join(self.dir, "unbound.log")
        self.pid_path = os.path.join(self.dir, "unbound.pid")
        self.stderr_path = os.path.join(self.dir, "unbound.stderr")
        self._refuser = None

    # -- configuration

    @property
    def forwarders(self):
        return "127.0.0.1@%d" % self.port

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def _refusing_port(self):
        """A TCP port bound but never listening: a connection to it is
        refused at once, which makes unbound's stub zones fail fast with
        SERVFAIL.  Held for the life of the server so nothing else can
        take the port."""
        if self._refuser is None:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            self._refuser = s
        return self._refuser.getsockname()[1]

    def config_text(self):
        lines = [
            "# Written by tests/proto/dnsworld.py; data from tests/dns/.",
            "server:",
            "    interface: 127.0.0.1@%d" % self.port,
        ]
        lines += ["    interface: %s" % i for i in self.extra_interfaces]
        lines += [
            "    port: %d" % self.port,
            "    do-ip6: no",
            "    do-daemonize: no",
            "    username: \"\"",
            "    chroot: \"\"",
            "    directory: \"%s\"" % self.dir,
            "    pidfile: \"%s\"" % self.pid_path,
            "    logfile: \"%s\"" % self.log_path,
            "    use-syslog: no",
            "    log-time-ascii: yes",
            "    verbosity: %d" % self.verbosity,
            "    log-queries: %s" % ("yes" if self.log_queries else "no"),
            "    num-threads: 1",
            # Only the iterator: no DNSSEC validation, no trust anchor
            # files, nothing that wants the network at startup.
            "    module-config: \"iterator\"",
            "    access-control: 127.0.0.0/8 allow",
            # Stub zones point at a loopback port (the SERVFAIL names).
            "    do-not-query-localhost: no",
            "    prefetch: no",
            "    minimal-responses: yes",
            "    rrset-roundrobin: no",
            "",
            "remote-control:",
            "    control-enable: no",
            "",
        ]
        subst = {"@REFUSE_PORT@": str(self._refusing_port())}
        for d in self.data:
            with open(os.path.join(DATA_DIR, d + ".conf")) as f:
                text = f.read()
            for k, v in subst.items():
                text = text.replace(k, v)
            lines.append("# ---- tests/dns/%s.conf" % d)
            lines.append(text)
        return "\n".join(lines) + "\n"

    # -- life cycle

    def start(self, timeout=10.0):
        if self.proc is not None:
            raise DnsWorldError("already started")
        if not os.access(UNBOUND, os.X_OK):
            raise DnsWorldError("%s not found: install Debian's unbound (scripts/deps.sh)" % UNBOUND)
        last = ""
        for _attempt in range(5):
            self.port = _free_port()
            with open(self.conf_path, "w") as f:
                f.write(self.config_text())
            err = open(self.stderr_path, "wb")
            try:
                self.proc = subprocess.Popen([UNBOUND, "-d", "-c", self.conf_path],
                                             stdin=subprocess.DEVNULL,
                                             stdout=err, stderr=err,
                                             cwd=self.dir)
            finally:
                err.close()
            _LIVE.append(self)
            if self._wait_ready(timeout):
                return self
            last = self.diagnostics()
            self.stop()
            if "bind" not in last and "address already in use" not in last.lower():
                break
        raise DnsWorldError("unbound did not come up:\n" + last)

    def _wait_ready(self, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                r = lookup(self.port, "localhost", "A", timeout=0.2)
                if r.rcode == "NOERROR":
                    return True
            except (TimeoutError, DnsWorldError, OSError):
                pass
            time.sleep(0.02)
        return False

    def stop(self, timeout=10.0):
        """SIGTERM by PID (after SIGCONT if paused), wait for the exit.
        Returns the exit status, None if it was not running."""
        rc = None
        if self.proc is not None:
            if self.proc.poll() is None:
                if self.paused:
                    os.kill(self.proc.pid, signal.SIGCONT)
                self.proc.terminate()
                try:
                    self.proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
            rc = self.proc.returncode
            self.paused = False
        if self in _LIVE:
            _LIVE.remove(self)
        if self._refuser is not None:
            self._refuser.close()
            self._refuser = None
        return rc

    def restart(self):
        """Stop and start again on a new port (the config is rewritten)."""
        self.stop()
        self.proc = None
        return self.start()

    def pause(self):
        """SIGSTOP: the server stops answering (queries queue unanswered in
        its socket buffer) until resume()."""
        if self.shared:
            raise DnsWorldError("the shared DNS world is never paused: use dns_world_private")
        os.kill(self.proc.pid, signal.SIGSTOP)
        self.paused = True

    def resume(self):
        os.kill(self.proc.pid, signal.SIGCONT)
        self.paused = False

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def diagnostics(self):
        out = []
        for p in (self.stderr_path, self.log_path):
            try:
                with open(p, errors="replace") as f:
                    out.append("%s:\n%s" % (p, f.read()[-4000:]))
            except OSError:
                pass
        return "\n".join(out)

    # -- self-checks

    def lookup(self, name, qtype, timeout=2.0):
        """Reply(rcode, answers, authority): Record(name, type, ttl, text)."""
        return lookup(self.port, name, qtype, timeout=timeout)

    def query(self, name, qtype, timeout=2.0):
        """(rcode, [answer texts]), e.g. ("NOERROR", ["10 mx1.hasmx.test"]).
        Only records of the asked type are listed.  Raises TimeoutError
        when no answer arrives in time."""
        r = lookup(self.port, name, qtype, timeout=timeout)
        want = qtype.upper()
        return r.rcode, [rec.text for rec in r.answers if want == "ANY" or rec.type == want]

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


@atexit.register
def _stop_all():
    for w in list(_LIVE):
        try:
            w.stop()
        except Exception:
            pass
