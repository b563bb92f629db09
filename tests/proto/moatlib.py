"""Helpers for moat's protocol tests: run a daemon, talk raw SMTP to it.

Owns: the Moat process wrapper (config files, start/stop/reload, logs,
Maildir and queue inspection) and a deliberately dumb SMTP client that
lets a test send any bytes at any moment and read replies exactly as the
server wrote them.  Never uses smtplib for the raw tests: smtplib hides
protocol errors we want to see (bare LF replies, merged lines, early close).

Every network address used here is loopback.  Processes are stopped by PID.
"""

import os
import re
import signal
import socket
import subprocess
import time

HOSTNAME = "mx.example.test"

# Anything that means the daemon (or a sanitizer inside it) went wrong.
SANITIZER_MARKERS = (
    "ERROR: AddressSanitizer",
    "runtime error:",
    "panic:",
    "LeakSanitizer",
)

# "localhost" when the PTR lookup for 127.0.0.1 works, "unknown" when not.
LOCAL_CLIENT_RE = r"(?:localhost|unknown)\[127\.0\.0\.1\]"

LOG_LINE_RE = re.compile(
    r"^(?P<mon>[A-Z][a-z]{2}) (?P<day>[ \d]\d) (?P<time>\d\d:\d\d:\d\d) "
    r"(?P<host>\S+) (?P<prog>[\w.-]+)/(?P<service>[\w.-]+)\[(?P<pid>\d+)\]: (?P<text>.*)$"
)

QUEUED_RE = re.compile(r"^Ok: queued as ([0-9A-F]+)$")


def moat_bin():
    path = os.environ.get("MOAT_BIN")
    if not path:
        here = os.path.dirname(os.path.abspath(__file__))
        path = os.path.join(here, "..", "..", "build", "asan", "moat")
    return os.path.abspath(path)


def free_port(host="127.0.0.1"):
    """A port that was free a moment ago (bind to 0, read, close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout=10.0, interval=0.05, what="condition"):
    """Poll predicate() until it returns something truthy; return that."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("timed out after %.1fs waiting for %s" % (timeout, what))
        time.sleep(interval)


def dot_stuff(text):
    """Text with CRLF lines -> DATA payload including the terminator."""
    if isinstance(text, str):
        text = text.encode()
    lines = text.split(b"\r\n")
    if lines and lines[-1] == b"":
        lines.pop()
    out = b"".join((b"." + l if l.startswith(b".") else l) + b"\r\n" for l in lines)
    return out + b".\r\n"


def simple_message(subject="test", body="hello world", extra_headers=(), msgid=None):
    if msgid is None:
        msgid = "%s.%d@b.test" % (re.sub(r"\W", "", subject) or "m", time.monotonic_ns())
    hdrs = ["From: <a@b.test>", "To: <u@example.test>", "Subject: %s" % subject,
            "Message-ID: <%s>" % msgid]
    hdrs.extend(extra_headers)
    return "\r\n".join(hdrs) + "\r\n\r\n" + body + "\r\n"


# ---------------------------------------------------------------- client

class ConnectionClosed(Exception):
    pass


class ProtocolError(AssertionError):
    pass


class Reply:
    """One (possibly multi-line) SMTP reply."""

    def __init__(self, code, lines, raw):
        self.code = code
        self.lines = lines          # text after "NNN-" / "NNN " on each line
        self.raw = raw              # bytes exactly as received
        last = lines[-1] if lines else ""
        m = re.match(r"^([245]\.\d{1,3}\.\d{1,3})(?: (.*))?$", last)
        if m:
            self.enh = m.group(1)
            self.msg = m.group(2) or ""
        else:
            self.enh = None
            self.msg = last
        self.text = last

    def __repr__(self):
        return "Reply(%r)" % self.raw.decode("utf-8", "replace")

    def __str__(self):
        return self.raw.decode("utf-8", "replace").rstrip("\r\n")


class Client:
    """A raw SMTP client.  Bytes go out exactly as given."""

    def __init__(self, port, host="127.0.0.1", source=None, timeout=10.0,
                 greeting=True, family=socket.AF_INET):
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.settimeout(timeout)
        self.timeout = timeout
        if source:
            self.sock.bind((source, 0))
        self.sock.connect((host, port))
        self.buf = b""
        self.closed = False
        self.greeting = self.reply() if greeting else None

    # -- output
    def send(self, data):
        if isinstance(data, str):
            data = data.encode()
        self.sock.sendall(data)

    # -- input
    def _fill(self, timeout=None):
        self.sock.settimeout(self.timeout if timeout is None else timeout)
        try:
            chunk = self.sock.recv(65536)
        except (ConnectionResetError, BrokenPipeError):
            chunk = b""
        if not chunk:
            self.closed = True
            raise ConnectionClosed("server closed the connection")
        self.buf += chunk

    def _line(self, timeout=None):
        while b"\n" not in self.buf:
            self._fill(timeout)
        line, self.buf = self.buf.split(b"\n", 1)
        line += b"\n"
        if not line.endswith(b"\r\n"):
            raise ProtocolError("reply line not terminated by CRLF: %r" % line)
        return line

    def reply(self, timeout=None):
        raw = b""
        lines = []
        code = None
        while True:
            line = self._line(timeout)
            raw += line
            m = re.match(rb"^(\d{3})([ -]?)(.*)\r\n$", line)
            if not m:
                raise ProtocolError("malformed reply line: %r" % line)
            c = int(m.group(1))
            if code is None:
                code = c
            elif c != code:
                raise ProtocolError("reply code changed inside a multi-line reply: %r" % raw)
            lines.append(m.group(3).decode("utf-8", "surrogateescape"))
            if m.group(2) != b"-":
                return Reply(code, lines, raw)

    def cmd(self, line, timeout=None):
        if isinstance(line, str):
            line = line.encode()
        self.send(line + b"\r\n")
        return self.reply(timeout)

    def expect(self, line, code, enh=None, msg=None):
        r = self.cmd(line)
        check(r, code, enh, msg, what=line)
        return r

    def replies_until_close(self, timeout=None):
        """Every reply until the server closes; fails on a stray partial line."""
        out = []
        while True:
            try:
                out.append(self.reply(timeout))
            except ConnectionClosed:
                if self.buf:
                    raise ProtocolError("partial reply before close: %r" % self.buf)
                return out

    def wait_closed(self, timeout=5.0):
        """True when the server closes the connection (EOF or reset) in time;
        anything it sends meanwhile is kept in self.buf."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                self._fill(max(0.05, deadline - time.monotonic()))
            except ConnectionClosed:
                return True
            except socket.timeout:
                return False
        return False

    def ehlo(self, name="client.test"):
        r = self.cmd("EHLO " + name)
        check(r, 250, what="EHLO")
        return r

    def mail(self, sender="a@b.test", params=""):
        return self.expect("MAIL FROM:<%s>%s" % (sender, (" " + params) if params else ""),
                           250, "2.1.0", "Ok")

    def rcpt(self, rcpt):
        return self.expect("RCPT TO:<%s>" % rcpt, 250, "2.1.5", "Ok")

    def data(self, message):
        """DATA + dot-stuffed message; returns the queue ID."""
        self.expect("DATA", 354, None, "End data with <CR><LF>.<CR><LF>")
        self.send(dot_stuff(message))
        r = self.reply()
        return queued_id(r)

    def sendmail(self, sender, rcpts, message):
        self.mail(sender)
        for r in rcpts:
            self.rcpt(r)
        return self.data(message)

    def quit(self):
        r = self.cmd("QUIT")
        check(r, 221, "2.0.0", "Bye", what="QUIT")
        assert self.wait_closed(5), "server did not close after QUIT"
        self.close()

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def check(r, code, enh=None, msg=None, what=""):
    """Assert a reply's code, enhanced code and (exact) text."""
    where = (" (after %s)" % (what.decode("utf-8", "replace") if isinstance(what, bytes) else what)) if what else ""
    assert r.code == code, "expected %d%s, got %s" % (code, where, r)
    if enh is not None:
        assert r.enh == enh, "expected enhanced code %s%s, got %s" % (enh, where, r)
    if msg is not None:
        assert r.msg == msg, "expected text %r%s, got %s" % (msg, where, r)


def queued_id(r):
    check(r, 250, "2.0.0", what="end of data")
    m = QUEUED_RE.match(r.msg)
    assert m, "not a 'queued as' reply: %s" % r
    return m.group(1)


# ---------------------------------------------------------------- daemon

# The test DNS server every Moat asks (conftest.py's session fixture sets
# it): sessions look up their client's names before the greeting, and no
# test may depend on the machine's resolver.
DEFAULT_DNS_FORWARDERS = None


class Moat:
    """One moat daemon in its own directory, on its own port."""

    def __init__(self, base_dir, main=None, master=None, smtpd_opts=None, name="moat",
                 files=None, build_maps=()):
        """files: {relative path: content} written into the daemon's
        directory with its configuration (e.g. {"transport": "domain.test
        relay:[127.0.0.1]:1767\n"}, referenced as hash:DIR/transport);
        build_maps: which of them `moat map build` compiles before every
        start and reload."""
        self.dir = str(base_dir)
        os.makedirs(self.dir, exist_ok=True)
        self.port = free_port()
        self.name = name
        self.main = {
            "myhostname": HOSTNAME,
            "mydestination": "localhost, example.test",
            "queue_directory": os.path.join(self.dir, "queue"),
            "data_directory": os.path.join(self.dir, "data"),
            "mail_spool_directory": os.path.join(self.dir, "mail") + "/",
            "maillog_file": os.path.join(self.dir, "maillog"),
            "smtpd_error_sleep_time": "0",
        }
        if DEFAULT_DNS_FORWARDERS:
            self.main["dns_forwarders"] = DEFAULT_DNS_FORWARDERS
            self.main["dns_timeout"] = "5s"
        self.main.update(main or {})
        self.main_extra_lines = []      # raw lines appended verbatim (bad-config tests)
        self.smtpd_opts = dict(smtpd_opts or {})
        self.master_extra = list(master or [])
        self.files = dict(files or {})
        self.build_maps = list(build_maps)
        for name in self.build_maps:
            if name not in self.files:
                raise ValueError("build_maps: %r is not one of files" % name)
        self.proc = None
        self.stderr_path = os.path.join(self.dir, "stderr.log")
        self.stderr_file = None
        self.returncode = None
        self.checked = {}               # path -> offset already scanned

    # -- configuration
    def alloc_port(self):
        return free_port()

    def write_config(self):
        with open(os.path.join(self.dir, "main.cf"), "w") as f:
            f.write("# written by tests/proto/moatlib.py\n")
            for k, v in self.main.items():
                f.write("%s = %s\n" % (k, v))
            for line in self.main_extra_lines:
                f.write(line + "\n")
        with open(os.path.join(self.dir, "master.cf"), "w") as f:
            f.write("# service type private unpriv chroot wakeup maxproc command\n")
            f.write("127.0.0.1:%d inet n - n - - smtpd\n" % self.port)
            for k, v in self.smtpd_opts.items():
                f.write("  -o %s=%s\n" % (k, v))
            for line in self.master_extra:
                f.write(line + "\n")

        self.write_files()

    def path(self, name):
        """A file's path in the daemon's directory (e.g. for hash:PATH)."""
        return os.path.join(self.dir, name)

    def write_files(self):
        for name, content in self.files.items():
            p = self.path(name)
            os.makedirs(os.path.dirname(p), exist_ok=True)
            with open(p, "wb") as f:
                f.write(content.encode() if isinstance(content, str) else content)

    def set_file(self, name, content, build=None):
        """Replace (or add) one file now; build=True also compiles it, and
        from now on before every start and reload."""
        self.files[name] = content
        if build and name not in self.build_maps:
            self.build_maps.append(name)
        self.write_files()
        if name in self.build_maps:
            self.map_build(name)

    def map_build(self, *names):
        """`moat map build` for names (default: build_maps); fails the
        test with moat's message when a table does not compile."""
        names = names or tuple(self.build_maps)
        if not names:
            return
        r = subprocess.run([moat_bin(), "map", "build"] + [self.path(n) for n in names],
                           capture_output=True, text=True, timeout=60, env=self._env())
        if r.returncode != 0:
            raise AssertionError("moat map build %s failed (%d):\n%s%s"
                                 % (" ".join(names), r.returncode, r.stdout, r.stderr))

    def set_main(self, **kw):
        self.main.update({k: str(v) for k, v in kw.items()})
        self.write_config()

    # -- process control
    def start(self, wait=True, timeout=20.0):
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.write_config()
        self.map_build()
        self.stderr_file = open(self.stderr_path, "ab")
        env = self._env()
        self.proc = subprocess.Popen(
            [moat_bin(), "serve", "-c", self.dir],
            stdin=subprocess.DEVNULL, stdout=self.stderr_file, stderr=self.stderr_file,
            cwd=self.dir, env=env)
        self.returncode = None
        if wait:
            self.wait_listening(timeout)
        return self

    def wait_listening(self, timeout=20.0, port=None):
        port = port or self.port
        deadline = time.monotonic() + timeout
        while True:
            rc = self.proc.poll()
            if rc is not None:
                self.returncode = rc
                raise AssertionError("moat exited with %d during start-up:\n%s" % (rc, self.stderr()))
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError("moat did not listen on %d within %.0fs:\n%s"
                                     % (port, timeout, self.stderr()))
            time.sleep(0.05)

    @staticmethod
    def _env():
        env = dict(os.environ)
        env.setdefault("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0")
        env.setdefault("UBSAN_OPTIONS", "print_stacktrace=1")
        return env

    def run_cli(self, *args, timeout=60, input=None, check=False):
        """`moat ARGS -c DIR` (e.g. run_cli("queue", "list")): the
        CompletedProcess, text mode, stdout and stderr captured.  A
        sanitizer report in its stderr fails the test."""
        r = subprocess.run([moat_bin()] + [str(a) for a in args] + ["-c", self.dir],
                           capture_output=True, text=True, timeout=timeout, input=input,
                           env=self._env(), cwd=self.dir)
        for marker in SANITIZER_MARKERS:
            if marker in r.stderr:
                raise AssertionError("moat %s: %s:\n%s" % (" ".join(map(str, args)), marker, r.stderr))
        if check and r.returncode != 0:
            raise AssertionError("moat %s exited with %d:\n%s%s"
                                 % (" ".join(map(str, args)), r.returncode, r.stdout, r.stderr))
        return r

    @property
    def pid(self):
        return self.proc.pid

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig):
        assert self.running(), "moat is not running"
        os.kill(self.proc.pid, sig)

    def reload(self):
        self.write_config()
        self.map_build()
        self.signal(signal.SIGHUP)

    def stop(self, timeout=10.0):
        """SIGTERM, wait, SIGKILL if needed.  Returns the exit status, or
        None when the daemon was not running any more."""
        if self.proc is None:
            return None
        if self.proc.poll() is not None:
            if self.returncode is None:
                self.returncode = self.proc.returncode
            self._close_stderr()
            return None
        try:
            os.kill(self.proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
            self.returncode = "killed: still running %.0fs after SIGTERM" % timeout
            self._close_stderr()
            return self.returncode
        self.returncode = self.proc.returncode
        self._close_stderr()
        return self.returncode

    def wait_exit(self, timeout=10.0):
        """Wait for an exit the test caused (signal); returns the status."""
        self.proc.wait(timeout)
        self.returncode = self.proc.returncode
        self._close_stderr()
        return self.returncode

    def kill9(self):
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
        self.returncode = self.proc.returncode
        self._close_stderr()

    def restart(self):
        self.stop()
        self.start()

    def _close_stderr(self):
        if self.stderr_file:
            self.stderr_file.close()
            self.stderr_file = None

    # -- logs
    def _read(self, path):
        try:
            with open(path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def stderr(self):
        return self._read(self.stderr_path)

    def log(self):
        return self._read(self.main["maillog_file"]) if self.main.get("maillog_file") else ""

    def log_lines(self):
        return self.log().splitlines()

    def wait_log(self, pattern, timeout=10.0, count=1):
        """Wait until pattern (regex, MULTILINE) matches count times; return the matches."""
        rx = re.compile(pattern, re.M)

        def found():
            ms = list(rx.finditer(self.log()))
            return ms if len(ms) >= count else None
        try:
            return wait_for(found, timeout, what="log /%s/" % pattern)
        except AssertionError:
            raise AssertionError("log never matched /%s/ (x%d); log:\n%s"
                                 % (pattern, count, self.log()[-6000:]))

    def problems(self):
        """New sanitizer/panic reports since the last call, plus an unexpected exit."""
        found = []
        for path in (self.stderr_path, self.main.get("maillog_file")):
            if not path:
                continue
            text = self._read(path)
            start = self.checked.get(path, 0)
            new = text[start:]
            self.checked[path] = len(text)
            for marker in SANITIZER_MARKERS:
                if marker in new:
                    i = new.index(marker)
                    found.append("%s: %s:\n%s" % (os.path.basename(path), marker,
                                                  new[max(0, i - 500):i + 3000]))
                    break
        return found

    # -- mail and queue
    def maildir(self, user):
        return os.path.join(self.dir, "mail", user, "new")

    def mails(self, user):
        """Contents of every delivered file of user, oldest name first."""
        d = self.maildir(user)
        try:
            names = sorted(os.listdir(d))
        except FileNotFoundError:
            return []
        out = []
        for n in names:
            with open(os.path.join(d, n), "rb") as f:
                out.append(f.read())
        return out

    def wait_mails(self, user, n=1, timeout=10.0):
        def enough():
            m = self.mails(user)
            return m if len(m) >= n else None
        try:
            return wait_for(enough, timeout, what="%d mail(s) for %s" % (n, user))
        except AssertionError:
            raise AssertionError("expected %d mail(s) for %s, have %d; log tail:\n%s"
                                 % (n, user, len(self.mails(user)), self.log()[-4000:]))

    def all_mailboxes(self):
        root = os.path.join(self.dir, "mail")
        try:
            return sorted(os.listdir(root))
        except FileNotFoundError:
            return []

    QUEUES = ("incoming", "active", "deferred", "hold", "corrupt")

    def queue_files(self, queue):
        """IDs (file names) in queue_directory/QUEUE/, sorted (about arrival
        order); also works for the logs "defer" and "bounce"."""
        d = os.path.join(self.main["queue_directory"], queue)
        try:
            return sorted(n for n in os.listdir(d) if not n.startswith("."))
        except FileNotFoundError:
            return []

    def queue_path(self, queue, qid):
        return os.path.join(self.main["queue_directory"], queue, qid)

    def queue_snapshot(self):
        """{queue: [IDs]} of every queue that holds something."""
        out = {}
        for q in self.QUEUES:
            ids = self.queue_files(q)
            if ids:
                out[q] = ids
        return out

    def wait_queue_empty(self, timeout=10.0):
        """Until incoming/, active/ and deferred/ are empty (hold/ and
        corrupt/ may keep files)."""
        busy = ("incoming", "active", "deferred")
        try:
            wait_for(lambda: not any(self.queue_files(q) for q in busy), timeout,
                     what="empty queue")
        except AssertionError:
            raise AssertionError("queue not empty after %.0fs: %s; log tail:\n%s"
                                 % (timeout, self.queue_snapshot(), self.log()[-3000:]))

    # -- clients
    def connect(self, **kw):
        return Client(self.port, **kw)


def split_headers(mail):
    """(header block, body) of a delivered file (LF line endings)."""
    head, sep, body = mail.partition(b"\n\n")
    assert sep, "no header/body separator in %r" % mail[:500]
    return head, body


def header_fields(head):
    """Unfolded header fields, in order, as (name, value) pairs."""
    fields = []
    for line in head.split(b"\n"):
        if line[:1] in (b" ", b"\t") and fields:
            name, value = fields[-1]
            fields[-1] = (name, value + b"\n" + line)
        else:
            name, _, value = line.partition(b":")
            fields.append((name.decode(), value.lstrip(b" ")))
    return fields
