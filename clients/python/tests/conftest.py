"""Fixtures for the client's tests: a real reeld on a free port.

The tests import the `reel` package that is installed (scripts/test.sh
installs clients/python into a fresh venv and runs them from the
repository's root), or, for development, the one on PYTHONPATH
(`PYTHONPATH=clients/python /usr/bin/python3 -m pytest clients/python/tests`).
reeld is $REELD, or bazel-bin/api/reeld of this checkout: build it first.
They keep away from tests/e2e's conftest, whose generated `reel.v1` would
stand in for the client's own.

Async tests are plain `async def test_...`: the hook below runs each in a
fresh event loop (no pytest plugin needed), with a deadline.
"""
import asyncio
import inspect
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

import reel

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(HERE)))
EXAMPLES = os.path.join(ROOT, "examples")
ASYNC_TEST_TIMEOUT = 120


def _reeld():
    path = os.environ.get("REELD") or os.path.join(ROOT, "bazel-bin", "api", "reeld")
    if not os.path.exists(path):
        pytest.exit(f"{path} not found: build it first (bazel build //api:reeld)", 2)
    return path


def pytest_report_header(config):
    return f"reel client: {os.path.dirname(reel.__file__)}"


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem):
    if inspect.iscoroutinefunction(pyfuncitem.obj):
        args = {a: pyfuncitem.funcargs[a] for a in pyfuncitem._fixtureinfo.argnames}
        asyncio.run(asyncio.wait_for(pyfuncitem.obj(**args), ASYNC_TEST_TIMEOUT))
        return True
    return None


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Reeld:
    """One reeld process; start() returns once health answers SERVING."""

    def __init__(self, data_dir, port=None, extra=(), tls=False):
        self.data_dir = data_dir
        self.tls = tls          # what the health probe connects with
        self.port = port or free_port()
        self.addr = f"127.0.0.1:{self.port}"
        self.extra = list(extra)
        self.proc = None
        self.log_path = None

    def start(self, timeout=10.0):
        self.log_path = os.path.join(os.path.dirname(self.data_dir),
                                     f"reeld-{self.port}-{time.monotonic_ns()}.log")
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [_reeld(), "--data-dir", self.data_dir, "--listen", self.addr] + self.extra,
                stdout=log, stderr=subprocess.STDOUT)
        t0 = time.monotonic()
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"reeld exited with {self.proc.returncode}:\n{self.log()}")
            # A fresh client per probe: a reused channel would wait out its
            # own reconnect backoff.
            with reel.connect(self.addr, timeout=0.5, wait_for_ready=False, retries=0,
                              tls=self.tls) as c:
                try:
                    if c.health() == "SERVING":
                        return self
                except reel.ReelError:
                    pass
            if time.monotonic() - t0 > timeout:
                raise AssertionError(f"reeld not serving after {timeout}s:\n{self.log()}")
            time.sleep(0.01)

    def log(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode(errors="replace")
        except (OSError, TypeError):
            return ""

    def stop(self, sig=signal.SIGTERM, timeout=10.0):
        """Signals reeld and returns its exit code."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"reeld did not exit within {timeout}s:\n{self.log()}")

    def restart(self):
        """Stops reeld (SIGTERM, exit 0) and starts it again on the same
        port and data dir."""
        code = self.stop()
        assert code == 0, f"reeld exited {code} on SIGTERM:\n{self.log()}"
        return self.start()

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def reeld(tmp_path):
    """A running reeld on a fresh data dir; it must exit 0 on SIGTERM at
    the end."""
    server = Reeld(str(tmp_path / "data")).start()
    yield server
    if server.proc.poll() is None:
        code = server.stop()
        assert code == 0, f"reeld exited {code} on SIGTERM:\n{server.log()}"


@pytest.fixture
def client(reeld):
    c = reel.connect(reeld.addr, reconnect_timeout=20)
    yield c
    c.close()


def python():
    """The interpreter running the tests (the venv's, under scripts/test.sh)."""
    return sys.executable
