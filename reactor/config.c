/*
 * reactor/config.c: reading reel-reactor's JSON configuration; see
 * config.h and docs/reactor.md for every key.
 *
 * Every check happens here, before anything starts, so a running reactor
 * never finds its configuration wrong; the checks themselves are the
 * sink's (sink/conf.h), so both read numbers, secrets and retry
 * schedules alike. Unknown keys are refused (a typo
 * such as "secret" for "secrets" would otherwise send unsigned requests).
 * Messages name the app by index and name, then the field:
 *   apps[1] "billing": max_in_flight: 0 is not an integer from 1 to 1024
 * Secrets are described, never repeated.
 */
#include "reactor/config.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "base/text.h"
#include "sink/conf.h"

#define DEFAULT_MAX_IN_FLIGHT 16
#define MAX_IN_FLIGHT 1024
#define DEFAULT_TIMEOUT_MS 10000
#define DEFAULT_CONNECT_TIMEOUT_MS 5000
#define MAX_TIMEOUT_MS 3600000
#define DEFAULT_SWEEP_MS 10000
#define MIN_SWEEP_MS 100
#define MAX_SWEEP_MS 3600000
#define DEFAULT_QUEUE_RUNS 10000
#define MAX_QUEUE_RUNS 1000000

static const char *const http_schemes[] = {"http", "https", NULL};
static const char *const top_keys[] = {"apps", "sweep_interval_ms",
                                       "queue_max_runs", NULL};
static const char *const app_keys[] = {
    "app", "url", "secrets", "max_in_flight", "timeout_ms",
    "connect_timeout_ms", "retry_schedule_ms", "retry_jitter", NULL};

/*
 * A worker is told again soon: a run waits while its dispatch fails, so the
 * schedule is minutes, not the day a webhook sink allows. 0.5 s, 1 s, 2 s,
 * 5 s, 10 s, 30 s, 1 min, 5 min, 10 min: ten attempts over about 17 min.
 */
static void retry_defaults(sink_retry_t *r) {
    static const int64_t steps[] = {500,   1000,  2000,   5000,  10000,
                                    30000, 60000, 300000, 600000};

    sink_retry_defaults(r);
    memcpy(r->steps_ms, steps, sizeof(steps));
    r->n_steps = sizeof(steps) / sizeof(steps[0]);
}

/* ---- Checks -------------------------------------------------------------- */

/* A number in [min, max] that is an integer; 0 or -1 (it is not). The
 * range is checked first: casting a double outside int64 is undefined. */
static int as_int(const cJSON *v, int64_t min, int64_t max, int64_t *out) {
    double d;

    if (!cJSON_IsNumber(v))
        return -1;
    d = v->valuedouble;
    if (!(d >= (double)min && d <= (double)max) || d != floor(d))
        return -1;
    *out = (int64_t)d;
    return 0;
}

static reel_code_t parse_app(sink_conf_ctx_t *c, const cJSON *o,
                             reactor_app_t *a) {
    const cJSON *e;
    int64_t v;
    reel_code_t rc;

    if (!cJSON_IsObject(o))
        return reel_status_set(c->st, REEL_INVALID_ARGUMENT,
                               "apps[%zu]: must be an object", c->index);
    /* The name first, so every message after names the app. */
    if ((rc = sink_conf_string(c, o, "app", 1, &a->app)) != REEL_OK)
        return rc;
    if (strlen(a->app) > REACTOR_APP_MAX)
        return sink_conf_bad(c, "app", "%zu bytes exceed the limit of %d",
                             strlen(a->app), REACTOR_APP_MAX);
    /* reeld refuses such app names: this entry could never match a run. */
    if (!reel_utf8_valid(a->app, strlen(a->app)))
        return sink_conf_bad(c, "app", "not valid UTF-8");
    c->name = a->app;
    cJSON_ArrayForEach(e, o) {
        if (!sink_conf_listed(app_keys, e->string))
            return sink_conf_bad(c, e->string,
                                 "unknown key (an app has app, url, "
                                 "secrets, max_in_flight, timeout_ms, "
                                 "connect_timeout_ms, retry_schedule_ms, "
                                 "retry_jitter)");
    }
    if ((rc = sink_conf_string(c, o, "url", 1, &a->url)) != REEL_OK)
        return rc;
    if ((rc = sink_conf_url(c, "url", a->url, http_schemes)) != REEL_OK)
        return rc;
    if ((rc = sink_conf_secrets(c, o,
                                "missing (every request is signed "
                                "with each of the app's secrets: "
                                "[\"whsec_...\"])",
                                &a->secrets, &a->n_secrets)) != REEL_OK)
        return rc;
    v = DEFAULT_MAX_IN_FLIGHT;
    if ((rc = sink_conf_int(c, o, "max_in_flight", 1, MAX_IN_FLIGHT, &v)) !=
        REEL_OK)
        return rc;
    a->max_in_flight = (int)v;
    a->timeout_ms = DEFAULT_TIMEOUT_MS;
    a->connect_timeout_ms = DEFAULT_CONNECT_TIMEOUT_MS;
    if ((rc = sink_conf_int(c, o, "timeout_ms", 1, MAX_TIMEOUT_MS,
                            &a->timeout_ms)) != REEL_OK ||
        (rc = sink_conf_int(c, o, "connect_timeout_ms", 1, MAX_TIMEOUT_MS,
                            &a->connect_timeout_ms)) != REEL_OK)
        return rc;
    retry_defaults(&a->retry);
    return sink_conf_retry(c, o, &a->retry);
}

/* ---- The file --------------------------------------------------------------- */

static void app_fini(reactor_app_t *a) {
    free(a->app);
    free(a->url);
    free(a->secrets);
    memset(a, 0, sizeof(*a));
}

void reactor_config_fini(reactor_config_t *cfg) {
    if (cfg == NULL)
        return;
    for (size_t i = 0; i < cfg->n; i++)
        app_fini(&cfg->apps[i]);
    free(cfg->apps);
    memset(cfg, 0, sizeof(*cfg));
}

reel_code_t reactor_config_parse(const char *text, size_t len,
                                 reactor_config_t *out, reel_status_t *st) {
    cJSON *root = NULL;
    const cJSON *apps, *e;
    sink_conf_ctx_t top = {st, "apps", 0, NULL};
    int64_t v;
    size_t n = 0;
    reel_code_t rc = REEL_OK;

    memset(out, 0, sizeof(*out));
    if ((root = sink_conf_parse(text, len, st)) == NULL) {
        rc = st->code;
        goto out;
    }
    if (!cJSON_IsObject(root)) {
        rc = reel_status_set(st, REEL_INVALID_ARGUMENT,
                             "config: not a JSON object");
        goto out;
    }
    cJSON_ArrayForEach(e, root) {
        if (!sink_conf_listed(top_keys, e->string)) {
            rc = reel_status_set(st, REEL_INVALID_ARGUMENT,
                                 "config: unknown key \"%.80s\" (it holds "
                                 "apps, sweep_interval_ms, queue_max_runs)",
                                 e->string);
            goto out;
        }
    }
    out->sweep_interval_ms = DEFAULT_SWEEP_MS;
    v = DEFAULT_QUEUE_RUNS;
    e = cJSON_GetObjectItemCaseSensitive(root, "sweep_interval_ms");
    if (e != NULL && !(as_int(e, 0, 0, &out->sweep_interval_ms) == 0 ||
                       as_int(e, MIN_SWEEP_MS, MAX_SWEEP_MS,
                              &out->sweep_interval_ms) == 0)) {
        rc = reel_status_set(st, REEL_INVALID_ARGUMENT,
                             "config: sweep_interval_ms: must be 0 (no "
                             "sweep) or an integer from %d to %d",
                             MIN_SWEEP_MS, MAX_SWEEP_MS);
        goto out;
    }
    e = cJSON_GetObjectItemCaseSensitive(root, "queue_max_runs");
    if (e != NULL && as_int(e, 1, MAX_QUEUE_RUNS, &v) != 0) {
        rc = reel_status_set(st, REEL_INVALID_ARGUMENT,
                             "config: queue_max_runs: must be an integer "
                             "from 1 to %d",
                             MAX_QUEUE_RUNS);
        goto out;
    }
    out->queue_max_runs = (size_t)v;
    apps = cJSON_GetObjectItemCaseSensitive(root, "apps");
    if (!cJSON_IsArray(apps) || (n = (size_t)cJSON_GetArraySize(apps)) == 0) {
        rc = reel_status_set(st, REEL_INVALID_ARGUMENT,
                             "config: apps: must be a non-empty array of "
                             "apps");
        goto out;
    }
    if (n > REACTOR_APPS_MAX) {
        rc = reel_status_set(st, REEL_INVALID_ARGUMENT,
                             "config: apps: %zu apps exceed the limit of %d",
                             n, REACTOR_APPS_MAX);
        goto out;
    }
    if ((out->apps = calloc(n, sizeof(*out->apps))) == NULL) {
        rc = reel_status_set(st, REEL_RESOURCE_EXHAUSTED, "out of memory");
        goto out;
    }
    out->n = n;
    for (size_t i = 0; i < n; i++) {
        sink_conf_ctx_t c = top;

        c.index = i;
        if ((rc = parse_app(&c, cJSON_GetArrayItem(apps, (int)i),
                            &out->apps[i])) != REEL_OK)
            goto out;
        for (size_t j = 0; j < i; j++) {
            if (strcmp(out->apps[j].app, out->apps[i].app) == 0) {
                rc = sink_conf_bad(&c, "app",
                                   "also apps[%zu] (one entry "
                                   "per app)",
                                   j);
                goto out;
            }
        }
    }
out:
    cJSON_Delete(root);
    if (rc != REEL_OK)
        reactor_config_fini(out);
    return rc;
}

reel_code_t reactor_config_load(const char *path, reactor_config_t *out,
                                reel_status_t *st) {
    char *text;
    size_t len;
    reel_code_t rc;

    memset(out, 0, sizeof(*out));
    if ((rc = sink_conf_read_file(path, &text, &len, st)) != REEL_OK)
        return rc;
    rc = reactor_config_parse(text, len, out, st);
    free(text);
    return rc;
}

int reactor_config_find(const reactor_config_t *cfg, const char *app,
                        size_t len) {
    for (size_t i = 0; i < cfg->n; i++)
        if (strlen(cfg->apps[i].app) == len &&
            memcmp(cfg->apps[i].app, app, len) == 0)
            return (int)i;
    return -1;
}

reel_code_t reactor_config_check_open_files(const reactor_config_t *cfg,
                                            uint64_t limit,
                                            reel_status_t *st) {
    const reactor_app_t *most = NULL;
    uint64_t conns = 0, need;

    for (size_t i = 0; i < cfg->n; i++) {
        conns += (uint64_t)cfg->apps[i].max_in_flight;
        if (most == NULL || cfg->apps[i].max_in_flight > most->max_in_flight)
            most = &cfg->apps[i];
    }
    need = conns + REACTOR_OWN_OPEN_FILES;
    if (need <= limit)
        return REEL_OK;
    return reel_status_set(
        st, REEL_INVALID_ARGUMENT,
        "max_in_flight: the apps need up to %" PRIu64 " open files at once "
        "(%" PRIu64 " connections: each app's max_in_flight, the most \"%s\""
        "'s %d; and %d for reel-reactor's own), more than the open-files "
        "limit of %" PRIu64 " (ulimit -n; reel-reactor raised it to the hard "
        "limit, ulimit -Hn): lower max_in_flight or raise the hard limit "
        "(LimitNOFILE= under systemd)",
        need, conns, most->app, most->max_in_flight, REACTOR_OWN_OPEN_FILES,
        limit);
}
