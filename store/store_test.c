/*
 * store/store_test.c: the single writer, group commit and the revision.
 *
 * Each test opens a store in a fresh temporary data dir and removes it.
 * Tests that need several requests in one group hold the writer inside a
 * "gate" request until the others are queued.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <dirent.h>
#include <dlfcn.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <rocksdb/c.h>

#include "base/clock.h"
#include "base/fault.h"
#include "base/log.h"
#include "store/rocks_crc.h"
#include "store/store.h"
#include "testing/fixture.h"

/* ---- Fixtures ----------------------------------------------------------- */

typedef struct fixture {
    char dir[512];
    store_t *store;
    /* revisions seen by the publish function, in call order */
    pthread_mutex_t mu;
    uint64_t *published;
    size_t n_published, cap_published;
} fixture_t;

static void record_publish(void *arg, const store_change_t *c, size_t n) {
    fixture_t *f = arg;

    pthread_mutex_lock(&f->mu);
    for (size_t i = 0; i < n; i++) {
        if (f->n_published == f->cap_published) {
            f->cap_published = f->cap_published ? f->cap_published * 2 : 1024;
            f->published = realloc(f->published,
                                   f->cap_published * sizeof(uint64_t));
        }
        f->published[f->n_published++] = c[i].revision;
    }
    pthread_mutex_unlock(&f->mu);
}

/* The tests' column families, as a module would declare them. */
#define TEST_MODULE 1
static const store_cf_desc_t test_cfs[] = {
    {"data", STORE_CF_LOOKUP},
    {"tail", STORE_CF_TAIL},
    {NULL, STORE_CF_PLAIN},
};
static const store_cf_desc_t *const test_cf_lists[] = {test_cfs, NULL};

/* "data" of the open store: apply functions see only their txn. */
static store_cf_t *data;

static store_opts_t fixture_opts(fixture_t *f) {
    store_opts_t o = {0};

    o.data_dir = f->dir;
    o.cfs = test_cf_lists;
    o.publish = record_publish;
    o.publish_arg = f;
    return o;
}

/* store_open into f->store, then finds "data" in it. */
static reel_code_t open_with(fixture_t *f, const store_opts_t *o,
                             reel_status_t *st) {
    reel_code_t rc = store_open(o, &f->store, st);

    data = NULL;
    if (rc == REEL_OK)
        assert_int_equal(store_cf_lookup(f->store, "data", &data, NULL),
                         REEL_OK);
    return rc;
}

static void open_store(fixture_t *f) {
    store_opts_t o = fixture_opts(f);

    f->store = testing_store_open(f->dir, &o);
    data = NULL;
    assert_int_equal(store_cf_lookup(f->store, "data", &data, NULL), REEL_OK);
}

static int setup(void **state) {
    fixture_t *f = calloc(1, sizeof(*f));

    if (testing_dir_make(f->dir, sizeof(f->dir), "store") != 0)
        return -1;
    pthread_mutex_init(&f->mu, NULL);
    open_store(f);
    *state = f;
    return 0;
}

static int teardown(void **state) {
    fixture_t *f = *state;
    int rc;

    store_close(f->store);
    rc = testing_dir_remove(f->dir);
    pthread_mutex_destroy(&f->mu);
    free(f->published);
    free(f);
    return rc;
}

static void reopen(fixture_t *f) {
    store_close(f->store);
    f->store = NULL;
    open_store(f);
}

/* ---- Apply functions ---------------------------------------------------- */

typedef struct put_arg {
    const char *key;
    const char *val;
    int n_emit;
} put_arg_t;

static reel_code_t apply_put(store_txn_t *txn, void *arg, reel_status_t *st) {
    put_arg_t *a = arg;

    (void)st;
    store_txn_put(txn, data, a->key, strlen(a->key), a->val,
                  strlen(a->val));
    for (int i = 0; i < a->n_emit; i++)
        store_txn_emit(txn, TEST_MODULE, 1, a->key, strlen(a->key));
    return REEL_OK;
}

/* Puts and emits, then fails: none of it may survive. */
static reel_code_t apply_put_then_fail(store_txn_t *txn, void *arg,
                                       reel_status_t *st) {
    apply_put(txn, arg, st);
    return reel_status_set(st, REEL_ABORTED, "version conflict: expected %d, "
                                             "current %d",
                           3, 5);
}

static char *get_str(store_t *s, const char *key) {
    char *val = NULL;
    size_t vlen = 0;

    if (store_get(s, data, key, strlen(key), &val, &vlen, NULL) !=
        REEL_OK)
        return NULL;
    val = realloc(val, vlen + 1);
    val[vlen] = '\0';
    return val;
}

static void put_sync(store_t *s, const char *key, const char *val, int n_emit,
                     uint64_t *rev) {
    put_arg_t a = {key, val, n_emit};
    reel_status_t st = REEL_STATUS_INIT;

    if (store_exec(s, apply_put, &a, rev, &st) != REEL_OK)
        fail_msg("exec: %s", reel_status_message(&st));
}

/* A request that holds the writer until released, so others queue up. */
typedef struct gate {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int entered, open;
    store_t *store;
    store_req_t req;
    pthread_t submitter;
    reel_code_t submitted;
    int done;
} gate_t;

static reel_code_t apply_gate(store_txn_t *txn, void *arg, reel_status_t *st) {
    gate_t *g = arg;

    (void)txn;
    (void)st;
    pthread_mutex_lock(&g->mu);
    g->entered = 1;
    pthread_cond_broadcast(&g->cv);
    while (!g->open)
        pthread_cond_wait(&g->cv, &g->mu);
    pthread_mutex_unlock(&g->mu);
    return REEL_OK;
}

static void gate_done(store_req_t *req) {
    gate_t *g = req->arg;

    pthread_mutex_lock(&g->mu);
    g->done = 1;
    pthread_cond_broadcast(&g->cv);
    pthread_mutex_unlock(&g->mu);
}

/* From a thread of its own: a lone submitter may run its request itself,
 * and the gate holds whichever thread runs it. */
static void *gate_submit(void *arg) {
    gate_t *g = arg;

    g->submitted = store_submit(g->store, &g->req);
    return NULL;
}

static void gate_close(store_t *s, gate_t *g) {
    memset(g, 0, sizeof(*g));
    pthread_mutex_init(&g->mu, NULL);
    pthread_cond_init(&g->cv, NULL);
    g->store = s;
    g->req.apply = apply_gate;
    g->req.done = gate_done;
    g->req.arg = g;
    assert_int_equal(pthread_create(&g->submitter, NULL, gate_submit, g), 0);
    pthread_mutex_lock(&g->mu);
    while (!g->entered)
        pthread_cond_wait(&g->cv, &g->mu);
    pthread_mutex_unlock(&g->mu);
}

static void gate_open(gate_t *g) {
    pthread_mutex_lock(&g->mu);
    g->open = 1;
    pthread_cond_broadcast(&g->cv);
    while (!g->done)
        pthread_cond_wait(&g->cv, &g->mu);
    pthread_mutex_unlock(&g->mu);
    pthread_join(g->submitter, NULL);
    assert_int_equal(g->submitted, REEL_OK);
    reel_status_fini(&g->req.status);
}

/* An async request whose completion the test can wait for. */
typedef struct async_req {
    store_req_t req;
    put_arg_t put;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int done;
} async_req_t;

static void async_done(store_req_t *req) {
    async_req_t *a = (async_req_t *)req;

    pthread_mutex_lock(&a->mu);
    a->done = 1;
    pthread_cond_broadcast(&a->cv);
    pthread_mutex_unlock(&a->mu);
}

static void async_init(async_req_t *a, store_apply_fn apply, const char *key,
                       const char *val, int n_emit) {
    memset(a, 0, sizeof(*a));
    pthread_mutex_init(&a->mu, NULL);
    pthread_cond_init(&a->cv, NULL);
    a->put = (put_arg_t){key, val, n_emit};
    a->req.apply = apply;
    a->req.done = async_done;
    a->req.arg = &a->put;
}

static void async_wait(async_req_t *a) {
    pthread_mutex_lock(&a->mu);
    while (!a->done)
        pthread_cond_wait(&a->cv, &a->mu);
    pthread_mutex_unlock(&a->mu);
}

/* Submits reqs behind a closed gate, so the writer takes them as one group,
 * then opens it and waits for every one. */
static void run_as_one_group(store_t *s, async_req_t *const *reqs, size_t n) {
    gate_t g;

    gate_close(s, &g);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(store_submit(s, &reqs[i]->req), REEL_OK);
    gate_open(&g);
    for (size_t i = 0; i < n; i++)
        async_wait(reqs[i]);
}

/* ---- Tests -------------------------------------------------------------- */

static void test_revisions_are_gapless_and_survive_reopen(void **state) {
    fixture_t *f = *state;
    uint64_t rev = 0, expect = 0;
    char key[32];

    assert_int_equal(store_revision(f->store), 0);
    for (int i = 0; i < 20; i++) {
        int n_emit = 1 + i % 3;

        snprintf(key, sizeof(key), "k%d", i);
        put_sync(f->store, key, "v", n_emit, &rev);
        expect += (uint64_t)n_emit;
        assert_int_equal(rev, expect);
    }
    assert_int_equal(store_revision(f->store), expect);
    reopen(f);
    assert_int_equal(store_revision(f->store), expect);
    put_sync(f->store, "after", "v", 1, &rev);
    assert_int_equal(rev, expect + 1);
    reopen(f);
    assert_int_equal(store_revision(f->store), expect + 1);

    /* Publish saw 1..N exactly once, in order (across both opens). */
    assert_int_equal(f->n_published, expect + 1);
    for (size_t i = 0; i < f->n_published; i++)
        assert_int_equal(f->published[i], i + 1);
}

#define N_THREADS 8
#define N_PER_THREAD 200

typedef struct counter_arg {
    int thread, i;
    uint64_t seen; /* the counter value this increment produced */
} counter_arg_t;

/* Read-modify-write of one counter: only safe because one writer applies. */
static reel_code_t apply_increment(store_txn_t *txn, void *arg,
                                   reel_status_t *st) {
    counter_arg_t *a = arg;
    char *val = NULL, key[32], buf[32];
    size_t vlen = 0;
    uint64_t n = 0;
    reel_code_t rc;

    rc = store_txn_get(txn, data, "counter", 7, &val, &vlen, st);
    if (rc == REEL_OK) {
        memcpy(buf, val, vlen < 31 ? vlen : 31);
        buf[vlen < 31 ? vlen : 31] = '\0';
        n = strtoull(buf, NULL, 10);
        free(val);
    } else if (rc != REEL_NOT_FOUND) {
        return rc;
    }
    n++;
    a->seen = n;
    snprintf(buf, sizeof(buf), "%llu", (unsigned long long)n);
    store_txn_put(txn, data, "counter", 7, buf, strlen(buf));
    snprintf(key, sizeof(key), "w/%d/%d", a->thread, a->i);
    store_txn_put(txn, data, key, strlen(key), buf, strlen(buf));
    store_txn_emit(txn, TEST_MODULE, 1, key, strlen(key));
    return REEL_OK;
}

typedef struct worker {
    store_t *store;
    fixture_t *f;
    int thread;
    uint64_t revs[N_PER_THREAD];
    uint64_t seen[N_PER_THREAD];
    int failures;
    int unpublished; /* completed before its revision was published */
} worker_t;

static void *worker_main(void *arg) {
    worker_t *w = arg;

    for (int i = 0; i < N_PER_THREAD; i++) {
        counter_arg_t a = {w->thread, i, 0};

        if (store_exec(w->store, apply_increment, &a, &w->revs[i], NULL) !=
            REEL_OK)
            w->failures++;
        w->seen[i] = a.seen;
        /* Revisions are published in order from 1, so revision r was
         * published iff at least r were. */
        pthread_mutex_lock(&w->f->mu);
        if (w->f->n_published < w->revs[i])
            w->unpublished++;
        pthread_mutex_unlock(&w->f->mu);
    }
    return NULL;
}

static void test_concurrent_submitters_commit_each_write_once_in_order(
    void **state) {
    fixture_t *f = *state;
    static worker_t workers[N_THREADS];
    pthread_t th[N_THREADS];
    uint8_t *rev_seen = calloc(N_THREADS * N_PER_THREAD + 1, 1);
    char *counter;

    for (int t = 0; t < N_THREADS; t++) {
        memset(&workers[t], 0, sizeof(workers[t]));
        workers[t].store = f->store;
        workers[t].f = f;
        workers[t].thread = t;
        pthread_create(&th[t], NULL, worker_main, &workers[t]);
    }
    for (int t = 0; t < N_THREADS; t++)
        pthread_join(th[t], NULL);

    for (int t = 0; t < N_THREADS; t++) {
        assert_int_equal(workers[t].failures, 0);
        /* A write is answered only after its change was published. */
        assert_int_equal(workers[t].unpublished, 0);
        for (int i = 0; i < N_PER_THREAD; i++) {
            uint64_t r = workers[t].revs[i];
            char key[32], *val;

            /* Each write got a distinct revision in 1..N, and since every
             * request emits once, its revision equals the counter value it
             * wrote: commit order is revision order. */
            assert_true(r >= 1 && r <= N_THREADS * N_PER_THREAD);
            assert_int_equal(rev_seen[r], 0);
            rev_seen[r] = 1;
            assert_int_equal(workers[t].seen[i], r);
            if (i > 0)
                assert_true(r > workers[t].revs[i - 1]);
            snprintf(key, sizeof(key), "w/%d/%d", t, i);
            val = get_str(f->store, key);
            assert_non_null(val);
            assert_int_equal(strtoull(val, NULL, 10), r);
            free(val);
        }
    }
    counter = get_str(f->store, "counter");
    assert_non_null(counter);
    assert_string_equal(counter, "1600");
    free(counter);
    assert_int_equal(store_revision(f->store), N_THREADS * N_PER_THREAD);
    assert_int_equal(f->n_published, N_THREADS * N_PER_THREAD);
    for (size_t i = 0; i < f->n_published; i++)
        assert_int_equal(f->published[i], i + 1);
    free(rev_seen);
}

static void test_failed_request_does_not_fail_its_group(void **state) {
    fixture_t *f = *state;
    async_req_t a, b, c;
    char *val;

    async_init(&a, apply_put, "a", "1", 1);
    async_init(&b, apply_put_then_fail, "b", "2", 2);
    async_init(&c, apply_put, "c", "3", 1);
    run_as_one_group(f->store, (async_req_t *[]){&a, &b, &c}, 3);

    assert_int_equal(a.req.status.code, REEL_OK);
    assert_int_equal(c.req.status.code, REEL_OK);
    assert_int_equal(b.req.status.code, REEL_ABORTED);
    assert_string_equal(reel_status_message(&b.req.status),
                        "version conflict: expected 3, current 5");
    /* b's two revisions were given back: a and c are consecutive. */
    assert_int_equal(a.req.first_revision, 1);
    assert_int_equal(b.req.first_revision, 0);
    assert_int_equal(c.req.first_revision, 2);
    assert_int_equal(store_revision(f->store), 2);
    val = get_str(f->store, "b");
    assert_null(val);
    val = get_str(f->store, "c");
    assert_string_equal(val, "3");
    free(val);
    reel_status_fini(&b.req.status);
    assert_int_equal(f->n_published, 2);
}

typedef struct read_back {
    char got[16];
} read_back_t;

static reel_code_t apply_read_a(store_txn_t *txn, void *arg,
                                reel_status_t *st) {
    read_back_t *r = arg;
    char *val = NULL;
    size_t vlen = 0;
    reel_code_t rc = store_txn_get(txn, data, "a", 1, &val, &vlen, st);

    if (rc != REEL_OK)
        return reel_status_set(st, REEL_NOT_FOUND, "a not visible");
    snprintf(r->got, sizeof(r->got), "%.*s", (int)vlen, val);
    free(val);
    return REEL_OK;
}

static void test_request_sees_earlier_writes_of_its_group(void **state) {
    fixture_t *f = *state;
    async_req_t a, r;
    read_back_t rb = {{0}};

    async_init(&a, apply_put, "a", "first", 0);
    async_init(&r, apply_read_a, NULL, NULL, 0);
    r.req.arg = &rb;
    run_as_one_group(f->store, (async_req_t *[]){&a, &r}, 2);
    assert_int_equal(r.req.status.code, REEL_OK);
    assert_string_equal(rb.got, "first");
}

/* Blind writes: b's are rolled back with it, d's stay in order. */
static reel_code_t apply_blind(store_txn_t *txn, void *arg,
                               reel_status_t *st) {
    put_arg_t *a = arg;

    store_txn_put_blind(txn, data, a->key, strlen(a->key), a->val,
                        strlen(a->val));
    if (strcmp(a->key, "y") == 0)
        return reel_status_set(st, REEL_ABORTED, "failed after a blind put");
    if (strcmp(a->key, "z") == 0) {
        store_txn_delete_blind(txn, data, "z", 1);
        store_txn_delete_blind(txn, data, "w", 1);
        store_txn_put_blind(txn, data, "w", 1, "4", 1);
    }
    store_txn_put(txn, data, "a", 1, a->val, strlen(a->val));
    return REEL_OK;
}

static reel_code_t apply_read_x(store_txn_t *txn, void *arg,
                                reel_status_t *st) {
    read_back_t *r = arg;
    char *val = NULL;
    size_t vlen = 0;
    reel_code_t rc = store_txn_get(txn, data, "x", 1, &val, &vlen, st);

    free(val);
    snprintf(r->got, sizeof(r->got), "%s", rc == REEL_OK ? "seen" : "unseen");
    reel_status_fini(st);
    return REEL_OK;
}

static void test_blind_writes_commit_with_their_group(void **state) {
    fixture_t *f = *state;
    async_req_t x, y, r, z;
    read_back_t rb = {{0}};
    char *val;

    async_init(&x, apply_blind, "x", "1", 0);
    async_init(&y, apply_blind, "y", "2", 0);
    async_init(&r, apply_read_x, NULL, NULL, 0);
    r.req.arg = &rb;
    async_init(&z, apply_blind, "z", "3", 0);
    run_as_one_group(f->store, (async_req_t *[]){&x, &y, &r, &z}, 4);
    assert_int_equal(x.req.status.code, REEL_OK);
    assert_int_equal(y.req.status.code, REEL_ABORTED);
    reel_status_fini(&y.req.status);
    assert_int_equal(z.req.status.code, REEL_OK);
    /* Not visible inside the group... */
    assert_string_equal(rb.got, "unseen");

    /* ...committed with it, and durable. */
    for (int pass = 0; pass < 2; pass++) {
        val = get_str(f->store, "x");
        assert_non_null(val);
        assert_string_equal(val, "1");
        free(val);
        assert_null(get_str(f->store, "y"));
        assert_null(get_str(f->store, "z"));
        val = get_str(f->store, "w");
        assert_non_null(val);
        assert_string_equal(val, "4");
        free(val);
        val = get_str(f->store, "a"); /* the indexed write of the same group */
        assert_non_null(val);
        assert_string_equal(val, "3");
        free(val);
        reopen(f);
    }
}

static void test_full_queue_is_resource_exhausted(void **state) {
    fixture_t *f = *state;
    store_opts_t o = fixture_opts(f);
    async_req_t reqs[4], extra;
    reel_status_t st = REEL_STATUS_INIT;
    gate_t g;

    store_close(f->store);
    o.queue_capacity = 4;
    assert_int_equal(open_with(f, &o, &st), REEL_OK);

    gate_close(f->store, &g); /* the gate has left the queue */
    for (int i = 0; i < 4; i++) {
        async_init(&reqs[i], apply_put, "q", "v", 1);
        assert_int_equal(store_submit(f->store, &reqs[i].req), REEL_OK);
    }
    async_init(&extra, apply_put, "x", "v", 1);
    assert_int_equal(store_submit(f->store, &extra.req),
                     REEL_RESOURCE_EXHAUSTED);
    assert_non_null(strstr(reel_status_message(&extra.req.status),
                           "write queue is full"));
    reel_status_fini(&extra.req.status);
    gate_open(&g);
    for (int i = 0; i < 4; i++) {
        async_wait(&reqs[i]);
        assert_int_equal(reqs[i].req.status.code, REEL_OK);
    }
    assert_null(get_str(f->store, "x"));
    assert_int_equal(store_revision(f->store), 4);
}

/* Below min_free_bytes on the data dir's disk, a request that adds data is
 * refused before anything is written, naming the free bytes and the floor;
 * one that does not (a delete, a module's own) goes on. */
static void test_a_disk_below_its_floor_refuses_what_grows(void **state) {
    fixture_t *f = *state;
    store_opts_t o = fixture_opts(f);
    async_req_t grow, other;
    reel_status_t st = REEL_STATUS_INIT;
    char *val;

    store_close(f->store);
    o.min_free_bytes = UINT64_MAX / 2; /* more than any disk has */
    assert_int_equal(open_with(f, &o, &st), REEL_OK);
    async_init(&grow, apply_put, "g", "v", 1);
    grow.req.grows = 1;
    assert_int_equal(store_submit(f->store, &grow.req),
                     REEL_RESOURCE_EXHAUSTED);
    assert_non_null(strstr(reel_status_message(&grow.req.status),
                           " bytes free, less than the 9223372036854775807 "
                           "kept free (--min-free-disk-bytes)"));
    reel_status_fini(&grow.req.status);
    async_init(&other, apply_put, "o", "v", 1);
    assert_int_equal(store_submit(f->store, &other.req), REEL_OK);
    async_wait(&other);
    assert_int_equal(other.req.status.code, REEL_OK);
    assert_null(get_str(f->store, "g"));

    /* A floor the disk is above: taken. */
    store_close(f->store);
    o.min_free_bytes = 1;
    assert_int_equal(open_with(f, &o, &st), REEL_OK);
    async_init(&grow, apply_put, "g", "v", 1);
    grow.req.grows = 1;
    assert_int_equal(store_submit(f->store, &grow.req), REEL_OK);
    async_wait(&grow);
    assert_int_equal(grow.req.status.code, REEL_OK);
    val = get_str(f->store, "g");
    assert_non_null(val);
    assert_string_equal(val, "v");
    free(val);
}

/* The queue's bytes are bounded too: a request that would take the queued
 * ones past queue_bytes is refused, naming what waits and the budget, and
 * one request is taken whatever its size when none is queued. */
static void test_queue_bytes_over_budget_are_resource_exhausted(void **state) {
    fixture_t *f = *state;
    store_opts_t o = fixture_opts(f);
    async_req_t big, r[3], over;
    reel_status_t st = REEL_STATUS_INIT;
    store_stats_t stats;
    gate_t g;

    store_close(f->store);
    o.queue_bytes = 1000;
    assert_int_equal(open_with(f, &o, &st), REEL_OK);

    gate_close(f->store, &g); /* the gate has left the queue */
    async_init(&big, apply_put, "big", "v", 1);
    big.req.bytes = 5000; /* alone in the queue: taken */
    assert_int_equal(store_submit(f->store, &big.req), REEL_OK);
    async_init(&over, apply_put, "over", "v", 1);
    over.req.bytes = 1;
    assert_int_equal(store_submit(f->store, &over.req),
                     REEL_RESOURCE_EXHAUSTED);
    reel_status_fini(&over.req.status);
    gate_open(&g);
    async_wait(&big);
    assert_int_equal(big.req.status.code, REEL_OK);

    gate_close(f->store, &g);
    for (int i = 0; i < 2; i++) {
        async_init(&r[i], apply_put, i ? "b" : "a", "v", 1);
        r[i].req.bytes = 400;
        assert_int_equal(store_submit(f->store, &r[i].req), REEL_OK);
    }
    store_stats(f->store, &stats);
    assert_int_equal(stats.queue_bytes, 800);
    async_init(&over, apply_put, "over", "v", 1);
    over.req.bytes = 201;
    assert_int_equal(store_submit(f->store, &over.req),
                     REEL_RESOURCE_EXHAUSTED);
    assert_non_null(strstr(reel_status_message(&over.req.status),
                           "write queue is full (800 bytes waiting in 2 "
                           "requests, at most 1000; this one holds 201)"));
    reel_status_fini(&over.req.status);
    async_init(&r[2], apply_put, "c", "v", 1);
    r[2].req.bytes = 200; /* exactly to the budget */
    assert_int_equal(store_submit(f->store, &r[2].req), REEL_OK);
    gate_open(&g);
    for (int i = 0; i < 3; i++) {
        async_wait(&r[i]);
        assert_int_equal(r[i].req.status.code, REEL_OK);
    }
    store_stats(f->store, &stats);
    assert_int_equal(stats.queue_bytes, 0);
    assert_null(get_str(f->store, "over"));
    assert_int_equal(store_revision(f->store), 4);
}

static int fault_countdown;

static int fault_on_zero(void *arg) {
    (void)arg;
    return fault_countdown-- == 0;
}

static void test_write_failure_is_sticky_and_nothing_is_acknowledged(
    void **state) {
    fixture_t *f = *state;
    store_opts_t o = fixture_opts(f);
    reel_status_t st = REEL_STATUS_INIT;
    put_arg_t a = {"second", "v", 1};
    char *val;

    store_close(f->store);
    o.fault = fault_on_zero;
    fault_countdown = 1; /* the second group fails */
    assert_int_equal(open_with(f, &o, &st), REEL_OK);

    put_sync(f->store, "first", "v", 1, NULL);
    assert_int_equal(store_exec(f->store, apply_put, &a, NULL, &st),
                     REEL_UNAVAILABLE);
    assert_non_null(strstr(reel_status_message(&st), "injected write fault"));
    /* The fault is gone, but the store stays failed. */
    a.key = "third";
    assert_int_equal(store_exec(f->store, apply_put, &a, NULL, &st),
                     REEL_UNAVAILABLE);
    assert_int_equal(store_health(f->store, &st), REEL_UNAVAILABLE);
    assert_int_equal(store_revision(f->store), 1);
    /* Reads keep working. */
    val = get_str(f->store, "first");
    assert_string_equal(val, "v");
    free(val);
    assert_null(get_str(f->store, "second"));
    reel_status_fini(&st);

    /* A restart recovers: acknowledged writes are there, the rest is not. */
    reopen(f);
    assert_int_equal(store_revision(f->store), 1);
    assert_null(get_str(f->store, "second"));
    put_sync(f->store, "fourth", "v", 1, NULL);
    assert_int_equal(store_revision(f->store), 2);
}

/* The value of one series in the registry's exposition (fails if absent). */
static double scrape_value(metrics_registry_t *r, const char *series) {
    reel_status_t st = REEL_STATUS_INIT;
    char *out = NULL, want[256], *p;
    size_t len;
    double v;

    if (metrics_render(r, &out, &len, &st) != REEL_OK)
        fail_msg("render: %s", reel_status_message(&st));
    snprintf(want, sizeof(want), "\n%s ", series);
    p = strstr(out, want);
    if (p == NULL)
        fail_msg("no series %s in:\n%s", series, out);
    v = strtod(p + strlen(want), NULL);
    free(out);
    return v;
}

static void test_metrics_count_commits_groups_and_the_sticky_failure(
    void **state) {
    fixture_t *f = *state;
    store_opts_t o = fixture_opts(f);
    reel_status_t st = REEL_STATUS_INIT;
    metrics_registry_t *r = NULL;
    async_req_t reqs[5], *ptrs[5];
    put_arg_t a = {"late", "v", 1};
    store_stats_t stats;
    char key[5][16];
    gate_t g;

    store_close(f->store);
    assert_int_equal(metrics_registry_create(&r, NULL), REEL_OK);
    o.metrics = r;
    o.fault = fault_on_zero;
    fault_countdown = 3; /* three groups commit, the fourth fails */
    assert_int_equal(open_with(f, &o, &st), REEL_OK);
    assert_true(scrape_value(r, "reel_commits_total") == 0);
    assert_true(scrape_value(r, "reel_writes_refused") == 0);

    put_sync(f->store, "one", "v", 1, NULL);
    for (int i = 0; i < 5; i++) {
        snprintf(key[i], sizeof(key[i]), "g%d", i);
        async_init(&reqs[i], apply_put, key[i], "v", 1);
        ptrs[i] = &reqs[i];
    }
    run_as_one_group(f->store, ptrs, 5); /* the gate's group, then these */
    for (int i = 0; i < 5; i++)
        reel_status_fini(&reqs[i].req.status);
    /* one, the gate alone (it writes nothing: not a commit), the five */
    assert_true(scrape_value(r, "reel_commits_total") == 2);
    assert_true(scrape_value(r, "reel_commit_group_size_count") == 2);
    assert_true(scrape_value(r, "reel_commit_group_size_bucket{le=\"1\"}") ==
                1);
    assert_true(scrape_value(r, "reel_commit_group_size_bucket{le=\"4\"}") ==
                1);
    assert_true(scrape_value(r, "reel_commit_group_size_bucket{le=\"8\"}") ==
                2);
    assert_true(scrape_value(r, "reel_commit_group_size_sum") == 6);
    assert_true(scrape_value(r, "reel_commit_duration_seconds_count") == 2);
    store_stats(f->store, &stats);
    assert_int_equal(stats.commits, 2);
    assert_int_equal(stats.requests, 6);
    assert_true(stats.commit_ns > 0);
    assert_int_equal(stats.queue_depth, 0);
    assert_true(scrape_value(r, "reel_revision") == 6);
    assert_true(scrape_value(r, "reel_rocksdb_memtable_bytes{cf=\"data\"}") >
                0);
    assert_true(scrape_value(r, "reel_rocksdb_write_stopped") == 0);

    /* The queue's depth and bytes, while a gate holds the writer. */
    gate_close(f->store, &g);
    async_init(&reqs[0], apply_put, "queued", "v", 1);
    reqs[0].req.bytes = 123;
    assert_int_equal(store_submit(f->store, &reqs[0].req), REEL_OK);
    assert_true(scrape_value(r, "reel_write_queue_depth") == 1);
    assert_true(scrape_value(r, "reel_write_queue_bytes") == 123);
    gate_open(&g);
    async_wait(&reqs[0]);
    reel_status_fini(&reqs[0].req.status);
    assert_true(scrape_value(r, "reel_write_queue_depth") == 0);
    assert_true(scrape_value(r, "reel_write_queue_bytes") == 0);
    assert_true(scrape_value(r, "reel_commits_total") == 3);

    /* The fourth group's write fails: refused, and not counted. */
    assert_int_equal(store_exec(f->store, apply_put, &a, NULL, &st),
                     REEL_UNAVAILABLE);
    reel_status_fini(&st);
    assert_true(scrape_value(r, "reel_writes_refused") == 1);
    assert_true(scrape_value(r, "reel_commits_total") == 3);

    /* Closing drops everything the store registered. */
    store_close(f->store);
    f->store = NULL;
    {
        char *out = NULL;
        size_t len;

        assert_int_equal(metrics_render(r, &out, &len, NULL), REEL_OK);
        assert_string_equal(out, "");
        free(out);
    }
    metrics_registry_destroy(r);
    open_store(f);
}

static void test_reopen_sees_every_acknowledged_write(void **state) {
    fixture_t *f = *state;
    char key[32], val[32], *got;

    for (int i = 0; i < 300; i++) {
        snprintf(key, sizeof(key), "key-%03d", i);
        snprintf(val, sizeof(val), "value-%d", i * 7);
        put_sync(f->store, key, val, 1, NULL);
    }
    reopen(f);
    for (int i = 0; i < 300; i++) {
        snprintf(key, sizeof(key), "key-%03d", i);
        snprintf(val, sizeof(val), "value-%d", i * 7);
        got = get_str(f->store, key);
        assert_non_null(got);
        assert_string_equal(got, val);
        free(got);
    }
    assert_int_equal(store_revision(f->store), 300);
}

static void test_snapshot_reads_see_one_revision(void **state) {
    fixture_t *f = *state;
    store_snapshot_t *snap;
    store_iter_t *it;
    int n = 0;

    put_sync(f->store, "a", "1", 1, NULL);
    put_sync(f->store, "b", "2", 1, NULL);
    assert_int_equal(store_snapshot_create(f->store, &snap, NULL), REEL_OK);
    assert_int_equal(store_snapshot_revision(snap), 2);
    put_sync(f->store, "c", "3", 1, NULL);

    it = store_iter_create(f->store, data, snap);
    for (store_iter_seek_first(it); store_iter_valid(it); store_iter_next(it))
        n++;
    assert_int_equal(store_iter_status(it, NULL), REEL_OK);
    store_iter_destroy(it);
    assert_int_equal(n, 2);
    store_snapshot_release(f->store, snap);

    it = store_iter_create(f->store, data, NULL);
    n = 0;
    for (store_iter_seek(it, "b", 1); store_iter_valid(it); store_iter_next(it))
        n++;
    store_iter_destroy(it);
    assert_int_equal(n, 2);
}

/* A bounded iterator ends at the end of its prefix, at a snapshot too;
 * store_prefix_end gives that end, and none for a prefix of all 0xff. */
static void test_an_iterator_below_a_bound_ends_at_its_prefix(void **state) {
    fixture_t *f = *state;
    store_snapshot_t *snap;
    store_iter_t *it;
    char end[4];
    int n = 0;

    assert_int_equal(store_prefix_end("ab", 2, end), 2);
    assert_memory_equal(end, "ac", 2);
    assert_int_equal(store_prefix_end("a\xff\xff", 3, end), 1);
    assert_memory_equal(end, "b", 1);
    assert_int_equal(store_prefix_end("\xff", 1, end), 0);
    assert_int_equal(store_prefix_end("", 0, end), 0);

    put_sync(f->store, "a1", "1", 1, NULL);
    put_sync(f->store, "a2", "2", 1, NULL);
    assert_int_equal(store_snapshot_create(f->store, &snap, NULL), REEL_OK);
    put_sync(f->store, "a3", "3", 1, NULL);
    put_sync(f->store, "b1", "4", 1, NULL);
    assert_int_equal(store_prefix_end("a", 1, end), 1);
    it = store_iter_create_below(f->store, data, snap, end, 1);
    for (store_iter_seek(it, "a", 1); store_iter_valid(it); store_iter_next(it))
        n++;
    assert_int_equal(store_iter_status(it, NULL), REEL_OK);
    store_iter_destroy(it);
    store_snapshot_release(f->store, snap);
    assert_int_equal(n, 2);
    it = store_iter_create_below(f->store, data, NULL, end, 1);
    n = 0;
    for (store_iter_seek(it, "a", 1); store_iter_valid(it); store_iter_next(it))
        n++;
    store_iter_destroy(it);
    assert_int_equal(n, 3);
}

/* In a request: a walk of a prefix sees the committed keys and the
 * group's own in order, and the database's keys past the prefix never. */
static reel_code_t apply_prefix_walk(store_txn_t *txn, void *arg,
                                     reel_status_t *st) {
    char *seen = arg;
    store_iter_t *it;

    store_txn_put(txn, data, "a4", 2, "5", 1);
    store_txn_put(txn, data, "a0", 2, "6", 1);
    store_txn_delete(txn, data, "a2", 2);
    if ((it = store_txn_iter_prefix(txn, data, "a", 1)) == NULL)
        return reel_status_set(st, REEL_RESOURCE_EXHAUSTED, "out of memory");
    for (store_iter_seek(it, "a", 1); store_iter_valid(it);
         store_iter_next(it)) {
        size_t klen;
        const char *k = store_iter_key(it, &klen);

        if (klen != 2)
            return reel_status_set(st, REEL_INTERNAL, "key of %zu bytes",
                                   klen);
        strncat(seen, k, 2);
    }
    store_iter_destroy(it);
    /* A prefix of all 0xff has no end: its walk reads on. */
    if ((it = store_txn_iter_prefix(txn, data, "\xff", 1)) == NULL)
        return reel_status_set(st, REEL_RESOURCE_EXHAUSTED, "out of memory");
    store_iter_seek(it, "\xff", 1);
    if (store_iter_valid(it))
        strcat(seen, "!");
    store_iter_destroy(it);
    return REEL_OK;
}

static void test_a_requests_prefix_walk_ends_at_its_prefix(void **state) {
    fixture_t *f = *state;
    char seen[64] = "";

    put_sync(f->store, "a1", "1", 1, NULL);
    put_sync(f->store, "a2", "2", 1, NULL);
    put_sync(f->store, "a3", "3", 1, NULL);
    put_sync(f->store, "b1", "4", 1, NULL);
    put_sync(f->store, "\xff\x01", "7", 1, NULL);
    assert_int_equal(store_exec(f->store, apply_prefix_walk, seen, NULL, NULL),
                     REEL_OK);
    assert_string_equal(seen, "a0a1a3a4!");
}

/* store_get_first reads the first of two keys that exists; store_merge
 * walks two places in key order past their heads. */
static void test_two_places_read_as_one(void **state) {
    fixture_t *f = *state;
    store_merge_t m = {{NULL, NULL}, {"L:", "T:"}, {2, 2}, {2, 2}};
    const char *k, *v;
    char *val = NULL, got[32] = "";
    size_t vlen, klen;
    int which, place;

    put_sync(f->store, "L:a", "1", 1, NULL);
    put_sync(f->store, "T:b", "2", 1, NULL);
    put_sync(f->store, "L:c", "3", 1, NULL);
    put_sync(f->store, "T:d", "4", 1, NULL);
    put_sync(f->store, "U:e", "5", 1, NULL);
    assert_int_equal(store_get_first(f->store, NULL, NULL, data, "L:b", 3,
                                     "T:b", 3, &val, &vlen, &which, NULL),
                     REEL_OK);
    assert_int_equal(which, 1);
    assert_memory_equal(val, "2", 1);
    free(val);
    assert_int_equal(store_get_first(f->store, NULL, NULL, data, "L:a", 3,
                                     "T:a", 3, &val, &vlen, &which, NULL),
                     REEL_OK);
    assert_int_equal(which, 0);
    free(val);
    assert_int_equal(store_get_first(f->store, NULL, NULL, data, "L:x", 3,
                                     "T:x", 3, &val, &vlen, &which, NULL),
                     REEL_NOT_FOUND);

    m.it[0] = store_iter_prefix(f->store, data, NULL, "L:", 2);
    m.it[1] = store_iter_prefix(f->store, data, NULL, "T:", 2);
    store_iter_seek(m.it[0], "L:", 2);
    store_iter_seek(m.it[1], "T:", 2);
    while ((k = store_merge_key(&m, &klen, &v, &vlen, &place)) != NULL) {
        size_t n = strlen(got);

        snprintf(got + n, sizeof(got) - n, "%.*s%d%.*s ", (int)klen, k, place,
                 (int)vlen, v);
        store_iter_next(m.it[place]);
    }
    assert_int_equal(store_merge_status(&m, NULL), REEL_OK);
    assert_string_equal(got, "a01 b12 c03 d14 ");
    store_iter_destroy(m.it[0]);
    store_iter_destroy(m.it[1]);
}

/* An emit that cannot record its change fails its request, and only it:
 * no change is committed without the event the publish step (and the WAL)
 * need, and revisions stay gapless. */
static void test_an_emit_out_of_memory_fails_its_request_alone(void **state) {
    fixture_t *f = *state;
    async_req_t a, b, c;
    async_req_t *reqs[] = {&a, &b, &c};
    char *val;

    async_init(&a, apply_put, "a", "1", 1);
    async_init(&b, apply_put, "b", "2", 1);
    async_init(&c, apply_put, "c", "3", 1);
    reel_fault_arm("store.emit", 1, 1); /* b's emit */
    run_as_one_group(f->store, reqs, 3);
    reel_fault_reset();
    assert_int_equal(a.req.status.code, REEL_OK);
    assert_int_equal(b.req.status.code, REEL_RESOURCE_EXHAUSTED);
    assert_non_null(strstr(reel_status_message(&b.req.status),
                           "nothing was written"));
    assert_int_equal(c.req.status.code, REEL_OK);
    assert_int_equal(a.req.last_revision, 1);
    assert_int_equal(c.req.last_revision, 2);
    assert_null(get_str(f->store, "b"));
    val = get_str(f->store, "c");
    assert_string_equal(val, "3");
    free(val);
    /* Published exactly the committed revisions, gapless. */
    assert_int_equal(f->n_published, 2);
    assert_int_equal(f->published[0], 1);
    assert_int_equal(f->published[1], 2);
    for (size_t i = 0; i < 3; i++)
        reel_status_fini(&reqs[i]->req.status);
}

/* A count held by store_txn_count moves when its request commits, and
 * only then: a failed request's, or a failed write's, never lands. */
typedef struct count_arg {
    _Atomic int64_t *counter;
    int64_t delta;
    int fail;
} count_arg_t;

static reel_code_t apply_count(store_txn_t *txn, void *arg,
                               reel_status_t *st) {
    count_arg_t *a = arg;

    store_txn_put(txn, data, "n", 1, "x", 1);
    store_txn_count(txn, a->counter, a->delta);
    if (atomic_load(a->counter) != 0) /* not before the commit */
        return reel_status_set(st, REEL_INTERNAL, "counted early");
    if (a->fail)
        return reel_status_set(st, REEL_ABORTED, "failed on purpose");
    return REEL_OK;
}

static void test_a_count_moves_only_with_what_commits(void **state) {
    fixture_t *f = *state;
    _Atomic int64_t counter = 0;
    count_arg_t ok = {&counter, 5, 0}, bad = {&counter, 7, 1};
    reel_status_t st = REEL_STATUS_INIT;

    assert_int_equal(store_exec(f->store, apply_count, &ok, NULL, &st),
                     REEL_OK);
    assert_int_equal(atomic_load(&counter), 5);
    atomic_store(&counter, 0);
    assert_int_equal(store_exec(f->store, apply_count, &bad, NULL, &st),
                     REEL_ABORTED);
    reel_status_fini(&st);
    assert_int_equal(atomic_load(&counter), 0);
    ok.delta = -2;
    assert_int_equal(store_exec(f->store, apply_count, &ok, NULL, &st),
                     REEL_OK);
    assert_int_equal(atomic_load(&counter), -2);
    atomic_store(&counter, 0);
    reel_fault_arm("store.write", 0, 1); /* the write fails: sticky */
    assert_int_not_equal(store_exec(f->store, apply_count, &ok, NULL, &st),
                         REEL_OK);
    reel_fault_reset();
    reel_status_fini(&st);
    assert_int_equal(atomic_load(&counter), 0);
}

/* A snapshot whose revision cannot be read is an error, never a snapshot
 * at revision 0. */
static void test_a_snapshot_that_cannot_read_its_revision_fails(
    void **state) {
    fixture_t *f = *state;
    store_snapshot_t *snap = (store_snapshot_t *)1;
    reel_status_t st = REEL_STATUS_INIT;

    put_sync(f->store, "a", "1", 1, NULL);
    reel_fault_arm("store.snapshot", 0, 1);
    assert_int_equal(store_snapshot_create(f->store, &snap, &st),
                     REEL_INTERNAL);
    assert_null(snap);
    assert_non_null(strstr(reel_status_message(&st), "revision"));
    assert_int_equal(store_snapshot_create(f->store, &snap, &st), REEL_OK);
    assert_int_equal(store_snapshot_revision(snap), 1);
    store_snapshot_release(f->store, snap);
    reel_fault_reset();
    reel_status_fini(&st);
}

/* Read and iterator faults surface as INTERNAL, never as "not found" or a
 * short scan that looks complete. */
static void test_read_and_iterator_faults_are_errors(void **state) {
    fixture_t *f = *state;
    reel_status_t st = REEL_STATUS_INIT;
    store_iter_t *it;
    char *val = NULL;
    size_t vlen = 0;
    int n = 0;

    put_sync(f->store, "a", "1", 1, NULL);
    put_sync(f->store, "b", "2", 1, NULL);
    reel_fault_arm("store.get", 0, 1);
    assert_int_equal(store_get(f->store, data, "a", 1, &val, &vlen,
                               &st),
                     REEL_INTERNAL);
    assert_null(val);
    reel_fault_arm("store.iter", 1, 1); /* the first next() fails */
    it = store_iter_create(f->store, data, NULL);
    for (store_iter_seek_first(it); store_iter_valid(it); store_iter_next(it))
        n++;
    assert_int_equal(n, 1);
    assert_int_equal(store_iter_status(it, &st), REEL_INTERNAL);
    store_iter_destroy(it);
    reel_fault_reset();
    reel_status_fini(&st);
}

static void write_file(const char *dir, const char *name, const char *body) {
    char path[1024];
    FILE *fp;

    snprintf(path, sizeof(path), "%s/%s", dir, name);
    fp = fopen(path, "w");
    assert_non_null(fp);
    fputs(body, fp);
    fclose(fp);
}

static int file_exists(const char *dir, const char *name) {
    char path[1024];
    struct stat sb;

    snprintf(path, sizeof(path), "%s/%s", dir, name);
    return stat(path, &sb) == 0;
}

static void test_refuses_a_data_dir_of_another_format(void **state) {
    fixture_t *f = *state;
    store_opts_t o = fixture_opts(f);
    reel_status_t st = REEL_STATUS_INIT;
    char dir[600];
    store_t *s = NULL;

    /* A newer format in a fresh dir: refused, and nothing is created. */
    snprintf(dir, sizeof(dir), "%s/newer", f->dir);
    mkdir(dir, 0755);
    write_file(dir, "FORMAT", "reel-format 99\n");
    o.data_dir = dir;
    assert_int_equal(store_open(&o, &s, &st), REEL_FAILED_PRECONDITION);
    assert_null(s);
    assert_non_null(strstr(reel_status_message(&st), "format 99"));
    assert_non_null(strstr(reel_status_message(&st), "newer reel"));
    assert_false(file_exists(dir, "CURRENT"));
    reel_status_fini(&st);

    /* A RocksDB that is not ours: refused. */
    snprintf(dir, sizeof(dir), "%s/foreign", f->dir);
    mkdir(dir, 0755);
    write_file(dir, "CURRENT", "MANIFEST-000001\n");
    assert_int_equal(store_open(&o, &s, &st), REEL_FAILED_PRECONDITION);
    assert_non_null(strstr(reel_status_message(&st), "not written by reel"));
    assert_false(file_exists(dir, "FORMAT"));
    reel_status_fini(&st);
}

static void read_format(const char *dir, char *buf, size_t size) {
    char path[1024];
    FILE *fp;
    size_t n;

    snprintf(path, sizeof(path), "%s/FORMAT", dir);
    fp = fopen(path, "r");
    assert_non_null(fp);
    n = fread(buf, 1, size - 1, fp);
    buf[n] = '\0';
    fclose(fp);
}

/*
 * A data dir of an older format opens, says which it had, and is marked
 * with this format by store_format_upgrade() (then older reelds refuse
 * it); the mark is kept across a reopen. A FORMAT file left older than
 * meta/format (a crash between the two writes) upgrades again.
 */
static void test_an_older_format_opens_and_is_upgraded(void **state) {
    fixture_t *f = *state;
    store_opts_t o = fixture_opts(f);
    reel_status_t st = REEL_STATUS_INIT;
    char body[64], want[64];
    store_t *s = NULL;

    store_close(f->store);
    f->store = NULL;
    snprintf(want, sizeof(want), "reel-format %d\n", STORE_FORMAT_VERSION);
    write_file(f->dir, "FORMAT", "reel-format 1\n");
    assert_int_equal(store_open(&o, &s, &st), REEL_OK);
    assert_int_equal(store_format_opened(s), 1);
    read_format(f->dir, body, sizeof(body));
    assert_string_equal(body, "reel-format 1\n"); /* not before the call */
    assert_int_equal(store_format_upgrade(s, &st), REEL_OK);
    assert_int_equal(store_format_opened(s), STORE_FORMAT_VERSION);
    read_format(f->dir, body, sizeof(body));
    assert_string_equal(body, want);
    store_close(s);
    s = NULL;
    assert_int_equal(store_open(&o, &s, &st), REEL_OK);
    assert_int_equal(store_format_opened(s), STORE_FORMAT_VERSION);
    assert_int_equal(store_format_upgrade(s, &st), REEL_OK); /* nothing */
    f->store = s;
    reel_status_fini(&st);
}

static int count_files(const char *dir, const char *suffix);

/* A first start killed before RocksDB wrote CURRENT left FORMAT,
 * IDENTITY, LOCK and MANIFEST-000001, and every later start was refused
 * ("CURRENT: No such file"): such a dir is made again. One with data in
 * it and no CURRENT is still refused. */
static void test_a_first_start_cut_short_is_made_again(void **state) {
    fixture_t *f = *state;
    store_opts_t o = fixture_opts(f);
    reel_status_t st = REEL_STATUS_INIT;
    char dir[600], format[64];
    store_t *s = NULL;

    snprintf(format, sizeof(format), "reel-format %d\n", STORE_FORMAT_VERSION);
    snprintf(dir, sizeof(dir), "%s/cut", f->dir);
    mkdir(dir, 0700);
    write_file(dir, "FORMAT", format);
    write_file(dir, "IDENTITY", "4a2b\n");
    write_file(dir, "LOCK", "");
    write_file(dir, "MANIFEST-000001", "");
    write_file(dir, "000003.log", "");
    o.data_dir = dir;
    assert_int_equal(store_open(&o, &s, &st), REEL_OK);
    assert_int_equal(store_revision(s), 0);
    store_close(s);
    assert_true(file_exists(dir, "CURRENT"));

    snprintf(dir, sizeof(dir), "%s/cut-with-data", f->dir);
    mkdir(dir, 0700);
    write_file(dir, "FORMAT", format);
    write_file(dir, "IDENTITY", "4a2b\n");
    write_file(dir, "000009.sst", "a table\n");
    assert_int_not_equal(store_open(&o, &s, &st), REEL_OK);
    assert_null(s);
    assert_true(file_exists(dir, "000009.sst"));
    reel_status_fini(&st);

    /* A restore cut short: FORMAT, tables and options copied, no
     * CURRENT, no IDENTITY. It was made again as a new, empty data dir,
     * deleting the tables. */
    snprintf(dir, sizeof(dir), "%s/restore-cut-short", f->dir);
    mkdir(dir, 0700);
    write_file(dir, "FORMAT", format);
    write_file(dir, "000034.sst", "a table\n");
    write_file(dir, "OPTIONS-000029", "options\n");
    assert_int_equal(store_open(&o, &s, &st), REEL_FAILED_PRECONDITION);
    assert_null(s);
    assert_non_null(strstr(reel_status_message(&st),
                           "has reel's FORMAT but no database (no CURRENT) "
                           "and holds \"000034.sst\", which a first start "
                           "does not leave: a copy or restore cut short?"));
    assert_true(file_exists(dir, "000034.sst"));
    assert_int_equal(count_files(dir, NULL), 3);
    reel_status_fini(&st);
}

/* The files in dir, or those whose name ends in suffix. */
static int count_files(const char *dir, const char *suffix) {
    DIR *d = opendir(dir);
    struct dirent *e;
    int n = 0;

    assert_non_null(d);
    while ((e = readdir(d)) != NULL) {
        size_t len = strlen(e->d_name), t = suffix ? strlen(suffix) : 0;

        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        n += suffix == NULL ||
             (len > t && strcmp(e->d_name + len - t, suffix) == 0);
    }
    closedir(d);
    return n;
}

/* A directory holding anything but reel's own data is refused untouched:
 * RocksDB would otherwise delete the files that look like its own. */
static void test_refuses_a_non_empty_directory_untouched(void **state) {
    fixture_t *f = *state;
    store_opts_t o = fixture_opts(f);
    reel_status_t st = REEL_STATUS_INIT;
    char dir[600];
    store_t *s = NULL;

    snprintf(dir, sizeof(dir), "%s/user", f->dir);
    mkdir(dir, 0755);
    write_file(dir, "notes.txt", "mine\n");
    write_file(dir, "000099.sst", "not a table\n");
    write_file(dir, "MANIFEST-000777", "not a manifest\n");
    o.data_dir = dir;
    assert_int_equal(store_open(&o, &s, &st), REEL_FAILED_PRECONDITION);
    assert_null(s);
    assert_non_null(strstr(reel_status_message(&st), "not empty"));
    assert_non_null(strstr(reel_status_message(&st), "notes.txt"));
    assert_int_equal(count_files(dir, NULL), 3);
    assert_true(file_exists(dir, "000099.sst"));
    assert_true(file_exists(dir, "MANIFEST-000777"));

    /* A lone RocksDB log is not reel's either. */
    snprintf(dir, sizeof(dir), "%s/log", f->dir);
    mkdir(dir, 0755);
    write_file(dir, "000001.log", "");
    assert_int_equal(store_open(&o, &s, &st), REEL_FAILED_PRECONDITION);
    assert_int_equal(count_files(dir, NULL), 1);

    /* An empty directory, and a new one, become data dirs; a FORMAT.tmp
     * left by a crash before its rename does not count as content. */
    snprintf(dir, sizeof(dir), "%s/empty", f->dir);
    mkdir(dir, 0755);
    write_file(dir, "FORMAT.tmp", "reel-for");
    assert_int_equal(store_open(&o, &s, &st), REEL_OK);
    store_close(s);
    assert_true(file_exists(dir, "FORMAT"));
    assert_int_equal(store_open(&o, &s, &st), REEL_OK); /* and reopens */
    store_close(s);
    reel_status_fini(&st);
}

static void test_second_open_of_a_data_dir_is_refused(void **state) {
    fixture_t *f = *state;
    store_opts_t o = fixture_opts(f);
    reel_status_t st = REEL_STATUS_INIT;
    store_t *s = NULL;

    assert_int_equal(store_open(&o, &s, &st), REEL_UNAVAILABLE);
    assert_null(s);
    assert_non_null(strstr(reel_status_message(&st), "in use"));
    reel_status_fini(&st);
}

static void test_close_completes_queued_writes(void **state) {
    fixture_t *f = *state;
    async_req_t reqs[16];
    gate_t g;
    char *val;

    gate_close(f->store, &g);
    for (int i = 0; i < 16; i++) {
        async_init(&reqs[i], apply_put, "drained", "yes", 1);
        assert_int_equal(store_submit(f->store, &reqs[i].req), REEL_OK);
    }
    /* Open the gate from the test thread, then close at once: close must
     * wait for the queued requests and commit them. */
    pthread_mutex_lock(&g.mu);
    g.open = 1;
    pthread_cond_broadcast(&g.cv);
    pthread_mutex_unlock(&g.mu);
    reopen(f);
    pthread_join(g.submitter, NULL);
    assert_true(g.done);
    for (int i = 0; i < 16; i++) {
        assert_true(reqs[i].done);
        assert_int_equal(reqs[i].req.status.code, REEL_OK);
    }
    val = get_str(f->store, "drained");
    assert_string_equal(val, "yes");
    free(val);
    assert_int_equal(store_revision(f->store), 16);
}

/*
 * RocksDB logs through reel's log, not a LOG file in the data dir: on a
 * full disk that file's writer fails, and Debian's assert-enabled RocksDB
 * then aborts on the next line logged to it.
 */
static void test_rocksdb_logs_to_reel_not_to_a_file_in_the_data_dir(
    void **state) {
    fixture_t *f = *state;
    char path[sizeof(f->dir) + 16], buf[65536];
    int saved = dup(2), fd;
    ssize_t n;

    snprintf(path, sizeof(path), "%s.stderr", f->dir);
    fd = open(path, O_CREAT | O_TRUNC | O_RDWR, 0600);
    assert_true(fd >= 0 && saved >= 0);
    reel_log_set_level(REEL_LOG_DEBUG);
    dup2(fd, 2);
    reopen(f); /* RocksDB's open logs its recovery */
    dup2(saved, 2);
    close(saved);
    reel_log_set_level(REEL_LOG_INFO);
    n = pread(fd, buf, sizeof(buf) - 1, 0);
    close(fd);
    unlink(path);
    assert_true(n > 0);
    buf[n] = '\0';
    assert_non_null(strstr(buf, "DEBUG rocksdb: "));
    assert_non_null(strstr(buf, "Recovered from manifest file"));
    assert_false(file_exists(f->dir, "LOG"));
}

/* ---- Declared column families ------------------------------------------- */

static void test_declared_families_are_found_by_name_only(void **state) {
    fixture_t *f = *state;
    reel_status_t st = REEL_STATUS_INIT;
    store_cf_t *cf = NULL;

    assert_int_equal(store_cf_lookup(f->store, "tail", &cf, &st), REEL_OK);
    assert_non_null(cf);
    assert_string_equal(store_cf_name(cf), "tail");
    assert_string_equal(store_cf_name(data), "data");
    /* Not declared, and the store's own: neither is a module's to use. */
    assert_int_equal(store_cf_lookup(f->store, "kv", &cf, &st),
                     REEL_FAILED_PRECONDITION);
    assert_null(cf);
    assert_non_null(strstr(reel_status_message(&st), "\"kv\""));
    assert_int_equal(store_cf_lookup(f->store, "meta", &cf, &st),
                     REEL_FAILED_PRECONDITION);
    reel_status_fini(&st);
}

/* A malformed declaration is refused before the data dir is touched. */
static void test_malformed_declarations_are_refused_untouched(void **state) {
    fixture_t *f = *state;
    static const store_cf_desc_t again[] = {{"data", STORE_CF_PLAIN},
                                            {NULL, STORE_CF_PLAIN}};
    static const store_cf_desc_t meta[] = {{"meta", STORE_CF_PLAIN},
                                           {NULL, STORE_CF_PLAIN}};
    static const store_cf_desc_t deflt[] = {{"default", STORE_CF_PLAIN},
                                            {NULL, STORE_CF_PLAIN}};
    static const store_cf_desc_t empty[] = {{"", STORE_CF_PLAIN},
                                            {NULL, STORE_CF_PLAIN}};
    static const store_cf_desc_t kind[] = {{"odd", (store_cf_kind_t)7},
                                           {NULL, STORE_CF_PLAIN}};
    static const store_cf_desc_t twice[] = {{"x", STORE_CF_PLAIN},
                                            {"x", STORE_CF_TAIL},
                                            {NULL, STORE_CF_PLAIN}};
    char long_name[STORE_CF_NAME_MAX + 2];
    store_cf_desc_t too_long[] = {{long_name, STORE_CF_PLAIN},
                                  {NULL, STORE_CF_PLAIN}};
    const struct {
        const store_cf_desc_t *const lists[3];
        const char *why;
    } cases[] = {
        {{test_cfs, again, NULL}, "column family \"data\" is declared twice"},
        {{twice, NULL}, "column family \"x\" is declared twice"},
        {{meta, NULL}, "column family \"meta\": the name is the store's own"},
        {{deflt, NULL}, "\"default\": the name is the store's own"},
        {{empty, NULL}, "a name is 1-64 bytes (got 0)"},
        {{too_long, NULL}, "a name is 1-64 bytes (got 65)"},
        {{kind, NULL}, "column family \"odd\": unknown kind 7"},
    };
    store_opts_t o = fixture_opts(f);
    reel_status_t st = REEL_STATUS_INIT;
    char dir[600];
    store_t *s = NULL;

    memset(long_name, 'n', sizeof(long_name) - 1);
    long_name[sizeof(long_name) - 1] = '\0';
    snprintf(dir, sizeof(dir), "%s/never", f->dir);
    o.data_dir = dir;
    for (size_t i = 0; i < sizeof(cases) / sizeof(*cases); i++) {
        o.cfs = cases[i].lists;
        assert_int_equal(store_open(&o, &s, &st), REEL_INVALID_ARGUMENT);
        assert_null(s);
        if (strstr(reel_status_message(&st), cases[i].why) == NULL)
            fail_msg("case %zu: \"%s\" does not say \"%s\"", i,
                     reel_status_message(&st), cases[i].why);
        assert_false(file_exists(f->dir, "never"));
    }
    reel_status_fini(&st);
}

static reel_code_t apply_put_extra(store_txn_t *txn, void *arg,
                                   reel_status_t *st) {
    store_cf_t *extra = arg;

    (void)st;
    store_txn_put(txn, extra, "k", 1, "kept", 4);
    return REEL_OK;
}

/* A family on disk that no module declares any more is opened, left
 * alone, and found again by the next store that declares it. */
static void test_an_undeclared_family_on_disk_is_kept(void **state) {
    fixture_t *f = *state;
    static const store_cf_desc_t more[] = {{"extra", STORE_CF_LOOKUP},
                                           {NULL, STORE_CF_PLAIN}};
    const store_cf_desc_t *const with_extra[] = {test_cfs, more, NULL};
    store_opts_t o = fixture_opts(f);
    reel_status_t st = REEL_STATUS_INIT;
    store_cf_t *extra = NULL;
    char *val = NULL;
    size_t vlen = 0;

    store_close(f->store);
    o.cfs = with_extra;
    assert_int_equal(open_with(f, &o, &st), REEL_OK);
    assert_int_equal(store_cf_lookup(f->store, "extra", &extra, &st), REEL_OK);
    assert_int_equal(store_exec(f->store, apply_put_extra, extra, NULL, &st),
                     REEL_OK);
    put_sync(f->store, "a", "1", 1, NULL);
    reopen(f); /* declares data and tail only */
    assert_int_equal(store_cf_lookup(f->store, "extra", &extra, &st),
                     REEL_FAILED_PRECONDITION);
    val = get_str(f->store, "a");
    assert_string_equal(val, "1");
    free(val);
    put_sync(f->store, "b", "2", 1, NULL);
    store_close(f->store);
    assert_int_equal(open_with(f, &o, &st), REEL_OK);
    assert_int_equal(store_cf_lookup(f->store, "extra", &extra, &st), REEL_OK);
    assert_int_equal(store_get(f->store, extra, "k", 1, &val, &vlen, &st),
                     REEL_OK);
    assert_int_equal(vlen, 4);
    assert_memory_equal(val, "kept", 4);
    free(val);
    assert_int_equal(store_revision(f->store), 2);
    reel_status_fini(&st);
}

typedef struct tail_arg {
    store_cf_t *cf;
    int from, to;
} tail_arg_t;

static reel_code_t apply_put_tail(store_txn_t *txn, void *arg,
                                  reel_status_t *st) {
    tail_arg_t *a = arg;
    char k[16];

    (void)st;
    for (int i = a->from; i < a->to; i++) {
        snprintf(k, sizeof(k), "e%06d", i);
        store_txn_put_blind(txn, a->cf, k, strlen(k), k, strlen(k));
    }
    return REEL_OK;
}

/* A tail family (read ahead, no cache fill) reads like any other, with
 * and without a snapshot. */
static void test_a_tail_family_iterates_in_order(void **state) {
    fixture_t *f = *state;
    tail_arg_t a = {NULL, 0, 3000};
    store_snapshot_t *snap = NULL;
    store_iter_t *it;
    int n;

    assert_int_equal(store_cf_lookup(f->store, "tail", &a.cf, NULL), REEL_OK);
    assert_int_equal(store_exec(f->store, apply_put_tail, &a, NULL, NULL),
                     REEL_OK);
    assert_int_equal(store_snapshot_create(f->store, &snap, NULL), REEL_OK);
    a.from = 3000;
    a.to = 3100;
    assert_int_equal(store_exec(f->store, apply_put_tail, &a, NULL, NULL),
                     REEL_OK);
    for (int pass = 0; pass < 2; pass++) {
        it = store_iter_create(f->store, a.cf, pass == 0 ? snap : NULL);
        n = 0;
        for (store_iter_seek(it, "e", 1); store_iter_valid(it);
             store_iter_next(it)) {
            char want[16];
            size_t klen;
            const char *k = store_iter_key(it, &klen);

            snprintf(want, sizeof(want), "e%06d", n++);
            assert_int_equal(klen, strlen(want));
            assert_memory_equal(k, want, klen);
        }
        assert_int_equal(store_iter_status(it, NULL), REEL_OK);
        store_iter_destroy(it);
        assert_int_equal(n, pass == 0 ? 3000 : 3100);
    }
    store_snapshot_release(f->store, snap);
}


/* ---- The alarm ------------------------------------------------------------ */

typedef struct alarm_state {
    pthread_mutex_t mu;
    pthread_cond_t cv; /* on CLOCK_MONOTONIC */
    int calls;
    int64_t at_ms;  /* the group time of the last call */
    int64_t due_ms; /* what it was armed for */
    int rearm;      /* arm again, this far ahead, once */
    store_t *store;
} alarm_state_t;

static reel_code_t count_alarm(void *arg, store_txn_t *txn,
                               reel_status_t *st) {
    alarm_state_t *a = arg;

    (void)st;
    /* Its write commits with the group like any request's. */
    store_txn_put(txn, data, "alarm", 5, "1", 1);
    pthread_mutex_lock(&a->mu);
    a->calls++;
    a->at_ms = store_txn_now_ms(txn);
    if (a->rearm > 0) {
        a->due_ms = a->at_ms + a->rearm;
        store_wake_at(a->store, a->due_ms);
        a->rearm = 0;
    }
    pthread_cond_broadcast(&a->cv);
    pthread_mutex_unlock(&a->mu);
    return REEL_OK;
}

static int wait_calls(alarm_state_t *a, int n) {
    struct timespec ts;
    int ok;

    ts = reel_clock_mono_after(5000);
    pthread_mutex_lock(&a->mu);
    while (a->calls < n &&
           pthread_cond_timedwait(&a->cv, &a->mu, &ts) == 0) {
    }
    ok = a->calls >= n;
    pthread_mutex_unlock(&a->mu);
    return ok;
}

/* Reopens f's store with a's count_alarm as its alarm. */
static void alarm_reopen(fixture_t *f, alarm_state_t *a) {
    store_opts_t o = fixture_opts(f);

    pthread_mutex_init(&a->mu, NULL);
    reel_cond_init_mono(&a->cv);
    store_close(f->store);
    o.alarm = count_alarm;
    o.alarm_arg = a;
    f->store = testing_store_open(f->dir, &o);
    assert_int_equal(store_cf_lookup(f->store, "data", &data, NULL), REEL_OK);
    a->store = f->store;
}

/* Back to f's store without an alarm. */
static void alarm_close(fixture_t *f, alarm_state_t *a) {
    store_close(f->store);
    f->store = NULL;
    open_store(f);
    pthread_mutex_destroy(&a->mu);
    pthread_cond_destroy(&a->cv);
}

/* Armed from another thread while the writer is idle, the alarm runs at
 * its time, not before, once; armed again from inside, it runs again;
 * disarmed, it stays quiet while other groups commit. */
static void test_the_alarm_runs_at_its_time_once_per_arming(void **state) {
    fixture_t *f = *state;
    alarm_state_t a = {.rearm = 30};
    put_arg_t put = {"k", "v", 1};
    char *val = NULL;
    size_t vlen = 0;

    alarm_reopen(f, &a);
    a.due_ms = reel_clock_now_ms() + 50;
    store_wake_at(f->store, a.due_ms);
    store_wake_at(f->store, a.due_ms + 1000); /* later: changes nothing */
    assert_true(wait_calls(&a, 2));
    pthread_mutex_lock(&a.mu);
    assert_true(a.at_ms >= a.due_ms); /* the second, rearmed one */
    pthread_mutex_unlock(&a.mu);
    /* Disarmed now: groups come and go and it does not run. */
    for (int i = 0; i < 5; i++)
        assert_int_equal(store_exec(f->store, apply_put, &put, NULL, NULL),
                         REEL_OK);
    pthread_mutex_lock(&a.mu);
    assert_int_equal(a.calls, 2);
    pthread_mutex_unlock(&a.mu);
    assert_int_equal(store_get(f->store, data, "alarm", 5, &val, &vlen, NULL),
                     REEL_OK);
    free(val);
    alarm_close(f, &a);
}

/* ---- A lone submitter runs its own group -------------------------------- */

static void sleep_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};

    nanosleep(&ts, NULL);
}

/* Waits (up to 5 s) for the writer thread to sleep. After a group of one,
 * the next lone submit then runs on its caller's thread: without the wait
 * a caller woken by done may come back before the writer has gone to
 * sleep, on a busy machine every time, and its request queues instead. */
static void wait_writer_idle(store_t *s) {
    store_stats_t st;

    for (int i = 0; i < 5000; i++) {
        store_stats(s, &st);
        if (st.writer_idle)
            return;
        sleep_ms(1);
    }
    fail_msg("the writer thread never went to sleep");
}

typedef struct where {
    pthread_t thread; /* the thread the apply ran on */
    put_arg_t put;
} where_t;

static reel_code_t apply_put_where(store_txn_t *txn, void *arg,
                                   reel_status_t *st) {
    where_t *w = arg;

    w->thread = pthread_self();
    return apply_put(txn, &w->put, st);
}

/* One caller writing at a time: once the writer has seen a group of one,
 * the caller's own thread runs each request (done before store_submit
 * returns), revisions stay gapless, and every change is published once,
 * in order. */
static void test_a_lone_caller_runs_its_requests_on_its_own_thread(
    void **state) {
    fixture_t *f = *state;
    store_stats_t before, after;
    where_t w = {.put = {"lone", "v", 1}};
    uint64_t rev = 0;

    store_stats(f->store, &before);
    for (int i = 0; i < 20; i++) {
        wait_writer_idle(f->store);
        assert_int_equal(store_exec(f->store, apply_put_where, &w, &rev, NULL),
                         REEL_OK);
        assert_int_equal(rev, (uint64_t)i + 1);
    }
    store_stats(f->store, &after);
    /* The first may have gone to the writer (no group of one yet). */
    assert_true(after.led - before.led >= 19);
    assert_true(pthread_equal(w.thread, pthread_self()));
    assert_int_equal(after.commits - before.commits, 20);
    pthread_mutex_lock(&f->mu);
    assert_int_equal(f->n_published, 20);
    for (size_t i = 0; i < f->n_published; i++)
        assert_int_equal(f->published[i], i + 1);
    pthread_mutex_unlock(&f->mu);
}

/* With writer_only (one thread makes every submit), the writer thread runs
 * every group, even a lone caller's: that caller, running one, could take
 * no new request meanwhile. */
static void test_writer_only_keeps_every_group_on_the_writer(void **state) {
    fixture_t *f = *state;
    store_opts_t o = fixture_opts(f);
    store_stats_t st;
    where_t w = {.put = {"lone", "v", 1}};

    store_close(f->store);
    o.writer_only = 1;
    f->store = testing_store_open(f->dir, &o);
    assert_int_equal(store_cf_lookup(f->store, "data", &data, NULL), REEL_OK);
    for (int i = 0; i < 10; i++) {
        wait_writer_idle(f->store);
        assert_int_equal(store_exec(f->store, apply_put_where, &w, NULL, NULL),
                         REEL_OK);
        assert_false(pthread_equal(w.thread, pthread_self()));
    }
    store_stats(f->store, &st);
    assert_int_equal(st.led, 0);
    assert_int_equal(st.commits, 10);
}

/* While a submitter runs a group (held by a gate), later requests queue:
 * the writer thread runs them once it is done, as one group, after it. */
static void test_requests_behind_a_submitters_group_go_to_the_writer(
    void **state) {
    fixture_t *f = *state;
    where_t first = {.put = {"first", "1", 1}};
    async_req_t reqs[8];
    where_t wh[8];
    store_stats_t before, after;
    gate_t g;

    /* A group of one, so the gate's submitter runs it itself. */
    assert_int_equal(store_exec(f->store, apply_put_where, &first, NULL, NULL),
                     REEL_OK);
    wait_writer_idle(f->store);
    store_stats(f->store, &before);
    gate_close(f->store, &g);
    for (int i = 0; i < 8; i++) {
        async_init(&reqs[i], apply_put_where, "queued", "x", 1);
        wh[i].put = reqs[i].put;
        reqs[i].req.arg = &wh[i];
        assert_int_equal(store_submit(f->store, &reqs[i].req), REEL_OK);
        assert_false(reqs[i].done); /* queued, not run here */
    }
    gate_open(&g);
    for (int i = 0; i < 8; i++) {
        async_wait(&reqs[i]);
        assert_int_equal(reqs[i].req.status.code, REEL_OK);
        assert_int_equal(reqs[i].req.first_revision, 2 + (uint64_t)i);
        assert_false(pthread_equal(wh[i].thread, pthread_self()));
        assert_false(pthread_equal(wh[i].thread, g.submitter));
    }
    store_stats(f->store, &after);
    /* The gate, which writes nothing (no commit), then the 8 as one. */
    assert_int_equal(after.led - before.led, 1);
    assert_int_equal(after.commits - before.commits, 1);
    assert_int_equal(after.requests - before.requests, 8);
}

typedef struct nested {
    store_t *store;
    async_req_t inner;
    int submitted_inside; /* store_submit() returned before inner ran */
} nested_t;

static void nested_done(store_req_t *req) {
    nested_t *n = req->arg;

    /* On the thread that runs the group: the request is queued for the
     * writer, not run inside this one. */
    assert_int_equal(store_submit(n->store, &n->inner.req), REEL_OK);
    n->submitted_inside = !n->inner.done;
}

static reel_code_t apply_outer(store_txn_t *txn, void *arg,
                               reel_status_t *st) {
    put_arg_t outer = {"outer", "1", 1};

    (void)arg;
    return apply_put(txn, &outer, st);
}

static void test_a_submit_from_a_done_is_queued_not_nested(void **state) {
    fixture_t *f = *state;
    put_arg_t one = {"one", "1", 1};
    nested_t n = {.store = f->store};
    store_req_t outer = {.apply = apply_outer, .done = nested_done,
                         .arg = &n};

    assert_int_equal(store_exec(f->store, apply_put, &one, NULL, NULL),
                     REEL_OK);
    async_init(&n.inner, apply_put, "inner", "2", 1);
    assert_int_equal(store_submit(f->store, &outer), REEL_OK);
    async_wait(&n.inner);
    assert_true(n.submitted_inside);
    assert_int_equal(n.inner.req.status.code, REEL_OK);
    assert_int_equal(outer.first_revision + 1, n.inner.req.first_revision);
    reel_status_fini(&outer.status);
}

typedef struct stopper {
    store_t *store;
    atomic_int stopped;
} stopper_t;

static void *stop_main(void *arg) {
    stopper_t *st = arg;

    store_stop(st->store);
    atomic_store(&st->stopped, 1);
    return NULL;
}

/* A stop waits for the group a submitter is running, and a request that
 * group queued meanwhile still commits. */
static void test_stop_waits_for_a_submitters_group(void **state) {
    fixture_t *f = *state;
    put_arg_t one = {"one", "1", 1};
    stopper_t st = {.store = f->store};
    async_req_t queued;
    pthread_t t;
    gate_t g;

    assert_int_equal(store_exec(f->store, apply_put, &one, NULL, NULL),
                     REEL_OK);
    wait_writer_idle(f->store);
    gate_close(f->store, &g);
    async_init(&queued, apply_put, "queued", "q", 1);
    assert_int_equal(store_submit(f->store, &queued.req), REEL_OK);
    assert_int_equal(pthread_create(&t, NULL, stop_main, &st), 0);
    sleep_ms(100);
    assert_false(atomic_load(&st.stopped));
    gate_open(&g);
    pthread_join(t, NULL);
    assert_true(queued.done);
    assert_int_equal(queued.req.status.code, REEL_OK);
    assert_int_equal(store_revision(f->store), 2);
}

/* The alarm's time passes while a submitter holds the role: the writer
 * thread runs it as soon as the submitter is done. */
static void test_the_alarm_waits_for_a_submitters_group(void **state) {
    fixture_t *f = *state;
    alarm_state_t a = {0};
    put_arg_t one = {"one", "1", 1};
    gate_t g;

    alarm_reopen(f, &a);
    assert_int_equal(store_exec(f->store, apply_put, &one, NULL, NULL),
                     REEL_OK);
    wait_writer_idle(f->store);
    gate_close(f->store, &g);
    store_wake_at(f->store, reel_clock_now_ms() + 20);
    sleep_ms(100);
    pthread_mutex_lock(&a.mu);
    assert_int_equal(a.calls, 0); /* not beside the running group */
    pthread_mutex_unlock(&a.mu);
    gate_open(&g);
    assert_true(wait_calls(&a, 1));
    alarm_close(f, &a);
}

/* The bytes of the RocksDB WAL files ("NNNNNN.log") in dir. */
static uint64_t wal_bytes(const char *dir) {
    DIR *d = opendir(dir);
    struct dirent *e;
    uint64_t total = 0;
    char path[1024];
    struct stat sb;

    assert_non_null(d);
    while ((e = readdir(d)) != NULL) {
        size_t n = strlen(e->d_name);

        if (n < 5 || strcmp(e->d_name + n - 4, ".log") != 0)
            continue;
        snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
        if (stat(path, &sb) == 0)
            total += (uint64_t)sb.st_size;
    }
    closedir(d);
    return total;
}

/*
 * Every commit writes meta/revision, so without a cap on the live WAL the
 * meta family would pin every log since its last flush, and the WAL would
 * grow with the data written (a restart replays all of it). With the cap,
 * old logs are flushed out and released (bench/ANALYSIS.md, "Sequential
 * writes"); what was written reads back after a reopen.
 */
static void test_the_wal_stays_bounded_while_writes_go_on(void **state) {
    fixture_t *f = *state;
    size_t len = (size_t)1 << 20;
    char *val = malloc(len + 1);
    char key[32], *got;
    uint64_t most = 0, now;
    int n = 320;

    assert_non_null(val);
    val[len] = '\0';
    for (int i = 0; i < n; i++) {
        snprintf(key, sizeof(key), "big%03d", i);
        memset(val, 'a' + i % 26, len);
        put_sync(f->store, key, val, 0, NULL);
        if ((now = wal_bytes(f->dir)) > most)
            most = now;
    }
    /* 64 MiB of live logs, and the files RocksDB has yet to delete (about
     * 16 MiB each, the data family's memtable). */
    assert_true(most < ((uint64_t)160 << 20));
    reopen(f);
    for (int i = 0; i < n; i += n - 1) {
        snprintf(key, sizeof(key), "big%03d", i);
        memset(val, 'a' + i % 26, len);
        got = get_str(f->store, key);
        assert_non_null(got);
        assert_string_equal(got, val);
        free(got);
    }
    free(val);
}

static void test_the_background_rate_follows_the_commits(void **state) {
    const int64_t ceil = 4000000000;
    store_gov_t g = {ceil, STORE_GOV_START, 0, 0};
    int64_t r;

    (void)state;
    /* No bulk writer: the ceiling, and the tick's mean is the usual. */
    assert_int_equal(store_gov_next(&g, 0, 20, 300e3, 400000), ceil);
    assert_true(g.usual_ns == 300e3);
    /* A bulk writer starts with nobody committing: it keeps the ceiling. */
    assert_int_equal(store_gov_next(&g, 1, 0, 0, 0), ceil);
    /* One starts beside commits: at the start rate, however fast they go. */
    assert_int_equal(store_gov_next(&g, 0, 20, 300e3, 400000), ceil);
    assert_int_equal(store_gov_next(&g, 1, 20, 300e3, 400000),
                     STORE_GOV_START);
    /* Commits half again as slow: from above the start, straight to it;
     * then halved, never under the floor. */
    g.rate = ceil;
    assert_int_equal(store_gov_next(&g, 1, 20, 460e3, 600000),
                     STORE_GOV_START);
    assert_int_equal(store_gov_next(&g, 1, 20, 460e3, 600000),
                     STORE_GOV_START / 2);
    for (int i = 0; i < 10; i++)
        r = store_gov_next(&g, 1, 20, 900e3, 1000000);
    assert_int_equal(r, STORE_GOV_FLOOR);
    /* The mean as usual but one commit four times as long: cut too. */
    g.rate = STORE_GOV_START;
    g.usual_ns = 300e3;
    assert_int_equal(store_gov_next(&g, 1, 20, 300e3, 1300000),
                     STORE_GOV_START / 2);
    /* Commits as usual: a quarter more per tick. */
    g.usual_ns = 300e3;
    assert_int_equal(store_gov_next(&g, 1, 20, 300e3, 500000),
                     STORE_GOV_START / 2 + STORE_GOV_START / 8);
    /* Too few commits to judge by: doubled, up to the ceiling. */
    g.rate = ceil / 4;
    assert_int_equal(store_gov_next(&g, 1, 3, 5e6, 5000000), ceil / 2);
    assert_int_equal(store_gov_next(&g, 1, 3, 5e6, 5000000), ceil);
    assert_int_equal(store_gov_next(&g, 1, 0, 0, 0), ceil);
    /* "Usual" follows a load that stays: up 1% a tick, so 1.2x the first
     * usual is no longer slow after a while, and the rate grows back. */
    g = (store_gov_t){ceil, STORE_GOV_FLOOR, 300e3, 1};
    for (int i = 0; i < 20; i++)
        store_gov_next(&g, 1, 20, 360e3, 500000);
    assert_true(g.usual_ns > 300e3 && g.usual_ns <= 360e3);
    assert_true(g.rate > STORE_GOV_FLOOR * 10);
    /* A lower ceiling holds, even for the start. */
    g = (store_gov_t){STORE_GOV_FLOOR, STORE_GOV_FLOOR, 300e3, 0};
    assert_int_equal(store_gov_next(&g, 1, 2, 0, 0), STORE_GOV_FLOOR);
    assert_int_equal(store_gov_next(&g, 1, 20, 300e3, 300000),
                     STORE_GOV_FLOOR);
}

static const store_cf_desc_t bulk_cfs[] = {
    {"data", STORE_CF_LOOKUP},
    {"bulk", STORE_CF_BULK},
    {NULL, STORE_CF_PLAIN},
};
static const store_cf_desc_t *const bulk_cf_lists[] = {bulk_cfs, NULL};

static int64_t background_rate(store_t *s) {
    store_stats_t st;

    store_stats(s, &st);
    return st.background_rate;
}

/* Commits until a tick ran: 0.25 s of writes. */
static void commit_a_while(store_t *s) {
    int64_t end = reel_clock_mono_ns() + 250000000;
    char key[32];

    for (int i = 0; reel_clock_mono_ns() < end; i++) {
        snprintf(key, sizeof(key), "k%d", i);
        put_sync(s, key, "v", 0, NULL);
    }
}

/* Each bulk sync flushes, which starts a log file; the commits between
 * pinned them all (6,428 files after 20 minutes of uploads, read one by
 * one by a restart after a crash). The other families are flushed every
 * so many bulk flushes, which releases them. */
static void test_bulk_syncs_do_not_pile_up_log_files(void **state) {
    fixture_t *f = *state;
    store_opts_t o = fixture_opts(f);
    reel_status_t st = REEL_STATUS_INIT;
    store_cf_t *bulk;
    int most = 0;

    store_close(f->store);
    f->store = NULL;
    assert_int_equal(testing_dir_remove(f->dir), 0);
    assert_int_equal(testing_dir_make(f->dir, sizeof(f->dir), "store"), 0);
    o.cfs = bulk_cf_lists;
    assert_int_equal(open_with(f, &o, &st), REEL_OK);
    assert_int_equal(store_cf_lookup(f->store, "bulk", &bulk, NULL), REEL_OK);
    for (int i = 0; i < 200; i++) {
        char key[16];

        snprintf(key, sizeof(key), "c%d", i);
        put_sync(f->store, key, "v", 0, NULL);
        assert_int_equal(store_bulk_put(f->store, bulk, key, strlen(key),
                                        "chunk", 5, &st),
                         REEL_OK);
        assert_int_equal(store_bulk_sync(f->store, bulk, &st), REEL_OK);
        if (count_files(f->dir, ".log") > most)
            most = count_files(f->dir, ".log");
    }
    /* 200 before: one per sync. */
    assert_true(most <= 80);
}

static void test_an_auto_background_rate_runs_free_without_bulk_writers(
    void **state) {
    fixture_t *f = *state;
    store_opts_t o = fixture_opts(f);
    reel_status_t st = REEL_STATUS_INIT;
    store_cf_t *bulk;
    char *chunk = calloc(1, 1 << 20);

    assert_non_null(chunk);
    store_close(f->store);
    f->store = NULL;
    assert_int_equal(testing_dir_remove(f->dir), 0);
    assert_int_equal(testing_dir_make(f->dir, sizeof(f->dir), "store"), 0);
    o.cfs = bulk_cf_lists;
    o.background_write_auto = 1;
    assert_int_equal(open_with(f, &o, &st), REEL_OK);
    assert_int_equal(store_cf_lookup(f->store, "bulk", &bulk, NULL), REEL_OK);
    /* It starts held, and goes free (0: no limit) once a tick sees no bulk
     * writer. */
    assert_int_equal(background_rate(f->store), STORE_GOV_START);
    commit_a_while(f->store);
    assert_int_equal(background_rate(f->store), 0);
    /* While a bulk writer works and the commits go on, it is held within
     * the floor and the ceiling. */
    for (int i = 0; i < 8; i++) {
        char key[16];

        snprintf(key, sizeof(key), "c%d", i);
        assert_int_equal(store_bulk_put(f->store, bulk, key, strlen(key),
                                        chunk, 1 << 20, &st),
                         REEL_OK);
        commit_a_while(f->store);
        assert_true(background_rate(f->store) == 0 ||
                    background_rate(f->store) >= STORE_GOV_FLOOR);
    }
    assert_int_equal(store_bulk_sync(f->store, bulk, &st), REEL_OK);
    /* A second after the last bulk step, the next tick frees it. */
    sleep(1);
    commit_a_while(f->store);
    assert_int_equal(background_rate(f->store), 0);
    free(chunk);

    /* A fixed rate stays fixed. */
    store_close(f->store);
    f->store = NULL;
    o.background_write_auto = 0;
    o.background_write_rate = 50000000;
    assert_int_equal(open_with(f, &o, &st), REEL_OK);
    commit_a_while(f->store);
    assert_int_equal(background_rate(f->store), 50000000);
    /* The largest fixed rate is a limit too, not "no limit". */
    store_close(f->store);
    f->store = NULL;
    o.background_write_rate = STORE_BACKGROUND_RATE_MAX;
    assert_int_equal(open_with(f, &o, &st), REEL_OK);
    commit_a_while(f->store);
    assert_int_equal(background_rate(f->store),
                     (int64_t)STORE_BACKGROUND_RATE_MAX);
}

/* ---- RocksDB's checksums ------------------------------------------------ */

typedef uint32_t (*extend_fn)(uint32_t crc, const char *buf, size_t size);

#define EXTEND_SYMBOL "_ZN7rocksdb6crc32c6ExtendEjPKcm"

/* librocksdb's own Extend: dlsym on the library's handle looks in the
 * library first, where the process's lookup order finds reel's. */
static extend_fn rocksdb_own_extend(void) {
    Dl_info info;
    void *lib;
    extend_fn fn;

    assert_true(dladdr((void *)rocksdb_open, &info) != 0);
    lib = dlopen(info.dli_fname, RTLD_LAZY | RTLD_NOLOAD);
    assert_non_null(lib);
    fn = (extend_fn)dlsym(lib, EXTEND_SYMBOL);
    dlclose(lib);
    assert_non_null(fn);
    return fn;
}

static void test_rocksdb_checksums_with_the_cpus_crc32c(void **state) {
    extend_fn bound, own;
    char zeros[32], ones[32], buf[512 + 8];
    uint32_t seed = 12345;

    (void)state;
    if (!__builtin_cpu_supports("sse4.2"))
        skip();
    assert_string_equal(store_crc32c_engine(), "sse4.2");
    /* What RocksDB's calls bind to is reel's, not the library's own. */
    bound = (extend_fn)dlsym(RTLD_DEFAULT, EXTEND_SYMBOL);
    own = rocksdb_own_extend();
    assert_non_null(bound);
    assert_true(bound != own);

    /* CRC-32C's check value, and RFC 3720's B.4 examples. */
    memset(zeros, 0, sizeof(zeros));
    memset(ones, 0xff, sizeof(ones));
    assert_int_equal(bound(0, "123456789", 9), 0xE3069283u);
    assert_int_equal(bound(0, zeros, 32), 0x8A9136AAu);
    assert_int_equal(bound(0, ones, 32), 0x62A8AB43u);

    /* The library's own values, at every length and alignment, and in
     * pieces (a record's CRC is extended over its header then its body). */
    for (size_t i = 0; i < sizeof(buf); i++) {
        seed = seed * 1103515245u + 12345u;
        buf[i] = (char)(seed >> 16);
    }
    for (size_t off = 0; off < 8; off++)
        for (size_t len = 0; len <= 512; len++) {
            size_t cut = len / 3;
            uint32_t want = own(0, buf + off, len);

            assert_int_equal(bound(0, buf + off, len), want);
            assert_int_equal(bound(bound(0, buf + off, cut), buf + off + cut,
                                   len - cut),
                             want);
            assert_int_equal(bound(0x1234567u, buf + off, len),
                             own(0x1234567u, buf + off, len));
            assert_int_equal(store_crc32c_bitwise(0, buf + off, len), want);
        }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(
            test_a_lone_caller_runs_its_requests_on_its_own_thread, setup,
            teardown),
        cmocka_unit_test_setup_teardown(
            test_a_first_start_cut_short_is_made_again, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_writer_only_keeps_every_group_on_the_writer, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_requests_behind_a_submitters_group_go_to_the_writer, setup,
            teardown),
        cmocka_unit_test_setup_teardown(
            test_a_submit_from_a_done_is_queued_not_nested, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stop_waits_for_a_submitters_group,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_the_alarm_waits_for_a_submitters_group, setup, teardown),
        cmocka_unit_test(test_the_background_rate_follows_the_commits),
        cmocka_unit_test_setup_teardown(test_bulk_syncs_do_not_pile_up_log_files,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_an_auto_background_rate_runs_free_without_bulk_writers, setup,
            teardown),
        cmocka_unit_test_setup_teardown(
            test_revisions_are_gapless_and_survive_reopen, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_concurrent_submitters_commit_each_write_once_in_order, setup,
            teardown),
        cmocka_unit_test_setup_teardown(
            test_failed_request_does_not_fail_its_group, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_request_sees_earlier_writes_of_its_group, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_blind_writes_commit_with_their_group, setup, teardown),
        cmocka_unit_test_setup_teardown(test_full_queue_is_resource_exhausted,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_queue_bytes_over_budget_are_resource_exhausted, setup,
            teardown),
        cmocka_unit_test_setup_teardown(
            test_write_failure_is_sticky_and_nothing_is_acknowledged, setup,
            teardown),
        cmocka_unit_test_setup_teardown(
            test_metrics_count_commits_groups_and_the_sticky_failure, setup,
            teardown),
        cmocka_unit_test_setup_teardown(
            test_reopen_sees_every_acknowledged_write, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_an_emit_out_of_memory_fails_its_request_alone, setup,
            teardown),
        cmocka_unit_test_setup_teardown(
            test_a_snapshot_that_cannot_read_its_revision_fails, setup,
            teardown),
        cmocka_unit_test_setup_teardown(
            test_read_and_iterator_faults_are_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_snapshot_reads_see_one_revision,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_an_iterator_below_a_bound_ends_at_its_prefix, setup,
            teardown),
        cmocka_unit_test_setup_teardown(
            test_a_requests_prefix_walk_ends_at_its_prefix, setup, teardown),
        cmocka_unit_test_setup_teardown(test_two_places_read_as_one, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(
            test_refuses_a_data_dir_of_another_format, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_an_older_format_opens_and_is_upgraded, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_refuses_a_non_empty_directory_untouched, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_second_open_of_a_data_dir_is_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_close_completes_queued_writes,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_rocksdb_logs_to_reel_not_to_a_file_in_the_data_dir, setup,
            teardown),
        cmocka_unit_test_setup_teardown(
            test_declared_families_are_found_by_name_only, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_malformed_declarations_are_refused_untouched, setup,
            teardown),
        cmocka_unit_test_setup_teardown(
            test_an_undeclared_family_on_disk_is_kept, setup, teardown),
        cmocka_unit_test_setup_teardown(test_a_tail_family_iterates_in_order,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_the_alarm_runs_at_its_time_once_per_arming, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_a_count_moves_only_with_what_commits, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_the_wal_stays_bounded_while_writes_go_on, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_a_disk_below_its_floor_refuses_what_grows, setup, teardown),
        cmocka_unit_test(test_rocksdb_checksums_with_the_cpus_crc32c),
    };
    return cmocka_run_group_tests_name("store", tests, NULL, NULL);
}
