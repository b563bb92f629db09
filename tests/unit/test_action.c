/* Unit tests for src/policy/action: access(5) results. */
#include "harness.h"

#include "policy/action.h"

static void expect(const char *value, action_kind kind, int code, const char *dsn, const char *text)
{
    action_t a;
    action_parse(value, &a);
    if (a.kind != kind || a.code != code || strcmp(a.dsn, dsn) != 0 || strcmp(a.text, text) != 0)
        harness_fail(__FILE__, __LINE__, "\"%s\": got %s/%d/\"%s\"/\"%s\", want %s/%d/\"%s\"/\"%s\"",
                     value, action_name(a.kind), a.code, a.dsn, a.text, action_name(kind), code,
                     dsn, text);
}

TEST(action_parse_table)
{
    expect("OK", ACT_OK, 0, "", "");
    expect("ok", ACT_OK, 0, "", "");
    expect("12345", ACT_OK, 0, "", "");
    expect("DUNNO", ACT_DUNNO, 0, "", "");
    expect("REJECT", ACT_REJECT, 0, "", "");
    expect("REJECT You are not me", ACT_REJECT, 0, "", "You are not me");
    expect("reject 5.7.1 go away", ACT_REJECT, 0, "5.7.1", "go away");
    expect("553 AUTO_DSL You have been identified", ACT_REJECT, 553, "",
           "AUTO_DSL You have been identified");
    expect("450 4.7.1 try later", ACT_DEFER, 450, "4.7.1", "try later");
    expect("421 4.3.2 closing", ACT_DEFER, 421, "4.3.2", "closing");
    expect("DEFER", ACT_DEFER, 0, "", "");
    expect("DEFER_IF_PERMIT Service unavailable", ACT_DEFER_IF_PERMIT, 0, "", "Service unavailable");
    expect("DEFER_IF_REJECT", ACT_DEFER_IF_REJECT, 0, "", "");
    expect("DISCARD spam", ACT_DISCARD, 0, "", "spam");
    expect("HOLD", ACT_HOLD, 0, "", "");
    expect("WARN check this", ACT_WARN, 0, "", "check this");
    expect("INFO noted", ACT_INFO, 0, "", "noted");
    expect("PREPEND X-Seen: yes", ACT_PREPEND, 0, "", "X-Seen: yes");
    expect("REDIRECT abuse@example.test", ACT_REDIRECT, 0, "", "abuse@example.test");
    expect("BCC archive@example.test", ACT_BCC, 0, "", "archive@example.test");
    expect("FILTER smtp:[127.0.0.1]:10025", ACT_FILTER, 0, "", "smtp:[127.0.0.1]:10025");
    expect("reject_unknown_client_hostname", ACT_RESTRICTIONS, 0, "", "reject_unknown_client_hostname");
    expect("permit_mynetworks, reject", ACT_RESTRICTIONS, 0, "", "permit_mynetworks, reject");
}

TEST(action_parse_invalid)
{
    action_t a;
    const char *bad[] = {"", "   ", "250 fine", "650 x", "550 4.7.1 mismatch", "REJECT 4.7.1 x",
                         "DEFER 5.7.1 x", "PREPEND", "PREPEND noheader", "REDIRECT",
                         "REDIRECT a b", "FILTER", "FILTER nocolon"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        action_parse(bad[i], &a);
        if (a.kind != ACT_INVALID)
            harness_fail(__FILE__, __LINE__, "\"%s\" parsed as %s", bad[i], action_name(a.kind));
    }
}
