/*
 * base/fault_test.c: armed points fail exactly as asked (after skip hits,
 * count times or forever), unarmed ones never, and bad specs are refused.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "base/fault.h"

static int reset(void **state) {
    (void)state;
    reel_fault_reset();
    return 0;
}

static void test_an_unarmed_point_never_fails(void **state) {
    (void)state;
    for (int i = 0; i < 100; i++)
        assert_false(REEL_FAULT("x.y"));
    assert_int_equal(reel_fault_fired("x.y"), 0);
}

static void test_a_point_fails_after_skip_hits_for_count_hits(void **state) {
    int got[8];

    (void)state;
    assert_int_equal(reel_fault_arm("a.b", 2, 3), 0);
    for (int i = 0; i < 8; i++)
        got[i] = REEL_FAULT("a.b");
    assert_int_equal(got[0] + got[1], 0);
    assert_int_equal(got[2] + got[3] + got[4], 3);
    assert_int_equal(got[5] + got[6] + got[7], 0);
    assert_int_equal(reel_fault_fired("a.b"), 3);
    assert_false(REEL_FAULT("a.c")); /* other points are untouched */
}

static void test_count_zero_fails_every_hit_from_then_on(void **state) {
    (void)state;
    assert_int_equal(reel_fault_arm("a.b", 1, 0), 0);
    assert_false(REEL_FAULT("a.b"));
    for (int i = 0; i < 50; i++)
        assert_true(REEL_FAULT("a.b"));
}

static void test_specs_arm_several_points(void **state) {
    reel_status_t st = REEL_STATUS_INIT;

    (void)state;
    assert_int_equal(reel_fault_arm_spec("p.one,p.two@1,p.three*0", &st),
                     REEL_OK);
    assert_true(REEL_FAULT("p.one"));
    assert_false(REEL_FAULT("p.one"));
    assert_false(REEL_FAULT("p.two"));
    assert_true(REEL_FAULT("p.two"));
    assert_false(REEL_FAULT("p.two"));
    assert_true(REEL_FAULT("p.three"));
    assert_true(REEL_FAULT("p.three"));
}

static void test_bad_specs_are_refused_naming_the_part(void **state) {
    const char *bad[] = {"", ",", "a@", "a*", "a@x", "a*-1", "@3", "a*1@2"};
    reel_status_t st = REEL_STATUS_INIT;

    (void)state;
    for (size_t i = 1; i < sizeof(bad) / sizeof(*bad); i++) {
        assert_int_equal(reel_fault_arm_spec(bad[i], &st),
                         REEL_INVALID_ARGUMENT);
        assert_non_null(strstr(reel_status_message(&st), "point[@skip]"));
    }
    /* The empty spec arms nothing. */
    assert_int_equal(reel_fault_arm_spec(bad[0], &st), REEL_OK);
    reel_status_fini(&st);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_an_unarmed_point_never_fails, reset),
        cmocka_unit_test_setup(
            test_a_point_fails_after_skip_hits_for_count_hits, reset),
        cmocka_unit_test_setup(test_count_zero_fails_every_hit_from_then_on,
                               reset),
        cmocka_unit_test_setup(test_specs_arm_several_points, reset),
        cmocka_unit_test_setup(test_bad_specs_are_refused_naming_the_part,
                               reset),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
