"""HAProxy PROXY protocol v1/v2 in front of smtpd
(smtpd_upstream_proxy_protocol = haproxy on a service).

The header claims addresses in 127.0.0.0/8 other than the real peer
(127.0.0.1), so the tests can tell which one the session used while all
traffic, and any reverse lookup, stays on loopback.
"""

import re
import socket
import struct

import pytest

from moatlib import Client, check, simple_message

V2_SIG = b"\r\n\r\n\x00\r\nQUIT\n"


def v2(cmd=1, fam=0x11, src="127.0.0.10", dst="127.0.0.1", sport=40000, dport=25, tlv=b""):
    if fam == 0x11:
        addrs = socket.inet_pton(socket.AF_INET, src) + socket.inet_pton(socket.AF_INET, dst)
    elif fam == 0x21:
        addrs = socket.inet_pton(socket.AF_INET6, src) + socket.inet_pton(socket.AF_INET6, dst)
    else:
        addrs = b""
    if fam in (0x11, 0x21):
        addrs += struct.pack("!HH", sport, dport)
    body = addrs + tlv
    return V2_SIG + bytes([0x20 | cmd, fam]) + struct.pack("!H", len(body)) + body


def shared_setup(m):
    m.proxy_port = m.alloc_port()
    m.proxy_slow_port = m.alloc_port()
    m.master_extra += [
        "127.0.0.1:%d inet n - n - - smtpd" % m.proxy_port,
        "  -o smtpd_upstream_proxy_protocol=haproxy",
        "127.0.0.1:%d inet n - n - - smtpd" % m.proxy_slow_port,
        "  -o smtpd_upstream_proxy_protocol=haproxy",
        "  -o smtpd_upstream_proxy_timeout=1s",
    ]


@pytest.fixture(scope="module")
def pm(shared_moat):
    shared_moat.wait_listening(port=shared_moat.proxy_port)
    shared_moat.wait_listening(port=shared_moat.proxy_slow_port)
    return shared_moat


def proxied(m, header, split=False):
    c = Client(m.proxy_port, greeting=False)
    if split:
        for b in header:
            c.send(bytes([b]))
    else:
        c.send(header)
    c.greeting = c.reply()
    check(c.greeting, 220)
    return c


def deliver_through(m, c, user):
    with c:
        c.ehlo("proxied.client.test")
        qid = c.sendmail("a@b.test", [user + "@example.test"], simple_message(user))
        c.quit()
    mail = m.wait_mails(user, 1)[0]
    received = re.search(rb"^Received: .*?(?=^\S)", mail, re.S | re.M).group(0).decode()
    return qid, received


def session_client(m, qid):
    """The client=NAME[ADDR] smtpd logged for queue id qid."""
    ms = m.wait_log(r"moat/smtpd\[\d+\]: %s: client=(\S+)\[([^\]]+)\]" % qid)
    return ms[0].group(1), ms[0].group(2)


def test_plain_service_needs_no_header(pm):
    with pm.connect() as c:
        check(c.greeting, 220)
        c.quit()


def test_v1_tcp4(pm):
    c = proxied(pm, b"PROXY TCP4 127.0.0.9 127.0.0.1 40001 25\r\n")
    qid, received = deliver_through(pm, c, "proxy-v1")
    assert session_client(pm, qid)[1] == "127.0.0.9"
    assert re.match(r"Received: from proxied\.client\.test \(\S+ \[127\.0\.0\.9\]\)", received), received
    pm.wait_log(r"moat/smtpd\[\d+\]: connect from \S+\[127\.0\.0\.9\]")


def test_v1_tcp6(pm):
    c = proxied(pm, b"PROXY TCP6 ::1 ::1 40002 25\r\n")
    qid, received = deliver_through(pm, c, "proxy-v1-6")
    assert session_client(pm, qid)[1] == "::1"
    assert re.search(r"\[(?:IPv6:)?::1\]", received), received


def test_v1_unknown_keeps_real_peer(pm):
    c = proxied(pm, b"PROXY UNKNOWN\r\n")
    qid, received = deliver_through(pm, c, "proxy-v1-unk")
    assert session_client(pm, qid)[1] == "127.0.0.1"
    assert "[127.0.0.1]" in received


def test_v2_tcp4(pm):
    c = proxied(pm, v2(src="127.0.0.10"))
    qid, received = deliver_through(pm, c, "proxy-v2")
    assert session_client(pm, qid)[1] == "127.0.0.10"
    assert re.match(r"Received: from proxied\.client\.test \(\S+ \[127\.0\.0\.10\]\)", received), received
    pm.wait_log(r"moat/smtpd\[\d+\]: connect from \S+\[127\.0\.0\.10\]")


def test_v2_tcp6(pm):
    c = proxied(pm, v2(fam=0x21, src="::1", dst="::1"))
    qid, _ = deliver_through(pm, c, "proxy-v2-6")
    assert session_client(pm, qid)[1] == "::1"


def test_v2_with_tlvs(pm):
    tlv = bytes([0x04]) + struct.pack("!H", 3) + b"abc"       # PP2_TYPE_NOOP
    tlv += bytes([0x02]) + struct.pack("!H", 9) + b"mx.x.test"  # PP2_TYPE_AUTHORITY
    c = proxied(pm, v2(src="127.0.0.11", tlv=tlv))
    qid, _ = deliver_through(pm, c, "proxy-v2-tlv")
    assert session_client(pm, qid)[1] == "127.0.0.11"


def test_v2_local_keeps_real_peer(pm):
    c = proxied(pm, v2(cmd=0, fam=0x00))
    qid, _ = deliver_through(pm, c, "proxy-v2-local")
    assert session_client(pm, qid)[1] == "127.0.0.1"


@pytest.mark.parametrize("which", ["v1", "v2"])
def test_header_byte_by_byte(pm, which):
    header = b"PROXY TCP4 127.0.0.12 127.0.0.1 40003 25\r\n" if which == "v1" else v2(src="127.0.0.12")
    c = proxied(pm, header, split=True)
    qid, _ = deliver_through(pm, c, "proxy-split-" + which)
    assert session_client(pm, qid)[1] == "127.0.0.12"


MALFORMED = {
    "http": b"GET / HTTP/1.0\r\n\r\n",
    "smtp": b"EHLO client.test\r\n",
    "bad-ip": b"PROXY TCP4 999.0.0.1 127.0.0.1 40000 25\r\n",
    "missing-port": b"PROXY TCP4 127.0.0.9 127.0.0.1 40000\r\n",
    "port-range": b"PROXY TCP4 127.0.0.9 127.0.0.1 70000 25\r\n",
    "family-mismatch": b"PROXY TCP4 ::1 ::1 40000 25\r\n",
    "bad-proto": b"PROXY UDP4 127.0.0.9 127.0.0.1 40000 25\r\n",
    "too-long": b"PROXY TCP4 " + b"1" * 200 + b"\r\n",
    "v2-version": v2()[:12] + b"\x31" + v2()[13:],
    "v2-command": v2()[:12] + b"\x2f" + v2()[13:],
    "v2-short-len": V2_SIG + b"\x21\x11\x00\x04" + b"\x7f\x00\x00\x09",
    "v2-family": V2_SIG + b"\x21\x99\x00\x0c" + b"\x00" * 12,
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_header_closes_without_greeting(pm, name):
    c = Client(pm.proxy_port, greeting=False)
    with c:
        try:
            c.send(MALFORMED[name])
        except OSError:
            pass
        assert c.wait_closed(10), "connection not closed after malformed header %r" % name
        assert c.buf == b"", "server said something: %r" % c.buf
    # The service keeps working.
    c2 = proxied(pm, b"PROXY TCP4 127.0.0.9 127.0.0.1 40004 25\r\n")
    with c2:
        c2.quit()


def test_header_timeout(pm):
    # smtpd_upstream_proxy_timeout=1s on this service only.
    c = Client(pm.proxy_slow_port, greeting=False, timeout=15)
    with c:
        assert c.wait_closed(12), "no close after the PROXY header timeout"
        assert c.buf == b""
    c = Client(pm.proxy_slow_port, greeting=False)
    with c:
        c.send(b"PROXY TCP4 127.0.0.99 127.0.0.1 40005 25\r\n")
        check(c.reply(), 220)
        c.quit()


def test_partial_header_then_close(pm):
    # A client that hangs up in the middle of the header must not upset
    # the server.
    for h in (b"PROXY TCP4 127.0.", V2_SIG[:7], v2()[:20]):
        s = socket.create_connection(("127.0.0.1", pm.proxy_port), timeout=5)
        s.sendall(h)
        s.close()
    c = proxied(pm, v2(src="127.0.0.14"))
    with c:
        c.quit()
