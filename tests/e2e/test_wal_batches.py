"""SubscribeEventBatches: SubscribeEvents' events, several to a message."""
import json
import queue
import threading
import time

import grpc
import pytest

from reel.v1 import kv_pb2 as K
from reel.v1 import wal_pb2 as W
from conftest import Reeld
from test_wal import (Client, collect, mixed_load, past_byte_retention, start_with_consumers,
                      until_released)

T = W.Event.Type
BATCH_MAX = 256 * 1024


def batches(channel):
    return channel.unary_stream(
        "/reel.v1.Wal/SubscribeEventBatches",
        request_serializer=W.SubscribeEventsRequest.SerializeToString,
        response_deserializer=W.EventBatch.FromString)


def collect_batches(channel, until, limit_s=30, **req):
    """(events up to revision `until` without PROGRESS, the batches' sizes)."""
    call = batches(channel)(W.SubscribeEventsRequest(**req), timeout=limit_s)
    events, sizes = [], []
    try:
        for b in call:
            assert len(b.events) >= 1
            sizes.append((len(b.events), b.ByteSize()))
            events.extend(e for e in b.events if e.type != T.PROGRESS)
            if any(e.revision >= until for e in b.events):
                break
    finally:
        call.cancel()
    return events, sizes


@pytest.fixture
def client(channel):
    return Client(channel)


def test_batches_carry_exactly_the_events_of_subscribe_events(channel, client):
    for k in range(2):
        mixed_load(client, k, 60)
    head = client.head(W.GetHeadRequest()).head_revision
    one_by_one = collect(client, head)
    batched, sizes = collect_batches(channel, head)
    assert [e.revision for e in batched] == list(range(1, head + 1))
    assert [e.SerializeToString() for e in batched] == \
        [e.SerializeToString() for e in one_by_one]
    # A backlog read from storage leaves several events to a message.
    assert len(sizes) < head / 4, sizes


def store_big_events(client):
    """Writes events of about 120 KiB, then three of about 400 KiB; returns
    the head revision."""
    # 60 KiB values: an event carries the value and the previous one, so
    # about 120 KiB: two fit in a message, three do not. The last key's
    # values make events of about 400 KiB, which must go alone.
    for i in range(40):
        v = json.dumps("%d" % i + "x" * (60 * 1024))
        client.set(K.SetValueRequest(namespace="big", key=f"k{i % 3}", value=v))
    for i in range(3):
        client.set(K.SetValueRequest(namespace="big", key="huge",
                                     value=json.dumps("%d" % i + "y" * (200 * 1024))))
    return client.head(W.GetHeadRequest()).head_revision


def test_a_message_stays_within_256_kib_unless_one_event_is_larger(channel, client):
    head = store_big_events(client)
    events, sizes = collect_batches(channel, head)
    assert [e.revision for e in events] == list(range(1, head + 1))
    for n, size in sizes:
        assert n == 1 or size <= BATCH_MAX, sizes
    assert any(n > 1 for n, _ in sizes), sizes
    assert [json.loads(e.value.value)[:1] for e in events[-3:]] == ["0", "1", "2"]


def test_filters_and_bad_patterns_match_subscribe_events(channel, client):
    for key in ("orders.eu.1", "orders.us.2", "orders", "users.1"):
        client.set(K.SetValueRequest(namespace="shop", key=key, value="1"))
    head = client.head(W.GetHeadRequest()).head_revision
    # The stream stays open after the last match: a PROGRESS event at the
    # head, at the second tick (2 s in; the first finds matches sent), ends
    # the collection; 10 s for it.
    events, _ = collect_batches(channel, head, limit_s=10,
                                subject_pattern="kv.shop.orders.>")
    assert [e.subject for e in events] == ["kv.shop.orders.eu.1", "kv.shop.orders.us.2"]
    call = batches(channel)(W.SubscribeEventsRequest(subject_pattern="a.>.b"), timeout=5)
    with pytest.raises(grpc.RpcError) as e:
        next(call)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "subject_pattern" in e.value.details()


def test_live_events_arrive_at_once_and_progress_while_idle(channel, client):
    client.set(K.SetValueRequest(namespace="n", key="k", value="0"))
    call = batches(channel)(W.SubscribeEventsRequest(), timeout=20)
    got = queue.Queue()

    def reader():
        try:
            for b in call:
                for e in b.events:
                    got.put((time.monotonic(), e))
        except grpc.RpcError:
            pass

    threading.Thread(target=reader, daemon=True).start()
    _, first = got.get(timeout=5)
    assert first.revision == 1 and first.type == T.VALUE_CHANGED
    _, progress = got.get(timeout=3)
    assert progress.type == T.PROGRESS and progress.revision == 1
    for i in range(1, 4):
        t0 = time.monotonic()
        client.set(K.SetValueRequest(namespace="n", key="k", value=str(i)))
        at, ev = got.get(timeout=5)
        while ev.type == T.PROGRESS:
            at, ev = got.get(timeout=5)
        assert ev.revision == i + 1 and ev.value.value == str(i)
        assert at - t0 < 1.0  # pushed, not held back for a batch to fill
    call.cancel()


def test_a_durable_consumer_resumes_through_batches(tmp_path):
    server, ch, c = start_with_consumers(tmp_path)
    try:
        for i in range(50):
            c.set(K.SetValueRequest(namespace="n", key=f"k{i}", value=str(i)))
        events, _ = collect_batches(ch, 50, consumer="sink")
        assert [e.revision for e in events] == list(range(1, 51))
        assert c.ack(W.AckEventsRequest(consumer="sink", revision=20)).consumer.acked_revision == 20
        until_released(c, "sink")  # the first subscriber's end reached the server
        events, _ = collect_batches(ch, 50, consumer="sink")
        assert [e.revision for e in events] == list(range(21, 51))
    finally:
        ch.close()
        assert server.stop()[0] == 0


def test_a_trimmed_revision_is_out_of_range_naming_the_oldest(tmp_path):
    server, ch, c = past_byte_retention(tmp_path)
    try:
        oldest = c.head(W.GetHeadRequest()).oldest_revision
        call = batches(ch)(W.SubscribeEventsRequest(from_revision=3), timeout=5)
        with pytest.raises(grpc.RpcError) as e:
            next(call)
        assert e.value.code() == grpc.StatusCode.OUT_OF_RANGE
        assert str(oldest) in e.value.details()
    finally:
        ch.close()
        assert server.stop()[0] == 0


def test_reeld_exits_promptly_after_streaming_large_batches(tmp_path):
    # Large messages can fill the socket, and then gRPC 1.51 keeps a poller
    # that sleeps up to 10 s, which its shutdown would wait for. reeld must
    # still exit 0 at once on SIGTERM.
    for cycle in range(3):
        server = Reeld(str(tmp_path / f"data{cycle}")).start()
        try:
            ch = grpc.insecure_channel(server.addr)
            head = store_big_events(Client(ch))
            events, _ = collect_batches(ch, head)
            assert len(events) == head
            ch.close()
        finally:
            code, took = server.stop()
        assert code == 0 and took < 3, (cycle, code, took, server.log())
