/*
 * cli/ctl_test.c: what reelctl's commands share: durations, times,
 * --addr forms, stored JSON printed as stored, values from a file.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/ctl.h"

static void test_durations_take_every_unit_and_refuse_the_rest(void **state) {
    static const struct {
        const char *text;
        int64_t ms;
    } cases[] = {
        {"250ms", 250},       {"30s", 30000},      {"5m", 300000},
        {"2h", 7200000},      {"1d", 86400000},    {"1.5s", 1500},
        {"2", 2000},          {"0", 0},            {"0.5h", 1800000},
        {"1w", -1},           {"-1s", -1},         {"+5s", -1},
        {" 5s", -1},          {"5 s", -1},         {"0x10s", -1},
        {"nan", -1},          {"inf", -1},         {"s", -1},
        {"", -1},             {"1e20d", -1},       {"5sec", -1},
        {"1.5", 1500},        {"30", 30000},       {"1e13", -1},
    };

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(*cases); i++) {
        int64_t got = ctl_parse_duration_ms(cases[i].text);

        if (got != cases[i].ms)
            fail_msg("\"%s\": %lld, not %lld", cases[i].text, (long long)got,
                     (long long)cases[i].ms);
    }
}

static void test_durations_print_as_the_limits_are_written(void **state) {
    char buf[32];

    (void)state;
    assert_string_equal(ctl_format_duration(86400000, buf, sizeof(buf)),
                        "24h");
    assert_string_equal(ctl_format_duration(2 * 86400000LL, buf, sizeof(buf)),
                        "2d");
    assert_string_equal(ctl_format_duration(300000, buf, sizeof(buf)), "5m");
    assert_string_equal(ctl_format_duration(90000, buf, sizeof(buf)), "90s");
    assert_string_equal(ctl_format_duration(1500, buf, sizeof(buf)),
                        "1500ms");
    assert_string_equal(ctl_format_duration(0, buf, sizeof(buf)), "0ms");
}

static void test_times_take_ms_and_rfc3339_and_refuse_the_rest(void **state) {
    static const struct {
        const char *text;
        int64_t ms; /* -1: refused */
    } cases[] = {
        {"1767225600000", 1767225600000LL},
        {"0", 0},
        {"2026-01-01T00:00:00Z", 1767225600000LL},
        {"2026-01-01t00:00:00z", 1767225600000LL},
        {"2026-01-01 00:00:00Z", 1767225600000LL},
        {"2026-01-01T00:00:00.250Z", 1767225600250LL},
        {"2026-01-01T00:00:00.5Z", 1767225600500LL},
        {"2026-01-01T00:00:00.123456789Z", 1767225600123LL},
        {"2026-01-01T01:30:00+01:30", 1767225600000LL},
        {"2025-12-31T22:00:00-02:00", 1767225600000LL},
        {"2028-02-29T00:00:00Z", 1835395200000LL}, /* a leap year's */
        {"2016-12-31T23:59:60Z", 1483228800000LL}, /* a leap second */
        {"2016-12-31T15:59:60-08:00", 1483228800000LL}, /* the same */
        {"2026-01-01T12:00:60Z", -1}, /* never a leap second there */
        {"2016-12-31T23:59:60+01:00", -1},
        {"1970-01-01T00:00:00Z", 0},
        {"9999-12-31T23:59:59.999Z", 253402300799999LL},
        {"253402300800000", -1}, /* past 9999 */
        {"99999999999999999999", -1},
        {"1969-12-31T23:59:59Z", -1},
        {"1970-01-01T00:00:00+00:01", -1}, /* before 1970 */
        {"2027-02-29T00:00:00Z", -1},
        {"2026-04-31T00:00:00Z", -1},
        {"2026-13-01T00:00:00Z", -1},
        {"2026-00-01T00:00:00Z", -1},
        {"2026-01-01T24:00:00Z", -1},
        {"2026-01-01T00:60:00Z", -1},
        {"2026-01-01T00:00:61Z", -1},
        {"2026-01-01T00:00:00", -1},  /* no zone */
        {"2026-01-01T00:00Z", -1},    /* no seconds */
        {"2026-01-01T00:00:00.Z", -1},
        {"2026-01-01T00:00:00+0100", -1},
        {"2026-01-01T00:00:00+24:00", -1},
        {"2026-01-01T00:00:00Zx", -1},
        {"2026-1-01T00:00:00Z", -1},
        {"2026-01-01", -1},
        {"", -1},
        {"-1", -1},
        {"+1767225600000", -1},
        {" 1767225600000", -1},
        {"1767225600000 ", -1},
        {"1.5", -1},
        {"1h", -1},
        {"now", -1},
    };

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(*cases); i++) {
        int64_t got = -1;

        if (ctl_parse_time_ms(cases[i].text, &got) != 0)
            got = -1;
        if (got != cases[i].ms)
            fail_msg("\"%s\": %lld, not %lld", cases[i].text, (long long)got,
                     (long long)cases[i].ms);
    }
}

/* ctl_resolve_addr's answer for addr, or "" when it refuses it. */
static void expect_addr(const char *addr, const char *want) {
    char *got = ctl_resolve_addr("--addr", addr);

    if (strcmp(got != NULL ? got : "", want) != 0)
        fail_msg("\"%s\": \"%s\", not \"%s\"", addr, got ? got : "(refused)",
                 want);
    free(got);
}

static void test_addr_without_a_port_gets_the_default_port(void **state) {
    (void)state;
    expect_addr("127.0.0.1", "127.0.0.1:7878");
    expect_addr("localhost", "localhost:7878");
    expect_addr("[::1]", "[::1]:7878");
    expect_addr("127.0.0.1:9000", "127.0.0.1:9000");
    expect_addr("[::1]:9000", "[::1]:9000");
    expect_addr("unix:/run/reel.sock", "unix:/run/reel.sock");
    expect_addr("dns:///reel.example:9000", "dns:///reel.example:9000");
    /* Port 0 is what a missing port used to dial: never. */
    expect_addr("127.0.0.1:", "");
    expect_addr("127.0.0.1:0", "");
    expect_addr("127.0.0.1:65536", "");
    expect_addr("127.0.0.1:x", "");
    expect_addr(":7878", "");
    expect_addr("", "");
    expect_addr("::1", "");
    expect_addr("[::1", "");
    expect_addr("[]", "");
    expect_addr("[::1]:", "");
    expect_addr("[::1]x", "");
}

/* v embedded in an object, printed as reelctl prints a line. */
static char *embedded(const char *v) {
    cJSON *o = cJSON_CreateObject();
    char *s;

    cJSON_AddItemToObject(o, "value", ctl_json_value(v));
    s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return s;
}

static void test_stored_json_is_embedded_byte_for_byte(void **state) {
    static const char *const values[] = {
        "9007199254740993",
        "[9007199254740993, 1234567890123456789, 0.30000000000000004]",
        "1e999",
        "-0.0",
        "{\"deep\":{\"n\":1.0e-400,\"s\":\"\\u00e9\\ud83d\\ude00\"}}",
        " [ 1 ,2 ] ",
        "\"a \\\"quoted\\\" \\n string\"",
    };
    char want[256], *got;

    (void)state;
    for (size_t i = 0; i < sizeof(values) / sizeof(*values); i++) {
        snprintf(want, sizeof(want), "{\"value\":%s}", values[i]);
        got = embedded(values[i]);
        assert_string_equal(got, want);
        free(got);
    }
    /* Line breaks between tokens print as spaces: one line stays one. */
    got = embedded("{\n  \"a\": [1,\r\n 2]\n}");
    assert_string_equal(got, "{\"value\":{   \"a\": [1,   2] }}");
    free(got);
    /* No value is null; text that is not JSON a string. */
    got = embedded("");
    assert_string_equal(got, "{\"value\":null}");
    free(got);
    got = embedded("not json\n");
    assert_string_equal(got, "{\"value\":\"not json\\n\"}");
    free(got);
}

static const ctl_command_t no_commands[] = {{NULL, {NULL}, 0, 0, 0, NULL,
                                             NULL}};
static const ctl_group_t group = {"kv", "reel.v1.KV", NULL, 0, no_commands};
static const ctl_command_t set_cmd = {"set", {"VALUE"}, 1, 0, 0, "", NULL};

static void test_values_come_from_files_without_their_last_newline(
    void **state) {
    const char *tmp = getenv("TEST_TMPDIR");
    ctl_args_t a = {0};
    char path[512], arg[520];
    const char *text;
    char *buf;
    FILE *f;
    int fd;

    (void)state;
    a.group = &group;
    a.cmd = &set_cmd;
    /* JSON on the line is used as it is. */
    assert_int_equal(ctl_read_json_arg(&a, "VALUE", "{\"n\":1}\n", &buf,
                                       &text),
                     EXIT_OK);
    assert_null(buf);
    assert_string_equal(text, "{\"n\":1}\n");

    snprintf(path, sizeof(path), "%s/value-XXXXXX", tmp ? tmp : "/tmp");
    fd = mkstemp(path);
    assert_true(fd >= 0);
    f = fdopen(fd, "w");
    fputs("{\n\"n\": 9007199254740993\n}\n\r\n \t", f);
    fclose(f);
    snprintf(arg, sizeof(arg), "@%s", path);
    assert_int_equal(ctl_read_json_arg(&a, "VALUE", arg, &buf, &text),
                     EXIT_OK);
    assert_string_equal(text, "{\n\"n\": 9007199254740993\n}");
    assert_ptr_equal(text, buf);
    free(buf);
    unlink(path);

    assert_int_equal(ctl_read_json_arg(&a, "VALUE", arg, &buf, &text),
                     EXIT_FAIL);
    assert_null(buf);
    assert_int_equal(ctl_read_json_arg(&a, "VALUE", "@", &buf, &text),
                     EXIT_USAGE);
}

static void test_names_never_break_a_line_nor_drive_the_terminal(void **state) {
    const char *plain = "orders/é.k";

    (void)state;
    assert_ptr_equal(ctl_name(plain), plain); /* nothing to escape: no copy */
    assert_string_equal(ctl_name("nl\nfake = 1"), "nl\\x0afake = 1");
    assert_string_equal(ctl_name("esc\x1b[31mred\r"), "esc\\x1b[31mred\\x0d");
    assert_string_equal(ctl_name("del\x7f c1\xc2\x9b"), "del\\x7f c1\\xc2\\x9b");
    assert_string_equal(ctl_name("\xc2\xa0nbsp"), "\xc2\xa0nbsp"); /* U+00A0 */
    assert_string_equal(ctl_name(NULL), "");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_names_never_break_a_line_nor_drive_the_terminal),
        cmocka_unit_test(test_durations_take_every_unit_and_refuse_the_rest),
        cmocka_unit_test(test_durations_print_as_the_limits_are_written),
        cmocka_unit_test(test_times_take_ms_and_rfc3339_and_refuse_the_rest),
        cmocka_unit_test(test_addr_without_a_port_gets_the_default_port),
        cmocka_unit_test(test_stored_json_is_embedded_byte_for_byte),
        cmocka_unit_test(
            test_values_come_from_files_without_their_last_newline),
    };
    return cmocka_run_group_tests_name("ctl", tests, NULL, NULL);
}
