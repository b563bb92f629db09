"""The AUTH backends through `moat sasl test` and `moat sasl hash`: a real
Dovecot (tests/proto/dovecotlib.py) for smtpd_sasl_type = dovecot, and
the built-in password table for smtpd_sasl_type = moat.

`moat sasl test` runs the exchange through the code the server uses
(sasl_server_new, sasl_start, sasl_step) on a private event loop; exit
status 0 authenticated, 1 failed, 2 temporary failure, 3 usage or
configuration error.  No daemon is started here: each configuration is
written by moatlib.Moat and read with -c DIR.  Dovecot listens on a unix
socket in its own /tmp directory and on a free 127.0.0.1 port.
"""
import os
import subprocess

import pytest

from dovecotlib import Dovecot, dovecot_available
from moatlib import Moat, free_port, moat_bin

USERS = {"alice": "secret", "bob": "correct horse battery staple"}


@pytest.fixture(autouse=True)
def _binary():
    if not os.access(moat_bin(), os.X_OK):
        pytest.fail("moat binary %s not found; run `make build/asan/moat`" % moat_bin())


@pytest.fixture(scope="module")
def dovecot():
    if not dovecot_available():
        pytest.skip("dovecot-core is not installed (scripts/deps.sh)")
    d = Dovecot(users=USERS, inet=True, debug=True)
    d.start()
    yield d
    d.remove()


def config(tmp_path, name="moat", main=None, smtpd_opts=None, master=None, files=None):
    """A written configuration (nothing started): Moat.run_cli uses -c."""
    m = Moat(tmp_path / name, main=main, smtpd_opts=smtpd_opts, master=master, files=files)
    m.write_config()
    return m


def sasl_test(m, user, password, mech=None, service=None):
    args = ["sasl"] + (["-s", service] if service else []) + ["test", user] + ([mech] if mech else [])
    return m.run_cli(*args, input=password + "\n")


def dovecot_main(path, **extra):
    main = {"smtpd_sasl_auth_enable": "yes", "smtpd_sasl_type": "dovecot", "smtpd_sasl_path": path}
    main.update(extra)
    return main


# ---------------------------------------------------------------- dovecot

def test_dovecot_good_password(tmp_path, dovecot):
    m = config(tmp_path, main=dovecot_main(dovecot.socket))
    r = sasl_test(m, "alice", "secret")
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout == "ok: alice authenticated (mechanism PLAIN)\n"
    r = sasl_test(m, "bob", USERS["bob"], mech="login")
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout == "ok: bob authenticated (mechanism LOGIN)\n"
    # the name Dovecot answers with is the one printed (it lowercases)
    r = sasl_test(m, "ALICE", "secret")
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout == "ok: alice authenticated (mechanism PLAIN)\n"


def test_dovecot_bad_password_and_unknown_user(tmp_path, dovecot):
    m = config(tmp_path, main=dovecot_main(dovecot.socket))
    r = sasl_test(m, "alice", "Secret")
    assert r.returncode == 1, r.stdout + r.stderr
    assert r.stdout.startswith("fail: alice: ")
    r = sasl_test(m, "bob", "secret", mech="LOGIN")
    assert r.returncode == 1, r.stdout + r.stderr
    r = sasl_test(m, "nobody", "secret")
    assert r.returncode == 1, r.stdout + r.stderr
    assert r.stdout.startswith("fail: nobody: ")
    # never a password in what moat prints
    assert "secret" not in r.stdout + r.stderr.replace("smtpd_sasl", "")
    # what Dovecot received: the service, nologin, a TLS client
    log = dovecot.log_text()
    assert "service=smtp\tnologin\tsecured" in log


def test_dovecot_over_inet_and_service_name(tmp_path, dovecot):
    m = config(tmp_path, main=dovecot_main(dovecot.inet_path, smtpd_sasl_service="submission"))
    r = sasl_test(m, "alice", "secret")
    assert r.returncode == 0, r.stdout + r.stderr
    r = sasl_test(m, "alice", "wrong")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "service=submission\tnologin" in dovecot.log_text()


def test_dovecot_relative_path_is_under_queue_directory(tmp_path, dovecot):
    m = config(tmp_path, main=dovecot_main("private/auth"))
    private = os.path.join(m.main["queue_directory"], "private")
    os.makedirs(private)
    os.symlink(dovecot.socket, os.path.join(private, "auth"))
    r = sasl_test(m, "alice", "secret")
    assert r.returncode == 0, r.stdout + r.stderr


def test_dovecot_stopped_is_a_temporary_failure(tmp_path):
    if not dovecot_available():
        pytest.skip("dovecot-core is not installed (scripts/deps.sh)")
    with Dovecot(users=USERS) as d:
        m = config(tmp_path, main=dovecot_main(d.socket))
        r = sasl_test(m, "alice", "secret")
        assert r.returncode == 0, r.stdout + r.stderr
        d.stop()
        r = sasl_test(m, "alice", "secret")
        assert r.returncode == 2, r.stdout + r.stderr
        assert r.stdout.startswith("temporary failure: ")
        # the reason for the postmaster is in the warning
        assert "SASL: Dovecot at %s: cannot connect" % d.socket in r.stderr
        d.start()
        r = sasl_test(m, "alice", "secret")
        assert r.returncode == 0, r.stdout + r.stderr


def test_dovecot_security_options_hide_plaintext(tmp_path, dovecot):
    # the CLI authenticates as a TLS client: the TLS options apply
    m = config(tmp_path, main=dovecot_main(dovecot.socket,
                                           smtpd_sasl_tls_security_options="noanonymous, noplaintext"))
    r = sasl_test(m, "alice", "secret")
    assert r.returncode == 1, r.stdout + r.stderr
    assert r.stdout == "fail: alice: mechanism not available\n"


# ---------------------------------------------------------------- service selection

def test_service_selection(tmp_path, dovecot):
    sub = ["127.0.0.1:%d inet n - n - - smtpd" % free_port(),
           "  -o smtpd_sasl_auth_enable=yes",
           "  -o smtpd_sasl_path=%s" % dovecot.socket]
    m = config(tmp_path, main={"smtpd_sasl_path": "/nonexistent/auth"}, master=sub)
    # the first smtpd service with AUTH on is the default
    r = sasl_test(m, "alice", "secret")
    assert r.returncode == 0, r.stdout + r.stderr
    # the first one (moatlib's) has it off
    first = "127.0.0.1:%d" % m.port
    r = sasl_test(m, "alice", "secret", service=first)
    assert r.returncode == 3
    assert "smtpd_sasl_auth_enable = no for service %s" % first in r.stderr
    r = sasl_test(m, "alice", "secret", service="nosuch")
    assert r.returncode == 3
    assert 'no smtpd service "nosuch"' in r.stderr


def test_usage_and_configuration_errors(tmp_path):
    m = config(tmp_path, main={"smtpd_sasl_auth_enable": "yes", "smtpd_sasl_type": "cyrus"})
    r = sasl_test(m, "alice", "secret")
    assert r.returncode == 3
    assert "main.cf:" in r.stderr
    assert ("smtpd_sasl_type: cyrus SASL is not supported; use dovecot, or moat with "
            "smtpd_sasl_password_maps") in r.stderr
    m = config(tmp_path, name="off")
    r = sasl_test(m, "alice", "secret")
    assert r.returncode == 3
    assert "smtpd_sasl_auth_enable = no" in r.stderr
    r = m.run_cli("sasl", "test", "alice", "CRAM-MD5", input="x\n")
    assert r.returncode == 3
    r = m.run_cli("sasl", "test", input="x\n")
    assert r.returncode == 3 and "usage:" in r.stderr
    r = m.run_cli("sasl", "frobnicate")
    assert r.returncode == 3


# ---------------------------------------------------------------- the built-in table

def hash_of(password, scheme=None):
    args = [moat_bin(), "sasl", "hash"] + (["--scheme", scheme] if scheme else [])
    r = subprocess.run(args, input=password + "\n", capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def test_hash_output(tmp_path):
    y = hash_of("secret")
    assert y.startswith("$y$")
    six = hash_of("secret", "sha512")
    assert six.startswith("$6$")
    assert hash_of("secret") != y   # a new salt each time
    r = subprocess.run([moat_bin(), "sasl", "hash"], input="", capture_output=True, text=True, timeout=60)
    assert r.returncode == 3 and "no password" in r.stderr
    r = subprocess.run([moat_bin(), "sasl", "hash", "--scheme", "md5"], input="x\n", capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 3


@pytest.mark.parametrize("table", ["texthash", "hash"])
def test_builtin_table(tmp_path, table):
    lines = "alice %s\nbob {CRYPT}%s\ncarol plaintext-is-refused\n" % (
        hash_of("secret"), hash_of(USERS["bob"], "sha512"))
    m = config(tmp_path, files={"sasl_passwd": lines},
               main={"smtpd_sasl_auth_enable": "yes", "smtpd_sasl_type": "moat",
                     "smtpd_sasl_password_maps": "%s:%s" % (table, os.path.join(str(tmp_path / "moat"),
                                                                                "sasl_passwd"))})
    m.write_files()
    if table == "hash":
        m.map_build("sasl_passwd")
    r = sasl_test(m, "alice", "secret")
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout == "ok: alice authenticated (mechanism PLAIN)\n"
    r = sasl_test(m, "bob", USERS["bob"], mech="LOGIN")
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout == "ok: bob authenticated (mechanism LOGIN)\n"
    r = sasl_test(m, "alice", "wrong")
    assert r.returncode == 1, r.stdout + r.stderr
    assert r.stdout == "fail: alice: authentication failure\n"
    r = sasl_test(m, "nobody", "secret")
    assert r.returncode == 1, r.stdout + r.stderr
    assert r.stdout == "fail: nobody: authentication failure\n"
    # a plaintext value is a configuration problem, loudly, never compared
    r = sasl_test(m, "carol", "plaintext-is-refused")
    assert r.returncode == 2, r.stdout + r.stderr
    assert "not a crypt(3) hash" in r.stderr
    assert "plaintext-is-refused" not in r.stdout


def test_builtin_table_missing_is_a_config_error(tmp_path):
    m = config(tmp_path, main={"smtpd_sasl_auth_enable": "yes", "smtpd_sasl_type": "moat",
                               "smtpd_sasl_password_maps": "texthash:/nonexistent/sasl_passwd"})
    r = sasl_test(m, "alice", "secret")
    assert r.returncode == 3
    assert "main.cf:" in r.stderr and "/nonexistent/sasl_passwd" in r.stderr
