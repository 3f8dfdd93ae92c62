/*
 * feed/feed_test.c: the replay-to-live handoff, tested with a fake module.
 *
 * The fake module's storage is a log of items (revision -> key) under a
 * mutex; its publisher appends an item (the commit), then publishes it,
 * as the store's writer does. A subscription follows one key, or any key
 * whose parity its match accepts. Its sink records revisions and holds at
 * most `limit` of them before saying it is full; a test empties it as a
 * reader would. Its owner pumps when woken (owner_pump_woken), as the RPC
 * layer does.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "feed/feed.h"

#define LOG_MAX 1000000
#define ANY_ODD (-1) /* a subscription of any key whose key is odd */
#define ENDS_IN_3 (-3) /* of any key ending in 3, indexed under 3 */

typedef struct fake {
    pthread_mutex_t mu; /* the log */
    uint64_t head;
    int keys[LOG_MAX + 1];
    uint64_t broken; /* replay cannot read this revision (0: none) */
    const feed_ops_t *ops; /* NULL: ops */
    feed_hub_t *hub;
} fake_t;

typedef struct item {
    uint64_t rev;
    int key;
} item_t;

typedef struct sub {
    fake_t *f;
    feed_sub_t *fs;
    int key;
    void *group;

    pthread_mutex_t mu; /* the sink */
    uint64_t *recs;
    size_t n, cap, limit, held;
    uint64_t complete_at; /* deliver says FEED_END at this revision */
    int refuse_once;      /* the next deliver fails with nothing held */
    int go_live_full;     /* go_live says FEED_FULL this many times */
    int commit_in_replay; /* replay commits one item of this key + 1 after
                             reading its snapshot, once */
    size_t part;          /* replay reads at most this many, then yields */
    int replays;          /* replay calls */
    int cursor_busy;      /* feed_sub_cursor_try in replay said busy */
    int go_lives;
    uint64_t go_live_cursor;
    atomic_int wakes, woken;
    atomic_int ends;
    reel_status_t end;
    int destroy_in_end;
    atomic_int destroyed; /* feed_sub_destroy returned */
    atomic_int matches;   /* match calls */
    int index;            /* ENDS_IN_3's index key */
} sub_t;

/* ---- The fake module ----------------------------------------------------- */

static int concerns(const sub_t *s, int key) {
    if (s->key == ENDS_IN_3)
        return key % 10 == 3;
    return s->key == ANY_ODD ? key % 2 != 0 : key == s->key;
}

/* The sink: 0 taken, 1 full. */
static int sink_take(sub_t *s, uint64_t rev) {
    int r = 0;

    pthread_mutex_lock(&s->mu);
    if (s->refuse_once) {
        s->refuse_once = 0;
        r = 1;
    } else if (s->held >= s->limit) {
        r = 1;
    } else {
        if (s->n == s->cap) {
            s->cap = s->cap ? 2 * s->cap : 1024;
            s->recs = realloc(s->recs, s->cap * sizeof(*s->recs));
            assert_non_null(s->recs);
        }
        s->recs[s->n++] = rev;
        s->held++;
    }
    pthread_mutex_unlock(&s->mu);
    return r;
}

static uint64_t commit(fake_t *f, int key);

static int op_replay(void *arg, uint64_t *cursor, reel_status_t *why) {
    sub_t *s = arg;
    uint64_t head, broken, start = *cursor;

    pthread_mutex_lock(&s->f->mu);
    head = s->f->head;
    broken = s->f->broken;
    pthread_mutex_unlock(&s->f->mu);
    if (s->commit_in_replay) {
        /* Commits and publishes past the snapshot, while this one is
         * still replaying: publish must not pass it by. */
        int key = s->commit_in_replay - 1;

        s->commit_in_replay = 0;
        commit(s->f, key);
    }
    s->replays++;
    if (s->part != 0 && s->fs != NULL) {
        uint64_t c;

        s->cursor_busy += feed_sub_cursor_try(s->fs, &c) != 0;
    }
    for (uint64_t rev = *cursor + 1; rev <= head; rev++) {
        int key;

        if (s->part != 0 && rev - start > s->part)
            return FEED_YIELD;
        if (rev == broken) {
            reel_status_set(why, REEL_DATA_LOSS, "item %llu is corrupt",
                            (unsigned long long)rev);
            return FEED_END;
        }
        pthread_mutex_lock(&s->f->mu);
        key = s->f->keys[rev];
        pthread_mutex_unlock(&s->f->mu);
        if (concerns(s, key) && sink_take(s, rev) != 0)
            return FEED_FULL;
        *cursor = rev;
    }
    if (head > *cursor)
        *cursor = head;
    return FEED_OK;
}

static int op_go_live(void *arg, uint64_t cursor) {
    sub_t *s = arg;

    s->go_lives++;
    s->go_live_cursor = cursor;
    if (s->go_live_full > 0) {
        s->go_live_full--;
        return FEED_FULL;
    }
    return FEED_OK;
}

static int op_match(void *arg, const void *item) {
    sub_t *s = arg;

    atomic_fetch_add(&s->matches, 1);
    return concerns(s, ((const item_t *)item)->key);
}

static int op_deliver(void *arg, void *item) {
    sub_t *s = arg;
    item_t *it = item;

    if (s->complete_at != 0 && it->rev == s->complete_at)
        return FEED_END;
    return sink_take(s, it->rev) == 0 ? FEED_OK : FEED_FULL;
}

typedef struct group {
    int full;
    int calls;
    size_t subs;
} group_t;

static int op_deliver_group(void *const *args, size_t n, void *item) {
    group_t *g = ((sub_t *)args[0])->group;

    if (g->full)
        return FEED_FULL;
    g->calls++;
    g->subs += n;
    for (size_t i = 0; i < n; i++) {
        sub_t *s = args[i];

        assert_ptr_equal(s->group, g);
        assert_int_equal(sink_take(s, ((item_t *)item)->rev), 0);
    }
    return FEED_OK;
}

static void op_end(void *arg, const reel_status_t *st) {
    sub_t *s = arg;

    assert_int_equal(atomic_load(&s->destroyed), 0);
    assert_int_equal(atomic_fetch_add(&s->ends, 1), 0);
    reel_status_copy(&s->end, st);
    if (s->destroy_in_end) {
        feed_sub_destroy(s->fs);
        s->fs = NULL;
        atomic_store(&s->destroyed, 1);
    }
}

static void op_wake(void *arg) {
    sub_t *s = arg;

    atomic_fetch_add(&s->wakes, 1);
    atomic_store(&s->woken, 1);
}

static const feed_ops_t ops = {
    .replay = op_replay,
    .go_live = op_go_live,
    .match = op_match,
    .deliver = op_deliver,
    .deliver_group = op_deliver_group,
    .end = op_end,
    .wake = op_wake,
};

/* The commit alone: in storage, not yet published. */
static item_t commit_only(fake_t *f, int key) {
    item_t it;

    pthread_mutex_lock(&f->mu);
    assert_true(f->head < LOG_MAX);
    it.rev = ++f->head;
    it.key = key;
    f->keys[it.rev] = key;
    pthread_mutex_unlock(&f->mu);
    return it;
}

/* Every item is published under its key and indexed by its last digit. */
static void publish(fake_t *f, item_t *it) {
    int digit = it->key % 10;
    feed_index_t idx = {&digit, sizeof(digit)};

    feed_publish_begin(f->hub);
    if (!feed_hub_idle(f->hub))
        feed_publish_indexed(f->hub, &it->key, sizeof(it->key), &idx, 1,
                             it->rev, it);
    feed_publish_end(f->hub, it->rev);
}

/* Commits one item of key, then publishes it (the store's writer). */
static uint64_t commit(fake_t *f, int key) {
    item_t it = commit_only(f, key);

    publish(f, &it);
    return it.rev;
}

/* Commits an item that publish cannot make. */
static uint64_t commit_lost(fake_t *f, int key) {
    uint64_t rev;

    pthread_mutex_lock(&f->mu);
    rev = ++f->head;
    f->keys[rev] = key;
    pthread_mutex_unlock(&f->mu);
    feed_publish_begin(f->hub);
    feed_publish_lost(f->hub, rev);
    feed_publish_end(f->hub, rev);
    return rev;
}

static sub_t *sub_new(fake_t *f, int key, size_t limit, uint64_t cursor,
                      void *group) {
    sub_t *s = calloc(1, sizeof(*s));
    feed_sub_args_t a = {0};

    assert_non_null(s);
    s->f = f;
    s->key = key;
    s->limit = limit;
    s->group = group;
    pthread_mutex_init(&s->mu, NULL);
    a.ops = f->ops != NULL ? f->ops : &ops;
    a.arg = s;
    if (key == ENDS_IN_3) {
        s->index = 3;
        a.index = &s->index;
        a.index_len = sizeof(s->index);
    } else if (key != ANY_ODD) {
        a.key = &s->key;
        a.key_len = sizeof(s->key);
    }
    a.group = group;
    a.cursor = cursor;
    assert_int_equal(feed_sub_create(f->hub, &a, &s->fs, NULL), REEL_OK);
    return s;
}

static void sub_destroy(sub_t *s) {
    feed_sub_destroy(s->fs);
    s->fs = NULL;
    atomic_store(&s->destroyed, 1);
}

static void sub_free(sub_t *s) {
    if (s == NULL)
        return;
    if (!atomic_load(&s->destroyed))
        sub_destroy(s);
    reel_status_fini(&s->end);
    pthread_mutex_destroy(&s->mu);
    free(s->recs);
    free(s);
}

/* The reader took everything the sink held. */
static void sink_drain(sub_t *s, size_t limit) {
    pthread_mutex_lock(&s->mu);
    s->held = 0;
    s->limit = limit;
    pthread_mutex_unlock(&s->mu);
}

/* What the RPC layer does on a wake: pump, once per wake. */
static int owner_pump_woken(sub_t *s) {
    if (!atomic_exchange(&s->woken, 0))
        return 0;
    feed_sub_pump(s->fs);
    return 1;
}

static size_t sub_count(sub_t *s) {
    size_t n;

    pthread_mutex_lock(&s->mu);
    n = s->n;
    pthread_mutex_unlock(&s->mu);
    return n;
}

/* Every revision after `after` up to `head` that concerns s, once, in
 * order: nothing missed, nothing twice. */
static void assert_exactly_once(fake_t *f, sub_t *s, uint64_t after,
                                uint64_t head) {
    size_t i = 0;

    for (uint64_t rev = after + 1; rev <= head; rev++) {
        if (!concerns(s, f->keys[rev]))
            continue;
        if (i >= s->n)
            fail_msg("revision %llu never arrived (%zu taken)",
                     (unsigned long long)rev, s->n);
        if (s->recs[i] != rev)
            fail_msg("taken #%zu is revision %llu, expected %llu", i,
                     (unsigned long long)s->recs[i], (unsigned long long)rev);
        i++;
    }
    assert_int_equal(i, s->n);
}

/* ---- Fixture ------------------------------------------------------------- */

static int setup(void **state) {
    fake_t *f = calloc(1, sizeof(*f));

    if (f == NULL)
        return -1;
    pthread_mutex_init(&f->mu, NULL);
    if (feed_hub_create(0, &f->hub, NULL) != REEL_OK)
        return -1;
    *state = f;
    return 0;
}

static int teardown(void **state) {
    fake_t *f = *state;

    feed_hub_destroy(f->hub);
    pthread_mutex_destroy(&f->mu);
    free(f);
    return 0;
}

/* ---- Tests --------------------------------------------------------------- */

typedef struct publisher {
    fake_t *f;
    int rounds, keys;
    atomic_int stop;
} publisher_t;

static void *publisher_main(void *arg) {
    publisher_t *p = arg;

    for (int i = 0; i < p->rounds && !atomic_load(&p->stop); i++)
        commit(p->f, i % p->keys);
    return NULL;
}

static void
test_replay_to_live_has_no_gap_or_duplicate_while_publishing(void **state) {
    fake_t *f = *state;
    publisher_t p = {f, 20000, 4, 0};
    enum { N = 24 };
    sub_t *subs[N];
    uint64_t from[N];
    pthread_t th;

    for (int i = 0; i < 100; i++)
        commit(f, i % 4);
    assert_int_equal(pthread_create(&th, NULL, publisher_main, &p), 0);
    /* Subscriptions join while the publisher runs, each from a cursor
     * behind the head, so each switches from replay to live under load. */
    for (int i = 0; i < N; i++) {
        int key = i % 3 == 2 ? ANY_ODD : i % 4;

        pthread_mutex_lock(&f->mu);
        from[i] = f->head / 2;
        pthread_mutex_unlock(&f->mu);
        subs[i] = sub_new(f, key, SIZE_MAX, from[i], NULL);
        feed_sub_pump(subs[i]->fs);
        for (int k = 0; k < 200; k++)
            sched_yield();
    }
    pthread_join(th, NULL);
    for (int i = 0; i < N; i++) {
        assert_true(feed_sub_live(subs[i]->fs));
        assert_int_equal(feed_sub_cursor(subs[i]->fs) >= from[i], 1);
        assert_exactly_once(f, subs[i], from[i], f->head);
        assert_int_equal(subs[i]->wakes, 0);
        sub_free(subs[i]);
    }
}

static void
test_what_is_published_during_a_replay_is_not_passed_by(void **state) {
    fake_t *f = *state;
    sub_t *s;

    for (int i = 0; i < 4; i++)
        commit(f, 0);
    s = sub_new(f, 0, SIZE_MAX, 1, NULL);
    s->commit_in_replay = 0 + 1;
    feed_sub_pump(s->fs);
    /* Its snapshot ended at 4; 5 was published before it could go live,
     * so it scanned again instead of going live past it. */
    assert_true(feed_sub_live(s->fs));
    assert_int_equal(s->go_live_cursor, 5);
    commit(f, 0);
    assert_exactly_once(f, s, 1, 6);
    sub_free(s);
}

static void
test_what_replay_read_before_its_publish_is_not_sent_twice(void **state) {
    fake_t *f = *state;
    sub_t *s;
    item_t pending;

    commit(f, 0);
    pending = commit_only(f, 0); /* committed; its publish is on the way */
    s = sub_new(f, 0, SIZE_MAX, 0, NULL);
    feed_sub_pump(s->fs);
    assert_true(feed_sub_live(s->fs)); /* read 2, published only 1 */
    publish(f, &pending);
    commit(f, 0);
    assert_exactly_once(f, s, 0, 3);
    sub_free(s);
}

static void test_go_live_runs_where_live_begins_and_may_be_full(void **state) {
    fake_t *f = *state;
    sub_t *s;

    for (int i = 0; i < 10; i++)
        commit(f, 0);
    s = sub_new(f, 0, SIZE_MAX, 3, NULL);
    s->go_live_full = 1;
    feed_sub_pump(s->fs);
    /* Caught up, but go_live's sink was full: still in replay. */
    assert_false(feed_sub_live(s->fs));
    assert_int_equal(s->go_lives, 1);
    commit(f, 0);
    assert_int_equal(sub_count(s), 7); /* 4..10: the 11th was not live */
    feed_sub_pump(s->fs);
    assert_true(feed_sub_live(s->fs));
    assert_int_equal(s->go_lives, 2);
    assert_int_equal(s->go_live_cursor, 11);
    commit(f, 0);
    assert_exactly_once(f, s, 3, 12);
    sub_free(s);
}

static void test_a_full_sink_drops_to_replay_and_catches_up(void **state) {
    fake_t *f = *state;
    sub_t *s = sub_new(f, 1, 5, 0, NULL);

    feed_sub_pump(s->fs);
    assert_true(feed_sub_live(s->fs));
    for (int i = 0; i < 80; i++)
        commit(f, i % 2);
    /* Held at 5: the publisher went on without it, and woke its owner. */
    assert_int_equal(sub_count(s), 5);
    assert_false(feed_sub_live(s->fs));
    assert_int_equal(s->wakes, 1);
    /* A pump while it is still full takes nothing and stays in replay. */
    owner_pump_woken(s);
    assert_int_equal(sub_count(s), 5);
    while (!feed_sub_live(s->fs)) {
        size_t before = sub_count(s);

        sink_drain(s, 5);
        feed_sub_pump(s->fs);
        assert_true(sub_count(s) > before);
    }
    sink_drain(s, SIZE_MAX);
    commit(f, 1);
    assert_exactly_once(f, s, 0, f->head);
    assert_int_equal(sub_count(s), 41);
    sub_free(s);
}

static void
test_a_refused_item_with_nothing_held_is_retried_on_wake(void **state) {
    fake_t *f = *state;
    sub_t *s = sub_new(f, 0, SIZE_MAX, 0, NULL);

    feed_sub_pump(s->fs);
    /* The sink refuses with nothing queued (out of memory, say): no drain
     * will ever come, so only the wake gets it going again. */
    s->refuse_once = 1;
    commit(f, 0);
    assert_int_equal(sub_count(s), 0);
    assert_false(feed_sub_live(s->fs));
    assert_true(owner_pump_woken(s));
    assert_true(feed_sub_live(s->fs));
    commit(f, 0);
    assert_exactly_once(f, s, 0, 2);
    sub_free(s);
}

/* A replay that yields lets go of the pumping thread: the owner is woken
 * for each further part, the cursor stands where the part ended, and the
 * parts together deliver everything once. */
static void test_a_replay_in_parts_asks_for_each_next_part(void **state) {
    fake_t *f = *state;
    sub_t *s;
    uint64_t last = 0;
    int pumps = 0;

    for (int i = 0; i < 100; i++)
        commit(f, i % 2);
    s = sub_new(f, 1, SIZE_MAX, 0, NULL);
    s->part = 30;
    feed_sub_pump(s->fs);
    assert_false(feed_sub_live(s->fs));
    assert_int_equal(s->replays, 1);
    assert_int_equal(s->wakes, 1);
    assert_int_equal(feed_sub_cursor(s->fs), 30);
    assert_int_equal(sub_count(s), 15);
    /* The pump held it: a reader that must not wait was told so. */
    assert_int_equal(s->cursor_busy, 1);
    while (owner_pump_woken(s)) {
        uint64_t c = feed_sub_cursor(s->fs);

        assert_true(c > last);
        last = c;
        pumps++;
    }
    /* 30 + 30 + 30, then the last 10 and the switch to live. */
    assert_int_equal(pumps, 3);
    assert_true(feed_sub_live(s->fs));
    assert_int_equal(s->wakes, 3);
    commit(f, 1);
    assert_exactly_once(f, s, 0, f->head);
    sub_free(s);
}

/* A module with no wake gets every part in the same pump. */
static void test_a_replay_in_parts_without_a_wake_goes_on(void **state) {
    fake_t *f = *state;
    feed_ops_t no_wake = ops;
    sub_t *s;

    no_wake.wake = NULL;
    f->ops = &no_wake;
    for (int i = 0; i < 100; i++)
        commit(f, i % 2);
    s = sub_new(f, 1, SIZE_MAX, 0, NULL);
    s->part = 30;
    feed_sub_pump(s->fs);
    assert_true(feed_sub_live(s->fs));
    assert_int_equal(s->replays, 4);
    assert_exactly_once(f, s, 0, f->head);
    sub_free(s);
    f->ops = NULL;
}

static void test_a_lost_item_is_read_from_storage(void **state) {
    fake_t *f = *state;
    sub_t *odd = sub_new(f, ANY_ODD, SIZE_MAX, 0, NULL);
    sub_t *two = sub_new(f, 2, SIZE_MAX, 0, NULL);
    sub_t *three = sub_new(f, 3, SIZE_MAX, 0, NULL);

    feed_sub_pump(odd->fs);
    feed_sub_pump(two->fs);
    feed_sub_pump(three->fs);
    commit(f, 3);
    commit_lost(f, 3);
    /* Nobody can tell whom it concerns: every live one drops and is woken,
     * and each catches up from storage. */
    assert_int_equal(sub_count(three), 1);
    assert_int_equal(odd->wakes + two->wakes + three->wakes, 3);
    commit(f, 3); /* not live: waits for the pump */
    assert_int_equal(sub_count(three), 1);
    assert_true(owner_pump_woken(odd));
    assert_true(owner_pump_woken(two));
    assert_true(owner_pump_woken(three));
    commit(f, 2);
    assert_exactly_once(f, odd, 0, f->head);
    assert_exactly_once(f, two, 0, f->head);
    assert_exactly_once(f, three, 0, f->head);
    assert_int_equal(sub_count(three), 3);
    sub_free(odd);
    sub_free(two);
    sub_free(three);
}

static void test_a_failed_replay_ends_once_naming_what_it_met(void **state) {
    fake_t *f = *state;
    sub_t *s;

    for (int i = 0; i < 5; i++)
        commit(f, 0);
    f->broken = 3;
    s = sub_new(f, 0, SIZE_MAX, 0, NULL);
    feed_sub_pump(s->fs);
    assert_int_equal(s->ends, 1);
    assert_int_equal(s->end.code, REEL_DATA_LOSS);
    assert_string_equal(reel_status_message(&s->end), "item 3 is corrupt");
    assert_int_equal(sub_count(s), 2);
    /* Over: no delivery, no second end. */
    feed_sub_pump(s->fs);
    commit(f, 0);
    assert_int_equal(s->ends, 1);
    assert_int_equal(sub_count(s), 2);
    sub_free(s);
}

static void
test_a_complete_delivery_ends_once_with_ok_after_publish(void **state) {
    fake_t *f = *state;
    sub_t *a = sub_new(f, 0, SIZE_MAX, 0, NULL);
    sub_t *b = sub_new(f, 0, SIZE_MAX, 0, NULL);

    a->complete_at = 3;
    b->complete_at = 3;
    b->destroy_in_end = 1; /* a finished call frees its state on the spot */
    feed_sub_pump(a->fs);
    feed_sub_pump(b->fs);
    commit(f, 0);
    commit(f, 0);
    commit(f, 0);
    assert_int_equal(a->ends, 1);
    assert_int_equal(a->end.code, REEL_OK);
    assert_int_equal(b->ends, 1);
    assert_true(atomic_load(&b->destroyed));
    commit(f, 0);
    feed_sub_pump(a->fs);
    assert_int_equal(a->ends, 1);
    assert_int_equal(sub_count(a), 2);
    assert_int_equal(sub_count(b), 2);
    sub_free(a);
    sub_free(b);
}

static void test_a_kick_ends_at_the_next_pump_once(void **state) {
    fake_t *f = *state;
    sub_t *s = sub_new(f, 0, SIZE_MAX, 0, NULL);
    sub_t *d = sub_new(f, 0, SIZE_MAX, 0, NULL);

    d->destroy_in_end = 1;
    feed_sub_pump(s->fs);
    feed_sub_pump(d->fs);
    commit(f, 0);
    feed_sub_kick(s->fs, REEL_ABORTED, "taken over");
    feed_sub_kick(d->fs, REEL_ABORTED, "taken over");
    assert_int_equal(s->wakes, 1);
    commit(f, 0); /* nothing more is delivered */
    assert_int_equal(sub_count(s), 1);
    assert_int_equal(s->ends, 0);
    feed_sub_kick(s->fs, REEL_FAILED_PRECONDITION, "invalidated"); /* ignored */
    assert_int_equal(s->wakes, 1);
    assert_true(owner_pump_woken(s));
    assert_true(owner_pump_woken(d));
    assert_int_equal(s->ends, 1);
    assert_int_equal(s->end.code, REEL_ABORTED);
    assert_string_equal(reel_status_message(&s->end), "taken over");
    assert_int_equal(d->ends, 1);
    assert_true(atomic_load(&d->destroyed));
    feed_sub_pump(s->fs);
    assert_int_equal(s->ends, 1);
    sub_free(s);
    sub_free(d);
}

static void
test_a_cancelled_subscription_gets_nothing_and_no_end(void **state) {
    fake_t *f = *state;
    sub_t *s = sub_new(f, 0, SIZE_MAX, 0, NULL);

    feed_sub_pump(s->fs);
    commit(f, 0);
    feed_sub_cancel(s->fs);
    feed_sub_cancel(s->fs);
    commit(f, 0);
    feed_sub_kick(s->fs, REEL_ABORTED, "too late");
    feed_sub_pump(s->fs);
    assert_int_equal(sub_count(s), 1);
    assert_int_equal(s->ends, 0);
    assert_int_equal(s->wakes, 0);
    sub_free(s);
}

static void test_the_hub_counts_registered_subscriptions(void **state) {
    fake_t *f = *state;
    sub_t *a = sub_new(f, 0, SIZE_MAX, 0, NULL);
    sub_t *b = sub_new(f, 1, SIZE_MAX, 0, NULL);
    sub_t *c = sub_new(f, ANY_ODD, SIZE_MAX, 0, NULL);

    assert_int_equal(feed_hub_subs(f->hub), 3);
    feed_sub_pump(a->fs);
    commit(f, 0);
    /* Ended (kicked, then pumped): no longer counted. */
    feed_sub_kick(a->fs, REEL_ABORTED, "taken over");
    assert_true(owner_pump_woken(a));
    assert_int_equal(feed_hub_subs(f->hub), 2);
    feed_sub_cancel(b->fs);
    feed_sub_cancel(b->fs); /* idempotent: counted off once */
    assert_int_equal(feed_hub_subs(f->hub), 1);
    sub_free(c);
    assert_int_equal(feed_hub_subs(f->hub), 0);
    sub_free(a);
    sub_free(b);
    assert_int_equal(feed_hub_subs(f->hub), 0);
}

/* A subscription of any key under an index key is matched only against
 * the items published with it, and still gets each of them once, a lost
 * one included (read from storage); one without an index sees them all. */
static void test_an_indexed_subscription_sees_only_its_index(void **state) {
    fake_t *f = *state;
    sub_t *s = sub_new(f, ENDS_IN_3, SIZE_MAX, 0, NULL);
    sub_t *u = sub_new(f, ANY_ODD, SIZE_MAX, 0, NULL);
    uint64_t head = 0;

    feed_sub_pump(s->fs);
    feed_sub_pump(u->fs);
    for (int k = 0; k < 100; k++)
        head = commit(f, k);
    assert_int_equal(atomic_load(&s->matches), 10); /* 3, 13, ..., 93 */
    assert_int_equal(atomic_load(&u->matches), 100);
    /* Live, it has seen all that concerns it: the rest concern it not. */
    assert_int_equal(feed_sub_cursor(s->fs), head);
    head = commit_lost(f, 13);
    assert_true(owner_pump_woken(s));
    assert_true(owner_pump_woken(u));
    head = commit(f, 23);
    assert_exactly_once(f, s, 0, head);
    assert_exactly_once(f, u, 0, head);
    assert_int_equal(feed_hub_subs(f->hub), 2);
    sub_free(s);
    assert_int_equal(feed_hub_subs(f->hub), 1);
    sub_free(u);
    assert_true(feed_hub_idle(f->hub));
}

static void test_a_group_takes_a_live_item_once_for_all(void **state) {
    fake_t *f = *state;
    group_t g = {0};
    sub_t *s[3], *alone;

    /* Created in this order: s[0], alone, s[1], s[2]. s[1] and s[2] sit
     * together; s[0] is cut off from them by a subscription of no group. */
    s[0] = sub_new(f, 0, SIZE_MAX, 0, &g);
    alone = sub_new(f, 0, SIZE_MAX, 0, NULL);
    s[1] = sub_new(f, 0, SIZE_MAX, 0, &g);
    s[2] = sub_new(f, 0, SIZE_MAX, 0, &g);
    for (int i = 0; i < 3; i++)
        feed_sub_pump(s[i]->fs);
    feed_sub_pump(alone->fs);
    commit(f, 0);
    commit(f, 0);
    assert_int_equal(g.calls, 4); /* per item: s[1]+s[2], then s[0] */
    assert_int_equal(g.subs, 6);
    assert_int_equal(sub_count(alone), 2);

    /* Full for the group: none of them takes it, each drops and is woken,
     * and each catches up on its own. */
    g.full = 1;
    commit(f, 0);
    assert_int_equal(sub_count(alone), 3);
    for (int i = 0; i < 3; i++) {
        assert_false(feed_sub_live(s[i]->fs));
        assert_int_equal(s[i]->wakes, 1);
    }
    g.full = 0;
    for (int i = 0; i < 3; i++)
        assert_true(owner_pump_woken(s[i]));
    commit(f, 0);
    assert_int_equal(g.calls, 6);
    for (int i = 0; i < 3; i++) {
        assert_exactly_once(f, s[i], 0, 4);
        sub_free(s[i]);
    }
    sub_free(alone);
}

typedef struct churn {
    fake_t *f;
    atomic_int stop;
} churn_t;

static void *churn_publisher(void *arg) {
    churn_t *c = arg;

    uint64_t rev = 0;

    while (!atomic_load(&c->stop) && rev < LOG_MAX - 1)
        rev = commit(c->f, 0);
    return NULL;
}

static void test_destroy_while_a_publish_runs(void **state) {
    fake_t *f = *state;
    churn_t c = {f, 0};
    pthread_t th;

    assert_int_equal(pthread_create(&th, NULL, churn_publisher, &c), 0);
    /* Subscriptions come and go while the publisher delivers to them,
     * ends them (complete_at) and drops them (a small sink). A destroy
     * waits for an end running on the publisher; nothing is called once
     * it returned (op_end checks). */
    for (int round = 0; round < 300; round++) {
        sub_t *s[4];
        uint64_t head;

        pthread_mutex_lock(&f->mu);
        head = f->head;
        pthread_mutex_unlock(&f->mu);
        for (int i = 0; i < 4; i++) {
            s[i] = sub_new(f, 0, i == 1 ? 3 : SIZE_MAX, head, NULL);
            if (i == 2)
                s[i]->complete_at = head + 2;
            feed_sub_pump(s[i]->fs);
        }
        for (int k = 0; k < 50; k++)
            sched_yield();
        for (int i = 0; i < 4; i++)
            sub_destroy(s[i]);
        for (int i = 0; i < 4; i++) {
            assert_true(s[i]->ends <= 1);
            sub_free(s[i]);
        }
    }
    atomic_store(&c.stop, 1);
    pthread_join(th, NULL);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(
            test_replay_to_live_has_no_gap_or_duplicate_while_publishing, setup,
            teardown),
        cmocka_unit_test_setup_teardown(
            test_what_is_published_during_a_replay_is_not_passed_by, setup,
            teardown),
        cmocka_unit_test_setup_teardown(
            test_what_replay_read_before_its_publish_is_not_sent_twice, setup,
            teardown),
        cmocka_unit_test_setup_teardown(
            test_go_live_runs_where_live_begins_and_may_be_full, setup,
            teardown),
        cmocka_unit_test_setup_teardown(
            test_a_full_sink_drops_to_replay_and_catches_up, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_a_refused_item_with_nothing_held_is_retried_on_wake, setup,
            teardown),
        cmocka_unit_test_setup_teardown(
            test_a_replay_in_parts_asks_for_each_next_part, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_a_replay_in_parts_without_a_wake_goes_on, setup, teardown),
        cmocka_unit_test_setup_teardown(test_a_lost_item_is_read_from_storage,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_a_failed_replay_ends_once_naming_what_it_met, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_a_complete_delivery_ends_once_with_ok_after_publish, setup,
            teardown),
        cmocka_unit_test_setup_teardown(
            test_an_indexed_subscription_sees_only_its_index, setup,
            teardown),
        cmocka_unit_test_setup_teardown(test_a_kick_ends_at_the_next_pump_once,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_a_cancelled_subscription_gets_nothing_and_no_end, setup,
            teardown),
        cmocka_unit_test_setup_teardown(
            test_the_hub_counts_registered_subscriptions, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_a_group_takes_a_live_item_once_for_all, setup, teardown),
        cmocka_unit_test_setup_teardown(test_destroy_while_a_publish_runs,
                                        setup, teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
