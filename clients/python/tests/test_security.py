"""connect() against a reeld with TLS, mTLS and tokens (docs/security.md):
a CA file and a client certificate as paths or PEM, the token from the
argument or $REEL_TOKEN, TLS from REEL_TLS_* as reelctl reads them; no
token is UNAUTHENTICATED, a token without the scope PERMISSION_DENIED
naming it, an untrusted server or a missing client certificate fails the
handshake; bad settings are refused naming the field before anything is
sent."""
import subprocess
import time

import pytest

import reel
import reel.aio
from reel import _core
from reel.v1 import admin_pb2

from conftest import Reeld


def _openssl(d, *args):
    subprocess.run(["openssl"] + list(args), cwd=d, check=True, capture_output=True,
                   timeout=30)


def _ca(d, name):
    _openssl(d, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.pem", "-days", "2",
             "-subj", f"/CN=reel test {name}")


def _cert(d, name, ca, server):
    _openssl(d, "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}")
    (d / f"{name}.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n" if server
                                   else "extendedKeyUsage=clientAuth\n")
    _openssl(d, "x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
             "-CAcreateserial", "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext")


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """ca1 signs the server and client1; ca2 signs client2, which reeld
    does not trust."""
    d = tmp_path_factory.mktemp("pki")
    _ca(d, "ca1")
    _ca(d, "ca2")
    _cert(d, "server", "ca1", True)
    _cert(d, "client1", "ca1", False)
    _cert(d, "client2", "ca2", False)
    return d


def _start(tmp_path, pki, *, mtls=False, auth=True):
    extra = ["--tls-cert", str(pki / "server.pem"), "--tls-key", str(pki / "server.key")]
    if mtls:
        extra += ["--tls-client-ca", str(pki / "ca1.pem")]
    if auth:
        extra += ["--auth", "token"]
    probe = reel.TLS(ca=pki / "ca1.pem", cert=pki / "client1.pem", key=pki / "client1.key")
    return Reeld(str(tmp_path / "data"), extra=extra, tls=probe).start()


@pytest.fixture
def secure(tmp_path, pki, monkeypatch):
    """reeld with TLS and tokens; no REEL_* of the caller's in the way.
    Yields (server, its admin token)."""
    for var in ("REEL_TOKEN", "REEL_TLS", "REEL_TLS_CA", "REEL_TLS_CERT", "REEL_TLS_KEY"):
        monkeypatch.delenv(var, raising=False)
    server = _start(tmp_path, pki)
    with open(tmp_path / "data" / "admin.token") as f:
        token = f.read().strip()
    yield server, token
    assert server.stop() == 0, server.log()


def _token(client, scopes):
    resp = client._call("admin", "CreateToken", admin_pb2.CreateTokenRequest(
        tenant="default", scopes=scopes, name="py-test"))
    return resp.token


def test_tls_with_a_ca_file_and_a_token_serves_calls_and_streams(secure, pki):
    server, admin = secure
    with reel.connect(server.addr, tls=reel.TLS(ca=str(pki / "ca1.pem")), token=admin) as c:
        c.kv.put("app", "k", {"n": 1})
        assert c.kv.get("app", "k").value == {"n": 1}
        with c.kv.watch("app", "k") as w:                 # a stream carries the token too
            ev = next(w)
            assert (ev.key, ev.value) == ("k", {"n": 1})
        reader = _token(c, ["kv:read"])
    # The token's scopes hold: a read-only token reads and cannot write.
    with reel.connect(server.addr, tls=reel.TLS(ca=pki / "ca1.pem"), token=reader) as c:
        assert c.kv.get("app", "k").version == 1
        with pytest.raises(reel.PermissionDenied, match="kv:write"):
            c.kv.put("app", "k", 2)
    # No token: UNAUTHENTICATED with reeld's message, nothing written.
    with reel.connect(server.addr, tls=reel.TLS(ca=pki / "ca1.pem"), token="") as c:
        with pytest.raises(reel.Unauthenticated, match="no token"):
            c.kv.put("app", "k", 3)
        assert c.health() == "SERVING"                   # health needs no token
    # A server whose CA is not trusted, or plaintext: the handshake fails.
    for tls in (reel.TLS(ca=pki / "ca2.pem"), False):
        with reel.connect(server.addr, tls=tls, token=admin, wait_for_ready=False,
                          retries=0) as c:
            with pytest.raises(reel.Unavailable):
                c.kv.get("app", "k")


def test_the_token_and_tls_come_from_the_environment_as_for_reelctl(secure, pki, monkeypatch):
    server, admin = secure
    monkeypatch.setenv("REEL_TOKEN", admin)
    monkeypatch.setenv("REEL_TLS_CA", str(pki / "ca1.pem"))
    monkeypatch.setenv("REEL_ADDR", server.addr)
    with reel.connect() as c:
        assert c.kv.put("app", "env", True).version == 1
    # An argument wins over the variable.
    with reel.connect(token="", wait_for_ready=False, retries=0) as c:
        with pytest.raises(reel.Unauthenticated):
            c.kv.get("app", "env")
    monkeypatch.setenv("REEL_TLS", "ture")
    with pytest.raises(ValueError, match="REEL_TLS: 'ture' is not 1, true, yes, on"):
        reel.connect()
    # The words reelctl takes, in any case.
    monkeypatch.setenv("REEL_TLS", "Yes")
    with reel.connect() as c:
        assert c.kv.get("app", "env").value is True


async def test_async_tls_and_token(secure, pki):
    server, admin = secure
    async with reel.aio.connect(server.addr, tls=reel.TLS(ca=pki / "ca1.pem"),
                                token=admin) as c:
        await c.kv.put("app", "a", [1])
        assert (await c.kv.get("app", "a")).value == [1]
        run = await c.runs.begin("app", "u", "s", "i1", ttl=5)
        assert (await run.step("one", lambda: 1)) == 1
        await run.end("ok")
    async with reel.aio.connect(server.addr, tls=reel.TLS(ca=pki / "ca1.pem"),
                                token="") as c:
        with pytest.raises(reel.Unauthenticated):
            await c.kv.get("app", "a")


def _mtls_server(tmp_path, pki):
    return _start(tmp_path, pki, mtls=True, auth=False)


def test_mtls_needs_the_client_certificate(tmp_path, pki):
    server = _mtls_server(tmp_path, pki)
    try:
        pem = reel.TLS(ca=(pki / "ca1.pem").read_bytes(),
                       cert=(pki / "client1.pem").read_bytes(),
                       key=(pki / "client1.key").read_bytes())
        with reel.connect(server.addr, tls=pem) as c:
            assert c.kv.put("app", "m", 1).version == 1
        with reel.connect(server.addr, tls=reel.TLS(ca=pki / "ca1.pem"),
                          wait_for_ready=False, retries=0) as c:
            with pytest.raises(reel.Unavailable):
                c.kv.get("app", "m")
    finally:
        assert server.stop() == 0, server.log()


async def test_async_mtls(tmp_path, pki):
    server = _mtls_server(tmp_path, pki)
    try:
        tls = reel.TLS(ca=pki / "ca1.pem", cert=pki / "client1.pem", key=pki / "client1.key")
        async with reel.aio.connect(server.addr, tls=tls) as c:
            assert (await c.kv.put("app", "m", 2)).version == 1
    finally:
        assert server.stop() == 0, server.log()


def test_bad_tls_and_token_settings_are_refused_naming_the_field(tmp_path, pki, monkeypatch):
    monkeypatch.delenv("REEL_TOKEN", raising=False)
    with pytest.raises(ValueError, match="cert and key go together"):
        reel.connect("x", tls=reel.TLS(cert=pki / "client1.pem"))
    missing = tmp_path / "nope.pem"
    with pytest.raises(ValueError, match=f"tls.ca: cannot read {missing}"):
        reel.connect("x", tls=reel.TLS(ca=missing))
    (tmp_path / "empty.pem").write_bytes(b"")
    with pytest.raises(ValueError, match="tls.key: .*empty.pem is empty"):
        reel.connect("x", tls=reel.TLS(cert=pki / "client1.pem", key=tmp_path / "empty.pem"))
    # What gRPC would only log, calling reeld unreachable: named at connect.
    c1, k1 = pki / "client1.pem", pki / "client1.key"
    with pytest.raises(ValueError, match=f"tls.key {pki / 'server.key'}: is not the key "
                                         f"of the certificate in tls.cert {c1}"):
        reel.connect("x", tls=reel.TLS(cert=c1, key=pki / "server.key"))
    with pytest.raises(ValueError, match=f"tls.key {c1}: holds no private key that reads"):
        reel.connect("x", tls=reel.TLS(cert=c1, key=c1))
    with pytest.raises(ValueError, match=f"tls.cert {k1}: holds no certificate that reads"):
        reel.connect("x", tls=reel.TLS(cert=k1, key=k1))
    with pytest.raises(ValueError, match="tls.ca: holds no certificate that reads"):
        reel.connect("x", tls=reel.TLS(ca=k1.read_bytes()))
    _openssl(pki, "pkey", "-in", "client1.key", "-aes256", "-passout", "pass:x",
             "-out", "encrypted.key")
    with pytest.raises(ValueError, match="tls.key .*encrypted.key: the key is encrypted; "
                                         "give it without a passphrase"):
        reel.aio.connect("x", tls=reel.TLS(cert=c1.read_bytes(), key=pki / "encrypted.key"))
    with pytest.raises(ValueError, match="token: byte 3 is not printable") as e:
        reel.connect("x", token="abc def-secret")
    assert "secret" not in str(e.value)
    with pytest.raises(ValueError, match="token: 4097 bytes, expected 1 to 4096"):
        reel.connect("x", token="a" * 4097)
    monkeypatch.setenv("REEL_TOKEN", "bad\ntoken")
    with pytest.raises(ValueError, match="token: byte 3"):
        reel.aio.connect("x")
    # The token and the key never show in the settings' repr.
    monkeypatch.setenv("REEL_TOKEN", "reel_0123_s3cret")
    s = _core.settings("x", None, reel.TLS(ca=pki / "ca1.pem", cert=pki / "client1.pem",
                                           key=pki / "client1.key"),
                       30.0, True, 0, None, None, ())
    assert s.token == "reel_0123_s3cret" and "s3cret" not in repr(s)
    assert b"PRIVATE KEY" in s.pem[2] and "PRIVATE" not in repr(s)


def _fails_at_once(c, hint):
    """A watch on c raises Unavailable naming the TLS mistake at once,
    without reconnecting until reconnect_timeout (it did, saying only
    'failed to connect')."""
    t0 = time.monotonic()
    with pytest.raises(reel.Unavailable) as e:
        with c.kv.watch("app", "k") as w:
            next(iter(w))
    assert hint in str(e.value)
    assert time.monotonic() - t0 < 10
    return e.value


def test_a_tls_mistake_is_named_and_a_stream_stops_retrying(tmp_path, pki):
    for d in ("tls", "mtls", "plain"):
        (tmp_path / d).mkdir()
    tls_server = _start(tmp_path / "tls", pki, auth=False)
    mtls_server = _mtls_server(tmp_path / "mtls", pki)
    plain = Reeld(str(tmp_path / "plain" / "data")).start()
    try:
        a, m = tls_server.addr, mtls_server.addr
        cases = [
            (a, reel.TLS(ca=pki / "ca2.pem"),
             f"reeld's certificate at {a} does not verify against tls.ca"),
            (a, reel.TLS(ca=pki / "ca1.pem", server_name="elsewhere.example"),
             f"reeld's certificate at {a} does not name 'elsewhere.example'"),
            (a, False, f"reeld at {a} serves TLS: give tls=reel.TLS(ca=...)"),
            (plain.addr, reel.TLS(ca=pki / "ca1.pem"),
             f"reeld at {plain.addr} does not serve TLS: connect without tls"),
            (m, reel.TLS(ca=pki / "ca1.pem"),
             f"reeld at {m} asks for a client certificate: give tls.cert and tls.key"),
            (m, reel.TLS(ca=pki / "ca1.pem", cert=pki / "client2.pem", key=pki / "client2.key"),
             f"reeld at {m} refused the client certificate in tls.cert"),
        ]
        for addr, tls, hint in cases:
            with reel.connect(addr, tls=tls, reconnect_timeout=60) as c:
                _fails_at_once(c, hint)
                # A call waits for a connection no more once the mistake
                # is known: it fails at once, naming it.
                t0 = time.monotonic()
                with pytest.raises(reel.Unavailable, match="cannot connect") as e:
                    c.kv.get("app", "k")
                assert hint in str(e.value) and time.monotonic() - t0 < 5
        # The first call of a client waits out its deadline, then says why.
        with reel.connect(a, tls=reel.TLS(ca=pki / "ca2.pem"), timeout=1) as c:
            with pytest.raises(reel.DeadlineExceeded, match="does not verify against tls.ca"):
                c.kv.get("app", "k")
        # A reeld that is not running is not a settings mistake: the
        # stream goes on trying until reconnect_timeout, then names it.
        plain_addr = plain.addr
        assert plain.stop() == 0, plain.log()
        with reel.connect(plain_addr, reconnect_timeout=1) as c:
            with pytest.raises(reel.Unavailable,
                               match=f"nothing listens on {plain_addr}: is reeld running"):
                with c.kv.watch("app", "k") as w:
                    next(iter(w))
        # And a client whose settings are right is not slowed.
        with reel.connect(a, tls=reel.TLS(ca=pki / "ca1.pem")) as c:
            assert c.kv.put("app", "k", 1).version == 1
    finally:
        for s in (tls_server, mtls_server, plain):
            s.stop()


async def test_async_tls_mistake_is_named_and_a_stream_stops_retrying(tmp_path, pki):
    server = _start(tmp_path, pki, auth=False)
    try:
        async with reel.aio.connect(server.addr, tls=reel.TLS(ca=pki / "ca2.pem"),
                                    timeout=1, reconnect_timeout=60) as c:
            hint = f"reeld's certificate at {server.addr} does not verify against tls.ca"
            with pytest.raises(reel.DeadlineExceeded, match=hint):
                await c.kv.get("app", "k")
            t0 = time.monotonic()
            with pytest.raises(reel.Unavailable, match=hint):
                async with c.kv.watch("app", "k") as w:
                    async for _ in w:
                        break
            with pytest.raises(reel.Unavailable, match="cannot connect"):
                await c.kv.get("app", "k")
            assert time.monotonic() - t0 < 10
    finally:
        assert server.stop() == 0, server.log()
