/*
 * base/page_test.c: when an element goes on a page with a byte budget.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "base/page.h"

/* An element is its own size. */
static size_t size_of(void *arg, const void *elem) {
    (void)arg;
    return *(const size_t *)elem;
}

static void test_elements_stop_at_the_byte_budget(void **state) {
    reel_page_t p = {10, size_of, NULL};
    size_t used = 0, four = 4, three = 3;

    (void)state;
    assert_true(reel_page_take(&p, 0, &used, &four));
    assert_true(reel_page_take(&p, 1, &used, &four));
    assert_int_equal(used, 8);
    assert_false(reel_page_take(&p, 2, &used, &three));
    assert_int_equal(used, 8);
}

static void test_an_element_that_fills_the_budget_exactly_fits(void **state) {
    reel_page_t p = {10, size_of, NULL};
    size_t used = 0, four = 4, six = 6, one = 1;

    (void)state;
    assert_true(reel_page_take(&p, 0, &used, &four));
    assert_true(reel_page_take(&p, 1, &used, &six));
    assert_false(reel_page_take(&p, 2, &used, &one));
}

static void test_the_first_element_is_always_taken(void **state) {
    reel_page_t p = {10, size_of, NULL};
    size_t used = 0, big = 50, huge = SIZE_MAX;

    (void)state;
    assert_true(reel_page_take(&p, 0, &used, &big));
    assert_false(reel_page_take(&p, 1, &used, &big));
    /* A measure that failed (SIZE_MAX) neither wraps nor fits later. */
    used = 0;
    assert_true(reel_page_take(&p, 0, &used, &huge));
    assert_int_equal(used, SIZE_MAX);
    assert_false(reel_page_take(&p, 1, &used, &big));
}

static void test_no_budget_takes_everything(void **state) {
    reel_page_t p = {0, NULL, NULL};
    size_t used = 0, big = 1u << 30;

    (void)state;
    assert_true(reel_page_take(NULL, 5, &used, &big));
    assert_true(reel_page_take(&p, 5, &used, &big));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_elements_stop_at_the_byte_budget),
        cmocka_unit_test(test_an_element_that_fills_the_budget_exactly_fits),
        cmocka_unit_test(test_the_first_element_is_always_taken),
        cmocka_unit_test(test_no_budget_takes_everything),
    };
    return cmocka_run_group_tests_name("page", tests, NULL, NULL);
}
