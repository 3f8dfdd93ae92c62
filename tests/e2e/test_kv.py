"""reel.v1.KV end to end: CAS, tombstones, history, listing, watches
(patterns, start modes, restarts), limits, and slow watchers, against a real
reeld through Python's grpcio.

Every test gets a fresh reeld (the `reeld` fixture), so global revisions
start at 0 and every revision in a test belongs to that test's writes.
"""
import json
import queue
import random
import re
import signal
import threading
import time

import grpc
import pytest

from reel.v1 import kv_pb2
from reel.v1 import admin_pb2
from conftest import Reeld, sanitized, stream, unary

NONE = kv_pb2.PRECONDITION_NONE
ABSENT = kv_pb2.PRECONDITION_ABSENT
VERSION = kv_pb2.PRECONDITION_VERSION

PUT = kv_pb2.ValueEvent.PUT
DELETE = kv_pb2.ValueEvent.DELETE
BOOTSTRAP_DONE = kv_pb2.ValueEvent.BOOTSTRAP_DONE

SNAPSHOT = kv_pb2.WatchValueRequest.SNAPSHOT
NOW = kv_pb2.WatchValueRequest.NOW
FROM_VERSION = kv_pb2.WatchValueRequest.FROM_VERSION
FROM_REVISION = kv_pb2.WatchValueRequest.FROM_REVISION

TYPE_NAME = {PUT: "PUT", DELETE: "DELETE", BOOTSTRAP_DONE: "BOOTSTRAP_DONE"}

T = 10  # seconds: the bound on any single unary call or single wait


# --------------------------------------------------------------------------
# helpers


class KV:
    """Thin wrappers over reel.v1.KV and Admin/GetStatus on one channel."""

    def __init__(self, channel):
        self.channel = channel
        self._set = unary(channel, "/reel.v1.KV/SetValue",
                          kv_pb2.SetValueRequest, kv_pb2.SetValueResponse)
        self._get = unary(channel, "/reel.v1.KV/GetValue",
                          kv_pb2.GetValueRequest, kv_pb2.GetValueResponse)
        self._delete = unary(channel, "/reel.v1.KV/DeleteValue",
                             kv_pb2.DeleteValueRequest, kv_pb2.DeleteValueResponse)
        self._list = unary(channel, "/reel.v1.KV/ListValues",
                           kv_pb2.ListValuesRequest, kv_pb2.ListValuesResponse)
        self._history = unary(channel, "/reel.v1.KV/ValueHistory",
                              kv_pb2.ValueHistoryRequest, kv_pb2.ValueHistoryResponse)
        self._watch = stream(channel, "/reel.v1.KV/WatchValue",
                             kv_pb2.WatchValueRequest, kv_pb2.ValueEvent)
        self._status = unary(channel, "/reel.v1.Admin/GetStatus",
                             admin_pb2.GetStatusRequest, admin_pb2.GetStatusResponse)

    def set(self, ns, key, value, **kw):
        return self._set(kv_pb2.SetValueRequest(namespace=ns, key=key, value=value, **kw),
                         timeout=T)

    def get(self, ns, key):
        return self._get(kv_pb2.GetValueRequest(namespace=ns, key=key), timeout=T)

    def delete(self, ns, key, **kw):
        return self._delete(kv_pb2.DeleteValueRequest(namespace=ns, key=key, **kw),
                            timeout=T)

    def list(self, ns, **kw):
        return self._list(kv_pb2.ListValuesRequest(namespace=ns, **kw), timeout=T)

    def history(self, ns, key, **kw):
        return self._history(kv_pb2.ValueHistoryRequest(namespace=ns, key=key, **kw),
                             timeout=T)

    def revision(self):
        return self._status(admin_pb2.GetStatusRequest(), timeout=T).revision

    def watch(self, ns, key, start=SNAPSHOT, reading=True, deadline=60, **kw):
        return Watch(self._watch, kv_pb2.WatchValueRequest(
            namespace=ns, key=key, start=start, **kw), reading, deadline)


_END = object()


class Watch:
    """A WatchValue stream read by a helper thread into a queue, so every
    wait in the test is bounded. With reading=False nothing is read from the
    stream until start_reading()."""

    def __init__(self, rpc, req, reading=True, deadline=60):
        self.call = rpc(req, timeout=deadline)
        self.q = queue.Queue()
        self.error = None
        self.ended = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        if reading:
            self.thread.start()

    def start_reading(self):
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

    def next(self, timeout=T):
        """The next event; raises the stream's RpcError if it ended with one,
        AssertionError if it ended cleanly or nothing came within timeout."""
        if self.error is not None:
            raise self.error
        if self.ended:
            raise AssertionError("watch stream already ended")
        try:
            item = self.q.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no watch event within {timeout}s") from None
        if item is _END:
            self.ended = True
            raise AssertionError("watch stream ended without an error")
        if isinstance(item, BaseException):
            self.error = item
            raise item
        return item

    def take(self, n, timeout=T):
        return [self.next(timeout) for _ in range(n)]

    def until_bootstrap(self, timeout=T, max_events=100000):
        """Events before BOOTSTRAP_DONE, and the BOOTSTRAP_DONE event."""
        evs = []
        for _ in range(max_events):
            ev = self.next(timeout)
            if ev.type == BOOTSTRAP_DONE:
                return evs, ev
            evs.append(ev)
        raise AssertionError(f"no BOOTSTRAP_DONE within {max_events} events")

    def until(self, pred, timeout=T, max_events=100000):
        """Events up to and including the first one for which pred is true."""
        evs = []
        for _ in range(max_events):
            ev = self.next(timeout)
            evs.append(ev)
            if pred(ev):
                return evs
        raise AssertionError(f"condition not met within {max_events} events")

    def expect_quiet(self, secs=0.3):
        try:
            item = self.q.get(timeout=secs)
        except queue.Empty:
            return
        raise AssertionError(f"unexpected watch item: {fmt(item)}")

    def expect_error(self, timeout=T):
        """The stream's error (skipping nothing: the next item must be it)."""
        with pytest.raises(grpc.RpcError) as e:
            ev = self.next(timeout)
            raise AssertionError(f"expected the stream to fail, got {fmt(ev)}")
        return e.value

    def cancel(self):
        self.call.cancel()
        if self.thread.is_alive() or self.thread.ident is not None:
            self.thread.join(timeout=T)


def fmt(ev):
    if isinstance(ev, kv_pb2.ValueEvent):
        return (f"{TYPE_NAME.get(ev.type, ev.type)} {ev.key!r} v{ev.version} "
                f"rev{ev.revision} value={ev.value[:40]!r} prev_v{ev.prev_version} "
                f"prev={ev.prev_value[:40]!r} deleted={ev.deleted}")
    if isinstance(ev, grpc.RpcError):
        return f"RpcError {ev.code()} {ev.details()!r}"
    return repr(ev)


def rpc_error(fn, *args, **kw):
    """The RpcError fn(*args, **kw) fails with; AssertionError if it succeeds."""
    try:
        r = fn(*args, **kw)
    except grpc.RpcError as e:
        return e
    shown = [a[:60] + "..." if isinstance(a, str) and len(a) > 60 else a for a in args]
    raise AssertionError(f"expected an error for {shown} {kw}, but it succeeded: "
                         f"{str(r)[:300]!r}")


def has_number(text, n):
    return re.search(rf"(?<![0-9]){n}(?![0-9])", text or "") is not None


def j(obj):
    return json.dumps(obj, separators=(",", ":"), sort_keys=True)


def watch_call_for(channel):
    return stream(channel, "/reel.v1.KV/WatchValue",
                  kv_pb2.WatchValueRequest, kv_pb2.ValueEvent)


@pytest.fixture
def kv(channel):
    return KV(channel)


def assert_nothing_written(kv, ns, key, rev_before):
    r = kv.get(ns, key)
    assert not r.found
    assert not r.entry.deleted and r.entry.version == 0, r
    assert kv.revision() == rev_before


# --------------------------------------------------------------------------
# basics: set, get, entries, versions, revisions


def test_set_then_get_returns_the_entry_with_all_fields(kv):
    t0 = int(time.time() * 1000)
    r = kv.set("app", "cfg.db/main", j({"host": "db1", "port": 5432}), writer="alice")
    t1 = int(time.time() * 1000)
    assert r.prev_version == 0
    e = r.entry
    assert (e.namespace, e.key, e.value) == ("app", "cfg.db/main", j({"host": "db1", "port": 5432}))
    assert e.version == 1 and not e.deleted and e.writer == "alice"
    assert e.revision == 1, "first change on a fresh server must be revision 1"
    assert t0 - 2000 <= e.updated_at_ms <= t1 + 2000
    g = kv.get("app", "cfg.db/main")
    assert g.found
    assert g.entry == e
    assert kv.revision() == 1


def test_missing_key_is_not_found(kv):
    g = kv.get("app", "nope")
    assert not g.found
    assert not g.entry.deleted and g.entry.version == 0


def test_versions_start_at_one_and_grow_by_one_per_set(kv):
    for i in range(1, 11):
        r = kv.set("app", "k", j(i))
        assert r.entry.version == i
        assert r.prev_version == i - 1
    g = kv.get("app", "k")
    assert g.entry.version == 10 and g.entry.value == "10"


def test_namespaces_are_separate(kv):
    kv.set("ns1", "k", j("one"))
    kv.set("ns2", "k", j("two"))
    kv.set("ns2", "k", j("two again"))
    a, b = kv.get("ns1", "k"), kv.get("ns2", "k")
    assert (a.entry.value, a.entry.version) == ('"one"', 1)
    assert (b.entry.value, b.entry.version) == ('"two again"', 2)
    assert not kv.get("ns3", "k").found
    assert [e.key for e in kv.list("ns1").entries] == ["k"]


def test_namespaces_that_prefix_each_other_stay_separate(kv):
    w = kv.watch("a", ">", start=NOW)
    w.until_bootstrap()
    pairs = [("a", "bc"), ("ab", "c"), ("a:b", "c"), ("a/b", "c"), ("a", "b.c"), ("ab", "bc")]
    for ns, key in pairs:
        kv.set(ns, key, j([ns, key]))
        kv.set(ns, key, j([ns, key, 2]))
    for ns in ("a", "ab", "a:b", "a/b"):
        mine = sorted(k for n, k in pairs if n == ns)
        assert [e.key for e in kv.list(ns).entries] == mine, ns
        for k in mine:
            g = kv.get(ns, k)
            assert g.entry.value == j([ns, k, 2]) and g.entry.version == 2
            assert [e.value for e in kv.history(ns, k).events] == [j([ns, k]), j([ns, k, 2])]
    evs = w.take(4)
    assert [(e.namespace, e.key) for e in evs] == [("a", "bc")] * 2 + [("a", "b.c")] * 2
    w.expect_quiet(0.3)
    w.cancel()
    w = kv.watch("a", ">", start=FROM_REVISION, from_revision=0)
    evs, _ = w.until_bootstrap()
    assert [(e.namespace, e.key) for e in evs] == [("a", "bc")] * 2 + [("a", "b.c")] * 2
    w.cancel()


def test_utf8_keys_with_slashes_and_dots_round_trip(kv):
    keys = ["ключ.ü/ä", "a/b/c", "a.b.c", "日本.語", "emoji.😀"]
    for k in keys:
        kv.set("uni:code/ns", k, j(k))
    for k in keys:
        g = kv.get("uni:code/ns", k)
        assert g.found and g.entry.key == k and g.entry.value == j(k)
        assert g.entry.namespace == "uni:code/ns"


def test_revisions_are_global_and_strictly_increasing_across_keys(kv):
    revs = []
    for i in range(30):
        revs.append(kv.set("app", f"k{i % 7}", j(i)).entry.revision)
    assert revs == list(range(1, 31)), "revisions must be gapless from 1"
    assert kv.revision() == 30
    # The entry's revision is the revision of the change that wrote it.
    assert kv.get("app", "k6").entry.revision == revs[27]


def test_revisions_from_concurrent_writers_are_unique_and_gapless(kv):
    revs, errors = [], []
    lock = threading.Lock()

    def writer(t):
        try:
            mine = [kv.set("app", f"t{t}.k{i % 5}", j(i)).entry.revision for i in range(40)]
            with lock:
                revs.extend(mine)
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors
    assert sorted(revs) == list(range(1, 8 * 40 + 1))
    assert kv.revision() == 320


# --------------------------------------------------------------------------
# compare-and-swap


def test_create_only_twice_second_is_already_exists(kv):
    r = kv.set("app", "lock", j({"owner": "a"}), precondition=ABSENT)
    assert r.entry.version == 1 and r.prev_version == 0
    rev = kv.revision()
    e = rpc_error(kv.set, "app", "lock", j({"owner": "b"}), precondition=ABSENT)
    assert e.code() == grpc.StatusCode.ALREADY_EXISTS, e.details()
    assert "lock" in e.details() and has_number(e.details(), 1), e.details()
    g = kv.get("app", "lock")
    assert g.entry.value == j({"owner": "a"}) and g.entry.version == 1
    assert kv.revision() == rev, "a failed precondition must not take a revision"


def test_stale_version_is_aborted_naming_the_current_version(kv):
    for i in range(5):
        kv.set("app", "k", j(i))
    rev = kv.revision()
    e = rpc_error(kv.set, "app", "k", j("stale"), precondition=VERSION, expected_version=3)
    assert e.code() == grpc.StatusCode.ABORTED, e.details()
    assert has_number(e.details(), 5), f"message must name current version 5: {e.details()!r}"
    assert has_number(e.details(), 3), f"message should name expected version 3: {e.details()!r}"
    assert kv.get("app", "k").entry.value == j(4)
    assert kv.revision() == rev
    # The right version applies.
    r = kv.set("app", "k", j("fresh"), precondition=VERSION, expected_version=5)
    assert r.entry.version == 6 and r.prev_version == 5


def test_expected_version_is_ignored_without_the_version_precondition(kv):
    kv.set("app", "k", j(1))
    r = kv.set("app", "k", j(2), precondition=NONE, expected_version=99)
    assert r.entry.version == 2
    d = kv.delete("app", "k", expected_version=99)
    assert d.existed and d.entry.version == 3


def test_unknown_precondition_or_start_is_invalid_argument(kv):
    e = rpc_error(kv.set, "app", "k", j(1), precondition=7)
    assert e.code() == grpc.StatusCode.INVALID_ARGUMENT, e.details()
    e = rpc_error(kv.delete, "app", "k", precondition=7)
    assert e.code() == grpc.StatusCode.INVALID_ARGUMENT, e.details()
    assert kv.revision() == 0
    w = kv.watch("app", "k", start=9)
    assert w.expect_error().code() == grpc.StatusCode.INVALID_ARGUMENT


def test_expected_version_zero_means_missing(kv):
    r = kv.set("app", "new", j(1), precondition=VERSION, expected_version=0)
    assert r.entry.version == 1
    e = rpc_error(kv.set, "app", "new", j(2), precondition=VERSION, expected_version=0)
    assert e.code() == grpc.StatusCode.ABORTED
    assert has_number(e.details(), 1), e.details()
    # A version on a missing key is a conflict with current version 0.
    e = rpc_error(kv.set, "app", "other", j(2), precondition=VERSION, expected_version=4)
    assert e.code() == grpc.StatusCode.ABORTED
    assert has_number(e.details(), 0) and has_number(e.details(), 4), e.details()
    assert not kv.get("app", "other").found


def test_sixteen_clients_incrementing_one_counter_by_cas_reach_1600(kv):
    kv.set("app", "counter", j({"n": 0}))
    won = []          # versions each successful CAS wrote
    errors = []
    lock = threading.Lock()

    def client(seed):
        rnd = random.Random(seed)
        try:
            mine = []
            for _ in range(100):
                for attempt in range(10000):
                    g = kv.get("app", "counter")
                    n = json.loads(g.entry.value)["n"]
                    try:
                        r = kv.set("app", "counter", j({"n": n + 1}), precondition=VERSION,
                                   expected_version=g.entry.version, writer=f"c{seed}")
                    except grpc.RpcError as e:
                        if e.code() != grpc.StatusCode.ABORTED:
                            raise
                        time.sleep(rnd.random() * 0.002)
                        continue
                    assert r.entry.version == g.entry.version + 1
                    assert r.prev_version == g.entry.version
                    mine.append(r.entry.version)
                    break
                else:
                    raise AssertionError("CAS never succeeded")
            with lock:
                won.extend(mine)
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "clients did not finish"
    assert not errors, errors[:3]
    g = kv.get("app", "counter")
    assert json.loads(g.entry.value) == {"n": 1600}
    assert g.entry.version == 1601
    assert sorted(won) == list(range(2, 1602)), "every successful CAS wrote a distinct version"
    # Thousands of failed CAS attempts in the same commit groups took no revision.
    assert kv.revision() == 1601


# --------------------------------------------------------------------------
# tombstones


def test_delete_writes_a_tombstone_and_get_reports_it(kv):
    kv.set("app", "k", j("a"))
    kv.set("app", "k", j("b"))
    d = kv.delete("app", "k", writer="bob")
    assert d.existed
    t = d.entry
    assert t.deleted and t.version == 3 and t.value == "" and t.key == "k"
    assert t.namespace == "app" and t.writer == "bob" and t.revision == 3
    g = kv.get("app", "k")
    assert not g.found
    assert g.entry.deleted and g.entry.version == 3
    assert kv.revision() == 3


def test_deleting_missing_or_deleted_key_writes_nothing(kv):
    d = kv.delete("app", "never")
    assert not d.existed
    assert kv.revision() == 0
    assert not kv.get("app", "never").entry.deleted
    kv.set("app", "k", j(1))
    assert kv.delete("app", "k").existed
    rev = kv.revision()
    w = kv.watch("app", "k", start=NOW)
    w.until_bootstrap()
    d = kv.delete("app", "k")
    assert not d.existed
    assert kv.revision() == rev
    assert kv.get("app", "k").entry.version == 2
    w.expect_quiet(0.5)
    w.cancel()


def test_set_after_delete_continues_the_version(kv):
    kv.set("app", "k", j(1))
    kv.set("app", "k", j(2))
    kv.delete("app", "k")                      # v3 tombstone
    r = kv.set("app", "k", j(4))
    assert r.entry.version == 4 and not r.entry.deleted
    assert r.prev_version == 3
    g = kv.get("app", "k")
    assert g.found and g.entry.version == 4 and g.entry.value == "4"


def test_create_only_succeeds_on_a_tombstoned_key(kv):
    kv.set("app", "k", j(1))
    kv.delete("app", "k")
    r = kv.set("app", "k", j(2), precondition=ABSENT)
    assert r.entry.version == 3


def test_version_precondition_on_a_tombstone_uses_the_tombstone_version(kv):
    kv.set("app", "k", j(1))
    kv.set("app", "k", j(2))
    kv.delete("app", "k")                      # v3
    e = rpc_error(kv.set, "app", "k", j(9), precondition=VERSION, expected_version=0)
    assert e.code() == grpc.StatusCode.ABORTED
    assert has_number(e.details(), 3), e.details()
    r = kv.set("app", "k", j(4), precondition=VERSION, expected_version=3)
    assert r.entry.version == 4 and r.prev_version == 3


def test_delete_with_absent_precondition_is_invalid(kv):
    kv.set("app", "k", j(1))
    e = rpc_error(kv.delete, "app", "k", precondition=ABSENT)
    assert e.code() == grpc.StatusCode.INVALID_ARGUMENT, e.details()
    assert kv.get("app", "k").found


def test_delete_with_stale_version_is_aborted(kv):
    for i in range(4):
        kv.set("app", "k", j(i))
    e = rpc_error(kv.delete, "app", "k", precondition=VERSION, expected_version=2)
    assert e.code() == grpc.StatusCode.ABORTED
    assert has_number(e.details(), 4), e.details()
    assert kv.get("app", "k").found
    d = kv.delete("app", "k", precondition=VERSION, expected_version=4)
    assert d.existed and d.entry.version == 5


def test_watcher_sees_exactly_one_delete_with_the_previous_value(kv):
    kv.set("app", "k", j({"v": "old"}))
    w = kv.watch("app", "k", start=NOW)
    _, boot = w.until_bootstrap()
    kv.delete("app", "k", writer="del")
    kv.delete("app", "k")                      # no-op: no event
    kv.delete("app", "k")
    kv.set("app", "k", j({"v": "new"}))
    evs = w.take(2)
    d, p = evs
    assert d.type == DELETE, fmt(d)
    assert d.deleted and d.value == "" and d.version == 2
    assert d.prev_value == j({"v": "old"}) and d.prev_version == 1
    assert d.key == "k" and d.namespace == "app" and d.writer == "del"
    assert d.revision == 2
    assert p.type == PUT and not p.deleted and p.version == 3
    assert p.prev_version == 2 and p.prev_value == ""
    assert p.revision == 3
    w.expect_quiet(0.3)
    w.cancel()


# --------------------------------------------------------------------------
# listing and history


def test_list_values_in_key_order_with_prefix_and_pagination(kv):
    keys = ["a", "a.b", "a/b", "ab", "b", "b.1", "b.2", "c", "é", "z.z"]
    for k in random.Random(1).sample(keys, len(keys)):
        kv.set("ls", k, j(k))
    kv.set("other", "a.x", j(0))
    expected = sorted(keys, key=lambda s: s.encode())
    r = kv.list("ls")
    assert [e.key for e in r.entries] == expected
    assert not r.more
    assert all(e.value == j(e.key) and e.version == 1 and e.namespace == "ls"
               for e in r.entries)
    # Pages of 3.
    got, after, pages = [], "", 0
    while True:
        r = kv.list("ls", start_after=after, limit=3)
        pages += 1
        assert len(r.entries) <= 3
        got += [e.key for e in r.entries]
        if not r.more:
            break
        assert r.next_start_after == r.entries[-1].key
        after = r.next_start_after
        assert pages < 20
    assert got == expected
    assert pages == 4
    # start_after is exclusive and need not be an existing key.
    assert [e.key for e in kv.list("ls", start_after="b").entries] == expected[5:]
    assert [e.key for e in kv.list("ls", start_after="b.15").entries] == ["b.2", "c", "z.z", "é"]
    # Prefix.
    assert [e.key for e in kv.list("ls", prefix="a").entries] == ["a", "a.b", "a/b", "ab"]
    assert [e.key for e in kv.list("ls", prefix="b.").entries] == ["b.1", "b.2"]
    assert [e.key for e in kv.list("ls", prefix="a", start_after="a.b").entries] == ["a/b", "ab"]
    assert list(kv.list("ls", prefix="q").entries) == []
    kv.set("ls", "éa", j(1))
    kv.set("ls", "ê", j(1))
    assert [e.key for e in kv.list("ls", prefix="é").entries] == ["é", "éa"]
    kv.delete("ls", "éa")
    kv.delete("ls", "ê")
    r = kv.list("ls", prefix="b", limit=2)
    assert [e.key for e in r.entries] == ["b", "b.1"] and r.more
    r = kv.list("ls", prefix="b", limit=2, start_after=r.next_start_after)
    assert [e.key for e in r.entries] == ["b.2"] and not r.more


def test_list_values_limit_defaults_to_100(kv):
    for i in range(150):
        kv.set("ls", f"k{i:03d}", j(i))
    r = kv.list("ls")
    assert [e.key for e in r.entries] == [f"k{i:03d}" for i in range(100)]
    assert r.more and r.next_start_after == "k099"
    r = kv.list("ls", start_after=r.next_start_after)
    assert [e.key for e in r.entries] == [f"k{i:03d}" for i in range(100, 150)] and not r.more
    assert len(kv.list("ls", limit=1000).entries) == 150


def test_list_values_shows_tombstones_only_when_asked(kv):
    for i in range(10):
        kv.set("ls", f"k{i}", j(i))
    for i in (0, 3, 4, 9):
        kv.delete("ls", f"k{i}")
    live = [f"k{i}" for i in (1, 2, 5, 6, 7, 8)]
    assert [e.key for e in kv.list("ls").entries] == live
    r = kv.list("ls", include_deleted=True)
    assert [e.key for e in r.entries] == [f"k{i}" for i in range(10)]
    for e in r.entries:
        if e.key in live:
            assert not e.deleted and e.version == 1
        else:
            assert e.deleted and e.version == 2 and e.value == ""
    # Paginating around tombstones neither loses nor repeats live keys.
    got, after = [], ""
    for _ in range(20):
        r = kv.list("ls", start_after=after, limit=2)
        assert len(r.entries) <= 2 and not any(e.deleted for e in r.entries)
        got += [e.key for e in r.entries]
        if not r.more:
            break
        after = r.next_start_after
    else:
        raise AssertionError("pagination did not end")
    assert got == live


def test_value_history_returns_versions_in_order_with_prev(kv):
    vals = [j({"i": i}) for i in range(5)]
    revs = [kv.set("app", "h", v, writer="w").entry.revision for v in vals]   # v1..v5
    kv.set("app", "noise", j(0))
    revs.append(kv.delete("app", "h").entry.revision)                            # v6
    revs.append(kv.set("app", "h", j("back")).entry.revision)                    # v7
    r = kv.history("app", "h")
    evs = r.events
    assert [e.version for e in evs] == list(range(1, 8))
    assert [e.type for e in evs] == [PUT] * 5 + [DELETE, PUT]
    assert [e.revision for e in evs] == revs
    assert not r.more
    for i in range(5):
        assert evs[i].value == vals[i] and evs[i].prev_version == i
        assert evs[i].prev_value == (vals[i - 1] if i else "")
        assert evs[i].key == "h" and evs[i].namespace == "app" and evs[i].writer == "w"
    assert evs[5].deleted and evs[5].value == "" and evs[5].prev_value == vals[4]
    assert evs[5].prev_version == 5
    assert evs[6].value == j("back") and evs[6].prev_version == 6 and not evs[6].deleted
    # After a version, and paged.
    assert [e.version for e in kv.history("app", "h", from_version=4).events] == [5, 6, 7]
    r = kv.history("app", "h", limit=3)
    assert [e.version for e in r.events] == [1, 2, 3] and r.more
    assert r.next_from_version == 3
    r = kv.history("app", "h", from_version=r.next_from_version, limit=3)
    assert [e.version for e in r.events] == [4, 5, 6] and r.more
    r = kv.history("app", "h", from_version=r.next_from_version, limit=3)
    assert [e.version for e in r.events] == [7] and not r.more
    assert list(kv.history("app", "h", from_version=7).events) == []


def test_value_history_keeps_the_last_100_versions_by_default(kv):
    for i in range(1, 106):
        kv.set("app", "h", j(i))
    got, frm = [], 0
    for _ in range(10):
        r = kv.history("app", "h", from_version=frm, limit=1000)
        got += list(r.events)
        if not r.more:
            break
        frm = r.next_from_version
    assert [e.version for e in got] == list(range(6, 106))
    assert got[0].value == j(6)


def test_history_keep_three_trims_history_and_old_revisions(tmp_path):
    server = Reeld(str(tmp_path / "data"), extra=["--kv-history-keep", "3"]).start()
    ch = grpc.insecure_channel(server.addr)
    try:
        kv = KV(ch)
        revs = [kv.set("app", "h", j(i)).entry.revision for i in range(1, 11)]
        assert revs == list(range(1, 11))
        r = kv.history("app", "h")
        assert [e.version for e in r.events] == [8, 9, 10]
        assert [e.value for e in r.events] == [j(8), j(9), j(10)]
        assert r.events[0].prev_version == 7 and r.events[0].prev_value == j(7)
        assert not r.more
        # FROM_VERSION 0 means from the oldest retained.
        w = kv.watch("app", "h", start=FROM_VERSION, from_version=0)
        evs, boot = w.until_bootstrap()
        assert [e.version for e in evs] == [8, 9, 10]
        w.cancel()
        # FROM_REVISION 0 too (as the WAL's 0; README's `--from-revision 0`).
        w = kv.watch("app", "h", start=FROM_REVISION, from_revision=0)
        evs, boot = w.until_bootstrap()
        assert [e.version for e in evs] == [8, 9, 10]
        w.cancel()
        # Revision 1 is long gone: OUT_OF_RANGE naming the oldest retained (8)
        # and the cursor that starts there.
        w = kv.watch("app", "h", start=FROM_REVISION, from_revision=1)
        e = w.expect_error()
        assert e.code() == grpc.StatusCode.OUT_OF_RANGE, fmt(e)
        assert "oldest retained revision is 8 (from_revision 7, or 0, starts there)" \
            in e.details(), fmt(e)
        w = kv.watch("app", "h", start=FROM_REVISION, from_revision=7)
        evs, boot = w.until_bootstrap()
        assert [e.version for e in evs] == [8, 9, 10]
        w.cancel()
        w = kv.watch("app", "h", start=FROM_REVISION, from_revision=6)
        e = w.expect_error()
        assert e.code() == grpc.StatusCode.OUT_OF_RANGE, fmt(e)
        # History from a version whose successors were trimmed (3-7) is
        # refused as the watch from it is, not answered with 8-10.
        for frm in (2, 6):
            with pytest.raises(grpc.RpcError) as err:
                kv.history("app", "h", from_version=frm)
            assert err.value.code() == grpc.StatusCode.OUT_OF_RANGE, fmt(err.value)
            assert f"version {frm + 1} is no longer retained; the oldest retained version " \
                "is 8" in err.value.details()
        assert [e.version for e in kv.history("app", "h", from_version=7).events] == [8, 9, 10]
        # From 7 on, everything after is retained.
        w = kv.watch("app", "h", start=FROM_REVISION, from_revision=7)
        evs, boot = w.until_bootstrap()
        assert [(e.version, e.revision) for e in evs] == [(8, 8), (9, 9), (10, 10)]
        kv.set("app", "h", j(11))
        assert w.next().version == 11
        w.cancel()
    finally:
        ch.close()
        code, _ = server.stop()
        assert code == 0, server.log()


def test_a_deleted_keys_history_is_purged_once_old_enough(tmp_path):
    """A delete keeps the key's history (its values, under a key nobody can
    read) for --kv-deleted-history-age, then reel purges it: across a
    restart, since the delete is indexed with its time. The tombstone
    stays, so the version goes on counting, and what went is OUT_OF_RANGE
    for a history read or a watch that needs it, never skipped."""
    data = str(tmp_path / "data")
    a = Reeld(data).start()                  # the default: 7 days
    ch = grpc.insecure_channel(a.addr)
    try:
        kv = KV(ch)
        for i in range(1, 4):
            kv.set("app", "gone", j(i))
        kv.delete("app", "gone")
        kv.set("app", "kept", j(1))
        kv.delete("app", "kept")
        kv.set("app", "kept", j(3))          # set again: not a tombstone
        assert [e.version for e in kv.history("app", "gone").events] == [1, 2, 3, 4]
    finally:
        ch.close()
        assert a.stop()[0] == 0, a.log()
    b = Reeld(data, extra=["--kv-deleted-history-age", "1s"]).start()
    ch = grpc.insecure_channel(b.addr)
    try:
        kv = KV(ch)
        deadline = time.monotonic() + T
        while kv.history("app", "gone").events and time.monotonic() < deadline:
            time.sleep(0.1)
        assert list(kv.history("app", "gone").events) == []
        g = kv.get("app", "gone")
        assert not g.found and g.entry.deleted and g.entry.version == 4
        with pytest.raises(grpc.RpcError) as err:
            kv.history("app", "gone", from_version=1)
        assert err.value.code() == grpc.StatusCode.OUT_OF_RANGE, fmt(err.value)
        assert "version 2 is no longer retained; none of the key's history is (it " \
            "was deleted, and its history purged once old enough)" in err.value.details()
        w = kv.watch("app", "gone", start=FROM_REVISION, from_revision=1)
        assert w.expect_error().code() == grpc.StatusCode.OUT_OF_RANGE
        assert [e.version for e in kv.history("app", "kept").events] == [1, 2, 3]
        assert kv.set("app", "gone", j(5)).entry.version == 5
        assert [e.version for e in kv.history("app", "gone").events] == [5]
    finally:
        ch.close()
        assert b.stop()[0] == 0, b.log()


def test_history_keep_zero_keeps_everything(tmp_path):
    server = Reeld(str(tmp_path / "data"), extra=["--kv-history-keep", "0"]).start()
    ch = grpc.insecure_channel(server.addr)
    try:
        kv = KV(ch)
        for i in range(1, 151):
            kv.set("app", "h", j(i))
        got, frm = [], 0
        for _ in range(10):
            r = kv.history("app", "h", from_version=frm, limit=1000)
            got += [e.version for e in r.events]
            if not r.more:
                break
            frm = r.next_from_version
        assert got == list(range(1, 151))
        w = kv.watch("app", "h", start=FROM_REVISION, from_revision=0)
        evs, _ = w.until_bootstrap()
        assert [e.version for e in evs] == list(range(1, 151))
        w.cancel()
    finally:
        ch.close()
        code, _ = server.stop()
        assert code == 0, server.log()


# --------------------------------------------------------------------------
# watches: events, patterns, start modes


def check_transitions(events, view, *, after_revision=None, contiguous=False):
    """Check live events as transitions from `view` (key -> (value, version,
    deleted)), updating view. Revisions strictly increase (and with
    contiguous, by exactly one from after_revision)."""
    last = after_revision
    for ev in events:
        assert ev.type in (PUT, DELETE), fmt(ev)
        if last is not None:
            assert ev.revision > last, f"revision went back or repeated: {fmt(ev)} after {last}"
            if contiguous:
                assert ev.revision == last + 1, f"gap: {fmt(ev)} after revision {last}"
        last = ev.revision
        before = view.get(ev.key)
        if before is not None:
            assert ev.prev_version == before[1], f"{fmt(ev)} but I last saw v{before[1]}"
            assert ev.prev_value == before[0], f"{fmt(ev)} but I last saw {before[0][:40]!r}"
        assert ev.version == ev.prev_version + 1, fmt(ev)
        if ev.type == DELETE:
            assert ev.deleted and ev.value == "", fmt(ev)
            assert ev.prev_value != "", f"DELETE of a live value must carry it: {fmt(ev)}"
        else:
            assert not ev.deleted, fmt(ev)
        view[ev.key] = (ev.value, ev.version, ev.deleted)
    return last


def test_watch_sees_every_version_in_order_with_prev(kv):
    w = kv.watch("app", "k", start=NOW)
    _, boot = w.until_bootstrap()
    assert boot.revision == 0
    expected = []
    prev_v, prev_val = 0, ""
    for i in range(40):
        if i % 9 == 8:
            r = kv.delete("app", "k", writer="w")
            expected.append((DELETE, "", r.entry.version, prev_val, prev_v, r.entry.revision))
            prev_val = ""
        else:
            val = j({"i": i})
            r = kv.set("app", "k", val, writer="w")
            expected.append((PUT, val, r.entry.version, prev_val, prev_v, r.entry.revision))
            prev_val = val
        prev_v = r.entry.version
        kv.set("app", "other", j(i))            # not watched
    evs = w.take(len(expected))
    got = [(e.type, e.value, e.version, e.prev_value, e.prev_version, e.revision) for e in evs]
    assert got == expected
    assert all(e.key == "k" and e.namespace == "app" and e.writer == "w" for e in evs)
    now_ms = int(time.time() * 1000)
    assert all(now_ms - 60000 < e.ts_ms <= now_ms + 2000 for e in evs)
    w.expect_quiet(0.3)
    w.cancel()


def test_watch_now_starts_with_bootstrap_done_at_the_current_revision(kv):
    for i in range(5):
        kv.set("app", "k", j(i))
    w = kv.watch("app", "k", start=NOW)
    boot = w.next()
    assert boot.type == BOOTSTRAP_DONE and boot.revision == 5, fmt(boot)
    kv.set("app", "k", j(5))
    ev = w.next()
    assert ev.type == PUT and ev.version == 6 and ev.prev_value == j(4) and ev.revision == 6
    w.cancel()


def test_watch_snapshot_of_an_exact_key(kv):
    kv.set("app", "k", j(1))
    kv.set("app", "k", j(2))
    kv.set("app", "gone", j(1))
    kv.delete("app", "gone")
    w = kv.watch("app", "k")                    # SNAPSHOT is the default
    evs, boot = w.until_bootstrap()
    assert [(e.type, e.key, e.value, e.version, e.revision) for e in evs] == \
        [(PUT, "k", j(2), 2, 2)]
    assert boot.revision == 4
    w.cancel()
    # A tombstoned or missing key has no snapshot event.
    for key in ("gone", "missing"):
        w = kv.watch("app", key)
        evs, boot = w.until_bootstrap()
        assert evs == [] and boot.revision == kv.revision()
        kv.set("app", key, j("x"))
        ev = w.next()
        assert ev.type == PUT and ev.key == key
        w.cancel()


PATTERN_KEYS = [
    "orders", "orders.1", "orders.1.x", "orders.2", "orders/1", "orders/1.x",
    "ordersx.1", "xorders.1",
    "a.b.c", "a.b.x.c", "a.c", "a.bb.c", "a.b.d", "b.b.c", "a.b.c.d",
    "pipeline.p1.raw", "pipeline.p2.raw", "pipeline.p1.clean", "pipeline.raw",
    "pipeline.p1.x.raw",
    "single", "x/y", "a.b",
]

PATTERNS = {
    "orders.>": {"orders.1", "orders.1.x", "orders.2"},
    "a.*.c": {"a.b.c", "a.bb.c"},
    "pipeline.*.raw": {"pipeline.p1.raw", "pipeline.p2.raw"},
    "*.b.c": {"a.b.c", "b.b.c"},
    "a.*.*": {"a.b.c", "a.b.d", "a.bb.c"},
    "a.b.>": {"a.b.c", "a.b.x.c", "a.b.d", "a.b.c.d"},
    "*": {"orders", "orders/1", "single", "x/y"},
    ">": set(PATTERN_KEYS),
    "orders": {"orders"},
    "orders/1": {"orders/1"},
}


def test_wildcard_watch_snapshot_matches_exactly_the_right_keys(kv):
    for k in PATTERN_KEYS:
        kv.set("pat", k, j(k))
    kv.set("elsewhere", "orders.1", j(0))       # another namespace
    for pattern, want in PATTERNS.items():
        w = kv.watch("pat", pattern)
        evs, boot = w.until_bootstrap()
        w.cancel()
        got = [e.key for e in evs]
        assert sorted(got) == sorted(want), f"{pattern!r}: got {sorted(got)}"
        assert all(e.type == PUT and e.value == j(e.key) and e.namespace == "pat" for e in evs)


def test_wildcard_watch_live_matches_exactly_the_right_keys(kv):
    watches = {p: kv.watch("pat", p, start=NOW) for p in PATTERNS}
    for w in watches.values():
        w.until_bootstrap()
    for k in PATTERN_KEYS:
        kv.set("pat", k, j(k))
    kv.set("elsewhere", "orders.1", j(0))
    kv.delete("pat", "a.b.c")
    # A fence per pattern: a key it matches, written last.
    fences = {"orders.>": "orders.zz.fence", "a.*.c": "a.fence.c",
              "pipeline.*.raw": "pipeline.fence.raw", "*.b.c": "fence.b.c",
              "a.*.*": "a.fence.fence", "a.b.>": "a.b.fence", "*": "fence",
              ">": "fence.any", "orders": "orders", "orders/1": "orders/1"}
    fence_revs = {p: kv.set("pat", f, j("fence")).entry.revision for p, f in fences.items()}
    first_fence = min(fence_revs.values())
    for pattern, want in PATTERNS.items():
        w = watches[pattern]
        evs = w.until(lambda e, p=pattern: e.revision == fence_revs[p])
        w.cancel()
        got = [(e.key, e.type) for e in evs if e.revision < first_fence]
        exp = [(k, PUT) for k in PATTERN_KEYS if k in want]
        if "a.b.c" in want:
            exp.append(("a.b.c", DELETE))
        assert got == exp, f"{pattern!r}: got {got}"


def test_token_like_characters_in_other_positions_are_exact_keys(kv):
    keys = ["a*", "a.b*", "a.>x", "a.*x", "a.bx", "a.b"]
    for k in keys:
        kv.set("pat", k, j(k))
    for k in ("a*", "a.b*", "a.>x", "a.*x"):
        w = kv.watch("pat", k)
        evs, _ = w.until_bootstrap()
        w.cancel()
        assert [e.key for e in evs] == [k], f"{k!r} should be an exact key"


@pytest.mark.parametrize("pattern", ["a.>.c", ">.a", "a..*", "*..a", ".*", "a.*.", "a.>.>", "..>"])
def test_malformed_watch_pattern_is_invalid_argument(kv, pattern):
    w = kv.watch("pat", pattern)
    e = w.expect_error()
    assert e.code() == grpc.StatusCode.INVALID_ARGUMENT, fmt(e)


@pytest.mark.parametrize("pattern", ["orders.>", "a.*.c", "*", ">"])
def test_from_version_with_a_pattern_is_invalid_argument(kv, pattern):
    kv.set("pat", "orders.1", j(1))
    w = kv.watch("pat", pattern, start=FROM_VERSION, from_version=0)
    e = w.expect_error()
    assert e.code() == grpc.StatusCode.INVALID_ARGUMENT, fmt(e)


def test_watch_from_version_replays_then_goes_live(kv):
    writes = []
    for i in range(1, 6):
        writes.append(kv.set("app", "k", j(i)))
    kv.set("app", "other", j(0))
    d = kv.delete("app", "k")                                   # v6
    s = kv.set("app", "k", j(7))                               # v7
    w = kv.watch("app", "k", start=FROM_VERSION, from_version=2)
    evs, boot = w.until_bootstrap()
    assert [(e.type, e.version) for e in evs] == \
        [(PUT, 3), (PUT, 4), (PUT, 5), (DELETE, 6), (PUT, 7)]
    assert [e.revision for e in evs] == [writes[2].entry.revision, writes[3].entry.revision,
                                          writes[4].entry.revision, d.entry.revision,
                                          s.entry.revision]
    view = {"k": (j(2), 2, False)}
    check_transitions(evs, view)
    assert boot.revision >= s.entry.revision
    live = kv.set("app", "k", j(8))
    ev = w.next()
    assert ev.type == PUT and ev.version == 8 and ev.prev_version == 7 and ev.prev_value == j(7)
    assert ev.revision == live.entry.revision > boot.revision
    w.cancel()
    # from_version 0: from the oldest retained, i.e. from version 1.
    w = kv.watch("app", "k", start=FROM_VERSION, from_version=0)
    evs, _ = w.until_bootstrap()
    assert [e.version for e in evs] == list(range(1, 9))
    assert evs[0].prev_version == 0 and evs[0].prev_value == ""
    w.cancel()
    # From the current version: nothing replayed.
    w = kv.watch("app", "k", start=FROM_VERSION, from_version=8)
    evs, _ = w.until_bootstrap()
    assert evs == []
    w.cancel()


def test_watch_from_revision_replays_matching_changes(kv):
    for i in range(3):
        kv.set("app", f"orders.{i}", j(i))
    rev = kv.revision()
    later = [kv.set("app", "orders.1", j("a")), kv.set("app", "other.1", j("x")),
             kv.set("app", "orders.9", j("b"))]
    dl = kv.delete("app", "orders.0")
    w = kv.watch("app", "orders.>", start=FROM_REVISION, from_revision=rev)
    evs, boot = w.until_bootstrap()
    assert [(e.type, e.key, e.revision) for e in evs] == [
        (PUT, "orders.1", later[0].entry.revision), (PUT, "orders.9", later[2].entry.revision),
        (DELETE, "orders.0", dl.entry.revision)]
    assert evs[0].prev_value == j(1) and evs[0].prev_version == 1
    assert evs[2].prev_value == j(0) and evs[2].deleted
    assert boot.revision >= dl.entry.revision
    r = kv.set("app", "orders.5", j(5))
    ev = w.next()
    assert ev.key == "orders.5" and ev.revision == r.entry.revision
    w.cancel()


def test_snapshot_then_live_has_no_gap_or_duplicate_under_concurrent_writes(kv):
    keys = [f"snap.k{i}" for i in range(16)]
    stop = threading.Event()
    errors, counts = [], []

    def writer(t):
        rnd = random.Random(t)
        n = 0
        try:
            while not stop.is_set() and n < 2000:
                k = rnd.choice(keys)
                if rnd.random() < 0.15:
                    kv.delete("app", k, writer=f"w{t}")
                else:
                    kv.set("app", k, j({"t": t, "n": n}), writer=f"w{t}")
                n += 1
            counts.append(n)
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    time.sleep(0.3)
    w_all = kv.watch("app", "snap.>")
    w_one = kv.watch("app", "snap.k3")
    time.sleep(0.7)
    stop.set()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors[:3]
    assert sum(counts) > 50, "writers made too little progress to test anything"
    kv.set("app", "snap.k0", j("fence"))
    fence = kv.set("app", "snap.k3", j("fence")).entry.revision   # both watchers see this one

    for w, match in ((w_all, lambda k: k.startswith("snap.")), (w_one, lambda k: k == "snap.k3")):
        snap, boot = w.until_bootstrap()
        live = w.until(lambda e: e.revision >= fence)
        w.cancel()
        R = boot.revision
        seen = set()
        view = {}
        for e in snap:
            assert e.type == PUT and not e.deleted, fmt(e)
            assert match(e.key), fmt(e)
            assert e.key not in seen, f"key twice in snapshot: {fmt(e)}"
            seen.add(e.key)
            assert e.revision <= R, f"snapshot entry newer than snapshot revision {R}: {fmt(e)}"
            view[e.key] = (e.value, e.version, False)
        assert all(match(e.key) for e in live)
        # Every write in this server matches snap.>, so its live part must be
        # every revision after R, with no gap and no repeat.
        check_transitions(live, view, after_revision=R, contiguous=(w is w_all))
        print(f"snapshot of {len(snap)} keys at revision {R}, then {len(live)} live events "
              f"(writers made {sum(counts)} calls)")
        assert live[-1].revision == fence
        for k in keys:
            if not match(k):
                continue
            g = kv.get("app", k)
            if k in view:
                value, version, deleted = view[k]
                assert g.entry.version == version, (k, g, view[k])
                assert g.found == (not deleted) and g.entry.deleted == deleted, (k, g)
                assert g.entry.value == value, k
            else:
                assert not g.found, f"{k} exists but the watcher never saw it: {g}"


def test_now_and_from_revision_watches_hand_off_to_live_without_gap_under_concurrent_writes(kv):
    keys = [f"hand.k{i}" for i in range(8)]
    stop = threading.Event()
    errors = []

    def writer(t):
        rnd = random.Random(100 + t)
        n = 0
        try:
            while not stop.is_set() and n < 2000:
                k = rnd.choice(keys)
                if rnd.random() < 0.1:
                    kv.delete("app", k)
                else:
                    kv.set("app", k, j({"t": t, "n": n}))
                n += 1
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    time.sleep(0.3)
    # Far enough back to be retained (history keeps 100 versions per key).
    from_rev = max(0, kv.revision() - 60)
    w_rev = kv.watch("app", "hand.>", start=FROM_REVISION, from_revision=from_rev)
    w_now = kv.watch("app", "hand.>", start=NOW)
    time.sleep(0.2)
    g = kv.get("app", "hand.k1")
    from_ver = max(0, g.entry.version - 10)
    w_ver = kv.watch("app", "hand.k1", start=FROM_VERSION, from_version=from_ver)
    time.sleep(0.5)
    stop.set()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors[:3]
    fence = kv.set("app", "hand.k1", j("fence")).entry.revision

    # NOW: BOOTSTRAP_DONE, then every revision after it.
    boot = w_now.next()
    assert boot.type == BOOTSTRAP_DONE, fmt(boot)
    live = w_now.until(lambda e: e.revision >= fence)
    w_now.cancel()
    check_transitions(live, {}, after_revision=boot.revision, contiguous=True)
    assert live[-1].revision == fence

    # FROM_REVISION: replay then live is one gapless run from from_rev + 1.
    replay, boot = w_rev.until_bootstrap()
    live = w_rev.until(lambda e: e.revision >= fence)
    w_rev.cancel()
    if replay:
        assert replay[-1].revision <= boot.revision
    assert all(e.revision > boot.revision for e in live), \
        f"live part repeats the replay (BOOTSTRAP_DONE at {boot.revision}): {fmt(live[0])}"
    check_transitions(replay + live, {}, after_revision=from_rev, contiguous=True)
    assert (replay + live)[-1].revision == fence

    # FROM_VERSION on one key: versions from from_ver + 1, each once, in order.
    replay, boot = w_ver.until_bootstrap()
    live = w_ver.until(lambda e: e.revision >= fence)
    w_ver.cancel()
    assert all(e.revision > boot.revision for e in live)
    evs = replay + live
    assert [e.version for e in evs] == list(range(from_ver + 1, evs[-1].version + 1))
    check_transitions(evs, {}, after_revision=0)
    assert evs[-1].revision == fence and evs[-1].version == kv.get("app", "hand.k1").entry.version


def test_snapshot_watch_exact_key_under_concurrent_writes(kv):
    # One key, four writers racing the watch's start.
    stop = threading.Event()
    errors = []

    def writer():
        i = 0
        try:
            while not stop.is_set() and i < 3000:
                if i % 7 == 6:
                    kv.delete("app", "one")
                else:
                    kv.set("app", "one", j(i))
                i += 1
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    ts = [threading.Thread(target=writer) for _ in range(4)]
    for t in ts:
        t.start()
    time.sleep(0.2)
    w = kv.watch("app", "one")
    time.sleep(0.5)
    stop.set()
    for t in ts:
        t.join(timeout=60)
    assert not errors, errors[:3]
    fence = kv.set("app", "one", j("fence")).entry.revision
    snap, boot = w.until_bootstrap()
    live = w.until(lambda e: e.revision == fence)
    w.cancel()
    assert len(snap) <= 1
    view = {}
    for e in snap:
        assert e.type == PUT and e.revision <= boot.revision
        view["one"] = (e.value, e.version, False)
    check_transitions(live, view, after_revision=boot.revision, contiguous=True)
    g = kv.get("app", "one")
    assert (g.entry.value, g.entry.version) == view["one"][:2]


def test_watch_from_revision_resumes_across_a_restart_with_no_gap(tmp_path):
    data = str(tmp_path / "data")
    a = Reeld(data).start()
    ch = grpc.insecure_channel(a.addr)
    try:
        kv = KV(ch)
        for i in range(5):
            kv.set("app", f"job.{i}", j(i))
        resume_at = kv.revision()
        assert resume_at == 5
        before_stop = [kv.set("app", "job.1", j("b1")), kv.delete("app", "job.2"),
                       kv.set("app", "unrelated", j(0))]
    finally:
        ch.close()
        if a.proc.poll() is None:
            code, _ = a.stop(signal.SIGTERM)
    assert code == 0, a.log()

    b = Reeld(data).start()
    ch = grpc.insecure_channel(b.addr)
    try:
        kv = KV(ch)
        assert kv.revision() == 8
        after = [kv.set("app", "job.7", j(7)), kv.set("app", "job.1", j("b2")),
                 kv.delete("app", "job.7")]
        w = kv.watch("app", "job.>", start=FROM_REVISION, from_revision=resume_at)
        evs, boot = w.until_bootstrap()
        want = [r.entry.revision for r in before_stop[:2] + after]
        assert [e.revision for e in evs] == want == [6, 7, 9, 10, 11]
        assert [(e.type, e.key, e.version) for e in evs] == [
            (PUT, "job.1", 2), (DELETE, "job.2", 2), (PUT, "job.7", 1),
            (PUT, "job.1", 3), (DELETE, "job.7", 2)]
        assert evs[0].prev_value == j(1) and evs[3].prev_value == j("b1")
        assert evs[1].prev_value == j(2) and evs[4].prev_value == j(7)
        assert boot.revision >= 11
        r = kv.set("app", "job.3", j("live"))
        ev = w.next()
        assert ev.key == "job.3" and ev.revision == r.entry.revision == 12
        w.expect_quiet(0.2)
        w.cancel()
        # What was acknowledged before the restart is all still there.
        g = kv.get("app", "job.1")
        assert g.found and (g.entry.value, g.entry.version, g.entry.revision) == (j("b2"), 3, 10)
        g = kv.get("app", "job.2")
        assert not g.found and g.entry.deleted and g.entry.version == 2
        assert [e.key for e in kv.list("app").entries] == \
            ["job.0", "job.1", "job.3", "job.4", "unrelated"]
        h = kv.history("app", "job.1").events
        assert [(e.version, e.value, e.revision) for e in h] == \
            [(1, j(1), 2), (2, j("b1"), 6), (3, j("b2"), 10)]
    finally:
        ch.close()
        code, _ = b.stop()
        assert code == 0, b.log()


def test_cancelled_watches_leave_the_server_serving(reeld, kv):
    kv.set("app", "k", j(0))
    watches = []
    for i in range(40):
        ch = grpc.insecure_channel(reeld.addr, options=[("grpc.use_local_subchannel_pool", 1)])
        call = watch_call_for(ch)(kv_pb2.WatchValueRequest(namespace="app", key="k" if i % 2 else "k.>"),
                                  timeout=30)
        first = next(call)
        assert first.type in (PUT, BOOTSTRAP_DONE)
        watches.append((ch, call))
    for i, (ch, call) in enumerate(watches):
        if i % 3:
            call.cancel()
        ch.close()                      # the rest simply vanish
    for i in range(20):
        kv.set("app", "k", j(i + 1))
    assert kv.get("app", "k").entry.version == 21
    w = kv.watch("app", "k", start=NOW)
    w.until_bootstrap()
    kv.set("app", "k", j("after"))
    assert w.next().value == j("after")
    w.cancel()


def test_many_watchers_of_one_key_each_see_every_event(reeld, kv):
    chans = [grpc.insecure_channel(reeld.addr, options=[("grpc.use_local_subchannel_pool", 1)])
             for _ in range(4)]
    try:
        ws = []
        for i in range(48):
            k = KV(chans[i % 4])
            ws.append(k.watch("fan", "fan.k" if i % 3 else "fan.>", start=NOW))
        for w in ws:
            w.until_bootstrap()
        revs = [kv.set("fan", "fan.k", j(i)).entry.revision for i in range(30)]
        for w in ws:
            evs = w.take(30)
            assert [e.revision for e in evs] == revs
            assert [e.value for e in evs] == [j(i) for i in range(30)]
            w.cancel()
    finally:
        for ch in chans:
            ch.close()


def test_sigterm_ends_open_watches_with_unavailable_and_exits_zero(reeld, kv):
    kv.set("app", "k", j(0))
    ws = [kv.watch("app", "k", start=NOW), kv.watch("app", "k"),
          kv.watch("app", "x.>", start=NOW), kv.watch("app", "k", start=FROM_VERSION)]
    for w in ws:
        w.until_bootstrap()
    code, took = reeld.stop(signal.SIGTERM)
    assert code == 0, reeld.log()
    assert took < 5.0
    for w in ws:
        e = w.expect_error()
        assert e.code() == grpc.StatusCode.UNAVAILABLE, fmt(e)


def test_sigterm_with_a_stuck_never_reading_watcher_still_exits_zero(reeld, kv):
    ch = grpc.insecure_channel(reeld.addr, options=[("grpc.use_local_subchannel_pool", 1)])
    try:
        w = Watch(watch_call_for(ch), kv_pb2.WatchValueRequest(namespace="app", key="s.>"),
                  reading=False, deadline=60)
        deadline = time.monotonic() + T     # until the server registered it
        while kv._status(admin_pb2.GetStatusRequest(), timeout=T).kv_watchers < 1:
            assert time.monotonic() < deadline, "the watch was not registered"
            time.sleep(0.02)
        pad = "y" * 4000
        errors = []

        def writer(t):
            try:
                for i in range(250):
                    kv.set("app", f"s.t{t}.k{i % 10}", j({"i": i, "pad": pad}))
            except Exception as e:  # noqa: BLE001
                errors.append(e)

        ts = [threading.Thread(target=writer, args=(t,)) for t in range(8)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(timeout=60)
        assert not errors, errors[:3]
        # Its stream never drains: reeld waits out the 3 s grace, cancels
        # it, and gives gRPC's shutdown at most 3 s and its teardown 1 s
        # more (3.1 s here; more under ASan on a busy machine); a stop that
        # waits for the watch's 60 s deadline or gRPC's 10 s backup poller
        # takes longer.
        code, took = reeld.stop(signal.SIGTERM, timeout=30)
        assert code == 0, reeld.log()
        assert took < 10.0, f"took {took:.1f}s to stop"
        w.cancel()
    finally:
        ch.close()


# --------------------------------------------------------------------------
# bad input


def test_invalid_json_value_is_invalid_argument_and_not_written(kv):
    kv.set("app", "exists", j(1))
    rev = kv.revision()
    for bad in ["", "{", "{'a': 1}", "abc", "[1,]", '{"a":1}x', "01", "nul", '"unterminated', '"a\x01b"']:
        e = rpc_error(kv.set, "app", "k", bad)
        assert e.code() == grpc.StatusCode.INVALID_ARGUMENT, (bad, e.details())
        assert "value" in e.details(), (bad, e.details())
        assert_nothing_written(kv, "app", "k", rev)
    e = rpc_error(kv.set, "app", "exists", "{")
    assert e.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert kv.get("app", "exists").entry.value == j(1) and kv.revision() == rev
    # Valid JSON of every kind is accepted.
    for good in ["null", "true", "0", "-1.5e3", '"s"', "[]", "{}", '{"a":[1,{"b":null}]}', ' {"a" : 1} ']:
        kv.set("app", "good", good)


def test_more_invalid_json_is_rejected(kv):
    for bad in ["tru", "NaN", "Infinity", "+1", ".5", "1.", "[1 2]", '{"a" 1}', '{"a":}',
                '"\\x"', "[", "]", "{}}", '{"a":1,}', "1 2", "\t", " "]:
        e = rpc_error(kv.set, "app", "k", bad)
        assert e.code() == grpc.StatusCode.INVALID_ARGUMENT, (bad, e.details())
    assert kv.revision() == 0
    for good in ["1e5", "-0", '"\\u00e9"', "1E-7", '"\\"\\/\\b\\f\\n\\r\\t"', "[[[]]]", '"é"']:
        kv.set("app", "good", good)
        assert kv.get("app", "good").entry.value == good


def test_nul_byte_in_a_value_is_invalid_json_not_truncated(kv):
    # A NUL is not JSON; nothing before it may be stored in its place.
    for i, bad in enumerate(["1\x00", "1\x00x", '{"a":1}\x00{', '"a\x00b"']):
        e = rpc_error(kv.set, "app", f"k{i}", bad)
        assert e.code() == grpc.StatusCode.INVALID_ARGUMENT, (bad, e.details())
        assert_nothing_written(kv, "app", f"k{i}", 0)


def test_nul_byte_in_a_key_or_namespace_is_refused_or_kept_distinct(kv):
    kv.set("app", "a", j("plain"))
    kv.set("a", "k", j("plain"))
    for ns, key, short in (("app", "a\x00b", ("app", "a")), ("a\x00b", "k", ("a", "k"))):
        rev = kv.revision()
        try:
            r = kv.set(ns, key, j("with nul"))
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.INVALID_ARGUMENT, e.details()
            assert kv.revision() == rev
            continue
        assert (r.entry.namespace, r.entry.key, r.entry.version) == (ns, key, 1), \
            f"set of {ns!r}/{key!r} answered {r.entry.namespace!r}/{r.entry.key!r} v{r.entry.version}"
        g = kv.get(*short)
        assert (g.entry.value, g.entry.version) == (j("plain"), 1), \
            f"writing {ns!r}/{key!r} changed {short}: {g.entry}"
        g = kv.get(ns, key)
        assert g.found and g.entry.key == key and g.entry.value == j("with nul")


def test_nul_byte_in_writer_is_refused_or_kept(kv):
    try:
        r = kv.set("app", "k", j(1), writer="a\x00b")
    except grpc.RpcError as e:
        assert e.code() == grpc.StatusCode.INVALID_ARGUMENT, e.details()
        assert kv.revision() == 0
    else:
        assert r.entry.writer == "a\x00b", f"writer came back as {r.entry.writer!r}"
        assert kv.get("app", "k").entry.writer == "a\x00b"


def test_invalid_utf8_names_are_invalid_argument(kv):
    raw = kv.channel.unary_unary("/reel.v1.KV/SetValue")

    def field(tag, b):
        assert len(b) < 128
        return bytes([tag, len(b)]) + b

    for ns, key in ((b"app", b"\xff\xfe"), (b"app", b"a.\xc3"), (b"\xff", b"k")):
        msg = field(0x0A, ns) + field(0x12, key) + field(0x1A, b"1")
        e = rpc_error(raw, msg, timeout=T)
        assert e.code() == grpc.StatusCode.INVALID_ARGUMENT, (ns, key, e.details())
    assert kv.revision() == 0
    assert list(kv.list("app", include_deleted=True).entries) == []


def test_deeply_nested_json_does_not_crash_the_server(kv):
    depth = 400000                               # 800 KB of valid JSON
    deep = "[" * depth + "]" * depth
    try:
        r = kv.set("app", "deep", deep)
        assert r.entry.version == 1
        assert kv.get("app", "deep").entry.value == deep
    except grpc.RpcError as e:
        assert e.code() == grpc.StatusCode.INVALID_ARGUMENT, e.details()
        assert "value" in e.details(), e.details()
    e = rpc_error(kv.set, "app", "deep2", "[" * depth + "]" * (depth - 1))
    assert e.code() == grpc.StatusCode.INVALID_ARGUMENT
    e = rpc_error(kv.set, "app", "deep3", '{"a":' * 100000 + "1" + "}" * 99999)
    assert e.code() == grpc.StatusCode.INVALID_ARGUMENT
    kv.set("app", "alive", j(1))
    assert kv.get("app", "alive").found


def test_oversize_value_is_invalid_argument_naming_the_limit(kv):
    limit = 1 << 20
    ok = '"' + "x" * (limit - 2) + '"'
    assert len(ok) == limit
    r = kv.set("app", "big", ok)
    assert r.entry.version == 1
    assert kv.get("app", "big").entry.value == ok
    rev = kv.revision()
    too_big = '"' + "x" * (limit - 1) + '"'
    e = rpc_error(kv.set, "app", "k", too_big)
    assert e.code() == grpc.StatusCode.INVALID_ARGUMENT, e.details()
    assert "value" in e.details() and has_number(e.details(), limit), e.details()
    assert_nothing_written(kv, "app", "k", rev)
    # Bytes, not characters.
    e = rpc_error(kv.set, "app", "k", '"' + "é" * (limit // 2) + '"')
    assert e.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert_nothing_written(kv, "app", "k", rev)


def test_empty_key_is_invalid_argument_and_not_written(kv):
    e = rpc_error(kv.set, "app", "", j(1))
    assert e.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "key" in e.details(), e.details()
    assert kv.revision() == 0
    assert list(kv.list("app", include_deleted=True).entries) == []


def test_oversize_key_is_invalid_argument_naming_the_limit(kv):
    kv.set("app", "k" * 1024, j(1))
    kv.set("app", "é" * 512, j(1))              # 1024 bytes
    rev = kv.revision()
    for key in ("k" * 1025, "é" * 513):
        e = rpc_error(kv.set, "app", key, j(1))
        assert e.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "key" in e.details() and has_number(e.details(), 1024), e.details()
        assert kv.revision() == rev
    assert [len(e.key.encode()) for e in kv.list("app").entries] == [1024, 1024]


def test_empty_or_oversize_namespace_is_invalid_argument_and_not_written(kv):
    e = rpc_error(kv.set, "", "k", j(1))
    assert e.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "namespace" in e.details(), e.details()
    assert kv.revision() == 0
    e = rpc_error(kv.set, "n" * 257, "k", j(1))
    assert e.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "namespace" in e.details() and has_number(e.details(), 256), e.details()
    assert kv.revision() == 0
    kv.set("n" * 256, "k", j(1))
    assert kv.revision() == 1


def test_oversize_writer_is_invalid_argument(kv):
    e = rpc_error(kv.set, "app", "k", j(1), writer="w" * 257)
    assert e.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "writer" in e.details(), e.details()
    assert_nothing_written(kv, "app", "k", 0)
    assert kv.set("app", "k", j(1), writer="w" * 256).entry.writer == "w" * 256


def test_bad_names_are_invalid_on_every_method(kv):
    kv.set("app", "k", j(1))
    calls = [
        lambda: kv.get("", "k"), lambda: kv.get("app", ""),
        lambda: kv.delete("", "k"), lambda: kv.delete("app", ""),
        lambda: kv.delete("app", "k" * 1025),
        lambda: kv.list(""), lambda: kv.list("n" * 257),
        lambda: kv.history("", "k"), lambda: kv.history("app", ""),
    ]
    for c in calls:
        e = rpc_error(c)
        assert e.code() == grpc.StatusCode.INVALID_ARGUMENT, e.details()
    for ns, key in (("", "k"), ("app", ""), ("n" * 257, "k"), ("app", "k" * 1025)):
        w = kv.watch(ns, key)
        assert w.expect_error().code() == grpc.StatusCode.INVALID_ARGUMENT
    assert kv.revision() == 1


def test_kv_limit_flags_set_the_limits(tmp_path):
    server = Reeld(str(tmp_path / "data"), extra=[
        "--kv-max-namespace-bytes", "8", "--kv-max-key-bytes", "16",
        "--kv-max-value-bytes", "100"]).start()
    ch = grpc.insecure_channel(server.addr)
    try:
        kv = KV(ch)
        kv.set("n" * 8, "k" * 16, '"' + "v" * 98 + '"')
        for args, field, limit in [(("n" * 9, "k", "1"), "namespace", 8),
                                   (("n", "k" * 17, "1"), "key", 16),
                                   (("n", "k", '"' + "v" * 99 + '"'), "value", 100)]:
            e = rpc_error(kv.set, *args)
            assert e.code() == grpc.StatusCode.INVALID_ARGUMENT, e.details()
            assert field in e.details() and has_number(e.details(), limit), e.details()
        assert kv.revision() == 1
    finally:
        ch.close()
        code, _ = server.stop()
        assert code == 0, server.log()


# --------------------------------------------------------------------------
# slow watchers never hurt writers


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_never_reading_watchers_keep_server_memory_bounded_and_writes_flowing(reeld, kv):
    threads_n, per_thread = 16, 1300           # 20800 writes of ~1 KiB
    pad = "x" * 1000
    # Never-reading watchers, each on its own connection so only its own
    # stream is held back: a pattern (NOW), a pattern (SNAPSHOT), one key.
    slow = []
    for key, start in (("rss.>", NOW), (">", SNAPSHOT), ("rss.t0.k0", NOW)):
        ch = grpc.insecure_channel(reeld.addr, options=[("grpc.use_local_subchannel_pool", 1)])
        w = Watch(watch_call_for(ch), kv_pb2.WatchValueRequest(namespace="rss", key=key, start=start),
                  reading=False, deadline=300)
        slow.append((ch, key, w))
    # Three more that are never read at all, only cancelled at the end: a
    # server that queued every event per watcher would need 6 x ~45 MiB.
    mute = []
    for key in ("rss.>", "rss.*.*", ">"):
        ch = grpc.insecure_channel(reeld.addr, options=[("grpc.use_local_subchannel_pool", 1)])
        mute.append((ch, Watch(watch_call_for(ch), kv_pb2.WatchValueRequest(
            namespace="rss", key=key, start=NOW), reading=False, deadline=300)))
    # Until the server registered them (at revision 0).
    deadline = time.monotonic() + T
    while kv._status(admin_pb2.GetStatusRequest(), timeout=T).kv_watchers < 6:
        assert time.monotonic() < deadline, "the watches were not registered"
        time.sleep(0.02)
    # Warm up (allocator, RocksDB, threads) before the baseline.
    for i in range(200):
        kv.set("warm", f"k{i % 10}", j({"i": i, "pad": pad}))
    rev0 = kv.revision()
    rss0 = rss_kib(reeld.proc.pid)
    peak = [rss0]
    errors = []
    done = threading.Event()

    def writer(t):
        try:
            for i in range(per_thread):
                kv.set("rss", f"rss.t{t}.k{i % 20}", j({"t": t, "i": i, "pad": pad}))
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    def sampler():
        while not done.is_set():
            try:
                peak[0] = max(peak[0], rss_kib(reeld.proc.pid))
            except (OSError, AssertionError):
                return
            time.sleep(0.05)

    s = threading.Thread(target=sampler, daemon=True)
    s.start()
    t0 = time.monotonic()
    ws = [threading.Thread(target=writer, args=(t,)) for t in range(threads_n)]
    for t in ws:
        t.start()
    for t in ws:
        t.join(timeout=120)
    took = time.monotonic() - t0
    done.set()
    s.join(timeout=5)
    assert not any(t.is_alive() for t in ws), "writers did not finish within 120 s"
    assert not errors, errors[:3]
    total = threads_n * per_thread
    final_rev = kv.revision()
    assert final_rev == rev0 + total
    grown_mib = (max(peak[0], rss_kib(reeld.proc.pid)) - rss0) / 1024
    print(f"{total} writes in {took:.1f}s; RSS {rss0 // 1024} MiB -> peak +{grown_mib:.1f} MiB")
    if sanitized():
        # ASan's quarantine and redzones alone grow RSS by ~400 MiB over
        # these writes with no watcher at all: the bound is for real builds.
        print("sanitizer build: RSS bound not checked")
    else:
        assert grown_mib < 100, f"reeld RSS grew {grown_mib:.0f} MiB with never-reading watchers"

    # Now the slow watchers read: either everything, in order and gapless,
    # or a gapless prefix and an error naming the last revision received.
    # While each catches up, more writes go by (the storage-to-live handoff).
    for n, (ch, key, w) in enumerate(slow):
        late_errors = []
        target = []                      # set to the last revision once late writes end

        def late_writer(t):
            try:
                for i in range(200):
                    kv.set("rss", f"rss.late{n}.t{t}.k{i % 5}", j({"i": i, "pad": pad}))
            except Exception as e:  # noqa: BLE001
                late_errors.append(e)

        late = [threading.Thread(target=late_writer, args=(t,)) for t in range(4)]

        def finish_late():
            for t in late:
                t.join(timeout=60)
            target.append(kv.revision())

        w.start_reading()
        for t in late:
            t.start()
        finisher = threading.Thread(target=finish_late, daemon=True)
        finisher.start()
        # All were opened on an empty server (SNAPSHOT of nothing, or NOW).
        boot = w.next(timeout=T)
        assert boot.type == BOOTSTRAP_DONE and boot.revision == 0, fmt(boot)
        last = boot.revision
        view = {}
        received = 0
        err = None
        deadline = time.monotonic() + 60
        while True:
            assert time.monotonic() < deadline, f"{key}: reading the backlog took too long"
            try:
                # Short waits: the last late event may arrive before the
                # late writers' final revision is known (target), and then
                # no further event comes to wake a long wait.
                ev = w.next(timeout=0.5)
            except grpc.RpcError as e:
                err = e
                break
            except AssertionError as e:
                if target and last >= target[0]:
                    break
                if not w.ended and time.monotonic() < deadline - 1:
                    continue
                raise AssertionError(f"slow watcher {key!r}: {e} after {received} events, "
                                     f"last revision {last}, final revision {target}") from None
            assert ev.namespace == "rss", fmt(ev)
            # Every write in namespace rss matches the two patterns: their
            # revisions must be consecutive (except across the warm-up).
            check_transitions([ev], view, after_revision=last,
                              contiguous=key != "rss.t0.k0" and last >= rev0)
            last = ev.revision
            received += 1
            if key == "rss.t0.k0" and ev.version == per_thread // 20:
                break
            if target and last >= target[0]:
                break
        finisher.join(timeout=60)
        assert not late_errors, late_errors[:3]
        if err is not None:
            assert has_number(err.details(), last), \
                f"{key}: stream ended ({err.code()}) after revision {last} but its message " \
                f"does not carry it: {err.details()!r}"
        elif key == "rss.t0.k0":
            assert received == per_thread // 20
        else:
            assert last == target[0] and received == target[0] - rev0
        print(f"slow watcher {key!r}: {received} events, last revision {last}, "
              f"{'ended: ' + fmt(err) if err else 'caught up'}")
        w.cancel()
        ch.close()
    for ch, w in mute:
        w.cancel()
        ch.close()
    # Writers were never hurt: the server still takes writes and reads.
    kv.set("rss", "after", j(1))
    assert kv.get("rss", "after").found


def test_large_writes_past_the_queue_byte_budget_are_refused_and_leave_nothing(tmp_path):
    """--write-queue-bytes bounds what queued writes hold: 48 writes of
    256 KB at once against a 1 MiB budget (queued, at most 4 of them) are
    partly refused with RESOURCE_EXHAUSTED naming the bytes waiting and the
    budget; each refused one wrote nothing, each accepted one reads back,
    and a small write after them goes through at once."""
    server = Reeld(str(tmp_path / "data"), extra=["--write-queue-bytes", "1048576"]).start()
    ch = grpc.insecure_channel(server.addr, options=[
        ("grpc.max_send_message_length", 8 << 20)])
    try:
        set_value = unary(ch, "/reel.v1.KV/SetValue", kv_pb2.SetValueRequest,
                          kv_pb2.SetValueResponse)
        get_value = unary(ch, "/reel.v1.KV/GetValue", kv_pb2.GetValueRequest,
                          kv_pb2.GetValueResponse)
        big = '"' + "x" * (256 << 10) + '"'
        refused = []
        for attempt in range(5):  # the writer may keep up with one burst
            futures = [(f"k{attempt}-{i}", set_value.future(kv_pb2.SetValueRequest(
                namespace="big", key=f"k{attempt}-{i}", value=big), timeout=60))
                for i in range(48)]
            ok = []
            for key, fut in futures:
                try:
                    fut.result()
                    ok.append(key)
                except grpc.RpcError as e:
                    assert e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, e
                    assert re.search(r"write queue is full \(\d+ bytes waiting in \d+ "
                                     r"requests, at most 1048576; this one holds \d+\)",
                                     e.details()), e.details()
                    refused.append(key)
            for key in ok:
                assert get_value(kv_pb2.GetValueRequest(namespace="big", key=key),
                                 timeout=10).entry.value == big
            if refused:
                break
        assert refused, "no write was refused in 5 bursts of 48 x 256 KB"
        for key in refused:
            assert not get_value(kv_pb2.GetValueRequest(namespace="big", key=key),
                                 timeout=10).found
        set_value(kv_pb2.SetValueRequest(namespace="small", key="k", value="1"), timeout=10)
    finally:
        ch.close()
        server.stop()
