"""The client itself: addresses, errors named after gRPC codes carrying
reeld's message, retries only where repeating cannot write twice (checked
against a stand-in server that answers UNAVAILABLE), the token and TLS on
the wire, and the committed message classes matching the protos."""
import asyncio
import os
import subprocess
import sys
import time
from concurrent import futures

import grpc
import pytest

import reel
import reel.aio
from reel import _core
from reel.v1 import admin_pb2, journal_pb2, kv_pb2

from conftest import ROOT, free_port


def test_addresses_are_read_as_reelctl_reads_them(monkeypatch):
    assert _core.target("db1") == "db1:7878"
    assert _core.target("db1:9000") == "db1:9000"
    assert _core.target("[::1]") == "[::1]:7878"
    assert _core.target("[::1]:9000") == "[::1]:9000"
    with pytest.raises(ValueError, match="brackets"):
        _core.target("::1")
    monkeypatch.setenv("REEL_ADDR", "envhost")
    assert _core.target(None) == "envhost:7878"
    monkeypatch.delenv("REEL_ADDR")
    assert _core.target(None) == "127.0.0.1:7878"
    with pytest.raises(TypeError, match="tls"):
        reel.connect("x", tls="yes")
    # What would only fail later, as a bare timeout, is refused naming addr.
    for bad, why in (("http://127.0.0.1:7878", "not a URL"), ("db1:99999", "1-65535"),
                     ("db1:", "1-65535"), ("[::1]:x", "1-65535"),
                     ("7878", "a port alone: write host:port .'127.0.0.1:7878' on this")):
        with pytest.raises(ValueError, match=f"^addr: .*{why}"):
            _core.target(bad)
    with pytest.raises(TypeError, match="^addr: .*not int"):
        reel.connect(7878)


def test_an_async_client_made_outside_its_loop_is_refused_at_once():
    with pytest.raises(RuntimeError, match="inside the event loop"):
        reel.aio.connect("127.0.0.1:7878")


def test_health_status_and_errors_carry_the_servers_message(client):
    assert client.health() == "SERVING"
    st = client.status()
    assert st.writable and st.signal_max_wait_ms == 300000
    assert st.disk_free_bytes > 0 and not st.disk_low
    assert 1 <= st.connections <= st.max_connections == 10000
    with pytest.raises(reel.NotFound) as err:
        client.runs.get("01J00000000000000000000000")
    assert err.value.code == grpc.StatusCode.NOT_FOUND
    assert "not found" in err.value.message
    assert str(err.value).startswith("GetRun: NOT_FOUND: ")
    with pytest.raises(reel.InvalidArgument, match="key"):
        client.kv.put("app", "a..b", 1)
    assert issubclass(reel.LeaseLost, reel.FailedPrecondition)
    assert reel.Aborted is reel.Conflict


def test_an_unreachable_server_is_unavailable_or_past_the_deadline():
    addr = f"127.0.0.1:{free_port()}"
    with reel.connect(addr, wait_for_ready=False, retries=0) as c:
        with pytest.raises(reel.Unavailable):
            c.kv.get("app", "k")
    with reel.connect(addr, timeout=0.3) as c:                      # waits for it
        with pytest.raises(reel.DeadlineExceeded):
            c.kv.get("app", "k")


class StandIn:
    """A gRPC server answering a few of reeld's methods, UNAVAILABLE the
    first `fail[method]` times, recording each call's metadata."""

    def __init__(self, fail=(), tls=None, code=grpc.StatusCode.UNAVAILABLE,
                 details="stand-in going away"):
        self.fail = dict(fail)
        self.code, self.details = code, details
        self.calls = []
        self.metadata = []
        self.server = grpc.server(futures.ThreadPoolExecutor(4))
        handlers = {
            "reel.v1.KV": {
                "GetValue": self._h("GetValue", kv_pb2.GetValueRequest,
                                    kv_pb2.GetValueResponse(found=False)),
                "SetValue": self._h("SetValue", kv_pb2.SetValueRequest,
                                    kv_pb2.SetValueResponse(entry=kv_pb2.Entry(version=1))),
            },
            "reel.v1.Journal": {
                "Append": self._h("Append", journal_pb2.AppendRequest, journal_pb2.AppendResponse(
                    entry=journal_pb2.JournalEntry(seq=1))),
                "BeginRun": self._h("BeginRun", journal_pb2.BeginRunRequest,
                                    journal_pb2.Run(run_id="R", status=journal_pb2.Run.RUNNING,
                                                    lease_epoch=1, next_seq=1)),
            },
            "reel.v1.Admin": {
                "GetStatus": self._h("GetStatus", admin_pb2.GetStatusRequest,
                                     admin_pb2.GetStatusResponse(version="stand-in")),
            },
        }
        self.server.add_generic_rpc_handlers(
            [grpc.method_handlers_generic_handler(s, m) for s, m in handlers.items()])
        if tls is None:
            self.port = self.server.add_insecure_port("127.0.0.1:0")
        else:
            self.port = self.server.add_secure_port("127.0.0.1:0", tls)
        self.addr = f"127.0.0.1:{self.port}"
        self.server.start()

    def _h(self, name, req_cls, resp):
        def handle(request, context):
            self.calls.append(name)
            self.metadata.append(dict(context.invocation_metadata()))
            if self.fail.get(name, 0) > 0:
                self.fail[name] -= 1
                context.abort(self.code, self.details)
            return resp
        return grpc.unary_unary_rpc_method_handler(
            handle, request_deserializer=req_cls.FromString,
            response_serializer=lambda m: m.SerializeToString())

    def stop(self):
        self.server.stop(None)


def test_only_calls_that_cannot_write_twice_are_retried():
    s = StandIn(fail={"GetValue": 2, "SetValue": 1, "Append": 2, "BeginRun": 1})
    try:
        with reel.connect(s.addr, retries=3) as c:
            assert c.kv.get("app", "k") is None                       # a read: retried
            assert s.calls.count("GetValue") == 3
            with pytest.raises(reel.Unavailable, match="stand-in going away"):
                c.kv.put("app", "k", 1)                               # a write: not retried
            assert s.calls.count("SetValue") == 1
            run = c.runs.begin("a", "u", "s", "i", heartbeat=False)   # returns the same run
            assert s.calls.count("BeginRun") == 2
            assert run.append("step", 1, key="k1").seq == 1           # idempotent: retried
            assert s.calls.count("Append") == 3
            s.fail["Append"] = 1
            with pytest.raises(reel.Unavailable):
                run.append("step", 2)                                 # no key: not retried
            assert s.calls.count("Append") == 4
        with reel.connect(s.addr, retries=1) as c:
            s.fail["GetValue"] = 5
            with pytest.raises(reel.Unavailable):
                c.kv.get("app", "k")
            assert s.calls.count("GetValue") == 3 + 2
    finally:
        s.stop()


def test_a_call_the_server_cancels_is_retried_as_unavailable():
    """A reeld shutting down cancels the calls still in flight (CANCELLED,
    "CANCELLED"): that is the server going away, as UNAVAILABLE, not this
    process cancelling; safe calls are retried, and a run's code sees
    Unavailable, never Cancelled (a worker failed its run for good on it)."""
    s = StandIn(fail={"GetValue": 2, "SetValue": 1, "Append": 1},
                code=grpc.StatusCode.CANCELLED, details="CANCELLED")
    try:
        with reel.connect(s.addr, retries=3) as c:
            assert c.kv.get("app", "k") is None
            assert s.calls.count("GetValue") == 3
            with pytest.raises(reel.Unavailable, match="cancelled by the server"):
                c.kv.put("app", "k", 1)
            run = c.runs.begin("a", "u", "s", "i", heartbeat=False)
            assert run.append("step", 1, key="k1").seq == 1
            assert s.calls.count("Append") == 2
    finally:
        s.stop()


def test_a_write_the_full_queue_refused_is_sent_again():
    """reeld refuses a write its queue has no room for before writing
    anything (RESOURCE_EXHAUSTED "write queue is full ..."): any write, one
    not safe to repeat included, is sent again after a backoff, up to
    `retries`; another RESOURCE_EXHAUSTED is not retried."""
    full = "write queue is full (67108864 bytes waiting in 64 requests, at most 67108864; " \
           "this one holds 1048640); retry later"
    s = StandIn(fail={"SetValue": 2, "Append": 1},
                code=grpc.StatusCode.RESOURCE_EXHAUSTED, details=full)
    try:
        with reel.connect(s.addr, retries=3) as c:
            assert c.kv.put("app", "k", 1).version == 1
            assert s.calls.count("SetValue") == 3
            run = c.runs.begin("a", "u", "s", "i", heartbeat=False)
            assert run.append("step", 2).seq == 1                     # no key: retried too
            assert s.calls.count("Append") == 2
            s.fail["SetValue"] = 5
            with pytest.raises(reel.ResourceExhausted, match="write queue is full"):
                c.kv.put("app", "k", 1)
            assert s.calls.count("SetValue") == 3 + 4
        s.fail["SetValue"], s.details = 1, "some other limit"
        with reel.connect(s.addr, retries=3) as c:
            with pytest.raises(reel.ResourceExhausted, match="some other limit"):
                c.kv.put("app", "k", 1)
            assert s.calls.count("SetValue") == 7 + 1

        async def aio():
            s.fail["SetValue"], s.details = 2, full
            async with reel.aio.connect(s.addr, retries=3) as c:
                return (await c.kv.put("app", "k", 1)).version

        assert asyncio.run(aio()) == 1
        assert s.calls.count("SetValue") == 8 + 3
    finally:
        s.stop()


async def test_async_retries_match_the_sync_client():
    s = StandIn(fail={"GetValue": 2, "SetValue": 1})
    try:
        async with reel.aio.connect(s.addr, retries=3) as c:
            assert await c.kv.get("app", "k") is None
            assert s.calls.count("GetValue") == 3
            with pytest.raises(reel.Unavailable):
                await c.kv.put("app", "k", 1)
            assert s.calls.count("SetValue") == 1
    finally:
        s.stop()


def _self_signed(tmp_path):
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-keyout", str(key), "-out", str(cert), "-subj", "/CN=reel-test",
                    "-addext", "subjectAltName=DNS:reel-test"],
                   check=True, capture_output=True)
    return key.read_bytes(), cert.read_bytes()


def test_token_and_tls_reach_the_server(tmp_path):
    key, cert = _self_signed(tmp_path)
    s = StandIn(tls=grpc.ssl_server_credentials([(key, cert)]))
    try:
        tls = reel.TLS(ca=cert, server_name="reel-test")
        with reel.connect(s.addr, tls=tls, token="s3cret") as c:
            assert c.status().version == "stand-in"
        assert s.metadata[-1]["authorization"] == "Bearer s3cret"
        # Without the CA the server's certificate is not trusted.
        with reel.connect(s.addr, tls=True, wait_for_ready=False, retries=0) as c:
            with pytest.raises(reel.Unavailable):
                c.status()
        assert len(s.calls) == 1

        async def aio():
            async with reel.aio.connect(s.addr, tls=tls, token="t2") as c:
                return (await c.status()).version

        assert asyncio.run(aio()) == "stand-in"
        assert s.metadata[-1]["authorization"] == "Bearer t2"
    finally:
        s.stop()


def test_the_committed_message_classes_match_the_protos():
    gen = os.path.join(ROOT, "clients", "python", "gen_stubs.py")
    r = subprocess.run([sys.executable, gen, "--check"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    # And the installed package holds the same files as the source tree.
    import reel.v1
    installed = os.path.dirname(reel.v1.__file__)
    for name in sorted(os.listdir(installed)):
        if name.endswith("_pb2.py"):
            with open(os.path.join(installed, name), "rb") as a, \
                    open(os.path.join(ROOT, "clients", "python", "reel", "v1", name), "rb") as b:
                assert a.read() == b.read(), f"installed reel/v1/{name} is stale: reinstall"


def test_a_stale_message_class_is_found(tmp_path):
    """gen_stubs.py --check fails naming a committed file that differs."""
    import shutil
    copy = tmp_path / "clients" / "python"
    shutil.copytree(os.path.join(ROOT, "clients", "python"), copy,
                    ignore=shutil.ignore_patterns("tests", "build", "*.egg-info", "__pycache__"))
    os.symlink(os.path.join(ROOT, "api"), tmp_path / "api")
    ok = subprocess.run([sys.executable, str(copy / "gen_stubs.py"), "--check"],
                        capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    target = copy / "reel" / "v1" / "kv_pb2.py"
    target.write_text(target.read_text() + "# edited\n")
    (copy / "reel" / "v1" / "gone_pb2.py").write_text("")
    r = subprocess.run([sys.executable, str(copy / "gen_stubs.py"), "--check"],
                       capture_output=True, text=True)
    assert r.returncode == 1
    assert "reel/v1/kv_pb2.py: differs from what protoc generates" in r.stderr
    assert "reel/v1/gone_pb2.py: no proto generates it" in r.stderr


def test_calls_and_streams_after_close_raise_cancelled_client_is_closed(reeld):
    import threading
    c = reel.connect(reeld.addr)
    c.kv.put("app", "k", 1)
    watch = c.kv.watch("app", "k", now=True)
    got = []
    t = threading.Thread(target=lambda: got.extend(_drain(watch)))
    t.start()
    tail = c.events.tail("kv.app.>", consumer="closer")
    next(tail)
    c.kv.put("app", "k", 2)
    next(tail)                              # the first is handled: to acknowledge
    c.close()
    t.join(10)
    assert not t.is_alive()
    assert isinstance(got[-1], reel.Cancelled) and "client is closed" in str(got[-1])
    for call in (lambda: c.kv.get("app", "k"), lambda: next(c.kv.watch("app", "k")),
                 lambda: c.workspace.get("ns", "x"), lambda: c.workspace.put("ns", "x", b"1"),
                 c.status, tail.close):
        with pytest.raises(reel.Cancelled, match="client is closed"):
            call()


def _drain(it):
    out = []
    try:
        for ev in it:
            out.append(ev)
    except reel.ReelError as e:
        out.append(e)
    return out


async def test_async_close_ends_a_watch_in_another_task_with_cancelled(reeld):
    c = reel.aio.connect(reeld.addr)
    watch = c.kv.watch("app", "k", now=True)
    first = asyncio.Event()

    async def consume():
        async for _ in watch:
            first.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(first.wait(), 10)
    await c.close()
    with pytest.raises(reel.Cancelled, match="client is closed"):
        await asyncio.wait_for(task, 10)
    with pytest.raises(reel.Cancelled, match="client is closed"):
        await c.kv.get("app", "k")


async def test_async_close_ends_tails_and_follows_that_delivered_in_other_tasks(reeld):
    """grpc.aio's channel close cancels only calls it finds in a task's top
    frame, not the ones inside the library's iterators: a tail or follow
    that had delivered something went on waiting for ever after close()."""
    c = reel.aio.connect(reeld.addr)
    await c.kv.put("app", "k", 1)
    run = await c.runs.begin("a", "u", "s", "follow-close", heartbeat=False)
    await run.append("note", 1)
    streams = {"tail": c.events.tail("kv.app.>"), "follow": run.follow()}
    got = {name: asyncio.Event() for name in streams}

    async def consume(name):
        async for _ in streams[name]:
            got[name].set()

    tasks = {name: asyncio.create_task(consume(name)) for name in streams}
    for e in got.values():
        await asyncio.wait_for(e.wait(), 10)
    await c.close()
    # Waited for, not cancelled on a timeout (a cancel would end them too).
    done, pending = await asyncio.wait(tasks.values(), timeout=10)
    for task in pending:
        task.cancel()
    assert not pending, [n for n, t in tasks.items() if t in pending]
    for task in done:
        with pytest.raises(reel.Cancelled, match="client is closed"):
            task.result()


def test_misuse_is_refused_naming_the_argument(client):
    with pytest.raises(TypeError, match="value: cannot be sent as JSON: a lone surrogate"):
        client.kv.put("app", "b", "\ud800")
    deep = []
    for _ in range(5000):
        deep = [deep]
    with pytest.raises(TypeError, match="^value: cannot be sent as JSON: nested deeper"):
        client.kv.put("app", "deep", deep)
    with pytest.raises(TypeError, match="^key: a str, not int$"):
        client.kv.put("app", 5, 1)
    with pytest.raises(TypeError, match="^namespace: a str, not int$"):
        client.kv.get(7, "k")
    with pytest.raises(ValueError, match="^key: not valid Unicode"):
        client.kv.get("app", "\udcff")
    with pytest.raises(TypeError, match="^key: a str, not int$"):
        client.kv.watch("app", 5)
    with pytest.raises(TypeError, match="^page_size: an int, not str$"):
        list(client.kv.list("app", page_size="10"))
    assert client.kv.get("app", "b") is None


def test_none_bools_and_durations_that_are_not_numbers_are_refused(client):
    """None for a name, a bool for a version, and a duration that is None,
    NaN, infinite or not positive: each names its argument before anything
    is sent (before, None went out as an empty key, True as version 1, and
    sleep(nan) slept)."""
    with pytest.raises(TypeError, match="^key: a str, not None$"):
        client.kv.put("app", None, 1)
    with pytest.raises(TypeError, match="^namespace: a str, not None$"):
        client.kv.get(None, "k")
    with pytest.raises(TypeError, match="^if_version: an int, not bool$"):
        client.kv.put("app", "k", 1, if_version=True)
    with pytest.raises(ValueError, match="^if_version: -1 cannot be sent"):
        client.kv.delete("app", "k", if_version=-1)
    with pytest.raises(TypeError, match="^key: a str, not None$"):
        client.workspace.put("app", None, b"x")
    with pytest.raises(TypeError, match="^ttl: seconds as a number, more than 0; not NoneType$"):
        client.runs.begin("app", "u", "s", "i", ttl=None)
    with pytest.raises(ValueError, match="^ttl: seconds as a finite number, more than 0; not 0$"):
        client.worker("app", lambda run: None, ttl=0)
    with pytest.raises(ValueError, match="^delay: seconds as a finite number, 0 or more; not inf$"):
        client.signals.send("r", "go", delay=float("inf"))
    run = client.runs.begin("app", "u", "s", "sleeper", heartbeat=False)
    for bad in (float("nan"), float("inf"), -1):
        with pytest.raises(ValueError, match=f"^sleep: seconds as a finite number, 0 or more; not {bad!r}$"):
            run.sleep(bad)
    # Timeouts too, whichever call takes one (nan was a wait of 0, inf an
    # OverflowError, "5" a TypeError from a comparison).
    for bad in (float("nan"), float("inf"), -1):
        with pytest.raises(ValueError, match=f"^timeout: seconds as a finite number, 0 or more; not {bad!r}$"):
            client.signals.wait(run.run_id, "go", epoch=run.epoch, timeout=bad)
        with pytest.raises(ValueError, match=f"^timeout: seconds as a finite number, 0 or more; not {bad!r}$"):
            run.wait_for_signal("go", timeout=bad)
    with pytest.raises(TypeError, match="^timeout: seconds as a number"):
        client.signals.wait(run.run_id, "go", epoch=run.epoch, timeout="5")
    with pytest.raises(ValueError, match=r"^timeout: at most 1000000 seconds per call"):
        reel.connect(client.target, timeout=1e10)
    assert list(run.read()) == []
    assert client.kv.get("app", "k") is None
    with pytest.raises(TypeError, match=r"^Client: use reel.connect\(addr"):
        reel.Client(client.target)
    with pytest.raises(TypeError, match=r"^Client: use reel.aio.connect\(addr"):
        reel.aio.Client(client.target)


def test_the_async_worker_polls_as_the_sync_one_and_tls_hides_the_key():
    import inspect
    sync = inspect.signature(reel.Client.worker).parameters["poll"].default
    assert inspect.signature(reel.aio.Client.worker).parameters["poll"].default == sync == 2.0
    pem = b"-----BEGIN PRIVATE KEY-----\nSECRET\n-----END PRIVATE KEY-----\n"
    tls = reel.TLS(ca="ca.pem", cert=b"cert", key=pem)
    assert "SECRET" not in repr(tls) and "key=" not in repr(tls) and "ca.pem" in repr(tls)


def test_errors_and_suspended_cross_a_process_boundary():
    """Raised in a process pool's worker, every exception comes back whole:
    pickled and unpickled with its fields."""
    import pickle
    s = pickle.loads(pickle.dumps(reel.Suspended("r1", "approve", info=None)))
    assert (s.run_id, s.waiting_on, s.info) == ("r1", "approve", None)
    assert str(s) == "run r1 parked: WAITING on 'approve'"
    e = pickle.loads(pickle.dumps(reel.NotFound("gone", method="GetValue")))
    assert isinstance(e, reel.NotFound) and "gone" in str(e)


async def test_async_close_ends_a_stream_between_reconnects_at_once(tmp_path):
    """close() cancelled the streams' calls: a watch waiting out its pause
    between reconnect attempts (reeld down) had none, and went on sleeping
    (up to 2 s) before its reader got Cancelled."""
    from conftest import Reeld
    server = Reeld(str(tmp_path / "data")).start()
    c = reel.aio.connect(server.addr, reconnect_timeout=120)
    try:
        w = c.kv.watch("cb", "k", now=True)
        first = asyncio.Event()

        async def consume():
            async for _ in w:
                first.set()

        task = asyncio.create_task(consume())
        await asyncio.wait_for(first.wait(), 10)
        await asyncio.get_running_loop().run_in_executor(None, server.stop)
        end = time.monotonic() + 60
        while w.reconnects < 6:             # the pauses are about a second by then
            assert time.monotonic() < end and not task.done()
            await asyncio.sleep(0.05)
        await c.close()
        # Within a few turns of the loop (no I/O: a pause ended, a task's
        # end handed on), not when the pause, most of a second, is over.
        for _ in range(200):
            if task.done():
                break
            await asyncio.sleep(0)
        assert task.done(), "the reader waited out the reconnect pause"
        with pytest.raises(reel.Cancelled, match="client is closed"):
            task.result()
    finally:
        await c.close()
        server.kill()


async def _connect(addr):
    return reel.aio.connect(addr)


def test_async_a_client_used_from_another_event_loop_says_so(reeld):
    """A client made in one event loop and called from another failed
    deep in grpc: "Event loop is closed" once its loop had ended, "attached
    to a different loop" while it was there."""
    first = asyncio.new_event_loop()
    try:
        c = first.run_until_complete(_connect(reeld.addr))

        async def elsewhere():
            with pytest.raises(RuntimeError, match="another event loop"):
                await asyncio.wait_for(c.kv.get("ol", "k"), 10)
            with pytest.raises(RuntimeError, match="another event loop"):
                await asyncio.wait_for(c.runs.begin("ol", "u", "s", "i"), 10)
            with pytest.raises(RuntimeError, match="another event loop"):
                async for _ in c.kv.watch("ol", "k"):
                    break

        asyncio.run(elsewhere())
        first.run_until_complete(c.kv.put("ol", "k", 1))   # its own loop still works
        first.run_until_complete(c.close())
    finally:
        first.close()
