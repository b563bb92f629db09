"""Postfix's smtpd restriction regression data, replayed through `moat check --script`.

shared/testdata/postfix/smtpd/*.in are scripts for Postfix's smtpd_check
test driver (format: shared/testdata/postfix/FORMAT.md); the .ref files
hold Postfix's answers.  `moat check --script` reads the same line
language (settings, client/helo/mail/rcpt) and answers each query with
"OK" or the SMTP reply, so each query line becomes one test here:

* moat's reply must equal Postfix's (code, enhanced code and text; the
  "; rule=... table=..." suffix moat adds is dropped, and so are the log
  lines of both sides: "./smtpd_check: ..." and "moat: ...");
* unless moat cannot answer it: a restriction, table type or parameter
  moat does not have yet makes moat print "moat: error: ... not supported
  ..." and the case is skipped with that reason;
* or the case is in KNOWN_DIFFERENCES: moat's reply is then asserted
  exactly, with the reason (docs/compatibility.md, "smtpd regression
  replay", lists the same cases).

Before feeding a script, the runner rewrites the few lines moat's
configuration cannot take as they are (TRANSLATIONS, each with its
reason).  relay_domains, permit_mx_backup (with permit_mx_backup_networks)
and the obsolete check_relay_domains are replayed as written.

The access table smtpd_check_access is compiled with `moat map build`
into each run's working directory, where `hash:./smtpd_check_access`
finds it.  The DNS answers come from the test DNS server (below).
"""
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from moatlib import SANITIZER_MARKERS, moat_bin

MOAT = moat_bin()
SHARED = Path(os.environ.get("MOAT_SHARED", str(Path(__file__).resolve().parents[3] / "shared")))
DATA = SHARED / "testdata" / "postfix" / "smtpd"

# .in file -> .ref file
FILES = {
    "smtpd_check.in": "smtpd_check.ref",
    "smtpd_check.in4": "smtpd_check.ref4",
    "smtpd_check_dsn.in": "smtpd_check_dsn.ref",
    "smtpd_acl.in": "smtpd_acl.ref",
    "smtpd_error.in": "smtpd_error.ref",
    "smtpd_deprecated.in": "smtpd_deprecated.ref",
    "smtpd_addr_valid.in": "smtpd_addr_valid.ref",
    "smtpd_check.in2": "smtpd_check.ref2",
    "smtpd_exp.in": "smtpd_exp.ref",
    "smtpd_dnswl.in": "smtpd_dnswl.ref",
    "smtpd_nullmx.in": "smtpd_nullmx.ref",
    "smtpd_server.in": "smtpd_server.ref",
    "smtpd_dns_filter.in": "smtpd_dns_filter.ref",
    "smtpd_check_backup.in": "smtpd_check_backup.ref",
}
# Not replayed: smtpd_check.in3 (no .ref upstream); smtpd_token (tests
# Postfix's command tokenizer, not restrictions).
#
# The names under porcupine.org (and the few others) that the scripts look
# up are served by the test DNS server (tests/dns/postfix-replay.conf,
# inferred from the .ref answers; tests/dns/README.md): every script gets
# two settings in front, dns_forwarders and dns_timeout, whose echo and
# "OK" are dropped before comparing.
PRELUDE = 2

QUERY = re.compile(r"^(client|helo|mail|rcpt)\s")

# (files it applies to or None for all, pattern, replacement, reason):
# applied to each input line in turn.
TRANSLATIONS = [
    ({"smtpd_server.in"}, re.compile(r"^reverse_client_restrictions\s"), r"#(replay) reverse_client_restrictions ",
     "not a parameter: Postfix's driver answers \"bad command\" and ignores it; moat would refuse the configuration"),
]

# (file, line number in the .in file) -> (moat's reply, why it differs).
KNOWN_DIFFERENCES = {
    ("smtpd_check.in", 95): ("554 5.7.1 Service unavailable; Client host [127.0.0.2] blocked using "
                             "dnsbltest.porcupine.org; DNS blocklist test",
                             "the .ref predates the TXT record of 2.0.0.127.dnsbltest.porcupine.org that "
                             "smtpd_exp.ref shows for the same lookup; the replay zone publishes it"),
    ("smtpd_check.in2", 87): ("554 5.7.1 Service unavailable; Client host [127.0.0.2] blocked using "
                              "dnsbltest.porcupine.org; DNS blocklist test",
                              "the .ref predates the TXT record of 2.0.0.127.dnsbltest.porcupine.org that "
                              "smtpd_exp.ref shows for the same lookup; the replay zone publishes it"),
    ("smtpd_check.in2", 31): ("554 5.7.1 <spike.porcupine.org>: Helo command rejected: ns or mx server "
                              "spike.porcupine.org",
                              "the .ref shows an older text of the smtpd_check_access entry (\"name server\"); "
                              "the table now says \"ns or mx server\""),
    ("smtpd_exp.in", 18): ("OK", "reject_maps_rbl: removed in Postfix 3.9 (a configuration error there, 451 4.3.5); "
                                 "moat keeps it (seed 004 uses it) and 168.100.3.2 is not listed"),
    ("smtpd_exp.in", 20): ("554 5.7.1 SERVICE UNAVAILABLE; Client host [127.0.0.2] blocked using "
                           "dnsbltest.porcupine.org; DNS blocklist test",
                           "reject_maps_rbl: removed in Postfix 3.9 (a configuration error there, 451 4.3.5); "
                           "moat keeps it (seed 004 uses it): the rbl_reply_maps text of the list"),
    ("smtpd_dnswl.in", 17): ("554 5.7.1 <spike.porcupine.org[168.100.3.2]>: Client host rejected: Access denied",
                             "wild.porcupine.org answers every name (a wildcard), also the RFC 5782 test point "
                             "127.0.0.1: moat's list health check ignores such a list (docs/dns.md), so the "
                             "allow list permits nothing and the next step rejects"),
    ("smtpd_check.in4", 12): ("451 4.3.5 Server configuration error",
                              "FILTER without a value: Postfix warns and ignores the entry; moat fails closed "
                              "(a 4xx and a warning naming the entry)"),
    ("smtpd_check.in4", 13): ("451 4.3.5 Server configuration error",
                              "FILTER without transport:destination: Postfix warns and ignores the entry; moat fails "
                              "closed (a 4xx and a warning naming the entry)"),
    ("smtpd_error.in", 59): ("451 4.3.5 Server configuration error",
                             "mynetworks with host bits set (168.100.3.1/27): Postfix warns and answers 451 4.3.0 "
                             "Temporary lookup failure at run time; moat refuses the value when the configuration "
                             "loads (`moat config check` names main.cf:line), so every query answers 451 4.3.5"),
    ("smtpd_deprecated.in", 17): ("OK", "check_relay_domains: removed in Postfix 3.9 (a configuration error there, "
                                        "451 4.3.5); moat keeps it with its older semantics (smtpd_check.ref shows "
                                        "them), and the client name foo is in relay_domains foo"),
    ("smtpd_deprecated.in", 8): ("OK", "permit_naked_ip_address: removed in Postfix 3.9 (a configuration error "
                                       "there); moat still accepts it, with the deprecation warning, so older "
                                       "main.cf files keep working"),
}


def translate(line, name):
    for files, rx, repl, _why in TRANSLATIONS:
        if files is None or name in files:
            line = rx.sub(repl, line)
    return line


def split_entries(lines, log_prefix):
    """[(echoed line, [reply lines], [log lines])] from driver output."""
    entries = []
    for line in lines:
        if line.startswith(">>> "):
            entries.append((line[4:], [], []))
        elif line == ">>>":
            entries.append(("", [], []))
        elif entries:
            (entries[-1][2] if line.startswith(log_prefix) else entries[-1][1]).append(line)
    return entries


_RUNS = {}


def run_file(name, tmp_root, forwarders):
    if name in _RUNS:
        return _RUNS[name]
    work = tmp_root / name.replace(".", "_")
    work.mkdir(parents=True, exist_ok=True)
    shutil.copy(DATA / "smtpd_check_access", work / "smtpd_check_access")
    r = subprocess.run([MOAT, "map", "build", str(work / "smtpd_check_access")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    src = (DATA / name).read_text().splitlines()
    script = work / name
    prelude = "dns_forwarders %s\ndns_timeout 2\n" % forwarders
    script.write_text(prelude + "".join(translate(l, name) + "\n" for l in src))
    r = subprocess.run([MOAT, "check", "--script", str(script)], capture_output=True,
                       text=True, cwd=work, timeout=300)
    for marker in SANITIZER_MARKERS:
        assert marker not in r.stderr + r.stdout, r.stderr[-4000:]
    assert r.returncode == 0, r.stderr
    moat_entries = split_entries(r.stdout.splitlines(), "moat: ")[PRELUDE:]
    ref_entries = split_entries((DATA / FILES[name]).read_text().splitlines(), "./smtpd_check: ")
    assert len(moat_entries) == len(src), "moat echoed %d lines of %d" % (len(moat_entries), len(src))
    _RUNS[name] = (src, moat_entries, ref_entries)
    return _RUNS[name]


def cases():
    out = []
    for name in FILES:
        path = DATA / name
        if not path.exists():
            continue
        for i, line in enumerate(path.read_text().splitlines(), 1):
            if QUERY.match(line):
                out.append(pytest.param(name, i, id="%s:%d:%s" % (name, i, line)))
    return out


@pytest.fixture(scope="module")
def replay_root(tmp_path_factory):
    if not os.access(MOAT, os.X_OK):
        pytest.fail("moat binary %s not found; run `make build/asan/moat`" % MOAT)
    if not DATA.is_dir():
        pytest.fail("Postfix test data not found at %s (set MOAT_SHARED)" % DATA)
    r = subprocess.run([MOAT, "check", "--help"], capture_output=True, text=True, timeout=60)
    if 'unknown command "check"' in r.stderr:
        pytest.skip("this moat binary has no `check` command yet (main.c dispatch to cmd_check)")
    return tmp_path_factory.mktemp("smtpd_replay")


def strip_annotations(reply):
    return reply.split("; rule=", 1)[0]


@pytest.mark.parametrize("name, lineno", cases())
def test_postfix_smtpd_replay(replay_root, dns_world, name, lineno):
    src, moat_entries, ref_entries = run_file(name, replay_root, dns_world.forwarders)
    echoed, replies, logs = moat_entries[lineno - 1]
    assert echoed == translate(src[lineno - 1], name)
    ref_line, ref_replies, _ = ref_entries[lineno - 1]
    assert ref_line == src[lineno - 1], "the .ref does not follow the .in at line %d" % lineno
    got = [strip_annotations(l) for l in replies]
    key = (name, lineno)
    errors = [l[len("moat: error: "):] for l in logs if l.startswith("moat: error: ")]
    if errors and key not in KNOWN_DIFFERENCES and got != ref_replies:
        # Postfix answered, moat could not compile what the case needs.
        unsupported = [e for e in errors if "not supported" in e or "unsupported table type" in e]
        # Postfix answers 451 at run time for a mynetworks prefix with host
        # bits set; moat refuses the configuration at load (docs/compatibility.md).
        refused = [e for e in errors if "non-zero host bits" in e]
        assert unsupported or refused, "moat could not evaluate this case:\n" + "\n".join(errors)
        if refused:
            return
        pytest.skip("moat cannot answer this yet: " + unsupported[0])
    if key in KNOWN_DIFFERENCES:
        want, why = KNOWN_DIFFERENCES[key]
        assert got == [want], "known difference changed (%s): Postfix %r, moat now %r" % (why, ref_replies, got)
        assert ref_replies != [want], "no longer a difference: remove %r from KNOWN_DIFFERENCES" % (key,)
        return
    assert got == ref_replies, "Postfix answered %r, moat %r\nmoat log: %s" % (ref_replies, got, logs)


def test_postfix_smtpd_every_known_difference_is_a_query():
    for (name, lineno), (_want, why) in KNOWN_DIFFERENCES.items():
        lines = (DATA / name).read_text().splitlines()
        assert QUERY.match(lines[lineno - 1]), (name, lineno)
        assert why
