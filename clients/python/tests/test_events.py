"""events.tail, sync and async: each revision once, in order, across
reconnects and reeld restarts; durable consumers acknowledged as events are
handled (while busy, when idle, on close), and a new process resuming after
the last acknowledgement."""
import asyncio
import threading
import time

import grpc
import pytest

import reel
import reel.aio


def _kv_writes(c, first, n):
    return [c.kv.put("app", f"item.{i}", i).revision for i in range(first, first + n)]


def _consumer(c, name):
    return next((x for x in c.events.consumers() if x.name == name), None)


def _acked(c, name):
    """The consumer's acknowledged revision; 0 until its first subscriber
    has reached reeld and created it."""
    got = _consumer(c, name)
    return got.acked_revision if got is not None else 0


def test_tail_with_a_consumer_resumes_across_a_restart_each_revision_once(reeld, client):
    revs = _kv_writes(client, 0, 10)
    client.kv.put("other", "x", 1)                              # does not match
    tail = client.events.tail("kv.app.>", consumer="indexer")
    got = [next(tail) for _ in range(4)]
    reeld.restart()
    revs += _kv_writes(client, 10, 10)
    while len(got) < 20:
        got.append(next(tail))
    assert [e.revision for e in got] == revs
    assert [(e.type, e.subject, e.value.value) for e in got[:2]] == \
        [(reel.WalEventType.VALUE_CHANGED, "kv.app.item.0", 0),
         (reel.WalEventType.VALUE_CHANGED, "kv.app.item.1", 1)]
    assert tail.reconnects >= 1
    tail.close()
    # The last event is still held by the caller: everything before it is
    # acknowledged, and it comes again to the next subscriber.
    assert tail.acked == revs[18]
    assert _acked(client, "indexer") == revs[18]
    with reel.connect(reeld.addr) as again:
        with again.events.tail("kv.app.>", consumer="indexer") as t2:
            assert next(t2).revision == revs[19]
            t2.ack()
        assert _acked(again, "indexer") == revs[19]


def test_an_idle_tail_acknowledges_what_it_handled(reeld, client):
    revs = _kv_writes(client, 0, 3)
    tail = client.events.tail("kv.app.>", consumer="idle")
    got = []

    def consume():
        for ev in tail:
            got.append(ev.revision)
            if len(got) == 4:
                return

    t = threading.Thread(target=consume)
    t.start()
    end = time.monotonic() + 10
    while _acked(client, "idle") < revs[-1]:
        assert time.monotonic() < end, "no acknowledgement while idle"
        time.sleep(0.05)
    revs += _kv_writes(client, 3, 1)
    t.join(10)
    assert got == revs
    tail.close()


def test_anonymous_tail_resumes_after_the_last_revision_and_manual_acks(reeld, client):
    revs = _kv_writes(client, 0, 3)
    with client.events.tail("kv.app.>", from_revision=revs[0]) as tail:
        assert next(tail).revision == revs[1]
        reeld.restart()
        revs += _kv_writes(client, 3, 2)
        assert [next(tail).revision for _ in range(3)] == revs[2:]
        with pytest.raises(ValueError, match="no consumer"):
            tail.ack()
    with pytest.raises(ValueError, match="needs a consumer"):
        client.events.tail("kv.>", ack=True)
    with client.events.tail("kv.app.>", consumer="manual", ack=False) as tail:
        assert [next(tail).revision for _ in range(2)] == revs[:2]
    assert _acked(client, "manual") == 0 and _consumer(client, "manual") is not None
    with client.events.tail("kv.app.>", consumer="manual", ack=False) as tail:
        assert next(tail).revision == revs[0]
        assert tail.ack().acked_revision == revs[0]
    assert client.events.head().head_revision == revs[-1]
    client.events.delete_consumer("manual")
    assert [c.name for c in client.events.consumers()] == []


def test_a_busy_consumer_is_refused_unless_taken_over(reeld, client):
    _kv_writes(client, 0, 2)
    first = client.events.tail("kv.>", consumer="solo")
    next(first)
    with pytest.raises(reel.FailedPrecondition, match="already has an active subscriber"):
        next(client.events.tail("kv.>", consumer="solo"))
    second = client.events.tail("kv.>", consumer="solo", takeover=True)
    assert next(second).revision == 1
    with pytest.raises(reel.Conflict, match="taken over"):
        for _ in first:
            pass
    second.close()


async def test_async_tail_with_a_consumer_resumes_across_a_restart(reeld):
    loop = asyncio.get_running_loop()
    async with reel.aio.connect(reeld.addr, reconnect_timeout=20) as c:
        revs = [(await c.kv.put("app", f"item.{i}", i)).revision for i in range(10)]
        tail = c.events.tail("kv.app.>", consumer="indexer")
        got = [await tail.__anext__() for _ in range(4)]
        await loop.run_in_executor(None, reeld.restart)
        revs += [(await c.kv.put("app", f"item.{i}", i)).revision for i in range(10, 20)]
        while len(got) < 20:
            got.append(await tail.__anext__())
        assert [e.revision for e in got] == revs
        assert tail.reconnects >= 1
        await tail.close()
        assert tail.acked == revs[18]
    async with reel.aio.connect(reeld.addr) as again:
        async with again.events.tail("kv.app.>", consumer="indexer") as t2:
            assert (await t2.__anext__()).revision == revs[19]
            await t2.ack()
        acked = [x.acked_revision async for x in again.events.consumers()]
        assert acked == [revs[19]]


async def test_async_idle_tail_acknowledges(reeld):
    async with reel.aio.connect(reeld.addr) as c:
        revs = [(await c.kv.put("app", f"item.{i}", i)).revision for i in range(3)]
        tail = c.events.tail("kv.app.>", consumer="idle")

        async def consume():
            return [(await tail.__anext__()).revision for _ in range(4)]

        task = asyncio.create_task(consume())
        while True:
            acked = [x.acked_revision async for x in c.events.consumers()]
            if acked and acked[0] >= revs[-1]:
                break
            await asyncio.sleep(0.05)
        revs.append((await c.kv.put("app", "item.3", 3)).revision)
        assert await task == revs
        await tail.close()


def test_every_wal_event_type_and_body_of_the_proto_is_known():
    from reel.v1 import wal_pb2
    for name, number in wal_pb2.Event.Type.items():
        if number:
            assert reel.WalEventType[name] == number
    bodies = [f.name for f in wal_pb2.Event.DESCRIPTOR.oneofs_by_name["body"].fields]
    assert set(bodies) <= set(reel.Event.__dataclass_fields__)


def _artifact_event(ev, version):
    assert ev.type == reel.WalEventType.ARTIFACT_CHANGED
    assert ev.type.name == "ARTIFACT_CHANGED" and ev.subject == "artifact.ws.docs.a.txt"
    assert isinstance(ev.artifact, reel.Artifact) and ev.body is ev.artifact
    assert (ev.artifact.key, ev.artifact.version, ev.artifact.size) == ("docs/a.txt", version, 5)


def test_a_full_tail_names_every_type_and_carries_artifacts(client):
    run = client.runs.begin("app", "u", "s", "tail-all")
    run.append("note", 1)
    client.signals.send(run.run_id, "go", 1)
    client.kv.put("app", "k", 1)
    art = client.workspace.put("ws", "docs/a.txt", b"hello")
    run.end()
    head = client.events.head().head_revision
    with client.events.tail("", progress=True) as tail:
        seen = []
        for ev in tail:
            seen.append(ev)
            if ev.revision >= head:
                break
    assert all(isinstance(ev.type, reel.WalEventType) for ev in seen)
    assert {ev.type.name for ev in seen} >= {"JOURNAL_APPENDED", "RUN_CHANGED",
                                             "VALUE_CHANGED", "SIGNAL_SENT",
                                             "ARTIFACT_CHANGED"}
    (ev,) = [ev for ev in seen if ev.subject.startswith("artifact.")]
    _artifact_event(ev, art.version)
    assert ev.artifact.sha256 == art.sha256


async def test_async_tail_carries_artifacts(reeld):
    async with reel.aio.connect(reeld.addr) as c:
        head = (await c.events.head()).head_revision
        await c.workspace.put("ws", "docs/a.txt", b"hello")
        tail = c.events.tail("artifact.>", from_revision=head)
        async with tail:
            ev = await tail.__anext__()
        _artifact_event(ev, 1)


def test_a_tails_automatic_ack_rides_out_an_outage_longer_than_a_call(reeld):
    """The tail acknowledges by itself between events; with reeld away for
    longer than a call's timeout, that ack used to raise DeadlineExceeded
    out of the tail (streams ride out reconnect_timeout). It is put off
    until reeld is back."""
    with reel.connect(reeld.addr, timeout=1.0, reconnect_timeout=30.0) as c:
        revs = _kv_writes(c, 0, 3)
        tail = c.events.tail("kv.app.>", consumer="outage")
        it = iter(tail)
        assert [next(it).revision for _ in range(2)] == revs[:2]
        time.sleep(1.2)                               # an ack is due
        reeld.stop()
        back = threading.Timer(2.5, reeld.start)
        back.start()
        assert next(it).revision == revs[2]
        back.join()
        more = _kv_writes(c, 3, 1)
        assert next(it).revision == more[0]
        tail.close()
        assert _acked(c, "outage") == revs[2]


def test_a_durable_tail_whose_stream_failed_closes_at_once_with_that_error(reeld):
    """reeld gone for good: the tail gives up after reconnect_timeout, and
    leaving `with tail:` adds no last acknowledgement waiting out a call's
    timeout; the caller sees the stream's Unavailable."""
    c = reel.connect(reeld.addr, reconnect_timeout=1, timeout=20)
    try:
        for i in range(3):
            c.kv.put("ns", f"k{i}", i)
        seen = 0
        with pytest.raises(reel.Unavailable):
            with c.events.tail("kv.ns.>", consumer="c1") as tail:
                for ev in tail:
                    seen += 1
                    if seen == 2:
                        reeld.kill()
                        t0 = time.monotonic()
        assert time.monotonic() - t0 < 10, "close() waited out a call's timeout"
    finally:
        c.close()



class _Failed(grpc.RpcError):
    def __init__(self, code, details):
        self._code, self._details = code, details

    def code(self):
        return self._code

    def details(self):
        return self._details


def test_a_batch_over_the_clients_message_limit_says_which_limit():
    """A stream's answer (a batch of events, each under the limit and
    together over it) names the limit and what to do, as a unary answer's
    does, not gRPC's bare text."""
    from reel import errors
    e = errors.from_rpc_error(_Failed(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                      "Received message larger than max (1200064 vs. 1000000)"),
                              method="SubscribeEventBatches")
    assert isinstance(e, reel.ResourceExhausted)
    assert str(e).endswith("answer: 1200064 bytes, more than this client takes in one "
                           "message (max_message_bytes), at most 1000000: make it at least "
                           "reeld's --max-response-bytes"), str(e)
    other = errors.from_rpc_error(_Failed(grpc.StatusCode.RESOURCE_EXHAUSTED, "too many calls"),
                                  method="SubscribeEventBatches")
    assert isinstance(other, reel.ResourceExhausted) and "too many calls" in str(other)
