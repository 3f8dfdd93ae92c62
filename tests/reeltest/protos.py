"""The message classes, generated from the protos at run time: nothing
generated is committed, so the tests always speak the protos in the tree."""
import atexit
import os
import shutil
import subprocess
import sys
import tempfile
import threading

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

_lock = threading.Lock()
_dir = None


def generate():
    """Generates the reel.v1 and health_pb2 modules once per process into a
    temp dir (removed at exit), puts it first on sys.path and returns it.

    Debian's /usr/bin/protoc, not grpc_tools' bundled one: that one is older
    than the protobuf runtime and its output fails to load."""
    global _dir
    with _lock:
        if _dir is not None:
            return _dir
        gen = tempfile.mkdtemp(prefix="reel-pb2-")
        atexit.register(shutil.rmtree, gen, True)
        protos = sorted(p for p in os.listdir(os.path.join(ROOT, "api/reel/v1"))
                        if p.endswith(".proto"))
        subprocess.run(["/usr/bin/protoc", "--python_out=" + gen, "-Iapi"] +
                       [os.path.join("api/reel/v1", p) for p in protos],
                       cwd=ROOT, check=True)
        # The standard health service, as a top-level module (its package
        # path, grpc.health.v1, would collide with grpcio's own `grpc`).
        subprocess.run(["/usr/bin/protoc", "--python_out=" + gen, "-Iapi/grpc/health/v1",
                        "api/grpc/health/v1/health.proto"], cwd=ROOT, check=True)
        sys.path.insert(0, gen)
        _dir = gen
        return gen
