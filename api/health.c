/*
 * api/health.c: grpc.health.v1.Health.
 *
 * Check answers SERVING for the server ("") and for each reel service name,
 * NOT_SERVING once the store has stopped accepting writes, and NOT_FOUND for
 * an unknown service, as the standard protocol asks. Watch sends the current
 * status and stays open until the client leaves (or the server stops, which
 * ends it with UNAVAILABLE).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "grpc/health/v1/health.pb-c.h"
#include "api/reply.h"
#include "api/services.h"
#include "base/log.h"

static const char *const known_services[] = {
    "",
    "grpc.health.v1.Health",
    "reel.v1.Admin",
    "reel.v1.Journal",
    "reel.v1.KV",
    "reel.v1.Signals",
    "reel.v1.Wal",
};

static int service_known(const char *name) {
    for (size_t i = 0; i < sizeof(known_services) / sizeof(*known_services);
         i++)
        if (strcmp(name, known_services[i]) == 0)
            return 1;
    return 0;
}

/* Decodes the request; answers the call and returns NULL on bad input. */
static Grpc__Health__V1__HealthCheckRequest *
decode(rpc_call_t *call, const uint8_t *req, size_t len) {
    Grpc__Health__V1__HealthCheckRequest *in =
        grpc__health__v1__health_check_request__unpack(NULL, len, req);

    if (in == NULL) {
        rpc_call_finish(call, REEL_INVALID_ARGUMENT,
                        "request: not a valid HealthCheckRequest message",
                        NULL, 0);
        return NULL;
    }
    if (!service_known(in->service)) {
        char msg[320];

        snprintf(msg, sizeof(msg), "service: unknown service \"%.256s\"",
                 in->service);
        grpc__health__v1__health_check_request__free_unpacked(in, NULL);
        rpc_call_finish(call, REEL_NOT_FOUND, msg, NULL, 0);
        return NULL;
    }
    return in;
}

static Grpc__Health__V1__HealthCheckResponse__ServingStatus
current_status(api_ctx_t *ctx) {
    return store_health(ctx->store, NULL) == REEL_OK
               ? GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING
               : GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING;
}

static size_t encode_status(api_ctx_t *ctx, uint8_t *buf) {
    Grpc__Health__V1__HealthCheckResponse out =
        GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;

    out.status = current_status(ctx);
    return grpc__health__v1__health_check_response__pack(&out, buf);
}

static void health_check(rpc_call_t *call, void *arg, const uint8_t *req,
                         size_t len) {
    api_ctx_t *ctx = arg;
    Grpc__Health__V1__HealthCheckRequest *in = decode(call, req, len);
    uint8_t buf[16];
    size_t n;

    if (in == NULL)
        return;
    grpc__health__v1__health_check_request__free_unpacked(in, NULL);
    n = encode_status(ctx, buf);
    rpc_call_finish(call, REEL_OK, NULL, buf, n);
}

static void watch_cancel(rpc_call_t *call, void *arg, reel_code_t why) {
    (void)arg;
    api_finish_cancelled(call, why);
}

static void health_watch(rpc_call_t *call, void *arg, const uint8_t *req,
                         size_t len) {
    api_ctx_t *ctx = arg;
    Grpc__Health__V1__HealthCheckRequest *in = decode(call, req, len);
    uint8_t buf[16];
    size_t n;

    if (in == NULL)
        return;
    grpc__health__v1__health_check_request__free_unpacked(in, NULL);
    n = encode_status(ctx, buf);
    rpc_call_send(call, buf, n);
    /* The hook finishes the call; it may run at once if already over. */
    rpc_call_on_cancel(call, watch_cancel, NULL);
}

int api_health_register(rpc_server_t *srv, api_ctx_t *ctx) {
    rpc_method_t check = {"/grpc.health.v1.Health/Check", RPC_UNARY,
                          health_check, ctx,
                          &grpc__health__v1__health_check_request__descriptor};
    rpc_method_t watch = {"/grpc.health.v1.Health/Watch", RPC_SERVER_STREAM,
                          health_watch, ctx,
                          &grpc__health__v1__health_check_request__descriptor};

    if (rpc_server_add_method(srv, &check) != 0 ||
        rpc_server_add_method(srv, &watch) != 0)
        return -1;
    return 0;
}
