/*
 * workspace/workspace_test.c: uploads, commits, versions, deletes, reads,
 * and what an interrupted upload or a restart leaves.
 *
 * Each test opens a store and a ws in a fresh temporary data dir; changes
 * the store publishes are counted, so a test sees what became visible.
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

#include <openssl/evp.h>

#include "base/codec.h"
#include "base/fault.h"
#include "testing/fixture.h"
#include "workspace/workspace.h"

/* ---- Fixture ------------------------------------------------------------ */

typedef struct fixture {
    char dir[512];
    store_t *store;
    ws_t *ws;
    ws_limits_t lim;
    pthread_mutex_t mu;
    size_t puts, deletes; /* changes published */
} fixture_t;

static void publish(void *arg, const store_change_t *c, size_t n) {
    fixture_t *f = arg;

    if (f->ws != NULL)
        ws_publish(f->ws, c, n);
    pthread_mutex_lock(&f->mu);
    for (size_t i = 0; i < n; i++) {
        ws_artifact_t a;

        if (ws_change_decode(&c[i], &a) != 1)
            continue;
        if (a.deleted)
            f->deletes++;
        else
            f->puts++;
        ws_artifact_fini(&a);
    }
    pthread_mutex_unlock(&f->mu);
}

static void open_all(fixture_t *f) {
    store_opts_t o = {0};
    reel_status_t st = REEL_STATUS_INIT;

    o.cfs = (const store_cf_desc_t *const[]){ws_cfs, NULL};
    o.publish = publish;
    o.publish_arg = f;
    f->store = testing_store_open(f->dir, &o);
    if (ws_create(f->store, &f->lim, &f->ws, &st) != REEL_OK)
        fail_msg("ws_create: %s", reel_status_message(&st));
}

static void close_all(fixture_t *f) {
    ws_stop(f->ws);
    store_close(f->store);
    ws_destroy(f->ws);
    f->store = NULL;
    f->ws = NULL;
}

static int setup_with(void **state, uint32_t keep, uint64_t max) {
    fixture_t *f = calloc(1, sizeof(*f));

    if (f == NULL || testing_dir_make(f->dir, sizeof(f->dir), "ws") != 0)
        return -1;
    pthread_mutex_init(&f->mu, NULL);
    f->lim.versions_keep = keep;
    f->lim.max_artifact = max;
    open_all(f);
    *state = f;
    return 0;
}

static int setup(void **state) { return setup_with(state, 1, 0); }
static int setup_keep2(void **state) { return setup_with(state, 2, 0); }
static int setup_small(void **state) {
    return setup_with(state, 1, 3 * WS_CHUNK);
}

static int teardown(void **state) {
    fixture_t *f = *state;
    int rc;

    reel_fault_reset();
    close_all(f);
    rc = testing_dir_remove(f->dir);
    pthread_mutex_destroy(&f->mu);
    free(f);
    return rc;
}

/* ---- Helpers ------------------------------------------------------------ */

/* Waits for a commit's done, which runs on the writer thread. */
typedef struct waiter {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int done;
    reel_code_t code;
    char msg[256];
    ws_artifact_t a; /* copied fields only */
    uint64_t version, size, revision;
    uint8_t sha[WS_SHA256_LEN];
    int existed, deleted;
} waiter_t;

static void on_done(void *arg, ws_write_result_t *res) {
    waiter_t *w = arg;

    pthread_mutex_lock(&w->mu);
    w->code = res->status.code;
    snprintf(w->msg, sizeof(w->msg), "%s", reel_status_message(&res->status));
    w->version = res->artifact.version;
    w->size = res->artifact.size;
    w->revision = res->artifact.revision;
    w->deleted = res->artifact.deleted;
    w->existed = res->existed;
    memcpy(w->sha, res->artifact.sha256, WS_SHA256_LEN);
    w->done = 1;
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

static void waiter_init(waiter_t *w) {
    memset(w, 0, sizeof(*w));
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->cv, NULL);
}

static void waiter_wait(waiter_t *w) {
    pthread_mutex_lock(&w->mu);
    while (!w->done)
        pthread_cond_wait(&w->cv, &w->mu);
    pthread_mutex_unlock(&w->mu);
    pthread_mutex_destroy(&w->mu);
    pthread_cond_destroy(&w->cv);
}

static unsigned char *bytes(size_t n, unsigned seed) {
    unsigned char *p = malloc(n ? n : 1);
    uint32_t x = seed * 2654435761u + 1;

    for (size_t i = 0; i < n; i++) {
        x = x * 1103515245u + 12345u;
        p[i] = (unsigned char)(x >> 16);
    }
    return p;
}

static void sha256(const void *p, size_t n, uint8_t out[WS_SHA256_LEN]) {
    unsigned int len = 0;

    EVP_Digest(p, n, out, &len, EVP_sha256(), NULL);
}

static ws_header_t header(const char *ns, const char *key) {
    ws_header_t h = {0};

    h.ns = ns, h.ns_len = strlen(ns);
    h.key = key, h.key_len = strlen(key);
    h.content_type = "application/octet-stream";
    return h;
}

/* Uploads p[0..n) in pieces of `piece` bytes; the commit's outcome in w. */
static reel_code_t put_h(fixture_t *f, const ws_header_t *h, const void *p,
                         size_t n, size_t piece, waiter_t *w) {
    reel_status_t st = REEL_STATUS_INIT;
    ws_upload_t *u;
    reel_code_t rc;

    waiter_init(w);
    if ((rc = ws_upload_begin(f->ws, h, &u, &st)) != REEL_OK)
        goto out;
    for (size_t off = 0; off < n; off += piece) {
        size_t k = n - off < piece ? n - off : piece;

        if ((rc = ws_upload_write(u, (const char *)p + off, k, &st)) !=
            REEL_OK) {
            ws_upload_abort(u);
            goto out;
        }
    }
    if ((rc = ws_upload_commit(u, on_done, w, &st)) != REEL_OK)
        goto out;
    waiter_wait(w);
    rc = w->code;
    reel_status_fini(&st);
    return rc;
out:
    snprintf(w->msg, sizeof(w->msg), "%s", reel_status_message(&st));
    reel_status_fini(&st);
    return rc;
}

static reel_code_t put(fixture_t *f, const char *ns, const char *key,
                       const void *p, size_t n, waiter_t *w) {
    ws_header_t h = header(ns, key);

    return put_h(f, &h, p, n, 300000, w);
}

/* Reads the whole range into a malloc'd buffer. */
static reel_code_t read_all(fixture_t *f, const char *key, uint64_t version,
                            uint64_t off, uint64_t len, unsigned char **out,
                            size_t *n, reel_status_t *st) {
    ws_artifact_t a;
    ws_reader_t *r;
    reel_code_t rc;

    *out = NULL;
    *n = 0;
    if ((rc = ws_read_open(f->ws, "n", 1, key, strlen(key), version, off,
                           len, &a, &r, st)) != REEL_OK)
        return rc;
    *out = malloc(a.size + 1);
    for (;;) {
        const void *p;
        size_t k;

        if ((rc = ws_read_next(r, &p, &k, st)) != REEL_OK || k == 0)
            break;
        assert_true(k <= WS_CHUNK);
        memcpy(*out + *n, p, k);
        *n += k;
    }
    ws_reader_destroy(r);
    ws_artifact_fini(&a);
    return rc;
}

static uint64_t staged(fixture_t *f) {
    uint64_t b, s;

    ws_usage(f->ws, &b, &s);
    return s;
}

/* ---- Tests ------------------------------------------------------------ */

static void test_put_then_read_returns_the_bytes_and_their_sha256(void **state) {
    fixture_t *f = *state;
    size_t sizes[] = {0, 1, WS_CHUNK, WS_CHUNK + 1, 2 * WS_CHUNK + 7};
    /* Written in pieces smaller than a chunk (buffered), of a chunk (each
     * stored from where it is) and of more (both in one write). */
    size_t pieces[] = {300000, WS_CHUNK, 2 * WS_CHUNK + 3};

    for (size_t i = 0; i < 15; i++) {
        size_t size = sizes[i % 5], piece = pieces[i / 5];
        unsigned char *p = bytes(size, (unsigned)i), *got;
        uint8_t want[WS_SHA256_LEN];
        reel_status_t st = REEL_STATUS_INIT;
        ws_header_t h;
        waiter_t w;
        size_t n;
        char key[32];

        snprintf(key, sizeof(key), "dir/file.%zu", i);
        h = header("n", key);
        assert_int_equal(put_h(f, &h, p, size, piece, &w), REEL_OK);
        sha256(p, size, want);
        assert_int_equal(w.version, 1);
        assert_int_equal(w.size, size);
        assert_memory_equal(w.sha, want, WS_SHA256_LEN);
        assert_int_equal(read_all(f, key, 0, 0, 0, &got, &n, &st), REEL_OK);
        assert_int_equal(n, size);
        assert_memory_equal(got, p, n);
        free(got);
        free(p);
    }
    assert_int_equal(f->puts, 15);
    assert_int_equal(staged(f), 0);
}

static void test_ranges_across_chunk_boundaries(void **state) {
    fixture_t *f = *state;
    size_t size = 3 * WS_CHUNK + 10;
    unsigned char *p = bytes(size, 9), *got;
    uint64_t cases[][2] = {{0, 1},
                           {WS_CHUNK - 1, 2},
                           {WS_CHUNK, WS_CHUNK},
                           {2 * WS_CHUNK - 3, WS_CHUNK + 6},
                           {3 * WS_CHUNK, 0},
                           {size, 0},
                           {5, 100 * WS_CHUNK}};
    reel_status_t st = REEL_STATUS_INIT;
    waiter_t w;
    size_t n;

    assert_int_equal(put(f, "n", "r", p, size, &w), REEL_OK);
    for (size_t i = 0; i < sizeof(cases) / sizeof(*cases); i++) {
        uint64_t off = cases[i][0], len = cases[i][1];
        uint64_t end = len == 0 || off + len > size ? size : off + len;

        assert_int_equal(read_all(f, "r", 0, off, len, &got, &n, &st),
                         REEL_OK);
        assert_int_equal(n, end - off);
        assert_memory_equal(got, p + off, n);
        free(got);
    }
    assert_int_equal(read_all(f, "r", 0, size + 1, 0, &got, &n, &st),
                     REEL_OUT_OF_RANGE);
    assert_non_null(strstr(reel_status_message(&st), "offset"));
    reel_status_fini(&st);
    free(p);
}

static void test_versions_past_keep_are_pruned_and_not_found(void **state) {
    fixture_t *f = *state;
    reel_status_t st = REEL_STATUS_INIT;
    unsigned char *got;
    waiter_t w;
    size_t n;

    for (unsigned v = 1; v <= 3; v++) {
        unsigned char *p = bytes(1000, v);

        assert_int_equal(put(f, "n", "k", p, 1000, &w), REEL_OK);
        assert_int_equal(w.version, v);
        free(p);
    }
    assert_int_equal(read_all(f, "k", 2, 0, 0, &got, &n, &st), REEL_OK);
    free(got);
    assert_int_equal(read_all(f, "k", 1, 0, 0, &got, &n, &st),
                     REEL_NOT_FOUND);
    assert_non_null(strstr(reel_status_message(&st), "not retained"));
    reel_status_fini(&st);
    /* One never written is not blamed on --workspace-versions-keep. */
    assert_int_equal(read_all(f, "k", 99, 0, 0, &got, &n, &st),
                     REEL_NOT_FOUND);
    assert_non_null(strstr(reel_status_message(&st),
                           "version 99 was never written (the current "
                           "version is 3)"));
    reel_status_fini(&st);
}

static void test_preconditions_refuse_and_store_nothing(void **state) {
    fixture_t *f = *state;
    ws_header_t h = header("n", "k");
    waiter_t w;

    assert_int_equal(put(f, "n", "k", "a", 1, &w), REEL_OK);
    h.precond = WS_PRECOND_ABSENT;
    assert_int_equal(put_h(f, &h, "b", 1, 1, &w), REEL_ALREADY_EXISTS);
    h.precond = WS_PRECOND_VERSION;
    h.version = 7;
    assert_int_equal(put_h(f, &h, "b", 1, 1, &w), REEL_ABORTED);
    assert_non_null(strstr(w.msg, "expected version 7, current version 1"));
    assert_int_equal(f->puts, 1);
    /* The refused uploads' chunks are queued for the reclaimer. */
    for (int i = 0; i < 200 && staged(f) != 0; i++)
        usleep(10000);
    assert_int_equal(staged(f), 0);
}

static void test_delete_writes_a_tombstone_and_frees_every_version(
    void **state) {
    fixture_t *f = *state;
    reel_status_t st = REEL_STATUS_INIT;
    ws_artifact_t a;
    waiter_t w;

    assert_int_equal(put(f, "n", "k", "abc", 3, &w), REEL_OK);
    waiter_init(&w);
    assert_int_equal(ws_delete_submit(f->ws, "n", 1, "k", 1, WS_PRECOND_NONE,
                                      0, on_done, &w, &st),
                     REEL_OK);
    waiter_wait(&w);
    assert_int_equal(w.code, REEL_OK);
    assert_true(w.existed);
    assert_true(w.deleted);
    assert_int_equal(w.version, 2);
    assert_int_equal(ws_stat(f->ws, "n", 1, "k", 1, 0, &a, &st),
                     REEL_NOT_FOUND);
    assert_true(a.deleted);
    ws_artifact_fini(&a);
    reel_status_fini(&st);
    assert_int_equal(ws_stat(f->ws, "n", 1, "k", 1, 1, &a, &st),
                     REEL_NOT_FOUND);
    ws_artifact_fini(&a);
    reel_status_fini(&st);
    /* A second delete writes nothing. */
    waiter_init(&w);
    assert_int_equal(ws_delete_submit(f->ws, "n", 1, "k", 1, WS_PRECOND_NONE,
                                      0, on_done, &w, &st),
                     REEL_OK);
    waiter_wait(&w);
    assert_false(w.existed);
    assert_int_equal(f->deletes, 1);
}

/*
 * Two uploads under way together share blob files (their chunks flushed
 * from the same memtables): deleting one leaves its chunks as garbage
 * beside the other's, which the reclaimer collects once it is half of
 * those files, by rewriting the live ones. The other reads back whole.
 */
static void test_deleted_chunks_beside_live_ones_are_collected(void **state) {
    fixture_t *f = *state;
    reel_status_t st = REEL_STATUS_INIT;
    enum { N = 8 };
    unsigned char *pa = bytes(N * WS_CHUNK, 3), *pb = bytes(N * WS_CHUNK, 4);
    ws_header_t ha = header("n", "a"), hb = header("n", "b");
    ws_upload_t *ua, *ub;
    unsigned char *got;
    size_t n;
    uint64_t bytes_now = 0, st_n;
    waiter_t wa, wb, w;

    assert_int_equal(ws_upload_begin(f->ws, &ha, &ua, &st), REEL_OK);
    assert_int_equal(ws_upload_begin(f->ws, &hb, &ub, &st), REEL_OK);
    for (int i = 0; i < N; i++) {
        assert_int_equal(ws_upload_write(ua, pa + (size_t)i * WS_CHUNK,
                                         WS_CHUNK, &st),
                         REEL_OK);
        assert_int_equal(ws_upload_write(ub, pb + (size_t)i * WS_CHUNK,
                                         WS_CHUNK, &st),
                         REEL_OK);
    }
    waiter_init(&wa);
    waiter_init(&wb);
    assert_int_equal(ws_upload_commit(ua, on_done, &wa, &st), REEL_OK);
    waiter_wait(&wa);
    assert_int_equal(ws_upload_commit(ub, on_done, &wb, &st), REEL_OK);
    waiter_wait(&wb);
    assert_int_equal(wa.code, REEL_OK);
    assert_int_equal(wb.code, REEL_OK);
    ws_usage(f->ws, &bytes_now, &st_n);
    assert_true(bytes_now >= 2 * N * WS_CHUNK);

    waiter_init(&w);
    assert_int_equal(ws_delete_submit(f->ws, "n", 1, "a", 1, WS_PRECOND_NONE,
                                      0, on_done, &w, &st),
                     REEL_OK);
    waiter_wait(&w);
    assert_int_equal(w.code, REEL_OK);
    for (int i = 0; i < 3000; i++) { /* 30 s at most */
        ws_usage(f->ws, &bytes_now, &st_n);
        if (bytes_now < N * WS_CHUNK + WS_CHUNK)
            break;
        usleep(10000);
    }
    assert_true(bytes_now < N * WS_CHUNK + WS_CHUNK);
    assert_int_equal(read_all(f, "b", 0, 0, 0, &got, &n, &st), REEL_OK);
    assert_int_equal(n, N * WS_CHUNK);
    assert_memory_equal(got, pb, n);
    free(got);
    free(pa);
    free(pb);
}

static void test_size_past_the_limit_is_refused_as_it_passes(void **state) {
    fixture_t *f = *state;
    reel_status_t st = REEL_STATUS_INIT;
    ws_header_t h = header("n", "big");
    unsigned char *p = bytes(WS_CHUNK, 1);
    ws_upload_t *u;
    reel_code_t rc = REEL_OK;
    int i;

    h.has_size = 1;
    h.size = 3 * WS_CHUNK + 1;
    assert_int_equal(ws_upload_begin(f->ws, &h, &u, &st),
                     REEL_INVALID_ARGUMENT);
    assert_non_null(
        strstr(reel_status_message(&st), "--workspace-max-artifact-bytes"));
    reel_status_fini(&st);
    h.has_size = 0;
    assert_int_equal(ws_upload_begin(f->ws, &h, &u, &st), REEL_OK);
    for (i = 0; i < 10 && rc == REEL_OK; i++)
        rc = ws_upload_write(u, p, WS_CHUNK, &st);
    assert_int_equal(rc, REEL_INVALID_ARGUMENT);
    assert_int_equal(i, 4); /* the fourth chunk passes 3 MiB */
    ws_upload_abort(u);
    reel_status_fini(&st);
    free(p);
}

/*
 * A tenant's uploads under way are capped apart (max_tenant_uploads), so
 * one tenant cannot take every place: past its cap its next upload is
 * RESOURCE_EXHAUSTED naming the flag, while another tenant's (even one
 * whose name extends it) and a namespace without a tenant still begin;
 * an upload that ends gives its place back.
 */
static void test_a_tenants_uploads_are_capped_apart(void **state) {
    fixture_t *f = *state;
    reel_status_t st = REEL_STATUS_INIT;
    ws_upload_t *a[3], *other[3];
    ws_header_t h;

    close_all(f);
    f->lim.max_tenant_uploads = 2;
    f->lim.ns_scope = testing_tenant_scope;
    open_all(f);
    h = header("::a:n", "k");
    assert_int_equal(ws_upload_begin(f->ws, &h, &a[0], &st), REEL_OK);
    h = header("::a:m", "k");
    assert_int_equal(ws_upload_begin(f->ws, &h, &a[1], &st), REEL_OK);
    assert_int_equal(ws_upload_begin(f->ws, &h, &a[2], &st),
                     REEL_RESOURCE_EXHAUSTED);
    assert_string_equal(reel_status_message(&st),
                        "uploads: its tenant has 2 under way, at most "
                        "--workspace-max-uploads-per-tenant 2");
    reel_status_fini(&st);
    h = header("::ab:n", "k");
    assert_int_equal(ws_upload_begin(f->ws, &h, &other[0], &st), REEL_OK);
    h = header("::b:n", "k");
    assert_int_equal(ws_upload_begin(f->ws, &h, &other[1], &st), REEL_OK);
    h = header("n", "k");
    assert_int_equal(ws_upload_begin(f->ws, &h, &other[2], &st), REEL_OK);
    ws_upload_abort(a[0]);
    h = header("::a:n", "k2");
    assert_int_equal(ws_upload_begin(f->ws, &h, &a[0], &st), REEL_OK);
    for (int i = 0; i < 2; i++)
        ws_upload_abort(a[i]);
    for (int i = 0; i < 3; i++)
        ws_upload_abort(other[i]);
}

static void test_bad_names_name_the_field(void **state) {
    fixture_t *f = *state;
    const char *keys[] = {"", "a//b", "a/>/b", "a.", ".a", "a/*"};
    reel_status_t st = REEL_STATUS_INIT;
    ws_upload_t *u;
    ws_header_t h;

    for (size_t i = 0; i < sizeof(keys) / sizeof(*keys); i++) {
        h = header("n", keys[i]);
        assert_int_equal(ws_upload_begin(f->ws, &h, &u, &st),
                         REEL_INVALID_ARGUMENT);
        assert_non_null(strstr(reel_status_message(&st), "key"));
        reel_status_fini(&st);
    }
    h = header("a.b", "k");
    assert_int_equal(ws_upload_begin(f->ws, &h, &u, &st),
                     REEL_INVALID_ARGUMENT);
    assert_non_null(strstr(reel_status_message(&st), "namespace"));
    reel_status_fini(&st);
    assert_int_equal(staged(f), 0);
}

static void test_sha256_mismatch_is_data_loss_and_stores_nothing(
    void **state) {
    fixture_t *f = *state;
    ws_header_t h = header("n", "k");
    uint8_t wrong[WS_SHA256_LEN] = {1};
    ws_artifact_t a;
    reel_status_t st = REEL_STATUS_INIT;
    waiter_t w;

    h.sha256 = wrong;
    assert_int_equal(put_h(f, &h, "hello", 5, 5, &w), REEL_DATA_LOSS);
    assert_non_null(strstr(w.msg, "sha256"));
    assert_int_equal(ws_stat(f->ws, "n", 1, "k", 1, 0, &a, &st),
                     REEL_NOT_FOUND);
    reel_status_fini(&st);
    assert_int_equal(f->puts, 0);
}

static void test_a_failed_chunk_sync_stores_nothing(void **state) {
    fixture_t *f = *state;
    unsigned char *p = bytes(2 * WS_CHUNK, 3);
    ws_artifact_t a;
    reel_status_t st = REEL_STATUS_INIT;
    waiter_t w;

    reel_fault_arm("store.bulk_sync", 0, 1);
    assert_int_equal(put(f, "n", "k", p, 2 * WS_CHUNK, &w), REEL_INTERNAL);
    assert_non_null(strstr(w.msg, "injected"));
    assert_int_equal(ws_stat(f->ws, "n", 1, "k", 1, 0, &a, &st),
                     REEL_NOT_FOUND);
    reel_status_fini(&st);
    assert_int_equal(f->puts, 0);
    free(p);
}

/* An artifact of at most WS_INLINE_MAX bytes commits its one chunk with
 * its record: no flush of the bulk family (here, one that would fail),
 * and it is there after a restart, read from RocksDB's log. One byte more
 * takes the flush. */
static void test_a_small_artifact_commits_its_bytes_with_its_record(
    void **state) {
    fixture_t *f = *state;
    unsigned char *p = bytes(WS_INLINE_MAX + 1, 4), *got;
    reel_status_t st = REEL_STATUS_INIT;
    size_t n;
    waiter_t w;

    reel_fault_arm("store.bulk_sync", 0, 1000);
    assert_int_equal(put(f, "n", "small", p, WS_INLINE_MAX, &w), REEL_OK);
    assert_int_equal(put(f, "n", "one", p, 1, &w), REEL_OK);
    assert_int_equal(put(f, "n", "big", p, WS_INLINE_MAX + 1, &w),
                     REEL_INTERNAL);
    assert_non_null(strstr(w.msg, "injected"));
    reel_fault_reset();
    close_all(f);
    open_all(f);
    assert_int_equal(read_all(f, "small", 0, 0, 0, &got, &n, &st), REEL_OK);
    assert_int_equal(n, WS_INLINE_MAX);
    assert_memory_equal(got, p, n);
    free(got);
    assert_int_equal(read_all(f, "one", 0, 0, 0, &got, &n, &st), REEL_OK);
    assert_int_equal(n, 1);
    assert_memory_equal(got, p, 1);
    free(got);
    assert_int_equal(staged(f), 0);
    reel_status_fini(&st);
    free(p);
}

static void test_restart_reclaims_what_a_crash_left_staged(void **state) {
    fixture_t *f = *state;
    reel_status_t st = REEL_STATUS_INIT;
    unsigned char *p = bytes(WS_CHUNK, 5);
    unsigned char mark[9] = {'s'}, key[16], when[8] = {0};
    store_cf_t *cf, *chunks;
    uint64_t b, s;
    ws_artifact_t a;
    waiter_t w;

    assert_int_equal(put(f, "n", "done", "ok", 2, &w), REEL_OK);
    /* What a crash mid-upload leaves: a synced mark, and chunks that
     * reached files before it (written as an upload writes them). */
    assert_int_equal(store_cf_lookup(f->store, "ws", &cf, &st), REEL_OK);
    assert_int_equal(store_cf_lookup(f->store, "ws_chunks", &chunks, &st),
                     REEL_OK);
    reel_be64_put(mark + 1, 0x1234);
    assert_int_equal(store_put_synced(f->store, cf, mark, 9, when, 8, &st),
                     REEL_OK);
    for (uint64_t i = 0; i < 20; i++) {
        reel_be64_put(key, 0x1234);
        reel_be64_put(key + 8, i);
        assert_int_equal(
            store_bulk_put(f->store, chunks, key, 16, p, WS_CHUNK, &st),
            REEL_OK);
    }
    assert_int_equal(store_bulk_sync(f->store, chunks, &st), REEL_OK);
    ws_usage(f->ws, &b, &s);
    assert_true(b >= 20 * WS_CHUNK);
    close_all(f);
    open_all(f);
    /* Deleted before the open returns; the space comes back at the
     * compaction the reclaimer runs next, in the background. */
    ws_usage(f->ws, &b, &s);
    assert_int_equal(s, 0);
    for (int i = 0; i < 400 && b >= 4 * WS_CHUNK; i++) {
        usleep(50 * 1000);
        ws_usage(f->ws, &b, &s);
    }
    assert_true(b < 4 * WS_CHUNK);
    assert_int_equal(ws_stat(f->ws, "n", 1, "done", 4, 0, &a, &st), REEL_OK);
    assert_int_equal(a.size, 2);
    ws_artifact_fini(&a);
    free(p);
}

static void test_list_pages_by_prefix_and_skips_tombstones(void **state) {
    fixture_t *f = *state;
    const char *keys[] = {"a/1", "a/2", "a/3", "b/1"};
    reel_status_t st = REEL_STATUS_INIT;
    ws_artifact_t *items;
    waiter_t w;
    size_t n;
    int more;

    for (size_t i = 0; i < 4; i++)
        assert_int_equal(put(f, "n", keys[i], "x", 1, &w), REEL_OK);
    waiter_init(&w);
    assert_int_equal(ws_delete_submit(f->ws, "n", 1, "a/2", 3,
                                      WS_PRECOND_NONE, 0, on_done, &w, &st),
                     REEL_OK);
    waiter_wait(&w);
    assert_int_equal(ws_list(f->ws, "n", 1, "a/", 2, "", 0, 1, 0, NULL,
                             &items, &n, &more, &st),
                     REEL_OK);
    assert_int_equal(n, 1);
    assert_string_equal(items[0].key, "a/1");
    assert_true(more);
    ws_artifact_fini(&items[0]);
    free(items);
    assert_int_equal(ws_list(f->ws, "n", 1, "a/", 2, "a/1", 3, 0, 0, NULL,
                             &items, &n, &more, &st),
                     REEL_OK);
    assert_int_equal(n, 1);
    assert_string_equal(items[0].key, "a/3");
    assert_false(more);
    ws_artifact_fini(&items[0]);
    free(items);
    /* start_after past the prefix's keys ("zzz" is shorter than the
     * prefix, yet sorts after it): nothing left; before them: all. */
    const char *past[] = {"zzz", "a/9", "b"}, *before[] = {"0", "a", "a/"};
    for (size_t i = 0; i < 3; i++) {
        assert_int_equal(ws_list(f->ws, "n", 1, "a/", 2, past[i],
                                 strlen(past[i]), 0, 0, NULL, &items, &n,
                                 &more, &st),
                         REEL_OK);
        assert_int_equal(n, 0);
        free(items);
        assert_int_equal(ws_list(f->ws, "n", 1, "a/", 2, before[i],
                                 strlen(before[i]), 0, 0, NULL, &items, &n,
                                 &more, &st),
                         REEL_OK);
        assert_int_equal(n, 2);
        for (size_t j = 0; j < n; j++)
            ws_artifact_fini(&items[j]);
        free(items);
    }
}

/* Keys "ws" holds with tag t ('c' live records, 't' tombstones). */
static size_t records(fixture_t *f, char t) {
    store_cf_t *cf = NULL;
    store_iter_t *it;
    size_t n = 0, klen;

    assert_int_equal(store_cf_lookup(f->store, "ws", &cf, NULL), REEL_OK);
    it = store_iter_create(f->store, cf, NULL);
    for (store_iter_seek(it, &t, 1); store_iter_valid(it);
         store_iter_next(it)) {
        if (store_iter_key(it, &klen)[0] != t)
            break;
        n++;
    }
    assert_int_equal(store_iter_status(it, NULL), REEL_OK);
    store_iter_destroy(it);
    return n;
}

/* Lists namespace "n" as "a/1,a/2-" (a/2 deleted); returns more. */
static int list_keys(fixture_t *f, const char *after, uint32_t limit,
                     int deleted, char *got, size_t cap) {
    ws_artifact_t *items;
    size_t n, off = 0;
    int more;

    assert_int_equal(ws_list(f->ws, "n", 1, "", 0, after, strlen(after),
                             limit, deleted, NULL, &items, &n, &more, NULL),
                     REEL_OK);
    got[0] = '\0';
    for (size_t i = 0; i < n; i++) {
        off += (size_t)snprintf(got + off, cap - off, "%s%s%s", i ? "," : "",
                                items[i].key, items[i].deleted ? "-" : "");
        assert_true(off < cap);
        ws_artifact_fini(&items[i]);
    }
    free(items);
    return more;
}

static void delete_ok(fixture_t *f, const char *key) {
    reel_status_t st = REEL_STATUS_INIT;
    waiter_t w;

    waiter_init(&w);
    assert_int_equal(ws_delete_submit(f->ws, "n", 1, key, strlen(key),
                                      WS_PRECOND_NONE, 0, on_done, &w, &st),
                     REEL_OK);
    waiter_wait(&w);
    assert_int_equal(w.code, REEL_OK);
}

/*
 * Deleted artifacts' records sit apart from the live ones ('t', not 'c'):
 * a listing with include_deleted merges both in key order, pages and
 * start_after included, and a key moves back when it is put again.
 */
static void test_tombstones_are_kept_apart_and_listed_merged(void **state) {
    fixture_t *f = *state;
    const char *keys[] = {"a/1", "a/2", "a/3", "b/1"};
    char got[64];
    waiter_t w;

    for (size_t i = 0; i < 4; i++)
        assert_int_equal(put(f, "n", keys[i], "x", 1, &w), REEL_OK);
    delete_ok(f, "a/2");
    delete_ok(f, "b/1");
    assert_int_equal(records(f, 'c'), 2);
    assert_int_equal(records(f, 't'), 2);
    assert_false(list_keys(f, "", 0, 0, got, sizeof(got)));
    assert_string_equal(got, "a/1,a/3");
    assert_false(list_keys(f, "", 0, 1, got, sizeof(got)));
    assert_string_equal(got, "a/1,a/2-,a/3,b/1-");
    assert_true(list_keys(f, "a/1", 2, 1, got, sizeof(got)));
    assert_string_equal(got, "a/2-,a/3");
    assert_false(list_keys(f, "a/3", 2, 1, got, sizeof(got)));
    assert_string_equal(got, "b/1-");

    assert_int_equal(put(f, "n", "a/2", "y", 1, &w), REEL_OK);
    assert_int_equal(w.version, 3); /* on from the tombstone's */
    assert_int_equal(records(f, 'c'), 3);
    assert_int_equal(records(f, 't'), 1);
    assert_false(list_keys(f, "", 0, 0, got, sizeof(got)));
    assert_string_equal(got, "a/1,a/2,a/3");
}

typedef struct raw {
    store_cf_t *cf;
    const char *key, *val; /* val NULL deletes */
    size_t klen, vlen;
} raw_t;

static reel_code_t raw_apply(store_txn_t *txn, void *arg, reel_status_t *st) {
    raw_t *r = arg;

    (void)st;
    if (r->val == NULL)
        store_txn_delete(txn, r->cf, r->key, r->klen);
    else
        store_txn_put(txn, r->cf, r->key, r->klen, r->val, r->vlen);
    return REEL_OK;
}

/* A format 4 dir keeps a deleted artifact's record among the live ones:
 * ws_upgrade() from 4 moves it apart, and it still reads as deleted at its
 * version. */
static void test_an_upgrade_moves_the_tombstones_of_an_older_dir(
    void **state) {
    fixture_t *f = *state;
    raw_t r = {NULL, "t" "n\0k", NULL, 4, 0};
    reel_status_t st = REEL_STATUS_INIT;
    ws_artifact_t a;
    char *rec = NULL, got[64];
    waiter_t w;

    assert_int_equal(put(f, "n", "k", "abc", 3, &w), REEL_OK);
    assert_int_equal(put(f, "n", "live", "abc", 3, &w), REEL_OK);
    delete_ok(f, "k");
    assert_int_equal(store_cf_lookup(f->store, "ws", &r.cf, NULL), REEL_OK);
    assert_int_equal(store_get(f->store, r.cf, r.key, r.klen, &rec, &r.vlen,
                               NULL),
                     REEL_OK);
    assert_int_equal(store_exec(f->store, raw_apply, &r, NULL, &st), REEL_OK);
    r.key = "c" "n\0k", r.val = rec; /* where format 4 kept it */
    assert_int_equal(store_exec(f->store, raw_apply, &r, NULL, &st), REEL_OK);
    assert_int_equal(records(f, 't'), 0);

    assert_int_equal(ws_upgrade(f->ws, 5, &st), REEL_OK); /* nothing to do */
    assert_int_equal(records(f, 't'), 0);
    assert_int_equal(ws_upgrade(f->ws, 4, &st), REEL_OK);
    assert_int_equal(records(f, 'c'), 1);
    assert_int_equal(records(f, 't'), 1);
    assert_false(list_keys(f, "", 0, 0, got, sizeof(got)));
    assert_string_equal(got, "live");
    assert_int_equal(ws_stat(f->ws, "n", 1, "k", 1, 0, &a, &st),
                     REEL_NOT_FOUND);
    assert_true(a.deleted);
    assert_int_equal(a.version, 2);
    ws_artifact_fini(&a);
    reel_status_fini(&st);
    free(rec);
}

/* ---- Watches ----------------------------------------------------------- */

typedef struct wsink {
    TESTING_SINK_HEAD;
    int kinds[64];
    uint64_t revs[64];
    char keys[64][32];
} wsink_t;

static int wsink_deliver(void *arg, ws_watch_kind_t kind, uint64_t rev,
                         const ws_artifact_t *a) {
    wsink_t *s = arg;
    int full;

    pthread_mutex_lock(&s->mu);
    full = testing_sink_hold(&s->sink, 64);
    if (!full) {
        s->kinds[s->n] = kind;
        s->revs[s->n] = rev;
        snprintf(s->keys[s->n], sizeof(s->keys[0]), "%s", a ? a->key : "");
        testing_sink_add(&s->sink);
    }
    pthread_mutex_unlock(&s->mu);
    return full;
}

static void wsink_end(void *arg, const reel_status_t *st) {
    testing_sink_end(&((wsink_t *)arg)->sink, st);
}

static const ws_watch_sink_t wsink_ops = {.deliver = wsink_deliver,
                                          .end = wsink_end};

static void test_watch_snapshot_marker_then_live_and_catch_up_from_history(
    void **state) {
    fixture_t *f = *state;
    reel_status_t st = REEL_STATUS_INIT;
    ws_watch_args_t a = {0};
    ws_watch_t *w;
    wsink_t s;
    waiter_t wt;
    uint64_t revs[6];

    assert_int_equal(put(f, "n", "p/a", "1", 1, &wt), REEL_OK);
    assert_int_equal(put(f, "n", "q/x", "1", 1, &wt), REEL_OK);
    testing_sink_init(&s.sink, 2);
    a.ns = "n", a.ns_len = 1;
    a.prefix = "p/", a.prefix_len = 2;
    assert_int_equal(ws_watch_create(f->ws, &a, &wsink_ops, &s, &w, &st),
                     REEL_OK);
    ws_watch_pump(w);
    assert_true(testing_sink_wait(&s.sink, 2, TESTING_WAIT_MS) >= 2);
    assert_int_equal(s.kinds[0], WS_WATCH_CURRENT);
    assert_string_equal(s.keys[0], "p/a");
    assert_int_equal(s.kinds[1], WS_WATCH_BOOTSTRAP_DONE);
    /* Full at 2: the next puts find it out of live delivery, and it
     * catches up from the history once it has room again. */
    for (int i = 0; i < 6; i++) {
        char key[16];

        snprintf(key, sizeof(key), "p/k%d", i);
        assert_int_equal(put(f, "n", key, "x", 1, &wt), REEL_OK);
        revs[i] = wt.revision;
        assert_int_equal(put(f, "n", "q/other", "x", 1, &wt), REEL_OK);
    }
    pthread_mutex_lock(&s.mu);
    assert_int_equal(s.n, 2);
    s.held = 0;
    s.limit = 64;
    pthread_mutex_unlock(&s.mu);
    ws_watch_pump(w);
    assert_true(testing_sink_wait(&s.sink, 8, TESTING_WAIT_MS) >= 8);
    for (int i = 0; i < 6; i++) {
        assert_int_equal(s.kinds[2 + i], WS_WATCH_PUT);
        assert_int_equal(s.revs[2 + i], revs[i]);
    }
    /* Live again: a delete arrives as it commits. */
    waiter_init(&wt);
    assert_int_equal(ws_delete_submit(f->ws, "n", 1, "p/a", 3,
                                      WS_PRECOND_NONE, 0, on_done, &wt, &st),
                     REEL_OK);
    waiter_wait(&wt);
    assert_true(testing_sink_wait(&s.sink, 9, TESTING_WAIT_MS) >= 9);
    assert_int_equal(s.kinds[8], WS_WATCH_DELETE);
    assert_string_equal(s.keys[8], "p/a");
    ws_watch_destroy(w);
    testing_sink_fini(&s.sink);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(
            test_put_then_read_returns_the_bytes_and_their_sha256, setup,
            teardown),
        cmocka_unit_test_setup_teardown(test_ranges_across_chunk_boundaries,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_versions_past_keep_are_pruned_and_not_found, setup_keep2,
            teardown),
        cmocka_unit_test_setup_teardown(
            test_preconditions_refuse_and_store_nothing, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_delete_writes_a_tombstone_and_frees_every_version, setup,
            teardown),
        cmocka_unit_test_setup_teardown(
            test_deleted_chunks_beside_live_ones_are_collected, setup,
            teardown),
        cmocka_unit_test_setup_teardown(
            test_size_past_the_limit_is_refused_as_it_passes, setup_small,
            teardown),
        cmocka_unit_test_setup_teardown(test_a_tenants_uploads_are_capped_apart,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_names_name_the_field, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(
            test_sha256_mismatch_is_data_loss_and_stores_nothing, setup,
            teardown),
        cmocka_unit_test_setup_teardown(test_a_failed_chunk_sync_stores_nothing,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_restart_reclaims_what_a_crash_left_staged, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_a_small_artifact_commits_its_bytes_with_its_record, setup,
            teardown),
        cmocka_unit_test_setup_teardown(
            test_list_pages_by_prefix_and_skips_tombstones, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_tombstones_are_kept_apart_and_listed_merged, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_an_upgrade_moves_the_tombstones_of_an_older_dir, setup,
            teardown),
        cmocka_unit_test_setup_teardown(
            test_watch_snapshot_marker_then_live_and_catch_up_from_history,
            setup, teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
