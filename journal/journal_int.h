/*
 * journal/journal_int.h: what the journal's files share. Private to
 * journal/.
 *
 *   journal.c        the module: its design, create and destroy, names
 *   journal_rec.c    records and keys: the column families' layout
 *   journal_write.c  the writer's operations (and other modules' applies)
 *   journal_read.c   reads, at one snapshot or through a transaction
 *   journal_sub.c    subscriptions and the publish step
 */
#ifndef REEL_JOURNAL_JOURNAL_INT_H
#define REEL_JOURNAL_JOURNAL_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "base/codec.h"
#include "feed/feed.h"
#include "journal/journal.h"

/* The event types of the journal's changes handed to the publish step
 * (both under JOURNAL_MODULE_ID). */
enum { CHANGE_RUN = 1, CHANGE_ENTRY = 2 };

/* Its column families (journal_cfs, in journal_rec.c). */
#define JOURNAL_CF_RUNS "runs"
#define JOURNAL_CF_JOURNAL "journal"

struct journal {
    store_t *store;
    store_cf_t *cf_runs, *cf_journal;
    journal_limits_t lim;
    /* The ULID clock: writer thread only. */
    int64_t ulid_ms;
    unsigned char ulid_rand[10];
    journal_pending_fn pending;
    void *pending_arg;
    timers_t *timers; /* NULL: nothing is scheduled */
    uint64_t rng;     /* backoff jitter: writer thread only */
    /* Where each app's claimable index may start (writer thread only): no
     * live key of app sorts before its hint, so a ClaimNextRun seeks there
     * instead of over the tombstones of every run claimed before. */
    struct claim_hint *hints;
    uint64_t hints_aborted; /* store_groups_aborted() when they were made */
    /* ClaimNextRun's waiters, a list per app (few apps per reeld). */
    pthread_mutex_t waiters_mu;
    journal_claim_waiter_t *waiters;
    /* Subscriptions, under their run_id. */
    feed_hub_t *hub;
    /* Metrics (journal_metrics.c): runs per status and recoveries,
     * counted once `counting` is set (writer thread only). */
    metrics_registry_t *metrics;
    int counting;
    _Atomic int64_t runs_by_status[RUN_PAUSED + 1];
    _Atomic int64_t recovered[JOURNAL_RECOVERY_REASONS];
};

/* ---- Metrics (journal_metrics.c; writer thread) -------------------------- */

/* Moves reel_runs{status} for r, which was prev (NULL: new), when the
 * write commits. */
void journal_count_status(journal_t *j, store_txn_t *txn, const run_t *prev,
                          const run_t *r);
/* Counts one recovery of reason (RUN_REASON_*) when the write commits. */
void journal_count_recovered(journal_t *j, store_txn_t *txn,
                             const char *reason);

/* ---- Records and keys (journal_rec.c) ------------------------------------ */

void journal_run_encode(const run_t *r, reel_wbuf_t *w);
/* 0, or -1 if malformed (or out of memory). */
int journal_run_decode(const void *buf, size_t len, run_t *r);
void journal_entry_encode(const journal_entry_t *e, reel_wbuf_t *w);
/* 0, -1 if malformed, -2 out of memory (not to be reported as corrupt). */
int journal_entry_decode(const void *buf, size_t len, journal_entry_t *e);

/* A key, malloc'd (free p); p is NULL when out of memory. */
typedef struct journal_key {
    char *p;
    size_t len;
} journal_key_t;

/* tag, then the given strings each followed by a NUL except the last,
 * then an optional 8-byte number. */
journal_key_t journal_make_key(char tag, const char *const *parts, size_t n,
                               int with_num, uint64_t num);
journal_key_t journal_run_key(const char *run_id);
journal_key_t journal_active_key(const char *run_id);
/* 'A' app 0 run_id: the active index by app. */
journal_key_t journal_app_active_key(const char *app, const char *run_id);
/* 'p' app 0 run_id: every run by app, written when the run begins (runs
 * are never deleted, so it is never removed). */
journal_key_t journal_app_run_key(const char *app, const char *run_id);
/* 'x' S 0 run_id: every run not RUNNABLE or RUNNING (those the active
 * index has) by status (S = '0' + status). */
journal_key_t journal_status_key(run_status_t s, const char *run_id);
/* 'X' S app 0 run_id: the same by app. Its "app" part, S and the app's
 * name, is what journal_status_app() writes: the part an index walk by
 * app (tag 'X') takes for the app. */
journal_key_t journal_app_status_key(run_status_t s, const char *app,
                                     const char *run_id);
#define JOURNAL_STATUS_APP_MAX (JOURNAL_MAX_NAME + 2)
void journal_status_app(run_status_t s, const char *app,
                        char out[JOURNAL_STATUS_APP_MAX]);
journal_key_t journal_entry_key(const char *run_id, uint64_t seq);
journal_key_t journal_idem_key(const char *run_id, const char *idem);
journal_key_t journal_invocation_key(const run_t *r);
journal_key_t journal_session_key(const run_t *r);
/* 'o' app 0 user 0 session 0 ~run_id: a run of the session that has not
 * ended, newest first (~: each byte 255 - b); with run_id NULL, the
 * prefix of the session's. */
journal_key_t journal_open_session_key(const char *app, const char *user,
                                       const char *session,
                                       const char *run_id);
/* 'c' app 0 ready_ms(8) run_id: the claimable index. */
journal_key_t journal_claimable_key(const char *app, int64_t ready_ms,
                                    const char *run_id);
/* 'c' app 0: the prefix of app's claimable runs. */
journal_key_t journal_claimable_prefix(const char *app);

/* The claimable index's key past its app's prefix: ready_ms(8) run_id. */
#define CLAIM_SUFFIX (8 + JOURNAL_RUN_ID_LEN)

/* ---- Names (journal.c): INVALID_ARGUMENT naming the field ---------------- */

/* journal_check_run_id (journal.h) checks run ids. */
reel_code_t journal_check_name(const char *field, const char *s,
                               reel_status_t *st);

/* ---- Reads (journal_read.c) ---------------------------------------------- */

/* The run as txn sees it: OK, NOT_FOUND or DATA_LOSS, naming it. */
reel_code_t journal_load_run(journal_t *j, store_txn_t *txn,
                             const char *run_id, run_t *out,
                             reel_status_t *st);
/* The run at snap (NULL: now): OK, NOT_FOUND, DATA_LOSS or the read's
 * error, naming it. */
reel_code_t journal_get_run_at(journal_t *j, const store_snapshot_t *snap,
                               const char *run_id, run_t *out,
                               reel_status_t *st);
/* A run an index names, through txn or (txn NULL) at snap: a missing
 * record is DATA_LOSS, never a run to pass over. */
reel_code_t journal_indexed_run(store_txn_t *txn, journal_t *j,
                                const store_snapshot_t *snap,
                                const char *run_id, run_t *out,
                                reel_status_t *st);

/* Entries of run_id after from_seq at snap, delivered to fn until it says
 * stop. Returns how the scan ended: an entry it cannot read ends it with an
 * error naming the entry's seq, never a skip. fn owns the entry it gets. */
typedef int (*journal_entry_fn)(void *arg,
                                journal_entry_t *e); /* 0 go on, 1 stop */
reel_code_t journal_scan_entries(journal_t *j, const store_snapshot_t *snap,
                                 const char *run_id, uint64_t from_seq,
                                 journal_entry_fn fn, void *arg,
                                 reel_status_t *st);

/* ---- Subscriptions (journal_sub.c) --------------------------------------- */

/* ---- The claimable index's hints (journal_write.c) ---------------------- */

void journal_hints_free(journal_t *j);

reel_code_t journal_hub_init(journal_t *j, uint64_t last_published,
                             reel_status_t *st);
void journal_hub_fini(journal_t *j);

#endif
