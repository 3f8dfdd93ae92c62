"""KV.WatchValueBatches and KV.WatchValuesBatches: the events of WatchValue
and WatchValues, several to a message when they are ready together (the
catch-up of an unread WatchValuesBatches stream is in test_kv_watch_many)."""
import json
import queue
import threading

import grpc
import pytest

from reel.v1 import kv_pb2
from conftest import stream
from test_kv_watch_many import W, setter, watch_values

PUT = kv_pb2.ValueEvent.PUT
BOOTSTRAP_DONE = kv_pb2.ValueEvent.BOOTSTRAP_DONE
SNAPSHOT = kv_pb2.WatchValueRequest.SNAPSHOT
NOW = kv_pb2.WatchValueRequest.NOW
FROM_VERSION = kv_pb2.WatchValueRequest.FROM_VERSION
FROM_REVISION = kv_pb2.WatchValueRequest.FROM_REVISION
BATCH_MAX = 256 * 1024
T = 10


def watch_value(channel, req, timeout=60):
    return stream(channel, "/reel.v1.KV/WatchValue", kv_pb2.WatchValueRequest,
                  kv_pb2.ValueEvent)(req, timeout=timeout)


def watch_value_batches(channel, req, timeout=60):
    return stream(channel, "/reel.v1.KV/WatchValueBatches", kv_pb2.WatchValueRequest,
                  kv_pb2.ValueEventBatch)(req, timeout=timeout)


def take(call, n, batched):
    """The first n events of a stream, and the number of messages they came in."""
    events, messages = [], 0
    try:
        for m in call:
            messages += 1
            if batched:
                assert len(m.events) >= 1
                events.extend(m.events)
            else:
                events.append(m)
            if len(events) >= n:
                break
    finally:
        call.cancel()
    assert len(events) >= n, events
    return events[:n], messages


@pytest.fixture
def chan(reeld):
    ch = grpc.insecure_channel(reeld.addr)
    yield ch
    ch.close()


@pytest.mark.parametrize("start", ["history", "snapshot", "revision"])
def test_batches_carry_exactly_the_events_of_watch_value(chan, start):
    set_value = setter(chan)
    for v in range(120):
        set_value("b", "key", {"v": v})
        set_value("b", f"other.{v % 7}", {"v": v})
    if start == "history":    # 100 retained versions, then BOOTSTRAP_DONE
        req, n = W("b", "key", FROM_VERSION, from_version=0), 101
    elif start == "snapshot":  # 7 current values, then BOOTSTRAP_DONE
        req, n = W("b", "other.*", SNAPSHOT), 8
    else:  # the 70 changes to other.* after revision 100, then BOOTSTRAP_DONE
        req, n = W("b", "other.>", FROM_REVISION, from_revision=100), 71
    alone, alone_msgs = take(watch_value(chan, req), n, False)
    batched, batched_msgs = take(watch_value_batches(chan, req), n, True)
    assert alone[-1].type == BOOTSTRAP_DONE
    assert [e.SerializeToString() for e in batched] == \
        [e.SerializeToString() for e in alone]
    assert alone_msgs == n
    if n > 50:
        # A replay read from storage leaves several events to a message.
        assert batched_msgs < n / 4, batched_msgs


def test_a_watcher_that_keeps_up_gets_each_change_at_once(chan):
    set_value = setter(chan)
    call = watch_value_batches(chan, W("live", "k", NOW))
    got = queue.Queue()

    def read():
        try:
            for m in call:
                got.put(m)
        except grpc.RpcError as e:
            got.put(e)

    threading.Thread(target=read, daemon=True).start()
    first = got.get(timeout=T)
    assert [e.type for e in first.events] == [BOOTSTRAP_DONE]
    for v in range(5):
        set_value("live", "k", {"v": v})
        m = got.get(timeout=T)
        assert [(e.type, json.loads(e.value)["v"], e.version) for e in m.events] == \
            [(PUT, v, v + 1)]
    call.cancel()


def test_a_message_stays_within_256_kib_unless_one_event_is_larger(chan):
    set_value = setter(chan)
    # 60 KiB values make events of about 120 KiB (value and previous value):
    # two fit in a message, three do not. 200 KiB values make events of
    # about 400 KiB, which must go alone.
    for i in range(20):
        set_value("big", "k", "%d" % i + "x" * (60 * 1024))
    for i in range(3):
        set_value("big", "k", "%d" % i + "y" * (200 * 1024))
    call = watch_value_batches(chan, W("big", "k", FROM_VERSION, from_version=0))
    sizes, events = [], []
    try:
        for m in call:
            sizes.append((len(m.events), m.ByteSize()))
            events.extend(m.events)
            if events[-1].type == BOOTSTRAP_DONE:
                break
    finally:
        call.cancel()
    assert [e.version for e in events if e.type == PUT] == list(range(1, 24))
    for n, size in sizes:
        assert n == 1 or size <= BATCH_MAX, sizes
    assert any(n > 1 for n, _ in sizes), sizes


def test_shared_batches_carry_exactly_the_events_of_watch_values(chan):
    set_value = setter(chan)
    watches = [W("m", "a", FROM_VERSION, from_version=0), W("m", "b.*", SNAPSHOT),
               W("m", "a", NOW), W("elsewhere", "a", NOW)]
    for v in range(30):
        set_value("m", "a", {"v": v})
        set_value("m", f"b.{v % 3}", {"v": v})

    def per_watch(events):
        out = {}
        for e in events:
            out.setdefault(e.watch, []).append(e.event.SerializeToString())
        return out

    # 30 versions + BOOTSTRAP_DONE, 3 values + BOOTSTRAP_DONE, two BOOTSTRAP_DONEs
    n = 31 + 4 + 1 + 1
    alone, _ = take(watch_values(chan, watches), n, False)
    batched, messages = take(watch_values(chan, watches, batched=True), n, True)
    assert per_watch(batched) == per_watch(alone)
    assert set(per_watch(batched)) == {0, 1, 2, 3}
    assert messages < n / 2, messages


@pytest.mark.parametrize("method", ["/reel.v1.KV/WatchValueBatches",
                                    "/reel.v1.KV/WatchValuesBatches"])
def test_bad_requests_are_refused_as_without_batches(chan, method):
    bad = W("ns", "a.*", FROM_VERSION)
    if method.endswith("WatchValueBatches"):
        call = watch_value_batches(chan, bad, timeout=T)
        needle = "start: FROM_VERSION needs an exact key"
    else:
        call = watch_values(chan, [W("ns", "ok"), bad], timeout=T, batched=True)
        needle = "watches[1]: start: FROM_VERSION needs an exact key"
    with pytest.raises(grpc.RpcError) as e:
        for _ in call:
            pass
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert needle in e.value.details(), e.value.details()
    # Not a valid request message at all.
    raw = chan.unary_stream(method, request_serializer=lambda b: b,
                            response_deserializer=lambda b: b)
    with pytest.raises(grpc.RpcError) as e:
        for _ in raw(b"\xff\xff\xff", timeout=T):
            pass
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
