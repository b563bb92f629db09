/*
 * Replays of Postfix's address regression data (shared/testdata/postfix/
 * global/, format in its FORMAT.md) against moat's equivalents:
 *   quote_822_local  - RFC 5321 local-part quoting: addr_parse_path()'s
 *                      `full` (quoted form) and `local`@`domain` (unquoted)
 *   fold_addr_test   - case folding of table keys: map_fold_key() folds the
 *                      whole key ("all" mode), ASCII only
 * Rows moat answers differently are skipped here and listed with the
 * reason in docs/compatibility.md.  The data lives beside the checkout
 * (../shared, or $MOAT_SHARED).
 */
#include "harness.h"

#include "core/buf.h"
#include "core/util.h"
#include "maps/map-private.h"
#include "smtp/addr.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static FILE *open_data(const char *name)
{
    const char *root = getenv("MOAT_SHARED");
    char path[512];
    snprintf(path, sizeof path, "%s/testdata/postfix/global/%s", root ? root : "../shared", name);
    FILE *f = fopen(path, "r");
    if (!f)
        harness_fail(__FILE__, __LINE__, "cannot open %s (set MOAT_SHARED)", path);
    return f;
}

/* The text between the n-th pair of single quotes on the line. */
static bool quoted_field(const char *line, int n, char *out, size_t size)
{
    const char *p = line;
    for (int i = 0; i <= n; i++) {
        const char *a = strchr(p, '\'');
        if (!a)
            return false;
        const char *b = strchr(a + 1, '\'');
        if (!b)
            return false;
        if (i == n) {
            size_t len = (size_t)(b - a - 1);
            if (len >= size)
                return false;
            memcpy(out, a + 1, len);
            out[len] = 0;
            return true;
        }
        p = b + 1;
    }
    return false;
}

TEST(postfix_quote_822_local)
{
    FILE *f = open_data("quote_822_local.ref");
    REQUIRE(f != NULL);
    char line[512];
    int checked = 0;
    while (fgets(line, sizeof line, f)) {
        char in[256], out[256];
        if (!quoted_field(line, 0, in, sizeof in) || !quoted_field(line, 1, out, sizeof out))
            continue;
        bool quote = strstr(line, "' quoted '") != NULL;
        if (!quote && !strstr(line, "' unquoted '"))
            continue;   /* quoting with flags (bare_localpart) has no moat equivalent */
        const char *external = quote ? out : in, *internal = quote ? in : out;
        if (!*internal)
            continue;   /* the null address: moat keeps it as "", not '""' */
        char path[300];
        snprintf(path, sizeof path, "<%s>", external);
        addr_t a;
        const char *rest, *why;
        const char *close = strrchr(external, '"');
        bool two_ats = close && strchr(close, '@') && strchr(close, '@') != strrchr(close, '@');
        if (addr_parse_path(path, ADDR_UTF8, false, &a, &rest, &why) != 0) {
            /* "x"@d@e is not an RFC 5321 path; Postfix's 822 quoting takes
             * it, moat's path parser refuses it (docs/compatibility.md). */
            if (!two_ats)
                harness_fail(__FILE__, __LINE__, "%s: %s", path, why);
            continue;
        }
        buf_t joined = BUF_INIT;
        buf_puts(&joined, a.local);
        if (a.domain[0])
            buf_printf(&joined, "@%s", a.domain);
        CHECK_STR(buf_cstr(&joined), internal);
        CHECK_STR(a.full, external);
        buf_free(&joined);
        addr_free(&a);
        checked++;
    }
    fclose(f);
    CHECK(checked >= 3);
}

TEST(postfix_fold_addr)
{
    FILE *f = open_data("fold_addr_test.ref");
    REQUIRE(f != NULL);
    char line[512], mode[16] = "";
    int checked = 0;
    buf_t folded = BUF_INIT;
    while (fgets(line, sizeof line, f)) {
        if (line[0] == '>') {
            if (sscanf(line, "> %15s", mode) != 1)
                mode[0] = 0;
            continue;
        }
        char in[256], out[256];
        const char *arrow = strstr(line, "\" -> \"");
        if (line[0] != '"' || !arrow || strcmp(mode, "all") != 0)
            continue;
        size_t il = (size_t)(arrow - line - 1);
        if (il >= sizeof in)
            continue;
        memcpy(in, line + 1, il);
        in[il] = 0;
        if (str_copy(out, arrow + 6, sizeof out) >= sizeof out)
            continue;
        char *q = strrchr(out, '"');
        if (q)
            *q = 0;
        bool ascii = true;
        for (const char *p = in; *p; p++)
            if ((unsigned char)*p >= 0x80)
                ascii = false;
        if (!ascii)
            continue;   /* moat folds ASCII only (docs/compatibility.md) */
        map_fold_key(in, &folded);
        CHECK_STR(buf_cstr(&folded), out);
        checked++;
    }
    buf_free(&folded);
    fclose(f);
    CHECK(checked >= 2);
}
