/*
 * api/exposure_test.c: which listen addresses count as loopback, and what
 * a non-loopback address needs before reeld serves it.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <string.h>

#include "api/exposure.h"

static void test_loopback_addresses_are_loopback(void **state) {
    (void)state;
    assert_int_equal(api_listen_is_loopback("127.0.0.1:7878"), 1);
    assert_int_equal(api_listen_is_loopback("127.0.0.2:1"), 1);
    assert_int_equal(api_listen_is_loopback("[::1]:7878"), 1);
    assert_int_equal(api_listen_is_loopback("ipv4:127.0.0.1:7878"), 1);
    assert_int_equal(api_listen_is_loopback("unix:/run/reel.sock"), 1);
}

static void test_wildcards_and_routable_addresses_are_not(void **state) {
    (void)state;
    assert_int_equal(api_listen_is_loopback("0.0.0.0:7878"), 0);
    assert_int_equal(api_listen_is_loopback("[::]:7878"), 0);
    assert_int_equal(api_listen_is_loopback(":7878"), 0);
    assert_int_equal(api_listen_is_loopback("10.1.2.3:7878"), 0);
    assert_int_equal(api_listen_is_loopback("[::ffff:10.1.2.3]:1"), 0);
    assert_int_equal(api_listen_is_loopback("[::1:7878"), 0);
    assert_int_equal(api_listen_is_loopback(NULL), 0);
}

static void test_a_public_address_needs_auth_and_tls_or_insecure(void **st) {
    char why[512];

    (void)st;
    assert_int_equal(api_check_exposure("127.0.0.1:1", 0, 0, 0, why,
                                        sizeof(why)),
                     0);
    assert_int_equal(
        api_check_exposure("0.0.0.0:1", 0, 0, 0, why, sizeof(why)), -1);
    assert_non_null(strstr(why, "--auth token and --tls-cert"));
    assert_non_null(strstr(why, "--insecure"));
    assert_int_equal(
        api_check_exposure("0.0.0.0:1", 1, 0, 0, why, sizeof(why)), -1);
    assert_non_null(strstr(why, "no TLS"));
    assert_int_equal(
        api_check_exposure("0.0.0.0:1", 0, 1, 0, why, sizeof(why)), -1);
    assert_non_null(strstr(why, "Add --auth token,"));
    assert_int_equal(
        api_check_exposure("0.0.0.0:1", 1, 1, 0, why, sizeof(why)), 0);
    assert_int_equal(
        api_check_exposure("0.0.0.0:1", 0, 0, 1, why, sizeof(why)), 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_loopback_addresses_are_loopback),
        cmocka_unit_test(test_wildcards_and_routable_addresses_are_not),
        cmocka_unit_test(test_a_public_address_needs_auth_and_tls_or_insecure),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
