"""reel-sink's webhook sinks against real processes: a reeld, a reel-sink,
and HTTP receivers (Python's http.server) that check every Standard
Webhooks signature with their own implementation of the spec and can be
told to fail.

Ordered delivery of a mixed load through subject filters; a receiver that
fails with 500 and recovers (every event, in order, each webhook-id the
same on every retry); 429 with Retry-After, and a shorter one that leaves
the schedule's wait; 410 disabling the sink durably until `reel-sink
enable`; a receiver that never answers;
dead letters recorded, listed and replayed; concurrent and batched modes;
SIGTERM; a full queue beside a busy sink keeping memory flat and every
event once, in order; bad configurations refused with exit 2, and sinks that need
more open files than the hard limit allows; every kind of record with the
fields reelctl prints.
"""
import hashlib
import json
import os
import re
import resource
import signal
import socket
import subprocess
import threading
import time

import pytest

from conftest import REELCTL, Reeld, free_port, unary
from reel.v1 import journal_pb2 as J
from reel.v1 import kv_pb2 as K
from reel.v1 import signals_pb2 as S
from sinkutil import (ASAN, OLD_SECRET, REEL_SINK, SECRET, Reel, Receiver, Sink, check_built,  # noqa: F401
                      no_sink_left, receiver, reel, run_cli, wait_for, webhook_config,
                      write_config)


@pytest.fixture(autouse=True)
def built():
    check_built()


FAST = [100, 200, 300, 400, 500]  # retry waits for tests (ms)


def test_ordered_mixed_load_through_filters_arrives_in_order_signed(
        tmp_path, reeld, reel, receiver):
    cfg = webhook_config(tmp_path / "c.json", "billing", receiver.url,
                         subjects=["run.>", "kv.shop.>", "journal.*.step", "signal.>"])
    for i in range(5):
        reel.mixed(i)
    sink = Sink(tmp_path, reeld.addr, cfg)
    for i in range(5, 10):
        reel.mixed(i)
    want = [r for r, s in reel.events()
            if s.startswith(("run.", "kv.shop.", "signal.")) or
            (s.startswith("journal.") and s.endswith(".step"))]
    wait_for("every matching event", lambda: len(receiver.delivered()) >= len(want))
    assert sink.stop() == 0
    got = receiver.delivered()
    assert [d["json"]["data"]["revision"] for d in got] == want
    for d in got:
        rev = d["json"]["data"]["revision"]
        assert d["sig_ok"], d
        assert d["id"] == f"evt_{rev}"
        # Signed with every listed secret, so keys rotate.
        assert len(d["sig"].split(" ")) == 2
        assert abs(int(d["ts"]) - time.time()) < 60
        data = d["json"]["data"]
        assert d["json"]["type"].startswith("reel.")
        assert data["subject"].split(".")[0] in ("run", "kv", "journal", "signal")
        assert not data["subject"].startswith("kv.other.")
    kinds = {d["json"]["type"] for d in got}
    assert kinds == {"reel.run_changed", "reel.value_changed", "reel.journal_appended",
                     "reel.signal_sent"}
    # The stored JSON is embedded as stored.
    kv = [d for d in got if d["json"]["type"] == "reel.value_changed"][0]
    assert kv["json"]["data"]["value"]["value"] == {"qty": 0}
    # The cursor is where the last delivered event is, or past it.
    assert reel.acked("sink.billing") >= want[-1]


def test_receiver_failing_then_recovering_gets_every_event_in_order(
        tmp_path, reeld, reel, receiver):
    fails = {"left": 12}

    def plan(d):
        if fails["left"] > 0:
            fails["left"] -= 1
            return 500
        return 200
    receiver.plan(plan)
    cfg = webhook_config(tmp_path / "c.json", "s", receiver.url,
                         subjects=["kv.app.>"], retry_schedule_ms=FAST * 4)
    revs = [reel.set("app", f"k{i}") for i in range(8)]
    sink = Sink(tmp_path, reeld.addr, cfg)
    wait_for("all 8", lambda: len(receiver.delivered()) >= 8)
    assert sink.stop() == 0
    assert receiver.delivered_revisions() == revs
    by_id = {}
    for d in receiver.all():
        assert d["sig_ok"]
        by_id.setdefault(d["id"], []).append(d["json"]["data"]["revision"])
    # Retries carried the same webhook-id and the same event.
    for i, rs in by_id.items():
        assert set(rs) == {int(i[len("evt_"):])}
    assert len(by_id[f"evt_{revs[0]}"]) > 1
    assert "attempt 1 failed: HTTP 500" in sink.log()
    assert "delivered after" in sink.log()


def test_sighup_is_said_and_changes_nothing(tmp_path, reeld, reel, receiver):
    """A closed terminal sends SIGHUP: reel-sink died of it at once (exit
    129, nothing acknowledged since the last ack, all of it delivered
    again). It now says it does not reload and goes on delivering."""
    cfg = webhook_config(tmp_path / "c.json", "h", receiver.url, subjects=["kv.app.>"])
    revs = [reel.set("app", f"k{i}") for i in range(3)]
    sink = Sink(tmp_path, reeld.addr, cfg)
    wait_for("the first 3", lambda: len(receiver.delivered()) >= 3)
    sink.proc.send_signal(signal.SIGHUP)
    sink.wait_log(r"SIGHUP: reel-sink does not reload its configuration \(restart it "
                  r"to apply a change\); still running")
    revs += [reel.set("app", f"k{i}") for i in range(3, 6)]
    wait_for("all 6", lambda: len(receiver.delivered()) >= 6)
    assert sink.proc.poll() is None
    assert sink.stop() == 0
    assert receiver.delivered_revisions() == revs
    assert reel.acked("sink.h") == revs[-1]


def test_429_waits_for_retry_after(tmp_path, reeld, reel, receiver):
    first = {"done": False}

    def plan(d):
        if not first["done"]:
            first["done"] = True
            return 429, {"Retry-After": "2"}
        return 200
    receiver.plan(plan)
    cfg = webhook_config(tmp_path / "c.json", "s", receiver.url, subjects=["kv.app.>"],
                         retry_schedule_ms=[100, 100])
    rev = reel.set("app", "a")
    sink = Sink(tmp_path, reeld.addr, cfg)
    wait_for("the retry", lambda: len(receiver.delivered()) == 1)
    assert sink.stop() == 0
    a, b = receiver.all()[:2]
    assert a["status"] == 429 and b["status"] == 200
    assert a["id"] == b["id"] == f"evt_{rev}"
    # The schedule said 100 ms; the receiver said 2 s.
    assert b["at"] - a["at"] >= 1.9
    assert "Retry-After" in sink.log()


def test_a_shorter_retry_after_leaves_the_schedule_s_wait_and_says_so(
        tmp_path, reeld, reel, receiver):
    first = {"done": False}

    def plan(d):
        if not first["done"]:
            first["done"] = True
            return 503, {"Retry-After": "1"}
        return 200
    receiver.plan(plan)
    cfg = webhook_config(tmp_path / "c.json", "s", receiver.url, subjects=["kv.app.>"],
                         retry_schedule_ms=[2500], retry_jitter=0)
    reel.set("app", "a")
    sink = Sink(tmp_path, reeld.addr, cfg)
    wait_for("the retry", lambda: len(receiver.delivered()) == 1)
    assert sink.stop() == 0
    a, b = receiver.all()[:2]
    # The later of the two: the schedule's 2.5 s, not the receiver's 1 s.
    assert b["at"] - a["at"] >= 2.4
    log = sink.log()
    assert ("next attempt in 2.5 s (the retry schedule's; the receiver's "
            "Retry-After asked for 1.0 s)") in log, log
    assert "(the receiver's Retry-After)" not in log, log


def test_410_disables_the_sink_durably_until_enabled(tmp_path, reeld, reel, receiver):
    gone = {"on": True}
    receiver.plan(lambda d: 410 if gone["on"] else 200)
    cfg = webhook_config(tmp_path / "c.json", "hook", receiver.url, subjects=["kv.app.>"])
    r1 = reel.set("app", "a")
    control = f"127.0.0.1:{free_port()}"
    sink = Sink(tmp_path, reeld.addr, cfg, "--control-listen", control)
    sink.wait_log(r"sink hook: disabled: the receiver answered 410 Gone")
    out = run_cli(reeld.addr, cfg, "status", "--control", control)
    assert out.returncode == 0, out.stderr
    assert "DISABLED" in out.stdout and "410" in out.stdout
    # With the live numbers too, disabled is said once.
    assert "in flight" in out.stdout and ", disabled," not in out.stdout, out.stdout
    status = json.loads(run_cli(reeld.addr, cfg, "status", "hook", "--json").stdout)
    assert status["disabled"] is True
    assert reel.get_(K.GetValueRequest(namespace="reel-sink", key="disabled.hook"),
                     timeout=5).found
    assert sink.stop() == 0
    # Still disabled after a restart: nothing is sent.
    n = len(receiver.all())
    reel.set("app", "b")
    sink = Sink(tmp_path, reeld.addr, cfg)
    sink.wait_log(r"sink hook: disabled")
    time.sleep(1.0)
    assert len(receiver.all()) == n
    gone["on"] = False
    out = run_cli(reeld.addr, cfg, "enable", "hook")
    assert out.returncode == 0 and "enabled" in out.stdout, out
    wait_for("both events", lambda: len(receiver.delivered()) == 2)
    assert receiver.delivered_revisions()[0] == r1
    assert sink.stop() == 0
    assert "enabled again" in sink.log()
    assert json.loads(run_cli(reeld.addr, cfg, "status", "hook", "--json").stdout)[
        "disabled"] is False


def test_a_receiver_that_never_answers_times_out_and_is_retried(
        tmp_path, reeld, reel, receiver):
    first = {"done": False}

    def plan(d):
        if not first["done"]:
            first["done"] = True
            return ("hang", 3)
        return 200
    receiver.plan(plan)
    cfg = webhook_config(tmp_path / "c.json", "s", receiver.url, subjects=["kv.app.>"],
                         timeout_ms=500, retry_schedule_ms=[100, 100])
    rev = reel.set("app", "a")
    sink = Sink(tmp_path, reeld.addr, cfg)
    # A wait under a second is said in ms (100 ms, jitter 0.2), not "0.1 s".
    sink.wait_log(r"(?m)attempt 1 failed: .*timed out.*; next attempt in \d{1,3} ms$")
    # The hung request is answered only after the sink gave up on it; the
    # retry is delivered.
    wait_for("the retry", lambda: len(receiver.delivered()) >= 2)
    assert {d["id"] for d in receiver.all()} == {f"evt_{rev}"}
    assert sink.stop() == 0


def test_dead_letters_are_recorded_listed_and_replayed(tmp_path, reeld, reel, receiver):
    up = {"on": False}
    receiver.plan(lambda d: 200 if up["on"] else 500)
    cfg = webhook_config(tmp_path / "c.json", "dl", receiver.url, subjects=[">"],
                         retry_schedule_ms=[50, 50])
    revs = [reel.set("app", f"k{i}") for i in range(4)]
    sink = Sink(tmp_path, reeld.addr, cfg)
    wait_for("4 dead letters", lambda: sink.log().count("is a dead letter") == 4)
    # The cursor went past them: they are done (recorded), not lost.
    wait_for("the cursor past them", lambda: (reel.acked("sink.dl") or 0) >= revs[-1])
    out = run_cli(reeld.addr, cfg, "dead", "dl", "--json")
    assert out.returncode == 0, out.stderr
    dead = [json.loads(l) for l in out.stdout.splitlines()]
    assert [d["revision"] for d in dead] == revs
    for d in dead:
        assert d["attempts"] == 3
        assert d["last_error"] == "HTTP 500"
        assert d["subject"].startswith("kv.app.")
    # Its own records (kv.reel-sink.dead...) were never delivered.
    assert all(not d["json"]["data"]["subject"].startswith("kv.reel-sink.")
               for d in receiver.all())
    assert "dead letters 4" in run_cli(reeld.addr, cfg, "status").stdout
    up["on"] = True
    out = run_cli(reeld.addr, cfg, "replay", "dl", "--revision", str(revs[1]))
    assert out.returncode == 0, out
    assert [r["json"]["data"]["revision"] for r in receiver.delivered()] == [revs[1]]
    out = run_cli(reeld.addr, cfg, "replay", "dl", "--from", str(revs[2]), "--to", str(revs[3]))
    assert out.returncode == 0, out
    out = run_cli(reeld.addr, cfg, "replay", "dl", "--all")
    assert out.returncode == 0 and "replayed 1 of 1" in out.stdout, out
    assert sorted(receiver.delivered_revisions()) == revs
    for d in receiver.delivered():
        assert d["sig_ok"] and d["id"] == f"evt_{d['json']['data']['revision']}"
    assert run_cli(reeld.addr, cfg, "dead", "dl").stdout == ""
    assert run_cli(reeld.addr, cfg, "replay", "dl", "--revision", "1").returncode == 1
    assert sink.stop() == 0


@pytest.fixture
def small_reeld(request, tmp_path):
    """A reeld with --kv-max-value-bytes request.param."""
    server = Reeld(str(tmp_path / "data"),
                   extra=["--kv-max-value-bytes", str(request.param)]).start()
    yield server
    if server.proc.poll() is None:
        code, _ = server.stop()
        assert code == 0, f"reeld exited {code} on SIGTERM:\n{server.log()}"


@pytest.mark.parametrize("small_reeld,size", [(262144, 200_000), (4096, 3_500)],
                         indirect=["small_reeld"])
def test_a_dead_letter_is_split_to_fit_reelds_value_limit(
        tmp_path, small_reeld, receiver, size):
    # Its base64 and JSON made a 200 KB event's letter 262,155 bytes, over
    # a 256 KiB limit: refused every second for good, nothing after it sent.
    reel = Reel(small_reeld.addr)
    receiver.plan(lambda d: 500)
    cfg = webhook_config(tmp_path / "c.json", "dl", receiver.url,
                         subjects=["kv.dlc.>"], retry_schedule_ms=[50])
    big = json.dumps({"blob": "x" * size})
    revs = [reel.set("dlc", "a", big), reel.set("dlc", "b")]
    sink = Sink(tmp_path, small_reeld.addr, cfg)
    wait_for("2 dead letters", lambda: sink.log().count("is a dead letter") == 2,
             timeout=20)
    assert "exceeds the limit" not in sink.log()
    out = run_cli(small_reeld.addr, cfg, "dead", "dl", "--json")
    assert out.returncode == 0, out.stderr
    assert [json.loads(l)["revision"] for l in out.stdout.splitlines()] == revs
    receiver.plan(lambda d: 200)
    out = run_cli(small_reeld.addr, cfg, "replay", "dl", "--all")
    assert out.returncode == 0, out
    got = {d["json"]["data"]["revision"]: d["json"]["data"] for d in receiver.delivered()}
    assert sorted(got) == revs
    assert got[revs[0]]["value"]["value"] == {"blob": "x" * size}
    assert sink.stop() == 0
    reel.close()


@pytest.mark.parametrize("small_reeld", [100], indirect=True)
def test_a_dead_letter_no_split_can_fit_stops_the_sink_naming_the_limit(
        tmp_path, small_reeld, receiver):
    reel = Reel(small_reeld.addr)
    receiver.plan(lambda d: 500)
    cfg = webhook_config(tmp_path / "c.json", "dl", receiver.url,
                         subjects=["kv.dlc.>"], retry_schedule_ms=[50])
    rev = reel.set("dlc", "a")
    sink = Sink(tmp_path, small_reeld.addr, cfg)
    try:
        assert sink.proc.wait(timeout=20) == 1, sink.log()
    except subprocess.TimeoutExpired:
        raise AssertionError(f"reel-sink still retrying:\n{sink.log()}")
    log = sink.log()
    assert f"stopped: storing the dead letter of revision {rev}" in log, log
    assert "limit of 100 bytes" in log, log
    assert (reel.acked("sink.dl") or 0) < rev  # not done: it comes again
    reel.close()


def test_ordered_block_keeps_retrying_the_head(tmp_path, reeld, reel, receiver):
    up = {"on": False}
    receiver.plan(lambda d: 200 if up["on"] else 503)
    cfg = webhook_config(tmp_path / "c.json", "b", receiver.url, subjects=["kv.app.>"],
                         retry_schedule_ms=[50], on_exhausted="block")
    revs = [reel.set("app", f"k{i}") for i in range(3)]
    sink = Sink(tmp_path, reeld.addr, cfg)
    wait_for("several attempts", lambda: len(receiver.all()) >= 4)
    assert {d["id"] for d in receiver.all()} == {f"evt_{revs[0]}"}
    assert "dead letter" not in sink.log()
    up["on"] = True
    wait_for("all 3", lambda: len(receiver.delivered()) == 3, timeout=30)
    assert receiver.delivered_revisions() == revs
    assert sink.stop() == 0


def test_concurrent_mode_delivers_all_and_acks_only_what_is_done(
        tmp_path, reeld, reel, receiver):
    seen = {}

    def plan(d):
        # Every third event fails twice before it goes.
        rev = d["json"]["data"]["revision"]
        seen[rev] = seen.get(rev, 0) + 1
        return 500 if rev % 3 == 0 and seen[rev] <= 2 else 200
    receiver.plan(plan)
    cfg = webhook_config(tmp_path / "c.json", "c", receiver.url, subjects=["kv.app.>"],
                         mode="concurrent", max_in_flight=8, retry_schedule_ms=FAST)
    revs = [reel.set("app", f"k{i}") for i in range(60)]
    sink = Sink(tmp_path, reeld.addr, cfg)
    # While it delivers, the acknowledged revision never passes an event
    # not yet delivered (a failing one with later ones done beside it):
    # the ack read first, then what the receiver has answered 2xx to
    # (recorded before it answers).
    bad, samples, done = [], [0], threading.Event()

    def sample():
        while not done.is_set():
            acked = reel.acked("sink.c") or 0
            have = set(receiver.delivered_revisions())
            missing = [r for r in revs if r <= acked and r not in have]
            if missing:
                bad.append((acked, missing))
            samples[0] += 1
            time.sleep(0.005)
    t = threading.Thread(target=sample)
    t.start()
    try:
        wait_for("all 60", lambda: len(set(receiver.delivered_revisions())) == 60)
        assert sorted(set(receiver.delivered_revisions())) == revs
        wait_for("the ack", lambda: reel.acked("sink.c") >= revs[-1])
    finally:
        done.set()
        t.join()
    assert not bad, bad[:3]
    assert samples[0] >= 3, samples
    assert sink.stop() == 0


def test_batches_carry_several_events_under_one_id(tmp_path, reeld, reel, receiver):
    cfg = webhook_config(tmp_path / "c.json", "bt", receiver.url, subjects=["kv.app.>"],
                         batch_max_events=10)
    revs = [reel.set("app", f"k{i}") for i in range(35)]
    sink = Sink(tmp_path, reeld.addr, cfg)
    wait_for("all 35", lambda: len(receiver.delivered_revisions()) >= 35)
    assert sink.stop() == 0
    assert receiver.delivered_revisions() == revs
    for d in receiver.delivered():
        data = d["json"]["data"]
        assert d["json"]["type"] == "reel.batch" and isinstance(data, list)
        assert 1 <= len(data) <= 10
        assert d["id"] == f"evt_{data[0]['revision']}_{data[-1]['revision']}"
        assert d["sig_ok"]
    assert len(receiver.delivered()) < 35


def test_a_batch_body_stays_within_batch_max_bytes(tmp_path, reeld, reel, receiver):
    """The whole request body, envelope and commas included, is at most
    batch_max_bytes (unless one event alone is larger)."""
    revs = [reel.set("app", f"k{i}") for i in range(30)]
    # Limits 40 bytes apart over more than one event's size: whatever the
    # events' size, some limit is one the batch would fill to within the
    # envelope's size (about 70 bytes), where leaving it out overflows.
    for limit in range(1024, 1024 + 360, 40):
        name = f"bb{limit}"
        cfg = webhook_config(tmp_path / f"{name}.json", name, receiver.url,
                             subjects=["kv.app.>"], batch_max_events=5,
                             batch_max_bytes=limit)
        before = len(receiver.delivered())
        sink = Sink(tmp_path, reeld.addr, cfg)
        wait_for("the ack", lambda: (reel.acked(f"sink.{name}") or 0) >= revs[-1])
        assert sink.stop() == 0
        mine = receiver.delivered()[before:]
        assert [d["json"]["data"][i]["revision"] for d in mine
                for i in range(len(d["json"]["data"]))] == revs
        sizes = [len(d["body"]) for d in mine]
        assert max(sizes) <= limit, (limit, sizes)
        assert max(len(d["json"]["data"]) for d in mine) > 1, sizes


def test_sigterm_finishes_the_request_in_flight_and_exits_0(
        tmp_path, reeld, reel, receiver):
    receiver.plan(lambda d: ("hang", 1.5))
    cfg = webhook_config(tmp_path / "c.json", "t", receiver.url, subjects=["kv.app.>"])
    rev = reel.set("app", "a")
    reel.set("app", "b")
    sink = Sink(tmp_path, reeld.addr, cfg)
    # The first request is on the wire; it is answered 1.5 s after it came.
    wait_for("the request", lambda: receiver.arrivals == 1)
    t0 = time.monotonic()
    assert sink.stop() == 0
    assert time.monotonic() - t0 < 5
    assert [d["json"]["data"]["revision"] for d in receiver.delivered()] == [rev]
    assert reel.acked("sink.t") == rev


def test_sigterm_while_reeld_hangs_warns_what_comes_again_and_exits_0(
        tmp_path, reeld, reel, receiver):
    # Its last ack ran out of time and the sink exited 1, as if it had
    # failed: nothing is lost, the events come again.
    answered = threading.Event()

    def slow(d):
        time.sleep(1.0)
        answered.set()
        return 200
    receiver.plan(slow)
    cfg = webhook_config(tmp_path / "c.json", "hang", receiver.url, subjects=["kv.app.>"])
    rev = reel.set("app", "k")
    sink = Sink(tmp_path, reeld.addr, cfg)
    wait_for("the request", lambda: receiver.arrivals >= 1)
    os.kill(reeld.proc.pid, signal.SIGSTOP)
    try:
        sink.proc.send_signal(signal.SIGTERM)
        assert answered.wait(10)
        assert sink.stop(timeout=20) == 0, sink.log()
    finally:
        os.kill(reeld.proc.pid, signal.SIGCONT)
    log = sink.log()
    assert "WARN" in log and "last acknowledgement failed" in log, log
    # What it names was acknowledged: the event in flight (rev) was not.
    m = re.search(r"the events after revision (\d+) are delivered again", log)
    assert m and int(m.group(1)) < rev, log


def test_a_full_queue_beside_a_busy_sink_keeps_memory_flat_and_order(
        tmp_path, reeld, reel, receiver):
    """Sink "stuck" fills its queue (a receiver that holds every request)
    while sink "busy" in the same process delivers large events, reading
    the connection both streams share. reel keeps sending the stuck sink a
    PROGRESS every second; on a stream left unread gRPC kept each of them,
    holding a whole (here large) read buffer, for as long as the queue
    stayed full. Memory must level off, and once the receiver answers,
    every event of the stuck sink arrives once, in order: the stream is
    subscribed again every 2 s of the stall, after what the sink holds."""
    gate = threading.Event()
    receiver.plan(lambda d: 200 if gate.wait(60) else 503)
    busy = Receiver()
    try:
        cfg = write_config(tmp_path / "c.json", [
            {"name": "stuck", "type": "webhook", "url": receiver.url, "secrets": [SECRET],
             "subjects": ["kv.app.>"], "queue_max_events": 5, "timeout_ms": 600000},
            {"name": "busy", "type": "webhook", "url": busy.url, "secrets": [SECRET],
             "subjects": ["kv.big.>"]}])
        want = [reel.set("app", f"k{i}") for i in range(20)]
        sink = Sink(tmp_path, reeld.addr, cfg)
        wait_for("the stuck sink's request", lambda: receiver.arrivals == 1)
        stop = threading.Event()
        big = '{"pad":"%s"}' % ("x" * 10000)

        def write_big():
            while not stop.is_set():
                reel.set("big", "k", big)
                time.sleep(0.1)
        writer = threading.Thread(target=write_big, daemon=True)
        writer.start()
        try:
            wait_for("the busy sink delivering", lambda: len(busy.delivered()) >= 5)
            time.sleep(2)
            samples = []
            for w in range(3):
                samples.append(sink.rss_kib())
                # Events for the stuck sink while it waits: given back and
                # handed out again, they must keep their place.
                want.append(reel.set("app", f"late{w}"))
                time.sleep(7)
            samples.append(sink.rss_kib())
        finally:
            stop.set()
            writer.join()
        print(f"reel-sink RSS every 7 s, one sink's queue full: {samples} KiB")
        # Growth over the last window against the first: the leak grew the
        # same in both (about 64 KiB a second).
        early, late = samples[1] - samples[0], samples[3] - samples[2]
        if not ASAN:
            assert late < max(300, early // 2), samples
        assert receiver.arrivals == 1
        gate.set()
        wait_for("every event of the stuck sink",
                 lambda: len(set(receiver.delivered_revisions())) == len(want))
        got = receiver.delivered_revisions()
        # The receiver held one request and answered it: nothing was
        # retried, so nothing comes twice, restarts or not.
        assert got == want, got
        wait_for("the cursor past them", lambda: (reel.acked("sink.stuck") or 0) >= want[-1])
        assert sink.stop() == 0
    finally:
        gate.set()
        busy.close()


@pytest.mark.parametrize("sinks,want", [
    ([{"name": "x", "type": "webhook", "secrets": [SECRET]}],
     'sinks[0] "x": url: missing'),
    ([{"name": "x", "type": "kafka"}], 'sinks[0] "x": type: "kafka" is not a sink type'),
    ([{"name": "x", "type": "webhook", "url": "http://h/", "secrets": ["whsec_%%%"]}],
     'sinks[0] "x": secrets[0]: the part after "whsec_" is not base64'),
    ([{"name": "x", "type": "webhook", "url": "http://h/", "secrets": [SECRET],
       "subjects": ["a.>.b"]}],
     'sinks[0] "x": subjects[0]: "a.>.b" is not a valid pattern'),
    # block never gives up: max_age_ms beside it was ignored without a word.
    ([{"name": "x", "type": "webhook", "url": "http://h/", "secrets": [SECRET],
       "on_exhausted": "block", "max_age_ms": 2000}],
     'sinks[0] "x": on_exhausted: "block" never gives up, so max_age_ms (2000) '
     'would never apply'),
    # Headers that govern the request or the connection, or that reel-sink
    # writes itself: User-Agent went out twice, Expect brought back the
    # 100-continue wait, Transfer-Encoding chunked the body.
    ([{"name": "x", "type": "webhook", "url": "http://h/", "secrets": [SECRET],
       "headers": {"Expect": "100-continue"}}],
     'sinks[0] "x": headers.Expect: not allowed: it makes each request wait'),
    ([{"name": "x", "type": "webhook", "url": "http://h/", "secrets": [SECRET],
       "headers": {"user-agent": "mine/1"}}],
     'sinks[0] "x": headers.user-agent: not allowed: reel-sink sets this header'),
    ([{"name": "x", "type": "webhook", "url": "http://h/", "secrets": [SECRET],
       "headers": {"Transfer-Encoding": "chunked"}}],
     'sinks[0] "x": headers.Transfer-Encoding: not allowed: it sets how the body '
     'is framed'),
    ([{"name": "x", "type": "webhook", "url": "http://h/", "secrets": [SECRET],
       "headers": {"CONNECTION": "close"}}],
     'sinks[0] "x": headers.CONNECTION: not allowed: a hop-by-hop header'),
    ([{"name": "x", "type": "webhook", "url": "http://h/", "secrets": [SECRET],
       "headers": {"User-Agent": "other"}}],
     'sinks[0] "x": headers.User-Agent: not allowed: reel-sink sets this header'),
])
def test_a_bad_config_is_refused_naming_sink_and_field(tmp_path, sinks, want):
    cfg = write_config(tmp_path / "bad.json", sinks)
    for cmd in ([], ["check"]):
        out = run_cli("127.0.0.1:1", cfg, *cmd)
        assert out.returncode == 2, out
        assert want in out.stderr, out.stderr
        assert "%%%" not in out.stderr


def test_a_pattern_that_is_not_utf8_is_refused_by_check(tmp_path):
    """Raw bytes that are not UTF-8 in a pattern passed check: at run time
    reeld refused the subscription (the sink stopped, the process with
    it), or, one of several patterns, it never matched, silently."""
    for sink in ({"name": "x", "type": "webhook", "url": "http://h/", "secrets": [SECRET]},
                 {"name": "x", "type": "nats", "servers": ["nats://h:4222"], "stream": "S"}):
        sink["subjects"] = ["kv.a.>", "kv.BAD.>"]
        text = json.dumps({"sinks": [sink]}).encode().replace(b"BAD", b"\xc3\x28")
        path = tmp_path / "bad.json"
        path.write_bytes(text)
        for cmd in ([], ["check"]):
            out = run_cli("127.0.0.1:1", str(path), *cmd)
            assert out.returncode == 2, out
            assert ('sinks[0] "x": subjects[1]: "kv.\\xc3(.>" is not valid UTF-8'
                    in out.stderr), out.stderr


@pytest.mark.parametrize("env, args, want", [
    ({"REEL_SINK_LOG_LEVEL": "loud"}, ["check"],
     'REEL_SINK_LOG_LEVEL: "loud" is not debug, info, warn or error'),
    ({"REEL_SINK_STATE_NAMESPACE": "a b"}, ["check"],
     'REEL_SINK_STATE_NAMESPACE: "a b" is not 1-256 bytes'),
    ({"REEL_SINK_STOP_GRACE_MS": "x"}, ["check"],
     'REEL_SINK_STOP_GRACE_MS: "x" is not a number of milliseconds'),
    ({"REEL_SINK_REEL": "127.0.0.1:99999"}, ["check"],
     'REEL_SINK_REEL: "127.0.0.1:99999" is not HOST, HOST:PORT'),
    ({"REEL_SINK_CONTROL_LISTEN": "nope"}, [],
     'REEL_SINK_CONTROL_LISTEN: "nope" is not HOST:PORT'),
    ({"REEL_SINK_METRICS_LISTEN": "nope"}, [],
     'REEL_SINK_METRICS_LISTEN: "nope" is not HOST:PORT'),
    # A flag given over the variable is the one named.
    ({"REEL_SINK_LOG_LEVEL": "info"}, ["check", "--log-level", "loud"],
     '--log-level: "loud" is not debug'),
    ({"REEL_SINK_STATE_NAMESPACE": "ok"}, ["check", "--state-namespace", "a b"],
     '--state-namespace: "a b" is not 1-256 bytes'),
])
def test_a_bad_environment_variable_is_named(tmp_path, env, args, want):
    """A bad REEL_SINK_* value was reported under its flag's name, which
    the operator never passed (only REEL_SINK_STOP_GRACE_MS was named)."""
    cfg = webhook_config(tmp_path / "c.json", "s", "http://127.0.0.1:1/")
    addr = None if "REEL_SINK_REEL" in env else "127.0.0.1:1"
    out = run_cli(addr, cfg, *args, env=env, timeout=30)
    assert out.returncode == 2, out
    assert want in out.stderr, out.stderr
    if not want.startswith("--"):
        assert "reel-sink: --" not in out.stderr and ": --" not in out.stderr, out.stderr


def _nofile(soft, hard):
    return lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_sinks_that_cannot_fit_the_open_files_limit_are_refused(tmp_path):
    # 1024 connections and reel-sink's own cannot fit under a hard 256: the
    # connects past it would fail as if the receiver refused them.
    cfg = webhook_config(tmp_path / "c.json", "wide", "http://127.0.0.1:1/",
                         mode="concurrent", max_in_flight=1024)
    out = run_cli("127.0.0.1:1", cfg, preexec_fn=_nofile(256, 256))
    assert out.returncode == 2, out
    assert "max_in_flight: the sinks need up to 1088 open files" in out.stderr, out.stderr
    assert '("wide": 1024)' in out.stderr, out.stderr
    assert "open-files limit of 256 (ulimit -n" in out.stderr, out.stderr


def test_the_soft_open_files_limit_is_raised_to_the_hard_one(
        tmp_path, reeld, reel, receiver):
    cfg = webhook_config(tmp_path / "c.json", "wide", receiver.url, subjects=["kv.app.>"],
                         mode="concurrent", max_in_flight=1024)
    rev = reel.set("app", "a")
    sink = Sink(tmp_path, reeld.addr, cfg, preexec_fn=_nofile(64, 4096))
    wait_for("the event", lambda: len(receiver.delivered()) == 1)
    with open(f"/proc/{sink.proc.pid}/limits") as f:
        line = [ln for ln in f if ln.startswith("Max open files")][0]
    assert line.split()[3:5] == ["4096", "4096"], line
    assert sink.stop() == 0
    assert receiver.delivered_revisions() == [rev]


def test_help_version_and_usage_errors(tmp_path):
    out = run_cli("127.0.0.1:1", "x", "--help")
    assert out.returncode == 0 and "reel-sink replay NAME" in out.stdout
    assert "reel-sink" in run_cli("127.0.0.1:1", "x", "--version").stdout
    cfg = webhook_config(tmp_path / "c.json", "s", "http://127.0.0.1:1/")
    assert run_cli("127.0.0.1:1", cfg, "replay", "s").returncode == 2
    assert run_cli("127.0.0.1:1", cfg, "enable", "nope").returncode == 2
    assert run_cli("127.0.0.1:1", cfg, "bogus").returncode == 2
    out = run_cli("127.0.0.1:1", cfg, "check", "--state-namespace", "a.b")
    assert out.returncode == 2 and "--state-namespace" in out.stderr
    # A port past 65535 was taken modulo 65536: another reeld, perhaps.
    for bad in ("127.0.0.1:99999", "127.0.0.1:"):
        out = run_cli(bad, cfg, "status")
        assert out.returncode == 2, out
        assert f'--reel: "{bad}" is not HOST, HOST:PORT' in out.stderr, out.stderr


def test_status_adds_the_running_process_live_numbers_and_never_a_secret(
        tmp_path, reeld, reel, receiver):
    receiver.plan(lambda d: 503)
    cfg = webhook_config(tmp_path / "c.json", "st", receiver.url, subjects=["kv.app.>"],
                         retry_schedule_ms=[60000], headers={"Authorization": "Bearer tok-123"})
    revs = [reel.set("app", f"k{i}") for i in range(3)]
    sink = Sink(tmp_path, reeld.addr, cfg, "--control-listen", "127.0.0.1:0")
    port = int(sink.wait_log(r"control endpoint on port (\d+)").group(1))
    wait_for("a failed attempt", lambda: len(receiver.all()) >= 1)
    wait_for("the failure in status", lambda: "failing 1" in run_cli(
        reeld.addr, cfg, "status", "--control", f"127.0.0.1:{port}").stdout)
    out = run_cli(reeld.addr, cfg, "status", "--control", f"127.0.0.1:{port}")
    assert out.returncode == 0, out
    line = out.stdout
    assert line.startswith("st (webhook): cursor ")
    assert f"head {reel.head()}" in line and "running" in line
    assert f"last error: revision {revs[0]} (evt_{revs[0]}): HTTP 503" in line
    st = json.loads(run_cli(reeld.addr, cfg, "status", "--json", "--control",
                            f"127.0.0.1:{port}").stdout)
    assert st["live"]["state"] == "running" and st["live"]["failing"] == 1
    assert st["live"]["failures"] == {"http_5xx": st["live"]["failed_attempts"]}
    assert st["cursor"] < revs[0] and st["lag"] >= 3 and st["active"] is True
    # The requests carried the extra header; nothing shows a secret.
    assert receiver.all()[0]["sig_ok"] and receiver.all()[0]["auth"] == "Bearer tok-123"
    shown = sink.log() + line + json.dumps(st)
    for secret in (SECRET, SECRET[len("whsec_"):], OLD_SECRET[len("whsec_"):], "tok-123"):
        assert secret not in shown
    # Without the process, status still reads what reel holds.
    assert sink.stop() == 0
    out = run_cli(reeld.addr, cfg, "status", "--control", f"127.0.0.1:{port}")
    assert out.returncode == 0 and "live numbers unavailable" in out.stdout, out


def test_the_control_endpoint_answers_past_1024_open_files(tmp_path, reeld, receiver):
    # select() refused every connection on a descriptor >= FD_SETSIZE.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 2048:
        pytest.skip(f"the hard open files limit is {hard}")
    cfg = webhook_config(tmp_path / "c.json", "fd", receiver.url, subjects=["kv.app.>"])

    def hold_1500_files():
        resource.setrlimit(resource.RLIMIT_NOFILE, (2048, hard))
        fd = os.open("/dev/null", os.O_RDONLY)
        for _ in range(1500):
            os.set_inheritable(os.dup(fd), True)

    log_path = tmp_path / "sink.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([REEL_SINK, "--reel", reeld.addr, "--config", cfg,
                                 "--control-listen", "127.0.0.1:0"],
                                stdout=log, stderr=subprocess.STDOUT,
                                close_fds=False, preexec_fn=hold_1500_files)
    try:
        m = wait_for("the control port", lambda: re.search(
            r"control endpoint on port (\d+)", log_path.read_text()))
        port = int(m.group(1))
        out = run_cli(reeld.addr, cfg, "status", "--control", f"127.0.0.1:{port}",
                      timeout=20)
        assert out.returncode == 0 and "fd (webhook)" in out.stdout, \
            (out, log_path.read_text())
        assert "FD_SETSIZE" not in log_path.read_text()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0, log_path.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_taken_control_port_is_refused_naming_the_flag_and_address(
        tmp_path, reeld, receiver):
    cfg = webhook_config(tmp_path / "c.json", "cp", receiver.url, subjects=["kv.app.>"])
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    addr = f"127.0.0.1:{taken.getsockname()[1]}"
    out = subprocess.run([REEL_SINK, "--reel", reeld.addr, "--config", cfg,
                          "--control-listen", addr],
                         capture_output=True, text=True, timeout=30)
    taken.close()
    assert out.returncode != 0, out
    assert f"--control-listen: cannot listen on {addr}: Address already in use" \
        in out.stderr, out.stderr
    assert "Failed to bind" not in out.stderr


def test_redirects_are_not_followed(tmp_path, reeld, reel, receiver):
    elsewhere = Receiver()
    try:
        first = {"done": False}

        def plan(d):
            if not first["done"]:
                first["done"] = True
                return 307, {"Location": elsewhere.url}
            return 200
        receiver.plan(plan)
        cfg = webhook_config(tmp_path / "c.json", "rd", receiver.url, subjects=["kv.app.>"],
                             retry_schedule_ms=[100])
        rev = reel.set("app", "a")
        sink = Sink(tmp_path, reeld.addr, cfg)
        wait_for("the retry", lambda: len(receiver.delivered()) == 1)
        assert sink.stop() == 0
        assert [d["status"] for d in receiver.all()] == [307, 200]
        assert elsewhere.all() == []
        assert f"revision {rev} (evt_{rev}) attempt 1 failed: HTTP 307 (redirects are not " \
               "followed)" in sink.log()
    finally:
        elsewhere.close()


def test_an_answer_cut_off_inside_its_headers_is_a_failed_attempt(
        tmp_path, reeld, reel):
    """A receiver that dies while writing its headers ("HTTP/1.1 200 OK",
    then the connection closes) has not answered: the attempt fails and the
    event goes again, like an answer cut off in its body."""
    import socket
    import threading
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    got = []

    def serve():
        while True:
            try:
                c, _ = srv.accept()
            except OSError:
                return
            data = b""
            c.settimeout(5)
            try:
                while b"\r\n\r\n" not in data:
                    data += c.recv(65536)
                head, _, body = data.partition(b"\r\n\r\n")
                n = int([ln.split(b":")[1] for ln in head.split(b"\r\n")
                         if ln.lower().startswith(b"content-length:")][0])
                while len(body) < n:
                    body += c.recv(65536)
                got.append(body)
                if len(got) == 1:
                    c.sendall(b"HTTP/1.1 200 OK\r\nContent-Len")
                else:
                    c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n"
                              b"Connection: close\r\n\r\n")
            except (OSError, ValueError, IndexError):
                pass
            c.close()
    t = threading.Thread(target=serve, daemon=True)
    t.start()
    url = f"http://127.0.0.1:{srv.getsockname()[1]}/hook"
    cfg = webhook_config(tmp_path / "c.json", "cut", url, subjects=["kv.cut.>"],
                         retry_schedule_ms=FAST)
    rev = reel.set("cut", "k")
    sink = Sink(tmp_path, reeld.addr, cfg)
    try:
        wait_for("the event acknowledged", lambda: (reel.acked("sink.cut") or 0) >= rev)
        assert len(got) == 2, len(got)  # the cut answer did not count
        assert got[0] == got[1]
        assert "the answer ended inside its headers" in sink.log(), sink.log()
        assert sink.stop() == 0
    finally:
        srv.close()


def test_an_artifacts_put_and_delete_arrive_with_its_record(tmp_path, reeld, reel, receiver):
    f = tmp_path / "report.txt"
    f.write_bytes(b"quarterly numbers\n")
    cfg = webhook_config(tmp_path / "c.json", "ws", receiver.url, subjects=["artifact.>"])
    sink = Sink(tmp_path, reeld.addr, cfg)
    for args in (["ws", "put", "docs", "q/report.txt", str(f), "--type", "text/plain",
                  "--meta", "by=agent-7"], ["ws", "rm", "docs", "q/report.txt"]):
        r = subprocess.run([REELCTL, "--addr", reeld.addr] + args, capture_output=True,
                           text=True, timeout=30)
        assert r.returncode == 0, r.stderr
    wait_for("the put and the delete", lambda: len(receiver.delivered()) >= 2)
    assert sink.stop() == 0
    put, gone = [d["json"] for d in receiver.delivered()]
    assert put["type"] == gone["type"] == "reel.artifact_changed"
    a = put["data"]["artifact"]
    assert (a["namespace"], a["key"], a["version"], a["size"], a["content_type"]) == \
        ("docs", "q/report.txt", 1, f.stat().st_size, "text/plain")
    assert a["sha256"] == hashlib.sha256(f.read_bytes()).hexdigest()
    assert a["metadata"] == {"by": "agent-7"} and a["deleted"] is False
    assert put["data"]["subject"] == "artifact.docs.q.report.txt"
    g = gone["data"]["artifact"]
    assert g["deleted"] is True and g["version"] == 2 and g["sha256"] == ""


def _reelctl_events(addr, count):
    """reelctl events tail's first count events, by revision."""
    r = subprocess.run([REELCTL, "--addr", addr, "events", "tail", "--count", str(count)],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    return {e["revision"]: e for e in map(json.loads, r.stdout.splitlines())}


def test_every_record_arrives_with_the_fields_reelctl_prints(tmp_path, reeld, reel, receiver):
    """A receiver applies the README's claimability rule (a RUNNABLE run's
    not_before_ms <= the event's ts_ms) and tells a delayed signal's
    delivery from a send: each record carries the fields reelctl prints
    (attempt, not_before_ms, reason, resumed; scheduled, deliver_at_ms),
    by the same names, in the same order, with the same values."""
    claim = unary(reel.ch, "/reel.v1.Journal/ClaimRun", J.ClaimRunRequest, J.Run)
    get = unary(reel.ch, "/reel.v1.Journal/GetRun", J.GetRunRequest, J.Run)
    cfg = webhook_config(tmp_path / "c.json", "all", receiver.url)
    sink = Sink(tmp_path, reeld.addr, cfg)
    # A lease that expires twice in a row with no append: claimable at once
    # after the first, backing off a minute (less up to a fifth) after the
    # second.
    run = reel.begin(J.BeginRunRequest(app="shop", user="u", session="s",
                                       invocation_id="inv", lease_owner="w",
                                       lease_ttl_ms=300,
                                       retry=J.RetryPolicy(initial_interval_ms=60000)),
                     timeout=10)
    rid = run.run_id

    def runnable():
        g = get(J.GetRunRequest(run_id=rid), timeout=10)
        return g if g.status == J.Run.RUNNABLE else None
    wait_for("the first expiry", runnable)
    claim(J.ClaimRunRequest(run_id=rid, lease_owner="w", lease_ttl_ms=300), timeout=10)
    expired = wait_for("the second expiry", runnable)
    assert expired.attempt == 2 and expired.reason == "LEASE_EXPIRED"
    assert expired.not_before_ms > expired.updated_at_ms
    # A delayed signal: nothing until its time, then a send as of then.
    at = int(time.time() * 1000) + 1000
    sent = reel.send(S.SendSignalRequest(run_id=rid, name="wake", payload='{"n":1}',
                                         signal_id="w1", deliver_at_ms=at), timeout=10)
    assert sent.signal.scheduled and sent.signal.deliver_at_ms == at
    # Every other kind too: journal entries, KV, a signal sent now, an artifact.
    reel.mixed(0)
    f = tmp_path / "a.txt"
    f.write_bytes(b"x\n")
    r = subprocess.run([REELCTL, "--addr", reeld.addr, "ws", "put", "docs", "a.txt", str(f),
                        "--meta", "by=me"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr

    def delivered_signal():
        return [d["json"]["data"] for d in receiver.delivered()
                if d["json"]["data"].get("signal", {}).get("name") == "wake"]
    wait_for("the delayed signal", delivered_signal)
    head = reel.head()
    wait_for("everything", lambda: (reel.acked("sink.all") or 0) >= head)
    assert sink.stop() == 0

    got = [d["json"]["data"] for d in receiver.delivered()]
    shown = _reelctl_events(reeld.addr, head)
    kinds = set()
    for data in got:
        e = shown[data["revision"]]
        assert [data[k] for k in ("revision", "subject", "type", "ts_ms")] == \
            [e[k] for k in ("revision", "subject", "type", "ts_ms")]
        (kind, record), = [(k, v) for k, v in data.items()
                           if k not in ("revision", "subject", "type", "ts_ms")]
        kinds.add(kind)
        # The same names in the same order, and the same values.
        assert list(record.items()) == list(e["body"].items()), (kind, record, e["body"])
    assert kinds == {"run", "entry", "value", "signal", "artifact"}

    first, second = [d for d in got if d.get("run", {}).get("run_id") == rid and
                     d["run"]["reason"] == "LEASE_EXPIRED"]
    # Claimable at once after the first expiry, from not_before_ms after
    # the second: the rule a receiver applies.
    assert first["run"]["attempt"] == 1
    assert first["run"]["not_before_ms"] <= first["ts_ms"]
    assert second["run"]["attempt"] == 2
    assert second["run"]["not_before_ms"] == expired.not_before_ms > second["ts_ms"]
    assert second["run"]["status"] == "RUNNABLE" and second["run"]["resumed"] is False
    sig, = [d["signal"] for d in delivered_signal()]
    assert sig["scheduled"] is False and sig["deliver_at_ms"] == at
    assert sig["sent_at_ms"] >= at and sig["signal_id"] == "w1"
