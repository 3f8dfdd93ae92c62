/*
 * feed/feed.c: the replay-to-live handoff, once for every module that
 * pushes what commits.
 *
 * A subscription is in one phase at a time:
 *   REPLAY  its owner's pumps catch it up from storage (ops->replay)
 *   LIVE    the publisher hands it each item as it commits (ops->deliver)
 *   ENDED   over: end is called once, or was, or the owner cancelled it
 * `cursor` is the revision up to which it has seen everything that
 * concerns it: replay moves it to the snapshot it read, delivery to the
 * item's revision.
 *
 * The switch to LIVE
 *   The store publishes each committed group after its commit, and the
 *   publisher records the highest revision it handed out (last_published)
 *   under the hub's lock. A subscription in replay scans storage up to a
 *   fresh snapshot S and sets cursor = S; then, holding the hub's lock, it
 *   goes LIVE only if last_published <= S. Every item published before that
 *   was in storage at S (so replay sent it, or it did not concern the
 *   subscription), and every later one is published to it. Items committed
 *   but not yet published may be in S too: live delivery skips revisions
 *   <= cursor, so none is sent twice. If something newer was published
 *   meanwhile, it scans again from the cursor. go_live, when a module has
 *   it, runs inside that same critical section, so what it sends (KV's
 *   BOOTSTRAP_DONE) sits exactly where live begins.
 *
 * Failure modes
 *   - A full sink (deliver says FEED_FULL): the subscription drops back to
 *     REPLAY without taking the item, and wake asks its owner to pump it
 *     (its send queue's drain usually does as well). It then catches up
 *     from storage after the last item it took. A stalled reader therefore
 *     costs one bounded sink and no work per commit.
 *   - An item publish could not make (feed_publish_lost): every LIVE
 *     subscription that has not seen its revision drops back to replay and
 *     is woken; replay reads the item from storage or ends naming it.
 *     Nothing is skipped in silence.
 *   - An end (replay's FEED_END with a status, deliver's FEED_END when a
 *     subscription is complete, or a kick from outside): nothing more is
 *     delivered, the subscription leaves the registry, and end is called
 *     once, outside every feed lock, on the pumping or publishing thread.
 *   - Cancel: nothing more is delivered and end is not called; destroy
 *     cancels, waits for a pump or an end running on another thread, and
 *     frees. End may cancel or destroy its own subscription (a finished
 *     call frees its state on the spot): a reference held across the end,
 *     and the ending thread's identity, make that safe.
 *
 * Who calls what
 *   - Publish (the store's writer, one thread): feed_publish_begin() takes
 *     the hub's lock; feed_publish() and feed_publish_lost() run under it
 *     and call match (hub lock only), deliver (hub and subscription locks),
 *     deliver_group (hub lock only) and wake (both); feed_publish_end()
 *     records last_published, releases the lock and runs the ends that
 *     deliveries asked for.
 *   - Pump (any thread, serialised per subscription): replay with the
 *     subscription's lock held, go_live with both locks, end with none. A
 *     replay that yields (a long scan, in parts) gets the next part from
 *     another pump, asked for through wake, so the pumping thread and the
 *     subscription's lock (which a PROGRESS tick reads the cursor under)
 *     are let go between parts.
 *   - Cancel, kick and destroy: any thread, never inside an operation but
 *     end (cancel and destroy only).
 *
 * Locks: the hub's lock (registry, last_published, publish's scratch)
 * before a subscription's lock, before whatever the operations take (a
 * call's lock in api/). A subscription leaves LIVE only with the hub's
 * lock held (publish, cancel, kick), so under it a LIVE subscription
 * cannot change: publish checks each of a group's subscriptions, delivers
 * once, then updates each. Destroy waits on the hub's wait_mu/wait_cv
 * (taken before a subscription's lock, never while holding it), which
 * saves each subscription a condition variable.
 */
#include "feed/feed.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include <uthash.h>

enum { PH_REPLAY, PH_LIVE, PH_ENDED };

typedef struct bucket {
    UT_hash_handle hh;
    feed_sub_t *head;
    int indexed; /* in the hub's index, not its keys */
    size_t klen;
    char key[];
} bucket_t;

struct feed_hub {
    pthread_mutex_t mu;
    uint64_t last_published;
    bucket_t *keys;     /* uthash: key -> its subscriptions */
    bucket_t *index;    /* uthash: index key -> subscriptions of any key */
    feed_sub_t *any;    /* subscriptions of any key, not indexed */
    feed_sub_t *ending; /* deliveries that completed, ended at publish end */
    size_t n_linked;    /* subscriptions registered (linked) now */
    /* Publish's scratch for a group's subscriptions due one item. */
    feed_sub_t **run;
    void **run_args;
    size_t run_cap;
    /* Destroy waits here for a pump or an end on another thread. */
    pthread_mutex_t wait_mu;
    pthread_cond_t wait_cv;
};

struct feed_sub {
    feed_hub_t *hub;
    const feed_ops_t *ops;
    void *arg;
    void *group;

    pthread_mutex_t mu;
    atomic_int live; /* phase == PH_LIVE, readable without mu */
    int phase;
    int refs; /* the owner's, and one across each end call */
    unsigned cancelled : 1, pumping : 1, end_claimed : 1, ending : 1,
        waited : 1, indexed : 1;
    uint64_t cursor;
    reel_status_t why;    /* ENDED, end not yet claimed: what end says */
    pthread_t end_thread; /* while ending */
    feed_sub_t *end_next; /* on the hub's ending list */

    /* Registry links, under the hub's lock. Linked: in a bucket, or first
     * or after another on the any list (no flag: it would cost a word). */
    bucket_t *bucket;
    feed_sub_t *prev, *next;
};

/* ---- The registry (hub lock held) ---------------------------------------- */

static int sub_link(feed_hub_t *h, feed_sub_t *s, const void *key,
                    size_t klen, const void *index, size_t ilen) {
    feed_sub_t **head;

    if (key == NULL && index == NULL) {
        head = &h->any;
    } else {
        int indexed = key == NULL;
        bucket_t *b, **table = indexed ? &h->index : &h->keys;

        if (indexed)
            key = index, klen = ilen;
        HASH_FIND(hh, *table, key, klen, b);
        if (b == NULL) {
            b = calloc(1, sizeof(*b) + (klen ? klen : 1));
            if (b == NULL)
                return -1;
            memcpy(b->key, key, klen);
            b->klen = klen;
            b->indexed = indexed;
            HASH_ADD_KEYPTR(hh, *table, b->key, b->klen, b);
        }
        s->indexed = indexed;
        s->bucket = b;
        head = &b->head;
    }
    /* At the head: a group created one after another stays adjacent. */
    s->prev = NULL;
    s->next = *head;
    if (*head)
        (*head)->prev = s;
    *head = s;
    h->n_linked++;
    return 0;
}

/* Idempotent. */
static void sub_unlink(feed_hub_t *h, feed_sub_t *s) {
    feed_sub_t **head;

    if (s->bucket == NULL && s->prev == NULL && h->any != s)
        return; /* not linked */
    head = s->bucket != NULL ? &s->bucket->head : &h->any;
    if (s->prev)
        s->prev->next = s->next;
    else
        *head = s->next;
    if (s->next)
        s->next->prev = s->prev;
    if (s->bucket != NULL && s->bucket->head == NULL) {
        if (s->bucket->indexed)
            HASH_DEL(h->index, s->bucket);
        else
            HASH_DEL(h->keys, s->bucket);
        free(s->bucket);
    }
    s->bucket = NULL;
    s->prev = s->next = NULL;
    h->n_linked--;
}

/* ---- Hubs ---------------------------------------------------------------- */

reel_code_t feed_hub_create(uint64_t last_published, feed_hub_t **out,
                            reel_status_t *st) {
    feed_hub_t *h = calloc(1, sizeof(*h));

    *out = NULL;
    if (h == NULL)
        return reel_status_set(st, REEL_RESOURCE_EXHAUSTED,
                               "out of memory creating a subscription hub");
    h->last_published = last_published;
    pthread_mutex_init(&h->mu, NULL);
    pthread_mutex_init(&h->wait_mu, NULL);
    pthread_cond_init(&h->wait_cv, NULL);
    *out = h;
    return REEL_OK;
}

void feed_hub_destroy(feed_hub_t *h) {
    bucket_t *b, *tmp;

    if (h == NULL)
        return;
    HASH_ITER(hh, h->keys, b, tmp) {
        HASH_DEL(h->keys, b);
        free(b);
    }
    HASH_ITER(hh, h->index, b, tmp) {
        HASH_DEL(h->index, b);
        free(b);
    }
    free(h->run);
    free(h->run_args);
    pthread_mutex_destroy(&h->mu);
    pthread_mutex_destroy(&h->wait_mu);
    pthread_cond_destroy(&h->wait_cv);
    free(h);
}

uint64_t feed_hub_last_published(feed_hub_t *h) {
    uint64_t v;

    pthread_mutex_lock(&h->mu);
    v = h->last_published;
    pthread_mutex_unlock(&h->mu);
    return v;
}

size_t feed_hub_subs(feed_hub_t *h) {
    size_t n;

    pthread_mutex_lock(&h->mu);
    n = h->n_linked;
    pthread_mutex_unlock(&h->mu);
    return n;
}

int feed_hub_idle(const feed_hub_t *h) {
    return h->keys == NULL && h->index == NULL && h->any == NULL;
}

/* ---- Ending and freeing -------------------------------------------------- */

static void sub_free(feed_sub_t *s) {
    pthread_mutex_destroy(&s->mu);
    reel_status_fini(&s->why);
    free(s);
}

static void wake_waiters(feed_hub_t *h) {
    pthread_mutex_lock(&h->wait_mu);
    pthread_cond_broadcast(&h->wait_cv);
    pthread_mutex_unlock(&h->wait_mu);
}

/* s->mu held: end is now this thread's to call; a reference keeps s while
 * end runs, even if end destroys it. */
static void end_claim_locked(feed_sub_t *s) {
    s->phase = PH_ENDED;
    atomic_store(&s->live, 0);
    s->end_claimed = 1;
    s->ending = 1;
    s->end_thread = pthread_self();
    s->refs++;
}

/* After end returned: lets a destroyer on another thread go on, and drops
 * end's reference. s may be freed on return. */
static void end_done(feed_sub_t *s) {
    feed_hub_t *h = s->hub;
    int notify, left;

    pthread_mutex_lock(&s->mu);
    s->ending = 0;
    notify = s->waited;
    left = --s->refs;
    pthread_mutex_unlock(&s->mu);
    if (notify)
        wake_waiters(h);
    if (left == 0)
        sub_free(s);
}

/* ---- Publishing ---------------------------------------------------------- */

/*
 * s->mu held: full at the item of rev, or that item lost: back to replay,
 * and its owner asked to pump (a sink that refused with nothing queued
 * has no drain coming). An indexed subscription was offered every item
 * before rev that could concern it, and the rest concern it not: its
 * cursor moves to rev - 1, as if it had declined them (a WAL filter's
 * replay would otherwise start from the last event it matched, and end
 * OUT_OF_RANGE once the events after it were trimmed, though it needed
 * none of them).
 */
static void drop_locked(feed_sub_t *s, uint64_t rev) {
    if (s->indexed && rev - 1 > s->cursor)
        s->cursor = rev - 1;
    s->phase = PH_REPLAY;
    atomic_store(&s->live, 0);
    if (s->ops->wake != NULL)
        s->ops->wake(s->arg);
}

static int concerns(const feed_sub_t *s, const void *item) {
    return s->ops->match == NULL || s->ops->match(s->arg, item);
}

/* Hub lock held: the writer thread's push to one subscription. */
static void deliver_live(feed_hub_t *h, feed_sub_t *s, uint64_t rev,
                         void *item) {
    if (!atomic_load(&s->live))
        return;
    pthread_mutex_lock(&s->mu);
    if (s->phase == PH_LIVE && !s->cancelled && rev > s->cursor) {
        int r = s->ops->deliver(s->arg, item);

        if (r == FEED_OK) {
            s->cursor = rev;
        } else if (r == FEED_FULL) {
            drop_locked(s, rev);
        } else {
            /* Complete: it ends (OK) once the hub's lock is released. */
            s->cursor = rev;
            end_claim_locked(s);
            s->end_next = h->ending;
            h->ending = s;
        }
    }
    pthread_mutex_unlock(&s->mu);
}

/* Hub lock held. A LIVE subscription stays as it is until the lock is
 * released, so what is due here is still due after deliver_group. */
static int live_due(feed_sub_t *s, uint64_t rev) {
    int due;

    if (!atomic_load(&s->live))
        return 0;
    pthread_mutex_lock(&s->mu);
    due = s->phase == PH_LIVE && !s->cancelled && rev > s->cursor;
    pthread_mutex_unlock(&s->mu);
    return due;
}

static int run_reserve(feed_hub_t *h, size_t n) {
    feed_sub_t **r;
    void **a;
    size_t cap = h->run_cap ? h->run_cap : 16;

    if (n <= h->run_cap)
        return 0;
    while (cap < n)
        cap *= 2;
    if ((r = realloc(h->run, cap * sizeof(*r))) == NULL)
        return -1;
    h->run = r;
    if ((a = realloc(h->run_args, cap * sizeof(*a))) == NULL)
        return -1;
    h->run_args = a;
    h->run_cap = cap;
    return 0;
}

/*
 * Hub lock held: hands item to the subscriptions of list s that it
 * concerns (every one when !any), each adjacent run of one group's
 * subscriptions in one deliver_group() call.
 */
static void publish_list(feed_hub_t *h, feed_sub_t *s, uint64_t rev, void *item,
                         int any) {
    while (s != NULL) {
        void *g = s->group;
        size_t n = 0;
        int r;

        if (g == NULL || s->ops->deliver_group == NULL) {
            if (!any || concerns(s, item))
                deliver_live(h, s, rev, item);
            s = s->next;
            continue;
        }
        for (; s != NULL && s->group == g; s = s->next) {
            if ((any && !concerns(s, item)) || !live_due(s, rev))
                continue;
            if (run_reserve(h, n + 1) != 0) {
                deliver_live(h, s, rev, item); /* out of memory: alone */
                continue;
            }
            h->run[n] = s;
            h->run_args[n++] = s->arg;
        }
        if (n == 0)
            continue;
        r = h->run[0]->ops->deliver_group(h->run_args, n, item);
        for (size_t i = 0; i < n; i++) {
            feed_sub_t *x = h->run[i];

            pthread_mutex_lock(&x->mu);
            if (r == FEED_OK)
                x->cursor = rev;
            else
                drop_locked(x, rev);
            pthread_mutex_unlock(&x->mu);
        }
    }
}

void feed_publish_begin(feed_hub_t *h) { pthread_mutex_lock(&h->mu); }

void feed_publish_indexed(feed_hub_t *h, const void *key, size_t key_len,
                          const feed_index_t *index, size_t n_index,
                          uint64_t revision, void *item) {
    bucket_t *b;

    if (key != NULL && h->keys != NULL) {
        HASH_FIND(hh, h->keys, key, key_len, b);
        if (b != NULL)
            publish_list(h, b->head, revision, item, 0);
    }
    for (size_t i = 0; i < n_index && h->index != NULL; i++) {
        HASH_FIND(hh, h->index, index[i].key, index[i].len, b);
        if (b != NULL)
            publish_list(h, b->head, revision, item, 1);
    }
    if (h->any != NULL)
        publish_list(h, h->any, revision, item, 1);
}

void feed_publish(feed_hub_t *h, const void *key, size_t key_len,
                  uint64_t revision, void *item) {
    feed_publish_indexed(h, key, key_len, NULL, 0, revision, item);
}

static void lose_list(feed_sub_t *s, uint64_t rev) {
    for (; s != NULL; s = s->next) {
        if (!atomic_load(&s->live))
            continue;
        pthread_mutex_lock(&s->mu);
        if (s->phase == PH_LIVE && !s->cancelled && rev > s->cursor)
            drop_locked(s, rev);
        pthread_mutex_unlock(&s->mu);
    }
}

void feed_publish_lost(feed_hub_t *h, uint64_t revision) {
    bucket_t *b, *tmp;

    HASH_ITER(hh, h->keys, b, tmp) { lose_list(b->head, revision); }
    HASH_ITER(hh, h->index, b, tmp) { lose_list(b->head, revision); }
    lose_list(h->any, revision);
}

void feed_publish_end(feed_hub_t *h, uint64_t last_revision) {
    feed_sub_t *ending = h->ending;

    if (last_revision > h->last_published)
        h->last_published = last_revision;
    h->ending = NULL;
    for (feed_sub_t *s = ending; s != NULL; s = s->end_next)
        sub_unlink(h, s);
    pthread_mutex_unlock(&h->mu);

    /* Outside every lock: an end may finish a call, which may free it and
     * destroy the subscription on the spot (our reference keeps it). */
    while (ending != NULL) {
        feed_sub_t *s = ending;
        reel_status_t ok = REEL_STATUS_INIT;

        ending = s->end_next;
        s->ops->end(s->arg, &ok);
        end_done(s);
    }
}

/* ---- Subscriptions ------------------------------------------------------- */

reel_code_t feed_sub_create(feed_hub_t *h, const feed_sub_args_t *a,
                            feed_sub_t **out, reel_status_t *st) {
    feed_sub_t *s = calloc(1, sizeof(*s));
    int rc;

    *out = NULL;
    if (s == NULL)
        return reel_status_set(st, REEL_RESOURCE_EXHAUSTED,
                               "out of memory creating a subscription");
    s->hub = h;
    s->ops = a->ops;
    s->arg = a->arg;
    s->group = a->group;
    s->cursor = a->cursor;
    s->phase = PH_REPLAY;
    s->refs = 1;
    pthread_mutex_init(&s->mu, NULL);
    pthread_mutex_lock(&h->mu);
    rc = sub_link(h, s, a->key, a->key_len, a->index, a->index_len);
    pthread_mutex_unlock(&h->mu);
    if (rc != 0) {
        sub_free(s);
        return reel_status_set(st, REEL_RESOURCE_EXHAUSTED,
                               "out of memory creating a subscription");
    }
    *out = s;
    return REEL_OK;
}

void feed_sub_pump(feed_sub_t *s) {
    feed_hub_t *h = s->hub;
    reel_status_t why = REEL_STATUS_INIT;
    int end = 0, notify;

    pthread_mutex_lock(&s->mu);
    if (s->pumping || s->cancelled || s->end_claimed || s->phase == PH_LIVE) {
        pthread_mutex_unlock(&s->mu);
        return;
    }
    s->pumping = 1;
    while (!s->cancelled && s->phase == PH_REPLAY) {
        int r = s->ops->replay(s->arg, &s->cursor, &why);

        if (r == FEED_FULL)
            break;
        if (r == FEED_YIELD) {
            if (s->ops->wake == NULL)
                continue;
            /* Asked with our lock held and pumping still set: the pump it
             * asks for takes the lock after ours ends, and finds pumping
             * clear. */
            s->ops->wake(s->arg);
            break;
        }
        if (r != FEED_OK) {
            s->phase = PH_ENDED;
            atomic_store(&s->live, 0);
            reel_status_move(&s->why, &why);
            break;
        }
        /* Caught up to a snapshot: live if nothing newer was published.
         * The hub's lock comes first, so drop and retake ours. */
        pthread_mutex_unlock(&s->mu);
        pthread_mutex_lock(&h->mu);
        pthread_mutex_lock(&s->mu);
        if (!s->cancelled && s->phase == PH_REPLAY &&
            h->last_published <= s->cursor) {
            if (s->ops->go_live != NULL)
                r = s->ops->go_live(s->arg, s->cursor);
            if (r == FEED_OK) {
                s->phase = PH_LIVE;
                atomic_store(&s->live, 1);
            }
        }
        pthread_mutex_unlock(&h->mu);
        if (r != FEED_OK)
            break; /* go_live found the sink full */
    }
    if (s->phase == PH_ENDED && !s->cancelled && !s->end_claimed) {
        end_claim_locked(s);
        reel_status_move(&why, &s->why);
        end = 1;
    }
    s->pumping = 0;
    notify = s->waited;
    pthread_mutex_unlock(&s->mu);
    if (notify)
        wake_waiters(h);
    if (end) {
        pthread_mutex_lock(&h->mu);
        sub_unlink(h, s);
        pthread_mutex_unlock(&h->mu);
        s->ops->end(s->arg, &why);
        end_done(s);
    }
    reel_status_fini(&why);
}

void feed_sub_cancel(feed_sub_t *s) {
    feed_hub_t *h;

    if (s == NULL)
        return;
    h = s->hub;
    pthread_mutex_lock(&h->mu);
    sub_unlink(h, s);
    pthread_mutex_lock(&s->mu);
    s->cancelled = 1;
    atomic_store(&s->live, 0);
    pthread_mutex_unlock(&s->mu);
    pthread_mutex_unlock(&h->mu);
}

void feed_sub_kick(feed_sub_t *s, reel_code_t code, const char *msg) {
    feed_hub_t *h = s->hub;

    pthread_mutex_lock(&h->mu);
    pthread_mutex_lock(&s->mu);
    if (!s->cancelled && s->phase != PH_ENDED) {
        s->phase = PH_ENDED;
        atomic_store(&s->live, 0);
        reel_status_set(&s->why, code, "%s", msg);
        sub_unlink(h, s);
        if (s->ops->wake != NULL)
            s->ops->wake(s->arg);
    }
    pthread_mutex_unlock(&s->mu);
    pthread_mutex_unlock(&h->mu);
}

int feed_sub_live(feed_sub_t *s) { return atomic_load(&s->live); }

uint64_t feed_sub_cursor(feed_sub_t *s) {
    feed_hub_t *h = s->hub;
    uint64_t c;

    /* A live indexed subscription was offered everything published that
     * could concern it: the rest concern it not (drop_locked). */
    pthread_mutex_lock(&h->mu);
    pthread_mutex_lock(&s->mu);
    c = s->cursor;
    if (s->indexed && s->phase == PH_LIVE && h->last_published > c)
        c = h->last_published;
    pthread_mutex_unlock(&s->mu);
    pthread_mutex_unlock(&h->mu);
    return c;
}

int feed_sub_cursor_try(feed_sub_t *s, uint64_t *out) {
    feed_hub_t *h = s->hub;

    pthread_mutex_lock(&h->mu);
    if (pthread_mutex_trylock(&s->mu) != 0) {
        pthread_mutex_unlock(&h->mu);
        return -1;
    }
    *out = s->cursor;
    if (s->indexed && s->phase == PH_LIVE && h->last_published > *out)
        *out = h->last_published;
    pthread_mutex_unlock(&s->mu);
    pthread_mutex_unlock(&h->mu);
    return 0;
}

void feed_sub_destroy(feed_sub_t *s) {
    feed_hub_t *h;
    int left;

    if (s == NULL)
        return;
    h = s->hub;
    feed_sub_cancel(s);
    /* A pump or an end on another thread may still use s (and its arg):
     * wait for it. An end on this thread is our caller. */
    pthread_mutex_lock(&h->wait_mu);
    for (;;) {
        int busy;

        pthread_mutex_lock(&s->mu);
        busy = s->pumping ||
               (s->ending && !pthread_equal(s->end_thread, pthread_self()));
        if (busy)
            s->waited = 1;
        pthread_mutex_unlock(&s->mu);
        if (!busy)
            break;
        pthread_cond_wait(&h->wait_cv, &h->wait_mu);
    }
    pthread_mutex_unlock(&h->wait_mu);
    pthread_mutex_lock(&s->mu);
    left = --s->refs;
    pthread_mutex_unlock(&s->mu);
    if (left == 0)
        sub_free(s);
}
