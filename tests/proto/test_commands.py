"""SMTP command replies: greeting, HELO/EHLO, MAIL, RCPT, DATA/BDAT
state errors, RSET, NOOP, QUIT, HELP, VRFY, unknown commands.

Codes, enhanced codes and texts are Postfix's (smtpd.c); a postmaster
reading moat's replies should see what Postfix would have said.
"""

import pytest

from moatlib import HOSTNAME, check

# The tests connect from 127.0.0.1; keep it outside mynetworks so that mail
# for other domains meets the relay guard (554 Relay access denied) rather
# than being relayed.
SHARED_MAIN = {"mynetworks": "192.0.2.0/24",
               "smtpd_recipient_restrictions": "permit_mynetworks, reject_unauth_destination"}

EHLO_KEYWORDS = ["PIPELINING", "SIZE 10240000", "VRFY", "ENHANCEDSTATUSCODES",
                 "8BITMIME", "SMTPUTF8", "CHUNKING"]


def ehlo_keywords(r):
    assert r.lines[0] == HOSTNAME, "first EHLO line must be the hostname: %s" % r
    return [l.upper() for l in r.lines[1:]]


# ------------------------------------------------------------ greeting

def test_greeting(shared_moat):
    with shared_moat.connect() as c:
        check(c.greeting, 220, msg=None)
        assert c.greeting.lines == ["%s ESMTP moat" % HOSTNAME]
        assert len(c.greeting.lines) == 1
        c.quit()


# ------------------------------------------------------------ HELO / EHLO

def test_ehlo_keywords(shared_moat):
    with shared_moat.connect() as c:
        r = c.cmd("EHLO client.test")
        check(r, 250)
        kws = ehlo_keywords(r)
        for k in EHLO_KEYWORDS:
            assert k in kws, "%s missing from EHLO reply %s" % (k, r)
        assert len(kws) == len(set(kws)), "keyword announced twice: %s" % r
        c.quit()


def test_ehlo_announces_only_what_works(shared_moat):
    # A keyword in the EHLO reply is a promise: its command or parameter
    # must not then be refused as unknown.
    with shared_moat.connect() as c:
        kws = ehlo_keywords(c.ehlo())
        probes = {"STARTTLS": "STARTTLS", "ETRN": "ETRN example.test", "AUTH": "AUTH PLAIN",
                  "EXPN": "EXPN list", "XCLIENT": "XCLIENT NAME=x", "XFORWARD": "XFORWARD NAME=x"}
        for kw in kws:
            verb = kw.split()[0]
            if verb in probes:
                r = c.cmd(probes[verb])
                assert r.code != 502, "%s announced but %s" % (kw, r)
                break     # the probe may have changed the session state
        if "DSN" in kws:
            r = c.cmd("MAIL FROM:<a@b.test> RET=HDRS")
            assert r.code == 250, "DSN announced but RET= refused: %s" % r
        c.close()


def test_helo(shared_moat):
    with shared_moat.connect() as c:
        r = c.cmd("HELO client.test")
        check(r, 250)
        assert r.lines == [HOSTNAME]
        c.quit()


@pytest.mark.parametrize("verb", ["HELO", "EHLO"])
def test_helo_without_argument(shared_moat, verb):
    with shared_moat.connect() as c:
        c.expect(verb, 501, "5.5.4", "Syntax: %s hostname" % verb)
        c.expect(verb + " ", 501, "5.5.4", "Syntax: %s hostname" % verb)
        # The session goes on.
        c.expect("NOOP", 250, "2.0.0", "Ok")
        c.quit()


def test_commands_are_case_insensitive(shared_moat):
    with shared_moat.connect() as c:
        check(c.cmd("ehlo client.test"), 250)
        c.expect("mail from:<a@b.test>", 250, "2.1.0", "Ok")
        c.expect("rcpt To:<u@example.test>", 250, "2.1.5", "Ok")
        c.expect("rset", 250, "2.0.0", "Ok")
        c.quit()


def test_ehlo_twice_resets_transaction(shared_moat):
    # RFC 5321 4.1.4: EHLO in the middle of a transaction clears it.
    with shared_moat.connect() as c:
        c.ehlo()
        c.mail()
        c.ehlo()
        c.expect("RCPT TO:<u@example.test>", 503, "5.5.1", "Error: need MAIL command")
        c.mail()
        c.quit()


def test_discard_ehlo_keywords(moat_factory):
    m = moat_factory(main={"smtpd_discard_ehlo_keywords": "chunking, pipelining, silent-discard"})
    with m.connect() as c:
        kws = ehlo_keywords(c.ehlo())
        assert "CHUNKING" not in kws
        assert "PIPELINING" not in kws
        for k in ("SIZE 10240000", "VRFY", "ENHANCEDSTATUSCODES", "8BITMIME", "SMTPUTF8"):
            assert k in kws
        c.quit()


def test_size_keyword_follows_message_size_limit(moat_factory):
    m = moat_factory(main={"message_size_limit": "20480"})
    with m.connect() as c:
        kws = ehlo_keywords(c.ehlo())
        assert "SIZE 20480" in kws
        c.quit()


# ------------------------------------------------------------ MAIL

def test_mail_ok(shared_moat):
    with shared_moat.connect() as c:
        c.ehlo()
        c.expect("MAIL FROM:<a@b.test>", 250, "2.1.0", "Ok")
        c.quit()


def test_mail_null_sender(shared_moat):
    with shared_moat.connect() as c:
        c.ehlo()
        c.expect("MAIL FROM:<>", 250, "2.1.0", "Ok")
        c.expect("RCPT TO:<u@example.test>", 250, "2.1.5", "Ok")
        c.quit()


def test_mail_without_helo_allowed_by_default(shared_moat):
    with shared_moat.connect() as c:
        c.expect("MAIL FROM:<a@b.test>", 250, "2.1.0", "Ok")
        c.quit()


def test_mail_nested(shared_moat):
    with shared_moat.connect() as c:
        c.ehlo()
        c.mail()
        c.expect("MAIL FROM:<c@d.test>", 503, "5.5.1", "Error: nested MAIL command")
        # The first transaction is intact.
        c.expect("RCPT TO:<u@example.test>", 250, "2.1.5", "Ok")
        c.quit()


@pytest.mark.parametrize("line", ["MAIL", "MAIL <a@b.test>", "MAIL TO:<a@b.test>", "MAIL FROM"])
def test_mail_syntax(shared_moat, line):
    with shared_moat.connect() as c:
        c.ehlo()
        c.expect(line, 501, "5.5.4", "Syntax: MAIL FROM:<address>")
        c.mail()    # no transaction was started by the bad command
        c.quit()


@pytest.mark.parametrize("path", ["<a@b.test", "<a@b..test>", "<a b@c.test>",
                                  "<\"unterminated@b.test>"])
def test_mail_bad_address(shared_moat, path):
    with shared_moat.connect() as c:
        c.ehlo()
        c.expect("MAIL FROM:" + path, 501, "5.1.7", "Bad sender address syntax")
        c.mail()
        c.quit()


def test_mail_size_over_limit(shared_moat):
    with shared_moat.connect() as c:
        c.ehlo()
        c.expect("MAIL FROM:<a@b.test> SIZE=10240001", 552, "5.3.4",
                 "Message size exceeds fixed limit")
        c.expect("MAIL FROM:<a@b.test> SIZE=10240000", 250, "2.1.0", "Ok")
        c.quit()


@pytest.mark.parametrize("value", ["abc", "", "-1", "99999999999999999999999999", "12x"])
def test_mail_size_syntax(shared_moat, value):
    with shared_moat.connect() as c:
        c.ehlo()
        c.expect("MAIL FROM:<a@b.test> SIZE=" + value, 501, "5.5.4", "Bad message size syntax")
        c.mail()
        c.quit()


@pytest.mark.parametrize("line", ["MAIL FROM: <a@b.test>", "MAIL FROM:a@b.test",
                                  "MAIL FROM:<a@b.test>  SIZE=100",
                                  "MAIL  FROM:<a@b.test>"])
def test_mail_lenient_forms(shared_moat, line):
    # Postfix (strict_rfc821_envelopes = no) takes these common client quirks.
    with shared_moat.connect() as c:
        c.ehlo()
        c.expect(line, 250, "2.1.0", "Ok")
        c.expect("RCPT TO:<u@example.test>", 250, "2.1.5", "Ok")
        c.quit()


def test_mail_size_small(shared_moat):
    with shared_moat.connect() as c:
        c.ehlo()
        c.expect("MAIL FROM:<a@b.test> SIZE=1000", 250, "2.1.0", "Ok")
        c.quit()


@pytest.mark.parametrize("body", ["7BIT", "8BITMIME", "8bitmime"])
def test_mail_body_ok(shared_moat, body):
    with shared_moat.connect() as c:
        c.ehlo()
        c.expect("MAIL FROM:<a@b.test> BODY=" + body, 250, "2.1.0", "Ok")
        c.quit()


@pytest.mark.parametrize("body", ["BINARYMIME", "FOO", ""])
def test_mail_body_bad(shared_moat, body):
    with shared_moat.connect() as c:
        c.ehlo()
        c.expect("MAIL FROM:<a@b.test> BODY=" + body, 501, "5.5.4", "Bad message body type")
        c.quit()


def test_mail_smtputf8_param(shared_moat):
    with shared_moat.connect() as c:
        c.ehlo()
        c.expect("MAIL FROM:<a@b.test> SMTPUTF8", 250, "2.1.0", "Ok")
        c.quit()


def test_mail_unknown_parameter(shared_moat):
    with shared_moat.connect() as c:
        c.ehlo()
        c.expect("MAIL FROM:<a@b.test> XFOO", 555, "5.5.4", "Unsupported option: XFOO")
        r = c.cmd("MAIL FROM:<a@b.test> FOO=bar")
        check(r, 555, "5.5.4")
        assert r.msg.startswith("Unsupported option: FOO"), r
        c.quit()


def test_mail_unicode_needs_smtputf8(shared_moat):
    with shared_moat.connect() as c:
        c.ehlo()
        c.expect("MAIL FROM:<jösé@b.test>", 553, "5.6.7",
                 "Must declare SMTPUTF8 to send unicode address")
        c.expect("MAIL FROM:<jösé@b.test> SMTPUTF8", 250, "2.1.0", "Ok")
        c.quit()


def test_mail_helo_required(moat_factory):
    m = moat_factory(main={"smtpd_helo_required": "yes"})
    with m.connect() as c:
        c.expect("MAIL FROM:<a@b.test>", 503, "5.5.1", "Error: send HELO/EHLO first")
        check(c.cmd("HELO client.test"), 250)
        c.expect("MAIL FROM:<a@b.test>", 250, "2.1.0", "Ok")
        c.quit()


def test_smtputf8_disabled(moat_factory):
    m = moat_factory(main={"smtputf8_enable": "no"})
    with m.connect() as c:
        kws = ehlo_keywords(c.ehlo())
        assert "SMTPUTF8" not in kws
        r = c.cmd("MAIL FROM:<a@b.test> SMTPUTF8")
        check(r, 555, "5.5.4")
        c.expect("MAIL FROM:<a@b.test>", 250, "2.1.0", "Ok")
        c.quit()


# ------------------------------------------------------------ RCPT

def test_rcpt_ok(shared_moat):
    with shared_moat.connect() as c:
        c.ehlo()
        c.mail()
        c.expect("RCPT TO:<u@example.test>", 250, "2.1.5", "Ok")
        c.expect("RCPT TO:<U2@EXAMPLE.TEST>", 250, "2.1.5", "Ok")
        c.expect("RCPT TO:<u3@localhost>", 250, "2.1.5", "Ok")
        c.quit()


def test_rcpt_before_mail(shared_moat):
    with shared_moat.connect() as c:
        c.ehlo()
        c.expect("RCPT TO:<u@example.test>", 503, "5.5.1", "Error: need MAIL command")
        c.quit()


@pytest.mark.parametrize("line", ["RCPT", "RCPT <u@example.test>", "RCPT FROM:<u@example.test>",
                                  "RCPT TO"])
def test_rcpt_syntax(shared_moat, line):
    with shared_moat.connect() as c:
        c.ehlo()
        c.mail()
        c.expect(line, 501, "5.5.4", "Syntax: RCPT TO:<address>")
        c.rcpt("u@example.test")
        c.quit()


@pytest.mark.parametrize("path", ["<u@example.test", "<u@example..test>", "<u v@example.test>",
                                  "<>"])
def test_rcpt_bad_address(shared_moat, path):
    with shared_moat.connect() as c:
        c.ehlo()
        c.mail()
        c.expect("RCPT TO:" + path, 501, "5.1.3", "Bad recipient address syntax")
        c.rcpt("u@example.test")
        c.quit()


def test_rcpt_relay_denied(shared_moat):
    with shared_moat.connect() as c:
        c.ehlo()
        c.mail()
        c.expect("RCPT TO:<u@other.test>", 554, "5.7.1", "<u@other.test>: Relay access denied")
        # A rejected recipient does not end the transaction.
        c.rcpt("u@example.test")
        c.quit()


def test_rcpt_postmaster_without_domain(shared_moat):
    with shared_moat.connect() as c:
        c.ehlo()
        c.mail()
        c.expect("RCPT TO:<postmaster>", 250, "2.1.5", "Ok")
        c.expect("RCPT TO:<Postmaster>", 250, "2.1.5", "Ok")
        c.quit()


@pytest.mark.parametrize("path", ['<"john doe"@example.test>',
                                  '<"a\\"b"@example.test>',
                                  "<@a.test,@b.test:u@example.test>",
                                  "<@a.test:u@example.test>"])
def test_rcpt_address_forms_accepted(shared_moat, path):
    with shared_moat.connect() as c:
        c.ehlo()
        c.mail()
        c.expect("RCPT TO:" + path, 250, "2.1.5", "Ok")
        c.quit()


@pytest.mark.parametrize("addr", ["u@[127.0.0.1]", "u@[IPv6:::1]"])
def test_rcpt_address_literal_is_relay(shared_moat, addr):
    with shared_moat.connect() as c:
        c.ehlo()
        c.mail()
        c.expect("RCPT TO:<%s>" % addr, 554, "5.7.1", "<%s>: Relay access denied" % addr)
        c.quit()


def test_rcpt_utf8(shared_moat):
    with shared_moat.connect() as c:
        c.ehlo()
        c.expect("MAIL FROM:<a@b.test> SMTPUTF8", 250, "2.1.0", "Ok")
        c.expect("RCPT TO:<jösé@example.test>", 250, "2.1.5", "Ok")
        c.quit()


def test_rcpt_utf8_without_smtputf8(shared_moat):
    with shared_moat.connect() as c:
        c.ehlo()
        c.mail()
        c.expect("RCPT TO:<jösé@example.test>", 553, "5.6.7",
                 "Must declare SMTPUTF8 to send unicode address")
        c.quit()


# ------------------------------------------------------------ DATA / BDAT state

def test_data_without_mail(shared_moat):
    with shared_moat.connect() as c:
        c.ehlo()
        c.expect("DATA", 503, "5.5.1", "Error: need RCPT command")
        c.quit()


def test_data_without_rcpt(shared_moat):
    with shared_moat.connect() as c:
        c.ehlo()
        c.mail()
        c.expect("DATA", 503, "5.5.1", "Error: need RCPT command")
        c.quit()


def test_data_after_only_rejected_rcpts(shared_moat):
    # Postfix says "554 5.5.1 Error: no valid recipients"; what matters is
    # that it is a permanent refusal and no 354 is sent.
    with shared_moat.connect() as c:
        c.ehlo()
        c.mail()
        check(c.cmd("RCPT TO:<u@other.test>"), 554, "5.7.1")
        r = c.cmd("DATA")
        assert r.code in (503, 554) and r.enh == "5.5.1", r
        c.expect("NOOP", 250, "2.0.0", "Ok")
        c.quit()


def test_data_with_argument(shared_moat):
    with shared_moat.connect() as c:
        c.ehlo()
        c.mail()
        c.rcpt("u@example.test")
        c.expect("DATA x", 501, "5.5.4", "Syntax: DATA")
        # The transaction survives the syntax error.
        c.expect("DATA", 354, None, "End data with <CR><LF>.<CR><LF>")
        c.send(b"Subject: x\r\n\r\nbody\r\n.\r\n")
        check(c.reply(), 250, "2.0.0")
        c.quit()


# ------------------------------------------------------------ simple commands

def test_rset(shared_moat):
    with shared_moat.connect() as c:
        c.ehlo()
        c.mail()
        c.rcpt("u@example.test")
        c.expect("RSET", 250, "2.0.0", "Ok")
        c.expect("RCPT TO:<u@example.test>", 503, "5.5.1", "Error: need MAIL command")
        c.expect("DATA", 503, "5.5.1", "Error: need RCPT command")
        c.mail()
        c.quit()


def test_noop(shared_moat):
    with shared_moat.connect() as c:
        c.expect("NOOP", 250, "2.0.0", "Ok")
        c.ehlo()
        c.expect("NOOP", 250, "2.0.0", "Ok")
        c.quit()


def test_quit_closes(shared_moat):
    with shared_moat.connect() as c:
        c.ehlo()
        c.send("QUIT\r\n")
        r = c.replies_until_close()
        assert len(r) == 1, r
        check(r[0], 221, "2.0.0", "Bye")


def test_quit_ignores_what_follows(shared_moat):
    # Commands after QUIT in the same write get no reply: the session is over.
    with shared_moat.connect() as c:
        c.ehlo()
        c.send("QUIT\r\nNOOP\r\nMAIL FROM:<a@b.test>\r\n")
        r = c.replies_until_close()
        assert [x.code for x in r] == [221], r


def test_help(shared_moat):
    with shared_moat.connect() as c:
        r = c.cmd("HELP")
        check(r, 214, "2.0.0")
        c.expect("NOOP", 250, "2.0.0", "Ok")
        c.quit()


def test_vrfy(shared_moat):
    with shared_moat.connect() as c:
        c.ehlo()
        c.expect("VRFY u@example.test", 252, "2.0.0", "u@example.test")
        c.expect("VRFY", 501, "5.5.4", "Syntax: VRFY address")
        c.quit()


def test_vrfy_disabled(moat_factory):
    m = moat_factory(main={"disable_vrfy_command": "yes"})
    with m.connect() as c:
        kws = ehlo_keywords(c.ehlo())
        assert "VRFY" not in kws
        c.expect("VRFY u@example.test", 502, "5.5.1", "VRFY command is disabled")
        c.quit()


@pytest.mark.parametrize("line", ["FOO", "XYZZY bar", "MAILFROM <a@b.test>",
                                  "ETRNX", "\x01\x02"])
def test_unknown_command(shared_moat, line):
    with shared_moat.connect() as c:
        c.ehlo()
        c.expect(line, 502, "5.5.2", "Error: command not recognized")
        c.expect("NOOP", 250, "2.0.0", "Ok")
        c.quit()


def test_bare_lf_commands_accepted(shared_moat):
    # smtpd_forbid_bare_newline = normalize: commands ending in a bare LF
    # are taken as they are.
    with shared_moat.connect() as c:
        c.send(b"EHLO client.test\n")
        check(c.reply(), 250)
        c.send(b"MAIL FROM:<a@b.test>\n")
        check(c.reply(), 250, "2.1.0", "Ok")
        c.send(b"RCPT TO:<bare-lf-cmd@example.test>\n")
        check(c.reply(), 250, "2.1.5", "Ok")
        c.send(b"NOOP\n")
        check(c.reply(), 250, "2.0.0", "Ok")
        c.quit()


def test_empty_line(shared_moat):
    # An empty command line is an error reply, never a crash or a hang.
    with shared_moat.connect() as c:
        c.ehlo()
        r = c.cmd("")
        assert 500 <= r.code <= 502, r
        c.expect("NOOP", 250, "2.0.0", "Ok")
        c.quit()


def test_nul_byte_in_command(shared_moat):
    with shared_moat.connect() as c:
        c.ehlo()
        c.send(b"MAIL FROM:<a\x00@b.test>\r\n")
        r = c.reply()
        assert r.code >= 500, r
        c.expect("NOOP", 250, "2.0.0", "Ok")
        c.quit()
