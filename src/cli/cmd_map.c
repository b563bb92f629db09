/*
 * cmd_map: `moat map build | query`, the postmap of moat.
 *
 * build  FILE...           compile each postmap(1)-syntax FILE into
 *                          FILE.lmdb (what hash:, btree: and lmdb: read),
 *                          atomically; errors as file:line on stderr.
 * query  [-t] KEY TABLE... look KEY up in each table in turn (like
 *                          `postmap -q`); print the first value found, or
 *                          with -t where it came from (file:line).
 *
 * Exit status: 0 found / built; 1 not found / a build failed; 2 usage,
 * a table that would not open, or a temporary lookup failure.
 * Owns nothing beyond one call; never touches the queue or a daemon.
 */
#include "cli/cli.h"
#include "core/buf.h"
#include "maps/maps.h"

#include <getopt.h>
#include <stdio.h>
#include <string.h>

static const char usage_build[] =
    "usage: moat map build FILE...\n"
    "  Compile each FILE (postmap(1) syntax: \"key value\" lines, # comments,\n"
    "  continuation lines start with white space; keys are folded to lower\n"
    "  case) into FILE.lmdb, the file hash:FILE, btree:FILE and lmdb:FILE read.\n"
    "  The new file replaces the old one atomically.  A \"hash:\", \"btree:\" or\n"
    "  \"lmdb:\" prefix is accepted.  Exit 1 if any FILE has errors (file:line).\n";
static const char usage_query[] =
    "usage: moat map query [-t] KEY TYPE:NAME...\n"
    "  Look KEY up in each table in turn; print the first value found and\n"
    "  exit 0, or exit 1 when no table has it (like postmap -q).  With -t,\n"
    "  print where the value came from (file:line, or the table for tables\n"
    "  without lines) instead.  Exit 2 when a table cannot be opened or a\n"
    "  lookup fails temporarily (the reason on stderr).\n";

static void usage_all(FILE *fp)
{
    fprintf(fp, "usage: moat map build|query ...   (moat map help COMMAND)\n\n%s\n%s", usage_build,
            usage_query);
}

static const struct option long_opts[] = {{"help", no_argument, NULL, 'h'}, {NULL, 0, NULL, 0}};

static void put(FILE *fp, const buf_t *b)
{
    if (b->len)
        fwrite(b->data, 1, b->len, fp);
}

static int do_build(int argc, char **argv)
{
    int c;
    optind = 0;   /* glibc: reinitialize completely */
    while ((c = getopt_long(argc, argv, "+h", long_opts, NULL)) != -1) {
        if (c == 'h') {
            fputs(usage_build, stdout);
            return 0;
        }
        fputs(usage_build, stderr);
        return 2;
    }
    if (optind >= argc) {
        fputs(usage_build, stderr);
        return 2;
    }
    int rc = 0;
    for (int i = optind; i < argc; i++) {
        const char *file = argv[i];
        const char *colon = strchr(file, ':');
        if (colon && colon != file) {
            size_t tl = (size_t)(colon - file);
            if ((tl == 4 && strncmp(file, "hash", 4) == 0) || (tl == 5 && strncmp(file, "btree", 5) == 0) ||
                (tl == 4 && strncmp(file, "lmdb", 4) == 0)) {
                file = colon + 1;
            } else if (strchr(file, '/') == NULL || strchr(file, '/') > colon) {
                fprintf(stderr, "moat map build: %s: only hash:, btree: and lmdb: tables are built; "
                                "other types read their file directly\n", file);
                rc = 1;
                continue;
            }
        }
        buf_t err = BUF_INIT;
        if (map_build(file, &err) != 0)
            rc = 1;
        put(stderr, &err);   /* errors, and warnings (duplicates) on success too */
        buf_free(&err);
    }
    return rc;
}

static int do_query(int argc, char **argv)
{
    int c;
    bool trace = false;
    optind = 0;
    while ((c = getopt_long(argc, argv, "+th", long_opts, NULL)) != -1) {
        switch (c) {
        case 't': trace = true; break;
        case 'h': fputs(usage_query, stdout); return 0;
        default: fputs(usage_query, stderr); return 2;
        }
    }
    if (argc - optind < 2) {
        fputs(usage_query, stderr);
        return 2;
    }
    const char *key = argv[optind];
    buf_t err = BUF_INIT, value = BUF_INIT;
    int rc = 1;
    for (int i = optind + 1; i < argc && rc == 1; i++) {
        map_t *m = map_open(argv[i], NULL, &err);
        if (!m) {
            put(stderr, &err);
            rc = 2;
            break;
        }
        map_origin_t origin;
        switch (map_lookup(m, key, &value, &origin)) {
        case MAP_FOUND:
            if (trace && origin.file)
                printf("%s:%d\n", origin.file, origin.line);
            else if (trace)
                printf("%s\n", map_name(m));
            else
                printf("%s\n", buf_cstr(&value));
            rc = 0;
            break;
        case MAP_NOTFOUND:
            break;
        case MAP_TEMPFAIL:
            fprintf(stderr, "moat map query: %s: temporary failure: %s\n", map_name(m), buf_cstr(&value));
            rc = 2;
            break;
        }
        map_close(&m);
    }
    buf_free(&err);
    buf_free(&value);
    return rc;
}

int cmd_map(int argc, char **argv)
{
    if (argc < 2) {
        usage_all(stderr);
        return 2;
    }
    const char *sub = argv[1];
    if (strcmp(sub, "build") == 0)
        return do_build(argc - 1, argv + 1);
    if (strcmp(sub, "query") == 0)
        return do_query(argc - 1, argv + 1);
    if (strcmp(sub, "help") == 0 || strcmp(sub, "--help") == 0 || strcmp(sub, "-h") == 0) {
        if (argc > 2 && strcmp(argv[2], "build") == 0)
            fputs(usage_build, stdout);
        else if (argc > 2 && strcmp(argv[2], "query") == 0)
            fputs(usage_query, stdout);
        else
            usage_all(stdout);
        return 0;
    }
    fprintf(stderr, "moat map: unknown command \"%s\"\n", sub);
    usage_all(stderr);
    return 2;
}
