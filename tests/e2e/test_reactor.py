"""reel-reactor end to end: a real reeld, real reel-reactor processes and
a Python HTTP worker that checks each request's Standard Webhooks
signature (sinkutil's own implementation of the spec) and claims the run
with ClaimRun(expected_epoch), as docs/reactor.md tells a worker to.

A run becomes claimable here the way reeld makes one: a WAITING run's
signal arrives (BeginRun, SuspendRun, SendSignal), which commits it
RUNNABLE with a run.<id>.RUNNABLE event; or its lease expires without a
heartbeat, which commits it RUNNABLE with a LEASE_EXPIRED event. The
sweep's tests put the reactor's consumer past that event first, so that
only a sweep can find the run.

Binary: $REEL_REACTOR, or bazel-bin.
"""
import json
import resource
import re
import os
import socket
import subprocess
import threading
import time
import http.server

import grpc
import pytest

from reel.v1 import journal_pb2 as J
from reel.v1 import kv_pb2 as K
from reel.v1 import signals_pb2 as S
from reel.v1 import wal_pb2 as W
from conftest import ROOT, Reeld, free_port, sanitized, unary
from sinkutil import SECRET, OLD_SECRET, Daemon, verify, wait_for

REEL_REACTOR = os.environ.get("REEL_REACTOR") or os.path.join(
    ROOT, "bazel-bin", "reactor", "reel-reactor")


def did(run):
    """A run's dispatch id: <run_id>:<epoch>:<attempt>."""
    return f"{run.run_id}:{run.lease_epoch}:{run.attempt}"


ASAN = sanitized(REEL_REACTOR)


def _varint(v):
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def claim_request(run_id, owner, epoch, ttl_ms=30000):
    """ClaimRunRequest with expected_epoch (field 4): set through the stubs
    when they know it, else appended as raw wire bytes (a reeld without the
    field ignores it, as proto3 does with unknown fields)."""
    req = J.ClaimRunRequest(run_id=run_id, lease_owner=owner, lease_ttl_ms=ttl_ms)
    if "expected_epoch" in J.ClaimRunRequest.DESCRIPTOR.fields_by_name:
        req.expected_epoch = epoch
        return req.SerializeToString()
    return req.SerializeToString() + b"\x20" + _varint(epoch)


class Reel:
    def __init__(self, addr):
        self.ch = grpc.insecure_channel(addr)
        u = lambda m, req, resp: unary(self.ch, m, req, resp)
        self.begin = u("/reel.v1.Journal/BeginRun", J.BeginRunRequest, J.Run)
        self.suspend = u("/reel.v1.Journal/SuspendRun", J.SuspendRunRequest, J.Run)
        self.get = u("/reel.v1.Journal/GetRun", J.GetRunRequest, J.Run)
        self.send = u("/reel.v1.Signals/SendSignal", S.SendSignalRequest,
                      S.SendSignalResponse)
        self.get_value = u("/reel.v1.KV/GetValue", K.GetValueRequest, K.GetValueResponse)
        self.list_values = u("/reel.v1.KV/ListValues", K.ListValuesRequest,
                             K.ListValuesResponse)
        self.consumers = u("/reel.v1.Wal/ListConsumers", W.ListConsumersRequest,
                           W.ListConsumersResponse)
        self.claim_raw = self.ch.unary_unary(
            "/reel.v1.Journal/ClaimRun", request_serializer=lambda b: b,
            response_deserializer=J.Run.FromString)

    def claimable(self, app, i, owner="starter"):
        """A run of app made RUNNABLE by the signal it waits for; returns
        the Run as SuspendRun left it (the RUNNABLE commit keeps its
        epoch; a reactor may have dispatched it by the time this returns)."""
        r = self.begin(J.BeginRunRequest(app=app, user="u", session=f"s{i}",
                                         invocation_id=f"inv{i}", lease_owner=owner),
                       timeout=10)
        w = self.suspend(J.SuspendRunRequest(run_id=r.run_id, lease_epoch=r.lease_epoch,
                                             waiting_on="go"), timeout=10)
        assert w.status == J.Run.WAITING and w.lease_epoch == r.lease_epoch, w
        self.send(S.SendSignalRequest(run_id=r.run_id, name="go", payload='{"i":%d}' % i),
                  timeout=10)
        return w

    def past_its_expiry(self, run, consumer="reactor"):
        """Waits for run's lease expiry to commit, then makes the reactor's
        durable consumer start after it (and after everything else so
        far): a reactor then never receives the run's LEASE_EXPIRED event,
        and only a sweep can find the run."""
        wait_for("the lease expiry's commit",
                 lambda: self.get(J.GetRunRequest(run_id=run.run_id), timeout=10).reason
                 == "LEASE_EXPIRED")
        head = unary(self.ch, "/reel.v1.Wal/GetHead", W.GetHeadRequest,
                     W.GetHeadResponse)(W.GetHeadRequest(), timeout=10).head_revision
        sub = self.ch.unary_stream(
            "/reel.v1.Wal/SubscribeEvents",
            request_serializer=W.SubscribeEventsRequest.SerializeToString,
            response_deserializer=W.Event.FromString)
        stream = sub(W.SubscribeEventsRequest(from_revision=head, consumer=consumer,
                                              subject_pattern="run.*.RUNNABLE"),
                     timeout=30)
        mine = lambda: [c for c in self.consumers(W.ListConsumersRequest(),
                                                  timeout=10).consumers
                        if c.name == consumer]
        wait_for("the consumer", lambda: mine() and mine()[0].active)
        stream.cancel()
        wait_for("the consumer let go", lambda: not mine()[0].active)
        assert mine()[0].acked_revision == head

    def acked(self, consumer="reactor"):
        for c in self.consumers(W.ListConsumersRequest(), timeout=10).consumers:
            if c.name == consumer:
                return c.acked_revision
        return None

    def close(self):
        self.ch.close()


class Worker:
    """An HTTP worker on a free port. Each request is checked (signature,
    body) and recorded; `plan(fn)` decides what to do: fn(request) ->
    "claim" (claim, then 200 or 409), an HTTP status, {"status": S,
    "headers": {...}}, or ("hang", s)."""

    def __init__(self, reel, secret=SECRET, owner="worker"):
        self.reel, self.secret, self.owner = reel, secret, owner
        self.lock = threading.Lock()
        self.requests = []       # answered
        self.arrived = []        # begun, answered or not
        self.claims = {}         # run_id -> the Run ClaimRun returned
        self.claim_errors = []
        self.active = 0
        self.max_active = 0
        self.decide = lambda req: "claim"
        w = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                n = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(n)
                req = {"id": self.headers.get("webhook-id"),
                       "ts": self.headers.get("webhook-timestamp"),
                       "body": body, "at": time.monotonic()}
                req["sig_ok"] = verify(w.secret, req["id"], req["ts"], body,
                                       self.headers.get("webhook-signature", ""))
                req["json"] = json.loads(body)
                with w.lock:
                    w.arrived.append(req)
                    w.active += 1
                    w.max_active = max(w.max_active, w.active)
                try:
                    status = w.handle(req)
                finally:
                    with w.lock:
                        w.active -= 1
                headers = {}
                if isinstance(status, dict):
                    status, headers = status["status"], status["headers"]
                req["status"] = status
                with w.lock:
                    w.requests.append(req)
                    # A claim shows once its request does: a test that saw
                    # claimed() finds the 200 in all().
                    run = req.pop("claim", None)
                    if run is not None:
                        assert run.run_id not in w.claims or \
                            w.claims[run.run_id].lease_epoch != run.lease_epoch
                        w.claims[run.run_id] = run
                try:
                    self.send_response(status)
                    for k, v in headers.items():
                        self.send_header(k, v)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                except OSError:
                    pass

            def log_message(self, *a):
                pass

        self.port = free_port()
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        self.server.handle_error = lambda request, address: None
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.port}/run"

    def handle(self, req):
        what = self.decide(req)
        if isinstance(what, tuple):
            time.sleep(what[1])
            return 200
        if what != "claim":
            return what   # a status, or a status with headers
        d = req["json"]["data"]
        try:
            run = self.reel.claim_raw(claim_request(d["run_id"], self.owner, d["epoch"]),
                                      timeout=10)
        except grpc.RpcError as e:
            if e.code() == grpc.StatusCode.FAILED_PRECONDITION:
                return 409   # another claim won: nothing for this worker
            with self.lock:
                self.claim_errors.append(str(e))
            return 500
        req["claim"] = run   # recorded with the answer (do_POST)
        return 200

    def plan(self, fn):
        self.decide = fn

    def all(self):
        with self.lock:
            return list(self.requests)

    def claimed(self):
        with self.lock:
            return dict(self.claims)

    def close(self):
        self.server.shutdown()
        self.server.server_close()


_LIVE = []


@pytest.fixture(autouse=True)
def no_reactor_left():
    yield
    while _LIVE:
        _LIVE.pop().kill()


class Reactor(Daemon):
    """One reel-reactor process."""

    name = "reel-reactor"

    def __init__(self, tmp_path, addr, config, *args, preexec_fn=None):
        super().__init__(REEL_REACTOR, tmp_path, addr, config, *args, live=_LIVE,
                         preexec_fn=preexec_fn)


def config(tmp_path, apps, **top):
    doc = {"apps": apps}
    doc.update(top)
    path = tmp_path / f"reactor-{time.monotonic_ns()}.json"
    path.write_text(json.dumps(doc))
    return str(path)


def app(name, url, **extra):
    a = {"app": name, "url": url, "secrets": [OLD_SECRET, SECRET],
         "retry_schedule_ms": [50, 100, 100, 100, 100, 100, 100, 100]}
    a.update(extra)
    return a


@pytest.fixture
def reel(reeld):
    r = Reel(reeld.addr)
    yield r
    r.close()


@pytest.fixture
def worker(reel):
    w = Worker(reel)
    yield w
    w.close()


def check_built():
    if not os.path.exists(REEL_REACTOR):
        pytest.fail(f"{REEL_REACTOR} not found: bazel build //reactor:reel-reactor")


def test_push_dispatch_retries_a_failing_worker_until_it_claims(tmp_path, reeld, reel, worker):
    check_built()
    failures = {}

    def fail_three_times(req):
        with worker.lock:
            failures[req["id"]] = failures.get(req["id"], 0) + 1
            n = failures[req["id"]]
        return 503 if n <= 3 else "claim"
    worker.plan(fail_three_times)
    cfg = config(tmp_path, [app("shop", worker.url)], sweep_interval_ms=0)
    rx = Reactor(tmp_path, reeld.addr, cfg)
    rx.wait_log(r"1 app on reel \S+, no sweep \(sweep_interval_ms 0\)")
    runs = [reel.claimable("shop", i) for i in range(5)]
    others = [reel.claimable("other", i) for i in range(3)]  # not configured
    wait_for("every run claimed", lambda: len(worker.claimed()) == 5)
    claimed = worker.claimed()
    for r in runs:
        got = claimed[r.run_id]
        assert got.lease_owner == "worker"
        assert got.lease_epoch == r.lease_epoch + 1
    reqs = worker.all()
    assert all(q["sig_ok"] for q in reqs), "a request whose signature does not verify"
    by_id = {}
    for q in reqs:
        by_id.setdefault(q["id"], []).append(q)
    assert set(by_id) == {did(r) for r in runs}
    for r in runs:
        tries = by_id[did(r)]
        # Three 503s, then the claim: the same id and body on every retry.
        assert [q["status"] for q in tries] == [503, 503, 503, 200]
        assert len({q["body"] for q in tries}) == 1
        d = tries[0]["json"]["data"]
        assert tries[0]["json"]["type"] == "reel.run_claimable"
        assert (d["run_id"], d["app"], d["epoch"], d["attempt"], d["source"]) == \
            (r.run_id, "shop", r.lease_epoch, getattr(r, "attempt", 0), "event")
        assert d["revision"] > 0 and d["not_before_ms"] == 0
    assert not any(q["json"]["data"]["app"] == "other" for q in reqs)
    for o in others:
        assert reel.get(J.GetRunRequest(run_id=o.run_id), timeout=10).status == J.Run.RUNNABLE
    assert rx.stop() == 0
    assert "consuming run.*.RUNNABLE as reactor" in rx.log()


def test_a_throttling_workers_retry_after_is_honoured(tmp_path, reeld, reel, worker):
    check_built()
    seen = []

    def throttle_once(req):
        with worker.lock:
            seen.append(req["at"])
            n = len(seen)
        return {"status": 503, "headers": {"Retry-After": "1"}} if n == 1 else "claim"
    worker.plan(throttle_once)
    # The schedule alone would try again after 50 ms.
    cfg = config(tmp_path, [app("shop", worker.url)], sweep_interval_ms=0)
    rx = Reactor(tmp_path, reeld.addr, cfg)
    r = reel.claimable("shop", 1)
    wait_for("the claim", lambda: r.run_id in worker.claimed())
    assert len(seen) == 2 and seen[1] - seen[0] >= 0.9, seen
    rx.wait_log(r"attempt 1 failed: HTTP 503; next attempt in 1\.0 s \(the worker's Retry-After\)")
    assert rx.stop() == 0


def test_a_dispatch_given_up_is_a_dead_letter_in_reel(tmp_path, reeld, reel, worker):
    check_built()
    worker.plan(lambda req: 500)
    cfg = config(tmp_path, [app("shop", worker.url, retry_schedule_ms=[20, 20])],
                 sweep_interval_ms=0)
    rx = Reactor(tmp_path, reeld.addr, cfg)
    r = reel.claimable("shop", 1)
    key = "dead." + did(r).replace(":", ".")

    def dead():
        got = reel.get_value(K.GetValueRequest(namespace="reel-reactor", key=key), timeout=10)
        return got if got.found else None
    got = wait_for("the dead letter", dead)
    rec = json.loads(got.entry.value)
    assert rec["id"] == did(r)
    assert rec["attempts"] == 3 and rec["last_error"] == "HTTP 500"
    assert rec["request"]["data"]["run_id"] == r.run_id
    assert len(worker.all()) == 3
    # A wait under a second is said in ms, not as "0.0 s".
    assert re.search(r"attempt 1 failed: HTTP 500; next attempt in \d{1,2} ms", rx.log())
    assert rx.stop() == 0


def test_a_dead_letter_reel_refuses_holds_no_other_dispatch(tmp_path):
    """A dead letter reeld will not store (here: over its value limit) is
    tried again with a growing wait, and meanwhile the other apps' runs go
    to their workers. Retried in place, it held every dispatch."""
    check_built()
    server = Reeld(str(tmp_path / "data"), extra=["--kv-max-value-bytes", "200"]).start()
    reel = Reel(server.addr)
    good, bad = Worker(reel), Worker(reel)
    try:
        bad.plan(lambda req: 500)
        cfg = config(tmp_path, [app("bad", bad.url, retry_schedule_ms=[20, 20]),
                                app("good", good.url)], sweep_interval_ms=0)
        rx = Reactor(tmp_path, server.addr, cfg)
        reel.claimable("bad", 1)
        rx.wait_log(r"storing its dead letter reel-reactor/dead\.\S+: "
                    r"INVALID_ARGUMENT: .*; trying again in 1\.0 s")
        runs = [reel.claimable("good", i) for i in range(2, 5)]
        wait_for("the good app's runs claimed",
                 lambda: len(good.claimed()) == len(runs), timeout=15)
        assert set(good.claimed()) == {r.run_id for r in runs}
        rx.wait_log(r"storing its dead letter .*; trying again in 2\.0 s")
        assert len(bad.all()) == 3   # given up: never sent again
        assert rx.stop() == 0
    finally:
        good.close()
        bad.close()
        reel.close()
        server.stop()


def test_sighup_is_said_and_changes_nothing(tmp_path, reeld, reel, worker):
    """A closed terminal's SIGHUP killed reel-reactor at once (exit 129);
    it now says it does not reload and goes on dispatching."""
    import signal
    check_built()
    rx = Reactor(tmp_path, reeld.addr, config(tmp_path, [app("shop", worker.url)]))
    a = reel.claimable("shop", 1)
    wait_for("the first claim", lambda: a.run_id in worker.claimed())
    rx.proc.send_signal(signal.SIGHUP)
    rx.wait_log(r"SIGHUP: reel-reactor does not reload its configuration \(restart it "
                r"to apply a change\); still running")
    b = reel.claimable("shop", 2)
    wait_for("the second claim", lambda: b.run_id in worker.claimed())
    assert rx.proc.poll() is None
    assert rx.stop() == 0


def test_the_sweep_dispatches_a_run_whose_lease_expired(tmp_path, reeld, reel, worker):
    """A run whose LEASE_EXPIRED event the reactor's consumer is already
    past (acknowledged by a reactor that died before dispatching it, say):
    the sweep finds it, every sweep_interval_ms."""
    check_built()
    r = reel.begin(J.BeginRunRequest(app="shop", user="u", session="s", invocation_id="i",
                                     lease_owner="dead-worker", lease_ttl_ms=300), timeout=10)
    reel.past_its_expiry(r)
    cfg = config(tmp_path, [app("shop", worker.url)], sweep_interval_ms=200)
    rx = Reactor(tmp_path, reeld.addr, cfg)
    wait_for("the sweep's dispatch and the claim", lambda: r.run_id in worker.claimed())
    got = worker.claimed()[r.run_id]
    assert got.lease_owner == "worker" and got.lease_epoch == r.lease_epoch + 1
    q = [q for q in worker.all() if q["status"] == 200][0]
    assert q["sig_ok"] and q["id"] == did(r)
    assert q["json"]["data"]["source"] == "sweep", q
    # RUNNABLE: reeld committed the expiry before the sweep read the run.
    rx.wait_log(rf"sweep: run {r.run_id} of app shop is claimable \(RUNNABLE, epoch "
                rf"{r.lease_epoch}, attempt {r.attempt}\); dispatching")
    assert rx.stop() == 0


def test_the_first_sweep_comes_as_soon_as_the_reactor_holds_its_consumer(
        tmp_path, reeld, reel, worker):
    check_built()
    r = reel.begin(J.BeginRunRequest(app="shop", user="u", session="s", invocation_id="i",
                                     lease_owner="dead-worker", lease_ttl_ms=100), timeout=10)
    reel.past_its_expiry(r)
    # An hour between sweeps, and the consumer past the expiry's event:
    # only the first sweep, at start, can find it.
    cfg = config(tmp_path, [app("shop", worker.url)], sweep_interval_ms=3600000)
    rx = Reactor(tmp_path, reeld.addr, cfg)
    wait_for("the claim", lambda: r.run_id in worker.claimed(), timeout=15)
    assert worker.claimed()[r.run_id].lease_epoch == r.lease_epoch + 1
    assert worker.all()[0]["json"]["data"]["source"] == "sweep", worker.all()
    assert rx.stop() == 0


def test_a_dispatch_given_up_comes_back_with_the_sweep(tmp_path, reeld, reel, worker):
    check_built()
    answers = []

    def fail_until_given_up(req):
        with worker.lock:
            answers.append(req["json"]["data"]["source"])
            n = len(answers)
        return 500 if n <= 3 else "claim"
    worker.plan(fail_until_given_up)
    cfg = config(tmp_path, [app("shop", worker.url, retry_schedule_ms=[20, 20])],
                 sweep_interval_ms=300)
    rx = Reactor(tmp_path, reeld.addr, cfg)
    r = reel.claimable("shop", 1)
    wait_for("the claim after the sweep", lambda: r.run_id in worker.claimed())
    # Three attempts from the event, a dead letter, then the sweep's.
    assert answers[:4] == ["event", "event", "event", "sweep"], answers
    assert worker.claimed()[r.run_id].lease_epoch == r.lease_epoch + 1
    assert reel.get_value(K.GetValueRequest(namespace="reel-reactor",
                                            key="dead." + did(r).replace(":", ".")),
                          timeout=10).found
    assert rx.stop() == 0


def test_kill_9_cycles_lose_no_dispatch(tmp_path, reeld, reel, worker):
    check_built()
    # No sweep: every dispatch must come from the durable consumer.
    cfg = config(tmp_path, [app("shop", worker.url)], sweep_interval_ms=0)
    runs = []
    stop = threading.Event()
    errors = []

    def make():
        i = 0
        while not stop.is_set():
            try:
                runs.append(reel.claimable("shop", i))
            except grpc.RpcError as e:
                errors.append(e)
            i += 1
            time.sleep(0.01)
    t = threading.Thread(target=make, daemon=True)
    t.start()
    try:
        for cycle in range(6):
            rx = Reactor(tmp_path, reeld.addr, cfg, "--takeover")
            time.sleep(0.3 + 0.1 * cycle)
            rx.kill()
    finally:
        stop.set()
        t.join()
    assert not errors and len(runs) > 20
    rx = Reactor(tmp_path, reeld.addr, cfg, "--takeover")
    wait_for("every run claimed", lambda: {r.run_id for r in runs} <= set(worker.claimed()),
             timeout=60)
    for r in runs:
        got = reel.get(J.GetRunRequest(run_id=r.run_id), timeout=10)
        assert got.status == J.Run.RUNNING and got.lease_owner == "worker"
        assert got.lease_epoch == r.lease_epoch + 1
    # A dispatch sent again after a kill is refused by ClaimRun: 409, and
    # never a second claim.
    assert not worker.claim_errors
    assert rx.stop() == 0


def test_reeld_killed_and_restarted_while_the_reactor_runs_loses_nothing(tmp_path):
    check_built()
    server = Reeld(str(tmp_path / "data")).start()
    r = Reel(server.addr)
    worker = Worker(r)
    cfg = config(tmp_path, [app("shop", worker.url)], sweep_interval_ms=0)
    rx = Reactor(tmp_path, server.addr, cfg)
    try:
        first = [r.claimable("shop", i) for i in range(10)]
        wait_for("the first 10 claimed", lambda: {x.run_id for x in first} <= set(worker.claimed()))
        server.kill()  # kill -9
        server = Reeld(str(tmp_path / "data"), port=server.port).start()
        rest = [r.claimable("shop", i) for i in range(10, 20)]
        wait_for("the rest claimed after the restart",
                 lambda: {x.run_id for x in rest} <= set(worker.claimed()), timeout=60)
        assert rx.stop() == 0
        assert "subscribing again" in rx.log()
        assert "consumer reactor: subscribed again; events from revision" in rx.log()
    finally:
        worker.close()
        r.close()
        server.stop()


def test_the_reactor_resumes_within_seconds_of_reeld_coming_back(tmp_path):
    """Between calls nothing polled the client's channel but gRPC's backup
    poller, every 5 s, so after reeld had been away 3 s the reactor
    resumed 6-12 s after it was back; the retry now waits on the channel
    itself, reconnecting at once."""
    check_built()
    server = Reeld(str(tmp_path / "data")).start()
    r = Reel(server.addr)
    worker = Worker(r)
    cfg = config(tmp_path, [app("shop", worker.url)], sweep_interval_ms=0)
    rx = Reactor(tmp_path, server.addr, cfg)
    try:
        first = r.claimable("shop", 0)
        wait_for("the first claimed", lambda: first.run_id in worker.claimed())
        server.kill()  # kill -9
        time.sleep(3)  # the reactor's retries back off meanwhile
        server = Reeld(str(tmp_path / "data"), port=server.port).start()
        t0 = time.monotonic()
        second = r.claimable("shop", 1)
        wait_for("the second claimed", lambda: second.run_id in worker.claimed(),
                 timeout=30)
        took = time.monotonic() - t0
        assert took < 5, f"claimed {took:.1f} s after reeld was back"
        assert rx.stop() == 0
    finally:
        worker.close()
        r.close()
        server.stop()


def test_a_standby_takes_over_when_the_active_reactor_dies(tmp_path):
    check_built()
    # The server finds a dead subscriber within keepalive time + timeout.
    server = Reeld(str(tmp_path / "data"),
                   extra=["--keepalive-time", "500ms", "--keepalive-timeout", "500ms"]).start()
    r = Reel(server.addr)
    worker = Worker(r)
    cfg = config(tmp_path, [app("shop", worker.url)], sweep_interval_ms=0)
    try:
        active = Reactor(tmp_path, server.addr, cfg)
        active.wait_log(r"consuming run\.\*\.RUNNABLE as reactor")
        a = r.claimable("shop", 0)
        wait_for("the active reactor's dispatch", lambda: a.run_id in worker.claimed())
        standby = Reactor(tmp_path, server.addr, cfg)
        standby.wait_log(r"consumer reactor is held by another subscriber.*standing by")
        active.kill()
        rest = [r.claimable("shop", i) for i in range(1, 6)]
        wait_for("the standby dispatching the rest",
                 lambda: {x.run_id for x in rest} <= set(worker.claimed()), timeout=60)
        assert standby.stop() == 0
        assert "consuming run.*.RUNNABLE as reactor" in standby.log()
        assert "consumer reactor: taken over from its holder, no longer standing by" \
            in standby.log()
    finally:
        worker.close()
        r.close()
        server.stop()


@pytest.mark.parametrize("doc, want", [
    ({"apps": []}, "config: apps: must be a non-empty array"),
    ({"apps": [{"app": "shop", "secrets": [SECRET]}]}, 'apps[0] "shop": url: missing'),
    ({"apps": [{"app": "shop", "url": "ftp://x", "secrets": [SECRET]}]},
     'apps[0] "shop": url: the scheme is ftp://; it must be http:// or https://'),
    ({"apps": [{"app": "shop", "url": "http://", "secrets": [SECRET]}]},
     'apps[0] "shop": url: not a URL: No host part in the URL'),
    ({"apps": [{"app": "shop", "url": "shop-worker:8080/run", "secrets": [SECRET]}]},
     'apps[0] "shop": url: no scheme: it must start with http:// or https://'),
    ({"apps": [{"app": "shop", "url": "http://u:PASSW0RD@h:99999/", "secrets": [SECRET]}]},
     'apps[0] "shop": url: not a URL: Port number'),
    ({"apps": [{"app": "shop", "url": "http://x"}]}, 'apps[0] "shop": secrets: missing'),
    ({"apps": [{"app": "shop", "url": "http://x", "secrets": ["whsec_!!"]}]},
     'apps[0] "shop": secrets[0]:'),
    ({"apps": [{"app": "shop", "url": "http://x", "secret": [SECRET]}]},
     'apps[0] "shop": secret: unknown key'),
    ({"apps": [{"app": "shop", "url": "http://x", "secrets": [SECRET], "max_in_flight": 0}]},
     'apps[0] "shop": max_in_flight: 0 is not an integer from 1 to 1024'),
    ({"apps": [{"url": "http://x", "secrets": [SECRET]}]}, "apps[0]: app: missing"),
    ({"apps": [{"app": "a", "url": "http://x", "secrets": [SECRET]},
               {"app": "a", "url": "http://y", "secrets": [SECRET]}]},
     'apps[1] "a": app: also apps[0]'),
    ({"apps": [{"app": "a", "url": "http://x", "secrets": [SECRET]}], "sweep_interval_ms": 5},
     "config: sweep_interval_ms: must be 0 (no sweep) or an integer from 100 to 3600000"),
    ({"apps": [{"app": "a", "url": "http://x", "secrets": [SECRET]}], "queue_max_runs": 1e30},
     "config: queue_max_runs: must be an integer from 1 to 1000000"),
])
def test_bad_configs_are_refused_naming_the_field(tmp_path, doc, want):
    check_built()
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(doc))
    for cmd in (["check"], []):
        p = subprocess.run([REEL_REACTOR, *cmd, "--reel", "127.0.0.1:1", "--config", str(path)],
                           capture_output=True, text=True, timeout=30)
        assert p.returncode == 2, p
        assert want in p.stderr, p.stderr
        assert SECRET not in p.stderr
        assert "PASSW0RD" not in p.stderr
    for text, why in [("{not json", "config: not valid JSON"),
                      ("[]", "config: not a JSON object"),
                      ('{"apps": []} {"apps": []}', "config: more after the JSON value"),
                      ('{"sweep_interval_ms": 1000, "sweep_interval_ms": 1, "apps": []}',
                       'config: "sweep_interval_ms" appears twice')]:
        path.write_text(text)
        p = subprocess.run([REEL_REACTOR, "check", "--config", str(path)],
                           capture_output=True, text=True, timeout=30)
        assert p.returncode == 2 and why in p.stderr, (text, p.stderr)


@pytest.mark.parametrize("args, want", [
    ([], "--config: missing"),
    (["--config", "/nonexistent/reactor.json"], "--config: cannot open /nonexistent/reactor.json"),
    (["--config", "{cfg}", "--stop-grace-ms", "-1"],
     '--stop-grace-ms: "-1" is not an integer from 0 to 3600000'),
    (["--config", "{cfg}", "--state-namespace", "a b"],
     '--state-namespace: "a b" is not 1-256 bytes of [A-Za-z0-9_:/-]'),
    (["--config", "{cfg}", "--consumer", "x/y"],
     '--consumer: "x/y" is not 1-128 bytes of [A-Za-z0-9_.-]'),
    (["--config", "{cfg}", "--log-level", "loud"], '--log-level: "loud" is not debug'),
    (["--config", "{cfg}", "--nope"], 'unknown or incomplete flag "--nope"'),
    (["--config", "{cfg}", "--reel", "127.0.0.1:99999"],
     '--reel: "127.0.0.1:99999" is not HOST, HOST:PORT or [IPv6]:PORT (port 1-65535'),
    (["--config", "{cfg}", "--reel", "127.0.0.1:"],
     '--reel: "127.0.0.1:" is not HOST, HOST:PORT'),
    (["--config", "{cfg}", "replay"], 'unknown command "replay"'),
])
def test_bad_flags_are_refused_naming_the_flag(tmp_path, args, want):
    check_built()
    cfg = config(tmp_path, [app("shop", "http://127.0.0.1:1/run")])
    p = subprocess.run([REEL_REACTOR] + [a.replace("{cfg}", cfg) for a in args],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 2, p
    assert want in p.stderr, p.stderr


@pytest.mark.parametrize("env, args, want", [
    ({"REEL_REACTOR_CONSUMER": "a b"}, ["check"],
     'REEL_REACTOR_CONSUMER: "a b" is not 1-128 bytes of [A-Za-z0-9_.-]'),
    ({"REEL_REACTOR_STOP_GRACE_MS": "-1"}, ["check"],
     'REEL_REACTOR_STOP_GRACE_MS: "-1" is not an integer from 0 to 3600000'),
    ({"REEL_REACTOR_LOG_LEVEL": "loud"}, ["check"],
     'REEL_REACTOR_LOG_LEVEL: "loud" is not debug'),
    ({"REEL_REACTOR_STATE_NAMESPACE": "a b"}, ["check"],
     'REEL_REACTOR_STATE_NAMESPACE: "a b" is not 1-256 bytes of [A-Za-z0-9_:/-]'),
    ({"REEL_REACTOR_REEL": "127.0.0.1:99999"}, ["check"],
     'REEL_REACTOR_REEL: "127.0.0.1:99999" is not HOST, HOST:PORT'),
    ({"REEL_REACTOR_METRICS_LISTEN": "nope"}, ["--reel", "127.0.0.1:1"],
     'REEL_REACTOR_METRICS_LISTEN: "nope" is not HOST:PORT'),
    # A flag given over the variable is the one named.
    ({"REEL_REACTOR_CONSUMER": "ok"}, ["check", "--consumer", "x/y"],
     '--consumer: "x/y" is not 1-128 bytes'),
    ({"REEL_REACTOR_STOP_GRACE_MS": "5"}, ["check", "--stop-grace-ms", "x"],
     '--stop-grace-ms: "x" is not an integer'),
])
def test_a_bad_environment_variable_is_named(tmp_path, env, args, want):
    """A bad REEL_REACTOR_* value was reported under its flag's name
    (--consumer: "a b" ...), a flag the operator never passed."""
    check_built()
    cfg = config(tmp_path, [app("shop", "http://127.0.0.1:1/run")])
    p = subprocess.run([REEL_REACTOR, *args, "--config", cfg], capture_output=True,
                       text=True, timeout=30, env=dict(os.environ, **env))
    assert p.returncode == 2, p
    assert want in p.stderr, p.stderr
    if not want.startswith("--"):
        assert ": --" not in p.stderr, p.stderr


def test_a_metrics_address_in_use_is_a_configuration_error(tmp_path, reeld):
    """A --metrics-listen port another process holds is the operator's to
    change: exit 2, not 1 (which says the consumer stopped for good, so a
    supervisor would not start it again)."""
    check_built()
    cfg = config(tmp_path, [app("shop", "http://127.0.0.1:1/run")])
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        addr = "127.0.0.1:%d" % held.getsockname()[1]
        p = subprocess.run([REEL_REACTOR, "--reel", reeld.addr, "--config", cfg,
                            "--metrics-listen", addr],
                           capture_output=True, text=True, timeout=30)
    assert p.returncode == 2, p
    assert "--metrics-listen" in p.stderr and addr in p.stderr, p.stderr


def _nofile(soft, hard):
    return lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_apps_that_cannot_fit_the_open_files_limit_are_refused(tmp_path, reeld):
    """Past the open-files limit a dispatch's connect failed as if the
    worker refused it, using up its retries while the worker was fine:
    apps whose requests in flight cannot fit are refused at start, and the
    soft limit is raised to the hard one first."""
    check_built()
    cfg = config(tmp_path, [app("shop", "http://127.0.0.1:1/run", max_in_flight=1024),
                            app("billing", "http://127.0.0.1:1/run", max_in_flight=100)])
    p = subprocess.run([REEL_REACTOR, "--reel", reeld.addr, "--config", cfg],
                       capture_output=True, text=True, timeout=30,
                       preexec_fn=_nofile(256, 256))
    assert p.returncode == 2, p
    assert ('max_in_flight: the apps need up to 1188 open files at once (1124 '
            'connections: each app\'s max_in_flight, the most "shop"\'s 1024; and 64 '
            "for reel-reactor's own), more than the open-files limit of 256") in p.stderr, \
        p.stderr
    r = Reactor(tmp_path, reeld.addr, cfg, preexec_fn=_nofile(64, 4096))
    deadline = time.monotonic() + 10
    while True:
        with open(f"/proc/{r.proc.pid}/limits") as f:
            line = [ln for ln in f if ln.startswith("Max open files")][0]
        if line.split()[3:5] == ["4096", "4096"] or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert line.split()[3:5] == ["4096", "4096"], line
    assert r.proc.poll() is None
    assert r.stop() == 0


def test_check_accepts_a_valid_configuration(tmp_path):
    check_built()
    cfg = config(tmp_path, [app("shop", "http://127.0.0.1:1/run"),
                            app("billing", "https://example.com/run", max_in_flight=1)])
    p = subprocess.run([REEL_REACTOR, "check", "--config", cfg],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 0 and p.stdout.strip() == f"{cfg}: 2 apps, valid", p


def test_a_stuck_worker_keeps_memory_and_requests_bounded(tmp_path, reeld, reel, worker):
    check_built()
    release = threading.Event()
    # 300 s: longer than the 600 runs take to make under ASan on a busy
    # machine (a 500, or the reactor's own timeout, would settle one).
    worker.plan(lambda req: 200 if release.wait(300) else 500)
    cfg = config(tmp_path, [app("shop", worker.url, max_in_flight=4, timeout_ms=300000)],
                 sweep_interval_ms=0, queue_max_runs=50)
    rx = Reactor(tmp_path, reeld.addr, cfg)
    runs = [reel.claimable("shop", i) for i in range(40)]
    wait_for("4 requests on the wire", lambda: worker.active == 4)
    rss = {40: rx.rss_kib()}
    runs += [reel.claimable("shop", i) for i in range(40, 600)]
    # The reactor reads up to its queue, then waits; reel holds the rest.
    rx.wait_log(r"queue full: 50 dispatches held \(queue_max_runs\)")
    rss[600] = rx.rss_kib()
    assert worker.max_active == 4, worker.max_active
    # Nothing was settled, so nothing past it is acknowledged: the first
    # dispatch's RUNNABLE event is still after the consumer's cursor.
    assert worker.all() == []
    with worker.lock:
        first = min(q["json"]["data"]["revision"] for q in worker.arrived)
    assert (reel.acked() or 0) < first
    print(f"reel-reactor RSS: {rss[40]} KiB at 40 held runs, {rss[600]} KiB at 600")
    if not ASAN:
        assert rss[600] - rss[40] < 8 * 1024, rss
    release.set()
    wait_for("every run dispatched once the worker answers",
             lambda: {did(r) for r in runs} <= {q["id"] for q in worker.all()}, timeout=60)
    assert worker.max_active <= 4
    assert rx.stop() == 0


def test_a_lease_expiry_event_is_pushed_and_claimed_with_its_epoch(tmp_path, reeld, reel, worker):
    check_built()
    # No sweep: the dispatch must come from the LEASE_EXPIRED event.
    cfg = config(tmp_path, [app("shop", worker.url)], sweep_interval_ms=0)
    rx = Reactor(tmp_path, reeld.addr, cfg)
    r = reel.begin(J.BeginRunRequest(app="shop", user="u", session="s", invocation_id="i",
                                     lease_owner="dead-worker", lease_ttl_ms=300), timeout=10)
    wait_for("the claim", lambda: r.run_id in worker.claimed())
    q = [q for q in worker.all() if q["status"] == 200][0]
    d = q["json"]["data"]
    assert d["source"] == "event" and d["reason"] == "LEASE_EXPIRED"
    assert d["epoch"] == r.lease_epoch and d["attempt"] == r.attempt
    assert q["id"] == did(r)
    assert worker.claimed()[r.run_id].lease_epoch == r.lease_epoch + 1
    # The dead worker's epoch is fenced: a claim expecting it is refused.
    with pytest.raises(grpc.RpcError) as e:
        reel.claim_raw(claim_request(r.run_id, "late", r.lease_epoch), timeout=10)
    assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert rx.stop() == 0


def test_metrics_count_dispatches_failures_and_lag(tmp_path, reeld, reel, worker):
    """--metrics-listen: the exposition passes both independent checks
    (test_metrics.scrape), and its figures follow what the worker saw:
    every dispatch, every failed attempt, nothing in flight and no lag once
    every run is claimed."""
    from test_metrics import documented_and_dashboarded, ready, scrape, value
    check_built()
    tries = {}

    def fail_twice(req):
        with worker.lock:
            tries[req["id"]] = tries.get(req["id"], 0) + 1
            n = tries[req["id"]]
        return 503 if n <= 2 else "claim"
    worker.plan(fail_twice)
    port = free_port()
    cfg = config(tmp_path, [app("shop", worker.url)], sweep_interval_ms=0)
    rx = Reactor(tmp_path, reeld.addr, cfg, "--metrics-listen", f"127.0.0.1:{port}")
    wait_for("reel-reactor ready", lambda: ready(port) == 200)
    assert value(scrape(port), "reel_reactor_dispatches_total") == 0
    runs = [reel.claimable("shop", i) for i in range(4)]
    wait_for("every run claimed", lambda: len(worker.claimed()) == 4)
    wait_for("lag 0", lambda: value(scrape(port), "reel_reactor_lag") == 0)
    m = scrape(port)
    assert value(m, "reel_reactor_dispatches_total") == len(runs)
    assert value(m, "reel_reactor_delivered_total") == len(runs)
    assert value(m, "reel_reactor_failures_total") == 2 * len(runs)
    assert value(m, "reel_reactor_dead_letters") == 0
    assert value(m, "reel_reactor_in_flight") == 0
    assert value(m, "reel_reactor_reel_up") == 1
    documented_and_dashboarded(port, dashboard=False)
    assert rx.stop() == 0



def test_a_full_queue_keeps_memory_flat_across_sweeps(tmp_path, reeld, reel, worker):
    """A worker that never answers fills the queue with the events of
    expired leases, and the sweep (every 100 ms) keeps polling the
    connection reel's stream shares. The reactor's memory must level off:
    what reel sends on a stream the reactor does not read (a PROGRESS every
    second) was kept by gRPC, each holding a whole read buffer, for as
    long as the queue stayed full."""
    check_built()
    worker.plan(lambda req: ("hang", 60))
    cfg = config(tmp_path, [app("shop", worker.url, max_in_flight=2, timeout_ms=600000)],
                 sweep_interval_ms=100, queue_max_runs=10)
    rx = Reactor(tmp_path, reeld.addr, cfg, "--stop-grace-ms", "0")
    for i in range(200):
        reel.begin(J.BeginRunRequest(app="shop", user="u", session=f"s{i}",
                                     invocation_id="i", lease_owner="dead-worker",
                                     lease_ttl_ms=10), timeout=10)
    wait_for("2 requests on the wire", lambda: worker.active == 2)
    rx.wait_log(r"queue full: 10 dispatches held \(queue_max_runs\)")
    time.sleep(2)
    samples = []
    for _ in range(3):
        samples.append(rx.rss_kib())
        time.sleep(7)
    samples.append(rx.rss_kib())
    print(f"reel-reactor RSS every 7 s, 100 ms sweeps, the queue full: {samples} KiB")
    # Growth over the last window against the first: a leak grows the same
    # in both (about 64 KiB a second, 448 KiB a window); the allocator's own
    # moves, a few hundred KiB either way, pass.
    early, late = samples[1] - samples[0], samples[3] - samples[2]
    if not ASAN:
        assert late < max(320, early // 2), samples
    assert worker.active == 2 and len(worker.arrived) == 2
    assert rx.log().count("queue full") == 1
    assert rx.stop() == 0


def test_an_invalidated_consumer_stops_the_reactor_while_its_queue_is_full(tmp_path):
    """reeld invalidates the consumer (its unacknowledged events pass
    --wal-consumer-max-lag-bytes) while a worker that never answers holds
    the queue: the reactor exits 1 within seconds, naming why, instead of
    running on until the stuck dispatch settles (its whole retry
    schedule)."""
    check_built()
    server = Reeld(str(tmp_path / "data"),
                   extra=["--wal-retention-bytes", "200000",
                          "--wal-consumer-max-lag-bytes", "300000"]).start()
    r = Reel(server.addr)
    worker = Worker(r)
    worker.plan(lambda req: ("hang", 60))
    cfg = config(tmp_path, [app("shop", worker.url, timeout_ms=600000)],
                 sweep_interval_ms=0, queue_max_runs=1)
    try:
        rx = Reactor(tmp_path, server.addr, cfg)
        rx.wait_log(r"consuming run\.\*\.RUNNABLE as reactor")
        r.claimable("shop", 0)
        r.claimable("shop", 1)
        wait_for("the dispatch on the wire", lambda: worker.active == 1)
        rx.wait_log(r"queue full: 1 dispatches held")
        # About 1 KB an event (the labels), past the lag limit: runs of an
        # app no worker has, their leases expired (RUNNABLE events too).
        for i in range(400):
            r.begin(J.BeginRunRequest(app="other", user="u", session=f"o{i}",
                                      invocation_id="i", lease_owner="dead-worker",
                                      lease_ttl_ms=10, labels={"pad": "x" * 900}),
                    timeout=10)

        def invalidated():
            for c in r.consumers(W.ListConsumersRequest(), timeout=10).consumers:
                if c.name == "reactor" and c.invalidated:
                    return c
            return None
        wait_for("reeld to invalidate the consumer", invalidated)
        t0 = time.monotonic()
        wait_for("reel-reactor to exit", lambda: rx.proc.poll() is not None, timeout=15)
        took = time.monotonic() - t0
        assert rx.proc.returncode == 1, rx.log()
        assert took < 6, f"exited {took:.1f} s after the invalidation"
        assert re.search(r'stopped: consumer reactor: FAILED_PRECONDITION: '
                         r'.*consumer "reactor" was invalidated', rx.log()), rx.log()
        assert "reel-reactor stopped (exit 1)" in rx.log()
        # The stuck dispatch was abandoned, never settled.
        assert worker.all() == []
    finally:
        worker.close()
        r.close()
        server.stop()
