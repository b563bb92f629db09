"""Replay Postfix's own cidr-table regression data through `moat map query`.

Data: shared/testdata/postfix/util/{dict_cidr,miss_endif_cidr,...}.{map,ref}
(format: shared/testdata/postfix/FORMAT.md, section 3.3).  Each .ref holds
Postfix's warnings about bad map lines, then "> get KEY" queries, each
followed by "KEY=VALUE" or "KEY: not found".

Where Postfix warns and skips a rule, moat refuses the whole table: the
test checks that moat names every such line (file:line, the same problem)
and exits 2, then replays every query against a copy of the map in which
those lines are commented out (line numbers kept), which is the table
Postfix actually used.  docs/compatibility.md lists these differences.
"""
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from moatlib import SANITIZER_MARKERS, moat_bin

MOAT = moat_bin()
DATA = Path(os.environ.get("MOAT_POSTFIX_TESTDATA",
                           str(Path(__file__).resolve().parents[3] / "shared/testdata/postfix"))) / "util"

WARNING_RE = re.compile(r"^\./dict_open: warning: cidr map (?P<map>\S+), line (?P<line>\d+): "
                        r"(?P<msg>.*?)(?:: skipping this rule)?$")


def parse_ref(path):
    """(warnings [(line, message)], queries [(key, value or None)])."""
    warnings, queries = [], []
    lines = path.read_text().splitlines()
    for i, text in enumerate(lines):
        m = WARNING_RE.match(text)
        if m:
            warnings.append((int(m.group("line")), m.group("msg")))
        elif text.startswith("> get "):
            key = text[len("> get "):]
            answer = lines[i + 1]
            if answer == key + ": not found":
                queries.append((key, None))
            else:
                assert answer.startswith(key + "="), answer
                queries.append((key, answer[len(key) + 1:]))
    return warnings, queries


def query(key, table):
    r = subprocess.run([MOAT, "map", "query", key, table], capture_output=True, text=True, timeout=60)
    for marker in SANITIZER_MARKERS:
        assert marker not in r.stderr, r.stderr
    return r


CASES = ["dict_cidr", "miss_endif_cidr"]


@pytest.fixture(autouse=True)
def _preconditions():
    if not DATA.is_dir():
        pytest.skip("Postfix test data not found at %s (set MOAT_POSTFIX_TESTDATA)" % DATA)
    if not os.access(MOAT, os.X_OK):
        pytest.fail("moat binary %s not found; run `make build/asan/moat`" % MOAT)
    r = subprocess.run([MOAT, "map", "--help"], capture_output=True, text=True, timeout=60)
    if 'unknown command "map"' in r.stderr:
        pytest.skip("this moat binary has no `map` command yet (main.c dispatch to cmd_map)")


@pytest.mark.parametrize("name", CASES)
def test_postfix_cidr_replay(tmp_path, name):
    warnings, queries = parse_ref(DATA / (name + ".ref"))
    assert queries, "no queries in %s.ref" % name
    orig = tmp_path / (name + ".map")
    shutil.copy(DATA / (name + ".map"), orig)

    if warnings:
        # moat refuses the table, naming each line Postfix skipped, with
        # Postfix's wording of the problem.
        r = query(queries[0][0], "cidr:%s" % orig)
        assert r.returncode == 2, r.stdout
        assert r.stdout == ""
        got = {}
        for text in r.stderr.splitlines():
            prefix = "%s:" % orig
            assert text.startswith(prefix), text
            line, msg = text[len(prefix):].split(": ", 1)
            got[int(line)] = msg
        assert got == dict(warnings)

    # The table Postfix used: the skipped lines commented out.
    skipped = {line for line, _ in warnings}
    lines = orig.read_text().split("\n")
    for n in skipped:
        lines[n - 1] = "# skipped by Postfix: " + lines[n - 1]
    fixed = tmp_path / (name + ".fixed")
    fixed.write_text("\n".join(lines))

    for key, want in queries:
        r = query(key, "cidr:%s" % fixed)
        if want is None:
            assert (r.returncode, r.stdout, r.stderr) == (1, "", ""), key
        else:
            assert (r.returncode, r.stdout, r.stderr) == (0, want + "\n", ""), key


def test_postfix_cidr_queries_cover_the_in_file():
    """dict_cidr.in is the query list the .ref answers: nothing is lost."""
    keys = [l[len("get "):] for l in (DATA / "dict_cidr.in").read_text().splitlines() if l.startswith("get ")]
    _, queries = parse_ref(DATA / "dict_cidr.ref")
    assert keys == [k for k, _ in queries]


def test_postfix_cidr_file_values_unsupported():
    """dict_cidr_file runs with Postfix's src_rhs_is_file flag (a result
    names a file whose base64 content is the value), a feature moat does
    not have (docs/compatibility.md); the plain reading of its map works."""
    r = query("1.1.1.1", "cidr:%s" % (DATA / "dict_cidr_file.map"))
    assert (r.returncode, r.stdout) == (0, "dict_cidr_file1\n")
