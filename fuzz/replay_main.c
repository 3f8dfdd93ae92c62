/*
 * fuzz/replay_main.c: main of a fuzz target built without --config=fuzz:
 * runs each FILE (or every file of each DIR) once, so an input libFuzzer
 * found can be replayed under gcc, ASan or a debugger:
 *
 *   bazel build --config=asan //fuzz:fuzz_json
 *   bazel-bin/fuzz/fuzz_json crash-1234abcd
 */
#include <stdio.h>

#include "fuzz/replay.h"

int main(int argc, char **argv) {
    size_t n = 0;
    int rc = 0;

    if (argc < 2) {
        fprintf(stderr, "usage: %s FILE|DIR...\n", argv[0]);
        return 2;
    }
    for (int i = 1; i < argc; i++)
        if (fuzz_replay(argv[i], &n) != 0)
            rc = 1;
    fprintf(stderr, "replay: %zu inputs ran\n", n);
    return rc;
}
