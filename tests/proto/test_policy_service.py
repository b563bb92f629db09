"""check_policy_service against real policy servers: a small one written
here (answers chosen by the recipient's local part, counts connections
and requests, can be slow or hang up) and Debian's postgrey.

Owns: the test policy server (a thread per connection, loopback only) and
postgrey processes started with a private database, stopped by PID.
What is checked: the replies a client sees for each kind of answer
(Postfix's texts), PREPEND reaching the delivered message, the request
attributes, timeouts and closed connections ending in default_action
after the retries, one connection reused by many sessions, `moat check
--trace` showing the request and the answer, and greylisting by postgrey
end to end (a first attempt deferred, a retry after the delay accepted).
"""

import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time

import pytest

from moatlib import check, free_port, header_fields, simple_message, split_headers, wait_for

ATTRIBUTES = [
    "request", "protocol_state", "protocol_name", "client_address", "client_name", "client_port",
    "reverse_client_name", "server_address", "server_port", "helo_name", "sender", "recipient",
    "recipient_count", "queue_id", "instance", "size", "etrn_domain", "stress", "sasl_method",
    "sasl_username", "sasl_sender", "ccert_subject", "ccert_issuer", "ccert_fingerprint",
    "ccert_pubkey_fingerprint", "encryption_protocol", "encryption_cipher", "encryption_keysize",
    "policy_context", "compatibility_level", "mail_version",
]


class PolicyServer:
    """Postfix's policy protocol on 127.0.0.1:port.  The answer depends on
    the recipient's local part:
      reject    action=REJECT Go away
      dip       action=DEFER_IF_PERMIT Try later
      code450   action=450 4.2.0 Mailbox busy
      prepend   action=PREPEND X-Policy: checked by the test server
      noaction  a reply without an action attribute
      slow      nothing for `slow` seconds, then DUNNO
      close     the connection is closed without a reply
      closeonce closed the first time, then action=REJECT answered on retry
      other     action=DUNNO
    """

    def __init__(self, slow=3.0):
        self.port = free_port()
        self.slow = slow
        self.lock = threading.Lock()
        self.connections = 0
        self.requests = []          # each a list of (name, value) in the order sent
        self.closed_once = set()
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", self.port))
        self.sock.listen(64)
        self.stopping = False
        self.peers = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def endpoint(self):
        return "inet:127.0.0.1:%d" % self.port

    def _accept(self):
        while not self.stopping:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            with self.lock:
                self.connections += 1
                self.peers.append(c)
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c):
        buf = b""
        try:
            while True:
                while b"\n\n" not in buf:
                    chunk = c.recv(65536)
                    if not chunk:
                        return
                    buf += chunk
                text, buf = buf.split(b"\n\n", 1)
                attrs = [tuple(l.split("=", 1)) for l in text.decode("utf-8", "replace").split("\n")]
                with self.lock:
                    self.requests.append(attrs)
                rcpt = dict(attrs).get("recipient", "")
                local = rcpt.split("@")[0]
                if local == "close" or (local == "closeonce" and rcpt not in self.closed_once):
                    self.closed_once.add(rcpt)
                    return
                if local == "slow":
                    time.sleep(self.slow)
                reply = {
                    "reject": "action=REJECT Go away\n\n",
                    "dip": "action=DEFER_IF_PERMIT Try later\n\n",
                    "code450": "action=450 4.2.0 Mailbox busy\n\n",
                    "prepend": "action=PREPEND X-Policy: checked by the test server\n\n",
                    "noaction": "reason=none\n\n",
                    "closeonce": "action=REJECT answered on retry\n\n",
                }.get(local, "note=ignored\naction=DUNNO\n\n")
                c.sendall(reply.encode())
        except OSError:
            return
        finally:
            c.close()

    def for_rcpt(self, rcpt):
        with self.lock:
            return [dict(r) for r in self.requests if dict(r).get("recipient") == rcpt]

    def stop(self):
        self.stopping = True
        self.sock.close()
        with self.lock:
            for p in self.peers:
                try:
                    p.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


@pytest.fixture
def policy_server():
    s = PolicyServer()
    yield s
    s.stop()


def policy_moat(moat_factory, server, settings="", start=True, **main):
    """A daemon whose recipient restrictions end with the policy service
    (per-service settings in the { } form when given)."""
    svc = ("{ %s, %s }" % (server.endpoint(), settings)) if settings else server.endpoint()
    conf = {"smtpd_recipient_restrictions": "reject_unauth_destination, check_policy_service %s" % svc}
    conf.update(main)
    return moat_factory(main=conf, start=start)


def start_rcpt(m, sender="a@b.test"):
    c = m.connect()
    c.ehlo("client.test")
    c.mail(sender)
    return c


# ------------------------------------------------------------ answers

def test_each_kind_of_answer_reaches_the_client(moat_factory, policy_server):
    m = policy_moat(moat_factory, policy_server)
    with start_rcpt(m) as c:
        check(c.cmd("RCPT TO:<dunno@example.test>"), 250, "2.1.5", "Ok")
        check(c.cmd("RCPT TO:<reject@example.test>"), 554, "5.7.1",
              "<reject@example.test>: Recipient address rejected: Go away")
        check(c.cmd("RCPT TO:<dip@example.test>"), 450, "4.7.1",
              "<dip@example.test>: Recipient address rejected: Try later")
        check(c.cmd("RCPT TO:<code450@example.test>"), 450, "4.2.0",
              "<code450@example.test>: Recipient address rejected: Mailbox busy")
        check(c.cmd("RCPT TO:<prepend@example.test>"), 250, "2.1.5", "Ok")
        c.data(simple_message("policy"))
        c.quit()
    for user in ("dunno", "prepend"):
        mail = m.wait_mails(user)[0]
        head, _ = split_headers(mail)
        fields = header_fields(head)
        assert ("X-Policy", b"checked by the test server") in fields, head
    assert not m.mails("reject") and not m.mails("dip")
    # (the queue ID: an earlier recipient was accepted)
    m.wait_log(r"[0-9A-F]+: reject: RCPT from \S+: 554 5\.7\.1 <reject@example\.test>: Recipient address "
               r"rejected: Go away; from=<a@b\.test> to=<reject@example\.test> proto=ESMTP helo=<client\.test> "
               r"rule=recipient:check_policy_service inet:127\.0\.0\.1:%d" % policy_server.port)


def test_request_attributes(moat_factory, policy_server):
    m = policy_moat(moat_factory, policy_server, smtpd_policy_service_policy_context="moat-test",
                    smtpd_data_restrictions="check_policy_service %s" % policy_server.endpoint())
    with start_rcpt(m, "sender@b.test") as c:
        client_port = c.sock.getsockname()[1]
        c.rcpt("one@example.test")
        c.rcpt("two@example.test")
        c.data(simple_message("attrs"))
        c.quit()
    with policy_server.lock:
        reqs = list(policy_server.requests)
    assert len(reqs) == 3, reqs
    for r in reqs:
        assert [name for name, _ in r] == ATTRIBUTES, r
    one, two, data = (dict(r) for r in reqs)
    assert one["request"] == "smtpd_access_policy"
    assert one["protocol_state"] == "RCPT" and one["protocol_name"] == "ESMTP"
    assert one["client_address"] == "127.0.0.1" and one["client_port"] == str(client_port)
    assert one["server_address"] == "127.0.0.1" and one["server_port"] == str(m.port)
    assert one["helo_name"] == "client.test" and one["sender"] == "sender@b.test"
    assert one["recipient"] == "one@example.test" and one["recipient_count"] == "0"
    assert one["queue_id"] == ""
    assert one["policy_context"] == "moat-test"
    assert one["sasl_username"] == "" and one["encryption_keysize"] == "0" and one["stress"] == ""
    assert one["instance"] and one["instance"] == two["instance"] == data["instance"]
    assert two["recipient"] == "two@example.test"
    assert data["protocol_state"] == "DATA" and data["recipient"] == "" and data["recipient_count"] == "2"


# ------------------------------------------------------------ failures

def test_slow_server_gets_default_action(moat_factory, policy_server):
    m = policy_moat(moat_factory, policy_server, "timeout=1s")
    with start_rcpt(m) as c:
        r = c.cmd("RCPT TO:<slow@example.test>", timeout=30)
        check(r, 451, "4.3.5", "<slow@example.test>: Recipient address rejected: Server configuration problem")
        # the same server still answers other requests
        check(c.cmd("RCPT TO:<reject@example.test>"), 554, "5.7.1")
    m.wait_log(r"warning: problem talking to server inet:127\.0\.0\.1:%d: timeout after 1s waiting for the reply"
               % policy_server.port)
    assert len(policy_server.for_rcpt("slow@example.test")) == 2   # tried twice (try_limit 2)


def test_per_service_default_action(moat_factory, policy_server):
    m = policy_moat(moat_factory, policy_server, "timeout=1s, try_limit=1, default_action=DUNNO")
    with start_rcpt(m) as c:
        check(c.cmd("RCPT TO:<slow@example.test>", timeout=30), 250, "2.1.5", "Ok")
        check(c.cmd("RCPT TO:<noaction@example.test>"), 250, "2.1.5", "Ok")
    m.wait_log(r"warning: policy server inet:127\.0\.0\.1:%d: reply without an action attribute"
               % policy_server.port)
    assert len(policy_server.for_rcpt("slow@example.test")) == 1


def test_closed_connection_is_retried(moat_factory, policy_server):
    m = policy_moat(moat_factory, policy_server, smtpd_policy_service_default_action="DEFER_IF_PERMIT policy down")
    with start_rcpt(m) as c:
        # closed every time: retried once, then the default action
        check(c.cmd("RCPT TO:<close@example.test>", timeout=30), 450, "4.7.1",
              "<close@example.test>: Recipient address rejected: policy down")
        # closed the first time only: the retry answers
        check(c.cmd("RCPT TO:<closeonce@example.test>", timeout=30), 554, "5.7.1",
              "<closeonce@example.test>: Recipient address rejected: answered on retry")
    assert len(policy_server.for_rcpt("close@example.test")) == 2
    assert len(policy_server.for_rcpt("closeonce@example.test")) == 2
    m.wait_log(r"warning: policy service inet:127\.0\.0\.1:%d \(127\.0\.0\.1:%d\): connection closed by server "
               r"before the reply; trying again in 1s \(attempt 2 of 2\)" % (policy_server.port, policy_server.port))


def test_server_down_is_a_4xx(moat_factory):
    port = free_port()
    m = moat_factory(main={"smtpd_recipient_restrictions":
                           "reject_unauth_destination, check_policy_service inet:127.0.0.1:%d" % port})
    with start_rcpt(m) as c:
        check(c.cmd("RCPT TO:<u@example.test>", timeout=30), 451, "4.3.5",
              "<u@example.test>: Recipient address rejected: Server configuration problem")
    m.wait_log(r"warning: problem talking to server inet:127\.0\.0\.1:%d: connect: Connection refused" % port)


def test_client_gone_while_waiting(moat_factory, policy_server):
    """A session that ends while its policy request runs cancels it; the
    answer that comes later is read and dropped, and the connection goes
    on serving others."""
    policy_server.slow = 1.0
    m = policy_moat(moat_factory, policy_server, "timeout=10s")
    c = start_rcpt(m)
    c.send("RCPT TO:<slow@example.test>\r\n")
    wait_for(lambda: policy_server.for_rcpt("slow@example.test"), 10, what="the slow request")
    c.close()
    m.wait_log(r"lost connection after RCPT from ")
    time.sleep(policy_server.slow + 0.5)
    with start_rcpt(m) as c:
        check(c.cmd("RCPT TO:<reject@example.test>"), 554, "5.7.1")
        c.quit()
    with policy_server.lock:
        assert policy_server.connections == 1
    assert len(policy_server.for_rcpt("slow@example.test")) == 1


# ------------------------------------------------------------ connections

def test_one_connection_serves_every_session(moat_factory, policy_server):
    m = policy_moat(moat_factory, policy_server)
    for i in range(3):
        with start_rcpt(m, "s%d@b.test" % i) as c:
            c.rcpt("a%d@example.test" % i)
            c.rcpt("b%d@example.test" % i)
            c.quit()
    with policy_server.lock:
        assert len(policy_server.requests) == 6
        assert policy_server.connections == 1


def test_reload_keeps_the_connection(moat_factory, policy_server):
    """A reload that leaves the service as it was keeps its connections;
    one that changes a setting makes a new client."""
    m = policy_moat(moat_factory, policy_server)
    with start_rcpt(m) as c:
        c.rcpt("a@example.test")
        c.quit()
    m.reload()
    m.wait_log(r"master\[\d+\]: reload -- ")
    with start_rcpt(m) as c:
        c.rcpt("b@example.test")
        c.quit()
    with policy_server.lock:
        assert policy_server.connections == 1
    m.main["smtpd_policy_service_max_idle"] = "60s"
    m.reload()
    m.wait_log(r"master\[\d+\]: reload -- ", count=2)
    with start_rcpt(m) as c:
        c.rcpt("c@example.test")
        c.quit()
    with policy_server.lock:
        assert policy_server.connections == 2
        assert len(policy_server.requests) == 3


def test_parallel_sessions_share_a_bounded_pool(moat_factory, policy_server):
    m = policy_moat(moat_factory, policy_server, "connection_limit=2")
    clients = [start_rcpt(m, "p%d@b.test" % i) for i in range(5)]
    try:
        for i, c in enumerate(clients):
            c.send("RCPT TO:<r%d@example.test>\r\n" % i)
        for c in clients:
            check(c.reply(timeout=30), 250, "2.1.5", "Ok")
    finally:
        for c in clients:
            c.close()
    with policy_server.lock:
        assert len(policy_server.requests) == 5
        assert 1 <= policy_server.connections <= 2


# ------------------------------------------------------------ moat check

def test_moat_check_traces_request_and_answer(moat_factory, policy_server):
    m = policy_moat(moat_factory, policy_server, start=False)
    m.write_config()
    r = m.run_cli("check", "--client", "192.0.2.7", "--helo", "h.example.net", "--from", "a@b.test",
                  "--rcpt", "reject@example.test", "--trace")
    out = r.stdout
    ep = re.escape(policy_server.endpoint())
    assert re.search(r"^RCPT TO:<reject@example\.test>: 554 5\.7\.1 <reject@example\.test>: Recipient address "
                     r"rejected: Go away; rule=recipient:check_policy_service %s$" % ep, out, re.M), out
    assert re.search(r"^  recipient: check_policy_service %s: request:$" % ep, out, re.M), out
    for line in ("request=smtpd_access_policy", "protocol_state=RCPT", "client_address=192.0.2.7",
                 "helo_name=h.example.net", "sender=a@b.test", "recipient=reject@example.test"):
        assert "\n  recipient:     %s\n" % line in out, out
    assert re.search(r"^  recipient: check_policy_service %s: answer: action=REJECT Go away \(\d+ ms\)$" % ep,
                     out, re.M), out
    assert policy_server.for_rcpt("reject@example.test")[0]["client_address"] == "192.0.2.7"


# ------------------------------------------------------------ postgrey

class Postgrey:
    """Debian's postgrey on a loopback port with a private database."""

    def __init__(self, delay):
        # Not under pytest's tmp_path: postgrey runs as its own account,
        # which cannot enter root's private pytest directories.
        self.dir = tempfile.mkdtemp(prefix="moat-postgrey-")
        self.db = os.path.join(self.dir, "db")
        os.makedirs(self.db, exist_ok=True)
        self.pidfile = os.path.join(self.dir, "postgrey.pid")
        self.port = free_port()
        self.delay = delay
        self.pid = None

    def start(self):
        args = [shutil.which("postgrey"), "--inet=127.0.0.1:%d" % self.port, "--dbdir=%s" % self.db,
                "--delay=%d" % self.delay, "--pidfile=%s" % self.pidfile, "--daemonize"]
        if os.geteuid() == 0:
            # postgrey drops root for its own account: the database must be its
            pw = pwd.getpwnam("postgrey")
            for d in (self.dir, self.db):
                os.chown(d, pw.pw_uid, pw.pw_gid)
        else:
            pw = pwd.getpwuid(os.geteuid())
            args += ["--user=%s" % pw.pw_name, "--group=%d" % os.getegid()]
        r = subprocess.run(args, capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, "postgrey did not start: %s%s" % (r.stdout, r.stderr)
        self.pid = int(wait_for(lambda: self._read_pid(), 10, what="postgrey pid file"))

        def listening():
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return True
            except OSError:
                return False
        wait_for(listening, 15, what="postgrey listening")

    def _read_pid(self):
        try:
            with open(self.pidfile) as f:
                return f.read().strip() or None
        except OSError:
            return None

    def stop(self):
        try:
            if self.pid:
                self._stop()
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)

    def _stop(self):
        try:
            os.kill(self.pid, signal.SIGTERM)
        except ProcessLookupError:
            return

        def gone():
            try:
                os.kill(self.pid, 0)
                return False
            except ProcessLookupError:
                return True
        try:
            wait_for(gone, 10, what="postgrey to exit")
        except AssertionError:
            os.kill(self.pid, signal.SIGKILL)


@pytest.fixture
def postgrey():
    if not shutil.which("postgrey"):
        pytest.skip("postgrey is not installed (scripts/deps.sh installs it)")
    try:
        pwd.getpwnam("postgrey")
    except KeyError:
        if os.geteuid() == 0:
            pytest.skip("no postgrey account (reinstall the postgrey package)")
    p = Postgrey(delay=2)
    try:
        p.start()
        yield p
    finally:
        p.stop()


def test_postgrey_greylists_then_accepts(moat_factory, postgrey):
    m = moat_factory(main={"smtpd_recipient_restrictions":
                           "reject_unauth_destination, check_policy_service inet:127.0.0.1:%d" % postgrey.port})
    with start_rcpt(m, "sender@b.test") as c:
        r = c.cmd("RCPT TO:<grey@example.test>")
        # 4.2.0: postgrey's DSN for clients that send etrn_domain (Postfix
        # 2.3 and later, and moat), a workaround for Exchange
        check(r, 450, "4.2.0", "<grey@example.test>: Recipient address rejected: Greylisted, see "
                               "http://postgrey.schweikert.ch/help/example.test.html")
        c.quit()
    m.wait_log(r"NOQUEUE: reject: RCPT from \S+: 450 4\.2\.0 <grey@example\.test>: Recipient address rejected: "
               r"Greylisted")
    # A retry before the delay is still greylisted; after it, accepted,
    # with postgrey's X-Greylist header on the message.
    with start_rcpt(m, "sender@b.test") as c:
        check(c.cmd("RCPT TO:<grey@example.test>"), 450, "4.2.0")
        c.quit()
    time.sleep(postgrey.delay + 1.5)
    with start_rcpt(m, "sender@b.test") as c:
        check(c.cmd("RCPT TO:<grey@example.test>"), 250, "2.1.5", "Ok")
        c.data(simple_message("greylisted"))
        c.quit()
    head, _ = split_headers(m.wait_mails("grey")[0])
    fields = dict(header_fields(head))
    assert re.match(rb"delayed \d+ seconds by postgrey-", fields.get("X-Greylist", b"")), head
    # another triplet is greylisted on its own
    with start_rcpt(m, "other@b.test") as c:
        check(c.cmd("RCPT TO:<grey@example.test>"), 450, "4.2.0")
        c.quit()
