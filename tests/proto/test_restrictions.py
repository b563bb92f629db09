"""The restriction engine through a live moat: real SMTP sessions.

Clients bind 127.0.0.x source addresses (moatlib.Client(source=...)); the
configurations trust only 127.0.0.1 (mynetworks = 127.0.0.1/32), so any
other loopback address is an outside client.  Tables live in the daemon's
own directory (its config_directory), so relative table names work, and
hash: tables are built with `moat map build`.

Covered: every restriction and access action the engine implements (see
docs/restrictions.md), the seeds' examples (shared/seeds/*.txt and
shared/examples/seed-gateway/: the dsl_stoplist regexp rules through
check_helo_access, the `/[%!@].*@/` routing rule, `/p1/!/p2/` with
${1}@${2}, the `<>` null-sender rule, partial user@/domain keys),
first-match-wins, class ordering, DEFER_IF_PERMIT/DEFER_IF_REJECT,
warn_if_reject, restriction classes, the open-relay guard at start-up,
SIGHUP picking up a rebuilt table, a table broken at run time (451 4.3.0,
never a permit), and the rule=/table= fields of reject log lines.
"""
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from moatlib import Client, check, moat_bin, simple_message, wait_for

MOAT = moat_bin()
SHARED = Path(os.environ.get("MOAT_SHARED", str(Path(__file__).resolve().parents[3] / "shared")))
SEED_GATEWAY = Path(os.environ.get("MOAT_SEED_GATEWAY", str(SHARED / "examples" / "seed-gateway")))

OUTSIDE = "127.0.0.2"
NAME_RE = r"[\w.-]+"          # the client name: "unknown" until the DNS issue
TRUST = {"mynetworks": "127.0.0.1/32"}


def build(path):
    r = subprocess.run([MOAT, "map", "build", str(path)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr


def gateway(moat_factory, main, tables=None, seed_tables=(), hashed=(), start=True, smtpd_opts=None):
    """A daemon trusting only 127.0.0.1, with table files in its directory:
    `tables` {name: text}, `seed_tables` copied from the seed gateway,
    `hashed` the names to compile with `moat map build`."""
    cfg = dict(TRUST)
    cfg.update(main)
    m = moat_factory(main=cfg, start=False, smtpd_opts=smtpd_opts)
    for name in seed_tables:
        shutil.copy(SEED_GATEWAY / name, os.path.join(m.dir, name))
    for name, text in (tables or {}).items():
        with open(os.path.join(m.dir, name), "w") as f:
            f.write(text)
    for name in hashed:
        build(os.path.join(m.dir, name))
    if start:
        m.start()
    return m


def rcpt_reply(m, rcpt, sender="a@b.test", helo="client.test", source=OUTSIDE, ehlo=True):
    """One transaction up to RCPT; returns the RCPT reply."""
    with m.connect(source=source) as c:
        check(c.cmd(("EHLO " if ehlo else "HELO ") + helo), 250)
        check(c.cmd("MAIL FROM:<%s>" % sender), 250)
        r = c.cmd("RCPT TO:<%s>" % rcpt)
        c.quit()
    return r


def reject_line(m, what):
    """The reject log line mentioning `what` (waits for it)."""
    ms = m.wait_log(r"^.*: reject: .*%s.*$" % re.escape(what))
    return ms[-1].group(0)


# ---------------------------------------------------------------- relay

def test_restrictions_relay_denied_for_outsider(moat_factory):
    m = gateway(moat_factory, {})
    r = rcpt_reply(m, "u@other.test")
    assert r.code // 100 == 4 and r.enh == "4.7.1", r
    assert r.msg == "<u@other.test>: Relay access denied"
    line = reject_line(m, "<u@other.test>: Relay access denied")
    assert re.search(r"NOQUEUE: reject: RCPT from %s\[127\.0\.0\.2\]: 4\d\d 4\.7\.1 <u@other\.test>: "
                     r"Relay access denied; from=<a@b\.test> to=<u@other\.test> proto=ESMTP "
                     r"helo=<client\.test> rule=relay:defer_unauth_destination$" % NAME_RE, line), line
    # Local recipients are fine from anywhere.
    check(rcpt_reply(m, "u@example.test"), 250, "2.1.5")


def test_restrictions_reject_unauth_destination_and_trusted_relay(moat_factory):
    m = gateway(moat_factory, {"smtpd_relay_restrictions": "",
                               "smtpd_recipient_restrictions": "permit_mynetworks, reject_unauth_destination",
                               "relay_domains": "relay.test"})
    check(rcpt_reply(m, "u@other.test"), 554, "5.7.1", "<u@other.test>: Relay access denied")
    assert "rule=recipient:reject_unauth_destination" in reject_line(m, "<u@other.test>")
    # relay_domains (and their subdomains) are authorized destinations.
    check(rcpt_reply(m, "u@relay.test"), 250, "2.1.5")
    check(rcpt_reply(m, "u@sub.relay.test"), 250, "2.1.5")
    # A trusted client is permitted to relay anywhere: the mail is accepted
    # (and the queue manager delivers it as route.h resolves it).
    check(rcpt_reply(m, "v@other.test", source="127.0.0.1"), 250, "2.1.5")


def test_restrictions_relay_guard_at_startup(moat_factory):
    m = gateway(moat_factory, {"smtpd_relay_restrictions": "permit_mynetworks, permit",
                               "smtpd_recipient_restrictions": "permit"}, start=False)
    with pytest.raises(AssertionError) as e:
        m.start(timeout=10)
    assert "open relay" in str(e.value) + m.log()


# ---------------------------------------------------------------- seeds: HELO regexp

DSL_CASES = [
    ("dsl-10-1-2-3.isp.example", "AUTO_DSL"),
    ("dslam7.isp.example", "AUTO_DSL"),          # first match wins over /dslam.../
    ("host.adsl5.isp.example", "AUTO_XDSL"),
    ("client-7.isp.example", "AUTO_CLIENT"),
    ("cable1.isp.example", "AUTO_CABLE"),
    ("pool-3.isp.example", "AUTO_POOL"),
    # Postfix's regexp tables match case-insensitively by default and the
    # seed's "i" flag *toggles* that off (regexp_table(5)): upper case
    # escapes these rules, in Postfix and in moat alike.
    ("POOL-3.isp.example", None),
    ("dialup9.isp.example", "AUTO_DIAL"),
    ("ppp9.isp.example", "AUTO_PPP"),
    ("node1.isp.example", "AUTO_NODE"),
    ("mail.client.example", None),                # "client" but only one dot after it
    ("dsl.example", None),
    ("mx.partner.example", None),
]


@pytest.fixture(scope="module")
def dsl_gateway(request, tmp_path_factory):
    from conftest import _LIVE  # noqa: F401  (the module's daemon is watched like the others)
    from moatlib import Moat
    d = tmp_path_factory.mktemp("dsl")
    cfg = dict(TRUST)
    cfg.update({
        "smtpd_helo_required": "yes",
        # seed 001/002: the bare table in the HELO list is check_helo_access on it
        "smtpd_helo_restrictions": "permit_mynetworks, regexp:$config_directory/dsl_stoplist.txt, permit",
        "smtpd_client_restrictions": "permit_mynetworks, check_client_access regexp:$config_directory/dsl_stoplist.txt",
    })
    m = Moat(d, main=cfg)
    shutil.copy(SEED_GATEWAY / "dsl_stoplist.txt", os.path.join(m.dir, "dsl_stoplist.txt"))
    m.start()
    _LIVE.append(m)
    yield m
    try:
        rc = m.stop()
        assert rc in (None, 0), m.stderr()[-3000:]
    finally:
        _LIVE.remove(m)
    problems = m.problems()
    assert not problems, problems


@pytest.mark.parametrize("helo, tag", DSL_CASES)
def test_restrictions_seed_dsl_stoplist_helo(dsl_gateway, helo, tag):
    r = rcpt_reply(dsl_gateway, "u@example.test", helo=helo)
    if tag is None:
        check(r, 250, "2.1.5")
    else:
        check(r, 553, "5.7.1", "<%s>: Helo command rejected: %s You have been identified as a spammer. Go Away."
              % (helo, tag))


def test_restrictions_seed_dsl_stoplist_trusted_client_exempt(dsl_gateway):
    # permit_mynetworks comes first in the seed's list
    check(rcpt_reply(dsl_gateway, "u@example.test", helo="dsl-1.isp.example", source="127.0.0.1"), 250)


def test_restrictions_seed_dsl_stoplist_client_name_unknown(dsl_gateway):
    # The client rules match host names, and client names are "unknown"
    # until the DNS issue: the client list never matches an address.
    check(rcpt_reply(dsl_gateway, "u@example.test", helo="mx.partner.example", source="127.0.0.5"), 250)


# ---------------------------------------------------------------- seeds: routing, negation

ROUTING = (
    "# seed 004: sender-specified routing, postmaster, outgoing exploders\n"
    "/[%!@].*@/                              550 Directed routing rejected\n"
    "/^postmaster@.*$/                       OK\n"
    "/^(.*)-outgoing@(.*)$/!/^owner-.*/      550 Use ${1}@${2} instead of the outgoing address\n"
)


@pytest.mark.parametrize("rcpt, code, text", [
    ("user%other.test@example.test", 550, "Directed routing rejected"),
    ("user!other@example.test", 550, "Directed routing rejected"),
    ("postmaster%evil.test@example.test", 550, "Directed routing rejected"),  # first match wins
    ("postmaster@example.test", 250, None),
    ("list-outgoing@example.test", 550, "Use list@example.test instead of the outgoing address"),
    ("owner-list-outgoing@example.test", 250, None),                         # the negated pattern
    ("plain@example.test", 250, None),
])
def test_restrictions_seed_routing_and_negation(moat_factory, rcpt, code, text):
    m = gateway(moat_factory, {"smtpd_recipient_restrictions":
                               "check_recipient_access regexp:routing, reject_unauth_destination"},
                tables={"routing": ROUTING})
    r = rcpt_reply(m, rcpt)
    if text is None:
        check(r, code, "2.1.5")
    else:
        check(r, code, "5.7.1", "<%s>: Recipient address rejected: %s" % (rcpt, text))


# ---------------------------------------------------------------- seeds: sender tables

def test_restrictions_seed_null_sender(moat_factory):
    m = gateway(moat_factory, {"smtpd_sender_restrictions":
                               "permit_mynetworks, check_sender_access hash:$config_directory/null_sender"},
                seed_tables=["null_sender"], hashed=["null_sender"])
    check(rcpt_reply(m, "u@example.test", sender=""), 550, "5.7.1",
          "<>: Sender address rejected: no third-party DSNs")
    line = reject_line(m, "no third-party DSNs")
    assert "from=<> " in line
    assert re.search(r" rule=sender:check_sender_access hash:\S*null_sender table=\S*/null_sender:2$", line), line
    # Other senders, and the null sender from a trusted client, pass.
    check(rcpt_reply(m, "u@example.test", sender="a@b.test"), 250)
    check(rcpt_reply(m, "u@example.test", sender="", source="127.0.0.1"), 250)


@pytest.mark.parametrize("sender, code", [
    ("myfriend@partner.test", 250),      # user@domain OK (sender_access, seed 002)
    ("junk@spam.test", 554),             # user@domain REJECT
    ("other@spam.test", 250),            # no entry
    ("marketing@anything.test", 554),    # partial "user@"
    ("theboss@anything.test", 250),      # partial "user@" OK
    ("x@deals.marketing.test", 554),     # domain
    ("x@mail.deals.marketing.test", 554),  # parent domain matches subdomains
    ("x@partner.test", 250),
    ("info@partner.test", 250),          # "partner.test OK" ends the class before access_sender's "info@"
    ("info@else.test", 554),             # seed 003 role accounts (access_sender)
    ("MailerDaemon@else.test", 554),     # keys are case-folded
    ("someone@example.test", 554),       # "this domain never sends to us"
])
def test_restrictions_seed_sender_partial_keys(moat_factory, sender, code):
    # First match wins: the white/black list first, then the role accounts.
    m = gateway(moat_factory, {"smtpd_sender_restrictions":
                               "check_sender_access hash:$config_directory/sender_access, "
                               "check_sender_access hash:$config_directory/access_sender"},
                seed_tables=["sender_access", "access_sender"], hashed=["sender_access", "access_sender"])
    r = rcpt_reply(m, "u@example.test", sender=sender)
    if code == 250:
        check(r, 250, "2.1.5")
    else:
        check(r, 554, "5.7.1", "<%s>: Sender address rejected: Access denied" % sender)


def test_restrictions_seed_access_recipient_and_pcre(moat_factory):
    m = gateway(moat_factory, {
        "smtpd_sender_restrictions": "check_sender_access pcre:$config_directory/access_sender.pcre",
        "smtpd_recipient_restrictions": "reject_unauth_destination, "
                                        "check_recipient_access hash:$config_directory/access_recipient",
    }, seed_tables=["access_recipient", "access_sender.pcre"], hashed=["access_recipient"])
    check(rcpt_reply(m, "postmaster@example.test"), 554, "5.7.1",
          "<postmaster@example.test>: Recipient address rejected: Access denied")
    check(rcpt_reply(m, "MAILER-DAEMON@example.test"), 554, "5.7.1")
    check(rcpt_reply(m, "u@example.test", sender="list-bounces@lists.test"), 554, "5.7.1",
          "<list-bounces@lists.test>: Sender address rejected: Access denied")
    check(rcpt_reply(m, "u@example.test", sender="confirm-return-7@lists.test"), 554)
    check(rcpt_reply(m, "u@example.test"), 250)


# ---------------------------------------------------------------- ordering

def test_restrictions_first_match_wins_in_a_list(moat_factory):
    m = gateway(moat_factory, {"smtpd_sender_restrictions":
                               "check_sender_access inline:{ok@x.test=OK}, reject"})
    check(rcpt_reply(m, "u@example.test", sender="ok@x.test"), 250)
    check(rcpt_reply(m, "u@example.test", sender="no@x.test"), 554, "5.7.1",
          "<no@x.test>: Sender address rejected: Access denied")


def test_restrictions_first_match_wins_in_key_order(moat_factory):
    # user@domain is tried before domain, whatever the table's line order
    m = gateway(moat_factory, {"smtpd_sender_restrictions": "check_sender_access hash:s"},
                tables={"s": "x.test REJECT\nok@x.test OK\n"}, hashed=["s"])
    check(rcpt_reply(m, "u@example.test", sender="ok@x.test"), 250)
    check(rcpt_reply(m, "u@example.test", sender="no@x.test"), 554)


def test_restrictions_ok_does_not_override_later_class(moat_factory):
    m = gateway(moat_factory, {
        "smtpd_client_restrictions": "check_client_access inline:{127.0.0.2=OK}",
        "smtpd_sender_restrictions": "check_sender_access inline:{theboss@x.test=OK}",
        "smtpd_recipient_restrictions": "check_recipient_access inline:{nobody@example.test=REJECT}, "
                                        "reject_unauth_destination",
    })
    check(rcpt_reply(m, "nobody@example.test", sender="theboss@x.test"), 554, "5.7.1",
          "<nobody@example.test>: Recipient address rejected: Access denied")
    check(rcpt_reply(m, "u@example.test", sender="theboss@x.test"), 250)


def test_restrictions_dunno_continues(moat_factory):
    m = gateway(moat_factory, {"smtpd_sender_restrictions":
                               "check_sender_access inline:{a@x.test=DUNNO}, check_sender_access inline:{x.test=REJECT}"})
    check(rcpt_reply(m, "u@example.test", sender="a@x.test"), 554)


# ---------------------------------------------------------------- DEFER_IF_*, warn_if_reject

def test_restrictions_defer_if_permit(moat_factory):
    m = gateway(moat_factory, {"smtpd_client_restrictions":
                               "check_client_access inline:{ {127.0.0.3=DEFER_IF_PERMIT try later} }"})
    r = rcpt_reply(m, "u@example.test", source="127.0.0.3")
    assert r.code == 450 and r.enh == "4.7.1", r
    assert re.fullmatch(r"<%s\[127\.0\.0\.3\]>: Client host rejected: try later" % NAME_RE, r.msg), r
    check(rcpt_reply(m, "u@example.test", source="127.0.0.4"), 250)
    # A later reject wins over the remembered defer.
    check(rcpt_reply(m, "u@other.test", source="127.0.0.3"), 454)


def test_restrictions_defer_if_reject(moat_factory):
    dir_entry = "check_client_access inline:{ {127.0.0.3=DEFER_IF_REJECT maybe} }"
    m = gateway(moat_factory, {
        "smtpd_client_restrictions": dir_entry,
        "smtpd_recipient_restrictions": dir_entry + ", check_recipient_access inline:{no@example.test=REJECT}, "
                                        "reject_unauth_destination",
    })
    # In the same class, a later reject becomes a 4xx.
    r = rcpt_reply(m, "no@example.test", source="127.0.0.3")
    assert r.code == 450 and r.enh.startswith("4."), r
    check(rcpt_reply(m, "no@example.test", source="127.0.0.4"), 554)
    check(rcpt_reply(m, "u@example.test", source="127.0.0.3"), 250)


def test_restrictions_defer_if_reject_does_not_cross_classes(moat_factory):
    # As Postfix: each stage starts afresh (SMTPD_CHECK_RESET), so a
    # DEFER_IF_REJECT from the client class does not soften a recipient reject.
    m = gateway(moat_factory, {
        "smtpd_client_restrictions": "check_client_access inline:{ {127.0.0.3=DEFER_IF_REJECT maybe} }",
        "smtpd_recipient_restrictions": "check_recipient_access inline:{no@example.test=REJECT}, "
                                        "reject_unauth_destination",
    })
    check(rcpt_reply(m, "no@example.test", source="127.0.0.3"), 554, "5.7.1",
          "<no@example.test>: Recipient address rejected: Access denied")


def test_restrictions_warn_if_reject(moat_factory):
    m = gateway(moat_factory, {"smtpd_helo_restrictions": "warn_if_reject reject_non_fqdn_helo_hostname"})
    check(rcpt_reply(m, "u@example.test", helo="nodots"), 250)
    m.wait_log(r"reject_warning: RCPT from %s\[127\.0\.0\.2\]: 504 5\.5\.2 <nodots>: Helo command rejected: "
               r"need fully-qualified hostname" % NAME_RE)


# ---------------------------------------------------------------- restriction classes

def test_restrictions_classes(moat_factory):
    m = gateway(moat_factory, {
        "smtpd_restriction_classes": "strict, permissive",
        "strict": "reject_non_fqdn_sender, check_sender_access inline:{spam.test=REJECT}",
        "permissive": "permit",
        "smtpd_recipient_restrictions": "check_recipient_access hash:$config_directory/rcpt_class, "
                                        "check_sender_access inline:{ {spam.test=REJECT spam} }, "
                                        "reject_unauth_destination",
    }, tables={"rcpt_class": "strict@example.test strict\nopen@example.test permissive\n"},
        hashed=["rcpt_class"])
    check(rcpt_reply(m, "strict@example.test", sender="a@spam.test"), 554, "5.7.1",
          "<a@spam.test>: Sender address rejected: Access denied")
    check(rcpt_reply(m, "strict@example.test", sender="a@nodots"), 504, "5.5.2",
          "<a@nodots>: Sender address rejected: need fully-qualified address")
    check(rcpt_reply(m, "strict@example.test", sender="a@good.test"), 250)
    # permissive ends the class with a permit: the later spam rule is skipped
    check(rcpt_reply(m, "open@example.test", sender="a@spam.test"), 250)
    check(rcpt_reply(m, "other@example.test", sender="a@spam.test"), 554, "5.7.1",
          "<a@spam.test>: Sender address rejected: spam")


# ---------------------------------------------------------------- other restrictions

def test_restrictions_non_fqdn_and_invalid(moat_factory):
    m = gateway(moat_factory, {
        "smtpd_helo_restrictions": "reject_invalid_helo_hostname, reject_non_fqdn_helo_hostname",
        "smtpd_sender_restrictions": "reject_non_fqdn_sender",
        "smtpd_recipient_restrictions": "reject_non_fqdn_recipient, reject_unauth_destination",
    })
    check(rcpt_reply(m, "u@example.test", helo="nodots"), 504, "5.5.2",
          "<nodots>: Helo command rejected: need fully-qualified hostname")
    check(rcpt_reply(m, "u@example.test", helo="bad_name!.test"), 501, "5.5.2",
          "<bad_name!.test>: Helo command rejected: Invalid name")
    check(rcpt_reply(m, "u@example.test", helo="[1.2.3]"), 501, "5.5.2",
          "<[1.2.3]>: Helo command rejected: invalid ip address")
    check(rcpt_reply(m, "u@example.test", helo="[192.0.2.1]"), 250)
    check(rcpt_reply(m, "u@example.test", sender="a@nodots"), 504, "5.5.2",
          "<a@nodots>: Sender address rejected: need fully-qualified address")


def test_restrictions_multi_recipient_bounce(moat_factory):
    m = gateway(moat_factory, {"smtpd_recipient_restrictions":
                               "reject_multi_recipient_bounce, reject_unauth_destination"})
    with m.connect(source=OUTSIDE) as c:
        c.ehlo()
        check(c.cmd("MAIL FROM:<>"), 250)
        check(c.cmd("RCPT TO:<a@example.test>"), 250)
        check(c.cmd("RCPT TO:<b@example.test>"), 550, "5.5.3",
              "<b@example.test>: Recipient address rejected: Multi-recipient bounce")
        c.quit()


def test_restrictions_unauth_pipelining(moat_factory):
    m = gateway(moat_factory, {"smtpd_forbid_unauth_pipelining": "no",
                               "smtpd_recipient_restrictions": "reject_unauth_pipelining, reject_unauth_destination"})
    with m.connect(source=OUTSIDE) as c:
        check(c.cmd("HELO client.test"), 250)
        c.send("MAIL FROM:<a@b.test>\r\nRCPT TO:<u@example.test>\r\n")
        check(c.reply(), 250)
        r = c.reply()
        check(r, 503, "5.5.0", "<u@example.test>: Recipient address rejected: Improper use of SMTP command pipelining")


def test_restrictions_reject_and_defer_codes(moat_factory):
    m = gateway(moat_factory, {
        "reject_code": "550", "defer_code": "451",
        "smtpd_recipient_restrictions": "check_recipient_access inline:{r@example.test=reject_it, d@example.test=defer_it}, "
                                        "reject_unauth_destination",
        "smtpd_restriction_classes": "reject_it, defer_it",
        "reject_it": "reject", "defer_it": "defer",
    })
    check(rcpt_reply(m, "r@example.test"), 550, "5.7.1")
    r = rcpt_reply(m, "d@example.test")
    check(r, 451, "4.3.2")
    assert r.msg.endswith("Try again later"), r


def test_restrictions_explicit_codes_in_table(moat_factory):
    m = gateway(moat_factory, {"smtpd_recipient_restrictions":
                               "check_recipient_access hash:codes, reject_unauth_destination"},
                tables={"codes": "a@example.test 550 5.1.1 no such user here\n"
                                 "b@example.test 421 4.7.0 closing\n"
                                 "c@example.test 452 too busy\n"}, hashed=["codes"])
    check(rcpt_reply(m, "a@example.test"), 550, "5.1.1", "<a@example.test>: Recipient address rejected: no such user here")
    check(rcpt_reply(m, "c@example.test"), 452, "4.7.1", "<c@example.test>: Recipient address rejected: too busy")


def test_restrictions_check_reverse_client_hostname_access(moat_factory):
    # OUTSIDE's PTR name in the test DNS (tests/dns/README.md); its parent
    # domain matches too.
    m = gateway(moat_factory, {"smtpd_client_restrictions":
                               "check_reverse_client_hostname_access inline:{ {client.test=REJECT by PTR} }"})
    r = rcpt_reply(m, "u@example.test")
    assert r.code == 554 and r.msg.endswith("Client host rejected: by PTR"), r


# ---------------------------------------------------------------- access actions

def test_restrictions_action_discard(moat_factory):
    m = gateway(moat_factory, {"smtpd_recipient_restrictions":
                               "check_recipient_access inline:{trap@example.test=DISCARD}, reject_unauth_destination"})
    with m.connect(source=OUTSIDE) as c:
        c.ehlo()
        c.mail()
        c.rcpt("trap@example.test")
        c.expect("DATA", 354)
        c.send(b"Subject: x\r\n\r\nbody\r\n.\r\n")
        check(c.reply(), 250, "2.0.0")
        c.quit()
    m.wait_log(r"discard: RCPT from .*<trap@example\.test>")
    time.sleep(0.3)
    assert m.mails("trap") == []


def test_restrictions_action_prepend_and_warn(moat_factory):
    m = gateway(moat_factory, {"smtpd_sender_restrictions":
                               "check_sender_access inline:{ {a@b.test=PREPEND X-Seen: by moat} }, "
                               "check_sender_access inline:{ {b.test=WARN looks odd} }"})
    with m.connect(source=OUTSIDE) as c:
        c.ehlo()
        c.sendmail("a@b.test", ["pp@example.test"], simple_message("prepend"))
        c.quit()
    mail = m.wait_mails("pp")[0]
    assert b"\nX-Seen: by moat\n" in b"\n" + mail
    m.wait_log(r"warning: .*looks odd")


def test_restrictions_action_hold_accepts_into_the_hold_queue(moat_factory):
    """HOLD accepts (the queue side is in test_actions.py)."""
    m = gateway(moat_factory, {"smtpd_recipient_restrictions":
                               "check_recipient_access inline:{h@example.test=HOLD}, reject_unauth_destination"})
    check(rcpt_reply(m, "h@example.test"), 250, "2.1.5")
    m.wait_log(r"hold: RCPT from .*<h@example\.test>: Recipient address triggers HOLD action;")


# ---------------------------------------------------------------- tables at run time

def test_restrictions_reject_log_rule_and_table(moat_factory):
    m = gateway(moat_factory, {"smtpd_sender_restrictions": "check_sender_access hash:$config_directory/senders"},
                tables={"senders": "# bad ones\nspam@bad.test REJECT go away\n"}, hashed=["senders"])
    check(rcpt_reply(m, "u@example.test", sender="spam@bad.test"), 554, "5.7.1",
          "<spam@bad.test>: Sender address rejected: go away")
    line = reject_line(m, "go away")
    assert re.search(r"NOQUEUE: reject: RCPT from %s\[127\.0\.0\.2\]: 554 5\.7\.1 <spam@bad\.test>: "
                     r"Sender address rejected: go away; from=<spam@bad\.test> to=<u@example\.test> "
                     r"proto=ESMTP helo=<client\.test> rule=sender:check_sender_access hash:\S+senders "
                     r"table=%s/senders:2$" % (NAME_RE, re.escape(m.dir)), line), line


def test_restrictions_table_rebuilt_then_sighup(moat_factory):
    m = gateway(moat_factory, {"smtpd_recipient_restrictions":
                               "check_recipient_access hash:$config_directory/rcpts, reject_unauth_destination"},
                tables={"rcpts": "blocked@example.test REJECT\n"}, hashed=["rcpts"])
    check(rcpt_reply(m, "blocked@example.test"), 554)
    check(rcpt_reply(m, "later@example.test"), 250)
    with open(os.path.join(m.dir, "rcpts"), "a") as f:
        f.write("later@example.test REJECT now blocked\n")
    build(os.path.join(m.dir, "rcpts"))
    m.signal(signal.SIGHUP)
    m.wait_log(r"reload -- version")

    def blocked():
        r = rcpt_reply(m, "later@example.test")
        return r if r.code == 554 else None
    r = wait_for(blocked, timeout=10, what="the rebuilt table to apply")
    check(r, 554, "5.7.1", "<later@example.test>: Recipient address rejected: now blocked")
    check(rcpt_reply(m, "blocked@example.test"), 554)


def test_restrictions_table_broken_at_run_time_is_451(moat_factory):
    m = gateway(moat_factory, {"smtpd_recipient_restrictions":
                               "check_recipient_access hash:$config_directory/rcpts, reject_unauth_destination"},
                tables={"rcpts": "blocked@example.test REJECT\n"}, hashed=["rcpts"])
    check(rcpt_reply(m, "blocked@example.test"), 554)
    # Overwrite the compiled table in place (not the atomic rename of
    # `moat map build`): every lookup must now fail temporarily.
    with open(os.path.join(m.dir, "rcpts.lmdb"), "r+b") as f:
        f.truncate(0)
    for rcpt in ("blocked@example.test", "u@example.test"):
        r = rcpt_reply(m, rcpt)
        check(r, 451, "4.3.0")
        assert r.msg == "<%s>: Temporary lookup failure" % rcpt, r


def test_restrictions_table_vanished_never_permits(moat_factory):
    m = gateway(moat_factory, {"smtpd_recipient_restrictions":
                               "check_recipient_access hash:$config_directory/rcpts, reject_unauth_destination"},
                tables={"rcpts": "blocked@example.test REJECT\n"}, hashed=["rcpts"])
    check(rcpt_reply(m, "blocked@example.test"), 554)
    os.unlink(os.path.join(m.dir, "rcpts.lmdb"))
    # Either the table still open answers, or the lookup fails: never a 250.
    r = rcpt_reply(m, "blocked@example.test")
    assert r.code in (554, 451), r
    m.signal(signal.SIGHUP)
    m.wait_log(r"reload failed|reload -- version")
    r = rcpt_reply(m, "blocked@example.test")
    assert r.code in (554, 451), r


# ---------------------------------------------------------------- delay_reject = no

def test_restrictions_no_delay_reject_client(moat_factory):
    m = gateway(moat_factory, {"smtpd_delay_reject": "no",
                               "smtpd_client_restrictions": "check_client_access inline:{ {127.0.0.6=REJECT go away} }"})
    c = Client(m.port, source="127.0.0.6")
    try:
        # Postfix (RFC 5321 3.1): the refusal replaces the greeting, and
        # every command but QUIT gets 503.
        check(c.greeting, 554, "5.7.1")
        assert re.fullmatch(r"<%s\[127\.0\.0\.6\]>: Client host rejected: go away" % NAME_RE, c.greeting.msg), c.greeting
        r = c.cmd("HELO client.test")
        check(r, 503, "5.7.0")
        assert r.msg.startswith("Error: access denied for "), r
        check(c.cmd("MAIL FROM:<a@b.test>"), 503, "5.7.0")
        check(c.cmd("QUIT"), 221)
    finally:
        c.close()
    line = reject_line(m, "go away")
    assert re.search(r"NOQUEUE: reject: CONNECT from (%s)\[127\.0\.0\.6\]: 554 5\.7\.1 <\1\[127\.0\.0\.6\]>: "
                     r"Client host rejected: go away; proto=SMTP rule=client:check_client_access inline:.*$"
                     % NAME_RE, line), line
    check(rcpt_reply(m, "u@example.test", source="127.0.0.7"), 250)


# ---------------------------------------------------------------- one engine, two doors

DOORS_MAIN = {
    "smtpd_restriction_classes": "strict",
    "strict": "reject_non_fqdn_sender, check_sender_access inline:{spam.test=REJECT}",
    "smtpd_client_restrictions": "permit_mynetworks, check_client_access inline:{ {127.0.0.9=REJECT go away} }, "
                                 "check_client_access inline:{ {127.0.0.10=DEFER_IF_PERMIT later} }",
    "smtpd_helo_restrictions": "permit_mynetworks, regexp:$config_directory/dsl_stoplist.txt, "
                               "reject_invalid_helo_hostname",
    "smtpd_sender_restrictions": "check_sender_access hash:$config_directory/sender_access, "
                                 "check_sender_access hash:$config_directory/null_sender",
    "smtpd_recipient_restrictions": "reject_non_fqdn_recipient, check_recipient_access regexp:$config_directory/routing, "
                                    "check_recipient_access inline:{strict@example.test=strict}, "
                                    "permit_mynetworks, reject_unauth_destination",
    "smtpd_reject_footer": "\\c (see https://help.example.test)",
}
# (client, helo, sender, recipient)
DOORS_CASES = [
    ("127.0.0.2", "mx.partner.test", "a@b.test", "u@example.test"),
    ("127.0.0.2", "mx.partner.test", "a@b.test", "u@other.test"),
    ("127.0.0.1", "mx.partner.test", "a@b.test", "u@other.test"),          # permit_mynetworks: relayed
    ("127.0.0.9", "mx.partner.test", "a@b.test", "u@example.test"),
    ("127.0.0.10", "mx.partner.test", "a@b.test", "u@example.test"),
    ("127.0.0.10", "mx.partner.test", "a@b.test", "u@other.test"),
    ("127.0.0.2", "dsl-1-2.isp.example", "a@b.test", "u@example.test"),
    ("127.0.0.2", "[1.2.3]", "a@b.test", "u@example.test"),
    ("127.0.0.2", "mx.partner.test", "junk@spam.test", "u@example.test"),
    ("127.0.0.2", "mx.partner.test", "theboss@spam.test", "u@example.test"),
    ("127.0.0.2", "mx.partner.test", "", "u@example.test"),
    ("127.0.0.2", "mx.partner.test", "a@b.test", "user%other.test@example.test"),
    ("127.0.0.2", "mx.partner.test", "a@b.test", "list-outgoing@example.test"),
    ("127.0.0.2", "mx.partner.test", "a@b.test", "owner-list-outgoing@example.test"),
    ("127.0.0.2", "mx.partner.test", "a@spam.test", "strict@example.test"),
    ("127.0.0.2", "mx.partner.test", "a@nodots", "strict@example.test"),
    ("127.0.0.2", "mx.partner.test", "a@b.test", "postmaster"),
]


def test_restrictions_both_doors_agree(moat_factory):
    """The live session and `moat check` on the same configuration give the
    same RCPT reply, byte for byte (footer included)."""
    m = gateway(moat_factory, DOORS_MAIN, tables={"routing": ROUTING},
                seed_tables=["dsl_stoplist.txt", "sender_access", "null_sender"],
                hashed=["sender_access", "null_sender"])
    codes = set()
    for client, helo, sender, rcpt in DOORS_CASES:
        live = rcpt_reply(m, rcpt, sender=sender, helo=helo, source=client)
        r = subprocess.run([MOAT, "check", "-c", m.dir, "--client", client, "--helo", helo,
                            "--from", sender or "<>", "--rcpt", rcpt],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode in (0, 1), r.stderr
        lines = r.stdout.splitlines()
        i = [k for k, l in enumerate(lines) if l.startswith("RCPT TO:")][0]
        reply = lines[i].split(": ", 1)[1].split("; rule=", 1)[0]
        for more in lines[i + 1:]:
            if not more.startswith("  | "):
                break
            reply += "\r\n" + more[4:]
        assert reply == str(live), "%s: moat check says %r, the server %r" % ((client, helo, sender, rcpt), reply, str(live))
        assert (r.returncode == 0) == (live.code == 250), (client, rcpt, r.stdout)
        codes.add(live.code)
        if live.code != 250:
            assert live.msg.endswith(" (see https://help.example.test)"), live
    # the cases cover accepts, rejects and defers
    assert {250, 450, 501, 504, 550, 553, 554} <= codes, codes
