#!/usr/bin/env python3
"""A crash-proof agent: kill it at any point, and another worker finishes
its run without repeating a completed step.

    python3 examples/crash_proof_agent.py work --order 42      # begins and runs order 42
    python3 examples/crash_proof_agent.py recover               # finishes orphaned runs

`work` begins the run of one order (app "agents", session "orders",
invocation "order-<id>") and runs the workflow: reserve, charge, ship, each
a durable step whose result is journaled. `recover` is a worker that
lists the runs whose worker died (their lease expired without a
heartbeat), claims each (the dead worker, were it only paused, is fenced
off by the new lease epoch) and runs the same workflow: the steps already
journaled return their recorded results without running, so the card is
charged once; the step that was interrupted runs again (give such effects
their own idempotency key, as `charge` does with the step's key).

Each step's effect is one line appended to --effects, so a test can see
what ran, and where: `--pause-in STEP` makes that step block after
announcing itself (`<step>-start`), for the test to kill the process there.
(With the timers issue, `recover` becomes a `claim_next` loop.)
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


def work(client, args):
    with client.runs.begin(APP, USER, SESSION, f"order-{args.order}", ttl=args.ttl) as run:
        print(run.run_id, flush=True)
        result = workflow(run, args.order, args.effects, args.pause_in)
        run.end(result)
    print(f"order {args.order} done by {run.owner}", flush=True)


def recover(client, args):
    """Claims and finishes orphaned runs until one is done or --wait passes
    with none to take."""
    deadline = time.monotonic() + args.wait
    while time.monotonic() < deadline:
        for info in client.runs.recoverable(APP):
            try:
                run = client.runs.claim(info.run_id, ttl=args.ttl)
            except reel.FailedPrecondition:
                continue                  # another worker was quicker
            with run:
                order = info.invocation_id.removeprefix("order-")
                result = workflow(run, order, args.effects)
                run.end(result)
            print(f"recovered {run.run_id} (order {order}) at epoch {run.epoch}", flush=True)
            return 0
        time.sleep(0.2)                   # poll for expired leases
    print("nothing to recover", file=sys.stderr)
    return 1


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("mode", choices=["work", "recover"])
    ap.add_argument("--addr", default=None, help="reeld (default $REEL_ADDR or 127.0.0.1:7878)")
    ap.add_argument("--order", default="42")
    ap.add_argument("--effects", default="effects.log", help="where effects are recorded")
    ap.add_argument("--ttl", type=float, default=2.0, help="lease TTL in seconds")
    ap.add_argument("--wait", type=float, default=30.0, help="recover: how long to look")
    ap.add_argument("--pause-in", default=None, help="block inside this step (for tests)")
    args = ap.parse_args()
    with reel.connect(args.addr) as client:
        if args.mode == "work":
            work(client, args)
            return 0
        return recover(client, args)


if __name__ == "__main__":
    sys.exit(main())
