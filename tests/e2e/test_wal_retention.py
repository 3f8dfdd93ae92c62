"""WAL retention and durable consumers against real reeld processes:
acknowledgements never erase history (plain or filtered consumers), a
lagging consumer holds retention up to --wal-consumer-max-lag-bytes and is
then invalidated with a clear error, a stopped subscriber is found dead by
keepalive pings and its consumer freed, takeover, cursors past the head,
and a trim that cannot read the consumers trims nothing and says so once.
"""
import json
import os
import re
import signal
import subprocess
import threading
import time

import grpc
import pytest

from reel.v1 import kv_pb2 as K
from reel.v1 import wal_pb2 as W
from conftest import REELCTL, Reeld, reelctl, stream, unary

T = W.Event.Type
MAX_U64 = 2**64 - 1


class Client:
    def __init__(self, channel):
        u = lambda m, req, resp: unary(channel, f"/reel.v1.Wal/{m}", req, resp)
        self.set = unary(channel, "/reel.v1.KV/SetValue", K.SetValueRequest,
                         K.SetValueResponse)
        self.head = u("GetHead", W.GetHeadRequest, W.GetHeadResponse)
        self.ack = u("AckEvents", W.AckEventsRequest, W.AckEventsResponse)
        self.list = u("ListConsumers", W.ListConsumersRequest, W.ListConsumersResponse)
        self.rm = u("DeleteConsumer", W.DeleteConsumerRequest, W.DeleteConsumerResponse)
        self.sub = stream(channel, "/reel.v1.Wal/SubscribeEvents",
                          W.SubscribeEventsRequest, W.Event)
        self.batches = stream(channel, "/reel.v1.Wal/SubscribeEventBatches",
                              W.SubscribeEventsRequest, W.EventBatch)

    def consumers(self):
        return {c.name: c for c in self.list(W.ListConsumersRequest()).consumers}

    def oldest(self):
        return self.head(W.GetHeadRequest()).oldest_revision

    def last(self):
        return self.head(W.GetHeadRequest()).head_revision


@pytest.fixture
def start(tmp_path):
    """start(*flags): a reeld with those flags and a client, (server,
    client); each must exit 0 on SIGTERM at the end."""
    started = []

    def run(*flags):
        srv = Reeld(str(tmp_path / f"data{len(started)}"), extra=list(flags)).start()
        ch = grpc.insecure_channel(srv.addr)
        started.append((srv, ch))
        return srv, Client(ch)

    yield run
    for srv, ch in started:
        ch.close()
        if srv.proc.poll() is None:
            code, _ = srv.stop()
            assert code == 0, f"reeld exited {code} on SIGTERM:\n{srv.log()}"


def wait_for(what, cond, timeout=10.0):
    t0 = time.monotonic()
    while True:
        got = cond()
        if got:
            return got
        assert time.monotonic() - t0 < timeout, f"timed out waiting for {what}"
        time.sleep(0.05)


def ok(addr, *args):
    r = reelctl(addr, *args)
    assert r.returncode == 0, (args, r.stdout, r.stderr)
    return r.stdout


def first_error(call):
    with pytest.raises(grpc.RpcError) as e:
        for _ in call:
            pass
    return e.value


def create_consumer(c, name, pattern=""):
    """Creates consumer `name` at the head (before the writes that follow,
    so retention has nothing of theirs to trim first) and lets it go."""
    call = c.sub(W.SubscribeEventsRequest(consumer=name, subject_pattern=pattern),
                 timeout=30)
    wait_for(f"{name} created", lambda: name in c.consumers())
    call.cancel()
    wait_for(f"{name} released", lambda: not c.consumers()[name].active)


class Tail:
    """`reelctl events tail ARGS` in the background; stdout to a file."""

    def __init__(self, addr, path, *args):
        self.path = str(path)
        self.out = open(self.path, "w")
        self.proc = subprocess.Popen([REELCTL, "--addr", addr, "events", "tail"] + list(args),
                                     stdout=self.out, stderr=subprocess.PIPE, text=True)

    def lines(self):
        with open(self.path) as f:
            return [json.loads(l) for l in f.read().split("\n")[:-1]]

    def wait_lines(self, n, timeout=10.0):
        def enough():
            assert self.proc.poll() is None, self.proc.stderr.read()
            got = self.lines()
            return got if len(got) >= n else None
        return wait_for(f"{n} lines from events tail", enough, timeout)

    def stop(self):
        """Kills it if it runs (stopped or not); returns its stderr."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
        self.proc.wait()
        if not self.proc.stderr.closed:
            self.err = self.proc.stderr.read()
            self.proc.stderr.close()
            self.out.close()
        return self.err


# ---- Acknowledgements never erase history -----------------------------------

def test_a_consumer_acking_everything_leaves_the_history_for_a_plain_tail(start, tmp_path):
    srv, c = start()
    a = srv.addr
    for i in range(5):
        ok(a, "kv", "set", "ns", f"k{i}", str(i))
    indexer = Tail(a, tmp_path / "indexer.out", "--consumer", "indexer", "--ack")
    try:
        assert [e["revision"] for e in indexer.wait_lines(5)] == [1, 2, 3, 4, 5]
        wait_for("indexer acked 5", lambda: c.consumers()["indexer"].acked_revision == 5)
        time.sleep(2.1)  # two trimmer passes: their chance to trim wrongly
    finally:
        indexer.stop()
    assert c.oldest() == 1
    plain = Tail(a, tmp_path / "plain.out")
    try:
        assert [e["revision"] for e in plain.wait_lines(5)] == [1, 2, 3, 4, 5]
    finally:
        plain.stop()


def test_a_filtered_consumer_acks_progress_without_trimming_and_counts_only_its_events(
        start, tmp_path):
    srv, c = start()
    a = srv.addr
    create_consumer(c, "orders", "kv.a.>")
    for i in range(4):
        c.set(K.SetValueRequest(namespace="b", key=f"x{i}", value="1"))
    c.set(K.SetValueRequest(namespace="a", key="o1", value="1"))
    tail = Tail(a, tmp_path / "f.out", "--consumer", "orders", "--subject", "kv.a.>", "--ack")
    try:
        assert [e["subject"] for e in tail.wait_lines(1)] == ["kv.a.o1"]
        # The PROGRESS acks carry its cursor to the head, past kv.b.
        wait_for("orders acked 5", lambda: c.consumers()["orders"].acked_revision == 5)
        time.sleep(2.1)  # two trimmer passes: their chance to trim wrongly
    finally:
        tail.stop()
    wait_for("orders released", lambda: not c.consumers()["orders"].active)
    assert c.oldest() == 1  # the kv.b events it never wanted are still there
    for i in range(5):
        c.set(K.SetValueRequest(namespace="b", key=f"y{i}", value="1"))
    for i in range(2):
        c.set(K.SetValueRequest(namespace="a", key=f"p{i}", value="1"))
    got = c.consumers()["orders"]
    assert (got.pending, got.pending_exact, got.behind_revisions) == (2, True, 7)
    assert got.holding_bytes == 0 and not got.invalidated
    assert ok(a, "events", "consumers") == \
        "orders acked 5 pending 2 behind 7 (pattern kv.a.>)\n"
    js = json.loads(ok(a, "--json", "events", "consumers"))
    assert (js["pending"], js["pending_exact"], js["behind_revisions"]) == (2, True, 7)
    # Acknowledging answers the same count.
    r = c.ack(W.AckEventsRequest(consumer="orders", revision=11)).consumer
    assert (r.pending, r.pending_exact, r.behind_revisions) == (1, True, 1)


# ---- A lagging consumer: held up to its cap, then invalidated ----------------

PAD = json.dumps("x" * 500)  # events of ~600 bytes (distinct keys: no prev_value)


def test_a_lagging_consumer_holds_retention_up_to_its_cap_then_is_invalidated(start):
    srv, c = start("--wal-retention-bytes", "3000", "--wal-consumer-max-lag-bytes", "8000")
    create_consumer(c, "lag")
    # A subscriber that reads everything but never acknowledges.
    call = c.sub(W.SubscribeEventsRequest(consumer="lag"), timeout=60)
    seen, ended = [], {}

    def read():
        try:
            for ev in call:
                seen.append(ev.revision)
        except grpc.RpcError as e:
            ended["code"], ended["details"] = e.code(), e.details()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    for i in range(8):  # ~4,800 bytes: over the 3,000 retained, under 8,000
        c.set(K.SetValueRequest(namespace="n", key=f"a{i}", value=PAD))
    held = wait_for("lag holding", lambda: c.consumers()["lag"].holding_bytes > 3000 and
                    c.consumers()["lag"])
    assert held.holding_bytes <= 8000 and not held.invalidated and held.active
    assert c.oldest() == 1
    assert re.match(r"^lag acked 0 pending 8 holding \d+ bytes active$",
                    ok(srv.addr, "events", "consumers").strip())

    for i in range(8):  # now ~9,600 bytes unacknowledged: over its cap
        c.set(K.SetValueRequest(namespace="n", key=f"b{i}", value=PAD))
    gone = wait_for("lag invalidated", lambda: c.consumers()["lag"].invalidated and
                    c.consumers()["lag"])
    oldest = c.oldest()
    assert oldest > 1  # the limits trim again
    assert gone.acked_revision == 0 and gone.invalidated_at_ms > 0
    assert "more than the 8000" in gone.invalidated_reason, gone.invalidated_reason
    assert gone.holding_bytes == 0 and gone.pending == 0
    # Its subscriber was ended, saying why.
    reader.join(10)
    assert ended.get("code") == grpc.StatusCode.FAILED_PRECONDITION, ended
    assert 'consumer "lag" was invalidated' in ended["details"]
    wait_for("lag released", lambda: not c.consumers()["lag"].active)
    line = ok(srv.addr, "events", "consumers")
    assert line.startswith("lag acked 0 pending 0 invalidated at "), line
    assert "more than the 8000" in line

    # No subscribing or acknowledging as it: the error says how to go on.
    e = first_error(c.sub(W.SubscribeEventsRequest(consumer="lag"), timeout=10))
    assert e.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert 'consumer "lag"' in e.details()
    assert "acknowledged up to revision 0" in e.details()
    assert f"oldest retained revision is {oldest}" in e.details()
    assert "rm-consumer lag" in e.details()
    with pytest.raises(grpc.RpcError) as e:
        c.ack(W.AckEventsRequest(consumer="lag", revision=3))
    assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    r = reelctl(srv.addr, "events", "tail", "--consumer", "lag")
    assert r.returncode == 1 and "FAILED_PRECONDITION" in r.stderr, r.stderr

    # Deleted, it starts over from the oldest retained.
    assert ok(srv.addr, "events", "rm-consumer", "lag") == "deleted consumer lag\n"
    again = c.sub(W.SubscribeEventsRequest(consumer="lag"), timeout=10)
    assert next(again).revision == c.oldest()
    again.cancel()
    assert "invalidated" in srv.log()  # and reeld said so


# ---- Dead peers and takeover -------------------------------------------------

# Idle, the server's ping goes out after keepalive-time and finds no
# answer. Busy, the data the stopped peer never reads fills its window and
# both socket buffers first (about 2 s here), so the ping (at 4 s) waits
# behind it and cannot be answered by design: the connection must still end
# within about keepalive-timeout of the peer's window closing (the server's
# TCP_USER_TIMEOUT, which gRPC sets to it, counts a zero window as no
# answer).
KEEPALIVE = {"idle": ("1s", "1s"), "busy": ("4s", "1s")}


@pytest.mark.parametrize("traffic", ["idle", "busy"])
def test_a_stopped_subscriber_is_found_dead_and_its_consumer_freed(start, tmp_path, traffic):
    time_, timeout = KEEPALIVE[traffic]
    srv, c = start("--keepalive-time", time_, "--keepalive-timeout", timeout)
    a = srv.addr
    ok(a, "kv", "set", "ns", "k", "1")
    sub = Tail(a, tmp_path / "stopped.out", "--consumer", "x")
    try:
        sub.wait_lines(1)
        sub.proc.send_signal(signal.SIGSTOP)
        t0 = time.monotonic()
        r = reelctl(a, "events", "rm-consumer", "x")
        assert r.returncode == 1 and "FAILED_PRECONDITION" in r.stderr, r.stderr
        if traffic == "busy":
            # Fill the stream's window and both socket buffers: the server's
            # pings then wait behind data the stopped peer never reads.
            big = json.dumps("y" * 200000)
            for i in range(300):
                c.set(K.SetValueRequest(namespace="ns", key=f"big{i}", value=big))
            t0 = time.monotonic()   # from the last write (seconds under ASan)
        # Found dead within seconds, not 40 s (the defaults) or never.
        wait_for("x released", lambda: not c.consumers()["x"].active, timeout=8)
        took = time.monotonic() - t0
        # A new subscriber gets the consumer, and rm-consumer works.
        nxt = Tail(a, tmp_path / "next.out", "--consumer", "x")
        try:
            assert nxt.wait_lines(1)[0]["revision"] == 1
        finally:
            nxt.stop()
        wait_for("x released", lambda: not c.consumers()["x"].active)
        assert ok(a, "events", "rm-consumer", "x") == "deleted consumer x\n"
        assert took < 8
    finally:
        sub.stop()


def test_takeover_ends_the_holder_aborted_and_resumes_after_the_ack(start, tmp_path):
    srv, c = start()
    a = srv.addr
    for i in range(3):
        ok(a, "kv", "set", "ns", f"k{i}", str(i))
    first = Tail(a, tmp_path / "first.out", "--consumer", "tk", "--ack")
    second = None
    try:
        first.wait_lines(3)
        wait_for("tk acked 3", lambda: c.consumers()["tk"].acked_revision == 3)
        r = reelctl(a, "events", "tail", "--consumer", "tk")
        assert r.returncode == 1 and "FAILED_PRECONDITION" in r.stderr, r.stderr
        assert "takeover" in r.stderr, r.stderr
        ok(a, "kv", "set", "ns", "k3", "3")
        first.wait_lines(4)
        wait_for("tk acked 4", lambda: c.consumers()["tk"].acked_revision == 4)
        # The holder hangs (stopped: what --takeover is for), so it cannot
        # ack revision 5 before the takeover, as it would 500 ms after its
        # last ack when the two reelctl starts below are slow.
        first.proc.send_signal(signal.SIGSTOP)
        ok(a, "kv", "set", "ns", "k4", "4")
        second = Tail(a, tmp_path / "second.out", "--consumer", "tk", "--takeover")
        # The new one resumes after the last acknowledged revision.
        assert [e["revision"] for e in second.wait_lines(1)] == [5]
        assert c.consumers()["tk"].active
        # The holder's stream ended ABORTED, saying it was taken over.
        first.proc.send_signal(signal.SIGCONT)
        assert first.proc.wait(timeout=10) == 1
        err = first.stop()
        assert "ABORTED" in err and 'consumer "tk" was taken over' in err, err
    finally:
        first.stop()
        if second is not None:
            second.stop()
    r = reelctl(a, "events", "tail", "--takeover")
    assert r.returncode == 2 and "--takeover needs --consumer" in r.stderr, r.stderr
    e = first_error(c.sub(W.SubscribeEventsRequest(takeover=True), timeout=5))
    assert e.code() == grpc.StatusCode.INVALID_ARGUMENT and "takeover" in e.details()


def test_resume_after_starts_a_consumers_stream_past_what_it_holds(start):
    """A subscriber that ends its stream and starts another (reel-sink and
    reel-reactor do, while their queue stays full) holds the events it had
    already: resume_after starts the stream after them, where without it
    everything since the acknowledged revision came again (every 2 s, a
    whole queue's worth). The cursor does not move."""
    srv, c = start()
    for i in range(6):
        c.set(K.SetValueRequest(namespace="n", key=f"k{i}", value=str(i)))
    create_consumer(c, "held")
    c.ack(W.AckEventsRequest(consumer="held", revision=6))
    for i in range(6, 12):
        c.set(K.SetValueRequest(namespace="n", key=f"k{i}", value=str(i)))
    assert c.consumers()["held"].acked_revision == 6
    for sub, flat in ((c.sub, lambda m: [m]), (c.batches, lambda m: list(m.events))):
        call = sub(W.SubscribeEventsRequest(consumer="held", resume_after=9), timeout=10)
        got = []
        for m in call:
            got += [e.revision for e in flat(m) if e.type != T.PROGRESS]
            if got and got[-1] == 12:
                break
        call.cancel()
        assert got == [10, 11, 12]
        wait_for("released", lambda: not c.consumers()["held"].active)
        assert c.consumers()["held"].acked_revision == 6
    # Below the acknowledged revision it changes nothing: after the ack.
    call = c.sub(W.SubscribeEventsRequest(consumer="held", resume_after=2), timeout=10)
    assert next(call).revision == 7
    call.cancel()
    wait_for("released", lambda: not c.consumers()["held"].active)
    for req, want in ((W.SubscribeEventsRequest(consumer="held", resume_after=13),
                       "resume_after: 13 is past the head revision 12"),
                      (W.SubscribeEventsRequest(resume_after=3),
                       "resume_after: only with a durable consumer")):
        e = first_error(c.sub(req, timeout=5))
        assert e.code() == grpc.StatusCode.INVALID_ARGUMENT and want in e.details(), \
            e.details()


def test_takeover_frees_a_consumer_whose_subscriber_hangs(start, tmp_path):
    # Default keepalive (30 s + 10 s): takeover does not wait for it.
    srv, c = start()
    ok(srv.addr, "kv", "set", "ns", "k", "1")
    hung = Tail(srv.addr, tmp_path / "hung.out", "--consumer", "h")
    try:
        hung.wait_lines(1)
        hung.proc.send_signal(signal.SIGSTOP)
        # Not deleted under its subscriber: the refusal says how to go on.
        r = reelctl(srv.addr, "events", "rm-consumer", "h")
        assert r.returncode == 1 and "FAILED_PRECONDITION" in r.stderr, r.stderr
        assert "subscribe as it with takeover, then delete" in r.stderr, r.stderr
        call = c.batches(W.SubscribeEventsRequest(consumer="h", takeover=True), timeout=10)
        t0 = time.monotonic()
        assert next(call).events[0].revision == 1
        assert time.monotonic() - t0 < 3
        call.cancel()
        wait_for("h released", lambda: reelctl(srv.addr, "events", "rm-consumer",
                                                "h").returncode == 0)
        assert "h" not in c.consumers()
    finally:
        hung.stop()


# ---- Cursors past the head ----------------------------------------------------

def test_cursors_past_the_head_are_invalid_argument_naming_it(start):
    srv, c = start("--wal-retention-bytes", "200")
    for i in range(5):
        c.set(K.SetValueRequest(namespace="n", key=f"k{i}", value=json.dumps("v" * 40)))
    wait_for("the oldest trimmed", lambda: c.oldest() > 1)
    for frm in (6, 1005, MAX_U64):
        for sub in (c.sub, c.batches):
            e = first_error(sub(W.SubscribeEventsRequest(from_revision=frm), timeout=5))
            assert e.code() == grpc.StatusCode.INVALID_ARGUMENT, (frm, e.details())
            assert "from_revision" in e.details() and "head revision 5" in e.details()
            e = first_error(sub(W.SubscribeEventsRequest(from_revision=frm, consumer="new"),
                                timeout=5))
            assert e.code() == grpc.StatusCode.INVALID_ARGUMENT, (frm, e.details())
            assert "head revision 5" in e.details()
    assert c.consumers() == {}  # nothing was created along the way
    r = reelctl(srv.addr, "--json", "events", "tail", "--from", str(MAX_U64))
    assert r.returncode == 1 and json.loads(r.stderr)["error"] == "INVALID_ARGUMENT", r.stderr
    # The head itself: only what comes next (a PROGRESS for 5, nothing past it).
    call = c.sub(W.SubscribeEventsRequest(from_revision=5), timeout=10)
    ev = next(call)
    assert (ev.type, ev.revision) == (T.PROGRESS, 5)
    call.cancel()


def test_a_cursor_before_an_empty_retention_is_sent_to_the_head(start):
    """Nothing up to the head retained: OUT_OF_RANGE names the head as the
    cursor to start from, never a revision past it."""
    srv, c = start("--wal-retention-age", "1s")
    for i in range(5):
        c.set(K.SetValueRequest(namespace="n", key=f"k{i}", value="1"))
    wait_for("everything trimmed", lambda: c.oldest() == 0, timeout=30)
    for sub in (c.sub, c.batches):
        e = first_error(sub(W.SubscribeEventsRequest(from_revision=3), timeout=5))
        assert e.code() == grpc.StatusCode.OUT_OF_RANGE, e.details()
        assert e.details() == ("from_revision: revision 3 is no longer retained, nor "
                               "is any up to the head revision 5 (from_revision 5, or "
                               "0, starts at the next change)"), e.details()
    e = first_error(c.sub(W.SubscribeEventsRequest(from_revision=3, consumer="late"),
                          timeout=5))
    assert e.code() == grpc.StatusCode.OUT_OF_RANGE and "head revision 5" in e.details()
    call = c.sub(W.SubscribeEventsRequest(from_revision=5), timeout=10)
    ev = next(call)
    assert (ev.type, ev.revision) == (T.PROGRESS, 5)
    call.cancel()


# ---- A trim that cannot read the consumers ------------------------------------

def test_a_trim_that_cannot_list_the_consumers_trims_nothing_and_logs_once(tmp_path, monkeypatch):
    monkeypatch.setenv("REEL_TEST_FAULTS", "wal.consumers*0")
    srv = Reeld(str(tmp_path / "data"), extra=["--wal-retention-bytes", "1"]).start()
    monkeypatch.delenv("REEL_TEST_FAULTS")
    ch = grpc.insecure_channel(srv.addr)
    c = Client(ch)
    try:
        create = c.sub(W.SubscribeEventsRequest(consumer="held"), timeout=30)
        # Its first PROGRESS (revision 0): the consumer exists, before any
        # event the trimmer could take.
        assert next(create).type == T.PROGRESS
        for i in range(5):
            c.set(K.SetValueRequest(namespace="n", key=f"k{i}", value="1"))
        failed = "trimming the WAL failed"
        wait_for("the failure logged", lambda: failed in srv.log())
        time.sleep(2.1)  # two more trimmer passes, which must not log again
        assert srv.log().count(failed) == 1, srv.log()
        assert "out of memory reading consumer" in srv.log()
        assert c.oldest() == 1  # nothing trimmed
        # The listing fails too: never a shorter list than there is.
        with pytest.raises(grpc.RpcError) as e:
            c.list(W.ListConsumersRequest())
        assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        create.cancel()
    finally:
        ch.close()
        assert srv.stop()[0] == 0
