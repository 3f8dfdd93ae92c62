/*
 * api/module.h: a module as reeld runs it.
 *
 * Each module folder (kv/, journal/, signals/, wal/) has one descriptor,
 * kept beside its service in api/<module>_service.c: its name and change
 * id, its column families, the first tokens of its WAL subjects, and a
 * hook for each step of reeld's life. reeld lists the descriptors once,
 * in its module table, and everything else goes through that table:
 * store_open() gets every module's column families, the server every
 * module's service, the writer's before-commit and publish steps every
 * module's hooks (api/publish.c), and the WAL's encoder finds a change's
 * module by its id. Adding a module is a folder, its service file, its
 * field in api_ctx_t, and one line in that table (docs/architecture.md).
 *
 * The split keeps the DAG: a module's folder owns its storage (its column
 * families and its id, in its header) and its publish step; only the
 * encoder, which speaks protobuf, lives in api/.
 *
 * Threading: descriptors are constant. serve, start, ready, stop and
 * destroy run on reeld's main thread; encode, before_commit and publish on the
 * store's writer thread, where they must not block.
 */
#ifndef REEL_API_MODULE_H
#define REEL_API_MODULE_H

#include <stddef.h>
#include <stdint.h>

#include "api/rpc.h"
#include "base/status.h"
#include "store/store.h"

typedef struct api_ctx api_ctx_t;

/* Change ids go from 1 to this; 0 is a module that emits no changes. */
#define API_MODULE_ID_MAX 63
/* The most modules one table may list. */
#define API_MODULES_MAX 16

typedef struct api_module {
    const char *name; /* "kv": in errors */
    /* store_change_t.module of its changes: unique in the table, in memory
     * only (nothing stored carries it); 0 if it emits none. */
    uint32_t id;
    /* Its column families, ended by a NULL name; NULL if none. */
    const store_cf_desc_t *cfs;
    /* The first tokens of its WAL subjects, ended by NULL ("kv" for
     * kv.<namespace>.<key>): no two modules share one, so a pattern such
     * as kv.> matches one module's events. NULL if id is 0. */
    const char *const *subjects;

    /* Registers its gRPC service: 0 or -1. NULL if none. */
    int (*serve)(rpc_server_t *srv, api_ctx_t *ctx);
    /* Creates its state over ctx->store, with its limits from ctx, into its
     * field of ctx. Modules start in table order, so one may use what an
     * earlier one made. NULL if none. */
    reel_code_t (*start)(api_ctx_t *ctx, reel_status_t *st);
    /* Begins what commits changes of its own accord (the timers that fell
     * due while reeld was down), once every module has started: no change
     * may commit before the WAL, last in the table, stores its event.
     * Table order. NULL if none. */
    reel_code_t (*ready)(api_ctx_t *ctx, reel_status_t *st);
    /* Stops its background work, before the store closes. NULL if none. */
    void (*stop)(api_ctx_t *ctx);
    /* Frees its state, once the server is destroyed; its state may never
     * have been made. NULL if none. */
    void (*destroy)(api_ctx_t *ctx);

    /*
     * One of its committed changes as its WAL subject and reel.v1.Event
     * bytes (both malloc'd): DATA_LOSS if the change does not decode,
     * INTERNAL for a change type it does not know, RESOURCE_EXHAUSTED out
     * of memory. The caller names the revision and the module. NULL iff
     * id is 0.
     */
    reel_code_t (*encode)(const store_change_t *c, char **subject,
                          uint8_t **bytes, size_t *len, reel_status_t *st);
    /* Writes into the group's batch before it commits (the store's
     * before_commit); an error fails the whole group. NULL if none. */
    reel_code_t (*before_commit)(api_ctx_t *ctx, store_txn_t *txn,
                                 const store_change_t *changes, size_t n,
                                 reel_status_t *st);
    /* Its share of the publish step: the whole group, in which it finds
     * its own changes (the WAL takes everyone's). NULL if none. */
    void (*publish)(api_ctx_t *ctx, const store_change_t *changes, size_t n);
} api_module_t;

/* reeld's table, as api_ctx_t holds it. */
typedef struct api_modules {
    const api_module_t *const *list; /* in table order */
    size_t n;
    const api_module_t *by_id[API_MODULE_ID_MAX + 1];
    /* Every module's column families, for store_opts_t.cfs. */
    const store_cf_desc_t *cfs[API_MODULES_MAX + 1];
} api_modules_t;

/*
 * Checks the table and makes it ctx's. INTERNAL, naming the modules, when
 * the table is longer than API_MODULES_MAX, two modules share a name, an
 * id, a subject token or a column family, an id is past
 * API_MODULE_ID_MAX, or a module with an id has no encoder or subjects.
 */
reel_code_t api_modules_init(api_ctx_t *ctx, const api_module_t *const *list,
                             size_t n, reel_status_t *st);

/* Every module's serve, in table order: 0, or -1 at the first failure. */
int api_modules_serve(rpc_server_t *srv, api_ctx_t *ctx);
/* Every module's start, in table order, then every module's ready, each
 * up to the first failure (its code, st set); api_modules_destroy frees
 * what started. */
reel_code_t api_modules_start(api_ctx_t *ctx, reel_status_t *st);
/* Every module's stop, in reverse order. */
void api_modules_stop(api_ctx_t *ctx);
/* Every module's destroy, in reverse order. */
void api_modules_destroy(api_ctx_t *ctx);

/* ---- The writer's hooks (api/publish.c) ---------------------------------- */

/* The store's before_commit hook (arg is the api_ctx_t): every module's
 * before_commit, in table order; the first error fails the group. */
reel_code_t api_before_commit(void *arg, store_txn_t *txn,
                              const store_change_t *changes, size_t n,
                              reel_status_t *st);

/*
 * The store's one publish step (arg is the api_ctx_t): hands each
 * committed group to every module's publish hook, in table order (KV
 * watches, run subscriptions, signal waiters, the WAL's subscribers).
 */
void api_publish(void *arg, const store_change_t *changes, size_t n);

/*
 * The WAL's encoder (wal_encode_fn; arg is the api_ctx_t): the change's
 * module, found by its id, encodes it. INTERNAL "no module with id N" for
 * an id no module has, or for a subject outside the module's tokens;
 * else the module's error; each naming the revision.
 */
reel_code_t api_wal_encode(void *arg, const store_change_t *c, char **subject,
                           uint8_t **bytes, size_t *len, reel_status_t *st);

#endif
