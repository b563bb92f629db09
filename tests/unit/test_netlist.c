/* Unit tests for src/policy/netlist. */
#include "harness.h"

#include "policy/netlist.h"

TEST(netlist_match)
{
    const char *items[] = {"!127.0.0.5", "127.0.0.0/8", "[::1]/128", "192.0.2.1", "2001:db8::/32"};
    buf_t err = BUF_INIT;
    netlist_t *nl = netlist_new("mynetworks", items, 5, &err);
    REQUIRE(nl != NULL);
    CHECK(netlist_match_text(nl, "127.1.2.3"));
    CHECK(!netlist_match_text(nl, "127.0.0.5"));
    CHECK(netlist_match_text(nl, "::1"));
    CHECK(netlist_match_text(nl, "192.0.2.1"));
    CHECK(!netlist_match_text(nl, "192.0.2.2"));
    CHECK(netlist_match_text(nl, "2001:db8:1::5"));
    CHECK(!netlist_match_text(nl, "2001:db9::1"));
    CHECK(!netlist_match_text(nl, "::ffff:10.0.0.1"));
    CHECK(netlist_match_text(nl, "::ffff:127.0.0.1"));
    CHECK(!netlist_match_text(nl, "garbage"));
    netlist_free(&nl);
    CHECK(nl == NULL);
    buf_free(&err);
}

TEST(netlist_errors)
{
    const char *bad[] = {"10.0.0.1/8", "300.1.1.1", "10.0.0.0/33", "host.example", "1.2.3.4/"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        buf_t err = BUF_INIT;
        netlist_t *nl = netlist_new("mynetworks", &bad[i], 1, &err);
        CHECK(nl == NULL);
        CHECK(strstr(buf_cstr(&err), "mynetworks: bad network") != NULL);
        buf_free(&err);
    }
}
