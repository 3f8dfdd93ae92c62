"""The C client library's durable consumer loop (client/client.h,
reel_consumer_run) against real reeld processes, through the program
client/consumer_e2e: every event once and in order, acknowledged at a
bounded rate; reeld killed (or stopped) and restarted in the middle of the
loop, which resumes and sees every event up to the head exactly once; a
stop acknowledges what was finished and the rest comes again to the next
run; non-retryable ends (a cursor past the head, a takeover, a busy or
invalidated consumer) stop the loop with their status; a loop waits for the
holder of its consumer after a restart; a bounded loop gives up.
"""
import json
import os
import re
import signal
import subprocess
import threading
import time
import urllib.request

import grpc
import pytest

from reel.v1 import kv_pb2 as K
from reel.v1 import wal_pb2 as W
from conftest import ROOT, Reeld, free_port, stream, unary

CONSUMER = os.environ.get("REEL_CONSUMER_E2E") or os.path.join(
    ROOT, "bazel-bin", "client", "consumer_e2e")

END = re.compile(r"^end (\w+) delivered=(\d+) finished=(\d+) acked=(\d+) events=(\d+) "
                 r"skipped=(\d+) acks=(\d+) reconnects=(\d+): (.*)$")


@pytest.fixture(autouse=True)
def built():
    if not os.path.exists(CONSUMER):
        pytest.fail(f"{CONSUMER} not found: bazel build //client:consumer_e2e")


def wait_for(what, cond, timeout=15.0):
    t0 = time.monotonic()
    while True:
        got = cond()
        if got:
            return got
        assert time.monotonic() - t0 < timeout, f"timed out waiting for {what}"
        time.sleep(0.02)


class Client:
    """Python's grpcio: the writes, and the ground truth to compare with."""

    def __init__(self, addr):
        self.ch = grpc.insecure_channel(addr)
        u = lambda m, req, resp: unary(self.ch, m, req, resp)
        self.set_ = u("/reel.v1.KV/SetValue", K.SetValueRequest, K.SetValueResponse)
        self.head = u("/reel.v1.Wal/GetHead", W.GetHeadRequest, W.GetHeadResponse)
        self.list = u("/reel.v1.Wal/ListConsumers", W.ListConsumersRequest,
                      W.ListConsumersResponse)
        self.sub = stream(self.ch, "/reel.v1.Wal/SubscribeEvents",
                          W.SubscribeEventsRequest, W.Event)

    def set(self, ns, key, value="1"):
        r = self.set_(K.SetValueRequest(namespace=ns, key=key, value=value), timeout=10)
        return r.entry.revision

    def consumer(self, name):
        return {c.name: c for c in self.list(W.ListConsumersRequest()).consumers}.get(name)

    def revisions(self, pattern):
        """Every stored event matching pattern, up to the head."""
        head = self.head(W.GetHeadRequest()).head_revision
        got = []
        call = self.sub(W.SubscribeEventsRequest(subject_pattern=pattern), timeout=30)
        for ev in call:
            if ev.type != W.Event.PROGRESS:
                got.append(ev.revision)
            if ev.revision >= head:
                break
        call.cancel()
        return got

    def close(self):
        self.ch.close()


class Consumer:
    """client/consumer_e2e ARGS in the background, stdout to a file."""

    def __init__(self, tmp_path, addr, name, *args):
        self.path = str(tmp_path / f"consumer-{name}-{time.monotonic_ns()}.out")
        self.out = open(self.path, "w")
        self.proc = subprocess.Popen([CONSUMER, "--addr", addr, "--consumer", name] +
                                     list(args), stdout=self.out,
                                     stderr=subprocess.STDOUT)

    def lines(self):
        with open(self.path) as f:
            return f.read().split("\n")[:-1]  # whole lines only

    def events(self):
        return [int(l.split()[1]) for l in self.lines() if l.startswith("event ")]

    def retries(self):
        return [l for l in self.lines() if l.startswith("retry ")]

    def wait_event(self, revision, timeout=15.0):
        def seen():
            assert self.proc.poll() is None or revision in self.events(), \
                f"consumer exited {self.proc.returncode}:\n" + "\n".join(self.lines())
            return revision in self.events()
        wait_for(f"event {revision}", seen, timeout)

    def finish(self, sig=None, timeout=20.0):
        """Signals it (if sig) and waits; returns (exit code, end fields)."""
        if sig is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError("consumer did not end:\n" + "\n".join(self.lines()))
        self.out.close()
        ends = [END.match(l) for l in self.lines() if l.startswith("end ")]
        assert len(ends) == 1 and ends[0], "\n".join(self.lines())
        m = ends[0]
        end = {"code": m.group(1), "details": m.group(9)}
        for i, k in enumerate(["delivered", "finished", "acked", "events", "skipped",
                               "acks", "reconnects"]):
            end[k] = int(m.group(i + 2))
        return code, end

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.out.close()


@pytest.fixture
def server(tmp_path):
    """A reeld that can be killed and started again on its port and data
    dir; exits 0 on SIGTERM at the end."""
    srv = Reeld(str(tmp_path / "data")).start()
    clients = []

    def client():
        c = Client(srv.addr)
        clients.append(c)
        return c

    srv.client = client
    yield srv
    for c in clients:
        c.close()
    if srv.proc.poll() is None:
        code, _ = srv.stop()
        assert code == 0, f"reeld exited {code} on SIGTERM:\n{srv.log()}"


def strictly_rising(revs):
    return all(a < b for a, b in zip(revs, revs[1:]))


# ---- Every event once, in order ----------------------------------------------

def test_every_matching_event_comes_once_in_order_and_acks_are_few(server, tmp_path):
    c = server.client()
    want = []
    for i in range(300):
        want.append(c.set("app", f"k{i}"))
        if i % 3 == 0:
            c.set("other", f"k{i}")  # not for this consumer
    k = Consumer(tmp_path, server.addr, "indexer", "--subject", "kv.app.>",
                 "--stop-at", str(want[-1]), "--ack-every", "100",
                 "--ack-interval", "60000")
    code, end = k.finish()  # --stop-at: the loop is stopped at the last one
    assert code == 0, end
    assert k.events() == want
    assert all(l.split()[2:] == ["VALUE_CHANGED", f"kv.app.k{i}"]
               for i, l in enumerate(l for l in k.lines() if l.startswith("event ")))
    assert (end["code"], end["events"], end["skipped"], end["reconnects"]) == \
        ("OK", 300, 0, 0)
    # The stop acknowledged everything; by count, an ack per 100 at most.
    assert end["acked"] == want[-1] == c.consumer("indexer").acked_revision
    assert 1 <= end["acks"] <= 4, end
    assert k.retries() == []


# ---- reeld killed (or stopped) and restarted mid-loop ----------------------------

@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGTERM], ids=["kill", "term"])
def test_the_loop_resumes_after_a_reeld_restart_and_sees_every_event_once(
        server, tmp_path, how):
    c = server.client()
    for i in range(200):
        c.set("app", f"a{i}")
    # No ack before the stop: after the restart the server sends
    # everything again, and the loop must pass over what it handed out.
    k = Consumer(tmp_path, server.addr, "sink", "--subject", "kv.app.>",
                 "--ack-interval", "3600000", "--ack-every", "1000000",
                 "--backoff-initial", "50", "--backoff-max", "400")
    try:
        k.wait_event(200)
        # Writes flowing when reeld goes: the loop is in the middle.
        stop = threading.Event()

        def writer():
            w = Client(server.addr)
            try:
                for i in range(100000):
                    if stop.is_set():
                        break
                    w.set("app", f"b{i}")
            except grpc.RpcError:
                pass  # reeld went away
            finally:
                w.close()

        t = threading.Thread(target=writer)
        t.start()
        wait_for("events while writing", lambda: len(k.events()) >= 250)
        if how == signal.SIGKILL:
            server.kill()
        else:
            assert server.stop(how)[0] == 0
        stop.set()
        t.join(30)
        wait_for("the loop noticed", lambda: k.retries())
        before = len(k.events())
        server.start()
        c = server.client()
        last = 0
        for i in range(100):
            last = c.set("app", f"c{i}")
        k.wait_event(last)
        code, end = k.finish(signal.SIGTERM)
    finally:
        k.kill()
    assert code == 0, end
    got = k.events()
    assert strictly_rising(got), got
    # Everything the server stored, each once: none missed at the restart.
    assert got == c.revisions("kv.app.>")
    assert got[-1] == last
    assert all(r.split()[1] in ("UNAVAILABLE", "CANCELLED") for r in k.retries()), \
        k.retries()
    assert end["reconnects"] >= 1
    # Nothing was acknowledged before the stop, but the new stream starts
    # after what the loop was handed already (resume_after): nothing came
    # twice (the server used to send every event of the first stream
    # again, which the loop then passed over).
    first_stream = [l for l in k.lines() if l.startswith(("event ", "retry "))]
    first_stream = first_stream[:next(i for i, l in enumerate(first_stream)
                                      if l.startswith("retry "))]
    assert 0 < len(first_stream) <= before
    assert end["skipped"] == 0
    # The stop acknowledged everything handed out.
    assert end["acked"] == last == c.consumer("sink").acked_revision
    assert end["acks"] == 1


# ---- A stop acknowledges what was finished; the rest comes again ---------------

def test_a_stop_acknowledges_what_was_finished_and_the_rest_comes_again(server, tmp_path):
    c = server.client()
    revs = [c.set("app", f"k{i}") for i in range(50)]
    # The callback keeps the last 5 events unfinished.
    k = Consumer(tmp_path, server.addr, "worker", "--unfinished", "5",
                 "--stop-at", str(revs[-1]), "--ack-interval", "3600000")
    code, end = k.finish()
    assert code == 0, end
    assert k.events() == revs
    assert (end["delivered"], end["finished"], end["acked"]) == (revs[-1], revs[-6], revs[-6])
    assert c.consumer("worker").acked_revision == revs[-6]
    # The next run starts after the last ack: the unfinished, and only them.
    again = Consumer(tmp_path, server.addr, "worker", "--stop-at", str(revs[-1]))
    code, end = again.finish()
    assert code == 0, end
    assert again.events() == revs[-5:]
    assert end["acked"] == revs[-1] == c.consumer("worker").acked_revision



def test_finish_covers_what_was_handed_out_when_it_was_said(server, tmp_path):
    """reel_consumer_finish(UINT64_MAX) at the first batch finishes that
    batch, not every batch after it: those stay unacknowledged (it used to
    stay in force and acknowledge each later batch as it came)."""
    c = server.client()
    first = c.set("app", "k0")
    k = Consumer(tmp_path, server.addr, "ahead", "--finish-ahead",
                 "--ack-interval", "100")
    try:
        k.wait_event(first)
        revs = [c.set("app", f"k{i}") for i in range(1, 10)]
        k.wait_event(revs[-1])
        time.sleep(0.5)                      # acks are due every 100 ms
        code, end = k.finish(signal.SIGTERM)
    finally:
        k.kill()
    assert code == 0, end
    assert (end["delivered"], end["finished"], end["acked"]) == (revs[-1], first, first), end
    assert c.consumer("ahead").acked_revision == first


def test_a_unary_call_goes_through_soon_after_reeld_is_back(server, tmp_path):
    """reel_client_unary on a long-lived client, once every 50 ms, across a
    kill -9 and restart of reeld: the channel, left in TRANSIENT_FAILURE,
    used to try again only when gRPC's backup poller ran (every 5 s), so
    calls kept failing for 8 s after reeld was back."""
    path = tmp_path / "heads.out"
    with open(path, "w") as out:
        proc = subprocess.Popen([CONSUMER, "--addr", server.addr, "--heads", "6"],
                                stdout=out, stderr=subprocess.STDOUT)
    t0 = time.monotonic()
    try:
        time.sleep(0.8)
        server.kill()
        time.sleep(1.0)                      # calls fail meanwhile
        server.start()
        back = (time.monotonic() - t0) * 1000
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    lines = path.read_text().split("\n")
    heads = [l.split() for l in lines if l.startswith("head ")]
    assert any(h[1] == "fail" for h in heads), heads[:5]
    after = [int(h[2]) for h in heads if h[1] == "ok" and int(h[2]) > back]
    assert after, (back, heads[-5:])
    assert after[0] - back < 1500, (back, after[0])


class Blackhole:
    """A TCP proxy to reeld whose first connection goes silent after
    after_s, both ways, its sockets left open: a partition neither side
    sees closed. Later connections are forwarded."""

    def __init__(self, target_port, after_s):
        import socket
        self.ls = socket.socket()
        self.ls.bind(("127.0.0.1", 0))
        self.ls.listen(16)
        self.port = self.ls.getsockname()[1]
        self.keep, self.target, self.after = [], target_port, after_s
        threading.Thread(target=self.accept, daemon=True).start()

    def pump(self, a, b, deadline):
        import socket
        try:
            while True:
                if deadline is not None:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return
                    a.settimeout(left)
                try:
                    d = a.recv(65536)
                except socket.timeout:
                    return
                if not d:
                    b.shutdown(socket.SHUT_WR)
                    return
                b.sendall(d)
        except OSError:
            pass

    def accept(self):
        import socket
        n = 0
        while True:
            try:
                c, _ = self.ls.accept()
            except OSError:
                return
            n += 1
            s = socket.create_connection(("127.0.0.1", self.target))
            self.keep += [c, s]
            dl = time.monotonic() + self.after if n == 1 else None
            threading.Thread(target=self.pump, args=(c, s, dl), daemon=True).start()
            threading.Thread(target=self.pump, args=(s, c, dl), daemon=True).start()

    def close(self):
        self.ls.close()
        for x in self.keep:
            x.close()


def test_a_stream_lost_before_its_first_message_is_waited_for_not_fatal(tmp_path):
    """The consumer's first stream is cut (silently) before reeld sent it
    anything; keepalive tells the loop, which subscribes again while reeld
    still holds the consumer for the lost stream: FAILED_PRECONDITION. The
    loop used to stop there (it waited only for a stream that had
    delivered a message); a stream whose request went out and was lost,
    not refused, may be the holder too, and the loop waits for it."""
    srv = Reeld(str(tmp_path / "data"),
                extra=["--keepalive-time", "2s", "--keepalive-timeout", "1s"]).start()
    proxy = Blackhole(srv.port, 0.3)
    k = Consumer(tmp_path, f"127.0.0.1:{proxy.port}", "cut", "--keepalive", "500",
                 "--backoff-max", "500")
    try:
        wait_for("a retry after the cut", lambda: k.retries(), timeout=20)
        c = Client(srv.addr)
        rev = c.set("app", "after")
        k.wait_event(rev, timeout=30)
        c.close()
        code, end = k.finish(signal.SIGTERM)
    finally:
        k.kill()
        proxy.close()
        srv.stop()
    assert code == 0, (end, k.lines())
    assert any("FAILED_PRECONDITION" in r for r in k.retries()), k.lines()

def test_a_stop_that_cannot_acknowledge_says_so(server, tmp_path):
    c = server.client()
    revs = [c.set("app", f"k{i}") for i in range(10)]
    k = Consumer(tmp_path, server.addr, "late", "--ack-interval", "3600000",
                 "--backoff-initial", "50", "--backoff-max", "200")
    try:
        k.wait_event(revs[-1])
        server.kill()
        wait_for("the loop noticed", lambda: k.retries())
        code, end = k.finish(signal.SIGTERM)
    finally:
        k.kill()
    # Finished, never acknowledged: the loop does not pretend it was.
    assert code == 1 and end["code"] == "UNAVAILABLE", end
    assert f'consumer "late": acknowledging revision {revs[-1]}: ' in end["details"], end
    assert "(events after revision 0 come again)" in end["details"], end
    assert (end["finished"], end["acked"], end["acks"]) == (revs[-1], 0, 0)
    server.start()
    assert server.client().consumer("late").acked_revision == 0


# ---- Non-retryable ends stop the loop with their status -------------------------

def test_a_cursor_past_the_head_stops_the_loop_with_invalid_argument(server, tmp_path):
    c = server.client()
    c.set("app", "k")
    k = Consumer(tmp_path, server.addr, "new", "--from", "1000")
    code, end = k.finish()
    assert code == 1
    assert end["code"] == "INVALID_ARGUMENT"
    assert "from_revision: 1000 is past the head revision 1" in end["details"], end
    assert k.retries() == [] and k.events() == []


def test_a_takeover_stops_the_loop_it_took_over_with_aborted(server, tmp_path):
    c = server.client()
    first = c.set("app", "k0")
    a = Consumer(tmp_path, server.addr, "shared")
    b = None
    try:
        a.wait_event(first)
        # Busy: a second loop without takeover stops at once.
        busy = Consumer(tmp_path, server.addr, "shared")
        code, end = busy.finish()
        assert code == 1 and end["code"] == "FAILED_PRECONDITION", end
        assert 'consumer "shared" already has an active subscriber' in end["details"]
        assert busy.retries() == []
        # With takeover, it ends the first loop and takes its place.
        b = Consumer(tmp_path, server.addr, "shared", "--takeover")
        code, end = a.finish()
        assert code == 1 and end["code"] == "ABORTED", end
        assert 'consumer "shared" was taken over' in end["details"]
        assert a.retries() == []
        rev = c.set("app", "k1")
        b.wait_event(rev)
        code, end = b.finish(signal.SIGTERM)
        assert code == 0 and end["acked"] == rev, end
    finally:
        a.kill()
        if b is not None:
            b.kill()


PAD = '"' + "x" * 500 + '"'  # events of ~600 bytes


def test_an_invalidated_consumer_stops_the_loop_and_is_not_retried(tmp_path):
    srv = Reeld(str(tmp_path / "data"), extra=["--wal-retention-bytes", "3000",
                                                "--wal-consumer-max-lag-bytes", "8000"]).start()
    c = Client(srv.addr)
    try:
        # A loop that finishes nothing, so it never acknowledges.
        k = Consumer(tmp_path, srv.addr, "lag", "--unfinished", "1000000")
        wait_for("lag created", lambda: c.consumer("lag") and c.consumer("lag").active)
        for i in range(16):  # ~9,600 bytes unacknowledged: over its cap
            c.set("n", f"a{i}", PAD)
        code, end = k.finish(timeout=30)
        assert code == 1 and end["code"] == "FAILED_PRECONDITION", end
        assert 'consumer "lag" was invalidated' in end["details"], end
        assert k.retries() == [] and end["acks"] == 0
        # Subscribing again as it stops the same way, not retried.
        again = Consumer(tmp_path, srv.addr, "lag")
        code, end = again.finish()
        assert code == 1 and end["code"] == "FAILED_PRECONDITION", end
        assert 'consumer "lag" was invalidated' in end["details"], end
        assert again.retries() == []
    finally:
        c.close()
        assert srv.stop()[0] == 0


# ---- Waiting for the holder after a restart ---------------------------------------

def test_after_a_restart_the_loop_waits_for_the_holder_of_its_consumer(server, tmp_path):
    c = server.client()
    first = c.set("app", "k0")
    # Waits of 1.6 to 2 s between attempts: room to take the consumer first.
    k = Consumer(tmp_path, server.addr, "held", "--backoff-initial", "2000",
                 "--backoff-max", "2000")
    try:
        k.wait_event(first)
        server.kill()
        wait_for("the loop noticed", lambda: k.retries(), timeout=10)
        server.start()
        c = server.client()
        holder = c.sub(W.SubscribeEventsRequest(consumer="held"), timeout=60)
        wait_for("held by another", lambda: c.consumer("held").active)
        wait_for("the loop found it held",
                 lambda: any(r.split()[1] == "FAILED_PRECONDITION" for r in k.retries()),
                 timeout=10)
        assert k.proc.poll() is None  # still trying, not stopped
        holder.cancel()
        rev = c.set("app", "k1")
        k.wait_event(rev)
        code, end = k.finish(signal.SIGTERM)
    finally:
        k.kill()
    assert code == 0, end
    assert k.events() == [first, rev]
    assert end["acked"] == rev


def test_a_bounded_loop_gives_up_where_nothing_listens(tmp_path):
    k = Consumer(tmp_path, f"127.0.0.1:{free_port()}", "nobody", "--max-attempts", "3",
                 "--backoff-initial", "20", "--backoff-max", "100")
    code, end = k.finish()
    assert code == 1 and end["code"] == "UNAVAILABLE", end
    assert len(k.retries()) == 2 and end["reconnects"] == 2


def subscribe_ends(port):
    """How many Wal.SubscribeEventBatches calls reeld has ended, whatever
    their code (its /metrics)."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics",
                                  timeout=10).read().decode()
    return sum(float(l.rsplit(" ", 1)[1]) for l in text.splitlines()
               if l.startswith("reel_rpc_requests_total{") and
               'method="SubscribeEventBatches"' in l)


def test_a_loop_whose_callback_stalls_while_others_wait_for_room_resumes(tmp_path):
    """reeld cancels a stream whose reader took nothing of its last message
    for the keepalive time and timeout while other streams wait for room
    (RESOURCE_EXHAUSTED, "... resume from the last position received"). The
    loop ended there (a reel-sink whose receiver was down for 40 s, under
    load, exited); it now subscribes again, as after a lost connection, and
    every event comes once, in order. The callback stalls on its stdout: a
    pipe nobody reads until the loop's stream has ended."""
    mport = free_port()
    server = Reeld(str(tmp_path / "data"),
                   extra=["--max-stream-backlog-bytes", str(1 << 20),
                          "--keepalive-time", "1s", "--keepalive-timeout", "6s",
                          "--metrics-listen", f"127.0.0.1:{mport}"]).start()
    opts = [("grpc.http2.bdp_probe", 0), ("grpc.use_local_subchannel_pool", 1)]
    chans = [grpc.insecure_channel(server.addr, options=opts) for _ in range(4)]
    stalled = []
    # While its callback blocks, nothing but gRPC's backup poller reads the
    # loop's connection and answers reeld's pings: every 5 s by default, a
    # sixth of reeld's default keepalive time and timeout (40 s), but close
    # to this test's 7 s, so a late poll let keepalive drop the connection
    # before the eviction came. Keep the default's proportion.
    env = dict(os.environ, GRPC_CLIENT_CHANNEL_BACKUP_POLL_INTERVAL_MS="1000")
    proc = subprocess.Popen([CONSUMER, "--addr", server.addr, "--consumer", "c"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    try:
        set_ = unary(chans[0], "/reel.v1.KV/SetValue", K.SetValueRequest, K.SetValueResponse)
        import concurrent.futures
        with concurrent.futures.ThreadPoolExecutor(32) as ex:
            # Enough lines to fill the pipe: the callback blocks in its print.
            list(ex.map(lambda i: set_(K.SetValueRequest(namespace="s", key=f"k{i}",
                                                         value="1"), timeout=30),
                        range(3000)))
        big = json.dumps("v" * 300000)
        sets = 3000
        for _ in range(30):
            set_(K.SetValueRequest(namespace="m", key="big", value=big), timeout=30)
            sets += 1
        # Watchers that never read spend the budget; more keep coming, so
        # streams wait for room while the loop's own stream is stalled.
        watch = [stream(ch, "/reel.v1.KV/WatchValue", K.WatchValueRequest, K.ValueEvent)
                 for ch in chans]
        every = K.WatchValueRequest(namespace="m", key="big",
                                    start=K.WatchValueRequest.FROM_VERSION, from_version=0)
        stalled += [watch[i % 4](every, timeout=120) for i in range(8)]
        # The loop's stream stalls once its client's window is full, which
        # may be seconds after the watchers (a loaded machine prints
        # slowly), and once they are cancelled nobody waits for room: two
        # more come every 2 s, and one more big value for the loop, until
        # reeld has ended the loop's stream (at most 60 s).
        t0 = time.monotonic()
        while subscribe_ends(mport) == 0 and time.monotonic() - t0 < 60:
            assert proc.poll() is None, "the loop ended while its callback stalled"
            time.sleep(2)
            stalled += [watch[i % 4](every, timeout=120) for i in range(2)]
            set_(K.SetValueRequest(namespace="m", key="big", value=big), timeout=30)
            sets += 1
        assert proc.poll() is None, "the loop ended while its callback stalled"
        for c in stalled:   # gone: what they held is room again
            c.cancel()
        lines = []
        reader = threading.Thread(target=lambda: lines.extend(
            l.decode().rstrip("\n") for l in proc.stdout), daemon=True)
        reader.start()
        t0 = time.monotonic()
        while (sum(l.startswith("event ") for l in lines) < sets and proc.poll() is None
               and time.monotonic() - t0 < 60):
            time.sleep(0.1)
        assert proc.poll() is None, "\n".join(lines[-5:])
        revs = [int(l.split()[1]) for l in lines if l.startswith("event ")]
        assert revs == list(range(1, sets + 1)), (len(revs), revs[-3:], lines[-3:])
        retries = [l for l in lines if l.startswith("retry ")]
        assert any(l.startswith("retry RESOURCE_EXHAUSTED") and
                   "read nothing of its last message" in l for l in retries), \
            (retries, [l for l in server.log().splitlines() if "cancelled" in l])
    finally:
        proc.kill()
        proc.wait()
        for c in stalled:
            c.cancel()
        for ch in chans:
            ch.close()
        code, _ = server.stop()
        assert code == 0, server.log()
