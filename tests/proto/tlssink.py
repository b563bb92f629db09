"""A receiving SMTP server with STARTTLS, for the client TLS tests
(tests/proto/test_tls_client.py): Python's aiosmtpd (python3-aiosmtpd),
run as its own process by /usr/bin/python3, so a real TLS stack no one
here wrote answers moat's SMTP client.

Owns: one server process per TlsSink, listening on one loopback address,
writing what it saw into its own directory, which the TlsSink object in
the test reads back.  Must never: listen on anything but a loopback
address, or outlive SIGTERM.

    from tlssink import TlsSink
    s = TlsSink(tmpdir, host="127.0.0.61", port=None, cert=..., key=...,
                starttls=True, require_starttls=False, break_handshake=False)
    s.start()               # returns once listening; s.host, s.port
    s.messages()            # accepted messages, in arrival order, each
                            # {"mail_from", "rcpt_tos", "tls": None or
                            #  {"version": "TLSv1.3", "cipher": "..."}}
    s.wait_messages(n)
    s.stats()               # {"connections", "starttls", "handshakes"}
    s.stop()                # SIGTERM by PID, wait

starttls=False: no certificate, no STARTTLS in the EHLO reply.
break_handshake=True: STARTTLS is offered and answered "220"; once the
client's first TLS bytes arrive the server answers with bytes that are no
TLS record and hangs up, so the client's handshake fails (the "may falls
back to plaintext" case).
lmtp=True: LMTP (LHLO; one recipient per message, one reply).
stall=True: "220" to STARTTLS, then silence until the client goes (a
handshake that never completes: the client's smtp_starttls_timeout).
inject=True: the "220" to STARTTLS comes in one write with a plaintext
"250 injected" line after it (the response-injection attack on clients,
the CVE-2011-0411 class); the handshake then proceeds normally.

Files in the directory: config.json, ready ({"port", "pid"}),
stats.json, msg/NNNNNN.json (written atomically), tlssink.stderr.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
PYTHON = "/usr/bin/python3"


def _loopback(host):
    return host == "::1" or host.startswith("127.")


def _write_json(path, obj):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f)
    os.replace(tmp, path)


class TlsSink:
    def __init__(self, directory, host="127.0.0.1", port=None, cert=None, key=None, starttls=True,
                 require_starttls=False, break_handshake=False, inject=False, stall=False, lmtp=False,
                 name="tlssink"):
        if not _loopback(host):
            raise ValueError("TlsSink listens on loopback addresses only, not %r" % host)
        self.dir = os.path.join(str(directory), name)
        self.host = host
        self.port = port
        self.conf = {"host": host, "port": port, "cert": cert, "key": key, "starttls": starttls,
                     "require_starttls": require_starttls, "break_handshake": break_handshake,
                     "inject": inject, "stall": stall, "lmtp": lmtp}
        self.proc = None

    def start(self, timeout=10.0):
        os.makedirs(os.path.join(self.dir, "msg"), exist_ok=True)
        if self.port is None:
            with socket.socket(socket.AF_INET6 if ":" in self.host else socket.AF_INET) as s:
                s.bind((self.host, 0))
                self.port = s.getsockname()[1]
        self.conf["port"] = self.port
        _write_json(os.path.join(self.dir, "config.json"), self.conf)
        ready = os.path.join(self.dir, "ready")
        if os.path.exists(ready):
            os.unlink(ready)
        err = open(os.path.join(self.dir, "tlssink.stderr"), "ab")
        self.proc = subprocess.Popen([PYTHON, os.path.join(HERE, "tlssink.py"), self.dir],
                                     stdin=subprocess.DEVNULL, stdout=err, stderr=err)
        err.close()
        deadline = time.monotonic() + timeout
        while not os.path.exists(ready):
            if self.proc.poll() is not None:
                raise AssertionError("tlssink exited with %s:\n%s" % (self.proc.returncode, self.stderr()))
            if time.monotonic() > deadline:
                raise AssertionError("tlssink did not start:\n%s" % self.stderr())
            time.sleep(0.02)
        return self

    def stop(self):
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()

    def stderr(self):
        try:
            with open(os.path.join(self.dir, "tlssink.stderr"), errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def problems(self):
        """A traceback in the server is a test failure."""
        text = self.stderr()
        return [text] if "Traceback" in text else []

    def messages(self):
        d = os.path.join(self.dir, "msg")
        out = []
        for name in sorted(os.listdir(d)):
            if name.endswith(".json"):
                with open(os.path.join(d, name)) as f:
                    out.append(json.load(f))
        return out

    def wait_messages(self, n, timeout=20.0):
        deadline = time.monotonic() + timeout
        while True:
            msgs = self.messages()
            if len(msgs) >= n:
                return msgs
            if time.monotonic() > deadline:
                raise AssertionError("tlssink got %d of %d messages; stats %s" % (len(msgs), n, self.stats()))
            time.sleep(0.05)

    def stats(self):
        try:
            with open(os.path.join(self.dir, "stats.json")) as f:
                return json.load(f)
        except OSError:
            return {"connections": 0, "starttls": 0, "handshakes": 0}


# ------------------------------------------------------------- the server

def _serve(directory):
    import asyncio
    import ssl

    from aiosmtpd.lmtp import LMTP
    from aiosmtpd.smtp import SMTP

    with open(os.path.join(directory, "config.json")) as f:
        conf = json.load(f)
    stats = {"connections": 0, "starttls": 0, "handshakes": 0}
    counter = [0]

    def bump(key):
        stats[key] += 1
        _write_json(os.path.join(directory, "stats.json"), stats)

    ctx = None
    if conf["starttls"]:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(conf["cert"], conf["key"])

    class Handler:
        def handle_STARTTLS(self, server, session, envelope):   # aiosmtpd calls it, never awaits
            bump("handshakes")
            return True

        async def handle_DATA(self, server, session, envelope):
            counter[0] += 1
            tls = None
            if session.ssl:
                cipher = session.ssl.get("cipher")
                tls = {"version": cipher[1] if cipher else None, "cipher": cipher[0] if cipher else None}
            _write_json(os.path.join(directory, "msg", "%06d.json" % counter[0]),
                        {"mail_from": envelope.mail_from, "rcpt_tos": list(envelope.rcpt_tos), "tls": tls,
                         "size": len(envelope.content or b"")})
            return "250 2.0.0 Ok: queued as T%06d" % counter[0]

    class Server(LMTP if conf["lmtp"] else SMTP):
        def connection_made(self, transport):
            if self.transport is None:
                bump("connections")
            super().connection_made(transport)

        async def push(self, status):
            if conf["inject"] and status.startswith("220 Ready to start TLS"):
                status += "\r\n250 injected"     # one write: both lines in one segment
            return await super().push(status)

        async def smtp_STARTTLS(self, arg):
            bump("starttls")
            if not conf["break_handshake"] and not conf["stall"]:
                return await super().smtp_STARTTLS(arg)
            await self.push("220 Ready to start TLS")
            if conf["stall"]:
                while await self._reader.read(4096):
                    pass
                self.transport.close()
                return
            try:
                await asyncio.wait_for(self._reader.read(5), 10)   # the ClientHello's record header
            except (asyncio.TimeoutError, ConnectionError):
                pass
            # What follows is no TLS record: the client's handshake fails.
            self.transport.write(b"this is not TLS\r\n")
            self.transport.close()

    handler = Handler()
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)

    def factory():
        return Server(handler, hostname="tlssink.test", tls_context=ctx,
                      require_starttls=conf["require_starttls"], decode_data=False)

    server = loop.run_until_complete(loop.create_server(factory, host=conf["host"], port=conf["port"]))
    loop.add_signal_handler(signal.SIGTERM, loop.stop)
    _write_json(os.path.join(directory, "stats.json"), stats)
    _write_json(os.path.join(directory, "ready"), {"port": conf["port"], "pid": os.getpid()})
    try:
        loop.run_forever()
    finally:
        server.close()
        loop.close()


if __name__ == "__main__":
    _serve(sys.argv[1])
