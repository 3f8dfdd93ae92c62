/*
 * bench/suite_recovery.c: issue 21's rows. recovery: from a lease's expiry
 * to the run claimed by a worker waiting in ClaimNextRun (p50/p99).
 * timers: the lateness of delayed signals with --timers scheduled, and
 * reeld's RSS per scheduled timer. dispatch: --workers workers in
 * ClaimNextRun taking --runs runs made claimable together (runs/s).
 *
 * Times the server sets (a lease's expiry, a signal's delivery) are wall
 * clock ms; this client compares its own wall clock with them (the same
 * machine), so figures are in whole ms at best.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bench/bench.h"
#include "reel/v1/journal.pb-c.h"
#include "reel/v1/signals.pb-c.h"
#include "reel/v1/wal.pb-c.h"

static int64_t wall_ns(void) {
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static long rss_kib(int pid) {
    char path[64], line[256];
    long kib = -1;
    FILE *f;

    snprintf(path, sizeof(path), "/proc/%d/status", pid);
    if ((f = fopen(path, "r")) == NULL)
        return -1;
    while (fgets(line, sizeof(line), f) != NULL)
        if (sscanf(line, "VmRSS: %ld", &kib) == 1)
            break;
    fclose(f);
    return kib;
}

/* A session name no earlier run of the bench used. */
static void fresh(char *buf, size_t n, const char *what) {
    snprintf(buf, n, "%s.%ld.%lld", what, (long)getpid(),
             (long long)(ac_now_ns() / 1000));
}

static Reel__V1__Run *begin_run(ac_t *ac, int m_begin, const char *app,
                                const char *session, long inv, int64_t ttl) {
    Reel__V1__BeginRunRequest br = REEL__V1__BEGIN_RUN_REQUEST__INIT;
    char id[32];
    uint8_t buf[1024], *resp = NULL;
    size_t len, rlen = 0;
    Reel__V1__Run *run = NULL;

    snprintf(id, sizeof(id), "%ld", inv);
    br.app = (char *)app;
    br.user = "bench";
    br.session = (char *)session;
    br.invocation_id = id;
    br.lease_owner = "reel-bench";
    br.lease_ttl_ms = ttl;
    len = reel__v1__begin_run_request__pack(&br, buf);
    if (bench_call(ac, m_begin, buf, len, 10000, &resp, &rlen) == 0)
        run = reel__v1__run__unpack(NULL, rlen, resp);
    free(resp);
    return run;
}

/* ---- ClaimNextRun workers ------------------------------------------------ */

typedef struct claims {
    ac_t *ac;
    int method;
    const char *app;
    int64_t wait_ms;
    int once; /* recovery: a worker stops after its first run */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int active; /* workers still asking */
    long found, errors;
    int64_t first_ns, last_ns;
    /* recovery: each claim's latency from the run's old expiry */
    lat_t *lat;
    char (*ids)[32];
    int64_t *expiry_ms;
    int n_ids;
} claims_t;

static int claim_next(claims_t *c);

static void claimed(void *arg, int code, const uint8_t *resp, size_t len) {
    claims_t *c = arg;
    int64_t now = ac_now_ns(), wall = wall_ns();
    Reel__V1__ClaimNextRunResponse *r =
        code == 0
            ? reel__v1__claim_next_run_response__unpack(NULL, len, resp)
            : NULL;
    int again = r != NULL && r->found && !c->once;

    pthread_mutex_lock(&c->mu);
    if (r == NULL)
        c->errors++;
    else if (r->found) {
        c->found++;
        if (c->first_ns == 0)
            c->first_ns = now;
        c->last_ns = now;
        for (int i = 0; c->lat != NULL && i < c->n_ids; i++)
            if (strcmp(c->ids[i], r->run->run_id) == 0) {
                lat_add(c->lat, wall - c->expiry_ms[i] * 1000000);
                break;
            }
    }
    if (!again) {
        c->active--;
        pthread_cond_broadcast(&c->cv);
    }
    pthread_mutex_unlock(&c->mu);
    if (r != NULL)
        reel__v1__claim_next_run_response__free_unpacked(r, NULL);
    if (again && claim_next(c) != 0) {
        pthread_mutex_lock(&c->mu);
        c->errors++;
        c->active--;
        pthread_cond_broadcast(&c->cv);
        pthread_mutex_unlock(&c->mu);
    }
}

/* One worker's next ClaimNextRun; it asks again after each run it gets and
 * stops at the first wait that finds nothing. */
static int claim_next(claims_t *c) {
    Reel__V1__ClaimNextRunRequest q = REEL__V1__CLAIM_NEXT_RUN_REQUEST__INIT;
    uint8_t buf[512];
    size_t len;

    q.app = (char *)c->app;
    q.lease_owner = "reel-bench";
    q.lease_ttl_ms = 3600000;
    q.wait_ms = c->wait_ms;
    len = reel__v1__claim_next_run_request__pack(&q, buf);
    return ac_unary(c->ac, c->method, buf, len, c->wait_ms + 10000, claimed, c);
}

static void claims_start(claims_t *c, int workers) {
    pthread_mutex_lock(&c->mu);
    c->active += workers;
    pthread_mutex_unlock(&c->mu);
    for (int i = 0; i < workers; i++)
        if (claim_next(c) != 0) {
            pthread_mutex_lock(&c->mu);
            c->errors++;
            c->active--;
            pthread_mutex_unlock(&c->mu);
        }
}

static void claims_wait(claims_t *c) {
    pthread_mutex_lock(&c->mu);
    while (c->active > 0)
        pthread_cond_wait(&c->cv, &c->mu);
    pthread_mutex_unlock(&c->mu);
}

/* ---- recovery ------------------------------------------------------------ */

#define RECOVERY_BATCH 8

int bench_recovery(const bench_opts_t *o) {
    ac_t *ac = ac_create(o->addr, 2, 2);
    int m_begin = ac_method(ac, "/reel.v1.Journal/BeginRun");
    int m_next = ac_method(ac, "/reel.v1.Journal/ClaimNextRun");
    char app[64], ids[RECOVERY_BATCH][32];
    int64_t expiry[RECOVERY_BATCH], stop;
    long inv = 0, failed = 0;
    report_t rep;
    lat_t lat;
    cJSON *row;

    fresh(app, sizeof(app), "recovery");
    lat_init(&lat);
    stop = ac_now_ns() + (int64_t)(o->duration_s * 1e9);
    while (ac_now_ns() < stop) {
        claims_t c;

        memset(&c, 0, sizeof(c));
        pthread_mutex_init(&c.mu, NULL);
        pthread_cond_init(&c.cv, NULL);
        c.ac = ac;
        c.method = m_next;
        c.app = app;
        c.wait_ms = 3000;
        c.once = 1;
        c.lat = &lat;
        c.ids = ids;
        c.expiry_ms = expiry;
        /* Workers wait first; then runs whose workers "die" at once (a
         * short lease, never renewed), their expiries a few ms apart. */
        claims_start(&c, RECOVERY_BATCH);
        for (int i = 0; i < RECOVERY_BATCH; i++) {
            Reel__V1__Run *r = begin_run(ac, m_begin, app, "s", inv++,
                                         100 + 7 * i);

            if (r == NULL) {
                failed++;
                continue;
            }
            snprintf(ids[c.n_ids], sizeof(ids[0]), "%s", r->run_id);
            expiry[c.n_ids++] = r->lease_expires_at_ms;
            reel__v1__run__free_unpacked(r, NULL);
        }
        claims_wait(&c);
        failed += c.errors + (c.n_ids - c.found);
        pthread_mutex_destroy(&c.mu);
        pthread_cond_destroy(&c.cv);
        bench_progress(o, "  recovery: %zu runs recovered", lat_count(&lat));
    }
    bench_progress_done(o);
    report_init(&rep, "recovery", o);
    row = report_row(&rep);
    cJSON_AddNumberToObject(row, "samples", (double)lat_count(&lat));
    cJSON_AddNumberToObject(row, "failed", (double)failed);
    cJSON_AddNumberToObject(row, "p50_ms", lat_quantile_us(&lat, 0.50) / 1000);
    cJSON_AddNumberToObject(row, "p99_ms", lat_quantile_us(&lat, 0.99) / 1000);
    cJSON_AddNumberToObject(row, "max_ms", lat_quantile_us(&lat, 1.0) / 1000);
    lat_fini(&lat);
    ac_destroy(ac);
    if (failed > 0)
        fprintf(stderr, "reel-bench: recovery: %ld runs not recovered\n",
                failed);
    return report_finish(&rep) || failed > 0;
}

/* ---- dispatch ------------------------------------------------------------ */

typedef struct begin_ctx {
    const char *app, *session;
} begin_ctx_t;

static size_t make_begin(void *arg, uint64_t i, uint8_t *buf, size_t cap) {
    begin_ctx_t *b = arg;
    Reel__V1__BeginRunRequest br = REEL__V1__BEGIN_RUN_REQUEST__INIT;
    char id[32];

    (void)cap;
    snprintf(id, sizeof(id), "%llu", (unsigned long long)i);
    br.app = (char *)b->app;
    br.user = "bench";
    br.session = (char *)b->session;
    br.invocation_id = id;
    br.lease_owner = "reel-bench";
    br.lease_ttl_ms = 1; /* expires at once: claimable from the expiry on */
    return reel__v1__begin_run_request__pack(&br, buf);
}

int bench_dispatch(const bench_opts_t *o) {
    ac_t *ac = ac_create(o->addr, o->connections, o->threads);
    int m_begin = ac_method(ac, "/reel.v1.Journal/BeginRun");
    int m_next = ac_method(ac, "/reel.v1.Journal/ClaimNextRun");
    int workers = o->workers > 0 ? o->workers : 64;
    long runs = o->claim_runs > 0 ? o->claim_runs : 20000;
    char app[64];
    begin_ctx_t b;
    bench_load_result_t lr;
    claims_t c;
    report_t rep;
    cJSON *row;
    double secs;
    int rc = 0;

    fresh(app, sizeof(app), "dispatch");
    b.app = app;
    b.session = "s";
    /* The runs first, each expiring at once: all claimable together. */
    memset(&lr, 0, sizeof(lr));
    bench_load(o, ac, m_begin, 256, INT64_MAX / 4, (uint64_t)runs, make_begin,
               &b, NULL, &lr);
    if (lr.errors > 0 || lr.ok != (uint64_t)runs) {
        fprintf(stderr, "reel-bench: dispatch: %llu of %ld BeginRun failed\n",
                (unsigned long long)lr.errors, runs);
        ac_destroy(ac);
        return 1;
    }
    bench_sleep_ms(500); /* every lease expired and committed */
    memset(&c, 0, sizeof(c));
    pthread_mutex_init(&c.mu, NULL);
    pthread_cond_init(&c.cv, NULL);
    c.ac = ac;
    c.method = m_next;
    c.app = app;
    c.wait_ms = 500;
    claims_start(&c, workers);
    claims_wait(&c);
    secs = (double)(c.last_ns - c.first_ns) / 1e9;
    report_init(&rep, "dispatch", o);
    row = report_row(&rep);
    cJSON_AddNumberToObject(row, "workers", workers);
    cJSON_AddNumberToObject(row, "runs", (double)runs);
    cJSON_AddNumberToObject(row, "claimed", (double)c.found);
    cJSON_AddNumberToObject(row, "errors", (double)c.errors);
    cJSON_AddNumberToObject(row, "runs_per_s",
                            secs > 0 ? (double)c.found / secs : 0);
    if (c.found != runs || c.errors > 0) {
        fprintf(stderr, "reel-bench: dispatch: claimed %ld of %ld (%ld "
                        "errors)\n",
                c.found, runs, c.errors);
        rc = 1;
    }
    pthread_mutex_destroy(&c.mu);
    pthread_cond_destroy(&c.cv);
    ac_destroy(ac);
    return report_finish(&rep) || rc;
}

/* ---- timers -------------------------------------------------------------- */

typedef struct sched_ctx {
    const char *run_id;
    int64_t base_ms, spread_ms;
} sched_ctx_t;

static size_t make_delayed(void *arg, uint64_t i, uint8_t *buf, size_t cap) {
    sched_ctx_t *s = arg;
    Reel__V1__SendSignalRequest q = REEL__V1__SEND_SIGNAL_REQUEST__INIT;

    (void)cap;
    q.run_id = (char *)s->run_id;
    q.name = "tick";
    /* Spread over the window, out of send order. */
    q.deliver_at_ms = s->base_ms +
                      (int64_t)((i * 7919) % (uint64_t)s->spread_ms);
    return reel__v1__send_signal_request__pack(&q, buf);
}

typedef struct tail {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    long seen, early;
    int ended;
    lat_t *server, *client; /* delivery - deliver_at; receipt - deliver_at */
} tail_t;

static void tail_msg(void *arg, const uint8_t *msg, size_t len) {
    tail_t *t = arg;
    int64_t wall = wall_ns();
    Reel__V1__Event *ev = reel__v1__event__unpack(NULL, len, msg);

    if (ev == NULL)
        return;
    if (ev->type == REEL__V1__EVENT__TYPE__SIGNAL_SENT && ev->signal != NULL &&
        ev->signal->deliver_at_ms > 0) {
        int64_t at = ev->signal->deliver_at_ms;

        pthread_mutex_lock(&t->mu);
        if (ev->signal->sent_at_ms < at)
            t->early++;
        lat_add(t->server, (ev->signal->sent_at_ms - at) * 1000000);
        lat_add(t->client, wall - at * 1000000);
        t->seen++;
        pthread_cond_broadcast(&t->cv);
        pthread_mutex_unlock(&t->mu);
    }
    reel__v1__event__free_unpacked(ev, NULL);
}

static void tail_end(void *arg, int code, const char *details) {
    tail_t *t = arg;

    (void)code;
    (void)details;
    pthread_mutex_lock(&t->mu);
    t->ended = 1;
    pthread_cond_broadcast(&t->cv);
    pthread_mutex_unlock(&t->mu);
}

int bench_timers(const bench_opts_t *o) {
    ac_t *ac = ac_create(o->addr, o->connections, o->threads);
    int m_begin = ac_method(ac, "/reel.v1.Journal/BeginRun");
    int m_send = ac_method(ac, "/reel.v1.Signals/SendSignal");
    int m_sub = ac_method(ac, "/reel.v1.Wal/SubscribeEvents");
    long n = o->timers > 0 ? o->timers : 100000;
    Reel__V1__SubscribeEventsRequest sq =
        REEL__V1__SUBSCRIBE_EVENTS_REQUEST__INIT;
    char session[64], pattern[128];
    uint8_t buf[512];
    size_t len;
    Reel__V1__Run *run;
    sched_ctx_t s;
    bench_load_result_t lr;
    ac_stream_t *st = NULL;
    tail_t t;
    lat_t server, client;
    long rss0 = -1, rss1 = -1, rss2 = -1;
    int64_t t0, deadline;
    report_t rep;
    cJSON *row;
    int rc = 0;

    fresh(session, sizeof(session), "timers");
    run = begin_run(ac, m_begin, "reel-bench", session, 1, 24LL * 3600000);
    if (run == NULL) {
        fprintf(stderr, "reel-bench: timers: BeginRun failed\n");
        ac_destroy(ac);
        return 1;
    }
    memset(&t, 0, sizeof(t));
    pthread_mutex_init(&t.mu, NULL);
    pthread_cond_init(&t.cv, NULL);
    lat_init(&server);
    lat_init(&client);
    t.server = &server;
    t.client = &client;
    snprintf(pattern, sizeof(pattern), "signal.%s.tick.sent", run->run_id);
    sq.subject_pattern = pattern;
    sq.from_revision = 0;
    len = reel__v1__subscribe_events_request__pack(&sq, buf);
    if (o->pid > 0)
        rss0 = rss_kib(o->pid);
    /* Scheduled well after the sends end (about 20,000 sends/s, doubled),
     * due at --rate a second: lateness at a delivery rate the writer
     * keeps up with, whatever the number waiting. */
    t0 = wall_ns() / 1000000;
    s.run_id = run->run_id;
    s.base_ms = t0 + 2000 + n / 10;
    s.spread_ms = n * 1000 / (o->rate > 0 ? o->rate : 1000) + 1;
    memset(&lr, 0, sizeof(lr));
    bench_load(o, ac, m_send, 256, INT64_MAX / 4, (uint64_t)n, make_delayed,
               &s, NULL, &lr);
    if (o->pid > 0)
        rss1 = rss_kib(o->pid);
    if (wall_ns() / 1000000 >= s.base_ms)
        fprintf(stderr, "reel-bench: timers: the sends ran past the first "
                        "due time; some were delivered at once\n");
    st = ac_stream_open(ac, m_sub, buf, len, 1, 1, tail_msg, tail_end, &t);
    deadline = ac_now_ns() +
               (s.base_ms + s.spread_ms - wall_ns() / 1000000 + 30000) *
                   1000000;
    pthread_mutex_lock(&t.mu);
    while (t.seen < (long)lr.ok && !t.ended && ac_now_ns() < deadline) {
        struct timespec ts;

        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += 1;
        pthread_cond_timedwait(&t.cv, &t.mu, &ts);
        bench_progress(o, "  timers: %ld of %llu delivered", t.seen,
                       (unsigned long long)lr.ok);
    }
    pthread_mutex_unlock(&t.mu);
    bench_progress_done(o);
    if (o->pid > 0)
        rss2 = rss_kib(o->pid);
    ac_stream_cancel(st);
    ac_stream_release(st);
    report_init(&rep, "timers", o);
    row = report_row(&rep);
    cJSON_AddNumberToObject(row, "scheduled", (double)lr.ok);
    cJSON_AddNumberToObject(row, "delivered", (double)t.seen);
    cJSON_AddNumberToObject(row, "early", (double)t.early);
    cJSON_AddNumberToObject(row, "late_p50_ms",
                            lat_quantile_us(&server, 0.50) / 1000);
    cJSON_AddNumberToObject(row, "late_p99_ms",
                            lat_quantile_us(&server, 0.99) / 1000);
    cJSON_AddNumberToObject(row, "seen_late_p99_ms",
                            lat_quantile_us(&client, 0.99) / 1000);
    if (o->pid > 0) {
        cJSON_AddNumberToObject(row, "rss_before_kib", (double)rss0);
        cJSON_AddNumberToObject(row, "rss_scheduled_kib", (double)rss1);
        cJSON_AddNumberToObject(row, "rss_after_kib", (double)rss2);
        cJSON_AddNumberToObject(row, "rss_bytes_per_timer",
                                lr.ok ? (double)(rss1 - rss0) * 1024 /
                                            (double)lr.ok
                                      : 0);
    }
    if (t.seen != (long)lr.ok || lr.errors > 0 || t.early > 0) {
        fprintf(stderr, "reel-bench: timers: %ld of %llu delivered, %ld "
                        "early, %llu sends failed\n",
                t.seen, (unsigned long long)lr.ok, t.early,
                (unsigned long long)lr.errors);
        rc = 1;
    }
    lat_fini(&server);
    lat_fini(&client);
    pthread_mutex_destroy(&t.mu);
    pthread_cond_destroy(&t.cv);
    reel__v1__run__free_unpacked(run, NULL);
    ac_destroy(ac);
    return report_finish(&rep) || rc;
}
