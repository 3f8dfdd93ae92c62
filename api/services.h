/*
 * api/services.h: the gRPC services reeld serves, registered on an
 * rpc_server_t. Each service decodes its requests with protobuf-c, answers
 * bad bytes with INVALID_ARGUMENT, and turns reel statuses into gRPC ones.
 */
#ifndef REEL_API_SERVICES_H
#define REEL_API_SERVICES_H

#include <stdatomic.h>
#include <stdint.h>

#include "api/module.h"
#include "api/rpc.h"
#include "api/timer.h"
#include "journal/journal.h"
#include "kv/kv.h"
#include "metrics/metrics.h"
#include "signals/signals.h"
#include "store/store.h"
#include "timers/timers.h"
#include "wal/wal.h"
#include "workspace/workspace.h"

typedef struct api_health api_health_t;

/* Each module's limits, from reeld's flags: its start hook reads them. */
typedef struct api_limits {
    kv_limits_t kv;
    journal_limits_t journal;
    signals_limits_t signals;
    wal_limits_t wal;
    ws_limits_t ws;
    /* PutArtifact: the longest reeld waits for a client's next message
     * before it ends the upload (0 = API_DEFAULT_UPLOAD_IDLE_MS), so an
     * upload that sends nothing cannot hold one of max_uploads. */
    int64_t upload_idle_ms;
} api_limits_t;

#define API_DEFAULT_UPLOAD_IDLE_MS 60000

/* What handlers share. Owned by reeld's main; outlives the server. */
struct api_ctx {
    api_modules_t modules; /* reeld's module table (api/module.h) */
    api_limits_t limits;
    store_t *store;
    /* Each module's state, made by its start hook: */
    kv_t *kv;
    journal_t *journal;
    signals_t *signals;
    wal_t *wal;
    timers_t *durable_timers; /* timers/ (api_timers_t is the poll clock) */
    ws_t *ws;

    api_timers_t *timers;
    api_health_t *health; /* made by api_health_register */
    rpc_server_t *server;
    const char *data_dir;
    int64_t started_at_ms;
    /* The largest response a paged read builds (--max-response-bytes);
     * 0 = no byte bound. */
    size_t max_response_bytes;
    /* Tokens (api/auth_service.c): the table, and whether calls need one
     * (--auth token). */
    struct auth *auth;
    int auth_token;
    struct api_auth_sweep *auth_sweep; /* ends expired tokens' streams */
    struct api_tenant_calls *tenant_calls; /* NULL: not counted */
    /* Where every part registers its metrics (NULL: --metrics-listen not
     * given), and where reeld is in its life, for /readyz. */
    metrics_registry_t *metrics;
    atomic_int phase; /* api_phase_t */
    /* reel_auth_failures_total{code}, counted by api_authorize. */
    metrics_counter_t *m_auth_unauthenticated, *m_auth_denied;
};

typedef enum api_phase {
    API_STARTING = 0,
    API_SERVING,
    API_STOPPING,
} api_phase_t;

/* The modules reeld runs, each beside its service (api/<name>_service.c). */
extern const api_module_t api_kv_module;
extern const api_module_t api_journal_module;
extern const api_module_t api_signals_module;
extern const api_module_t api_wal_module;
extern const api_module_t api_timers_module;

/* The store's alarm (store_alarm_fn; arg is the api_ctx_t): the timers
 * module's, once it started. */
reel_code_t api_alarm(void *arg, store_txn_t *txn, reel_status_t *st);
extern const api_module_t api_workspace_module;

/*
 * Whether one element of every kind reeld sends (a KV event with value and
 * prev_value, a journal entry, a run, a signal, each alone in a page, on a
 * stream or in a WAL event) fits in `budget` bytes under these limits: 0,
 * or -1 with why (naming both flags) written into why[whylen].
 */
int api_check_response_budget(size_t budget, const kv_limits_t *kv,
                              const journal_limits_t *journal,
                              const signals_limits_t *signals, char *why,
                              size_t whylen);

/* A chunk message's framing beyond its bytes: the oneof's tag and
 * length, with room to spare. */
#define WS_CHUNK_FRAMING 64

/*
 * Whether the largest artifact record these limits allow (a Stat answer,
 * a page of one, a watch message or a WAL event) fits in `budget` bytes
 * (--max-response-bytes; a download's chunks go in pieces within it): 0,
 * or -1 with why (naming the flag) written into why[whylen].
 */
int api_workspace_check_budget(size_t budget, const ws_limits_t *lim,
                               char *why, size_t whylen);

/* The same for a request (--max-message-bytes): one upload chunk. */
int api_workspace_check_request_budget(size_t budget, char *why,
                                       size_t whylen);

/* grpc.health.v1.Health: Check and Watch. Returns 0 or -1. */
int api_health_register(rpc_server_t *srv, api_ctx_t *ctx);

/* The store's on_failure hook (arg is the api_ctx_t): every open Watch
 * hears NOT_SERVING at once. */
void api_store_failed(void *arg, const reel_status_t *why);

/* The server is shutting down: Check and Watch say NOT_SERVING from now. */
void api_health_shutdown(api_ctx_t *ctx);

/* Frees the health state, once the server is destroyed. */
void api_health_destroy(api_ctx_t *ctx);

/* reel.v1.Journal. Returns 0 or -1. */
int api_journal_register(rpc_server_t *srv, api_ctx_t *ctx);

/* reel.v1.Signals. Returns 0 or -1. */
int api_signals_register(rpc_server_t *srv, api_ctx_t *ctx);

/* reel.v1.Wal. Returns 0 or -1. */
int api_wal_register(rpc_server_t *srv, api_ctx_t *ctx);


/* reel.v1.KV. Returns 0 or -1. */
int api_kv_register(rpc_server_t *srv, api_ctx_t *ctx);

/* ---- Token auth (api/auth_service.c) ---- */

extern const api_module_t api_auth_module;

/* A row of the method-to-scope table: rule is a scope bit
 * (auth_scope_bit_t), -1 for any valid token, -2 for no token. write: 1
 * for a unary call that queues a write at once, counted among its
 * tenant's writes in flight (--write-queue-per-tenant). */
typedef struct api_scope_rule {
    const char *path;
    int rule;
    int write;
} api_scope_rule_t;

/* path's row, or NULL: no token may call it. */
const api_scope_rule_t *api_scope_rule(const char *path);
const api_scope_rule_t *api_scope_rules(size_t *n);

/* rpc_authorize_fn (arg is the api_ctx_t) for reeld --auth token. */
reel_code_t api_authorize(void *arg, const char *path, const char *auth,
                          size_t len, size_t sent, void **principal,
                          reel_status_t *st);
/* Frees what api_authorize set (rpc_server_opts_t.principal_free): the
 * call's place among its tenant's writes in flight goes back. */
void api_principal_free(void *arg, void *principal);
/* rpc_server_opts_t.share_of: a tenant's streams share a quarter of the
 * stream budget (not default's or admin's: NULL). */
rpc_share_t *api_principal_share(void *arg, const void *principal);

/*
 * Each tenant's calls open (not default's or admin's), at most max_calls
 * each, and of them unary writes in flight, at most max_writes: one tenant
 * cannot fill reeld's memory with idle streams, nor the write queue every
 * tenant shares. NULL when out of memory. Destroyed after the server, whose
 * calls hold places in it.
 */
struct api_tenant_calls *api_tenant_calls_create(size_t max_calls,
                                                 size_t max_writes);
void api_tenant_calls_destroy(struct api_tenant_calls *w);

/* Whether the call may see admin details: its token holds scope admin,
 * or the server has no token auth. */
int api_is_admin(rpc_call_t *call);

/* reel.v1.Admin: GetStatus. Returns 0 or -1. */
int api_admin_register(rpc_server_t *srv, api_ctx_t *ctx);

/* ---- Metrics and probes (api/metrics.c) ---------------------------------- */

/* Registers reeld's own figures (watchers, subscribers, the WAL and its
 * consumers) into ctx->metrics, once the modules started. OK when
 * ctx->metrics is NULL. */
reel_code_t api_metrics_register(api_ctx_t *ctx, reel_status_t *st);
/* Drops them: before the modules they read stop. */
void api_metrics_drop(api_ctx_t *ctx);
/* /readyz (metrics_ready_fn; arg is the api_ctx_t): serving and writable. */
int api_ready(void *arg, char *why, size_t cap);

/* The durable consumers, furthest behind first (least acknowledged), in
 * *out (wal_consumer_fini each, free the array). */
reel_code_t api_consumer_lags(api_ctx_t *ctx, wal_consumer_t **out,
                              size_t *n, reel_status_t *st);

/* ---- Tenants of runs (api/journal_service.c) ---- */

/*
 * OK when the call's tenant owns run run_id (api/tenant.h); NOT_FOUND,
 * worded exactly as for a run that does not exist, when another tenant
 * does; the lookup's error otherwise. Admin and calls without --auth
 * token read nothing. A run's app never changes, so the check made before
 * a write is queued still holds when the writer applies it.
 */
reel_code_t api_run_check(rpc_call_t *call, api_ctx_t *ctx,
                          const char *run_id, reel_status_t *st);

/* run_keep_fn (arg: the call) keeping the call's tenant's runs. */
int api_run_keep(void *arg, const run_t *r);

#endif
