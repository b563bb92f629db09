"""The seed gateway (../shared/examples/seed-gateway) as the tests run it.

Owns: copying the seed configuration into a test directory, the few edits
this machine needs (the test DNS world, private queue/data/log paths, the
policy service that does not run here and the recipient-domain check the
test DNS cannot satisfy removed; everything else, content checks included,
as written), building its hash: tables, `moat config check`, and a daemon
on a free loopback port that is stopped by PID when the block ends.
"""

import contextlib
import os
import re
import shutil
import signal
import subprocess
from pathlib import Path

import moatlib
from moatlib import Client, free_port, wait_for

SEED = Path(os.environ.get("MOAT_SEED_GATEWAY",
                           str(Path(__file__).resolve().parents[3] / "shared" / "examples" / "seed-gateway")))

HASH_TABLES = ("allowed-spammers", "spammer-networks", "smtpd_helo_restrictions", "null_sender",
               "access_sender", "sender_access", "access_recipient", "transport")


@contextlib.contextmanager
def seed_gateway(tmp_path, dns_world, transports, check_text=None):
    """Yield (dir, port) of a running seed gateway.  transports: domain ->
    port of a receiving sink on 127.0.0.1.  check_text(main_cf_text), if
    given, asserts what the test relies on in the edited main.cf."""
    d = tmp_path / "seed"
    shutil.copytree(SEED, d)
    text = (d / "main.cf").read_text()
    text = re.sub(r"(?m)^\s+(check_policy_service|reject_unknown_recipient_domain)[^,\n]*,\n", "", text)
    if check_text:
        check_text(text)
    text += ("dns_forwarders = %s\ndns_timeout = 5s\nqueue_directory = %s\ndata_directory = %s\n"
             "maillog_file = %s\nsmtpd_error_sleep_time = 0\n"
             % (dns_world.forwarders, d / "queue", d / "data", d / "maillog"))
    (d / "main.cf").write_text(text)
    port = free_port()
    (d / "master.cf").write_text("127.0.0.1:%d inet n - n - - smtpd\n" % port)
    with open(d / "transport", "a") as f:
        for domain, p in transports.items():
            f.write("%s relay:[127.0.0.1]:%d\n" % (domain, p))
    moat = moatlib.moat_bin()
    for name in HASH_TABLES:
        r = subprocess.run([moat, "map", "build", str(d / name)], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
    r = subprocess.run([moat, "config", "check", "-c", str(d)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    err = open(d / "stderr.log", "wb")
    proc = subprocess.Popen([moat, "serve", "-c", str(d)], stdin=subprocess.DEVNULL, stdout=err, stderr=err,
                            cwd=str(d))
    try:
        def listening():
            try:
                Client(port, timeout=2).close()
                return True
            except OSError:
                return False
        wait_for(listening, timeout=20, what="the seed gateway to listen")
        yield d, port
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        finally:
            err.close()
    stderr = (d / "stderr.log").read_text()
    assert proc.returncode == 0, stderr[-3000:]
    for marker in moatlib.SANITIZER_MARKERS:
        assert marker not in stderr
