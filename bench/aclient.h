/*
 * bench/aclient.h: an asynchronous gRPC client on the C core, for load.
 *
 * One client holds a few channels (connections) and one completion queue
 * polled by a few threads, so thousands of calls are in flight at once.
 * Calls are spread over the channels round-robin. Callbacks run on the
 * poller threads; they may start new calls.
 */
#ifndef REEL_BENCH_ACLIENT_H
#define REEL_BENCH_ACLIENT_H

#include <stddef.h>
#include <stdint.h>

#include "client/client.h"

typedef struct ac ac_t;
typedef struct ac_stream ac_stream_t;

/* A unary call ended (code 0 = OK; resp is valid during the callback:
 * the answer, or for any other code the server's message, not
 * NUL-terminated). */
typedef void (*ac_unary_fn)(void *arg, int code, const uint8_t *resp,
                            size_t len);
/* A stream message arrived; valid during the callback. */
typedef void (*ac_msg_fn)(void *arg, const uint8_t *msg, size_t len);
/* A stream ended with code and the server's message. */
typedef void (*ac_end_fn)(void *arg, int code, const char *details);

/*
 * How every later ac_create() connects: TLS trusting ca_file's PEM (NULL:
 * plaintext) and a bearer token on every call (NULL: none; with TLS only,
 * as a token in plaintext is given away). Call once,
 * before any ac_create() (reel-bench's --tls-ca and --token); the files
 * are read here. 0, or -1 after saying why on stderr.
 */
int ac_security(const char *ca_file, const char *token);

/* The same CA file and token as C client options (o's other fields as
 * they were), for the suites on client/ (ws). */
void ac_client_opts(reel_client_opts_t *o);

ac_t *ac_create(const char *addr, int connections, int threads);
/*
 * Cancels the streams still open and waits for their last completions,
 * then stops the pollers. A stream not yet released is freed here: do not
 * release it after.
 */
void ac_destroy(ac_t *c);

/* Registers a method path on every channel; returns its handle or -1. */
int ac_method(ac_t *c, const char *path);

/* Starts a unary call; done runs exactly once. Returns 0, or -1. */
int ac_unary(ac_t *c, int method, const void *req, size_t len,
             int64_t timeout_ms, ac_unary_fn done, void *arg);

/*
 * Opens a stream and sends req. half_close: the client sends no more
 * (server streaming); else the send side stays open (etcd's bidirectional
 * Watch). receive: read messages as they come; 0 leaves them unread, a
 * stalled client. on_end runs once, when the status arrives.
 */
ac_stream_t *ac_stream_open(ac_t *c, int method, const void *req, size_t len,
                            int half_close, int receive, ac_msg_fn on_msg,
                            ac_end_fn on_end, void *arg);
/*
 * Sends one more message on a stream opened with half_close 0 (etcd's
 * Watch takes a create request per watcher), after those before it.
 * Returns 0, or -1 (out of memory).
 */
int ac_stream_send(ac_stream_t *s, const void *msg, size_t len);
void ac_stream_cancel(ac_stream_t *s);
/* Drops the opener's hold; the stream is freed once it has ended. */
void ac_stream_release(ac_stream_t *s);

/* Monotonic clock in nanoseconds. */
int64_t ac_now_ns(void);

#endif
