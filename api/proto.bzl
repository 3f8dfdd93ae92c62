"""proto_c_library: C sources from a .proto via protoc-c (protobuf-c)."""

load("@rules_cc//cc:defs.bzl", "cc_library")

def proto_c_library(name, src, srcs = [], deps = [], visibility = None):
    """Generates <base>.pb-c.{c,h} from src and wraps them in a cc_library.

    srcs: the .proto files src imports; deps: their proto_c_libraries.
    Nothing generated is committed: the genrule runs protoc-c at build time.
    """
    base = src[:-len(".proto")]
    native.genrule(
        name = name + "_gen",
        srcs = [src] + srcs,
        outs = [base + ".pb-c.c", base + ".pb-c.h"],
        cmd = "protoc-c --proto_path=$$(dirname $(location %s)) --c_out=$(RULEDIR) $(location %s)" % (src, src),
    )
    cc_library(
        name = name,
        srcs = [base + ".pb-c.c"],
        hdrs = [base + ".pb-c.h"],
        copts = ["-Wno-unused-parameter"],
        linkopts = ["-lprotobuf-c"],
        deps = deps,
        visibility = visibility,
    )
