"""Faults: a full disk, a corrupted data dir, and clients that vanish."""
import collections
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time

import grpc
import pytest

import health_pb2 as H
from reel.v1 import kv_pb2 as K
from reel.v1 import admin_pb2
from conftest import Reeld, as_root, reelctl, sanitized, small_tmpfs, stream, unary


def kv_calls(ch):
    return (unary(ch, "/reel.v1.KV/SetValue", K.SetValueRequest, K.SetValueResponse),
            unary(ch, "/reel.v1.KV/GetValue", K.GetValueRequest, K.GetValueResponse))


def status(ch):
    return unary(ch, "/reel.v1.Admin/GetStatus", admin_pb2.GetStatusRequest,
                 admin_pb2.GetStatusResponse)(admin_pb2.GetStatusRequest(), timeout=5)


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


# --------------------------------------------------------------------------
# a full disk


@pytest.fixture
def small_disk(tmp_path):
    yield from small_tmpfs(tmp_path / "mnt", "48m")


def health_calls(ch):
    return (unary(ch, "/grpc.health.v1.Health/Check", H.HealthCheckRequest,
                  H.HealthCheckResponse),
            stream(ch, "/grpc.health.v1.Health/Watch", H.HealthCheckRequest,
                   H.HealthCheckResponse))


def fill(set_value):
    """Writes 1 KB values, 32 in flight, until one is refused: ({key:
    version} of those acknowledged, the refusal), or (..., None)."""
    acked, refused = {}, None
    value = json.dumps("x" * 1000)
    pending = collections.deque()
    for i in range(200000):
        req = K.SetValueRequest(namespace="d", key=f"k{i}", value=value)
        pending.append((req.key, set_value.future(req, timeout=30)))
        if len(pending) >= 32:
            key, fut = pending.popleft()
            try:
                acked[key] = fut.result().entry.version
            except grpc.RpcError as e:
                refused = e
                break
    for key, fut in pending:
        try:
            acked[key] = fut.result().entry.version
        except grpc.RpcError as e:
            refused = refused or e
    return acked, refused


def test_a_full_disk_refuses_writes_keeps_reads_and_loses_nothing(small_disk):
    """With no floor of free space kept, the write that meets the full disk
    fails and stops every write (fail-stop) until a restart."""
    data = str(small_disk / "data")
    server = Reeld(data, extra=["--min-free-disk-bytes", "0"]).start()
    ch = grpc.insecure_channel(server.addr)
    set_value, get_value = kv_calls(ch)
    check, watch = health_calls(ch)
    # A health Watch open while the disk fills hears NOT_SERVING as it
    # happens, not at its next probe.
    heard = []
    probe = watch(H.HealthCheckRequest(), timeout=300)

    def listen():
        try:
            for m in probe:
                heard.append(m.status)
        except grpc.RpcError:
            pass  # cancelled at the end
    threading.Thread(target=listen, daemon=True).start()
    try:
        acked, refused = fill(set_value)
        assert refused is not None, "the disk never filled"
        print(f"disk full after {len(acked)} acknowledged writes: "
              f"{refused.code().name}: {refused.details()}")
        # reeld's own account, should the answer not be the expected one
        why = f"{refused.details()}; reeld exit code {server.proc.poll()}; log:\n" + \
            server.log()[-4000:]
        assert refused.code() in (grpc.StatusCode.UNAVAILABLE,
                                  grpc.StatusCode.RESOURCE_EXHAUSTED), why
        assert "space" in refused.details().lower(), why
        assert len(acked) > 100
        # Writes stay refused, reads keep working, health says so.
        with pytest.raises(grpc.RpcError) as e:
            set_value(K.SetValueRequest(namespace="d", key="after", value="1"), timeout=10)
        assert e.value.code() == grpc.StatusCode.UNAVAILABLE
        some = next(iter(acked))
        assert get_value(K.GetValueRequest(namespace="d", key=some), timeout=10).found
        st = status(ch)
        assert not st.writable and "space" in st.write_error.lower()
        # Health probes after the failure answer NOT_SERVING and reeld stays
        # up (a probe used to crash it), its reads still working.
        NOT_SERVING = H.HealthCheckResponse.NOT_SERVING
        assert check(H.HealthCheckRequest(), timeout=10).status == NOT_SERVING
        assert next(watch(H.HealthCheckRequest(), timeout=10)).status == NOT_SERVING
        r = reelctl(server.addr, "health")
        assert r.returncode == 1 and "NOT_SERVING" in (r.stdout + r.stderr), r
        deadline = time.monotonic() + 10
        while heard[-1:] != [NOT_SERVING] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert heard == [H.HealthCheckResponse.SERVING, NOT_SERVING], heard
        assert server.proc.poll() is None, server.log()[-4000:]
        assert get_value(K.GetValueRequest(namespace="d", key=some), timeout=10).found
    finally:
        probe.cancel()
        ch.close()
        code, _ = server.stop()
    print(f"reeld exited {code} on SIGTERM with the disk full")
    assert code == 0, server.log()
    # Free space; a restart recovers every acknowledged write and accepts more.
    subprocess.run(as_root(["mount", "-o", "remount,size=512m", str(small_disk)]), check=True)
    server = Reeld(data).start()
    ch = grpc.insecure_channel(server.addr)
    set_value, get_value = kv_calls(ch)
    try:
        missing = [k for k in acked
                   if not get_value(K.GetValueRequest(namespace="d", key=k), timeout=10).found]
        assert missing == [], f"{len(missing)} acknowledged writes lost, e.g. {missing[:3]}"
        assert set_value(K.SetValueRequest(namespace="d", key="after", value="1"),
                         timeout=10).entry.version == 1
    finally:
        ch.close()
        assert server.stop()[0] == 0


def test_a_disk_below_its_floor_refuses_new_data_until_space_is_freed(small_disk):
    """--min-free-disk-bytes: as the disk fills, writes that add data get
    RESOURCE_EXHAUSTED naming the free bytes and the flag, before any write
    fails. Nothing is half-written, the store never stops: reads, deletes
    and health go on, an upload is refused too, and once space is freed
    writes are taken again without a restart."""
    from conftest import free_port

    data = str(small_disk / "data")
    port = free_port()
    server = Reeld(data, extra=["--min-free-disk-bytes", str(16 << 20),
                                "--metrics-listen", f"127.0.0.1:{port}"]).start()

    def gauge(name):
        import urllib.request
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            text = r.read().decode()
        return float(next(line.split()[1] for line in text.splitlines()
                          if line.startswith(name + " ")))
    ch = grpc.insecure_channel(server.addr)
    set_value, get_value = kv_calls(ch)
    delete_value = unary(ch, "/reel.v1.KV/DeleteValue", K.DeleteValueRequest,
                         K.DeleteValueResponse)
    check = health_calls(ch)[0]
    try:
        acked, refused = fill(set_value)
        assert refused is not None, "the disk never reached its floor"
        why = f"{refused.details()}; log:\n" + server.log()[-4000:]
        assert refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, why
        assert re.fullmatch(
            r"the data dir's disk has \d+ bytes free, less than the 16777216 kept free "
            r"\(--min-free-disk-bytes\): writes that add data are refused until space is "
            r"freed; reads and deletes go on", refused.details()), why
        assert len(acked) > 100, why
        # The floor came before the disk's end: the store never failed.
        st = status(ch)
        assert st.writable, st.write_error
        assert gauge("reel_disk_low") == 1
        assert gauge("reel_disk_free_bytes") < 16 << 20
        assert st.disk_low and 0 < st.disk_free_bytes < 16 << 20, st
        r = reelctl(server.addr, "status")
        assert r.returncode == 0 and re.search(
            r"\ndisk: +\d+\.\d MiB free, below --min-free-disk-bytes: writes that add "
            r"data are refused\n", r.stdout), r
        assert gauge("reel_writes_refused") == 0
        assert check(H.HealthCheckRequest(), timeout=10).status == \
            H.HealthCheckResponse.SERVING
        with pytest.raises(grpc.RpcError) as e:
            set_value(K.SetValueRequest(namespace="d", key="after", value="1"), timeout=10)
        assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert not get_value(K.GetValueRequest(namespace="d", key="after"), timeout=10).found
        some = next(iter(acked))
        assert get_value(K.GetValueRequest(namespace="d", key=some), timeout=10).found
        assert delete_value(K.DeleteValueRequest(namespace="d", key=some),
                            timeout=10).entry.version == 2
        acked.pop(some)
        blob = small_disk.parent / "blob"
        blob.write_bytes(os.urandom(3 << 20))
        r = reelctl(server.addr, "ws", "put", "w", "f", str(blob))
        assert r.returncode == 1 and "--min-free-disk-bytes" in r.stderr, r
        # Space freed: writes are taken again, no restart.
        subprocess.run(as_root(["mount", "-o", "remount,size=512m", str(small_disk)]), check=True)
        deadline = time.monotonic() + 10
        while True:
            try:
                got = set_value(K.SetValueRequest(namespace="d", key="after", value="1"),
                                timeout=10)
                break
            except grpc.RpcError as e:
                assert e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, e
                assert time.monotonic() < deadline, "writes still refused 10 s after"
                time.sleep(0.05)
        assert got.entry.version == 1
        assert gauge("reel_disk_low") == 0
        assert gauge("reel_disk_free_bytes") > 400 << 20
        st = status(ch)
        assert not st.disk_low and st.disk_free_bytes > 400 << 20, st
        r = reelctl(server.addr, "ws", "put", "w", "f", str(blob))
        assert r.returncode == 0, r
        missing = [k for k in acked
                   if not get_value(K.GetValueRequest(namespace="d", key=k), timeout=10).found]
        assert missing == [], f"{len(missing)} acknowledged writes missing, e.g. {missing[:3]}"
        log = server.log()
        assert "writes that add data are refused until space is freed" in log
        assert "bytes free again: writes are accepted" in log
    finally:
        ch.close()
        assert server.stop()[0] == 0


# --------------------------------------------------------------------------
# a corrupted data dir


def data_files(d):
    """Everything RocksDB and reel keep, by content (RocksDB's own LOG files
    are logs, not data, and rotate on every open)."""
    out = {}
    for name in sorted(os.listdir(d)):
        if name.startswith("LOG"):
            continue
        with open(os.path.join(d, name), "rb") as f:
            out[name] = hashlib.sha256(f.read()).hexdigest()
    return out



def test_an_upload_that_fills_the_disk_stops_the_store_and_ends(small_disk):
    """With no floor kept, an upload larger than the disk: RocksDB's flush
    of its staged chunks fails in the background. The upload must end (it
    used to wait for that flush for ever), with the store's fail-stop
    message naming the cause; health says NOT_SERVING, SIGTERM exits 0,
    and after a restart with room, the artifact acknowledged before is
    whole."""
    data = str(small_disk / "data")
    server = Reeld(data, extra=["--min-free-disk-bytes", "0"]).start()
    small = small_disk.parent / "small"
    small.write_bytes(os.urandom(5 << 20))
    big = small_disk.parent / "big"
    big.write_bytes(os.urandom(70 << 20))
    ch = grpc.insecure_channel(server.addr)
    check = health_calls(ch)[0]
    try:
        r = reelctl(server.addr, "ws", "put", "w", "small", str(small))
        assert r.returncode == 0, r
        t0 = time.monotonic()
        r = reelctl(server.addr, "ws", "put", "w", "big", str(big), timeout=120)
        took = time.monotonic() - t0
        why = f"{r.stderr}; log:\n" + server.log()[-4000:]
        assert r.returncode == 1 and took < 60, (took, why)
        assert "UNAVAILABLE" in r.stderr and "restart reeld" in r.stderr, why
        assert "space" in r.stderr.lower(), why
        st = status(ch)
        assert not st.writable and "space" in st.write_error.lower(), st
        assert check(H.HealthCheckRequest(), timeout=10).status == \
            H.HealthCheckResponse.NOT_SERVING
        with pytest.raises(grpc.RpcError) as e:
            kv_calls(ch)[0](K.SetValueRequest(namespace="d", key="k", value="1"), timeout=10)
        assert e.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        ch.close()
        code, _ = server.stop(timeout=30)
    assert code == 0, server.log()[-4000:]
    subprocess.run(as_root(["mount", "-o", "remount,size=512m", str(small_disk)]), check=True)
    server = Reeld(data).start()
    try:
        out = small_disk.parent / "back"
        r = reelctl(server.addr, "ws", "get", "w", "small", "-o", str(out))
        assert r.returncode == 0, r
        assert hashlib.sha256(out.read_bytes()).digest() == \
            hashlib.sha256(small.read_bytes()).digest()
        r = reelctl(server.addr, "ws", "stat", "w", "big")
        assert r.returncode == 1 and "NOT_FOUND" in r.stderr, r
    finally:
        assert server.stop()[0] == 0


def test_an_upload_is_refused_at_the_floor_before_the_disk_fills(small_disk):
    """--min-free-disk-bytes with one upload larger than the room above the
    floor: its chunks wait in memory before any file holds them, so the
    floor counts them. The upload gets RESOURCE_EXHAUSTED naming the flag;
    the store never fails, and small writes go on."""
    data = str(small_disk / "data")
    server = Reeld(data, extra=["--min-free-disk-bytes", str(16 << 20)]).start()
    big = small_disk.parent / "big"
    big.write_bytes(os.urandom(40 << 20))
    ch = grpc.insecure_channel(server.addr)
    set_value = kv_calls(ch)[0]
    try:
        r = reelctl(server.addr, "ws", "put", "w", "big", str(big), timeout=120)
        why = f"{r.stderr}; log:\n" + server.log()[-4000:]
        assert r.returncode == 1 and "RESOURCE_EXHAUSTED" in r.stderr, why
        assert "--min-free-disk-bytes" in r.stderr and "uploads still in memory" in \
            r.stderr, why
        st = status(ch)
        assert st.writable, st.write_error
        assert set_value(K.SetValueRequest(namespace="d", key="after", value="1"),
                         timeout=10).entry.version == 1
        r = reelctl(server.addr, "ws", "stat", "w", "big")
        assert r.returncode == 1 and "NOT_FOUND" in r.stderr, r
    finally:
        ch.close()
        assert server.stop()[0] == 0



def test_requests_for_new_calls_that_could_not_be_posted_are_posted_again(tmp_path):
    """Each method has a few requests waiting for its next call; one that
    could not be posted again (out of memory) was lost, and with all of a
    method's gone its calls waited unanswered. Here the first 300 posts
    fail (at start: every one of the first few dozen methods): the keeper
    posts them again, and every call is served."""
    env = dict(os.environ, REEL_TEST_FAULTS="api.post_request*300")
    server = Reeld(str(tmp_path / "data"), env=env).start()
    try:
        ch = server.channel()
        set_value, get_value = kv_calls(ch)
        for i in range(20):
            set_value(K.SetValueRequest(namespace="n", key=f"k{i}", value="1"),
                      timeout=20)
            assert get_value(K.GetValueRequest(namespace="n", key=f"k{i}"),
                             timeout=20).found
        ch.close()
    finally:
        assert server.stop()[0] == 0


def test_a_read_only_data_dir_is_not_said_to_be_in_use(small_disk):
    """A data dir on a filesystem mounted read-only cannot be locked: the
    refusal says so, not that another process holds it."""
    data = small_disk / "data"
    server = Reeld(str(data)).start()
    assert server.stop()[0] == 0
    # The same dir, seen read-only elsewhere (reeld's log goes beside it).
    ro = small_disk.parent / "ro" / "data"
    ro.mkdir(parents=True)
    subprocess.run(as_root(["mount", "--bind", str(data), str(ro)]), check=True)
    try:
        subprocess.run(as_root(["mount", "-o", "remount,bind,ro", str(ro)]), check=True)
        server = Reeld(str(ro)).start(wait=False)
        code = server.proc.wait(timeout=30)
        log = server.log()
    finally:
        subprocess.run(as_root(["umount", "-l", str(ro)]), capture_output=True)
    assert code != 0, log
    assert "the data dir cannot be locked: reeld must be able to write in it" in log, log
    assert "Read-only file system" in log, log
    assert "in use by another process" not in log, log


def test_a_corrupted_data_dir_is_refused_untouched(tmp_path):
    data = str(tmp_path / "data")
    server = Reeld(data).start()
    ch = grpc.insecure_channel(server.addr)
    set_value, _ = kv_calls(ch)
    for i in range(50):
        set_value(K.SetValueRequest(namespace="n", key=f"k{i}", value=str(i)), timeout=10)
    ch.close()
    assert server.stop()[0] == 0
    manifest = [n for n in os.listdir(data) if n.startswith("MANIFEST-")][0]
    with open(os.path.join(data, manifest), "r+b") as f:
        f.seek(20)
        f.write(b"\xff" * 64)
    before = data_files(data)
    server = Reeld(data).start(wait=False)
    assert server.proc.wait(timeout=15) == 1
    log = server.log()
    # The wording durability.md gives, whichever file it is.
    assert "the data dir is corrupted; refusing to open it" in log, log
    assert data_files(data) == before
    with open(os.path.join(data, "CURRENT"), "w") as f:
        f.write("garbage\n")
    before = data_files(data)
    server = Reeld(data).start(wait=False)
    assert server.proc.wait(timeout=15) == 1
    assert "the data dir is corrupted; refusing to open it" in server.log(), server.log()
    assert data_files(data) == before


def test_a_corrupted_table_found_by_the_first_reads_is_refused_as_corrupted(tmp_path):
    """A table RocksDB opens without reading its blocks (the meta family's,
    holding the head revision) is found corrupted by reeld's first read:
    refused with the same words as one found while opening (it said
    "cannot open the store: read: Corruption: ..."), its tables untouched
    and nothing of the replayed log written out on the way."""
    data = str(tmp_path / "data")
    server = Reeld(data).start()
    ch = grpc.insecure_channel(server.addr)
    set_value, _ = kv_calls(ch)
    for i in range(3):
        set_value(K.SetValueRequest(namespace="n", key=f"k{i}", value=str(i)), timeout=10)
    ch.close()
    assert server.stop()[0] == 0
    tables = sorted(n for n in os.listdir(data) if n.endswith(".sst"))
    for name in tables:
        with open(os.path.join(data, name), "r+b") as f:
            f.seek(100)
            b = f.read(1)
            f.seek(100)
            f.write(bytes([b[0] ^ 0xFF]))
    before = {n: v for n, v in data_files(data).items() if n.endswith(".sst")}
    for _ in range(2):
        server = Reeld(data).start(wait=False)
        assert server.proc.wait(timeout=15) == 1
        log = server.log()
        assert re.search(r"the data dir is corrupted; refusing to open it: .*Corruption: ",
                         log), log
        assert "closed " not in log, log
        assert {n: v for n, v in data_files(data).items() if n.endswith(".sst")} == before


def test_a_damaged_byte_in_the_middle_of_the_write_ahead_log_is_refused(tmp_path):
    """RocksDB replays its log up to the first record that does not read
    and drops the rest: one damaged byte in the middle of the log after a
    crash opened the data dir without a word at an older revision, every
    acknowledged write after that byte gone and its revisions given again.
    Refused now, the files untouched; the end of the log cut short or
    zeros after it (what a crash leaves) and the last record damaged (a
    commit never answered looks the same) still open."""
    import shutil
    data = str(tmp_path / "data")
    server = Reeld(data).start()
    ch = grpc.insecure_channel(server.addr)
    set_value, get_value = kv_calls(ch)
    for i in range(400):
        head = set_value(K.SetValueRequest(namespace="n", key=f"k{i}", value=json.dumps("x" * 300)),
                         timeout=10).entry.revision
    ch.close()
    server.kill()                          # the acknowledged writes are in the log only
    logs = [n for n in os.listdir(data) if n.endswith(".log") and n[:-4].isdigit()]
    log = max(logs, key=lambda n: os.path.getsize(os.path.join(data, n)))
    size = os.path.getsize(os.path.join(data, log))
    assert size > 100_000

    def damaged(name, at=None, cut=0, zeros=None, put=None):
        d = str(tmp_path / name)
        shutil.copytree(data, d)
        path = os.path.join(d, log)
        with open(path, "r+b") as f:
            if at is not None:
                f.seek(at)
                b = f.read(1)
                f.seek(at)
                f.write(bytes([b[0] ^ 0xFF]))
            if zeros is not None:          # (where, how many)
                f.seek(zeros[0])
                f.write(bytes(zeros[1]))
            if put is not None:            # (where, byte)
                f.seek(put[0])
                f.write(bytes([put[1]]))
            if cut:
                f.truncate(size - cut)
        return d

    # One byte flipped; 4 KiB of zeros over the start of a 32 KiB block
    # (what a lost write leaves: RocksDB stops there, inside a commit's
    # fragments); the first record's type byte made a reused file's (the
    # whole log read as leftovers): each opened without a word before.
    for name, kw in (("mid", {"at": size // 2}),
                     ("zeros", {"zeros": (5 * 32768, 4096)}),
                     ("type", {"put": (6, 5)})):
        d = damaged(name, **kw)
        before = data_files(d)
        server = Reeld(d).start(wait=False)
        assert server.proc.wait(timeout=15) == 1, name
        out = server.log()
        assert re.search(r"the data dir is corrupted; refusing to open it: its write-ahead log "
                         + re.escape(log) + r" has a record that does not read at byte \d+, and "
                         r"committed records after it \(from byte \d+\) that opening would drop",
                         out), (name, out)
        assert data_files(d) == before
    for name, kw in (("cut", {"cut": 150}), ("last", {"at": size - 40}),
                     ("ztail", {"zeros": (size, 8192)})):   # unwritten last pages
        server = Reeld(damaged(name, **kw)).start()
        ch = grpc.insecure_channel(server.addr)
        _, get_value = kv_calls(ch)
        got = get_value(K.GetValueRequest(namespace="n", key="k398"), timeout=10)
        assert got.found and got.entry.revision == head - 1
        ch.close()
        assert server.stop()[0] == 0
    server = Reeld(data).start()           # the dir as the crash left it: everything
    ch = grpc.insecure_channel(server.addr)
    _, get_value = kv_calls(ch)
    assert get_value(K.GetValueRequest(namespace="n", key="k399"), timeout=10).entry.revision \
        == head
    ch.close()
    assert server.stop()[0] == 0


def test_a_data_dir_whose_wal_and_head_disagree_is_refused(tmp_path):
    """A data dir whose files do not belong together (copied file by file
    while reeld ran, a log file lost) opened and served values, history and
    events that disagree. Every revision commits with its WAL event, so
    the newest event must be the head's: made to differ here with RocksDB's
    own ldb, each way, and refused at open."""
    import shutil
    data = str(tmp_path / "data")
    server = Reeld(data).start()
    ch = grpc.insecure_channel(server.addr)
    set_value, _ = kv_calls(ch)
    for i in range(3):
        head = set_value(K.SetValueRequest(namespace="n", key=f"k{i}", value=str(i)),
                         timeout=10).entry.revision
    ch.close()
    assert server.stop()[0] == 0
    key = "0x65%016x" % head

    def ldb(d, *args):
        r = subprocess.run(["ldb", f"--db={d}", "--column_family=wal", "--hex"] + list(args),
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr

    for case, args, want in (
            ("no_head", ["delete", key],
             f"the WAL has no event for the head revision {head}"),
            ("past", ["put", "0x65%016x" % (head + 5), "0x00"],
             f"the WAL holds an event of revision {head + 5}, past the head {head}")):
        d = str(tmp_path / case)
        shutil.copytree(data, d)
        ldb(d, *args)
        server = Reeld(d).start(wait=False)
        assert server.proc.wait(timeout=15) == 1
        log = server.log()
        assert "the data dir is corrupted: " + want in log, log
    assert Reeld(data).start().stop()[0] == 0   # the dir as it was opens


# --------------------------------------------------------------------------
# clients that vanish


CLIENT = textwrap.dedent("""
    import sys, grpc
    sys.path.insert(0, sys.argv[2])
    from reel.v1 import kv_pb2, wal_pb2
    addr, n = sys.argv[1], int(sys.argv[3])
    calls = []
    for c in range(n // 50):
        ch = grpc.insecure_channel(addr, options=[("grpc.use_local_subchannel_pool", 1)])
        watch = ch.unary_stream("/reel.v1.KV/WatchValue",
            request_serializer=kv_pb2.WatchValueRequest.SerializeToString,
            response_deserializer=kv_pb2.ValueEvent.FromString)
        tail = ch.unary_stream("/reel.v1.Wal/SubscribeEvents",
            request_serializer=wal_pb2.SubscribeEventsRequest.SerializeToString,
            response_deserializer=wal_pb2.Event.FromString)
        for i in range(25):
            w = watch(kv_pb2.WatchValueRequest(namespace="v", key=f"k{i}.>"))
            next(w)  # BOOTSTRAP_DONE: the watch is registered
            calls.append(w)
            calls.append(tail(wal_pb2.SubscribeEventsRequest(subject_pattern="kv.v.>")))
    print("ready", flush=True)
    sys.stdin.read()
""")


def test_a_thousand_vanishing_clients_leave_nothing_behind(reeld, channel, tmp_path):
    import conftest
    gen = conftest._GEN
    set_value, get_value = kv_calls(channel)
    set_value(K.SetValueRequest(namespace="v", key="k0.a", value="1"), timeout=10)
    assert status(channel).open_calls == 0
    rss = []
    for round_ in range(3):
        child = subprocess.Popen([sys.executable, "-c", CLIENT, reeld.addr, gen, "1000"],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        try:
            assert child.stdout.readline().strip() == "ready"
            deadline = time.monotonic() + 20
            while status(channel).open_calls < 1000:
                assert time.monotonic() < deadline, status(channel).open_calls
                time.sleep(0.05)
            # Writes go by while they are open: they must not get stuck.
            for i in range(50):
                set_value(K.SetValueRequest(namespace="v", key=f"k{i % 25}.x", value=str(i)),
                          timeout=10)
        finally:
            child.kill()  # SIGKILL: no cancel, no goodbye
            child.wait()
        deadline = time.monotonic() + 20
        while status(channel).open_calls != 0:
            assert time.monotonic() < deadline, status(channel).open_calls
            time.sleep(0.05)
        rss.append(rss_mib(reeld.proc.pid))
    # Nothing accumulates from round to round, and the server still serves.
    if not sanitized():
        assert rss[2] < rss[0] + 30, rss
    assert get_value(K.GetValueRequest(namespace="v", key="k0.a"), timeout=10).found
