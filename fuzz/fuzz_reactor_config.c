/* fuzz/fuzz_reactor_config.c: reel-reactor's configuration file
 * (reactor/config.h) on any bytes. Properties: a file that parses has 1 to
 * 256 apps with distinct names of at most 256 bytes of UTF-8, each with a
 * URL, 1 to 16 secrets and its numbers within their limits, each found by
 * name, and a sweep and queue within theirs; one that does not is
 * INVALID_ARGUMENT (or RESOURCE_EXHAUSTED) with a message, an empty
 * configuration, and no secret repeated (conf_secrets.h). */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "base/text.h"
#include "fuzz/conf_secrets.h"
#include "reactor/config.h"

static void check_app(const reactor_config_t *cfg, size_t i) {
    const reactor_app_t *a = &cfg->apps[i];
    size_t len = a->app != NULL ? strlen(a->app) : 0;

    if (len < 1 || len > REACTOR_APP_MAX || !reel_utf8_valid(a->app, len) ||
        reactor_config_find(cfg, a->app, len) != (int)i)
        abort();
    if (a->url == NULL || a->n_secrets < 1 || a->n_secrets > 16 ||
        a->max_in_flight < 1 || a->max_in_flight > 1024 ||
        a->timeout_ms < 1 || a->timeout_ms > 3600000 ||
        a->connect_timeout_ms < 1 || a->connect_timeout_ms > 3600000 ||
        a->retry.n_steps > SINK_RETRY_STEPS_MAX ||
        !(a->retry.jitter >= 0 && a->retry.jitter <= 0.5))
        abort();
    for (size_t j = 0; j < a->n_secrets; j++)
        if (a->secrets[j].len < 1 || a->secrets[j].len > SINK_SECRET_MAX)
            abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *text = (const char *)data;
    reel_status_t st = REEL_STATUS_INIT;
    reactor_config_t cfg;
    reel_code_t rc;

    rc = reactor_config_parse(text, size, &cfg, &st);
    if (rc == REEL_OK) {
        if (cfg.n < 1 || cfg.n > REACTOR_APPS_MAX || cfg.apps == NULL ||
            !(cfg.sweep_interval_ms == 0 ||
              (cfg.sweep_interval_ms >= 100 &&
               cfg.sweep_interval_ms <= 3600000)) ||
            cfg.queue_max_runs < 1 || cfg.queue_max_runs > 1000000)
            abort();
        for (size_t i = 0; i < cfg.n; i++)
            check_app(&cfg, i);
        reactor_config_fini(&cfg);
    } else {
        const char *msg = reel_status_message(&st);

        if ((rc != REEL_INVALID_ARGUMENT && rc != REEL_RESOURCE_EXHAUSTED) ||
            rc != st.code || msg == NULL || msg[0] == '\0' || cfg.n != 0 ||
            cfg.apps != NULL)
            abort();
        fuzz_conf_secrets_check(text, size, msg);
    }
    reel_status_fini(&st);
    return 0;
}
