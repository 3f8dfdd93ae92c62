"""Security (issue 23, docs/security.md): safe defaults, TLS and mTLS,
tokens with scopes, revocation of open streams, and what never shows in a
log."""
import os
import subprocess

import grpc
import pytest

from conftest import REELD, Reeld, free_port, unary
from reel.v1 import admin_pb2


def status(addr, creds=None, metadata=None, timeout=5):
    ch = (grpc.secure_channel(addr, creds) if creds is not None
          else grpc.insecure_channel(addr))
    try:
        return unary(ch, "/reel.v1.Admin/GetStatus", admin_pb2.GetStatusRequest,
                     admin_pb2.GetStatusResponse)(admin_pb2.GetStatusRequest(),
                                                  metadata=metadata,
                                                  timeout=timeout)
    finally:
        ch.close()


# ---- Safe defaults ---------------------------------------------------------

@pytest.mark.parametrize("listen, extra, want", [
    ("0.0.0.0", [], "Add --auth token and --tls-cert FILE --tls-key FILE"),
    ("[::]", [], "Add --auth token and --tls-cert FILE --tls-key FILE"),
    ("0.0.0.0", ["--auth", "token"], "no TLS"),
])
def test_a_public_address_without_auth_and_tls_refuses_to_start(
        tmp_path, listen, extra, want):
    data = tmp_path / "data"
    r = subprocess.run([REELD, "--data-dir", str(data), "--listen",
                        f"{listen}:{free_port()}"] + extra,
                       capture_output=True, text=True, timeout=20)
    assert r.returncode == 2, r.stderr
    assert "refusing to start" in r.stderr and want in r.stderr, r.stderr
    assert "--insecure" in r.stderr
    assert not data.exists()


def test_insecure_serves_a_public_address_and_says_so(tmp_path):
    port = free_port()
    server = Reeld(str(tmp_path / "data"), port=port,
                   extra=["--listen", f"0.0.0.0:{port}", "--insecure"]).start()
    try:
        assert status(server.addr).version
        assert "--insecure given: serving anyway" in server.log()
    finally:
        assert server.stop()[0] == 0


def test_loopback_needs_nothing(reeld):
    assert status(reeld.addr).version
    assert "--insecure" not in reeld.log()


def test_a_bad_switch_variable_is_refused(tmp_path):
    r = subprocess.run([REELD, "--data-dir", str(tmp_path / "d")],
                       capture_output=True, text=True, timeout=10,
                       env={"PATH": "/usr/bin:/bin", "REEL_INSECURE": "yes"})
    assert (r.returncode, r.stderr) == (2, 'reeld: REEL_INSECURE: "yes" is not 1 or 0\n')
