/*
 * journal/journal_test.c: runs, appends, leases, fencing, subscriptions.
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
#include <unistd.h>

#include "base/codec.h"
#include "base/fault.h"
#include "journal/journal.h"
#include "testing/fixture.h"

typedef struct fixture {
    char dir[512];
    store_t *store;
    journal_t *j;
    char entry_app[300]; /* the app the last entry's change carried */
    int entry_changes;
} fixture_t;

static void publish(void *arg, const store_change_t *c, size_t n) {
    fixture_t *f = arg;

    for (size_t i = 0; i < n; i++) {
        run_t r = {0};
        journal_entry_t e = {0};

        if (journal_change_decode(&c[i], &r, &e) == 2) {
            snprintf(f->entry_app, sizeof(f->entry_app), "%s", e.app);
            f->entry_changes++;
        }
        run_fini(&r);
        journal_entry_fini(&e);
    }

    if (f->j != NULL)
        journal_publish(f->j, c, n);
}

static void open_all(fixture_t *f) {
    store_opts_t o = {0};
    reel_status_t st = REEL_STATUS_INIT;

    o.cfs = (const store_cf_desc_t *const[]){journal_cfs, NULL};
    o.publish = publish;
    o.publish_arg = f;
    f->store = testing_store_open(f->dir, &o);
    if (journal_create(f->store, NULL, &f->j, &st) != REEL_OK)
        fail_msg("open: %s", reel_status_message(&st));
}

static void close_all(fixture_t *f) {
    store_close(f->store);
    journal_destroy(f->j);
    f->store = NULL;
    f->j = NULL;
}

static int setup(void **state) {
    fixture_t *f = calloc(1, sizeof(*f));

    if (testing_dir_make(f->dir, sizeof(f->dir), "journal") != 0)
        return -1;
    open_all(f);
    *state = f;
    return 0;
}

static int teardown(void **state) {
    fixture_t *f = *state;
    int rc;

    close_all(f);
    rc = testing_dir_remove(f->dir);
    free(f);
    return rc;
}

/* ---- Helpers ------------------------------------------------------------ */

static reel_code_t begin(fixture_t *f, const char *inv, const char *owner,
                         int64_t ttl, journal_result_t *res) {
    journal_req_t q = {0};

    q.op = JOURNAL_BEGIN;
    q.app = "app", q.user = "u1", q.session = "s1";
    q.invocation_id = inv;
    q.lease_owner = owner;
    q.lease_ttl_ms = ttl;
    return journal_exec(f->j, &q, res);
}

/* Begins a run and copies its id out. */
static void begin_ok(fixture_t *f, const char *inv, const char *owner,
                     int64_t ttl, char id[27]) {
    journal_result_t res;

    if (begin(f, inv, owner, ttl, &res) != REEL_OK)
        fail_msg("begin: %s", reel_status_message(&res.status));
    snprintf(id, 27, "%s", res.run.run_id);
    journal_result_fini(&res);
}

static reel_code_t append(fixture_t *f, const char *id, uint64_t epoch,
                          const char *idem, uint64_t expect,
                          journal_result_t *res) {
    journal_req_t q = {0};

    q.op = JOURNAL_APPEND;
    q.run_id = id;
    q.lease_epoch = epoch;
    q.kind = "step";
    q.payload = "{\"x\":1}";
    q.idempotency_key = idem;
    q.expected_seq = expect;
    return journal_exec(f->j, &q, res);
}

static reel_code_t append_as(fixture_t *f, const char *id, uint64_t epoch,
                             const char *idem, const char *kind,
                             const char *payload, journal_result_t *res) {
    journal_req_t q = {0};

    q.op = JOURNAL_APPEND;
    q.run_id = id;
    q.lease_epoch = epoch;
    q.kind = kind;
    q.payload = payload;
    q.idempotency_key = idem;
    return journal_exec(f->j, &q, res);
}

static reel_code_t simple(fixture_t *f, journal_op_t op, const char *id,
                          uint64_t epoch, const char *owner,
                          journal_result_t *res) {
    journal_req_t q = {0};

    q.op = op;
    q.run_id = id;
    q.lease_epoch = epoch;
    q.lease_owner = owner;
    q.lease_ttl_ms = 200;
    q.end_status = RUN_COMPLETED;
    q.result = "\"done\"";
    q.waiting_on = "approval";
    return journal_exec(f->j, &q, res);
}

static void expect_code(reel_code_t got, reel_code_t want, journal_result_t *res,
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

static void test_begin_is_idempotent_on_the_invocation(void **state) {
    fixture_t *f = *state;
    journal_result_t a, b, c;

    assert_int_equal(begin(f, "inv1", "w1", 0, &a), REEL_OK);
    assert_int_equal(strlen(a.run.run_id), 26);
    assert_int_equal(a.run.status, RUN_RUNNING);
    assert_int_equal(a.run.lease_epoch, 1);
    assert_int_equal(a.run.next_seq, 1);
    assert_false(a.run.resumed);
    /* The same owner again: the same run, a fresh lease. */
    assert_int_equal(begin(f, "inv1", "w1", 0, &b), REEL_OK);
    assert_string_equal(b.run.run_id, a.run.run_id);
    assert_true(b.run.resumed);
    assert_int_equal(b.run.lease_epoch, 2);
    /* Another invocation: another run, with a later id. */
    assert_int_equal(begin(f, "inv2", "w1", 0, &c), REEL_OK);
    assert_true(strcmp(c.run.run_id, a.run.run_id) > 0);
    journal_result_fini(&a);
    journal_result_fini(&b);
    journal_result_fini(&c);
}

static void test_begin_of_a_run_leased_to_another_is_refused(void **state) {
    fixture_t *f = *state;
    journal_result_t res;
    char id[27];

    begin_ok(f, "inv", "w1", 60000, id);
    expect_code(begin(f, "inv", "w2", 0, &res), REEL_FAILED_PRECONDITION, &res,
                "leased to \"w1\"");
}

typedef struct appender {
    fixture_t *f;
    const char *id;
    uint64_t seqs[50];
    int failures;
} appender_t;

static void *appender_main(void *arg) {
    appender_t *a = arg;

    for (int i = 0; i < 50; i++) {
        journal_result_t res;

        if (append(a->f, a->id, 1, NULL, 0, &res) != REEL_OK)
            a->failures++;
        a->seqs[i] = res.entry.seq;
        journal_result_fini(&res);
    }
    return NULL;
}

static void test_concurrent_appends_get_gapless_seqs(void **state) {
    fixture_t *f = *state;
    static appender_t ap[8];
    pthread_t th[8];
    uint8_t seen[401] = {0};
    journal_entry_t *es;
    size_t n;
    int more;
    char id[27];

    begin_ok(f, "inv", "w1", 60000, id);
    for (int t = 0; t < 8; t++) {
        ap[t] = (appender_t){f, id, {0}, 0};
        pthread_create(&th[t], NULL, appender_main, &ap[t]);
    }
    for (int t = 0; t < 8; t++)
        pthread_join(th[t], NULL);
    for (int t = 0; t < 8; t++) {
        assert_int_equal(ap[t].failures, 0);
        for (int i = 0; i < 50; i++) {
            assert_true(ap[t].seqs[i] >= 1 && ap[t].seqs[i] <= 400);
            assert_int_equal(seen[ap[t].seqs[i]], 0);
            seen[ap[t].seqs[i]] = 1;
        }
    }
    assert_int_equal(journal_read(f->j, id, 0, 1000, NULL, &es, &n, &more, NULL),
                     REEL_OK);
    assert_int_equal(n, 400);
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(es[i].seq, i + 1);
        if (i > 0)
            assert_true(es[i].revision > es[i - 1].revision);
        journal_entry_fini(&es[i]);
    }
    free(es);
}

static void test_retried_append_with_the_same_key_writes_nothing(
    void **state) {
    fixture_t *f = *state;
    journal_result_t a, b;
    uint64_t rev;
    char id[27];

    begin_ok(f, "inv", "w1", 60000, id);
    assert_int_equal(append(f, id, 1, "k1", 0, &a), REEL_OK);
    rev = store_revision(f->store);
    assert_int_equal(append(f, id, 1, "k1", 0, &b), REEL_OK);
    assert_true(b.duplicate);
    assert_int_equal(b.entry.seq, a.entry.seq);
    assert_int_equal(b.entry.revision, a.entry.revision);
    assert_int_equal(store_revision(f->store), rev);
    journal_result_fini(&a);
    journal_result_fini(&b);
    expect_code(append(f, id, 1, NULL, 5, &a), REEL_ABORTED, &a,
                "next seq of run");
    assert_int_equal(append(f, id, 1, NULL, 2, &a), REEL_OK);
    journal_result_fini(&a);
}

static void test_zombie_is_fenced_after_a_claim(void **state) {
    fixture_t *f = *state;
    journal_result_t res;
    journal_entry_t *es;
    size_t n;
    int more;
    char id[27];

    begin_ok(f, "inv", "A", 100, id);
    assert_int_equal(append(f, id, 1, NULL, 0, &res), REEL_OK);
    journal_result_fini(&res);
    /* A live lease cannot be claimed. */
    expect_code(simple(f, JOURNAL_CLAIM, id, 0, "B", &res),
                REEL_FAILED_PRECONDITION, &res, "leased to \"A\"");
    usleep(150 * 1000);
    assert_int_equal(simple(f, JOURNAL_CLAIM, id, 0, "B", &res), REEL_OK);
    assert_int_equal(res.run.lease_epoch, 2);
    assert_string_equal(res.run.lease_owner, "B");
    journal_result_fini(&res);

    expect_code(append(f, id, 1, NULL, 0, &res), REEL_FAILED_PRECONDITION,
                &res, "lease lost: current epoch 2");
    expect_code(simple(f, JOURNAL_HEARTBEAT, id, 1, NULL, &res),
                REEL_FAILED_PRECONDITION, &res, "lease lost");
    expect_code(simple(f, JOURNAL_END, id, 1, NULL, &res),
                REEL_FAILED_PRECONDITION, &res, "lease lost");
    assert_int_equal(append(f, id, 2, NULL, 0, &res), REEL_OK);
    journal_result_fini(&res);
    assert_int_equal(journal_read(f->j, id, 0, 0, NULL, &es, &n, &more, NULL),
                     REEL_OK);
    assert_int_equal(n, 2);
    assert_int_equal(es[0].lease_epoch, 1);
    assert_int_equal(es[1].lease_epoch, 2);
    for (size_t i = 0; i < n; i++)
        journal_entry_fini(&es[i]);
    free(es);
}

/*
 * A worker that lost its run and retries an append whose key it already
 * used hears that it lost the lease, not "duplicate": the lease is checked
 * before the key, for a stale epoch and for one that never existed.
 */
static void test_a_fenced_retry_of_a_used_key_hears_lease_lost(void **state) {
    fixture_t *f = *state;
    journal_result_t res, first;
    uint64_t rev;
    char id[27];

    begin_ok(f, "inv", "A", 100, id);
    assert_int_equal(append(f, id, 1, "k1", 0, &first), REEL_OK);
    usleep(150 * 1000); /* A's lease expires */
    assert_int_equal(simple(f, JOURNAL_CLAIM, id, 0, "B", &res), REEL_OK);
    assert_int_equal(res.run.lease_epoch, 2);
    journal_result_fini(&res);
    rev = store_revision(f->store);

    expect_code(append(f, id, 1, "k1", 0, &res), REEL_FAILED_PRECONDITION,
                &res, "lease lost: current epoch 2 (yours is 1");
    expect_code(append(f, id, 9, "k1", 0, &res), REEL_FAILED_PRECONDITION,
                &res, "lease lost: current epoch 2 (yours is 9");
    expect_code(append(f, id, 0, "k1", 0, &res), REEL_FAILED_PRECONDITION,
                &res, "lease lost");
    /* The holder retrying the same append gets the original. */
    assert_int_equal(append(f, id, 2, "k1", 0, &res), REEL_OK);
    assert_true(res.duplicate);
    assert_int_equal(res.entry.seq, first.entry.seq);
    assert_int_equal(res.entry.lease_epoch, 1);
    journal_result_fini(&res);
    assert_int_equal(store_revision(f->store), rev);
    /* Once the run ended, a retry hears that too. */
    assert_int_equal(simple(f, JOURNAL_END, id, 2, NULL, &res), REEL_OK);
    journal_result_fini(&res);
    expect_code(append(f, id, 2, "k1", 0, &res), REEL_FAILED_PRECONDITION,
                &res, "COMPLETED");
    journal_result_fini(&first);
}

static void test_a_key_reused_with_another_kind_or_payload_is_refused(
    void **state) {
    fixture_t *f = *state;
    journal_result_t res;
    uint64_t rev;
    char id[27];

    begin_ok(f, "inv", "w1", 60000, id);
    assert_int_equal(append(f, id, 1, NULL, 0, &res), REEL_OK);
    journal_result_fini(&res);
    assert_int_equal(append_as(f, id, 1, "charge-1", "effect", "{\"eur\":5}",
                               &res),
                     REEL_OK);
    assert_int_equal(res.entry.seq, 2);
    journal_result_fini(&res);
    rev = store_revision(f->store);

    expect_code(append_as(f, id, 1, "charge-1", "effect", "{\"eur\":7}", &res),
                REEL_ALREADY_EXISTS, &res,
                "idempotency_key \"charge-1\" already names seq 2 of run");
    expect_code(append_as(f, id, 1, "charge-1", "effect", "{\"eur\": 5}",
                          &res),
                REEL_ALREADY_EXISTS, &res, "another payload"); /* bytes */
    expect_code(append_as(f, id, 1, "charge-1", "step", "{\"eur\":5}", &res),
                REEL_ALREADY_EXISTS, &res,
                "of kind \"effect\" (this append's is \"step\")");
    assert_int_equal(store_revision(f->store), rev);
    assert_int_equal(append_as(f, id, 1, "charge-1", "effect", "{\"eur\":5}",
                               &res),
                     REEL_OK);
    assert_true(res.duplicate);
    assert_int_equal(res.entry.seq, 2);
    assert_string_equal(res.entry.payload, "{\"eur\":5}");
    journal_result_fini(&res);
    assert_int_equal(store_revision(f->store), rev);
}

typedef struct claimer {
    fixture_t *f;
    const char *id;
    pthread_barrier_t *bar;
    int won;
} claimer_t;

static void *claimer_main(void *arg) {
    claimer_t *c = arg;
    journal_result_t res;

    pthread_barrier_wait(c->bar);
    c->won = simple(c->f, JOURNAL_CLAIM, c->id, 0, "claimer", &res) == REEL_OK;
    journal_result_fini(&res);
    return NULL;
}

static void test_of_concurrent_claimers_exactly_one_wins(void **state) {
    fixture_t *f = *state;
    pthread_barrier_t bar;
    claimer_t c[10];
    pthread_t th[10];
    int wins = 0;
    char id[27];

    begin_ok(f, "inv", "gone", 50, id);
    usleep(100 * 1000);
    pthread_barrier_init(&bar, NULL, 10);
    for (int i = 0; i < 10; i++) {
        c[i] = (claimer_t){f, id, &bar, 0};
        pthread_create(&th[i], NULL, claimer_main, &c[i]);
    }
    for (int i = 0; i < 10; i++) {
        pthread_join(th[i], NULL);
        wins += c[i].won;
    }
    pthread_barrier_destroy(&bar);
    assert_int_equal(wins, 1);
}

static void test_terminal_and_waiting_runs_refuse_appends(void **state) {
    fixture_t *f = *state;
    journal_result_t res;
    run_t *runs;
    size_t n;
    int more;
    char id[27], id2[27];

    begin_ok(f, "inv", "w1", 60000, id);
    assert_int_equal(simple(f, JOURNAL_SUSPEND, id, 1, NULL, &res), REEL_OK);
    assert_int_equal(res.run.status, RUN_WAITING);
    assert_string_equal(res.run.waiting_on, "approval");
    assert_string_equal(res.run.lease_owner, "");
    journal_result_fini(&res);
    expect_code(append(f, id, 1, NULL, 0, &res), REEL_FAILED_PRECONDITION,
                &res, "WAITING");
    /* A WAITING run needs no worker; an expired RUNNING one does. */
    begin_ok(f, "inv2", "w1", 10, id2);
    usleep(30 * 1000);
    assert_int_equal(journal_list_recoverable(f->j, NULL, NULL, 0, NULL,
                                              &runs, &n, &more, NULL),
                     REEL_OK);
    assert_false(more);
    assert_int_equal(n, 1);
    assert_string_equal(runs[0].run_id, id2);
    run_fini(&runs[0]);
    free(runs);

    assert_int_equal(simple(f, JOURNAL_HEARTBEAT, id2, 1, NULL, &res),
                     REEL_OK); /* nobody claimed it: still ours */
    journal_result_fini(&res);
    assert_int_equal(simple(f, JOURNAL_END, id2, 1, NULL, &res), REEL_OK);
    assert_int_equal(res.run.status, RUN_COMPLETED);
    assert_string_equal(res.run.result, "\"done\"");
    assert_true(res.run.ended_at_ms > 0);
    journal_result_fini(&res);
    expect_code(append(f, id2, 1, NULL, 0, &res), REEL_FAILED_PRECONDITION,
                &res, "COMPLETED");
    expect_code(simple(f, JOURNAL_END, id2, 1, NULL, &res),
                REEL_FAILED_PRECONDITION, &res, "COMPLETED");
    /* Beginning a terminal run returns it as it is. */
    assert_int_equal(begin(f, "inv2", "w9", 0, &res), REEL_OK);
    assert_int_equal(res.run.status, RUN_COMPLETED);
    assert_true(res.run.resumed);
    journal_result_fini(&res);
}

static void test_bad_input_is_invalid_and_writes_nothing(void **state) {
    fixture_t *f = *state;
    journal_req_t q = {0};
    journal_result_t res;
    uint64_t rev;
    char id[27], big[2000];

    begin_ok(f, "inv", "w1", 60000, id);
    rev = store_revision(f->store);
    q.op = JOURNAL_APPEND;
    q.run_id = id;
    q.lease_epoch = 1;
    q.payload = "{}";
    q.kind = "Bad Kind";
    expect_code(journal_exec(f->j, &q, &res), REEL_INVALID_ARGUMENT, &res,
                "kind");
    /* Kinds are WAL subject tokens: none may be empty. */
    for (int i = 0; i < 4; i++) {
        q.kind = (const char *[]){"a..b", ".a", "a.", "."}[i];
        expect_code(journal_exec(f->j, &q, &res), REEL_INVALID_ARGUMENT, &res,
                    "kind: a token may not be empty");
    }
    q.kind = "ok";
    q.payload = "{nope";
    expect_code(journal_exec(f->j, &q, &res), REEL_INVALID_ARGUMENT, &res,
                "payload: not valid JSON");
    q.payload = "{}";
    q.run_id = "short";
    expect_code(journal_exec(f->j, &q, &res), REEL_INVALID_ARGUMENT, &res,
                "run_id");
    q.run_id = "01ARZ3NDEKTSV4RRFFQ69G5FAV";
    expect_code(journal_exec(f->j, &q, &res), REEL_NOT_FOUND, &res,
                "not found");
    memset(big, 'x', sizeof(big));
    big[sizeof(big) - 1] = '\0';
    q.run_id = id;
    q.idempotency_key = big;
    expect_code(journal_exec(f->j, &q, &res), REEL_INVALID_ARGUMENT, &res,
                "idempotency_key");
    /* No signal could ever wake a run waiting on such a name. */
    memset(&q, 0, sizeof(q));
    q.op = JOURNAL_SUSPEND;
    q.run_id = id;
    q.lease_epoch = 1;
    q.waiting_on = "go..now";
    expect_code(journal_exec(f->j, &q, &res), REEL_INVALID_ARGUMENT, &res,
                "waiting_on: a token may not be empty");
    memset(&q, 0, sizeof(q));
    q.op = JOURNAL_BEGIN;
    q.app = "", q.user = "u", q.session = "s", q.invocation_id = "i";
    q.lease_owner = "w";
    expect_code(journal_exec(f->j, &q, &res), REEL_INVALID_ARGUMENT, &res,
                "app");
    q.app = "a";
    q.lease_ttl_ms = -5;
    expect_code(journal_exec(f->j, &q, &res), REEL_INVALID_ARGUMENT, &res,
                "lease_ttl_ms");
    assert_int_equal(store_revision(f->store), rev);
}

typedef struct sink {
    TESTING_SINK_HEAD; /* mu, n, limit, held, ended, end */
    uint64_t seqs[256];
    int wakes; /* times the journal asked for a pump (mu) */
} sink_t;

static int sink_deliver(void *arg, journal_entry_t *e) {
    sink_t *s = arg;
    int full;

    pthread_mutex_lock(&s->mu);
    full = testing_sink_hold(&s->sink, 256);
    if (!full) {
        s->seqs[s->n] = e->seq;
        testing_sink_add(&s->sink);
    }
    pthread_mutex_unlock(&s->mu);
    return full;
}

static void sink_end(void *arg, const reel_status_t *st) {
    testing_sink_end(&((sink_t *)arg)->sink, st);
}

/* Under journal locks: only counts; the test pumps as an owner would. */
static void sink_wake(void *arg) {
    sink_t *s = arg;

    pthread_mutex_lock(&s->mu);
    s->wakes++;
    pthread_mutex_unlock(&s->mu);
}

static void sink_wait_end(sink_t *s) {
    testing_sink_wait_end(&s->sink, TESTING_WAIT_MS);
}

static void sink_init(sink_t *s, size_t limit) {
    testing_sink_init(&s->sink, limit);
}

static void sink_fini(sink_t *s) {
    testing_sink_fini(&s->sink);
}

static void test_subscription_replays_then_follows_then_ends(void **state) {
    fixture_t *f = *state;
    static const journal_sink_t ops = {sink_deliver, sink_end, NULL};
    sink_t s;
    journal_sub_t *sub;
    journal_result_t res;
    char id[27];

    sink_init(&s, 3);
    begin_ok(f, "inv", "w1", 60000, id);
    for (int i = 0; i < 5; i++) {
        assert_int_equal(append(f, id, 1, NULL, 0, &res), REEL_OK);
        journal_result_fini(&res);
    }
    assert_int_equal(journal_sub_create(f->j, id, 1, &ops, &s, &sub, NULL),
                     REEL_OK);
    journal_sub_pump(sub);
    assert_int_equal(s.n, 3); /* 2, 3, 4, then full */
    pthread_mutex_lock(&s.mu);
    s.held = 0;
    s.limit = 100;
    pthread_mutex_unlock(&s.mu);
    journal_sub_pump(sub);
    assert_int_equal(s.n, 4);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(append(f, id, 1, NULL, 0, &res), REEL_OK);
        journal_result_fini(&res);
    }
    assert_int_equal(simple(f, JOURNAL_END, id, 1, NULL, &res), REEL_OK);
    journal_result_fini(&res);
    sink_wait_end(&s);
    assert_int_equal(s.ended, 1);
    assert_int_equal(s.n, 7);
    for (size_t i = 0; i < s.n; i++)
        assert_int_equal(s.seqs[i], i + 2);
    journal_sub_destroy(sub);
    sink_fini(&s);
}

static void test_a_change_publish_cannot_decode_is_read_from_storage(
    void **state) {
    fixture_t *f = *state;
    static const journal_sink_t ops = {sink_deliver, sink_end, sink_wake};
    sink_t s;
    journal_sub_t *sub;
    journal_result_t res;
    char id[27];

    sink_init(&s, 100);
    s.wakes = 0;
    begin_ok(f, "inv", "w1", 60000, id);
    assert_int_equal(journal_sub_create(f->j, id, 0, &ops, &s, &sub, NULL),
                     REEL_OK);
    journal_sub_pump(sub);
    /* The live copy of entry 1 cannot be made: the subscription may not
     * pass it by; it drops out of live delivery and asks for a pump. */
    reel_fault_arm("journal.publish", 0, 1);
    assert_int_equal(append(f, id, 1, NULL, 0, &res), REEL_OK);
    journal_result_fini(&res);
    reel_fault_reset();
    assert_int_equal(s.n, 0);
    assert_int_equal(s.wakes, 1);
    journal_sub_pump(sub); /* the owner, woken: entry 1 from storage */
    assert_int_equal(s.n, 1);
    assert_int_equal(append(f, id, 1, NULL, 0, &res), REEL_OK);
    journal_result_fini(&res);
    assert_int_equal(simple(f, JOURNAL_END, id, 1, NULL, &res), REEL_OK);
    journal_result_fini(&res);
    sink_wait_end(&s);
    assert_int_equal(s.ended, 1);
    assert_int_equal(s.n, 2);
    assert_int_equal(s.seqs[0], 1);
    assert_int_equal(s.seqs[1], 2);
    journal_sub_destroy(sub);
    sink_fini(&s);
}

/* The gRPC layer frees a call (and so its subscription) from whichever
 * thread finishes it last: ending must tolerate destruction inside end. */
typedef struct self_destruct {
    journal_sub_t *sub;
    int ended;
} self_destruct_t;

static int sd_deliver(void *arg, journal_entry_t *e) {
    (void)arg, (void)e;
    return 0;
}

static void sd_end(void *arg, const reel_status_t *st) {
    self_destruct_t *sd = arg;

    sd->ended = st->code == REEL_OK;
    journal_sub_destroy(sd->sub);
}

static void test_a_subscription_may_be_destroyed_inside_end(void **state) {
    fixture_t *f = *state;
    static const journal_sink_t ops = {sd_deliver, sd_end, NULL};
    self_destruct_t live = {0}, done = {0};
    journal_result_t res;
    char id[27];

    begin_ok(f, "inv", "w1", 60000, id);
    /* Live when the run ends: ended by the writer thread's publish. */
    assert_int_equal(journal_sub_create(f->j, id, 0, &ops, &live, &live.sub,
                                        NULL),
                     REEL_OK);
    journal_sub_pump(live.sub);
    assert_int_equal(simple(f, JOURNAL_END, id, 1, NULL, &res), REEL_OK);
    journal_result_fini(&res);
    assert_true(live.ended);
    /* Already over: ended by the pump. */
    assert_int_equal(journal_sub_create(f->j, id, 0, &ops, &done, &done.sub,
                                        NULL),
                     REEL_OK);
    journal_sub_pump(done.sub);
    assert_true(done.ended);
}

static void test_everything_acknowledged_survives_reopen(void **state) {
    fixture_t *f = *state;
    journal_result_t res;
    run_filter_t filt = {0};
    run_t r, *runs;
    size_t n;
    int more;
    char id[27];

    begin_ok(f, "inv", "w1", 60000, id);
    assert_int_equal(append(f, id, 1, "a", 0, &res), REEL_OK);
    journal_result_fini(&res);
    close_all(f);
    open_all(f);
    assert_int_equal(append(f, id, 1, "a", 0, &res), REEL_OK);
    assert_true(res.duplicate);
    journal_result_fini(&res);
    assert_int_equal(append(f, id, 1, "b", 0, &res), REEL_OK);
    assert_int_equal(res.entry.seq, 2);
    journal_result_fini(&res);
    close_all(f);
    open_all(f);
    assert_int_equal(journal_get_run(f->j, id, &r, NULL), REEL_OK);
    assert_int_equal(r.next_seq, 3);
    run_fini(&r);
    filt.app = "app", filt.user = "u1", filt.session = "s1";
    assert_int_equal(journal_list_runs(f->j, &filt, &runs, &n, &more, NULL),
                     REEL_OK);
    assert_int_equal(n, 1);
    assert_string_equal(runs[0].run_id, id);
    run_fini(&runs[0]);
    free(runs);
}

/* ---- Cursors and unreadable entries ------------------------------------- */

/* Begins a run with n entries (seqs 1..n) and copies its id out. */
static void run_with_entries(fixture_t *f, int n, char id[27]) {
    journal_result_t res;

    begin_ok(f, "inv", "w1", 60000, id);
    for (int i = 0; i < n; i++) {
        assert_int_equal(append(f, id, 1, NULL, 0, &res), REEL_OK);
        journal_result_fini(&res);
    }
}

/* The subscription ended (the pump ends it on its own thread) with code and
 * a message containing want. */
static void expect_end(sink_t *s, reel_code_t code, const char *want) {
    if (s->ended == 0)
        fail_msg("the subscription did not end (%zu entries)", s->n);
    if (s->end.code != code || strstr(reel_status_message(&s->end), want) ==
                                   NULL)
        fail_msg("ended with %s \"%s\", want %s \"...%s...\"",
                 reel_code_name(s->end.code), reel_status_message(&s->end),
                 reel_code_name(code), want);
}

typedef struct raw_put {
    const void *key, *val;
    size_t klen, vlen;
    store_cf_t *cf;
} raw_put_t;

static reel_code_t raw_put_apply(store_txn_t *txn, void *arg,
                                 reel_status_t *st) {
    raw_put_t *p = arg;

    (void)st;
    store_txn_put(txn, p->cf, p->key, p->klen, p->val, p->vlen);
    return REEL_OK;
}

/* The journal's column family `name` ("runs", "journal"). */
static store_cf_t *cf_of(fixture_t *f, const char *name) {
    store_cf_t *cf = NULL;

    assert_int_equal(store_cf_lookup(f->store, name, &cf, NULL), REEL_OK);
    return cf;
}

/* Overwrites entry seq of run id with bytes that do not decode, past the
 * journal's own checks, as storage damage would. */
static void corrupt_entry(fixture_t *f, const char *id, uint64_t seq) {
    unsigned char key[1 + 26 + 8];
    raw_put_t p = {key, "\x01", sizeof(key), 1, cf_of(f, "journal")};
    reel_status_t st = REEL_STATUS_INIT;

    key[0] = 'e';
    memcpy(key + 1, id, 26);
    reel_be64_put(key + 27, seq);
    if (store_exec(f->store, raw_put_apply, &p, NULL, &st) != REEL_OK)
        fail_msg("raw put: %s", reel_status_message(&st));
}

/* A run list never passes over a run it cannot read: a corrupt record, or
 * an index entry whose record is gone, is DATA_LOSS naming the run. */
static void test_run_lists_fail_on_a_corrupt_run_naming_it(void **state) {
    fixture_t *f = *state;
    unsigned char key[1 + 26];
    raw_put_t p = {key, "\x01", sizeof(key), 1, NULL};
    reel_status_t st = REEL_STATUS_INIT;
    run_filter_t all = {0}, by_session = {0};
    run_t *runs = NULL;
    size_t n;
    int more;
    char id[27];

    p.cf = cf_of(f, "runs");
    begin_ok(f, "inv", "w1", 1, id);
    usleep(5 * 1000); /* its lease expires: it is recoverable */
    key[0] = 'r';
    memcpy(key + 1, id, 26);
    assert_int_equal(store_exec(f->store, raw_put_apply, &p, NULL, &st),
                     REEL_OK);
    assert_int_equal(journal_list_runs(f->j, &all, &runs, &n, &more, &st),
                     REEL_DATA_LOSS);
    assert_non_null(strstr(reel_status_message(&st), id));
    assert_null(runs);
    by_session.app = "app", by_session.user = "u1", by_session.session = "s1";
    assert_int_equal(
        journal_list_runs(f->j, &by_session, &runs, &n, &more, &st),
        REEL_DATA_LOSS);
    assert_non_null(strstr(reel_status_message(&st), id));
    assert_int_equal(journal_list_recoverable(f->j, NULL, NULL, 0, NULL,
                                              &runs, &n, &more, &st),
                     REEL_DATA_LOSS);
    assert_non_null(strstr(reel_status_message(&st), id));
    reel_status_fini(&st);
}

static void test_subscribing_past_the_last_seq_is_invalid_naming_it(
    void **state) {
    fixture_t *f = *state;
    static const journal_sink_t ops = {sink_deliver, sink_end, NULL};
    reel_status_t st = REEL_STATUS_INIT;
    journal_entry_t *es;
    journal_result_t res;
    journal_sub_t *sub;
    sink_t s;
    size_t n;
    int more;
    char id[27];

    sink_init(&s, 100);
    run_with_entries(f, 5, id);
    assert_int_equal(journal_sub_create(f->j, id, 1005, &ops, &s, &sub, &st),
                     REEL_INVALID_ARGUMENT);
    assert_string_equal(reel_status_message(&st),
                        "from_seq: 1005 is past the run's last seq 5");
    /* 2^64-1 neither wraps to seq 1 nor passes. */
    assert_int_equal(journal_sub_create(f->j, id, UINT64_MAX, &ops, &s, &sub,
                                        &st),
                     REEL_INVALID_ARGUMENT);
    assert_non_null(strstr(reel_status_message(&st),
                           "18446744073709551615 is past the run's last "
                           "seq 5"));
    /* The last seq itself: nothing stored to send, then the next one. */
    assert_int_equal(journal_sub_create(f->j, id, 5, &ops, &s, &sub, &st),
                     REEL_OK);
    journal_sub_pump(sub);
    assert_int_equal(s.n, 0);
    assert_int_equal(append(f, id, 1, NULL, 0, &res), REEL_OK);
    journal_result_fini(&res);
    assert_int_equal(s.n, 1);
    assert_int_equal(s.seqs[0], 6);
    journal_sub_destroy(sub);
    /* A read past the end is an empty page, 2^64-1 included. */
    assert_int_equal(journal_read(f->j, id, UINT64_MAX, 0, NULL, &es, &n, &more,
                                  &st),
                     REEL_OK);
    assert_int_equal(n, 0);
    assert_false(more);
    free(es);
    reel_status_fini(&st);
    sink_fini(&s);
}

static void test_a_corrupt_entry_ends_a_subscription_with_data_loss(
    void **state) {
    fixture_t *f = *state;
    static const journal_sink_t ops = {sink_deliver, sink_end, NULL};
    reel_status_t st = REEL_STATUS_INIT;
    journal_entry_t *es;
    journal_sub_t *sub;
    sink_t s;
    size_t n;
    int more;
    char id[27], want[96];

    sink_init(&s, 100);
    run_with_entries(f, 5, id);
    corrupt_entry(f, id, 3);
    snprintf(want, sizeof(want), "run %s: journal entry 3 is corrupt", id);
    assert_int_equal(journal_sub_create(f->j, id, 0, &ops, &s, &sub, NULL),
                     REEL_OK);
    journal_sub_pump(sub);
    expect_end(&s, REEL_DATA_LOSS, want);
    assert_int_equal(s.n, 2);
    assert_int_equal(s.seqs[1], 2);
    journal_sub_destroy(sub);
    assert_int_equal(journal_read(f->j, id, 0, 0, NULL, &es, &n, &more, &st),
                     REEL_DATA_LOSS);
    assert_non_null(strstr(reel_status_message(&st), want));
    reel_status_fini(&st);
    sink_fini(&s);
}

static void test_a_failed_snapshot_ends_a_subscription_instead_of_waiting(
    void **state) {
    fixture_t *f = *state;
    static const journal_sink_t ops = {sink_deliver, sink_end, NULL};
    journal_sub_t *sub;
    sink_t s;
    char id[27];

    sink_init(&s, 100);
    run_with_entries(f, 2, id);
    assert_int_equal(journal_sub_create(f->j, id, 0, &ops, &s, &sub, NULL),
                     REEL_OK);
    /* Nothing is queued, so no drain would ever pump it again. */
    reel_fault_arm("store.snapshot", 0, 1);
    journal_sub_pump(sub);
    reel_fault_reset();
    expect_end(&s, REEL_INTERNAL, "replaying after seq 0: reading the "
                                  "snapshot's revision: injected fault");
    assert_int_equal(s.n, 0);
    journal_sub_destroy(sub);
    sink_fini(&s);
}

static void test_an_iterator_error_ends_a_subscription_with_internal(
    void **state) {
    fixture_t *f = *state;
    static const journal_sink_t ops = {sink_deliver, sink_end, NULL};
    journal_sub_t *sub;
    sink_t s;
    char id[27], want[96];

    sink_init(&s, 100);
    run_with_entries(f, 5, id);
    assert_int_equal(journal_sub_create(f->j, id, 0, &ops, &s, &sub, NULL),
                     REEL_OK);
    /* The seek and one step pass (seqs 1, 2), the second step fails: not
     * the end of the journal. */
    reel_fault_arm("store.iter", 2, 1);
    journal_sub_pump(sub);
    reel_fault_reset();
    snprintf(want, sizeof(want), "run %s: reading the journal after seq 2: "
                                 "iterate: injected fault", id);
    expect_end(&s, REEL_INTERNAL, want);
    assert_int_equal(s.n, 2);
    journal_sub_destroy(sub);
    sink_fini(&s);
}

/* ---- Pages bounded by bytes ---------------------------------------------- */

/* Test measures: an entry costs its payload; a run a fixed 100 bytes. */
static size_t entry_payload_bytes(void *arg, const void *elem) {
    (void)arg;
    return strlen(((const journal_entry_t *)elem)->payload);
}

static size_t run_100_bytes(void *arg, const void *elem) {
    (void)arg, (void)elem;
    return 100;
}

static void test_read_stops_at_the_byte_budget(void **state) {
    fixture_t *f = *state;
    reel_page_t page = {2500, entry_payload_bytes, NULL};
    char id[27], *payload = malloc(1001);
    journal_req_t q = {0};
    journal_result_t res;
    journal_entry_t *es;
    size_t n, pages = 0, sizes[8];
    uint64_t from = 0, next = 1;
    int more;

    memset(payload, ' ', 1000);
    payload[0] = '1';
    payload[1000] = '\0';
    begin_ok(f, "inv", "w1", 60000, id);
    q.op = JOURNAL_APPEND, q.run_id = id, q.lease_epoch = 1;
    q.kind = "step", q.payload = payload;
    for (int i = 0; i < 5; i++) {
        assert_int_equal(journal_exec(f->j, &q, &res), REEL_OK);
        journal_result_fini(&res);
    }
    /* 1000 bytes each within a 2500-byte budget: pages of 2, 2, 1. */
    do {
        assert_int_equal(journal_read(f->j, id, from, 0, &page, &es, &n, &more,
                                      NULL),
                         REEL_OK);
        assert_true(n >= 1);
        sizes[pages++] = n;
        from = es[n - 1].seq;
        for (size_t i = 0; i < n; i++) {
            assert_int_equal(es[i].seq, next++);
            journal_entry_fini(&es[i]);
        }
        free(es);
    } while (more && pages < 8);
    assert_int_equal(pages, 3);
    assert_int_equal(sizes[0], 2);
    assert_int_equal(sizes[1], 2);
    assert_int_equal(sizes[2], 1);
    assert_int_equal(next, 6);
    /* An entry larger than the budget still comes, alone, with more. */
    page.max_bytes = 10;
    assert_int_equal(journal_read(f->j, id, 0, 0, &page, &es, &n, &more, NULL),
                     REEL_OK);
    assert_int_equal(n, 1);
    assert_true(more);
    journal_entry_fini(&es[0]);
    free(es);
    free(payload);
}

static void test_list_runs_stops_at_the_byte_budget(void **state) {
    fixture_t *f = *state;
    reel_page_t page = {250, run_100_bytes, NULL};
    run_filter_t filt = {0};
    char ids[5][27], inv[16], after[27] = "";
    size_t n, pages = 0, seen = 0;
    run_t *runs;
    int more;

    for (int i = 0; i < 5; i++) {
        snprintf(inv, sizeof(inv), "inv%d", i);
        begin_ok(f, inv, "w1", 60000, ids[i]);
    }
    filt.page = &page;
    do {
        filt.start_after = after;
        assert_int_equal(journal_list_runs(f->j, &filt, &runs, &n, &more,
                                           NULL),
                         REEL_OK);
        assert_true(n >= 1 && n <= 2);
        for (size_t i = 0; i < n; i++) {
            assert_string_equal(runs[i].run_id, ids[seen++]);
            snprintf(after, sizeof(after), "%s", runs[i].run_id);
            run_fini(&runs[i]);
        }
        free(runs);
        pages++;
    } while (more && pages < 8);
    assert_int_equal(seen, 5);
    assert_int_equal(pages, 3);
}

static void test_recoverable_pages_by_cursor_count_and_bytes(void **state) {
    fixture_t *f = *state;
    reel_page_t page = {250, run_100_bytes, NULL};
    reel_status_t st = REEL_STATUS_INIT;
    char ids[5][27], inv[16], after[27] = "";
    size_t n, pages = 0, seen = 0;
    run_t *runs;
    int more;

    for (int i = 0; i < 5; i++) {
        snprintf(inv, sizeof(inv), "inv%d", i);
        begin_ok(f, inv, "w1", 1, ids[i]);
    }
    usleep(20 * 1000); /* every lease has expired */
    /* By bytes: two runs a page. */
    do {
        assert_int_equal(journal_list_recoverable(f->j, NULL, after, 0, &page,
                                                  &runs, &n, &more, NULL),
                         REEL_OK);
        assert_true(n >= 1 && n <= 2);
        for (size_t i = 0; i < n; i++) {
            assert_string_equal(runs[i].run_id, ids[seen++]);
            snprintf(after, sizeof(after), "%s", runs[i].run_id);
            run_fini(&runs[i]);
        }
        free(runs);
        pages++;
    } while (more && pages < 8);
    assert_int_equal(seen, 5);
    assert_int_equal(pages, 3);
    /* By count: a full page says more only when there is more. */
    assert_int_equal(journal_list_recoverable(f->j, NULL, ids[1], 3, NULL,
                                              &runs, &n, &more, NULL),
                     REEL_OK);
    assert_int_equal(n, 3);
    assert_false(more);
    for (size_t i = 0; i < n; i++)
        run_fini(&runs[i]);
    free(runs);
    assert_int_equal(journal_list_recoverable(f->j, NULL, ids[1], 2, NULL,
                                              &runs, &n, &more, NULL),
                     REEL_OK);
    assert_int_equal(n, 2);
    assert_true(more);
    for (size_t i = 0; i < n; i++)
        run_fini(&runs[i]);
    free(runs);
    assert_int_equal(journal_list_recoverable(f->j, NULL, "not-a-run-id", 0,
                                              NULL, &runs, &n, &more, &st),
                     REEL_INVALID_ARGUMENT);
    assert_non_null(strstr(reel_status_message(&st), "start_after"));
    reel_status_fini(&st);
}

static void test_recoverable_runs_filtered_by_app(void **state) {
    fixture_t *f = *state;
    journal_req_t q = {0};
    journal_result_t res;
    reel_status_t st = REEL_STATUS_INIT;
    char mine[27], other[27], big[300];
    run_t *runs;
    size_t n;
    int more;

    /* Two apps, each with a run whose lease has expired. */
    begin_ok(f, "inv-a", "w1", 10, mine);
    q.op = JOURNAL_BEGIN;
    q.app = "billing", q.user = "u1", q.session = "s1";
    q.invocation_id = "inv-b";
    q.lease_owner = "w1";
    q.lease_ttl_ms = 10;
    assert_int_equal(journal_exec(f->j, &q, &res), REEL_OK);
    snprintf(other, sizeof(other), "%s", res.run.run_id);
    journal_result_fini(&res);
    usleep(30 * 1000);

    assert_int_equal(journal_list_recoverable(f->j, "", NULL, 0, NULL, &runs,
                                              &n, &more, NULL),
                     REEL_OK);
    assert_int_equal(n, 2);
    run_fini(&runs[0]);
    run_fini(&runs[1]);
    free(runs);

    assert_int_equal(
        journal_list_recoverable(f->j, "billing", NULL, 0, NULL, &runs, &n,
                                 &more, NULL),
        REEL_OK);
    assert_int_equal(n, 1);
    assert_string_equal(runs[0].run_id, other);
    assert_string_equal(runs[0].app, "billing");
    run_fini(&runs[0]);
    free(runs);

    /* The limit counts the app's runs, not the ones passed over. */
    assert_int_equal(journal_list_recoverable(f->j, "app", NULL, 1, NULL,
                                              &runs, &n, &more, NULL),
                     REEL_OK);
    assert_int_equal(n, 1);
    assert_string_equal(runs[0].run_id, mine);
    run_fini(&runs[0]);
    free(runs);

    assert_int_equal(
        journal_list_recoverable(f->j, "nobody", NULL, 0, NULL, &runs, &n,
                                 &more, NULL), REEL_OK);
    assert_int_equal(n, 0);
    free(runs);

    memset(big, 'a', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    assert_int_equal(journal_list_recoverable(f->j, big, NULL, 0, NULL, &runs,
                                              &n, &more, &st),
                     REEL_INVALID_ARGUMENT);
    assert_non_null(strstr(reel_status_message(&st), "app"));
    assert_null(runs);
    reel_status_fini(&st);
}

/* Checks that runs[0..n) are the runs ids[want[0]], ids[want[1]], ... in
 * that order, nwant of them, and frees them. */
static void expect_runs(run_t *runs, size_t n, char (*ids)[27],
                        const int *want, size_t nwant) {
    assert_int_equal(n, nwant);
    for (size_t i = 0; i < n; i++) {
        assert_string_equal(runs[i].run_id, ids[want[i]]);
        run_fini(&runs[i]);
    }
    free(runs);
}

/* ListRuns of app's runs with status, after a cursor, at most limit. */
static size_t list_status(fixture_t *f, const char *app, run_status_t status,
                          const char *after, uint32_t limit, run_t **runs,
                          int *more) {
    run_filter_t filt = {0};
    size_t n;

    filt.app = app;
    filt.status = status;
    filt.start_after = after;
    filt.limit = limit;
    assert_int_equal(journal_list_runs(f->j, &filt, runs, &n, more, NULL),
                     REEL_OK);
    return n;
}

/* One app's recoverable runs come from its own index ('A'): an app whose
 * name another's begins with is apart, an ended run leaves it, and pages
 * go on from their cursor in run id order. ListRuns of one app reads its
 * index by status ('X'), or its index of every run ('p'). */
static void test_recoverable_runs_of_an_app_come_from_its_index(void **state) {
    fixture_t *f = *state;
    const char *apps[3] = {"a", "ab", "b"};
    char ids[15][27], inv[16], after[27] = "";
    journal_req_t q = {0};
    journal_result_t res;
    run_t *runs;
    size_t n, got = 0;
    int more;

    q.op = JOURNAL_BEGIN;
    q.user = "u1", q.session = "s1", q.lease_owner = "w1";
    q.lease_ttl_ms = 10;
    for (int i = 0; i < 15; i++) { /* a, ab, b, a, ab, b, ... */
        snprintf(inv, sizeof(inv), "inv-%d", i);
        q.app = apps[i % 3], q.invocation_id = inv;
        assert_int_equal(journal_exec(f->j, &q, &res), REEL_OK);
        snprintf(ids[i], 27, "%s", res.run.run_id);
        journal_result_fini(&res);
    }
    assert_int_equal(simple(f, JOURNAL_END, ids[3], 1, NULL, &res), REEL_OK);
    journal_result_fini(&res);
    usleep(30 * 1000); /* the others' leases expire */

    /* "a": runs 0, 6, 9, 12 (3 ended), two at a time. */
    for (int page = 0; page < 3; page++) {
        assert_int_equal(journal_list_recoverable(f->j, "a", after, 2, NULL,
                                                  &runs, &n, &more, NULL),
                         REEL_OK);
        assert_int_equal(n, page < 2 ? 2 : 0);
        for (size_t i = 0; i < n; i++, got++) {
            assert_string_equal(runs[i].app, "a");
            snprintf(after, sizeof(after), "%s", runs[i].run_id);
        }
        expect_runs(runs, n, ids, (const int[]){0, 6, 9, 12} + 2 * page, n);
    }
    assert_int_equal(got, 4);
    assert_int_equal(journal_list_recoverable(f->j, "ab", NULL, 0, NULL,
                                              &runs, &n, &more, NULL),
                     REEL_OK);
    expect_runs(runs, n, ids, (const int[]){1, 4, 7, 10, 13}, 5);
    assert_int_equal(journal_list_recoverable(f->j, NULL, NULL, 0, NULL,
                                              &runs, &n, &more, NULL),
                     REEL_OK);
    expect_runs(runs, n, ids,
                (const int[]){0, 1, 2, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14},
                14);

    /* ListRuns of an app's RUNNING runs (its status index) pages the same
     * way, and so do its ended ones. */
    n = list_status(f, "a", RUN_RUNNING, NULL, 3, &runs, &more);
    assert_true(more);
    expect_runs(runs, n, ids, (const int[]){0, 6, 9}, 3);
    n = list_status(f, "a", RUN_RUNNING, ids[9], 3, &runs, &more);
    assert_false(more);
    expect_runs(runs, n, ids, (const int[]){12}, 1);
    n = list_status(f, "a", RUN_COMPLETED, NULL, 0, &runs, &more);
    expect_runs(runs, n, ids, (const int[]){3}, 1);
    /* An app's runs of any status: its own index of every run ('p'). */
    n = list_status(f, "a", RUN_STATUS_ANY, NULL, 2, &runs, &more);
    assert_true(more);
    expect_runs(runs, n, ids, (const int[]){0, 3}, 2);
    n = list_status(f, "a", RUN_STATUS_ANY, ids[3], 0, &runs, &more);
    assert_false(more);
    expect_runs(runs, n, ids, (const int[]){6, 9, 12}, 3);
    n = list_status(f, "ab", RUN_STATUS_ANY, NULL, 0, &runs, &more);
    expect_runs(runs, n, ids, (const int[]){1, 4, 7, 10, 13}, 5);
    n = list_status(f, "abc", RUN_STATUS_ANY, NULL, 0, &runs, &more);
    expect_runs(runs, n, ids, NULL, 0);
    /* Every app's RUNNING runs: the status index. */
    n = list_status(f, NULL, RUN_RUNNING, NULL, 0, &runs, &more);
    expect_runs(runs, n, ids,
                (const int[]){0, 1, 2, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14},
                14);
}

/* Whether want (a run of every run's listing) is one a listing of prefix
 * and status (RUN_STATUS_ANY, or < 0 for ListRunsToRecover's) shows. */
/* prefix: the apps under it; "!" and a prefix: the apps not under it. */
static int wanted(const run_t *want, const char *prefix, int status) {
    int out = prefix[0] == '!';

    return (strncmp(want->app, prefix + out, strlen(prefix + out)) == 0) !=
               out &&
           (status <= 0 || (int)want->status == status);
}

/* ListRuns of a prefix's apps (a tenant's), or of the apps not under it
 * ("!" prefix: the default tenant's), page by page, equals ListRuns of
 * every run (the records, no index) filtered by that prefix and status:
 * the merge of the apps' indexes keeps run id order across apps, paging,
 * statuses, and past the apps a merge takes. The same for
 * ListRunsToRecover (status < 0). */
static void expect_prefix_pages(fixture_t *f, const char *prefix,
                                int status, uint32_t limit) {
    run_filter_t all = {0}, filt = {0};
    run_t *want, *runs;
    size_t nwant, n, got = 0;
    int more, recover = status < 0;
    char after[27] = "";

    all.status = RUN_STATUS_ANY;
    all.limit = 1000;
    want = NULL, nwant = 0;
    do { /* every page of every run */
        all.start_after = nwant ? want[nwant - 1].run_id : "";
        assert_int_equal(recover ? journal_list_recoverable_kept(
                                       f->j, &all, &runs, &n, &more, NULL)
                                 : journal_list_runs(f->j, &all, &runs, &n,
                                                     &more, NULL),
                         REEL_OK);
        assert_non_null(want = realloc(want, (nwant + n + 1) * sizeof(*want)));
        memcpy(want + nwant, runs, n * sizeof(*runs));
        nwant += n;
        free(runs);
    } while (more);
    if (prefix[0] == '!')
        filt.app_exclude = prefix + 1;
    else
        filt.app_prefix = prefix;
    filt.status = recover ? RUN_STATUS_ANY : (run_status_t)status;
    filt.limit = limit;
    do {
        filt.start_after = after;
        assert_int_equal(recover ? journal_list_recoverable_kept(
                                       f->j, &filt, &runs, &n, &more, NULL)
                                 : journal_list_runs(f->j, &filt, &runs, &n,
                                                     &more, NULL),
                         REEL_OK);
        for (size_t i = 0; i < n; i++) {
            while (got < nwant && !wanted(&want[got], prefix, status))
                got++;
            assert_true(got < nwant);
            assert_string_equal(runs[i].run_id, want[got].run_id);
            got++;
            snprintf(after, sizeof(after), "%s", runs[i].run_id);
            run_fini(&runs[i]);
        }
        free(runs);
    } while (more);
    while (got < nwant && !wanted(&want[got], prefix, status))
        got++;
    assert_int_equal(got, nwant); /* none of the prefix's left out */
    for (size_t i = 0; i < nwant; i++)
        run_fini(&want[i]);
    free(want);
}

/* Overwrites run arg's record with bytes no run decodes from. */
typedef struct spoil {
    fixture_t *f;
    const char *run_id;
} spoil_t;

static reel_code_t spoil_run(store_txn_t *txn, void *arg, reel_status_t *st) {
    spoil_t *sp = arg;
    char key[1 + 26];
    store_cf_t *cf;

    if (store_cf_lookup(sp->f->store, "runs", &cf, st) != REEL_OK)
        return st->code;
    key[0] = 'r';
    memcpy(key + 1, sp->run_id, 26);
    store_txn_put_blind(txn, cf, key, sizeof(key), "\xff", 1);
    return REEL_OK;
}

/* A listing of the apps outside "::" (its status, or none; recoverable
 * runs with status -1; every run of every app with status < -1), every
 * page: OK or what failed. */
static reel_code_t list_outside(fixture_t *f, int status) {
    run_filter_t filt = {0};
    run_t *runs;
    size_t n;
    int more;
    reel_code_t rc;

    char after[27] = "";

    filt.app_exclude = status < -1 ? NULL : "::"; /* < -1: every run */
    filt.status = status < 0 ? RUN_STATUS_ANY : (run_status_t)status;
    filt.limit = status < -1 ? 1000 : 3;
    if (status < -1)
        status = RUN_STATUS_ANY;
    do {
        filt.start_after = after;
        rc = status < 0 ? journal_list_recoverable_kept(f->j, &filt, &runs,
                                                        &n, &more, NULL)
                        : journal_list_runs(f->j, &filt, &runs, &n, &more,
                                            NULL);
        if (rc != REEL_OK)
            return rc;
        for (size_t i = 0; i < n; i++) {
            snprintf(after, sizeof(after), "%s", runs[i].run_id);
            run_fini(&runs[i]);
        }
        free(runs);
    } while (more);
    return REEL_OK;
}

static void test_runs_of_a_tenants_apps_merge_their_indexes(void **state) {
    fixture_t *f = *state;
    const char *apps[5] = {"::t:a", "::t:b", "::u:a", "x", "::t:ab"};
    char inv[24], app[24], id[27];
    journal_req_t q = {0};
    journal_result_t res;

    q.op = JOURNAL_BEGIN;
    q.user = "u1", q.session = "s1", q.lease_owner = "w1";
    for (int i = 0; i < 25; i++) {
        snprintf(inv, sizeof(inv), "inv-%d", i);
        q.app = apps[i % 5], q.invocation_id = inv;
        q.lease_ttl_ms = i % 2 ? 1 : 60000; /* 1: recoverable at once */
        assert_int_equal(journal_exec(f->j, &q, &res), REEL_OK);
        snprintf(id, sizeof(id), "%s", res.run.run_id);
        journal_result_fini(&res);
        if (i % 3 == 0) {
            assert_int_equal(simple(f, JOURNAL_END, id, 1, NULL, &res),
                             REEL_OK);
            journal_result_fini(&res);
        }
    }
    expect_prefix_pages(f, "::t:", RUN_STATUS_ANY, 2);
    expect_prefix_pages(f, "::t:", RUN_STATUS_ANY, 100);
    expect_prefix_pages(f, "::t:", RUN_RUNNING, 3);
    expect_prefix_pages(f, "::t:", RUN_COMPLETED, 1);
    expect_prefix_pages(f, "::u:", RUN_STATUS_ANY, 2);
    expect_prefix_pages(f, "::none:", RUN_STATUS_ANY, 2);
    expect_prefix_pages(f, "!::", RUN_STATUS_ANY, 1);
    expect_prefix_pages(f, "!::", RUN_RUNNING, 2);
    expect_prefix_pages(f, "!::", RUN_COMPLETED, 100);
    usleep(5000); /* the 1 ms leases expired */
    expect_prefix_pages(f, "::t:", -1, 1);
    expect_prefix_pages(f, "::t:", -1, 100);
    expect_prefix_pages(f, "::u:", -1, 2);
    expect_prefix_pages(f, "::none:", -1, 2);
    expect_prefix_pages(f, "!::", -1, 1);
    /* More apps than a merge takes (::m:, 1,030 of them): every run is
     * read, same answer; ::m:1 (141 apps) is merged, and so are the apps
     * outside "::" (x, then y and z after them), which step over them. */
    for (int i = 0; i < 1030; i++) {
        snprintf(inv, sizeof(inv), "many-%d", i);
        snprintf(app, sizeof(app), "::m:%d", i);
        q.app = app, q.invocation_id = inv;
        q.lease_ttl_ms = i % 2 ? 1 : 60000;
        assert_int_equal(journal_exec(f->j, &q, &res), REEL_OK);
        journal_result_fini(&res);
    }
    expect_prefix_pages(f, "::m:", RUN_STATUS_ANY, 70);
    expect_prefix_pages(f, "::m:1", RUN_STATUS_ANY, 7);
    expect_prefix_pages(f, "::m:1", RUN_RUNNING, 7);
    expect_prefix_pages(f, "::t:", RUN_STATUS_ANY, 2);
    for (int i = 0; i < 6; i++) {
        snprintf(inv, sizeof(inv), "late-%d", i);
        q.app = i % 2 ? "y" : "z", q.invocation_id = inv;
        q.lease_ttl_ms = i % 3 ? 1 : 60000;
        assert_int_equal(journal_exec(f->j, &q, &res), REEL_OK);
        journal_result_fini(&res);
    }
    expect_prefix_pages(f, "!::", RUN_STATUS_ANY, 2);
    expect_prefix_pages(f, "!::", RUN_RUNNING, 3);
    expect_prefix_pages(f, "!::", RUN_COMPLETED, 1);
    expect_prefix_pages(f, "!::m:", RUN_STATUS_ANY, 50);
    usleep(5000);
    expect_prefix_pages(f, "::m:", -1, 70);
    expect_prefix_pages(f, "::m:1", -1, 7);
    expect_prefix_pages(f, "!::", -1, 2);

    /* The apps outside "::" step over the 1,030 under it, not read them:
     * with a tenant's run unreadable (an active one: in every index it
     * is in), they list as before, and a walk of every run fails on it. */
    q.app = "::m:7", q.invocation_id = "spoiled", q.lease_ttl_ms = 1;
    assert_int_equal(journal_exec(f->j, &q, &res), REEL_OK);
    assert_int_equal(store_exec(f->store, spoil_run,
                                &(spoil_t){f, res.run.run_id}, NULL, NULL),
                     REEL_OK);
    journal_result_fini(&res);
    usleep(5000);
    for (int s = -1; s <= RUN_PAUSED; s++)
        assert_int_equal(list_outside(f, s), REEL_OK);
    assert_int_equal(list_outside(f, RUN_STATUS_ANY - 100), REEL_DATA_LOSS);
}

/* Counts the requests a test submitted without waiting for each, and
 * keeps the run ids they answer. */
typedef struct begun {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    size_t n, failed;
    char (*ids)[JOURNAL_RUN_ID_LEN + 1];
} begun_t;

static void begun_done(void *arg, journal_result_t *res) {
    begun_t *b = arg;

    pthread_mutex_lock(&b->mu);
    snprintf(b->ids[b->n], JOURNAL_RUN_ID_LEN + 1, "%s", res->run.run_id);
    b->n++;
    b->failed += res->status.code != REEL_OK;
    pthread_cond_signal(&b->cv);
    pthread_mutex_unlock(&b->mu);
}

/* Submits q (for the i-th of n) and waits while 500 are in flight, or
 * for all at the last. */
static void submit_windowed(fixture_t *f, begun_t *b, journal_req_t *q,
                            int i, int n) {
    assert_int_equal(journal_submit(f->j, q, begun_done, b, NULL), REEL_OK);
    pthread_mutex_lock(&b->mu);
    while (i + 1 - (int)b->n >= 500 || (i + 1 == n && (int)b->n < n))
        pthread_cond_wait(&b->cv, &b->mu);
    pthread_mutex_unlock(&b->mu);
}

/* n more runs of app, ended with status end (0: left RUNNING), submitted
 * 500 at a time (they commit in groups, not one synced write each). */
static void begin_many(fixture_t *f, const char *app, int n,
                       run_status_t end) {
    begun_t b = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0,
                 NULL};
    char (*ids)[JOURNAL_RUN_ID_LEN + 1] = calloc((size_t)n, sizeof(*ids));
    journal_req_t q = {0};
    char inv[32];

    assert_non_null(b.ids = calloc((size_t)n, sizeof(*b.ids)));
    assert_non_null(ids);
    q.op = JOURNAL_BEGIN;
    q.app = app, q.user = "u", q.session = "s", q.lease_owner = "w";
    q.lease_ttl_ms = 60000;
    for (int i = 0; i < n; i++) {
        snprintf(inv, sizeof(inv), "many-%d", i);
        q.invocation_id = inv;
        submit_windowed(f, &b, &q, i, n);
    }
    assert_int_equal(b.failed, 0);
    memcpy(ids, b.ids, (size_t)n * sizeof(*ids));
    b.n = 0;
    q = (journal_req_t){0};
    q.op = JOURNAL_END, q.lease_epoch = 1, q.end_status = end;
    for (int i = 0; end != RUN_STATUS_ANY && i < n; i++) {
        q.run_id = ids[i];
        submit_windowed(f, &b, &q, i, n);
    }
    assert_int_equal(b.failed, 0);
    free(ids);
    free(b.ids);
}

static reel_code_t drop_status_indexes(store_txn_t *txn, void *arg,
                                       reel_status_t *st) {
    store_cf_t *cf;

    if (store_cf_lookup(((fixture_t *)arg)->store, "runs", &cf,
                        st) != REEL_OK)
        return st->code;
    store_txn_delete_range_blind(txn, cf, "x", 1, "y", 1);
    store_txn_delete_range_blind(txn, cf, "X", 1, "Y", 1);
    return REEL_OK;
}

/* Every listing by status (of every app, of one, of a prefix's apps)
 * against the records. */
static void expect_status_pages(fixture_t *f) {
    for (int s = RUN_RUNNABLE; s <= RUN_PAUSED; s++) {
        expect_prefix_pages(f, "", s, 3);
        expect_prefix_pages(f, "::t:", s, 2);
        expect_prefix_pages(f, "::t:a", s, 100);
        expect_prefix_pages(f, "x", s, 4);
        expect_prefix_pages(f, "!::", s, 3); /* the default tenant's */
        expect_prefix_pages(f, "!::t:a", s, 2);
    }
}

/*
 * ListRuns by status reads an index, not every run (RUNNABLE and RUNNING
 * the active one, the others the status indexes, 'x', and 'X' by app):
 * each status's pages equal the records filtered by status,
 * for every app, one app's prefix, a tenant's apps and the apps outside
 * a prefix (the default tenant's), and a run that
 * changes status moves between them. A data dir of format 5 gets the
 * indexes from journal_upgrade(), in batches past the first.
 */
static void test_runs_list_by_status_from_their_index(void **state) {
    fixture_t *f = *state;
    const char *apps[4] = {"::t:a", "::t:b", "x", "xy"};
    const run_status_t ends[3] = {RUN_COMPLETED, RUN_FAILED, RUN_CANCELLED};
    char ids[40][27], inv[16];
    journal_req_t q = {0};
    journal_result_t res;
    run_t *runs;
    size_t n;
    int more;

    for (int i = 0; i < 40; i++) {
        snprintf(inv, sizeof(inv), "inv-%d", i);
        q = (journal_req_t){0};
        q.op = JOURNAL_BEGIN;
        q.app = apps[i % 4], q.user = "u", q.session = "s";
        q.invocation_id = inv, q.lease_owner = "w", q.lease_ttl_ms = 60000;
        assert_int_equal(journal_exec(f->j, &q, &res), REEL_OK);
        snprintf(ids[i], 27, "%s", res.run.run_id);
        journal_result_fini(&res);
        q = (journal_req_t){0};
        q.run_id = ids[i], q.lease_epoch = 1;
        if (i % 5 == 1) { /* WAITING */
            q.op = JOURNAL_SUSPEND, q.waiting_on = "go";
        } else if (i % 5 >= 2) {
            q.op = JOURNAL_END, q.end_status = ends[i % 5 - 2];
        } else {
            continue; /* RUNNING */
        }
        assert_int_equal(journal_exec(f->j, &q, &res), REEL_OK);
        journal_result_fini(&res);
    }
    expect_status_pages(f);
    n = list_status(f, NULL, RUN_WAITING, NULL, 0, &runs, &more);
    expect_runs(runs, n, ids, (const int[]){1, 6, 11, 16, 21, 26, 31, 36}, 8);
    /* A status change moves the run: RUNNING 5 ends FAILED. */
    q = (journal_req_t){0};
    q.op = JOURNAL_END, q.run_id = ids[5], q.lease_epoch = 1;
    q.end_status = RUN_FAILED;
    assert_int_equal(journal_exec(f->j, &q, &res), REEL_OK);
    journal_result_fini(&res);
    n = list_status(f, NULL, RUN_RUNNING, NULL, 0, &runs, &more);
    expect_runs(runs, n, ids, (const int[]){0, 10, 15, 20, 25, 30, 35}, 7);
    n = list_status(f, "::t:b", RUN_FAILED, NULL, 0, &runs, &more);
    expect_runs(runs, n, ids, (const int[]){5, 13, 33}, 3);
    n = list_status(f, "::t:c", RUN_FAILED, NULL, 0, &runs, &more);
    expect_runs(runs, n, ids, NULL, 0);
    expect_status_pages(f);

    /* A dir of format 5: no status indexes until the upgrade makes them,
     * over more runs than one of its commits takes. */
    begin_many(f, "::t:many", 4200, RUN_CANCELLED);
    assert_int_equal(store_exec(f->store, drop_status_indexes, f, NULL, NULL),
                     REEL_OK);
    n = list_status(f, NULL, RUN_WAITING, NULL, 0, &runs, &more);
    expect_runs(runs, n, ids, NULL, 0);
    assert_int_equal(journal_upgrade(f->j, 5, NULL), REEL_OK);
    expect_status_pages(f);
    n = list_status(f, NULL, RUN_CANCELLED, NULL, 1000, &runs, &more);
    assert_int_equal(n, 1000);
    assert_true(more);
    for (size_t i = 0; i < n; i++)
        run_fini(&runs[i]);
    free(runs);
    expect_prefix_pages(f, "::t:many", RUN_CANCELLED, 1000);
}

typedef struct session_arg {
    journal_t *j;
    char id[27]; /* the session's run, or "" */
} session_arg_t;

static reel_code_t session_apply(store_txn_t *txn, void *arg,
                                 reel_status_t *st) {
    session_arg_t *a = arg;
    run_t r;
    reel_code_t rc = journal_txn_session_run(a->j, txn, "app", "u1", "s1", &r,
                                             st);

    a->id[0] = '\0';
    if (rc == REEL_OK) {
        snprintf(a->id, sizeof(a->id), "%s", r.run_id);
        run_fini(&r);
    }
    return rc == REEL_NOT_FOUND ? (reel_status_fini(st), REEL_OK) : rc;
}

/* The session's run a send by session goes to. */
static const char *session_run(fixture_t *f, session_arg_t *a) {
    a->j = f->j;
    assert_int_equal(store_exec(f->store, session_apply, a, NULL, NULL),
                     REEL_OK);
    return a->id;
}

static reel_code_t drop_open_index(store_txn_t *txn, void *arg,
                                   reel_status_t *st) {
    store_cf_t *cf;

    if (store_cf_lookup(((fixture_t *)arg)->store, "runs", &cf,
                        st) != REEL_OK)
        return st->code;
    store_txn_delete_range_blind(txn, cf, "o", 1, "p", 1);
    return REEL_OK;
}

/*
 * A send by session goes to the session's newest run that has not ended,
 * read from the index of such runs ('o'), not from every run the session
 * had: an ended run leaves it. A dir of format 6 gets it from
 * journal_upgrade().
 */
static void test_a_sessions_newest_run_not_ended_is_indexed(void **state) {
    fixture_t *f = *state;
    journal_result_t res;
    session_arg_t a;
    char old[27], mid[27], nw[27];

    assert_string_equal(session_run(f, &a), "");
    begin_ok(f, "inv-old", "w", 60000, old);
    begin_ok(f, "inv-mid", "w", 60000, mid);
    begin_ok(f, "inv-new", "w", 60000, nw);
    assert_string_equal(session_run(f, &a), nw);
    assert_int_equal(simple(f, JOURNAL_END, nw, 1, NULL, &res), REEL_OK);
    journal_result_fini(&res);
    assert_string_equal(session_run(f, &a), mid);
    /* Suspended, it has not ended: still the session's. */
    assert_int_equal(simple(f, JOURNAL_SUSPEND, mid, 1, NULL, &res),
                     REEL_OK);
    journal_result_fini(&res);
    assert_string_equal(session_run(f, &a), mid);
    assert_int_equal(store_exec(f->store, drop_open_index, f, NULL, NULL),
                     REEL_OK);
    assert_string_equal(session_run(f, &a), "");
    assert_int_equal(journal_upgrade(f->j, 6, NULL), REEL_OK);
    assert_string_equal(session_run(f, &a), mid);
    assert_int_equal(simple(f, JOURNAL_END, mid, 1, NULL, &res), REEL_OK);
    journal_result_fini(&res);
    assert_int_equal(simple(f, JOURNAL_END, old, 1, NULL, &res), REEL_OK);
    journal_result_fini(&res);
    assert_string_equal(session_run(f, &a), "");
}

/* An entry's change carries its run's app (the WAL tells the run's tenant
 * from it without a read); the stored entry does not. */
static void test_an_entrys_change_carries_its_runs_app_and_its_record_not(
    void **state) {
    fixture_t *f = *state;
    journal_result_t res;
    journal_entry_t *es = NULL;
    char id[27];
    size_t n = 0;
    int more = 0;

    begin_ok(f, "inv-app", "w", 30000, id);
    assert_int_equal(append(f, id, 1, NULL, 0, &res), REEL_OK);
    journal_result_fini(&res);
    assert_int_equal(f->entry_changes, 1);
    assert_string_equal(f->entry_app, "app");
    assert_int_equal(journal_read(f->j, id, 0, 10, NULL, &es, &n, &more, NULL),
                     REEL_OK);
    assert_int_equal(n, 1);
    assert_string_equal(es[0].app, "");
    assert_string_equal(es[0].kind, "step");
    journal_entry_fini(&es[0]);
    free(es);
}

/* keep: only the runs whose app is "::acme:shop". */
static int keep_acme(void *arg, const run_t *r) {
    (void)arg;
    return strcmp(r->app, "::acme:shop") == 0;
}

static void test_listings_keep_only_the_runs_keep_keeps(void **state) {
    fixture_t *f = *state;
    journal_req_t q = {0};
    journal_result_t res;
    run_filter_t filt = {0};
    run_t *runs = NULL;
    size_t n = 0;
    int more = 0;
    const char *apps[] = {"shop", "::acme:shop", "::beta:shop", "::acme:shop"};
    char ids[4][27];

    for (int i = 0; i < 4; i++) {
        char inv[16];

        snprintf(inv, sizeof(inv), "i%d", i);
        q.op = JOURNAL_BEGIN;
        q.app = apps[i], q.user = "u", q.session = "s";
        q.invocation_id = inv;
        q.lease_owner = "w";
        q.lease_ttl_ms = 1; /* expires at once: recoverable */
        assert_int_equal(journal_exec(f->j, &q, &res), REEL_OK);
        snprintf(ids[i], 27, "%s", res.run.run_id);
        journal_result_fini(&res);
    }
    usleep(5000);
    /* A page of one: the skipped runs count toward no limit. */
    filt.keep = keep_acme;
    filt.limit = 1;
    assert_int_equal(journal_list_runs(f->j, &filt, &runs, &n, &more, NULL),
                     REEL_OK);
    assert_int_equal(n, 1);
    assert_string_equal(runs[0].run_id, ids[1]);
    assert_true(more);
    run_fini(&runs[0]);
    free(runs);
    filt.start_after = ids[1];
    assert_int_equal(journal_list_runs(f->j, &filt, &runs, &n, &more, NULL),
                     REEL_OK);
    assert_int_equal(n, 1);
    assert_string_equal(runs[0].run_id, ids[3]);
    run_fini(&runs[0]);
    free(runs);
    filt.start_after = NULL;
    filt.limit = 0;
    assert_int_equal(journal_list_recoverable_kept(f->j, &filt, &runs, &n,
                                                   &more, NULL),
                     REEL_OK);
    assert_int_equal(n, 2);
    assert_string_equal(runs[0].run_id, ids[1]);
    assert_string_equal(runs[1].run_id, ids[3]);
    for (size_t i = 0; i < n; i++)
        run_fini(&runs[i]);
    free(runs);
    /* Without keep: every run. */
    assert_int_equal(journal_list_recoverable(f->j, NULL, NULL, 0, NULL, &runs,
                                              &n, &more, NULL),
                     REEL_OK);
    assert_int_equal(n, 4);
    for (size_t i = 0; i < n; i++)
        run_fini(&runs[i]);
    free(runs);
}

int main(void) {
    const struct CMUnitTest tests[] = {
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
        T(test_begin_is_idempotent_on_the_invocation),
        T(test_begin_of_a_run_leased_to_another_is_refused),
        T(test_concurrent_appends_get_gapless_seqs),
        T(test_retried_append_with_the_same_key_writes_nothing),
        T(test_zombie_is_fenced_after_a_claim),
        T(test_a_fenced_retry_of_a_used_key_hears_lease_lost),
        T(test_a_key_reused_with_another_kind_or_payload_is_refused),
        T(test_of_concurrent_claimers_exactly_one_wins),
        T(test_terminal_and_waiting_runs_refuse_appends),
        T(test_bad_input_is_invalid_and_writes_nothing),
        T(test_subscription_replays_then_follows_then_ends),
        T(test_a_subscription_may_be_destroyed_inside_end),
        T(test_everything_acknowledged_survives_reopen),
        T(test_subscribing_past_the_last_seq_is_invalid_naming_it),
        T(test_a_corrupt_entry_ends_a_subscription_with_data_loss),
        T(test_run_lists_fail_on_a_corrupt_run_naming_it),
        T(test_a_failed_snapshot_ends_a_subscription_instead_of_waiting),
        T(test_an_iterator_error_ends_a_subscription_with_internal),
        T(test_read_stops_at_the_byte_budget),
        T(test_list_runs_stops_at_the_byte_budget),
        T(test_recoverable_pages_by_cursor_count_and_bytes),
        T(test_recoverable_runs_filtered_by_app),
        T(test_recoverable_runs_of_an_app_come_from_its_index),
        T(test_runs_of_a_tenants_apps_merge_their_indexes),
        T(test_runs_list_by_status_from_their_index),
        T(test_a_sessions_newest_run_not_ended_is_indexed),
        T(test_a_change_publish_cannot_decode_is_read_from_storage),
        T(test_an_entrys_change_carries_its_runs_app_and_its_record_not),
        T(test_listings_keep_only_the_runs_keep_keeps),
    };
    return cmocka_run_group_tests_name("journal", tests, NULL, NULL);
}
