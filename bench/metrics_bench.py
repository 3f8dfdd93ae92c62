"""What serving and scraping /metrics costs the write path (issue 24), one
step of bench/run.sh.

`reel-bench set` at 64 in flight against a fresh reeld without metrics,
then against a fresh reeld with --metrics-listen whose /metrics is scraped
every second (as a Prometheus server would, only 15 times more often),
alternating the order each round so drift on the machine falls on both
alike. The target: at most 3% fewer writes/s with metrics.

  /usr/bin/python3 bench/metrics_bench.py --reeld R --reelctl C \\
      --reel-bench RB --run-dir D --json OUT [--rounds N] [--duration S]

Five rounds by default: on a shared machine one run's writes/s moves by
tens of percent, so the difference is taken within each round (its two
runs are back to back) and its median over the rounds reported, beside
reeld's CPU per write, which other load sways less.

Writes OUT: {"params": {...}, "rows": [{"row", "ops_per_s", "rounds",
"p50_us", "p99_us", "server_cpu_us_per_op", "scrapes"} for off and on (the
medians over the rounds), {"row": "difference ...", "pct", "cpu_pct"}]}.
Exits non-zero if a run failed.
"""
import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request


def log(msg):
    print(f"metrics_bench: {msg}", file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_once(args, metrics, n):
    """One reel-bench set run on a fresh reeld: its row at 64, and how many
    scrapes it took."""
    data = os.path.join(args.run_dir, f"metrics-bench-{n}-{int(metrics)}")
    addr = f"127.0.0.1:{free_port()}"
    mport = free_port()
    cmd = [args.reeld, "--data-dir", data, "--listen", addr, "--log-level", "warn"]
    if metrics:
        cmd += ["--metrics-listen", f"127.0.0.1:{mport}"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    scrapes, stop = [0], threading.Event()
    try:
        for _ in range(100):
            if subprocess.run([args.reelctl, "--addr", addr, "--timeout", "1s", "health"],
                              capture_output=True).returncode == 0:
                break
            time.sleep(0.1)
        else:
            raise RuntimeError("reeld did not serve within 10 s")

        def scraper():
            while not stop.wait(1.0):
                with urllib.request.urlopen(f"http://127.0.0.1:{mport}/metrics",
                                            timeout=5) as r:
                    r.read()
                scrapes[0] += 1
        t = threading.Thread(target=scraper, daemon=True)
        if metrics:
            t.start()
        out = os.path.join(args.run_dir, f"metrics-bench-{n}-{int(metrics)}.json")
        subprocess.run([args.reel_bench, "set", "--addr", addr, "--pid", str(proc.pid),
                        "--target", "reel", "--duration", str(args.duration),
                        "--concurrency", "64", "--value-bytes", "256", "--json", out],
                       check=True, stdout=subprocess.DEVNULL)
        stop.set()
        if metrics:
            t.join()
        with open(out) as f:
            row = json.load(f)["rows"][0]
        os.unlink(out)
        return row, scrapes[0]
    finally:
        stop.set()
        proc.terminate()
        proc.wait(timeout=30)
        shutil.rmtree(data, ignore_errors=True)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--reeld", required=True)
    p.add_argument("--reelctl", required=True)
    p.add_argument("--reel-bench", required=True)
    p.add_argument("--run-dir", required=True)
    p.add_argument("--json", required=True)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--duration", type=int, default=10)
    args = p.parse_args()

    runs = {False: [], True: []}
    load_before = os.getloadavg()[0]
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    for n in range(args.rounds):
        # off, on; then on, off: drift falls on both alike
        for metrics in ((False, True) if n % 2 == 0 else (True, False)):
            row, scrapes = run_once(args, metrics, n)
            log(f"round {n + 1}, metrics {'on' if metrics else 'off'}: "
                f"{row['ops_per_s']:.0f} writes/s, reeld "
                f"{row['server_cpu_us_per_op']:.1f} us CPU each "
                f"({scrapes} scrapes)")
            runs[metrics].append((row, scrapes))

    def summary(name, rs):
        med = lambda k: statistics.median(r[k] for r, _ in rs)
        return {"row": name, "ops_per_s": med("ops_per_s"),
                "rounds": ", ".join(f"{r['ops_per_s']:.0f}" for r, _ in rs),
                "p50_us": med("p50_us"), "p99_us": med("p99_us"),
                # reeld's CPU per write: what metrics add, and less
                # swayed than writes/s by whatever else the machine runs
                "server_cpu_us_per_op": med("server_cpu_us_per_op"),
                "scrapes": sum(s for _, s in rs)}
    off = summary("set@64, no metrics", runs[False])
    on = summary("set@64, --metrics-listen, scraped every 1 s", runs[True])
    # Each round's two runs are back to back: the difference within a
    # round, its median over the rounds, is what drift on a shared machine
    # sways least.
    def paired(k):
        return statistics.median((b[k] - a[k]) / a[k] * 100
                                 for (a, _), (b, _) in zip(runs[False], runs[True]))
    diff = {"row": "difference (metrics on vs off), median of the rounds' pairs",
            "pct": paired("ops_per_s"), "cpu_pct": paired("server_cpu_us_per_op")}
    version = subprocess.run([args.reeld, "--version"], capture_output=True,
                             text=True).stdout.split()[-1:] or ["?"]
    doc = {"tool": "metrics_bench.py", "bench": "metrics", "version": version[0],
           "params": {"rounds": args.rounds, "duration_s": args.duration,
                      "concurrency": 64, "value_bytes": 256, "scrape_interval_s": 1,
                      "started": started,
                      # what else ran: the machine's 1-minute load average
                      # before and after (it has os.cpu_count() CPUs)
                      "load_before": round(load_before, 1),
                      "load_after": round(os.getloadavg()[0], 1),
                      "cpus": os.cpu_count()},
           "rows": [off, on, diff]}
    with open(args.json, "w") as f:
        json.dump(doc, f, indent=1)
    log(f"off {off['ops_per_s']:.0f}/s, on {on['ops_per_s']:.0f}/s: "
        f"{diff['pct']:+.1f}%; reeld CPU per write {diff['cpu_pct']:+.1f}%")


if __name__ == "__main__":
    main()
