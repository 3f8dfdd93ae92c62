/*
 * bench/suite_watch.c: push latency. `watch`: N watchers on one key (and
 * one pattern watcher over many keys) while a writer writes at a fixed
 * rate, each value stamped with the writer's clock when it was sent; the
 * latency is receipt minus stamp, so it includes the durable commit.
 * With --shared, watchers share streams: reel's coalesced WatchValues,
 * etcd's multiplexed Watch; each watcher named by a message counts.
 * `signal`: a run awaits, SendSignal, the await returns.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "reel/v1/journal.pb-c.h"
#include "reel/v1/kv.pb-c.h"
#include "reel/v1/signals.pb-c.h"
#include "reel/v1/wal.pb-c.h"
#include "bench/bench.h"
#include "bench/etcd.pb-c.h"
#include "client/client.h"

typedef struct wstate {
    int etcd;
    int batched; /* KV.WatchValueBatches */
    lat_t *lat;
    atomic_long ready, received, ended, bad, messages;
    atomic_llong last_ns; /* when the latest event arrived */
} wstate_t;

static void record(wstate_t *ws, const uint8_t *v, size_t len, int64_t now) {
    int64_t t = bench_value_stamp((const char *)v, len);

    if (t > 0) {
        lat_add(ws->lat, now - t);
        atomic_fetch_add(&ws->received, 1);
        atomic_store(&ws->last_ns, now);
    } else {
        atomic_fetch_add(&ws->bad, 1);
    }
}

/* One reel ValueEvent, alone or an element of a batch. */
static void value_event(wstate_t *ws, const Reel__V1__ValueEvent *e,
                        int64_t now) {
    if (e->type == REEL__V1__VALUE_EVENT__TYPE__BOOTSTRAP_DONE)
        atomic_fetch_add(&ws->ready, 1);
    else if (e->type == REEL__V1__VALUE_EVENT__TYPE__PUT)
        record(ws, (const uint8_t *)e->value, strlen(e->value), now);
}

static void on_event(void *arg, const uint8_t *msg, size_t len) {
    wstate_t *ws = arg;
    int64_t now = ac_now_ns();

    atomic_fetch_add(&ws->messages, 1);
    if (ws->etcd) {
        Etcdserverpb__WatchResponse *r =
            etcdserverpb__watch_response__unpack(NULL, len, msg);

        if (r == NULL) {
            atomic_fetch_add(&ws->bad, 1);
            return;
        }
        if (r->created)
            atomic_fetch_add(&ws->ready, 1);
        for (size_t i = 0; i < r->n_events; i++)
            if (r->events[i]->kv != NULL)
                record(ws, r->events[i]->kv->value.data,
                       r->events[i]->kv->value.len, now);
        etcdserverpb__watch_response__free_unpacked(r, NULL);
    } else if (ws->batched) {
        Reel__V1__ValueEventBatch *b =
            reel__v1__value_event_batch__unpack(NULL, len, msg);

        if (b == NULL || b->n_events == 0) {
            atomic_fetch_add(&ws->bad, 1);
            if (b != NULL)
                reel__v1__value_event_batch__free_unpacked(b, NULL);
            return;
        }
        for (size_t i = 0; i < b->n_events; i++)
            value_event(ws, b->events[i], now);
        reel__v1__value_event_batch__free_unpacked(b, NULL);
    } else {
        Reel__V1__ValueEvent *e = reel__v1__value_event__unpack(NULL, len, msg);

        if (e == NULL) {
            atomic_fetch_add(&ws->bad, 1);
            return;
        }
        value_event(ws, e, now);
        reel__v1__value_event__free_unpacked(e, NULL);
    }
}

static void on_end(void *arg, int code, const char *details) {
    wstate_t *ws = arg;

    (void)code;
    (void)details;
    atomic_fetch_add(&ws->ended, 1);
}

/* Opens one watch on ns/key (reel) or key..range_end (etcd). */
static ac_stream_t *open_watch(ac_t *ac, int m, int etcd, const char *ns,
                               const char *key, const char *range_end,
                               int receive, ac_msg_fn on_msg, ac_end_fn end,
                               void *arg) {
    uint8_t buf[2048];
    size_t len;

    if (etcd) {
        Etcdserverpb__WatchRequest r = ETCDSERVERPB__WATCH_REQUEST__INIT;
        Etcdserverpb__WatchCreateRequest c =
            ETCDSERVERPB__WATCH_CREATE_REQUEST__INIT;

        c.key.data = (uint8_t *)key;
        c.key.len = strlen(key);
        if (range_end != NULL) {
            c.range_end.data = (uint8_t *)range_end;
            c.range_end.len = strlen(range_end);
        }
        c.prev_kv = 1; /* like reel: every event carries the old value */
        r.request_union_case =
            ETCDSERVERPB__WATCH_REQUEST__REQUEST_UNION_CREATE_REQUEST;
        r.create_request = &c;
        len = etcdserverpb__watch_request__pack(&r, buf);
        return ac_stream_open(ac, m, buf, len, 0, receive, on_msg, end, arg);
    } else {
        Reel__V1__WatchValueRequest r = REEL__V1__WATCH_VALUE_REQUEST__INIT;

        r.namespace_ = (char *)ns;
        r.key = (char *)key;
        r.start = REEL__V1__WATCH_VALUE_REQUEST__START__NOW;
        len = reel__v1__watch_value_request__pack(&r, buf);
        return ac_stream_open(ac, m, buf, len, 1, receive, on_msg, end, arg);
    }
}

/*
 * Opens n watches and waits until each is live (or 60 s pass). key_fmt may
 * take the watcher's index (%d), for a key each.
 */
static int open_watches(const bench_opts_t *o, ac_t *ac, int etcd,
                        const char *ns, const char *key_fmt,
                        const char *range_end, int n, wstate_t *ws,
                        ac_stream_t **out) {
    int m = ac_method(ac, etcd          ? "/etcdserverpb.Watch/Watch"
                          : ws->batched ? "/reel.v1.KV/WatchValueBatches"
                                        : "/reel.v1.KV/WatchValue");
    int64_t until = ac_now_ns() + 60 * 1000000000LL;

    for (int i = 0; i < n; i++) {
        char key[256];

        snprintf(key, sizeof(key), key_fmt, i);
        out[i] = open_watch(ac, m, etcd, ns, key, range_end, 1, on_event,
                            on_end, ws);
    }
    while (atomic_load(&ws->ready) < n && ac_now_ns() < until) {
        bench_progress(o, "  opening watchers: %ld of %d live",
                       atomic_load(&ws->ready), n);
        bench_sleep_ms(10);
    }
    bench_progress_done(o);
    return atomic_load(&ws->ready) == n ? 0 : -1;
}

static void close_streams(ac_stream_t **s, int n, atomic_long *ended) {
    int64_t until = ac_now_ns() + 10 * 1000000000LL;

    for (int i = 0; i < n; i++)
        ac_stream_cancel(s[i]);
    while (ended != NULL && atomic_load(ended) < n && ac_now_ns() < until)
        bench_sleep_ms(5);
    for (int i = 0; i < n; i++)
        ac_stream_release(s[i]);
}

/* ---- many watches per stream ---------------------------------------------- */

/* One WatchValuesEvent: for its watch and, coalesced, each of `also`. */
static void multi_element(wstate_t *ws, const Reel__V1__WatchValuesEvent *e,
                          int64_t now) {
    long k = 1 + (long)e->n_also;

    if (e->event == NULL) {
        atomic_fetch_add(&ws->bad, 1);
    } else if (e->event->type == REEL__V1__VALUE_EVENT__TYPE__BOOTSTRAP_DONE) {
        atomic_fetch_add(&ws->ready, k);
    } else if (e->event->type == REEL__V1__VALUE_EVENT__TYPE__PUT) {
        for (long i = 0; i < k; i++)
            record(ws, (const uint8_t *)e->event->value,
                   strlen(e->event->value), now);
    }
}

static void on_multi_event(void *arg, const uint8_t *msg, size_t len) {
    wstate_t *ws = arg;
    int64_t now = ac_now_ns();

    atomic_fetch_add(&ws->messages, 1);
    if (ws->batched) {
        Reel__V1__WatchValuesEventBatch *b =
            reel__v1__watch_values_event_batch__unpack(NULL, len, msg);

        if (b == NULL || b->n_events == 0)
            atomic_fetch_add(&ws->bad, 1);
        for (size_t i = 0; b != NULL && i < b->n_events; i++)
            multi_element(ws, b->events[i], now);
        if (b != NULL)
            reel__v1__watch_values_event_batch__free_unpacked(b, NULL);
    } else {
        Reel__V1__WatchValuesEvent *e =
            reel__v1__watch_values_event__unpack(NULL, len, msg);

        if (e == NULL) {
            atomic_fetch_add(&ws->bad, 1);
            return;
        }
        multi_element(ws, e, now);
        reel__v1__watch_values_event__free_unpacked(e, NULL);
    }
}

/* Waits until n watches are live (or 60 s pass): 0, or -1. */
static int wait_live(const bench_opts_t *o, wstate_t *ws, long n) {
    int64_t until = ac_now_ns() + 60 * 1000000000LL;

    while (atomic_load(&ws->ready) < n && ac_now_ns() < until) {
        bench_progress(o, "  opening watches: %ld of %ld live",
                       atomic_load(&ws->ready), n);
        bench_sleep_ms(10);
    }
    bench_progress_done(o);
    return atomic_load(&ws->ready) >= n ? 0 : -1;
}

/*
 * Opens n watches on keys key_fmt % i, per_stream of them on each
 * KV.WatchValues stream (ws->batched: WatchValuesBatches), coalesced if
 * asked; returns the number of streams (in *out), waiting until every
 * watch is live (or 60 s pass); -1 if some never were.
 */
static int open_shared_watches(const bench_opts_t *o, ac_t *ac, const char *ns,
                               const char *key_fmt, int n, int per_stream,
                               int coalesce, wstate_t *ws, ac_stream_t **out) {
    int m = ac_method(ac, ws->batched ? "/reel.v1.KV/WatchValuesBatches"
                                      : "/reel.v1.KV/WatchValues"),
        streams = 0;
    Reel__V1__WatchValueRequest *w = calloc((size_t)per_stream, sizeof(*w));
    Reel__V1__WatchValueRequest **wp = calloc((size_t)per_stream, sizeof(*wp));
    char (*keys)[64] = calloc((size_t)per_stream, sizeof(*keys));

    if (w == NULL || wp == NULL || keys == NULL) {
        free(w), free(wp), free(keys);
        return -1;
    }
    for (int first = 0; first < n; first += per_stream) {
        Reel__V1__WatchValuesRequest r = REEL__V1__WATCH_VALUES_REQUEST__INIT;
        int k = n - first < per_stream ? n - first : per_stream;
        uint8_t *buf;
        size_t len;

        for (int i = 0; i < k; i++) {
            reel__v1__watch_value_request__init(&w[i]);
            snprintf(keys[i], sizeof(keys[i]), key_fmt, first + i);
            w[i].namespace_ = (char *)ns;
            w[i].key = keys[i];
            w[i].start = REEL__V1__WATCH_VALUE_REQUEST__START__NOW;
            wp[i] = &w[i];
        }
        r.n_watches = (size_t)k;
        r.watches = wp;
        r.coalesce = coalesce;
        len = reel__v1__watch_values_request__get_packed_size(&r);
        if ((buf = malloc(len)) == NULL)
            break;
        reel__v1__watch_values_request__pack(&r, buf);
        out[streams++] = ac_stream_open(ac, m, buf, len, 1, 1, on_multi_event,
                                        on_end, ws);
        free(buf);
    }
    free(w), free(wp), free(keys);
    return wait_live(o, ws, n) == 0 ? streams : -1;
}

/*
 * etcd's own multiplexing (as its clientv3 does): n watches on key (to
 * range_end), per_stream create requests on each Watch stream. Returns
 * the number of streams, or -1 if some watch never went live.
 */
static int open_etcd_shared(const bench_opts_t *o, ac_t *ac, const char *key,
                            const char *range_end, int n, int per_stream,
                            wstate_t *ws, ac_stream_t **out) {
    int m = ac_method(ac, "/etcdserverpb.Watch/Watch"), streams = 0;
    Etcdserverpb__WatchRequest r = ETCDSERVERPB__WATCH_REQUEST__INIT;
    Etcdserverpb__WatchCreateRequest c =
        ETCDSERVERPB__WATCH_CREATE_REQUEST__INIT;
    uint8_t buf[1024];
    size_t len;

    c.key.data = (uint8_t *)key;
    c.key.len = strlen(key);
    if (range_end != NULL) {
        c.range_end.data = (uint8_t *)range_end;
        c.range_end.len = strlen(range_end);
    }
    c.prev_kv = 1;
    r.request_union_case =
        ETCDSERVERPB__WATCH_REQUEST__REQUEST_UNION_CREATE_REQUEST;
    r.create_request = &c;
    len = etcdserverpb__watch_request__pack(&r, buf);
    for (int first = 0; first < n; first += per_stream) {
        int k = n - first < per_stream ? n - first : per_stream;
        ac_stream_t *s = ac_stream_open(ac, m, buf, len, 0, 1, on_event,
                                        on_end, ws);

        out[streams++] = s;
        for (int i = 1; s != NULL && i < k; i++)
            ac_stream_send(s, buf, len);
    }
    return wait_live(o, ws, n) == 0 ? streams : -1;
}

/* ---- The paced writer ---------------------------------------------------- */

typedef struct writer {
    const bench_opts_t *o;
    ac_t *ac;
    int method, etcd;
    const char *ns, *key_fmt; /* key_fmt takes the write's index modulo nkeys */
    int nkeys;
    double rate;
    int64_t duration_ns;
    atomic_long sent, acked, errors;
    atomic_int first_error;
} writer_t;

static void write_done(void *arg, int code, const uint8_t *r, size_t len) {
    writer_t *w = arg;

    (void)r;
    (void)len;
    atomic_fetch_add(code == 0 ? &w->acked : &w->errors, 1);
    if (code != 0) {
        int none = 0;

        atomic_compare_exchange_strong(&w->first_error, &none, code);
    }
}

static void *writer_main(void *arg) {
    writer_t *w = arg;
    int64_t t0 = ac_now_ns(), interval = (int64_t)(1e9 / w->rate);
    char *value = malloc((size_t)w->o->value_bytes + 64);
    uint8_t *buf = malloc((size_t)w->o->value_bytes + 1024);

    if (value == NULL || buf == NULL)
        goto out;
    for (long i = 0;; i++) {
        int64_t at = t0 + i * interval, now = ac_now_ns();
        char key[256];
        size_t vlen, len;

        if (at - t0 >= w->duration_ns)
            break;
        if (at > now)
            usleep((useconds_t)((at - now) / 1000));
        snprintf(key, sizeof(key), w->key_fmt, (int)(i % w->nkeys));
        vlen = bench_value(value, (size_t)w->o->value_bytes, ac_now_ns());
        if (w->etcd) {
            Etcdserverpb__PutRequest r = ETCDSERVERPB__PUT_REQUEST__INIT;

            r.key.data = (uint8_t *)key;
            r.key.len = strlen(key);
            r.value.data = (uint8_t *)value;
            r.value.len = vlen;
            len = etcdserverpb__put_request__pack(&r, buf);
        } else {
            Reel__V1__SetValueRequest r = REEL__V1__SET_VALUE_REQUEST__INIT;

            r.namespace_ = (char *)w->ns;
            r.key = key;
            r.value = value;
            len = reel__v1__set_value_request__pack(&r, buf);
        }
        if (ac_unary(w->ac, w->method, buf, len, 30000, write_done, w) == 0)
            atomic_fetch_add(&w->sent, 1);
    }
    /* Every write answered (or 30 s). */
    for (int k = 0; k < 3000 && atomic_load(&w->acked) +
                                         atomic_load(&w->errors) <
                                     atomic_load(&w->sent);
         k++)
        bench_sleep_ms(10);
out:
    free(value);
    free(buf);
    return NULL;
}

/* One watch point: n watchers, a writer at `rate`; fills a report row. */
static int watch_point(const bench_opts_t *o, report_t *rep, int pattern,
                       int n) {
    int etcd = o->target == TARGET_ETCD, rc = 0, nstreams = n;
    ac_t *ac = ac_create(o->addr, o->connections, o->threads);
    ac_t *wac = ac_create(o->addr, 1, 1); /* the writer's own connection */
    ac_stream_t **streams = calloc((size_t)n, sizeof(*streams));
    char ns[64], key[128], fmt[160], range_end[160];
    double rate = o->rate;
    wstate_t ws;
    writer_t w;
    lat_t lat;
    pthread_t th;
    long expected;
    int64_t until, t0;
    cJSON *row;

    if (ac == NULL || wac == NULL || streams == NULL)
        return 1;
    if (n > 0 && rate * n > (double)o->fanout_cap)
        rate = (double)o->fanout_cap / n;
    if (rate < 1)
        rate = 1;
    lat_init(&lat);
    memset(&ws, 0, sizeof(ws));
    ws.etcd = etcd;
    ws.batched = !etcd && o->batched;
    ws.lat = &lat;
    /* Names unique to this process and point. */
    snprintf(ns, sizeof(ns), "bench%ld%s%d", (long)getpid(),
             pattern ? "p" : "w", n);
    if (etcd) {
        if (pattern) {
            snprintf(key, sizeof(key), "%s/", ns);
            snprintf(range_end, sizeof(range_end), "%s0", ns); /* '/'+1 */
            snprintf(fmt, sizeof(fmt), "%s/k.%%d", ns);
        } else {
            snprintf(key, sizeof(key), "%s/key", ns);
            snprintf(fmt, sizeof(fmt), "%s/key", ns);
        }
    } else {
        snprintf(key, sizeof(key), pattern ? ">" : "key");
        snprintf(fmt, sizeof(fmt), pattern ? "k.%%d" : "key");
    }
    if (o->shared > 0 && etcd)
        nstreams = open_etcd_shared(o, ac, key, pattern ? range_end : NULL, n,
                                    o->shared, &ws, streams);
    else if (o->shared > 0)
        nstreams = open_shared_watches(o, ac, ns, key, n, o->shared, 1, &ws,
                                       streams);
    else if (open_watches(o, ac, etcd, ns, key,
                          etcd && pattern ? range_end : NULL, n, &ws,
                          streams) != 0)
        nstreams = -1;
    if (nstreams < 0) {
        fprintf(stderr, "reel-bench: watch: only %ld of %d watchers went live\n",
                atomic_load(&ws.ready), n);
        nstreams = o->shared > 0 ? (n + o->shared - 1) / o->shared : n;
        rc = 1;
        goto out;
    }

    memset(&w, 0, sizeof(w));
    w.o = o;
    w.ac = wac;
    w.etcd = etcd;
    w.method = ac_method(wac, etcd ? "/etcdserverpb.KV/Put"
                                   : "/reel.v1.KV/SetValue");
    w.ns = ns;
    w.key_fmt = fmt;
    w.nkeys = pattern ? o->pattern_keys : 1;
    w.rate = rate;
    w.duration_ns = (int64_t)(o->duration_s * 1e9);
    t0 = ac_now_ns();
    pthread_create(&th, NULL, writer_main, &w);
    while (pthread_tryjoin_np(th, NULL) != 0) {
        bench_progress(o, "  %d %s watchers, %.0f writes/s: %ld writes, %ld "
                       "events",
                       n, pattern ? "pattern" : "exact", rate,
                       atomic_load(&w.acked), atomic_load(&ws.received));
        bench_sleep_ms(100);
    }
    /* Whatever is still on its way: up to 30 s more. */
    expected = atomic_load(&w.acked) * n;
    until = ac_now_ns() + 30 * 1000000000LL;
    while (atomic_load(&ws.received) < expected && ac_now_ns() < until)
        bench_sleep_ms(10);
    bench_progress_done(o);

    row = report_row(rep);
    cJSON_AddStringToObject(row, "kind", pattern ? "pattern" : "exact");
    cJSON_AddStringToObject(
        row, "stream",
        etcd ? "Watch"
        : o->shared > 0 ? (ws.batched ? "WatchValuesBatches coalesced"
                                      : "WatchValues coalesced")
        : ws.batched    ? "WatchValueBatches"
                        : "WatchValue");
    cJSON_AddNumberToObject(row, "watchers", n);
    cJSON_AddNumberToObject(row, "streams", nstreams);
    cJSON_AddNumberToObject(row, "rate", rate);
    cJSON_AddNumberToObject(row, "writes", (double)atomic_load(&w.acked));
    cJSON_AddNumberToObject(row, "expected", (double)expected);
    cJSON_AddNumberToObject(row, "received", (double)atomic_load(&ws.received));
    cJSON_AddNumberToObject(row, "messages", (double)atomic_load(&ws.messages));
    cJSON_AddNumberToObject(
        row, "events_per_s",
        atomic_load(&ws.last_ns) > t0
            ? (double)atomic_load(&ws.received) /
                  ((double)(atomic_load(&ws.last_ns) - t0) / 1e9)
            : 0);
    cJSON_AddNumberToObject(row, "p50_us", lat_quantile_us(&lat, 0.50));
    cJSON_AddNumberToObject(row, "p99_us", lat_quantile_us(&lat, 0.99));
    cJSON_AddNumberToObject(row, "p999_us", lat_quantile_us(&lat, 0.999));
    cJSON_AddNumberToObject(row, "write_errors", (double)atomic_load(&w.errors));
    if (atomic_load(&w.errors) > 0) {
        /* Overload shows here too: the writes of an open-loop writer that
         * the server cannot keep up with time out. A result, not a failure
         * of the tool, unless every event must arrive (smoke). */
        cJSON_AddStringToObject(row, "first_write_error",
                                reel_grpc_code_name(atomic_load(&w.first_error)));
        fprintf(stderr,
                "reel-bench: watch: %d watchers: %ld of %ld writes failed "
                "(first: %s)\n",
                n, atomic_load(&w.errors), atomic_load(&w.sent),
                reel_grpc_code_name(atomic_load(&w.first_error)));
    }
    /* A write that timed out may still have committed (and been pushed):
     * more events than acknowledged writes is not a loss. Fewer is. */
    if (atomic_load(&ws.bad) > 0 || expected == 0 ||
        (o->strict && (atomic_load(&w.errors) > 0 ||
                       atomic_load(&ws.received) < expected))) {
        fprintf(stderr,
                "reel-bench: watch: %ld write errors, %ld undecodable, %ld of "
                "%ld events received\n",
                atomic_load(&w.errors), atomic_load(&ws.bad),
                atomic_load(&ws.received), expected);
        rc = 1;
    } else if (atomic_load(&ws.received) < expected) {
        /* Overload, not loss: the stream is still delivering; the row says
         * how far it got, and its quantiles cover what arrived. */
        fprintf(stderr,
                "reel-bench: watch: %d watchers: %ld of %ld events arrived "
                "within 30 s of the last write\n",
                n, atomic_load(&ws.received), expected);
    }
out:
    close_streams(streams, nstreams, &ws.ended);
    free(streams);
    ac_destroy(wac);
    ac_destroy(ac);
    lat_fini(&lat);
    return rc;
}

int bench_watch(const bench_opts_t *o) {
    report_t rep;
    int rc = 0;

    report_init(&rep, "watch", o);
    cJSON_AddNumberToObject(rep.params, "rate", o->rate);
    cJSON_AddNumberToObject(rep.params, "fanout_cap", (double)o->fanout_cap);
    cJSON_AddNumberToObject(rep.params, "pattern_keys", o->pattern_keys);
    cJSON_AddBoolToObject(rep.params, "batched",
                          o->target == TARGET_REEL && o->batched);
    cJSON_AddNumberToObject(rep.params, "shared", o->shared);
    /* The pattern point first: the large fan-out points leave the server
     * busy for a while after their streams are cancelled. */
    if (o->pattern_keys > 0)
        rc |= watch_point(o, &rep, 1, 1);
    for (int k = 0; k < o->n_watchers; k++) {
        if (k > 0 || o->pattern_keys > 0)
            bench_sleep_ms(2000); /* let the previous point settle */
        rc |= watch_point(o, &rep, 0, o->watchers[k]);
    }
    return report_finish(&rep) || rc;
}

/* ---- signal -------------------------------------------------------------- */

typedef struct await {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int done, code, delivered;
    int64_t at;
} await_t;

static void await_done(void *arg, int code, const uint8_t *resp, size_t len) {
    await_t *a = arg;
    int64_t now = ac_now_ns();
    Reel__V1__AwaitSignalResponse *r =
        code == 0 ? reel__v1__await_signal_response__unpack(NULL, len, resp)
                  : NULL;

    pthread_mutex_lock(&a->mu);
    a->at = now;
    a->code = code;
    a->delivered = r != NULL && r->delivered;
    a->done = 1;
    pthread_cond_signal(&a->cv);
    pthread_mutex_unlock(&a->mu);
    if (r != NULL)
        reel__v1__await_signal_response__free_unpacked(r, NULL);
}

int bench_signal(const bench_opts_t *o) {
    ac_t *ac = ac_create(o->addr, 2, 1);
    int m_begin = ac_method(ac, "/reel.v1.Journal/BeginRun");
    int m_await = ac_method(ac, "/reel.v1.Signals/AwaitSignal");
    int m_send = ac_method(ac, "/reel.v1.Signals/SendSignal");
    Reel__V1__BeginRunRequest br = REEL__V1__BEGIN_RUN_REQUEST__INIT;
    Reel__V1__Run *run = NULL;
    char session[64];
    uint8_t buf[1024], *resp = NULL;
    size_t len, rlen = 0;
    int64_t stop;
    long misses = 0;
    report_t rep;
    lat_t lat, alone;
    cJSON *row;
    int code, rc = 0;

    if (o->target != TARGET_REEL) {
        fprintf(stderr, "reel-bench: signal: reel only\n");
        return 2;
    }
    snprintf(session, sizeof(session), "signal.%ld.%lld", (long)getpid(),
             (long long)(ac_now_ns() / 1000000));
    br.app = "reel-bench";
    br.user = "bench";
    br.session = session;
    br.invocation_id = "1";
    br.lease_owner = "reel-bench";
    br.lease_ttl_ms = 24LL * 3600 * 1000;
    len = reel__v1__begin_run_request__pack(&br, buf);
    code = bench_call(ac, m_begin, buf, len, 10000, &resp, &rlen);
    if (code == 0)
        run = reel__v1__run__unpack(NULL, rlen, resp);
    free(resp);
    if (run == NULL) {
        fprintf(stderr, "reel-bench: signal: BeginRun failed (code %d)\n", code);
        ac_destroy(ac);
        return 1;
    }
    lat_init(&lat);
    lat_init(&alone);
    stop = ac_now_ns() + (int64_t)(o->duration_s * 1e9);
    while (ac_now_ns() < stop) {
        Reel__V1__AwaitSignalRequest ar = REEL__V1__AWAIT_SIGNAL_REQUEST__INIT;
        Reel__V1__SendSignalRequest sr = REEL__V1__SEND_SIGNAL_REQUEST__INIT;
        await_t a;
        int64_t t0;

        memset(&a, 0, sizeof(a));
        pthread_mutex_init(&a.mu, NULL);
        pthread_cond_init(&a.cv, NULL);
        ar.run_id = run->run_id;
        ar.name = "go";
        ar.lease_epoch = run->lease_epoch;
        ar.timeout_ms = 10000;
        len = reel__v1__await_signal_request__pack(&ar, buf);
        ac_unary(ac, m_await, buf, len, 20000, await_done, &a);
        bench_sleep_ms(2); /* let the await park first */
        sr.run_id = run->run_id;
        sr.name = "go";
        sr.payload = "{\"ok\":true}";
        len = reel__v1__send_signal_request__pack(&sr, buf);
        t0 = ac_now_ns();
        code = bench_call(ac, m_send, buf, len, 10000, NULL, NULL);
        pthread_mutex_lock(&a.mu);
        while (!a.done)
            pthread_cond_wait(&a.cv, &a.mu);
        pthread_mutex_unlock(&a.mu);
        if (code == 0 && a.code == 0 && a.delivered)
            lat_add(&lat, a.at - t0);
        else
            misses++;
        pthread_mutex_destroy(&a.mu);
        pthread_cond_destroy(&a.cv);
        /* The control: the same durable send after the same idle gap, with
         * nobody waiting. On a machine whose idle cores wake slowly, a write
         * after a pause costs more than one in a busy loop; this row says
         * how much of the wake-up is that. */
        bench_sleep_ms(2);
        sr.name = "control";
        len = reel__v1__send_signal_request__pack(&sr, buf);
        t0 = ac_now_ns();
        if (bench_call(ac, m_send, buf, len, 10000, NULL, NULL) == 0)
            lat_add(&alone, ac_now_ns() - t0);
        else
            misses++;
        bench_progress(o, "  signal: %zu wake-ups", lat_count(&lat));
    }
    bench_progress_done(o);
    report_init(&rep, "signal", o);
    row = report_row(&rep);
    cJSON_AddNumberToObject(row, "samples", (double)lat_count(&lat));
    cJSON_AddNumberToObject(row, "failed", (double)misses);
    cJSON_AddNumberToObject(row, "p50_us", lat_quantile_us(&lat, 0.50));
    cJSON_AddNumberToObject(row, "p99_us", lat_quantile_us(&lat, 0.99));
    cJSON_AddNumberToObject(row, "p999_us", lat_quantile_us(&lat, 0.999));
    cJSON_AddNumberToObject(row, "send_alone_p50_us",
                            lat_quantile_us(&alone, 0.50));
    cJSON_AddNumberToObject(row, "send_alone_p99_us",
                            lat_quantile_us(&alone, 0.99));
    if (misses > 0 || lat_count(&lat) == 0) {
        fprintf(stderr, "reel-bench: signal: %ld wake-ups failed\n", misses);
        rc = 1;
    }
    lat_fini(&lat);
    lat_fini(&alone);
    reel__v1__run__free_unpacked(run, NULL);
    ac_destroy(ac);
    return report_finish(&rep) || rc;
}

/* ---- memory -------------------------------------------------------------- */

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

static void noop_msg(void *arg, const uint8_t *msg, size_t len) {
    (void)arg;
    (void)msg;
    (void)len;
}

typedef struct fill_arg {
    const bench_opts_t *o;
    long writes;
    int rc;
} fill_arg_t;

static void *fill_main(void *arg) {
    fill_arg_t *f = arg;

    f->rc = bench_fill(f->o, f->writes, 0);
    return NULL;
}

/* Samples reeld's RSS every 100 ms while o->writes writes go in. */
static int rss_during_writes(const bench_opts_t *o, report_t *rep,
                             const char *test, int subscribers) {
    fill_arg_t f = {o, o->writes, 0};
    cJSON *row = report_row(rep), *samples = cJSON_CreateArray();
    long start = rss_kib(o->pid), max = start, end;
    int64_t t0 = ac_now_ns();
    pthread_t th;

    pthread_create(&th, NULL, fill_main, &f);
    while (pthread_tryjoin_np(th, NULL) != 0) {
        long k = rss_kib(o->pid);
        cJSON *p = cJSON_CreateArray();

        cJSON_AddItemToArray(p,
                             cJSON_CreateNumber((double)(ac_now_ns() - t0) / 1e9));
        cJSON_AddItemToArray(p, cJSON_CreateNumber((double)k));
        cJSON_AddItemToArray(samples, p);
        if (k > max)
            max = k;
        bench_progress(o, "  %s: RSS %ld KiB", test, k);
        bench_sleep_ms(100);
    }
    bench_progress_done(o);
    end = rss_kib(o->pid);
    cJSON_AddStringToObject(row, "test", test);
    cJSON_AddNumberToObject(row, "subscribers", subscribers);
    cJSON_AddNumberToObject(row, "writes", (double)o->writes);
    cJSON_AddNumberToObject(row, "rss_start_kib", (double)start);
    cJSON_AddNumberToObject(row, "rss_max_kib", (double)max);
    cJSON_AddNumberToObject(row, "rss_end_kib", (double)end);
    cJSON_AddItemToObject(row, "samples", samples);
    return f.rc;
}

int bench_memory(const bench_opts_t *o) {
    int n = o->idle_watchers, s = o->subscribers, rc = 0;
    ac_t *ac = ac_create(o->addr, o->connections, o->threads);
    ac_stream_t **streams = calloc((size_t)(n > s ? n : s), sizeof(*streams));
    char ns[64];
    long before, after;
    wstate_t ws;
    lat_t lat;
    report_t rep;
    cJSON *row;

    if (o->target != TARGET_REEL || o->pid <= 0) {
        fprintf(stderr, "reel-bench: memory: reel only, and needs --pid\n");
        return 2;
    }
    if (ac == NULL || streams == NULL || rss_kib(o->pid) < 0) {
        fprintf(stderr, "reel-bench: memory: cannot read the RSS of pid %d\n",
                o->pid);
        return 1;
    }
    report_init(&rep, "memory", o);
    lat_init(&lat);
    memset(&ws, 0, sizeof(ws));
    ws.lat = &lat;
    snprintf(ns, sizeof(ns), "idle%ld", (long)getpid());

    /* Idle watchers, o->per_stream to a KV.WatchValues stream, first: the
     * allocator keeps what is freed, so a second measurement on the same
     * server would be hidden by the first one's leftovers. */
    if (n > 0) {
        int k;

        memset(&ws, 0, sizeof(ws));
        ws.lat = &lat;
        snprintf(ns, sizeof(ns), "idlem%ld", (long)getpid());
        bench_sleep_ms(500);
        before = rss_kib(o->pid);
        k = open_shared_watches(o, ac, ns, "key.%d", n, o->per_stream, 0,
                                &ws, streams);
        if (k < 0) {
            fprintf(stderr, "reel-bench: memory: only %ld of %d shared "
                            "watches went live\n",
                    atomic_load(&ws.ready), n);
            rc = 1;
            k = (n + o->per_stream - 1) / o->per_stream;
        }
        bench_sleep_ms(1000);
        after = rss_kib(o->pid);
        row = report_row(&rep);
        cJSON_AddStringToObject(row, "test", "idle_watchers_shared");
        cJSON_AddNumberToObject(row, "watchers", n);
        cJSON_AddNumberToObject(row, "per_stream", o->per_stream);
        cJSON_AddNumberToObject(row, "rss_before_kib", (double)before);
        cJSON_AddNumberToObject(row, "rss_after_kib", (double)after);
        cJSON_AddNumberToObject(row, "bytes_per_watcher",
                                (double)(after - before) * 1024 / n);
        close_streams(streams, k, &ws.ended);
    }

    /* The same watchers, a WatchValue stream each (new keys: this needs
     * far more memory than the shared streams left free). */
    memset(&ws, 0, sizeof(ws));
    ws.lat = &lat;
    snprintf(ns, sizeof(ns), "idle%ld", (long)getpid());
    bench_sleep_ms(500);
    before = rss_kib(o->pid);
    if (open_watches(o, ac, 0, ns, "key.%d", NULL, n, &ws, streams) != 0) {
        fprintf(stderr, "reel-bench: memory: only %ld of %d watchers went "
                        "live\n",
                atomic_load(&ws.ready), n);
        rc = 1;
    }
    bench_sleep_ms(1000);
    after = rss_kib(o->pid);
    row = report_row(&rep);
    cJSON_AddStringToObject(row, "test", "idle_watchers");
    cJSON_AddNumberToObject(row, "watchers", n);
    cJSON_AddNumberToObject(row, "rss_before_kib", (double)before);
    cJSON_AddNumberToObject(row, "rss_after_kib", (double)after);
    cJSON_AddNumberToObject(row, "bytes_per_watcher",
                            n > 0 ? (double)(after - before) * 1024 / n : 0);
    close_streams(streams, n, &ws.ended);

    /* RSS during writes: first with nobody subscribed (the control: the
     * memtables and caches fill either way), then with stalled
     * subscribers, a WAL tail each that is never read. */
    if (s > 0) {
        Reel__V1__SubscribeEventsRequest r =
            REEL__V1__SUBSCRIBE_EVENTS_REQUEST__INIT;
        int m = ac_method(ac, "/reel.v1.Wal/SubscribeEvents");
        uint8_t buf[64];
        size_t len = reel__v1__subscribe_events_request__pack(&r, buf);

        rc |= rss_during_writes(o, &rep, "writes_only", 0);
        memset(&ws, 0, sizeof(ws));
        for (int i = 0; i < s; i++)
            streams[i] = ac_stream_open(ac, m, buf, len, 1, 0, noop_msg, on_end,
                                        &ws);
        bench_sleep_ms(1000);
        rc |= rss_during_writes(o, &rep, "stalled_subscribers", s);
        close_streams(streams, s, &ws.ended);
    }
    free(streams);
    lat_fini(&lat);
    ac_destroy(ac);
    return report_finish(&rep) || rc;
}
