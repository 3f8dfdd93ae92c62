/*
 * client/client_impl.h: what client.c shares with consumer.c (private to
 * client/).
 */
#ifndef REEL_CLIENT_CLIENT_IMPL_H
#define REEL_CLIENT_CLIENT_IMPL_H

#include <pthread.h>
#include <stdint.h>

#include "client/backoff.h"
#include "client/client.h"

/* grpc_status_code values the library decides on. */
#define CLIENT_OK 0
#define CLIENT_CANCELLED 1
#define CLIENT_INVALID_ARGUMENT 3
#define CLIENT_DEADLINE_EXCEEDED 4
#define CLIENT_RESOURCE_EXHAUSTED 8
#define CLIENT_FAILED_PRECONDITION 9
#define CLIENT_INTERNAL 13
#define CLIENT_UNAVAILABLE 14
#define CLIENT_UNAUTHENTICATED 16

/* In the status message of a stream reeld cancelled for a reader that
 * took nothing while others waited for room (api/rpc.c): resumable. */
#define CLIENT_EVICTED "read nothing of its last message"

/*
 * A switch another thread flips to end calls: a call registers in it while
 * it runs (any number of calls: a consumer's stream and the ack made from
 * its callback), and client_cancel_fire cancels them all (gRPC's
 * grpc_call_cancel may come from any thread), their status CANCELLED with
 * why as its message. Once fired it stays fired: a call started afterwards
 * ends CANCELLED before it is sent, and client_cancel_wait returns at
 * once. The consumer's backoff waits on the same lock and condition.
 */
struct call;
typedef struct client_cancel {
    pthread_mutex_t mu;
    pthread_cond_t cv;  /* on CLOCK_MONOTONIC */
    int fired;
    const char *why;    /* the first firer's reason (static text) */
    struct call *calls; /* the calls running on it */
} client_cancel_t;

void client_cancel_init(client_cancel_t *k);
void client_cancel_fini(client_cancel_t *k);
void client_cancel_fire(client_cancel_t *k, const char *why);
int client_cancel_fired(client_cancel_t *k);
/* Waits ms or until fired; 1 if fired. */
int client_cancel_wait(client_cancel_t *k, int64_t ms);

/*
 * Who uses a client: each public call, and each consumer loop for its whole
 * run, enters it with its switch (the user's storage, until it leaves).
 * reel_client_shutdown fires every switch of those inside, and no one
 * enters after it; destroy then waits for every one to leave. client_enter
 * is CLIENT_OK, or CANCELLED (r set, u not entered) once it is shut down.
 * Leaving is the last touch of c.
 */
typedef struct client_user {
    pthread_t thread; /* destroy from within its own call would deadlock */
    client_cancel_t *cancel;
    struct client_user *next;
} client_user_t;

int client_enter(reel_client_t *c, client_user_t *u, client_cancel_t *k,
                 reel_reply_t *r);
void client_leave(reel_client_t *c, client_user_t *u);

/*
 * The wait before trying again after UNAVAILABLE (reeld away, or
 * restarting): the channel's connect backoff (grown while reeld was away)
 * is reset, the channel asked to connect, and its state watched on a
 * completion queue (which polls it: between calls nothing else does but
 * gRPC's backup poller, every 5 s) until it is ready, k (may be NULL)
 * fires, or ms pass; it returns no sooner than min_ms. 1 if k fired.
 */
int client_reconnect_wait(reel_client_t *c, client_cancel_t *k,
                          int64_t min_ms, int64_t ms);

/* reel_client_unary (unavailable_too 0) or reel_client_unary_retry (1) for
 * a user already inside c, which k (may be NULL) cancels, waits between
 * attempts included. */
int client_unary(reel_client_t *c, const char *method, const void *req,
                 size_t len, int64_t timeout_ms, int unavailable_too,
                 client_cancel_t *k, reel_reply_t *r);

/* reel_client_stream_idle for a user already inside c, which k (may be
 * NULL) cancels. *started (may be NULL) is 1 if the request went out on a
 * connection (the server may have taken the call, whatever came back), 0
 * if it never left. */
int client_stream(reel_client_t *c, const char *method, const void *req,
                  size_t len, int64_t timeout_ms, reel_stream_fn on_msg,
                  reel_idle_fn on_idle, int64_t idle_ms, void *arg,
                  client_cancel_t *k, int *started, reel_reply_t *reply);

/* The client's backoff and default deadline. */
const client_backoff_t *client_backoff_of(const reel_client_t *c);
int64_t client_deadline_ms(const reel_client_t *c);

/* Sets reply (if not NULL) to code and a printf-style message; returns
 * code. Out of memory leaves details NULL. */
int client_reply_set(reel_reply_t *reply, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/*
 * A call's RESOURCE_EXHAUSTED that says a message passed gRPC's size
 * limit ("Received message larger than max (N vs. M)") made clear: when N
 * is the request's own size (request_len), reeld refused the request, and
 * r becomes INVALID_ARGUMENT saying so, as any input over a limit; any
 * other N is an answer (a stream's message) passing this client's
 * max_receive_bytes, and r says that. Any other reply is left as it is.
 * For an upload, request_len is the largest message it sent.
 */
#define CLIENT_SIZED_UNARY 0
#define CLIENT_SIZED_UPLOAD 1
#define CLIENT_SIZED_STREAM 2
void client_reply_sized(reel_reply_t *r, size_t request_len, int kind);

/* Milliseconds on the monotonic clock. */
int64_t client_now_ms(void);

#endif
