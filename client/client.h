/*
 * client/client.h: a small gRPC client on the C core, for reelctl and
 * reel-bench. Calls are blocking; one client is used by one thread.
 */
#ifndef REEL_CLIENT_CLIENT_H
#define REEL_CLIENT_CLIENT_H

#include <stddef.h>
#include <stdint.h>

typedef struct reel_client reel_client_t;

/* What a finished call returned. */
typedef struct reel_reply {
    int code;        /* grpc_status_code; 0 = OK */
    char *details;   /* the status message, malloc'd (may be "") */
    uint8_t *body;   /* unary response bytes, malloc'd, or NULL */
    size_t len;
} reel_reply_t;

/* Connects lazily to addr ("127.0.0.1:7878"). NULL on out of memory. */
reel_client_t *reel_client_create(const char *addr);
void reel_client_destroy(reel_client_t *c);

/*
 * Calls a unary method with a serialized request and a timeout. Fills
 * *reply (release with reel_reply_fini) and returns reply->code.
 */
int reel_client_unary(reel_client_t *c, const char *method, const void *req,
                      size_t len, int64_t timeout_ms, reel_reply_t *reply);

/*
 * Calls a server-streaming method; on_msg runs for each message and may
 * return non-zero to cancel the call. timeout_ms <= 0 means no deadline.
 * Returns the final status code (CANCELLED after a cancel).
 */
typedef int (*reel_stream_fn)(void *arg, const uint8_t *msg, size_t len);
int reel_client_stream(reel_client_t *c, const char *method, const void *req,
                       size_t len, int64_t timeout_ms, reel_stream_fn on_msg,
                       void *arg, reel_reply_t *reply);

/*
 * reel_client_stream, and each time idle_ms (> 0) pass with no message,
 * on_idle(arg) runs. on_msg and on_idle may make unary calls on c while
 * the stream is open, and return non-zero to cancel it.
 */
typedef int (*reel_idle_fn)(void *arg);
int reel_client_stream_idle(reel_client_t *c, const char *method,
                            const void *req, size_t len, int64_t timeout_ms,
                            reel_stream_fn on_msg, reel_idle_fn on_idle,
                            int64_t idle_ms, void *arg, reel_reply_t *reply);

void reel_reply_fini(reel_reply_t *reply);

/* "NOT_FOUND" for 5. */
const char *reel_grpc_code_name(int code);

#endif
