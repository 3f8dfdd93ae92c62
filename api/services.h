/*
 * api/services.h: the gRPC services reeld serves, registered on an
 * rpc_server_t. Each service decodes its requests with protobuf-c, answers
 * bad bytes with INVALID_ARGUMENT, and turns reel statuses into gRPC ones.
 */
#ifndef REEL_API_SERVICES_H
#define REEL_API_SERVICES_H

#include <stdint.h>

#include "api/rpc.h"
#include "api/timer.h"
#include "journal/journal.h"
#include "kv/kv.h"
#include "signals/signals.h"
#include "store/store.h"
#include "wal/wal.h"

typedef struct api_health api_health_t;

/* What handlers share. Owned by reeld's main; outlives the server. */
typedef struct api_ctx {
    store_t *store;
    kv_t *kv;
    journal_t *journal;
    signals_t *signals;
    wal_t *wal;
    api_timers_t *timers;
    api_health_t *health; /* made by api_health_register */
    rpc_server_t *server;
    const char *data_dir;
    int64_t started_at_ms;
} api_ctx_t;

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

/* The WAL's encoder: a committed change as its subject and reel.v1.Event. */
reel_code_t api_wal_encode(void *arg, const store_change_t *c, char **subject,
                           uint8_t **bytes, size_t *len, reel_status_t *st);

/* The store's before_commit hook: the WAL stores each change's event in
 * the change's own commit. arg is the api_ctx_t. */
reel_code_t api_before_commit(void *arg, store_txn_t *txn,
                              const store_change_t *changes, size_t n,
                              reel_status_t *st);

/* reel.v1.KV. Returns 0 or -1. */
int api_kv_register(rpc_server_t *srv, api_ctx_t *ctx);

/*
 * The store's one publish step: hands each committed group's changes to
 * every module that pushes them (KV watches, run subscriptions, signal
 * waiters, the WAL tail). Runs on the writer thread; arg is the api_ctx_t.
 */
void api_publish(void *arg, const store_change_t *changes, size_t n);

/* reel.v1.Admin: GetStatus. Returns 0 or -1. */
int api_admin_register(rpc_server_t *srv, api_ctx_t *ctx);

#endif
