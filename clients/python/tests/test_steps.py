"""Durable steps and signal waits, sync and async: the first run does the
work and journals it; a resumed run gets the same results back without
doing it again, waits included, and a run whose code changed is stopped."""
import asyncio

import pytest

import reel
import reel.aio

TUPLE = ("shop", "alice", "s1")


def _never(*args):
    pytest.fail(f"a journaled step ran again with {args}")


def test_steps_and_waits_replay_on_resume_without_running_again(reeld, client):
    calls = []

    def charge(amount):
        calls.append(("charge", amount))
        return {"charged": amount, "as_tuple": (1, 2)}

    run = client.runs.begin(*TUPLE, "order-1", owner="worker-a")
    assert run.step("charge-card", charge, 42) == {"charged": 42, "as_tuple": [1, 2]}
    assert run.step("ship", lambda: "shipped") == "shipped"
    assert run.wait_for_signal("approve", timeout=0.1, park=False) is None   # timed out
    run.close()                                                      # the worker dies here
    assert calls == [("charge", 42)]
    keys = [e.idempotency_key for e in client.journal.read(run.run_id)]
    assert keys == ["step:0:charge-card", "step:1:ship", "signal.timeout:0:approve"]

    client.signals.send(run.run_id, "approve", {"by": "bob"})
    resumed = client.runs.begin(*TUPLE, "order-1", owner="worker-a")
    assert resumed.resumed and resumed.epoch == 2
    assert resumed.step("charge-card", _never, 42) == {"charged": 42, "as_tuple": [1, 2]}
    assert resumed.step("ship", _never) == "shipped"
    # The first run's wait timed out: so does the replayed one, though the
    # signal is there now; the next wait gets it.
    assert resumed.wait_for_signal("approve", timeout=0.1, park=False) is None
    got = resumed.wait_for_signal("approve", timeout=5, park=False)
    assert got.payload == {"by": "bob"} and got.journal_seq == 4
    assert resumed.step("email", lambda: "sent") == "sent"
    resumed.end({"done": True})
    assert calls == [("charge", 42)]

    # An ended run replays every step and wait, and holds no lease for more.
    done = client.runs.begin(*TUPLE, "order-1")
    assert done.info.status == reel.RunStatus.COMPLETED
    assert done.step("charge-card", _never, 42)["charged"] == 42
    assert done.step("ship", _never) == "shipped"
    assert done.wait_for_signal("approve", timeout=0) is None
    assert done.wait_for_signal("approve").payload == {"by": "bob"}
    assert done.step("email", _never) == "sent"
    with pytest.raises(reel.LeaseLost, match="COMPLETED"):
        done.step("extra", lambda: 1)

    # Code that changed under a journal is refused, not replayed wrongly.
    other = client.runs.begin(*TUPLE, "order-1")
    with pytest.raises(reel.ReplayMismatch, match="step 0 is 'charge-card'"):
        other.step("refund", _never)


def test_a_failing_step_journals_nothing_and_runs_again_on_resume(client):
    run = client.runs.begin(*TUPLE, "order-2", owner="w")
    with pytest.raises(ZeroDivisionError):
        run.step("flaky", lambda: 1 / 0)
    run.close()
    assert list(client.journal.read(run.run_id)) == []
    again = client.runs.begin(*TUPLE, "order-2", owner="w")
    assert again.step("flaky", lambda: "ok") == "ok"
    with pytest.raises(TypeError, match="step 'bad': result"):
        again.step("bad", lambda: {1, 2})
    with pytest.raises(ValueError, match="at most 200"):
        again.step("x" * 201, lambda: 1)
    again.end()



def _flaky_then(value, fails):
    left = [fails]

    def fn():
        if left[0] > 0:
            left[0] -= 1
            raise TimeoutError("flaky")
        return value
    return fn


def _script(run, calls):
    """A run's code that retries a flaky step, as agents do."""
    fetch = _flaky_then("page", 2)

    def counted():
        calls.append("fetch")
        return fetch()
    for _ in range(5):
        try:
            got = run.step("fetch", counted)
            break
        except TimeoutError:
            continue
    return got, run.step("charge", lambda: calls.append("charge") or 7)


def test_a_step_retried_after_a_failure_takes_the_same_position(client):
    """A step whose fn raised gives its position back: the retry is step 0
    again, so a resumed run replays it (it used to take position 2, and the
    resumed run ran fetch a third time, wrote a stray step 0, then failed
    ReplayMismatch for good)."""
    run = client.runs.begin(*TUPLE, "order-retry", owner="w")
    calls = []
    assert _script(run, calls) == ("page", 7)
    assert calls == ["fetch", "fetch", "fetch", "charge"]
    run.close()                                   # a crash: not ended
    keys = [e.idempotency_key for e in client.journal.read(run.run_id)]
    assert keys == ["step:0:fetch", "step:1:charge"]
    again = client.runs.begin(*TUPLE, "order-retry", owner="w")
    calls = []
    assert _script(again, calls) == ("page", 7)
    assert calls == []                            # all replayed
    again.end()


def test_a_step_that_failed_around_its_fn_keeps_its_position_and_result(reeld):
    """A step's failure outside its fn gave its position away too: an
    append that got no answer (reeld stalled past the deadline, the entry
    written after all) made the retry run fn again as step 1, and a
    resumed run ran it a third time and failed ReplayMismatch; so did a
    journal read that failed. The retry now takes the same position and
    finds what was written."""
    import signal

    calls = []
    c = reel.connect(reeld.addr, timeout=1.0, reconnect_timeout=20)
    try:
        run = c.runs.begin(*TUPLE, "order-stall", owner="w", heartbeat=False)

        def charge_then_stall():
            calls.append("charge")
            reeld.proc.send_signal(signal.SIGSTOP)   # the append gets no answer
            return "paid"
        try:
            with pytest.raises(reel.DeadlineExceeded):
                run.step("charge", charge_then_stall)
        finally:
            reeld.proc.send_signal(signal.SIGCONT)
        got = run.step("charge", lambda: calls.append("again") or "paid")
        assert got == "paid"
        assert run.step("ship", lambda: calls.append("ship") or 1) == 1
        keys = [e.idempotency_key for e in c.journal.read(run.run_id)]
        assert keys == ["step:0:charge", "step:1:ship"], keys
        run.close()                                  # a crash: not ended
        # Resumed: its first read of the journal fails once.
        again = c.runs.begin(*TUPLE, "order-stall", owner="w", heartbeat=False)
        reeld.proc.send_signal(signal.SIGSTOP)
        try:
            with pytest.raises(reel.DeadlineExceeded):
                again.step("charge", _never)
        finally:
            reeld.proc.send_signal(signal.SIGCONT)
        assert again.step("charge", _never) == "paid"
        assert again.step("ship", _never) == 1
        again.end()
    finally:
        c.close()
    assert calls.count("charge") == 1 and "ship" in calls
    assert calls.count("again") <= 1   # only if the stalled append was lost


async def test_async_a_step_retried_after_a_failure_takes_the_same_position(reeld):
    async with reel.aio.connect(reeld.addr) as c:
        run = await c.runs.begin(*TUPLE, "order-aretry", owner="w")
        fetch = _flaky_then("page", 1)
        with pytest.raises(TimeoutError):
            await run.step("fetch", fetch)
        assert await run.step("fetch", fetch) == "page"
        assert await run.step("charge", lambda: 7) == 7
        keys = [e.idempotency_key async for e in c.journal.read(run.run_id)]
        assert keys == ["step:0:fetch", "step:1:charge"]
        await run.end()

def test_a_wait_that_spans_a_reeld_restart_consumes_exactly_one_signal(reeld, client):
    import threading

    run = client.runs.begin(*TUPLE, "order-3")
    got = {}
    t = threading.Thread(
        target=lambda: got.update(s=run.wait_for_signal("go", timeout=30, park=False)))
    t.start()
    _wait_until_awaiting(client)
    reeld.restart()                      # ends the await UNAVAILABLE, consuming nothing
    client.signals.send(run.run_id, "go", 1)
    client.signals.send(run.run_id, "go", 2)
    t.join(30)
    assert got["s"].payload == 1
    assert [s.payload for s in client.signals.list(run.run_id)] == [2]     # still pending
    assert [e.kind for e in client.journal.read(run.run_id)] == ["signal"]
    run.end()


def _wait_until_awaiting(client, timeout=10.0):
    """Until reeld has a call open (GetStatus does not count itself): the
    await."""
    import time
    end = time.monotonic() + timeout
    while client.status().open_calls < 1:
        assert time.monotonic() < end, "the await never reached reeld"
        time.sleep(0.01)


async def test_async_steps_and_waits_replay_on_resume(reeld):
    calls = []

    async def charge(amount):
        calls.append(amount)
        await asyncio.sleep(0)
        return {"charged": amount}

    async with reel.aio.connect(reeld.addr) as c:
        run = await c.runs.begin(*TUPLE, "order-4", owner="w")
        # Steps started together take positions in call order.
        a, b = await asyncio.gather(run.step("a", charge, 1), run.step("b", charge, 2))
        assert (a, b) == ({"charged": 1}, {"charged": 2})
        assert await run.step("sync-fn", lambda: [1]) == [1]
        assert await run.wait_for_signal("approve", timeout=0.1, park=False) is None
        await run.close()
        await c.signals.send(run.run_id, "approve", "yes")

        resumed = await c.runs.begin(*TUPLE, "order-4", owner="w")
        assert resumed.epoch == 2
        assert await resumed.step("a", _never, 1) == {"charged": 1}
        assert await resumed.step("b", _never, 2) == {"charged": 2}
        assert await resumed.step("sync-fn", _never) == [1]
        assert await resumed.wait_for_signal("approve", timeout=0.1, park=False) is None
        assert (await resumed.wait_for_signal("approve", timeout=5, park=False)).payload == "yes"
        with pytest.raises(reel.ReplayMismatch):
            other = await c.runs.begin(*TUPLE, "order-4", owner="w")
            await other.step("renamed", _never)
        assert calls == [1, 2]
        await other.close()
        await resumed.close()


def test_a_step_key_written_by_other_code_is_a_replay_mismatch(client):
    run = client.runs.begin(*TUPLE, "order-5", owner="w")
    run.append("step", {"not": "a step"}, key="step:0:charge")
    again = client.runs.begin(*TUPLE, "order-5", owner="w")
    with pytest.raises(reel.ReplayMismatch, match="entry 1 has a step's key"):
        again.step("charge", _never)
    run.close()
    again.close()


async def test_async_a_plain_step_function_runs_off_the_loop_so_heartbeats_go_on(reeld):
    """A plain (not async) step function ran on the event loop: one that
    blocked longer than the lease's TTL stopped the heartbeats, and the
    step ended LeaseLost. It runs in a thread now."""
    import time

    def work():
        time.sleep(6)
        return "done"

    async with reel.aio.connect(reeld.addr) as c:
        async with await c.runs.begin(*TUPLE, "order-blocking", ttl=4) as run:
            assert await run.step("work", work) == "done"
            assert run.lease_lost is None
            await run.end()


async def test_async_a_plain_worker_function_runs_off_the_loop_so_heartbeats_go_on(reeld):
    import time

    def agent(run):
        time.sleep(6)
        return {"n": 1}

    async with reel.aio.connect(reeld.addr) as c:
        run_id = (await c.runs.submit("blockapp", "u", "s", "i1")).run_id
        w = c.worker("blockapp", agent, ttl=4, poll=0.5)
        task = asyncio.create_task(w.run())
        end = time.monotonic() + 60
        while w.completed + w.failed + w.left == 0:
            assert time.monotonic() < end and not task.done()
            await asyncio.sleep(0.05)
        w.stop()
        await asyncio.wait_for(task, 30)
        assert (w.completed, w.left) == (1, 0)
        assert (await c.runs.get(run_id)).result == {"n": 1}


async def test_async_a_worker_runs_as_many_plain_functions_at_once_as_its_concurrency(reeld):
    """Plain fns ran in the loop's default executor: min(32, CPUs + 4)
    threads (6 on two cores), shared with everything else, so a worker of
    concurrency 8 ran 6 at a time, the other claimed runs waiting with
    their leases held. All 8 must meet here at once."""
    import threading
    import time

    n = 8
    met = threading.Barrier(n, timeout=20)

    def agent(run):
        met.wait()  # BrokenBarrierError (the run FAILED) unless n at once
        return {"ok": True}

    async with reel.aio.connect(reeld.addr) as c:
        ids = [(await c.runs.submit("meetapp", "u", f"s{i}", "i")).run_id for i in range(n)]
        w = c.worker("meetapp", agent, concurrency=n, ttl=30, poll=0.5)
        await asyncio.wait_for(w.run(max_runs=n), 60)
        assert (w.completed, w.failed) == (n, 0)
        for run_id in ids:
            assert (await c.runs.get(run_id)).result == {"ok": True}
