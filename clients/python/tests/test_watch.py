"""kv.watch, sync and async: snapshot, BOOTSTRAP_DONE, transitions,
patterns, and resumption across reeld restarts (live and in the middle of
the snapshot) without losing or repeating an event."""
import asyncio
import gc
import threading
import time

import pytest

import reel
import reel.aio


def _key_events(events):
    return [(e.type.name, e.key, e.version) for e in events]


def test_watch_pattern_snapshot_marker_then_live_transitions(client):
    client.kv.put("app", "pipeline.a.raw", {"doc": "a"})
    client.kv.put("app", "pipeline.b.raw", {"doc": "b"})
    client.kv.put("app", "pipeline.a.clean", {"doc": "a"})
    client.kv.put("app", "other", 1)
    with client.kv.watch("app", "pipeline.*.raw") as w:
        snap = [next(w), next(w)]
        assert _key_events(snap) == [("PUT", "pipeline.a.raw", 1), ("PUT", "pipeline.b.raw", 1)]
        assert w.revision is None and not w.bootstrapped
        marker = next(w)
        assert marker.bootstrap_done and marker.type == reel.EventType.BOOTSTRAP_DONE
        assert w.bootstrapped and w.revision == marker.revision == 4
        client.kv.put("app", "pipeline.a.clean", {"doc": "a2"})      # does not match
        client.kv.put("app", "pipeline.a.raw", {"doc": "a2"})
        client.kv.delete("app", "pipeline.b.raw")
        put, delete = next(w), next(w)
        assert (put.type, put.key, put.value, put.prev_value, put.version, put.prev_version) == \
            (reel.EventType.PUT, "pipeline.a.raw", {"doc": "a2"}, {"doc": "a"}, 2, 1)
        assert (delete.type, delete.deleted, delete.prev_value, delete.value) == \
            (reel.EventType.DELETE, True, {"doc": "b"}, None)
        assert w.revision == delete.revision == 7


def test_watch_start_modes(client):
    for v in range(3):
        client.kv.put("app", "k", v)
    with client.kv.watch("app", "k", now=True) as w:
        assert next(w).bootstrap_done
    with client.kv.watch("app", "k", from_version=1) as w:
        assert [(e.type.name, e.version) for e in (next(w), next(w), next(w))] == \
            [("PUT", 2), ("PUT", 3), ("BOOTSTRAP_DONE", 0)]
    with client.kv.watch("app", "k", from_revision=2) as w:
        assert next(w).version == 3 and next(w).bootstrap_done
    with pytest.raises(ValueError, match="one start"):
        client.kv.watch("app", "k", now=True, from_revision=1)
    with pytest.raises(reel.InvalidArgument, match="past the head"):
        next(iter(client.kv.watch("app", "k", from_revision=1000)))


def _write_across_restart(reeld, key, seen_enough, restarted, stop, acked, resumed):
    """Writes key 0, 1, 2, ... until stop; an answer lost to the restart
    may or may not have committed, so only the acknowledged are recorded.
    After the restart it writes up to version 100 and waits there for the
    watch to take its 90th event: a watch that resumes after more versions than
    --kv-history-keep (100) is OUT_OF_RANGE by design, and on a fast disk
    the writer's channel reconnected and wrote them first."""
    with reel.connect(reeld.addr, timeout=5) as c:
        i = 0
        while not stop.is_set():
            try:
                acked.append((c.kv.put("app", key, i).version, i))
            except reel.ReelError:
                pass
            i += 1
            if i == 40:
                seen_enough.wait(30)
            if i == 60:
                restarted.wait(30)
            if acked and acked[-1][0] == 100:
                resumed.wait(30)


def _check_no_loss_no_repeat(events, acked, final):
    versions = [e.version for e in events]
    assert versions == list(range(1, final + 1)), "lost or repeated events"
    assert all(e.prev_version == e.version - 1 for e in events)
    by_version = {e.version: e.value for e in events}
    assert all(by_version[v] == i for v, i in acked)
    values = [e.value for e in events]
    assert values == sorted(values)


def test_watch_resumes_across_a_reeld_restart_without_loss_or_repetition(reeld, client):
    seen_enough, restarted, stop, acked = threading.Event(), threading.Event(), \
        threading.Event(), []
    resumed = threading.Event()
    w = client.kv.watch("app", "orders.>", now=True)
    assert next(w).bootstrap_done
    writer = threading.Thread(target=_write_across_restart,
                              args=(reeld, "orders.1", seen_enough, restarted, stop, acked,
                                    resumed))
    writer.start()
    events = []
    try:
        for ev in w:
            assert not ev.bootstrap_done, "a resumed watch repeats no BOOTSTRAP_DONE"
            events.append(ev)
            if len(events) == 20:
                seen_enough.set()
                reeld.restart()
                restarted.set()
            if len(events) == 90:
                resumed.set()
            if len(events) == 120:
                stop.set()
                writer.join()
                break
        final = client.kv.get("app", "orders.1").version
        while events[-1].version < final:
            events.append(next(w))
    finally:
        stop.set()
        seen_enough.set()
        restarted.set()
        resumed.set()
        writer.join()
        w.close()
    assert w.reconnects >= 1
    _check_no_loss_no_repeat(events, acked, final)


def _big_snapshot(c, n=48):
    blob = "x" * (512 * 1024)
    for i in range(n):
        c.kv.put("big", f"k.{i:02d}", {"i": i, "pad": blob})


def _check_snapshot_resume(events, streams):
    """events: everything up to and including BOOTSTRAP_DONE; streams: how
    many the watch had opened by then."""
    assert streams >= 2, "the snapshot was not interrupted: make it larger"
    keys = [(e.key, e.version) for e in events if not e.bootstrap_done]
    assert len(keys) == len(set(keys)), "a (key, version) was yielded twice"
    assert ("k.00", 1) in keys and ("k.00", 2) in keys        # changed after it was yielded
    deletes = [e for e in events if e.type == reel.EventType.DELETE]
    assert [(d.key, d.version, d.prev_version) for d in deletes] == [("k.01", 2, 1)]
    assert ("k.47", 2) in keys and ("k.47", 1) not in keys    # not yielded before: newest only
    assert ("k.99", 1) in keys                                # created meanwhile
    assert events[-1].bootstrap_done and sum(e.bootstrap_done for e in events) == 1


def test_watch_resumes_in_the_middle_of_its_snapshot(reeld):
    with reel.connect(reeld.addr, max_message_bytes=8 << 20) as c:
        _big_snapshot(c)
        w = c.kv.watch("big", "k.>")
        first = next(w)
        assert (first.key, first.version) == ("k.00", 1)
        _ = next(w)                                   # k.01, version 1
        reeld.restart()
        c.kv.put("big", "k.00", {"i": 0, "changed": True})
        c.kv.delete("big", "k.01")
        c.kv.put("big", "k.47", {"i": 47, "changed": True})
        c.kv.put("big", "k.99", {"new": True})
        events = [first, _]
        for ev in w:
            events.append(ev)
            if ev.bootstrap_done:
                break
        streams = w._cursor.streams
        assert w.reconnects >= 1
        c.kv.put("big", "k.02", {"after": True})
        live = next(w)
        assert (live.key, live.version, live.prev_version) == ("k.02", 2, 1)
        w.close()
    _check_snapshot_resume(events, streams)


async def test_async_watch_snapshot_marker_and_live(reeld):
    async with reel.aio.connect(reeld.addr) as c:
        await c.kv.put("app", "pipeline.a.raw", 1)
        await c.kv.put("app", "pipeline.a.clean", 1)
        async with c.kv.watch("app", "pipeline.*.raw") as w:
            it = w.__aiter__()
            assert _key_events([await it.__anext__()]) == [("PUT", "pipeline.a.raw", 1)]
            marker = await it.__anext__()
            assert marker.bootstrap_done and w.revision == 2
            await c.kv.put("app", "pipeline.b.raw", 2)
            ev = await it.__anext__()
            assert (ev.key, ev.value, ev.prev_version) == ("pipeline.b.raw", 2, 0)


async def test_async_watch_resumes_across_a_reeld_restart_without_loss_or_repetition(reeld):
    seen_enough, restarted, stop, acked = threading.Event(), threading.Event(), \
        threading.Event(), []
    resumed = threading.Event()
    loop = asyncio.get_running_loop()
    async with reel.aio.connect(reeld.addr, reconnect_timeout=20) as c:
        w = c.kv.watch("app", "orders.>", now=True)
        assert (await w.__anext__()).bootstrap_done
        writer = threading.Thread(target=_write_across_restart,
                                  args=(reeld, "orders.1", seen_enough, restarted, stop, acked,
                                    resumed))
        writer.start()
        events = []
        try:
            async for ev in w:
                assert not ev.bootstrap_done
                events.append(ev)
                if len(events) == 20:
                    seen_enough.set()
                    await loop.run_in_executor(None, reeld.restart)
                    restarted.set()
                if len(events) == 90:
                    resumed.set()
                if len(events) == 120:
                    stop.set()
                    await loop.run_in_executor(None, writer.join)
                    break
            final = (await c.kv.get("app", "orders.1")).version
            while events[-1].version < final:
                events.append(await w.__anext__())
        finally:
            stop.set()
            seen_enough.set()
            restarted.set()
            resumed.set()
            await loop.run_in_executor(None, writer.join)
            await w.close()
        assert w.reconnects >= 1
    _check_no_loss_no_repeat(events, acked, final)


async def test_async_watch_resumes_in_the_middle_of_its_snapshot(reeld):
    loop = asyncio.get_running_loop()
    async with reel.aio.connect(reeld.addr, max_message_bytes=8 << 20) as c:
        with reel.connect(reeld.addr) as sc:
            _big_snapshot(sc)
        w = c.kv.watch("big", "k.>")
        events = [await w.__anext__(), await w.__anext__()]
        assert [(e.key, e.version) for e in events] == [("k.00", 1), ("k.01", 1)]
        await loop.run_in_executor(None, reeld.restart)
        await c.kv.put("big", "k.00", {"i": 0, "changed": True})
        await c.kv.delete("big", "k.01")
        await c.kv.put("big", "k.47", {"i": 47, "changed": True})
        await c.kv.put("big", "k.99", {"new": True})
        async for ev in w:
            events.append(ev)
            if ev.bootstrap_done:
                break
        streams = w._cursor.streams
        assert w.reconnects >= 1
        await w.close()
    _check_snapshot_resume(events, streams)


def test_a_watch_begun_while_reeld_is_down_starts_once_it_is_back(reeld, client):
    # With gRPC's own retries on, this stream neither failed nor started,
    # even long after reeld was back.
    client.kv.put("app", "k", 1)
    reeld.stop()
    got = []

    def consume():
        with client.kv.watch("app", "k") as w:
            for ev in w:
                got.append((ev.type.name, ev.version))
                if len(got) == 3:
                    return

    t = threading.Thread(target=consume, daemon=True)
    t.start()
    time.sleep(2.5)
    reeld.start()
    end = time.monotonic() + 30
    while len(got) < 2 and time.monotonic() < end:
        time.sleep(0.05)
    assert got == [("PUT", 1), ("BOOTSTRAP_DONE", 0)]
    client.kv.put("app", "k", 2)
    t.join(30)
    assert got == [("PUT", 1), ("BOOTSTRAP_DONE", 0), ("PUT", 2)]


def test_close_from_another_thread_ends_the_iteration_quietly(client):
    w = client.kv.watch("app", "k", now=True)
    got, failed = [], []

    def consume():
        try:
            for ev in w:
                got.append(ev)
        except Exception as e:      # reported below
            failed.append(e)

    def wait_for(n):
        end = time.monotonic() + 10
        while len(got) < n:
            assert time.monotonic() < end, f"the watch saw {len(got)} events, not {n}"
            time.sleep(0.01)

    t = threading.Thread(target=consume)
    t.start()
    wait_for(1)                     # BOOTSTRAP_DONE: live from here
    client.kv.put("app", "k", 1)
    wait_for(2)
    w.close()
    t.join(10)
    assert not t.is_alive() and failed == []
    assert [e.type.name for e in got] == ["BOOTSTRAP_DONE", "PUT"]


async def test_async_close_from_another_task_ends_the_iteration_quietly(reeld):
    async with reel.aio.connect(reeld.addr) as c:
        w = c.kv.watch("app", "k", now=True)
        got = []

        async def consume():
            async for ev in w:
                got.append(ev)

        task = asyncio.create_task(consume())
        while not got:                  # BOOTSTRAP_DONE: live from here
            await asyncio.sleep(0.01)
        await c.kv.put("app", "k", 1)
        while len(got) < 2:
            await asyncio.sleep(0.01)
        await w.close()
        await asyncio.wait_for(task, 10)
        assert [e.type.name for e in got] == ["BOOTSTRAP_DONE", "PUT"]


async def test_async_a_timed_out_wait_for_the_next_event_keeps_the_stream(reeld):
    # asyncio.wait_for(anext(w), t) timing out cancels that wait, not the
    # watch (nor a tail, a follow, a workspace watch: one _Resumable).
    async with reel.aio.connect(reeld.addr) as c:
        w = c.kv.watch("tmo", "k", now=True)
        assert (await anext(w)).bootstrap_done
        for _ in range(3):
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(anext(w), 0.2)
        await c.kv.put("tmo", "k", 1)
        ev = await asyncio.wait_for(anext(w), 10)
        assert (ev.type.name, ev.value) == ("PUT", 1)

        # A consuming task cancelled: another task goes on from there.
        got = []

        async def consume():
            async for ev in w:
                got.append(ev.value)
        task = asyncio.create_task(consume())
        await c.kv.put("tmo", "k", 2)
        while got != [2]:
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await c.kv.put("tmo", "k", 3)
        assert (await asyncio.wait_for(anext(w), 10)).value == 3
        events = c.events.tail("kv.tmo.>", from_revision=0)
        assert [(await anext(events)).value.value for _ in range(3)] == [1, 2, 3]
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(anext(events), 0.3)
        await c.kv.put("tmo", "k", 4)
        assert (await asyncio.wait_for(anext(events), 10)).value.value == 4
        await w.close()
        await events.close()
        with pytest.raises(StopAsyncIteration):
            await anext(w)


def test_a_watch_read_slowly_while_others_wait_for_room_resumes(tmp_path):
    """reeld cancels a stream whose reader took nothing of its last message
    for the keepalive time and timeout while other streams wait for room
    (RESOURCE_EXHAUSTED, "... resume from the last position received"). A
    watch iterated slowly (a pause over one item) raised it; it now resumes
    where it was, like after a lost connection: every version once, in
    order."""
    import grpc
    from conftest import Reeld
    from reel.v1 import kv_pb2
    server = Reeld(str(tmp_path / "data"),
                   extra=["--max-stream-backlog-bytes", str(1 << 20),
                          "--keepalive-time", "1s", "--keepalive-timeout", "3s"]).start()
    # Readers that never read, on channels without BDP (their windows stay
    # at 64 KiB): they spend the budget and then wait for room.
    opts = [("grpc.http2.bdp_probe", 0), ("grpc.use_local_subchannel_pool", 1)]
    chans = [grpc.insecure_channel(server.addr, options=opts) for _ in range(2)]
    stalled = []
    big = "v" * 300000
    try:
        with reel.connect(server.addr, reconnect_timeout=20) as c:
            c.kv.put("m", "big", big)
            w = c.kv.watch("m", "big", now=True)
            assert next(w).bootstrap_done
            c.kv.put("m", "big", big)
            first = next(w)
            assert first.version == 2
            for _ in range(40):
                c.kv.put("m", "big", big)
            watch = [ch.unary_stream("/reel.v1.KV/WatchValue",
                                     request_serializer=lambda m: m.SerializeToString(),
                                     response_deserializer=kv_pb2.ValueEvent.FromString)
                     for ch in chans]
            every = kv_pb2.WatchValueRequest(namespace="m", key="big",
                                             start=kv_pb2.WatchValueRequest.FROM_VERSION,
                                             from_version=0)
            stalled = [watch[i % 2](every, timeout=120) for i in range(8)]
            time.sleep(9)           # the pause over the first item
            for s in stalled:       # gone: what they held is room again
                s.cancel()
            versions = [first.version]
            for ev in w:
                versions.append(ev.version)
                if ev.version == 42:
                    break
            assert versions == list(range(2, 43))
            assert w.reconnects >= 1, "the watch was not cancelled: nothing was tested"
            w.close()
    finally:
        for s in stalled:
            s.cancel()
        for ch in chans:
            ch.close()
        assert server.stop() == 0


def _calls_back_to(status, base):
    end = time.monotonic() + 10
    while status().open_calls > base:
        assert time.monotonic() < end, f"{status().open_calls} calls open, not {base}"
        time.sleep(0.02)


def test_leaving_a_watch_or_tail_by_break_ends_its_stream_at_once(client):
    """The README's `for ev in client.kv.watch(...)` left by break: nothing
    holds the iterator, and its stream on reeld ends then, not whenever the
    garbage collector runs (disabled here)."""
    client.kv.put("brk", "k", 0)
    base = client.status().open_calls
    gc.disable()
    try:
        for _ in range(10):
            for ev in client.kv.watch("brk", "k"):
                break
            for ev in client.events.tail("kv.brk.>"):
                break
        _calls_back_to(client.status, base)
    finally:
        gc.enable()


async def test_async_leaving_a_watch_by_break_ends_its_stream_at_once(reeld):
    async with reel.aio.connect(reeld.addr) as c:
        await c.kv.put("brk", "k", 0)
        base = (await c.status()).open_calls
        gc.disable()
        try:
            for _ in range(10):
                async for ev in c.kv.watch("brk", "k"):
                    break
            end = time.monotonic() + 10
            while (await c.status()).open_calls > base:
                assert time.monotonic() < end
                await asyncio.sleep(0.02)
        finally:
            gc.enable()


CLOSE_UNDER_WATCH = """
import asyncio, sys, reel, reel.aio
async def watcher(kv):
    async for ev in kv.watch("t", "x.*"):
        pass
async def main():
    async with reel.aio.connect(sys.argv[1]) as c:
        asyncio.create_task(watcher(c.kv))
        await asyncio.sleep(0.5)
        raise RuntimeError("agent bug")
asyncio.run(main())
"""


def test_async_a_client_closed_under_a_watch_leaves_no_task_of_its_own_to_report(
        reeld, tmp_path):
    """asyncio.run ending cancels what is left: the watch's own read task
    ended with Cancelled("client is closed") and asyncio printed it, with
    its traceback, before the program's own error."""
    import subprocess
    import sys
    script = tmp_path / "close_under_watch.py"
    script.write_text(CLOSE_UNDER_WATCH)
    r = subprocess.run([sys.executable, str(script), reeld.addr], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 1 and "RuntimeError: agent bug" in r.stderr, r.stderr
    assert "unhandled exception during asyncio.run() shutdown" not in r.stderr, r.stderr
    assert "_read" not in r.stderr, r.stderr


async def test_async_a_cancelled_consumer_task_ends_its_stream_while_the_task_is_kept(reeld):
    """A task cancelled in `async for ev in client.kv.watch(...)` (a tail,
    a follow): the CancelledError's traceback held __anext__'s frame, and
    that frame the stream, which stayed open on reeld for as long as
    anything kept the finished task (a list of tasks, a gather's result)."""
    async with reel.aio.connect(reeld.addr) as c:
        run = await c.runs.begin("lk", "u", "s", "i", heartbeat=False)
        base = (await c.status()).open_calls

        async def watch():
            async for _ in c.kv.watch("lk", "k.*"):
                pass

        async def tail():
            async for _ in c.events.tail("kv.lk.>"):
                pass

        async def follow():
            async for _ in c.journal.follow(run.run_id):
                pass

        gc.disable()
        try:
            tasks = [asyncio.create_task(f()) for f in (watch, tail, follow)]
            end = time.monotonic() + 10
            while (await c.status()).open_calls < base + 3:
                assert time.monotonic() < end, "the streams never opened"
                await asyncio.sleep(0.02)
            reads = [t for t in asyncio.all_tasks() if t.get_coro().__qualname__ == "_read"]
            assert len(reads) == 3
            for t in tasks:
                t.cancel()
            await asyncio.wait(tasks)
            assert all(t.cancelled() for t in tasks)
            end = time.monotonic() + 10
            while (await c.status()).open_calls > base:
                assert time.monotonic() < end, "a cancelled consumer's stream stayed open"
                await asyncio.sleep(0.02)
            # The streams' own reads end as cancelled (not with the
            # ReferenceError of a handle freed under them, which
            # asyncio.run's end would report).
            await asyncio.wait(reads, timeout=10)
            assert [t.cancelled() or t.exception() for t in reads] == [True] * 3
        finally:
            gc.enable()
