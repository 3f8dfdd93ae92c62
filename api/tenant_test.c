/*
 * api/tenant_test.c: which stored WAL events belong to a tenant with a
 * prefix (the default tenant's tail skips them), on well-formed and
 * malformed bytes; what a tenant sees of its own (runs, entries, values);
 * who owns a stored name; names and patterns in and out; which methods
 * keep tenants apart.
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

static void test_every_service_but_the_token_methods_keeps_tenants_apart(
    void **s) {
    (void)s;
    assert_true(api_tenant_keeps_apart("/reel.v1.KV/SetValue"));
    assert_true(api_tenant_keeps_apart("/reel.v1.Admin/GetStatus"));
    assert_true(api_tenant_keeps_apart("/reel.v1.Journal/GetRun"));
    assert_true(api_tenant_keeps_apart("/reel.v1.Journal/ClaimRun"));
    assert_true(api_tenant_keeps_apart("/reel.v1.Signals/SendSignal"));
    assert_true(api_tenant_keeps_apart("/reel.v1.Wal/SubscribeEvents"));
    assert_true(api_tenant_keeps_apart("/reel.v1.Wal/GetHead"));
    assert_true(api_tenant_keeps_apart("/reel.v1.Wal/AckEvents"));
    assert_true(api_tenant_keeps_apart("/reel.v1.Wal/ListConsumers"));
    assert_true(api_tenant_keeps_apart("/reel.v1.Journal/ClaimNextRun"));
    assert_true(api_tenant_keeps_apart("/reel.v1.Signals/CancelSignal"));
    assert_true(api_tenant_keeps_apart("/reel.v1.Workspace/PutArtifact"));
    assert_false(api_tenant_keeps_apart("/reel.v1.KVX/Get"));
    assert_false(api_tenant_keeps_apart("/reel.v1.JournalX/GetRun"));
    assert_false(api_tenant_keeps_apart("/reel.v1.Admin/CreateToken"));
    assert_false(api_tenant_keeps_apart("/reel.v1.Admin/RevokeToken"));
}

static void test_a_stored_name_is_owned_by_its_tenant_only(void **s) {
    (void)s;
    /* A tenant: its own prefix, exactly (not one it starts). */
    assert_true(api_tenant_owns_as("acme", "::acme:billing"));
    assert_false(api_tenant_owns_as("acme", "::acme2:billing"));
    assert_false(api_tenant_owns_as("acme", "::acm:billing"));
    assert_false(api_tenant_owns_as("acme", "::beta:billing"));
    assert_false(api_tenant_owns_as("acme", "billing"));
    assert_false(api_tenant_owns_as("acme", "acme:billing"));
    /* default: names without "::" in front. */
    assert_true(api_tenant_owns_as("default", "billing"));
    assert_true(api_tenant_owns_as("default", "a::b"));
    assert_false(api_tenant_owns_as("default", "::acme:billing"));
    /* admin and no --auth token: everything. */
    assert_true(api_tenant_owns_as("admin", "::acme:billing"));
    assert_true(api_tenant_owns_as(NULL, "::acme:billing"));
    assert_int_equal(api_tenant_prefix_len("::acme:billing"), 7);
    assert_int_equal(api_tenant_prefix_len("billing"), 0);
    assert_int_equal(api_tenant_prefix_len("::noend"), 0);
    assert_int_equal(api_tenant_prefix_len(""), 0);
}

static void test_names_in_and_out_round_trip_and_refuse_the_mark(void **s) {
    reel_status_t st = REEL_STATUS_INIT;
    const char *name;
    char *owned;

    (void)s;
    assert_int_equal(api_tenant_name_in_as("acme", "app", "billing", 256,
                                           &owned, &name, &st),
                     REEL_OK);
    assert_string_equal(name, "::acme:billing");
    assert_string_equal(api_tenant_name_out_as("acme", name), "billing");
    /* Another tenant's stored name is not stripped for acme. */
    assert_string_equal(api_tenant_name_out_as("beta", name),
                        "::acme:billing");
    free(owned);
    assert_int_equal(api_tenant_name_in_as("default", "app", "billing", 256,
                                           &owned, &name, &st),
                     REEL_OK);
    assert_null(owned);
    assert_string_equal(name, "billing");
    for (int i = 0; i < 2; i++) {
        assert_int_equal(api_tenant_name_in_as(i ? "default" : "acme",
                                               "consumer", "::beta:x", 128,
                                               &owned, &name, &st),
                         REEL_INVALID_ARGUMENT);
        assert_non_null(strstr(reel_status_message(&st), "consumer"));
        assert_non_null(strstr(reel_status_message(&st), "reserved"));
    }
    /* The limit counts the prefix and is said as the tenant sees it. */
    assert_int_equal(api_tenant_name_in_as("acme", "app",
                                           "0123456789", 16, &owned, &name,
                                           &st),
                     REEL_INVALID_ARGUMENT);
    assert_non_null(
        strstr(reel_status_message(&st), "1-9 bytes for tenant acme"));
    reel_status_fini(&st);
}

static void test_a_tenants_pattern_gets_its_prefix_on_the_second_token(
    void **s) {
    reel_status_t st = REEL_STATUS_INIT;
    const char *pat;
    char *owned, *back;

    (void)s;
    static const char *const cases[][2] = {
        {"run.01ABC.RUNNABLE", "run.::acme:01ABC.RUNNABLE"},
        {"journal.01ABC.>", "journal.::acme:01ABC.>"},
        {"signal.01ABC.*.sent", "signal.::acme:01ABC.*.sent"},
        {"kv.orders.>", "kv.::acme:orders.>"},
        {"*.orders", "*.::acme:orders"},
        {"run.*.RUNNABLE", "run.*.RUNNABLE"},
        {">", ">"},
        {"run.>", "run.>"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(*cases); i++) {
        assert_int_equal(api_tenant_pattern_in_as("acme", cases[i][0],
                                                  &owned, &pat, &st),
                         REEL_OK);
        assert_string_equal(pat, cases[i][1]);
        back = api_tenant_pattern_out_as("acme", pat);
        assert_string_equal(back, cases[i][0]);
        free(back);
        free(owned);
    }
    /* default and admin: as given. */
    assert_int_equal(api_tenant_pattern_in_as("default", "run.01ABC.>",
                                              &owned, &pat, &st),
                     REEL_OK);
    assert_string_equal(pat, "run.01ABC.>");
    assert_int_equal(api_tenant_pattern_in_as("admin", "run.::beta:01ABC.>",
                                              &owned, &pat, &st),
                     REEL_OK);
    assert_string_equal(pat, "run.::beta:01ABC.>");
    for (int i = 0; i < 2; i++)
        assert_int_equal(api_tenant_pattern_in_as(i ? "default" : "acme",
                                                  "run.::beta:01ABC.>",
                                                  &owned, &pat, &st),
                         REEL_INVALID_ARGUMENT);
    reel_status_fini(&st);
}

/* A stored event with a body naming name (a Run's app or a Value's
 * namespace), packed into buf. */
static size_t body_event(const char *subject, int run, const char *name,
                         uint8_t *buf) {
    Reel__V1__Event ev = REEL__V1__EVENT__INIT;
    Reel__V1__Run r = REEL__V1__RUN__INIT;
    Reel__V1__ValueEvent v = REEL__V1__VALUE_EVENT__INIT;
    Reel__V1__JournalEntry e = REEL__V1__JOURNAL_ENTRY__INIT;

    ev.revision = 7;
    ev.subject = (char *)subject;
    if (run == 1) {
        r.run_id = "01ABC";
        r.app = (char *)name;
        ev.body_case = REEL__V1__EVENT__BODY_RUN;
        ev.run = &r;
    } else if (run == 2) {
        e.run_id = "01ABC";
        e.kind = "step";
        ev.body_case = REEL__V1__EVENT__BODY_ENTRY;
        ev.entry = &e;
    } else {
        v.namespace_ = (char *)name;
        v.key = "k";
        ev.body_case = REEL__V1__EVENT__BODY_VALUE;
        ev.value = &v;
    }
    return reel__v1__event__pack(&ev, buf);
}

static void test_a_tenant_sees_its_own_run_events_as_it_named_them(void **s) {
    uint8_t buf[512], *out;
    size_t n, olen;
    Reel__V1__Event *ev;

    (void)s;
    n = body_event("run.::acme:01ABC.RUNNABLE", 1, "::acme:billing", buf);
    assert_int_equal(api_tenant_event_is_scoped(buf, n), 1);
    assert_int_equal(api_tenant_event_out_as("acme", buf, n, &out, &olen), 1);
    ev = reel__v1__event__unpack(NULL, olen, out);
    assert_non_null(ev);
    assert_string_equal(ev->subject, "run.01ABC.RUNNABLE");
    assert_string_equal(ev->run->app, "billing");
    assert_int_equal(ev->revision, 7);
    reel__v1__event__free_unpacked(ev, NULL);
    free(out);
    /* Not beta's, nor one whose tenant only starts like it. */
    assert_int_equal(api_tenant_event_out_as("beta", buf, n, &out, &olen), 0);
    assert_int_equal(api_tenant_event_out_as("acm", buf, n, &out, &olen), 0);
    /* A journal entry: the subject only. */
    n = body_event("journal.::acme:01ABC.step", 2, NULL, buf);
    assert_int_equal(api_tenant_event_is_scoped(buf, n), 1);
    assert_int_equal(api_tenant_event_out_as("acme", buf, n, &out, &olen), 1);
    ev = reel__v1__event__unpack(NULL, olen, out);
    assert_string_equal(ev->subject, "journal.01ABC.step");
    assert_string_equal(ev->entry->run_id, "01ABC");
    reel__v1__event__free_unpacked(ev, NULL);
    free(out);
    /* The default tenant's run: no tenant's, and none for acme. */
    n = body_event("signal.01ABC.go.sent", 2, NULL, buf);
    assert_int_equal(api_tenant_event_is_scoped(buf, n), 0);
    assert_int_equal(api_tenant_event_out_as("acme", buf, n, &out, &olen), 0);
    n = body_event("kv.::acme:orders.k", 0, "::acme:orders", buf);
    assert_int_equal(api_tenant_event_out_as("acme", buf, n, &out, &olen), 1);
    ev = reel__v1__event__unpack(NULL, olen, out);
    assert_string_equal(ev->subject, "kv.orders.k");
    assert_string_equal(ev->value->namespace_, "orders");
    reel__v1__event__free_unpacked(ev, NULL);
    free(out);
}

static void test_errors_name_a_tenants_names_as_given(void **s) {
    reel_status_t st = REEL_STATUS_INIT;

    (void)s;
    reel_status_set(&st, REEL_NOT_FOUND,
                    "consumer ::acme:c1 not found (::acme:c1)");
    api_tenant_status_out_as("acme", &st);
    assert_string_equal(reel_status_message(&st),
                        "consumer c1 not found (c1)");
    reel_status_set(&st, REEL_NOT_FOUND, "session ::acme:a/u/s has no run");
    api_tenant_status_out_as("default", &st);
    assert_string_equal(reel_status_message(&st),
                        "session ::acme:a/u/s has no run");
    /* The tenant's own key "::acme:x" after its namespace stays whole;
     * a subject's token after its '.' does not. */
    reel_status_set(&st, REEL_NOT_FOUND,
                    "artifact ::acme:w/::acme:x: version 9 was never written");
    api_tenant_status_out_as("acme", &st);
    assert_string_equal(reel_status_message(&st),
                        "artifact w/::acme:x: version 9 was never written");
    reel_status_set(&st, REEL_INVALID_ARGUMENT, "kv.::acme:ns.k1::acme:y");
    api_tenant_status_out_as("acme", &st);
    assert_string_equal(reel_status_message(&st), "kv.ns.k1::acme:y");
    reel_status_fini(&st);
}

/* A namespace's "byte N" counts from the tenant's first byte, as the
 * default tenant's does; nothing is left allocated on a refusal. */
static void test_a_tenants_bad_namespace_byte_is_its_own(void **s) {
    reel_status_t st = REEL_STATUS_INIT;
    const char *name;
    char *owned;

    (void)s;
    assert_int_equal(api_tenant_charset_in_as("acme", "namespace", "a b", 256,
                                              "--kv-max-namespace-bytes",
                                              "A-Za-z0-9_:/-", &owned, &name,
                                              &st),
                     REEL_INVALID_ARGUMENT);
    assert_null(owned);
    assert_string_equal(reel_status_message(&st),
                        "namespace: byte 1 is not in [A-Za-z0-9_:/-]");
    assert_int_equal(api_tenant_charset_in_as("acme", "namespace", "ab", 256,
                                              "--kv-max-namespace-bytes",
                                              "A-Za-z0-9_:/-", &owned, &name,
                                              &st),
                     REEL_OK);
    assert_string_equal(name, "::acme:ab");
    free(owned);
    reel_status_fini(&st);
}

/* A tenant whose prefix "::T:" fills the namespace limit gets no token
 * (CreateToken), and one made before the limit was lowered is told so,
 * never "1-0 bytes". */
static void test_a_tenant_whose_prefix_fills_the_limit_is_refused_naming_it(
    void **s) {
    reel_status_t st = REEL_STATUS_INIT;
    const char *t20 = "tttttttttttttttttttt", *name;
    char *owned;

    (void)s;
    assert_int_equal(api_tenant_prefix_bytes_as(t20), 23);
    assert_int_equal(api_tenant_prefix_bytes_as("default"), 0);
    assert_int_equal(api_tenant_prefix_bytes_as("admin"), 0);
    assert_int_equal(api_tenant_check_room(t20, 16, "--kv-max-namespace-bytes",
                                           &st),
                     REEL_INVALID_ARGUMENT);
    assert_string_equal(
        reel_status_message(&st),
        "tenant: \"tttttttttttttttttttt\" is 20 bytes, and the prefix "
        "\"::tttttttttttttttttttt:\" its namespaces are stored under takes "
        "23, leaving 0 bytes for a namespace under --kv-max-namespace-bytes "
        "16 (at least 1 needed): a tenant may be at most 12 bytes there");
    /* The prefix exactly the limit: still no room. */
    assert_int_equal(api_tenant_check_room(t20, 23, "--kv-max-namespace-bytes",
                                           &st),
                     REEL_INVALID_ARGUMENT);
    /* One byte left is enough; no prefix needs no room. */
    assert_int_equal(api_tenant_check_room(t20, 24, "--kv-max-namespace-bytes",
                                           &st),
                     REEL_OK);
    assert_int_equal(api_tenant_check_room("abcdefghijkl", 16, "--x", &st),
                     REEL_OK);
    assert_int_equal(api_tenant_check_room("abcdefghijklm", 16, "--x", &st),
                     REEL_INVALID_ARGUMENT);
    for (int i = 0; i < 2; i++)
        assert_int_equal(api_tenant_check_room(i ? "admin" : "default", 1,
                                               "--x", &st),
                         REEL_OK);
    /* Under a limit no tenant with a prefix fits, it says so. */
    assert_int_equal(api_tenant_check_room("a", 4, "--x", &st),
                     REEL_INVALID_ARGUMENT);
    assert_non_null(strstr(reel_status_message(&st),
                           "only the default and admin tenants"));
    /* A token from before a lowered limit: each call says why. */
    assert_int_equal(api_tenant_charset_in_as(t20, "namespace", "n", 16,
                                              "--kv-max-namespace-bytes",
                                              "A-Za-z0-9_:/-", &owned, &name,
                                              &st),
                     REEL_INVALID_ARGUMENT);
    assert_null(owned);
    assert_null(strstr(reel_status_message(&st), "1-0 bytes"));
    assert_string_equal(reel_status_message(&st),
                        "namespace: tenant tttttttttttttttttttt's name leaves "
                        "no room under --kv-max-namespace-bytes 16: its names "
                        "are stored behind a prefix of 23 bytes (\"::\", the "
                        "tenant, \":\")");
    assert_int_equal(api_tenant_name_in_as("acme", "app", "n", 7, &owned,
                                           &name, &st),
                     REEL_INVALID_ARGUMENT);
    assert_null(strstr(reel_status_message(&st), "1-0 bytes"));
    assert_non_null(strstr(reel_status_message(&st), "leaves no room"));
    reel_status_fini(&st);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_a_tenants_events_are_told_by_their_second_token),
        cmocka_unit_test(test_malformed_bytes_are_no_tenants_and_read_in_bounds),
        cmocka_unit_test(
            test_every_service_but_the_token_methods_keeps_tenants_apart),
        cmocka_unit_test(test_a_stored_name_is_owned_by_its_tenant_only),
        cmocka_unit_test(test_names_in_and_out_round_trip_and_refuse_the_mark),
        cmocka_unit_test(
            test_a_tenants_pattern_gets_its_prefix_on_the_second_token),
        cmocka_unit_test(
            test_a_tenant_sees_its_own_run_events_as_it_named_them),
        cmocka_unit_test(test_errors_name_a_tenants_names_as_given),
        cmocka_unit_test(test_a_tenants_bad_namespace_byte_is_its_own),
        cmocka_unit_test(
            test_a_tenant_whose_prefix_fills_the_limit_is_refused_naming_it),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
