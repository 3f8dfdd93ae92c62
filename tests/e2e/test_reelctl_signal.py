"""reelctl signal against a real reeld: send, await (at once, long-polled,
woken by a send), ls, session routing, --json, fencing, usage errors, and
timers: send --at / --in (delivered at its time, not before), cancel."""
import json
import os
import re
import signal
import subprocess
import time

import pytest

from conftest import REELCTL, Reeld, reelctl

RUN_LINE = re.compile(r"^run ([0-9A-Z]{26}) (\w+) epoch (\d+)")
SENT_LINE = re.compile(r"^signal (\S+) seq (\d+) to run ([0-9A-Z]{26}) \(run (\w+)\)( duplicate)?$")
GOT_LINE = re.compile(r"^signal (\S+) seq (\d+): (.*) \(journal seq (\d+)\)$")


def ok(addr, *args):
    r = reelctl(addr, *args)
    assert r.returncode == 0, (args, r.stdout, r.stderr)
    return r.stdout


def begin(addr, *args):
    """Begins a run from its text output; returns (run_id, epoch)."""
    out = ok(addr, "run", "begin", *args)
    m = RUN_LINE.match(out)
    assert m, out
    return m.group(1), m.group(3)


def send(addr, *args):
    """Sends from text output; returns the match (name, seq, run, status, dup)."""
    out = ok(addr, "signal", "send", *args)
    m = SENT_LINE.match(out.strip())
    assert m, out
    return m


def test_send_await_ls_walkthrough(reeld):
    a = reeld.addr
    rid, e = begin(a, "app", "ann", "s1", "inv-1", "--owner", "w1")

    m = send(a, rid, "approve", '{"ok":true}')
    assert m.group(1) == "approve" and m.group(3) == rid
    assert m.group(4) == "RUNNING" and m.group(5) is None
    seq1 = int(m.group(2))
    m = send(a, rid, "approve", "--id", "sig-2")
    seq2 = int(m.group(2))
    assert seq2 > seq1
    # A retry with the same id stores nothing and says so; another signal
    # reusing the id is refused.
    m = send(a, rid, "approve", "--id", "sig-2")
    assert int(m.group(2)) == seq2 and m.group(5) == " duplicate"
    r = reelctl(a, "signal", "send", rid, "approve", '{"other":1}', "--id", "sig-2")
    assert r.returncode == 1 and "ALREADY_EXISTS" in r.stderr, r.stderr
    assert "another payload" in r.stderr, r.stderr
    seq3 = int(send(a, rid, "other", "[1,2]").group(2))

    lines = ok(a, "signal", "ls", rid).splitlines()
    assert len(lines) == 3, lines
    assert re.match(rf'^{seq1} approve pending {{"ok":true}} \(sent \d{{4}}-\d\d-\d\dT[0-9:.]+Z\)$',
                    lines[0]), lines
    assert lines[1].startswith(f"{seq2} approve pending null (sent ")
    assert lines[1].endswith(", id sig-2)")
    assert lines[2].startswith(f"{seq3} other pending [1,2] (sent ")
    assert ok(a, "signal", "ls", rid, "--name", "other").splitlines() == lines[2:]
    r = reelctl(a, "signal", "ls", rid, "--limit", "1")
    assert r.returncode == 0 and r.stdout.splitlines() == lines[:1]
    assert "--limit" in r.stderr

    # The oldest first; each delivery is a journal entry of kind "signal".
    out = ok(a, "signal", "await", rid, "approve", "--epoch", e).strip()
    m = GOT_LINE.match(out)
    assert m and m.group(1) == "approve" and int(m.group(2)) == seq1, out
    assert m.group(3) == '{"ok":true}'
    jseq = m.group(4)
    journal = ok(a, "journal", "read", rid).splitlines()
    assert any(l.startswith(f"{jseq} signal ") for l in journal), journal

    m = GOT_LINE.match(ok(a, "signal", "await", rid, "approve", "--epoch", e,
                          "--wait", "0").strip())
    assert m and int(m.group(2)) == seq2 and m.group(3) == "null"

    r = reelctl(a, "signal", "await", rid, "approve", "--epoch", e)
    assert r.returncode == 1 and r.stdout == ""
    assert 'no "approve" signal pending' in r.stderr, r.stderr

    assert ok(a, "signal", "ls", rid).splitlines() == lines[2:]
    every = ok(a, "signal", "ls", rid, "--consumed").splitlines()
    assert every[0] == lines[2], every
    assert len(every) == 3
    assert re.match(rf"^{seq1} approve consumed {{\"ok\":true}} \(consumed \S+Z, "
                    rf"journal seq {jseq}\)$", every[1]), every
    assert every[2].startswith(f"{seq2} approve consumed null (consumed ")


def test_signal_wakes_a_waiting_run_and_routes_by_session(reeld):
    a = reeld.addr
    rid, e = begin(a, "app", "bo", "chat-7", "inv-1", "--owner", "w1")
    sus = ok(a, "run", "suspend", rid, "--epoch", e, "--waiting-on", "approve")
    assert sus.startswith(f"run {rid} WAITING")

    # By session: the session's newest run that has not ended gets it.
    m = send(a, "--app", "app", "--user", "bo", "--session", "chat-7", "approve", '{"by":"s"}')
    assert m.group(3) == rid and m.group(4) == "RUNNABLE"

    claim = ok(a, "run", "claim", rid, "--owner", "w2")
    m = RUN_LINE.match(claim)
    assert m and m.group(2) == "RUNNING", claim
    got = GOT_LINE.match(ok(a, "signal", "await", rid, "approve", "--epoch", m.group(3)).strip())
    assert got and got.group(3) == '{"by":"s"}'

    r = reelctl(a, "signal", "send", "--app", "app", "--user", "bo", "--session", "nobody",
                "approve")
    assert r.returncode == 1 and "NOT_FOUND" in r.stderr, r.stderr


def test_await_with_wait_times_out(reeld):
    a = reeld.addr
    rid, e = begin(a, "app", "cy", "s", "i", "--owner", "w1")
    # --wait is longer than --timeout: the call's deadline covers both, so
    # the answer is "nothing came", not DEADLINE_EXCEEDED.
    t0 = time.monotonic()
    r = reelctl(a, "--timeout", "500ms", "signal", "await", rid, "approve", "--epoch", e,
                "--wait", "1500ms")
    took = time.monotonic() - t0
    assert r.returncode == 1 and r.stdout == "", (r.stdout, r.stderr)
    assert r.stderr.strip() == 'reelctl: no "approve" signal within 1500ms', r.stderr
    assert took >= 1.4, took

    r = reelctl(a, "--json", "signal", "await", rid, "approve", "--epoch", e, "--wait", "200ms")
    assert r.returncode == 1 and r.stderr == "", r.stderr
    assert json.loads(r.stdout) == {"delivered": False, "signal": None, "journal_seq": 0}


def test_await_in_the_background_gets_the_signal_sent_later(reeld):
    a = reeld.addr
    rid, e = begin(a, "app", "dee", "s", "i", "--owner", "w1")
    waiter = subprocess.Popen([REELCTL, "--addr", a, "signal", "await", rid, "go", "--epoch", e,
                               "--wait", "20s"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(0.5)
        assert waiter.poll() is None, waiter.communicate()
        t0 = time.monotonic()
        seq = send(a, rid, "go", '{"n":7}').group(2)
        out, err = waiter.communicate(timeout=10)
        assert time.monotonic() - t0 < 5
        assert waiter.returncode == 0, err
        m = GOT_LINE.match(out.strip())
        assert m and m.group(1) == "go" and m.group(2) == seq and m.group(3) == '{"n":7}', out
    finally:
        if waiter.poll() is None:
            waiter.kill()
            waiter.wait()
    # Consumed by the waiter: nothing is left for anyone else.
    assert ok(a, "signal", "ls", rid) == ""


def test_json_output(reeld):
    a = reeld.addr
    rid, e = begin(a, "app", "eve", "s", "i", "--owner", "w1")
    sent = json.loads(ok(a, "--json", "signal", "send", rid, "approve", '{"ok":true}',
                         "--id", "k1"))
    assert sent["run_id"] == rid and sent["name"] == "approve"
    assert sent["payload"] == {"ok": True} and sent["signal_id"] == "k1"
    assert sent["duplicate"] is False and sent["accepted"] is True
    assert sent["run_status"] == "RUNNING"
    assert sent["seq"] >= 1 and sent["revision"] > 0 and sent["sent_at_ms"] > 0
    assert sent["consumed_at_ms"] == 0 and sent["journal_seq"] == 0
    dup = json.loads(ok(a, "signal", "send", rid, "approve", '{"ok":true}', "--id", "k1",
                        "--json"))
    assert dup["duplicate"] is True and dup["seq"] == sent["seq"]
    assert dup["payload"] == {"ok": True}
    r = reelctl(a, "--json", "signal", "send", rid, "reject", '{"ok":true}', "--id", "k1")
    assert r.returncode == 1, r
    assert json.loads(r.stderr)["error"] == "ALREADY_EXISTS", r.stderr
    bare = json.loads(ok(a, "--json", "signal", "send", rid, "approve"))
    assert bare["payload"] is None and bare["signal_id"] == ""

    listed = [json.loads(l) for l in ok(a, "--json", "signal", "ls", rid).splitlines()]
    assert [s["seq"] for s in listed] == [sent["seq"], bare["seq"]]
    assert listed[0]["payload"] == {"ok": True} and listed[1]["payload"] is None

    got = json.loads(ok(a, "--json", "signal", "await", rid, "approve", "--epoch", e))
    assert got["delivered"] is True and got["journal_seq"] > 0
    s = got["signal"]
    assert s["seq"] == sent["seq"] and s["payload"] == {"ok": True}
    assert s["consumed_at_ms"] >= s["sent_at_ms"] > 0
    assert s["journal_seq"] == got["journal_seq"]

    every = [json.loads(l) for l in ok(a, "--json", "signal", "ls", rid, "--consumed").splitlines()]
    assert [x["seq"] for x in every] == [bare["seq"], sent["seq"]]
    assert every[1]["journal_seq"] == got["journal_seq"] and every[1]["consumed_at_ms"] > 0

    entries = [json.loads(l) for l in ok(a, "--json", "journal", "read", rid).splitlines()]
    rec = [x for x in entries if x["seq"] == got["journal_seq"]]
    assert rec and rec[0]["kind"] == "signal", entries

    r = reelctl(a, "--json", "signal", "ls", "01ARZ3NDEKTSV4RRFFQ69G5FAV")
    assert r.returncode == 1 and json.loads(r.stderr)["error"] == "NOT_FOUND"


def test_stale_epoch_is_fenced(reeld):
    a = reeld.addr
    rid, old = begin(a, "app", "fay", "s", "i", "--owner", "w1", "--ttl", "300ms")
    time.sleep(0.6)
    m = RUN_LINE.match(ok(a, "run", "claim", rid, "--owner", "w2"))
    assert m and int(m.group(3)) > int(old)
    send(a, rid, "approve", '{"ok":true}')

    r = reelctl(a, "signal", "await", rid, "approve", "--epoch", old)
    assert r.returncode == 1 and "FAILED_PRECONDITION" in r.stderr, r.stderr
    r = reelctl(a, "--json", "signal", "await", rid, "approve", "--epoch", old, "--wait", "1s")
    assert r.returncode == 1 and json.loads(r.stderr)["error"] == "FAILED_PRECONDITION"
    # Nothing was consumed by the stale holder; the new one gets it.
    assert len(ok(a, "signal", "ls", rid).splitlines()) == 1
    got = GOT_LINE.match(ok(a, "signal", "await", rid, "approve", "--epoch", m.group(3)).strip())
    assert got and got.group(3) == '{"ok":true}'


def test_unknown_run_is_a_server_error(reeld):
    rid = "01ARZ3NDEKTSV4RRFFQ69G5FAV"
    for args in (["ls", rid], ["send", rid, "approve"]):
        r = reelctl(reeld.addr, "signal", *args)
        assert r.returncode == 1 and "NOT_FOUND" in r.stderr, (args, r.stderr)


def test_usage_errors_exit_2(reeld):
    rid = "01ARZ3NDEKTSV4RRFFQ69G5FAV"
    sess = ["--app", "a", "--user", "u", "--session", "s"]
    cases = [
        (["signal"], "missing subcommand"),
        (["signal", "frob"], "unknown subcommand"),
        (["signal", "send"], "missing NAME"),
        (["signal", "send", "approve"], "missing RUN_ID (or --app, --user and --session)"),
        (["signal", "send", rid], "missing NAME"),
        (["signal", "send", rid, "approve", "{}", "extra"], "unexpected argument"),
        (["signal", "send", "--app", "a", "--user", "u", "approve"], "go together"),
        (["signal", "send", "--session", "s", "approve"], "go together"),
        (["signal", "send", rid, "approve"] + sess, "not both"),
        (["signal", "send", rid, "approve", "{}"] + sess, "not both"),
        (["signal", "send"] + sess, "missing NAME"),
        (["signal", "send", rid, "approve", "--id"], "--id needs a value"),
        (["signal", "send", rid, "approve", "--epoch", "1"], "unknown flag"),
        (["signal", "await", rid, "approve"], "missing --epoch"),
        (["signal", "await", rid, "--epoch", "1"], "missing NAME"),
        (["signal", "await", rid, "approve", "--epoch", "-1"], "--epoch"),
        (["signal", "await", rid, "approve", "--epoch", "1", "--wait", "soon"], "--wait"),
        (["signal", "await", rid, "approve", "--epoch", "1", "--wait", "-5s"], "--wait"),
        (["signal", "await", rid, "approve", "--epoch", "1", "--consumed"], "unknown flag"),
        (["signal", "ls"], "missing RUN_ID"),
        (["signal", "ls", rid, "--limit", "99999999999"], "--limit"),
        (["signal", "ls", rid, "--consumed=yes"], "takes no value"),
    ]
    for args, said in cases:
        r = reelctl(reeld.addr, *args)
        assert r.returncode == 2, (args, r.stderr)
        assert said in r.stderr, (args, r.stderr)
        assert "usage: reelctl signal" in r.stderr or "try reelctl help" in r.stderr


# JSON a double cannot carry (see test_reelctl_kv.py).
STORED = (r'[9007199254740993, 1234567890123456789, 0.30000000000000004, 1e999, '
          r'{"deep": {"s": "\u00e9\ud83d\ude00"}}]')


def status(addr):
    """Admin.GetStatus through grpcio."""
    import grpc
    from conftest import unary
    from reel.v1 import admin_pb2
    with grpc.insecure_channel(addr) as ch:
        return unary(ch, "/reel.v1.Admin/GetStatus", admin_pb2.GetStatusRequest,
                     admin_pb2.GetStatusResponse)(admin_pb2.GetStatusRequest(), timeout=5)


@pytest.fixture
def capped(tmp_path):
    """A reeld whose AwaitSignal waits at most 1 s."""
    server = Reeld(str(tmp_path / "capped"), extra=["--signal-max-wait-ms", "1000"]).start()
    yield server
    os.kill(server.proc.pid, signal.SIGCONT)
    code, _ = server.stop()
    assert code == 0, server.log()


def test_status_says_the_await_cap(reeld, capped):
    assert status(reeld.addr).signal_max_wait_ms == 300000
    assert status(capped.addr).signal_max_wait_ms == 1000


def test_await_longer_than_the_cap_says_the_cap(capped):
    a = capped.addr
    rid, e = begin(a, "app", "cap", "s", "i", "--owner", "w1")
    t0 = time.monotonic()
    r = reelctl(a, "signal", "await", rid, "go", "--epoch", e, "--wait", "10m")
    took = time.monotonic() - t0
    assert r.returncode == 1 and r.stdout == "", (r.stdout, r.stderr)
    assert r.stderr == ("reelctl: signal await: the server waits at most 1s "
                        "(reeld --signal-max-wait-ms), not 10m\n"
                        "reelctl: no \"go\" signal within 1s (the server's cap; --wait asked "
                        "for 10m)\n"), r.stderr
    assert 0.9 < took < 10, took
    # Within the cap, as before: the wait asked for.
    r = reelctl(a, "signal", "await", rid, "go", "--epoch", e, "--wait", "200ms")
    assert r.stderr == 'reelctl: no "go" signal within 200ms\n', r.stderr


def test_await_gives_up_timeout_after_the_server_should_have_answered(capped):
    a = capped.addr
    rid, e = begin(a, "app", "hang", "s", "i", "--owner", "w1")
    proc = subprocess.Popen([REELCTL, "--addr", a, "--timeout", "1s", "signal", "await", rid,
                             "go", "--epoch", e, "--wait", "10m"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # Once the await is in progress, the server stops answering anything.
        deadline = time.monotonic() + 10
        while status(a).open_calls < 1:
            assert time.monotonic() < deadline, "the await never reached the server"
            time.sleep(0.01)
        os.kill(capped.proc.pid, signal.SIGSTOP)
        t0 = time.monotonic()
        # The 1 s cap, then --timeout: not 10 minutes and a second.
        out, err = proc.communicate(timeout=15)
        assert time.monotonic() - t0 < 5
    finally:
        os.kill(capped.proc.pid, signal.SIGCONT)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 1 and "DEADLINE_EXCEEDED" in err, (out, err)


def test_send_quiet_payload_from_stdin_and_raw_json(reeld, tmp_path):
    a = reeld.addr
    rid, e = begin(a, "app", "raw", "s", "i", "--owner", "w1")
    r = subprocess.run([REELCTL, "--addr", a, "signal", "send", rid, "go", "-", "-q"],
                       input=STORED + "\n", capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and re.fullmatch(r"\d+\n", r.stdout), (r.stdout, r.stderr)
    seq = int(r.stdout)
    path = tmp_path / "p.json"
    path.write_text('{\n "by": "file"\n}\n')
    m = send(a, "--app", "app", "--user", "raw", "--session", "s", "go", f"@{path}")
    assert m.group(3) == rid

    listed = ok(a, "--json", "signal", "ls", rid).splitlines()
    assert f'"payload":{STORED},' in listed[0], listed
    assert json.loads(listed[0])["payload"][0] == 9007199254740993
    # Text: one line per signal, whatever the payload's line breaks.
    text = ok(a, "signal", "ls", rid).splitlines()
    assert len(text) == 2 and text[1].startswith('%d go pending {  "by": "file" } (sent '
                                                 % (seq + 1)), text
    got = ok(a, "--json", "signal", "await", rid, "go", "--epoch", e)
    assert f'"payload":{STORED},' in got, got
    assert ok(a, "signal", "await", rid, "go", "--epoch", e).startswith(
        f'signal go seq {seq + 1}: {{  "by": "file" }} (journal seq ')

    r = reelctl(a, "signal", "send", rid, "go", "yes")
    assert r.returncode == 1 and "did you mean '\"yes\"'?" in r.stderr, r.stderr
    r = reelctl(a, "--json", "signal", "send", rid, "go", "-q")
    assert r.returncode == 2 and "--quiet and --json" in r.stderr, r.stderr


def test_a_scheduled_signal_is_listed_as_scheduled_with_its_due_time(reeld):
    import grpc
    from conftest import unary
    from reel.v1 import signals_pb2 as S
    a = reeld.addr
    rid = begin(a, "app", "u", "s", "sched", "--owner", "w")[0]
    due = int(time.time() * 1000) + 3600_000
    ch = grpc.insecure_channel(a)
    try:
        send = unary(ch, "/reel.v1.Signals/SendSignal", S.SendSignalRequest,
                     S.SendSignalResponse)
        send(S.SendSignalRequest(run_id=rid, name="later", payload="1", deliver_at_ms=due),
             timeout=10)
        send(S.SendSignalRequest(run_id=rid, name="now", payload="2"), timeout=10)
    finally:
        ch.close()
    lines = ok(a, "signal", "ls", rid).splitlines()
    iso = time.strftime("%Y-%m-%dT%H:%M", time.gmtime(due / 1000))
    assert re.match(r"\d+ later scheduled 1 \(due " + iso, lines[0]), lines
    assert re.match(r"\d+ now pending 2 \(sent ", lines[1]), lines
    got = [json.loads(l) for l in ok(a, "--json", "signal", "ls", rid).splitlines()]
    assert [(g["name"], g["scheduled"], g["deliver_at_ms"]) for g in got] == \
        [("later", True, due), ("now", False, 0)], got


# ---- Timers: send --at / --in, cancel -----------------------------------------

SCHEDULED_LINE = re.compile(r"^signal (\S+) seq (\d+) to run ([0-9A-Z]{26}) \(run (\w+)\) "
                            r"scheduled for (\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z)( duplicate)?$")


def now_ms():
    return int(time.time() * 1000)


def iso_ms(text):
    """"2026-01-01T00:00:00.250Z" (as reelctl prints times) in ms since 1970."""
    import calendar
    secs, frac = text.rstrip("Z").split(".")
    return calendar.timegm(time.strptime(secs, "%Y-%m-%dT%H:%M:%S")) * 1000 + int(frac)


def rfc3339(ms, offset_minutes=0):
    """ms as RFC 3339 with the given UTC offset ("+02:00"), to the second."""
    t = time.gmtime(ms // 1000 + offset_minutes * 60)
    sign = "-" if offset_minutes < 0 else "+"
    off = abs(offset_minutes)
    return time.strftime("%Y-%m-%dT%H:%M:%S", t) + f"{sign}{off // 60:02d}:{off % 60:02d}"


def await_json(addr, rid, name, epoch, *args):
    """signal await --json: (exit status, its answer)."""
    r = reelctl(addr, "--json", "signal", "await", rid, name, "--epoch", epoch, *args)
    assert r.returncode in (0, 1) and r.stdout, (r.stdout, r.stderr)
    return r.returncode, json.loads(r.stdout)


def test_a_signal_sent_in_3s_is_delivered_at_its_time_and_not_before(reeld):
    a = reeld.addr
    rid, e = begin(a, "app", "tim", "s", "nap", "--owner", "w1")
    before = now_ms()
    # 3 s: the listing below must come before it (slow under ASan).
    sent = json.loads(ok(a, "--json", "signal", "send", rid, "nap", '{"n":1}', "--in", "3s",
                         "--id", "nap-1"))
    after = now_ms()
    # What the server stored: scheduled, due 3 s after the send.
    assert sent["scheduled"] is True and sent["signal_id"] == "nap-1", sent
    due = sent["deliver_at_ms"]
    assert before + 3000 <= due <= after + 3000, (before, due, after)
    assert sent["consumed_at_ms"] == 0 and sent["run_status"] == "RUNNING", sent

    listed = ok(a, "signal", "ls", rid).splitlines()
    assert len(listed) == 1 and listed[0].startswith(f"{sent['seq']} nap scheduled ")
    assert listed[0].endswith(", id nap-1)"), listed

    # Before its time nothing is pending: an await at once gets nothing.
    code, got = await_json(a, rid, "nap", e, "--wait", "0")
    if now_ms() < due - 100:  # the call was over well before the signal's time
        assert code == 1 and got["delivered"] is False, (due, got)

    # A long poll gets it once it is due, under a new seq, never before.
    code, got = await_json(a, rid, "nap", e, "--wait", "20s")
    assert code == 0 and got["delivered"] is True, got
    s = got["signal"]
    assert s["name"] == "nap" and s["payload"] == {"n": 1} and s["signal_id"] == "nap-1"
    assert s["scheduled"] is False and s["deliver_at_ms"] == due, s
    assert s["sent_at_ms"] >= due and s["consumed_at_ms"] >= due, s
    assert s["seq"] > sent["seq"], s
    # Recorded in the journal like any delivery.
    entries = [json.loads(l) for l in ok(a, "--json", "journal", "read", rid).splitlines()]
    rec = [x for x in entries if x["seq"] == got["journal_seq"]]
    assert rec and rec[0]["kind"] == "signal" and rec[0]["ts_ms"] >= due, entries
    assert rec[0]["payload"]["signal_id"] == "nap-1", rec


def test_a_delayed_signal_wakes_a_waiting_run_at_its_time(reeld):
    a = reeld.addr
    rid, e = begin(a, "app", "tim", "s", "sleep", "--owner", "w1")
    # Text output: the line says when, and the hint that no --id means no cancel.
    # 3 s: the suspend must come before it (slow under ASan).
    r = reelctl(a, "signal", "send", rid, "wake", "--in", "3s")
    assert r.returncode == 0, r.stderr
    m = SCHEDULED_LINE.match(r.stdout.strip())
    assert m and m.group(1) == "wake" and m.group(3) == rid and m.group(4) == "RUNNING", r.stdout
    due = iso_ms(m.group(5))
    assert "sent without --id" in r.stderr and "cannot be cancelled" in r.stderr, r.stderr
    assert ok(a, "run", "suspend", rid, "--epoch", e, "--waiting-on", "wake").startswith(
        f"run {rid} WAITING")

    deadline = time.monotonic() + 20
    while True:
        run = json.loads(ok(a, "--json", "run", "get", rid))
        if run["status"] != "WAITING" or time.monotonic() > deadline:
            break
        assert now_ms() < due + 15000
        time.sleep(0.05)
    assert run["status"] == "RUNNABLE" and run["reason"] == "SIGNAL", run
    assert run["updated_at_ms"] >= due, (run, due)
    listed = [json.loads(l) for l in ok(a, "--json", "signal", "ls", rid).splitlines()]
    assert [(x["name"], x["scheduled"]) for x in listed] == [("wake", False)], listed


def test_at_a_time_past_is_now_and_a_time_ahead_is_scheduled_for_it(reeld):
    a = reeld.addr
    rid, e = begin(a, "app", "tim", "s", "at", "--owner", "w1")

    # A time already past: delivered at once, as the server defines, and said.
    past = rfc3339(now_ms() - 3600_000)
    r = reelctl(a, "signal", "send", rid, "late", "--at", past, "--id", "late-1")
    assert r.returncode == 0, r.stderr
    assert SENT_LINE.match(r.stdout.strip()), r.stdout
    assert r.stderr == f"reelctl: --at {past} has passed: delivered now\n", r.stderr
    code, got = await_json(a, rid, "late", e)
    assert code == 0 and got["signal"]["signal_id"] == "late-1", got
    # Delivered: too late to cancel.
    r = reelctl(a, "signal", "cancel", rid, "late-1")
    assert r.returncode == 1 and "FAILED_PRECONDITION" in r.stderr, r.stderr
    assert "already delivered" in r.stderr, r.stderr

    # Ahead, in ms since 1970: scheduled for exactly that ms.
    at = now_ms() + 3600_000 + 123
    sent = json.loads(ok(a, "--json", "signal", "send", rid, "later", "--at", str(at),
                         "--id", "later-1"))
    assert sent["scheduled"] is True and sent["deliver_at_ms"] == at, sent
    # Ahead, in RFC 3339 with an offset and a fraction: the same instant in UTC.
    base = (now_ms() // 1000 + 7200) * 1000
    text = rfc3339(base, 120).replace("+02:00", ".250+02:00")
    r = reelctl(a, "signal", "send", rid, "later", "--at", text, "--id", "later-2")
    assert r.returncode == 0 and r.stderr == "", r.stderr
    m = SCHEDULED_LINE.match(r.stdout.strip())
    assert m and iso_ms(m.group(5)) == base + 250, (r.stdout, base)
    for z in (rfc3339(base, 0).replace("+00:00", "Z"), rfc3339(base, -90)):
        sent = json.loads(ok(a, "--json", "signal", "send", rid, "later", "--at", z))
        assert sent["deliver_at_ms"] == base, (z, sent)
    # -q: the seq, as for any send.
    out = ok(a, "signal", "send", rid, "later", "--in", "1h", "-q")
    assert re.fullmatch(r"\d+\n", out), out

    # A retry with the same id is stored once, at the first time it named.
    again = json.loads(ok(a, "--json", "signal", "send", rid, "later", "--at", str(at + 5000),
                          "--id", "later-1"))
    assert again["duplicate"] is True and again["deliver_at_ms"] == at, again

    # More than 365 days ahead is the server's to refuse.
    r = reelctl(a, "signal", "send", rid, "later", "--at", str(now_ms() + 400 * 86400_000))
    assert r.returncode == 1 and "INVALID_ARGUMENT" in r.stderr, r.stderr
    assert "deliver_at_ms" in r.stderr and "365 days" in r.stderr, r.stderr

    lines = ok(a, "signal", "ls", rid, "--name", "later").splitlines()
    assert len(lines) == 5 and all(" later scheduled " in l for l in lines), lines


def test_cancel_removes_a_scheduled_signal_before_its_time(reeld):
    a = reeld.addr
    rid, e = begin(a, "app", "tim", "s", "cancel", "--owner", "w1")
    # 4 s: three more reelctl calls must come before it (slow under ASan).
    sent = json.loads(ok(a, "--json", "signal", "send", rid, "wake", '{"n":1}', "--in", "4s",
                         "--id", "w-1"))
    kept = json.loads(ok(a, "--json", "signal", "send", rid, "other", "--in", "1h",
                         "--id", "o-1"))
    ok(a, "run", "suspend", rid, "--epoch", e, "--waiting-on", "wake")

    out = ok(a, "signal", "cancel", rid, "w-1")
    assert out == (f"cancelled signal wake seq {sent['seq']} to run {rid} (id w-1), due "
                   f"{time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime(sent['deliver_at_ms'] // 1000))}"
                   f".{sent['deliver_at_ms'] % 1000:03d}Z\n"), out
    gone = json.loads(ok(a, "--json", "signal", "cancel", rid, "o-1"))
    assert gone["cancelled"] is True and gone["scheduled"] is True, gone
    assert gone["signal_id"] == "o-1" and gone["deliver_at_ms"] == kept["deliver_at_ms"], gone

    # Past the cancelled one's time: never delivered, the run still parked.
    while now_ms() < sent["deliver_at_ms"] + 1000:
        time.sleep(0.1)
    run = json.loads(ok(a, "--json", "run", "get", rid))
    assert run["status"] == "WAITING" and run["waiting_on"] == "wake", run
    assert ok(a, "signal", "ls", rid, "--consumed") == ""
    assert ok(a, "journal", "read", rid) == ""

    # Cancelled is gone: a second cancel, and one of an id never sent, find nothing.
    for sid in ("w-1", "never-sent"):
        r = reelctl(a, "signal", "cancel", rid, sid)
        assert r.returncode == 1 and "NOT_FOUND" in r.stderr and sid in r.stderr, r.stderr
    r = reelctl(a, "--json", "signal", "cancel", rid, "w-1")
    assert r.returncode == 1 and json.loads(r.stderr)["error"] == "NOT_FOUND", r.stderr
    r = reelctl(a, "signal", "cancel", "01ARZ3NDEKTSV4RRFFQ69G5FAV", "w-1")
    assert r.returncode == 1 and "NOT_FOUND" in r.stderr, r.stderr


def test_timer_flags_refuse_bad_values_naming_the_flag_and_its_forms(reeld):
    rid = "01ARZ3NDEKTSV4RRFFQ69G5FAV"
    send = ["signal", "send", rid, "wake"]
    at_forms = "(ms since 1970, e.g. 1767225600000, or RFC 3339, e.g. 2026-01-01T00:00:00Z"
    in_forms = "is not a duration (e.g. 500ms, 30s, 5m, 1h, 1d)"
    cases = [
        (send + ["--at", "1767225600000", "--in", "5m"], "--at and --in exclude each other"),
        (send + ["--in", "5m", "--at", "2026-01-01T00:00:00Z"], "--at and --in exclude"),
        (send + ["--at", "tomorrow"], f'--at: "tomorrow" is not a time {at_forms}'),
        (send + ["--at", "-1"], '--at: "-1" is not a time'),
        (send + ["--at", ""], '--at: "" is not a time'),
        (send + ["--at", "2026-01-01"], "is not a time"),
        (send + ["--at", "2026-01-01T00:00:00"], "is not a time"),   # no zone
        (send + ["--at", "2026-02-30T00:00:00Z"], "is not a time"),
        (send + ["--at", "2026-01-01T24:00:00Z"], "is not a time"),
        (send + ["--at", "2026-01-01T00:00:00.Z"], "is not a time"),
        (send + ["--at", "2026-01-01T00:00:00+0100"], "is not a time"),
        (send + ["--at", "99999999999999999999"], "is not a time"),
        (send + ["--at", "1767225600"], "--at: 1767225600 ms since 1970 is "
                                        "1970-01-21T10:53:45.600Z (seconds? --at takes ms"),
        (send + ["--in", "soon"], f'--in: "soon" {in_forms}'),
        (send + ["--in", "-5s"], f'--in: "-5s" {in_forms}'),
        (send + ["--in", "1w"], f'--in: "1w" {in_forms}'),
        (send + ["--in", "366d"], "--in: 366d is too long (at most 365d)"),
        (send + ["--in"], "--in needs a value (DURATION)"),
        (send + ["--at"], "--at needs a value (TIME)"),
        (["signal", "cancel", rid], "missing SIGNAL_ID"),
        (["signal", "cancel"], "missing RUN_ID SIGNAL_ID"),
        (["signal", "cancel", rid, "a", "b"], 'unexpected argument "b"'),
        (["signal", "cancel", rid, "a", "--in", "1s"], 'unknown flag "--in"'),
        (["signal", "await", rid, "wake", "--epoch", "1", "--at", "1"], 'unknown flag "--at"'),
    ]
    for args, said in cases:
        r = reelctl(reeld.addr, *args)
        # 2, not the server's NOT_FOUND for the run: refused before any call.
        assert r.returncode == 2 and r.stdout == "", (args, r.stderr)
        lines = r.stderr.splitlines()
        # One line saying what is wrong, then the synopsis.
        assert len(lines) == 2 and said in lines[0], (args, r.stderr)
        assert lines[1].startswith("usage: reelctl signal " + args[1]), (args, r.stderr)
    help = ok(reeld.addr, "signal", "send", "--help")
    assert "[--at TIME] [--in DURATION]" in help and "--id to be able to cancel" in help, help
    assert "signal cancel RUN_ID SIGNAL_ID" in ok(reeld.addr, "help", "signal")
