"""A worker process for the recovery tests (tests/e2e/test_recovery.py).

    recoveryworker.py ADDR APP INVOCATION TTL_MS STEPS

Begins the run (APP, u, s, INVOCATION) as owner "doomed", heartbeats every
TTL/4 on a thread, appends STEPS entries (kind "step", idempotency key
"step-N"), prints "RUN <run_id> <epoch>" first and "APPENDED <n>" after
each append, then keeps heartbeating until it is killed.
"""
import os
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import reeltest  # noqa: E402

reeltest.generate()

import grpc  # noqa: E402
from reel.v1 import journal_pb2 as pb  # noqa: E402


def main():
    addr, app, inv, ttl, steps = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), \
        int(sys.argv[5])
    ch = grpc.insecure_channel(addr)
    call = lambda name, req, resp: reeltest.unary(ch, f"/reel.v1.Journal/{name}", req, resp)
    begin = call("BeginRun", pb.BeginRunRequest, pb.Run)
    heartbeat = call("Heartbeat", pb.HeartbeatRequest, pb.Run)
    append = call("Append", pb.AppendRequest, pb.AppendResponse)
    run = begin(pb.BeginRunRequest(app=app, user="u", session="s", invocation_id=inv,
                                   lease_owner="doomed", lease_ttl_ms=ttl), timeout=10)
    print(f"RUN {run.run_id} {run.lease_epoch}", flush=True)

    def beat():
        while True:
            heartbeat(pb.HeartbeatRequest(run_id=run.run_id, lease_epoch=run.lease_epoch,
                                          lease_ttl_ms=ttl), timeout=10)
            time.sleep(ttl / 4000)

    threading.Thread(target=beat, daemon=True).start()
    for n in range(1, steps + 1):
        append(pb.AppendRequest(run_id=run.run_id, lease_epoch=run.lease_epoch, kind="step",
                                payload=f'{{"n":{n}}}', idempotency_key=f"step-{n}"),
               timeout=10)
        print(f"APPENDED {n}", flush=True)
    while True:
        time.sleep(1)


if __name__ == "__main__":
    main()
