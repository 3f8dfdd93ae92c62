/*
 * base/pattern_test.c: what '*' and '>' match, and what is malformed.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "base/pattern.h"

static int match(const char *p, const char *s) {
    return reel_pattern_match(p, strlen(p), s, strlen(s));
}

static reel_code_t validate(const char *p) {
    return reel_pattern_validate(p, strlen(p), "key", NULL);
}

static void test_star_matches_exactly_one_token(void **state) {
    (void)state;
    assert_true(match("a.*.c", "a.b.c"));
    assert_true(match("a.*.c", "a.xyz.c"));
    assert_false(match("a.*.c", "a.c"));
    assert_false(match("a.*.c", "a.b.x.c"));
    assert_false(match("a.*.c", "a.b.d"));
    assert_true(match("*", "anything"));
    assert_false(match("*", "a.b"));
    assert_true(match("*.*", "a.b"));
    assert_true(match("pipeline.*.raw", "pipeline.7.raw"));
}

static void test_gt_matches_one_or_more_trailing_tokens(void **state) {
    (void)state;
    assert_true(match("orders.>", "orders.1"));
    assert_true(match("orders.>", "orders.eu.2"));
    assert_false(match("orders.>", "orders"));
    assert_false(match("orders.>", "order.1"));
    assert_true(match(">", "a"));
    assert_true(match(">", "a.b.c"));
    assert_true(match("a.*.>", "a.b.c"));
    assert_false(match("a.*.>", "a.b"));
}

static void test_slashes_are_not_token_separators(void **state) {
    (void)state;
    assert_false(match("orders.>", "orders/1"));
    assert_false(match("orders.*", "orders/1"));
    assert_true(match("orders.*", "orders.a/b"));
    assert_true(match("x/y.*", "x/y.z"));
}

static void test_literal_tokens_match_themselves_only(void **state) {
    (void)state;
    assert_true(match("a.b.c", "a.b.c"));
    assert_false(match("a.b.c", "a.b.cd"));
    assert_false(match("a.b", "a.b.c"));
    assert_false(match("a.b.c", "a.b"));
    assert_true(match("a*.b", "a*.b")); /* '*' inside a token is literal */
    assert_false(match("a*.b", "ax.b"));
}

static void test_malformed_patterns_are_invalid(void **state) {
    reel_status_t st = REEL_STATUS_INIT;

    (void)state;
    assert_int_equal(validate("a.>.b"), REEL_INVALID_ARGUMENT);
    assert_int_equal(validate(">.a"), REEL_INVALID_ARGUMENT);
    assert_int_equal(validate("a..*"), REEL_INVALID_ARGUMENT);
    assert_int_equal(validate(".a.>"), REEL_INVALID_ARGUMENT);
    assert_int_equal(validate("*."), REEL_INVALID_ARGUMENT);
    assert_int_equal(validate("a.*.c"), REEL_OK);
    assert_int_equal(validate("orders.>"), REEL_OK);
    assert_int_equal(validate("a..b"), REEL_OK); /* exact keys may */
    /* reeld refuses a string that is not UTF-8: no subject could match. */
    assert_int_equal(validate("kv.\xc3\x28.>"), REEL_INVALID_ARGUMENT);
    assert_int_equal(validate("kv.\xed\xa0\x80"), REEL_INVALID_ARGUMENT);
    assert_int_equal(validate("kv.caf\xc3\xa9.>"), REEL_OK);
    assert_int_equal(reel_pattern_validate("a.>.b", 5, "subject_pattern", &st),
                     REEL_INVALID_ARGUMENT);
    assert_non_null(strstr(reel_status_message(&st), "subject_pattern"));
    reel_status_fini(&st);
}

static void test_wildcard_detection_and_literal_prefix(void **state) {
    (void)state;
    assert_true(reel_pattern_has_wildcard("a.*", 3));
    assert_true(reel_pattern_has_wildcard("a.>", 3));
    assert_false(reel_pattern_has_wildcard("a.b", 3));
    assert_true(reel_pattern_has_empty_token("", 0));
    assert_true(reel_pattern_has_empty_token(".a", 2));
    assert_true(reel_pattern_has_empty_token("a.", 2));
    assert_true(reel_pattern_has_empty_token("a..b", 4));
    assert_false(reel_pattern_has_empty_token("a.*.>", 5));
    assert_false(reel_pattern_has_wildcard("a*.b>", 5));
    assert_int_equal(reel_pattern_literal_prefix("orders.eu.>", 11), 10);
    assert_int_equal(reel_pattern_literal_prefix("a.*.c", 5), 2);
    assert_int_equal(reel_pattern_literal_prefix("*.c", 3), 0);
    assert_int_equal(reel_pattern_literal_prefix("a.b", 3), 3);
}

static size_t head(const char *p, size_t n) {
    return reel_pattern_literal_head(p, strlen(p), n);
}

static void test_literal_heads_index_patterns_and_subjects(void **state) {
    (void)state;
    assert_int_equal(head("kv.orders.>", 2), 9);
    assert_int_equal(head("kv.orders.1", 2), 9);
    assert_int_equal(head("kv.orders.1", 1), 2);
    assert_int_equal(head("kv.*.x", 2), 2);
    assert_int_equal(head("kv.>", 2), 2);
    assert_int_equal(head("*.x", 2), 0);
    assert_int_equal(head(">", 1), 0);
    assert_int_equal(head("kv", 2), 2);    /* fewer tokens than asked */
    assert_int_equal(head("a.", 2), 2);    /* an empty last token */
    assert_int_equal(head("a*.b>", 2), 5); /* wildcards only as tokens */
    assert_int_equal(head("", 1), 0);
    assert_int_equal(head("a.b", 0), 0);
}

static reel_code_t check_name(const char *s) {
    return reel_pattern_check_name("name", s, strlen(s), NULL);
}

static void test_names_in_subjects_have_no_empty_or_wildcard_token(
    void **state) {
    reel_status_t st = REEL_STATUS_INIT;

    (void)state;
    assert_int_equal(check_name("a"), REEL_OK);
    assert_int_equal(check_name("a.b.c"), REEL_OK);
    assert_int_equal(check_name("a.>b.*c/d"), REEL_OK); /* inside a token */
    assert_int_equal(check_name("a..b"), REEL_INVALID_ARGUMENT);
    assert_int_equal(check_name(".a"), REEL_INVALID_ARGUMENT);
    assert_int_equal(check_name("a."), REEL_INVALID_ARGUMENT);
    assert_int_equal(check_name("."), REEL_INVALID_ARGUMENT);
    assert_int_equal(check_name("a.>.b"), REEL_INVALID_ARGUMENT);
    assert_int_equal(check_name("a.>"), REEL_INVALID_ARGUMENT);
    assert_int_equal(check_name("*"), REEL_INVALID_ARGUMENT);
    assert_int_equal(reel_pattern_check_name("kind", "a..b", 4, &st),
                     REEL_INVALID_ARGUMENT);
    assert_non_null(strstr(reel_status_message(&st), "kind: a token may not "
                                                      "be empty"));
    assert_int_equal(reel_pattern_check_name("key", "a.*", 3, &st),
                     REEL_INVALID_ARGUMENT);
    assert_non_null(strstr(reel_status_message(&st), "key: the tokens"));
    reel_status_fini(&st);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_star_matches_exactly_one_token),
        cmocka_unit_test(test_gt_matches_one_or_more_trailing_tokens),
        cmocka_unit_test(test_slashes_are_not_token_separators),
        cmocka_unit_test(test_literal_tokens_match_themselves_only),
        cmocka_unit_test(test_malformed_patterns_are_invalid),
        cmocka_unit_test(test_wildcard_detection_and_literal_prefix),
        cmocka_unit_test(test_literal_heads_index_patterns_and_subjects),
        cmocka_unit_test(test_names_in_subjects_have_no_empty_or_wildcard_token),
    };
    return cmocka_run_group_tests_name("pattern", tests, NULL, NULL);
}
