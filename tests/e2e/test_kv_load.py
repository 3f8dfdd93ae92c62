"""Watchers and subscribers never hurt writers, at scale: 100k writes go by
while KV watchers and 100 WAL subscribers never read. Server memory stays
bounded, writes keep their pace, and a stalled reader that starts reading
catches up from storage with no gap.

Writes are pipelined with grpc futures (64 in flight), so one Python thread
drives the server's group commit. Pace is compared as a ratio against a
baseline measured in the same test, on the same machine."""
import collections
import json
import os
import queue
import threading
import time

import grpc
import pytest

from reel.v1 import kv_pb2
from reel.v1 import admin_pb2
from reel.v1 import wal_pb2
from conftest import Reeld, sanitized

IN_FLIGHT = 64
NOW = kv_pb2.WatchValueRequest.NOW
SNAPSHOT = kv_pb2.WatchValueRequest.SNAPSHOT
BOOTSTRAP_DONE = kv_pb2.ValueEvent.BOOTSTRAP_DONE
PUT = kv_pb2.ValueEvent.PUT


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def write_many(channel, n, keys, start, value):
    """Pipelined SetValue of n values over `keys` keys; returns writes/s."""
    set_value = channel.unary_unary(
        "/reel.v1.KV/SetValue",
        request_serializer=kv_pb2.SetValueRequest.SerializeToString,
        response_deserializer=kv_pb2.SetValueResponse.FromString)
    pending = collections.deque()
    t0 = time.monotonic()
    for i in range(start, start + n):
        req = kv_pb2.SetValueRequest(namespace="load", key=f"load.k{i % keys}", value=value)
        pending.append(set_value.future(req, timeout=60))
        if len(pending) >= IN_FLIGHT:
            pending.popleft().result()
    while pending:
        pending.popleft().result()
    return n / (time.monotonic() - t0)


# A stalled reader's connection keeps HTTP/2's initial 64 KiB window: with
# BDP probing on, grpc grows it to megabytes, and 100 stalled tails then
# park hundreds of MiB in this client process, where gRPC's shared memory
# quota can stop reads on every connection, the readers' too.
STALLED_OPTIONS = [("grpc.use_local_subchannel_pool", 1), ("grpc.http2.bdp_probe", 0)]


def open_stalled(addr, key, start):
    """A watch on its own connection that nobody reads (yet)."""
    ch = grpc.insecure_channel(addr, options=STALLED_OPTIONS)
    watch = ch.unary_stream(
        "/reel.v1.KV/WatchValue",
        request_serializer=kv_pb2.WatchValueRequest.SerializeToString,
        response_deserializer=kv_pb2.ValueEvent.FromString)
    call = watch(kv_pb2.WatchValueRequest(namespace="load", key=key, start=start), timeout=300)
    return ch, call


def open_stalled_tail(addr):
    """A WAL subscription from revision 0 that nobody reads (yet)."""
    ch = grpc.insecure_channel(addr, options=STALLED_OPTIONS)
    sub = ch.unary_stream(
        "/reel.v1.Wal/SubscribeEvents",
        request_serializer=wal_pb2.SubscribeEventsRequest.SerializeToString,
        response_deserializer=wal_pb2.Event.FromString)
    return ch, sub(wal_pb2.SubscribeEventsRequest(from_revision=0), timeout=300)


def wait_answered(calls, limit_s):
    """Waits until the server has answered every call (its initial metadata
    arrived with the first message); returns the indexes still unanswered."""
    answered = set()

    def waiter():
        for i, c in enumerate(calls):
            c.initial_metadata()
            answered.add(i)

    t = threading.Thread(target=waiter, daemon=True)
    t.start()
    t.join(limit_s)
    return [i for i in range(len(calls)) if i not in answered]


def open_calls(addr):
    ch = grpc.insecure_channel(addr)
    try:
        return ch.unary_unary(
            "/reel.v1.Admin/GetStatus",
            request_serializer=admin_pb2.GetStatusRequest.SerializeToString,
            response_deserializer=admin_pb2.GetStatusResponse.FromString)(
                admin_pb2.GetStatusRequest(), timeout=10).open_calls
    finally:
        ch.close()


def drain(call, want, counts, limit_s):
    """Reads a stream until `want` events for which counts(ev) is true have
    arrived; returns (events, error). Counting, not waiting for a revision:
    pipelined writes may commit in another order than they were sent."""
    q = queue.Queue()

    def reader():
        n = 0
        try:
            for ev in call:
                q.put(ev)
                n += 1 if counts(ev) else 0
                if n >= want:
                    break
        except grpc.RpcError as e:
            q.put(e)
        q.put(None)

    threading.Thread(target=reader, daemon=True).start()
    events, deadline = [], time.monotonic() + limit_s
    while True:
        try:
            item = q.get(timeout=max(0.1, deadline - time.monotonic()))
        except queue.Empty:
            raise AssertionError(
                f"no event for {limit_s} s after {len(events)} events "
                f"(last: {events[-1] if events else None})") from None
        if item is None:
            return events, None
        if isinstance(item, grpc.RpcError):
            return events, item
        events.append(item)


def test_stalled_watchers_neither_grow_memory_nor_slow_100k_writes(tmp_path):
    value = json.dumps({"pad": "x" * 1000})
    server = Reeld(str(tmp_path / "data")).start()
    ch = grpc.insecure_channel(server.addr)
    try:
        # Baseline pace, no watchers (also warms RocksDB and the allocator).
        base_rate = write_many(ch, 20000, 10000, 0, value)
        rss0 = rss_mib(server.proc.pid)

        stalled = [open_stalled(server.addr, "load.k7", NOW),
                   open_stalled(server.addr, "load.>", NOW),
                   open_stalled(server.addr, ">", SNAPSHOT)]
        tails = [open_stalled_tail(server.addr) for _ in range(100)]
        # Every stream is open on the server before the writes start.
        late = wait_answered([call for _, call in stalled + tails], 60)
        assert not late, (f"the server never answered streams {late}; "
                          f"open calls: {open_calls(server.addr)}")

        peak, done = [rss0], threading.Event()

        def sampler():
            while not done.is_set():
                peak[0] = max(peak[0], rss_mib(server.proc.pid))
                time.sleep(0.05)

        s = threading.Thread(target=sampler, daemon=True)
        s.start()
        rate = write_many(ch, 100000, 10000, 20000, value)
        done.set()
        s.join()
        grown = peak[0] - rss0
        print(f"baseline {base_rate:.0f} writes/s; with 3 stalled watchers and "
              f"100 stalled WAL subscribers {rate:.0f} writes/s; "
              f"RSS {rss0:.0f} MiB, peak +{grown:.0f} MiB; "
              f"this client's RSS {rss_mib(os.getpid()):.0f} MiB")
        if not sanitized():
            assert rate >= 0.5 * base_rate, (rate, base_rate)
            assert grown < 150, f"reeld grew {grown:.0f} MiB with stalled watchers"

        # The exact-key watcher reads now: every version of its key, in order.
        _, exact = stalled[0]
        # Generous bounds: on a loaded 2-core machine the client's reader
        # threads compete with 100+ connections for the interpreter.
        events, err = drain(exact, 10, lambda e: e.type == PUT, 180)
        assert err is None, err
        puts = [e for e in events if e.type != BOOTSTRAP_DONE]
        assert [e.version for e in puts] == list(range(3, 3 + len(puts)))
        assert len(puts) == 10
        assert all(e.prev_version == e.version - 1 for e in puts)

        # The pattern watcher catches up from storage: all 100k, gapless.
        _, pattern = stalled[1]
        events, err = drain(pattern, 100000, lambda e: e.type == PUT, 180)
        assert err is None, err
        revs = [e.revision for e in events if e.type != BOOTSTRAP_DONE]
        assert len(revs) == 100000
        assert revs == list(range(revs[0], revs[0] + 100000))

        # A stalled WAL subscriber reads now: all 120k events, gapless.
        _, tail = tails[0]
        events, err = drain(tail, 120000, lambda e: e.type != wal_pb2.Event.PROGRESS, 180)
        assert err is None, err
        revs = [e.revision for e in events if e.type != wal_pb2.Event.PROGRESS]
        assert revs == list(range(1, 120001))

        for c, call in stalled + tails:
            call.cancel()
            c.close()
    finally:
        ch.close()
        code, _ = server.stop()
    assert code == 0, server.log()
