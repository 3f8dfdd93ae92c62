/*
 * timers/timers.c: durable timers in one column family, fired by the
 * writer's alarm.
 *
 * Column family `timers` (integers big-endian):
 *   due_ms(8) kind(1) id  -> value (the owner's bytes)
 *   Keys sort by due time, so the next timers to fire are always the first
 *   keys from a seek; a kind and an id make a timer unique at its time.
 *
 * In memory (writer thread only): `from_ms`, a time no live timer is due
 * before. Scheduling lowers it; firing moves it to the first timer left.
 * Seeking there, not to the family's start, passes over none of the
 * tombstones fired timers leave behind. An alarm holds at most
 * TIMERS_FIRE_MAX due timers at once (their keys and values); more wait
 * for the next alarm, which the first one arms at once.
 *
 * Firing, in the alarm's request at the end of a group: collect the due
 * timers (due_ms <= the group's time) from from_ms on, then for each
 * delete it and call its kind's fire function, all in that request, so a
 * timer's deletion commits with what it did: it fires once, or (the
 * request rolled back, or the process died before the commit) not at all
 * and again later. Then arm the alarm for the first timer left.
 *
 * Recovery: nothing beyond RocksDB. timers_arm() at start arms the alarm
 * for the first stored timer; those that fell due while reeld was down
 * fire in the first alarm, each once (the deletion commits with its
 * effect), none early.
 *
 * A timer of a kind nobody registered (a newer reeld's) is left alone and
 * passed over: it neither fires nor holds the others back.
 */
#include "timers/timers.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "base/codec.h"
#include "base/log.h"

#define CF_TIMERS "timers"
#define KEY_HDR 9 /* due_ms(8) kind(1) */
#define N_KINDS 256

/* Read in forward passes from the earliest time. */
const store_cf_desc_t timers_cfs[] = {
    {CF_TIMERS, STORE_CF_PLAIN},
    {NULL, STORE_CF_PLAIN},
};

typedef struct kind {
    timers_fire_fn fn;
    void *arg;
} kind_t;

struct timers {
    store_t *store;
    store_cf_t *cf;
    kind_t kinds[N_KINDS];
    int64_t from_ms; /* writer thread only, once armed */
    /* Firings that committed (store_txn_count), and what that count will
     * be once the last one commits: a firing whose group failed after it
     * returned (the WAL refusing the group) rolled back, and its timers,
     * stored again, lie before from_ms. Writer thread. */
    _Atomic int64_t firings;
    int64_t firings_expected;
    /* Metrics (timers_metrics_register): the timers stored, counted from
     * one scan on the writer and then moved by each committed schedule,
     * cancel and firing (store_txn_count); each firing's lateness. */
    metrics_registry_t *metrics;
    _Atomic int64_t scheduled;
    metrics_histogram_t *m_lateness;
    /* Timers whose firing failed DATA_LOSS (their record will not read):
     * the next alarm sets them aside instead of firing them again, or
     * one such timer would hold every other for good (each alarm fires
     * from the first due, and a failure rolls the whole alarm back).
     * Writer thread; emptied once an alarm returns OK (should its group
     * fail after that, the timer fires, fails and is noted again). */
    char **bad;
    size_t *bad_len, n_bad;
};

typedef struct seed {
    timers_t *t;
    metrics_registry_t *r;
} seed_t;

/* A due timer copied out of the iterator. */
typedef struct due {
    char *key, *val;
    size_t klen, vlen;
} due_t;

reel_code_t timers_create(store_t *store, timers_t **out, reel_status_t *st) {
    timers_t *t = calloc(1, sizeof(*t));
    reel_code_t rc;

    *out = NULL;
    if (t == NULL)
        return reel_status_set(st, REEL_RESOURCE_EXHAUSTED, "out of memory");
    t->store = store;
    if ((rc = store_cf_lookup(store, CF_TIMERS, &t->cf, st)) != REEL_OK) {
        free(t);
        return rc;
    }
    *out = t;
    return REEL_OK;
}

static void bad_clear(timers_t *t);

void timers_destroy(timers_t *t) {
    if (t == NULL)
        return;
    metrics_registry_drop(t->metrics, t);
    bad_clear(t);
    free(t);
}

void timers_register(timers_t *t, uint8_t kind, timers_fire_fn fn,
                     void *arg) {
    t->kinds[kind].fn = fn;
    t->kinds[kind].arg = arg;
}

static int64_t key_due(const char *k) {
    return (int64_t)reel_be64_get((const unsigned char *)k);
}

static int known(const timers_t *t, const char *k, size_t klen) {
    return klen >= KEY_HDR && t->kinds[(unsigned char)k[8]].fn != NULL;
}

reel_code_t timers_arm(timers_t *t, reel_status_t *st) {
    store_iter_t *it = store_iter_create(t->store, t->cf, NULL);
    reel_code_t rc;

    if (it == NULL)
        return reel_status_set(st, REEL_RESOURCE_EXHAUSTED, "out of memory");
    t->from_ms = 0;
    for (store_iter_seek_first(it); store_iter_valid(it);
         store_iter_next(it)) {
        size_t klen;
        const char *k = store_iter_key(it, &klen);

        if (known(t, k, klen)) {
            t->from_ms = key_due(k);
            store_wake_at(t->store, t->from_ms);
            break;
        }
    }
    rc = store_iter_status(it, st);
    store_iter_destroy(it);
    return rc;
}

static reel_code_t make_key(reel_wbuf_t *w, int64_t due_ms, uint8_t kind,
                            const char *id, size_t idlen, reel_status_t *st) {
    if (idlen > TIMERS_MAX_ID)
        return reel_status_set(st, REEL_INVALID_ARGUMENT,
                               "timer id: %zu bytes exceeds the limit of %d",
                               idlen, TIMERS_MAX_ID);
    reel_wbuf_u64(w, (uint64_t)due_ms);
    reel_wbuf_u8(w, kind);
    reel_wbuf_raw(w, id, idlen);
    if (reel_wbuf_done(w) != 0)
        return reel_status_set(st, REEL_RESOURCE_EXHAUSTED, "out of memory");
    return REEL_OK;
}

/*
 * Counts a timer stored (delta 1) or deleted (-1) when that changes what
 * is stored: a schedule that replaces a timer, or a cancel of one that is
 * not there, counts nothing. Only with metrics on: the read is a point
 * lookup through the group's batch.
 */
static reel_code_t count_key(timers_t *t, store_txn_t *txn,
                             const reel_wbuf_t *k, int delta,
                             reel_status_t *st) {
    char *val = NULL;
    size_t vlen;
    reel_code_t rc;

    if (t->metrics == NULL)
        return REEL_OK;
    rc = store_txn_get(txn, t->cf, k->p, k->len, &val, &vlen, st);
    free(val);
    if (rc == REEL_NOT_FOUND) {
        reel_status_fini(st);
        if (delta > 0)
            store_txn_count(txn, &t->scheduled, 1);
        return REEL_OK;
    }
    if (rc == REEL_OK && delta < 0)
        store_txn_count(txn, &t->scheduled, -1);
    return rc;
}

reel_code_t timers_schedule(timers_t *t, store_txn_t *txn, int64_t due_ms,
                            uint8_t kind, const char *id, size_t idlen,
                            const void *val, size_t vlen, reel_status_t *st) {
    reel_wbuf_t k = {0};
    reel_code_t rc;

    if (due_ms < 0)
        due_ms = 0;
    if (due_ms > TIMERS_MAX_DUE_MS) /* a caller's bug: ms were meant */
        return reel_status_set(st, REEL_INVALID_ARGUMENT,
                               "timer due time: %lld is past the year 9999 "
                               "(%lld ms)",
                               (long long)due_ms,
                               (long long)TIMERS_MAX_DUE_MS);
    if ((rc = make_key(&k, due_ms, kind, id, idlen, st)) != REEL_OK ||
        (rc = count_key(t, txn, &k, 1, st)) != REEL_OK) {
        reel_wbuf_fini(&k);
        return rc;
    }
    store_txn_put(txn, t->cf, k.p, k.len, val, vlen);
    reel_wbuf_fini(&k);
    /* Should the request roll back, this stays lower than needed: one
     * seek from an earlier time, and an alarm that finds nothing due. */
    if (due_ms < t->from_ms)
        t->from_ms = due_ms;
    store_wake_at(t->store, due_ms);
    return REEL_OK;
}

reel_code_t timers_cancel(timers_t *t, store_txn_t *txn, int64_t due_ms,
                          uint8_t kind, const char *id, size_t idlen,
                          reel_status_t *st) {
    reel_wbuf_t k = {0};
    reel_code_t rc;

    if (due_ms < 0)
        due_ms = 0;
    if ((rc = make_key(&k, due_ms, kind, id, idlen, st)) == REEL_OK &&
        (rc = count_key(t, txn, &k, -1, st)) == REEL_OK)
        store_txn_delete(txn, t->cf, k.p, k.len);
    reel_wbuf_fini(&k);
    return rc;
}

/*
 * The due timers from from_ms on, at most TIMERS_FIRE_MAX, into dues;
 * *next gets the due time of the first timer left after them (INT64_MAX:
 * none). Kinds nobody registered are passed over.
 */
static reel_code_t collect(timers_t *t, store_txn_t *txn, int64_t now,
                           due_t *dues, size_t *n, int64_t *next,
                           reel_status_t *st) {
    store_iter_t *it = store_txn_iter(txn, t->cf);
    unsigned char seek[8];
    reel_code_t rc = REEL_OK;

    *n = 0;
    *next = INT64_MAX;
    if (it == NULL)
        return reel_status_set(st, REEL_RESOURCE_EXHAUSTED, "out of memory");
    reel_be64_put(seek, (uint64_t)t->from_ms);
    for (store_iter_seek(it, seek, 8); store_iter_valid(it);
         store_iter_next(it)) {
        size_t klen, vlen;
        const char *k = store_iter_key(it, &klen);
        const char *v;
        due_t *d;

        if (!known(t, k, klen))
            continue;
        if (key_due(k) > now || dues == NULL || *n == TIMERS_FIRE_MAX) {
            *next = key_due(k);
            break;
        }
        v = store_iter_value(it, &vlen);
        d = &dues[*n];
        d->key = malloc(klen);
        d->val = malloc(vlen ? vlen : 1);
        if (d->key == NULL || d->val == NULL) {
            free(d->key);
            free(d->val);
            d->key = d->val = NULL; /* the caller frees up to the first NULL */
            rc = reel_status_set(st, REEL_RESOURCE_EXHAUSTED,
                                 "out of memory");
            break;
        }
        memcpy(d->key, k, klen);
        memcpy(d->val, v, vlen);
        d->klen = klen;
        d->vlen = vlen;
        (*n)++;
    }
    if (rc == REEL_OK)
        rc = store_iter_status(it, st);
    store_iter_destroy(it);
    return rc;
}

static int is_bad(const timers_t *t, const due_t *d) {
    for (size_t i = 0; i < t->n_bad; i++)
        if (t->bad_len[i] == d->klen && memcmp(t->bad[i], d->key, d->klen) == 0)
            return 1;
    return 0;
}

static void bad_clear(timers_t *t) {
    for (size_t i = 0; i < t->n_bad; i++)
        free(t->bad[i]);
    free(t->bad);
    free(t->bad_len);
    t->bad = NULL;
    t->bad_len = NULL;
    t->n_bad = 0;
}

/* Notes d as a timer that cannot fire (why: its error). Out of memory
 * notes nothing: the alarm is tried again as for any other failure. */
static void bad_add(timers_t *t, const due_t *d, const reel_status_t *why) {
    char **b = realloc(t->bad, (t->n_bad + 1) * sizeof(*b));
    size_t *bl;
    char *k;

    if (b == NULL)
        return;
    t->bad = b;
    if ((bl = realloc(t->bad_len, (t->n_bad + 1) * sizeof(*bl))) == NULL)
        return;
    t->bad_len = bl;
    if ((k = malloc(d->klen)) == NULL)
        return;
    memcpy(k, d->key, d->klen);
    t->bad[t->n_bad] = k;
    t->bad_len[t->n_bad++] = d->klen;
    {
        const char *id = d->key + KEY_HDR;
        int n = (int)(d->klen - KEY_HDR), shown = 1;

        for (int i = 0; i < n; i++)
            shown &= id[i] > ' ' && id[i] < 0x7f;
        REEL_ERROR("timers", "the timer of kind %u (%c) for %.*s due at %lld "
                   "ms cannot fire: %s; the next try sets it aside (kind 0, "
                   "kept in the timers' family) so that the others go on",
                   (unsigned char)d->key[8],
                   d->key[8] > ' ' && d->key[8] < 0x7f ? d->key[8] : '?',
                   shown ? n : 9, shown ? id : "(binary)",
                   (long long)key_due(d->key), reel_status_message(why));
    }
}

/* Stores d again under kind 0, which nothing fires: [due][0][kind][id]. */
static reel_code_t set_aside(timers_t *t, store_txn_t *txn, const due_t *d,
                             reel_status_t *st) {
    char *k = malloc(d->klen + 1);

    if (k == NULL)
        return reel_status_set(st, REEL_RESOURCE_EXHAUSTED, "out of memory");
    memcpy(k, d->key, 8);
    k[8] = 0;
    memcpy(k + 9, d->key + 8, d->klen - 8);
    store_txn_put(txn, t->cf, k, d->klen + 1, d->val,
                  d->vlen);
    free(k);
    return REEL_OK;
}

reel_code_t timers_alarm(void *arg, store_txn_t *txn, reel_status_t *st) {
    timers_t *t = arg;
    int64_t now = store_txn_now_ms(txn), next = INT64_MAX;
    due_t *dues = calloc(TIMERS_FIRE_MAX, sizeof(*dues));
    size_t n = 0;
    reel_code_t rc;

    if (dues == NULL)
        return reel_status_set(st, REEL_RESOURCE_EXHAUSTED, "out of memory");
    if (atomic_load_explicit(&t->firings, memory_order_relaxed) !=
        t->firings_expected) {
        t->from_ms = 0; /* the last firing rolled back after it returned */
        t->firings_expected =
            atomic_load_explicit(&t->firings, memory_order_relaxed);
    }
    rc = collect(t, txn, now, dues, &n, &next, st);
    for (size_t i = 0; rc == REEL_OK && i < n; i++) {
        const due_t *d = &dues[i];
        const kind_t *kd = &t->kinds[(unsigned char)d->key[8]];

        store_txn_delete(txn, t->cf, d->key, d->klen);
        if (t->metrics != NULL)
            store_txn_count(txn, &t->scheduled, -1);
        if (is_bad(t, d)) {
            rc = set_aside(t, txn, d, st);
            continue;
        }
        rc = kd->fn(kd->arg, txn, key_due(d->key), d->key + KEY_HDR,
                    d->klen - KEY_HDR, d->val, d->vlen, st);
        if (rc == REEL_DATA_LOSS)
            bad_add(t, d, st);
    }
    /* What the fire functions scheduled may come first: look again from
     * from_ms (which they lowered), past what was just deleted. */
    if (rc == REEL_OK && n > 0)
        rc = collect(t, txn, now, NULL, &n, &next, st);
    /* Lateness once the firing stands (a rolled-back one fires again). */
    for (size_t i = 0; rc == REEL_OK && i < TIMERS_FIRE_MAX &&
                       dues[i].key != NULL;
         i++)
        metrics_histogram_observe(t->m_lateness,
                                  (double)(now - key_due(dues[i].key)) /
                                      1000.0);
    for (size_t i = 0; i < TIMERS_FIRE_MAX && dues[i].key != NULL; i++) {
        free(dues[i].key);
        free(dues[i].val);
    }
    free(dues);
    if (rc != REEL_OK) {
        /* Rolled back: what was collected is stored again. */
        t->from_ms = 0;
        return rc;
    }
    t->from_ms = next != INT64_MAX ? next : now;
    /* Set aside if the commit stands; if it does not, the next alarm
     * finds them due again, and fires them (failing again, noted again). */
    bad_clear(t);
    store_txn_count(txn, &t->firings, 1);
    t->firings_expected++;
    if (next != INT64_MAX)
        store_wake_at(t->store, next);
    return REEL_OK;
}

/* A timer set aside (kind 0): stored, not scheduled. */
static int set_aside_key(store_iter_t *it) {
    size_t klen;
    const char *k = store_iter_key(it, &klen);

    return klen > 8 && k[8] == 0;
}

reel_code_t timers_count(timers_t *t, uint64_t *n, reel_status_t *st) {
    store_iter_t *it = store_iter_create(t->store, t->cf, NULL);
    reel_code_t rc;

    *n = 0;
    if (it == NULL)
        return reel_status_set(st, REEL_RESOURCE_EXHAUSTED, "out of memory");
    for (store_iter_seek_first(it); store_iter_valid(it); store_iter_next(it))
        *n += !set_aside_key(it);
    rc = store_iter_status(it, st);
    store_iter_destroy(it);
    return rc;
}

/* The seed, on the writer: every timer stored as this request sees it
 * (the group's earlier writes included), and from here on each change
 * counts, so none is missed or counted twice. */
static reel_code_t seed_apply(store_txn_t *txn, void *arg,
                              reel_status_t *st) {
    seed_t *sd = arg;
    store_iter_t *it = store_txn_iter(txn, sd->t->cf);
    int64_t n = 0;
    reel_code_t rc;

    if (it == NULL)
        return reel_status_set(st, REEL_RESOURCE_EXHAUSTED, "out of memory");
    for (store_iter_seek_first(it); store_iter_valid(it); store_iter_next(it))
        n += !set_aside_key(it);
    if ((rc = store_iter_status(it, st)) == REEL_OK) {
        atomic_store(&sd->t->scheduled, n);
        sd->t->metrics = sd->r;
    }
    store_iter_destroy(it);
    return rc;
}

static double m_scheduled(void *arg) {
    timers_t *t = arg;

    return (double)atomic_load_explicit(&t->scheduled, memory_order_relaxed);
}

reel_code_t timers_metrics_register(timers_t *t, metrics_registry_t *r,
                                    reel_status_t *st) {
    seed_t sd = {t, r};
    reel_code_t rc;

    if (r == NULL)
        return REEL_OK;
    /* The histogram before the seed: the writer reads its pointer. */
    if ((rc = metrics_reg_histogram(
             r, t, "reel_timer_lateness_seconds",
             "A timer's firing time minus its due time.", NULL,
             metrics_buckets_seconds, metrics_buckets_seconds_n,
             &t->m_lateness, st)) != REEL_OK ||
        (rc = store_exec(t->store, seed_apply, &sd, NULL, st)) != REEL_OK ||
        (rc = metrics_reg_fn(r, t, METRICS_GAUGE, "reel_timers_scheduled",
                             "Durable timers stored, waiting to fire "
                             "(leases, backoffs, suspension timeouts, "
                             "delayed signals).",
                             NULL, m_scheduled, t, st)) != REEL_OK)
        return rc; /* what was registered goes in timers_destroy() */
    return REEL_OK;
}
