/*
 * fuzz/replay.h: runs a fuzz target's LLVMFuzzerTestOneInput over files,
 * without libFuzzer: how the corpus tests replay every committed input in
 * the ordinary build (gcc, and --config=asan), and how a fuzz target built
 * without --config=fuzz reproduces an input (bazel-bin/fuzz/<target> FILE).
 *
 * Single-threaded; calls LLVMFuzzerInitialize first if the target has one.
 */
#ifndef REEL_FUZZ_REPLAY_H
#define REEL_FUZZ_REPLAY_H

#include <stddef.h>

/*
 * Runs the target on path, a file or every file directly in a directory
 * (in name order, so a run is repeatable), and adds how many inputs ran to
 * *n. Returns 0, or -1 (naming on stderr what it could not read). A target
 * that crashes or aborts ends the process, as under libFuzzer; the name of
 * the input is printed before it runs.
 */
int fuzz_replay(const char *path, size_t *n);

#endif
