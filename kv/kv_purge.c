/*
 * kv/kv_purge.c: a deleted key's history, purged once it is old enough.
 *
 * A delete writes a tombstone and keeps the key's history: up to
 * history_keep versions, the last value among them. Without a purge a
 * workload that writes keys and deletes them would keep every value it
 * ever wrote, under keys nobody can read. So every delete also writes
 * 'd' ts_ms(8) ns 0 key -> version(8) in "kv_history", in its commit, and
 * a thread of the module's own looks, every purge interval, for the
 * entries older than deleted_history_ms. For each, in one commit per batch:
 *   - if the key is still the tombstone of that version, every retained
 *     version of it ('v' entries and their 'r' events, the delete's own
 *     among them) is deleted, and its record's `trimmed` becomes the
 *     highest revision deleted, as a trim leaves it: a watch or a
 *     ValueHistory that needs them ends with OUT_OF_RANGE, never skips;
 *   - if it is not (set again, or deleted again later, which wrote its own
 *     entry), nothing of the key is touched;
 *   - the entry itself is deleted.
 * The tombstone record stays, so a later set goes on counting from its
 * version: a version is never reused. A purge is not a change: it has no
 * revision and no WAL event (the WAL keeps its own copy of every event
 * under its own retention).
 *
 * A purge that fails (a corrupt record, a failed commit) is logged once per
 * distinct failure and retried at the next interval; it never skips the
 * entry it could not purge.
 *
 * Data dirs of formats 1 to 3 have tombstones without entries:
 * kv_upgrade() writes them, with the tombstone's own time. Dirs of formats
 * 1 to 4 keep their tombstones among the live keys: it moves them apart
 * (KV_TOMB, kv_int.h).
 */
#include "kv/kv_int.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/clock.h"
#include "base/codec.h"
#include "base/log.h"

/* Entries purged in one commit, at most. */
#define PURGE_BATCH 128

size_t kv_deleted_key(int64_t ts_ms, const char *ns, size_t ns_len,
                      const char *key, size_t key_len, char **buf) {
    size_t n = 1 + 8 + ns_len + 1 + key_len;
    char *b = malloc(n);

    *buf = b;
    if (b == NULL)
        return 0;
    b[0] = KV_H_DELETED;
    reel_be64_put((unsigned char *)b + 1, (uint64_t)ts_ms);
    memcpy(b + 9, ns, ns_len);
    b[9 + ns_len] = '\0';
    memcpy(b + 10 + ns_len, key, key_len);
    return n;
}

void kv_raise_compacted(kv_t *kv, store_txn_t *txn, uint64_t rev) {
    uint64_t cur = atomic_load(&kv->compacted);
    unsigned char buf[8];

    /* Raised before the commit: if the request or its group fails, the
     * value in memory is merely conservative (a resume is refused that
     * could have worked). */
    if (rev > cur)
        atomic_store(&kv->compacted, cur = rev);
    /* Written at every trim, not only when it rises: a raise whose
     * request was rolled back left memory above what is stored, and a
     * trim under it must still reach the disk, or a restart would read
     * "mcompacted" below a revision whose record is gone. The last write
     * a commit keeps is at least every trim it holds (cur only grows). */
    reel_be64_put(buf, cur);
    store_txn_put(txn, kv->cf_history, KV_H_COMPACTED, strlen(KV_H_COMPACTED),
                  buf, 8);
}

/* One 'd' entry, as the purger read it. */
typedef struct purge_item {
    char *dkey; /* the entry's key */
    size_t dkey_len;
    uint64_t version; /* of the tombstone it was written for */
} purge_item_t;

typedef struct purge {
    kv_t *kv;
    purge_item_t items[PURGE_BATCH];
    size_t n;
    size_t purged; /* keys whose history went, in the commit */
} purge_t;

/* The key of "ns\0key" (not NUL-terminated), for messages. */
static int key_of(const char *ekey, size_t ekey_len, const char **key) {
    size_t ns_len = strnlen(ekey, ekey_len);

    *key = ekey + ns_len + (ns_len < ekey_len);
    return (int)(ekey_len - (size_t)(*key - ekey));
}

/* Deletes every retained version of the key ekey ("ns\0key") names; the
 * highest revision deleted goes to *top. */
static reel_code_t purge_versions(kv_t *kv, store_txn_t *txn,
                                  const char *ekey, size_t ekey_len,
                                  uint64_t *top, reel_status_t *st) {
    size_t plen = 1 + ekey_len + 1;
    char *prefix = malloc(plen);
    store_iter_t *it = NULL;
    reel_code_t rc = REEL_OK;

    if (prefix != NULL) {
        prefix[0] = KV_H_VER;
        memcpy(prefix + 1, ekey, ekey_len);
        prefix[1 + ekey_len] = '\0';
        it = store_txn_iter_prefix(txn, kv->cf_history, prefix, plen);
    }
    if (prefix == NULL || it == NULL) {
        free(prefix);
        return reel_status_set(st, REEL_RESOURCE_EXHAUSTED, "out of memory");
    }
    for (store_iter_seek(it, prefix, plen); store_iter_valid(it);
         store_iter_next(it)) {
        size_t klen, vlen;
        const char *k = store_iter_key(it, &klen);
        const char *v = store_iter_value(it, &vlen);
        unsigned char rk[9];
        uint64_t rev;

        if (klen != plen + 8 || memcmp(k, prefix, plen) != 0)
            break;
        if (vlen != 8) {
            const char *key;
            int key_len = key_of(ekey, ekey_len, &key);

            rc = reel_status_set(st, REEL_DATA_LOSS,
                                 "key \"%.*s\": kv history index is corrupt",
                                 key_len, key);
            break;
        }
        rev = reel_be64_get((const unsigned char *)v);
        kv_rev_key(rev, rk);
        store_txn_delete(txn, kv->cf_history, k, klen);
        store_txn_delete_blind(txn, kv->cf_history, rk, sizeof(rk));
        if (rev > *top)
            *top = rev;
    }
    if (rc == REEL_OK)
        rc = store_iter_status(it, st);
    store_iter_destroy(it);
    free(prefix);
    return rc;
}

/* Purges the history item names if its key is still that tombstone. */
static reel_code_t purge_one(kv_t *kv, store_txn_t *txn,
                             const purge_item_t *item, size_t *purged,
                             reel_status_t *st) {
    const char *ekey = item->dkey + 9;
    size_t ekey_len = item->dkey_len - 9;
    char *val = NULL;
    size_t vlen = 0;
    uint64_t trimmed, top = 0;
    kv_entry_t e = {0};
    char *tk = NULL;
    size_t tklen;
    int tomb;
    reel_code_t rc;

    store_txn_delete(txn, kv->cf_history, item->dkey, item->dkey_len);
    rc = kv_entry_read(kv, txn, NULL, ekey, ekey_len, &val, &vlen, &tomb, st);
    if (rc == REEL_NOT_FOUND) { /* nothing left to purge */
        reel_status_fini(st);
        return REEL_OK;
    }
    if (rc != REEL_OK)
        return rc;
    if (kv_entry_decode(ekey, ekey_len, val, vlen, &e) != 0 ||
        kv_entry_trimmed(val, vlen, &trimmed) != 0) {
        const char *key;
        int key_len = key_of(ekey, ekey_len, &key);

        rc = reel_status_set(st, REEL_DATA_LOSS,
                             "key \"%.*s\": stored record is corrupt", key_len,
                             key);
        goto out;
    }
    if (!tomb || e.version != item->version)
        goto out; /* set or deleted again since: not this entry's to purge */
    if ((rc = purge_versions(kv, txn, ekey, ekey_len, &top, st)) != REEL_OK)
        goto out;
    if (top > trimmed) {
        if ((tklen = kv_tomb_key(ekey, ekey_len, &tk)) == 0) {
            rc = reel_status_set(st, REEL_RESOURCE_EXHAUSTED, "out of memory");
            goto out;
        }
        kv_entry_set_trimmed(val, vlen, top);
        store_txn_put(txn, kv->cf, tk, tklen, val, vlen);
        kv_raise_compacted(kv, txn, top);
    }
    (*purged)++;
out:
    kv_entry_fini(&e);
    free(val);
    free(tk);
    return rc;
}

static reel_code_t purge_apply(store_txn_t *txn, void *arg,
                               reel_status_t *st) {
    purge_t *p = arg;
    reel_code_t rc = REEL_OK;

    p->purged = 0;
    for (size_t i = 0; i < p->n && rc == REEL_OK; i++)
        rc = purge_one(p->kv, txn, &p->items[i], &p->purged, st);
    return rc;
}

static void purge_clear(purge_t *p) {
    for (size_t i = 0; i < p->n; i++)
        free(p->items[i].dkey);
    p->n = 0;
}

/* Reads the next batch of entries written before cutoff_ms into p. */
static reel_code_t purge_collect(kv_t *kv, int64_t cutoff_ms, purge_t *p,
                                 reel_status_t *st) {
    store_iter_t *it = store_iter_create(kv->store, kv->cf_history, NULL);
    const char start = KV_H_DELETED;
    reel_code_t rc = REEL_OK;

    if (it == NULL)
        return reel_status_set(st, REEL_RESOURCE_EXHAUSTED, "out of memory");
    for (store_iter_seek(it, &start, 1);
         store_iter_valid(it) && p->n < PURGE_BATCH; store_iter_next(it)) {
        size_t klen, vlen;
        const char *k = store_iter_key(it, &klen);
        const char *v = store_iter_value(it, &vlen);
        purge_item_t *item = &p->items[p->n];

        if (klen == 0 || k[0] != KV_H_DELETED)
            break;
        if (klen < 9 + 3 || vlen != 8 ||
            memchr(k + 9, '\0', klen - 9) == NULL) {
            rc = reel_status_set(st, REEL_DATA_LOSS,
                                 "a deleted key's purge entry is corrupt "
                                 "(%zu bytes)",
                                 klen);
            break;
        }
        if ((int64_t)reel_be64_get((const unsigned char *)k + 1) > cutoff_ms)
            break;
        if ((item->dkey = malloc(klen)) == NULL) {
            rc = reel_status_set(st, REEL_RESOURCE_EXHAUSTED, "out of memory");
            break;
        }
        memcpy(item->dkey, k, klen);
        item->dkey_len = klen;
        item->version = reel_be64_get((const unsigned char *)v);
        p->n++;
    }
    if (rc == REEL_OK)
        rc = store_iter_status(it, st);
    store_iter_destroy(it);
    return rc;
}

reel_code_t kv_purge_deleted(kv_t *kv, int64_t now_ms, size_t *purged,
                             reel_status_t *st) {
    purge_t *p;
    reel_code_t rc = REEL_OK;
    int full = 1;

    *purged = 0;
    if (kv->lim.deleted_history_ms <= 0)
        return REEL_OK;
    if ((p = calloc(1, sizeof(*p))) == NULL)
        return reel_status_set(st, REEL_RESOURCE_EXHAUSTED, "out of memory");
    p->kv = kv;
    /* A full batch may have more behind it; a stop waits for none. */
    while (rc == REEL_OK && full && !atomic_load(&kv->purge_stopping)) {
        rc = purge_collect(kv, now_ms - kv->lim.deleted_history_ms, p, st);
        full = p->n == PURGE_BATCH;
        if (rc == REEL_OK && p->n > 0 &&
            (rc = store_exec(kv->store, purge_apply, p, NULL, st)) == REEL_OK) {
            *purged += p->purged;
            atomic_fetch_add_explicit(&kv->purged, p->purged,
                                      memory_order_relaxed);
        }
        purge_clear(p);
    }
    free(p);
    return rc;
}

uint64_t kv_purged_keys(kv_t *kv) {
    return atomic_load_explicit(&kv->purged, memory_order_relaxed);
}

/*
 * After an upgrade moved tombstones (kv_upgrade), the live keys' range
 * holds a delete for each, which every listing would step over until a
 * compaction dropped them: compacted once, now, on this thread and not
 * the start's (a large KV takes a while).
 */
static void compact_moved(kv_t *kv) {
    reel_status_t st = REEL_STATUS_INIT;
    int64_t t0 = reel_clock_mono_ns();

    if (store_compact_range(kv->store, kv->cf, NULL, 0, NULL, 0, &st) !=
        REEL_OK)
        REEL_WARN("kv", "compacting after the upgrade: %s (a later "
                        "compaction drops the moved tombstones' deletes)",
                  reel_status_message(&st));
    else if (!atomic_load(&kv->purge_stopping)) /* else cut short */
        REEL_INFO("kv", "compacted the keys after the upgrade in %lld ms",
                  (long long)((reel_clock_mono_ns() - t0) / 1000000));
    reel_status_fini(&st);
}

static void *purger_main(void *arg) {
    kv_t *kv = arg;
    reel_status_t st = REEL_STATUS_INIT;
    char *failing = NULL; /* the failure last logged, until one succeeds */
    char then[96];

    snprintf(then, sizeof(then),
             "it stays in place and the purge is retried every %lld ms",
             (long long)kv->lim.purge_interval_ms);
    pthread_mutex_lock(&kv->purge_mu);
    while (!atomic_load(&kv->purge_stopping)) {
        struct timespec ts = reel_clock_mono_after(kv->lim.purge_interval_ms);
        size_t purged = 0;

        while (!atomic_load(&kv->purge_stopping) && !kv->compact_moved &&
               (kv->lim.deleted_history_ms > 0
                    ? pthread_cond_timedwait(&kv->purge_cv, &kv->purge_mu,
                                             &ts)
                    : pthread_cond_wait(&kv->purge_cv, &kv->purge_mu)) !=
                   ETIMEDOUT) {
        }
        if (atomic_load(&kv->purge_stopping))
            break;
        if (kv->compact_moved) {
            kv->compact_moved = 0;
            pthread_mutex_unlock(&kv->purge_mu);
            compact_moved(kv);
            pthread_mutex_lock(&kv->purge_mu);
            continue;
        }
        pthread_mutex_unlock(&kv->purge_mu);
        reel_log_retried(&failing, "kv", "purging deleted keys' history", then,
                         kv_purge_deleted(kv, reel_clock_now_ms(), &purged,
                                          &st) != REEL_OK
                             ? reel_status_message(&st)
                             : NULL);
        if (purged > 0)
            REEL_DEBUG("kv", "purged the history of %zu deleted keys",
                       purged);
        reel_status_fini(&st);
        pthread_mutex_lock(&kv->purge_mu);
    }
    pthread_mutex_unlock(&kv->purge_mu);
    free(failing);
    return NULL;
}

/* Starts the thread, if it is not running. */
static reel_code_t purger_run(kv_t *kv, reel_status_t *st) {
    if (kv->purger_started)
        return REEL_OK;
    if (pthread_create(&kv->purger, NULL, purger_main, kv) != 0)
        return reel_status_set(st, REEL_RESOURCE_EXHAUSTED,
                               "cannot start the KV's purge thread");
    kv->purger_started = 1;
    return REEL_OK;
}

reel_code_t kv_purger_start(kv_t *kv, reel_status_t *st) {
    if (kv->lim.purge_interval_ms <= 0) {
        /* A tenth of the age, within 100 ms and a minute. */
        int64_t i = kv->lim.deleted_history_ms / 10;

        kv->lim.purge_interval_ms = i < 100 ? 100 : i > 60000 ? 60000 : i;
    }
    pthread_mutex_init(&kv->purge_mu, NULL);
    reel_cond_init_mono(&kv->purge_cv);
    kv->purge_sync = 1;
    return kv->lim.deleted_history_ms > 0 ? purger_run(kv, st) : REEL_OK;
}

void kv_stop(kv_t *kv) {
    if (kv == NULL || !kv->purge_sync)
        return;
    pthread_mutex_lock(&kv->purge_mu);
    atomic_store(&kv->purge_stopping, 1);
    pthread_cond_broadcast(&kv->purge_cv);
    pthread_mutex_unlock(&kv->purge_mu);
    if (kv->purger_started) {
        /* A compaction under way would hold the stop for as long as it
         * takes: stopped, a later one drops the deletes. */
        store_manual_compactions(kv->store, 0);
        pthread_join(kv->purger, NULL);
        store_manual_compactions(kv->store, 1);
    }
    kv->purger_started = 0;
}

void kv_purger_fini(kv_t *kv) {
    kv_stop(kv);
    if (!kv->purge_sync)
        return;
    pthread_mutex_destroy(&kv->purge_mu);
    pthread_cond_destroy(&kv->purge_cv);
    kv->purge_sync = 0;
}

/* ---- Upgrade ------------------------------------------------------------- */

/* Tombstones an upgrade moves (and indexes) per commit, at most. */
#define UPGRADE_BATCH 4096

typedef struct upgrade {
    kv_t *kv;
    int from;
    char *after; /* the last key walked; NULL before the first */
    size_t after_len;
    size_t moved; /* in the last commit */
    int done;     /* the walk has reached the end */
} upgrade_t;

/* A tombstone of an older dir moves to its own place; from before
 * format 4 it also gets its purge entry, at its own time. */
static reel_code_t upgrade_one(upgrade_t *u, store_txn_t *txn, const char *k,
                               size_t klen, const char *v, size_t vlen,
                               const kv_entry_t *e, reel_status_t *st) {
    kv_t *kv = u->kv;
    unsigned char ver[8];
    char *tk = NULL, *dk = NULL;
    size_t tklen = kv_tomb_key(k, klen, &tk), dlen = 0;

    if (u->from < 4)
        dlen = kv_deleted_key(e->updated_at_ms, e->ns, e->ns_len, e->key,
                              e->key_len, &dk);
    if (tk == NULL || (u->from < 4 && dk == NULL)) {
        free(tk);
        free(dk);
        return reel_status_set(st, REEL_RESOURCE_EXHAUSTED, "out of memory");
    }
    store_txn_put(txn, kv->cf, tk, tklen, v, vlen);
    store_txn_delete(txn, kv->cf, k, klen);
    if (dk != NULL) {
        reel_be64_put(ver, e->version);
        store_txn_put(txn, kv->cf_history, dk, dlen, ver, 8);
    }
    free(tk);
    free(dk);
    u->moved++;
    return REEL_OK;
}

/* The next batch of the walk over the live keys, from where the last
 * stopped. */
static reel_code_t upgrade_apply(store_txn_t *txn, void *arg,
                                 reel_status_t *st) {
    upgrade_t *u = arg;
    store_iter_t *it = store_iter_create(u->kv->store, u->kv->cf, NULL);
    const char first = KV_TOMB + 1; /* past every tombstone */
    reel_code_t rc = REEL_OK;
    char *after;

    u->moved = 0;
    if (it == NULL)
        return reel_status_set(st, REEL_RESOURCE_EXHAUSTED, "out of memory");
    if (u->after == NULL)
        store_iter_seek(it, &first, 1);
    else
        store_iter_seek(it, u->after, u->after_len);
    for (; store_iter_valid(it) && u->moved < UPGRADE_BATCH;
         store_iter_next(it)) {
        size_t klen, vlen;
        const char *k = store_iter_key(it, &klen);
        const char *v = store_iter_value(it, &vlen);
        kv_entry_t e;

        if (u->after != NULL && klen == u->after_len &&
            memcmp(k, u->after, klen) == 0)
            continue; /* walked by the last batch, and live */
        if (kv_entry_decode(k, klen, v, vlen, &e) != 0) {
            rc = reel_status_set(st, REEL_DATA_LOSS,
                                 "a KV record is corrupt (key of %zu bytes)",
                                 klen);
            break;
        }
        if (e.deleted)
            rc = upgrade_one(u, txn, k, klen, v, vlen, &e, st);
        kv_entry_fini(&e);
        if (rc != REEL_OK)
            break;
        if ((after = malloc(klen)) == NULL) {
            rc = reel_status_set(st, REEL_RESOURCE_EXHAUSTED, "out of memory");
            break;
        }
        memcpy(after, k, klen);
        free(u->after);
        u->after = after;
        u->after_len = klen;
    }
    if (rc == REEL_OK && (rc = store_iter_status(it, st)) == REEL_OK)
        u->done = !store_iter_valid(it);
    store_iter_destroy(it);
    return rc;
}

reel_code_t kv_upgrade(kv_t *kv, int from, reel_status_t *st) {
    upgrade_t u = {.kv = kv, .from = from};
    size_t moved = 0;
    reel_code_t rc = REEL_OK;

    if (from >= 5)
        return REEL_OK;
    while (rc == REEL_OK && !u.done) {
        rc = store_exec(kv->store, upgrade_apply, &u, NULL, st);
        moved += u.moved;
    }
    free(u.after);
    if (rc != REEL_OK || moved == 0)
        return rc;
    REEL_INFO("kv", "moved %zu tombstones apart from the live keys%s for "
              "the new format",
              moved, from < 4 ? ", each with its purge entry," : "");
    pthread_mutex_lock(&kv->purge_mu);
    kv->compact_moved = 1;
    pthread_cond_broadcast(&kv->purge_cv);
    pthread_mutex_unlock(&kv->purge_mu);
    return purger_run(kv, st);
}
