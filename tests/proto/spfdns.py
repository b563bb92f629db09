"""spfdns: a small authoritative DNS responder for the RFC 7208 test suite.

Owns: one UDP and one TCP socket on 127.0.0.1 (the same free port), a
thread that answers from one zone map at a time, and the conversion of the
suite's YAML zonedata (../shared/testdata/spf/FORMAT.md) into DNS answers.
The zone can be replaced between scenarios without a restart
(set_zone()); the test stops the thread with stop() (joined).

Must never: listen anywhere but loopback, forward or recurse (a name the
zone does not hold is NXDOMAIN), or block the caller's thread.

    dns = SpfDns().start()
    dns.set_zone(scenario["zonedata"])       # the YAML map, as loaded
    dns.forwarders                           # "127.0.0.1@PORT" for dns_forwarders
    dns.queries()                            # [(proto, name, type, outcome), ...]
    dns.stop()

What it answers (the conventions of the suite's reference driver, pyspf,
restated in FORMAT.md):
  * A, AAAA, MX, PTR, CNAME, TXT and SPF (type 99) records; a TXT/SPF
    value that is a list is one record of several character-strings, and
    a string over 255 octets is split into 255-octet pieces.  Text is
    sent as the octets the YAML escapes name ("\\xEF" is the octet 0xEF),
    UTF-8 only for characters above U+00FF.
  * A name with SPF records but no TXT entry also serves each SPF value as
    TXT (after its other records); "TXT: NONE" turns that off.
  * A bare TIMEOUT in a name's list: a question for that name is never
    answered (the resolver times out) unless a record of the asked type
    comes before it; records after it are never served.  A record whose
    value is TIMEOUT does the same for its own type.
  * A missing name is NXDOMAIN, except that a missing name starting with
    "error." times out.  A name with records but none of the asked type
    is NODATA.  NXDOMAIN and NODATA carry an SOA in the authority section
    (owner: the name's last two labels), as a real zone server's would.
  * A CNAME is followed inside the zone, as an authoritative server does:
    the chain and the target's records are in the answer; a loop stops
    at the first repeated name (the resolver then finds no records and
    asks for the last target itself, which loops again: its problem).
  * Names are matched case-insensitively; the question is echoed as sent.
  * Over UDP an answer over 512 octets is sent as header and question
    with TC set, so the resolver asks again over TCP (EDNS is ignored:
    the reply carries no OPT, which tells the resolver 512 is the limit).
"""

import ipaddress
import selectors
import socket
import struct
import threading

TYPES = {"A": 1, "NS": 2, "CNAME": 5, "SOA": 6, "PTR": 12, "MX": 15,
         "TXT": 16, "AAAA": 28, "SPF": 99, "ANY": 255}
TYPE_NAMES = {v: k for k, v in TYPES.items()}

NOERROR, FORMERR, NXDOMAIN, NOTIMP = 0, 1, 3, 4
TTL = 300
UDP_LIMIT = 512
CNAME_HOPS = 16


class ZoneError(ValueError):
    pass


# ------------------------------------------------------------ wire format

def _octets(text):
    """The octets a YAML string stands for: code points up to U+00FF are
    one octet each (so "\\x80" is 0x80, not UTF-8's C2 80)."""
    if isinstance(text, bytes):
        return text
    text = str(text)
    try:
        return text.encode("latin-1")
    except UnicodeEncodeError:
        return text.encode("utf-8")


def _key(name):
    """The lookup key of a name: octets, ASCII lower case, no final dot."""
    raw = _octets(name)
    if raw.endswith(b".") and raw != b".":
        raw = raw[:-1]
    return raw.lower()


def encode_name(name):
    raw = _key(name) if not isinstance(name, bytes) else name
    if raw in (b"", b"."):
        return b"\0"
    out = b""
    for label in raw.split(b"."):
        if not label or len(label) > 63:
            raise ZoneError("cannot encode name %r" % (name,))
        out += bytes([len(label)]) + label
    return out + b"\0"


def _character_strings(value):
    """TXT rdata: a str is one text split at 255 octets; a list is one
    character-string per element (each split the same way); an empty list
    gives rdata of length zero (illegal, but the suite has one)."""
    parts = value if isinstance(value, list) else [value]
    out = b""
    for part in parts:
        raw = _octets(part)
        if raw == b"":
            out += b"\0"
        for i in range(0, len(raw), 255):
            chunk = raw[i:i + 255]
            out += bytes([len(chunk)]) + chunk
    return out


def _rdata(rtype, value):
    if rtype == "A":
        return ipaddress.IPv4Address(str(value)).packed
    if rtype == "AAAA":
        return ipaddress.IPv6Address(str(value)).packed
    if rtype in ("CNAME", "PTR", "NS"):
        return encode_name(str(value))
    if rtype == "MX":
        if not isinstance(value, list) or len(value) != 2:
            raise ZoneError("MX wants [preference, name], got %r" % (value,))
        return struct.pack("!H", int(value[0])) + encode_name(str(value[1]))
    if rtype in ("TXT", "SPF"):
        return _character_strings(value)
    raise ZoneError("record type %r is not served" % (rtype,))


def _rr(owner_wire, rtype, rdata, ttl=TTL):
    return owner_wire + struct.pack("!HHIH", TYPES[rtype], 1, ttl, len(rdata)) + rdata


def _soa_rr(key):
    """The SOA of a negative answer for key: owned by its last two labels
    (the root for a name the wire cannot carry), with a 60 s minimum."""
    zone = b".".join(key.split(b".")[-2:])
    try:
        owner = encode_name(zone)
    except ZoneError:
        zone, owner = b"", b"\0"
    suffix = b"." + zone if zone else b""
    rdata = (encode_name(b"ns" + suffix) + encode_name(b"hostmaster" + suffix)
             + struct.pack("!IIIII", 1, 3600, 600, 86400, 60))
    return _rr(owner, "SOA", rdata, ttl=60)


# ------------------------------------------------------------- the zone

TIMEOUT = object()   # an entry of a name's list: questions go unanswered


def compile_zone(zonedata):
    """{key: [(TYPE, rdata octets) | (TYPE, TIMEOUT) | TIMEOUT]} from the
    YAML map, with FORMAT.md's conventions applied.  Raises ZoneError for
    data it cannot serve (so a typo in test data fails loudly)."""
    zone = {}
    for name, records in (zonedata or {}).items():
        entries = []
        generated = []
        has_txt = False
        for rec in records or []:
            if rec == "TIMEOUT":
                entries.append(TIMEOUT)
                continue
            if not isinstance(rec, dict) or len(rec) != 1:
                raise ZoneError("%s: record %r is not a one-key map" % (name, rec))
            (rtype, value), = rec.items()
            rtype = str(rtype).upper()
            if rtype not in TYPES or rtype in ("ANY", "SOA"):
                raise ZoneError("%s: record type %r is not served" % (name, rtype))
            if rtype == "TXT":
                has_txt = True
            if value == "NONE" and rtype in ("TXT", "SPF"):
                continue
            if value == "TIMEOUT":
                entries.append((rtype, TIMEOUT))
                continue
            data = _rdata(rtype, value)
            entries.append((rtype, data))
            if rtype == "SPF":
                generated.append(("TXT", data))
        if not has_txt:
            entries += generated
        zone.setdefault(_key(name), []).extend(entries)
    return zone


class Answer:
    """What one question gets: rcode and answer records, or no reply."""
    __slots__ = ("rcode", "answers", "authority", "silent", "outcome")

    def __init__(self, rcode=NOERROR, answers=(), authority=(), silent=False, outcome=""):
        self.rcode = rcode
        self.answers = list(answers)
        self.authority = list(authority)
        self.silent = silent
        self.outcome = outcome


def _records_of(entries, qtype):
    """(records of qtype, timed out) following the TIMEOUT rule above."""
    found = []
    for e in entries:
        if e is TIMEOUT:
            return found, not found
        rtype, data = e
        if rtype == qtype:
            if data is TIMEOUT:
                return found, True
            found.append(data)
    return found, False


def resolve(zone, qname_key, qtype, owner=None):
    """The Answer for (name key, type name) in a compiled zone; owner: the
    question's name in wire format as sent (default: from the key)."""
    entries = zone.get(qname_key)
    if entries is None:
        if qname_key.startswith(b"error."):
            return Answer(silent=True, outcome="timeout (error.)")
        return Answer(NXDOMAIN, authority=[_soa_rr(qname_key)], outcome="NXDOMAIN")
    answers = []
    seen = set()
    key = qname_key
    owner = owner or encode_name(key)
    while True:
        if qtype != "CNAME":
            cname, _ = _records_of(entries, "CNAME")
            if cname:
                seen.add(key)
                answers.append(_rr(owner, "CNAME", cname[0]))
                target = _decode_wire_name(cname[0])
                if target in seen or len(seen) > CNAME_HOPS:
                    return Answer(answers=answers, outcome="CNAME loop")
                nxt = zone.get(target)
                if nxt is None:
                    # An authoritative server answers the chain; the
                    # resolver asks for the target itself.
                    return Answer(answers=answers, outcome="CNAME to %s (outside)" % target.decode("latin-1"))
                key, entries, owner = target, nxt, cname[0]
                continue
        records, timed_out = _records_of(entries, qtype)
        if timed_out:
            if answers:
                # The chain led to a name that times out: stay silent too.
                return Answer(silent=True, outcome="timeout (after CNAME)")
            return Answer(silent=True, outcome="timeout")
        if records:
            answers += [_rr(owner, qtype, data) for data in records]
            return Answer(answers=answers, outcome="%d records" % len(records))
        if answers:
            return Answer(answers=answers, outcome="CNAME, target NODATA")
        return Answer(authority=[_soa_rr(key)], outcome="NODATA")


def _decode_wire_name(wire):
    labels, i = [], 0
    while wire[i]:
        n = wire[i]
        labels.append(wire[i + 1:i + 1 + n])
        i += 1 + n
    return b".".join(labels).lower()


# ----------------------------------------------------------- messages

def parse_question(msg):
    """(id, flags, question octets, name key, qtype number) of a query;
    raises ValueError for anything that is not one plain question."""
    if len(msg) < 12:
        raise ValueError("short message")
    qid, flags, qd, _an, _ns, _ar = struct.unpack("!HHHHHH", msg[:12])
    if flags & 0x8000:
        raise ValueError("a response, not a query")
    if qd != 1:
        raise ValueError("%d questions" % qd)
    off = 12
    labels = []
    while True:
        if off >= len(msg):
            raise ValueError("truncated name")
        n = msg[off]
        if n & 0xC0:
            raise ValueError("compressed name in a question")
        off += 1
        if n == 0:
            break
        labels.append(msg[off:off + n])
        off += n
    if off + 4 > len(msg):
        raise ValueError("truncated question")
    qtype, _qclass = struct.unpack("!HH", msg[off:off + 4])
    return qid, flags, msg[12:off + 4], b".".join(labels).lower(), qtype


def build_reply(qid, qflags, question, answer, limit=None):
    """The reply octets; with limit (UDP), TC and no records when the full
    reply would be longer."""
    opcode = qflags & 0x7800
    rd = qflags & 0x0100
    flags = 0x8000 | opcode | 0x0400 | rd | 0x0080 | answer.rcode   # QR AA RA
    body = b"".join(answer.answers) + b"".join(answer.authority)
    full = struct.pack("!HHHHHH", qid, flags, 1, len(answer.answers),
                       len(answer.authority), 0) + question + body
    if limit is None or len(full) <= limit:
        return full
    return struct.pack("!HHHHHH", qid, flags | 0x0200, 1, 0, 0, 0) + question


# ------------------------------------------------------------ the server

class SpfDns:
    def __init__(self, host="127.0.0.1", zonedata=None):
        if not host.startswith("127.") and host != "::1":
            raise ValueError("spfdns listens on loopback only")
        self.host = host
        self.port = None
        self._zone = compile_zone(zonedata)
        self._log = []
        self._lock = threading.Lock()
        self._thread = None
        self._stopping = False
        self._udp = self._tcp = None
        self._wake_r = self._wake_w = None
        self._conns = {}
        self.errors = []   # exceptions in the server thread (a test fails on them)

    @property
    def forwarders(self):
        return "%s@%d" % (self.host, self.port)

    def set_zone(self, zonedata):
        """Serve zonedata (the YAML map) from the next question on."""
        zone = compile_zone(zonedata)
        with self._lock:
            self._zone = zone
            self._log = []

    def queries(self):
        """Questions since the last set_zone(): (proto, name, type, outcome)."""
        with self._lock:
            return list(self._log)

    # -- life cycle

    def _bind(self):
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        for _ in range(50):
            udp = socket.socket(family, socket.SOCK_DGRAM)
            udp.bind((self.host, 0))
            port = udp.getsockname()[1]
            tcp = socket.socket(family, socket.SOCK_STREAM)
            tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                tcp.bind((self.host, port))
            except OSError:
                tcp.close()
                udp.close()
                continue
            tcp.listen(64)
            return udp, tcp, port
        raise OSError("spfdns: no port free for both UDP and TCP")

    def start(self):
        if self._thread is not None:
            raise RuntimeError("already started")
        self._udp, self._tcp, self.port = self._bind()
        self._udp.setblocking(False)
        self._tcp.setblocking(False)
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._stopping = False
        self._thread = threading.Thread(target=self._serve, name="spfdns", daemon=True)
        self._thread.start()
        return self

    def stop(self):
        if self._thread is None:
            return
        self._stopping = True
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass
        self._thread.join(10)
        alive = self._thread.is_alive()
        self._thread = None
        for s in [self._udp, self._tcp, self._wake_r, self._wake_w, *self._conns]:
            try:
                s.close()
            except OSError:
                pass
        self._conns = {}
        if alive:
            raise RuntimeError("spfdns thread did not stop")

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # -- the loop

    def _serve(self):
        sel = selectors.DefaultSelector()
        sel.register(self._udp, selectors.EVENT_READ, "udp")
        sel.register(self._tcp, selectors.EVENT_READ, "accept")
        sel.register(self._wake_r, selectors.EVENT_READ, "wake")
        try:
            while not self._stopping:
                for key, _ev in sel.select():
                    try:
                        self._event(sel, key)
                    except Exception as e:   # noqa: BLE001 - reported to the test
                        self.errors.append("%s: %r" % (key.data, e))
        finally:
            sel.close()

    def _event(self, sel, key):
        if key.data == "wake":
            key.fileobj.recv(64)
        elif key.data == "udp":
            try:
                msg, peer = self._udp.recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                return
            reply = self._handle(msg, "udp")
            if reply is not None:
                self._udp.sendto(reply, peer)
        elif key.data == "accept":
            try:
                conn, _peer = self._tcp.accept()
            except (BlockingIOError, InterruptedError):
                return
            conn.setblocking(False)
            self._conns[conn] = b""
            sel.register(conn, selectors.EVENT_READ, "tcp")
        else:
            conn = key.fileobj
            try:
                data = conn.recv(65535)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                data = b""
            if not data:
                sel.unregister(conn)
                self._conns.pop(conn, None)
                conn.close()
                return
            buf = self._conns[conn] + data
            while len(buf) >= 2:
                n = struct.unpack("!H", buf[:2])[0]
                if len(buf) < 2 + n:
                    break
                reply = self._handle(buf[2:2 + n], "tcp")
                buf = buf[2 + n:]
                if reply is not None:
                    # Small replies to a local peer: a blocking send is fine.
                    conn.setblocking(True)
                    try:
                        conn.sendall(struct.pack("!H", len(reply)) + reply)
                    finally:
                        conn.setblocking(False)
            self._conns[conn] = buf

    def _handle(self, msg, proto):
        try:
            qid, flags, question, key, qtype = parse_question(msg)
        except ValueError:
            if len(msg) >= 12 and not msg[2] & 0x80:
                qid, flags = struct.unpack("!HH", msg[:4])
                return struct.pack("!HHHHHH", qid, 0x8000 | (flags & 0x0100) | FORMERR, 0, 0, 0, 0)
            return None
        tname = TYPE_NAMES.get(qtype, str(qtype))
        with self._lock:
            zone = self._zone
        if flags & 0x7800:
            answer = Answer(NOTIMP, outcome="NOTIMP (opcode)")
        elif tname in ("A", "AAAA", "MX", "PTR", "CNAME", "TXT", "SPF", "NS", "SOA"):
            answer = resolve(zone, key, tname, question[:-4])
        else:
            answer = resolve(zone, key, "?", question[:-4])   # NXDOMAIN / timeout / NODATA as for any type
        reply = None
        outcome = answer.outcome
        if not answer.silent:
            reply = build_reply(qid, flags, question, answer, UDP_LIMIT if proto == "udp" else None)
            if proto == "udp" and reply[2] & 0x02:
                outcome += ", truncated"
        with self._lock:
            self._log.append((proto, key.decode("latin-1"), tname, outcome))
        return reply


# ------------------------------------------------------------ by hand

def _main():
    """python3 spfdns.py rfc7208-tests.yml 'Scenario description':
    serve one scenario until interrupted (for trying moat spf by hand)."""
    import sys
    import time
    import yaml
    if len(sys.argv) != 3:
        sys.exit("usage: spfdns.py SUITE.yml SCENARIO-DESCRIPTION")
    with open(sys.argv[1], "rb") as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    match = [d for d in docs if d.get("description") == sys.argv[2]]
    if not match:
        sys.exit("no scenario %r; have: %s" % (sys.argv[2], ", ".join(repr(d.get("description")) for d in docs)))
    with SpfDns(zonedata=match[0]["zonedata"]) as dns:
        print("dns_forwarders = %s" % dns.forwarders, flush=True)
        shown = 0
        try:
            while True:
                time.sleep(0.5)
                log = dns.queries()
                for q in log[shown:]:
                    print(*q, flush=True)
                shown = len(log)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    _main()
