/*
 * api/cursor_test.c: sealed run listing cursors.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <string.h>

#include "api/cursor.h"

#define RUN "01JABCDEFGHJKMNPQRSTVWXYZ0"

static void test_a_sealed_cursor_opens_to_its_run_and_shows_nothing(
    void **state) {
    char a[API_SEALED_CURSOR_LEN + 1], b[API_SEALED_CURSOR_LEN + 1];
    char id[27];
    reel_status_t st = REEL_STATUS_INIT;

    (void)state;
    assert_int_equal(api_cursor_seal(RUN, a), 0);
    assert_int_equal(api_cursor_seal(RUN, b), 0);
    assert_int_equal(strlen(a), API_SEALED_CURSOR_LEN);
    assert_true(api_cursor_is_sealed(a));
    assert_false(api_cursor_is_sealed(RUN));
    assert_string_not_equal(a, b); /* a nonce each: equal runs look apart */
    assert_null(strstr(a, "01JABC"));
    assert_int_equal(api_cursor_unseal("start_after", a, id, &st), REEL_OK);
    assert_string_equal(id, RUN);
    assert_int_equal(api_cursor_unseal("start_after", b, id, &st), REEL_OK);
    assert_string_equal(id, RUN);
}

static void test_an_altered_or_foreign_cursor_is_refused_naming_the_field(
    void **state) {
    char a[API_SEALED_CURSOR_LEN + 1], id[27];
    const char *bad[] = {"~", "~00", "~zz", a};
    reel_status_t st = REEL_STATUS_INIT;

    (void)state;
    assert_int_equal(api_cursor_seal(RUN, a), 0);
    a[20] = a[20] == '0' ? '1' : '0'; /* one bit of the ciphertext or nonce */
    for (size_t i = 0; i < sizeof(bad) / sizeof(*bad); i++) {
        assert_int_equal(api_cursor_unseal("start_after", bad[i], id, &st),
                         REEL_INVALID_ARGUMENT);
        assert_non_null(strstr(reel_status_message(&st), "start_after: "));
        reel_status_fini(&st);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(
            test_a_sealed_cursor_opens_to_its_run_and_shows_nothing),
        cmocka_unit_test(
            test_an_altered_or_foreign_cursor_is_refused_naming_the_field),
    };
    return cmocka_run_group_tests_name("cursor", tests, NULL, NULL);
}
