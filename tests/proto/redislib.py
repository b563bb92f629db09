"""A real redis-server (Debian's) for protocol tests: the shared state
store of several moat instances (state_store = redis://...).

Owns: one redis-server process per RedisServer, on a free 127.0.0.1
port, with no persistence, its log in its own directory; stopped by PID.
Must never: bind anything but 127.0.0.1, or keep running after stop().

    from redislib import RedisServer, redis_available
    r = RedisServer(tmpdir)          # tmpdir: a pathlib.Path or str
    r.start()                        # returns once it answers PING
    r.url                            # "redis://127.0.0.1:PORT/0"
    r.url_db(3)                      # "redis://127.0.0.1:PORT/3"
    r.cli("SET", "k", "v")           # redis-cli's output, stripped ("OK")
    r.cli("KEYS", "grey:*", db=3)    # another database
    r.pause() / r.resume()           # SIGSTOP / SIGCONT: a hung server
    r.stop(); r.start()              # down, then back on the same port
    r.stop()
"""

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
REDIS_CLI = shutil.which("redis-cli") or "/usr/bin/redis-cli"


def redis_available():
    """Both redis-server and redis-cli installed (scripts/deps.sh does it)."""
    return os.access(REDIS_SERVER, os.X_OK) and os.access(REDIS_CLI, os.X_OK)


def _free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    def __init__(self, tmpdir, port=None):
        self.dir = Path(tmpdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = port
        self.proc = None
        self.log = self.dir / "redis.log"

    @property
    def url(self):
        return self.url_db(0)

    def url_db(self, db):
        return "redis://127.0.0.1:%d/%d" % (self.port, db)

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def start(self, timeout=10):
        """Start (again, on the same port after a stop); return when it
        answers PING."""
        if self.proc is not None:
            raise RuntimeError("redis-server already running (pid %d)" % self.proc.pid)
        if self.port is None:
            self.port = _free_port()
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1",
                 "--save", "", "--appendonly", "no", "--daemonize", "no",
                 "--dir", str(self.dir)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                self.proc = None
                raise RuntimeError("redis-server exited at start:\n" + self.log_text()[-2000:])
            if self._ping():
                return self
            time.sleep(0.02)
        self.stop()
        raise RuntimeError("redis-server did not answer on port %d:\n%s"
                           % (self.port, self.log_text()[-2000:]))

    def _ping(self):
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                return s.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def cli(self, *args, db=0, check=True):
        """Run redis-cli against this server; its output, stripped."""
        r = subprocess.run([REDIS_CLI, "-h", "127.0.0.1", "-p", str(self.port), "-n", str(db)]
                           + [str(a) for a in args],
                           capture_output=True, text=True, timeout=10)
        if check and r.returncode != 0:
            raise RuntimeError("redis-cli %s: %s" % (" ".join(map(str, args)), r.stderr))
        return r.stdout.strip()

    def pause(self):
        if self.proc:
            os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self):
        if self.proc:
            os.kill(self.proc.pid, signal.SIGCONT)

    def stop(self):
        """SIGTERM by PID (a paused server is continued first); the exit
        status, or None when it was not running."""
        if self.proc is None:
            return None
        p, self.proc = self.proc, None
        if p.poll() is None:
            os.kill(p.pid, signal.SIGCONT)
            p.terminate()
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        return p.returncode

    def log_text(self):
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""
