#!/usr/bin/python3
"""The disk's own synced-write latency for a sequential writer.

A client with one call in flight cannot send its next write before the
answer to the last one has come back, so its writes reach the disk with a
pause between them: at least the round trip of a call that writes nothing.
This measures what the disk alone does with such a pause: a write of
--bytes to a file then fdatasync, --count times, with --gap-us of busy
waiting between them (the CPU stays busy, so what is measured is the
disk, not a core waking up), into a file written and synced beforehand
(so each sync is an overwrite, as in RocksDB's recycled WAL files).

    disk_gap.py --dir DIR --gap-us 0,45 --count 20000 --json OUT

writes {"bench": "disk-gap", "rows": [{"gap_us", "count", "p50_us",
"p90_us", "p99_us", "p999_us"}...]}. No reel involved: it is the floor
reel's sequential rows are compared with (bench/report.py).
"""
import argparse
import json
import os
import sys
import time


def one_row(path, gap_us, count, size):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, b"\0" * (count * size + 4096))
        os.fsync(fd)
        os.lseek(fd, 0, os.SEEK_SET)
        buf = b"r" * size
        gap = gap_us / 1e6
        lat = []
        clock = time.perf_counter
        for _ in range(count):
            t = clock()
            os.write(fd, buf)
            os.fdatasync(fd)
            lat.append(clock() - t)
            if gap > 0:
                end = clock() + gap
                while clock() < end:
                    pass
    finally:
        os.close(fd)
        os.unlink(path)
    lat.sort()

    def q(p):
        return round(lat[min(len(lat) - 1, int(len(lat) * p))] * 1e6, 1)

    return {"gap_us": gap_us, "count": count, "bytes": size, "p50_us": q(0.50),
            "p90_us": q(0.90), "p99_us": q(0.99), "p999_us": q(0.999)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", required=True, help="a directory on the disk to measure")
    ap.add_argument("--gap-us", default="0",
                    help="comma-separated pauses between writes, microseconds")
    # 1,268 bytes: what reeld's WAL record of a set with a 256-byte value
    # measured (strace of its write(2) calls).
    ap.add_argument("--bytes", type=int, default=1268)
    ap.add_argument("--count", type=int, default=20000)
    ap.add_argument("--json")
    a = ap.parse_args()
    try:
        gaps = [float(g) for g in a.gap_us.split(",") if g.strip()]
    except ValueError:
        ap.error("--gap-us: not a comma-separated list of numbers: %r" % a.gap_us)
    if not gaps or any(g < 0 or g > 1e6 for g in gaps):
        ap.error("--gap-us: each pause must be 0 to 1,000,000 microseconds")
    if a.count < 100 or a.bytes < 1 or a.bytes > 1 << 20:
        ap.error("--count must be at least 100, --bytes 1 to 1,048,576")
    rows = []
    for g in gaps:
        r = one_row(os.path.join(a.dir, "disk-gap.%d" % os.getpid()), g, a.count, a.bytes)
        print("disk-gap: pause %.0f us: p50 %.0f p90 %.0f p99 %.0f p99.9 %.0f us" % (
            g, r["p50_us"], r["p90_us"], r["p99_us"], r["p999_us"]), file=sys.stderr)
        rows.append(r)
    doc = {"bench": "disk-gap", "rows": rows}
    if a.json:
        with open(a.json, "w") as f:
            json.dump(doc, f, indent=1)
    else:
        print(json.dumps(doc, indent=1))


if __name__ == "__main__":
    main()
