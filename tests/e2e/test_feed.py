"""The subscription feed: a change whose live copy cannot be made (a decode
that runs out of memory, say) is never passed by. Every live stream drops
back to storage and is pumped again at once, with nothing queued to drain:
it gets that change from storage, in order, then follows live again.

The fault points kv.publish, journal.publish and wal.publish stand for that
failure in the publish step. Each is hit only while a stream of its kind is
open, so start-up and the writes made before the stream leave it armed.
"""
import queue
import threading

import grpc
import pytest

from reel.v1 import journal_pb2 as J
from reel.v1 import kv_pb2 as K
from reel.v1 import wal_pb2 as W
from conftest import stream, unary
from test_cursors import faulty  # noqa: F401 (the fixture: a fresh reeld with faults armed)

T = 10           # seconds to wait for one message
DEADLINE = 60    # of each stream
NOW = K.WatchValueRequest.NOW
BOOTSTRAP_DONE = K.ValueEvent.BOOTSTRAP_DONE
PROGRESS = W.Event.PROGRESS
KINDS = ["WatchValue", "WatchValueBatches", "WatchValues", "WatchValuesBatches"]


class Reader:
    """Reads a stream on a thread, message by message, flattening batches
    with `items`; next() waits at most T seconds."""

    def __init__(self, call, items=lambda m: [m]):
        self.call = call
        self.q = queue.Queue()
        threading.Thread(target=self._run, args=(items,), daemon=True).start()

    def _run(self, items):
        try:
            for m in self.call:
                for x in items(m):
                    self.q.put(x)
        except grpc.RpcError as e:
            self.q.put(e)

    def next(self):
        try:
            x = self.q.get(timeout=T)
        except queue.Empty:
            raise AssertionError(f"nothing within {T}s") from None
        if isinstance(x, grpc.RpcError):
            raise AssertionError(f"the stream ended: {x.code()}: {x.details()}")
        return x

    def cancel(self):
        self.call.cancel()


def kv_set(ch, key, value):
    return unary(ch, "/reel.v1.KV/SetValue", K.SetValueRequest, K.SetValueResponse)(
        K.SetValueRequest(namespace="f", key=key, value=value), timeout=T)


def kv_watch(ch, kind, watches, coalesce=False):
    """(watch index, ValueEvent) pairs of a stream of any of the four kinds."""
    out = {"WatchValue": K.ValueEvent,
           "WatchValueBatches": K.ValueEventBatch,
           "WatchValues": K.WatchValuesEvent,
           "WatchValuesBatches": K.WatchValuesEventBatch}[kind]
    if kind.startswith("WatchValues"):
        call = stream(ch, f"/reel.v1.KV/{kind}", K.WatchValuesRequest, out)(
            K.WatchValuesRequest(watches=watches, coalesce=coalesce), timeout=DEADLINE)
    else:
        call = stream(ch, f"/reel.v1.KV/{kind}", K.WatchValueRequest, out)(
            watches[0], timeout=DEADLINE)
    items = {"WatchValue": lambda m: [(0, m)],
             "WatchValueBatches": lambda m: [(0, e) for e in m.events],
             "WatchValues": lambda m: [(w, m.event) for w in [m.watch, *m.also]],
             "WatchValuesBatches": lambda m: [(w, x.event) for x in m.events
                                              for w in [x.watch, *x.also]]}[kind]
    return Reader(call, items)


@pytest.mark.parametrize("kind", KINDS)
def test_a_kv_event_publish_cannot_make_reaches_the_watch_from_storage(faulty, kind):
    ch = faulty("kv.publish")          # the first KV change published to a watch
    kv_set(ch, "k", "0")               # no watch yet: the point is not hit
    w = kv_watch(ch, kind, [K.WatchValueRequest(namespace="f", key="k", start=NOW)])
    _, boot = w.next()
    assert boot.type == BOOTSTRAP_DONE and boot.revision == 1, boot
    kv_set(ch, "k", "1")               # its live copy is lost
    kv_set(ch, "k", "2")
    got = [(ev.version, ev.value) for _, ev in (w.next(), w.next())]
    assert got == [(2, "1"), (3, "2")], got
    w.cancel()


@pytest.mark.parametrize("kind", ["WatchValues", "WatchValuesBatches"])
def test_coalesced_watches_get_a_lost_event_from_storage_each_once(faulty, kind):
    ch = faulty("kv.publish")
    req = K.WatchValueRequest(namespace="f", key="k", start=NOW)
    w = kv_watch(ch, kind, [req, req, K.WatchValueRequest(namespace="f", key="*",
                                                           start=NOW)], coalesce=True)
    assert sorted(w.next()[0] for _ in range(3)) == [0, 1, 2]   # BOOTSTRAP_DONEs
    kv_set(ch, "k", "1")               # lost for all three
    kv_set(ch, "k", "2")               # live again, once for each
    per_watch = {0: [], 1: [], 2: []}
    for _ in range(6):
        i, ev = w.next()
        per_watch[i].append(ev.version)
    assert per_watch == {0: [1, 2], 1: [1, 2], 2: [1, 2]}, per_watch
    w.cancel()


def test_a_journal_entry_publish_cannot_make_reaches_the_subscriber_from_storage(faulty):
    ch = faulty("journal.publish")     # the first journal change published to a subscriber
    u = lambda m, req, resp: unary(ch, f"/reel.v1.Journal/{m}", req, resp)
    run = u("BeginRun", J.BeginRunRequest, J.Run)(J.BeginRunRequest(
        app="a", user="u", session="s", invocation_id="i", lease_owner="w"), timeout=T)
    append = u("Append", J.AppendRequest, J.AppendResponse)

    def add(n):
        return append(J.AppendRequest(run_id=run.run_id, lease_epoch=1, kind="step",
                                      payload=str(n)), timeout=T)

    add(1)                             # before the subscriber: not hit
    sub = Reader(stream(ch, "/reel.v1.Journal/SubscribeRun", J.SubscribeRunRequest,
                        J.JournalEntry)(J.SubscribeRunRequest(run_id=run.run_id),
                                        timeout=DEADLINE))
    assert sub.next().seq == 1         # replayed: it follows live from here
    add(2)                             # its live copy is lost
    add(3)
    got = [(e.seq, e.payload) for e in (sub.next(), sub.next())]
    assert got == [(2, "2"), (3, "3")], got
    sub.cancel()


@pytest.mark.parametrize("method", ["SubscribeEvents", "SubscribeEventBatches"])
def test_a_wal_event_publish_cannot_read_reaches_the_subscriber_from_storage(faulty, method):
    ch = faulty("wal.publish")         # the first event published to a subscriber
    kv_set(ch, "k", "0")               # revision 1, before the subscriber
    out = W.Event if method == "SubscribeEvents" else W.EventBatch
    items = (lambda m: [m]) if method == "SubscribeEvents" else (lambda m: list(m.events))
    sub = Reader(stream(ch, f"/reel.v1.Wal/{method}", W.SubscribeEventsRequest, out)(
        W.SubscribeEventsRequest(subject_pattern="kv.f.>"), timeout=DEADLINE), items)

    def next_event():
        while True:
            ev = sub.next()
            if ev.type != PROGRESS:
                return ev

    assert next_event().revision == 1  # replayed: it follows live from here
    kv_set(ch, "k", "1")               # revision 2: its live copy is lost
    kv_set(ch, "k", "2")
    got = [next_event().revision for _ in range(2)]
    assert got == [2, 3], got
    sub.cancel()
