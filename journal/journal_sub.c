/*
 * journal/journal_sub.c: run subscriptions on the feed (feed/feed.h), and
 * the journal's share of the publish step.
 *
 * The feed owns the handoff from replay to live, the registry and the
 * locks (feed/feed.c says how and why); this file says what a run
 * subscription replays and what it takes live. Its key in the hub is the
 * run_id. Replay reads, at a fresh snapshot, the run and its entries after
 * the last seq delivered; live, publish hands it each new entry of the run
 * and, once the run is terminal, the run itself, which completes it (end
 * with OK). Entries always commit before the EndRun that makes the run
 * terminal, so they come first in both paths: a replay that finds the run
 * terminal has sent every entry, and publish hands out the entries'
 * changes before the run's.
 *
 * A replay that cannot read the run or an entry it owes ends the
 * subscription with that error (naming the run and seq) instead of
 * skipping it or waiting. A change publish cannot decode is handed to the
 * feed as lost: every live subscription catches up from storage.
 */
#include "journal/journal_int.h"

#include <stdlib.h>
#include <string.h>

#include "base/fault.h"

struct journal_sub {
    journal_t *j;
    feed_sub_t *sub;
    char run_id[JOURNAL_RUN_ID_LEN + 1];
    journal_sink_t sink;
    void *arg;
    uint64_t cursor_seq; /* the last seq delivered (the feed's calls only) */
};

/* A live item: an entry of the run, or the run itself, over. */
typedef struct item {
    int run_over;
    journal_entry_t entry;
} item_t;

reel_code_t journal_hub_init(journal_t *j, uint64_t last_published,
                             reel_status_t *st) {
    return feed_hub_create(last_published, &j->hub, st);
}

void journal_hub_fini(journal_t *j) { feed_hub_destroy(j->hub); }

size_t journal_subscribers(journal_t *j) { return feed_hub_subs(j->hub); }

/* ---- Replay -------------------------------------------------------------- */

typedef struct replay_scan {
    journal_sub_t *s;
    int full;
} replay_scan_t;

static int replay_entry(void *arg, journal_entry_t *e) {
    replay_scan_t *rp = arg;

    if (rp->s->sink.deliver(rp->s->arg, e) != 0) {
        journal_entry_fini(e);
        rp->full = 1;
        return 1;
    }
    rp->s->cursor_seq = e->seq;
    journal_entry_fini(e);
    return 0;
}

/*
 * Replays to a fresh snapshot: caught up (*cursor at the snapshot), full,
 * or over: OK when the run is terminal, else why says what could not be
 * read, naming the run and the entry. What cannot be read ends the
 * subscription, never skipped and never waited on.
 */
static int replay(void *arg, uint64_t *cursor, reel_status_t *why) {
    journal_sub_t *s = arg;
    store_snapshot_t *snap = NULL;
    replay_scan_t rp = {s, 0};
    run_t r;
    int terminal;
    reel_code_t rc;

    if ((rc = store_snapshot_create(s->j->store, &snap, why)) != REEL_OK) {
        reel_status_set(why, rc, "run %s: replaying after seq %llu: %s",
                        s->run_id, (unsigned long long)s->cursor_seq,
                        reel_status_message(why));
        return FEED_END;
    }
    if (journal_get_run_at(s->j, snap, s->run_id, &r, why) != REEL_OK) {
        store_snapshot_release(s->j->store, snap);
        return FEED_END;
    }
    terminal = run_status_terminal(r.status);
    run_fini(&r);
    if (journal_scan_entries(s->j, snap, s->run_id, s->cursor_seq,
                             replay_entry, &rp, why) != REEL_OK) {
        store_snapshot_release(s->j->store, snap);
        return FEED_END;
    }
    if (!rp.full && store_snapshot_revision(snap) > *cursor)
        *cursor = store_snapshot_revision(snap);
    store_snapshot_release(s->j->store, snap);
    if (rp.full)
        return FEED_FULL;
    return terminal ? FEED_END : FEED_OK;
}

/* ---- Live ---------------------------------------------------------------- */

static int live_deliver(void *arg, void *item) {
    journal_sub_t *s = arg;
    item_t *it = item;

    if (it->run_over)
        return FEED_END;
    if (it->entry.seq <= s->cursor_seq)
        return FEED_OK; /* replay sent it */
    if (s->sink.deliver(s->arg, &it->entry) != 0)
        return FEED_FULL;
    s->cursor_seq = it->entry.seq;
    return FEED_OK;
}

static void sub_end(void *arg, const reel_status_t *st) {
    journal_sub_t *s = arg;

    /* s may be freed inside: nothing of it is read after. */
    s->sink.end(s->arg, st);
}

static void sub_wake(void *arg) {
    journal_sub_t *s = arg;

    if (s->sink.wake != NULL)
        s->sink.wake(s->arg);
}

static const feed_ops_t sub_ops = {
    .replay = replay,
    .deliver = live_deliver,
    .end = sub_end,
    .wake = sub_wake,
};

/* ---- ClaimNextRun's waiters ---------------------------------------------- */

struct journal_claim_waiter {
    journal_claim_waiter_t *prev, *next;
    void (*wake)(void *arg);
    void *arg;
    uint64_t woken; /* the last group (its last revision) that woke it */
    char app[];
};

journal_claim_waiter_t *journal_claim_wait(journal_t *j, const char *app,
                                           void (*wake)(void *arg),
                                           void *arg) {
    size_t len = strlen(app);
    journal_claim_waiter_t *w = calloc(1, sizeof(*w) + len + 1);

    if (w == NULL)
        return NULL;
    memcpy(w->app, app, len + 1);
    w->wake = wake;
    w->arg = arg;
    pthread_mutex_lock(&j->waiters_mu);
    w->next = j->waiters;
    if (j->waiters != NULL)
        j->waiters->prev = w;
    j->waiters = w;
    pthread_mutex_unlock(&j->waiters_mu);
    return w;
}

void journal_claim_unwait(journal_t *j, journal_claim_waiter_t *w) {
    if (w == NULL)
        return;
    pthread_mutex_lock(&j->waiters_mu);
    if (w->prev != NULL)
        w->prev->next = w->next;
    else
        j->waiters = w->next;
    if (w->next != NULL)
        w->next->prev = w->prev;
    pthread_mutex_unlock(&j->waiters_mu);
    free(w);
}

/*
 * Wakes the waiters of each app a run of which this group made claimable
 * (RUNNABLE, due by the commit's time), each waiter once per group: its
 * attempt then claims what is due, oldest first, and a busy waiter tries
 * again. A change that does not decode wakes every waiter (an attempt
 * that finds nothing costs one read; a missed wake costs a run).
 */
static void wake_claimers(journal_t *j, const store_change_t *changes,
                          size_t n) {
    uint64_t group = n > 0 ? changes[n - 1].revision : 0;

    pthread_mutex_lock(&j->waiters_mu);
    for (size_t i = 0; i < n && j->waiters != NULL; i++) {
        const store_change_t *c = &changes[i];
        const char *app = NULL;
        run_t r = {0};
        int bad;

        if (c->module != JOURNAL_MODULE_ID || c->type != CHANGE_RUN)
            continue;
        bad = journal_run_decode(c->event, c->len, &r) != 0;
        if (!bad && (r.status != RUN_RUNNABLE || r.not_before_ms > c->ts_ms)) {
            run_fini(&r);
            continue;
        }
        app = bad ? NULL : r.app;
        for (journal_claim_waiter_t *w = j->waiters; w != NULL; w = w->next)
            if (w->woken != group && (app == NULL || strcmp(w->app, app) == 0)) {
                w->woken = group;
                w->wake(w->arg);
            }
        run_fini(&r);
    }
    pthread_mutex_unlock(&j->waiters_mu);
}

void journal_publish(journal_t *j, const store_change_t *changes, size_t n) {
    wake_claimers(j, changes, n);
    feed_publish_begin(j->hub);
    for (size_t i = 0; i < n && !feed_hub_idle(j->hub); i++) {
        const store_change_t *c = &changes[i];
        item_t it;
        run_t r;

        if (c->module == JOURNAL_MODULE_ID && c->type == CHANGE_ENTRY) {
            /* The fault point stands in for a change that cannot be
             * copied. */
            if (REEL_FAULT("journal.publish") ||
                journal_entry_decode(c->event, c->len, &it.entry) != 0) {
                feed_publish_lost(j->hub, c->revision);
                continue;
            }
            it.run_over = 0;
            feed_publish(j->hub, it.entry.run_id, strlen(it.entry.run_id),
                         c->revision, &it);
            journal_entry_fini(&it.entry);
        } else if (c->module == JOURNAL_MODULE_ID && c->type == CHANGE_RUN) {
            if (REEL_FAULT("journal.publish") ||
                journal_run_decode(c->event, c->len, &r) != 0) {
                feed_publish_lost(j->hub, c->revision);
                continue;
            }
            if (run_status_terminal(r.status)) {
                it.run_over = 1;
                feed_publish(j->hub, r.run_id, strlen(r.run_id), c->revision,
                             &it);
            }
            run_fini(&r);
        }
    }
    feed_publish_end(j->hub, n > 0 ? changes[n - 1].revision : 0);
}

/* ---- Subscriptions ------------------------------------------------------- */

reel_code_t journal_sub_create(journal_t *j, const char *run_id,
                               uint64_t from_seq, const journal_sink_t *sink,
                               void *arg, journal_sub_t **out,
                               reel_status_t *st) {
    feed_sub_args_t fa = {0};
    journal_sub_t *s;
    run_t r;
    reel_code_t rc;

    *out = NULL;
    if ((rc = journal_get_run(j, run_id, &r, st)) != REEL_OK)
        return rc;
    /* Entries after a seq that does not exist yet would never come: the
     * ones before it, when appended, are not after the cursor, so the
     * subscriber would miss them without a word. */
    if (from_seq > r.next_seq - 1) {
        rc = reel_status_set(st, REEL_INVALID_ARGUMENT,
                             "from_seq: %llu is past the run's last seq %llu",
                             (unsigned long long)from_seq,
                             (unsigned long long)(r.next_seq - 1));
        run_fini(&r);
        return rc;
    }
    run_fini(&r);
    s = calloc(1, sizeof(*s));
    if (s == NULL)
        return reel_status_set(st, REEL_RESOURCE_EXHAUSTED, "out of memory");
    memcpy(s->run_id, run_id, JOURNAL_RUN_ID_LEN + 1);
    s->j = j;
    s->sink = *sink;
    s->arg = arg;
    s->cursor_seq = from_seq;
    fa.ops = &sub_ops;
    fa.arg = s;
    fa.key = s->run_id;
    fa.key_len = JOURNAL_RUN_ID_LEN;
    if ((rc = feed_sub_create(j->hub, &fa, &s->sub, st)) != REEL_OK) {
        free(s);
        return rc;
    }
    *out = s;
    return REEL_OK;
}

void journal_sub_pump(journal_sub_t *s) { feed_sub_pump(s->sub); }

void journal_sub_destroy(journal_sub_t *s) {
    if (s == NULL)
        return;
    feed_sub_destroy(s->sub);
    free(s);
}
