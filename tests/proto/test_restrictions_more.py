"""The remaining non-DNS restrictions and knobs through a live moat:
smtpd_forbidden_commands, permit_inet_interfaces, mynetworks with tables
and files, mynetworks_style, reject_unlisted_recipient/sender and
check_recipient_maps (docs/restrictions.md).

Clients bind 127.0.0.x source addresses; the daemon listens on 127.0.0.1,
so 127.0.0.1 is "this machine" and any other loopback address is an
outside client.
"""
import os
import re
import socket

from moatlib import check

OUTSIDE = "127.0.0.2"
RELAY_GUARD = "reject_unauth_destination"


def daemon(moat_factory, main, files=None):
    """A started daemon; "%D" in main values and files is its directory."""
    m = moat_factory(start=False)
    for k, v in main.items():
        m.main[k] = v.replace("%D", m.dir)
    for name, text in (files or {}).items():
        with open(os.path.join(m.dir, name), "w") as f:
            f.write(text.replace("%D", m.dir))
    m.start()
    return m


def rcpt(m, to, source=OUTSIDE, sender="a@b.test"):
    with m.connect(source=source) as c:
        check(c.cmd("EHLO client.test"), 250)
        check(c.cmd("MAIL FROM:<%s>" % sender), 250)
        r = c.cmd("RCPT TO:<%s>" % to)
        c.quit()
    return r


def raw_session(m, lines, source=OUTSIDE):
    """Send lines at once (as a web client would) and read until the close."""
    s = socket.create_connection(("127.0.0.1", m.port), timeout=10,
                                 source_address=(source, 0))
    try:
        data = b""
        while not data.endswith(b"\r\n"):
            data += s.recv(4096)   # the greeting
        s.sendall(b"".join(l + b"\r\n" for l in lines))
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    finally:
        s.close()
    return data.decode("latin-1")


# ------------------------------------------------------ forbidden commands

def test_web_request_ends_the_session(moat_factory):
    m = daemon(moat_factory, {})
    out = raw_session(m, [b"GET / HTTP/1.1", b"Host: mx.example.test", b"", b"NOOP"])
    assert out.splitlines()[-1] == "221 2.7.0 Error: I can break rules, too. Goodbye.", out
    assert "250" not in out.split("\r\n", 1)[1]   # nothing after GET was answered
    m.wait_log(r"warning: non-SMTP command from listed\.client\.test\[127\.0\.0\.2\]: GET / HTTP/1\.1$")
    m.wait_log(r"disconnect from listed\.client\.test\[127\.0\.0\.2\] unknown=0/1 commands=0/1$")


def test_header_sent_as_command_ends_the_session(moat_factory):
    m = daemon(moat_factory, {})
    with m.connect(source=OUTSIDE) as c:
        check(c.cmd("EHLO client.test"), 250)
        r = c.cmd("Subject: hello")
        assert r.code == 221 and "I can break rules, too. Goodbye." in str(r)
        c.wait_closed()
    m.wait_log(r"non-SMTP command from listed\.client\.test\[127\.0\.0\.2\]: Subject: hello$")


def test_forbidden_commands_list_and_table(moat_factory):
    m = daemon(moat_factory, {"smtpd_forbidden_commands": "OPTIONS texthash:%D/forbid"},
               files={"forbid": "put x\n"})
    with m.connect(source=OUTSIDE) as c:
        r = c.cmd("GET /")           # not listed any more: an ordinary unknown command
        check(r, 502)
        r = c.cmd("put /x")
        assert r.code == 221, r
        c.wait_closed()
    with m.connect(source=OUTSIDE) as c:
        assert c.cmd("options *").code == 221


def test_unknown_command_is_not_forbidden(moat_factory):
    m = daemon(moat_factory, {})
    with m.connect(source=OUTSIDE) as c:
        check(c.cmd("XYZZY"), 502)
        check(c.cmd("NOOP"), 250)
        c.quit()


# ------------------------------------------------- permit_inet_interfaces
# These tests show trust with the client list, "permit_X, reject", before
# a local recipient, so the outcome never depends on relay delivery.

LOCAL_RCPT = "u@example.test"


def trusted(m, source):
    r = rcpt(m, LOCAL_RCPT, source=source)
    if r.code == 250:
        return True
    assert r.code == 554 and "Client host rejected: Access denied" in str(r), r
    return False


def test_permit_inet_interfaces_all_uses_the_connection(moat_factory):
    m = daemon(moat_factory, {"smtpd_client_restrictions": "permit_inet_interfaces, reject"})
    assert trusted(m, "127.0.0.1")       # the address the service listens on
    assert not trusted(m, OUTSIDE)


def test_permit_inet_interfaces_addresses(moat_factory):
    m = daemon(moat_factory, {"inet_interfaces": "127.0.0.1, 127.0.0.3",
                              "smtpd_client_restrictions": "permit_inet_interfaces, reject"})
    assert trusted(m, "127.0.0.3")
    assert not trusted(m, OUTSIDE)


# ------------------------------------------------------------- mynetworks

def test_mynetworks_table_and_file(moat_factory):
    files = {
        "trusted.cidr": "127.0.0.12/32 trusted\n",
        "nets": "# more trusted clients\n!127.0.0.6\n127.0.0.0/29, cidr:%D/trusted.cidr\n",
        "hosts": "127.0.0.9 yes\n",
    }
    # smtpd_forbid_bare_newline_exclusions defaults to $mynetworks and
    # takes addresses only (src/smtp/server.c): give it its own value.
    m = daemon(moat_factory, {"mynetworks": "texthash:%D/hosts %D/nets",
                              "smtpd_forbid_bare_newline_exclusions": "127.0.0.1",
                              "smtpd_client_restrictions": "permit_mynetworks, reject"}, files=files)
    assert trusted(m, "127.0.0.9")       # the table
    assert trusted(m, "127.0.0.5")       # the file's prefix
    assert trusted(m, "127.0.0.12")      # the file's table
    assert not trusted(m, "127.0.0.6")   # the file's exclusion
    assert not trusted(m, "127.0.0.10")  # nowhere


def test_mynetworks_bad_file_refuses_to_start(moat_factory):
    m = moat_factory(main={"mynetworks": "/nonexistent/moat-nets",
                           "smtpd_forbid_bare_newline_exclusions": "127.0.0.1"}, start=False)
    m.start(wait=False)
    rc = m.wait_exit(timeout=20)
    assert rc not in (0, None)
    assert re.search(r"main\.cf:\d+: mynetworks: \"/nonexistent/moat-nets\": cannot open", m.stderr() + m.log())


def test_mynetworks_style_host_and_subnet(moat_factory):
    m = daemon(moat_factory, {"mynetworks_style": "host",
                              "smtpd_client_restrictions": "permit_mynetworks, reject"})
    assert trusted(m, "127.0.0.1")       # lo's own address
    assert not trusted(m, OUTSIDE)
    m.stop()
    m.main["mynetworks_style"] = "subnet"
    m.start()
    assert trusted(m, OUTSIDE)           # lo's 127.0.0.0/8


def test_default_mynetworks_is_loopback(moat_factory):
    m = daemon(moat_factory, {"smtpd_client_restrictions": "permit_mynetworks, reject"})
    assert trusted(m, OUTSIDE)


# ------------------------------------------------ unlisted recipient/sender

def test_unlisted_recipient_and_sender_local_domains(moat_factory):
    m = daemon(moat_factory, {"mynetworks": "127.0.0.1/32",
                              "smtpd_sender_restrictions": "reject_unlisted_sender",
                              "smtpd_recipient_restrictions":
                                  "reject_unlisted_recipient, check_recipient_maps, " + RELAY_GUARD})
    check(rcpt(m, "nosuchuser@example.test", sender="anyone@example.test"), 250)
    r = rcpt(m, "u@elsewhere.test")
    check(r, 554)
    assert "Relay access denied" in str(r)


def test_relay_domains_and_relay_recipient_maps(moat_factory):
    # relay_domains are authorized destinations; with relay_recipient_maps
    # their unknown recipients are rejected at RCPT (no backscatter), by
    # reject_unlisted_recipient and by smtpd_reject_unlisted_recipient alike.
    m = moat_factory(main={"relay_domains": "relay.test",
                           "relay_recipient_maps": "texthash:$config_directory/relay_rcpts",
                           "smtpd_recipient_restrictions": "reject_unlisted_recipient, " + RELAY_GUARD},
                     files={"relay_rcpts": "known@relay.test x\n"})
    check(rcpt(m, "known@relay.test"), 250)
    check(rcpt(m, "unknown@relay.test"), 550, "5.1.1",
          "<unknown@relay.test>: Recipient address rejected: User unknown in relay recipient table")
    check(rcpt(m, "u@elsewhere.test"), 554)
    m.wait_log(r"NOQUEUE: reject: RCPT from \S+: 550 5\.1\.1 <unknown@relay\.test>: Recipient address rejected: "
               r"User unknown in relay recipient table; .* rule=recipient:reject_unlisted_recipient$")
