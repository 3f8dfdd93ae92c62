/*
 * timers/timers_test.c: durable timers fire once, never early, after a
 * restart too, a window at a time.
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
#include "base/codec.h"
#include "timers/timers.h"
#include "testing/fixture.h"

#define KIND 7
#define MAX_IDS 4096

typedef struct fixture {
    char dir[512];
    store_t *store;
    timers_t *t;
    pthread_mutex_t mu;
    pthread_cond_t cv; /* on CLOCK_MONOTONIC */
    uint32_t fired[MAX_IDS]; /* times each id fired */
    size_t n_fired;
    int early;     /* fired before its due time */
    int fail_next; /* the next fire fails (then it is retried) */
    uint32_t bad; /* id + 1 of a timer that always fails DATA_LOSS; 0: none */
    int bad_tries;
    int fail_commit; /* the next group with a change fails after its applies */
    size_t max_batch;
} fixture_t;

/* The store's alarm, before and after the timers exist. */
static reel_code_t alarm(void *arg, store_txn_t *txn, reel_status_t *st) {
    fixture_t *f = arg;

    return f->t != NULL ? timers_alarm(f->t, txn, st) : REEL_OK;
}

static reel_code_t fire(void *arg, store_txn_t *txn, int64_t due_ms,
                        const char *id, size_t idlen, const void *val,
                        size_t vlen, reel_status_t *st) {
    fixture_t *f = arg;
    (void)val;
    (void)vlen;
    assert_int_equal(idlen, 4);
    pthread_mutex_lock(&f->mu);
    if (f->fail_next) {
        f->fail_next = 0;
        pthread_mutex_unlock(&f->mu);
        return reel_status_set(st, REEL_INTERNAL, "injected");
    }
    if (f->bad != 0 && (uint32_t)(unsigned char)id[3] + 1 == f->bad &&
        id[0] == 0 && id[1] == 0 && id[2] == 0) {
        f->bad_tries++;
        pthread_mutex_unlock(&f->mu);
        return reel_status_set(st, REEL_DATA_LOSS, "the record is corrupt");
    }
    {
        uint32_t i = ((uint32_t)(unsigned char)id[0] << 24) |
                     ((uint32_t)(unsigned char)id[1] << 16) |
                     ((uint32_t)(unsigned char)id[2] << 8) |
                     (unsigned char)id[3];
        assert_true(i < MAX_IDS);
        f->fired[i]++;
    }
    if (store_txn_now_ms(txn) < due_ms)
        f->early = 1;
    store_txn_emit(txn, 1, 1, "f", 1); /* so that before_commit runs */
    f->n_fired++;
    pthread_cond_broadcast(&f->cv);
    pthread_mutex_unlock(&f->mu);
    return REEL_OK;
}

/* What the WAL does before a group commits: here it may refuse it, after
 * every apply in it (the firing's among them) has returned OK. */
static reel_code_t before_commit(void *arg, store_txn_t *txn,
                                 const store_change_t *c, size_t n,
                                 reel_status_t *st) {
    fixture_t *f = arg;
    int fail;

    (void)txn, (void)c, (void)n;
    pthread_mutex_lock(&f->mu);
    fail = f->fail_commit;
    f->fail_commit = 0;
    pthread_mutex_unlock(&f->mu);
    return fail ? reel_status_set(st, REEL_INTERNAL, "injected at commit")
                : REEL_OK;
}

static void open_all(fixture_t *f) {
    store_opts_t o = {0};
    reel_status_t st = REEL_STATUS_INIT;

    o.cfs = (const store_cf_desc_t *const[]){timers_cfs, NULL};
    o.alarm = alarm;
    o.alarm_arg = f;
    o.before_commit = before_commit;
    o.before_commit_arg = f;
    f->store = testing_store_open(f->dir, &o);
    if (timers_create(f->store, &f->t, &st) != REEL_OK)
        fail_msg("timers_create: %s", reel_status_message(&st));
    timers_register(f->t, KIND, fire, f);
    if (timers_arm(f->t, &st) != REEL_OK)
        fail_msg("timers_arm: %s", reel_status_message(&st));
}

static void close_all(fixture_t *f) {
    store_close(f->store);
    timers_destroy(f->t);
    f->store = NULL;
    f->t = NULL;
}

static int setup(void **state) {
    fixture_t *f = calloc(1, sizeof(*f));

    if (f == NULL || testing_dir_make(f->dir, sizeof(f->dir), "timers") != 0)
        return -1;
    pthread_mutex_init(&f->mu, NULL);
    reel_cond_init_mono(&f->cv);
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
    pthread_cond_destroy(&f->cv);
    free(f);
    return rc;
}

/* ---- Helpers ------------------------------------------------------------ */

typedef struct sched {
    fixture_t *f;
    int64_t *due; /* by id */
    uint32_t first, n;
    int cancel;
} sched_t;

static void id_bytes(uint32_t i, char out[4]) {
    out[0] = (char)(i >> 24);
    out[1] = (char)(i >> 16);
    out[2] = (char)(i >> 8);
    out[3] = (char)i;
}

static reel_code_t sched_apply(store_txn_t *txn, void *arg,
                               reel_status_t *st) {
    sched_t *s = arg;
    reel_code_t rc = REEL_OK;

    for (uint32_t i = s->first; rc == REEL_OK && i < s->first + s->n; i++) {
        char id[4];

        id_bytes(i, id);
        rc = s->cancel ? timers_cancel(s->f->t, txn, s->due[i], KIND, id, 4,
                                       st)
                       : timers_schedule(s->f->t, txn, s->due[i], KIND, id,
                                         4, "", 0, st);
    }
    return rc;
}

static void schedule(fixture_t *f, int64_t *due, uint32_t first, uint32_t n,
                     int cancel) {
    sched_t s = {f, due, first, n, cancel};
    reel_status_t st = REEL_STATUS_INIT;

    if (store_exec(f->store, sched_apply, &s, NULL, &st) != REEL_OK)
        fail_msg("schedule: %s", reel_status_message(&st));
}

/* Waits until n timers fired in all, at most ms. */
static int wait_fired(fixture_t *f, size_t n, int64_t ms) {
    int64_t end = reel_clock_mono_ns() + ms * 1000000;
    int ok;

    pthread_mutex_lock(&f->mu);
    while (f->n_fired < n) {
        struct timespec ts = reel_clock_mono_at(end);
        if (pthread_cond_timedwait(&f->cv, &f->mu, &ts) != 0)
            break;
    }
    ok = f->n_fired >= n;
    pthread_mutex_unlock(&f->mu);
    return ok;
}

static reel_code_t nothing(store_txn_t *txn, void *arg, reel_status_t *st) {
    (void)txn;
    (void)arg;
    (void)st;
    return REEL_OK;
}

/* Timers stored once the group that fired the last one has committed (the
 * writer runs one group at a time: a request behind it is a barrier). */
static uint64_t stored(fixture_t *f) {
    reel_status_t st = REEL_STATUS_INIT;
    uint64_t n = 0;

    if (store_exec(f->store, nothing, NULL, NULL, &st) != REEL_OK)
        fail_msg("barrier: %s", reel_status_message(&st));
    if (timers_count(f->t, &n, &st) != REEL_OK)
        fail_msg("count: %s", reel_status_message(&st));
    return n;
}

/* ---- Tests -------------------------------------------------------------- */

static void test_timer_fires_once_at_its_time_and_is_deleted(void **state) {
    fixture_t *f = *state;
    int64_t due[3];
    int64_t now = reel_clock_now_ms();

    due[0] = now + 150;
    due[1] = now + 50;
    due[2] = now + 100000; /* far off: stays */
    schedule(f, due, 0, 3, 0);
    assert_true(wait_fired(f, 2, TESTING_WAIT_MS));
    assert_false(f->early);
    assert_int_equal(f->fired[0], 1);
    assert_int_equal(f->fired[1], 1);
    assert_int_equal(f->fired[2], 0);
    /* Deleted in the commit that fired them: the far one is left. */
    assert_int_equal(stored(f), 1);
}

static void test_cancelled_timer_never_fires(void **state) {
    fixture_t *f = *state;
    int64_t now = reel_clock_now_ms();
    int64_t due[2] = {now + 100, now + 200};

    schedule(f, due, 0, 2, 0);
    schedule(f, due, 0, 1, 1); /* cancel id 0 */
    assert_true(wait_fired(f, 1, TESTING_WAIT_MS));
    assert_int_equal(f->fired[0], 0);
    assert_int_equal(f->fired[1], 1);
    assert_int_equal(stored(f), 0);
}

/* More due timers than one alarm holds: each fires once, a window at a
 * time. */
static void test_many_due_timers_fire_once_in_windows(void **state) {
    fixture_t *f = *state;
    static int64_t due[3000];
    int64_t now = reel_clock_now_ms();

    for (int i = 0; i < 3000; i++)
        due[i] = now - 1000 + i % 7; /* all overdue, out of id order */
    schedule(f, due, 0, 3000, 0);
    assert_true(wait_fired(f, 3000, TESTING_WAIT_MS));
    for (int i = 0; i < 3000; i++)
        assert_int_equal(f->fired[i], 1);
    assert_int_equal(stored(f), 0);
}

/* After a restart, overdue timers fire once at start, later ones at their
 * time, none early. */
static void test_timers_survive_a_restart(void **state) {
    fixture_t *f = *state;
    static int64_t due[2000];
    int64_t now = reel_clock_now_ms();

    for (int i = 0; i < 2000; i++)
        due[i] = now + 300 + (i % 2 ? 0 : 400);
    schedule(f, due, 0, 2000, 0);
    /* Close before any is due, and reopen once half of them are overdue. */
    close_all(f);
    while (reel_clock_now_ms() < now + 400) {
        struct timespec ts = {0, 10 * 1000000};
        nanosleep(&ts, NULL);
    }
    assert_int_equal(f->n_fired, 0);
    open_all(f);
    assert_true(wait_fired(f, 2000, TESTING_WAIT_MS));
    assert_false(f->early);
    for (int i = 0; i < 2000; i++)
        assert_int_equal(f->fired[i], 1);
    assert_int_equal(stored(f), 0);
}

/* A firing that fails is rolled back and tried again: the timer fires
 * once, late, never lost. */
static void test_failed_firing_is_retried(void **state) {
    fixture_t *f = *state;
    int64_t due[1] = {reel_clock_now_ms() + 20};

    f->fail_next = 1;
    schedule(f, due, 0, 1, 0);
    assert_true(wait_fired(f, 1, TESTING_WAIT_MS));
    assert_int_equal(f->fired[0], 1);
    assert_int_equal(stored(f), 0);
}

/* A timer that can never fire (DATA_LOSS: its record does not read) is set
 * aside at the next try, not fired again and again in front of the
 * others, which fire, and it stays stored under kind 0, nothing's. */
static void test_a_timer_that_cannot_fire_is_set_aside(void **state) {
    fixture_t *f = *state;
    int64_t now = reel_clock_now_ms();
    int64_t due[3] = {now + 10, now + 20, now + 30};

    f->bad = 1; /* id 0 */
    schedule(f, due, 0, 3, 0);
    assert_true(wait_fired(f, 2, TESTING_WAIT_MS));
    assert_int_equal(f->fired[0], 0);
    assert_int_equal(f->fired[1], 1);
    assert_int_equal(f->fired[2], 1);
    assert_int_equal(f->bad_tries, 1);
    assert_int_equal(stored(f), 0); /* none scheduled; the one set aside */
    close_all(f);
    open_all(f);
    nanosleep(&(struct timespec){0, 200 * 1000000L}, NULL);
    assert_int_equal(f->bad_tries, 1); /* never tried again */
    assert_int_equal(stored(f), 0);
}

/* A firing whose group fails after the firing returned (the WAL refusing
 * the group, say) rolled back: its timers are stored again and due, and
 * the retry must find them, not look only past them. */
static void test_a_firing_rolled_back_at_commit_is_retried(void **state) {
    fixture_t *f = *state;
    /* Past due when scheduled: the firing runs later than their time, so
     * a retry that looked only from its time on would pass over them. */
    int64_t due[2] = {reel_clock_now_ms() - 50, reel_clock_now_ms() - 40};

    f->fail_commit = 1;
    schedule(f, due, 0, 2, 0);
    assert_true(wait_fired(f, 4, TESTING_WAIT_MS)); /* rolled back, again */
    assert_int_equal(f->fired[0], 2);
    assert_int_equal(f->fired[1], 2);
    assert_int_equal(stored(f), 0);
}

/* A figure of the rendered registry (the first line starting with
 * `series `), or -1. */
static double rendered(metrics_registry_t *r, const char *series) {
    reel_status_t st = REEL_STATUS_INIT;
    char *out = NULL, *p;
    size_t len, n = strlen(series);
    double v = -1;

    if (metrics_render(r, &out, &len, &st) != REEL_OK)
        fail_msg("render: %s", reel_status_message(&st));
    for (p = out; p != NULL && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1
                                                       : NULL)
        if (strncmp(p, series, n) == 0 && p[n] == ' ') {
            v = strtod(p + n + 1, NULL);
            break;
        }
    free(out);
    return v;
}

/* reel_timers_scheduled is what is stored: seeded from what was there,
 * moved by schedules, replacements (no move), cancels of a timer and of
 * none (no move), and firings (a failed firing moves nothing); every
 * firing that stood is timed once in reel_timer_lateness_seconds. */
static void test_the_scheduled_gauge_follows_what_is_stored(void **state) {
    fixture_t *f = *state;
    metrics_registry_t *r = NULL;
    reel_status_t st = REEL_STATUS_INIT;
    int64_t now = reel_clock_now_ms();
    int64_t due[5] = {now + 100000, now + 100000, now + 100000, now + 100000,
                      now + 100000};

    assert_int_equal(metrics_registry_create(&r, &st), REEL_OK);
    schedule(f, due, 0, 2, 0); /* before: the seed counts them */
    assert_int_equal(timers_metrics_register(f->t, r, &st), REEL_OK);
    assert_int_equal(rendered(r, "reel_timers_scheduled"), 2);
    schedule(f, due, 1, 3, 0); /* 1 again (replaced), 2 and 3 new */
    assert_int_equal(stored(f), 4);
    assert_int_equal(rendered(r, "reel_timers_scheduled"), 4);
    schedule(f, due, 3, 2, 1); /* cancel 3 (there) and 4 (never was) */
    assert_int_equal(stored(f), 3);
    assert_int_equal(rendered(r, "reel_timers_scheduled"), 3);
    f->fail_next = 1; /* rolled back once, then fires */
    due[4] = reel_clock_now_ms() + 20;
    schedule(f, due, 4, 1, 0);
    assert_true(wait_fired(f, 1, TESTING_WAIT_MS));
    assert_int_equal(stored(f), 3);
    assert_int_equal(rendered(r, "reel_timers_scheduled"), 3);
    assert_int_equal(rendered(r, "reel_timer_lateness_seconds_count"), 1);
    assert_true(rendered(r, "reel_timer_lateness_seconds_sum") >= 0);
    close_all(f); /* drops its figures before the registry goes */
    metrics_registry_destroy(r);
    open_all(f);
}

/* An id past the limit is refused naming it, and nothing is stored. */
static void test_long_id_is_refused(void **state) {
    fixture_t *f = *state;
    static char id[TIMERS_MAX_ID + 1];
    reel_status_t st = REEL_STATUS_INIT;

    (void)f;
    memset(id, 'x', sizeof(id));
    /* make_key runs before any write: no txn needed to see the refusal. */
    assert_int_equal(timers_cancel(f->t, NULL, 0, KIND, id, sizeof(id), &st),
                     REEL_INVALID_ARGUMENT);
    assert_non_null(strstr(reel_status_message(&st), "512"));
    reel_status_fini(&st);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(
            test_timer_fires_once_at_its_time_and_is_deleted, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cancelled_timer_never_fires,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_many_due_timers_fire_once_in_windows, setup, teardown),
        cmocka_unit_test_setup_teardown(test_timers_survive_a_restart, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(
            test_a_timer_that_cannot_fire_is_set_aside, setup, teardown),
        cmocka_unit_test_setup_teardown(test_failed_firing_is_retried, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(
            test_a_firing_rolled_back_at_commit_is_retried, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_the_scheduled_gauge_follows_what_is_stored, setup, teardown),
        cmocka_unit_test_setup_teardown(test_long_id_is_refused, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
