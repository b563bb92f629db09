"""Start-up: a bad configuration is fatal, named by file:line, and no port
is ever opened; a good one creates the queue tree."""

import os
import socket
import subprocess
import time

import pytest

from moatlib import Moat, moat_bin


def port_open(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def run_until_exit(m, timeout=15):
    """Start m's daemon, watch its port until it exits; return (rc, stderr, opened)."""
    m.write_config()
    with open(m.stderr_path, "wb") as err:
        p = subprocess.Popen([moat_bin(), "serve", "-c", m.dir], stdin=subprocess.DEVNULL,
                             stdout=err, stderr=err, cwd=m.dir)
        opened = False
        deadline = time.monotonic() + timeout
        try:
            while p.poll() is None and time.monotonic() < deadline:
                opened = opened or port_open(m.port)
                time.sleep(0.02)
        finally:
            if p.poll() is None:
                p.kill()
                p.wait(10)
    return p.returncode, m.stderr(), opened


BAD_MAIN = {
    "no-equals": "this line has no equals sign",
    "bad-time": "smtpd_timeout = banana",
    "bad-int": "smtpd_recipient_limit = lots",
    "below-min": "line_length_limit = 5",
    "bad-bool": "disable_vrfy_command = perhaps",
}


@pytest.mark.parametrize("name", sorted(BAD_MAIN))
def test_bad_main_cf_is_fatal(tmp_path, name):
    m = Moat(tmp_path / "m")
    m.main_extra_lines = ["# a comment", BAD_MAIN[name]]
    lineno = 1 + len(m.main) + 2      # header comment, parameters, comment, bad line
    rc, err, opened = run_until_exit(m)
    assert rc == 1, "exit status %s, stderr:\n%s" % (rc, err)
    assert ("main.cf:%d:" % lineno) in err, err
    assert not opened, "the port was opened despite the bad configuration"
    assert "ERROR: AddressSanitizer" not in err and "LeakSanitizer" not in err, err


def test_bad_master_cf_is_fatal(tmp_path):
    m = Moat(tmp_path / "m")
    m.master_extra = ["127.0.0.1:%d inet n -" % m.alloc_port()]
    rc, err, opened = run_until_exit(m)
    assert rc == 1, err
    assert "master.cf:3:" in err, err     # header comment, smtpd line, bad line
    assert not opened


def test_bad_override_in_master_cf_is_fatal(tmp_path):
    m = Moat(tmp_path / "m", smtpd_opts={"smtpd_timeout": "banana"})
    rc, err, opened = run_until_exit(m)
    assert rc == 1, err
    assert "master.cf:" in err, err
    assert not opened


def test_missing_config_dir_is_fatal(tmp_path):
    p = subprocess.run([moat_bin(), "serve", "-c", str(tmp_path / "nonexistent")],
                       capture_output=True, text=True, timeout=15, stdin=subprocess.DEVNULL)
    assert p.returncode == 1, p.stderr
    assert "nonexistent" in p.stderr


def test_queue_tree_created(moat_factory):
    m = moat_factory()
    for sub in ("incoming", "active", "corrupt"):
        assert os.path.isdir(os.path.join(m.main["queue_directory"], sub)), sub
    with m.connect() as c:
        c.quit()
