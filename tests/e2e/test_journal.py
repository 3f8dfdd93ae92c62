"""reel.v1.Journal end to end: runs, idempotent BeginRun, leases and fencing,
gapless appends with idempotency keys, reads, subscriptions, suspension,
listing, recovery and claims, durability across restarts (SIGTERM and
SIGKILL), and bad input, against a real reeld through Python's grpcio.

Every test gets a fresh reeld (the `reeld` fixture) or starts its own on a
fresh data dir. Every wait is bounded; lease expiry is tested with short
TTLs (a second or two where calls must come before the expiry, a few hundred
ms where none must) and waits past them: until the expiry is listed, or
until the lease's time has passed.
"""
import datetime
import json
import queue
import re
import signal
import threading
import time

import grpc
import pytest

from reel.v1 import journal_pb2 as pb
from conftest import Reeld, stream, unary

Run = pb.Run
UNSPECIFIED = Run.STATUS_UNSPECIFIED
RUNNABLE = Run.RUNNABLE
RUNNING = Run.RUNNING
WAITING = Run.WAITING
COMPLETED = Run.COMPLETED
FAILED = Run.FAILED
CANCELLED = Run.CANCELLED

OK = grpc.StatusCode.OK
NOT_FOUND = grpc.StatusCode.NOT_FOUND
INVALID = grpc.StatusCode.INVALID_ARGUMENT
PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION
ABORTED = grpc.StatusCode.ABORTED
ALREADY = grpc.StatusCode.ALREADY_EXISTS

T = 10                  # seconds: the bound on any single unary call or single wait
DEFAULT_TTL = 30000
MAX_TTL = 86400000
MAX_PAYLOAD = 1 << 20
UNKNOWN_ID = "01ARZ3NDEKTSV4RRFFQ69G5FAV"    # a well-formed ULID no test creates
RUN_ID_RE = re.compile(r"^[0-9A-Z]{26}$")
CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


# --------------------------------------------------------------------------
# helpers


def j(obj):
    return json.dumps(obj, separators=(",", ":"), sort_keys=True)


def now_ms():
    return int(time.time() * 1000)


def has_number(text, n):
    return re.search(rf"(?<![0-9]){n}(?![0-9])", text or "") is not None


def names_time(text, ms):
    """text names the instant ms: as epoch milliseconds or as an ISO-8601 UTC
    time (to the second)."""
    iso = datetime.datetime.fromtimestamp(ms / 1000, datetime.timezone.utc)
    return has_number(text, ms) or iso.strftime("%Y-%m-%dT%H:%M:%S") in (text or "")


def rpc_error(fn, *args, **kw):
    with pytest.raises(grpc.RpcError) as e:
        r = fn(*args, **kw)
        shown = ", ".join([repr(a)[:80] for a in args] +
                          [f"{k}={v!r:.80}" for k, v in kw.items()])
        raise AssertionError(f"expected an error from ({shown}), got {r!r:.600}")
    return e.value


def fmt_err(e):
    return f"{e.code()} {e.details()!r}"


class Journal:
    """Thin wrappers over reel.v1.Journal on one channel."""

    def __init__(self, channel):
        def m(name, req, resp):
            return unary(channel, f"/reel.v1.Journal/{name}", req, resp)

        self.channel = channel
        self._begin = m("BeginRun", pb.BeginRunRequest, pb.Run)
        self._heartbeat = m("Heartbeat", pb.HeartbeatRequest, pb.Run)
        self._append = m("Append", pb.AppendRequest, pb.AppendResponse)
        self._read = m("ReadJournal", pb.ReadJournalRequest, pb.ReadJournalResponse)
        self._subscribe = stream(channel, "/reel.v1.Journal/SubscribeRun",
                                 pb.SubscribeRunRequest, pb.JournalEntry)
        self._end = m("EndRun", pb.EndRunRequest, pb.Run)
        self._suspend = m("SuspendRun", pb.SuspendRunRequest, pb.Run)
        self._get = m("GetRun", pb.GetRunRequest, pb.Run)
        self._list = m("ListRuns", pb.ListRunsRequest, pb.ListRunsResponse)
        self._recover = m("ListRunsToRecover", pb.ListRunsToRecoverRequest,
                          pb.ListRunsToRecoverResponse)
        self._claim = m("ClaimRun", pb.ClaimRunRequest, pb.Run)

    def begin(self, inv="inv-1", app="app", user="alice", session="s1", owner="w1",
              ttl=0, labels=None):
        return self._begin(pb.BeginRunRequest(
            app=app, user=user, session=session, invocation_id=inv, lease_owner=owner,
            lease_ttl_ms=ttl, labels=labels or {}), timeout=T)

    def heartbeat(self, run_id, epoch, ttl=0):
        return self._heartbeat(pb.HeartbeatRequest(run_id=run_id, lease_epoch=epoch,
                                                   lease_ttl_ms=ttl), timeout=T)

    def append(self, run_id, epoch, payload="{}", kind="step", key="", expected_seq=0):
        return self._append(pb.AppendRequest(
            run_id=run_id, lease_epoch=epoch, kind=kind, payload=payload,
            idempotency_key=key, expected_seq=expected_seq), timeout=T)

    def read(self, run_id, from_seq=0, limit=0):
        return self._read(pb.ReadJournalRequest(run_id=run_id, from_seq=from_seq,
                                                limit=limit), timeout=T)

    def read_all(self, run_id):
        out, cursor = [], 0
        for _ in range(1000):
            r = self.read(run_id, cursor, 1000)
            out.extend(r.entries)
            if not r.more:
                return out
            assert r.next_from_seq > cursor, r
            cursor = r.next_from_seq
        raise AssertionError("ReadJournal never ended")

    def subscribe(self, run_id, from_seq=0, deadline=30):
        return Sub(self._subscribe, pb.SubscribeRunRequest(run_id=run_id, from_seq=from_seq),
                   deadline)

    def end(self, run_id, epoch, status=COMPLETED, result=""):
        return self._end(pb.EndRunRequest(run_id=run_id, lease_epoch=epoch, status=status,
                                          result=result), timeout=T)

    def suspend(self, run_id, epoch, waiting_on="signal"):
        return self._suspend(pb.SuspendRunRequest(run_id=run_id, lease_epoch=epoch,
                                                  waiting_on=waiting_on), timeout=T)

    def get(self, run_id):
        return self._get(pb.GetRunRequest(run_id=run_id), timeout=T)

    def list(self, **kw):
        return self._list(pb.ListRunsRequest(**kw), timeout=T)

    def list_all(self, page=1000, **kw):
        out, cursor = [], ""
        for _ in range(1000):
            r = self.list(start_after=cursor, limit=page, **kw)
            out.extend(r.runs)
            if not r.more:
                return out
            cursor = r.next_start_after
        raise AssertionError("ListRuns never ended")

    def recover(self, limit=0):
        return self._recover(pb.ListRunsToRecoverRequest(limit=limit), timeout=T)

    def claim(self, run_id, owner, ttl=0):
        return self._claim(pb.ClaimRunRequest(run_id=run_id, lease_owner=owner,
                                              lease_ttl_ms=ttl), timeout=T)


_END = object()


class Sub:
    """A SubscribeRun stream read by a helper thread into a queue, so every
    wait in the test is bounded."""

    def __init__(self, rpc, req, deadline=30):
        self.call = rpc(req, timeout=deadline)
        self.q = queue.Queue()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        try:
            for ev in self.call:
                self.q.put(ev)
            self.q.put(_END)
        except grpc.RpcError as e:
            self.q.put(e)
        except Exception as e:  # noqa: BLE001
            self.q.put(e)

    def _get(self, timeout):
        try:
            return self.q.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"nothing on the stream within {timeout}s") from None

    def next(self, timeout=T):
        item = self._get(timeout)
        if item is _END:
            raise AssertionError("stream ended (OK) but an entry was expected")
        if isinstance(item, BaseException):
            raise item
        return item

    def take(self, n, timeout=T):
        return [self.next(timeout) for _ in range(n)]

    def expect_end(self, timeout=T):
        """The next item must be the clean end of the stream (status OK)."""
        item = self._get(timeout)
        if item is _END:
            return
        if isinstance(item, grpc.RpcError):
            raise AssertionError(f"stream ended with {fmt_err(item)}, expected OK")
        raise AssertionError(f"expected the stream to end, got {item!r}")

    def expect_error(self, timeout=T):
        item = self._get(timeout)
        if isinstance(item, grpc.RpcError):
            return item
        if item is _END:
            raise AssertionError("stream ended OK, expected an error")
        raise AssertionError(f"expected the stream to fail, got {item!r}")

    def expect_quiet(self, secs=0.3):
        try:
            item = self.q.get(timeout=secs)
        except queue.Empty:
            return
        raise AssertionError(f"unexpected stream item: "
                             f"{'END' if item is _END else item!r}")

    def cancel(self):
        self.call.cancel()
        self.thread.join(timeout=T)


class Server:
    """A reeld on a given data dir that a test restarts at will."""

    def __init__(self, data):
        self.data = data
        self.proc = None
        self.ch = None
        self.jr = None

    def start(self):
        self.proc = Reeld(self.data).start()
        self.ch = grpc.insecure_channel(self.proc.addr)
        self.jr = Journal(self.ch)
        return self.jr

    def stop(self):
        self.ch.close()
        code, _ = self.proc.stop(signal.SIGTERM)
        assert code == 0, f"reeld exited {code} on SIGTERM:\n{self.proc.log()}"

    def kill(self):
        self.ch.close()
        self.proc.kill()

    def restart(self):
        self.stop()
        return self.start()

    def cleanup(self):
        if self.proc is not None and self.proc.proc.poll() is None:
            try:
                self.ch.close()
            finally:
                self.proc.kill()


@pytest.fixture
def jr(channel):
    return Journal(channel)


@pytest.fixture
def server(tmp_path):
    s = Server(str(tmp_path / "data"))
    yield s
    s.cleanup()


def assert_lease_lost(e, epoch):
    assert e.code() == PRECONDITION, fmt_err(e)
    assert "lease lost" in e.details(), fmt_err(e)
    assert f"current epoch {epoch}" in e.details(), fmt_err(e)


def assert_epoch_zero_refused(e):
    # Epochs start at 1, so 0 is never current: a lost lease, or bad input.
    assert e.code() in (PRECONDITION, INVALID), fmt_err(e)


def run_fields(r):
    """A copy of a Run with `resumed` cleared (only BeginRun sets it)."""
    c = pb.Run()
    c.CopyFrom(r)
    c.resumed = False
    return c


def assert_journal_unchanged(jr, run_id, next_seq, entries):
    assert jr.get(run_id).next_seq == next_seq
    assert list(jr.read_all(run_id)) == list(entries)


def wait_recoverable(jr, run_id, timeout=T):
    """Waits until run_id's lease expired and the expiry committed (it is
    listed to recover)."""
    deadline = time.monotonic() + timeout
    while run_id not in [r.run_id for r in jr.recover().runs]:
        assert time.monotonic() < deadline, f"{run_id} never listed to recover"
        time.sleep(0.02)


def sleep_past(ms):
    """Sleeps until 200 ms past the time ms (a lease's expiry)."""
    time.sleep(max(0.0, (ms - now_ms()) / 1000) + 0.2)


def ulid_ms(run_id):
    n = 0
    for ch in run_id[:10]:
        n = n * 32 + CROCKFORD.index(ch)
    return n


# --------------------------------------------------------------------------
# BeginRun


def test_begin_run_creates_a_running_run_with_all_fields(jr):
    t0 = now_ms()
    r = jr.begin("inv-1", app="shop", user="alice", session="sess-9", owner="worker-a",
                 labels={"agent": "planner", "env": "test"})
    t1 = now_ms()
    assert RUN_ID_RE.match(r.run_id), r.run_id
    assert "." not in r.run_id and "/" not in r.run_id
    assert (r.app, r.user, r.session, r.invocation_id) == ("shop", "alice", "sess-9", "inv-1")
    assert r.status == RUNNING
    assert r.lease_owner == "worker-a"
    assert r.lease_epoch == 1
    assert r.next_seq == 1
    assert not r.resumed
    assert dict(r.labels) == {"agent": "planner", "env": "test"}
    assert r.waiting_on == "" and r.result == "" and r.ended_at_ms == 0
    assert t0 - 1000 <= r.created_at_ms <= t1 + 1000, (t0, r.created_at_ms, t1)
    assert r.created_at_ms <= r.updated_at_ms <= t1 + 1000
    # lease_ttl_ms 0 means 30000.
    assert t0 + DEFAULT_TTL - 1000 <= r.lease_expires_at_ms <= t1 + DEFAULT_TTL + 1000, \
        (t0, r.lease_expires_at_ms, t1)
    g = jr.get(r.run_id)
    assert not g.resumed
    assert run_fields(g) == run_fields(r)


def test_begin_run_twice_with_the_same_tuple_resumes_the_same_run(jr):
    a = jr.begin("inv-1", owner="w1", labels={"x": "1"})
    b = jr.begin("inv-1", owner="w1", labels={"x": "2", "y": "3"})
    assert b.run_id == a.run_id
    assert b.resumed
    assert b.status == RUNNING and b.lease_owner == "w1"
    assert b.lease_epoch == 2, "the same owner begins again: a new lease, epoch+1"
    assert dict(b.labels) == {"x": "1"}, "labels are only used when the run is created"
    assert b.created_at_ms == a.created_at_ms
    # A different invocation_id (or app/user/session) is a different run.
    c = jr.begin("inv-2", owner="w1")
    assert c.run_id != a.run_id and not c.resumed and c.lease_epoch == 1
    others = [jr.begin("inv-1", app="app2"), jr.begin("inv-1", user="bob"),
              jr.begin("inv-1", session="s2")]
    ids = {a.run_id, c.run_id} | {o.run_id for o in others}
    assert len(ids) == 5
    assert all(not o.resumed and o.lease_epoch == 1 for o in others)
    assert len(jr.list_all()) == 5


def test_begin_run_resumes_keep_the_journal_and_next_seq(jr):
    a = jr.begin("inv-1", owner="w1")
    for i in range(3):
        jr.append(a.run_id, 1, j({"i": i}))
    b = jr.begin("inv-1", owner="w1")
    assert b.run_id == a.run_id and b.resumed and b.next_seq == 4 and b.lease_epoch == 2
    e = jr.append(b.run_id, 2, j({"i": 3})).entry
    assert e.seq == 4 and e.lease_epoch == 2


def test_run_ids_of_sequential_begins_are_strictly_increasing(jr):
    ids = []
    for i in range(20):
        ids.append(jr.begin(f"inv-{i}").run_id)
        if i % 5 == 4:
            time.sleep(0.003)
    for rid in ids:
        assert RUN_ID_RE.match(rid), rid
    assert len(set(ids)) == len(ids)
    assert ids == sorted(ids), "runs begun later must have larger run_ids"


def test_run_id_is_a_ulid_carrying_the_creation_time(jr):
    r = jr.begin("inv-1")
    assert all(c in CROCKFORD for c in r.run_id), r.run_id
    assert abs(ulid_ms(r.run_id) - r.created_at_ms) < 2000, (r.run_id, r.created_at_ms)


def test_begin_run_on_a_run_leased_by_another_owner_names_the_holder(jr):
    a = jr.begin("inv-1", owner="worker-a", ttl=30000)
    e = rpc_error(jr.begin, "inv-1", owner="worker-b")
    assert e.code() == PRECONDITION, fmt_err(e)
    assert "worker-a" in e.details(), fmt_err(e)
    assert names_time(e.details(), a.lease_expires_at_ms), \
        f"message must name the lease expiry: {fmt_err(e)}"
    g = jr.get(a.run_id)
    assert (g.lease_owner, g.lease_epoch, g.status) == ("worker-a", 1, RUNNING)
    assert g.lease_expires_at_ms == a.lease_expires_at_ms
    # The same owner beginning again gets a new lease, epoch+1.
    b = jr.begin("inv-1", owner="worker-a", ttl=30000)
    assert b.run_id == a.run_id and b.resumed
    assert (b.lease_owner, b.lease_epoch, b.status) == ("worker-a", 2, RUNNING)
    # ...which fences its own old epoch.
    assert_lease_lost(rpc_error(jr.append, a.run_id, 1, "{}"), 2)
    assert jr.append(a.run_id, 2, "{}").entry.lease_epoch == 2


def test_begin_run_after_the_lease_expired_takes_a_new_lease(jr):
    a = jr.begin("inv-1", owner="worker-a", ttl=2000)   # the append comes before it
    jr.append(a.run_id, 1, j("a1"))
    wait_recoverable(jr, a.run_id)
    t0 = now_ms()
    b = jr.begin("inv-1", owner="worker-b", ttl=5000)
    t1 = now_ms()
    assert b.run_id == a.run_id and b.resumed
    assert (b.status, b.lease_owner, b.lease_epoch, b.next_seq) == (RUNNING, "worker-b", 2, 2)
    assert t0 + 5000 - 1000 <= b.lease_expires_at_ms <= t1 + 5000 + 1000
    assert_lease_lost(rpc_error(jr.append, a.run_id, 1, j("zombie")), 2)
    assert [x.lease_epoch for x in jr.read_all(a.run_id)] == [1]


def test_begin_run_on_a_terminal_run_returns_it_as_is(jr):
    a = jr.begin("inv-1", owner="worker-a")
    jr.append(a.run_id, 1, j(1))
    ended = jr.end(a.run_id, 1, COMPLETED, j({"answer": 42}))
    for owner in ("worker-b", "worker-a"):
        b = jr.begin("inv-1", owner=owner)
        assert b.run_id == a.run_id and b.resumed
        assert b.status == COMPLETED
        assert b.lease_owner == "" and b.lease_epoch == ended.lease_epoch
        assert b.result == j({"answer": 42}) and b.next_seq == 2
        assert b.ended_at_ms == ended.ended_at_ms
    assert run_fields(jr.get(a.run_id)) == run_fields(ended)


def test_begin_run_on_a_waiting_run_returns_it_as_is_without_a_lease(jr):
    a = jr.begin("inv-1", owner="worker-a")
    s = jr.suspend(a.run_id, 1, "approval:42")
    for owner in ("worker-b", "worker-a"):
        b = jr.begin("inv-1", owner=owner)
        assert b.run_id == a.run_id and b.resumed
        assert b.status == WAITING and b.waiting_on == "approval:42"
        assert b.lease_owner == "" and b.lease_epoch == 1
    assert run_fields(jr.get(a.run_id)) == run_fields(s)
    assert a.run_id not in [r.run_id for r in jr.recover().runs]


def test_begin_run_validates_every_field_and_creates_nothing(jr):
    good = dict(inv="i", app="a", user="u", session="s", owner="o")
    for field, kw in [("app", "app"), ("user", "user"), ("session", "session"),
                      ("invocation_id", "inv"), ("lease_owner", "owner")]:
        args = dict(good)
        args[kw] = ""
        e = rpc_error(jr.begin, **args)
        assert e.code() == INVALID, (field, fmt_err(e))
        assert field in e.details(), (field, fmt_err(e))
    for ttl in (-1, -30000, MAX_TTL + 1, 1 << 62):
        e = rpc_error(jr.begin, ttl=ttl, **good)
        assert e.code() == INVALID, (ttl, fmt_err(e))
        assert "lease_ttl_ms" in e.details(), (ttl, fmt_err(e))
    assert list(jr.list().runs) == []
    # The bounds themselves are fine.
    t0 = now_ms()
    r = jr.begin("max", ttl=MAX_TTL)
    assert t0 + MAX_TTL - 1000 <= r.lease_expires_at_ms <= now_ms() + MAX_TTL + 1000
    r = jr.begin("min", ttl=1)
    assert r.status == RUNNING and r.lease_epoch == 1
    assert len(jr.list().runs) == 2


# --------------------------------------------------------------------------
# Heartbeat


def test_heartbeat_extends_the_lease(jr):
    a = jr.begin("inv-1", owner="worker-a", ttl=2000)   # the heartbeat comes before it
    t0 = now_ms()
    h = jr.heartbeat(a.run_id, 1, 5000)
    t1 = now_ms()
    assert h.run_id == a.run_id and h.lease_epoch == 1 and h.lease_owner == "worker-a"
    assert h.status == RUNNING
    assert t0 + 5000 - 1000 <= h.lease_expires_at_ms <= t1 + 5000 + 1000
    assert h.lease_expires_at_ms > a.lease_expires_at_ms
    assert jr.get(a.run_id).lease_expires_at_ms == h.lease_expires_at_ms
    # Past the original 2 s the lease is still held.
    sleep_past(a.lease_expires_at_ms)
    e = rpc_error(jr.begin, "inv-1", owner="worker-b")
    assert e.code() == PRECONDITION and "worker-a" in e.details(), fmt_err(e)
    e = rpc_error(jr.claim, a.run_id, "worker-b")
    assert e.code() == PRECONDITION, fmt_err(e)
    assert a.run_id not in [r.run_id for r in jr.recover().runs]
    # ttl 0 = 30000.
    t0 = now_ms()
    h = jr.heartbeat(a.run_id, 1)
    assert t0 + DEFAULT_TTL - 1000 <= h.lease_expires_at_ms <= now_ms() + DEFAULT_TTL + 1000


def test_repeated_heartbeats_keep_a_short_lease_alive(jr):
    # 1.5 s, renewed every 0.3 s: a heartbeat late by over a second (slow
    # under ASan on a busy machine) would lose it.
    a = jr.begin("inv-1", owner="worker-a", ttl=1500)
    for _ in range(8):                 # 2.4 s in all, well past 1.5 s
        time.sleep(0.3)
        jr.heartbeat(a.run_id, 1, 1500)
    e = rpc_error(jr.claim, a.run_id, "worker-b")
    assert e.code() == PRECONDITION, fmt_err(e)
    assert jr.append(a.run_id, 1, "{}").entry.seq == 1


def test_heartbeat_after_expiry_is_refused_once_the_expiry_committed(jr):
    # Issue 21: an expired lease is a commit (RUNNABLE, LEASE_EXPIRED), and
    # from that commit on the old epoch is fenced: a heartbeat must claim.
    a = jr.begin("inv-1", owner="worker-a", ttl=200)
    deadline = time.monotonic() + 5
    while jr.get(a.run_id).status != RUNNABLE and time.monotonic() < deadline:
        time.sleep(0.01)
    g = jr.get(a.run_id)
    assert g.status == RUNNABLE and g.reason == "LEASE_EXPIRED", g
    assert a.run_id in [r.run_id for r in jr.recover().runs]
    e = rpc_error(jr.heartbeat, a.run_id, 1, 30000)
    assert e.code() == PRECONDITION and "claim it first" in e.details(), fmt_err(e)
    e = rpc_error(jr.append, a.run_id, 1, "{}")
    assert e.code() == PRECONDITION, fmt_err(e)
    c = jr.claim(a.run_id, "worker-a")
    assert c.lease_epoch == 2 and c.attempt == 2
    assert jr.append(a.run_id, 2, "{}").entry.lease_epoch == 2


def test_heartbeat_errors(jr):
    a = jr.begin("inv-1", owner="worker-a")
    e = rpc_error(jr.heartbeat, UNKNOWN_ID, 1)
    assert e.code() == NOT_FOUND, fmt_err(e)
    for epoch in (2, 7):
        assert_lease_lost(rpc_error(jr.heartbeat, a.run_id, epoch), 1)
    assert_epoch_zero_refused(rpc_error(jr.heartbeat, a.run_id, 0))
    for ttl in (-1, MAX_TTL + 1):
        e = rpc_error(jr.heartbeat, a.run_id, 1, ttl)
        assert e.code() == INVALID and "lease_ttl_ms" in e.details(), fmt_err(e)
    g = jr.get(a.run_id)
    assert g.lease_expires_at_ms == a.lease_expires_at_ms and g.lease_epoch == 1
    # No lease on a terminal run: nothing to extend.
    jr.end(a.run_id, 1, COMPLETED)
    e = rpc_error(jr.heartbeat, a.run_id, 1)
    assert e.code() == PRECONDITION, fmt_err(e)
    assert jr.get(a.run_id).status == COMPLETED


# --------------------------------------------------------------------------
# Append and ReadJournal


def test_appends_get_gapless_seqs_and_all_entry_fields(jr):
    a = jr.begin("inv-1", owner="worker-a")
    t0 = now_ms()
    acked = []
    for i in range(5):
        r = jr.append(a.run_id, 1, j({"i": i}), kind=f"tool.call_{i}", key=f"k{i}" if i % 2 else "")
        assert not r.duplicate
        acked.append(r.entry)
    t1 = now_ms()
    for i, e in enumerate(acked):
        assert e.run_id == a.run_id
        assert e.seq == i + 1
        assert e.kind == f"tool.call_{i}"
        assert e.payload == j({"i": i})
        assert e.idempotency_key == (f"k{i}" if i % 2 else "")
        assert e.lease_epoch == 1
        assert t0 - 1000 <= e.ts_ms <= t1 + 1000
    revs = [e.revision for e in acked]
    assert revs == sorted(set(revs)) and revs[0] > 0, f"revisions must increase: {revs}"
    assert jr.get(a.run_id).next_seq == 6
    assert list(jr.read_all(a.run_id)) == acked
    # Revisions are global: another run's entries continue them.
    b = jr.begin("inv-2")
    e = jr.append(b.run_id, 1, "1").entry
    assert e.seq == 1 and e.revision > revs[-1]
    assert jr.append(a.run_id, 1, "2").entry.revision > e.revision


def test_payloads_of_every_json_kind_round_trip(jr):
    a = jr.begin("inv-1")
    goods = ["null", "true", "0", "-1.5e3", '"s"', "[]", "{}", '{"a":[1,{"b":null}]}',
             ' {"a" : 1} ', '"ünï \\u00e9 😀"']
    for g in goods:
        jr.append(a.run_id, 1, g)
    assert [e.payload for e in jr.read_all(a.run_id)] == goods


def test_eight_concurrent_appenders_get_gapless_unique_seqs(jr):
    a = jr.begin("inv-1", owner="worker-a")
    per, n_threads = 25, 8
    acked, errors = [], []
    lock = threading.Lock()
    barrier = threading.Barrier(n_threads, timeout=T)

    def appender(t):
        try:
            barrier.wait()
            mine = []
            for i in range(per):
                r = jr.append(a.run_id, 1, j({"t": t, "i": i}), kind="step")
                assert not r.duplicate
                mine.append(r.entry)
            with lock:
                acked.extend(mine)
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=appender, args=(t,)) for t in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads), "appenders did not finish"
    assert not errors, errors[:3]
    total = per * n_threads
    assert sorted(e.seq for e in acked) == list(range(1, total + 1)), \
        "seqs must be 1..N with no gap and no duplicate"
    # Each thread's own appends got increasing seqs.
    for t in range(n_threads):
        mine = [e.seq for e in acked if json.loads(e.payload)["t"] == t]
        assert mine == sorted(mine) and len(mine) == per
    stored = jr.read_all(a.run_id)
    assert [e.seq for e in stored] == list(range(1, total + 1))
    by_seq = {e.seq: e for e in acked}
    for e in stored:
        assert e == by_seq[e.seq], (e, by_seq[e.seq])
    revs = [e.revision for e in stored]
    assert revs == sorted(revs), "revisions must not go backwards along the seqs"
    assert jr.get(a.run_id).next_seq == total + 1

    # Retrying with an idempotency key returns the original and writes nothing;
    # the key with another payload is another write, refused.
    first = jr.append(a.run_id, 1, j({"try": 1}), kind="llm.call", key="call-7")
    assert not first.duplicate and first.entry.seq == total + 1
    for _ in range(2):
        again = jr.append(a.run_id, 1, j({"try": 1}), kind="llm.call", key="call-7")
        assert again.duplicate
        assert again.entry == first.entry
    e = rpc_error(jr.append, a.run_id, 1, j({"try": 2}), kind="llm.call", key="call-7")
    assert e.code() == ALREADY, fmt_err(e)
    assert jr.get(a.run_id).next_seq == total + 2
    stored = jr.read_all(a.run_id)
    assert len(stored) == total + 1
    assert [e.idempotency_key for e in stored].count("call-7") == 1


def test_concurrent_retries_with_one_idempotency_key_write_once(jr):
    a = jr.begin("inv-1")
    jr.append(a.run_id, 1, "0")
    results, errors = [], []
    lock = threading.Lock()
    barrier = threading.Barrier(8, timeout=T)

    def retry(t):
        try:
            barrier.wait()
            r = jr.append(a.run_id, 1, j({"card": 1}), kind="effect", key="charge-card-1")
            with lock:
                results.append(r)
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=retry, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not errors, errors[:3]
    assert len(results) == 8
    assert sum(1 for r in results if not r.duplicate) == 1, \
        [(r.entry.seq, r.duplicate) for r in results]
    assert {r.entry.seq for r in results} == {2}
    assert len({r.entry.SerializeToString(deterministic=True) for r in results}) == 1
    assert jr.get(a.run_id).next_seq == 3
    assert [e.seq for e in jr.read_all(a.run_id)] == [1, 2]


def test_idempotency_keys_are_per_run(jr):
    a, b = jr.begin("inv-1"), jr.begin("inv-2")
    ra = jr.append(a.run_id, 1, "1", key="same")
    jr.append(b.run_id, 1, "0")
    rb = jr.append(b.run_id, 1, "2", key="same")
    assert not ra.duplicate and not rb.duplicate
    assert (ra.entry.seq, rb.entry.seq) == (1, 2)
    assert rb.entry.payload == "2"


def test_expected_seq_must_match_the_seq_the_entry_gets(jr):
    a = jr.begin("inv-1")
    assert jr.append(a.run_id, 1, "1", expected_seq=1).entry.seq == 1
    before = jr.read_all(a.run_id)
    for wrong in (1, 3, 100):
        e = rpc_error(jr.append, a.run_id, 1, "2", expected_seq=wrong)
        assert e.code() == ABORTED, (wrong, fmt_err(e))
        assert has_number(e.details(), 2), f"message must name the next seq 2: {fmt_err(e)}"
        assert_journal_unchanged(jr, a.run_id, 2, before)
    assert jr.append(a.run_id, 1, "2", expected_seq=2).entry.seq == 2
    assert jr.append(a.run_id, 1, "3").entry.seq == 3     # 0 = don't care
    assert jr.get(a.run_id).next_seq == 4


def test_bad_kinds_are_invalid_and_write_nothing(jr):
    a = jr.begin("inv-1")
    jr.append(a.run_id, 1, "0")
    before = jr.read_all(a.run_id)
    for kind in ["", "Step", "a b", "a/b", "x" * 65, "é", "tool:call", "UPPER",
                 "._-", "a..b", "a.", "."]:
        e = rpc_error(jr.append, a.run_id, 1, "1", kind=kind)
        assert e.code() == INVALID, (kind, fmt_err(e))
        assert "kind" in e.details(), (kind, fmt_err(e))
        assert_journal_unchanged(jr, a.run_id, 2, before)
    for kind in ["x" * 64, "a", "tool.call_9-b", "0", "-._"]:
        assert jr.append(a.run_id, 1, "1", kind=kind).entry.kind == kind


def test_invalid_json_payloads_are_invalid_and_write_nothing(jr):
    a = jr.begin("inv-1")
    jr.append(a.run_id, 1, "0")
    before = jr.read_all(a.run_id)
    for bad in ["", "{", "{'a': 1}", "abc", "[1,]", '{"a":1}x', "01", "nul",
                '"unterminated', '"a\x01b"']:
        e = rpc_error(jr.append, a.run_id, 1, bad)
        assert e.code() == INVALID, (bad, fmt_err(e))
        assert "payload" in e.details(), (bad, fmt_err(e))
        assert_journal_unchanged(jr, a.run_id, 2, before)


def test_oversize_payload_is_invalid_naming_the_limit_and_writes_nothing(jr):
    a = jr.begin("inv-1")
    ok = '"' + "x" * (MAX_PAYLOAD - 2) + '"'
    assert len(ok) == MAX_PAYLOAD
    e1 = jr.append(a.run_id, 1, ok).entry
    assert e1.seq == 1
    before = jr.read_all(a.run_id)
    assert before[0].payload == ok
    for bad in ('"' + "x" * (MAX_PAYLOAD - 1) + '"',
                '"' + "é" * (MAX_PAYLOAD // 2) + '"'):        # bytes, not characters
        e = rpc_error(jr.append, a.run_id, 1, bad)
        assert e.code() == INVALID, fmt_err(e)
        assert "payload" in e.details() and has_number(e.details(), MAX_PAYLOAD), fmt_err(e)
        assert "--journal-max-payload-bytes" in e.details(), fmt_err(e)
        assert_journal_unchanged(jr, a.run_id, 2, before)


def test_oversize_idempotency_key_is_invalid_and_writes_nothing(jr):
    a = jr.begin("inv-1")
    e = rpc_error(jr.append, a.run_id, 1, "1", key="k" * 257)
    assert e.code() == INVALID and "idempotency_key" in e.details(), fmt_err(e)
    assert_journal_unchanged(jr, a.run_id, 1, [])
    assert jr.append(a.run_id, 1, "1", key="k" * 256).entry.idempotency_key == "k" * 256
    assert jr.append(a.run_id, 1, "1", key="k" * 256).duplicate


def test_append_errors_unknown_run_and_wrong_epoch(jr):
    e = rpc_error(jr.append, UNKNOWN_ID, 1, "1")
    assert e.code() == NOT_FOUND, fmt_err(e)
    a = jr.begin("inv-1")
    for epoch in (2, 9):
        assert_lease_lost(rpc_error(jr.append, a.run_id, epoch, "1"), 1)
    assert_epoch_zero_refused(rpc_error(jr.append, a.run_id, 0, "1"))
    assert_journal_unchanged(jr, a.run_id, 1, [])


def test_read_journal_pages_and_limits(jr):
    a = jr.begin("inv-1")
    for i in range(150):
        jr.append(a.run_id, 1, j(i))
    r = jr.read(a.run_id)                      # limit 0 = 100
    assert [e.seq for e in r.entries] == list(range(1, 101))
    assert r.more and r.next_from_seq == 100
    r = jr.read(a.run_id, 100)
    assert [e.seq for e in r.entries] == list(range(101, 151))
    assert not r.more and r.next_from_seq == 150
    # Pages of 10 from 100, the last one exactly full.
    got, cursor, pages = [], 100, 0
    while True:
        r = jr.read(a.run_id, cursor, 10)
        pages += 1
        assert len(r.entries) <= 10
        got.extend(e.seq for e in r.entries)
        if r.entries:
            assert r.next_from_seq == r.entries[-1].seq
        if not r.more:
            break
        cursor = r.next_from_seq
        assert pages < 20
    assert got == list(range(101, 151))
    assert pages == 5, "the last page is full: more must be false on it"
    r = jr.read(a.run_id, 7, 3)
    assert [e.seq for e in r.entries] == [8, 9, 10] and r.more and r.next_from_seq == 10
    r = jr.read(a.run_id, 150, 10)
    assert list(r.entries) == [] and not r.more
    r = jr.read(a.run_id, 500, 10)
    assert list(r.entries) == [] and not r.more
    assert len(jr.read(a.run_id, 0, 1000).entries) == 150
    e = rpc_error(jr.read, a.run_id, 0, 1001)
    assert e.code() == INVALID and "limit" in e.details(), fmt_err(e)
    e = rpc_error(jr.read, UNKNOWN_ID)
    assert e.code() == NOT_FOUND, fmt_err(e)


# --------------------------------------------------------------------------
# EndRun


@pytest.mark.parametrize("status", [COMPLETED, FAILED, CANCELLED])
def test_end_run_sets_status_result_and_releases_the_lease(jr, status):
    a = jr.begin("inv-1", owner="worker-a")
    jr.append(a.run_id, 1, "1")
    result = j({"status": Run.Status.Name(status)}) if status != CANCELLED else ""
    t0 = now_ms()
    r = jr.end(a.run_id, 1, status, result)
    t1 = now_ms()
    assert r.run_id == a.run_id
    assert r.status == status and r.result == result
    assert t0 - 1000 <= r.ended_at_ms <= t1 + 1000
    assert r.lease_owner == ""
    assert r.next_seq == 2
    assert run_fields(jr.get(a.run_id)) == run_fields(r)
    assert a.run_id not in [x.run_id for x in jr.recover().runs]


def test_terminal_runs_reject_appends_ends_suspends_and_claims(jr):
    a = jr.begin("inv-1", owner="worker-a", ttl=1000)   # the end comes before it
    jr.append(a.run_id, 1, "1")
    ended = jr.end(a.run_id, 1, COMPLETED, j({"ok": True}))
    before = jr.read_all(a.run_id)
    e = rpc_error(jr.append, a.run_id, 1, "2")
    assert e.code() == PRECONDITION, fmt_err(e)
    e = rpc_error(jr.append, a.run_id, 1, "2", key="fresh-key")
    assert e.code() == PRECONDITION, fmt_err(e)
    for st in (COMPLETED, FAILED, CANCELLED):
        e = rpc_error(jr.end, a.run_id, 1, st, "")
        assert e.code() == PRECONDITION, fmt_err(e)
    e = rpc_error(jr.suspend, a.run_id, 1, "sig")
    assert e.code() == PRECONDITION, fmt_err(e)
    sleep_past(a.lease_expires_at_ms)          # past the old lease's ttl
    e = rpc_error(jr.claim, a.run_id, "worker-b")
    assert e.code() == PRECONDITION, fmt_err(e)
    assert a.run_id not in [x.run_id for x in jr.recover().runs]
    assert run_fields(jr.get(a.run_id)) == run_fields(ended)
    assert_journal_unchanged(jr, a.run_id, 2, before)


def test_end_run_bad_input(jr):
    a = jr.begin("inv-1", owner="worker-a")
    for st in (UNSPECIFIED, RUNNABLE, RUNNING, WAITING, 42):
        e = rpc_error(jr.end, a.run_id, 1, st, "")
        assert e.code() == INVALID, (st, fmt_err(e))
        assert "status" in e.details(), (st, fmt_err(e))
    for bad in ("{", "abc", "01"):
        e = rpc_error(jr.end, a.run_id, 1, COMPLETED, bad)
        assert e.code() == INVALID, (bad, fmt_err(e))
        assert "result" in e.details(), (bad, fmt_err(e))
    e = rpc_error(jr.end, UNKNOWN_ID, 1, COMPLETED, "")
    assert e.code() == NOT_FOUND, fmt_err(e)
    assert_lease_lost(rpc_error(jr.end, a.run_id, 2, COMPLETED, ""), 1)
    assert_epoch_zero_refused(rpc_error(jr.end, a.run_id, 0, COMPLETED, ""))
    g = jr.get(a.run_id)
    assert (g.status, g.lease_owner, g.ended_at_ms, g.result) == (RUNNING, "worker-a", 0, "")
    assert jr.end(a.run_id, 1, FAILED, j({"error": "boom"})).status == FAILED


# --------------------------------------------------------------------------
# fencing and claims


def test_zombie_holder_is_fenced_after_another_worker_claims(jr):
    a = jr.begin("inv-1", owner="worker-a", ttl=2000)   # the appends come before it
    jr.append(a.run_id, 1, j("a1"), kind="step")
    jr.append(a.run_id, 1, j("a2"), kind="step")
    wait_recoverable(jr, a.run_id)             # A's lease expires
    b = jr.claim(a.run_id, "worker-b", 30000)
    assert (b.status, b.lease_owner, b.lease_epoch, b.next_seq) == (RUNNING, "worker-b", 2, 3)
    assert a.run_id not in [r.run_id for r in jr.recover().runs]
    # A (the zombie, still at epoch 1) is refused everywhere.
    assert_lease_lost(rpc_error(jr.append, a.run_id, 1, j("zombie")), 2)
    assert_lease_lost(rpc_error(jr.append, a.run_id, 1, j("zombie"), key="zk"), 2)
    assert_lease_lost(rpc_error(jr.heartbeat, a.run_id, 1, 30000), 2)
    assert_lease_lost(rpc_error(jr.end, a.run_id, 1, COMPLETED, ""), 2)
    assert_lease_lost(rpc_error(jr.suspend, a.run_id, 1, "sig"), 2)
    g = jr.get(a.run_id)
    assert (g.status, g.lease_owner, g.lease_epoch, g.next_seq) == (RUNNING, "worker-b", 2, 3)
    # B's calls succeed.
    e3 = jr.append(a.run_id, 2, j("b1")).entry
    assert (e3.seq, e3.lease_epoch) == (3, 2)
    h = jr.heartbeat(a.run_id, 2, 30000)
    assert h.lease_owner == "worker-b" and h.lease_epoch == 2
    jr.append(a.run_id, 2, j("b2"))
    assert_lease_lost(rpc_error(jr.append, a.run_id, 1, j("zombie")), 2)
    r = jr.end(a.run_id, 2, COMPLETED, j("done"))
    assert r.status == COMPLETED
    entries = jr.read_all(a.run_id)
    assert [(e.seq, e.lease_epoch, e.payload) for e in entries] == [
        (1, 1, j("a1")), (2, 1, j("a2")), (3, 2, j("b1")), (4, 2, j("b2"))]


def test_a_fenced_worker_retrying_a_used_key_hears_lease_lost(jr):
    """The lease is checked before the idempotency key: a worker that lost
    its run is told so at once, not that its retried write succeeded."""
    a = jr.begin("inv-1", owner="worker-a", ttl=2000)   # the append comes before it
    first = jr.append(a.run_id, 1, j({"eur": 5}), kind="effect", key="charge-1")
    wait_recoverable(jr, a.run_id)             # A's lease expires
    b = jr.claim(a.run_id, "worker-b", 30000)
    assert b.lease_epoch == 2
    for epoch in (1, 0, 7):                    # stale, and two that never existed
        e = rpc_error(jr.append, a.run_id, epoch, j({"eur": 5}), kind="effect",
                      key="charge-1")
        assert_lease_lost(e, 2)
        assert not e.details().startswith("idempotency"), fmt_err(e)
    # B, holding the lease, retrying the same append gets the original.
    dup = jr.append(a.run_id, 2, j({"eur": 5}), kind="effect", key="charge-1")
    assert dup.duplicate and dup.entry == first.entry and dup.entry.lease_epoch == 1
    assert [e.seq for e in jr.read_all(a.run_id)] == [1]
    jr.end(a.run_id, 2, COMPLETED, "")
    e = rpc_error(jr.append, a.run_id, 2, j({"eur": 5}), kind="effect", key="charge-1")
    assert e.code() == PRECONDITION and "COMPLETED" in e.details(), fmt_err(e)


def test_a_reused_idempotency_key_with_other_content_is_refused_naming_it(jr):
    a = jr.begin("inv-1")
    jr.append(a.run_id, 1, "0")
    first = jr.append(a.run_id, 1, j({"eur": 5}), kind="effect", key="charge-1")
    assert first.entry.seq == 2
    before = jr.read_all(a.run_id)
    for payload, kind in ((j({"eur": 7}), "effect"), ('{"eur": 5}', "effect"),
                          (j({"eur": 5}), "step")):
        e = rpc_error(jr.append, a.run_id, 1, payload, kind=kind, key="charge-1")
        assert e.code() == ALREADY, fmt_err(e)
        assert '"charge-1"' in e.details() and "seq 2" in e.details(), fmt_err(e)
        assert_journal_unchanged(jr, a.run_id, 3, before)
    assert '"effect"' in e.details() and '"step"' in e.details(), fmt_err(e)
    dup = jr.append(a.run_id, 1, j({"eur": 5}), kind="effect", key="charge-1")
    assert dup.duplicate and dup.entry == first.entry
    assert_journal_unchanged(jr, a.run_id, 3, before)


def test_ten_concurrent_claims_exactly_one_wins(jr):
    a = jr.begin("inv-1", owner="worker-0", ttl=200)
    for rnd in range(3):
        wait_recoverable(jr, a.run_id)         # the current lease expires
        epoch_before = jr.get(a.run_id).lease_epoch
        barrier = threading.Barrier(10, timeout=T)
        wins, fails, errors = [], [], []
        lock = threading.Lock()

        def claimer(i):
            try:
                barrier.wait()
                try:
                    # 2 s: the winner's get and append below come before it.
                    r = jr.claim(a.run_id, f"claimer-{rnd}-{i}", 2000)
                    with lock:
                        wins.append(r)
                except grpc.RpcError as e:
                    with lock:
                        fails.append(e)
            except Exception as e:  # noqa: BLE001
                errors.append(e)

        threads = [threading.Thread(target=claimer, args=(i,)) for i in range(10)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
        assert not errors, errors[:3]
        assert len(wins) == 1, f"round {rnd}: {len(wins)} claims won: " \
            f"{[(w.lease_owner, w.lease_epoch) for w in wins]}"
        assert len(fails) == 9
        for e in fails:
            assert e.code() == PRECONDITION, fmt_err(e)
        w = wins[0]
        assert w.status == RUNNING and w.lease_epoch == epoch_before + 1
        g = jr.get(a.run_id)
        assert (g.lease_owner, g.lease_epoch) == (w.lease_owner, w.lease_epoch)
        entry = jr.append(a.run_id, w.lease_epoch, j(rnd)).entry
        assert entry.lease_epoch == w.lease_epoch
    assert jr.get(a.run_id).lease_epoch == 4
    assert [e.lease_epoch for e in jr.read_all(a.run_id)] == [2, 3, 4]


def test_claim_run_is_refused_unless_runnable_or_expired(jr):
    live = jr.begin("live", owner="worker-a", ttl=30000)
    e = rpc_error(jr.claim, live.run_id, "worker-b")
    assert e.code() == PRECONDITION, fmt_err(e)
    e = rpc_error(jr.claim, live.run_id, "worker-a")     # even its own holder
    assert e.code() == PRECONDITION, fmt_err(e)
    waiting = jr.begin("waiting", owner="worker-a", ttl=1000)   # the suspend comes before it
    jr.suspend(waiting.run_id, 1, "sig")
    sleep_past(waiting.lease_expires_at_ms)
    e = rpc_error(jr.claim, waiting.run_id, "worker-b")
    assert e.code() == PRECONDITION, fmt_err(e)
    g = jr.get(waiting.run_id)
    assert (g.status, g.lease_owner, g.lease_epoch) == (WAITING, "", 1)
    g = jr.get(live.run_id)
    assert (g.status, g.lease_owner, g.lease_epoch) == (RUNNING, "worker-a", 1)
    e = rpc_error(jr.claim, UNKNOWN_ID, "worker-b")
    assert e.code() == NOT_FOUND, fmt_err(e)


def test_claim_run_bad_input(jr):
    a = jr.begin("inv-1", owner="worker-a", ttl=100)
    time.sleep(0.25)
    e = rpc_error(jr.claim, a.run_id, "")
    assert e.code() == INVALID and "lease_owner" in e.details(), fmt_err(e)
    for ttl in (-1, MAX_TTL + 1):
        e = rpc_error(jr.claim, a.run_id, "worker-b", ttl)
        assert e.code() == INVALID and "lease_ttl_ms" in e.details(), fmt_err(e)
    g = jr.get(a.run_id)
    # Expired by now: RUNNABLE (LEASE_EXPIRED), the epoch unchanged.
    assert g.lease_epoch == 1 and g.status in (RUNNING, RUNNABLE), g
    t0 = now_ms()
    c = jr.claim(a.run_id, "worker-b")                  # ttl 0 = 30000
    assert (c.lease_owner, c.lease_epoch, c.status) == ("worker-b", 2, RUNNING)
    assert t0 + DEFAULT_TTL - 1000 <= c.lease_expires_at_ms <= now_ms() + DEFAULT_TTL + 1000


# --------------------------------------------------------------------------
# SuspendRun


def test_suspend_run_parks_the_run_without_a_lease(jr):
    a = jr.begin("inv-1", owner="worker-a", ttl=1000)   # the suspend comes before it
    jr.append(a.run_id, 1, "1")
    before = jr.read_all(a.run_id)
    s = jr.suspend(a.run_id, 1, "approval:order-42")
    assert s.run_id == a.run_id
    assert s.status == WAITING and s.waiting_on == "approval:order-42"
    assert s.lease_owner == "" and s.next_seq == 2
    assert run_fields(jr.get(a.run_id)) == run_fields(s)
    e = rpc_error(jr.append, a.run_id, 1, "2")
    assert e.code() == PRECONDITION, fmt_err(e)
    e = rpc_error(jr.append, a.run_id, 1, "2", key="k")
    assert e.code() == PRECONDITION, fmt_err(e)
    e = rpc_error(jr.suspend, a.run_id, 1, "again")
    assert e.code() == PRECONDITION, fmt_err(e)
    sleep_past(a.lease_expires_at_ms)          # past the released lease's ttl
    assert a.run_id not in [r.run_id for r in jr.recover().runs]
    assert [r.run_id for r in jr.list(status=WAITING).runs] == [a.run_id]
    assert_journal_unchanged(jr, a.run_id, 2, before)


def test_suspend_run_bad_input(jr):
    a = jr.begin("inv-1", owner="worker-a")
    for w in ["", "a b", "x" * 129, "é", "a/b", "sig\n"]:
        e = rpc_error(jr.suspend, a.run_id, 1, w)
        assert e.code() == INVALID, (w, fmt_err(e))
        assert "waiting_on" in e.details(), (w, fmt_err(e))
    e = rpc_error(jr.suspend, UNKNOWN_ID, 1, "sig")
    assert e.code() == NOT_FOUND, fmt_err(e)
    assert_lease_lost(rpc_error(jr.suspend, a.run_id, 2, "sig"), 1)
    assert_epoch_zero_refused(rpc_error(jr.suspend, a.run_id, 0, "sig"))
    g = jr.get(a.run_id)
    assert (g.status, g.lease_owner, g.waiting_on) == (RUNNING, "worker-a", "")
    for i, w in enumerate(["x" * 128, "AZaz09_.:-"]):
        b = jr.begin(f"ok-{i}")
        assert jr.suspend(b.run_id, 1, w).waiting_on == w


# --------------------------------------------------------------------------
# SubscribeRun


def test_subscribe_from_zero_sees_stored_then_live_entries_and_ends_after_end_run(jr):
    a = jr.begin("inv-1", owner="worker-a")
    stored = [jr.append(a.run_id, 1, j({"i": i})).entry for i in range(3)]
    sub = jr.subscribe(a.run_id, 0)
    try:
        assert sub.take(3) == stored
        sub.expect_quiet(0.3)
        live = []
        for i in range(3, 6):
            live.append(jr.append(a.run_id, 1, j({"i": i})).entry)
            assert sub.next() == live[-1]
        sub.expect_quiet(0.2)
        jr.end(a.run_id, 1, COMPLETED, j("ok"))
        sub.expect_end()
    finally:
        sub.cancel()
    # Another subscriber on the ended run: the stored entries after from_seq, then OK.
    sub = jr.subscribe(a.run_id, 2)
    try:
        assert sub.take(4) == stored[2:] + live
        sub.expect_end()
    finally:
        sub.cancel()
    sub = jr.subscribe(a.run_id, 6)
    try:
        sub.expect_end()
    finally:
        sub.cancel()


def test_subscribers_under_concurrent_appends_see_every_seq_once_in_order(jr):
    a = jr.begin("inv-1", owner="worker-a")
    for i in range(10):
        jr.append(a.run_id, 1, j({"pre": i}))
    subs = [jr.subscribe(a.run_id, 0), jr.subscribe(a.run_id, 5)]
    errors = []
    mid = []

    def appender(t):
        try:
            for i in range(40):
                jr.append(a.run_id, 1, j({"t": t, "i": i}))
                if t == 0 and i == 20:
                    mid.append(jr.subscribe(a.run_id, 0))   # opened mid-flight
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    try:
        threads = [threading.Thread(target=appender, args=(t,)) for t in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert not errors, errors[:3]
        total = 10 + 4 * 40
        jr.end(a.run_id, 1, COMPLETED, "")
        stored = jr.read_all(a.run_id)
        assert [e.seq for e in stored] == list(range(1, total + 1))
        subs += mid
        for sub, frm in zip(subs, (0, 5, 0)):
            got = sub.take(total - frm)
            assert [e.seq for e in got] == list(range(frm + 1, total + 1))
            assert got == stored[frm:]
            sub.expect_end()
    finally:
        for s in subs + mid:
            s.cancel()


def test_subscribe_to_an_unknown_run_is_not_found(jr):
    sub = jr.subscribe(UNKNOWN_ID, 0)
    try:
        e = sub.expect_error()
        assert e.code() == NOT_FOUND, fmt_err(e)
    finally:
        sub.cancel()


def test_subscribe_to_a_waiting_run_stays_open(jr):
    a = jr.begin("inv-1")
    e1 = jr.append(a.run_id, 1, "1").entry
    jr.suspend(a.run_id, 1, "sig")
    sub = jr.subscribe(a.run_id, 0)
    try:
        assert sub.next() == e1
        sub.expect_quiet(0.4)
    finally:
        sub.cancel()


# --------------------------------------------------------------------------
# GetRun, ListRuns, ListRunsToRecover


def test_get_run_unknown_is_not_found(jr):
    e = rpc_error(jr.get, UNKNOWN_ID)
    assert e.code() == NOT_FOUND, fmt_err(e)
    for odd in ("", "nope", "../../etc/passwd", "a/b", "x.y", "0" * 300):
        e = rpc_error(jr.get, odd)
        assert e.code() in (NOT_FOUND, INVALID), (odd, fmt_err(e))


def test_list_runs_filters_and_pagination(jr):
    made = []   # (app, user, session, run)
    for app, user, session, n in [("a1", "u1", "s1", 3), ("a1", "u1", "s2", 2),
                                  ("a1", "u2", "s1", 2), ("a2", "u1", "s1", 2)]:
        for i in range(n):
            r = jr.begin(f"inv-{i}", app=app, user=user, session=session,
                         labels={"n": str(len(made))})
            made.append((app, user, session, r))
    ids = [m[3].run_id for m in made]
    assert ids == sorted(ids)
    # End two, suspend one.
    jr.end(ids[0], 1, COMPLETED, "")
    jr.end(ids[5], 1, FAILED, "")
    jr.suspend(ids[7], 1, "sig")

    every = jr.list()
    assert [r.run_id for r in every.runs] == ids and not every.more
    assert [dict(r.labels) for r in every.runs] == [{"n": str(i)} for i in range(9)]

    def ids_of(**kw):
        return [r.run_id for r in jr.list_all(**kw)]

    def expect(pred):
        return [m[3].run_id for i, m in enumerate(made) if pred(i, m)]

    assert ids_of(app="a1") == expect(lambda i, m: m[0] == "a1")
    assert ids_of(app="a1", user="u1") == expect(lambda i, m: m[:2] == ("a1", "u1"))
    assert ids_of(app="a1", user="u1", session="s1") == \
        expect(lambda i, m: m[:3] == ("a1", "u1", "s1"))
    assert ids_of(app="a2", user="u1", session="s1") == ids[7:9]
    assert ids_of(app="a3") == []
    assert ids_of(app="a1", user="u3") == []
    assert ids_of(status=COMPLETED) == [ids[0]]
    assert ids_of(status=FAILED) == [ids[5]]
    assert ids_of(status=WAITING) == [ids[7]]
    assert ids_of(status=RUNNING) == [x for k, x in enumerate(ids) if k not in (0, 5, 7)]
    assert ids_of(status=CANCELLED) == []
    assert ids_of(app="a1", status=RUNNING) == [ids[1], ids[2], ids[3], ids[4], ids[6]]
    assert ids_of(app="a2", user="u1", status=WAITING) == [ids[7]]

    # Pagination: limit 2 over 9, and limit 3 over 9 (the last page exactly full).
    for page, n_pages in ((2, 5), (3, 3), (1, 9), (9, 1)):
        got, cursor, pages = [], "", 0
        while True:
            r = jr.list(start_after=cursor, limit=page)
            pages += 1
            assert len(r.runs) <= page
            got.extend(x.run_id for x in r.runs)
            if r.runs:
                assert r.next_start_after == r.runs[-1].run_id, r.next_start_after
            if not r.more:
                break
            assert len(r.runs) == page
            cursor = r.next_start_after
            assert pages < 20
        assert got == ids, page
        assert pages == n_pages, f"limit {page}: {pages} pages, expected {n_pages}"
    # Filtered pagination.
    r = jr.list(app="a1", limit=3)
    assert [x.run_id for x in r.runs] == ids[0:3] and r.more
    r = jr.list(app="a1", limit=3, start_after=r.next_start_after)
    assert [x.run_id for x in r.runs] == ids[3:6] and r.more
    r = jr.list(app="a1", limit=3, start_after=r.next_start_after)
    assert [x.run_id for x in r.runs] == ids[6:7] and not r.more
    # start_after any run_id (even one not matching the filter).
    r = jr.list(app="a1", start_after=ids[2])
    assert [x.run_id for x in r.runs] == ids[3:7] and not r.more
    r = jr.list(start_after=ids[8])
    assert list(r.runs) == [] and not r.more
    r = jr.list(start_after=ids[4])
    assert [x.run_id for x in r.runs] == ids[5:] and not r.more


def test_list_runs_bad_input(jr):
    jr.begin("inv-1")
    e = rpc_error(jr.list, user="u1")
    assert e.code() == INVALID and "user" in e.details(), fmt_err(e)
    e = rpc_error(jr.list, app="a1", session="s1")
    assert e.code() == INVALID and "session" in e.details(), fmt_err(e)
    e = rpc_error(jr.list, session="s1")
    assert e.code() == INVALID and "session" in e.details(), fmt_err(e)
    e = rpc_error(jr.list, limit=1001)
    assert e.code() == INVALID and "limit" in e.details(), fmt_err(e)
    assert len(jr.list(limit=1000).runs) == 1


def test_list_runs_default_limit_is_100(jr):
    for i in range(105):
        jr.begin(f"inv-{i}")
    r = jr.list()
    assert len(r.runs) == 100 and r.more
    r = jr.list(start_after=r.next_start_after)
    assert len(r.runs) == 5 and not r.more


def test_list_runs_to_recover_lists_only_runs_that_need_a_worker(jr):
    # 3 s leases: the calls up to the heartbeat come before they expire
    # (slow under ASan on a busy machine). kept's begins first, so its
    # first lease ends before short's, whose expiry then shows it gone.
    live = jr.begin("live", owner="w", ttl=30000)
    kept = jr.begin("kept", owner="w", ttl=3000)
    short = jr.begin("short", owner="w", ttl=3000)
    waiting = jr.begin("waiting", owner="w", ttl=3000)
    jr.suspend(waiting.run_id, 1, "sig")
    done = jr.begin("done", owner="w", ttl=3000)
    jr.end(done.run_id, 1, COMPLETED, "")
    failed = jr.begin("failed", owner="w", ttl=3000)
    jr.end(failed.run_id, 1, FAILED, "")
    assert [r.run_id for r in jr.recover().runs] == []
    jr.heartbeat(kept.run_id, 1, 30000)
    wait_recoverable(jr, short.run_id)
    sleep_past(max(r.lease_expires_at_ms for r in (kept, waiting, done, failed)))
    runs = jr.recover().runs
    assert [r.run_id for r in runs] == [short.run_id]
    r = runs[0]
    # The expiry is a commit of its own (issue 21): RUNNABLE, no owner.
    assert r.status == RUNNABLE and r.reason == "LEASE_EXPIRED", r
    assert r.lease_owner == "" and r.lease_epoch == 1
    assert r.lease_expires_at_ms < now_ms()
    c = jr.claim(short.run_id, "rescuer", 30000)
    assert c.lease_epoch == 2
    assert [r.run_id for r in jr.recover().runs] == []
    for x in (live, kept):
        assert jr.get(x.run_id).status == RUNNING


def test_list_runs_to_recover_limit(jr):
    made = [jr.begin(f"inv-{i}", ttl=100).run_id for i in range(5)]
    for run_id in made:
        wait_recoverable(jr, run_id)
    assert sorted(r.run_id for r in jr.recover().runs) == made
    assert len(jr.recover(limit=2).runs) == 2
    assert len(jr.recover(limit=1000).runs) == 5
    e = rpc_error(jr.recover, 1001)
    assert e.code() == INVALID and "limit" in e.details(), fmt_err(e)


# --------------------------------------------------------------------------
# bad input everywhere


def test_unknown_run_is_not_found_on_every_method(jr):
    jr.begin("inv-1")
    calls = {
        "Heartbeat": lambda: jr.heartbeat(UNKNOWN_ID, 1),
        "Append": lambda: jr.append(UNKNOWN_ID, 1, "{}"),
        "ReadJournal": lambda: jr.read(UNKNOWN_ID),
        "EndRun": lambda: jr.end(UNKNOWN_ID, 1, COMPLETED, ""),
        "SuspendRun": lambda: jr.suspend(UNKNOWN_ID, 1, "sig"),
        "GetRun": lambda: jr.get(UNKNOWN_ID),
        "ClaimRun": lambda: jr.claim(UNKNOWN_ID, "w"),
    }
    for name, c in calls.items():
        e = rpc_error(c)
        assert e.code() == NOT_FOUND, (name, fmt_err(e))
    sub = jr.subscribe(UNKNOWN_ID)
    try:
        assert sub.expect_error().code() == NOT_FOUND
    finally:
        sub.cancel()
    # Odd run ids are refused, never found and never crash the server.
    for odd in ("", "../x", "a/b", "x.y"):
        for name, c in {
            "Heartbeat": lambda: jr.heartbeat(odd, 1),
            "Append": lambda: jr.append(odd, 1, "{}"),
            "ReadJournal": lambda: jr.read(odd),
            "EndRun": lambda: jr.end(odd, 1, COMPLETED, ""),
            "SuspendRun": lambda: jr.suspend(odd, 1, "sig"),
            "GetRun": lambda: jr.get(odd),
            "ClaimRun": lambda: jr.claim(odd, "w"),
        }.items():
            e = rpc_error(c)
            assert e.code() in (NOT_FOUND, INVALID), (name, odd, fmt_err(e))
    assert len(jr.list().runs) == 1
    assert list(jr.recover().runs) == []


def test_malformed_requests_are_invalid_argument(channel, jr):
    for method in ("BeginRun", "Append", "GetRun", "ListRuns", "SubscribeRun"):
        if method == "SubscribeRun":
            call = channel.unary_stream(f"/reel.v1.Journal/{method}")(b"\xff\xff\xff\xff",
                                                                       timeout=T)
            e = rpc_error(lambda: list(call))
        else:
            e = rpc_error(channel.unary_unary(f"/reel.v1.Journal/{method}"),
                          b"\xff\xff\xff\xff", timeout=T)
        assert e.code() == INVALID, (method, fmt_err(e))
    assert jr.begin("inv-1").lease_epoch == 1


# Protobuf strings may hold NUL bytes. A field must never be cut short at
# one: what is validated is refused, and what is stored round-trips exactly
# (or is refused), so two different values never collapse into one.


@pytest.mark.parametrize("field", ["kind", "payload", "result", "waiting_on"])
def test_embedded_nul_in_a_validated_field_is_invalid_not_truncated(jr, field):
    a = jr.begin("inv-1", owner="worker-a")
    jr.append(a.run_id, 1, "0")
    before = jr.read_all(a.run_id)
    calls = {
        "kind": lambda: jr.append(a.run_id, 1, "1", kind="step\x00x"),
        "payload": lambda: jr.append(a.run_id, 1, "1\x00x"),
        "result": lambda: jr.end(a.run_id, 1, COMPLETED, "{}\x00x"),
        "waiting_on": lambda: jr.suspend(a.run_id, 1, "sig\x00x"),
    }
    e = rpc_error(calls[field])
    assert e.code() == INVALID and field in e.details(), fmt_err(e)
    assert_journal_unchanged(jr, a.run_id, 2, before)
    g = jr.get(a.run_id)
    assert (g.status, g.lease_owner, g.result, g.waiting_on) == (RUNNING, "worker-a", "", "")


def test_idempotency_keys_differing_after_a_nul_are_different_keys(jr):
    a = jr.begin("inv-1")
    try:
        r1 = jr.append(a.run_id, 1, "1", key="k\x00a")
    except grpc.RpcError as e:                 # refusing NUL in keys is fine too
        assert e.code() == INVALID and "idempotency_key" in e.details(), fmt_err(e)
        assert_journal_unchanged(jr, a.run_id, 1, [])
        return
    r2 = jr.append(a.run_id, 1, "2", key="k\x00b")
    r3 = jr.append(a.run_id, 1, "3", key="k")
    assert not r2.duplicate and not r3.duplicate, (r2, r3)
    assert [r.entry.seq for r in (r1, r2, r3)] == [1, 2, 3]
    assert [e.idempotency_key for e in jr.read_all(a.run_id)] == ["k\x00a", "k\x00b", "k"]


@pytest.mark.parametrize("field", ["app", "user", "session", "invocation_id", "lease_owner"])
def test_begin_run_fields_differing_after_a_nul_are_not_collapsed(jr, field):
    kw = {"app": "app", "user": "user", "session": "sess", "inv": "inv", "owner": "own"}
    key = {"invocation_id": "inv", "lease_owner": "owner"}.get(field, field)
    base = jr.begin(**kw)
    odd = dict(kw)
    odd[key] = kw[key] + "\x00x"
    try:
        r = jr.begin(**odd)
    except grpc.RpcError as e:
        if e.code() == INVALID:                # refusing NUL is fine
            assert field in e.details(), fmt_err(e)
            assert [x.run_id for x in jr.list().runs] == [base.run_id]
            return
        if field == "lease_owner":             # "own\x00x" is not "own": held by another
            assert e.code() == PRECONDITION, fmt_err(e)
            return
        raise
    if field == "lease_owner":
        raise AssertionError(f"lease_owner {odd[key]!r} took the lease held by {kw[key]!r}: {r}")
    assert r.run_id != base.run_id and not r.resumed, \
        f"{field} {odd[key]!r} resumed the run of {kw[key]!r}"
    assert getattr(r, field) == odd[key], getattr(r, field)


# --------------------------------------------------------------------------
# durability


def test_restart_between_every_step_loses_nothing(server):
    jr = server.start()
    a = jr.begin("inv-1", owner="worker-a", ttl=600000, labels={"k": "v"})
    rid = a.run_id

    jr = server.restart()
    g = jr.get(rid)
    assert run_fields(g) == run_fields(a)
    e1 = jr.append(rid, 1, j("one"), kind="step", key="key-1")
    assert e1.entry.seq == 1

    jr = server.restart()
    assert jr.get(rid).next_seq == 2
    dup = jr.append(rid, 1, j("one"), kind="step", key="key-1")
    assert dup.duplicate and dup.entry == e1.entry, "idempotency keys survive a restart"
    e2 = jr.append(rid, 1, j("two"), kind="step")
    assert e2.entry.seq == 2 and e2.entry.revision > e1.entry.revision

    jr = server.restart()
    assert jr.get(rid).next_seq == 3
    assert list(jr.read_all(rid)) == [e1.entry, e2.entry]
    ended = jr.end(rid, 1, COMPLETED, j({"n": 2}))

    jr = server.restart()
    g = jr.get(rid)
    assert run_fields(g) == run_fields(ended)
    assert g.status == COMPLETED and g.next_seq == 3 and g.result == j({"n": 2})
    assert dict(g.labels) == {"k": "v"}
    assert list(jr.read_all(rid)) == [e1.entry, e2.entry]
    e = rpc_error(jr.append, rid, 1, j("late"))
    assert e.code() == PRECONDITION, fmt_err(e)
    b = jr.begin("inv-1", owner="worker-z")
    assert b.run_id == rid and b.resumed and b.status == COMPLETED
    # A run begun after the restarts sorts after the old one; revisions go on.
    c = jr.begin("inv-2")
    assert c.run_id > rid
    assert jr.append(c.run_id, 1, "1").entry.revision > e2.entry.revision
    sub = jr.subscribe(rid)
    try:
        assert sub.take(2) == [e1.entry, e2.entry]
        sub.expect_end()
    finally:
        sub.cancel()
    server.stop()


def test_leases_waits_and_epochs_survive_a_restart(server):
    jr = server.start()
    held = jr.begin("held", owner="worker-a", ttl=600000)
    short = jr.begin("short", owner="worker-a", ttl=300)
    parked = jr.begin("parked", owner="worker-a", ttl=600000)
    jr.suspend(parked.run_id, 1, "approval:1")
    jr = server.restart()
    e = rpc_error(jr.begin, "held", owner="worker-b")
    assert e.code() == PRECONDITION and "worker-a" in e.details(), fmt_err(e)
    assert jr.append(held.run_id, 1, "1").entry.lease_epoch == 1
    wait_recoverable(jr, short.run_id)
    assert [r.run_id for r in jr.recover().runs] == [short.run_id]
    g = jr.get(parked.run_id)
    assert (g.status, g.waiting_on, g.lease_owner) == (WAITING, "approval:1", "")
    c = jr.claim(short.run_id, "worker-b")
    assert c.lease_epoch == 2
    jr = server.restart()
    assert_lease_lost(rpc_error(jr.append, short.run_id, 1, "1"), 2)
    assert jr.append(short.run_id, 2, "1").entry.lease_epoch == 2
    server.stop()


def test_sigkill_loses_no_acknowledged_append(server):
    jr = server.start()
    a = jr.begin("inv-1", owner="worker-a", ttl=600000)
    acked, errors = [], []
    lock = threading.Lock()

    def appender(t):
        try:
            for i in range(15):
                r = jr.append(a.run_id, 1, j({"t": t, "i": i}), key=f"t{t}-i{i}")
                with lock:
                    acked.append(r.entry)
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=appender, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors[:3]
    server.kill()

    jr = server.start()
    stored = jr.read_all(a.run_id)
    assert [e.seq for e in stored] == list(range(1, 61))
    by_seq = {e.seq: e for e in acked}
    for e in stored:
        assert e == by_seq[e.seq]
    g = jr.get(a.run_id)
    assert g.next_seq == 61 and g.status == RUNNING and g.lease_epoch == 1
    dup = jr.append(a.run_id, 1, j({"t": 2, "i": 7}), key="t2-i7")
    assert dup.duplicate and dup.entry == next(e for e in acked if e.idempotency_key == "t2-i7")
    assert jr.append(a.run_id, 1, "61").entry.seq == 61
    # Killed again right after an end: the end was acknowledged, so it stays.
    ended = jr.end(a.run_id, 1, CANCELLED, "")
    server.kill()
    jr = server.start()
    assert run_fields(jr.get(a.run_id)) == run_fields(ended)
    assert len(jr.read_all(a.run_id)) == 61
    server.stop()
