"""reel's clock under steps of the system clock. reeld runs under
libfaketime with a control file, so its wall clock steps while it runs (an
NTP step, a date set by hand, a VM resumed), while its monotonic and boot
clocks go on as a real step leaves them. reel's clock never steps: it closes
the gap a tenth faster or slower at most (base/clock.h), so leases, timers
and timeouts keep their length, and a restart takes the clock up where the
last commit left it. Before, a step of +2 h expired every healthy lease at
once and fired a signal due in 30 minutes; a step of -1 h held a dead
worker's lease for an hour; a restart after the clock had been a day ahead
kept leases a day.
"""
import glob
import os
import time
import urllib.request

import grpc
import pytest

from reel.v1 import journal_pb2 as J
from reel.v1 import signals_pb2 as S
from reel.v1 import kv_pb2 as K
from conftest import Reeld, free_port, unary

FAKETIME = sorted(glob.glob("/usr/lib/*/faketime/libfaketimeMT.so.1"))


@pytest.fixture(autouse=True)
def have_faketime():
    if not FAKETIME:
        pytest.fail("libfaketime not found: bash scripts/deps.sh installs it (faketime)")


class Stepped:
    """A reeld whose wall clock is offset by what a control file says."""

    def __init__(self, tmp_path, offset="+0", data=None, extra=()):
        self.ctl = str(tmp_path / f"faketime-{time.monotonic_ns()}.ctl")
        self.step(offset)
        env = {"LD_PRELOAD": FAKETIME[0], "FAKETIME_TIMESTAMP_FILE": self.ctl,
               "FAKETIME_NO_CACHE": "1", "FAKETIME_DONT_FAKE_MONOTONIC": "1",
               # libfaketime 0.9.10 otherwise ends every timed wait on a
               # monotonic condition variable at once.
               "FAKETIME_FORCE_MONOTONIC_FIX": "0"}
        if "ASAN_OPTIONS" in os.environ:    # a sanitizer build: preloaded after it
            env["ASAN_OPTIONS"] = os.environ["ASAN_OPTIONS"] + ":verify_asan_link_order=0"
        self.server = Reeld(data or str(tmp_path / "data"), env=env, extra=extra).start()
        self.ch = grpc.insecure_channel(self.server.addr)
        u = lambda m, a, b: unary(self.ch, m, a, b)
        self.begin = u("/reel.v1.Journal/BeginRun", J.BeginRunRequest, J.Run)
        self.heartbeat = u("/reel.v1.Journal/Heartbeat", J.HeartbeatRequest, J.Run)
        self.get_run = u("/reel.v1.Journal/GetRun", J.GetRunRequest, J.Run)
        self.send = u("/reel.v1.Signals/SendSignal", S.SendSignalRequest, S.SendSignalResponse)
        self.signals = u("/reel.v1.Signals/ListSignals", S.ListSignalsRequest,
                         S.ListSignalsResponse)
        self.set_value = u("/reel.v1.KV/SetValue", K.SetValueRequest, K.SetValueResponse)

    def step(self, offset):
        with open(self.ctl + ".tmp", "w") as f:
            f.write(offset + "\n")
        os.replace(self.ctl + ".tmp", self.ctl)

    def run(self, name, ttl_ms):
        return self.begin(J.BeginRunRequest(app="clock", user="u", session=name,
                                            invocation_id=name, lease_owner="w",
                                            lease_ttl_ms=ttl_ms), timeout=10)

    def now_ms(self):
        """reeld's time, as it stamps a commit."""
        return self.set_value(K.SetValueRequest(namespace="clock", key="now", value="1"),
                              timeout=10).entry.updated_at_ms

    def stop(self):
        self.ch.close()
        code, _ = self.server.stop()
        assert code == 0, self.server.log()


def test_a_step_forward_neither_expires_healthy_leases_nor_fires_timers_early(tmp_path):
    port = free_port()
    r = Stepped(tmp_path, extra=["--metrics-listen", f"127.0.0.1:{port}"])
    try:
        runs = [r.run(f"healthy-{i}", 6000) for i in range(5)]
        later = r.run("later", 3600_000)
        r.send(S.SendSignalRequest(run_id=later.run_id, name="wake", payload="{}",
                                   signal_id="in-30-min", deliver_at_ms=r.now_ms() + 1800_000),
               timeout=10)
        t0 = reel_before = r.now_ms()
        r.step("+7200")
        end = time.monotonic() + 8
        while time.monotonic() < end:          # a worker heartbeating each 2 s
            for run in runs:
                r.heartbeat(J.HeartbeatRequest(run_id=run.run_id, lease_epoch=run.lease_epoch,
                                               lease_ttl_ms=6000), timeout=10)
            time.sleep(2)
        for run in runs:
            got = r.get_run(J.GetRunRequest(run_id=run.run_id), timeout=10)
            assert got.status == J.Run.RUNNING and got.lease_epoch == run.lease_epoch, got
        sigs = r.signals(S.ListSignalsRequest(run_id=later.run_id, include_consumed=True),
                         timeout=10).signals
        assert [s.scheduled for s in sigs] == [True], sigs
        # reel's clock went on at most a tenth faster than real time.
        assert r.now_ms() - reel_before <= 1.1 * (8 + 3) * 1000, (t0, r.now_ms())
        assert "the system clock is ahead of reel's by" in r.server.log()
        gap = [l for l in urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics",
                                                 timeout=5).read().decode().splitlines()
               if l.startswith("reel_clock_gap_seconds ")]
        assert len(gap) == 1 and 7000 < float(gap[0].split()[1]) < 7200, gap
    finally:
        r.stop()


def test_a_step_back_does_not_hold_a_dead_workers_lease(tmp_path):
    r = Stepped(tmp_path)
    try:
        dead = r.run("dead", 3000)
        before = r.now_ms()
        r.step("-3600")
        t0 = time.monotonic()
        while r.get_run(J.GetRunRequest(run_id=dead.run_id), timeout=10).status == J.Run.RUNNING:
            assert time.monotonic() - t0 < 15, "the lease outlived the step back"
            time.sleep(0.2)
        got = r.get_run(J.GetRunRequest(run_id=dead.run_id), timeout=10)
        assert got.status == J.Run.RUNNABLE and got.reason == "LEASE_EXPIRED", got
        assert r.now_ms() >= before                # reel's times never go back
        assert "the system clock is behind reel's by" in r.server.log()
    finally:
        r.stop()


def test_a_restart_after_the_clock_was_hours_ahead_keeps_lease_lengths(tmp_path):
    data = str(tmp_path / "data")
    r = Stepped(tmp_path, "+43200", data=data)
    try:
        first = r.run("first", 4000)
        stamped = r.now_ms()
    finally:
        r.stop()
    r = Stepped(tmp_path, "+0", data=data)      # the clock set right
    try:
        t0 = time.monotonic()
        while r.get_run(J.GetRunRequest(run_id=first.run_id), timeout=10).status == J.Run.RUNNING:
            assert time.monotonic() - t0 < 15, "the lease lasted as long as the clock's error"
            time.sleep(0.2)
        assert r.now_ms() >= stamped               # times never go back
        second = r.run("second", 4000)
        assert second.run_id > first.run_id        # ids sort in creation order
    finally:
        r.stop()


def test_a_restart_after_the_clock_was_behind_does_not_fire_timers_early(tmp_path):
    """The same boot: reel's clock takes up exactly where it was (the boot
    clock says how long reeld was down), behind the system clock too, and
    closes the gap a tenth at a time. A restart with the clock set right
    after it was an hour behind fired everything due in that hour at once."""
    data = str(tmp_path / "data")
    r = Stepped(tmp_path, "-3600", data=data)
    try:
        run = r.run("waits", 3600_000)
        r.send(S.SendSignalRequest(run_id=run.run_id, name="wake", payload="{}",
                                   signal_id="in-30-min", deliver_at_ms=r.now_ms() + 1800_000),
               timeout=10)
        stamped = r.now_ms()
    finally:
        r.stop()
    r = Stepped(tmp_path, "+0", data=data)      # the clock set right
    try:
        time.sleep(3)
        sigs = r.signals(S.ListSignalsRequest(run_id=run.run_id, include_consumed=True),
                         timeout=10).signals
        assert [s.scheduled for s in sigs] == [True], sigs
        now = r.now_ms()
        assert stamped <= now < stamped + 60_000   # taken up, not jumped an hour
        assert "the system clock is ahead of reel's by" in r.server.log()
    finally:
        r.stop()


def test_a_restart_after_the_clock_was_two_days_behind_says_the_step_it_takes(tmp_path):
    """More than a day past where the downtime leaves reel's clock is taken
    at once (as while running), and said so, as a step seen while running
    is: before, a restart took it in silence."""
    data = str(tmp_path / "data")
    r = Stepped(tmp_path, "-172800", data=data)
    try:
        r.run("before", 3600_000)
        stamped = r.now_ms()
    finally:
        r.stop()
    r = Stepped(tmp_path, "+0", data=data)      # the clock set right
    try:
        assert r.now_ms() >= stamped + 172_000_000  # taken at once
        assert "more than a day: the step is taken at once" in r.server.log(), \
            r.server.log()
    finally:
        r.stop()
