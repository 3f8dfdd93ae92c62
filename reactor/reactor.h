/*
 * reactor/reactor.h: reel-reactor at run time (private to reactor/).
 *
 *   consumer thread                     engine thread (libcurl multi)
 *   reel_consumer_run --on_batch--> table + window (mu) --due--> POST
 *          ^                               ^                     |
 *          |                 sweep thread: ListRunsToRecover      |
 *          +---- reel_consumer_finish(frontier) <--- settled -----+
 *
 * The consumer thread runs client/'s durable consumer loop as consumer
 * "reactor" on run.*.RUNNABLE. Each event whose run is claimable (its app
 * configured, not_before_ms <= ts_ms) takes a place in the window (its
 * revision) and a dispatch in the table (dispatch.h); other events are
 * passed over. When the window is full (queue_max_runs) the callback
 * waits, so reel keeps the rest and memory stays bounded whatever a worker
 * does; still full after STALL_RESTART_MS, it gives back the events it has
 * not taken and has the loop subscribe again (reel_consumer_restart), since
 * gRPC keeps whatever reel sends on a stream nobody reads, without bound.
 *
 * The engine starts due dispatches, at most max_in_flight per app on the
 * wire, and settles each: delivered (2xx, or 409: the worker says the run
 * is not its to claim), or given up when the retry schedule runs out,
 * after a dead letter is stored in reel (KV namespace reel-reactor, key
 * dead.<run_id>.<epoch>.<attempt>). A settled dispatch marks its window
 * places done; the window's frontier is handed to the loop, which
 * acknowledges it. Nothing is acknowledged that was not settled, so a
 * reactor killed at any moment loses no dispatch: the next one (or the
 * standby) receives the unsettled events again.
 *
 * The sweep thread, as soon as this process holds the consumer and then
 * every sweep_interval_ms (a standby does not sweep), lists every app's
 * ListRunsToRecover and adds a dispatch for each claimable run not held
 * yet: the safety net for runs whose event was missed, and today's only
 * way to hear of a RUNNING run whose lease expired.
 *
 * Locking: mu guards the table, the window and the numbers; the engine
 * never calls the client while holding it. Lock order: mu, then the
 * client's own locks.
 */
#ifndef REEL_REACTOR_REACTOR_H
#define REEL_REACTOR_REACTOR_H

#include <pthread.h>
#include <stdint.h>

#include "base/status.h"
#include "client/client.h"
#include "metrics/metrics.h"
#include "reactor/config.h"
#include "reactor/dispatch.h"
#include "sink/window.h"

#define REACTOR_CONSUMER "reactor"
#define REACTOR_PATTERN "run.*.RUNNABLE"
#define REACTOR_STATE_NAMESPACE "reel-reactor"

typedef struct reactor_opts {
    const char *state_ns;        /* the KV namespace of dead letters */
    const char *consumer;        /* the durable consumer's name */
    int64_t grace_ms;            /* how long a stop waits for requests */
    int takeover;                /* take the consumer from its holder */
    void (*on_fatal)(void *arg); /* the reactor stopped for good */
    void *arg;
} reactor_opts_t;

typedef struct reactor reactor_t;

/* A reactor for cfg on client c (both must outlive it). */
reel_code_t reactor_create(const reactor_config_t *cfg, reel_client_t *c,
                           const reactor_opts_t *o, reactor_t **out,
                           reel_status_t *st);
/* Starts the consumer, engine and sweep threads. */
reel_code_t reactor_start(reactor_t *r, reel_status_t *st);
/* Lets requests in flight finish (up to grace_ms; none once the consumer
 * stopped for good), acknowledges what was settled and joins the
 * threads. */
void reactor_stop(reactor_t *r);
void reactor_destroy(reactor_t *r);

/*
 * Registers the reactor's metrics into reg (--metrics-listen), read when
 * scraped: dispatches, delivered, failed attempts, dead letters, in
 * flight, held, and the lag (reel's head, read at each scrape, minus the
 * consumer's acknowledged revision; no series while not streaming).
 * Registered under r as owner: drop them (metrics_registry_drop) before
 * reactor_destroy().
 */
reel_code_t reactor_metrics_register(reactor_t *r, metrics_registry_t *reg,
                                     reel_status_t *st);
/* /readyz (metrics_ready_fn; arg is the reactor_t): ready unless starting
 * or stopping. */
int reactor_ready(void *arg, char *why, size_t cap);

#endif
