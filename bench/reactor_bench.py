"""reel-reactor's push latency (issue 21), one step of bench/run.sh.

On a fresh reeld of its own, with reel-reactor (sweep off: every dispatch
comes from the WAL event) and a local HTTP worker in this process that
claims each dispatched run with ClaimRun(expected_epoch), as
docs/reactor.md tells a worker to. Each run is begun and suspended
beforehand; then, one at a time at --rate runs/s, its signal is sent
(SendSignal commits it RUNNABLE), and the run's latency is from the
signal being sent to the worker's ClaimRun returning:

  signal sent -> run claimed    the whole push path: reeld's commit (an
                                fsync), the WAL event to reel-reactor, the
                                signed POST, the worker's ClaimRun (another
                                commit)
  signal acknowledged           SendSignal alone, for comparison
  lease expiry -> run claimed   with issue 21's server side (Run has
                                `attempt`): runs begun with a 200 ms lease
                                and never heartbeated, from the lease's
                                expiry (lease_expires_at_ms, reeld's
                                clock, the same machine's) to the claim:
                                reeld's timer, the LEASE_EXPIRED event, the
                                push, the claim

p50, p99 and max of each. The worker is Python's ThreadingHTTPServer and
grpcio: its own share (a millisecond or so) is in the figures.

  /usr/bin/python3 bench/reactor_bench.py --reeld R --reel-reactor X \\
      --run-dir D --json OUT [--runs N] [--rate R]

Writes OUT: {"params": {...}, "rows": [{"row", "runs", "p50_ms", "p99_ms",
"max_ms"}]}. Exits non-zero if the rows could not be measured.
"""
import argparse
import http.server
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def log(msg):
    print(f"reactor_bench: {msg}", file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stubs():
    """reel.v1's Python messages, generated with /usr/bin/protoc."""
    gen = tempfile.mkdtemp(prefix="reel-bench-pb2-")
    protos = [os.path.join("api/reel/v1", p)
              for p in sorted(os.listdir(os.path.join(ROOT, "api/reel/v1")))
              if p.endswith(".proto")]
    subprocess.run(["/usr/bin/protoc", "--python_out=" + gen, "-Iapi"] + protos,
                   cwd=ROOT, check=True)
    sys.path.insert(0, gen)


def wait_for(what, cond, timeout):
    t0 = time.monotonic()
    while True:
        got = cond()
        if got:
            return got
        if time.monotonic() - t0 > timeout:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.005)


def wait_port(port, proc, what):
    def up():
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return True
        except OSError:
            return False
    wait_for(what, up, 20)


def varint(v):
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        out.append(b | 0x80 if v else b)
        if not v:
            return bytes(out)


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p / 100))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reeld", required=True)
    ap.add_argument("--reel-reactor", required=True)
    ap.add_argument("--run-dir", required=True)
    ap.add_argument("--json", required=True)
    ap.add_argument("--runs", type=int, default=1000)
    ap.add_argument("--rate", type=float, default=100.0)
    a = ap.parse_args()
    stubs()
    import grpc
    from reel.v1 import journal_pb2 as J
    from reel.v1 import signals_pb2 as S

    procs = []

    def spawn(name, argv):
        log("starting " + " ".join(argv))
        p = subprocess.Popen(argv, stdout=open(os.path.join(a.run_dir, name + ".log"), "ab"),
                             stderr=subprocess.STDOUT)
        procs.append(p)
        return p

    os.makedirs(a.run_dir, exist_ok=True)
    addr = f"127.0.0.1:{free_port()}"
    reeld = spawn("reeld-reactor", [a.reeld, "--data-dir", os.path.join(a.run_dir, "reactor-reel"),
                                    "--listen", addr])
    rc = 1
    try:
        wait_port(int(addr.split(":")[1]), reeld, "reeld")
        ch = grpc.insecure_channel(addr)
        begin = ch.unary_unary("/reel.v1.Journal/BeginRun",
                               request_serializer=J.BeginRunRequest.SerializeToString,
                               response_deserializer=J.Run.FromString)
        suspend = ch.unary_unary("/reel.v1.Journal/SuspendRun",
                                 request_serializer=J.SuspendRunRequest.SerializeToString,
                                 response_deserializer=J.Run.FromString)
        send = ch.unary_unary("/reel.v1.Signals/SendSignal",
                              request_serializer=S.SendSignalRequest.SerializeToString,
                              response_deserializer=S.SendSignalResponse.FromString)
        claim = ch.unary_unary("/reel.v1.Journal/ClaimRun", request_serializer=lambda b: b,
                               response_deserializer=J.Run.FromString)
        claimed, claimed_wall, lock, errors = {}, {}, threading.Lock(), []

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                d = json.loads(body)["data"]
                req = J.ClaimRunRequest(run_id=d["run_id"], lease_owner="bench-worker")
                raw = req.SerializeToString() + b"\x20" + varint(d["epoch"])
                status = 200
                try:
                    claim(raw, timeout=10)
                    with lock:
                        claimed.setdefault(d["run_id"], time.monotonic())
                        claimed_wall.setdefault(d["run_id"], time.time() * 1000)
                except grpc.RpcError as e:
                    status = 409 if e.code() == grpc.StatusCode.FAILED_PRECONDITION else 500
                    if status == 500:
                        errors.append(str(e))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        wport = free_port()
        srv = http.server.ThreadingHTTPServer(("127.0.0.1", wport), Handler)
        srv.daemon_threads = True
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        cfg = os.path.join(a.run_dir, "reactor.json")
        with open(cfg, "w") as f:
            json.dump({"apps": [{"app": "bench", "url": f"http://127.0.0.1:{wport}/run",
                                 "secrets": [SECRET], "max_in_flight": 64}],
                       "sweep_interval_ms": 0}, f)
        spawn("reel-reactor", [a.reel_reactor, "--reel", addr, "--config", cfg])

        log(f"preparing {a.runs} waiting runs")
        runs = []
        for i in range(a.runs):
            r = begin(J.BeginRunRequest(app="bench", user="u", session=f"s{i}",
                                        invocation_id=f"i{i}", lease_owner="starter"), timeout=10)
            suspend(J.SuspendRunRequest(run_id=r.run_id, lease_epoch=r.lease_epoch,
                                        waiting_on="go"), timeout=10)
            runs.append(r.run_id)
        # One run first, unmeasured: the reactor's consumer is subscribed.
        warm = runs.pop(0)
        send(S.SendSignalRequest(run_id=warm, name="go"), timeout=10)
        wait_for("the warm-up run claimed", lambda: warm in claimed, 30)

        log(f"measuring {len(runs)} runs at {a.rate}/s")
        sent, acked = {}, {}
        gap, nxt = 1.0 / a.rate, time.monotonic()
        for run_id in runs:
            now = time.monotonic()
            if now < nxt:
                time.sleep(nxt - now)
            nxt += gap
            sent[run_id] = time.monotonic()
            send(S.SendSignalRequest(run_id=run_id, name="go"), timeout=10)
            acked[run_id] = time.monotonic()
        wait_for("every run claimed", lambda: len(claimed) == len(runs) + 1, 60)
        if errors:
            raise RuntimeError(f"claims failed: {errors[:3]}")
        push = [(claimed[r] - sent[r]) * 1000 for r in runs]
        sig = [(acked[r] - sent[r]) * 1000 for r in runs]
        rows = [{"row": "push: signal sent -> run claimed", "runs": len(runs),
                 "p50_ms": pct(push, 50), "p99_ms": pct(push, 99), "max_ms": max(push)},
                {"row": "SendSignal acknowledged (for comparison)", "runs": len(runs),
                 "p50_ms": pct(sig, 50), "p99_ms": pct(sig, 99), "max_ms": max(sig)}]
        if "attempt" in J.Run.DESCRIPTOR.fields_by_name:
            n = min(200, len(runs))
            log(f"measuring {n} lease expiries")
            expiry = {}
            for i in range(n):
                r = begin(J.BeginRunRequest(app="bench", user="u", session=f"l{i}",
                                            invocation_id=f"l{i}", lease_owner="doomed",
                                            lease_ttl_ms=200), timeout=10)
                expiry[r.run_id] = r.lease_expires_at_ms
                time.sleep(0.02)
            wait_for("every expired run claimed", lambda: set(expiry) <= set(claimed), 60)
            lat = [claimed_wall[k] - v for k, v in expiry.items()]
            rows.append({"row": "push: lease expiry -> run claimed", "runs": n,
                         "p50_ms": pct(lat, 50), "p99_ms": pct(lat, 99), "max_ms": max(lat)})
        else:
            log("reeld's Run has no attempt (issue 21's server side): no lease-expiry row")
        for row in rows:
            log(f"{row['row']}: p50 {row['p50_ms']:.2f} ms, p99 {row['p99_ms']:.2f} ms, "
                f"max {row['max_ms']:.2f} ms over {row['runs']} runs")
        with open(a.json, "w") as f:
            json.dump({"params": {"runs": len(runs), "rate": a.rate}, "rows": rows}, f, indent=1)
        srv.shutdown()
        rc = 0
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
    return rc


if __name__ == "__main__":
    sys.exit(main())
