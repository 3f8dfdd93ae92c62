#!/usr/bin/python3
"""reel's crash test: kill -9 reeld under a mixed load, again and again, and
prove that nothing it acknowledged is ever lost, and that nothing it did not
acknowledge is half-written.

Each cycle starts reeld on the same data dir and the same port (the first on
a fresh temp dir, with --kv-history-keep 0 so every version stays readable),
runs 16 client threads (each on its own gRPC channel and connection) for a
random 0.3-1.5 s, SIGKILLs reeld while they run, joins them, restarts reeld
and verifies everything recorded so far (see README.md in this folder).

Standalone:  REELD=/path/to/reeld /usr/bin/python3 tests/crash/crash_test.py --cycles 10
             (--long = 200 cycles, --seed N to replay window lengths, --keep
             to keep the data dir and logs)
Under pytest: /usr/bin/python3 -m pytest tests/crash   (10 cycles)

reeld, its start and stop, and the message classes (generated at import from
api/*.proto with /usr/bin/protoc into a temp dir; nothing generated is kept)
come from tests/reeltest, which the end-to-end tests share.
"""
import argparse
import collections
import faulthandler
import json
import os
import random
import shutil
import signal
import sys
import tempfile
import threading
import time
import traceback

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tests"))

from reeltest import Reeld, free_port, generate  # noqa: E402
from reeltest import binary as binary_path  # noqa: E402

generate()

import grpc  # noqa: E402

from reel.v1 import journal_pb2 as J  # noqa: E402
from reel.v1 import kv_pb2 as K  # noqa: E402
from reel.v1 import signals_pb2 as S  # noqa: E402
from reel.v1 import wal_pb2 as W  # noqa: E402

SC = grpc.StatusCode
EV = W.Event.Type

NS = "crash"                 # the KV namespace
APP = "crash"                # the journal app
LEASE_TTL = 600000           # never expires during a run of this test
RPC_T = 10.0                 # seconds: the bound on any unary call during the load
VERIFY_T = 60.0              # ... and during verification
AWAIT_MS = 200
ACK_EVERY = 20               # a WAL consumer acknowledges every ~20 events
SIGNAL_ROTATE = 300          # sends per signal run before a thread starts a new run
                             # (ListSignals has no paging: at most 1000 per call)
JOIN_T = 20.0                # seconds: all load threads must be joined by then
START_T = 30.0               # seconds: reeld must serve by then
PIN = "crash-pin"            # a durable consumer that holds the WAL until verified

# Roles, 16 threads: thread ids are unique across roles.
ROLES = ["cas"] * 4 + ["sd"] * 3 + ["journal"] * 4 + ["signal"] * 3 + ["wal"] * 2

# Errors after which the server certainly wrote nothing.
NO_WRITE = {SC.ABORTED, SC.INVALID_ARGUMENT, SC.FAILED_PRECONDITION, SC.NOT_FOUND,
            SC.ALREADY_EXISTS, SC.OUT_OF_RANGE, SC.RESOURCE_EXHAUSTED, SC.UNIMPLEMENTED}


def jdump(obj):
    return json.dumps(obj, separators=(",", ":"))


def one(msg):
    """A message on one line."""
    return "{" + " ".join(str(msg).split()) + "}" if msg is not None else "None"


def reeld_path():
    return binary_path("REELD", "api/reeld")


# --------------------------------------------------------------------------
# clients


UNARY = {
    "get": ("KV", "GetValue", K.GetValueRequest, K.GetValueResponse),
    "set": ("KV", "SetValue", K.SetValueRequest, K.SetValueResponse),
    "delete": ("KV", "DeleteValue", K.DeleteValueRequest, K.DeleteValueResponse),
    "list_values": ("KV", "ListValues", K.ListValuesRequest, K.ListValuesResponse),
    "history": ("KV", "ValueHistory", K.ValueHistoryRequest, K.ValueHistoryResponse),
    "begin": ("Journal", "BeginRun", J.BeginRunRequest, J.Run),
    "append": ("Journal", "Append", J.AppendRequest, J.AppendResponse),
    "read": ("Journal", "ReadJournal", J.ReadJournalRequest, J.ReadJournalResponse),
    "get_run": ("Journal", "GetRun", J.GetRunRequest, J.Run),
    "list_runs": ("Journal", "ListRuns", J.ListRunsRequest, J.ListRunsResponse),
    "send": ("Signals", "SendSignal", S.SendSignalRequest, S.SendSignalResponse),
    "await_": ("Signals", "AwaitSignal", S.AwaitSignalRequest, S.AwaitSignalResponse),
    "list_signals": ("Signals", "ListSignals", S.ListSignalsRequest, S.ListSignalsResponse),
    "ack": ("Wal", "AckEvents", W.AckEventsRequest, W.AckEventsResponse),
    "head": ("Wal", "GetHead", W.GetHeadRequest, W.GetHeadResponse),
    "consumers": ("Wal", "ListConsumers", W.ListConsumersRequest, W.ListConsumersResponse),
}


class Client:
    """Stubs on one channel with its own connection (no shared subchannel)."""

    def __init__(self, addr):
        self.ch = grpc.insecure_channel(addr, options=[("grpc.use_local_subchannel_pool", 1),
                                                       ("grpc.enable_retries", 0)])
        for name, (svc, method, req, resp) in UNARY.items():
            setattr(self, name, self.ch.unary_unary(f"/reel.v1.{svc}/{method}",
                                                    request_serializer=req.SerializeToString,
                                                    response_deserializer=resp.FromString))
        self.subscribe = self.ch.unary_stream(
            "/reel.v1.Wal/SubscribeEvents",
            request_serializer=W.SubscribeEventsRequest.SerializeToString,
            response_deserializer=W.Event.FromString)

    def close(self):
        self.ch.close()


# --------------------------------------------------------------------------
# what was acknowledged, what was in flight: kept across all cycles


class Ledger:
    def __init__(self):
        self.lock = threading.RLock()
        self.violations = []          # (cycle, kind, detail)
        self.errors = []              # the driver's own failures (not the server's)
        # KV: key -> ops in the order its only writer issued them. Each op:
        # {"kind": "ack"|"inflight", "op": "set"|"del"|"noop-del", "value",
        #  "version", "revision", "cycle"}
        self.kv = collections.defaultdict(list)
        self.kv_last_acked = {}       # key -> highest acknowledged version
        # Journal (and signal) runs: run_id -> {"role", "thread", "tuple", "epoch"}
        self.runs = {}
        self.append_sent = {}         # idem -> (run_id, payload): everything ever sent
        self.appends = {}             # idem -> {"run", "seq", "revision", "payload", "cycle"}
        self.append_inflight = {}     # idem -> {"run", "payload", "cycle"}: not yet resolved
        self.append_resolved = {"duplicate": 0, "fresh": 0}
        self.send_sent = {}           # signal_id -> (run_id, payload)
        self.sends = {}               # signal_id -> {"run", "seq", "revision", "payload", "cycle"}
        self.send_inflight = {}       # signal_id -> {"run", "payload", "cycle"}
        self.send_resolved = {"duplicate": 0, "fresh": 0}
        self.deliveries = {}          # signal_id -> {"run", "journal_seq", "cycle"}
        self.awaits_inflight = 0
        # WAL consumers: name -> {"acked": last acknowledged, "uncertain": [in-flight acks]}
        self.consumers = {}
        self.cursor = {}              # name -> the server's cursor, as verified after restart
        self.pin_acked = 0
        self.begins_inflight = 0
        self.acked = collections.Counter()     # acknowledged operations by kind
        self.inflight = collections.Counter()  # operations in flight at a kill, by kind

    def violation(self, cycle, kind, detail):
        with self.lock:
            self.violations.append((cycle, kind, detail))

    def error(self, cycle, detail):
        with self.lock:
            self.errors.append((cycle, detail))


class Ctx:
    """One cycle's load."""

    def __init__(self, cycle):
        self.cycle = cycle
        self.killing = threading.Event()    # set just before the SIGKILL
        self.stop = threading.Event()       # set just after it
        self.calls = []                     # open streams, cancelled after the kill
        self.lock = threading.Lock()


class RpcFailed(Exception):
    pass


# --------------------------------------------------------------------------
# the load: one object per thread, kept across cycles


class Role:
    def __init__(self, tid, ledger):
        self.tid = tid
        self.L = ledger

    def run(self, client, ctx):
        try:
            self.cycle(client, ctx)
        except RpcFailed:
            pass
        except Exception:  # noqa: BLE001
            self.L.error(ctx.cycle, f"thread {self.tid} ({type(self).__name__}):\n"
                                    + traceback.format_exc())

    def failed(self, ctx, e, what, no_write_ok=()):
        """An RPC failed. Returns True if the server certainly wrote nothing
        and the thread may go on; False if the outcome is unknown (the op is
        in flight: the caller records it and stops for this cycle)."""
        code = e.code()
        if code in no_write_ok:
            return True
        if not ctx.killing.is_set():
            self.L.violation(ctx.cycle, "unexpected-error",
                             f"thread {self.tid}: {what}: {code.name}: {e.details()} "
                             f"(while reeld was up)")
        return code in NO_WRITE and ctx.killing.is_set()


class CasRole(Role):
    """GetValue, then SetValue if-version = what it read, on its own key."""

    def __init__(self, tid, ledger):
        super().__init__(tid, ledger)
        self.key = f"cas.{tid}"
        self.n = 0

    def cycle(self, cl, ctx):
        L = self.L
        while not ctx.stop.is_set():
            try:
                r = cl.get(K.GetValueRequest(namespace=NS, key=self.key), timeout=RPC_T)
            except grpc.RpcError as e:
                self.failed(ctx, e, "GetValue")
                return
            ver = r.entry.version if (r.found or r.entry.deleted) else 0
            last = L.kv_last_acked.get(self.key, 0)
            if ver < last:
                L.violation(ctx.cycle, "kv-read-lost",
                            f"{self.key}: GetValue says version {ver}, but version {last} "
                            f"was acknowledged")
            self.n += 1
            value = jdump({"t": self.tid, "n": self.n})
            req = K.SetValueRequest(namespace=NS, key=self.key, value=value,
                                    precondition=K.PRECONDITION_VERSION, expected_version=ver)
            try:
                resp = cl.set(req, timeout=RPC_T)
            except grpc.RpcError as e:
                if e.code() == SC.ABORTED and not ctx.killing.is_set():
                    # This thread is the key's only writer and read the
                    # version just before: a refusal while reeld is up means
                    # that read was stale (a write it did not see).
                    L.violation(ctx.cycle, "kv-cas-stale-read",
                                f"{self.key} if-version {ver}: {e.details()}")
                if self.failed(ctx, e, "SetValue", no_write_ok=(SC.ABORTED,)):
                    continue
                with L.lock:
                    L.kv[self.key].append({"kind": "inflight", "op": "set", "value": value,
                                           "expected": ver, "cycle": ctx.cycle})
                    L.inflight["kv"] += 1
                return
            en = resp.entry
            if en.version != ver + 1 or resp.prev_version != ver or en.value != value:
                L.violation(ctx.cycle, "kv-cas-answer",
                            f"{self.key}: CAS if-version {ver} of {value} answered version "
                            f"{en.version}, prev_version {resp.prev_version}, value {en.value!r}")
            with L.lock:
                L.kv[self.key].append({"kind": "ack", "op": "set", "value": value,
                                       "version": en.version, "revision": en.revision,
                                       "cycle": ctx.cycle})
                L.kv_last_acked[self.key] = max(L.kv_last_acked.get(self.key, 0), en.version)
                L.acked["kv"] += 1


class SetDeleteRole(Role):
    """Unconditional SetValue or (1 in 4) DeleteValue over 8 keys of its own."""

    def __init__(self, tid, ledger, rng):
        super().__init__(tid, ledger)
        self.i = 0
        self.rng = rng

    def cycle(self, cl, ctx):
        L = self.L
        while not ctx.stop.is_set():
            self.i += 1
            key = f"sd.{self.tid}.{self.i % 8}"
            value = jdump({"t": self.tid, "n": self.i})
            delete = self.rng.random() < 0.25
            try:
                if delete:
                    resp = cl.delete(K.DeleteValueRequest(namespace=NS, key=key), timeout=RPC_T)
                else:
                    resp = cl.set(K.SetValueRequest(namespace=NS, key=key, value=value),
                                  timeout=RPC_T)
            except grpc.RpcError as e:
                if self.failed(ctx, e, "DeleteValue" if delete else "SetValue"):
                    continue
                with L.lock:
                    L.kv[key].append({"kind": "inflight", "op": "del" if delete else "set",
                                      "value": "" if delete else value, "cycle": ctx.cycle})
                    L.inflight["kv"] += 1
                return
            en = resp.entry
            with L.lock:
                if delete and not resp.existed:
                    L.kv[key].append({"kind": "ack", "op": "noop-del", "cycle": ctx.cycle})
                else:
                    if delete and not en.deleted:
                        L.violation(ctx.cycle, "kv-delete-answer",
                                    f"{key}: DeleteValue answered a non-tombstone {one(en)}")
                    if not delete and en.value != value:
                        L.violation(ctx.cycle, "kv-set-answer",
                                    f"{key}: SetValue {value} answered value {en.value!r}")
                    L.kv[key].append({"kind": "ack", "op": "del" if delete else "set",
                                      "value": "" if delete else value, "version": en.version,
                                      "revision": en.revision, "cycle": ctx.cycle})
                    L.kv_last_acked[key] = max(L.kv_last_acked.get(key, 0), en.version)
                L.acked["kv"] += 1


class RunRole(Role):
    """Shared by journal appenders and signal threads: its run, resumed each cycle."""

    role = None

    def __init__(self, tid, ledger):
        super().__init__(tid, ledger)
        self.run_id = None
        self.epoch = 0
        self.invocation = "i"

    def begin(self, cl, ctx):
        L = self.L
        req = J.BeginRunRequest(app=APP, user=f"t{self.tid}", session="s",
                                invocation_id=self.invocation, lease_owner=f"w{self.tid}",
                                lease_ttl_ms=LEASE_TTL)
        try:
            run = cl.begin(req, timeout=RPC_T)
        except grpc.RpcError as e:
            self.failed(ctx, e, "BeginRun")
            with L.lock:
                L.begins_inflight += 1
            raise RpcFailed()
        if self.run_id is not None:
            if run.run_id != self.run_id or not run.resumed:
                L.violation(ctx.cycle, "journal-begin-resume",
                            f"thread {self.tid}: BeginRun of the same tuple gave run "
                            f"{run.run_id} resumed={run.resumed}, expected {self.run_id} resumed")
            if run.lease_epoch <= self.epoch:
                L.violation(ctx.cycle, "journal-epoch",
                            f"run {run.run_id}: resumed lease has epoch {run.lease_epoch}, "
                            f"but epoch {self.epoch} was acknowledged before")
        if run.status != J.Run.RUNNING or run.lease_owner != f"w{self.tid}":
            L.violation(ctx.cycle, "journal-begin-state",
                        f"run {run.run_id}: status {run.status} owner {run.lease_owner!r}")
        self.run_id, self.epoch = run.run_id, run.lease_epoch
        with L.lock:
            L.runs[run.run_id] = {"role": self.role, "thread": self.tid,
                                  "tuple": (APP, f"t{self.tid}", "s", self.invocation),
                                  "epoch": run.lease_epoch}


class JournalRole(RunRole):
    role = "journal"

    def __init__(self, tid, ledger):
        super().__init__(tid, ledger)
        self.k = 0
        self.pending = None           # (idem, payload, run_id): an append in flight

    def append(self, cl, ctx, idem, payload, retry):
        L = self.L
        req = J.AppendRequest(run_id=self.run_id, lease_epoch=self.epoch, kind="step",
                              payload=payload, idempotency_key=idem)
        try:
            resp = cl.append(req, timeout=RPC_T)
        except grpc.RpcError as e:
            self.failed(ctx, e, "Append")
            with L.lock:
                if idem not in L.append_inflight:
                    L.append_inflight[idem] = {"run": self.run_id, "payload": payload,
                                               "cycle": ctx.cycle}
                    L.inflight["append"] += 1
            self.pending = (idem, payload, self.run_id)
            raise RpcFailed()
        en = resp.entry
        if en.run_id != self.run_id or en.payload != payload or en.idempotency_key != idem \
                or en.kind != "step":
            L.violation(ctx.cycle, "journal-append-answer",
                        f"Append {idem} {payload} to {self.run_id} answered "
                        f"run {en.run_id} key {en.idempotency_key!r} payload {en.payload!r}"
                        f"{' (duplicate)' if resp.duplicate else ''}")
        if resp.duplicate and not retry:
            L.violation(ctx.cycle, "journal-append-answer",
                        f"Append {idem}: a key never sent before answered duplicate=true "
                        f"(seq {en.seq})")
        with L.lock:
            L.appends[idem] = {"run": self.run_id, "seq": en.seq, "revision": en.revision,
                               "payload": payload, "cycle": ctx.cycle}
            L.acked["append"] += 1
            if retry:
                L.append_inflight.pop(idem, None)
                L.append_resolved["duplicate" if resp.duplicate else "fresh"] += 1
        self.pending = None

    def cycle(self, cl, ctx):
        self.begin(cl, ctx)
        if self.pending is not None:
            # The retry rule: the same idempotency key again, on the new epoch.
            idem, payload, _ = self.pending
            self.append(cl, ctx, idem, payload, retry=True)
        while not ctx.stop.is_set():
            self.k += 1
            idem = f"{self.tid}-{self.k}"
            payload = jdump({"t": self.tid, "k": self.k})
            with self.L.lock:
                self.L.append_sent[idem] = (self.run_id, payload)
            self.append(cl, ctx, idem, payload, retry=False)


class SignalRole(RunRole):
    role = "signal"

    def __init__(self, tid, ledger):
        super().__init__(tid, ledger)
        self.k = 0
        self.gen = 0
        self.invocation = "sig0"
        self.sent_in_run = 0
        self.pending = None           # (signal_id, payload, run_id): a send in flight

    def send(self, cl, ctx, sid, payload, run_id, retry):
        L = self.L
        req = S.SendSignalRequest(run_id=run_id, name="go", payload=payload, signal_id=sid)
        try:
            resp = cl.send(req, timeout=RPC_T)
        except grpc.RpcError as e:
            self.failed(ctx, e, "SendSignal")
            with L.lock:
                if sid not in L.send_inflight:
                    L.send_inflight[sid] = {"run": run_id, "payload": payload, "cycle": ctx.cycle}
                    L.inflight["send"] += 1
            self.pending = (sid, payload, run_id)
            raise RpcFailed()
        g = resp.signal
        if not resp.accepted or g.run_id != run_id or g.signal_id != sid or g.payload != payload \
                or g.name != "go" or (resp.duplicate and not retry):
            L.violation(ctx.cycle, "signal-send-answer",
                        f"SendSignal {sid} {payload} to {run_id} answered accepted={resp.accepted} "
                        f"duplicate={resp.duplicate} signal={one(g)}")
        with L.lock:
            L.sends[sid] = {"run": run_id, "seq": g.seq, "revision": g.revision,
                            "payload": payload, "cycle": ctx.cycle}
            L.acked["send"] += 1
            if retry:
                L.send_inflight.pop(sid, None)
                L.send_resolved["duplicate" if resp.duplicate else "fresh"] += 1
        self.pending = None

    def cycle(self, cl, ctx):
        L = self.L
        if self.pending is not None:
            sid, payload, run_id = self.pending
            self.send(cl, ctx, sid, payload, run_id, retry=True)
        self.begin(cl, ctx)
        while not ctx.stop.is_set():
            if self.sent_in_run >= SIGNAL_ROTATE:
                # A new run (ListSignals has no paging): BeginRun of a new tuple.
                self.gen += 1
                self.invocation = f"sig{self.gen}"
                self.run_id, self.epoch, self.sent_in_run = None, 0, 0
                self.begin(cl, ctx)
            self.k += 1
            sid = f"{self.tid}-{self.k}"
            payload = jdump({"t": self.tid, "k": self.k})
            with L.lock:
                L.send_sent[sid] = (self.run_id, payload)
            self.sent_in_run += 1
            self.send(cl, ctx, sid, payload, self.run_id, retry=False)
            req = S.AwaitSignalRequest(run_id=self.run_id, name="go", lease_epoch=self.epoch,
                                       timeout_ms=AWAIT_MS)
            try:
                resp = cl.await_(req, timeout=RPC_T)
            except grpc.RpcError as e:
                self.failed(ctx, e, "AwaitSignal")
                with L.lock:
                    L.awaits_inflight += 1
                    L.inflight["await"] += 1
                return
            if resp.delivered:
                g = resp.signal
                if g.run_id != self.run_id or resp.journal_seq == 0 \
                        or g.journal_seq != resp.journal_seq:
                    L.violation(ctx.cycle, "signal-await-answer",
                                f"AwaitSignal on {self.run_id} answered journal_seq "
                                f"{resp.journal_seq}, signal {one(g)}")
                with L.lock:
                    if g.signal_id in L.deliveries:
                        L.violation(ctx.cycle, "signal-delivered-twice",
                                    f"signal {g.signal_id} delivered again at journal_seq "
                                    f"{resp.journal_seq}; first {L.deliveries[g.signal_id]}")
                    L.deliveries[g.signal_id] = {"run": g.run_id, "journal_seq": resp.journal_seq,
                                                 "cycle": ctx.cycle}
                    L.acked["delivery"] += 1


class WalRole(Role):
    """A durable consumer: reads every event, checks they are consecutive,
    acknowledges every ~20."""

    def __init__(self, tid, ledger):
        super().__init__(tid, ledger)
        self.name = f"c{tid}"
        ledger.consumers[self.name] = {"acked": 0, "uncertain": []}

    def cycle(self, cl, ctx):
        L = self.L
        call = cl.subscribe(W.SubscribeEventsRequest(from_revision=0, consumer=self.name),
                            timeout=JOIN_T + 60)
        with ctx.lock:
            ctx.calls.append(call)
        if ctx.stop.is_set():
            call.cancel()
        prev, since_ack = None, 0
        expected_first = L.cursor.get(self.name, 0) + 1
        try:
            for ev in call:
                if ev.type == EV.PROGRESS:
                    continue
                if prev is None:
                    if ev.revision != expected_first:
                        L.violation(ctx.cycle, "wal-consumer-resume",
                                    f"consumer {self.name} (cursor {expected_first - 1}) "
                                    f"resumed at revision {ev.revision}")
                elif ev.revision != prev + 1:
                    L.violation(ctx.cycle, "wal-consumer-gap",
                                f"consumer {self.name}: revision {ev.revision} after {prev}")
                prev = ev.revision
                since_ack += 1
                if since_ack >= ACK_EVERY:
                    since_ack = 0
                    try:
                        r = cl.ack(W.AckEventsRequest(consumer=self.name, revision=prev),
                                   timeout=RPC_T)
                    except grpc.RpcError as e:
                        self.failed(ctx, e, "AckEvents")
                        with L.lock:
                            L.consumers[self.name]["uncertain"].append(prev)
                            L.inflight["consumer-ack"] += 1
                        return
                    c = L.consumers[self.name]
                    if r.consumer.acked_revision != max(prev, c["acked"]):
                        L.violation(ctx.cycle, "wal-ack-answer",
                                    f"AckEvents {self.name} {prev} answered cursor "
                                    f"{r.consumer.acked_revision} (before: {c['acked']})")
                    with L.lock:
                        c["acked"] = max(c["acked"], r.consumer.acked_revision)
                        c["uncertain"] = [u for u in c["uncertain"] if u > c["acked"]]
                        L.acked["consumer-ack"] += 1
                if ctx.stop.is_set():
                    break
        except grpc.RpcError as e:
            if e.code() != SC.CANCELLED:
                self.failed(ctx, e, "SubscribeEvents")
        finally:
            call.cancel()


# --------------------------------------------------------------------------
# verification


class Verifier:
    """Reads back everything after a restart and checks it against the ledger.
    Runs with no load; returns the number of recorded operations it checked."""

    def __init__(self, ledger, addr, cycle):
        self.L = ledger
        self.cl = Client(addr)
        self.cycle = cycle
        self.checked = 0          # recorded operations checked
        self.wal_checked = 0      # stored changes checked against their WAL event
        self.inflight_kv = collections.Counter()   # in-flight KV writes: applied or not
        self.by_rev = {}          # revision -> (what, key, body) of every stored change
        self.consumed_ids = set() # signal ids a journal records as delivered

    def bad(self, kind, detail):
        self.L.violation(self.cycle, kind, detail)

    def own_rev(self, rev, what):
        if rev in self.by_rev:
            self.bad("revision-reused", f"revision {rev} is both {self.by_rev[rev][:2]} and "
                                        f"{what[:2]}")
        self.by_rev[rev] = what

    def run(self):
        try:
            h = self.cl.head(W.GetHeadRequest(), timeout=VERIFY_T)
            self.head, self.oldest = h.head_revision, h.oldest_revision
            self.check_head()
            self.verify_kv()
            self.verify_runs()
            self.verify_consumers()
            self.verify_wal()
        finally:
            self.cl.close()
        return self

    def check_head(self):
        """The head never goes back, and covers every acknowledged revision."""
        L = self.L
        acked = [op["revision"] for ops in L.kv.values() for op in ops if "revision" in op]
        acked += [a["revision"] for a in L.appends.values()]
        acked += [s["revision"] for s in L.sends.values()]
        top = max(acked, default=0)
        if self.head < L.pin_acked or self.head < top:
            self.bad("revision-regressed", f"head revision {self.head} after restart; "
                                           f"verified before: {L.pin_acked}, highest "
                                           f"acknowledged: {top}")

    # ---- 1 and 6: KV --------------------------------------------------------

    def history(self, key):
        out, frm = [], 0
        while True:
            try:
                r = self.cl.history(K.ValueHistoryRequest(namespace=NS, key=key,
                                                          from_version=frm, limit=1000),
                                    timeout=VERIFY_T)
            except grpc.RpcError as e:
                if e.code() == SC.NOT_FOUND and not out:
                    return []
                raise
            out.extend(r.events)
            if not r.more or not r.events:
                return out
            frm = r.events[-1].version

    def verify_kv(self):
        live = {}
        start = ""
        while True:
            r = self.cl.list_values(K.ListValuesRequest(namespace=NS, start_after=start,
                                                        limit=1000, include_deleted=True),
                                    timeout=VERIFY_T)
            for en in r.entries:
                live[en.key] = en
            if not r.more:
                break
            start = r.next_start_after
        for key in sorted(set(self.L.kv) | set(live)):
            ops = self.L.kv.get(key, [])
            events = self.history(key)
            hist = {}
            for ev in events:
                if ev.namespace != NS or ev.key != key:
                    self.bad("kv-history", f"{key}: history holds an event of "
                                           f"{ev.namespace}/{ev.key}")
                hist[ev.version] = ev
                self.own_rev(ev.revision, ("kv", f"{key}@v{ev.version}", ev))
            versions = [ev.version for ev in events]
            if versions != list(range(1, len(versions) + 1)):
                self.bad("kv-history-gap", f"{key}: versions {versions[:5]}...{versions[-5:]} "
                                           f"are not 1..{len(versions)}")
            if events:
                en, last = live.get(key), events[-1]
                if en is None or en.version != last.version or en.revision != last.revision \
                        or en.deleted != last.deleted or en.value != last.value:
                    self.bad("kv-current", f"{key}: ListValues has {one(en)} but the last "
                                           f"version in its history is v{last.version} "
                                           f"r{last.revision} deleted={last.deleted} "
                                           f"{last.value!r}")
            elif key in live:
                self.bad("kv-current", f"{key}: listed ({one(live[key])}) with no history")
            self.walk(key, ops, hist)

    def walk(self, key, ops, hist):
        """Every version must be an acknowledged write (with its exact version,
        revision and value) or an in-flight write carrying exactly what was sent,
        in order; nothing else."""
        claimed = {op["version"] for op in ops if op["kind"] == "ack" and "version" in op}
        cur = 0

        def matches(ev, op):
            if op["op"] == "del":
                return ev.deleted and ev.type == K.ValueEvent.DELETE
            return (not ev.deleted) and ev.type == K.ValueEvent.PUT and ev.value == op["value"]

        for op in ops:
            if op["kind"] == "inflight":
                ev = hist.get(cur + 1)
                if ev is not None and cur + 1 not in claimed and matches(ev, op):
                    cur += 1
                    op["applied"] = True
                else:
                    op["applied"] = False
                self.inflight_kv["applied" if op["applied"] else "not applied"] += 1
                if "expected" in op and op["applied"] and op["expected"] != cur - 1:
                    self.bad("kv-cas-inflight", f"{key}: in-flight CAS if-version "
                                                f"{op['expected']} applied as v{cur}")
                self.checked += 1
                continue
            self.checked += 1
            if op["op"] == "noop-del":
                ev = hist.get(cur)
                if ev is not None and not ev.deleted:
                    self.bad("kv-noop-delete", f"{key}: DeleteValue said existed=false while "
                                               f"v{cur} ({ev.value!r}) was live")
                continue
            v = op["version"]
            ev = hist.get(v)
            if ev is None:
                self.bad("kv-lost", f"{key}: acknowledged v{v} r{op['revision']} "
                                    f"{op['op']} {op['value']!r} (cycle {op['cycle']}) is gone; "
                                    f"history has {len(hist)} versions")
                cur = max(cur, v)
                continue
            if ev.revision != op["revision"] or not matches(ev, op):
                self.bad("kv-changed", f"{key}: acknowledged v{v} r{op['revision']} {op['op']} "
                                       f"{op['value']!r} (cycle {op['cycle']}) reads back as "
                                       f"r{ev.revision} deleted={ev.deleted} {ev.value!r}")
            if v != cur + 1:
                self.bad("kv-phantom", f"{key}: versions {cur + 1}..{v - 1} before acknowledged "
                                       f"v{v} were written by no op of the test: "
                                       + "; ".join(f"v{x} {hist[x].value!r} del={hist[x].deleted}"
                                                   for x in range(cur + 1, v) if x in hist))
            cur = v
        top = max(hist) if hist else 0
        if top > cur:
            self.bad("kv-phantom", f"{key}: versions {cur + 1}..{top} were written by no "
                                   f"acknowledged or in-flight op: "
                                   + "; ".join(f"v{x} {hist[x].value!r} del={hist[x].deleted}"
                                               for x in range(cur + 1, top + 1) if x in hist)
                                   + f"; in flight: {[o for o in ops if o['kind'] == 'inflight']}")

    # ---- 2, 3 and 6: journals and signals -----------------------------------

    def journal(self, run_id):
        out, frm = [], 0
        while True:
            r = self.cl.read(J.ReadJournalRequest(run_id=run_id, from_seq=frm, limit=1000),
                             timeout=VERIFY_T)
            out.extend(r.entries)
            if not r.more or not r.entries:
                return out
            frm = r.entries[-1].seq

    def verify_runs(self):
        listed, start = [], ""
        while True:
            r = self.cl.list_runs(J.ListRunsRequest(app=APP, start_after=start, limit=1000),
                                  timeout=VERIFY_T)
            listed.extend(r.runs)
            if not r.more:
                break
            start = r.next_start_after
        by_tuple = collections.defaultdict(list)
        for run in listed:
            by_tuple[(run.app, run.user, run.session, run.invocation_id)].append(run.run_id)
        for tup, ids in by_tuple.items():
            if len(ids) > 1:
                self.bad("journal-run-twice", f"BeginRun tuple {tup} has {len(ids)} runs: {ids}")
        listed_ids = {run.run_id for run in listed}
        for run_id, info in sorted(self.L.runs.items()):
            if run_id not in listed_ids:
                self.bad("journal-run-lost", f"run {run_id} ({info}) is not listed")
            entries = self.journal(run_id)
            seqs = [e.seq for e in entries]
            if seqs != list(range(1, len(seqs) + 1)):
                self.bad("journal-gap", f"run {run_id}: seqs are not 1..{len(seqs)}: "
                                        f"{seqs[:10]}...")
            try:
                run = self.cl.get_run(J.GetRunRequest(run_id=run_id), timeout=VERIFY_T)
                if run.next_seq != len(entries) + 1:
                    self.bad("journal-next-seq", f"run {run_id}: next_seq {run.next_seq} but "
                                                 f"{len(entries)} entries")
                if run.lease_epoch < info["epoch"]:
                    self.bad("journal-epoch", f"run {run_id}: epoch {run.lease_epoch} after "
                                              f"epoch {info['epoch']} was acknowledged")
            except grpc.RpcError as e:
                self.bad("journal-run-lost", f"GetRun {run_id}: {e.code().name} {e.details()}")
            for e in entries:
                if e.run_id != run_id:
                    self.bad("journal-entry", f"run {run_id} seq {e.seq} names run {e.run_id}")
                self.own_rev(e.revision, ("journal", f"{run_id}#{e.seq}", e))
            if info["role"] == "journal":
                self.verify_appends(run_id, entries)
            else:
                self.verify_signals(run_id, entries)

    def verify_appends(self, run_id, entries):
        L = self.L
        seen = {}
        for e in entries:
            if e.kind != "step":
                self.bad("journal-entry", f"run {run_id} seq {e.seq}: kind {e.kind!r}")
            if e.idempotency_key in seen:
                self.bad("journal-duplicate", f"run {run_id}: key {e.idempotency_key} at seq "
                                              f"{seen[e.idempotency_key]} and {e.seq}")
            seen[e.idempotency_key] = e.seq
            sent = L.append_sent.get(e.idempotency_key)
            if sent is None or sent[0] != run_id:
                self.bad("journal-phantom", f"run {run_id} seq {e.seq}: key "
                                            f"{e.idempotency_key!r} {e.payload!r} was never "
                                            f"sent to this run")
            elif sent[1] != e.payload:
                self.bad("journal-torn", f"run {run_id} seq {e.seq} key {e.idempotency_key}: "
                                         f"payload {e.payload!r}, sent {sent[1]!r}")
        for idem, a in L.appends.items():
            if a["run"] != run_id:
                continue
            self.checked += 1
            e = entries[a["seq"] - 1] if 0 < a["seq"] <= len(entries) else None
            if e is None:
                self.bad("journal-lost", f"run {run_id}: acknowledged append {idem} at seq "
                                         f"{a['seq']} r{a['revision']} (cycle {a['cycle']}) is "
                                         f"gone; the journal has {len(entries)} entries")
            elif (e.seq, e.revision, e.payload, e.idempotency_key) != \
                    (a["seq"], a["revision"], a["payload"], idem):
                self.bad("journal-changed", f"run {run_id}: acknowledged append {idem} seq "
                                            f"{a['seq']} r{a['revision']} {a['payload']} "
                                            f"(cycle {a['cycle']}) reads back as key "
                                            f"{e.idempotency_key} seq {e.seq} r{e.revision} "
                                            f"{e.payload}")
        for idem, f in L.append_inflight.items():
            if f["run"] == run_id:
                self.checked += 1    # all or nothing: checked above (payload, uniqueness)

    def verify_signals(self, run_id, entries):
        L = self.L
        r = self.cl.list_signals(S.ListSignalsRequest(run_id=run_id, include_consumed=True,
                                                      limit=1000), timeout=VERIFY_T)
        sigs = list(r.signals)
        if len(sigs) >= 1000:
            self.L.error(self.cycle, f"run {run_id} has 1000+ signals: cannot list them all")
        listed = {}
        for g in sigs:
            if g.signal_id in listed:
                self.bad("signal-stored-twice", f"run {run_id}: signal {g.signal_id} listed "
                                                f"twice: seq {listed[g.signal_id].seq} and {g.seq}")
            listed[g.signal_id] = g
            self.own_rev(g.revision, ("signal", f"{run_id}/{g.signal_id}", g))
            sent = L.send_sent.get(g.signal_id)
            if sent is None or sent[0] != run_id:
                self.bad("signal-phantom", f"run {run_id}: signal {g.signal_id} was never sent "
                                           f"to it")
            elif sent[1] != g.payload or g.name != "go":
                self.bad("signal-torn", f"run {run_id}: signal {g.signal_id} payload "
                                        f"{g.payload!r}, sent {sent[1]!r}")
        # The journal's "signal" entries and the consumed signals: one to one.
        in_journal = {}
        last_sig_seq = 0
        for e in entries:
            if e.kind != "signal":
                self.bad("signal-journal", f"run {run_id} seq {e.seq}: kind {e.kind!r}")
                continue
            try:
                sid = json.loads(e.payload)["signal_id"]
            except (ValueError, KeyError, TypeError):
                self.bad("signal-journal", f"run {run_id} seq {e.seq}: payload {e.payload!r}")
                continue
            if sid in in_journal:
                self.bad("signal-consumed-twice", f"run {run_id}: signal {sid} recorded at seq "
                                                  f"{in_journal[sid]} and {e.seq}")
            in_journal[sid] = e.seq
            g = listed.get(sid)
            if g is None:
                self.bad("signal-journal", f"run {run_id} seq {e.seq}: delivery of {sid}, "
                                           f"which ListSignals does not have")
            else:
                if g.journal_seq != e.seq or g.consumed_at_ms == 0:
                    self.bad("signal-consume-torn",
                             f"run {run_id}: journal seq {e.seq} records {sid}, but the signal "
                             f"says journal_seq {g.journal_seq} consumed_at {g.consumed_at_ms}")
                if g.seq <= last_sig_seq:
                    self.bad("signal-fifo", f"run {run_id}: {sid} (signal seq {g.seq}) delivered "
                                            f"after signal seq {last_sig_seq}")
                last_sig_seq = max(last_sig_seq, g.seq)
        for sid, g in listed.items():
            if (g.journal_seq != 0 or g.consumed_at_ms != 0) and sid not in in_journal:
                self.bad("signal-consume-torn", f"run {run_id}: {sid} is consumed (journal_seq "
                                                f"{g.journal_seq}) but no journal entry records it")
        for sid, d in L.deliveries.items():
            if d["run"] != run_id:
                continue
            self.checked += 1
            if in_journal.get(sid) != d["journal_seq"]:
                self.bad("signal-delivery-lost", f"run {run_id}: delivered {sid} at journal_seq "
                                                 f"{d['journal_seq']} (cycle {d['cycle']}); the "
                                                 f"journal has it at {in_journal.get(sid)}")
        for sid, s in L.sends.items():
            if s["run"] != run_id:
                continue
            self.checked += 1
            g = listed.get(sid)
            if g is None:
                self.bad("signal-lost", f"run {run_id}: acknowledged send {sid} seq {s['seq']} "
                                        f"r{s['revision']} (cycle {s['cycle']}) is gone")
            elif (g.seq, g.revision, g.payload) != (s["seq"], s["revision"], s["payload"]):
                self.bad("signal-changed", f"run {run_id}: acknowledged send {sid} seq {s['seq']} "
                                           f"r{s['revision']} reads back as seq {g.seq} "
                                           f"r{g.revision} {g.payload!r}")
        for sid, f in L.send_inflight.items():
            if f["run"] == run_id:
                self.checked += 1
        self.consumed_ids |= set(in_journal)

    # ---- 4: consumers --------------------------------------------------------

    def verify_consumers(self):
        L = self.L
        r = self.cl.consumers(W.ListConsumersRequest(), timeout=VERIFY_T)
        have = {c.name: c for c in r.consumers}
        for name, c in L.consumers.items():
            self.checked += 1
            got = have.get(name)
            if got is None:
                if c["acked"] > 0:
                    self.bad("wal-consumer-lost", f"consumer {name} (acked {c['acked']}) is gone")
                continue
            allowed = {c["acked"]} | {u for u in c["uncertain"] if u > c["acked"]}
            if got.acked_revision not in allowed:
                self.bad("wal-cursor", f"consumer {name}: cursor {got.acked_revision} after "
                                       f"restart; last acknowledged {c['acked']}, in flight "
                                       f"{sorted(c['uncertain'])}")
            if got.acked_revision > self.head:
                self.bad("wal-cursor", f"consumer {name}: cursor {got.acked_revision} beyond "
                                       f"head {self.head}")
            L.cursor[name] = got.acked_revision
            # The server's cursor is now known: in-flight acks are resolved.
            c["acked"], c["uncertain"] = got.acked_revision, []
        pin = have.get(PIN)
        if pin is None or pin.acked_revision != L.pin_acked:
            self.bad("wal-cursor", f"consumer {PIN}: {one(pin)} after restart, acknowledged "
                                   f"{L.pin_acked}")

    # ---- 5: the WAL ------------------------------------------------------------

    def verify_wal(self):
        L = self.L
        frm = L.pin_acked
        if self.oldest > frm + 1 or (self.oldest == 0 and self.head > frm):
            self.bad("wal-trimmed", f"oldest retained revision {self.oldest}, but {PIN} holds "
                                    f"everything after {frm} (head {self.head})")
        for rev, what in self.by_rev.items():
            if rev > self.head or rev == 0:
                self.bad("wal-head", f"{what[:2]} has revision {rev}; head is {self.head}")
        events = {}
        if self.head > frm:
            call = self.cl.subscribe(W.SubscribeEventsRequest(from_revision=frm),
                                     timeout=VERIFY_T)
            prev = frm
            try:
                for ev in call:
                    if ev.type == EV.PROGRESS:
                        if ev.revision >= self.head and prev >= self.head:
                            break
                        continue
                    if ev.revision != prev + 1:
                        self.bad("wal-gap", f"revision {ev.revision} after {prev}")
                    prev = ev.revision
                    events[ev.revision] = ev
                    if ev.revision >= self.head:
                        break
            finally:
                call.cancel()
            if prev < self.head:
                self.bad("wal-gap", f"the WAL ends at {prev}, head is {self.head}")
        # Every stored change in the window has its event, with its body ...
        for rev, (what, name, body) in self.by_rev.items():
            if rev <= frm or rev > self.head:
                continue
            self.wal_checked += 1
            ev = events.get(rev)
            if ev is None:
                self.bad("wal-missing", f"{what} {name} at r{rev} has no WAL event")
            elif not self.same(what, body, ev):
                self.bad("wal-body", f"{what} {name} at r{rev}: the WAL event there is "
                                     f"{W.Event.Type.Name(ev.type)} {ev.subject}")
        # ... and every event is a stored change.
        consumed = self.consumed_ids
        for rev, ev in events.items():
            if ev.type in (EV.VALUE_CHANGED, EV.JOURNAL_APPENDED, EV.SIGNAL_SENT):
                if rev not in self.by_rev:
                    self.bad("wal-phantom", f"r{rev} {W.Event.Type.Name(ev.type)} {ev.subject}: "
                                            f"no stored change has this revision")
            elif ev.type == EV.SIGNAL_CONSUMED:
                if ev.signal.signal_id not in consumed:
                    self.bad("wal-phantom", f"r{rev} SIGNAL_CONSUMED {ev.signal.signal_id}: the "
                                            f"signal is not consumed")
            elif ev.type == EV.RUN_CHANGED:
                if ev.run.run_id not in L.runs and ev.run.app != APP:
                    self.bad("wal-phantom", f"r{rev} RUN_CHANGED of unknown run {ev.run.run_id}")
            else:
                self.bad("wal-type", f"r{rev}: event type {ev.type}")
        # Verified up to head: let retention trim it.
        if self.head > L.pin_acked:
            r = self.cl.ack(W.AckEventsRequest(consumer=PIN, revision=self.head), timeout=VERIFY_T)
            if r.consumer.acked_revision != self.head:
                self.bad("wal-ack-answer", f"AckEvents {PIN} {self.head}: {one(r.consumer)}")
            L.pin_acked = self.head

    @staticmethod
    def same(what, body, ev):
        if what == "kv":
            v = ev.value
            return (ev.type == EV.VALUE_CHANGED and v.namespace == body.namespace
                    and v.key == body.key and v.version == body.version
                    and v.value == body.value and v.deleted == body.deleted)
        if what == "journal":
            e = ev.entry
            return (ev.type == EV.JOURNAL_APPENDED and e.run_id == body.run_id
                    and e.seq == body.seq and e.payload == body.payload
                    and e.idempotency_key == body.idempotency_key)
        g = ev.signal
        return (ev.type == EV.SIGNAL_SENT and g.run_id == body.run_id
                and g.signal_id == body.signal_id and g.seq == body.seq)


# --------------------------------------------------------------------------
# the driver


def make_consumers(addr, names):
    """Creates the durable consumers at revision 0, before any write (so that
    retention trims nothing any of them still needs), and waits until none
    has an active subscriber."""
    cl = Client(addr)
    calls = []
    try:
        for name in names:
            calls.append(cl.subscribe(W.SubscribeEventsRequest(from_revision=0, consumer=name),
                                      timeout=30))
        deadline = time.monotonic() + 30
        want = set(names)
        while True:
            r = cl.consumers(W.ListConsumersRequest(), timeout=RPC_T)
            have = {c.name: c for c in r.consumers}
            if calls and want <= set(have):
                for call in calls:
                    call.cancel()
                calls = []
            if not calls and all(not have[n].active and have[n].acked_revision == 0
                                 for n in want):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"consumers {names} not created: {r}")
            time.sleep(0.02)
    finally:
        for call in calls:
            call.cancel()
        cl.close()


def run_crash_test(cycles=10, seed=None, window=(0.3, 1.5), keep=False, verbose=True,
                   out=sys.stdout):
    """Returns a dict of figures; 'violations' and 'errors' are lists."""
    binary = reeld_path()
    if not os.path.exists(binary):
        raise FileNotFoundError(f"{binary} not found: build //api:reeld or set $REELD")
    seed = random.randrange(1 << 30) if seed is None else seed
    rng = random.Random(seed)
    tmp = tempfile.mkdtemp(prefix="reel-crash-")
    data = os.path.join(tmp, "data")
    server = Reeld(data, port=free_port(), extra=["--kv-history-keep", "0"], binary=binary)
    L = Ledger()
    roles = []
    for tid, role in enumerate(ROLES):
        roles.append({"cas": lambda: CasRole(tid, L),
                      "sd": lambda: SetDeleteRole(tid, L, random.Random(rng.random())),
                      "journal": lambda: JournalRole(tid, L),
                      "signal": lambda: SignalRole(tid, L),
                      "wal": lambda: WalRole(tid, L)}[role]())
    t_start = time.monotonic()
    checked = 0
    checks_total = 0
    inflight_kv = {}
    done = 0
    stop_code = None

    def say(msg):
        if verbose:
            print(msg, file=out, flush=True)

    say(f"reeld {binary}, data {data}, port {server.port}, seed {seed}")
    try:
        server.start(timeout=START_T)
        make_consumers(server.addr, [PIN] + [r.name for r in roles if isinstance(r, WalRole)])
        for cycle in range(1, cycles + 1):
            ctx = Ctx(cycle)
            clients = [Client(server.addr) for _ in roles]
            threads = [threading.Thread(target=r.run, args=(c, ctx), daemon=True,
                                        name=f"load-{r.tid}") for r, c in zip(roles, clients)]
            acks0, inflight0 = sum(L.acked.values()), sum(L.inflight.values())
            for t in threads:
                t.start()
            w = rng.uniform(*window)
            time.sleep(w)
            ctx.killing.set()
            server.kill()                     # SIGKILL, while the load runs
            ctx.stop.set()
            with ctx.lock:
                for call in ctx.calls:
                    call.cancel()
            deadline = time.monotonic() + JOIN_T
            for t in threads:
                t.join(max(0.0, deadline - time.monotonic()))
            hung = [t.name for t in threads if t.is_alive()]
            if hung:
                L.error(cycle, f"threads not done {JOIN_T}s after the kill: {hung}")
            for c in clients:
                c.close()
            if hung:
                break
            up = server.start(timeout=START_T).ready_after
            t0 = time.monotonic()
            v = Verifier(L, server.addr, cycle).run()
            checked, wal_checked, inflight_kv = v.checked, v.wal_checked, v.inflight_kv
            checks_total += checked + wal_checked
            done = cycle
            acks, inflight = sum(L.acked.values()), sum(L.inflight.values())
            say(f"cycle {cycle}/{cycles}: load {w:.2f}s, acked +{acks - acks0} "
                f"(total {acks}), in flight at the kill {inflight - inflight0}, "
                f"restart {up:.2f}s, verified {checked} ops + {wal_checked} WAL events in "
                f"{time.monotonic() - t0:.2f}s (WAL {v.oldest}..{v.head}), "
                f"violations {len(L.violations)}")
            if L.errors:
                break
        try:
            stop_code, _ = server.stop(timeout=15.0)
        except AssertionError:        # it did not exit, and was killed
            stop_code = None
        if stop_code != 0:
            say(f"note: reeld exited {stop_code} on SIGTERM at the end:\n{server.log(4000)}")
    except Exception:  # noqa: BLE001
        L.error(done + 1, traceback.format_exc() + "\nreeld log:\n" + server.log(4000))
    finally:
        server.kill()
        if keep:
            say(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    elapsed = time.monotonic() - t_start
    res = {"cycles": done, "operations": checked, "checks": checks_total,
           "violations": L.violations, "errors": L.errors, "seconds": elapsed, "seed": seed,
           "acked": dict(L.acked), "inflight": dict(L.inflight),
           "inflight_kv": dict(inflight_kv),
           "append_resolved": dict(L.append_resolved), "send_resolved": dict(L.send_resolved),
           "stop_code": stop_code}
    report(res, out)
    return res


def report(res, out):
    p = lambda s: print(s, file=out, flush=True)  # noqa: E731
    if res["violations"]:
        kinds = collections.Counter(k for _, k, _ in res["violations"])
        p(f"VIOLATIONS by kind: {dict(kinds)}")
        shown = collections.Counter()
        for cycle, kind, detail in res["violations"]:
            shown[kind] += 1
            if shown[kind] <= 5:
                p(f"  cycle {cycle}: {kind}: {detail[:2000]}")
    for cycle, detail in res["errors"]:
        p(f"DRIVER ERROR (cycle {cycle}): {detail}")
    p(f"acknowledged {sum(res['acked'].values())} {res['acked']}")
    p(f"in flight at a kill {sum(res['inflight'].values())} {res['inflight']}; KV writes among "
      f"them {res['inflight_kv']}; appends retried {res['append_resolved']}; sends retried "
      f"{res['send_resolved']}")
    p(f"checks over all verifications {res['checks']}, {res['seconds']:.1f}s, seed {res['seed']}")
    p(f"cycles: {res['cycles']}, operations verified: {res['operations']}, "
      f"violations: {len(res['violations'])}")


def test_kill_9_loses_nothing_acknowledged():
    import io
    buf = io.StringIO()
    res = run_crash_test(cycles=10, out=buf)
    print(buf.getvalue())
    assert not res["errors"], "driver errors:\n" + "\n".join(d for _, d in res["errors"])
    assert res["cycles"] == 10
    assert not res["violations"], buf.getvalue()


def main(argv=None):
    faulthandler.register(signal.SIGUSR1)     # kill -USR1 <pid>: every thread's stack
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cycles", type=int, default=10)
    ap.add_argument("--long", action="store_true", help="200 cycles")
    ap.add_argument("--seed", type=int)
    ap.add_argument("--keep", action="store_true", help="keep the data dir and reeld logs")
    ap.add_argument("--quiet", action="store_true", help="only the totals")
    a = ap.parse_args(argv)
    cycles = 200 if a.long else a.cycles
    res = run_crash_test(cycles=cycles, seed=a.seed, keep=a.keep, verbose=not a.quiet)
    bad = res["violations"] or res["errors"] or res["cycles"] != cycles
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
