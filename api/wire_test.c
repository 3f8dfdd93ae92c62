/*
 * api/wire_test.c: string fields with NUL bytes or bad UTF-8 are refused
 * at any depth; everything else passes through to the decoder. The varint
 * writer and its size agree at every length boundary.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "reel/v1/journal.pb-c.h"
#include "api/wire.h"

static reel_code_t check(const ProtobufCMessageDescriptor *d, const void *b,
                         size_t n, const char *needle) {
    reel_status_t st = REEL_STATUS_INIT;
    reel_code_t rc = api_wire_check(d, b, n, &st);

    if (needle != NULL && strstr(reel_status_message(&st), needle) == NULL)
        fail_msg("\"%s\" lacks \"%s\"", reel_status_message(&st), needle);
    reel_status_fini(&st);
    return rc;
}

static void test_nul_in_a_top_level_string_is_refused(void **state) {
    /* BeginRunRequest field 5 (lease_owner) = "own\0x" */
    const uint8_t bad[] = {0x2a, 5, 'o', 'w', 'n', 0, 'x'};
    const uint8_t good[] = {0x2a, 3, 'o', 'w', 'n', 0x30, 0x64};

    (void)state;
    assert_int_equal(check(&reel__v1__begin_run_request__descriptor, bad,
                           sizeof(bad), "lease_owner"),
                     REEL_INVALID_ARGUMENT);
    assert_int_equal(check(&reel__v1__begin_run_request__descriptor, good,
                           sizeof(good), NULL),
                     REEL_OK);
}

static void test_bad_strings_inside_map_entries_are_refused(void **state) {
    /* labels (field 7) entry { key (1) = "k", value (2) = "\xff" } */
    const uint8_t bad[] = {0x3a, 6, 0x0a, 1, 'k', 0x12, 1, 0xff};

    (void)state;
    /* Named with the field it sits in, as the request spells it. */
    assert_int_equal(check(&reel__v1__begin_run_request__descriptor, bad,
                           sizeof(bad), "labels.value: must be valid UTF-8"),
                     REEL_INVALID_ARGUMENT);
}

static void test_bytes_payloads_and_garbage_are_left_to_the_decoder(
    void **state) {
    const uint8_t garbage[] = {0xff, 0xff, 0xff};
    const uint8_t unknown[] = {0xfa, 0x07, 2, 0, 0}; /* field 127, "\0\0" */

    (void)state;
    assert_int_equal(check(&reel__v1__begin_run_request__descriptor, garbage,
                           sizeof(garbage), NULL),
                     REEL_OK);
    assert_int_equal(check(&reel__v1__begin_run_request__descriptor, unknown,
                           sizeof(unknown), NULL),
                     REEL_OK);
}

static void test_varint_size_matches_what_is_written(void **state) {
    const uint64_t v[] = {0,          1,          127,        128,
                          16383,      16384,      2097151,    2097152,
                          UINT32_MAX, 1ULL << 56, UINT64_MAX};

    (void)state;
    for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
        uint8_t buf[10];
        size_t n = api_wire_put_varint(buf, v[i]);

        assert_int_equal(api_wire_varint_size(v[i]), n);
        assert_int_equal(buf[n - 1] & 0x80, 0);
    }
    assert_int_equal(api_wire_varint_size(127), 1);
    assert_int_equal(api_wire_varint_size(128), 2);
    assert_int_equal(api_wire_varint_size(UINT64_MAX), 10);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_nul_in_a_top_level_string_is_refused),
        cmocka_unit_test(test_bad_strings_inside_map_entries_are_refused),
        cmocka_unit_test(test_bytes_payloads_and_garbage_are_left_to_the_decoder),
        cmocka_unit_test(test_varint_size_matches_what_is_written),
    };
    return cmocka_run_group_tests_name("wire", tests, NULL, NULL);
}
