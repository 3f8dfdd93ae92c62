"""proto_c_library: C sources from a .proto via protoc-c (protobuf-c)."""

load("@rules_cc//cc:defs.bzl", "cc_library")

def proto_c_library(name, src, srcs = [], deps = [], visibility = None):
    """Generates <path>.pb-c.{c,h} from src and wraps them in a cc_library.

    src is a path inside this package laid out as its proto package says
    (api/reel/v1/kv.proto), and imports name files from the package root
    ("reel/v1/journal.proto"), so the generated code includes
    "reel/v1/journal.pb-c.h" like every other user of it.
    srcs: the .proto files src imports; deps: their proto_c_libraries.
    Nothing generated is committed: the genrule runs protoc-c at build time.
    """
    base = src[:-len(".proto")]
    root = native.package_name()
    native.genrule(
        name = name + "_gen",
        srcs = [src] + srcs,
        outs = [base + ".pb-c.c", base + ".pb-c.h"],
        cmd = "protoc-c --proto_path=%s --c_out=$(RULEDIR) $(location %s)" % (root, src),
    )
    cc_library(
        name = name,
        srcs = [base + ".pb-c.c"],
        hdrs = [base + ".pb-c.h"],
        copts = ["-Wno-unused-parameter"],
        # Users include "reel/v1/kv.pb-c.h", as the generated code does.
        includes = ["."],
        linkopts = ["-lprotobuf-c"],
        deps = deps,
        visibility = visibility,
    )
