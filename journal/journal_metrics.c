/*
 * journal/journal_metrics.c: runs per status and recoveries, as metrics.
 *
 * reel_runs{status} is a count kept beside the runs, not read from them:
 * a scrape must not scan a table of millions of runs, and RocksDB's key
 * estimates are not counts. journal_metrics_register() counts the run
 * records once, on the writer between two groups (the group's earlier
 * writes included, through its transaction), and from then on every
 * write of a run that changes its status moves two counters by
 * store_txn_count(): they land when the write commits, never when its
 * request rolls back. So after the seed each figure is exactly the runs
 * stored with that status, for the price of two relaxed atomic adds per
 * status change, and the seed's one scan at start (only with metrics on;
 * it holds the writer for the scan, before reeld serves).
 *
 * reel_runs_recovered_total{reason} counts the recovery timers' changes
 * that committed (journal_write.c's fire functions), the same way.
 *
 * Threading: `counting` and the seed are the writer's; the counters are
 * read by scrapes with relaxed loads.
 */
#include "journal/journal_int.h"

#include <string.h>

static const char *const reasons[JOURNAL_RECOVERY_REASONS] = {
    RUN_REASON_LEASE_EXPIRED,
    RUN_REASON_BACKOFF_ENDED,
    RUN_REASON_SIGNAL_TIMEOUT,
    RUN_REASON_MAX_ATTEMPTS,
};

/* The counter of status s, or NULL for a status no build writes (a
 * record from a later one is not counted rather than overrun). */
static _Atomic int64_t *slot(journal_t *j, run_status_t s) {
    return (int)s > RUN_STATUS_ANY && s <= RUN_PAUSED ? &j->runs_by_status[s]
                                                      : NULL;
}

void journal_count_status(journal_t *j, store_txn_t *txn, const run_t *prev,
                          const run_t *r) {
    _Atomic int64_t *from, *to;

    if (!j->counting || (prev != NULL && prev->status == r->status))
        return;
    if (prev != NULL && (from = slot(j, prev->status)) != NULL)
        store_txn_count(txn, from, -1);
    if ((to = slot(j, r->status)) != NULL)
        store_txn_count(txn, to, 1);
}

void journal_count_recovered(journal_t *j, store_txn_t *txn,
                             const char *reason) {
    if (!j->counting)
        return;
    for (size_t i = 0; i < JOURNAL_RECOVERY_REASONS; i++)
        if (strcmp(reason, reasons[i]) == 0) {
            store_txn_count(txn, &j->recovered[i], 1);
            return;
        }
}

/* The seed: 'r' records as this request sees them; a record too short to
 * hold a status is DATA_LOSS naming it, as any read of it would be. */
static reel_code_t seed_apply(store_txn_t *txn, void *arg,
                              reel_status_t *st) {
    journal_t *j = arg;
    int64_t n[RUN_PAUSED + 1] = {0};
    store_iter_t *it = store_txn_iter_prefix(txn, j->cf_runs, "r", 1);
    reel_code_t rc;

    if (it == NULL)
        return reel_status_set(st, REEL_RESOURCE_EXHAUSTED, "out of memory");
    for (store_iter_seek(it, "r", 1); store_iter_valid(it);
         store_iter_next(it)) {
        size_t klen, vlen;
        const char *k = store_iter_key(it, &klen);
        const unsigned char *v =
            (const unsigned char *)store_iter_value(it, &vlen);

        if (klen < 1 || k[0] != 'r')
            break;
        if (vlen < 2) {
            store_iter_destroy(it);
            return reel_status_set(st, REEL_DATA_LOSS,
                                   "run %.*s: its record is %zu bytes",
                                   (int)(klen - 1), k + 1, vlen);
        }
        if (v[1] > RUN_STATUS_ANY && v[1] <= RUN_PAUSED)
            n[v[1]]++;
    }
    if ((rc = store_iter_status(it, st)) == REEL_OK) {
        for (int s = RUN_STATUS_ANY + 1; s <= RUN_PAUSED; s++)
            atomic_store(&j->runs_by_status[s], n[s]);
        j->counting = 1;
    }
    store_iter_destroy(it);
    return rc;
}

static double m_count(void *arg) {
    return (double)atomic_load_explicit((_Atomic int64_t *)arg,
                                        memory_order_relaxed);
}

reel_code_t journal_metrics_register(journal_t *j, metrics_registry_t *r,
                                     reel_status_t *st) {
    reel_code_t rc;

    if (r == NULL)
        return REEL_OK;
    j->metrics = r; /* journal_destroy() drops what is registered */
    if ((rc = store_exec(j->store, seed_apply, j, NULL, st)) != REEL_OK)
        return rc;
    for (int s = RUN_STATUS_ANY + 1; s <= RUN_PAUSED; s++)
        if ((rc = metrics_reg_fn(
                 r, j, METRICS_GAUGE, "reel_runs",
                 "Runs stored, by status (counted once at start, then "
                 "moved by each committed change).",
                 (const char *[]){"status", run_status_name((run_status_t)s),
                                  NULL},
                 m_count, &j->runs_by_status[s], st)) != REEL_OK)
            return rc;
    for (size_t i = 0; i < JOURNAL_RECOVERY_REASONS; i++)
        if ((rc = metrics_reg_fn(
                 r, j, METRICS_COUNTER, "reel_runs_recovered_total",
                 "Runs recovery changed, by reason: LEASE_EXPIRED and "
                 "SIGNAL_TIMEOUT (made RUNNABLE), BACKOFF_ENDED (claimable "
                 "again), MAX_ATTEMPTS (PAUSED).",
                 (const char *[]){"reason", reasons[i], NULL}, m_count,
                 &j->recovered[i], st)) != REEL_OK)
            return rc;
    return REEL_OK;
}

int64_t journal_runs_with_status(journal_t *j, run_status_t s) {
    _Atomic int64_t *c = slot(j, s);

    return c != NULL ? atomic_load(c) : 0;
}
