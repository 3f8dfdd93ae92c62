#!/usr/bin/env python3
"""A human-approval gate: a run that waits for an "approve" signal, with a
timeout kept by reeld's timer, not by a process.

    python3 examples/approval_gate.py worker                             # runs gates until killed
    python3 examples/approval_gate.py request --order 7 --timeout 300    # prints the run id, waits
    python3 examples/approval_gate.py approve --order 7 --by alice       # from anywhere

`request` submits the run of one order (app "gate", session
"order-<id>", its timeout in a label) and follows its journal until it
ends, then says how (exit 0 approved, 3 not). `worker` (asyncio, the
client's worker helper) runs the gate: a durable step prepares the order,
then `wait_for_signal("approve", timeout=...)` parks the run: no worker
holds it while it waits, however long. The signal, or reeld's timer at the
timeout, makes it RUNNABLE again; a worker (this one, or another: kill
them all meanwhile if you like) takes it, the journal replays the step,
and the wait returns the signal (the order is executed and the run
completed with who approved) or None (the run is cancelled, saying so).
`approve` signals the order's session, which reaches its newest open run:
the approver needs no run id. A signal sent before the run waits (once it
is requested) is kept and delivered when it does; each is consumed once,
and journaled. Approving an order with no open request says so (exit 3).
"""
import argparse
import asyncio
import sys

import reel
import reel.aio

APP, USER = "gate", "ops"


async def gate(run):
    """The run's code: replayed from the top each time a worker takes it."""
    order = run.info.labels["order"]
    timeout = float(run.info.labels["timeout"])
    plan = await run.step("prepare", lambda: {"order": order, "action": "refund"})
    decision = await run.wait_for_signal("approve", timeout=timeout)     # parks the run
    if decision is None:
        await run.end({"order": order, "reason": f"no approval within {timeout:g}s"},
                      status=reel.RunStatus.CANCELLED)
        return None
    by = (decision.payload or {}).get("by", "someone")
    done = await run.step("execute", lambda: {**plan, "executed": True})
    return {"order": order, "approved_by": by, "done": done}


async def worker(client, args):
    w = client.worker(APP, gate, ttl=10)
    print(f"worker {w.owner} ready", flush=True)
    await w.run(max_runs=args.runs)
    return 0


async def request(client, args):
    info = await client.runs.submit(APP, USER, f"order-{args.order}", "approval",
                                    labels={"order": args.order, "timeout": f"{args.timeout:g}"})
    print(info.run_id, flush=True)
    async with client.journal.follow(info.run_id) as entries:
        async for _ in entries:          # ends when the run ends
            pass
    info = await client.runs.get(info.run_id)
    if info.status != reel.RunStatus.COMPLETED:
        print(f"order {args.order}: not approved, {info.status.name.lower()}", flush=True)
        return 3
    print(f"order {args.order}: approved by {info.result['approved_by']}, executed", flush=True)
    return 0


async def approve(client, args):
    try:
        sent = await client.signals.send_to_session(APP, USER, f"order-{args.order}",
                                                    "approve", {"by": args.by})
    except reel.NotFound:
        # The session has no open run: never requested, or already ended.
        print(f"order {args.order}: no request waits for an approval (run `request "
              f"--order {args.order}` first)", file=sys.stderr, flush=True)
        return 3
    print(f"signal {sent.signal.seq} to run {sent.signal.run_id} "
          f"({sent.run_status.name})", flush=True)
    return 0


async def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("mode", choices=["worker", "request", "approve"])
    ap.add_argument("--addr", default=None, help="reeld (default $REEL_ADDR or 127.0.0.1:7878)")
    ap.add_argument("--order", default="7")
    ap.add_argument("--timeout", type=float, default=300.0, help="request: seconds to wait")
    ap.add_argument("--by", default="alice", help="approve: who approves")
    ap.add_argument("--runs", type=int, default=None, help="worker: stop once N runs ended")
    args = ap.parse_args()
    async with reel.aio.connect(args.addr) as client:
        return await {"worker": worker, "request": request, "approve": approve}[args.mode](
            client, args)


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
