"""reelctl run / journal against a real reeld: a run's life, --json, fencing,
usage errors."""
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
