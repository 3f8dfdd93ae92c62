"""Cursors a client gives (KV watch revisions and versions, SubscribeRun
seqs) and replays that cannot read what they owe, end to end through
Python's grpcio.

A cursor past the head is refused naming the head, 2^64-1 neither wraps
nor is misreported, and a record a replay cannot read ends the stream with
DATA_LOSS or INTERNAL naming it: never a skipped record, never an OK end
with entries missing, never a stream that waits for nothing.

Faults are armed with REEL_TEST_FAULTS on a fresh reeld per case. The
points used here are hit only by replays (kv.decode, journal.decode: a
stored record that does not decode) or only by reads (store.snapshot), so
start-up and the test's own writes leave their counts alone.
"""
import grpc
import pytest

from reel.v1 import journal_pb2 as J
from reel.v1 import kv_pb2 as K
from conftest import Reeld, stream, unary

PUT = K.ValueEvent.PUT
BOOTSTRAP_DONE = K.ValueEvent.BOOTSTRAP_DONE
SNAPSHOT = K.WatchValueRequest.SNAPSHOT
NOW = K.WatchValueRequest.NOW
FROM_VERSION = K.WatchValueRequest.FROM_VERSION
FROM_REVISION = K.WatchValueRequest.FROM_REVISION

U64_MAX = 2**64 - 1
T = 10          # seconds: the bound on a unary call
DEADLINE = 10   # seconds: the bound on a stream; a stall ends in DEADLINE_EXCEEDED

KINDS = ["WatchValue", "WatchValueBatches", "WatchValues", "WatchValuesBatches"]


# --------------------------------------------------------------------------
# helpers


def kv_set(ch, key, value, ns="c"):
    call = unary(ch, "/reel.v1.KV/SetValue", K.SetValueRequest, K.SetValueResponse)
    return call(K.SetValueRequest(namespace=ns, key=key, value=value), timeout=T)


def W(key, start, ns="c", **kw):
    return K.WatchValueRequest(namespace=ns, key=key, start=start, **kw)


class Stream:
    """One watch stream of any of the four kinds, read as (watch, ValueEvent)
    pairs. `watches` is the list of requests: a single-watch kind takes the
    one request; a multi-watch kind takes them all."""

    def __init__(self, ch, kind, watches):
        multi = kind.startswith("WatchValues")
        out = {"WatchValue": K.ValueEvent,
               "WatchValueBatches": K.ValueEventBatch,
               "WatchValues": K.WatchValuesEvent,
               "WatchValuesBatches": K.WatchValuesEventBatch}[kind]
        if multi:
            call = stream(ch, f"/reel.v1.KV/{kind}", K.WatchValuesRequest, out)
            self.call = call(K.WatchValuesRequest(watches=watches), timeout=DEADLINE)
        else:
            assert len(watches) == 1
            call = stream(ch, f"/reel.v1.KV/{kind}", K.WatchValueRequest, out)
            self.call = call(watches[0], timeout=DEADLINE)
        self.it = self._events(kind)

    def _events(self, kind):
        for m in self.call:
            if kind == "WatchValue":
                yield 0, m
            elif kind == "WatchValueBatches":
                for e in m.events:
                    yield 0, e
            elif kind == "WatchValues":
                yield m.watch, m.event
            else:
                for x in m.events:
                    yield x.watch, x.event

    def next(self):
        return next(self.it)

    def until_error(self):
        """Every event up to the stream's error; the error."""
        got = []
        with pytest.raises(grpc.RpcError) as e:
            for pair in self.it:
                got.append(pair)
        return got, e.value

    def cancel(self):
        self.call.cancel()


def fmt(e):
    return f"{e.code().name}: {e.details()}"


def expect_refused(ch, kind, watches, code, details):
    """The stream ends at once with code and exactly details, sending nothing."""
    got, e = Stream(ch, kind, watches).until_error()
    assert got == [], got
    assert e.code() == code, fmt(e)
    assert e.details() == details, fmt(e)


@pytest.fixture
def chan(reeld):
    ch = grpc.insecure_channel(reeld.addr)
    yield ch
    ch.close()


@pytest.fixture
def faulty(tmp_path, monkeypatch):
    """Starts a fresh reeld with REEL_TEST_FAULTS=spec; yields a channel."""
    started = []

    def start(spec):
        monkeypatch.setenv("REEL_TEST_FAULTS", spec)
        server = Reeld(str(tmp_path / "data")).start()
        monkeypatch.delenv("REEL_TEST_FAULTS")
        ch = grpc.insecure_channel(server.addr)
        started.append((server, ch))
        return ch

    yield start
    for server, ch in started:
        ch.close()
        code, _ = server.stop()
        assert code == 0, f"reeld exited {code} on SIGTERM:\n{server.log()}"


# --------------------------------------------------------------------------
# KV watches: past the head, 2^64-1


@pytest.mark.parametrize("kind", KINDS)
def test_watch_from_a_revision_past_the_head_is_refused_naming_it(chan, kind):
    for i in range(5):
        kv_set(chan, "k", str(i))                       # head: revision 5
    multi = kind.startswith("WatchValues")
    for cursor in (1005, U64_MAX):
        watches = [W("k", FROM_REVISION, from_revision=cursor)]
        prefix = ""
        if multi:   # a valid watch first: the error names the bad one
            watches.insert(0, W("k", NOW))
            prefix = "watches[1]: "
        expect_refused(chan, kind, watches, grpc.StatusCode.INVALID_ARGUMENT,
                       f"{prefix}from_revision: {cursor} is past the head revision 5")
        # A pattern too: the head is the same for every key.
        watches[-1] = W("p.>", FROM_REVISION, from_revision=cursor)
        expect_refused(chan, kind, watches, grpc.StatusCode.INVALID_ARGUMENT,
                       f"{prefix}from_revision: {cursor} is past the head revision 5")
    # The head itself is a cursor: nothing to replay, then live.
    s = Stream(chan, kind, [W("k", FROM_REVISION, from_revision=5)])
    _, boot = s.next()
    assert boot.type == BOOTSTRAP_DONE and boot.revision == 5, boot
    kv_set(chan, "k", "6")
    _, ev = s.next()
    assert (ev.type, ev.version, ev.revision) == (PUT, 6, 6), ev
    s.cancel()


@pytest.mark.parametrize("kind", KINDS)
def test_watch_from_version_2_64_minus_1_does_not_wrap_to_version_1(chan, kind):
    for i in range(3):
        kv_set(chan, "k", str(i))
    # As from any version past the current one: nothing replayed (version 1
    # was, before), BOOTSTRAP_DONE, then live.
    s = Stream(chan, kind, [W("k", FROM_VERSION, from_version=U64_MAX)])
    _, boot = s.next()
    assert boot.type == BOOTSTRAP_DONE and boot.revision == 3, boot
    kv_set(chan, "k", "3")
    _, ev = s.next()
    assert (ev.type, ev.version) == (PUT, 4), ev
    s.cancel()
    # ValueHistory from there: an empty page, not the history from version 1.
    hist = unary(chan, "/reel.v1.KV/ValueHistory", K.ValueHistoryRequest,
                 K.ValueHistoryResponse)
    r = hist(K.ValueHistoryRequest(namespace="c", key="k", from_version=U64_MAX), timeout=T)
    assert list(r.events) == [] and not r.more, r


# --------------------------------------------------------------------------
# KV watches: a record the replay cannot read


@pytest.mark.parametrize("kind", KINDS)
def test_a_corrupt_history_record_ends_a_version_replay_with_data_loss(faulty, kind):
    ch = faulty("kv.decode@2*1")    # the third record a replay decodes
    for i in range(5):
        kv_set(ch, "k", str(i))     # versions 1-5 at revisions 1-5
    got, e = Stream(ch, kind, [W("k", FROM_VERSION, from_version=0)]).until_error()
    # Versions 1 and 2, then the end naming version 3: not 4, 5 and
    # BOOTSTRAP_DONE as if 3 never was.
    assert [ev.version for _, ev in got] == [1, 2], got
    assert e.code() == grpc.StatusCode.DATA_LOSS, fmt(e)
    prefix = "watches[0]: " if kind.startswith("WatchValues") else ""
    assert e.details() == (f'{prefix}key "k": the history record of version 3 '
                           f'(revision 3) is corrupt'), fmt(e)


@pytest.mark.parametrize("kind", ["WatchValue", "WatchValuesBatches"])
def test_a_corrupt_history_record_ends_a_pattern_replay_with_data_loss(faulty, kind):
    ch = faulty("kv.decode@1*1")
    for key in ("p.a", "q.x", "p.b", "p.c"):
        kv_set(ch, key, "1")        # revisions 1-4
    watches = [W("p.>", FROM_REVISION, from_revision=0)]
    got, e = Stream(ch, kind, watches).until_error()
    assert [ev.key for _, ev in got] == ["p.a"], got
    assert e.code() == grpc.StatusCode.DATA_LOSS, fmt(e)
    assert e.details().endswith("the history record of revision 2 is corrupt"), fmt(e)


@pytest.mark.parametrize("kind", ["WatchValueBatches", "WatchValues"])
def test_a_corrupt_entry_ends_a_snapshot_with_data_loss(faulty, kind):
    ch = faulty("kv.decode@1*1")
    for key in ("p.a", "p.b", "p.c"):
        kv_set(ch, key, "1")
    got, e = Stream(ch, kind, [W("p.>", SNAPSHOT)]).until_error()
    assert [ev.key for _, ev in got] == ["p.a"], got
    assert e.code() == grpc.StatusCode.DATA_LOSS, fmt(e)
    assert e.details().endswith('the stored record of key "p.b" is corrupt'), fmt(e)


# --------------------------------------------------------------------------
# SubscribeRun


class Run:
    def __init__(self, ch):
        def m(name, req, resp):
            return unary(ch, f"/reel.v1.Journal/{name}", req, resp)

        self._begin = m("BeginRun", J.BeginRunRequest, J.Run)
        self._append = m("Append", J.AppendRequest, J.AppendResponse)
        self._read = m("ReadJournal", J.ReadJournalRequest, J.ReadJournalResponse)
        self._sub = stream(ch, "/reel.v1.Journal/SubscribeRun", J.SubscribeRunRequest,
                           J.JournalEntry)
        self.id = self._begin(J.BeginRunRequest(
            app="a", user="u", session="s", invocation_id="i", lease_owner="w"),
            timeout=T).run_id

    def append(self, n=1):
        for _ in range(n):
            self._append(J.AppendRequest(run_id=self.id, lease_epoch=1, kind="step",
                                         payload="{}"), timeout=T)

    def subscribe(self, from_seq):
        return self._sub(J.SubscribeRunRequest(run_id=self.id, from_seq=from_seq),
                         timeout=DEADLINE)

    def read(self, from_seq):
        return self._read(J.ReadJournalRequest(run_id=self.id, from_seq=from_seq),
                          timeout=T)


def entries_until_error(call):
    got = []
    with pytest.raises(grpc.RpcError) as e:
        for entry in call:
            got.append(entry.seq)
    return got, e.value


def test_subscribe_run_past_the_last_seq_is_refused_naming_it(chan):
    run = Run(chan)
    run.append(5)
    for cursor in (6, 1005, U64_MAX):
        got, e = entries_until_error(run.subscribe(cursor))
        assert got == [], got
        assert e.code() == grpc.StatusCode.INVALID_ARGUMENT, fmt(e)
        assert e.details() == f"from_seq: {cursor} is past the run's last seq 5", fmt(e)
    # The last seq itself: nothing stored to send, then the next entry.
    sub = run.subscribe(5)
    run.append()
    assert next(sub).seq == 6
    sub.cancel()
    # A read past the end stays an empty page (it skips nothing), 2^64-1
    # included.
    for cursor in (1005, U64_MAX):
        r = run.read(cursor)
        assert list(r.entries) == [] and not r.more and r.next_from_seq == cursor, r


def test_a_corrupt_entry_ends_subscribe_run_with_data_loss(faulty):
    ch = faulty("journal.decode@2*1")
    run = Run(ch)
    run.append(5)
    got, e = entries_until_error(run.subscribe(0))
    # Seqs 1 and 2, then the end naming 3: not a live stream that never
    # sends 3 to 5.
    assert got == [1, 2], got
    assert e.code() == grpc.StatusCode.DATA_LOSS, fmt(e)
    assert e.details() == f"run {run.id}: journal entry 3 is corrupt", fmt(e)


def test_a_failed_snapshot_ends_subscribe_run_instead_of_waiting(faulty):
    ch = faulty("store.snapshot@0*1")
    run = Run(ch)
    run.append(2)
    got, e = entries_until_error(run.subscribe(0))
    # Nothing was queued, so no drain would ever have pumped it again: the
    # stream used to wait until its deadline.
    assert got == [], got
    assert e.code() == grpc.StatusCode.INTERNAL, fmt(e)
    assert e.details().startswith(f"run {run.id}: replaying after seq 0: "), fmt(e)
    assert "injected fault" in e.details(), fmt(e)
