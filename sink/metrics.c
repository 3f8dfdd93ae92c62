/*
 * sink/metrics.c: reel-sink's metrics and readiness (--metrics-listen).
 *
 * Per sink, read from its runner under runner.mu when a scrape asks, so
 * delivering costs nothing more than it did: delivered, failed attempts by
 * class, dead letters recorded, disabled, held and in flight. A delivery's
 * time (request to answer) is a histogram the webhook engine observes.
 *
 * Lag is reel's head minus the sink's acknowledged revision. The head is
 * read from reel (GetHead, once per scrape, one attempt with a short
 * deadline, never retried: a scrape must not hang on reel). When reel does
 * not answer, the lag is computed from the last head read, and
 * reel_sink_reel_up says 0: the figure is never silently stale. A sink
 * that is not streaming (starting, or standing by while another reel-sink
 * holds its consumer) has no lag series: it does not know its cursor, and
 * the process that holds the consumer reports it.
 *
 * Readiness: ready while every sink runs or stands by; not ready while one
 * is starting, stopping, disabled (410) or stopped for good.
 */
#include "sink/metrics.h"

#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "reel/v1/wal.pb-c.h"

#define HEAD_TIMEOUT_MS 1000

struct sink_metrics {
    sink_runner_t **runners;
    size_t n;
    reel_client_t *client;
    _Atomic uint64_t head; /* the last head read from reel */
    atomic_int reel_up;
};

/* Reads reel's head into m->head; 0, or -1 (m->reel_up says so). */
static void read_head(sink_metrics_t *m) {
    Reel__V1__GetHeadRequest req = REEL__V1__GET_HEAD_REQUEST__INIT;
    Reel__V1__GetHeadResponse *resp = NULL;
    reel_reply_t rep;
    uint8_t buf[8];
    size_t len = reel__v1__get_head_request__pack(&req, buf);

    if (reel_client_unary(m->client, "/reel.v1.Wal/GetHead", buf, len,
                          HEAD_TIMEOUT_MS, &rep) == 0)
        resp = reel__v1__get_head_response__unpack(NULL, rep.len, rep.body);
    reel_reply_fini(&rep);
    atomic_store(&m->reel_up, resp != NULL);
    if (resp == NULL)
        return;
    if (resp->head_revision > atomic_load(&m->head))
        atomic_store(&m->head, resp->head_revision);
    reel__v1__get_head_response__free_unpacked(resp, NULL);
}

/* One number of each runner, read under its lock; NAN: no series. */
typedef double (*runner_fn)(sink_runner_t *r, const reel_consumer_stats_t *s,
                            uint64_t head);

static void each_runner(sink_metrics_t *m, metrics_emit_t *e, runner_fn fn,
                        uint64_t head) {
    for (size_t i = 0; i < m->n; i++) {
        sink_runner_t *r = m->runners[i];
        reel_consumer_stats_t s = {0};
        const char *l[] = {"sink", r->cfg->name, NULL};
        double v;

        pthread_mutex_lock(&r->mu);
        if (r->consumer != NULL)
            reel_consumer_stats(r->consumer, &s);
        v = fn(r, &s, head);
        pthread_mutex_unlock(&r->mu);
        if (!isnan(v))
            metrics_emit(e, l, v);
    }
}

static double f_delivered(sink_runner_t *r, const reel_consumer_stats_t *s,
                          uint64_t head) {
    (void)s;
    (void)head;
    return (double)r->delivered;
}

static double f_dead(sink_runner_t *r, const reel_consumer_stats_t *s,
                     uint64_t head) {
    (void)s;
    (void)head;
    return (double)r->dead_lettered;
}

static double f_disabled(sink_runner_t *r, const reel_consumer_stats_t *s,
                         uint64_t head) {
    (void)s;
    (void)head;
    return r->disabled ? 1 : 0;
}

static double f_held(sink_runner_t *r, const reel_consumer_stats_t *s,
                     uint64_t head) {
    (void)s;
    (void)head;
    return (double)sink_window_count(&r->win);
}

static double f_in_flight(sink_runner_t *r, const reel_consumer_stats_t *s,
                          uint64_t head) {
    (void)s;
    (void)head;
    return (double)r->in_flight;
}

static double f_lag(sink_runner_t *r, const reel_consumer_stats_t *s,
                    uint64_t head) {
    (void)r;
    if (!s->streaming)
        return NAN;
    /* The consumer may have heard of a revision the last head read has
     * not: the larger is the head. */
    if (s->delivered > head)
        head = s->delivered;
    return head > s->acked ? (double)(head - s->acked) : 0;
}

static void m_delivered(void *arg, metrics_emit_t *e) {
    each_runner(arg, e, f_delivered, 0);
}
static void m_dead(void *arg, metrics_emit_t *e) {
    each_runner(arg, e, f_dead, 0);
}
static void m_disabled(void *arg, metrics_emit_t *e) {
    each_runner(arg, e, f_disabled, 0);
}
static void m_held(void *arg, metrics_emit_t *e) {
    each_runner(arg, e, f_held, 0);
}
static void m_in_flight(void *arg, metrics_emit_t *e) {
    each_runner(arg, e, f_in_flight, 0);
}

static void m_lag(void *arg, metrics_emit_t *e) {
    sink_metrics_t *m = arg;

    read_head(m);
    each_runner(m, e, f_lag, atomic_load(&m->head));
}

static double m_reel_up(void *arg) {
    sink_metrics_t *m = arg;

    return atomic_load(&m->reel_up) ? 1 : 0;
}

static void m_failures(void *arg, metrics_emit_t *e) {
    sink_metrics_t *m = arg;

    for (size_t i = 0; i < m->n; i++) {
        sink_runner_t *r = m->runners[i];
        uint64_t f[SINK_FAIL__COUNT];

        pthread_mutex_lock(&r->mu);
        memcpy(f, r->failures, sizeof(f));
        pthread_mutex_unlock(&r->mu);
        for (int c = 0; c < SINK_FAIL__COUNT; c++) {
            const char *l[] = {"sink", r->cfg->name, "class",
                               sink_fail_label((sink_fail_t)c), NULL};

            metrics_emit(e, l, (double)f[c]);
        }
    }
}

reel_code_t sink_metrics_create(metrics_registry_t *reg,
                                sink_runner_t **runners, size_t n,
                                reel_client_t *client, sink_metrics_t **out,
                                reel_status_t *st) {
    sink_metrics_t *m = calloc(1, sizeof(*m));
    reel_code_t rc;

    *out = NULL;
    if (m == NULL)
        return reel_status_set(st, REEL_RESOURCE_EXHAUSTED, "out of memory");
    m->runners = runners;
    m->n = n;
    m->client = client;
    if ((rc = metrics_reg_collector(reg, m, METRICS_COUNTER,
                                    "reel_sink_delivered_total",
                                    "Events delivered, by sink.", m_delivered,
                                    m, st)) != REEL_OK ||
        (rc = metrics_reg_collector(
             reg, m, METRICS_COUNTER, "reel_sink_failures_total",
             "Failed delivery attempts, by sink and class.", m_failures, m,
             st)) != REEL_OK ||
        (rc = metrics_reg_collector(
             reg, m, METRICS_GAUGE, "reel_sink_lag",
             "Revisions reel holds past the sink's acknowledged one.", m_lag,
             m, st)) != REEL_OK ||
        (rc = metrics_reg_fn(reg, m, METRICS_GAUGE, "reel_sink_reel_up",
                             "1 if reel answered the last scrape's head read "
                             "(else reel_sink_lag uses the last head read).",
                             NULL, m_reel_up, m, st)) != REEL_OK ||
        (rc = metrics_reg_collector(
             reg, m, METRICS_GAUGE, "reel_sink_dead_letters",
             "Events this process recorded as dead letters since it started.",
             m_dead, m, st)) != REEL_OK ||
        (rc = metrics_reg_collector(
             reg, m, METRICS_GAUGE, "reel_sink_disabled",
             "1 while the sink is disabled (its receiver answered 410).",
             m_disabled, m, st)) != REEL_OK ||
        (rc = metrics_reg_collector(
             reg, m, METRICS_GAUGE, "reel_sink_held_events",
             "Events held in the sink's window, not yet done.", m_held, m,
             st)) != REEL_OK ||
        (rc = metrics_reg_collector(
             reg, m, METRICS_GAUGE, "reel_sink_in_flight",
             "Requests or publishes on the wire.", m_in_flight, m, st)) !=
            REEL_OK)
        goto fail;
    for (size_t i = 0; i < n; i++) {
        const char *l[] = {"sink", runners[i]->cfg->name, NULL};

        if ((rc = metrics_reg_histogram(
                 reg, m, "reel_sink_delivery_seconds",
                 "A delivery request's time, sent to answered (webhooks).", l,
                 metrics_buckets_seconds, metrics_buckets_seconds_n,
                 &runners[i]->m_delivery, st)) != REEL_OK)
            goto fail;
    }
    *out = m;
    return REEL_OK;
fail:
    metrics_registry_drop(reg, m);
    for (size_t i = 0; i < n; i++)
        runners[i]->m_delivery = NULL;
    free(m);
    return rc;
}

void sink_metrics_destroy(metrics_registry_t *reg, sink_metrics_t *m) {
    if (m == NULL)
        return;
    metrics_registry_drop(reg, m);
    free(m);
}

int sink_metrics_ready(void *arg, char *why, size_t cap) {
    sink_metrics_t *m = arg;

    for (size_t i = 0; i < m->n; i++) {
        sink_runner_t *r = m->runners[i];
        const char *bad = NULL;

        pthread_mutex_lock(&r->mu);
        bad = r->fatal        ? "stopped"
              : r->stopping   ? "stopping"
              : r->disabled   ? "disabled"
              : !r->consumer  ? "starting"
                              : NULL;
        pthread_mutex_unlock(&r->mu);
        if (bad != NULL) {
            snprintf(why, cap, "sink %s: %s", r->cfg->name, bad);
            return 0;
        }
    }
    return 1;
}
