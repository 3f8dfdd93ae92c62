/*
 * api/module_test.c: reeld's module table: its checks, the WAL encoder's
 * dispatch by module id, and the writer's hooks going through the table
 * in order.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/module.h"
#include "api/services.h"
#include "reel/v1/wal.pb-c.h"

/* ---- Fake modules -------------------------------------------------------- */

static char calls[256]; /* the hooks that ran, in order */

static void note(const char *what) {
    strncat(calls, what, sizeof(calls) - strlen(calls) - 1);
}

/* Encodes every change as "a.<revision>" (an empty Event) ... */
static reel_code_t a_encode(const store_change_t *c, char **subject,
                            uint8_t **bytes, size_t *len, reel_status_t *st) {
    (void)st;
    if (asprintf(subject, "a.%llu", (unsigned long long)c->revision) < 0)
        abort();
    *bytes = malloc(1);
    *len = 0;
    return REEL_OK;
}

/* ... and this one under a token that is not its own. */
static reel_code_t stray_encode(const store_change_t *c, char **subject,
                                uint8_t **bytes, size_t *len,
                                reel_status_t *st) {
    (void)c, (void)st;
    *subject = strdup("kv.ns.k");
    *bytes = malloc(1);
    *len = 0;
    return REEL_OK;
}

static void a_publish(api_ctx_t *ctx, const store_change_t *c, size_t n) {
    (void)ctx, (void)c, (void)n;
    note("a");
}

static void b_publish(api_ctx_t *ctx, const store_change_t *c, size_t n) {
    (void)ctx, (void)c, (void)n;
    note("b");
}

static reel_code_t a_before(api_ctx_t *ctx, store_txn_t *txn,
                            const store_change_t *c, size_t n,
                            reel_status_t *st) {
    (void)ctx, (void)txn, (void)c, (void)n, (void)st;
    note("A");
    return REEL_OK;
}

static reel_code_t b_before(api_ctx_t *ctx, store_txn_t *txn,
                            const store_change_t *c, size_t n,
                            reel_status_t *st) {
    (void)ctx, (void)txn, (void)c, (void)n;
    note("B");
    return reel_status_set(st, REEL_UNAVAILABLE, "b refuses");
}

static void c_publish(api_ctx_t *ctx, const store_change_t *c, size_t n) {
    (void)ctx, (void)c, (void)n;
    note("c");
}

static reel_code_t c_before(api_ctx_t *ctx, store_txn_t *txn,
                            const store_change_t *c, size_t n,
                            reel_status_t *st) {
    (void)ctx, (void)txn, (void)c, (void)n, (void)st;
    note("C");
    return REEL_OK;
}

static const char *const a_subjects[] = {"a", NULL};
static const char *const b_subjects[] = {"b", "bb", NULL};
static const store_cf_desc_t a_cfs[] = {{"a1", STORE_CF_LOOKUP},
                                        {"a2", STORE_CF_PLAIN},
                                        {NULL, STORE_CF_PLAIN}};
static const store_cf_desc_t b_cfs[] = {{"b1", STORE_CF_TAIL},
                                        {NULL, STORE_CF_PLAIN}};

static const api_module_t mod_a = {
    .name = "a", .id = 7, .cfs = a_cfs, .subjects = a_subjects,
    .encode = a_encode, .before_commit = a_before, .publish = a_publish,
};
static const api_module_t mod_b = {
    .name = "b", .id = 8, .cfs = b_cfs, .subjects = b_subjects,
    .encode = stray_encode, .before_commit = b_before, .publish = b_publish,
};
static const api_module_t mod_c = {
    .name = "c", .before_commit = c_before, .publish = c_publish,
};

static reel_code_t s_start(api_ctx_t *ctx, reel_status_t *st) {
    (void)ctx, (void)st;
    note("s");
    return REEL_OK;
}

static reel_code_t t_start(api_ctx_t *ctx, reel_status_t *st) {
    (void)ctx, (void)st;
    note("t");
    return REEL_OK;
}

static reel_code_t s_ready(api_ctx_t *ctx, reel_status_t *st) {
    (void)ctx, (void)st;
    note("S");
    return REEL_OK;
}

/* A module that would commit a change as soon as it may (as the timers
 * do): its ready must come after every module's start. */
static const api_module_t mod_s = {
    .name = "s", .start = s_start, .ready = s_ready,
};
static const api_module_t mod_t = {.name = "t", .start = t_start};

/* ---- Tests --------------------------------------------------------------- */

static void test_the_table_gives_the_store_every_family(void **state) {
    const api_module_t *list[] = {&mod_a, &mod_c, &mod_b};
    api_ctx_t ctx = {0};
    reel_status_t st = REEL_STATUS_INIT;

    (void)state;
    assert_int_equal(api_modules_init(&ctx, list, 3, &st), REEL_OK);
    assert_ptr_equal(ctx.modules.cfs[0], a_cfs);
    assert_ptr_equal(ctx.modules.cfs[1], b_cfs);
    assert_null(ctx.modules.cfs[2]);
    assert_ptr_equal(ctx.modules.by_id[7], &mod_a);
    assert_ptr_equal(ctx.modules.by_id[8], &mod_b);
    assert_null(ctx.modules.by_id[0]);
}

static void expect_refused(const api_module_t *const *list, size_t n,
                           const char *why) {
    api_ctx_t ctx = {0};
    reel_status_t st = REEL_STATUS_INIT;

    assert_int_equal(api_modules_init(&ctx, list, n, &st), REEL_INTERNAL);
    if (strstr(reel_status_message(&st), why) == NULL)
        fail_msg("\"%s\" does not say \"%s\"", reel_status_message(&st), why);
    assert_int_equal(ctx.modules.n, 0);
    reel_status_fini(&st);
}

static void test_a_table_that_would_misroute_is_refused(void **state) {
    api_module_t same_name = mod_b, same_id = mod_b, same_token = mod_b;
    api_module_t same_cf = mod_b, no_encoder = mod_b, no_id = mod_c;
    api_module_t big_id = mod_b, no_subject = mod_b, bad_token = mod_b;
    static const char *const dup_token[] = {"x", "a", NULL};
    static const char *const dotted[] = {"b.c", NULL};
    static const store_cf_desc_t dup_cf[] = {{"a2", STORE_CF_PLAIN},
                                             {NULL, STORE_CF_PLAIN}};
    const api_module_t *many[API_MODULES_MAX + 1];

    (void)state;
    same_name.name = "a";
    expect_refused((const api_module_t *[]){&mod_a, &same_name}, 2,
                   "two modules are named \"a\"");
    same_id.id = 7;
    expect_refused((const api_module_t *[]){&mod_a, &same_id}, 2,
                   "modules a and b both have id 7");
    same_token.subjects = dup_token;
    expect_refused((const api_module_t *[]){&mod_a, &same_token}, 2,
                   "modules a and b both claim subject token \"a\"");
    same_cf.cfs = dup_cf;
    expect_refused((const api_module_t *[]){&mod_a, &same_cf}, 2,
                   "modules a and b both declare column family \"a2\"");
    no_encoder.encode = NULL;
    expect_refused((const api_module_t *[]){&no_encoder}, 1,
                   "module b: emits changes (id) but has no encoder");
    no_id.encode = a_encode;
    expect_refused((const api_module_t *[]){&no_id}, 1,
                   "module c: has an encoder but no id");
    big_id.id = API_MODULE_ID_MAX + 1;
    expect_refused((const api_module_t *[]){&big_id}, 1,
                   "module b: id 64 is past 63");
    no_subject.subjects = NULL;
    expect_refused((const api_module_t *[]){&no_subject}, 1,
                   "module b: emits changes but names no subject token");
    bad_token.subjects = dotted;
    expect_refused((const api_module_t *[]){&bad_token}, 1,
                   "module b: subject token \"b.c\" is not one token");
    for (size_t i = 0; i < API_MODULES_MAX + 1; i++)
        many[i] = &mod_c;
    expect_refused(many, API_MODULES_MAX + 1,
                   "the module table lists 17 modules; at most 16");
}

static reel_code_t encode(api_ctx_t *ctx, uint32_t module, uint32_t type,
                          const char *event, char **subject,
                          reel_status_t *st) {
    store_change_t c = {.revision = 42, .module = module, .type = type,
                        .event = event, .len = strlen(event)};
    uint8_t *bytes = NULL;
    size_t len = 0;
    reel_code_t rc = api_wal_encode(ctx, &c, subject, &bytes, &len, st);

    if (rc != REEL_OK) {
        assert_null(*subject);
        assert_null(bytes);
    }
    free(bytes);
    return rc;
}

/* A change of a module reeld does not run is INTERNAL, naming the id and
 * the revision (it was RESOURCE_EXHAUSTED, which says "retry"). */
static void test_the_wal_encoder_dispatches_by_module_id(void **state) {
    const api_module_t *list[] = {&api_kv_module, &mod_a, &mod_b, &mod_c};
    api_ctx_t ctx = {0};
    reel_status_t st = REEL_STATUS_INIT;
    char *subject = NULL;

    (void)state;
    assert_int_equal(api_modules_init(&ctx, list, 4, &st), REEL_OK);
    assert_int_equal(encode(&ctx, 7, 1, "", &subject, &st), REEL_OK);
    assert_string_equal(subject, "a.42");
    free(subject);

    assert_int_equal(encode(&ctx, 9, 1, "", &subject, &st), REEL_INTERNAL);
    assert_string_equal(reel_status_message(&st),
                        "cannot encode the WAL event of revision 42: no "
                        "module with id 9");
    assert_int_equal(encode(&ctx, 0, 1, "", &subject, &st), REEL_INTERNAL);
    assert_non_null(strstr(reel_status_message(&st), "no module with id 0"));
    assert_int_equal(encode(&ctx, 4000000000u, 1, "", &subject, &st),
                     REEL_INTERNAL);
    assert_non_null(
        strstr(reel_status_message(&st), "no module with id 4000000000"));

    /* The module's own errors, named. */
    assert_int_equal(encode(&ctx, KV_MODULE_ID, 1, "\x01", &subject, &st),
                     REEL_DATA_LOSS);
    assert_string_equal(reel_status_message(&st),
                        "cannot encode the WAL event of revision 42 (module "
                        "kv): the change does not decode");
    assert_int_equal(encode(&ctx, KV_MODULE_ID, 9, "", &subject, &st),
                     REEL_INTERNAL);
    assert_non_null(strstr(reel_status_message(&st),
                           "(module kv): unknown change type 9"));

    /* A subject outside the module's tokens is refused. */
    assert_int_equal(encode(&ctx, 8, 1, "", &subject, &st), REEL_INTERNAL);
    assert_non_null(strstr(reel_status_message(&st),
                           "(module b): its subject \"kv.ns.k\" is outside "
                           "the module's tokens"));
    reel_status_fini(&st);
}

/* The real modules' table, as reeld lists it, passes its own checks. */
static void test_reelds_modules_make_a_valid_table(void **state) {
    const api_module_t *list[] = {&api_kv_module, &api_journal_module,
                                  &api_signals_module, &api_wal_module};
    api_ctx_t ctx = {0};
    reel_status_t st = REEL_STATUS_INIT;
    size_t n = 0;

    (void)state;
    assert_int_equal(api_modules_init(&ctx, list, 4, &st), REEL_OK);
    for (size_t i = 0; ctx.modules.cfs[i] != NULL; i++)
        for (const store_cf_desc_t *d = ctx.modules.cfs[i]; d->name; d++)
            n++;
    assert_int_equal(n, 6); /* kv, kv_history, runs, journal, signals, wal */
}

static void test_the_writers_hooks_go_through_the_table_in_order(
    void **state) {
    const api_module_t *list[] = {&mod_c, &mod_a, &mod_b};
    api_ctx_t ctx = {0};
    reel_status_t st = REEL_STATUS_INIT;
    store_change_t c = {.revision = 1, .module = 7};

    (void)state;
    assert_int_equal(api_modules_init(&ctx, list, 3, &st), REEL_OK);
    calls[0] = '\0';
    api_publish(&ctx, &c, 1);
    assert_string_equal(calls, "cab");
    /* The first before_commit that fails stops the rest and fails the
     * group. */
    calls[0] = '\0';
    assert_int_equal(api_before_commit(&ctx, NULL, &c, 1, &st),
                     REEL_UNAVAILABLE);
    assert_string_equal(calls, "CAB");
    assert_string_equal(reel_status_message(&st), "b refuses");
    list[2] = &mod_c;
    list[0] = &mod_b;
    assert_int_equal(api_modules_init(&ctx, list, 3, &st), REEL_OK);
    calls[0] = '\0';
    assert_int_equal(api_before_commit(&ctx, NULL, &c, 1, &st),
                     REEL_UNAVAILABLE);
    assert_string_equal(calls, "B");
    reel_status_fini(&st);
}

static void test_ready_comes_after_every_modules_start(void **state) {
    const api_module_t *list[] = {&mod_s, &mod_t};
    api_ctx_t ctx = {0};
    reel_status_t st = REEL_STATUS_INIT;

    (void)state;
    assert_int_equal(api_modules_init(&ctx, list, 2, &st), REEL_OK);
    calls[0] = '\0';
    assert_int_equal(api_modules_start(&ctx, &st), REEL_OK);
    assert_string_equal(calls, "stS");
    /* reeld's timers arm in ready, not start: timers that fell due while
     * it was down commit only once the WAL (last) has started. */
    assert_non_null(api_timers_module.ready);
}

/* Until the WAL has started, a group with changes is refused (it would
 * commit revisions without events: holes in the WAL for good); one
 * without changes goes through. */
static void test_no_change_commits_before_the_wal_started(void **state) {
    api_ctx_t ctx = {0};
    reel_status_t st = REEL_STATUS_INIT;
    store_change_t c = {.revision = 12, .module = 1};

    (void)state;
    assert_int_equal(api_wal_module.before_commit(&ctx, NULL, &c, 1, &st),
                     REEL_INTERNAL);
    assert_non_null(strstr(reel_status_message(&st), "revision 12"));
    assert_non_null(
        strstr(reel_status_message(&st), "before the WAL started"));
    reel_status_fini(&st);
    assert_int_equal(api_wal_module.before_commit(&ctx, NULL, &c, 0, &st),
                     REEL_OK);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_the_table_gives_the_store_every_family),
        cmocka_unit_test(test_a_table_that_would_misroute_is_refused),
        cmocka_unit_test(test_the_wal_encoder_dispatches_by_module_id),
        cmocka_unit_test(test_reelds_modules_make_a_valid_table),
        cmocka_unit_test(test_the_writers_hooks_go_through_the_table_in_order),
        cmocka_unit_test(test_ready_comes_after_every_modules_start),
        cmocka_unit_test(test_no_change_commits_before_the_wal_started),
    };
    return cmocka_run_group_tests_name("module", tests, NULL, NULL);
}
