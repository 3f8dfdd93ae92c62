/*
 * base/json_test.c: what strict JSON accepts and refuses.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "base/json.h"
#include "base/text.h"

static int ok(const char *s) { return reel_json_validate(s, strlen(s), NULL, NULL) == 0; }

static void test_accepts_every_kind_of_value(void **state) {
    const char *good[] = {
        "null", "true", "false", "0", "-0", "-1.5e3", "1E+2", "0.25", "\"s\"",
        "[]", "{}", " {\"a\" : 1} ", "[1,[2,[3,{}]]]",
        "{\"a\":[1,{\"b\":null}],\"c\":\"\\u00e9\\n\\\"\"}",
        "\"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80\"", "\"\\ud83d\\ude00\"",
        "\n\t[\r]\n",
    };
    (void)state;
    for (size_t i = 0; i < sizeof(good) / sizeof(*good); i++)
        if (!ok(good[i]))
            fail_msg("refused valid JSON: %s", good[i]);
}

static void test_refuses_what_rfc_8259_refuses(void **state) {
    const char *bad[] = {
        "", " ", "{", "}", "[1,]", "[,1]", "{\"a\":1,}", "{'a': 1}", "{a:1}",
        "abc", "nul", "truex", "01", "-01", "+1", ".5", "1.", "1e", "--1",
        "\"unterminated", "\"a\x01b\"", "\"\\x\"", "\"\\u12\"",
        "\"\\udc00\"", "\"\\ud800\"", "\"\\ud800\\u0041\"", "{\"a\":1}x",
        "1 2", "[1 2]", "{\"a\" 1}", "{\"a\":}", "\"\xc3\x28\"",
        "\"\xed\xa0\x80\"", "\"\xc0\xaf\"", "[]]", "{}}",
    };
    (void)state;
    for (size_t i = 0; i < sizeof(bad) / sizeof(*bad); i++)
        if (ok(bad[i]))
            fail_msg("accepted invalid JSON: %s", bad[i]);
    assert_int_equal(reel_json_validate("1\0", 2, NULL, NULL), -1);
}

static void test_depth_is_bounded_and_the_error_located(void **state) {
    size_t n = REEL_JSON_MAX_DEPTH;
    char *deep = malloc(2 * n + 2);
    const char *why = NULL;
    size_t off = 0;

    (void)state;
    memset(deep, '[', n);
    memset(deep + n, ']', n);
    assert_int_equal(reel_json_validate(deep, 2 * n, NULL, NULL), 0);
    memmove(deep + 1, deep, 2 * n);
    deep[0] = '[';
    deep[2 * n + 1] = ']';
    assert_int_equal(reel_json_validate(deep, 2 * n + 2, &off, &why), -1);
    assert_string_equal(why, "nested deeper than 512 levels");
    assert_int_equal(off, n);
    free(deep);
    assert_int_equal(reel_json_validate("[1, 2, x]", 9, &off, &why), -1);
    assert_int_equal(off, 7);
    assert_string_equal(why, "expected a value");
    /* A word gone wrong: where it went wrong, not where it began. */
    assert_int_equal(reel_json_validate("nan", 3, &off, &why), -1);
    assert_int_equal(off, 1);
    assert_string_equal(why, "unexpected character");
    assert_int_equal(reel_json_validate("tru", 3, &off, &why), -1);
    assert_int_equal(off, 3);
    assert_string_equal(why, "unexpected end");
    assert_int_equal(reel_json_validate("[fals]", 6, &off, &why), -1);
    assert_int_equal(off, 5);
    assert_string_equal(why, "unexpected character");
}

/* The scan takes 8 plain bytes at a time: each special byte must still be
 * seen at every offset, and each word boundary. */
static void test_special_bytes_are_seen_at_every_offset(void **state) {
    static const struct {
        const char *bytes;
        size_t len;
        int valid;
    } cases[] = {
        {"\x00", 1, 0}, {"\x01", 1, 0}, {"\x1f", 1, 0}, {"\x7f", 1, 1},
        {" ", 1, 1},     {"~", 1, 1},     {"\"", 1, 0},   {"\\", 1, 0},
        {"\\n", 2, 1}, {"\\\"", 2, 1}, {"\\u00e9", 6, 1},
        {"\x80", 1, 0}, {"\xff", 1, 0}, {"\xc3\xa9", 2, 1},
        {"\xe2\x82\xac", 3, 1}, {"\xed\xa0\x80", 3, 0},
    };
    char buf[64];

    (void)state;
    for (size_t c = 0; c < sizeof(cases) / sizeof(*cases); c++) {
        for (size_t at = 0; at < 24; at++) {
            size_t n = 0;

            buf[n++] = '"';
            memset(buf + n, 'a', at);
            n += at;
            memcpy(buf + n, cases[c].bytes, cases[c].len);
            n += cases[c].len;
            memset(buf + n, 'x', 24 - at); /* \\x is no escape */
            n += 24 - at;
            buf[n++] = '"';
            if ((reel_json_validate(buf, n, NULL, NULL) == 0) != cases[c].valid)
                fail_msg("case %zu at offset %zu: expected %s", c, at,
                         cases[c].valid ? "valid" : "invalid");
        }
    }
}

/*
 * JSON strings and names share one UTF-8 decoder: for every lead byte and
 * a spread of following bytes (the edges of the continuation range and
 * of each lead's first continuation), a JSON string takes exactly the
 * bytes reel_utf8_valid() takes, which reel_utf8_seq() starts to read.
 */
static void test_strings_take_exactly_the_utf8_names_take(void **state) {
    static const unsigned char next[] = {0x00, 0x41, 0x7f, 0x80, 0x8f, 0x90,
                                         0x9f, 0xa0, 0xbf, 0xc0, 0xff};
    const size_t nn = sizeof(next);
    char doc[8];

    (void)state;
    for (unsigned lead = 0x80; lead <= 0xff; lead++)
        for (size_t len = 1, count = 1; len <= 4; count *= nn, len++)
            for (size_t k = 0; k < count; k++) {
                unsigned char seq[4] = {(unsigned char)lead, next[k % nn],
                                        next[k / nn % nn],
                                        next[k / nn / nn]};
                int name = reel_utf8_valid((const char *)seq, len);
                size_t n = reel_utf8_seq(seq, len);

                doc[0] = '"';
                memcpy(doc + 1, seq, len);
                doc[len + 1] = '"';
                if ((reel_json_validate(doc, len + 2, NULL, NULL) == 0) !=
                        name ||
                    (name && n == 0))
                    fail_msg("%02x %02x %02x %02x (%zu bytes): name %d, "
                             "json %d, seq %zu",
                             seq[0], seq[1], seq[2], seq[3], len, name,
                             reel_json_validate(doc, len + 2, NULL, NULL) ==
                                 0,
                             n);
            }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_accepts_every_kind_of_value),
        cmocka_unit_test(test_refuses_what_rfc_8259_refuses),
        cmocka_unit_test(test_depth_is_bounded_and_the_error_located),
        cmocka_unit_test(test_special_bytes_are_seen_at_every_offset),
        cmocka_unit_test(test_strings_take_exactly_the_utf8_names_take),
    };
    return cmocka_run_group_tests_name("json", tests, NULL, NULL);
}
