/*
 * kv/kv_watch.c: push watches on the feed (feed/feed.h), backed by
 * storage.
 *
 * The feed owns the handoff from replay to live, the registry and the
 * locks (feed/feed.c says how and why); this file says what a KV watch
 * replays and what it takes live. A watch replays in phases:
 *   SNAPSHOT   sending the matching live keys as of a store snapshot S
 *   VERSIONS   sending a key's retained versions after from_version (at S)
 *   BOOT_DONE  sending BOOTSTRAP_DONE(S)
 *   HISTORY    catching up from kv_history after the cursor, to a fresh
 *              snapshot; the replay op returns "caught up" from here
 * and then follows live. A FROM_REVISION watch starts in HISTORY and sends
 * its BOOTSTRAP_DONE in go_live, inside the feed's critical section, so it
 * names exactly the revision where live delivery begins. The cursor (the
 * feed's) is the revision up to which the watcher has seen everything that
 * matches it.
 *
 * An exact key's watches sit under the key "ns\0key" in the hub; pattern
 * watches are subscriptions of any key, and match filters for them. Watches
 * of one group (kv_watch_args_t.group) created one after another sit next
 * to each other, so publish hands an event to all of a group's adjacent
 * live watches in one deliver_group() call, and a stream of many watches
 * on one key carries the event once. Each event goes to the watches it
 * reaches with one kv_sink_cache_t, so a sink encodes it once for all.
 *
 * When the sink is full, a live watch drops back to HISTORY without taking
 * the event and catches up from storage once its owner pumps it (the
 * sink's drain, or its wake). A stalled watcher therefore costs one bounded
 * sink and no work per write. If the history it needs was trimmed, it ends
 * with OUT_OF_RANGE naming the last revision it received.
 *
 * A replay never skips what it cannot read: a corrupt or missing record
 * ends the watch with DATA_LOSS, a failed read or snapshot with its own
 * code (INTERNAL), out of memory with RESOURCE_EXHAUSTED, each naming the
 * key, version or revision. Only a full sink waits for a drain. An event
 * publish cannot decode is handed to the feed as lost: every live watch
 * catches up from storage, which reads it or ends naming it.
 *
 * Cursors given by the client are checked at creation: FROM_REVISION past
 * the head is INVALID_ARGUMENT (it would wait, silent, for revisions that
 * do not exist yet); FROM_VERSION past the current version replays nothing
 * and goes live, UINT64_MAX included. Every cursor + 1 is guarded.
 *
 * The replay state below (phase, snapshot, versions) is touched only by
 * the feed's replay and go_live calls, under the subscription's lock.
 */
#include "kv/kv_int.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/codec.h"
#include "base/fault.h"
#include "base/pattern.h"

enum { PH_SNAPSHOT, PH_VERSIONS, PH_BOOT_DONE, PH_HISTORY };

/* Step results. */
enum { STEP_NEXT, STEP_FULL, STEP_END };

struct kv_watch {
    kv_t *kv;
    feed_sub_t *sub;
    char *ns, *key, *ekey; /* ekey = ns 0 key */
    size_t ns_len, key_len, ekey_len;
    size_t lit_len; /* the pattern's literal prefix */
    kv_watch_sink_t sink;
    void *arg;
    unsigned char pattern;

    /* Replay's state (the feed's replay and go_live calls). Small fields
     * together: a shared stream holds 10,000 watches. */
    unsigned char phase, boot_sent;
    /* A pattern watch from revision 0, until its catch-up reaches what
     * was trimmed: every retained change, whatever a busy key trimmed. */
    unsigned char from_oldest;
    uint64_t boot_rev;
    store_snapshot_t *snap;
    char *snap_after; /* last key sent in SNAPSHOT (encoded), or NULL */
    size_t snap_after_len;
    uint64_t next_version;
    reel_status_t *why; /* the replay's end status, during a replay call */
};

/* A live event, and the sinks' shared encoding of it. */
typedef struct kv_item {
    kv_event_t ev;
    kv_sink_cache_t cache;
} kv_item_t;

/* ---- The hub ------------------------------------------------------------- */

size_t kv_watchers(kv_t *kv) { return feed_hub_subs(kv->hub); }

reel_code_t kv_hub_init(kv_t *kv, uint64_t last_published, reel_status_t *st) {
    return feed_hub_create(last_published, &kv->hub, st);
}

void kv_hub_fini(kv_t *kv) {
    feed_hub_destroy(kv->hub);
    free(kv->group_args);
}

static int watch_matches(const kv_watch_t *w, const kv_event_t *ev) {
    if (ev->ns_len != w->ns_len || memcmp(ev->ns, w->ns, w->ns_len) != 0)
        return 0;
    if (!w->pattern)
        return ev->key_len == w->key_len &&
               memcmp(ev->key, w->key, w->key_len) == 0;
    return reel_pattern_match(w->key, w->key_len, ev->key, ev->key_len);
}

static int replay(void *arg, uint64_t *cursor, reel_status_t *why);
static int go_live(void *arg, uint64_t cursor);

static int live_match(void *arg, const void *item) {
    return watch_matches(arg, &((const kv_item_t *)item)->ev);
}

static int live_deliver(void *arg, void *item) {
    kv_watch_t *w = arg;
    kv_item_t *it = item;

    return w->sink.deliver(w->arg, &it->ev, &it->cache) == 0 ? FEED_OK
                                                             : FEED_FULL;
}

/*
 * The group's sink takes its own args: kv's scratch holds them, which only
 * publish uses, under the hub's lock. Out of memory counts as full: each
 * watch then catches up from storage on its own.
 */
static int live_deliver_group(void *const *args, size_t n, void *item) {
    kv_watch_t *first = args[0];
    kv_t *kv = first->kv;
    kv_item_t *it = item;
    int r;

    if (n > kv->group_cap) {
        size_t cap = kv->group_cap ? kv->group_cap : 16;
        void **g;

        while (cap < n)
            cap *= 2;
        if ((g = realloc(kv->group_args, cap * sizeof(*g))) == NULL)
            return FEED_FULL;
        kv->group_args = g;
        kv->group_cap = cap;
    }
    for (size_t i = 0; i < n; i++)
        kv->group_args[i] = ((kv_watch_t *)args[i])->arg;
    r = first->sink.deliver_group(kv->group_args, n, &it->ev, &it->cache);
    return r == 0 ? FEED_OK : FEED_FULL;
}

static void watch_end(void *arg, const reel_status_t *st) {
    kv_watch_t *w = arg;

    /* w may be freed inside: nothing of it is read after. */
    w->sink.end(w->arg, st);
}

static void watch_wake(void *arg) {
    kv_watch_t *w = arg;

    if (w->sink.wake != NULL)
        w->sink.wake(w->arg);
}

/* Watches that share a group's sink, and those on their own. */
static const feed_ops_t grouped_ops = {
    .replay = replay,
    .go_live = go_live,
    .match = live_match,
    .deliver = live_deliver,
    .deliver_group = live_deliver_group,
    .end = watch_end,
    .wake = watch_wake,
};

static const feed_ops_t single_ops = {
    .replay = replay,
    .go_live = go_live,
    .match = live_match,
    .deliver = live_deliver,
    .end = watch_end,
    .wake = watch_wake,
};

int kv_change_decode(const store_change_t *c, kv_event_t *ev) {
    if (c->module != KV_MODULE_ID || c->type != KV_CHANGE_EVENT)
        return 0;
    return kv_event_decode(c->event, c->len, ev) == 0 ? 1 : -1;
}

/*
 * Pattern watches are indexed under a prefix of their "ns\0pattern": "ns\0"
 * and the first token when that is literal ("orders" of "orders.>"),
 * else "ns" alone ("*.eu", ">"). An event is matched only against the
 * watches under the two prefixes of its "ns\0key": its namespace's with
 * its first token, and its namespace's alone; never against those of
 * other namespaces or other first tokens (10,000 of them halved the rate
 * of writes none of them matched).
 */
static size_t pattern_index_len(size_t ns_len, const char *pattern,
                                size_t len) {
    size_t t = reel_pattern_literal_head(pattern, len, 1);

    return t > 0 ? ns_len + 1 + t : ns_len;
}

/* "ns\0key" of ev in buf when it fits, else malloc'd; NULL: out of memory. */
static char *event_key(const kv_event_t *ev, char *buf, size_t cap,
                       size_t *len) {
    char *k = buf;

    *len = ev->ns_len + 1 + ev->key_len;
    if (*len > cap && (k = malloc(*len)) == NULL)
        return NULL;
    memcpy(k, ev->ns, ev->ns_len);
    k[ev->ns_len] = '\0';
    memcpy(k + ev->ns_len + 1, ev->key, ev->key_len);
    return k;
}

void kv_publish(kv_t *kv, const store_change_t *changes, size_t n) {
    feed_publish_begin(kv->hub);
    for (size_t i = 0; i < n; i++) {
        const store_change_t *c = &changes[i];
        char buf[512], *ek;
        size_t eklen;
        feed_index_t idx[2];
        kv_item_t it;

        if (c->module != KV_MODULE_ID || c->type != KV_CHANGE_EVENT ||
            feed_hub_idle(kv->hub))
            continue;
        /* The fault point stands in for an event that cannot be copied. */
        if (REEL_FAULT("kv.publish") ||
            kv_event_decode(c->event, c->len, &it.ev) != 0) {
            feed_publish_lost(kv->hub, c->revision);
            continue;
        }
        if ((ek = event_key(&it.ev, buf, sizeof(buf), &eklen)) == NULL) {
            kv_event_fini(&it.ev);
            feed_publish_lost(kv->hub, c->revision);
            continue;
        }
        it.cache.bytes = NULL;
        it.cache.len = 0;
        idx[0].key = idx[1].key = ek;
        idx[0].len = it.ev.ns_len + 1 +
                     reel_pattern_literal_head(it.ev.key, it.ev.key_len, 1);
        idx[1].len = it.ev.ns_len;
        feed_publish_indexed(kv->hub, ek, eklen, idx, 2, it.ev.revision,
                             &it);
        if (ek != buf)
            free(ek);
        free(it.cache.bytes);
        kv_event_fini(&it.ev);
    }
    feed_publish_end(kv->hub, n > 0 ? changes[n - 1].revision : 0);
}

/* ---- Creating ------------------------------------------------------------ */

/*
 * The highest trimmed revision among the keys pattern watch w matches:
 * their records, under the pattern's literal prefix, each keep their own
 * (a tombstone too, in its own place: skip 1 past KV_TOMB). Read from
 * committed state, at one snapshot taken after the caller's, so it covers
 * every trim that snapshot lacks and sees a key that moves once.
 */
static reel_code_t pattern_trimmed(kv_watch_t *w, uint64_t *trimmed,
                                   reel_status_t *st) {
    size_t base_len = 1 + w->ns_len + 1 + w->lit_len;
    store_snapshot_t *snap = NULL;
    store_iter_t *it = NULL;
    char *base = NULL;
    reel_code_t rc;

    *trimmed = 0;
    if ((rc = store_snapshot_create(w->kv->store, &snap, st)) != REEL_OK)
        return rc;
    if (kv_tomb_key(w->ekey, base_len - 1, &base) == 0) {
        store_snapshot_release(w->kv->store, snap);
        return reel_status_set(st, REEL_RESOURCE_EXHAUSTED, "out of memory");
    }
    for (size_t skip = 0; skip < 2 && rc == REEL_OK; skip++) {
        const char *b = base + 1 - skip;
        size_t blen = base_len - 1 + skip;

        store_iter_destroy(it);
        it = store_iter_prefix(w->kv->store, w->kv->cf, snap, b, blen);
        if (it == NULL) {
            rc = reel_status_set(st, REEL_RESOURCE_EXHAUSTED,
                                 "out of memory");
            break;
        }
        for (store_iter_seek(it, b, blen); store_iter_valid(it);
             store_iter_next(it)) {
            size_t klen, vlen;
            const char *k = store_iter_key(it, &klen);
            const char *v = store_iter_value(it, &vlen);
            uint64_t t;

            if (klen < blen || memcmp(k, b, blen) != 0)
                break;
            k += skip, klen -= skip;
            if (!reel_pattern_match(w->key, w->key_len, k + w->ns_len + 1,
                                    klen - w->ns_len - 1))
                continue;
            if (kv_entry_trimmed(v, vlen, &t) != 0) {
                rc = reel_status_set(st, REEL_DATA_LOSS,
                                     "key \"%.*s\": stored record is corrupt",
                                     (int)(klen - w->ns_len - 1),
                                     k + w->ns_len + 1);
                break;
            }
            if (t > *trimmed)
                *trimmed = t;
        }
        if (rc == REEL_OK)
            rc = store_iter_status(it, st);
    }
    store_iter_destroy(it);
    store_snapshot_release(w->kv->store, snap);
    free(base);
    return rc;
}

/*
 * The highest trimmed revision that could hide a change after cursor this
 * watch needs. For a pattern, the highest ever trimmed anywhere when that
 * is not past cursor (nothing to look up); else the highest among the
 * keys it matches, so that a busy key elsewhere, whose history is trimmed
 * at every write, does not end the pattern watches that never see it.
 */
static reel_code_t trimmed_for(kv_watch_t *w, uint64_t cursor,
                               uint64_t *trimmed, reel_status_t *st) {
    char *val = NULL;
    size_t vlen = 0;
    int tomb;
    reel_code_t rc;

    if (w->pattern) {
        *trimmed = atomic_load(&w->kv->compacted);
        return *trimmed <= cursor ? REEL_OK : pattern_trimmed(w, trimmed, st);
    }
    *trimmed = 0;
    rc = kv_entry_read(w->kv, NULL, NULL, w->ekey, w->ekey_len, &val, &vlen,
                       &tomb, st);
    if (rc == REEL_NOT_FOUND) {
        reel_status_fini(st);
        return REEL_OK;
    }
    if (rc != REEL_OK)
        rc = reel_status_set(st, rc, "key \"%s\": %s", w->key,
                             reel_status_message(st));
    else if (kv_entry_trimmed(val, vlen, trimmed) != 0)
        rc = reel_status_set(st, REEL_DATA_LOSS,
                             "key \"%s\": stored record is corrupt", w->key);
    free(val);
    return rc;
}

static char *dup_bytes(const char *s, size_t len) {
    char *d = malloc(len + 1);

    if (d != NULL) {
        memcpy(d, s, len);
        d[len] = '\0';
    }
    return d;
}

static void watch_free(kv_watch_t *w) {
    if (w->snap != NULL)
        store_snapshot_release(w->kv->store, w->snap);
    free(w->snap_after);
    free(w->ns);
    free(w->key);
    free(w->ekey);
    free(w);
}

reel_code_t kv_watch_create(kv_t *kv, const kv_watch_args_t *a,
                            const kv_watch_sink_t *sink, void *sink_arg,
                            kv_watch_t **out, reel_status_t *st) {
    kv_watch_t *w;
    feed_sub_args_t fa = {0};
    uint64_t trimmed = 0, head;
    reel_code_t rc;

    *out = NULL;
    if ((rc = kv_check_read_namespace(kv, a->ns, a->ns_len, st)) != REEL_OK ||
        (rc = kv_check_name("key", a->key, a->key_len, kv->lim.max_key, st)) !=
            REEL_OK ||
        (rc = reel_pattern_validate(a->key, a->key_len, "key", st)) != REEL_OK)
        return rc;
    if ((int)a->start < KV_WATCH_SNAPSHOT || a->start > KV_WATCH_FROM_REVISION)
        return reel_status_set(st, REEL_INVALID_ARGUMENT,
                               "start: unknown value %d", (int)a->start);
    w = calloc(1, sizeof(*w));
    if (w == NULL)
        return reel_status_set(st, REEL_RESOURCE_EXHAUSTED, "out of memory");
    w->kv = kv;
    w->sink = *sink;
    w->arg = sink_arg;
    w->ns = dup_bytes(a->ns, a->ns_len);
    w->key = dup_bytes(a->key, a->key_len);
    w->ns_len = a->ns_len;
    w->key_len = a->key_len;
    w->ekey_len = kv_key_encode(a->ns, a->ns_len, a->key, a->key_len, &w->ekey);
    w->pattern = reel_pattern_has_wildcard(a->key, a->key_len);
    w->lit_len = reel_pattern_literal_prefix(a->key, a->key_len);
    if (w->ns == NULL || w->key == NULL || w->ekey == NULL) {
        rc = reel_status_set(st, REEL_RESOURCE_EXHAUSTED, "out of memory");
        goto fail;
    }

    switch (a->start) {
    case KV_WATCH_SNAPSHOT:
        if ((rc = store_snapshot_create(kv->store, &w->snap, st)) != REEL_OK)
            goto fail;
        w->boot_rev = store_snapshot_revision(w->snap);
        w->phase = PH_SNAPSHOT;
        break;
    case KV_WATCH_NOW:
        fa.cursor = w->boot_rev = feed_hub_last_published(kv->hub);
        w->phase = PH_BOOT_DONE;
        break;
    case KV_WATCH_FROM_VERSION:
        if (w->pattern) {
            rc = reel_status_set(st, REEL_INVALID_ARGUMENT,
                                 "start: FROM_VERSION needs an exact key, not "
                                 "the pattern \"%s\"",
                                 w->key);
            goto fail;
        }
        if ((rc = store_snapshot_create(kv->store, &w->snap, st)) != REEL_OK)
            goto fail;
        w->boot_rev = store_snapshot_revision(w->snap);
        /* No version follows the largest (and + 1 would wrap to version
         * 0, replaying everything): as past the current version, nothing
         * to replay. */
        if (a->from_version == UINT64_MAX) {
            w->phase = PH_BOOT_DONE;
            break;
        }
        w->next_version = a->from_version + 1;
        w->phase = PH_VERSIONS;
        break;
    case KV_WATCH_FROM_REVISION:
        /* A cursor past the head names changes that do not exist yet:
         * answering BOOTSTRAP_DONE there, then nothing until the head
         * passes it, would hide every change in between. */
        head = store_revision(kv->store);
        if (a->from_revision > head) {
            rc = reel_status_set(st, REEL_INVALID_ARGUMENT,
                                 "from_revision: %llu is past the head "
                                 "revision %llu",
                                 (unsigned long long)a->from_revision,
                                 (unsigned long long)head);
            goto fail;
        }
        if ((rc = trimmed_for(w, a->from_revision, &trimmed, st)) != REEL_OK)
            goto fail;
        /* 0 starts from the oldest retained, as the WAL's does: for an
         * exact key, past its own trimmed versions; for a pattern, at
         * each key's oldest retained change, so a key written once is
         * not left out because another it matches was trimmed since. */
        if (a->from_revision != 0 && a->from_revision < trimmed) {
            rc = reel_status_not_retained(st, a->from_revision,
                                          w->pattern ? "" : " for this key",
                                          trimmed, head);
            goto fail;
        }
        w->from_oldest = a->from_revision == 0 && w->pattern;
        fa.cursor = a->from_revision != 0 || w->pattern ? a->from_revision
                                                        : trimmed;
        w->phase = PH_HISTORY;
        break;
    }
    /* A grouped watch shares its group's sink only if the sink can take an
     * event for many at once. */
    fa.ops = a->group != NULL && sink->deliver_group != NULL ? &grouped_ops
                                                             : &single_ops;
    fa.arg = w;
    if (!w->pattern) {
        fa.key = w->ekey;
        fa.key_len = w->ekey_len;
    } else {
        fa.index = w->ekey;
        fa.index_len = pattern_index_len(w->ns_len, w->key, w->key_len);
    }
    fa.group = a->group;
    if ((rc = feed_sub_create(kv->hub, &fa, &w->sub, st)) != REEL_OK)
        goto fail;
    *out = w;
    return REEL_OK;
fail:
    watch_free(w);
    return rc;
}

/* ---- Replay (the subscription's lock held throughout) -------------------- */

/* One replayed event, to this watch alone: its own cache. */
static int deliver(kv_watch_t *w, const kv_event_t *ev) {
    kv_sink_cache_t cache = {NULL, 0};
    int r = w->sink.deliver(w->arg, ev, &cache);

    free(cache.bytes);
    return r;
}

/* The watch cannot go on: the replay says why, and the feed tells the
 * sink's end. */
static int end_watch(kv_watch_t *w, reel_code_t code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int end_watch(kv_watch_t *w, reel_code_t code, const char *fmt, ...) {
    va_list ap;

    va_start(ap, fmt);
    reel_status_setv(w->why, code, fmt, ap);
    va_end(ap);
    return STEP_END;
}

/* The same, with a status already made (moved from st). */
static int end_with(kv_watch_t *w, reel_status_t *st) {
    reel_status_move(w->why, st);
    return STEP_END;
}

/*
 * A replay that cannot read what it owes ends the watch, naming what it
 * was reading: skipping the record would send a stream with a hole in it,
 * and waiting for a drain would wait forever when nothing is queued.
 */
static int end_failed(kv_watch_t *w, const reel_status_t *st,
                      const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int end_failed(kv_watch_t *w, const reel_status_t *st,
                      const char *fmt, ...) {
    char what[1536];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(what, sizeof(what), fmt, ap);
    va_end(ap);
    return end_watch(w, st->code, "%s: %s", what, reel_status_message(st));
}

static int end_out_of_memory(kv_watch_t *w) {
    return end_watch(w, REEL_RESOURCE_EXHAUSTED,
                     "watch of key \"%s\": out of memory while replaying",
                     w->key);
}

/* drc from a decode: -1 the record is corrupt, -2 it could not be copied. */
static int end_undecodable(kv_watch_t *w, int drc, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int end_undecodable(kv_watch_t *w, int drc, const char *fmt, ...) {
    char what[1536];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(what, sizeof(what), fmt, ap);
    va_end(ap);
    if (drc == -2)
        return end_watch(w, REEL_RESOURCE_EXHAUSTED,
                         "%s could not be read: out of memory", what);
    return end_watch(w, REEL_DATA_LOSS, "%s is corrupt", what);
}

/* A replay's decodes; the fault point stands in for a corrupt record. */
static int replay_event_decode(const void *buf, size_t len, kv_event_t *ev) {
    if (REEL_FAULT("kv.decode")) {
        memset(ev, 0, sizeof(*ev));
        return -1;
    }
    return kv_event_decode(buf, len, ev);
}

static int replay_entry_decode(const char *k, size_t klen, const void *buf,
                               size_t len, kv_entry_t *e) {
    if (REEL_FAULT("kv.decode")) {
        memset(e, 0, sizeof(*e));
        return -1;
    }
    return kv_entry_decode(k, klen, buf, len, e);
}

/* A PUT event describing an entry's current value (no previous value). */
static void entry_event(const kv_entry_t *e, kv_event_t *ev) {
    memset(ev, 0, sizeof(*ev));
    ev->type = KV_EVENT_PUT;
    ev->ns = e->ns, ev->ns_len = e->ns_len;
    ev->key = e->key, ev->key_len = e->key_len;
    ev->value = e->value, ev->value_len = e->value_len;
    ev->writer = e->writer, ev->writer_len = e->writer_len;
    ev->prev_value = "";
    ev->version = e->version;
    ev->revision = e->revision;
    ev->ts_ms = e->updated_at_ms;
}

static int step_snapshot(kv_watch_t *w) {
    reel_status_t st = REEL_STATUS_INIT;
    store_iter_t *it;
    size_t base_len = w->ns_len + 1 + w->lit_len;
    int r = STEP_NEXT;

    it = store_iter_prefix(w->kv->store, w->kv->cf, w->snap, w->ekey,
                           base_len);
    if (it == NULL)
        return end_out_of_memory(w);
    if (w->snap_after != NULL)
        store_iter_seek(it, w->snap_after, w->snap_after_len);
    else
        store_iter_seek(it, w->ekey, base_len);
    for (; store_iter_valid(it); store_iter_next(it)) {
        size_t klen, vlen;
        const char *k = store_iter_key(it, &klen);
        const char *v = store_iter_value(it, &vlen);
        kv_entry_t e;
        kv_event_t ev;
        char *after;
        int drc;

        if (klen < base_len || memcmp(k, w->ekey, base_len) != 0)
            break;
        if (w->snap_after != NULL && klen == w->snap_after_len &&
            memcmp(k, w->snap_after, klen) == 0)
            continue;
        if (!w->pattern && klen != w->ekey_len)
            break; /* the key itself sorts first; the rest only share it */
        if ((drc = replay_entry_decode(k, klen, v, vlen, &e)) != 0) {
            r = end_undecodable(w, drc, "the stored record of key \"%.*s\"",
                                (int)(klen - w->ns_len - 1),
                                k + w->ns_len + 1);
            break;
        }
        if (w->pattern &&
            !reel_pattern_match(w->key, w->key_len, e.key, e.key_len)) {
            kv_entry_fini(&e);
            continue;
        }
        entry_event(&e, &ev);
        if (deliver(w, &ev) != 0) {
            kv_entry_fini(&e);
            r = STEP_FULL;
            break;
        }
        kv_entry_fini(&e);
        after = dup_bytes(k, klen);
        if (after == NULL) {
            r = end_out_of_memory(w);
            break;
        }
        free(w->snap_after);
        w->snap_after = after;
        w->snap_after_len = klen;
    }
    if (r == STEP_NEXT && store_iter_status(it, &st) != REEL_OK)
        r = end_failed(w, &st, "reading the snapshot for \"%s\"", w->key);
    store_iter_destroy(it);
    reel_status_fini(&st);
    if (r == STEP_NEXT)
        w->phase = PH_BOOT_DONE;
    return r;
}

/* 'v' ns 0 key 0 : the prefix of a key's version index. */
static char *ver_prefix(kv_watch_t *w, size_t *len) {
    char *p = malloc(w->ekey_len + 2);

    if (p == NULL)
        return NULL;
    p[0] = KV_H_VER;
    memcpy(p + 1, w->ekey, w->ekey_len);
    p[1 + w->ekey_len] = '\0';
    *len = w->ekey_len + 2;
    return p;
}

/*
 * The revision of the first version at or after x in a key's index (seek
 * holds its prefix, plen bytes), or UINT64_MAX when there is none or its
 * entry is corrupt: a walk started there says what is wrong.
 */
static uint64_t rev_at_version(store_iter_t *it, char *seek, size_t plen,
                               uint64_t x) {
    size_t klen, vlen;
    const char *k, *v;

    reel_be64_put((unsigned char *)seek + plen, x);
    store_iter_seek(it, seek, plen + 8);
    if (!store_iter_valid(it))
        return UINT64_MAX;
    k = store_iter_key(it, &klen);
    v = store_iter_value(it, &vlen);
    if (klen != plen + 8 || memcmp(k, seek, plen) != 0 || vlen != 8)
        return UINT64_MAX;
    return reel_be64_get((const unsigned char *)v);
}

/*
 * The lowest version from `from` on that may hold an event after
 * after_rev. A key's versions and their revisions grow together, so a
 * search doubling its step, then halving it, finds it in O(log n) seeks,
 * where walking from `from` read every version the watcher had seen: a
 * hot key keeps 100,000s of them with unlimited history, and each catch-up
 * of its watches would read them all.
 */
static uint64_t first_version_after(store_iter_t *it, char *seek, size_t plen,
                                    uint64_t from, uint64_t after_rev) {
    uint64_t lo = from, hi, step = 1;

    if (rev_at_version(it, seek, plen, lo) > after_rev)
        return lo;
    for (;;) { /* every version up to lo is at or before after_rev */
        hi = step > UINT64_MAX - lo ? UINT64_MAX : lo + step;
        if (rev_at_version(it, seek, plen, hi) > after_rev ||
            hi == UINT64_MAX)
            break;
        lo = hi;
        if (step < (UINT64_C(1) << 62))
            step *= 2;
    }
    while (hi - lo > 1) { /* lo is seen, hi may not be */
        uint64_t mid = lo + (hi - lo) / 2;

        if (rev_at_version(it, seek, plen, mid) > after_rev)
            hi = mid;
        else
            lo = mid;
    }
    return hi;
}

/*
 * Walks a key's version index at snap from version *next_version,
 * delivering the events with revision > after_rev. Advances *next_version
 * (and *cursor, when not NULL). With check_gap, the first version
 * found must be *next_version unless that is 1: otherwise history was
 * trimmed. A record it cannot read ends the watch.
 */
static int walk_versions(kv_watch_t *w, const store_snapshot_t *snap,
                         uint64_t *next_version, uint64_t after_rev,
                         uint64_t *cursor, int check_gap) {
    reel_status_t st = REEL_STATUS_INIT;
    size_t plen = 0;
    char *pfx = ver_prefix(w, &plen), *seek;
    store_iter_t *it;
    int r = STEP_NEXT, first = 1;

    if (pfx == NULL)
        return end_out_of_memory(w);
    seek = malloc(plen + 8);
    it = store_iter_create(w->kv->store, w->kv->cf_history, snap);
    if (seek == NULL || it == NULL) {
        free(pfx);
        free(seek);
        store_iter_destroy(it);
        return end_out_of_memory(w);
    }
    memcpy(seek, pfx, plen);
    if (after_rev > 0 && !check_gap)
        *next_version = first_version_after(it, seek, plen, *next_version,
                                            after_rev);
    reel_be64_put((unsigned char *)seek + plen, *next_version);
    for (store_iter_seek(it, seek, plen + 8); store_iter_valid(it);
         store_iter_next(it)) {
        size_t klen, vlen, evlen = 0;
        const char *k = store_iter_key(it, &klen);
        const char *v = store_iter_value(it, &vlen);
        unsigned char rk[9];
        char *evrec = NULL;
        uint64_t ver, rev;
        kv_event_t ev;
        reel_code_t rc;
        int drc;

        if (klen != plen + 8 || memcmp(k, pfx, plen) != 0)
            break;
        ver = reel_be64_get((const unsigned char *)k + plen);
        if (vlen != 8) {
            r = end_watch(w, REEL_DATA_LOSS,
                          "key \"%s\": the history index of version %llu "
                          "is corrupt",
                          w->key, (unsigned long long)ver);
            break;
        }
        rev = reel_be64_get((const unsigned char *)v);
        if (first && check_gap && *next_version > 1 && ver > *next_version) {
            r = end_watch(w, REEL_OUT_OF_RANGE,
                          "from_version: version %llu is no longer retained; "
                          "the oldest retained version is %llu",
                          (unsigned long long)*next_version,
                          (unsigned long long)ver);
            break;
        }
        first = 0;
        if (rev <= after_rev) {
            *next_version = ver + 1;
            continue;
        }
        /* The index entry and its event commit and trim together, so at
         * one snapshot an entry without its event is lost data. */
        kv_rev_key(rev, rk);
        rc = store_snapshot_get(w->kv->store, snap, w->kv->cf_history, rk,
                                sizeof(rk), &evrec, &evlen, &st);
        if (rc == REEL_NOT_FOUND) {
            r = end_watch(w, REEL_DATA_LOSS,
                          "key \"%s\": the history record of version %llu "
                          "(revision %llu) is missing",
                          w->key, (unsigned long long)ver,
                          (unsigned long long)rev);
            break;
        }
        if (rc != REEL_OK) {
            r = end_failed(w, &st,
                           "key \"%s\": reading version %llu (revision %llu)",
                           w->key, (unsigned long long)ver,
                           (unsigned long long)rev);
            break;
        }
        drc = replay_event_decode(evrec, evlen, &ev);
        free(evrec);
        if (drc != 0) {
            r = end_undecodable(w, drc,
                                "key \"%s\": the history record of version "
                                "%llu (revision %llu)",
                                w->key, (unsigned long long)ver,
                                (unsigned long long)rev);
            break;
        }
        if (deliver(w, &ev) != 0) {
            kv_event_fini(&ev);
            r = STEP_FULL;
            break;
        }
        kv_event_fini(&ev);
        *next_version = ver + 1;
        if (cursor != NULL)
            *cursor = rev;
    }
    if (r == STEP_NEXT && store_iter_status(it, &st) != REEL_OK)
        r = end_failed(w, &st, "key \"%s\": reading its history", w->key);
    /* None found: fine when the key has none, not when they were purged. */
    if (r == STEP_NEXT && first && check_gap && *next_version > 1 &&
        kv_check_none_retained(w->kv, snap, w->ekey, w->ekey_len,
                               *next_version, &st) != REEL_OK)
        r = end_watch(w, st.code, "%s", reel_status_message(&st));
    store_iter_destroy(it);
    reel_status_fini(&st);
    free(seek);
    free(pfx);
    return r;
}

static int step_versions(kv_watch_t *w) {
    int r = walk_versions(w, w->snap, &w->next_version, 0, NULL, 1);

    if (r == STEP_NEXT)
        w->phase = PH_BOOT_DONE;
    return r;
}

static int step_boot_done(kv_watch_t *w, uint64_t *cursor) {
    kv_event_t ev;

    memset(&ev, 0, sizeof(ev));
    ev.type = KV_EVENT_BOOTSTRAP_DONE;
    ev.ns = w->ns, ev.ns_len = w->ns_len;
    ev.key = w->key, ev.key_len = w->key_len;
    ev.value = ev.prev_value = ev.writer = "";
    ev.revision = w->boot_rev;
    if (deliver(w, &ev) != 0)
        return STEP_FULL;
    w->boot_sent = 1;
    if (w->boot_rev > *cursor)
        *cursor = w->boot_rev;
    if (w->snap != NULL) {
        store_snapshot_release(w->kv->store, w->snap);
        w->snap = NULL;
    }
    w->phase = PH_HISTORY;
    return STEP_NEXT;
}

/* Catches up from storage to a fresh snapshot; *cursor ends at its
 * revision. */
static int step_history(kv_watch_t *w, uint64_t *cursor) {
    reel_status_t st = REEL_STATUS_INIT;
    store_snapshot_t *snap;
    uint64_t trimmed = 0, head, next_version = 1;
    int r = STEP_NEXT;

    if (store_snapshot_create(w->kv->store, &snap, &st) != REEL_OK) {
        r = end_failed(w, &st, "watch of key \"%s\": catching up after "
                               "revision %llu",
                       w->key, (unsigned long long)*cursor);
        reel_status_fini(&st);
        return r;
    }
    /* After the snapshot: a trim it lacks is counted (a trim raises what
     * it reads before its commit), so nothing it misses goes unsaid. */
    if (trimmed_for(w, *cursor, &trimmed, &st) != REEL_OK) {
        store_snapshot_release(w->kv->store, snap);
        return end_with(w, &st);
    }
    if (w->from_oldest && *cursor >= trimmed)
        w->from_oldest = 0;
    if (*cursor < trimmed && !w->from_oldest) {
        store_snapshot_release(w->kv->store, snap);
        return end_watch(w, REEL_OUT_OF_RANGE,
                         "the watch fell behind retained history: the last "
                         "revision it received is %llu, the oldest retained "
                         "is %llu",
                         (unsigned long long)*cursor,
                         (unsigned long long)trimmed + 1);
    }
    head = store_snapshot_revision(snap);
    if (!w->pattern) {
        /* An exact key's own index: walk it from the first version the
         * watcher has not seen. */
        r = walk_versions(w, snap, &next_version, *cursor, cursor, 0);
    } else if (*cursor < head) {
        store_iter_t *it = store_iter_create(w->kv->store, w->kv->cf_history,
                                             snap);
        unsigned char rk[9];

        if (it == NULL) {
            store_snapshot_release(w->kv->store, snap);
            return end_out_of_memory(w);
        }
        kv_rev_key(*cursor + 1, rk); /* cursor < head: no wrap */
        for (store_iter_seek(it, rk, sizeof(rk)); store_iter_valid(it);
             store_iter_next(it)) {
            size_t klen, vlen;
            const char *k = store_iter_key(it, &klen);
            const char *v = store_iter_value(it, &vlen);
            kv_event_t ev;
            int drc;

            if (klen != 9 || k[0] != KV_H_REV)
                break;
            if ((drc = replay_event_decode(v, vlen, &ev)) != 0) {
                r = end_undecodable(
                    w, drc, "the history record of revision %llu",
                    (unsigned long long)reel_be64_get(
                        (const unsigned char *)k + 1));
                break;
            }
            if (watch_matches(w, &ev) && deliver(w, &ev) != 0) {
                kv_event_fini(&ev);
                r = STEP_FULL;
                break;
            }
            *cursor = ev.revision;
            kv_event_fini(&ev);
        }
        if (r == STEP_NEXT && store_iter_status(it, &st) != REEL_OK)
            r = end_failed(w, &st, "reading history after revision %llu",
                           (unsigned long long)*cursor);
        store_iter_destroy(it);
    }
    if (r == STEP_NEXT && head > *cursor)
        *cursor = head;
    store_snapshot_release(w->kv->store, snap);
    reel_status_fini(&st);
    return r;
}

/* Replays what the watch owes, phase by phase, until caught up. */
static int replay(void *arg, uint64_t *cursor, reel_status_t *why) {
    kv_watch_t *w = arg;

    w->why = why; /* where the steps' end_* helpers write */
    for (;;) {
        int r;

        switch (w->phase) {
        case PH_SNAPSHOT:
            r = step_snapshot(w);
            break;
        case PH_VERSIONS:
            r = step_versions(w);
            break;
        case PH_BOOT_DONE:
            r = step_boot_done(w, cursor);
            break;
        default:
            r = step_history(w, cursor);
            if (r == STEP_NEXT)
                return FEED_OK;
        }
        if (r == STEP_FULL)
            return FEED_FULL;
        if (r == STEP_END)
            return FEED_END;
    }
}

/*
 * Under the hub's lock, where live begins: a watch that has not said
 * BOOTSTRAP_DONE yet (FROM_REVISION) says it at the cursor, so the
 * revision it names is exactly where live delivery takes over.
 */
static int go_live(void *arg, uint64_t cursor) {
    kv_watch_t *w = arg;

    if (w->boot_sent)
        return FEED_OK;
    w->boot_rev = cursor;
    return step_boot_done(w, &cursor) == STEP_NEXT ? FEED_OK : FEED_FULL;
}

void kv_watch_pump(kv_watch_t *w) { feed_sub_pump(w->sub); }

void kv_watch_cancel(kv_watch_t *w) {
    if (w != NULL)
        feed_sub_cancel(w->sub);
}

void kv_watch_destroy(kv_watch_t *w) {
    if (w == NULL)
        return;
    feed_sub_destroy(w->sub);
    watch_free(w);
}
