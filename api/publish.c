/*
 * api/publish.c: what happens to a committed group, in one place.
 *
 * The store calls two hooks on its writer (the writer thread, or a lone
 * submitter running its own group: store.h) for every group that commits
 * changes. Before the write, api_before_commit runs every module's
 * before_commit: the WAL adds each change's event to the group's own
 * batch, so a change and its event commit together; each event is encoded
 * by the module the change belongs to, found by its id (api_wal_encode).
 * After the sync, api_publish hands the group to every module's publish
 * hook in table order: KV watches, run subscriptions, signal waiters, then
 * the WAL's live subscribers. Nothing else hands committed changes out of
 * the writer, so nothing that changes state can forget to publish it.
 *
 * Subjects: kv.<namespace>.<key>, journal.<run_id>.<kind>,
 * run.<run_id>.<STATUS>, signal.<run_id>.<name>.<sent|consumed>. Each names
 * one thing: only the key, kind or name may hold '.', every other part is
 * one token in a fixed place, and the modules refuse names with an empty,
 * "*" or ">" token where they are written (reel_pattern_check_name,
 * KV_NAMESPACE_CHARS), so the names go in as they are. The first token
 * says the module: each module's descriptor lists its own, and
 * api_wal_encode refuses a subject outside them. A tenant's event has
 * "::<tenant>:" in front of its second token (api/tenant.h).
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/convert.h"
#include "api/module.h"
#include "api/reply.h"
#include "api/services.h"

reel_code_t api_before_commit(void *arg, store_txn_t *txn,
                              const store_change_t *changes, size_t n,
                              reel_status_t *st) {
    api_ctx_t *ctx = arg;
    reel_code_t rc;

    for (size_t i = 0; i < ctx->modules.n; i++) {
        const api_module_t *m = ctx->modules.list[i];

        if (m->before_commit != NULL &&
            (rc = m->before_commit(ctx, txn, changes, n, st)) != REEL_OK)
            return rc;
    }
    return REEL_OK;
}

void api_publish(void *arg, const store_change_t *changes, size_t n) {
    api_ctx_t *ctx = arg;

    rpc_fanout_begin();
    for (size_t i = 0; i < ctx->modules.n; i++) {
        const api_module_t *m = ctx->modules.list[i];

        if (m->publish != NULL)
            m->publish(ctx, changes, n);
    }
    rpc_fanout_end();
}

/* 1 if subject's first token is one of tokens. */
static int subject_is_of(const char *subject, const char *const *tokens) {
    size_t len = strcspn(subject, ".");

    for (; *tokens != NULL; tokens++)
        if (strlen(*tokens) == len && memcmp(*tokens, subject, len) == 0)
            return 1;
    return 0;
}

reel_code_t api_wal_encode(void *arg, const store_change_t *c, char **subject,
                           uint8_t **bytes, size_t *len, reel_status_t *st) {
    api_ctx_t *ctx = arg;
    const api_module_t *m =
        c->module <= API_MODULE_ID_MAX ? ctx->modules.by_id[c->module] : NULL;
    reel_code_t rc;

    *subject = NULL;
    *bytes = NULL;
    if (m == NULL)
        return reel_status_set(st, REEL_INTERNAL,
                               "cannot encode the WAL event of revision "
                               "%llu: no module with id %u",
                               (unsigned long long)c->revision, c->module);
    if ((rc = m->encode(c, subject, bytes, len, st)) != REEL_OK)
        return reel_status_set(st, rc,
                               "cannot encode the WAL event of revision "
                               "%llu (module %s): %s",
                               (unsigned long long)c->revision, m->name,
                               reel_status_message(st));
    if (!subject_is_of(*subject, m->subjects)) {
        rc = reel_status_set(st, REEL_INTERNAL,
                             "cannot encode the WAL event of revision %llu "
                             "(module %s): its subject \"%.80s\" is outside "
                             "the module's tokens",
                             (unsigned long long)c->revision, m->name,
                             *subject);
        free(*subject);
        free(*bytes);
        *subject = NULL;
        *bytes = NULL;
        return rc;
    }
    return REEL_OK;
}

/* ---- For the modules' encoders ------------------------------------------- */

reel_code_t api_change_unknown(const store_change_t *c, int decoded,
                               reel_status_t *st) {
    return decoded < 0 ? reel_status_set(st, REEL_DATA_LOSS,
                                         "the change does not decode")
                       : reel_status_set(st, REEL_INTERNAL,
                                         "unknown change type %u", c->type);
}

reel_code_t api_event_pack(const store_change_t *c, Reel__V1__Event *ev,
                           char **subject, uint8_t **bytes, size_t *len,
                           reel_status_t *st, const char *fmt, ...) {
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vasprintf(subject, fmt, ap);
    va_end(ap);
    if (n < 0) {
        *subject = NULL; /* vasprintf leaves it undefined on failure */
        return reel_status_set(st, REEL_RESOURCE_EXHAUSTED, "out of memory");
    }
    ev->revision = c->revision;
    ev->ts_ms = c->ts_ms;
    ev->subject = *subject;
    API_PACK(reel__v1__event, ev, bytes, len);
    if (*bytes == NULL) {
        free(*subject);
        *subject = NULL;
        return reel_status_set(st, REEL_RESOURCE_EXHAUSTED, "out of memory");
    }
    return REEL_OK;
}
