/*
 * api/tenant_test.c: which stored WAL events belong to a tenant with a
 * prefix (the default tenant's tail skips them), on well-formed and
 * malformed bytes, and which methods keep tenants apart.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "api/tenant.h"
#include "reel/v1/wal.pb-c.h"

static size_t event(const char *subject, uint8_t *buf) {
    Reel__V1__Event ev = REEL__V1__EVENT__INIT;

    ev.revision = 300;
    ev.subject = (char *)subject;
    ev.type = REEL__V1__EVENT__TYPE__VALUE_CHANGED;
    ev.ts_ms = 1700000000000;
    return reel__v1__event__pack(&ev, buf);
}

static void test_a_tenants_events_are_told_by_their_second_token(void **s) {
    uint8_t buf[256];
    size_t n;

    (void)s;
    n = event("kv.::acme:orders.k", buf);
    assert_int_equal(api_tenant_event_is_scoped(buf, n), 1);
    n = event("kv.orders.k", buf);
    assert_int_equal(api_tenant_event_is_scoped(buf, n), 0);
    /* A key's own "::" is no tenant's. */
    n = event("kv.orders.a.::b", buf);
    assert_int_equal(api_tenant_event_is_scoped(buf, n), 0);
    n = event("journal.01ABC.step", buf);
    assert_int_equal(api_tenant_event_is_scoped(buf, n), 0);
    n = event("kv.:", buf);
    assert_int_equal(api_tenant_event_is_scoped(buf, n), 0);
}

static void test_malformed_bytes_are_no_tenants_and_read_in_bounds(void **s) {
    uint8_t buf[256], *copy;
    size_t n = event("kv.::acme:orders.k", buf);

    (void)s;
    /* Every truncation, each in a buffer of exactly its size (ASan sees a
     * read past it). */
    for (size_t k = 0; k < n; k++) {
        copy = malloc(k ? k : 1);
        memcpy(copy, buf, k);
        assert_true(api_tenant_event_is_scoped(copy, k) <= 1);
        free(copy);
    }
    /* A length past the end, an endless varint, an unknown wire type. */
    assert_int_equal(api_tenant_event_is_scoped((const uint8_t *)"\x12\x7f",
                                                2),
                     0);
    assert_int_equal(
        api_tenant_event_is_scoped((const uint8_t *)"\xff\xff\xff\xff", 4), 0);
    assert_int_equal(api_tenant_event_is_scoped((const uint8_t *)"\x0b", 1),
                     0);
    assert_int_equal(api_tenant_event_is_scoped(NULL, 0), 0);
}

static void test_kv_status_and_the_plain_wal_tail_keep_tenants_apart(void **s) {
    (void)s;
    assert_true(api_tenant_keeps_apart("/reel.v1.KV/SetValue"));
    assert_true(api_tenant_keeps_apart("/reel.v1.Admin/GetStatus"));
    assert_false(api_tenant_keeps_apart("/reel.v1.Journal/GetRun"));
    assert_true(api_tenant_keeps_apart("/reel.v1.Wal/SubscribeEvents"));
    assert_true(api_tenant_keeps_apart("/reel.v1.Wal/GetHead"));
    assert_false(api_tenant_keeps_apart("/reel.v1.Wal/AckEvents"));
    assert_false(api_tenant_keeps_apart("/reel.v1.Wal/ListConsumers"));
    assert_false(api_tenant_keeps_apart("/reel.v1.KVX/Get"));
    assert_false(api_tenant_keeps_apart("/reel.v1.Admin/CreateToken"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_a_tenants_events_are_told_by_their_second_token),
        cmocka_unit_test(test_malformed_bytes_are_no_tenants_and_read_in_bounds),
        cmocka_unit_test(test_kv_status_and_the_plain_wal_tail_keep_tenants_apart),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
