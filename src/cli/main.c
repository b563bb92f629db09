/*
 * moat: command dispatch.  Each subcommand lives in its own file and
 * returns the exit status.
 */
#include "cli/cli.h"
#include "core/version.h"

#include <stdio.h>
#include <string.h>

static void usage(FILE *f)
{
    fprintf(f,
            "usage: moat COMMAND [options]\n"
            "\n"
            "commands:\n"
            "  serve [-c DIR] [-v]          run the SMTP gateway in the foreground\n"
            "  config check [-c DIR]        validate main.cf and master.cf\n"
            "  config show [-c DIR] [-n|-d] [-x] [-M] [NAME...]\n"
            "                               print parameter values (like postconf)\n"
            "  config doc                   print the parameter reference (markdown)\n"
            "  check [-c DIR] --client IP [--helo NAME] [--from ADDR] --rcpt ADDR... [--trace]\n"
            "                               explain what the restrictions decide for a transaction\n"
            "  dns [-c DIR] TYPE NAME...    resolve names with moat's resolver (--bench: measure it)\n"
            "  map build FILE...            compile FILE into FILE.lmdb (like postmap)\n"
            "  map query [-t] KEY type:name look KEY up in a table (like postmap -q)\n"
            "  queue [-c DIR] list|show|flush|delete|hold|release|requeue ...\n"
            "                               inspect and manage the mail queue (like mailq,\n"
            "                               postqueue, postsuper, postcat)\n"
            "  greylist [-c DIR] list|allow|remove|stats ...\n"
            "                               inspect and edit greylisting state\n"
            "  sasl [-c DIR] [-s SERVICE] test USER [MECH] | hash [--scheme yescrypt|sha512]\n"
            "                               try a login against the AUTH backend (password\n"
            "                               on stdin); make a crypt(3) hash for\n"
            "                               smtpd_sasl_password_maps\n"
            "  spf [-c DIR] --ip IP --sender ADDR --helo NAME [--trace]\n"
            "                               evaluate SPF (RFC 7208) and print each step\n"
            "  content check [-c DIR] [--service NAME] [--trace] [--scan] [--output]\n"
            "                [--client HOST[ADDR]] [--helo NAME] [--sender ADDR] [--rcpt ADDR] [FILE]\n"
            "                               run a message through the header/body checks\n"
            "                               (and the virus scanner) and print each decision\n"
            "  block [-c DIR] list|remove|export ...\n"
            "                               clients blocked by the abuse limits (export:\n"
            "                               --format nftables|plain for a firewall set)\n"
            "  version                      print the version\n"
            "  help                         this text\n"
            "\n"
            "Without -c, moat uses its embedded default configuration: it listens on\n"
            "127.0.0.1:2525 and delivers mail for localhost and example.test to\n"
            "Maildirs under ./var/mail/.  `moat COMMAND --help` describes a command.\n");
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    const char *cmd = argv[1];
    if (strcmp(cmd, "serve") == 0)
        return cmd_serve(argc - 1, argv + 1);
    if (strcmp(cmd, "config") == 0)
        return cmd_config(argc - 1, argv + 1);
    if (strcmp(cmd, "map") == 0)
        return cmd_map(argc - 1, argv + 1);
    if (strcmp(cmd, "check") == 0)
        return cmd_check(argc - 1, argv + 1);
    if (strcmp(cmd, "dns") == 0)
        return cmd_dns(argc - 1, argv + 1);
    if (strcmp(cmd, "queue") == 0)
        return cmd_queue(argc - 1, argv + 1);
    if (strcmp(cmd, "greylist") == 0)
        return cmd_greylist(argc - 1, argv + 1);
    if (strcmp(cmd, "block") == 0)
        return cmd_block(argc - 1, argv + 1);
    if (strcmp(cmd, "sasl") == 0)
        return cmd_sasl(argc - 1, argv + 1);
    if (strcmp(cmd, "spf") == 0)
        return cmd_spf(argc - 1, argv + 1);
    if (strcmp(cmd, "content") == 0)
        return cmd_content(argc - 1, argv + 1);
    if (strcmp(cmd, "version") == 0 || strcmp(cmd, "--version") == 0) {
        printf("moat %s\n", MOAT_VERSION);
        return 0;
    }
    if (strcmp(cmd, "help") == 0 || strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0) {
        usage(stdout);
        return 0;
    }
    fprintf(stderr, "moat: unknown command \"%s\"\n", cmd);
    usage(stderr);
    return 2;
}
