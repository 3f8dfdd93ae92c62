"""Security (issue 23, docs/security.md): safe defaults, TLS and mTLS,
tokens with scopes, revocation of open streams, and what never shows in a
log."""
import json
import os
import subprocess
import time

import grpc
import pytest

from conftest import REELCTL, REELD, Reeld, free_port, unary
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
    assert (r.returncode, r.stderr) == (2, 'reeld: REEL_INSECURE (--insecure): "yes" is not 1 or 0\n')


# ---- TLS and mTLS -----------------------------------------------------------

def openssl(*args, cwd):
    subprocess.run(["openssl"] + list(args), cwd=cwd, check=True,
                   capture_output=True, timeout=30)


def make_ca(d, name):
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt",
            "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", f"{name}.key",
            "-out", f"{name}.pem", "-days", "2", "-subj", f"/CN=reel test {name}",
            cwd=d)


def make_cert(d, name, ca, server, ext_text=None):
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj",
            f"/CN={name}", cwd=d)
    ext = d / f"{name}.ext"
    ext.write_text(ext_text or ("subjectAltName=IP:127.0.0.1,DNS:localhost\n" if server
                                else "extendedKeyUsage=clientAuth\n"))
    openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey",
            f"{ca}.key", "-CAcreateserial", "-out", f"{name}.pem", "-days", "2",
            "-extfile", ext.name, cwd=d)


def make_expired(d, name, ca):
    """A server certificate from ca valid for one day of 2020 only: `openssl
    x509 -days` counts from now, `openssl ca` takes dates."""
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj",
            f"/CN={name}", cwd=d)
    (d / "index.txt").write_text("")
    (d / f"{name}.cnf").write_text(
        "[ca]\ndefault_ca = ca_default\n[ca_default]\ndatabase = index.txt\n"
        "new_certs_dir = .\nserial = serial.txt\ndefault_md = sha256\n"
        "policy = any\nunique_subject = no\n"
        "[any]\ncommonName = supplied\n[ext]\n"
        "subjectAltName = IP:127.0.0.1,DNS:localhost\n")
    (d / "serial.txt").write_text("1000\n")
    openssl("ca", "-batch", "-config", f"{name}.cnf", "-cert", f"{ca}.pem",
            "-keyfile", f"{ca}.key", "-in", f"{name}.csr", "-out", f"{name}.pem",
            "-startdate", "20200101000000Z", "-enddate", "20200102000000Z",
            "-extensions", "ext", "-notext", cwd=d)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """Two CAs; a server certificate from each; a client certificate from
    each; a server certificate from ca1 that expired in 2020. Paths by
    name: pki["ca1.pem"]."""
    d = tmp_path_factory.mktemp("pki")
    for ca in ("ca1", "ca2"):
        make_ca(d, ca)
    make_cert(d, "server1", "ca1", True)
    make_cert(d, "server2", "ca2", True)
    make_cert(d, "client1", "ca1", False)
    make_cert(d, "client2", "ca2", False)
    # A client's by the older extension alone (no extendedKeyUsage).
    make_cert(d, "nsclient", "ca1", False,
              "subjectAltName=IP:127.0.0.1,DNS:localhost\nnsCertType=client\n")
    make_expired(d, "expired", "ca1")
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


def test_failed_handshakes_are_logged_in_reels_format_at_a_bounded_rate(tmp_path, pki):
    """Each plaintext connection to a TLS port wrote a gRPC line of its own
    ("E1205 ... Handshake failed"), in gRPC's format and without limit."""
    import socket
    server = Reeld(str(tmp_path / "data"), creds=tls_creds(pki),
                   extra=["--tls-cert", str(pki["server1.pem"]),
                          "--tls-key", str(pki["server1.key"])]).start()
    try:
        host, port = server.addr.rsplit(":", 1)
        t0 = time.monotonic()
        for _ in range(200):
            with socket.create_connection((host, int(port))) as s:
                s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                s.recv(100)
        took = time.monotonic() - t0
        time.sleep(0.5)
        lines = server.log().splitlines()
        grpc_lines = [line for line in lines if " grpc: " in line]
        assert grpc_lines, lines[-5:]
        assert all(" WARN grpc: " in line or " INFO grpc: " in line for line in grpc_lines)
        assert not [line for line in lines if line[:1] in ("E", "I", "W") and line[1:5].isdigit()]
        assert len(grpc_lines) <= 10 * (int(took) + 2), (len(grpc_lines), took)
        assert status(server.addr, tls_creds(pki)).version
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
        # An expired certificate, or a leaf as the client CA, would fail
        # every new handshake: refused the same way.
        shutil.copy(pki["expired.pem"], cert)
        shutil.copy(pki["expired.key"], key)
        server.proc.send_signal(signal.SIGHUP)
        wait_log(server, "the certificate expired (not after 2020-01-02 "
                 "00:00:00 UTC)")
        assert server.log().count("TLS not reloaded") == 2
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


def encrypted_key(pki, tmp_path):
    """server1's key under a passphrase."""
    enc = tmp_path / "encrypted.key"
    openssl("pkey", "-in", str(pki["server1.key"]), "-aes256", "-passout",
            "pass:secret", "-out", str(enc), cwd=tmp_path)
    return enc


def test_an_encrypted_key_is_refused_without_asking_for_a_passphrase(tmp_path, pki):
    """OpenSSL asks a terminal for a passphrase unless told there is none:
    a reload on SIGHUP would wait there for ever (no later signal, SIGTERM
    included, would be heard). Here reeld has no terminal and a standard
    input that stays open, where OpenSSL would otherwise read the answer."""
    import shutil
    import signal
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    shutil.copy(pki["server1.pem"], cert)
    shutil.copy(pki["server1.key"], key)
    server = Reeld(str(tmp_path / "data"), creds=tls_creds(pki),
                   extra=["--tls-cert", str(cert), "--tls-key", str(key)],
                   stdin=subprocess.PIPE, new_session=True).start()
    try:
        shutil.copy(encrypted_key(pki, tmp_path), key)
        server.proc.send_signal(signal.SIGHUP)
        wait_log(server, "TLS not reloaded")
        assert "an encrypted key is not supported" in server.log()
        assert "pass phrase" not in server.log()
        assert status(server.addr, tls_creds(pki)).version
        code, took = server.stop(timeout=10)
        assert code == 0 and took < 5, (code, took)
    finally:
        server.kill()
    # At start, and in a client, the same: named, never asked for.
    r = subprocess.run([REELD, "--data-dir", str(tmp_path / "d2"), "--listen",
                        f"127.0.0.1:{free_port()}", "--tls-cert", str(cert),
                        "--tls-key", str(key)], stdin=subprocess.DEVNULL,
                       capture_output=True, text=True, timeout=20,
                       start_new_session=True)
    assert r.returncode == 1 and "an encrypted key is not supported" in r.stderr, r.stderr
    assert "pass phrase" not in r.stderr
    r = subprocess.run([REELCTL, "--tls-ca", str(pki["ca1.pem"]), "--tls-cert",
                        str(pki["server1.pem"]), "--tls-key", str(key), "health"],
                       stdin=subprocess.DEVNULL, capture_output=True, text=True,
                       timeout=20, start_new_session=True)
    assert r.returncode == 1 and "--tls-key (REEL_TLS_KEY): " in r.stderr \
        and "without a passphrase" in r.stderr, r.stderr
    assert "pass phrase" not in r.stderr


def test_reelctl_says_when_reelds_certificate_names_another_host(tmp_path, pki):
    d = tmp_path / "other"
    d.mkdir()
    for f in ("ca1.pem", "ca1.key"):
        (d / f).write_bytes(pki[f].read_bytes())
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-keyout", "other.key", "-out", "other.csr", "-subj",
            "/CN=other", cwd=d)
    (d / "other.ext").write_text("subjectAltName=DNS:other.example\n")
    openssl("x509", "-req", "-in", "other.csr", "-CA", "ca1.pem", "-CAkey", "ca1.key",
            "-CAcreateserial", "-out", "other.pem", "-days", "2", "-extfile",
            "other.ext", cwd=d)
    server = Reeld(str(tmp_path / "data"),
                   extra=["--tls-cert", str(d / "other.pem"),
                          "--tls-key", str(d / "other.key")]).start(wait=False)
    try:
        deadline = time.monotonic() + 10
        while True:
            r = subprocess.run([REELCTL, "--addr", server.addr, "--tls-ca",
                                str(pki["ca1.pem"]), "health"],
                               capture_output=True, text=True, timeout=30)
            if "is not in peer certificate" in r.stderr or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert r.returncode == 1, r.stderr
        assert "reelctl: reeld's certificate does not name the host of " \
               f"{server.addr}" in r.stderr, r.stderr
        assert "is reeld running" not in r.stderr
    finally:
        assert server.stop()[0] == 0


@pytest.mark.parametrize("files, want", [
    (("server1.pem", "server2.key"), "does not match the certificate"),
    (("server1.key", "server1.key"), "no PEM certificate"),
    (("server1.pem", "nonexistent"), "cannot open"),
    (("expired.pem", "expired.key"),
     "expired.pem: the certificate expired (not after 2020-01-02 00:00:00 UTC)"),
    (("server1.pem", "server1.key", "client1.pem"),
     "client1.pem: certificate 1 is not a CA's"),
    # A shell set up for reelctl (REEL_TLS_CERT is its client certificate):
    # reeld served it, and every client refused the handshake.
    (("client1.pem", "client1.key"),
     "client1.pem: not a server's certificate (its extendedKeyUsage, nsCertType or "
     "keyUsage excludes TLS servers: a client's?), which clients refuse from a "
     "server: give reeld its server certificate"),
    (("nsclient.pem", "nsclient.key"), "nsclient.pem: not a server's certificate"),
])
def test_bad_tls_files_refuse_to_start_naming_the_file(tmp_path, pki, files, want):
    cert, key = (str(pki.get(f, tmp_path / f)) for f in files[:2])
    ca = ["--tls-client-ca", str(pki[files[2]])] if len(files) > 2 else []
    r = subprocess.run([REELD, "--data-dir", str(tmp_path / "d"), "--listen",
                        f"127.0.0.1:{free_port()}", "--tls-cert", cert,
                        "--tls-key", key] + ca,
                       capture_output=True, text=True, timeout=20)
    assert r.returncode == 1 and want in r.stderr, r.stderr
    assert "BEGIN" not in r.stderr


# A PEM block whose body is no certificate: a chain cut short, two files
# run together.
DAMAGED = "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n"


def test_a_certificate_file_with_a_damaged_block_is_refused(tmp_path, pki):
    """A good first certificate does not carry a damaged one after it: at
    start, for the server's chain and the client CA file, and on SIGHUP,
    which keeps the certificates that serve."""
    import shutil
    import signal
    cert, key, ca = tmp_path / "cert.pem", tmp_path / "key.pem", tmp_path / "ca.pem"
    cert.write_text(pki["server1.pem"].read_text() + DAMAGED)
    shutil.copy(pki["server1.key"], key)
    ca.write_text(pki["ca1.pem"].read_text() + DAMAGED)
    for extra, flag, path in (([], "--tls-cert", cert),
                              (["--tls-client-ca", str(ca)], "--tls-client-ca", ca)):
        if flag == "--tls-client-ca":
            shutil.copy(pki["server1.pem"], cert)
        r = subprocess.run([REELD, "--data-dir", str(tmp_path / "d"), "--listen",
                            f"127.0.0.1:{free_port()}", "--tls-cert", str(cert),
                            "--tls-key", str(key)] + extra,
                           capture_output=True, text=True, timeout=20)
        want = f"{flag} {path}: PEM block 2 is not a valid certificate (1 read before it)"
        assert r.returncode == 1 and want in r.stderr, r.stderr
    server = Reeld(str(tmp_path / "data"), creds=tls_creds(pki),
                   extra=["--tls-cert", str(cert), "--tls-key", str(key)]).start()
    try:
        cert.write_text(pki["server2.pem"].read_text() + DAMAGED)
        shutil.copy(pki["server2.key"], key)
        server.proc.send_signal(signal.SIGHUP)
        wait_log(server, "TLS not reloaded")
        assert "PEM block 2 is not a valid certificate" in server.log()
        assert status(server.addr, tls_creds(pki)).version   # ca1's still
    finally:
        assert server.stop()[0] == 0


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
        # A client certificate from another CA: the hint asks about it,
        # not for the flags already given.
        other_ca = ctl("--tls-ca", str(pki["ca1.pem"]), "--tls-cert",
                       str(pki["client2.pem"]), "--tls-key", str(pki["client2.key"]),
                       "health")
        assert other_ca.returncode == 1
        assert "is --tls-cert signed by the CA of its --tls-client-ca?" in other_ca.stderr, \
            other_ca.stderr
        plain = ctl("health")
        assert plain.returncode == 1
        assert "if reeld serves TLS there, give --tls-ca" in plain.stderr, plain.stderr
        half = ctl("--tls-cert", str(pki["client1.pem"]), "health")
        assert half.returncode == 2 and "--tls-cert and --tls-key" in half.stderr
        # A CA that is not PEM is named, not left to gRPC's "unreachable".
        not_pem = ctl("--tls-ca", str(pki["client1.key"]) + ".nope", "health")
        assert not_pem.returncode == 1 and "--tls-ca (REEL_TLS_CA): " in not_pem.stderr
        junk = pki["ca1.pem"].parent / "junk.pem"
        junk.write_text("hello\n")
        not_pem = ctl("--tls-ca", str(junk), "health")
        assert not_pem.returncode == 1, not_pem.stderr
        assert not_pem.stderr == f"reelctl: --tls-ca (REEL_TLS_CA): {junk} is not PEM " \
                                 "(no -----BEGIN line)\n"
        bad_token = ctl("--token", "has space", "health")
        assert bad_token.returncode == 2 and "--token (REEL_TOKEN): " in bad_token.stderr
        # PEM in form only: named too, not left to gRPC's log and an
        # "unreachable" server.
        fake = pki["ca1.pem"].parent / "fake.pem"
        fake.write_text("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
        r = ctl("--tls-ca", str(fake), "health")
        assert r.returncode == 1 and "--tls-ca (REEL_TLS_CA): " in r.stderr \
            and "holds no certificate that reads" in r.stderr, r.stderr
        r = ctl("--tls-ca", str(pki["ca1.pem"]), "--tls-cert", str(pki["client1.pem"]),
                "--tls-key", str(pki["server1.key"]), "health")
        assert r.returncode == 1 and "--tls-key (REEL_TLS_KEY): " in r.stderr \
            and "is not the key of" in r.stderr, r.stderr
        r = ctl("--tls-ca", str(pki["ca1.pem"]), "--tls-cert", str(pki["client1.pem"]),
                "--tls-key", str(pki["client1.pem"]), "health")
        assert r.returncode == 1 and "holds no private key" in r.stderr, r.stderr
        # REEL_TLS in words; a value it does not know is refused, never
        # read as off (the token would go in the clear).
        assert ctl("health", env={"REEL_TLS": "TRUE", "REEL_TLS_CA": str(pki["ca1.pem"]),
                                  "REEL_TLS_CERT": str(pki["client1.pem"]),
                                  "REEL_TLS_KEY": str(pki["client1.key"])}).returncode == 0
        r = ctl("health", env={"REEL_TLS": "ture"})
        assert r.returncode == 2 and "REEL_TLS: \"ture\" is not 1, true" in r.stderr, r.stderr
    finally:
        assert server.stop()[0] == 0


# ---- Tokens and scopes -------------------------------------------------------

import glob  # noqa: E402
import re  # noqa: E402
import stat  # noqa: E402
import threading  # noqa: E402

from conftest import ROOT, stream  # noqa: E402
from reel.v1 import journal_pb2, kv_pb2, signals_pb2, wal_pb2  # noqa: E402
from reel.v1 import workspace_pb2  # noqa: E402

TOKEN_RE = re.compile(r"reel_[0-9a-f]{16}_[A-Za-z0-9_-]{43}")


def md(tok):
    return [("authorization", f"Bearer {tok}")]


class Secured:
    """A reeld with --auth token: its first admin token, and tokens made
    through it (every one kept, so the log can be searched for them)."""

    def __init__(self, tmp_path, extra=()):
        self.data = tmp_path / "data"
        self.server = Reeld(str(self.data), extra=["--auth", "token"] + list(extra))
        self.server.start()
        self.admin = (self.data / "admin.token").read_text().strip()
        self.tokens = [self.admin]
        self.ch = self.server.channel()

    def call(self, path, req, resp_cls, tok=None, timeout=5):
        f = unary(self.ch, path, type(req), resp_cls)
        return f(req, metadata=md(tok) if tok else None, timeout=timeout)

    def create(self, tenant="default", scopes=("kv:read",), ttl_ms=0, name="t"):
        r = self.call("/reel.v1.Admin/CreateToken",
                      admin_pb2.CreateTokenRequest(tenant=tenant, scopes=list(scopes),
                                                   name=name, ttl_ms=ttl_ms),
                      admin_pb2.CreateTokenResponse, self.admin)
        self.tokens.append(r.token)
        return r.token, r.info.id

    def revoke(self, tid):
        return self.call("/reel.v1.Admin/RevokeToken",
                         admin_pb2.RevokeTokenRequest(id=tid),
                         admin_pb2.RevokeTokenResponse, self.admin)

    def close(self):
        self.ch.close()
        code, _ = self.server.stop()
        assert code == 0, self.server.log()
        log = self.server.log()
        for t in self.tokens:
            assert t not in log
            assert t[22:] not in log  # the secret alone
        assert not TOKEN_RE.search(log), "a token-shaped string in the log"


def tls_token_reeld(tmp_path, pki):
    """A reeld serving TLS with --auth token, and a Secured that makes
    tokens on it with its first admin token (close its ch when done)."""
    server = Reeld(str(tmp_path / "data"), creds=tls_creds(pki),
                   extra=["--auth", "token", "--tls-cert", str(pki["server1.pem"]),
                          "--tls-key", str(pki["server1.key"])]).start()
    admin = (tmp_path / "data" / "admin.token").read_text().strip()
    s = Secured.__new__(Secured)  # only its token maker, on this server
    s.ch, s.admin, s.tokens = server.channel(tls_creds(pki)), admin, [admin]
    return server, s


@pytest.fixture
def secured(tmp_path):
    s = Secured(tmp_path)
    yield s
    s.close()


def code_of(fn):
    try:
        fn()
    except grpc.RpcError as e:
        return e.code(), e.details()
    return grpc.StatusCode.OK, ""


def test_first_start_writes_an_admin_token_file_only_its_owner_reads(secured):
    f = secured.data / "admin.token"
    assert stat.S_IMODE(f.stat().st_mode) == 0o600
    assert TOKEN_RE.fullmatch(secured.admin)
    log = secured.server.log()
    assert str(f) in log and "readable by its owner only" in log
    # It works, and a restart makes no second one.
    st = secured.call("/reel.v1.Admin/GetStatus", admin_pb2.GetStatusRequest(),
                      admin_pb2.GetStatusResponse, secured.admin)
    assert st.data_dir == str(secured.data)
    assert secured.server.stop()[0] == 0
    secured.server.start()
    assert (secured.data / "admin.token").read_text().strip() == secured.admin
    ls = secured.call("/reel.v1.Admin/ListTokens", admin_pb2.ListTokensRequest(),
                      admin_pb2.ListTokensResponse, secured.admin)
    assert [t.tenant for t in ls.tokens] == ["admin"]


def test_a_new_data_dir_is_its_owners_alone_and_an_open_one_is_warned_of(tmp_path):
    """The files hold every tenant's values in clear."""
    data = tmp_path / "data"
    s = Reeld(str(data)).start()
    assert s.stop()[0] == 0
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    assert "lets others" not in s.log()
    data.chmod(0o755)
    s.start()
    assert s.stop()[0] == 0
    assert f"data dir {data}: mode 0755 lets others than its owner in" in s.log()
    assert stat.S_IMODE(data.stat().st_mode) == 0o755  # left as it is


def test_a_first_admin_token_that_cannot_be_written_is_not_stored(tmp_path):
    """The file comes first: when it cannot be written reeld does not start
    and stores no token, so the next start (the file's way cleared) makes
    one and writes it; a stale file from a first start that never stored
    its token is overwritten."""
    data = tmp_path / "data"
    plain = Reeld(str(data)).start()  # a data dir with no token yet
    assert plain.stop()[0] == 0
    (data / "admin.token" / "in-the-way").mkdir(parents=True)
    r = subprocess.run([REELD, "--data-dir", str(data), "--listen",
                        f"127.0.0.1:{free_port()}", "--auth", "token"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode != 0, r.stderr
    assert "admin.token" in r.stderr, r.stderr
    assert not TOKEN_RE.search(r.stderr)
    (data / "admin.token" / "in-the-way").rmdir()
    (data / "admin.token").rmdir()
    stale = "reel_" + "0" * 16 + "_" + "A" * 43
    (data / "admin.token").write_text(stale + "\n")
    s = Secured(tmp_path)
    try:
        assert s.admin != stale and TOKEN_RE.fullmatch(s.admin)
        ls = s.call("/reel.v1.Admin/ListTokens", admin_pb2.ListTokensRequest(),
                    admin_pb2.ListTokensResponse, s.admin)
        assert len(ls.tokens) == 1 and ls.tokens[0].name == "first admin"
        assert code_of(lambda: s.call("/reel.v1.Admin/GetStatus",
                                      admin_pb2.GetStatusRequest(),
                                      admin_pb2.GetStatusResponse, stale))[0] == \
            grpc.StatusCode.UNAUTHENTICATED
    finally:
        s.close()


def test_no_bad_unknown_or_revoked_token_is_unauthenticated(secured):
    get = lambda tok=None, raw=None: code_of(lambda: unary(  # noqa: E731
        secured.ch, "/reel.v1.KV/GetValue", kv_pb2.GetValueRequest,
        kv_pb2.GetValueResponse)(kv_pb2.GetValueRequest(namespace="n", key="k"),
                                 metadata=raw if raw else (md(tok) if tok else None),
                                 timeout=5))
    tok, tid = secured.create(scopes=["kv:read"])
    assert get(tok)[0] == grpc.StatusCode.OK
    c, d = get()
    assert c == grpc.StatusCode.UNAUTHENTICATED and "no token" in d
    c, d = get(raw=[("authorization", "Basic abc")])
    assert c == grpc.StatusCode.UNAUTHENTICATED and "Bearer" in d
    # Two credentials, even two good ones: which counts is not guessed.
    c, d = get(raw=md(tok) + md(tok))
    assert c == grpc.StatusCode.UNAUTHENTICATED and "sent 2 times" in d
    assert tok[22:] not in d
    c, d = get("reel_nonsense")
    assert c == grpc.StatusCode.UNAUTHENTICATED and "not a reel token" in d
    forged = tok[:-2] + ("A" if tok[-2] != "A" else "B") + tok[-1]
    c, d = get(forged)
    assert c == grpc.StatusCode.UNAUTHENTICATED and forged[22:] not in d
    assert secured.revoke(tid).streams_ended == 0
    c, d = get(tok)
    assert c == grpc.StatusCode.UNAUTHENTICATED and "unknown or revoked" in d
    # Health needs no token (probes).
    import health_pb2
    h = unary(secured.ch, "/grpc.health.v1.Health/Check",
              health_pb2.HealthCheckRequest, health_pb2.HealthCheckResponse)
    assert h(health_pb2.HealthCheckRequest(), timeout=5).status == \
        health_pb2.HealthCheckResponse.SERVING


def test_an_expired_token_is_unauthenticated(secured):
    tok, _ = secured.create(scopes=["kv:read"], ttl_ms=300)
    time.sleep(0.4)  # the TTL itself is what is tested
    c, d = code_of(lambda: secured.call("/reel.v1.KV/GetValue",
                                        kv_pb2.GetValueRequest(namespace="n", key="k"),
                                        kv_pb2.GetValueResponse, tok))
    assert c == grpc.StatusCode.UNAUTHENTICATED and "expired" in d


def test_a_token_without_the_scope_is_denied_naming_it(secured):
    tok, tid = secured.create(scopes=["kv:read"])
    c, d = code_of(lambda: secured.call(
        "/reel.v1.KV/SetValue", kv_pb2.SetValueRequest(namespace="n", key="k", value="1"),
        kv_pb2.SetValueResponse, tok))
    assert c == grpc.StatusCode.PERMISSION_DENIED
    assert "needs scope kv:write" in d and tid in d
    # Status for any token, without the data dir.
    st = secured.call("/reel.v1.Admin/GetStatus", admin_pb2.GetStatusRequest(),
                      admin_pb2.GetStatusResponse, tok)
    assert st.version and st.data_dir == ""
    # Token methods are admin's.
    c, d = code_of(lambda: secured.call("/reel.v1.Admin/ListTokens",
                                        admin_pb2.ListTokensRequest(),
                                        admin_pb2.ListTokensResponse, tok))
    assert c == grpc.StatusCode.PERMISSION_DENIED and "needs scope admin" in d


def test_bad_create_requests_name_the_field(secured):
    for req, want in [
        (admin_pb2.CreateTokenRequest(tenant="default", scopes=["kv:nope"]), "scopes[0]"),
        (admin_pb2.CreateTokenRequest(tenant="default"), "scopes: empty"),
        (admin_pb2.CreateTokenRequest(tenant="Acme!", scopes=["kv:read"]), "tenant"),
        (admin_pb2.CreateTokenRequest(tenant="a" * 64, scopes=["kv:read"]),
         "tenant: 64 bytes, expected 1 to 63"),
        (admin_pb2.CreateTokenRequest(tenant="default", scopes=["kv:read"], ttl_ms=-1),
         "ttl_ms"),
    ]:
        c, d = code_of(lambda: secured.call("/reel.v1.Admin/CreateToken", req,
                                            admin_pb2.CreateTokenResponse,
                                            secured.admin))
        assert c == grpc.StatusCode.INVALID_ARGUMENT and want in d, d
    c, d = code_of(lambda: secured.revoke("0123456789abcdef"))
    assert c == grpc.StatusCode.NOT_FOUND and "0123456789abcdef" in d


def test_a_ttl_past_100_years_is_refused_and_a_restart_still_starts(secured):
    """created_ms + ttl_ms once overflowed: the token was born expired and
    its record, with a negative expiry, kept reeld from ever starting again."""
    for ttl in (2**63 - 1, 3155760000000 + 1):
        c, d = code_of(lambda: secured.create(scopes=["kv:read"], ttl_ms=ttl))
        assert c == grpc.StatusCode.INVALID_ARGUMENT, d
        assert f"ttl_ms: {ttl} is not in 0..3155760000000" in d, d
    tok, _ = secured.create(scopes=["kv:read"], ttl_ms=3155760000000)
    get = lambda: secured.call(  # noqa: E731
        "/reel.v1.KV/GetValue", kv_pb2.GetValueRequest(namespace="n", key="k"),
        kv_pb2.GetValueResponse, tok)
    assert code_of(get)[0] == grpc.StatusCode.OK
    assert secured.server.stop()[0] == 0
    secured.server.start()
    assert code_of(get)[0] == grpc.StatusCode.OK


def test_without_auth_no_token_is_made_listed_or_revoked(tmp_path):
    """A token planted while nothing is checked would be a working admin
    credential once --auth token is on, and would keep that first start
    from writing admin.token."""
    data = tmp_path / "data"
    plain = Reeld(str(data)).start()
    try:
        ch = plain.channel()
        for path, req, resp in [
            ("CreateToken", admin_pb2.CreateTokenRequest(tenant="admin", scopes=["admin"]),
             admin_pb2.CreateTokenResponse),
            ("ListTokens", admin_pb2.ListTokensRequest(), admin_pb2.ListTokensResponse),
            ("RevokeToken", admin_pb2.RevokeTokenRequest(id="0123456789abcdef"),
             admin_pb2.RevokeTokenResponse),
        ]:
            c, d = code_of(lambda: unary(ch, f"/reel.v1.Admin/{path}", type(req),
                                         resp)(req, timeout=5))
            assert c == grpc.StatusCode.FAILED_PRECONDITION, (path, c, d)
            assert "tokens need reeld --auth token" in d, d
        ch.close()
        r = subprocess.run([REELCTL, "--addr", plain.addr, "token", "create",
                            "--tenant", "admin", "--scope", "admin"],
                           capture_output=True, text=True, timeout=20)
        assert r.returncode != 0 and "--auth token" in r.stderr, r.stderr
        assert not TOKEN_RE.search(r.stdout)
    finally:
        assert plain.stop()[0] == 0
    s = Secured(tmp_path)  # the same data dir: its first start with auth
    try:
        assert TOKEN_RE.fullmatch(s.admin)
        ls = s.call("/reel.v1.Admin/ListTokens", admin_pb2.ListTokensRequest(),
                    admin_pb2.ListTokensResponse, s.admin)
        assert [t.name for t in ls.tokens] == ["first admin"]
    finally:
        s.close()


def test_a_tenant_token_holding_admin_sees_no_data_dir(secured):
    tok, _ = secured.create(tenant="acme", scopes=["admin"])
    st = secured.call("/reel.v1.Admin/GetStatus", admin_pb2.GetStatusRequest(),
                      admin_pb2.GetStatusResponse, tok)
    assert st.version and st.data_dir == "" and st.disk_free_bytes == 0
    assert st.connections == 0 and st.max_connections == 0
    # reelctl leaves them out, rather than show an empty dir and zeros.
    ctl = [REELCTL, "--addr", secured.server.addr, "--token", tok, "status",
           "--interval", "0"]
    r = subprocess.run(ctl, capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and "version:" in r.stdout, r
    assert "data dir:" not in r.stdout and "disk:" not in r.stdout, r.stdout
    r = subprocess.run(ctl[:-3] + ["--json"] + ctl[-3:], capture_output=True, text=True,
                       timeout=30)
    got = json.loads(r.stdout)
    assert "version" in got and "revision" in got, got
    for hidden in ("data_dir", "disk_free_bytes", "disk_low", "connections",
                   "max_connections"):
        assert hidden not in got, (hidden, got)
    for tenant in ("admin", "default"):
        tok, _ = secured.create(tenant=tenant, scopes=["admin"])
        st = secured.call("/reel.v1.Admin/GetStatus", admin_pb2.GetStatusRequest(),
                          admin_pb2.GetStatusResponse, tok)
        assert st.data_dir == str(secured.data), tenant
        assert st.disk_free_bytes > 0 and not st.disk_low, tenant
        assert st.connections >= 1 and st.max_connections == 10000, tenant


def test_a_tenants_status_shows_no_live_counts_of_other_tenants_streams(secured):
    """open_calls, kv_watchers and wal_subscribers moved as another tenant
    opened watches and tails: a kv:read token of globex saw acme's."""
    acme = secured.create("acme", KV_RW + ["wal:read"])[0]
    globex = secured.create("globex", ["kv:read"])[0]
    kv(secured, acme).set("orders", "k", "1")
    get = lambda tok: secured.call(  # noqa: E731
        "/reel.v1.Admin/GetStatus", admin_pb2.GetStatusRequest(),
        admin_pb2.GetStatusResponse, tok)
    held = [kv(secured, acme).watch("orders"), kv(secured, acme).watch("orders", "k"),
            stream(secured.ch, "/reel.v1.Wal/SubscribeEvents",
                   wal_pb2.SubscribeEventsRequest, wal_pb2.Event)(
                wal_pb2.SubscribeEventsRequest(), metadata=md(acme), timeout=60)]
    try:
        deadline = time.monotonic() + 10
        while True:
            adm = get(secured.admin)
            if adm.kv_watchers >= 2 and adm.wal_subscribers >= 1:
                break
            assert time.monotonic() < deadline, adm
        assert adm.open_calls >= 3, adm
        st = get(globex)
        assert (st.kv_watchers, st.wal_subscribers, st.run_subscribers,
                st.open_calls) == (0, 0, 0, 0), st
        # Server-wide (docs/security.md): the global revision and the
        # writer's figures, as GetHead's head.
        assert st.revision >= 1 and st.commits >= 1, st
        # reelctl leaves them out for such a token, as the connections.
        ctl = [REELCTL, "--addr", secured.server.addr, "--token", globex, "status",
               "--interval", "0"]
        r = subprocess.run(ctl, capture_output=True, text=True, timeout=30)
        assert r.returncode == 0 and "revision:" in r.stdout, r
        for line in ("watchers:", "subscribers:", "open calls:"):
            assert line not in r.stdout, r.stdout
        r = subprocess.run(ctl[:-3] + ["--json"] + ctl[-3:], capture_output=True,
                           text=True, timeout=30)
        got = json.loads(r.stdout)
        assert got["revision"] >= 1, got
        for hidden in ("kv_watchers", "run_subscribers", "wal_subscribers",
                       "open_calls"):
            assert hidden not in got, (hidden, got)
        # An admin token's reelctl shows them.
        r = subprocess.run(ctl[:3] + ["--token", secured.admin] + ctl[5:],
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 0 and "watchers:     2 KV" in r.stdout, r.stdout
    finally:
        for h in held:
            h.cancel()


@pytest.mark.parametrize("scopes, want", [
    ("kv:read,,kv:write", "--scope: scope 2 is empty"),
    (",kv:read", "--scope: scope 1 is empty"),
    ("kv:read,", "--scope: scope 2 is empty"),
])
def test_reelctl_token_create_names_an_empty_scope(secured, scopes, want):
    r = subprocess.run([REELCTL, "--addr", secured.server.addr, "--token",
                        secured.admin, "token", "create", "--tenant", "acme",
                        "--scope", scopes], capture_output=True, text=True,
                       timeout=20)
    assert r.returncode == 2 and want in r.stderr, (r.returncode, r.stderr)


# The generated matrix: every rpc of every service in api/reel/v1/*.proto.

def every_rpc():
    out = []
    for path in sorted(glob.glob(os.path.join(ROOT, "api/reel/v1/*.proto"))):
        text = open(path).read()
        for svc, body in re.findall(r"service (\w+) \{(.*?)\n\}", text, re.S):
            for name, streaming in re.findall(
                    r"rpc (\w+)\s*\(\s*\w+\s*\)\s*returns\s*\(\s*(stream\s+)?\w+",
                    body):
                out.append((f"/reel.v1.{svc}/{name}", bool(streaming)))
    return out


RPCS = every_rpc()
ANY_TOKEN = {"/reel.v1.Admin/GetStatus"}


def raw_call(ch, path, streaming, metadata, timeout=2):
    """Calls path with an empty request; the status code (OK when a
    stream's first message came) and details."""
    ident = lambda b: b  # noqa: E731
    try:
        if streaming:
            it = ch.unary_stream(path, request_serializer=ident,
                                 response_deserializer=ident)(
                b"", metadata=metadata, timeout=timeout)
            next(it)
            it.cancel()
        else:
            ch.unary_unary(path, request_serializer=ident,
                           response_deserializer=ident)(
                b"", metadata=metadata, timeout=timeout)
    except StopIteration:
        return grpc.StatusCode.OK, ""
    except grpc.RpcError as e:
        return e.code(), e.details() or ""
    return grpc.StatusCode.OK, ""


def test_the_matrix_every_rpc_refuses_what_it_must(secured):
    assert len(RPCS) >= 30
    revoked, rid = secured.create(scopes=["kv:read", "kv:write", "journal:read",
                                          "journal:write", "signals:send",
                                          "signals:await", "wal:read",
                                          "wal:consume"])
    secured.revoke(rid)
    # Tokens with one scope each: every scoped rpc must refuse the one whose
    # scope it does not need (workspace:read's methods get wal:consume's).
    narrow, _ = secured.create(scopes=["workspace:read"])
    other, _ = secured.create(scopes=["wal:consume"])
    reads_ws = {"/reel.v1.Workspace/" + m for m in
                ("GetArtifact", "StatArtifact", "ListArtifacts", "WatchArtifacts",
                 "GetWorkspaceUsage")}
    bad = "reel_0123456789abcdef_" + "A" * 43
    for path, streaming in RPCS:
        for name, meta in [("no token", None), ("malformed", md("x")),
                           ("unknown", md(bad)), ("revoked", md(revoked))]:
            c, d = raw_call(secured.ch, path, streaming, meta)
            assert c == grpc.StatusCode.UNAUTHENTICATED, (path, name, c, d)
            assert "reel_" not in d.replace("reel_<id>_<secret>", "")
        c, d = raw_call(secured.ch, path, streaming,
                        md(other if path in reads_ws else narrow))
        if path in ANY_TOKEN:
            assert c == grpc.StatusCode.OK, (path, c, d)
        else:
            assert c == grpc.StatusCode.PERMISSION_DENIED, (path, c, d)
            assert "needs scope " in d, (path, d)
        # Every rpc has a row: the admin token is never denied.
        c, d = raw_call(secured.ch, path, streaming, md(secured.admin), timeout=1)
        assert c not in (grpc.StatusCode.PERMISSION_DENIED,
                         grpc.StatusCode.UNAUTHENTICATED), (path, c, d)


def test_revocation_ends_open_watch_subscription_and_await_within_a_second(secured):
    tok, tid = secured.create(scopes=["kv:read", "wal:read", "journal:write",
                                      "signals:await"])
    run = secured.call("/reel.v1.Journal/BeginRun",
                       journal_pb2.BeginRunRequest(app="a", user="u", session="s",
                                                   invocation_id="i", lease_owner="w",
                                                   lease_ttl_ms=60000),
                       journal_pb2.Run, tok)
    watch = stream(secured.ch, "/reel.v1.KV/WatchValue", kv_pb2.WatchValueRequest,
                   kv_pb2.ValueEvent)(kv_pb2.WatchValueRequest(namespace="n", key="k"),
                                      metadata=md(tok), timeout=30)
    sub = stream(secured.ch, "/reel.v1.Wal/SubscribeEvents",
                 wal_pb2.SubscribeEventsRequest, wal_pb2.Event)(
        wal_pb2.SubscribeEventsRequest(), metadata=md(tok), timeout=30)
    await_ = unary(secured.ch, "/reel.v1.Signals/AwaitSignal",
                   signals_pb2.AwaitSignalRequest,
                   signals_pb2.AwaitSignalResponse).future(
        signals_pb2.AwaitSignalRequest(run_id=run.run_id, name="go",
                                       lease_epoch=run.lease_epoch, timeout_ms=20000),
        metadata=md(tok), timeout=30)
    next(watch)  # BOOTSTRAP_DONE: the watch is open
    next(sub)    # the BeginRun event: the subscription is open
    # The await is parked once the server counts it among its open calls.
    deadline = time.monotonic() + 5
    while secured.call("/reel.v1.Admin/GetStatus", admin_pb2.GetStatusRequest(),
                       admin_pb2.GetStatusResponse, secured.admin).open_calls < 3:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    t0 = time.monotonic()
    ended = secured.revoke(tid).streams_ended
    assert ended == 3
    for it in (watch, sub):
        with pytest.raises(grpc.RpcError) as e:
            for _ in it:
                pass
        assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert "revoked" in e.value.details()
    with pytest.raises(grpc.RpcError) as e:
        await_.result(timeout=5)
    assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert time.monotonic() - t0 < 1.0


def test_a_revocation_while_a_stream_starts_still_ends_it(tmp_path, monkeypatch):
    """A revocation that comes after a stream's token was checked but before
    the stream is open (its subscribe held 200 ms here) found no stream to
    end; the stream checks its token again as it opens, and ends."""
    monkeypatch.setenv("REEL_TEST_FAULTS", "wal.subscribe_pause")
    s = Secured(tmp_path)
    try:
        tok, tid = s.create(scopes=["wal:read", "wal:consume"])
        sub = stream(s.ch, "/reel.v1.Wal/SubscribeEvents",
                     wal_pb2.SubscribeEventsRequest, wal_pb2.Event)(
            wal_pb2.SubscribeEventsRequest(consumer="c1"), metadata=md(tok),
            timeout=30)
        got = {}

        def drain():
            try:
                for _ in sub:
                    pass
                got["code"] = grpc.StatusCode.OK
            except grpc.RpcError as e:
                got["code"], got["details"] = e.code(), e.details()
        t = threading.Thread(target=drain, daemon=True)
        t.start()
        # The call is in: authorized, its consumer stored, and the 200 ms
        # hold before its stream opens begun.
        deadline = time.monotonic() + 10
        while not any(c.name == "c1" for c in s.call(
                "/reel.v1.Wal/ListConsumers", wal_pb2.ListConsumersRequest(),
                wal_pb2.ListConsumersResponse, s.admin).consumers):
            assert time.monotonic() < deadline
            time.sleep(0.005)
        t0 = time.monotonic()
        # Not open yet, so none to end: unless the revocation's own write
        # took past the 200 ms hold, and then it ends the stream itself.
        assert s.revoke(tid).streams_ended in (0, 1)
        t.join(timeout=5)
        assert not t.is_alive(), "the stream outlived its token's revocation"
        assert got["code"] == grpc.StatusCode.UNAUTHENTICATED, got
        assert "revoked" in got["details"] and tid in got["details"], got
        assert time.monotonic() - t0 < 1.0
    finally:
        s.close()


def test_a_tenants_run_listing_never_names_anothers_run(secured):
    """Past 1,024 apps a tenant's ListRuns scans every tenant's runs, and a
    page that steps over 10,000 others' ends there: its cursor, the last
    run it passed, was another tenant's run id. It is sealed now, follows
    to every run of the tenant's once, and reads back only in this reeld."""
    a, _ = secured.create(tenant="acme", scopes=["journal:read", "journal:write"])
    b, _ = secured.create(tenant="bolt", scopes=["journal:read", "journal:write"])
    begin = unary(secured.ch, "/reel.v1.Journal/BeginRun", journal_pb2.BeginRunRequest,
                  journal_pb2.Run)
    runs = unary(secured.ch, "/reel.v1.Journal/ListRuns", journal_pb2.ListRunsRequest,
                 journal_pb2.ListRunsResponse)

    def many(tok, reqs):
        out, pending = [], []
        for req in reqs:
            pending.append(begin.future(req, metadata=md(tok), timeout=60))
            if len(pending) == 256:
                out += [f.result().run_id for f in pending]
                pending = []
        return out + [f.result().run_id for f in pending]

    mine = many(a, (journal_pb2.BeginRunRequest(app=f"a{i}", user="u", session="s",
                                                invocation_id="i", lease_owner="w")
                    for i in range(1025)))
    theirs = set(many(b, (journal_pb2.BeginRunRequest(app="b", user="u", session="s",
                                                      invocation_id=f"i{i}", lease_owner="w")
                          for i in range(10050))))
    mine += many(a, [journal_pb2.BeginRunRequest(app="a0", user="u", session="s",
                                                 invocation_id="last", lease_owner="w")])
    got, cursors, req = [], [], journal_pb2.ListRunsRequest(limit=1000)
    while True:
        page = runs(req, metadata=md(a), timeout=60)
        got += [r.run_id for r in page.runs]
        cursors.append(page.next_start_after)
        if not page.more:
            break
        req.start_after = page.next_start_after
    assert got == sorted(mine)   # in run_id order, each once
    assert not theirs & set(got)
    assert not any(c in theirs or any(t in c for t in theirs) for c in cursors)
    sealed = [c for c in cursors if c.startswith("~")]
    assert sealed, cursors       # a page did end among bolt's runs
    assert secured.server.stop()[0] == 0
    secured.server.start()
    with pytest.raises(grpc.RpcError) as e:
        runs(journal_pb2.ListRunsRequest(start_after=sealed[0]), metadata=md(a), timeout=10)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "start_after: not a cursor this reeld gave out" in e.value.details()


def test_an_expired_tokens_open_watch_ends_within_a_second_of_expiry(secured):
    ttl = 1500
    # t0 before the token exists: it expires ttl after a moment past t0.
    t0 = time.monotonic()
    tok, _ = secured.create(scopes=["kv:read"], ttl_ms=ttl)
    watch = stream(secured.ch, "/reel.v1.KV/WatchValue", kv_pb2.WatchValueRequest,
                   kv_pb2.ValueEvent)(kv_pb2.WatchValueRequest(namespace="n", key="k"),
                                      metadata=md(tok), timeout=30)
    next(watch)
    with pytest.raises(grpc.RpcError) as e:
        for _ in watch:
            pass
    took = time.monotonic() - t0
    assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "expired" in e.value.details()
    # Never before the expiry (0.2 s for the clocks' reading); within its
    # second (the sweep's) after, plus the create's answer and room for a
    # slow ASan build on a busy machine.
    assert ttl / 1000 - 0.2 <= took < ttl / 1000 + 2.5, took


def test_reelctl_token_create_ls_revoke(secured):
    from conftest import REELCTL

    def ctl(*args, tok=None):
        env = {"PATH": "/usr/bin:/bin"}
        if tok:
            env["REEL_TOKEN"] = tok
        return subprocess.run([REELCTL, "--addr", secured.server.addr] + list(args),
                              capture_output=True, text=True, timeout=30, env=env)

    r = ctl("--json", "token", "create", "--tenant", "default", "--scope",
            "kv:read,kv:write", "--name", "ci", "--ttl", "1h", tok=secured.admin)
    assert r.returncode == 0, r.stderr
    import json
    made = json.loads(r.stdout)
    secured.tokens.append(made["token"])
    assert made["tenant"] == "default" and made["scopes"] == ["kv:read", "kv:write"]
    assert made["name"] == "ci" and made["expires"] is not None
    assert made["token"] not in r.stderr
    # The new token works through --token and REEL_TOKEN.
    assert ctl("--token", made["token"], "kv", "set", "n", "k", "1").returncode == 0
    got = ctl("kv", "get", "n", "k", tok=made["token"])
    assert got.returncode == 0, got.stderr
    # Text: the token alone on stdout.
    r = ctl("token", "create", "--tenant", "default", "--scope", "kv:read",
            tok=secured.admin)
    assert r.returncode == 0 and TOKEN_RE.fullmatch(r.stdout.strip())
    secured.tokens.append(r.stdout.strip())
    ls = ctl("--json", "token", "ls", "--tenant", "default", tok=secured.admin)
    ids = [json.loads(line)["id"] for line in ls.stdout.splitlines()]
    assert made["id"] in ids and len(ids) == 2
    assert "reel_" not in ls.stdout
    rv = ctl("token", "revoke", made["id"], tok=secured.admin)
    assert rv.returncode == 0 and made["id"] in rv.stdout
    denied = ctl("kv", "get", "n", "k", tok=made["token"])
    assert denied.returncode == 1 and "UNAUTHENTICATED" in denied.stderr
    assert "asks for a token" not in denied.stderr   # one was given
    # None at all: the refusal says which option gives one.
    none = ctl("kv", "get", "n", "k")
    assert none.returncode == 1 and "UNAUTHENTICATED" in none.stderr
    assert (f"reelctl: reeld at {secured.server.addr} asks for a token: give --token "
            "(or REEL_TOKEN)") in none.stderr, none.stderr
    bad = ctl("token", "create", "--tenant", "default", "--scope", "kv:read",
              tok=made["token"])
    assert bad.returncode == 1 and made["token"] not in bad.stderr



def test_reelctl_ws_uploads_and_reads_with_a_token(secured, tmp_path):
    """Every reelctl call carries the token, the upload (a client-streaming
    call of its own in the C client) among them: it used to go without, so
    `ws put` was UNAUTHENTICATED under --auth token."""
    from conftest import REELCTL
    tok, _ = secured.create(tenant="acme", scopes=("workspace:read", "workspace:write"))
    src = tmp_path / "in.bin"
    src.write_bytes(os.urandom(300_000))

    def ctl(*args):
        return subprocess.run([REELCTL, "--addr", secured.server.addr] + list(args),
                              capture_output=True, text=True, timeout=30,
                              env={"PATH": "/usr/bin:/bin", "REEL_TOKEN": tok})

    put = ctl("ws", "put", "docs", "a/b.bin", str(src))
    assert put.returncode == 0, put.stderr
    out = tmp_path / "out.bin"
    got = ctl("ws", "get", "docs", "a/b.bin", "-o", str(out))
    assert got.returncode == 0, got.stderr
    assert out.read_bytes() == src.read_bytes()
    assert "a/b.bin" in ctl("ws", "ls", "docs").stdout
    # Errors name the tenant's namespace as it gave it, never the stored
    # prefix.
    again = ctl("ws", "put", "--create", "docs", "a/b.bin", str(src))
    assert again.returncode == 1 and "artifact docs/a/b.bin already exists" in again.stderr, \
        again.stderr
    stale = ctl("ws", "rm", "--if-version", "9", "docs", "a/b.bin")
    missing = ctl("ws", "stat", "docs", "nope")
    for r in (again, stale, missing):
        assert r.returncode == 1 and "::" not in r.stderr and "acme" not in r.stderr, r.stderr
    assert ctl("ws", "rm", "docs", "a/b.bin").returncode == 0
    # Without the token the upload is refused, and says so.
    bare = subprocess.run([REELCTL, "--addr", secured.server.addr, "ws", "put", "docs",
                           "c", str(src)], capture_output=True, text=True, timeout=30,
                          env={"PATH": "/usr/bin:/bin"})
    assert bare.returncode == 1 and "UNAUTHENTICATED" in bare.stderr, bare.stderr


def test_reel_sink_reaches_a_tls_reeld_with_a_token_from_its_variables(tmp_path, pki):
    from reeltest import binary
    sink_bin = binary("REEL_SINK", "sink/reel-sink")
    if not os.path.exists(sink_bin):
        pytest.skip("reel-sink not built")
    server, s = tls_token_reeld(tmp_path, pki)
    try:
        tok = s.admin
        cfg = tmp_path / "sinks.json"
        cfg.write_text('{"sinks": [{"name": "hook", "type": "webhook", '
                       '"url": "http://127.0.0.1:1/", '
                       '"secrets": ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"]}]}')

        def status(env):
            return subprocess.run([sink_bin, "status", "--reel", server.addr,
                                   "--config", str(cfg)], capture_output=True,
                                  text=True, timeout=30,
                                  env=dict({"PATH": "/usr/bin:/bin"}, **env))
        ok = status({"REEL_TLS_CA": str(pki["ca1.pem"]), "REEL_TOKEN": tok})
        assert ok.returncode == 0, ok.stderr
        assert "hook" in ok.stdout
        no_token = status({"REEL_TLS_CA": str(pki["ca1.pem"])})
        assert no_token.returncode == 1 and "UNAUTHENTICATED" in no_token.stderr + no_token.stdout
        assert tok not in ok.stdout + ok.stderr + no_token.stdout + no_token.stderr
        # Plaintext to a TLS reeld reads as a closed socket: the hint says
        # which variables to set.
        plain = status({"REEL_TOKEN": tok})
        assert plain.returncode == 1 and "closed the connection: if reeld serves TLS " \
            "there, give REEL_TLS_CA (or REEL_TLS=1)" in plain.stderr, plain.stderr
        # A file given wrong is named as its user gave it: the variable.
        bad_key = status({"REEL_TLS_CA": str(pki["ca1.pem"]), "REEL_TOKEN": tok,
                          "REEL_TLS_CERT": str(pki["client1.pem"]),
                          "REEL_TLS_KEY": str(pki["client2.key"])})
        assert bad_key.returncode == 2, bad_key.stderr
        assert bad_key.stderr == (
            f"reel-sink: connecting to reel: REEL_TLS_KEY: {pki['client2.key']} "
            f"is not the key of the certificate in {pki['client1.pem']}\n"), bad_key.stderr
    finally:
        s.ch.close()
        assert server.stop()[0] == 0
    assert tok not in server.log()


@pytest.mark.parametrize("scopes, revoke, want", [
    (["wal:read", "wal:consume", "kv:read", "kv:write"], True, "UNAUTHENTICATED"),
    (["wal:read", "wal:consume"], False, "PERMISSION_DENIED"),
])
def test_reel_sink_run_stops_on_a_refused_token_instead_of_trying_forever(
        secured, tmp_path, scopes, revoke, want):
    """Asking again does not make a token right: reel-sink run stops (exit
    1) naming the code, before and after it subscribes, like reel-reactor."""
    from reeltest import binary
    sink_bin = binary("REEL_SINK", "sink/reel-sink")
    if not os.path.exists(sink_bin):
        pytest.skip("reel-sink not built")
    tok, tid = secured.create(scopes=scopes)
    if revoke:
        secured.revoke(tid)
    cfg = tmp_path / "sinks.json"
    cfg.write_text('{"sinks": [{"name": "hook", "type": "webhook", '
                   '"url": "http://127.0.0.1:1/", "from": "now", '
                   '"secrets": ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"]}]}')
    r = subprocess.run([sink_bin, "run", "--reel", secured.server.addr,
                        "--config", str(cfg)], capture_output=True, text=True,
                       timeout=30, env={"PATH": "/usr/bin:/bin", "REEL_TOKEN": tok})
    assert r.returncode == 1, r.stderr
    assert "sink hook: stopped" in r.stderr and want in r.stderr, r.stderr
    assert "trying again" not in r.stderr, r.stderr
    assert tok not in r.stderr + r.stdout



def test_reel_sink_stops_when_its_token_cannot_store_a_dead_letter(secured, tmp_path):
    """A token without kv:write subscribes fine, but a dead letter cannot be
    stored: the sink stops naming the scope (it used to try again every
    second, for ever, delivering nothing more)."""
    from reeltest import binary
    sink_bin = binary("REEL_SINK", "sink/reel-sink")
    if not os.path.exists(sink_bin):
        pytest.skip("reel-sink not built")
    writer, _ = secured.create(scopes=["kv:read", "kv:write"])
    kv(secured, writer).set("orders", "o1", "1")
    tok, _ = secured.create(scopes=["wal:read", "wal:consume", "kv:read"])
    from sinkutil import Receiver
    rx = Receiver()
    rx.plan(lambda d: 500)
    cfg = tmp_path / "sinks.json"
    cfg.write_text('{"sinks": [{"name": "hook", "type": "webhook", '
                   '"url": "%s", "from": "oldest", '
                   '"retry_schedule_ms": [50], "subjects": ["kv.orders.>"], '
                   '"secrets": ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"]}]}' % rx.url)
    try:
        r = subprocess.run([sink_bin, "run", "--reel", secured.server.addr,
                            "--config", str(cfg)], capture_output=True, text=True,
                           timeout=30, env={"PATH": "/usr/bin:/bin", "REEL_TOKEN": tok})
        time.sleep(0.5)
        asked = len(rx.all())
    finally:
        rx.close()
    assert r.returncode == 1, r.stderr
    assert "sink hook: stopped: storing the dead letter of revision" in r.stderr, r.stderr
    assert "PERMISSION_DENIED" in r.stderr and "kv:write" in r.stderr, r.stderr
    assert "trying again" not in r.stderr, r.stderr
    # The schedule allows 2 attempts; none starts once the sink has stopped.
    assert asked == 2 and "attempt 3" not in r.stderr, (asked, r.stderr)

# ---- Tenants -------------------------------------------------------------------

KV_RW = ["kv:read", "kv:write"]


def kv(secured, tok):
    ch = secured.ch

    class K:
        def set(self, ns, key, value):
            return unary(ch, "/reel.v1.KV/SetValue", kv_pb2.SetValueRequest,
                         kv_pb2.SetValueResponse)(
                kv_pb2.SetValueRequest(namespace=ns, key=key, value=value),
                metadata=md(tok), timeout=5)

        def get(self, ns, key):
            return unary(ch, "/reel.v1.KV/GetValue", kv_pb2.GetValueRequest,
                         kv_pb2.GetValueResponse)(
                kv_pb2.GetValueRequest(namespace=ns, key=key),
                metadata=md(tok), timeout=5)

        def ls(self, ns):
            return unary(ch, "/reel.v1.KV/ListValues", kv_pb2.ListValuesRequest,
                         kv_pb2.ListValuesResponse)(
                kv_pb2.ListValuesRequest(namespace=ns, include_deleted=True),
                metadata=md(tok), timeout=5)

        def history(self, ns, key):
            return unary(ch, "/reel.v1.KV/ValueHistory",
                         kv_pb2.ValueHistoryRequest, kv_pb2.ValueHistoryResponse)(
                kv_pb2.ValueHistoryRequest(namespace=ns, key=key),
                metadata=md(tok), timeout=5)

        def delete(self, ns, key):
            return unary(ch, "/reel.v1.KV/DeleteValue", kv_pb2.DeleteValueRequest,
                         kv_pb2.DeleteValueResponse)(
                kv_pb2.DeleteValueRequest(namespace=ns, key=key),
                metadata=md(tok), timeout=5)

        def watch(self, ns, key=">"):
            return stream(ch, "/reel.v1.KV/WatchValue", kv_pb2.WatchValueRequest,
                          kv_pb2.ValueEvent)(
                kv_pb2.WatchValueRequest(namespace=ns, key=key),
                metadata=md(tok), timeout=60)
    return K()


def test_tenants_use_the_same_names_without_meeting(secured):
    a = kv(secured, secured.create("acme", KV_RW)[0])
    b = kv(secured, secured.create("beta", KV_RW)[0])
    d = kv(secured, secured.create("default", KV_RW)[0])
    r = a.set("orders", "o1", '"acme"')
    assert r.entry.namespace == "orders"          # never the stored prefix
    b.set("orders", "o1", '"beta"')
    d.set("orders", "o1", '"default"')
    for who, want in ((a, "acme"), (b, "beta"), (d, "default")):
        got = who.get("orders", "o1")
        assert got.found and got.entry.value == f'"{want}"'
        assert got.entry.namespace == "orders"
        ls = who.ls("orders")
        assert [(e.key, e.value) for e in ls.entries] == [("o1", f'"{want}"')]
        h = who.history("orders", "o1")
        assert [e.value for e in h.events] == [f'"{want}"']
        assert all(e.namespace == "orders" for e in h.events)
    # A key only beta has: acme's answer is that of a name nobody used.
    b.set("orders", "only-beta", "1")
    assert a.get("orders", "only-beta") == a.get("orders", "never-written")
    assert not a.get("orders", "only-beta").found
    assert a.delete("orders", "only-beta").existed is False
    assert b.get("orders", "only-beta").found
    # The admin tenant sees everything, as stored.
    adm = kv(secured, secured.admin)
    assert adm.get("::acme:orders", "o1").entry.value == '"acme"'
    assert adm.get("orders", "o1").entry.value == '"default"'


@pytest.mark.parametrize("ns", ["::beta:orders", "::acme:orders", "::", "::x"])
def test_no_tenant_input_can_spell_a_tenant_prefix(secured, ns):
    kv(secured, secured.create("beta", KV_RW)[0]).set("orders", "k", "1")
    for tenant in ("acme", "default"):
        k = kv(secured, secured.create(tenant, KV_RW)[0])
        for op in (lambda: k.get(ns, "k"), lambda: k.set(ns, "k", "2"),
                   lambda: k.ls(ns), lambda: next(k.watch(ns))):
            c, d = code_of(op)
            assert c == grpc.StatusCode.INVALID_ARGUMENT, (tenant, c, d)
            assert 'starting with "::" are reserved' in d


def test_a_tenants_namespace_limit_counts_its_prefix_and_says_so(secured):
    k = kv(secured, secured.create("acme", KV_RW)[0])
    c, d = code_of(lambda: k.set("n" * 256, "k", "1"))
    assert c == grpc.StatusCode.INVALID_ARGUMENT
    assert "must be 1-249 bytes for tenant acme (got 256)" in d
    assert k.set("n" * 249, "k", "1").entry.namespace == "n" * 249


def test_a_tenant_whose_prefix_fills_the_namespace_limit_gets_no_token(tmp_path):
    """Its namespaces are stored as "::T:<ns>", so a tenant of 20 bytes
    under --kv-max-namespace-bytes 16 once got a token every KV and
    workspace call of which said "must be 1-0 bytes"."""
    t20, t12 = "t" * 20, "t" * 12
    s = Secured(tmp_path, extra=["--kv-max-namespace-bytes", "16"])
    try:
        c, d = code_of(lambda: s.create(t20, KV_RW))
        assert c == grpc.StatusCode.INVALID_ARGUMENT, (c, d)
        assert d == (f'tenant: "{t20}" is 20 bytes, and the prefix "::{t20}:" '
                     "its namespaces are stored under takes 23, leaving 0 bytes "
                     "for a namespace under --kv-max-namespace-bytes 16 (at "
                     "least 1 needed): a tenant may be at most 12 bytes there"), d
        r = subprocess.run([REELCTL, "--addr", s.server.addr, "--token", s.admin,
                            "token", "create", "--tenant", t20, "--scope", "admin"],
                           capture_output=True, text=True, timeout=20)
        assert r.returncode != 0 and "--kv-max-namespace-bytes 16" in r.stderr, r
        assert not TOKEN_RE.search(r.stdout)
        ls = s.call("/reel.v1.Admin/ListTokens", admin_pb2.ListTokensRequest(),
                    admin_pb2.ListTokensResponse, s.admin)
        assert t20 not in [t.tenant for t in ls.tokens]
        # The longest that fits has 1 byte of namespace; default and admin
        # get no prefix, so the limit is all theirs.
        k = kv(s, s.create(t12, KV_RW)[0])
        assert k.set("n", "k", "1").entry.namespace == "n"
        c, d = code_of(lambda: k.set("nn", "k", "1"))
        assert c == grpc.StatusCode.INVALID_ARGUMENT
        assert f"must be 1-1 bytes for tenant {t12} (got 2)" in d, d
        assert kv(s, s.create("default", KV_RW)[0]).set("n" * 16, "k", "1")
        # A token made under a higher limit, the limit lowered after: each
        # call says why, never "1-0 bytes".
        s.server.stop()
        s.server.extra = [a for a in s.server.extra if a not in ("--kv-max-namespace-bytes", "16")]
        s.server.start()
        old = s.create(t20, KV_RW + ["workspace:read"])[0]
        assert kv(s, old).set("n", "k", "1").entry.namespace == "n"
        s.server.stop()
        s.server.extra += ["--kv-max-namespace-bytes", "16"]
        s.server.start()
        want = (f"namespace: tenant {t20}'s name leaves no room under "
                "--kv-max-namespace-bytes 16: its names are stored behind a "
                'prefix of 23 bytes ("::", the tenant, ":")')
        c, d = code_of(lambda: kv(s, old).get("n", "k"))
        assert (c, d) == (grpc.StatusCode.INVALID_ARGUMENT, want)
        c, d = code_of(lambda: unary(
            s.ch, "/reel.v1.Workspace/StatArtifact", workspace_pb2.StatArtifactRequest,
            workspace_pb2.StatArtifactResponse)(
            workspace_pb2.StatArtifactRequest(namespace="n", key="k"),
            metadata=md(old), timeout=5))
        assert (c, d) == (grpc.StatusCode.INVALID_ARGUMENT, want)
    finally:
        s.close()


def test_a_tenants_errors_name_its_names_and_bytes_as_it_gave_them(secured):
    """A bad namespace byte is counted from the tenant's first byte (not
    from its hidden prefix), and a key of its own holding its mark is not
    cut in an error."""
    ws_rw = ["workspace:read", "workspace:write"]
    stat = unary(secured.ch, "/reel.v1.Workspace/StatArtifact",
                 workspace_pb2.StatArtifactRequest,
                 workspace_pb2.StatArtifactResponse)
    want = "namespace: byte 1 is not in [A-Za-z0-9_:/-]"
    for tenant in ("default", "acme", "longtenantname"):
        tok = secured.create(tenant, KV_RW + ws_rw)[0]
        c, d = code_of(lambda: kv(secured, tok).get("a b", "k"))
        assert (c, d) == (grpc.StatusCode.INVALID_ARGUMENT, want), tenant
        c, d = code_of(lambda: stat(workspace_pb2.StatArtifactRequest(
            namespace="a b", key="k"), metadata=md(tok), timeout=5))
        assert (c, d) == (grpc.StatusCode.INVALID_ARGUMENT, want), tenant
    acme = secured.create("acme", ws_rw)[0]
    put = secured.ch.stream_unary(
        "/reel.v1.Workspace/PutArtifact",
        request_serializer=workspace_pb2.PutArtifactRequest.SerializeToString,
        response_deserializer=workspace_pb2.PutArtifactResponse.FromString)
    put(iter([workspace_pb2.PutArtifactRequest(header=workspace_pb2.ArtifactHeader(
        namespace="w", key="::acme:x")),
        workspace_pb2.PutArtifactRequest(chunk=b"x")]), metadata=md(acme), timeout=10)
    c, d = code_of(lambda: stat(workspace_pb2.StatArtifactRequest(
        namespace="w", key="::acme:x", version=9), metadata=md(acme), timeout=5))
    assert c == grpc.StatusCode.NOT_FOUND
    assert d.startswith("artifact w/::acme:x: version 9 was never written"), d


ALL_SCOPES = ["kv:read", "kv:write", "journal:read", "journal:write",
              "signals:send", "signals:await", "wal:read", "wal:consume"]


def test_a_tenant_reaches_every_service_but_the_token_methods(secured):
    tok, tid = secured.create("acme", ALL_SCOPES + ["admin"])
    for path, streaming in RPCS:
        c, d = raw_call(secured.ch, path, streaming, md(tok), timeout=1)
        if path.startswith("/reel.v1.Admin/") and path != "/reel.v1.Admin/GetStatus":
            # Even with scope admin: tokens are the admin tenant's business.
            assert c == grpc.StatusCode.PERMISSION_DENIED, (path, c, d)
            assert "is not a tenant's to call" in d and tid in d
        else:
            assert c != grpc.StatusCode.PERMISSION_DENIED, (path, d)


def test_the_matrix_other_tenants_resources_reveal_nothing(secured):
    """Every KV rpc, called by tenant acme on names only beta has: the same
    answer as for names nobody has."""
    b = kv(secured, secured.create("beta", KV_RW)[0])
    b.set("orders", "k", '"secret"')
    b.set("orders", "k", '"secret2"')
    a_tok = secured.create("acme", KV_RW)[0]
    a = kv(secured, a_tok)
    pairs = [
        (lambda ns: a.get(ns, "k")),
        (lambda ns: a.ls(ns)),
        (lambda ns: a.history(ns, "k")),
    ]
    for op in pairs:
        assert op("orders") == op("never-used")
    # A watch of beta's namespace sees only acme's own bootstrap.
    w = a.watch("orders")
    first = next(w)
    assert first.type == kv_pb2.ValueEvent.BOOTSTRAP_DONE
    w.cancel()
    # Writes land in acme's own namespace; beta's value is untouched.
    r = a.set("orders", "k", '"acme"')
    assert r.entry.version == 1 and r.prev_version == 0
    assert b.get("orders", "k").entry.value == '"secret2"'
    assert "secret" not in secured.server.log()


def test_wal_and_watches_stay_within_a_tenant_under_mixed_concurrent_load(secured):
    toks = {t: secured.create(t, KV_RW + ["wal:read"])[0]
            for t in ("acme", "beta", "default")}
    clients = {t: kv(secured, tok) for t, tok in toks.items()}
    watches = {t: c.watch("orders") for t, c in clients.items()}
    for w in watches.values():
        assert next(w).type == kv_pb2.ValueEvent.BOOTSTRAP_DONE
    default_wal = stream(secured.ch, "/reel.v1.Wal/SubscribeEvents",
                         wal_pb2.SubscribeEventsRequest, wal_pb2.Event)(
        wal_pb2.SubscribeEventsRequest(subject_pattern="kv.>"),
        metadata=md(toks["default"]), timeout=60)
    admin_wal = stream(secured.ch, "/reel.v1.Wal/SubscribeEvents",
                       wal_pb2.SubscribeEventsRequest, wal_pb2.Event)(
        wal_pb2.SubscribeEventsRequest(subject_pattern="kv.>"),
        metadata=md(secured.admin), timeout=60)
    N = 40
    errors = []

    def load(tenant):
        try:
            for i in range(N):
                clients[tenant].set("orders", f"k{i % 5}", f'"{tenant}-{i}"')
        except Exception as e:  # noqa: BLE001
            errors.append((tenant, e))

    threads = [threading.Thread(target=load, args=(t,)) for t in toks]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for tenant, w in watches.items():
        seen = []
        for ev in w:
            seen.append(ev)
            if len(seen) == N:
                break
        assert all(ev.value.startswith(f'"{tenant}-') for ev in seen), tenant
        assert all(ev.namespace == "orders" for ev in seen)
        revs = [ev.revision for ev in seen]
        assert revs == sorted(revs) and len(set(revs)) == N  # increasing
        w.cancel()
    # The default tenant's tail: its own N events only; admin's: all 3N.
    got = []
    for ev in default_wal:
        if ev.type == wal_pb2.Event.VALUE_CHANGED:
            got.append(ev)
            if len(got) == N:
                break
    assert all(ev.value.value.startswith('"default-') for ev in got)
    assert all(ev.subject.startswith("kv.orders.") for ev in got)
    everything = []
    for ev in admin_wal:
        if ev.type == wal_pb2.Event.VALUE_CHANGED:
            everything.append(ev)
            if len(everything) == 3 * N:
                break
    tenants_seen = {ev.value.value.split("-")[0].strip('"') for ev in everything}
    assert tenants_seen == {"acme", "beta", "default"}
    # Nothing more for default: the next event it gets is one of its own.
    clients["acme"].set("orders", "late", '"acme-late"')
    clients["default"].set("orders", "late", '"default-late"')
    for ev in default_wal:
        if ev.type == wal_pb2.Event.VALUE_CHANGED:
            assert ev.value.value == '"default-late"'
            break
    default_wal.cancel()
    admin_wal.cancel()


def test_a_change_reaches_each_watcher_of_its_key_named_as_its_tenant_sees_it(secured):
    """reeld encodes an event once for every watcher of its key, and once
    more for the watchers that see it through a tenant (the namespace
    without the tenant's prefix): each tenant watcher, on WatchValue and
    on WatchValues, gets the tenant's name, admin the stored one, and
    another tenant's watch of the same name nothing."""
    acme_tok = secured.create("acme", KV_RW)[0]
    acme, beta = kv(secured, acme_tok), kv(secured, secured.create("beta", KV_RW)[0])
    admin = kv(secured, secured.admin)
    watches = [acme.watch("orders", "k") for _ in range(3)]
    many = stream(secured.ch, "/reel.v1.KV/WatchValues", kv_pb2.WatchValuesRequest,
                  kv_pb2.WatchValuesEvent)(
        kv_pb2.WatchValuesRequest(watches=[
            kv_pb2.WatchValueRequest(namespace="orders", key="k"),
            kv_pb2.WatchValueRequest(namespace="orders", key="*")]),
        metadata=md(acme_tok), timeout=60)
    theirs = beta.watch("orders", "k")
    stored = admin.watch("::acme:orders", "k")
    for w in watches + [theirs, stored]:
        assert next(w).type == kv_pb2.ValueEvent.BOOTSTRAP_DONE
    booted = set()
    while booted != {0, 1}:
        ev = next(many)
        assert ev.event.type == kv_pb2.ValueEvent.BOOTSTRAP_DONE
        booted.update([ev.watch] + list(ev.also))
    for i in range(3):
        acme.set("orders", "k", f'"v{i}"')
    for w in watches:
        got = [next(w) for _ in range(3)]
        assert [(e.namespace, e.key, e.value) for e in got] == \
            [("orders", "k", f'"v{i}"') for i in range(3)]
        w.cancel()
    seen = []
    while len(seen) < 6:
        ev = next(many)
        for index in [ev.watch] + list(ev.also):
            seen.append((index, ev.event.namespace, ev.event.value))
    assert sorted(seen) == sorted((w, "orders", f'"v{i}"') for w in (0, 1) for i in range(3))
    many.cancel()
    got = [next(stored) for _ in range(3)]
    assert [(e.namespace, e.value) for e in got] == \
        [("::acme:orders", f'"v{i}"') for i in range(3)]
    stored.cancel()
    beta.set("orders", "k", '"beta"')
    ev = next(theirs)
    assert (ev.namespace, ev.value) == ("orders", '"beta"')
    theirs.cancel()


def test_a_tenants_wal_tail_holds_its_own_kv_events_as_it_named_them(secured):
    acme = secured.create("acme", KV_RW + ["wal:read"])[0]
    beta = secured.create("beta", KV_RW + ["wal:read"])[0]
    dflt = secured.create("default", KV_RW + ["wal:read"])[0]
    tail = lambda tok, pattern="": stream(  # noqa: E731
        secured.ch, "/reel.v1.Wal/SubscribeEvents", wal_pb2.SubscribeEventsRequest,
        wal_pb2.Event)(wal_pb2.SubscribeEventsRequest(subject_pattern=pattern),
                       metadata=md(tok), timeout=30)
    kv(secured, dflt).set("orders", "k", '"default"')
    kv(secured, beta).set("orders", "k", '"beta"')
    kv(secured, acme).set("orders", "k", '"acme"')
    kv(secured, acme).set("other", "k", '"acme-other"')
    kv(secured, beta).set("orders", "k2", '"beta-2"')
    kv(secured, acme).set("orders", "end", '"acme-end"')
    for pattern, want in [("", ['"acme"', '"acme-other"', '"acme-end"']),
                          (">", ['"acme"', '"acme-other"', '"acme-end"']),
                          ("kv.>", ['"acme"', '"acme-other"', '"acme-end"']),
                          ("kv.orders.>", ['"acme"', '"acme-end"']),
                          ("*.orders.*", ['"acme"', '"acme-end"']),
                          ("kv.*.k", ['"acme"', '"acme-other"'])]:
        it = tail(acme, pattern)
        got = []
        for ev in it:
            if ev.type == wal_pb2.Event.PROGRESS:
                break
            got.append(ev)
        it.cancel()
        assert [e.value.value for e in got] == want, pattern
        for e in got:
            assert "::" not in e.subject and e.subject.startswith("kv.")
            assert e.value.namespace in ("orders", "other")
            assert e.subject == f"kv.{e.value.namespace}.{e.value.key}"
    # Refused: a namespace token spelling a prefix.
    c, d = code_of(lambda: next(tail(acme, "kv.::beta:orders.>")))
    assert c == grpc.StatusCode.INVALID_ARGUMENT and "reserved for tenants" in d


class Tenant:
    """Journal, signals and WAL calls with one token."""

    def __init__(self, secured, tok):
        self.s, self.tok = secured, tok

    def u(self, path, req, resp):
        return unary(self.s.ch, path, type(req), resp)(
            req, metadata=md(self.tok), timeout=10)

    def st(self, path, req, resp, timeout=30):
        return stream(self.s.ch, path, type(req), resp)(
            req, metadata=md(self.tok), timeout=timeout)

    def begin(self, app="shop", user="u", session="s", inv="i1", owner="w"):
        return self.u("/reel.v1.Journal/BeginRun", journal_pb2.BeginRunRequest(
            app=app, user=user, session=session, invocation_id=inv,
            lease_owner=owner), journal_pb2.Run)

    def append(self, run, kind="step", payload="{}"):
        return self.u("/reel.v1.Journal/Append", journal_pb2.AppendRequest(
            run_id=run.run_id, lease_epoch=run.lease_epoch, kind=kind,
            payload=payload), journal_pb2.AppendResponse)

    def end(self, run):
        return self.u("/reel.v1.Journal/EndRun", journal_pb2.EndRunRequest(
            run_id=run.run_id, lease_epoch=run.lease_epoch,
            status=journal_pb2.Run.COMPLETED), journal_pb2.Run)

    def signal(self, run_id="", name="go", **kw):
        return self.u("/reel.v1.Signals/SendSignal", signals_pb2.SendSignalRequest(
            run_id=run_id, name=name, payload="{}", **kw),
            signals_pb2.SendSignalResponse)

    def runs(self, **kw):
        return self.u("/reel.v1.Journal/ListRuns", journal_pb2.ListRunsRequest(**kw),
                      journal_pb2.ListRunsResponse)

    def consumers(self, **kw):
        return self.u("/reel.v1.Wal/ListConsumers", wal_pb2.ListConsumersRequest(**kw),
                      wal_pb2.ListConsumersResponse)

    def tail(self, pattern="", consumer="", timeout=30):
        return self.st("/reel.v1.Wal/SubscribeEvents", wal_pb2.SubscribeEventsRequest(
            subject_pattern=pattern, consumer=consumer), wal_pb2.Event, timeout)


def first_or_code(it):
    """The first message of a stream, or the stream's error."""
    try:
        m = next(it)
        it.cancel()
        return grpc.StatusCode.OK, m
    except grpc.RpcError as e:
        return e.code(), e.details()


def test_tenants_use_the_same_apps_runs_signals_and_consumers_without_meeting(secured):
    a = Tenant(secured, secured.create("acme", ALL_SCOPES)[0])
    b = Tenant(secured, secured.create("beta", ALL_SCOPES)[0])
    d = Tenant(secured, secured.create("default", ALL_SCOPES)[0])
    runs = {}
    for name, t in (("acme", a), ("beta", b), ("default", d)):
        r = t.begin()                        # the same (app, user, session, inv)
        assert not r.resumed and r.app == "shop" and r.next_seq == 1, name
        t.append(r, payload=f'{{"who": "{name}"}}')
        # A send by session finds the tenant's own run.
        sent = t.signal(app="shop", user="u", session="s", name="go")
        assert sent.signal.run_id == r.run_id
        runs[name] = r
    assert len({r.run_id for r in runs.values()}) == 3
    for name, t in (("acme", a), ("beta", b), ("default", d)):
        ls = t.runs(app="shop")
        assert [r.run_id for r in ls.runs] == [runs[name].run_id]
        assert [r.run_id for r in t.runs().runs] == [runs[name].run_id]
        assert all(r.app == "shop" for r in ls.runs)
        # By status, without an app: its own apps' indexes (the default
        # tenant's: every app outside the tenants').
        assert [r.run_id for r in t.runs(status=journal_pb2.Run.RUNNING).runs] == \
            [runs[name].run_id], name
        assert list(t.runs(status=journal_pb2.Run.FAILED).runs) == [], name
        rec = t.u("/reel.v1.Journal/ListRunsToRecover",
                  journal_pb2.ListRunsToRecoverRequest(),
                  journal_pb2.ListRunsToRecoverResponse)
        assert all(r.run_id == runs[name].run_id for r in rec.runs)
        got = t.u("/reel.v1.Journal/ReadJournal", journal_pb2.ReadJournalRequest(
            run_id=runs[name].run_id), journal_pb2.ReadJournalResponse)
        assert [e.payload for e in got.entries] == [f'{{"who": "{name}"}}']
        sigs = t.u("/reel.v1.Signals/ListSignals", signals_pb2.ListSignalsRequest(
            run_id=runs[name].run_id), signals_pb2.ListSignalsResponse)
        assert [g.name for g in sigs.signals] == ["go"]
    # Durable consumers of the same name, attached at once, never busy.
    tails = {n: t.tail(pattern="run.>", consumer="worker")
             for n, t in (("acme", a), ("beta", b), ("default", d))}
    for n, it in tails.items():
        ev = next(it)
        assert ev.subject == f"run.{runs[n].run_id}.RUNNING", (n, ev.subject)
        assert ev.run.app == "shop"
    for n, t in (("acme", a), ("beta", b), ("default", d)):
        cs = t.consumers()
        assert [(c.name, c.subject_pattern, c.active) for c in cs.consumers] == \
            [("worker", "run.>", True)], n
        assert cs.next_start_after == "worker" and not cs.more
    for it in tails.values():
        it.cancel()
    # GetStatus, which any token may call, shows a tenant its own only.
    for n, t in (("acme", a), ("beta", b), ("default", d)):
        st = t.u("/reel.v1.Admin/GetStatus", admin_pb2.GetStatusRequest(),
                 admin_pb2.GetStatusResponse)
        assert [c.name for c in st.consumers] == ["worker"], (n, st.consumers)
        assert st.consumer_count == 1, n
    st = secured.call("/reel.v1.Admin/GetStatus", admin_pb2.GetStatusRequest(),
                      admin_pb2.GetStatusResponse, secured.admin)
    assert {c.name for c in st.consumers} == \
        {"worker", "::acme:worker", "::beta:worker"} and st.consumer_count == 3
    # admin sees all three, as stored.
    adm = Tenant(secured, secured.admin)
    assert {c.name for c in adm.consumers().consumers} == \
        {"worker", "::acme:worker", "::beta:worker"}
    assert {r.app for r in adm.runs().runs} == {"shop", "::acme:shop", "::beta:shop"}
    # An ended run of each: each lists its own by that status.
    for n, t in (("acme", a), ("beta", b), ("default", d)):
        t.u("/reel.v1.Journal/EndRun", journal_pb2.EndRunRequest(
            run_id=runs[n].run_id, lease_epoch=runs[n].lease_epoch,
            status=journal_pb2.Run.FAILED), journal_pb2.Run)
    for n, t in (("acme", a), ("beta", b), ("default", d)):
        assert [r.run_id for r in t.runs(status=journal_pb2.Run.FAILED).runs] == \
            [runs[n].run_id], n
        assert list(t.runs(status=journal_pb2.Run.RUNNING).runs) == [], n
    # A tenant's app limit counts its prefix.
    c, det = code_of(lambda: a.begin(app="x" * 256))
    assert c == grpc.StatusCode.INVALID_ARGUMENT
    assert "must be 1-249 bytes for tenant acme (got 256)" in det
    # No input of acme or default spells beta's prefix.
    for t in (a, d):
        for op in (lambda: t.begin(app="::beta:shop"),
                   lambda: t.runs(app="::beta:shop"),
                   lambda: t.signal(app="::beta:shop", user="u", session="s"),
                   lambda: next(t.tail(consumer="::beta:worker")),
                   lambda: next(t.tail(pattern="run.::beta:x.>"))):
            c, det = code_of(op)
            assert c == grpc.StatusCode.INVALID_ARGUMENT, (c, det)
            assert 'starting with "::" are reserved' in det, det
        assert [c.name for c in t.consumers(start_after="::beta:").consumers] \
            in ([], ["worker"])
    c, det = code_of(lambda: next(a.tail(consumer="a:b")))
    assert c == grpc.StatusCode.INVALID_ARGUMENT and "[A-Za-z0-9_.-]" in det


def test_consumer_listings_page_through_a_tenants_own_names_only(secured):
    """ListConsumers pages by name: the default tenant's page never holds a
    tenant's consumer (they sort between digits and letters: "::"), and a
    tenant's ends with its own names."""
    a = Tenant(secured, secured.create("acme", ALL_SCOPES)[0])
    b = Tenant(secured, secured.create("beta", ALL_SCOPES)[0])
    d = Tenant(secured, secured.create("default", ALL_SCOPES)[0])
    for t, names in ((d, ["0a", "1b", "x", "y"]), (a, ["m1", "m2", "m3"]),
                     (b, ["0a", "n"])):
        for name in names:
            it = t.tail(consumer=name)
            next(it)
            it.cancel()

    def pages(t, limit):
        got, after = [], ""
        for _ in range(20):
            r = t.consumers(start_after=after, limit=limit)
            got.append([c.name for c in r.consumers])
            if not r.more:
                return got
            after = r.next_start_after
        raise AssertionError(got)
    for limit in (1, 2, 3, 100):
        assert sum(pages(d, limit), []) == ["0a", "1b", "x", "y"], limit
        assert sum(pages(a, limit), []) == ["m1", "m2", "m3"], limit
        assert sum(pages(b, limit), []) == ["0a", "n"], limit
    assert [len(p) for p in pages(a, 2)] == [2, 1]
    adm = Tenant(secured, secured.admin)
    assert [c.name for c in adm.consumers().consumers] == \
        ["0a", "1b", "::acme:m1", "::acme:m2", "::acme:m3", "::beta:0a",
         "::beta:n", "x", "y"]


def test_a_tenants_consumer_counts_only_its_own_events_pending(secured):
    """A tenant's durable consumer without a pattern said pending = every
    event past its cursor, other tenants' included, though its tail only
    ever delivers its own: an idle tenant read thousands pending. Now it
    counts its own, as its tail would deliver them."""
    a_tok = secured.create("acme", ALL_SCOPES)[0]
    b_tok = secured.create("beta", ALL_SCOPES)[0]
    a = Tenant(secured, a_tok)
    it = a.tail(consumer="c")
    next(it)
    it.cancel()

    def put(tok, key):
        secured.call("/reel.v1.KV/SetValue",
                     kv_pb2.SetValueRequest(namespace="n", key=key, value="1"),
                     kv_pb2.SetValueResponse, tok)
    before = a.consumers().consumers[0].pending
    for i in range(5):
        put(b_tok, f"b{i}")
    put(a_tok, "a1")
    put(secured.admin, "d1")
    put(a_tok, "a2")
    c = a.consumers().consumers[0]
    assert c.name == "c" and c.pending_exact, c
    assert c.pending == before + 2, (before, c)
    assert c.behind_revisions >= 8, c  # revisions stay global


def test_a_tenants_consumer_errors_name_it_as_given(secured):
    a = Tenant(secured, secured.create("acme", ALL_SCOPES)[0])
    first = a.tail(consumer="worker")
    next(first)
    c, d = first_or_code(a.tail(consumer="worker", timeout=5))
    assert c == grpc.StatusCode.FAILED_PRECONDITION
    assert 'consumer "worker" already has an active subscriber' in d, d
    second = a.st("/reel.v1.Wal/SubscribeEvents", wal_pb2.SubscribeEventsRequest(
        consumer="worker", takeover=True), wal_pb2.Event, timeout=10)
    next(second)
    with pytest.raises(grpc.RpcError) as e:
        for _ in first:
            pass
    assert 'consumer "worker" was taken over' in e.value.details()
    assert "::" not in e.value.details()
    second.cancel()
    c, d = code_of(lambda: a.u("/reel.v1.Wal/AckEvents", wal_pb2.AckEventsRequest(
        consumer="nobody", revision=1), wal_pb2.AckEventsResponse))
    assert "nobody" in d and "::" not in d, d


def test_one_tenant_cannot_take_every_durable_consumer(tmp_path):
    s = Secured(tmp_path, extra=["--wal-max-consumers", "4",
                                 "--wal-max-consumers-per-tenant", "2"])
    try:
        a = Tenant(s, s.create("acme", ALL_SCOPES)[0])
        b = Tenant(s, s.create("beta", ALL_SCOPES)[0])
        d = Tenant(s, s.create("default", ALL_SCOPES)[0])
        for name in ("one", "two"):
            assert first_or_code(a.tail(consumer=name))[0] == grpc.StatusCode.OK
        c, det = first_or_code(a.tail(consumer="three", timeout=5))
        assert c == grpc.StatusCode.RESOURCE_EXHAUSTED, (c, det)
        assert ('consumer "three": its tenant has 2 durable consumers, at most 2 '
                "(--wal-max-consumers-per-tenant)") in det, det
        assert "::" not in det
        # Another tenant still gets its own, and the default tenant (the
        # operator's) is held by the global cap only.
        assert first_or_code(b.tail(consumer="one"))[0] == grpc.StatusCode.OK
        assert first_or_code(d.tail(consumer="x"))[0] == grpc.StatusCode.OK
        c, det = first_or_code(d.tail(consumer="y", timeout=5))
        assert c == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "at most 4 (--wal-max-consumers)" in det, det
        assert [x.name for x in a.consumers().consumers] == ["one", "two"]
        deadline = time.monotonic() + 5  # the subscribers' ends
        while any(x.active for x in a.consumers().consumers):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        a.u("/reel.v1.Wal/DeleteConsumer", wal_pb2.DeleteConsumerRequest(
            name="one"), wal_pb2.DeleteConsumerResponse)
        assert first_or_code(a.tail(consumer="three"))[0] == grpc.StatusCode.OK
    finally:
        s.close()


def test_one_tenant_cannot_take_every_upload_place(tmp_path):
    s = Secured(tmp_path, extra=["--workspace-max-uploads-per-tenant", "1"])
    put = s.ch.stream_unary(
        "/reel.v1.Workspace/PutArtifact",
        request_serializer=workspace_pb2.PutArtifactRequest.SerializeToString,
        response_deserializer=workspace_pb2.PutArtifactResponse.FromString)
    release = threading.Event()

    def upload(tok, key, hold=False):
        def gen():
            yield workspace_pb2.PutArtifactRequest(
                header=workspace_pb2.ArtifactHeader(namespace="docs", key=key))
            yield workspace_pb2.PutArtifactRequest(chunk=b"x" * 10)
            if hold:
                release.wait(60)
        return put.future(gen(), metadata=md(tok), timeout=60)

    try:
        acme = s.create("acme", ["workspace:read", "workspace:write"])[0]
        beta = s.create("beta", ["workspace:read", "workspace:write"])[0]
        held = upload(acme, "held", hold=True)
        # Until the held one has begun (slow under ASan on a busy machine);
        # a held upload that ended instead says why.
        deadline = time.monotonic() + 30
        while True:
            second = upload(acme, "second")
            try:
                second.result()
                assert not held.done(), held.exception()
                assert time.monotonic() < deadline
                time.sleep(0.05)
                continue
            except grpc.RpcError as e:
                assert e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, e
                assert e.details() == ("uploads: its tenant has 1 under way, at "
                                       "most --workspace-max-uploads-per-tenant 1")
                break
        assert upload(beta, "b").result().artifact.size == 10
        release.set()
        assert held.result().artifact.size == 10
        assert upload(acme, "third").result().artifact.size == 10
    finally:
        release.set()
        s.close()


def runnable(t, app, inv):
    """A run of t's in app, made RUNNABLE (claimable) by the signal it
    waits on."""
    r = t.begin(app=app, inv=inv)
    t.u("/reel.v1.Journal/SuspendRun", journal_pb2.SuspendRunRequest(
        run_id=r.run_id, lease_epoch=r.lease_epoch, waiting_on="go"),
        journal_pb2.Run)
    assert t.signal(r.run_id, name="go").run_status == journal_pb2.Run.RUNNABLE
    return r


def test_claim_next_run_claims_from_the_tenants_own_app(secured):
    a = Tenant(secured, secured.create("acme", ALL_SCOPES)[0])
    b = Tenant(secured, secured.create("beta", ALL_SCOPES)[0])

    def claim(t, wait_ms=0):
        return t.u("/reel.v1.Journal/ClaimNextRun", journal_pb2.ClaimNextRunRequest(
            app="jobs", lease_owner="w2", wait_ms=wait_ms),
            journal_pb2.ClaimNextRunResponse)
    rb = runnable(b, "jobs", "b1")
    # beta's claimable run in "jobs" is not acme's to claim, at once or
    # by waiting; acme's own is, shown as it named the app.
    assert not claim(a).found
    got = {}
    waiter = threading.Thread(target=lambda: got.update(r=claim(a, wait_ms=5000)))
    waiter.start()
    rb2 = runnable(b, "jobs", "b2")
    ra = runnable(a, "jobs", "a1")
    waiter.join()
    assert got["r"].found and got["r"].run.run_id == ra.run_id
    assert got["r"].run.app == "jobs" and got["r"].run.lease_owner == "w2"
    claimed = {claim(b).run.run_id, claim(b).run.run_id}
    assert claimed == {rb.run_id, rb2.run_id}
    assert not claim(a).found and not claim(b).found


def test_the_matrix_another_tenants_runs_signals_and_consumers_reveal_nothing(secured):
    """Every rpc of Journal, Signals and Wal, called by tenant acme on what
    only beta has (its run, its session, its consumer), answers as for
    what nobody has: the same code and the same words."""
    b = Tenant(secured, secured.create("beta", ALL_SCOPES)[0])
    a = Tenant(secured, secured.create("acme", ALL_SCOPES)[0])
    rb = b.begin(app="shop-b", session="sb")
    b.append(rb, payload='{"secret": 1}')
    b.signal(rb.run_id, name="go")
    # A second run of beta's, claimable (RUNNABLE: woken by its signal), and
    # a scheduled signal it may cancel.
    rb2 = b.begin(app="shop-b", session="sb", inv="i2")
    b.u("/reel.v1.Journal/SuspendRun", journal_pb2.SuspendRunRequest(
        run_id=rb2.run_id, lease_epoch=rb2.lease_epoch, waiting_on="wake"),
        journal_pb2.Run)
    b.signal(rb2.run_id, name="wake")
    b.signal(rb.run_id, name="later", signal_id="sig-1",
             deliver_at_ms=int(time.time() * 1000) + 3600_000)
    it = b.tail(consumer="beta-only")
    next(it)
    it.cancel()
    missing = "0" * len(rb.run_id)
    J, S, W = "/reel.v1.Journal/", "/reel.v1.Signals/", "/reel.v1.Wal/"

    def by_run(path, req_cls, resp_cls, **kw):
        return lambda rid: a.u(path, req_cls(run_id=rid, **kw), resp_cls)

    def by_run_stream(path, req_cls, resp_cls, **kw):
        return lambda rid: first_or_code(a.st(path, req_cls(run_id=rid, **kw),
                                              resp_cls, timeout=5))
    run_calls = {
        J + "Heartbeat": by_run(J + "Heartbeat", journal_pb2.HeartbeatRequest,
                                journal_pb2.Run, lease_epoch=1),
        J + "Append": by_run(J + "Append", journal_pb2.AppendRequest,
                             journal_pb2.AppendResponse, lease_epoch=1,
                             kind="step", payload="{}"),
        J + "ReadJournal": by_run(J + "ReadJournal", journal_pb2.ReadJournalRequest,
                                  journal_pb2.ReadJournalResponse),
        J + "SubscribeRun": by_run_stream(J + "SubscribeRun",
                                          journal_pb2.SubscribeRunRequest,
                                          journal_pb2.JournalEntry),
        J + "EndRun": by_run(J + "EndRun", journal_pb2.EndRunRequest, journal_pb2.Run,
                             lease_epoch=1, status=journal_pb2.Run.CANCELLED),
        J + "SuspendRun": by_run(J + "SuspendRun", journal_pb2.SuspendRunRequest,
                                 journal_pb2.Run, lease_epoch=1, waiting_on="go"),
        J + "GetRun": by_run(J + "GetRun", journal_pb2.GetRunRequest, journal_pb2.Run),
        J + "ClaimRun": by_run(J + "ClaimRun", journal_pb2.ClaimRunRequest,
                               journal_pb2.Run, lease_owner="thief"),
        S + "SendSignal": by_run(S + "SendSignal", signals_pb2.SendSignalRequest,
                                 signals_pb2.SendSignalResponse, name="go"),
        S + "AwaitSignal": by_run(S + "AwaitSignal", signals_pb2.AwaitSignalRequest,
                                  signals_pb2.AwaitSignalResponse, name="go",
                                  lease_epoch=1),
        S + "ListSignals": by_run(S + "ListSignals", signals_pb2.ListSignalsRequest,
                                  signals_pb2.ListSignalsResponse),
        S + "CancelSignal": by_run(S + "CancelSignal", signals_pb2.CancelSignalRequest,
                                   signals_pb2.Signal, signal_id="sig-1"),
        J + "ResumeRun": by_run(J + "ResumeRun", journal_pb2.ResumeRunRequest,
                                journal_pb2.Run),
    }
    checked = set()
    for path, op in run_calls.items():
        theirs, nobodys = code_of(lambda: op(rb.run_id)), code_of(lambda: op(missing))
        if path.endswith("SubscribeRun"):
            theirs, nobodys = op(rb.run_id), op(missing)
        assert theirs[0] == grpc.StatusCode.NOT_FOUND, (path, theirs)
        assert theirs[0] == nobodys[0], (path, theirs, nobodys)
        assert theirs[1].replace(rb.run_id, "ID") == nobodys[1].replace(missing, "ID"), \
            (path, theirs, nobodys)
        checked.add(path)
    # Names: beta's session, app and consumer answer as nobody's.
    named = {
        S + "SendSignal": lambda v: a.signal(app=v, user="u", session="sb"),
        J + "ListRuns": lambda v: a.runs(app=v),
        J + "ListRunsToRecover": lambda v: a.u(
            J + "ListRunsToRecover", journal_pb2.ListRunsToRecoverRequest(app=v),
            journal_pb2.ListRunsToRecoverResponse),
        W + "AckEvents": lambda v: a.u(W + "AckEvents", wal_pb2.AckEventsRequest(
            consumer=v, revision=1), wal_pb2.AckEventsResponse),
        W + "DeleteConsumer": lambda v: a.u(
            W + "DeleteConsumer", wal_pb2.DeleteConsumerRequest(name=v),
            wal_pb2.DeleteConsumerResponse),
        W + "ListConsumers": lambda v: a.consumers(start_after=v),
        J + "ClaimNextRun": lambda v: a.u(
            J + "ClaimNextRun", journal_pb2.ClaimNextRunRequest(
                app=v, lease_owner="thief"), journal_pb2.ClaimNextRunResponse),
    }
    for path, op in named.items():
        theirs = code_of(lambda: op("beta-only" if path.startswith(W) else "shop-b"))
        nobodys = code_of(lambda: op("nobody"))
        assert theirs[0] == nobodys[0], (path, theirs, nobodys)
        assert theirs[1].replace("beta-only", "N").replace("shop-b", "N") == \
            nobodys[1].replace("nobody", "N"), (path, theirs, nobodys)
        if theirs[0] == grpc.StatusCode.OK:
            got = op("beta-only" if path.startswith(W) else "shop-b")
            assert got == op("nobody") or path.endswith("ListConsumers"), path
        checked.add(path)
    assert len(a.runs().runs) == 0 and len(a.consumers().consumers) == 0
    assert len(a.u(J + "ListRunsToRecover", journal_pb2.ListRunsToRecoverRequest(),
                   journal_pb2.ListRunsToRecoverResponse).runs) == 0
    # BeginRun with beta's names makes acme's own run; SubscribeEvents with
    # beta's consumer name makes acme's own consumer, from the start.
    ra = a.begin(app="shop-b", session="sb")
    assert not ra.resumed and ra.run_id != rb.run_id and ra.app == "shop-b"
    checked.add(J + "BeginRun")
    it = a.tail(consumer="beta-only")
    ev = next(it)
    it.cancel()
    assert ev.subject == f"run.{ra.run_id}.RUNNING"
    checked |= {W + "SubscribeEvents", W + "SubscribeEventBatches", W + "GetHead"}
    # Nothing of beta's moved.
    bb = b.u(J + "GetRun", journal_pb2.GetRunRequest(run_id=rb.run_id), journal_pb2.Run)
    assert (bb.status, bb.lease_owner, bb.next_seq) == (rb.status, "w", 2)
    bb2 = b.u(J + "GetRun", journal_pb2.GetRunRequest(run_id=rb2.run_id),
              journal_pb2.Run)
    assert bb2.status == journal_pb2.Run.RUNNABLE
    sigs = b.u(S + "ListSignals", signals_pb2.ListSignalsRequest(run_id=rb.run_id),
               signals_pb2.ListSignalsResponse)
    assert "later" in [g.name for g in sigs.signals]
    assert [(c.name, c.acked_revision) for c in b.consumers().consumers] == \
        [("beta-only", 0)]
    assert "secret" not in secured.server.log()
    every = {p for p, _ in RPCS if p.split("/")[1] in
             ("reel.v1.Journal", "reel.v1.Signals", "reel.v1.Wal")}
    assert every <= checked, every - checked


def test_the_matrix_another_tenants_artifacts_reveal_nothing(secured):
    """Every Workspace rpc, called by tenant acme on beta's namespace: the
    same answer as for a namespace nobody has; acme's own artifacts of the
    same names never meet beta's."""
    WS = "/reel.v1.Workspace/"
    scopes = ["workspace:read", "workspace:write", "wal:read"]
    toks = {n: secured.create(n, scopes)[0] for n in ("acme", "beta")}

    def put(tok, ns, key, data):
        def gen():
            yield workspace_pb2.PutArtifactRequest(
                header=workspace_pb2.ArtifactHeader(namespace=ns, key=key))
            yield workspace_pb2.PutArtifactRequest(chunk=data)
        return secured.ch.stream_unary(
            WS + "PutArtifact",
            request_serializer=workspace_pb2.PutArtifactRequest.SerializeToString,
            response_deserializer=workspace_pb2.PutArtifactResponse.FromString)(
            gen(), metadata=md(tok), timeout=10).artifact

    def u(tok, name, req, resp):
        return unary(secured.ch, WS + name, type(req), resp)(
            req, metadata=md(tok), timeout=10)

    def first(tok, name, req, resp):
        return first_or_code(stream(secured.ch, WS + name, type(req), resp)(
            req, metadata=md(tok), timeout=5))

    art = put(toks["beta"], "files", "a.txt", b"beta's secret bytes")
    assert art.namespace == "files" and art.version == 1
    A = toks["acme"]
    calls = {
        "GetArtifact": lambda ns: first(A, "GetArtifact", workspace_pb2.GetArtifactRequest(
            namespace=ns, key="a.txt"), workspace_pb2.GetArtifactResponse),
        "StatArtifact": lambda ns: u(A, "StatArtifact", workspace_pb2.StatArtifactRequest(
            namespace=ns, key="a.txt"), workspace_pb2.StatArtifactResponse),
        "ListArtifacts": lambda ns: u(A, "ListArtifacts", workspace_pb2.ListArtifactsRequest(
            namespace=ns, include_deleted=True), workspace_pb2.ListArtifactsResponse),
        "DeleteArtifact": lambda ns: u(A, "DeleteArtifact",
                                       workspace_pb2.DeleteArtifactRequest(
                                           namespace=ns, key="a.txt"),
                                       workspace_pb2.DeleteArtifactResponse),
        "WatchArtifacts": lambda ns: first(A, "WatchArtifacts",
                                           workspace_pb2.WatchArtifactsRequest(
                                               namespace=ns),
                                           workspace_pb2.ArtifactEvent),
    }
    for name, op in calls.items():
        theirs, nobodys = code_of(lambda: op("files")), code_of(lambda: op("nobody"))
        if name in ("GetArtifact", "WatchArtifacts"):
            theirs, nobodys = op("files"), op("nobody")
        assert theirs[0] == nobodys[0], (name, theirs, nobodys)
        assert str(theirs[1]).replace("files", "N") == \
            str(nobodys[1]).replace("nobody", "N"), (name, theirs, nobodys)
    assert len(calls["ListArtifacts"]("files").artifacts) == 0
    # acme's own artifact of the same name; each reads back its own.
    tail = stream(secured.ch, "/reel.v1.Wal/SubscribeEvents",
                  wal_pb2.SubscribeEventsRequest, wal_pb2.Event)(
        wal_pb2.SubscribeEventsRequest(subject_pattern="artifact.>"),
        metadata=md(A), timeout=10)
    mine = put(A, "files", "a.txt", b"acme's bytes")
    assert mine.namespace == "files" and mine.version == 1
    st = u(toks["beta"], "StatArtifact", workspace_pb2.StatArtifactRequest(
        namespace="files", key="a.txt"), workspace_pb2.StatArtifactResponse)
    assert st.artifact.size == len(b"beta's secret bytes")
    ev = next(tail)
    tail.cancel()
    assert ev.subject == "artifact.files.a.txt" and ev.artifact.namespace == "files"
    assert ev.artifact.size == len(b"acme's bytes")
    c, d = code_of(lambda: u(A, "StatArtifact", workspace_pb2.StatArtifactRequest(
        namespace="::beta:files", key="a.txt"), workspace_pb2.StatArtifactResponse))
    assert c == grpc.StatusCode.INVALID_ARGUMENT and "reserved for tenants" in d
    # GetWorkspaceUsage is the server's, as GetHead: it names nothing.
    assert u(A, "GetWorkspaceUsage", workspace_pb2.GetWorkspaceUsageRequest(),
             workspace_pb2.GetWorkspaceUsageResponse).chunk_bytes > 0


def test_runs_signals_consumers_and_the_wal_stay_within_a_tenant_under_mixed_load(secured):
    names = ("acme", "beta", "default")
    ts = {n: Tenant(secured, secured.create(n, ALL_SCOPES + KV_RW)[0]) for n in names}
    tails = {n: t.tail(pattern=">") for n, t in ts.items()}
    durables = {n: t.tail(pattern="run.*.COMPLETED", consumer="worker")
                for n, t in ts.items()}
    admin_tail = Tenant(secured, secured.admin).tail(pattern=">")
    M = 12
    mine = {n: set() for n in names}
    errors = []

    def load(n):
        t = ts[n]
        try:
            for i in range(M):
                r = t.begin(app="shop", user="u", session=f"s{i % 3}", inv=f"i{i}")
                mine[n].add(r.run_id)
                t.append(r, payload=f'{{"t": "{n}"}}')
                t.signal(r.run_id, name="go")
                t.end(r)
            kv(secured, t.tok).set("done", "k", f'"{n}"')
        except Exception as e:  # noqa: BLE001
            errors.append((n, e))

    threads = [threading.Thread(target=load, args=(n,)) for n in names]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors, errors
    for n, it in tails.items():
        seen = []
        for ev in it:
            if ev.type == wal_pb2.Event.PROGRESS:
                continue
            if ev.subject == "kv.done.k":
                break
            seen.append(ev)
        it.cancel()
        assert all("::" not in ev.subject for ev in seen), n
        ids = {ev.subject.split(".")[1] for ev in seen}
        assert ids == mine[n], n
        runs = [ev.run for ev in seen if ev.type == wal_pb2.Event.RUN_CHANGED]
        assert runs and all(r.app == "shop" for r in runs), n
        entries = [ev.entry for ev in seen if ev.type == wal_pb2.Event.JOURNAL_APPENDED]
        assert {e.payload for e in entries if e.kind == "step"} == {f'{{"t": "{n}"}}'}
        sigs = [ev for ev in seen if ev.type == wal_pb2.Event.SIGNAL_SENT]
        assert len(sigs) == M and all(ev.subject.endswith(".go.sent") for ev in sigs)
        revs = [ev.revision for ev in seen]
        assert revs == sorted(revs)
    for n, it in durables.items():
        done = set()
        for ev in it:
            if ev.type != wal_pb2.Event.RUN_CHANGED:
                continue
            assert ev.subject == f"run.{ev.run.run_id}.COMPLETED"
            done.add(ev.run.run_id)
            if len(done) == M:
                break
        assert done == mine[n], n
        it.cancel()
    everything = set()
    for ev in admin_tail:
        if ev.type == wal_pb2.Event.RUN_CHANGED and ev.subject.endswith("COMPLETED"):
            everything.add(ev.run.run_id)
            if len(everything) == 3 * M:
                break
    admin_tail.cancel()
    assert everything == mine["acme"] | mine["beta"] | mine["default"]


def test_reel_reactor_reaches_a_tls_reeld_with_a_token_from_its_variables(tmp_path, pki):
    from reeltest import binary
    bin_ = binary("REEL_REACTOR", "reactor/reel-reactor")
    if not os.path.exists(bin_):
        pytest.skip("reel-reactor not built")
    server, s = tls_token_reeld(tmp_path, pki)
    procs = []
    try:
        tok, _ = s.create("default", ["wal:read", "wal:consume", "journal:read",
                                      "kv:read", "kv:write"])
        cfg = tmp_path / "reactor.json"
        cfg.write_text('{"apps": [{"app": "shop", "url": "http://127.0.0.1:1/", '
                       '"secrets": ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"]}]}')

        def start(env, name):
            log = tmp_path / f"{name}.log"
            with open(log, "wb") as f:
                p = subprocess.Popen([bin_, "--reel", server.addr, "--config", str(cfg)],
                                     stdout=f, stderr=subprocess.STDOUT,
                                     env=dict({"PATH": "/usr/bin:/bin"}, **env))
            procs.append(p)
            return log

        def wait_for_text(log, text):
            end = time.monotonic() + 20
            while text not in log.read_text(errors="replace"):
                assert time.monotonic() < end, log.read_text(errors="replace")
                time.sleep(0.05)

        ok = start({"REEL_TLS_CA": str(pki["ca1.pem"]), "REEL_TOKEN": tok}, "ok")
        wait_for_text(ok, "consuming run.*.RUNNABLE as reactor")
        procs[0].terminate()
        assert procs[0].wait(timeout=20) == 0
        bad = start({"REEL_TLS_CA": str(pki["ca1.pem"])}, "bad")
        wait_for_text(bad, "UNAUTHENTICATED")
        for log in (ok, bad):
            assert tok not in log.read_text(errors="replace")
        s.ch.close()
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        assert server.stop()[0] == 0
    assert tok not in server.log()


@pytest.mark.parametrize("scopes, want", [
    # Without journal:read its sweep is refused.
    (["wal:read", "wal:consume", "kv:read", "kv:write"],
     "stopped: sweep: ListRunsToRecover: PERMISSION_DENIED"),
    # Without kv:write a dead letter cannot be stored.
    (["wal:read", "wal:consume", "journal:read", "kv:read"],
     "stopped: storing a dead letter: PERMISSION_DENIED"),
])
def test_reel_reactor_stops_when_its_token_is_refused_later(secured, tmp_path, scopes, want):
    """A scope missing for what the reactor does after it subscribed stops
    it (exit 1) naming the call: it used to try again every second, for
    ever, and a dead letter it could not store held every app's dispatch."""
    from reeltest import binary
    bin_ = binary("REEL_REACTOR", "reactor/reel-reactor")
    if not os.path.exists(bin_):
        pytest.skip("reel-reactor not built")
    tok, _ = secured.create(scopes=scopes)
    worker, _ = secured.create(scopes=["journal:read", "journal:write"])
    cfg = tmp_path / "reactor.json"
    cfg.write_text('{"apps": [{"app": "shop", "url": "http://127.0.0.1:1/", '
                   '"retry_schedule_ms": [50], '
                   '"secrets": ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"]}], '
                   '"sweep_interval_ms": 1000}')
    p = subprocess.Popen([bin_, "--reel", secured.server.addr, "--config", str(cfg)],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         env={"PATH": "/usr/bin:/bin", "REEL_TOKEN": tok})
    try:
        time.sleep(0.5)
        secured.call("/reel.v1.Journal/BeginRun", journal_pb2.BeginRunRequest(
            app="shop", user="u", session="s", invocation_id="i1", lease_owner="w",
            lease_ttl_ms=100), journal_pb2.Run, worker)
        out, _ = p.communicate(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == 1, out
    assert want in out, out
    assert tok not in out


def test_reel_bench_ws_reaches_a_tls_reeld_with_a_token(tmp_path, pki):
    """reel-bench ws took neither --tls-ca nor --token (its client was made
    with no options), while every other command did."""
    from reeltest import binary
    bin_ = binary("REEL_BENCH", "bench/reel-bench")
    if not os.path.exists(bin_):
        pytest.skip("reel-bench not built")
    server, s = tls_token_reeld(tmp_path, pki)
    try:
        tok, _ = s.create("acme", ["workspace:read", "workspace:write", "kv:read",
                                   "kv:write"])
        r = subprocess.run([bin_, "ws", "--addr", server.addr, "--tls-ca", str(pki["ca1.pem"]),
                            "--token", tok, "--sizes", "1"], capture_output=True,
                           text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        assert tok not in r.stdout + r.stderr
        # A load that fails says why, with the server's message, and fails.
        for args, want in ((["--tls-ca", str(pki["ca1.pem"])],
                            "(first: UNAUTHENTICATED: "),
                           ([], "(first: UNAVAILABLE: ")):
            r = subprocess.run([bin_, "get", "--addr", server.addr, "--duration", "1",
                                "--concurrency", "2"] + args, capture_output=True,
                               text=True, timeout=120)
            assert r.returncode == 1 and want in r.stderr, (args, r.stderr)
        s.ch.close()
    finally:
        assert server.stop()[0] == 0


def test_a_format_1_dir_holding_a_name_with_the_tenant_mark_is_not_upgraded(tmp_path):
    """Builds before tenants took any name, "::acme:orders" among them; a
    newer reeld would hand it to tenant acme (read, overwritten, its events
    tailed) and keep the default tenant out. Such a dir of format 1 is
    refused at start, naming the name and what to do, and left as it was
    (so the reeld that wrote it still opens it)."""
    s = Secured(tmp_path)
    s.call("/reel.v1.KV/SetValue",
           kv_pb2.SetValueRequest(namespace="::acme:orders", key="secret", value='"v"'),
           kv_pb2.SetValueResponse, s.admin)
    s.close()
    (s.data / "FORMAT").write_text("reel-format 1\n")     # as a build before tenants left it
    again = Reeld(str(s.data), extra=["--auth", "token"]).start(wait=False)
    try:
        assert again.proc.wait(timeout=20) == 1
    finally:
        if again.proc.poll() is None:
            again.kill()
    log = again.log()
    assert 'holds the KV namespace "::acme:orders"' in log, log
    assert "written before tenants" in log
    assert (s.data / "FORMAT").read_text() == "reel-format 1\n"


def test_one_tenants_writes_in_flight_are_capped_and_others_still_write(tmp_path):
    """--write-queue-per-tenant: a tenant's bursts of concurrent writes get
    RESOURCE_EXHAUSTED past its cap, worded as a full write queue (nothing
    of them written), while another tenant's and the admin's writes go
    through; once the burst is over the tenant writes again."""
    s = Secured(tmp_path, extra=["--write-queue-per-tenant", "2"])
    try:
        a, _ = s.create("acme", ("kv:read", "kv:write"))
        b, _ = s.create("beta", ("kv:read", "kv:write"))
        set_value = unary(s.ch, "/reel.v1.KV/SetValue", kv_pb2.SetValueRequest,
                          kv_pb2.SetValueResponse)
        get_value = unary(s.ch, "/reel.v1.KV/GetValue", kv_pb2.GetValueRequest,
                          kv_pb2.GetValueResponse)
        value = '"' + "x" * 65536 + '"'
        refused = []
        for burst in range(10):  # reeld may take one burst as it comes
            futures = [(f"k{burst}-{i}", set_value.future(kv_pb2.SetValueRequest(
                namespace="a", key=f"k{burst}-{i}", value=value), metadata=md(a), timeout=60))
                for i in range(64)]
            theirs = set_value(kv_pb2.SetValueRequest(namespace="b", key=f"k{burst}",
                                                      value="1"), metadata=md(b), timeout=30)
            assert theirs.entry.version == 1
            ours = set_value(kv_pb2.SetValueRequest(namespace="adm", key=f"k{burst}",
                                                    value="1"), metadata=md(s.admin), timeout=30)
            assert ours.entry.version == 1
            for key, fut in futures:
                try:
                    fut.result()
                except grpc.RpcError as e:
                    assert e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, e
                    assert e.details() == (
                        "write queue is full for tenant acme (2 of its writes in flight, at "
                        "most 2: --write-queue-per-tenant); retry later"), e.details()
                    refused.append(key)
            if refused:
                break
        assert refused, "no write of 10 bursts of 64 was refused"
        for key in refused:
            assert not get_value(kv_pb2.GetValueRequest(namespace="a", key=key),
                                 metadata=md(a), timeout=10).found
        assert set_value(kv_pb2.SetValueRequest(namespace="a", key="after", value="1"),
                         metadata=md(a), timeout=30).entry.version == 1
    finally:
        s.close()


def test_one_tenants_open_calls_are_capped_and_a_closed_one_gives_its_place_back(tmp_path):
    """--max-calls-per-tenant: a tenant holding that many streams open gets
    RESOURCE_EXHAUSTED for its next call, naming the flag; another tenant
    and admin are served meanwhile; once a stream is closed the tenant's
    next call goes through."""
    s = Secured(tmp_path, extra=["--max-calls-per-tenant", "3"])
    watch = stream(s.ch, "/reel.v1.KV/WatchValue", kv_pb2.WatchValueRequest,
                   kv_pb2.ValueEvent)
    get_value = unary(s.ch, "/reel.v1.KV/GetValue", kv_pb2.GetValueRequest,
                      kv_pb2.GetValueResponse)
    streams = []
    try:
        a, _ = s.create("acme", ("kv:read", "kv:write"))
        b, _ = s.create("beta", ("kv:read", "kv:write"))
        for i in range(3):
            w = watch(kv_pb2.WatchValueRequest(namespace="a", key=f"k{i}"), metadata=md(a),
                      timeout=60)
            streams.append(w)
            next(w)  # the watch is open: its BOOTSTRAP_DONE came
        with pytest.raises(grpc.RpcError) as e:
            get_value(kv_pb2.GetValueRequest(namespace="a", key="k"), metadata=md(a), timeout=10)
        assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert e.value.details().startswith(
            "tenant acme has 3 calls open, at most 3 (--max-calls-per-tenant)"), e.value.details()
        for tok in (b, s.admin):
            assert not get_value(kv_pb2.GetValueRequest(namespace="b", key="k"),
                                 metadata=md(tok), timeout=10).found
        streams.pop().cancel()

        def served():
            try:
                get_value(kv_pb2.GetValueRequest(namespace="a", key="k"), metadata=md(a),
                          timeout=10)
                return True
            except grpc.RpcError as e:
                assert e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, e
                return False
        deadline = time.monotonic() + 10
        while not served():
            assert time.monotonic() < deadline, "the closed stream's place never came back"
            time.sleep(0.05)
    finally:
        for w in streams:
            w.cancel()
        s.close()


def test_one_tenants_stalled_streams_leave_the_others_room(tmp_path):
    """The stream budget (--max-stream-backlog-bytes) was one total for
    every tenant: one tenant's streams that never read filled it, and every
    other tenant's watch then waited for room until the stalled ones were
    ended (40 s by default), again each time it opened more. Now a
    tenant's streams hold at most a quarter of it together, so another
    tenant's watch goes on at once."""
    from test_metrics import scrape, value
    port = free_port()
    s = Secured(tmp_path, extra=["--max-stream-backlog-bytes", str(4 << 20),
                                 "--metrics-listen", f"127.0.0.1:{port}"])
    # No BDP probing: the stalled clients' windows stay at 64 KiB, so what
    # reeld sends them past that stays queued or in flight on its side.
    opts = [("grpc.http2.bdp_probe", 0), ("grpc.use_local_subchannel_pool", 1)]
    chans = [grpc.insecure_channel(s.server.addr, options=opts) for _ in range(4)]
    reader = grpc.insecure_channel(s.server.addr, options=[("grpc.use_local_subchannel_pool", 1)])
    stalled = []
    try:
        a, _ = s.create("acme", ("kv:read", "kv:write"))
        b, _ = s.create("beta", ("kv:read", "kv:write"))
        set_value = unary(s.ch, "/reel.v1.KV/SetValue", kv_pb2.SetValueRequest,
                          kv_pb2.SetValueResponse)
        big = '"' + "v" * 300000 + '"'
        for _ in range(5):
            set_value(kv_pb2.SetValueRequest(namespace="m", key="big", value=big),
                      metadata=md(a), timeout=10)
        every = kv_pb2.WatchValueRequest(namespace="m", key="big",
                                         start=kv_pb2.WatchValueRequest.FROM_VERSION,
                                         from_version=0)
        for i in range(24):  # 24 x 5 x 300 KB wanted; nobody reads
            watch = stream(chans[i % 4], "/reel.v1.KV/WatchValue", kv_pb2.WatchValueRequest,
                           kv_pb2.ValueEvent)
            stalled.append(watch(every, metadata=md(a), timeout=120))
        time.sleep(2)
        queued = value(scrape(port), "reel_stream_queue_bytes")
        # acme's quarter (1 MiB), and the one message past it its first
        # stream may take.
        assert queued <= (1 << 20) + 700000, queued

        # beta reads its own watch while acme's stay stalled.
        for v in range(5):
            set_value(kv_pb2.SetValueRequest(namespace="m", key="big", value=big),
                      metadata=md(b), timeout=10)
        watch = stream(reader, "/reel.v1.KV/WatchValue", kv_pb2.WatchValueRequest,
                       kv_pb2.ValueEvent)
        got, t0 = [], time.monotonic()
        for ev in watch(every, metadata=md(b), timeout=15):
            if ev.type == kv_pb2.ValueEvent.PUT:
                got.append(ev.version)
                if len(got) == 5:
                    break
        assert got == [1, 2, 3, 4, 5]
        assert time.monotonic() - t0 < 10
        # acme's streams were held back, not lost: once its other readers
        # leave, the one left reads all five.
        for w in stalled[1:]:
            w.cancel()
        got = []
        for ev in stalled[0]:
            if ev.type == kv_pb2.ValueEvent.PUT:
                got.append(ev.version)
                if len(got) == 5:
                    break
        assert got == [1, 2, 3, 4, 5]
    finally:
        for w in stalled:
            w.cancel()
        for ch in chans + [reader]:
            ch.close()
        s.close()
