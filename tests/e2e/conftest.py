"""End-to-end fixtures: a real reeld on a free port, talked to through
Python's grpcio (its own HTTP/2 stack, independent of reel's C code).

The helpers live in tests/reeltest (shared with the crash test); the names
the tests import from here (Reeld, unary, stream, reelctl, free_port,
REELD, REELCTL, ROOT) are those. Binaries come from $REELD / $REELCTL
(scripts/test.sh sets them, e.g. to the ASan build), or from bazel-bin.
Message classes are generated at session start from api/reel/v1/*.proto
(modules reel.v1.*_pb2) and the standard health.proto (health_pb2) with
/usr/bin/protoc; nothing generated is committed.

Tests that take well over 30 s are marked `slow` (SLOW below, so the test
files stay as they are): `pytest -m "not slow" tests/e2e` is the quick loop;
scripts/test.sh runs them all.
"""
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import reeltest  # noqa: E402
from reeltest import ROOT, Reeld, free_port, reelctl, sanitized, stream, unary  # noqa: E402,F401

_GEN = reeltest.generate()

import grpc  # noqa: E402


def _binary(path):
    if not os.path.exists(path):
        pytest.exit(f"{path} not found: build it first (scripts/test.sh does)", 2)
    return path


REELD = _binary(reeltest.REELD)
REELCTL = _binary(reeltest.REELCTL)

# Files (or file::test) whose tests each take well over 30 s: marked slow.
SLOW = {
    "test_kv_load.py": "100,000 writes past stalled watchers: about a minute",
}


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: well over 30 s; -m 'not slow' skips it")


def pytest_collection_modifyitems(config, items):
    for item in items:
        name = os.path.basename(item.nodeid.split("::")[0])
        test = name + "::" + item.nodeid.split("::", 1)[-1]
        if name in SLOW or test in SLOW:
            item.add_marker(pytest.mark.slow)


def as_root(cmd):
    """cmd as root: itself when the tests run as root, else through
    `sudo -n` (a mount; the README's setup runs as root or with sudo)."""
    return cmd if os.geteuid() == 0 else ["sudo", "-n"] + cmd


def small_tmpfs(mnt, size):
    """Mounts a tmpfs of size (e.g. "48m") at mnt, owned by this user, and
    yields mnt; skips, saying why, where none can be mounted (a container
    without CAP_SYS_ADMIN, no root and no sudo)."""
    import subprocess
    mnt.mkdir()
    opts = f"size={size},uid={os.geteuid()},gid={os.getegid()},mode=0700"
    r = subprocess.run(as_root(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(mnt)]),
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    yield mnt
    subprocess.run(as_root(["umount", "-l", str(mnt)]), capture_output=True)


@pytest.fixture(autouse=True)
def no_reeld_left():
    """Kills (SIGKILL) every reeld a test started and left running, one
    that failed before it stopped its own, so that it holds no CPU, memory
    or port through the tests after it. Set up before the test's own
    fixtures, it runs after their teardown (the reeld fixture's SIGTERM and
    exit check come first); those running before the test (a module's
    shared reeld) are left alone."""
    before = set(reeltest.server.running())
    yield
    for proc in reeltest.server.running():
        if proc not in before:
            proc.kill()
            proc.wait()


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
