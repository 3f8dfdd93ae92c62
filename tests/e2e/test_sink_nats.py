"""reel-sink's NATS JetStream sinks against a real nats-server -js (Debian's
nats-server, started here on a free port with a temporary store), read
back with sink/nats_dump: the stream is created, every event is published
once and in order to <prefix>.<escaped subject> with Nats-Msg-Id
<sink>-<revision>; after 20 kill -9 cycles of reel-sink under load the
stream still holds each event exactly once, in order; a nats-server
restart while reel-sink runs loses nothing and repeats nothing.
"""
import os
import random
import shutil
import socket
import subprocess
import time

import pytest

from conftest import free_port, unary
from reel.v1 import wal_pb2 as W
from sinkutil import (NATS_DUMP, Sink, Writer, check_built, no_sink_left, reel,  # noqa: F401
                      wait_for, write_config)

NATS_SERVER = shutil.which("nats-server") or "/usr/bin/nats-server"


@pytest.fixture(autouse=True)
def built():
    check_built()
    if not os.path.exists(NATS_DUMP):
        pytest.fail(f"{NATS_DUMP} not found: bazel build //sink:nats_dump")
    if not os.path.exists(NATS_SERVER):
        pytest.fail("nats-server not found: scripts/deps.sh installs it")


class Nats:
    def __init__(self, tmp_path):
        self.port = free_port()
        self.dir = str(tmp_path / "nats")
        self.url = f"nats://127.0.0.1:{self.port}"
        self.log_path = str(tmp_path / "nats.log")
        self.proc = None

    def start(self):
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([NATS_SERVER, "-js", "-a", "127.0.0.1", "-p",
                                     str(self.port), "-sd", self.dir],
                                    stdout=log, stderr=subprocess.STDOUT)
        log.close()

        def up():
            assert self.proc.poll() is None, open(self.log_path).read()
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return True
            except OSError:
                return False
        wait_for("nats-server", up, timeout=20)
        return self

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=20)

    def request(self, subject, payload=b"", headers=None):
        """One request over NATS's text protocol (with headers, if given):
        the reply's payload."""
        if headers:
            hdr = "NATS/1.0\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
            hdr = (hdr + "\r\n").encode()
            pub = (f"HPUB {subject} _INBOX.t {len(hdr)} {len(hdr) + len(payload)}\r\n"
                   .encode() + hdr)
        else:
            pub = f"PUB {subject} _INBOX.t {len(payload)}\r\n".encode()
        with socket.create_connection(("127.0.0.1", self.port), 10) as so:
            f = so.makefile("rb")
            f.readline()  # INFO
            so.sendall(b'CONNECT {"verbose":false,"headers":true}\r\nSUB _INBOX.t 1\r\n' +
                       pub + payload + b"\r\nPING\r\n")
            while True:
                line = f.readline()
                assert line and not line.startswith(b"-ERR"), line
                if line.startswith(b"MSG"):
                    return f.read(int(line.split()[-1]) + 2)[:-2]

    def dump(self, stream, reel_subjects=False):
        """[(seq, subject, msg id, revision)] of every message in stream;
        with reel_subjects, each row's Reel-Subject header too."""
        out = subprocess.run([NATS_DUMP, self.url, stream], capture_output=True,
                             text=True, timeout=120)
        if "(10059)" in out.stderr:  # no such stream (yet)
            return []
        assert out.returncode == 0, out.stderr
        rows = []
        for line in out.stdout.splitlines():
            seq, subject, mid, rev, reel_subject = line.split(" ", 4)
            rows.append((int(seq), subject, mid, int(rev)) +
                        ((reel_subject,) if reel_subjects else ()))
        return rows


@pytest.fixture
def nats(tmp_path):
    n = Nats(tmp_path).start()
    yield n
    n.stop()


def nats_config(path, nats, name="fan", **extra):
    sink = {"name": name, "type": "nats", "servers": [nats.url], "stream": "REEL",
            "subject_prefix": "reel"}
    sink.update(extra)
    return write_config(path, [sink])


def check_exactly_once_in_order(rows, want, name="fan"):
    revs = [r[3] for r in rows]
    dups = len(revs) - len(set(revs))
    assert dups == 0, f"{dups} events twice in the stream"
    assert revs == want, f"stream {revs[:10]}... want {want[:10]}..."
    for seq, subject, mid, rev in rows:
        assert mid == f"{name}-{rev}"


def test_every_event_is_published_once_in_order(tmp_path, reeld, reel, nats):
    cfg = nats_config(tmp_path / "c.json", nats, subjects=["kv.>", "run.>"])
    for i in range(3):
        reel.mixed(i)
    reel.set("shop", "with space.and\ttab")
    sink = Sink(tmp_path, reeld.addr, cfg)
    want = [r for r, s in reel.events() if s.startswith(("kv.", "run."))]
    wait_for("every event in the stream", lambda: len(nats.dump("REEL")) >= len(want))
    assert sink.stop() == 0
    rows = nats.dump("REEL")
    check_exactly_once_in_order(rows, want)
    subjects = {r[1] for r in rows}
    assert "reel.kv.shop.with%20space.and%09tab" in subjects
    assert "reel.kv.shop.orders.0" in subjects
    assert any(s.startswith("reel.run.") for s in subjects)
    assert "created JetStream stream REEL" in sink.log()
    assert reel.acked("sink.fan") >= want[-1]


def test_a_stream_that_already_holds_everything_moves_the_cursor(tmp_path, reeld, reel, nats):
    """A sink that finds every event it is given already in the stream (its
    predecessor published them and died before acknowledging in reel) must
    still acknowledge them, with nothing new to publish. Made deterministic
    by deleting the consumer: the next sink starts over from the oldest
    event, all of them already in the stream."""
    cfg = nats_config(tmp_path / "c.json", nats, subjects=["kv.>"])
    for i in range(20):
        reel.set("shop", f"k{i}")
    want = [r for r, _ in reel.events("kv.>")]
    sink = Sink(tmp_path, reeld.addr, cfg)
    wait_for("every event acknowledged", lambda: (reel.acked("sink.fan") or 0) >= want[-1])
    assert sink.stop() == 0
    delete = unary(reel.ch, "/reel.v1.Wal/DeleteConsumer", W.DeleteConsumerRequest,
                   W.DeleteConsumerResponse)
    delete(W.DeleteConsumerRequest(name="sink.fan"), timeout=10)
    assert reel.acked("sink.fan") is None
    sink = Sink(tmp_path, reeld.addr, cfg)
    sink.wait_log(r"holds this sink's events up to revision %d" % want[-1])
    wait_for("the cursor moved past what the stream holds",
             lambda: (reel.acked("sink.fan") or 0) >= want[-1], timeout=20)
    assert sink.stop() == 0
    check_exactly_once_in_order(nats.dump("REEL"), want)


def test_another_sinks_messages_are_not_taken_for_ones_own_by_name(tmp_path, reeld, reel, nats):
    """A sink named "fan" on a stream whose last message is from a sink named
    "fan-v2" (its id "fan-v2-<rev>" starts with "fan-"): not its own, so it
    publishes nothing and acknowledges nothing (it took them for its own
    and skipped every event before them)."""
    for i in range(10):
        reel.set("other", f"k{i}")
    for i in range(5):
        reel.set("a", f"k{i}")
    v2 = Sink(tmp_path, reeld.addr, nats_config(tmp_path / "v2.json", nats, name="fan-v2",
                                               subjects=["kv.a.>"]))
    wait_for("fan-v2's events", lambda: len(nats.dump("REEL")) == 5)
    assert v2.stop() == 0
    sink = Sink(tmp_path, reeld.addr, nats_config(tmp_path / "c.json", nats))
    sink.wait_log(r"was not published by this sink")
    assert sink.stop() == 0
    assert [r[2] for r in nats.dump("REEL")] == [f"fan-v2-{r}" for r in range(11, 16)]
    assert not reel.acked("sink.fan")


def test_a_message_another_publisher_got_in_first_stops_the_sink(tmp_path, reeld, reel, nats):
    """Two sinks on one stream from two processes, started at the same
    moment, both find it empty. The first one's message must stop the
    second instead of landing beside it: here the sink finds the stream
    empty, then another publisher gets a message in before the sink's
    first event. That publish expects the stream's last sequence as it
    found it, fails, and the sink says whose message the last one is."""
    sink = Sink(tmp_path, reeld.addr, nats_config(tmp_path / "c.json", nats,
                                                  subjects=["kv.a.>"]))
    sink.wait_log(r"stream REEL is empty \(last sequence 0\)")
    ack = nats.request("reel.kv.a.k", b"{}", {"Nats-Msg-Id": "other-1", "Reel-Revision": "1"})
    assert b'"seq":1' in ack, ack
    reel.set("a", "k0")
    sink.wait_log(r"was not published by this sink")
    assert sink.stop() == 0
    assert [r[2] for r in nats.dump("REEL")] == ["other-1"]
    assert not reel.acked("sink.fan")


def test_a_purged_stream_takes_the_events_after_the_cursor(tmp_path, reeld, reel, nats):
    """A stream emptied while the sink was away (purged, or every message
    past its max_age) holds nothing to resume from: the sink publishes
    from its cursor instead of failing to read a last message that is
    gone."""
    cfg = nats_config(tmp_path / "c.json", nats)
    for i in range(3):
        reel.set("shop", f"k{i}")
    sink = Sink(tmp_path, reeld.addr, cfg)
    wait_for("the first events acknowledged", lambda: (reel.acked("sink.fan") or 0) >= 3)
    assert sink.stop() == 0
    assert b'"success":true' in nats.request("$JS.API.STREAM.PURGE.REEL")
    assert nats.dump("REEL") == []
    for i in range(3, 6):
        reel.set("shop", f"k{i}")
    sink = Sink(tmp_path, reeld.addr, cfg)
    wait_for("the events after the cursor", lambda: len(nats.dump("REEL")) >= 3)
    wait_for("acknowledged", lambda: (reel.acked("sink.fan") or 0) >= 6)
    assert sink.stop() == 0
    check_exactly_once_in_order(nats.dump("REEL"), [4, 5, 6])
    assert "Not Found" not in sink.log()


def test_nats_down_is_tried_again_with_backoff_whatever_events_come(tmp_path, reeld, reel):
    """With NATS unreachable the sink tries again after 0.2 s, doubling up
    to 5 s. Each event coming in woke that wait, so under load it tried
    (and logged) once per event."""
    cfg = write_config(tmp_path / "c.json", [{
        "name": "fan", "type": "nats", "servers": [f"nats://127.0.0.1:{free_port()}"],
        "stream": "REEL"}])
    sink = Sink(tmp_path, reeld.addr, cfg)
    sink.wait_log(r"connecting to NATS")
    t0, n = time.monotonic(), 0
    while time.monotonic() - t0 < 6:
        reel.set("shop", f"k{n}")
        n += 1
        time.sleep(0.01)
    tries = sink.log().count("connecting to NATS")
    assert sink.stop() == 0
    assert n > 100 and tries <= 10, (n, tries)


def test_20_kill9_cycles_leave_each_event_once_in_order(tmp_path, reeld, reel, nats):
    cfg = nats_config(tmp_path / "c.json", nats, subjects=["kv.load.>"], max_pending=256)
    w = Writer(reel)
    w.start()
    rng = random.Random(7)
    try:
        for cycle in range(20):
            sink = Sink(tmp_path, reeld.addr, cfg, "--takeover")
            if cycle % 4 == 0:
                n = len(nats.dump("REEL")) if cycle else 0
                wait_for("a publish", lambda: len(nats.dump("REEL")) > n, timeout=30)
            time.sleep(rng.uniform(0.05, 0.5))
            sink.kill()
    finally:
        w.stop()
    assert w.n > 100
    want = [r for r, _ in reel.events("kv.load.>")]
    sink = Sink(tmp_path, reeld.addr, cfg, "--takeover")
    try:
        wait_for("every event", lambda: reel.acked("sink.fan") is not None and
                 reel.acked("sink.fan") >= want[-1], timeout=60)
    except AssertionError as e:
        rows = nats.dump("REEL")
        raise AssertionError(
            f"{e}: acked {reel.acked('sink.fan')}, want {want[-1]}, stream "
            f"ends at {rows[-1] if rows else None}; reel-sink's log:\n"
            f"{sink.log()}\nnats-server's log:\n{open(nats.log_path).read()[-4000:]}")
    assert sink.stop() == 0
    check_exactly_once_in_order(nats.dump("REEL"), want)


def test_a_nats_server_restart_loses_and_repeats_nothing(tmp_path, reeld, reel, nats):
    cfg = nats_config(tmp_path / "c.json", nats, subjects=["kv.load.>"])
    sink = Sink(tmp_path, reeld.addr, cfg)
    for i in range(50):
        reel.set("load", f"a{i}")
    wait_for("50", lambda: len(nats.dump("REEL")) == 50)
    nats.stop()  # SIGTERM: its store is flushed
    # The operator sees the outage and its end in the log.
    sink.wait_log(r"sink fan: connection to NATS \(nats://127\.0\.0\.1:\d+\) lost; "
                  r"reconnecting")
    for i in range(50):
        reel.set("load", f"b{i}")
    time.sleep(1.0)
    nats.start()
    want = [r for r, _ in reel.events("kv.load.>")]
    wait_for("100", lambda: len(nats.dump("REEL")) >= 100, timeout=60)
    wait_for("the ack", lambda: reel.acked("sink.fan") >= want[-1], timeout=30)
    sink.wait_log(r"sink fan: reconnected to NATS")
    assert sink.stop() == 0
    assert "connection to NATS" not in sink.log().split("reconnected to NATS")[-1]
    check_exactly_once_in_order(nats.dump("REEL"), want)


def test_the_reel_subject_header_holds_a_subject_of_any_length(tmp_path, reeld, reel, nats):
    """The longest reel subject (a 256-byte namespace, a 1,024-byte key),
    its '%' escaped to three bytes each: the header was cut at 1,020."""
    ns, key = "n" * 256, "%" * 1000 + "k" * 24
    reel.set(ns, key)
    sink = Sink(tmp_path, reeld.addr, nats_config(tmp_path / "c.json", nats))
    wait_for("the event", lambda: len(nats.dump("REEL")) == 1)
    assert sink.stop() == 0
    (row,) = nats.dump("REEL", reel_subjects=True)
    assert row[4] == f"kv.{ns}." + "%25" * 1000 + "k" * 24


def test_a_restart_past_the_duplicate_window_goes_on_publishing(tmp_path, reeld, reel, nats):
    """nats-server, restarted, knows a message's id only if it is younger
    than the duplicate window: a publish expecting an older one's id was
    refused ("wrong last msg ID: ") for ever. The first publish after a
    sync expects the stream's last sequence instead."""
    cfg = nats_config(tmp_path / "c.json", nats, subjects=["kv.load.>"],
                      duplicate_window_ms=1000)
    sink = Sink(tmp_path, reeld.addr, cfg)
    for i in range(3):
        reel.set("load", f"a{i}")
    wait_for("3", lambda: len(nats.dump("REEL")) == 3)
    time.sleep(2.5)                 # past the window: the ids are forgotten
    nats.stop()
    nats.start()
    for i in range(3):
        reel.set("load", f"b{i}")
    want = [r for r, _ in reel.events("kv.load.>")]
    wait_for("6", lambda: len(nats.dump("REEL")) >= 6, timeout=60)
    wait_for("the ack", lambda: reel.acked("sink.fan") >= want[-1], timeout=30)
    assert sink.stop() == 0
    assert "wrong last msg ID" not in sink.log()
    check_exactly_once_in_order(nats.dump("REEL"), want)


def test_a_deleted_last_message_or_stream_is_got_past(tmp_path, reeld, reel, nats):
    """Messages deleted at a stream's end leave its last sequence where it
    was: the sink resumes after the last message still there. A stream
    deleted while the sink runs is made again (it read "Not Found" for
    ever)."""
    cfg = nats_config(tmp_path / "c.json", nats, subjects=["kv.load.>"])
    for i in range(3):
        reel.set("load", f"a{i}")
    sink = Sink(tmp_path, reeld.addr, cfg)
    first = [r for r, _ in reel.events("kv.load.>")]
    wait_for("acknowledged", lambda: (reel.acked("sink.fan") or 0) >= first[-1])
    assert sink.stop() == 0
    for seq in (3, 2):
        assert b'"success":true' in nats.request("$JS.API.STREAM.MSG.DELETE.REEL",
                                                 b'{"seq":%d}' % seq)
    for i in range(3):
        reel.set("load", f"b{i}")
    sink = Sink(tmp_path, reeld.addr, cfg)
    second = [r for r, _ in reel.events("kv.load.>")][3:]
    wait_for("the next events", lambda: len(nats.dump("REEL")) == 4, timeout=30)
    sink.wait_log(r"holds this sink's events up to revision %d \(sequence 1\)" % first[0])
    check_exactly_once_in_order(nats.dump("REEL"), first[:1] + second)
    assert b'"success":true' in nats.request("$JS.API.STREAM.DELETE.REEL")
    for i in range(3):
        reel.set("load", f"c{i}")
    third = [r for r, _ in reel.events("kv.load.>")][6:]
    wait_for("the stream made again", lambda: len(nats.dump("REEL")) == 3, timeout=60)
    wait_for("the ack", lambda: reel.acked("sink.fan") >= third[-1], timeout=30)
    assert sink.stop() == 0
    check_exactly_once_in_order(nats.dump("REEL"), third)
    assert "created JetStream stream REEL" in sink.log()


def test_a_stream_past_reels_head_is_not_taken_as_where_to_resume(tmp_path, reeld, reel,
                                                                 nats):
    """A stream holding this sink's events up to a revision reel has not
    reached (another reel's, or reel restored from an older copy): counting
    reel's events up to it as delivered skipped them in silence. The sink
    publishes nothing and says why."""
    assert b'"error"' not in nats.request(
        "$JS.API.STREAM.CREATE.REEL", b'{"name":"REEL","subjects":["reel.>"]}')
    ack = nats.request("reel.kv.a.k", b"{}", {"Nats-Msg-Id": "fan-999999",
                                                "Reel-Revision": "999999"})
    assert b'"seq":1' in ack, ack
    for i in range(3):
        reel.set("a", f"k{i}")
    sink = Sink(tmp_path, reeld.addr, nats_config(tmp_path / "c.json", nats,
                                                  subjects=["kv.a.>"]))
    sink.wait_log(r"holds this sink's events up to revision 999999, past reel's head")
    assert sink.stop() == 0
    assert [r[2] for r in nats.dump("REEL")] == ["fan-999999"]
    assert not reel.acked("sink.fan")


def test_a_stream_that_does_not_take_the_subjects_is_not_delivered_to(
        tmp_path, reeld, reel, nats):
    """Stream OTHER takes other.>, stream ARCHIVE takes reel.>: a sink
    configured with stream OTHER and prefix reel has its messages stored in
    ARCHIVE, and JetStream's ack names ARCHIVE. That is not delivered: the
    cursor stays, status says failing, and the log says which stream took
    them and what OTHER must take."""
    import json
    from sinkutil import run_cli
    made = write_config(tmp_path / "made.json", [
        {"name": "arch", "type": "nats", "servers": [nats.url], "stream": "ARCHIVE",
         "subject_prefix": "reel"},
        {"name": "oth", "type": "nats", "servers": [nats.url], "stream": "OTHER",
         "subject_prefix": "other"}])
    first = Sink(tmp_path, reeld.addr, made)  # reel is empty: streams only
    first.wait_log(r"created JetStream stream ARCHIVE")
    first.wait_log(r"created JetStream stream OTHER")
    assert first.stop() == 0
    for i in range(3):
        reel.set("x", f"k{i}")
    control = f"127.0.0.1:{free_port()}"
    cfg = nats_config(tmp_path / "c.json", nats, name="o", stream="OTHER")
    sink = Sink(tmp_path, reeld.addr, cfg, "--control-listen", control)
    sink.wait_log(r"JetStream stored it in stream ARCHIVE, not in the sink's "
                  r"stream OTHER: stream OTHER must take the subjects reel\.>")
    live = json.loads(run_cli(reeld.addr, cfg, "status", "o", "--control", control,
                              "--json").stdout)["live"]
    assert live["failing"] == 1 and live["failures"]["nats"] >= 1, live
    assert live["delivered"] == 0, live
    time.sleep(1.5)  # the retries back off: a few, not one every 200 ms
    assert sink.log().count("JetStream stored it in stream ARCHIVE") <= 6, sink.log()
    assert sink.stop() == 0
    assert (reel.acked("sink.o") or 0) == 0
    assert nats.dump("OTHER") == []
    # With no stream taking reel.> at all, NATS answers "no responders":
    # said as what it means, once.
    assert b'"success":true' in nats.request("$JS.API.STREAM.DELETE.ARCHIVE")
    sink = Sink(tmp_path, reeld.addr, cfg)
    sink.wait_log(r"no JetStream stream takes its subject: stream OTHER must take "
                  r"the subjects reel\.>")
    assert sink.stop() == 0
    assert "No responders available for request: No responders" not in sink.log()


def test_a_nats_url_credential_never_reaches_the_log(tmp_path, reeld, reel):
    """NATS is not listening: the sink says where it tries, without the
    URL's user and password."""
    port = free_port()
    cfg = write_config(tmp_path / "c.json", [
        {"name": "nc", "type": "nats", "stream": "S",
         "servers": [f"nats://alice:S3CRETPW@127.0.0.1:{port}"]}])
    sink = Sink(tmp_path, reeld.addr, cfg)
    sink.wait_log(r"connecting to NATS \(nats://127\.0\.0\.1:%d\)" % port)
    assert sink.stop() == 0
    assert "S3CRETPW" not in sink.log() and "alice" not in sink.log()
