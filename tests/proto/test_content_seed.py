"""The seeds' content rules, as written, through a live moat.

The tables are ../shared/examples/seed-gateway/{header_checks,
mime_header_checks,body_checks}, copied unchanged into the daemon's
directory and named as the seed gateway's main.cf names them
(regexp:, regexp:, pcre:):

  seed 004  /^(To|Cc):.*[%!@].*@/ (550 Directed routing rejected), the
            /^To: (.*)-outgoing@(.*)$/!/^To: owner-.*/ negation with
            ${1}@${2} in the reply, the Pretty Park subject;
  seed 003  the third-party DSN rules (seed 003 sets header_checks only,
            so mime_header_checks default to them: its part-header rule
            is tried on the MIME headers of each part);
  seed 001  the attachment-extension rule of mime_header_checks (plain,
            folded, quoted or not, and names hidden by RFC 2231 or RFC
            2047 encoding, caught through the decoded copy, docs/content.md)
            and the phone-number body rule with its letter substitutions.

Postfix's table flags apply as written: the "i" after a regexp or pcre
rule toggles the default caseless matching off (regexp_table(5),
pcre_table(5)), so these two seed rules are case-sensitive.

Last, the whole seed gateway (loaded as test_verify.py loads it, with
every restriction and the content checks) accepts a clean message and
rejects a bad attachment and the Pretty Park subject at the end of DATA.
"""
import re
import shutil

import pytest

import moatlib
from moatlib import LOCAL_CLIENT_RE, Client, check, dot_stuff, queued_id
from seedlib import SEED, seed_gateway

TABLES = ("header_checks", "mime_header_checks", "body_checks")

if not all((SEED / t).exists() for t in TABLES):
    pytest.skip("%s: the seed tables are not present" % SEED, allow_module_level=True)


def shared_setup(m):
    """The seed gateway's three content lines, its tables unchanged."""
    for t in TABLES:
        shutil.copy(SEED / t, m.path(t))
    m.main.update({"header_checks": "regexp:" + m.path("header_checks"),
                   "mime_header_checks": "regexp:" + m.path("mime_header_checks"),
                   "body_checks": "pcre:" + m.path("body_checks")})


def message(headers, body="hello\r\n"):
    hdrs = ["From: <a@b.test>"]
    if not any(h.startswith(("To:", "Cc:")) for h in headers):
        hdrs.append("To: <u@example.test>")
    hdrs += list(headers)
    if not any(h.startswith("Subject:") for h in headers):
        hdrs.append("Subject: seed test")
    return "\r\n".join(hdrs) + "\r\n\r\n" + body


def end_of_data(m, rcpt, text, port=None):
    with Client(port or m.port) as c:
        c.ehlo("client.test")
        c.mail("a@b.test")
        c.rcpt(rcpt)
        check(c.cmd("DATA"), 354)
        c.send(dot_stuff(text.encode() if isinstance(text, str) else text))
        r = c.reply()
        c.quit()
    return r


def accepted(r):
    queued_id(r)
    return True


# ---------------------------------------------------------------- seed 004

@pytest.mark.parametrize("header", [
    "To: <user%other.test@example.test>",
    "To: user!other@example.test",
    "Cc: <postmaster%evil.test@example.test>",
    "To: Someone <someone@example.test>,\r\n\tsomeone-else@example.test",   # two addresses: the rule as written
])
def test_seed004_directed_routing_rejected(shared_moat, header):
    r = end_of_data(shared_moat, "seed-route@example.test", message([header]))
    check(r, 550, "5.7.1", "Directed routing rejected")
    first = header.split("\r\n")[0]
    shared_moat.wait_log(r"reject: header %s.* from %s; from=<a@b\.test> to=<seed-route@example\.test> "
                         r"proto=ESMTP helo=<client\.test>: 5\.7\.1 Directed routing rejected$"
                         % (re.escape(first), LOCAL_CLIENT_RE))


@pytest.mark.parametrize("header", [
    "To: <u@example.test>",
    "Reply-To: <user%other.test@example.test>",   # the rule is anchored on To:/Cc:
    "X-Original-To: user!other@example.test",
])
def test_seed004_routing_near_misses_pass(shared_moat, header):
    assert accepted(end_of_data(shared_moat, "seed-route-ok@example.test", message([header])))


def test_seed004_outgoing_exploder_and_owner_negation(shared_moat):
    r = end_of_data(shared_moat, "seed-out@example.test", message(["To: list-outgoing@example.test"]))
    check(r, 550, "5.7.1", "Use list@example.test instead of the outgoing address")
    assert r.raw == b"550 5.7.1 Use list@example.test instead of the outgoing address\r\n", r
    shared_moat.wait_log(r"reject: header To: list-outgoing@example\.test from %s; .*: 5\.7\.1 Use "
                         r"list@example\.test instead of the outgoing address$" % LOCAL_CLIENT_RE)
    # The negated pattern: owner-... is let through.
    assert accepted(end_of_data(shared_moat, "seed-out@example.test",
                                message(["To: owner-list-outgoing@example.test"])))
    assert len(shared_moat.wait_mails("seed-out", 1)) == 1


def test_seed004_pretty_park(shared_moat):
    r = end_of_data(shared_moat, "seed-pp@example.test", message([r"Subject: C:\CoolProgs\Pretty Park.exe"]))
    check(r, 550, "5.7.1", "message content rejected")
    shared_moat.wait_log(r"reject: header Subject: C:\\CoolProgs\\Pretty Park\.exe from %s; .*: "
                         r"5\.7\.1 message content rejected$" % LOCAL_CLIENT_RE)
    assert accepted(end_of_data(shared_moat, "seed-pp@example.test", message(["Subject: Pretty Park photos"])))


# ---------------------------------------------------------------- seed 003

@pytest.fixture(scope="module")
def seed003(tmp_path_factory):
    """Seed 003 as written: header_checks only (mime_header_checks and
    nested_header_checks default to $header_checks)."""
    m = moatlib.Moat(tmp_path_factory.mktemp("seed003"))
    shutil.copy(SEED / "header_checks", m.path("header_checks"))
    m.main["header_checks"] = "regexp:" + m.path("header_checks")
    m.start()
    yield m
    rc = m.stop()
    problems = m.problems()
    assert rc in (None, 0) and not problems, (rc, problems, m.stderr()[-3000:])


DSN_BODY = ("This is a delivery status notification.\r\n"
            "--{b}\r\n"
            "Content-Type: text/plain\r\n"
            "\r\n"
            "Your message could not be delivered.\r\n"
            "--{b}\r\n"
            "{dsn_header}\r\n"
            "\r\n"
            "Reporting-MTA: dns; mx.elsewhere.test\r\n"
            "\r\n"
            "Final-Recipient: rfc822; x@elsewhere.test\r\n"
            "Action: failed\r\n"
            "Status: 5.1.1\r\n"
            "--{b}--\r\n")


def dsn(content_type, b="dsn1", dsn_header="Content-Type: message/delivery-status"):
    return message(["Subject: Undelivered Mail Returned to Sender", "MIME-Version: 1.0", content_type],
                   DSN_BODY.format(b=b, dsn_header=dsn_header))


@pytest.mark.parametrize("content_type", [
    'Content-Type: multipart/report; report-type=delivery-status;\r\n\tboundary="dsn1"',
    'Content-Type: multipart/report; report-type=delivery-status; boundary="dsn1"',
    # unfolded before the check: the break inside the matched text is gone
    'Content-Type: multipart/report;\r\n report-type=delivery-status; boundary="dsn1"',
])
def test_seed003_third_party_dsn_rejected(seed003, content_type):
    r = end_of_data(seed003, "seed-dsn@example.test", dsn(content_type))
    check(r, 550, "5.7.1", "no third-party DSNs")
    seed003.wait_log(r"reject: header Content-Type: multipart/report;.* from %s; .*: "
                     r"5\.7\.1 no third-party DSNs$" % LOCAL_CLIENT_RE)


def test_seed003_other_multipart_passes(seed003):
    r = end_of_data(seed003, "seed-dsn-ok@example.test",
                    dsn('Content-Type: multipart/mixed; boundary="dsn1"',
                        dsn_header="Content-Type: text/plain"))
    assert accepted(r)


def test_seed003_delivery_status_part_header(seed003):
    # The top-level header does not match the first rule (its parameters
    # in another order); the report part's header matches the second.
    ct = 'Content-Type: multipart/report; boundary="dsn2"; report-type=delivery-status'
    r = end_of_data(seed003, "seed-dsn3@example.test",
                    dsn(ct, b="dsn2", dsn_header="Content-Type: message/delivery-status; charset=us-ascii"))
    check(r, 550, "5.7.1", "no third-party DSNs")
    seed003.wait_log(r"reject: header Content-Type: message/delivery-status; charset=us-ascii from %s; .*: "
                     r"5\.7\.1 no third-party DSNs$" % LOCAL_CLIENT_RE)
    # The rule for the primary header.
    r = end_of_data(seed003, "seed-dsn3@example.test",
                    dsn('Content-Type: multipart/report; report-type=delivery-status; boundary="dsn1"'))
    check(r, 550, "5.7.1", "no third-party DSNs")
    # As written, the part rule wants parameters: a bare part header passes.
    assert accepted(end_of_data(seed003, "seed-dsn3@example.test", dsn(ct, b="dsn2")))
    assert len(seed003.wait_mails("seed-dsn3", 1)) == 1


# ---------------------------------------------------------------- seed 001: attachments

def with_attachment(part_headers, payload="TVqQAAMAAAAEAAAA//8AALgAAAAAAAAAQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\r\n"):
    body = ("--att1\r\n"
            "Content-Type: text/plain; charset=us-ascii\r\n"
            "\r\n"
            "See the attachment.\r\n"
            "--att1\r\n"
            + "".join(h + "\r\n" for h in part_headers)
            + "Content-Transfer-Encoding: base64\r\n"
            "\r\n"
            + payload
            + "--att1--\r\n")
    return message(["Subject: your document", "MIME-Version: 1.0",
                    'Content-Type: multipart/mixed; boundary="att1"'], body)


BAD_ATTACHMENTS = [
    ['Content-Type: application/octet-stream', 'Content-Disposition: attachment; filename="virus.exe"'],
    ['Content-Type: application/octet-stream; name=virus.scr'],
    ['Content-Type: application/octet-stream; name = "photo.jpg.pif"'],
    ['Content-Type: application/octet-stream',
     'Content-Disposition: attachment;\r\n\tfilename="Update-KB3374-x86.exe"'],
    ['Content-Type: application/x-msdownload;\r\n name="setup.com"'],
    ['Content-Type: text/plain; name="shortcut.lnk"'],
    # RFC 2231: the raw header hides the extension (%2E, *= and split
    # continuations); the decoded copy shows it.
    ["Content-Type: application/octet-stream", "Content-Disposition: attachment; filename*=UTF-8''virus%2Eexe"],
    ['Content-Type: application/octet-stream', 'Content-Disposition: attachment;\r\n'
     ' filename*0="inv"; filename*1="oice.b"; filename*2="at"'],
    ["Content-Type: application/octet-stream", "Content-Disposition: attachment;\r\n"
     " filename*0*=UTF-8''report%20; filename*1*=final%2Evbs"],
    # RFC 2047 encoded words, B and Q, and two adjacent words.
    ['Content-Type: application/octet-stream; name="=?UTF-8?B?dmlydXMuZXhl?="'],
    ['Content-Type: application/octet-stream', 'Content-Disposition: attachment; filename="=?ISO-8859-1?Q?virus=2Ecpl?="'],
    ['Content-Type: application/octet-stream; name="=?UTF-8?Q?invoice?= =?UTF-8?Q?=2Epdf=2Escr?="'],
]


@pytest.mark.parametrize("headers", BAD_ATTACHMENTS, ids=range(len(BAD_ATTACHMENTS)))
def test_seed001_bad_attachment_rejected(shared_moat, headers):
    r = end_of_data(shared_moat, "seed-att@example.test", with_attachment(headers))
    check(r, 550, "5.7.1", "Attachment type not allowed")
    shared_moat.wait_log(r"reject: header Content-(?:Type|Disposition): .* from %s; from=<a@b\.test> "
                         r"to=<seed-att@example\.test> proto=ESMTP helo=<client\.test>: "
                         r"5\.7\.1 Attachment type not allowed$" % LOCAL_CLIENT_RE)


GOOD_ATTACHMENTS = [
    ['Content-Type: text/plain', 'Content-Disposition: attachment; filename="notes.txt"'],
    ['Content-Type: application/octet-stream; name=notes.txt'],
    ['Content-Type: application/octet-stream; name="virus.exe.txt"'],
    ["Content-Type: application/octet-stream", "Content-Disposition: attachment; filename*=UTF-8''notes%2Etxt"],
    ['Content-Type: application/octet-stream; name="=?UTF-8?B?bm90ZXMudHh0?="'],
    ['Content-Type: application/pdf; name="execute-me.pdf"'],
]


@pytest.mark.parametrize("headers", GOOD_ATTACHMENTS, ids=range(len(GOOD_ATTACHMENTS)))
def test_seed001_harmless_attachment_passes(shared_moat, headers):
    assert accepted(end_of_data(shared_moat, "seed-att-ok@example.test", with_attachment(headers)))


def test_seed001_single_part_attachment_rejected(shared_moat):
    """A message that is itself the attachment: its primary Content-Type:
    is a MIME header, tried on mime_header_checks too (as Postfix does)."""
    r = end_of_data(shared_moat, "seed-att-top@example.test",
                    message(["MIME-Version: 1.0", 'Content-Type: application/octet-stream; name="virus.exe"',
                             "Content-Transfer-Encoding: base64"], "TVqQAAMAAAAEAAAA\r\n"))
    check(r, 550, "5.7.1", "Attachment type not allowed")


# ---------------------------------------------------------------- seed 001: phone numbers

@pytest.mark.parametrize("line", [
    "Call 495 740 12 34 today",
    "tel. 4-9-5-7-4-0-1-2-3-4",
    "phone: 4.9.5.7.4.0",
    "ч9s.т4o-12-34",                      # Cyrillic che and te, Latin s and o
    "4g5(740) 12-34",                     # g for 9, a parenthesis before the 7
    "звоните: 4 9 5 - 7 4 о",              # Cyrillic o
    "<p>Only today! 495-74o-1234</p>",
])
def test_seed001_phone_number_rejected(shared_moat, line):
    body = "Dear friend,\r\n" + line + "\r\nBest regards\r\n"
    r = end_of_data(shared_moat, "seed-phone@example.test", message([], body).encode())
    check(r, 550, "5.7.1", "Spam advertising detected")
    shared_moat.wait_log(r"reject: body %s from %s; .*: 5\.7\.1 Spam advertising detected$"
                         % (re.escape(line), LOCAL_CLIENT_RE))


@pytest.mark.parametrize("line", [
    "Call 495 841 12 34 today",           # another number
    "4 9 5 x 7 4 0",                       # x is no separator
    "495_740",                             # nor is _
    "(495) 740-12-34",                     # as written: no ')' between 5 and 7
])
def test_seed001_phone_number_near_misses_pass(shared_moat, line):
    body = "Dear friend,\r\n" + line + "\r\nBest regards\r\n"
    assert accepted(end_of_data(shared_moat, "seed-phone-ok@example.test", message([], body).encode()))


def test_seed001_phone_number_split_over_lines_passes(shared_moat):
    """body_checks see one line at a time (seed 001 names the limit)."""
    body = "Call 495\r\n740 12 34\r\n"
    assert accepted(end_of_data(shared_moat, "seed-phone-split@example.test", message([], body)))


# ---------------------------------------------------------------- the whole seed gateway

def test_whole_seed_gateway_content_checks(tmp_path, sink_factory, dns_world):
    """The seed gateway as test_verify.py loads it (seedlib.py: the policy
    service that does not run here and the recipient-domain check the test
    DNS cannot satisfy removed; everything else, content checks included,
    as written)."""
    senders = sink_factory(name="senders")
    relay = sink_factory(name="relay")

    def tables_named(text):
        for t in TABLES:
            assert re.search(r"(?m)^%s = " % t, text), t

    with seed_gateway(tmp_path, dns_world, {"hasmx.test": senders.port, "example.test": relay.port},
                      tables_named) as (d, port):
        def transaction(text):
            with Client(port, source="127.0.0.10", timeout=30) as c:
                c.ehlo("client.test")
                check(c.cmd("MAIL FROM:<someone@hasmx.test>"), 250)
                check(c.cmd("RCPT TO:<u@example.test>", timeout=30), 250)
                check(c.cmd("DATA"), 354)
                c.send(dot_stuff(text.encode()))
                r = c.reply(timeout=30)
                c.quit()
            return r

        clean = message(["Subject: quarterly report"], "Numbers attached.\r\n")
        qid = queued_id(transaction(clean))
        got = relay.wait_messages(1)
        assert len(got) == 1
        assert b"Subject: quarterly report" in got[0]["data"]
        check(transaction(with_attachment(['Content-Type: application/octet-stream; name="=?UTF-8?B?dmlydXMuZXhl?="'])),
              550, "5.7.1", "Attachment type not allowed")
        check(transaction(message([r"Subject: C:\CoolProgs\Pretty Park.exe"])), 550, "5.7.1",
              "message content rejected")
        check(transaction(message([], "call 4 9 5 - 7 4 0\r\n")), 550, "5.7.1", "Spam advertising detected")
        log = (d / "maillog").read_text()
        assert re.search(r"reject: header Subject: C:\\CoolProgs\\Pretty Park\.exe from [\w.-]+\[127\.0\.0\.10\]; "
                         r"from=<someone@hasmx\.test> to=<u@example\.test> proto=ESMTP helo=<client\.test>: "
                         r"5\.7\.1 message content rejected$", log, re.M), log[-3000:]
        assert len(relay.messages()) == 1
        assert qid in log


# ---------------------------------------------------------------- the i flag, as written

def test_seed_rules_i_flag_toggles_caseless_matching_off(shared_moat):
    """regexp_table(5)/pcre_table(5): matching is caseless by default and
    the seeds' trailing "i" toggles that off, so the attachment and phone
    rules are case-sensitive as written (docs/content.md should say so to
    a postmaster bringing these rules over)."""
    r = end_of_data(shared_moat, "seed-iflag@example.test",
                    with_attachment(['Content-Type: application/octet-stream; name="VIRUS.EXE"']))
    assert accepted(r)
    r = end_of_data(shared_moat, "seed-iflag@example.test", message([], "call 4G5 74O\r\n"))
    assert accepted(r)
    # The same rules in the case they were written for do match.
    check(end_of_data(shared_moat, "seed-iflag@example.test",
                      with_attachment(['Content-Type: application/octet-stream; name="virus.exe"'])),
          550, "5.7.1", "Attachment type not allowed")
    check(end_of_data(shared_moat, "seed-iflag@example.test", message([], "call 4g5 74o\r\n")),
          550, "5.7.1", "Spam advertising detected")
