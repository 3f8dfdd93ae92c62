/*
 * kv/kv_test.c: versions, CAS, tombstones, history and watches.
 *
 * Each test opens a store and a kv in a fresh temporary data dir. Watches
 * deliver into a test sink that holds at most `limit` events before saying
 * it is full, so tests can stall a watcher and let it catch up; grouped
 * watches share one deliver_group() that a test can make refuse.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/clock.h"
#include "base/codec.h"
#include "base/fault.h"
#include "kv/kv.h"
#include "testing/fixture.h"

/* ---- Fixture ------------------------------------------------------------ */

typedef struct fixture {
    char dir[512];
    store_t *store;
    kv_t *kv;
    uint32_t keep;
    int64_t deleted_ms; /* deleted_history_ms, when not 0 */
} fixture_t;

static void publish(void *arg, const store_change_t *c, size_t n) {
    fixture_t *f = arg;

    if (f->kv != NULL)
        kv_publish(f->kv, c, n);
}

static void open_all(fixture_t *f) {
    store_opts_t o = {0};
    kv_limits_t lim = kv_limits_default();
    reel_status_t st = REEL_STATUS_INIT;

    o.cfs = (const store_cf_desc_t *const[]){kv_cfs, NULL};
    o.publish = publish;
    o.publish_arg = f;
    f->store = testing_store_open(f->dir, &o);
    lim.history_keep = f->keep;
    if (f->deleted_ms != 0) {
        lim.deleted_history_ms = f->deleted_ms;
        lim.purge_interval_ms = 10;
    }
    if (kv_create(f->store, &lim, &f->kv, &st) != REEL_OK)
        fail_msg("kv_create: %s", reel_status_message(&st));
}

static void close_all(fixture_t *f) {
    kv_stop(f->kv);
    store_close(f->store);
    kv_destroy(f->kv);
    f->store = NULL;
    f->kv = NULL;
}

static int setup_keep(void **state, uint32_t keep) {
    fixture_t *f = calloc(1, sizeof(*f));

    if (testing_dir_make(f->dir, sizeof(f->dir), "kv") != 0)
        return -1;
    f->keep = keep;
    open_all(f);
    *state = f;
    return 0;
}

static int setup(void **state) { return setup_keep(state, 100); }
static int setup_keep3(void **state) { return setup_keep(state, 3); }

/* A deleted key's history is purged 100 ms after its delete, looked for
 * every 10 ms. */
static int setup_purge(void **state) {
    fixture_t *f = calloc(1, sizeof(*f));

    if (testing_dir_make(f->dir, sizeof(f->dir), "kv") != 0)
        return -1;
    f->keep = 100;
    f->deleted_ms = 100;
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

/* ---- Helpers ------------------------------------------------------------ */

static reel_code_t set_full(kv_t *kv, const char *ns, const char *key,
                            const char *value, kv_precond_t pc, uint64_t ev,
                            kv_write_result_t *res) {
    kv_write_args_t a = {0};

    a.ns = ns, a.ns_len = strlen(ns);
    a.key = key, a.key_len = strlen(key);
    a.value = value, a.value_len = strlen(value);
    a.writer = "test", a.writer_len = 4;
    a.precond = pc;
    a.expected_version = ev;
    return kv_write(kv, &a, res);
}

static uint64_t set_ok(kv_t *kv, const char *key, const char *value) {
    kv_write_result_t res;
    uint64_t v;

    if (set_full(kv, "ns", key, value, KV_PRECOND_NONE, 0, &res) != REEL_OK)
        fail_msg("set %s: %s", key, reel_status_message(&res.status));
    v = res.entry.version;
    kv_write_result_fini(&res);
    return v;
}

static reel_code_t del(kv_t *kv, const char *key, kv_write_result_t *res) {
    kv_write_args_t a = {0};

    a.is_delete = 1;
    a.ns = "ns", a.ns_len = 2;
    a.key = key, a.key_len = strlen(key);
    return kv_write(kv, &a, res);
}

static void del_ok(fixture_t *f, const char *key) {
    kv_write_result_t res;

    if (del(f->kv, key, &res) != REEL_OK)
        fail_msg("delete %s: %s", key, reel_status_message(&res.status));
    kv_write_result_fini(&res);
}

/* A copy of one event, as a test sees it. */
typedef struct rec {
    kv_event_type_t type;
    char key[64], value[64], prev[64];
    uint64_t version, prev_version, revision;
    int deleted;
} rec_t;

typedef struct sink {
    TESTING_SINK_HEAD; /* mu, n, limit (events held before full), ended */
    rec_t recs[4096];
    int wakes; /* times kv asked for a pump (mu) */
    struct group *group; /* deliver_group()'s shared state, or NULL */
} sink_t;

/* Call with s->mu held. */
static void sink_record(sink_t *s, const kv_event_t *ev) {
    rec_t *r = &s->recs[s->n];

    r->type = ev->type;
    snprintf(r->key, sizeof(r->key), "%s", ev->key);
    snprintf(r->value, sizeof(r->value), "%s", ev->value);
    snprintf(r->prev, sizeof(r->prev), "%s", ev->prev_value);
    r->version = ev->version;
    r->prev_version = ev->prev_version;
    r->revision = ev->revision;
    r->deleted = ev->deleted;
    testing_sink_add(&s->sink);
}

static int sink_deliver(void *arg, const kv_event_t *ev,
                        kv_sink_cache_t *cache) {
    sink_t *s = arg;
    int full;

    (void)cache;
    pthread_mutex_lock(&s->mu);
    full = testing_sink_hold(&s->sink, 4096);
    if (!full)
        sink_record(s, ev);
    pthread_mutex_unlock(&s->mu);
    return full;
}

/* Grouped watches' shared sink: counts its calls; `full` refuses them. */
typedef struct group {
    int full;
    size_t calls, watches; /* calls taken, and the watches they were for */
} group_t;

static int sink_deliver_group(void *const *args, size_t n,
                              const kv_event_t *ev, kv_sink_cache_t *cache) {
    group_t *g = ((sink_t *)args[0])->group;

    (void)cache;
    if (g->full)
        return 1;
    g->calls++;
    g->watches += n;
    for (size_t i = 0; i < n; i++) {
        sink_t *s = args[i];

        assert_ptr_equal(s->group, g);
        pthread_mutex_lock(&s->mu);
        sink_record(s, ev);
        pthread_mutex_unlock(&s->mu);
    }
    return 0;
}

static void sink_end(void *arg, const reel_status_t *st) {
    testing_sink_end(&((sink_t *)arg)->sink, st);
}

/* Under kv's locks: only counts; the test pumps as an owner would. */
static void sink_wake(void *arg) {
    sink_t *s = arg;

    pthread_mutex_lock(&s->mu);
    s->wakes++;
    pthread_mutex_unlock(&s->mu);
}

static const kv_watch_sink_t test_sink = {.deliver = sink_deliver,
                                          .deliver_group = sink_deliver_group,
                                          .end = sink_end,
                                          .wake = sink_wake};

static sink_t *sink_new(size_t limit) {
    sink_t *s = calloc(1, sizeof(*s));

    testing_sink_init(&s->sink, limit);
    return s;
}

static void sink_free(sink_t *s) {
    testing_sink_fini(&s->sink);
    free(s);
}

/* Waits (up to 5 s) until the sink has n events; returns how many it has. */
static size_t sink_wait(sink_t *s, size_t n) {
    return testing_sink_wait(&s->sink, n, TESTING_WAIT_MS);
}

static kv_watch_t *watch(fixture_t *f, const char *key, kv_watch_start_t start,
                         uint64_t from, sink_t *s, reel_code_t *rc_out,
                         reel_status_t *st) {
    kv_watch_args_t a = {0};
    kv_watch_t *w = NULL;
    reel_code_t rc;

    a.ns = "ns", a.ns_len = 2;
    a.key = key, a.key_len = strlen(key);
    a.start = start;
    a.from_version = start == KV_WATCH_FROM_VERSION ? from : 0;
    a.from_revision = start == KV_WATCH_FROM_REVISION ? from : 0;
    a.group = s->group;
    rc = kv_watch_create(f->kv, &a, &test_sink, s, &w, st);
    if (rc_out != NULL)
        *rc_out = rc;
    else if (rc != REEL_OK)
        fail_msg("watch %s: %s", key, reel_status_message(st));
    if (w != NULL)
        kv_watch_pump(w);
    return w;
}

/* ---- Writes, versions, CAS ---------------------------------------------- */

static void test_versions_grow_by_one_per_set_and_delete(void **state) {
    fixture_t *f = *state;
    kv_write_result_t res;
    kv_entry_t e;

    assert_int_equal(set_ok(f->kv, "k", "1"), 1);
    assert_int_equal(set_ok(f->kv, "k", "2"), 2);
    assert_int_equal(del(f->kv, "k", &res), REEL_OK);
    assert_true(res.existed);
    assert_int_equal(res.entry.version, 3);
    assert_true(res.entry.deleted);
    assert_int_equal(res.prev_version, 2);
    kv_write_result_fini(&res);

    /* A tombstone: not found, but its entry says deleted at version 3. */
    assert_int_equal(kv_get(f->kv, "ns", 2, "k", 1, &e, NULL), REEL_NOT_FOUND);
    assert_true(e.deleted);
    assert_int_equal(e.version, 3);
    kv_entry_fini(&e);

    /* A set after delete continues counting. */
    assert_int_equal(set_ok(f->kv, "k", "{\"a\":[1,2]}"), 4);
    assert_int_equal(kv_get(f->kv, "ns", 2, "k", 1, &e, NULL), REEL_OK);
    assert_string_equal(e.value, "{\"a\":[1,2]}");
    assert_string_equal(e.writer, "test");
    assert_false(e.deleted);
    assert_int_equal(e.revision, store_revision(f->store));
    kv_entry_fini(&e);
}

static void test_deleting_a_missing_key_writes_nothing(void **state) {
    fixture_t *f = *state;
    kv_write_result_t res;
    uint64_t rev;

    assert_int_equal(del(f->kv, "nothing", &res), REEL_OK);
    assert_false(res.existed);
    kv_write_result_fini(&res);
    set_ok(f->kv, "k", "1");
    del_ok(f, "k");
    rev = store_revision(f->store);
    assert_int_equal(del(f->kv, "k", &res), REEL_OK);
    assert_false(res.existed);
    assert_int_equal(res.entry.version, 2); /* the tombstone */
    kv_write_result_fini(&res);
    assert_int_equal(store_revision(f->store), rev);
}

static void test_create_only_on_a_live_key_is_already_exists(void **state) {
    fixture_t *f = *state;
    kv_write_result_t res;
    uint64_t rev;

    assert_int_equal(set_full(f->kv, "ns", "k", "1", KV_PRECOND_ABSENT, 0, &res),
                     REEL_OK);
    kv_write_result_fini(&res);
    rev = store_revision(f->store);
    assert_int_equal(set_full(f->kv, "ns", "k", "2", KV_PRECOND_ABSENT, 0, &res),
                     REEL_ALREADY_EXISTS);
    assert_non_null(strstr(reel_status_message(&res.status),
                           "key \"k\" already exists (current version 1)"));
    assert_int_equal(store_revision(f->store), rev);
    kv_write_result_fini(&res);
    /* After a delete, create-only works again. */
    del_ok(f, "k");
    assert_int_equal(set_full(f->kv, "ns", "k", "3", KV_PRECOND_ABSENT, 0, &res),
                     REEL_OK);
    assert_int_equal(res.entry.version, 3);
    kv_write_result_fini(&res);
}

static void test_stale_version_is_aborted_naming_the_current(void **state) {
    fixture_t *f = *state;
    kv_write_result_t res;

    assert_int_equal(set_full(f->kv, "ns", "k", "1", KV_PRECOND_VERSION, 0,
                              &res),
                     REEL_OK); /* version 0: the key must not exist */
    kv_write_result_fini(&res);
    set_ok(f->kv, "k", "2");
    assert_int_equal(set_full(f->kv, "ns", "k", "3", KV_PRECOND_VERSION, 1,
                              &res),
                     REEL_ABORTED);
    assert_non_null(strstr(reel_status_message(&res.status),
                           "expected version 1, current version 2"));
    kv_write_result_fini(&res);
    assert_int_equal(set_full(f->kv, "ns", "k", "3", KV_PRECOND_VERSION, 2,
                              &res),
                     REEL_OK);
    assert_int_equal(res.prev_version, 2);
    kv_write_result_fini(&res);
}

typedef struct incr_arg {
    kv_t *kv;
    int retries;
} incr_arg_t;

static void *incrementer(void *arg) {
    incr_arg_t *a = arg;

    for (int i = 0; i < 100; i++) {
        for (;;) {
            kv_entry_t e;
            kv_write_result_t res;
            uint64_t ver = 0;
            long n = 0;
            char buf[32];
            reel_code_t rc;

            if (kv_get(a->kv, "ns", 2, "counter", 7, &e, NULL) == REEL_OK) {
                n = strtol(e.value, NULL, 10);
                ver = e.version;
            }
            kv_entry_fini(&e);
            snprintf(buf, sizeof(buf), "%ld", n + 1);
            rc = set_full(a->kv, "ns", "counter", buf, KV_PRECOND_VERSION, ver,
                          &res);
            kv_write_result_fini(&res);
            if (rc == REEL_OK)
                break;
            if (rc != REEL_ABORTED)
                return (void *)1;
            a->retries++;
        }
    }
    return NULL;
}

static void test_concurrent_cas_increments_lose_no_update(void **state) {
    fixture_t *f = *state;
    pthread_t th[16];
    incr_arg_t args[16];
    kv_entry_t e;
    int retries = 0;

    for (int i = 0; i < 16; i++) {
        args[i] = (incr_arg_t){f->kv, 0};
        pthread_create(&th[i], NULL, incrementer, &args[i]);
    }
    for (int i = 0; i < 16; i++) {
        void *ret;
        pthread_join(th[i], &ret);
        assert_null(ret);
        retries += args[i].retries;
    }
    assert_int_equal(kv_get(f->kv, "ns", 2, "counter", 7, &e, NULL), REEL_OK);
    assert_string_equal(e.value, "1600");
    assert_int_equal(e.version, 1600);
    kv_entry_fini(&e);
    print_message("      (%d CAS retries)\n", retries);
}

static void expect_invalid(fixture_t *f, const char *ns, size_t ns_len,
                           const char *key, size_t key_len, const char *value,
                           size_t value_len, const char *needle) {
    kv_write_args_t a = {0};
    kv_write_result_t res;
    uint64_t rev = store_revision(f->store);

    a.ns = ns, a.ns_len = ns_len;
    a.key = key, a.key_len = key_len;
    a.value = value, a.value_len = value_len;
    assert_int_equal(kv_write(f->kv, &a, &res), REEL_INVALID_ARGUMENT);
    if (strstr(reel_status_message(&res.status), needle) == NULL)
        fail_msg("\"%s\" does not mention \"%s\"",
                 reel_status_message(&res.status), needle);
    kv_write_result_fini(&res);
    assert_int_equal(store_revision(f->store), rev);
}

static void test_bad_input_is_invalid_and_writes_nothing(void **state) {
    fixture_t *f = *state;
    size_t big = (1u << 20) + 1;
    char *huge = malloc(big + 1), *deep = malloc(4003), longns[300];
    kv_entry_t e;

    memset(huge, ' ', big);
    huge[0] = '1';
    huge[big] = '\0';
    for (int i = 0; i < 2000; i++) /* deeper than REEL_JSON_MAX_DEPTH */
        deep[i] = '[', deep[2000 + i] = ']';
    deep[4000] = '\0';
    memset(longns, 'n', sizeof(longns));

    expect_invalid(f, "ns", 2, "k", 1, "{bad", 4, "value: not valid JSON");
    expect_invalid(f, "ns", 2, "k", 1, "", 0, "value: not valid JSON");
    expect_invalid(f, "ns", 2, "k", 1, "1 2", 3, "value: not valid JSON");
    expect_invalid(f, "ns", 2, "k", 1, "1\0x", 3, "value: not valid JSON");
    expect_invalid(f, "ns", 2, "k", 1, "01", 2, "leading zero");
    expect_invalid(f, "ns", 2, "k", 1, "\"a\x01\"", 4, "control character");
    expect_invalid(f, "ns", 2, "k", 1, deep, 4000, "value: not valid JSON");
    expect_invalid(f, "ns", 2, "k", 1, huge, big, "limit of 1048576");
    expect_invalid(f, "ns", 2, "", 0, "1", 1, "key: must be 1-1024 bytes");
    expect_invalid(f, longns, 257, "k", 1, "1", 1,
                   "namespace: must be 1-256 bytes");
    expect_invalid(f, "", 0, "k", 1, "1", 1, "namespace");
    expect_invalid(f, "ns", 2, "a\0b", 3, "1", 1, "key: must be valid UTF-8");
    expect_invalid(f, "ns", 2, "\xc3\x28", 2, "1", 1, "key: must be valid");
    expect_invalid(f, "ns", 2, "\xed\xa0\x80", 3, "1", 1, "key: must be valid");
    expect_invalid(f, "ns", 2, "a.*.b", 5, "1", 1, "reserved");
    expect_invalid(f, "ns", 2, "a.>", 3, "1", 1, "reserved");
    assert_int_equal(kv_get(f->kv, "ns", 2, "k", 1, &e, NULL), REEL_NOT_FOUND);
    kv_entry_fini(&e);
    /* Fine: UTF-8, '/', '.', and '*' inside a token. */
    set_ok(f->kv, "caf\xc3\xa9/a.b*", "\"\xe2\x82\xac\"");
    free(huge);
    free(deep);
}

static void test_names_that_would_make_ambiguous_subjects_are_invalid(
    void **state) {
    fixture_t *f = *state;
    kv_write_result_t res;

    /* A namespace is one subject token: kv.a.b.c must not be both
     * (a, b.c) and (a.b, c). */
    expect_invalid(f, "a.b", 3, "c", 1, "1", 1,
                   "namespace: byte 1 is not in [A-Za-z0-9_:/-]");
    expect_invalid(f, "*", 1, "x", 1, "1", 1, "namespace: byte 0");
    expect_invalid(f, ">", 1, "x", 1, "1", 1, "namespace: byte 0");
    expect_invalid(f, "a b", 3, "x", 1, "1", 1, "namespace: byte 1");
    expect_invalid(f, "caf\xc3\xa9", 5, "x", 1, "1", 1, "namespace: byte 3");
    /* A key has no empty token. */
    expect_invalid(f, "ns", 2, "a..b", 4, "1", 1, "key: a token may not be "
                                                  "empty");
    expect_invalid(f, "ns", 2, ".a", 2, "1", 1, "key: a token may not be");
    expect_invalid(f, "ns", 2, "a.", 2, "1", 1, "key: a token may not be");
    expect_invalid(f, "ns", 2, ".", 1, "1", 1, "key: a token may not be");
    /* What the rules allow. */
    assert_int_equal(store_revision(f->store), 0);
    set_ok(f->kv, "b.c", "1");
    assert_int_equal(set_full(f->kv, "Tenant_1:app/x-y", "a.b", "1",
                              KV_PRECOND_NONE, 0, &res),
                     REEL_OK);
    kv_write_result_fini(&res);
}

static void expect_invalid_ns_on_reads(fixture_t *f, const char *ns) {
    size_t len = strlen(ns), n;
    kv_list_args_t la = {0};
    kv_watch_args_t wa = {0};
    kv_write_args_t da = {0};
    kv_write_result_t res;
    kv_watch_t *w = NULL;
    kv_entry_t e, *list;
    kv_event_t *evs;
    sink_t *s = sink_new(10);
    reel_status_t st = REEL_STATUS_INIT;
    int more;

    da.is_delete = 1;
    da.ns = ns, da.ns_len = len, da.key = "k", da.key_len = 1;
    assert_int_equal(kv_write(f->kv, &da, &res), REEL_INVALID_ARGUMENT);
    assert_non_null(strstr(reel_status_message(&res.status), "namespace"));
    kv_write_result_fini(&res);
    assert_int_equal(kv_get(f->kv, ns, len, "k", 1, &e, &st),
                     REEL_INVALID_ARGUMENT);
    assert_non_null(strstr(reel_status_message(&st), "namespace: byte"));
    assert_non_null(strstr(reel_status_message(&st), "[A-Za-z0-9_:/-]"));
    la.ns = ns, la.ns_len = len, la.prefix = "";
    assert_int_equal(kv_list(f->kv, &la, &list, &n, &more, &st),
                     REEL_INVALID_ARGUMENT);
    assert_non_null(strstr(reel_status_message(&st), "namespace: byte"));
    assert_int_equal(kv_history(f->kv, ns, len, "k", 1, 0, 0, NULL, &evs, &n,
                                &more, &st),
                     REEL_INVALID_ARGUMENT);
    assert_non_null(strstr(reel_status_message(&st), "namespace: byte"));
    wa.ns = ns, wa.ns_len = len, wa.key = "k", wa.key_len = 1;
    assert_int_equal(kv_watch_create(f->kv, &wa, &test_sink, s, &w, &st),
                     REEL_INVALID_ARGUMENT);
    assert_null(w);
    assert_non_null(strstr(reel_status_message(&st), "namespace: byte"));
    reel_status_fini(&st);
    sink_free(s);
}

static void test_bad_namespaces_are_invalid_on_every_entry_point(
    void **state) {
    fixture_t *f = *state;

    set_ok(f->kv, "k", "1");
    expect_invalid_ns_on_reads(f, "a.b");
    expect_invalid_ns_on_reads(f, "*");
    expect_invalid_ns_on_reads(f, "n.");
    expect_invalid_ns_on_reads(f, "ns."); /* "ns" holds keys; "ns." not */
    assert_int_equal(store_revision(f->store), 1);
}

/* A raw write into a column family, past kv's own checks: a corrupt or
 * missing record as storage damage would leave it. val NULL deletes. */
typedef struct raw_put {
    store_cf_t *cf;
    const void *key, *val;
    size_t klen, vlen;
} raw_put_t;

static reel_code_t raw_put_apply(store_txn_t *txn, void *arg,
                                 reel_status_t *st) {
    raw_put_t *p = arg;

    (void)st;
    if (p->val == NULL)
        store_txn_delete(txn, p->cf, p->key, p->klen);
    else
        store_txn_put(txn, p->cf, p->key, p->klen, p->val, p->vlen);
    return REEL_OK;
}

/* kv's column family `name` ("kv", "kv_history"). */
static store_cf_t *cf_of(fixture_t *f, const char *name) {
    store_cf_t *cf = NULL;

    assert_int_equal(store_cf_lookup(f->store, name, &cf, NULL), REEL_OK);
    return cf;
}

static void raw_put(fixture_t *f, const char *cf, const void *key,
                    size_t klen, const void *val, size_t vlen) {
    raw_put_t p = {cf_of(f, cf), key, val, klen, vlen};
    reel_status_t st = REEL_STATUS_INIT;

    if (store_exec(f->store, raw_put_apply, &p, NULL, &st) != REEL_OK)
        fail_msg("raw put: %s", reel_status_message(&st));
}


/*
 * A data dir from before the namespace rule holds namespace "a.b": its
 * keys can still be read, listed, watched and asked for history; nothing
 * can be written to it, so no new event gets the subject kv.a.b.<key>.
 */
static void test_a_namespace_from_before_the_rule_is_read_only(
    void **state) {
    fixture_t *f = *state;
    kv_list_args_t la = {0};
    kv_watch_args_t wa = {0};
    kv_write_args_t a = {0};
    kv_write_result_t res;
    kv_watch_t *w = NULL;
    kv_entry_t e, *list;
    kv_event_t *evs;
    sink_t *s = sink_new(10);
    char *rec = NULL;
    size_t rlen = 0, n;
    uint64_t rev;
    int more;

    /* A valid record, stored again under the old namespace by hand. */
    set_ok(f->kv, "c", "\"old\"");
    assert_int_equal(store_get(f->store, cf_of(f, "kv"), "ns\0c", 4, &rec,
                               &rlen, NULL),
                     REEL_OK);
    raw_put(f, "kv", "a.b\0c", 5, rec, rlen);
    free(rec);
    rev = store_revision(f->store);

    assert_int_equal(kv_get(f->kv, "a.b", 3, "c", 1, &e, NULL), REEL_OK);
    assert_string_equal(e.ns, "a.b");
    assert_string_equal(e.value, "\"old\"");
    kv_entry_fini(&e);
    assert_int_equal(kv_get(f->kv, "a.b", 3, "x", 1, &e, NULL),
                     REEL_NOT_FOUND);
    kv_entry_fini(&e);
    la.ns = "a.b", la.ns_len = 3, la.prefix = "";
    assert_int_equal(kv_list(f->kv, &la, &list, &n, &more, NULL), REEL_OK);
    assert_int_equal(n, 1);
    assert_string_equal(list[0].key, "c");
    kv_entry_fini(&list[0]);
    free(list);
    assert_int_equal(kv_history(f->kv, "a.b", 3, "c", 1, 0, 0, NULL, &evs, &n,
                                &more, NULL),
                     REEL_OK);
    free(evs);
    wa.ns = "a.b", wa.ns_len = 3, wa.key = "c", wa.key_len = 1;
    assert_int_equal(kv_watch_create(f->kv, &wa, &test_sink, s, &w, NULL),
                     REEL_OK);
    kv_watch_pump(w);
    assert_int_equal(sink_wait(s, 2), 2); /* the value, BOOTSTRAP_DONE */
    assert_string_equal(s->recs[0].value, "\"old\"");
    assert_int_equal(s->recs[1].type, KV_EVENT_BOOTSTRAP_DONE);
    kv_watch_destroy(w);
    sink_free(s);

    a.ns = "a.b", a.ns_len = 3, a.key = "c", a.key_len = 1;
    a.value = "1", a.value_len = 1;
    assert_int_equal(kv_write(f->kv, &a, &res), REEL_INVALID_ARGUMENT);
    assert_non_null(strstr(reel_status_message(&res.status), "namespace"));
    kv_write_result_fini(&res);
    a.is_delete = 1;
    assert_int_equal(kv_write(f->kv, &a, &res), REEL_INVALID_ARGUMENT);
    kv_write_result_fini(&res);
    assert_int_equal(store_revision(f->store), rev);
    /* A namespace it does not hold is refused as ever. */
    assert_int_equal(kv_get(f->kv, "a.", 2, "c", 1, &e, NULL),
                     REEL_INVALID_ARGUMENT);
}

/* ---- Reads -------------------------------------------------------------- */

static void test_list_pages_in_key_order_with_prefix(void **state) {
    fixture_t *f = *state;
    kv_list_args_t a = {0};
    kv_write_result_t res;
    kv_entry_t *out;
    size_t n;
    int more;
    char key[16];

    for (int i = 9; i >= 0; i--) {
        snprintf(key, sizeof(key), "user.%d", i);
        set_ok(f->kv, key, "1");
    }
    set_ok(f->kv, "other", "1");
    assert_int_equal(del(f->kv, "user.3", &res), REEL_OK);
    kv_write_result_fini(&res);

    a.ns = "ns", a.ns_len = 2;
    a.prefix = "user.", a.prefix_len = 5;
    a.limit = 4;
    assert_int_equal(kv_list(f->kv, &a, &out, &n, &more, NULL), REEL_OK);
    assert_int_equal(n, 4);
    assert_true(more);
    assert_string_equal(out[0].key, "user.0");
    assert_string_equal(out[3].key, "user.4"); /* user.3 is deleted */
    a.start_after = "user.4", a.start_after_len = 6;
    for (size_t i = 0; i < n; i++)
        kv_entry_fini(&out[i]);
    free(out);
    assert_int_equal(kv_list(f->kv, &a, &out, &n, &more, NULL), REEL_OK);
    assert_int_equal(n, 4);
    assert_string_equal(out[0].key, "user.5");
    assert_true(more);
    for (size_t i = 0; i < n; i++)
        kv_entry_fini(&out[i]);
    free(out);
    a.start_after = "user.8";
    assert_int_equal(kv_list(f->kv, &a, &out, &n, &more, NULL), REEL_OK);
    assert_int_equal(n, 1);
    assert_false(more);
    kv_entry_fini(&out[0]);
    free(out);

    a.start_after = NULL, a.start_after_len = 0;
    a.include_deleted = 1;
    a.limit = 0;
    assert_int_equal(kv_list(f->kv, &a, &out, &n, &more, NULL), REEL_OK);
    assert_int_equal(n, 10);
    assert_true(out[3].deleted);
    for (size_t i = 0; i < n; i++)
        kv_entry_fini(&out[i]);
    free(out);

    a.limit = 1001;
    assert_int_equal(kv_list(f->kv, &a, &out, &n, &more, NULL),
                     REEL_INVALID_ARGUMENT);
}

static void test_history_keeps_the_last_n_versions(void **state) {
    fixture_t *f = *state;
    kv_event_t *evs;
    size_t n;
    int more;
    char val[16];
    sink_t *s = sink_new(100);
    reel_status_t st = REEL_STATUS_INIT;
    reel_code_t rc;

    for (int i = 1; i <= 10; i++) {
        snprintf(val, sizeof(val), "%d", i);
        set_ok(f->kv, "k", val);
    }
    assert_int_equal(kv_history(f->kv, "ns", 2, "k", 1, 0, 0, NULL, &evs, &n,
                                &more, NULL),
                     REEL_OK);
    assert_int_equal(n, 3);
    assert_int_equal(evs[0].version, 8);
    assert_string_equal(evs[0].value, "8");
    assert_string_equal(evs[0].prev_value, "7");
    assert_int_equal(evs[0].prev_version, 7);
    assert_int_equal(evs[2].version, 10);
    for (size_t i = 0; i < n; i++)
        kv_event_fini(&evs[i]);
    free(evs);

    /* Versions 3-7 were trimmed: from 2 is refused, not a page from 8;
     * from 7 (the next one retained) is a page. */
    assert_int_equal(kv_history(f->kv, "ns", 2, "k", 1, 2, 0, NULL, &evs, &n,
                                &more, &st),
                     REEL_OUT_OF_RANGE);
    assert_int_equal(n, 0);
    assert_non_null(strstr(reel_status_message(&st),
                           "version 3 is no longer retained; the oldest "
                           "retained version is 8"));
    reel_status_fini(&st);
    assert_int_equal(kv_history(f->kv, "ns", 2, "k", 1, 7, 0, NULL, &evs, &n,
                                &more, NULL),
                     REEL_OK);
    assert_int_equal(n, 3);
    for (size_t i = 0; i < n; i++)
        kv_event_fini(&evs[i]);
    free(evs);

    /* Revision 1 is long gone for this key; 0 starts from the oldest
     * retained, as the WAL's 0 does. */
    assert_null(watch(f, "k", KV_WATCH_FROM_REVISION, 1, s, &rc, &st));
    assert_int_equal(rc, REEL_OUT_OF_RANGE);
    assert_non_null(strstr(reel_status_message(&st),
                           "oldest retained revision is 8 (from_revision "
                           "7, or 0, starts there)"));
    reel_status_fini(&st);
    sink_free(s);
}

/* A page measure for tests: an entry or event costs its value bytes. */
static size_t entry_value_bytes(void *arg, const void *elem) {
    (void)arg;
    return ((const kv_entry_t *)elem)->value_len;
}

static size_t event_value_bytes(void *arg, const void *elem) {
    const kv_event_t *ev = elem;

    (void)arg;
    return ev->value_len + ev->prev_value_len;
}

/* A JSON string of n bytes, quotes included. */
static char *json_text(size_t n, char fill) {
    char *v = malloc(n + 1);

    memset(v, fill, n);
    v[0] = v[n - 1] = '"';
    v[n] = '\0';
    return v;
}

static void test_list_stops_at_the_byte_budget(void **state) {
    fixture_t *f = *state;
    reel_page_t page = {2500, entry_value_bytes, NULL};
    kv_list_args_t a = {0};
    char key[16], *v = json_text(1000, 'x');
    size_t sizes[8], pages = 0, seen = 0;
    kv_entry_t *out;
    size_t n;
    int more;

    for (int i = 0; i < 5; i++) {
        snprintf(key, sizeof(key), "k%d", i);
        set_ok(f->kv, key, v);
    }
    a.ns = "ns", a.ns_len = 2;
    a.prefix = "";
    a.page = &page;
    /* Within the count limit (100), the budget ends each page: 2, 2, 1. */
    do {
        assert_int_equal(kv_list(f->kv, &a, &out, &n, &more, NULL), REEL_OK);
        assert_true(n >= 1);
        sizes[pages++] = n;
        for (size_t i = 0; i < n; i++) {
            snprintf(key, sizeof(key), "k%zu", seen++);
            assert_string_equal(out[i].key, key);
        }
        snprintf(key, sizeof(key), "%s", out[n - 1].key);
        a.start_after = key, a.start_after_len = strlen(key);
        for (size_t i = 0; i < n; i++)
            kv_entry_fini(&out[i]);
        free(out);
    } while (more && pages < 8);
    assert_int_equal(seen, 5);
    assert_int_equal(pages, 3);
    assert_int_equal(sizes[0], 2);
    assert_int_equal(sizes[1], 2);
    assert_int_equal(sizes[2], 1);

    /* An entry larger than the whole budget still comes, alone. */
    page.max_bytes = 10;
    a.start_after = NULL, a.start_after_len = 0;
    assert_int_equal(kv_list(f->kv, &a, &out, &n, &more, NULL), REEL_OK);
    assert_int_equal(n, 1);
    assert_true(more);
    kv_entry_fini(&out[0]);
    free(out);
    free(v);
}

static void test_history_stops_at_the_byte_budget(void **state) {
    fixture_t *f = *state;
    reel_page_t page = {3000, event_value_bytes, NULL};
    char *v = json_text(1000, 'y');
    uint64_t from = 0, next = 1;
    size_t pages = 0;
    kv_event_t *evs;
    size_t n;
    int more;

    for (int i = 0; i < 5; i++)
        set_ok(f->kv, "h", v);
    /* Version 1 costs 1000 (no previous value), the others 2000 each:
     * pages of versions {1, 2}, {3}, {4}, {5}. */
    do {
        assert_int_equal(kv_history(f->kv, "ns", 2, "h", 1, from, 0, &page,
                                    &evs, &n, &more, NULL),
                         REEL_OK);
        assert_true(n >= 1);
        assert_int_equal(n, pages == 0 ? 2 : 1);
        for (size_t i = 0; i < n; i++)
            assert_int_equal(evs[i].version, next++);
        from = evs[n - 1].version;
        for (size_t i = 0; i < n; i++)
            kv_event_fini(&evs[i]);
        free(evs);
        pages++;
    } while (more && pages < 8);
    assert_int_equal(pages, 4);
    assert_int_equal(next, 6);
    free(v);
}

/* ---- Watches ------------------------------------------------------------ */

static void test_watch_sees_every_transition_with_prev(void **state) {
    fixture_t *f = *state;
    sink_t *s = sink_new(1000);
    kv_watch_t *w;

    w = watch(f, "k", KV_WATCH_NOW, 0, s, NULL, NULL);
    assert_int_equal(sink_wait(s, 1), 1);
    assert_int_equal(s->recs[0].type, KV_EVENT_BOOTSTRAP_DONE);
    set_ok(f->kv, "k", "\"a\"");
    set_ok(f->kv, "k", "\"b\"");
    del_ok(f, "k");
    set_ok(f->kv, "k", "\"c\"");
    set_ok(f->kv, "other", "1");
    assert_int_equal(sink_wait(s, 5), 5);
    assert_int_equal(s->recs[1].type, KV_EVENT_PUT);
    assert_int_equal(s->recs[1].version, 1);
    assert_int_equal(s->recs[1].prev_version, 0);
    assert_string_equal(s->recs[1].prev, "");
    assert_string_equal(s->recs[2].value, "\"b\"");
    assert_string_equal(s->recs[2].prev, "\"a\"");
    assert_int_equal(s->recs[3].type, KV_EVENT_DELETE);
    assert_true(s->recs[3].deleted);
    assert_string_equal(s->recs[3].prev, "\"b\"");
    assert_int_equal(s->recs[3].prev_version, 2);
    assert_int_equal(s->recs[4].version, 4);
    assert_int_equal(s->recs[4].prev_version, 3);
    assert_string_equal(s->recs[4].prev, "");
    kv_watch_destroy(w);
    assert_int_equal(s->n, 5); /* "other" never arrived */
    sink_free(s);
}

static void test_patterns_match_exactly_what_they_should(void **state) {
    fixture_t *f = *state;
    sink_t *star = sink_new(100), *gt = sink_new(100), *first = sink_new(100),
           *all = sink_new(100);
    kv_watch_t *w1, *w2, *w3, *w4;
    kv_write_result_t res;
    const char *keys[] = {"a.b.c", "a.c", "a.b.x.c", "a.x.c", "orders",
                          "orders.1", "orders.eu.2", "orders/3", "a/b.c"};

    /* Watches are indexed by namespace and literal first token: these
     * sit under "a", "orders", and the namespace alone (two of them). */
    w1 = watch(f, "a.*.c", KV_WATCH_NOW, 0, star, NULL, NULL);
    w2 = watch(f, "orders.>", KV_WATCH_NOW, 0, gt, NULL, NULL);
    w3 = watch(f, "*.c", KV_WATCH_NOW, 0, first, NULL, NULL);
    w4 = watch(f, ">", KV_WATCH_NOW, 0, all, NULL, NULL);
    /* Another namespace's keys reach none of them. */
    for (size_t i = 0; i < sizeof(keys) / sizeof(*keys); i++) {
        assert_int_equal(set_full(f->kv, "other", keys[i], "1",
                                  KV_PRECOND_NONE, 0, &res),
                         REEL_OK);
        kv_write_result_fini(&res);
    }
    for (size_t i = 0; i < sizeof(keys) / sizeof(*keys); i++)
        set_ok(f->kv, keys[i], "1");
    set_ok(f->kv, "zzz", "1"); /* a marker: everything before it is in */
    assert_int_equal(sink_wait(star, 3), 3);
    assert_int_equal(sink_wait(gt, 3), 3);
    assert_int_equal(sink_wait(first, 3), 3);
    assert_int_equal(sink_wait(all, 11), 11);
    kv_watch_destroy(w1);
    kv_watch_destroy(w2);
    kv_watch_destroy(w3);
    kv_watch_destroy(w4);
    assert_int_equal(star->n, 3);
    assert_string_equal(star->recs[1].key, "a.b.c");
    assert_string_equal(star->recs[2].key, "a.x.c");
    assert_int_equal(gt->n, 3);
    assert_string_equal(gt->recs[1].key, "orders.1");
    assert_string_equal(gt->recs[2].key, "orders.eu.2");
    assert_int_equal(first->n, 3);
    assert_string_equal(first->recs[1].key, "a.c");
    assert_string_equal(first->recs[2].key, "a/b.c");
    assert_int_equal(all->n, 11);
    for (size_t i = 0; i < sizeof(keys) / sizeof(*keys); i++)
        assert_string_equal(all->recs[1 + i].key, keys[i]);
    assert_string_equal(all->recs[10].key, "zzz");
    sink_free(star);
    sink_free(gt);
    sink_free(first);
    sink_free(all);
}

static void test_malformed_watch_patterns_are_invalid(void **state) {
    fixture_t *f = *state;
    sink_t *s = sink_new(10);
    reel_status_t st = REEL_STATUS_INIT;
    reel_code_t rc;

    assert_null(watch(f, "a.>.b", KV_WATCH_NOW, 0, s, &rc, &st));
    assert_int_equal(rc, REEL_INVALID_ARGUMENT);
    assert_null(watch(f, "a..*", KV_WATCH_NOW, 0, s, &rc, &st));
    assert_int_equal(rc, REEL_INVALID_ARGUMENT);
    assert_null(watch(f, "a.*", KV_WATCH_FROM_VERSION, 0, s, &rc, &st));
    assert_int_equal(rc, REEL_INVALID_ARGUMENT);
    assert_non_null(strstr(reel_status_message(&st), "FROM_VERSION"));
    reel_status_fini(&st);
    sink_free(s);
}

typedef struct writer_arg {
    kv_t *kv;
    int rounds;
} writer_arg_t;

static void *writer_main(void *arg) {
    writer_arg_t *a = arg;
    char key[16], val[16];

    for (int i = 0; i < a->rounds; i++) {
        snprintf(key, sizeof(key), "s.%d", i % 8);
        snprintf(val, sizeof(val), "%d", i);
        set_ok(a->kv, key, val);
    }
    return NULL;
}

static void test_snapshot_then_live_has_no_gap_or_duplicate(void **state) {
    fixture_t *f = *state;
    sink_t *s = sink_new(4096);
    writer_arg_t wa = {f->kv, 800};
    uint64_t last_ver[8] = {0};
    int booted = 0;
    pthread_t th;
    kv_watch_t *w;

    for (int i = 0; i < 8; i++) {
        char key[16];
        snprintf(key, sizeof(key), "s.%d", i);
        set_ok(f->kv, key, "0");
    }
    pthread_create(&th, NULL, writer_main, &wa);
    w = watch(f, "s.*", KV_WATCH_SNAPSHOT, 0, s, NULL, NULL);
    pthread_join(th, NULL);
    set_ok(f->kv, "s.marker", "1"); /* s.* matches it: the last event */
    for (size_t have = 0;;) {
        have = sink_wait(s, have + 1);
        if (have > 0 && strcmp(s->recs[have - 1].key, "s.marker") == 0)
            break;
        assert_true(have < 4096);
    }
    kv_watch_destroy(w);

    /* Per key: one snapshot value, then every later version, in order. */
    for (size_t i = 0; i < s->n; i++) {
        rec_t *r = &s->recs[i];
        int k;

        if (r->type == KV_EVENT_BOOTSTRAP_DONE) {
            booted = 1;
            continue;
        }
        if (strcmp(r->key, "s.marker") == 0)
            continue;
        k = r->key[2] - '0';
        if (last_ver[k] != 0)
            assert_int_equal(r->version, last_ver[k] + 1);
        if (booted)
            assert_int_equal(r->prev_version, r->version - 1);
        last_ver[k] = r->version;
    }
    assert_true(booted);
    for (int k = 0; k < 8; k++) {
        kv_entry_t e;
        char key[16];

        snprintf(key, sizeof(key), "s.%d", k);
        assert_int_equal(kv_get(f->kv, "ns", 2, key, 3, &e, NULL), REEL_OK);
        assert_int_equal(last_ver[k], e.version);
        kv_entry_fini(&e);
    }
    sink_free(s);
}

static void test_grouped_watches_take_a_live_event_once_for_all(void **state) {
    fixture_t *f = *state;
    group_t g = {0};
    sink_t *s[3], *alone = sink_new(1000);
    kv_watch_t *w[3], *wa;
    char val[16];

    for (int i = 0; i < 3; i++) {
        s[i] = sink_new(1000);
        s[i]->group = &g;
    }
    /* Created in this order: s[0], alone, s[1], s[2]. s[1] and s[2] sit
     * together; s[0] is cut off from them by a watch of no group. */
    w[0] = watch(f, "k", KV_WATCH_NOW, 0, s[0], NULL, NULL);
    wa = watch(f, "k", KV_WATCH_NOW, 0, alone, NULL, NULL);
    w[1] = watch(f, "k", KV_WATCH_NOW, 0, s[1], NULL, NULL);
    w[2] = watch(f, "k", KV_WATCH_NOW, 0, s[2], NULL, NULL);
    for (int v = 1; v <= 3; v++) {
        snprintf(val, sizeof(val), "%d", v);
        set_ok(f->kv, "k", val);
    }
    /* Per event: one call for s[1] and s[2] together, one for s[0]. */
    assert_int_equal(g.calls, 6);
    assert_int_equal(g.watches, 9);
    assert_int_equal(alone->n, 4);

    /* The group's sink is full: the event is refused for all of them, and
     * they stop taking live events; the watch of no group goes on. */
    g.full = 1;
    set_ok(f->kv, "k", "4");
    set_ok(f->kv, "k", "5");
    assert_int_equal(g.calls, 6);
    assert_int_equal(alone->n, 6);
    for (int i = 0; i < 3; i++)
        assert_int_equal(s[i]->n, 4);

    /* Room again: each catches up from storage on its own, then is live
     * and grouped again. */
    g.full = 0;
    for (int i = 0; i < 3; i++) {
        kv_watch_pump(w[i]);
        assert_int_equal(s[i]->n, 6);
    }
    assert_int_equal(g.calls, 6);
    set_ok(f->kv, "k", "6");
    assert_int_equal(g.calls, 8);
    assert_int_equal(g.watches, 12);

    /* Every watch saw BOOTSTRAP_DONE, then each version once, in order. */
    for (int i = 0; i < 3; i++) {
        assert_int_equal(s[i]->n, 7);
        assert_int_equal(s[i]->recs[0].type, KV_EVENT_BOOTSTRAP_DONE);
        for (int v = 1; v <= 6; v++) {
            snprintf(val, sizeof(val), "%d", v);
            assert_int_equal(s[i]->recs[v].version, (uint64_t)v);
            assert_string_equal(s[i]->recs[v].value, val);
        }
    }
    for (int i = 0; i < 3; i++) {
        kv_watch_destroy(w[i]);
        sink_free(s[i]);
    }
    kv_watch_destroy(wa);
    sink_free(alone);
}

static void test_stalled_watcher_catches_up_from_storage(void **state) {
    fixture_t *f = *state;
    sink_t *s = sink_new(5);
    kv_watch_t *w;
    char val[16];

    w = watch(f, "k", KV_WATCH_NOW, 0, s, NULL, NULL);
    for (int i = 1; i <= 40; i++) {
        snprintf(val, sizeof(val), "%d", i);
        set_ok(f->kv, "k", val);
    }
    /* Held at 5 (BOOTSTRAP_DONE + 4): the writer went on without it. */
    assert_int_equal(s->n, 5);
    while (s->n < 41) {
        size_t before = s->n;

        pthread_mutex_lock(&s->mu);
        s->held = 0; /* the client read what it had */
        pthread_mutex_unlock(&s->mu);
        kv_watch_pump(w);
        assert_true(s->n > before);
    }
    for (int i = 1; i <= 40; i++) {
        assert_int_equal(s->recs[i].version, (uint64_t)i);
        if (i > 1)
            assert_int_equal(s->recs[i].revision, s->recs[i - 1].revision + 1);
    }
    /* Caught up, it is live again. */
    pthread_mutex_lock(&s->mu);
    s->held = 0;
    pthread_mutex_unlock(&s->mu);
    kv_watch_pump(w);
    set_ok(f->kv, "k", "\"live\"");
    assert_int_equal(sink_wait(s, 42), 42);
    assert_string_equal(s->recs[41].value, "\"live\"");
    kv_watch_destroy(w);
    sink_free(s);
}

static void test_stalled_watcher_past_retention_ends_naming_its_revision(
    void **state) {
    fixture_t *f = *state; /* history_keep = 3 */
    sink_t *s = sink_new(2);
    kv_watch_t *w;
    char val[16];
    uint64_t last;

    w = watch(f, "k", KV_WATCH_NOW, 0, s, NULL, NULL);
    for (int i = 1; i <= 10; i++) {
        snprintf(val, sizeof(val), "%d", i);
        set_ok(f->kv, "k", val);
    }
    assert_int_equal(s->n, 2);
    last = s->recs[1].revision;
    pthread_mutex_lock(&s->mu);
    s->held = 0;
    pthread_mutex_unlock(&s->mu);
    kv_watch_pump(w);
    assert_true(s->ended);
    assert_int_equal(s->end.code, REEL_OUT_OF_RANGE);
    {
        char want[64];
        snprintf(want, sizeof(want), "last revision it received is %llu",
                 (unsigned long long)last);
        assert_non_null(strstr(reel_status_message(&s->end), want));
    }
    kv_watch_destroy(w);
    sink_free(s);
}

/*
 * A busy key trims its history at every write. A pattern watch that never
 * matches it was refused any revision before that key's last trim, in any
 * namespace (one counter written 100 times a second left every pattern
 * watcher a second to resume in); now only the trims of keys it matches
 * count, from resume and from a stalled watcher's catch-up alike.
 */
static void test_a_busy_key_elsewhere_does_not_end_pattern_watches(
    void **state) {
    fixture_t *f = *state; /* history_keep = 3 */
    kv_write_result_t res;
    sink_t *s = sink_new(100), *slow = sink_new(1);
    kv_watch_t *w, *ws;
    reel_status_t st = REEL_STATUS_INIT;
    reel_code_t rc;
    uint64_t before;

    set_ok(f->kv, "orders.0", "0");
    before = store_revision(f->store);
    ws = watch(f, "orders.>", KV_WATCH_NOW, 0, slow, NULL, NULL);
    assert_int_equal(sink_wait(slow, 1), 1); /* BOOTSTRAP_DONE; then full */
    set_ok(f->kv, "orders.1", "1");
    for (int i = 0; i < 20; i++) {
        assert_int_equal(set_full(f->kv, "other", "hot", "1", KV_PRECOND_NONE,
                                  0, &res),
                         REEL_OK);
        kv_write_result_fini(&res);
        set_ok(f->kv, "elsewhere", "1"); /* same namespace, not matched */
    }
    /* Resumed from before: orders.1 comes, then BOOTSTRAP_DONE. */
    w = watch(f, "orders.>", KV_WATCH_FROM_REVISION, before, s, &rc, &st);
    assert_int_equal(rc, REEL_OK);
    assert_int_equal(sink_wait(s, 2), 2);
    assert_string_equal(s->recs[0].key, "orders.1");
    assert_int_equal(s->recs[1].type, KV_EVENT_BOOTSTRAP_DONE);
    kv_watch_destroy(w);
    /* The stalled one catches up from storage. */
    pthread_mutex_lock(&slow->mu);
    slow->held = 0;
    slow->limit = 100;
    pthread_mutex_unlock(&slow->mu);
    kv_watch_pump(ws);
    assert_int_equal(sink_wait(slow, 2), 2);
    assert_false(slow->ended);
    assert_string_equal(slow->recs[1].key, "orders.1");
    kv_watch_destroy(ws);
    /* A key it matches, trimmed: refused, naming the oldest retained. */
    for (int i = 0; i < 5; i++)
        set_ok(f->kv, "orders.1", "2");
    s->n = 0;
    w = watch(f, "orders.>", KV_WATCH_FROM_REVISION, before, s, &rc, &st);
    assert_int_equal(rc, REEL_OUT_OF_RANGE);
    assert_null(w);
    reel_status_fini(&st);
    /* From 0, every change retained: orders.0, written once before what
     * orders.1 trimmed, is there (it was left out, the watch starting
     * past the newest revision trimmed), then orders.1's last 3. */
    s->n = 0;
    w = watch(f, "orders.>", KV_WATCH_FROM_REVISION, 0, s, &rc, &st);
    assert_int_equal(rc, REEL_OK);
    assert_int_equal(sink_wait(s, 5), 5);
    assert_string_equal(s->recs[0].key, "orders.0");
    assert_int_equal(s->recs[0].version, 1);
    for (int i = 1; i < 4; i++) {
        assert_string_equal(s->recs[i].key, "orders.1");
        assert_int_equal(s->recs[i].version, 3 + (uint64_t)i);
    }
    assert_int_equal(s->recs[4].type, KV_EVENT_BOOTSTRAP_DONE);
    /* Then live, as any watch. */
    set_ok(f->kv, "orders.2", "1");
    assert_int_equal(sink_wait(s, 6), 6);
    assert_string_equal(s->recs[5].key, "orders.2");
    kv_watch_destroy(w);
    sink_free(s);
    sink_free(slow);
}

static void test_from_version_replays_then_goes_live(void **state) {
    fixture_t *f = *state;
    sink_t *s = sink_new(100);
    kv_watch_t *w;

    set_ok(f->kv, "k", "1");
    set_ok(f->kv, "k", "2");
    set_ok(f->kv, "k", "3");
    w = watch(f, "k", KV_WATCH_FROM_VERSION, 1, s, NULL, NULL);
    assert_int_equal(sink_wait(s, 3), 3);
    assert_int_equal(s->recs[0].version, 2);
    assert_string_equal(s->recs[0].prev, "1");
    assert_int_equal(s->recs[1].version, 3);
    assert_int_equal(s->recs[2].type, KV_EVENT_BOOTSTRAP_DONE);
    set_ok(f->kv, "k", "4");
    assert_int_equal(sink_wait(s, 4), 4);
    assert_int_equal(s->recs[3].version, 4);
    kv_watch_destroy(w);
    sink_free(s);
}

static void test_from_revision_resumes_after_reopen_without_gap(
    void **state) {
    fixture_t *f = *state;
    sink_t *s = sink_new(100);
    kv_watch_t *w;
    uint64_t resume;

    set_ok(f->kv, "p.a", "1");
    set_ok(f->kv, "p.b", "1");
    resume = store_revision(f->store);
    set_ok(f->kv, "p.a", "2");
    close_all(f);
    open_all(f);
    set_ok(f->kv, "p.b", "2");
    set_ok(f->kv, "q.c", "1");
    w = watch(f, "p.>", KV_WATCH_FROM_REVISION, resume, s, NULL, NULL);
    assert_int_equal(sink_wait(s, 3), 3);
    assert_string_equal(s->recs[0].key, "p.a");
    assert_int_equal(s->recs[0].version, 2);
    assert_int_equal(s->recs[0].revision, resume + 1);
    assert_string_equal(s->recs[1].key, "p.b");
    assert_int_equal(s->recs[1].revision, resume + 2);
    assert_int_equal(s->recs[2].type, KV_EVENT_BOOTSTRAP_DONE);
    set_ok(f->kv, "p.c", "1");
    assert_int_equal(sink_wait(s, 4), 4);
    assert_string_equal(s->recs[3].key, "p.c");
    kv_watch_destroy(w);
    sink_free(s);
}


/* An exact key's catch-up starts at the first version after the cursor,
 * found by searching its index: from every cursor, with other keys'
 * revisions in between and the oldest versions trimmed, it sends exactly
 * the versions after it. */
static void test_from_revision_on_a_long_history_sends_exactly_what_follows(
    void **state) {
    fixture_t *f = *state;
    uint64_t revs[301], head;
    int nv = 0, oldest;

    for (int i = 1; i <= 300; i++) {
        set_ok(f->kv, "k", "1");
        revs[++nv] = store_revision(f->store);
        for (int j = 0; j < i % 4; j++) /* gaps of 0 to 3 revisions */
            set_ok(f->kv, "other", "1");
    }
    head = store_revision(f->store);
    oldest = nv - KV_DEFAULT_HISTORY_KEEP + 1; /* versions before: trimmed */
    for (uint64_t c = 0; c <= head; c++) {
        sink_t *s = sink_new(4096);
        reel_status_t st = REEL_STATUS_INIT;
        reel_code_t rc;
        kv_watch_t *w = watch(f, "k", KV_WATCH_FROM_REVISION, c, s, &rc, &st);
        int first = oldest;
        size_t want;

        if (c != 0 && c < revs[oldest - 1]) { /* trimmed; 0: the oldest */
            assert_int_equal(rc, REEL_OUT_OF_RANGE);
            assert_null(w);
            reel_status_fini(&st);
            sink_free(s);
            continue;
        }
        if (rc != REEL_OK)
            fail_msg("from revision %llu: %s", (unsigned long long)c,
                     reel_status_message(&st));
        reel_status_fini(&st);

        while (first <= nv && revs[first] <= c)
            first++;
        want = (size_t)(nv - first + 1) + 1; /* and BOOTSTRAP_DONE */
        if (sink_wait(s, want) != want)
            fail_msg("from revision %llu: %zu events, want %zu",
                     (unsigned long long)c, s->n, want);
        for (size_t i = 0; i + 1 < want; i++) {
            assert_int_equal(s->recs[i].version, (uint64_t)first + i);
            assert_int_equal(s->recs[i].revision, revs[first + i]);
        }
        assert_int_equal(s->recs[want - 1].type, KV_EVENT_BOOTSTRAP_DONE);
        assert_int_equal(s->n, want);
        kv_watch_destroy(w);
        sink_free(s);
    }
}

/* ---- Cursors and unreadable records -------------------------------------- */

/* Overwrites the history record of revision rev with bytes that do not
 * decode (or deletes it). */
static void damage_history(fixture_t *f, uint64_t rev, int delete_it) {
    unsigned char rk[9];

    rk[0] = 'r';
    reel_be64_put(rk + 1, rev);
    raw_put(f, "kv_history", rk, sizeof(rk),
            delete_it ? NULL : "\x01garbage", 8);
}

/* The watch ended with code and a message containing want. */
static void expect_end(sink_t *s, reel_code_t code, const char *want) {
    pthread_mutex_lock(&s->mu);
    if (!s->ended)
        fail_msg("the watch did not end (%zu events)", s->n);
    if (s->end.code != code || strstr(reel_status_message(&s->end), want) ==
                                   NULL)
        fail_msg("ended with %s \"%s\", want %s \"...%s...\"",
                 reel_code_name(s->end.code), reel_status_message(&s->end),
                 reel_code_name(code), want);
    pthread_mutex_unlock(&s->mu);
}

static void test_from_revision_past_the_head_is_invalid_naming_it(
    void **state) {
    fixture_t *f = *state;
    sink_t *s = sink_new(100);
    reel_status_t st = REEL_STATUS_INIT;
    reel_code_t rc;
    kv_watch_t *w;

    for (int i = 0; i < 5; i++)
        set_ok(f->kv, "k", "1");
    assert_int_equal(store_revision(f->store), 5);
    assert_null(watch(f, "k", KV_WATCH_FROM_REVISION, 1005, s, &rc, &st));
    assert_int_equal(rc, REEL_INVALID_ARGUMENT);
    assert_string_equal(reel_status_message(&st),
                        "from_revision: 1005 is past the head revision 5");
    assert_null(watch(f, "p.>", KV_WATCH_FROM_REVISION, UINT64_MAX, s, &rc,
                      &st));
    assert_int_equal(rc, REEL_INVALID_ARGUMENT);
    assert_string_equal(reel_status_message(&st),
                        "from_revision: 18446744073709551615 is past the "
                        "head revision 5");
    assert_int_equal(s->n, 0);
    /* The head itself is a cursor: nothing to replay, then live. */
    w = watch(f, "k", KV_WATCH_FROM_REVISION, 5, s, NULL, NULL);
    assert_int_equal(sink_wait(s, 1), 1);
    assert_int_equal(s->recs[0].type, KV_EVENT_BOOTSTRAP_DONE);
    assert_int_equal(s->recs[0].revision, 5);
    set_ok(f->kv, "k", "2");
    assert_int_equal(sink_wait(s, 2), 2);
    assert_int_equal(s->recs[1].version, 6);
    kv_watch_destroy(w);
    reel_status_fini(&st);
    sink_free(s);
}

static void test_from_version_at_uint64_max_does_not_wrap(void **state) {
    fixture_t *f = *state;
    sink_t *s = sink_new(100);
    kv_event_t *evs;
    size_t n;
    int more;
    kv_watch_t *w;

    set_ok(f->kv, "k", "1");
    set_ok(f->kv, "k", "2");
    set_ok(f->kv, "k", "3");
    /* As past the current version: nothing replayed (not version 1), then
     * live. */
    w = watch(f, "k", KV_WATCH_FROM_VERSION, UINT64_MAX, s, NULL, NULL);
    assert_int_equal(sink_wait(s, 1), 1);
    assert_int_equal(s->recs[0].type, KV_EVENT_BOOTSTRAP_DONE);
    assert_int_equal(s->recs[0].revision, 3);
    set_ok(f->kv, "k", "4");
    assert_int_equal(sink_wait(s, 2), 2);
    assert_int_equal(s->recs[1].version, 4);
    kv_watch_destroy(w);
    /* A read from there is an empty page. */
    assert_int_equal(kv_history(f->kv, "ns", 2, "k", 1, UINT64_MAX, 0, NULL,
                                &evs, &n, &more, NULL),
                     REEL_OK);
    assert_int_equal(n, 0);
    assert_false(more);
    free(evs);
    sink_free(s);
}

static void test_a_corrupt_history_record_ends_every_replay_with_data_loss(
    void **state) {
    fixture_t *f = *state;
    sink_t *ver = sink_new(100), *rev = sink_new(100), *pat = sink_new(100);
    reel_status_t st = REEL_STATUS_INIT;
    kv_watch_t *w1, *w2, *w3;
    kv_event_t *evs;
    size_t n;
    int more;

    for (int i = 0; i < 5; i++)
        set_ok(f->kv, "p.k", "1"); /* versions 1-5 at revisions 1-5 */
    damage_history(f, 3, 0);
    /* The version replay, the revision catch-up of an exact key, and that
     * of a pattern: each sends 1 and 2, then ends naming the record. */
    w1 = watch(f, "p.k", KV_WATCH_FROM_VERSION, 0, ver, NULL, NULL);
    w2 = watch(f, "p.k", KV_WATCH_FROM_REVISION, 0, rev, NULL, NULL);
    w3 = watch(f, "p.>", KV_WATCH_FROM_REVISION, 0, pat, NULL, NULL);
    expect_end(ver, REEL_DATA_LOSS,
               "key \"p.k\": the history record of version 3 (revision 3) "
               "is corrupt");
    expect_end(rev, REEL_DATA_LOSS,
               "key \"p.k\": the history record of version 3 (revision 3) "
               "is corrupt");
    expect_end(pat, REEL_DATA_LOSS, "the history record of revision 3 is "
                                    "corrupt");
    assert_int_equal(ver->n, 2);
    assert_int_equal(rev->n, 2);
    assert_int_equal(pat->n, 2);
    for (int i = 0; i < 2; i++) {
        assert_int_equal(ver->recs[i].version, i + 1);
        assert_int_equal(rev->recs[i].version, i + 1);
        assert_int_equal(pat->recs[i].version, i + 1);
    }
    /* A read says so too, instead of leaving version 3 out. */
    assert_int_equal(kv_history(f->kv, "ns", 2, "p.k", 3, 0, 0, NULL, &evs,
                                &n, &more, &st),
                     REEL_DATA_LOSS);
    assert_non_null(strstr(reel_status_message(&st), "version 3 (revision 3)"));
    kv_watch_destroy(w1);
    kv_watch_destroy(w2);
    kv_watch_destroy(w3);
    reel_status_fini(&st);
    sink_free(ver);
    sink_free(rev);
    sink_free(pat);
}

static void test_a_missing_history_record_ends_a_replay_with_data_loss(
    void **state) {
    fixture_t *f = *state;
    sink_t *s = sink_new(100);
    kv_watch_t *w;

    for (int i = 0; i < 4; i++)
        set_ok(f->kv, "k", "1");
    damage_history(f, 2, 1);
    w = watch(f, "k", KV_WATCH_FROM_VERSION, 0, s, NULL, NULL);
    expect_end(s, REEL_DATA_LOSS, "key \"k\": the history record of version "
                                  "2 (revision 2) is missing");
    assert_int_equal(s->n, 1);
    kv_watch_destroy(w);
    sink_free(s);
}

static void test_a_corrupt_entry_ends_a_snapshot_with_data_loss(void **state) {
    fixture_t *f = *state;
    sink_t *s = sink_new(100);
    kv_watch_t *w;
    const char ekey[] = "ns\0p.b";

    set_ok(f->kv, "p.a", "1");
    set_ok(f->kv, "p.b", "1");
    set_ok(f->kv, "p.c", "1");
    raw_put(f, "kv", ekey, sizeof(ekey) - 1, "\x01", 1);
    w = watch(f, "p.>", KV_WATCH_SNAPSHOT, 0, s, NULL, NULL);
    expect_end(s, REEL_DATA_LOSS, "the stored record of key \"p.b\" is "
                                  "corrupt");
    assert_int_equal(s->n, 1);
    assert_string_equal(s->recs[0].key, "p.a");
    kv_watch_destroy(w);
    sink_free(s);
}

/*
 * A trim in a request that was rolled back raised the compacted revision
 * in memory, not on disk; a later trim under it must still be written, or
 * after a restart a pattern watch resumed before that trim would be sent
 * history with a hole instead of OUT_OF_RANGE.
 */
static void test_a_trim_after_a_rolled_back_one_is_still_stored(
    void **state) {
    fixture_t *f = *state; /* history_keep = 3 */
    kv_write_result_t res;
    reel_status_t st = REEL_STATUS_INIT;
    sink_t *s = sink_new(100);
    kv_watch_t *w;
    reel_code_t rc;

    for (int i = 0; i < 4; i++) /* revisions 1-4; the 4th trims 1 */
        set_ok(f->kv, "p.a", "1");
    for (int i = 0; i < 3; i++) /* 5-7 */
        set_ok(f->kv, "p.b", "1");
    /* Trims revision 5 in memory, then fails: rolled back. */
    reel_fault_arm("store.emit", 0, 1);
    assert_int_not_equal(
        set_full(f->kv, "ns", "p.b", "1", KV_PRECOND_NONE, 0, &res), REEL_OK);
    reel_fault_reset();
    kv_write_result_fini(&res);
    set_ok(f->kv, "p.a", "1"); /* trims revision 2 */
    close_all(f);
    open_all(f);
    w = watch(f, "p.>", KV_WATCH_FROM_REVISION, 1, s, &rc, &st);
    assert_int_equal(rc, REEL_OUT_OF_RANGE);
    reel_status_fini(&st);
    kv_watch_destroy(w);
    sink_free(s);
}

static void test_an_iterator_error_ends_a_replay_with_internal(void **state) {
    fixture_t *f = *state;
    sink_t *s = sink_new(100);
    kv_watch_t *w;

    for (int i = 0; i < 5; i++)
        set_ok(f->kv, "k", "1");
    /* The seek and two steps pass: versions 1-3 are sent, then the third
     * step fails, which must not read as the end of the history. */
    reel_fault_arm("store.iter", 3, 1);
    w = watch(f, "k", KV_WATCH_FROM_VERSION, 0, s, NULL, NULL);
    reel_fault_reset();
    expect_end(s, REEL_INTERNAL, "key \"k\": reading its history: iterate: "
                                 "injected fault");
    assert_int_equal(s->n, 3);
    kv_watch_destroy(w);
    sink_free(s);
}

static void test_an_unreadable_entry_ends_a_catch_up(void **state) {
    fixture_t *f = *state;
    sink_t *s = sink_new(2);
    kv_watch_t *w;

    w = watch(f, "k", KV_WATCH_NOW, 0, s, NULL, NULL);
    for (int i = 0; i < 5; i++)
        set_ok(f->kv, "k", "1");
    assert_int_equal(s->n, 2); /* BOOTSTRAP_DONE and version 1, then full */
    pthread_mutex_lock(&s->mu);
    s->held = 0;
    pthread_mutex_unlock(&s->mu);
    /* Catching up reads the key's record to know what was trimmed: unread,
     * it cannot tell whether the history it needs is still there. */
    reel_fault_arm("store.get", 0, 1);
    kv_watch_pump(w);
    reel_fault_reset();
    expect_end(s, REEL_INTERNAL, "key \"k\": read: injected fault");
    assert_int_equal(s->n, 2);
    kv_watch_destroy(w);
    sink_free(s);
}

/* kv's column families come from the store, by name: a store opened
 * without them cannot hold a kv, and says which one is missing. */
static void test_create_needs_the_column_families_it_declares(void **state) {
    fixture_t *f = *state;
    static const store_cf_desc_t only_kv[] = {{"kv", STORE_CF_LOOKUP},
                                              {NULL, STORE_CF_PLAIN}};
    store_opts_t o = {0};
    reel_status_t st = REEL_STATUS_INIT;
    store_t *s = NULL;
    kv_t *kv = (kv_t *)&o; /* must be reset */
    char dir[600];

    snprintf(dir, sizeof(dir), "%s/partial", f->dir);
    o.data_dir = dir;
    o.cfs = (const store_cf_desc_t *const[]){only_kv, NULL};
    assert_int_equal(store_open(&o, &s, &st), REEL_OK);
    assert_int_equal(kv_create(s, NULL, &kv, &st), REEL_FAILED_PRECONDITION);
    assert_null(kv);
    assert_non_null(strstr(reel_status_message(&st), "\"kv_history\""));
    store_close(s);
    reel_status_fini(&st);
}

static void test_an_event_publish_cannot_decode_is_read_from_storage(
    void **state) {
    fixture_t *f = *state;
    sink_t *s = sink_new(100), *p = sink_new(100);
    kv_watch_t *w, *wp;

    w = watch(f, "k", KV_WATCH_NOW, 0, s, NULL, NULL);
    wp = watch(f, "*", KV_WATCH_NOW, 0, p, NULL, NULL);
    /* The live copy of version 1 cannot be made: neither watch may pass it
     * by; both drop out of live delivery and ask for a pump. */
    reel_fault_arm("kv.publish", 0, 1);
    set_ok(f->kv, "k", "1");
    reel_fault_reset();
    assert_int_equal(s->n, 1);
    assert_int_equal(p->n, 1);
    assert_int_equal(s->wakes, 1);
    assert_int_equal(p->wakes, 1);
    /* The owners pump: each reads version 1 from storage, then is live. */
    kv_watch_pump(w);
    kv_watch_pump(wp);
    set_ok(f->kv, "k", "2");
    for (sink_t *x = s; x != NULL; x = x == s ? p : NULL) {
        assert_int_equal(sink_wait(x, 3), 3);
        assert_int_equal(x->recs[0].type, KV_EVENT_BOOTSTRAP_DONE);
        assert_int_equal(x->recs[1].version, 1);
        assert_string_equal(x->recs[1].value, "1");
        assert_int_equal(x->recs[2].version, 2);
    }
    kv_watch_destroy(w);
    kv_watch_destroy(wp);
    sink_free(s);
    sink_free(p);
}

/* ---- Purging deleted keys' history --------------------------------------- */

/* The keys of "kv_history" that start with tag: their count, and the
 * first one in first (when not NULL). */
static size_t history_keys(fixture_t *f, char tag, char *first, size_t cap,
                           size_t *first_len) {
    store_iter_t *it = store_iter_create(f->store, cf_of(f, "kv_history"),
                                         NULL);
    size_t n = 0;

    assert_non_null(it);
    for (store_iter_seek(it, &tag, 1); store_iter_valid(it);
         store_iter_next(it)) {
        size_t klen;
        const char *k = store_iter_key(it, &klen);

        if (k[0] != tag)
            break;
        if (n++ == 0 && first != NULL) {
            assert_true(klen <= cap);
            memcpy(first, k, klen);
            *first_len = klen;
        }
    }
    assert_int_equal(store_iter_status(it, NULL), REEL_OK);
    store_iter_destroy(it);
    return n;
}

static size_t history_len(fixture_t *f, const char *key, uint64_t from,
                          reel_code_t want) {
    kv_event_t *evs = NULL;
    size_t n = 0;
    int more;

    assert_int_equal(kv_history(f->kv, "ns", 2, key, strlen(key), from, 0,
                                NULL, &evs, &n, &more, NULL),
                     want);
    for (size_t i = 0; i < n; i++)
        kv_event_fini(&evs[i]);
    free(evs);
    return n;
}

static size_t purge_at(fixture_t *f, int64_t now_ms) {
    reel_status_t st = REEL_STATUS_INIT;
    size_t purged = 0;

    if (kv_purge_deleted(f->kv, now_ms, &purged, &st) != REEL_OK)
        fail_msg("purge: %s", reel_status_message(&st));
    return purged;
}

#define DAY_MS (24LL * 3600 * 1000)

/*
 * A key deleted longer ago than deleted_history_ms loses its history, the
 * delete's event and every value before it, and keeps its tombstone: get
 * still names its version, a later set goes on from it, and a watch or a
 * history read that needs what went ends with OUT_OF_RANGE. A key set
 * again after its delete, and one deleted too recently, keep theirs.
 */
static void test_a_deleted_keys_history_is_purged_its_tombstone_kept(
    void **state) {
    fixture_t *f = *state;
    kv_write_result_t res;
    reel_status_t st = REEL_STATUS_INIT;
    sink_t *s = sink_new(100), *s2 = sink_new(100);
    kv_entry_t e;
    kv_watch_t *w;
    reel_code_t rc;
    uint64_t del_rev;
    size_t events;

    set_ok(f->kv, "k", "1");
    set_ok(f->kv, "k", "2");
    set_ok(f->kv, "k", "3");
    assert_int_equal(del(f->kv, "k", &res), REEL_OK);
    del_rev = res.entry.revision;
    kv_write_result_fini(&res);
    set_ok(f->kv, "again", "1");
    del_ok(f, "again");
    set_ok(f->kv, "again", "3"); /* set since its delete: kept */
    assert_int_equal(history_keys(f, 'd', NULL, 0, NULL), 2);
    events = history_keys(f, 'r', NULL, 0, NULL);
    assert_int_equal(events, 7);

    assert_int_equal(purge_at(f, reel_clock_now_ms() + 1 * DAY_MS), 0);
    assert_int_equal(history_len(f, "k", 0, REEL_OK), 4);
    assert_int_equal(purge_at(f, reel_clock_now_ms() + 8 * DAY_MS), 1);
    assert_int_equal(history_keys(f, 'd', NULL, 0, NULL), 0);
    assert_int_equal(history_keys(f, 'r', NULL, 0, NULL), events - 4);
    assert_int_equal(history_len(f, "k", 0, REEL_OK), 0);
    history_len(f, "k", 2, REEL_OUT_OF_RANGE);
    assert_int_equal(history_len(f, "k", 4, REEL_OK), 0); /* none after 4 */
    assert_int_equal(history_len(f, "again", 0, REEL_OK), 3);

    assert_int_equal(kv_get(f->kv, "ns", 2, "k", 1, &e, NULL), REEL_NOT_FOUND);
    assert_true(e.deleted);
    assert_int_equal(e.version, 4);
    kv_entry_fini(&e);
    /* What went cannot be replayed: ended, not skipped. */
    assert_null(watch(f, "k", KV_WATCH_FROM_REVISION, 1, s, &rc, &st));
    assert_int_equal(rc, REEL_OUT_OF_RANGE);
    reel_status_fini(&st);
    assert_null(watch(f, "*", KV_WATCH_FROM_REVISION, 1, s, &rc, &st));
    assert_int_equal(rc, REEL_OUT_OF_RANGE);
    reel_status_fini(&st);
    w = watch(f, "k", KV_WATCH_FROM_VERSION, 2, s2, NULL, &st);
    expect_end(s2, REEL_OUT_OF_RANGE,
               "version 3 is no longer retained; none of the key's history "
               "is (it was deleted");
    kv_watch_destroy(w);
    w = watch(f, "k", KV_WATCH_FROM_REVISION, del_rev, s, NULL, &st);
    assert_non_null(w);
    kv_watch_destroy(w);

    assert_int_equal(set_ok(f->kv, "k", "5"), 5); /* never reused */
    assert_int_equal(history_len(f, "k", 0, REEL_OK), 1);
    assert_int_equal(purge_at(f, reel_clock_now_ms() + 8 * DAY_MS), 0);
    sink_free(s);
    sink_free(s2);
}

/* The module's own thread purges, once the age has passed. */
static void test_the_purge_runs_of_its_own_accord(void **state) {
    fixture_t *f = *state;
    int i;

    set_ok(f->kv, "k", "1");
    del_ok(f, "k");
    for (i = 0; i < TESTING_WAIT_MS / 10; i++) {
        if (history_len(f, "k", 0, REEL_OK) == 0)
            break;
        usleep(10 * 1000);
    }
    assert_int_equal(history_len(f, "k", 0, REEL_OK), 0);
    assert_int_equal(history_keys(f, 'd', NULL, 0, NULL), 0);
}

/* Records of namespace "ns" in "kv": the live keys' (tomb 0), or the
 * tombstones' (tomb 1, under KV_TOMB). */
static size_t kv_records(fixture_t *f, int tomb) {
    store_iter_t *it = store_iter_create(f->store, cf_of(f, "kv"), NULL);
    const char *base = tomb ? "\0ns" : "ns";
    size_t blen = tomb ? 4 : 3, n = 0, klen; /* the NUL after ns too */

    assert_non_null(it);
    for (store_iter_seek(it, base, blen); store_iter_valid(it);
         store_iter_next(it)) {
        const char *k = store_iter_key(it, &klen);

        if (klen < blen || memcmp(k, base, blen) != 0)
            break;
        n++;
    }
    assert_int_equal(store_iter_status(it, NULL), REEL_OK);
    store_iter_destroy(it);
    return n;
}

/* Puts key's tombstone back among the live keys, where data dirs of
 * formats 1 to 4 keep it. */
static void as_older_format(fixture_t *f, const char *key) {
    char ek[64], tk[65], *rec = NULL;
    size_t eklen = 3 + strlen(key), rlen = 0;

    assert_true(eklen < sizeof(ek));
    memcpy(ek, "ns", 3);
    memcpy(ek + 3, key, eklen - 3);
    tk[0] = '\0';
    memcpy(tk + 1, ek, eklen);
    assert_int_equal(store_get(f->store, cf_of(f, "kv"), tk, eklen + 1, &rec,
                               &rlen, NULL),
                     REEL_OK);
    raw_put(f, "kv", ek, eklen, rec, rlen);
    raw_put(f, "kv", tk, eklen + 1, NULL, 0);
    free(rec);
}

/* Lists namespace "ns" into keys ("a,b-,c": b deleted); returns *more. */
static int list_keys(fixture_t *f, int deleted, const char *after,
                     uint32_t limit, char *keys, size_t cap) {
    kv_list_args_t a = {0};
    kv_entry_t *out;
    size_t n, off = 0;
    int more;

    a.ns = "ns", a.ns_len = 2, a.prefix = "";
    a.start_after = after, a.start_after_len = after ? strlen(after) : 0;
    a.limit = limit;
    a.include_deleted = deleted;
    assert_int_equal(kv_list(f->kv, &a, &out, &n, &more, NULL), REEL_OK);
    keys[0] = '\0';
    for (size_t i = 0; i < n; i++) {
        off += (size_t)snprintf(keys + off, cap - off, "%s%s%s",
                                i ? "," : "", out[i].key,
                                out[i].deleted ? "-" : "");
        assert_true(off < cap);
        kv_entry_fini(&out[i]);
    }
    free(out);
    return more;
}

/*
 * Deleted keys sit apart from the live ones: a listing of live keys never
 * reads them (a corrupt record among them does not stop it), and one with
 * the deleted merges both in key order, pages and start_after included. A
 * key moves between the two places as it is deleted and set again, and
 * keeps counting its versions.
 */
static void test_a_listing_walks_no_tombstones(void **state) {
    fixture_t *f = *state;
    kv_list_args_t a = {0};
    kv_write_result_t res;
    kv_entry_t *out, e;
    reel_status_t st = REEL_STATUS_INIT;
    const char *keys[] = {"a", "b", "c", "d", "e"};
    char got[128];
    size_t n;
    int more;

    for (int i = 0; i < 5; i++)
        set_ok(f->kv, keys[i], "1");
    del_ok(f, "b");
    del_ok(f, "d");
    assert_int_equal(kv_records(f, 0), 3);
    assert_int_equal(kv_records(f, 1), 2);

    raw_put(f, "kv", "\0ns\0zz", 6, "\x01", 1); /* a corrupt tombstone */
    assert_false(list_keys(f, 0, NULL, 0, got, sizeof(got)));
    assert_string_equal(got, "a,c,e");
    a.ns = "ns", a.ns_len = 2, a.prefix = "", a.include_deleted = 1;
    assert_int_equal(kv_list(f->kv, &a, &out, &n, &more, &st),
                     REEL_DATA_LOSS);
    assert_non_null(strstr(reel_status_message(&st), "corrupt"));
    reel_status_fini(&st);
    raw_put(f, "kv", "\0ns\0zz", 6, NULL, 0);

    assert_false(list_keys(f, 1, NULL, 0, got, sizeof(got)));
    assert_string_equal(got, "a,b-,c,d-,e");
    assert_true(list_keys(f, 1, NULL, 2, got, sizeof(got)));
    assert_string_equal(got, "a,b-");
    assert_true(list_keys(f, 1, "b", 2, got, sizeof(got)));
    assert_string_equal(got, "c,d-");
    assert_false(list_keys(f, 1, "d", 2, got, sizeof(got)));
    assert_string_equal(got, "e");
    assert_false(list_keys(f, 0, "b", 0, got, sizeof(got)));
    assert_string_equal(got, "c,e");

    assert_int_equal(kv_get(f->kv, "ns", 2, "d", 1, &e, NULL), REEL_NOT_FOUND);
    assert_true(e.deleted);
    assert_int_equal(e.version, 2);
    kv_entry_fini(&e);
    assert_int_equal(set_ok(f->kv, "b", "3"), 3); /* back to the live keys */
    assert_int_equal(kv_records(f, 0), 4);
    assert_int_equal(kv_records(f, 1), 1);
    assert_false(list_keys(f, 0, NULL, 0, got, sizeof(got)));
    assert_string_equal(got, "a,b,c,e");
    assert_int_equal(set_full(f->kv, "ns", "d", "1", KV_PRECOND_ABSENT, 0,
                              &res),
                     REEL_OK); /* absent: a tombstone is */
    assert_int_equal(res.entry.version, 3);
    assert_int_equal(res.prev_version, 2);
    kv_write_result_fini(&res);
    assert_int_equal(del(f->kv, "d", &res), REEL_OK);
    assert_int_equal(res.entry.version, 4);
    kv_write_result_fini(&res);
    assert_int_equal(del(f->kv, "d", &res), REEL_OK); /* writes nothing */
    assert_false(res.existed);
    kv_write_result_fini(&res);
    assert_int_equal(kv_records(f, 0), 4);
    assert_int_equal(kv_records(f, 1), 1);
    assert_false(list_keys(f, 1, NULL, 0, got, sizeof(got)));
    assert_string_equal(got, "a,b,c,d-,e");
}

/* A record stored in the place the other kind belongs is corrupt: a write
 * to its key fails with DATA_LOSS and writes nothing. */
static void test_a_tombstone_among_the_live_keys_is_data_loss(void **state) {
    fixture_t *f = *state;
    kv_write_result_t res;
    uint64_t rev;

    set_ok(f->kv, "k", "1");
    del_ok(f, "k");
    as_older_format(f, "k"); /* never upgraded */
    rev = store_revision(f->store);
    assert_int_equal(set_full(f->kv, "ns", "k", "2", KV_PRECOND_NONE, 0, &res),
                     REEL_DATA_LOSS);
    assert_non_null(strstr(reel_status_message(&res.status),
                           "a tombstone stored as a live key"));
    kv_write_result_fini(&res);
    assert_int_equal(store_revision(f->store), rev);
}

/* Tombstones among the live keys, as a format 4 dir holds them, written in
 * one commit (the upgrade moves them in batches of 4096). */
typedef struct older {
    store_cf_t *cf;
    const char *rec;
    size_t rlen, n;
} older_t;

static reel_code_t older_apply(store_txn_t *txn, void *arg,
                               reel_status_t *st) {
    older_t *o = arg;
    char k[32];

    (void)st;
    for (size_t i = 0; i < o->n; i++) {
        int len = snprintf(k, sizeof(k), "ns%cold.%05zu", '\0', i);

        store_txn_put(txn, o->cf, k, (size_t)len, o->rec, o->rlen);
    }
    return REEL_OK;
}

/*
 * A format 4 dir keeps its tombstones among the live keys: kv_upgrade()
 * from 4 moves every one apart, over several commits, and leaves the live
 * keys and the purge entries as they were. Each moved key still reads as
 * deleted at its version and goes on from it when set again.
 */
static void test_an_upgrade_moves_the_tombstones_of_an_older_dir(
    void **state) {
    fixture_t *f = *state;
    reel_status_t st = REEL_STATUS_INIT;
    char *rec = NULL, got[64];
    older_t o = {cf_of(f, "kv"), NULL, 0, 10000};
    kv_entry_t e;
    size_t dels;

    set_ok(f->kv, "a", "1");
    set_ok(f->kv, "gone", "1");
    set_ok(f->kv, "gone", "2");
    del_ok(f, "gone");
    set_ok(f->kv, "z", "1");
    assert_int_equal(store_get(f->store, o.cf, "\0ns\0gone", 8, &rec,
                               &o.rlen, NULL),
                     REEL_OK);
    o.rec = rec;
    assert_int_equal(store_exec(f->store, older_apply, &o, NULL, &st),
                     REEL_OK);
    as_older_format(f, "gone");
    dels = history_keys(f, 'd', NULL, 0, NULL);
    assert_int_equal(kv_records(f, 0), 10003);
    assert_int_equal(kv_records(f, 1), 0);

    assert_int_equal(kv_upgrade(f->kv, 4, &st), REEL_OK);
    assert_int_equal(kv_records(f, 0), 2);
    assert_int_equal(kv_records(f, 1), 10001);
    assert_int_equal(history_keys(f, 'd', NULL, 0, NULL), dels);
    assert_false(list_keys(f, 0, NULL, 0, got, sizeof(got)));
    assert_string_equal(got, "a,z");
    assert_int_equal(kv_get(f->kv, "ns", 2, "old.09999", 9, &e, NULL),
                     REEL_NOT_FOUND);
    assert_true(e.deleted);
    assert_int_equal(e.version, 3);
    kv_entry_fini(&e);
    assert_int_equal(set_ok(f->kv, "gone", "4"), 4);
    assert_int_equal(set_ok(f->kv, "old.00000", "4"), 4);
    assert_int_equal(kv_upgrade(f->kv, 4, &st), REEL_OK); /* none left */
    assert_int_equal(kv_records(f, 0), 4);
    assert_int_equal(kv_records(f, 1), 9999);
    free(rec);
    reel_status_fini(&st);
}

/* A data dir of format 3 has tombstones without purge entries:
 * kv_upgrade() from 3 writes them, at the tombstone's own time. */
static void test_an_upgrade_indexes_the_tombstones_of_an_older_dir(
    void **state) {
    fixture_t *f = *state;
    reel_status_t st = REEL_STATUS_INIT;
    char dk[64];
    size_t dklen = 0;

    set_ok(f->kv, "k", "1");
    del_ok(f, "k");
    set_ok(f->kv, "live", "1");
    assert_int_equal(history_keys(f, 'd', dk, sizeof(dk), &dklen), 1);
    raw_put(f, "kv_history", dk, dklen, NULL, 0); /* as format 3 left it */
    as_older_format(f, "k");
    assert_int_equal(purge_at(f, reel_clock_now_ms() + 8 * DAY_MS), 0);

    assert_int_equal(kv_upgrade(f->kv, 5, &st), REEL_OK); /* nothing to do */
    assert_int_equal(history_keys(f, 'd', NULL, 0, NULL), 0);
    assert_int_equal(kv_upgrade(f->kv, 3, &st), REEL_OK);
    assert_int_equal(history_keys(f, 'd', NULL, 0, NULL), 1);
    assert_int_equal(kv_records(f, 0), 1);
    assert_int_equal(kv_records(f, 1), 1);
    assert_int_equal(purge_at(f, reel_clock_now_ms() + 1 * DAY_MS), 0);
    assert_int_equal(purge_at(f, reel_clock_now_ms() + 8 * DAY_MS), 1);
    assert_int_equal(history_len(f, "k", 0, REEL_OK), 0);
    assert_int_equal(history_len(f, "live", 0, REEL_OK), 1);
    reel_status_fini(&st);
}

int main(void) {
    const struct CMUnitTest tests[] = {
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
#define T3(fn) cmocka_unit_test_setup_teardown(fn, setup_keep3, teardown)
        T(test_versions_grow_by_one_per_set_and_delete),
        T(test_create_needs_the_column_families_it_declares),
        T(test_deleting_a_missing_key_writes_nothing),
        T(test_create_only_on_a_live_key_is_already_exists),
        T(test_stale_version_is_aborted_naming_the_current),
        T(test_concurrent_cas_increments_lose_no_update),
        T(test_bad_input_is_invalid_and_writes_nothing),
        T(test_names_that_would_make_ambiguous_subjects_are_invalid),
        T(test_bad_namespaces_are_invalid_on_every_entry_point),
        T(test_a_namespace_from_before_the_rule_is_read_only),
        T(test_list_pages_in_key_order_with_prefix),
        T3(test_history_keeps_the_last_n_versions),
        T(test_a_deleted_keys_history_is_purged_its_tombstone_kept),
        T(test_an_upgrade_indexes_the_tombstones_of_an_older_dir),
        T(test_a_listing_walks_no_tombstones),
        T(test_a_tombstone_among_the_live_keys_is_data_loss),
        T(test_an_upgrade_moves_the_tombstones_of_an_older_dir),
        cmocka_unit_test_setup_teardown(test_the_purge_runs_of_its_own_accord,
                                        setup_purge, teardown),
        T3(test_a_busy_key_elsewhere_does_not_end_pattern_watches),
        T(test_list_stops_at_the_byte_budget),
        T(test_history_stops_at_the_byte_budget),
        T(test_watch_sees_every_transition_with_prev),
        T(test_patterns_match_exactly_what_they_should),
        T(test_malformed_watch_patterns_are_invalid),
        T(test_snapshot_then_live_has_no_gap_or_duplicate),
        T(test_grouped_watches_take_a_live_event_once_for_all),
        T(test_stalled_watcher_catches_up_from_storage),
        T3(test_stalled_watcher_past_retention_ends_naming_its_revision),
        T3(test_a_trim_after_a_rolled_back_one_is_still_stored),
        T(test_from_version_replays_then_goes_live),
        T(test_from_revision_resumes_after_reopen_without_gap),
        T(test_from_revision_on_a_long_history_sends_exactly_what_follows),
        T(test_from_revision_past_the_head_is_invalid_naming_it),
        T(test_from_version_at_uint64_max_does_not_wrap),
        T(test_a_corrupt_history_record_ends_every_replay_with_data_loss),
        T(test_a_missing_history_record_ends_a_replay_with_data_loss),
        T(test_a_corrupt_entry_ends_a_snapshot_with_data_loss),
        T(test_an_iterator_error_ends_a_replay_with_internal),
        T(test_an_unreadable_entry_ends_a_catch_up),
        T(test_an_event_publish_cannot_decode_is_read_from_storage),
    };
    return cmocka_run_group_tests_name("kv", tests, NULL, NULL);
}
