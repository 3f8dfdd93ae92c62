/*
 * api/rpc.c: the gRPC server machinery on the C core API.
 *
 * Design
 *   Completion queues: a main one, polled by `threads` threads, for unary
 *   calls, and `threads` stream queues, one poller each, for streams. A
 *   call's batches all complete on the queue whose request it matched: a
 *   unary method's requests wait on the main queue, a streaming method's
 *   are spread over the stream queues. Each completion costs a pass over
 *   every tag outstanding on its queue (see "Handoff"), and an open stream
 *   always has some: on queues of their own, N open streams cost unary
 *   calls nothing and each other N / threads. The main queue stays shared
 *   by its threads: a poller takes the completions it caused itself
 *   without waking another, which a queue per thread lost (set@1 p50 a
 *   third slower, measured: bench/ANALYSIS.md). Every tag on a queue is an
 *   rpc_tag_t whose kind says what completed:
 *     TAG_NEW_CALL  an outstanding request (pending_t) matched a call: the
 *                   poller re-posts a request for the same method, builds an
 *                   rpc_call_t, starts its RECV_CLOSE_ON_SERVER batch and
 *                   runs the handler (unknown methods answer UNIMPLEMENTED);
 *     TAG_CLOSE     the call is over; cancelled=1 means the client went away
 *                   (cancel, deadline, broken connection): the cancel hook
 *                   runs;
 *     TAG_SEND      the call's one in-flight send batch completed: the next
 *                   queued message (or the final status) goes out;
 *     TAG_HANDOFF   the empty batch that hands calls from other threads
 *                   to a poller (see "Handoff") completed;
 *     TAG_RECV      the one outstanding RECV_MESSAGE of a client-streaming
 *                   call (rpc_call_read) completed: its callback runs, and
 *                   asks for the next message when it is ready for it;
 *     TAG_SHUTDOWN  grpc_server_shutdown_and_notify completed.
 *
 * A call is reference-counted under its own mutex: one reference for the
 * handler (dropped by rpc_call_finish), one for the RECV_CLOSE batch, one per
 * send batch in flight. The last reference frees it. The server keeps every
 * live call in a list so stopping can end open streams.
 *
 * TLS: the port's credentials take their certificates from a config
 * fetcher, which gRPC calls at each new connection's handshake. The
 * fetcher hands over a config rpc_server_reload_tls() prepared (checked
 * with OpenSSL first, so a bad file on SIGHUP leaves the old certificates
 * serving) or says "unchanged": reloading never drops the listener or an
 * open connection.
 *
 * Sending: messages wait in a bounded FIFO of byte buffers; at most one
 * SEND_MESSAGE batch is in flight. The first batch also carries the initial
 * metadata, and the status rides in the same batch as the last message when
 * the handler has already finished, so a unary answer is a single batch.
 *
 * Room: every stream's queued and in-flight bytes count against one total
 * (stream_queue_total). A message behind others on its call is refused
 * once the total passes half of it; a call's first message (nothing queued
 * or in flight: a reader keeping up) may use the other half. A call with a
 * drain hook (a stream that can catch up from storage) gets no byte past
 * the total while others hold some: it waits in the server's room list
 * until other sends complete, then its drain runs. So stalled readers,
 * however many, hold at most the total between them; a call without a
 * drain hook may take one message past it. The calls of one share (a
 * tenant's: opts.share_of) are held to stream_queue_share together by
 * the same rules, so one tenant's stalled readers leave the rest of the
 * total to the others. So that readers
 * that stopped cannot keep the others waiting for ever, while calls wait
 * for room a stream whose last message has been in flight (unread) for a
 * keepalive interval and its timeout together (what a connection that
 * answers nothing is given) is cancelled with RESOURCE_EXHAUSTED
 * (room_evict, run by the keeper thread about once a second).
 *
 * Metrics: a call is counted once, by method and code, when its handler
 * finishes it (the one place every call ends, unknown methods and refused
 * requests included), in a per-server array of relaxed atomics; a unary
 * call's time from arrival to finish goes to its method's histogram.
 * Streams are counted when they end but not timed: their length is the
 * client's choice, not the server's latency. Queued stream bytes are
 * summed over the live calls when a scrape asks.
 */
#include "api/rpc.h"

#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/slice.h>
#include <grpc/support/time.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "api/wire.h"
#include "base/clock.h"
#include "base/fault.h"
#include "base/log.h"

#define DEFAULT_THREADS 4
#define DEFAULT_MAX_MESSAGE (4u << 20)
#define DEFAULT_STREAM_QUEUE 256
#define DEFAULT_STREAM_BYTES (4u << 20)
#define DEFAULT_STREAM_TOTAL ((size_t)256 << 20)
#define DEFAULT_KEEPALIVE_TIME_MS 30000
#define DEFAULT_KEEPALIVE_TIMEOUT_MS 10000
#define REQUESTS_PER_METHOD 8
#define MAX_METHODS 128
#define TLS_FILE_MAX (1u << 20) /* a PEM file larger than this is refused */

enum {
    TAG_NEW_CALL,
    TAG_CLOSE,
    TAG_SEND,
    TAG_SHUTDOWN,
    TAG_HANDOFF,
    TAG_RECV
};

typedef struct rpc_tag {
    int kind;
    void *ptr;
} rpc_tag_t;

typedef struct pollq pollq_t;

/* One outstanding request for a new call. */
typedef struct pending {
    rpc_tag_t tag;
    pollq_t *q; /* the queue it waits on, which the call will be bound to */
    int method; /* index into srv->methods, or -1 for unknown methods */
    grpc_call *call;
    gpr_timespec deadline;
    grpc_metadata_array md;
    grpc_byte_buffer *payload;
    grpc_call_details details;
} pending_t;

/* A queued message: its bytes, until pump_locked hands them to gRPC. */
typedef struct msg {
    struct msg *next;
    grpc_slice s;     /* cap bytes, the first len of them filled */
    size_t len, cap;
    size_t merge_max; /* 0, or rpc_call_send_merged()'s bound: may grow */
} msg_t;

/*
 * What a message costs besides its bytes while queued or in flight, as the
 * budgets count it (see "Room"): its entry, its slice's header and their
 * allocations' (in flight: the byte buffer). Counting the bytes alone,
 * 20,000 stalled streams of small events grew reeld by 380 MB against a
 * 256 MiB budget (bench/ANALYSIS.md).
 */
#define MSG_COST (sizeof(msg_t) + 64)

struct rpc_call {
    rpc_server_t *srv;
    rpc_share_t *share; /* or NULL; set once authorized (see "Room") */
    pollq_t *q; /* every batch of the call completes there */
    const rpc_method_t *method; /* NULL for an unknown method */
    char *path;
    grpc_call *call;
    int64_t deadline_ns;
    grpc_metadata_array md;
    rpc_tag_t tag_close;
    rpc_tag_t tag_send;
    rpc_tag_t tag_recv;
    int close_cancelled; /* written by the RECV_CLOSE batch */
    /* The RECV_CLOSE_ON_SERVER op was started: on its own (close_posted),
     * or in the status batch (close_in_send too; see close_post_locked). */
    int close_posted, close_in_send;
    int wake_pending; /* a poller will run wake_fn */
    int pump_pending; /* a poller will start the next send */
    /* Handed to the pollers (see "Handoff"): listed, or the call whose
     * empty batch is out; the handoff holds a reference. */
    int in_handoff;
    rpc_call_t *handoff_next; /* under the handoff's mu */
    rpc_wake_fn wake_fn;
    void *wake_arg;
    int64_t started_ns; /* arrival, on the monotonic clock */

    pthread_mutex_t mu;
    int refs;
    int gone;        /* the client is gone: nothing more can be sent */
    int finished;    /* the handler called rpc_call_finish */
    int status_sent; /* the status batch was started (or is moot) */
    int md_sent;
    int send_in_flight;
    int cancel_fired;
    grpc_status_code code;
    grpc_slice details;
    int has_details;
    msg_t *qhead, *qtail;
    size_t qlen, qbytes;
    grpc_byte_buffer *inflight;
    size_t inflight_len; /* counted in srv->queued until its send is done */
    uint64_t sends;      /* messages handed to gRPC, for room_evict: */
    uint64_t seen_sends; /* sends when the keeper saw one in flight, */
    int64_t seen_ns;     /* and when (0: none seen) */
    /* In srv's room list (which holds a reference); woken from it (its
     * next pump runs the drain). */
    int room_wait, room_woken;
    _Atomic size_t room_need; /* the bytes it waits to queue */
    rpc_call_t *room_next;
    rpc_cleanup_fn cleanup_fn;
    void *cleanup_arg;
    rpc_cancel_fn cancel_fn;
    void *cancel_arg;
    rpc_drain_fn drain_fn;
    void *drain_arg;
    int read_pending; /* a RECV_MESSAGE batch is outstanding */
    grpc_byte_buffer *recv_buf;
    rpc_read_fn read_fn;
    void *read_arg;

    void *principal;   /* from the authorize hook; freed with the call */
    int forced;        /* rpc_server_end_calls: finish with these */
    reel_code_t forced_code;
    char *forced_msg;

    rpc_call_t *prev, *next; /* srv->calls, under srv->mu */
};

/*
 * Calls other threads hand to the pollers (see "Handoff"): a list, and at
 * most one empty batch out, on posted_on, for all of them.
 */
typedef struct handoff {
    pthread_mutex_t mu;
    rpc_call_t *head, *tail;
    rpc_call_t *posted_on; /* NULL: no batch out, and the list is empty */
    rpc_tag_t tag;
} handoff_t;

/* A completion queue and the calls handed to its pollers. */
struct pollq {
    rpc_server_t *srv;
    grpc_completion_queue *cq;
    handoff_t handoff;
    int pollers; /* started */
    /* Requests for new calls that could not be posted (out of memory), by
     * method + 1 (0: unknown methods): the keeper posts them again. Each
     * method has a few; lost for good, its calls would wait unmatched. */
    _Atomic unsigned owed[MAX_METHODS + 1];
};

struct rpc_server {
    rpc_server_opts_t opts;
    rpc_stale_fn stale_fn; /* rpc_server_on_stale */
    void *stale_arg;
    char *listen;
    grpc_server *server;
    pollq_t *qs; /* the main queue, then opts.threads stream queues */
    int n_qs;
    pthread_t *threads; /* opts.threads on qs[0], then one per stream queue */
    rpc_method_t methods[MAX_METHODS];
    void *registered[MAX_METHODS];
    int n_methods;
    int port;
    int n_threads; /* pollers started */
    int bound;   /* the port is bound (calls wait in the backlog) */
    int started; /* accepting calls */
    rpc_tag_t shutdown_tag;

    pthread_mutex_t mu;
    pthread_cond_t cv;
    atomic_int stopping;
    int shutdown_done;
    rpc_call_t *calls;
    size_t n_calls; /* in calls */
    /* Bytes queued or in flight on every call's stream: many stalled
     * readers together stay within stream_queue_total (see "Room"). */
    _Atomic size_t queued;
    /* Calls waiting for room, newest first (see "Room"). */
    pthread_mutex_t room_mu;
    rpc_call_t *room_head;
    _Atomic int room_n;
    /* The keeper thread (room_evict(), trim_after()). */
    pthread_t keeper;
    pthread_mutex_t keeper_mu;
    pthread_cond_t keeper_cv;
    int keeper_started, keeper_stop;
    size_t queued_peak; /* the keeper's: the highest total since a trim */

    /* TLS (tls_cert set): the config the fetcher hands over next, or
     * NULL when it has nothing new. */
    char *tls_cert, *tls_key, *tls_client_ca;
    pthread_mutex_t tls_mu;
    grpc_ssl_server_certificate_config *tls_next;
    /* Calls ended, by method (the last row: unknown methods) and code. */
    _Atomic uint64_t ended[MAX_METHODS + 1][REEL_CODE__COUNT];
    metrics_histogram_t *duration[MAX_METHODS]; /* unary methods only */
};

/* ---- Calls -------------------------------------------------------------- */

/* Set on the server's poller threads (see rpc_call_send). */
static _Thread_local int on_poller;
/* Sends a poller may still start itself inside rpc_fanout_begin/end; -1
 * outside: no limit. */
static _Thread_local int fanout_left = -1;

void rpc_fanout_begin(void) { fanout_left = RPC_FANOUT_DIRECT; }

void rpc_fanout_end(void) { fanout_left = -1; }

static int64_t timespec_to_mono_ns(gpr_timespec t) {
    gpr_timespec left;

    if (gpr_time_cmp(t, gpr_inf_future(t.clock_type)) == 0)
        return INT64_MAX;
    /* gRPC's monotonic clock is not CLOCK_MONOTONIC (it starts 5 s
     * ahead): carry over the time left, not the instant. */
    left = gpr_time_sub(t, gpr_now(t.clock_type));
    if (left.tv_sec > INT64_MAX / 1000000000LL / 2)
        return INT64_MAX;
    return reel_clock_mono_ns() + left.tv_sec * 1000000000LL + left.tv_nsec;
}

static void queue_free_locked(rpc_call_t *c) {
    while (c->qhead != NULL) {
        msg_t *m = c->qhead;
        c->qhead = m->next;
        grpc_slice_unref(m->s);
        free(m);
    }
    c->qtail = NULL;
    c->qlen = 0;
    atomic_fetch_sub_explicit(&c->srv->queued, c->qbytes, memory_order_relaxed);
    if (c->share != NULL)
        atomic_fetch_sub_explicit(&c->share->queued, c->qbytes,
                                  memory_order_relaxed);
    c->qbytes = 0;
}

static void inflight_free_locked(rpc_call_t *c) {
    if (c->inflight != NULL) {
        grpc_byte_buffer_destroy(c->inflight);
        c->inflight = NULL;
    }
    atomic_fetch_sub_explicit(&c->srv->queued, c->inflight_len,
                              memory_order_relaxed);
    if (c->share != NULL)
        atomic_fetch_sub_explicit(&c->share->queued, c->inflight_len,
                                  memory_order_relaxed);
    c->inflight_len = 0;
}

/* Puts c in the room list (see "Room"), unless it is there. */
static void room_wait_locked(rpc_call_t *c) {
    rpc_server_t *srv = c->srv;

    if (c->room_wait)
        return;
    c->room_wait = 1;
    c->refs++; /* the list's */
    pthread_mutex_lock(&srv->room_mu);
    c->room_next = srv->room_head;
    srv->room_head = c;
    atomic_fetch_add(&srv->room_n, 1);
    pthread_mutex_unlock(&srv->room_mu);
}

/* Takes c out of the room list if it is there: 1 if it was (its
 * reference is then the caller's). */
static int room_take(rpc_server_t *srv, rpc_call_t *c) {
    rpc_call_t **pp;
    int found = 0;

    pthread_mutex_lock(&srv->room_mu);
    for (pp = &srv->room_head; *pp != NULL; pp = &(*pp)->room_next)
        if (*pp == c) {
            *pp = c->room_next;
            atomic_fetch_sub(&srv->room_n, 1);
            found = 1;
            break;
        }
    pthread_mutex_unlock(&srv->room_mu);
    return found;
}

static void call_unref(rpc_call_t *c);
static int handoff_locked(rpc_call_t *c, int *flag);

/*
 * Bytes were freed: wakes the calls waiting for room, a few per completion,
 * while the total is under its bound, the newest first: a reader that
 * keeps reading waits again after each message, so it goes before streams
 * that have waited long (most often readers that stopped: the stalled
 * hold what there is until room_evict ends them). A call whose share
 * has no room for what it waits to queue stays where it is, and the next
 * one is woken instead: one tenant's waiting streams cannot take every
 * wake.
 */
#define ROOM_WAKE_MAX 4

/* Whether what c waits to queue fits its share (room_locked's test), so
 * that waking it is not waking it to wait again. */
static int share_fits(const rpc_server_t *srv, const rpc_call_t *c) {
    size_t held;

    if (c->share == NULL)
        return 1;
    held = atomic_load_explicit(&c->share->queued, memory_order_relaxed);
    return held == 0 ||
           held + atomic_load_explicit(&c->room_need, memory_order_relaxed) <=
               srv->opts.stream_queue_share;
}

static void room_wake(rpc_server_t *srv) {
    for (int i = 0; i < ROOM_WAKE_MAX && atomic_load(&srv->room_n) > 0;
         i++) {
        rpc_call_t *c, **pp;

        if (atomic_load_explicit(&srv->queued, memory_order_relaxed) >=
            srv->opts.stream_queue_total)
            return;
        pthread_mutex_lock(&srv->room_mu);
        for (pp = &srv->room_head; (c = *pp) != NULL; pp = &c->room_next)
            if (share_fits(srv, c)) {
                *pp = c->room_next;
                atomic_fetch_sub(&srv->room_n, 1);
                break;
            }
        pthread_mutex_unlock(&srv->room_mu);
        if (c == NULL)
            return;
        pthread_mutex_lock(&c->mu);
        c->room_wait = 0;
        c->room_woken = 1;
        if (!c->finished && !c->gone && !c->pump_pending)
            handoff_locked(c, &c->pump_pending);
        pthread_mutex_unlock(&c->mu);
        call_unref(c); /* the list's */
    }
}

/*
 * While calls wait for room (what they would send does not fit in what is
 * left): cancels, a few at a time, the streams whose last message has been
 * in flight for the keepalive time and timeout together, whose readers
 * took none of it. The cancel fails their send, which frees its bytes and
 * wakes the waiting (room_wake).
 */
#define ROOM_EVICT_MAX 16
static void room_evict(rpc_server_t *srv) {
    grpc_call *hit[ROOM_EVICT_MAX];
    int64_t now = reel_clock_mono_ns();
    int64_t stall_ms = (int64_t)srv->opts.keepalive_time_ms +
                       srv->opts.keepalive_timeout_ms;
    char why[320];
    int n = 0;

    if (atomic_load(&srv->room_n) == 0)
        return;
    pthread_mutex_lock(&srv->mu);
    for (rpc_call_t *c = srv->calls; c != NULL && n < ROOM_EVICT_MAX;
         c = c->next) {
        pthread_mutex_lock(&c->mu);
        /* The same send in flight since the keeper first saw it (no clock
         * read per send: the keeper's ticks time it). */
        if (!c->send_in_flight || c->inflight_len == 0 || c->gone) {
            c->seen_ns = 0;
        } else if (c->seen_ns == 0 || c->seen_sends != c->sends) {
            c->seen_sends = c->sends;
            c->seen_ns = now;
        } else if (now - c->seen_ns > stall_ms * 1000000) {
            grpc_call_ref(c->call);
            hit[n++] = c->call;
        }
        pthread_mutex_unlock(&c->mu);
    }
    pthread_mutex_unlock(&srv->mu);
    /* reel's clients resume a stream ended with "read nothing of its last
     * message" (client/client_impl.h, clients/python's _core.py): keep it. */
    snprintf(why, sizeof(why),
             "this stream read nothing of its last message for %lld ms "
             "while the streams' send budget (--max-stream-backlog-bytes) "
             "was spent and others waited: reconnect and resume from the "
             "last position received",
             (long long)stall_ms);
    for (int i = 0; i < n; i++) {
        grpc_call_cancel_with_status(hit[i], GRPC_STATUS_RESOURCE_EXHAUSTED,
                                     why, NULL);
        grpc_call_unref(hit[i]);
    }
    if (n > 0)
        REEL_WARN("rpc", "cancelled %d stream%s whose readers took nothing "
                         "for %lld ms while others waited for room",
                  n, n == 1 ? "" : "s", (long long)stall_ms);
}

/*
 * The keeper's, once a second: once the streams' total fell to an eighth
 * of a peak of 32 MiB or more, hands the freed memory back to the system.
 * glibc keeps what its threads' arenas freed (a burst of stalled streams
 * left 2.6 GB resident, idle, until malloc_trim).
 */
#define TRIM_PEAK ((size_t)32 << 20)
static void trim_after(rpc_server_t *srv) {
    size_t q = atomic_load_explicit(&srv->queued, memory_order_relaxed);

    if (q > srv->queued_peak)
        srv->queued_peak = q;
    if (srv->queued_peak >= TRIM_PEAK && q < srv->queued_peak / 8) {
        malloc_trim(0);
        srv->queued_peak = q;
    }
}

static void call_destroy(rpc_call_t *c) {
    rpc_server_t *srv = c->srv;

    if (c->cleanup_fn != NULL)
        c->cleanup_fn(c->cleanup_arg);
    pthread_mutex_lock(&srv->mu);
    if (c->prev)
        c->prev->next = c->next;
    else
        srv->calls = c->next;
    if (c->next)
        c->next->prev = c->prev;
    srv->n_calls--;
    pthread_mutex_unlock(&srv->mu);

    queue_free_locked(c);
    if (c->inflight != NULL)
        grpc_byte_buffer_destroy(c->inflight);
    if (c->has_details)
        grpc_slice_unref(c->details);
    if (c->recv_buf != NULL)
        grpc_byte_buffer_destroy(c->recv_buf);
    grpc_metadata_array_destroy(&c->md);
    grpc_call_unref(c->call);
    pthread_mutex_destroy(&c->mu);
    free(c->path);
    if (c->principal != NULL && c->srv->opts.principal_free != NULL)
        c->srv->opts.principal_free(c->srv->opts.authorize_arg, c->principal);
    else
        free(c->principal);
    free(c->forced_msg);
    free(c);
}

static void call_unref(rpc_call_t *c) {
    int left;

    pthread_mutex_lock(&c->mu);
    left = --c->refs;
    pthread_mutex_unlock(&c->mu);
    if (left == 0)
        call_destroy(c);
}

/*
 * Starts the call's RECV_CLOSE_ON_SERVER batch on its own, unless a batch
 * carries it already. Its completion (on_close) drops the reference the
 * call was created with. A streaming call starts it at once; a unary call
 * only when it waits for something (rpc_call_on_cancel): otherwise the op
 * rides in the status batch (pump_locked), so that a unary call costs two
 * completions instead of three. Call with c->mu held.
 */
static void close_post_locked(rpc_call_t *c) {
    grpc_op op;

    if (c->close_posted)
        return;
    c->close_posted = 1;
    memset(&op, 0, sizeof(op));
    op.op = GRPC_OP_RECV_CLOSE_ON_SERVER;
    op.data.recv_close_on_server.cancelled = &c->close_cancelled;
    if (grpc_call_start_batch(c->call, &op, 1, &c->tag_close, NULL) !=
        GRPC_CALL_OK) {
        REEL_WARN("rpc", "%s: cannot watch for the call's end", c->path);
        c->refs--; /* no close batch will complete */
    }
}

/* Starts the next send batch if none is in flight. Call with c->mu held. */
static void pump_locked(rpc_call_t *c) {
    grpc_op ops[4];
    size_t n = 0;
    grpc_call_error err;

    if (c->send_in_flight || c->status_sent)
        return;
    if (c->gone) {
        queue_free_locked(c);
        if (c->finished) {
            c->status_sent = 1;
            close_post_locked(c); /* no status batch will carry it */
        }
        return;
    }
    memset(ops, 0, sizeof(ops));
    if (c->qhead != NULL) {
        msg_t *m = c->qhead;

        c->qhead = m->next;
        if (c->qhead == NULL)
            c->qtail = NULL;
        c->qlen--;
        c->qbytes -= m->len + MSG_COST;
        c->inflight_len = m->len + MSG_COST; /* still in srv->queued */
        c->sends++;
        GRPC_SLICE_SET_LENGTH(m->s, m->len);
        c->inflight = grpc_raw_byte_buffer_create(&m->s, 1);
        grpc_slice_unref(m->s);
        free(m);
        if (!c->md_sent) {
            ops[n].op = GRPC_OP_SEND_INITIAL_METADATA;
            ops[n++].data.send_initial_metadata.count = 0;
            c->md_sent = 1;
        }
        ops[n].op = GRPC_OP_SEND_MESSAGE;
        /* More queued behind this one: let the transport buffer it and
         * complete the op at once, so a backlog leaves in large writes
         * instead of one syscall per message. The last message queued
         * goes without the hint, which flushes everything before it. */
        if (c->qhead != NULL)
            ops[n].flags = GRPC_WRITE_BUFFER_HINT;
        ops[n++].data.send_message.send_message = c->inflight;
    } else if (!c->finished) {
        return;
    } else if (!c->md_sent) {
        ops[n].op = GRPC_OP_SEND_INITIAL_METADATA;
        ops[n++].data.send_initial_metadata.count = 0;
        c->md_sent = 1;
    }
    if (c->finished && c->qhead == NULL) {
        ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
        ops[n].data.send_status_from_server.trailing_metadata_count = 0;
        ops[n].data.send_status_from_server.status = c->code;
        ops[n++].data.send_status_from_server.status_details = &c->details;
        c->status_sent = 1;
        if (!c->close_posted) {
            ops[n].op = GRPC_OP_RECV_CLOSE_ON_SERVER;
            ops[n++].data.recv_close_on_server.cancelled = &c->close_cancelled;
            c->close_posted = c->close_in_send = 1;
        }
    }
    c->send_in_flight = 1;
    c->refs++;
    err = grpc_call_start_batch(c->call, ops, n, &c->tag_send, NULL);
    if (err != GRPC_CALL_OK) {
        REEL_WARN("rpc", "%s: start_batch failed (%d)", c->path, (int)err);
        c->send_in_flight = 0;
        c->refs--;
        if (c->close_in_send) { /* nor will the close: its reference */
            c->close_in_send = 0;
            c->refs--;
        } else {
            close_post_locked(c);
        }
        inflight_free_locked(c);
        c->gone = 1;
        c->status_sent = 1;
        queue_free_locked(c);
    }
}

static void on_send_done(rpc_call_t *c, int success) {
    rpc_drain_fn drain = NULL;
    void *drain_arg = NULL;
    int closed;

    pthread_mutex_lock(&c->mu);
    /* The status batch carried the close: the call is over (finished, so
     * there is no cancel hook to run). */
    closed = c->close_in_send;
    c->close_in_send = 0;
    inflight_free_locked(c);
    c->send_in_flight = 0;
    if (!success)
        c->gone = 1;
    pump_locked(c);
    if (!c->send_in_flight && c->qhead == NULL && !c->finished && !c->gone &&
        c->drain_fn != NULL) {
        drain = c->drain_fn;
        drain_arg = c->drain_arg;
    }
    pthread_mutex_unlock(&c->mu);
    if (drain != NULL)
        drain(c, drain_arg);
    room_wake(c->srv);
    if (closed)
        call_unref(c);
    call_unref(c);
}

static void on_close(rpc_call_t *c) {
    rpc_cancel_fn fn = NULL;
    void *arg = NULL;

    pthread_mutex_lock(&c->mu);
    REEL_DEBUG("rpc", "%s: closed (cancelled=%d, finished=%d)", c->path,
               c->close_cancelled, c->finished);
    if (c->close_cancelled) {
        c->gone = 1;
        queue_free_locked(c);
        if (!c->finished && !c->cancel_fired && c->cancel_fn != NULL) {
            c->cancel_fired = 1;
            fn = c->cancel_fn;
            arg = c->cancel_arg;
        }
    }
    pthread_mutex_unlock(&c->mu);
    if (fn != NULL)
        fn(c, arg, REEL_CANCELLED);
    call_unref(c);
}

/*
 * Queues head then body as one message, copied once. With merge_max, the
 * two are appended to the last queued message instead when that one was
 * queued the same way and stays within merge_max bytes.
 */
static reel_code_t append2_locked(rpc_call_t *c, const void *head,
                                  size_t hlen, const void *body, size_t blen,
                                  size_t merge_max) {
    size_t len = hlen + blen, cost = len;
    msg_t *m = c->qtail;

    if (merge_max > 0 && m != NULL && m->merge_max > 0 &&
        m->len + len <= m->merge_max) {
        if (m->len + len > m->cap) {
            size_t cap = m->cap * 2;
            grpc_slice bigger;

            while (cap < m->len + len)
                cap *= 2;
            if (cap > m->merge_max)
                cap = m->merge_max;
            bigger = grpc_slice_malloc(cap);
            memcpy(GRPC_SLICE_START_PTR(bigger), GRPC_SLICE_START_PTR(m->s),
                   m->len);
            grpc_slice_unref(m->s);
            m->s = bigger;
            m->cap = cap;
        }
    } else {
        size_t cap = len;

        /* Room to grow in, for a message others may merge into. */
        if (merge_max > len)
            cap = merge_max < 4096 ? merge_max : len > 4096 ? len : 4096;
        if ((m = malloc(sizeof(*m))) == NULL)
            return REEL_RESOURCE_EXHAUSTED;
        m->s = grpc_slice_malloc(cap);
        m->len = 0;
        m->cap = cap;
        m->merge_max = merge_max;
        m->next = NULL;
        if (c->qtail)
            c->qtail->next = m;
        else
            c->qhead = m;
        c->qtail = m;
        c->qlen++;
        cost += MSG_COST;
    }
    if (hlen > 0)
        memcpy(GRPC_SLICE_START_PTR(m->s) + m->len, head, hlen);
    if (blen > 0)
        memcpy(GRPC_SLICE_START_PTR(m->s) + m->len + hlen, body, blen);
    m->len += len;
    c->qbytes += cost;
    atomic_fetch_add_explicit(&c->srv->queued, cost, memory_order_relaxed);
    if (c->share != NULL)
        atomic_fetch_add_explicit(&c->share->queued, cost,
                                  memory_order_relaxed);
    return REEL_OK;
}

static reel_code_t append_locked(rpc_call_t *c, const void *data, size_t len) {
    return append2_locked(c, NULL, 0, data, len, 0);
}

/*
 * A message was queued: starts a send unless one is in flight (its
 * completion takes the queue) or pending. Off the pollers the caller is
 * usually the store's writer thread, publishing one change to many
 * watchers: a send started there would run the transport's write (a
 * syscall per stream) on the writer. So it hands the call to the pollers
 * (see "Handoff"), and a poller starts the send. A poller publishing a
 * group it committed itself (store.h: a lone submitter runs its own group)
 * starts the first few sends and hands over the rest, so a fan-out still
 * spreads over the pollers (rpc_fanout_begin).
 */
static void start_send_locked(rpc_call_t *c) {
    if (c->send_in_flight || c->pump_pending || c->status_sent)
        return;
    if ((on_poller && fanout_left != 0) ||
        handoff_locked(c, &c->pump_pending) != 0) {
        if (on_poller && fanout_left > 0)
            fanout_left--;
        pump_locked(c);
    }
}

/*
 * Whether c may queue len more bytes now (see "Room"), in a message of its
 * own unless it merges into the last: OK, or RESOURCE_EXHAUSTED, when a
 * call with nothing queued or in flight also waits in the room list.
 */
static reel_code_t room_locked(rpc_call_t *c, size_t len, int merges) {
    size_t total = atomic_load_explicit(&c->srv->queued, memory_order_relaxed);
    size_t cap = c->srv->opts.stream_queue_total;
    size_t held = 0, share_cap = c->srv->opts.stream_queue_share;
    int idle = c->qlen == 0 && !c->send_in_flight;

    if (c->share != NULL)
        held = atomic_load_explicit(&c->share->queued, memory_order_relaxed);
    if (!merges)
        len += MSG_COST;
    /* A message behind others (queued or in flight) only while the total
     * (and the call's share) is under half its bound, and within the
     * call's own limits: else the caller catches up from storage once
     * this call's queue drains. */
    if ((!merges && c->qlen >= c->srv->opts.stream_queue_max) ||
        (c->qlen > 0 && c->qbytes + len > c->srv->opts.stream_queue_bytes) ||
        (!idle && total + len > cap / 2) ||
        (!idle && c->share != NULL && held + len > share_cap / 2))
        return REEL_RESOURCE_EXHAUSTED;
    /* The first, within the bound (or alone): a reader that keeps up always
     * finds the half that queued messages cannot take. A call without a
     * drain hook, which has no way to wait, may pass it. One with a hook
     * and nothing queued or in flight has no drain coming: it waits for
     * room, in the total or in its share. */
    if (idle && c->drain_fn != NULL &&
        ((total > 0 && total + len > cap) ||
         (held > 0 && held + len > share_cap))) {
        atomic_store_explicit(&c->room_need, len, memory_order_relaxed);
        room_wait_locked(c);
        return REEL_RESOURCE_EXHAUSTED;
    }
    return REEL_OK;
}

static reel_code_t send_locked(rpc_call_t *c, const void *head, size_t hlen,
                               const void *body, size_t blen,
                               size_t merge_max) {
    size_t len = hlen + blen;
    int merges = merge_max > 0 && c->qtail != NULL &&
                 c->qtail->merge_max > 0 &&
                 c->qtail->len + len <= c->qtail->merge_max;
    reel_code_t rc;

    if (c->gone || c->finished)
        return REEL_CANCELLED;
    if ((rc = room_locked(c, len, merges)) != REEL_OK)
        return rc;
    if ((rc = append2_locked(c, head, hlen, body, blen, merge_max)) ==
        REEL_OK)
        start_send_locked(c);
    return rc;
}

int rpc_call_room(rpc_call_t *c, size_t len) {
    int ok;

    pthread_mutex_lock(&c->mu);
    ok = c->gone || c->finished || room_locked(c, len, 0) == REEL_OK;
    pthread_mutex_unlock(&c->mu);
    return ok;
}

reel_code_t rpc_call_send2(rpc_call_t *c, const void *head, size_t hlen,
                           const void *body, size_t blen) {
    reel_code_t rc;

    pthread_mutex_lock(&c->mu);
    rc = send_locked(c, head, hlen, body, blen, 0);
    pthread_mutex_unlock(&c->mu);
    return rc;
}

reel_code_t rpc_call_send(rpc_call_t *c, const void *msg, size_t len) {
    return rpc_call_send2(c, NULL, 0, msg, len);
}

reel_code_t rpc_call_send_merged(rpc_call_t *c, const void *head, size_t hlen,
                                 const void *body, size_t blen,
                                 size_t merge_max) {
    reel_code_t rc;

    pthread_mutex_lock(&c->mu);
    rc = send_locked(c, head, hlen, body, blen, merge_max ? merge_max : 1);
    pthread_mutex_unlock(&c->mu);
    return rc;
}

/* ---- Handoff ------------------------------------------------------------
 *
 * Other threads (the writer publishing to watchers, the keeper) hand calls
 * to the pollers to start a send (pump_pending) or run a wake hook
 * (wake_pending). A call is listed once, whatever it waits for, and one
 * empty batch at a time is out for the whole list, on the call that
 * started it. Its completion takes up to HANDOFF_CHUNK calls, posts the
 * next batch for the rest (so another poller takes them in parallel) and
 * runs what each asked for.
 *
 * Why not an empty batch per call: Debian's gRPC is built with its debug
 * checks, which look each completed tag up in a list of every tag
 * outstanding on the queue, under the queue's lock. With a stream per
 * watcher that is one pass over every open stream per watcher per write:
 * 20,000 watchers of one key cost the writer about 340 ms per write
 * (bench/ANALYSIS.md). Listed, a watcher costs the writer a push.
 */
#define HANDOFF_CHUNK 64

/* Starts the batch for the handoff on c (listed or not: c's reference in
 * the handoff is then the batch's). */
static int handoff_post_locked(rpc_call_t *c) {
    return grpc_call_start_batch(c->call, NULL, 0, &c->q->handoff.tag,
                                 NULL) == GRPC_CALL_OK
               ? 0
               : -1;
}

/*
 * Hands c to a poller to act on *flag (c's pump_pending or wake_pending):
 * sets it and lists c unless it is handed over already. -1 when gRPC
 * refused the batch (then *flag is clear and nothing is handed over).
 */
static int handoff_locked(rpc_call_t *c, int *flag) {
    handoff_t *h = &c->q->handoff;
    int post;

    *flag = 1;
    if (c->in_handoff)
        return 0;
    c->in_handoff = 1;
    c->refs++;
    pthread_mutex_lock(&h->mu);
    if ((post = h->posted_on == NULL)) {
        h->posted_on = c;
    } else {
        c->handoff_next = NULL;
        if (h->tail != NULL)
            h->tail->handoff_next = c;
        else
            h->head = c;
        h->tail = c;
    }
    pthread_mutex_unlock(&h->mu);
    if (!post || handoff_post_locked(c) == 0)
        return 0;
    /* Calls listed meanwhile wait for the keeper (handoff_kick). */
    pthread_mutex_lock(&h->mu);
    h->posted_on = NULL;
    pthread_mutex_unlock(&h->mu);
    c->in_handoff = 0;
    c->refs--;
    *flag = 0;
    return -1;
}

/* Under h->mu: takes the list's head, or NULL. */
static rpc_call_t *handoff_pop(handoff_t *h) {
    rpc_call_t *c = h->head;

    if (c != NULL && (h->head = c->handoff_next) == NULL)
        h->tail = NULL;
    return c;
}

/* Starts the batch for the listed calls if none is out; -1 when gRPC
 * refused it. No call lock held. */
static int handoff_kick(pollq_t *q) {
    handoff_t *h = &q->handoff;
    rpc_call_t *c;
    int rc;

    pthread_mutex_lock(&h->mu);
    if (h->posted_on != NULL || (c = handoff_pop(h)) == NULL) {
        pthread_mutex_unlock(&h->mu);
        return 0;
    }
    h->posted_on = c;
    pthread_mutex_unlock(&h->mu);
    pthread_mutex_lock(&c->mu);
    rc = handoff_post_locked(c);
    pthread_mutex_unlock(&c->mu);
    if (rc != 0) { /* back at the head, for the keeper's next try */
        pthread_mutex_lock(&h->mu);
        h->posted_on = NULL;
        if ((c->handoff_next = h->head) == NULL)
            h->tail = c;
        h->head = c;
        pthread_mutex_unlock(&h->mu);
    }
    return rc;
}

static void on_pump(rpc_call_t *c);
static void on_wake(rpc_call_t *c);

/* What c was handed over for; then the handoff's reference goes. */
static void handoff_run(rpc_call_t *c) {
    int pump, wake;

    pthread_mutex_lock(&c->mu);
    c->in_handoff = 0;
    pump = c->pump_pending;
    wake = c->wake_pending;
    pthread_mutex_unlock(&c->mu);
    if (pump)
        on_pump(c);
    if (wake)
        on_wake(c);
    call_unref(c);
}

static void on_handoff(pollq_t *q) {
    handoff_t *h = &q->handoff;
    rpc_call_t *take[HANDOFF_CHUNK];
    int n = 0;

    pthread_mutex_lock(&h->mu);
    take[n++] = h->posted_on;
    h->posted_on = NULL;
    while (n < HANDOFF_CHUNK && (take[n] = handoff_pop(h)) != NULL)
        n++;
    pthread_mutex_unlock(&h->mu);
    /* A refused batch leaves the rest to the keeper. */
    (void)handoff_kick(q);
    for (int i = 0; i < n; i++)
        handoff_run(take[i]);
}

static void on_pump(rpc_call_t *c) {
    rpc_drain_fn drain = NULL;
    void *drain_arg = NULL;

    pthread_mutex_lock(&c->mu);
    c->pump_pending = 0;
    pump_locked(c);
    /* Woken from the room list: the drain it waited for. */
    if (c->room_woken) {
        c->room_woken = 0;
        if (!c->send_in_flight && c->qhead == NULL && !c->finished &&
            !c->gone && c->drain_fn != NULL) {
            drain = c->drain_fn;
            drain_arg = c->drain_arg;
        }
    }
    pthread_mutex_unlock(&c->mu);
    if (drain != NULL)
        drain(c, drain_arg);
}

size_t rpc_call_queued(rpc_call_t *c) {
    size_t n;

    pthread_mutex_lock(&c->mu);
    n = c->room_wait ? c->srv->opts.stream_queue_max
                     : c->qlen + (c->send_in_flight ? 1 : 0);
    pthread_mutex_unlock(&c->mu);
    return n;
}

size_t rpc_call_queue_max(rpc_call_t *c) {
    return c->srv->opts.stream_queue_max;
}

/* Counts the call's end (its first finish only). */
static void count_call(rpc_call_t *c, reel_code_t code) {
    rpc_server_t *srv = c->srv;
    int m = c->method != NULL ? (int)(c->method - srv->methods) : MAX_METHODS;

    if ((unsigned)code >= REEL_CODE__COUNT)
        code = REEL_INTERNAL;
    atomic_fetch_add_explicit(&srv->ended[m][code], 1, memory_order_relaxed);
    if (c->method != NULL && srv->duration[m] != NULL) /* unary, metrics on */
        metrics_histogram_observe(
            srv->duration[m],
            (double)(reel_clock_mono_ns() - c->started_ns) / 1e9);
}

void rpc_call_finish(rpc_call_t *c, reel_code_t code, const char *msg,
                     const void *resp, size_t len) {
    size_t max = c->srv->opts.max_response_bytes;
    char why[256];
    int waiting;

    /* Paged reads stop before the budget and reeld refuses limits under
     * which one record could not fit, so only a record stored under
     * larger limits gets here: say so, rather than send what the client
     * would refuse with a "message larger than max" of its own. */
    if (code == REEL_OK && max > 0 && len > max) {
        snprintf(why, sizeof(why),
                 "the response would be %zu bytes, over --max-response-bytes "
                 "%zu: it holds a record stored under larger limits; restart "
                 "reeld with a larger --max-response-bytes to read it",
                 len, max);
        code = REEL_RESOURCE_EXHAUSTED;
        msg = why;
        resp = NULL;
        len = 0;
    }
    pthread_mutex_lock(&c->mu);
    if (c->finished) {
        pthread_mutex_unlock(&c->mu);
        return;
    }
    if (c->forced) {
        code = c->forced_code;
        msg = c->forced_msg;
        resp = NULL;
        len = 0;
    }
    c->finished = 1;
    /* A unary OK always carries a message, even an empty one; an OK
     * without the message it answers would read as a broken answer. */
    if (code == REEL_OK && !c->gone &&
        (resp != NULL || (c->method && c->method->kind == RPC_UNARY)) &&
        append_locked(c, resp ? resp : "", resp ? len : 0) != REEL_OK) {
        code = REEL_RESOURCE_EXHAUSTED;
        msg = "out of memory queueing the response";
    }
    count_call(c, code);
    c->code = (grpc_status_code)reel_code_grpc(code);
    c->details = grpc_slice_from_copied_string(msg ? msg
                                                   : reel_code_text(code));
    c->has_details = 1;
    pump_locked(c);
    waiting = c->room_wait;
    pthread_mutex_unlock(&c->mu);
    /* Nothing more will be sent: out of the room list. */
    if (waiting && room_take(c->srv, c)) {
        pthread_mutex_lock(&c->mu);
        c->room_wait = 0;
        pthread_mutex_unlock(&c->mu);
        call_unref(c);
    }
    call_unref(c);
}

void rpc_call_ref(rpc_call_t *c) {
    pthread_mutex_lock(&c->mu);
    c->refs++;
    pthread_mutex_unlock(&c->mu);
}

void rpc_call_unref(rpc_call_t *c) { call_unref(c); }

void rpc_call_on_cleanup(rpc_call_t *c, rpc_cleanup_fn fn, void *arg) {
    pthread_mutex_lock(&c->mu);
    c->cleanup_fn = fn;
    c->cleanup_arg = arg;
    pthread_mutex_unlock(&c->mu);
}

void rpc_call_finish_status(rpc_call_t *c, const reel_status_t *st) {
    rpc_call_finish(c, st->code, reel_status_message(st), NULL, 0);
}

void rpc_server_on_stale(rpc_server_t *srv, rpc_stale_fn fn, void *arg) {
    srv->stale_fn = fn;
    srv->stale_arg = arg;
}

void rpc_call_on_cancel(rpc_call_t *c, rpc_cancel_fn fn, void *arg) {
    rpc_server_t *srv = c->srv;
    reel_code_t why = REEL_OK;
    char stale[160];

    pthread_mutex_lock(&c->mu);
    c->cancel_fn = fn;
    c->cancel_arg = arg;
    if (!c->status_sent)
        close_post_locked(c); /* to hear of the client leaving */
    if (!c->finished && !c->cancel_fired) {
        if (c->gone)
            why = REEL_CANCELLED;
        else if (atomic_load(&srv->stopping))
            why = REEL_UNAVAILABLE;
        if (why != REEL_OK)
            c->cancel_fired = 1;
    }
    pthread_mutex_unlock(&c->mu);
    /* After the hook is set: a revocation whose rpc_server_end_calls came
     * before found none, but its token is gone from the table by then. */
    if (why == REEL_OK && srv->stale_fn != NULL && c->principal != NULL &&
        srv->stale_fn(c->principal, srv->stale_arg, stale, sizeof(stale))) {
        char *m = strdup(stale);

        pthread_mutex_lock(&c->mu);
        if (!c->finished && !c->cancel_fired) {
            c->cancel_fired = 1;
            c->forced = 1;
            c->forced_code = REEL_UNAUTHENTICATED;
            c->forced_msg = m; /* NULL: the code's own text */
            m = NULL;
            why = REEL_UNAUTHENTICATED;
        }
        pthread_mutex_unlock(&c->mu);
        free(m);
    }
    if (why != REEL_OK)
        fn(c, arg, why);
}

void rpc_call_on_drain(rpc_call_t *c, rpc_drain_fn fn, void *arg) {
    pthread_mutex_lock(&c->mu);
    c->drain_fn = fn;
    c->drain_arg = arg;
    pthread_mutex_unlock(&c->mu);
}

void rpc_call_wake(rpc_call_t *c, rpc_wake_fn fn, void *arg) {
    pthread_mutex_lock(&c->mu);
    c->wake_fn = fn;
    c->wake_arg = arg;
    if (!c->finished && !c->wake_pending)
        handoff_locked(c, &c->wake_pending);
    pthread_mutex_unlock(&c->mu);
}

static void on_wake(rpc_call_t *c) {
    rpc_wake_fn fn;
    void *arg;

    pthread_mutex_lock(&c->mu);
    c->wake_pending = 0;
    fn = c->finished ? NULL : c->wake_fn;
    arg = c->wake_arg;
    pthread_mutex_unlock(&c->mu);
    if (fn != NULL)
        fn(c, arg);
}

reel_code_t rpc_call_read(rpc_call_t *c, rpc_read_fn fn, void *arg) {
    grpc_op op;
    reel_code_t rc = REEL_OK;

    memset(&op, 0, sizeof(op));
    op.op = GRPC_OP_RECV_MESSAGE;
    op.data.recv_message.recv_message = &c->recv_buf;
    pthread_mutex_lock(&c->mu);
    if (c->read_pending) {
        rc = REEL_FAILED_PRECONDITION;
    } else if (c->gone || c->finished) {
        rc = REEL_CANCELLED;
    } else {
        c->read_fn = fn;
        c->read_arg = arg;
        c->read_pending = 1;
        c->refs++;
        if (grpc_call_start_batch(c->call, &op, 1, &c->tag_recv, NULL) !=
            GRPC_CALL_OK) {
            c->read_pending = 0;
            c->refs--;
            rc = REEL_CANCELLED;
        }
    }
    pthread_mutex_unlock(&c->mu);
    return rc;
}

static void on_recv(rpc_call_t *c, int success) {
    grpc_byte_buffer *buf;
    rpc_read_fn fn;
    void *arg;

    pthread_mutex_lock(&c->mu);
    c->read_pending = 0;
    buf = c->recv_buf;
    c->recv_buf = NULL;
    fn = c->read_fn;
    arg = c->read_arg;
    pthread_mutex_unlock(&c->mu);
    if (!success) {
        fn(c, arg, REEL_CANCELLED, NULL, 0);
    } else if (buf == NULL) {
        /* No more messages: the client's graceful end of its stream, or a
         * stream that broke (cancelled, past its deadline, its connection
         * gone), which reads the same way. Only the first is an end: an
         * upload the client abandoned must not be committed as if it were
         * whole. */
        fn(c, arg,
           grpc_call_failed_before_recv_message(c->call) ? REEL_CANCELLED
                                                         : REEL_OK,
           NULL, 0);
    } else {
        grpc_byte_buffer_reader r;
        grpc_slice body = grpc_empty_slice();

        if (grpc_byte_buffer_reader_init(&r, buf)) {
            body = grpc_byte_buffer_reader_readall(&r);
            grpc_byte_buffer_reader_destroy(&r);
            /* Never NULL for a message, even an empty one. */
            fn(c, arg, REEL_OK,
               GRPC_SLICE_LENGTH(body) ? GRPC_SLICE_START_PTR(body)
                                       : (const uint8_t *)"",
               GRPC_SLICE_LENGTH(body));
            grpc_slice_unref(body);
        } else {
            fn(c, arg, REEL_CANCELLED, NULL, 0);
        }
    }
    if (buf != NULL)
        grpc_byte_buffer_destroy(buf);
    call_unref(c);
}

int rpc_call_is_cancelled(rpc_call_t *c) {
    int r;

    pthread_mutex_lock(&c->mu);
    r = c->gone || atomic_load(&c->srv->stopping);
    pthread_mutex_unlock(&c->mu);
    return r;
}

int64_t rpc_call_deadline_ns(rpc_call_t *c) { return c->deadline_ns; }

int64_t rpc_call_wait_until_ns(rpc_call_t *c, int64_t wait_ms) {
    int64_t now = reel_clock_mono_ns(), until, tail;

    if (wait_ms <= 0)
        return 0;
    until = now + wait_ms * 1000000LL;
    if (c->deadline_ns != INT64_MAX) {
        tail = (c->deadline_ns - now) / 10;
        if (tail > RPC_DEADLINE_TAIL_MS * 1000000LL)
            tail = RPC_DEADLINE_TAIL_MS * 1000000LL;
        if (c->deadline_ns - tail < until)
            until = c->deadline_ns - tail;
    }
    return until > now ? until : 0;
}

const char *rpc_call_method(rpc_call_t *c) { return c->path; }

const void *rpc_call_principal(rpc_call_t *c) { return c->principal; }

const rpc_method_t *rpc_server_methods(rpc_server_t *srv, size_t *n) {
    *n = (size_t)srv->n_methods;
    return srv->methods;
}

size_t rpc_server_end_calls(rpc_server_t *srv, rpc_match_fn match, void *arg,
                            reel_code_t code, const char *msg) {
    rpc_call_t **hit = NULL;
    size_t n = 0, cap = 0, ended = 0;

    /* Take a reference on each matching call under the server's lock, so
     * none is freed while its hook runs outside it. */
    pthread_mutex_lock(&srv->mu);
    for (rpc_call_t *c = srv->calls; c != NULL; c = c->next) {
        pthread_mutex_lock(&c->mu);
        if (c->refs > 0 && !c->finished && !c->cancel_fired &&
            c->cancel_fn != NULL && match(c->principal, arg)) {
            if (n == cap) {
                size_t ncap = cap ? cap * 2 : 16;
                rpc_call_t **nl = realloc(hit, ncap * sizeof(*nl));

                if (nl == NULL) {
                    pthread_mutex_unlock(&c->mu);
                    break;
                }
                hit = nl;
                cap = ncap;
            }
            c->refs++;
            hit[n++] = c;
        }
        pthread_mutex_unlock(&c->mu);
    }
    pthread_mutex_unlock(&srv->mu);

    for (size_t i = 0; i < n; i++) {
        rpc_call_t *c = hit[i];
        rpc_cancel_fn fn = NULL;
        void *carg = NULL;
        char *m = strdup(msg);

        pthread_mutex_lock(&c->mu);
        if (!c->finished && !c->cancel_fired && c->cancel_fn != NULL &&
            m != NULL) {
            c->cancel_fired = 1;
            c->forced = 1;
            c->forced_code = code;
            c->forced_msg = m;
            m = NULL;
            fn = c->cancel_fn;
            carg = c->cancel_arg;
        }
        pthread_mutex_unlock(&c->mu);
        free(m);
        if (fn != NULL) {
            fn(c, carg, code);
            ended++;
        }
        call_unref(c);
    }
    free(hit);
    return ended;
}

/* ---- New calls ---------------------------------------------------------- */

static int post_request(pollq_t *q, int method);

/* post_request(), or owed to the keeper when it fails while serving. */
static void post_or_owe(pollq_t *q, int method) {
    if (post_request(q, method) != 0 && !atomic_load(&q->srv->stopping))
        atomic_fetch_add(&q->owed[method + 1], 1);
}

/* The keeper's: posts what post_or_owe could not. */
static void repay(rpc_server_t *srv) {
    for (int i = 0; i < srv->n_qs; i++) {
        pollq_t *q = &srv->qs[i];

        for (int m = 0; m <= MAX_METHODS; m++)
            while (atomic_load(&q->owed[m]) > 0 &&
                   post_request(q, m - 1) == 0)
                atomic_fetch_sub(&q->owed[m], 1);
    }
}

static char *slice_to_str(grpc_slice s) {
    size_t n = GRPC_SLICE_LENGTH(s);
    char *p = malloc(n + 1);

    if (p != NULL) {
        memcpy(p, GRPC_SLICE_START_PTR(s), n);
        p[n] = '\0';
    }
    return p;
}

/* The authorize hook on the call's "authorization" metadata: the first,
 * and how many the client sent. */
static reel_code_t authorize(rpc_server_t *srv, rpc_call_t *c,
                             reel_status_t *st) {
    const char *val = NULL;
    size_t len = 0, sent = 0;
    reel_code_t rc;

    for (size_t i = 0; i < c->md.count; i++) {
        grpc_slice k = c->md.metadata[i].key;

        if (GRPC_SLICE_LENGTH(k) == 13 &&
            memcmp(GRPC_SLICE_START_PTR(k), "authorization", 13) == 0 &&
            sent++ == 0) {
            val = (const char *)GRPC_SLICE_START_PTR(c->md.metadata[i].value);
            len = GRPC_SLICE_LENGTH(c->md.metadata[i].value);
        }
    }
    rc = srv->opts.authorize(srv->opts.authorize_arg, c->path, val, len,
                             sent, &c->principal, st);
    if (rc != REEL_OK)
        return rc;
    if (srv->opts.share_of != NULL)
        c->share = srv->opts.share_of(srv->opts.authorize_arg, c->principal);
    return REEL_OK;
}

/* Served past max_calls: an orchestrator's probe must not read a busy
 * server as a dead one. */
#define HEALTH_CHECK "/grpc.health.v1.Health/Check"

static void on_new_call(rpc_server_t *srv, pending_t *p, int success) {
    rpc_call_t *c;
    grpc_slice body = grpc_empty_slice();
    reel_status_t bad = REEL_STATUS_INIT;
    int have_body = 0;
    size_t open_calls;

    if (!success) {
        /* The server is shutting down: the request was never matched. */
        grpc_metadata_array_destroy(&p->md);
        grpc_call_details_destroy(&p->details);
        free(p);
        return;
    }
    post_or_owe(p->q, p->method);

    c = calloc(1, sizeof(*c));
    if (c == NULL) {
        grpc_call_cancel_with_status(p->call, GRPC_STATUS_RESOURCE_EXHAUSTED,
                                     "out of memory", NULL);
        grpc_call_unref(p->call);
        if (p->payload)
            grpc_byte_buffer_destroy(p->payload);
        grpc_metadata_array_destroy(&p->md);
        grpc_call_details_destroy(&p->details);
        free(p);
        return;
    }
    c->srv = srv;
    c->q = p->q;
    c->call = p->call;
    c->md = p->md;
    c->started_ns = reel_clock_mono_ns();
    pthread_mutex_init(&c->mu, NULL);
    c->refs = 2; /* the handler's and the RECV_CLOSE batch's */
    c->tag_close = (rpc_tag_t){TAG_CLOSE, c};
    c->tag_send = (rpc_tag_t){TAG_SEND, c};
    c->tag_recv = (rpc_tag_t){TAG_RECV, c};
    if (p->method >= 0) {
        c->method = &srv->methods[p->method];
        c->path = strdup(c->method->path);
        c->deadline_ns = timespec_to_mono_ns(p->deadline);
    } else {
        c->path = slice_to_str(p->details.method);
        c->deadline_ns = timespec_to_mono_ns(p->details.deadline);
    }
    grpc_call_details_destroy(&p->details);

    pthread_mutex_lock(&srv->mu);
    c->next = srv->calls;
    if (srv->calls)
        srv->calls->prev = c;
    srv->calls = c;
    open_calls = srv->n_calls++; /* besides this one */
    pthread_mutex_unlock(&srv->mu);

    if (c->method != NULL && c->method->kind != RPC_UNARY) {
        pthread_mutex_lock(&c->mu);
        close_post_locked(c);
        pthread_mutex_unlock(&c->mu);
    }

    if (p->payload != NULL) {
        grpc_byte_buffer_reader r;

        if (grpc_byte_buffer_reader_init(&r, p->payload)) {
            body = grpc_byte_buffer_reader_readall(&r);
            grpc_byte_buffer_reader_destroy(&r);
            have_body = 1;
        }
        grpc_byte_buffer_destroy(p->payload);
    }
    free(p);

    if (srv->opts.max_calls > 0 && open_calls >= srv->opts.max_calls &&
        (c->path == NULL || strcmp(c->path, HEALTH_CHECK) != 0)) {
        char msg[256];

        snprintf(msg, sizeof(msg),
                 "reeld has %zu calls open, at most %zu (--max-calls): end "
                 "streams or long polls no longer read",
                 open_calls, srv->opts.max_calls);
        rpc_call_finish(c, REEL_RESOURCE_EXHAUSTED, msg, NULL, 0);
    } else if (c->method != NULL && srv->opts.authorize != NULL &&
               authorize(srv, c, &bad) != REEL_OK) {
        rpc_call_finish_status(c, &bad);
        reel_status_fini(&bad);
    } else if (c->method == NULL) {
        char msg[512];

        snprintf(msg, sizeof(msg), "unknown method %s", c->path);
        REEL_DEBUG("rpc", "%s", msg);
        rpc_call_finish(c, REEL_UNIMPLEMENTED, msg, NULL, 0);
    } else if (c->method->kind == RPC_CLIENT_STREAM) {
        /* Its messages are read one at a time (rpc_call_read). */
        c->method->handler(c, c->method->ctx, NULL, 0);
    } else if (!have_body) {
        rpc_call_finish(c, REEL_INVALID_ARGUMENT,
                        "request: no request message was sent", NULL, 0);
    } else if (c->method->input != NULL &&
               api_wire_check(c->method->input, GRPC_SLICE_START_PTR(body),
                              GRPC_SLICE_LENGTH(body), &bad) != REEL_OK) {
        rpc_call_finish_status(c, &bad);
        reel_status_fini(&bad);
    } else {
        c->method->handler(c, c->method->ctx, GRPC_SLICE_START_PTR(body),
                           GRPC_SLICE_LENGTH(body));
    }
    if (have_body)
        grpc_slice_unref(body);
}

static int post_request(pollq_t *q, int method) {
    rpc_server_t *srv = q->srv;
    pending_t *p;
    grpc_call_error err;

    if (atomic_load(&srv->stopping))
        return -1;
    p = REEL_FAULT("api.post_request") ? NULL : calloc(1, sizeof(*p));
    if (p == NULL)
        return -1;
    p->tag = (rpc_tag_t){TAG_NEW_CALL, p};
    p->q = q;
    p->method = method;
    grpc_metadata_array_init(&p->md);
    grpc_call_details_init(&p->details);
    if (method >= 0)
        err = grpc_server_request_registered_call(
            srv->server, srv->registered[method], &p->call, &p->deadline,
            &p->md,
            /* gRPC insists: no payload pointer for a method that reads
             * none at the start. */
            srv->methods[method].kind == RPC_CLIENT_STREAM ? NULL
                                                           : &p->payload,
            q->cq, q->cq, &p->tag);
    else
        err = grpc_server_request_call(srv->server, &p->call, &p->details,
                                       &p->md, q->cq, q->cq, &p->tag);
    if (err != GRPC_CALL_OK) {
        grpc_metadata_array_destroy(&p->md);
        grpc_call_details_destroy(&p->details);
        free(p);
        return -1;
    }
    return 0;
}

/* ---- TLS ---------------------------------------------------------------- */

/* The whole of path, NUL-terminated, into *out (malloc'd). */
static reel_code_t tls_read_file(const char *flag, const char *path,
                                 char **out, reel_status_t *st) {
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    size_t n = 0;
    reel_code_t rc = REEL_OK;

    *out = NULL;
    if (f == NULL)
        return reel_status_set(st, REEL_INVALID_ARGUMENT, "%s %s: cannot open: %s",
                               flag, path, strerror(errno));
    if ((buf = malloc(TLS_FILE_MAX + 1)) == NULL) {
        rc = reel_status_set(st, REEL_RESOURCE_EXHAUSTED, "out of memory");
        goto out;
    }
    n = fread(buf, 1, TLS_FILE_MAX + 1, f);
    if (ferror(f)) {
        rc = reel_status_set(st, REEL_INVALID_ARGUMENT, "%s %s: cannot read",
                             flag, path);
        goto out;
    }
    if (n > TLS_FILE_MAX) {
        rc = reel_status_set(st, REEL_INVALID_ARGUMENT,
                             "%s %s: larger than the limit of %u bytes", flag,
                             path, TLS_FILE_MAX);
        goto out;
    }
    buf[n] = '\0';
    *out = buf;
    buf = NULL;
out:
    free(buf);
    fclose(f);
    return rc;
}

/* t as "2020-01-02 00:00:00 UTC". */
static void tls_time(const ASN1_TIME *t, char *buf, size_t cap) {
    struct tm tm;

    if (ASN1_TIME_to_tm(t, &tm) != 1 ||
        strftime(buf, cap, "%Y-%m-%d %H:%M:%S UTC", &tm) == 0)
        snprintf(buf, cap, "(a date that does not read)");
}

/*
 * OK when x is valid now; otherwise INVALID_ARGUMENT naming the file and
 * the date: every handshake would fail on it.
 */
static reel_code_t tls_check_dates(const char *flag, const char *path,
                                   const char *which, X509 *x,
                                   reel_status_t *st) {
    char when[64];

    if (X509_cmp_current_time(X509_get0_notAfter(x)) <= 0) {
        tls_time(X509_get0_notAfter(x), when, sizeof(when));
        return reel_status_set(st, REEL_INVALID_ARGUMENT,
                               "%s %s: %s expired (not after %s)", flag, path,
                               which, when);
    }
    if (X509_cmp_current_time(X509_get0_notBefore(x)) >= 0) {
        tls_time(X509_get0_notBefore(x), when, sizeof(when));
        return reel_status_set(st, REEL_INVALID_ARGUMENT,
                               "%s %s: %s is not valid yet (not before %s)",
                               flag, path, which, when);
    }
    return REEL_OK;
}

/*
 * Every PEM block of a certificate file reads as a certificate: a good
 * first one and a damaged second (a chain cut short, two files run
 * together) would pass a check of the first alone and fail at clients'
 * handshakes. Text outside the blocks is fine, as OpenSSL reads it.
 */
static reel_code_t tls_check_blocks(const char *flag, const char *path,
                                    const char *pem, reel_status_t *st) {
    BIO *b = BIO_new_mem_buf(pem, -1);
    X509 *c;
    unsigned long e;
    int n = 0;

    if (b == NULL)
        return reel_status_set(st, REEL_RESOURCE_EXHAUSTED, "out of memory");
    ERR_clear_error();
    while ((c = PEM_read_bio_X509(b, NULL, NULL, NULL)) != NULL) {
        n++;
        X509_free(c);
    }
    e = ERR_peek_last_error();
    BIO_free(b);
    ERR_clear_error();
    if (e == 0 || (ERR_GET_LIB(e) == ERR_LIB_PEM &&
                   ERR_GET_REASON(e) == PEM_R_NO_START_LINE))
        return REEL_OK; /* the end: no further block */
    return reel_status_set(st, REEL_INVALID_ARGUMENT,
                           "%s %s: PEM block %d is not a valid certificate "
                           "(%d read before it)",
                           flag, path, n + 1, n);
}

/*
 * The client CA file: one certificate or more, each a CA (a leaf there
 * would make every client's certificate fail to verify), and at least one
 * valid now.
 */
static reel_code_t tls_check_ca(const char *path, const char *ca,
                                reel_status_t *st) {
    BIO *b = BIO_new_mem_buf(ca, -1);
    X509 *c;
    int n = 0, live = 0;
    reel_code_t rc = tls_check_blocks("--tls-client-ca", path, ca, st);

    while (b != NULL && rc == REEL_OK &&
           (c = PEM_read_bio_X509(b, NULL, NULL, NULL)) != NULL) {
        n++;
        if (X509_check_ca(c) == 0)
            rc = reel_status_set(st, REEL_INVALID_ARGUMENT,
                                 "--tls-client-ca %s: certificate %d is not "
                                 "a CA's (no basicConstraints CA:TRUE): "
                                 "give the CA that signs the clients' "
                                 "certificates",
                                 path, n);
        else if (X509_cmp_current_time(X509_get0_notAfter(c)) > 0 &&
                 X509_cmp_current_time(X509_get0_notBefore(c)) < 0)
            live++;
        X509_free(c);
    }
    if (rc == REEL_OK && n == 0)
        rc = reel_status_set(st, REEL_INVALID_ARGUMENT,
                             "--tls-client-ca %s: no PEM certificate in it",
                             path);
    else if (rc == REEL_OK && live == 0)
        rc = reel_status_set(st, REEL_INVALID_ARGUMENT,
                             "--tls-client-ca %s: no certificate in it is "
                             "valid now (expired, or not valid yet)",
                             path);
    BIO_free(b);
    return rc;
}

/*
 * Checks the PEM texts the way the handshake will use them, so a bad file
 * is an error now (at start, or on SIGHUP) rather than at each client's
 * handshake. The key itself never goes into a message.
 */
/* OpenSSL's passphrase callback: none. With NULL it would ask the terminal,
 * and a SIGHUP's reload would wait there for ever. */
static int no_passphrase(char *buf, int size, int rwflag, void *u) {
    (void)buf, (void)size, (void)rwflag, (void)u;
    return -1;
}

static reel_code_t tls_check(const rpc_server_t *srv, const char *cert,
                             const char *key, const char *ca,
                             reel_status_t *st) {
    BIO *b = NULL;
    X509 *x = NULL;
    EVP_PKEY *k = NULL;
    reel_code_t rc;

    if ((rc = tls_check_blocks("--tls-cert", srv->tls_cert, cert, st)) !=
        REEL_OK)
        return rc;
    b = BIO_new_mem_buf(cert, -1);
    if (b == NULL || (x = PEM_read_bio_X509(b, NULL, NULL, NULL)) == NULL) {
        rc = reel_status_set(st, REEL_INVALID_ARGUMENT,
                             "--tls-cert %s: no PEM certificate in it",
                             srv->tls_cert);
        goto out;
    }
    BIO_free(b);
    b = BIO_new_mem_buf(key, -1);
    if (b == NULL ||
        (k = PEM_read_bio_PrivateKey(b, NULL, no_passphrase, NULL)) == NULL) {
        rc = reel_status_set(st, REEL_INVALID_ARGUMENT,
                             "--tls-key %s: no PEM private key in it (an "
                             "encrypted key is not supported)",
                             srv->tls_key);
        goto out;
    }
    if (X509_check_private_key(x, k) != 1) {
        rc = reel_status_set(st, REEL_INVALID_ARGUMENT,
                             "--tls-key %s does not match the certificate of "
                             "--tls-cert %s",
                             srv->tls_key, srv->tls_cert);
        goto out;
    }
    if ((rc = tls_check_dates("--tls-cert", srv->tls_cert,
                              "the certificate", x, st)) != REEL_OK)
        goto out;
    /* Not a server's certificate (its extendedKeyUsage, nsCertType or
     * keyUsage rules that out): every client's handshake would refuse it,
     * by this very check (OpenSSL's "sslserver" purpose). The easy way
     * there: reelctl reads its client certificate from REEL_TLS_CERT too,
     * so reeld started from a shell set up for reelctl serves the
     * client's. */
    if (X509_check_purpose(x, X509_PURPOSE_SSL_SERVER, 0) != 1) {
        rc = reel_status_set(st, REEL_INVALID_ARGUMENT,
                             "--tls-cert %s: not a server's certificate "
                             "(its extendedKeyUsage, nsCertType or keyUsage "
                             "excludes TLS servers: a client's?), which "
                             "clients refuse from a server: give reeld its "
                             "server certificate (REEL_TLS_CERT and "
                             "REEL_TLS_KEY also name reelctl's client "
                             "certificate)",
                             srv->tls_cert);
        goto out;
    }
    if (ca != NULL)
        rc = tls_check_ca(srv->tls_client_ca, ca, st);
out:
    ERR_clear_error();
    EVP_PKEY_free(k);
    X509_free(x);
    BIO_free(b);
    return rc;
}

/* Reads and checks the TLS files into a new config. */
static reel_code_t tls_load(const rpc_server_t *srv,
                            grpc_ssl_server_certificate_config **out,
                            reel_status_t *st) {
    char *cert = NULL, *key = NULL, *ca = NULL;
    grpc_ssl_pem_key_cert_pair pair;
    reel_code_t rc;

    *out = NULL;
    if ((rc = tls_read_file("--tls-cert", srv->tls_cert, &cert, st)) !=
            REEL_OK ||
        (rc = tls_read_file("--tls-key", srv->tls_key, &key, st)) != REEL_OK)
        goto out;
    if (srv->tls_client_ca != NULL &&
        (rc = tls_read_file("--tls-client-ca", srv->tls_client_ca, &ca,
                            st)) != REEL_OK)
        goto out;
    if ((rc = tls_check(srv, cert, key, ca, st)) != REEL_OK)
        goto out;
    pair.private_key = key;
    pair.cert_chain = cert;
    /* gRPC copies the texts. Its fetcher path asserts that a config has
     * root certificates even when client certificates are not requested
     * (and so never checked against them): the server's own chain stands
     * in then. */
    *out = grpc_ssl_server_certificate_config_create(ca ? ca : cert, &pair,
                                                     1);
    if (*out == NULL)
        rc = reel_status_set(st, REEL_INTERNAL,
                             "gRPC refused the TLS certificate config");
out:
    if (key != NULL) /* wipe the private key's copy */
        memset(key, 0, strlen(key));
    free(cert);
    free(key);
    free(ca);
    return rc;
}

/* gRPC's config fetcher: at each new connection's handshake. */
static grpc_ssl_certificate_config_reload_status
tls_fetch(void *arg, grpc_ssl_server_certificate_config **config) {
    rpc_server_t *srv = arg;
    grpc_ssl_certificate_config_reload_status r =
        GRPC_SSL_CERTIFICATE_CONFIG_RELOAD_UNCHANGED;

    pthread_mutex_lock(&srv->tls_mu);
    if (srv->tls_next != NULL) {
        *config = srv->tls_next; /* gRPC owns it now */
        srv->tls_next = NULL;
        r = GRPC_SSL_CERTIFICATE_CONFIG_RELOAD_NEW;
    }
    pthread_mutex_unlock(&srv->tls_mu);
    return r;
}

reel_code_t rpc_server_reload_tls(rpc_server_t *srv, reel_status_t *st) {
    grpc_ssl_server_certificate_config *cfg;
    reel_code_t rc;

    if (srv->tls_cert == NULL)
        return reel_status_set(st, REEL_FAILED_PRECONDITION,
                               "the server has no TLS (--tls-cert)");
    if ((rc = tls_load(srv, &cfg, st)) != REEL_OK)
        return rc;
    pthread_mutex_lock(&srv->tls_mu);
    if (srv->tls_next != NULL)
        grpc_ssl_server_certificate_config_destroy(srv->tls_next);
    srv->tls_next = cfg;
    pthread_mutex_unlock(&srv->tls_mu);
    return REEL_OK;
}

/* The port's credentials: insecure, or TLS through tls_fetch. */
static reel_code_t server_creds(rpc_server_t *srv,
                                grpc_server_credentials **out,
                                reel_status_t *st) {
    grpc_ssl_server_credentials_options *o;
    reel_code_t rc;

    *out = NULL;
    if (srv->tls_cert == NULL) {
        *out = grpc_insecure_server_credentials_create();
        return REEL_OK;
    }
    if ((rc = rpc_server_reload_tls(srv, st)) != REEL_OK)
        return rc;
    o = grpc_ssl_server_credentials_create_options_using_config_fetcher(
        srv->tls_client_ca != NULL
            ? GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY
            : GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE,
        tls_fetch, srv);
    if (o == NULL || (*out = grpc_ssl_server_credentials_create_with_options(
                          o)) == NULL)
        return reel_status_set(st, REEL_INTERNAL,
                               "gRPC refused the TLS credentials");
    return REEL_OK;
}

/* ---- The server --------------------------------------------------------- */

/*
 * The keeper: once a second, room_evict(), room_wake() and trim_after(). A
 * thread of its own, not a poller with a deadline: a poller's finite
 * deadline changed how gRPC polls and cost set@64 about a tenth more CPU
 * per call (measured: bench/ANALYSIS.md).
 */
static void *keeper_main(void *arg) {
    rpc_server_t *srv = arg;
    struct timespec t;

    pthread_mutex_lock(&srv->keeper_mu);
    while (!srv->keeper_stop) {
        t = reel_clock_mono_after(1000);
        pthread_cond_timedwait(&srv->keeper_cv, &srv->keeper_mu, &t);
        if (srv->keeper_stop)
            break;
        pthread_mutex_unlock(&srv->keeper_mu);
        room_evict(srv);
        room_wake(srv); /* room freed where no send completed (a finish) */
        for (int i = 0; i < srv->n_qs; i++) /* after a refused batch */
            (void)handoff_kick(&srv->qs[i]);
        repay(srv);
        trim_after(srv);
        pthread_mutex_lock(&srv->keeper_mu);
    }
    pthread_mutex_unlock(&srv->keeper_mu);
    return NULL;
}

static void keeper_stop(rpc_server_t *srv) {
    if (!srv->keeper_started)
        return;
    pthread_mutex_lock(&srv->keeper_mu);
    srv->keeper_stop = 1;
    pthread_cond_signal(&srv->keeper_cv);
    pthread_mutex_unlock(&srv->keeper_mu);
    pthread_join(srv->keeper, NULL);
    srv->keeper_started = 0;
}

static void *poller_main(void *arg) {
    pollq_t *q = arg;
    rpc_server_t *srv = q->srv;

    on_poller = 1;
    for (;;) {
        grpc_event ev = grpc_completion_queue_next(
            q->cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
        rpc_tag_t *tag;

        if (ev.type == GRPC_QUEUE_SHUTDOWN)
            break;
        if (ev.type != GRPC_OP_COMPLETE)
            continue;
        tag = ev.tag;
        switch (tag->kind) {
        case TAG_NEW_CALL:
            on_new_call(srv, tag->ptr, ev.success);
            break;
        case TAG_CLOSE:
            on_close(tag->ptr);
            break;
        case TAG_SEND:
            on_send_done(tag->ptr, ev.success);
            break;
        case TAG_HANDOFF:
            on_handoff(tag->ptr);
            break;
        case TAG_RECV:
            on_recv(tag->ptr, ev.success);
            break;
        case TAG_SHUTDOWN:
            pthread_mutex_lock(&srv->mu);
            srv->shutdown_done = 1;
            pthread_cond_broadcast(&srv->cv);
            pthread_mutex_unlock(&srv->mu);
            break;
        }
    }
    return NULL;
}

rpc_server_t *rpc_server_create(const rpc_server_opts_t *opts) {
    rpc_server_t *srv = calloc(1, sizeof(*srv));

    if (srv == NULL)
        return NULL;
    srv->opts = *opts;
    if (srv->opts.threads <= 0)
        srv->opts.threads = DEFAULT_THREADS;
    if ((srv->qs = calloc((size_t)srv->opts.threads + 1, sizeof(*srv->qs))) ==
        NULL) {
        free(srv);
        return NULL;
    }
    srv->n_qs = 1 + srv->opts.threads;
    if ((srv->threads = calloc((size_t)srv->opts.threads * 2,
                               sizeof(*srv->threads))) == NULL) {
        free(srv->qs);
        free(srv);
        return NULL;
    }
    for (int i = 0; i < srv->n_qs; i++) {
        srv->qs[i].srv = srv;
        pthread_mutex_init(&srv->qs[i].handoff.mu, NULL);
        srv->qs[i].handoff.tag = (rpc_tag_t){TAG_HANDOFF, &srv->qs[i]};
    }
    if (srv->opts.max_message_bytes == 0)
        srv->opts.max_message_bytes = DEFAULT_MAX_MESSAGE;
    if (srv->opts.stream_queue_max == 0)
        srv->opts.stream_queue_max = DEFAULT_STREAM_QUEUE;
    if (srv->opts.stream_queue_bytes == 0)
        srv->opts.stream_queue_bytes = DEFAULT_STREAM_BYTES;
    if (srv->opts.stream_queue_total == 0)
        srv->opts.stream_queue_total = DEFAULT_STREAM_TOTAL;
    if (srv->opts.stream_queue_share == 0)
        srv->opts.stream_queue_share = srv->opts.stream_queue_total / 4;
    if (srv->opts.keepalive_time_ms <= 0)
        srv->opts.keepalive_time_ms = DEFAULT_KEEPALIVE_TIME_MS;
    if (srv->opts.keepalive_timeout_ms <= 0)
        srv->opts.keepalive_timeout_ms = DEFAULT_KEEPALIVE_TIMEOUT_MS;
    srv->listen = strdup(opts->listen ? opts->listen : "127.0.0.1:7878");
    srv->opts.listen = srv->listen;
    if (opts->tls_cert != NULL && *opts->tls_cert) {
        srv->tls_cert = strdup(opts->tls_cert);
        srv->tls_key = strdup(opts->tls_key ? opts->tls_key : "");
        if (opts->tls_client_ca != NULL && *opts->tls_client_ca)
            srv->tls_client_ca = strdup(opts->tls_client_ca);
    }
    srv->opts.tls_cert = srv->opts.tls_key = srv->opts.tls_client_ca = NULL;
    pthread_mutex_init(&srv->tls_mu, NULL);
    pthread_mutex_init(&srv->mu, NULL);
    pthread_mutex_init(&srv->room_mu, NULL);
    pthread_mutex_init(&srv->keeper_mu, NULL);
    reel_cond_init_mono(&srv->keeper_cv);
    reel_cond_init_mono(&srv->cv);
    srv->shutdown_tag = (rpc_tag_t){TAG_SHUTDOWN, srv};
    return srv;
}

int rpc_server_add_method(rpc_server_t *srv, const rpc_method_t *m) {
    if (srv->bound || srv->n_methods == MAX_METHODS)
        return -1;
    srv->methods[srv->n_methods++] = *m;
    return 0;
}

static reel_code_t register_metrics(rpc_server_t *srv, reel_status_t *st);

reel_code_t rpc_server_bind(rpc_server_t *srv, reel_status_t *st) {
    grpc_arg args[6];
    grpc_channel_args chargs;
    grpc_server_credentials *creds;
    reel_code_t rc;

    if (srv->bound)
        return REEL_OK;
    /* Vanished clients of long streams are found by keepalive pings: no
     * answer within the timeout closes the connection, and its calls end
     * (cancelled). A peer that stopped reading while data waits (a
     * stopped process) fills the socket, and the ping cannot go out
     * behind it; gRPC also sets TCP_USER_TIMEOUT to the keepalive timeout
     * on each connection, and Linux then drops one whose receive window
     * stays closed that long (tests/e2e/test_wal_retention.py checks
     * both). */
    args[0] = (grpc_arg){.type = GRPC_ARG_INTEGER,
                         .key = GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH,
                         .value.integer = (int)srv->opts.max_message_bytes};
    args[1] = (grpc_arg){.type = GRPC_ARG_INTEGER,
                         .key = GRPC_ARG_KEEPALIVE_TIME_MS,
                         .value.integer = srv->opts.keepalive_time_ms};
    args[2] = (grpc_arg){.type = GRPC_ARG_INTEGER,
                         .key = GRPC_ARG_KEEPALIVE_TIMEOUT_MS,
                         .value.integer = srv->opts.keepalive_timeout_ms};
    args[3] = (grpc_arg){.type = GRPC_ARG_INTEGER,
                         .key = GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA,
                         .value.integer = 0};
    args[4] = (grpc_arg){.type = GRPC_ARG_INTEGER,
                         .key = GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS,
                         .value.integer = 1};
    /* gRPC sets SO_REUSEPORT by default: a second reeld would then share
     * the port and split the traffic instead of failing to start. */
    args[5] = (grpc_arg){.type = GRPC_ARG_INTEGER,
                         .key = GRPC_ARG_ALLOW_REUSEPORT,
                         .value.integer = 0};
    chargs.num_args = 6;
    chargs.args = args;

    srv->server = grpc_server_create(&chargs, NULL);
    for (int i = 0; i < srv->n_qs; i++) {
        grpc_completion_queue_attributes attr = {
            GRPC_CQ_CURRENT_VERSION, GRPC_CQ_NEXT,
            i == 0 ? GRPC_CQ_DEFAULT_POLLING : GRPC_CQ_NON_POLLING, NULL};

        srv->qs[i].cq = grpc_completion_queue_create(
            grpc_completion_queue_factory_lookup(&attr), &attr, NULL);
        grpc_server_register_completion_queue(srv->server, srv->qs[i].cq,
                                              NULL);
    }
    for (int i = 0; i < srv->n_methods; i++) {
        srv->registered[i] = grpc_server_register_method(
            srv->server, srv->methods[i].path, NULL,
            srv->methods[i].kind == RPC_CLIENT_STREAM
                ? GRPC_SRM_PAYLOAD_NONE
                : GRPC_SRM_PAYLOAD_READ_INITIAL_BYTE_BUFFER,
            0);
        if (srv->registered[i] == NULL)
            return reel_status_set(st, REEL_INTERNAL,
                                   "cannot register method %s",
                                   srv->methods[i].path);
    }
    /* gRPC binds and listens here; it accepts nothing before start. */
    if ((rc = server_creds(srv, &creds, st)) != REEL_OK)
        return rc;
    srv->port = grpc_server_add_http2_port(srv->server, srv->listen, creds);
    grpc_server_credentials_release(creds);
    if (srv->port == 0)
        return reel_status_set(st, REEL_UNAVAILABLE,
                               "cannot listen on %s (address in use or "
                               "invalid)",
                               srv->listen);
    /* The methods are fixed now: their figures can be registered, so
     * /metrics is whole before the first call is accepted. */
    if ((rc = register_metrics(srv, st)) != REEL_OK)
        return rc;
    srv->bound = 1;
    return REEL_OK;
}

/* ---- Metrics ------------------------------------------------------------ */

/* "/reel.v1.KV/SetValue" -> service "reel.v1.KV", method "SetValue". */
static void split_path(const char *path, char *service, size_t scap,
                       const char **method) {
    const char *slash = strrchr(path, '/');
    const char *start = path[0] == '/' ? path + 1 : path;

    if (slash == NULL || slash < start) {
        snprintf(service, scap, "unknown");
        *method = path;
        return;
    }
    snprintf(service, scap, "%.*s", (int)(slash - start), start);
    *method = slash + 1;
}

static void m_requests(void *arg, metrics_emit_t *e) {
    rpc_server_t *srv = arg;
    char service[256];

    for (int m = 0; m <= srv->n_methods; m++) {
        const char *method = "unknown";
        int row = m < srv->n_methods ? m : MAX_METHODS;

        if (m < srv->n_methods)
            split_path(srv->methods[m].path, service, sizeof(service),
                       &method);
        else
            snprintf(service, sizeof(service), "unknown");
        for (int code = 0; code < REEL_CODE__COUNT; code++) {
            uint64_t n = atomic_load_explicit(&srv->ended[row][code],
                                              memory_order_relaxed);
            const char *l[] = {"service", service, "method", method,
                               "code",    reel_code_name((reel_code_t)code),
                               NULL};

            /* OK always, so a rate has a series from the start; the
             * other codes once they happened. */
            if (n > 0 || code == REEL_OK)
                metrics_emit(e, l, (double)n);
        }
    }
}

static double m_open_calls(void *arg) {
    return (double)rpc_server_open_calls(arg);
}

static double m_stream_bytes(void *arg) {
    rpc_server_t *srv = arg;

    return (double)atomic_load_explicit(&srv->queued, memory_order_relaxed);
}

static reel_code_t register_metrics(rpc_server_t *srv, reel_status_t *st) {
    metrics_registry_t *r = srv->opts.metrics;
    reel_code_t rc;

    if (r == NULL)
        return REEL_OK;
    if ((rc = metrics_reg_collector(
             r, srv, METRICS_COUNTER, "reel_rpc_requests_total",
             "gRPC calls ended, by method and status code.", m_requests, srv,
             st)) != REEL_OK ||
        (rc = metrics_reg_fn(r, srv, METRICS_GAUGE, "reel_rpc_open_calls",
                             "gRPC calls in progress (streams included).",
                             NULL, m_open_calls, srv, st)) != REEL_OK ||
        (rc = metrics_reg_fn(r, srv, METRICS_GAUGE, "reel_stream_queue_bytes",
                             "Bytes queued on server streams, not yet sent "
                             "(a slow reader's backlog).",
                             NULL, m_stream_bytes, srv, st)) != REEL_OK)
        return rc;
    for (int m = 0; m < srv->n_methods; m++) {
        char service[256];
        const char *method;
        const char *l[] = {"service", service, "method", NULL, NULL};

        if (srv->methods[m].kind != RPC_UNARY)
            continue;
        split_path(srv->methods[m].path, service, sizeof(service), &method);
        l[3] = method;
        if ((rc = metrics_reg_histogram(
                 r, srv, "reel_rpc_duration_seconds",
                 "Unary gRPC calls' time from arrival to answer.", l,
                 metrics_buckets_seconds, metrics_buckets_seconds_n,
                 &srv->duration[m], st)) != REEL_OK)
            return rc;
    }
    return REEL_OK;
}

reel_code_t rpc_server_start(rpc_server_t *srv, reel_status_t *st) {
    reel_code_t rc;

    /* The histograms too: they are in place before any call can end. */
    if ((rc = rpc_server_bind(srv, st)) != REEL_OK)
        return rc;
    grpc_server_start(srv->server);
    srv->started = 1;

    /* A stream's requests: REQUESTS_PER_METHOD in all, at least one on
     * each stream queue. */
    for (int i = 0; i < srv->n_methods; i++) {
        int streams = srv->methods[i].kind != RPC_UNARY;
        int n = streams && srv->n_qs - 1 > REQUESTS_PER_METHOD
                    ? srv->n_qs - 1
                    : REQUESTS_PER_METHOD;

        for (int k = 0; k < n; k++)
            post_or_owe(streams ? &srv->qs[1 + k % (srv->n_qs - 1)]
                                : &srv->qs[0],
                        i);
    }
    for (int k = 0; k < REQUESTS_PER_METHOD; k++)
        post_or_owe(&srv->qs[0], -1);
    for (int i = 0; i < srv->opts.threads * 2; i++) {
        pollq_t *q = &srv->qs[i < srv->opts.threads
                                  ? 0
                                  : 1 + i - srv->opts.threads];

        if (pthread_create(&srv->threads[i], NULL, poller_main, q) != 0)
            return reel_status_set(st, REEL_INTERNAL,
                                   "cannot start poller threads");
        srv->n_threads++;
        q->pollers++;
    }
    if (pthread_create(&srv->keeper, NULL, keeper_main, srv) != 0)
        return reel_status_set(st, REEL_INTERNAL,
                               "cannot start the stream keeper thread");
    srv->keeper_started = 1;
    return REEL_OK;
}

int rpc_server_port(rpc_server_t *srv) { return srv->port; }

size_t rpc_server_open_calls(rpc_server_t *srv) {
    size_t n = 0;

    /* A call whose final status went out is over for its client, even
     * while gRPC still holds it for a moment: not counted. */
    pthread_mutex_lock(&srv->mu);
    for (rpc_call_t *c = srv->calls; c != NULL; c = c->next) {
        pthread_mutex_lock(&c->mu);
        n += !c->status_sent;
        pthread_mutex_unlock(&c->mu);
    }
    pthread_mutex_unlock(&srv->mu);
    return n;
}

static int wait_shutdown(rpc_server_t *srv, int ms) {
    struct timespec ts;
    int done;

    /* srv->cv waits on CLOCK_MONOTONIC: a wall-clock step cannot stretch
     * or cut the wait. */
    ts = reel_clock_mono_after(ms);
    pthread_mutex_lock(&srv->mu);
    while (!srv->shutdown_done)
        if (pthread_cond_timedwait(&srv->cv, &srv->mu, &ts) != 0)
            break;
    done = srv->shutdown_done;
    pthread_mutex_unlock(&srv->mu);
    return done;
}

void rpc_server_stop(rpc_server_t *srv, int grace_ms) {
    keeper_stop(srv);
    rpc_call_t **live = NULL;
    size_t n = 0, cap = 0;

    if (srv == NULL || !srv->started || atomic_load(&srv->stopping))
        return;
    pthread_mutex_lock(&srv->mu);
    atomic_store(&srv->stopping, 1);
    grpc_server_shutdown_and_notify(srv->server, srv->qs[0].cq,
                                    &srv->shutdown_tag);
    /* Take a reference on every live call so none is freed under us. */
    for (rpc_call_t *c = srv->calls; c != NULL; c = c->next) {
        pthread_mutex_lock(&c->mu);
        if (c->refs > 0) {
            if (n == cap) {
                size_t ncap = cap ? cap * 2 : 64;
                rpc_call_t **nl = realloc(live, ncap * sizeof(*nl));
                if (nl == NULL) {
                    pthread_mutex_unlock(&c->mu);
                    break;
                }
                live = nl;
                cap = ncap;
            }
            c->refs++;
            live[n++] = c;
        }
        pthread_mutex_unlock(&c->mu);
    }
    pthread_mutex_unlock(&srv->mu);

    /* End open streams (and long waits) with UNAVAILABLE. */
    for (size_t i = 0; i < n; i++) {
        rpc_call_t *c = live[i];
        rpc_cancel_fn fn = NULL;
        void *arg = NULL;

        pthread_mutex_lock(&c->mu);
        if (!c->finished && !c->cancel_fired && c->cancel_fn != NULL) {
            c->cancel_fired = 1;
            fn = c->cancel_fn;
            arg = c->cancel_arg;
        }
        pthread_mutex_unlock(&c->mu);
        if (fn != NULL)
            fn(c, arg, REEL_UNAVAILABLE);
        call_unref(c);
    }
    free(live);

    /* Let in-flight calls finish (their writes commit) for up to grace_ms.
     * The shutdown tag also waits for idle client connections to close,
     * which clients may never do, so once no call is left the connections
     * are cut: cancel_all_calls disconnects them. */
    {
        int64_t until = reel_clock_mono_ns() + (int64_t)grace_ms * 1000000;
        int idle = 0;

        while (!idle && reel_clock_mono_ns() < until) {
            pthread_mutex_lock(&srv->mu);
            idle = srv->calls == NULL || srv->shutdown_done;
            pthread_mutex_unlock(&srv->mu);
            if (!idle) {
                struct timespec ts = {0, 5 * 1000000L};
                nanosleep(&ts, NULL);
            }
        }
        if (!idle)
            REEL_WARN("rpc", "calls still open after %d ms; cancelling them",
                      grace_ms);
    }
    grpc_server_cancel_all_calls(srv->server);
    if (!wait_shutdown(srv, 3000))
        REEL_ERROR("rpc", "the server did not shut down; exiting anyway");
}

void rpc_server_destroy(rpc_server_t *srv) {
    if (srv == NULL)
        return;
    keeper_stop(srv);
    if (srv->server != NULL) {
        if (srv->started && !atomic_load(&srv->stopping))
            rpc_server_stop(srv, 0);
        else if (!srv->started && srv->bound) {
            /* gRPC insists its listeners are shut down before destroy;
             * no poller runs, so take the shutdown tag here. */
            grpc_server_shutdown_and_notify(srv->server, srv->qs[0].cq,
                                            &srv->shutdown_tag);
            for (;;) {
                grpc_event ev = grpc_completion_queue_next(
                    srv->qs[0].cq, gpr_inf_future(GPR_CLOCK_MONOTONIC),
                    NULL);
                if (ev.type != GRPC_OP_COMPLETE ||
                    ev.tag == &srv->shutdown_tag)
                    break;
            }
        }
        grpc_server_destroy(srv->server);
    }
    for (int i = 0; i < srv->n_qs; i++) {
        pollq_t *q = &srv->qs[i];

        if (q->cq == NULL)
            continue;
        grpc_completion_queue_shutdown(q->cq);
        if (q->pollers == 0) {
            /* No poller started on it: drain here. */
            for (;;) {
                grpc_event ev = grpc_completion_queue_next(
                    q->cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
                if (ev.type == GRPC_QUEUE_SHUTDOWN)
                    break;
                if (ev.type == GRPC_OP_COMPLETE &&
                    ((rpc_tag_t *)ev.tag)->kind == TAG_NEW_CALL)
                    on_new_call(srv, ((rpc_tag_t *)ev.tag)->ptr, 0);
            }
        }
    }
    for (int i = 0; i < srv->n_threads; i++)
        pthread_join(srv->threads[i], NULL);
    for (int i = 0; i < srv->n_qs; i++) {
        if (srv->qs[i].cq != NULL)
            grpc_completion_queue_destroy(srv->qs[i].cq);
        pthread_mutex_destroy(&srv->qs[i].handoff.mu);
    }
    /* No poller is left to end a call. */
    metrics_registry_drop(srv->opts.metrics, srv);
    free(srv->qs);
    free(srv->threads);
    pthread_mutex_destroy(&srv->mu);
    pthread_mutex_destroy(&srv->room_mu);
    pthread_mutex_destroy(&srv->keeper_mu);
    pthread_cond_destroy(&srv->keeper_cv);
    pthread_cond_destroy(&srv->cv);
    free(srv->listen);
    if (srv->tls_next != NULL)
        grpc_ssl_server_certificate_config_destroy(srv->tls_next);
    pthread_mutex_destroy(&srv->tls_mu);
    free(srv->tls_cert);
    free(srv->tls_key);
    free(srv->tls_client_ca);
    free(srv);
}
