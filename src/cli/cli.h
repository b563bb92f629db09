/*
 * cli: the `moat` subcommands.  Each returns the process exit status.
 */
#ifndef MOAT_CLI_CLI_H
#define MOAT_CLI_CLI_H

int cmd_serve(int argc, char **argv);   /* cli/serve.c */
int cmd_config(int argc, char **argv);  /* cli/cmd_config.c: check | show | doc */
int cmd_map(int argc, char **argv);     /* cli/cmd_map.c: build | query */

#endif
