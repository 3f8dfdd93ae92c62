/*
 * journal/journal.h: runs, their append-only journals, leases and fencing.
 *
 * A run is named by (app, user, session, invocation_id) and identified by a
 * server-generated run_id (a ULID: 26 characters of [0-9A-Z], sorting by
 * creation time). Its journal holds entries with seqs 1, 2, 3, ... A run is
 * leased to one worker at a time; the lease epoch is the fencing token that
 * every mutating call presents, checked in the single writer together with
 * the write it guards.
 *
 * Recovery is automatic: every lease has a durable timer (timers/) at its
 * expiry. When it fires and no heartbeat renewed the lease, the run
 * becomes RUNNABLE with reason LEASE_EXPIRED in that commit, and the old
 * epoch is fenced from then on. Each claim counts an attempt; from the
 * second consecutive expiry without progress (no append between a claim
 * and its expiry) the run is claimable only after a backoff (its retry
 * policy), and a timer commits it RUNNABLE again (BACKOFF_ENDED) when
 * the backoff ends; once it has used its attempts it is PAUSED until
 * ResumeRun or EndRun. Claimable runs are indexed per app in due order,
 * and ClaimNextRun's waiters are woken by the commit that makes one
 * claimable.
 *
 * Threading: journal_t is thread-safe. Mutations go through the store's
 * writer; reads go straight to storage. Subscriptions follow the feed
 * (feed/feed.h): their sinks are called from the writer thread (live
 * entries) or from the thread that pumps (replay), never two at once.
 *
 * Ownership: run_t and journal_entry_t own their memory; free them with
 * run_fini() / journal_entry_fini(). All their strings are NUL-terminated.
 * Their mem_ field is private to journal/ (the block the strings point
 * into): never read it.
 */
#ifndef REEL_JOURNAL_JOURNAL_H
#define REEL_JOURNAL_JOURNAL_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "base/page.h"
#include "base/status.h"
#include "store/store.h"
#include "timers/timers.h"

#define JOURNAL_MAX_NAME 256        /* app, user, session, invocation, owner */
#define JOURNAL_MAX_KIND 64
#define JOURNAL_MAX_IDEMPOTENCY 256
#define JOURNAL_MAX_SIGNAL_NAME 128
#define JOURNAL_MAX_LABELS 64
#define JOURNAL_MAX_LABEL_KEY 128
#define JOURNAL_MAX_LABEL_VALUE 1024
#define JOURNAL_DEFAULT_MAX_PAYLOAD (1u << 20)
#define JOURNAL_DEFAULT_TTL_MS 30000
#define JOURNAL_MAX_TTL_MS 86400000
#define JOURNAL_MAX_SUSPEND_MS 31536000000LL /* SuspendRun.timeout_ms: 365 days */
#define JOURNAL_LIST_DEFAULT 100
#define JOURNAL_LIST_MAX 1000
/* Runs a listing page steps over, not matching, before it answers early
 * (run_filter_t.resume). */
#define JOURNAL_LIST_SCAN_MAX 10000
#define JOURNAL_RUN_ID_LEN 26
/* The longest ClaimNextRun wait, and the latest retry interval accepted. */
#define JOURNAL_MAX_CLAIM_WAIT_MS 300000
#define JOURNAL_MAX_RETRY_INTERVAL_MS 86400000
#define JOURNAL_MAX_RETRY_MULTIPLIER 1000.0
#define JOURNAL_MAX_RETRY_ATTEMPTS 1000000
/* Retry defaults (reeld's flags set its own). */
#define JOURNAL_DEFAULT_RETRY_INITIAL_MS 1000
#define JOURNAL_DEFAULT_RETRY_MULTIPLIER 2.0
#define JOURNAL_DEFAULT_RETRY_MAX_INTERVAL_MS 300000
#define JOURNAL_DEFAULT_RETRY_MAX_ATTEMPTS 10

/* Allowed bytes, as reel_check_charset() reads them. Kinds and signal
 * names go into WAL subjects as '.'-tokens, so none of their tokens may be
 * empty either (reel_pattern_check_name). */
#define JOURNAL_KIND_CHARS "a-z0-9_.-"
#define JOURNAL_SIGNAL_CHARS "A-Za-z0-9_.:-"

typedef struct journal journal_t;
typedef struct journal_sub journal_sub_t;

typedef enum run_status {
    RUN_STATUS_ANY = 0,
    RUN_RUNNABLE = 1,
    RUN_RUNNING = 2,
    RUN_WAITING = 3,
    RUN_COMPLETED = 4,
    RUN_FAILED = 5,
    RUN_CANCELLED = 6,
    RUN_PAUSED = 7, /* retries used up: until ResumeRun or EndRun */
} run_status_t;

/* Reasons a run last changed status (run_t.reason). */
#define RUN_REASON_LEASE_EXPIRED "LEASE_EXPIRED"
#define RUN_REASON_BACKOFF_ENDED "BACKOFF_ENDED"
#define RUN_REASON_MAX_ATTEMPTS "MAX_ATTEMPTS"
#define RUN_REASON_SIGNAL_TIMEOUT "SIGNAL_TIMEOUT"
#define RUN_REASON_RESUMED "RESUMED"
#define RUN_REASON_SIGNAL "SIGNAL"

/* How a run that keeps losing its lease without progress is retried: the
 * n-th consecutive expiry (n >= 2) waits initial * multiplier^(n-2),
 * at most max_interval, less up to a fifth of it at random (jitter); an
 * expiry without progress once the run has had max_attempts claims
 * PAUSES it. A zero field takes reeld's default. */
typedef struct journal_retry {
    int64_t initial_ms;
    double multiplier;
    int64_t max_interval_ms;
    uint32_t max_attempts;
} journal_retry_t;

/* "RUNNING" */
const char *run_status_name(run_status_t s);
int run_status_terminal(run_status_t s);

typedef struct run_label {
    const char *key, *value;
} run_label_t;

typedef struct run {
    const char *run_id, *app, *user, *session, *invocation_id;
    const char *lease_owner, *waiting_on, *result;
    run_status_t status;
    uint64_t next_seq, lease_epoch;
    int64_t lease_expires_at_ms, created_at_ms, updated_at_ms, ended_at_ms;
    const run_label_t *labels;
    size_t n_labels;
    int resumed;
    /* Recovery: claims so far (ResumeRun resets), the time before which a
     * RUNNABLE run is not claimable (0: at once), why it last changed
     * status (RUN_REASON_*, or ""), its retry policy. */
    uint32_t attempt;
    int64_t not_before_ms;
    const char *reason;
    journal_retry_t retry;
    /* Private to journal/: consecutive expiries without progress, whether
     * this lease appended, the claimable index's time, the suspension's
     * deadline (0: none). */
    uint32_t failures_;
    int progress_;
    int64_t ready_ms_, wait_until_ms_;
    void *mem_; /* private: owns the strings and labels */
} run_t;

typedef struct journal_entry {
    const char *run_id, *kind, *payload, *idempotency_key;
    /* The run's app, "" unless decoded from a change: an entry's change
     * carries it (not stored with the entry) so the WAL tells the run's
     * tenant without reading the run (api/tenant.h). */
    const char *app;
    uint64_t seq, lease_epoch, revision;
    int64_t ts_ms;
    void *mem_; /* private: owns the strings */
} journal_entry_t;

void run_fini(run_t *r);
void journal_entry_fini(journal_entry_t *e);

/* The module field of the journal's changes (store_change_t), for runs and
 * entries alike (their types differ): unique among reeld's modules, and in
 * memory only (nothing stored carries it). */
#define JOURNAL_MODULE_ID 2

/* The journal's column families, for store_open(): "runs" and "journal"
 * (both point lookups), ended by a NULL name. */
extern const store_cf_desc_t journal_cfs[];

/* OK, or INVALID_ARGUMENT naming field: a run id is exactly
 * JOURNAL_RUN_ID_LEN characters of [0-9A-Z]. */
reel_code_t journal_check_run_id(const char *field, const char *id,
                                 reel_status_t *st);

typedef struct journal_limits {
    size_t max_payload; /* bytes of payload or result JSON; 0 = 1 MiB */
    /* A BeginRun's retry policy when it gives none; zeros: the
     * JOURNAL_DEFAULT_RETRY_* values. */
    journal_retry_t retry;
    /* Runs a listing steps over (read, not matching its filters) before it
     * answers a page early; 0 = JOURNAL_LIST_SCAN_MAX. */
    uint32_t list_scan_max;
} journal_limits_t;

/* The store must have been opened with journal_cfs (FAILED_PRECONDITION
 * naming the family otherwise). */
reel_code_t journal_create(store_t *store, const journal_limits_t *limits,
                           journal_t **out, reel_status_t *st);
/* Subscriptions must all be destroyed first. Accepts NULL. */
void journal_destroy(journal_t *j);

/* Run subscriptions registered now (a gauge for metrics). Any thread. */
size_t journal_subscribers(journal_t *j);

/* For a run's change: 1 with *run filled; for an entry's: 2 with *entry
 * filled; 0 for another module's change; -1 if malformed. */
int journal_change_decode(const store_change_t *c, run_t *run,
                          journal_entry_t *entry);

/* For a run's change, reading only its head (no allocation): 1 with its
 * status, lease epoch and run id (pointing into c->event); 0 for any other
 * change; -1 if malformed. */
int journal_change_run_lease(const store_change_t *c, run_status_t *status,
                             uint64_t *lease_epoch, const char **run_id);

/* The recovery reasons reel_runs_recovered_total counts. */
#define JOURNAL_RECOVERY_REASONS 4

/*
 * Registers reel_runs{status} (runs stored per status: one scan of the
 * runs now, on the writer, then counts moved by each committed status
 * change) and reel_runs_recovered_total{reason} (LEASE_EXPIRED,
 * BACKOFF_ENDED, SIGNAL_TIMEOUT, MAX_ATTEMPTS) under j as owner;
 * journal_destroy() drops them. Once, after the store opened, not on the
 * writer. A NULL registry: OK, nothing counted. OK, or the scan's error
 * (DATA_LOSS naming a run whose record is cut short).
 */
reel_code_t journal_metrics_register(journal_t *j, metrics_registry_t *r,
                                     reel_status_t *st);
/* Runs stored with status s, as reel_runs counts them (0 before
 * journal_metrics_register()). Any thread. */
int64_t journal_runs_with_status(journal_t *j, run_status_t s);

/* The publish step's share: call from the store's publish function. */
void journal_publish(journal_t *j, const store_change_t *changes, size_t n);

/* ---- Mutations -------------------------------------------------------------- */

typedef enum journal_op {
    JOURNAL_BEGIN = 1,
    JOURNAL_HEARTBEAT,
    JOURNAL_APPEND,
    JOURNAL_END,
    JOURNAL_SUSPEND,
    JOURNAL_CLAIM,
    JOURNAL_CLAIM_NEXT, /* the oldest claimable run of app */
    JOURNAL_RESUME,     /* a PAUSED run: RUNNABLE, attempts reset */
} journal_op_t;

/* One mutation's arguments; which fields count depends on op. Strings are
 * NUL-terminated and borrowed only for the duration of journal_submit(). */
typedef struct journal_req {
    journal_op_t op;
    const char *run_id;                                 /* all but BEGIN */
    const char *app, *user, *session, *invocation_id;   /* BEGIN */
    const char *lease_owner;                            /* BEGIN, CLAIM */
    int64_t lease_ttl_ms;                   /* BEGIN, HEARTBEAT, CLAIM; 0 = default */
    const run_label_t *labels;                          /* BEGIN */
    size_t n_labels;
    uint64_t lease_epoch;              /* HEARTBEAT, APPEND, END, SUSPEND */
    const char *kind, *payload, *idempotency_key;       /* APPEND */
    uint64_t expected_seq;                              /* APPEND; 0 = any */
    run_status_t end_status;                            /* END */
    const char *result;                                 /* END; "" = none */
    const char *waiting_on;                             /* SUSPEND */
    int64_t timeout_ms;                          /* SUSPEND; 0 = none */
    uint64_t expected_epoch;                     /* CLAIM; 0 = any */
    const journal_retry_t *retry;                /* BEGIN; NULL = default */
    /* CLAIM_NEXT: if set by the time it applies, nothing is claimed (the
     * waiter is gone). Must stay valid until done. */
    const atomic_int *abandoned;
} journal_req_t;

typedef struct journal_result {
    reel_status_t status;
    run_t run;             /* the run after the mutation (all ops) */
    journal_entry_t entry; /* APPEND */
    int duplicate;         /* APPEND: the idempotency key was seen */
    int found;             /* CLAIM_NEXT: a run was claimed (in run) */
} journal_result_t;

/* Runs on the writer thread; res is freed after it returns. */
typedef void (*journal_done_fn)(void *arg, journal_result_t *res);

/*
 * Validates (INVALID_ARGUMENT naming the field), copies and queues. On OK,
 * done runs exactly once; otherwise nothing was queued and done never runs.
 * Outcomes: NOT_FOUND (unknown run), FAILED_PRECONDITION (wrong state or a
 * lost lease: "lease lost: current epoch 4", checked before anything else),
 * ABORTED (expected_seq), ALREADY_EXISTS (an idempotency key already used
 * with another kind or payload; the same ones answer duplicate).
 */
reel_code_t journal_submit(journal_t *j, const journal_req_t *req,
                           journal_done_fn done, void *arg, reel_status_t *st);

/* The validation journal_submit() does, on its own (pure; for fuzzing and
 * tools). May fill in defaults (lease_ttl_ms). */
reel_code_t journal_validate(journal_req_t *req, size_t max_payload,
                             reel_status_t *st);

/* The synchronous form (not on the writer thread). */
reel_code_t journal_exec(journal_t *j, const journal_req_t *req,
                         journal_result_t *res);
void journal_result_fini(journal_result_t *res);

/* ---- Reads -------------------------------------------------------------------- */

reel_code_t journal_get_run(journal_t *j, const char *run_id, run_t *out,
                            reel_status_t *st);

/*
 * Entries with seq > from_seq, at most limit (0 = default) and, with a page
 * budget (base/page.h; NULL = none), no more than fit in it, at least one.
 * *out is malloc'd (fini each, free array); *more tells whether a next page
 * exists (it starts after the last entry's seq). A from_seq at or past the
 * last entry (UINT64_MAX included) is an empty page: a read skips nothing.
 * An entry that cannot be read is DATA_LOSS (corrupt) or INTERNAL /
 * RESOURCE_EXHAUSTED, naming the run and seq.
 */
reel_code_t journal_read(journal_t *j, const char *run_id, uint64_t from_seq,
                         uint32_t limit, const reel_page_t *page,
                         journal_entry_t **out, size_t *n, int *more,
                         reel_status_t *st);

/* 1 to keep run r in a listing, 0 to skip it (the api's tenant check). */
typedef int (*run_keep_fn)(void *arg, const run_t *r);

typedef struct run_filter {
    const char *app, *user, *session; /* "" or NULL = any */
    /* Without an app: only apps whose names start with it (a tenant's
     * "::T:"); "" or NULL = any. A filter, like keep, that lets the
     * listing read those apps' indexes instead of every run. */
    const char *app_prefix;
    /* Without an app: not the apps whose names start with it (the default
     * tenant leaves out every tenant's "::"); "" or NULL = none. A filter
     * that lets the listing read the other apps' indexes. */
    const char *app_exclude;
    run_keep_fn keep;                 /* NULL = every run; else its own */
    void *keep_arg;
    run_status_t status;              /* RUN_STATUS_ANY = any */
    const char *start_after;          /* a run_id, or "" */
    uint32_t limit;                   /* 0 = default */
    const reel_page_t *page;          /* byte budget; NULL = none */
    /* NULL: no bound on the runs a page steps over. Else room for a run
     * id: a page that stepped over list_scan_max runs not matching ends
     * there, `more` set, and this is the id the next page starts after
     * (it is "" when the page ended otherwise). So a listing whose runs
     * are few among many (a tenant's among every tenant's, recoverable
     * ones among running ones) reads a bounded number per call. */
    char *resume;
} run_filter_t;

/* Runs matching f in run_id order, bounded as journal_read is; the next
 * page starts after the last run's id. */
reel_code_t journal_list_runs(journal_t *j, const run_filter_t *f,
                              run_t **out, size_t *n, int *more,
                              reel_status_t *st);

/*
 * RUNNABLE runs (not backing off), and RUNNING ones whose lease has
 * expired, oldest first, only app's when app is neither NULL nor "" (a
 * worker serves one app), after start_after (a run_id, or "" / NULL for
 * the first page), bounded as journal_read is; the next page starts after
 * the last run's id.
 */
reel_code_t journal_list_recoverable(journal_t *j, const char *app,
                                     const char *start_after, uint32_t limit,
                                     const reel_page_t *page, run_t **out,
                                     size_t *n, int *more,
                                     reel_status_t *st);

/* journal_list_recoverable of the runs f also matches: its app, or with
 * none its app_prefix and app_exclude (whose apps' indexes a page merges,
 * as ListRuns does), and keep (skipped runs count toward neither limit nor page); its
 * user, session and status are ignored. */
reel_code_t journal_list_recoverable_kept(journal_t *j, const run_filter_t *f,
                                          run_t **out, size_t *n, int *more,
                                          reel_status_t *st);

/* ---- Inside another module's apply function (writer thread only) --------- */

/* The run as the transaction sees it: OK, NOT_FOUND, DATA_LOSS. */
reel_code_t journal_txn_get_run(journal_t *j, store_txn_t *txn,
                                const char *run_id, run_t *out,
                                reel_status_t *st);

/* The newest run of (app, user, session) that is not terminal. */
reel_code_t journal_txn_session_run(journal_t *j, store_txn_t *txn,
                                    const char *app, const char *user,
                                    const char *session, run_t *out,
                                    reel_status_t *st);

/* OK, or FAILED_PRECONDITION unless epoch is r's current lease. */
reel_code_t journal_check_lease(const run_t *r, uint64_t epoch,
                                reel_status_t *st);

/* Writes r (which was prev before) and emits its change; *out, if not
 * NULL, gets the stored run. Its indexes and timers follow. */
reel_code_t journal_txn_put_run(journal_t *j, store_txn_t *txn,
                                const run_t *r, const run_t *prev, run_t *out,
                                reel_status_t *st);

/* Appends the next entry of r (no lease check) and emits it; fills *entry
 * and *run_out (the run with next_seq advanced) when not NULL. */
reel_code_t journal_txn_append(journal_t *j, store_txn_t *txn,
                               const run_t *r, uint64_t epoch,
                               const char *kind, const char *payload,
                               journal_entry_t *entry, run_t *run_out,
                               reel_status_t *st);

/*
 * SuspendRun asks this, in its apply, whether a signal named `name` is
 * already pending for the run (*found); if so the run becomes RUNNABLE at
 * once instead of WAITING. A failed look fails the SuspendRun: a run
 * parked past a signal that came would wait for nothing. Set once, before
 * any write.
 */
typedef reel_code_t (*journal_pending_fn)(void *arg, store_txn_t *txn,
                                          const char *run_id,
                                          const char *name, int *found,
                                          reel_status_t *st);
void journal_set_pending_check(journal_t *j, journal_pending_fn fn, void *arg);

/* ---- Timers and ClaimNextRun's waiters -------------------------------------- */

/*
 * Gives the journal its timers: lease expiries, backoffs and suspension
 * timeouts are scheduled from then on, and fired through it. Before
 * timers_arm(), once. Without it (tools, some tests) nothing expires.
 */
void journal_use_timers(journal_t *j, timers_t *t);

/*
 * Brings the runs of a data dir of store format `from` up to this build's
 * (store/store.h), in one request on the writer; what was there already
 * is written again the same. After journal_use_timers().
 *   from 1: dirs written before the durable timers (2026-12-03) hold
 *     RUNNABLE runs with no claimable entry ('c': ClaimNextRun never found
 *     them) and RUNNING runs with no lease timer (their leases never
 *     expired): puts both for every active run (a lease timer twice fires
 *     once: the second finds the run moved on).
 *   from 1 or 2: puts every active run in the index by app ('A').
 */
reel_code_t journal_upgrade(journal_t *j, int from, reel_status_t *st);

typedef struct journal_claim_waiter journal_claim_waiter_t;

/*
 * Registers interest in app's claimable runs: wake(arg) runs on the
 * writer thread, from the publish step, after each group that made a run
 * of app claimable (under the registry's lock: it must only post). NULL
 * if out of memory. Register before the first attempt, so no commit falls
 * between the two.
 */
journal_claim_waiter_t *journal_claim_wait(journal_t *j, const char *app,
                                           void (*wake)(void *arg),
                                           void *arg);
/* Unregisters and frees; wake is never called after. NULL ok. */
void journal_claim_unwait(journal_t *j, journal_claim_waiter_t *w);

/* ---- Subscriptions ---------------------------------------------------------- */

typedef struct journal_sink {
    /* 0 if taken; non-zero if full (then pump again when there is room, or
     * when woken). */
    int (*deliver)(void *arg, journal_entry_t *e);
    /*
     * The subscription is over: OK once the run is terminal and every entry
     * was delivered; otherwise the replay could not read what it owes
     * (DATA_LOSS for a corrupt entry or run record, INTERNAL for a failed
     * read or snapshot, RESOURCE_EXHAUSTED out of memory), the message
     * naming the run and seq. Called at most once, with no journal lock
     * held; it may destroy the subscription.
     */
    void (*end)(void *arg, const reel_status_t *st);
    /*
     * Optional: the subscription dropped out of live delivery (its sink
     * was full or refused, or a change could not be decoded) and needs a
     * journal_sub_pump() that a drain might never bring. Called from the
     * publish step with journal locks held: it must not block nor call
     * into the journal; the owner pumps soon from its own thread.
     */
    void (*wake)(void *arg);
} journal_sink_t;

/*
 * Entries after from_seq, stored then live. NOT_FOUND for an unknown run;
 * INVALID_ARGUMENT for a from_seq past the run's last seq, naming it (the
 * entries up to that seq, once appended, would never be sent). Nothing is
 * delivered before a pump.
 */
reel_code_t journal_sub_create(journal_t *j, const char *run_id,
                               uint64_t from_seq, const journal_sink_t *sink,
                               void *arg, journal_sub_t **out,
                               reel_status_t *st);
void journal_sub_pump(journal_sub_t *s);
/* Cancels and frees; waits for a pump or an end running on another thread
 * (no pump may start after). NULL ok; may be called inside the sink's end. */
void journal_sub_destroy(journal_sub_t *s);

#endif
