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


# ---- Tokens and scopes -------------------------------------------------------

import glob  # noqa: E402
import re  # noqa: E402
import stat  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402

from conftest import ROOT, stream  # noqa: E402
from reel.v1 import journal_pb2, kv_pb2, signals_pb2, wal_pb2  # noqa: E402

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


def test_an_expired_tokens_open_watch_ends_within_a_second_of_expiry(secured):
    ttl = 1500
    tok, _ = secured.create(scopes=["kv:read"], ttl_ms=ttl)
    t0 = time.monotonic()
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
    assert ttl / 1000 - 0.1 <= took < ttl / 1000 + 1.5, took


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
    bad = ctl("token", "create", "--tenant", "default", "--scope", "kv:read",
              tok=made["token"])
    assert bad.returncode == 1 and made["token"] not in bad.stderr


def test_reel_sink_reaches_a_tls_reeld_with_a_token_from_its_variables(tmp_path, pki):
    from reeltest import binary
    sink_bin = binary("REEL_SINK", "sink/reel-sink")
    if not os.path.exists(sink_bin):
        pytest.skip("reel-sink not built")
    server = Reeld(str(tmp_path / "data"), creds=tls_creds(pki),
                   extra=["--auth", "token", "--tls-cert", str(pki["server1.pem"]),
                          "--tls-key", str(pki["server1.key"])]).start()
    try:
        tok = (tmp_path / "data" / "admin.token").read_text().strip()
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
    finally:
        assert server.stop()[0] == 0
    assert tok not in server.log()


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


def test_a_tenant_cannot_reach_what_does_not_keep_tenants_apart(secured):
    tok, tid = secured.create("acme", ["kv:read", "kv:write", "journal:read",
                                       "journal:write", "signals:send",
                                       "signals:await", "wal:read", "wal:consume"])
    for path, streaming in RPCS:
        c, d = raw_call(secured.ch, path, streaming, md(tok), timeout=1)
        if path.startswith("/reel.v1.KV/") or path in (
                "/reel.v1.Admin/GetStatus", "/reel.v1.Wal/SubscribeEvents",
                "/reel.v1.Wal/SubscribeEventBatches", "/reel.v1.Wal/GetHead"):
            assert c != grpc.StatusCode.PERMISSION_DENIED, (path, d)
        else:
            assert c == grpc.StatusCode.PERMISSION_DENIED, (path, c, d)
            if not path.startswith("/reel.v1.Admin/"):
                assert "does not keep tenants apart" in d and tid in d


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
    # Refused: a durable consumer, and a namespace token spelling a prefix.
    c, d = code_of(lambda: next(stream(
        secured.ch, "/reel.v1.Wal/SubscribeEvents", wal_pb2.SubscribeEventsRequest,
        wal_pb2.Event)(wal_pb2.SubscribeEventsRequest(consumer="c1"),
                       metadata=md(acme), timeout=5)))
    assert c == grpc.StatusCode.PERMISSION_DENIED and "consumer" in d
    c, d = code_of(lambda: next(tail(acme, "kv.::beta:orders.>")))
    assert c == grpc.StatusCode.INVALID_ARGUMENT and "reserved for tenants" in d


def test_reel_reactor_reaches_a_tls_reeld_with_a_token_from_its_variables(tmp_path, pki):
    from reeltest import binary
    bin_ = binary("REEL_REACTOR", "reactor/reel-reactor")
    if not os.path.exists(bin_):
        pytest.skip("reel-reactor not built")
    server = Reeld(str(tmp_path / "data"), creds=tls_creds(pki),
                   extra=["--auth", "token", "--tls-cert", str(pki["server1.pem"]),
                          "--tls-key", str(pki["server1.key"])]).start()
    procs = []
    try:
        admin = (tmp_path / "data" / "admin.token").read_text().strip()
        s = Secured.__new__(Secured)  # only its token maker, on this server
        s.ch, s.admin, s.tokens = server.channel(tls_creds(pki)), admin, [admin]
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
