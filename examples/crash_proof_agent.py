#!/usr/bin/env python3
"""A crash-proof agent: kill a worker at any point, and another finishes
its run without repeating a completed step.

    python3 examples/crash_proof_agent.py submit --order 42     # a run for order 42
    python3 examples/crash_proof_agent.py worker                # runs orders until killed

`submit` creates the run of one order (app "agents", session "orders",
invocation "order-<id>") with `runs.submit`: RUNNABLE, for any worker.
`worker` is the client's worker helper (`client.worker`): a `claim_next`
loop (reeld's long poll, woken by the commit that makes a run claimable)
calling the workflow for each run it gets and ending the run with its
result. The workflow is reserve, charge, ship, each a durable step whose
result is journaled. Kill a worker with SIGKILL mid-run: its lease runs
out, reeld's timer makes the run claimable (the dead worker, were it only
paused, is fenced off by the next epoch), and another worker waiting in
`claim_next` gets it at once. The steps already journaled return their
recorded results without running, so the card is charged once; the step
that was interrupted runs again (give such effects their own idempotency
key, as `charge` does with the step's key).

Each step's effect is one line appended to --effects, so a test can see
what ran, and where: `--pause-in STEP` makes that step block after
announcing itself (`<step>-start`), for the test to kill the process there.
`--runs N` makes a worker stop once N runs ended there.
"""
import argparse
import os
import sys
import time

import reel

APP, USER, SESSION = "agents", "demo", "orders"


def effect(path, line):
    with open(path, "a") as f:
        f.write(line + "\n")
        f.flush()
        os.fsync(f.fileno())


def workflow(run, order, effects, pause_in=None):
    """The agent's code: deterministic, so a resumed run reaches the same
    steps in the same order."""
    def act(step, result):
        def do():
            if step == pause_in:
                effect(effects, f"{step}-start {order} pid={os.getpid()}")
                while True:
                    time.sleep(3600)      # killed here by the test
            effect(effects, f"{step} {order} pid={os.getpid()} key={run.run_id}/{step}")
            return result
        return do

    reservation = run.step("reserve", act("reserve", {"sku": "book", "qty": 1}))
    charge = run.step("charge", act("charge", {"amount": 42, "ok": True}))
    shipment = run.step("ship", act("ship", {"carrier": "post"}))
    return {"order": order, "reservation": reservation, "charge": charge,
            "shipment": shipment}


def submit(client, args):
    info = client.runs.submit(APP, USER, SESSION, f"order-{args.order}")
    print(info.run_id, flush=True)
    return 0


def worker(client, args):
    """Runs orders until killed (or --runs are done)."""
    def agent(run):
        order = run.info.invocation_id.removeprefix("order-")
        result = workflow(run, order, args.effects, args.pause_in)
        print(f"finished {run.run_id} (order {order}) at epoch {run.epoch}", flush=True)
        return result

    w = client.worker(APP, agent, ttl=args.ttl, poll=1.0)
    print(f"worker {w.owner} ready", flush=True)
    w.run(max_runs=args.runs)
    print(f"worker {w.owner} done: {w.completed} completed, {w.failed} failed, "
          f"{w.parked} parked, {w.left} left", file=sys.stderr, flush=True)
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("mode", choices=["submit", "worker"])
    ap.add_argument("--addr", default=None, help="reeld (default $REEL_ADDR or 127.0.0.1:7878)")
    ap.add_argument("--order", default="42")
    ap.add_argument("--effects", default="effects.log", help="where effects are recorded")
    ap.add_argument("--ttl", type=float, default=2.0, help="lease TTL in seconds")
    ap.add_argument("--runs", type=int, default=None, help="worker: stop once N runs ended")
    ap.add_argument("--pause-in", default=None, help="block inside this step (for tests)")
    args = ap.parse_args()
    with reel.connect(args.addr) as client:
        return (submit if args.mode == "submit" else worker)(client, args)


if __name__ == "__main__":
    sys.exit(main())
