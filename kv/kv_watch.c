/*
 * kv/kv_watch.c: push watches, fed by the publish step, backed by storage.
 *
 * A watch is in one phase at a time:
 *   SNAPSHOT   sending the matching live keys as of a store snapshot S
 *   VERSIONS   sending a key's retained versions after from_version (at S)
 *   BOOT_DONE  sending BOOTSTRAP_DONE(S)
 *   HISTORY    catching up from kv_history after `cursor`
 *   LIVE       receiving events from kv_publish() as they commit
 *   ENDED      done (fell behind retained history, or could not read it)
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
 * A replay never skips what it cannot read: a corrupt or missing record
 * ends the watch with DATA_LOSS, a failed read or snapshot with its own
 * code (INTERNAL), out of memory with RESOURCE_EXHAUSTED, each naming the
 * key, version or revision. Only a full sink waits for a drain.
 *
 * Cursors given by the client are checked at creation: FROM_REVISION past
 * the head is INVALID_ARGUMENT (it would wait, silent, for revisions that
 * do not exist yet); FROM_VERSION past the current version replays nothing
 * and goes live, UINT64_MAX included. Every cursor + 1 is guarded.
 *
 * Locks: hub_mu (registry, last_published) before a watch's mu. deliver()
 * is called with the watch's mu held (and hub_mu, from publish);
 * deliver_group() with hub_mu only.
 */
#include "kv/kv_int.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uthash.h>

#include "base/codec.h"
#include "base/fault.h"
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
    if (c->module != KV_MODULE_ID || c->type != KV_CHANGE_EVENT)
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

        if (c->module != KV_MODULE_ID || c->type != KV_CHANGE_EVENT)
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
    rc = store_get(w->kv->store, w->kv->cf, w->ekey, w->ekey_len, &val,
                   &vlen, st);
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

/* The watch cannot go on: the pump hands end_status to the sink's end. */
static int end_watch(kv_watch_t *w, reel_code_t code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int end_watch(kv_watch_t *w, reel_code_t code, const char *fmt, ...) {
    va_list ap;

    va_start(ap, fmt);
    reel_status_setv(&w->end_status, code, fmt, ap);
    va_end(ap);
    w->phase = PH_ENDED;
    atomic_store(&w->live, 0);
    return STEP_END;
}

/* The same, with a status already made (moved from st). */
static int end_with(kv_watch_t *w, reel_status_t *st) {
    reel_status_move(&w->end_status, st);
    w->phase = PH_ENDED;
    atomic_store(&w->live, 0);
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

    it = store_iter_create(w->kv->store, w->kv->cf, w->snap);
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
 * Walks a key's version index at snap from version *next_version,
 * delivering the events with revision > after_rev. Advances *next_version
 * (and the cursor when track_cursor). With check_gap, the first version
 * found must be *next_version unless that is 1: otherwise history was
 * trimmed. A record it cannot read ends the watch.
 */
static int walk_versions(kv_watch_t *w, const store_snapshot_t *snap,
                         uint64_t *next_version, uint64_t after_rev,
                         int track_cursor, int check_gap) {
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
        if (track_cursor)
            w->cursor = rev;
    }
    if (r == STEP_NEXT && store_iter_status(it, &st) != REEL_OK)
        r = end_failed(w, &st, "key \"%s\": reading its history", w->key);
    store_iter_destroy(it);
    reel_status_fini(&st);
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
    reel_status_t st = REEL_STATUS_INIT;
    store_snapshot_t *snap;
    uint64_t trimmed = 0, head, next_version = 1;
    int r = STEP_NEXT;

    if (trimmed_for(w, &trimmed, &st) != REEL_OK)
        return end_with(w, &st);
    if (w->cursor < trimmed)
        return end_watch(w, REEL_OUT_OF_RANGE,
                         "the watch fell behind retained history: the last "
                         "revision it received is %llu, the oldest retained "
                         "is %llu",
                         (unsigned long long)w->cursor,
                         (unsigned long long)trimmed + 1);
    if (store_snapshot_create(w->kv->store, &snap, &st) != REEL_OK) {
        r = end_failed(w, &st, "watch of key \"%s\": catching up after "
                               "revision %llu",
                       w->key, (unsigned long long)w->cursor);
        reel_status_fini(&st);
        return r;
    }
    head = store_snapshot_revision(snap);
    if (!w->pattern) {
        /* An exact key's own index is short: walk it, skipping what the
         * watcher has seen. */
        r = walk_versions(w, snap, &next_version, w->cursor, 1, 0);
    } else if (w->cursor < head) {
        store_iter_t *it = store_iter_create(w->kv->store, w->kv->cf_history,
                                             snap);
        unsigned char rk[9];

        if (it == NULL) {
            store_snapshot_release(w->kv->store, snap);
            return end_out_of_memory(w);
        }
        kv_rev_key(w->cursor + 1, rk); /* cursor < head: no wrap */
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
            w->cursor = ev.revision;
            kv_event_fini(&ev);
        }
        if (r == STEP_NEXT && store_iter_status(it, &st) != REEL_OK)
            r = end_failed(w, &st, "reading history after revision %llu",
                           (unsigned long long)w->cursor);
        store_iter_destroy(it);
    }
    if (r == STEP_NEXT && head > w->cursor)
        w->cursor = head;
    store_snapshot_release(w->kv->store, snap);
    reel_status_fini(&st);
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
