"""reel-sink's benchmarks (issue 20), one step of bench/run.sh.

On a fresh reeld of its own: `reel-bench tail` stores the events and
measures the WAL tail's own rate (SubscribeEvents and SubscribeEventBatches)
on them; then reel-sink delivers the last N of them, a fresh sink (a new
durable consumer) per row, to bench/sink_receiver.c, which answers 200 at
once:

  ordered       one request at a time, in order, over keep-alive
  concurrent    64 requests in flight
  batched       ordered, 100 events a request
  nats          to a local nats-server -js (Debian's), acknowledged by
                JetStream: the rate at which the sink's cursor moves; as
                JSON (the webhook's data) and as the stored protobuf

and last, latency: an ordered sink from "now" while one client writes
1,000 events/s; each event's time from the write being sent (an upper
bound of its commit) to the receiver getting it, p50 and p99.

  /usr/bin/python3 bench/sink_bench.py --reeld R --reel-sink S \\
      --receiver SR --reel-bench RB [--nats-server N] --run-dir D --json OUT
      [--events N] [--latency-seconds S] [--rate R]

Writes OUT: {"params": {...}, "rows": [{"row", "events", "seconds",
"events_per_s", ...}]}. Exits non-zero if a row could not be measured (the
others are still written).
"""
import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def log(msg):
    print(f"sink_bench: {msg}", file=sys.stderr, flush=True)


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
        time.sleep(0.02)


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


class Bench:
    def __init__(self, a):
        import grpc
        from reel.v1 import kv_pb2, wal_pb2
        self.a, self.K, self.W = a, kv_pb2, wal_pb2
        self.procs = []
        self.rows = []
        self.failed = []
        self.reel_addr = f"127.0.0.1:{free_port()}"
        self.reeld = self.spawn("reeld", [a.reeld, "--data-dir", os.path.join(a.run_dir, "sink-reel"),
                                          "--listen", self.reel_addr])
        wait_port(int(self.reel_addr.split(":")[1]), self.reeld, "reeld")
        self.ch = grpc.insecure_channel(self.reel_addr)
        self.set_ = self.ch.unary_unary("/reel.v1.KV/SetValue",
                                        request_serializer=kv_pb2.SetValueRequest.SerializeToString,
                                        response_deserializer=kv_pb2.SetValueResponse.FromString)
        self.head_ = self.ch.unary_unary("/reel.v1.Wal/GetHead",
                                         request_serializer=wal_pb2.GetHeadRequest.SerializeToString,
                                         response_deserializer=wal_pb2.GetHeadResponse.FromString)
        self.consumers = self.ch.unary_unary(
            "/reel.v1.Wal/ListConsumers",
            request_serializer=wal_pb2.ListConsumersRequest.SerializeToString,
            response_deserializer=wal_pb2.ListConsumersResponse.FromString)
        self.rport = free_port()
        self.receiver = self.spawn("sink-receiver", [a.receiver, "--port", str(self.rport),
                                                     "--record", "1000000"])
        wait_port(self.rport, self.receiver, "sink-receiver")

    def spawn(self, name, argv):
        log("starting " + " ".join(argv))
        p = subprocess.Popen(argv, stdout=open(os.path.join(self.a.run_dir, name + ".log"), "ab"),
                             stderr=subprocess.STDOUT)
        self.procs.append(p)
        return p

    def stop(self, p, timeout=30):
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        return p.returncode

    def close(self):
        for p in reversed(self.procs):
            self.stop(p)

    def get(self, path):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.rport}{path}", timeout=10) as r:
            return r.read().decode()

    def count(self):
        n, first, last = self.get("/count").split()
        return int(n), int(first), int(last)

    def head(self):
        return self.head_(self.W.GetHeadRequest(), timeout=10).head_revision

    def acked(self, name):
        for c in self.consumers(self.W.ListConsumersRequest(), timeout=10).consumers:
            if c.name == name:
                return c.acked_revision
        return 0

    def sink(self, name, conf):
        path = os.path.join(self.a.run_dir, f"sink-{name}.json")
        with open(path, "w") as f:
            json.dump({"sinks": [dict(name=name, **conf)]}, f)
        return self.spawn(f"reel-sink-{name}", [self.a.reel_sink, "--reel", self.reel_addr,
                                                 "--config", path])

    def tail(self):
        """reel-bench tail: stores the events, then measures the WAL tail."""
        out = os.path.join(self.a.run_dir, "sink-tail.json")
        cmd = [self.a.reel_bench, "tail", "--addr", self.reel_addr, "--events",
               str(self.a.events), "--json", out]
        log(" ".join(cmd))
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        with open(out) as f:
            for r in json.load(f).get("rows", []):
                self.rows.append({"row": "WAL tail, " + r.get("rpc", "SubscribeEvents"),
                                  "events": r.get("events"), "seconds": r.get("seconds"),
                                  "events_per_s": r.get("events_per_s")})

    def webhook(self, row, n, extra):
        self.get("/reset")
        head = self.head()
        name = "bench-" + row.replace(" ", "-")
        conf = {"type": "webhook", "url": f"http://127.0.0.1:{self.rport}/hook",
                "secrets": [SECRET], "from": max(head - n, 0)}
        conf.update(extra)
        p = self.sink(name, conf)
        t0 = time.monotonic()
        wait_for(f"{row}: {n} events", lambda: self.count()[0] >= n, 600)
        wall = time.monotonic() - t0
        got, first, last = self.count()
        self.stop(p)
        secs = (last - first) / 1e6
        self.rows.append({"row": "webhook, " + row, "events": got, "seconds": round(secs, 3),
                          "events_per_s": round(got / secs) if secs > 0 else None,
                          "seconds_from_start": round(wall, 3)})
        log(f"{row}: {got} events in {secs:.2f} s: {got / secs if secs else 0:.0f}/s")

    def nats(self, n, fmt="json"):
        port = free_port()
        d = os.path.join(self.a.run_dir, "nats-" + fmt)
        srv = self.spawn("nats-server-" + fmt, [self.a.nats_server, "-js", "-a", "127.0.0.1", "-p",
                                         str(port), "-sd", d])
        wait_port(port, srv, "nats-server")
        head = self.head()
        start = max(head - n, 0)
        name = "bench-nats-" + fmt
        p = self.sink(name, {"type": "nats", "servers": [f"nats://127.0.0.1:{port}"],
                             "stream": "REELBENCH_" + fmt.upper(), "subject_prefix": "bench_" + fmt,
                             "format": fmt, "from": start})
        wait_for("the first ack", lambda: self.acked("sink." + name) > start, 120)
        t1, a1 = time.monotonic(), self.acked("sink." + name)
        wait_for("every ack", lambda: self.acked("sink." + name) >= head, 600)
        t2 = time.monotonic()
        self.stop(p)
        self.stop(srv)
        events = head - a1
        secs = t2 - t1
        self.rows.append({"row": f"nats ({fmt}), acknowledged by JetStream", "events": events,
                          "seconds": round(secs, 3),
                          "events_per_s": round(events / secs) if secs > 0 else None})
        log(f"nats {fmt}: {events} events in {secs:.2f} s: {events / secs:.0f}/s")

    def latency(self, seconds, rate):
        self.get("/reset")
        p = self.sink("bench-latency", {"type": "webhook", "from": "now",
                                        "url": f"http://127.0.0.1:{self.rport}/hook",
                                        "secrets": [SECRET]})
        # Subscribed once a write reaches the receiver (one written before
        # the sink read the head never does: write until one does).
        def probe():
            self.set_(self.K.SetValueRequest(namespace="lat", key="probe", value="1"), timeout=10)
            return self.count()[0] >= 1
        wait_for("a probe", probe, 60)
        self.get("/reset")
        sent = {}
        lock = threading.Lock()
        total = int(seconds * rate)
        writers = 4  # blocking calls release the GIL; futures' callbacks did not keep up

        def write(w):
            t0 = start
            for i in range(w, total, writers):
                delay = t0 + i / rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                t_send = time.time_ns() // 1000
                try:
                    rev = self.set_(self.K.SetValueRequest(namespace="lat", key=f"k{i % 100}",
                                                           value='{"i":%d}' % i),
                                    timeout=30).entry.revision
                except Exception:  # noqa: BLE001 - counted as missing below
                    continue
                with lock:
                    sent[rev] = (t_send, time.time_ns() // 1000)

        start = time.monotonic()
        t0 = start
        threads = [threading.Thread(target=write, args=(w,)) for w in range(writers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        achieved = total / (time.monotonic() - t0)
        wait_for("every latency event", lambda: self.count()[0] >= len(sent), 120)
        self.stop(p)
        got = {}
        for line in self.get("/times").splitlines():
            rev, us = line.split()
            got[int(rev)] = int(us)
        # The commit lies between the write being sent and its answer: the
        # first is an upper bound of commit-to-receipt, the second a lower.
        lats = sorted(got[r] - t[0] for r, t in sent.items() if r in got)
        after = sorted(got[r] - t[1] for r, t in sent.items() if r in got)
        if not lats:
            raise RuntimeError("no latency samples")

        def pct(v, q):
            return v[min(len(v) - 1, int(q * len(v)))]
        self.rows.append({"row": "webhook, ordered: commit to receipt", "events": len(lats),
                          "rate": round(achieved), "p50_us": pct(lats, 0.50),
                          "p99_us": pct(lats, 0.99), "max_us": lats[-1],
                          "after_answer_p50_us": pct(after, 0.50),
                          "after_answer_p99_us": pct(after, 0.99),
                          "missing": total - len(lats)})
        log(f"latency: from the write sent p50 {pct(lats, 0.5)} us p99 {pct(lats, 0.99)} us; "
            f"from its answer p50 {pct(after, 0.5)} us p99 {pct(after, 0.99)} us "
            f"({len(lats)} events)")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reeld", required=True)
    ap.add_argument("--reel-sink", required=True)
    ap.add_argument("--receiver", required=True)
    ap.add_argument("--reel-bench", required=True)
    ap.add_argument("--nats-server", default="")
    ap.add_argument("--run-dir", required=True)
    ap.add_argument("--json", required=True)
    ap.add_argument("--events", type=int, default=200000)
    ap.add_argument("--ordered-events", type=int, default=30000)
    ap.add_argument("--latency-seconds", type=float, default=10)
    ap.add_argument("--rate", type=int, default=1000)
    a = ap.parse_args()
    stubs()
    b = Bench(a)
    steps = [("tail", b.tail),
             ("ordered", lambda: b.webhook("ordered", min(a.ordered_events, a.events), {})),
             ("concurrent", lambda: b.webhook("concurrent 64", a.events,
                                              {"mode": "concurrent", "max_in_flight": 64})),
             ("batched", lambda: b.webhook("batched 100", a.events, {"batch_max_events": 100}))]
    if a.nats_server:
        steps.append(("nats", lambda: b.nats(a.events)))
        steps.append(("nats-protobuf", lambda: b.nats(a.events, "protobuf")))
    steps.append(("latency", lambda: b.latency(a.latency_seconds, a.rate)))
    try:
        for name, fn in steps:
            try:
                fn()
            except Exception as e:  # noqa: BLE001 - one row failing, the rest go on
                log(f"{name} FAILED: {e}")
                b.failed.append(name)
    finally:
        b.close()
    with open(a.json, "w") as f:
        json.dump({"params": {"events": a.events, "ordered_events": a.ordered_events,
                              "latency_seconds": a.latency_seconds, "rate": a.rate,
                              "failed": b.failed},
                   "rows": b.rows}, f, indent=1)
    return 1 if b.failed else 0


if __name__ == "__main__":
    sys.exit(main())
