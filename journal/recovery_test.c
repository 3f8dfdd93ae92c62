/*
 * journal/recovery_test.c: leases that expire through durable timers,
 * retry backoff, PAUSED and ResumeRun, ClaimNextRun's index and wakes,
 * suspension timeouts.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/clock.h"
#include "journal/journal.h"
#include "testing/fixture.h"
#include "timers/timers.h"

typedef struct fixture {
    char dir[512];
    store_t *store;
    journal_t *j;
    timers_t *t;
    pthread_mutex_t mu;
    int wakes; /* ClaimNextRun wakes seen */
    /* Each LEASE_EXPIRED change's backoff (not_before - its time), in
     * commit order, as the publish step saw them. */
    int64_t expiry_waits[16];
    int n_expiries;
    /* before_commit's switches (under mu): hold the group that comes while
     * hold is set until it is cleared (held: one is held); fail the
     * fail_at-th group (counting in commits, 0: none). */
    pthread_cond_t cv;
    int hold, held, commits, fail_at;
} fixture_t;

static void publish(void *arg, const store_change_t *c, size_t n) {
    fixture_t *f = arg;

    for (size_t i = 0; i < n; i++) {
        run_t r;
        journal_entry_t e;

        int kind = journal_change_decode(&c[i], &r, &e);

        if (kind == 2)
            journal_entry_fini(&e);
        if (kind != 1)
            continue;
        pthread_mutex_lock(&f->mu);
        if (strcmp(r.reason, RUN_REASON_LEASE_EXPIRED) == 0 &&
            f->n_expiries < 16)
            f->expiry_waits[f->n_expiries++] =
                r.not_before_ms ? r.not_before_ms - r.updated_at_ms : 0;
        pthread_mutex_unlock(&f->mu);
        run_fini(&r);
    }
    if (f->j != NULL)
        journal_publish(f->j, c, n);
}

static reel_code_t before_commit(void *arg, store_txn_t *txn,
                                 const store_change_t *c, size_t n,
                                 reel_status_t *st) {
    fixture_t *f = arg;
    reel_code_t rc = REEL_OK;

    (void)txn, (void)c, (void)n;
    pthread_mutex_lock(&f->mu);
    if (f->hold) {
        f->held = 1;
        pthread_cond_broadcast(&f->cv);
        while (f->hold)
            pthread_cond_wait(&f->cv, &f->mu);
    }
    if (++f->commits == f->fail_at)
        rc = reel_status_set(st, REEL_INTERNAL, "the test fails this group");
    pthread_mutex_unlock(&f->mu);
    return rc;
}

static reel_code_t alarm(void *arg, store_txn_t *txn, reel_status_t *st) {
    fixture_t *f = arg;

    return f->t != NULL ? timers_alarm(f->t, txn, st) : REEL_OK;
}

static void open_all(fixture_t *f, const journal_limits_t *lim) {
    store_opts_t o = {0};
    reel_status_t st = REEL_STATUS_INIT;

    o.cfs = (const store_cf_desc_t *const[]){journal_cfs, timers_cfs, NULL};
    o.publish = publish;
    o.publish_arg = f;
    o.alarm = alarm;
    o.alarm_arg = f;
    o.before_commit = before_commit;
    o.before_commit_arg = f;
    f->store = testing_store_open(f->dir, &o);
    if (journal_create(f->store, lim, &f->j, &st) != REEL_OK ||
        timers_create(f->store, &f->t, &st) != REEL_OK)
        fail_msg("open: %s", reel_status_message(&st));
    journal_use_timers(f->j, f->t);
    if (timers_arm(f->t, &st) != REEL_OK)
        fail_msg("arm: %s", reel_status_message(&st));
}

static void close_all(fixture_t *f) {
    store_close(f->store);
    journal_destroy(f->j);
    timers_destroy(f->t);
    f->store = NULL;
    f->j = NULL;
    f->t = NULL;
}

static int setup(void **state) {
    fixture_t *f = calloc(1, sizeof(*f));
    /* Short backoffs, so a crash loop runs its course in a test. */
    journal_limits_t lim = {.retry = {40, 2.0, 1000, 4}};

    if (f == NULL || testing_dir_make(f->dir, sizeof(f->dir), "recovery") != 0)
        return -1;
    pthread_mutex_init(&f->mu, NULL);
    pthread_cond_init(&f->cv, NULL);
    open_all(f, &lim);
    *state = f;
    return 0;
}

static int teardown(void **state) {
    fixture_t *f = *state;
    int rc;

    close_all(f);
    rc = testing_dir_remove(f->dir);
    pthread_mutex_destroy(&f->mu);
    free(f);
    return rc;
}

/* ---- Helpers ------------------------------------------------------------ */

static void begin_ok(fixture_t *f, const char *app, const char *inv,
                     int64_t ttl, char id[27]) {
    journal_req_t q = {0};
    journal_result_t res;

    q.op = JOURNAL_BEGIN;
    q.app = app, q.user = "u1", q.session = "s1";
    q.invocation_id = inv;
    q.lease_owner = "w1";
    q.lease_ttl_ms = ttl;
    if (journal_exec(f->j, &q, &res) != REEL_OK)
        fail_msg("begin: %s", reel_status_message(&res.status));
    snprintf(id, 27, "%s", res.run.run_id);
    journal_result_fini(&res);
}

static reel_code_t op(fixture_t *f, journal_op_t kind, const char *id,
                      uint64_t epoch, journal_result_t *res) {
    journal_req_t q = {0};

    q.op = kind;
    q.run_id = id;
    q.lease_epoch = epoch;
    q.lease_owner = "w2";
    q.lease_ttl_ms = 60;
    q.kind = "step";
    q.payload = "{}";
    q.end_status = RUN_FAILED;
    q.result = "";
    return journal_exec(f->j, &q, res);
}

static run_t get(fixture_t *f, const char *id) {
    reel_status_t st = REEL_STATUS_INIT;
    run_t r;

    if (journal_get_run(f->j, id, &r, &st) != REEL_OK)
        fail_msg("get: %s", reel_status_message(&st));
    return r;
}

/* Waits until the run has status s (committed), at most ms; *out gets it. */
static int await_status(fixture_t *f, const char *id, run_status_t s,
                        int64_t ms, run_t *out) {
    int64_t end = reel_clock_mono_ns() + ms * 1000000;

    for (;;) {
        run_t r = get(f, id);
        struct timespec ts = {0, 2 * 1000000};

        if (r.status == s) {
            *out = r;
            return 1;
        }
        run_fini(&r);
        if (reel_clock_mono_ns() > end)
            return 0;
        nanosleep(&ts, NULL);
    }
}

static void expect(reel_code_t got, reel_code_t want, journal_result_t *res,
                   const char *needle) {
    if (got != want)
        fail_msg("got %s (%s), want %s", reel_code_name(got),
                 reel_status_message(&res->status), reel_code_name(want));
    if (needle && !strstr(reel_status_message(&res->status), needle))
        fail_msg("\"%s\" lacks \"%s\"", reel_status_message(&res->status),
                 needle);
    journal_result_fini(res);
}

/* ---- Tests -------------------------------------------------------------- */

/* An expired lease is a commit: RUNNABLE with LEASE_EXPIRED, and the old
 * epoch is refused from then on, heartbeat included. */
static void test_expired_lease_is_a_change_that_fences_the_epoch(
    void **state) {
    fixture_t *f = *state;
    journal_result_t res;
    char id[27];
    run_t r;

    begin_ok(f, "app", "i1", 50, id);
    assert_true(await_status(f, id, RUN_RUNNABLE, TESTING_WAIT_MS, &r));
    assert_string_equal(r.reason, RUN_REASON_LEASE_EXPIRED);
    assert_int_equal(r.not_before_ms, 0); /* the first expiry: at once */
    assert_int_equal(r.attempt, 1);
    assert_true(r.updated_at_ms >= r.lease_expires_at_ms); /* not early */
    run_fini(&r);
    expect(op(f, JOURNAL_HEARTBEAT, id, 1, &res), REEL_FAILED_PRECONDITION,
           &res, "claim it first");
    expect(op(f, JOURNAL_APPEND, id, 1, &res), REEL_FAILED_PRECONDITION, &res,
           NULL);
}

/* A heartbeat keeps the lease: the timer follows it instead of expiring. */
static void test_heartbeats_keep_the_lease(void **state) {
    fixture_t *f = *state;
    journal_result_t res;
    char id[27];
    run_t r;

    begin_ok(f, "app", "i1", 80, id);
    for (int i = 0; i < 8; i++) {
        struct timespec ts = {0, 30 * 1000000};
        journal_req_t q = {0};

        nanosleep(&ts, NULL);
        q.op = JOURNAL_HEARTBEAT;
        q.run_id = id;
        q.lease_epoch = 1;
        q.lease_ttl_ms = 80;
        expect(journal_exec(f->j, &q, &res), REEL_OK, &res, NULL);
    }
    r = get(f, id);
    assert_int_equal(r.status, RUN_RUNNING);
    run_fini(&r);
}

/* Without progress the second expiry waits a backoff, which grows; the
 * attempts run out into PAUSED; ResumeRun resets them; EndRun ends it. */
static void test_crash_loop_backs_off_then_pauses_until_resumed(
    void **state) {
    fixture_t *f = *state;
    journal_result_t res;
    int64_t waits[4] = {0};
    char id[27];
    run_t r;

    begin_ok(f, "app", "i1", 20, id); /* attempt 1 */
    for (int a = 1; a <= 3; a++) {
        assert_true(await_status(f, id, RUN_RUNNABLE, TESTING_WAIT_MS, &r));
        assert_int_equal(r.attempt, a);
        run_fini(&r);
        /* Until its backoff ends a claim is refused, naming until when. */
        for (;;) {
            reel_code_t rc = op(f, JOURNAL_CLAIM, id, 0, &res);
            if (rc == REEL_OK) {
                journal_result_fini(&res);
                break;
            }
            expect(rc, REEL_FAILED_PRECONDITION, &res, "backing off");
            struct timespec ts = {0, 5 * 1000000};
            nanosleep(&ts, NULL);
        }
    }
    pthread_mutex_lock(&f->mu);
    assert_int_equal(f->n_expiries, 3);
    for (int a = 1; a <= 3; a++)
        waits[a] = f->expiry_waits[a - 1];
    pthread_mutex_unlock(&f->mu);
    assert_int_equal(waits[1], 0);
    /* initial 40 ms, then doubled; jitter takes at most a fifth. */
    assert_true(waits[2] >= 32 && waits[2] <= 40);
    assert_true(waits[3] >= 64 && waits[3] <= 80);
    /* Attempt 4 of 4 dies too: PAUSED. */
    assert_true(await_status(f, id, RUN_PAUSED, TESTING_WAIT_MS, &r));
    assert_string_equal(r.reason, RUN_REASON_MAX_ATTEMPTS);
    assert_int_equal(r.attempt, 4);
    /* The last holder's epoch is fenced, though it is still the run's. */
    expect(op(f, JOURNAL_APPEND, id, r.lease_epoch, &res),
           REEL_FAILED_PRECONDITION, &res, "PAUSED");
    expect(op(f, JOURNAL_HEARTBEAT, id, r.lease_epoch, &res),
           REEL_FAILED_PRECONDITION, &res, "PAUSED");
    run_fini(&r);
    expect(op(f, JOURNAL_CLAIM, id, 0, &res), REEL_FAILED_PRECONDITION, &res,
           "PAUSED");
    expect(op(f, JOURNAL_RESUME, id, 0, &res), REEL_OK, &res, NULL);
    r = get(f, id);
    assert_int_equal(r.status, RUN_RUNNABLE);
    assert_int_equal(r.attempt, 0);
    assert_string_equal(r.reason, RUN_REASON_RESUMED);
    run_fini(&r);
    expect(op(f, JOURNAL_RESUME, id, 0, &res), REEL_FAILED_PRECONDITION, &res,
           "only a PAUSED run");
}

/* Attempts count the claims of a run's life; only expiries in a row with
 * no append between them exhaust its retries. A run that made progress on
 * more leases than max_attempts (4) is not PAUSED by its next crash. */
static void test_a_run_with_progress_on_every_lease_is_not_paused(
    void **state) {
    fixture_t *f = *state;
    journal_result_t res;
    uint64_t epoch = 1;
    char id[27];
    run_t r;

    begin_ok(f, "app", "i1", 60, id); /* attempt 1 */
    for (int a = 1; a <= 6; a++) {
        expect(op(f, JOURNAL_APPEND, id, epoch, &res), REEL_OK, &res, NULL);
        journal_result_fini(&res);
        /* Its worker dies after the step: claimable at once. */
        assert_true(await_status(f, id, RUN_RUNNABLE, TESTING_WAIT_MS, &r));
        assert_int_equal(r.not_before_ms, 0);
        run_fini(&r);
        expect(op(f, JOURNAL_CLAIM, id, 0, &res), REEL_OK, &res, NULL);
        journal_result_fini(&res);
        epoch++;
    }
    r = get(f, id);
    assert_int_equal(r.attempt, 7);
    run_fini(&r);
    /* Attempt 7 dies before any step: a retry, backing off, not PAUSED. */
    assert_true(await_status(f, id, RUN_RUNNABLE, TESTING_WAIT_MS, &r));
    assert_string_equal(r.reason, RUN_REASON_LEASE_EXPIRED);
    assert_true(r.not_before_ms > 0);
    run_fini(&r);
}

static reel_code_t nothing(store_txn_t *txn, void *arg, reel_status_t *st) {
    (void)txn;
    (void)arg;
    (void)st;
    return REEL_OK;
}

/* The counts once every group before now has finished (the writer runs
 * one group at a time: a request behind them is a barrier). */
static int64_t runs_with(fixture_t *f, run_status_t s) {
    reel_status_t st = REEL_STATUS_INIT;

    if (store_exec(f->store, nothing, NULL, NULL, &st) != REEL_OK)
        fail_msg("barrier: %s", reel_status_message(&st));
    return journal_runs_with_status(f->j, s);
}

/* A recovery counter's rendered value, or -1. */
static double recovered(metrics_registry_t *r, const char *reason) {
    reel_status_t st = REEL_STATUS_INIT;
    char *out = NULL, want[128], *p;
    size_t len;
    double v = -1;

    if (metrics_render(r, &out, &len, &st) != REEL_OK)
        fail_msg("render: %s", reel_status_message(&st));
    snprintf(want, sizeof(want), "reel_runs_recovered_total{reason=\"%s\"} ",
             reason);
    if ((p = strstr(out, want)) != NULL)
        v = strtod(p + strlen(want), NULL);
    free(out);
    return v;
}

/* reel_runs{status} counts what is stored: the seed finds the runs made
 * before, each committed change moves them, a refused request does not;
 * reel_runs_recovered_total counts each recovery that committed. */
static void test_run_counts_follow_committed_changes(void **state) {
    fixture_t *f = *state;
    metrics_registry_t *reg = NULL;
    reel_status_t st = REEL_STATUS_INIT;
    journal_result_t res;
    char keep[27], id[27];
    run_t r;

    begin_ok(f, "app", "keep", 600000, keep); /* RUNNING throughout */
    assert_int_equal(metrics_registry_create(&reg, &st), REEL_OK);
    assert_int_equal(journal_metrics_register(f->j, reg, &st), REEL_OK);
    assert_int_equal(runs_with(f, RUN_RUNNING), 1);
    begin_ok(f, "app", "i1", 20, id); /* attempt 1 of 4 */
    assert_int_equal(runs_with(f, RUN_RUNNING), 2);
    for (int a = 1; a <= 3; a++) {
        assert_true(await_status(f, id, RUN_RUNNABLE, TESTING_WAIT_MS, &r));
        run_fini(&r);
        assert_int_equal(runs_with(f, RUN_RUNNABLE), 1);
        assert_int_equal(runs_with(f, RUN_RUNNING), 1);
        for (;;) {
            reel_code_t rc = op(f, JOURNAL_CLAIM, id, 0, &res);

            journal_result_fini(&res);
            if (rc == REEL_OK)
                break;
            struct timespec ts = {0, 5 * 1000000};
            nanosleep(&ts, NULL);
        }
    }
    assert_true(await_status(f, id, RUN_PAUSED, TESTING_WAIT_MS, &r));
    run_fini(&r);
    assert_int_equal(runs_with(f, RUN_PAUSED), 1);
    assert_int_equal(runs_with(f, RUN_RUNNING), 1);
    assert_int_equal(runs_with(f, RUN_RUNNABLE), 0);
    /* Refused: nothing moves. */
    expect(op(f, JOURNAL_CLAIM, id, 0, &res), REEL_FAILED_PRECONDITION, &res,
           "PAUSED");
    assert_int_equal(runs_with(f, RUN_PAUSED), 1);
    expect(op(f, JOURNAL_END, keep, 1, &res), REEL_OK, &res, NULL);
    assert_int_equal(runs_with(f, RUN_RUNNING), 0);
    assert_int_equal(runs_with(f, RUN_FAILED), 1);
    assert_true(recovered(reg, RUN_REASON_LEASE_EXPIRED) == 3);
    assert_true(recovered(reg, RUN_REASON_MAX_ATTEMPTS) == 1);
    assert_true(recovered(reg, RUN_REASON_SIGNAL_TIMEOUT) == 0);
    /* A backoff's end races its claim: counted only when it fired first. */
    assert_true(recovered(reg, RUN_REASON_BACKOFF_ENDED) >= 0 &&
                recovered(reg, RUN_REASON_BACKOFF_ENDED) <= 2);
    close_all(f); /* drops the journal's figures */
    metrics_registry_destroy(reg);
    open_all(f, NULL);
}

/* Progress resets the count: a lease that appended and then expired is
 * claimable at once again. */
static void test_progress_means_no_backoff(void **state) {
    fixture_t *f = *state;
    journal_result_t res;
    char id[27];
    run_t r;

    begin_ok(f, "app", "i1", 20, id);
    for (uint64_t epoch = 2; epoch <= 4; epoch++) {
        assert_true(await_status(f, id, RUN_RUNNABLE, TESTING_WAIT_MS, &r));
        assert_int_equal(r.not_before_ms, 0);
        run_fini(&r);
        expect(op(f, JOURNAL_CLAIM, id, 0, &res), REEL_OK, &res, NULL);
        expect(op(f, JOURNAL_APPEND, id, epoch, &res), REEL_OK, &res, NULL);
    }
}

/* ClaimNextRun takes the app's oldest claimable run, skips other apps and
 * runs still leased, and finds nothing once they are all taken. */
static void test_claim_next_takes_the_oldest_due_of_its_app(void **state) {
    fixture_t *f = *state;
    journal_req_t q = {0};
    journal_result_t res;
    char a[27], b[27], other[27], busy[27];
    run_t r;

    begin_ok(f, "app", "i1", 20, a);
    assert_true(await_status(f, a, RUN_RUNNABLE, TESTING_WAIT_MS, &r));
    run_fini(&r);
    begin_ok(f, "app", "i2", 20, b);
    begin_ok(f, "other", "i3", 20, other);
    begin_ok(f, "app", "i4", 60000, busy);
    assert_true(await_status(f, b, RUN_RUNNABLE, TESTING_WAIT_MS, &r));
    run_fini(&r);
    q.op = JOURNAL_CLAIM_NEXT;
    q.app = "app";
    q.lease_owner = "w9";
    q.lease_ttl_ms = 60000;
    assert_int_equal(journal_exec(f->j, &q, &res), REEL_OK);
    assert_true(res.found);
    assert_string_equal(res.run.run_id, a);
    assert_int_equal(res.run.lease_epoch, 2);
    assert_int_equal(res.run.attempt, 2);
    journal_result_fini(&res);
    assert_int_equal(journal_exec(f->j, &q, &res), REEL_OK);
    assert_true(res.found);
    assert_string_equal(res.run.run_id, b);
    journal_result_fini(&res);
    assert_int_equal(journal_exec(f->j, &q, &res), REEL_OK);
    assert_false(res.found);
    journal_result_fini(&res);
    /* Without an app: INVALID_ARGUMENT naming it. */
    q.app = "";
    expect(journal_exec(f->j, &q, &res), REEL_INVALID_ARGUMENT, &res, "app");
}

/* Answers of requests submitted without waiting, counted. */
typedef struct answers {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int n, failed;
} answers_t;

static void answered(void *arg, journal_result_t *res) {
    answers_t *a = arg;

    pthread_mutex_lock(&a->mu);
    a->n++;
    a->failed += res->status.code != REEL_OK;
    pthread_cond_broadcast(&a->cv);
    pthread_mutex_unlock(&a->mu);
}

static void *begin_other(void *arg) {
    char id[27];

    begin_ok(arg, "other", "held", 60000, id);
    return NULL;
}

/* A group that fails whole after a claim and a ClaimNextRun of the same
 * app: the second found the index empty, but the claim was never written.
 * The run stays claimable, and the next ClaimNextRun finds it. */
static void test_a_failed_group_leaves_its_claims_runs_claimable(
    void **state) {
    fixture_t *f = *state;
    journal_req_t claim = {0}, next = {0};
    journal_result_t res;
    answers_t a = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0};
    pthread_t t;
    char id[27];
    run_t r;

    begin_ok(f, "app", "i1", 20, id);
    assert_true(await_status(f, id, RUN_RUNNABLE, TESTING_WAIT_MS, &r));
    run_fini(&r);
    /* Hold one group so that the two below queue and go as one. */
    pthread_mutex_lock(&f->mu);
    f->hold = 1;
    pthread_mutex_unlock(&f->mu);
    assert_int_equal(pthread_create(&t, NULL, begin_other, f), 0);
    pthread_mutex_lock(&f->mu);
    while (!f->held)
        pthread_cond_wait(&f->cv, &f->mu);
    pthread_mutex_unlock(&f->mu);
    claim.op = JOURNAL_CLAIM;
    claim.run_id = id;
    claim.lease_owner = "w2";
    claim.lease_ttl_ms = 60000;
    next.op = JOURNAL_CLAIM_NEXT;
    next.app = "app";
    next.lease_owner = "w3";
    next.lease_ttl_ms = 60000;
    assert_int_equal(journal_submit(f->j, &claim, answered, &a, NULL),
                     REEL_OK);
    assert_int_equal(journal_submit(f->j, &next, answered, &a, NULL), REEL_OK);
    pthread_mutex_lock(&f->mu);
    f->fail_at = f->commits + 2; /* the held group's, then theirs */
    f->hold = 0;
    pthread_cond_broadcast(&f->cv);
    pthread_mutex_unlock(&f->mu);
    assert_int_equal(pthread_join(t, NULL), 0);
    pthread_mutex_lock(&a.mu);
    while (a.n < 2)
        pthread_cond_wait(&a.cv, &a.mu);
    pthread_mutex_unlock(&a.mu);
    assert_int_equal(a.failed, 2);
    assert_int_equal(journal_exec(f->j, &next, &res), REEL_OK);
    assert_true(res.found);
    assert_string_equal(res.run.run_id, id);
    journal_result_fini(&res);
}

/* expected_epoch makes a claim a compare-and-swap. */
static void test_claim_with_a_stale_expected_epoch_is_refused(void **state) {
    fixture_t *f = *state;
    journal_req_t q = {0};
    journal_result_t res;
    char id[27];
    run_t r;

    begin_ok(f, "app", "i1", 20, id);
    assert_true(await_status(f, id, RUN_RUNNABLE, TESTING_WAIT_MS, &r));
    run_fini(&r);
    q.op = JOURNAL_CLAIM;
    q.run_id = id;
    q.lease_owner = "w2";
    q.expected_epoch = 7;
    expect(journal_exec(f->j, &q, &res), REEL_FAILED_PRECONDITION, &res,
           "expected_epoch");
    q.expected_epoch = 1;
    expect(journal_exec(f->j, &q, &res), REEL_OK, &res, NULL);
    expect(journal_exec(f->j, &q, &res), REEL_FAILED_PRECONDITION, &res,
           "expected_epoch");
}

static void on_wake(void *arg) {
    fixture_t *f = arg;

    pthread_mutex_lock(&f->mu);
    f->wakes++;
    pthread_mutex_unlock(&f->mu);
}

/* The commit that makes a run claimable wakes its app's waiters, and only
 * theirs. */
static void test_claimable_commit_wakes_the_apps_waiters(void **state) {
    fixture_t *f = *state;
    journal_claim_waiter_t *mine = journal_claim_wait(f->j, "app", on_wake, f);
    char id[27];
    run_t r;

    assert_non_null(mine);
    begin_ok(f, "other", "i1", 10, id);
    assert_true(await_status(f, id, RUN_RUNNABLE, TESTING_WAIT_MS, &r));
    run_fini(&r);
    begin_ok(f, "app", "i2", 10, id);
    assert_true(await_status(f, id, RUN_RUNNABLE, TESTING_WAIT_MS, &r));
    run_fini(&r);
    /* The wake comes from the publish step, just after the commit. */
    for (int64_t end = reel_clock_mono_ns() + TESTING_WAIT_MS * 1000000LL;;) {
        struct timespec ts = {0, 2 * 1000000};
        int w;

        pthread_mutex_lock(&f->mu);
        w = f->wakes;
        pthread_mutex_unlock(&f->mu);
        if (w > 0 || reel_clock_mono_ns() > end)
            break;
        nanosleep(&ts, NULL);
    }
    /* Once: the other app's commit, earlier, woke nobody. */
    pthread_mutex_lock(&f->mu);
    assert_int_equal(f->wakes, 1);
    pthread_mutex_unlock(&f->mu);
    journal_claim_unwait(f->j, mine);
}

/* A suspension's timeout journals what a delivered signal would, with
 * timed_out, and makes the run RUNNABLE, in one commit. */
static void test_suspension_timeout_is_journaled(void **state) {
    fixture_t *f = *state;
    journal_req_t q = {0};
    journal_result_t res;
    journal_entry_t *es = NULL;
    reel_status_t st = REEL_STATUS_INIT;
    size_t n = 0;
    int more = 0;
    char id[27];
    run_t r;

    begin_ok(f, "app", "i1", 60000, id);
    q.op = JOURNAL_SUSPEND;
    q.run_id = id;
    q.lease_epoch = 1;
    q.waiting_on = "approval";
    q.timeout_ms = 50;
    expect(journal_exec(f->j, &q, &res), REEL_OK, &res, NULL);
    assert_true(await_status(f, id, RUN_RUNNABLE, TESTING_WAIT_MS, &r));
    assert_string_equal(r.reason, RUN_REASON_SIGNAL_TIMEOUT);
    assert_int_equal(r.next_seq, 2);
    run_fini(&r);
    assert_int_equal(journal_read(f->j, id, 0, 0, NULL, &es, &n, &more, &st),
                     REEL_OK);
    assert_int_equal(n, 1);
    assert_string_equal(es[0].kind, "signal");
    assert_string_equal(es[0].payload,
                        "{\"name\":\"approval\",\"signal_id\":\"\","
                        "\"timed_out\":true}");
    journal_entry_fini(&es[0]);
    free(es);
    q.timeout_ms = -1;
    expect(journal_exec(f->j, &q, &res), REEL_INVALID_ARGUMENT, &res,
           "timeout_ms");
}

/* Leases that expire while the store is closed expire once at the next
 * start. */
static void test_lease_expires_after_a_restart(void **state) {
    fixture_t *f = *state;
    journal_limits_t lim = {.retry = {40, 2.0, 1000, 4}};
    char id[27];
    run_t r;

    begin_ok(f, "app", "i1", 100, id);
    close_all(f);
    open_all(f, &lim);
    assert_true(await_status(f, id, RUN_RUNNABLE, TESTING_WAIT_MS, &r));
    assert_string_equal(r.reason, RUN_REASON_LEASE_EXPIRED);
    run_fini(&r);
}

/* One page of ListRuns (list) or ListRunsToRecover into ids after *n,
 * with a resume buffer; returns `more` and leaves the next cursor in
 * after. */
static int page_of(fixture_t *f, int list, const char *app, const char *user,
                   char after[27], char ids[][27], size_t *n, size_t *got) {
    reel_status_t st = REEL_STATUS_INIT;
    run_filter_t filt = {0};
    char resume[27];
    run_t *runs;
    size_t k;
    int more;

    filt.app = app, filt.user = user;
    filt.start_after = after;
    filt.resume = resume;
    assert_int_equal(list ? journal_list_runs(f->j, &filt, &runs, &k, &more,
                                              &st)
                          : journal_list_recoverable_kept(f->j, &filt, &runs,
                                                          &k, &more, &st),
                     REEL_OK);
    for (size_t i = 0; i < k; i++) {
        snprintf(ids[(*n)++], 27, "%s", runs[i].run_id);
        run_fini(&runs[i]);
    }
    /* The next page starts after the runs stepped over, else after the
     * last one given. */
    if (resume[0] != '\0') {
        assert_true(more);
        assert_true(k == 0 || strcmp(resume, ids[*n - 1]) > 0);
        snprintf(after, 27, "%s", resume);
    } else if (k > 0) {
        snprintf(after, 27, "%s", ids[*n - 1]);
    }
    free(runs);
    *got = k;
    return more;
}

/*
 * A listing whose runs are few among many reads a bounded number per
 * page: past list_scan_max runs not matching, the page ends, `more` set,
 * with where to go on. Following the pages gives every run, once.
 */
static void test_a_page_steps_over_a_bounded_number_of_runs(void **state) {
    fixture_t *f = *state;
    journal_limits_t lim = {.retry = {40, 2.0, 1000, 4}, .list_scan_max = 5};
    char first[27], last[27], other[27], u2[27], after[27] = "";
    char ids[8][27];
    size_t n = 0, got, pages = 0;
    journal_req_t q = {0};
    journal_result_t res;
    run_t r;

    close_all(f);
    open_all(f, &lim);
    begin_ok(f, "shop", "a", 50, first);
    for (int i = 0; i < 12; i++) { /* RUNNING, leases long: not matching */
        char inv[16];

        snprintf(inv, sizeof(inv), "m%d", i);
        begin_ok(f, "mail", inv, 600000, other);
    }
    begin_ok(f, "shop", "b", 50, last);
    assert_true(await_status(f, first, RUN_RUNNABLE, TESTING_WAIT_MS, &r));
    run_fini(&r);
    assert_true(await_status(f, last, RUN_RUNNABLE, TESTING_WAIT_MS, &r));
    run_fini(&r);

    /* The recoverable among the active: 1, then 5 stepped over (page
     * ends), 5 more (an empty page that says more), then the last. */
    while (page_of(f, 0, NULL, NULL, after, ids, &n, &got)) {
        assert_true(++pages < 10);
        assert_true(n <= 2);
    }
    assert_int_equal(pages, 2);
    assert_int_equal(n, 2);
    assert_string_equal(ids[0], first);
    assert_string_equal(ids[1], last);

    /* ListRuns of one user among an app's runs of another. */
    for (int i = 0; i < 7; i++) {
        char inv[16];

        snprintf(inv, sizeof(inv), "s%d", i);
        begin_ok(f, "shop", inv, 600000, other);
    }
    q.op = JOURNAL_BEGIN;
    q.app = "shop", q.user = "u2", q.session = "s1";
    q.invocation_id = "u2";
    q.lease_owner = "w1";
    if (journal_exec(f->j, &q, &res) != REEL_OK)
        fail_msg("begin: %s", reel_status_message(&res.status));
    snprintf(u2, sizeof(u2), "%s", res.run.run_id);
    journal_result_fini(&res);
    n = 0, after[0] = '\0';
    /* first and last are u1's too: 9 stepped over before u2's run. */
    assert_true(page_of(f, 1, "shop", "u2", after, ids, &n, &got));
    assert_int_equal(got, 0);
    while (page_of(f, 1, "shop", "u2", after, ids, &n, &got))
        assert_true(n == 0);
    assert_int_equal(n, 1);
    assert_string_equal(ids[0], u2);

    /* Without a resume buffer, no bound: one page. */
    {
        run_filter_t filt = {0};
        run_t *runs;
        size_t k;
        int more;

        filt.app = "shop", filt.user = "u2";
        assert_int_equal(journal_list_runs(f->j, &filt, &runs, &k, &more,
                                           NULL),
                         REEL_OK);
        assert_int_equal(k, 1);
        assert_false(more);
        run_fini(&runs[0]);
        free(runs);
    }
}

/* A bad retry policy is refused naming the field. */
static void test_bad_retry_policy_is_refused(void **state) {
    fixture_t *f = *state;
    journal_retry_t p = {-1, 2.0, 1000, 3};
    journal_req_t q = {0};
    journal_result_t res;

    q.op = JOURNAL_BEGIN;
    q.app = "app", q.user = "u", q.session = "s", q.invocation_id = "i";
    q.lease_owner = "w";
    q.retry = &p;
    expect(journal_exec(f->j, &q, &res), REEL_INVALID_ARGUMENT, &res,
           "retry.initial_interval_ms");
    p.initial_ms = 10;
    p.multiplier = 0.5;
    expect(journal_exec(f->j, &q, &res), REEL_INVALID_ARGUMENT, &res,
           "retry.multiplier");
}

/*
 * A data dir from before the durable timers holds RUNNING runs without a
 * lease timer: their leases never expired. journal_upgrade() (format 1 to
 * 2) gives them one, and the expiry then happens as for any run.
 */
static void test_an_upgrade_gives_old_runs_their_lease_timers(void **state) {
    fixture_t *f = *state;
    journal_limits_t lim = {.retry = {40, 2.0, 1000, 4}};
    store_opts_t o = {0};
    reel_status_t st = REEL_STATUS_INIT;
    char id[27];
    run_t r;

    close_all(f);
    /* A journal without timers: what such a data dir holds. */
    o.cfs = (const store_cf_desc_t *const[]){journal_cfs, timers_cfs, NULL};
    f->store = testing_store_open(f->dir, &o);
    if (journal_create(f->store, &lim, &f->j, &st) != REEL_OK)
        fail_msg("open: %s", reel_status_message(&st));
    begin_ok(f, "shop", "old", 50, id);
    store_close(f->store);
    journal_destroy(f->j);
    f->store = NULL;
    f->j = NULL;

    open_all(f, &lim);
    assert_false(await_status(f, id, RUN_RUNNABLE, 400, &r));
    assert_int_equal(journal_upgrade(f->j, 1, &st), REEL_OK);
    assert_true(await_status(f, id, RUN_RUNNABLE, 5000, &r));
    assert_string_equal(r.reason, RUN_REASON_LEASE_EXPIRED);
    run_fini(&r);
    /* Twice is harmless: the run is not RUNNING any more. */
    assert_int_equal(journal_upgrade(f->j, 1, &st), REEL_OK);
    r = get(f, id);
    assert_int_equal(r.status, RUN_RUNNABLE);
    run_fini(&r);
}

typedef struct drop {
    fixture_t *f;
    char tag;
} drop_t;

/* Deletes every key of the runs column family that starts with tag: the
 * index a data dir of an older format lacks. */
static reel_code_t drop_apply(store_txn_t *txn, void *arg,
                              reel_status_t *st) {
    drop_t *d = arg;
    store_cf_t *cf = NULL;
    store_iter_t *it;
    reel_code_t rc;

    if ((rc = store_cf_lookup(d->f->store, "runs", &cf, st)) != REEL_OK)
        return rc;
    it = store_txn_iter(txn, cf);
    assert_non_null(it);
    for (store_iter_seek(it, &d->tag, 1); store_iter_valid(it);
         store_iter_next(it)) {
        size_t klen;
        const char *k = store_iter_key(it, &klen);

        if (k[0] != d->tag)
            break;
        store_txn_delete(txn, cf, k, klen);
    }
    rc = store_iter_status(it, st);
    store_iter_destroy(it);
    return rc;
}

static void drop_index(fixture_t *f, char tag) {
    reel_status_t st = REEL_STATUS_INIT;
    drop_t d = {f, tag};

    if (store_exec(f->store, drop_apply, &d, NULL, &st) != REEL_OK)
        fail_msg("drop: %s", reel_status_message(&st));
}

/* ListRuns of app's runs of any status: their ids, in order, in ids. */
static size_t list_app(fixture_t *f, const char *app, char ids[][27],
                       size_t cap) {
    run_filter_t filt = {0};
    run_t *runs;
    size_t n;
    int more;

    filt.app = app;
    assert_int_equal(journal_list_runs(f->j, &filt, &runs, &n, &more, NULL),
                     REEL_OK);
    assert_true(n <= cap);
    for (size_t i = 0; i < n; i++) {
        snprintf(ids[i], 27, "%s", runs[i].run_id);
        run_fini(&runs[i]);
    }
    free(runs);
    return n;
}

/*
 * A data dir of format 2 has no index of active runs by app, which one
 * app's ListRunsToRecover reads: journal_upgrade() from 2 makes it.
 */
static void test_an_upgrade_from_format_2_indexes_active_runs_by_app(
    void **state) {
    fixture_t *f = *state;
    reel_status_t st = REEL_STATUS_INIT;
    char id[27], other[27];
    run_t *runs;
    size_t n;
    int more;

    begin_ok(f, "shop", "old", 50, id);
    begin_ok(f, "mail", "old", 60000, other);
    for (int i = 0; i < 500; i++) { /* shop's lease ends: recoverable */
        assert_int_equal(journal_list_recoverable(f->j, NULL, NULL, 0, NULL,
                                                  &runs, &n, &more, &st),
                         REEL_OK);
        for (size_t k = 0; k < n; k++)
            run_fini(&runs[k]);
        free(runs);
        if (n == 1)
            break;
        nanosleep(&(struct timespec){0, 10 * 1000 * 1000}, NULL);
    }
    assert_int_equal(n, 1);
    drop_index(f, 'A');
    assert_int_equal(journal_list_recoverable(f->j, "shop", NULL, 0, NULL,
                                              &runs, &n, &more, &st),
                     REEL_OK);
    assert_int_equal(n, 0); /* what a format 2 dir would list */
    free(runs);

    assert_int_equal(journal_upgrade(f->j, 2, &st), REEL_OK);
    assert_int_equal(journal_list_recoverable(f->j, "shop", NULL, 0, NULL,
                                              &runs, &n, &more, &st),
                     REEL_OK);
    assert_int_equal(n, 1);
    assert_string_equal(runs[0].run_id, id);
    run_fini(&runs[0]);
    free(runs);
    /* Only the index: mail's RUNNING run keeps its one lease timer and
     * is not recoverable before its lease ends. */
    assert_int_equal(journal_list_recoverable(f->j, "mail", NULL, 0, NULL,
                                              &runs, &n, &more, &st),
                     REEL_OK);
    assert_int_equal(n, 0);
    free(runs);
    reel_status_fini(&st);
}

/*
 * A data dir of format 3 has no index of every run by app, which ListRuns
 * of one app reads: journal_upgrade() from 3 makes it, for runs ended as
 * well as active ones.
 */
static void test_an_upgrade_from_format_3_indexes_every_run_by_app(
    void **state) {
    fixture_t *f = *state;
    reel_status_t st = REEL_STATUS_INIT;
    char shop[2][27], mail[27], got[4][27];
    journal_result_t res;

    begin_ok(f, "shop", "old-1", 60000, shop[0]);
    begin_ok(f, "mail", "old-2", 60000, mail);
    begin_ok(f, "shop", "old-3", 60000, shop[1]);
    expect(op(f, JOURNAL_END, shop[0], 1, &res), REEL_OK, &res, NULL);
    assert_int_equal(list_app(f, "shop", got, 4), 2);
    drop_index(f, 'p');
    assert_int_equal(list_app(f, "shop", got, 4), 0); /* as format 3 lists */

    assert_int_equal(journal_upgrade(f->j, 3, &st), REEL_OK);
    assert_int_equal(list_app(f, "shop", got, 4), 2);
    assert_string_equal(got[0], shop[0]);
    assert_string_equal(got[1], shop[1]);
    assert_int_equal(list_app(f, "mail", got, 4), 1);
    assert_string_equal(got[0], mail);
    reel_status_fini(&st);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(
            test_expired_lease_is_a_change_that_fences_the_epoch, setup,
            teardown),
        cmocka_unit_test_setup_teardown(
            test_an_upgrade_gives_old_runs_their_lease_timers, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_an_upgrade_from_format_2_indexes_active_runs_by_app, setup,
            teardown),
        cmocka_unit_test_setup_teardown(
            test_an_upgrade_from_format_3_indexes_every_run_by_app, setup,
            teardown),
        cmocka_unit_test_setup_teardown(test_heartbeats_keep_the_lease, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(
            test_crash_loop_backs_off_then_pauses_until_resumed, setup,
            teardown),
        cmocka_unit_test_setup_teardown(test_progress_means_no_backoff, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(
            test_claim_next_takes_the_oldest_due_of_its_app, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_a_failed_group_leaves_its_claims_runs_claimable, setup,
            teardown),
        cmocka_unit_test_setup_teardown(
            test_claim_with_a_stale_expected_epoch_is_refused, setup,
            teardown),
        cmocka_unit_test_setup_teardown(
            test_claimable_commit_wakes_the_apps_waiters, setup, teardown),
        cmocka_unit_test_setup_teardown(test_suspension_timeout_is_journaled,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_lease_expires_after_a_restart,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_run_counts_follow_committed_changes, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_a_run_with_progress_on_every_lease_is_not_paused, setup,
            teardown),
        cmocka_unit_test_setup_teardown(test_bad_retry_policy_is_refused,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_a_page_steps_over_a_bounded_number_of_runs, setup,
            teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
