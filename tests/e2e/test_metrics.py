"""Observability: /metrics, /healthz and /readyz of reeld and reel-sink.

Every scrape is checked by two parsers that are not reel's: Debian's
python3-prometheus-client (text_string_to_metric_families) and
`promtool check metrics` from Debian's prometheus package; the values are
then checked against the load the test itself put on the server.
"""
import json
import os
import shutil
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from reel.v1 import kv_pb2 as K
from reel.v1 import wal_pb2 as W
from conftest import Reeld, free_port, reelctl, small_tmpfs, stream, unary
from sinkutil import Receiver, Sink, check_built, wait_for, webhook_config

FAST = [100, 200, 300, 400, 500]  # retry waits for tests (ms)

PROMTOOL = shutil.which("promtool")


def get(port, path, timeout=5):
    """(status, body) of GET http://127.0.0.1:port/path."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def ready(port):
    """/readyz's status, or None while nothing listens yet."""
    try:
        return get(port, "/readyz")[0]
    except urllib.error.URLError:
        return None


def scrape(port):
    """The exposition, checked by both parsers, as {(name, labels): value}
    with labels a sorted tuple of pairs (histograms' _bucket, _sum and
    _count are samples of their own)."""
    status, text = get(port, "/metrics")
    assert status == 200, text
    if PROMTOOL is None:
        pytest.fail("promtool not found: scripts/deps.sh installs Debian's prometheus")
    r = subprocess.run([PROMTOOL, "check", "metrics"], input=text,
                       capture_output=True, text=True)
    assert r.returncode == 0, f"promtool: {r.stdout}{r.stderr}\n{text}"
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            key = (s.name, tuple(sorted(s.labels.items())))
            assert key not in out, f"series {key} twice"
            out[key] = s.value
    return out


def value(m, name, **labels):
    return m.get((name, tuple(sorted(labels.items()))))


@pytest.fixture
def served(tmp_path):
    port = free_port()
    server = Reeld(str(tmp_path / "data"),
                   extra=["--metrics-listen", f"127.0.0.1:{port}"]).start()
    server.metrics_port = port
    yield server
    if server.proc.poll() is None:
        code, _ = server.stop()
        assert code == 0, server.log()


def kv(ch):
    return (unary(ch, "/reel.v1.KV/SetValue", K.SetValueRequest, K.SetValueResponse),
            unary(ch, "/reel.v1.KV/GetValue", K.GetValueRequest, K.GetValueResponse))


def test_scrapes_during_a_known_load_are_valid_and_count_it(served):
    ch = grpc.insecure_channel(served.addr)
    set_value, get_value = kv(ch)
    port = served.metrics_port
    before = scrape(port)
    assert value(before, "reel_writes_refused") == 0
    assert value(before, "reel_rpc_requests_total", service="reel.v1.KV",
                 method="SetValue", code="OK") == 0
    assert get(port, "/healthz") == (200, "ok\n")
    assert get(port, "/readyz") == (200, "ready\n")

    # Scrapes go on, every 50 ms, while the load runs: each must be valid.
    stop, scrapes, errors = threading.Event(), [], []

    def scraper():
        while not stop.is_set():
            try:
                scrapes.append(scrape(port))
            except BaseException as e:  # noqa: BLE001 (reported below)
                errors.append(e)
                return
            time.sleep(0.05)
    t = threading.Thread(target=scraper)
    t.start()
    # Writes in waves of 50 until at least three scrapes ran during them.
    N, BAD = 0, 7
    deadline = time.monotonic() + 60
    while N < 300 or (len(scrapes) < 3 and not errors and time.monotonic() < deadline):
        futs = [set_value.future(K.SetValueRequest(namespace="m", key=f"k{N + i}",
                                                   value="1"), timeout=30)
                for i in range(50)]
        for f in futs:
            f.result()
        N += 50
    for i in range(BAD):
        with pytest.raises(grpc.RpcError) as e:
            set_value(K.SetValueRequest(namespace="", key="k", value="1"), timeout=10)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert get_value(K.GetValueRequest(namespace="m", key="k0"), timeout=10).found
    stop.set()
    t.join()
    assert not errors, errors[0]
    assert len(scrapes) >= 3

    m = scrape(port)
    kvreq = dict(service="reel.v1.KV", method="SetValue")
    assert value(m, "reel_rpc_requests_total", code="OK", **kvreq) == N
    assert value(m, "reel_rpc_requests_total", code="INVALID_ARGUMENT", **kvreq) == BAD
    assert value(m, "reel_rpc_requests_total", service="reel.v1.KV",
                 method="GetValue", code="OK") == 1
    assert value(m, "reel_rpc_duration_seconds_count", **kvreq) == N + BAD
    assert value(m, "reel_rpc_duration_seconds_bucket", le="+Inf", **kvreq) == N + BAD
    # Every write committed once, in groups: the group sizes add up to the
    # writes (plus the commits reeld makes itself, none of them requests).
    assert value(m, "reel_revision") == N
    commits = value(m, "reel_commits_total")
    assert 1 <= commits <= N + 1
    assert value(m, "reel_commit_group_size_count") == commits
    assert N <= value(m, "reel_commit_group_size_sum") <= N + 1
    assert value(m, "reel_commit_duration_seconds_count") == commits
    assert value(m, "reel_commit_duration_seconds_sum") > 0
    assert value(m, "reel_write_queue_depth") == 0
    assert value(m, "reel_write_queue_bytes") == 0
    assert value(m, "reel_wal_oldest_revision") == 1
    assert value(m, "reel_wal_bytes") > 0
    assert value(m, "reel_rocksdb_memtable_bytes", cf="kv") > 0
    assert value(m, "reel_rocksdb_write_stopped") == 0
    # Counters never went back between scrapes.
    series = lambda s: s.get(("reel_rpc_requests_total", tuple(sorted(
        dict(code="OK", **kvreq).items()))), 0)
    seen = [series(s) for s in scrapes] + [N]
    assert seen == sorted(seen), seen

    # reelctl status says the same through the Admin status RPC.
    r = reelctl(served.addr, "status", "--interval", "0", "--json")
    assert r.returncode == 0, r.stderr
    st = json.loads(r.stdout)
    assert st["revision"] == N and st["commits"] == commits
    assert st["write_queue_depth"] == 0 and st["wal_oldest_revision"] == 1
    assert st["mean_group_size"] >= 1
    ch.close()


def test_consumer_lag_and_watchers_follow_the_clients(served):
    ch = grpc.insecure_channel(served.addr)
    set_value, _ = kv(ch)
    for i in range(5):
        set_value(K.SetValueRequest(namespace="w", key=f"k{i}", value="1"), timeout=10)
    # Two durable consumers, each made by subscribing: one acknowledges
    # nothing, the other revision 3.
    sub = stream(ch, "/reel.v1.Wal/SubscribeEvents", W.SubscribeEventsRequest, W.Event)
    ack = unary(ch, "/reel.v1.Wal/AckEvents", W.AckEventsRequest, W.AckEventsResponse)
    for name in ("c-behind", "c-three"):
        call = sub(W.SubscribeEventsRequest(consumer=name), timeout=30)
        next(call)
        call.cancel()
    # The server lets a consumer go once it sees the stream gone.
    wait_for("c-three free", lambda: _try_ack(ack, "c-three", 3))
    w = stream(ch, "/reel.v1.KV/WatchValue", K.WatchValueRequest, K.ValueEvent)(
        K.WatchValueRequest(namespace="w", key="k0"), timeout=30)
    port = served.metrics_port
    wait_for("the watch counted",
             lambda: value(scrape(port), "reel_watchers", module="kv") == 1)
    m = scrape(port)
    head = int(value(m, "reel_revision"))
    assert value(m, "reel_wal_consumer_lag", consumer="c-three") == head - 3
    assert value(m, "reel_wal_consumer_lag", consumer="c-behind") == head
    w.cancel()
    wait_for("the watch gone",
             lambda: value(scrape(port), "reel_watchers", module="kv") == 0)
    r = reelctl(served.addr, "status", "--interval", "0")
    assert r.returncode == 0 and "c-behind" in r.stdout and f"lag {head}" in r.stdout
    # An interval past an hour (99999d slept for good) or none at all is
    # refused at once.
    for args, says in ((("--interval", "1d"), "0 to 1h"),
                       (("--interval",), "--interval needs a value")):
        r = reelctl(served.addr, "status", *args, timeout=5)
        assert r.returncode == 2 and says in r.stderr, (args, r.stderr)
    ch.close()


def _try_ack(ack, name, rev):
    try:
        ack(W.AckEventsRequest(consumer=name, revision=rev), timeout=5)
        return True
    except grpc.RpcError as e:
        if e.code() == grpc.StatusCode.FAILED_PRECONDITION:
            return False
        raise


def test_metrics_is_503_not_a_partial_set_while_reeld_starts(tmp_path):
    """While reeld starts, only the figures registered so far (the store's)
    were served, with 200: a scrape Prometheus took as complete, series
    missing. Until every figure is registered /metrics says "starting"."""
    port = free_port()
    server = Reeld(str(tmp_path / "data"), extra=["--metrics-listen", f"127.0.0.1:{port}"],
                   env={"REEL_TEST_FAULTS": "reeld.slow_start"}).start(wait=False)
    try:
        wait_for("/readyz starting",
                 lambda: ready(port) == 503 and get(port, "/readyz")[1] == "starting\n",
                 timeout=15)
        assert get(port, "/metrics") == (503, "starting: not every figure is registered yet\n")
        wait_for("/readyz 200", lambda: ready(port) == 200, timeout=15)
        figures = scrape(port)
        assert any(name == "reel_rpc_requests_total" for name, _ in figures), figures
    finally:
        assert server.stop()[0] == 0


def test_readyz_turns_503_during_sigterm_shutdown(tmp_path):
    port = free_port()
    server = Reeld(str(tmp_path / "data"),
                   extra=["--metrics-listen", f"127.0.0.1:{port}",
                          "--shutdown-delay", "3s"]).start()
    ch = grpc.insecure_channel(server.addr)
    set_value, get_value = kv(ch)
    try:
        assert get(port, "/readyz") == (200, "ready\n")
        set_value(K.SetValueRequest(namespace="s", key="k", value="1"), timeout=10)
        server.proc.send_signal(signal.SIGTERM)
        wait_for("/readyz 503", lambda: get(port, "/readyz")[0] == 503, timeout=10)
        assert get(port, "/readyz") == (503, "shutting down\n")
        assert get(port, "/healthz") == (200, "ok\n")
        # Not ready, but still serving through the delay.
        assert get_value(K.GetValueRequest(namespace="s", key="k"), timeout=5).found
        assert server.proc.wait(timeout=15) == 0, server.log()
    finally:
        ch.close()
        server.kill()


@pytest.mark.parametrize("again", [signal.SIGTERM, signal.SIGINT])
def test_a_second_signal_cuts_the_shutdown_delay_short(tmp_path, again):
    """Only SIGKILL ended a long --shutdown-delay: an operator who asked
    twice waited it out (10 minutes at the most)."""
    server = Reeld(str(tmp_path / "data"), extra=["--shutdown-delay", "10m"]).start()
    try:
        server.proc.send_signal(signal.SIGTERM)
        wait_for("the delay", lambda: "serving 600000 ms more" in server.log(), timeout=10)
        time.sleep(0.3)
        assert server.proc.poll() is None       # the first one waits
        t0 = time.monotonic()
        server.proc.send_signal(again)
        assert server.proc.wait(timeout=15) == 0, server.log()
        assert time.monotonic() - t0 < 10
        assert "again: stopping now" in server.log()
    finally:
        server.kill()


@pytest.fixture
def small_disk(tmp_path):
    yield from small_tmpfs(tmp_path / "mnt", "24m")


def test_readyz_turns_503_after_the_disk_fills(small_disk):
    port = free_port()
    server = Reeld(str(small_disk / "data"),  # no floor: the disk's end fails a write
                   extra=["--metrics-listen", f"127.0.0.1:{port}",
                          "--min-free-disk-bytes", "0"]).start()
    ch = grpc.insecure_channel(server.addr)
    set_value, _ = kv(ch)
    value_ = json.dumps("x" * 4000)
    refused = None
    try:
        assert get(port, "/readyz")[0] == 200
        for i in range(100000):
            try:
                set_value(K.SetValueRequest(namespace="d", key=f"k{i}", value=value_),
                          timeout=30)
            except grpc.RpcError as e:
                refused = e
                break
        assert refused is not None, "the disk never filled"
        status, body = get(port, "/readyz")
        assert status == 503 and body.startswith("not writable:"), body
        assert "space" in body.lower(), body
        assert get(port, "/healthz") == (200, "ok\n")
        m = scrape(port)
        assert value(m, "reel_writes_refused") == 1
        assert value(m, "reel_rpc_requests_total", service="reel.v1.KV",
                     method="SetValue", code=refused.code().name) >= 1
    finally:
        ch.close()
        code, _ = server.stop()
    assert code == 0, server.log()


def test_a_bad_metrics_address_is_refused_naming_the_flag(tmp_path):
    for bad in ("nocolon", "127.0.0.1:99999", "no.such.host.invalid:9"):
        server = Reeld(str(tmp_path / "data"), extra=["--metrics-listen", bad])
        server.start(wait=False)
        assert server.proc.wait(timeout=10) != 0
        assert "--metrics-listen" in server.log(), server.log()
        # Refused, so never said to answer anyone.
        assert "answers anyone" not in server.log(), server.log()
        # Refused before the data dir was touched.
        assert not os.path.exists(tmp_path / "data")


def documented_and_dashboarded(*ports, dashboard=True):
    """Every family the endpoints serve is in docs/operations.md; with
    dashboard (the ports are a reeld's and a reel-sink's), every metric the
    Grafana dashboard queries is one the docs name and, but reel-reactor's,
    one these endpoints serve."""
    from conftest import ROOT
    served = set()
    for p in ports:
        for fam in text_string_to_metric_families(get(p, "/metrics")[1]):
            served.add(fam.name if fam.type != "counter" else fam.name + "_total")
    with open(os.path.join(ROOT, "docs", "operations.md")) as f:
        doc = f.read()
    missing = sorted(n for n in served if f"`{n}`" not in doc)
    assert not missing, f"not in docs/operations.md: {missing}"
    if not dashboard:
        return
    with open(os.path.join(ROOT, "docs", "grafana-reel.json")) as f:
        dash = json.load(f)
    import re
    used = set()
    for panel in dash["panels"]:
        for t in panel["targets"]:
            used |= set(re.findall(r"\b(reel_[a-z_]+)", t["expr"]))
    # The job variable is read from each process's own series: reeld's,
    # reel-sink's and reel-reactor's (scraped under jobs of their own).
    (job,) = [v for v in dash["templating"]["list"] if v["name"] == "job"]
    for name in ("reel_revision", "reel_sink_reel_up", "reel_reactor_reel_up"):
        assert name in job["query"], job["query"]
    used |= set(re.findall(r"\b(reel_[a-z_]+)", job["query"]))
    base = {re.sub(r"_(bucket|sum|count)$", "", n) for n in used}
    unknown = sorted(n for n in base if f"`{n}`" not in doc or (
        not n.startswith("reel_reactor_") and n not in served))
    assert not unknown, f"the dashboard queries metrics nobody serves: {unknown}"


def test_reel_sink_lag_grows_while_its_receiver_is_down_then_returns_to_0(
        tmp_path, served):
    check_built()
    receiver = Receiver()
    down = {"on": True}
    receiver.plan(lambda d: 503 if down["on"] else 200)
    ch = grpc.insecure_channel(served.addr)
    set_value, _ = kv(ch)
    port = free_port()
    cfg = webhook_config(tmp_path / "c.json", "s", receiver.url,
                         subjects=["kv.app.>"], retry_schedule_ms=FAST * 4)
    sink = Sink(tmp_path, served.addr, cfg, "--metrics-listen", f"127.0.0.1:{port}")
    try:
        wait_for("reel-sink ready", lambda: ready(port) == 200)
        for i in range(20):
            set_value(K.SetValueRequest(namespace="app", key=f"k{i}", value="1"),
                      timeout=10)
        # Receiver down: nothing delivered, the lag is every event written.
        failing = {"sink": "s", "class": "http_5xx"}
        wait_for("attempts failing", lambda: value(
            scrape(port), "reel_sink_failures_total", **failing) >= 2)
        m = scrape(port)
        assert value(m, "reel_sink_lag", sink="s") >= 20
        assert value(m, "reel_sink_delivered_total", sink="s") == 0
        assert value(m, "reel_sink_reel_up") == 1
        assert value(m, "reel_sink_disabled", sink="s") == 0
        lag_down = value(m, "reel_sink_lag", sink="s")
        set_value(K.SetValueRequest(namespace="app", key="more", value="1"), timeout=10)
        assert value(scrape(port), "reel_sink_lag", sink="s") == lag_down + 1
        # Receiver back: everything goes, and the lag returns to 0.
        down["on"] = False
        wait_for("lag 0", lambda: value(scrape(port), "reel_sink_lag", sink="s") == 0,
                 timeout=60)
        m = scrape(port)
        assert value(m, "reel_sink_delivered_total", sink="s") == 21
        assert value(m, "reel_sink_delivery_seconds_count", sink="s") >= 21
        assert value(m, "reel_sink_dead_letters", sink="s") == 0
        assert sorted(receiver.delivered_revisions()) == receiver.delivered_revisions()
        documented_and_dashboarded(served.metrics_port, port)
    finally:
        code = sink.stop()
        receiver.close()
        ch.close()
    assert code == 0, sink.log()


def test_the_documented_alerts_are_valid_rules(tmp_path):
    """docs/operations.md's alerting rules load in Prometheus (promtool
    check rules), and query only metrics the docs name."""
    from conftest import ROOT
    import re
    with open(os.path.join(ROOT, "docs", "operations.md")) as f:
        doc = f.read()
    block = re.search(r"```yaml\n(.*?)```", doc, re.S)
    assert block, "no ```yaml block of alerting rules in docs/operations.md"
    rules = tmp_path / "rules.yml"
    rules.write_text(block.group(1))
    if PROMTOOL is None:
        pytest.fail("promtool not found: scripts/deps.sh installs Debian's prometheus")
    r = subprocess.run([PROMTOOL, "check", "rules", str(rules)], capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    for name in set(re.findall(r"\b(reel_[a-z_]+)", block.group(1))):
        base = re.sub(r"_(bucket|sum|count)$", "", name)
        assert f"`{base}`" in doc, f"the alerts use {name}, which the docs do not name"


def test_a_standby_reel_sink_reports_no_lag_of_its_own(tmp_path, served):
    """Two reel-sinks on one config: the one holding the consumer reports
    the lag; the one standing by has no lag series (it does not know the
    cursor) and is still ready (it takes over when the holder goes)."""
    check_built()
    receiver = Receiver()
    ch = grpc.insecure_channel(served.addr)
    set_value, _ = kv(ch)
    cfg = webhook_config(tmp_path / "c.json", "s", receiver.url, subjects=["kv.app.>"])
    p1, p2 = free_port(), free_port()
    first = Sink(tmp_path, served.addr, cfg, "--metrics-listen", f"127.0.0.1:{p1}")
    second = None
    try:
        set_value(K.SetValueRequest(namespace="app", key="k", value="1"), timeout=10)
        wait_for("the first delivers", lambda: len(receiver.delivered()) >= 1)
        wait_for("the first's lag 0", lambda: ready(p1) == 200 and value(
            scrape(p1), "reel_sink_lag", sink="s") == 0)
        second = Sink(tmp_path, served.addr, cfg, "--metrics-listen", f"127.0.0.1:{p2}")
        second.wait_log(r"standing by")
        assert ready(p2) == 200
        m = scrape(p2)
        assert value(m, "reel_sink_lag", sink="s") is None
        assert value(m, "reel_sink_delivered_total", sink="s") == 0
        assert value(scrape(p1), "reel_sink_lag", sink="s") == 0
    finally:
        codes = [s.stop() for s in (second, first) if s is not None]
        receiver.close()
        ch.close()
    assert codes == [0] * len(codes)


# ---- The figures of the features merged since: runs, recovery, timers,
# ---- the workspace and token auth ----------------------------------------

def journal(ch):
    from reel.v1 import journal_pb2 as J

    def m(name, req, resp):
        return unary(ch, f"/reel.v1.Journal/{name}", req, resp)
    return J, {
        "begin": m("BeginRun", J.BeginRunRequest, J.Run),
        "get": m("GetRun", J.GetRunRequest, J.Run),
        "next": m("ClaimNextRun", J.ClaimNextRunRequest, J.ClaimNextRunResponse),
        "suspend": m("SuspendRun", J.SuspendRunRequest, J.Run),
        "end": m("EndRun", J.EndRunRequest, J.Run),
    }


def runs(m):
    return {s: value(m, "reel_runs", status=s) for s in
            ("RUNNABLE", "RUNNING", "WAITING", "COMPLETED", "FAILED", "CANCELLED", "PAUSED")}


def recovered(m):
    return {r: value(m, "reel_runs_recovered_total", reason=r) for r in
            ("LEASE_EXPIRED", "BACKOFF_ENDED", "SIGNAL_TIMEOUT", "MAX_ATTEMPTS")}


def await_run(get, J, run_id, status, within=10):
    deadline = time.monotonic() + within
    while True:
        r = get(J.GetRunRequest(run_id=run_id), timeout=5)
        if r.status == status or time.monotonic() > deadline:
            return r
        time.sleep(0.005)


def test_runs_recovery_and_timers_follow_a_known_load(tmp_path):
    """Runs made before a restart are counted at start (with their lease
    timers); a crash loop of three attempts is two expiries, one backoff's
    end and a pause; a suspension's timeout is counted; every timer that
    fired is timed."""
    data = str(tmp_path / "data")
    retry = ["--retry-initial-interval", "200ms", "--retry-multiplier", "2",
             "--retry-max-attempts", "3", "--retry-max-interval", "10s"]
    first = Reeld(data, extra=retry).start()
    ch = first.channel()
    J, j = journal(ch)
    keep = [j["begin"](J.BeginRunRequest(app="keep", user="u", session="s", invocation_id=f"k{i}",
                                          lease_owner="w", lease_ttl_ms=600000), timeout=5)
            for i in range(3)]
    j["end"](J.EndRunRequest(run_id=keep[2].run_id, lease_epoch=keep[2].lease_epoch,
                             status=J.Run.COMPLETED, result="{}"), timeout=5)
    ch.close()
    assert first.stop()[0] == 0

    port = free_port()
    server = Reeld(data, extra=retry + ["--metrics-listen", f"127.0.0.1:{port}"]).start()
    try:
        ch = server.channel()
        J, j = journal(ch)
        m = scrape(port)
        # Counted from what is stored: 2 running, 1 completed; 3 lease
        # timers wait (ending a run leaves its timer, which then fires as a
        # no-op).
        assert runs(m) == {"RUNNABLE": 0, "RUNNING": 2, "WAITING": 0, "COMPLETED": 1,
                           "FAILED": 0, "CANCELLED": 0, "PAUSED": 0}, m
        assert recovered(m) == {"LEASE_EXPIRED": 0, "BACKOFF_ENDED": 0,
                                "SIGNAL_TIMEOUT": 0, "MAX_ATTEMPTS": 0}
        assert value(m, "reel_timers_scheduled") == 3
        fired0 = value(m, "reel_timer_lateness_seconds_count")
        assert fired0 == 0

        # A crash loop: attempt 1 expires (claimable at once), attempt 2
        # expires into a 200 ms backoff whose end commits before a waiting
        # claim gets it, attempt 3 of 3 expires into PAUSED. The first
        # lease is 2 s: the scrape comes before it expires.
        run = j["begin"](J.BeginRunRequest(app="loop", user="u", session="s", invocation_id="l",
                                           lease_owner="w1", lease_ttl_ms=2000), timeout=5)
        m = scrape(port)
        assert runs(m)["RUNNING"] == 3 and value(m, "reel_timers_scheduled") == 4
        for attempt in (1, 2):
            r = await_run(j["get"], J, run.run_id, J.Run.RUNNABLE)
            if attempt == 1:
                assert r.reason == "LEASE_EXPIRED" and r.not_before_ms == 0, r
            else:
                # LEASE_EXPIRED only for the backoff's 200 ms (a slow poll
                # may miss it): either, with the backoff set.
                assert r.reason in ("LEASE_EXPIRED", "BACKOFF_ENDED"), r
                assert r.not_before_ms > 0, r
            c = j["next"](J.ClaimNextRunRequest(app="loop", lease_owner=f"w{attempt + 1}",
                                                lease_ttl_ms=100, wait_ms=5000), timeout=10)
            assert c.found and c.run.attempt == attempt + 1, c
        p = await_run(j["get"], J, run.run_id, J.Run.PAUSED)
        assert p.status == J.Run.PAUSED and p.reason == "MAX_ATTEMPTS", p

        # A suspension that times out: WAITING, then RUNNABLE (2 s: the
        # scrape comes before it).
        s = j["begin"](J.BeginRunRequest(app="wait", user="u", session="s", invocation_id="w",
                                         lease_owner="w", lease_ttl_ms=600000), timeout=5)
        j["suspend"](J.SuspendRunRequest(run_id=s.run_id, lease_epoch=s.lease_epoch,
                                         waiting_on="approval", timeout_ms=2000), timeout=5)
        assert runs(scrape(port))["WAITING"] == 1
        r = await_run(j["get"], J, s.run_id, J.Run.RUNNABLE)
        assert r.reason == "SIGNAL_TIMEOUT", r

        # The timer that made the last change commits with it: a scrape
        # after the run reads RUNNABLE sees every count.
        m = scrape(port)
        assert runs(m) == {"RUNNABLE": 1, "RUNNING": 2, "WAITING": 0, "COMPLETED": 1,
                           "FAILED": 0, "CANCELLED": 0, "PAUSED": 1}, m
        assert recovered(m) == {"LEASE_EXPIRED": 2, "BACKOFF_ENDED": 1,
                                "SIGNAL_TIMEOUT": 1, "MAX_ATTEMPTS": 1}, m
        # Fired: the loop's 3 leases and 1 backoff, the suspension's
        # timeout; left: 4 leases of 600 s (the kept runs' and the
        # suspended run's).
        fired = value(m, "reel_timer_lateness_seconds_count")
        assert fired == 5, m
        assert value(m, "reel_timers_scheduled") == 4
        assert value(m, "reel_timer_lateness_seconds_bucket", le="+Inf") == fired
        # Lateness is small on an idle server: no firing waited seconds.
        assert value(m, "reel_timer_lateness_seconds_sum") < fired * 1.0
        documented_and_dashboarded(port, dashboard=False)
        ch.close()
    finally:
        assert server.stop()[0] == 0, server.log()


def test_deleted_keys_whose_history_was_purged_are_counted(tmp_path):
    port = free_port()
    server = Reeld(str(tmp_path / "data"),
                   extra=["--metrics-listen", f"127.0.0.1:{port}",
                          "--kv-deleted-history-age", "1s"]).start()
    ch = grpc.insecure_channel(server.addr)
    try:
        assert value(scrape(port), "reel_kv_deleted_keys_purged_total") == 0
        setv = unary(ch, "/reel.v1.KV/SetValue", K.SetValueRequest, K.SetValueResponse)
        delv = unary(ch, "/reel.v1.KV/DeleteValue", K.DeleteValueRequest,
                     K.DeleteValueResponse)
        for k in ("a", "b"):
            setv(K.SetValueRequest(namespace="m", key=k, value="1"), timeout=10)
            delv(K.DeleteValueRequest(namespace="m", key=k), timeout=10)
        setv(K.SetValueRequest(namespace="m", key="b", value="2"), timeout=10)  # kept
        wait_for("a purge", lambda: value(scrape(port),
                                          "reel_kv_deleted_keys_purged_total") == 1, 10)
        time.sleep(0.5)  # b's stale entry goes without counting
        assert value(scrape(port), "reel_kv_deleted_keys_purged_total") == 1
        documented_and_dashboarded(port, dashboard=False)
    finally:
        ch.close()
        assert server.stop()[0] == 0, server.log()


def test_workspace_uploads_and_artifact_bytes_follow_the_uploads(served):
    from reel.v1 import workspace_pb2 as P
    ch = grpc.insecure_channel(served.addr)
    put = ch.stream_unary("/reel.v1.Workspace/PutArtifact",
                          request_serializer=P.PutArtifactRequest.SerializeToString,
                          response_deserializer=P.PutArtifactResponse.FromString)
    port = served.metrics_port
    m = scrape(port)
    assert value(m, "reel_workspace_uploads") == 0
    bytes0 = value(m, "reel_artifacts_bytes")
    # An upload held open after its first chunk is staged until it ends.
    gate = threading.Event()
    sent = threading.Event()

    def gen():
        yield P.PutArtifactRequest(header=P.ArtifactHeader(namespace="m", key="held"))
        for _ in range(4):
            yield P.PutArtifactRequest(chunk=os.urandom(1 << 20))
        sent.set()
        deadline = time.monotonic() + 30
        while not gate.is_set() and time.monotonic() < deadline:
            time.sleep(0.05)     # still writing, slowly, while the test reads
            yield P.PutArtifactRequest(chunk=os.urandom(1 << 20))
        for _ in range(4):
            yield P.PutArtifactRequest(chunk=os.urandom(1 << 20))
    fut = put.future(gen(), timeout=60)
    assert sent.wait(10)
    wait_for("a staged upload", lambda: value(scrape(port), "reel_workspace_uploads") == 1, 10)
    # The background write rate follows the commits (auto): while the
    # upload writes and commits come (8 or more a 100 ms tick), it is held
    # at 8 MB/s or more (from 32 MB/s): a limit, never 0 ("no limit").
    # A tick with fewer commits doubles it (nobody to protect), up to "no
    # limit": so two threads commit without a gap (no pause for a scrape),
    # and a reading counts where the commits since the one before came at
    # 8 or more a tick (hundreds here; a slow ASan build on a busy machine
    # has fewer).
    kv = unary(ch, "/reel.v1.KV/SetValue", K.SetValueRequest, K.SetValueResponse)
    stop = threading.Event()

    def writer():
        i = 0
        while not stop.is_set():
            kv(K.SetValueRequest(namespace="m", key=f"during{i % 100}", value="1"), timeout=10)
            i += 1
    writers = [threading.Thread(target=writer) for _ in range(2)]
    readings = []   # (rate, commits a tick since the reading before)
    last = []       # (time, reel_commits_total) of the last scrape

    def reading():
        t = time.monotonic()
        m = scrape(port)
        commits = value(m, "reel_commits_total")
        if last:
            per_tick = (commits - last[-1][1]) / ((t - last[-1][0]) * 10)
            readings.append((value(m, "reel_background_write_rate_bytes"), per_tick))
        last.append((t, commits))
        return readings and readings[-1][0] >= 8e6
    for w in writers:
        w.start()
    try:
        wait_for("a background rate held during the upload", reading, 15)
        # From then on, while the upload goes on writing beside commits,
        # every reading is a limit of 8 MB/s or more, never "no limit".
        first = len(readings)
        for _ in range(5):
            time.sleep(0.1)
            reading()
        counted = [r for r, per_tick in readings[first:] if per_tick >= 8]
        assert len(counted) >= 3, ("too few commits to tell", readings)
        assert all(r >= 8e6 for r in counted), readings
    finally:
        stop.set()
        for w in writers:
            w.join()
        gate.set()
    fut.result()
    wait_for("no staged upload", lambda: value(scrape(port), "reel_workspace_uploads") == 0, 10)
    # 8 MiB or more of random bytes committed: the chunk family holds them.
    m = scrape(port)
    assert value(m, "reel_artifacts_bytes") >= bytes0 + (8 << 20) * 0.9, m
    # Free (0) once a second has passed with no upload and a commit has
    # run the next check.
    time.sleep(1.2)
    for i in range(3):
        kv(K.SetValueRequest(namespace="m", key=f"tick{i}", value="1"), timeout=10)
        time.sleep(0.11)
    assert value(scrape(port), "reel_background_write_rate_bytes") == 0
    ch.close()


def test_auth_failures_are_counted_by_code_and_metrics_carry_no_secret(tmp_path):
    from reel.v1 import admin_pb2
    from test_security import Secured, md
    port = free_port()
    s = Secured(tmp_path, extra=["--metrics-listen", f"127.0.0.1:{port}"])
    try:
        m = scrape(port)
        assert value(m, "reel_auth_failures_total", code="UNAUTHENTICATED") == 0
        assert value(m, "reel_auth_failures_total", code="PERMISSION_DENIED") == 0
        tok, _ = s.create(scopes=["kv:read"])
        set_value, get_value = kv(s.ch)
        for bad in (None, "reel_0000000000000000_" + "x" * 43, "garbage"):
            with pytest.raises(grpc.RpcError) as e:
                get_value(K.GetValueRequest(namespace="n", key="k"),
                          metadata=md(bad) if bad else None, timeout=5)
            assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
        for _ in range(2):
            with pytest.raises(grpc.RpcError) as e:
                set_value(K.SetValueRequest(namespace="n", key="k", value="1"),
                          metadata=md(tok), timeout=5)
            assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED
        get_value(K.GetValueRequest(namespace="n", key="k"), metadata=md(tok), timeout=5)
        m = scrape(port)
        assert value(m, "reel_auth_failures_total", code="UNAUTHENTICATED") == 3
        assert value(m, "reel_auth_failures_total", code="PERMISSION_DENIED") == 2
        text = get(port, "/metrics")[1]
        for t in s.tokens:
            assert t not in text and t[22:] not in text
        assert "reel_" + "0" * 16 not in text
    finally:
        s.close()


@pytest.mark.parametrize("host", ["0.0.0.0", "[::]"])
def test_with_token_auth_metrics_off_loopback_needs_insecure(tmp_path, host):
    port = free_port()
    server = Reeld(str(tmp_path / "data"),
                   extra=["--auth", "token", "--metrics-listen", f"{host}:{port}"])
    server.start(wait=False)
    assert server.proc.wait(timeout=10) == 2
    log = server.log()
    assert "--metrics-listen" in log and "loopback" in log and "--insecure" in log, log
    assert not os.path.exists(tmp_path / "data")  # refused before the data dir
    # --insecure serves it, and says so.
    server = Reeld(str(tmp_path / "data"),
                   extra=["--auth", "token", "--insecure", "--metrics-listen", f"{host}:{port}"])
    server.start()
    try:
        assert get(port, "/healthz") == (200, "ok\n")
        assert "/metrics on" in server.log() and "answers anyone" in server.log()
    finally:
        assert server.stop()[0] == 0, server.log()
    # Without token auth nothing changes (the gRPC port's own rule holds).
    server = Reeld(str(tmp_path / "data2"), extra=["--metrics-listen", f"{host}:{port}"])
    server.start()
    assert server.stop()[0] == 0, server.log()


def test_stalled_streams_together_stay_within_the_backlog_cap(tmp_path):
    """Each stream's queue was bounded (4 MiB) but not all of them
    together: 800 subscribers that never read held 3.2 GB. Past
    --max-stream-backlog-bytes a stream keeps one message and catches up
    from storage once its reader reads: nothing is skipped."""
    port = free_port()
    server = Reeld(str(tmp_path / "data"),
                   extra=["--metrics-listen", f"127.0.0.1:{port}",
                          "--max-stream-backlog-bytes", str(1 << 20)]).start()
    value_json = json.dumps("x" * 30000)
    n, streams = 200, 6
    chans = [grpc.insecure_channel(server.addr, options=[("grpc.use_local_subchannel_pool", 1)])
             for _ in range(streams)]
    try:
        set_value, _ = kv(chans[0])
        for i in range(n):
            set_value(K.SetValueRequest(namespace="m", key=f"k{i % 10}", value=value_json))
        subs = [stream(ch, "/reel.v1.Wal/SubscribeEvents", W.SubscribeEventsRequest,
                       W.Event)(W.SubscribeEventsRequest(from_revision=0), timeout=120)
                for ch in chans]
        time.sleep(3)               # each fills what it may, nobody reads
        queued = value(scrape(port), "reel_stream_queue_bytes")
        # The cap, plus the one message each stream may always hold; and
        # the gauge is live: 6 MB of events wait, so the queues hold
        # several 30 KB events (the rest of the cap is in flight, in the
        # streams' flow-control windows).
        assert 4 * 30000 <= queued <= (1 << 20) + streams * 64 * 1024, queued
        for call in subs:
            revs = []
            for ev in call:
                if ev.type == W.Event.Type.Value("PROGRESS"):
                    continue
                revs.append(ev.revision)
                if len(revs) == n:
                    break
            call.cancel()
            assert revs == list(range(1, n + 1))
    finally:
        for ch in chans:
            ch.close()
        code, _ = server.stop()
        assert code == 0, server.log()


def test_stalled_streams_of_large_messages_stay_within_the_cap_and_others_go_on(tmp_path):
    """A stream could always hold one message past the cap, and one more in
    flight that was not counted: 1,200 stalled watches of a 1 MiB value
    held 2.4 GB of queue (3.8 GB of RSS) with a 16 MiB cap. Now queued and
    in-flight bytes together stay within the cap; a stream refused for
    room waits for it, and a stream whose reader took nothing for the
    keepalive time and timeout while others waited is cancelled, so
    readers that stopped cannot keep the others out."""
    port = free_port()
    server = Reeld(str(tmp_path / "data"),
                   extra=["--metrics-listen", f"127.0.0.1:{port}",
                          "--max-stream-backlog-bytes", str(1 << 20),
                          "--keepalive-time", "1s", "--keepalive-timeout", "1s"]).start()
    big = json.dumps("v" * 300000)
    # No BDP probing: the stalled clients' windows stay at 64 KiB, so a
    # message past that stays in flight on reeld's side.
    opts = [("grpc.http2.bdp_probe", 0), ("grpc.use_local_subchannel_pool", 1)]
    chans = [grpc.insecure_channel(server.addr, options=opts) for _ in range(4)]
    try:
        set_value, _ = kv(chans[0])
        set_value(K.SetValueRequest(namespace="m", key="big", value=big))
        watch = [stream(ch, "/reel.v1.KV/WatchValue", K.WatchValueRequest, K.ValueEvent)
                 for ch in chans]
        every = K.WatchValueRequest(namespace="m", key="big",
                                    start=K.WatchValueRequest.FROM_VERSION, from_version=0)
        stalled = [watch[i % 4](every, timeout=120) for i in range(8)]
        for _ in range(4):
            set_value(K.SetValueRequest(namespace="m", key="big", value=big))
        time.sleep(1)
        queued = value(scrape(port), "reel_stream_queue_bytes")
        # The cap, and at most one message past it (the first one taken).
        assert queued <= (1 << 20) + 700000, queued
        # A reader that reads: its watch catches up from storage as room
        # comes back (the stalled streams are cancelled after 2 s).
        got = []
        for ev in watch[0](every, timeout=60):
            if ev.type == K.ValueEvent.PUT:
                got.append(ev.version)
                if len(got) == 5:
                    break
        assert got == [1, 2, 3, 4, 5]
        ended = 0
        for call in stalled:
            try:
                for i, _ in enumerate(call):
                    if i == 5:              # a stream never cancelled: all five came
                        break
            except grpc.RpcError as e:
                assert e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, e
                assert "read nothing of its last message" in e.details()
                ended += 1
            call.cancel()
        assert ended > 0
        assert "whose readers took nothing" in server.log()
    finally:
        for ch in chans:
            ch.close()
        code, _ = server.stop()
        assert code == 0, server.log()


def test_connections_that_trickle_headers_do_not_shut_healthz_out(served):
    """300 connections each sending a header byte a second held every slot
    for as long as they went on (a byte restarts the idle timeout), so an
    orchestrator's liveness probe failed and restarted reeld. A connection
    that has not finished its request's headers 10 s after it opened is
    shut."""
    import socket
    port = served.metrics_port
    socks, stop = [], threading.Event()
    for _ in range(300):
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
        socks.append(s)

    def trickle():
        while not stop.wait(0.5):
            for s in socks:
                try:
                    s.send(b"X")
                except OSError:
                    pass
    t = threading.Thread(target=trickle)
    t.start()
    try:
        ok, t0 = None, time.monotonic()
        while ok is None and time.monotonic() - t0 < 25:
            try:
                if get(port, "/healthz", timeout=2) == (200, "ok\n"):
                    ok = time.monotonic() - t0
            except OSError:
                pass
        assert ok is not None, "no /healthz answer in 25 s"
        print(f"/healthz answered after {ok:.1f} s")
    finally:
        stop.set()
        t.join()
        for s in socks:
            s.close()


def test_idle_connections_do_not_shut_healthz_out(served):
    """32 connections that sent nothing, reopened as they timed out, held
    every slot of the metrics port: probes of /healthz timed out."""
    import socket
    idle = [socket.create_connection(("127.0.0.1", served.metrics_port)) for _ in range(64)]
    try:
        time.sleep(0.3)
        for _ in range(3):
            assert get(served.metrics_port, "/healthz", timeout=3) == (200, "ok\n")
    finally:
        for s in idle:
            s.close()
