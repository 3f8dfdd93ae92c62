"""Responses sized by bytes: every paged read stops before the response
budget (--max-response-bytes, default 4 MiB, what a gRPC client receives by
default), holds at least one item, says there is more and where to go on.

Everything here reads through grpcio channels with their default limits
(4 MiB received a message), so a page the server built too large would fail
in the client with RESOURCE_EXHAUSTED, and each test also checks the sizes
itself: every page within the budget, and no page ended early (the next
item would not have fit). reelctl reads the same data through gRPC's C
core with its default limits too.
"""
import os
import re
import subprocess
import threading
import time

import grpc
import pytest

from reel.v1 import journal_pb2 as J
from reel.v1 import kv_pb2 as K
from reel.v1 import signals_pb2 as S
from reel.v1 import wal_pb2 as W
from conftest import REELD, Reeld, reelctl, sanitized, stream, unary

MIB = 1 << 20
BUDGET = 4 * MIB         # reeld's default --max-response-bytes
RESERVE = 256            # bytes a page keeps for its cursor and flags
T = 30                   # seconds: the bound on one call
LONG_TTL = 600000


def big_json(i, size=MIB):
    """A JSON string of exactly `size` bytes that says which one it is."""
    head = f'"{i:06d}'
    return head + "x" * (size - len(head) - 1) + '"'


def framed(n):
    """What an item of n encoded bytes adds to a repeated field."""
    return 1 + len(varint(n)) + n


def varint(n):
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def check_pages(pages, items_of, budget=BUDGET):
    """Every page within the budget with at least one item; every page that
    says more was full: the next page's first item would not have fit."""
    for i, page in enumerate(pages):
        size = page.ByteSize()
        assert size <= budget, f"page {i}: {size} bytes, over {budget}"
        assert len(items_of(page)) >= 1, f"page {i} is empty"
        if page.more:
            nxt = items_of(pages[i + 1])[0].ByteSize()
            assert size + framed(nxt) > budget - RESERVE, (
                f"page {i} ended early: {size} bytes and the next item "
                f"({nxt} bytes) would have fit")
    assert not pages[-1].more


def follow(call, req, items_of, advance, limit=50):
    """Every page from req on, advancing the cursor with advance(req, page)."""
    pages = []
    while True:
        page = call(req, timeout=T)
        pages.append(page)
        if not page.more:
            return pages
        assert len(pages) < limit, "too many pages"
        advance(req, page)


# --------------------------------------------------------------------------
# one reeld holding big items of every kind, shared by the reading tests


class Data:
    pass


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    server = Reeld(str(tmp_path_factory.mktemp("paging") / "data")).start()
    ch = grpc.insecure_channel(server.addr)
    d = Data()
    d.server, d.ch = server, ch
    try:
        setv = unary(ch, "/reel.v1.KV/SetValue", K.SetValueRequest, K.SetValueResponse)
        begin = unary(ch, "/reel.v1.Journal/BeginRun", J.BeginRunRequest, J.Run)
        append = unary(ch, "/reel.v1.Journal/Append", J.AppendRequest, J.AppendResponse)
        end = unary(ch, "/reel.v1.Journal/EndRun", J.EndRunRequest, J.Run)
        send = unary(ch, "/reel.v1.Signals/SendSignal", S.SendSignalRequest,
                     S.SendSignalResponse)
        await_ = unary(ch, "/reel.v1.Signals/AwaitSignal", S.AwaitSignalRequest,
                       S.AwaitSignalResponse)

        # KV: 20 values of 1 MiB; one key with 12 versions of 1 MiB.
        d.values = {f"k{i:03d}": big_json(i) for i in range(20)}
        for k, v in d.values.items():
            setv(K.SetValueRequest(namespace="big", key=k, value=v), timeout=T)
        d.versions = [big_json(100 + i) for i in range(12)]
        for v in d.versions:
            setv(K.SetValueRequest(namespace="hist", key="h", value=v), timeout=T)

        # Journal: a run with five 1 MiB entries.
        run = begin(J.BeginRunRequest(app="pg", user="u", session="s",
                                      invocation_id="journal", lease_owner="w",
                                      lease_ttl_ms=LONG_TTL), timeout=T)
        d.run_id, d.epoch = run.run_id, run.lease_epoch
        d.payloads = [big_json(200 + i) for i in range(5)]
        for p in d.payloads:
            append(J.AppendRequest(run_id=d.run_id, lease_epoch=d.epoch, kind="step",
                                   payload=p), timeout=T)

        # Signals: six of 1 MiB to one run, the first two consumed.
        run = begin(J.BeginRunRequest(app="pg", user="u", session="s",
                                      invocation_id="signals", lease_owner="w",
                                      lease_ttl_ms=LONG_TTL), timeout=T)
        d.sig_run = run.run_id
        d.signals = [big_json(300 + i) for i in range(6)]
        for p in d.signals:
            send(S.SendSignalRequest(run_id=d.sig_run, name="go", payload=p), timeout=T)
        for want in d.signals[:2]:
            got = await_(S.AwaitSignalRequest(run_id=d.sig_run, name="go",
                                              lease_epoch=run.lease_epoch), timeout=T)
            assert got.delivered and got.signal.payload == want

        # Runs with 1 MiB results.
        d.results = {}
        for i in range(5):
            r = begin(J.BeginRunRequest(app="results", user="u", session="s",
                                        invocation_id=f"r{i}", lease_owner="w",
                                        lease_ttl_ms=LONG_TTL), timeout=T)
            d.results[r.run_id] = big_json(400 + i)
            end(J.EndRunRequest(run_id=r.run_id, lease_epoch=r.lease_epoch,
                                status=J.Run.COMPLETED, result=d.results[r.run_id]),
                timeout=T)

        # 70 runs to recover, each with 64 labels of 1 KiB (about 68 KiB a
        # run): more than one response's worth, under the count limit.
        labels = {f"l{j:02d}": "v" * 1024 for j in range(64)}
        d.recover = []
        for i in range(70):
            r = begin(J.BeginRunRequest(app="recover", user="u", session="s",
                                        invocation_id=f"x{i}", lease_owner="gone",
                                        lease_ttl_ms=1, labels=labels), timeout=T)
            d.recover.append(r.run_id)
        time.sleep(0.01)  # let the last 1 ms lease expire
        yield d
    finally:
        ch.close()
        code, _ = server.stop()
        assert code == 0, server.log()


# --------------------------------------------------------------------------
# each paged read


def test_list_values_pages_stop_at_the_budget(big):
    call = unary(big.ch, "/reel.v1.KV/ListValues", K.ListValuesRequest,
                 K.ListValuesResponse)

    def advance(req, page):
        assert page.next_start_after == page.entries[-1].key
        req.start_after = page.next_start_after

    pages = follow(call, K.ListValuesRequest(namespace="big"), lambda p: p.entries,
                   advance)
    check_pages(pages, lambda p: p.entries)
    got = [(e.key, e.value) for p in pages for e in p.entries]
    assert got == sorted(big.values.items())
    assert len(pages) > 1 and max(len(p.entries) for p in pages) > 1


def test_value_history_pages_stop_at_the_budget(big):
    call = unary(big.ch, "/reel.v1.KV/ValueHistory", K.ValueHistoryRequest,
                 K.ValueHistoryResponse)

    def advance(req, page):
        assert page.next_from_version == page.events[-1].version
        req.from_version = page.next_from_version

    pages = follow(call, K.ValueHistoryRequest(namespace="hist", key="h"),
                   lambda p: p.events, advance)
    check_pages(pages, lambda p: p.events)
    events = [e for p in pages for e in p.events]
    assert [e.version for e in events] == list(range(1, 13))
    assert [e.value for e in events] == big.versions
    assert [e.prev_value for e in events] == [""] + big.versions[:-1]


def test_read_journal_pages_stop_at_the_budget(big):
    call = unary(big.ch, "/reel.v1.Journal/ReadJournal", J.ReadJournalRequest,
                 J.ReadJournalResponse)

    def advance(req, page):
        assert page.next_from_seq == page.entries[-1].seq
        req.from_seq = page.next_from_seq

    pages = follow(call, J.ReadJournalRequest(run_id=big.run_id), lambda p: p.entries,
                   advance)
    check_pages(pages, lambda p: p.entries)
    entries = [e for p in pages for e in p.entries]
    assert [e.seq for e in entries] == [1, 2, 3, 4, 5]
    assert [e.payload for e in entries] == big.payloads
    assert len(pages) > 1


def test_list_signals_pages_stop_at_the_budget(big):
    call = unary(big.ch, "/reel.v1.Signals/ListSignals", S.ListSignalsRequest,
                 S.ListSignalsResponse)

    def advance(req, page):
        last = page.signals[-1]
        assert page.next_after_seq == last.seq
        assert page.next_after_consumed == (last.consumed_at_ms > 0)
        req.after_seq = page.next_after_seq
        req.after_consumed = page.next_after_consumed

    req = S.ListSignalsRequest(run_id=big.sig_run, include_consumed=True)
    pages = follow(call, req, lambda p: p.signals, advance)
    check_pages(pages, lambda p: p.signals)
    got = [(g.seq, g.consumed_at_ms > 0, g.payload) for p in pages for g in p.signals]
    # Pending first in send order, then consumed.
    assert got == ([(i + 1, False, big.signals[i]) for i in range(2, 6)] +
                   [(i + 1, True, big.signals[i]) for i in range(2)])
    # Pending only.
    pages = follow(call, S.ListSignalsRequest(run_id=big.sig_run), lambda p: p.signals,
                   advance)
    check_pages(pages, lambda p: p.signals)
    assert [g.seq for p in pages for g in p.signals] == [3, 4, 5, 6]


def test_list_runs_pages_stop_at_the_budget(big):
    call = unary(big.ch, "/reel.v1.Journal/ListRuns", J.ListRunsRequest,
                 J.ListRunsResponse)

    def advance(req, page):
        assert page.next_start_after == page.runs[-1].run_id
        req.start_after = page.next_start_after

    pages = follow(call, J.ListRunsRequest(app="results"), lambda p: p.runs, advance)
    check_pages(pages, lambda p: p.runs)
    got = {r.run_id: r.result for p in pages for r in p.runs}
    assert [r.run_id for p in pages for r in p.runs] == sorted(big.results)
    assert got == big.results
    # Many runs with big labels: the bytes end the page before the count.
    pages = follow(call, J.ListRunsRequest(app="recover"), lambda p: p.runs, advance)
    check_pages(pages, lambda p: p.runs)
    assert [r.run_id for p in pages for r in p.runs] == big.recover
    assert len(pages) == 2


def test_list_runs_to_recover_pages_by_cursor_and_budget(big):
    call = unary(big.ch, "/reel.v1.Journal/ListRunsToRecover",
                 J.ListRunsToRecoverRequest, J.ListRunsToRecoverResponse)

    def advance(req, page):
        assert page.next_start_after == page.runs[-1].run_id
        req.start_after = page.next_start_after

    pages = follow(call, J.ListRunsToRecoverRequest(), lambda p: p.runs, advance)
    check_pages(pages, lambda p: p.runs)
    assert [r.run_id for p in pages for r in p.runs] == big.recover
    assert len(pages) == 2 and len(pages[0].runs) < 70
    # By count, with the cursor: 30 a page, the last one not claiming more.
    pages = follow(call, J.ListRunsToRecoverRequest(limit=30), lambda p: p.runs, advance)
    assert [len(p.runs) for p in pages] == [30, 30, 10]
    assert [r.run_id for p in pages for r in p.runs] == big.recover
    pages = follow(call, J.ListRunsToRecoverRequest(limit=35), lambda p: p.runs, advance)
    assert [len(p.runs) for p in pages] == [35, 35]
    with pytest.raises(grpc.RpcError) as e:
        call(J.ListRunsToRecoverRequest(start_after="nope"), timeout=T)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "start_after" in e.value.details()


def test_a_page_steps_over_at_most_ten_thousand_runs(tmp_path):
    """ListRunsToRecover among many running runs, and ListRuns of one user
    among another's: a page steps over at most 10,000 runs that do not
    match, then ends saying more, its next_start_after past them (not the
    last run it holds), so one call's reads are bounded whatever the data.
    Following the cursor gives every run, once."""
    server = Reeld(str(tmp_path / "data")).start()
    ch = grpc.insecure_channel(server.addr)
    try:
        begin = unary(ch, "/reel.v1.Journal/BeginRun", J.BeginRunRequest, J.Run)
        recover = unary(ch, "/reel.v1.Journal/ListRunsToRecover",
                        J.ListRunsToRecoverRequest, J.ListRunsToRecoverResponse)
        runs = unary(ch, "/reel.v1.Journal/ListRuns", J.ListRunsRequest,
                     J.ListRunsResponse)

        def one(inv, user="u", ttl=LONG_TTL):
            return begin(J.BeginRunRequest(app="a", user=user, session="s",
                                           invocation_id=inv, lease_owner="w",
                                           lease_ttl_ms=ttl), timeout=T).run_id

        first = one("first", ttl=200)
        pending = []
        for i in range(10050):  # running, their leases long
            pending.append(begin.future(J.BeginRunRequest(
                app="a", user="u", session="s", invocation_id=f"r{i}",
                lease_owner="w", lease_ttl_ms=LONG_TTL), timeout=T))
            if len(pending) == 256:
                [f.result() for f in pending]
                pending = []
        [f.result() for f in pending]
        last = one("last", user="v", ttl=200)
        get = unary(ch, "/reel.v1.Journal/GetRun", J.GetRunRequest, J.Run)
        deadline = time.monotonic() + T
        for rid in (first, last):  # both short leases end: recoverable
            while get(J.GetRunRequest(run_id=rid), timeout=T).status != J.Run.RUNNABLE:
                assert time.monotonic() < deadline, "a lease never expired"
                time.sleep(0.05)

        def advance(req, page):
            # The caller's own runs: plain run ids, never sealed (api/cursor.h).
            assert not page.next_start_after.startswith("~")
            assert page.next_start_after > req.start_after
            if page.runs:
                assert page.next_start_after >= page.runs[-1].run_id
            req.start_after = page.next_start_after

        def pages_of(call, req):
            return follow(call, req, lambda p: p.runs, advance, limit=10)

        pages = pages_of(recover, J.ListRunsToRecoverRequest())
        assert [[r.run_id for r in p.runs] for p in pages] == [[first], [last]], \
            [len(p.runs) for p in pages]
        assert pages[0].next_start_after > first
        pages = pages_of(runs, J.ListRunsRequest(app="a", user="v"))
        assert [len(p.runs) for p in pages] == [0, 1]
        assert pages[1].runs[0].run_id == last
        # A page that finds enough stops at its limit, as before.
        page = runs(J.ListRunsRequest(app="a", user="u", limit=1000), timeout=T)
        assert len(page.runs) == 1000 and page.more
        assert page.next_start_after == page.runs[-1].run_id
    finally:
        ch.close()
        server.stop()


def test_list_consumers_pages_by_cursor(big):
    setv = unary(big.ch, "/reel.v1.KV/SetValue", K.SetValueRequest, K.SetValueResponse)
    sub = stream(big.ch, "/reel.v1.Wal/SubscribeEvents", W.SubscribeEventsRequest,
                 W.Event)
    call = unary(big.ch, "/reel.v1.Wal/ListConsumers", W.ListConsumersRequest,
                 W.ListConsumersResponse)
    setv(K.SetValueRequest(namespace="c", key="k", value="1"), timeout=T)
    head = unary(big.ch, "/reel.v1.Wal/GetHead", W.GetHeadRequest,
                 W.GetHeadResponse)(W.GetHeadRequest(), timeout=T).head_revision
    names = [f"cons-{i}" for i in range(5)]
    for name in names:
        # The consumer exists once its first event arrives.
        it = sub(W.SubscribeEventsRequest(from_revision=head - 1, consumer=name),
                 timeout=T)
        next(it)
        it.cancel()

    def advance(req, page):
        assert page.next_start_after == page.consumers[-1].name
        req.start_after = page.next_start_after

    # The old request (no fields) still gets every consumer.
    page = call(W.ListConsumersRequest(), timeout=T)
    assert [c.name for c in page.consumers] == names and not page.more
    pages = follow(call, W.ListConsumersRequest(limit=2), lambda p: p.consumers, advance)
    assert [[c.name for c in p.consumers] for p in pages] == [names[:2], names[2:4],
                                                               names[4:]]
    pages = follow(call, W.ListConsumersRequest(limit=5), lambda p: p.consumers, advance)
    assert len(pages) == 1 and not pages[0].more


# --------------------------------------------------------------------------
# reelctl, with gRPC's default limits


def test_reelctl_reads_big_items_whole(big):
    a = big.server.addr

    def ok(*args):
        r = reelctl(a, *args, timeout=120)
        assert r.returncode == 0, r.stderr
        return r.stdout.splitlines()

    lines = ok("kv", "ls", "big")
    assert len(lines) == len(big.values)
    for line, (k, v) in zip(lines, sorted(big.values.items())):
        assert line.startswith(k) and v in line
    lines = ok("kv", "history", "hist", "h")
    assert len(lines) == 12
    for line, v in zip(lines, big.versions):
        assert v in line
    lines = ok("journal", "read", big.run_id)
    assert len(lines) == 5
    for i, (line, p) in enumerate(zip(lines, big.payloads)):
        assert line.startswith(f"{i + 1} step ") and p in line
    lines = ok("signal", "ls", big.sig_run, "--consumed")
    assert len(lines) == 6
    lines = ok("run", "ls", "--app", "results")
    assert len(lines) == 5
    lines = ok("run", "recoverable")
    assert len(lines) == 70 and all(r in l for r, l in zip(big.recover, lines))
    # --limit still asks for one page, and says how to go on.
    r = reelctl(a, "kv", "ls", "big", "--limit", "2")
    assert r.returncode == 0 and len(r.stdout.splitlines()) == 2
    assert "--start-after k001" in r.stderr
    r = reelctl(a, "kv", "ls", "big", "--limit", "5", "--all", timeout=120)
    assert r.returncode == 0 and len(r.stdout.splitlines()) == 20


# --------------------------------------------------------------------------
# memory, and the flag


def test_concurrent_big_lists_keep_reeld_memory_bounded(tmp_path):
    if sanitized():
        pytest.skip("RSS means nothing under ASan's quarantine")
    server = Reeld(str(tmp_path / "data")).start()
    ch = grpc.insecure_channel(server.addr)
    try:
        setv = unary(ch, "/reel.v1.KV/SetValue", K.SetValueRequest, K.SetValueResponse)
        n = 60
        for i in range(n):
            setv(K.SetValueRequest(namespace="m", key=f"k{i:03d}", value=big_json(i)),
                 timeout=T)
        base = rss_mib(server.proc.pid)
        peak, done, errors = [base], threading.Event(), []

        def sample():
            while not done.is_set():
                peak[0] = max(peak[0], rss_mib(server.proc.pid))
                time.sleep(0.005)

        def client():
            c = grpc.insecure_channel(server.addr)
            call = unary(c, "/reel.v1.KV/ListValues", K.ListValuesRequest,
                         K.ListValuesResponse)
            try:
                for _ in range(2):
                    req, seen = K.ListValuesRequest(namespace="m"), 0
                    while True:
                        page = call(req, timeout=60)
                        seen += len(page.entries)
                        if not page.more:
                            break
                        req.start_after = page.next_start_after
                    assert seen == n
            except Exception as e:  # reported below
                errors.append(e)
            finally:
                c.close()

        sampler = threading.Thread(target=sample)
        sampler.start()
        clients = [threading.Thread(target=client) for _ in range(8)]
        for t in clients:
            t.start()
        for t in clients:
            t.join(timeout=300)
        done.set()
        sampler.join()
        growth = peak[0] - base
        # Whole pages (60 MiB of values, packed again, copied into gRPC's
        # buffer) would take about 180 MiB a client, 1.4 GiB for eight;
        # pages of 4 MiB take a few MiB each.
        assert growth < 300, f"reeld grew {growth:.0f} MiB listing 8 x {n} MiB"
        assert not errors, errors
    finally:
        ch.close()
        code, _ = server.stop()
        assert code == 0, server.log()


def refused(tmp_path, args, env=None):
    r = subprocess.run([REELD, "--data-dir", str(tmp_path / "refused"),
                        "--listen", "127.0.0.1:0"] + args,
                       capture_output=True, text=True, timeout=10,
                       env=dict(os.environ, **(env or {})))
    return r


@pytest.mark.parametrize("args,env,names", [
    (["--kv-max-value-bytes", str(3 * MIB)], None,
     ["--kv-max-value-bytes", "--max-response-bytes"]),
    (["--journal-max-payload-bytes", str(5 * MIB)], None,
     ["--journal-max-payload-bytes", "--max-response-bytes"]),
    (["--max-response-bytes", str(MIB)], None,
     ["--kv-max-value-bytes", "--max-response-bytes"]),
    ([], {"REEL_MAX_RESPONSE_BYTES": str(MIB)},
     ["--kv-max-value-bytes", "--max-response-bytes"]),
])
def test_reeld_refuses_limits_whose_items_cannot_fit_the_budget(tmp_path, args, env,
                                                                 names):
    r = refused(tmp_path, args, env)
    assert r.returncode == 2, (r.returncode, r.stderr)
    # Both flags named, and how large one item can get.
    assert re.search(r"can be \d+ bytes encoded", r.stderr), r.stderr
    for name in names:
        assert name in r.stderr, r.stderr
    assert not os.path.exists(tmp_path / "refused")  # refused before touching it


def test_a_smaller_budget_makes_smaller_pages(tmp_path):
    budget = MIB
    server = Reeld(str(tmp_path / "data"),
                   extra=["--max-response-bytes", str(budget),
                          "--kv-max-value-bytes", "200000",
                          "--journal-max-payload-bytes", "200000"]).start()
    ch = grpc.insecure_channel(server.addr)
    try:
        setv = unary(ch, "/reel.v1.KV/SetValue", K.SetValueRequest, K.SetValueResponse)
        call = unary(ch, "/reel.v1.KV/ListValues", K.ListValuesRequest,
                     K.ListValuesResponse)
        values = {f"k{i:02d}": big_json(i, 200000) for i in range(12)}
        for k, v in values.items():
            setv(K.SetValueRequest(namespace="s", key=k, value=v), timeout=T)

        def advance(req, page):
            req.start_after = page.next_start_after

        pages = follow(call, K.ListValuesRequest(namespace="s"), lambda p: p.entries,
                       advance)
        check_pages(pages, lambda p: p.entries, budget)
        assert [(e.key, e.value) for p in pages for e in p.entries] == \
            sorted(values.items())
        assert [len(p.entries) for p in pages] == [5, 5, 2]
    finally:
        ch.close()
        code, _ = server.stop()
        assert code == 0, server.log()


def test_a_record_stored_under_larger_limits_is_refused_clearly(tmp_path):
    data = str(tmp_path / "data")
    server = Reeld(data).start()
    ch = grpc.insecure_channel(server.addr)
    setv = unary(ch, "/reel.v1.KV/SetValue", K.SetValueRequest, K.SetValueResponse)
    setv(K.SetValueRequest(namespace="o", key="a", value="1"), timeout=T)
    setv(K.SetValueRequest(namespace="o", key="big", value=big_json(1)), timeout=T)
    ch.close()
    assert server.stop()[0] == 0
    # Restarted with limits under which that value could not be written.
    server = Reeld(data, extra=["--max-response-bytes", str(MIB // 2),
                                "--kv-max-value-bytes", "100000",
                                "--journal-max-payload-bytes", "100000"]).start()
    ch = grpc.insecure_channel(server.addr)
    try:
        getv = unary(ch, "/reel.v1.KV/GetValue", K.GetValueRequest, K.GetValueResponse)
        call = unary(ch, "/reel.v1.KV/ListValues", K.ListValuesRequest,
                     K.ListValuesResponse)
        with pytest.raises(grpc.RpcError) as e:
            getv(K.GetValueRequest(namespace="o", key="big"), timeout=T)
        assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "--max-response-bytes" in e.value.details(), e.value.details()
        # The page before it is fine, and stops before it.
        page = call(K.ListValuesRequest(namespace="o"), timeout=T)
        assert [x.key for x in page.entries] == ["a"] and page.more
        with pytest.raises(grpc.RpcError) as e:
            call(K.ListValuesRequest(namespace="o", start_after="a"), timeout=T)
        assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "--max-response-bytes" in e.value.details(), e.value.details()
        assert getv(K.GetValueRequest(namespace="o", key="a"), timeout=T).found
    finally:
        ch.close()
        code, _ = server.stop()
        assert code == 0, server.log()
