"""reel.v1.Signals end to end: durable, buffered signals to one run, each
consumed by exactly one awaiter and recorded in the run's journal in the
same commit; long-poll awaits (prompt wake-up, timeouts, cancellation,
shutdown), signal_id deduplication, waking WAITING runs, lease fencing,
routing by session, listing, durability across restarts, and bad input,
against a real reeld through Python's grpcio.

Every test gets a fresh reeld (the `reeld` fixture) or starts its own on a
fresh data dir. Every wait is bounded.
"""
import json
import random
import re
import signal
import subprocess
import sys
import threading
import time

import grpc
import pytest

from reel.v1 import admin_pb2 as apb
from reel.v1 import journal_pb2 as jpb
from reel.v1 import signals_pb2 as spb
from conftest import Reeld, unary

Run = jpb.Run
RUNNABLE = Run.RUNNABLE
RUNNING = Run.RUNNING
WAITING = Run.WAITING
COMPLETED = Run.COMPLETED
FAILED = Run.FAILED
CANCELLED = Run.CANCELLED

NOT_FOUND = grpc.StatusCode.NOT_FOUND
INVALID = grpc.StatusCode.INVALID_ARGUMENT
PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION
UNAVAILABLE = grpc.StatusCode.UNAVAILABLE
DEADLINE = grpc.StatusCode.DEADLINE_EXCEEDED

T = 10                  # seconds: the bound on any single unary call or single wait
LONG_TTL = 600000       # a lease that never expires during a test
MAX_PAYLOAD = 1 << 20
UNKNOWN_ID = "01ARZ3NDEKTSV4RRFFQ69G5FAV"    # a well-formed ULID no test creates
BAD_NAMES = ["", "a b", "x" * 129, "é", "a/b", "sig\n", "a,b", "a*"]
GOOD_NAMES = ["x" * 128, "a", "Approval:order-42", "A.b_c-d:9", "0"]


# --------------------------------------------------------------------------
# helpers


def j(obj):
    return json.dumps(obj, separators=(",", ":"), sort_keys=True)


def now_ms():
    return int(time.time() * 1000)


def rpc_error(fn, *args, **kw):
    with pytest.raises(grpc.RpcError) as e:
        r = fn(*args, **kw)
        shown = ", ".join([repr(a)[:80] for a in args] +
                          [f"{k}={v!r:.80}" for k, v in kw.items()])
        raise AssertionError(f"expected an error from ({shown}), got {r!r:.600}")
    return e.value


def fmt_err(e):
    return f"{e.code()} {e.details()!r}"


def assert_gave_up(call, *args, **kw):
    """An await whose client deadline came before its timeout_ms: reeld
    answers delivered=false a moment before that deadline; on a loaded
    machine the answer may come too late, and the client's deadline ends
    the call. Either way nothing was delivered. Takes a future or a
    function and its arguments."""
    try:
        r = call.result(timeout=T) if hasattr(call, "result") else call(*args, **kw)
    except grpc.RpcError as e:
        assert e.code() == DEADLINE, fmt_err(e)
        return
    assert_not_delivered(r)


def assert_lease_lost(e, epoch):
    assert e.code() == PRECONDITION, fmt_err(e)
    assert "lease lost" in e.details(), fmt_err(e)
    assert f"current epoch {epoch}" in e.details(), fmt_err(e)


class Journal:
    """Thin wrappers over the parts of reel.v1.Journal these tests use."""

    def __init__(self, channel):
        def m(name, req, resp):
            return unary(channel, f"/reel.v1.Journal/{name}", req, resp)

        self._begin = m("BeginRun", jpb.BeginRunRequest, jpb.Run)
        self._append = m("Append", jpb.AppendRequest, jpb.AppendResponse)
        self._read = m("ReadJournal", jpb.ReadJournalRequest, jpb.ReadJournalResponse)
        self._end = m("EndRun", jpb.EndRunRequest, jpb.Run)
        self._suspend = m("SuspendRun", jpb.SuspendRunRequest, jpb.Run)
        self._get = m("GetRun", jpb.GetRunRequest, jpb.Run)
        self._recover = m("ListRunsToRecover", jpb.ListRunsToRecoverRequest,
                          jpb.ListRunsToRecoverResponse)
        self._claim = m("ClaimRun", jpb.ClaimRunRequest, jpb.Run)

    def begin(self, inv="inv-1", app="app", user="alice", session="s1", owner="w1",
              ttl=LONG_TTL):
        return self._begin(jpb.BeginRunRequest(
            app=app, user=user, session=session, invocation_id=inv, lease_owner=owner,
            lease_ttl_ms=ttl), timeout=T)

    def append(self, run_id, epoch, payload="{}", kind="step"):
        return self._append(jpb.AppendRequest(run_id=run_id, lease_epoch=epoch, kind=kind,
                                              payload=payload), timeout=T)

    def read_all(self, run_id):
        out, cursor = [], 0
        for _ in range(1000):
            r = self._read(jpb.ReadJournalRequest(run_id=run_id, from_seq=cursor,
                                                  limit=1000), timeout=T)
            out.extend(r.entries)
            if not r.more:
                return out
            assert r.next_from_seq > cursor, r
            cursor = r.next_from_seq
        raise AssertionError("ReadJournal never ended")

    def end(self, run_id, epoch, status=COMPLETED, result=""):
        return self._end(jpb.EndRunRequest(run_id=run_id, lease_epoch=epoch, status=status,
                                           result=result), timeout=T)

    def suspend(self, run_id, epoch, waiting_on):
        return self._suspend(jpb.SuspendRunRequest(run_id=run_id, lease_epoch=epoch,
                                                   waiting_on=waiting_on), timeout=T)

    def get(self, run_id):
        return self._get(jpb.GetRunRequest(run_id=run_id), timeout=T)

    def recover(self):
        return self._recover(jpb.ListRunsToRecoverRequest(), timeout=T)

    def claim(self, run_id, owner, ttl=LONG_TTL):
        return self._claim(jpb.ClaimRunRequest(run_id=run_id, lease_owner=owner,
                                               lease_ttl_ms=ttl), timeout=T)


class Signals:
    """Thin wrappers over reel.v1.Signals on one channel."""

    def __init__(self, channel):
        def m(name, req, resp):
            return unary(channel, f"/reel.v1.Signals/{name}", req, resp)

        self._send = m("SendSignal", spb.SendSignalRequest, spb.SendSignalResponse)
        self._await = m("AwaitSignal", spb.AwaitSignalRequest, spb.AwaitSignalResponse)
        self._list = m("ListSignals", spb.ListSignalsRequest, spb.ListSignalsResponse)
        self._status = unary(channel, "/reel.v1.Admin/GetStatus", apb.GetStatusRequest,
                             apb.GetStatusResponse)

    def until_no_call_open(self):
        """Waits until the server has ended every other call: it ends an
        await ahead of the client's deadline, but on a loaded machine (ASan)
        the client may give up first, and until the server has ended it the
        await may still take a signal."""
        end = time.monotonic() + T
        while self._status(apb.GetStatusRequest(), timeout=T).open_calls > 0:
            assert time.monotonic() < end, "calls still open"
            time.sleep(0.02)

    def until_calls_open(self, n):
        """Waits until the server has n or more other calls open (awaits
        just started reach it a moment later)."""
        end = time.monotonic() + T
        while self._status(apb.GetStatusRequest(), timeout=T).open_calls < n:
            assert time.monotonic() < end, f"fewer than {n} calls open"
            time.sleep(0.02)

    def send(self, run_id, name, payload="", signal_id="", app="", user="", session=""):
        return self._send(spb.SendSignalRequest(
            run_id=run_id, app=app, user=user, session=session, name=name,
            payload=payload, signal_id=signal_id), timeout=T)

    def to_session(self, app, user, session, name, payload="", signal_id=""):
        return self.send("", name, payload, signal_id, app=app, user=user, session=session)

    def await_(self, run_id, name, epoch, timeout_ms=0, deadline=None):
        if deadline is None:
            deadline = timeout_ms / 1000 + T
        return self._await(spb.AwaitSignalRequest(run_id=run_id, name=name,
                                                  lease_epoch=epoch, timeout_ms=timeout_ms),
                           timeout=deadline)

    def await_future(self, run_id, name, epoch, timeout_ms, deadline=None):
        if deadline is None:
            deadline = timeout_ms / 1000 + T
        return self._await.future(spb.AwaitSignalRequest(
            run_id=run_id, name=name, lease_epoch=epoch, timeout_ms=timeout_ms),
            timeout=deadline)

    def list(self, run_id, name="", include_consumed=False, limit=0):
        return list(self._list(spb.ListSignalsRequest(
            run_id=run_id, name=name, include_consumed=include_consumed, limit=limit),
            timeout=T).signals)


class Server:
    """A reeld on a given data dir that a test restarts at will."""

    def __init__(self, data):
        self.data = data
        self.proc = None
        self.ch = None

    def start(self):
        self.proc = Reeld(self.data).start()
        self.ch = grpc.insecure_channel(self.proc.addr)
        return Journal(self.ch), Signals(self.ch)

    def stop(self, close=True):
        """SIGTERM; asserts exit 0 and returns the seconds it took. With
        close=False the channel stays open (calls on it see the shutdown)."""
        if close:
            self.ch.close()
        code, secs = self.proc.stop(signal.SIGTERM)
        assert code == 0, f"reeld exited {code} on SIGTERM:\n{self.proc.log()}"
        return secs

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
def sg(channel):
    return Signals(channel)


@pytest.fixture
def server(tmp_path):
    s = Server(str(tmp_path / "data"))
    yield s
    s.cleanup()


def signal_entries(jr, run_id):
    return [e for e in jr.read_all(run_id) if e.kind == "signal"]


def entry_body(entry):
    return json.loads(entry.payload)


def expected_body(sig):
    return {"name": sig.name, "signal_id": sig.signal_id,
            "payload": json.loads(sig.payload) if sig.payload else None}


def same_signal(a, b):
    """The identity of a signal: what the send stored, not the consumption."""
    return ((a.run_id, a.name, a.payload, a.signal_id, a.seq, a.revision, a.sent_at_ms) ==
            (b.run_id, b.name, b.payload, b.signal_id, b.seq, b.revision, b.sent_at_ms))


def assert_delivered(r, sent, journal_seq=None):
    """r (an AwaitSignalResponse) delivered the signal `sent` (a Signal as
    SendSignal stored it), recorded at journal_seq."""
    assert r.delivered, r
    assert same_signal(r.signal, sent), (r.signal, sent)
    assert r.signal.consumed_at_ms >= sent.sent_at_ms, r.signal
    assert r.journal_seq > 0 and r.signal.journal_seq == r.journal_seq, r
    if journal_seq is not None:
        assert r.journal_seq == journal_seq, r


def assert_not_delivered(r):
    assert not r.delivered, r
    assert r.journal_seq == 0, r
    assert r.signal.seq == 0 and r.signal.name == "", r


def assert_pending(sg, run_id, sigs, name=""):
    got = sg.list(run_id, name)
    assert [s.seq for s in got] == [s.seq for s in sigs], (got, sigs)
    for g, s in zip(got, sigs):
        assert same_signal(g, s), (g, s)
        assert g.consumed_at_ms == 0 and g.journal_seq == 0, g


# --------------------------------------------------------------------------
# send and await


def test_send_then_await_delivers_at_once_and_records_a_journal_entry(jr, sg):
    a = jr.begin()
    t0 = now_ms()
    s = sg.send(a.run_id, "approve", j({"ok": True, "by": "bob"}), "sig-1")
    t1 = now_ms()
    assert s.accepted and not s.duplicate, s
    assert s.run_status == RUNNING, s
    sig = s.signal
    assert (sig.run_id, sig.name, sig.payload, sig.signal_id) == \
        (a.run_id, "approve", j({"ok": True, "by": "bob"}), "sig-1"), sig
    assert sig.seq == 1 and sig.revision > 0, sig
    assert t0 - 5 <= sig.sent_at_ms <= t1 + 5, (t0, sig.sent_at_ms, t1)
    assert sig.consumed_at_ms == 0 and sig.journal_seq == 0, sig
    assert_pending(sg, a.run_id, [sig])
    assert jr.read_all(a.run_id) == []            # sending writes no journal entry

    t = time.monotonic()
    r = sg.await_(a.run_id, "approve", 1, timeout_ms=5000)
    elapsed = time.monotonic() - t
    assert elapsed < 1.0, f"a queued signal took {elapsed:.2f}s to deliver"
    assert_delivered(r, sig, journal_seq=1)
    assert r.signal.consumed_at_ms <= now_ms() + 5

    entries = jr.read_all(a.run_id)
    assert len(entries) == 1, entries
    e = entries[0]
    assert (e.run_id, e.seq, e.kind, e.lease_epoch) == (a.run_id, 1, "signal", 1), e
    assert entry_body(e) == {"name": "approve", "signal_id": "sig-1",
                             "payload": {"ok": True, "by": "bob"}}, e.payload
    assert e.revision > sig.revision, (e, sig)
    assert jr.get(a.run_id).next_seq == 2

    assert sg.list(a.run_id) == []
    consumed = sg.list(a.run_id, include_consumed=True)
    assert len(consumed) == 1 and same_signal(consumed[0], sig), consumed
    assert consumed[0].consumed_at_ms == r.signal.consumed_at_ms, consumed
    assert consumed[0].journal_seq == 1, consumed

    t = time.monotonic()
    assert_not_delivered(sg.await_(a.run_id, "approve", 1, timeout_ms=0))
    assert time.monotonic() - t < 1.0, "timeout_ms 0 must answer at once"


def test_await_then_send_wakes_the_waiter_promptly(jr, sg):
    a = jr.begin()
    jr.append(a.run_id, 1, j("before"))
    fut = sg.await_future(a.run_id, "go", 1, timeout_ms=15000)
    time.sleep(0.4)
    assert not fut.done(), f"await answered before any signal: {fut.result()!r}"
    t_send = time.monotonic()
    s = sg.send(a.run_id, "go", j([1, 2, 3]), "go-1")
    r = fut.result(timeout=T)
    woke = time.monotonic() - t_send
    assert woke < 1.0, f"the waiter woke {woke:.2f}s after the send"
    assert s.accepted and not s.duplicate and s.run_status == RUNNING, s
    assert_delivered(r, s.signal, journal_seq=2)
    assert sg.list(a.run_id) == []
    entries = jr.read_all(a.run_id)
    assert [e.kind for e in entries] == ["step", "signal"], entries
    assert entry_body(entries[1]) == {"name": "go", "signal_id": "go-1", "payload": [1, 2, 3]}
    got = sg.list(a.run_id, include_consumed=True)
    assert len(got) == 1 and got[0].journal_seq == 2 and got[0].consumed_at_ms > 0, got


def test_signal_without_payload_or_id_records_null_payload(jr, sg):
    a = jr.begin()
    s = sg.send(a.run_id, "ping").signal
    assert s.payload == "" and s.signal_id == "", s
    r = sg.await_(a.run_id, "ping", 1, timeout_ms=1000)
    assert_delivered(r, s, journal_seq=1)
    (e,) = signal_entries(jr, a.run_id)
    assert entry_body(e) == {"name": "ping", "signal_id": "", "payload": None}, e.payload
    # Every JSON kind round-trips as the payload, and lands in the journal as JSON.
    values = [0, -1.5, "text", True, False, None, [], {}, {"a": [1, {"b": None}]}, "é\u2603"]
    for i, v in enumerate(values):
        sent = sg.send(a.run_id, "v", j(v), f"v-{i}").signal
        assert sent.payload == j(v), (v, sent)
        r = sg.await_(a.run_id, "v", 1, timeout_ms=1000)
        assert_delivered(r, sent)
        (e,) = [x for x in jr.read_all(a.run_id) if x.seq == r.journal_seq]
        assert e.kind == "signal" and entry_body(e) == expected_body(sent), (v, e.payload)


def test_signals_of_one_name_are_delivered_in_send_order_and_others_untouched(jr, sg):
    a = jr.begin("inv-a")
    other = jr.begin("inv-other")
    order = [("a", 1), ("b", 1), ("a", 2), ("c", 1), ("a", 3), ("b", 2)]
    sent = [sg.send(a.run_id, n, j({"n": n, "i": i})).signal for n, i in order]
    assert [s.seq for s in sent] == [1, 2, 3, 4, 5, 6], sent
    revs = [s.revision for s in sent]
    assert revs == sorted(revs) and len(set(revs)) == 6, revs
    # seq is per run, revision is global.
    o = sg.send(other.run_id, "a", j({"other": True})).signal
    assert o.seq == 1 and o.revision > revs[-1], o
    assert_pending(sg, a.run_id, sent)
    assert_pending(sg, a.run_id, [sent[0], sent[2], sent[4]], name="a")
    assert_pending(sg, a.run_id, [sent[1], sent[5]], name="b")
    assert_pending(sg, a.run_id, [], name="zzz")

    got = [sg.await_(a.run_id, "a", 1, timeout_ms=1000) for _ in range(3)]
    for k, (r, s) in enumerate(zip(got, [sent[0], sent[2], sent[4]])):
        assert_delivered(r, s, journal_seq=k + 1)
    assert_not_delivered(sg.await_(a.run_id, "a", 1, timeout_ms=0))

    # Other names and the other run are untouched.
    rest = [sent[1], sent[3], sent[5]]
    assert_pending(sg, a.run_id, rest)
    assert_pending(sg, other.run_id, [o])
    assert jr.read_all(other.run_id) == []
    # include_consumed: pending first in send order, then the consumed ones.
    full = sg.list(a.run_id, include_consumed=True)
    assert [s.seq for s in full] == [2, 4, 6, 1, 3, 5], full
    assert [s.consumed_at_ms == 0 for s in full] == [True] * 3 + [False] * 3, full
    assert [s.journal_seq for s in full] == [0, 0, 0, 1, 2, 3], full
    only_a = sg.list(a.run_id, name="a", include_consumed=True)
    assert [s.seq for s in only_a] == [1, 3, 5], only_a
    # The journal holds the three "a" deliveries in consumption order.
    entries = jr.read_all(a.run_id)
    assert [e.kind for e in entries] == ["signal"] * 3, entries
    assert [entry_body(e) for e in entries] == \
        [expected_body(s) for s in (sent[0], sent[2], sent[4])]
    # Limits on the listing.
    assert [s.seq for s in sg.list(a.run_id, include_consumed=True, limit=2)] == [2, 4]
    assert [s.seq for s in sg.list(a.run_id, limit=1)] == [2]
    assert len(sg.list(a.run_id, include_consumed=True, limit=1000)) == 6


def test_list_signals_default_limit_is_100_and_at_most_1000(jr, sg):
    a = jr.begin()
    for i in range(103):
        sg.send(a.run_id, "n", str(i))
    assert [s.seq for s in sg.list(a.run_id)] == list(range(1, 101))
    assert len(sg.list(a.run_id, limit=1000)) == 103
    e = rpc_error(sg.list, a.run_id, limit=1001)
    assert e.code() == INVALID and "limit" in e.details(), fmt_err(e)


def test_list_signals_limit_keeps_send_order_across_names(jr, sg):
    # The limit cuts the listing as ordered (pending in send order, then
    # consumed), whatever the names sort like.
    a = jr.begin()
    sent = [sg.send(a.run_id, n, "1").signal for n in ["z", "a", "z", "m", "a"]]
    for lim in range(1, 6):
        got = [s.seq for s in sg.list(a.run_id, limit=lim)]
        assert got == list(range(1, lim + 1)), (lim, got)
    assert_delivered(sg.await_(a.run_id, "z", 1, timeout_ms=0), sent[0], 1)
    assert_delivered(sg.await_(a.run_id, "a", 1, timeout_ms=0), sent[1], 2)
    want = [3, 4, 5, 1, 2]
    assert [s.seq for s in sg.list(a.run_id, include_consumed=True)] == want
    for lim in range(1, 6):
        got = [s.seq for s in sg.list(a.run_id, include_consumed=True, limit=lim)]
        assert got == want[:lim], (lim, got)


# --------------------------------------------------------------------------
# signal_id deduplication


def test_retried_send_with_the_same_signal_id_is_delivered_once(jr, sg):
    a = jr.begin("inv-a")
    b = jr.begin("inv-b")
    first = sg.send(a.run_id, "pay", j({"amount": 5}), "pay-42")
    assert first.accepted and not first.duplicate, first
    retry = sg.send(a.run_id, "pay", j({"amount": 5}), "pay-42")
    assert retry.duplicate, retry
    assert same_signal(retry.signal, first.signal), (retry.signal, first.signal)
    # Another signal reusing the id (another payload, or name) is refused,
    # naming the original, and stores nothing.
    for name, payload in (("pay", j({"amount": 999})), ("refund", j({"amount": 5}))):
        e = rpc_error(sg.send, a.run_id, name, payload, "pay-42")
        assert e.code() == grpc.StatusCode.ALREADY_EXISTS, fmt_err(e)
        assert f'signal_id "pay-42" already names signal {first.signal.seq}' in e.details()
    assert_pending(sg, a.run_id, [first.signal])
    # signal_id is per run.
    other = sg.send(b.run_id, "pay", j({"amount": 5}), "pay-42")
    assert other.accepted and not other.duplicate and other.signal.run_id == b.run_id, other

    r = sg.await_(a.run_id, "pay", 1, timeout_ms=1000)
    assert_delivered(r, first.signal, journal_seq=1)
    t = time.monotonic()
    assert_not_delivered(sg.await_(a.run_id, "pay", 1, timeout_ms=300))
    assert time.monotonic() - t >= 0.2
    # A retry after the delivery is still the same signal: nothing new to deliver.
    late = sg.send(a.run_id, "pay", j({"amount": 5}), "pay-42")
    assert late.duplicate and same_signal(late.signal, first.signal), late
    assert sg.list(a.run_id) == []
    assert len(sg.list(a.run_id, include_consumed=True)) == 1
    assert_not_delivered(sg.await_(a.run_id, "pay", 1, timeout_ms=0))
    assert len(signal_entries(jr, a.run_id)) == 1
    # The next signal gets the next seq: the duplicates took none.
    nxt = sg.send(a.run_id, "pay", "1", "pay-43").signal
    assert nxt.seq == 2, nxt


def test_signals_without_an_id_are_never_deduplicated(jr, sg):
    a = jr.begin()
    x = sg.send(a.run_id, "tick", "1")
    y = sg.send(a.run_id, "tick", "1")
    assert not x.duplicate and not y.duplicate, (x, y)
    assert (x.signal.seq, y.signal.seq) == (1, 2)
    assert_pending(sg, a.run_id, [x.signal, y.signal])
    assert_delivered(sg.await_(a.run_id, "tick", 1, timeout_ms=0), x.signal, 1)
    assert_delivered(sg.await_(a.run_id, "tick", 1, timeout_ms=0), y.signal, 2)


# --------------------------------------------------------------------------
# concurrency


def test_four_concurrent_awaiters_get_each_of_100_signals_exactly_once(jr, sg):
    a = jr.begin()
    n = 100
    sent, got, errors = {}, [[] for _ in range(4)], []
    sender_done = threading.Event()
    stop_at = time.monotonic() + 40

    def awaiter(k):
        try:
            while time.monotonic() < stop_at:
                # Quit only on a wait that began after the last send: it saw
                # an empty mailbox for its whole 300 ms.
                finished = sender_done.is_set()
                r = sg.await_(a.run_id, "job", 1, timeout_ms=300)
                if r.delivered:
                    got[k].append(r)
                elif finished:
                    return
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    def sender():
        try:
            for i in range(n):
                s = sg.send(a.run_id, "job", j({"i": i}), f"job-{i}")
                assert s.accepted and not s.duplicate, s
                sent[i] = s.signal
        except Exception as e:  # noqa: BLE001
            errors.append(e)
        finally:
            sender_done.set()

    threads = [threading.Thread(target=awaiter, args=(k,), daemon=True) for k in range(4)]
    for t in threads:
        t.start()
    time.sleep(0.1)
    st = threading.Thread(target=sender, daemon=True)
    st.start()
    st.join(timeout=45)
    for t in threads:
        t.join(timeout=45)
    assert not st.is_alive() and not any(t.is_alive() for t in threads), "threads hung"
    assert not errors, [fmt_err(e) if isinstance(e, grpc.RpcError) else e for e in errors][:3]
    assert len(sent) == n

    every = [r for rs in got for r in rs]
    seqs = [r.signal.seq for r in every]
    dups = sorted({s for s in seqs if seqs.count(s) > 1})
    assert not dups, f"signals delivered more than once: {dups}"
    assert sorted(seqs) == list(range(1, n + 1)), \
        f"lost: {sorted(set(range(1, n + 1)) - set(seqs))}"
    by_seq = {s.seq: s for s in sent.values()}
    for r in every:
        assert_delivered(r, by_seq[r.signal.seq])
        assert json.loads(r.signal.payload) == {"i": r.signal.seq - 1}, r.signal
    jseqs = [r.journal_seq for r in every]
    assert sorted(jseqs) == list(range(1, n + 1)), "journal seqs of the deliveries"
    for rs in got:         # FIFO: each awaiter sees ever-newer signals
        assert [r.signal.seq for r in rs] == sorted(r.signal.seq for r in rs)

    entries = jr.read_all(a.run_id)
    assert len(entries) == n and all(e.kind == "signal" for e in entries), \
        [e.kind for e in entries][:5]
    bodies = [entry_body(e) for e in entries]
    assert len({b["signal_id"] for b in bodies}) == n
    # Consumption order is the journal order, and FIFO makes it send order.
    assert [b["signal_id"] for b in bodies] == [f"job-{i}" for i in range(n)]
    by_jseq = {r.journal_seq: r for r in every}
    for e in entries:
        assert entry_body(e) == expected_body(by_jseq[e.seq].signal), (e, by_jseq[e.seq])
    assert sg.list(a.run_id) == []
    done = sg.list(a.run_id, include_consumed=True, limit=1000)
    assert len(done) == n and all(s.consumed_at_ms > 0 and s.journal_seq > 0 for s in done)
    assert {s.seq: s.journal_seq for s in done} == {r.signal.seq: r.journal_seq for r in every}


def test_short_timeouts_racing_sends_never_lose_or_repeat_a_signal(jr, sg):
    # An await that answers delivered=false must have consumed nothing, even
    # when its timeout fires just as a signal arrives.
    a = jr.begin()
    n = 150
    sent, got, errors = [], [], []
    lock = threading.Lock()
    sender_done = threading.Event()
    stop_at = time.monotonic() + 30

    def awaiter(k):
        rnd = random.Random(k)
        try:
            while time.monotonic() < stop_at:
                finished = sender_done.is_set()
                r = sg.await_(a.run_id, "n", 1, timeout_ms=rnd.choice([0, 1, 2, 5, 10, 20]))
                if r.delivered:
                    with lock:
                        got.append(r)
                elif finished:
                    return
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    def sender():
        rnd = random.Random(99)
        try:
            for i in range(n):
                sent.append(sg.send(a.run_id, "n", j(i)).signal)
                time.sleep(rnd.choice([0, 0, 0.001, 0.003, 0.008]))
        except Exception as e:  # noqa: BLE001
            errors.append(e)
        finally:
            sender_done.set()

    threads = [threading.Thread(target=awaiter, args=(k,), daemon=True) for k in range(3)]
    threads.append(threading.Thread(target=sender, daemon=True))
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=40)
    assert not any(t.is_alive() for t in threads), "threads hung"
    assert not errors, [fmt_err(e) if isinstance(e, grpc.RpcError) else e for e in errors][:3]
    seqs = sorted(r.signal.seq for r in got)
    consumed = sg.list(a.run_id, include_consumed=True, limit=1000)
    assert sg.list(a.run_id) == [], "left pending"
    lost = sorted({x.seq for x in consumed} - set(seqs))
    assert not lost, f"consumed (journal_seq set) but answered delivered=false: {lost}"
    assert seqs == list(range(1, n + 1)), f"repeated: {[q for q in set(seqs) if seqs.count(q) > 1]}"
    entries = jr.read_all(a.run_id)
    assert len(entries) == n
    assert sorted(r.journal_seq for r in got) == [e.seq for e in entries]


def test_concurrent_sends_with_one_signal_id_store_one_signal(jr, sg):
    a = jr.begin()
    out, errors = [], []
    lock = threading.Lock()

    def send():
        try:
            r = sg.send(a.run_id, "once", j({"x": 1}), "the-id")
            with lock:
                out.append(r)
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=send, daemon=True) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=T)
    assert not errors, errors[:3]
    assert len(out) == 8
    assert sum(not r.duplicate for r in out) == 1, [r.duplicate for r in out]
    orig = next(r for r in out if not r.duplicate).signal
    assert all(same_signal(r.signal, orig) for r in out)
    assert_pending(sg, a.run_id, [orig])


# --------------------------------------------------------------------------
# timeouts, cancellation


def test_await_with_a_timeout_and_no_signal_answers_not_delivered(jr, sg):
    a = jr.begin()
    sg.send(a.run_id, "other", "1")
    t = time.monotonic()
    r = sg.await_(a.run_id, "nothing", 1, timeout_ms=200)
    elapsed = time.monotonic() - t
    assert_not_delivered(r)
    assert 0.15 <= elapsed <= 2.0, f"timeout_ms 200 answered after {elapsed:.3f}s"
    t = time.monotonic()
    assert_not_delivered(sg.await_(a.run_id, "nothing", 1, timeout_ms=0))
    assert time.monotonic() - t < 1.0
    assert jr.read_all(a.run_id) == []
    assert len(sg.list(a.run_id)) == 1


def test_an_await_ends_when_its_lease_does(jr, sg):
    """The lease an await holds expires, or another worker claims the run:
    the await answers FAILED_PRECONDITION then, not "nothing came" at its
    timeout, and a signal sent after it stays pending."""
    a = jr.begin(inv="expires", ttl=300)
    t = time.monotonic()
    e = rpc_error(sg.await_, a.run_id, "go", a.lease_epoch, timeout_ms=20000)
    elapsed = time.monotonic() - t
    assert e.code() == PRECONDITION, fmt_err(e)
    assert "RUNNABLE" in e.details() and "holds no lease" in e.details(), fmt_err(e)
    assert elapsed < 5, f"answered {elapsed:.2f}s after the await began"
    # Claimed by another worker while the first awaits at its old epoch
    # (the expiry and the claim both end it; whichever comes first).
    b = jr.begin(inv="taken", ttl=300)
    f = sg.await_future(b.run_id, "go", b.lease_epoch, timeout_ms=20000)
    deadline = time.monotonic() + 10
    while jr.get(b.run_id).status != jpb.Run.RUNNABLE:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    c = jr.claim(b.run_id, "w2")
    with pytest.raises(grpc.RpcError) as e:
        f.result(timeout=T)
    assert e.value.code() == PRECONDITION, fmt_err(e.value)
    s = sg.send(b.run_id, "go", "1").signal
    assert_pending(sg, b.run_id, [s])
    assert_delivered(sg.await_(b.run_id, "go", c.lease_epoch, timeout_ms=1000), s, 1)


def test_timeout_above_the_cap_is_clamped_not_refused(jr, sg):
    a = jr.begin()
    for big in (300001, 10 ** 12, 2 ** 63 - 1):
        assert_gave_up(sg.await_, a.run_id, "x", 1, timeout_ms=big, deadline=0.3)
    sg.until_no_call_open()
    s = sg.send(a.run_id, "x", "7").signal
    assert_pending(sg, a.run_id, [s])
    assert_delivered(sg.await_(a.run_id, "x", 1, timeout_ms=10 ** 12, deadline=T), s, 1)


def test_signal_max_wait_flag_clamps_long_timeouts(tmp_path):
    srv = Reeld(str(tmp_path / "data"), extra=["--signal-max-wait-ms", "300"]).start()
    ch = grpc.insecure_channel(srv.addr)
    try:
        jr, sg = Journal(ch), Signals(ch)
        a = jr.begin()
        t = time.monotonic()
        r = sg.await_(a.run_id, "x", 1, timeout_ms=60000, deadline=T)
        elapsed = time.monotonic() - t
        assert_not_delivered(r)
        assert 0.25 <= elapsed <= 2.0, f"capped at 300 ms, answered after {elapsed:.2f}s"
    finally:
        ch.close()
        code, _ = srv.stop()
    assert code == 0, srv.log()


def test_a_waiter_is_not_woken_by_other_names_or_other_runs(jr, sg):
    a = jr.begin("inv-a")
    b = jr.begin("inv-b")
    fut = sg.await_future(a.run_id, "go", 1, timeout_ms=1000)
    time.sleep(0.2)
    t = time.monotonic()
    other_name = sg.send(a.run_id, "gone", "1").signal
    other_run = sg.send(b.run_id, "go", "2").signal
    r = fut.result(timeout=T)
    assert_not_delivered(r)
    assert time.monotonic() - t >= 0.5, "woke early on a signal it was not waiting for"
    assert_pending(sg, a.run_id, [other_name])
    assert_pending(sg, b.run_id, [other_run])
    assert jr.read_all(a.run_id) == [] and jr.read_all(b.run_id) == []


def test_twenty_waiters_leave_the_server_responsive_and_each_gets_its_signal(jr, sg):
    # Long polls must not hold the server's few poller threads.
    a = jr.begin()
    futs = [sg.await_future(a.run_id, f"n{i}", 1, timeout_ms=15000) for i in range(20)]
    time.sleep(0.4)
    t = time.monotonic()
    assert jr.get(a.run_id).status == RUNNING
    assert sg.list(a.run_id) == []
    assert time.monotonic() - t < 1.0, "the server stalled while awaits were pending"
    assert not any(f.done() for f in futs)
    sent = {}
    for i in reversed(range(20)):
        sent[i] = sg.send(a.run_id, f"n{i}", j(i)).signal
    t = time.monotonic()
    for i, f in enumerate(futs):
        r = f.result(timeout=T)
        assert_delivered(r, sent[i])
    assert time.monotonic() - t < 2.0
    assert sorted(r.journal_seq for r in (f.result() for f in futs)) == list(range(1, 21))
    assert len(signal_entries(jr, a.run_id)) == 20


def test_an_await_answers_before_the_client_deadline_then_takes_nothing(jr, sg):
    """timeout_ms past the client's deadline: reeld ends the wait ahead of
    the deadline (a tenth of the time left, at most 1 s) with
    delivered=false, not the client's DEADLINE_EXCEEDED; a signal sent
    after that answer stays pending for the next await."""
    a = jr.begin()
    # A 10 s deadline: the answer comes 1 s ahead of it (a 5 s one left
    # 0.5 s, which a busy machine can take to deliver it).
    t0 = time.monotonic()
    r = sg.await_(a.run_id, "late", 1, timeout_ms=60000, deadline=10.0)
    elapsed = time.monotonic() - t0
    assert_not_delivered(r)
    assert 8.0 <= elapsed < 10.0, elapsed
    s = sg.send(a.run_id, "late", j("after")).signal
    assert_pending(sg, a.run_id, [s])
    assert jr.read_all(a.run_id) == []
    assert_delivered(sg.await_(a.run_id, "late", 1, timeout_ms=0), s, 1)


def test_a_cancelled_await_consumes_nothing(jr, sg):
    a = jr.begin()
    fut = sg.await_future(a.run_id, "go", 1, timeout_ms=20000)
    sg.until_calls_open(1)      # the await is waiting at the server
    assert not fut.done()
    fut.cancel()
    sg.until_no_call_open()     # the server has ended it
    s = sg.send(a.run_id, "go", j("after cancel"), "g1")
    assert s.accepted and not s.duplicate, s
    time.sleep(0.2)
    assert_pending(sg, a.run_id, [s.signal])
    assert jr.read_all(a.run_id) == []
    # A client deadline that ends the wait consumes nothing either.
    assert_gave_up(sg.await_, a.run_id, "go2", 1, timeout_ms=20000, deadline=0.3)
    sg.until_no_call_open()
    s2 = sg.send(a.run_id, "go2", "2").signal
    time.sleep(0.2)
    assert_pending(sg, a.run_id, [s.signal, s2])
    assert jr.read_all(a.run_id) == []
    # A new await gets them.
    assert_delivered(sg.await_(a.run_id, "go", 1, timeout_ms=1000), s.signal, 1)
    assert_delivered(sg.await_(a.run_id, "go2", 1, timeout_ms=1000), s2, 2)
    assert sg.list(a.run_id) == []


def test_many_cancelled_awaits_then_one_signal_goes_to_the_live_waiter(jr, sg):
    a = jr.begin()
    dead = [sg.await_future(a.run_id, "go", 1, timeout_ms=20000) for _ in range(5)]
    sg.until_calls_open(5)      # all five wait at the server
    for f in dead:
        f.cancel()
    sg.until_no_call_open()     # and the server has ended them
    live = sg.await_future(a.run_id, "go", 1, timeout_ms=10000)
    sg.until_calls_open(1)
    t = time.monotonic()
    s = sg.send(a.run_id, "go", "1").signal
    r = live.result(timeout=T)
    assert time.monotonic() - t < 2.0     # woken, not its 10 s timeout
    assert_delivered(r, s, 1)
    assert len(signal_entries(jr, a.run_id)) == 1


# --------------------------------------------------------------------------
# durability and shutdown


def test_signal_survives_a_restart_between_send_and_await(server):
    jr, sg = server.start()
    a = jr.begin()
    s = sg.send(a.run_id, "resume", j({"step": 3}), "r-1").signal
    other = sg.send(a.run_id, "later", "0").signal

    jr, sg = server.restart()
    assert_pending(sg, a.run_id, [s, other])
    dup = sg.send(a.run_id, "resume", j({"step": 3}), "r-1")
    assert dup.duplicate and same_signal(dup.signal, s), "signal ids survive a restart"
    r = sg.await_(a.run_id, "resume", 1, timeout_ms=2000)
    assert_delivered(r, s, journal_seq=1)

    jr, sg = server.restart()
    assert_pending(sg, a.run_id, [other])
    full = sg.list(a.run_id, include_consumed=True)
    assert [x.seq for x in full] == [2, 1], full
    assert full[1].consumed_at_ms == r.signal.consumed_at_ms and full[1].journal_seq == 1
    (e,) = jr.read_all(a.run_id)
    assert e.kind == "signal" and e.seq == 1 and entry_body(e) == expected_body(s), e
    assert_not_delivered(sg.await_(a.run_id, "resume", 1, timeout_ms=0))
    # seq and revision go on after the restarts.
    n = sg.send(a.run_id, "resume", "1").signal
    assert n.seq == 3 and n.revision > e.revision, n
    server.stop()


def test_sigterm_ends_a_pending_await_with_unavailable_and_consumes_nothing(server):
    jr, sg = server.start()
    a = jr.begin()
    kept = sg.send(a.run_id, "kept", j("pending")).signal
    fut = sg.await_future(a.run_id, "go", 1, timeout_ms=60000, deadline=30)
    fut_kept = sg.await_future(a.run_id, "other", 1, timeout_ms=60000, deadline=30)
    time.sleep(0.4)
    assert not fut.done() and not fut_kept.done()
    secs = server.stop(close=False)  # asserts exit 0
    assert secs < 5, f"SIGTERM took {secs:.2f}s with pending awaits"
    for f in (fut, fut_kept):
        e = f.exception(timeout=T)
        assert e is not None, f"await answered {f.result()!r} instead of ending"
        assert e.code() == UNAVAILABLE, fmt_err(e)
    server.ch.close()

    jr, sg = server.start()
    assert_pending(sg, a.run_id, [kept])
    assert jr.read_all(a.run_id) == []
    s = sg.send(a.run_id, "go", j("after restart")).signal
    assert s.seq == 2, s
    assert_delivered(sg.await_(a.run_id, "go", 1, timeout_ms=2000), s, 1)
    assert_delivered(sg.await_(a.run_id, "kept", 1, timeout_ms=0), kept, 2)
    server.stop()


def test_sigkill_loses_no_acknowledged_send_or_delivery(server):
    jr, sg = server.start()
    a = jr.begin()
    sent = [sg.send(a.run_id, "n", j(i), f"id-{i}").signal for i in range(20)]
    got = [sg.await_(a.run_id, "n", 1, timeout_ms=0) for _ in range(5)]
    for k, r in enumerate(got):
        assert_delivered(r, sent[k], k + 1)
    server.cleanup()                          # SIGKILL

    jr, sg = server.start()
    assert_pending(sg, a.run_id, sent[5:])
    done = sg.list(a.run_id, include_consumed=True)[15:]
    assert [(x.seq, x.journal_seq, x.consumed_at_ms) for x in done] == \
        [(r.signal.seq, r.journal_seq, r.signal.consumed_at_ms) for r in got]
    entries = jr.read_all(a.run_id)
    assert [entry_body(e) for e in entries] == [expected_body(x) for x in sent[:5]]
    dup = sg.send(a.run_id, "n", j(3), "id-3")
    assert dup.duplicate and same_signal(dup.signal, sent[3])
    assert_delivered(sg.await_(a.run_id, "n", 1, timeout_ms=0), sent[5], 6)
    server.stop()


# --------------------------------------------------------------------------
# WAITING runs, leases


def test_signal_to_a_run_waiting_on_it_makes_it_runnable_then_claim_and_await(jr, sg):
    a = jr.begin(owner="w1")
    jr.append(a.run_id, 1, j("asked for approval"))
    w = jr.suspend(a.run_id, 1, "approval:1")
    assert w.status == WAITING and w.waiting_on == "approval:1"
    # A WAITING run holds no lease: nobody may await on it.
    e = rpc_error(sg.await_, a.run_id, "approval:1", 1, timeout_ms=0)
    assert e.code() == PRECONDITION, fmt_err(e)

    note = sg.send(a.run_id, "note", j("fyi"))
    assert note.accepted and note.run_status == WAITING, note
    g = jr.get(a.run_id)
    assert g.status == WAITING and g.waiting_on == "approval:1", g
    assert a.run_id not in [r.run_id for r in jr.recover().runs]

    s = sg.send(a.run_id, "approval:1", j({"approved": True}), "ap-1")
    assert s.accepted and not s.duplicate and s.run_status == RUNNABLE, s
    g = jr.get(a.run_id)
    assert g.status == RUNNABLE and g.lease_owner == "", g
    assert [r.run_id for r in jr.recover().runs] == [a.run_id]
    # A second signal of that name leaves it RUNNABLE.
    s2 = sg.send(a.run_id, "approval:1", j({"approved": "again"}))
    assert s2.run_status == RUNNABLE, s2
    assert_pending(sg, a.run_id, [note.signal, s.signal, s2.signal])
    assert jr.read_all(a.run_id)[-1].kind == "step"     # the wake-up consumes nothing

    c = jr.claim(a.run_id, "w2")
    assert c.status == RUNNING and c.lease_epoch == 2 and c.lease_owner == "w2", c
    assert a.run_id not in [r.run_id for r in jr.recover().runs]
    assert_lease_lost(rpc_error(sg.await_, a.run_id, "approval:1", 1, timeout_ms=0), 2)
    r1 = sg.await_(a.run_id, "approval:1", 2, timeout_ms=1000)
    assert_delivered(r1, s.signal, journal_seq=2)
    r2 = sg.await_(a.run_id, "note", 2, timeout_ms=1000)
    assert_delivered(r2, note.signal, journal_seq=3)
    r3 = sg.await_(a.run_id, "approval:1", 2, timeout_ms=1000)
    assert_delivered(r3, s2.signal, journal_seq=4)
    entries = jr.read_all(a.run_id)
    assert [e.kind for e in entries] == ["step", "signal", "signal", "signal"], entries
    assert [e.lease_epoch for e in entries] == [1, 2, 2, 2], entries
    assert [entry_body(e) for e in entries[1:]] == \
        [expected_body(x) for x in (s.signal, note.signal, s2.signal)]
    assert sg.list(a.run_id) == []


def test_signal_already_pending_before_suspend_is_awaited_after_claim(jr, sg):
    # Buffered: a signal sent while the run is RUNNING waits in the mailbox.
    a = jr.begin(owner="w1")
    early = sg.send(a.run_id, "approval", j("early")).signal
    assert jr.get(a.run_id).status == RUNNING
    late = sg.send(a.run_id, "approval", j("late"))
    assert late.run_status == RUNNING
    assert_delivered(sg.await_(a.run_id, "approval", 1, timeout_ms=0), early, 1)
    jr.suspend(a.run_id, 1, "approval2")
    w = sg.send(a.run_id, "approval2", "2")
    assert w.run_status == RUNNABLE, w
    c = jr.claim(a.run_id, "w2")
    assert_delivered(sg.await_(a.run_id, "approval", c.lease_epoch, timeout_ms=0),
                     late.signal, 2)
    assert_delivered(sg.await_(a.run_id, "approval2", c.lease_epoch, timeout_ms=0),
                     w.signal, 3)


def test_stale_lease_epoch_on_await_is_failed_precondition(jr, sg):
    a = jr.begin(owner="w1", ttl=200)
    time.sleep(0.4)
    c = jr.claim(a.run_id, "w2")
    assert c.lease_epoch == 2
    s = sg.send(a.run_id, "go", "1").signal
    for epoch in (1, 3, 99):
        e = rpc_error(sg.await_, a.run_id, "go", epoch, timeout_ms=0)
        assert_lease_lost(e, 2)
        e = rpc_error(sg.await_, a.run_id, "go", epoch, timeout_ms=500)
        assert_lease_lost(e, 2)
    e = rpc_error(sg.await_, a.run_id, "go", 0, timeout_ms=0)
    assert e.code() in (PRECONDITION, INVALID), fmt_err(e)
    assert_pending(sg, a.run_id, [s])
    assert jr.read_all(a.run_id) == []
    assert_delivered(sg.await_(a.run_id, "go", 2, timeout_ms=0), s, 1)
    assert signal_entries(jr, a.run_id)[0].lease_epoch == 2


def test_a_waiter_whose_lease_was_taken_over_consumes_nothing(jr, sg):
    a = jr.begin(owner="w1", ttl=300)
    fut = sg.await_future(a.run_id, "go", 1, timeout_ms=2000)
    time.sleep(0.5)                               # the lease expires meanwhile
    c = jr.claim(a.run_id, "w2")
    assert c.lease_epoch == 2
    s = sg.send(a.run_id, "go", j("for the new holder")).signal
    try:
        r = fut.result(timeout=T)
    except grpc.RpcError as e:
        # Ended when the expiry committed (RUNNABLE, no lease), or, had
        # the claim come first, when it did (lease lost).
        if "lease lost" in e.details():
            assert_lease_lost(e, 2)
        else:
            assert e.code() == PRECONDITION, fmt_err(e)
            assert "holds no lease" in e.details(), fmt_err(e)
    else:
        assert not r.delivered, f"a fenced-off epoch-1 waiter consumed {r}"
    assert_pending(sg, a.run_id, [s])
    assert jr.read_all(a.run_id) == []
    assert_delivered(sg.await_(a.run_id, "go", 2, timeout_ms=0), s, 1)
    assert signal_entries(jr, a.run_id)[0].lease_epoch == 2


def test_a_waiter_on_a_run_that_then_suspends_consumes_nothing(jr, sg):
    # The holder suspends while one of its awaits is still pending: the run
    # holds no lease any more, so the wake-up signal must stay for the next
    # claimer.
    a = jr.begin(owner="w1")
    fut = sg.await_future(a.run_id, "approval", 1, timeout_ms=1500)
    time.sleep(0.3)
    jr.suspend(a.run_id, 1, "approval")
    s = sg.send(a.run_id, "approval", j("yes"))
    assert s.run_status == RUNNABLE, s
    try:
        r = fut.result(timeout=T)
    except grpc.RpcError as e:
        assert e.code() == PRECONDITION, fmt_err(e)
    else:
        assert not r.delivered, f"an await on a run with no lease consumed {r}"
    assert_pending(sg, a.run_id, [s.signal])
    assert jr.read_all(a.run_id) == []
    assert jr.get(a.run_id).status == RUNNABLE
    c = jr.claim(a.run_id, "w2")
    assert_delivered(sg.await_(a.run_id, "approval", c.lease_epoch, timeout_ms=0),
                     s.signal, 1)


def test_await_on_an_ended_run_is_refused(jr, sg):
    a = jr.begin()
    s = sg.send(a.run_id, "go", "1").signal
    jr.end(a.run_id, 1, COMPLETED, "")
    e = rpc_error(sg.await_, a.run_id, "go", 1, timeout_ms=0)
    assert e.code() == PRECONDITION, fmt_err(e)
    assert_pending(sg, a.run_id, [s])      # still listed, never consumed
    assert jr.read_all(a.run_id) == []


# --------------------------------------------------------------------------
# routing and terminal runs


def test_send_by_session_routes_to_the_newest_non_terminal_run(jr, sg):
    older = jr.begin("inv-1", app="shop", user="alice", session="s1")
    newer = jr.begin("inv-2", app="shop", user="alice", session="s1")
    jr.begin("inv-3", app="shop", user="alice", session="s2")
    jr.begin("inv-4", app="shop", user="bob", session="s1")
    jr.begin("inv-5", app="shop2", user="alice", session="s1")
    assert newer.run_id > older.run_id

    r = sg.to_session("shop", "alice", "s1", "hello", j(1), "h-1")
    assert r.accepted and r.signal.run_id == newer.run_id, r
    assert_pending(sg, newer.run_id, [r.signal])
    assert sg.list(older.run_id) == []
    # Dedup is per run and works through session addressing too.
    d = sg.to_session("shop", "alice", "s1", "hello", j(1), "h-1")
    assert d.duplicate and same_signal(d.signal, r.signal), d

    jr.end(newer.run_id, 1, COMPLETED, "")
    r2 = sg.to_session("shop", "alice", "s1", "hello", j(2))
    assert r2.signal.run_id == older.run_id and r2.signal.seq == 1, r2
    # A WAITING run is not terminal: it still gets routed signals, and wakes.
    jr.suspend(older.run_id, 1, "wake")
    r3 = sg.to_session("shop", "alice", "s1", "wake", j(3))
    assert r3.signal.run_id == older.run_id and r3.run_status == RUNNABLE, r3
    assert jr.get(older.run_id).status == RUNNABLE
    c = jr.claim(older.run_id, "w9")
    jr.end(older.run_id, c.lease_epoch, FAILED, "")

    before = {x: sg.list(x, include_consumed=True) for x in (older.run_id, newer.run_id)}
    e = rpc_error(sg.to_session, "shop", "alice", "s1", "hello", j(4))
    assert e.code() == NOT_FOUND, fmt_err(e)
    e = rpc_error(sg.to_session, "shop", "alice", "nobody-here", "hello", j(4))
    assert e.code() == NOT_FOUND, fmt_err(e)
    e = rpc_error(sg.to_session, "nope", "alice", "s1", "hello", j(4))
    assert e.code() == NOT_FOUND, fmt_err(e)
    after = {x: sg.list(x, include_consumed=True) for x in (older.run_id, newer.run_id)}
    assert before == after


@pytest.mark.parametrize("extra", [{"app": "zz", "user": "u", "session": "s"},
                                   {"app": "zz"}, {"user": "u"}, {"session": "s"}])
def test_a_run_id_beside_a_session_is_invalid_and_stores_nothing(jr, sg, extra):
    # Both used to send to the run and ignore the session without a word.
    run = jr.begin("inv-both", app="shop", user="alice", session="s1")
    e = rpc_error(sg.send, run.run_id, "hello", j(1), **extra)
    assert e.code() == INVALID, fmt_err(e)
    assert "run_id" in e.details() and "not both" in e.details()
    assert sg.list(run.run_id, include_consumed=True) == []


def test_send_to_a_terminal_run_is_failed_precondition_and_stores_nothing(jr, sg):
    runs = {}
    for st in (COMPLETED, FAILED, CANCELLED):
        a = jr.begin(f"inv-{st}")
        sg.send(a.run_id, "x", "1")
        jr.end(a.run_id, 1, st, "")
        runs[st] = a.run_id
    for st, rid in runs.items():
        e = rpc_error(sg.send, rid, "x", "2")
        assert e.code() == PRECONDITION, (st, fmt_err(e))
        e = rpc_error(sg.send, rid, "y", "", "sid-1")
        assert e.code() == PRECONDITION, (st, fmt_err(e))
        got = sg.list(rid, include_consumed=True)
        assert [s.seq for s in got] == [1], (st, got)


# --------------------------------------------------------------------------
# bad input


def test_bad_names_are_invalid_and_store_nothing(jr, sg):
    a = jr.begin()
    for name in BAD_NAMES:
        e = rpc_error(sg.send, a.run_id, name, "1")
        assert e.code() == INVALID and "name" in e.details(), (name, fmt_err(e))
        e = rpc_error(sg.await_, a.run_id, name, 1, timeout_ms=0)
        assert e.code() == INVALID and "name" in e.details(), (name, fmt_err(e))
        if name:                                   # "" lists every name
            e = rpc_error(sg.list, a.run_id, name)
            assert e.code() == INVALID and "name" in e.details(), (name, fmt_err(e))
    assert sg.list(a.run_id, include_consumed=True) == []
    assert jr.read_all(a.run_id) == []
    for k, name in enumerate(GOOD_NAMES):
        s = sg.send(a.run_id, name, "1").signal
        assert s.name == name and s.seq == k + 1, s       # nothing took a seq before
        assert_delivered(sg.await_(a.run_id, name, 1, timeout_ms=0), s, k + 1)


def test_oversize_signal_id_is_invalid_and_stores_nothing(jr, sg):
    a = jr.begin()
    e = rpc_error(sg.send, a.run_id, "x", "1", "k" * 257)
    assert e.code() == INVALID and "signal_id" in e.details(), fmt_err(e)
    assert sg.list(a.run_id, include_consumed=True) == []
    s = sg.send(a.run_id, "x", "1", "k" * 256)
    assert s.accepted and s.signal.signal_id == "k" * 256 and s.signal.seq == 1, s
    assert sg.send(a.run_id, "x", "1", "k" * 256).duplicate


def test_invalid_json_payloads_are_invalid_and_store_nothing(jr, sg):
    a = jr.begin()
    for bad in ["{", "{'a': 1}", "abc", "[1,]", '{"a":1}x', "01", "nul",
                '"unterminated', '"a\x01b"', " "]:
        e = rpc_error(sg.send, a.run_id, "x", bad)
        assert e.code() == INVALID and "payload" in e.details(), (bad, fmt_err(e))
    assert sg.list(a.run_id, include_consumed=True) == []
    assert sg.send(a.run_id, "x", "").signal.seq == 1


def test_oversize_payload_is_invalid_and_stores_nothing(jr, sg):
    a = jr.begin()
    for bad in ('"' + "x" * (MAX_PAYLOAD - 1) + '"',
                '"' + "é" * (MAX_PAYLOAD // 2) + '"'):         # bytes, not characters
        e = rpc_error(sg.send, a.run_id, "big", bad)
        assert e.code() == INVALID and "payload" in e.details(), fmt_err(e)
        assert "--journal-max-payload-bytes" in e.details(), fmt_err(e)
    assert sg.list(a.run_id, include_consumed=True) == []
    ok = '"' + "x" * (MAX_PAYLOAD - 2) + '"'
    assert len(ok) == MAX_PAYLOAD
    s = sg.send(a.run_id, "big", ok).signal
    assert s.seq == 1 and s.payload == ok
    r = sg.await_(a.run_id, "big", 1, timeout_ms=0)
    assert_delivered(r, s, 1)


def test_negative_timeout_is_invalid_and_consumes_nothing(jr, sg):
    a = jr.begin()
    s = sg.send(a.run_id, "x", "1").signal
    for t in (-1, -1000, -(2 ** 63)):
        e = rpc_error(sg.await_, a.run_id, "x", 1, timeout_ms=t, deadline=T)
        assert e.code() == INVALID and "timeout_ms" in e.details(), (t, fmt_err(e))
    assert_pending(sg, a.run_id, [s])
    assert jr.read_all(a.run_id) == []


def test_unknown_and_odd_runs(jr, sg):
    a = jr.begin()
    for call in (lambda: sg.send(UNKNOWN_ID, "x", "1"),
                 lambda: sg.send(UNKNOWN_ID, "x", "1", "sid"),
                 lambda: sg.await_(UNKNOWN_ID, "x", 1, timeout_ms=0),
                 lambda: sg.await_(UNKNOWN_ID, "x", 1, timeout_ms=500),
                 lambda: sg.list(UNKNOWN_ID)):
        e = rpc_error(call)
        assert e.code() == NOT_FOUND, fmt_err(e)
    for odd in ("../x", "a/b", "x.y", "0" * 27):
        for call in (lambda: sg.send(odd, "x", "1"),
                     lambda: sg.await_(odd, "x", 1, timeout_ms=0),
                     lambda: sg.list(odd)):
            e = rpc_error(call)
            assert e.code() in (NOT_FOUND, INVALID), (odd, fmt_err(e))
    # No run and no complete session: nothing to address.
    for kw in ({}, {"app": "app"}, {"app": "app", "user": "alice"},
               {"user": "alice", "session": "s1"}):
        e = rpc_error(sg.send, "", "x", "1", "", **kw)
        assert e.code() in (INVALID, NOT_FOUND), (kw, fmt_err(e))
        if e.code() == INVALID:
            assert re.search(r"run_id|app|user|session", e.details()), (kw, fmt_err(e))
    e = rpc_error(sg.await_, "", "x", 1, timeout_ms=0)
    assert e.code() in (INVALID, NOT_FOUND), fmt_err(e)
    assert sg.list(a.run_id, include_consumed=True) == []
    assert sg.send(a.run_id, "x", "1").signal.seq == 1


def test_malformed_requests_are_invalid_argument(channel, jr, sg):
    a = jr.begin()
    for method in ("SendSignal", "AwaitSignal", "ListSignals"):
        raw = channel.unary_unary(f"/reel.v1.Signals/{method}")
        e = rpc_error(raw, b"\xff\xff\xff\xff", timeout=T)
        assert e.code() == INVALID, (method, fmt_err(e))
    assert sg.send(a.run_id, "x", "1").signal.seq == 1


def test_unary_calls_however_they_end_leave_no_call_open(reeld, channel, jr, sg):
    """A unary call hears of its end in the batch that sends its status; one
    that waits (AwaitSignal) starts a close watch of its own to hear of a
    client leaving. Every ending must free the call: answered, refused,
    unknown method, cancelled while waiting, ended at (or just ahead of)
    its deadline while waiting, woken by a signal, and a client killed
    while waiting."""
    from reel.v1 import admin_pb2
    status = unary(channel, "/reel.v1.Admin/GetStatus", admin_pb2.GetStatusRequest,
                   admin_pb2.GetStatusResponse)
    unknown = channel.unary_unary("/reel.v1.Signals/NoSuchMethod")
    assert status(admin_pb2.GetStatusRequest(), timeout=T).open_calls == 0
    a = jr.begin()
    for i in range(20):
        sg.send(a.run_id, "x", j(i))
        assert rpc_error(sg.send, UNKNOWN_ID, "x", "1").code() == NOT_FOUND
        assert rpc_error(unknown, b"", timeout=T).code() == grpc.StatusCode.UNIMPLEMENTED
    woken = sg.await_future(a.run_id, "w", 1, timeout_ms=20000)
    cancelled = [sg.await_future(a.run_id, f"c{i}", 1, timeout_ms=20000) for i in range(5)]
    late = [sg.await_future(a.run_id, f"d{i}", 1, timeout_ms=20000, deadline=0.3)
            for i in range(5)]
    import conftest
    child = subprocess.Popen([sys.executable, "-c", AWAITER, reeld.addr, conftest._GEN, a.run_id],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "waiting"
        # The late ones end at their deadline (0.3 s); then the others, the
        # child's included, wait at the server (it may take a moment).
        for f in late:
            assert_gave_up(f)
        sg.until_calls_open(7)    # woken, cancelled, child
        for f in cancelled:
            f.cancel()
        sg.send(a.run_id, "w", j("wake"))
        assert woken.result(timeout=T).signal.name == "w"
    finally:
        child.kill()  # SIGKILL: its AwaitSignal never says goodbye
        child.wait()
    deadline = time.monotonic() + 10
    while (n := status(admin_pb2.GetStatusRequest(), timeout=T).open_calls) != 0:
        assert time.monotonic() < deadline, f"{n} calls still open"
        time.sleep(0.05)


# A client that waits for a signal that never comes, until it is killed.
AWAITER = """
import sys, grpc
sys.path.insert(0, sys.argv[2])
from reel.v1 import signals_pb2 as spb
ch = grpc.insecure_channel(sys.argv[1])
call = ch.unary_unary("/reel.v1.Signals/AwaitSignal",
                      request_serializer=spb.AwaitSignalRequest.SerializeToString,
                      response_deserializer=spb.AwaitSignalResponse.FromString)
f = call.future(spb.AwaitSignalRequest(run_id=sys.argv[3], name="never", lease_epoch=1,
                                       timeout_ms=60000),
                timeout=60)
print("waiting", flush=True)
sys.stdin.read()
"""
