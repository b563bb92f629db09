"""`moat map build` and `moat map query` through the real binary.

The binary is $MOAT_BIN (default build/asan/moat).  Every table lives in
pytest's tmp_path; nothing listens on the network.  The concurrency test
starts `moat map build` processes and waits for each of them.
"""
import os
import stat
import subprocess

import pytest

from moatlib import SANITIZER_MARKERS, moat_bin

MOAT = moat_bin()


def moat(*args, cwd=None, check_sanitizers=True):
    r = subprocess.run([MOAT, "map", *args], capture_output=True, text=True, cwd=cwd, timeout=60)
    if check_sanitizers:
        for marker in SANITIZER_MARKERS:
            assert marker not in r.stderr, r.stderr
    return r


@pytest.fixture(autouse=True)
def _map_command_present():
    if not os.access(MOAT, os.X_OK):
        pytest.fail("moat binary %s not found; run `make build/asan/moat`" % MOAT)
    r = subprocess.run([MOAT, "map", "--help"], capture_output=True, text=True, timeout=60)
    if 'unknown command "map"' in r.stderr:
        pytest.skip("this moat binary has no `map` command yet (main.c dispatch to cmd_map)")


SOURCE = (
    "# access table\n"
    "Example.COM        OK\n"
    "spam.example       REJECT go away\n"
    "multi              first part\n"
    "   second part\n"
    "user@Example.NET   DISCARD\n"
    "example.com        second entry, ignored\n"
)


def write(tmp_path, name, text, mode=None):
    p = tmp_path / name
    p.write_text(text)
    if mode is not None:
        os.chmod(p, mode)
    return str(p)


@pytest.mark.parametrize("typ", ["hash", "btree", "lmdb"])
def test_build_then_query(tmp_path, typ):
    src = write(tmp_path, "access", SOURCE)
    r = moat("build", src)
    assert r.returncode == 0, r.stderr
    assert r.stdout == ""
    # The duplicate is a warning naming both lines; the first wins.
    assert r.stderr == ("%s:7: warning: duplicate entry \"example.com\": the first one (line 2) is used\n"
                        % src)
    assert os.path.exists(src + ".lmdb")
    r = moat("query", "EXAMPLE.com", "%s:%s" % (typ, src))
    assert (r.returncode, r.stdout, r.stderr) == (0, "OK\n", "")
    r = moat("query", "multi", "%s:%s" % (typ, src))
    assert (r.returncode, r.stdout) == (0, "first part   second part\n")
    r = moat("query", "-t", "multi", "%s:%s" % (typ, src))
    assert (r.returncode, r.stdout) == (0, "%s:4\n" % src)
    r = moat("query", "nobody.example", "%s:%s" % (typ, src))
    assert (r.returncode, r.stdout, r.stderr) == (1, "", "")


def test_build_leaves_only_the_table(tmp_path):
    src = write(tmp_path, "access", SOURCE, mode=0o640)
    assert moat("build", src).returncode == 0
    assert sorted(os.listdir(tmp_path)) == ["access", "access.lmdb"]
    # The table gets the source's read permissions, whatever the umask.
    assert stat.S_IMODE(os.stat(src + ".lmdb").st_mode) == 0o640
    # Querying creates no lock file next to it either.
    assert moat("query", "multi", "hash:" + src).returncode == 0
    assert sorted(os.listdir(tmp_path)) == ["access", "access.lmdb"]


def test_build_type_prefix_and_relative_names(tmp_path):
    write(tmp_path, "t", "k v\n")
    r = moat("build", "hash:t", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    r = moat("query", "k", "btree:t", cwd=tmp_path)
    assert (r.returncode, r.stdout) == (0, "v\n")
    r = moat("build", "cidr:t", cwd=tmp_path)
    assert r.returncode == 1
    assert "only hash:, btree: and lmdb: tables are built" in r.stderr


def test_build_errors_name_file_and_line(tmp_path):
    src = write(tmp_path, "bad", "good value\n  \n  orphan? no: continues good\nnovalue\n\"open quote x\n")
    old = write(tmp_path, "bad.lmdb", "")
    os.unlink(old)
    r = moat("build", src)
    assert r.returncode == 1
    assert r.stderr == ("%s:4: expected format: key whitespace value\n"
                        "%s:5: unbalanced '\"' in key\n" % (src, src))
    assert not os.path.exists(src + ".lmdb")
    assert sorted(os.listdir(tmp_path)) == ["bad"]
    # Several files: the good one is built, the exit status reports the bad.
    good = write(tmp_path, "good", "a b\n")
    r = moat("build", src, good)
    assert r.returncode == 1
    assert os.path.exists(good + ".lmdb")
    r = moat("build", str(tmp_path / "missing"))
    assert r.returncode == 1
    assert "missing: cannot open: No such file or directory" in r.stderr


def test_query_unbuilt_table(tmp_path):
    src = write(tmp_path, "t", "k v\n")
    r = moat("query", "k", "hash:" + src)
    assert r.returncode == 2
    assert r.stdout == ""
    assert r.stderr == "%s.lmdb: no such file: run `moat map build %s`\n" % (src, src)


def test_query_text_types(tmp_path):
    src = write(tmp_path, "t", "Key value one\n")
    r = moat("query", "KEY", "texthash:" + src)
    assert (r.returncode, r.stdout) == (0, "value one\n")
    r = moat("query", "-t", "key", "texthash:" + src)
    assert (r.returncode, r.stdout) == (0, "%s:1\n" % src)
    nets = write(tmp_path, "nets", "127.0.0.0/8 loopback\n::1 v6 loopback\n")
    r = moat("query", "127.0.0.2", "cidr:" + nets)
    assert (r.returncode, r.stdout) == (0, "loopback\n")
    r = moat("query", "-t", "::1", "cidr:" + nets)
    assert (r.returncode, r.stdout) == (0, "%s:2\n" % nets)
    r = moat("query", "192.0.2.1", "cidr:" + nets)
    assert r.returncode == 1
    r = moat("query", "b", "inline:{a=1, { b = two words }}")
    assert (r.returncode, r.stdout) == (0, "two words\n")
    r = moat("query", "-t", "b", "inline:{a=1, { b = two words }}")
    assert (r.returncode, r.stdout) == (0, "inline:{a=1, { b = two words }}\n")
    r = moat("query", "anything", "static:{ 554 no }")
    assert (r.returncode, r.stdout) == (0, "554 no\n")


def test_query_several_tables_first_found(tmp_path):
    src = write(tmp_path, "t", "a from-file\n")
    r = moat("query", "a", "inline:{b=1}", "texthash:" + src, "static:last")
    assert (r.returncode, r.stdout) == (0, "from-file\n")
    r = moat("query", "z", "inline:{b=1}", "texthash:" + src)
    assert r.returncode == 1


def test_query_bad_tables(tmp_path):
    bad = write(tmp_path, "bad.cidr", "10.0.0.1/8 x\n")
    r = moat("query", "10.0.0.1", "cidr:" + bad)
    assert r.returncode == 2
    assert r.stderr == ('%s:1: non-null host address bits in "10.0.0.1/8", '
                        'perhaps you should use "10.0.0.0/8" instead\n' % bad)
    r = moat("query", "k", "nosuch:x")
    assert r.returncode == 2
    assert 'unsupported table type "nosuch"' in r.stderr
    r = moat("query", "k", "inline:{a}")
    assert (r.returncode, r.stderr) == (2, "inline:{a}: missing '=' in key=value item\n")


def test_query_corrupt_table(tmp_path):
    src = write(tmp_path, "t", "k v\n")
    write(tmp_path, "t.lmdb", "not an lmdb file" * 1000)
    r = moat("query", "k", "lmdb:" + src)
    assert r.returncode == 2
    assert r.stderr.startswith("%s.lmdb: cannot open: " % src)


def test_usage(tmp_path):
    r = moat("--help")
    assert r.returncode == 0
    assert "moat map build FILE" in r.stdout and "moat map query" in r.stdout
    r = moat("build", "--help")
    assert (r.returncode, r.stdout.splitlines()[0]) == (0, "usage: moat map build FILE...")
    r = moat("query", "--help")
    assert r.returncode == 0
    assert moat("query", "onlykey").returncode == 2
    assert moat("build").returncode == 2
    assert moat("frobnicate").returncode == 2
    assert moat("query", "-x", "k", "static:a").returncode == 2


def test_rebuild_while_querying(tmp_path):
    """Builds replace the table by rename: a query started at any moment
    sees the old table or the new one, complete, never a broken one."""
    src = str(tmp_path / "t")
    tables = []
    for gen in range(2):
        tables.append("".join("key%d gen%d-%d\n" % (i, gen, i) for i in range(2000)))
    with open(src, "w") as f:
        f.write(tables[0])
    assert moat("build", src).returncode == 0
    builders = []
    try:
        for n in range(8):
            with open(src, "w") as f:
                f.write(tables[(n + 1) % 2])
            builders.append(subprocess.Popen([MOAT, "map", "build", src],
                                             stdout=subprocess.PIPE, stderr=subprocess.PIPE))
            for _ in range(3):
                r = moat("query", "key1999", "hash:" + src)
                assert r.returncode == 0, r.stderr
                assert r.stdout in ("gen0-1999\n", "gen1-1999\n")
            # One build at a time per source file, as an operator would.
            out, err = builders[-1].communicate(timeout=60)
            assert builders[-1].returncode == 0, err
    finally:
        for p in builders:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert sorted(os.listdir(tmp_path)) == ["t", "t.lmdb"]
