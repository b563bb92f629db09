"""ESMTP PIPELINING (RFC 2920) and smtpd_forbid_unauth_pipelining."""

from moatlib import check, queued_id

# The client (127.0.0.1) outside mynetworks, so that pipe@other.test meets
# the relay guard (554) instead of being relayed.
NO_RELAY = {"mynetworks": "192.0.2.0/24",
            "smtpd_recipient_restrictions": "permit_mynetworks, reject_unauth_destination"}


# RFC 2920 3.1: EHLO, DATA, VRFY, NOOP, HELP and QUIT may only be the last
# command of a group; message content may open a group.  These are the
# groups a well-behaved pipelining client sends, each in one write.
GROUPS = [
    b"EHLO client.test\r\n",
    b"MAIL FROM:<a@b.test>\r\n"
    b"RCPT TO:<pipe-a@example.test>\r\n"
    b"RCPT TO:<pipe@other.test>\r\n"
    b"RCPT TO:<pipe-b@example.test>\r\n"
    b"DATA\r\n",
    b"Subject: pipelined\r\n\r\nbody\r\n..dot\r\n.\r\n"
    b"QUIT\r\n",
]
GROUP_REPLIES = [1, 5, 2]


def check_full_replies(replies):
    assert [r.code for r in replies] == [250, 250, 250, 554, 250, 354, 250, 221], replies
    check(replies[1], 250, "2.1.0", "Ok")
    check(replies[2], 250, "2.1.5", "Ok")
    check(replies[3], 554, "5.7.1", "<pipe@other.test>: Relay access denied")
    check(replies[4], 250, "2.1.5", "Ok")
    check(replies[5], 354, None, "End data with <CR><LF>.<CR><LF>")
    qid = queued_id(replies[6])
    check(replies[7], 221, "2.0.0", "Bye")
    return qid


def check_delivered(m):
    for user in ("pipe-a", "pipe-b"):
        mail = m.wait_mails(user, 1)[0]
        assert mail.endswith(b"Subject: pipelined\n\nbody\n.dot\n"), mail
    m.wait_queue_empty()
    for user in ("pipe-a", "pipe-b"):
        assert len(m.mails(user)) == 1


def send_groups(c, byte_by_byte=False):
    replies = []
    for i, (group, n) in enumerate(zip(GROUPS, GROUP_REPLIES)):
        if byte_by_byte:
            for b in group:
                c.send(bytes([b]))
        else:
            c.send(group)
        if i == len(GROUPS) - 1:
            replies += c.replies_until_close()     # ends with QUIT
        else:
            replies += [c.reply() for _ in range(n)]
    return replies


def test_rfc2920_groups(moat_factory):
    m = moat_factory(main=NO_RELAY)
    with m.connect() as c:
        replies = send_groups(c)
    check_full_replies(replies)
    check_delivered(m)


def test_rfc2920_groups_byte_by_byte(moat_factory):
    m = moat_factory(main=NO_RELAY)
    with m.connect() as c:
        replies = send_groups(c, byte_by_byte=True)
    check_full_replies(replies)
    check_delivered(m)


def test_whole_transaction_in_one_send_when_allowed(moat_factory):
    # With smtpd_forbid_unauth_pipelining = no, even a client that does not
    # wait after EHLO and DATA gets every reply, in order.
    m = moat_factory(main=dict(NO_RELAY, smtpd_forbid_unauth_pipelining="no"))
    with m.connect() as c:
        c.send(b"".join(GROUPS))
        replies = c.replies_until_close()
    check_full_replies(replies)
    check_delivered(m)


def test_whole_transaction_in_one_send_forbidden_by_default(moat_factory):
    # Postfix >= 3.9 (smtpd_forbid_unauth_pipelining = yes): a command
    # after EHLO in the same write breaks RFC 2920, so the client is
    # disconnected before anything is accepted.
    m = moat_factory()
    with m.connect() as c:
        c.send(b"".join(GROUPS))
        replies = c.replies_until_close()
    assert replies, "no reply before close"
    check(replies[-1], 554, "5.5.0", "Error: SMTP protocol synchronization")
    assert all(r.code != 354 for r in replies), replies
    m.wait_queue_empty()
    assert m.mails("pipe-a") == [] and m.mails("pipe-b") == []


def test_content_pipelined_after_data_forbidden(moat_factory):
    # DATA must end its group: content before the 354 is a violation.
    m = moat_factory()
    with m.connect() as c:
        c.ehlo()
        c.send(b"MAIL FROM:<a@b.test>\r\nRCPT TO:<pipe-early@example.test>\r\nDATA\r\n"
               b"Subject: early\r\n\r\ntoo early\r\n.\r\n")
        replies = c.replies_until_close()
    assert [r.code for r in replies] == [250, 250, 554], replies
    check(replies[2], 554, "5.5.0", "Error: SMTP protocol synchronization")
    m.wait_queue_empty()
    assert m.mails("pipe-early") == []


def test_pipelined_group_after_ehlo(shared_moat):
    with shared_moat.connect() as c:
        c.ehlo()
        c.send(b"MAIL FROM:<a@b.test>\r\nRCPT TO:<pipe-g@example.test>\r\nRSET\r\nNOOP\r\n")
        rs = [c.reply() for _ in range(4)]
        assert [r.code for r in rs] == [250, 250, 250, 250], rs
        check(rs[0], 250, "2.1.0")
        check(rs[1], 250, "2.1.5")
        c.quit()


def test_pipelined_errors_keep_order(shared_moat):
    with shared_moat.connect() as c:
        c.ehlo()
        c.send(b"RCPT TO:<x@example.test>\r\nBOGUS\r\nMAIL FROM:<bad\r\n"
               b"MAIL FROM:<a@b.test>\r\nMAIL FROM:<a@b.test>\r\nDATA\r\n")
        rs = [c.reply() for _ in range(6)]
        assert [r.code for r in rs] == [503, 502, 501, 250, 503, 503], rs
        check(rs[2], 501, "5.1.7")
        check(rs[4], 503, "5.5.1", "Error: nested MAIL command")
        check(rs[5], 503, "5.5.1", "Error: need RCPT command")
        c.expect("RSET", 250, "2.0.0", "Ok")
        c.quit()


def test_pipelined_bdat(shared_moat):
    with shared_moat.connect() as c:
        c.ehlo()
        p1 = b"Subject: bdat pipe\r\n\r\nhello"
        p2 = b" world\r\n"
        c.send(b"MAIL FROM:<a@b.test>\r\nRCPT TO:<pipe-bdat@example.test>\r\n"
               + b"BDAT %d\r\n" % len(p1) + p1
               + b"BDAT %d LAST\r\n" % len(p2) + p2
               + b"QUIT\r\n")
        rs = c.replies_until_close()
    assert [r.code for r in rs] == [250, 250, 250, 250, 221], rs
    check(rs[2], 250, "2.0.0", "Ok: %d bytes" % len(p1))
    queued_id(rs[3])
    mail = shared_moat.wait_mails("pipe-bdat", 1)[0]
    assert mail.endswith(b"Subject: bdat pipe\n\nhello world\n")


def test_unauth_pipelining_after_helo(moat_factory):
    m = moat_factory()
    with m.connect() as c:
        check(c.cmd("HELO client.test"), 250)
        c.send(b"MAIL FROM:<a@b.test>\r\nRCPT TO:<pipe-helo@example.test>\r\n")
        replies = c.replies_until_close()
    assert replies, "no reply before close"
    check(replies[0], 554, "5.5.0", "Error: SMTP protocol synchronization")
    assert len(replies) == 1, replies
    m.wait_queue_empty()
    assert m.mails("pipe-helo") == []


def test_ehlo_pipelining_same_packet_is_fine(moat_factory):
    m = moat_factory()
    with m.connect() as c:
        c.ehlo()
        c.send(b"MAIL FROM:<a@b.test>\r\nRCPT TO:<pipe-ehlo@example.test>\r\n")
        check(c.reply(), 250, "2.1.0")
        check(c.reply(), 250, "2.1.5")
        c.quit()


def test_helo_without_pipelining_is_fine(moat_factory):
    # A HELO client that waits for each reply is not pipelining.
    m = moat_factory()
    with m.connect() as c:
        check(c.cmd("HELO client.test"), 250)
        c.sendmail("a@b.test", ["pipe-lock@example.test"], "Subject: lockstep\r\n\r\nx\r\n")
        c.quit()
    m.wait_mails("pipe-lock", 1)


def test_unauth_pipelining_allowed_when_disabled(moat_factory):
    m = moat_factory(main={"smtpd_forbid_unauth_pipelining": "no"})
    with m.connect() as c:
        check(c.cmd("HELO client.test"), 250)
        c.send(b"MAIL FROM:<a@b.test>\r\nRCPT TO:<pipe-ok@example.test>\r\n")
        check(c.reply(), 250, "2.1.0")
        check(c.reply(), 250, "2.1.5")
        c.quit()


def test_unauth_pipelining_logged(moat_factory):
    m = moat_factory()
    with m.connect() as c:
        check(c.cmd("HELO client.test"), 250)
        c.send(b"MAIL FROM:<a@b.test>\r\nRCPT TO:<pipe-log@example.test>\r\n")
        c.replies_until_close()
    # Postfix logs the event with the offending command; the exact wording
    # is free, but it must be an smtpd line about this client.
    m.wait_log(r"moat/smtpd\[\d+\]: .*(?:pipelining|synchroni[sz]ation).*127\.0\.0\.1|"
               r"moat/smtpd\[\d+\]: .*127\.0\.0\.1.*(?:pipelining|synchroni[sz]ation)")


def test_many_pipelined_recipients(shared_moat):
    # 1000 RCPTs (the default smtpd_recipient_limit) in one write, read
    # only afterwards: the server must neither stall nor reorder.
    n = 1000
    with shared_moat.connect() as c:
        c.ehlo()
        c.send(b"MAIL FROM:<a@b.test>\r\n"
               + b"".join(b"RCPT TO:<pipe-many%d@example.test>\r\n" % i for i in range(n))
               + b"RCPT TO:<one-too-many@example.test>\r\nRSET\r\n")
        rs = [c.reply() for _ in range(n + 3)]
        assert [r.code for r in rs] == [250] * (n + 1) + [452, 250], [r.code for r in rs]
        check(rs[n + 1], 452, "4.5.3", "Error: too many recipients")
        c.quit()
