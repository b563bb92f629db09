"""moat's SMTP/LMTP client end to end (docs/smtp-client.md): mail relayed
through the queue manager to real receivers (tests/proto/sink.py) found
through the test DNS world (tests/dns/README.md, the deliver.test names):
MX preference and fallback, the A fallback, null MX, an MX host without
an address, a mail loop, IPv6; and what the client does with a server's
extensions: PIPELINING, SIZE, 8BITMIME (the downgrade), XFORWARD,
connection reuse with RSET, LMTP replies per recipient, timeouts and a
dropped connection.

Every address is loopback; sinks and daemons are stopped by PID (the
fixtures).  When relay delivery is not wired into the daemon (no
"relay=" log line for a relayed message), every test skips."""

import re
import socket

import pytest

from moatlib import HOSTNAME, simple_message
from sink import free_port_for

SENDER = "sender@example.test"     # local: a bounce notice lands in a Maildir


def relay_moat(moat_factory, routes, main=None, **kw):
    """A moat that relays each domain of routes ({domain: "transport:nexthop"})."""
    table = "".join("%s %s\n" % (d, nh) for d, nh in routes.items())
    conf = {"relay_domains": ", ".join(routes), "transport_maps": "texthash:TRANSPORT",
            "minimal_backoff_time": "60s", "maximal_backoff_time": "60s"}
    conf.update(main or {})
    m = moat_factory(main=conf, start=False, files={"transport": table}, **kw)
    m.main["transport_maps"] = "texthash:" + m.path("transport")
    m.start()
    return m


def send(m, rcpts, message=None, sender=SENDER, mail_params=""):
    message = message or simple_message(subject="client test")
    with m.connect() as c:
        c.ehlo()
        c.mail(sender, mail_params)
        for r in rcpts:
            c.rcpt(r)
        qid = c.data(message)
        c.quit()
    return qid


def status_line(m, qid, rcpt, prog="smtp", timeout=20.0):
    """The delivery agent's log line for one recipient (a regex match)."""
    pat = r"moat/%s\[\d+\]: %s: to=<%s>, (?P<rest>.*)$" % (prog, qid, re.escape(rcpt))
    return m.wait_log(pat, timeout=timeout)[0]


def fields(match):
    """relay, dsn, status and the text in parentheses of a status line."""
    rest = match.group("rest")
    out = {}
    for k in ("relay", "dsn", "status"):
        mm = re.search(r"\b%s=([^, ]+)" % k, rest)
        out[k] = mm.group(1) if mm else None
    mm = re.search(r"status=\w+ \((.*)\)$", rest)
    out["text"] = mm.group(1) if mm else None
    return out


# ----------------------------------------------------------- MX handling

def test_mx_preference_order(moat_factory, sink_factory):
    port = free_port_for("127.0.0.61", "127.0.0.62")
    mx1 = sink_factory(host="127.0.0.61", port=port, name="mx1")
    mx2 = sink_factory(host="127.0.0.62", port=port, name="mx2")
    m = relay_moat(moat_factory, {"mxpref.deliver.test": "smtp:mxpref.deliver.test:%d" % port})
    qid = send(m, ["u@mxpref.deliver.test"])
    f = fields(status_line(m, qid, "u@mxpref.deliver.test"))
    assert f["status"] == "sent", f
    assert f["relay"] == "mx1.deliver.test[127.0.0.61]:%d" % port
    assert len(mx1.wait_messages(1)) == 1
    assert mx2.stats()["sessions"] == 0


def test_mx_fallback_when_the_best_is_down(moat_factory, sink_factory):
    port = free_port_for("127.0.0.61", "127.0.0.62")
    mx2 = sink_factory(host="127.0.0.62", port=port, name="mx2")
    m = relay_moat(moat_factory, {"mxpref.deliver.test": "smtp:mxpref.deliver.test:%d" % port,
                                  "mxfallback.deliver.test": "smtp:mxfallback.deliver.test:%d" % port})
    qid = send(m, ["u@mxpref.deliver.test"])
    f = fields(status_line(m, qid, "u@mxpref.deliver.test"))
    assert f["status"] == "sent" and f["relay"] == "mx2.deliver.test[127.0.0.62]:%d" % port, f
    qid = send(m, ["v@mxfallback.deliver.test"])
    f = fields(status_line(m, qid, "v@mxfallback.deliver.test"))
    assert f["status"] == "sent" and f["relay"] == "mx2.deliver.test[127.0.0.62]:%d" % port, f
    assert len(mx2.wait_messages(2)) == 2


def test_soft_rejection_at_the_best_mx_goes_to_the_next(moat_factory, sink_factory):
    port = free_port_for("127.0.0.61", "127.0.0.62")
    sink_factory(host="127.0.0.61", port=port, name="mx1",
                 script={"rcpt": {"grey@mxpref.deliver.test": "450 4.7.1 greylisted", "*": "250 2.1.5 Ok"}})
    mx2 = sink_factory(host="127.0.0.62", port=port, name="mx2")
    m = relay_moat(moat_factory, {"mxpref.deliver.test": "smtp:mxpref.deliver.test:%d" % port})
    qid = send(m, ["ok@mxpref.deliver.test", "grey@mxpref.deliver.test"])
    assert fields(status_line(m, qid, "ok@mxpref.deliver.test"))["status"] == "sent"
    f = fields(status_line(m, qid, "grey@mxpref.deliver.test"))
    assert f["status"] == "sent" and f["relay"].startswith("mx2.deliver.test["), f
    assert mx2.wait_messages(1)[0]["rcpt_tos"] == ["grey@mxpref.deliver.test"]


def test_a_fallback_without_mx(moat_factory, sink_factory):
    port = free_port_for("127.0.0.63")
    amx = sink_factory(host="127.0.0.63", port=port, name="amx")
    m = relay_moat(moat_factory, {"amx.deliver.test": "smtp:amx.deliver.test:%d" % port})
    qid = send(m, ["u@amx.deliver.test"])
    f = fields(status_line(m, qid, "u@amx.deliver.test"))
    assert f["status"] == "sent" and f["relay"] == "amx.deliver.test[127.0.0.63]:%d" % port, f
    assert len(amx.wait_messages(1)) == 1


def test_ipv6_only_destination(moat_factory, sink_factory):
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback")
    port = free_port_for("::1")
    six = sink_factory(host="::1", port=port, name="six")
    m = relay_moat(moat_factory, {"six.deliver.test": "smtp:six.deliver.test:%d" % port})
    qid = send(m, ["u@six.deliver.test"])
    f = fields(status_line(m, qid, "u@six.deliver.test"))
    assert f["status"] == "sent" and f["relay"] == "six.deliver.test[::1]:%d" % port, f
    assert len(six.wait_messages(1)) == 1


@pytest.mark.parametrize("domain, dsn, text", [
    ("nullmx.test", "5.1.10", "Domain nullmx.test does not accept mail (nullMX)"),
    ("noaddr.deliver.test", "5.4.4",
     "Host or domain name not found. Name service error for name=nowhere.deliver.test type=A: "
     "Host not found"),
    ("nosuch.deliver.test", "5.4.4",
     "Host or domain name not found. Name service error for name=nosuch.deliver.test type=MX: "
     "Host not found"),
])
def test_dns_failures_bounce(moat_factory, domain, dsn, text):
    m = relay_moat(moat_factory, {domain: "smtp:%s" % domain})
    qid = send(m, ["u@" + domain])
    f = fields(status_line(m, qid, "u@" + domain))
    assert f == {"relay": "none", "dsn": dsn, "status": "bounced", "text": text}, f
    # The sender (a local Maildir) gets the notice.
    m.wait_mails("sender", 1)


def test_mail_loop_bounces(moat_factory):
    m = relay_moat(moat_factory, {"loop.deliver.test": "smtp:loop.deliver.test"})
    qid = send(m, ["u@loop.deliver.test"])
    f = fields(status_line(m, qid, "u@loop.deliver.test"))
    assert HOSTNAME == "mx.example.test"
    assert f["status"] == "bounced" and f["dsn"] == "5.4.6", f
    assert f["text"] == "mail for loop.deliver.test loops back to myself", f


def test_relay_to_our_own_port_is_a_loop(moat_factory):
    m = moat_factory(start=False, main={"relay_domains": "self.test"})
    m.main["transport_maps"] = "texthash:" + m.path("transport")
    m.files["transport"] = "self.test smtp:[127.0.0.1]:%d\n" % m.port
    m.start()
    qid = send(m, ["u@self.test"])
    f = fields(status_line(m, qid, "u@self.test"))
    assert f["status"] == "bounced" and f["dsn"] == "5.4.6", f


# ------------------------------------------------- the server's extensions

def test_connection_reuse_with_rset(moat_factory, sink_factory):
    sink = sink_factory()
    m = relay_moat(moat_factory, {"relay.test": "relay:[127.0.0.1]:%d" % sink.port},
                   main={"smtp_connection_cache_time_limit": "30s"})
    q1 = send(m, ["a@relay.test"])
    assert fields(status_line(m, q1, "a@relay.test"))["status"] == "sent"
    q2 = send(m, ["b@relay.test"])
    assert fields(status_line(m, q2, "b@relay.test"))["status"] == "sent"
    sink.wait_messages(2)
    st = sink.stats()
    assert st["sessions"] == 1, st
    assert st["rsets"] == 1, st
    cmds = [c for _, c in sink.commands()]
    assert cmds.count("RSET") == 1 and sum(c.startswith("EHLO") for c in cmds) == 1, cmds


def test_size_limit_of_the_server_bounces_without_mail(moat_factory, sink_factory):
    sink = sink_factory(script={"ehlo_extensions": ["PIPELINING", "SIZE 1000", "8BITMIME"]})
    m = relay_moat(moat_factory, {"relay.test": "relay:[127.0.0.1]:%d" % sink.port})
    qid = send(m, ["u@relay.test"], simple_message(subject="big", body="x" * 3000))
    f = fields(status_line(m, qid, "u@relay.test"))
    assert f["status"] == "bounced" and f["dsn"] == "5.3.4", f
    assert re.fullmatch(r"message size \d+ exceeds size limit 1000 of server 127\.0\.0\.1\[127\.0\.0\.1\]",
                        f["text"]), f
    assert not any(c.startswith("MAIL") for _, c in sink.commands())


def test_8bit_mail_to_a_7bit_server_is_downgraded(moat_factory, sink_factory):
    sink = sink_factory(script={"ehlo_extensions": ["PIPELINING", "SIZE 10240000"]})
    m = relay_moat(moat_factory, {"relay.test": "relay:[127.0.0.1]:%d" % sink.port})
    msg = ("From: <a@b.test>\r\nTo: <u@relay.test>\r\nSubject: 8bit\r\n"
           "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
           "Content-Transfer-Encoding: 8bit\r\n\r\nCaf\u00e9 cr\u00e8me = good\r\n").encode()
    qid = send(m, ["u@relay.test"], msg, mail_params="BODY=8BITMIME")
    assert fields(status_line(m, qid, "u@relay.test"))["status"] == "sent"
    got = sink.wait_messages(1)[0]
    assert not any(o.upper().startswith("BODY=") for o in got["mail_options"]), got["mail_options"]
    assert b"Content-Transfer-Encoding: quoted-printable\r\n" in got["data"]
    assert b"Caf=C3=A9 cr=C3=A8me =3D good\r\n" in got["data"]
    assert all(b < 0x80 for b in got["data"].split(b"\r\n\r\n", 1)[1])


def test_8bit_mail_to_an_8bit_server_goes_unchanged(moat_factory, sink_factory):
    sink = sink_factory()
    m = relay_moat(moat_factory, {"relay.test": "relay:[127.0.0.1]:%d" % sink.port})
    body = "Caf\u00e9\r\n"
    msg = ("Subject: 8bit\r\nMIME-Version: 1.0\r\nContent-Transfer-Encoding: 8bit\r\n\r\n" + body).encode()
    qid = send(m, ["u@relay.test"], msg, mail_params="BODY=8BITMIME")
    assert fields(status_line(m, qid, "u@relay.test"))["status"] == "sent"
    got = sink.wait_messages(1)[0]
    assert "BODY=8BITMIME" in got["mail_options"], got["mail_options"]
    assert any(o.startswith("SIZE=") for o in got["mail_options"]), got["mail_options"]
    assert got["data"].endswith(body.encode())


def test_xforward_carries_the_original_client(moat_factory, sink_factory):
    sink = sink_factory()
    m = relay_moat(moat_factory, {"relay.test": "relay:[127.0.0.1]:%d" % sink.port},
                   main={"smtp_send_xforward_command": "yes"})
    qid = send(m, ["u@relay.test"])
    assert fields(status_line(m, qid, "u@relay.test"))["status"] == "sent"
    xf = sink.wait_messages(1)[0]["xforward"]
    assert xf.get("ADDR") == "127.0.0.1", xf
    assert xf.get("HELO") == "client.test", xf
    assert xf.get("PROTO") == "ESMTP", xf
    assert xf.get("NAME") in ("localhost", "[UNAVAILABLE]"), xf
    # Only what the sink announced (NAME ADDR PROTO HELO): no IDENT, no SOURCE.
    assert not any("IDENT=" in c or "SOURCE=" in c for _, c in sink.commands())


def test_lmtp_replies_per_recipient(moat_factory, sink_factory):
    sink = sink_factory(lmtp=True, script={"lmtp_data_end": {"b@lmtp.test": "552 5.2.2 over quota",
                                                             "*": "250 2.0.0 Ok"}})
    m = relay_moat(moat_factory, {"lmtp.test": "lmtp:inet:127.0.0.1:%d" % sink.port})
    qid = send(m, ["a@lmtp.test", "b@lmtp.test"])
    a = fields(status_line(m, qid, "a@lmtp.test", prog="lmtp"))
    b = fields(status_line(m, qid, "b@lmtp.test", prog="lmtp"))
    assert a["status"] == "sent" and a["relay"] == "127.0.0.1[127.0.0.1]:%d" % sink.port, a
    assert b["status"] == "bounced" and b["dsn"] == "5.2.2", b
    assert b["text"] == ("host 127.0.0.1[127.0.0.1] said: 552 5.2.2 over quota "
                         "(in reply to end of DATA command)"), b
    assert any(c.startswith("LHLO ") for _, c in sink.commands())


def test_pipelining_sends_the_envelope_in_one_go(moat_factory, sink_factory):
    sink = sink_factory()
    m = relay_moat(moat_factory, {"relay.test": "relay:[127.0.0.1]:%d" % sink.port})
    qid = send(m, ["a@relay.test", "b@relay.test", "c@relay.test"])
    assert fields(status_line(m, qid, "c@relay.test"))["status"] == "sent"
    # MAIL, three RCPT and DATA arrived before the sink had answered MAIL.
    assert sink.stats()["pipelined_commands"] >= 4, sink.stats()


# ------------------------------------------------------------- failures

def test_greeting_timeout_defers(moat_factory, sink_factory):
    sink = sink_factory(script={"delay": {"greeting": 4}})
    m = relay_moat(moat_factory, {"relay.test": "relay:[127.0.0.1]:%d" % sink.port},
                   main={"smtp_helo_timeout": "1s"})
    qid = send(m, ["u@relay.test"])
    f = fields(status_line(m, qid, "u@relay.test"))
    assert f["status"] == "deferred" and f["dsn"] == "4.4.2", f
    assert f["text"] == ("conversation with 127.0.0.1[127.0.0.1] timed out while receiving the "
                         "initial server greeting"), f


def test_connection_dropped_mid_data_defers(moat_factory, sink_factory):
    sink = sink_factory(script={"drop": "data"})
    m = relay_moat(moat_factory, {"relay.test": "relay:[127.0.0.1]:%d" % sink.port})
    qid = send(m, ["u@relay.test"], simple_message(subject="drop", body="y" * 200000))
    f = fields(status_line(m, qid, "u@relay.test"))
    assert f["status"] == "deferred" and f["dsn"] == "4.4.2", f
    assert f["text"].startswith("lost connection with 127.0.0.1[127.0.0.1] while sending "), f
    assert sink.messages() == []


def test_refused_connection_defers(moat_factory):
    port = free_port_for("127.0.0.1")
    m = relay_moat(moat_factory, {"relay.test": "relay:[127.0.0.1]:%d" % port})
    qid = send(m, ["u@relay.test"])
    f = fields(status_line(m, qid, "u@relay.test"))
    assert f == {"relay": "none", "dsn": "4.4.1", "status": "deferred",
                 "text": "connect to 127.0.0.1[127.0.0.1]:%d: Connection refused" % port}, f
