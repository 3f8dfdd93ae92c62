"""A reeld process for a test: started on a data dir and a port, waited for
until it serves, stopped by a signal with its exit code, or killed."""
import os
import signal
import socket
import subprocess
import time

import grpc

from reeltest import protos

ROOT = protos.ROOT


def binary(env, rel):
    """The path in $env, or bazel-bin/rel of this tree (not checked)."""
    return os.environ.get(env) or os.path.join(ROOT, "bazel-bin", rel)


REELD = binary("REELD", "api/reeld")
REELCTL = binary("REELCTL", "cli/reelctl")

_SANITIZED = {}


def sanitized(path=None):
    """Whether the binary (reeld unless given) was built with a sanitizer:
    2-5 times slower, and ASan's quarantine keeps freed memory, so timing
    bounds need room there and RSS bounds mean nothing."""
    path = path or REELD
    if path not in _SANITIZED:
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError:
            data = b""
        _SANITIZED[path] = any(s in data for s in
                               (b"__asan_init", b"__tsan_init", b"__msan_init"))
    return _SANITIZED[path]


# Every reeld process started in this Python process and not yet seen
# ended: what running() looks through.
_started = []


def running():
    """The reeld processes started here (by any Reeld) still running."""
    _started[:] = [p for p in _started if p.poll() is None]
    return list(_started)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Reeld:
    """One reeld process. start() waits until health answers SERVING.

    Its output goes to a log file beside the data dir, one per start
    (log() reads the current one), so a restarted reeld keeps what the
    previous one said."""

    def __init__(self, data_dir, port=None, extra=(), binary=None, creds=None,
                 metadata=None, env=None, stdin=None, new_session=False):
        """creds: grpc channel credentials when reeld serves TLS (start()
        probes health through them); metadata: what each probe sends (an
        authorization token under --auth token); env: variables added to
        reeld's environment; stdin, new_session: as subprocess.Popen's
        stdin and start_new_session (a reeld with no terminal)."""
        self.binary = binary or REELD
        self.creds = creds
        self.metadata = metadata
        self.data_dir = data_dir
        self.port = port or free_port()
        self.addr = f"127.0.0.1:{self.port}"
        self.extra = list(extra)
        self.env = dict(env or {})
        self.stdin = stdin
        self.new_session = new_session
        self.proc = None
        self.log_path = None
        self.ready_after = None   # seconds from exec to SERVING, once started

    def start(self, wait=True, timeout=10.0):
        """Starts reeld; with wait, returns once it serves (ready_after says
        how long that took). A reeld that exits first, or does not serve
        within timeout (it is killed then), is an AssertionError with its
        log."""
        protos.generate()
        import health_pb2

        self.log_path = os.path.join(os.path.dirname(self.data_dir),
                                     f"reeld-{self.port}-{int(time.time()*1000)}.log")
        log = open(self.log_path, "wb")
        t0 = time.monotonic()
        self.proc = subprocess.Popen(
            [self.binary, "--data-dir", self.data_dir, "--listen", self.addr] + self.extra,
            stdout=log, stderr=subprocess.STDOUT, stdin=self.stdin,
            start_new_session=self.new_session,
            env={**os.environ, **self.env} if self.env else None)
        log.close()
        running()   # forgets the ended ones
        _started.append(self.proc)
        if not wait:
            return self
        # A fresh channel per probe: a reused one would wait out its own
        # reconnect backoff and measure the client, not the server.
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"reeld exited with {self.proc.returncode}:\n{self.log()}")
            ch = self.channel()
            check = ch.unary_unary(
                "/grpc.health.v1.Health/Check",
                request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
                response_deserializer=health_pb2.HealthCheckResponse.FromString)
            try:
                r = check(health_pb2.HealthCheckRequest(), timeout=0.5,
                          metadata=self.metadata)
                if r.status == health_pb2.HealthCheckResponse.SERVING:
                    self.ready_after = time.monotonic() - t0
                    return self
            except grpc.RpcError:
                pass
            finally:
                ch.close()
            if time.monotonic() - t0 > timeout:
                self.kill()
                raise AssertionError(f"reeld not serving after {timeout}s:\n{self.log()}")
            time.sleep(0.01)

    def channel(self, creds=None):
        """A new channel to this reeld: through creds, else the server's
        own (TLS when it was given some), else plaintext."""
        creds = creds or self.creds
        if creds is not None:
            return grpc.secure_channel(self.addr, creds)
        return grpc.insecure_channel(self.addr)

    def log(self, tail=None):
        """What the current reeld wrote (its last tail characters)."""
        try:
            with open(self.log_path, "rb") as f:
                text = f.read().decode(errors="replace")
        except (OSError, TypeError):
            return ""
        return text[-tail:] if tail else text

    def stop(self, sig=signal.SIGTERM, timeout=10.0):
        """Signals reeld and returns (exit code, seconds it took). One that
        does not exit within timeout is killed: an AssertionError."""
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
        """SIGKILL, and reap."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
