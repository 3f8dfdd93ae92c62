/*
 * base/file_test.c: a file replaced whole, with its mode, and nothing left
 * half-written when it cannot be.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "base/file.h"

typedef struct {
    char dir[512];
    char path[640];
    char tmp[648];
} fx_t;

static int setup(void **state) {
    fx_t *f = calloc(1, sizeof(*f));
    const char *base = getenv("TEST_TMPDIR"); /* Bazel's, per test */

    snprintf(f->dir, sizeof(f->dir), "%s/reel-file-test-XXXXXX",
             base != NULL ? base : "/tmp");
    if (mkdtemp(f->dir) == NULL)
        return -1;
    snprintf(f->path, sizeof(f->path), "%s/token", f->dir);
    snprintf(f->tmp, sizeof(f->tmp), "%s.tmp", f->path);
    *state = f;
    return 0;
}

static int teardown(void **state) {
    fx_t *f = *state;
    char cmd[600];

    snprintf(cmd, sizeof(cmd), "rm -rf %s", f->dir);
    if (system(cmd) != 0)
        return -1;
    free(f);
    return 0;
}

static void read_back(const char *path, char *out, size_t cap) {
    FILE *fp = fopen(path, "r");
    size_t n;

    assert_non_null(fp);
    n = fread(out, 1, cap - 1, fp);
    out[n] = '\0';
    fclose(fp);
}

static void test_a_new_file_has_its_bytes_and_mode(void **state) {
    fx_t *f = *state;
    reel_status_t st = REEL_STATUS_INIT;
    struct stat sb;
    char buf[64];

    assert_int_equal(reel_file_replace(f->path, "abc\n", 4, 0600, &st),
                     REEL_OK);
    read_back(f->path, buf, sizeof(buf));
    assert_string_equal(buf, "abc\n");
    assert_int_equal(stat(f->path, &sb), 0);
    assert_int_equal(sb.st_mode & 0777, 0600);
    assert_int_not_equal(access(f->tmp, F_OK), 0);
}

static void test_an_old_file_and_a_stale_tmp_are_replaced(void **state) {
    fx_t *f = *state;
    reel_status_t st = REEL_STATUS_INIT;
    char buf[64];

    assert_int_equal(reel_file_replace(f->path, "old, longer\n", 12, 0644,
                                       &st),
                     REEL_OK);
    FILE *fp = fopen(f->tmp, "w"); /* what a crash mid-write leaves */
    assert_non_null(fp);
    fputs("stale", fp);
    fclose(fp);
    assert_int_equal(reel_file_replace(f->path, "new\n", 4, 0644, &st),
                     REEL_OK);
    read_back(f->path, buf, sizeof(buf));
    assert_string_equal(buf, "new\n");
    assert_int_not_equal(access(f->tmp, F_OK), 0);
}

static void test_a_missing_directory_fails_naming_the_file(void **state) {
    fx_t *f = *state;
    reel_status_t st = REEL_STATUS_INIT;
    char path[700];

    snprintf(path, sizeof(path), "%s/no-such-dir/token", f->dir);
    assert_int_equal(reel_file_replace(path, "x", 1, 0600, &st),
                     REEL_UNAVAILABLE);
    assert_non_null(strstr(st.msg, "no-such-dir/token.tmp"));
    reel_status_fini(&st);
}

static void test_a_failed_rename_keeps_the_old_and_leaves_no_tmp(
    void **state) {
    fx_t *f = *state;
    reel_status_t st = REEL_STATUS_INIT;
    struct stat sb;

    /* A directory where the file should go: rename(2) refuses. */
    assert_int_equal(mkdir(f->path, 0700), 0);
    assert_int_equal(reel_file_replace(f->path, "x", 1, 0600, &st),
                     REEL_UNAVAILABLE);
    assert_non_null(strstr(st.msg, f->path));
    reel_status_fini(&st);
    assert_int_equal(stat(f->path, &sb), 0);
    assert_true(S_ISDIR(sb.st_mode));
    assert_int_not_equal(access(f->tmp, F_OK), 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_a_new_file_has_its_bytes_and_mode,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_an_old_file_and_a_stale_tmp_are_replaced, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_a_missing_directory_fails_naming_the_file, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_a_failed_rename_keeps_the_old_and_leaves_no_tmp, setup,
            teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
