"""Timers and recovery (issue 21's server side) through the client:
submit and claim_next (woken, in order, each run once), resume of a PAUSED
run, delayed and cancelled signals, run.sleep and run.wait_for_signal on
reeld's timers (parking the run, resumed by a worker, never sleeping or
waiting twice), and the worker helper (results, failures, a reeld
restart ridden out). Sync and async."""
import asyncio
import datetime
import threading
import time

import pytest

import reel
import reel.aio

APP = "timers"


def _until(cond, timeout=20.0, what="the condition"):
    end = time.monotonic() + timeout
    while True:
        got = cond()
        if got:
            return got
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.01)


def _never(*a):
    raise AssertionError("a journaled step ran again")


# ---- claim_next, submit, resume ----------------------------------------------

def test_claim_next_takes_submitted_runs_in_order_and_is_woken_by_a_submit(client):
    r1 = client.runs.submit(APP, "u", "s", "one")
    r2 = client.runs.submit(APP, "u", "s", "two")
    assert (r1.status, r1.reason) == (reel.RunStatus.RUNNABLE, "SIGNAL")
    again = client.runs.submit(APP, "u", "s", "one")           # idempotent
    assert again.run_id == r1.run_id and again.status == reel.RunStatus.RUNNABLE
    a = client.runs.claim_next(APP, owner="w1", ttl=10)
    b = client.runs.claim_next(APP, owner="w2", ttl=10)
    assert (a.run_id, b.run_id) == (r1.run_id, r2.run_id)
    assert a.info.status == reel.RunStatus.RUNNING and a.info.lease_owner == "w1"
    assert a.epoch == r1.lease_epoch + 1
    t0 = time.monotonic()
    assert client.runs.claim_next(APP, wait=0) is None
    assert client.runs.claim_next(APP, wait=0.3) is None
    assert time.monotonic() - t0 >= 0.3
    got = {}
    t = threading.Thread(target=lambda: got.update(run=client.runs.claim_next(APP, wait=20)))
    t.start()
    _until(lambda: client.status().open_calls >= 1, what="the waiting claim")
    r3 = client.runs.submit(APP, "u", "s", "three")
    t.join(10)
    assert not t.is_alive() and got["run"].run_id == r3.run_id    # woken, well before 20 s
    for run in (a, b, got["run"]):
        run.end()
    with pytest.raises(reel.InvalidArgument, match="app"):
        client.runs.claim_next("", wait=0)


def test_a_paused_run_is_resumed(client):
    run = client.runs.begin(APP, "u", "p", "crashy", ttl=0.2, heartbeat=False,
                            retry=reel.RetryPolicy(max_attempts=1))
    info = _until(lambda: (lambda i: i if i.status == reel.RunStatus.PAUSED else None)(
        client.runs.get(run.run_id)), what="PAUSED")
    assert info.reason == "MAX_ATTEMPTS"
    assert client.runs.claim_next(APP, wait=0) is None            # nobody's work
    resumed = client.runs.resume(run.run_id)
    assert (resumed.status, resumed.attempt, resumed.reason) == \
        (reel.RunStatus.RUNNABLE, 0, "RESUMED")
    with pytest.raises(reel.FailedPrecondition, match="PAUSED"):
        client.runs.resume(run.run_id)
    got = client.runs.claim_next(APP, wait=5)
    assert got.run_id == run.run_id
    got.end()


# ---- delayed signals ---------------------------------------------------------

def test_a_delayed_signal_is_delivered_at_its_time_and_a_cancelled_one_never(client):
    run = client.runs.begin(APP, "u", "d", "delayed", ttl=10)
    # 3 s: the send and the listing come before it (slow under ASan on a
    # busy machine).
    at = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=3)
    sent = client.signals.send(run.run_id, "tick", {"n": 1}, deliver_at=at)
    assert sent.signal.scheduled and sent.signal.deliver_at_ms == int(at.timestamp() * 1000)
    assert [s.scheduled for s in client.signals.list(run.run_id, "tick")] == [True]
    late = client.signals.send(run.run_id, "tick", {"n": 2}, delay=60, signal_id="later")
    assert late.signal.scheduled
    assert client.signals.cancel(run.run_id, "later").payload == {"n": 2}
    with pytest.raises(reel.NotFound, match="later"):
        client.signals.cancel(run.run_id, "later")
    got = run.wait_for_signal("tick", timeout=10, park=False)
    assert got.payload == {"n": 1}
    assert time.time() * 1000 >= sent.signal.deliver_at_ms
    assert run.wait_for_signal("tick", timeout=0.5, park=False) is None   # the cancelled one
    now = client.signals.send(run.run_id, "x", 1, signal_id="now")
    with pytest.raises(reel.FailedPrecondition, match="already delivered"):
        client.signals.cancel(run.run_id, "now")
    assert not now.signal.scheduled
    with pytest.raises(ValueError, match="not both"):
        client.signals.send(run.run_id, "x", deliver_at=time.time(), delay=1)
    with pytest.raises(ValueError, match="timezone"):
        client.signals.send(run.run_id, "x", deliver_at=datetime.datetime.now())
    run.end()


# ---- sleep and wait_for_signal on reeld's timers -------------------------------

def test_sleep_parks_the_run_and_a_worker_finishes_it_after_the_timer(client):
    calls = []

    def fn(run):
        a = run.step("a", lambda: calls.append("a") or 1)
        run.sleep(0.8)
        calls.append(("after-sleep", time.monotonic()))
        b = run.step("b", lambda: calls.append("b") or 2)
        return {"a": a, "b": b}

    info = client.runs.submit(APP, "u", "sl", "sleeper")
    w = client.worker(APP, fn, owner="w", poll=0.5)
    t0 = time.monotonic()
    w.run(max_runs=1)
    assert (w.parked, w.completed) == (1, 1)
    assert [c for c in calls if isinstance(c, str)] == ["a", "b"]         # a ran once
    woke = [c[1] for c in calls if isinstance(c, tuple)]
    assert len(woke) == 1 and woke[0] - t0 >= 0.8
    done = client.runs.get(info.run_id)
    assert done.status == reel.RunStatus.COMPLETED and done.result == {"a": 1, "b": 2}
    kinds = [(e.kind, e.payload.get("name") or e.payload.get("step"))
             for e in client.journal.read(info.run_id)]
    assert kinds == [("step", "a"), ("signal", "reel.sleep.0"), ("step", "b")]


def test_a_resumed_run_does_not_sleep_again(client):
    run = client.runs.begin(APP, "u", "sl", "held", ttl=1.5)
    t0 = time.monotonic()
    run.sleep(0.3, park=False)                 # holds the lease, on reeld's timer
    assert time.monotonic() - t0 >= 0.3
    run.close()                                # the worker dies after the sleep
    again = _until(lambda: client.runs.claim_next(APP, wait=1), what="the expired lease")
    assert again.run_id == run.run_id
    t1 = time.monotonic()
    again.sleep(30)                            # the journal says it is done
    again.sleep(0, park=False)                 # the next one: delivered at once
    assert time.monotonic() - t1 < 5
    again.end()
    with pytest.raises(ValueError, match="seconds"):
        again.sleep(-1)


def test_wait_for_signal_parks_the_run_until_the_signal_or_reelds_timeout(client):
    seen = {}

    def fn(run):
        got = run.wait_for_signal("approve", timeout=30)
        seen.setdefault(run.run_id, []).append(got and got.payload)
        late = run.wait_for_signal("late", timeout=0.5)
        return {"approved": got.payload, "late": late is None}

    w = client.worker(APP, fn, owner="w", poll=0.5)
    t = threading.Thread(target=w.run, kwargs={"max_runs": 1})
    t.start()
    info = client.runs.submit(APP, "u", "ap", "gate")
    _until(lambda: client.runs.get(info.run_id).status == reel.RunStatus.WAITING,
           what="the parked run")
    assert client.runs.get(info.run_id).waiting_on == "approve"
    client.signals.send(info.run_id, "approve", {"by": "ann"})
    t.join(30)
    assert not t.is_alive() and (w.parked, w.completed) == (2, 1)
    # Woken by the signal, then parked on "late", then woken by its
    # timeout: the third pass got the same signal from the journal.
    assert seen[info.run_id] == [{"by": "ann"}, {"by": "ann"}]
    done = client.runs.get(info.run_id)
    assert done.result == {"approved": {"by": "ann"}, "late": True}
    entries = [e.payload for e in client.journal.read(info.run_id)]
    assert [e["name"] for e in entries] == ["approve", "late"]
    assert entries[1] == {"name": "late", "signal_id": "", "timed_out": True}


# ---- the worker helper ----------------------------------------------------------

def test_the_worker_fails_a_run_whose_code_raises_and_rides_out_a_restart(reeld, client):
    def fn(run):
        if run.info.invocation_id == "bad":
            raise KeyError("no such order")
        return run.step("work", lambda: run.info.invocation_id)

    w = client.worker(APP, fn, owner="w", concurrency=2, poll=0.5)
    t = threading.Thread(target=w.run)
    t.start()
    try:
        bad = client.runs.submit(APP, "u", "wk", "bad")
        good = client.runs.submit(APP, "u", "wk", "good")
        for r in (bad, good):
            _until(lambda: client.runs.get(r.run_id).status.terminal, what=r.invocation_id)
        failed = client.runs.get(bad.run_id)
        assert failed.status == reel.RunStatus.FAILED
        assert failed.result == {"error": "KeyError", "message": "'no such order'"}
        assert client.runs.get(good.run_id).result == "good"
        reeld.restart()
        after = client.runs.submit(APP, "u", "wk", "after-restart")
        _until(lambda: client.runs.get(after.run_id).status.terminal, timeout=30,
               what="the run submitted after the restart")
        assert client.runs.get(after.run_id).result == "after-restart"
    finally:
        w.stop()
        t.join(30)
    assert not t.is_alive() and (w.completed, w.failed) == (2, 1)


# ---- asyncio --------------------------------------------------------------------

async def test_async_claim_next_sleep_and_worker(reeld):
    async with reel.aio.connect(reeld.addr) as c:
        r1 = await c.runs.submit(APP, "u", "as", "one")
        assert (await c.runs.claim_next(APP, wait=0, owner="x")).run_id == r1.run_id
        assert await c.runs.claim_next(APP, wait=0) is None
        waiter = asyncio.ensure_future(c.runs.claim_next(APP, wait=20))
        await asyncio.sleep(0.05)
        r2 = await c.runs.submit(APP, "u", "as", "two")
        assert (await asyncio.wait_for(waiter, 10)).run_id == r2.run_id
        sent = await c.signals.send(r2.run_id, "t", delay=60, signal_id="t1")
        assert sent.signal.scheduled
        assert (await c.signals.cancel(r2.run_id, "t1")).signal_id == "t1"

        calls = []

        async def fn(run):
            await run.step("a", lambda: calls.append("a"))
            await run.sleep(0.5)
            got = await run.wait_for_signal("go", timeout=0.3)
            return {"timed_out": got is None}

        r3 = await c.runs.submit(APP, "u", "as", "three")
        w = c.worker(APP, fn, owner="aw")
        t0 = time.monotonic()
        await asyncio.wait_for(w.run(max_runs=1), 30)
        assert time.monotonic() - t0 >= 0.8 and calls == ["a"]
        assert (w.parked, w.completed) == (2, 1)
        assert (await c.runs.get(r3.run_id)).result == {"timed_out": True}


async def test_async_worker_stop_cancels_the_waiting_claims_and_survives_a_restart(reeld):
    async with reel.aio.connect(reeld.addr) as c:
        w = c.worker(APP, lambda run: run.info.invocation_id, concurrency=3)
        task = asyncio.ensure_future(w.run())
        r1 = await c.runs.submit(APP, "u", "ar", "before")
        while not (await c.runs.get(r1.run_id)).status.terminal:
            await asyncio.sleep(0.01)
        await asyncio.get_running_loop().run_in_executor(None, reeld.restart)
        r2 = await c.runs.submit(APP, "u", "ar", "after")
        while not (await c.runs.get(r2.run_id)).status.terminal:
            await asyncio.sleep(0.01)
        assert (await c.runs.get(r2.run_id)).result == "after"
        w.stop()
        await asyncio.wait_for(task, 5)             # no claim left waiting
        assert w.completed == 2


def _not_json(run):
    if run.info.invocation_id == "dt":
        return {"when": datetime.datetime(2024, 1, 2)}      # not JSON
    return run.info.invocation_id


def test_a_result_that_is_not_json_fails_that_run_and_the_worker_goes_on(client):
    ids = {name: client.runs.submit(APP, "u", "nj", name).run_id
           for name in ("before", "dt", "after")}
    w = client.worker(APP, _not_json, owner="w", poll=0.5)
    errs = []

    def run():
        try:
            w.run(max_runs=3)
        except BaseException as e:       # reported below
            errs.append(e)

    t = threading.Thread(target=run)
    t.start()
    t.join(30)
    if t.is_alive():
        w.stop()
        t.join(10)
    assert errs == [] and not t.is_alive()
    assert (w.completed, w.failed, w.left) == (2, 1, 0)
    failed = client.runs.get(ids["dt"])
    assert failed.status == reel.RunStatus.FAILED and failed.lease_owner == ""
    assert failed.result["error"] == "TypeError"
    assert failed.result["message"].startswith("result: cannot be sent as JSON")
    for name in ("before", "after"):
        assert client.runs.get(ids[name]).result == name


async def test_async_a_result_that_is_not_json_fails_that_run_and_the_worker_goes_on(reeld):
    async with reel.aio.connect(reeld.addr) as c:
        ids = {name: (await c.runs.submit(APP, "u", "anj", name)).run_id
               for name in ("before", "dt", "after")}

        async def fn(run):
            return _not_json(run)

        w = c.worker(APP, fn, owner="aw")
        await asyncio.wait_for(w.run(max_runs=3), 30)
        assert (w.completed, w.failed, w.left) == (2, 1, 0)
        failed = await c.runs.get(ids["dt"])
        assert failed.status == reel.RunStatus.FAILED
        assert failed.result["message"].startswith("result: cannot be sent as JSON")
        assert (await c.runs.get(ids["after"])).result == "after"



_CTRL_C = """
import os, signal, sys, threading, time
import reel
c = reel.connect(sys.argv[1])
done = []
w = c.worker("timers-int", lambda run: done.append(run.run_id) or "ok", concurrency=2, poll=0.3)
threading.Timer(0.5, lambda: os.kill(os.getpid(), signal.SIGINT)).start()
try:
    w.run()
except KeyboardInterrupt:
    pass
time.sleep(0.8)
for i in range(3):
    c.runs.submit("timers-int", "u", "s", f"after{i}")
time.sleep(1.5)
print(len(done), w.completed,
      len([t for t in threading.enumerate() if t.name.startswith("reel-worker")]))
c.close()
"""


def test_ctrl_c_in_worker_run_stops_its_claims(reeld):
    """KeyboardInterrupt in Worker.run() (Ctrl-C) stops the worker as
    stop() does: its loops used to go on claiming in the background."""
    import os
    import subprocess
    import sys
    r = subprocess.run([sys.executable, "-c", _CTRL_C, reeld.addr], capture_output=True,
                       text=True, timeout=60,
                       env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)))
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["0", "0", "0"], r.stdout
