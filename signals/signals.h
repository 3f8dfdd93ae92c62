/*
 * signals/signals.h: durable point-to-point messages to one run.
 *
 * A signal waits in its run's mailbox, FIFO per (run, name), until one
 * awaiter consumes it. Consuming it and appending its journal entry (kind
 * "signal") are one commit, so a replay after a crash sees the delivery at
 * the same place, and no signal is delivered twice. A signal to a run
 * WAITING on its name makes the run RUNNABLE in the same commit.
 *
 * Threading: signals_t is thread-safe. Writes go through the store's
 * writer; done callbacks run there. Waiter wake functions run on the
 * writer thread with the registry lock held: they must only note the wake
 * and return (e.g. post to another thread).
 *
 * Ownership: signal_t owns its memory (signal_fini); strings NUL-terminated.
 */
#ifndef REEL_SIGNALS_SIGNALS_H
#define REEL_SIGNALS_SIGNALS_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "base/page.h"
#include "base/status.h"
#include "journal/journal.h"
#include "store/store.h"
#include "timers/timers.h"

#define SIGNALS_MAX_ID 256
#define SIGNALS_MAX_DELAY_MS 31536000000LL /* deliver_at_ms: 365 days ahead */
#define SIGNALS_DEFAULT_MAX_WAIT_MS 300000
#define SIGNALS_LIST_DEFAULT 100
#define SIGNALS_LIST_MAX 1000

typedef struct signals signals_t;
typedef struct signals_waiter signals_waiter_t;

typedef struct signal {
    const char *run_id, *name, *payload, *signal_id;
    /* The run's app, "" unless decoded from a change (which carries it so
     * the WAL tells the run's tenant without reading the run). */
    const char *app;
    uint64_t seq, revision, journal_seq;
    int64_t sent_at_ms, consumed_at_ms;
    /* Sent with a future deliver_at_ms and not delivered yet (its seq is
     * the send's; delivery gives it the next seq, as a send then would). */
    int scheduled;
    int64_t deliver_at_ms; /* 0: delivered when sent */
    /* Private to signals/: the one block the strings above point into,
     * freed by signal_fini(). Never read or set it. */
    void *priv_;
} signal_t;

void signal_fini(signal_t *s);

/* The module field of the signals' changes (store_change_t): unique among
 * reeld's modules, and in memory only (nothing stored carries it). */
#define SIGNALS_MODULE_ID 3

/* The signals' column family, for store_open(): "signals" (point
 * lookups), ended by a NULL name. */
extern const store_cf_desc_t signals_cfs[];

typedef struct signals_limits {
    size_t max_payload;   /* 0 = 1 MiB */
    int64_t max_wait_ms;  /* cap on AwaitSignal's timeout; 0 = 5 minutes */
} signals_limits_t;

/* Also installs SuspendRun's pending-signal check on j. The store must
 * have been opened with signals_cfs and journal_cfs (FAILED_PRECONDITION
 * naming the family otherwise). */
reel_code_t signals_create(store_t *store, journal_t *j,
                           const signals_limits_t *limits, signals_t **out,
                           reel_status_t *st);
/* Every waiter must be unregistered first. Accepts NULL. */
void signals_destroy(signals_t *s);

/*
 * Gives the signals their timers: sends with a future deliver_at_ms are
 * stored as scheduled and delivered by a timer. Before timers_arm(), once.
 * Without it such a send is FAILED_PRECONDITION.
 */
void signals_use_timers(signals_t *s, timers_t *t);

/* The cap on an await's timeout, in ms (limits->max_wait_ms, defaulted). */
int64_t signals_max_wait_ms(const signals_t *s);

/* 1 with *g filled (and *consumed set) for a SIGNALS change, 0 for another
 * module's change, -1 if malformed. */
int signals_change_decode(const store_change_t *c, signal_t *g,
                          int *consumed);

/* The publish step's share: wakes waiters of each signal sent. */
void signals_publish(signals_t *s, const store_change_t *changes, size_t n);

/* ---- Send ----------------------------------------------------------------- */

typedef struct signals_send_args {
    const char *run_id;                /* or "" and a session: */
    const char *app, *user, *session;
    const char *name, *payload, *signal_id;
    /* 0 or past: now. Else stored as scheduled and delivered then, exactly
     * as a send then would be; at most SIGNALS_MAX_DELAY_MS ahead. */
    int64_t deliver_at_ms;
} signals_send_args_t;

typedef struct signals_send_result {
    reel_status_t status;
    signal_t signal;
    int duplicate;
    run_status_t run_status;
} signals_send_result_t;

typedef void (*signals_send_done_fn)(void *arg, signals_send_result_t *res);

/* Validates, copies and queues; done runs once on OK (see journal_submit). */
reel_code_t signals_send(signals_t *s, const signals_send_args_t *a,
                         signals_send_done_fn done, void *arg,
                         reel_status_t *st);

/*
 * Cancels the scheduled signal signal_id of run_id (done gets it, as it
 * was). NOT_FOUND for an unknown run or signal_id; FAILED_PRECONDITION
 * for one already delivered. Its signal_id may be used again after.
 */
reel_code_t signals_cancel(signals_t *s, const char *run_id,
                           const char *signal_id, signals_send_done_fn done,
                           void *arg, reel_status_t *st);

/* ---- Consume ---------------------------------------------------------------- */

typedef struct signals_consume_result {
    reel_status_t status;
    int delivered;
    signal_t signal;
} signals_consume_result_t;

typedef void (*signals_consume_done_fn)(void *arg,
                                        signals_consume_result_t *res);

/* OK, or INVALID_ARGUMENT naming the field. *timeout_ms is clamped to the
 * cap. */
reel_code_t signals_check_await(signals_t *s, const char *run_id,
                                const char *name, int64_t *timeout_ms,
                                reel_status_t *st);

/*
 * Queues one attempt to consume the oldest pending signal named `name`,
 * fenced by the lease epoch. delivered = 0 when none is pending. If
 * *abandoned is set by the time the attempt is applied, nothing is
 * consumed (the awaiter is gone). `abandoned` must stay valid until done.
 */
reel_code_t signals_consume(signals_t *s, const char *run_id,
                            const char *name, uint64_t epoch,
                            const atomic_int *abandoned,
                            signals_consume_done_fn done, void *arg,
                            reel_status_t *st);

/* ---- Waiters ---------------------------------------------------------------- */

/* What a waiter that claims a signal gives the send that delivers it. */
typedef struct signals_claim {
    uint64_t epoch;              /* the lease epoch, as for signals_consume */
    const atomic_int *abandoned; /* as for signals_consume */
    signals_consume_done_fn done;
    void *arg;
} signals_claim_t;

/*
 * Runs on the writer thread, under the registry's lock, while a send of
 * (run, name) is applied: return 1 and fill *out to take the signal, 0 to
 * leave it to the wake. It must not block or call into signals.
 */
typedef int (*signals_claim_fn)(void *arg, signals_claim_t *out);

/*
 * Registers interest in signals named `name` for run_id: wake(arg) runs on
 * the writer thread after each such signal commits. With a claim, a send
 * that finds this waiter idle consumes the signal for it in the same write
 * (one commit sends and delivers, as a consume attempt would, with the
 * same lease and abandoned checks), then calls out->done once on the
 * writer thread; an attempt's error before it writes goes to done, not to
 * the sender. claim may be NULL. wake also runs (writer thread, after
 * the commit) when the run's lease at epoch ends: a change of the run
 * that leaves it not RUNNING, or RUNNING at another epoch. NULL if out of
 * memory.
 */
signals_waiter_t *signals_wait(signals_t *s, const char *run_id,
                               const char *name, uint64_t epoch,
                               void (*wake)(void *arg),
                               signals_claim_fn claim, void *arg);
/* Unregisters and frees; after it returns wake is never called. NULL ok. */
void signals_unwait(signals_t *s, signals_waiter_t *w);

/* ---- Reads ------------------------------------------------------------------ */

typedef struct signals_list_args {
    const char *run_id;
    const char *name; /* "" or NULL = every name */
    int include_consumed;
    uint32_t limit; /* 0 = SIGNALS_LIST_DEFAULT; over SIGNALS_LIST_MAX is invalid */
    /* The page cursor: the list goes on after the signal with seq
     * after_seq in the pending part (after_consumed 0) or in the consumed
     * part (1). 0 and 0: from the start. */
    uint64_t after_seq;
    int after_consumed;
    const reel_page_t *page; /* byte budget (base/page.h); NULL = none */
} signals_list_args_t;

/*
 * Pending signals in send order, then, if asked, consumed ones in seq
 * order, after the cursor; at most limit and, with a page budget, no more
 * than fit in it (at least one). *out is malloc'd (signal_fini each, free
 * the array); *more says whether a next page exists. The next page's
 * cursor is the last signal's seq and whether it was consumed
 * (consumed_at_ms > 0). A signal consumed between two pages may show up
 * in both, pending then consumed; none is skipped.
 */
reel_code_t signals_list(signals_t *s, const signals_list_args_t *a,
                         signal_t **out, size_t *n, int *more,
                         reel_status_t *st);

#endif
