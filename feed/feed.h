/*
 * feed/feed.h: one subscription feed: replay from storage, then follow
 * live, with no gap and no duplicate at the switch.
 *
 * A module that pushes what commits (KV watches, run subscriptions, WAL
 * subscribers) owns one hub and gives each subscription a small table of
 * operations: how to catch up from storage (replay), whether a live item
 * concerns it (match), how to take one (deliver, deliver_group), how it
 * ends (end) and how its owner is asked to pump it (wake). The feed owns
 * the rest: the registry, the phases, the cursor, the locks and the
 * handoff between replay and live, written once in feed.c.
 *
 * Items are the module's own (an event, an entry, a stored record): the
 * feed never looks inside one. Each carries the global revision it
 * committed at; a subscription's cursor is the revision up to which it
 * has seen everything that concerns it.
 *
 * Threading: a hub and its subscriptions are thread-safe. One thread
 * publishes (the store's writer): feed_publish_begin() ... feed_publish_end()
 * hold the hub's lock. Who calls the operations, and with which locks held,
 * is said at each one below; no operation may call back into the feed
 * except end (which may cancel or destroy its subscription).
 */
#ifndef REEL_FEED_FEED_H
#define REEL_FEED_FEED_H

#include <stddef.h>
#include <stdint.h>

#include "base/status.h"

typedef struct feed_hub feed_hub_t;
typedef struct feed_sub feed_sub_t;

/* What replay, go_live and deliver answer. */
enum {
    FEED_OK = 0,   /* replay: caught up to *cursor; deliver: taken */
    FEED_FULL = 1, /* the sink has no room: wait for the owner's pump */
    FEED_END = 2,  /* replay: cannot go on (why says so); deliver: the
                      subscription is complete and ends with OK */
    FEED_YIELD = 3, /* replay: stopped short of its snapshot after its
                       budget, *cursor at the last item it read */
};

typedef struct feed_ops {
    /*
     * Catches up from storage: delivers (through the module's own sink)
     * what the subscription owes after *cursor, up to a snapshot S taken
     * now, and answers FEED_OK with *cursor = S; FEED_FULL when the sink
     * filled (*cursor at the last item taken); FEED_YIELD when it read
     * its budget of items without reaching S (*cursor at the last item
     * read, taken or not wanted: the feed asks the owner for another pump
     * through wake, so a long scan neither holds the pumping thread nor
     * the subscription's lock for its whole length); FEED_END, with why
     * set, when it cannot go on (a record it cannot read, history it needs
     * trimmed, a run that is over: then why is OK). Never skips what it
     * cannot read. Called by feed_sub_pump() with the subscription's lock
     * held (never the hub's).
     */
    int (*replay)(void *arg, uint64_t *cursor, reel_status_t *why);
    /*
     * Optional: the last step before going live, once replay caught up to
     * cursor and nothing newer was published (KV sends BOOTSTRAP_DONE
     * here, at exactly the revision where live begins). FEED_OK goes live;
     * FEED_FULL stays in replay. Called with the hub's lock and the
     * subscription's held.
     */
    int (*go_live)(void *arg, uint64_t cursor);
    /*
     * Optional, for subscriptions of any key: whether a live item concerns
     * this one. Called by publish with the hub's lock held and not the
     * subscription's, so it may read only what never changes. Without it,
     * every item is handed to deliver, which may decline it.
     */
    int (*match)(void *arg, const void *item);
    /*
     * Takes one live item: FEED_OK when taken (or when it needs none: the
     * cursor moves to the item's revision either way), FEED_FULL when the
     * sink has no room (the subscription drops back to replay and wake is
     * called), FEED_END when the subscription is complete (it ends with
     * OK). Called by publish with the hub's lock and the subscription's
     * held.
     */
    int (*deliver)(void *arg, void *item);
    /*
     * Optional: takes one live item for the n subscriptions of one group
     * (feed_sub_args_t.group) whose args are args[0..n-1], adjacent in
     * their registry and all live and due: FEED_OK for all of them, or
     * FEED_FULL for none (each drops back to replay as after a full
     * deliver). Called by publish with the hub's lock held only.
     */
    int (*deliver_group)(void *const *args, size_t n, void *item);
    /*
     * The subscription is over: st is OK when it is complete, or says why
     * it cannot go on. Called at most once, with no feed lock held, from
     * the thread that pumped or published; never after feed_sub_cancel()
     * or feed_sub_destroy() returned on another thread. It may cancel or
     * destroy the subscription.
     */
    void (*end)(void *arg, const reel_status_t *st);
    /*
     * Optional: the subscription needs a pump that its owner might not
     * otherwise run (it dropped back to replay, it must end, or its replay
     * yielded): call feed_sub_pump() soon, from the owner's own thread.
     * Called with feed locks held (the subscription's, and the hub's but
     * after a yield): it must not block nor call into the feed. Required
     * of a module whose replay may yield.
     */
    void (*wake)(void *arg);
} feed_ops_t;

/* ---- Hubs ---------------------------------------------------------------- */

/* A hub whose publishing starts after last_published (the store's head). */
reel_code_t feed_hub_create(uint64_t last_published, feed_hub_t **out,
                            reel_status_t *st);
/* Subscriptions must all be destroyed first. Accepts NULL. */
void feed_hub_destroy(feed_hub_t *h);

/* The last revision published. Any thread but the publisher's inside
 * feed_publish_begin() ... feed_publish_end(). */
uint64_t feed_hub_last_published(feed_hub_t *h);

/* Subscriptions registered and not yet ended or cancelled (a gauge for
 * metrics). Any thread but the publisher's inside feed_publish_begin() ...
 * feed_publish_end(). */
size_t feed_hub_subs(feed_hub_t *h);

/* ---- Publishing (one thread: the store's writer) ------------------------- */

/* Takes the hub's lock, until feed_publish_end(). */
void feed_publish_begin(feed_hub_t *h);

/* True when no subscription is registered: nothing to decode. */
int feed_hub_idle(const feed_hub_t *h);

/*
 * Hands item, committed at revision, to every live subscription of key
 * (key_len bytes; NULL for none) and to every live subscription of any key
 * that it concerns, skipping those that have seen revision already.
 * Adjacent subscriptions of one group get it in one deliver_group().
 * item is the caller's; the feed keeps no pointer to it.
 */
void feed_publish(feed_hub_t *h, const void *key, size_t key_len,
                  uint64_t revision, void *item);

/* An index key of an item (feed_publish_indexed). */
typedef struct feed_index {
    const void *key;
    size_t len;
} feed_index_t;

/*
 * feed_publish(), and also to the indexed subscriptions under each of the
 * n_index distinct index keys, as match decides: a module indexes its
 * subscriptions of many keys (a pattern's namespace and literal first
 * token, say) so that an item is matched only against those it might
 * concern, not against every one.
 */
void feed_publish_indexed(feed_hub_t *h, const void *key, size_t key_len,
                          const feed_index_t *index, size_t n_index,
                          uint64_t revision, void *item);

/*
 * The item committed at revision could not be made (decoded, or keyed):
 * since the feed cannot tell whom it concerns, every live subscription that
 * has not seen it drops back to replay, which reads it from storage (or
 * ends, naming it, if it cannot), and is woken.
 */
void feed_publish_lost(feed_hub_t *h, uint64_t revision);

/*
 * Records that everything up to last_revision was published, releases the
 * hub's lock, then ends the subscriptions that deliver completed (their
 * end runs here, on this thread).
 */
void feed_publish_end(feed_hub_t *h, uint64_t last_revision);

/* ---- Subscriptions ------------------------------------------------------- */

typedef struct feed_sub_args {
    const feed_ops_t *ops; /* borrowed: must outlive the subscription */
    void *arg;             /* handed to every operation */
    /* Published items of this key (copied) reach it; NULL: items of any
     * key, as match decides. */
    const void *key;
    size_t key_len;
    /* With key NULL: when set (copied), only items published with this
     * index key (feed_publish_indexed) reach it, as match decides; NULL:
     * every item does. */
    const void *index;
    size_t index_len;
    /* Subscriptions created one after another with the same non-NULL group
     * sit next to each other under their key, and take an item they are
     * all due in one deliver_group(). NULL: on its own. */
    void *group;
    uint64_t cursor; /* everything up to it was seen (or is not wanted) */
} feed_sub_args_t;

/*
 * Registers a subscription in replay: nothing is delivered until the
 * first feed_sub_pump(). RESOURCE_EXHAUSTED when out of memory.
 */
reel_code_t feed_sub_create(feed_hub_t *h, const feed_sub_args_t *a,
                            feed_sub_t **out, reel_status_t *st);

/*
 * Replays until caught up and live, until the sink is full, or until the
 * subscription ends (end is called here, after the locks are released).
 * Any thread; calls for one subscription are serialised, and a call while
 * another runs returns at once. Not from inside an operation.
 */
void feed_sub_pump(feed_sub_t *s);

/*
 * Stops deliveries and the end: nothing is called once it returns (but an
 * end already running on another thread). Idempotent; any thread, from
 * inside end too; not from inside another operation.
 */
void feed_sub_cancel(feed_sub_t *s);

/*
 * Ends the subscription from outside (its durable consumer was taken over,
 * say): nothing more is delivered, and its next pump calls end with code
 * and msg; wake asks the owner for that pump. Ignored once it is ending,
 * ended or cancelled. Any thread; not from inside an operation.
 */
void feed_sub_kick(feed_sub_t *s, reel_code_t code, const char *msg);

/* True while live. Any thread. */
int feed_sub_live(feed_sub_t *s);

/* Everything up to this revision was delivered or did not concern it.
 * Takes the hub's lock: any thread, not from inside an operation. */
uint64_t feed_sub_cursor(feed_sub_t *s);
/* The same without waiting for a pump: -1 (and *out untouched) while one
 * holds the subscription, which may be a replay's whole part, else 0. So a
 * periodic reader never holds the hub's lock, and with it every publish,
 * behind a catch-up. */
int feed_sub_cursor_try(feed_sub_t *s, uint64_t *out);

/*
 * Cancels, waits for a pump or an end running on another thread, and
 * frees. The owner must not pump it again. Accepts NULL; may be called
 * from inside its own end.
 */
void feed_sub_destroy(feed_sub_t *s);

#endif
