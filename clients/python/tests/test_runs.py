"""Runs, leases and journals through the client, sync and async: begin,
append, read, follow across a restart, suspend and claim, heartbeats, and
a lost lease stopping every write."""
import asyncio
import gc
import threading
import time

import pytest

import reel
import reel.aio


def _wait_for(cond, timeout=10.0, what="condition"):
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.01)


def test_begin_append_read_and_end(client):
    run = client.runs.begin("shop", "alice", "s1", "order-1", labels={"tier": "gold"})
    with run:
        assert (run.epoch, run.resumed, run.info.status) == (1, False, reel.RunStatus.RUNNING)
        assert run.info.labels == {"tier": "gold"}
        e1 = run.append("note", {"did": "start"})
        e2 = run.append("charge", {"amount": 5}, key="charge-1")
        again = run.append("charge", {"amount": 5}, key="charge-1")
        assert (e1.seq, e2.seq, again.seq, again.duplicate) == (1, 2, 2, True)
        with pytest.raises(reel.AlreadyExists, match="charge-1"):
            run.append("charge", {"amount": 6}, key="charge-1")
        with pytest.raises(reel.Conflict, match="expected seq 9"):
            run.append("note", None, expected_seq=9)
        with pytest.raises(reel.InvalidArgument, match="kind"):
            run.append("Bad Kind", 1)
        assert [(e.seq, e.kind, e.payload) for e in run.read()] == \
            [(1, "note", {"did": "start"}), (2, "charge", {"amount": 5})]
        assert [e.seq for e in client.journal.read(run.run_id, 1, page_size=1)] == [2]
        info = run.end({"ok": True})
        assert (info.status, info.result) == (reel.RunStatus.COMPLETED, {"ok": True})
    assert client.runs.get(run.run_id).status == reel.RunStatus.COMPLETED
    with pytest.raises(reel.LeaseLost, match="ended the run") as err:
        run.append("late", 1)
    assert err.value.from_server is False
    assert [r.run_id for r in client.runs.list("shop", status="completed")] == [run.run_id]
    with pytest.raises(reel.NotFound):
        client.runs.get("01J00000000000000000000000")


def test_a_finished_script_run_again_replays_and_ends_as_it_ended(client):
    calls = []

    def script():
        with client.runs.begin("shop", "alice", "s1", "order-again") as run:
            charge = run.step("charge", lambda: calls.append(1) or {"n": len(calls)})
            return run, run.end({"charged": charge})

    run, first = script()
    again_run, again = script()         # a finished run: its step replays
    assert calls == [1] and again_run.resumed is True
    assert (again.status, again.result, again.ended_at_ms) == \
        (reel.RunStatus.COMPLETED, {"charged": {"n": 1}}, first.ended_at_ms)
    assert run.end({"charged": "other"}).result == {"charged": {"n": 1}}   # kept, not rewritten
    with pytest.raises(reel.LeaseLost, match="COMPLETED"):
        again_run.end(status="failed")
    assert client.runs.get(run.run_id).result == {"charged": {"n": 1}}


async def test_async_a_finished_run_ends_as_it_ended(reeld):
    async with reel.aio.connect(reeld.addr) as c:
        async with await c.runs.begin("shop", "bob", "s1", "order-again") as run:
            first = await run.end({"ok": 1})
        async with await c.runs.begin("shop", "bob", "s1", "order-again") as run:
            again = await run.end({"ok": 2})
        assert (again.status, again.result) == (reel.RunStatus.COMPLETED, {"ok": 1})
        assert again.ended_at_ms == first.ended_at_ms
        with pytest.raises(reel.LeaseLost, match="COMPLETED"):
            await run.end(status="cancelled")


def test_a_lease_taken_by_another_worker_stops_the_handle_writing(client):
    a = client.runs.begin("shop", "alice", "s1", "order-2", owner="worker-a", ttl=1.5)
    a.append("step", {"n": 1})
    # The same owner beginning the run again (a restarted worker) takes a
    # new lease: the old handle is a zombie from then on.
    b = client.runs.begin("shop", "alice", "s1", "order-2", owner="worker-a", ttl=30)
    assert (b.resumed, b.epoch) == (True, 2)
    assert a.wait_lease_lost(timeout=10), "the heartbeats did not notice the lost lease"
    lost = a.lease_lost
    assert isinstance(lost, reel.LeaseLost) and lost.from_server
    assert "lease lost: current epoch 2" in lost.message
    with pytest.raises(reel.LeaseLost) as err:
        a.append("step", {"n": 2}, key="k2")
    assert err.value is lost, "the handle went to reeld after it knew its lease was lost"
    with pytest.raises(reel.LeaseLost):
        a.end()
    with pytest.raises(reel.LeaseLost):
        a.step("charge", lambda: pytest.fail("a step ran without the lease"))
    b.append("step", {"n": 2})
    assert [(e.seq, e.lease_epoch) for e in client.journal.read(a.run_id)] == [(1, 1), (2, 2)]
    a.close()
    b.close()


def test_a_refused_epoch_is_lease_lost_and_the_next_write_stays_home(client):
    a = client.runs.begin("shop", "alice", "s1", "order-3", owner="worker-a", heartbeat=False)
    client.runs.begin("shop", "alice", "s1", "order-3", owner="worker-a", heartbeat=False)
    with pytest.raises(reel.LeaseLost) as first:
        a.append("step", 1)
    assert first.value.from_server and "epoch 2" in first.value.message
    with pytest.raises(reel.LeaseLost) as second:
        a.append("step", 2)
    assert second.value is first.value
    assert list(client.journal.read(a.run_id)) == []


def test_a_lease_that_expires_unrenewed_stops_writes_at_once(client):
    a = client.runs.begin("shop", "alice", "s1", "order-4", ttl=0.3, heartbeat=False)
    assert a.wait_lease_lost(timeout=5)
    with pytest.raises(reel.LeaseLost, match="expired without a renewal") as err:
        a.append("step", 1)
    assert err.value.from_server is False
    # reeld commits the expiry too (a durable timer): the run is claimable
    # again, nothing was written, and the old epoch stays fenced.
    _wait_for(lambda: client.runs.get(a.run_id).status == reel.RunStatus.RUNNABLE,
              what="reeld to commit the lease's expiry")
    info = client.runs.get(a.run_id)
    assert (info.lease_epoch, info.next_seq) == (1, 1)


def test_heartbeats_keep_a_short_lease(client):
    run = client.runs.begin("shop", "alice", "s1", "order-5", ttl=1.0)
    first = run.info.lease_expires_at_ms
    _wait_for(lambda: client.runs.get(run.run_id).lease_expires_at_ms > first + 2000,
              what="renewals past twice the TTL")
    assert run.lease_lost is None
    assert run.append("step", 1).seq == 1
    run.end()


def test_claim_after_expiry_and_suspend_until_a_signal(client):
    a = client.runs.begin("shop", "bob", "s1", "order-6", ttl=0.2, heartbeat=False)
    _wait_for(lambda: a.run_id in [r.run_id for r in client.runs.recoverable("shop")],
              what="the expired run to be recoverable")
    b = client.runs.claim(a.run_id, owner="worker-b")
    assert (b.epoch, b.owner) == (2, "worker-b")
    with pytest.raises(reel.FailedPrecondition, match="leased to"):
        client.runs.claim(a.run_id)
    info = b.suspend("approve")
    assert (info.status, info.waiting_on) == (reel.RunStatus.WAITING, "approve")
    with pytest.raises(reel.LeaseLost, match="suspended"):
        b.append("step", 1)
    sent = client.signals.send(b.run_id, "approve", {"by": "carol"})
    assert (sent.run_status, sent.duplicate) == (reel.RunStatus.RUNNABLE, False)
    again = client.signals.send(b.run_id, "approve", {"by": "carol"},
                                signal_id=sent.signal.signal_id)
    assert again.duplicate and again.signal.seq == sent.signal.seq
    c = client.runs.claim(b.run_id)
    got = client.signals.wait(c.run_id, "approve", epoch=c.epoch, timeout=1)
    assert got.payload == {"by": "carol"} and got.journal_seq == 1
    assert client.signals.wait(c.run_id, "approve", epoch=c.epoch) is None
    assert [s.consumed_at_ms > 0 for s in
            client.signals.list(c.run_id, include_consumed=True)] == [True]
    c.end(status="failed")
    assert client.runs.get(c.run_id).status == reel.RunStatus.FAILED


def test_follow_resumes_across_a_restart_and_ends_with_the_run(reeld, client):
    run = client.runs.begin("shop", "alice", "s1", "order-7")
    for i in range(3):
        run.append("step", i)
    f = run.follow()
    assert [next(f).seq, next(f).seq] == [1, 2]
    reeld.restart()
    for i in range(3, 6):
        run.append("step", i, key=f"s{i}")
    run.end()
    assert [e.seq for e in f] == [3, 4, 5, 6]
    assert f.reconnects >= 1


async def test_async_lease_lost_to_another_worker_stops_writes(reeld):
    async with reel.aio.connect(reeld.addr) as c:
        a = await c.runs.begin("shop", "alice", "s1", "order-8", owner="worker-a", ttl=1.5)
        await a.append("step", {"n": 1})
        b = await c.runs.begin("shop", "alice", "s1", "order-8", owner="worker-a")
        assert b.epoch == 2
        assert await a.wait_lease_lost(timeout=10)
        lost = a.lease_lost
        assert lost.from_server and "epoch 2" in lost.message
        with pytest.raises(reel.LeaseLost) as err:
            await a.append("step", {"n": 2})
        assert err.value is lost

        async def charge():
            pytest.fail("a step ran without the lease")

        with pytest.raises(reel.LeaseLost):
            await a.step("charge", charge)
        assert [(e.seq, e.lease_epoch) async for e in a.read()] == [(1, 1)]
        await a.close()
        await b.close()


async def test_async_unrenewed_lease_expires_locally_and_heartbeats_keep_one(reeld):
    async with reel.aio.connect(reeld.addr) as c:
        a = await c.runs.begin("shop", "alice", "s1", "order-9", ttl=0.3, heartbeat=False)
        assert await a.wait_lease_lost(timeout=5)
        with pytest.raises(reel.LeaseLost, match="expired") as err:
            await a.append("step", 1)
        assert not err.value.from_server
        assert (await c.runs.get(a.run_id)).next_seq == 1
        kept = await c.runs.begin("shop", "alice", "s1", "order-10", ttl=1.0)
        first = kept.info.lease_expires_at_ms
        while (await c.runs.get(kept.run_id)).lease_expires_at_ms <= first + 2000:
            await asyncio.sleep(0.01)
        assert kept.lease_lost is None
        assert (await kept.append("step", 1)).seq == 1
        assert (await kept.end({"n": 1})).result == {"n": 1}


async def test_async_follow_resumes_across_a_restart(reeld):
    loop = asyncio.get_running_loop()
    async with reel.aio.connect(reeld.addr, reconnect_timeout=20) as c:
        run = await c.runs.begin("shop", "alice", "s1", "order-11")
        for i in range(3):
            await run.append("step", i)
        f = run.follow()
        assert [(await f.__anext__()).seq, (await f.__anext__()).seq] == [1, 2]
        await loop.run_in_executor(None, reeld.restart)
        for i in range(3, 6):
            await run.append("step", i, key=f"s{i}")
        await run.end()
        assert [e.seq async for e in f] == [3, 4, 5, 6]
        assert f.reconnects >= 1


def test_closing_the_client_stops_heartbeats_quietly(reeld, monkeypatch):
    died = []
    monkeypatch.setattr(threading, "excepthook", lambda args: died.append(args.exc_value))
    c = reel.connect(reeld.addr)
    run = c.runs.begin("shop", "alice", "s1", "close-1", ttl=0.3)
    held = c.runs.begin("shop", "alice", "s1", "close-1b", ttl=30)
    time.sleep(0.3)                 # a few heartbeats
    c.close()
    for hb in (run._hb, held._hb):
        hb.join(5)
        assert not hb.is_alive()
    time.sleep(0.3)
    assert died == [] and held.lease_lost is None
    with pytest.raises(reel.Cancelled, match="client is closed"):
        held.append("late", 1)


def test_closing_a_run_does_not_wait_for_a_heartbeat_reeld_does_not_answer(reeld):
    """A heartbeat in flight to a reeld that does not answer may wait out
    most of the lease; run.close() (and `with run:`) returned only then."""
    import signal

    c = reel.connect(reeld.addr)
    try:
        run = c.runs.begin("shop", "alice", "s1", "close-stalled", ttl=9)
        reeld.proc.send_signal(signal.SIGSTOP)
        try:
            time.sleep(3.5)             # the first heartbeat (at ttl/3) is waiting
            t0 = time.monotonic()
            run.close()
            took = time.monotonic() - t0
        finally:
            reeld.proc.send_signal(signal.SIGCONT)
        assert took < 2.0, took
    finally:
        c.close()


async def test_async_closing_the_client_stops_heartbeats_quietly(reeld):
    c = reel.aio.connect(reeld.addr)
    run = await c.runs.begin("shop", "alice", "s1", "close-2", ttl=30)
    hb = run._hb
    await c.close()
    await asyncio.sleep(0.3)
    assert hb.done() and (hb.cancelled() or hb.exception() is None)
    with pytest.raises(reel.Cancelled, match="client is closed"):
        await run.append("late", 1)


def test_a_run_claimed_late_in_a_long_poll_holds_its_whole_lease(client):
    """claim_next(wait=...) times the lease from the claim (reeld says how
    long after the request's arrival it came), not from the request's send:
    a run claimed 3 s into the poll with a 2 s lease used to be LeaseLost at
    once, locally, while reeld held it for the caller."""
    import threading
    import time
    threading.Timer(3.0, lambda: client.runs.submit("lateapp", "u", "s", "i1")).start()
    run = client.runs.claim_next("lateapp", ttl=2.0, wait=10, heartbeat=False)
    assert run is not None
    assert run.append("note", {"x": 1}).seq >= 1      # not LeaseLost
    assert run.step("s", lambda: 1) == 1
    run.end()


def _down_then_up(reeld, down_s):
    """kill -9 reeld, and start it again down_s seconds later, in the
    background."""
    reeld.stop(sig=9)
    t = threading.Timer(down_s, reeld.start)
    t.start()
    return t


def test_a_lease_granted_after_a_restart_is_timed_from_then(reeld, client):
    """A begin or claim that waits for reeld to come back (wait_for_ready)
    was timed from when it was made: with a 2 s lease and reeld down for
    4 s, the handle counted its lease run out on arrival (LeaseLost) while
    reeld held it for the caller."""
    _down_then_up(reeld, 4.0)
    run = client.runs.begin("lapp", "u", "s", "i1", ttl=2.0, heartbeat=False)
    assert run.append("note", {"x": 1}).seq >= 1      # not LeaseLost
    run.end()
    client.runs.submit("lapp", "u", "s", "i2")
    _down_then_up(reeld, 4.0).join()
    run = client.runs.claim_next("lapp", ttl=2.0, wait=10, heartbeat=False)
    assert run is not None and run.info.invocation_id == "i2"
    assert run.step("s", lambda: 1) == 1
    run.end()


async def test_async_a_lease_granted_after_a_restart_is_timed_from_then(reeld):
    async with reel.aio.connect(reeld.addr, reconnect_timeout=20) as c:
        await c.kv.put("warm", "k", 1)              # the channel connected first
        t = _down_then_up(reeld, 4.0)
        run = await c.runs.begin("lapp", "u", "s", "a1", ttl=2.0, heartbeat=False)
        assert (await run.append("note", {"x": 1})).seq >= 1
        await run.end()
        await asyncio.get_running_loop().run_in_executor(None, t.join)


WORKER = """
import sys, time, reel
c = reel.connect(sys.argv[1])
def agent(run):
    print("claimed", flush=True)
    for i in range(6):
        run.step(f"s{i}", lambda: time.sleep(0.25))
    return {"done": True}
c.worker("intapp", agent, ttl=30).run()
"""


def test_ctrl_c_in_a_sync_worker_lets_the_run_in_hand_end(reeld, client, tmp_path):
    """KeyboardInterrupt in Worker.run(): no new claims, and the run in
    hand ends as its code does before run() raises. The loops' threads are
    daemons, so run() raising at once ended the process under them and
    left the run for its lease to run out."""
    import signal
    import subprocess
    import sys
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    run_id = client.runs.submit("intapp", "u", "s", "i1").run_id
    p = subprocess.Popen([sys.executable, str(script), reeld.addr],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "claimed"
        p.send_signal(signal.SIGINT)
        _, err = p.communicate(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
    assert "KeyboardInterrupt" in err, err
    info = client.runs.get(run_id)
    assert info.status == reel.RunStatus.COMPLETED, info


def test_a_run_handle_nobody_holds_stops_heartbeating(client):
    """An agent that fails before `with run:` drops its handle: its
    heartbeats stop and the lease runs out for another worker, without the
    garbage collector (disabled here) or client.close()."""
    ids = []

    def agent():
        run = client.runs.begin("dropapp", "u", "s", "drop-1", ttl=1)
        ids.append(run.run_id)
        raise RuntimeError("a bug before `with run:`")

    gc.disable()
    try:
        with pytest.raises(RuntimeError):
            agent()
        end = time.monotonic() + 15
        while client.runs.get(ids[0]).status != reel.RunStatus.RUNNABLE:
            assert time.monotonic() < end, "the dropped handle kept its lease"
            time.sleep(0.05)
        assert not [t for t in threading.enumerate() if t.name.endswith(ids[0])]
        with client.runs.claim(ids[0], owner="next", ttl=30) as run:
            assert run.epoch == 2
            run.end("done")
    finally:
        gc.enable()


def test_the_worker_counts_runs_fn_ended_failed_or_cancelled_as_failed(client):
    ends = iter([reel.RunStatus.FAILED, reel.RunStatus.CANCELLED, None])

    def fn(run):
        status = next(ends)
        if status is not None:
            run.end(None, status=status)
        return "ok"

    for i in range(3):
        client.runs.submit("wk", "u", "s", f"inv-{i}")
    w = client.worker("wk", fn, poll=0.2)
    w.run(max_runs=3)
    assert (w.completed, w.failed, w.parked, w.left) == (1, 2, 0, 0)


async def test_async_closing_a_run_lets_the_closing_task_be_cancelled(reeld):
    """Run.close() (and with it `async with run`, run.end(), run.suspend())
    awaited its heartbeat task under suppress(CancelledError): a cancel of
    the task that was closing the handle passed for the heartbeat's and
    was swallowed, and the task went on."""
    async with reel.aio.connect(reeld.addr) as c:
        run = await c.runs.begin("shop", "alice", "s1", "close-cancelled", ttl=30)
        went_on = []

        async def agent():
            async with run:
                pass
            went_on.append("after the block")
            await asyncio.sleep(0)
            went_on.append("after an await")

        task = asyncio.create_task(agent())
        await asyncio.sleep(0)
        # The agent is in close(), waiting for the heartbeat task to end.
        assert run._hb is None and not task.done()
        task.cancel()
        await asyncio.wait([task], timeout=10)
        assert task.cancelled() and went_on == []


class _WorkerBug(BaseException):
    """Not an Exception: fn's handling lets it through, and so does the
    claim loop, which it ends."""


async def test_async_a_failing_worker_loop_lets_the_other_loops_finish_their_runs(reeld):
    """One loop failing cancelled the runs the other loops had in hand,
    mid-fn (left RUNNING for their leases to run out); the sync worker
    stops claiming and lets them end as their code does, then raises."""
    async with reel.aio.connect(reeld.addr) as c:
        slow = (await c.runs.submit("wfail", "u", "slow", "i")).run_id
        await c.runs.submit("wfail", "u", "boom", "i")
        slow_in_hand, boomed = asyncio.Event(), asyncio.Event()

        async def fn(run):
            if run.info.session == "boom":
                await asyncio.wait_for(slow_in_hand.wait(), 30)
                boomed.set()
                raise _WorkerBug()
            slow_in_hand.set()
            await asyncio.wait_for(boomed.wait(), 30)
            await asyncio.sleep(1.0)        # the other loop has failed by now
            return "ok"

        w = c.worker("wfail", fn, concurrency=2, ttl=30, poll=0.5)
        with pytest.raises(_WorkerBug):
            await asyncio.wait_for(w.run(), 60)
        assert w.completed == 1
        info = await c.runs.get(slow)
        assert (info.status, info.result) == (reel.RunStatus.COMPLETED, "ok")


async def test_async_begin_claim_and_claim_next_open_with_async_with(reeld):
    """`async with client.runs.begin(...) as run`, as `with` in the sync
    client, was a TypeError (a coroutine is no context manager): only
    `async with await ...` worked. Both work now, and the result is still
    a coroutine for asyncio.create_task."""
    async with reel.aio.connect(reeld.addr) as c:
        async with c.runs.begin("cm", "u", "s", "i1", owner="w", ttl=30) as run:
            assert isinstance(run, reel.aio.Run) and run._hb is not None
            hb = run._hb
            await run.append("note", 1)
        await asyncio.wait([hb], timeout=10)
        assert hb.done() and run._hb is None         # the block closed the handle
        again = await c.runs.begin("cm", "u", "s", "i1", owner="w", ttl=30)
        assert again.epoch == 2
        await again.end("done")

        submitted = (await c.runs.submit("cm", "u", "s", "i2")).run_id
        async with c.runs.claim_next("cm", wait=10) as run:
            assert run.run_id == submitted
            await run.end("claimed next")
        async with c.runs.claim_next("cm", wait=0) as run:
            assert run is None                       # nothing to claim
        submitted = (await c.runs.submit("cm", "u", "s", "i3")).run_id
        async with c.runs.claim(submitted, ttl=30) as run:
            assert run.epoch == 2
            await run.end("claimed")
        assert [(r.invocation_id, r.result) async for r in c.runs.list("cm")] == [
            ("i1", "done"), ("i2", "claimed next"), ("i3", "claimed")]
        assert await asyncio.create_task(c.runs.claim_next("cm", wait=0)) is None
