"""redislib's own behaviour: the redis-server the state-store tests use
starts on a loopback port, answers redis-cli, keeps its port across a
stop and start, and can be paused (a hung server) and resumed."""

import socket
import subprocess

import pytest

from redislib import REDIS_CLI


def test_start_cli_databases(redis_server):
    r = redis_server
    assert r.url == "redis://127.0.0.1:%d/0" % r.port
    assert r.url_db(5).endswith(":%d/5" % r.port)
    assert r.cli("SET", "k", "zero") == "OK"
    assert r.cli("SET", "k", "five", db=5) == "OK"
    assert r.cli("GET", "k") == "zero"
    assert r.cli("GET", "k", db=5) == "five"
    assert r.cli("CONFIG", "GET", "bind").split()[-1] == "127.0.0.1"
    assert r.cli("CONFIG", "GET", "save") == "save"   # and an empty value: no snapshots


def test_stop_start_same_port(redis_server):
    r = redis_server
    port, pid = r.port, r.pid
    r.cli("SET", "k", "v")
    assert r.stop() is not None
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0
    r.start()
    assert r.port == port and r.pid != pid
    assert r.cli("GET", "k") == ""   # no persistence: a fresh server


def test_pause_resume(redis_server):
    r = redis_server
    r.pause()
    with pytest.raises(subprocess.TimeoutExpired):
        subprocess.run([REDIS_CLI, "-p", str(r.port), "PING"], capture_output=True, timeout=1)
    r.resume()
    assert r.cli("PING") == "PONG"
