/*
 * reactor/reactor.c: the consumer, the engine and the sweep; see
 * reactor.h for the design.
 *
 * Answers (docs/reactor.md): 2xx: the worker took the dispatch (it claims
 * the run with ClaimRun(expected_epoch) in its own time); 409 Conflict:
 * the worker found the run not claimable at that epoch (claimed by another
 * worker, moved on): settled as well, since only one claim can win. Any
 * other status (3xx included: redirects are not followed), a timeout, a
 * refused or reset connection: a failed attempt, tried again after the
 * app's retry schedule (or a throttling worker's Retry-After, if later);
 * when it runs out the dispatch becomes a dead letter. The sweep brings a
 * run that is still claimable back later.
 */
#include "reactor/reactor.h"

#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <curl/curl.h>

#include "base/clock.h"
#include "base/log.h"
#include "base/version.h"
#include "reel/v1/journal.pb-c.h"
#include "reel/v1/kv.pb-c.h"
#include "reel/v1/wal.pb-c.h"
#include "sink/http.h"
#include "sink/retry.h"

#define POLL_MAX_MS 1000
#define STATE_RETRY_MS 1000
/* A dead letter's write: one try's deadline, and the longest wait between
 * tries (from STATE_RETRY_MS, doubling). */
#define DEAD_TIMEOUT_MS 2000
#define DEAD_RETRY_MAX_MS 30000
#define ACK_INTERVAL_MS 250
#define ACK_EVERY 500
#define SWEEP_PAGE 500
#define HOLD_POLL_MS 200 /* how often a standby looks whether it holds */
/* How long the consumer waits for room before it starts its stream again
 * (see on_batch). */
#define STALL_RESTART_MS 2000
#define NO_POS UINT64_MAX

struct reactor {
    const reactor_config_t *cfg;
    reel_client_t *client;
    reactor_opts_t o;

    pthread_mutex_t mu;
    pthread_cond_t room;     /* the window has room, or stopping */
    pthread_cond_t tick;     /* the sweep's sleep: stopping */
    reactor_table_t table;
    sink_window_t win;
    int *app_in_flight;      /* per app, requests on the wire (engine) */
    int stopping;
    int64_t stop_deadline_ms; /* monotonic */
    uint64_t reported;
    reel_consumer_t *consumer; /* while the loop runs */
    /* The last retry's gRPC code, until the next batch says the stream is
     * back (-1: none since): the consumer loop's thread only. */
    int retried;
    int stalled;             /* the queue is full: said once (mu) */
    int fatal;               /* the consumer stopped for good (mu) */
    uint64_t dispatched, delivered, dead_lettered, swept;
    /* For metrics, counted by the engine without its lock: */
    _Atomic uint64_t failed_attempts;
    atomic_int wire;         /* requests on the wire (in_flight) */
    _Atomic uint64_t head;   /* reel's head at the last scrape */
    atomic_int reel_up;

    CURLM *multi;
    int in_flight;           /* engine only */
    /* Dead letters (engine only): no try before dead_next_ms, after
     * dead_fails refusals in a row; one wait for all, so an unreachable
     * reel costs the engine one short try per wait, not one per letter. */
    int64_t dead_next_ms;
    unsigned dead_fails;
    uint64_t rng;            /* engine only */
    pthread_t consumer_thread, engine_thread, sweep_thread;
    int threads;             /* how many of the three were started */
};

static int64_t now_ms(void) {
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t wall_ms(void) {
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int is_stopping(reactor_t *r) {
    int s;

    pthread_mutex_lock(&r->mu);
    s = r->stopping;
    pthread_mutex_unlock(&r->mu);
    return s;
}

/* Hands the window's frontier to the loop if it moved. mu held. */
static void report_locked(reactor_t *r) {
    uint64_t f = sink_window_advance(&r->win);

    pthread_cond_broadcast(&r->room);
    if (f > r->reported && r->consumer != NULL) {
        r->reported = f;
        reel_consumer_finish(r->consumer, f);
    }
}

/* ---- The consumer ----------------------------------------------------------- */

static int on_batch(void *arg, const reel_event_t *evs, size_t n,
                    uint64_t *finished) {
    reactor_t *r = arg;
    int woke = 0;

    /* The stream is back: say so, so that the log tells a standby that
     * took the consumer over, and a reactor cut off that came back, from
     * one still waiting. */
    if (r->retried >= 0 && n > 0) {
        REEL_INFO("reactor", "consumer %s: %s; events from revision "
                  "%" PRIu64,
                  r->o.consumer,
                  r->retried == 9 ? "taken over from its holder, no longer "
                                    "standing by"
                                  : "subscribed again",
                  evs[0].revision);
        r->retried = -1;
    }
    /* Settled dispatches say what is finished, through the frontier. */
    *finished = 0;
    for (size_t i = 0; i < n; i++) {
        const reel_event_t *ev = &evs[i];
        const uint8_t *run = NULL;
        size_t run_len = 0;
        reactor_run_t rr;
        int64_t ts = 0;
        int type, app = -1, claimable = 0, added;

        if (reactor_event_scan(ev->bytes, ev->len, &type, &ts, &run,
                               &run_len) != 0 ||
            (run != NULL && reactor_run_scan(run, run_len, &rr) != 0))
            /* Not a run reel-reactor can read: nothing to dispatch, and
             * said, since a worker might be waiting for it. */
            REEL_WARN("reactor", "revision %" PRIu64 " (%.*s): the event "
                      "does not decode as a run; passed over",
                      ev->revision, (int)ev->subject_len, ev->subject);
        else if (run != NULL &&
                 (app = reactor_config_find(r->cfg, rr.app, rr.app_len)) >=
                     0)
            claimable = reactor_event_claimable(&rr, ts);
        pthread_mutex_lock(&r->mu);
        /* Stopping: nothing more counts as done, passed over or not, or a
         * later pass would cover an event dropped before it. */
        if (!r->stopping && claimable &&
            sink_window_full(&r->win, 0, SIZE_MAX)) {
            struct timespec until = reel_clock_mono_after(STALL_RESTART_MS);

            /* Said once per stall: the worker is behind, and reel holds
             * the rest. */
            if (!r->stalled)
                REEL_WARN("reactor", "queue full: %zu dispatches held "
                          "(queue_max_runs); reading from reel waits until "
                          "one is settled",
                          sink_window_count(&r->win));
            r->stalled = 1;
            /* This batch's dispatches go out while the callback waits. */
            curl_multi_wakeup(r->multi);
            while (!r->stopping && sink_window_full(&r->win, 0, SIZE_MAX) &&
                   pthread_cond_timedwait(&r->room, &r->mu, &until) == 0)
                ;
            if (!r->stopping && sink_window_full(&r->win, 0, SIZE_MAX)) {
                /*
                 * Still full: the stream is given up and subscribed again,
                 * this event and the rest of the batch handed out again
                 * from it. Left unread, the stream keeps growing in gRPC's
                 * buffers (each PROGRESS reel sends meanwhile can hold a
                 * whole read buffer, read whenever another call polls the
                 * connection: the sweep, a scrape), and its end goes
                 * unseen: a consumer reel invalidated would be noticed
                 * only once a dispatch settles.
                 */
                pthread_mutex_unlock(&r->mu);
                reel_consumer_restart(r->consumer,
                                      i > 0 ? evs[i - 1].revision : 0);
                break;
            }
        }
        if (r->stopping) {
            pthread_mutex_unlock(&r->mu);
            break;
        }
        if (!claimable) {
            sink_window_pass(&r->win, ev->revision);
            pthread_mutex_unlock(&r->mu);
            continue;
        }
        r->stalled = 0; /* there was room */
        while (reactor_hold(&r->table, &r->win, &rr, (size_t)app,
                            ev->revision, ev->type, ts, &added) == NULL) {
            /* Out of memory: wait for the engine to free some, never drop
             * the event. */
            pthread_mutex_unlock(&r->mu);
            REEL_ERROR("reactor", "out of memory holding the dispatch of "
                       "revision %" PRIu64 "; waiting",
                       ev->revision);
            usleep(100000);
            pthread_mutex_lock(&r->mu);
            if (r->stopping) {
                pthread_mutex_unlock(&r->mu);
                return 0;
            }
        }
        if (added)
            r->dispatched++;
        pthread_mutex_unlock(&r->mu);
        REEL_DEBUG("reactor", "revision %" PRIu64 ": run %.*s of app %.*s "
                   "is claimable (epoch %" PRIu64 ", attempt %" PRIu32
                   "%s%.*s)",
                   ev->revision, (int)rr.run_id_len, rr.run_id,
                   (int)rr.app_len, rr.app, rr.epoch, rr.attempt,
                   rr.reason_len ? ", " : "", (int)rr.reason_len, rr.reason);
        woke = 1;
    }
    if (woke)
        curl_multi_wakeup(r->multi);
    pthread_mutex_lock(&r->mu);
    report_locked(r);
    pthread_mutex_unlock(&r->mu);
    return 0;
}

static void on_retry(void *arg, int code, const char *details,
                     int64_t delay_ms) {
    reactor_t *r = arg;
    char hint[512];

    r->retried = code;
    if (code == 9) /* FAILED_PRECONDITION: held by another subscriber */
        REEL_INFO("reactor", "consumer %s is held by another subscriber "
                  "(another reel-reactor, or one the server has not yet "
                  "found gone); standing by, next try in %.1f s",
                  r->o.consumer, (double)delay_ms / 1000.0);
    else
        REEL_WARN("reactor", "the stream from reel ended: %s: %s; "
                  "subscribing again in %.1f s%s",
                  reel_grpc_code_name(code), details,
                  (double)delay_ms / 1000.0,
                  reel_client_hint_note(r->client, code, details, hint,
                                        sizeof(hint)));
}

/* gRPC's UNAUTHENTICATED and PERMISSION_DENIED: the token is refused (a
 * scope missing), and asking again will not make it right. */
static int token_refused(int code) {
    return code == 7 || code == 16;
}

/* Stops the reactor for good over a refused token, naming what it was
 * doing: the process exits 1, as when the consumer is refused. */
static void stop_refused(reactor_t *r, const char *what, int code,
                         const char *details) {
    REEL_ERROR("reactor", "stopped: %s: %s: %s", what,
               reel_grpc_code_name(code), details ? details : "");
    if (r->o.on_fatal != NULL)
        r->o.on_fatal(r->o.arg);
}

static void *consumer_main(void *arg) {
    reactor_t *r = arg;
    reel_consumer_opts_t co = REEL_CONSUMER_OPTS_INIT;
    reel_consumer_t *k = NULL;
    reel_reply_t why = {0};
    int code, stopping;

    co.consumer = r->o.consumer;
    co.subject_pattern = REACTOR_PATTERN;
    co.takeover = r->o.takeover;
    co.standby = 1;
    co.ack_interval_ms = ACK_INTERVAL_MS;
    co.ack_every = ACK_EVERY;
    co.on_batch = on_batch;
    co.on_retry = on_retry;
    co.arg = r;
    if (reel_consumer_create(r->client, &co, &k, &why) != 0) {
        REEL_ERROR("reactor", "stopped: %s: %s",
                   reel_grpc_code_name(why.code),
                   why.details ? why.details : "");
        reel_reply_fini(&why);
        if (r->o.on_fatal != NULL)
            r->o.on_fatal(r->o.arg);
        return NULL;
    }
    pthread_mutex_lock(&r->mu);
    if (r->stopping) {
        pthread_mutex_unlock(&r->mu);
        reel_consumer_destroy(k);
        return NULL;
    }
    r->consumer = k;
    pthread_mutex_unlock(&r->mu);
    REEL_INFO("reactor", "consuming %s as %s%s", REACTOR_PATTERN,
              r->o.consumer, r->o.takeover ? " (taking it over)" : "");
    code = reel_consumer_run(k, &why);
    pthread_mutex_lock(&r->mu);
    r->consumer = NULL;
    pthread_mutex_unlock(&r->mu);
    pthread_mutex_lock(&r->mu);
    stopping = r->stopping;
    pthread_mutex_unlock(&r->mu);
    if (code != 0 && stopping &&
        (code == reel_code_grpc(REEL_DEADLINE_EXCEEDED) ||
         code == reel_code_grpc(REEL_UNAVAILABLE) ||
         code == reel_code_grpc(REEL_CANCELLED))) {
        reel_consumer_stats_t s;

        /* Only the stop's last ack failed (reel hung or away): nothing is
         * lost, what it would have acknowledged is dispatched again at the
         * next start (at-least-once), so the stop is still a clean one. */
        reel_consumer_stats(k, &s);
        REEL_WARN("reactor", "stopped; the last acknowledgement failed "
                  "(%s: %s): the events after revision %" PRIu64 " are "
                  "dispatched again at the next start",
                  reel_grpc_code_name(code), why.details ? why.details : "",
                  s.acked);
    } else if (code != 0) {
        REEL_ERROR("reactor", "stopped: consumer %s: %s: %s", r->o.consumer,
                   reel_grpc_code_name(code), why.details ? why.details : "");
        /* Nothing settled now can be acknowledged: requests on the wire
         * are abandoned at once (their runs stay claimable), not given the
         * stop's grace period. */
        pthread_mutex_lock(&r->mu);
        r->fatal = 1;
        pthread_mutex_unlock(&r->mu);
        if (r->o.on_fatal != NULL)
            r->o.on_fatal(r->o.arg);
    } else {
        reel_consumer_stats_t s;

        reel_consumer_stats(k, &s);
        REEL_INFO("reactor", "stopped; acknowledged up to revision %" PRIu64,
                  s.acked);
    }
    reel_reply_fini(&why);
    reel_consumer_destroy(k);
    return NULL;
}

/* ---- The sweep --------------------------------------------------------------- */

typedef struct sweep_page {
    reactor_t *r;
    size_t app;
    int64_t now;
    size_t added;
} sweep_page_t;

static int sweep_run(void *arg, const uint8_t *b, size_t n) {
    sweep_page_t *p = arg;
    reactor_t *r = p->r;
    reactor_run_t rr;
    char id[REACTOR_ID_MAX];
    int added = 0;

    if (reactor_run_scan(b, n, &rr) != 0)
        return -1;
    if (!reactor_sweep_claimable(&rr, p->now))
        return 0;
    reactor_dispatch_id(&rr, id, sizeof(id));
    pthread_mutex_lock(&r->mu);
    /* The table's bound holds for the sweep too: what does not fit now is
     * found by a later sweep. */
    if (reactor_table_find(&r->table, id) == NULL &&
        r->table.n < r->cfg->queue_max_runs &&
        reactor_table_offer(&r->table, &rr, p->app, NO_POS, 0, p->now,
                            &added) != NULL &&
        added) {
        r->dispatched++;
        r->swept++;
        p->added++;
    }
    pthread_mutex_unlock(&r->mu);
    if (added)
        REEL_INFO("reactor", "sweep: run %.*s of app %s is claimable "
                  "(%s, epoch %" PRIu64 ", attempt %" PRIu32 "); "
                  "dispatching",
                  (int)rr.run_id_len, rr.run_id, r->cfg->apps[p->app].app,
                  rr.status == REACTOR_RUNNING ? "its lease expired"
                                               : "RUNNABLE",
                  rr.epoch, rr.attempt);
    return 0;
}

/* One app's ListRunsToRecover, every page. 0, or -1 (said). */
static int sweep_app(reactor_t *r, size_t app) {
    Reel__V1__ListRunsToRecoverRequest req =
        REEL__V1__LIST_RUNS_TO_RECOVER_REQUEST__INIT;
    sweep_page_t p = {r, app, wall_ms(), 0};
    char after[REACTOR_RUN_ID_MAX + 1] = "";
    int more = 1;

    while (more && !is_stopping(r)) {
        reel_reply_t rep;
        uint8_t *buf;
        size_t len;
        const char *next;
        size_t next_len;
        int code, bad;

        req.app = r->cfg->apps[app].app;
        req.limit = SWEEP_PAGE;
        req.start_after = after;
        len = reel__v1__list_runs_to_recover_request__get_packed_size(&req);
        if ((buf = malloc(len ? len : 1)) == NULL)
            return -1;
        reel__v1__list_runs_to_recover_request__pack(&req, buf);
        code = reel_client_unary_retry(r->client,
                                       "/reel.v1.Journal/ListRunsToRecover",
                                       buf, len, REEL_TIMEOUT_DEFAULT, &rep);
        free(buf);
        if (code != 0 && token_refused(code)) {
            stop_refused(r, "sweep: ListRunsToRecover", code, rep.details);
            reel_reply_fini(&rep);
            return -1;
        }
        if (code != 0) {
            REEL_WARN("reactor", "sweep of app %s: ListRunsToRecover: %s: "
                      "%s; the next sweep tries again",
                      r->cfg->apps[app].app, reel_grpc_code_name(code),
                      rep.details ? rep.details : "");
            reel_reply_fini(&rep);
            return -1;
        }
        bad = reactor_recover_scan(rep.body, rep.len, sweep_run, &p, &next,
                                   &next_len, &more) != 0 ||
              next_len > REACTOR_RUN_ID_MAX || (more && next_len == 0);
        if (!bad) {
            memcpy(after, next, next_len);
            after[next_len] = '\0';
        }
        reel_reply_fini(&rep);
        if (bad) {
            REEL_WARN("reactor", "sweep of app %s: reel's answer does not "
                      "decode; the next sweep tries again",
                      r->cfg->apps[app].app);
            return -1;
        }
    }
    if (p.added > 0)
        curl_multi_wakeup(r->multi);
    return 0;
}

/*
 * The first sweep comes as soon as this process holds the consumer (at
 * start, or when a standby takes over): runs that were claimable while no
 * reactor ran are dispatched at once. Then one every sweep_interval_ms.
 */
static void *sweep_main(void *arg) {
    reactor_t *r = arg;
    int64_t wait_ms = HOLD_POLL_MS;

    for (;;) {
        struct timespec until;
        reel_consumer_stats_t s = {0};
        int held = 0;

        until = reel_clock_mono_after(wait_ms);
        pthread_mutex_lock(&r->mu);
        while (!r->stopping &&
               pthread_cond_timedwait(&r->tick, &r->mu, &until) == 0)
            ;
        if (r->stopping) {
            pthread_mutex_unlock(&r->mu);
            return NULL;
        }
        /* Only the process that holds the consumer sweeps: a standby's
         * dispatches would double every one. */
        if (r->consumer != NULL) {
            reel_consumer_stats(r->consumer, &s);
            held = s.streaming;
        }
        pthread_mutex_unlock(&r->mu);
        if (!held) {
            wait_ms = HOLD_POLL_MS;
            continue;
        }
        for (size_t i = 0; i < r->cfg->n; i++)
            (void)sweep_app(r, i);
        wait_ms = r->cfg->sweep_interval_ms;
    }
}

/* ---- The engine ------------------------------------------------------------------ */

/* Starts d's next attempt. 0, or -1 (out of memory: said, tried again). */
static int start(reactor_t *r, reactor_dispatch_t *d) {
    const reactor_app_t *a = &r->cfg->apps[d->app];
    sink_http_post_t p = {0};

    if (d->easy == NULL && (d->easy = curl_easy_init()) == NULL)
        goto oom;
    p.url = a->url;
    p.secrets = a->secrets;
    p.n_secrets = a->n_secrets;
    p.user_agent = "reel-reactor/" REEL_VERSION;
    p.id = d->id;
    p.body = d->body;
    p.len = d->len;
    p.timeout_ms = a->timeout_ms;
    p.connect_timeout_ms = a->connect_timeout_ms;
    if (sink_http_prepare(d->easy, &p, wall_ms() / 1000, &d->hdrs,
                          d->errbuf, &d->ans) != 0)
        goto oom;
    curl_easy_setopt(d->easy, CURLOPT_PRIVATE, d);
    if (curl_multi_add_handle(r->multi, d->easy) != CURLM_OK)
        goto oom;
    if (d->first_ms == 0) {
        d->first_ms = now_ms();
        d->first_wall_ms = reel_clock_now_ms(); /* never goes back */
    }
    d->in_flight = 1;
    r->in_flight++;
    r->app_in_flight[d->app]++;
    atomic_fetch_add_explicit(&r->wire, 1, memory_order_relaxed);
    return 0;
oom:
    REEL_ERROR("reactor", "out of memory starting dispatch %s; trying again",
               d->id);
    d->next_ms = now_ms() + STATE_RETRY_MS;
    return -1;
}

/* Marks d's window places done, drops it and reports the frontier. */
static void settle(reactor_t *r, reactor_dispatch_t *d, int dead) {
    pthread_mutex_lock(&r->mu);
    reactor_settle(&r->table, &r->win, d);
    if (dead)
        r->dead_lettered++;
    else
        r->delivered++;
    report_locked(r);
    pthread_mutex_unlock(&r->mu);
    reactor_dispatch_free(d);
}

/* The packed SetValueRequest of d's dead letter at ns/key; 0, or -1 when
 * out of memory. */
static int dead_record(reactor_t *r, const reactor_dispatch_t *d,
                       char *key, uint8_t **buf, size_t *len) {
    Reel__V1__SetValueRequest req = REEL__V1__SET_VALUE_REQUEST__INIT;
    cJSON *o = cJSON_CreateObject(), *body = cJSON_Parse(d->body);
    char *text = NULL;
    int rc = -1;

    if (o == NULL || body == NULL ||
        cJSON_AddStringToObject(o, "id", d->id) == NULL ||
        cJSON_AddStringToObject(o, "app", r->cfg->apps[d->app].app) ==
            NULL ||
        cJSON_AddNumberToObject(o, "attempts", d->failures) == NULL ||
        cJSON_AddNumberToObject(o, "first_attempt_ms",
                                (double)d->first_wall_ms) == NULL ||
        cJSON_AddNumberToObject(o, "last_attempt_ms",
                                (double)d->last_wall_ms) == NULL ||
        cJSON_AddStringToObject(o, "last_error", d->last_error) == NULL ||
        !cJSON_AddItemToObject(o, "request", body))
        goto out;
    body = NULL; /* o's now */
    if ((text = cJSON_PrintUnformatted(o)) == NULL)
        goto out;
    req.namespace_ = (char *)r->o.state_ns;
    req.key = key;
    req.value = text;
    req.writer = "reel-reactor";
    *len = reel__v1__set_value_request__get_packed_size(&req);
    if ((*buf = malloc(*len)) == NULL)
        goto out;
    reel__v1__set_value_request__pack(&req, *buf);
    rc = 0;
out:
    free(text);
    cJSON_Delete(body);
    cJSON_Delete(o);
    return rc;
}

/*
 * Stores d's dead letter, then settles it: one try, on the engine thread,
 * within DEAD_TIMEOUT_MS and never sent again inside it (a reel away fails
 * it in about 250 ms). A write reel refuses (reel restarting or away, a
 * disk below its floor, a record over its limit) holds every dead letter
 * until the next try, from STATE_RETRY_MS doubling to DEAD_RETRY_MAX_MS,
 * and the engine goes on with every other dispatch meanwhile: retried in
 * place, one such write held every app's requests (their answers unread)
 * for as long as it failed. A dispatch is never settled without its
 * record.
 */
static void dead_letter(reactor_t *r, reactor_dispatch_t *d) {
    const char *colon = strchr(d->id, ':');
    char key[REACTOR_ID_MAX + 8];
    uint8_t *buf = NULL;
    size_t len = 0;
    reel_reply_t rep = {0};
    int64_t wait;
    int code;

    /* dead.<run_id>.<epoch>.<attempt>: the id with dots. */
    snprintf(key, sizeof(key), "dead.%s", d->id);
    for (char *c = key + 5 + (colon ? (size_t)(colon - d->id) : 0); *c; c++)
        if (*c == ':')
            *c = '.';
    wait = (int64_t)STATE_RETRY_MS
           << (r->dead_fails < 5 ? r->dead_fails : 5);
    if (wait > DEAD_RETRY_MAX_MS)
        wait = DEAD_RETRY_MAX_MS;
    if (dead_record(r, d, key, &buf, &len) != 0) {
        REEL_ERROR("reactor", "dispatch %s: out of memory building its "
                   "dead letter; trying again in %.1f s",
                   d->id, (double)wait / 1000.0);
        goto later;
    }
    /* Sending the same record twice stores the same record. */
    code = reel_client_unary(r->client, "/reel.v1.KV/SetValue", buf, len,
                             DEAD_TIMEOUT_MS, &rep);
    free(buf);
    if (code != 0 && token_refused(code)) {
        stop_refused(r, "storing a dead letter", code, rep.details);
        reel_reply_fini(&rep);
        d->next_ms = INT64_MAX; /* not settled: comes again */
        return;
    }
    if (code != 0) {
        REEL_ERROR("reactor", "dispatch %s: storing its dead letter "
                   "%s/%s: %s: %s; trying again in %.1f s",
                   d->id, r->o.state_ns, key, reel_grpc_code_name(code),
                   rep.details ? rep.details : "", (double)wait / 1000.0);
        reel_reply_fini(&rep);
        goto later;
    }
    reel_reply_fini(&rep);
    r->dead_fails = 0;
    r->dead_next_ms = 0;
    REEL_ERROR("reactor", "dispatch %s (app %s) given up after %u attempts "
               "over %.1f s; last error: %s; dead letter %s/%s",
               d->id, r->cfg->apps[d->app].app, d->failures,
               (double)(d->last_wall_ms - d->first_wall_ms) / 1000.0,
               d->last_error, r->o.state_ns, key);
    settle(r, d, 1);
    return;
later:
    r->dead_fails++;
    r->dead_next_ms = d->next_ms = now_ms() + wait;
}

static void finished(reactor_t *r, reactor_dispatch_t *d, CURLcode cc) {
    const reactor_app_t *a = &r->cfg->apps[d->app];
    int64_t now = now_ms(), wait, ra = -1;
    long status = 0;

    curl_multi_remove_handle(r->multi, d->easy);
    d->in_flight = 0;
    r->in_flight--;
    r->app_in_flight[d->app]--;
    atomic_fetch_sub_explicit(&r->wire, 1, memory_order_relaxed);
    d->last_wall_ms = reel_clock_now_ms();
    cc = sink_http_result(&d->ans, cc, d->errbuf);
    if (cc == CURLE_OK)
        curl_easy_getinfo(d->easy, CURLINFO_RESPONSE_CODE, &status);
    /* A dispatch waiting for its retry holds no handle (the multi handle
     * keeps the connection): held dispatches cost their body alone. */
    curl_easy_cleanup(d->easy);
    d->easy = NULL;
    curl_slist_free_all(d->hdrs);
    d->hdrs = NULL;
    if (cc == CURLE_OK &&
        ((status >= 200 && status < 300) || status == 409)) {
        if (d->failures > 0 || status == 409)
            REEL_INFO("reactor", "dispatch %s delivered (HTTP %ld) after %u "
                      "failed attempts",
                      d->id, status, d->failures);
        else
            REEL_DEBUG("reactor", "dispatch %s delivered", d->id);
        settle(r, d, 0);
        return;
    }
    if (cc != CURLE_OK)
        snprintf(d->last_error, sizeof(d->last_error), "%s",
                 d->errbuf[0] ? d->errbuf : curl_easy_strerror(cc));
    else if (status >= 300 && status < 400)
        snprintf(d->last_error, sizeof(d->last_error),
                 "HTTP %ld (redirects are not followed)", status);
    else
        snprintf(d->last_error, sizeof(d->last_error), "HTTP %ld", status);
    d->failures++;
    atomic_fetch_add_explicit(&r->failed_attempts, 1, memory_order_relaxed);
    if (is_stopping(r)) {
        REEL_WARN("reactor", "dispatch %s attempt %u failed: %s; stopping, "
                  "so it comes again after the restart",
                  d->id, d->failures, d->last_error);
        d->next_ms = INT64_MAX;
        return;
    }
    wait = sink_retry_next(&a->retry, d->failures, d->first_ms, now, 0,
                           &r->rng);
    if (wait < 0) { /* given up: its dead letter is stored by the loop */
        d->dead = 1;
        d->next_ms = now;
        return;
    }
    /* A throttling worker (429, 502, 503, 504) may ask for a longer wait,
     * up to the schedule's retry_after_max_ms. */
    if (cc == CURLE_OK && sink_retry_throttles(status) &&
        d->ans.retry_after[0] != '\0' &&
        sink_retry_after_parse(d->ans.retry_after, wall_ms(),
                               a->retry.retry_after_max_ms, &ra) == 0 &&
        ra > wait)
        wait = ra;
    else
        ra = -1;
    d->next_ms = now + wait;
    REEL_WARN("reactor", "dispatch %s (app %s) attempt %u failed: %s; next "
              "attempt in %.*f %s%s",
              d->id, a->app, d->failures, d->last_error,
              wait < 1000 ? 0 : 1,
              wait < 1000 ? (double)wait : (double)wait / 1000.0,
              wait < 1000 ? "ms" : "s",
              ra >= 0 ? " (the worker's Retry-After)" : "");
}

/* Whether every app has max_in_flight requests on the wire. */
static int all_busy(const reactor_t *r) {
    for (size_t i = 0; i < r->cfg->n; i++)
        if (r->app_in_flight[i] < r->cfg->apps[i].max_in_flight)
            return 0;
    return 1;
}

static void *engine_main(void *arg) {
    reactor_t *r = arg;

    for (;;) {
        int64_t now = now_ms(), timeout = POLL_MAX_MS, deadline;
        reactor_dispatch_t *d, *dead = NULL;
        int stop, running;
        CURLMsg *msg;

        pthread_mutex_lock(&r->mu);
        stop = r->stopping;
        deadline = r->stop_deadline_ms;
        /* The table only grows at its end while the lock is out, and only
         * this thread removes: starting under the lock is enough. With
         * every app at its max_in_flight nothing can start: a request
         * ending wakes the loop, so the table is not walked for nothing. */
        for (d = all_busy(r) ? NULL : r->table.first; !stop && d != NULL;
             d = d->next) {
            if (d->in_flight)
                continue;
            if (d->next_ms > now) {
                if (d->next_ms - now < timeout)
                    timeout = d->next_ms - now;
                continue;
            }
            if (d->dead) { /* its record's next try, below */
                if (dead == NULL && now >= r->dead_next_ms)
                    dead = d;
                else if (dead == NULL && r->dead_next_ms - now < timeout)
                    timeout = r->dead_next_ms - now;
                continue;
            }
            if (r->app_in_flight[d->app] <
                r->cfg->apps[d->app].max_in_flight)
                (void)start(r, d);
        }
        pthread_mutex_unlock(&r->mu);
        if (stop && (r->in_flight == 0 || now >= deadline))
            break;
        if (dead != NULL) { /* out of the lock: settling takes it */
            dead_letter(r, dead);
            timeout = 0; /* another may be due */
        }
        curl_multi_perform(r->multi, &running);
        while ((msg = curl_multi_info_read(r->multi, &running)) != NULL) {
            if (msg->msg != CURLMSG_DONE)
                continue;
            d = NULL;
            curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE,
                              (char **)&d);
            if (d != NULL) {
                finished(r, d, msg->data.result);
                timeout = 0; /* a slot is free: look at the table again */
            }
        }
        if (stop && deadline - now < timeout)
            timeout = deadline - now;
        if (timeout < 0)
            timeout = 0;
        curl_multi_poll(r->multi, NULL, 0, (int)timeout, NULL);
    }
    /* What is still on the wire is abandoned: not settled, so its event
     * comes again (with the same webhook-id). */
    pthread_mutex_lock(&r->mu);
    for (reactor_dispatch_t *d = r->table.first; d != NULL; d = d->next) {
        if (d->in_flight) {
            curl_multi_remove_handle(r->multi, d->easy);
            d->in_flight = 0;
            REEL_WARN("reactor", "dispatch %s still in flight at the end of "
                      "the stop's grace period; it comes again",
                      d->id);
        }
    }
    pthread_mutex_unlock(&r->mu);
    return NULL;
}

/* ---- Life cycle --------------------------------------------------------------------- */

reel_code_t reactor_create(const reactor_config_t *cfg, reel_client_t *c,
                           const reactor_opts_t *o, reactor_t **out,
                           reel_status_t *st) {
    reactor_t *r = calloc(1, sizeof(*r));

    *out = NULL;
    if (r == NULL || sink_window_init(&r->win, cfg->queue_max_runs) != 0 ||
        (r->app_in_flight = calloc(cfg->n, sizeof(int))) == NULL ||
        (r->multi = curl_multi_init()) == NULL) {
        if (r != NULL) {
            sink_window_fini(&r->win);
            free(r->app_in_flight);
        }
        free(r);
        return reel_status_set(st, REEL_RESOURCE_EXHAUSTED, "out of memory");
    }
    r->cfg = cfg;
    r->client = c;
    r->o = *o;
    r->retried = -1;
    if (r->o.state_ns == NULL)
        r->o.state_ns = REACTOR_STATE_NAMESPACE;
    if (r->o.consumer == NULL)
        r->o.consumer = REACTOR_CONSUMER;
    r->rng = sink_rng_seed();
    pthread_mutex_init(&r->mu, NULL);
    reel_cond_init_mono(&r->room); /* the stall's wait too */
    reel_cond_init_mono(&r->tick); /* its sleep must not follow the wall clock */
    *out = r;
    return REEL_OK;
}

reel_code_t reactor_start(reactor_t *r, reel_status_t *st) {
    if (pthread_create(&r->engine_thread, NULL, engine_main, r) != 0)
        return reel_status_set(st, REEL_RESOURCE_EXHAUSTED,
                               "cannot start a thread");
    r->threads = 1;
    if (pthread_create(&r->consumer_thread, NULL, consumer_main, r) != 0) {
        reactor_stop(r);
        return reel_status_set(st, REEL_RESOURCE_EXHAUSTED,
                               "cannot start a thread");
    }
    r->threads = 2;
    if (r->cfg->sweep_interval_ms > 0) {
        if (pthread_create(&r->sweep_thread, NULL, sweep_main, r) != 0) {
            reactor_stop(r);
            return reel_status_set(st, REEL_RESOURCE_EXHAUSTED,
                                   "cannot start a thread");
        }
        r->threads = 3;
    }
    return REEL_OK;
}

void reactor_stop(reactor_t *r) {
    if (r == NULL || r->threads == 0)
        return;
    pthread_mutex_lock(&r->mu);
    r->stopping = 1;
    r->stop_deadline_ms = now_ms() + (r->fatal ? 0 : r->o.grace_ms);
    pthread_cond_broadcast(&r->room);
    pthread_cond_broadcast(&r->tick);
    pthread_mutex_unlock(&r->mu);
    curl_multi_wakeup(r->multi);
    /* Requests first, then the last report, then the loop's final ack. */
    pthread_join(r->engine_thread, NULL);
    if (r->threads == 3)
        pthread_join(r->sweep_thread, NULL);
    pthread_mutex_lock(&r->mu);
    report_locked(r);
    if (r->consumer != NULL)
        reel_consumer_stop(r->consumer);
    pthread_mutex_unlock(&r->mu);
    if (r->threads >= 2)
        pthread_join(r->consumer_thread, NULL);
    REEL_INFO("reactor", "%" PRIu64 " dispatches (%" PRIu64 " from sweeps), "
              "%" PRIu64 " delivered, %" PRIu64 " dead letters",
              r->dispatched, r->swept, r->delivered, r->dead_lettered);
    r->threads = 0;
}

void reactor_destroy(reactor_t *r) {
    if (r == NULL)
        return;
    reactor_stop(r);
    reactor_table_fini(&r->table);
    sink_window_fini(&r->win);
    curl_multi_cleanup(r->multi);
    free(r->app_in_flight);
    pthread_cond_destroy(&r->tick);
    pthread_cond_destroy(&r->room);
    pthread_mutex_destroy(&r->mu);
    free(r);
}

/* ---- Metrics ------------------------------------------------------------------------- */

static double m_read_locked(reactor_t *r, int what) {
    switch (what) {
    case 0:
        return (double)r->dispatched;
    case 1:
        return (double)r->delivered;
    case 2:
        return (double)r->dead_lettered;
    case 3:
        return (double)r->swept;
    default:
        return (double)sink_window_count(&r->win);
    }
}

static double m_locked(reactor_t *r, int what) {
    double v;

    pthread_mutex_lock(&r->mu);
    v = m_read_locked(r, what);
    pthread_mutex_unlock(&r->mu);
    return v;
}

static double m_dispatched(void *arg) { return m_locked(arg, 0); }
static double m_delivered(void *arg) { return m_locked(arg, 1); }
static double m_dead(void *arg) { return m_locked(arg, 2); }
static double m_swept(void *arg) { return m_locked(arg, 3); }
static double m_held(void *arg) { return m_locked(arg, 4); }

static double m_failed(void *arg) {
    reactor_t *r = arg;

    return (double)atomic_load_explicit(&r->failed_attempts,
                                        memory_order_relaxed);
}

static double m_wire(void *arg) {
    reactor_t *r = arg;

    return (double)atomic_load_explicit(&r->wire, memory_order_relaxed);
}

static double m_reel_up(void *arg) {
    reactor_t *r = arg;

    return atomic_load(&r->reel_up) ? 1 : 0;
}

/* reel's head (one attempt, a short deadline: a scrape must not hang on
 * reel), kept in r->head; reel_up says whether this one was read. */
static void read_head(reactor_t *r) {
    Reel__V1__GetHeadRequest req = REEL__V1__GET_HEAD_REQUEST__INIT;
    Reel__V1__GetHeadResponse *resp = NULL;
    reel_reply_t rep;
    uint8_t buf[8];
    size_t len = reel__v1__get_head_request__pack(&req, buf);

    if (reel_client_unary(r->client, "/reel.v1.Wal/GetHead", buf, len, 1000,
                          &rep) == 0)
        resp = reel__v1__get_head_response__unpack(NULL, rep.len, rep.body);
    reel_reply_fini(&rep);
    atomic_store(&r->reel_up, resp != NULL);
    if (resp == NULL)
        return;
    if (resp->head_revision > atomic_load(&r->head))
        atomic_store(&r->head, resp->head_revision);
    reel__v1__get_head_response__free_unpacked(resp, NULL);
}

/* Lag: no series while the consumer is not streaming (starting, or a
 * standby: the holder reports it). */
static void m_lag(void *arg, metrics_emit_t *e) {
    reactor_t *r = arg;
    reel_consumer_stats_t s = {0};
    uint64_t head;

    read_head(r);
    head = atomic_load(&r->head);
    pthread_mutex_lock(&r->mu);
    if (r->consumer != NULL)
        reel_consumer_stats(r->consumer, &s);
    pthread_mutex_unlock(&r->mu);
    if (!s.streaming)
        return;
    if (s.delivered > head)
        head = s.delivered;
    metrics_emit(e, NULL, head > s.acked ? (double)(head - s.acked) : 0);
}

reel_code_t reactor_metrics_register(reactor_t *r, metrics_registry_t *reg,
                                     reel_status_t *st) {
    reel_code_t rc;

    if ((rc = metrics_reg_fn(reg, r, METRICS_COUNTER,
                             "reel_reactor_dispatches_total",
                             "Dispatches made (a run found claimable), from "
                             "events and sweeps.",
                             NULL, m_dispatched, r, st)) != REEL_OK ||
        (rc = metrics_reg_fn(reg, r, METRICS_COUNTER,
                             "reel_reactor_swept_total",
                             "Dispatches the sweep (ListRunsToRecover) made.",
                             NULL, m_swept, r, st)) != REEL_OK ||
        (rc = metrics_reg_fn(reg, r, METRICS_COUNTER,
                             "reel_reactor_delivered_total",
                             "Dispatches a worker took (2xx or 409).", NULL,
                             m_delivered, r, st)) != REEL_OK ||
        (rc = metrics_reg_fn(reg, r, METRICS_COUNTER,
                             "reel_reactor_failures_total",
                             "Failed dispatch attempts (another status, a "
                             "timeout, no connection).",
                             NULL, m_failed, r, st)) != REEL_OK ||
        (rc = metrics_reg_fn(reg, r, METRICS_GAUGE,
                             "reel_reactor_dead_letters",
                             "Dispatches this process gave up as dead "
                             "letters since it started.",
                             NULL, m_dead, r, st)) != REEL_OK ||
        (rc = metrics_reg_fn(reg, r, METRICS_GAUGE, "reel_reactor_in_flight",
                             "Requests to workers on the wire.", NULL, m_wire,
                             r, st)) != REEL_OK ||
        (rc = metrics_reg_fn(reg, r, METRICS_GAUGE, "reel_reactor_held_events",
                             "Events held in the window, not yet settled.",
                             NULL, m_held, r, st)) != REEL_OK ||
        (rc = metrics_reg_collector(
             reg, r, METRICS_GAUGE, "reel_reactor_lag",
             "Revisions reel holds past the reactor's acknowledged one.",
             m_lag, r, st)) != REEL_OK ||
        (rc = metrics_reg_fn(reg, r, METRICS_GAUGE, "reel_reactor_reel_up",
                             "1 if reel answered the last scrape's head read "
                             "(else reel_reactor_lag uses the last head read).",
                             NULL, m_reel_up, r, st)) != REEL_OK)
        metrics_registry_drop(reg, r);
    return rc;
}

int reactor_ready(void *arg, char *why, size_t cap) {
    reactor_t *r = arg;
    const char *bad;

    pthread_mutex_lock(&r->mu);
    bad = r->stopping ? "stopping" : r->consumer == NULL ? "starting" : NULL;
    pthread_mutex_unlock(&r->mu);
    if (bad != NULL)
        snprintf(why, cap, "%s", bad);
    return bad == NULL;
}
