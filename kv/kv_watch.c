/*
 * kv/kv_watch.c: push watches, fed by the publish step, backed by storage.
 *
 * A watch is in one phase at a time:
 *   SNAPSHOT   sending the matching live keys as of a store snapshot S
 *   VERSIONS   sending a key's retained versions after from_version (at S)
 *   BOOT_DONE  sending BOOTSTRAP_DONE(S)
 *   HISTORY    catching up from kv_history after `cursor`
 *   LIVE       receiving events from kv_publish() as they commit
 *   ENDED      done (fell behind retained history)
 * Every phase but LIVE is driven by kv_watch_pump(); LIVE is driven by the
 * writer thread. `cursor` is the revision up to which the watcher has seen
 * everything that matches it.
 *
 * The switch to LIVE is the delicate part. kv_publish() runs after each
 * commit and records the highest revision it handled (last_published) under
 * hub_mu. A catching-up watch scans storage up to a fresh snapshot S and
 * sets cursor = S; then, holding hub_mu, it goes LIVE only if
 * last_published <= cursor: every change already published was in storage
 * at S (so it was sent, or did not match), and every later one will be
 * published to it. Changes committed but not yet published may be in S too;
 * LIVE delivery skips revisions <= cursor, so none is sent twice.
 *
 * Watches of one group (kv_watch_args_t.group) are linked next to each
 * other when created together; publish hands an event to all of a group's
 * adjacent LIVE watches in one deliver_group() call, so a stream of many
 * watches on one key carries the event once. A grouped watch that is not
 * LIVE (catching up) or not adjacent simply gets its own deliver().
 *
 * When the sink is full, a LIVE watch drops back to HISTORY without taking
 * the event; its owner pumps it when the sink drains, and it catches up from
 * storage. A stalled watcher therefore costs one bounded sink and no work
 * per write. If the history it needs was trimmed, it ends with OUT_OF_RANGE
 * naming the last revision it received.
 *
 * Locks: hub_mu (registry, last_published) before a watch's mu. deliver()
 * is called with the watch's mu held (and hub_mu, from publish);
 * deliver_group() with hub_mu only.
 */
#include "kv/kv_int.h"

#include <stdlib.h>
#include <string.h>

#include <uthash.h>

#include "base/codec.h"
#include "base/pattern.h"

enum { PH_SNAPSHOT, PH_VERSIONS, PH_BOOT_DONE, PH_HISTORY, PH_LIVE, PH_ENDED };

/* Step results. */
enum { STEP_NEXT, STEP_FULL, STEP_END };

struct kv_bucket {
    UT_hash_handle hh;
    kv_watch_t *head;
    size_t klen;
    char key[]; /* ns 0 key */
};

struct kv_watch {
    kv_t *kv;
    char *ns, *key, *ekey; /* ekey = ns 0 key */
    size_t ns_len, key_len, ekey_len;
    int pattern;
    size_t lit_len; /* the pattern's literal prefix */
    kv_watch_sink_t sink;
    void *arg;
    void *group;

    pthread_mutex_t mu;
    pthread_cond_t cv;
    atomic_int live;
    int dead, pumping, phase, boot_sent;
    uint64_t cursor;
    uint64_t boot_rev;
    store_snapshot_t *snap;
    char *snap_after; /* last key sent in SNAPSHOT (encoded), or NULL */
    size_t snap_after_len;
    uint64_t next_version;
    reel_status_t end_status;

    /* Hub links, under hub_mu. */
    int linked;
    kv_bucket_t *bucket;
    kv_watch_t *prev, *next;
};

/* ---- The hub ------------------------------------------------------------- */

void kv_hub_init(kv_t *kv) { pthread_mutex_init(&kv->hub_mu, NULL); }

void kv_hub_fini(kv_t *kv) {
    kv_bucket_t *b, *tmp;

    HASH_ITER(hh, kv->exact, b, tmp) {
        HASH_DEL(kv->exact, b);
        free(b);
    }
    free(kv->run);
    free(kv->run_args);
    pthread_mutex_destroy(&kv->hub_mu);
}

/* Call with hub_mu held. */
static int hub_link(kv_t *kv, kv_watch_t *w) {
    kv_watch_t **head;

    if (w->pattern) {
        head = &kv->patterns;
    } else {
        kv_bucket_t *b;

        HASH_FIND(hh, kv->exact, w->ekey, w->ekey_len, b);
        if (b == NULL) {
            b = calloc(1, sizeof(*b) + w->ekey_len);
            if (b == NULL)
                return -1;
            memcpy(b->key, w->ekey, w->ekey_len);
            b->klen = w->ekey_len;
            HASH_ADD_KEYPTR(hh, kv->exact, b->key, b->klen, b);
        }
        w->bucket = b;
        head = &b->head;
    }
    w->prev = NULL;
    w->next = *head;
    if (*head)
        (*head)->prev = w;
    *head = w;
    w->linked = 1;
    return 0;
}

/* Call with hub_mu held. Idempotent. */
static void hub_unlink(kv_t *kv, kv_watch_t *w) {
    kv_watch_t **head;

    if (!w->linked)
        return;
    head = w->pattern ? &kv->patterns : &w->bucket->head;
    if (w->prev)
        w->prev->next = w->next;
    else
        *head = w->next;
    if (w->next)
        w->next->prev = w->prev;
    if (!w->pattern && w->bucket->head == NULL) {
        HASH_DEL(kv->exact, w->bucket);
        free(w->bucket);
    }
    w->bucket = NULL;
    w->prev = w->next = NULL;
    w->linked = 0;
}

static int watch_matches(const kv_watch_t *w, const kv_event_t *ev) {
    if (ev->ns_len != w->ns_len || memcmp(ev->ns, w->ns, w->ns_len) != 0)
        return 0;
    if (!w->pattern)
        return ev->key_len == w->key_len &&
               memcmp(ev->key, w->key, w->key_len) == 0;
    return reel_pattern_match(w->key, w->key_len, ev->key, ev->key_len);
}

/* Call with hub_mu held: the writer thread's push to one watch. */
static void deliver_live(kv_watch_t *w, kv_event_t *ev) {
    if (!atomic_load(&w->live))
        return;
    pthread_mutex_lock(&w->mu);
    if (w->phase == PH_LIVE && !w->dead && ev->revision > w->cursor) {
        if (w->sink.deliver(w->arg, ev) == 0) {
            w->cursor = ev->revision;
        } else {
            /* Full: stop pushing; the owner pumps us from storage later. */
            atomic_store(&w->live, 0);
            w->phase = PH_HISTORY;
        }
    }
    pthread_mutex_unlock(&w->mu);
}

/*
 * Call with hub_mu held. While it is held a LIVE watch cannot change:
 * only publish moves it out of LIVE, and cancel needs hub_mu. So the
 * watches found due here are still due when their group's sink has taken
 * the event, and each is updated after it.
 */
static int live_due(kv_watch_t *w, const kv_event_t *ev) {
    int due;

    if (!atomic_load(&w->live))
        return 0;
    pthread_mutex_lock(&w->mu);
    due = w->phase == PH_LIVE && !w->dead && ev->revision > w->cursor;
    pthread_mutex_unlock(&w->mu);
    return due;
}

static int run_reserve(kv_t *kv, size_t n) {
    kv_watch_t **r;
    void **a;
    size_t cap = kv->run_cap ? kv->run_cap : 16;

    if (n <= kv->run_cap)
        return 0;
    while (cap < n)
        cap *= 2;
    if ((r = realloc(kv->run, cap * sizeof(*r))) == NULL)
        return -1;
    kv->run = r;
    if ((a = realloc(kv->run_args, cap * sizeof(*a))) == NULL)
        return -1;
    kv->run_args = a;
    kv->run_cap = cap;
    return 0;
}

/*
 * Call with hub_mu held: delivers ev to the watches of list w that match
 * it (all of them when !patterns), each adjacent run of one group's
 * watches in one deliver_group() call.
 */
static void publish_list(kv_t *kv, kv_watch_t *w, kv_event_t *ev,
                         int patterns) {
    while (w != NULL) {
        void *g = w->group;
        size_t n = 0;
        int full;

        if (g == NULL || w->sink.deliver_group == NULL) {
            if (!patterns || watch_matches(w, ev))
                deliver_live(w, ev);
            w = w->next;
            continue;
        }
        for (; w != NULL && w->group == g; w = w->next) {
            if ((patterns && !watch_matches(w, ev)) || !live_due(w, ev))
                continue;
            if (run_reserve(kv, n + 1) != 0) {
                deliver_live(w, ev); /* out of memory: this one alone */
                continue;
            }
            kv->run[n] = w;
            kv->run_args[n++] = w->arg;
        }
        if (n == 0)
            continue;
        full = kv->run[0]->sink.deliver_group(kv->run_args, n, ev) != 0;
        for (size_t i = 0; i < n; i++) {
            kv_watch_t *x = kv->run[i];

            pthread_mutex_lock(&x->mu);
            if (!full) {
                x->cursor = ev->revision;
            } else {
                atomic_store(&x->live, 0);
                x->phase = PH_HISTORY;
            }
            pthread_mutex_unlock(&x->mu);
        }
    }
}

int kv_change_decode(const store_change_t *c, kv_event_t *ev) {
    if (c->module != STORE_MODULE_KV || c->type != KV_CHANGE_EVENT)
        return 0;
    return kv_event_decode(c->event, c->len, ev) == 0 ? 1 : -1;
}

void kv_publish(kv_t *kv, const store_change_t *changes, size_t n) {
    pthread_mutex_lock(&kv->hub_mu);
    for (size_t i = 0; i < n; i++) {
        const store_change_t *c = &changes[i];
        kv_bucket_t *b = NULL;
        kv_event_t ev;
        char *ek;
        size_t eklen;

        if (c->module != STORE_MODULE_KV || c->type != KV_CHANGE_EVENT)
            continue;
        if (kv->exact == NULL && kv->patterns == NULL)
            continue;
        if (kv_event_decode(c->event, c->len, &ev) != 0)
            continue;
        eklen = kv_key_encode(ev.ns, ev.ns_len, ev.key, ev.key_len, &ek);
        if (ek != NULL) {
            HASH_FIND(hh, kv->exact, ek, eklen, b);
            free(ek);
        }
        if (b != NULL)
            publish_list(kv, b->head, &ev, 0);
        publish_list(kv, kv->patterns, &ev, 1);
        kv_event_fini(&ev);
    }
    if (n > 0 && changes[n - 1].revision > kv->last_published)
        kv->last_published = changes[n - 1].revision;
    pthread_mutex_unlock(&kv->hub_mu);
}

/* ---- Creating ------------------------------------------------------------ */

/* The highest trimmed revision that could hide a change this watch needs. */
static reel_code_t trimmed_for(kv_watch_t *w, uint64_t *trimmed,
                               reel_status_t *st) {
    char *val = NULL;
    size_t vlen = 0;
    reel_code_t rc;

    if (w->pattern) {
        *trimmed = atomic_load(&w->kv->compacted);
        return REEL_OK;
    }
    *trimmed = 0;
    rc = store_get(w->kv->store, STORE_CF_KV, w->ekey, w->ekey_len, &val,
                   &vlen, st);
    if (rc == REEL_NOT_FOUND) {
        reel_status_fini(st);
        return REEL_OK;
    }
    if (rc == REEL_OK && kv_entry_trimmed(val, vlen, trimmed) != 0)
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
    reel_status_fini(&w->end_status);
    pthread_mutex_destroy(&w->mu);
    pthread_cond_destroy(&w->cv);
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
    uint64_t trimmed = 0;
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
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->cv, NULL);
    w->kv = kv;
    w->sink = *sink;
    w->arg = sink_arg;
    w->group = a->group;
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
        pthread_mutex_lock(&kv->hub_mu);
        w->cursor = w->boot_rev = kv->last_published;
        pthread_mutex_unlock(&kv->hub_mu);
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
        w->next_version = a->from_version + 1;
        w->phase = PH_VERSIONS;
        break;
    case KV_WATCH_FROM_REVISION:
        if ((rc = trimmed_for(w, &trimmed, st)) != REEL_OK)
            goto fail;
        if (a->from_revision < trimmed) {
            rc = reel_status_set(st, REEL_OUT_OF_RANGE,
                                 "from_revision: revision %llu is no longer "
                                 "retained%s; the oldest retained revision "
                                 "is %llu",
                                 (unsigned long long)a->from_revision,
                                 w->pattern ? "" : " for this key",
                                 (unsigned long long)trimmed + 1);
            goto fail;
        }
        w->cursor = a->from_revision;
        w->phase = PH_HISTORY;
        break;
    }
    pthread_mutex_lock(&kv->hub_mu);
    rc = hub_link(kv, w) == 0 ? REEL_OK : REEL_RESOURCE_EXHAUSTED;
    pthread_mutex_unlock(&kv->hub_mu);
    if (rc != REEL_OK) {
        reel_status_set(st, rc, "out of memory");
        goto fail;
    }
    *out = w;
    return REEL_OK;
fail:
    watch_free(w);
    return rc;
}

/* ---- Pumping (w->mu held throughout, except where noted) ----------------- */

static int deliver(kv_watch_t *w, kv_event_t *ev) {
    return w->sink.deliver(w->arg, ev);
}

static int end_watch(kv_watch_t *w, reel_code_t code, const char *fmt,
                     unsigned long long a, unsigned long long b) {
    reel_status_set(&w->end_status, code, fmt, a, b);
    w->phase = PH_ENDED;
    atomic_store(&w->live, 0);
    return STEP_END;
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
    store_iter_t *it;
    size_t base_len = w->ns_len + 1 + w->lit_len;
    int r = STEP_NEXT;

    it = store_iter_create(w->kv->store, STORE_CF_KV, w->snap);
    if (it == NULL)
        return STEP_FULL; /* out of memory: retry on the next pump */
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

        if (klen < base_len || memcmp(k, w->ekey, base_len) != 0)
            break;
        if (w->snap_after != NULL && klen == w->snap_after_len &&
            memcmp(k, w->snap_after, klen) == 0)
            continue;
        if (!w->pattern && klen != w->ekey_len)
            break; /* the key itself sorts first; the rest only share it */
        if (kv_entry_decode(k, klen, v, vlen, &e) != 0)
            continue;
        if (e.deleted || (w->pattern && !reel_pattern_match(w->key, w->key_len,
                                                            e.key, e.key_len))) {
            kv_entry_fini(&e);
            continue;
        }
        entry_event(&e, &ev);
        if (deliver(w, &ev) != 0) {
            free(ev.wire);
            kv_entry_fini(&e);
            r = STEP_FULL;
            break;
        }
        free(ev.wire);
        kv_entry_fini(&e);
        after = dup_bytes(k, klen);
        if (after == NULL) {
            r = STEP_FULL;
            break;
        }
        free(w->snap_after);
        w->snap_after = after;
        w->snap_after_len = klen;
    }
    store_iter_destroy(it);
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
 * Walks a key's version index at snap from version `from`, delivering the
 * events with revision > after_rev. Advances *next_version (and the cursor
 * when track_cursor). The first version found must be `from` unless
 * from == 1 or skip_gap_check: otherwise history was trimmed.
 */
static int walk_versions(kv_watch_t *w, const store_snapshot_t *snap,
                         uint64_t *next_version, uint64_t after_rev,
                         int track_cursor, int check_gap) {
    size_t plen = 0;
    char *pfx = ver_prefix(w, &plen), *seek;
    store_iter_t *it;
    int r = STEP_NEXT, first = 1;

    if (pfx == NULL)
        return STEP_FULL;
    seek = malloc(plen + 8);
    it = store_iter_create(w->kv->store, STORE_CF_KV_HISTORY, snap);
    if (seek == NULL || it == NULL) {
        free(pfx);
        free(seek);
        store_iter_destroy(it);
        return STEP_FULL;
    }
    memcpy(seek, pfx, plen);
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

        if (klen != plen + 8 || memcmp(k, pfx, plen) != 0 || vlen != 8)
            break;
        ver = reel_be64_get((const unsigned char *)k + plen);
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
        kv_rev_key(rev, rk);
        if (store_snapshot_get(w->kv->store, snap, STORE_CF_KV_HISTORY, rk,
                               sizeof(rk), &evrec, &evlen, NULL) != REEL_OK ||
            kv_event_decode(evrec, evlen, &ev) != 0) {
            free(evrec);
            *next_version = ver + 1;
            continue;
        }
        free(evrec);
        if (deliver(w, &ev) != 0) {
            kv_event_fini(&ev);
            r = STEP_FULL;
            break;
        }
        kv_event_fini(&ev);
        *next_version = ver + 1;
        if (track_cursor)
            w->cursor = rev;
    }
    store_iter_destroy(it);
    free(seek);
    free(pfx);
    return r;
}

static int step_versions(kv_watch_t *w) {
    int r = walk_versions(w, w->snap, &w->next_version, 0, 0, 1);

    if (r == STEP_NEXT)
        w->phase = PH_BOOT_DONE;
    return r;
}

static int step_boot_done(kv_watch_t *w) {
    kv_event_t ev;

    memset(&ev, 0, sizeof(ev));
    ev.type = KV_EVENT_BOOTSTRAP_DONE;
    ev.ns = w->ns, ev.ns_len = w->ns_len;
    ev.key = w->key, ev.key_len = w->key_len;
    ev.value = ev.prev_value = ev.writer = "";
    ev.revision = w->boot_rev;
    if (deliver(w, &ev) != 0) {
        free(ev.wire);
        return STEP_FULL;
    }
    free(ev.wire);
    w->boot_sent = 1;
    if (w->boot_rev > w->cursor)
        w->cursor = w->boot_rev;
    if (w->snap != NULL) {
        store_snapshot_release(w->kv->store, w->snap);
        w->snap = NULL;
    }
    w->phase = PH_HISTORY;
    return STEP_NEXT;
}

/* Catches up from storage to a fresh snapshot; cursor ends at its revision. */
static int step_history(kv_watch_t *w) {
    store_snapshot_t *snap;
    uint64_t trimmed = 0, head, next_version = 1;
    int r = STEP_NEXT;

    if (trimmed_for(w, &trimmed, NULL) == REEL_OK && w->cursor < trimmed)
        return end_watch(w, REEL_OUT_OF_RANGE,
                         "the watch fell behind retained history: the last "
                         "revision it received is %llu, the oldest retained "
                         "is %llu",
                         (unsigned long long)w->cursor,
                         (unsigned long long)trimmed + 1);
    if (store_snapshot_create(w->kv->store, &snap, &w->end_status) !=
        REEL_OK) {
        w->phase = PH_ENDED;
        atomic_store(&w->live, 0);
        return STEP_END;
    }
    head = store_snapshot_revision(snap);
    if (!w->pattern) {
        /* An exact key's own index is short: walk it, skipping what the
         * watcher has seen. */
        r = walk_versions(w, snap, &next_version, w->cursor, 1, 0);
    } else {
        store_iter_t *it = store_iter_create(w->kv->store, STORE_CF_KV_HISTORY,
                                             snap);
        unsigned char rk[9];

        if (it == NULL) {
            store_snapshot_release(w->kv->store, snap);
            return STEP_FULL;
        }
        kv_rev_key(w->cursor + 1, rk);
        for (store_iter_seek(it, rk, sizeof(rk)); store_iter_valid(it);
             store_iter_next(it)) {
            size_t klen, vlen;
            const char *k = store_iter_key(it, &klen);
            const char *v = store_iter_value(it, &vlen);
            kv_event_t ev;

            if (klen != 9 || k[0] != KV_H_REV)
                break;
            if (kv_event_decode(v, vlen, &ev) != 0)
                continue;
            if (watch_matches(w, &ev) && deliver(w, &ev) != 0) {
                kv_event_fini(&ev);
                r = STEP_FULL;
                break;
            }
            w->cursor = ev.revision;
            kv_event_fini(&ev);
        }
        store_iter_destroy(it);
    }
    if (r == STEP_NEXT && head > w->cursor)
        w->cursor = head;
    store_snapshot_release(w->kv->store, snap);
    return r;
}

/*
 * Goes LIVE if nothing was published past the cursor. Drops and retakes
 * w->mu to take hub_mu first. STEP_END here means "live" (stop pumping),
 * STEP_NEXT "scan again", STEP_FULL "sink full".
 */
static int try_go_live(kv_watch_t *w) {
    kv_t *kv = w->kv;
    int r = STEP_NEXT;

    pthread_mutex_unlock(&w->mu);
    pthread_mutex_lock(&kv->hub_mu);
    pthread_mutex_lock(&w->mu);
    if (w->dead) {
        r = STEP_END;
    } else if (kv->last_published <= w->cursor) {
        if (!w->boot_sent) {
            w->boot_rev = w->cursor;
            r = step_boot_done(w); /* phase becomes HISTORY on success */
        }
        if (r == STEP_NEXT) {
            w->phase = PH_LIVE;
            atomic_store(&w->live, 1);
            r = STEP_END;
        }
    }
    pthread_mutex_unlock(&kv->hub_mu);
    return r;
}

void kv_watch_pump(kv_watch_t *w) {
    reel_status_t why = REEL_STATUS_INIT;
    int r = STEP_NEXT;

    pthread_mutex_lock(&w->mu);
    if (w->dead || w->pumping || w->phase == PH_LIVE || w->phase == PH_ENDED) {
        pthread_mutex_unlock(&w->mu);
        return;
    }
    w->pumping = 1;
    while (r == STEP_NEXT && !w->dead) {
        switch (w->phase) {
        case PH_SNAPSHOT:
            r = step_snapshot(w);
            break;
        case PH_VERSIONS:
            r = step_versions(w);
            break;
        case PH_BOOT_DONE:
            r = step_boot_done(w);
            break;
        case PH_HISTORY:
            r = step_history(w);
            if (r == STEP_NEXT)
                r = try_go_live(w);
            break;
        default:
            r = STEP_END;
        }
    }
    if (w->phase == PH_ENDED && !w->dead)
        reel_status_move(&why, &w->end_status);
    w->pumping = 0;
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);

    if (why.code != REEL_OK) {
        pthread_mutex_lock(&w->kv->hub_mu);
        hub_unlink(w->kv, w);
        pthread_mutex_unlock(&w->kv->hub_mu);
        w->sink.end(w->arg, &why);
        reel_status_fini(&why);
    }
}

void kv_watch_cancel(kv_watch_t *w) {
    if (w == NULL)
        return;
    pthread_mutex_lock(&w->kv->hub_mu);
    hub_unlink(w->kv, w);
    pthread_mutex_lock(&w->mu);
    w->dead = 1;
    atomic_store(&w->live, 0);
    pthread_mutex_unlock(&w->mu);
    pthread_mutex_unlock(&w->kv->hub_mu);
}

void kv_watch_destroy(kv_watch_t *w) {
    if (w == NULL)
        return;
    kv_watch_cancel(w);
    pthread_mutex_lock(&w->mu);
    while (w->pumping)
        pthread_cond_wait(&w->cv, &w->mu);
    pthread_mutex_unlock(&w->mu);
    watch_free(w);
}
