/*
 * api/admin.c: reel.v1.Admin: what the server is and how it is doing.
 *
 * GetStatus carries the headline figures beside the identity: the
 * writer's counters since start (a client takes two readings for rates),
 * the write queue, open watches and subscriptions, the WAL's extent and
 * the durable consumers furthest behind (at most STATUS_CONSUMERS_MAX, so
 * the answer stays small whatever the number of consumers). A figure that
 * cannot be read fails the call, naming it: never a status with a hole.
 * A tenant's call is shown its own consumers only, named as it gave them
 * (api/tenant.h). What clients hold open (connections, calls, watches,
 * subscriptions), like the data dir and its disk, is shown to admin only
 * (api_is_admin): a live count moves as another tenant's streams come and
 * go. The writer's figures and the WAL's extent stay for every token:
 * they count by global revision, as GetHead does (docs/security.md).
 */
#include <stdlib.h>

#include "reel/v1/admin.pb-c.h"
#include "api/accept.h"
#include "api/services.h"
#include "api/tenant.h"
#include "base/clock.h"
#include "base/version.h"

#define STATUS_CONSUMERS_MAX 100

static void admin_get_status(rpc_call_t *call, void *arg, const uint8_t *req,
                             size_t len) {
    api_ctx_t *ctx = arg;
    Reel__V1__GetStatusRequest *in =
        reel__v1__get_status_request__unpack(NULL, len, req);
    Reel__V1__GetStatusResponse out = REEL__V1__GET_STATUS_RESPONSE__INIT;
    Reel__V1__ConsumerStatus cons[STATUS_CONSUMERS_MAX];
    Reel__V1__ConsumerStatus *cons_p[STATUS_CONSUMERS_MAX];
    reel_status_t health = REEL_STATUS_INIT, st = REEL_STATUS_INIT;
    wal_consumer_t *cs = NULL;
    size_t n_cs = 0;
    store_stats_t stats;
    uint64_t head = 0, oldest = 0;
    uint8_t *buf = NULL;
    size_t n;

    if (in == NULL) {
        rpc_call_finish(call, REEL_INVALID_ARGUMENT,
                        "request: not a valid GetStatusRequest message", NULL,
                        0);
        return;
    }
    reel__v1__get_status_request__free_unpacked(in, NULL);

    out.version = REEL_VERSION;
    out.format_version = (uint32_t)store_format_opened(ctx->store);
    out.revision = store_revision(ctx->store);
    /* Where the data lives is an admin's business (docs/security.md). */
    out.data_dir = api_is_admin(call) ? (char *)ctx->data_dir : "";
    out.started_at_ms = ctx->started_at_ms;
    out.uptime_ms = reel_clock_now_ms() - ctx->started_at_ms;
    out.writable = store_health(ctx->store, &health) == REEL_OK;
    out.write_error = out.writable ? "" : (char *)reel_status_message(&health);
    /* A client asking for a longer wait can say what it will get. */
    out.signal_max_wait_ms =
        ctx->signals != NULL ? signals_max_wait_ms(ctx->signals) : 0;

    store_stats(ctx->store, &stats);
    out.commits = stats.commits;
    out.commit_requests = stats.requests;
    out.commit_seconds = (double)stats.commit_ns / 1e9;
    out.write_queue_depth = stats.queue_depth;
    if (api_is_admin(call)) {
        out.disk_free_bytes = stats.disk_free;
        out.disk_low = stats.disk_low != 0;
        out.connections = api_accept_connections();
        out.max_connections = api_accept_max_connections();
        /* Less this call itself. */
        out.open_calls =
            ctx->server ? rpc_server_open_calls(ctx->server) - 1 : 0;
        out.kv_watchers = ctx->kv != NULL ? kv_watchers(ctx->kv) : 0;
        out.run_subscribers =
            ctx->journal != NULL ? journal_subscribers(ctx->journal) : 0;
        out.wal_subscribers = ctx->wal != NULL ? wal_subscribers(ctx->wal) : 0;
    }
    if (ctx->wal != NULL) {
        out.wal_bytes = wal_bytes(ctx->wal);
        if (wal_head(ctx->wal, &head, &oldest, &st) != REEL_OK)
            goto out;
        out.wal_oldest_revision = oldest;
    }
    if (api_consumer_lags(ctx, &cs, &n_cs, &st) != REEL_OK)
        goto out;
    /* After the consumers were read: no lag comes out negative. */
    head = store_revision(ctx->store);
    for (size_t i = 0; i < n_cs; i++) {
        size_t k = out.n_consumers;

        if (!api_tenant_owns(call, cs[i].name))
            continue;
        out.consumer_count++;
        if (k == STATUS_CONSUMERS_MAX)
            continue;
        reel__v1__consumer_status__init(&cons[k]);
        cons[k].name = (char *)api_tenant_name_out(call, cs[i].name);
        cons[k].acked_revision = cs[i].acked;
        cons[k].lag = head > cs[i].acked ? head - cs[i].acked : 0;
        cons[k].invalidated = cs[i].invalidated_at_ms != 0;
        cons_p[k] = &cons[k];
        out.n_consumers++;
    }
    out.consumers = cons_p;

    n = reel__v1__get_status_response__get_packed_size(&out);
    buf = malloc(n ? n : 1);
    if (buf == NULL) {
        reel_status_set(&st, REEL_RESOURCE_EXHAUSTED, "out of memory");
        goto out;
    }
    reel__v1__get_status_response__pack(&out, buf);
    rpc_call_finish(call, REEL_OK, NULL, buf, n);
out:
    if (st.code != REEL_OK)
        rpc_call_finish_status(call, &st);
    for (size_t i = 0; i < n_cs; i++)
        wal_consumer_fini(&cs[i]);
    free(cs);
    free(buf);
    reel_status_fini(&st);
    reel_status_fini(&health);
}

int api_admin_register(rpc_server_t *srv, api_ctx_t *ctx) {
    rpc_method_t m = {"/reel.v1.Admin/GetStatus", RPC_UNARY, admin_get_status,
                      ctx, &reel__v1__get_status_request__descriptor};

    return rpc_server_add_method(srv, &m);
}
