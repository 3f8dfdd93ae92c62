#!/usr/bin/env python3
"""Regenerates the client's message classes from the protos under api/.

    clients/python/gen_stubs.py           rewrite reel/v1/*_pb2.py and reel/_health/health_pb2.py
    clients/python/gen_stubs.py --check   exit 1 if a committed file differs (tests/test_stubs.py)

The generated files are committed so the package installs without protoc;
tests/test_stubs.py regenerates them and fails when they are stale. protoc
is $PROTOC or /usr/bin/protoc (Debian's protobuf-compiler: the protoc that
grpc_tools bundles is too old for protobuf 4). reel.v1's modules import each
other as `reel.v1.*_pb2`, which is this package's own reel.v1. The health
proto is generated as a top-level file (its package path, grpc.health.v1,
would collide with grpcio's `grpc`) and kept in reel/_health.
"""
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
PROTOC = os.environ.get("PROTOC", "/usr/bin/protoc")


def generate(out_dir):
    """Writes every generated file under out_dir, at its path in the
    package (reel/v1/kv_pb2.py, ...), and returns those paths, relative."""
    api = os.path.join(ROOT, "api")
    protos = sorted(p for p in os.listdir(os.path.join(api, "reel", "v1"))
                    if p.endswith(".proto"))
    subprocess.run([PROTOC, "--python_out=" + out_dir, "-I" + api] +
                   [os.path.join(api, "reel", "v1", p) for p in protos], check=True)
    health = os.path.join(out_dir, "reel", "_health")
    os.makedirs(health, exist_ok=True)
    subprocess.run([PROTOC, "--python_out=" + health,
                    "-I" + os.path.join(api, "grpc", "health", "v1"),
                    os.path.join(api, "grpc", "health", "v1", "health.proto")], check=True)
    return [os.path.join("reel", "v1", p[:-len(".proto")] + "_pb2.py") for p in protos] + \
        [os.path.join("reel", "_health", "health_pb2.py")]


def committed():
    """The generated files the package holds now, relative."""
    out = []
    for sub in (os.path.join("reel", "v1"), os.path.join("reel", "_health")):
        out += [os.path.join(sub, f) for f in os.listdir(os.path.join(HERE, sub))
                if f.endswith("_pb2.py")]
    return sorted(out)


def stale():
    """[(path, why)] for every committed file that differs from what the
    protos generate now, or is missing, or is left over."""
    with tempfile.TemporaryDirectory() as tmp:
        fresh = generate(tmp)
        bad = []
        for rel in fresh:
            with open(os.path.join(tmp, rel), "rb") as f:
                want = f.read()
            try:
                with open(os.path.join(HERE, rel), "rb") as f:
                    have = f.read()
            except FileNotFoundError:
                bad.append((rel, "missing"))
                continue
            if have != want:
                bad.append((rel, "differs from what protoc generates"))
        bad += [(rel, "no proto generates it") for rel in committed() if rel not in fresh]
        return bad


def main(argv):
    if argv[1:] == ["--check"]:
        bad = stale()
        for rel, why in bad:
            print(f"{rel}: {why}; run clients/python/gen_stubs.py", file=sys.stderr)
        return 1 if bad else 0
    if argv[1:]:
        print(__doc__, file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        fresh = generate(tmp)
        for rel in committed():
            if rel not in fresh:
                os.remove(os.path.join(HERE, rel))
        for rel in fresh:
            with open(os.path.join(tmp, rel), "rb") as f:
                data = f.read()
            with open(os.path.join(HERE, rel), "wb") as f:
                f.write(data)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
