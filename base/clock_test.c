/*
 * base/clock_test.c: reel's clock under steps of the wall clock.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "base/clock.h"

#define S 1000000000LL
#define T0 (1764900000LL * S) /* some day in 2025 */

/* Reads reel's time every 100 ms of boot time, from t and boot 0, while the
 * wall clock reads boot + wall0: the real seconds until it passes t + len. */
static double real_s_until(int64_t t, int64_t wall0, int64_t len) {
    int64_t boot = 0, start = t;

    while (t < start + len) {
        int64_t next = boot + S / 10;

        t = reel_clock_advance(t, boot, next, wall0 + next);
        boot = next;
    }
    return (double)boot / S;
}

/* With the wall clock where reel's is, reel's clock is the wall clock. */
static void test_follows_a_steady_wall_clock(void **state) {
    int64_t t = T0;

    (void)state;
    for (int64_t boot = 0; boot < 10 * S; boot += 12345678) {
        int64_t next = boot + 12345678;

        t = reel_clock_advance(t, boot, next, T0 + next);
        assert_int_equal(t, T0 + next);
    }
}

/* A step forward of 2 h: a 15 s lease still lasts at least 13.6 s of real
 * time (a tenth faster at most), where it expired at once. */
static void test_a_forward_step_runs_at_most_a_tenth_faster(void **state) {
    double s = real_s_until(T0, T0 + 7200 * S, 15 * S);

    (void)state;
    assert_true(s >= 13.6 && s <= 13.7);
}

/* A step back of 1 h: time goes on, at most a tenth slower: the lease
 * ends after at most 16.7 s, where it waited an hour. */
static void test_a_backward_step_runs_at_most_a_tenth_slower(void **state) {
    double s = real_s_until(T0, T0 - 3600 * S, 15 * S);

    (void)state;
    assert_true(s >= 16.6 && s <= 16.7);
}

/* The gap closes: after a step of 10 s, reel's clock is the wall clock
 * again within 100 s (and 110 s for a step back), and stays it. */
static void test_the_gap_closes_and_then_it_follows(void **state) {
    int64_t steps[] = {10 * S, -10 * S};

    (void)state;
    for (int i = 0; i < 2; i++) {
        int64_t t = T0, boot = 0, prev = T0;

        for (; boot < 120 * S; boot += S / 10) {
            int64_t next = boot + S / 10;

            t = reel_clock_advance(t, boot, next, T0 + steps[i] + next);
            assert_true(t > prev); /* never back, never still */
            prev = t;
        }
        assert_int_equal(t, T0 + steps[i] + boot);
    }
}

/* A gap of more than a day is taken at once (a clock that was that wrong
 * would take ten times as long to catch up). */
static void test_a_gap_of_more_than_a_day_is_taken_at_once(void **state) {
    int64_t wall = T0 + 3 * 86400 * S;

    (void)state;
    assert_int_equal(reel_clock_advance(T0, 0, S, wall + S), wall + S);
    assert_int_equal(reel_clock_advance(wall, 0, S, T0 + S), T0 + S);
    /* A day at most: smeared. */
    assert_true(reel_clock_advance(T0, 0, S, T0 + 86400 * S) < T0 + 2 * S);
}

/* A boot clock read out of order moves nothing back. */
static void test_a_boot_clock_out_of_order_moves_nothing_back(void **state) {
    (void)state;
    assert_int_equal(reel_clock_advance(T0, 5 * S, 4 * S, T0 - 3600 * S), T0);
}

/* start_at moves the process's clock forward, never back, and the clock
 * then reads on from there. */
static void test_start_at_moves_forward_only(void **state) {
    int64_t now = reel_clock_now_ns(), ahead = now + 30 * S, a, b;

    (void)state;
    reel_clock_start_at(now - 3600 * S); /* ignored */
    assert_true(reel_clock_now_ns() >= now);
    reel_clock_start_at(ahead);
    a = reel_clock_now_ns();
    assert_true(a >= ahead && a < ahead + 5 * S);
    assert_true(reel_clock_gap_ns() < -25 * S); /* the wall clock behind */
    b = reel_clock_now_ns();
    assert_true(b >= a);
    assert_true(reel_clock_now_ms() >= b / 1000000);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_follows_a_steady_wall_clock),
        cmocka_unit_test(test_a_forward_step_runs_at_most_a_tenth_faster),
        cmocka_unit_test(test_a_backward_step_runs_at_most_a_tenth_slower),
        cmocka_unit_test(test_the_gap_closes_and_then_it_follows),
        cmocka_unit_test(test_a_gap_of_more_than_a_day_is_taken_at_once),
        cmocka_unit_test(test_a_boot_clock_out_of_order_moves_nothing_back),
        cmocka_unit_test(test_start_at_moves_forward_only),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
