/*
 * wal/wal.c: event records and subscriptions.
 *
 * Column family `wal`:
 *   'e' rev(8) -> u16 subject length, subject, event bytes
 *
 * Invariants
 *   - wal_before_commit runs on the writer after a group's applies: every
 *     change of the group gets its record in the group's own batch, so a
 *     change and its event commit together (or neither does), and
 *     revisions are gapless in the WAL as in the store.
 *   - The records of the last group are kept in memory until wal_publish
 *     hands them to live subscribers: the bytes are encoded once.
 *
 * Subscriptions follow the scheme of KV watches (kv/kv_watch.c): replay to
 * a snapshot, go live under the hub lock only if nothing newer was
 * published, drop back to replay when the sink is full.
 *
 * Recovery: nothing to do. Retention (trimming old events) is not done
 * yet: every event is kept.
 */
#include "wal/wal.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/codec.h"
#include "base/pattern.h"

typedef struct rec {
    uint64_t revision;
    size_t off, len;  /* the whole stored record in `buf` */
    size_t subj_len;
} rec_t;

struct wal {
    store_t *store;
    wal_encode_fn encode;
    void *encode_arg;

    /* The last group's records: writer thread only. */
    rec_t *recs;
    size_t n_recs, cap_recs;
    reel_wbuf_t buf;

    pthread_mutex_t hub_mu;
    uint64_t last_published;
    wal_sub_t *subs;
};

enum { SUB_REPLAY, SUB_LIVE };

struct wal_sub {
    wal_t *w;
    char *pattern;
    size_t pattern_len;
    wal_sink_t sink;
    void *arg;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    atomic_int live;
    int dead, pumping, phase;
    uint64_t cursor; /* every event <= cursor was seen */
    wal_sub_t *prev, *next;
};

static void rev_key(uint64_t rev, unsigned char out[9]) {
    out[0] = 'e';
    reel_be64_put(out + 1, rev);
}

reel_code_t wal_create(store_t *store, wal_encode_fn encode, void *encode_arg,
                       wal_t **out, reel_status_t *st) {
    wal_t *w = calloc(1, sizeof(*w));

    *out = NULL;
    if (w == NULL)
        return reel_status_set(st, REEL_RESOURCE_EXHAUSTED, "out of memory");
    w->store = store;
    w->encode = encode;
    w->encode_arg = encode_arg;
    w->last_published = store_revision(store);
    pthread_mutex_init(&w->hub_mu, NULL);
    *out = w;
    return REEL_OK;
}

void wal_destroy(wal_t *w) {
    if (w == NULL)
        return;
    reel_wbuf_fini(&w->buf);
    free(w->recs);
    pthread_mutex_destroy(&w->hub_mu);
    free(w);
}

void wal_head(wal_t *w, uint64_t *head, uint64_t *oldest) {
    store_iter_t *it = store_iter_create(w->store, STORE_CF_WAL, NULL);

    *head = store_revision(w->store);
    *oldest = 0;
    if (it == NULL)
        return;
    store_iter_seek(it, "e", 1);
    if (store_iter_valid(it)) {
        size_t klen;
        const char *k = store_iter_key(it, &klen);
        if (klen == 9 && k[0] == 'e')
            *oldest = reel_be64_get((const unsigned char *)k + 1);
    }
    store_iter_destroy(it);
}

reel_code_t wal_before_commit(void *arg, store_txn_t *txn,
                              const store_change_t *changes, size_t n,
                              reel_status_t *st) {
    wal_t *w = arg;

    w->n_recs = 0;
    w->buf.len = 0;
    if (n > w->cap_recs) {
        rec_t *r = realloc(w->recs, n * sizeof(*r));
        if (r == NULL)
            return reel_status_set(st, REEL_RESOURCE_EXHAUSTED,
                                   "out of memory recording WAL events");
        w->recs = r;
        w->cap_recs = n;
    }
    for (size_t i = 0; i < n; i++) {
        char *subject = NULL;
        uint8_t *bytes = NULL;
        size_t len = 0, slen;
        reel_code_t rc;

        rc = w->encode(w->encode_arg, &changes[i], &subject, &bytes, &len, st);
        if (rc != REEL_OK)
            return rc;
        slen = strlen(subject);
        w->recs[i] = (rec_t){changes[i].revision, w->buf.len, 0, slen};
        reel_wbuf_u8(&w->buf, (uint8_t)(slen >> 8));
        reel_wbuf_u8(&w->buf, (uint8_t)slen);
        reel_wbuf_raw(&w->buf, subject, slen);
        reel_wbuf_raw(&w->buf, bytes, len);
        free(subject);
        free(bytes);
        if (w->buf.oom) {
            w->buf.oom = 0;
            return reel_status_set(st, REEL_RESOURCE_EXHAUSTED,
                                   "out of memory recording WAL events");
        }
        w->recs[i].len = w->buf.len - w->recs[i].off;
        w->n_recs++;
    }
    for (size_t i = 0; i < w->n_recs; i++) {
        unsigned char key[9];

        rev_key(w->recs[i].revision, key);
        store_txn_put(txn, STORE_CF_WAL, key, sizeof(key),
                      w->buf.p + w->recs[i].off, w->recs[i].len);
    }
    return REEL_OK;
}

/* A stored record's subject and event bytes. -1 if malformed. */
static int rec_split(const unsigned char *p, size_t len, const char **subj,
                     size_t *slen, const uint8_t **bytes, size_t *blen) {
    size_t sl;

    if (len < 2)
        return -1;
    sl = ((size_t)p[0] << 8) | p[1];
    if (sl > len - 2)
        return -1;
    *subj = (const char *)p + 2;
    *slen = sl;
    *bytes = p + 2 + sl;
    *blen = len - 2 - sl;
    return 0;
}

static int sub_matches(const wal_sub_t *s, const char *subj, size_t slen) {
    return s->pattern_len == 0 ||
           reel_pattern_match(s->pattern, s->pattern_len, subj, slen);
}

void wal_publish(wal_t *w, const store_change_t *changes, size_t n) {
    pthread_mutex_lock(&w->hub_mu);
    for (size_t i = 0; i < w->n_recs && w->subs != NULL; i++) {
        const char *subj;
        const uint8_t *bytes;
        size_t slen, blen;

        if (rec_split(w->buf.p + w->recs[i].off, w->recs[i].len, &subj, &slen,
                      &bytes, &blen) != 0)
            continue;
        for (wal_sub_t *s = w->subs; s != NULL; s = s->next) {
            if (!atomic_load(&s->live))
                continue;
            pthread_mutex_lock(&s->mu);
            if (s->phase == SUB_LIVE && !s->dead &&
                w->recs[i].revision > s->cursor) {
                if (!sub_matches(s, subj, slen) ||
                    s->sink.deliver(s->arg, bytes, blen,
                                    w->recs[i].revision) == 0) {
                    s->cursor = w->recs[i].revision;
                } else {
                    atomic_store(&s->live, 0);
                    s->phase = SUB_REPLAY;
                }
            }
            pthread_mutex_unlock(&s->mu);
        }
    }
    if (n > 0 && changes[n - 1].revision > w->last_published)
        w->last_published = changes[n - 1].revision;
    w->n_recs = 0;
    pthread_mutex_unlock(&w->hub_mu);
}

reel_code_t wal_sub_create(wal_t *w, uint64_t from_revision,
                           const char *pattern, const wal_sink_t *sink,
                           void *arg, wal_sub_t **out, reel_status_t *st) {
    size_t plen = pattern ? strlen(pattern) : 0;
    uint64_t head, oldest;
    wal_sub_t *s;
    reel_code_t rc;

    *out = NULL;
    if (plen > 0 && (rc = reel_pattern_validate(pattern, plen,
                                                "subject_pattern", st)) !=
                        REEL_OK)
        return rc;
    wal_head(w, &head, &oldest);
    if (oldest > 0 && from_revision + 1 < oldest)
        return reel_status_set(st, REEL_OUT_OF_RANGE,
                               "from_revision: revision %llu is no longer "
                               "retained; the oldest retained revision is "
                               "%llu",
                               (unsigned long long)from_revision,
                               (unsigned long long)oldest);
    s = calloc(1, sizeof(*s));
    if (s == NULL || (s->pattern = strdup(pattern ? pattern : "")) == NULL) {
        free(s);
        return reel_status_set(st, REEL_RESOURCE_EXHAUSTED, "out of memory");
    }
    s->pattern_len = plen;
    s->w = w;
    s->sink = *sink;
    s->arg = arg;
    s->cursor = from_revision;
    s->phase = SUB_REPLAY;
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    pthread_mutex_lock(&w->hub_mu);
    s->next = w->subs;
    if (w->subs)
        w->subs->prev = s;
    w->subs = s;
    pthread_mutex_unlock(&w->hub_mu);
    *out = s;
    return REEL_OK;
}

/* Replays to a fresh snapshot: 0 caught up to it, 1 the sink is full. */
static int replay(wal_sub_t *s) {
    store_snapshot_t *snap = store_snapshot_create(s->w->store);
    store_iter_t *it;
    unsigned char key[9];
    int full = 0;

    if (snap == NULL)
        return 1;
    it = store_iter_create(s->w->store, STORE_CF_WAL, snap);
    if (it == NULL) {
        store_snapshot_release(s->w->store, snap);
        return 1;
    }
    rev_key(s->cursor + 1, key);
    for (store_iter_seek(it, key, sizeof(key)); store_iter_valid(it);
         store_iter_next(it)) {
        size_t klen, vlen, slen, blen;
        const char *k = store_iter_key(it, &klen);
        const unsigned char *v =
            (const unsigned char *)store_iter_value(it, &vlen);
        const char *subj;
        const uint8_t *bytes;
        uint64_t rev;

        if (klen != 9 || k[0] != 'e')
            break;
        rev = reel_be64_get((const unsigned char *)k + 1);
        if (rec_split(v, vlen, &subj, &slen, &bytes, &blen) == 0 &&
            sub_matches(s, subj, slen) &&
            s->sink.deliver(s->arg, bytes, blen, rev) != 0) {
            full = 1;
            break;
        }
        s->cursor = rev;
    }
    if (!full && store_snapshot_revision(snap) > s->cursor)
        s->cursor = store_snapshot_revision(snap);
    store_iter_destroy(it);
    store_snapshot_release(s->w->store, snap);
    return full;
}

void wal_sub_pump(wal_sub_t *s) {
    wal_t *w = s->w;

    pthread_mutex_lock(&s->mu);
    if (s->dead || s->pumping || s->phase != SUB_REPLAY) {
        pthread_mutex_unlock(&s->mu);
        return;
    }
    s->pumping = 1;
    while (!s->dead && s->phase == SUB_REPLAY) {
        if (replay(s) != 0)
            break;
        pthread_mutex_unlock(&s->mu);
        pthread_mutex_lock(&w->hub_mu);
        pthread_mutex_lock(&s->mu);
        if (!s->dead && w->last_published <= s->cursor) {
            s->phase = SUB_LIVE;
            atomic_store(&s->live, 1);
        }
        pthread_mutex_unlock(&w->hub_mu);
    }
    s->pumping = 0;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

int wal_sub_live(wal_sub_t *s) { return atomic_load(&s->live); }

void wal_sub_destroy(wal_sub_t *s) {
    if (s == NULL)
        return;
    pthread_mutex_lock(&s->w->hub_mu);
    if (s->prev)
        s->prev->next = s->next;
    else
        s->w->subs = s->next;
    if (s->next)
        s->next->prev = s->prev;
    pthread_mutex_lock(&s->mu);
    s->dead = 1;
    atomic_store(&s->live, 0);
    pthread_mutex_unlock(&s->mu);
    pthread_mutex_unlock(&s->w->hub_mu);
    pthread_mutex_lock(&s->mu);
    while (s->pumping)
        pthread_cond_wait(&s->cv, &s->mu);
    pthread_mutex_unlock(&s->mu);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cv);
    free(s->pattern);
    free(s);
}
