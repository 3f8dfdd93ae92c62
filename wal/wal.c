/*
 * wal/wal.c: event records, subscriptions, durable consumers, retention.
 *
 * Column family `wal`:
 *   'e' rev(8)   -> i64 ts_ms, u16 subject length, subject, event bytes
 *   'c' name     -> u64 acked, i64 created_at_ms, i64 acked_at_ms,
 *                   str pattern, [i64 invalidated_at_ms, str reason]
 *                   (durable consumers; the last two once invalidated)
 *   "d"          -> empty: sorts after every consumer and before every
 *                   event, so a scan of the consumers ends there instead
 *                   of stepping over the tombstones of trimmed events
 *   "mbytes"     -> u64: the bytes of all 'e' records (for the size cap)
 *   "mconsumers" -> u64: how many 'c' records there are (for the count
 *                   cap; counted once at start where it is missing).
 *                   A tenant's own cap counts its 'c' records instead.
 *
 * Invariants
 *   - wal_before_commit runs on the writer after a group's applies: every
 *     change of the group gets its record in the group's own batch, so a
 *     change and its event commit together (or neither does), and
 *     revisions are gapless in the WAL as in the store.
 *   - The records of the last group are kept in memory until wal_publish
 *     hands them to live subscribers: the bytes are encoded once.
 *   - A valid consumer's events (those after its acknowledged revision)
 *     are all retained: a trim never goes past a valid consumer's cursor,
 *     checked on the writer in the trim's own group, and a new consumer is
 *     created only at a revision not yet trimmed (trimmed_to, on the
 *     writer). A consumer whose events must go is invalidated in the same
 *     group that trims them.
 *
 * Subscriptions are on the feed (feed/feed.h), which owns the handoff
 * from replay to live and its locks: replay reads the stored events after
 * the cursor to a snapshot, and every subscription takes every live event,
 * dropping those its subject pattern refuses, so its cursor moves past
 * them (a PROGRESS tick or an acknowledgement may name it). A subscription
 * ends only through its pump (sink.end, once): a replay that fails, a gap
 * retention left, or a kick (its consumer taken over or invalidated,
 * which asks the owner to pump through sink.wake).
 *
 * Retention (like replication slots under Postgres's
 * max_slot_wal_keep_size): a thread trims, through the writer and in
 * chunks so writes never wait long, the oldest events past the age cap or
 * beyond the size cap; acknowledgements alone trim nothing. It walks from
 * the oldest event while the limits are exceeded. Reaching an event that
 * a consumer has not acknowledged, it stops there (the consumer holds it),
 * unless that consumer's unacknowledged events (all bytes from there to
 * the head) take more than consumer_max_lag_bytes: then the consumer is
 * invalidated, its record saying when and why, and the walk goes on. In
 * the steady state the walk stops at once, at the consumer furthest
 * behind, whose cursor the last trim reached. The byte count is kept
 * exactly: it is updated on the writer thread with each group and each
 * trim, and stored in the same batches. A trim that fails (reading the
 * consumers, iterating) trims nothing; the trimmer logs each distinct
 * failure once and retries every interval.
 *
 * Lock order: consumers_mu (which consumers have a subscriber, and what
 * the last trim held), then the feed's locks (a kick), then (inside sinks)
 * the caller's own locks. trim_run_mu serializes trims; trim_mu guards the
 * trimmer's sleep.
 *
 * Recovery: the byte count, the oldest event and the consumers are read
 * back at start; an invalidated consumer stays invalidated until deleted.
 */
#include "wal/wal.h"
#include "wal/wal_int.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/clock.h"
#include "base/codec.h"
#include "base/fault.h"
#include "base/log.h"
#include "base/pattern.h"
#include "base/text.h"
#include "feed/feed.h"

typedef struct rec {
    uint64_t revision;
    size_t off, len;  /* the whole stored record in `buf` */
    size_t subj_len;
} rec_t;

#define REC_HDR 10 /* ts_ms, subject length */
#define META_BYTES "mbytes"
#define META_CONSUMERS "mconsumers"
#define CONSUMERS_END "d"
#define TRIM_CHUNK 5000
/* WAL_CONSUMER_CHARS and ':', for a tenant's "::T:name" (wal.h). */
#define CONSUMER_CHARS WAL_CONSUMER_STORED_CHARS
#define CONSUMER_MAX WAL_CONSUMER_MAX
#define CF_WAL "wal"

/* Read in forward passes from a subscriber's position: a tail. */
const store_cf_desc_t wal_cfs[] = {
    {CF_WAL, STORE_CF_TAIL},
    {NULL, STORE_CF_PLAIN},
};

/* A consumer held by a subscription, under consumers_mu. */
typedef struct active {
    struct active *next;
    char name[CONSUMER_MAX + 1];
    wal_sub_t *sub;
} active_t;

/* A consumer the last trim stopped at, with its unacknowledged bytes. */
typedef struct holding {
    char name[CONSUMER_MAX + 1];
    uint64_t bytes;
} holding_t;

struct wal {
    store_t *store;
    store_cf_t *cf;
    wal_encode_fn encode;
    void *encode_arg;
    wal_limits_t lim;
    _Atomic uint64_t bytes; /* of all 'e' records; changed on the writer */
    /* Every event below it was trimmed: scans of the oldest events start
     * here, not at "e", so they do not step over the tombstones of every
     * event trimmed since the last compaction. Raised by wal_trim once a
     * chunk committed. */
    _Atomic uint64_t floor;
    /* Writer thread only: every event <= it is trimmed, or deleted by a
     * group being written. (A trim whose group then fails leaves it a
     * little ahead: a new consumer is refused a start that retention was
     * about to trim anyway, until the next trim takes it.) */
    uint64_t trimmed_to;

    pthread_t trimmer;
    int trimmer_started;
    pthread_mutex_t trim_mu;
    pthread_cond_t trim_cv; /* CLOCK_MONOTONIC */
    int stopping, trim_soon;
    pthread_mutex_t trim_run_mu;

    /* The last group's records: writer thread only. */
    rec_t *recs;
    size_t n_recs, cap_recs;
    reel_wbuf_t buf;

    feed_hub_t *hub; /* subscriptions, all of any key */
    pthread_mutex_t consumers_mu;
    active_t *active;   /* consumers with a subscriber, under consumers_mu */
    /* Subscribes whose record the writer has read or made, not yet
     * registered in active (sub NULL): a delete meanwhile must wait for
     * them as for an active one. Under consumers_mu. */
    active_t *reserved;
    holding_t *holding; /* the last trim's verdict, under consumers_mu */
    size_t n_holding;
};

struct wal_sub {
    wal_t *w;
    feed_sub_t *sub; /* NULL until registered */
    char *pattern;
    size_t pattern_len;
    char *consumer; /* the durable consumer it holds, or NULL */
    char *scope;    /* sink.scope's copy, or NULL */
    size_t scope_len;
    wal_sink_t sink;
    void *arg;
};

/* A live event: its stored record, split. */
typedef struct item {
    const char *subj;
    size_t slen;
    const uint8_t *bytes;
    size_t blen;
    uint64_t revision;
} item_t;

static void rev_key(uint64_t rev, unsigned char out[9]) {
    out[0] = 'e';
    reel_be64_put(out + 1, rev);
}

static void *trimmer_main(void *arg);
static size_t consumer_key(const char *name, char *buf, size_t cap);

/* The consumers' count as txn sees it ("mconsumers"). */
static reel_code_t consumer_count(wal_t *w, store_txn_t *txn, uint64_t *n,
                                  reel_status_t *st) {
    char *val = NULL;
    size_t vlen = 0;
    reel_code_t rc;

    rc = store_txn_get(txn, w->cf, META_CONSUMERS, strlen(META_CONSUMERS),
                       &val, &vlen, st);
    if (rc == REEL_OK && vlen != 8)
        rc = reel_status_set(st, REEL_DATA_LOSS,
                             "the WAL's consumer count is malformed (%zu "
                             "bytes)",
                             vlen);
    if (rc == REEL_OK)
        *n = reel_be64_get((unsigned char *)val);
    free(val);
    return rc;
}

/*
 * OK when name's tenant (its scope prefix) has fewer than
 * max_tenant_consumers consumers, as txn sees them: counted by walking
 * the tenant's 'c' records, at most the cap of them (a create is rare; a
 * count record per tenant would need every tenant's counted at start).
 */
static reel_code_t tenant_room(wal_t *w, store_txn_t *txn, const char *name,
                               reel_status_t *st) {
    size_t plen = w->lim.consumer_scope ? w->lim.consumer_scope(name) : 0;
    char key[CONSUMER_MAX + 2];
    size_t klen, n = 0, kl;
    store_iter_t *it;
    const char *k;
    reel_code_t rc;

    if (plen == 0)
        return REEL_OK;
    klen = consumer_key(name, key, sizeof(key));
    if (klen > plen + 1)
        klen = plen + 1; /* 'c' and the prefix */
    if ((it = store_txn_iter_prefix(txn, w->cf, key, klen)) == NULL)
        return reel_status_set(st, REEL_RESOURCE_EXHAUSTED, "out of memory");
    for (store_iter_seek(it, key, klen);
         store_iter_valid(it) && n < w->lim.max_tenant_consumers;
         store_iter_next(it)) {
        k = store_iter_key(it, &kl);
        if (kl < klen || memcmp(k, key, klen) != 0)
            break;
        n++;
    }
    rc = store_iter_status(it, st);
    store_iter_destroy(it);
    if (rc == REEL_OK && n >= w->lim.max_tenant_consumers)
        rc = reel_status_set(st, REEL_RESOURCE_EXHAUSTED,
                             "consumer \"%s\": its tenant has %zu durable "
                             "consumers, at most %u "
                             "(--wal-max-consumers-per-tenant); delete one "
                             "no longer used first",
                             name, n, w->lim.max_tenant_consumers);
    return rc;
}

static void consumer_count_put(wal_t *w, store_txn_t *txn, uint64_t n) {
    unsigned char b[8];

    reel_be64_put(b, n);
    store_txn_put(txn, w->cf, META_CONSUMERS, strlen(META_CONSUMERS), b, 8);
}

/*
 * What a data dir may lack, in one commit: the end mark of the consumers
 * (a new dir) and their count (a dir from before it: counted once).
 */
typedef struct wal_meta {
    wal_t *w;
    int end, count; /* missing */
} wal_meta_t;

static reel_code_t apply_meta(store_txn_t *txn, void *arg, reel_status_t *st) {
    wal_meta_t *m = arg;
    wal_t *w = m->w;
    const char c = 'c';
    store_iter_t *it;
    uint64_t n = 0;
    reel_code_t rc;

    if (m->end)
        store_txn_put(txn, w->cf, CONSUMERS_END, strlen(CONSUMERS_END), "",
                      0);
    if (!m->count)
        return REEL_OK;
    if ((it = store_iter_prefix(w->store, w->cf, NULL, &c, 1)) == NULL)
        return reel_status_set(st, REEL_RESOURCE_EXHAUSTED, "out of memory");
    for (store_iter_seek(it, &c, 1); store_iter_valid(it); store_iter_next(it))
        n++;
    rc = store_iter_status(it, st);
    store_iter_destroy(it);
    if (rc == REEL_OK)
        consumer_count_put(w, txn, n);
    return rc;
}

/* Whether key is missing from the WAL's family: 1, 0, or -1 (st says). */
static int meta_missing(wal_t *w, const char *key, reel_status_t *st) {
    char *val = NULL;
    size_t vlen = 0;
    reel_code_t rc = store_get(w->store, w->cf, key, strlen(key), &val, &vlen,
                               st);

    free(val);
    if (rc == REEL_NOT_FOUND) {
        reel_status_fini(st);
        return 1;
    }
    return rc == REEL_OK ? 0 : -1;
}

/*
 * Every revision commits with its event, in one batch, and trimming takes
 * the oldest first: a WAL that holds events holds the head's, and none
 * past it. Anything else is a data dir whose files do not belong together
 * (copied file by file while reeld ran, a log file lost), which would
 * serve values, history and events that disagree: refused at open.
 */
static reel_code_t check_newest(wal_t *w, uint64_t head, reel_status_t *st) {
    store_iter_t *it = store_iter_create(w->store, w->cf, NULL);
    unsigned char key[9];
    int has_head = 0, past = 0;
    uint64_t after = 0;
    reel_code_t rc;

    if (it == NULL)
        return reel_status_set(st, REEL_RESOURCE_EXHAUSTED, "out of memory");
    rev_key(head, key);
    store_iter_seek(it, key, sizeof(key));
    if (store_iter_valid(it)) {
        size_t klen;
        const char *k = store_iter_key(it, &klen);

        has_head = klen == 9 && memcmp(k, key, 9) == 0;
        if (has_head)
            store_iter_next(it);
        if (store_iter_valid(it)) {
            k = store_iter_key(it, &klen);
            past = klen == 9 && k[0] == 'e';
            if (past)
                after = reel_be64_get((const unsigned char *)k + 1);
        }
    }
    rc = store_iter_status(it, st);
    store_iter_destroy(it);
    if (rc != REEL_OK)
        return reel_status_set(st, rc, "reading the newest WAL event: %s",
                               reel_status_message(st));
    if (past)
        return reel_status_set(st, REEL_DATA_LOSS,
                               "the data dir is corrupted: the WAL holds an "
                               "event of revision %llu, past the head %llu "
                               "(its files do not belong together: a copy "
                               "made while reeld ran, or a file lost); "
                               "refusing to open it: restore a backup",
                               (unsigned long long)after,
                               (unsigned long long)head);
    if (!has_head)
        return reel_status_set(st, REEL_DATA_LOSS,
                               "the data dir is corrupted: the WAL has no "
                               "event for the head revision %llu (its files "
                               "do not belong together: a copy made while "
                               "reeld ran, or a file lost); refusing to open "
                               "it: restore a backup",
                               (unsigned long long)head);
    return REEL_OK;
}

reel_code_t wal_create(store_t *store, wal_encode_fn encode, void *encode_arg,
                       const wal_limits_t *limits, wal_t **out,
                       reel_status_t *st) {
    wal_t *w = calloc(1, sizeof(*w));
    char *val = NULL;
    size_t vlen = 0;
    uint64_t head, oldest;
    reel_code_t rc;

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
    if (w->lim.consumer_max_lag_bytes == 0)
        w->lim.consumer_max_lag_bytes = (uint64_t)1 << 30;
    if (w->lim.max_consumers == 0)
        w->lim.max_consumers = WAL_DEFAULT_MAX_CONSUMERS;
    if (w->lim.max_tenant_consumers == 0)
        w->lim.max_tenant_consumers = WAL_DEFAULT_MAX_TENANT_CONSUMERS;
    if ((rc = store_cf_lookup(store, CF_WAL, &w->cf, st)) != REEL_OK) {
        free(w);
        return rc;
    }
    /* Without its true byte count or oldest event, retention would trim
     * the wrong events: refuse to start instead. */
    rc = store_get(store, w->cf, META_BYTES, strlen(META_BYTES), &val, &vlen,
                   st);
    if (rc == REEL_OK && vlen != 8)
        rc = reel_status_set(st, REEL_DATA_LOSS,
                             "the WAL's byte count is malformed (%zu bytes)",
                             vlen);
    if (rc == REEL_OK)
        atomic_store(&w->bytes, reel_be64_get((unsigned char *)val));
    free(val);
    val = NULL;
    if (rc == REEL_NOT_FOUND) {
        reel_status_fini(st);
        rc = REEL_OK;
    }
    if (rc == REEL_OK) {
        wal_meta_t m = {w, meta_missing(w, CONSUMERS_END, st), 0};

        if (m.end >= 0)
            m.count = meta_missing(w, META_CONSUMERS, st);
        if (m.end < 0 || m.count < 0)
            rc = st->code;
        else if (m.end || m.count)
            rc = store_exec(store, apply_meta, &m, NULL, st);
    }
    if (rc == REEL_OK)
        rc = wal_head(w, &head, &oldest, st); /* the one scan from "e" */
    if (rc == REEL_OK && oldest != 0)
        rc = check_newest(w, head, st);
    if (rc == REEL_OK)
        rc = feed_hub_create(head, &w->hub, st);
    if (rc != REEL_OK) {
        free(w);
        return rc;
    }
    atomic_store(&w->floor, oldest);
    w->trimmed_to = oldest ? oldest - 1 : head;
    pthread_mutex_init(&w->consumers_mu, NULL);
    pthread_mutex_init(&w->trim_mu, NULL);
    pthread_mutex_init(&w->trim_run_mu, NULL);
    reel_cond_init_mono(&w->trim_cv);
    if (pthread_create(&w->trimmer, NULL, trimmer_main, w) != 0) {
        wal_destroy(w);
        return reel_status_set(st, REEL_RESOURCE_EXHAUSTED,
                               "cannot start the WAL's trimmer thread");
    }
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
    free(w->holding);
    reel_wbuf_fini(&w->buf);
    free(w->recs);
    feed_hub_destroy(w->hub);
    pthread_mutex_destroy(&w->consumers_mu);
    pthread_mutex_destroy(&w->trim_mu);
    pthread_mutex_destroy(&w->trim_run_mu);
    pthread_cond_destroy(&w->trim_cv);
    free(w);
}

reel_code_t wal_head(wal_t *w, uint64_t *head, uint64_t *oldest,
                     reel_status_t *st) {
    store_iter_t *it;
    unsigned char key[9];
    reel_code_t rc;

    /* The head first: an event trimmed after it is read cannot make the
     * oldest look newer than the head. */
    *head = store_revision(w->store);
    *oldest = 0;
    if ((it = store_iter_create(w->store, w->cf, NULL)) == NULL)
        return reel_status_set(st, REEL_RESOURCE_EXHAUSTED, "out of memory");
    rev_key(atomic_load(&w->floor), key);
    store_iter_seek(it, key, sizeof(key));
    if (store_iter_valid(it)) {
        size_t klen;
        const char *k = store_iter_key(it, &klen);
        if (klen == 9 && k[0] == 'e')
            *oldest = reel_be64_get((const unsigned char *)k + 1);
    }
    rc = store_iter_status(it, st);
    store_iter_destroy(it);
    if (rc != REEL_OK)
        return reel_status_set(st, rc, "reading the oldest WAL event: %s",
                               reel_status_message(st));
    if (*oldest > *head)
        *oldest = 0; /* committed after the head was read: none before */
    return REEL_OK;
}

/* Writer thread: the new byte count, in the same batch. A group whose write
 * fails fails the store for good, so the count cannot drift. */
static void put_bytes(wal_t *w, store_txn_t *txn, uint64_t bytes) {
    unsigned char b[8];

    atomic_store(&w->bytes, bytes);
    reel_be64_put(b, bytes);
    store_txn_put(txn, w->cf, META_BYTES, strlen(META_BYTES), b, 8);
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
        store_txn_put_blind(txn, w->cf, key, sizeof(key),
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

/*
 * Filtered subscriptions are indexed under their pattern's literal first
 * two tokens ("kv.orders" of "kv.orders.>"), or its first one ("kv" of
 * "kv.*.x"), and an event is matched only against those under its
 * subject's first token and first two: not against every filter (1,000
 * of them cost every write the matching of each). A pattern whose first
 * token is a wildcard, and no pattern, match against every event, but for
 * a tenant's subscription (sink.scope): without a literal second token it
 * is indexed under its tenant's mark, which a tenant's event carries as
 * an index key of its own (subject_scope), so no tenant's tails are
 * offered another's events. An event of no tenant's mark has
 * WAL_SCOPE_UNMARKED as that key, for the default tenant's tails.
 */
/* The tenant's mark "::T:" a subject's second token starts with (an index
 * key of its event, for scoped subscriptions): its length, or 0. */
static size_t subject_scope(const char *subj, size_t slen,
                            const char **mark) {
    const char *second = memchr(subj, '.', slen), *end;
    size_t left;

    if (second == NULL)
        return 0;
    second++;
    left = slen - (size_t)(second - subj);
    if (left < 3 || second[0] != ':' || second[1] != ':')
        return 0;
    for (end = second + 2; end < subj + slen && *end != '.'; end++)
        if (*end == ':') {
            *mark = second;
            return (size_t)(end + 1 - second);
        }
    return 0;
}

/* Whether the subject is of the tenant whose mark is scope (len bytes),
 * or, for WAL_SCOPE_UNMARKED, of no tenant's mark. */
static int in_scope(const char *subj, size_t slen, const char *scope,
                    size_t len) {
    const char *mark = NULL;
    size_t mlen = subject_scope(subj, slen, &mark);

    if (len == sizeof(WAL_SCOPE_UNMARKED) - 1 &&
        memcmp(scope, WAL_SCOPE_UNMARKED, len) == 0)
        return mlen == 0;
    return mlen == len && memcmp(mark, scope, len) == 0;
}

static int sub_matches(const wal_sub_t *s, const char *subj, size_t slen) {
    if (s->scope != NULL && !in_scope(subj, slen, s->scope, s->scope_len))
        return 0;
    return s->pattern_len == 0 ||
           reel_pattern_match(s->pattern, s->pattern_len, subj, slen);
}

void wal_publish(wal_t *w, const store_change_t *changes, size_t n) {
    feed_publish_begin(w->hub);
    for (size_t i = 0; i < w->n_recs && !feed_hub_idle(w->hub); i++) {
        feed_index_t idx[3];
        size_t n_idx, mlen;
        const char *mark;
        item_t it;

        it.revision = w->recs[i].revision;
        /* The fault point stands in for a record that cannot be read. */
        if (REEL_FAULT("wal.publish") ||
            rec_split(w->buf.p + w->recs[i].off, w->recs[i].len, &it.subj,
                      &it.slen, &it.bytes, &it.blen) != 0) {
            feed_publish_lost(w->hub, it.revision);
            continue;
        }
        idx[0].key = idx[1].key = it.subj;
        idx[0].len = reel_pattern_literal_head(it.subj, it.slen, 1);
        idx[1].len = reel_pattern_literal_head(it.subj, it.slen, 2);
        n_idx = idx[1].len > idx[0].len ? 2 : 1;
        /* Also under its tenant's mark, or under WAL_SCOPE_UNMARKED when
         * it has none, for scoped tails. */
        if ((mlen = subject_scope(it.subj, it.slen, &mark)) == 0) {
            mark = WAL_SCOPE_UNMARKED;
            mlen = sizeof(WAL_SCOPE_UNMARKED) - 1;
        }
        idx[n_idx].key = mark;
        idx[n_idx++].len = mlen;
        feed_publish_indexed(w->hub, NULL, 0, idx, n_idx, it.revision, &it);
    }
    feed_publish_end(w->hub, n > 0 ? changes[n - 1].revision : 0);
    w->n_recs = 0;
}

/* 0 means "from the oldest retained"; any other start must be at most the
 * head (INVALID_ARGUMENT naming it) and still retained (OUT_OF_RANGE
 * naming the oldest retained revision). No arithmetic on the client's
 * revision before it is known to be at most the head. */
static reel_code_t wal_check_start(wal_t *w, uint64_t *from,
                                   reel_status_t *st) {
    uint64_t head, oldest, first;
    reel_code_t rc;

    if ((rc = wal_head(w, &head, &oldest, st)) != REEL_OK)
        return rc;
    if (*from > head)
        return reel_status_set(st, REEL_INVALID_ARGUMENT,
                               "from_revision: %llu is past the head "
                               "revision %llu",
                               (unsigned long long)*from,
                               (unsigned long long)head);
    first = oldest ? oldest : head + 1; /* nothing retained: only new ones */
    if (*from == 0) {
        *from = first - 1;
        return REEL_OK;
    }
    if (*from < first - 1)
        return reel_status_not_retained(st, *from, "", first - 1, head);
    return REEL_OK;
}

/* A subscription, not yet registered anywhere. */
static reel_code_t sub_new(wal_t *w, const char *pattern,
                           const wal_sink_t *sink, void *arg, wal_sub_t **out,
                           reel_status_t *st) {
    size_t plen = pattern ? strlen(pattern) : 0;
    wal_sub_t *s;
    reel_code_t rc;

    *out = NULL;
    if (plen > 0 && (rc = reel_pattern_validate(pattern, plen,
                                                "subject_pattern", st)) !=
                        REEL_OK)
        return rc;
    /* Every subject's tokens are names that cannot be empty: a pattern
     * with one ("kv..app", ".kv") would wait for nothing, forever. */
    if (plen > 0 && reel_pattern_has_empty_token(pattern, plen))
        return reel_status_set(st, REEL_INVALID_ARGUMENT,
                               "subject_pattern: a token may not be empty "
                               "(\"..\", or a leading or trailing \".\"): "
                               "no subject has one");
    s = calloc(1, sizeof(*s));
    if (s == NULL || (s->pattern = strdup(pattern ? pattern : "")) == NULL) {
        free(s);
        return reel_status_set(st, REEL_RESOURCE_EXHAUSTED, "out of memory");
    }
    s->pattern_len = plen;
    s->w = w;
    s->sink = *sink;
    s->arg = arg;
    if (sink->scope != NULL && *sink->scope) {
        if ((s->scope = strdup(sink->scope)) == NULL) {
            free(s->pattern);
            free(s);
            return reel_status_set(st, REEL_RESOURCE_EXHAUSTED,
                                   "out of memory");
        }
        s->scope_len = strlen(s->scope);
    }
    s->sink.scope = s->scope;
    *out = s;
    return REEL_OK;
}

static void sub_free(wal_sub_t *s) {
    if (s == NULL)
        return;
    free(s->consumer);
    free(s->pattern);
    free(s->scope);
    free(s);
}

static const feed_ops_t sub_ops;

/* Registers s with the feed, its cursor at from: it is pumped from then. */
static reel_code_t sub_register(wal_sub_t *s, uint64_t from,
                                reel_status_t *st) {
    feed_sub_args_t fa = {0};

    fa.ops = &sub_ops;
    fa.arg = s;
    fa.cursor = from;
    fa.index_len = reel_pattern_literal_head(s->pattern, s->pattern_len, 2);
    if (s->scope != NULL &&
        fa.index_len <= reel_pattern_literal_head(s->pattern, s->pattern_len,
                                                  1)) {
        /* No literal second token (which would hold the mark): indexed
         * under the tenant's mark instead. */
        fa.index = s->scope;
        fa.index_len = s->scope_len;
    } else if (fa.index_len > 0) {
        fa.index = s->pattern;
    }
    return feed_sub_create(s->w->hub, &fa, &s->sub, st);
}

reel_code_t wal_sub_create(wal_t *w, uint64_t from_revision,
                           const char *pattern, const wal_sink_t *sink,
                           void *arg, wal_sub_t **out, reel_status_t *st) {
    reel_code_t rc;

    /* The pattern is checked first: its error names what to fix. */
    if ((rc = sub_new(w, pattern, sink, arg, out, st)) != REEL_OK)
        return rc;
    if ((rc = wal_check_start(w, &from_revision, st)) != REEL_OK ||
        (rc = sub_register(*out, from_revision, st)) != REEL_OK) {
        sub_free(*out);
        *out = NULL;
        return rc;
    }
    return REEL_OK;
}

/*
 * Replays to a fresh snapshot: caught up (*cursor at its revision), full,
 * yielding after WAL_REPLAY_PART_MS of a scan that met events it sent
 * nothing for (refused, or skipped by the sink), when the sink has a wake
 * to ask for the rest (a catch-up that sends everything is bounded by the
 * sink's room, and never silent), or over, why saying so: events it
 * needs were trimmed (OUT_OF_RANGE, naming the last revision it received
 * and the oldest retained), events past the oldest retained are missing
 * (DATA_LOSS, naming them: a data dir written by a reeld that committed
 * timers' changes before its WAL had started), or reading failed.
 */
static int replay(void *arg, uint64_t *cursor, reel_status_t *why) {
    wal_sub_t *s = arg;
    store_snapshot_t *snap = NULL;
    store_iter_t *it;
    unsigned char key[9];
    int full = 0;
    size_t read = 0, read_bytes = 0; /* since the clock's last read */
    int unsent = 0; /* this part read an event and sent nothing for it */
    int64_t start = reel_clock_mono_ns();
    uint64_t upto; /* the snapshot's revision, or the event after a gap */

    /* A test's long catch-up: each part takes a while. */
    if (REEL_FAULT("wal.replay_part_pause"))
        nanosleep(&(struct timespec){0, 200 * 1000000L}, NULL);
    if (store_snapshot_create(s->w->store, &snap, why) != REEL_OK) {
        reel_status_set(why, why->code, "WAL replay: %s",
                        reel_status_message(why));
        return FEED_END;
    }
    it = store_iter_create(s->w->store, s->w->cf, snap);
    if (it == NULL) {
        store_snapshot_release(s->w->store, snap);
        reel_status_set(why, REEL_RESOURCE_EXHAUSTED,
                        "WAL replay: out of memory");
        return FEED_END;
    }
    upto = store_snapshot_revision(snap);
    rev_key(*cursor + 1, key);
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
        if (s->sink.wake != NULL && (read == WAL_REPLAY_CHECK ||
                                     read_bytes >= WAL_REPLAY_CHECK_BYTES)) {
            if (unsent && (REEL_FAULT("wal.replay_part_end") ||
                           reel_clock_mono_ns() - start >=
                               (int64_t)WAL_REPLAY_PART_MS * 1000000)) {
                full = 4; /* the rest in the next pump */
                break;
            }
            read = read_bytes = 0;
        }
        read++;
        read_bytes += vlen;
        rev = reel_be64_get((const unsigned char *)k + 1);
        if (rev != *cursor + 1) {
            full = 2; /* revisions are gapless: the rest was trimmed */
            upto = rev - 1;
            break;
        }
        if (rec_split(v, vlen, &subj, &slen, &bytes, &blen) != 0) {
            /* Never skipped: the subscriber would miss it unawares. */
            reel_status_set(why, REEL_DATA_LOSS,
                            "WAL replay: the stored event of revision %llu "
                            "is malformed",
                            (unsigned long long)rev);
            full = 3;
            break;
        }
        if (!sub_matches(s, subj, slen)) {
            unsent = 1;
        } else {
            int r = s->sink.deliver(s->arg, bytes, blen, rev);

            if (r == WAL_SINK_SKIPPED)
                unsent = 1;
            else if (r != 0) {
                full = 1;
                break;
            }
        }
        *cursor = rev;
    }
    /* An iterator that stopped on an error is not the end of the WAL. */
    if (full != 3 && full != 4 && store_iter_status(it, why) != REEL_OK) {
        reel_status_set(why, why->code, "WAL replay: %s",
                        reel_status_message(why));
        full = 3;
    }
    /* Every revision has its event, in the same commit: a scan that ends
     * short of the snapshot's revision met a trimmed gap. */
    if (!full && *cursor < store_snapshot_revision(snap))
        full = 2;
    store_iter_destroy(it);
    store_snapshot_release(s->w->store, snap);
    if (full == 2) {
        uint64_t head, oldest;

        /* Trims take the oldest events first: one missing past the oldest
         * still retained was never stored. */
        if (wal_head(s->w, &head, &oldest, why) == REEL_OK && oldest != 0 &&
            *cursor + 1 >= oldest)
            reel_status_set(why, REEL_DATA_LOSS,
                            "the WAL has no event for revisions %llu to %llu "
                            "(committed without one, not trimmed): "
                            "from_revision %llu goes on after them",
                            (unsigned long long)*cursor + 1,
                            (unsigned long long)upto,
                            (unsigned long long)upto);
        else if (why->code == REEL_OK)
            reel_status_set(why, REEL_OUT_OF_RANGE,
                            "the subscription fell behind retention: the "
                            "last revision it received is %llu, the oldest "
                            "retained is %llu",
                            (unsigned long long)*cursor,
                            (unsigned long long)oldest);
    }
    return full == 0   ? FEED_OK
           : full == 1 ? FEED_FULL
           : full == 4 ? FEED_YIELD
                       : FEED_END;
}

static int live_deliver(void *arg, void *item) {
    wal_sub_t *s = arg;
    item_t *it = item;
    int r;

    if (!sub_matches(s, it->subj, it->slen))
        return FEED_OK; /* filtered out: the cursor moves past it */
    r = s->sink.deliver(s->arg, it->bytes, it->blen, it->revision);
    return r == 0 || r == WAL_SINK_SKIPPED ? FEED_OK : FEED_FULL;
}

static void sub_end(void *arg, const reel_status_t *st) {
    wal_sub_t *s = arg;

    /* s may be freed inside: nothing of it is read after. */
    s->sink.end(s->arg, st);
}

static void sub_wake(void *arg) {
    wal_sub_t *s = arg;

    if (s->sink.wake != NULL)
        s->sink.wake(s->arg);
}

static const feed_ops_t sub_ops = {
    .replay = replay,
    .deliver = live_deliver,
    .end = sub_end,
    .wake = sub_wake,
};

void wal_sub_pump(wal_sub_t *s) { feed_sub_pump(s->sub); }

int wal_sub_live(wal_sub_t *s) { return feed_sub_live(s->sub); }

uint64_t wal_sub_cursor(wal_sub_t *s) { return feed_sub_cursor(s->sub); }

int wal_sub_cursor_try(wal_sub_t *s, uint64_t *out) {
    return feed_sub_cursor_try(s->sub, out);
}

/* consumers_mu held: the consumer's holder, or NULL. */
static active_t **active_find_locked(wal_t *w, const char *name) {
    for (active_t **pp = &w->active; *pp != NULL; pp = &(*pp)->next)
        if (strcmp((*pp)->name, name) == 0)
            return pp;
    return NULL;
}

/* consumers_mu held: s ends with code and msg at its next pump, which its
 * owner is asked (sink.wake) to run soon. */
static void sub_kick_locked(wal_sub_t *s, reel_code_t code, const char *msg) {
    feed_sub_kick(s->sub, code, msg);
}

void wal_sub_destroy(wal_sub_t *s) {
    active_t **pp;

    if (s == NULL)
        return;
    /* Nothing more is delivered before the consumer goes to another. */
    feed_sub_cancel(s->sub);
    /* Release its consumer, unless another subscriber took it over. */
    pthread_mutex_lock(&s->w->consumers_mu);
    if (s->consumer != NULL &&
        (pp = active_find_locked(s->w, s->consumer)) != NULL &&
        (*pp)->sub == s) {
        active_t *a = *pp;
        *pp = a->next;
        free(a);
    }
    pthread_mutex_unlock(&s->w->consumers_mu);
    feed_sub_destroy(s->sub);
    sub_free(s);
}

/* ---- Durable consumers ---------------------------------------------------- */

enum { OP_SUBSCRIBE, OP_ACK, OP_DELETE };

typedef struct consumer_op {
    wal_t *w;
    const char *name, *pattern;
    uint64_t revision;
    int kind;
    wal_consumer_t *out;
    active_t *reserve; /* OP_SUBSCRIBE: linked into w->reserved once it
                          applied (under consumers_mu), unlinked by the
                          subscribe */
} consumer_op_t;

static size_t consumer_key(const char *name, char *buf, size_t cap) {
    return (size_t)snprintf(buf, cap, "c%s", name);
}

static reel_code_t consumer_decode(const char *name, const void *v,
                                   size_t len, wal_consumer_t *c,
                                   reel_status_t *st) {
    reel_rbuf_t r;
    int bad;

    memset(c, 0, sizeof(*c));
    reel_rbuf_init(&r, v, len);
    c->acked = reel_rbuf_u64(&r);
    c->created_at_ms = (int64_t)reel_rbuf_u64(&r);
    c->acked_at_ms = (int64_t)reel_rbuf_u64(&r);
    c->pattern = strdup(reel_rbuf_str(&r));
    /* Records written before invalidation existed end here. */
    if (reel_rbuf_ok(&r) == 0 && r.p < r.end) {
        c->invalidated_at_ms = (int64_t)reel_rbuf_u64(&r);
        c->invalidated_reason = strdup(reel_rbuf_str(&r));
        if (c->invalidated_reason == NULL) {
            wal_consumer_fini(c);
            return reel_status_set(st, REEL_RESOURCE_EXHAUSTED,
                                   "out of memory reading consumer \"%s\"",
                                   name);
        }
    }
    bad = reel_rbuf_ok(&r) != 0 || r.p != r.end;
    c->name = strdup(name);
    if (bad || c->pattern == NULL || c->name == NULL) {
        wal_consumer_fini(c);
        return bad ? reel_status_set(st, REEL_DATA_LOSS,
                                     "consumer \"%s\": stored record is "
                                     "corrupt",
                                     name)
                   : reel_status_set(st, REEL_RESOURCE_EXHAUSTED,
                                     "out of memory reading consumer \"%s\"",
                                     name);
    }
    return REEL_OK;
}

void wal_consumer_fini(wal_consumer_t *c) {
    if (c == NULL)
        return;
    free(c->name);
    free(c->pattern);
    free(c->invalidated_reason);
    memset(c, 0, sizeof(*c));
}

static reel_code_t consumer_put(wal_t *wal, store_txn_t *txn,
                                const wal_consumer_t *c, reel_status_t *st) {
    char key[CONSUMER_MAX + 2];
    size_t klen = consumer_key(c->name, key, sizeof(key));
    reel_wbuf_t w = {0};

    reel_wbuf_u64(&w, c->acked);
    reel_wbuf_u64(&w, (uint64_t)c->created_at_ms);
    reel_wbuf_u64(&w, (uint64_t)c->acked_at_ms);
    reel_wbuf_str(&w, c->pattern);
    if (c->invalidated_at_ms != 0) {
        reel_wbuf_u64(&w, (uint64_t)c->invalidated_at_ms);
        reel_wbuf_str(&w, c->invalidated_reason);
    }
    if (reel_wbuf_done(&w) != 0)
        return reel_status_set(st, REEL_RESOURCE_EXHAUSTED,
                               "out of memory writing consumer \"%s\"",
                               c->name);
    store_txn_put(txn, wal->cf, key, klen, w.p, w.len);
    reel_wbuf_fini(&w);
    return REEL_OK;
}

/* "2026-11-22T06:10:00.123Z" */
static const char *iso_time(int64_t ms, char *buf, size_t size) {
    time_t secs = (time_t)(ms / 1000);
    struct tm tm;
    size_t n;

    if (gmtime_r(&secs, &tm) == NULL ||
        (n = strftime(buf, size, "%Y-%m-%dT%H:%M:%S", &tm)) == 0)
        snprintf(buf, size, "%lld ms", (long long)ms);
    else
        snprintf(buf + n, size - n, ".%03dZ", (int)(ms % 1000));
    return buf;
}

/* What subscribing or acknowledging as an invalidated consumer answers. */
static reel_code_t invalidated_error(const wal_consumer_t *c, uint64_t oldest,
                                     reel_status_t *st) {
    char when[40];

    return reel_status_set(
        st, REEL_FAILED_PRECONDITION,
        "consumer \"%s\" was invalidated at %s (%s); it had acknowledged "
        "up to revision %llu, and the oldest retained revision is %llu. "
        "Delete it (DeleteConsumer, or reelctl events rm-consumer %s) and "
        "subscribe again to start over",
        c->name, iso_time(c->invalidated_at_ms, when, sizeof(when)),
        c->invalidated_reason ? c->invalidated_reason : "",
        (unsigned long long)c->acked, (unsigned long long)oldest, c->name);
}

static active_t **reserved_find_locked(wal_t *w, const active_t *r) {
    for (active_t **pp = &w->reserved; *pp != NULL; pp = &(*pp)->next)
        if (*pp == r)
            return pp;
    return NULL;
}

static int reserved_name_locked(wal_t *w, const char *name) {
    for (active_t *r = w->reserved; r != NULL; r = r->next)
        if (strcmp(r->name, name) == 0)
            return 1;
    return 0;
}

static reel_code_t apply_consumer_op(store_txn_t *txn, consumer_op_t *op,
                                     reel_status_t *st);

/*
 * Writer thread. A delete is refused while the consumer has a subscriber,
 * or a subscribe is between its apply and its registration: checked here,
 * in commit order with the subscribes' applies, so that no subscribe ends
 * up holding a consumer a delete took away (a check before the delete was
 * queued let one through).
 */
static reel_code_t apply_consumer(store_txn_t *txn, void *arg,
                                  reel_status_t *st) {
    consumer_op_t *op = arg;
    wal_t *w = op->w;
    reel_code_t rc;
    int busy = 0;

    if (op->kind == OP_DELETE) {
        pthread_mutex_lock(&w->consumers_mu);
        busy = active_find_locked(w, op->name) != NULL ||
               reserved_name_locked(w, op->name);
        pthread_mutex_unlock(&w->consumers_mu);
        if (busy)
            return reel_status_set(st, REEL_FAILED_PRECONDITION,
                                   "consumer \"%s\" has an active "
                                   "subscriber; stop it first (one that "
                                   "hangs: subscribe as it with takeover, "
                                   "then delete)",
                                   op->name);
    }
    rc = apply_consumer_op(txn, op, st);
    if (rc == REEL_OK && op->kind == OP_SUBSCRIBE && op->reserve != NULL) {
        pthread_mutex_lock(&w->consumers_mu);
        if (reserved_find_locked(w, op->reserve) == NULL) {
            op->reserve->next = w->reserved;
            w->reserved = op->reserve;
        }
        pthread_mutex_unlock(&w->consumers_mu);
    }
    return rc;
}

static reel_code_t apply_consumer_op(store_txn_t *txn, consumer_op_t *op,
                                     reel_status_t *st) {
    wal_t *w = op->w;
    char key[CONSUMER_MAX + 2];
    size_t klen = consumer_key(op->name, key, sizeof(key));
    char *val = NULL;
    size_t vlen = 0;
    wal_consumer_t c;
    uint64_t head = store_txn_next_revision(txn) - 1, count = 0;
    reel_code_t rc;

    rc = store_txn_get(txn, w->cf, key, klen, &val, &vlen, st);
    if (rc != REEL_OK && rc != REEL_NOT_FOUND)
        return rc;
    if (rc == REEL_NOT_FOUND) {
        reel_status_fini(st);
        if (op->kind != OP_SUBSCRIBE)
            return reel_status_set(st, REEL_NOT_FOUND,
                                   "consumer \"%s\" not found", op->name);
        if ((rc = consumer_count(w, txn, &count, st)) != REEL_OK)
            return rc;
        if (count >= w->lim.max_consumers)
            return reel_status_set(st, REEL_RESOURCE_EXHAUSTED,
                                   "consumer \"%s\": there are %llu durable "
                                   "consumers, at most %u "
                                   "(--wal-max-consumers); delete one no "
                                   "longer used first",
                                   op->name, (unsigned long long)count,
                                   w->lim.max_consumers);
        if ((rc = tenant_room(w, txn, op->name, st)) != REEL_OK)
            return rc;
        /* Checked here, on the writer, so no trim can come between the
         * check and the cursor it lets in. */
        if (op->revision > head)
            return reel_status_set(st, REEL_INVALID_ARGUMENT,
                                   "from_revision: %llu is past the head "
                                   "revision %llu",
                                   (unsigned long long)op->revision,
                                   (unsigned long long)head);
        if (op->revision == 0)
            op->revision = w->trimmed_to;
        else if (op->revision < w->trimmed_to)
            return reel_status_not_retained(st, op->revision, "",
                                            w->trimmed_to, head);
        memset(&c, 0, sizeof(c));
        c.name = (char *)op->name;
        c.pattern = (char *)(op->pattern ? op->pattern : "");
        c.acked = op->revision;
        c.created_at_ms = store_txn_now_ms(txn);
        if ((rc = consumer_put(w, txn, &c, st)) != REEL_OK)
            return rc;
        consumer_count_put(w, txn, count + 1);
        op->out->acked = c.acked;
        op->out->created_at_ms = c.created_at_ms;
        return REEL_OK;
    }
    rc = consumer_decode(op->name, val, vlen, &c, st);
    free(val);
    if (rc != REEL_OK)
        return rc;
    if (c.invalidated_at_ms != 0 && op->kind != OP_DELETE) {
        rc = invalidated_error(&c, w->trimmed_to + 1, st);
        wal_consumer_fini(&c);
        return rc;
    }
    if (op->kind == OP_ACK) {
        if (op->revision > head)
            rc = reel_status_set(st, REEL_INVALID_ARGUMENT,
                                 "revision: %llu is past the head revision "
                                 "%llu",
                                 (unsigned long long)op->revision,
                                 (unsigned long long)head);
        else if (op->revision > c.acked) { /* never back */
            c.acked = op->revision;
            c.acked_at_ms = store_txn_now_ms(txn);
            rc = consumer_put(w, txn, &c, st);
        }
    } else if (op->kind == OP_DELETE) {
        if ((rc = consumer_count(w, txn, &count, st)) == REEL_OK) {
            store_txn_delete(txn, w->cf, key, klen);
            consumer_count_put(w, txn, count > 0 ? count - 1 : 0);
        }
    } else if (op->pattern != NULL && strcmp(op->pattern, c.pattern) != 0) {
        char *p = strdup(op->pattern);

        if (p == NULL) {
            rc = reel_status_set(st, REEL_RESOURCE_EXHAUSTED,
                                 "out of memory");
        } else {
            free(c.pattern);
            c.pattern = p;
            rc = consumer_put(w, txn, &c, st);
        }
    }
    if (rc != REEL_OK) {
        wal_consumer_fini(&c);
        return rc;
    }
    wal_consumer_fini(op->out);
    *op->out = c;
    return REEL_OK;
}

static reel_code_t check_consumer_name(const char *name, reel_status_t *st) {
    return reel_check_charset("consumer", name, strlen(name), CONSUMER_MAX,
                              CONSUMER_CHARS, st);
}

static reel_code_t busy_error(const char *name, reel_status_t *st) {
    return reel_status_set(st, REEL_FAILED_PRECONDITION,
                           "consumer \"%s\" already has an active "
                           "subscriber; subscribe with takeover to end it "
                           "and take its place",
                           name);
}

reel_code_t wal_consumer_subscribe(wal_t *w, const char *name,
                                   uint64_t from_revision,
                                   uint64_t resume_after,
                                   const char *pattern, int takeover,
                                   const wal_sink_t *sink, void *arg,
                                   wal_sub_t **out, reel_status_t *st) {
    wal_consumer_t c = {0};
    active_t reserve = {0};
    consumer_op_t op = {w,  name, pattern, from_revision, OP_SUBSCRIBE,
                        &c, &reserve};
    wal_sub_t *s = NULL;
    active_t *a = NULL, **pp;
    reel_code_t rc;
    int busy;

    *out = NULL;
    if ((rc = check_consumer_name(name, st)) != REEL_OK)
        return rc;
    if (resume_after > store_revision(w->store))
        return reel_status_set(st, REEL_INVALID_ARGUMENT,
                               "resume_after: %llu is past the head revision "
                               "%llu",
                               (unsigned long long)resume_after,
                               (unsigned long long)store_revision(w->store));
    /* The pattern is checked before the consumer is created or changed. */
    if ((rc = sub_new(w, pattern, sink, arg, &s, st)) != REEL_OK)
        return rc;
    if ((s->consumer = strdup(name)) == NULL ||
        (a = calloc(1, sizeof(*a))) == NULL) {
        rc = reel_status_set(st, REEL_RESOURCE_EXHAUSTED, "out of memory");
        goto out;
    }
    snprintf(a->name, sizeof(a->name), "%s", name);
    snprintf(reserve.name, sizeof(reserve.name), "%s", name);
    a->sub = s;
    pthread_mutex_lock(&w->consumers_mu);
    busy = !takeover && active_find_locked(w, name) != NULL;
    pthread_mutex_unlock(&w->consumers_mu);
    if (busy) {
        rc = busy_error(name, st);
        goto out;
    }
    rc = store_exec(w->store, apply_consumer, &op, NULL, st);
    /* A test's slow subscriber: a delete meanwhile must wait for it. */
    if (REEL_FAULT("wal.subscribe_pause"))
        nanosleep(&(struct timespec){0, 200 * 1000000L}, NULL);
    pthread_mutex_lock(&w->consumers_mu);
    /* From here it is active, or not at all: no gap for a delete. */
    if ((pp = reserved_find_locked(w, &reserve)) != NULL)
        *pp = reserve.next;
    if (rc != REEL_OK) {
        pthread_mutex_unlock(&w->consumers_mu);
        goto out;
    }
    pp = active_find_locked(w, name);
    if (pp != NULL && !takeover) { /* another one came meanwhile */
        pthread_mutex_unlock(&w->consumers_mu);
        rc = busy_error(name, st);
        goto out;
    }
    if ((rc = sub_register(s, c.acked > resume_after ? c.acked : resume_after,
                           st)) != REEL_OK) {
        pthread_mutex_unlock(&w->consumers_mu);
        goto out;
    }
    *out = s; /* before anything can wake it */
    if (pp != NULL) {
        char msg[CONSUMER_MAX + 96];

        snprintf(msg, sizeof(msg),
                 "consumer \"%s\" was taken over by another subscriber",
                 name);
        sub_kick_locked((*pp)->sub, REEL_ABORTED, msg);
        (*pp)->sub = s;
    } else {
        a->next = w->active;
        w->active = a;
        a = NULL;
    }
    s = NULL;
    pthread_mutex_unlock(&w->consumers_mu);
out:
    wal_consumer_fini(&c);
    free(a);
    sub_free(s);
    return rc;
}

static int is_active(wal_t *w, const char *name) {
    int r;

    pthread_mutex_lock(&w->consumers_mu);
    r = active_find_locked(w, name) != NULL;
    pthread_mutex_unlock(&w->consumers_mu);
    return r;
}

static reel_code_t count_pending(wal_t *w, store_iter_t *it,
                                 wal_consumer_t *c, uint64_t head,
                                 uint64_t *budget, reel_status_t *st);

reel_code_t wal_ack(wal_t *w, const char *name, uint64_t revision,
                    wal_consumer_t *out, reel_status_t *st) {
    consumer_op_t op = {w, name, NULL, revision, OP_ACK, out, NULL};
    uint64_t head;
    store_iter_t *it;
    reel_code_t rc;

    memset(out, 0, sizeof(*out));
    if ((rc = check_consumer_name(name, st)) != REEL_OK)
        return rc;
    if ((rc = store_exec(w->store, apply_consumer, &op, NULL, st)) !=
        REEL_OK)
        return rc;
    out->active = is_active(w, name);
    head = store_revision(w->store);
    if ((it = store_iter_create(w->store, w->cf, NULL)) == NULL)
        rc = reel_status_set(st, REEL_RESOURCE_EXHAUSTED, "out of memory");
    else {
        uint64_t budget = WAL_PENDING_SCAN_MAX;

        rc = count_pending(w, it, out, head, &budget, st);
    }
    store_iter_destroy(it);
    /* The ack stands (acks are idempotent: retrying is safe); only the
     * answer's count could not be made. */
    if (rc != REEL_OK)
        reel_status_set(st, rc,
                        "consumer \"%s\" acknowledged up to revision %llu, "
                        "but counting its pending events failed: %s",
                        name, (unsigned long long)out->acked,
                        reel_status_message(st));
    return rc;
}

reel_code_t wal_consumer_delete(wal_t *w, const char *name,
                                reel_status_t *st) {
    wal_consumer_t c = {0};
    consumer_op_t op = {w, name, NULL, 0, OP_DELETE, &c, NULL};
    reel_code_t rc;

    if ((rc = check_consumer_name(name, st)) != REEL_OK)
        return rc;
    /* Whether it has a subscriber is asked on the writer (apply_consumer). */
    rc = store_exec(w->store, apply_consumer, &op, NULL, st);
    wal_consumer_fini(&c);
    if (rc == REEL_OK) { /* what it held goes now, not at the next tick */
        pthread_mutex_lock(&w->trim_mu);
        w->trim_soon = 1;
        pthread_cond_broadcast(&w->trim_cv);
        pthread_mutex_unlock(&w->trim_mu);
    }
    return rc;
}

static void consumers_free(wal_consumer_t *cs, size_t n) {
    for (size_t i = 0; i < n; i++)
        wal_consumer_fini(&cs[i]);
    free(cs);
}

/*
 * The consumer records through it, by name, after start_after (NULL or "":
 * from the first), at most limit (0: no count limit) and no more than fit
 * in page (NULL: no byte bound); *more (may be NULL) says whether more
 * follow. Never a partial list: an error fails the whole read.
 */
static reel_code_t consumers_read(store_iter_t *it, const char *start_after,
                                  size_t limit, const reel_page_t *page,
                                  wal_consumer_t **out, size_t *n, int *more,
                                  reel_status_t *st) {
    const char *after = start_after ? start_after : "";
    size_t alen = strlen(after), cnt = 0, cap = 0, used = 0;
    char seek[CONSUMER_MAX + 2] = "c";
    wal_consumer_t *arr = NULL;
    reel_code_t rc = REEL_OK;

    *out = NULL;
    *n = 0;
    if (more != NULL)
        *more = 0;
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

        if (klen < 1 || k[0] != 'c')
            break;
        if (klen < 2 || klen - 1 > CONSUMER_MAX) {
            rc = reel_status_set(st, REEL_DATA_LOSS,
                                 "a stored consumer's key is malformed (%zu "
                                 "bytes)",
                                 klen);
            break;
        }
        memcpy(name, k + 1, klen - 1);
        name[klen - 1] = '\0';
        if (*after && strcmp(name, after) <= 0)
            continue;
        if (cnt == cap) {
            size_t nc = cap ? cap * 2 : 8;
            wal_consumer_t *na = realloc(arr, nc * sizeof(*na));
            if (na == NULL) {
                rc = reel_status_set(st, REEL_RESOURCE_EXHAUSTED,
                                     "out of memory listing consumers");
                break;
            }
            arr = na;
            cap = nc;
        }
        if (REEL_FAULT("wal.consumers")) { /* e.g. a strdup that failed */
            rc = reel_status_set(st, REEL_RESOURCE_EXHAUSTED,
                                 "out of memory reading consumer \"%s\"",
                                 name);
            break;
        }
        if ((rc = consumer_decode(name, v, vlen, &arr[cnt], st)) != REEL_OK)
            break;
        if ((limit > 0 && cnt == limit) ||
            !reel_page_take(page, cnt, &used, &arr[cnt])) {
            wal_consumer_fini(&arr[cnt]);
            if (more != NULL)
                *more = 1;
            break;
        }
        cnt++;
    }
    if (rc == REEL_OK)
        rc = store_iter_status(it, st);
    if (rc != REEL_OK) {
        consumers_free(arr, cnt);
        if (more != NULL)
            *more = 0;
        return rc;
    }
    *out = arr;
    *n = cnt;
    return REEL_OK;
}

/* c's pending events up to head: all of them when unfiltered (revisions
 * are gapless and a valid consumer's events are retained), else those
 * matching among the first WAL_PENDING_SCAN_MAX revisions after acked,
 * and among no more than *budget (lowered by what was read). A tenant's
 * consumer (lim.consumer_scope) is filtered by its tenant's mark: it is
 * offered its tenant's events alone (wal_sink_t.scope). */
static reel_code_t count_pending(wal_t *w, store_iter_t *it,
                                 wal_consumer_t *c, uint64_t head,
                                 uint64_t *budget, reel_status_t *st) {
    size_t plen = strlen(c->pattern);
    size_t mlen = w->lim.consumer_scope ? w->lim.consumer_scope(c->name) : 0;
    unsigned char key[9];
    uint64_t scanned = 0;

    c->pending = 0;
    c->pending_exact = 1;
    if (c->invalidated_at_ms != 0 || c->acked >= head)
        return REEL_OK;
    if (plen == 0 && mlen == 0) {
        c->pending = head - c->acked;
        return REEL_OK;
    }
    rev_key(c->acked + 1, key);
    for (store_iter_seek(it, key, sizeof(key)); store_iter_valid(it);
         store_iter_next(it)) {
        size_t klen, vlen, slen, blen;
        const char *k = store_iter_key(it, &klen);
        const unsigned char *v =
            (const unsigned char *)store_iter_value(it, &vlen);
        const char *subj;
        const uint8_t *bytes;
        uint64_t rev;

        if (klen != 9 || k[0] != 'e' ||
            (rev = reel_be64_get((const unsigned char *)k + 1)) > head)
            break;
        if (scanned == WAL_PENDING_SCAN_MAX || *budget == 0) {
            c->pending_exact = 0;
            break;
        }
        scanned++;
        (*budget)--;
        if (rec_split(v, vlen, &subj, &slen, &bytes, &blen) != 0)
            return reel_status_set(st, REEL_DATA_LOSS,
                                   "the stored event of revision %llu is "
                                   "malformed",
                                   (unsigned long long)rev);
        if ((plen == 0 || reel_pattern_match(c->pattern, plen, subj, slen)) &&
            (mlen == 0 || in_scope(subj, slen, c->name, mlen)))
            c->pending++;
    }
    return store_iter_status(it, st);
}

reel_code_t wal_consumers(wal_t *w, const char *start_after, size_t limit,
                          const reel_page_t *page, wal_consumer_t **out,
                          size_t *n, int *more, reel_status_t *st) {
    uint64_t head = store_revision(w->store);
    store_iter_t *it = store_iter_create(w->store, w->cf, NULL);
    wal_consumer_t *cs = NULL;
    size_t cnt = 0;
    uint64_t budget = WAL_PENDING_SCAN_PAGE;
    reel_code_t rc;

    *out = NULL;
    *n = 0;
    if (more != NULL)
        *more = 0;
    if (it == NULL)
        return reel_status_set(st, REEL_RESOURCE_EXHAUSTED, "out of memory");
    rc = consumers_read(it, start_after, limit, page, &cs, &cnt, more, st);
    for (size_t i = 0; i < cnt && rc == REEL_OK; i++)
        rc = count_pending(w, it, &cs[i], head, &budget, st);
    store_iter_destroy(it);
    if (rc != REEL_OK) {
        consumers_free(cs, cnt);
        return reel_status_set(st, rc, "listing consumers: %s",
                               reel_status_message(st));
    }
    pthread_mutex_lock(&w->consumers_mu);
    for (size_t i = 0; i < cnt; i++) {
        cs[i].active = active_find_locked(w, cs[i].name) != NULL;
        for (size_t j = 0; j < w->n_holding; j++)
            if (strcmp(w->holding[j].name, cs[i].name) == 0)
                cs[i].holding_bytes = w->holding[j].bytes;
    }
    pthread_mutex_unlock(&w->consumers_mu);
    *out = cs;
    *n = cnt;
    return REEL_OK;
}

reel_code_t wal_consumer_cursors(wal_t *w, wal_consumer_t **out, size_t *n,
                                 reel_status_t *st) {
    store_iter_t *it = store_iter_create(w->store, w->cf, NULL);
    reel_code_t rc;

    *out = NULL;
    *n = 0;
    if (it == NULL)
        return reel_status_set(st, REEL_RESOURCE_EXHAUSTED, "out of memory");
    rc = consumers_read(it, NULL, 0, NULL, out, n, NULL, st);
    store_iter_destroy(it);
    if (rc != REEL_OK)
        return reel_status_set(st, rc, "listing consumers: %s",
                               reel_status_message(st));
    return REEL_OK;
}

size_t wal_subscribers(wal_t *w) { return feed_hub_subs(w->hub); }

uint64_t wal_bytes(wal_t *w) { return atomic_load(&w->bytes); }

/* ---- Retention ------------------------------------------------------------ */

/* A consumer the plan invalidates, if its cursor has not moved since. */
typedef struct doomed {
    const wal_consumer_t *c; /* as the plan read it */
    char *reason;
    int64_t at_ms; /* set once apply_trim invalidated it */
} doomed_t;

typedef struct trim_plan {
    uint64_t upto; /* trim the events <= upto (0: none) */
    wal_consumer_t *cs;
    size_t n;
    doomed_t *doomed;
    size_t n_doomed;
    holding_t *holding;
    size_t n_holding;
} trim_plan_t;

static void trim_plan_fini(trim_plan_t *p) {
    consumers_free(p->cs, p->n);
    for (size_t i = 0; i < p->n_doomed; i++)
        free(p->doomed[i].reason);
    free(p->doomed);
    free(p->holding);
    memset(p, 0, sizeof(*p));
}

static int by_acked(const void *a, const void *b) {
    const wal_consumer_t *x = *(wal_consumer_t *const *)a;
    const wal_consumer_t *y = *(wal_consumer_t *const *)b;

    return x->acked < y->acked ? -1 : x->acked > y->acked;
}

static reel_code_t doom(trim_plan_t *p, const wal_consumer_t *c,
                        reel_status_t *st, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static reel_code_t doom(trim_plan_t *p, const wal_consumer_t *c,
                        reel_status_t *st, const char *fmt, ...) {
    doomed_t *d = &p->doomed[p->n_doomed];
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vasprintf(&d->reason, fmt, ap);
    va_end(ap);
    if (n < 0)
        return reel_status_set(st, REEL_RESOURCE_EXHAUSTED,
                               "out of memory invalidating consumer \"%s\"",
                               c->name);
    d->c = c;
    p->n_doomed++;
    return REEL_OK;
}

/*
 * What retention trims now: walks from the oldest event while the limits
 * are exceeded, and stops at the first event a valid consumer has not
 * acknowledged unless that consumer's unacknowledged events take more
 * than the cap (it is then doomed). Any read error: no plan, no trim.
 */
static reel_code_t trim_plan_make(wal_t *w, trim_plan_t *p,
                                  reel_status_t *st) {
    int64_t too_old = reel_clock_now_ms() - w->lim.retention_age_ms;
    uint64_t rest = atomic_load(&w->bytes), cap = w->lim.consumer_max_lag_bytes;
    uint64_t head, oldest;
    wal_consumer_t **order = NULL;
    store_iter_t *it = NULL;
    unsigned char key[9];
    size_t nv = 0, ci = 0;
    reel_code_t rc;

    memset(p, 0, sizeof(*p));
    if ((rc = wal_head(w, &head, &oldest, st)) != REEL_OK)
        return rc;
    if ((it = store_iter_create(w->store, w->cf, NULL)) == NULL)
        return reel_status_set(st, REEL_RESOURCE_EXHAUSTED, "out of memory");
    if ((rc = consumers_read(it, NULL, 0, NULL, &p->cs, &p->n, NULL, st)) !=
        REEL_OK) {
        reel_status_set(st, rc, "reading the consumers: %s",
                        reel_status_message(st));
        goto out;
    }
    order = calloc(p->n + 1, sizeof(*order));
    p->doomed = calloc(p->n + 1, sizeof(*p->doomed));
    p->holding = calloc(p->n + 1, sizeof(*p->holding));
    if (order == NULL || p->doomed == NULL || p->holding == NULL) {
        rc = reel_status_set(st, REEL_RESOURCE_EXHAUSTED, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < p->n; i++)
        if (p->cs[i].invalidated_at_ms == 0)
            order[nv++] = &p->cs[i];
    qsort(order, nv, sizeof(*order), by_acked);
    if (oldest == 0)
        goto out;
    rev_key(oldest, key);
    for (store_iter_seek(it, key, sizeof(key)); store_iter_valid(it);
         store_iter_next(it)) {
        size_t klen, vlen;
        const char *k = store_iter_key(it, &klen);
        const unsigned char *v =
            (const unsigned char *)store_iter_value(it, &vlen);
        uint64_t rev;
        int held = 0;

        if (klen != 9 || k[0] != 'e')
            break;
        rev = reel_be64_get((const unsigned char *)k + 1);
        if (vlen < REC_HDR) {
            rc = reel_status_set(st, REEL_DATA_LOSS,
                                 "the stored event of revision %llu is "
                                 "malformed",
                                 (unsigned long long)rev);
            break;
        }
        /* Events only get newer and the rest only smaller: the first
         * within both limits ends the walk. */
        if (rest <= w->lim.retention_bytes &&
            (int64_t)reel_be64_get(v) >= too_old)
            break;
        /* The consumers that have not acknowledged rev, furthest behind
         * first: `rest` is exactly what the first of them has pending. */
        while (ci < nv && order[ci]->acked < rev && rc == REEL_OK) {
            const wal_consumer_t *c = order[ci];

            if (c->acked + 1 == rev && rest <= cap) {
                held = 1;
                break;
            }
            if (c->acked + 1 < rev)
                rc = doom(p, c, st,
                          "events after its acknowledged revision %llu "
                          "were trimmed before it acknowledged them",
                          (unsigned long long)c->acked);
            else
                rc = doom(p, c, st,
                          "retention had to trim revision %llu, which it "
                          "had not acknowledged, and its unacknowledged "
                          "events took %llu bytes, more than the %llu a "
                          "consumer may keep (--wal-consumer-max-lag-bytes)",
                          (unsigned long long)rev, (unsigned long long)rest,
                          (unsigned long long)cap);
            ci++;
        }
        if (rc != REEL_OK)
            break;
        if (held) {
            for (size_t j = ci; j < nv && order[j]->acked == rev - 1; j++) {
                holding_t *h = &p->holding[p->n_holding++];

                snprintf(h->name, sizeof(h->name), "%s", order[j]->name);
                h->bytes = rest;
            }
            break;
        }
        p->upto = rev;
        rest -= vlen < rest ? vlen : rest;
    }
    if (rc == REEL_OK && (rc = store_iter_status(it, st)) != REEL_OK)
        reel_status_set(st, rc, "reading the oldest events: %s",
                        reel_status_message(st));
out:
    free(order);
    store_iter_destroy(it);
    if (rc != REEL_OK)
        trim_plan_fini(p);
    return rc;
}

typedef struct trim_op {
    wal_t *w;
    trim_plan_t *plan;
    int first;      /* the first chunk also invalidates the doomed */
    size_t done;    /* events this chunk deleted (at most TRIM_CHUNK) */
    uint64_t floor; /* where it ended: the WAL's floor once it commits */
} trim_op_t;

static doomed_t *doomed_find(trim_plan_t *p, const char *name) {
    for (size_t i = 0; i < p->n_doomed; i++)
        if (strcmp(p->doomed[i].c->name, name) == 0)
            return &p->doomed[i];
    return NULL;
}

/*
 * Invalidates the doomed and deletes a chunk of events up to the plan's
 * upto, never past a valid consumer's cursor as this group sees the
 * consumers (one created or advanced since the plan is safe). Deletes
 * blind: nothing in a group reads old events back, and an indexed delete
 * costs the writer several times as much. An error rolls all of it back.
 */
static reel_code_t apply_trim(store_txn_t *txn, void *arg, reel_status_t *st) {
    trim_op_t *op = arg;
    wal_t *w = op->w;
    store_iter_t *it = store_txn_iter(txn, w->cf);
    wal_consumer_t *cs = NULL;
    size_t n = 0;
    uint64_t upto = op->plan->upto, freed = 0, bytes, last = 0;
    unsigned char key[9];
    reel_code_t rc;

    op->done = 0;
    if (it == NULL)
        return reel_status_set(st, REEL_RESOURCE_EXHAUSTED, "out of memory");
    if ((rc = consumers_read(it, NULL, 0, NULL, &cs, &n, NULL, st)) !=
        REEL_OK) {
        reel_status_set(st, rc, "reading the consumers: %s",
                        reel_status_message(st));
        goto out;
    }
    for (size_t i = 0; i < n && rc == REEL_OK; i++) {
        doomed_t *d = op->first ? doomed_find(op->plan, cs[i].name) : NULL;

        if (cs[i].invalidated_at_ms != 0)
            continue;
        if (d != NULL && d->c->acked == cs[i].acked) {
            /* at_ms counts only once this request commits: wal_trim
             * reports nothing of a chunk that failed. */
            d->at_ms = cs[i].invalidated_at_ms = store_txn_now_ms(txn);
            if ((cs[i].invalidated_reason = strdup(d->reason)) == NULL)
                rc = reel_status_set(st, REEL_RESOURCE_EXHAUSTED,
                                     "out of memory");
            else
                rc = consumer_put(w, txn, &cs[i], st);
            continue;
        }
        if (cs[i].acked < upto)
            upto = cs[i].acked;
    }
    if (rc != REEL_OK)
        goto out;
    rev_key(atomic_load(&w->floor), key);
    for (store_iter_seek(it, key, sizeof(key));
         store_iter_valid(it) && op->done < TRIM_CHUNK;
         store_iter_next(it)) {
        size_t klen, vlen;
        const char *k = store_iter_key(it, &klen);
        uint64_t rev;

        if (klen != 9 || k[0] != 'e' ||
            (rev = reel_be64_get((const unsigned char *)k + 1)) > upto)
            break;
        store_iter_value(it, &vlen);
        store_txn_delete_blind(txn, w->cf, k, klen);
        freed += vlen;
        last = rev;
        op->done++;
    }
    if ((rc = store_iter_status(it, st)) != REEL_OK) {
        reel_status_set(st, rc, "reading the events to trim: %s",
                        reel_status_message(st));
        goto out;
    }
    bytes = atomic_load(&w->bytes);
    if (op->done > 0) {
        put_bytes(w, txn, bytes > freed ? bytes - freed : 0);
        op->floor = op->done == TRIM_CHUNK ? last + 1 : upto + 1;
        if (last > w->trimmed_to)
            w->trimmed_to = last;
    }
out:
    consumers_free(cs, n);
    store_iter_destroy(it);
    return rc;
}

/* After the first chunk committed: says so, and ends their subscribers. */
static void report_invalidated(wal_t *w, trim_plan_t *p) {
    for (size_t i = 0; i < p->n_doomed; i++) {
        doomed_t *d = &p->doomed[i];
        wal_consumer_t c = *d->c;
        reel_status_t why = REEL_STATUS_INIT;
        active_t **pp;

        if (d->at_ms == 0)
            continue; /* it moved on meanwhile */
        c.invalidated_at_ms = d->at_ms;
        c.invalidated_reason = d->reason;
        REEL_WARN("wal", "consumer \"%s\" (acknowledged up to revision %llu) "
                         "invalidated: %s",
                  c.name, (unsigned long long)c.acked, d->reason);
        invalidated_error(&c, p->upto + 1, &why);
        pthread_mutex_lock(&w->consumers_mu);
        if ((pp = active_find_locked(w, c.name)) != NULL)
            sub_kick_locked((*pp)->sub, why.code, reel_status_message(&why));
        pthread_mutex_unlock(&w->consumers_mu);
        reel_status_fini(&why);
    }
}

reel_code_t wal_trim(wal_t *w, reel_status_t *st) {
    trim_plan_t plan;
    trim_op_t op = {w, &plan, 1, 0, 0};
    reel_code_t rc;

    pthread_mutex_lock(&w->trim_run_mu);
    if ((rc = trim_plan_make(w, &plan, st)) != REEL_OK)
        goto out;
    /* Chunks, each its own commit: writers interleave between them. The
     * floor moves only once a chunk committed: a group that fails leaves
     * its events in place. */
    while (op.first ? plan.upto > 0 || plan.n_doomed > 0
                    : op.done == TRIM_CHUNK) {
        if ((rc = store_exec(w->store, apply_trim, &op, NULL, st)) !=
            REEL_OK)
            break;
        if (op.done > 0)
            atomic_store(&w->floor, op.floor);
        if (op.first)
            report_invalidated(w, &plan);
        op.first = 0;
    }
    /* What ListConsumers shows as holding: the verdict of this walk. */
    pthread_mutex_lock(&w->consumers_mu);
    free(w->holding);
    w->holding = plan.holding;
    w->n_holding = plan.n_holding;
    plan.holding = NULL;
    pthread_mutex_unlock(&w->consumers_mu);
    trim_plan_fini(&plan);
out:
    pthread_mutex_unlock(&w->trim_run_mu);
    return rc;
}

static void *trimmer_main(void *arg) {
    wal_t *w = arg;
    reel_status_t st = REEL_STATUS_INIT;
    char *failing = NULL; /* the failure last logged, until one succeeds */
    char then[96];

    snprintf(then, sizeof(then),
             "its events stay in place and the trim is retried every %lld ms",
             (long long)w->lim.trim_interval_ms);
    pthread_mutex_lock(&w->trim_mu);
    while (!w->stopping) {
        struct timespec ts = reel_clock_mono_after(w->lim.trim_interval_ms);

        while (!w->stopping && !w->trim_soon &&
               pthread_cond_timedwait(&w->trim_cv, &w->trim_mu, &ts) !=
                   ETIMEDOUT) {
        }
        if (w->stopping)
            break;
        w->trim_soon = 0;
        pthread_mutex_unlock(&w->trim_mu);
        reel_log_retried(&failing, "wal", "trimming the WAL", then,
                         wal_trim(w, &st) != REEL_OK ? reel_status_message(&st)
                                                     : NULL);
        reel_status_fini(&st);
        pthread_mutex_lock(&w->trim_mu);
    }
    pthread_mutex_unlock(&w->trim_mu);
    free(failing);
    return NULL;
}

/* ---- The record decoders, for the fuzz target (wal_int.h) --------------- */

int wal_record_split(const void *rec, size_t len, const char **subject,
                     size_t *subject_len, const uint8_t **event,
                     size_t *event_len) {
    return rec_split(rec, len, subject, subject_len, event, event_len);
}

reel_code_t wal_consumer_record_decode(const char *name, const void *rec,
                                       size_t len, wal_consumer_t *c,
                                       reel_status_t *st) {
    return consumer_decode(name, rec, len, c, st);
}
