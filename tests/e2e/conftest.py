"""End-to-end fixtures: a real reeld on a free port, talked to through
Python's grpcio (its own HTTP/2 stack, independent of reel's C code).

Binaries come from $REELD / $REELCTL (scripts/test.sh sets them, e.g. to the
ASan build), or from bazel-bin. Message classes are generated at session
start from api/reel/v1/*.proto (modules reel.v1.*_pb2) and the
standard health.proto (health_pb2) with /usr/bin/protoc; nothing generated is committed.
"""
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

import atexit
import shutil

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _binary(env, rel):
    path = os.environ.get(env) or os.path.join(ROOT, "bazel-bin", rel)
    if not os.path.exists(path):
        pytest.exit(f"{path} not found: build it first (scripts/test.sh does)", 2)
    return path


REELD = _binary("REELD", "api/reeld")
REELCTL = _binary("REELCTL", "cli/reelctl")

_GEN = tempfile.mkdtemp(prefix="reel-pb2-")
atexit.register(shutil.rmtree, _GEN, True)
subprocess.run(["/usr/bin/protoc", "--python_out=" + _GEN, "-Iapi"] +
               [os.path.join("api/reel/v1", p)
                for p in sorted(os.listdir(os.path.join(ROOT, "api/reel/v1")))
                if p.endswith(".proto")],
               cwd=ROOT, check=True)
# The standard health service, as a top-level module (its package path,
# grpc.health.v1, would collide with grpcio's own `grpc` package).
subprocess.run(["/usr/bin/protoc", "--python_out=" + _GEN, "-Iapi/grpc/health/v1",
                "api/grpc/health/v1/health.proto"], cwd=ROOT, check=True)
sys.path.insert(0, _GEN)

import grpc  # noqa: E402


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Reeld:
    """One reeld process. start() waits until health answers SERVING."""

    def __init__(self, data_dir, port=None, extra=()):
        self.data_dir = data_dir
        self.port = port or free_port()
        self.addr = f"127.0.0.1:{self.port}"
        self.extra = list(extra)
        self.proc = None
        self.log_path = None
        self.ready_after = None

    def start(self, wait=True, timeout=10.0):
        import health_pb2

        self.log_path = os.path.join(os.path.dirname(self.data_dir),
                                     f"reeld-{self.port}-{int(time.time()*1000)}.log")
        log = open(self.log_path, "wb")
        t0 = time.monotonic()
        self.proc = subprocess.Popen(
            [REELD, "--data-dir", self.data_dir, "--listen", self.addr] + self.extra,
            stdout=log, stderr=subprocess.STDOUT)
        log.close()
        if not wait:
            return self
        # A fresh channel per probe: a reused one would wait out its own
        # reconnect backoff and measure the client, not the server.
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"reeld exited with {self.proc.returncode}:\n{self.log()}")
            ch = grpc.insecure_channel(self.addr)
            check = ch.unary_unary(
                "/grpc.health.v1.Health/Check",
                request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
                response_deserializer=health_pb2.HealthCheckResponse.FromString)
            try:
                r = check(health_pb2.HealthCheckRequest(), timeout=0.5)
                if r.status == health_pb2.HealthCheckResponse.SERVING:
                    self.ready_after = time.monotonic() - t0
                    return self
            except grpc.RpcError:
                pass
            finally:
                ch.close()
            if time.monotonic() - t0 > timeout:
                raise AssertionError(f"reeld not serving after {timeout}s:\n{self.log()}")
            time.sleep(0.01)

    def log(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def stop(self, sig=signal.SIGTERM, timeout=10.0):
        """Signals reeld and returns (exit code, seconds it took)."""
        if self.proc is None or self.proc.poll() is not None:
            return (self.proc.returncode if self.proc else None), 0.0
        t0 = time.monotonic()
        self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"reeld did not exit within {timeout}s:\n{self.log()}")
        return code, time.monotonic() - t0

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def workdir(tmp_path):
    return tmp_path


@pytest.fixture
def reeld(tmp_path):
    """A running reeld on a fresh data dir; must exit 0 on SIGTERM at the end."""
    server = Reeld(str(tmp_path / "data")).start()
    yield server
    if server.proc.poll() is None:
        code, _ = server.stop()
        assert code == 0, f"reeld exited {code} on SIGTERM:\n{server.log()}"


@pytest.fixture
def channel(reeld):
    ch = grpc.insecure_channel(reeld.addr)
    yield ch
    ch.close()


def unary(channel, method, req_cls, resp_cls):
    return channel.unary_unary(method, request_serializer=req_cls.SerializeToString,
                               response_deserializer=resp_cls.FromString)


def stream(channel, method, req_cls, resp_cls):
    return channel.unary_stream(method, request_serializer=req_cls.SerializeToString,
                                response_deserializer=resp_cls.FromString)


def reelctl(addr, *args, timeout=30):
    return subprocess.run([REELCTL, "--addr", addr] + list(args),
                          capture_output=True, text=True, timeout=timeout)
