/*
 * sink/sink.h: one configured sink at run time (private to sink/): the
 * runner, which consumes reel and holds the events, and the engine that
 * delivers them (webhook.c, nats.c), through a small table of operations.
 *
 *   consumer thread                 engine thread
 *   reel_consumer_run --on_batch--> window (runner.mu) --take--> deliver
 *          ^                                                      |
 *          +---- reel_consumer_finish(frontier) <-- done ---------+
 *
 * The consumer thread runs client/'s durable consumer loop as consumer
 * sink.<name>; its callback filters each event (subjects, exclude, the
 * sink's own records), copies the ones to deliver into the window and
 * waits while the window is full, so memory stays bounded and gRPC's flow
 * control holds the rest in reel. The engine marks events done once they
 * are delivered or recorded as dead letters, and reports the window's
 * frontier; the loop acknowledges it. Nothing is acknowledged that was
 * not done.
 *
 * Memory while a sink stalls (its receiver down or failing): its stream
 * is left unread, but not unpolled, since every sink's stream, the dead
 * letters and the /status and /metrics answers share one connection.
 * Whenever another call polls it, gRPC reads what reel sent on the
 * stalled stream and keeps it, each small message (a PROGRESS every
 * second) pinning a whole read buffer: without bound (about 64 KiB a
 * second beside a busy sink). So, still full after STALL_RESTART_MS, the
 * callback gives back the events it has not taken and has the loop
 * subscribe again (reel_consumer_restart): cancelling the stream frees
 * what gRPC held, and the new one starts after the last event the window
 * took (resume_after), so nothing comes twice and nothing is skipped.
 * What a new stream can bring in while the callback waits on it is one
 * stream window, fixed at SINK_STREAM_WINDOW_BYTES (gRPC's own grows with
 * the link's bandwidth-delay product, to tens of MiB: a restart every
 * 2 s over a large backlog then took in and dropped that much each time).
 *
 * Stopping (SIGTERM): the runner sets stopping, the callback takes no more
 * events, the engine starts no new delivery and waits for those in flight
 * until the grace period ends, then the frontier is reported and the loop
 * stopped, which acknowledges it.
 *
 * Locking: runner.mu guards the window, the flags and the numbers below;
 * the engine never calls into the client while holding it. Lock order:
 * runner.mu, then the client's own locks.
 */
#ifndef REEL_SINK_SINK_H
#define REEL_SINK_SINK_H

#include <pthread.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "base/status.h"
#include "client/client.h"
#include "metrics/metrics.h"
#include "sink/config.h"
#include "sink/window.h"

typedef struct sink_runner sink_runner_t;

/* Why a delivery attempt failed, as reel_sink_failures_total{class} says. */
#define SINK_FAIL_CLASSES(X)                                             \
    X(TIMEOUT, "timeout")     /* no answer within the timeout */         \
    X(NETWORK, "network")     /* connect, TLS, reset: no HTTP answer */  \
    X(REDIRECT, "http_3xx")   /* redirects are not followed */           \
    X(THROTTLED, "http_429")  /* asked to wait */                        \
    X(CLIENT, "http_4xx")     /* another 4xx (410 disables instead) */   \
    X(SERVER, "http_5xx")     /* 5xx or another status */                \
    X(NATS, "nats")           /* a JetStream publish not acknowledged */

typedef enum sink_fail {
#define SINK_FAIL_ENUM_(name, label) SINK_FAIL_##name,
    SINK_FAIL_CLASSES(SINK_FAIL_ENUM_)
#undef SINK_FAIL_ENUM_
    SINK_FAIL__COUNT
} sink_fail_t;

/* "http_5xx" */
const char *sink_fail_label(sink_fail_t f);

typedef struct sink_engine_ops {
    const char *type;
    reel_code_t (*create)(sink_runner_t *r, void **out, reel_status_t *st);
    /* The engine thread's body: returns once the runner is stopping and
     * what was in flight finished, or the grace period ended. */
    void (*run)(void *e);
    /* New events, or a stop: wakes the engine. Any thread. */
    void (*wake)(void *e);
    void (*destroy)(void *e);
} sink_engine_ops_t;

extern const sink_engine_ops_t sink_webhook_ops;
extern const sink_engine_ops_t sink_nats_ops;

typedef struct sink_runner_opts {
    const char *state_ns;   /* the KV namespace of the sink's records */
    int64_t grace_ms;       /* how long a stop waits for deliveries */
    int takeover;           /* take the consumer from its holder at start */
    void (*on_fatal)(void *arg); /* the sink stopped for good (any thread) */
    void *arg;
} sink_runner_opts_t;

struct sink_runner {
    const sink_config_t *cfg;
    reel_client_t *client;
    sink_runner_opts_t o;
    char consumer_name[80];
    char own_prefix[300];   /* kv.<state namespace>. */

    pthread_mutex_t mu;
    pthread_cond_t room;    /* the window has room, or stopping */
    sink_window_t win;
    int stopping;
    int64_t stop_deadline_ms; /* monotonic */
    uint64_t reported;      /* the frontier last given to the loop */

    /* What status shows (mu). */
    int disabled;
    char disabled_reason[256];
    unsigned in_flight;     /* requests or publishes on the wire */
    unsigned failing;       /* deliveries whose last attempt failed */
    uint64_t delivered;     /* events delivered since start */
    uint64_t dead_lettered; /* events recorded as dead letters */
    uint64_t failed_attempts;
    uint64_t failures[SINK_FAIL__COUNT]; /* failed_attempts by class */
    char last_error[256];
    int64_t last_error_ms;  /* wall clock */
    int fatal;
    char fatal_msg[512];

    /* A delivery's time, request to answer (NULL without metrics). */
    metrics_histogram_t *m_delivery;

    reel_consumer_t *consumer; /* while the loop runs (mu) */
    const sink_engine_ops_t *ops;
    void *engine;
    pthread_t engine_thread, consumer_thread;
    int threads;
};

/* ---- For main.c ---------------------------------------------------------- */

/* The client's stream_window_bytes: what gRPC takes in ahead of a sink's
 * callback (above). A webhook or NATS delivery is far slower than 1 MiB
 * per round trip to reel. */
#define SINK_STREAM_WINDOW_BYTES (1u << 20)

reel_code_t sink_runner_create(const sink_config_t *cfg, reel_client_t *c,
                               const sink_runner_opts_t *o,
                               sink_runner_t **out, reel_status_t *st);
/* Starts the engine and consumer threads. */
reel_code_t sink_runner_start(sink_runner_t *r, reel_status_t *st);
/* Finishes in-flight deliveries (up to grace_ms), acknowledges what was
 * done and joins the threads. */
void sink_runner_stop(sink_runner_t *r);
void sink_runner_destroy(sink_runner_t *r);
/* The live numbers, for the control endpoint. Thread-safe. */
cJSON *sink_runner_status(sink_runner_t *r);

/* ---- For the engines ------------------------------------------------------ */

/* Hands the window's frontier to the consumer loop if it moved. Takes mu;
 * _locked: the caller holds it. */
void sink_runner_report(sink_runner_t *r);
void sink_runner_report_locked(sink_runner_t *r);

/* Counts a failed attempt of class f; _locked: the caller holds mu. */
void sink_runner_failed_locked(sink_runner_t *r, sink_fail_t f);

/* Stops the sink for good (a refused token: asking again will not make it
 * right), naming why; the process exits 1. Takes mu. */
void sink_runner_fatal(sink_runner_t *r, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Records the last error (printf-style) for status; takes mu. */
void sink_runner_error(sink_runner_t *r, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* reel's head revision into *head: 0, -1 (said in the log; try again) or
 * -2 (the token is refused: the sink was stopped for good). */
int sink_runner_head(sink_runner_t *r, uint64_t *head);

/* Milliseconds: monotonic, and the wall clock. */
int64_t sink_now_ms(void);
int64_t sink_wall_ms(void);

#endif
