/*
 * cli: the `moat` subcommands.  Each returns the process exit status.
 */
#ifndef MOAT_CLI_CLI_H
#define MOAT_CLI_CLI_H

int cmd_serve(int argc, char **argv);   /* cli/serve.c */
int cmd_config(int argc, char **argv);  /* cli/cmd_config.c: check | show | doc */
int cmd_map(int argc, char **argv);     /* cli/cmd_map.c: build | query */
int cmd_check(int argc, char **argv);   /* cli/cmd_check.c: simulate a transaction through the restriction engine */
int cmd_dns(int argc, char **argv);     /* cli/cmd_dns.c: resolve names with moat's resolver; --bench */
int cmd_queue(int argc, char **argv);   /* cli/cmd_queue.c: list | show | flush | delete | hold | release | requeue */
int cmd_greylist(int argc, char **argv);  /* cli/cmd_greylist.c: list | allow | remove | stats */
int cmd_sasl(int argc, char **argv);      /* cli/cmd_sasl.c: test | hash */
int cmd_spf(int argc, char **argv);       /* cli/cmd_spf.c: evaluate SPF */
int cmd_block(int argc, char **argv);     /* cli/cmd_block.c: list | remove | export */
int cmd_content(int argc, char **argv);   /* cli/cmd_content.c: run a message through the content checks */

/* cli/cli_util.c: "moat CMD: message" on stderr; returns 1 (the tools' error status). */
int cli_fail(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));


/* cli/cli_state.c: the state store for `moat greylist` and `moat block`
 * (and the benches): the configuration of DIR (NULL: the embedded one),
 * its state_store opened on a private loop and pool. */
#include "config/config.h"
#include "core/buf.h"
#include "core/pool.h"
#include "store/store.h"

#include <stdio.h>

/* cli/cli_util.c: b's bytes to fp (nothing when empty). */
void cli_put(FILE *fp, const buf_t *b);
/* The smtpd service NAME of master.cf, or the first one when name is
 * NULL; NULL with "moat: CMD: ..." in err when there is none. */
const service_t *cli_smtpd_service(const config_t *cfg, const char *name, const char *cmd, buf_t *err);

typedef struct cli_state {
    struct event_base *base;
    pool_t *pool;
    config_t *cfg;
    store_t *store;
} cli_state_t;

/* 0, or -1 with the reason in err ("file:line: message" for a bad
 * configuration). */
int cli_state_open(cli_state_t *cs, const char *dir, buf_t *err);
/* Run the loop until *done is true (the store's callbacks set it). */
void cli_state_wait(cli_state_t *cs, const bool *done);
void cli_state_close(cli_state_t *cs);

#endif
