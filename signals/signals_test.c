/*
 * signals/signals_test.c: mailboxes, dedup, exactly-once consumption,
 * waking WAITING runs, waiters.
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

#include "base/fault.h"
#include "base/json.h"
#include "signals/signals.h"
#include "testing/fixture.h"

typedef struct fixture {
    char dir[512];
    store_t *store;
    journal_t *j;
    signals_t *s;
    /* The app the signals' changes carried, by kind (under mu). */
    pthread_mutex_t mu;
    char change_app[2][64];
    int changes[2];
} fixture_t;

static void publish(void *arg, const store_change_t *c, size_t n) {
    fixture_t *f = arg;

    for (size_t i = 0; i < n; i++) {
        signal_t g;
        int consumed = 0;

        if (signals_change_decode(&c[i], &g, &consumed) != 1)
            continue;
        pthread_mutex_lock(&f->mu);
        snprintf(f->change_app[consumed], sizeof(f->change_app[0]), "%s",
                 g.app);
        f->changes[consumed]++;
        pthread_mutex_unlock(&f->mu);
        signal_fini(&g);
    }

    if (f->s != NULL)
        signals_publish(f->s, c, n);
}

static void open_all(fixture_t *f) {
    store_opts_t o = {0};
    reel_status_t st = REEL_STATUS_INIT;

    o.cfs = (const store_cf_desc_t *const[]){journal_cfs, signals_cfs, NULL};
    o.publish = publish;
    o.publish_arg = f;
    f->store = testing_store_open(f->dir, &o);
    if (journal_create(f->store, NULL, &f->j, &st) != REEL_OK ||
        signals_create(f->store, f->j, NULL, &f->s, &st) != REEL_OK)
        fail_msg("open: %s", reel_status_message(&st));
}

static void close_all(fixture_t *f) {
    store_close(f->store);
    signals_destroy(f->s);
    journal_destroy(f->j);
    f->s = NULL;
}

static int setup(void **state) {
    fixture_t *f = calloc(1, sizeof(*f));

    if (testing_dir_make(f->dir, sizeof(f->dir), "signals") != 0)
        return -1;
    pthread_mutex_init(&f->mu, NULL);
    open_all(f);
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

/* ---- Synchronous wrappers ------------------------------------------------ */

typedef struct waitbox {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int done;
    signals_send_result_t send;
    signals_consume_result_t consume;
} waitbox_t;

static void box_init(waitbox_t *b) {
    memset(b, 0, sizeof(*b));
    pthread_mutex_init(&b->mu, NULL);
    pthread_cond_init(&b->cv, NULL);
}

static void box_wait(waitbox_t *b) {
    pthread_mutex_lock(&b->mu);
    while (!b->done)
        pthread_cond_wait(&b->cv, &b->mu);
    pthread_mutex_unlock(&b->mu);
}

static void sent(void *arg, signals_send_result_t *res) {
    waitbox_t *b = arg;

    pthread_mutex_lock(&b->mu);
    b->send = *res;
    memset(res, 0, sizeof(*res));
    b->done = 1;
    pthread_cond_signal(&b->cv);
    pthread_mutex_unlock(&b->mu);
}

static void consumed(void *arg, signals_consume_result_t *res) {
    waitbox_t *b = arg;

    pthread_mutex_lock(&b->mu);
    b->consume = *res;
    memset(res, 0, sizeof(*res));
    b->done = 1;
    pthread_cond_signal(&b->cv);
    pthread_mutex_unlock(&b->mu);
}

static reel_code_t send_sig(fixture_t *f, const char *run_id, const char *name,
                            const char *payload, const char *id,
                            signals_send_result_t *out) {
    int by_run = run_id != NULL && *run_id;
    signals_send_args_t a = {run_id, by_run ? "" : "app", by_run ? "" : "u",
                             by_run ? "" : "s", name, payload, id, 0};
    waitbox_t b;
    reel_code_t rc;

    box_init(&b);
    rc = signals_send(f->s, &a, sent, &b, &b.send.status);
    if (rc == REEL_OK) {
        box_wait(&b);
        rc = b.send.status.code;
    }
    *out = b.send;
    return rc;
}

static void send_fini(signals_send_result_t *r) {
    reel_status_fini(&r->status);
    signal_fini(&r->signal);
}

static reel_code_t consume(fixture_t *f, const char *run_id, const char *name,
                           uint64_t epoch, const atomic_int *abandoned,
                           signals_consume_result_t *out) {
    waitbox_t b;
    reel_code_t rc;

    box_init(&b);
    rc = signals_consume(f->s, run_id, name, epoch, abandoned, consumed, &b,
                         &b.consume.status);
    if (rc == REEL_OK) {
        box_wait(&b);
        rc = b.consume.status.code;
    }
    *out = b.consume;
    return rc;
}

static void consume_fini(signals_consume_result_t *r) {
    reel_status_fini(&r->status);
    signal_fini(&r->signal);
}

static void begin(fixture_t *f, const char *inv, char id[27]) {
    journal_req_t q = {0};
    journal_result_t res;

    q.op = JOURNAL_BEGIN;
    q.app = "app", q.user = "u", q.session = "s";
    q.invocation_id = inv;
    q.lease_owner = "w";
    if (journal_exec(f->j, &q, &res) != REEL_OK)
        fail_msg("begin: %s", reel_status_message(&res.status));
    snprintf(id, 27, "%s", res.run.run_id);
    journal_result_fini(&res);
}

/* ---- Tests ---------------------------------------------------------------- */

/* A send's and a consumption's changes carry the run's app (the WAL tells
 * the run's tenant from it without a read); stored signals do not. */
static void test_a_signals_changes_carry_its_runs_app_and_its_record_not(
    void **state) {
    fixture_t *f = *state;
    signals_send_result_t sr;
    signals_consume_result_t cr;
    signals_list_args_t la = {0};
    signal_t *list = NULL;
    size_t n = 0;
    int more = 0;
    char id[27];

    begin(f, "inv-app", id);
    assert_int_equal(send_sig(f, id, "go", "{}", "", &sr), REEL_OK);
    send_fini(&sr);
    assert_int_equal(consume(f, id, "go", 1, NULL, &cr), REEL_OK);
    assert_true(cr.delivered);
    consume_fini(&cr);
    /* A later commit: both earlier groups have been published. */
    assert_int_equal(send_sig(f, id, "later", "{}", "", &sr), REEL_OK);
    send_fini(&sr);
    pthread_mutex_lock(&f->mu);
    assert_true(f->changes[0] >= 1 && f->changes[1] == 1);
    assert_string_equal(f->change_app[0], "app");
    assert_string_equal(f->change_app[1], "app");
    pthread_mutex_unlock(&f->mu);
    la.run_id = id;
    la.include_consumed = 1;
    assert_int_equal(signals_list(f->s, &la, &list, &n, &more, NULL), REEL_OK);
    assert_int_equal(n, 2);
    for (size_t i = 0; i < n; i++) {
        assert_string_equal(list[i].app, "");
        signal_fini(&list[i]);
    }
    free(list);
}

static void test_signals_are_fifo_per_name_and_recorded_in_the_journal(
    void **state) {
    fixture_t *f = *state;
    signals_send_result_t s;
    signals_consume_result_t c;
    journal_entry_t *es;
    size_t n;
    int more;
    char id[27];

    begin(f, "inv", id);
    assert_int_equal(send_sig(f, id, "go", "1", "", &s), REEL_OK);
    assert_int_equal(s.signal.seq, 1);
    send_fini(&s);
    assert_int_equal(send_sig(f, id, "other", "9", "", &s), REEL_OK);
    send_fini(&s);
    assert_int_equal(send_sig(f, id, "go", "2", "", &s), REEL_OK);
    send_fini(&s);
    for (int want = 1; want <= 2; want++) {
        char p[16];
        assert_int_equal(consume(f, id, "go", 1, NULL, &c), REEL_OK);
        assert_true(c.delivered);
        snprintf(p, sizeof(p), "%d", want);
        assert_string_equal(c.signal.payload, p);
        assert_int_equal(c.signal.journal_seq, (uint64_t)want);
        consume_fini(&c);
    }
    assert_int_equal(consume(f, id, "go", 1, NULL, &c), REEL_OK);
    assert_false(c.delivered);
    consume_fini(&c);
    assert_int_equal(journal_read(f->j, id, 0, 0, NULL, &es, &n, &more, NULL),
                     REEL_OK);
    assert_int_equal(n, 2);
    assert_string_equal(es[0].kind, "signal");
    assert_string_equal(es[0].payload,
                        "{\"name\":\"go\",\"signal_id\":\"\",\"payload\":1}");
    for (size_t i = 0; i < n; i++)
        journal_entry_fini(&es[i]);
    free(es);
}

static void test_a_retried_signal_id_is_stored_once(void **state) {
    fixture_t *f = *state;
    signals_send_result_t a, b;
    signals_list_args_t la = {0};
    signal_t *list;
    size_t n;
    int more;
    char id[27];

    begin(f, "inv", id);
    assert_int_equal(send_sig(f, id, "go", "{}", "dedup-1", &a), REEL_OK);
    assert_false(a.duplicate);
    assert_int_equal(send_sig(f, id, "go", "{}", "dedup-1", &b), REEL_OK);
    assert_true(b.duplicate);
    assert_int_equal(b.signal.seq, a.signal.seq);
    send_fini(&a);
    send_fini(&b);
    /* Another signal reusing the id is refused, not taken for a retry. */
    assert_int_equal(send_sig(f, id, "stop", "{}", "dedup-1", &b),
                     REEL_ALREADY_EXISTS);
    assert_non_null(strstr(reel_status_message(&b.status),
                           "named \"go\": a retry must repeat"));
    send_fini(&b);
    assert_int_equal(send_sig(f, id, "go", "{\"x\":1}", "dedup-1", &b),
                     REEL_ALREADY_EXISTS);
    assert_non_null(strstr(reel_status_message(&b.status),
                           "with another payload"));
    send_fini(&b);
    la.run_id = id, la.include_consumed = 1;
    assert_int_equal(signals_list(f->s, &la, &list, &n, &more, NULL), REEL_OK);
    assert_false(more);
    assert_int_equal(n, 1);
    signal_fini(&list[0]);
    free(list);
}

static void test_stale_epoch_and_abandoned_awaits_consume_nothing(
    void **state) {
    fixture_t *f = *state;
    signals_send_result_t s;
    signals_consume_result_t c;
    atomic_int gone = 1;
    char id[27];

    begin(f, "inv", id);
    assert_int_equal(send_sig(f, id, "go", "1", "", &s), REEL_OK);
    send_fini(&s);
    assert_int_equal(consume(f, id, "go", 7, NULL, &c),
                     REEL_FAILED_PRECONDITION);
    assert_non_null(strstr(reel_status_message(&c.status), "lease lost"));
    consume_fini(&c);
    assert_int_equal(consume(f, id, "go", 1, &gone, &c), REEL_OK);
    assert_false(c.delivered);
    consume_fini(&c);
    assert_int_equal(consume(f, id, "go", 1, NULL, &c), REEL_OK);
    assert_true(c.delivered); /* still there */
    consume_fini(&c);
}

static void test_a_signal_wakes_a_run_waiting_on_its_name(void **state) {
    fixture_t *f = *state;
    journal_req_t q = {0};
    journal_result_t res;
    signals_send_result_t s;
    run_t r;
    char id[27];

    begin(f, "inv", id);
    q.op = JOURNAL_SUSPEND;
    q.run_id = id;
    q.lease_epoch = 1;
    q.waiting_on = "approve";
    assert_int_equal(journal_exec(f->j, &q, &res), REEL_OK);
    assert_int_equal(res.run.status, RUN_WAITING);
    journal_result_fini(&res);
    assert_int_equal(send_sig(f, id, "other", "", "", &s), REEL_OK);
    assert_int_equal(s.run_status, RUN_WAITING);
    send_fini(&s);
    /* Routed by session to its newest live run. */
    assert_int_equal(send_sig(f, "", "approve", "true", "", &s), REEL_OK);
    assert_int_equal(s.run_status, RUN_RUNNABLE);
    send_fini(&s);
    assert_int_equal(journal_get_run(f->j, id, &r, NULL), REEL_OK);
    assert_int_equal(r.status, RUN_RUNNABLE);
    run_fini(&r);
}

static void test_suspending_on_a_pending_signal_is_runnable_at_once(
    void **state) {
    fixture_t *f = *state;
    journal_req_t q = {0};
    journal_result_t res;
    signals_send_result_t s;
    char id[27];

    begin(f, "inv", id);
    assert_int_equal(send_sig(f, id, "approve", "", "", &s), REEL_OK);
    send_fini(&s);
    q.op = JOURNAL_SUSPEND;
    q.run_id = id;
    q.lease_epoch = 1;
    q.waiting_on = "approve";
    assert_int_equal(journal_exec(f->j, &q, &res), REEL_OK);
    assert_int_equal(res.run.status, RUN_RUNNABLE);
    journal_result_fini(&res);
}

/* A mailbox that cannot be read is not an empty one: the consume fails,
 * and the signal is still there for the next. */
static void test_a_failed_read_of_the_mailbox_fails_the_consume(
    void **state) {
    fixture_t *f = *state;
    signals_send_result_t s;
    signals_consume_result_t c;
    char id[27];

    begin(f, "inv", id);
    assert_int_equal(send_sig(f, id, "go", "1", "", &s), REEL_OK);
    send_fini(&s);
    reel_fault_arm("store.iter", 0, 1);
    assert_int_equal(consume(f, id, "go", 1, NULL, &c), REEL_INTERNAL);
    reel_fault_reset();
    assert_false(c.delivered);
    assert_non_null(strstr(reel_status_message(&c.status), "injected fault"));
    consume_fini(&c);
    assert_int_equal(consume(f, id, "go", 1, NULL, &c), REEL_OK);
    assert_true(c.delivered);
    consume_fini(&c);
}

/* The same for SuspendRun's look for a signal that came first: parked
 * past it, the run would wait for nothing. Nothing is written. */
static void test_a_failed_look_for_a_pending_signal_fails_the_suspend(
    void **state) {
    fixture_t *f = *state;
    journal_req_t q = {0};
    journal_result_t res;
    signals_send_result_t s;
    run_t r;
    char id[27];

    begin(f, "inv", id);
    assert_int_equal(send_sig(f, id, "approve", "", "", &s), REEL_OK);
    send_fini(&s);
    q.op = JOURNAL_SUSPEND;
    q.run_id = id;
    q.lease_epoch = 1;
    q.waiting_on = "approve";
    reel_fault_arm("store.iter", 0, 1);
    assert_int_equal(journal_exec(f->j, &q, &res), REEL_INTERNAL);
    reel_fault_reset();
    journal_result_fini(&res);
    assert_int_equal(journal_get_run(f->j, id, &r, NULL), REEL_OK);
    assert_int_equal(r.status, RUN_RUNNING); /* untouched */
    run_fini(&r);
    assert_int_equal(journal_exec(f->j, &q, &res), REEL_OK);
    assert_int_equal(res.run.status, RUN_RUNNABLE);
    journal_result_fini(&res);
}

static void test_ended_runs_and_bad_input_are_refused(void **state) {
    fixture_t *f = *state;
    journal_req_t q = {0};
    journal_result_t res;
    signals_send_result_t s;
    int64_t t = -1;
    char id[27];

    begin(f, "inv", id);
    assert_int_equal(send_sig(f, id, "bad name", "", "", &s),
                     REEL_INVALID_ARGUMENT);
    assert_non_null(strstr(reel_status_message(&s.status), "name"));
    send_fini(&s);
    assert_int_equal(send_sig(f, id, "go", "{x", "", &s),
                     REEL_INVALID_ARGUMENT);
    assert_non_null(strstr(reel_status_message(&s.status), "payload"));
    send_fini(&s);
    {
        /* A run and a session both: which one is meant is not clear. */
        signals_send_args_t both = {id, "", "", "s", "go", "", "", 0};
        reel_status_t st = REEL_STATUS_INIT;

        assert_int_equal(signals_send(f->s, &both, sent, NULL, &st),
                         REEL_INVALID_ARGUMENT);
        assert_non_null(strstr(reel_status_message(&st), "not both"));
        reel_status_fini(&st);
    }
    assert_int_equal(signals_check_await(f->s, id, "go", &t, NULL),
                     REEL_INVALID_ARGUMENT);
    t = 999999999;
    assert_int_equal(signals_check_await(f->s, id, "go", &t, NULL), REEL_OK);
    assert_int_equal(t, SIGNALS_DEFAULT_MAX_WAIT_MS);
    q.op = JOURNAL_END;
    q.run_id = id;
    q.lease_epoch = 1;
    q.end_status = RUN_COMPLETED;
    assert_int_equal(journal_exec(f->j, &q, &res), REEL_OK);
    journal_result_fini(&res);
    assert_int_equal(send_sig(f, id, "go", "", "", &s),
                     REEL_FAILED_PRECONDITION);
    send_fini(&s);
    assert_int_equal(send_sig(f, "", "go", "", "", &s), REEL_NOT_FOUND);
    send_fini(&s);
}

typedef struct taker {
    fixture_t *f;
    const char *id;
    uint64_t got[64];
    int n;
} taker_t;

static void *taker_main(void *arg) {
    taker_t *t = arg;
    int empty = 0;

    while (empty < 50) {
        signals_consume_result_t c;

        if (consume(t->f, t->id, "go", 1, NULL, &c) == REEL_OK &&
            c.delivered) {
            t->got[t->n++] = c.signal.seq;
            empty = 0;
        } else {
            empty++;
        }
        consume_fini(&c);
    }
    return NULL;
}

static void test_concurrent_awaiters_never_share_a_signal(void **state) {
    fixture_t *f = *state;
    static taker_t tk[4];
    pthread_t th[4];
    uint8_t seen[65] = {0};
    int total = 0;
    char id[27];

    begin(f, "inv", id);
    for (int i = 0; i < 64; i++) {
        signals_send_result_t s;
        assert_int_equal(send_sig(f, id, "go", "", "", &s), REEL_OK);
        send_fini(&s);
    }
    for (int i = 0; i < 4; i++) {
        tk[i] = (taker_t){f, id, {0}, 0};
        pthread_create(&th[i], NULL, taker_main, &tk[i]);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        for (int k = 0; k < tk[i].n; k++) {
            assert_int_equal(seen[tk[i].got[k]], 0);
            seen[tk[i].got[k]] = 1;
        }
        total += tk[i].n;
    }
    assert_int_equal(total, 64);
}

static int woken;

static void wake(void *arg) {
    (void)arg;
    woken++;
}

static void test_waiters_are_woken_by_their_signals_only(void **state) {
    fixture_t *f = *state;
    signals_send_result_t s;
    signals_waiter_t *w;
    char id[27];

    begin(f, "inv", id);
    woken = 0;
    w = signals_wait(f->s, id, "go", 1, wake, NULL, NULL);
    assert_non_null(w);
    assert_int_equal(send_sig(f, id, "other", "", "", &s), REEL_OK);
    send_fini(&s);
    assert_int_equal(woken, 0);
    assert_int_equal(send_sig(f, id, "go", "", "", &s), REEL_OK);
    send_fini(&s);
    assert_int_equal(woken, 1); /* publish ran before the send completed */
    signals_unwait(f->s, w);
    assert_int_equal(send_sig(f, id, "go", "", "", &s), REEL_OK);
    send_fini(&s);
    assert_int_equal(woken, 1);
}

/* A waiter is woken when the lease it awaits at ends (its await then
 * fails the lease check at once), not by the holder's own writes. */
static void test_waiters_are_woken_when_their_lease_ends(void **state) {
    fixture_t *f = *state;
    journal_req_t q = {0};
    journal_result_t res;
    signals_waiter_t *w, *other;
    char id[27], id2[27];

    begin(f, "inv", id);
    begin(f, "inv2", id2);
    woken = 0;
    w = signals_wait(f->s, id, "go", 1, wake, NULL, NULL);
    other = signals_wait(f->s, id2, "go", 1, wake, NULL, NULL);
    assert_non_null(w);
    assert_non_null(other);
    q.op = JOURNAL_APPEND;
    q.run_id = id;
    q.lease_epoch = 1;
    q.kind = "step";
    q.payload = "{}";
    assert_int_equal(journal_exec(f->j, &q, &res), REEL_OK);
    journal_result_fini(&res);
    assert_int_equal(woken, 0); /* RUNNING at its epoch still */
    q.op = JOURNAL_SUSPEND;
    q.waiting_on = "later";
    assert_int_equal(journal_exec(f->j, &q, &res), REEL_OK);
    journal_result_fini(&res);
    assert_int_equal(woken, 1); /* WAITING: the lease is gone */
    {
        signals_consume_result_t r;

        assert_int_equal(consume(f, id, "go", 1, NULL, &r),
                         REEL_FAILED_PRECONDITION);
        consume_fini(&r);
    }
    signals_unwait(f->s, w);
    signals_unwait(f->s, other);
}

/* A waiter that claims one signal at a time, as an awaiter does. */
typedef struct claimer {
    uint64_t epoch;
    atomic_int gone;
    int offered, take;
    waitbox_t box;
} claimer_t;

static int claim(void *arg, signals_claim_t *out) {
    claimer_t *c = arg;

    c->offered++;
    if (!c->take)
        return 0;
    c->take = 0;
    out->epoch = c->epoch;
    out->abandoned = &c->gone;
    out->done = consumed;
    out->arg = &c->box;
    return 1;
}

static void expect_next(fixture_t *f, const char *id, const char *payload) {
    signals_consume_result_t c;

    assert_int_equal(consume(f, id, "go", 1, NULL, &c), REEL_OK);
    assert_true(c.delivered);
    assert_string_equal(c.signal.payload, payload);
    consume_fini(&c);
}

static void test_a_claiming_waiter_gets_the_signal_from_the_send(
    void **state) {
    fixture_t *f = *state;
    signals_send_result_t s;
    signals_consume_result_t c;
    signals_waiter_t *w;
    claimer_t cl;
    char id[27];

    begin(f, "inv", id);
    memset(&cl, 0, sizeof(cl));
    box_init(&cl.box);
    cl.epoch = 1;
    cl.take = 1;
    woken = 0;
    w = signals_wait(f->s, id, "go", 1, wake, claim, &cl);
    assert_non_null(w);
    assert_int_equal(send_sig(f, id, "go", "{\"n\":1}", "", &s), REEL_OK);
    /* Delivered by the send's own request: done ran before the send's. */
    assert_true(cl.box.done);
    assert_int_equal(cl.box.consume.status.code, REEL_OK);
    assert_true(cl.box.consume.delivered);
    assert_string_equal(cl.box.consume.signal.payload, "{\"n\":1}");
    assert_int_equal(cl.box.consume.signal.seq, s.signal.seq);
    assert_true(cl.box.consume.signal.journal_seq > 0);
    assert_true(cl.box.consume.signal.consumed_at_ms > 0);
    consume_fini(&cl.box.consume);
    send_fini(&s);
    assert_int_equal(consume(f, id, "go", 1, NULL, &c), REEL_OK);
    assert_false(c.delivered); /* taken once */
    consume_fini(&c);

    /* A stale lease: the waiter hears why, the send stands, the signal
     * stays pending. */
    box_init(&cl.box);
    cl.epoch = 7;
    cl.take = 1;
    assert_int_equal(send_sig(f, id, "go", "2", "", &s), REEL_OK);
    send_fini(&s);
    assert_true(cl.box.done);
    assert_int_equal(cl.box.consume.status.code, REEL_FAILED_PRECONDITION);
    assert_false(cl.box.consume.delivered);
    consume_fini(&cl.box.consume);

    /* An abandoned waiter takes nothing. */
    box_init(&cl.box);
    cl.epoch = 1;
    cl.take = 1;
    atomic_store(&cl.gone, 1);
    assert_int_equal(send_sig(f, id, "go", "3", "", &s), REEL_OK);
    send_fini(&s);
    assert_true(cl.box.done);
    assert_int_equal(cl.box.consume.status.code, REEL_OK);
    assert_false(cl.box.consume.delivered);

    /* A waiter that declines leaves the signal to its wake. */
    assert_int_equal(send_sig(f, id, "go", "4", "", &s), REEL_OK);
    send_fini(&s);
    assert_int_equal(cl.offered, 4);
    assert_int_equal(woken, 4);
    signals_unwait(f->s, w);
    expect_next(f, id, "2");
    expect_next(f, id, "3");
    expect_next(f, id, "4");
}

/* A page measure for tests: a signal costs its payload bytes. */
static size_t signal_payload_bytes(void *arg, const void *elem) {
    (void)arg;
    return strlen(((const signal_t *)elem)->payload);
}

/* Lists every page from the start; appends "seq[p|c] " per signal. */
static size_t list_pages(fixture_t *f, signals_list_args_t *la, char *got,
                         size_t cap) {
    size_t pages = 0, n;
    signal_t *list;
    int more;

    got[0] = '\0';
    la->after_seq = 0, la->after_consumed = 0;
    do {
        assert_int_equal(signals_list(f->s, la, &list, &n, &more, NULL),
                         REEL_OK);
        assert_true(n >= 1);
        la->after_seq = list[n - 1].seq;
        la->after_consumed = list[n - 1].consumed_at_ms > 0;
        for (size_t i = 0; i < n; i++) {
            snprintf(got + strlen(got), cap - strlen(got), "%llu%c ",
                     (unsigned long long)list[i].seq,
                     list[i].consumed_at_ms > 0 ? 'c' : 'p');
            signal_fini(&list[i]);
        }
        free(list);
        pages++;
    } while (more && pages < 16);
    return pages;
}

static void test_list_pages_by_cursor_count_and_bytes(void **state) {
    fixture_t *f = *state;
    reel_page_t page = {2500, signal_payload_bytes, NULL};
    signals_list_args_t la = {0};
    signals_send_result_t s;
    signals_consume_result_t c;
    char id[27], got[128], *payload = malloc(1001);

    memset(payload, ' ', 1000);
    payload[0] = '7';
    payload[1000] = '\0';
    begin(f, "inv", id);
    for (int i = 0; i < 6; i++) {
        assert_int_equal(send_sig(f, id, "go", payload, "", &s), REEL_OK);
        send_fini(&s);
    }
    for (int i = 0; i < 2; i++) {
        assert_int_equal(consume(f, id, "go", 1, NULL, &c), REEL_OK);
        assert_true(c.delivered);
        consume_fini(&c);
    }
    la.run_id = id, la.include_consumed = 1;
    /* By bytes (1000 each in 2500): pending {3,4} {5,6}, consumed {1,2}. */
    la.page = &page;
    assert_int_equal(list_pages(f, &la, got, sizeof(got)), 3);
    assert_string_equal(got, "3p 4p 5p 6p 1c 2c ");
    /* By count: {3,4,5} {6,1,2}, and a full last page says no more. */
    la.page = NULL, la.limit = 3;
    assert_int_equal(list_pages(f, &la, got, sizeof(got)), 2);
    assert_string_equal(got, "3p 4p 5p 6p 1c 2c ");
    /* Pending only. */
    la.include_consumed = 0, la.limit = 1;
    assert_int_equal(list_pages(f, &la, got, sizeof(got)), 4);
    assert_string_equal(got, "3p 4p 5p 6p ");
    free(payload);
}

/*
 * The "signal" journal entry is built by cJSON: keys in order, no spaces,
 * the stored payload as it is; a signal_id's quote, backslash and control
 * bytes escaped, other bytes as they are.
 */
static void test_a_consumed_signal_is_journaled_as_json(void **state) {
    fixture_t *f = *state;
    static const char sid[] = "a\"b\\c\x01\n\x7f/\xc3\xa9";
    static const char want[] =
        "{\"name\":\"go.x:1\",\"signal_id\":\"a\\\"b\\\\c\\u0001\\n\x7f/"
        "\xc3\xa9\",\"payload\":{\"x\": [1, \"\\u00e9\"]}}";
    signals_send_result_t s;
    signals_consume_result_t c;
    journal_entry_t *es;
    size_t n;
    int more;
    char id[27];

    begin(f, "inv", id);
    assert_int_equal(
        send_sig(f, id, "go.x:1", "{\"x\": [1, \"\\u00e9\"]}", sid, &s),
        REEL_OK);
    send_fini(&s);
    assert_int_equal(consume(f, id, "go.x:1", 1, NULL, &c), REEL_OK);
    assert_true(c.delivered);
    assert_string_equal(c.signal.signal_id, sid);
    consume_fini(&c);
    assert_int_equal(journal_read(f->j, id, 0, 0, NULL, &es, &n, &more, NULL),
                     REEL_OK);
    assert_int_equal(n, 1);
    assert_string_equal(es[0].payload, want);
    assert_int_equal(
        reel_json_validate(es[0].payload, strlen(es[0].payload), NULL, NULL),
        0);
    journal_entry_fini(&es[0]);
    free(es);
}

/* Signals and the journal check a run id with one check: one message. */
static void test_a_malformed_run_id_is_refused_like_the_journal_does(
    void **state) {
    fixture_t *f = *state;
    const char *bad[] = {"", "0123456789ABCDEFGHJKMNPQRs",
                         "0123456789ABCDEFGHJKMNPQR",
                         "0123456789ABCDEFGHJKMNPQRST"};
    signals_send_result_t s;
    reel_status_t st = REEL_STATUS_INIT, js = REEL_STATUS_INIT;
    journal_entry_t *es = NULL;
    int64_t t = 1000;
    size_t n;
    int more;

    for (size_t i = 0; i < sizeof(bad) / sizeof(*bad); i++) {
        char want[128];

        snprintf(want, sizeof(want),
                 "run_id: must be 26 characters of [0-9A-Z] (got \"%s\")",
                 bad[i]);
        if (*bad[i]) { /* "" sends to a session */
            assert_int_equal(send_sig(f, bad[i], "go", "", "", &s),
                             REEL_INVALID_ARGUMENT);
            assert_string_equal(reel_status_message(&s.status), want);
            send_fini(&s);
        }
        assert_int_equal(signals_check_await(f->s, bad[i], "go", &t, &st),
                         REEL_INVALID_ARGUMENT);
        assert_string_equal(reel_status_message(&st), want);
        assert_int_equal(
            journal_read(f->j, bad[i], 0, 0, NULL, &es, &n, &more, &js),
            REEL_INVALID_ARGUMENT);
        assert_string_equal(reel_status_message(&js), want);
        assert_int_equal(journal_check_run_id("run_id", bad[i], &js),
                         REEL_INVALID_ARGUMENT);
        assert_string_equal(reel_status_message(&js), want);
    }
    assert_int_equal(journal_check_run_id("x", "0123456789ABCDEFGHJKMNPQRS",
                                          &js),
                     REEL_OK);
    reel_status_fini(&st);
    reel_status_fini(&js);
}

int main(void) {
    const struct CMUnitTest tests[] = {
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
        T(test_signals_are_fifo_per_name_and_recorded_in_the_journal),
        T(test_a_retried_signal_id_is_stored_once),
        T(test_list_pages_by_cursor_count_and_bytes),
        T(test_stale_epoch_and_abandoned_awaits_consume_nothing),
        T(test_a_signal_wakes_a_run_waiting_on_its_name),
        T(test_suspending_on_a_pending_signal_is_runnable_at_once),
        T(test_a_failed_read_of_the_mailbox_fails_the_consume),
        T(test_a_failed_look_for_a_pending_signal_fails_the_suspend),
        T(test_ended_runs_and_bad_input_are_refused),
        T(test_concurrent_awaiters_never_share_a_signal),
        T(test_waiters_are_woken_by_their_signals_only),
        T(test_waiters_are_woken_when_their_lease_ends),
        T(test_a_claiming_waiter_gets_the_signal_from_the_send),
        T(test_a_consumed_signal_is_journaled_as_json),
        T(test_a_signals_changes_carry_its_runs_app_and_its_record_not),
        T(test_a_malformed_run_id_is_refused_like_the_journal_does),
    };
    return cmocka_run_group_tests_name("signals", tests, NULL, NULL);
}
