"""XFORWARD (Postfix's XFORWARD_README) through a live moat.

A content filter that re-injects mail tells moat, with XFORWARD, about the
client it received the message from.  What is checked is what a
postmaster sees: the EHLO keyword (only for smtpd_authorized_xforward_hosts),
the replies (250, 501, 503, 550), the queue file's client attributes (a
HOLD action keeps the file in hold/ for reading), the Received: header of
the delivered message, the "ID: client=..., orig_queue_id=...,
orig_client=..." log line, that the attributes last one transaction, and
that they never change what the restrictions decide.
"""
import os
import re
import subprocess

import pytest

from moatlib import LOCAL_CLIENT_RE, check, moat_bin, queued_id, simple_message

AUTHORIZED = "127.0.0.1"
STRANGER = "127.0.0.2"
KEYWORD = "XFORWARD NAME ADDR PROTO HELO SOURCE PORT IDENT"
FWD = "XFORWARD NAME=mx.origin.example ADDR=192.0.2.66 PROTO=ESMTP HELO=helo.origin.example"

SHARED_MAIN = {
    "mynetworks": "127.0.0.1/32",
    "smtpd_authorized_xforward_hosts": "127.0.0.1, 127.0.0.3",
    # The forwarded address is refused here: XFORWARD must not change that
    # the real client (127.0.0.1) is the one the restrictions judge.
    "smtpd_client_restrictions": "check_client_access inline:{192.0.2.66=REJECT}",
    "smtpd_recipient_restrictions":
        "check_recipient_access inline:{held@example.test=HOLD}, permit_mynetworks, reject_unauth_destination",
}


def envelope(data):
    """The queue file's envelope lines as a dict (first value of each key)
    and the content (up to the trailer's length)."""
    head, sep, rest = data.partition(b"\ncontent\n")
    assert sep, data[:300]
    env = {}
    for line in head.decode().splitlines()[1:]:
        k, _, v = line.partition(" ")
        env.setdefault(k, v)
    size = int(data[-30:][9:29])
    return env, rest[:size]


def hold_file(m, qid):
    with open(os.path.join(m.main["queue_directory"], "hold", qid), "rb") as f:
        return envelope(f.read())


def received(content):
    """The first Received: header, unfolded to one line."""
    m = re.search(rb"^Received: .*?(?=^\S)", content, re.M | re.S)
    assert m, content[:400]
    return re.sub(rb"\s+", b" ", m.group(0)).decode().strip()


def send(c, rcpt, subject="xforward"):
    check(c.cmd("MAIL FROM:<a@b.test>"), 250)
    check(c.cmd("RCPT TO:<%s>" % rcpt), 250, what=rcpt)
    check(c.cmd("DATA"), 354)
    c.send(simple_message(subject) + ".\r\n")
    return queued_id(c.reply())


@pytest.fixture(scope="module")
def xm(shared_moat):
    return shared_moat


# ------------------------------------------------------------ who may use it

def test_xforward_announced_only_to_authorized_clients(xm):
    with xm.connect(source=AUTHORIZED) as c:
        lines = c.ehlo().lines
        assert KEYWORD in lines
        # Postfix's place: after VRFY, before ENHANCEDSTATUSCODES
        assert lines.index(KEYWORD) < lines.index("ENHANCEDSTATUSCODES")
        assert not any(l.startswith("XCLIENT") for l in lines)
    with xm.connect(source="127.0.0.3") as c:
        assert KEYWORD in c.ehlo().lines
    with xm.connect(source=STRANGER) as c:
        assert not any("XFORWARD" in l for l in c.ehlo().lines)


def test_xforward_from_a_stranger_is_refused(xm):
    with xm.connect(source=STRANGER) as c:
        c.ehlo()
        check(c.cmd(FWD), 550, "5.7.0", "Error: insufficient authorization")
        # ... and changes nothing: the message carries the real client.
        qid = send(c, "held@example.test")
        c.quit()
    env, content = hold_file(xm, qid)
    assert env["client_addr"] == STRANGER
    assert "192.0.2.66" not in received(content)
    xm.wait_log(r"%s: client=[\w.-]+\[127\.0\.0\.2\]$" % qid)


# ------------------------------------------------------------ the command

def test_xforward_syntax_and_sequence_errors(xm):
    with xm.connect(source=AUTHORIZED) as c:
        c.ehlo()
        check(c.cmd("XFORWARD"), 501, "5.5.4", "Syntax: XFORWARD attribute=value...")
        check(c.cmd("XFORWARD NAME"), 501, "5.5.4", "Error: attribute=value expected")
        check(c.cmd("XFORWARD FOO=bar"), 501, "5.5.4", "Bad XFORWARD attribute name: FOO")
        check(c.cmd("XFORWARD LOGIN=bob"), 501, "5.5.4", "Bad XFORWARD attribute name: LOGIN")
        check(c.cmd("XFORWARD ADDR=not-an-address"), 501, "5.5.4", "Bad ADDR syntax: not-an-address")
        check(c.cmd("XFORWARD NAME=a..b"), 501, "5.5.4", "Bad NAME syntax: a..b")
        check(c.cmd("XFORWARD PORT=99999"), 501, "5.5.4", "Bad PORT syntax: 99999")
        check(c.cmd("XFORWARD HELO=bad+2xtext"), 501, "5.5.4", "Bad HELO syntax: bad+2xtext")
        check(c.cmd("XFORWARD HELO=" + "h" * 256), 501, "5.5.4", "Error: attribute value too long")
        check(c.cmd(FWD), 250, "2.0.0", "Ok")
        check(c.cmd("MAIL FROM:<a@b.test>"), 250)
        check(c.cmd("XFORWARD NAME=late.example"), 503, "5.5.1", "Error: MAIL transaction in progress")
        check(c.cmd("RSET"), 250)
        c.quit()


def test_xforward_values_reach_queue_file_received_and_log(xm):
    with xm.connect(source=AUTHORIZED) as c:
        c.ehlo("filter.test")
        # Incrementally, xtext-encoded, in any case, as Postfix's client may send them.
        check(c.cmd("XFORWARD NAME=mx.origin.example ADDR=192.0.2.66 PORT=40000"), 250)
        check(c.cmd("xforward proto=ESMTP helo=helo+2Eorigin.example source=REMOTE ident=ABC123"), 250)
        qid = send(c, "held@example.test")
        c.quit()
    env, content = hold_file(xm, qid)
    assert env["client_name"] == "mx.origin.example"
    assert env["client_addr"] == "192.0.2.66"
    assert env["helo"] == "helo.origin.example"
    assert env["protocol"] == "ESMTP"
    r = received(content)
    assert r.startswith("Received: from helo.origin.example (mx.origin.example [192.0.2.66]) "
                        "by mx.example.test (moat) with ESMTP id %s for <held@example.test>;" % qid), r
    xm.wait_log(r"smtpd\[\d+\]: %s: client=%s, orig_queue_id=ABC123, orig_client=mx\.origin\.example\[192\.0\.2\.66\]$"
                % (qid, LOCAL_CLIENT_RE))
    xm.wait_log(r"disconnect from %s ehlo=1 xforward=2 mail=1 rcpt=1 data=1 quit=1 commands=7$" % LOCAL_CLIENT_RE)


def test_xforward_unknown_attributes_are_unknown(xm):
    """Whatever the first XFORWARD does not name starts as [UNAVAILABLE]:
    never mixed with the real session's values (XFORWARD_README note 4)."""
    with xm.connect(source=AUTHORIZED) as c:
        c.ehlo("filter.test")
        check(c.cmd("XFORWARD NAME=[UNAVAILABLE] ADDR=192.0.2.7"), 250)
        qid = send(c, "held@example.test")
        c.quit()
    env, content = hold_file(xm, qid)
    assert (env["client_name"], env["client_addr"], env["helo"], env["protocol"]) == \
        ("unknown", "192.0.2.7", "", "unknown")
    # No HELO: the name stands in, as in Postfix.
    assert received(content).startswith("Received: from unknown (unknown [192.0.2.7]) by mx.example.test "
                                        "(moat) with unknown id %s" % qid)
    xm.wait_log(r"%s: client=%s, orig_client=unknown\[192\.0\.2\.7\]$" % (qid, LOCAL_CLIENT_RE))


def test_xforward_local_submission(xm):
    """ADDR=[UNAVAILABLE]: a forwarded local submission; the other client
    attributes are ignored and Received: has no "from" part."""
    with xm.connect(source=AUTHORIZED) as c:
        c.ehlo("filter.test")
        check(c.cmd("XFORWARD NAME=ignored.example ADDR=[UNAVAILABLE] HELO=ignored PROTO=ESMTP"), 250)
        qid = send(c, "held@example.test")
        c.quit()
    env, content = hold_file(xm, qid)
    assert (env["client_name"], env["client_addr"], env["helo"]) == ("unknown", "unknown", "")
    assert received(content).startswith("Received: by mx.example.test (moat) with ESMTP id %s " % qid)


def test_xforward_lasts_one_transaction(xm):
    with xm.connect(source=AUTHORIZED) as c:
        c.ehlo("filter.test")
        check(c.cmd(FWD), 250)
        first = send(c, "held@example.test", "first")
        second = send(c, "held@example.test", "second")       # no XFORWARD: the real client
        check(c.cmd(FWD), 250)
        check(c.cmd("RSET"), 250)                              # RSET ends it too
        third = send(c, "held@example.test", "third")
        check(c.cmd(FWD), 250)
        c.ehlo("filter.test")                                  # and so does EHLO (an implied RSET)
        fourth = send(c, "held@example.test", "fourth")
        c.quit()
    assert hold_file(xm, first)[0]["client_addr"] == "192.0.2.66"
    for qid in (second, third, fourth):
        env, content = hold_file(xm, qid)
        assert env["client_addr"] == "127.0.0.1", qid
        assert env["helo"] == "filter.test"
        assert received(content).startswith("Received: from filter.test (")
    xm.wait_log(r"%s: client=%s$" % (second, LOCAL_CLIENT_RE))


def test_xforward_does_not_change_restrictions(xm):
    """The forwarded address is on a REJECT list; the real client is not,
    so the message goes through and is delivered."""
    with xm.connect(source=AUTHORIZED) as c:
        c.ehlo("filter.test")
        check(c.cmd(FWD), 250)
        qid = send(c, "u@example.test", "restrictions")
        c.quit()
    mail = [x for x in xm.wait_mails("u") if qid.encode() in x]
    assert mail, "message %s not delivered" % qid
    assert b"Received: from helo.origin.example (mx.origin.example [192.0.2.66])\n\tby mx.example.test (moat)" \
        in mail[0]


def test_xforward_pipelined_with_the_transaction(xm):
    """PIPELINING: XFORWARD may travel in one group with MAIL and RCPT."""
    with xm.connect(source=AUTHORIZED) as c:
        c.ehlo("filter.test")
        c.send(FWD + "\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<held@example.test>\r\nDATA\r\n")
        for code in (250, 250, 250, 354):
            check(c.reply(), code)
        c.send(simple_message("pipelined") + ".\r\n")
        qid = queued_id(c.reply())
        c.quit()
    assert hold_file(xm, qid)[0]["client_name"] == "mx.origin.example"


def test_xforward_list_forms(moat_factory):
    """A mynetworks-style list: networks, "!" exclusions, tables."""
    m = moat_factory(main={"smtpd_authorized_xforward_hosts": "!127.0.0.5, 127.0.0.0/29, inline:{127.0.0.9=yes}"})
    for src, ok in (("127.0.0.4", True), ("127.0.0.5", False), ("127.0.0.9", True), ("127.0.0.10", False)):
        with m.connect(source=src) as c:
            assert (KEYWORD in c.ehlo().lines) == ok, src
            check(c.cmd(FWD), 250 if ok else 550, what=src)


def test_xforward_hidden_by_discard_ehlo_keywords_still_works(moat_factory):
    """As Postfix: smtpd_discard_ehlo_keywords hides the keyword, not the command."""
    m = moat_factory(main={"smtpd_authorized_xforward_hosts": "127.0.0.1",
                           "smtpd_discard_ehlo_keywords": "xforward"})
    with m.connect(source=AUTHORIZED) as c:
        lines = c.ehlo().lines
        assert not any("XFORWARD" in l for l in lines) and "PIPELINING" in lines
        check(c.cmd(FWD), 250, "2.0.0", "Ok")


def config_check(m):
    """`moat config check` on m's files: (exit status, stderr)."""
    m.write_config()
    p = subprocess.run([moat_bin(), "config", "check", "-c", m.dir], capture_output=True, text=True,
                       timeout=30, stdin=subprocess.DEVNULL)
    return p.returncode, p.stderr


def test_xforward_bad_list_is_a_load_error(moat_factory):
    m = moat_factory(main={"smtpd_authorized_xforward_hosts": "127.0.0.0/33"}, start=False)
    rc, err = config_check(m)
    assert rc == 1, err
    assert re.search(r"main\.cf:\d+: smtpd_authorized_xforward_hosts: ", err), err
