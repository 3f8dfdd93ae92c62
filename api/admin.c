/*
 * api/admin.c: reel.v1.Admin: what the server is and how it is doing.
 */
#include <stdlib.h>

#include "reel/v1/admin.pb-c.h"
#include "api/services.h"
#include "base/clock.h"
#include "base/version.h"

static void admin_get_status(rpc_call_t *call, void *arg, const uint8_t *req,
                             size_t len) {
    api_ctx_t *ctx = arg;
    Reel__V1__GetStatusRequest *in =
        reel__v1__get_status_request__unpack(NULL, len, req);
    Reel__V1__GetStatusResponse out = REEL__V1__GET_STATUS_RESPONSE__INIT;
    reel_status_t health = REEL_STATUS_INIT;
    uint8_t *buf;
    size_t n;

    if (in == NULL) {
        rpc_call_finish(call, REEL_INVALID_ARGUMENT,
                        "request: not a valid GetStatusRequest message", NULL,
                        0);
        return;
    }
    reel__v1__get_status_request__free_unpacked(in, NULL);

    out.version = REEL_VERSION;
    out.format_version = STORE_FORMAT_VERSION;
    out.revision = store_revision(ctx->store);
    /* Where the data lives is an admin's business (docs/security.md). */
    out.data_dir = api_is_admin(call) ? (char *)ctx->data_dir : "";
    out.started_at_ms = ctx->started_at_ms;
    out.uptime_ms = reel_clock_now_ms() - ctx->started_at_ms;
    out.writable = store_health(ctx->store, &health) == REEL_OK;
    out.write_error = out.writable ? "" : (char *)reel_status_message(&health);
    /* Less this call itself. */
    out.open_calls = ctx->server ? rpc_server_open_calls(ctx->server) - 1 : 0;
    /* A client asking for a longer wait can say what it will get. */
    out.signal_max_wait_ms =
        ctx->signals != NULL ? signals_max_wait_ms(ctx->signals) : 0;

    n = reel__v1__get_status_response__get_packed_size(&out);
    buf = malloc(n ? n : 1);
    if (buf == NULL) {
        reel_status_fini(&health);
        rpc_call_finish(call, REEL_RESOURCE_EXHAUSTED, "out of memory", NULL,
                        0);
        return;
    }
    reel__v1__get_status_response__pack(&out, buf);
    reel_status_fini(&health);
    rpc_call_finish(call, REEL_OK, NULL, buf, n);
    free(buf);
}

int api_admin_register(rpc_server_t *srv, api_ctx_t *ctx) {
    rpc_method_t m = {"/reel.v1.Admin/GetStatus", RPC_UNARY, admin_get_status,
                      ctx, &reel__v1__get_status_request__descriptor};

    return rpc_server_add_method(srv, &m);
}
