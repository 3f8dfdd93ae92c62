"""What the reel-sink end-to-end tests share: an HTTP receiver that checks
Standard Webhooks signatures with its own implementation of the spec
(standardwebhooks.com), records every delivery and can be told to fail;
reel-sink processes; a writer of mixed load; the events reel holds.

Binaries: $REEL_SINK and $REEL_NATS_DUMP (scripts/test.sh sets them), or
bazel-bin.
"""
import base64
import hashlib
import hmac
import http.server
import json
import os
import re
import signal
import socket
import subprocess
import threading
import time

import grpc
import pytest

from reel.v1 import journal_pb2 as J
from reel.v1 import kv_pb2 as K
from reel.v1 import signals_pb2 as S
from reel.v1 import wal_pb2 as W
from conftest import ROOT, free_port, sanitized, stream, unary

REEL_SINK = os.environ.get("REEL_SINK") or os.path.join(ROOT, "bazel-bin", "sink", "reel-sink")
NATS_DUMP = os.environ.get("REEL_NATS_DUMP") or os.path.join(ROOT, "bazel-bin", "sink", "nats_dump")
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
OLD_SECRET = "whsec_" + base64.b64encode(b"an older key, still listed").decode()


# ASan keeps freed memory in quarantine: RSS says nothing there.
ASAN = sanitized(REEL_SINK)


def wait_for(what, cond, timeout=30.0, interval=0.05):
    t0 = time.monotonic()
    while True:
        got = cond()
        if got:
            return got
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def verify(secret, msg_id, ts, body, sig_header):
    """The Standard Webhooks check, written from the spec: any v1 signature
    in the header that is the HMAC-SHA256 of "id.timestamp.body" under the
    base64-decoded key after whsec_."""
    key = base64.b64decode(secret[len("whsec_"):])
    want = base64.b64encode(hmac.new(key, f"{msg_id}.{ts}.".encode() + body,
                                     hashlib.sha256).digest()).decode()
    for part in sig_header.split(" "):
        version, _, sig = part.partition(",")
        if version == "v1" and hmac.compare_digest(sig, want):
            return True
    return False


class Receiver:
    """An HTTP receiver on a free port. Every request is recorded as a dict
    (id, ts, sig_ok, body, status, at). `plan(fn)` decides each answer:
    fn(delivery) -> status, or (status, headers), or ("hang", seconds)."""

    def __init__(self, secret=SECRET):
        self.secret = secret
        self.lock = threading.Lock()
        self.requests = []
        self.arrivals = 0  # requests begun (answered or not)
        self.decide = None
        rcv = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                n = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(n)
                d = {"id": self.headers.get("webhook-id"),
                     "ts": self.headers.get("webhook-timestamp"),
                     "sig": self.headers.get("webhook-signature", ""),
                     "body": body, "at": time.monotonic(), "path": self.path,
                     "auth": self.headers.get("Authorization")}
                d["sig_ok"] = verify(rcv.secret, d["id"], d["ts"], body, d["sig"])
                with rcv.lock:
                    rcv.arrivals += 1
                try:
                    d["json"] = json.loads(body)
                except ValueError:
                    d["json"] = None
                answer = rcv.decide(d) if rcv.decide else 200
                headers = {}
                if isinstance(answer, tuple) and answer[0] == "hang":
                    time.sleep(answer[1])
                    answer = 200
                elif isinstance(answer, tuple):
                    answer, headers = answer
                d["status"] = answer
                with rcv.lock:
                    rcv.requests.append(d)
                try:
                    self.send_response(answer)
                    for k, v in headers.items():
                        self.send_header(k, v)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                except OSError:
                    pass

            def log_message(self, *a):
                pass

        self.port = free_port()
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        # A sink killed mid-request resets its connection: not news.
        self.server.handle_error = lambda request, address: None
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.port}/hook"

    def plan(self, fn):
        self.decide = fn

    def all(self):
        with self.lock:
            return list(self.requests)

    def delivered(self):
        """The 2xx deliveries, in arrival order."""
        return [d for d in self.all() if 200 <= d["status"] < 300]

    def delivered_revisions(self):
        """Each delivered event's revision, in arrival order (a batch gives
        several)."""
        out = []
        for d in self.delivered():
            data = d["json"]["data"]
            for e in (data if isinstance(data, list) else [data]):
                out.append(e["revision"])
        return out

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def webhook_config(path, name, url, **extra):
    sink = {"name": name, "type": "webhook", "url": url, "secrets": [OLD_SECRET, SECRET]}
    sink.update(extra)
    return write_config(path, [sink])


def write_config(path, sinks):
    with open(path, "w") as f:
        json.dump({"sinks": sinks}, f)
    return str(path)


_LIVE = []


@pytest.fixture(autouse=True)
def no_sink_left():
    """Whatever a test leaves running (it failed midway) is killed."""
    yield
    while _LIVE:
        _LIVE.pop().kill()


class Daemon:
    """One reel-sink or reel-reactor process started with --reel and
    --config; its log goes to a file. Whatever a test leaves running is
    killed after it (the no_*_left fixtures)."""

    name = "?"

    def __init__(self, binary, tmp_path, addr, config, *args, env=None, live=None,
                 preexec_fn=None):
        self.log_path = str(tmp_path / f"{self.name}-{time.monotonic_ns()}.log")
        self.addr = addr
        self.config = config
        log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [binary, "--reel", addr, "--config", config] + list(args),
            stdout=log, stderr=subprocess.STDOUT, env=env, preexec_fn=preexec_fn)
        log.close()
        (_LIVE if live is None else live).append(self)

    def log(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")

    def wait_log(self, pattern, timeout=30.0):
        rx = re.compile(pattern)

        def seen():
            assert self.proc.poll() is None or rx.search(self.log()), \
                f"{self.name} exited {self.proc.returncode}:\n{self.log()}"
            return rx.search(self.log())
        return wait_for(f"/{pattern}/ in {self.name}'s log", seen, timeout)

    def stop(self, timeout=30.0):
        """SIGTERM; returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"{self.name} did not stop within {timeout}s:\n{self.log()}")

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()

    def rss_kib(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0


class Sink(Daemon):
    """One reel-sink process."""

    name = "reel-sink"

    def __init__(self, tmp_path, addr, config, *args, env=None, preexec_fn=None):
        super().__init__(REEL_SINK, tmp_path, addr, config, *args, env=env,
                         preexec_fn=preexec_fn)


def run_cli(addr, config, *args, timeout=60, preexec_fn=None, env=None):
    """reel-sink with args; env adds variables to the environment, and an
    addr of None passes no --reel."""
    reel = ["--reel", addr] if addr is not None else []
    return subprocess.run([REEL_SINK] + reel + ["--config", config] + list(args),
                          capture_output=True, text=True, timeout=timeout,
                          preexec_fn=preexec_fn,
                          env=dict(os.environ, **env) if env else None)


class Reel:
    """reel through Python's grpcio: writes of every kind, and the truth."""

    def __init__(self, addr):
        self.ch = grpc.insecure_channel(addr)
        u = lambda m, req, resp: unary(self.ch, m, req, resp)
        self.set_ = u("/reel.v1.KV/SetValue", K.SetValueRequest, K.SetValueResponse)
        self.get_ = u("/reel.v1.KV/GetValue", K.GetValueRequest, K.GetValueResponse)
        self.list_values = u("/reel.v1.KV/ListValues", K.ListValuesRequest,
                             K.ListValuesResponse)
        self.begin = u("/reel.v1.Journal/BeginRun", J.BeginRunRequest, J.Run)
        self.append = u("/reel.v1.Journal/Append", J.AppendRequest, J.AppendResponse)
        self.end = u("/reel.v1.Journal/EndRun", J.EndRunRequest, J.Run)
        self.send = u("/reel.v1.Signals/SendSignal", S.SendSignalRequest,
                      S.SendSignalResponse)
        self.head_ = u("/reel.v1.Wal/GetHead", W.GetHeadRequest, W.GetHeadResponse)
        self.consumers = u("/reel.v1.Wal/ListConsumers", W.ListConsumersRequest,
                           W.ListConsumersResponse)
        self.sub = stream(self.ch, "/reel.v1.Wal/SubscribeEvents",
                          W.SubscribeEventsRequest, W.Event)

    def set(self, ns, key, value='{"n":1}'):
        return self.set_(K.SetValueRequest(namespace=ns, key=key, value=value),
                         timeout=10).entry.revision

    def head(self):
        return self.head_(W.GetHeadRequest(), timeout=10).head_revision

    def acked(self, consumer):
        for c in self.consumers(W.ListConsumersRequest(), timeout=10).consumers:
            if c.name == consumer:
                return c.acked_revision
        return None

    def mixed(self, i):
        """A run with a journal entry and a signal, a KV write in two
        namespaces, and the run's end: every kind of event."""
        r = self.begin(J.BeginRunRequest(app="shop", user="u", session=f"s{i}",
                                         invocation_id=f"inv{i}", lease_owner="w"),
                       timeout=10)
        self.append(J.AppendRequest(run_id=r.run_id, lease_epoch=r.lease_epoch,
                                    kind="step", payload='{"i":%d}' % i), timeout=10)
        self.set("shop", f"orders.{i}", '{"qty":%d}' % i)
        self.set("other", f"k{i}")
        self.send(S.SendSignalRequest(run_id=r.run_id, name="approve",
                                      payload='{"by":"x"}'), timeout=10)
        self.end(J.EndRunRequest(run_id=r.run_id, lease_epoch=r.lease_epoch,
                                 status=J.Run.COMPLETED, result='{"ok":true}'),
                 timeout=10)

    def events(self, pattern=""):
        """(revision, subject) of every stored event matching pattern, up to
        the head."""
        head = self.head()
        got = []
        if head == 0:
            return got
        call = self.sub(W.SubscribeEventsRequest(subject_pattern=pattern), timeout=60)
        for ev in call:
            if ev.type != W.Event.PROGRESS:
                got.append((ev.revision, ev.subject))
            if ev.revision >= head:
                break
        call.cancel()
        return got

    def close(self):
        self.ch.close()


class Writer(threading.Thread):
    """KV writes as fast as one client goes, until stop()."""

    def __init__(self, reel, ns="load"):
        super().__init__(daemon=True)
        self.reel, self.ns, self.n = reel, ns, 0
        self.halt = threading.Event()
        self.errors = 0

    def run(self):
        while not self.halt.is_set():
            try:
                self.reel.set(self.ns, f"k{self.n % 50}", '{"n":%d}' % self.n)
                self.n += 1
            except grpc.RpcError:
                self.errors += 1
                time.sleep(0.05)
            time.sleep(0.002)

    def stop(self):
        self.halt.set()
        self.join()


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


@pytest.fixture
def reel(reeld):
    r = Reel(reeld.addr)
    yield r
    r.close()


def check_built():
    if not os.path.exists(REEL_SINK):
        pytest.fail(f"{REEL_SINK} not found: bazel build //sink:reel-sink")
