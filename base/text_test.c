/*
 * base/text_test.c: strict UTF-8, checked 8 ASCII bytes at a time.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "base/text.h"

static void test_utf8_refuses_bad_bytes_at_every_offset(void **state) {
    static const struct {
        const char *bytes;
        size_t len;
        int valid;
    } cases[] = {
        {"\x00", 1, 0},         {"\x01", 1, 1},         {"\x7f", 1, 1},
        {"\x80", 1, 0},         {"\xc0\xaf", 2, 0},     {"\xc3\xa9", 2, 1},
        {"\xc3", 1, 0},         {"\xe2\x82\xac", 3, 1}, {"\xed\xa0\x80", 3, 0},
        {"\xf0\x9f\x98\x80", 4, 1}, {"\xf4\x90\x80\x80", 4, 0},
        {"\xff", 1, 0},
    };
    char buf[64];

    (void)state;
    for (size_t c = 0; c < sizeof(cases) / sizeof(*cases); c++) {
        for (size_t at = 0; at < 24; at++) {
            for (size_t tail = 0; tail < 10; tail++) {
                size_t n = 0;

                memset(buf, 'a', at);
                n += at;
                memcpy(buf + n, cases[c].bytes, cases[c].len);
                n += cases[c].len;
                memset(buf + n, 'b', tail);
                n += tail;
                if (reel_utf8_valid(buf, n) != cases[c].valid)
                    fail_msg("case %zu at offset %zu, %zu after: expected %s",
                             c, at, tail,
                             cases[c].valid ? "valid" : "invalid");
            }
        }
    }
    /* A sequence cut by the end of the input. */
    assert_false(reel_utf8_valid("abcdefgh\xe2\x82", 10));
    assert_true(reel_utf8_valid("", 0));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_utf8_refuses_bad_bytes_at_every_offset),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
