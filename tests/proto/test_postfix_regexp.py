"""Postfix conformance for regexp: and pcre: tables, through `moat map query`.

Postfix's own regression data (shared/testdata/postfix/util/dict_regexp*,
dict_pcre*, miss_endif_*; see shared/testdata/postfix/FORMAT.md) is
replayed in two steps:

1. moat refuses the map as given, and names exactly the lines Postfix
   warns about (Postfix warns and skips; moat fails closed).
2. A copy of the map with each warned line removed -- or fixed, where
   Postfix's warning does not skip the rule ("ignoring extra text after
   IF/ENDIF") -- opens, and every `get` gives Postfix's answer.  The few
   answers that differ on purpose are listed in KNOWN_DIFFERENCES, with
   the reason; docs/compatibility.md lists the same.

Then every regexp:/pcre: table of the seeds' gateway configuration
(shared/examples/seed-gateway) opens and answers as the seeds describe.

The binary is $MOAT_BIN (default build/asan/moat): `moat map query KEY
type:FILE` exits 0 and prints the value, 1 when not found, 2 on error.
"""
import os
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MOAT = os.environ.get("MOAT_BIN", str(ROOT / "build" / "asan" / "moat"))
# CI clones the repository with shared/ beside it.
SHARED = Path(os.environ.get("MOAT_SHARED", str(Path(__file__).resolve().parents[3] / "shared")))
UTIL = SHARED / "testdata" / "postfix" / "util"
SEED_GATEWAY = Path(os.environ.get("MOAT_SEED_GATEWAY", str(SHARED / "examples" / "seed-gateway")))

# (table type, map file, reference output)
CASES = [
    ("regexp", "dict_regexp.map", "dict_regexp.ref"),
    ("pcre", "dict_pcre.map", "dict_pcre.ref"),
    ("regexp", "miss_endif_re.map", "miss_endif_regexp.ref"),
    ("pcre", "miss_endif_re.map", "miss_endif_pcre.ref"),
]
# dict_regexp_file / dict_pcre_file are not replayed: they test Postfix's
# src_rhs_is_file mode (the result names files whose contents, base64
# encoded, become the value), which only tls_server_sni_maps uses and moat
# does not have.  See docs/compatibility.md.

# (map, key) -> (moat's answer, why it differs from Postfix's)
KNOWN_DIFFERENCES = {
    ("dict_regexp.map", "c"): (None, "'/c/' has no result: Postfix warns and uses an empty string; "
                                     "moat refuses the line, so the replay removes it"),
    ("dict_pcre.map", "c"): (None, "'/c/' has no result: Postfix warns and uses an empty string; "
                                   "moat refuses the line, so the replay removes it"),
}

WARNING = re.compile(r"^\S+: warning: (regexp|pcre) map (\S+), line (\d+): (.*)$")


def query(key, spec, *opts):
    return subprocess.run([MOAT, "map", "query", *opts, key, spec],
                          capture_output=True, text=True, timeout=60)


def answer(key, spec):
    """moat's answer: the value, or None when not found; errors fail."""
    r = query(key, spec)
    assert r.returncode in (0, 1), "query %r %s: rc=%d\n%s" % (key, spec, r.returncode, r.stderr)
    if r.returncode == 1:
        return None
    assert r.stdout.endswith("\n"), r.stdout
    return r.stdout[:-1]


@pytest.fixture(scope="module", autouse=True)
def need_map_query():
    if not os.access(MOAT, os.X_OK):
        pytest.fail("moat binary %s not found; run `make build/asan/moat`" % MOAT)
    if not UTIL.is_dir():
        pytest.fail("Postfix test data not found at %s (set MOAT_SHARED)" % UTIL)


def parse_ref(ref_text):
    """Warnings [(line, message)] and lookups [(key, value or None)]."""
    warnings, gets = [], []
    lines = ref_text.splitlines()
    for i, line in enumerate(lines):
        m = WARNING.match(line)
        if m:
            warnings.append((int(m.group(3)), m.group(4)))
        elif line.startswith("> get "):
            key = line[len("> get "):]
            res = lines[i + 1]
            if res == key + ": not found":
                gets.append((key, None))
            else:
                assert res.startswith(key + "="), res
                gets.append((key, res[len(key) + 1:]))
    return warnings, gets


REMOVED = object()


def fix_line(text, message):
    """The line as the replay map has it: fixed, or REMOVED where Postfix
    skips the rule (or, for an empty result, where moat cannot say it)."""
    if message.startswith("ignoring extra text after IF statement"):
        extra = re.search(r': "(.*)"$', message).group(1)
        t = text.rstrip()
        assert t.endswith(extra), (text, extra)
        return t[: -len(extra)].rstrip()
    if message.startswith("do not prepend whitespace"):
        return text        # the advice that goes with the warning above
    if message.startswith("ignoring extra text after ENDIF"):
        return "endif"
    if message.startswith("IF has no matching ENDIF"):
        return text        # Postfix keeps the IF: the rest of the file is its block
    return REMOVED         # "...: skipping this rule", "ignoring ENDIF
    #                        without matching IF", regex errors, no result


def fixed_map(map_text, warnings):
    """The map Postfix effectively used: skipped lines become comments
    (so line numbers stay), ignored text goes, and an IF without ENDIF
    gets its ENDIF at the end of the file, where Postfix's block ends."""
    lines = map_text.rstrip("\n").split("\n")
    for lineno, message in warnings:
        cur = lines[lineno - 1]
        if cur.startswith("# removed"):
            continue
        new = fix_line(cur, message)
        lines[lineno - 1] = ("# removed: " + message) if new is REMOVED else new
        if message.startswith("IF has no matching ENDIF"):
            lines.append("endif")
    return "\n".join(lines) + "\n"


def reported_lines(stderr, path):
    return {int(m.group(1)) for m in re.finditer(r"^%s:(\d+): " % re.escape(str(path)), stderr, re.M)}


@pytest.mark.parametrize("typ,mapname,refname", CASES, ids=[c[2] for c in CASES])
def test_refuses_what_postfix_warns_about(tmp_path, typ, mapname, refname):
    warnings, gets = parse_ref((UTIL / refname).read_text())
    assert warnings and gets
    path = tmp_path / mapname
    path.write_bytes((UTIL / mapname).read_bytes())
    r = query(gets[0][0], "%s:%s" % (typ, path))
    assert r.returncode == 2, r.stdout
    # Exactly Postfix's lines: none missed, none extra.
    assert reported_lines(r.stderr, path) == {line for line, _ in warnings}, r.stderr
    # Every problem is a "file:line: message" line.
    for line in r.stderr.splitlines():
        assert line.startswith("%s:" % path), line


@pytest.mark.parametrize("typ,mapname,refname", CASES, ids=[c[2] for c in CASES])
def test_lookups_match_postfix(tmp_path, typ, mapname, refname):
    warnings, gets = parse_ref((UTIL / refname).read_text())
    path = tmp_path / mapname
    path.write_text(fixed_map((UTIL / mapname).read_text(), warnings))
    spec = "%s:%s" % (typ, path)
    r = query("probe", spec)
    assert r.returncode in (0, 1), "the fixed map must open:\n" + r.stderr
    inp = UTIL / (refname[:-4] + ".in")
    if inp.exists():   # the .ref answers every query of the .in, in order
        assert [k for k, _ in gets] == [ln[4:] for ln in inp.read_text().splitlines() if ln.startswith("get ")]
    mismatches = []
    for key, want in gets:
        got = answer(key, spec)
        known = KNOWN_DIFFERENCES.get((mapname, key))
        if known is not None:
            assert got == known[0], "documented difference changed for %r: %r" % (key, got)
            continue
        if got != want:
            mismatches.append("get %s: postfix %r, moat %r" % (key, want, got))
    assert not mismatches, "\n".join(mismatches)


def test_known_differences_are_still_differences():
    # A documented difference must name a real Postfix answer it differs from.
    for (mapname, key), (moat_answer, _why) in KNOWN_DIFFERENCES.items():
        refname = [c[2] for c in CASES if c[1] == mapname][0]
        _, gets = parse_ref((UTIL / refname).read_text())
        assert (key, moat_answer) not in gets and key in dict(gets)


# --- the seeds' gateway tables -------------------------------------------

def seed_tables():
    main_cf = (SEED_GATEWAY / "main.cf").read_text()
    found = set(re.findall(r"\b(regexp|pcre):\$config_directory/(\S+?)(?:,|\s|$)", main_cf))
    return sorted(found)


def test_seed_gateway_tables_all_open():
    tables = seed_tables()
    # header_checks, mime_header_checks, dsl_stoplist.txt (regexp);
    # access_sender.pcre, body_checks (pcre)
    assert ("regexp", "header_checks") in tables and ("pcre", "body_checks") in tables
    assert len(tables) >= 5
    for typ, name in tables:
        r = query("probe", "%s:%s" % (typ, SEED_GATEWAY / name))
        assert r.returncode in (0, 1), "%s:%s must open:\n%s" % (typ, name, r.stderr)


SEED_LOOKUPS = [
    # 004: sender-specified routing in To:/Cc:, and the exploder rule with
    # /p1/!/p2/ and ${1}@${2}
    ("regexp", "header_checks", "To: user%elsewhere.test@example.test", "550 Directed routing rejected"),
    ("regexp", "header_checks", "Cc: a!b@example.test", "550 Directed routing rejected"),
    ("regexp", "header_checks", "To: user@example.test", None),
    ("regexp", "header_checks", "To: list-outgoing@example.test",
     "550 Use list@example.test instead of the outgoing address"),
    ("regexp", "header_checks", "To: owner-list-outgoing@example.test", None),
    # 003: third-party DSNs; 004: the Pretty Park worm
    ("regexp", "header_checks", "Content-Type: multipart/report; report-type=delivery-status; boundary=\"x\"",
     "REJECT no third-party DSNs"),
    ("regexp", "header_checks", "Content-Type: message/delivery-status; x", "REJECT no third-party DSNs"),
    ("regexp", "header_checks", "Subject: C:\\CoolProgs\\Pretty Park.exe", "REJECT"),
    ("regexp", "header_checks", "Subject: hello", None),
    # 001: attachments with bad extensions (the i flag makes it case-sensitive)
    ("regexp", "mime_header_checks", 'Content-Disposition: attachment; filename="Update-KB3374-x86.exe"',
     "REJECT Attachment type not allowed"),
    ("regexp", "mime_header_checks", "Content-Type: application/x-msdownload; name=virus.scr",
     "REJECT Attachment type not allowed"),
    ("regexp", "mime_header_checks", 'Content-Type: text/plain; name="notes.txt"', None),
    ("regexp", "mime_header_checks", 'Content-Type: application/octet-stream; name="A.EXE"', None),
    # 001: dynamic-address names in reverse DNS or HELO
    ("regexp", "dsl_stoplist.txt", "adsl-10-0-0-1.isp.test",
     "553 AUTO_XDSL You have been identified as a spammer. Go Away."),
    ("regexp", "dsl_stoplist.txt", "dsl-1.isp.test",
     "553 AUTO_DSL You have been identified as a spammer. Go Away."),
    ("regexp", "dsl_stoplist.txt", "host-1.dialup.isp.test",
     "553 AUTO_DIAL You have been identified as a spammer. Go Away."),
    ("regexp", "dsl_stoplist.txt", "mail.example.test", None),
    # 003: bounce-address senders
    ("pcre", "access_sender.pcre", "list-bounces@lists.test", "REJECT"),
    ("pcre", "access_sender.pcre", "confirm-return-42@lists.test", "REJECT"),
    ("pcre", "access_sender.pcre", "someone@lists.test", None),
    # 001: phone numbers with letter substitutions and separators
    ("pcre", "body_checks", "Call 495-740 now", "REJECT Spam advertising detected"),
    ("pcre", "body_checks", "Call \u0447g s (\u0442 4 \u043e now", "REJECT Spam advertising detected"),
    ("pcre", "body_checks", "Call 495-741 now", None),
]


@pytest.mark.parametrize("typ,name,key,want", SEED_LOOKUPS,
                         ids=["%s-%d" % (l[1], i) for i, l in enumerate(SEED_LOOKUPS)])
def test_seed_gateway_lookups(typ, name, key, want):
    assert answer(key, "%s:%s" % (typ, SEED_GATEWAY / name)) == want


def test_query_trace_names_the_rule(tmp_path):
    path = tmp_path / "checks"
    path.write_text("# comment\n/^a/ first\n/^(b)(.*)/\n  got $2$1\n")
    assert answer("bcd", "pcre:%s" % path) == "got cdb"
    r = query("bcd", "pcre:%s" % path, "-t")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "%s:3\n" % path


def test_missing_file_is_an_error(tmp_path):
    for typ in ("regexp", "pcre"):
        r = query("x", "%s:%s" % (typ, tmp_path / "absent"))
        assert r.returncode == 2
        assert str(tmp_path / "absent") in r.stderr
