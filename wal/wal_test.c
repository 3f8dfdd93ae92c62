/*
 * wal/wal_test.c: one record per committed change, in the change's commit;
 * subscriptions replay, filter, follow live and catch up after a stall.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "wal/wal.h"

typedef struct fixture {
    char dir[512];
    store_t *store;
    wal_t *wal;
    int fail_encode;
} fixture_t;

/* Subject "t.<type>", bytes: the change's own event bytes. */
static reel_code_t encode(void *arg, const store_change_t *c, char **subject,
                          uint8_t **bytes, size_t *len, reel_status_t *st) {
    fixture_t *f = arg;

    if (f->fail_encode)
        return reel_status_set(st, REEL_INTERNAL, "encoder refused");
    if (asprintf(subject, "t.%u", c->type) < 0)
        return REEL_RESOURCE_EXHAUSTED;
    *bytes = malloc(c->len ? c->len : 1);
    memcpy(*bytes, c->event, c->len);
    *len = c->len;
    return REEL_OK;
}

static reel_code_t before(void *arg, store_txn_t *txn,
                          const store_change_t *c, size_t n,
                          reel_status_t *st) {
    fixture_t *f = arg;
    return f->wal ? wal_before_commit(f->wal, txn, c, n, st) : REEL_OK;
}

static void publish(void *arg, const store_change_t *c, size_t n) {
    fixture_t *f = arg;
    if (f->wal)
        wal_publish(f->wal, c, n);
}

static int rm_entry(const char *p, const struct stat *sb, int fl,
                    struct FTW *ftw) {
    (void)sb, (void)fl, (void)ftw;
    return remove(p);
}

static int setup(void **state) {
    fixture_t *f = calloc(1, sizeof(*f));
    const char *tmp = getenv("TEST_TMPDIR");
    store_opts_t o = {0};

    snprintf(f->dir, sizeof(f->dir), "%s/wal-XXXXXX", tmp ? tmp : "/tmp");
    if (mkdtemp(f->dir) == NULL)
        return -1;
    o.data_dir = f->dir;
    o.publish = publish;
    o.publish_arg = f;
    o.before_commit = before;
    o.before_commit_arg = f;
    if (store_open(&o, &f->store, NULL) != REEL_OK ||
        wal_create(f->store, encode, f, NULL, &f->wal, NULL) != REEL_OK)
        return -1;
    *state = f;
    return 0;
}

static int teardown(void **state) {
    fixture_t *f = *state;

    store_close(f->store);
    wal_destroy(f->wal);
    nftw(f->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    free(f);
    return 0;
}

typedef struct emit_arg {
    uint32_t type;
    const char *body;
    int fail;
} emit_arg_t;

static reel_code_t apply_emit(store_txn_t *txn, void *arg, reel_status_t *st) {
    emit_arg_t *a = arg;

    store_txn_put(txn, STORE_CF_KV, a->body, strlen(a->body), "x", 1);
    store_txn_emit(txn, STORE_MODULE_KV, a->type, a->body, strlen(a->body));
    return a->fail ? reel_status_set(st, REEL_ABORTED, "no") : REEL_OK;
}

static reel_code_t emit(fixture_t *f, uint32_t type, const char *body,
                        int fail) {
    emit_arg_t a = {type, body, fail};
    return store_exec(f->store, apply_emit, &a, NULL, NULL);
}

typedef struct sink {
    char got[64][16];
    uint64_t revs[64];
    size_t n, limit;
} sink_t;

static int deliver(void *arg, const uint8_t *b, size_t len, uint64_t rev) {
    sink_t *s = arg;

    if (s->n >= s->limit)
        return 1;
    snprintf(s->got[s->n], sizeof(s->got[0]), "%.*s", (int)len, b);
    s->revs[s->n++] = rev;
    return 0;
}

static int ended;

static void end(void *arg, const reel_status_t *st) {
    (void)arg;
    ended = st->code;
}

static const wal_sink_t ops = {deliver, end};

static void test_every_change_is_stored_once_in_its_commit(void **state) {
    fixture_t *f = *state;
    uint64_t head, oldest;
    sink_t s = {.limit = 64};
    wal_sub_t *sub;

    assert_int_equal(emit(f, 1, "a", 0), REEL_OK);
    assert_int_equal(emit(f, 2, "b", 1), REEL_ABORTED); /* rolled back */
    assert_int_equal(emit(f, 1, "c", 0), REEL_OK);
    f->fail_encode = 1;
    assert_int_equal(emit(f, 1, "d", 0), REEL_INTERNAL); /* group fails */
    f->fail_encode = 0;
    assert_int_equal(store_revision(f->store), 2);
    wal_head(f->wal, &head, &oldest);
    assert_int_equal(head, 2);
    assert_int_equal(oldest, 1);
    assert_int_equal(wal_sub_create(f->wal, 0, "", &ops, &s, &sub, NULL),
                     REEL_OK);
    wal_sub_pump(sub);
    assert_int_equal(s.n, 2);
    assert_string_equal(s.got[0], "a");
    assert_string_equal(s.got[1], "c");
    assert_int_equal(s.revs[1], 2);
    wal_sub_destroy(sub);
}

static void test_subscriptions_filter_follow_and_catch_up(void **state) {
    fixture_t *f = *state;
    sink_t s = {.limit = 2};
    wal_sub_t *sub;

    assert_int_equal(emit(f, 1, "one", 0), REEL_OK);
    assert_int_equal(emit(f, 2, "two", 0), REEL_OK);
    assert_int_equal(wal_sub_create(f->wal, 0, "t.1", &ops, &s, &sub, NULL),
                     REEL_OK);
    wal_sub_pump(sub);
    assert_int_equal(s.n, 1); /* only t.1 */
    assert_true(wal_sub_live(sub));
    assert_int_equal(emit(f, 1, "live", 0), REEL_OK);
    assert_int_equal(s.n, 2);
    assert_string_equal(s.got[1], "live");
    /* Full: the next ones wait in storage until there is room. */
    assert_int_equal(emit(f, 1, "x1", 0), REEL_OK);
    assert_int_equal(emit(f, 1, "x2", 0), REEL_OK);
    assert_false(wal_sub_live(sub));
    s.limit = 64;
    wal_sub_pump(sub);
    assert_int_equal(s.n, 4);
    assert_string_equal(s.got[3], "x2");
    assert_true(wal_sub_live(sub));
    wal_sub_destroy(sub);
    assert_int_equal(wal_sub_create(f->wal, 0, "t.>.x", &ops, &s, &sub, NULL),
                     REEL_INVALID_ARGUMENT);
}

static void test_a_subscriber_behind_retention_ends_out_of_range(
    void **state) {
    fixture_t *f = *state;
    sink_t s = {.limit = 1};
    wal_consumer_t c;
    uint64_t start, head, oldest;
    wal_sub_t *sub;

    for (int i = 0; i < 5; i++)
        assert_int_equal(emit(f, 1, "e", 0), REEL_OK);
    assert_int_equal(wal_sub_create(f->wal, 0, "", &ops, &s, &sub, NULL),
                     REEL_OK);
    wal_sub_pump(sub);
    assert_int_equal(s.n, 1); /* stalled after revision 1 */
    /* A consumer acknowledges everything: the prefix goes. */
    assert_int_equal(wal_consumer_attach(f->wal, "c1", 0, "", &start, NULL),
                     REEL_OK);
    assert_int_equal(wal_ack(f->wal, "c1", 4, &c, NULL), REEL_OK);
    wal_consumer_fini(&c);
    assert_int_equal(wal_trim(f->wal, NULL), REEL_OK);
    wal_head(f->wal, &head, &oldest);
    assert_int_equal(oldest, 5);
    ended = 0;
    s.limit = 64;
    wal_sub_pump(sub);
    assert_int_equal(ended, REEL_OUT_OF_RANGE);
    assert_int_equal(s.n, 1); /* nothing after the gap was delivered */
    wal_sub_destroy(sub);
    wal_consumer_detach(f->wal, "c1");
    /* Asking for a trimmed revision up front is refused too. */
    assert_int_equal(wal_sub_create(f->wal, 2, "", &ops, &s, &sub, NULL),
                     REEL_OUT_OF_RANGE);
}

static reel_code_t apply_emit_many(store_txn_t *txn, void *arg,
                                   reel_status_t *st) {
    (void)st;
    for (int i = 0; i < *(int *)arg; i++) {
        char k[16];
        int klen = snprintf(k, sizeof(k), "m%d", i);

        store_txn_put(txn, STORE_CF_KV, k, (size_t)klen, "x", 1);
        store_txn_emit(txn, STORE_MODULE_KV, 1, "m", 1);
    }
    return REEL_OK;
}

/* Trims go in chunks of 5,000 events and remember where the last one
 * ended, so the next scan starts there: a full chunk, a partial one, and
 * a reopen must all leave the oldest event exactly where retention says. */
static void test_trims_in_chunks_keep_the_oldest_event_exact(void **state) {
    fixture_t *f = *state;
    sink_t s = {.limit = 1};
    wal_consumer_t c;
    uint64_t start, head, oldest;
    wal_sub_t *sub;
    int n = 6000;

    assert_int_equal(store_exec(f->store, apply_emit_many, &n, NULL, NULL),
                     REEL_OK);
    assert_int_equal(store_exec(f->store, apply_emit_many, &n, NULL, NULL),
                     REEL_OK);
    wal_head(f->wal, &head, &oldest);
    assert_int_equal(head, 12000);
    assert_int_equal(oldest, 1);
    assert_int_equal(wal_consumer_attach(f->wal, "c1", 0, "", &start, NULL),
                     REEL_OK);
    assert_int_equal(wal_ack(f->wal, "c1", 11000, &c, NULL), REEL_OK);
    wal_consumer_fini(&c);
    assert_int_equal(wal_trim(f->wal, NULL), REEL_OK); /* 5000+5000+1000 */
    wal_head(f->wal, &head, &oldest);
    assert_int_equal(oldest, 11001);
    assert_int_equal(wal_ack(f->wal, "c1", 11500, &c, NULL), REEL_OK);
    wal_consumer_fini(&c);
    assert_int_equal(wal_trim(f->wal, NULL), REEL_OK);
    wal_head(f->wal, &head, &oldest);
    assert_int_equal(oldest, 11501);
    wal_consumer_detach(f->wal, "c1");
    assert_int_equal(wal_sub_create(f->wal, 11499, "", &ops, &s, &sub, NULL),
                     REEL_OUT_OF_RANGE);
    assert_int_equal(wal_sub_create(f->wal, 11500, "", &ops, &s, &sub, NULL),
                     REEL_OK);
    wal_sub_pump(sub);
    assert_int_equal(s.n, 1);
    assert_int_equal(s.revs[0], 11501);
    wal_sub_destroy(sub);
    /* A new wal over the same store finds the oldest event again. */
    wal_destroy(f->wal);
    f->wal = NULL;
    assert_int_equal(wal_create(f->store, encode, f, NULL, &f->wal, NULL),
                     REEL_OK);
    wal_head(f->wal, &head, &oldest);
    assert_int_equal(head, 12000);
    assert_int_equal(oldest, 11501);
}

static size_t consumer_100_bytes(void *arg, const void *elem) {
    (void)arg, (void)elem;
    return 100;
}

/* Pages of consumers from the start; their names, space-separated. */
static size_t consumer_pages(fixture_t *f, size_t limit,
                             const reel_page_t *page, char *got, size_t cap) {
    char after[130] = "";
    size_t pages = 0, n;
    wal_consumer_t *cs;
    int more;

    got[0] = '\0';
    do {
        assert_int_equal(wal_consumers(f->wal, after, limit, page, &cs, &n,
                                       &more, NULL),
                         REEL_OK);
        assert_true(n >= 1);
        snprintf(after, sizeof(after), "%s", cs[n - 1].name);
        for (size_t i = 0; i < n; i++) {
            snprintf(got + strlen(got), cap - strlen(got), "%s ",
                     cs[i].name);
            wal_consumer_fini(&cs[i]);
        }
        free(cs);
        pages++;
    } while (more && pages < 16);
    return pages;
}

static void test_consumers_page_by_name_count_and_bytes(void **state) {
    fixture_t *f = *state;
    reel_page_t page = {250, consumer_100_bytes, NULL};
    uint64_t start;
    char name[16], got[64];

    for (int i = 0; i < 5; i++) {
        snprintf(name, sizeof(name), "c%d", i);
        assert_int_equal(wal_consumer_attach(f->wal, name, 0, "", &start,
                                             NULL),
                         REEL_OK);
        wal_consumer_detach(f->wal, name);
    }
    /* By bytes: 100 each in 250, two a page. */
    assert_int_equal(consumer_pages(f, 0, &page, got, sizeof(got)), 3);
    assert_string_equal(got, "c0 c1 c2 c3 c4 ");
    /* By count; a full last page says no more. */
    assert_int_equal(consumer_pages(f, 5, NULL, got, sizeof(got)), 1);
    assert_string_equal(got, "c0 c1 c2 c3 c4 ");
    assert_int_equal(consumer_pages(f, 4, NULL, got, sizeof(got)), 2);
    assert_string_equal(got, "c0 c1 c2 c3 c4 ");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(
            test_every_change_is_stored_once_in_its_commit, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_subscriptions_filter_follow_and_catch_up, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_a_subscriber_behind_retention_ends_out_of_range, setup,
            teardown),
        cmocka_unit_test_setup_teardown(
            test_trims_in_chunks_keep_the_oldest_event_exact, setup,
            teardown),
        cmocka_unit_test_setup_teardown(
            test_consumers_page_by_name_count_and_bytes, setup, teardown),
    };
    return cmocka_run_group_tests_name("wal", tests, NULL, NULL);
}
