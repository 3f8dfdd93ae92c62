#!/usr/bin/env python3
"""A human-approval gate: a run that waits for an "approve" signal, with a
timeout.

    python3 examples/approval_gate.py request --order 7 --timeout 300   # prints the run id, waits
    python3 examples/approval_gate.py approve --order 7 --by alice      # from anywhere

`request` begins the run of one order, prepares it (a durable step), then
waits for the signal: approved, it executes the order and completes the
run with who approved; not approved within --timeout seconds, it cancels
the run, saying so. `approve` signals the order's session (app "gate",
session "order-<id>"), which reaches its newest open run: the approver
needs no run id. A signal sent before the run waits is kept and delivered
when it does; a signal is consumed once, and its delivery is journaled, so
a restarted `request` finds the decision in the journal instead of waiting
again. The wait holds the run (park=False): the timeout is AwaitSignal's
(reeld's long poll, the client repeating it past reeld's cap) on this
process's clock. A run that waits for days is better parked with the
default park=True, reeld's timer keeping the timeout (see
crash_proof_agent.py's worker, which resumes parked runs).
"""
import argparse
import asyncio
import sys

import reel
import reel.aio

APP, USER = "gate", "ops"


async def request(client, args):
    run = await client.runs.begin(APP, USER, f"order-{args.order}", "approval")
    async with run:
        print(run.run_id, flush=True)
        plan = await run.step("prepare", lambda: {"order": args.order, "action": "refund"})
        decision = await run.wait_for_signal("approve", timeout=args.timeout, park=False)
        if decision is None:
            await run.end({"order": args.order, "reason": f"no approval within {args.timeout:g}s"},
                          status=reel.RunStatus.CANCELLED)
            print(f"order {args.order}: not approved, cancelled", flush=True)
            return 3
        by = (decision.payload or {}).get("by", "someone")
        done = await run.step("execute", lambda: {**plan, "executed": True})
        await run.end({"order": args.order, "approved_by": by, "done": done})
        print(f"order {args.order}: approved by {by}, executed", flush=True)
        return 0


async def approve(client, args):
    sent = await client.signals.send_to_session(APP, USER, f"order-{args.order}", "approve",
                                                {"by": args.by})
    print(f"signal {sent.signal.seq} to run {sent.signal.run_id} "
          f"({sent.run_status.name})", flush=True)
    return 0


async def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("mode", choices=["request", "approve"])
    ap.add_argument("--addr", default=None, help="reeld (default $REEL_ADDR or 127.0.0.1:7878)")
    ap.add_argument("--order", default="7")
    ap.add_argument("--timeout", type=float, default=300.0, help="request: seconds to wait")
    ap.add_argument("--by", default="alice", help="approve: who approves")
    args = ap.parse_args()
    async with reel.aio.connect(args.addr) as client:
        return await (request if args.mode == "request" else approve)(client, args)


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
