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

#include <string.h>

#include "api/services.h"
#include "auth/auth.h"

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

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_registered_method_has_a_scope),
        cmocka_unit_test(test_every_row_names_a_real_scope_once),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
