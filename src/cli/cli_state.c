/*
 * cli_state: open the configured state store for a command-line tool
 * (moat greylist, moat block): one private event loop and pool, the
 * store's callbacks run while the tool waits in cli_state_wait.  Never
 * used by the daemon.
 */
#include "cli/cli.h"

#include <event2/event.h>
#include <stdbool.h>
#include <string.h>

int cli_state_open(cli_state_t *cs, const char *dir, buf_t *err)
{
    memset(cs, 0, sizeof *cs);
    cs->cfg = config_load(dir, err, NULL);
    if (!cs->cfg)
        return -1;
    cs->base = event_base_new();
    cs->pool = pool_new(cs->base, 1);
    const char *spec = param_str(config_main(cs->cfg), PARAM_state_store);
    buf_t why = BUF_INIT;
    cs->store = store_open(cs->base, cs->pool, spec, &why);
    if (!cs->store) {
        buf_printf(err, "state_store = %s: %s\n", spec, buf_cstr(&why));
        buf_free(&why);
        cli_state_close(cs);
        return -1;
    }
    buf_free(&why);
    return 0;
}

void cli_state_wait(cli_state_t *cs, const bool *done)
{
    while (!*done)
        event_base_loop(cs->base, EVLOOP_ONCE);
}

void cli_state_close(cli_state_t *cs)
{
    store_close(&cs->store);   /* before the pool: its timers and jobs use it */
    pool_free(&cs->pool);
    if (cs->base)
        event_base_free(cs->base);
    config_free(&cs->cfg);
    memset(cs, 0, sizeof *cs);
}
