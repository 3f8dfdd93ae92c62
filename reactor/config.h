/*
 * reactor/config.h: reel-reactor's configuration file (private to
 * reactor/).
 *
 * A JSON object read with cJSON:
 *
 *   {"apps": [{"app": "shop", "url": "https://...",
 *              "secrets": ["whsec_..."], "max_in_flight": 16}],
 *    "sweep_interval_ms": 10000, "queue_max_runs": 10000}
 *
 * Every key is listed in docs/reactor.md. Parsing checks everything before
 * anything starts: an unknown key (a typo such as "secret"), a missing app
 * or url, a secret that is not whsec_ + base64, an app listed twice, a
 * number outside its limits are INVALID_ARGUMENT naming the app and the
 * field (apps[0] "shop": url: missing), and reel-reactor exits 2.
 *
 * Ownership: a reactor_config_t owns everything it points to;
 * reactor_config_fini frees it. Pure; thread-safe on distinct configs.
 */
#ifndef REEL_REACTOR_CONFIG_H
#define REEL_REACTOR_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#include "base/status.h"
#include "sink/retry.h"
#include "sink/sign.h"

#define REACTOR_APP_MAX 256     /* bytes of an app name */
#define REACTOR_APPS_MAX 256

typedef struct reactor_app {
    char *app;
    char *url;
    sink_secret_t *secrets;
    size_t n_secrets;
    int max_in_flight;          /* requests on the wire at once */
    int64_t timeout_ms;         /* per attempt */
    int64_t connect_timeout_ms;
    sink_retry_t retry;         /* when a failed dispatch goes again */
} reactor_app_t;

typedef struct reactor_config {
    reactor_app_t *apps;
    size_t n;
    int64_t sweep_interval_ms;  /* ListRunsToRecover; 0 = never */
    size_t queue_max_runs;      /* dispatches held at once, all apps */
} reactor_config_t;

/* Parses text[0..len). OK and *out filled, or INVALID_ARGUMENT naming the
 * app and the field (out is then empty). */
reel_code_t reactor_config_parse(const char *text, size_t len,
                                 reactor_config_t *out, reel_status_t *st);

/* Reads and parses path; a file that cannot be read is INVALID_ARGUMENT
 * naming it and why. */
reel_code_t reactor_config_load(const char *path, reactor_config_t *out,
                                reel_status_t *st);

/* Descriptors reel-reactor keeps for its own files, its connection to
 * reel and its metrics endpoint, beside the workers' connections. */
#define REACTOR_OWN_OPEN_FILES 64

/*
 * Whether every app's max_in_flight connections and REACTOR_OWN_OPEN_FILES
 * fit under the process's open-files limit (limit, RLIMIT_NOFILE's soft
 * value): OK, or INVALID_ARGUMENT naming max_in_flight, the total and the
 * limit. Past it a dispatch's connect fails as if the worker refused it
 * and uses up its retries, so the configuration is refused at start.
 */
reel_code_t reactor_config_check_open_files(const reactor_config_t *cfg,
                                            uint64_t limit,
                                            reel_status_t *st);

/* The index of app (len bytes) in cfg, or -1. */
int reactor_config_find(const reactor_config_t *cfg, const char *app,
                        size_t len);

/* Frees what cfg holds and zeroes it. NULL is fine. */
void reactor_config_fini(reactor_config_t *cfg);

#endif
