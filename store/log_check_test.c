/*
 * store/log_check_test.c: logs written here as RocksDB writes them
 * (blocks of 32 KiB, fragments, recyclable records with their log's
 * number), then cut short or damaged as a crash or a bad sector would.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store/log_check.h"
#include "store/rocks_crc.h"
#include "testing/fixture.h"

#define BLOCK 32768

typedef struct {
    unsigned char *buf;
    size_t len, cap;
    uint32_t number;
    int recyclable;
    size_t starts[64]; /* where each commit's first record begins */
    size_t n_starts;
} log_t;

static void put(log_t *l, const void *p, size_t n) {
    if (l->len + n > l->cap) {
        l->cap = (l->len + n) * 2;
        l->buf = realloc(l->buf, l->cap);
        assert_non_null(l->buf);
    }
    memcpy(l->buf + l->len, p, n);
    l->len += n;
}

static void record(log_t *l, unsigned type, const unsigned char *data,
                   size_t n) {
    unsigned char h[11];
    size_t hs = l->recyclable ? 11 : 7;
    uint32_t crc, masked;

    h[4] = (unsigned char)(n & 0xff);
    h[5] = (unsigned char)(n >> 8);
    h[6] = (unsigned char)(l->recyclable ? type + 4 : type);
    for (int i = 0; i < 4; i++)
        h[7 + i] = (unsigned char)(l->number >> (8 * i));
    crc = store_crc32c(0, h + 6, hs - 6);
    crc = store_crc32c(crc, data, n);
    masked = ((crc >> 15) | (crc << 17)) + 0xa282ead8u;
    for (int i = 0; i < 4; i++)
        h[i] = (unsigned char)(masked >> (8 * i));
    put(l, h, hs);
    put(l, data, n);
}

/* One commit of n bytes (byte value v), in fragments across blocks as
 * RocksDB's log writer cuts it. */
static void commit(log_t *l, size_t n, unsigned char v) {
    size_t hs = l->recyclable ? 11 : 7;
    unsigned char *data = malloc(n ? n : 1);
    size_t done = 0;
    int first = 1;

    memset(data, v, n);
    do {
        size_t left = BLOCK - l->len % BLOCK, take;
        unsigned type;

        if (left < hs) { /* the block's trailer: zeros */
            static const unsigned char zeros[11];
            put(l, zeros, left);
            left = BLOCK;
        }
        if (first)
            l->starts[l->n_starts++] = l->len;
        take = n - done < left - hs ? n - done : left - hs;
        type = first && done + take == n ? 1 /* FULL */
               : first                   ? 2 /* FIRST */
               : done + take == n        ? 4 /* LAST */
                                         : 3; /* MIDDLE */
        record(l, type, data + done, take);
        done += take;
        first = 0;
    } while (done < n);
    free(data);
}

static log_t make(uint32_t number, int recyclable, size_t commits,
                  size_t size) {
    log_t l = {.number = number, .recyclable = recyclable};

    for (size_t i = 0; i < commits; i++)
        commit(&l, size + i * 7, (unsigned char)('a' + i % 26));
    return l;
}

static store_log_scan_t scan(const log_t *l) {
    store_log_scan_t s;

    store_log_scan(l->buf, l->len, l->number, &s);
    return s;
}

static void test_a_whole_log_reads_to_its_end(void **state) {
    (void)state;
    for (int recyclable = 0; recyclable < 2; recyclable++) {
        log_t l = make(7, recyclable, 20, 9000); /* fragments across blocks */
        store_log_scan_t s = scan(&l);

        assert_true(s.records > 20);
        assert_int_equal(s.end, l.len);
        assert_false(s.damaged);
        assert_true(s.later == UINT64_MAX);
        free(l.buf);
    }
}

static void test_a_crash_cut_short_is_not_damage(void **state) {
    log_t l = make(7, 1, 20, 9000);
    store_log_scan_t s;

    (void)state;
    l.len = l.starts[19] + 5000; /* the last commit half written */
    s = scan(&l);
    assert_false(s.damaged);
    assert_true(s.later == UINT64_MAX);
    free(l.buf);
}

static void test_a_reused_files_old_records_end_it(void **state) {
    log_t old = make(3, 1, 30, 2000), l = make(9, 1, 5, 2000);
    store_log_scan_t s;

    (void)state;
    /* Log 9 written over the start of log 3's file. */
    memcpy(old.buf, l.buf, l.len);
    old.number = 9;
    s = scan(&old);
    assert_int_equal(s.end, l.len);
    assert_false(s.damaged);
    assert_true(s.later == UINT64_MAX);
    free(old.buf);
    free(l.buf);
}

static void test_a_damaged_byte_with_commits_after_it_is_a_hole(void **state) {
    (void)state;
    for (int recyclable = 0; recyclable < 2; recyclable++) {
        for (size_t size = 100; size <= 40000; size *= 20) {
            log_t l = make(11, recyclable, 12, size);
            store_log_scan_t s;

            l.buf[l.starts[5] + 30] ^= 0xFF; /* inside the sixth commit */
            s = scan(&l);
            assert_true(s.damaged);
            assert_true(s.end >= l.starts[5] && s.end < l.starts[6]);
            assert_true(s.later != UINT64_MAX);
            assert_true(s.later >= l.starts[6] && s.later <= l.starts[7]);
            free(l.buf);
        }
    }
}

static void test_damage_in_the_last_commit_is_not_a_hole(void **state) {
    (void)state;
    for (size_t size = 100; size <= 40000; size *= 20) {
        log_t l = make(11, 1, 6, size);
        store_log_scan_t s;

        /* Its first fragment: the ones continuing it begin no commit. */
        l.buf[l.starts[5] + 20] ^= 0xFF;
        s = scan(&l);
        assert_true(s.damaged);
        assert_true(s.later == UINT64_MAX);
        free(l.buf);
    }
}

static void test_zeros_with_commits_after_them_are_a_hole(void **state) {
    (void)state;
    /* 1,000-byte commits: every block begins inside one (a fragment), and
     * zeros over a block's start or over a whole commit in the middle of
     * one are what a bad sector or a lost write leaves. RocksDB's reader
     * skips the rest of such a block, or stops there inside a commit. */
    for (int recyclable = 0; recyclable < 2; recyclable++) {
        log_t l = make(4, recyclable, 60, 1000);
        store_log_scan_t s;

        memset(l.buf + 32768, 0, 4096); /* the second block's start */
        s = scan(&l);
        assert_true(s.damaged);
        assert_int_equal(s.end, 32768);
        assert_true(s.later != UINT64_MAX && s.later > 32768 + 4096);
        free(l.buf);

        l = make(4, recyclable, 20, 1000);
        memset(l.buf + l.starts[5], 0, l.starts[6] - l.starts[5]);
        s = scan(&l);
        assert_true(s.damaged);
        assert_int_equal(s.end, l.starts[5]);
        assert_int_equal(s.later, l.starts[6]);
        free(l.buf);
    }
}

static void test_a_zeroed_tail_is_not_a_hole(void **state) {
    log_t l = make(4, 0, 10, 1000);
    size_t end = l.len;
    static const unsigned char zeros[8192];
    store_log_scan_t s;

    (void)state;
    put(&l, zeros, sizeof(zeros)); /* a crash's unwritten last pages */
    s = scan(&l);
    assert_int_equal(s.end, end);
    assert_false(s.damaged);
    assert_true(s.later == UINT64_MAX);
    free(l.buf);
}

static void test_a_recyclable_type_in_a_plain_log_is_damage(void **state) {
    (void)state;
    /* reel's logs are never reused: a first header whose type byte reads
     * as a reused file's record is a damaged byte, and the commits after
     * it would be dropped. */
    for (unsigned type = 5; type <= 8; type++) {
        log_t l = make(4, 0, 10, 1000);
        store_log_scan_t s;

        l.buf[6] = (unsigned char)type;
        s = scan(&l);
        assert_true(s.damaged);
        assert_int_equal(s.end, 0);
        assert_int_equal(s.later, l.starts[1]);
        free(l.buf);
    }
}

static void write_log(const char *dir, const char *name, const log_t *l) {
    char path[1024];
    FILE *f;

    snprintf(path, sizeof(path), "%s/%s", dir, name);
    assert_non_null(f = fopen(path, "wb"));
    if (l->len > 0)
        assert_int_equal(fwrite(l->buf, 1, l->len, f), l->len);
    assert_int_equal(fclose(f), 0);
}

/* The same in an older log, with a later log holding commits: the data
 * dir opens (RocksDB skips zeros outside a commit). */
static void test_a_zeroed_tail_of_an_older_log_opens(void **state) {
    char dir[512];
    reel_status_t st = REEL_STATUS_INIT;
    log_t a = make(4, 0, 10, 1000), b = make(5, 0, 3, 1000);
    static const unsigned char zeros[8192];

    (void)state;
    put(&a, zeros, sizeof(zeros));
    assert_int_equal(testing_dir_make(dir, sizeof(dir), "log_check"), 0);
    write_log(dir, "000004.log", &a);
    write_log(dir, "000005.log", &b);
    assert_int_equal(store_logs_check(dir, &st), REEL_OK);
    reel_status_fini(&st);
    /* Zeros in its middle, with commits after them: refused. */
    memset(a.buf + a.starts[4], 0, a.starts[5] - a.starts[4]);
    write_log(dir, "000004.log", &a);
    assert_int_equal(store_logs_check(dir, &st), REEL_DATA_LOSS);
    reel_status_fini(&st);
    assert_int_equal(testing_dir_remove(dir), 0);
    free(a.buf);
    free(b.buf);
}

static void test_the_data_dirs_logs(void **state) {
    char dir[512], want[512];
    reel_status_t st = {0};
    log_t a = make(4, 1, 10, 3000), b = make(6, 1, 3, 3000), empty = {0};

    (void)state;
    assert_int_equal(testing_dir_make(dir, sizeof(dir), "log_check"), 0);
    write_log(dir, "000004.log", &a);
    write_log(dir, "000006.log", &b);
    write_log(dir, "000008.log", &empty);
    write_log(dir, "notes.log", &b); /* not RocksDB's: not read */
    assert_int_equal(store_logs_check(dir, &st), REEL_OK);

    /* The older log's last commit damaged: the later log's commits came
     * after it, and opening would drop them. */
    a.buf[a.starts[9] + 15] ^= 0xFF;
    write_log(dir, "000004.log", &a);
    assert_int_equal(store_logs_check(dir, &st), REEL_DATA_LOSS);
    snprintf(want, sizeof(want),
             "the data dir is corrupted; refusing to open it: its write-ahead "
             "log 000004.log has a record that does not read at byte %zu, "
             "and the later log 000006.log holds commits that opening would "
             "drop; restore a backup",
             a.starts[9]);
    assert_string_equal(reel_status_message(&st), want);
    reel_status_fini(&st);

    /* The newest log's last commit damaged: what a crash in its write
     * leaves, and nothing after it. */
    a.buf[a.starts[9] + 15] ^= 0xFF;
    write_log(dir, "000004.log", &a);
    b.buf[b.starts[2] + 15] ^= 0xFF;
    write_log(dir, "000006.log", &b);
    assert_int_equal(store_logs_check(dir, &st), REEL_OK);

    /* Its first commit damaged: the two after it would be dropped. */
    b.buf[b.starts[2] + 15] ^= 0xFF;
    b.buf[b.starts[0] + 15] ^= 0xFF;
    write_log(dir, "000006.log", &b);
    assert_int_equal(store_logs_check(dir, &st), REEL_DATA_LOSS);
    snprintf(want, sizeof(want),
             "its write-ahead log 000006.log has a record that does not read "
             "at byte 0, and committed records after it (from byte %zu) that "
             "opening would drop",
             b.starts[1]);
    assert_non_null(strstr(reel_status_message(&st), want));
    reel_status_fini(&st);
    assert_int_equal(testing_dir_remove(dir), 0);
    free(a.buf);
    free(b.buf);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_a_whole_log_reads_to_its_end),
        cmocka_unit_test(test_a_crash_cut_short_is_not_damage),
        cmocka_unit_test(test_a_reused_files_old_records_end_it),
        cmocka_unit_test(test_a_damaged_byte_with_commits_after_it_is_a_hole),
        cmocka_unit_test(test_damage_in_the_last_commit_is_not_a_hole),
        cmocka_unit_test(test_zeros_with_commits_after_them_are_a_hole),
        cmocka_unit_test(test_a_zeroed_tail_is_not_a_hole),
        cmocka_unit_test(test_a_zeroed_tail_of_an_older_log_opens),
        cmocka_unit_test(test_a_recyclable_type_in_a_plain_log_is_damage),
        cmocka_unit_test(test_the_data_dirs_logs),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
