"""A scriptable receiving SMTP/LMTP server for moat's delivery tests.

Owns: one server process per Sink (this file run by /usr/bin/python3 as
a script), listening on one loopback address, answering as a script says,
and writing what it received into its own directory, which the parent
(the Sink object in the test) reads back.  The server is asyncio on raw
sockets, so every byte and every delay is under the script's control.

Must never: listen on anything but a loopback address, start a thread, or
keep running after SIGTERM.

    from sink import Sink
    s = Sink(tmpdir, host="127.0.0.1", port=None, lmtp=False, script=None, name="sink")
    s.start()                  # returns once the server listens; s.port, s.host
    s.set_script({...})        # takes effect from the next session on
    s.messages()               # accepted transactions, in arrival order
    s.wait_messages(n)         # until at least n, then messages()
    s.stats()                  # sessions, max_concurrent, transactions, ...
    s.commands()               # [(session, "EHLO mx.example.test"), ...]
    s.stop()                   # SIGTERM by PID, wait

Files in the sink's directory (tmpdir/name):
    script.json    the script; the server rereads it at each new session
    ready          {"port": P, "pid": N} once listening
    stats.json     the counters, rewritten (atomically) before every reply
                   that changes them
    commands.log   one JSON line [session, "command line"] per command,
                   written before the command is answered
    msg/T000001.eml + .json   each accepted transaction: the content, then
                   the envelope; both written atomically (tmp + rename)
                   before the reply that accepts it is sent
    sink.stderr    the server's stderr (a Python traceback lands here)

Counting is exact from the client's side: a session counts as open from
the moment the server accepts it until the server has read QUIT (before
it answers 221), closed the connection itself, or sees that the client
has gone.  Before counting a new connection the server checks every open
session for a peer that has already hung up (POLLRDHUP), so a client that
closes one connection and at once opens another is never counted twice.

The script (every key optional; tests/proto/test_sink.py shows each):
    hostname         name in the default greeting and EHLO reply ["sink.test"]
    greeting         "220 ..." | "554 go away" | "garbage" (sends b"hello\\r\\n")
    ehlo_extensions  list of EHLO keywords [PIPELINING, SIZE 10240000,
                     8BITMIME, SMTPUTF8, ENHANCEDSTATUSCODES,
                     XFORWARD NAME ADDR PROTO HELO]
    no_ehlo          EHLO gets 502 (HELO still works)
    mail             reply to MAIL; a str, or {sender: reply, "*": default}
    rcpt             {recipient: reply, "*": default} or a str
    data             reply to DATA ["354 End data with <CR><LF>.<CR><LF>"]
    data_end         reply after the dot; %(n)d is the transaction number
    lmtp_data_end    LMTP: {recipient: reply, "*": default} after the dot,
                     one reply per accepted recipient [data_end for each]
    delay            {stage: seconds} before answering: greeting, ehlo,
                     mail, rcpt, data, data_end, rset, quit, xforward
    drop             close without a reply at: greeting (right after
                     accept) | ehlo | mail | rcpt | data (after the 354, once
                     content has started to arrive) | data_end (after the dot)
    drop_first       only the first N drops (since the script was set) happen
    garbage_at       answer this stage with b"xyz\\r\\n"
    fail_first       the first N transactions (since the script was set) get
                     "451 4.3.0 Error: try again later" after the dot
A reply text with "\\n" in it is sent as several lines (multi-line reply).
A SIZE keyword with a limit makes MAIL ... SIZE=n above it and content
above it get 552 5.3.4, as real servers do.
"""

import asyncio
import errno
import json
import os
import select
import signal
import socket
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
PYTHON = "/usr/bin/python3"

DEFAULT_EXTENSIONS = ["PIPELINING", "SIZE 10240000", "8BITMIME", "SMTPUTF8",
                      "ENHANCEDSTATUSCODES", "XFORWARD NAME ADDR PROTO HELO"]
DEFAULTS = {
    "hostname": "sink.test",
    "greeting": None,            # "220 <hostname> ESMTP" (LMTP: "... LMTP")
    "ehlo_extensions": DEFAULT_EXTENSIONS,
    "no_ehlo": False,
    "mail": "250 2.1.0 Ok",
    "rcpt": "250 2.1.5 Ok",
    "data": "354 End data with <CR><LF>.<CR><LF>",
    "data_end": "250 2.0.0 Ok: queued as SINK%(n)d",
    "lmtp_data_end": None,
    "delay": {},
    "drop": None,
    "drop_first": None,
    "garbage_at": None,
    "fail_first": 0,
}
STAGES = ("greeting", "ehlo", "mail", "rcpt", "data", "data_end", "rset", "quit", "xforward")
DROP_STAGES = ("greeting", "ehlo", "mail", "rcpt", "data", "data_end")
FAIL_FIRST_REPLY = "451 4.3.0 Error: try again later"
GARBAGE = b"xyz\r\n"


def check_script(script):
    """Refuse unknown keys and stages: a typo must not silently mean 'default'."""
    if script is None:
        return {}
    if not isinstance(script, dict):
        raise TypeError("a sink script is a dict")
    for k in script:
        if k not in DEFAULTS:
            raise ValueError("unknown sink script key %r (known: %s)" % (k, ", ".join(DEFAULTS)))
    for k in ("drop", "garbage_at"):
        v = script.get(k)
        allowed = DROP_STAGES if k == "drop" else STAGES
        if v is not None and v not in allowed:
            raise ValueError("%s: unknown stage %r (one of %s)" % (k, v, ", ".join(allowed)))
    for k in script.get("delay") or {}:
        if k not in STAGES:
            raise ValueError("delay: unknown stage %r (one of %s)" % (k, ", ".join(STAGES)))
    return dict(script)


def _write_atomic(path, data):
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.rename(tmp, path)


def _loopback(host):
    try:
        if ":" in host:
            return socket.inet_pton(socket.AF_INET6, host) == socket.inet_pton(socket.AF_INET6, "::1")
        return socket.inet_aton(host)[0] == 127 and host.count(".") == 3
    except OSError:
        return False


def free_port_for(*hosts):
    """A TCP port free right now on every one of hosts (e.g. the
    127.0.0.61 and 127.0.0.62 of an MX pair that share the next hop's port),
    and on 127.0.0.60 as well, so that no test server ever sits on the
    dead MX's port."""
    hosts = tuple(hosts or ("127.0.0.1",)) + ("127.0.0.60",)
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((hosts[0] if ":" not in hosts[0] else "127.0.0.1", 0))
            port = s.getsockname()[1]
        ok = True
        for h in hosts:
            fam = socket.AF_INET6 if ":" in h else socket.AF_INET
            with socket.socket(fam, socket.SOCK_STREAM) as t:
                try:
                    t.bind((h, port))
                except OSError:
                    ok = False
                    break
        if ok:
            return port
    raise RuntimeError("no port free on all of %s" % (hosts,))


# ================================================================ the parent

class Sink:
    def __init__(self, tmpdir, host="127.0.0.1", port=None, lmtp=False, script=None, name="sink"):
        if not _loopback(host):
            raise ValueError("sink: %r is not a loopback address" % host)
        base = os.path.join(str(tmpdir), name)
        d, i = base, 1
        while os.path.exists(d):          # two sinks of one name in one tmpdir
            i += 1
            d = "%s-%d" % (base, i)
        self.dir = d
        os.makedirs(os.path.join(self.dir, "msg"))
        self.host = host
        self.port = port
        self.lmtp = lmtp
        self.name = name
        self.proc = None
        self.stderr_path = os.path.join(self.dir, "sink.stderr")
        self.set_script(script)

    # -- control
    def set_script(self, script):
        """Replace the whole script; sessions that start from now on use it
        (and fail_first/drop_first count afresh)."""
        self.script = check_script(script)
        _write_atomic(os.path.join(self.dir, "script.json"),
                      json.dumps(self.script, sort_keys=True).encode())

    def start(self, timeout=10.0):
        assert self.proc is None or self.proc.poll() is not None, "sink already running"
        ready = os.path.join(self.dir, "ready")
        if os.path.exists(ready):
            os.unlink(ready)
        args = [PYTHON, os.path.join(HERE, "sink.py"), "--dir", self.dir, "--host", self.host,
                "--port", str(self.port or 0)]
        if self.lmtp:
            args.append("--lmtp")
        with open(self.stderr_path, "ab") as err:
            self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=err, stderr=err,
                                         cwd=self.dir)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise AssertionError("sink exited with %s during start-up:\n%s"
                                     % (self.proc.returncode, self.stderr()))
            try:
                with open(ready) as f:
                    info = json.load(f)
                self.port = info["port"]
                return self
            except (FileNotFoundError, ValueError):
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise AssertionError("sink did not listen within %.0fs:\n%s" % (timeout, self.stderr()))
            time.sleep(0.01)

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout=10.0):
        """SIGTERM by PID, wait (SIGKILL after timeout).  The counters and
        messages stay; start() again continues them (same port)."""
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        return self.proc.returncode

    def stderr(self):
        try:
            with open(self.stderr_path, errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def problems(self):
        """A traceback in the server's stderr, or an exit nobody asked for."""
        out = []
        text = self.stderr()
        if "Traceback" in text:
            out.append("sink %s: %s" % (self.name, text[-3000:]))
        return out

    # -- what was received
    def messages(self):
        d = os.path.join(self.dir, "msg")
        out = []
        for n in sorted(os.listdir(d)):
            if not n.endswith(".json"):
                continue
            with open(os.path.join(d, n)) as f:
                m = json.load(f)
            with open(os.path.join(d, m.pop("eml")), "rb") as f:
                m["data"] = f.read()
            out.append(m)
        return out

    def wait_messages(self, n, timeout=20):
        deadline = time.monotonic() + timeout
        while True:
            msgs = self.messages()
            if len(msgs) >= n:
                return msgs
            if time.monotonic() > deadline:
                raise AssertionError("sink %s: %d message(s) after %.0fs, expected %d; stats %s; "
                                     "last commands %s" % (self.name, len(msgs), timeout, n,
                                                           self.stats(), self.commands()[-20:]))
            time.sleep(0.05)

    def stats(self):
        try:
            with open(os.path.join(self.dir, "stats.json")) as f:
                st = json.load(f)
        except FileNotFoundError:
            st = _new_stats()
        return st

    def commands(self):
        try:
            with open(os.path.join(self.dir, "commands.log")) as f:
                lines = f.read().splitlines()
        except FileNotFoundError:
            return []
        out = []
        for line in lines:
            try:
                s, c = json.loads(line)
            except ValueError:      # a line being written right now
                continue
            out.append((s, c))
        return out

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


class SmtpSink:
    """Postfix's smtp-sink (fast, no script), started and stopped by PID:
    SmtpSink(tmpdir, args=["-c"]) -> smtp-sink -u USER ARGS HOST:PORT BACKLOG."""

    BIN = "/usr/sbin/smtp-sink"

    def __init__(self, tmpdir, host="127.0.0.1", port=None, args=(), backlog=256):
        if not _loopback(host):
            raise ValueError("smtp-sink: %r is not a loopback address" % host)
        self.dir = str(tmpdir)
        os.makedirs(self.dir, exist_ok=True)
        self.host, self.port, self.args, self.backlog = host, port, list(args), backlog
        self.proc = None

    def start(self, timeout=10.0):
        import pwd
        if not self.port:
            self.port = free_port_for(self.host)
        user = pwd.getpwuid(os.getuid()).pw_name
        addr = "[%s]:%d" % (self.host, self.port) if ":" in self.host else "%s:%d" % (self.host, self.port)
        with open(os.path.join(self.dir, "smtp-sink.out"), "ab") as out:
            self.proc = subprocess.Popen([self.BIN, "-u", user] + self.args + [addr, str(self.backlog)],
                                         stdin=subprocess.DEVNULL, stdout=out, stderr=out, cwd=self.dir)
        fam = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise AssertionError("smtp-sink exited with %s" % self.proc.returncode)
            with socket.socket(fam, socket.SOCK_STREAM) as s:
                s.settimeout(1)
                try:
                    s.connect((self.host, self.port))
                    if s.recv(100).startswith(b"220"):
                        s.sendall(b"QUIT\r\n")
                        return self
                except OSError:
                    pass
            if time.monotonic() > deadline:
                self.stop()
                raise AssertionError("smtp-sink did not answer on %s" % addr)
            time.sleep(0.05)

    def stop(self, timeout=10.0):
        if self.proc is None or self.proc.poll() is not None:
            return None
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        return self.proc.returncode


# ================================================================ the server

def _new_stats():
    return {"sessions": 0, "current": 0, "max_concurrent": 0, "transactions": 0, "accepted": 0,
            "in_transaction": 0, "max_concurrent_transactions": 0, "rcpt_replies": {},
            "data_end_replies": {}, "rsets": 0, "drops": 0, "pipelined_commands": 0}


class Dropped(Exception):
    """The script closes this connection now, without a reply."""


class PeerGone(Exception):
    pass


def _pick(value, key, default):
    """A reply given as a str, or as {key: reply, "*": fallback}."""
    if value is None:
        return default
    if isinstance(value, str):
        return value
    if key in value:
        return value[key]
    low = key.lower()
    for k, v in value.items():
        if k.lower() == low:
            return v
    return value.get("*", default)


def _fill(text, n):
    if "%(" not in text:
        return text
    try:
        return text % {"n": n}
    except (KeyError, ValueError, TypeError):
        return text


def _path_arg(rest):
    """'<a@b> SIZE=1 BODY=8BITMIME' -> ("a@b", ["SIZE=1", "BODY=8BITMIME"]); None if no <>."""
    rest = rest.strip()
    if not rest.startswith("<"):
        return None
    end = rest.find(">")
    if end < 0:
        return None
    return rest[1:end], rest[end + 1:].split()


class Server:
    def __init__(self, directory, host, port, lmtp):
        self.dir = directory
        self.host, self.port, self.lmtp = host, port, lmtp
        self.loop = None
        self.stats = _new_stats()
        try:
            with open(os.path.join(directory, "stats.json")) as f:
                old = json.load(f)
            self.stats.update(old)           # a restart continues the counts
        except (FileNotFoundError, ValueError):
            pass
        self.stats["current"] = 0
        self.stats["in_transaction"] = 0
        self.open = {}                       # session number -> Session, while counted open
        self.script_text = None
        self.script = dict(DEFAULTS)
        self.script_txns = 0                 # transactions since the script was set
        self.script_drops = 0
        self.cmdlog = open(os.path.join(directory, "commands.log"), "a", encoding="ascii")

    # -- state files
    def save_stats(self):
        _write_atomic(os.path.join(self.dir, "stats.json"),
                      json.dumps(self.stats, sort_keys=True).encode())

    def log_command(self, session, line):
        self.cmdlog.write(json.dumps([session, line]) + "\n")
        self.cmdlog.flush()

    def load_script(self):
        try:
            with open(os.path.join(self.dir, "script.json")) as f:
                text = f.read()
        except FileNotFoundError:
            text = "{}"
        if text != self.script_text:
            self.script_text = text
            self.script = dict(DEFAULTS)
            self.script.update(json.loads(text))
            self.script_txns = 0
            self.script_drops = 0
        return self.script

    def write_message(self, meta, data):
        n = meta["transaction"]
        base = os.path.join(self.dir, "msg", "T%06d" % n)
        _write_atomic(base + ".eml", data)
        meta["eml"] = "T%06d.eml" % n
        _write_atomic(base + ".json", json.dumps(meta, sort_keys=True).encode())

    # -- counting
    def reap_gone(self):
        """Sessions whose client has already hung up stop counting now."""
        if not self.open:
            return
        p = select.poll()
        flags = select.POLLRDHUP | select.POLLHUP | select.POLLERR
        fds = {}
        for s in self.open.values():
            try:
                fd = s.sock.fileno()
            except OSError:
                continue
            if fd >= 0:
                p.register(fd, flags)
                fds[fd] = s
        for fd, ev in p.poll(0):
            if ev & flags and fd in fds:
                fds[fd].end(save=False)

    def begin_session(self, sess):
        self.reap_gone()
        st = self.stats
        st["sessions"] += 1
        sess.num = st["sessions"]
        st["current"] += 1
        st["max_concurrent"] = max(st["max_concurrent"], st["current"])
        self.open[sess.num] = sess
        self.save_stats()

    # -- main
    async def serve(self):
        self.loop = asyncio.get_running_loop()
        fam = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        lsock = socket.socket(fam, socket.SOCK_STREAM)
        lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        lsock.bind((self.host, self.port))
        lsock.listen(1024)
        lsock.setblocking(False)
        port = lsock.getsockname()[1]
        _write_atomic(os.path.join(self.dir, "ready"),
                      json.dumps({"port": port, "pid": os.getpid()}).encode())
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            self.loop.add_signal_handler(sig, stop.set)
        tasks = set()

        async def accept_loop():
            while True:
                conn, addr = await self.loop.sock_accept(lsock)
                conn.setblocking(False)
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                sess = Session(self, conn, addr[0])
                self.begin_session(sess)
                t = asyncio.ensure_future(sess.run())
                tasks.add(t)
                t.add_done_callback(tasks.discard)

        acceptor = asyncio.ensure_future(accept_loop())
        stopper = asyncio.ensure_future(stop.wait())
        done, _ = await asyncio.wait({acceptor, stopper}, return_when=asyncio.FIRST_COMPLETED)
        if acceptor in done:
            acceptor.result()                 # an accept error: show it
        acceptor.cancel()
        stopper.cancel()
        # the cancelled accept must let go of the socket before it closes
        # (else the loop may still poll a closed descriptor: EBADF)
        await asyncio.gather(acceptor, stopper, return_exceptions=True)
        lsock.close()
        for t in list(tasks):
            t.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=2)
        self.save_stats()
        self.cmdlog.close()


class Session:
    def __init__(self, server, sock, peer):
        self.srv = server
        self.sock = sock
        self.peer = peer
        self.num = 0
        self.buf = b""
        self.counted = True
        self.ehlo = None
        self.ehlo_verb = None
        self.sc = None
        self.reset_txn()
        self.xforward = {}

    def reset_txn(self):
        if getattr(self, "in_txn", False):
            self.srv.stats["in_transaction"] -= 1
        self.in_txn = False
        self.mail_from = None
        self.mail_options = []
        self.rcpts = []
        self.rcpt_options = {}

    def end(self, save=True):
        """Stop counting this session as open (idempotent)."""
        if not self.counted:
            return
        self.counted = False
        self.reset_txn()
        self.srv.stats["current"] -= 1
        self.srv.open.pop(self.num, None)
        if save:
            self.srv.save_stats()

    # -- I/O
    async def _recv(self):
        try:
            data = await self.srv.loop.sock_recv(self.sock, 65536)
        except (ConnectionError, OSError):
            data = b""
        if not data:
            raise PeerGone()
        self.buf += data

    async def read_line(self):
        """One command line, without its line end (CRLF, or a bare LF)."""
        while b"\n" not in self.buf:
            await self._recv()
        line, self.buf = self.buf.split(b"\n", 1)
        if line.endswith(b"\r"):
            line = line[:-1]
        return line.decode("utf-8", "surrogateescape")

    async def send_raw(self, data):
        try:
            await self.srv.loop.sock_sendall(self.sock, data)
        except (ConnectionError, OSError):
            raise PeerGone()

    async def reply(self, stage, text):
        """Send text (a str, or a list of them: LMTP's replies after the
        dot) after the script's delay; a "\\n" in a text splits lines."""
        delay = (self.sc.get("delay") or {}).get(stage)
        if delay:
            await asyncio.sleep(float(delay))
        if self.buf and stage not in ("greeting", "data"):
            # Bytes of the next command arrived before this reply was
            # sent: the client pipelined.  (Content after DATA is counted
            # by cmd_data: that is the one place it must not happen.)
            self.srv.stats["pipelined_commands"] += 1
            self.srv.save_stats()
        if self.sc.get("garbage_at") == stage:
            await self.send_raw(GARBAGE)
            return
        if isinstance(text, str):
            text = [text]
        await self.send_raw(b"".join(l.rstrip("\r").encode("utf-8", "surrogateescape") + b"\r\n"
                                     for t in text for l in t.split("\n")))

    def maybe_drop(self, stage):
        if self.sc.get("drop") != stage:
            return
        limit = self.sc.get("drop_first")
        if limit is not None and self.srv.script_drops >= int(limit):
            return
        self.srv.script_drops += 1
        self.srv.stats["drops"] += 1
        raise Dropped()

    # -- the session
    async def run(self):
        try:
            await self.converse()
        except (PeerGone, Dropped, asyncio.CancelledError):
            pass
        finally:
            self.end()
            try:
                self.sock.close()
            except OSError:
                pass

    def size_limit(self):
        for ext in self.sc.get("ehlo_extensions") or []:
            parts = ext.split()
            if parts and parts[0].upper() == "SIZE" and len(parts) > 1 and parts[1].isdigit():
                return int(parts[1]) or None
        return None

    def offers(self, keyword):
        return any(e.split()[0].upper() == keyword for e in self.sc.get("ehlo_extensions") or [] if e.split())

    async def converse(self):
        srv = self.srv
        sc = self.sc = srv.load_script()
        host = sc.get("hostname") or "sink.test"
        self.maybe_drop("greeting")
        greeting = sc.get("greeting") or "220 %s %s" % (host, "LMTP" if srv.lmtp else "ESMTP")
        refused = not greeting.startswith("2") and greeting != "garbage"
        if greeting == "garbage":
            d = (sc.get("delay") or {}).get("greeting")
            if d:
                await asyncio.sleep(float(d))
            await self.send_raw(b"hello\r\n")
        else:
            await self.reply("greeting", greeting)
        while True:
            line = await self.read_line()
            srv.log_command(self.num, line)
            verb, _, rest = line.partition(" ")
            verb = verb.upper()
            if verb == "QUIT":
                self.end()
                await self.reply("quit", "221 2.0.0 Bye")
                return
            if refused:
                await self.reply("mail" if verb == "MAIL" else "ehlo", "503 5.5.1 Error: no service")
                continue
            handler = getattr(self, "cmd_" + verb.lower(), None) if verb.isalpha() else None
            if handler is None:
                await self.reply("ehlo", "502 5.5.2 Error: command not recognized")
                continue
            await handler(rest)

    async def greet(self, verb, rest):
        self.maybe_drop("ehlo")
        self.ehlo = rest.strip()
        self.ehlo_verb = verb
        self.reset_txn()
        host = self.sc.get("hostname") or "sink.test"
        if verb == "HELO":
            await self.reply("ehlo", "250 %s" % host)
            return
        exts = list(self.sc.get("ehlo_extensions") or [])
        lines = [host] + exts
        text = "\n".join("250%s%s" % ("-" if i < len(lines) - 1 else " ", l) for i, l in enumerate(lines))
        await self.reply("ehlo", text)

    async def cmd_ehlo(self, rest):
        if self.srv.lmtp:
            await self.reply("ehlo", "500 5.5.1 Error: this is an LMTP server: use LHLO")
        elif self.sc.get("no_ehlo"):
            self.maybe_drop("ehlo")
            await self.reply("ehlo", "502 5.5.2 Error: command not recognized")
        else:
            await self.greet("EHLO", rest)

    async def cmd_helo(self, rest):
        if self.srv.lmtp:
            await self.reply("ehlo", "500 5.5.1 Error: this is an LMTP server: use LHLO")
        else:
            await self.greet("HELO", rest)

    async def cmd_lhlo(self, rest):
        if not self.srv.lmtp:
            await self.reply("ehlo", "500 5.5.1 Error: LHLO is for LMTP")
        else:
            await self.greet("LHLO", rest)

    async def cmd_xforward(self, rest):
        if not self.offers("XFORWARD"):
            await self.reply("xforward", "502 5.5.2 Error: command not recognized")
            return
        for item in rest.split():
            k, sep, v = item.partition("=")
            if not sep:
                await self.reply("xforward", "501 5.5.4 Syntax: XFORWARD attribute=value...")
                return
            self.xforward[k.upper()] = v
        await self.reply("xforward", "250 2.0.0 Ok")

    async def cmd_mail(self, rest):
        self.maybe_drop("mail")
        head, _, arg = rest.partition(":")
        parsed = _path_arg(arg) if head.strip().upper() == "FROM" else None
        if self.mail_from is not None:
            await self.reply("mail", "503 5.5.1 Error: nested MAIL command")
            return
        if parsed is None:
            await self.reply("mail", "501 5.5.4 Syntax: MAIL FROM:<address>")
            return
        sender, options = parsed
        limit = self.size_limit()
        for o in options:
            k, _, v = o.partition("=")
            if limit and k.upper() == "SIZE" and v.isdigit() and int(v) > limit:
                await self.reply("mail", "552 5.3.4 Message size exceeds fixed limit")
                return
        text = _pick(self.sc.get("mail"), sender, DEFAULTS["mail"])
        if text.startswith("2"):
            self.mail_from = sender
            self.mail_options = options
            self.in_txn = True
            st = self.srv.stats
            st["in_transaction"] += 1
            st["max_concurrent_transactions"] = max(st["max_concurrent_transactions"],
                                                    st["in_transaction"])
            self.srv.save_stats()
        await self.reply("mail", text)

    async def cmd_rcpt(self, rest):
        self.maybe_drop("rcpt")
        head, _, arg = rest.partition(":")
        parsed = _path_arg(arg) if head.strip().upper() == "TO" else None
        if self.mail_from is None:
            text = "503 5.5.1 Error: need MAIL command"
        elif parsed is None:
            text = "501 5.5.4 Syntax: RCPT TO:<address>"
        else:
            text = _pick(self.sc.get("rcpt"), parsed[0], DEFAULTS["rcpt"])
        code = text[:3]
        rr = self.srv.stats["rcpt_replies"]
        rr[code] = rr.get(code, 0) + 1
        if parsed is not None and self.mail_from is not None and text.startswith("2"):
            self.rcpts.append(parsed[0])
            self.rcpt_options[parsed[0]] = parsed[1]
        self.srv.save_stats()
        await self.reply("rcpt", text)

    async def cmd_rset(self, rest):
        self.reset_txn()
        self.xforward = {}
        self.srv.stats["rsets"] += 1
        self.srv.save_stats()
        await self.reply("rset", "250 2.0.0 Ok")

    async def cmd_noop(self, rest):
        await self.reply("ehlo", "250 2.0.0 Ok")

    async def cmd_data(self, rest):
        if self.mail_from is None:
            await self.reply("data", "503 5.5.1 Error: need RCPT command")
            return
        if not self.rcpts:
            await self.reply("data", "554 5.5.1 Error: no valid recipients")
            return
        text = self.sc.get("data") or DEFAULTS["data"]
        if not text.startswith("3"):
            await self.reply("data", text)
            return
        if self.buf:
            # Content before the 354: a client may pipeline up to DATA only.
            self.srv.stats["pipelined_commands"] += 1
        await self.reply("data", text)
        if self.sc.get("drop") == "data":
            if not self.buf:
                await self._recv()
            self.maybe_drop("data")
        content = await self.read_content()
        await self.end_of_data(content)

    async def read_content(self):
        """Content lines up to the lone dot: CRLF-terminated, dot-unstuffed."""
        out = []
        while True:
            while b"\r\n" not in self.buf:
                await self._recv()
            line, self.buf = self.buf.split(b"\r\n", 1)
            if line == b".":
                return b"".join(out)
            if line.startswith(b"."):
                line = line[1:]
            out.append(line + b"\r\n")

    async def end_of_data(self, content):
        srv, st = self.srv, self.srv.stats
        self.maybe_drop("data_end")
        st["transactions"] += 1
        n = st["transactions"]
        srv.script_txns += 1
        limit = self.size_limit()
        rcpts = list(self.rcpts)
        if srv.script_txns <= int(self.sc.get("fail_first") or 0):
            replies = [FAIL_FIRST_REPLY] * (len(rcpts) if srv.lmtp else 1)
        elif limit and len(content) > limit:
            replies = ["552 5.3.4 Message size exceeds fixed limit"] * (len(rcpts) if srv.lmtp else 1)
        elif srv.lmtp:
            default = self.sc.get("data_end") or DEFAULTS["data_end"]
            replies = [_fill(_pick(self.sc.get("lmtp_data_end"), r, default), n) for r in rcpts]
        else:
            replies = [_fill(self.sc.get("data_end") or DEFAULTS["data_end"], n)]
        for r in replies:
            code = r[:3]
            st["data_end_replies"][code] = st["data_end_replies"].get(code, 0) + 1
        if srv.lmtp:
            got = [r for r, text in zip(rcpts, replies) if text.startswith("2")]
        else:
            got = rcpts if replies[0].startswith("2") else []
        if got:
            st["accepted"] += 1
            meta = {"transaction": n, "session": self.num, "peer": self.peer, "ehlo": self.ehlo,
                    "ehlo_verb": self.ehlo_verb, "mail_from": self.mail_from,
                    "mail_options": self.mail_options, "rcpt_tos": got,
                    "all_rcpt_tos": rcpts, "rcpt_options": self.rcpt_options,
                    "xforward": self.xforward, "time": time.time(), "replies": replies,
                    "lmtp": srv.lmtp}
            srv.write_message(meta, content)
        self.reset_txn()
        self.xforward = {}
        srv.save_stats()
        await self.reply("data_end", replies)


def main(argv):
    import argparse
    ap = argparse.ArgumentParser(description="scriptable SMTP/LMTP sink (tests/proto/sink.py)")
    ap.add_argument("--dir", required=True)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--lmtp", action="store_true")
    a = ap.parse_args(argv)
    if not _loopback(a.host):
        print("sink: %s is not a loopback address" % a.host, file=sys.stderr)
        return 2
    srv = Server(a.dir, a.host, a.port, a.lmtp)
    try:
        asyncio.run(srv.serve())
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            print("sink: %s:%d: address in use" % (a.host, a.port), file=sys.stderr)
            return 1
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
