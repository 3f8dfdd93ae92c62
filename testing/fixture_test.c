/*
 * testing/fixture_test.c: the shared test fixture does what the unit tests
 * rely on: dirs are fresh and go away whole, a store opens on one, a sink
 * is full at its limit, records its first end, and its waits return on
 * what they wait for or at their deadline on the monotonic clock.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "base/clock.h"
#include "testing/fixture.h"

/* A test's own sink, as the module tests declare theirs. */
typedef struct sink {
    TESTING_SINK_HEAD;
    int items[8];
} sink_t;

/* A deliver op: 0 taken, 1 full. */
static int deliver(sink_t *s, int item) {
    int full;

    pthread_mutex_lock(&s->mu);
    full = testing_sink_hold(&s->sink, 8);
    if (!full) {
        s->items[s->n] = item;
        testing_sink_add(&s->sink);
    }
    pthread_mutex_unlock(&s->mu);
    return full;
}

static int exists(const char *path) {
    struct stat sb;

    return lstat(path, &sb) == 0;
}

static void write_file(const char *path) {
    FILE *fp = fopen(path, "w");

    assert_non_null(fp);
    fputs("x\n", fp);
    assert_int_equal(fclose(fp), 0);
}

static void test_a_dir_is_fresh_and_removed_with_what_it_holds(void **state) {
    char a[512], b[512], path[600];

    (void)state;
    assert_int_equal(testing_dir_make(a, sizeof(a), "fixture"), 0);
    assert_int_equal(testing_dir_make(b, sizeof(b), "fixture"), 0);
    assert_string_not_equal(a, b);
    assert_non_null(strstr(a, "/fixture-"));
    snprintf(path, sizeof(path), "%s/sub", a);
    assert_int_equal(mkdir(path, 0755), 0);
    snprintf(path, sizeof(path), "%s/sub/file", a);
    write_file(path);
    snprintf(path, sizeof(path), "%s/file", a);
    write_file(path);
    assert_int_equal(testing_dir_remove(a), 0);
    assert_false(exists(a));
    assert_true(exists(b));
    assert_int_equal(testing_dir_remove(b), 0);
    assert_false(exists(b));
    /* Gone already: nothing to remove is a failure to say, not a pass. */
    assert_int_equal(testing_dir_remove(b), -1);
}

static void test_a_dir_path_that_does_not_fit_is_refused(void **state) {
    char small[8];

    (void)state;
    assert_int_equal(testing_dir_make(small, sizeof(small), "fixture"), -1);
}

static void test_a_store_opens_on_a_fresh_dir_and_reopens(void **state) {
    store_opts_t o = {0};
    char dir[512];
    store_t *s;

    (void)state;
    assert_int_equal(testing_dir_make(dir, sizeof(dir), "fixture"), 0);
    o.data_dir = "ignored: the dir given wins";
    s = testing_store_open(dir, &o);
    assert_non_null(s);
    assert_int_equal(store_revision(s), 0);
    store_close(s);
    s = testing_store_open(dir, NULL);
    assert_non_null(s);
    store_close(s);
    assert_int_equal(testing_dir_remove(dir), 0);
}

static void test_a_sink_is_full_at_its_limit_until_let_go(void **state) {
    sink_t s;

    (void)state;
    testing_sink_init(&s.sink, 2);
    assert_int_equal(deliver(&s, 10), 0);
    assert_int_equal(deliver(&s, 11), 0);
    assert_int_equal(deliver(&s, 12), 1);
    assert_int_equal(s.n, 2);
    pthread_mutex_lock(&s.mu);
    s.held = 0; /* the test read what it had */
    pthread_mutex_unlock(&s.mu);
    assert_int_equal(deliver(&s, 12), 0);
    assert_int_equal(s.n, 3);
    assert_int_equal(s.items[2], 12);
    /* Never past the test's array, whatever the limit. */
    pthread_mutex_lock(&s.mu);
    s.held = 0;
    s.limit = 100;
    pthread_mutex_unlock(&s.mu);
    for (int i = 0; i < 5; i++)
        assert_int_equal(deliver(&s, i), 0);
    assert_int_equal(deliver(&s, 99), 1);
    assert_int_equal(s.n, 8);
    testing_sink_fini(&s.sink);
}

static void test_only_the_first_end_is_recorded_and_every_one_counted(
    void **state) {
    reel_status_t ok = REEL_STATUS_INIT, bad = REEL_STATUS_INIT;
    sink_t s;

    (void)state;
    testing_sink_init(&s.sink, 1);
    reel_status_set(&bad, REEL_DATA_LOSS, "journal entry 7 is corrupt");
    testing_sink_end(&s.sink, &bad);
    testing_sink_end(&s.sink, &ok);
    assert_int_equal(s.ended, -1);
    assert_int_equal(s.ends, 2);
    assert_int_equal(s.end.code, REEL_DATA_LOSS);
    assert_string_equal(reel_status_message(&s.end),
                        "journal entry 7 is corrupt");
    testing_sink_fini(&s.sink);
    reel_status_fini(&bad);

    testing_sink_init(&s.sink, 1);
    testing_sink_end(&s.sink, &ok);
    assert_int_equal(s.ended, 1);
    testing_sink_fini(&s.sink);
}

static void *producer(void *arg) {
    sink_t *s = arg;

    for (int i = 0; i < 3; i++)
        deliver(s, i);
    return NULL;
}

static void test_a_wait_returns_once_the_items_arrive(void **state) {
    pthread_t t;
    sink_t s;

    (void)state;
    testing_sink_init(&s.sink, 8);
    assert_int_equal(pthread_create(&t, NULL, producer, &s), 0);
    assert_int_equal(testing_sink_wait(&s.sink, 3, TESTING_WAIT_MS), 3);
    pthread_join(t, NULL);
    assert_int_equal(s.items[2], 2);
    testing_sink_fini(&s.sink);
}

static void *ender(void *arg) {
    reel_status_t ok = REEL_STATUS_INIT;

    testing_sink_end(arg, &ok);
    return NULL;
}

static void test_a_wait_returns_at_the_end(void **state) {
    pthread_t t;
    sink_t s;

    (void)state;
    testing_sink_init(&s.sink, 8);
    assert_int_equal(pthread_create(&t, NULL, ender, &s.sink), 0);
    assert_int_equal(testing_sink_wait_end(&s.sink, TESTING_WAIT_MS), 1);
    assert_int_equal(testing_sink_wait(&s.sink, 5, TESTING_WAIT_MS), 0);
    pthread_join(t, NULL);
    testing_sink_fini(&s.sink);
}

static void test_a_wait_for_what_never_comes_ends_at_its_deadline(
    void **state) {
    int64_t t0, waited_ms;
    sink_t s;

    (void)state;
    testing_sink_init(&s.sink, 8);
    t0 = reel_clock_mono_ns();
    assert_int_equal(testing_sink_wait(&s.sink, 1, 120), 0);
    assert_int_equal(testing_sink_wait_end(&s.sink, 120), 0);
    waited_ms = (reel_clock_mono_ns() - t0) / 1000000;
    /* Both waits waited out their deadline, and neither much longer. */
    assert_true(waited_ms >= 240);
    assert_true(waited_ms < 240 + TESTING_WAIT_MS);
    testing_sink_fini(&s.sink);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_a_dir_is_fresh_and_removed_with_what_it_holds),
        cmocka_unit_test(test_a_dir_path_that_does_not_fit_is_refused),
        cmocka_unit_test(test_a_store_opens_on_a_fresh_dir_and_reopens),
        cmocka_unit_test(test_a_sink_is_full_at_its_limit_until_let_go),
        cmocka_unit_test(
            test_only_the_first_end_is_recorded_and_every_one_counted),
        cmocka_unit_test(test_a_wait_returns_once_the_items_arrive),
        cmocka_unit_test(test_a_wait_returns_at_the_end),
        cmocka_unit_test(test_a_wait_for_what_never_comes_ends_at_its_deadline),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
