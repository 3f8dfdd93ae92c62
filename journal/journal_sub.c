/*
 * journal/journal_sub.c: run subscriptions and the publish step.
 *
 * The same scheme as KV watches (kv/kv_watch.c): a subscription replays
 * from storage up to a snapshot, then goes LIVE under hub_mu only if
 * nothing was published past the snapshot; when its sink is full it drops
 * back to replay. It ends (OK) once the run is terminal and everything
 * before that was delivered: entries always commit before the EndRun that
 * makes the run terminal, so they come first in both paths. A replay that
 * cannot read the run or an entry it owes ends the subscription with that
 * error (naming the run and seq) instead of skipping it or waiting.
 */
#include "journal/journal_int.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include <uthash.h>

struct sub_bucket {
    UT_hash_handle hh;
    journal_sub_t *head;
    char run_id[JOURNAL_RUN_ID_LEN + 1];
};

void journal_hub_init(journal_t *j, uint64_t last_published) {
    pthread_mutex_init(&j->hub_mu, NULL);
    j->last_published = last_published;
}

void journal_hub_fini(journal_t *j) {
    sub_bucket_t *b, *tmp;

    HASH_ITER(hh, j->subs, b, tmp) {
        HASH_DEL(j->subs, b);
        free(b);
    }
    pthread_mutex_destroy(&j->hub_mu);
}

enum { SUB_REPLAY, SUB_LIVE, SUB_DONE };

struct journal_sub {
    journal_t *j;
    char run_id[JOURNAL_RUN_ID_LEN + 1];
    journal_sink_t sink;
    void *arg;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    atomic_int live;
    int dead, pumping, phase;
    int refs; /* the owner's, and one per publish about to end it */
    uint64_t cursor_seq, cursor_rev;
    journal_sub_t *end_next; /* publish's list of subscriptions to end */
    /* hub links, under hub_mu */
    sub_bucket_t *bucket;
    journal_sub_t *prev, *next;
};

static void sub_unlink(journal_t *j, journal_sub_t *s) {
    if (s->bucket == NULL)
        return;
    if (s->prev)
        s->prev->next = s->next;
    else
        s->bucket->head = s->next;
    if (s->next)
        s->next->prev = s->prev;
    if (s->bucket->head == NULL) {
        HASH_DEL(j->subs, s->bucket);
        free(s->bucket);
    }
    s->bucket = NULL;
    s->prev = s->next = NULL;
}

reel_code_t journal_sub_create(journal_t *j, const char *run_id,
                               uint64_t from_seq, const journal_sink_t *sink,
                               void *arg, journal_sub_t **out,
                               reel_status_t *st) {
    journal_sub_t *s;
    sub_bucket_t *b;
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
    s->phase = SUB_REPLAY;
    s->refs = 1;
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    pthread_mutex_lock(&j->hub_mu);
    HASH_FIND_STR(j->subs, s->run_id, b);
    if (b == NULL && (b = calloc(1, sizeof(*b))) != NULL) {
        memcpy(b->run_id, s->run_id, sizeof(b->run_id));
        HASH_ADD_STR(j->subs, run_id, b);
    }
    if (b != NULL) {
        s->bucket = b;
        s->next = b->head;
        if (b->head)
            b->head->prev = s;
        b->head = s;
    }
    pthread_mutex_unlock(&j->hub_mu);
    if (b == NULL) {
        pthread_mutex_destroy(&s->mu);
        pthread_cond_destroy(&s->cv);
        free(s);
        return reel_status_set(st, REEL_RESOURCE_EXHAUSTED, "out of memory");
    }
    *out = s;
    return REEL_OK;
}

static void sub_unref(journal_sub_t *s) {
    int left;

    pthread_mutex_lock(&s->mu);
    left = --s->refs;
    pthread_mutex_unlock(&s->mu);
    if (left > 0)
        return;
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cv);
    free(s);
}

typedef struct replay {
    journal_sub_t *s;
    int full;
} replay_t;

static int replay_entry(void *arg, journal_entry_t *e) {
    replay_t *rp = arg;

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
 * Replays to a fresh snapshot. 0 caught up, 1 full, 2 the run is over, -1
 * failed (st says why, naming the run and the entry): what cannot be read
 * ends the subscription, never skipped and never waited on.
 */
static int sub_replay(journal_sub_t *s, reel_status_t *st) {
    store_snapshot_t *snap = NULL;
    replay_t rp = {s, 0};
    run_t r;
    int terminal;
    reel_code_t rc;

    if ((rc = store_snapshot_create(s->j->store, &snap, st)) != REEL_OK) {
        reel_status_set(st, rc, "run %s: replaying after seq %llu: %s",
                        s->run_id, (unsigned long long)s->cursor_seq,
                        reel_status_message(st));
        return -1;
    }
    if (journal_get_run_at(s->j, snap, s->run_id, &r, st) != REEL_OK) {
        store_snapshot_release(s->j->store, snap);
        return -1;
    }
    terminal = run_status_terminal(r.status);
    run_fini(&r);
    if (journal_scan_entries(s->j, snap, s->run_id, s->cursor_seq, replay_entry,
                             &rp, st) != REEL_OK) {
        store_snapshot_release(s->j->store, snap);
        return -1;
    }
    if (!rp.full && store_snapshot_revision(snap) > s->cursor_rev)
        s->cursor_rev = store_snapshot_revision(snap);
    store_snapshot_release(s->j->store, snap);
    if (rp.full)
        return 1;
    return terminal ? 2 : 0;
}

void journal_sub_pump(journal_sub_t *s) {
    journal_t *j = s->j;
    reel_status_t why = REEL_STATUS_INIT;
    int ended = 0;

    pthread_mutex_lock(&s->mu);
    if (s->dead || s->pumping || s->phase != SUB_REPLAY) {
        pthread_mutex_unlock(&s->mu);
        return;
    }
    s->pumping = 1;
    while (!s->dead && s->phase == SUB_REPLAY) {
        int r = sub_replay(s, &why);

        if (r == 1)
            break;
        if (r == 2 || r == -1) {
            /* -1 keeps why: the stream ends with it instead of OK. */
            s->phase = SUB_DONE;
            s->refs++; /* ending may destroy it: keep it until we are out */
            ended = 1;
            break;
        }
        /* Caught up to the snapshot: go live if nothing newer was
         * published (hub_mu first, so drop and retake our lock). */
        pthread_mutex_unlock(&s->mu);
        pthread_mutex_lock(&j->hub_mu);
        pthread_mutex_lock(&s->mu);
        if (!s->dead && j->last_published <= s->cursor_rev) {
            s->phase = SUB_LIVE;
            atomic_store(&s->live, 1);
        }
        pthread_mutex_unlock(&j->hub_mu);
    }
    s->pumping = 0;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    if (ended) {
        s->sink.end(s->arg, &why);
        sub_unref(s);
    }
    reel_status_fini(&why);
}

void journal_publish(journal_t *j, const store_change_t *changes, size_t n) {
    journal_sub_t *ending = NULL;

    pthread_mutex_lock(&j->hub_mu);
    for (size_t i = 0; i < n && j->subs != NULL; i++) {
        const store_change_t *c = &changes[i];
        sub_bucket_t *b = NULL;
        journal_entry_t e;
        run_t r;

        if (c->module == STORE_MODULE_JOURNAL && c->type == CHANGE_ENTRY) {
            if (journal_entry_decode(c->event, c->len, &e) != 0)
                continue;
            HASH_FIND_STR(j->subs, e.run_id, b);
            for (journal_sub_t *s = b ? b->head : NULL; s; s = s->next) {
                if (!atomic_load(&s->live))
                    continue;
                pthread_mutex_lock(&s->mu);
                if (s->phase == SUB_LIVE && !s->dead &&
                    e.revision > s->cursor_rev && e.seq > s->cursor_seq) {
                    if (s->sink.deliver(s->arg, &e) == 0) {
                        s->cursor_seq = e.seq;
                        s->cursor_rev = e.revision;
                    } else {
                        atomic_store(&s->live, 0);
                        s->phase = SUB_REPLAY;
                    }
                }
                pthread_mutex_unlock(&s->mu);
            }
            journal_entry_fini(&e);
        } else if (c->module == STORE_MODULE_RUNS && c->type == CHANGE_RUN) {
            if (journal_run_decode(c->event, c->len, &r) != 0)
                continue;
            if (run_status_terminal(r.status))
                HASH_FIND_STR(j->subs, r.run_id, b);
            for (journal_sub_t *s = b ? b->head : NULL; s; s = s->next) {
                pthread_mutex_lock(&s->mu);
                if (s->phase == SUB_LIVE && !s->dead) {
                    s->phase = SUB_DONE;
                    atomic_store(&s->live, 0);
                    s->refs++;
                    s->end_next = ending;
                    ending = s;
                }
                pthread_mutex_unlock(&s->mu);
            }
            run_fini(&r);
        }
    }
    if (n > 0 && changes[n - 1].revision > j->last_published)
        j->last_published = changes[n - 1].revision;
    pthread_mutex_unlock(&j->hub_mu);

    /* Outside every lock: ending a call may free it, and its cleanup
     * destroys the subscription (our reference keeps it alive). */
    while (ending != NULL) {
        journal_sub_t *s = ending;
        reel_status_t ok = REEL_STATUS_INIT;

        ending = s->end_next;
        s->sink.end(s->arg, &ok);
        sub_unref(s);
    }
}

void journal_sub_destroy(journal_sub_t *s) {
    if (s == NULL)
        return;
    pthread_mutex_lock(&s->j->hub_mu);
    sub_unlink(s->j, s);
    pthread_mutex_lock(&s->mu);
    s->dead = 1;
    atomic_store(&s->live, 0);
    pthread_mutex_unlock(&s->mu);
    pthread_mutex_unlock(&s->j->hub_mu);
    pthread_mutex_lock(&s->mu);
    while (s->pumping)
        pthread_cond_wait(&s->cv, &s->mu);
    pthread_mutex_unlock(&s->mu);
    sub_unref(s);
}
