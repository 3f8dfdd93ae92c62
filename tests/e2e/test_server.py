"""reeld as a server: health, errors, streams, signals, flags, data dirs."""
import os
import signal
import subprocess
import threading
import time

import grpc
import pytest

import health_pb2
from reel.v1 import admin_pb2
from reel.v1 import journal_pb2
from reel.v1 import kv_pb2
from conftest import REELD, Reeld, free_port, reelctl, sanitized, stream, unary

# The data dir format this reeld writes (store/store.h).
FORMAT = 7


def check(channel):
    return unary(channel, "/grpc.health.v1.Health/Check",
                 health_pb2.HealthCheckRequest, health_pb2.HealthCheckResponse)


def status(channel):
    return unary(channel, "/reel.v1.Admin/GetStatus",
                 admin_pb2.GetStatusRequest, admin_pb2.GetStatusResponse)


def test_health_answers_serving_within_one_second_of_start(tmp_path):
    server = Reeld(str(tmp_path / "data")).start()
    try:
        # 0.2-0.5 s here; a sanitized build starts 2-5 times slower.
        bound = 5.0 if sanitized() else 1.0
        assert server.ready_after < bound, f"took {server.ready_after:.3f}s"
    finally:
        assert server.stop()[0] == 0


def test_health_check_names_reel_services(channel):
    """Every service the protos define, so that a probe of any is served."""
    from reel.v1 import signals_pb2, wal_pb2, workspace_pb2
    services = [sv.full_name
                for m in (admin_pb2, journal_pb2, kv_pb2, signals_pb2, wal_pb2,
                          workspace_pb2)
                for sv in m.DESCRIPTOR.services_by_name.values()]
    assert "reel.v1.Workspace" in services
    for name in ["", "grpc.health.v1.Health"] + services:
        r = check(channel)(health_pb2.HealthCheckRequest(service=name), timeout=5)
        assert r.status == health_pb2.HealthCheckResponse.SERVING, name


def test_health_watches_are_bounded_on_their_own(channel):
    """Watch needs no token: 1,024 open at most, then RESOURCE_EXHAUSTED
    saying so, and room again once one ends."""
    watch = stream(channel, "/grpc.health.v1.Health/Watch",
                   health_pb2.HealthCheckRequest, health_pb2.HealthCheckResponse)
    open_ = []
    try:
        for _ in range(1024):
            w = watch(health_pb2.HealthCheckRequest(), timeout=60)
            assert next(w).status == health_pb2.HealthCheckResponse.SERVING
            open_.append(w)
        w = watch(health_pb2.HealthCheckRequest(), timeout=60)
        with pytest.raises(grpc.RpcError) as e:
            next(w)
        assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "1024 Watch streams" in e.value.details()
        open_.pop().cancel()
        deadline = time.monotonic() + 10
        while True:   # the cancelled one leaves once reeld hears of it
            w = watch(health_pb2.HealthCheckRequest(), timeout=60)
            try:
                assert next(w).status == health_pb2.HealthCheckResponse.SERVING
                open_.append(w)
                break
            except grpc.RpcError as e:
                assert e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                assert time.monotonic() < deadline
                time.sleep(0.05)
    finally:
        for w in open_:
            w.cancel()


def test_health_check_of_unknown_service_is_not_found(channel):
    with pytest.raises(grpc.RpcError) as e:
        check(channel)(health_pb2.HealthCheckRequest(service="reel.v1.Nope"), timeout=5)
    assert e.value.code() == grpc.StatusCode.NOT_FOUND
    assert "reel.v1.Nope" in e.value.details()


def test_health_watch_of_unknown_service_says_so_and_stays_open(channel):
    """The protocol's answer for Watch: SERVICE_UNKNOWN, the call kept open
    (not ended with NOT_FOUND as Check is); a known service beside it still
    answers SERVING."""
    watch = stream(channel, "/grpc.health.v1.Health/Watch",
                   health_pb2.HealthCheckRequest, health_pb2.HealthCheckResponse)
    w = watch(health_pb2.HealthCheckRequest(service="reel.v1.Nope"), timeout=30)
    try:
        assert next(w).status == health_pb2.HealthCheckResponse.SERVICE_UNKNOWN
        time.sleep(0.5)
        assert w.is_active()
        known = watch(health_pb2.HealthCheckRequest(service="reel.v1.KV"),
                      timeout=30)
        assert next(known).status == health_pb2.HealthCheckResponse.SERVING
        known.cancel()
    finally:
        w.cancel()


def test_unknown_method_is_unimplemented(channel):
    for method in ("/reel.v1.Nope/Do", "/grpc.health.v1.Health/Nope", "/x"):
        with pytest.raises(grpc.RpcError) as e:
            channel.unary_unary(method)(b"", timeout=5)
        assert e.value.code() == grpc.StatusCode.UNIMPLEMENTED
        assert method in e.value.details()


def test_malformed_request_is_invalid_argument_naming_the_message(channel):
    raw = channel.unary_unary("/grpc.health.v1.Health/Check")
    with pytest.raises(grpc.RpcError) as e:
        raw(b"\xff\xff\xff\xff", timeout=5)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "HealthCheckRequest" in e.value.details()
    # The server is unharmed.
    assert check(channel)(health_pb2.HealthCheckRequest(), timeout=5).status == 1


def test_oversized_request_is_resource_exhausted(channel):
    raw = channel.unary_unary("/grpc.health.v1.Health/Check")
    big = health_pb2.HealthCheckRequest(service="x" * (5 << 20)).SerializeToString()
    with pytest.raises(grpc.RpcError) as e:
        raw(big, timeout=10)
    assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert check(channel)(health_pb2.HealthCheckRequest(), timeout=5).status == 1


def test_status_reports_version_format_and_data_dir(reeld, channel):
    r = status(channel)(admin_pb2.GetStatusRequest(), timeout=5)
    assert r.version
    assert r.format_version == FORMAT
    assert r.revision == 0
    assert os.path.samefile(r.data_dir, reeld.data_dir)
    assert r.writable
    assert 0 <= r.uptime_ms < 60000


def test_sigterm_exits_zero_within_five_seconds(reeld):
    code, took = reeld.stop(signal.SIGTERM)
    assert code == 0, reeld.log()
    assert took < 5.0
    assert "stopped cleanly" in reeld.log()


def test_health_watch_hears_not_serving_when_reeld_shuts_down(reeld, channel):
    watch = stream(channel, "/grpc.health.v1.Health/Watch",
                   health_pb2.HealthCheckRequest, health_pb2.HealthCheckResponse)
    call = watch(health_pb2.HealthCheckRequest(), timeout=30)
    assert next(call).status == health_pb2.HealthCheckResponse.SERVING
    reeld.proc.send_signal(signal.SIGTERM)
    assert next(call).status == health_pb2.HealthCheckResponse.NOT_SERVING
    with pytest.raises(grpc.RpcError) as e:
        next(call)
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE
    assert reeld.proc.wait(timeout=10) == 0


def test_sigint_exits_zero(reeld):
    code, took = reeld.stop(signal.SIGINT)
    assert code == 0, reeld.log()
    assert took < 5.0


def test_open_stream_ends_unavailable_on_sigterm(reeld, channel):
    watch = stream(channel, "/grpc.health.v1.Health/Watch",
                   health_pb2.HealthCheckRequest, health_pb2.HealthCheckResponse)
    call = watch(health_pb2.HealthCheckRequest())
    first = next(call)
    assert first.status == health_pb2.HealthCheckResponse.SERVING
    code, took = reeld.stop(signal.SIGTERM)
    assert code == 0, reeld.log()
    assert took < 5.0
    with pytest.raises(grpc.RpcError) as e:
        for m in call:  # a health Watch hears NOT_SERVING before the end
            assert m.status == health_pb2.HealthCheckResponse.NOT_SERVING
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "shutting down" in e.value.details()


def test_clients_vanishing_mid_stream_leave_the_server_serving(reeld):
    # 50 clients open a stream on their own connection and drop it without
    # cancelling; then 50 cancel politely. The server keeps serving.
    watchers = []
    for i in range(100):
        ch = grpc.insecure_channel(reeld.addr,
                                   options=[("grpc.use_local_subchannel_pool", 1)])
        w = stream(ch, "/grpc.health.v1.Health/Watch",
                   health_pb2.HealthCheckRequest, health_pb2.HealthCheckResponse)
        call = w(health_pb2.HealthCheckRequest())
        assert next(call).status == health_pb2.HealthCheckResponse.SERVING
        watchers.append((ch, call))
    for i, (ch, call) in enumerate(watchers):
        if i % 2:
            call.cancel()
        ch.close()
    ch = grpc.insecure_channel(reeld.addr)
    try:
        for _ in range(20):
            assert check(ch)(health_pb2.HealthCheckRequest(), timeout=5).status == 1
    finally:
        ch.close()


def test_deadline_passing_mid_stream_ends_it_for_the_client(channel):
    # The channel connected first, so the deadline is the stream's own; 2 s
    # for its first message to come (slow under ASan on a busy machine).
    assert check(channel)(health_pb2.HealthCheckRequest(), timeout=5).status == 1
    watch = stream(channel, "/grpc.health.v1.Health/Watch",
                   health_pb2.HealthCheckRequest, health_pb2.HealthCheckResponse)
    call = watch(health_pb2.HealthCheckRequest(), timeout=2)
    assert next(call).status == 1
    with pytest.raises(grpc.RpcError) as e:
        next(call)
    assert e.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert check(channel)(health_pb2.HealthCheckRequest(), timeout=5).status == 1


def test_concurrent_calls_from_many_threads(channel):
    errors = []

    def worker():
        try:
            c = check(channel)
            for _ in range(50):
                assert c(health_pb2.HealthCheckRequest(), timeout=5).status == 1
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=worker) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_restart_on_the_same_data_dir(tmp_path):
    data = str(tmp_path / "data")
    a = Reeld(data).start()
    assert a.stop()[0] == 0
    b = Reeld(data).start()
    try:
        ch = grpc.insecure_channel(b.addr)
        assert status(ch)(admin_pb2.GetStatusRequest(), timeout=5).format_version == FORMAT
        ch.close()
    finally:
        assert b.stop()[0] == 0


def test_second_reeld_on_the_same_data_dir_is_refused(reeld):
    other = Reeld(reeld.data_dir).start(wait=False)
    code = other.proc.wait(timeout=10)
    assert code != 0
    assert "in use by another process" in other.log()


def test_two_reelds_started_at_once_on_a_new_data_dir(tmp_path):
    # Both make the dir and look for FORMAT at the same moment: one serves,
    # the other is told the dir is in use (not that FORMAT vanished).
    for i in range(5):
        data = str(tmp_path / f"data{i}")
        pair = [Reeld(data).start(wait=False), Reeld(data).start(wait=False)]
        try:
            deadline = time.monotonic() + 15
            while sum(r.proc.poll() is not None for r in pair) == 0:
                assert time.monotonic() < deadline, [r.log() for r in pair]
                time.sleep(0.02)
            lost = next(r for r in pair if r.proc.poll() is not None)
            won = next(r for r in pair if r is not lost)
            assert lost.proc.returncode != 0, lost.log()
            assert "in use by another process" in lost.log(), lost.log()
            assert won.proc.poll() is None, won.log()
        finally:
            for r in pair:
                r.stop()


def test_data_dir_of_another_format_is_refused_untouched(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "FORMAT").write_text("reel-format 99\n")
    before = sorted(os.listdir(data))
    server = Reeld(str(data)).start(wait=False)
    assert server.proc.wait(timeout=10) == 1
    assert "format 99" in server.log() and "written by a newer reel" in server.log()
    assert sorted(os.listdir(data)) == before


@pytest.mark.parametrize("older", [1, 2, 3, 4, 5, 6])
def test_a_data_dir_of_an_older_format_is_upgraded_and_keeps_its_data(tmp_path, older):
    """Formats 1 (every data dir before the format was raised), 2 (before
    the index of active runs by app), 3 (before the index of every run by
    app), 4 (before the KV's tombstones were kept apart), 5 (before the
    indexes of runs by status) and 6 (before the index of a session's runs
    not ended) open, keep
    every record, and are marked with this one once reeld has started, so
    that older reelds, which check the FORMAT file before anything, refuse
    the dir rather than misread what this one wrote."""
    data = tmp_path / "data"
    a = Reeld(str(data)).start()
    ch = a.channel()
    setv = unary(ch, "/reel.v1.KV/SetValue", kv_pb2.SetValueRequest, kv_pb2.SetValueResponse)
    setv(kv_pb2.SetValueRequest(namespace="ns", key="k", value='{"a":1}'), timeout=5)
    setv(kv_pb2.SetValueRequest(namespace="ns", key="gone", value="1"), timeout=5)
    unary(ch, "/reel.v1.KV/DeleteValue", kv_pb2.DeleteValueRequest,
          kv_pb2.DeleteValueResponse)(kv_pb2.DeleteValueRequest(namespace="ns", key="gone"),
                                      timeout=5)
    begin = unary(ch, "/reel.v1.Journal/BeginRun", journal_pb2.BeginRunRequest, journal_pb2.Run)
    run = begin(journal_pb2.BeginRunRequest(app="shop", user="u", session="s",
                                            invocation_id="i1", lease_owner="w"), timeout=5)
    ch.close()
    assert a.stop()[0] == 0
    (data / "FORMAT").write_text(f"reel-format {older}\n")
    b = Reeld(str(data)).start()
    try:
        assert f"upgraded from format {older} to {FORMAT}" in b.log(), b.log()
        assert (data / "FORMAT").read_text() == f"reel-format {FORMAT}\n"
        ch = b.channel()
        r = status(ch)(admin_pb2.GetStatusRequest(), timeout=5)
        assert r.format_version == FORMAT
        runs = unary(ch, "/reel.v1.Journal/ListRuns", journal_pb2.ListRunsRequest,
                     journal_pb2.ListRunsResponse)(journal_pb2.ListRunsRequest(app="shop"),
                                                   timeout=5).runs
        assert [x.run_id for x in runs] == [run.run_id]
        for st, want in ((journal_pb2.Run.RUNNING, [run.run_id]),
                         (journal_pb2.Run.COMPLETED, [])):
            assert [x.run_id for x in unary(
                ch, "/reel.v1.Journal/ListRuns", journal_pb2.ListRunsRequest,
                journal_pb2.ListRunsResponse)(journal_pb2.ListRunsRequest(status=st),
                                              timeout=5).runs] == want
        got = unary(ch, "/reel.v1.KV/GetValue", kv_pb2.GetValueRequest,
                    kv_pb2.GetValueResponse)(kv_pb2.GetValueRequest(namespace="ns", key="k"),
                                             timeout=5)
        assert got.found and got.entry.value == '{"a":1}' and got.entry.version == 1
        listed = unary(ch, "/reel.v1.KV/ListValues", kv_pb2.ListValuesRequest,
                       kv_pb2.ListValuesResponse)
        assert [e.key for e in listed(kv_pb2.ListValuesRequest(namespace="ns"),
                                      timeout=5).entries] == ["k"]
        assert [(e.key, e.deleted, e.version) for e in listed(
            kv_pb2.ListValuesRequest(namespace="ns", include_deleted=True),
            timeout=5).entries] == [("gone", True, 2), ("k", False, 1)]
        setv = unary(ch, "/reel.v1.KV/SetValue", kv_pb2.SetValueRequest,
                     kv_pb2.SetValueResponse)
        assert setv(kv_pb2.SetValueRequest(namespace="ns", key="gone", value="3"),
                    timeout=5).entry.version == 3
        ch.close()
    finally:
        assert b.stop()[0] == 0
    c = Reeld(str(data)).start()             # once: nothing left to upgrade
    try:
        assert "upgraded" not in c.log(), c.log()
    finally:
        assert c.stop()[0] == 0


def test_listen_address_in_use_fails_with_a_message(reeld, tmp_path):
    other = Reeld(str(tmp_path / "other"), port=reeld.port).start(wait=False)
    assert other.proc.wait(timeout=10) == 1
    assert "cannot listen on" in other.log()
    # ... before the data dir was made.
    assert not (tmp_path / "other").exists()


def test_a_bad_listen_address_fails_before_the_data_dir_is_touched(tmp_path):
    data = tmp_path / "data"
    log = tmp_path / "log"
    with open(log, "wb") as f:
        proc = subprocess.run([REELD, "--data-dir", str(data), "--listen",
                               "no-such-host.invalid:1"],
                              stdout=f, stderr=subprocess.STDOUT, timeout=30)
    assert proc.returncode == 1
    assert "cannot listen on no-such-host.invalid:1" in log.read_text()
    assert not data.exists()
    # Not a port at all, or a host no name can be (a space in it): refused
    # with the flags (exit 2), before as well.
    for bad in ("no-such-host:x", "no such host:1"):
        with open(log, "wb") as f:
            proc = subprocess.run([REELD, "--data-dir", str(data), "--listen", bad],
                                  stdout=f, stderr=subprocess.STDOUT, timeout=30)
        assert proc.returncode == 2
        assert f'--listen: "{bad}" is not HOST, HOST:PORT' in log.read_text()
        assert not data.exists()
    # An existing data dir is left exactly as it was.
    a = Reeld(str(data)).start()
    assert a.stop()[0] == 0
    before = sorted((n, (data / n).stat().st_mtime_ns) for n in os.listdir(data))
    with open(log, "wb") as f:
        proc = subprocess.run([REELD, "--data-dir", str(data), "--listen", "256.1.1.1:1"],
                              stdout=f, stderr=subprocess.STDOUT, timeout=30)
    assert proc.returncode == 1
    assert sorted((n, (data / n).stat().st_mtime_ns) for n in os.listdir(data)) == before


def _tree(d):
    return sorted((n, (d / n).read_bytes()) for n in os.listdir(d))


@pytest.mark.parametrize("files", [
    {"notes.txt": b"mine\n", "000099.sst": b"not a table", "MANIFEST-000777": b"not mine"},
    {"000001.log": b""},
    {".hidden": b"x"},
])
def test_a_directory_holding_other_files_is_refused_untouched(tmp_path, files):
    data = tmp_path / "data"
    data.mkdir()
    for name, body in files.items():
        (data / name).write_bytes(body)
    before = _tree(data)
    server = Reeld(str(data)).start(wait=False)
    assert server.proc.wait(timeout=10) == 1
    log = server.log()
    assert "is not empty and is not a reel data dir" in log, log
    assert f'"{sorted(files)[0]}"' in log or any(f'"{n}"' in log for n in files), log
    assert _tree(data) == before


def test_an_empty_directory_becomes_a_data_dir(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    a = Reeld(str(data)).start()
    assert a.stop()[0] == 0
    assert (data / "FORMAT").read_text() == f"reel-format {FORMAT}\n"


def test_environment_variables_configure_reeld(tmp_path):
    port = free_port()
    env = dict(os.environ, REEL_DATA_DIR=str(tmp_path / "envdata"),
               REEL_LISTEN=f"127.0.0.1:{port}", REEL_LOG_LEVEL="debug")
    # stderr to a file: a pipe nobody reads until the end would block reeld
    # once its debug lines fill the pipe's buffer
    log_path = tmp_path / "stderr.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([REELD], env=env, stderr=log)
    try:
        deadline = time.monotonic() + 10
        while True:
            r = reelctl(f"127.0.0.1:{port}", "health", "--timeout", "1s")
            if r.returncode == 0:
                break
            assert time.monotonic() < deadline, r.stderr
            time.sleep(0.05)
        assert os.path.exists(tmp_path / "envdata" / "FORMAT")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)
    assert proc.returncode == 0
    # One line per event, each with a level (RocksDB's own lines included).
    lines = [l for l in log_path.read_text().splitlines() if l]
    assert any(" rocksdb: " in l for l in lines)
    assert lines and all(" INFO " in l or " DEBUG " in l or " WARN " in l for l in lines)


def test_help_version_and_bad_flags():
    out = subprocess.run([REELD, "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    for flag in ("--data-dir", "--listen", "--log-level", "REEL_DATA_DIR"):
        assert flag in out.stdout
    out = subprocess.run([REELD, "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.startswith("reeld ")
    out = subprocess.run([REELD, "--log-level", "loud"], capture_output=True, text=True)
    assert out.returncode == 2 and "--log-level" in out.stderr
    out = subprocess.run([REELD, "--threads", "0"], capture_output=True, text=True)
    assert out.returncode == 2 and "--threads" in out.stderr


def test_reelctl_health_exit_codes(reeld):
    r = reelctl(reeld.addr, "health")
    assert r.returncode == 0 and r.stdout.strip() == "SERVING"
    r = reelctl(reeld.addr, "health", "--json")
    assert r.returncode == 0 and r.stdout.strip() == '{"status":"SERVING"}'
    r = reelctl(reeld.addr, "health", "reel.v1.Nope")
    assert r.returncode == 1 and "NOT_FOUND" in r.stderr
    r = reelctl(reeld.addr, "status", "--json")
    assert r.returncode == 0 and f'"format_version":{FORMAT}' in r.stdout
    # Every field of GetStatus: the await cap too (5m by default).
    assert '"signal_max_wait_ms":300000' in r.stdout, r.stdout
    r = reelctl(reeld.addr, "status")
    assert "signal wait:  at most 300s" in r.stdout, r.stdout
    r = reelctl(reeld.addr, "frobnicate")
    assert r.returncode == 2
    assert reeld.stop()[0] == 0
    r = reelctl(reeld.addr, "health", "--timeout", "2s")
    assert r.returncode == 1 and "UNAVAILABLE" in r.stderr


def test_open_calls_are_capped_for_everyone_and_health_is_still_served(tmp_path):
    """--max-calls: every client's open calls together, without auth too
    (each idle stream holds memory while it lasts: one client could open
    streams without end on one connection). Past it a new call, from any
    client, is RESOURCE_EXHAUSTED naming the flag; health checks are still
    answered; once a stream is closed its place comes back."""
    server = Reeld(str(tmp_path / "data"), extra=["--max-calls", "3"]).start()
    ch = grpc.insecure_channel(server.addr)
    other = grpc.insecure_channel(server.addr, options=[("grpc.use_local_subchannel_pool", 1)])
    watch = stream(ch, "/reel.v1.KV/WatchValue", kv_pb2.WatchValueRequest, kv_pb2.ValueEvent)
    get_value = unary(other, "/reel.v1.KV/GetValue", kv_pb2.GetValueRequest,
                      kv_pb2.GetValueResponse)
    check = unary(other, "/grpc.health.v1.Health/Check", health_pb2.HealthCheckRequest,
                  health_pb2.HealthCheckResponse)
    streams = []
    try:
        for i in range(3):
            w = watch(kv_pb2.WatchValueRequest(namespace="a", key=f"k{i}"), timeout=60)
            streams.append(w)
            next(w)  # the watch is open: its BOOTSTRAP_DONE came
        with pytest.raises(grpc.RpcError) as e:
            get_value(kv_pb2.GetValueRequest(namespace="a", key="k"), timeout=10)
        assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert e.value.details() == ("reeld has 3 calls open, at most 3 (--max-calls): end "
                                     "streams or long polls no longer read"), e.value.details()
        r = reelctl(server.addr, "kv", "get", "a", "k")
        assert r.returncode == 1 and "--max-calls" in r.stderr, r
        assert check(health_pb2.HealthCheckRequest(), timeout=10).status == \
            health_pb2.HealthCheckResponse.SERVING
        streams.pop().cancel()

        def served():
            try:
                get_value(kv_pb2.GetValueRequest(namespace="a", key="k"), timeout=10)
                return True
            except grpc.RpcError as e:
                assert e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, e
                return False
        deadline = time.monotonic() + 10
        while not served():
            assert time.monotonic() < deadline, "the closed stream's place never came back"
            time.sleep(0.05)
    finally:
        for w in streams:
            w.cancel()
        ch.close()
        other.close()
        assert server.stop()[0] == 0
