"""A real Dovecot (Debian's dovecot-core) as the SASL server for protocol
tests of smtpd_sasl_type = dovecot.

Owns: one private Dovecot master per Dovecot object, with no mail
protocols, only its auth service: a passwd-file passdb and userdb with the
test's users (SHA512-CRYPT hashes), the auth client socket in its own
directory (mode 0666) and, optionally, an auth client listener on a free
127.0.0.1 port.  Everything (configuration, base_dir, state_dir, log)
lives in one directory under /tmp that Dovecot's unprivileged users can
traverse; remove() (or leaving a with-block) deletes it.  Stopped by PID:
the master's (also the one in base_dir/master.pid), then the children it
leaves behind (its auth process outlives it while clients such as a moat
under test are connected).  The system's Dovecot service is never touched.
Must never: listen on anything but 127.0.0.1, or keep running after stop().

    from dovecotlib import Dovecot, dovecot_available
    d = Dovecot(users={"alice": "secret"}, inet=True)
    d.start()            # returns once the auth socket answers a handshake
    d.socket             # the auth client socket: smtpd_sasl_path = d.socket
    d.inet_path          # "inet:127.0.0.1:PORT" (inet=True)
    d.mechanisms()       # ["PLAIN", "LOGIN"]: what a handshake announces
    d.log_text()         # Dovecot's log (auth_verbose: failures are logged)
    d.stop(); d.start()  # down, then back on the same socket and port
    d.stop()

Notes for tests built on it:
  - auth_failure_delay is 0 and the auth penalty (anvil-auth-penalty) is
    off, so failed logins are answered at once, whatever rip= says.
  - auth_mechanisms default to "plain login"; pass mechanisms="..." for
    others (Dovecot announces e.g. CRAM-MD5 only if the passdb can give
    it plaintext; the hashes here cannot).
  - extra_conf: more dovecot.conf lines (e.g. "disable_plaintext_auth = yes").
  - debug=True: auth_debug, so the log shows each request line as Dovecot
    received it ("client in: AUTH\t1\tPLAIN\tservice=smtp..."; Dovecot
    hides resp=).
  - Dovecot lowercases user names (auth_username_format = %Lu).
"""

import os
import pwd
import grp
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import warnings

DOVECOT = "/usr/sbin/dovecot"


def dovecot_available():
    """dovecot-core installed (scripts/deps.sh does it)."""
    return os.access(DOVECOT, os.X_OK)


def _free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sha512_crypt(password):
    """A SHA512-CRYPT hash ("$6$..."); Python's crypt module (deprecated
    in 3.11, still present), else `doveadm pw`."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            import crypt  # noqa: PLC0415
        return crypt.crypt(password, crypt.mksalt(crypt.METHOD_SHA512))
    except ImportError:
        out = subprocess.run(["doveadm", "pw", "-s", "SHA512-CRYPT", "-p", password],
                             capture_output=True, text=True, check=True, timeout=30).stdout.strip()
        return out.split("}", 1)[1]


def _identity():
    """(internal user, internal group, login user): Debian's dovecot and
    dovenull as root; the caller's own user otherwise."""
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("dovecot")
            pwd.getpwnam("dovenull")
            return "dovecot", grp.getgrgid(pwd.getpwnam("dovecot").pw_gid).gr_name, "dovenull"
        except KeyError:
            pass
    me = pwd.getpwuid(os.geteuid())
    return me.pw_name, grp.getgrgid(me.pw_gid).gr_name, me.pw_name


class Dovecot:
    def __init__(self, users=None, inet=False, mechanisms="plain login", extra_conf="", debug=False):
        self.debug = debug
        self.users = dict(users if users is not None else {"alice": "secret"})
        self.mechs = mechanisms
        self.extra_conf = extra_conf
        self.dir = tempfile.mkdtemp(prefix="moat-dovecot-", dir="/tmp")
        os.chmod(self.dir, 0o755)   # dovecot's own users must reach the files
        self.socket = os.path.join(self.dir, "auth-client")
        self.inet_port = _free_port() if inet else None
        self.conf = os.path.join(self.dir, "dovecot.conf")
        self.log = os.path.join(self.dir, "dovecot.log")
        self.passwd = os.path.join(self.dir, "passwd")
        self.proc = None
        self._log_kept = ""
        self._removed = False

    @property
    def inet_path(self):
        return "inet:127.0.0.1:%d" % self.inet_port if self.inet_port else None

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    # -- configuration
    def set_users(self, users):
        """Replace the users (Dovecot rereads passwd-file when it changes)."""
        self.users = dict(users)
        self._write_passwd()

    def _write_passwd(self):
        tmp = self.passwd + ".tmp"
        with open(tmp, "w") as f:
            for name, password in self.users.items():
                # user:password:uid:gid:gecos:home:shell (uid/gid only matter
                # to mail processes, which these tests never start)
                f.write("%s:{SHA512-CRYPT}%s:65534:65534::/nonexistent::\n" % (name, sha512_crypt(password)))
        os.chmod(tmp, 0o644)
        os.replace(tmp, self.passwd)

    def _write_conf(self):
        internal, group, login = _identity()
        inet = ""
        if self.inet_port:
            inet = ("  inet_listener auth-inet {\n"
                    "    address = 127.0.0.1\n"
                    "    port = %d\n"
                    "  }\n" % self.inet_port)
        text = (
            "# written by tests/proto/dovecotlib.py: a private auth server\n"
            "protocols =\n"
            "listen = 127.0.0.1\n"
            "base_dir = {d}/run\n"
            "state_dir = {d}/state\n"
            "instance_name = moat-test-{pid}-{tag}\n"
            "log_path = {d}/dovecot.log\n"
            "info_log_path = {d}/dovecot.log\n"
            "default_internal_user = {internal}\n"
            "default_internal_group = {group}\n"
            "default_login_user = {login}\n"
            "ssl = no\n"
            "auth_mechanisms = {mechs}\n"
            "auth_failure_delay = 0\n"
            "auth_verbose = yes\n"
            "auth_debug = {debug}\n"
            "passdb {{\n"
            "  driver = passwd-file\n"
            "  args = {d}/passwd\n"
            "}}\n"
            "userdb {{\n"
            "  driver = passwd-file\n"
            "  args = {d}/passwd\n"
            "}}\n"
            "service auth {{\n"
            "  unix_listener {sock} {{\n"
            "    mode = 0666\n"
            "  }}\n"
            "{inet}"
            "}}\n"
            "# no penalty delays for repeated failures from one address\n"
            "service anvil {{\n"
            "  unix_listener anvil-auth-penalty {{\n"
            "    mode = 0\n"
            "  }}\n"
            "}}\n"
            "{extra}\n"
        ).format(d=self.dir, pid=os.getpid(), tag=os.path.basename(self.dir), internal=internal,
                 group=group, login=login, mechs=self.mechs, sock=self.socket, inet=inet,
                 extra=self.extra_conf, debug="yes" if self.debug else "no")
        with open(self.conf, "w") as f:
            f.write(text)
        os.chmod(self.conf, 0o644)

    # -- process control
    def start(self, timeout=10.0):
        """Start (again); return once the auth socket answers a handshake."""
        if self.proc is not None:
            raise RuntimeError("dovecot already running (pid %d)" % self.proc.pid)
        for sub in ("run", "state"):
            os.makedirs(os.path.join(self.dir, sub), exist_ok=True)
        self._write_passwd()
        self._write_conf()
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([DOVECOT, "-F", "-c", self.conf],
                                         stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                self.proc = None
                raise RuntimeError("dovecot exited at start:\n" + self.log_text()[-3000:])
            if self.mechanisms(quiet=True) is not None:
                return self
            time.sleep(0.02)
        self.stop()
        raise RuntimeError("dovecot did not answer on %s:\n%s" % (self.socket, self.log_text()[-3000:]))

    def mechanisms(self, quiet=False, path=None):
        """The mechanisms one handshake on the auth socket announces (None
        when it does not answer and quiet)."""
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(2)
                s.connect(path or self.socket)
                s.sendall(b"VERSION\t1\t2\nCPID\t%d\n" % os.getpid())
                data = b""
                while b"\nDONE\n" not in b"\n" + data:
                    chunk = s.recv(4096)
                    if not chunk:
                        raise OSError("closed during the handshake")
                    data += chunk
        except OSError:
            if quiet:
                return None
            raise
        return [line.split(b"\t")[1].decode() for line in data.split(b"\n") if line.startswith(b"MECH\t")]

    def master_pid(self):
        """The pid in base_dir/master.pid (the master's)."""
        try:
            with open(os.path.join(self.dir, "run", "master.pid")) as f:
                return int(f.read().strip())
        except (OSError, ValueError):
            return None

    @staticmethod
    def _children(ppid):
        """The PIDs whose parent is ppid (from /proc)."""
        kids = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open("/proc/%s/stat" % entry) as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if int(fields[1]) == ppid:
                kids.append(int(entry))
        return kids

    def _ours(self, pid):
        """Still one of this instance's processes (not a zombie, not a
        PID reused by something else)?"""
        try:
            with open("/proc/%d/stat" % pid) as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    return False
            with open("/proc/%d/cmdline" % pid, "rb") as f:
                return os.path.basename(self.dir).encode() in f.read()
        except (OSError, IndexError):
            return False

    def stop(self, timeout=10.0):
        """SIGTERM to the master by PID, wait (SIGKILL if needed); then
        the children it leaves behind, by the PIDs it had: Dovecot's auth
        process goes on serving the clients already connected (a moat
        under test) after its master is gone, so a stop is not a stop for
        them until those are gone too.  The master's exit status, or None
        when it was not running."""
        if self.proc is None:
            return None
        p, self.proc = self.proc, None
        kids = self._children(p.pid)
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout)
        for sig in (signal.SIGTERM, signal.SIGKILL):
            left = [k for k in kids if self._ours(k)]
            for k in left:
                try:
                    os.kill(k, sig)
                except ProcessLookupError:
                    pass
            end = time.monotonic() + timeout
            while left and time.monotonic() < end:
                left = [k for k in left if self._ours(k)]
                time.sleep(0.02)
            if not left:
                break
        # its socket goes with it, so that "stopped" means refused at once
        try:
            os.unlink(self.socket)
        except FileNotFoundError:
            pass
        return p.returncode

    def remove(self):
        """Stop, keep the log text (log_text() still works), delete the directory."""
        self.stop()
        if not self._removed:
            self._log_kept = self._read_log()
            shutil.rmtree(self.dir, ignore_errors=True)
            self._removed = True

    def _read_log(self):
        try:
            with open(self.log, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def log_text(self):
        return self._log_kept if self._removed else self._read_log()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.remove()
