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

static void test_utf8_scrub_replaces_bad_bytes_only(void **state) {
    /* é, a lone continuation byte, an overlong '/', then é cut short. */
    char s[] = "a\xc3\xa9" "b\x80" "c\xc0\xaf" "d\xc3";
    char ok[] = "plain \xe2\x82\xac";

    (void)state;
    reel_utf8_scrub(s);
    assert_string_equal(s, "a\xc3\xa9" "b?c??d?");
    assert_true(reel_utf8_valid(s, strlen(s)));
    reel_utf8_scrub(ok);
    assert_string_equal(ok, "plain \xe2\x82\xac");
}

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

static void test_addresses_take_a_port_in_range_or_the_default(
    void **state) {
    const struct {
        const char *in;
        int port0;
        const char *out; /* NULL: refused */
    } cases[] = {
        {"127.0.0.1:7000", 0, "127.0.0.1:7000"},
        {"127.0.0.1", 0, "127.0.0.1:7878"},
        {"localhost", 0, "localhost:7878"},
        {"[::1]", 0, "[::1]:7878"},
        {"[::1]:9", 0, "[::1]:9"},
        {"127.0.0.1:0", 1, "127.0.0.1:0"},
        {"unix:/run/reel.sock", 0, "unix:/run/reel.sock"},
        {"dns:///h:1", 0, "dns:///h:1"},
        /* A resolver took 99999 modulo 65536, 4294967297 as 1, and a
         * host with an empty port as port 443. */
        {"127.0.0.1:99999", 1, NULL},
        {"127.0.0.1:65536", 1, NULL},
        {"127.0.0.1:4294967297", 1, NULL},
        {"127.0.0.1:", 1, NULL},
        {"127.0.0.1:0", 0, NULL},
        {"127.0.0.1:-1", 1, NULL},
        {"127.0.0.1:+5", 1, NULL},
        {"127.0.0.1:0x10", 1, NULL},
        {":7878", 1, NULL},
        {"", 1, NULL},
        {"[::1]:", 1, NULL},
        {"[]:1", 1, NULL},
        {"[::1]x", 1, NULL},
        {"::1", 1, NULL},
        {"127.0.0.1 :7000", 1, NULL},
        {"127.0.0.1:7000\n", 1, NULL},
        /* A URL, a port alone: a host named "7000", a DNS failure. */
        {"http://127.0.0.1:7000", 1, NULL},
        {"https://reel.example:443/", 1, NULL},
        {"grpc://h:1", 1, NULL},
        {"7000", 1, NULL},
    };
    char out[64];

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(*cases); i++) {
        reel_status_t st = REEL_STATUS_INIT;
        reel_code_t rc = reel_addr_check("--listen", cases[i].in, "7878",
                                         cases[i].port0, out, sizeof(out),
                                         &st);

        if (cases[i].out == NULL) {
            if (rc != REEL_INVALID_ARGUMENT ||
                strstr(reel_status_message(&st), "--listen: ") == NULL)
                fail_msg("\"%s\" was not refused naming the flag",
                         cases[i].in);
        } else if (rc != REEL_OK || strcmp(out, cases[i].out) != 0) {
            fail_msg("\"%s\": %s, \"%s\"", cases[i].in,
                     reel_status_message(&st), out);
        }
        reel_status_fini(&st);
    }
}

/* Brackets are suggested for what could be an IPv6 address, not for any
 * text with two colons. */
static void test_only_an_ipv6_address_is_told_of_brackets(void **state) {
    const struct {
        const char *in;
        int brackets;
    } cases[] = {
        {"::1", 1},
        {"::ffff:127.0.0.1", 1},
        {"fe80::1%eth0", 1},
        {"2001:db8::7:7878", 1},
        {"ipv4:0.0.0.0:7878", 0},
        {"127.0.0.1:7878:1", 0},
        {"host:1:2", 0},
    };
    char out[64];

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(*cases); i++) {
        reel_status_t st = REEL_STATUS_INIT;

        assert_int_equal(reel_addr_check("--listen", cases[i].in, "7878", 0,
                                         out, sizeof(out), &st),
                         REEL_INVALID_ARGUMENT);
        if ((strstr(reel_status_message(&st), "in brackets") != NULL) !=
            cases[i].brackets)
            fail_msg("\"%s\": %s", cases[i].in, reel_status_message(&st));
        reel_status_fini(&st);
    }
}

/* The two mistakes say what they are and what to write. */
static void test_a_url_or_a_port_alone_is_told_what_to_write(void **state) {
    const struct {
        const char *in, *says;
    } cases[] = {
        {"http://127.0.0.1:7000/x", "--addr: \"http://127.0.0.1:7000/x\" is "
                                    "a URL: write HOST:PORT, without the "
                                    "scheme (\"127.0.0.1:7000\")"},
        {"39553", "--addr: \"39553\" is a port alone: write HOST:PORT "
                  "(\"127.0.0.1:39553\" on this machine)"},
    };
    char out[64];

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(*cases); i++) {
        reel_status_t st = REEL_STATUS_INIT;

        assert_int_equal(reel_addr_check("--addr", cases[i].in, "7878", 0,
                                         out, sizeof(out), &st),
                         REEL_INVALID_ARGUMENT);
        assert_string_equal(reel_status_message(&st), cases[i].says);
        reel_status_fini(&st);
    }
}

/* The two mistakes alone, for the client library: gRPC's own target forms,
 * which reel_addr_check refuses, pass. */
static void test_addr_mistake_names_the_two_and_passes_grpc_targets(
    void **state) {
    static const char *const pass[] = {
        "127.0.0.1:7878", "dns:localhost:7878", "dns:///localhost:7878",
        "ipv4:127.0.0.1:7878", "unix:/tmp/reel.sock", "localhost", "",
    };
    reel_status_t st = REEL_STATUS_INIT;

    (void)state;
    for (size_t i = 0; i < sizeof(pass) / sizeof(*pass); i++)
        if (reel_addr_mistake("addr", pass[i], &st) != REEL_OK)
            fail_msg("\"%s\": %s", pass[i], reel_status_message(&st));
    assert_int_equal(reel_addr_mistake("addr", "7878", &st),
                     REEL_INVALID_ARGUMENT);
    assert_string_equal(reel_status_message(&st),
                        "addr: \"7878\" is a port alone: write HOST:PORT "
                        "(\"127.0.0.1:7878\" on this machine)");
    reel_status_fini(&st);
    assert_int_equal(reel_addr_mistake("addr", "https://h:1/", &st),
                     REEL_INVALID_ARGUMENT);
    assert_non_null(strstr(reel_status_message(&st), "is a URL"));
    reel_status_fini(&st);
}

static void test_hex_is_two_lowercase_digits_a_byte(void **state) {
    const uint8_t in[] = {0x00, 0x0f, 0xa5, 0xff, 0x10};
    char out[2 * sizeof in + 2];

    (void)state;
    memset(out, 'x', sizeof out);
    reel_hex(in, sizeof in, out);
    assert_string_equal(out, "000fa5ff10");
    assert_int_equal(out[sizeof out - 1], 'x'); /* nothing past the NUL */
    reel_hex(in, 0, out);
    assert_string_equal(out, "");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_utf8_refuses_bad_bytes_at_every_offset),
        cmocka_unit_test(test_utf8_scrub_replaces_bad_bytes_only),
        cmocka_unit_test(test_addresses_take_a_port_in_range_or_the_default),
        cmocka_unit_test(test_only_an_ipv6_address_is_told_of_brackets),
        cmocka_unit_test(test_a_url_or_a_port_alone_is_told_what_to_write),
        cmocka_unit_test(
            test_addr_mistake_names_the_two_and_passes_grpc_targets),
        cmocka_unit_test(test_hex_is_two_lowercase_digits_a_byte),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
