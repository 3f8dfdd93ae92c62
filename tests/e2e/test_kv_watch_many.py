"""reel.v1.KV/WatchValues end to end: many watches on one stream behave as
they would alone (start modes, transitions with previous values, patterns),
a stream that is not read catches up from storage for every watch, and bad
input names the watch (watches[i]) and the limit. With coalesce, an event
for several watches comes once, naming them all (watch and also), and each
watch still gets every event once, in order.
"""
import collections
import json
import queue
import threading
import time

import grpc
import pytest

from reel.v1 import kv_pb2
from reel.v1 import admin_pb2
from conftest import Reeld, stream, unary

PUT = kv_pb2.ValueEvent.PUT
BOOTSTRAP_DONE = kv_pb2.ValueEvent.BOOTSTRAP_DONE
SNAPSHOT = kv_pb2.WatchValueRequest.SNAPSHOT
NOW = kv_pb2.WatchValueRequest.NOW
FROM_VERSION = kv_pb2.WatchValueRequest.FROM_VERSION

T = 10


def W(ns, key, start=NOW, **kw):
    return kv_pb2.WatchValueRequest(namespace=ns, key=key, start=start, **kw)


def watch_values(channel, watches, timeout=60, batched=False, coalesce=False):
    """A WatchValues stream, or with batched a WatchValuesBatches one."""
    if batched:
        call = stream(channel, "/reel.v1.KV/WatchValuesBatches", kv_pb2.WatchValuesRequest,
                      kv_pb2.WatchValuesEventBatch)
    else:
        call = stream(channel, "/reel.v1.KV/WatchValues", kv_pb2.WatchValuesRequest,
                      kv_pb2.WatchValuesEvent)
    return call(kv_pb2.WatchValuesRequest(watches=watches, coalesce=coalesce),
                timeout=timeout)


def setter(channel):
    fn = unary(channel, "/reel.v1.KV/SetValue", kv_pb2.SetValueRequest,
               kv_pb2.SetValueResponse)
    return lambda ns, key, value: fn(kv_pb2.SetValueRequest(
        namespace=ns, key=key, value=json.dumps(value)), timeout=T)


class Reader:
    """Reads a stream on a thread; events per watch index, in arrival order
    (a batched stream's messages are read element by element; a coalesced
    element counts for `watch` and for each of `also`)."""

    def __init__(self, call):
        self.call = call
        self.q = queue.Queue()
        self.by_watch = collections.defaultdict(list)
        self.elements = []  # (watches named, event), in arrival order
        self.error = None
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self):
        try:
            for m in self.call:
                for ev in m.events if isinstance(m, kv_pb2.WatchValuesEventBatch) else [m]:
                    self.q.put(ev)
        except grpc.RpcError as e:
            self.q.put(e)
        self.q.put(None)

    def until(self, done, limit=T):
        """Collects until done(self) is true; fails after limit seconds, or
        when the stream ends first."""
        deadline = time.monotonic() + limit
        while not done(self):
            left = deadline - time.monotonic()
            assert left > 0, f"timed out; so far: { {k: len(v) for k, v in self.by_watch.items()} }"
            try:
                item = self.q.get(timeout=left)
            except queue.Empty:
                continue
            if item is None or isinstance(item, grpc.RpcError):
                self.error = item
                assert done(self), f"the stream ended first: {item!r}"
                return
            named = [item.watch] + list(item.also)
            self.elements.append((named, item.event))
            for i in named:
                self.by_watch[i].append(item.event)

    def puts(self, i):
        return [e for e in self.by_watch[i] if e.type == PUT]

    def booted(self, n):
        return all(any(e.type == BOOTSTRAP_DONE for e in self.by_watch[i]) for i in range(n))


@pytest.fixture
def chan(reeld):
    ch = grpc.insecure_channel(reeld.addr)
    yield ch
    ch.close()


def test_each_watch_on_a_shared_stream_sees_its_own_transitions(chan):
    set_value = setter(chan)
    set_value("app", "a.x", {"n": 0})
    set_value("app", "b.y", {"n": 0})
    r = Reader(watch_values(chan, [
        W("app", "a.x", NOW),              # 0: exact key, live only
        W("app", "b.*", SNAPSHOT),         # 1: pattern with its snapshot
        W("app", "a.x", FROM_VERSION),     # 2: the key's whole history
        W("other", "a.x", NOW),            # 3: another namespace: nothing
    ]))
    r.until(lambda r: r.booted(4))
    assert [e.key for e in r.by_watch[1] if e.type == PUT] == ["b.y"]
    for n in range(1, 4):
        set_value("app", "a.x", {"n": n})
        set_value("app", "b.y", {"n": n})
    r.until(lambda r: len(r.puts(0)) == 3 and len(r.puts(1)) == 4 and len(r.puts(2)) == 4)

    # Transitions, not snapshots: every event says what the value was before.
    assert [(json.loads(e.prev_value)["n"], json.loads(e.value)["n"]) for e in r.puts(0)] == \
        [(0, 1), (1, 2), (2, 3)]
    assert [e.version for e in r.puts(2)] == [1, 2, 3, 4]
    assert [(e.prev_version, e.version) for e in r.puts(1)][1:] == [(1, 2), (2, 3), (3, 4)]
    assert all(e.key == "b.y" for e in r.puts(1))
    assert r.puts(3) == []
    # Revisions grow within each watch.
    for i in range(3):
        revs = [e.revision for e in r.puts(i)]
        assert revs == sorted(revs) and len(set(revs)) == len(revs)
    r.call.cancel()


@pytest.mark.parametrize("batched", [False, True], ids=["WatchValues", "WatchValuesBatches"])
def test_coalesced_watches_get_an_event_once_naming_them_all(chan, batched):
    set_value = setter(chan)
    r = Reader(watch_values(chan, [W("co", "hot") for _ in range(50)] + [
        W("co", "cold"),   # 50: another key
        W("co", "*"),      # 51: a pattern over both
    ], batched=batched, coalesce=True))
    r.until(lambda r: r.booted(52))
    # A watch goes live just after its BOOTSTRAP_DONE; a change made before
    # that reaches it from storage, alone. Write until one change comes as
    # one element for all 50 (every watch of "hot" is live), then five more.
    hot = lambda: [sorted(named) for named, e in r.elements  # noqa: E731
                   if e.type == PUT and e.key == "hot"]
    n = 0
    while not hot() or hot()[-2] != list(range(50)):
        assert n < 100, hot()
        n += 1
        set_value("co", "hot", {"n": n})
        r.until(lambda r: len(r.puts(0)) == n and len(r.puts(51)) == n)
    seen = len(hot())
    for n in range(n + 1, n + 6):
        set_value("co", "hot", {"n": n})
    set_value("co", "cold", {"n": 1})
    r.until(lambda r: len(r.puts(0)) == n and len(r.puts(50)) == 1 and len(r.puts(51)) == n + 1)

    # A reader that keeps up: each change to "hot" came as one element for
    # all 50 of its watches; the pattern's and the other key's came alone.
    assert hot()[seen:] == [list(range(50)), [51]] * 5, hot()[seen:]
    cold = [named for named, e in r.elements if e.type == PUT and e.key == "cold"]
    assert cold == [[50], [51]], cold
    # Each watch: every version once, in order, with the previous value.
    for i in range(50):
        assert [(json.loads(e.prev_value or "null"), json.loads(e.value)["n"])
                for e in r.puts(i)] == [(None, 1)] + [({"n": v - 1}, v) for v in range(2, n + 1)]
    assert [e.version for e in r.puts(51)] == list(range(1, n + 1)) + [1]
    assert [e.key for e in r.puts(51)] == ["hot"] * n + ["cold"]
    # Nothing for a watch in an element that does not name it.
    assert sum(len(named) for named, e in r.elements if e.type == PUT) == 50 * n + n + 2
    r.call.cancel()


@pytest.mark.parametrize("coalesce", [False, True], ids=["alone", "coalesced"])
@pytest.mark.parametrize("batched", [False, True], ids=["WatchValues", "WatchValuesBatches"])
def test_a_stream_nobody_reads_catches_up_for_every_watch(tmp_path, batched, coalesce):
    server = Reeld(str(tmp_path / "data")).start()
    ch = grpc.insecure_channel(server.addr)
    try:
        set_value = setter(ch)
        keys = [f"k{i}" for i in range(40)]
        # Coalesced: four watches on each key, not next to each other in the
        # request (0-39, then 40-79, ...): a key's watches are coalesced all
        # the same.
        per_key = 4 if coalesce else 1
        n = len(keys) * per_key
        call = watch_values(ch, [W("load", k, NOW) for _ in range(per_key) for k in keys],
                            timeout=120, batched=batched, coalesce=coalesce)
        call.initial_metadata()  # the server has answered: every watch is live
        pad = "x" * 2000
        # 40 keys x 90 versions x ~4 KiB events: far more than the stream's
        # queue holds, even coalesced, so every watch falls back to storage
        # and catches up (and fewer than the 100 versions a key keeps).
        versions = 90
        for v in range(versions):
            for k in keys:
                set_value("load", k, {"v": v, "pad": pad})
        r = Reader(call)
        r.until(lambda r: all(len(r.puts(i)) == versions for i in range(n)), limit=90)
        assert r.error is None, r.error
        for i in range(n):
            k = keys[i % len(keys)]
            puts = r.puts(i)
            assert [e.version for e in puts] == list(range(1, versions + 1)), (i, k)
            assert all(e.key == k for e in puts)
            assert [json.loads(e.value)["v"] for e in puts] == list(range(versions))
        assert sum(len(named) for named, e in r.elements if e.type == PUT) == n * versions
        # Some came from storage, one watch each: the queue did overflow.
        assert any(len(named) == 1 for named, e in r.elements if e.type == PUT)
        # Live again once caught up; coalesced, one element for the key's
        # watches.
        set_value("load", "k3", {"v": "live"})
        mine = [3 + len(keys) * j for j in range(per_key)]
        r.until(lambda r: all(len(r.puts(i)) == versions + 1 for i in mine))
        live = [sorted(named) for named, e in r.elements
                if e.type == PUT and e.version == versions + 1]
        assert live == [mine], live
        call.cancel()
    finally:
        ch.close()
        code, _ = server.stop()
    assert code == 0, server.log()


@pytest.mark.parametrize("watches,needle", [
    ([], "watches: 0 given; a stream holds 1 to 10000 watches"),
    ([W("ns", "ok")] * 10001, "watches: 10001 given; a stream holds 1 to 10000 watches"),
    ([W("ns", "ok"), W("ns", "ok"), W("ns", "")], "watches[2]: key"),
    ([W("ns", "ok"), W("", "ok")], "watches[1]: namespace"),
    ([W("ns", "a.>.b")], "watches[0]: key"),
    ([W("ns", "a.*", FROM_VERSION)], "watches[0]: start: FROM_VERSION needs an exact key"),
])
def test_bad_watches_are_refused_naming_the_watch(chan, watches, needle):
    with pytest.raises(grpc.RpcError) as e:
        for _ in watch_values(chan, watches, timeout=T):
            pass
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert needle in e.value.details(), e.value.details()


def test_a_watch_that_cannot_go_on_ends_the_stream_naming_it(tmp_path):
    server = Reeld(str(tmp_path / "data"), extra=["--kv-history-keep", "3"]).start()
    ch = grpc.insecure_channel(server.addr)
    try:
        set_value = setter(ch)
        for v in range(10):
            set_value("h", "key", {"v": v})
        # Version 2 is long trimmed (only the last 3 are kept).
        call = watch_values(ch, [W("h", "key", NOW),
                                 W("h", "key", FROM_VERSION, from_version=1)], timeout=T)
        with pytest.raises(grpc.RpcError) as e:
            for _ in call:
                pass
        assert e.value.code() == grpc.StatusCode.OUT_OF_RANGE
        assert e.value.details().startswith("watches[1]: "), e.value.details()
        assert "no longer retained" in e.value.details()
    finally:
        ch.close()
        code, _ = server.stop()
    assert code == 0, server.log()


def test_cancelling_a_shared_stream_releases_every_watch(reeld, chan):
    status = unary(chan, "/reel.v1.Admin/GetStatus", admin_pb2.GetStatusRequest,
                   admin_pb2.GetStatusResponse)
    base = status(admin_pb2.GetStatusRequest(), timeout=T).open_calls
    r = Reader(watch_values(chan, [W("c", f"k{i}") for i in range(500)]))
    r.until(lambda r: r.booted(500))
    r.call.cancel()
    deadline = time.monotonic() + T
    while status(admin_pb2.GetStatusRequest(), timeout=T).open_calls > base:
        assert time.monotonic() < deadline, "the stream's call was never released"
        time.sleep(0.05)
    # The server still serves watches on the same keys.
    set_value = setter(chan)
    r2 = Reader(watch_values(chan, [W("c", "k7")]))
    r2.until(lambda r: r.booted(1))
    set_value("c", "k7", {"ok": True})
    r2.until(lambda r: len(r.puts(0)) == 1)
    r2.call.cancel()


def test_a_change_reaches_each_of_300_streams_watching_its_key(reeld):
    """One write to a key that 300 WatchValue streams watch reaches every
    one, in order: the writer hands the calls to the pollers as one list
    that one batch at a time drains (api/rpc.c, "Handoff"), several chunks
    of it for one write."""
    chans = [grpc.insecure_channel(reeld.addr) for _ in range(3)]
    try:
        call = lambda ch: stream(ch, "/reel.v1.KV/WatchValue", kv_pb2.WatchValueRequest,
                                 kv_pb2.ValueEvent)(W("fan", "hot"), timeout=60)
        calls = [call(chans[i % 3]) for i in range(300)]
        for c in calls:  # each is live once it has said so
            assert next(c).type == BOOTSTRAP_DONE
        put = setter(chans[0])
        put("fan", "hot", 1)
        for i, c in enumerate(calls):
            ev = next(c)
            assert (ev.type, json.loads(ev.value), ev.version) == (PUT, 1, 1), i
        put("fan", "hot", 2)
        put("fan", "hot", 3)
        for i, c in enumerate(calls):
            got = [next(c) for _ in range(2)]
            assert [(json.loads(e.value), e.version) for e in got] == [(2, 2), (3, 3)], i
            c.cancel()
    finally:
        for ch in chans:
            ch.close()
