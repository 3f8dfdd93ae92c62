/*
 * base/status_test.c: the code table and status ownership.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "base/log.h"
#include "base/status.h"

static void test_codes_map_to_grpc_numbers(void **state) {
    (void)state;
    assert_int_equal(reel_code_grpc(REEL_OK), 0);
    assert_int_equal(reel_code_grpc(REEL_INVALID_ARGUMENT), 3);
    assert_int_equal(reel_code_grpc(REEL_NOT_FOUND), 5);
    assert_int_equal(reel_code_grpc(REEL_ABORTED), 10);
    assert_int_equal(reel_code_grpc(REEL_OUT_OF_RANGE), 11);
    assert_int_equal(reel_code_grpc(REEL_UNAVAILABLE), 14);
    assert_int_equal(reel_code_grpc(REEL_DATA_LOSS), 15);
    assert_string_equal(reel_code_name(REEL_FAILED_PRECONDITION),
                        "FAILED_PRECONDITION");
    assert_string_equal(reel_code_name((reel_code_t)999), "UNKNOWN");
    assert_int_equal(reel_code_grpc((reel_code_t)-1), 2);
}

static void test_status_set_formats_and_replaces_message(void **state) {
    reel_status_t st = REEL_STATUS_INIT;

    (void)state;
    assert_string_equal(reel_status_message(&st), "ok");
    assert_int_equal(reel_status_set(&st, REEL_ABORTED,
                                     "version conflict: expected %d, current %d",
                                     3, 5),
                     REEL_ABORTED);
    assert_string_equal(reel_status_message(&st),
                        "version conflict: expected 3, current 5");
    reel_status_set(&st, REEL_NOT_FOUND, "run %s not found", "r1");
    assert_int_equal(st.code, REEL_NOT_FOUND);
    assert_string_equal(reel_status_message(&st), "run r1 not found");
    reel_status_fini(&st);
    assert_int_equal(st.code, REEL_OK);
    assert_null(st.msg);
    reel_status_fini(NULL);
    assert_int_equal(reel_status_set(NULL, REEL_INTERNAL, "x"), REEL_INTERNAL);
}

static void test_status_move_and_copy_keep_one_owner(void **state) {
    reel_status_t a = REEL_STATUS_INIT, b = REEL_STATUS_INIT,
                  c = REEL_STATUS_INIT;

    (void)state;
    reel_status_set(&a, REEL_UNAVAILABLE, "store failed: %s", "disk");
    reel_status_copy(&c, &a);
    reel_status_move(&b, &a);
    assert_int_equal(a.code, REEL_OK);
    assert_null(a.msg);
    assert_string_equal(reel_status_message(&b), "store failed: disk");
    assert_string_equal(reel_status_message(&c), "store failed: disk");
    assert_ptr_not_equal(b.msg, c.msg);
    reel_status_fini(&b);
    reel_status_fini(&c);
}

/* A cursor no longer retained is told where to start instead, and never
 * sent past the head when nothing up to it is retained. */
static void test_not_retained_names_where_to_start(void **state) {
    reel_status_t st = REEL_STATUS_INIT;

    (void)state;
    assert_int_equal(reel_status_not_retained(&st, 3, " for this key", 7, 9),
                     REEL_OUT_OF_RANGE);
    assert_string_equal(reel_status_message(&st),
                        "from_revision: revision 3 is no longer retained for "
                        "this key; the oldest retained revision is 8 "
                        "(from_revision 7, or 0, starts there)");
    assert_int_equal(reel_status_not_retained(&st, 3, "", 5, 5),
                     REEL_OUT_OF_RANGE);
    assert_string_equal(reel_status_message(&st),
                        "from_revision: revision 3 is no longer retained, "
                        "nor is any up to the head revision 5 "
                        "(from_revision 5, or 0, starts at the next change)");
    reel_status_fini(&st);
}

static void test_log_level_parsing(void **state) {
    reel_log_level_t l;

    (void)state;
    assert_int_equal(reel_log_parse_level("debug", &l), 0);
    assert_int_equal(l, REEL_LOG_DEBUG);
    assert_int_equal(reel_log_parse_level("WARN", &l), 0);
    assert_int_equal(l, REEL_LOG_WARN);
    assert_int_equal(reel_log_parse_level("loud", &l), -1);
    reel_log_set_level(REEL_LOG_ERROR);
    assert_false(reel_log_enabled(REEL_LOG_INFO));
    assert_true(reel_log_enabled(REEL_LOG_ERROR));
    reel_log_set_level(REEL_LOG_INFO);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_codes_map_to_grpc_numbers),
        cmocka_unit_test(test_status_set_formats_and_replaces_message),
        cmocka_unit_test(test_status_move_and_copy_keep_one_owner),
        cmocka_unit_test(test_not_retained_names_where_to_start),
        cmocka_unit_test(test_log_level_parsing),
    };
    return cmocka_run_group_tests_name("base", tests, NULL, NULL);
}
