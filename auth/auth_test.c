/*
 * auth/auth_test.c: the token's form, creating, checking, expiring,
 * revoking and listing tokens, and what survives a restart.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth/auth.h"
#include "base/clock.h"
#include "testing/fixture.h"

typedef struct fixture {
    char dir[256];
    store_t *store;
    auth_t *auth;
} fixture_t;

static void open_all(fixture_t *f) {
    store_opts_t o = {0};
    reel_status_t st = REEL_STATUS_INIT;

    o.cfs = (const store_cf_desc_t *const[]){auth_cfs, NULL};
    f->store = testing_store_open(f->dir, &o);
    if (auth_create(f->store, &f->auth, &st) != REEL_OK)
        fail_msg("auth_create: %s", reel_status_message(&st));
}

static void close_all(fixture_t *f) {
    store_close(f->store);
    auth_destroy(f->auth);
    f->store = NULL;
    f->auth = NULL;
}

static int setup(void **state) {
    fixture_t *f = calloc(1, sizeof(*f));

    if (testing_dir_make(f->dir, sizeof(f->dir), "auth") != 0)
        return -1;
    open_all(f);
    *state = f;
    return 0;
}

static int teardown(void **state) {
    fixture_t *f = *state;
    int rc;

    close_all(f);
    rc = testing_dir_remove(f->dir);
    free(f);
    return rc;
}

static void make(fixture_t *f, const char *tenant, auth_scopes_t scopes,
                 int64_t ttl, char tok[AUTH_TOKEN_LEN + 1],
                 auth_info_t *info) {
    reel_status_t st = REEL_STATUS_INIT;

    if (auth_token_create(f->auth, tenant, scopes, "test", ttl, tok, info,
                          &st) != REEL_OK)
        fail_msg("create: %s", reel_status_message(&st));
}

static reel_code_t check(fixture_t *f, const char *tok, int64_t now,
                         auth_principal_t *who, char *msg, size_t cap) {
    reel_status_t st = REEL_STATUS_INIT;
    reel_code_t rc = auth_check(f->auth, tok, strlen(tok), now, who, &st);

    if (msg != NULL)
        snprintf(msg, cap, "%s", reel_status_message(&st));
    reel_status_fini(&st);
    return rc;
}

static void test_a_created_token_checks_with_its_tenant_and_scopes(void **s) {
    fixture_t *f = *s;
    char tok[AUTH_TOKEN_LEN + 1], id[AUTH_ID_LEN + 1];
    auth_info_t info;
    auth_principal_t who;

    make(f, "acme", AUTH_SCOPE(KV_READ) | AUTH_SCOPE(WAL_READ), 0, tok,
         &info);
    assert_int_equal(strlen(tok), AUTH_TOKEN_LEN);
    assert_int_equal(auth_token_parse(tok, strlen(tok), id), 0);
    assert_string_equal(id, info.id);
    assert_int_equal(check(f, tok, reel_clock_now_ms(), &who, NULL, 0),
                     REEL_OK);
    assert_string_equal(who.tenant, "acme");
    assert_string_equal(who.id, info.id);
    assert_int_equal(who.scopes, AUTH_SCOPE(KV_READ) | AUTH_SCOPE(WAL_READ));
}

static void test_a_wrong_secret_with_a_real_id_is_refused(void **s) {
    fixture_t *f = *s;
    char tok[AUTH_TOKEN_LEN + 1], msg[256];
    auth_info_t info;
    auth_principal_t who;

    make(f, "acme", AUTH_SCOPE(KV_READ), 0, tok, &info);
    /* Another valid spelling of a secret under the same id. */
    tok[AUTH_TOKEN_LEN - 2] = tok[AUTH_TOKEN_LEN - 2] == 'A' ? 'B' : 'A';
    assert_int_equal(check(f, tok, reel_clock_now_ms(), &who, msg,
                           sizeof(msg)),
                     REEL_UNAUTHENTICATED);
    assert_non_null(strstr(msg, "unknown or revoked"));
    assert_null(strstr(msg, tok + 6 + AUTH_ID_LEN)); /* no secret */
}

static void test_malformed_tokens_are_refused_without_echo(void **s) {
    fixture_t *f = *s;
    char msg[256];
    auth_principal_t who;
    const char *bad[] = {
        "", "reel_", "Bearer x", "reel_0123456789abcdef_short",
        /* uppercase hex id */
        "reel_0123456789ABCDEF_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        /* last character with its two padding bits set */
        "reel_0123456789abcdef_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAB",
        /* '=' padding and '+' are not base64url */
        "reel_0123456789abcdef_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        "reel_0123456789abcdef+AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
    };

    for (size_t i = 0; i < sizeof(bad) / sizeof(*bad); i++) {
        assert_int_equal(check(f, bad[i], 0, &who, msg, sizeof(msg)),
                         REEL_UNAUTHENTICATED);
        assert_non_null(strstr(msg, "not a reel token"));
    }
    /* Well-formed, unknown. */
    assert_int_equal(
        check(f, "reel_0123456789abcdef_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
              0, &who, msg, sizeof(msg)),
        REEL_UNAUTHENTICATED);
    assert_non_null(strstr(msg, "unknown or revoked token 0123456789abcdef"));
}

static void test_an_expired_token_is_refused_after_its_ttl(void **s) {
    fixture_t *f = *s;
    char tok[AUTH_TOKEN_LEN + 1], msg[256];
    auth_info_t info;
    auth_principal_t who;

    make(f, "acme", AUTH_SCOPE(KV_READ), 60000, tok, &info);
    assert_int_equal(info.expires_ms, info.created_ms + 60000);
    assert_int_equal(check(f, tok, info.expires_ms - 1, &who, NULL, 0),
                     REEL_OK);
    assert_int_equal(check(f, tok, info.expires_ms, &who, msg, sizeof(msg)),
                     REEL_UNAUTHENTICATED);
    assert_non_null(strstr(msg, "expired"));
    assert_int_equal(auth_is_live(f->auth, info.id, info.expires_ms), 0);
}

static void test_a_ttl_past_100_years_is_refused_and_the_longest_reopens(
    void **s) {
    fixture_t *f = *s;
    char tok[AUTH_TOKEN_LEN + 1];
    auth_info_t info;
    auth_principal_t who;
    reel_status_t st = REEL_STATUS_INIT;

    /* created_ms + ttl_ms once overflowed: the record stored a negative
     * expiry, the token was born expired, and the next open refused the
     * whole data dir. */
    assert_int_equal(auth_token_create(f->auth, "acme", AUTH_SCOPE(KV_READ),
                                       NULL, INT64_MAX, tok, &info, &st),
                     REEL_INVALID_ARGUMENT);
    assert_non_null(strstr(reel_status_message(&st),
                           "ttl_ms: 9223372036854775807 is not in "
                           "0..3155760000000"));
    assert_int_equal(auth_token_create(f->auth, "acme", AUTH_SCOPE(KV_READ),
                                       NULL, AUTH_TTL_MAX_MS + 1, tok, &info,
                                       &st),
                     REEL_INVALID_ARGUMENT);
    make(f, "acme", AUTH_SCOPE(KV_READ), AUTH_TTL_MAX_MS, tok, &info);
    assert_int_equal(info.expires_ms, info.created_ms + AUTH_TTL_MAX_MS);
    close_all(f);
    open_all(f);
    assert_int_equal(check(f, tok, reel_clock_now_ms(), &who, NULL, 0),
                     REEL_OK);
    assert_int_equal(who.expires_ms, info.expires_ms);
    reel_status_fini(&st);
}

static void test_revoked_tokens_fail_at_once_and_after_a_restart(void **s) {
    fixture_t *f = *s;
    char a[AUTH_TOKEN_LEN + 1], b[AUTH_TOKEN_LEN + 1];
    auth_info_t ia, ib, *list;
    auth_principal_t who;
    reel_status_t st = REEL_STATUS_INIT;
    size_t n;

    make(f, "acme", AUTH_SCOPE(KV_READ), 0, a, &ia);
    make(f, "beta", AUTH_SCOPE(ADMIN), 0, b, &ib);
    assert_int_equal(auth_count(f->auth), 2);
    assert_int_equal(auth_token_revoke(f->auth, ia.id, &st), REEL_OK);
    assert_int_equal(check(f, a, reel_clock_now_ms(), &who, NULL, 0),
                     REEL_UNAUTHENTICATED);
    assert_int_equal(auth_is_live(f->auth, ia.id, reel_clock_now_ms()), 0);
    assert_int_equal(auth_token_revoke(f->auth, ia.id, &st), REEL_NOT_FOUND);
    assert_non_null(strstr(reel_status_message(&st), ia.id));
    reel_status_fini(&st);
    assert_int_equal(auth_token_revoke(f->auth, "XYZ", &st),
                     REEL_INVALID_ARGUMENT);
    reel_status_fini(&st);

    close_all(f);
    open_all(f);
    assert_int_equal(check(f, a, reel_clock_now_ms(), &who, NULL, 0),
                     REEL_UNAUTHENTICATED);
    assert_int_equal(check(f, b, reel_clock_now_ms(), &who, NULL, 0),
                     REEL_OK);
    assert_string_equal(who.tenant, "beta");
    assert_int_equal(auth_token_list(f->auth, &list, &n, &st), REEL_OK);
    assert_int_equal(n, 1);
    assert_string_equal(list[0].id, ib.id);
    assert_string_equal(list[0].name, "test");
    free(list);
}

static void test_bad_tenants_scopes_and_names_name_the_field(void **s) {
    fixture_t *f = *s;
    char tok[AUTH_TOKEN_LEN + 1], longname[AUTH_NAME_MAX + 2];
    auth_info_t info;
    auth_scopes_t sc;
    reel_status_t st = REEL_STATUS_INIT;

    assert_int_equal(auth_token_create(f->auth, "Acme", AUTH_SCOPE(KV_READ),
                                       NULL, 0, tok, &info, &st),
                     REEL_INVALID_ARGUMENT);
    assert_non_null(strstr(reel_status_message(&st), "tenant"));
    assert_int_equal(auth_token_create(f->auth, "-a", AUTH_SCOPE(KV_READ),
                                       NULL, 0, tok, &info, &st),
                     REEL_INVALID_ARGUMENT);
    assert_int_equal(auth_token_create(f->auth, "a", 0, NULL, 0, tok, &info,
                                       &st),
                     REEL_INVALID_ARGUMENT);
    assert_non_null(strstr(reel_status_message(&st), "scopes"));
    memset(longname, 'n', sizeof(longname) - 1);
    longname[sizeof(longname) - 1] = '\0';
    assert_int_equal(auth_token_create(f->auth, "a", AUTH_SCOPE(KV_READ),
                                       longname, 0, tok, &info, &st),
                     REEL_INVALID_ARGUMENT);
    assert_non_null(strstr(reel_status_message(&st), "name"));
    assert_int_equal(auth_token_create(f->auth, "a", AUTH_SCOPE(KV_READ),
                                       "ci\nINFO forged line", 0, tok, &info,
                                       &st),
                     REEL_INVALID_ARGUMENT);
    assert_non_null(strstr(reel_status_message(&st),
                           "name: byte 2 starts a control character"));
    /* C1 controls and bidirectional overrides steer a terminal, or turn
     * the rest of a log line around, as well. */
    assert_int_equal(auth_token_create(f->auth, "a", AUTH_SCOPE(KV_READ),
                                       "ci\xc2\x85next", 0, tok, &info, &st),
                     REEL_INVALID_ARGUMENT);
    assert_non_null(strstr(reel_status_message(&st), "name: byte 2 starts"));
    assert_int_equal(auth_token_create(f->auth, "a", AUTH_SCOPE(KV_READ),
                                       "abc\xe2\x80\xae" "cba", 0, tok, &info,
                                       &st),
                     REEL_INVALID_ARGUMENT);
    assert_non_null(strstr(reel_status_message(&st), "name: byte 3 starts"));
    assert_int_equal(auth_token_create(f->auth, "a", AUTH_SCOPE(KV_READ),
                                       "\xe2\x81\xa6x", 0, tok, &info, &st),
                     REEL_INVALID_ARGUMENT);
    /* U+2028 breaks the line for a JSON reader or a log viewer. */
    assert_int_equal(auth_token_create(f->auth, "a", AUTH_SCOPE(KV_READ),
                                       "a\xe2\x80\xa8" "b", 0, tok, &info,
                                       &st),
                     REEL_INVALID_ARGUMENT);
    assert_non_null(strstr(reel_status_message(&st), "name: byte 1 starts"));
    /* Other text outside ASCII is a name like any. */
    assert_int_equal(auth_token_create(f->auth, "a", AUTH_SCOPE(KV_READ),
                                       "caf\xc3\xa9 \xe2\x80\x94 \xe2\x9c\x93",
                                       0, tok, &info, &st),
                     REEL_OK);
    assert_int_equal(auth_scopes_parse("scope", "kv:read,kv:nope", &sc, &st),
                     REEL_INVALID_ARGUMENT);
    assert_non_null(strstr(reel_status_message(&st), "\"kv:nope\""));
    assert_int_equal(auth_scopes_parse("scope", "", &sc, &st),
                     REEL_INVALID_ARGUMENT);
    assert_int_equal(auth_scopes_parse("scope", "kv:read,admin", &sc, &st),
                     REEL_OK);
    assert_int_equal(sc, AUTH_SCOPE(KV_READ) | AUTH_SCOPE(ADMIN));
    assert_int_equal(auth_count(f->auth), 1); /* the one good name */
    reel_status_fini(&st);
}

static void test_bearer_takes_the_scheme_in_any_case(void **s) {
    size_t n;
    const char *t;

    (void)s;
    t = auth_bearer("Bearer abc", 10, &n);
    assert_non_null(t);
    assert_int_equal(n, 3);
    assert_non_null(auth_bearer("bearer abc", 10, &n));
    assert_null(auth_bearer("Basic abc", 9, &n));
    assert_null(auth_bearer("Bearer", 6, &n));
}

static void test_a_new_token_works_only_once_stored_and_only_once(void **s) {
    fixture_t *f = *s;
    reel_status_t st = REEL_STATUS_INIT;
    char tok[AUTH_TOKEN_LEN + 1];
    auth_info_t info;
    auth_principal_t who;

    assert_int_equal(auth_token_new(tok, &st), REEL_OK);
    assert_int_equal(strlen(tok), AUTH_TOKEN_LEN);
    /* Made, not stored: unknown, and nothing counted. */
    assert_int_equal(check(f, tok, reel_clock_now_ms(), &who, NULL, 0),
                     REEL_UNAUTHENTICATED);
    assert_int_equal(auth_count(f->auth), 0);
    assert_int_equal(auth_token_store(f->auth, "admin", AUTH_SCOPE(ADMIN),
                                      "first", 0, tok, &info, &st),
                     REEL_OK);
    assert_int_equal(check(f, tok, reel_clock_now_ms(), &who, NULL, 0),
                     REEL_OK);
    assert_string_equal(who.tenant, "admin");
    /* The same token again, and one that is not a token. */
    assert_int_equal(auth_token_store(f->auth, "admin", AUTH_SCOPE(ADMIN),
                                      "again", 0, tok, &info, &st),
                     REEL_ALREADY_EXISTS);
    reel_status_fini(&st);
    assert_int_equal(auth_token_store(f->auth, "admin", AUTH_SCOPE(ADMIN),
                                      "bad", 0, "reel_nonsense", &info, &st),
                     REEL_INVALID_ARGUMENT);
    assert_non_null(strstr(reel_status_message(&st), "token"));
    reel_status_fini(&st);
    assert_int_equal(auth_count(f->auth), 1);
    /* Stored durably: still there after a restart. */
    close_all(f);
    open_all(f);
    assert_int_equal(check(f, tok, reel_clock_now_ms(), &who, NULL, 0),
                     REEL_OK);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(
            test_a_created_token_checks_with_its_tenant_and_scopes, setup,
            teardown),
        cmocka_unit_test_setup_teardown(
            test_a_wrong_secret_with_a_real_id_is_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_malformed_tokens_are_refused_without_echo, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_an_expired_token_is_refused_after_its_ttl, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_a_ttl_past_100_years_is_refused_and_the_longest_reopens,
            setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_revoked_tokens_fail_at_once_and_after_a_restart, setup,
            teardown),
        cmocka_unit_test_setup_teardown(
            test_bad_tenants_scopes_and_names_name_the_field, setup,
            teardown),
        cmocka_unit_test_setup_teardown(
            test_a_new_token_works_only_once_stored_and_only_once, setup,
            teardown),
        cmocka_unit_test(test_bearer_takes_the_scheme_in_any_case),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
