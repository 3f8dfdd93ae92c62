/*
 * api/auth_test.c: the method-to-scope table covers every method reeld
 * registers (a method without a row could be called by no token, so a new
 * RPC must get its row before it merges), and names only real scopes.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/services.h"
#include "api/tenant.h"
#include "auth/auth.h"
#include "testing/fixture.h"

/* Every module reeld serves (keep in step with reeld.c's modules[]; the
 * e2e test_security.py matrix also calls every rpc of every .proto). */
static const api_module_t *const all[] = {
    &api_auth_module, &api_kv_module, &api_journal_module,
    &api_signals_module, &api_wal_module,
};

static void test_every_registered_method_has_a_scope(void **state) {
    api_ctx_t ctx;
    rpc_server_opts_t o = {0};
    reel_status_t st = REEL_STATUS_INIT;
    rpc_server_t *srv;
    const rpc_method_t *m;
    size_t n, missing = 0;

    (void)state;
    memset(&ctx, 0, sizeof(ctx));
    o.listen = "127.0.0.1:0";
    srv = rpc_server_create(&o);
    assert_non_null(srv);
    assert_int_equal(
        api_modules_init(&ctx, all, sizeof(all) / sizeof(*all), &st),
        REEL_OK);
    assert_int_equal(api_health_register(srv, &ctx), 0);
    assert_int_equal(api_admin_register(srv, &ctx), 0);
    assert_int_equal(api_modules_serve(srv, &ctx), 0);
    m = rpc_server_methods(srv, &n);
    assert_true(n >= 30);
    for (size_t i = 0; i < n; i++)
        if (api_scope_rule(m[i].path) == NULL) {
            print_error("%s has no row in api/auth_service.c's table\n",
                        m[i].path);
            missing++;
        }
    assert_int_equal(missing, 0);
    rpc_server_destroy(srv);
    api_health_destroy(&ctx);
    api_modules_destroy(&ctx);
}

static void test_every_row_names_a_real_scope_once(void **state) {
    size_t n;
    const api_scope_rule_t *r = api_scope_rules(&n);

    (void)state;
    for (size_t i = 0; i < n; i++) {
        assert_true(r[i].rule >= -2 && r[i].rule < AUTH_SCOPE__COUNT);
        assert_ptr_equal(api_scope_rule(r[i].path), &r[i]);
    }
    assert_null(api_scope_rule("/reel.v1.KV/NoSuchMethod"));
}

/* Authorizes path with tok against ctx: the code, message into msg. */
static reel_code_t authz(api_ctx_t *ctx, const char *path, const char *tok,
                         char *msg, size_t cap) {
    char val[256];
    void *who = NULL;
    reel_status_t st = REEL_STATUS_INIT;
    reel_code_t rc;

    snprintf(val, sizeof(val), "Bearer %s", tok);
    rc = api_authorize(ctx, path, val, strlen(val), 1, &who, &st);
    snprintf(msg, cap, "%s", reel_status_message(&st));
    reel_status_fini(&st);
    free(who);
    return rc;
}

/* ctx with an empty token table in a fresh dir (name), nothing else. */
static void ctx_open(api_ctx_t *ctx, char *dir, size_t cap, const char *name) {
    store_opts_t o = {0};
    reel_status_t st = REEL_STATUS_INIT;

    memset(ctx, 0, sizeof(*ctx));
    assert_int_equal(testing_dir_make(dir, cap, name), 0);
    o.cfs = (const store_cf_desc_t *const[]){auth_cfs, NULL};
    ctx->store = testing_store_open(dir, &o);
    assert_int_equal(auth_create(ctx->store, &ctx->auth, &st), REEL_OK);
}

static void ctx_close(api_ctx_t *ctx, const char *dir) {
    api_tenant_calls_destroy(ctx->tenant_calls);
    store_close(ctx->store);
    auth_destroy(ctx->auth);
    assert_int_equal(testing_dir_remove(dir), 0);
}

/* A token of tenant holding scope admin (of its own names, for a tenant
 * other than default and admin) into tok. */
static void make_token(api_ctx_t *ctx, const char *tenant,
                       char tok[AUTH_TOKEN_LEN + 1]) {
    auth_info_t info;
    reel_status_t st = REEL_STATUS_INIT;

    assert_int_equal(auth_token_create(ctx->auth, tenant, AUTH_SCOPE(ADMIN),
                                       NULL, 0, tok, &info, &st),
                     REEL_OK);
}

static void test_a_tenant_reaches_only_what_keeps_tenants_apart(
    void **state) {
    char dir[256], tok[AUTH_TOKEN_LEN + 1], adm[AUTH_TOKEN_LEN + 1], msg[256];
    api_ctx_t ctx;
    size_t n;
    const api_scope_rule_t *r = api_scope_rules(&n);

    (void)state;
    ctx_open(&ctx, dir, sizeof(dir), "authz");
    make_token(&ctx, "acme", tok);
    make_token(&ctx, "admin", adm);
    for (size_t i = 0; i < n; i++) {
        int apart = api_tenant_keeps_apart(r[i].path);

        if (r[i].rule == -2)
            continue;
        if (apart) {
            assert_true(strncmp(r[i].path, "/reel.v1.Admin/", 15) != 0 ||
                        strcmp(r[i].path, "/reel.v1.Admin/GetStatus") == 0);
            assert_int_equal(authz(&ctx, r[i].path, tok, msg, sizeof(msg)),
                             REEL_OK);
        } else {
            assert_int_equal(authz(&ctx, r[i].path, tok, msg, sizeof(msg)),
                             REEL_PERMISSION_DENIED);
            /* Only the token methods: admin's, never a tenant's. */
            assert_int_equal(strncmp(r[i].path, "/reel.v1.Admin/", 15), 0);
            assert_non_null(strstr(msg, "is not a tenant's to call"));
            assert_non_null(strstr(msg, "tenant acme"));
        }
        assert_int_equal(authz(&ctx, r[i].path, adm, msg, sizeof(msg)),
                         REEL_OK);
    }
    /* Fails closed: a method without a row, even for admin. */
    assert_int_equal(authz(&ctx, "/reel.v1.X/New", adm, msg, sizeof(msg)),
                     REEL_PERMISSION_DENIED);
    assert_non_null(strstr(msg, "has no scope"));
    ctx_close(&ctx, dir);
}

/* A tenant's unary writes in flight are at most --write-queue-per-tenant:
 * past it RESOURCE_EXHAUSTED, worded as a full write queue; a call freed
 * gives its place back; reads, other tenants and the operator's tenants
 * are not counted. */
static void test_a_tenants_writes_in_flight_are_capped(void **state) {
    char dir[256], acme[AUTH_TOKEN_LEN + 1], beta[AUTH_TOKEN_LEN + 1];
    char adm[AUTH_TOKEN_LEN + 1], val[256];
    api_ctx_t ctx;
    reel_status_t st = REEL_STATUS_INIT;
    void *held[2] = {NULL, NULL}, *who;
    const char *set = "/reel.v1.KV/SetValue";

    (void)state;
    ctx_open(&ctx, dir, sizeof(dir), "writes");
    assert_non_null(ctx.tenant_calls = api_tenant_calls_create(1000, 2));
    make_token(&ctx, "acme", acme);
    make_token(&ctx, "beta", beta);
    make_token(&ctx, "admin", adm);
    snprintf(val, sizeof(val), "Bearer %s", acme);
    for (int i = 0; i < 2; i++)
        assert_int_equal(api_authorize(&ctx, set, val, strlen(val), 1, &held[i],
                                       &st), REEL_OK);
    who = NULL;
    assert_int_equal(api_authorize(&ctx, "/reel.v1.Journal/Append", val,
                                   strlen(val), 1, &who, &st),
                     REEL_RESOURCE_EXHAUSTED);
    assert_null(who);
    assert_string_equal(reel_status_message(&st),
                        "write queue is full for tenant acme (2 of its writes "
                        "in flight, at most 2: --write-queue-per-tenant); "
                        "retry later");
    reel_status_fini(&st);
    /* Not counted: a read, a long poll, another tenant, admin. */
    for (int i = 0; i < 3; i++) {
        char msg[256];

        assert_int_equal(authz(&ctx, "/reel.v1.KV/GetValue", acme, msg,
                               sizeof(msg)), REEL_OK);
        assert_int_equal(authz(&ctx, "/reel.v1.Journal/ClaimNextRun", acme,
                               msg, sizeof(msg)), REEL_OK);
        assert_int_equal(authz(&ctx, set, adm, msg, sizeof(msg)), REEL_OK);
    }
    who = NULL;
    snprintf(val, sizeof(val), "Bearer %s", beta);
    assert_int_equal(api_authorize(&ctx, set, val, strlen(val), 1, &who, &st),
                     REEL_OK);
    api_principal_free(&ctx, who);
    /* A call freed gives its place back. */
    api_principal_free(&ctx, held[0]);
    snprintf(val, sizeof(val), "Bearer %s", acme);
    assert_int_equal(api_authorize(&ctx, set, val, strlen(val), 1, &held[0],
                                   &st), REEL_OK);
    api_principal_free(&ctx, held[0]);
    api_principal_free(&ctx, held[1]);
    ctx_close(&ctx, dir);
}

/* A tenant's calls open, streams and long polls included, are at most
 * --max-calls-per-tenant; a freed call gives its place back; the admin
 * tenant is not counted. */
static void test_a_tenants_open_calls_are_capped(void **state) {
    char dir[256], acme[AUTH_TOKEN_LEN + 1], adm[AUTH_TOKEN_LEN + 1];
    char val[256], msg[256];
    api_ctx_t ctx;
    reel_status_t st = REEL_STATUS_INIT;
    void *held[3] = {NULL, NULL, NULL}, *who = NULL;
    const char *paths[3] = {"/reel.v1.KV/WatchValue",
                            "/reel.v1.Wal/SubscribeEvents",
                            "/reel.v1.Signals/AwaitSignal"};

    (void)state;
    ctx_open(&ctx, dir, sizeof(dir), "calls");
    assert_non_null(ctx.tenant_calls = api_tenant_calls_create(3, 1024));
    make_token(&ctx, "acme", acme);
    make_token(&ctx, "admin", adm);
    snprintf(val, sizeof(val), "Bearer %s", acme);
    for (int i = 0; i < 3; i++)
        assert_int_equal(api_authorize(&ctx, paths[i], val, strlen(val), 1,
                                       &held[i], &st), REEL_OK);
    assert_int_equal(api_authorize(&ctx, "/reel.v1.KV/GetValue", val,
                                   strlen(val), 1, &who, &st),
                     REEL_RESOURCE_EXHAUSTED);
    assert_null(who);
    assert_non_null(strstr(reel_status_message(&st),
                           "tenant acme has 3 calls open, at most 3 "
                           "(--max-calls-per-tenant)"));
    reel_status_fini(&st);
    for (int i = 0; i < 5; i++)
        assert_int_equal(authz(&ctx, paths[0], adm, msg, sizeof(msg)),
                         REEL_OK);
    api_principal_free(&ctx, held[1]);
    assert_int_equal(api_authorize(&ctx, "/reel.v1.KV/SetValue", val,
                                   strlen(val), 1, &held[1], &st), REEL_OK);
    for (int i = 0; i < 3; i++)
        api_principal_free(&ctx, held[i]);
    ctx_close(&ctx, dir);
}

/* Only unary calls that queue a write at once are counted: never a
 * stream, a long poll or a read. */
static void test_only_writes_are_counted_as_writes(void **state) {
    size_t n;
    const api_scope_rule_t *r = api_scope_rules(&n);

    (void)state;
    for (size_t i = 0; i < n; i++) {
        if (!r[i].write)
            continue;
        assert_true(r[i].rule == AUTH_SCOPE_BIT_KV_WRITE ||
                    r[i].rule == AUTH_SCOPE_BIT_JOURNAL_WRITE ||
                    r[i].rule == AUTH_SCOPE_BIT_SIGNALS_SEND ||
                    r[i].rule == AUTH_SCOPE_BIT_WAL_CONSUME ||
                    r[i].rule == AUTH_SCOPE_BIT_WORKSPACE_WRITE);
        assert_null(strstr(r[i].path, "ClaimNextRun"));
        assert_null(strstr(r[i].path, "PutArtifact"));
        assert_null(strstr(r[i].path, "/List"));
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_registered_method_has_a_scope),
        cmocka_unit_test(test_every_row_names_a_real_scope_once),
        cmocka_unit_test(
            test_a_tenant_reaches_only_what_keeps_tenants_apart),
        cmocka_unit_test(test_a_tenants_writes_in_flight_are_capped),
        cmocka_unit_test(test_a_tenants_open_calls_are_capped),
        cmocka_unit_test(test_only_writes_are_counted_as_writes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
