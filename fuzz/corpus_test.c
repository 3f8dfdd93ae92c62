/*
 * fuzz/corpus_test.c: every committed input of a fuzz target's corpus runs
 * clean in the ordinary build (and under --config=asan), so a change that
 * breaks one fails `bazel test //...` without a fuzzing run. The corpus
 * directory is the test's one argument (fuzz/BUILD passes it).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>

#include "fuzz/replay.h"

static const char *corpus;

static void test_every_input_of_the_corpus_runs_clean(void **state) {
    size_t n = 0;

    (void)state;
    assert_int_equal(fuzz_replay(corpus, &n), 0);
    /* An empty or missing corpus would pass without running anything. */
    assert_true(n > 0);
}

int main(int argc, char **argv) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_input_of_the_corpus_runs_clean),
    };

    if (argc != 2) {
        fprintf(stderr, "usage: %s CORPUS_DIR\n", argv[0]);
        return 2;
    }
    corpus = argv[1];
    return cmocka_run_group_tests(tests, NULL, NULL);
}
