"""reelctl events against a real reeld: tail (JSON lines, bodies, subject
filters, PROGRESS), head, durable consumers (ack batching, resume, busy,
rm-consumer, pending), ack, retention errors, usage errors. Retention and
takeover from the command line: test_wal_retention.py."""
import json
import re
import subprocess
import sys
import time

from conftest import REELCTL, Reeld, reelctl

RUN_LINE = re.compile(r"^run ([0-9A-Z]{26}) (\w+) epoch (\d+)")
CONSUMER_LINE = re.compile(r"^(\S+) acked (\d+) pending (\d+)( active)?( \(pattern (\S+)\))?$")


def ok(addr, *args):
    r = reelctl(addr, *args)
    assert r.returncode == 0, (args, r.stdout, r.stderr)
    return r.stdout


def head(addr):
    return json.loads(ok(addr, "--json", "events", "head"))


def consumers(addr):
    """{name: consumer object} from `events consumers --json`."""
    out = ok(addr, "--json", "events", "consumers")
    return {c["name"]: c for c in map(json.loads, out.splitlines())}


def consumer_when(addr, name, cond, what, timeout=10.0):
    """Waits until the consumer exists and cond(it); returns it."""
    def check():
        c = consumers(addr).get(name)
        return c if c is not None and cond(c) else None
    return wait_for(f"{name}: {what}", check, timeout)


def wait_for(what, cond, timeout=10.0):
    t0 = time.monotonic()
    while True:
        got = cond()
        if got:
            return got
        assert time.monotonic() - t0 < timeout, f"timed out waiting for {what}"
        time.sleep(0.05)


class Tail:
    """`reelctl events tail ARGS` in the background, stdout to a file."""

    def __init__(self, addr, path, *args):
        self.path = str(path)
        self.out = open(self.path, "w")
        self.proc = subprocess.Popen([REELCTL, "--addr", addr, "events", "tail"] + list(args),
                                     stdout=self.out, stderr=subprocess.PIPE, text=True)

    def read(self):
        with open(self.path) as f:
            text = f.read()
        # Only whole lines: the last may still be on its way.
        return [json.loads(l) for l in text.split("\n")[:-1]]

    def lines(self, n, timeout=10.0):
        def enough():
            if self.proc.poll() is not None:
                raise AssertionError(f"tail exited {self.proc.returncode}: "
                                     f"{self.proc.stderr.read()}")
            got = self.read()
            return got if len(got) >= n else None
        return wait_for(f"{n} lines from events tail", enough, timeout)

    def stop(self):
        """Kills it (like Ctrl-C would); returns every line it printed."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.proc.stderr.close()
        self.out.close()
        return self.read()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def begin(addr, *args):
    out = ok(addr, "run", "begin", *args)
    m = RUN_LINE.match(out)
    assert m, out
    return m.group(1), m.group(3)


def test_tail_prints_every_change_once_as_a_json_line_with_its_body(reeld, tmp_path):
    a = reeld.addr
    ok(a, "kv", "set", "ns", "a", '{"n":1}')
    ok(a, "kv", "set", "ns", "b.c", '"x"')
    ok(a, "kv", "del", "ns", "a")
    rid, e = begin(a, "app", "ann", "s1", "inv-1", "--owner", "w1")
    ok(a, "journal", "append", rid, '{"t":1}', "--epoch", e, "--kind", "step")
    ok(a, "signal", "send", rid, "go", '{"ok":true}')
    ok(a, "run", "end", rid, "--epoch", e, "--status", "completed", "--result", '{"r":2}')
    n = head(a)["head_revision"]
    assert n >= 7

    with Tail(a, tmp_path / "all.out") as t:
        evs = t.lines(n)
        time.sleep(0.3)
        # Nothing more, and no PROGRESS without --progress.
        assert len(t.read()) == n
    assert [ev["revision"] for ev in evs] == list(range(1, n + 1))
    for ev in evs:
        assert set(ev) == {"revision", "subject", "type", "ts_ms", "body"}, ev
        assert ev["ts_ms"] > 0 and ev["type"] != "PROGRESS"

    put, put2, dele = evs[0], evs[1], evs[2]
    assert put["type"] == "VALUE_CHANGED" and put["subject"] == "kv.ns.a"
    assert put["body"]["type"] == "PUT" and put["body"]["value"] == {"n": 1}
    assert put["body"]["revision"] == 1 and put["body"]["version"] == 1
    assert put2["subject"] == "kv.ns.b.c" and put2["body"]["value"] == "x"
    assert dele["body"]["type"] == "DELETE" and dele["body"]["prev_value"] == {"n": 1}
    assert dele["body"]["value"] is None

    by_type = {}
    for ev in evs[3:]:
        by_type.setdefault(ev["type"], []).append(ev)
    runs = by_type["RUN_CHANGED"]
    assert [r["subject"] for r in runs] == [f"run.{rid}.RUNNING", f"run.{rid}.COMPLETED"]
    assert runs[0]["body"]["run_id"] == rid and runs[0]["body"]["lease_owner"] == "w1"
    assert runs[1]["body"]["status"] == "COMPLETED" and runs[1]["body"]["result"] == {"r": 2}
    [entry] = by_type["JOURNAL_APPENDED"]
    assert entry["subject"] == f"journal.{rid}.step"
    assert entry["body"]["payload"] == {"t": 1} and entry["body"]["kind"] == "step"
    [sig] = by_type["SIGNAL_SENT"]
    assert sig["subject"] == f"signal.{rid}.go.sent"
    assert sig["body"]["name"] == "go" and sig["body"]["payload"] == {"ok": True}

    # Always JSON; --json changes nothing. --from: only what comes after.
    with Tail(a, tmp_path / "json.out", "--json", "--from", "3") as t:
        assert t.lines(n - 3) == evs[3:]


def test_tail_follows_new_events_and_filters_by_subject(reeld, tmp_path):
    a = reeld.addr
    ok(a, "kv", "set", "orders", "o1", "1")
    ok(a, "kv", "set", "users", "u1", "1")
    with Tail(a, tmp_path / "kv.out", "--subject", "kv.orders.>") as orders, \
            Tail(a, tmp_path / "k1.out", "--subject", "kv.*.o2") as o2:
        assert [e["subject"] for e in orders.lines(1)] == ["kv.orders.o1"]
        ok(a, "kv", "set", "users", "u2", "2")
        ok(a, "kv", "set", "orders", "o2", "2")
        ok(a, "kv", "set", "orders", "deep.er", "3")
        got = orders.lines(3)
        assert [e["subject"] for e in got] == ["kv.orders.o1", "kv.orders.o2",
                                               "kv.orders.deep.er"]
        assert [e["revision"] for e in got] == [1, 4, 5]
        assert [(e["subject"], e["body"]["value"]) for e in o2.lines(1)] == [("kv.orders.o2", 2)]
        time.sleep(0.3)
        assert len(orders.read()) == 3 and len(o2.read()) == 1

    r = reelctl(a, "events", "tail", "--subject", "kv.>.x")
    assert r.returncode == 1 and r.stdout == ""
    assert "INVALID_ARGUMENT" in r.stderr and "subject_pattern" in r.stderr, r.stderr


def test_progress_is_printed_only_with_the_flag(reeld, tmp_path):
    a = reeld.addr
    ok(a, "kv", "set", "ns", "k", "1")
    with Tail(a, tmp_path / "p.out", "--progress") as t, \
            Tail(a, tmp_path / "q.out") as quiet:
        got = t.lines(2, timeout=10)
        time.sleep(0.3)
        # Idle just as long: PROGRESS came, and was left out.
        assert [e["type"] for e in quiet.read()] == ["VALUE_CHANGED"]
    assert got[0]["revision"] == 1 and got[0]["type"] == "VALUE_CHANGED"
    assert got[1] == {"revision": 1, "subject": "", "type": "PROGRESS",
                      "ts_ms": got[1]["ts_ms"], "body": None}


def test_head(reeld):
    a = reeld.addr
    assert ok(a, "events", "head") == "head 0 (no events yet)\n"
    for i in range(3):
        ok(a, "kv", "set", "ns", f"k{i}", str(i))
    assert ok(a, "events", "head") == "head 3, oldest 1\n"
    assert head(a) == {"head_revision": 3, "oldest_revision": 1}


def test_durable_consumer_acks_what_it_printed_and_resumes_after_it(reeld, tmp_path):
    a = reeld.addr
    for i in range(5):
        ok(a, "kv", "set", "ns", f"k{i}", str(i))

    with Tail(a, tmp_path / "c1.out", "--consumer", "c1", "--ack") as t:
        assert [e["revision"] for e in t.lines(5)] == [1, 2, 3, 4, 5]
        # An idle tail acks what it printed within about 500 ms.
        c = consumer_when(a, "c1", lambda c: c["acked_revision"] == 5, "acked 5")
        assert c["active"] is True and c["pending"] == 0 and c["subject_pattern"] == ""
        assert ok(a, "events", "consumers") == "c1 acked 5 pending 0 active\n"

        # One subscriber per consumer.
        r = reelctl(a, "events", "tail", "--consumer", "c1")
        assert r.returncode == 1 and "FAILED_PRECONDITION" in r.stderr, r.stderr
        assert r.stdout == ""

        ok(a, "kv", "set", "ns", "k5", "5")
        assert t.lines(6)[-1]["revision"] == 6
        consumer_when(a, "c1", lambda c: c["acked_revision"] == 6, "acked 6")
    # Killed: no longer active; the cursor stays where it was acked.
    c = consumer_when(a, "c1", lambda c: not c["active"], "inactive")
    assert c["acked_revision"] == 6

    for i in range(6, 9):
        ok(a, "kv", "set", "ns", f"k{i}", str(i))
    # It resumes after its cursor; --from is then ignored. Without --ack,
    # the cursor does not move.
    with Tail(a, tmp_path / "c1b.out", "--consumer", "c1", "--from", "1") as t:
        got = t.lines(3)
        assert [e["revision"] for e in got] == [7, 8, 9]
        assert [e["subject"] for e in got] == ["kv.ns.k6", "kv.ns.k7", "kv.ns.k8"]
        time.sleep(0.8)
        assert consumers(a)["c1"]["acked_revision"] == 6
    assert consumers(a)["c1"]["pending"] == 3

    assert ok(a, "events", "rm-consumer", "c1") == "deleted consumer c1\n"
    assert ok(a, "events", "consumers") == ""
    r = reelctl(a, "events", "rm-consumer", "c1")
    assert r.returncode == 1 and "NOT_FOUND" in r.stderr, r.stderr


def test_ack_through_a_pipe_counts_only_what_the_reader_took(reeld):
    """`tail --ack | head -5` acknowledged what reelctl wrote into the pipe,
    not what the reader took: lines still in it when the reader left were
    never seen again."""
    a = reeld.addr
    for i in range(200):
        ok(a, "kv", "set", "ns", f"k{i}", str(i))
    # A reader that takes exactly 7 lines, one read() at a time, then
    # leaves: the rest of what was written waits in the pipe, unread.
    reader = subprocess.Popen(
        [sys.executable, "-c",
         "import os\nn = 0\nbuf = b''\n"
         "while n < 7:\n    c = os.read(0, 1)\n    buf += c\n    n += c == b'\\n'\n"
         "print(buf.decode(), end='')"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    tail = subprocess.Popen([REELCTL, "--addr", a, "events", "tail", "--consumer", "p1",
                             "--ack"], stdout=reader.stdin, stderr=subprocess.PIPE)
    reader.stdin.close()
    reader.stdin = None         # ours is closed: only reelctl writes to it
    out, _ = reader.communicate(timeout=30)
    assert [json.loads(x)["revision"] for x in out.decode().splitlines()] == list(range(1, 8))
    assert tail.wait(timeout=30) == 0, tail.stderr.read()
    assert consumers(a)["p1"]["acked_revision"] == 7

    # --count: exactly N, acknowledged, and the next run goes on after them.
    r = reelctl(a, "events", "tail", "--consumer", "p1", "--ack", "--count", "5")
    assert r.returncode == 0, r.stderr
    assert [json.loads(x)["revision"] for x in r.stdout.splitlines()] == [8, 9, 10, 11, 12]
    assert consumers(a)["p1"]["acked_revision"] == 12
    r = subprocess.run(f"'{REELCTL}' --addr {a} events tail --consumer p1 --ack --count 5 "
                       "| head -5", shell=True, capture_output=True, text=True, timeout=30)
    assert [json.loads(x)["revision"] for x in r.stdout.splitlines()] == [13, 14, 15, 16, 17]
    assert consumers(a)["p1"]["acked_revision"] == 17
    r = reelctl(a, "events", "tail", "--count", "0")
    assert r.returncode == 2 and "--count must be 1 or more" in r.stderr, r.stderr


def test_ack_batches_a_busy_stream(reeld, tmp_path):
    a = reeld.addr
    for i in range(250):
        ok(a, "kv", "set", "ns", f"k{i % 7}", str(i))
    with Tail(a, tmp_path / "busy.out", "--consumer", "bulk", "--ack",
              "--subject", "kv.ns.>") as t:
        assert [e["revision"] for e in t.lines(250)] == list(range(1, 251))
        consumer_when(a, "bulk", lambda c: c["acked_revision"] == 250, "acked 250")
    c = consumers(a)["bulk"]
    assert c["subject_pattern"] == "kv.ns.>" and c["pending"] == 0
    assert re.match(r"^bulk acked 250 pending 0 \(pattern kv\.ns\.>\)$",
                    ok(a, "events", "consumers").strip())


def test_ack_command_moves_the_cursor_forward_only(reeld, tmp_path):
    a = reeld.addr
    for i in range(4):
        ok(a, "kv", "set", "ns", f"k{i}", str(i))
    with Tail(a, tmp_path / "c.out", "--consumer", "manual") as t:
        t.lines(4)
    m = CONSUMER_LINE.match(ok(a, "events", "ack", "manual", "3").strip())
    assert m and m.group(1) == "manual" and m.group(2) == "3" and m.group(3) == "1", m
    got = json.loads(ok(a, "--json", "events", "ack", "manual", "2"))
    assert got["name"] == "manual" and got["acked_revision"] == 3 and got["pending"] == 1
    assert got["acked_at_ms"] >= got["created_at_ms"] > 0 and got["active"] is False

    r = reelctl(a, "events", "ack", "nobody", "1")
    assert r.returncode == 1 and "NOT_FOUND" in r.stderr, r.stderr
    r = reelctl(a, "--json", "events", "ack", "manual", "99")
    assert r.returncode == 1 and json.loads(r.stderr)["error"] == "INVALID_ARGUMENT"
    ok(a, "events", "rm-consumer", "manual")


def test_tail_from_a_trimmed_revision_is_out_of_range(tmp_path):
    # Retention alone would keep nothing: a consumer holds what follows its
    # cursor.
    server = Reeld(str(tmp_path / "data"), extra=["--wal-retention-bytes", "1"]).start()
    a = server.addr
    try:
        with Tail(a, tmp_path / "c.out", "--consumer", "only", "--ack") as t:
            consumer_when(a, "only", lambda c: c["active"], "created")
            for i in range(3):
                ok(a, "kv", "set", "ns", f"k{i}", str(i))
            t.lines(3)
            consumer_when(a, "only", lambda c: c["acked_revision"] == 3, "acked 3")
        ok(a, "kv", "set", "ns", "k3", "3")
        # Acked 1..3 and past the limits: trimmed; 4 is held.
        wait_for("1..3 trimmed", lambda: head(a)["oldest_revision"] == 4)
        # From 0 means from the oldest retained; an explicit trimmed revision
        # is OUT_OF_RANGE naming the oldest retained one.
        with Tail(a, tmp_path / "zero.out") as t:
            assert [e["revision"] for e in t.lines(1)] == [4]
        r = reelctl(a, "events", "tail", "--from", "2")
        assert r.returncode == 1 and r.stdout == ""
        assert "OUT_OF_RANGE" in r.stderr and "4" in r.stderr, r.stderr
        r = reelctl(a, "--json", "events", "tail", "--from", "1")
        assert r.returncode == 1 and json.loads(r.stderr)["error"] == "OUT_OF_RANGE"
        with Tail(a, tmp_path / "after.out", "--from", "3") as t:
            assert [e["revision"] for e in t.lines(1)] == [4]
        ok(a, "events", "rm-consumer", "only")
    finally:
        assert server.stop()[0] == 0


def test_usage_errors(reeld):
    a = reeld.addr
    for args, says in [
        (("tail", "--ack"), "--ack needs --consumer"),
        (("tail", "--from", "-1"), "not a whole number"),
        (("tail", "--from"), "needs a value"),
        (("tail", "extra"), 'unexpected argument "extra"'),
        (("tail", "--limit", "3"), 'unknown flag "--limit"'),
        (("head", "x"), "unexpected argument"),
        (("consumers", "--ack"), 'unknown flag "--ack"'),
        (("rm-consumer",), "missing NAME"),
        (("ack", "c1"), "missing REV"),
        (("ack", "c1", "x"), 'REV: "x" is not a whole number'),
        (("ack", "c1", "99999999999999999999"), "too large"),
        (("bogus",), 'unknown subcommand "bogus"'),
        ((), "missing subcommand"),
    ]:
        r = reelctl(a, "events", *args)
        assert r.returncode == 2, (args, r.stdout, r.stderr)
        assert says in r.stderr, (args, r.stderr)
        assert r.stdout == "", (args, r.stdout)
    # Nothing was created along the way.
    assert ok(a, "events", "consumers") == ""
    assert "events tail [--from REV] [--subject PATTERN] [--consumer NAME] [--ack] " \
           "[--progress]" in ok(a, "help")


# JSON a double cannot carry (see test_reelctl_kv.py).
STORED = (r'[9007199254740993, 1234567890123456789, 0.30000000000000004, 1e999, '
          r'{"deep": {"s": "\u00e9\ud83d\ude00"}}]')


def test_tail_embeds_stored_json_byte_for_byte(reeld, tmp_path):
    a = reeld.addr
    ok(a, "kv", "set", "ns", "k", STORED)
    ok(a, "kv", "set", "ns", "k", "[1e999]")
    rid, e = begin(a, "app", "raw", "s", "i", "--owner", "w1")
    ok(a, "journal", "append", rid, STORED, "--epoch", e, "--kind", "step")
    ok(a, "signal", "send", rid, "go", STORED)
    ok(a, "run", "end", rid, "--epoch", e, "--status", "completed", "--result", STORED)
    n = head(a)["head_revision"]
    with Tail(a, tmp_path / "raw.out") as t:
        t.lines(n)
    lines = open(tmp_path / "raw.out").read().splitlines()
    by_subject = {json.loads(l)["subject"]: l for l in lines}
    kv = [l for l in lines if json.loads(l)["subject"] == "kv.ns.k"]
    assert f'"value":{STORED},' in kv[0] and f'"prev_value":{STORED},' in kv[1], kv
    assert f'"payload":{STORED},' in by_subject[f"journal.{rid}.step"]
    assert f'"payload":{STORED},' in by_subject[f"signal.{rid}.go.sent"]
    assert f'"result":{STORED},' in by_subject[f"run.{rid}.COMPLETED"]
    assert json.loads(kv[0])["body"]["value"][1] == 1234567890123456789


def test_head_says_when_nothing_is_retained(tmp_path):
    server = Reeld(str(tmp_path / "data"), extra=["--wal-retention-age", "1ms"]).start()
    try:
        a = server.addr
        for i in range(3):
            ok(a, "kv", "set", "ns", f"k{i}", str(i))
        wait_for("every event trimmed", lambda: head(a)["oldest_revision"] == 0, timeout=15)
        assert head(a) == {"head_revision": 3, "oldest_revision": 0}
        assert ok(a, "events", "head") == \
            "head 3, none retained (every event up to 3 was trimmed)\n"
    finally:
        code, _ = server.stop()
    assert code == 0, server.log()


def test_tail_ends_when_its_reader_leaves(reeld):
    a = reeld.addr
    for i in range(3):
        ok(a, "kv", "set", "ns", f"k{i}", str(i))
    for extra in ([], ["--consumer", "c1", "--ack"]):
        proc = subprocess.Popen([REELCTL, "--addr", a, "events", "tail"] + extra,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert json.loads(proc.stdout.readline())["revision"] == 1
            proc.stdout.close()  # `| head -1`: nothing more will be read
            # Idle (nothing more to print), it notices all the same.
            assert proc.wait(timeout=5) == 0, (extra, proc.stderr.read())
            assert proc.stderr.read() == ""
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    # What was written before the reader left is acknowledged.
    assert consumers(a)["c1"]["acked_revision"] >= 1
