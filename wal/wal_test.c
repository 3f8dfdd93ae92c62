/*
 * wal/wal_test.c: one record per committed change, in the change's commit;
 * subscriptions replay, filter, follow live and catch up after a stall;
 * cursors past the head; retention by the limits, durable consumers
 * holding it up to their cap, then invalidated; takeover; read failures
 * that end a subscription or stop a trim.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/fault.h"
#include "testing/fixture.h"
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
    /* A body "::T:..." stands for a tenant's event: "t.::T:...". */
    if (c->len > 2 && memcmp(c->event, "::", 2) == 0
            ? asprintf(subject, "t.%.*s", (int)c->len, (const char *)c->event) < 0
            : asprintf(subject, "t.%u", c->type) < 0)
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

/* The WAL's family, and one the test's changes write to (as a module's
 * would), under module id 1. */
#define TEST_MODULE 1
static const store_cf_desc_t data_cfs[] = {{"data", STORE_CF_PLAIN},
                                           {NULL, STORE_CF_PLAIN}};
static const store_cf_desc_t *const test_cfs[] = {wal_cfs, data_cfs, NULL};
/* "data" of the open store: apply functions see only their txn. */
static store_cf_t *data;

/* Only the test trims: the background trimmer waits an hour. */
static const wal_limits_t test_limits = {.trim_interval_ms = 3600000};

/* A new wal over the same store, with these limits (interval as above). */
static void reopen(fixture_t *f, wal_limits_t lim) {
    lim.trim_interval_ms = test_limits.trim_interval_ms;
    wal_destroy(f->wal);
    f->wal = NULL;
    assert_int_equal(wal_create(f->store, encode, f, &lim, &f->wal, NULL),
                     REEL_OK);
}

static int setup(void **state) {
    fixture_t *f = calloc(1, sizeof(*f));
    store_opts_t o = {0};

    if (testing_dir_make(f->dir, sizeof(f->dir), "wal") != 0)
        return -1;
    o.cfs = test_cfs;
    o.publish = publish;
    o.publish_arg = f;
    o.before_commit = before;
    o.before_commit_arg = f;
    f->store = testing_store_open(f->dir, &o);
    if (store_cf_lookup(f->store, "data", &data, NULL) != REEL_OK ||
        wal_create(f->store, encode, f, &test_limits, &f->wal, NULL) !=
            REEL_OK)
        return -1;
    *state = f;
    return 0;
}

static int teardown(void **state) {
    fixture_t *f = *state;
    int rc;

    reel_fault_reset();
    wal_stop(f->wal);
    store_close(f->store);
    wal_destroy(f->wal);
    rc = testing_dir_remove(f->dir);
    free(f);
    return rc;
}

typedef struct emit_arg {
    uint32_t type;
    const char *body;
    int fail;
} emit_arg_t;

static reel_code_t apply_emit(store_txn_t *txn, void *arg, reel_status_t *st) {
    emit_arg_t *a = arg;

    store_txn_put(txn, data, a->body, strlen(a->body), "x", 1);
    store_txn_emit(txn, TEST_MODULE, a->type, a->body, strlen(a->body));
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
    reel_code_t ended; /* what end said, once */
    int ends, wakes;
    char why[512];
} sink_t;

static int deliver(void *arg, const uint8_t *b, size_t len, uint64_t rev) {
    sink_t *s = arg;

    if (s->n >= s->limit)
        return 1;
    snprintf(s->got[s->n], sizeof(s->got[0]), "%.*s", (int)len, b);
    s->revs[s->n++] = rev;
    return 0;
}

static void end(void *arg, const reel_status_t *st) {
    sink_t *s = arg;

    s->ended = st->code;
    s->ends++;
    snprintf(s->why, sizeof(s->why), "%s", reel_status_message(st));
}

static void wake(void *arg) {
    ((sink_t *)arg)->wakes++;
}

static const wal_sink_t ops = {deliver, end, wake, NULL};

static uint64_t oldest_of(fixture_t *f) {
    uint64_t head, oldest;

    assert_int_equal(wal_head(f->wal, &head, &oldest, NULL), REEL_OK);
    return oldest;
}

/* Creates (or resumes) consumer name at from and lets it go. */
static void make_consumer(fixture_t *f, const char *name, uint64_t from) {
    sink_t s = {.limit = 0};
    wal_sub_t *sub;

    assert_int_equal(wal_consumer_subscribe(f->wal, name, from, 0, "", 0, &ops,
                                            &s, &sub, NULL),
                     REEL_OK);
    wal_sub_destroy(sub);
}

static void ack(fixture_t *f, const char *name, uint64_t rev) {
    wal_consumer_t c;

    assert_int_equal(wal_ack(f->wal, name, rev, &c, NULL), REEL_OK);
    wal_consumer_fini(&c);
}

/* The consumer named name, from wal_consumers (the caller finis it). */
static wal_consumer_t listed(fixture_t *f, const char *name) {
    wal_consumer_t *cs, found = {0};
    size_t n;

    assert_int_equal(
        wal_consumers(f->wal, NULL, 0, NULL, &cs, &n, NULL, NULL), REEL_OK);
    for (size_t i = 0; i < n; i++) {
        if (strcmp(cs[i].name, name) == 0)
            found = cs[i];
        else
            wal_consumer_fini(&cs[i]);
    }
    free(cs);
    assert_non_null(found.name);
    return found;
}

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
    assert_int_equal(wal_head(f->wal, &head, &oldest, NULL), REEL_OK);
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

/*
 * A tenant's subscription (sink.scope) takes its tenant's events alone,
 * from storage and live, with or without a pattern; live, one without a
 * literal second token is indexed under the mark, so other tenants'
 * events pass it by, and its cursor still moves past them.
 */
static void test_a_scoped_subscription_takes_its_tenants_events_alone(
    void **state) {
    fixture_t *f = *state;
    sink_t s = {.limit = 64}, p = {.limit = 64};
    wal_sink_t scoped = ops;
    wal_sub_t *sub, *psub;

    scoped.scope = "::a:";
    assert_int_equal(emit(f, 1, "::a:k1", 0), REEL_OK);
    assert_int_equal(emit(f, 1, "::b:k1", 0), REEL_OK);
    assert_int_equal(emit(f, 1, "plain", 0), REEL_OK);
    assert_int_equal(emit(f, 1, "::ab:k1", 0), REEL_OK);
    assert_int_equal(wal_sub_create(f->wal, 0, "", &scoped, &s, &sub, NULL),
                     REEL_OK);
    assert_int_equal(
        wal_sub_create(f->wal, 0, "t.>", &scoped, &p, &psub, NULL), REEL_OK);
    wal_sub_pump(sub);
    wal_sub_pump(psub);
    assert_int_equal(s.n, 1);
    assert_string_equal(s.got[0], "::a:k1");
    assert_int_equal(p.n, 1);
    assert_true(wal_sub_live(sub) && wal_sub_live(psub));
    assert_int_equal(emit(f, 1, "::b:k2", 0), REEL_OK);
    assert_int_equal(emit(f, 1, "::a:k2", 0), REEL_OK);
    assert_int_equal(emit(f, 1, "other", 0), REEL_OK);
    assert_int_equal(s.n, 2);
    assert_string_equal(s.got[1], "::a:k2");
    assert_int_equal(p.n, 2);
    assert_string_equal(p.got[1], "::a:k2");
    assert_int_equal(wal_sub_cursor(sub), store_revision(f->store));
    wal_sub_destroy(psub);
    wal_sub_destroy(sub);
}

/* The default tenant's tails (WAL_SCOPE_UNMARKED): events of no tenant's
 * mark alone, from storage and live (indexed under the unmarked key). */
static void test_an_unmarked_scope_takes_no_tenants_events(void **state) {
    fixture_t *f = *state;
    sink_t s = {.limit = 64}, p = {.limit = 64};
    wal_sink_t unmarked = ops;
    wal_sub_t *sub, *psub;

    unmarked.scope = WAL_SCOPE_UNMARKED;
    assert_int_equal(emit(f, 1, "::a:k1", 0), REEL_OK);
    assert_int_equal(emit(f, 1, "plain", 0), REEL_OK);
    assert_int_equal(emit(f, 1, "::b:k1", 0), REEL_OK);
    assert_int_equal(
        wal_sub_create(f->wal, 0, "", &unmarked, &s, &sub, NULL), REEL_OK);
    assert_int_equal(
        wal_sub_create(f->wal, 0, "t.>", &unmarked, &p, &psub, NULL),
        REEL_OK);
    wal_sub_pump(sub);
    wal_sub_pump(psub);
    assert_int_equal(s.n, 1);
    assert_string_equal(s.got[0], "plain");
    assert_int_equal(p.n, 1);
    assert_true(wal_sub_live(sub) && wal_sub_live(psub));
    assert_int_equal(emit(f, 1, "::a:k2", 0), REEL_OK);
    assert_int_equal(emit(f, 1, "other", 0), REEL_OK);
    assert_int_equal(emit(f, 1, "last", 0), REEL_OK);
    assert_int_equal(s.n, 3);
    assert_string_equal(s.got[1], "other");
    assert_string_equal(s.got[2], "last");
    assert_int_equal(p.n, 3);
    assert_string_equal(p.got[2], "last");
    assert_int_equal(wal_sub_cursor(sub), store_revision(f->store));
    wal_sub_destroy(psub);
    wal_sub_destroy(sub);
}

static void test_an_event_publish_cannot_read_is_read_from_storage(
    void **state) {
    fixture_t *f = *state;
    sink_t s = {.limit = 64}, other = {.limit = 64};
    wal_sub_t *sub, *osub;

    assert_int_equal(wal_sub_create(f->wal, 0, "t.1", &ops, &s, &sub, NULL),
                     REEL_OK);
    assert_int_equal(wal_sub_create(f->wal, 0, "t.2", &ops, &other, &osub,
                                    NULL),
                     REEL_OK);
    wal_sub_pump(sub);
    wal_sub_pump(osub);
    /* Its live copy cannot be read: no subscriber may pass it by; each
     * drops out of live delivery and asks for a pump. */
    reel_fault_arm("wal.publish", 0, 1);
    assert_int_equal(emit(f, 1, "lost", 0), REEL_OK);
    reel_fault_reset();
    assert_int_equal(s.n, 0);
    assert_int_equal(s.wakes, 1);
    assert_int_equal(other.wakes, 1);
    assert_false(wal_sub_live(sub));
    wal_sub_pump(sub); /* the owners, woken */
    wal_sub_pump(osub);
    assert_int_equal(s.n, 1);
    assert_string_equal(s.got[0], "lost");
    assert_true(wal_sub_live(sub));
    assert_int_equal(emit(f, 2, "next", 0), REEL_OK);
    assert_int_equal(other.n, 1);
    assert_string_equal(other.got[0], "next");
    /* The filtered-out event moved its cursor too. */
    assert_int_equal(wal_sub_cursor(osub), other.revs[0]);
    assert_int_equal(wal_sub_cursor(sub), other.revs[0]);
    wal_sub_destroy(sub);
    wal_sub_destroy(osub);
}

static void test_a_subscriber_behind_retention_ends_out_of_range(
    void **state) {
    fixture_t *f = *state;
    sink_t s = {.limit = 1};
    wal_sub_t *sub;

    /* Room for one event (14 bytes each). */
    reopen(f, (wal_limits_t){.retention_bytes = 14});
    for (int i = 0; i < 5; i++)
        assert_int_equal(emit(f, 1, "e", 0), REEL_OK);
    assert_int_equal(wal_sub_create(f->wal, 0, "", &ops, &s, &sub, NULL),
                     REEL_OK);
    wal_sub_pump(sub);
    assert_int_equal(s.n, 1); /* stalled after revision 1 */
    assert_int_equal(wal_trim(f->wal, NULL), REEL_OK); /* 1..4 go */
    assert_int_equal(oldest_of(f), 5);
    s.limit = 64;
    wal_sub_pump(sub);
    assert_int_equal(s.ended, REEL_OUT_OF_RANGE);
    assert_non_null(strstr(s.why, "received is 1, the oldest retained is 5"));
    assert_int_equal(s.n, 1); /* nothing after the gap was delivered */
    wal_sub_destroy(sub);
    /* Asking for a trimmed revision up front is refused too. */
    assert_int_equal(wal_sub_create(f->wal, 2, "", &ops, &s, &sub, NULL),
                     REEL_OUT_OF_RANGE);
}

/* A filter's subscription is offered only the events under its index
 * (feed_publish_indexed): live, its cursor is the head all the same, and
 * one that fills after a stretch of other events resumes after them even
 * once they are trimmed, since it needed none of them. */
static void test_a_filtered_subscriber_resumes_past_trimmed_events_of_others(
    void **state) {
    fixture_t *f = *state;
    sink_t s = {.limit = 1};
    wal_sub_t *sub;

    reopen(f, (wal_limits_t){.retention_bytes = 14}); /* one event */
    assert_int_equal(wal_sub_create(f->wal, 0, "t.1", &ops, &s, &sub, NULL),
                     REEL_OK);
    wal_sub_pump(sub);
    assert_true(wal_sub_live(sub));
    assert_int_equal(emit(f, 1, "a", 0), REEL_OK); /* taken: now full */
    for (int i = 0; i < 5; i++)
        assert_int_equal(emit(f, 2, "o", 0), REEL_OK);
    assert_int_equal(wal_sub_cursor(sub), store_revision(f->store));
    assert_int_equal(emit(f, 1, "b", 0), REEL_OK); /* no room: replay */
    assert_false(wal_sub_live(sub));
    assert_int_equal(wal_trim(f->wal, NULL), REEL_OK); /* up to "b" go */
    assert_int_equal(oldest_of(f), store_revision(f->store));
    s.limit = 64;
    wal_sub_pump(sub);
    assert_int_equal(s.ends, 0);
    assert_int_equal(s.n, 2);
    assert_string_equal(s.got[1], "b");
    assert_true(wal_sub_live(sub));
    wal_sub_destroy(sub);
}

/* A revision whose event was never stored (a data dir written by a reeld
 * that fired timers before its WAL started) is not a trim: the subscriber
 * hears DATA_LOSS naming the revisions and where to go on, not that it
 * fell behind retention. */
static void test_a_revision_without_its_event_is_data_loss_not_a_trim(
    void **state) {
    fixture_t *f = *state;
    wal_t *w = f->wal;
    sink_t s = {.limit = 64}, t = {.limit = 64}, u = {.limit = 64};
    wal_sub_t *sub;

    assert_int_equal(emit(f, 1, "a", 0), REEL_OK);
    assert_int_equal(emit(f, 1, "b", 0), REEL_OK);
    f->wal = NULL; /* the old hole: committed, no event */
    assert_int_equal(emit(f, 1, "c", 0), REEL_OK);
    assert_int_equal(emit(f, 1, "d", 0), REEL_OK);
    f->wal = w;
    assert_int_equal(emit(f, 1, "e", 0), REEL_OK);

    assert_int_equal(wal_sub_create(f->wal, 0, "", &ops, &s, &sub, NULL),
                     REEL_OK);
    wal_sub_pump(sub);
    assert_int_equal(s.n, 2); /* a and b, then the end: nothing skipped */
    assert_int_equal(s.ended, REEL_DATA_LOSS);
    assert_non_null(strstr(s.why, "no event for revisions 3 to 4"));
    assert_non_null(strstr(s.why, "from_revision 4 goes on"));
    wal_sub_destroy(sub);

    assert_int_equal(wal_sub_create(f->wal, 4, "", &ops, &t, &sub, NULL),
                     REEL_OK);
    wal_sub_pump(sub);
    assert_int_equal(t.n, 1);
    assert_int_equal(t.revs[0], 5);
    assert_int_equal(t.ends, 0);
    wal_sub_destroy(sub);

    /* At the tail too. */
    f->wal = NULL;
    assert_int_equal(emit(f, 1, "f", 0), REEL_OK);
    f->wal = w;
    assert_int_equal(wal_sub_create(f->wal, 5, "", &ops, &u, &sub, NULL),
                     REEL_OK);
    wal_sub_pump(sub);
    assert_int_equal(u.n, 0);
    assert_int_equal(u.ended, REEL_DATA_LOSS);
    assert_non_null(strstr(u.why, "no event for revisions 6 to 6"));
    wal_sub_destroy(sub);
}

static reel_code_t apply_emit_many(store_txn_t *txn, void *arg,
                                   reel_status_t *st) {
    (void)st;
    for (int i = 0; i < *(int *)arg; i++) {
        char k[16];
        int klen = snprintf(k, sizeof(k), "m%d", i);

        store_txn_put(txn, data, k, (size_t)klen, "x", 1);
        store_txn_emit(txn, TEST_MODULE, 1, "m", 1);
    }
    return REEL_OK;
}

/* Trims go in chunks of 5,000 events and remember where the last one
 * ended, so the next scan starts there: a full chunk, a partial one, and
 * a reopen must all leave the oldest event exactly where retention (here,
 * a consumer holding it) says. */
static void test_trims_in_chunks_keep_the_oldest_event_exact(void **state) {
    fixture_t *f = *state;
    sink_t s = {.limit = 1};
    uint64_t head, oldest;
    wal_sub_t *sub;
    int n = 6000;

    assert_int_equal(store_exec(f->store, apply_emit_many, &n, NULL, NULL),
                     REEL_OK);
    assert_int_equal(store_exec(f->store, apply_emit_many, &n, NULL, NULL),
                     REEL_OK);
    assert_int_equal(wal_head(f->wal, &head, &oldest, NULL), REEL_OK);
    assert_int_equal(head, 12000);
    assert_int_equal(oldest, 1);
    /* Retention would trim everything; the consumer holds what follows
     * its cursor. */
    reopen(f, (wal_limits_t){.retention_bytes = 1});
    make_consumer(f, "c1", 11000);
    assert_int_equal(wal_trim(f->wal, NULL), REEL_OK); /* 5000+5000+1000 */
    assert_int_equal(oldest_of(f), 11001);
    ack(f, "c1", 11500);
    assert_int_equal(wal_trim(f->wal, NULL), REEL_OK);
    assert_int_equal(oldest_of(f), 11501);
    assert_int_equal(wal_sub_create(f->wal, 11499, "", &ops, &s, &sub, NULL),
                     REEL_OUT_OF_RANGE);
    assert_int_equal(wal_sub_create(f->wal, 11500, "", &ops, &s, &sub, NULL),
                     REEL_OK);
    wal_sub_pump(sub);
    assert_int_equal(s.n, 1);
    assert_int_equal(s.revs[0], 11501);
    wal_sub_destroy(sub);
    /* A new wal over the same store finds the oldest event again. */
    reopen(f, (wal_limits_t){.retention_bytes = 1});
    assert_int_equal(wal_head(f->wal, &head, &oldest, NULL), REEL_OK);
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
    char name[16], got[64];

    for (int i = 0; i < 5; i++) {
        snprintf(name, sizeof(name), "c%d", i);
        make_consumer(f, name, 0);
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

/* A cursor past the head is refused naming the head, wherever a client
 * gives one; the largest revision does not wrap around into "no longer
 * retained" (which was false), even once the oldest events are gone. */
static void test_a_cursor_past_the_head_is_invalid_argument(void **state) {
    fixture_t *f = *state;
    sink_t s = {.limit = 64};
    reel_status_t st = REEL_STATUS_INIT;
    wal_consumer_t c, *cs;
    wal_sub_t *sub;
    size_t n;

    for (int i = 0; i < 5; i++)
        assert_int_equal(emit(f, 1, "e", 0), REEL_OK);
    reopen(f, (wal_limits_t){.retention_bytes = 28}); /* keeps 4 and 5 */
    assert_int_equal(wal_trim(f->wal, NULL), REEL_OK);
    assert_int_equal(oldest_of(f), 4);
    const uint64_t bad[] = {6, 1005, UINT64_MAX};
    for (size_t i = 0; i < sizeof(bad) / sizeof(*bad); i++) {
        assert_int_equal(wal_sub_create(f->wal, bad[i], "", &ops, &s, &sub,
                                        &st),
                         REEL_INVALID_ARGUMENT);
        assert_non_null(strstr(reel_status_message(&st),
                               "from_revision"));
        assert_non_null(strstr(reel_status_message(&st),
                               "past the head revision 5"));
        assert_int_equal(wal_consumer_subscribe(f->wal, "new", bad[i], 0, "", 0,
                                                &ops, &s, &sub, &st),
                         REEL_INVALID_ARGUMENT);
        assert_non_null(strstr(reel_status_message(&st),
                               "past the head revision 5"));
        assert_null(sub);
    }
    /* Nothing was created along the way. */
    assert_int_equal(
        wal_consumers(f->wal, NULL, 0, NULL, &cs, &n, NULL, NULL), REEL_OK);
    assert_int_equal(n, 0);
    free(cs);
    /* The head itself is fine: only what comes next. */
    assert_int_equal(wal_sub_create(f->wal, 5, "", &ops, &s, &sub, NULL),
                     REEL_OK);
    wal_sub_pump(sub);
    assert_int_equal(s.n, 0);
    assert_int_equal(s.ends, 0);
    wal_sub_destroy(sub);
    make_consumer(f, "new", 5);
    assert_int_equal(wal_ack(f->wal, "new", UINT64_MAX, &c, &st),
                     REEL_INVALID_ARGUMENT);
    assert_non_null(strstr(reel_status_message(&st),
                           "past the head revision 5"));
    wal_consumer_fini(&c);
    reel_status_fini(&st);
}

/* Acknowledgements trim nothing: a consumer that read and acknowledged
 * everything leaves the history for everyone else, until the limits. */
static void test_acks_do_not_trim_what_the_limits_keep(void **state) {
    fixture_t *f = *state;
    sink_t s = {.limit = 64};
    wal_sub_t *sub;

    for (int i = 0; i < 5; i++)
        assert_int_equal(emit(f, i % 2 + 1, "e", 0), REEL_OK);
    make_consumer(f, "all", 0);
    ack(f, "all", 5);
    make_consumer(f, "odd", 0); /* a filtered one, acking PROGRESS */
    ack(f, "odd", 5);
    assert_int_equal(wal_trim(f->wal, NULL), REEL_OK);
    assert_int_equal(oldest_of(f), 1);
    assert_int_equal(wal_sub_create(f->wal, 0, "", &ops, &s, &sub, NULL),
                     REEL_OK);
    wal_sub_pump(sub);
    assert_int_equal(s.n, 5);
    wal_sub_destroy(sub);
}

/*
 * Events of 23 bytes (subject "t.1", 10-byte body). The limits keep two;
 * a consumer may keep 10 (230 bytes). It holds what it has not
 * acknowledged while that fits, then is invalidated, its subscriber ended,
 * and the trim goes on; deleting it is the way back.
 */
static void test_a_consumer_holds_retention_up_to_its_cap_then_is_invalidated(
    void **state) {
    fixture_t *f = *state;
    reel_status_t st = REEL_STATUS_INIT;
    sink_t held = {.limit = 0};
    wal_sub_t *sub;
    wal_consumer_t c;

    reopen(f, (wal_limits_t){.retention_bytes = 46,
                             .consumer_max_lag_bytes = 230});
    make_consumer(f, "slow", 0);
    make_consumer(f, "fast", 0);
    for (int i = 0; i < 10; i++)
        assert_int_equal(emit(f, 1, "0123456789", 0), REEL_OK);
    ack(f, "fast", 10);
    assert_int_equal(wal_trim(f->wal, NULL), REEL_OK);
    assert_int_equal(oldest_of(f), 1); /* slow holds all ten */
    c = listed(f, "slow");
    assert_int_equal(c.holding_bytes, 230);
    assert_int_equal(c.pending, 10);
    assert_true(c.pending_exact);
    assert_int_equal(c.invalidated_at_ms, 0);
    wal_consumer_fini(&c);
    c = listed(f, "fast");
    assert_int_equal(c.holding_bytes, 0);
    assert_int_equal(c.pending, 0);
    wal_consumer_fini(&c);

    /* It acknowledges 4: the limits take those at once, no more. */
    ack(f, "slow", 4);
    assert_int_equal(wal_trim(f->wal, NULL), REEL_OK);
    assert_int_equal(oldest_of(f), 5);
    c = listed(f, "slow");
    assert_int_equal(c.holding_bytes, 6 * 23);
    wal_consumer_fini(&c);

    /* Five more: it would keep 11 events, 253 bytes, over its 230. Its
     * subscriber (stalled) is ended with the reason. */
    assert_int_equal(wal_consumer_subscribe(f->wal, "slow", 0, 0, "", 0, &ops,
                                            &held, &sub, NULL),
                     REEL_OK);
    for (int i = 0; i < 5; i++)
        assert_int_equal(emit(f, 1, "0123456789", 0), REEL_OK);
    ack(f, "fast", 15);
    assert_int_equal(wal_trim(f->wal, NULL), REEL_OK);
    assert_int_equal(oldest_of(f), 14); /* the limits alone: two events */
    assert_int_equal(held.wakes, 1);
    wal_sub_pump(sub);
    assert_int_equal(held.ended, REEL_FAILED_PRECONDITION);
    assert_non_null(strstr(held.why, "consumer \"slow\" was invalidated"));
    wal_sub_destroy(sub);
    c = listed(f, "slow");
    assert_int_not_equal(c.invalidated_at_ms, 0);
    assert_int_equal(c.acked, 4); /* how far it had got */
    assert_non_null(strstr(c.invalidated_reason, "253 bytes"));
    assert_non_null(strstr(c.invalidated_reason, "230"));
    assert_int_equal(c.holding_bytes, 0);
    assert_false(c.active);
    wal_consumer_fini(&c);
    c = listed(f, "fast"); /* untouched */
    assert_int_equal(c.invalidated_at_ms, 0);
    wal_consumer_fini(&c);

    /* It can no longer subscribe nor acknowledge, and is told how to go
     * on; the answer names its cursor and the oldest retained revision. */
    assert_int_equal(wal_consumer_subscribe(f->wal, "slow", 0, 0, "", 0, &ops,
                                            &held, &sub, &st),
                     REEL_FAILED_PRECONDITION);
    assert_non_null(strstr(reel_status_message(&st),
                           "acknowledged up to revision 4, and the oldest "
                           "retained revision is 14"));
    assert_non_null(strstr(reel_status_message(&st), "rm-consumer slow"));
    assert_int_equal(wal_ack(f->wal, "slow", 12, &c, &st),
                     REEL_FAILED_PRECONDITION);
    wal_consumer_fini(&c);
    /* Deleted and subscribed again: from the oldest retained. */
    assert_int_equal(wal_consumer_delete(f->wal, "slow", NULL), REEL_OK);
    held.limit = 64;
    held.n = 0;
    assert_int_equal(wal_consumer_subscribe(f->wal, "slow", 0, 0, "", 0, &ops,
                                            &held, &sub, NULL),
                     REEL_OK);
    wal_sub_pump(sub);
    assert_int_equal(held.n, 2);
    assert_int_equal(held.revs[0], 14);
    wal_sub_destroy(sub);
    reel_status_fini(&st);
}

/* Deleting the consumer that held events lets them go at the next trim. */
static void test_deleting_a_consumer_releases_what_it_held(void **state) {
    fixture_t *f = *state;

    reopen(f, (wal_limits_t){.retention_bytes = 14});
    make_consumer(f, "held", 0);
    for (int i = 0; i < 5; i++)
        assert_int_equal(emit(f, 1, "e", 0), REEL_OK);
    assert_int_equal(wal_trim(f->wal, NULL), REEL_OK);
    assert_int_equal(oldest_of(f), 1);
    assert_int_equal(wal_consumer_delete(f->wal, "held", NULL), REEL_OK);
    assert_int_equal(wal_trim(f->wal, NULL), REEL_OK);
    assert_int_equal(oldest_of(f), 5);
}

static reel_code_t subscribe(fixture_t *f, const char *name,
                             reel_status_t *st) {
    sink_t s = {.limit = 0};
    wal_sub_t *sub = NULL;
    reel_code_t rc =
        wal_consumer_subscribe(f->wal, name, 0, 0, "", 0, &ops, &s, &sub, st);

    wal_sub_destroy(sub);
    return rc;
}

static reel_code_t apply_forget_count(store_txn_t *txn, void *arg,
                                      reel_status_t *st) {
    store_cf_t *cf = NULL;

    if (store_cf_lookup(((fixture_t *)arg)->store, "wal", &cf, st) != REEL_OK)
        return st->code;
    store_txn_delete(txn, cf, "mconsumers", 10);
    return REEL_OK;
}

/*
 * Durable consumers are capped in number: a new one past max_consumers is
 * RESOURCE_EXHAUSTED naming the cap and writes nothing; an existing one
 * still subscribes, and a delete makes room. The count survives a reopen,
 * and a data dir without it (from before it) is counted at start.
 */
static void test_consumers_are_capped_in_number(void **state) {
    fixture_t *f = *state;
    reel_status_t st = REEL_STATUS_INIT;
    wal_limits_t lim = {.max_consumers = 2};
    wal_consumer_t *cs;
    size_t n;

    reopen(f, lim);
    make_consumer(f, "a", 0);
    make_consumer(f, "b", 0);
    assert_int_equal(subscribe(f, "c", &st), REEL_RESOURCE_EXHAUSTED);
    assert_non_null(strstr(reel_status_message(&st),
                           "there are 2 durable consumers, at most 2 "
                           "(--wal-max-consumers)"));
    reel_status_fini(&st);
    assert_int_equal(subscribe(f, "a", NULL), REEL_OK);
    assert_int_equal(wal_consumers(f->wal, NULL, 0, NULL, &cs, &n, NULL, NULL),
                     REEL_OK);
    assert_int_equal(n, 2);
    for (size_t i = 0; i < n; i++)
        wal_consumer_fini(&cs[i]);
    free(cs);
    assert_int_equal(wal_consumer_delete(f->wal, "a", NULL), REEL_OK);
    assert_int_equal(subscribe(f, "c", NULL), REEL_OK);

    reopen(f, lim);
    assert_int_equal(subscribe(f, "d", NULL), REEL_RESOURCE_EXHAUSTED);
    assert_int_equal(store_exec(f->store, apply_forget_count, f, NULL, &st),
                     REEL_OK);
    reopen(f, lim); /* counted again: b and c */
    assert_int_equal(subscribe(f, "d", NULL), REEL_RESOURCE_EXHAUSTED);
    assert_int_equal(wal_consumer_delete(f->wal, "b", NULL), REEL_OK);
    assert_int_equal(subscribe(f, "d", NULL), REEL_OK);
    assert_int_equal(subscribe(f, "e", NULL), REEL_RESOURCE_EXHAUSTED);
}

/*
 * A tenant's consumers are capped apart (max_tenant_consumers), so one
 * tenant cannot take every consumer: past its cap a new one of that
 * tenant is RESOURCE_EXHAUSTED naming the flag, while other tenants
 * (even one whose name extends it) and names without a tenant still get
 * theirs, up to the global cap; its existing ones still subscribe, and a
 * delete makes room.
 */
static void test_each_tenants_consumers_are_capped(void **state) {
    fixture_t *f = *state;
    reel_status_t st = REEL_STATUS_INIT;
    wal_limits_t lim = {.max_consumers = 5, .max_tenant_consumers = 2,
                        .consumer_scope = testing_tenant_scope};

    reopen(f, lim);
    make_consumer(f, "::a:x", 0);
    make_consumer(f, "::a:y", 0);
    assert_int_equal(subscribe(f, "::a:z", &st), REEL_RESOURCE_EXHAUSTED);
    assert_non_null(strstr(reel_status_message(&st),
                           "consumer \"::a:z\": its tenant has 2 durable "
                           "consumers, at most 2 "
                           "(--wal-max-consumers-per-tenant)"));
    reel_status_fini(&st);
    assert_int_equal(subscribe(f, "::a:y", NULL), REEL_OK);
    assert_int_equal(subscribe(f, "::ab:x", NULL), REEL_OK);
    assert_int_equal(subscribe(f, "::b:x", NULL), REEL_OK);
    assert_int_equal(subscribe(f, "plain", NULL), REEL_OK);
    assert_int_equal(subscribe(f, "::c:x", &st), REEL_RESOURCE_EXHAUSTED);
    assert_non_null(strstr(reel_status_message(&st), "at most 5 "
                                                     "(--wal-max-consumers)"));
    reel_status_fini(&st);
    assert_int_equal(wal_consumer_delete(f->wal, "::a:x", NULL), REEL_OK);
    assert_int_equal(subscribe(f, "::a:z", NULL), REEL_OK);
    assert_int_equal(subscribe(f, "::a:w", NULL), REEL_RESOURCE_EXHAUSTED);

    lim.max_tenant_consumers = 3; /* a reopen with a larger cap */
    reopen(f, lim);
    assert_int_equal(wal_consumer_delete(f->wal, "plain", NULL), REEL_OK);
    assert_int_equal(subscribe(f, "::a:w", NULL), REEL_OK);
}

typedef struct late_sub {
    fixture_t *f;
    sink_t sink;
    wal_sub_t *sub;
    reel_code_t rc;
} late_sub_t;

static void *subscribe_main(void *arg) {
    late_sub_t *l = arg;

    l->rc = wal_consumer_subscribe(l->f->wal, "raced", 0, 0, "", 0, &ops,
                                   &l->sink, &l->sub, NULL);
    return NULL;
}

/* A delete that comes while a subscribe of the same consumer is between
 * its write and its registration waits for it, as for any subscriber: it
 * used to check before it was queued, and both succeeded (a subscriber
 * streaming for a consumer that no longer existed). */
static void test_a_delete_during_a_subscribe_is_refused_not_half_done(
    void **state) {
    fixture_t *f = *state;
    late_sub_t l = {.f = f, .sink = {.limit = 0}};
    reel_status_t st = REEL_STATUS_INIT;
    wal_consumer_t c;
    pthread_t th;

    make_consumer(f, "raced", 0);
    assert_int_equal(reel_fault_arm("wal.subscribe_pause", 0, 1), 0);
    assert_int_equal(pthread_create(&th, NULL, subscribe_main, &l), 0);
    while (reel_fault_fired("wal.subscribe_pause") == 0)
        sched_yield();
    assert_int_equal(wal_consumer_delete(f->wal, "raced", &st),
                     REEL_FAILED_PRECONDITION);
    assert_non_null(strstr(reel_status_message(&st), "active subscriber"));
    reel_status_fini(&st);
    pthread_join(th, NULL);
    assert_int_equal(l.rc, REEL_OK);
    c = listed(f, "raced"); /* still there, and its subscriber acks */
    assert_true(c.active);
    wal_consumer_fini(&c);
    wal_sub_destroy(l.sub);
    /* Once it is gone, the delete goes through. */
    assert_int_equal(wal_consumer_delete(f->wal, "raced", NULL), REEL_OK);
}

/* A filtered consumer's pending is what matches its pattern, counted over
 * at most WAL_PENDING_SCAN_MAX revisions after its cursor (then marked as
 * a lower bound); an unfiltered one's is exact at any distance. */
static void test_cursors_subscribers_and_bytes_for_metrics(void **state) {
    fixture_t *f = *state;
    int n = 5;
    wal_consumer_t *cs;
    size_t cnt;
    sink_t s = {.limit = 0};
    wal_sub_t *sub;
    uint64_t bytes0 = wal_bytes(f->wal);

    make_consumer(f, "b", 0);
    make_consumer(f, "a", 0);
    assert_int_equal(store_exec(f->store, apply_emit_many, &n, NULL, NULL),
                     REEL_OK);
    assert_true(wal_bytes(f->wal) > bytes0);
    ack(f, "b", 3);
    assert_int_equal(wal_consumer_cursors(f->wal, &cs, &cnt, NULL), REEL_OK);
    assert_int_equal(cnt, 2);
    assert_string_equal(cs[0].name, "a");
    assert_int_equal(cs[0].acked, 0);
    assert_string_equal(cs[1].name, "b");
    assert_int_equal(cs[1].acked, 3);
    for (size_t i = 0; i < cnt; i++)
        wal_consumer_fini(&cs[i]);
    free(cs);

    assert_int_equal(wal_subscribers(f->wal), 0);
    assert_int_equal(wal_sub_create(f->wal, 0, "", &ops, &s, &sub, NULL),
                     REEL_OK);
    assert_int_equal(wal_subscribers(f->wal), 1);
    wal_sub_destroy(sub);
    assert_int_equal(wal_subscribers(f->wal), 0);
}

/* One listing reads at most WAL_PENDING_SCAN_PAGE events for all its
 * consumers together (1,000 consumers far behind read 10 million: 5 s);
 * those past it say a lower bound, and a page that starts at them counts
 * them. */
static void test_one_listing_reads_a_bounded_number_of_events(void **state) {
    fixture_t *f = *state;
    int n = WAL_PENDING_SCAN_MAX + 1;
    int over = WAL_PENDING_SCAN_PAGE / WAL_PENDING_SCAN_MAX;
    wal_consumer_t *cs;
    size_t cnt;
    sink_t s = {.limit = 0};
    wal_sub_t *sub;
    char name[16];

    for (int i = 0; i < over + 2; i++) {
        snprintf(name, sizeof(name), "f%02d", i);
        assert_int_equal(wal_consumer_subscribe(f->wal, name, 0, 0, "t.1", 0,
                                                &ops, &s, &sub, NULL),
                         REEL_OK);
        wal_sub_destroy(sub);
    }
    assert_int_equal(store_exec(f->store, apply_emit_many, &n, NULL, NULL),
                     REEL_OK);
    assert_int_equal(wal_consumers(f->wal, NULL, 0, NULL, &cs, &cnt, NULL,
                                   NULL),
                     REEL_OK);
    assert_int_equal(cnt, over + 2);
    for (size_t i = 0; i < cnt; i++) {
        assert_int_equal(cs[i].pending,
                         (int)i < over ? WAL_PENDING_SCAN_MAX : 0);
        assert_false(cs[i].pending_exact);
        wal_consumer_fini(&cs[i]);
    }
    free(cs);
    snprintf(name, sizeof(name), "f%02d", over - 1);
    assert_int_equal(wal_consumers(f->wal, name, 0, NULL, &cs, &cnt, NULL,
                                   NULL),
                     REEL_OK);
    assert_int_equal(cnt, 2);
    for (size_t i = 0; i < cnt; i++) {
        assert_int_equal(cs[i].pending, WAL_PENDING_SCAN_MAX);
        wal_consumer_fini(&cs[i]);
    }
    free(cs);
}

/* A tenant's consumer counts as pending its tenant's events alone, with
 * or without a pattern: what a subscription of it would be offered. */
static void test_a_tenants_pending_counts_its_own_events(void **state) {
    fixture_t *f = *state;
    wal_limits_t lim = {.consumer_scope = testing_tenant_scope};
    wal_consumer_t c;

    reopen(f, lim);
    make_consumer(f, "::a:all", 0);
    make_consumer(f, "plain", 0);
    assert_int_equal(emit(f, 1, "::a:k1", 0), REEL_OK);
    assert_int_equal(emit(f, 1, "::b:k1", 0), REEL_OK);
    assert_int_equal(emit(f, 1, "other", 0), REEL_OK);
    assert_int_equal(emit(f, 1, "::ab:k1", 0), REEL_OK);
    assert_int_equal(emit(f, 1, "::a:k2", 0), REEL_OK);
    c = listed(f, "::a:all");
    assert_int_equal(c.pending, 2);
    assert_true(c.pending_exact);
    wal_consumer_fini(&c);
    c = listed(f, "plain");
    assert_int_equal(c.pending, 5); /* not a tenant's: every event */
    wal_consumer_fini(&c);
    ack(f, "::a:all", 1);
    c = listed(f, "::a:all");
    assert_int_equal(c.pending, 1);
    wal_consumer_fini(&c);
}

static void test_pending_counts_what_matches_within_a_bound(void **state) {
    fixture_t *f = *state;
    int n = WAL_PENDING_SCAN_MAX + 1;
    wal_consumer_t c;
    wal_sub_t *sub;
    sink_t s = {.limit = 0};

    make_consumer(f, "all", 0);
    assert_int_equal(wal_consumer_subscribe(f->wal, "ones", 0, 0, "t.1", 0, &ops,
                                            &s, &sub, NULL),
                     REEL_OK);
    wal_sub_destroy(sub);
    assert_int_equal(wal_consumer_subscribe(f->wal, "twos", 0, 0, "t.2", 0, &ops,
                                            &s, &sub, NULL),
                     REEL_OK);
    wal_sub_destroy(sub);
    assert_int_equal(store_exec(f->store, apply_emit_many, &n, NULL, NULL),
                     REEL_OK); /* all "t.1" */
    c = listed(f, "all");
    assert_int_equal(c.pending, n);
    assert_true(c.pending_exact);
    wal_consumer_fini(&c);
    c = listed(f, "ones");
    assert_int_equal(c.pending, WAL_PENDING_SCAN_MAX);
    assert_false(c.pending_exact);
    wal_consumer_fini(&c);
    c = listed(f, "twos");
    assert_int_equal(c.pending, 0);
    assert_false(c.pending_exact);
    wal_consumer_fini(&c);
    ack(f, "twos", 1);
    c = listed(f, "twos");
    assert_int_equal(c.pending, 0);
    assert_true(c.pending_exact);
    wal_consumer_fini(&c);
    assert_int_equal(wal_ack(f->wal, "ones", n - 2, &c, NULL), REEL_OK);
    assert_int_equal(c.pending, 2);
    assert_true(c.pending_exact);
    wal_consumer_fini(&c);
}

/* A consumer list cut short (a read or allocation that failed) is an
 * error, never a shorter list: the trim stops rather than delete what the
 * missing consumer has not acknowledged. */
static void test_a_partial_consumer_list_stops_the_trim(void **state) {
    fixture_t *f = *state;
    reel_status_t st = REEL_STATUS_INIT;
    wal_consumer_t *cs = NULL;
    size_t n = 99;

    reopen(f, (wal_limits_t){.retention_bytes = 14});
    make_consumer(f, "a", 0);
    make_consumer(f, "b", 0);
    for (int i = 0; i < 5; i++)
        assert_int_equal(emit(f, 1, "e", 0), REEL_OK);
    ack(f, "a", 5);
    /* "b" is the second record read: it is the one lost. */
    assert_int_equal(reel_fault_arm("wal.consumers", 1, 0), 0);
    assert_int_equal(
        wal_consumers(f->wal, NULL, 0, NULL, &cs, &n, NULL, &st),
        REEL_RESOURCE_EXHAUSTED);
    assert_null(cs);
    assert_int_equal(n, 0);
    assert_non_null(strstr(reel_status_message(&st), "\"b\""));
    assert_int_equal(wal_trim(f->wal, &st), REEL_RESOURCE_EXHAUSTED);
    assert_non_null(strstr(reel_status_message(&st), "consumers"));
    assert_int_equal(oldest_of(f), 1);
    reel_fault_reset();
    assert_int_equal(wal_trim(f->wal, NULL), REEL_OK);
    assert_int_equal(oldest_of(f), 1); /* b holds them */
    ack(f, "b", 5);
    assert_int_equal(wal_trim(f->wal, NULL), REEL_OK);
    assert_int_equal(oldest_of(f), 5);
    reel_status_fini(&st);
}

/* One subscriber per consumer; takeover ends the holder's subscription
 * ABORTED (through its pump, woken) and takes its place. */
static void test_takeover_ends_the_holder_and_takes_its_place(void **state) {
    fixture_t *f = *state;
    reel_status_t st = REEL_STATUS_INIT;
    sink_t one = {.limit = 64}, two = {.limit = 64};
    wal_sub_t *s1, *s2;
    wal_consumer_t c;

    assert_int_equal(emit(f, 1, "a", 0), REEL_OK);
    assert_int_equal(wal_consumer_subscribe(f->wal, "solo", 0, 0, "", 0, &ops,
                                            &one, &s1, NULL),
                     REEL_OK);
    wal_sub_pump(s1);
    assert_int_equal(one.n, 1);
    assert_int_equal(wal_consumer_subscribe(f->wal, "solo", 0, 0, "", 0, &ops,
                                            &two, &s2, &st),
                     REEL_FAILED_PRECONDITION);
    assert_non_null(strstr(reel_status_message(&st), "takeover"));
    assert_int_equal(wal_consumer_delete(f->wal, "solo", NULL),
                     REEL_FAILED_PRECONDITION);
    assert_int_equal(wal_consumer_subscribe(f->wal, "solo", 0, 0, "", 1, &ops,
                                            &two, &s2, NULL),
                     REEL_OK);
    assert_int_equal(one.wakes, 1);
    assert_int_equal(one.ends, 0); /* ends in its own pump */
    assert_int_equal(emit(f, 1, "b", 0), REEL_OK);
    wal_sub_pump(s1);
    assert_int_equal(one.ended, REEL_ABORTED);
    assert_non_null(strstr(one.why, "\"solo\" was taken over"));
    assert_int_equal(one.n, 1); /* nothing after the takeover */
    wal_sub_pump(s1);
    assert_int_equal(one.ends, 1);
    wal_sub_pump(s2);
    assert_int_equal(two.n, 2); /* nothing was acknowledged */
    /* The old one going does not release what the new one holds. */
    wal_sub_destroy(s1);
    c = listed(f, "solo");
    assert_true(c.active);
    wal_consumer_fini(&c);
    wal_sub_destroy(s2);
    c = listed(f, "solo");
    assert_false(c.active);
    wal_consumer_fini(&c);
    assert_int_equal(wal_consumer_delete(f->wal, "solo", NULL), REEL_OK);
    reel_status_fini(&st);
}

/* A replay that cannot read ends the subscription with what failed,
 * instead of waiting for a drain that never comes (or calling it a gap). */
/* A catch-up through events the pattern refuses is read in parts (each
 * WAL_REPLAY_PART_MS long, here ended at each clock check), each ending
 * with a wake: it holds no thread for its whole length, and the cursor
 * says how far the scan got. A sink with no wake reads it all in one
 * pump. */
static void test_a_long_catch_up_is_read_in_parts(void **state) {
    fixture_t *f = *state;
    int n = 2 * WAL_REPLAY_CHECK + 10;
    wal_sink_t no_wake = ops;
    sink_t s = {.limit = 64}, s2 = {.limit = 64};
    wal_sub_t *sub, *sub2;

    assert_int_equal(store_exec(f->store, apply_emit_many, &n, NULL, NULL),
                     REEL_OK);
    assert_int_equal(emit(f, 2, "wanted", 0), REEL_OK);
    assert_int_equal(wal_sub_create(f->wal, 0, "t.2", &ops, &s, &sub, NULL),
                     REEL_OK);
    assert_int_equal(reel_fault_arm("wal.replay_part_end", 0, 0), 0);
    wal_sub_pump(sub);
    assert_int_equal(s.wakes, 1);
    assert_int_equal(s.n, 0);
    assert_false(wal_sub_live(sub));
    assert_int_equal(wal_sub_cursor(sub), WAL_REPLAY_CHECK);
    wal_sub_pump(sub);
    assert_int_equal(s.wakes, 2);
    assert_int_equal(wal_sub_cursor(sub), 2 * WAL_REPLAY_CHECK);
    wal_sub_pump(sub);
    assert_int_equal(s.wakes, 2);
    assert_true(wal_sub_live(sub));
    assert_int_equal(s.n, 1);
    assert_string_equal(s.got[0], "wanted");
    assert_int_equal(s.revs[0], n + 1);
    wal_sub_destroy(sub);

    no_wake.wake = NULL;
    assert_int_equal(
        wal_sub_create(f->wal, 0, "t.2", &no_wake, &s2, &sub2, NULL),
        REEL_OK);
    wal_sub_pump(sub2);
    assert_true(wal_sub_live(sub2));
    assert_int_equal(s2.n, 1);
    assert_int_equal(s2.revs[0], n + 1);
    wal_sub_destroy(sub2);
}

static int deliver_skip(void *arg, const uint8_t *b, size_t len,
                        uint64_t rev) {
    (void)b, (void)len, (void)rev;
    ((sink_t *)arg)->n++;
    return WAL_SINK_SKIPPED;
}

/* Events a sink takes without sending (another tenant's) count as refused:
 * such a catch-up is read in parts too; live, they are taken. */
static void test_events_a_sink_skips_end_parts_as_refused_ones_do(
    void **state) {
    fixture_t *f = *state;
    int n = 2 * WAL_REPLAY_CHECK + 10;
    wal_sink_t skip = ops;
    sink_t s = {.limit = 64};
    wal_sub_t *sub;

    skip.deliver = deliver_skip;
    assert_int_equal(store_exec(f->store, apply_emit_many, &n, NULL, NULL),
                     REEL_OK);
    assert_int_equal(wal_sub_create(f->wal, 0, "", &skip, &s, &sub, NULL),
                     REEL_OK);
    assert_int_equal(reel_fault_arm("wal.replay_part_end", 0, 0), 0);
    wal_sub_pump(sub);
    assert_int_equal(s.wakes, 1);
    assert_int_equal(wal_sub_cursor(sub), WAL_REPLAY_CHECK);
    while (!wal_sub_live(sub))
        wal_sub_pump(sub);
    assert_int_equal(s.n, n);
    assert_int_equal(emit(f, 1, "live", 0), REEL_OK);
    assert_true(wal_sub_live(sub));
    assert_int_equal(s.n, n + 1);
    assert_int_equal(wal_sub_cursor(sub), n + 1);
    wal_sub_destroy(sub);
}

static void test_a_failed_replay_ends_the_subscription_with_its_error(
    void **state) {
    fixture_t *f = *state;
    sink_t s = {.limit = 64}, t = {.limit = 64};
    wal_sub_t *sub;

    assert_int_equal(emit(f, 1, "a", 0), REEL_OK);
    assert_int_equal(wal_sub_create(f->wal, 0, "", &ops, &s, &sub, NULL),
                     REEL_OK);
    assert_int_equal(reel_fault_arm("store.snapshot", 0, 1), 0);
    wal_sub_pump(sub);
    assert_int_equal(s.ended, REEL_INTERNAL);
    assert_non_null(strstr(s.why, "WAL replay"));
    assert_int_equal(s.n, 0);
    wal_sub_destroy(sub);

    assert_int_equal(wal_sub_create(f->wal, 0, "", &ops, &t, &sub, NULL),
                     REEL_OK);
    assert_int_equal(reel_fault_arm("store.iter", 0, 1), 0);
    wal_sub_pump(sub);
    assert_int_equal(t.ended, REEL_INTERNAL);
    assert_non_null(strstr(t.why, "WAL replay: iterate"));
    wal_sub_destroy(sub);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(
            test_every_change_is_stored_once_in_its_commit, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_subscriptions_filter_follow_and_catch_up, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_a_scoped_subscription_takes_its_tenants_events_alone, setup,
            teardown),
        cmocka_unit_test_setup_teardown(
            test_an_unmarked_scope_takes_no_tenants_events, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_a_tenants_pending_counts_its_own_events, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_an_event_publish_cannot_read_is_read_from_storage, setup,
            teardown),
        cmocka_unit_test_setup_teardown(
            test_a_filtered_subscriber_resumes_past_trimmed_events_of_others,
            setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_a_subscriber_behind_retention_ends_out_of_range, setup,
            teardown),
        cmocka_unit_test_setup_teardown(
            test_a_revision_without_its_event_is_data_loss_not_a_trim, setup,
            teardown),
        cmocka_unit_test_setup_teardown(
            test_trims_in_chunks_keep_the_oldest_event_exact, setup,
            teardown),
        cmocka_unit_test_setup_teardown(
            test_consumers_page_by_name_count_and_bytes, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_a_cursor_past_the_head_is_invalid_argument, setup,
            teardown),
        cmocka_unit_test_setup_teardown(
            test_acks_do_not_trim_what_the_limits_keep, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_a_consumer_holds_retention_up_to_its_cap_then_is_invalidated,
            setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_deleting_a_consumer_releases_what_it_held, setup, teardown),
        cmocka_unit_test_setup_teardown(test_each_tenants_consumers_are_capped,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_consumers_are_capped_in_number,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_a_delete_during_a_subscribe_is_refused_not_half_done, setup,
            teardown),
        cmocka_unit_test_setup_teardown(
            test_cursors_subscribers_and_bytes_for_metrics, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_one_listing_reads_a_bounded_number_of_events, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_pending_counts_what_matches_within_a_bound, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_a_partial_consumer_list_stops_the_trim, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_takeover_ends_the_holder_and_takes_its_place, setup,
            teardown),
        cmocka_unit_test_setup_teardown(test_a_long_catch_up_is_read_in_parts,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_events_a_sink_skips_end_parts_as_refused_ones_do, setup,
            teardown),
        cmocka_unit_test_setup_teardown(
            test_a_failed_replay_ends_the_subscription_with_its_error, setup,
            teardown),
    };
    return cmocka_run_group_tests_name("wal", tests, NULL, NULL);
}
