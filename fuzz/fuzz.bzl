"""reel_fuzz_target: a libFuzzer target and the test that replays its corpus."""

load("@rules_cc//cc:defs.bzl", "cc_binary", "cc_test")

def reel_fuzz_target(name, srcs, deps = [], copts = []):
    """Defines a fuzz target and its corpus test.

    `name` (srcs define LLVMFuzzerTestOneInput): under --config=fuzz a
    libFuzzer binary (clang, ASan + UBSan, scripts/fuzz.sh runs it against
    fuzz/corpus/<name>); otherwise the same code with replay_main.c, which
    runs the files it is given once (to reproduce an input under gcc or
    --config=asan).

    `<name>_corpus_test`: replays every file of fuzz/corpus/<name> in any
    build, so `bazel test //...` catches an input that stopped passing.
    """
    cc_binary(
        name = name,
        testonly = True,
        srcs = srcs + select({
            ":libfuzzer": [],
            "//conditions:default": ["replay_main.c"],
        }),
        copts = copts,
        linkopts = select({
            ":libfuzzer": ["-fsanitize=fuzzer"],
            "//conditions:default": [],
        }),
        deps = deps + select({
            ":libfuzzer": [],
            "//conditions:default": [":replay"],
        }),
    )
    cc_test(
        name = name + "_corpus_test",
        srcs = srcs + ["corpus_test.c"],
        args = ["fuzz/corpus/" + name],
        copts = copts,
        data = native.glob(["corpus/%s/*" % name]),
        linkopts = ["-lcmocka"],
        deps = deps + [":replay"],
    )
