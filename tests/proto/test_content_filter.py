"""After-queue content filters (seed 001): content_filter, FILTER actions,
the re-injection service, XFORWARD.

The chain under test is the one seed 001 builds with clamsmtp:

    client --> moat :PORT (content_filter = scan:[127.0.0.1]:A)
           --> queue --> "scan" transport (smtp client, XFORWARD on)
           --> the test's filter on 127.0.0.1:A  (adds "X-Filtered: ...")
           --> moat 127.0.0.1:B (-o content_filter= , XFORWARD allowed,
               -o receive_override_options=...)  --> queue --> Maildir

The filter is a small SMTP proxy written here (a thread of the test
process, loopback only): it announces XFORWARD, passes on what moat's
client forwarded, re-injects with smtplib, and answers moat with the
re-injection's reply, as clamsmtp does.

Two kinds of tests: what the SMTP server records in the queue file (the
`filter` record: content_filter, a FILTER action winning over it, a
service's -o content_filter=, an empty one recording nothing), read from
hold/ (a HOLD action keeps the file); and the round trip, which needs the
queue manager's SMTP delivery.
"""
import os
import re
import socketserver
import smtplib
import subprocess
import threading

import pytest

from moatlib import Client, check, moat_bin, queued_id, simple_message

OUTSIDE = "127.0.0.2"          # listed.client.test in the DNS test world
OUTSIDE_RE = r"[\w.-]+\[127\.0\.0\.2\]"


# ------------------------------------------------------------ the filter

class Filter:
    """SMTP in on 127.0.0.1:port; each message gets `header` on top and goes
    to 127.0.0.1:out_port.  self.messages: what it received, as dicts
    (xforward attributes, mail_from, rcpts, data)."""

    def __init__(self, out_port, header=b"X-Filtered: yes"):
        self.out_port = out_port
        self.header = header
        self.messages = []
        self.lock = threading.Lock()
        outer = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self):
                outer.session(self.rfile, self.wfile)

        class Server(socketserver.ThreadingTCPServer):
            daemon_threads = True
            allow_reuse_address = True

        self.server = Server(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)

    def session(self, rfile, wfile):
        def say(text):
            wfile.write(text.encode() + b"\r\n")
            wfile.flush()

        def path(arg):
            m = re.search(r"<([^>]*)>", arg)
            return m.group(1) if m else arg.split(":", 1)[-1].strip()

        say("220 filter.test ESMTP test filter")
        xf, mail, rcpts = {}, None, []
        while True:
            line = rfile.readline()
            if not line:
                return
            cmd = line.rstrip(b"\r\n").decode("utf-8", "replace")
            verb = cmd.split(" ", 1)[0].upper()
            if verb == "EHLO":
                say("250-filter.test")
                say("250-XFORWARD NAME ADDR PROTO HELO SOURCE PORT IDENT")
                say("250-8BITMIME")
                say("250 ENHANCEDSTATUSCODES")
            elif verb == "HELO":
                say("250 filter.test")
            elif verb == "XFORWARD":
                for item in cmd.split()[1:]:
                    k, _, v = item.partition("=")
                    xf[k.upper()] = v
                say("250 2.0.0 Ok")
            elif verb == "MAIL":
                mail, rcpts = path(cmd), []
                say("250 2.1.0 Ok")
            elif verb == "RCPT":
                rcpts.append(path(cmd))
                say("250 2.1.5 Ok")
            elif verb == "DATA":
                say("354 End data with <CR><LF>.<CR><LF>")
                lines = []
                while True:
                    l = rfile.readline()
                    if not l or l == b".\r\n":
                        break
                    lines.append(l[1:] if l.startswith(b".") else l)
                data = b"".join(lines)
                with self.lock:
                    self.messages.append({"xforward": dict(xf), "mail_from": mail, "rcpts": list(rcpts),
                                          "data": data})
                code, text = self.reinject(xf, mail, rcpts, data)
                say("%d %s" % (code, text))
                xf, mail, rcpts = {}, None, []
            elif verb == "RSET":
                xf, mail, rcpts = {}, None, []
                say("250 2.0.0 Ok")
            elif verb == "NOOP":
                say("250 2.0.0 Ok")
            elif verb == "QUIT":
                say("221 2.0.0 Bye")
                return
            else:
                say("502 5.5.2 Error: command not recognized")

    def reinject(self, xf, mail, rcpts, data):
        try:
            s = smtplib.SMTP("127.0.0.1", self.out_port, local_hostname="filter.test", timeout=30)
            try:
                s.ehlo("filter.test")
                if xf and s.has_extn("xforward"):
                    code, msg = s.docmd("XFORWARD", " ".join("%s=%s" % kv for kv in xf.items()))
                    if code != 250:
                        return 451, "4.3.0 XFORWARD refused: %d %s" % (code, msg.decode())
                s.mail(mail)
                for r in rcpts:
                    s.rcpt(r)
                code, msg = s.data(self.header + b"\r\n" + data)
                return code, msg.decode()
            finally:
                s.quit()
        except (OSError, smtplib.SMTPException) as e:
            return 451, "4.3.0 re-injection failed: %s" % e


@pytest.fixture
def filters():
    made = []

    def make(out_port, header=b"X-Filtered: yes"):
        f = Filter(out_port, header)
        made.append(f)
        return f

    yield make
    for f in made:
        f.stop()


# ------------------------------------------------------------ the chain

def chain(moat_factory, filters, main=None, extra_services=()):
    """moat with the seed-001 layout: the main service filters through
    filter A, 127.0.0.1:B re-injects; a second filter C for FILTER actions.
    Returns (moat, filter A, filter C)."""
    m = moat_factory(start=False)
    b = m.alloc_port()
    fa = filters(b, b"X-Filtered: yes")
    fc = filters(b, b"X-Filtered: second")
    m.reinject_port = b
    m.main.update({
        "mynetworks": "127.0.0.1/32",
        "content_filter": "scan:[127.0.0.1]:%d" % fa.port,
        "smtpd_recipient_restrictions":
            "check_recipient_access inline:{held@example.test=HOLD}, permit_mynetworks, reject_unauth_destination",
        "smtpd_sender_restrictions":
            "check_sender_access inline:{ {special@b.test=FILTER scan:[127.0.0.1]:%d} }" % fc.port,
    })
    m.main.update(main or {})
    m.master_extra += [
        "scan unix - - n - 10 smtp",
        "  -o smtp_send_xforward_command=yes",
        "127.0.0.1:%d inet n - n - 32 smtpd" % b,
        "  -o content_filter=",
        "  -o receive_override_options=no_unknown_recipient_checks,no_header_body_checks",
        "  -o smtpd_client_restrictions=",
        "  -o smtpd_helo_restrictions=",
        "  -o smtpd_sender_restrictions=",
        "  -o smtpd_data_restrictions=",
        "  -o smtpd_recipient_restrictions=permit_mynetworks,reject",
        "  -o mynetworks=127.0.0.0/8",
        "  -o smtpd_authorized_xforward_hosts=127.0.0.0/8",
    ]
    m.master_extra += list(extra_services)
    m.start()
    m.wait_listening(port=b)
    return m, fa, fc


def send(port, sender="a@b.test", rcpt="u@example.test", subject="filtered", source=OUTSIDE):
    with Client(port, source=source) as c:
        c.ehlo("client.test")
        check(c.cmd("MAIL FROM:<%s>" % sender), 250)
        check(c.cmd("RCPT TO:<%s>" % rcpt), 250, what=rcpt)
        check(c.cmd("DATA"), 354)
        c.send(simple_message(subject) + ".\r\n")
        qid = queued_id(c.reply())
        c.quit()
    return qid


def queue_file(m, sub, qid):
    with open(os.path.join(m.main["queue_directory"], sub, qid), "rb") as f:
        return f.read()


def records(data):
    """The action records between the content and the trailer (docs/queue.md)."""
    _, _, rest = data.partition(b"\ncontent\n")
    size = int(data[-30:][9:29])
    return rest[size:-30].decode().splitlines()


def mail_with(m, user, marker, timeout=30):
    """The delivered message of user whose Subject is marker."""
    def find():
        return [x for x in m.mails(user) if ("Subject: " + marker).encode() in x]
    from moatlib import wait_for
    try:
        return wait_for(find, timeout, what="mail %r for %s" % (marker, user))[0]
    except AssertionError:
        raise AssertionError("no mail %r for %s; log tail:\n%s" % (marker, user, m.log()[-5000:]))


def received_headers(mail):
    head = mail.split(b"\n\n", 1)[0].decode("utf-8", "replace")
    return [re.sub(r"\s+", " ", h) for h in re.findall(r"^Received: .*?(?=^\S|\Z)", head + "\n", re.M | re.S)]


# ------------------------------------------------------------ what smtpd records

def test_content_filter_recorded_in_the_queue_file(moat_factory, filters):
    m, fa, fc = chain(moat_factory, filters)
    qid = send(m.port, rcpt="held@example.test", subject="recorded")
    data = queue_file(m, "hold", qid)
    assert data.startswith(b"MOAT-QUEUE 2\n")
    assert records(data) == ["filter scan:[127.0.0.1]:%d" % fa.port]


def test_filter_action_wins_over_content_filter(moat_factory, filters):
    m, fa, fc = chain(moat_factory, filters)
    qid = send(m.port, sender="special@b.test", rcpt="held@example.test", subject="action")
    assert records(queue_file(m, "hold", qid)) == ["filter scan:[127.0.0.1]:%d" % fc.port]
    m.wait_log(r"%s: filter: RCPT from %s: <special@b\.test>: Sender address triggers FILTER "
               r"scan:\[127\.0\.0\.1\]:%d;" % (qid, OUTSIDE_RE, fc.port))


def test_empty_content_filter_records_nothing(moat_factory, filters):
    """The re-injection service (-o content_filter=) must not filter again."""
    m, fa, fc = chain(moat_factory, filters)
    # The re-injection service's own restrictions are permit_mynetworks,reject
    # (no HOLD), so the log and active/ tell.
    with Client(m.reinject_port, source="127.0.0.1") as c:
        c.ehlo("filter.test")
        check(c.cmd("XFORWARD NAME=orig.example ADDR=192.0.2.5"), 250)
        qid = queued_id_of(c, "held@example.test", "reinjected")
        c.quit()
    m.wait_log(r"%s: client=[\w.-]+\[127\.0\.0\.1\], orig_client=orig\.example\[192\.0\.2\.5\]$" % qid)
    # Not filtered again: either delivered or still in active/ without a filter record.
    files = m.queue_files("active")
    if qid in files:
        assert records(queue_file(m, "active", qid)) == []
    assert all(msg["data"].find(b"reinjected") < 0 for msg in fa.messages)


def queued_id_of(c, rcpt, subject):
    check(c.cmd("MAIL FROM:<a@b.test>"), 250)
    check(c.cmd("RCPT TO:<%s>" % rcpt), 250, what=rcpt)
    check(c.cmd("DATA"), 354)
    c.send(simple_message(subject) + ".\r\n")
    return queued_id(c.reply())


def test_per_service_content_filter(moat_factory, filters):
    """-o content_filter on one service; another with -o content_filter=
    (empty) records none even though main.cf sets one."""
    m = moat_factory(start=False)
    p1, p2 = m.alloc_port(), m.alloc_port()
    m.main.update({
        "mynetworks": "127.0.0.1/32",
        "content_filter": "smtp:[127.0.0.1]:10025",
        "smtpd_recipient_restrictions":
            "check_recipient_access inline:{held@example.test=HOLD}, permit_mynetworks, reject_unauth_destination",
    })
    m.master_extra += [
        "127.0.0.1:%d inet n - n - - smtpd" % p1,
        "  -o content_filter=scan:[127.0.0.1]:10030",
        "127.0.0.1:%d inet n - n - - smtpd" % p2,
        "  -o content_filter=",
    ]
    m.start()
    m.wait_listening(port=p1)
    m.wait_listening(port=p2)
    q0 = send(m.port, rcpt="held@example.test", subject="main")
    q1 = send(p1, rcpt="held@example.test", subject="svc1")
    q2 = send(p2, rcpt="held@example.test", subject="svc2")
    assert records(queue_file(m, "hold", q0)) == ["filter smtp:[127.0.0.1]:10025"]
    assert records(queue_file(m, "hold", q1)) == ["filter scan:[127.0.0.1]:10030"]
    data = queue_file(m, "hold", q2)
    assert records(data) == [] and data.startswith(b"MOAT-QUEUE 1\n")


def test_no_unknown_recipient_checks_on_the_reinjection_service(moat_factory):
    """The Internet-facing service refuses a recipient relay_recipient_maps
    does not list; a service with receive_override_options =
    no_unknown_recipient_checks (the re-injection side) does not check."""
    m = moat_factory(start=False)
    p = m.alloc_port()
    m.main.update({
        "mynetworks": "127.0.0.1/32",
        "relay_domains": "relay.test",
        "relay_recipient_maps": "inline:{known@relay.test=x}",
        "smtpd_recipient_restrictions":
            "check_recipient_access inline:{unknown@relay.test=HOLD}, permit_mynetworks, reject_unauth_destination",
    })
    m.master_extra += [
        "127.0.0.1:%d inet n - n - - smtpd" % p,
        "  -o receive_override_options=no_unknown_recipient_checks,no_header_body_checks,no_milters,"
        "no_address_mappings",
    ]
    m.start()
    m.wait_listening(port=p)
    with Client(m.port, source=OUTSIDE) as c:
        c.ehlo("client.test")
        check(c.cmd("MAIL FROM:<a@b.test>"), 250)
        check(c.cmd("RCPT TO:<unknown@relay.test>"), 550, "5.1.1",
              "<unknown@relay.test>: Recipient address rejected: User unknown in relay recipient table")
        c.quit()
    qid = send(p, rcpt="unknown@relay.test", subject="unchecked")
    assert m.queue_files("hold") == [qid]


# ------------------------------------------------------------ configuration errors

def config_check(m):
    m.write_config()
    p = subprocess.run([moat_bin(), "config", "check", "-c", m.dir], capture_output=True, text=True,
                       timeout=30, stdin=subprocess.DEVNULL)
    return p.returncode, p.stderr


def test_unknown_receive_override_option_is_a_load_error(moat_factory):
    m = moat_factory(start=False)
    m.master_extra += ["127.0.0.1:%d inet n - n - - smtpd" % m.alloc_port(),
                       "  -o receive_override_options=no_unknown_recipient_checks,no_header_checks"]
    rc, err = config_check(m)
    assert rc == 1, err
    assert re.search(r"master\.cf:[34]: receive_override_options: unknown value \"no_header_checks\"", err), err


def test_content_filter_without_transport_is_a_load_error(moat_factory):
    m = moat_factory(main={"content_filter": "[127.0.0.1]"}, start=False)
    rc, err = config_check(m)
    assert rc == 1, err
    assert re.search(r"main\.cf:\d+: content_filter: \"\[127\.0\.0\.1\]\": expected transport:destination", err), err


# ------------------------------------------------------------ the round trip

def test_content_filter_round_trip(moat_factory, filters):
    m, fa, fc = chain(moat_factory, filters)
    q1 = send(m.port, subject="round trip")
    mail = mail_with(m, "u", "round trip")
    head = mail.split(b"\n\n", 1)[0]
    assert b"\nX-Filtered: yes\n" in head
    # The filter saw moat's XFORWARD with the original client ...
    assert len(fa.messages) == 1, fa.messages
    xf = fa.messages[0]["xforward"]
    assert xf.get("ADDR") == "127.0.0.2", xf
    # ... and the re-injected message names it, never the filter (127.0.0.1).
    rec = received_headers(mail)
    assert len(rec) == 2, rec
    for r in rec:
        assert re.match(r"Received: from client\.test \(%s\) by mx\.example\.test \(moat\) with ESMTP id "
                        % OUTSIDE_RE.replace(r"\[", r" \["), r), rec
    assert not any("127.0.0.1" in r for r in rec), rec
    # Log: the second queue ID points back at the first and the real client.
    m.wait_log(r"smtpd\[\d+\]: ([0-9A-F]+): client=[\w.-]+\[127\.0\.0\.1\], orig_queue_id=%s, "
               r"orig_client=%s$" % (q1, OUTSIDE_RE))
    m.wait_log(r"smtp\[\d+\]: %s: to=<u@example\.test>, relay=127\.0\.0\.1\[127\.0\.0\.1\]:%d, .*status=sent "
               % (q1, fa.port))
    m.wait_queue_empty(30)
    assert fc.messages == []


def test_filter_action_round_trip(moat_factory, filters):
    m, fa, fc = chain(moat_factory, filters)
    send(m.port, sender="special@b.test", subject="by action")
    mail = mail_with(m, "u", "by action")
    assert b"\nX-Filtered: second\n" in mail and b"X-Filtered: yes" not in mail
    assert fa.messages == [] and len(fc.messages) == 1


def test_per_service_content_filter_round_trip(moat_factory, filters):
    """A service without a filter (-o content_filter=) delivers directly;
    one with -o content_filter=... uses its own filter."""
    m = moat_factory(start=False)
    plain, other = m.alloc_port(), m.alloc_port()
    b = m.alloc_port()
    fa = filters(b, b"X-Filtered: yes")
    fc = filters(b, b"X-Filtered: second")
    m.main.update({"mynetworks": "127.0.0.1/32", "content_filter": "scan:[127.0.0.1]:%d" % fa.port})
    m.master_extra += [
        "scan unix - - n - 10 smtp",
        "  -o smtp_send_xforward_command=yes",
        "127.0.0.1:%d inet n - n - - smtpd" % b,
        "  -o content_filter=",
        "  -o smtpd_authorized_xforward_hosts=127.0.0.0/8",
        "127.0.0.1:%d inet n - n - - smtpd" % plain,
        "  -o content_filter=",
        "127.0.0.1:%d inet n - n - - smtpd" % other,
        "  -o content_filter=scan:[127.0.0.1]:%d" % fc.port,
    ]
    m.start()
    for p in (b, plain, other):
        m.wait_listening(port=p)
    send(plain, subject="unfiltered")
    send(other, subject="other filter")
    send(m.port, subject="main filter")
    assert b"X-Filtered" not in mail_with(m, "u", "unfiltered")
    assert b"\nX-Filtered: second\n" in mail_with(m, "u", "other filter")
    assert b"\nX-Filtered: yes\n" in mail_with(m, "u", "main filter")
    assert len(fa.messages) == 1 and len(fc.messages) == 1
