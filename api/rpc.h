/*
 * api/rpc.h: reel's gRPC server on the C core API (private to api/).
 *
 * A server owns its completion queues (one for unary calls polled by a
 * small pool of threads, and as many more for streams, a thread each), a
 * table of registered methods, and every live call. Handlers receive the
 * request bytes on a poller thread and answer with rpc_call_finish(), now or
 * later from any thread (e.g. the store's writer thread once a write has
 * committed). Server-streaming handlers queue messages with rpc_call_send():
 * one send is in flight per call, the rest wait in a bounded per-call queue.
 *
 * Lifetime: a call lives until the handler has finished it and gRPC has
 * completed every batch started on it; the handler may use the call pointer
 * until it calls rpc_call_finish(), and not after.
 *
 * Thread safety: rpc_call_* functions are thread-safe. A call's cancel hook
 * runs at most once, on a poller thread (client gone) or on the thread that
 * stops the server (shutdown), never while the call's lock is held.
 */
#ifndef REEL_API_RPC_H
#define REEL_API_RPC_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "base/status.h"
#include "metrics/metrics.h"

typedef struct rpc_server rpc_server_t;
typedef struct rpc_call rpc_call_t;

typedef enum rpc_kind {
    RPC_UNARY,
    RPC_SERVER_STREAM,
    /* The client sends a stream of messages, the server one answer. The
     * handler runs with no request (req NULL, len 0) and reads each
     * message with rpc_call_read(). */
    RPC_CLIENT_STREAM,
} rpc_kind_t;

/*
 * Runs on a poller thread when a call arrives. req is valid only during the
 * call. The handler must eventually call rpc_call_finish() exactly once.
 */
typedef void (*rpc_handler_fn)(rpc_call_t *call, void *ctx, const uint8_t *req,
                               size_t len);

/*
 * Runs once when a call must end before its handler finished it: why is
 * CANCELLED (the client cancelled, its deadline passed or its connection
 * broke) or UNAVAILABLE (the server is stopping). The handler must then
 * release what it holds and call rpc_call_finish().
 */
typedef void (*rpc_cancel_fn)(rpc_call_t *call, void *arg, reel_code_t why);

/*
 * Runs (outside the call's lock, on a poller thread) each time the send
 * queue drains empty, so a streaming handler that stopped filling it can
 * produce more.
 */
typedef void (*rpc_drain_fn)(rpc_call_t *call, void *arg);

typedef struct rpc_method {
    const char *path; /* "/grpc.health.v1.Health/Check" */
    rpc_kind_t kind;
    rpc_handler_fn handler;
    void *ctx;
    /* The request's protobuf-c descriptor: its string fields are checked
     * (api/wire.h) before the handler runs. NULL to skip. */
    const void *input;
} rpc_method_t;

/*
 * Decides, once per call, before the request is decoded, whether it may
 * run: path is the method, auth the "authorization" metadata value (NULL
 * when none was sent; len bytes, not NUL-terminated), sent the number of
 * "authorization" entries the call carried (auth is the first). On OK it
 * may set *principal (malloc'd; the call frees it): who is calling, for
 * rpc_call_principal(). Any other code ends the call with st's message.
 * Runs on a poller thread; must not block.
 */
typedef reel_code_t (*rpc_authorize_fn)(void *arg, const char *path,
                                        const char *auth, size_t len,
                                        size_t sent, void **principal,
                                        reel_status_t *st);

/* Calls whose streams' bytes are bounded together (a tenant's): what
 * they hold queued or in flight. Owned by the server's user; it must
 * outlive the calls. */
typedef struct rpc_share {
    _Atomic size_t queued;
} rpc_share_t;

typedef struct rpc_server_opts {
    const char *listen;        /* "127.0.0.1:7878" */
    int threads; /* unary pollers, and as many stream queues; 0 = 4 */
    size_t max_message_bytes;  /* per request; 0 = 4 MiB */
    size_t stream_queue_max;   /* messages queued per call; 0 = 256 */
    size_t stream_queue_bytes; /* bytes queued per call; 0 = 4 MiB (one
                                  message is always allowed) */
    size_t stream_queue_total; /* bytes queued on all calls together; 0 =
                                  256 MiB (still one message per call) */
    /* Bytes the calls of one share (share_of) may queue together, under
     * the same rules as the total; 0 = a quarter of the total. So one
     * tenant's stalled readers cannot take the room every other tenant's
     * streams need. */
    size_t stream_queue_share;
    size_t max_response_bytes; /* largest unary answer; 0 = no limit */
    /* Calls open at once, every client's together (each holds memory
     * while it lasts: streams, long polls); a new call past it ends
     * RESOURCE_EXHAUSTED at once, naming --max-calls. Health's Check is
     * always served. 0 = no limit. */
    size_t max_calls;
    int keepalive_time_ms;     /* ping a connection this often; 0 = 30000 */
    int keepalive_timeout_ms;  /* no answer this long: the peer is dead and
                                  its calls end; 0 = 10000 */
    /* TLS: PEM files, NULL or "" for none. With tls_cert and tls_key the
     * port serves TLS; tls_client_ca also requires (and verifies) client
     * certificates signed by it (mTLS). Read at bind and again by
     * rpc_server_reload_tls(). */
    const char *tls_cert, *tls_key, *tls_client_ca;
    /* Every call of a registered method passes it first; NULL lets every
     * call through. */
    rpc_authorize_fn authorize;
    void *authorize_arg;
    /* Frees what authorize set in *principal, when its call is freed (arg:
     * authorize_arg); NULL: free(). */
    void (*principal_free)(void *arg, void *principal);
    /* The share an authorized call's streams count against (arg:
     * authorize_arg), or NULL: the total alone. NULL: no shares. */
    rpc_share_t *(*share_of)(void *arg, const void *principal);
    /* Where rpc_server_bind() registers the calls' metrics (NULL: none):
     * reel_rpc_requests_total{service,method,code} as each call ends,
     * reel_rpc_duration_seconds{service,method} for unary calls,
     * reel_rpc_open_calls and reel_stream_queue_bytes. Dropped by
     * rpc_server_destroy(); the registry must outlive the server. */
    metrics_registry_t *metrics;
} rpc_server_opts_t;

rpc_server_t *rpc_server_create(const rpc_server_opts_t *opts);

/* Registers a method; before rpc_server_start(). Returns 0 or -1. */
int rpc_server_add_method(rpc_server_t *srv, const rpc_method_t *m);

/*
 * Binds the listening port without accepting calls yet, so a bad address
 * or a port in use fails before anything else is set up, and registers the
 * calls' metrics. After it, no method may be added. rpc_server_start()
 * binds too if this was not called.
 */
reel_code_t rpc_server_bind(rpc_server_t *srv, reel_status_t *st);

/*
 * Reads the TLS files again (e.g. on SIGHUP) and checks them (each parses,
 * the key matches the certificate); new connections then use them, and
 * open ones keep theirs. On error (the file and why in st) the server goes
 * on with what it had. FAILED_PRECONDITION when the server has no TLS.
 * Any thread.
 */
reel_code_t rpc_server_reload_tls(rpc_server_t *srv, reel_status_t *st);

/* Binds if needed, starts the pollers and begins accepting calls. */
reel_code_t rpc_server_start(rpc_server_t *srv, reel_status_t *st);

/* Calls in progress (streams included): those whose final status has not
 * gone out. Any thread. */
size_t rpc_server_open_calls(rpc_server_t *srv);

/* The port actually bound (useful with ":0"). */
int rpc_server_port(rpc_server_t *srv);

/*
 * Stops accepting calls, ends open streams and waits through their cancel
 * hooks with UNAVAILABLE, and waits up to grace_ms for in-flight calls to
 * finish before cancelling the rest. Pollers keep running, so completions
 * that arrive later (e.g. from the store) are still delivered.
 */
void rpc_server_stop(rpc_server_t *srv, int grace_ms);

/* Stops the pollers and frees everything. Call after rpc_server_stop(). */
void rpc_server_destroy(rpc_server_t *srv);

/* ---- Calls -------------------------------------------------------------- */

/*
 * Queues one message on a streaming call. OK; RESOURCE_EXHAUSTED when the
 * call's queue is full (by count or by bytes), or when all streams' queued
 * and in-flight bytes together are at the server's total and this call
 * has a drain hook (the caller decides what to do: drop to storage, or end
 * the stream; the drain runs when the queue drains or, for a call with
 * nothing queued or in flight, once other sends make room); CANCELLED when
 * the call is already over.
 */
reel_code_t rpc_call_send(rpc_call_t *call, const void *msg, size_t len);

/*
 * Whether a message of len bytes would be queued now (1), as
 * rpc_call_send() decides; 0 when it would be refused, and then, as for a
 * refused send, the call's drain runs once there is room. For a stream
 * that should not fetch what it would send (a file's next chunk) before
 * it can. 1 once the call is over (the send will say CANCELLED).
 */
int rpc_call_room(rpc_call_t *call, size_t len);

/* rpc_call_send() of head followed by body, as one message (one copy). */
reel_code_t rpc_call_send2(rpc_call_t *call, const void *head, size_t hlen,
                           const void *body, size_t blen);

/*
 * rpc_call_send2(), except that while the last queued message (not yet
 * handed to gRPC) was queued by this call too and would stay within
 * merge_max bytes, head and body are appended to it instead of making a
 * new message. For streams whose message is a concatenation of parts
 * (a repeated field): a backlog leaves in few large messages, while a
 * stream that keeps up still gets each part at once. A part larger than
 * merge_max goes in a message of its own.
 */
reel_code_t rpc_call_send_merged(rpc_call_t *call, const void *head,
                                 size_t hlen, const void *body, size_t blen,
                                 size_t merge_max);

/*
 * Around sending one thing to many streams from one thread (api_publish):
 * on a poller thread, the first RPC_FANOUT_DIRECT sends start at once on
 * this thread and the rest are handed to the other pollers, so they go
 * out in parallel; off the pollers every send is handed over anyway.
 */
#define RPC_FANOUT_DIRECT 4
void rpc_fanout_begin(void);
void rpc_fanout_end(void);

/*
 * Messages queued and not yet sent, the one in flight included: 0 means no
 * drain is coming. A call waiting for room (rpc_call_send) counts as full,
 * the queue's bound: its drain runs once other sends make room.
 */
size_t rpc_call_queued(rpc_call_t *call);

/* The per-call queue bound rpc_call_send() enforces. */
size_t rpc_call_queue_max(rpc_call_t *call);

/*
 * Holds the call alive across work that may race with its end (e.g. a
 * handler that keeps using the call after setting a cancel hook).
 */
void rpc_call_ref(rpc_call_t *call);
void rpc_call_unref(rpc_call_t *call);

/*
 * Runs once when the call is freed: no hook of the call is running then or
 * can run later, so it is the place to free what the hooks use.
 */
typedef void (*rpc_cleanup_fn)(void *arg);
void rpc_call_on_cleanup(rpc_call_t *call, rpc_cleanup_fn fn, void *arg);

/*
 * Ends the call with code and message (NULL for the code's text). For a
 * unary OK, resp holds the response message; one over max_response_bytes
 * is not sent, and the call ends RESOURCE_EXHAUSTED saying so. A
 * streaming call's queued messages are sent first. Releases the handler's
 * hold on the call. A second finish (e.g. a cancel hook racing an end) is
 * ignored.
 */
void rpc_call_finish(rpc_call_t *call, reel_code_t code, const char *msg,
                     const void *resp, size_t len);

/* rpc_call_finish() with a reel_status_t. */
void rpc_call_finish_status(rpc_call_t *call, const reel_status_t *st);

/*
 * Sets the cancel hook. If the call is already cancelled or the server is
 * stopping, the hook runs at once, on this thread.
 */
void rpc_call_on_cancel(rpc_call_t *call, rpc_cancel_fn fn, void *arg);
void rpc_call_on_drain(rpc_call_t *call, rpc_drain_fn fn, void *arg);

/*
 * Runs fn(call, arg) soon on a poller thread (through an empty batch that
 * completes at once), holding the call alive meanwhile. Safe from any
 * thread and under any lock; wakes posted while one is pending coalesce
 * into it. Nothing runs once the call has finished.
 */
typedef void (*rpc_wake_fn)(rpc_call_t *call, void *arg);
void rpc_call_wake(rpc_call_t *call, rpc_wake_fn fn, void *arg);

/*
 * The next message of a client-streaming call, or its end: code OK with
 * msg and len (msg is valid only during the call; an empty message has
 * len 0 and msg not NULL); OK with msg NULL when the client has sent its
 * last message; CANCELLED when the call broke (the cancel hook runs too).
 * Runs on a poller thread, outside the call's lock.
 */
typedef void (*rpc_read_fn)(rpc_call_t *call, void *arg, reel_code_t code,
                            const uint8_t *msg, size_t len);

/*
 * Asks for the next message of a client-streaming call: fn runs once, when
 * it arrives. At most one read is outstanding, and the next is asked for
 * only after the handler has dealt with this one, so a client that sends
 * faster than reeld stores is held back by HTTP/2 flow control and nothing
 * piles up in reeld's memory. OK; FAILED_PRECONDITION when a read is
 * already outstanding; CANCELLED when the call is over (fn never runs).
 * Holds the call alive until fn has run.
 */
reel_code_t rpc_call_read(rpc_call_t *call, rpc_read_fn fn, void *arg);

/* True once the client is gone or the server is stopping. */
int rpc_call_is_cancelled(rpc_call_t *call);

/* The client's deadline on the monotonic clock (ns), or INT64_MAX. */
int64_t rpc_call_deadline_ns(rpc_call_t *call);

/*
 * When a long poll of wait_ms starting now stops waiting (monotonic ns):
 * at wait_ms, or sooner, ahead of the client's deadline by a tenth of the
 * time left (at most RPC_DEADLINE_TAIL_MS), so that its answer "nothing
 * came" reaches the client before the client gives up, and nothing is
 * consumed or claimed for a client no longer waiting. 0 when there is no
 * time to wait: answer at once.
 */
#define RPC_DEADLINE_TAIL_MS 1000
int64_t rpc_call_wait_until_ns(rpc_call_t *call, int64_t wait_ms);

/* The method path, e.g. "/reel.v1.KV/SetValue". */
const char *rpc_call_method(rpc_call_t *call);

/* What the authorize hook set for this call, or NULL. Valid while the
 * call is. */
const void *rpc_call_principal(rpc_call_t *call);

/* The registered methods (n of them): valid until the server is
 * destroyed. For checks over the whole table (every method has a scope). */
const rpc_method_t *rpc_server_methods(rpc_server_t *srv, size_t *n);

/*
 * Ends every open call whose principal match(principal, arg) accepts and
 * whose handler set a cancel hook (streams, long polls): the hook runs
 * with code, and the call ends with code and msg whatever the hook says
 * (e.g. UNAUTHENTICATED, "token revoked"). Returns how many. Any thread
 * but a hook's; match runs under the server's lock and must not block.
 */
typedef int (*rpc_match_fn)(const void *principal, void *arg);
size_t rpc_server_end_calls(rpc_server_t *srv, rpc_match_fn match, void *arg,
                            reel_code_t code, const char *msg);

/*
 * The check a call's principal passes again when its handler sets its
 * cancel hook: 0 while it holds, else non-zero with why (UNAUTHENTICATED's
 * message) filled, and the call ends at once as rpc_server_end_calls ends
 * one. It closes the gap between a call's authorization and its hook: an
 * end_calls that came between found no hook to run. Set once, before the
 * server serves; fn must not block.
 */
typedef int (*rpc_stale_fn)(const void *principal, void *arg, char *why,
                            size_t cap);
void rpc_server_on_stale(rpc_server_t *srv, rpc_stale_fn fn, void *arg);

#endif
