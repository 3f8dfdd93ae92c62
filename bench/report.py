#!/usr/bin/python3
"""Writes bench/RESULTS.md and bench/throughput.png from bench/results/.

    /usr/bin/python3 bench/report.py bench/results [--out-dir bench]
    /usr/bin/python3 bench/report.py machine --run-dir DIR --out FILE \\
        [--reeld PATH] [--reel-bench PATH] [--quick 0|1]
    /usr/bin/python3 bench/report.py sequential bench/results
    /usr/bin/python3 bench/report.py workspace bench/results/workspace
    /usr/bin/python3 bench/report.py security bench/results/security

The first form reads what bench/run.sh left in the results directory (the
reel-bench JSON files, db_bench's output, commands.txt, machine.json) and
writes the report next to it: every figure in tables, the ratios against
db_bench and etcd, the issue's targets with PASS or MISS, and a gnuplot chart
of ops/s against concurrency. Whatever is missing is reported as "not
measured", never guessed.

The second form (run by bench/run.sh at the start of a run) records the
machine, the versions and the commit into machine.json, so that the report
describes the machine that measured, wherever it is regenerated.

The third form prints only the "Sequential writes" section (issue 19) to
standard output, for a run of that section alone (BENCH_ONLY=sequential);
the fourth, the "Workspace" section (issue 22; BENCH_ONLY=workspace); the
fifth, the "Security overhead" section (issue 23; BENCH_ONLY=security).

Standard library only; gnuplot (Debian's gnuplot-nox) draws the chart.
"""

import datetime
import json
import math
import os
import platform
import re
import shutil
import subprocess
import statistics
import sys

NOT_MEASURED = "not measured"

# The targets, as numbers.
SET_VS_DBBENCH = 1.0          # set@64 >= 1.0 x db_bench fillrandom@32 threads
SET_VS_ETCD = 2.0             # set@64 >= 2 x etcd set@64
APPEND_VS_SET = 0.90          # append@64 >= 0.9 x set@64 ("within 10%")
WATCH_P99_US = 5000           # watch exact, 1000 watchers, 1000 writes/s
WATCH_VS_ETCD = 2.0           # etcd p99 / reel p99 >= 2, same row
SIGNAL_P99_US = 5000
TAIL_EVENTS_PER_S = 300000
BYTES_PER_WATCHER = 2048
STALLED_GROWTH_KIB = 64 * 1024  # "flat RSS": rss_max - rss_start < 64 MiB
RESTART_READY_MS = 1000
# issue 20: reel-sink
SINK_ORDERED_PER_S = 3000
SINK_FAST_PER_S = 20000
SINK_NATS_PER_S = 50000
SINK_P99_US = 10000

# issue 19: the sequential write path
SEQ_P50_VS_FLOOR = 1.10       # set@1, append@1 p50 <= 1.10 x (get@1 p50 + db_bench@1 us/op)
SEQ_P99_VS_FLOOR = 2.0        # their p99 <= 2 x the same floor
SEQ_CPU_US = 80               # reeld CPU per set@1
IDLE_PCT = 1.0                # an idle reeld under 1% of a core over 30 s
SEQ_CPU_VS_ETCD = 0.6         # reeld CPU per set@64 <= 0.6 x etcd's per Put@64
SEQ_SET64_VS_ETCD = 1.25      # set@64 ops/s >= 1.25 x etcd's, same client
SEQ_SET1_VS_ETCD = 1.2        # set@1 ops/s >= 1.2 x etcd's, same client

SET_C = 64         # the concurrency the targets name
DBBENCH_T = 32     # the db_bench thread count the targets name
WATCH_N = 1000     # watchers in the watch targets
WATCH_RATE = 1000  # writes/s in the watch targets

CHART_X = [1, 8, 32, 64, 256]


# --------------------------------------------------------------------------
# machine.json


def run_cmd(argv, timeout=20):
    """stdout of argv (stripped), or None if it cannot run or fails."""
    try:
        p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           timeout=timeout, text=True, errors="replace")
    except (OSError, subprocess.SubprocessError):
        return None
    if p.returncode != 0:
        return None
    return p.stdout.strip()


def first_line(s):
    return s.splitlines()[0].strip() if s else None


def read_text(path):
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read().strip()
    except OSError:
        return None


def block_device(path):
    """What /sys says about the block device holding path."""
    try:
        st = os.stat(path)
    except OSError:
        return {}
    major, minor = os.major(st.st_dev), os.minor(st.st_dev)
    sys_dev = "/sys/dev/block/%d:%d" % (major, minor)
    if not os.path.exists(sys_dev):
        return {}  # e.g. overlayfs or tmpfs: no device of its own
    dev = os.path.realpath(sys_dev)
    if os.path.exists(os.path.join(dev, "partition")):
        dev = os.path.dirname(dev)
    info = {"device": os.path.basename(dev)}
    # device-mapper (LVM, crypt): describe the first device underneath
    slaves = os.path.join(dev, "slaves")
    if os.path.isdir(slaves) and os.listdir(slaves):
        info["dm_name"] = read_text(os.path.join(dev, "dm", "name"))
        under = os.path.realpath(os.path.join(slaves, sorted(os.listdir(slaves))[0]))
        if os.path.exists(os.path.join(under, "partition")):
            under = os.path.dirname(under)
        info["underlying"] = os.path.basename(under)
        dev = under
    for key, rel in (("model", "device/model"), ("vendor", "device/vendor"),
                     ("rotational", "queue/rotational"), ("sectors", "size"),
                     ("scheduler", "queue/scheduler")):
        v = read_text(os.path.join(dev, rel))
        if v:
            info[key] = v
    drv = os.path.join(dev, "device", "driver")
    if os.path.exists(drv):
        info["driver"] = os.path.basename(os.path.realpath(drv))
    if "sectors" in info:
        try:
            info["size_bytes"] = int(info.pop("sectors")) * 512
        except ValueError:
            info.pop("sectors")
    return info


def collect_machine(args):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    m = {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
         "quick": args.get("quick") == "1"}
    nproc = run_cmd(["nproc"])
    m["cores"] = int(nproc) if nproc and nproc.isdigit() else os.cpu_count()
    cpuinfo = read_text("/proc/cpuinfo") or ""
    mm = re.search(r"^model name\s*:\s*(.+)$", cpuinfo, re.M)
    m["cpu"] = mm.group(1).strip() if mm else platform.processor() or None
    meminfo = read_text("/proc/meminfo") or ""
    mm = re.search(r"^MemTotal:\s*(\d+) kB", meminfo, re.M)
    m["mem_total_kib"] = int(mm.group(1)) if mm else None
    m["kernel"] = " ".join(x for x in (platform.system(), platform.release(), platform.machine()) if x)
    osr = read_text("/etc/os-release") or ""
    mm = re.search(r'^PRETTY_NAME="?([^"\n]*)"?$', osr, re.M)
    m["os"] = mm.group(1) if mm else None

    run_dir = args.get("run_dir") or root
    disk = {"path": os.path.relpath(run_dir, root) if run_dir.startswith(root) else run_dir}
    df = run_cmd(["df", "-PT", "-k", run_dir])
    if df and len(df.splitlines()) >= 2:
        f = df.splitlines()[-1].split()
        if len(f) >= 7:
            disk.update({"source": f[0], "fstype": f[1], "size_kib": int(f[2]),
                         "used_kib": int(f[3]), "avail_kib": int(f[4])})
    disk.update(block_device(run_dir))
    m["disk"] = disk

    git = ["git", "-C", root]
    m["commit"] = run_cmd(git + ["rev-parse", "HEAD"])
    m["describe"] = run_cmd(git + ["describe", "--always", "--tags"])
    # the run itself rewrites bench/results and the report: not "dirty"
    status = run_cmd(git + ["status", "--porcelain", "--", ".", ":!bench/results",
                            ":!bench/RESULTS.md", ":!bench/throughput.png"])
    m["dirty"] = bool(status) if status is not None else None

    v = {}
    if args.get("reeld"):
        v["reeld"] = first_line(run_cmd([args["reeld"], "--version"]))
    if args.get("reel_bench"):
        v["reel-bench"] = first_line(run_cmd([args["reel_bench"], "--version"]))
    v["etcd"] = first_line(run_cmd(["etcd", "--version"]))
    v["etcdctl"] = first_line(run_cmd(["etcdctl", "version"]))
    v["db_bench"] = first_line(run_cmd(["db_bench", "--version"]))
    v["gnuplot"] = first_line(run_cmd(["gnuplot", "--version"]))
    v["cc"] = first_line(run_cmd(["cc", "--version"]))
    for pkg in ("etcd-server", "rocksdb-tools", "librocksdb-dev", "libgrpc-dev", "bazel-bootstrap"):
        v["deb " + pkg] = run_cmd(["dpkg-query", "-W", "-f=${Version}", pkg])
    m["versions"] = {k: x for k, x in v.items() if x}
    return m


# --------------------------------------------------------------------------
# reading results


class Results:
    def __init__(self, d):
        self.dir = d
        self.problems = []   # files that exist but cannot be read
        self.bench = {}
        for name in ("set-reel", "set-etcd", "get-reel", "append-reel", "watch-reel", "watch-reel-batched",
                     "watch-etcd", "watch-reel-shared", "watch-etcd-shared",
                     "signal-reel", "tail-reel", "memory-reel", "restart-reel", "sink-reel",
                     "reactor-reel",
                     "set-plain-reel", "set-tls-reel", "get-plain-reel", "get-tls-reel",
                     "ws-reel", "ws-kv-alone", "ws-kv-upload", "metrics-reel",
                     "seq-set-reel", "seq-append-reel", "seq-get-reel", "seq-idle-reel",
                     "disk-gap"):
            self.bench[name] = self._json(name + ".json")
        # the security section's rounds: set-plain-reel-1.json, ...
        self.sec_rounds = 0
        for fn in sorted(os.listdir(d)) if os.path.isdir(d) else []:
            mm = re.fullmatch(r"((?:set|get)-(?:plain|tls)-reel-(\d+))\.json", fn)
            if mm:
                self.bench[mm.group(1)] = self._json(fn)
                self.sec_rounds = max(self.sec_rounds, int(mm.group(2)))
        self.dd = {k: self._dd("dd-%s.txt" % k) for k in ("write", "read")}  # MB/s
        self.ws_nats = self._jsonl("ws-nats.jsonl")
        self.dbbench = {}      # threads -> {"ops_per_s", "micros_per_op"}
        self.rocksdb_version = None
        self.dbbench_assertions = False
        for fn in sorted(os.listdir(d)) if os.path.isdir(d) else []:
            mm = re.fullmatch(r"db_bench-(\d+)\.txt", fn)
            if mm:
                self._dbbench(int(mm.group(1)), os.path.join(d, fn))
        self.machine = self._json("machine.json") or {}
        self.commands = read_text(os.path.join(d, "commands.txt"))

    def _json(self, fn):
        path = os.path.join(self.dir, fn)
        if not os.path.exists(path):
            return None
        try:
            with open(path, encoding="utf-8") as f:
                doc = json.load(f)
        except (OSError, ValueError) as e:
            self.problems.append("%s: unreadable (%s)" % (fn, e))
            return None
        if not isinstance(doc, dict):
            self.problems.append("%s: not a JSON object" % fn)
            return None
        return doc

    def _dd(self, fn):
        """MB/s (10^6 bytes a second) from dd's last line, or None."""
        text = read_text(os.path.join(self.dir, fn))
        mm = re.search(r"^(\d+) bytes .* copied, ([\d.]+) s", text or "", re.M)
        if not mm or float(mm.group(2)) <= 0:
            return None
        return int(mm.group(1)) / float(mm.group(2)) / 1e6

    def _jsonl(self, fn):
        text = read_text(os.path.join(self.dir, fn))
        rows = []
        for line in (text or "").splitlines():
            try:
                doc = json.loads(line)
            except ValueError:
                self.problems.append("%s: a line that is not JSON" % fn)
                continue
            if isinstance(doc, dict):
                rows.append(doc)
        return rows

    def _dbbench(self, threads, path):
        text = read_text(path) or ""
        mm = re.search(r"^RocksDB:\s+version\s+(\S+)", text, re.M)
        if mm:
            self.rocksdb_version = mm.group(1)
        if "Assertions are enabled" in text:
            self.dbbench_assertions = True
        mm = re.search(r"^fillrandom\s*:\s*([\d.]+) micros/op\s+(\d+) ops/sec(?:\s+[\d.]+ seconds\s+(\d+) operations)?",
                       text, re.M)
        if mm:
            d = self.dbbench[threads] = {"micros_per_op": float(mm.group(1)),
                                         "ops_per_s": float(mm.group(2))}
            # the CPU its step used (bench/run.sh), over the operations it did
            cpu = self._json("db_bench-%d.cpu.json" % threads) or {}
            ops, cpu_s = num(float(mm.group(3)) if mm.group(3) else None), num(cpu.get("cpu_s"))
            if ops and cpu_s is not None:
                d["cpu_us_per_op"] = cpu_s * 1e6 / ops
            if num(cpu.get("machine_busy_pct")) is not None:
                d["machine_busy_pct"] = num(cpu["machine_busy_pct"])
        else:
            self.problems.append("%s: no fillrandom result line" % os.path.basename(path))

    def rows(self, name):
        doc = self.bench.get(name)
        rows = doc.get("rows") if doc else None
        return [r for r in rows if isinstance(r, dict)] if isinstance(rows, list) else []

    def row(self, name, **match):
        for r in self.rows(name):
            if all(num(r.get(k)) == v if isinstance(v, (int, float)) else r.get(k) == v
                   for k, v in match.items()):
                return r
        return None

    def value(self, name, field, **match):
        r = self.row(name, **match)
        return num(r.get(field)) if r else None


def num(x):
    """x as a finite float, or None."""
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return None
    x = float(x)
    return x if math.isfinite(x) else None


# --------------------------------------------------------------------------
# formatting


def f_int(x):
    x = num(x)
    return "—" if x is None else "{:,}".format(int(round(x)))


def f_ms(us):
    us = num(us)
    if us is None:
        return "—"
    ms = us / 1000.0
    return "%.3f" % ms if ms < 0.1 else "%.2f" % ms


def f_ratio(x):
    return "—" if x is None else "%.2f×" % x


def f_mib(kib):
    kib = num(kib)
    return "—" if kib is None else "%.1f" % (kib / 1024.0)


def f_num(x):
    x = num(x)
    if x is None:
        return "—"
    return f_int(x) if abs(x) >= 100 or x == int(x) else "%.3g" % x


def ratio(a, b):
    return a / b if a is not None and b not in (None, 0) else None


def table(header, rows, numeric=True):
    """a Markdown table; numeric: every column but the first right-aligned"""
    out = ["| " + " | ".join(header) + " |",
           "|" + "|".join("---" if i == 0 or not numeric else "--:" for i in range(len(header))) + "|"]
    for r in rows:
        out.append("| " + " | ".join(str(c) for c in r) + " |")
    return "\n".join(out)


def params_line(doc):
    if not doc:
        return ""
    p = doc.get("params")
    parts = []
    if isinstance(p, dict):
        for k, v in p.items():
            parts.append("%s=%s" % (k, json.dumps(v) if isinstance(v, (dict, list)) else v))
    where = doc.get("target")
    head = "reel-bench %s" % (doc.get("version") or "?")
    if where:
        head += ", target %s" % where
    return "_%s; params: %s_" % (head, ", ".join(parts) if parts else "none recorded")


def extra_columns(rows, known):
    """numeric fields the rows carry beyond the known columns, in order of appearance"""
    seen = []
    for r in rows:
        for k, v in r.items():
            if k not in known and k not in seen and num(v) is not None:
                seen.append(k)
    return seen


# --------------------------------------------------------------------------
# the report


def delivery_note(row):
    """"" when a watch row received what it expected, else what went wrong"""
    if not row:
        return ""
    e, g = num(row.get("expected")), num(row.get("received"))
    if e is None or g is None or e == g:
        return ""
    if g < e:
        return "%s of %s notifications not received" % (f_int(e - g), f_int(e))
    return "%s notifications more than the %s expected" % (f_int(g - e), f_int(e))


def per_stream(row):
    """watchers per stream in a watch row (1 when each has its own)"""
    w, k = num(row.get("watchers")), num(row.get("streams"))
    return round(w / k) if w and k else 1


def targets(R):
    """[(target, measured, verdict)]"""
    out = []

    def verdict(ok):
        return "**PASS**" if ok else "**MISS**"

    set64 = R.value("set-reel", "ops_per_s", concurrency=SET_C)
    set64_err = R.value("set-reel", "errors", concurrency=SET_C)
    err_note = "; %s errors" % f_int(set64_err) if set64_err else ""
    db32 = R.dbbench.get(DBBENCH_T, {}).get("ops_per_s")
    etcd64 = R.value("set-etcd", "ops_per_s", concurrency=SET_C)
    app64 = R.value("append-reel", "ops_per_s", concurrency=SET_C)

    t = "set@%d ≥ %.1f× db_bench fillrandom --sync=1 @%d threads" % (SET_C, SET_VS_DBBENCH, DBBENCH_T)
    r = ratio(set64, db32)
    if r is None:
        out.append((t, NOT_MEASURED, NOT_MEASURED))
    else:
        out.append((t, "%s vs %s ops/s = %s%s" % (f_int(set64), f_int(db32), f_ratio(r), err_note),
                    verdict(r >= SET_VS_DBBENCH)))

    t = "set@%d ≥ %.0f× etcd set@%d" % (SET_C, SET_VS_ETCD, SET_C)
    r = ratio(set64, etcd64)
    if r is None:
        out.append((t, NOT_MEASURED, NOT_MEASURED))
    else:
        out.append((t, "%s vs %s ops/s = %s%s" % (f_int(set64), f_int(etcd64), f_ratio(r), err_note),
                    verdict(r >= SET_VS_ETCD)))

    t = "append@%d within 10%% of set@%d (append ≥ %.2f× set)" % (SET_C, SET_C, APPEND_VS_SET)
    r = ratio(app64, set64)
    if r is None:
        out.append((t, NOT_MEASURED, NOT_MEASURED))
    else:
        out.append((t, "%s vs %s ops/s = %s" % (f_int(app64), f_int(set64), f_ratio(r)),
                    verdict(r >= APPEND_VS_SET)))

    # reel's watch rows: a stream per watcher, each event its own message
    # (WatchValue), then batched (WatchValueBatches; etcd's watch responses
    # batch too); then watchers sharing streams, against etcd's own
    # multiplexing of watchers on a stream
    for bench, how, ebench in (("watch-reel", "`WatchValue`, an event per message", "watch-etcd"),
                               ("watch-reel-batched", "`WatchValueBatches`", "watch-etcd"),
                               ("watch-reel-shared", None, "watch-etcd-shared")):
        wr = R.row(bench, kind="exact", watchers=WATCH_N)
        we = R.row(ebench, kind="exact", watchers=WATCH_N)
        if bench != "watch-reel" and not wr:
            continue  # results from before this run existed
        if how is None:
            how = ("%s watchers per `WatchValuesBatches` stream, coalesced (etcd: as many per "
                   "`Watch` stream)" % f_int(per_stream(wr)))
        rate_note = ""
        if wr and num(wr.get("rate")) != WATCH_RATE:
            rate_note = "measured at %s writes/s, not %d" % (f_int(wr.get("rate")), WATCH_RATE)
        rp99 = num(wr.get("p99_us")) if wr else None
        ep99 = num(we.get("p99_us")) if we and wr and num(we.get("rate")) == num(wr.get("rate")) else None
        delivery = delivery_note(wr)
        t = "watch p99 < %d ms (exact key, %d watchers, %d writes/s), %s" % (
            WATCH_P99_US // 1000, WATCH_N, WATCH_RATE, how)
        if rp99 is None:
            out.append((t, NOT_MEASURED, NOT_MEASURED))
        elif rate_note:
            out.append((t, "p99 %s ms, %s" % (f_ms(rp99), rate_note), NOT_MEASURED))
        else:
            out.append((t, "p99 %s ms%s" % (f_ms(rp99), "; " + delivery if delivery else ""),
                        verdict(rp99 < WATCH_P99_US and not delivery)))
        t = "watch p99 ≥ %.0f× lower than etcd's (same row), %s" % (WATCH_VS_ETCD, how)
        r = ratio(ep99, rp99)
        enote = delivery_note(we)
        werr = num(we.get("write_errors")) if we else None
        if werr:
            # etcd overloaded too: say how many of its writes never landed
            enote = "%s of %s writes failed (%s)%s" % (
                f_int(werr), f_int(werr + (num(we.get("writes")) or 0)),
                we.get("first_write_error", "?"), ", " + enote if enote else "")
        if r is None:
            out.append((t, NOT_MEASURED, NOT_MEASURED))
        elif rate_note:
            out.append((t, "etcd/reel = %s, %s" % (f_ratio(r), rate_note), NOT_MEASURED))
        else:
            # A p99 over the events that arrived says nothing of those that
            # did not: with delivery incomplete the ratio earns no PASS.
            out.append((t, "reel %s ms vs etcd %s ms: etcd/reel = %s%s%s" % (
                f_ms(rp99), f_ms(ep99), f_ratio(r), "; etcd: " + enote if enote else "",
                "; reel: %s, so its p99 leaves them out" % delivery if delivery else ""),
                verdict(r >= WATCH_VS_ETCD and not delivery)))

    sp99 = R.value("signal-reel", "p99_us")
    t = "signal wake-up p99 < %d ms" % (SIGNAL_P99_US // 1000)
    if sp99 is None:
        out.append((t, NOT_MEASURED, NOT_MEASURED))
    else:
        failed = R.value("signal-reel", "failed")
        fnote = "; %s failed" % f_int(failed) if failed else ""
        alone = R.value("signal-reel", "send_alone_p99_us")
        if alone is not None:
            fnote += "; `SendSignal` alone after the same pause: p99 %s ms" % f_ms(alone)
        out.append((t, "p99 %s ms%s" % (f_ms(sp99), fnote), verdict(sp99 < SIGNAL_P99_US and not failed)))

    for rpc, how in (("SubscribeEvents", "one event per message, `SubscribeEvents`"),
                     ("SubscribeEventBatches", "events batched, `SubscribeEventBatches`")):
        t = "tail ≥ %s events/s to one subscriber, %s" % (f_int(TAIL_EVENTS_PER_S), how)
        # Results from before SubscribeEventBatches have one row, no "rpc".
        tail = R.value("tail-reel", "events_per_s", rpc=rpc)
        if tail is None and rpc == "SubscribeEvents" and len(R.rows("tail-reel")) == 1:
            tail = R.value("tail-reel", "events_per_s")
        if tail is None:
            out.append((t, NOT_MEASURED, NOT_MEASURED))
            continue
        r = R.row("tail-reel", rpc=rpc) or R.rows("tail-reel")[0]
        msgs = num(r.get("messages"))
        mnote = " in %s messages" % f_int(msgs) if msgs is not None else ""
        out.append((t, "%s events/s (%s events%s)" % (f_int(tail), f_int(r.get("events")), mnote),
                    verdict(tail >= TAIL_EVENTS_PER_S)))

    bpw = R.value("memory-reel", "bytes_per_watcher", test="idle_watchers")
    t = "memory ≤ %s bytes per idle watcher" % f_int(BYTES_PER_WATCHER)
    if bpw is None:
        out.append((t, NOT_MEASURED, NOT_MEASURED))
    else:
        n = R.value("memory-reel", "watchers", test="idle_watchers")
        out.append((t + ", a `WatchValue` stream each",
                    "%s bytes (%s watchers)" % (f_int(bpw), f_int(n)), verdict(bpw <= BYTES_PER_WATCHER)))
    bpw = R.value("memory-reel", "bytes_per_watcher", test="idle_watchers_shared")
    if bpw is not None:
        n = R.value("memory-reel", "watchers", test="idle_watchers_shared")
        k = R.value("memory-reel", "per_stream", test="idle_watchers_shared")
        out.append((t + ", `WatchValues` streams",
                    "%s bytes (%s watchers, %s per stream)" % (f_int(bpw), f_int(n), f_int(k)),
                    verdict(bpw <= BYTES_PER_WATCHER)))

    st = R.row("memory-reel", test="stalled_subscribers")
    ctl = R.row("memory-reel", test="writes_only")
    t = ("flat RSS with stalled subscribers (growth during the writes < %d MiB, measured "
         "after the same writes without them)" % (STALLED_GROWTH_KIB // 1024))
    s0 = num(st.get("rss_start_kib")) if st else None
    smax = num(st.get("rss_max_kib")) if st else None
    c0 = num(ctl.get("rss_start_kib")) if ctl else None
    cmax = num(ctl.get("rss_max_kib")) if ctl else None
    if s0 is None or smax is None:
        out.append((t, NOT_MEASURED, NOT_MEASURED))
    else:
        cg = (cmax - c0) if c0 is not None and cmax is not None else 0
        out.append((t, "+%s MiB with them (+%s MiB for the same writes without them, "
                       "just before; %s subscribers, %s writes)" % (
            f_mib(smax - s0), f_mib(cg), f_int(st.get("subscribers")), f_int(st.get("writes"))),
            verdict(smax - s0 < STALLED_GROWTH_KIB)))

    ready = R.value("restart-reel", "ready_ms")
    t = "restart: serving within %d ms" % RESTART_READY_MS
    if ready is None:
        out.append((t, NOT_MEASURED, NOT_MEASURED))
    else:
        rmax = R.value("restart-reel", "ready_ms_max")
        out.append((t, "%s ms%s (%s keys, %s entries)" % (
            f_int(ready), " (median start; slowest %s ms)" % f_int(rmax) if rmax is not None else "",
            f_int(R.value("restart-reel", "keys")), f_int(R.value("restart-reel", "entries"))),
            verdict(ready <= RESTART_READY_MS)))
    return out


def sink_targets(R):
    """issue 20's targets: [(target, measured, verdict)]"""
    out = []

    def verdict(ok):
        return "**PASS**" if ok else "**MISS**"

    def rate(row):
        r = R.row("sink-reel", row=row)
        return (num(r.get("events_per_s")), r) if r else (None, None)

    tail, _ = rate("WAL tail, SubscribeEventBatches")
    beside = " (the WAL tail: %s events/s batched, same run)" % f_int(tail) if tail else ""
    for t, rows, goal in (
            ("webhook, ordered over keep-alive ≥ %s events/s" % f_int(SINK_ORDERED_PER_S),
             ["webhook, ordered"], SINK_ORDERED_PER_S),
            ("webhook, concurrent (64 in flight) or batched ≥ %s events/s" % f_int(SINK_FAST_PER_S),
             ["webhook, concurrent 64", "webhook, batched 100"], SINK_FAST_PER_S),
            ("NATS JetStream publish ≥ %s events/s" % f_int(SINK_NATS_PER_S),
             ["nats (json), acknowledged by JetStream",
              "nats (protobuf), acknowledged by JetStream"], SINK_NATS_PER_S)):
        got = [(rate(r)[0], r) for r in rows if rate(r)[0] is not None]
        if not got:
            out.append((t, NOT_MEASURED, NOT_MEASURED))
            continue
        best = max(v for v, _ in got)
        out.append((t, "; ".join("%s: %s events/s" % (r, f_int(v)) for v, r in got) + beside,
                    verdict(best >= goal)))
    lat = R.row("sink-reel", row="webhook, ordered: commit to receipt")
    t = "webhook, ordered: commit to receipt p99 < %d ms at 1,000 events/s" % (SINK_P99_US // 1000)
    if lat is None or num(lat.get("p99_us")) is None:
        out.append((t, NOT_MEASURED, NOT_MEASURED))
    else:
        hi, lo = num(lat.get("p99_us")), num(lat.get("after_answer_p99_us"))
        out.append((t, "p99 %s ms from the write sent (an upper bound), %s ms from its answer "
                       "(a lower bound); %s events at %s/s" % (
                           f_ms(hi), f_ms(lo) if lo is not None else "?", f_int(lat.get("events")),
                           f_int(lat.get("rate"))),
                    verdict(hi < SINK_P99_US)))
    return out


def write_table(R, name, known, head):
    """table of a set/append bench: known = [(field, header, formatter)]"""
    doc = R.bench.get(name)
    rows = R.rows(name)
    if not rows:
        return "%s: %s.\n" % (head, NOT_MEASURED)
    keys = [k for k, _, _ in known]
    extra = extra_columns(rows, keys)
    cols = known + [(k, k, f_num) for k in extra]
    body = [[fmt(r.get(k)) for k, _, fmt in cols] for r in rows]
    return "%s\n\n%s\n\n%s\n" % (head, table([h for _, h, _ in cols], body), params_line(doc))


def f_us(x):
    x = num(x)
    return "—" if x is None else "%.1f" % x


def f_pct(x):
    x = num(x)
    return "—" if x is None else "%.0f%%" % x


WRITE_COLS = [("concurrency", "concurrency", f_int), ("ops_per_s", "ops/s", f_int),
              ("p50_us", "p50 ms", f_ms), ("p99_us", "p99 ms", f_ms), ("p999_us", "p99.9 ms", f_ms),
              ("ops", "ops", f_int), ("errors", "errors", f_int), ("seconds", "seconds", f_num),
              ("server_cpu_us_per_op", "server CPU µs/op", f_us),
              ("client_cpu_us_per_op", "client CPU µs/op", f_us),
              ("machine_busy_pct", "machine busy", f_pct)]
WATCH_COLS = [("kind", "kind", str), ("watchers", "watchers", f_int), ("rate", "writes/s", f_int),
              ("writes", "writes", f_int), ("expected", "expected", f_int), ("received", "received", f_int),
              ("p50_us", "p50 ms", f_ms), ("p99_us", "p99 ms", f_ms), ("p999_us", "p99.9 ms", f_ms)]


def fmt_any(fmt):
    def f(x):
        return "—" if x is None else fmt(x)
    return f


def section_writes(R):
    out = ["## Durable writes\n",
           "Every write is acknowledged only after it is synced to disk (reel: `SetValue`, "
           "journal `Append` over 64 runs; etcd: `KV.Put`, default durability; db_bench: "
           "`fillrandom --sync=1`). Values are 256 bytes.\n"]
    out.append(write_table(R, "set-reel", WRITE_COLS, "### reel `set`"))
    out.append(write_table(R, "append-reel", WRITE_COLS, "### reel `append`"))
    out.append(write_table(R, "set-etcd", WRITE_COLS, "### etcd `set` (KV.Put, same client)"))
    out.append(write_table(R, "get-reel", WRITE_COLS,
                           "### reel `get` (GetValue of missing keys: a call that writes nothing)"))
    out.append("_`get` is the floor of this setup: the same client, the same gRPC server and the "
               "same cores, with no write at all. A durable write cannot be served faster "
               "than a call that writes nothing._\n")
    out.append("### RocksDB `db_bench fillrandom --sync=1 --value_size=256 --key_size=32`\n")
    if R.dbbench:
        body = [[t, f_int(d["ops_per_s"]), "%.1f" % d["micros_per_op"], f_us(d.get("cpu_us_per_op")),
                 f_pct(d.get("machine_busy_pct"))] for t, d in sorted(R.dbbench.items())]
        out.append(table(["threads", "ops/s", "µs/op (per thread)", "CPU µs/op", "machine busy"], body))
        if R.rocksdb_version:
            out.append("\n_RocksDB %s (Debian's rocksdb-tools); raw output in `results/db_bench-T.txt`_" %
                       R.rocksdb_version)
        if R.dbbench_assertions:
            out.append("\n_db_bench warned: \"Assertions are enabled; benchmarks unnecessarily slow\" "
                       "(Debian's build of rocksdb-tools is the one measured)._")
    else:
        out.append(NOT_MEASURED + ".")
    out.append("")
    return "\n".join(out)


def section_ratios(R):
    out = ["## Ratios (same run, same disk)\n"]
    body = []
    for c, t in ((1, 1), (8, 8), (64, 32), (256, 32)):
        for name, label in (("set-reel", "set"), ("append-reel", "append")):
            a = R.value(name, "ops_per_s", concurrency=c)
            b = R.dbbench.get(t, {}).get("ops_per_s")
            mark = " (target ≥ %.1f×)" % SET_VS_DBBENCH if (label, c, t) == ("set", SET_C, DBBENCH_T) else ""
            body.append(["reel %s@%d / db_bench@%d threads%s" % (label, c, t, mark),
                         f_int(a) if a is not None else NOT_MEASURED,
                         f_int(b) if b is not None else NOT_MEASURED, f_ratio(ratio(a, b))])
    out.append("### reel / db_bench\n")
    out.append(table(["comparison", "reel ops/s", "db_bench ops/s", "ratio"], body))

    out.append("\n### reel / etcd: set\n")
    body = []
    cs = sorted({int(num(r.get("concurrency"))) for n in ("set-reel", "set-etcd")
                 for r in R.rows(n) if num(r.get("concurrency")) is not None})
    for c in cs:
        a = R.value("set-reel", "ops_per_s", concurrency=c)
        b = R.value("set-etcd", "ops_per_s", concurrency=c)
        mark = " (target ≥ %.0f×)" % SET_VS_ETCD if c == SET_C else ""
        body.append(["%d%s" % (c, mark), f_int(a) if a is not None else NOT_MEASURED,
                     f_int(b) if b is not None else NOT_MEASURED, f_ratio(ratio(a, b))])
    out.append(table(["concurrency", "reel ops/s", "etcd ops/s", "reel / etcd"], body) if body
               else NOT_MEASURED + ".")

    out.append("\n### reel / etcd: watch p99, commit to receipt\n")
    body = []
    keys = []
    for n in ("watch-reel", "watch-reel-batched", "watch-etcd"):
        for r in R.rows(n):
            k = (r.get("kind"), num(r.get("watchers")), num(r.get("rate")))
            if k not in keys:
                keys.append(k)
    for kind, w, rate in keys:
        a = R.value("watch-reel", "p99_us", kind=kind, watchers=w, rate=rate)
        ab = R.value("watch-reel-batched", "p99_us", kind=kind, watchers=w, rate=rate)
        b = R.value("watch-etcd", "p99_us", kind=kind, watchers=w, rate=rate)
        mark = " (target ≥ %.0f×)" % WATCH_VS_ETCD if (kind, w, rate) == ("exact", WATCH_N, WATCH_RATE) else ""
        body.append(["%s, %s watchers, %s writes/s%s" % (kind, f_int(w), f_int(rate), mark),
                     f_ms(a) if a is not None else NOT_MEASURED,
                     f_ms(ab) if ab is not None else NOT_MEASURED,
                     f_ms(b) if b is not None else NOT_MEASURED,
                     f_ratio(ratio(b, a)), f_ratio(ratio(b, ab))])
    out.append(table(["row", "reel `WatchValue` p99 ms", "reel `WatchValueBatches` p99 ms",
                      "etcd p99 ms", "etcd / reel", "etcd / reel batched"], body)
               if body else NOT_MEASURED + ".")
    out.append("\n_Higher etcd / reel: reel better. A p99 covers only the notifications that "
               "arrived; the watch tables below say how many did not._\n")
    body = []
    for r in R.rows("watch-reel-shared"):
        kind, w, rate = r.get("kind"), num(r.get("watchers")), num(r.get("rate"))
        a = num(r.get("p99_us"))
        b = R.value("watch-etcd-shared", "p99_us", kind=kind, watchers=w, rate=rate)
        mark = " (target ≥ %.0f×)" % WATCH_VS_ETCD if (kind, w, rate) == ("exact", WATCH_N, WATCH_RATE) else ""
        body.append(["%s, %s watchers, %s writes/s, %s per stream%s" % (
                         kind, f_int(w), f_int(rate), f_int(per_stream(r)), mark),
                     f_ms(a) if a is not None else NOT_MEASURED,
                     f_ms(b) if b is not None else NOT_MEASURED, f_ratio(ratio(b, a))])
    if body:
        out.append("\n### reel / etcd: watch p99, watchers sharing streams\n")
        out.append(table(["row", "reel `WatchValuesBatches` coalesced p99 ms",
                          "etcd `Watch` p99 ms", "etcd / reel"], body))
        out.append("\n_reel sends a change once per stream, naming every watcher on it that it "
                   "is for; etcd sends each watcher's event on the stream separately._\n")

    out.append("\n### append / set (reel)\n")
    body = []
    cs = sorted({int(num(r.get("concurrency"))) for n in ("set-reel", "append-reel")
                 for r in R.rows(n) if num(r.get("concurrency")) is not None})
    for c in cs:
        a = R.value("append-reel", "ops_per_s", concurrency=c)
        b = R.value("set-reel", "ops_per_s", concurrency=c)
        body.append([c, f_int(a) if a is not None else NOT_MEASURED,
                     f_int(b) if b is not None else NOT_MEASURED, f_ratio(ratio(a, b))])
    out.append(table(["concurrency", "append ops/s", "set ops/s", "append / set"], body) if body
               else NOT_MEASURED + ".")
    out.append("")
    return "\n".join(out)


def verdict(ok):
    return "—" if ok is None else ("PASS" if ok else "MISS")


def disk_gap_rows(R):
    """The disk alone (bench/disk_gap.py): its synced writes back to back, and
    with get@1's p50 between them, beside set@1's tail."""
    rows = R.rows("disk-gap")
    if not rows:
        return []
    out = ["The disk alone, without reel (`bench/disk_gap.py`: a write of %s bytes and "
           "`fdatasync`, over and over, into a file written beforehand): back to back, and "
           "with a pause between writes as long as `get`@1's p50, the least time a client "
           "with one call in flight takes to send its next write. The pause is busy-waited, "
           "so the CPU does not sleep either.\n" % f_int(num(rows[0].get("bytes")))]
    body = []
    for r in rows:
        gap = num(r.get("gap_us"))
        body.append(["back to back" if not gap else "%s µs pause" % f_int(gap),
                     f_int(num(r.get("count"))), f_ms(num(r.get("p50_us"))),
                     f_ms(num(r.get("p90_us"))), f_ms(num(r.get("p99_us"))),
                     f_ms(num(r.get("p999_us")))])
    out.append(table(["disk alone", "writes", "p50 ms", "p90 ms", "p99 ms", "p99.9 ms"], body))
    paused = [r for r in rows if num(r.get("gap_us"))]
    p99 = num(paused[-1].get("p99_us")) if paused else None
    body = []
    for name, label in (("seq-set-reel", "set"), ("seq-append-reel", "append")):
        mine = R.value(name, "p99_us", concurrency=1)
        body.append(["`%s`@1 p99 / the paused disk's p99" % label,
                     "%s / %s ms = %s" % (f_ms(mine), f_ms(p99), f_ratio(ratio(mine, p99)))
                     if mine is not None and p99 is not None else NOT_MEASURED])
    out.append("")
    out.append(table(["figure", "measured"], body, numeric=False))
    out.append("\n_The issue's p99 target is 2× a floor made of p50s; this disk's own p99 for a "
               "writer that pauses as a sequential client must is the row above, in the same "
               "run._\n")
    return out


def section_sequential(R):
    """issue 19: set@1 and append@1 beside the floor, reeld's CPU per write, idle CPU"""
    out = ["## Sequential writes (issue 19)\n",
           "One client, one call in flight, on a fresh reeld of its own: each write waits for the "
           "previous one to be durable, as a run appending its journal does. The floor is a call "
           "that writes nothing (`get`@1 p50, on the same reeld) plus one durable RocksDB write "
           "(`db_bench fillrandom --sync=1`, 1 thread, µs/op), both from this run. reeld's CPU is "
           "its utime + stime from `/proc/PID/stat` over the row, divided by its writes; idle is "
           "the same over 30 s with no client.\n"]
    get50 = R.value("seq-get-reel", "p50_us", concurrency=1)
    db = num(R.dbbench.get(1, {}).get("micros_per_op"))
    floor = get50 + db if get50 is not None and db is not None else None
    out.append("Floor: `get`@1 p50 %s ms + db_bench@1 %s ms = **%s ms**.\n" % (
        f_ms(get50), f_ms(db), f_ms(floor)))
    body = []
    for name, label in (("seq-set-reel", "set"), ("seq-append-reel", "append")):
        p50 = R.value(name, "p50_us", concurrency=1)
        p99 = R.value(name, "p99_us", concurrency=1)
        r50, r99 = ratio(p50, floor), ratio(p99, floor)
        body.append(["%s@1" % label, f_ms(p50), f_ratio(r50),
                     verdict(None if r50 is None else r50 <= SEQ_P50_VS_FLOOR), f_ms(p99),
                     f_ratio(r99), verdict(None if r99 is None else r99 <= SEQ_P99_VS_FLOOR),
                     f_int(R.value(name, "ops_per_s", concurrency=1)),
                     f_us(R.value(name, "server_cpu_us_per_op", concurrency=1))])
    out.append(table(["row", "p50 ms", "p50 / floor (≤ %.2f×)" % SEQ_P50_VS_FLOOR, "p50",
                      "p99 ms", "p99 / floor (≤ %.0f×)" % SEQ_P99_VS_FLOOR, "p99", "ops/s",
                      "reeld CPU µs/op"], body))
    out.append("")
    out.extend(disk_gap_rows(R))
    body = []
    for c in (1, 64):
        cpu = R.value("seq-set-reel", "server_cpu_us_per_op", concurrency=c)
        mark = " (target ≤ %d µs)" % SEQ_CPU_US if c == 1 else ""
        body.append(["reeld CPU per `set`@%d%s" % (c, mark), f_us(cpu) + " µs" if cpu is not None
                     else NOT_MEASURED, verdict(None if cpu is None or c != 1 else cpu <= SEQ_CPU_US)])
    dbcpu = num(R.dbbench.get(1, {}).get("cpu_us_per_op"))
    body.append(["db_bench@1's own CPU per durable write (the sync's floor on this machine)",
                 f_us(dbcpu) + " µs" if dbcpu is not None else NOT_MEASURED, ""])
    getcpu = R.value("seq-get-reel", "server_cpu_us_per_op", concurrency=1)
    body.append(["reeld CPU per `get`@1, a call that writes nothing",
                 f_us(getcpu) + " µs" if getcpu is not None else NOT_MEASURED, ""])
    setcpu = R.value("seq-set-reel", "server_cpu_us_per_op", concurrency=1)
    cfloor = getcpu + dbcpu if getcpu is not None and dbcpu is not None else None
    body.append(["the two together: a `set`@1's CPU before reel's own work; `set`@1 / it",
                 "%s µs; %s" % (f_us(cfloor), f_ratio(ratio(setcpu, cfloor)))
                 if cfloor is not None else NOT_MEASURED, ""])
    idle = R.rows("seq-idle-reel")
    pct = num(idle[0].get("pct_of_core")) if idle else None
    secs = num(idle[0].get("seconds")) if idle else None
    body.append(["idle reeld, %% of one core over %s s (target < %.0f%%)" % (
                     f_int(secs) if secs is not None else "30", IDLE_PCT),
                 "%.2f%%" % pct if pct is not None else NOT_MEASURED,
                 verdict(None if pct is None else pct < IDLE_PCT)])
    out.append(table(["figure", "measured", "verdict"], body, numeric=False))
    out.append("\n_CPU per write cannot go below what the sync itself costs in the kernel "
               "(db_bench@1's row) plus what the call costs the server (`get`@1's row), both "
               "measured on this machine in the same run._\n")
    out.append("Against etcd, from the durable-write steps of this run (the same client, one "
               "server after the other; the server's CPU from `/proc/PID/stat`):\n")
    body = []
    rs, es = R.row("set-reel", concurrency=SET_C) or {}, R.row("set-etcd", concurrency=SET_C) or {}
    rc, ec = num(rs.get("server_cpu_us_per_op")), num(es.get("server_cpu_us_per_op"))
    r = ratio(rc, ec)
    body.append(["reeld's CPU per `set`@%d / etcd's per `Put`@%d (target ≤ %.1f×)" % (
                     SET_C, SET_C, SEQ_CPU_VS_ETCD),
                 "%s / %s µs = %s" % (f_us(rc), f_us(ec), f_ratio(r)) if r is not None
                 else NOT_MEASURED,
                 verdict(None if r is None else r <= SEQ_CPU_VS_ETCD)])
    for c, want in ((SET_C, SEQ_SET64_VS_ETCD), (1, SEQ_SET1_VS_ETCD)):
        ro = num((R.row("set-reel", concurrency=c) or {}).get("ops_per_s"))
        eo = num((R.row("set-etcd", concurrency=c) or {}).get("ops_per_s"))
        r = ratio(ro, eo)
        body.append(["`set`@%d ops/s, reel / etcd (target ≥ %.2f×)" % (c, want),
                     "%s / %s = %s" % (f_int(ro), f_int(eo), f_ratio(r)) if r is not None
                     else NOT_MEASURED,
                     verdict(None if r is None else r >= want)])
    out.append(table(["figure", "measured", "verdict"], body, numeric=False))
    out.append("")
    return "\n".join(out)


def section_bound(R):
    """what the CPU measured in this run says about the set@64 targets"""
    cores = num(R.machine.get("cores"))
    s = R.row("set-reel", concurrency=SET_C) or {}
    g = R.row("get-reel", concurrency=SET_C) or {}
    e = R.row("set-etcd", concurrency=SET_C) or {}
    db = R.dbbench.get(DBBENCH_T, {})
    S, C, B = (num(s.get(k)) for k in ("server_cpu_us_per_op", "client_cpu_us_per_op", "machine_busy_pct"))
    G, Cg = num(g.get("server_cpu_us_per_op")), num(g.get("client_cpu_us_per_op"))
    out = ["### What bounds `set`@%d on this machine\n" % SET_C]
    if None in (cores, S, C, B, G):
        out.append("%s: this run has no CPU figures for `set` and `get` at %d in flight.\n" % (NOT_MEASURED, SET_C))
        return "\n".join(out)
    out.append("CPU per operation at %d in flight, from the same steps as the tables above: the "
               "server's from `/proc/PID/stat`, the client's (reel-bench, every thread) from "
               "`getrusage`, the machine's from `/proc/stat`; db_bench's is its whole process.\n" % SET_C)

    def row(name, r, srv, cli):
        both = srv + cli if srv is not None and cli is not None else None
        return [name, f_int(r.get("ops_per_s")), f_us(srv), f_us(cli), f_us(both), f_pct(r.get("machine_busy_pct"))]

    body = [row("reel `set`", s, S, C), row("reel `get` (no write)", g, G, Cg)]
    Ee, Ce = num(e.get("server_cpu_us_per_op")), num(e.get("client_cpu_us_per_op"))
    if e:
        body.append(row("etcd `set` (`KV.Put`)", e, Ee, Ce))
    if db:
        body.append(["db_bench fillrandom, %d threads (in-process)" % DBBENCH_T, f_int(db.get("ops_per_s")),
                     "—", "—", f_us(db.get("cpu_us_per_op")), f_pct(db.get("machine_busy_pct"))])
    out.append(table(["", "ops/s", "server CPU µs/op", "client CPU µs/op", "together", "machine busy"], body))
    floor = C + G
    engine = num(db.get("cpu_us_per_op"))
    text = []
    if B < 80:
        text.append("The machine was %s busy during reel's `set`: its cores were not the limit of "
                    "that step, so these figures do not explain a gap (bench/ANALYSIS.md has what "
                    "was measured on the machine that wrote it)." % f_pct(B))
    else:
        text.append("The machine was %s busy during reel's `set`: the cores, not the disk, set its "
                    "rate. On %d cores a rate of R writes/s leaves %d·10⁶/R µs of CPU per write for "
                    "client and server together. A write through this client costs the client %s µs, "
                    "and a call that writes nothing costs reel's gRPC server %s µs (`get`): %s µs "
                    "before anything is written." % (
                        f_pct(B), cores, cores, f_us(C), f_us(G), f_us(floor)))
        if engine is not None:
            text.append("A durable write through RocksDB cost db_bench itself %s µs of CPU "
                        "(in-process, %d threads, one record a write); that floor plus it is %s µs, "
                        "and reel's `set` used %s." % (f_us(engine), DBBENCH_T, f_us(floor + engine),
                                                      f_us(S + C)))
        for what, rate, extra in (
                ("1.0× db_bench at %d threads" % DBBENCH_T, num(db.get("ops_per_s")), ""),
                ("2× etcd", 2 * num(e["ops_per_s"]) if num(e.get("ops_per_s")) else None,
                 " (etcd's own `set` used %s µs together)" % f_us(Ee + Ce)
                 if Ee is not None and Ce is not None else "")):
            if not rate:
                continue
            budget = cores * 1e6 / rate
            head = "%s, %s writes/s, leaves %s µs per write%s" % (what, f_int(rate), f_us(budget), extra)
            if budget < floor:
                text.append(head + ": less than a call that writes nothing costs here, so "
                            "reel cannot reach it on this machine by making its writes cheaper.")
            elif engine is not None and budget < floor + engine:
                text.append(head + ": %s µs for the write itself, where db_bench's own took %s." % (
                    f_us(budget - floor), f_us(engine)))
            else:
                text.append(head + ": %s µs for the write itself; reel's took %s µs more than a "
                            "call that writes nothing." % (f_us(budget - floor), f_us(S - G)))
    out.append("\n" + " ".join(text) + "\n")
    return "\n".join(out)


SECURITY_MAX_OVERHEAD = 15.0  # issue 23: TLS + token at most 15% slower


def section_security(R):
    """issue 23: set@64 and get@64 with TLS and token auth against plaintext
    without auth, on two fresh reelds of the same run"""
    out = ["## Security overhead (issue 23)\n",
           "`set` and `get` at %d in flight on two fresh reelds in the same run: one plaintext "
           "without auth, one with TLS (`--tls-cert`/`--tls-key`, ECDSA P-256) and "
           "`--auth token` (every call carries a bearer token, checked by SHA-256 and a "
           "constant-time compare). Same client, 4 connections.\n" % SET_C]
    # Rounds alternate which reeld goes first (bench/run.sh); a result dir
    # from before the rounds holds one pair without a number.
    rounds = ["-%d" % i for i in range(1, R.sec_rounds + 1)] or [""]
    body = []
    for bench in ("set", "get"):
        pairs = []
        for r in rounds:
            a = R.row("%s-plain-reel%s" % (bench, r), concurrency=SET_C)
            b = R.row("%s-tls-reel%s" % (bench, r), concurrency=SET_C)
            if a and b and num(a.get("ops_per_s")) and num(b.get("ops_per_s")) is not None:
                pairs.append((a, b))
        if not pairs:
            body.append(["`%s`@%d" % (bench, SET_C), NOT_MEASURED, "", "", "", "", "", ""])
            continue
        def med(side, k):
            xs = [num(p[side].get(k)) for p in pairs if num(p[side].get(k)) is not None]
            return statistics.median(xs) if xs else None
        pa, pb = med(0, "ops_per_s"), med(1, "ops_per_s")
        # The loss is judged within each round (its two reelds measured
        # back to back), then the median of the rounds: the medians of
        # each side alone would pair figures from different rounds.
        lost = [(num(a["ops_per_s"]) - num(b["ops_per_s"])) / num(a["ops_per_s"]) * 100
                for a, b in pairs]
        over = statistics.median(lost)
        each = ", ".join("%.1f%%" % x for x in lost)
        body.append(["`%s`@%d" % (bench, SET_C), f_int(pa), f_int(pb), "%.1f%%" % over, each,
                     f_ms(med(0, "p99_us")), f_ms(med(1, "p99_us")),
                     ("PASS" if over <= SECURITY_MAX_OVERHEAD else "MISS") +
                     " (target ≤ %.0f%%)" % SECURITY_MAX_OVERHEAD])
    n = len(rounds)
    if n > 1:
        out.append("Medians of %d rounds; each round ran both reelds, the other one first "
                   "every other round. Throughput lost is the median of the rounds' own "
                   "losses.\n" % n)
    out.append(table(["bench", "plaintext ops/s", "TLS + token ops/s", "throughput lost",
                      "lost in each round", "plaintext p99 ms", "TLS + token p99 ms", "verdict"],
                     body))
    out.append("")
    return "\n".join(out)


def section_watch(R):
    out = ["## Watch: commit-to-receipt latency\n",
           "The writer stamps each value; every watcher compares on receipt. `exact`: N watchers "
           "on one key; `pattern`: one `>` watcher over many keys (etcd: a prefix watch).\n"]
    for name, head in (("watch-reel", "### reel (`WatchValue`: each event its own message)"),
                       ("watch-reel-batched",
                        "### reel (`WatchValueBatches`: events ready together share a message)"),
                       ("watch-etcd", "### etcd (Watch, same client; its responses carry "
                        "repeated events)"),
                       ("watch-reel-shared", "### reel, watchers sharing streams "
                        "(`WatchValuesBatches` with `coalesce`: a change goes once per stream, "
                        "naming each of its watchers)"),
                       ("watch-etcd-shared", "### etcd, watchers sharing streams (create "
                        "requests on one `Watch` stream, as its clientv3 does)")):
        rows = R.rows(name)
        if not rows:
            out.append("%s: %s.\n" % (head, NOT_MEASURED))
            continue
        keys = [k for k, _, _ in WATCH_COLS]
        cols = WATCH_COLS + [(k, k, f_num) for k in extra_columns(rows, keys)]
        body = []
        for r in rows:
            line = [fmt_any(fmt)(r.get(k)) for k, _, fmt in cols]
            body.append(line)
        hdr = [h for _, h, _ in cols]
        # notifications that had not arrived when the benchmark stopped
        # waiting (30 s after the last write), in plain sight
        hdr.append("delivery")
        for r, line in zip(rows, body):
            e, g = num(r.get("expected")), num(r.get("received"))
            line.append("—" if e is None or g is None else "complete" if e == g else
                        "**%s not received**" % f_int(e - g) if g < e else "**%s extra**" % f_int(g - e))
        out.append("%s\n\n%s\n\n%s\n" % (head, table(hdr, body), params_line(R.bench.get(name))))
    return "\n".join(out)


def section_single(R, name, head, cols, what):
    rows = R.rows(name)
    if not rows:
        return "%s\n\n%s: %s.\n" % (head, what, NOT_MEASURED)
    keys = [k for k, _, _ in cols]
    cols = cols + [(k, k, f_num) for k in extra_columns(rows, keys)]
    body = [[fmt_any(fmt)(r.get(k)) for k, _, fmt in cols] for r in rows]
    return "%s\n\n%s\n\n%s\n" % (head, table([h for _, h, _ in cols], body), params_line(R.bench.get(name)))


def section_workspace(R):
    """Issue 22: artifact throughput beside dd and NATS's Object Store, KV
    latency during an upload, RSS under a slow reader, and the targets."""
    out = ["## Workspace (issue 22)\n",
           "`reel-bench ws` on a fresh reeld: one `PutArtifact` (acknowledged once synced) and one "
           "`GetArtifact` per size; `bench/nats_objstore.js` the same against `nats-server -js`'s "
           "Object Store; `dd ... conv=fdatasync` (of random bytes, not zeros) and `iflag=direct` for the "
           "disk itself; KV set@8 "
           "alone and while the largest upload runs. MB/s are 10^6 bytes a second.\n"]
    reel = {num(r.get("mib")): r for r in R.rows("ws-reel") if "upload_mb_s" in r}
    nats = {num(r.get("mib")): r for r in R.ws_nats}
    sizes = sorted(k for k in set(reel) | set(nats) if k is not None)
    if not sizes:
        out.append("Workspace: %s.\n" % NOT_MEASURED)
        return "\n".join(out)
    body = [[f_int(m), f_num(reel.get(m, {}).get("upload_mb_s")), f_num(reel.get(m, {}).get("download_mb_s")),
             f_num(nats.get(m, {}).get("upload_mb_s")), f_num(nats.get(m, {}).get("download_mb_s"))]
            for m in sizes]
    out.append(table(["MiB", "reel up MB/s", "reel down MB/s", "NATS up MB/s", "NATS down MB/s"], body))
    out.append("\ndd: %s MB/s synced write, %s MB/s direct read.\n" % (f_num(R.dd.get("write")),
                                                                     f_num(R.dd.get("read"))))
    big = sizes[-1]
    up, down = num(reel.get(big, {}).get("upload_mb_s")), num(reel.get(big, {}).get("download_mb_s"))
    nup, ndown = num(nats.get(big, {}).get("upload_mb_s")), num(nats.get(big, {}).get("download_mb_s"))
    alone, during = R.value("ws-kv-alone", "p99_us"), R.value("ws-kv-upload", "p99_us")
    slow = next((r for r in R.rows("ws-reel") if "rss_growth_mib" in r), None)
    growth = num(slow.get("rss_growth_mib")) if slow else None

    def verdict(x, ok):
        return "—" if x is None else ("PASS" if ok(x) else "MISS")
    rows = [
        ["upload >= 0.7x dd's synced write (%d MiB)" % big, f_ratio(ratio(up, R.dd.get("write"))),
         verdict(ratio(up, R.dd.get("write")), lambda x: x >= 0.7)],
        ["upload >= 2x NATS's Object Store", f_ratio(ratio(up, nup)), verdict(ratio(up, nup), lambda x: x >= 2)],
        ["download >= 2x NATS's Object Store", f_ratio(ratio(down, ndown)),
         verdict(ratio(down, ndown), lambda x: x >= 2)],
        ["KV set@8 p99 during the upload <= 2x alone", f_ratio(ratio(during, alone)),
         verdict(ratio(during, alone), lambda x: x <= 2)],
        ["RSS growth to a slow reader < 64 MiB", "—" if growth is None else "%.1f MiB" % growth,
         verdict(growth, lambda x: x < 64)],
    ]
    out.append(table(["target", "measured", "verdict"], rows, numeric=False))
    return "\n".join(out) + "\n"


def section_memory(R):
    out = ["## Memory (reeld's RSS, a fresh reeld of its own)\n"]
    idle = [r for r in R.rows("memory-reel")
            if r.get("test") in ("idle_watchers", "idle_watchers_shared")]
    if idle:
        cols = [("watchers", "idle watchers", f_int), ("rss_before_kib", "RSS before MiB", f_mib),
                ("rss_after_kib", "RSS after MiB", f_mib), ("bytes_per_watcher", "bytes per watcher", f_int)]
        body = [["one `WatchValue` stream each" if r.get("test") == "idle_watchers"
                 else "%s per `WatchValues` stream" % f_int(r.get("per_stream"))] +
                [fmt_any(fmt)(r.get(k)) for k, _, fmt in cols] for r in idle]
        out.append(table(["how"] + [h for _, h, _ in cols], body))
    else:
        out.append("Idle watchers: %s." % NOT_MEASURED)
    out.append("")
    stalled = [r for r in R.rows("memory-reel")
               if r.get("test") in ("writes_only", "stalled_subscribers")]
    if stalled:
        out.append("The same writes twice: first with nobody subscribed (the control: memtables "
                   "and caches fill either way), then with stalled subscribers, each a WAL tail "
                   "from revision 0 that never reads.\n")
        cols = [("subscribers", "stalled subscribers", f_int), ("writes", "writes", f_int),
                ("rss_start_kib", "RSS start MiB", f_mib), ("rss_max_kib", "RSS max MiB", f_mib),
                ("rss_end_kib", "RSS end MiB", f_mib)]
        body = []
        for r in stalled:
            line = [fmt_any(fmt)(r.get(k)) for k, _, fmt in cols]
            s0, smax = num(r.get("rss_start_kib")), num(r.get("rss_max_kib"))
            line.append("—" if s0 is None or smax is None else "+" + f_mib(smax - s0))
            body.append(line)
        out.append(table([h for _, h, _ in cols] + ["growth MiB"], body))
        samples = stalled[-1].get("samples")
        if isinstance(samples, list) and samples:
            pts = [s for s in samples if isinstance(s, list) and len(s) >= 2
                   and num(s[0]) is not None and num(s[1]) is not None]
            if pts:
                step = max(1, int(math.ceil(len(pts) / 12.0)))
                shown = pts[::step]
                if shown[-1] is not pts[-1]:
                    shown.append(pts[-1])
                out.append("\nRSS over time (%d samples, every %d%s shown):\n" % (
                    len(pts), step, "th" if step > 1 else ""))
                out.append(table(["t s", "RSS MiB"], [["%.1f" % num(t), f_mib(k)] for t, k in shown]))
        out.append("\n_Flat means: max − start < %d MiB (the threshold this report applies)._" %
                   (STALLED_GROWTH_KIB // 1024))
    else:
        out.append("Stalled subscribers: %s." % NOT_MEASURED)
    out.append("\n" + params_line(R.bench.get("memory-reel")) + "\n")
    return "\n".join(out)


def section_machine(R):
    m = R.machine
    if not m:
        return "## Machine\n\n%s (no machine.json).\n" % NOT_MEASURED
    rows = [["cores (nproc)", m.get("cores", "—")], ["CPU", m.get("cpu") or "—"]]
    mem = num(m.get("mem_total_kib"))
    rows.append(["memory", "%.1f GiB" % (mem / 1048576.0) if mem else "—"])
    d = m.get("disk") or {}
    parts = []
    if d.get("source"):
        parts.append("%s (%s)" % (d["source"], d.get("fstype", "?")))
    if num(d.get("size_kib")):
        parts.append("%.0f GiB, %.0f GiB free" % (d["size_kib"] / 1048576.0, (d.get("avail_kib") or 0) / 1048576.0))
    dev = []
    if d.get("device"):
        dev.append("block device " + d["device"])
    if d.get("underlying"):
        dev.append("on " + d["underlying"])
    for k in ("model", "vendor", "driver"):
        if d.get(k):
            dev.append("%s %s" % (k, d[k]))
    if d.get("rotational") is not None:
        dev.append({"0": "non-rotational", "1": "rotational (as the kernel reports it)"}.get(
            str(d["rotational"]), "rotational=%s" % d["rotational"]))
    if d.get("scheduler"):
        dev.append("scheduler " + d["scheduler"])
    if dev:
        parts.append(", ".join(dev))
    rows.append(["disk (the run directory `%s`)" % d.get("path", "?"), "; ".join(parts) or "—"])
    rows.append(["kernel", m.get("kernel") or "—"])
    rows.append(["OS", m.get("os") or "—"])
    out = ["## Machine\n", table(["", ""], rows, numeric=False), "\n### Versions\n"]
    v = m.get("versions") or {}
    vrows = [[k, "`%s`" % x] for k, x in v.items()]
    if R.rocksdb_version:
        vrows.append(["RocksDB (db_bench header)", R.rocksdb_version])
    for name in ("set-reel", "watch-reel", "memory-reel"):
        doc = R.bench.get(name)
        if doc and doc.get("version") and "reel-bench" not in v:
            vrows.append(["reel-bench (JSON)", doc["version"]])
            break
    out.append(table(["component", "version"], vrows, numeric=False) if vrows else NOT_MEASURED + ".")
    out.append("")
    return "\n".join(out)


def chart(R, out_dir):
    """draws throughput.png with gnuplot; returns (file name or None, note)"""
    series = []
    for name, label in (("set-reel", "reel set"), ("append-reel", "reel append"),
                        ("set-etcd", "etcd set (KV.Put)"),
                        ("get-reel", "reel get (no write: the RPC floor)")):
        pts = sorted((num(r.get("concurrency")), num(r.get("ops_per_s"))) for r in R.rows(name)
                     if num(r.get("concurrency")) and num(r.get("ops_per_s")) is not None)
        if pts:
            series.append((label, pts))
    if R.dbbench:
        series.append(("RocksDB db_bench fillrandom --sync=1 (x = threads)",
                       sorted((float(t), d["ops_per_s"]) for t, d in R.dbbench.items())))
    if not series:
        return None, "No chart: no throughput was measured."
    gp = shutil.which("gnuplot")
    if not gp:
        return None, "No chart: gnuplot is not installed (Debian's gnuplot-nox)."
    terms = run_cmd([gp, "-e", "set terminal"]) or ""
    term = "pngcairo size 960,600 noenhanced font ',11'" if re.search(r"^\s*pngcairo\s", terms, re.M) \
        else "png size 960,600 noenhanced"
    png = os.path.join(out_dir, "throughput.png")
    xs = sorted(set(CHART_X) | {x for _, pts in series for x, _ in pts})
    quick = " (BENCH_QUICK: not representative)" if R.machine.get("quick") else ""
    lines = [
        "set terminal %s" % term,
        "set output '%s'" % png.replace("'", "''"),
        "set title 'Durable writes, 256-byte values, one machine, one run%s'" % quick,
        "set logscale x 2",
        "set xrange [%g:%g]" % (min(xs) / 1.3, max(xs) * 1.3),
        "set xtics (%s)" % ", ".join('"%d" %d' % (x, x) for x in xs),
        "set xlabel 'concurrency: requests in flight (db_bench: threads)'",
        "set ylabel 'ops/s (acknowledged durable writes)'",
        # headroom above the highest point, for the key
        "set yrange [0:%g]" % (max([y for _, pts in series for _, y in pts] + [1]) * 1.4),
        "set format y '%.0f'",
        "set grid",
        "set key top left reverse Left box opaque width 1 spacing 1.2",
    ]
    plots = []
    for i, (label, pts) in enumerate(series):
        lines.append("$d%d << EOD" % i)
        lines += ["%g %g" % (x, y) for x, y in pts]
        lines.append("EOD")
        plots.append("$d%d using 1:2 with linespoints lw 2 pt %d ps 1.3 title '%s'" % (
            i, 7 + i, label.replace("'", "''")))
    lines.append("plot " + ", \\\n     ".join(plots))
    script = "\n".join(lines) + "\n"
    try:
        p = subprocess.run([gp], input=script, text=True, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=60)
    except (OSError, subprocess.SubprocessError) as e:
        return None, "No chart: gnuplot failed (%s)." % e
    if p.returncode != 0 or not os.path.exists(png):
        return None, "No chart: gnuplot failed: %s" % p.stderr.strip()[:500]
    return "throughput.png", ""


def report(results_dir, out_dir):
    R = Results(results_dir)
    m = R.machine
    md = ["# reel benchmark results\n"]
    commit = m.get("commit")
    when = m.get("date") or "an unknown date"
    intro = "Measured by `bench/run.sh` in one run on %s, at commit `%s`%s%s." % (
        when, commit[:12] if commit else "unknown",
        " (%s)" % m["describe"] if m.get("describe") and not (commit or "").startswith(m["describe"]) else "",
        ", with uncommitted changes" if m.get("dirty") else "")
    md.append(intro + " reel, etcd and RocksDB's `db_bench` ran on the same machine and the same disk, "
              "one after the other; reel and etcd were driven by the same client (`reel-bench`). "
              "Regenerate this page from `bench/results/` with `/usr/bin/python3 bench/report.py bench/results`.\n")
    if m.get("quick"):
        md.append("> **BENCH_QUICK=1**: 1 second per point and tiny sizes, to try the script. "
                  "These figures are not representative.\n")
    failed = re.findall(r"^# failed steps: (.+)$", R.commands or "", re.M)
    if failed:
        md.append("> Steps that failed in this run (a non-zero exit, a time limit, or a server that "
                  "did not start; see the commands below): %s. Figures such a step wrote before "
                  "failing are shown as it wrote them; the rest are \"not measured\".\n" % failed[-1])
    if R.problems:
        md.append("> Problems reading the results: " + "; ".join(R.problems) + "\n")

    md.append(section_machine(R))

    md.append("## Targets (issue 7)\n")
    md.append(table(["target", "measured", "verdict"], targets(R), numeric=False))
    md.append("\nPASS and MISS compare the figures above with the issue's targets as stated; "
              "ratios are taken within this one run.\n")

    png, note = chart(R, out_dir)
    md.append("## Throughput against concurrency\n")
    md.append("![ops/s against concurrency](%s)\n" % png if png else note + "\n")

    md.append(section_writes(R))
    md.append(section_ratios(R))
    md.append(section_sequential(R))
    md.append(section_bound(R))
    md.append(section_security(R))
    md.append(section_watch(R))
    md.append(section_single(R, "signal-reel", "## Signal: wake-up latency\n\n"
                             "A run awaits a signal; 2 ms later `SendSignal`; the await returns. "
                             "The control: 2 ms later again, a `SendSignal` with nobody waiting, "
                             "timed alone (the same durable write after the same pause).",
                             [("samples", "samples", f_int), ("p50_us", "p50 ms", f_ms),
                              ("p99_us", "p99 ms", f_ms), ("p999_us", "p99.9 ms", f_ms),
                              ("send_alone_p50_us", "send alone p50 ms", f_ms),
                              ("send_alone_p99_us", "send alone p99 ms", f_ms)], "Signal"))
    md.append(section_single(R, "tail-reel", "## Tail: one subscriber from revision 0\n\n"
                             "Events stored first, then one `SubscribeEvents` from revision 0 until "
                             "caught up (one event per message), then one `SubscribeEventBatches` "
                             "over the same events (events that are ready together share a message).",
                             [("rpc", "rpc", str), ("events", "events", f_int),
                              ("messages", "messages", f_int), ("seconds", "seconds", f_num),
                              ("events_per_s", "events/s", f_int)], "Tail"))
    md.append(section_memory(R))
    md.append("## Sinks (issue 20)\n")
    md.append(table(["target", "measured", "verdict"], sink_targets(R), numeric=False))
    md.append("")
    md.append(section_single(R, "sink-reel", "### reel-sink, beside the WAL tail\n\n"
                             "`bench/sink_bench.py` on a fresh reeld: `reel-bench tail` stores the events "
                             "and reads them back (the WAL tail's own rate), then reel-sink delivers the "
                             "last of them, a new durable consumer per row, to `bench/sink_receiver.c` "
                             "(answers 200 at once; events/s from its first receipt to its last) or to a "
                             "local `nats-server -js` (events/s of the sink's acknowledged cursor); last, "
                             "an ordered sink while 4 clients write 1,000 events/s: each event from its "
                             "write being sent (and from its answer) to its receipt.",
                             [("row", "row", str), ("events", "events", f_int),
                              ("seconds", "seconds", f_num), ("events_per_s", "events/s", f_int),
                              ("p50_us", "p50 ms", f_ms), ("p99_us", "p99 ms", f_ms),
                              ("after_answer_p99_us", "p99 ms from the answer", f_ms)], "Sinks"))
    md.append(section_single(R, "reactor-reel", "## reel-reactor's push path (issue 21)\n\n"
                             "`bench/reactor_bench.py` on a fresh reeld: waiting runs woken one at a "
                             "time (SendSignal) at 100/s, each pushed by reel-reactor to a local worker "
                             "that claims it with ClaimRun; from the signal sent to the claim returned, "
                             "beside SendSignal alone; with issue 21's server side, also from a 200 ms "
                             "lease's expiry to the claim.",
                             [("row", "row", str), ("runs", "runs", f_int),
                              ("p50_ms", "p50 ms", f_num), ("p99_ms", "p99 ms", f_num),
                              ("max_ms", "max ms", f_num)], "Reactor"))
    md.append(section_workspace(R))
    md.append(section_single(R, "metrics-reel", "## Metrics: what /metrics costs writes (issue 24)\n\n"
                             "`bench/metrics_bench.py`: `reel-bench set` at 64 in flight on a fresh reeld "
                             "without metrics and on one with `--metrics-listen` whose `/metrics` is scraped "
                             "every second, alternating the order each round; medians over the rounds, and "
                             "the difference as the median of each round's pair (its two runs back to "
                             "back). Target: at most 3% fewer writes/s with metrics. The params give the "
                             "machine's load average around the run: on a shared machine one run's "
                             "writes/s moves by tens of percent.",
                             [("row", "row", str), ("ops_per_s", "writes/s", f_int),
                              ("rounds", "each round", str), ("p50_us", "p50 ms", f_ms),
                              ("p99_us", "p99 ms", f_ms),
                              ("server_cpu_us_per_op", "reeld CPU us/write", f_num),
                              ("scrapes", "scrapes", f_int),
                              ("pct", "writes/s difference %", f_num),
                              ("cpu_pct", "CPU/write difference %", f_num)], "Metrics"))
    md.append(section_single(R, "restart-reel", "## Restart: from start to serving health\n\n"
                             "reel-bench loads the data, stops reeld, starts it again and times "
                             "until `grpc.health.v1` answers SERVING.",
                             [("keys", "keys", f_int), ("entries", "journal entries", f_int),
                              ("load_seconds", "load s", f_num), ("ready_ms", "ready ms", f_num)], "Restart"))

    md.append("## Commands\n")
    if R.commands:
        md.append("Every command of the run, in order (from `results/commands.txt`; paths relative to "
                  "the repository root):\n")
        md.append("```sh\n%s\n```\n" % R.commands)
    else:
        md.append("%s (no commands.txt).\n" % NOT_MEASURED)

    path = os.path.join(out_dir, "RESULTS.md")
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        f.write("\n".join(md).rstrip() + "\n")
    os.replace(path + ".tmp", path)
    return path, png


def usage():
    sys.stderr.write(__doc__.split("\n\n")[1] + "\n")
    sys.exit(2)


def parse_opts(argv, allowed):
    opts = {}
    i = 0
    while i < len(argv):
        a = argv[i]
        if a.startswith("--") and a[2:].replace("-", "_") in allowed and i + 1 < len(argv):
            opts[a[2:].replace("-", "_")] = argv[i + 1]
            i += 2
        else:
            sys.stderr.write("report.py: unexpected argument %r\n" % a)
            usage()
    return opts


def main(argv):
    if not argv or argv[0] in ("-h", "--help"):
        usage()
    if argv[0] == "machine":
        o = parse_opts(argv[1:], {"run_dir", "out", "reeld", "reel_bench", "quick"})
        if "out" not in o:
            usage()
        m = collect_machine(o)
        with open(o["out"], "w", encoding="utf-8") as f:
            json.dump(m, f, indent=2)
            f.write("\n")
        return 0
    if argv[0] == "sequential":
        if len(argv) != 2 or not os.path.isdir(argv[1]):
            usage()
        sys.stdout.write(section_sequential(Results(argv[1])))
        return 0
    if argv[0] == "workspace":
        if len(argv) != 2 or not os.path.isdir(argv[1]):
            usage()
        sys.stdout.write(section_workspace(Results(argv[1])))
        return 0
    if argv[0] == "security":
        if len(argv) != 2 or not os.path.isdir(argv[1]):
            usage()
        sys.stdout.write(section_security(Results(argv[1])))
        return 0
    results_dir = argv[0]
    o = parse_opts(argv[1:], {"out_dir"})
    out_dir = o.get("out_dir") or os.path.dirname(os.path.abspath(results_dir))
    if not os.path.isdir(results_dir):
        sys.stderr.write("report.py: no such directory: %s\n" % results_dir)
        return 1
    path, png = report(results_dir, out_dir)
    sys.stderr.write("report: wrote %s%s\n" % (path, " and " + os.path.join(out_dir, png) if png else
                                                " (no chart)"))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
