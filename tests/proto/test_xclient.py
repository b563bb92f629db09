"""XCLIENT (Postfix's XCLIENT_README) through a live moat.

An authorized proxy or test tool replaces the client's identity for the
rest of the session: restrictions, logs, Received: and the queue file all
see the new client, and the session starts over with a new 220 greeting.
Checked: the EHLO keyword and 550 for others (smtpd_authorized_xclient_hosts,
evaluated again for the new identity), syntax and sequence errors, that a
check_client_access entry for the new address now decides, the
[UNAVAILABLE]/[TEMPUNAVAIL] name states, LOGIN for permit_sasl_authenticated,
smtpd_delay_reject = no (the refusal replaces the greeting), and the queue
file and log lines of a message sent after XCLIENT.
"""
import os
import re

import pytest

from moatlib import LOCAL_CLIENT_RE, Client, check, queued_id, simple_message

AUTHORIZED = "127.0.0.1"
STRANGER = "127.0.0.2"
KEYWORD = "XCLIENT NAME ADDR PROTO HELO REVERSE_NAME PORT LOGIN DESTADDR DESTPORT"
GREETING = "mx.example.test ESMTP moat"

SHARED_MAIN = {
    "mynetworks": "127.0.0.1/32",
    "smtpd_authorized_xclient_hosts": "127.0.0.1, 127.0.0.3, 198.51.100.7",
    "smtpd_client_restrictions": "check_client_access inline:{ {192.0.2.66=REJECT go away} }",
    "smtpd_recipient_restrictions":
        "check_recipient_access inline:{held@example.test=HOLD}, permit_sasl_authenticated, "
        "check_recipient_access inline:{ {members@example.test=REJECT members only} }, "
        "permit_mynetworks, reject_unauth_destination",
}


def shared_setup(m):
    m.names_port = m.alloc_port()
    m.early_port = m.alloc_port()
    m.master_extra += [
        # The client's name decides here.
        "127.0.0.1:%d inet n - n - - smtpd" % m.names_port,
        "  -o smtpd_client_restrictions=reject_unknown_client_hostname",
        "  -o unknown_client_reject_code=550",
        # Client restrictions at connect: XCLIENT's greeting is where they answer.
        "127.0.0.1:%d inet n - n - - smtpd" % m.early_port,
        "  -o smtpd_delay_reject=no",
    ]


@pytest.fixture(scope="module")
def xm(shared_moat):
    shared_moat.wait_listening(port=shared_moat.names_port)
    shared_moat.wait_listening(port=shared_moat.early_port)
    return shared_moat


def xclient(c, args, code=220):
    r = c.cmd("XCLIENT " + args)
    check(r, code, what="XCLIENT " + args)
    if code == 220:
        assert r.text == GREETING, r
    return r


def hold_envelope(m, qid):
    with open(os.path.join(m.main["queue_directory"], "hold", qid), "rb") as f:
        data = f.read()
    head, _, rest = data.partition(b"\ncontent\n")
    env = {}
    for line in head.decode().splitlines()[1:]:
        k, _, v = line.partition(" ")
        env.setdefault(k, v)
    return env, rest


# ------------------------------------------------------------ who may use it

def test_xclient_announced_only_to_authorized_clients(xm):
    with xm.connect(source=AUTHORIZED) as c:
        lines = c.ehlo().lines
        assert KEYWORD in lines
        assert lines.index(KEYWORD) < lines.index("ENHANCEDSTATUSCODES")
        assert not any(l.startswith("XFORWARD") for l in lines)
    with xm.connect(source=STRANGER) as c:
        assert not any("XCLIENT" in l for l in c.ehlo().lines)
        check(c.cmd("XCLIENT ADDR=192.0.2.1"), 550, "5.7.0", "Error: insufficient authorization")
        # still itself
        check(c.cmd("MAIL FROM:<a@b.test>"), 250)
        check(c.cmd("RCPT TO:<members@example.test>"), 554)
        c.quit()
    xm.wait_log(r"NOQUEUE: reject: RCPT from [\w.-]+\[127\.0\.0\.2\]: 554 5\.7\.1 <members@example\.test>: "
                r"Recipient address rejected: members only;")


def test_xclient_authorization_follows_the_new_identity(xm):
    """Once the session is someone else, that someone must be authorized."""
    with xm.connect(source=AUTHORIZED) as c:
        c.ehlo()
        xclient(c, "ADDR=192.0.2.9")
        assert not any("XCLIENT" in l for l in c.ehlo().lines)
        check(c.cmd("XCLIENT ADDR=127.0.0.1"), 550, "5.7.0", "Error: insufficient authorization")
    with xm.connect(source=AUTHORIZED) as c:
        xclient(c, "ADDR=198.51.100.7")          # an address that is itself authorized
        assert KEYWORD in c.ehlo().lines
        xclient(c, "ADDR=192.0.2.10")


def test_xclient_syntax_and_sequence_errors(xm):
    with xm.connect(source=AUTHORIZED) as c:
        c.ehlo()
        check(c.cmd("XCLIENT"), 501, "5.5.4", "Syntax: XCLIENT attribute=value...")
        check(c.cmd("XCLIENT ADDR"), 501, "5.5.4", "Error: attribute=value expected")
        check(c.cmd("XCLIENT IDENT=X"), 501, "5.5.4", "Bad XCLIENT attribute name: IDENT")
        check(c.cmd("XCLIENT ADDR=300.1.1.1"), 501, "5.5.4", "Bad ADDR syntax: 300.1.1.1")
        check(c.cmd("XCLIENT NAME=192.0.2.1"), 501, "5.5.4", "Bad NAME syntax: 192.0.2.1")
        check(c.cmd("XCLIENT PROTO=LMTP"), 501, "5.5.4", "Bad PROTO syntax: LMTP")
        check(c.cmd("XCLIENT NAME=ok.example ADDR=bad"), 501)   # nothing of it applies
        check(c.cmd("MAIL FROM:<a@b.test>"), 250)
        check(c.cmd("XCLIENT ADDR=192.0.2.1"), 503, "5.5.1", "Error: MAIL transaction in progress")
        check(c.cmd("RCPT TO:<held@example.test>"), 250)
        check(c.cmd("DATA"), 354)
        c.send(simple_message("still itself") + ".\r\n")
        qid = queued_id(c.reply())
        c.quit()
    env, _ = hold_envelope(xm, qid)
    assert env["client_addr"] == "127.0.0.1" and env["client_name"] != "ok.example", env


def test_xclient_ends_a_command_group(xm):
    """A new greeting follows XCLIENT: a client that pipelines past it is
    out of step (smtpd_forbid_unauth_pipelining)."""
    with xm.connect(source=AUTHORIZED) as c:
        c.ehlo()
        c.send("XCLIENT ADDR=192.0.2.1\r\nEHLO x.test\r\n")
        check(c.reply(), 554, "5.5.0", "Error: SMTP protocol synchronization")
        assert c.wait_closed()


# ------------------------------------------------------------ what it changes

def test_xclient_new_identity_everywhere(xm):
    with xm.connect(source=AUTHORIZED) as c:
        c.ehlo("proxy.test")
        xclient(c, "NAME=mail.origin.example ADDR=192.0.2.77 PORT=4000 HELO=origin+2Ehelo PROTO=ESMTP")
        # HELO and PROTO came with XCLIENT: a transaction may start at once.
        check(c.cmd("MAIL FROM:<a@b.test>"), 250)
        check(c.cmd("RCPT TO:<held@example.test>"), 250)
        check(c.cmd("DATA"), 354)
        c.send(simple_message("xclient") + ".\r\n")
        qid = queued_id(c.reply())
        c.quit()
    env, content = hold_envelope(xm, qid)
    assert (env["client_name"], env["client_addr"], env["helo"], env["protocol"]) == \
        ("mail.origin.example", "192.0.2.77", "origin.helo", "ESMTP")
    assert content.startswith(b"Received: from origin.helo (mail.origin.example [192.0.2.77])\n"
                              b"\tby mx.example.test (moat) with ESMTP id " + qid.encode())
    xm.wait_log(r"smtpd\[\d+\]: xclient from %s: client=mail\.origin\.example\[192\.0\.2\.77\]$" % LOCAL_CLIENT_RE)
    xm.wait_log(r"smtpd\[\d+\]: %s: client=mail\.origin\.example\[192\.0\.2\.77\]$" % qid)
    xm.wait_log(r"disconnect from mail\.origin\.example\[192\.0\.2\.77\] ehlo=1 xclient=1 mail=1 rcpt=1 "
                r"data=1 quit=1 commands=6$")


def test_xclient_changes_the_restriction_outcome(xm):
    with xm.connect(source=AUTHORIZED) as c:
        c.ehlo()
        xclient(c, "NAME=[UNAVAILABLE] ADDR=192.0.2.66")
        c.ehlo()
        check(c.cmd("MAIL FROM:<a@b.test>"), 250)
        r = c.cmd("RCPT TO:<u@example.test>")
        check(r, 554, "5.7.1", "<unknown[192.0.2.66]>: Client host rejected: go away")
        c.quit()
    with xm.connect(source=AUTHORIZED) as c:
        # No longer in mynetworks either: a member-only address is refused.
        xclient(c, "NAME=[UNAVAILABLE] ADDR=192.0.2.67")
        c.ehlo()
        check(c.cmd("MAIL FROM:<a@b.test>"), 250)
        check(c.cmd("RCPT TO:<members@example.test>"), 554, "5.7.1",
              "<members@example.test>: Recipient address rejected: members only")
        c.quit()
    xm.wait_log(r"NOQUEUE: reject: RCPT from unknown\[192\.0\.2\.66\]: 554 5\.7\.1 <unknown\[192\.0\.2\.66\]>: "
                r"Client host rejected: go away; from=<a@b\.test> to=<u@example\.test> proto=ESMTP helo=<client\.test>")


def test_xclient_login_is_the_sasl_login(xm):
    with xm.connect(source=AUTHORIZED) as c:
        xclient(c, "NAME=[UNAVAILABLE] ADDR=192.0.2.68")
        c.ehlo()
        check(c.cmd("MAIL FROM:<a@b.test>"), 250)
        check(c.cmd("RCPT TO:<members@example.test>"), 554)
        c.quit()
    with xm.connect(source=AUTHORIZED) as c:
        xclient(c, "NAME=[UNAVAILABLE] ADDR=192.0.2.68 LOGIN=alice+40example.test")
        c.ehlo()
        check(c.cmd("MAIL FROM:<a@b.test>"), 250)
        check(c.cmd("RCPT TO:<members@example.test>"), 250)   # permit_sasl_authenticated
        c.quit()
    with xm.connect(source=AUTHORIZED) as c:
        # 198.51.100.7 may use XCLIENT itself, so a second one can take the login away.
        xclient(c, "ADDR=198.51.100.7 LOGIN=alice")
        xclient(c, "LOGIN=[UNAVAILABLE]")
        c.ehlo()
        check(c.cmd("MAIL FROM:<a@b.test>"), 250)
        check(c.cmd("RCPT TO:<members@example.test>"), 554)
        c.quit()
    xm.wait_log(r"xclient from %s: client=unknown\[192\.0\.2\.68\], login=alice@example\.test$" % LOCAL_CLIENT_RE)


def test_xclient_keeps_what_it_does_not_name(xm):
    """As Postfix: ADDR alone keeps the name the session had (send NAME
    too when the name matters)."""
    with xm.connect(source=AUTHORIZED) as c:
        xclient(c, "NAME=first.example ADDR=198.51.100.7")
        xclient(c, "ADDR=192.0.2.70")
        c.quit()
    xm.wait_log(r"xclient from first\.example\[198\.51\.100\.7\]: client=first\.example\[192\.0\.2\.70\]$")


@pytest.mark.parametrize("name,code", [("good.example", 250), ("[UNAVAILABLE]", 550), ("[TEMPUNAVAIL]", 450)])
def test_xclient_name_states(xm, name, code):
    """NAME is taken as given (no lookup): a name, unknown for good, or
    unknown for now (reject_unknown_client_hostname's 4xx)."""
    with Client(xm.names_port, source=AUTHORIZED) as c:
        xclient(c, "NAME=%s ADDR=192.0.2.5" % name)
        c.ehlo()
        check(c.cmd("MAIL FROM:<a@b.test>"), 250)
        r = c.cmd("RCPT TO:<u@example.test>")
        check(r, code)
        if code != 250:
            assert r.msg == "Client host rejected: cannot find your hostname, [192.0.2.5]", r
        c.quit()


def test_xclient_with_delay_reject_no(xm):
    """The client restrictions run at the new greeting: a refused client
    gets the refusal instead of 220, then 503 for everything but QUIT."""
    with Client(xm.early_port, source=AUTHORIZED) as c:
        check(c.greeting, 220)
        c.ehlo()
        r = c.cmd("XCLIENT NAME=[UNAVAILABLE] ADDR=192.0.2.66")
        check(r, 554, "5.7.1", "<unknown[192.0.2.66]>: Client host rejected: go away")
        check(c.cmd("EHLO x.test"), 503, "5.7.0")
        c.quit()
    with Client(xm.early_port, source=AUTHORIZED) as c:
        xclient(c, "ADDR=192.0.2.99")                   # a client the list lets through
        c.ehlo()
        c.quit()
    xm.wait_log(r"NOQUEUE: reject: CONNECT from unknown\[192\.0\.2\.66\]: 554 5\.7\.1 <unknown\[192\.0\.2\.66\]>: "
                r"Client host rejected: go away; proto=SMTP")


def test_xclient_ipv6_and_destination(xm):
    with xm.connect(source=AUTHORIZED) as c:
        xclient(c, "NAME=v6.example ADDR=IPV6:2001:DB8::5 DESTADDR=192.0.2.25 DESTPORT=587")
        c.quit()
    xm.wait_log(r"xclient from %s: client=v6\.example\[2001:db8::5\]$" % LOCAL_CLIENT_RE)
    xm.wait_log(r"disconnect from v6\.example\[2001:db8::5\] xclient=1 quit=1 commands=2$")
