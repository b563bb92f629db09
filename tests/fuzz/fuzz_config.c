/*
 * fuzz_config: config_load_text() on arbitrary text.  The first byte picks
 * what the rest is: main.cf (with a master.cf whose -o overrides make every
 * service rebuild its parameter set), master.cf (with a main.cf of user
 * names to reference), or both, split at the first 0x01 byte.
 *
 * Checks the contract, not just "no crash": a load fails exactly when it
 * reported an error, every message names a file, and a loaded
 * configuration answers every accessor and every `show` form.
 */
#include "config/config.h"
#include "core/buf.h"
#include "core/util.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static const char fixed_master[] =
    "127.0.0.1:2525 inet n - n - - smtpd\n"
    "2526 inet n - n - 10 smtpd -o my_name=override -o { smtpd_banner = $my_name $mail_name }\n"
    "pickup unix n - y 60 1 pickup\n";
static const char fixed_main[] =
    "my_name = main\n"
    "my_list = a, { b c }, d\n"
    "smtpd_banner = $my_name ESMTP\n"
    "mynetworks = $my_list\n";

static void check_messages(const buf_t *b)
{
    const char *s = buf_cstr(b);
    if (b->len && s[b->len - 1] != '\n')
        abort();
    for (const char *line = s; *line;) {
        /* "<text>/main.cf..." or "<text>/master.cf..."; nothing else loads. */
        if (strncmp(line, "<text>/ma", 9) != 0)
            abort();
        line = strchr(line, '\n') + 1;
    }
}

static void check_params(const params_t *p)
{
    for (int id = 0; id < PARAM__COUNT; id++) {
        const char *const *items;
        size_t n = param_list(p, (param_id)id, &items);
        if (!param_str(p, (param_id)id) || !items || items[n] != NULL)
            abort();
        (void)param_int(p, (param_id)id);
    }
    if (param_int(p, PARAM_line_length_limit) < 512)
        abort();
    const char *spool = param_str(p, PARAM_mail_spool_directory);
    if (spool[0] != '/' || spool[strlen(spool) - 1] != '/')
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    char *text = xstrndup((const char *)data + 1, size - 1);
    const char *main_cf = text, *master_cf = fixed_master;
    switch (data[0] % 3) {
    case 1:
        main_cf = fixed_main;
        master_cf = text;
        break;
    case 2: {
        char *sep = strchr(text, '\x01');
        if (sep) {
            *sep = 0;
            master_cf = sep + 1;
        } else {
            master_cf = NULL;   /* as if master.cf were missing */
        }
        break;
    }
    default:
        break;
    }

    buf_t err = BUF_INIT, warn = BUF_INIT;
    config_t *cfg = config_load_text(main_cf, master_cf, &err, &warn);
    if ((cfg == NULL) != (err.len > 0))
        abort();
    check_messages(&err);
    check_messages(&warn);
    if (cfg) {
        check_params(config_main(cfg));
        if (config_nservices(cfg) == 0)
            abort();
        for (size_t i = 0; i < config_nservices(cfg); i++) {
            const service_t *s = config_service(cfg, i);
            long port = atol(s->port);
            if (port < 1 || port > 65535 || !s->params)
                abort();
            check_params(s->params);
        }
        (void)config_ignored(cfg);
        (void)config_ignored_services(cfg);
        static const int forms[] = {0, CONFIG_SHOW_NONDEFAULT, CONFIG_SHOW_DEFAULTS, CONFIG_SHOW_EXPAND,
                                    CONFIG_SHOW_NONDEFAULT | CONFIG_SHOW_EXPAND, CONFIG_SHOW_MASTER};
        char *names[] = {"my_name", "smtpd_banner", "nosuch"};
        for (size_t i = 0; i < ARRAY_LEN(forms); i++) {
            buf_t out = BUF_INIT, e = BUF_INIT;
            config_show(cfg, forms[i], NULL, 0, &out, &e);
            config_show(cfg, forms[i], names, 3, &out, &e);
            buf_free(&out);
            buf_free(&e);
        }
        config_free(&cfg);
    }
    buf_free(&err);
    buf_free(&warn);
    free(text);
    return 0;
}
