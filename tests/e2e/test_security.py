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


# ---- TLS and mTLS -----------------------------------------------------------

def openssl(*args, cwd):
    subprocess.run(["openssl"] + list(args), cwd=cwd, check=True,
                   capture_output=True, timeout=30)


def make_ca(d, name):
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt",
            "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", f"{name}.key",
            "-out", f"{name}.pem", "-days", "2", "-subj", f"/CN=reel test {name}",
            cwd=d)


def make_cert(d, name, ca, server):
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj",
            f"/CN={name}", cwd=d)
    ext = d / f"{name}.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n" if server
                   else "extendedKeyUsage=clientAuth\n")
    openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey",
            f"{ca}.key", "-CAcreateserial", "-out", f"{name}.pem", "-days", "2",
            "-extfile", ext.name, cwd=d)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """Two CAs; a server certificate from each; a client certificate from
    each. Paths by name: pki["ca1.pem"]."""
    d = tmp_path_factory.mktemp("pki")
    for ca in ("ca1", "ca2"):
        make_ca(d, ca)
    make_cert(d, "server1", "ca1", True)
    make_cert(d, "server2", "ca2", True)
    make_cert(d, "client1", "ca1", False)
    make_cert(d, "client2", "ca2", False)
    return {p.name: p for p in d.iterdir()}


def read(p):
    return p.read_bytes()


def tls_creds(pki, ca="ca1", client=None):
    if client is None:
        return grpc.ssl_channel_credentials(read(pki[f"{ca}.pem"]))
    return grpc.ssl_channel_credentials(read(pki[f"{ca}.pem"]),
                                        read(pki[f"{client}.key"]),
                                        read(pki[f"{client}.pem"]))


def refused(addr, creds=None):
    """The call fails (handshake refused): UNAVAILABLE."""
    with pytest.raises(grpc.RpcError) as e:
        status(addr, creds, timeout=3)
    return e.value.code()


def test_tls_serves_a_client_trusting_its_ca_and_no_other(tmp_path, pki):
    server = Reeld(str(tmp_path / "data"), creds=tls_creds(pki),
                   extra=["--tls-cert", str(pki["server1.pem"]),
                          "--tls-key", str(pki["server1.key"])]).start()
    try:
        assert status(server.addr, tls_creds(pki)).version
        assert refused(server.addr, tls_creds(pki, "ca2")) == \
            grpc.StatusCode.UNAVAILABLE
        assert refused(server.addr) == grpc.StatusCode.UNAVAILABLE
        assert "with TLS" in server.log()
    finally:
        assert server.stop()[0] == 0


def test_mtls_requires_a_client_certificate_from_its_ca(tmp_path, pki):
    server = Reeld(str(tmp_path / "data"), creds=tls_creds(pki, client="client1"),
                   extra=["--tls-cert", str(pki["server1.pem"]),
                          "--tls-key", str(pki["server1.key"]),
                          "--tls-client-ca", str(pki["ca1.pem"])]).start()
    try:
        assert status(server.addr, tls_creds(pki, client="client1")).version
        assert refused(server.addr, tls_creds(pki)) == grpc.StatusCode.UNAVAILABLE
        assert refused(server.addr, tls_creds(pki, client="client2")) == \
            grpc.StatusCode.UNAVAILABLE
        assert "with mTLS" in server.log()
    finally:
        assert server.stop()[0] == 0


def wait_log(server, text, timeout=10):
    import time
    end = time.monotonic() + timeout
    while text not in server.log():
        assert time.monotonic() < end, f"no {text!r} in:\n{server.log()}"
        time.sleep(0.02)


def test_sighup_reloads_the_certificates_without_dropping_connections(
        tmp_path, pki):
    import shutil
    import signal
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    shutil.copy(pki["server1.pem"], cert)
    shutil.copy(pki["server1.key"], key)
    server = Reeld(str(tmp_path / "data"), creds=tls_creds(pki),
                   extra=["--tls-cert", str(cert), "--tls-key", str(key)]).start()
    old = server.channel(tls_creds(pki))
    try:
        get = unary(old, "/reel.v1.Admin/GetStatus", admin_pb2.GetStatusRequest,
                    admin_pb2.GetStatusResponse)
        assert get(admin_pb2.GetStatusRequest(), timeout=5).version
        # A bad file on SIGHUP: refused, and the old certificate serves on.
        cert.write_text("not a certificate\n")
        server.proc.send_signal(signal.SIGHUP)
        wait_log(server, "TLS not reloaded")
        assert "--tls-cert " + str(cert) + ": no PEM certificate" in server.log()
        assert status(server.addr, tls_creds(pki)).version
        # The second CA's certificate: new connections get it.
        shutil.copy(pki["server2.pem"], cert)
        shutil.copy(pki["server2.key"], key)
        server.proc.send_signal(signal.SIGHUP)
        wait_log(server, "TLS certificates reloaded")
        assert status(server.addr, tls_creds(pki, "ca2")).version
        assert refused(server.addr, tls_creds(pki, "ca1")) == \
            grpc.StatusCode.UNAVAILABLE
        # The connection made before the reload still works.
        assert get(admin_pb2.GetStatusRequest(), timeout=5).version
    finally:
        old.close()
        assert server.stop()[0] == 0


@pytest.mark.parametrize("files, want", [
    (("server1.pem", "server2.key"), "does not match the certificate"),
    (("server1.key", "server1.key"), "no PEM certificate"),
    (("server1.pem", "nonexistent"), "cannot open"),
])
def test_bad_tls_files_refuse_to_start_naming_the_file(tmp_path, pki, files, want):
    cert, key = (str(pki.get(f, tmp_path / f)) for f in files)
    r = subprocess.run([REELD, "--data-dir", str(tmp_path / "d"), "--listen",
                        f"127.0.0.1:{free_port()}", "--tls-cert", cert,
                        "--tls-key", key],
                       capture_output=True, text=True, timeout=20)
    assert r.returncode == 1 and want in r.stderr, r.stderr
    assert "BEGIN" not in r.stderr


def test_reelctl_speaks_tls_and_mtls(tmp_path, pki):
    from conftest import REELCTL
    server = Reeld(str(tmp_path / "data"), creds=tls_creds(pki, client="client1"),
                   extra=["--tls-cert", str(pki["server1.pem"]),
                          "--tls-key", str(pki["server1.key"]),
                          "--tls-client-ca", str(pki["ca1.pem"])]).start()
    try:
        def ctl(*args, env=None):
            return subprocess.run([REELCTL, "--addr", server.addr] + list(args),
                                  capture_output=True, text=True, timeout=30,
                                  env=dict({"PATH": "/usr/bin:/bin"}, **(env or {})))
        ok = ctl("--tls-ca", str(pki["ca1.pem"]), "--tls-cert",
                 str(pki["client1.pem"]), "--tls-key", str(pki["client1.key"]),
                 "health")
        assert (ok.returncode, ok.stdout) == (0, "SERVING\n"), ok.stderr
        by_env = ctl("health", env={"REEL_TLS_CA": str(pki["ca1.pem"]),
                                    "REEL_TLS_CERT": str(pki["client1.pem"]),
                                    "REEL_TLS_KEY": str(pki["client1.key"])})
        assert by_env.returncode == 0, by_env.stderr
        no_cert = ctl("--tls-ca", str(pki["ca1.pem"]), "health")
        assert no_cert.returncode == 1
        plain = ctl("health")
        assert plain.returncode == 1
        half = ctl("--tls-cert", str(pki["client1.pem"]), "health")
        assert half.returncode == 1 and "tls_cert_file and tls_key_file" in half.stderr
    finally:
        assert server.stop()[0] == 0
