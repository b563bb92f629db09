"""pytest fixtures for moat's protocol tests.

Owns: starting and stopping moat daemons for tests (by PID, always), and
failing a test whose daemon printed a sanitizer report, a UBSan "runtime
error:", a panic, or died on its own.

  moat_factory(main={...}, master=[...], smtpd_opts={...}, start=True)
      a fresh daemon in its own temp dir, stopped at the end of the test.
  shared_moat
      one daemon per test module, for tests that do not change config;
      the module may set SHARED_MAIN / SHARED_SMTPD_OPTS dicts and a
      shared_setup(moat) function (extra services...) run before start.
  dns_world / dns_world_private
      the DNS test world (tests/dns/README.md): one shared server for the
      session (never paused), or a test's own that it may pause/stop.
  sink_factory(host=, port=, lmtp=, script=, name=, start=True)
      a scriptable receiving SMTP/LMTP server (tests/proto/sink.py),
      stopped by PID at the end of the test; a traceback in it fails the
      test.
"""

import os

import pytest

from clamdlib import clamd  # noqa: F401  (the session-wide clamd fixture: one clamd for the run)
from dnsworld import DnsWorld
from moatlib import Moat, moat_bin
from sink import Sink

_LIVE = []   # every daemon started and not yet stopped


def _require_binary():
    path = moat_bin()
    if not os.access(path, os.X_OK):
        pytest.fail("moat binary %s not found; run `make build/asan/moat` (or `make proto`)" % path)


def _report(problems):
    if problems:
        pytest.fail("daemon problems:\n" + "\n\n".join(problems), pytrace=False)


@pytest.fixture
def moat_factory(tmp_path):
    _require_binary()
    made = []

    def make(main=None, master=None, smtpd_opts=None, start=True, **kw):
        m = Moat(tmp_path / ("moat%d" % len(made)), main=main, master=master,
                 smtpd_opts=smtpd_opts, **kw)
        made.append(m)
        _LIVE.append(m)
        if start:
            m.start()
        return m

    yield make
    problems = []
    for m in made:
        try:
            rc = m.stop()
            if rc not in (None, 0):
                problems.append("moat (pid %d) stopped by SIGTERM exited with %s:\n%s"
                                % (m.pid, rc, m.stderr()[-3000:]))
        finally:
            problems += m.problems()
            _LIVE.remove(m)
    _report(problems)


@pytest.fixture(scope="module")
def shared_moat(request, tmp_path_factory):
    _require_binary()
    main = dict(getattr(request.module, "SHARED_MAIN", {}))
    opts = dict(getattr(request.module, "SHARED_SMTPD_OPTS", {}))
    m = Moat(tmp_path_factory.mktemp("shared"), main=main, smtpd_opts=opts)
    setup = getattr(request.module, "shared_setup", None)
    if setup:
        setup(m)
    try:
        m.start()
    except BaseException:
        m.stop()
        raise
    _LIVE.append(m)
    yield m
    problems = []
    try:
        rc = m.stop()
        if rc not in (None, 0):
            problems.append("moat (pid %d) stopped by SIGTERM exited with %s:\n%s"
                            % (m.pid, rc, m.stderr()[-3000:]))
    finally:
        _LIVE.remove(m)
    _report(problems + m.problems())


@pytest.fixture(autouse=True)
def _daemon_watch():
    """After every test: any live daemon that reported a sanitizer error or
    died by itself fails the test that was running."""
    yield
    problems = []
    for m in list(_LIVE):
        problems += m.problems()
        if m.proc is not None and m.returncode is None and m.proc.poll() is not None:
            problems.append("moat (pid %d) exited by itself with status %s:\n%s"
                            % (m.proc.pid, m.proc.returncode, m.stderr()[-3000:]))
            m.returncode = m.proc.returncode
    _report(problems)


@pytest.fixture
def sink_factory(tmp_path):
    """Sinks for one test: sink_factory(host="127.0.0.61", port=P, ...)
    takes Sink's arguments and starts it (start=False: the test starts it)."""
    made = []

    def make(start=True, **kw):
        s = Sink(tmp_path / "sinks", **kw)
        made.append(s)
        if start:
            s.start()
        return s

    yield make
    problems = []
    for s in made:
        s.stop()
        problems += s.problems()
    _report(problems)


# ------------------------------------------------------ the DNS test world
# tests/dns/README.md lists every name; tests/proto/dnsworld.py runs it.


@pytest.fixture(scope="session")
def dns_world(tmp_path_factory):
    """One DNS server for the whole run, shared: never paused or stopped by
    a test (pause() refuses).  Pass dns_world.forwarders to moat as
    dns_forwarders."""
    w = DnsWorld(tmp_path_factory.mktemp("dnsworld"), shared=True)
    w.start()
    yield w
    rc = w.stop()
    if rc not in (None, 0):
        pytest.fail("shared DNS world (unbound) exited with %s:\n%s" % (rc, w.diagnostics()),
                    pytrace=False)


@pytest.fixture(scope="session", autouse=True)
def _hermetic_dns(dns_world):
    """Every Moat of the run asks the test DNS server, never the machine's
    resolver (moatlib.DEFAULT_DNS_FORWARDERS)."""
    import moatlib
    moatlib.DEFAULT_DNS_FORWARDERS = dns_world.forwarders
    yield
    moatlib.DEFAULT_DNS_FORWARDERS = None


@pytest.fixture
def dns_world_private(tmp_path):
    """A DNS server of this test's own, which the test may pause(),
    resume(), stop() or restart()."""
    w = DnsWorld(tmp_path / "dnsworld")
    w.start()
    yield w
    w.stop()


@pytest.fixture
def redis_server(tmp_path):
    """A redis-server of this test's own on a free loopback port
    (tests/proto/redislib.py): .url for state_store, .cli(...) to look
    inside, pause()/resume()/stop()/start() to break it.  Stopped by PID."""
    from redislib import RedisServer, redis_available
    if not redis_available():
        pytest.skip("redis-server/redis-cli not installed (scripts/deps.sh installs them)")
    r = RedisServer(tmp_path / "redis")
    r.start()
    yield r
    r.stop()
