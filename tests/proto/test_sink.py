"""The test receiver (tests/proto/sink.py) does what its script says.

Delivery tests count on the sink's counters and records, so these pin
them down with clients nobody here wrote (smtplib), plus the raw client
of moatlib where smtplib cannot go (LMTP's per-recipient replies,
garbage, dropped connections).  No moat daemon is involved.
"""

import smtplib
import socket
import time

import pytest

from moatlib import Client, ConnectionClosed, ProtocolError, wait_for
from sink import Sink, SmtpSink, free_port_for

MSG = "From: a@b.test\r\nSubject: hi\r\n\r\nline one\r\n.starts with a dot\r\n"


@pytest.fixture
def sink(sink_factory):
    return sink_factory()


def smtp(s, **kw):
    c = smtplib.SMTP(s.host, s.port, timeout=10, **kw)
    return c


def test_accepts_and_records_a_message(sink):
    c = smtp(sink)
    c.ehlo("mx.example.test")
    c.sendmail("a@b.test", ["x@y.test", "z@y.test"], MSG,
               mail_options=["BODY=8BITMIME", "SMTPUTF8"])
    c.quit()
    m = sink.wait_messages(1)[0]
    assert m["mail_from"] == "a@b.test"
    assert m["rcpt_tos"] == ["x@y.test", "z@y.test"]
    assert "BODY=8BITMIME" in m["mail_options"] and "SMTPUTF8" in m["mail_options"]
    assert any(o.upper().startswith("SIZE=") for o in m["mail_options"])   # smtplib: size=N
    assert m["data"] == MSG.encode()          # CRLF lines, the leading dot unstuffed
    assert m["ehlo"] == "mx.example.test" and m["peer"] == "127.0.0.1"
    assert m["session"] == 1 and m["transaction"] == 1 and time.time() - m["time"] < 600
    st = sink.stats()
    assert st["sessions"] == 1 and st["transactions"] == 1 and st["accepted"] == 1
    assert st["rcpt_replies"] == {"250": 2}
    assert st["current"] == 0 and st["max_concurrent"] == 1
    verbs = [c.split()[0] for _, c in sink.commands()]
    assert verbs == ["ehlo", "mail", "rcpt", "rcpt", "data", "quit"]


def test_default_ehlo_and_queue_id(sink):
    c = Client(sink.port)
    assert c.greeting.code == 220 and c.greeting.text == "sink.test ESMTP"
    r = c.cmd("EHLO me.test")
    assert r.lines == ["sink.test", "PIPELINING", "SIZE 10240000", "8BITMIME", "SMTPUTF8",
                       "ENHANCEDSTATUSCODES", "XFORWARD NAME ADDR PROTO HELO"]
    c.expect("MAIL FROM:<>", 250)
    c.expect("RCPT TO:<u@x.test>", 250)
    c.expect("DATA", 354)
    c.send("a\r\n.\r\n")
    r = c.reply()
    assert str(r) == "250 2.0.0 Ok: queued as SINK1"
    c.quit()
    assert sink.messages()[0]["mail_from"] == ""


def test_per_recipient_replies_and_counts(sink):
    sink.set_script({"rcpt": {"bad@x.test": "550 5.1.1 no such user",
                              "slow@x.test": "450 4.2.0 try later", "*": "250 2.1.5 Ok"}})
    c = smtp(sink)
    refused = c.sendmail("a@b.test", ["bad@x.test", "ok@x.test", "slow@x.test", "Ok2@x.test"], MSG)
    c.quit()
    assert refused == {"bad@x.test": (550, b"5.1.1 no such user"),
                       "slow@x.test": (450, b"4.2.0 try later")}
    assert sink.wait_messages(1)[0]["rcpt_tos"] == ["ok@x.test", "Ok2@x.test"]
    assert sink.stats()["rcpt_replies"] == {"250": 2, "450": 1, "550": 1}


def test_rcpt_keys_match_without_case(sink):
    sink.set_script({"rcpt": {"Bad@X.test": "550 5.1.1 no"}})
    c = smtp(sink)
    c.ehlo()
    c.mail("a@b.test")
    assert c.rcpt("bad@x.TEST")[0] == 550
    assert c.rcpt("good@x.test")[0] == 250
    c.quit()


def test_mail_reply_and_sequence_errors(sink):
    sink.set_script({"mail": {"spam@b.test": "550 5.7.1 go away", "*": "250 2.1.0 Ok"}})
    c = Client(sink.port)
    c.ehlo()
    assert c.cmd("RCPT TO:<x@y.test>").code == 503
    assert c.cmd("DATA").code == 503
    assert c.cmd("MAIL FROM:<spam@b.test>").code == 550
    assert c.cmd("MAIL FROM:<a@b.test>").code == 250
    assert c.cmd("MAIL FROM:<a@b.test>").code == 503
    assert c.cmd("DATA").code == 554                   # no valid recipients
    assert c.cmd("RSET").code == 250
    assert c.cmd("VRFY x").code == 502
    c.quit()
    st = sink.stats()
    assert st["rsets"] == 1 and st["transactions"] == 0 and st["in_transaction"] == 0


def test_fail_first_then_accept(sink):
    sink.set_script({"fail_first": 2})
    for i in range(3):
        c = smtp(sink)
        if i < 2:
            with pytest.raises(smtplib.SMTPDataError) as e:
                c.sendmail("a@b.test", ["x@y.test"], MSG)
            assert e.value.smtp_code == 451
        else:
            c.sendmail("a@b.test", ["x@y.test"], MSG)
        c.quit()
    msgs = sink.wait_messages(1)
    assert [m["transaction"] for m in msgs] == [3]
    st = sink.stats()
    assert st["transactions"] == 3 and st["accepted"] == 1
    assert st["data_end_replies"] == {"451": 2, "250": 1}


def test_new_script_counts_fail_first_afresh(sink):
    sink.set_script({"fail_first": 1})
    c = smtp(sink)
    with pytest.raises(smtplib.SMTPDataError):
        c.sendmail("a@b.test", ["x@y.test"], MSG)
    c.quit()
    sink.set_script({"fail_first": 1, "data_end": "250 2.0.0 fine %(n)d"})
    for code in (451, 250):
        c = smtp(sink)
        c.ehlo()
        c.mail("a@b.test")
        c.rcpt("x@y.test")
        assert c.data(MSG)[0] == code
        c.quit()
    assert sink.messages()[0]["replies"] == ["250 2.0.0 fine 3"]


def test_data_end_and_multiline_replies(sink):
    sink.set_script({"data_end": "550-5.7.1 first line\n550 5.7.1 second line",
                     "greeting": "220-sink.test hello\n220 sink.test ESMTP"})
    c = Client(sink.port)
    assert c.greeting.lines == ["sink.test hello", "sink.test ESMTP"]
    c.ehlo()
    c.expect("MAIL FROM:<a@b.test>", 250)
    c.expect("RCPT TO:<x@y.test>", 250)
    c.expect("DATA", 354)
    c.send("x\r\n.\r\n")
    r = c.reply()
    assert r.code == 550 and r.lines == ["5.7.1 first line", "5.7.1 second line"]
    c.quit()
    assert sink.messages() == []


def test_xforward_recorded_per_transaction(sink):
    c = Client(sink.port)
    c.ehlo()
    c.expect("XFORWARD NAME=client.test ADDR=192.0.2.1", 250)
    c.expect("XFORWARD PROTO=ESMTP HELO=client.test", 250)
    for i in range(2):
        c.expect("MAIL FROM:<a@b.test>", 250)
        c.expect("RCPT TO:<x@y.test>", 250)
        c.expect("DATA", 354)
        c.send("m%d\r\n.\r\n" % i)
        assert c.reply().code == 250
    c.quit()
    first, second = sink.wait_messages(2)
    assert first["xforward"] == {"NAME": "client.test", "ADDR": "192.0.2.1", "PROTO": "ESMTP",
                                 "HELO": "client.test"}
    assert second["xforward"] == {}           # reset after each transaction


def test_xforward_refused_when_not_offered(sink):
    sink.set_script({"ehlo_extensions": ["PIPELINING"]})
    c = Client(sink.port)
    r = c.ehlo()
    assert r.lines == ["sink.test", "PIPELINING"]
    assert c.cmd("XFORWARD NAME=x").code == 502
    c.quit()


def test_no_ehlo_falls_back_to_helo(sink):
    sink.set_script({"no_ehlo": True})
    c = smtp(sink)
    c.sendmail("a@b.test", ["x@y.test"], MSG)     # smtplib retries with HELO
    c.quit()
    m = sink.wait_messages(1)[0]
    assert m["ehlo_verb"] == "HELO"
    verbs = [x.split()[0].upper() for _, x in sink.commands()]
    assert verbs[:2] == ["EHLO", "HELO"]


def test_size_limit_enforced(sink):
    sink.set_script({"ehlo_extensions": ["SIZE 100"]})
    c = smtp(sink)
    with pytest.raises(smtplib.SMTPSenderRefused) as e:
        c.sendmail("a@b.test", ["x@y.test"], "x" * 200)  # smtplib declares SIZE=200
    assert e.value.smtp_code == 552
    c.quit()
    raw = Client(sink.port)                      # no SIZE= declared: refused after the dot
    raw.ehlo()
    raw.expect("MAIL FROM:<a@b.test>", 250)
    raw.expect("RCPT TO:<x@y.test>", 250)
    raw.expect("DATA", 354)
    raw.send("y" * 150 + "\r\n.\r\n")
    assert str(raw.reply()) == "552 5.3.4 Message size exceeds fixed limit"
    raw.quit()


def test_greeting_refusal(sink):
    sink.set_script({"greeting": "554 5.7.1 go away"})
    with pytest.raises(smtplib.SMTPConnectError):
        smtp(sink)
    c = Client(sink.port)
    assert c.greeting.code == 554
    assert c.cmd("EHLO x").code == 503
    c.quit()


def test_garbage_greeting_and_garbage_at_rcpt(sink):
    sink.set_script({"greeting": "garbage"})
    c = Client(sink.port, greeting=False)
    with pytest.raises(ProtocolError):
        c.reply()
    c.close()
    sink.set_script({"garbage_at": "rcpt"})
    c = Client(sink.port)
    c.ehlo()
    c.expect("MAIL FROM:<a@b.test>", 250)
    c.send("RCPT TO:<x@y.test>\r\n")
    assert c._line() == b"xyz\r\n"
    c.close()


@pytest.mark.parametrize("stage", ["greeting", "ehlo", "mail", "rcpt", "data", "data_end"])
def test_drop(sink, stage):
    sink.set_script({"drop": stage, "drop_first": 1})
    c = Client(sink.port, greeting=False)
    with pytest.raises((ConnectionClosed, OSError)):
        c.reply()          # greeting
        c.cmd("EHLO x")
        c.cmd("MAIL FROM:<a@b.test>")
        c.cmd("RCPT TO:<x@y.test>")
        c.cmd("DATA")
        c.send("Subject: x\r\n\r\n" + "body\r\n" * 1000)
        c.send(".\r\n")
        c.reply()
    c.close()
    wait_for(lambda: sink.stats()["current"] == 0, what="dropped session closed")
    assert sink.stats()["drops"] == 1 and sink.messages() == []
    # drop_first: the next session is answered normally
    s = smtp(sink)
    s.sendmail("a@b.test", ["x@y.test"], MSG)
    s.quit()
    assert len(sink.wait_messages(1)) == 1


def test_delay_before_a_reply(sink):
    sink.set_script({"delay": {"rcpt": 0.5}})
    c = smtp(sink)
    c.ehlo()
    c.mail("a@b.test")
    t0 = time.monotonic()
    c.rcpt("x@y.test")
    waited = time.monotonic() - t0
    c.quit()
    assert waited >= 0.5        # the script's delay is a lower bound, not a timing claim


def test_concurrency_is_counted_exactly(sink):
    a, b, c = smtp(sink), smtp(sink), smtp(sink)
    wait_for(lambda: sink.stats()["current"] == 3, what="three sessions")
    a.quit()
    d = smtp(sink)          # one closed with QUIT, one opened: still three
    b.close()               # no QUIT: the sink must notice the hang-up
    e = smtp(sink)
    st = sink.stats()
    assert st["max_concurrent"] == 3, st
    for x in (c, d, e):
        x.quit()
    wait_for(lambda: sink.stats()["current"] == 0, what="all closed")
    assert sink.stats()["sessions"] == 5


def test_concurrent_transactions_counted(sink):
    a, b = smtp(sink), smtp(sink)
    for x in (a, b):
        x.ehlo()
        x.mail("a@b.test")
    assert sink.stats()["max_concurrent_transactions"] == 2
    a.rset()
    b.rcpt("x@y.test")
    b.data(MSG)
    assert sink.stats()["in_transaction"] == 0
    a.quit()
    b.quit()


def test_pipelined_commands_are_seen(sink):
    c = Client(sink.port)
    c.ehlo()
    c.send("MAIL FROM:<a@b.test>\r\nRCPT TO:<x@y.test>\r\nDATA\r\n")
    assert [c.reply().code for _ in range(3)] == [250, 250, 354]
    c.send("x\r\n.\r\nQUIT\r\n")
    assert c.reply().code == 250
    assert c.reply().code == 221
    assert sink.stats()["pipelined_commands"] == 3      # RCPT, DATA, QUIT came early


def test_lmtp_per_recipient_replies(sink_factory):
    s = sink_factory(lmtp=True, script={"lmtp_data_end": {"bad@x.test": "552 5.2.2 over quota",
                                                          "*": "250 2.0.0 Ok"}})
    c = Client(s.port)
    assert c.greeting.text == "sink.test LMTP"
    assert c.cmd("EHLO x").code == 500
    r = c.cmd("LHLO mx.example.test")
    assert r.code == 250
    c.expect("MAIL FROM:<a@b.test>", 250)
    for r in ("good@x.test", "bad@x.test", "also@x.test"):
        c.expect("RCPT TO:<%s>" % r, 250)
    c.expect("DATA", 354)
    c.send("hello\r\n.\r\n")
    replies = [str(c.reply()) for _ in range(3)]
    assert replies == ["250 2.0.0 Ok", "552 5.2.2 over quota", "250 2.0.0 Ok"]
    c.quit()
    m = s.wait_messages(1)[0]
    assert m["rcpt_tos"] == ["good@x.test", "also@x.test"]
    assert m["all_rcpt_tos"] == ["good@x.test", "bad@x.test", "also@x.test"]
    assert m["ehlo_verb"] == "LHLO" and m["lmtp"] is True


def test_lmtp_with_smtplib(sink_factory):
    s = sink_factory(lmtp=True)
    c = smtplib.LMTP(s.host, s.port)
    c.sendmail("a@b.test", ["x@y.test"], MSG)
    c.quit()
    assert s.wait_messages(1)[0]["ehlo"]


def test_ipv6_sink(sink_factory):
    try:
        socket.socket(socket.AF_INET6).bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback here")
    s = sink_factory(host="::1")
    c = smtplib.SMTP("::1", s.port, timeout=10)
    c.sendmail("a@b.test", ["x@y.test"], MSG)
    c.quit()
    assert s.wait_messages(1)[0]["peer"] == "::1"


def test_fixed_port_on_an_mx_address_and_restart(sink_factory):
    port = free_port_for("127.0.0.61", "127.0.0.62")
    one = sink_factory(host="127.0.0.61", port=port, name="mx1")
    two = sink_factory(host="127.0.0.62", port=port, name="mx2")
    for s in (one, two):
        c = smtplib.SMTP(s.host, port, timeout=10)
        c.sendmail("a@b.test", ["x@y.test"], MSG)
        c.quit()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.60", port), timeout=2).close()
    one.stop()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.61", port), timeout=2).close()
    one.start()                               # same port, counts continue
    c = smtplib.SMTP("127.0.0.61", port, timeout=10)
    c.sendmail("a@b.test", ["x@y.test"], MSG)
    c.quit()
    assert [m["transaction"] for m in one.wait_messages(2)] == [1, 2]
    assert one.stats()["sessions"] == 2
    assert two.stats()["sessions"] == 1


def test_unknown_script_key_is_refused(tmp_path):
    with pytest.raises(ValueError):
        Sink(tmp_path, script={"rcpt_reply": "550 x"})
    with pytest.raises(ValueError):
        Sink(tmp_path, script={"drop": "dot"})
    with pytest.raises(ValueError):
        Sink(tmp_path, host="192.0.2.1")


def test_postfix_smtp_sink(tmp_path):
    s = SmtpSink(tmp_path, args=["-c"])
    try:
        s.start()
        c = smtplib.SMTP("127.0.0.1", s.port, timeout=10)
        c.sendmail("a@b.test", ["x@y.test"], MSG)
        c.quit()
    finally:
        s.stop()
    assert s.proc.returncode is not None
