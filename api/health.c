/*
 * api/health.c: grpc.health.v1.Health.
 *
 * Check answers SERVING for the server ("") and for each reel service name,
 * NOT_SERVING once the store has stopped accepting writes or the server is
 * shutting down, and NOT_FOUND for an unknown service, as the standard
 * protocol asks. Watch of an unknown service sends SERVICE_UNKNOWN and
 * stays open, as the protocol asks (reel's services are fixed, so that is
 * all it ever sends). Watch of a known one sends the current status, then
 * every change: the
 * store's failure callback (writer thread) and the start of a shutdown
 * push NOT_SERVING to every open Watch, so an orchestrator learns at once
 * that the server is degraded, not at its next probe. A Watch stays open
 * until the client leaves (or the server stops, which ends it with
 * UNAVAILABLE after the NOT_SERVING it already sent). At most WATCH_MAX
 * are open at once: it is public, so it is bounded on its own.
 *
 * The open Watch calls are a list under the module's mutex. A call leaves
 * it in its cleanup, when no hook of the call can run any more, so a push
 * never touches a freed call.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/reply.h"
#include "api/services.h"
#include "base/log.h"
#include "grpc/health/v1/health.pb-c.h"

#define SERVING GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING
#define NOT_SERVING                                                          \
    GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING
#define SERVICE_UNKNOWN                                                      \
    GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVICE_UNKNOWN

typedef struct watcher {
    struct watcher *prev, *next;
    rpc_call_t *call;
    api_health_t *h;
    int sent;    /* the last status sent */
    int unknown; /* watches a service reeld does not have: no changes */
} watcher_t;

/* Open Watch streams, at most: a Watch needs no token (an orchestrator's
 * probe), so without a bound of its own anyone who can connect could hold
 * every call reeld allows (--max-calls), and every tenant's with it. */
#define WATCH_MAX 1024 /* as said in the refusal */

struct api_health {
    pthread_mutex_t mu;
    watcher_t *watchers;
    int n_watchers; /* under mu */
    atomic_int shutting_down;
};

static const char *const known_services[] = {
    "",
    "grpc.health.v1.Health",
    "reel.v1.Admin",
    "reel.v1.Journal",
    "reel.v1.KV",
    "reel.v1.Signals",
    "reel.v1.Wal",
    "reel.v1.Workspace",
};

static int service_known(const char *name) {
    for (size_t i = 0; i < sizeof(known_services) / sizeof(*known_services);
         i++)
        if (strcmp(name, known_services[i]) == 0)
            return 1;
    return 0;
}

/* Decodes the request; answers the call and returns NULL on bad input, or
 * on an unknown service unless *unknown is given (then set). */
static Grpc__Health__V1__HealthCheckRequest *
decode(rpc_call_t *call, const uint8_t *req, size_t len, int *unknown) {
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

        if (unknown != NULL) {
            *unknown = 1;
            return in;
        }
        snprintf(msg, sizeof(msg), "service: unknown service \"%.256s\"",
                 in->service);
        grpc__health__v1__health_check_request__free_unpacked(in, NULL);
        rpc_call_finish(call, REEL_NOT_FOUND, msg, NULL, 0);
        return NULL;
    }
    return in;
}

static int current_status(api_ctx_t *ctx) {
    return !atomic_load(&ctx->health->shutting_down) && ctx->store != NULL &&
                   store_health(ctx->store, NULL) == REEL_OK
               ? SERVING
               : NOT_SERVING;
}

static size_t encode_status(int status, uint8_t *buf) {
    Grpc__Health__V1__HealthCheckResponse out =
        GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;

    out.status = status;
    return grpc__health__v1__health_check_response__pack(&out, buf);
}

static void health_check(rpc_call_t *call, void *arg, const uint8_t *req,
                         size_t len) {
    api_ctx_t *ctx = arg;
    Grpc__Health__V1__HealthCheckRequest *in = decode(call, req, len, NULL);
    uint8_t buf[16];
    size_t n;

    if (in == NULL)
        return;
    grpc__health__v1__health_check_request__free_unpacked(in, NULL);
    n = encode_status(current_status(ctx), buf);
    rpc_call_finish(call, REEL_OK, NULL, buf, n);
}

/* Sends status to w if it changed. Call with h->mu held. */
static void push_locked(watcher_t *w, int status) {
    uint8_t buf[16];
    size_t n;

    if (w->unknown)
        status = SERVICE_UNKNOWN;
    if (w->sent == status)
        return;
    n = encode_status(status, buf);
    /* A full queue (a client that never reads its probes) keeps its last
     * status; the next change tries again. */
    if (rpc_call_send(w->call, buf, n) == REEL_OK)
        w->sent = status;
}

static void watch_cancel(rpc_call_t *call, void *arg, reel_code_t why) {
    (void)arg;
    api_finish_cancelled(call, why);
}

static void watch_cleanup(void *arg) {
    watcher_t *w = arg;
    api_health_t *h = w->h;

    pthread_mutex_lock(&h->mu);
    h->n_watchers--;
    if (w->prev)
        w->prev->next = w->next;
    else
        h->watchers = w->next;
    if (w->next)
        w->next->prev = w->prev;
    pthread_mutex_unlock(&h->mu);
    free(w);
}

static void health_watch(rpc_call_t *call, void *arg, const uint8_t *req,
                         size_t len) {
    api_ctx_t *ctx = arg;
    api_health_t *h = ctx->health;
    int unknown = 0;
    Grpc__Health__V1__HealthCheckRequest *in =
        decode(call, req, len, &unknown);
    watcher_t *w;

    if (in == NULL)
        return;
    grpc__health__v1__health_check_request__free_unpacked(in, NULL);
    if ((w = calloc(1, sizeof(*w))) == NULL) {
        rpc_call_finish(call, REEL_RESOURCE_EXHAUSTED, "out of memory", NULL,
                        0);
        return;
    }
    w->call = call;
    w->h = h;
    w->sent = -1;
    w->unknown = unknown;
    /* Registered and sent under h->mu: a change that happens meanwhile is
     * either seen here or pushed after. */
    pthread_mutex_lock(&h->mu);
    if (h->n_watchers == WATCH_MAX) {
        pthread_mutex_unlock(&h->mu);
        free(w);
        rpc_call_finish(call, REEL_RESOURCE_EXHAUSTED,
                        "health: 1024 Watch streams are open, the most "
                        "reeld serves; probe with Check",
                        NULL, 0);
        return;
    }
    h->n_watchers++;
    w->next = h->watchers;
    if (h->watchers)
        h->watchers->prev = w;
    h->watchers = w;
    rpc_call_on_cleanup(call, watch_cleanup, w);
    push_locked(w, current_status(ctx));
    pthread_mutex_unlock(&h->mu);
    /* The hook finishes the call; it may run at once if already over. */
    rpc_call_on_cancel(call, watch_cancel, NULL);
}

/* Pushes the current status to every open Watch. */
static void push_all(api_ctx_t *ctx) {
    api_health_t *h = ctx->health;
    int status;

    if (h == NULL)
        return;
    pthread_mutex_lock(&h->mu);
    status = current_status(ctx);
    for (watcher_t *w = h->watchers; w != NULL; w = w->next)
        push_locked(w, status);
    pthread_mutex_unlock(&h->mu);
}

void api_store_failed(void *arg, const reel_status_t *why) {
    (void)why;
    push_all(arg);
}

void api_health_shutdown(api_ctx_t *ctx) {
    if (ctx->health == NULL)
        return;
    atomic_store(&ctx->health->shutting_down, 1);
    push_all(ctx);
}

void api_health_destroy(api_ctx_t *ctx) {
    if (ctx->health == NULL)
        return;
    pthread_mutex_destroy(&ctx->health->mu);
    free(ctx->health);
    ctx->health = NULL;
}

int api_health_register(rpc_server_t *srv, api_ctx_t *ctx) {
    rpc_method_t check = {"/grpc.health.v1.Health/Check", RPC_UNARY,
                          health_check, ctx,
                          &grpc__health__v1__health_check_request__descriptor};
    rpc_method_t watch = {"/grpc.health.v1.Health/Watch", RPC_SERVER_STREAM,
                          health_watch, ctx,
                          &grpc__health__v1__health_check_request__descriptor};

    if (ctx->health == NULL) {
        if ((ctx->health = calloc(1, sizeof(*ctx->health))) == NULL)
            return -1;
        pthread_mutex_init(&ctx->health->mu, NULL);
    }
    if (rpc_server_add_method(srv, &check) != 0 ||
        rpc_server_add_method(srv, &watch) != 0)
        return -1;
    return 0;
}
