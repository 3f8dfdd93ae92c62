/*
 * journal/journal_write.c: the writer's operations.
 *
 * journal_submit() validates a request (INVALID_ARGUMENT naming the field
 * and the limit), copies it and queues it; its apply function runs on the
 * store's writer thread, where each check and the write it guards happen
 * together (journal.c lists the invariants), and its done callback answers
 * once the group is durable. Other modules' applies (signals) reach runs
 * and journals through the journal_txn_* functions at the end.
 *
 * run_ids are ULIDs made on the writer thread: 48 bits of milliseconds and
 * 80 random bits, incremented within one millisecond, so they are unique
 * and sort by creation.
 */
#include "journal/journal_int.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include <cjson/cJSON.h>
#include <uthash.h>

#include "base/clock.h"
#include "base/log.h"
#include "base/json.h"
#include "base/pattern.h"
#include "base/text.h"

/* ---- ULIDs --------------------------------------------------------------- */

static const char crockford[] = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";

static void ulid_next(journal_t *j, int64_t now_ms, char out[27]) {
    unsigned char bytes[16];
    int bit = 0;

    if (now_ms > j->ulid_ms) {
        j->ulid_ms = now_ms;
        if (getrandom(j->ulid_rand, sizeof(j->ulid_rand), 0) !=
            (ssize_t)sizeof(j->ulid_rand)) {
            /* Fall back to the clock's nanoseconds: still unique per ms
             * together with the increment below. */
            uint64_t ns = (uint64_t)reel_clock_mono_ns();
            for (int i = 0; i < 8; i++)
                j->ulid_rand[2 + i] = (unsigned char)(ns >> (8 * i));
        }
    } else {
        for (int i = 9; i >= 0 && ++j->ulid_rand[i] == 0; i--) {
        }
    }
    for (int i = 0; i < 6; i++)
        bytes[i] = (unsigned char)((uint64_t)j->ulid_ms >> (8 * (5 - i)));
    memcpy(bytes + 6, j->ulid_rand, 10);
    /* 128 bits as 26 base-32 digits: two leading zero bits, then 5 at a time. */
    for (int c = 0; c < 26; c++) {
        int v = 0;
        for (int b = 0; b < 5; b++, bit++) {
            int pos = bit - 2; /* the first two bits are padding */
            v <<= 1;
            if (pos >= 0)
                v |= (bytes[pos / 8] >> (7 - pos % 8)) & 1;
        }
        out[c] = crockford[v];
    }
    out[26] = '\0';
}

/* ---- Validation ---------------------------------------------------------- */

static reel_code_t check_ttl(int64_t *ttl, reel_status_t *st) {
    if (*ttl == 0)
        *ttl = JOURNAL_DEFAULT_TTL_MS;
    if (*ttl < 1 || *ttl > JOURNAL_MAX_TTL_MS)
        return reel_status_set(st, REEL_INVALID_ARGUMENT,
                               "lease_ttl_ms: must be 1-%d (got %lld)",
                               JOURNAL_MAX_TTL_MS, (long long)*ttl);
    return REEL_OK;
}

static reel_code_t check_json(const char *field, const char *s, size_t max,
                              int allow_empty, reel_status_t *st) {
    size_t len = strlen(s), off = 0;
    const char *why = NULL;

    if (len == 0 && allow_empty)
        return REEL_OK;
    if (len > max)
        return reel_status_set(st, REEL_INVALID_ARGUMENT,
                               "%s: %zu bytes exceeds the limit of %zu bytes "
                               "(reeld's --journal-max-payload-bytes)",
                               field, len, max);
    if (reel_json_validate(s, len, &off, &why) != 0)
        return reel_status_set(st, REEL_INVALID_ARGUMENT,
                               "%s: not valid JSON: %s at byte %zu", field, why,
                               off);
    return REEL_OK;
}

static reel_code_t check_retry(const journal_retry_t *p, reel_status_t *st) {
    if (p->initial_ms < 0 || p->initial_ms > JOURNAL_MAX_RETRY_INTERVAL_MS)
        return reel_status_set(st, REEL_INVALID_ARGUMENT,
                               "retry.initial_interval_ms: must be 0 (the "
                               "default) to %d (got %lld)",
                               JOURNAL_MAX_RETRY_INTERVAL_MS,
                               (long long)p->initial_ms);
    if (p->max_interval_ms < 0 ||
        p->max_interval_ms > JOURNAL_MAX_RETRY_INTERVAL_MS)
        return reel_status_set(st, REEL_INVALID_ARGUMENT,
                               "retry.max_interval_ms: must be 0 (the "
                               "default) to %d (got %lld)",
                               JOURNAL_MAX_RETRY_INTERVAL_MS,
                               (long long)p->max_interval_ms);
    /* NaN fails both comparisons: refused too. */
    if (!(p->multiplier == 0.0 ||
          (p->multiplier >= 1.0 &&
           p->multiplier <= JOURNAL_MAX_RETRY_MULTIPLIER)))
        return reel_status_set(st, REEL_INVALID_ARGUMENT,
                               "retry.multiplier: must be 0 (the default) "
                               "or 1 to %g (got %g)",
                               JOURNAL_MAX_RETRY_MULTIPLIER, p->multiplier);
    if (p->max_attempts > JOURNAL_MAX_RETRY_ATTEMPTS)
        return reel_status_set(st, REEL_INVALID_ARGUMENT,
                               "retry.max_attempts: must be 0 (the default) "
                               "to %d (got %u)",
                               JOURNAL_MAX_RETRY_ATTEMPTS, p->max_attempts);
    return REEL_OK;
}

static reel_code_t check_req(journal_t *j, journal_req_t *r,
                             reel_status_t *st) {
    reel_code_t rc = REEL_OK;

    if (r->op != JOURNAL_BEGIN && r->op != JOURNAL_CLAIM_NEXT &&
        (rc = journal_check_run_id("run_id", r->run_id ? r->run_id : "",
                                   st)) != REEL_OK)
        return rc;
    switch (r->op) {
    case JOURNAL_BEGIN:
        if ((rc = journal_check_name("app", r->app, st)) ||
            (rc = journal_check_name("user", r->user, st)) ||
            (rc = journal_check_name("session", r->session, st)) ||
            (rc = journal_check_name("invocation_id", r->invocation_id, st)) ||
            (rc = journal_check_name("lease_owner", r->lease_owner, st)) ||
            (rc = check_ttl(&r->lease_ttl_ms, st)))
            return rc;
        if (r->n_labels > JOURNAL_MAX_LABELS)
            return reel_status_set(st, REEL_INVALID_ARGUMENT,
                                   "labels: at most %d (got %zu)",
                                   JOURNAL_MAX_LABELS, r->n_labels);
        for (size_t i = 0; i < r->n_labels; i++) {
            const char *v = r->labels[i].value ? r->labels[i].value : "";
            const char *key = r->labels[i].key ? r->labels[i].key : "";
            if ((rc = reel_check_name("labels: key", key, strlen(key),
                                      JOURNAL_MAX_LABEL_KEY, st)))
                return rc;
            if (strlen(v) > JOURNAL_MAX_LABEL_VALUE ||
                !reel_utf8_valid(v, strlen(v)))
                return reel_status_set(st, REEL_INVALID_ARGUMENT,
                                       "labels: the value of \"%s\" must be "
                                       "at most %d bytes of UTF-8",
                                       key,
                                       JOURNAL_MAX_LABEL_VALUE);
        }
        return r->retry != NULL ? check_retry(r->retry, st) : REEL_OK;
    case JOURNAL_HEARTBEAT:
        return check_ttl(&r->lease_ttl_ms, st);
    case JOURNAL_CLAIM:
        if ((rc = journal_check_name("lease_owner", r->lease_owner, st)))
            return rc;
        return check_ttl(&r->lease_ttl_ms, st);
    case JOURNAL_CLAIM_NEXT:
        if ((rc = journal_check_name("app", r->app, st)) ||
            (rc = journal_check_name("lease_owner", r->lease_owner, st)))
            return rc;
        return check_ttl(&r->lease_ttl_ms, st);
    case JOURNAL_RESUME:
        return REEL_OK;
    case JOURNAL_APPEND:
        if (r->kind == NULL || r->payload == NULL)
            return reel_status_set(st, REEL_INVALID_ARGUMENT,
                                   "kind and payload are required");
        if ((rc = reel_check_charset("kind", r->kind, strlen(r->kind),
                                     JOURNAL_MAX_KIND, JOURNAL_KIND_CHARS,
                                     st)) ||
            (rc = reel_pattern_check_name("kind", r->kind, strlen(r->kind),
                                          st)))
            return rc;
        if (r->idempotency_key != NULL &&
            (strlen(r->idempotency_key) > JOURNAL_MAX_IDEMPOTENCY ||
             !reel_utf8_valid(r->idempotency_key, strlen(r->idempotency_key))))
            return reel_status_set(st, REEL_INVALID_ARGUMENT,
                                   "idempotency_key: at most %d bytes of "
                                   "UTF-8",
                                   JOURNAL_MAX_IDEMPOTENCY);
        return check_json("payload", r->payload, j->lim.max_payload, 0, st);
    case JOURNAL_END:
        if (!run_status_terminal(r->end_status))
            return reel_status_set(st, REEL_INVALID_ARGUMENT,
                                   "status: must be COMPLETED, FAILED or "
                                   "CANCELLED (got %s)",
                                   run_status_name(r->end_status));
        return check_json("result", r->result ? r->result : "",
                          j->lim.max_payload, 1, st);
    case JOURNAL_SUSPEND:
        /* A name SendSignal refuses could never wake the run. */
        if (r->timeout_ms < 0 || r->timeout_ms > JOURNAL_MAX_SUSPEND_MS)
            return reel_status_set(st, REEL_INVALID_ARGUMENT,
                                   "timeout_ms: must be 0 (none) to %lld "
                                   "(365 days) (got %lld)",
                                   (long long)JOURNAL_MAX_SUSPEND_MS,
                                   (long long)r->timeout_ms);
        if ((rc = reel_check_charset("waiting_on",
                                     r->waiting_on ? r->waiting_on : "",
                                     r->waiting_on ? strlen(r->waiting_on) : 0,
                                     JOURNAL_MAX_SIGNAL_NAME,
                                     JOURNAL_SIGNAL_CHARS, st)))
            return rc;
        return reel_pattern_check_name("waiting_on", r->waiting_on,
                                       strlen(r->waiting_on), st);
    }
    return reel_status_set(st, REEL_INVALID_ARGUMENT, "unknown operation");
}

reel_code_t journal_validate(journal_req_t *req, size_t max_payload,
                             reel_status_t *st) {
    journal_t probe;

    memset(&probe, 0, sizeof(probe));
    probe.lim.max_payload = max_payload ? max_payload
                                        : JOURNAL_DEFAULT_MAX_PAYLOAD;
    return check_req(&probe, req, st);
}

/* ---- The writer side ----------------------------------------------------- */

/* A queued mutation with deep copies of its strings. */
typedef struct op {
    store_req_t req;
    journal_t *j;
    journal_req_t r;
    char **owned; /* every copied string, freed at the end */
    size_t n_owned;
    int oom; /* a copy failed: the request is refused, never sent short */
    run_label_t *labels;
    journal_retry_t retry; /* BEGIN's, when given */
    journal_done_fn done;
    void *arg;
    journal_result_t res;
} op_t;

static const char *own(op_t *op, const char *s) {
    char *c;

    if (s == NULL)
        return NULL;
    c = strdup(s);
    if (c == NULL)
        op->oom = 1;
    else {
        op->owned[op->n_owned++] = c;
        op->req.bytes += strlen(c) + 1; /* what it holds while queued */
    }
    return c;
}

static void op_free(op_t *op) {
    for (size_t i = 0; i < op->n_owned; i++)
        free(op->owned[i]);
    free(op->owned);
    free(op->labels);
    journal_result_fini(&op->res);
    free(op);
}

static void iso_time(int64_t ms, char *buf, size_t n) {
    time_t s = (time_t)(ms / 1000);
    struct tm tm;
    size_t k;

    gmtime_r(&s, &tm);
    k = strftime(buf, n, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(buf + k, n - k, ".%03dZ", (int)(ms % 1000));
}

/* FAILED_PRECONDITION unless the caller holds the run's current lease. */
static reel_code_t check_lease(const run_t *r, uint64_t epoch,
                               reel_status_t *st) {
    if (run_status_terminal(r->status))
        return reel_status_set(st, REEL_FAILED_PRECONDITION,
                               "run %s is %s: it takes no more writes",
                               r->run_id, run_status_name(r->status));
    if (r->status == RUN_WAITING)
        return reel_status_set(st, REEL_FAILED_PRECONDITION,
                               "run %s is WAITING on signal \"%s\" and holds "
                               "no lease (current epoch %llu): send it the "
                               "signal, or EndRun it at that epoch",
                               r->run_id, r->waiting_on,
                               (unsigned long long)r->lease_epoch);
    if (r->status == RUN_RUNNABLE)
        return reel_status_set(st, REEL_FAILED_PRECONDITION,
                               "run %s is RUNNABLE and holds no lease "
                               "(current epoch %llu): claim it first",
                               r->run_id, (unsigned long long)r->lease_epoch);
    /* Its epoch is the last holder's, whose lease expired: fenced. */
    if (r->status == RUN_PAUSED)
        return reel_status_set(st, REEL_FAILED_PRECONDITION,
                               "run %s is PAUSED after %u attempts and holds "
                               "no lease (current epoch %llu): ResumeRun it, "
                               "or EndRun it at that epoch",
                               r->run_id, r->attempt,
                               (unsigned long long)r->lease_epoch);
    if (epoch != r->lease_epoch)
        return reel_status_set(st, REEL_FAILED_PRECONDITION,
                               "lease lost: current epoch %llu (yours is %llu, "
                               "held by \"%s\")",
                               (unsigned long long)r->lease_epoch,
                               (unsigned long long)epoch, r->lease_owner);
    return REEL_OK;
}

static int is_active(const run_t *r) {
    return r->status == RUN_RUNNABLE || r->status == RUN_RUNNING;
}

/* ---- The claimable index's hints ----------------------------------------- */

/* An app's hint: no live key of its claimable index sorts before it
 * (lowered by every insert before it, set to the key each ClaimNextRun
 * finds, or past every key when it finds none). Writer thread only. A
 * hint set in a request that is rolled back stays right: a claim sets it
 * to the key it found, which the rollback keeps, and an insert only lowers
 * it. A group that fails whole is another matter: a ClaimNextRun after a
 * claim in it found the index empty, but the claim was never written.
 * So the hints go whenever a group failed (store_groups_aborted). One per
 * app that ever had a claimable run: a few bytes each. */
typedef struct claim_hint {
    UT_hash_handle hh;
    unsigned char suffix[CLAIM_SUFFIX];
    char app[];
} claim_hint_t;

static claim_hint_t *hint_get(journal_t *j, const char *app) {
    uint64_t aborted = store_groups_aborted(j->store);
    claim_hint_t *h;

    if (j->hints_aborted != aborted) {
        journal_hints_free(j);
        j->hints_aborted = aborted;
    }
    HASH_FIND_STR(j->hints, app, h);
    return h;
}

/* Sets (or, lower_only, lowers) app's hint; out of memory leaves no hint,
 * which is a seek from the start. */
static void hint_set(journal_t *j, const char *app,
                     const unsigned char *suffix, int lower_only) {
    claim_hint_t *h = hint_get(j, app);

    if (h == NULL) {
        if (lower_only) /* no hint: seeks start at the prefix already */
            return;
        h = calloc(1, sizeof(*h) + strlen(app) + 1);
        if (h == NULL)
            return;
        strcpy(h->app, app);
        HASH_ADD_STR(j->hints, app, h);
    } else if (lower_only && memcmp(suffix, h->suffix, CLAIM_SUFFIX) >= 0) {
        return;
    }
    memcpy(h->suffix, suffix, CLAIM_SUFFIX);
}

void journal_hints_free(journal_t *j) {
    claim_hint_t *h, *tmp;

    HASH_ITER(hh, j->hints, h, tmp) {
        HASH_DEL(j->hints, h);
        free(h);
    }
}

/* Timer kinds (timers/): each carries the run's epoch it was set for. */
enum { TIMER_LEASE = 'L', TIMER_BACKOFF = 'B', TIMER_SUSPEND = 'S' };

static reel_code_t schedule(journal_t *j, store_txn_t *txn, uint8_t kind,
                            int64_t due_ms, const run_t *r,
                            reel_status_t *st) {
    unsigned char epoch[8];

    if (j->timers == NULL)
        return REEL_OK;
    reel_be64_put(epoch, r->lease_epoch);
    return timers_schedule(j->timers, txn, due_ms, kind, r->run_id,
                           strlen(r->run_id), epoch, 8, st);
}

/*
 * The timers r needs that prev did not have: a lease timer for a new
 * lease or one that now ends sooner (a longer one is followed when the
 * old timer fires and finds it renewed), a backoff timer for a new
 * not_before_ms, a suspension timer for a new deadline.
 */
static reel_code_t schedule_timers(journal_t *j, store_txn_t *txn,
                                   const run_t *r, const run_t *prev,
                                   int64_t now, reel_status_t *st) {
    int same_epoch = prev != NULL && prev->lease_epoch == r->lease_epoch;

    if (r->status == RUN_RUNNING &&
        !(same_epoch && prev->status == RUN_RUNNING &&
          prev->lease_expires_at_ms <= r->lease_expires_at_ms))
        return schedule(j, txn, TIMER_LEASE, r->lease_expires_at_ms, r, st);
    if (r->status == RUN_RUNNABLE && r->not_before_ms > now &&
        !(same_epoch && prev->status == RUN_RUNNABLE &&
          prev->not_before_ms == r->not_before_ms))
        return schedule(j, txn, TIMER_BACKOFF, r->not_before_ms, r, st);
    if (r->status == RUN_WAITING && r->wait_until_ms_ > 0 &&
        !(same_epoch && prev->status == RUN_WAITING &&
          prev->wait_until_ms_ == r->wait_until_ms_))
        return schedule(j, txn, TIMER_SUSPEND, r->wait_until_ms_, r, st);
    return REEL_OK;
}

/*
 * Writes the run (which was prev before; NULL: a new run), keeps the
 * active and claimable indexes right, schedules the timers it needs,
 * emits the change (if emit), and decodes the stored run into *out (if
 * not NULL). A RUNNABLE run is claimable from its not_before_ms, else
 * from when it became RUNNABLE.
 */
static reel_code_t put_run_rec(journal_t *j, store_txn_t *txn,
                               const run_t *r_in, const run_t *prev,
                               int emit, run_t *out, reel_status_t *st) {
    reel_wbuf_t w = {0};
    run_t r = *r_in;
    int64_t now = store_txn_now_ms(txn);
    int was_active = prev != NULL && is_active(prev), active = is_active(&r);
    int was_ready = prev != NULL && prev->status == RUN_RUNNABLE;
    int ready = r.status == RUN_RUNNABLE;
    int moved;
    /* The status indexes hold the runs the active index does not. */
    int restatus = prev == NULL || prev->status != r_in->status;
    int indexed = restatus && !is_active(r_in);
    int was_indexed = restatus && prev != NULL && !is_active(prev);
    /* A send by session reads the runs that have not ended. */
    int opens = prev == NULL && !run_status_terminal(r_in->status);
    int closes = prev != NULL && !run_status_terminal(prev->status) &&
                 run_status_terminal(r_in->status);
    journal_key_t ek = opens || closes
                           ? journal_open_session_key(r_in->app, r_in->user,
                                                      r_in->session,
                                                      r_in->run_id)
                           : (journal_key_t){NULL, 0};
    journal_key_t rk = journal_run_key(r.run_id),
                  ak = journal_active_key(r.run_id),
                  aak = journal_app_active_key(r.app, r.run_id),
                  ok = {NULL, 0}, nk = {NULL, 0}, sk[4] = {{NULL, 0}};
    reel_code_t rc = REEL_OK;

    r.ready_ms_ = !ready                ? 0
                  : r.not_before_ms > 0 ? r.not_before_ms
                  : was_ready           ? prev->ready_ms_
                                        : now;
    if (r.status != RUN_WAITING)
        r.wait_until_ms_ = 0;
    if (r.reason == NULL)
        r.reason = "";
    moved = !(was_ready && ready && prev->ready_ms_ == r.ready_ms_);
    if (was_ready && moved)
        ok = journal_claimable_key(prev->app, prev->ready_ms_, prev->run_id);
    if (ready && moved)
        nk = journal_claimable_key(r.app, r.ready_ms_, r.run_id);
    /* The status indexes: the new status's entries, the old one's gone. */
    if (indexed) {
        sk[0] = journal_status_key(r.status, r.run_id);
        sk[1] = journal_app_status_key(r.status, r.app, r.run_id);
    }
    if (was_indexed) {
        sk[2] = journal_status_key(prev->status, prev->run_id);
        sk[3] = journal_app_status_key(prev->status, prev->app, prev->run_id);
    }
    journal_run_encode(&r, &w);
    if (reel_wbuf_done(&w) != 0 || rk.p == NULL || ak.p == NULL ||
        aak.p == NULL || (was_ready && moved && ok.p == NULL) ||
        (ready && moved && nk.p == NULL) ||
        (indexed && (sk[0].p == NULL || sk[1].p == NULL)) ||
        (was_indexed && (sk[2].p == NULL || sk[3].p == NULL)) ||
        ((opens || closes) && ek.p == NULL)) {
        rc = reel_status_set(st, REEL_RESOURCE_EXHAUSTED, "out of memory");
        goto out;
    }
    store_txn_put(txn, j->cf_runs, rk.p, rk.len, w.p, w.len);
    if (opens)
        store_txn_put(txn, j->cf_runs, ek.p, ek.len, "", 0);
    else if (closes)
        store_txn_delete(txn, j->cf_runs, ek.p, ek.len);
    /* Blind: only listings read them, from snapshots. */
    for (int i = 2; i < 4; i++)
        if (sk[i].p != NULL)
            store_txn_delete_blind(txn, j->cf_runs, sk[i].p, sk[i].len);
    for (int i = 0; i < 2; i++)
        if (sk[i].p != NULL)
            store_txn_put_blind(txn, j->cf_runs, sk[i].p, sk[i].len, "", 0);
    if (active && !was_active) {
        store_txn_put(txn, j->cf_runs, ak.p, ak.len, "", 0);
        store_txn_put(txn, j->cf_runs, aak.p, aak.len, "", 0);
    } else if (!active && was_active) {
        store_txn_delete(txn, j->cf_runs, ak.p, ak.len);
        store_txn_delete(txn, j->cf_runs, aak.p, aak.len);
    }
    if (ok.p != NULL)
        store_txn_delete(txn, j->cf_runs, ok.p, ok.len);
    if (nk.p != NULL) {
        store_txn_put(txn, j->cf_runs, nk.p, nk.len, "", 0);
        hint_set(j, r.app,
                 (const unsigned char *)nk.p + nk.len - CLAIM_SUFFIX, 1);
    }
    if ((rc = schedule_timers(j, txn, &r, prev, now, st)) != REEL_OK)
        goto out;
    journal_count_status(j, txn, prev, &r);
    if (emit)
        store_txn_emit(txn, JOURNAL_MODULE_ID, CHANGE_RUN, w.p, w.len);
    if (out != NULL) {
        run_fini(out);
        if (journal_run_decode(w.p, w.len, out) != 0)
            rc = reel_status_set(st, REEL_RESOURCE_EXHAUSTED, "out of memory");
    }
out:
    reel_wbuf_fini(&w);
    free(rk.p);
    free(ak.p);
    free(aak.p);
    free(ok.p);
    free(nk.p);
    free(ek.p);
    for (int i = 0; i < 4; i++)
        free(sk[i].p);
    return rc;
}

static reel_code_t put_run(op_t *op, store_txn_t *txn, const run_t *r,
                           const run_t *prev, int emit, reel_status_t *st) {
    return put_run_rec(op->j, txn, r, prev, emit, &op->res.run, st);
}

/* A RUNNABLE run backing off: FAILED_PRECONDITION naming until when. */
static reel_code_t check_backoff(const run_t *r, int64_t now,
                                 reel_status_t *st) {
    char until[40];

    if (r->status != RUN_RUNNABLE || r->not_before_ms <= now)
        return REEL_OK;
    iso_time(r->not_before_ms, until, sizeof(until));
    return reel_status_set(st, REEL_FAILED_PRECONDITION,
                           "run %s is backing off after %u attempts: "
                           "claimable from %s (not_before_ms %lld)",
                           r->run_id, r->attempt, until,
                           (long long)r->not_before_ms);
}

/* nr (a copy of cur) leased to owner: a new epoch, one more attempt. */
static void lease_to(run_t *nr, const run_t *cur, const char *owner,
                     int64_t ttl_ms, int64_t now) {
    nr->status = RUN_RUNNING;
    nr->lease_owner = owner;
    nr->lease_epoch = cur->lease_epoch + 1;
    nr->lease_expires_at_ms = now + ttl_ms;
    nr->waiting_on = "";
    nr->updated_at_ms = now;
    nr->attempt = cur->attempt + 1;
    nr->not_before_ms = 0;
    nr->reason = "";
    nr->progress_ = 0;
}

/* Puts index entry k (freed here); out of memory when k could not be
 * made. */
static reel_code_t put_key(store_txn_t *txn, store_cf_t *cf,
                           journal_key_t k, int blind, reel_status_t *st) {
    if (k.p == NULL)
        return reel_status_set(st, REEL_RESOURCE_EXHAUSTED, "out of memory");
    if (blind)
        store_txn_put_blind(txn, cf, k.p, k.len, "", 0);
    else
        store_txn_put(txn, cf, k.p, k.len, "", 0);
    free(k.p);
    return REEL_OK;
}

static reel_code_t put_index(store_txn_t *txn, store_cf_t *cf,
                             journal_key_t k, reel_status_t *st) {
    return put_key(txn, cf, k, 0, st);
}

/* For a key only ever written blind (the status indexes). */
static reel_code_t put_index_blind(store_txn_t *txn, store_cf_t *cf,
                                   journal_key_t k, reel_status_t *st) {
    return put_key(txn, cf, k, 1, st);
}

static reel_code_t apply_begin(op_t *op, store_txn_t *txn, int64_t now,
                               reel_status_t *st) {
    const journal_req_t *q = &op->r;
    run_t probe = {0}, cur = {0}, nr;
    journal_key_t ik, sk = {NULL, 0};
    char *val = NULL, id[JOURNAL_RUN_ID_LEN + 1];
    size_t vlen = 0;
    reel_code_t rc;

    probe.app = q->app, probe.user = q->user, probe.session = q->session;
    probe.invocation_id = q->invocation_id;
    ik = journal_invocation_key(&probe);
    if (ik.p == NULL)
        return reel_status_set(st, REEL_RESOURCE_EXHAUSTED, "out of memory");
    rc = store_txn_get(txn, op->j->cf_runs, ik.p, ik.len, &val, &vlen, st);
    if (rc == REEL_OK) {
        char existing[JOURNAL_RUN_ID_LEN + 1];

        snprintf(existing, sizeof(existing), "%.*s", (int)vlen, val);
        free(val);
        free(ik.p);
        if ((rc = journal_load_run(op->j, txn, existing, &cur, st)) != REEL_OK)
            return rc == REEL_NOT_FOUND ? reel_status_set(st, REEL_DATA_LOSS,
                                                          "run %s is indexed "
                                                          "but missing",
                                                          existing)
                                        : rc;
        if (run_status_terminal(cur.status) || cur.status == RUN_WAITING ||
            cur.status == RUN_PAUSED) {
            /* Returned as it is: nothing to lease. */
            run_fini(&op->res.run);
            op->res.run = cur;
            op->res.run.resumed = 1;
            return REEL_OK;
        }
        if (cur.status == RUN_RUNNING && cur.lease_expires_at_ms > now &&
            strcmp(cur.lease_owner, q->lease_owner) != 0) {
            char until[40];

            iso_time(cur.lease_expires_at_ms, until, sizeof(until));
            rc = reel_status_set(st, REEL_FAILED_PRECONDITION,
                                 "run %s is leased to \"%s\" until %s (epoch "
                                 "%llu)",
                                 cur.run_id, cur.lease_owner, until,
                                 (unsigned long long)cur.lease_epoch);
            run_fini(&cur);
            return rc;
        }
        /* A crash-looping worker that begins again waits like a claim. */
        if ((rc = check_backoff(&cur, now, st)) != REEL_OK) {
            run_fini(&cur);
            return rc;
        }
        nr = cur;
        lease_to(&nr, &cur, q->lease_owner, q->lease_ttl_ms, now);
        rc = put_run(op, txn, &nr, &cur, 1, st);
        op->res.run.resumed = 1;
        run_fini(&cur);
        return rc;
    }
    if (rc != REEL_NOT_FOUND) {
        free(ik.p);
        return rc;
    }
    reel_status_fini(st);

    ulid_next(op->j, now, id);
    memset(&nr, 0, sizeof(nr));
    nr.run_id = id;
    nr.app = q->app, nr.user = q->user, nr.session = q->session;
    nr.invocation_id = q->invocation_id;
    nr.lease_owner = q->lease_owner;
    nr.waiting_on = "", nr.result = "";
    nr.status = RUN_RUNNING;
    nr.next_seq = 1;
    nr.lease_epoch = 1;
    nr.lease_expires_at_ms = now + q->lease_ttl_ms;
    nr.created_at_ms = nr.updated_at_ms = now;
    nr.labels = q->labels;
    nr.n_labels = q->n_labels;
    nr.attempt = 1;
    nr.reason = "";
    nr.retry = q->retry != NULL ? *q->retry : op->j->lim.retry;
    /* Each field left 0 takes reeld's default. */
    if (nr.retry.initial_ms == 0)
        nr.retry.initial_ms = op->j->lim.retry.initial_ms;
    if (nr.retry.multiplier == 0.0)
        nr.retry.multiplier = op->j->lim.retry.multiplier;
    if (nr.retry.max_interval_ms == 0)
        nr.retry.max_interval_ms = op->j->lim.retry.max_interval_ms;
    if (nr.retry.max_attempts == 0)
        nr.retry.max_attempts = op->j->lim.retry.max_attempts;
    sk = journal_session_key(&nr);
    if (sk.p == NULL) {
        free(ik.p);
        return reel_status_set(st, REEL_RESOURCE_EXHAUSTED, "out of memory");
    }
    store_txn_put(txn, op->j->cf_runs, ik.p, ik.len, id, JOURNAL_RUN_ID_LEN);
    store_txn_put(txn, op->j->cf_runs, sk.p, sk.len, "", 0);
    free(ik.p);
    free(sk.p);
    if ((rc = put_index(txn, op->j->cf_runs, journal_app_run_key(nr.app, id),
                        st)) != REEL_OK)
        return rc;
    return put_run(op, txn, &nr, NULL, 1, st);
}

/* Writes the next entry of cur and bumps its next_seq (no lease check). */
static reel_code_t append_core(journal_t *j, store_txn_t *txn,
                               const run_t *cur,
                               uint64_t epoch, const char *kind,
                               const char *payload, const char *idem,
                               int64_t now, journal_entry_t *out_entry,
                               run_t *out_run, reel_status_t *st) {
    journal_entry_t e;
    reel_wbuf_t w = {0};
    journal_key_t ek;
    run_t nr;
    reel_code_t rc = REEL_OK;

    memset(&e, 0, sizeof(e));
    e.run_id = cur->run_id;
    e.seq = cur->next_seq;
    e.lease_epoch = epoch;
    e.revision = store_txn_next_revision(txn);
    e.ts_ms = now;
    e.kind = kind;
    e.payload = payload;
    e.idempotency_key = idem ? idem : "";
    journal_entry_encode(&e, &w);
    ek = journal_entry_key(cur->run_id, e.seq);
    if (reel_wbuf_done(&w) != 0 || ek.p == NULL) {
        free(ek.p);
        reel_wbuf_fini(&w);
        return reel_status_set(st, REEL_RESOURCE_EXHAUSTED, "out of memory");
    }
    store_txn_put(txn, j->cf_journal, ek.p, ek.len, w.p, w.len);
    free(ek.p);
    /* The change, not the stored record, carries the run's app (its
     * tenant, for the WAL: journal_rec.c). */
    reel_wbuf_str(&w, cur->app);
    if (reel_wbuf_done(&w) != 0)
        return reel_status_set(st, REEL_RESOURCE_EXHAUSTED, "out of memory");
    store_txn_emit(txn, JOURNAL_MODULE_ID, CHANGE_ENTRY, w.p, w.len);
    if (out_entry != NULL && journal_entry_decode(w.p, w.len, out_entry) != 0)
        rc = reel_status_set(st, REEL_RESOURCE_EXHAUSTED, "out of memory");
    reel_wbuf_fini(&w);
    if (rc != REEL_OK)
        return rc;
    nr = *cur;
    nr.next_seq = cur->next_seq + 1;
    nr.updated_at_ms = now;
    /* Progress: the next expiry of this lease is not a crash loop. */
    nr.progress_ = 1;
    nr.failures_ = 0;
    return put_run_rec(j, txn, &nr, cur, 0, out_run, st);
}

/*
 * An append whose idempotency key already names entry seq: a retry. It
 * gets the original entry (duplicate) if it carries the same kind and
 * payload bytes; anything else is another write reusing the key, refused
 * with ALREADY_EXISTS (not FAILED_PRECONDITION, which tells a worker it
 * lost its lease) naming the key and the original seq.
 */
static reel_code_t apply_retry(op_t *op, store_txn_t *txn, const run_t *cur,
                               const char *idem, uint64_t seq,
                               reel_status_t *st) {
    const journal_req_t *q = &op->r;
    journal_entry_t *e = &op->res.entry;
    journal_key_t ek = journal_entry_key(cur->run_id, seq);
    char *rec = NULL;
    size_t rlen = 0;
    reel_code_t rc;

    if (ek.p == NULL)
        return reel_status_set(st, REEL_RESOURCE_EXHAUSTED, "out of memory");
    rc = store_txn_get(txn, op->j->cf_journal, ek.p, ek.len, &rec, &rlen, st);
    free(ek.p);
    if (rc == REEL_OK && journal_entry_decode(rec, rlen, e) != 0)
        rc = REEL_DATA_LOSS;
    free(rec);
    if (rc == REEL_NOT_FOUND || rc == REEL_DATA_LOSS)
        return reel_status_set(st, REEL_DATA_LOSS,
                               "run %s: the entry of idempotency key \"%s\" "
                               "(seq %llu) is missing or corrupt",
                               cur->run_id, idem, (unsigned long long)seq);
    if (rc != REEL_OK)
        return rc;
    if (strcmp(e->kind, q->kind) != 0)
        rc = reel_status_set(st, REEL_ALREADY_EXISTS,
                             "idempotency_key \"%s\" already names seq %llu "
                             "of run %s, of kind \"%s\" (this append's is "
                             "\"%s\"): a retry must repeat the original kind "
                             "and payload",
                             idem, (unsigned long long)seq, cur->run_id,
                             e->kind, q->kind);
    else if (strcmp(e->payload, q->payload) != 0)
        rc = reel_status_set(st, REEL_ALREADY_EXISTS,
                             "idempotency_key \"%s\" already names seq %llu "
                             "of run %s, with another payload: a retry must "
                             "repeat the original kind and payload",
                             idem, (unsigned long long)seq, cur->run_id);
    if (rc != REEL_OK) {
        journal_entry_fini(e);
        return rc;
    }
    op->res.duplicate = 1;
    return REEL_OK;
}

static reel_code_t apply_append(op_t *op, store_txn_t *txn, const run_t *cur,
                                int64_t now, reel_status_t *st) {
    const journal_req_t *q = &op->r;
    const char *idem = q->idempotency_key ? q->idempotency_key : "";
    journal_key_t kk = {NULL, 0};
    unsigned char seqbuf[8];
    char *val = NULL;
    size_t vlen = 0;
    reel_code_t rc;

    /* The lease before the key: a worker that lost its run must hear so at
     * once, even when retrying an append that committed before it lost
     * it. */
    if ((rc = check_lease(cur, q->lease_epoch, st)) != REEL_OK)
        return rc;
    if (*idem) {
        kk = journal_idem_key(cur->run_id, idem);
        if (kk.p == NULL)
            return reel_status_set(st, REEL_RESOURCE_EXHAUSTED,
                                   "out of memory");
        rc = store_txn_get(txn, op->j->cf_journal, kk.p, kk.len, &val, &vlen,
                           st);
        if (rc == REEL_OK && vlen == 8) {
            rc = apply_retry(op, txn, cur, idem,
                             reel_be64_get((unsigned char *)val), st);
            goto out;
        }
        if (rc == REEL_OK) { /* not absent: a retry would append twice */
            rc = reel_status_set(st, REEL_DATA_LOSS,
                                 "run %s: the record of idempotency key "
                                 "\"%s\" is corrupt (%zu bytes)",
                                 cur->run_id, idem, vlen);
            goto out;
        }
        if (rc != REEL_NOT_FOUND)
            goto out;
        reel_status_fini(st);
    }
    if (q->expected_seq != 0 && q->expected_seq != cur->next_seq) {
        rc = reel_status_set(st, REEL_ABORTED,
                             "expected seq %llu, but the next seq of run %s "
                             "is %llu",
                             (unsigned long long)q->expected_seq, cur->run_id,
                             (unsigned long long)cur->next_seq);
        goto out;
    }
    rc = append_core(op->j, txn, cur, q->lease_epoch, q->kind, q->payload,
                     idem, now, &op->res.entry, &op->res.run, st);
    if (rc == REEL_OK && *idem) {
        reel_be64_put(seqbuf, op->res.entry.seq);
        store_txn_put(txn, op->j->cf_journal, kk.p, kk.len, seqbuf, 8);
    }
out:
    free(val);
    free(kk.p);
    return rc;
}

static reel_code_t apply_claim(op_t *op, store_txn_t *txn, const run_t *cur,
                               int64_t now, reel_status_t *st) {
    run_t nr = *cur;
    reel_code_t rc;

    if (op->r.expected_epoch != 0 && op->r.expected_epoch != cur->lease_epoch)
        return reel_status_set(st, REEL_FAILED_PRECONDITION,
                               "expected_epoch: run %s is at epoch %llu, "
                               "not %llu (claimed by another)",
                               cur->run_id,
                               (unsigned long long)cur->lease_epoch,
                               (unsigned long long)op->r.expected_epoch);
    if (cur->status == RUN_RUNNING && cur->lease_expires_at_ms > now) {
        char until[40];

        iso_time(cur->lease_expires_at_ms, until, sizeof(until));
        return reel_status_set(st, REEL_FAILED_PRECONDITION,
                               "run %s is leased to \"%s\" until %s (epoch "
                               "%llu)",
                               cur->run_id, cur->lease_owner, until,
                               (unsigned long long)cur->lease_epoch);
    }
    if (cur->status != RUN_RUNNING && cur->status != RUN_RUNNABLE)
        return reel_status_set(st, REEL_FAILED_PRECONDITION,
                               "run %s is %s%s%s%s: only a RUNNABLE run or a "
                               "RUNNING one whose lease expired can be "
                               "claimed",
                               cur->run_id, run_status_name(cur->status),
                               cur->status == RUN_WAITING ? " on signal \""
                                                          : "",
                               cur->status == RUN_WAITING ? cur->waiting_on
                                                          : "",
                               cur->status == RUN_WAITING ? "\"" : "");
    if ((rc = check_backoff(cur, now, st)) != REEL_OK)
        return rc;
    lease_to(&nr, cur, op->r.lease_owner, op->r.lease_ttl_ms, now);
    return put_run(op, txn, &nr, cur, 1, st);
}

/*
 * ClaimNextRun's attempt: the first run in app's claimable index, if it is
 * due, claimed as ClaimRun would (found = 0 when none is due, or when the
 * waiter left before the attempt applied).
 */
static reel_code_t apply_claim_next(op_t *op, store_txn_t *txn, int64_t now,
                                    reel_status_t *st) {
    journal_key_t pfx = journal_claimable_prefix(op->r.app);
    claim_hint_t *h = hint_get(op->j, op->r.app);
    static const unsigned char past_all[CLAIM_SUFFIX] = {
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
    unsigned char *seek = NULL;
    store_iter_t *it = NULL;
    char id[JOURNAL_RUN_ID_LEN + 1] = "";
    run_t cur = {0};
    int found_key = 0;
    reel_code_t rc = REEL_OK;

    if (op->r.abandoned != NULL && atomic_load(op->r.abandoned))
        goto out;
    if (pfx.p == NULL || (seek = malloc(pfx.len + CLAIM_SUFFIX)) == NULL ||
        (it = store_txn_iter_prefix(txn, op->j->cf_runs, pfx.p, pfx.len)) ==
            NULL) {
        rc = reel_status_set(st, REEL_RESOURCE_EXHAUSTED, "out of memory");
        goto out;
    }
    memcpy(seek, pfx.p, pfx.len);
    memset(seek + pfx.len, 0, CLAIM_SUFFIX);
    if (h != NULL)
        memcpy(seek + pfx.len, h->suffix, CLAIM_SUFFIX);
    store_iter_seek(it, seek, pfx.len + CLAIM_SUFFIX);
    if (store_iter_valid(it)) {
        size_t klen;
        const char *k = store_iter_key(it, &klen);

        if (klen == pfx.len + CLAIM_SUFFIX &&
            memcmp(k, pfx.p, pfx.len) == 0) {
            found_key = 1;
            hint_set(op->j, op->r.app, (const unsigned char *)k + pfx.len, 0);
            if ((int64_t)reel_be64_get((const unsigned char *)k + pfx.len) <=
                now) {
                memcpy(id, k + pfx.len + 8, JOURNAL_RUN_ID_LEN);
                id[JOURNAL_RUN_ID_LEN] = '\0';
            }
        }
    }
    if (!found_key && store_iter_status(it, NULL) == REEL_OK)
        hint_set(op->j, op->r.app, past_all, 0);
    if ((rc = store_iter_status(it, st)) != REEL_OK || id[0] == '\0')
        goto out;
    if ((rc = journal_indexed_run(txn, op->j, NULL, id, &cur, st)) !=
        REEL_OK)
        goto out;
    if (cur.status != RUN_RUNNABLE)
        rc = reel_status_set(st, REEL_DATA_LOSS,
                             "run %s is in app %s's claimable index but is "
                             "%s",
                             id, op->r.app, run_status_name(cur.status));
    else if ((rc = apply_claim(op, txn, &cur, now, st)) == REEL_OK)
        op->res.found = 1;
out:
    run_fini(&cur);
    store_iter_destroy(it);
    free(seek);
    free(pfx.p);
    return rc;
}

/* ResumeRun: a PAUSED run is RUNNABLE again, its attempts reset. */
static reel_code_t apply_resume(op_t *op, store_txn_t *txn, const run_t *cur,
                                int64_t now, reel_status_t *st) {
    run_t nr = *cur;

    if (cur->status != RUN_PAUSED)
        return reel_status_set(st, REEL_FAILED_PRECONDITION,
                               "run %s is %s: only a PAUSED run can be "
                               "resumed",
                               cur->run_id, run_status_name(cur->status));
    nr.status = RUN_RUNNABLE;
    nr.reason = RUN_REASON_RESUMED;
    nr.attempt = 0;
    nr.failures_ = 0;
    nr.not_before_ms = 0;
    nr.updated_at_ms = now;
    return put_run(op, txn, &nr, cur, 1, st);
}

static reel_code_t op_apply(store_txn_t *txn, void *arg, reel_status_t *st) {
    op_t *op = arg;
    const journal_req_t *q = &op->r;
    int64_t now = store_txn_now_ms(txn);
    run_t cur = {0}, nr;
    reel_code_t rc;

    if (q->op == JOURNAL_BEGIN)
        return apply_begin(op, txn, now, st);
    if (q->op == JOURNAL_CLAIM_NEXT)
        return apply_claim_next(op, txn, now, st);
    if ((rc = journal_load_run(op->j, txn, q->run_id, &cur, st)) != REEL_OK)
        return rc;
    nr = cur;
    switch (q->op) {
    case JOURNAL_APPEND:
        rc = apply_append(op, txn, &cur, now, st);
        break;
    case JOURNAL_CLAIM:
        rc = apply_claim(op, txn, &cur, now, st);
        break;
    case JOURNAL_RESUME:
        rc = apply_resume(op, txn, &cur, now, st);
        break;
    case JOURNAL_HEARTBEAT:
        if ((rc = check_lease(&cur, q->lease_epoch, st)) != REEL_OK)
            break;
        nr.lease_expires_at_ms = now + q->lease_ttl_ms;
        nr.updated_at_ms = now;
        rc = put_run(op, txn, &nr, &cur, 1, st);
        break;
    case JOURNAL_END:
        /* A PAUSED or WAITING run holds no lease: the epoch it was paused
         * or suspended at ends it (cancelling a run parked on a signal
         * that will not come). A RUNNABLE run's epoch may be an expired
         * lease's: fenced, claim it first. */
        if (!((cur.status == RUN_PAUSED || cur.status == RUN_WAITING) &&
              q->lease_epoch == cur.lease_epoch) &&
            (rc = check_lease(&cur, q->lease_epoch, st)) != REEL_OK)
            break;
        nr.status = q->end_status;
        nr.result = q->result ? q->result : "";
        nr.lease_owner = "";
        nr.lease_expires_at_ms = 0;
        nr.waiting_on = "";
        nr.ended_at_ms = nr.updated_at_ms = now;
        nr.not_before_ms = 0;
        rc = put_run(op, txn, &nr, &cur, 1, st);
        break;
    case JOURNAL_SUSPEND: {
        int pending = 0;

        if ((rc = check_lease(&cur, q->lease_epoch, st)) != REEL_OK)
            break;
        /* The signal may have come first: then there is nothing to wait
         * for, and the run needs a worker at once. */
        if (op->j->pending != NULL &&
            (rc = op->j->pending(op->j->pending_arg, txn, cur.run_id,
                                 q->waiting_on, &pending, st)) != REEL_OK)
            break;
        nr.status = pending ? RUN_RUNNABLE : RUN_WAITING;
        nr.waiting_on = q->waiting_on;
        nr.lease_owner = "";
        nr.lease_expires_at_ms = 0;
        nr.updated_at_ms = now;
        nr.not_before_ms = 0;
        nr.reason = nr.status == RUN_RUNNABLE ? RUN_REASON_SIGNAL : "";
        nr.wait_until_ms_ = nr.status == RUN_WAITING && q->timeout_ms > 0
                                ? now + q->timeout_ms
                                : 0;
        rc = put_run(op, txn, &nr, &cur, 1, st);
        break;
    }
    default:
        rc = reel_status_set(st, REEL_INTERNAL, "unknown operation");
    }
    run_fini(&cur);
    return rc;
}

static void op_done(store_req_t *req) {
    op_t *op = (op_t *)req;

    reel_status_move(&op->res.status, &req->status);
    if (op->res.status.code != REEL_OK) {
        run_fini(&op->res.run);
        journal_entry_fini(&op->res.entry);
    }
    op->done(op->arg, &op->res);
    op_free(op);
}

reel_code_t journal_submit(journal_t *j, const journal_req_t *req,
                           journal_done_fn done, void *arg, reel_status_t *st) {
    op_t *op = calloc(1, sizeof(*op));
    reel_code_t rc;

    if (op == NULL)
        return reel_status_set(st, REEL_RESOURCE_EXHAUSTED, "out of memory");
    op->r = *req;
    if ((rc = check_req(j, &op->r, st)) != REEL_OK) {
        free(op);
        return rc;
    }
    op->owned = calloc(16 + 2 * op->r.n_labels, sizeof(char *));
    op->labels = calloc(op->r.n_labels ? op->r.n_labels : 1,
                        sizeof(run_label_t));
    if (op->owned == NULL || op->labels == NULL) {
        op_free(op);
        return reel_status_set(st, REEL_RESOURCE_EXHAUSTED, "out of memory");
    }
    op->r.run_id = own(op, req->run_id);
    op->r.app = own(op, req->app);
    op->r.user = own(op, req->user);
    op->r.session = own(op, req->session);
    op->r.invocation_id = own(op, req->invocation_id);
    op->r.lease_owner = own(op, req->lease_owner);
    op->r.kind = own(op, req->kind);
    op->r.payload = own(op, req->payload);
    op->r.idempotency_key = own(op, req->idempotency_key);
    op->r.result = own(op, req->result);
    op->r.waiting_on = own(op, req->waiting_on);
    for (size_t i = 0; i < req->n_labels; i++) {
        op->labels[i].key = own(op, req->labels[i].key);
        op->labels[i].value = own(op, req->labels[i].value
                                          ? req->labels[i].value
                                          : "");
    }
    op->r.labels = op->labels;
    if (op->oom) {
        op_free(op);
        return reel_status_set(st, REEL_RESOURCE_EXHAUSTED, "out of memory");
    }
    if (req->retry != NULL) {
        op->retry = *req->retry;
        op->r.retry = &op->retry;
    }
    op->j = j;
    op->done = done;
    op->arg = arg;
    op->req.apply = op_apply;
    op->req.done = op_done;
    op->req.arg = op;
    /* New runs and entries add data; the rest change a run's record and
     * go on on a full disk, so that runs can still end. */
    op->req.grows = req->op == JOURNAL_BEGIN || req->op == JOURNAL_APPEND;
    if ((rc = store_submit(j->store, &op->req)) != REEL_OK) {
        reel_status_move(st, &op->req.status);
        op_free(op);
        return rc;
    }
    return REEL_OK;
}

typedef struct sync_wait {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int done;
    journal_result_t *res;
} sync_wait_t;

static void sync_done(void *arg, journal_result_t *res) {
    sync_wait_t *w = arg;

    pthread_mutex_lock(&w->mu);
    *w->res = *res;
    memset(res, 0, sizeof(*res));
    w->done = 1;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

reel_code_t journal_exec(journal_t *j, const journal_req_t *req,
                         journal_result_t *res) {
    sync_wait_t w = {.res = res};
    reel_status_t st = REEL_STATUS_INIT;
    reel_code_t rc;

    memset(res, 0, sizeof(*res));
    pthread_mutex_init(&w.mu, NULL);
    pthread_cond_init(&w.cv, NULL);
    rc = journal_submit(j, req, sync_done, &w, &st);
    if (rc == REEL_OK) {
        pthread_mutex_lock(&w.mu);
        while (!w.done)
            pthread_cond_wait(&w.cv, &w.mu);
        pthread_mutex_unlock(&w.mu);
        rc = res->status.code;
    } else {
        reel_status_move(&res->status, &st);
    }
    pthread_mutex_destroy(&w.mu);
    pthread_cond_destroy(&w.cv);
    return rc;
}

void journal_result_fini(journal_result_t *res) {
    if (res == NULL)
        return;
    reel_status_fini(&res->status);
    run_fini(&res->run);
    journal_entry_fini(&res->entry);
}

/* ---- For other modules' apply functions ---------------------------------- */

reel_code_t journal_txn_get_run(journal_t *j, store_txn_t *txn,
                                const char *run_id, run_t *out,
                                reel_status_t *st) {
    reel_code_t rc;

    memset(out, 0, sizeof(*out));
    if ((rc = journal_check_run_id("run_id", run_id, st)) != REEL_OK)
        return rc;
    return journal_load_run(j, txn, run_id, out, st);
}

reel_code_t journal_txn_session_run(journal_t *j, store_txn_t *txn,
                                    const char *app, const char *user,
                                    const char *session, run_t *out,
                                    reel_status_t *st) {
    journal_key_t base = journal_open_session_key(app, user, session, NULL);
    store_iter_t *it =
        base.p ? store_txn_iter_prefix(txn, j->cf_runs, base.p, base.len)
               : NULL;
    char best[JOURNAL_RUN_ID_LEN + 1] = "";
    reel_code_t rc;

    memset(out, 0, sizeof(*out));
    if (it == NULL) {
        free(base.p);
        return reel_status_set(st, REEL_RESOURCE_EXHAUSTED, "out of memory");
    }
    /* The session's runs that have not ended ('o'), not every run it ever
     * had, newest first (run ids sort by creation; the index inverts
     * them): the first is the one. */
    for (store_iter_seek(it, base.p, base.len); store_iter_valid(it);
         store_iter_next(it)) {
        size_t klen;
        const char *k = store_iter_key(it, &klen);

        if (klen < base.len || memcmp(k, base.p, base.len) != 0)
            break;
        if (klen == base.len + JOURNAL_RUN_ID_LEN) {
            for (size_t i = 0; i < JOURNAL_RUN_ID_LEN; i++)
                best[i] = (char)(255 - (unsigned char)k[base.len + i]);
            best[JOURNAL_RUN_ID_LEN] = '\0';
            break;
        }
    }
    rc = store_iter_status(it, st);
    store_iter_destroy(it);
    free(base.p);
    if (rc != REEL_OK)
        return rc;
    if (best[0] == '\0')
        return reel_status_set(st, REEL_NOT_FOUND,
                               "session %s/%s/%s has no run that has not "
                               "ended",
                               app, user, session);
    return journal_load_run(j, txn, best, out, st);
}

reel_code_t journal_check_lease(const run_t *r, uint64_t epoch,
                                reel_status_t *st) {
    return check_lease(r, epoch, st);
}

reel_code_t journal_txn_put_run(journal_t *j, store_txn_t *txn,
                                const run_t *r, const run_t *prev, run_t *out,
                                reel_status_t *st) {
    return put_run_rec(j, txn, r, prev, 1, out, st);
}

reel_code_t journal_txn_append(journal_t *j, store_txn_t *txn,
                               const run_t *r, uint64_t epoch,
                               const char *kind, const char *payload,
                               journal_entry_t *entry, run_t *run_out,
                               reel_status_t *st) {
    return append_core(j, txn, r, epoch, kind, payload, "",
                       store_txn_now_ms(txn), entry, run_out, st);
}

void journal_set_pending_check(journal_t *j, journal_pending_fn fn,
                               void *arg) {
    j->pending = fn;
    j->pending_arg = arg;
}

/* ---- Timers: lease expiry, backoff, suspension timeout ------------------- */

/* xorshift64*: the backoff's jitter needs spread, not secrecy. Writer
 * thread only. */
static uint64_t next_rand(journal_t *j) {
    uint64_t x = j->rng;

    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    j->rng = x;
    return x * 0x2545F4914F6CDD1DULL;
}

/* The run's policy, each zero field (a record older than retry policies)
 * taking the journal's default. */
static journal_retry_t policy(const journal_t *j, const run_t *r) {
    journal_retry_t p = r->retry;

    if (p.initial_ms <= 0)
        p.initial_ms = j->lim.retry.initial_ms;
    if (p.multiplier < 1.0)
        p.multiplier = j->lim.retry.multiplier;
    if (p.max_interval_ms <= 0)
        p.max_interval_ms = j->lim.retry.max_interval_ms;
    if (p.max_attempts == 0)
        p.max_attempts = j->lim.retry.max_attempts;
    return p;
}

/* The wait after the failures-th consecutive expiry (failures >= 2):
 * initial * multiplier^(failures-2), at most max_interval, less up to a
 * fifth at random, so runs that crashed together spread out. */
static int64_t backoff_ms(journal_t *j, const journal_retry_t *p,
                          uint32_t failures) {
    double v = (double)p->initial_ms;
    int64_t ms;

    for (uint32_t i = 2; i < failures && v < (double)p->max_interval_ms; i++)
        v *= p->multiplier;
    ms = v >= (double)p->max_interval_ms ? p->max_interval_ms : (int64_t)v;
    if (ms >= 5)
        ms -= (int64_t)(next_rand(j) % (uint64_t)(ms / 5 + 1));
    return ms > 0 ? ms : 1;
}

/* The run a timer of ours names, in *r, with *live set when it is still at
 * the epoch the timer was set for. A timer that is not ours, or names a
 * run that is not there, is DATA_LOSS naming it. */
static reel_code_t timer_run(journal_t *j, store_txn_t *txn, const char *id,
                             size_t idlen, const void *val, size_t vlen,
                             run_t *r, int *live, reel_status_t *st) {
    char run_id[JOURNAL_RUN_ID_LEN + 1];
    reel_code_t rc;

    *live = 0;
    memset(r, 0, sizeof(*r));
    if (idlen != JOURNAL_RUN_ID_LEN || vlen != 8)
        return reel_status_set(st, REEL_DATA_LOSS,
                               "a journal timer is malformed (id of %zu "
                               "bytes, value of %zu)",
                               idlen, vlen);
    memcpy(run_id, id, JOURNAL_RUN_ID_LEN);
    run_id[JOURNAL_RUN_ID_LEN] = '\0';
    if ((rc = journal_indexed_run(txn, j, NULL, run_id, r, st)) != REEL_OK)
        return rc;
    *live = r->lease_epoch == reel_be64_get((const unsigned char *)val);
    return REEL_OK;
}

/*
 * A lease's timer: if the lease was renewed, follow it; else the run
 * becomes RUNNABLE (LEASE_EXPIRED), claimable at once after a lease that
 * made progress or a first expiry, after a backoff from the second
 * consecutive expiry without progress; PAUSED (MAX_ATTEMPTS) at the
 * max_attempts-th expiry in a row with no append since the first.
 */
static reel_code_t fire_lease(void *arg, store_txn_t *txn, int64_t due_ms,
                              const char *id, size_t idlen, const void *val,
                              size_t vlen, reel_status_t *st) {
    journal_t *j = arg;
    int64_t now = store_txn_now_ms(txn);
    journal_retry_t p;
    run_t cur, nr;
    int live;
    reel_code_t rc;

    (void)due_ms;
    if ((rc = timer_run(j, txn, id, idlen, val, vlen, &cur, &live, st)) !=
            REEL_OK ||
        !live || cur.status != RUN_RUNNING)
        goto out;
    if (cur.lease_expires_at_ms > now) { /* renewed by a heartbeat */
        rc = schedule(j, txn, TIMER_LEASE, cur.lease_expires_at_ms, &cur, st);
        goto out;
    }
    p = policy(j, &cur);
    nr = cur;
    nr.failures_ = cur.progress_ ? 1 : cur.failures_ + 1;
    nr.progress_ = 0;
    nr.lease_owner = "";
    nr.updated_at_ms = now;
    nr.not_before_ms = 0;
    /* Retries exhausted: max_attempts expiries in a row with no append
     * between them (failures_), not claims over the run's life: a run
     * woken by signals a thousand times is as crash-tolerant as a new one. */
    if (!cur.progress_ && nr.failures_ >= p.max_attempts) {
        nr.status = RUN_PAUSED;
        nr.reason = RUN_REASON_MAX_ATTEMPTS;
    } else {
        nr.status = RUN_RUNNABLE;
        nr.reason = RUN_REASON_LEASE_EXPIRED;
        if (nr.failures_ >= 2)
            nr.not_before_ms = now + backoff_ms(j, &p, nr.failures_);
    }
    if ((rc = put_run_rec(j, txn, &nr, &cur, 1, NULL, st)) == REEL_OK)
        journal_count_recovered(j, txn, nr.reason);
out:
    run_fini(&cur);
    return rc;
}

/* A backoff's end: the run says so in a commit of its own, which is what
 * makes it claimable to waiters and push dispatchers. */
static reel_code_t fire_backoff(void *arg, store_txn_t *txn, int64_t due_ms,
                                const char *id, size_t idlen,
                                const void *val, size_t vlen,
                                reel_status_t *st) {
    journal_t *j = arg;
    run_t cur, nr;
    int live;
    reel_code_t rc;

    if ((rc = timer_run(j, txn, id, idlen, val, vlen, &cur, &live, st)) ==
            REEL_OK &&
        live && cur.status == RUN_RUNNABLE && cur.not_before_ms == due_ms) {
        nr = cur;
        nr.reason = RUN_REASON_BACKOFF_ENDED;
        nr.updated_at_ms = store_txn_now_ms(txn);
        if ((rc = put_run_rec(j, txn, &nr, &cur, 1, NULL, st)) == REEL_OK)
            journal_count_recovered(j, txn, nr.reason);
    }
    run_fini(&cur);
    return rc;
}

/*
 * A suspension's deadline: the run gets the journal entry a delivered
 * signal would, {"name":...,"signal_id":"","timed_out":true}, and becomes
 * RUNNABLE (SIGNAL_TIMEOUT), in one commit.
 */
static reel_code_t fire_suspend(void *arg, store_txn_t *txn, int64_t due_ms,
                                const char *id, size_t idlen,
                                const void *val, size_t vlen,
                                reel_status_t *st) {
    journal_t *j = arg;
    int64_t now = store_txn_now_ms(txn);
    run_t cur, after = {0}, nr;
    cJSON *o = NULL;
    char *payload = NULL;
    int live;
    reel_code_t rc;

    if ((rc = timer_run(j, txn, id, idlen, val, vlen, &cur, &live, st)) !=
            REEL_OK ||
        !live || cur.status != RUN_WAITING || cur.wait_until_ms_ != due_ms)
        goto out;
    if ((o = cJSON_CreateObject()) == NULL ||
        cJSON_AddStringToObject(o, "name", cur.waiting_on) == NULL ||
        cJSON_AddStringToObject(o, "signal_id", "") == NULL ||
        cJSON_AddTrueToObject(o, "timed_out") == NULL ||
        (payload = cJSON_PrintUnformatted(o)) == NULL) {
        rc = reel_status_set(st, REEL_RESOURCE_EXHAUSTED, "out of memory");
        goto out;
    }
    if ((rc = append_core(j, txn, &cur, cur.lease_epoch, "signal", payload,
                          "", now, NULL, &after, st)) != REEL_OK)
        goto out;
    nr = after;
    nr.status = RUN_RUNNABLE;
    nr.reason = RUN_REASON_SIGNAL_TIMEOUT;
    nr.not_before_ms = 0;
    nr.updated_at_ms = now;
    if ((rc = put_run_rec(j, txn, &nr, &after, 1, NULL, st)) == REEL_OK)
        journal_count_recovered(j, txn, nr.reason);
out:
    cJSON_Delete(o);
    cJSON_free(payload);
    run_fini(&after);
    run_fini(&cur);
    return rc;
}

typedef struct upgrade {
    journal_t *j;
    int from; /* the data dir's store format */
} upgrade_t;

static reel_code_t upgrade_apply(store_txn_t *txn, void *arg,
                                 reel_status_t *st) {
    upgrade_t *u = arg;
    journal_t *j = u->j;
    store_iter_t *it;
    reel_code_t rc = REEL_OK;
    size_t n = 0;

    if (u->from >= 3)
        return REEL_OK;
    if ((it = store_txn_iter_prefix(txn, j->cf_runs, "a", 1)) == NULL)
        return reel_status_set(st, REEL_RESOURCE_EXHAUSTED, "out of memory");
    for (store_iter_seek(it, "a", 1); rc == REEL_OK && store_iter_valid(it);
         store_iter_next(it)) {
        size_t klen, vlen;
        const char *k = store_iter_key(it, &klen);
        char id[JOURNAL_RUN_ID_LEN + 1], *val = NULL;
        journal_key_t rk;
        run_t r = {0};

        if (klen == 0 || k[0] != 'a')
            break;
        if (klen != 1 + JOURNAL_RUN_ID_LEN)
            continue;
        memcpy(id, k + 1, JOURNAL_RUN_ID_LEN);
        id[JOURNAL_RUN_ID_LEN] = '\0';
        rk = journal_run_key(id);
        if (rk.p == NULL) {
            rc = reel_status_set(st, REEL_RESOURCE_EXHAUSTED, "out of memory");
            break;
        }
        rc = store_txn_get(txn, j->cf_runs, rk.p, rk.len, &val, &vlen, st);
        free(rk.p);
        if (rc == REEL_NOT_FOUND) { /* an index entry left without its run */
            reel_status_fini(st);
            rc = REEL_OK;
            continue;
        }
        if (rc != REEL_OK)
            break;
        if (journal_run_decode(val, vlen, &r) != 0) {
            free(val);
            rc = reel_status_set(st, REEL_DATA_LOSS,
                                 "run %s: the stored record is corrupt", id);
            break;
        }
        free(val);
        /* The active index by app. */
        rc = put_index(txn, j->cf_runs,
                       journal_app_active_key(r.app, r.run_id), st);
        if (rc == REEL_OK && u->from < 2 && r.status == RUN_RUNNABLE) {
            rc = put_index(txn, j->cf_runs,
                           journal_claimable_key(r.app, r.ready_ms_,
                                                 r.run_id),
                           st);
        } else if (rc == REEL_OK && u->from < 2 && r.status == RUN_RUNNING) {
            rc = schedule(j, txn, TIMER_LEASE, r.lease_expires_at_ms, &r, st);
        }
        run_fini(&r);
        n++;
    }
    if (rc == REEL_OK)
        rc = store_iter_status(it, st);
    store_iter_destroy(it);
    if (rc == REEL_OK && n > 0)
        REEL_INFO("journal", "indexed %zu active runs for the new format "
                             "(%s)",
                  n,
                  u->from < 2 ? "by app, claimable runs, lease timers"
                              : "by app");
    return rc;
}

/* Runs a commit of the upgrade's walk over every run takes. */
#define UPGRADE_BATCH 4096

/* The walk over every run of an upgrade from format 6 or older. */
typedef struct run_walk {
    journal_t *j;
    int from;                           /* the data dir's store format */
    char after[JOURNAL_RUN_ID_LEN + 1]; /* the last run walked, or "" */
    size_t n;                           /* runs walked by this batch */
    size_t walked, indexed, open;       /* by every batch; by status; by
                                           session, not ended */
    int done;
} run_walk_t;

/* What a run lacks from older formats: from 3 or older its entry in the
 * index of every run by app ('p'); from 5 or older, when it is neither
 * RUNNABLE nor RUNNING, its entries by status ('x' and 'X'); from 6 or
 * older, when it has not ended, its entry by session ('o'). */
static reel_code_t upgrade_run(run_walk_t *u, store_txn_t *txn,
                               const run_t *r, reel_status_t *st) {
    journal_t *j = u->j;
    reel_code_t rc = REEL_OK;

    if (u->from < 4)
        rc = put_index(txn, j->cf_runs, journal_app_run_key(r->app, r->run_id),
                       st);
    if (rc == REEL_OK && u->from < 7 && !run_status_terminal(r->status)) {
        u->open++;
        rc = put_index(txn, j->cf_runs,
                       journal_open_session_key(r->app, r->user, r->session,
                                                r->run_id),
                       st);
    }
    /* The active index has those RUNNABLE or RUNNING. */
    if (rc != REEL_OK || u->from >= 6 || is_active(r))
        return rc;
    u->indexed++;
    /* Blind, as put_run_rec writes them: a key is written only blind in a
     * group, so its writes stay in order. */
    rc = put_index_blind(txn, j->cf_runs,
                         journal_status_key(r->status, r->run_id), st);
    if (rc == REEL_OK)
        rc = put_index_blind(txn, j->cf_runs,
                             journal_app_status_key(r->status, r->app,
                                                    r->run_id),
                             st);
    return rc;
}

/* The next batch of the walk over every run, from where the last batch
 * stopped. */
static reel_code_t upgrade_runs_apply(store_txn_t *txn, void *arg,
                                      reel_status_t *st) {
    run_walk_t *u = arg;
    journal_t *j = u->j;
    journal_key_t seek = journal_run_key(u->after);
    store_iter_t *it = store_txn_iter(txn, j->cf_runs);
    reel_code_t rc = REEL_OK;

    u->n = 0;
    if (it == NULL || seek.p == NULL) {
        store_iter_destroy(it);
        free(seek.p);
        return reel_status_set(st, REEL_RESOURCE_EXHAUSTED, "out of memory");
    }
    for (store_iter_seek(it, seek.p, seek.len);
         rc == REEL_OK && store_iter_valid(it) && u->n < UPGRADE_BATCH;
         store_iter_next(it)) {
        size_t klen, vlen;
        const char *k = store_iter_key(it, &klen);
        const char *v = store_iter_value(it, &vlen);
        run_t r = {0};

        if (klen == 0 || k[0] != 'r')
            break;
        if (klen != 1 + JOURNAL_RUN_ID_LEN ||
            (u->after[0] && memcmp(k + 1, u->after, JOURNAL_RUN_ID_LEN) == 0))
            continue;
        if (journal_run_decode(v, vlen, &r) != 0)
            rc = reel_status_set(st, REEL_DATA_LOSS,
                                 "run %.*s: the stored record is corrupt",
                                 JOURNAL_RUN_ID_LEN, k + 1);
        else
            rc = upgrade_run(u, txn, &r, st);
        run_fini(&r);
        memcpy(u->after, k + 1, JOURNAL_RUN_ID_LEN);
        u->n++;
    }
    if (rc == REEL_OK && (rc = store_iter_status(it, st)) == REEL_OK)
        u->done = !store_iter_valid(it) || u->n < UPGRADE_BATCH;
    store_iter_destroy(it);
    free(seek.p);
    return rc;
}

reel_code_t journal_upgrade(journal_t *j, int from, reel_status_t *st) {
    upgrade_t u = {j, from};
    run_walk_t w = {.j = j, .from = from};
    reel_code_t rc = store_exec(j->store, upgrade_apply, &u, NULL, st);

    if (rc != REEL_OK || from >= 7)
        return rc;
    /* In batches, each its own commit: a crash part way leaves the
     * format as it was, and the next start writes them all again. */
    while (rc == REEL_OK && !w.done) {
        rc = store_exec(j->store, upgrade_runs_apply, &w, NULL, st);
        w.walked += w.n;
    }
    if (rc == REEL_OK && from < 4 && w.walked > 0)
        REEL_INFO("journal", "indexed %zu runs by app for the new format",
                  w.walked);
    if (rc == REEL_OK && w.indexed > 0)
        REEL_INFO("journal", "indexed %zu runs by status for the new format",
                  w.indexed);
    if (rc == REEL_OK && w.open > 0)
        REEL_INFO("journal", "indexed %zu runs not ended by session for the "
                  "new format", w.open);
    return rc;
}

void journal_use_timers(journal_t *j, timers_t *t) {
    if (getrandom(&j->rng, sizeof(j->rng), 0) != (ssize_t)sizeof(j->rng))
        j->rng = (uint64_t)reel_clock_mono_ns();
    j->rng |= 1; /* xorshift's one fixed point is 0 */
    j->timers = t;
    timers_register(t, TIMER_LEASE, fire_lease, j);
    timers_register(t, TIMER_BACKOFF, fire_backoff, j);
    timers_register(t, TIMER_SUSPEND, fire_suspend, j);
}
