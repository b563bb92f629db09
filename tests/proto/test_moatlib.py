"""moatlib's own helpers for the queue tests: files written next to the
configuration, tables compiled before start, `moat ... -c DIR`, and the
queue inspection helpers.  Uses the real daemon and the real CLI."""

import os

import pytest

from moatlib import Moat, simple_message


def test_files_and_build_maps_before_start(moat_factory):
    m = moat_factory(files={"transport": "domain.test relay:[127.0.0.1]:1767\n",
                            "maps/notes": b"not a table\n"},
                     build_maps=["transport"], start=False)
    assert not os.path.exists(m.path("transport"))       # written at start
    m.start()
    with open(m.path("transport")) as f:
        assert f.read() == "domain.test relay:[127.0.0.1]:1767\n"
    with open(m.path("maps/notes"), "rb") as f:
        assert f.read() == b"not a table\n"
    assert os.path.exists(m.path("transport") + ".lmdb")
    r = m.run_cli("config", "show", "myhostname")
    assert r.returncode == 0 and r.stdout == "myhostname = mx.example.test\n"


def test_set_file_rebuilds_and_run_cli_reports(moat_factory):
    m = moat_factory(files={"t": "a.test ok\n"}, build_maps=["t"], start=False)
    m.write_config()
    m.map_build()
    before = os.stat(m.path("t") + ".lmdb").st_mtime_ns
    m.set_file("t", "b.test ok\n")
    assert os.stat(m.path("t") + ".lmdb").st_mtime_ns >= before
    with pytest.raises(AssertionError) as e:
        m.set_file("bad", "keyonly\n", build=True)      # postmap syntax: key whitespace value
    assert "bad:1" in str(e.value)
    r = m.run_cli("config", "check")
    assert r.returncode == 0, r.stderr
    with pytest.raises(AssertionError):
        m.run_cli("no-such-command", check=True)


def test_build_maps_must_name_a_file(tmp_path):
    with pytest.raises(ValueError):
        Moat(tmp_path, files={"a": "x y\n"}, build_maps=["b"])


def test_queue_helpers(moat_factory):
    m = moat_factory()
    assert m.queue_snapshot() == {}
    with m.connect() as c:
        c.ehlo()
        c.sendmail("a@b.test", ["u@example.test"], simple_message("q"))
        c.quit()
    m.wait_queue_empty()
    assert m.queue_files("active") == [] and m.queue_files("deferred") == []
    assert len(m.wait_mails("u")) == 1
    os.makedirs(os.path.dirname(m.queue_path("deferred", "X")), exist_ok=True)
    with open(m.queue_path("deferred", "0123456789ABCD"), "w") as f:
        f.write("not a queue file\n")
    assert m.queue_files("deferred") == ["0123456789ABCD"]
    with pytest.raises(AssertionError) as e:
        m.wait_queue_empty(timeout=0.2)
    assert "deferred" in str(e.value)
    os.unlink(m.queue_path("deferred", "0123456789ABCD"))
