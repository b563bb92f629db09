"""check_spf in live SMTP sessions (issue 8): the SPF result of the
client for MAIL FROM (HELO for <>) against the SPF records of the test
DNS world (tests/dns/world.conf, section "spf"), mapped to an action by
spf_result_actions, and the Received-SPF: / Authentication-Results:
headers of the mail that passes.  The evaluator itself is proven on the
RFC 7208 suite (test_spf_suite.py); this is the restriction around it.
"""
import re

import pytest

from moatlib import Client, check, simple_message

PASS_IP = "127.0.70.5"      # inside spf-pass.test's 127.0.70.0/24
OTHER_IP = "127.0.71.1"     # allowed nowhere


@pytest.fixture
def spf_moat(moat_factory, dns_world):
    def make(**main):
        conf = {
            "dns_forwarders": dns_world.forwarders,
            "dns_timeout": "2s",
            "mynetworks": "127.0.0.1/32",
            "mydestination": "example.test",
            "smtpd_recipient_restrictions": "reject_unauth_destination, check_spf",
        }
        conf.update(main)
        return moat_factory(main=conf)
    return make


def rcpt(m, source, sender, helo="client.test", rcpt="u@example.test"):
    with Client(m.port, source=source) as c:
        check(c.cmd("EHLO " + helo), 250)
        check(c.cmd("MAIL FROM:<%s>" % sender), 250)
        return c.cmd("RCPT TO:<%s>" % rcpt)


def test_fail_is_rejected_with_the_domains_explanation(spf_moat):
    m = spf_moat()
    r = rcpt(m, OTHER_IP, "a@spf-fail.test")
    check(r, 550, "5.7.23", "127.0.71.1 is not one of spf-fail.test designated mail servers")
    m.wait_log(r"reject: RCPT from \S+\[127\.0\.71\.1\]: 550 5\.7\.23 .*rule=recipient:check_spf")


def test_fail_without_exp_gets_the_default_explanation(spf_moat):
    m = spf_moat()
    r = rcpt(m, OTHER_IP, "a@spf-pass.test")
    check(r, 550, "5.7.23")
    assert "spf-pass.test" in r.text or "Why" in r.text, r


def test_temperror_defers_and_permerror_passes_with_a_log_line(spf_moat):
    m = spf_moat()
    check(rcpt(m, PASS_IP, "a@spf-temp.test"), 451, "4.7.24")
    check(rcpt(m, PASS_IP, "a@spf-perm.test"), 250)
    m.wait_log(r"warning: .*check_spf: 127\.0\.70\.5: SPF permerror for spf-perm\.test: .*bogus")


def test_softfail_none_and_pass_are_dunno(spf_moat):
    m = spf_moat()
    check(rcpt(m, OTHER_IP, "a@spf-soft.test"), 250)
    check(rcpt(m, OTHER_IP, "a@no-spf.example.test"), 250)
    check(rcpt(m, PASS_IP, "a@spf-pass.test"), 250)


def test_result_actions_are_configurable(spf_moat):
    m = spf_moat(spf_result_actions="{fail=554 5.7.1 go away}, softfail=reject, temperror=dunno")
    check(rcpt(m, OTHER_IP, "a@spf-fail.test"), 554, "5.7.1", "go away")
    check(rcpt(m, OTHER_IP, "a@spf-soft.test"), 550, "5.7.23")
    check(rcpt(m, PASS_IP, "a@spf-temp.test"), 250)


def test_bad_result_actions_is_a_load_error(moat_factory):
    m = moat_factory(main={"spf_result_actions": "fial=reject"}, start=False)
    m.write_config()
    r = m.run_cli("config", "check")
    assert r.returncode == 1, r
    assert re.search(r"main\.cf:\d+: spf_result_actions: \"fial=reject\"", r.stderr + r.stdout), r


def test_null_sender_checks_the_helo_identity(spf_moat):
    m = spf_moat()
    check(rcpt(m, "127.0.70.9", "", helo="spf-helo.test"), 250)
    check(rcpt(m, OTHER_IP, "", helo="spf-helo.test"), 550, "5.7.23")


def test_headers_on_accepted_mail(spf_moat):
    m = spf_moat()
    with Client(m.port, source=PASS_IP) as c:
        check(c.cmd("EHLO client.test"), 250)
        check(c.cmd("MAIL FROM:<a@spf-pass.test>"), 250)
        check(c.cmd("RCPT TO:<u@example.test>"), 250)
        check(c.cmd("RCPT TO:<v@example.test>"), 250)
        c.data(simple_message("spf"))
    m.wait_log(r"spf=pass identity=mailfrom domain=spf-pass\.test mechanism=ip4:127\.0\.70\.0/24")
    text = m.wait_mails("u", 1)[0].decode()
    # one pair of headers for the message, not one per recipient
    assert text.count("Received-SPF: pass") == 1, text
    assert "client-ip=127.0.70.5" in text, text
    assert text.count("Authentication-Results: ") == 1, text
    assert "spf=pass smtp.mailfrom=a@spf-pass.test" in text, text
    assert text.index("Received-SPF:") < text.index("Received: from"), text


def test_moat_check_traces_the_spf_steps(spf_moat):
    m = spf_moat()
    r = m.run_cli("check", "--client", OTHER_IP, "--helo", "client.test", "--from", "a@spf-fail.test",
                  "--rcpt", "u@example.test", "--trace")
    assert "550 5.7.23" in r.stdout, r.stdout
    assert re.search(r"spf mailfrom spf-fail\.test: fail \(-all\)", r.stdout), r.stdout
