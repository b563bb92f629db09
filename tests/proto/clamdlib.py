"""A real clamd (Debian's clamav-daemon) for protocol tests of
content_scanner, with a signature database the tests make themselves.

Owns: one private clamd per Clamd object, in Foreground mode, with its
configuration, socket, PID file, log, temporary directory and database in
one directory; stopped by PID.  The database is a single .hdb line, the
MD5 and size of the EICAR test file named "Moat-Test-EICAR" (clamd then
reports "Moat-Test-EICAR.UNOFFICIAL FOUND"); the real virus database is
never used (it is large and slow to load; this one loads in about a
second).  Must never: listen on anything but 127.0.0.1 and its own unix
socket, touch the system's clamav-daemon service or its files, or keep
running after stop().

    from clamdlib import Clamd, clamd_available, EICAR   # the clamd fixture is in conftest.py
    c = Clamd(tmpdir)
    c.start()            # returns once both sockets answer PING
    c.unix_spec          # "clamd:unix:/.../clamd.sock" (content_scanner = ...)
    c.inet_spec          # "clamd:inet:127.0.0.1:PORT"
    c.scan(b"...")       # clamd's own verdict on bytes ("stream: OK", ...)
    c.pause(); c.resume()   # SIGSTOP / SIGCONT: a clamd that does not answer
    c.stop(); c.start()  # down, then up again on the same socket and port
    c.stop()

The `clamd` fixture (session scope: clamd starts once, ~1 s) yields a
running Clamd; a test that stops or pauses it must bring it back
(`with clamd.stopped():` / `with clamd.paused():` do).
"""

import contextlib
import hashlib
import os
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import time

import pytest

CLAMD = "/usr/sbin/clamd"

# The EICAR anti-virus test file (eicar.org): 68 bytes, no line end.  The
# test database matches it by MD5 and size, so it must be scanned exactly
# as it is (e.g. as a base64 MIME attachment, which clamd decodes).
EICAR = b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
SIGNATURE = "Moat-Test-EICAR"
VIRUS_NAME = SIGNATURE + ".UNOFFICIAL"


def clamd_available():
    """clamav-daemon installed (scripts/deps.sh does it)."""
    return os.access(CLAMD, os.X_OK)


def _free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def hdb_line(data, name=SIGNATURE):
    """A ClamAV .hdb signature for exactly these bytes: md5:size:name."""
    return "%s:%d:%s\n" % (hashlib.md5(data).hexdigest(), len(data), name)


class Clamd:
    def __init__(self, tmpdir=None, stream_max_length=None, extra_conf=()):
        # The unix socket path must fit in sun_path (108 bytes): a short
        # directory of our own under /tmp unless the caller's is short.
        if tmpdir is None or len(str(tmpdir)) > 70:
            self.dir = tempfile.mkdtemp(prefix="moat-clamd-")
            self._own_dir = True
        else:
            self.dir = str(tmpdir)
            os.makedirs(self.dir, exist_ok=True)
            self._own_dir = False
        self.port = None
        self.proc = None
        self.socket = os.path.join(self.dir, "clamd.sock")
        self.conf = os.path.join(self.dir, "clamd.conf")
        self.log = os.path.join(self.dir, "clamd.log")
        self.pidfile = os.path.join(self.dir, "clamd.pid")
        self.db = os.path.join(self.dir, "db")
        self.tmp = os.path.join(self.dir, "tmp")
        self.stream_max_length = stream_max_length
        self.extra_conf = list(extra_conf)

    @property
    def unix_spec(self):
        return "clamd:unix:" + self.socket

    @property
    def inet_spec(self):
        return "clamd:inet:127.0.0.1:%d" % self.port

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def _write_files(self):
        os.makedirs(self.db, exist_ok=True)
        os.makedirs(self.tmp, exist_ok=True)
        with open(os.path.join(self.db, "moat-test.hdb"), "w") as f:
            f.write(hdb_line(EICAR))
        lines = [
            "Foreground yes",
            "LocalSocket " + self.socket,
            "LocalSocketMode 666",
            "FixStaleSocket yes",
            "TCPSocket %d" % self.port,
            "TCPAddr 127.0.0.1",
            "DatabaseDirectory " + self.db,
            "PidFile " + self.pidfile,
            "LogFile " + self.log,
            "LogTime yes",
            "TemporaryDirectory " + self.tmp,
            # the test database is ours: no signature-age warnings, no
            # self-checks that reload it behind the tests' back
            "SelfCheck 0",
            "Bytecode no",
        ]
        if os.geteuid() == 0:
            lines.append("User root")   # or clamd drops to clamav, which cannot read a root temp dir
        if self.stream_max_length is not None:
            lines.append("StreamMaxLength %s" % self.stream_max_length)
        lines += self.extra_conf
        with open(self.conf, "w") as f:
            f.write("\n".join(lines) + "\n")

    def start(self, timeout=30):
        """Start (again, on the same socket and port after a stop); return
        once both sockets answer PING."""
        if self.proc is not None:
            raise RuntimeError("clamd already running (pid %d)" % self.proc.pid)
        if self.port is None:
            self.port = _free_port()
        self._write_files()
        with open(self.log + ".out", "ab") as out:
            self.proc = subprocess.Popen([CLAMD, "--config-file=" + self.conf, "--foreground"],
                                         stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                rc, self.proc = self.proc.returncode, None
                raise RuntimeError("clamd exited at start (%s):\n%s" % (rc, self.log_text()[-3000:]))
            if self.ping() and self.ping(unix=False):
                return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError("clamd did not answer:\n" + self.log_text()[-3000:])

    def _connect(self, unix=True, timeout=5):
        if unix:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(timeout)
            s.connect(self.socket)
        else:
            s = socket.create_connection(("127.0.0.1", self.port), timeout=timeout)
        return s

    def _command(self, payload, unix=True, timeout=10):
        with self._connect(unix, timeout) as s:
            s.sendall(payload)
            data = b""
            while not data.endswith(b"\0"):
                got = s.recv(4096)
                if not got:
                    break
                data += got
        return data.rstrip(b"\0").decode("ascii", "replace")

    def ping(self, unix=True):
        try:
            return self._command(b"zPING\0", unix, timeout=1) == "PONG"
        except OSError:
            return False

    def scan(self, data, unix=True):
        """clamd's verdict on data through INSTREAM ("stream: OK", ...)."""
        body = b"".join(struct.pack(">I", len(data[i:i + 65536])) + data[i:i + 65536]
                        for i in range(0, len(data), 65536))
        return self._command(b"zINSTREAM\0" + body + struct.pack(">I", 0), unix)

    def pause(self):
        if self.proc:
            os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self):
        if self.proc:
            os.kill(self.proc.pid, signal.SIGCONT)

    @contextlib.contextmanager
    def paused(self):
        self.pause()
        try:
            yield self
        finally:
            self.resume()

    @contextlib.contextmanager
    def stopped(self):
        self.stop()
        try:
            yield self
        finally:
            self.start()

    def stop(self, timeout=15):
        """SIGTERM by PID (a paused clamd is continued first); the exit
        status, or None when it was not running."""
        if self.proc is None:
            return None
        p, self.proc = self.proc, None
        if p.poll() is None:
            os.kill(p.pid, signal.SIGCONT)
            p.terminate()
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(p.pid, signal.SIGKILL)
                p.wait(5)
        # clamd leaves its socket behind when killed; FixStaleSocket copes,
        # and a test that wants "not there" gets "not there".
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.socket)
        return p.returncode

    def remove(self):
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def log_text(self):
        text = ""
        for path in (self.log, self.log + ".out"):
            with contextlib.suppress(OSError), open(path, errors="replace") as f:
                text += f.read()
        return text

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.remove()


@pytest.fixture(scope="session")
def clamd():
    """One private clamd for the whole test run (conftest.py makes it
    every module's fixture).  Skips when clamav-daemon is missing."""
    if not clamd_available():
        pytest.skip("clamd not installed (scripts/deps.sh installs clamav-daemon)")
    c = Clamd()
    c.start()
    try:
        yield c
    finally:
        c.remove()
