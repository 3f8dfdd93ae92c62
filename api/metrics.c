/*
 * api/metrics.c: reeld's own figures, and its readiness.
 *
 * The store, the gRPC server and each module register what they count
 * themselves (store/store.c, api/rpc.c); this file registers what only
 * reeld can see across modules: open watches and subscriptions per module,
 * the WAL's extent and every durable consumer's lag, the workspace's
 * bytes and staged uploads, and the token check's refusals. Everything
 * here is read when a scrape asks, or counted by one relaxed add where a
 * call is refused, so none of it costs the write path anything. The
 * journal's runs per status and the timers stored are kept by those
 * modules (journal_metrics_register, timers_metrics_register): counted
 * once at start on the writer, then moved with each commit, since a scan
 * per scrape of millions of runs is what a scrape must never cost.
 * Adding a figure is one metrics_reg_fn() line in api_metrics_register()
 * (a module that owns the figure may register it in its own start hook
 * instead, under its state as owner, and drop it in its stop hook).
 *
 * Readiness (/readyz): ready while serving and writable. Not ready while
 * starting, after SIGTERM (reeld says so before it stops accepting
 * calls, for --shutdown-delay, so load balancers take it out first) and
 * after a sticky write failure (store_health): the process is up
 * (/healthz) but cannot take writes.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/accept.h"
#include "api/services.h"
#include "base/clock.h"

static double m_connections(void *arg) {
    (void)arg;
    return (double)api_accept_connections();
}

static double m_refused_at_max(void *arg) {
    (void)arg;
    return (double)api_accept_refused_at_max();
}

static double m_refused_for_descriptors(void *arg) {
    (void)arg;
    return (double)api_accept_refused_for_descriptors();
}

static double m_kv_watchers(void *arg) {
    api_ctx_t *ctx = arg;

    return ctx->kv != NULL ? (double)kv_watchers(ctx->kv) : 0;
}

static double m_kv_purged(void *arg) {
    api_ctx_t *ctx = arg;

    return ctx->kv != NULL ? (double)kv_purged_keys(ctx->kv) : 0;
}

static double m_run_subscribers(void *arg) {
    api_ctx_t *ctx = arg;

    return ctx->journal != NULL ? (double)journal_subscribers(ctx->journal)
                                : 0;
}

static double m_wal_subscribers(void *arg) {
    api_ctx_t *ctx = arg;

    return ctx->wal != NULL ? (double)wal_subscribers(ctx->wal) : 0;
}

static double m_wal_bytes(void *arg) {
    api_ctx_t *ctx = arg;

    return ctx->wal != NULL ? (double)wal_bytes(ctx->wal) : 0;
}

static void m_wal_oldest(void *arg, metrics_emit_t *e) {
    api_ctx_t *ctx = arg;
    reel_status_t st = REEL_STATUS_INIT;
    uint64_t head, oldest;

    if (ctx->wal == NULL)
        return;
    if (wal_head(ctx->wal, &head, &oldest, &st) != REEL_OK) {
        metrics_emit_fail(e, &st);
        reel_status_fini(&st);
        return;
    }
    metrics_emit(e, NULL, (double)oldest);
}

static int by_lag_desc(const void *a, const void *b) {
    const wal_consumer_t *x = a, *y = b;

    if (x->acked != y->acked)
        return x->acked < y->acked ? -1 : 1;
    return strcmp(x->name, y->name);
}

reel_code_t api_consumer_lags(api_ctx_t *ctx, wal_consumer_t **out,
                              size_t *n, reel_status_t *st) {
    reel_code_t rc;

    *out = NULL;
    *n = 0;
    if (ctx->wal == NULL)
        return REEL_OK;
    if ((rc = wal_consumer_cursors(ctx->wal, out, n, st)) != REEL_OK)
        return rc;
    if (*n > 1)
        qsort(*out, *n, sizeof(**out), by_lag_desc);
    return REEL_OK;
}

/* Every consumer's lag: one series each. The consumers are users' names
 * and few by design (each one holds WAL retention). */
static void m_consumer_lag(void *arg, metrics_emit_t *e) {
    api_ctx_t *ctx = arg;
    reel_status_t st = REEL_STATUS_INIT;
    uint64_t head = store_revision(ctx->store);
    wal_consumer_t *cs;
    size_t n;

    if (api_consumer_lags(ctx, &cs, &n, &st) != REEL_OK) {
        metrics_emit_fail(e, &st);
        reel_status_fini(&st);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        const char *l[] = {"consumer", cs[i].name, NULL};

        metrics_emit(e, l,
                     head > cs[i].acked ? (double)(head - cs[i].acked) : 0);
    }
    for (size_t i = 0; i < n; i++)
        wal_consumer_fini(&cs[i]);
    free(cs);
}

static double m_clock_gap(void *arg) {
    (void)arg;
    return (double)reel_clock_gap_ns() / 1e9;
}

static double m_artifacts_bytes(void *arg) {
    api_ctx_t *ctx = arg;
    uint64_t bytes = 0, staged = 0;

    if (ctx->ws != NULL)
        ws_usage(ctx->ws, &bytes, &staged);
    return (double)bytes;
}

static double m_uploads(void *arg) {
    api_ctx_t *ctx = arg;
    uint64_t bytes = 0, staged = 0;

    if (ctx->ws != NULL)
        ws_usage(ctx->ws, &bytes, &staged);
    return (double)staged;
}

/* The figures modules keep themselves (runs per status, timers), whose
 * counting starts with one scan on the writer, and the workspace's and
 * the token check's. */
static reel_code_t register_features(api_ctx_t *ctx, reel_status_t *st) {
    metrics_registry_t *r = ctx->metrics;
    reel_code_t rc;

    if ((ctx->journal != NULL &&
         (rc = journal_metrics_register(ctx->journal, r, st)) != REEL_OK) ||
        (ctx->durable_timers != NULL &&
         (rc = timers_metrics_register(ctx->durable_timers, r, st)) !=
             REEL_OK))
        return rc;
    if ((rc = metrics_reg_fn(r, ctx, METRICS_GAUGE, "reel_artifacts_bytes",
                             "Bytes of the workspace's chunk family: its "
                             "table and blob files and memtables, staged "
                             "uploads' chunks included until reclaimed.",
                             NULL, m_artifacts_bytes, ctx, st)) != REEL_OK ||
        (rc = metrics_reg_fn(r, ctx, METRICS_GAUGE, "reel_workspace_uploads",
                             "Workspace uploads staged: begun, neither "
                             "committed nor aborted yet.",
                             NULL, m_uploads, ctx, st)) != REEL_OK ||
        (rc = metrics_reg_counter(
             r, ctx, "reel_auth_failures_total",
             "Calls refused by the token check (--auth token), by code.",
             (const char *[]){"code", "UNAUTHENTICATED", NULL},
             &ctx->m_auth_unauthenticated, st)) != REEL_OK ||
        (rc = metrics_reg_counter(
             r, ctx, "reel_auth_failures_total",
             "Calls refused by the token check (--auth token), by code.",
             (const char *[]){"code", "PERMISSION_DENIED", NULL},
             &ctx->m_auth_denied, st)) != REEL_OK)
        return rc;
    return REEL_OK;
}

reel_code_t api_metrics_register(api_ctx_t *ctx, reel_status_t *st) {
    static const char refused_help[] =
        "Connections closed as soon as accepted, since start: at "
        "--max-connections, or while fewer than reeld's reserve of file "
        "descriptors were free.";
    metrics_registry_t *r = ctx->metrics;
    reel_code_t rc;

    if (r == NULL)
        return REEL_OK;
    if ((rc = metrics_reg_fn(r, ctx, METRICS_GAUGE, "reel_watchers",
                             "Watch-like streams open, by module.",
                             (const char *[]){"module", "kv", NULL},
                             m_kv_watchers, ctx, st)) != REEL_OK ||
        (rc = metrics_reg_fn(r, ctx, METRICS_GAUGE, "reel_watchers",
                             "Watch-like streams open, by module.",
                             (const char *[]){"module", "journal", NULL},
                             m_run_subscribers, ctx, st)) != REEL_OK ||
        (rc = metrics_reg_fn(r, ctx, METRICS_GAUGE, "reel_subscribers",
                             "WAL subscriptions open (durable consumers' "
                             "included).",
                             NULL, m_wal_subscribers, ctx, st)) != REEL_OK ||
        (rc = metrics_reg_collector(r, ctx, METRICS_GAUGE,
                                    "reel_wal_oldest_revision",
                                    "The oldest WAL event kept (0: none).",
                                    m_wal_oldest, ctx, st)) != REEL_OK ||
        (rc = metrics_reg_fn(r, ctx, METRICS_GAUGE, "reel_wal_bytes",
                             "Bytes of the WAL events kept.", NULL,
                             m_wal_bytes, ctx, st)) != REEL_OK ||
        (rc = metrics_reg_fn(r, ctx, METRICS_COUNTER,
                             "reel_kv_deleted_keys_purged_total",
                             "Deleted keys whose history was purged "
                             "(--kv-deleted-history-age), since start.",
                             NULL, m_kv_purged, ctx, st)) != REEL_OK ||
        (rc = metrics_reg_fn(r, ctx, METRICS_GAUGE, "reel_connections",
                             "Client connections open (the metrics "
                             "endpoint's not included).",
                             NULL, m_connections, ctx, st)) != REEL_OK ||
        (rc = metrics_reg_fn(r, ctx, METRICS_COUNTER,
                             "reel_connections_refused_total",
                             refused_help,
                             (const char *[]){"reason", "max_connections",
                                              NULL},
                             m_refused_at_max, ctx, st)) != REEL_OK ||
        (rc = metrics_reg_fn(r, ctx, METRICS_COUNTER,
                             "reel_connections_refused_total",
                             refused_help,
                             (const char *[]){"reason", "descriptors", NULL},
                             m_refused_for_descriptors, ctx, st)) !=
            REEL_OK ||
        (rc = metrics_reg_fn(r, ctx, METRICS_GAUGE, "reel_clock_gap_seconds",
                             "How far the system clock is ahead of reel's "
                             "(negative: behind): non-zero while reel's "
                             "clock closes the gap a step opened.",
                             NULL, m_clock_gap, ctx, st)) != REEL_OK ||
        (rc = metrics_reg_collector(
             r, ctx, METRICS_GAUGE, "reel_wal_consumer_lag",
             "Revisions a durable consumer has not acknowledged (the head "
             "minus its acknowledged revision).",
             m_consumer_lag, ctx, st)) != REEL_OK ||
        (rc = register_features(ctx, st)) != REEL_OK)
        return rc;
    return REEL_OK;
}

void api_metrics_drop(api_ctx_t *ctx) {
    /* The counters api_authorize updates go with the rest: no call is
     * served any more. */
    ctx->m_auth_unauthenticated = ctx->m_auth_denied = NULL;
    metrics_registry_drop(ctx->metrics, ctx);
}

int api_ready(void *arg, char *why, size_t cap) {
    api_ctx_t *ctx = arg;
    reel_status_t st = REEL_STATUS_INIT;

    switch ((api_phase_t)atomic_load(&ctx->phase)) {
    case API_STARTING:
        snprintf(why, cap, "starting");
        return 0;
    case API_STOPPING:
        snprintf(why, cap, "shutting down");
        return 0;
    case API_SERVING:
        break;
    }
    if (ctx->store != NULL && store_health(ctx->store, &st) != REEL_OK) {
        snprintf(why, cap, "not writable: %s", reel_status_message(&st));
        reel_status_fini(&st);
        return 0;
    }
    return 1;
}
