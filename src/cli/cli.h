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

#endif
