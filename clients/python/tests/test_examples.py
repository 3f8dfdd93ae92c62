"""examples/, run as a user runs them, against a real reeld: the reactive
pipeline, the crash-proof agent killed with SIGKILL in the middle of a step
and finished by a second worker without repeating a completed step, the
approval gate (parked while it waits), approved and timed out by reeld's
timer, and the workspace hand-off between two agents."""
import hashlib
import json
import os
import signal
import subprocess
import time

import reel

from conftest import EXAMPLES, python


def _run(script, *args, timeout=60):
    return subprocess.run([python(), os.path.join(EXAMPLES, script)] + list(args),
                          capture_output=True, text=True, timeout=timeout)


def _wait_for_line(path, prefix, proc, timeout=20.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        assert proc.poll() is None, f"worker exited {proc.returncode}: {proc.stderr.read()}"
        if os.path.exists(path):
            with open(path) as f:
                if any(line.startswith(prefix) for line in f):
                    return
        time.sleep(0.02)
    raise AssertionError(f"no {prefix!r} line in {path}")


def test_reactive_pipeline(reeld, client):
    r = _run("reactive_pipeline.py", "--addr", reeld.addr, "--docs", "4")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"doc0": 9, "doc1": 9, "doc2": 9, "doc3": 9}
    clean = client.kv.get("demo", "pipeline.doc2.clean").value
    assert clean["words"][:3] == ["document", "2", "says"]
    assert client.kv.get("demo", "pipeline.summary").value == json.loads(r.stdout)
    # Again with fewer documents, in the same namespace: it ends once this
    # run's are counted (it used to wait for a count it had passed).
    again = _run("reactive_pipeline.py", "--addr", reeld.addr, "--docs", "2", timeout=30)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout) == {"doc0": 9, "doc1": 9, "doc2": 9, "doc3": 9}


def _worker(reeld, effects, *extra):
    return subprocess.Popen([python(), os.path.join(EXAMPLES, "crash_proof_agent.py"), "worker",
                             "--addr", reeld.addr, "--effects", effects, "--ttl", "2"] +
                            list(extra), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def test_crash_proof_agent_killed_mid_run_is_finished_without_repeating_steps(
        reeld, client, tmp_path):
    effects = str(tmp_path / "effects.log")
    sub = _run("crash_proof_agent.py", "submit", "--addr", reeld.addr, "--order", "42")
    assert sub.returncode == 0, sub.stderr
    run_id = sub.stdout.strip()
    assert client.runs.get(run_id).status == reel.RunStatus.RUNNABLE
    first = _worker(reeld, effects, "--pause-in", "ship")
    _wait_for_line(effects, "ship-start", first)
    # The second worker waits in claim_next while the first holds the run.
    second = _worker(reeld, effects, "--runs", "1")
    assert second.stdout.readline().startswith("worker ")
    first.send_signal(signal.SIGKILL)
    first.wait()
    first.stdout.close()
    first.stderr.close()
    out, err = second.communicate(timeout=60)
    assert second.returncode == 0, err
    # Its lease was the first worker's epoch 2 (the submit's was 1).
    assert "1 completed" in err, err
    assert f"finished {run_id} (order 42) at epoch 3" in out
    with open(effects) as f:
        lines = [line.split()[0] for line in f]
    # reserve and charge ran once, in the first worker; ship was interrupted
    # there and ran again in the second.
    assert lines == ["reserve", "charge", "ship-start", "ship"]
    info = client.runs.get(run_id)
    assert info.status == reel.RunStatus.COMPLETED
    assert info.result["charge"] == {"amount": 42, "ok": True}
    steps = [(e.payload["step"], e.lease_epoch) for e in client.journal.read(run_id)]
    assert steps == [("reserve", 2), ("charge", 2), ("ship", 3)]


def _gate(reeld, *args):
    return subprocess.Popen([python(), os.path.join(EXAMPLES, "approval_gate.py")] + list(args) +
                            ["--addr", reeld.addr],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_approval_gate_approved(reeld, client):
    # Approving an order nobody requested says so, not a traceback.
    early = _run("approval_gate.py", "approve", "--addr", reeld.addr, "--order", "7")
    assert early.returncode == 3, early.stderr
    assert early.stderr == ("order 7: no request waits for an approval (run `request "
                            "--order 7` first)\n"), early.stderr
    worker = _gate(reeld, "worker", "--runs", "1")
    assert worker.stdout.readline().startswith("worker ")
    req = _gate(reeld, "request", "--order", "7", "--timeout", "60")
    run_id = req.stdout.readline().strip()
    # The run waits parked: no worker holds it.
    end = time.monotonic() + 20
    while client.runs.get(run_id).status != reel.RunStatus.WAITING:
        assert time.monotonic() < end, "the gate never parked"
        time.sleep(0.02)
    assert client.runs.get(run_id).lease_owner == ""
    ok = _run("approval_gate.py", "approve", "--addr", reeld.addr, "--order", "7",
              "--by", "alice")
    assert ok.returncode == 0, ok.stderr
    assert f"to run {run_id} (RUNNABLE)" in ok.stdout
    out, err = req.communicate(timeout=60)
    assert req.returncode == 0, err
    assert out.splitlines()[-1] == "order 7: approved by alice, executed"
    assert worker.wait(timeout=30) == 0, worker.stderr.read()
    worker.stdout.close()
    worker.stderr.close()
    info = client.runs.get(run_id)
    assert (info.status, info.result["approved_by"]) == (reel.RunStatus.COMPLETED, "alice")
    assert [e.kind for e in client.journal.read(run_id)] == ["step", "signal", "step"]


def test_approval_gate_times_out_on_reelds_timer_and_cancels(reeld, client):
    req = _gate(reeld, "request", "--order", "8", "--timeout", "0.5")
    run_id = req.stdout.readline().strip()
    worker = _gate(reeld, "worker", "--runs", "1")
    out, err = req.communicate(timeout=60)
    assert req.returncode == 3, err
    assert out.splitlines()[-1] == "order 8: not approved, cancelled"
    assert worker.wait(timeout=30) == 0, worker.stderr.read()
    worker.stdout.close()
    worker.stderr.close()
    info = client.runs.get(run_id)
    assert info.status == reel.RunStatus.CANCELLED
    assert info.result["reason"] == "no approval within 0.5s"
    entries = list(client.journal.read(run_id))
    assert [e.kind for e in entries] == ["step", "signal"]
    assert entries[1].payload == {"name": "approve", "signal_id": "", "timed_out": True}


def test_workspace_handoff_between_two_agents(reeld, client):
    writer = subprocess.Popen([python(), os.path.join(EXAMPLES, "workspace_handoff.py"), "write",
                               "--addr", reeld.addr, "--count", "2"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert writer.stdout.readline().strip() == "writer ready"
    # A topic with a dot is one key of two tokens after "handoff".
    for topic, size in (("tides", 5_000_000), ("moss.bank", 1234)):
        r = _run("workspace_handoff.py", "research", "--addr", reeld.addr, "--topic", topic,
                 "--size", str(size))
        assert r.returncode == 0, r.stderr
    out, err = writer.communicate(timeout=60)
    assert writer.returncode == 0, err
    summaries = [json.loads(line) for line in out.splitlines()]
    assert [(s["topic"], s["bytes"]) for s in summaries] == \
        [("tides", 5_000_000), ("moss.bank", 1234)]
    data = client.workspace.get("lab", "research/tides/data.bin")
    assert len(data) == 5_000_000
    assert summaries[0]["sha256"] == hashlib.sha256(data).hexdigest()
    assert summaries[0]["report_words"] == len("# tides The dataset holds 5000000 bytes "
                                               "about tides.".split())
    stored = json.loads(client.workspace.get("lab", "summaries/tides.json"))
    assert stored == summaries[0]
    run = client.runs.get(stored["from_run"])
    assert run.status == reel.RunStatus.COMPLETED
    assert [e.payload["step"] for e in client.journal.read(run.run_id)] == \
        ["upload-data", "upload-report", "hand-off"]
    # Run again once done: its steps replay, and nothing is announced again.
    r = _run("workspace_handoff.py", "research", "--addr", reeld.addr, "--topic", "moss.bank",
             "--size", "1234")
    assert r.returncode == 0, r.stderr
    assert client.kv.get("lab", "handoff.moss.bank").version == 1


def test_workspace_handoff_research_run_again_after_a_crash(reeld, client):
    """A research worker killed in the middle of its upload, run again at
    once: it waits for the dead worker's lease to run out, resumes the same
    run and finishes it (it used to fail FailedPrecondition: leased)."""
    args = [python(), os.path.join(EXAMPLES, "workspace_handoff.py"), "research",
            "--addr", reeld.addr, "--topic", "storms", "--size", "400000000"]
    first = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 20
    while not list(client.runs.list(app="handoff")):
        assert time.monotonic() < deadline and first.poll() is None, first.stderr.read()
        time.sleep(0.05)
    time.sleep(0.5)                                # in the middle of the upload
    first.send_signal(signal.SIGKILL)
    first.wait()
    r = subprocess.run(args[:-1] + ["2000"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "handed off storms" in r.stdout
    runs = list(client.runs.list(app="handoff"))
    assert len(runs) == 1 and runs[0].status == reel.RunStatus.COMPLETED
