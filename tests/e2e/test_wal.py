"""The WAL tail: every committed change once, in commit order, resumable."""
import json
import queue
import threading
import time

import grpc
import pytest

from reel.v1 import journal_pb2 as J
from reel.v1 import kv_pb2 as K
from reel.v1 import signals_pb2 as S
from reel.v1 import wal_pb2 as W
from conftest import Reeld, sanitized, unary

T = W.Event.Type


class Client:
    def __init__(self, channel):
        u = lambda svc, m, req, resp: unary(channel, f"/reel.v1.{svc}/{m}", req, resp)
        self.begin = u("Journal", "BeginRun", J.BeginRunRequest, J.Run)
        self.append = u("Journal", "Append", J.AppendRequest, J.AppendResponse)
        self.set = u("KV", "SetValue", K.SetValueRequest, K.SetValueResponse)
        self.send = u("Signals", "SendSignal", S.SendSignalRequest, S.SendSignalResponse)
        self.await_ = u("Signals", "AwaitSignal", S.AwaitSignalRequest, S.AwaitSignalResponse)
        self.head = u("Wal", "GetHead", W.GetHeadRequest, W.GetHeadResponse)
        self.sub = channel.unary_stream(
            "/reel.v1.Wal/SubscribeEvents",
            request_serializer=W.SubscribeEventsRequest.SerializeToString,
            response_deserializer=W.Event.FromString)


def collect(client, until, from_revision=0, pattern="", limit_s=30, keep_progress=False):
    """Events until one with revision >= until (PROGRESS left out)."""
    call = client.sub(W.SubscribeEventsRequest(from_revision=from_revision,
                                               subject_pattern=pattern), timeout=limit_s)
    out = []
    try:
        for ev in call:
            if ev.type == T.PROGRESS:
                if keep_progress:
                    out.append(ev)
                if ev.revision >= until:
                    break
                continue
            out.append(ev)
            if ev.revision >= until:
                break
    finally:
        call.cancel()
    return out


@pytest.fixture
def client(channel):
    return Client(channel)


def mixed_load(client, worker, n):
    run = client.begin(J.BeginRunRequest(app="w", user=f"u{worker}", session="s",
                                         invocation_id="i", lease_owner=f"w{worker}"))
    for i in range(n):
        client.append(J.AppendRequest(run_id=run.run_id, lease_epoch=1, kind="step",
                                      payload=json.dumps({"w": worker, "i": i})))
        client.set(K.SetValueRequest(namespace="wal", key=f"w{worker}.k{i % 5}",
                                     value=json.dumps(i)))
        client.send(S.SendSignalRequest(run_id=run.run_id, name="go", payload=json.dumps(i)))
        r = client.await_(S.AwaitSignalRequest(run_id=run.run_id, name="go", lease_epoch=1))
        assert r.delivered
    return run.run_id


def test_mixed_load_is_seen_once_in_commit_order_with_its_bodies(client):
    runs, errors = [None] * 4, []

    def worker(k):
        try:
            runs[k] = mixed_load(client, k, 25)
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    head = client.head(W.GetHeadRequest()).head_revision
    events = collect(client, head)
    assert [e.revision for e in events] == list(range(1, head + 1))
    kinds = {}
    for e in events:
        kinds[e.type] = kinds.get(e.type, 0) + 1
    # Per worker: 1 run begun, 25 appends + 25 signal entries, 25 sets,
    # 25 sends, 25 consumptions.
    assert kinds[T.RUN_CHANGED] == 4
    assert kinds[T.JOURNAL_APPENDED] == 4 * 50
    assert kinds[T.VALUE_CHANGED] == 4 * 25
    assert kinds[T.SIGNAL_SENT] == 4 * 25
    assert kinds[T.SIGNAL_CONSUMED] == 4 * 25
    for e in events:
        body = e.WhichOneof("body")
        if e.type == T.VALUE_CHANGED:
            assert body == "value" and e.subject == f"kv.wal.{e.value.key}"
            assert e.value.revision == e.revision
        elif e.type == T.JOURNAL_APPENDED:
            assert body == "entry" and e.entry.revision == e.revision
            assert e.subject == f"journal.{e.entry.run_id}.{e.entry.kind}"
        elif e.type in (T.SIGNAL_SENT, T.SIGNAL_CONSUMED):
            assert body == "signal"
            what = "sent" if e.type == T.SIGNAL_SENT else "consumed"
            assert e.subject == f"signal.{e.signal.run_id}.go.{what}"
        else:
            assert body == "run" and e.subject == f"run.{e.run.run_id}.RUNNING"
    # Each run's appends arrive in seq order, each with what was written.
    for k, run_id in enumerate(runs):
        steps = [json.loads(e.entry.payload) for e in events
                 if e.type == T.JOURNAL_APPENDED and e.entry.run_id == run_id
                 and e.entry.kind == "step"]
        assert steps == [{"w": k, "i": i} for i in range(25)]


def test_subject_filters_select_exactly_the_matching_events(client):
    run = client.begin(J.BeginRunRequest(app="a", user="u", session="s",
                                         invocation_id="i", lease_owner="w"))
    for key in ("orders.eu.1", "orders.us.2", "orders", "users.1"):
        client.set(K.SetValueRequest(namespace="shop", key=key, value="1"))
    client.append(J.AppendRequest(run_id=run.run_id, lease_epoch=1, kind="tool.call",
                                  payload="{}"))
    head = client.head(W.GetHeadRequest()).head_revision
    # A filtered stream reaches the head with a PROGRESS event, at the
    # second tick (2 s in; the first finds matches sent): 10 s for it.
    subjects = lambda p: [e.subject for e in collect(client, head, pattern=p, limit_s=10)
                          if e.revision <= head]
    assert subjects("kv.shop.orders.>") == ["kv.shop.orders.eu.1", "kv.shop.orders.us.2"]
    assert subjects("kv.*.users.*") == ["kv.shop.users.1"]
    assert subjects(f"journal.{run.run_id}.>") == [f"journal.{run.run_id}.tool.call"]
    assert subjects("run.*.RUNNING") == [f"run.{run.run_id}.RUNNING"]
    assert len(subjects("")) == head


def test_malformed_patterns_are_invalid_argument(client):
    # With an empty token even without a wildcard: no subject has one, so
    # such a pattern waited for nothing, without a word.
    for bad in ("a.>.b", "a..*", ".>", "kv..app", ".kv", "kv.app."):
        call = client.sub(W.SubscribeEventsRequest(subject_pattern=bad), timeout=5)
        with pytest.raises(grpc.RpcError) as e:
            next(call)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "subject_pattern" in e.value.details()


def test_catch_up_then_live_with_writes_during_the_switch(client):
    for i in range(300):
        client.set(K.SetValueRequest(namespace="n", key=f"k{i % 7}", value=str(i)))
    stop = threading.Event()

    def writer():
        i = 0
        while not stop.is_set() and i < 2000:
            client.set(K.SetValueRequest(namespace="n", key=f"k{i % 7}", value=str(i)))
            i += 1

    t = threading.Thread(target=writer)
    t.start()
    time.sleep(0.05)
    got = queue.Queue()
    call = client.sub(W.SubscribeEventsRequest(from_revision=0), timeout=60)

    def reader():
        try:
            for ev in call:
                if ev.type != T.PROGRESS:
                    got.put(ev.revision)
        except grpc.RpcError:
            pass

    r = threading.Thread(target=reader, daemon=True)
    r.start()
    time.sleep(0.5)
    stop.set()
    t.join()
    head = client.head(W.GetHeadRequest()).head_revision
    revs = []
    deadline = time.monotonic() + 30
    while (not revs or revs[-1] < head) and time.monotonic() < deadline:
        revs.append(got.get(timeout=10))
    call.cancel()
    assert revs == list(range(1, head + 1))


def test_progress_arrives_while_idle(client):
    client.set(K.SetValueRequest(namespace="n", key="k", value="1"))
    call = client.sub(W.SubscribeEventsRequest(from_revision=0), timeout=10)
    t0 = time.monotonic()
    first = next(call)
    assert first.type == T.VALUE_CHANGED
    progress = next(call)
    assert progress.type == T.PROGRESS and progress.revision == 1
    # A tick every second, the first skipped when something was just
    # sent: about 2 s (room for a slow sanitized build).
    assert time.monotonic() - t0 < (5 if sanitized() else 3)
    call.cancel()


def test_events_survive_a_restart_and_resume_from_a_revision(tmp_path):
    server = Reeld(str(tmp_path / "data")).start()
    ch = grpc.insecure_channel(server.addr)
    c = Client(ch)
    for i in range(10):
        c.set(K.SetValueRequest(namespace="n", key="k", value=str(i)))
    ch.close()
    assert server.stop()[0] == 0
    server = Reeld(str(tmp_path / "data")).start()
    ch = grpc.insecure_channel(server.addr)
    c = Client(ch)
    try:
        c.set(K.SetValueRequest(namespace="n", key="k", value="10"))
        head = c.head(W.GetHeadRequest())
        assert (head.head_revision, head.oldest_revision) == (11, 1)
        events = collect(c, 11, from_revision=6)
        assert [e.revision for e in events] == [7, 8, 9, 10, 11]
        assert [e.value.value for e in events] == ["6", "7", "8", "9", "10"]
        assert [e.value.prev_value for e in events] == ["5", "6", "7", "8", "9"]
    finally:
        ch.close()
        assert server.stop()[0] == 0


def add_consumer_calls(c, channel):
    c.ack = unary(channel, "/reel.v1.Wal/AckEvents", W.AckEventsRequest, W.AckEventsResponse)
    c.consumers = unary(channel, "/reel.v1.Wal/ListConsumers", W.ListConsumersRequest,
                        W.ListConsumersResponse)
    c.rm = unary(channel, "/reel.v1.Wal/DeleteConsumer", W.DeleteConsumerRequest,
                 W.DeleteConsumerResponse)
    return c


def until_released(c, consumer, timeout=10):
    """Waits until the server saw `consumer`'s subscriber end (a cancelled
    call's end reaches it a moment later)."""
    deadline = time.monotonic() + timeout
    while any(x.name == consumer and x.active
              for x in c.consumers(W.ListConsumersRequest()).consumers):
        assert time.monotonic() < deadline, f"{consumer} still active"
        time.sleep(0.02)


def read_n(c, n, consumer, from_revision=0):
    """Reads n events as `consumer`, then disconnects (no ack)."""
    call = c.sub(W.SubscribeEventsRequest(consumer=consumer, from_revision=from_revision),
                 timeout=20)
    out = []
    for ev in call:
        if ev.type != T.PROGRESS:
            out.append(ev.revision)
            if len(out) == n:
                break
    call.cancel()
    return out


def test_durable_consumer_resumes_after_its_last_ack(tmp_path):
    server, ch, c = start_with_consumers(tmp_path)
    try:
        for i in range(80):
            c.set(K.SetValueRequest(namespace="n", key=f"k{i}", value=str(i)))
        assert read_n(c, 50, "indexer") == list(range(1, 51))
        r = c.ack(W.AckEventsRequest(consumer="indexer", revision=30))
        assert r.consumer.acked_revision == 30 and r.consumer.pending == 50
        # Acks never move back.
        assert c.ack(W.AckEventsRequest(consumer="indexer", revision=10)).consumer.acked_revision == 30
        until_released(c, "indexer")  # the first subscriber's end reached the server
        assert read_n(c, 5, "indexer") == [31, 32, 33, 34, 35]
        listed = c.consumers(W.ListConsumersRequest()).consumers
        assert [(x.name, x.acked_revision) for x in listed] == [("indexer", 30)]
    finally:
        ch.close()
        assert server.stop()[0] == 0
    # And after a restart.
    server, ch, c = start_with_consumers(tmp_path)
    try:
        assert read_n(c, 3, "indexer") == [31, 32, 33]
    finally:
        ch.close()
        assert server.stop()[0] == 0


def test_one_active_subscriber_per_consumer(channel, client):
    c = add_consumer_calls(client, channel)
    c.set(K.SetValueRequest(namespace="n", key="k", value="1"))
    first = c.sub(W.SubscribeEventsRequest(consumer="solo"), timeout=20)
    assert next(first).revision == 1
    second = c.sub(W.SubscribeEventsRequest(consumer="solo"), timeout=5)
    with pytest.raises(grpc.RpcError) as e:
        next(second)
    assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "solo" in e.value.details()
    with pytest.raises(grpc.RpcError) as e:
        c.rm(W.DeleteConsumerRequest(name="solo"))
    assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert c.consumers(W.ListConsumersRequest()).consumers[0].active
    first.cancel()
    deadline = time.monotonic() + 5
    while c.consumers(W.ListConsumersRequest()).consumers[0].active:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    c.rm(W.DeleteConsumerRequest(name="solo"))
    assert list(c.consumers(W.ListConsumersRequest()).consumers) == []
    with pytest.raises(grpc.RpcError) as e:
        c.rm(W.DeleteConsumerRequest(name="solo"))
    assert e.value.code() == grpc.StatusCode.NOT_FOUND


def test_durable_consumers_are_capped_in_number(tmp_path):
    server, ch, c = start_with_consumers(tmp_path, "--wal-max-consumers", "2")
    try:
        c.set(K.SetValueRequest(namespace="n", key="k", value="1"))
        assert read_n(c, 1, "one") == [1] and read_n(c, 1, "two") == [1]
        call = c.sub(W.SubscribeEventsRequest(consumer="three"), timeout=5)
        with pytest.raises(grpc.RpcError) as e:
            next(call)
        assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "at most 2 (--wal-max-consumers)" in e.value.details()
        until_released(c, "one")
        assert read_n(c, 1, "one") == [1]   # an existing one still subscribes
        assert [x.name for x in c.consumers(W.ListConsumersRequest()).consumers] == \
            ["one", "two"]
        deadline = time.monotonic() + 5     # the last subscriber's end
        while any(x.active for x in c.consumers(W.ListConsumersRequest()).consumers):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        c.rm(W.DeleteConsumerRequest(name="one"))
        assert read_n(c, 1, "three") == [1]
    finally:
        ch.close()
        assert server.stop()[0] == 0


def test_consumer_input_is_checked(channel, client):
    c = add_consumer_calls(client, channel)
    for bad in ("has space", "x" * 129):
        call = c.sub(W.SubscribeEventsRequest(consumer=bad), timeout=5)
        with pytest.raises(grpc.RpcError) as e:
            next(call)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "consumer" in e.value.details()
    # Each message names the request's own field: DeleteConsumer's is name.
    for bad in ("", "has space", "x" * 129):
        with pytest.raises(grpc.RpcError) as e:
            c.rm(W.DeleteConsumerRequest(name=bad))
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert e.value.details().startswith("name: "), e.value.details()
    with pytest.raises(grpc.RpcError) as e:
        c.ack(W.AckEventsRequest(consumer="ghost", revision=1))
    assert e.value.code() == grpc.StatusCode.NOT_FOUND
    c.set(K.SetValueRequest(namespace="n", key="k", value="1"))
    read_n(c, 1, "real")
    with pytest.raises(grpc.RpcError) as e:
        c.ack(W.AckEventsRequest(consumer="real", revision=99))
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "past the head" in e.value.details()


def test_a_consumer_holds_retention_at_its_cursor_and_trimmed_revisions_are_out_of_range(
        tmp_path):
    # Retention alone would keep nothing; the consumer holds what follows
    # its cursor, and its acks let the limits take the rest.
    server, ch, c = start_with_consumers(tmp_path, "--wal-retention-bytes", "1")
    try:
        # Created before the writes, so retention has none of them to take
        # first.
        call = c.sub(W.SubscribeEventsRequest(consumer="only"), timeout=20)
        deadline = time.monotonic() + 10
        while not c.consumers(W.ListConsumersRequest()).consumers:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        call.cancel()
        for i in range(40):
            c.set(K.SetValueRequest(namespace="n", key="k", value=str(i)))
        c.ack(W.AckEventsRequest(consumer="only", revision=25))
        deadline = time.monotonic() + 10
        while c.head(W.GetHeadRequest()).oldest_revision != 26:
            assert time.monotonic() < deadline, c.head(W.GetHeadRequest())
            time.sleep(0.1)
        call = c.sub(W.SubscribeEventsRequest(from_revision=3), timeout=5)
        with pytest.raises(grpc.RpcError) as e:
            next(call)
        assert e.value.code() == grpc.StatusCode.OUT_OF_RANGE
        assert "26" in e.value.details()
        assert [e.revision for e in collect(c, 40, from_revision=25)][:2] == [26, 27]
    finally:
        ch.close()
        assert server.stop()[0] == 0


def start_with_consumers(tmp_path, *extra):
    """A reeld on tmp_path/data and a client with the consumer calls:
    (server, channel, client)."""
    server = Reeld(str(tmp_path / "data"), extra=list(extra)).start()
    ch = grpc.insecure_channel(server.addr)
    return server, ch, add_consumer_calls(Client(ch), ch)


def past_byte_retention(tmp_path):
    """A reeld keeping 20,000 bytes of events, after 100 writes of ~1 KiB
    events and until retention trimmed the oldest: (server, channel, client)."""
    server, ch, c = start_with_consumers(tmp_path, "--wal-retention-bytes", "20000")
    pad = json.dumps("x" * 900)
    for i in range(100):
        c.set(K.SetValueRequest(namespace="n", key=f"k{i}", value=pad))
    deadline = time.monotonic() + 10
    while c.head(W.GetHeadRequest()).oldest_revision < 70:
        assert time.monotonic() < deadline, c.head(W.GetHeadRequest())
        time.sleep(0.1)
    return server, ch, c


def test_retention_caps_bytes_without_consumers(tmp_path):
    server, ch, c = past_byte_retention(tmp_path)
    try:
        head = c.head(W.GetHeadRequest())
        assert head.head_revision == 100
        # Roughly 20000 bytes of ~1 KiB events remain, the newest ones.
        assert 80 <= head.oldest_revision <= 100
        events = collect(c, 100, from_revision=head.oldest_revision - 1)
        assert [e.revision for e in events] == list(range(head.oldest_revision, 101))
    finally:
        ch.close()
        assert server.stop()[0] == 0


def test_a_long_catch_up_its_pattern_refuses_reports_progress(tmp_path, monkeypatch):
    """A subscriber whose pattern refuses a long backlog heard nothing until
    reeld had read all of it, so a client took the silence for a server
    gone. reeld reads such a catch-up in parts (here of 64 refused events,
    each held 200 ms) and its ticks report how far it got."""
    monkeypatch.setenv("REEL_TEST_FAULTS",
                       "wal.replay_part_end*0,wal.replay_part_pause*0")
    server = Reeld(str(tmp_path / "data")).start()
    ch = grpc.insecure_channel(server.addr)
    c = Client(ch)
    try:
        pending = []
        for i in range(13 * 64 + 30):
            pending.append(c.set.future(K.SetValueRequest(
                namespace="bulk", key=f"k{i}", value=str(i))))
            if len(pending) >= 64:
                pending.pop(0).result(timeout=30)
        for f in pending:
            f.result(timeout=30)
        wanted = c.set(K.SetValueRequest(namespace="wanted", key="k", value="1")).entry
        got = collect(c, wanted.revision, pattern="kv.wanted.>", limit_s=60,
                      keep_progress=True)
        assert got[-1].type == T.VALUE_CHANGED
        assert got[-1].revision == wanted.revision
        progress = [e.revision for e in got[:-1]]
        assert all(e.type == T.PROGRESS for e in got[:-1])
        # Ticks during a scan of 13 parts (2.6 s): each one further.
        assert len(progress) >= 2, progress
        assert progress == sorted(set(progress)), progress
        assert 0 < progress[0] and progress[-1] < wanted.revision, progress
    finally:
        ch.close()
        assert server.stop()[0] == 0
