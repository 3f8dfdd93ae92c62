/*
 * journal/journal.c: runs, journals, leases and fencing.
 *
 * A run is one execution of an agent or workflow; its journal is the
 * source of truth of what it did, entry by entry, each durable before it
 * is acknowledged. The module's files, by responsibility
 * (journal/journal_int.h holds what they share):
 *   journal_rec.c    the records and keys of the `runs` and `journal`
 *                    column families
 *   journal_write.c  the writer's operations: BeginRun, Append, Heartbeat,
 *                    EndRun, SuspendRun, ClaimRun, and what other modules'
 *                    applies call (signals)
 *   journal_read.c   GetRun, ReadJournal, ListRuns, ListRunsToRecover
 *   journal_sub.c    SubscribeRun, on the feed, and the publish step
 *
 * Invariants
 *   - Every check (lease epoch, status, expected seq, idempotency) and the
 *     write it guards run in one apply function on the writer thread, so no
 *     other write can come between them: fencing has no race. An append
 *     checks the lease first, then its idempotency key (a retry must carry
 *     the original kind and payload), then expected_seq.
 *   - An entry, its idempotency index and the run's next_seq commit
 *     together, so seqs are gapless and a retried key finds its entry.
 *   - Every mutation that writes emits exactly one change: a JOURNAL change
 *     (the entry record) for an append, a RUNS change (the run record) for
 *     the rest. A BeginRun that only returns an existing run, and a
 *     duplicate append, write nothing.
 *   - 'p' holds every run under its app, from the write that begins it;
 *     'a' exactly the RUNNABLE and RUNNING runs, and so does 'A'
 *     under their app; 'c' exactly the
 *     RUNNABLE ones, under their app and the time they are claimable from.
 *   - A RUNNING run has a lease timer at or before its expiry; a RUNNABLE
 *     run backing off has a backoff timer at its not_before_ms; a WAITING
 *     run with a timeout has one at its deadline. Each carries the epoch it
 *     was set for, and does nothing if the run moved on: timers are
 *     written with the record they follow, never deleted early.
 *
 * Recovery: nothing beyond RocksDB's own; the ULID clock restarts from
 * reel's clock, which takes up where the last commit left it (base/clock.h),
 * so ids sort in creation order across restarts; ids made in the same
 * millisecond as before a restart are still distinct by their random bits.
 * A data dir of an older store format is brought up to this one by
 * journal_upgrade().
 */
#include "journal/journal_int.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "base/text.h"

static const char *const status_names[] = {
    "STATUS_UNSPECIFIED", "RUNNABLE", "RUNNING",  "WAITING",
    "COMPLETED",          "FAILED",   "CANCELLED", "PAUSED",
};

const char *run_status_name(run_status_t s) {
    return (int)s >= 0 && s <= RUN_PAUSED ? status_names[s] : "UNKNOWN";
}

int run_status_terminal(run_status_t s) {
    return s == RUN_COMPLETED || s == RUN_FAILED || s == RUN_CANCELLED;
}

/* ---- Names --------------------------------------------------------------- */

reel_code_t journal_check_run_id(const char *field, const char *id,
                                 reel_status_t *st) {
    if (strlen(id) != JOURNAL_RUN_ID_LEN ||
        reel_check_charset(field, id, JOURNAL_RUN_ID_LEN, JOURNAL_RUN_ID_LEN,
                           "0-9A-Z", NULL) != REEL_OK)
        return reel_status_set(st, REEL_INVALID_ARGUMENT,
                               "%s: must be %d characters of [0-9A-Z] "
                               "(got \"%.40s\")",
                               field, JOURNAL_RUN_ID_LEN, id);
    return REEL_OK;
}

reel_code_t journal_check_name(const char *field, const char *s,
                               reel_status_t *st) {
    return reel_check_name(field, s ? s : "", s ? strlen(s) : 0,
                           JOURNAL_MAX_NAME, st);
}

/* ---- Create and destroy -------------------------------------------------- */

reel_code_t journal_create(store_t *store, const journal_limits_t *limits,
                           journal_t **out, reel_status_t *st) {
    journal_t *j = calloc(1, sizeof(*j));
    reel_code_t rc;

    *out = NULL;
    if (j == NULL)
        return reel_status_set(st, REEL_RESOURCE_EXHAUSTED, "out of memory");
    j->store = store;
    if (limits != NULL)
        j->lim = *limits;
    if (j->lim.max_payload == 0)
        j->lim.max_payload = JOURNAL_DEFAULT_MAX_PAYLOAD;
    if (j->lim.list_scan_max == 0)
        j->lim.list_scan_max = JOURNAL_LIST_SCAN_MAX;
    if (j->lim.retry.initial_ms <= 0)
        j->lim.retry.initial_ms = JOURNAL_DEFAULT_RETRY_INITIAL_MS;
    if (j->lim.retry.multiplier < 1.0)
        j->lim.retry.multiplier = JOURNAL_DEFAULT_RETRY_MULTIPLIER;
    if (j->lim.retry.max_interval_ms <= 0)
        j->lim.retry.max_interval_ms = JOURNAL_DEFAULT_RETRY_MAX_INTERVAL_MS;
    if (j->lim.retry.max_interval_ms < j->lim.retry.initial_ms)
        j->lim.retry.max_interval_ms = j->lim.retry.initial_ms;
    if (j->lim.retry.max_attempts == 0)
        j->lim.retry.max_attempts = JOURNAL_DEFAULT_RETRY_MAX_ATTEMPTS;
    pthread_mutex_init(&j->waiters_mu, NULL);
    if ((rc = store_cf_lookup(store, JOURNAL_CF_RUNS, &j->cf_runs, st)) !=
            REEL_OK ||
        (rc = store_cf_lookup(store, JOURNAL_CF_JOURNAL, &j->cf_journal,
                              st)) != REEL_OK ||
        (rc = journal_hub_init(j, store_revision(store), st)) != REEL_OK) {
        free(j);
        return rc;
    }
    *out = j;
    return REEL_OK;
}

void journal_destroy(journal_t *j) {
    if (j == NULL)
        return;
    metrics_registry_drop(j->metrics, j);
    journal_hub_fini(j);
    journal_hints_free(j);
    pthread_mutex_destroy(&j->waiters_mu);
    free(j);
}
