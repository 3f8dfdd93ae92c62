/*
 * wal/wal.c: event records and subscriptions.
 *
 * Column family `wal`:
 *   'e' rev(8)   -> i64 ts_ms, u16 subject length, subject, event bytes
 *   'c' name     -> u64 acked, i64 created_at_ms, i64 acked_at_ms,
 *                   str pattern                       (durable consumers)
 *   "mbytes"     -> u64: the bytes of all 'e' records (for the size cap)
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
 * Retention: a thread trims, through the writer and in chunks so writes
 * never wait long, the oldest events that every durable consumer has
 * acknowledged (when there are consumers), and in any case those past the
 * age cap or beyond the size cap. The byte count is kept exactly: it is
 * updated on the writer thread with each group and each trim, and stored
 * in the same batches.
 *
 * Recovery: the byte count and the consumers are read back at start.
 */
#include "wal/wal.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/clock.h"
#include "base/codec.h"
#include "base/pattern.h"
#include "base/text.h"

typedef struct rec {
    uint64_t revision;
    size_t off, len;  /* the whole stored record in `buf` */
    size_t subj_len;
} rec_t;

#define REC_HDR 10 /* ts_ms, subject length */
#define META_BYTES "mbytes"
#define TRIM_CHUNK 5000
#define CONSUMER_CHARS "A-Za-z0-9_.-"
#define CONSUMER_MAX 128

typedef struct active {
    struct active *next;
    char name[CONSUMER_MAX + 1];
} active_t;

struct wal {
    store_t *store;
    wal_encode_fn encode;
    void *encode_arg;
    wal_limits_t lim;
    _Atomic uint64_t bytes; /* of all 'e' records; changed on the writer */
    /* Every event below it was trimmed: scans of the oldest events start
     * here, not at "e", so they do not step over the tombstones of every
     * event trimmed since the last compaction. Raised by wal_trim once a
     * chunk committed. */
    _Atomic uint64_t floor;

    pthread_t trimmer;
    int trimmer_started;
    pthread_mutex_t trim_mu;
    pthread_cond_t trim_cv;
    int stopping;

    /* The last group's records: writer thread only. */
    rec_t *recs;
    size_t n_recs, cap_recs;
    reel_wbuf_t buf;

    pthread_mutex_t hub_mu;
    uint64_t last_published;
    wal_sub_t *subs;
    active_t *active; /* consumers with a subscriber, under hub_mu */
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

static void *trimmer_main(void *arg);

reel_code_t wal_create(store_t *store, wal_encode_fn encode, void *encode_arg,
                       const wal_limits_t *limits, wal_t **out,
                       reel_status_t *st) {
    wal_t *w = calloc(1, sizeof(*w));
    char *val = NULL;
    size_t vlen = 0;
    uint64_t head, oldest;

    *out = NULL;
    if (w == NULL)
        return reel_status_set(st, REEL_RESOURCE_EXHAUSTED, "out of memory");
    w->store = store;
    w->encode = encode;
    w->encode_arg = encode_arg;
    if (limits != NULL)
        w->lim = *limits;
    if (w->lim.retention_bytes == 0)
        w->lim.retention_bytes = (uint64_t)1 << 30;
    if (w->lim.retention_age_ms <= 0)
        w->lim.retention_age_ms = 7LL * 24 * 3600 * 1000;
    if (w->lim.trim_interval_ms <= 0)
        w->lim.trim_interval_ms = 1000;
    w->last_published = store_revision(store);
    if (store_get(store, STORE_CF_WAL, META_BYTES, strlen(META_BYTES), &val,
                  &vlen, NULL) == REEL_OK &&
        vlen == 8)
        atomic_store(&w->bytes, reel_be64_get((unsigned char *)val));
    free(val);
    wal_head(w, &head, &oldest); /* the one scan from "e" */
    atomic_store(&w->floor, oldest);
    pthread_mutex_init(&w->hub_mu, NULL);
    pthread_mutex_init(&w->trim_mu, NULL);
    pthread_cond_init(&w->trim_cv, NULL);
    if (pthread_create(&w->trimmer, NULL, trimmer_main, w) == 0)
        w->trimmer_started = 1;
    *out = w;
    return REEL_OK;
}

void wal_stop(wal_t *w) {
    if (w == NULL || !w->trimmer_started)
        return;
    pthread_mutex_lock(&w->trim_mu);
    w->stopping = 1;
    pthread_cond_broadcast(&w->trim_cv);
    pthread_mutex_unlock(&w->trim_mu);
    pthread_join(w->trimmer, NULL);
    w->trimmer_started = 0;
}

void wal_destroy(wal_t *w) {
    if (w == NULL)
        return;
    wal_stop(w);
    while (w->active != NULL) {
        active_t *a = w->active;
        w->active = a->next;
        free(a);
    }
    reel_wbuf_fini(&w->buf);
    free(w->recs);
    pthread_mutex_destroy(&w->hub_mu);
    pthread_mutex_destroy(&w->trim_mu);
    pthread_cond_destroy(&w->trim_cv);
    free(w);
}

void wal_head(wal_t *w, uint64_t *head, uint64_t *oldest) {
    store_iter_t *it = store_iter_create(w->store, STORE_CF_WAL, NULL);
    unsigned char key[9];

    *head = store_revision(w->store);
    *oldest = 0;
    if (it == NULL)
        return;
    rev_key(atomic_load(&w->floor), key);
    store_iter_seek(it, key, sizeof(key));
    if (store_iter_valid(it)) {
        size_t klen;
        const char *k = store_iter_key(it, &klen);
        if (klen == 9 && k[0] == 'e')
            *oldest = reel_be64_get((const unsigned char *)k + 1);
    }
    store_iter_destroy(it);
}

/* Writer thread: the new byte count, in the same batch. A group whose write
 * fails fails the store for good, so the count cannot drift. */
static void put_bytes(wal_t *w, store_txn_t *txn, uint64_t bytes) {
    unsigned char b[8];

    atomic_store(&w->bytes, bytes);
    reel_be64_put(b, bytes);
    store_txn_put(txn, STORE_CF_WAL, META_BYTES, strlen(META_BYTES), b, 8);
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
        if (slen > 0xffff) {
            free(subject);
            free(bytes);
            return reel_status_set(st, REEL_INTERNAL,
                                   "WAL subject longer than 65535 bytes");
        }
        w->recs[i] = (rec_t){changes[i].revision, w->buf.len, 0, slen};
        reel_wbuf_u64(&w->buf, (uint64_t)changes[i].ts_ms);
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
        store_txn_put_blind(txn, STORE_CF_WAL, key, sizeof(key),
                            w->buf.p + w->recs[i].off, w->recs[i].len);
    }
    put_bytes(w, txn, atomic_load(&w->bytes) + w->buf.len);
    return REEL_OK;
}

/* A stored record's subject and event bytes. -1 if malformed. */
static int rec_split(const unsigned char *p, size_t len, const char **subj,
                     size_t *slen, const uint8_t **bytes, size_t *blen) {
    size_t sl;

    if (len < REC_HDR)
        return -1;
    sl = ((size_t)p[8] << 8) | p[9];
    if (sl > len - REC_HDR)
        return -1;
    *subj = (const char *)p + REC_HDR;
    *slen = sl;
    *bytes = p + REC_HDR + sl;
    *blen = len - REC_HDR - sl;
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

/* 0 means "from the oldest retained"; any other start must still be
 * retained: OUT_OF_RANGE naming the oldest retained revision otherwise. */
static reel_code_t wal_check_start(wal_t *w, uint64_t *from,
                                   reel_status_t *st) {
    uint64_t head, oldest, first;

    wal_head(w, &head, &oldest);
    first = oldest ? oldest : head + 1; /* nothing retained: only new ones */
    if (*from == 0) {
        *from = first - 1;
        return REEL_OK;
    }
    if (*from + 1 < first)
        return reel_status_set(st, REEL_OUT_OF_RANGE,
                               "from_revision: revision %llu is no longer "
                               "retained; the oldest retained revision is "
                               "%llu",
                               (unsigned long long)*from,
                               (unsigned long long)first);
    return REEL_OK;
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
    if ((rc = wal_check_start(w, &from_revision, st)) != REEL_OK)
        return rc;
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

/* Replays to a fresh snapshot: 0 caught up to it, 1 the sink is full,
 * 2 events it needs were trimmed. */
static int replay(wal_sub_t *s) {
    store_snapshot_t *snap = NULL;
    store_iter_t *it;
    unsigned char key[9];
    int full = 0;

    if (store_snapshot_create(s->w->store, &snap, NULL) != REEL_OK)
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
        if (rev != s->cursor + 1) {
            full = 2; /* revisions are gapless: the rest was trimmed */
            break;
        }
        if (rec_split(v, vlen, &subj, &slen, &bytes, &blen) == 0 &&
            sub_matches(s, subj, slen) &&
            s->sink.deliver(s->arg, bytes, blen, rev) != 0) {
            full = 1;
            break;
        }
        s->cursor = rev;
    }
    /* Every revision has its event, in the same commit: a scan that ends
     * short of the snapshot's revision met a trimmed gap. */
    if (!full && s->cursor < store_snapshot_revision(snap))
        full = 2;
    store_iter_destroy(it);
    store_snapshot_release(s->w->store, snap);
    return full;
}

void wal_sub_pump(wal_sub_t *s) {
    wal_t *w = s->w;
    uint64_t lost = 0;
    int r = 0;

    pthread_mutex_lock(&s->mu);
    if (s->dead || s->pumping || s->phase != SUB_REPLAY) {
        pthread_mutex_unlock(&s->mu);
        return;
    }
    s->pumping = 1;
    while (!s->dead && s->phase == SUB_REPLAY) {
        if ((r = replay(s)) != 0) {
            if (r == 2) {
                s->dead = 1; /* nothing more will be delivered */
                lost = s->cursor;
            }
            break;
        }
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
    if (r == 2) {
        reel_status_t why = REEL_STATUS_INIT;
        uint64_t head, oldest;

        wal_head(w, &head, &oldest);
        reel_status_set(&why, REEL_OUT_OF_RANGE,
                        "the subscription fell behind retention: the last "
                        "revision it received is %llu, the oldest retained "
                        "is %llu",
                        (unsigned long long)lost, (unsigned long long)oldest);
        s->sink.end(s->arg, &why);
        reel_status_fini(&why);
    }
}

int wal_sub_live(wal_sub_t *s) { return atomic_load(&s->live); }

uint64_t wal_sub_cursor(wal_sub_t *s) {
    uint64_t c;

    pthread_mutex_lock(&s->mu);
    c = s->cursor;
    pthread_mutex_unlock(&s->mu);
    return c;
}

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

/* ---- Durable consumers ---------------------------------------------------- */

typedef struct consumer_op {
    const char *name, *pattern;
    uint64_t revision;
    int kind; /* 0 create-if-missing, 1 ack, 2 delete */
    wal_consumer_t *out;
} consumer_op_t;

static size_t consumer_key(const char *name, char *buf, size_t cap) {
    return (size_t)snprintf(buf, cap, "c%s", name);
}

static int consumer_decode(const char *name, const void *v, size_t len,
                           wal_consumer_t *c) {
    reel_rbuf_t r;

    memset(c, 0, sizeof(*c));
    reel_rbuf_init(&r, v, len);
    c->acked = reel_rbuf_u64(&r);
    c->created_at_ms = (int64_t)reel_rbuf_u64(&r);
    c->acked_at_ms = (int64_t)reel_rbuf_u64(&r);
    c->pattern = strdup(reel_rbuf_str(&r));
    c->name = strdup(name);
    if (reel_rbuf_ok(&r) != 0 || c->pattern == NULL || c->name == NULL) {
        wal_consumer_fini(c);
        return -1;
    }
    return 0;
}

void wal_consumer_fini(wal_consumer_t *c) {
    if (c == NULL)
        return;
    free(c->name);
    free(c->pattern);
    memset(c, 0, sizeof(*c));
}

static void consumer_put(store_txn_t *txn, const char *key, size_t klen,
                         const wal_consumer_t *c) {
    reel_wbuf_t w = {0};

    reel_wbuf_u64(&w, c->acked);
    reel_wbuf_u64(&w, (uint64_t)c->created_at_ms);
    reel_wbuf_u64(&w, (uint64_t)c->acked_at_ms);
    reel_wbuf_str(&w, c->pattern);
    if (reel_wbuf_done(&w) == 0)
        store_txn_put(txn, STORE_CF_WAL, key, klen, w.p, w.len);
    reel_wbuf_fini(&w);
}

static reel_code_t apply_consumer(store_txn_t *txn, void *arg,
                                  reel_status_t *st) {
    consumer_op_t *op = arg;
    char key[CONSUMER_MAX + 2];
    size_t klen = consumer_key(op->name, key, sizeof(key));
    char *val = NULL;
    size_t vlen = 0;
    wal_consumer_t c;
    uint64_t head = store_txn_next_revision(txn) - 1;
    reel_code_t rc;

    rc = store_txn_get(txn, STORE_CF_WAL, key, klen, &val, &vlen, st);
    if (rc != REEL_OK && rc != REEL_NOT_FOUND)
        return rc;
    if (rc == REEL_NOT_FOUND) {
        reel_status_fini(st);
        if (op->kind != 0)
            return reel_status_set(st, REEL_NOT_FOUND,
                                   "consumer \"%s\" not found", op->name);
        memset(&c, 0, sizeof(c));
        c.acked = op->revision;
        c.created_at_ms = store_txn_now_ms(txn);
        c.pattern = (char *)(op->pattern ? op->pattern : "");
        consumer_put(txn, key, klen, &c);
        c.name = (char *)op->name;
        op->out->acked = c.acked;
        op->out->created_at_ms = c.created_at_ms;
        return REEL_OK;
    }
    if (consumer_decode(op->name, val, vlen, &c) != 0) {
        free(val);
        return reel_status_set(st, REEL_DATA_LOSS,
                               "consumer \"%s\": stored record is corrupt",
                               op->name);
    }
    free(val);
    if (op->kind == 1) {
        if (op->revision > head) {
            rc = reel_status_set(st, REEL_INVALID_ARGUMENT,
                                 "revision: %llu is past the head revision "
                                 "%llu",
                                 (unsigned long long)op->revision,
                                 (unsigned long long)head);
            wal_consumer_fini(&c);
            return rc;
        }
        if (op->revision > c.acked) { /* never back */
            c.acked = op->revision;
            c.acked_at_ms = store_txn_now_ms(txn);
            consumer_put(txn, key, klen, &c);
        }
    } else if (op->kind == 2) {
        store_txn_delete(txn, STORE_CF_WAL, key, klen);
    } else if (op->pattern != NULL && strcmp(op->pattern, c.pattern) != 0) {
        free(c.pattern);
        c.pattern = strdup(op->pattern);
        if (c.pattern != NULL)
            consumer_put(txn, key, klen, &c);
    }
    wal_consumer_fini(op->out);
    *op->out = c;
    return REEL_OK;
}

static reel_code_t check_consumer_name(const char *name, reel_status_t *st) {
    return reel_check_charset("consumer", name, strlen(name), CONSUMER_MAX,
                              CONSUMER_CHARS, st);
}

static int is_active(wal_t *w, const char *name) {
    for (active_t *a = w->active; a != NULL; a = a->next)
        if (strcmp(a->name, name) == 0)
            return 1;
    return 0;
}

reel_code_t wal_consumer_attach(wal_t *w, const char *name,
                                uint64_t from_revision, const char *pattern,
                                uint64_t *start, reel_status_t *st) {
    wal_consumer_t c = {0};
    consumer_op_t op = {name, pattern, from_revision, 0, &c};
    active_t *a;
    reel_code_t rc;

    if ((rc = check_consumer_name(name, st)) != REEL_OK)
        return rc;
    a = calloc(1, sizeof(*a));
    if (a == NULL)
        return reel_status_set(st, REEL_RESOURCE_EXHAUSTED, "out of memory");
    snprintf(a->name, sizeof(a->name), "%s", name);
    pthread_mutex_lock(&w->hub_mu);
    if (is_active(w, name)) {
        pthread_mutex_unlock(&w->hub_mu);
        free(a);
        return reel_status_set(st, REEL_FAILED_PRECONDITION,
                               "consumer \"%s\" already has an active "
                               "subscriber",
                               name);
    }
    a->next = w->active;
    w->active = a;
    pthread_mutex_unlock(&w->hub_mu);
    /* A new consumer starts where a plain subscription would, and only
     * from a revision still retained (checked before it is created); an
     * existing one resumes after its cursor whatever from_revision says. */
    {
        char key[CONSUMER_MAX + 2], *val = NULL;
        size_t vlen = 0, klen = consumer_key(name, key, sizeof(key));
        int exists = store_get(w->store, STORE_CF_WAL, key, klen, &val, &vlen,
                               NULL) == REEL_OK;

        free(val);
        rc = exists ? REEL_OK : wal_check_start(w, &op.revision, st);
    }
    if (rc == REEL_OK)
        rc = store_exec(w->store, apply_consumer, &op, NULL, st);
    if (rc == REEL_OK)
        *start = c.acked;
    else
        wal_consumer_detach(w, name);
    wal_consumer_fini(&c);
    return rc;
}

void wal_consumer_detach(wal_t *w, const char *name) {
    pthread_mutex_lock(&w->hub_mu);
    for (active_t **pp = &w->active; *pp != NULL; pp = &(*pp)->next) {
        if (strcmp((*pp)->name, name) == 0) {
            active_t *a = *pp;
            *pp = a->next;
            free(a);
            break;
        }
    }
    pthread_mutex_unlock(&w->hub_mu);
}

reel_code_t wal_ack(wal_t *w, const char *name, uint64_t revision,
                    wal_consumer_t *out, reel_status_t *st) {
    consumer_op_t op = {name, NULL, revision, 1, out};
    reel_code_t rc;

    memset(out, 0, sizeof(*out));
    if ((rc = check_consumer_name(name, st)) != REEL_OK)
        return rc;
    rc = store_exec(w->store, apply_consumer, &op, NULL, st);
    if (rc == REEL_OK) {
        pthread_mutex_lock(&w->hub_mu);
        out->active = is_active(w, name);
        pthread_mutex_unlock(&w->hub_mu);
    }
    return rc;
}

reel_code_t wal_consumer_delete(wal_t *w, const char *name,
                                reel_status_t *st) {
    wal_consumer_t c = {0};
    consumer_op_t op = {name, NULL, 0, 2, &c};
    reel_code_t rc;
    int active;

    if ((rc = check_consumer_name(name, st)) != REEL_OK)
        return rc;
    pthread_mutex_lock(&w->hub_mu);
    active = is_active(w, name);
    pthread_mutex_unlock(&w->hub_mu);
    if (active)
        return reel_status_set(st, REEL_FAILED_PRECONDITION,
                               "consumer \"%s\" has an active subscriber; "
                               "stop it first",
                               name);
    rc = store_exec(w->store, apply_consumer, &op, NULL, st);
    wal_consumer_fini(&c);
    return rc;
}

reel_code_t wal_consumers(wal_t *w, const char *start_after, size_t limit,
                          const reel_page_t *page, wal_consumer_t **out,
                          size_t *n, int *more, reel_status_t *st) {
    store_iter_t *it = store_iter_create(w->store, STORE_CF_WAL, NULL);
    const char *after = start_after ? start_after : "";
    size_t alen = strlen(after), cap = 0, used = 0;
    wal_consumer_t *arr = NULL, c;
    char seek[CONSUMER_MAX + 2] = "c";
    reel_code_t rc;

    *out = NULL;
    *n = 0;
    if (more != NULL)
        *more = 0;
    if (it == NULL)
        return reel_status_set(st, REEL_RESOURCE_EXHAUSTED, "out of memory");
    /* Seeking to a prefix of start_after is enough (a name is at most
     * CONSUMER_MAX bytes): the names up to it are skipped below. */
    if (alen > CONSUMER_MAX)
        alen = CONSUMER_MAX;
    memcpy(seek + 1, after, alen);
    for (store_iter_seek(it, seek, 1 + alen); store_iter_valid(it);
         store_iter_next(it)) {
        size_t klen, vlen;
        const char *k = store_iter_key(it, &klen);
        const char *v = store_iter_value(it, &vlen);
        char name[CONSUMER_MAX + 1];

        if (klen < 2 || k[0] != 'c' || klen - 1 > CONSUMER_MAX)
            break;
        memcpy(name, k + 1, klen - 1);
        name[klen - 1] = '\0';
        if (*after && strcmp(name, after) <= 0)
            continue;
        if (consumer_decode(name, v, vlen, &c) != 0)
            continue;
        if ((limit > 0 && *n == limit) ||
            !reel_page_take(page, *n, &used, &c)) {
            wal_consumer_fini(&c);
            if (more != NULL)
                *more = 1;
            break;
        }
        if (*n == cap) {
            size_t nc = cap ? cap * 2 : 8;
            wal_consumer_t *na = realloc(arr, nc * sizeof(*na));
            if (na == NULL) {
                wal_consumer_fini(&c);
                break;
            }
            arr = na;
            cap = nc;
        }
        arr[(*n)++] = c;
    }
    rc = store_iter_status(it, st);
    store_iter_destroy(it);
    pthread_mutex_lock(&w->hub_mu);
    for (size_t i = 0; i < *n; i++)
        arr[i].active = is_active(w, arr[i].name);
    pthread_mutex_unlock(&w->hub_mu);
    *out = arr;
    return rc;
}

/* ---- Retention ------------------------------------------------------------ */

typedef struct trim_op {
    wal_t *w;
    uint64_t upto; /* delete events with revision <= upto ... */
    size_t done;   /* ... at most TRIM_CHUNK of them; how many it did */
    uint64_t floor; /* where it ended: the WAL's floor once it commits */
} trim_op_t;

/* Deletes blind: nothing in a group reads old events back, and an
 * indexed delete costs the writer several times as much. */
static reel_code_t apply_trim(store_txn_t *txn, void *arg, reel_status_t *st) {
    trim_op_t *op = arg;
    store_iter_t *it = store_txn_iter(txn, STORE_CF_WAL);
    uint64_t freed = 0, bytes, last = 0;
    unsigned char key[9];

    if (it == NULL)
        return reel_status_set(st, REEL_RESOURCE_EXHAUSTED, "out of memory");
    op->done = 0;
    rev_key(atomic_load(&op->w->floor), key);
    for (store_iter_seek(it, key, sizeof(key));
         store_iter_valid(it) && op->done < TRIM_CHUNK;
         store_iter_next(it)) {
        size_t klen, vlen;
        const char *k = store_iter_key(it, &klen);

        if (klen != 9 || k[0] != 'e' ||
            (last = reel_be64_get((const unsigned char *)k + 1)) > op->upto)
            break;
        store_iter_value(it, &vlen);
        store_txn_delete_blind(txn, STORE_CF_WAL, k, klen);
        freed += vlen;
        op->done++;
    }
    store_iter_destroy(it);
    bytes = atomic_load(&op->w->bytes);
    if (op->done > 0) {
        put_bytes(op->w, txn, bytes > freed ? bytes - freed : 0);
        op->floor = op->done == TRIM_CHUNK ? last + 1 : op->upto + 1;
    }
    return REEL_OK;
}

/* The highest revision retention lets go of now (0: none). */
static uint64_t trim_point(wal_t *w) {
    int64_t too_old = reel_clock_now_ms() - w->lim.retention_age_ms;
    uint64_t bytes = atomic_load(&w->bytes), cut = 0, head, oldest;
    wal_consumer_t *cs = NULL;
    store_iter_t *it;
    unsigned char key[9];
    size_t n = 0;

    wal_head(w, &head, &oldest);
    if (oldest == 0)
        return 0;
    if (wal_consumers(w, NULL, 0, NULL, &cs, &n, NULL, NULL) == REEL_OK &&
        n > 0) {
        uint64_t min = UINT64_MAX;
        for (size_t i = 0; i < n; i++)
            if (cs[i].acked < min)
                min = cs[i].acked;
        cut = min;
    }
    for (size_t i = 0; i < n; i++)
        wal_consumer_fini(&cs[i]);
    free(cs);
    /* The age and size caps: walk from the oldest while they are over. */
    it = store_iter_create(w->store, STORE_CF_WAL, NULL);
    if (it == NULL)
        return cut;
    rev_key(oldest, key);
    for (store_iter_seek(it, key, sizeof(key)); store_iter_valid(it);
         store_iter_next(it)) {
        size_t klen, vlen;
        const char *k = store_iter_key(it, &klen);
        const unsigned char *v =
            (const unsigned char *)store_iter_value(it, &vlen);
        uint64_t rev;

        if (klen != 9 || k[0] != 'e' || vlen < REC_HDR)
            break;
        rev = reel_be64_get((const unsigned char *)k + 1);
        if (bytes <= w->lim.retention_bytes &&
            (int64_t)reel_be64_get(v) >= too_old)
            break;
        if (rev > cut)
            cut = rev;
        bytes -= vlen < bytes ? vlen : bytes;
    }
    store_iter_destroy(it);
    return cut > head ? head : cut;
}

reel_code_t wal_trim(wal_t *w, reel_status_t *st) {
    uint64_t upto = trim_point(w);
    trim_op_t op = {w, upto, TRIM_CHUNK, 0};
    reel_code_t rc = REEL_OK;

    /* Chunks, each its own commit: writers interleave between them. The
     * floor moves only once a chunk committed: a group that fails leaves
     * its events in place. */
    while (upto > 0 && op.done == TRIM_CHUNK) {
        if ((rc = store_exec(w->store, apply_trim, &op, NULL, st)) != REEL_OK)
            break;
        if (op.done > 0)
            atomic_store(&w->floor, op.floor);
    }
    return rc;
}

static void *trimmer_main(void *arg) {
    wal_t *w = arg;

    pthread_mutex_lock(&w->trim_mu);
    while (!w->stopping) {
        struct timespec ts;

        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += w->lim.trim_interval_ms / 1000;
        ts.tv_nsec += (w->lim.trim_interval_ms % 1000) * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&w->trim_cv, &w->trim_mu, &ts);
        if (w->stopping)
            break;
        pthread_mutex_unlock(&w->trim_mu);
        wal_trim(w, NULL);
        pthread_mutex_lock(&w->trim_mu);
    }
    pthread_mutex_unlock(&w->trim_mu);
    return NULL;
}
