"""reelctl run / journal against a real reeld: a run's life, --json, fencing,
usage errors, and a suspension's --signal-timeout."""
import json
import re
import subprocess
import time

from conftest import REELCTL, reelctl

RUN_LINE = re.compile(r"^run ([0-9A-Z]{26}) (\w+) epoch (\d+)")


def ok(addr, *args):
    r = reelctl(addr, *args)
    assert r.returncode == 0, (args, r.stdout, r.stderr)
    return r.stdout


def begin(addr, *args):
    """Begins a run from its text output; returns (run_id, epoch, line)."""
    out = ok(addr, "run", "begin", *args)
    m = RUN_LINE.match(out)
    assert m, out
    return m.group(1), int(m.group(3)), out


def wait_for_lines(path, n, timeout=10):
    deadline = time.monotonic() + timeout
    while True:
        lines = path.read_text().splitlines()
        if len(lines) >= n or time.monotonic() > deadline:
            return lines
        time.sleep(0.05)


def test_begin_append_read_follow_end_walkthrough(reeld, tmp_path):
    a = reeld.addr
    run_id, epoch, line = begin(a, "app", "ann", "s1", "inv-1", "--owner", "w1")
    assert "RUNNING" in line and "owner w1, lease until" in line
    assert "resumed" not in line
    assert epoch >= 1

    # The same owner beginning it again resumes it under a new lease.
    again = ok(a, "run", "begin", "app", "ann", "s1", "inv-1", "--owner", "w1")
    m = RUN_LINE.match(again)
    assert m and m.group(1) == run_id and m.group(2) == "RUNNING", again
    assert again.strip().endswith("resumed")
    epoch = int(m.group(3))

    out_path = tmp_path / "follow.out"
    with open(out_path, "w") as out:
        follow = subprocess.Popen([REELCTL, "--addr", a, "journal", "follow", run_id],
                                  stdout=out, stderr=subprocess.PIPE, text=True)
    try:
        e = str(epoch)
        assert ok(a, "journal", "append", run_id, '{"q":"hi"}', "--epoch", e,
                  "--kind", "user.msg").strip().startswith("seq 1 (revision ")
        assert ok(a, "journal", "append", run_id, "--epoch", e, "--kind", "tool.call",
                  "--key", "call-1").startswith("seq 2 ")
        dup = ok(a, "journal", "append", run_id, "--epoch", e, "--kind", "tool.call",
                 "--key", "call-1")
        assert dup.startswith("seq 2 ") and dup.strip().endswith("duplicate")
        ok(a, "journal", "append", run_id, "[1,2]", "--epoch", e, "--kind", "tool.result",
           "--expect-seq", "3")

        lines = ok(a, "journal", "read", run_id).splitlines()
        assert len(lines) == 3
        assert re.match(rf'^1 user\.msg {{"q":"hi"}} \(epoch {e}, rev \d+\)$', lines[0]), lines
        assert lines[1].startswith("2 tool.call {} ")
        assert lines[2].startswith("3 tool.result [1,2] ")
        assert ok(a, "journal", "read", run_id, "--from-seq", "2").splitlines() == lines[2:]
        r = reelctl(a, "journal", "read", run_id, "--limit", "1")
        assert r.returncode == 0 and r.stdout.splitlines() == lines[:1]
        assert "--from-seq 1" in r.stderr
        assert ok(a, "journal", "read", run_id, "--limit", "1", "--all").splitlines() == lines

        assert wait_for_lines(out_path, 3) == lines

        hb = ok(a, "run", "heartbeat", run_id, "--epoch", e, "--ttl", "1m")
        assert hb.startswith(f"run {run_id} RUNNING epoch {e}")
        end = ok(a, "run", "end", run_id, "--epoch", e, "--status", "Completed",
                 "--result", '{"answer":42}')
        assert end.startswith(f"run {run_id} COMPLETED") and "ended" in end

        # The stream ends with the run, and follow with it.
        assert follow.wait(timeout=10) == 0, follow.stderr.read()
        assert out_path.read_text().splitlines() == lines
    finally:
        if follow.poll() is None:
            follow.kill()
            follow.wait()

    got = ok(a, "run", "get", run_id)
    assert got.startswith(f"run {run_id} COMPLETED")
    assert "app/ann/s1/inv-1" in got and '{"answer":42}' in got
    listed = ok(a, "run", "ls", "--app", "app", "--user", "ann").splitlines()
    assert len(listed) == 1 and listed[0].startswith(f"{run_id} COMPLETED app/ann/s1/inv-1")


def test_json_output(reeld):
    a = reeld.addr
    run = json.loads(ok(a, "--json", "run", "begin", "app", "bob", "s", "i", "--owner", "w1",
                        "--label", "team=search", "--label", "tier=a=b"))
    assert run["status"] == "RUNNING" and run["lease_owner"] == "w1"
    assert run["labels"] == {"team": "search", "tier": "a=b"}
    assert run["resumed"] is False and run["result"] is None and run["next_seq"] == 1
    assert run["lease_expires_at_ms"] > run["created_at_ms"]
    rid, e = run["run_id"], str(run["lease_epoch"])

    entry = json.loads(ok(a, "journal", "append", rid, '{"n":1}', "--epoch", e, "--kind", "step",
                          "--key", "k1", "--json"))
    assert entry["seq"] == 1 and entry["payload"] == {"n": 1} and entry["duplicate"] is False
    assert entry["idempotency_key"] == "k1" and entry["lease_epoch"] == run["lease_epoch"]
    dup = json.loads(ok(a, "--json", "journal", "append", rid, '{"n":1}', "--epoch", e,
                        "--kind", "step", "--key", "k1"))
    assert dup["duplicate"] is True and dup["seq"] == 1 and dup["payload"] == {"n": 1}
    r = reelctl(a, "journal", "append", rid, '{"n":2}', "--epoch", e, "--kind", "step",
                "--key", "k1")
    assert r.returncode == 1 and "ALREADY_EXISTS" in r.stderr and "seq 1" in r.stderr, r.stderr
    ok(a, "journal", "append", rid, "--epoch", e, "--kind", "step")

    entries = [json.loads(l) for l in ok(a, "--json", "journal", "read", rid).splitlines()]
    assert [x["seq"] for x in entries] == [1, 2] and entries[1]["payload"] == {}

    ended = json.loads(ok(a, "--json", "run", "end", rid, "--epoch", e, "--status", "failed",
                          "--result", '{"error":"boom"}'))
    assert ended["status"] == "FAILED" and ended["result"] == {"error": "boom"}
    assert ended["ended_at_ms"] > 0 and ended["next_seq"] == 3

    listed = [json.loads(l) for l in ok(a, "--json", "run", "ls", "--status", "FAILED").splitlines()]
    assert [r["run_id"] for r in listed] == [rid]
    assert ok(a, "--json", "run", "ls", "--status", "running") == ""


def test_stale_epoch_is_fenced_after_another_worker_claims(reeld):
    a = reeld.addr
    run_id, epoch, _ = begin(a, "app", "cy", "s", "i", "--owner", "w1", "--ttl", "300ms")
    time.sleep(0.6)
    rec = ok(a, "run", "recoverable").splitlines()
    assert any(l.startswith(run_id) for l in rec), rec
    claim = ok(a, "run", "claim", run_id, "--owner", "w2", "--ttl", "30s")
    m = RUN_LINE.match(claim)
    assert m and m.group(2) == "RUNNING" and "owner w2" in claim
    assert int(m.group(3)) > epoch

    r = reelctl(a, "journal", "append", run_id, "--epoch", str(epoch), "--kind", "late")
    assert r.returncode == 1 and "FAILED_PRECONDITION" in r.stderr, r.stderr
    r = reelctl(a, "run", "heartbeat", run_id, "--epoch", str(epoch))
    assert r.returncode == 1 and "FAILED_PRECONDITION" in r.stderr, r.stderr
    r = reelctl(a, "--json", "run", "end", run_id, "--epoch", str(epoch), "--status", "completed")
    assert r.returncode == 1 and json.loads(r.stderr)["error"] == "FAILED_PRECONDITION"

    # The new holder still writes; suspending parks the run without a lease.
    ok(a, "journal", "append", run_id, "--epoch", m.group(3), "--kind", "step")
    sus = ok(a, "run", "suspend", run_id, "--epoch", m.group(3), "--waiting-on", "approval")
    assert sus.startswith(f"run {run_id} WAITING") and "waiting on approval" in sus


def test_a_waiting_run_is_cancelled_at_the_epoch_it_was_suspended_at(reeld):
    """A run parked on a signal that will not come can be ended without
    sending it one: EndRun at its epoch, as for a PAUSED run."""
    a = reeld.addr
    run_id, epoch, _ = begin(a, "app", "wc", "s", "i", "--owner", "w1")
    ok(a, "run", "suspend", run_id, "--epoch", str(epoch), "--waiting-on", "approval")
    r = reelctl(a, "run", "end", run_id, "--epoch", str(epoch + 1), "--status", "cancelled")
    assert r.returncode == 1 and "FAILED_PRECONDITION" in r.stderr, r.stderr
    assert "EndRun it at that epoch" in r.stderr, r.stderr
    assert "a PAUSED or WAITING run (no\n      lease) ends at the epoch" in \
        reelctl(a, "run", "end", "--help").stdout + reelctl(a, "run", "end", "--help").stderr
    end = ok(a, "run", "end", run_id, "--epoch", str(epoch), "--status", "cancelled")
    assert end.startswith(f"run {run_id} CANCELLED"), end
    got = json.loads(ok(a, "--json", "run", "get", run_id))
    assert got["status"] == "CANCELLED" and got["waiting_on"] == "", got
    # Ended: the signal it waited on is refused, not buffered.
    r = reelctl(a, "signal", "send", run_id, "approval")
    assert r.returncode == 1 and "FAILED_PRECONDITION" in r.stderr, r.stderr


def test_suspend_with_a_signal_timeout_is_runnable_once_it_passes(reeld):
    """--signal-timeout is SuspendRun's timeout_ms: no signal by then, and
    the run is RUNNABLE (SIGNAL_TIMEOUT) with a timed-out "signal" entry."""
    a = reeld.addr
    run_id, epoch, _ = begin(a, "app", "st", "s", "i", "--owner", "w1")
    before = int(time.time() * 1000)
    sus = ok(a, "run", "suspend", run_id, "--epoch", str(epoch), "--waiting-on", "approval",
             "--signal-timeout", "1s")
    assert sus.startswith(f"run {run_id} WAITING") and "waiting on approval" in sus, sus

    deadline = time.monotonic() + 20
    while True:
        run = json.loads(ok(a, "--json", "run", "get", run_id))
        if run["status"] != "WAITING" or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert run["status"] == "RUNNABLE" and run["reason"] == "SIGNAL_TIMEOUT", run
    assert run["updated_at_ms"] >= before + 1000, (run, before)
    entries = [json.loads(l) for l in ok(a, "--json", "journal", "read", run_id).splitlines()]
    assert [(x["kind"], x["payload"]) for x in entries] == \
        [("signal", {"name": "approval", "signal_id": "", "timed_out": True})], entries
    line = ok(a, "run", "get", run_id).splitlines()[0]
    assert line.startswith(f"run {run_id} RUNNABLE") and "[SIGNAL_TIMEOUT, " in line, line
    # A worker takes it on as any runnable run.
    claim = ok(a, "run", "claim", run_id, "--owner", "w2")
    assert RUN_LINE.match(claim).group(2) == "RUNNING", claim


def test_a_signal_before_the_timeout_wakes_the_run_and_the_timeout_does_nothing(reeld):
    a = reeld.addr
    run_id, epoch, _ = begin(a, "app", "st", "s", "j", "--owner", "w1")
    # 3 s: the send must come before it (slow under ASan).
    ok(a, "run", "suspend", run_id, "--epoch", str(epoch), "--waiting-on", "approval",
       "--signal-timeout", "3s")
    ok(a, "signal", "send", run_id, "approval", '{"ok":true}')
    run = json.loads(ok(a, "--json", "run", "get", run_id))
    assert run["status"] == "RUNNABLE" and run["reason"] == "SIGNAL", run
    time.sleep(3.5)
    again = json.loads(ok(a, "--json", "run", "get", run_id))
    assert again["status"] == "RUNNABLE" and again["reason"] == "SIGNAL", again
    assert again["updated_at_ms"] == run["updated_at_ms"], (run, again)
    assert ok(a, "journal", "read", run_id) == ""


def test_unknown_run_is_a_server_error(reeld):
    r = reelctl(reeld.addr, "run", "get", "01ARZ3NDEKTSV4RRFFQ69G5FAV")
    assert r.returncode == 1 and "NOT_FOUND" in r.stderr


def test_usage_errors_exit_2(reeld):
    rid = "01ARZ3NDEKTSV4RRFFQ69G5FAV"
    cases = [
        (["run"], "missing subcommand"),
        (["run", "frob"], "unknown subcommand"),
        (["run", "begin", "app", "u", "s"], "missing INVOCATION_ID"),
        (["run", "begin", "app", "u", "s", "i"], "missing --owner"),
        (["run", "begin", "app", "u", "s", "i", "x", "--owner", "w"], "unexpected argument"),
        (["run", "begin", "app", "u", "s", "i", "--owner", "w", "--ttl", "soon"], "--ttl"),
        (["run", "begin", "app", "u", "s", "i", "--owner", "w", "--label", "nokey"], "--label"),
        (["run", "get"], "missing RUN_ID"),
        (["run", "heartbeat", rid, "--epoch", "x"], "--epoch"),
        (["run", "heartbeat", rid, "--epoch", "-1"], "--epoch"),
        (["run", "suspend", rid, "--epoch", "1"], "missing --waiting-on"),
        (["run", "suspend", rid, "--epoch", "1", "--waiting-on", "a", "--signal-timeout", "0"],
         '--signal-timeout: "0" is not a positive duration (e.g. 500ms, 30s, 2m, 1h, 1d)'),
        (["run", "suspend", rid, "--epoch", "1", "--waiting-on", "a", "--signal-timeout", "soon"],
         '--signal-timeout: "soon" is not a positive duration'),
        (["run", "suspend", rid, "--epoch", "1", "--waiting-on", "a", "--signal-timeout", "366d"],
         "--signal-timeout: 366d is too long (at most 365d)"),
        (["run", "heartbeat", rid, "--epoch", "1", "--signal-timeout", "1s"], "unknown flag"),
        (["run", "end", rid, "--epoch", "1", "--status", "running"], "--status"),
        (["run", "ls", "--status", "sleeping"], "--status"),
        (["run", "ls", "--limit", "99999999999"], "--limit"),
        (["run", "ls", "--user", "u"], "--user needs --app"),
        (["journal", "append", rid, "--epoch", "1"], "missing --kind"),
        (["journal", "append", rid, "{}", "extra", "--epoch", "1", "--kind", "k"],
         "unexpected argument"),
        (["journal", "append", rid, "--epoch", "1", "--kind", "k", "--expect-seq", "1.5"],
         "--expect-seq"),
        (["journal", "read", rid, "--from-seq", "many"], "--from-seq"),
        (["journal", "follow", rid, "--limit", "3"], "unknown flag"),
    ]
    for args, said in cases:
        r = reelctl(reeld.addr, *args)
        assert r.returncode == 2, (args, r.stderr)
        assert said in r.stderr, (args, r.stderr)


# JSON a double cannot carry (see test_reelctl_kv.py).
STORED = (r'[9007199254740993, 1234567890123456789, 0.30000000000000004, 1e999, '
          r'{"deep": {"s": "\u00e9\ud83d\ude00"}}]')


def test_quiet_prints_only_what_a_script_needs(reeld):
    a = reeld.addr
    # 3 s: the two appends (two reelctl starts, slow under ASan) come before
    # the lease expires.
    out = ok(a, "run", "begin", "app", "q", "s", "i", "--owner", "w1", "--ttl", "3s", "-q")
    assert re.fullmatch(r"[0-9A-Z]{26}\n", out), out
    rid = out.strip()
    assert ok(a, "journal", "append", rid, "--epoch", "1", "--kind", "step", "-q") == "1\n"
    assert ok(a, "journal", "append", rid, "--epoch", "1", "--kind", "step", "--quiet") == "2\n"
    # The epoch a claimer goes on with, once the lease has expired.
    deadline = time.monotonic() + 10
    while True:
        r = reelctl(a, "run", "claim", rid, "--owner", "w2", "-q")
        if r.returncode == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert r.stdout == "2\n", (r.stdout, r.stderr)
    r = reelctl(a, "--json", "run", "begin", "app", "q", "s", "j", "--owner", "w1", "-q")
    assert r.returncode == 2 and "--quiet and --json" in r.stderr, r.stderr
    # "-q" is a flag only as a whole argument: "-" is still standard input.
    r = reelctl(a, "run", "begin", "app", "q", "s", "k", "--owner", "w1", "-qx")
    assert r.returncode == 2 and 'unexpected argument "-qx"' in r.stderr, r.stderr


def test_durations_take_hours_and_days_up_to_the_limit(reeld):
    a = reeld.addr
    run = json.loads(ok(a, "--json", "run", "begin", "app", "d", "s", "i", "--owner", "w1",
                        "--ttl", "1h", "--timeout", "1h"))
    assert 3590000 < run["lease_expires_at_ms"] - run["updated_at_ms"] <= 3600000, run
    hb = json.loads(ok(a, "--json", "run", "heartbeat", run["run_id"], "--epoch", "1",
                       "--ttl", "1d"))
    assert 86390000 < hb["lease_expires_at_ms"] - hb["updated_at_ms"] <= 86400000, hb
    # A bare number is seconds, as reeld's own flags take them: "--ttl 30"
    # is a 30 s lease, not 30 ms.
    hb = json.loads(ok(a, "--json", "run", "heartbeat", run["run_id"], "--epoch", "1",
                       "--ttl", "30"))
    assert 29000 < hb["lease_expires_at_ms"] - hb["updated_at_ms"] <= 30000, hb
    for ttl in ("25h", "2d", "86401"):
        r = reelctl(a, "run", "heartbeat", run["run_id"], "--epoch", "1", "--ttl", ttl)
        assert r.returncode == 2 and f"--ttl: {ttl} is too long (at most 24h)" in r.stderr, \
            (ttl, r.stderr)
    r = reelctl(a, "run", "heartbeat", run["run_id"], "--epoch", "1", "--ttl", "1w")
    assert r.returncode == 2 and "1h, 1d" in r.stderr, r.stderr


def test_recoverable_lists_one_apps_runs(reeld):
    a = reeld.addr
    mine, _, _ = begin(a, "billing", "u", "s", "i", "--owner", "w1", "--ttl", "200ms")
    other, _, _ = begin(a, "search", "u", "s", "i", "--owner", "w1", "--ttl", "200ms")
    deadline = time.monotonic() + 10
    while True:
        every = ok(a, "run", "recoverable")
        if (mine in every and other in every) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert mine in every and other in every, every
    listed = ok(a, "run", "recoverable", "--app", "billing").splitlines()
    # Its lease expired: a commit made it RUNNABLE (issue 21).
    assert len(listed) == 1 and listed[0].startswith(f"{mine} RUNNABLE billing/u/s/i"), listed
    got = [json.loads(l) for l in ok(a, "--json", "run", "recoverable", "--app", "search",
                                     "--limit", "1").splitlines()]
    assert [r["run_id"] for r in got] == [other]
    assert ok(a, "run", "recoverable", "--app", "nobody") == ""
    r = reelctl(a, "run", "recoverable", "--app", "x" * 300)
    assert r.returncode == 1 and "INVALID_ARGUMENT" in r.stderr and "app" in r.stderr, r.stderr


def test_payloads_and_results_from_files_and_stdin_come_back_as_stored(reeld, tmp_path):
    a = reeld.addr
    rid, e, _ = begin(a, "app", "p", "s", "i", "--owner", "w1")
    e = str(e)
    big = tmp_path / "big.json"
    big.write_text(json.dumps({"blob": "y" * 500000}) + "\n")
    assert ok(a, "journal", "append", rid, f"@{big}", "--epoch", e, "--kind", "step",
              "-q") == "1\n"
    r = subprocess.run([REELCTL, "--addr", a, "--json", "journal", "append", rid, "-",
                        "--epoch", e, "--kind", "step"], input=STORED + "\n",
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and f'"payload":{STORED},' in r.stdout, (r.stdout, r.stderr)
    lines = ok(a, "--json", "journal", "read", rid).splitlines()
    assert json.loads(lines[0])["payload"] == {"blob": "y" * 500000}
    assert f'"payload":{STORED},' in lines[1], lines[1]
    assert json.loads(lines[1])["payload"][0] == 9007199254740993

    # Text: a payload with line breaks stays on its entry's line.
    ok(a, "journal", "append", rid, '{\n"n":\n1}', "--epoch", e, "--kind", "note")
    text = ok(a, "journal", "read", rid, "--from-seq", "2").splitlines()
    assert len(text) == 1 and text[0].startswith(f"3 note {{ \"n\": 1}} (epoch {e}, rev ")

    r = subprocess.run([REELCTL, "--addr", a, "run", "end", rid, "--epoch", e, "--status",
                        "completed", "--result", "-"], input=STORED,
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert f'"result":{STORED},' in ok(a, "--json", "run", "get", rid)
    assert f"  result:    {STORED}\n" in ok(a, "run", "get", rid)

    r = reelctl(a, "journal", "append", rid, "done", "--epoch", e, "--kind", "step")
    assert r.returncode == 1 and "did you mean '\"done\"'?" in r.stderr, r.stderr


def test_follow_ends_when_its_reader_leaves(reeld):
    a = reeld.addr
    rid, e, _ = begin(a, "app", "f", "s", "i", "--owner", "w1")
    ok(a, "journal", "append", rid, "--epoch", str(e), "--kind", "step")
    proc = subprocess.Popen([REELCTL, "--addr", a, "journal", "follow", rid],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().startswith("1 step ")
        proc.stdout.close()  # `| head -1`: nothing more will be read
        assert proc.wait(timeout=5) == 0, proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
