"""The synchronous client: `reel.connect(addr)`.

One Client holds one gRPC channel, thread-safe, shared by its parts:
`client.kv`, `client.runs`, `client.journal`, `client.signals`,
`client.events`. Iterators (watch, tail, follow, list pages) are
single-consumer: iterate each from one thread. A Run handle's heartbeats
run on a daemon thread of their own.

Retries. Every call waits for the channel to connect, up to its deadline
(`wait_for_ready`), so a request is never sent into a reeld that is not
there. A call whose request went out and came back UNAVAILABLE is retried
only when repeating it cannot write twice: reads, heartbeats, appends with
an idempotency key, signal sends with a signal_id (one is made up when none
is given), acknowledgements, BeginRun (which returns the run it created).
Plain writes (put, delete, end, suspend, claim) raise Unavailable: whether
they were applied is unknown, and only the caller knows whether to repeat
them (`kv.update` re-reads; an idempotency key makes an append safe).
Streams (watch, tail, follow) reconnect after UNAVAILABLE and resume where
they were, for as long as `reconnect_timeout` allows.
"""
from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
import uuid
import weakref
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import grpc

from reel import _core, _diagnose, _rpc, errors
from reel._core import TLS, CasEntry, Settings
from reel._health import health_pb2
from reel.types import (DELETE, Artifact, ArtifactEvent, Consumer, Entry, Event, Head,
                        JournalEntry, RawJSON, RunInfo, RunStatus, SendResult, ServerStatus,
                        Signal, ValueEvent, encode_json, encode_optional_json)
from reel.v1 import admin_pb2, journal_pb2, kv_pb2, signals_pb2, wal_pb2, workspace_pb2

# Requests built through these name an argument protobuf refuses (a key
# that is not a str, text with a lone surrogate) in a TypeError or
# ValueError before anything is sent (see _core.req_pb).
admin_pb2, journal_pb2, kv_pb2, signals_pb2, wal_pb2, workspace_pb2 = map(
    _core.checked, (admin_pb2, journal_pb2, kv_pb2, signals_pb2, wal_pb2, workspace_pb2))

__all__ = ["connect", "Client", "KV", "Runs", "Run", "Journal", "Signals", "Events", "Watch",
           "Worker", "Workspace", "ArtifactWatch",
           "Tail", "Follow"]


def connect(addr: Optional[str] = None, *, token: Optional[str] = None,
            tls: Union[bool, TLS, None] = None, timeout: Optional[float] = 30.0,
            wait_for_ready: bool = True, retries: int = 5,
            reconnect_timeout: Optional[float] = 60.0,
            max_message_bytes: Optional[int] = None,
            options: Sequence[Tuple[str, Any]] = ()) -> "Client":
    """A client of the reeld at addr (HOST[:PORT]; default $REEL_ADDR, else
    127.0.0.1:7878; a host alone means port 7878).

    token: sent as `authorization: Bearer <token>` on every call (reeld
        --auth token); default $REEL_TOKEN, "" for none.
    tls: True (the system's roots verify reeld) or reel.TLS(ca=, cert=,
        key=, server_name=) (PEM bytes or files; cert and key for mTLS);
        default from REEL_TLS_CA, REEL_TLS_CERT, REEL_TLS_KEY and
        REEL_TLS=1 as reelctl reads them; False for plaintext. Files are
        read here: one that cannot be read is a ValueError naming it.
    timeout: each unary call's deadline in seconds (None: none).
    wait_for_ready: calls wait for the connection (up to their deadline)
        instead of failing at once while reeld is unreachable.
    retries: how often a call that is safe to repeat is retried after
        UNAVAILABLE.
    reconnect_timeout: how long a stream keeps reconnecting before it
        raises Unavailable (None: forever).
    max_message_bytes: the largest message sent or received (gRPC's default
        is 4 MiB, which is reeld's default --max-response-bytes; raise both
        together).
    options: further gRPC channel options.

    Connecting is lazy: nothing is sent until the first call."""
    return Client(_core.settings(addr, token, tls, timeout, wait_for_ready, retries,
                                 reconnect_timeout, max_message_bytes, options))


# How much longer than the wait itself an AwaitSignal may take to answer
# when the client has no deadline of its own.
_AWAIT_MARGIN = 30.0


def _status_name(status) -> str:
    return status.name if isinstance(status, RunStatus) else str(status)


def _ended_as(status: RunStatus) -> str:
    """The Worker counter of a run fn left in status (not RUNNING)."""
    if status == RunStatus.WAITING:
        return "parked"
    if status == RunStatus.COMPLETED:
        return "completed"
    if status in (RunStatus.FAILED, RunStatus.CANCELLED):
        return "failed"
    return "left"


def default_owner() -> str:
    """A lease owner naming this process: host:pid:random."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


# grpc.ChannelConnectivity.READY as grpcio's channel reports it.
_READY = grpc.ChannelConnectivity.READY.value[0]
_FAILING = grpc.ChannelConnectivity.TRANSIENT_FAILURE.value[0]
_CONNECTING = grpc.ChannelConnectivity.CONNECTING.value[0]


class Client:
    """A connection to one reeld. Thread-safe. Close it (or use `with`)."""

    def __init__(self, settings: Settings):
        if not isinstance(settings, Settings):
            raise TypeError(f"Client: use reel.connect(addr, token=..., tls=...), which makes "
                            f"its settings; not Client({type(settings).__name__})")
        self._s = settings
        creds = settings.credentials()
        opts = settings.channel_options()
        self._channel = (grpc.secure_channel(settings.target, creds, options=opts)
                         if creds is not None else
                         grpc.insecure_channel(settings.target, options=opts))
        self._rpc = _rpc.bind(self._channel)
        self._diag = _diagnose.Diagnoser(settings)
        self._cap: Optional[float] = None
        self._closed = False
        self._runs_mu = threading.Lock()
        self._runs: "weakref.WeakSet[Run]" = weakref.WeakSet()   # heartbeating
        self.kv = KV(self)
        self.runs = Runs(self)
        self.journal = Journal(self)
        self.signals = Signals(self)
        self.events = Events(self)
        self.workspace = Workspace(self)

    @property
    def target(self) -> str:
        return self._s.target

    def worker(self, app: str, fn: Callable[["Run"], Any], *, owner: Optional[str] = None,
               concurrency: int = 1, ttl: float = 30.0, poll: float = 2.0,
               on_error: str = "fail") -> "Worker":
        """A worker for the app's runs: `worker.run()` claims runs with
        claim_next and calls fn(run) for each (see Worker)."""
        return Worker(self, app, fn, owner=owner, concurrency=concurrency, ttl=ttl, poll=poll,
                      on_error=on_error)

    def close(self) -> None:
        """Closes the channel: Run handles stop heartbeating (quietly),
        open streams and calls in flight end with `Cancelled`, and every
        call from then on raises `Cancelled` ("client is closed")."""
        self._closed = True
        with self._runs_mu:
            runs = list(self._runs)
        for run in runs:
            run._stop.set()
        self._channel.close()

    def _error(self, e: grpc.RpcError, method: str, lease: bool = False,
               req=None) -> errors.ReelError:
        """The ReelError for a failed call: Cancelled("client is closed")
        once close() was called (the channel cancels what is in flight)."""
        if self._closed:
            return _core.client_closed(method)
        return errors.from_rpc_error(
            e, method=method, lease=lease,
            request_size=req.ByteSize() if req is not None else None)

    def _explain(self, err: errors.ReelError) -> errors.ReelError:
        """err, with what keeps the channel from connecting when it is not
        (see reel._diagnose): UNAVAILABLE or a deadline waited out alone
        cannot tell a stopped reeld from a TLS mistake."""
        if self._closed or not isinstance(err, (errors.Unavailable, errors.DeadlineExceeded)):
            return err
        try:
            ready = self._channel._channel.check_connectivity_state(False) == _READY
        except Exception:                   # closed, or another grpcio: nothing to add
            ready = True
        return err if ready else _diagnose.explain(err, self._diag.look())

    def _refuse_if_mistaken(self, method: str) -> None:
        """A call that would wait for a connection the channel failed to
        make by a settings mistake (one found after an earlier call or
        stream failed) fails at once instead, saying which."""
        if not self._s.wait_for_ready or self._closed:
            return
        try:
            state = self._channel._channel.check_connectivity_state(False)
        except Exception:
            return
        # Connecting (gRPC's backoff goes between the two) may be a first
        # connection: only what is known already counts then.
        if state == _FAILING:
            d = self._diag.look()
        elif state == _CONNECTING:
            d = self._diag.cached()[1]
        else:
            return
        err = _diagnose.refusal(method, d)
        if err is not None:
            raise err

    def _invoke(self, method: str, fn, *args, **kwargs):
        """fn(*args, **kwargs), a gRPC call's start: on a closed client
        Cancelled("client is closed"), not grpc's ValueError."""
        if self._closed:
            raise _core.client_closed(method)
        try:
            return fn(*args, **kwargs)
        except ValueError:
            if self._closed:        # closed meanwhile, by another thread
                raise _core.client_closed(method) from None
            raise

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _reachable(self, timeout: Optional[float]) -> float:
        """Now, once the channel is connected (with wait_for_ready, up to
        timeout): a call that waits for reeld to come back is sent then,
        not when it was made. A channel not connected is waited for by a
        health check, which waits as any call does (channel_ready_future's
        thread outlives it and fails when the channel closes)."""
        if not self._s.wait_for_ready or self._closed:
            return time.monotonic()
        try:                                # grpcio's own state, without a connect
            ready = self._channel._channel.check_connectivity_state(False) == _READY
        except Exception:                   # closed, or another grpcio: no wait
            ready = True
        if not ready:
            try:
                self._rpc.health.Check(health_pb2.HealthCheckRequest(), timeout=timeout,
                                       wait_for_ready=True)
            except (grpc.RpcError, ValueError):
                pass                        # the call says what happened
        return time.monotonic()

    def _call(self, service: str, method: str, req, *, safe: bool = False,
              lease: bool = False, timeout: Optional[float] = None,
              sent: Optional[List[float]] = None):
        """One unary call; retried after UNAVAILABLE only when safe, and
        after a full write queue always (nothing was written). sent, a
        list, gets the time the answered attempt left, once reeld could be
        reached: a lease granted by the answer began no sooner."""
        fn = getattr(getattr(self._rpc, service), method)
        deadline = timeout if timeout is not None else self._s.timeout
        attempt = 0
        self._refuse_if_mistaken(method)
        while True:
            if sent is not None:
                sent[:] = [self._reachable(deadline)]
            try:
                return self._invoke(method, fn, req, timeout=deadline,
                                    metadata=self._s.metadata,
                                    wait_for_ready=self._s.wait_for_ready)
            except grpc.RpcError as e:
                err = self._error(e, method, lease, req)
            if not ((safe and _core.unary_retryable(err)) or _core.queue_full(err)) \
                    or attempt >= self._s.retries:
                raise self._explain(err)
            time.sleep(_core.backoff(attempt))
            attempt += 1

    def _stream(self, service: str, method: str, req):
        fn = getattr(getattr(self._rpc, service), method)
        return self._invoke(method, fn, req, metadata=self._s.metadata)

    def status(self) -> ServerStatus:
        """reeld's version, revision, data dir, writability and limits."""
        return ServerStatus._from_pb(
            self._call("admin", "GetStatus", admin_pb2.GetStatusRequest(), safe=True))

    def health(self, service: str = "") -> str:
        """The standard health check: "SERVING", "NOT_SERVING" (writes are
        refused after a failed write), ... for the server or one service."""
        resp = self._call("health", "Check", health_pb2.HealthCheckRequest(service=service),
                          safe=True)
        return health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status)

    def _signal_cap(self) -> float:
        if self._cap is None:
            self._cap = self.status().signal_max_wait_ms / 1000.0 or 300.0
        return self._cap


class _Resumable:
    """What watch, tail and follow share: a stream that close() can cancel
    from any thread, and a pause between reconnects that close() ends."""

    # Streams that break are opened again (a Watch made with resume=False
    # is not): _lookup reads it too, for every kind.
    _resume = True

    def __init__(self, client: Client):
        self._c = client
        self._call = None
        self._closed = False
        self._stop = threading.Event()
        self._failed = False   # the stream ended with an error
        self.reconnects = 0
        # The generator sees this object through a weak proxy: a handle
        # nobody holds (a `for` loop left by break) is freed at once, and
        # __del__ ends its stream, instead of a cycle waiting for the
        # garbage collector with the stream open on reeld.
        self._it = type(self)._run(weakref.proxy(self))

    def __iter__(self):
        return self

    def __next__(self):
        try:
            return next(self._it)
        except StopIteration:
            raise
        except Exception:
            self._failed = True
            raise

    def __del__(self) -> None:
        # Only the stream: a dropped tail's final ack would be a call made
        # from a finalizer (its events come again, as after a crash).
        with contextlib.suppress(Exception):
            _Resumable.close(self)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Ends the stream. Safe from any thread; the iterator then stops."""
        self._closed = True
        self._stop.set()
        call = self._call
        if call is not None:
            call.cancel()
        with contextlib.suppress(ValueError):   # running in another thread
            self._it.close()

    def _reconnect(self, clock: _core.ReconnectClock, err: errors.ReelError) -> bool:
        """Waits before the next stream; False if closed meanwhile. A
        settings mistake (a TLS one) is raised at once: no retry mends it."""
        err = self._c._explain(err)
        if _diagnose.settings_mistake(err):
            raise err
        pause = clock.failed(err)
        self.reconnects += 1
        return not self._stop.wait(pause)

    def _lookup(self, clock: _core.ReconnectClock, fn: Callable[[], Any]) -> Any:
        """fn() (a read a resumed snapshot needs), tried again while
        reeld is unreachable, within the reconnect limit as a stream is:
        its event cannot be had from the next stream."""
        while True:
            try:
                return fn()
            except errors.Unavailable as err:
                if not (self._resume and self._reconnect(clock, err)):
                    raise

    def _run(self):
        raise NotImplementedError


class Watch(_Resumable):
    """`kv.watch`'s iterator of ValueEvents: the replayed part, one
    BOOTSTRAP_DONE, then every change as it commits, across reconnects and
    reeld restarts without a gap or a repeat (see reel._core). `revision`
    is where a new watch would resume (from_revision=), once known."""

    def __init__(self, client: Client, cursor: _core.WatchCursor, resume: bool):
        self._cursor = cursor
        self._resume = resume
        super().__init__(client)

    @property
    def revision(self) -> Optional[int]:
        return self._cursor.resume_revision

    @property
    def bootstrapped(self) -> bool:
        return self._cursor.bootstrapped

    def _run(self) -> Iterator[ValueEvent]:
        clock = _core.ReconnectClock(self._c._s.reconnect_timeout)
        try:
            while not self._closed:
                try:
                    self._call = self._c._stream("kv", "WatchValueBatches", self._cursor.request())
                    for batch in self._call:
                        clock.ok()
                        for pb in batch.events:
                            for item in self._cursor.feed(pb):
                                if isinstance(item, _core.Vanished):
                                    v = item
                                    item = self._lookup(clock, lambda: _core.WatchCursor.vanished_event(
                                        v, self._c.kv.history(self._cursor.namespace, v.key,
                                                              from_version=v.version)))
                                yield item
                    return
                except grpc.RpcError as e:
                    if self._closed:
                        return
                    err = self._c._error(e, "WatchValueBatches")
                    if not (self._resume and _core.stream_resumable(err)):
                        raise self._c._explain(err) from None
                    if not self._reconnect(clock, err):
                        return
        finally:
            with contextlib.suppress(ReferenceError):   # its handle is gone
                if self._call is not None:
                    self._call.cancel()


class KV:
    """Versioned JSON values in namespaces: `client.kv`."""

    def __init__(self, client: Client):
        self._c = client

    def get(self, namespace: str, key: str, *, include_deleted: bool = False) -> Optional[Entry]:
        """The key's entry, or None when it is missing or deleted (with
        include_deleted, a deleted key's tombstone). Retried: a read."""
        resp = self._c._call("kv", "GetValue",
                             kv_pb2.GetValueRequest(namespace=namespace, key=key), safe=True)
        if resp.found:
            return Entry._from_pb(resp.entry)
        if include_deleted and resp.HasField("entry") and resp.entry.deleted:
            return Entry._from_pb(resp.entry)
        return None

    def put(self, namespace: str, key: str, value: Any, *, create: bool = False,
            if_version: Optional[int] = None, writer: Optional[str] = None) -> Entry:
        """Sets the key to value (a Python object sent as JSON, or RawJSON)
        once synced to disk, and returns the entry written (its version and
        revision). create=True: only if the key is missing or deleted, else
        AlreadyExists. if_version=N: only if its version is N (0: missing),
        else Conflict naming the current version. Nothing is written when
        a precondition fails. Not retried (see the module's docstring)."""
        req = _core.set_request(namespace, key, encode_json(value, "value"), create, if_version,
                                writer)
        return Entry._from_pb(self._c._call("kv", "SetValue", req).entry)

    def delete(self, namespace: str, key: str, *, if_version: Optional[int] = None,
               writer: Optional[str] = None) -> Optional[Entry]:
        """Deletes the key (a tombstone at version+1) and returns the
        tombstone, or None when there was nothing to delete (nothing is
        written). if_version=N: only if its version is N, else Conflict."""
        resp = self._c._call("kv", "DeleteValue",
                             _core.delete_request(namespace, key, if_version, writer))
        return Entry._from_pb(resp.entry) if resp.existed else None

    def list(self, namespace: str, prefix: str = "", *, start_after: str = "",
             include_deleted: bool = False, page_size: int = 0) -> Iterator[Entry]:
        """Every entry of the namespace whose key starts with prefix, in key
        order, fetched page by page (page_size: reeld's limit per page, 0 for
        its default) as the iteration goes."""
        req = kv_pb2.ListValuesRequest(namespace=namespace, prefix=prefix,
                                       start_after=start_after, limit=page_size,
                                       include_deleted=include_deleted)
        while True:
            resp = self._c._call("kv", "ListValues", req, safe=True)
            for e in resp.entries:
                yield Entry._from_pb(e)
            if not resp.more:
                return
            req.start_after = resp.next_start_after

    def history(self, namespace: str, key: str, *, from_version: int = 0,
                page_size: int = 0) -> Iterator[ValueEvent]:
        """The key's retained versions after from_version, oldest first, each
        a transition (value and previous value), page by page."""
        req = kv_pb2.ValueHistoryRequest(namespace=namespace, key=key,
                                         from_version=from_version, limit=page_size)
        while True:
            resp = self._c._call("kv", "ValueHistory", req, safe=True)
            for e in resp.events:
                yield ValueEvent._from_pb(e)
            if not resp.more:
                return
            req.from_version = resp.next_from_version

    def _read(self, namespace: str, key: str) -> CasEntry:
        resp = self._c._call("kv", "GetValue",
                             kv_pb2.GetValueRequest(namespace=namespace, key=key), safe=True)
        read, version = _core.read_version(resp)
        return CasEntry(namespace, key, read, version)

    def _write(self, entry: CasEntry, writer: Optional[str]) -> None:
        if entry._op == "put":
            entry.result = self.put(entry.namespace, entry.key, entry.value,
                                    if_version=entry.version, writer=writer)
        elif entry._op == "delete":
            entry.result = self.delete(entry.namespace, entry.key, if_version=entry.version,
                                       writer=writer)

    @contextlib.contextmanager
    def cas(self, namespace: str, key: str, *, writer: Optional[str] = None
            ) -> Iterator[CasEntry]:
        """Reads the key and hands the block a CasEntry; on a clean exit,
        writes what the block set (entry.value = ..., or entry.delete()) only
        if the key still has the version read. Otherwise Conflict, whose
        current_version is the key's version now, and nothing is written.
        An exception in the block writes nothing."""
        entry = self._read(namespace, key)
        yield entry
        self._write(entry, writer)

    def update(self, namespace: str, key: str, fn: Callable[[Any], Any], *, retries: int = 10,
               writer: Optional[str] = None) -> Optional[Entry]:
        """Sets the key to fn(current value) (None when missing or deleted;
        return reel.DELETE to delete it) as one compare-and-swap, re-reading
        and calling fn again each time another writer got in between, up to
        `retries` times; then the last Conflict is raised. No update is
        lost: each write presents the version its fn saw. Returns the entry
        written (the tombstone for a delete; None if there was nothing to
        delete)."""
        attempt = 0
        while True:
            entry = self._read(namespace, key)
            new = fn(entry.value)
            if new is DELETE:
                entry.delete()
            else:
                entry.value = new
            try:
                self._write(entry, writer)
                return entry.result
            except errors.Conflict:
                if attempt >= retries:
                    raise
            time.sleep(_core.conflict_pause(attempt))
            attempt += 1

    def watch(self, namespace: str, key: str, *, from_revision: Optional[int] = None,
              from_version: Optional[int] = None, now: bool = False,
              resume: bool = True) -> Watch:
        """Watches an exact key or a pattern (`pipeline.*.raw`, `orders.>`).
        Starts with the current value of every matching key, then one event
        of type BOOTSTRAP_DONE, then each change as it commits; now=True
        skips the snapshot, from_version=N (exact key) replays the versions
        after N, from_revision=R every matching change after revision R.
        Each event is a transition: value and version, and the ones before.
        With resume (the default) a lost connection or a reeld restart is
        bridged without losing or repeating an event; OutOfRange if the
        history needed to bridge it was trimmed meanwhile."""
        cursor = _core.WatchCursor(namespace, key, from_revision=from_revision,
                                   from_version=from_version, now=now)
        return Watch(self._c, cursor, resume)


class Follow(_Resumable):
    """`journal.follow`'s iterator of a run's entries after a seq: stored
    ones, then new ones as they commit; it ends once the run has ended.
    Reconnects resume after the last seq delivered."""

    def __init__(self, client: Client, cursor: _core.FollowCursor):
        self._cursor = cursor
        super().__init__(client)

    @property
    def seq(self) -> int:
        return self._cursor.seq

    def _run(self) -> Iterator[JournalEntry]:
        clock = _core.ReconnectClock(self._c._s.reconnect_timeout)
        try:
            while not self._closed:
                try:
                    self._call = self._c._stream("journal", "SubscribeRun",
                                                 self._cursor.request())
                    for pb in self._call:
                        clock.ok()
                        e = self._cursor.feed(pb)
                        if e is not None:
                            yield e
                    return
                except grpc.RpcError as e:
                    if self._closed:
                        return
                    err = self._c._error(e, "SubscribeRun")
                    if not _core.stream_resumable(err):
                        raise self._c._explain(err) from None
                    if not self._reconnect(clock, err):
                        return
        finally:
            with contextlib.suppress(ReferenceError):   # its handle is gone
                if self._call is not None:
                    self._call.cancel()


class Journal:
    """Reading runs' journals: `client.journal`. Writing goes through a Run."""

    def __init__(self, client: Client):
        self._c = client

    def read(self, run_id: str, from_seq: int = 0, *, page_size: int = 0
             ) -> Iterator[JournalEntry]:
        """The run's entries after from_seq, in seq order, page by page."""
        req = journal_pb2.ReadJournalRequest(run_id=run_id, from_seq=from_seq, limit=page_size)
        while True:
            resp = self._c._call("journal", "ReadJournal", req, safe=True)
            for e in resp.entries:
                yield JournalEntry._from_pb(e)
            if not resp.more:
                return
            req.from_seq = resp.next_from_seq

    def follow(self, run_id: str, from_seq: int = 0) -> Follow:
        """The run's entries after from_seq, then new ones as they commit,
        until the run ends (see Follow)."""
        return Follow(self._c, _core.FollowCursor(run_id, from_seq))


# Run.close()'s wait for a heartbeat in flight (the thread is a daemon).
_CLOSE_WAIT = 1.0


class Run:
    """A run this worker holds the lease of (from `runs.begin` or
    `runs.claim`). While it holds it, a daemon thread heartbeats every third
    of the TTL. The handle stops writing the moment the lease is lost:
    when reeld refuses its epoch (another worker claimed the run), or when
    no heartbeat got through before the lease's TTL ran out; from then on
    every write raises LeaseLost without reaching reeld. `end` and
    `suspend` give the lease up. Use it from one thread at a time.

    `step` and `wait_for_signal` are durable: their outcomes are journaled,
    and a run resumed by another handle (another process, after a crash)
    gets the same outcomes back without doing the work again."""

    def __init__(self, client: Client, info: RunInfo, ttl: float, sent_at: float,
                 heartbeat: bool):
        self._c = client
        self.info = info
        self.run_id = info.run_id
        self.epoch = info.lease_epoch
        self.owner = info.lease_owner
        self.ttl = ttl
        self._lease = _core.Lease(ttl, sent_at)
        self._replay = _core.Replay(self.run_id)
        # The journal's last seq when a step's append failed without an
        # answer (None: none did): its entry may be there all the same.
        self._steps_unsure: Optional[int] = None
        self._mu = threading.RLock()
        self._last_seq = info.next_seq - 1
        self._stop = threading.Event()
        self._hb: Optional[threading.Thread] = None
        if info.status != RunStatus.RUNNING:
            self._lease.release(f"the run is {_status_name(info.status)}")
        elif heartbeat:
            # The thread holds the handle weakly: a handle nobody holds (an
            # exception before `with run:`) stops heartbeating once freed,
            # and its lease runs out for another worker to claim.
            self._hb = threading.Thread(target=Run._heartbeats_of,
                                        args=(weakref.ref(self), self._stop),
                                        daemon=True,
                                        name=f"reel-heartbeat-{self.run_id}")
            with client._runs_mu:
                client._runs.add(self)      # client.close() stops the heartbeats
            self._hb.start()

    def __enter__(self) -> "Run":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Run({self.run_id!r}, epoch={self.epoch}, status={self.info.status!r})"

    @property
    def resumed(self) -> bool:
        """BeginRun found the run already there: a resumed run."""
        return self.info.resumed

    @property
    def lease_lost(self) -> Optional[errors.LeaseLost]:
        """The LeaseLost the handle's writes raise, once the lease is gone."""
        return self._lease.lost

    def wait_lease_lost(self, timeout: Optional[float] = None) -> bool:
        """Blocks until the lease is lost (True) or timeout passes (False)."""
        end = None if timeout is None else time.monotonic() + timeout
        while True:
            try:
                self._lease.check(self.run_id, self.epoch)
            except errors.LeaseLost:
                return True
            wait = max(0.0, self._lease.until_expiry())
            if end is not None:
                left = end - time.monotonic()
                if left <= 0:
                    return False
                wait = min(wait, left)
            self._lease.lost_event.wait(wait)

    def close(self) -> None:
        """Stops heartbeating (the run is left as it is: a lease nobody
        renews expires, and another worker can claim the run). Returns
        within a second: a heartbeat in flight (reeld unreachable, say)
        is left to end on its own deadline, its thread then gone."""
        self._stop.set()
        if self._hb is not None and self._hb is not threading.current_thread():
            self._hb.join(_CLOSE_WAIT)

    @staticmethod
    def _heartbeats_of(ref: "weakref.ref[Run]", stop: threading.Event) -> None:
        attempt: Optional[int] = 0
        while attempt is not None:
            run = ref()
            if run is None:
                return
            pause = max(0.01, run.ttl / 3) if attempt == 0 else _core.backoff(attempt)
            del run
            if stop.wait(pause):
                return
            run = ref()
            if run is None:
                return
            attempt = run._heartbeat(attempt)
            del run

    def _heartbeat(self, attempt: int) -> Optional[int]:
        """One heartbeat: the next attempt's number (0 after a renewal), or
        None to stop."""
        try:
            self._lease.check(self.run_id, self.epoch)
        except errors.LeaseLost:
            return None
        sent = [time.monotonic()]
        left = self._lease.deadline - sent[0]
        limit = left if self._c._s.timeout is None else min(left, self._c._s.timeout)
        try:
            info = RunInfo._from_pb(self._c._call(
                "journal", "Heartbeat", journal_pb2.HeartbeatRequest(
                    run_id=self.run_id, lease_epoch=self.epoch,
                    lease_ttl_ms=_core.ttl_ms(self.ttl)),
                lease=True, timeout=max(0.001, limit), sent=sent))
        except errors.LeaseLost as e:
            self._lease.lose(e)
            return None
        except (errors.Unavailable, errors.DeadlineExceeded):
            return attempt + 1              # until the lease runs out
        except errors.ReelError as e:
            if self._c._closed:             # client.close(): stop, quietly
                return None
            self._lease.lose(errors.LeaseLost(
                f"run {self.run_id}: a heartbeat failed, so the lease cannot be kept: {e}",
                method="Heartbeat", from_server=False))
            return None
        self._lease.renewed(sent[0])
        self.info = info
        return 0

    def _check(self) -> None:
        self._lease.check(self.run_id, self.epoch)

    def _write(self, service: str, method: str, req, *, safe: bool = False,
               timeout: Optional[float] = None, sent: Optional[List[float]] = None):
        self._check()
        try:
            return self._c._call(service, method, req, safe=safe, lease=True, timeout=timeout,
                                 sent=sent)
        except errors.LeaseLost as e:
            raise self._lease.lose(e) from None

    def _saw(self, seq: int) -> None:
        with self._mu:
            self._last_seq = max(self._last_seq, seq)

    def heartbeat(self) -> RunInfo:
        """Renews the lease now (the background thread does it anyway)."""
        sent = [time.monotonic()]
        info = RunInfo._from_pb(self._write("journal", "Heartbeat", journal_pb2.HeartbeatRequest(
            run_id=self.run_id, lease_epoch=self.epoch, lease_ttl_ms=_core.ttl_ms(self.ttl)),
            safe=True, sent=sent))
        self._lease.renewed(sent[0])
        self.info = info
        return info

    def append(self, kind: str, payload: Any = None, *, key: Optional[str] = None,
               expected_seq: Optional[int] = None) -> JournalEntry:
        """Appends an entry (payload: a Python object sent as JSON, or
        RawJSON) under the lease, durable before it returns, and returns it
        with its seq. With an idempotency key a retry writes nothing (the
        original comes back with duplicate=True), so it is retried after
        UNAVAILABLE; the key with another kind or payload is AlreadyExists.
        expected_seq: only if the entry gets this seq, else Conflict."""
        req = journal_pb2.AppendRequest(run_id=self.run_id, lease_epoch=self.epoch, kind=kind,
                                        payload=encode_json(payload, "payload"),
                                        idempotency_key=key or "",
                                        expected_seq=expected_seq or 0)
        resp = self._write("journal", "Append", req, safe=bool(key))
        e = JournalEntry._from_pb(resp.entry, resp.duplicate)
        self._saw(e.seq)
        return e

    def read(self, from_seq: int = 0, *, page_size: int = 0) -> Iterator[JournalEntry]:
        """This run's journal after from_seq (see Journal.read)."""
        return self._c.journal.read(self.run_id, from_seq, page_size=page_size)

    def follow(self, from_seq: int = 0) -> Follow:
        """This run's journal after from_seq, then live (see Journal.follow)."""
        return self._c.journal.follow(self.run_id, from_seq)

    def suspend(self, waiting_on: str, *, timeout: Optional[float] = None) -> RunInfo:
        """Parks the run (WAITING, no lease) until a signal named waiting_on
        arrives, which makes it RUNNABLE for a worker to claim (at once if
        one is pending). timeout: seconds after which reeld's timer makes
        it RUNNABLE anyway (reason SIGNAL_TIMEOUT), journaling a "signal"
        entry with "timed_out": true; None waits for ever. The handle
        gives the lease up: its writes raise LeaseLost from then on."""
        info = RunInfo._from_pb(self._write("journal", "SuspendRun", journal_pb2.SuspendRunRequest(
            run_id=self.run_id, lease_epoch=self.epoch, waiting_on=waiting_on,
            timeout_ms=_core.timeout_ms(timeout, "timeout"))))
        self._lease.release(f"it suspended the run (WAITING on {waiting_on!r})")
        self.info = info
        self.close()
        return info

    def end(self, result: Any = None, *, status: Union[RunStatus, str] = RunStatus.COMPLETED
            ) -> RunInfo:
        """Ends the run (COMPLETED, FAILED or CANCELLED) with an optional
        result (a Python object sent as JSON, or RawJSON); the run takes no
        more writes, and the handle gives the lease up. On a run that has
        already ended with this status (begin() of a finished run, whose
        steps replay, or end() twice) it writes nothing and returns the run
        as it ended, its first result kept; another status is LeaseLost."""
        if _core.ended_as(self.info, status):
            self.close()
            return self.info
        info = RunInfo._from_pb(self._write("journal", "EndRun", journal_pb2.EndRunRequest(
            run_id=self.run_id, lease_epoch=self.epoch, status=_core.status_value(status),
            result=encode_optional_json(result, "result"))))
        self._lease.release(f"it ended the run ({_status_name(info.status)})")
        self.info = info
        self.close()
        return info

    def _ensure_replay(self) -> None:
        with self._mu:
            if not self._replay.loaded:
                entries = list(self._c.journal.read(self.run_id))
                self._replay.load(entries)
                if entries:
                    self._saw(entries[-1].seq)

    def step(self, name: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """A durable step: the first time the run reaches it, calls
        fn(*args, **kwargs) and journals its result (JSON) under an
        idempotency key made of the step's position and name; on a resumed
        run, returns the journaled result without calling fn. Either way
        it returns the result as JSON gives it back (tuples become lists),
        so both runs see the same value. fn runs only while the lease is
        held; if it raises, nothing is journaled and the exception
        propagates (a resumed run calls fn again). Whatever fails (fn, the
        journal's read, the append) the step gives its position back when
        no other step took one since: code that calls the step again after
        a failure (a retry) takes the same position, on its first run and
        on replay; after an append that got no answer the retry reads the
        journal first, and returns the result if it was written. A step fn may have run
        without its result being journaled (a crash in between), so give
        external effects their own idempotency (e.g. the step's key:
        f"{run.run_id}/step:{n}:{name}"). ReplayMismatch if the journal
        holds another step at this position."""
        with self._mu:
            n = self._replay.next_step(name)
        try:
            self._ensure_replay()
            self._recheck_steps()
            found, result = self._replay.recorded_step(n, name)
            if found:
                return result
            self._check()
            value = fn(*args, **kwargs)
            text, result = _core.step_payload(n, name, value)
            with self._mu:
                after = self._last_seq
            try:
                self.append(_core.STEP_KIND, RawJSON(text), key=_core.step_key(n, name))
            except BaseException:
                # No answer is not "not written": a retry reads the journal
                # first, and returns the result if it was.
                with self._mu:
                    if self._steps_unsure is None:
                        self._steps_unsure = after
                raise
            return result
        except BaseException:
            # Whatever failed (the journal's read, fn, the append), the
            # position is given back, so a retry takes the same one.
            with self._mu:
                self._replay.step_failed(n)
            raise

    def _recheck_steps(self) -> None:
        """After a step's append that got no answer: the steps journaled
        since, read from reeld."""
        with self._mu:
            after = self._steps_unsure
        if after is None:
            return
        read = list(self._c.journal.read(self.run_id, after))
        with self._mu:
            self._replay.load([e for e in read if e.kind == _core.STEP_KIND])
            self._steps_unsure = None
        if read:
            self._saw(read[-1].seq)

    def wait_for_signal(self, name: str, timeout: Optional[float] = None, *,
                        park: bool = True) -> Optional[Signal]:
        """Consumes the oldest pending signal of this name and returns it,
        or None once timeout seconds passed without one (None: no timeout).
        Durable: the consumption is journaled by reeld in the same commit,
        and so is a timeout, so a resumed run's k-th wait for a name
        returns what the first run's k-th wait returned, at once.

        park=True (the default): with no signal pending, the run is parked
        (SuspendRun with timeout_ms: WAITING, the lease given up) and
        `reel.Suspended` is raised to end the run's code; reeld makes the
        run RUNNABLE when the signal arrives or its timer fires the timeout
        (counted from the park), a worker claims it, and this call, reached
        again by replay, returns the signal or None. The timeout is reeld's
        timer, not this process's clock.

        park=False: waits here holding the lease (heartbeats go on), as
        AwaitSignals of up to reeld's cap; the timeout is this process's
        clock, journaled by the client as a "signal.timeout" entry. A lost
        answer is resolved from the journal, never by consuming a second
        signal."""
        if timeout is not None:
            timeout = _core.seconds(timeout, "timeout")
        with self._mu:
            self._ensure_replay()
            n, outcome = self._replay.next_wait(name)
        if outcome is not None:
            return outcome.delivered
        if not park or (timeout is not None and timeout <= 0):
            return self._block(name, n, timeout)
        got = self._block(name, n, 0.0, record_timeout=False)
        if got is not None:
            return got
        self._park(name, timeout)

    def sleep(self, seconds: float, *, park: bool = True) -> None:
        """Sleeps on reeld's clock: sends this run a signal (named
        reel.sleep.<n>, n counting the handle's sleeps) for delivery in
        `seconds` by a durable timer, and waits for it. park=True (the
        default): parks the run until then (`reel.Suspended` is raised; a
        worker takes the run again when the timer fires); park=False:
        waits here holding the lease. A resumed run whose journal shows
        this sleep done returns at once, and one that crashed mid-sleep
        wakes at the time first set (the signal's id is fixed, so sending
        it again changes nothing)."""
        seconds = _core.seconds(seconds, "sleep")
        with self._mu:
            self._ensure_replay()
            name, done = self._replay.next_sleep()
        if done:
            return
        self._check()
        sent = self._c.signals.send(self.run_id, name, None, signal_id=name, delay=seconds)
        if park and sent.signal.scheduled:
            self._park(name, None)
        self._block(name, -1, None, record_timeout=False)

    def _park(self, name: str, timeout: Optional[float]) -> None:
        info = self.suspend(name, timeout=timeout)
        raise errors.Suspended(self.run_id, name, info)

    def _block(self, name: str, n: int, timeout: Optional[float], *,
               record_timeout: bool = True) -> Optional[Signal]:
        """AwaitSignals holding the lease until a signal of the name is
        consumed, or timeout (None: never) passes: then a "signal.timeout"
        entry for the n-th wait is journaled (if record_timeout) and None
        returned."""
        end = None if timeout is None else time.monotonic() + max(0.0, timeout)
        cap = self._c._signal_cap()
        attempt = 0
        while True:
            left = None if end is None else max(0.0, end - time.monotonic())
            wait = cap if left is None else min(cap, left)
            floor = self._last_seq
            req = signals_pb2.AwaitSignalRequest(run_id=self.run_id, name=name,
                                                 lease_epoch=self.epoch,
                                                 timeout_ms=int(wait * 1000))
            try:
                resp = self._write("signals", "AwaitSignal", req,
                                   timeout=wait + (self._c._s.timeout or _AWAIT_MARGIN))
            except (errors.Unavailable, errors.DeadlineExceeded):
                got = _core.signal_entry_for(self._c.journal.read(self.run_id, floor), name)
                if got is not None:
                    self._saw(got.seq)
                    return _core.signal_from_entry(self.run_id, got)
                time.sleep(_core.backoff(attempt))
                attempt += 1
                continue
            if resp.delivered:
                self._saw(resp.journal_seq)
                return Signal._from_pb(resp.signal)
            if end is not None and time.monotonic() >= end:
                if record_timeout:
                    self.append(_core.SIGNAL_TIMEOUT_KIND, {"name": name, "n": n},
                                key=_core.timeout_key(name, n))
                return None


class Runs:
    """Runs and their leases: `client.runs`."""

    def __init__(self, client: Client):
        self._c = client

    def begin(self, app: str, user: str, session: str, invocation_id: str, *,
              owner: Optional[str] = None, ttl: float = 30.0,
              labels: Optional[Dict[str, str]] = None, heartbeat: bool = True,
              retry: Optional[_core.RetryPolicy] = None) -> Run:
        """Begins the run named by (app, user, session, invocation_id), or
        resumes it (run.resumed) if it exists: a restarted worker gets its
        run back, with a new lease epoch. The lease (ttl seconds, owner
        default host:pid:random) is heartbeated in the background unless
        heartbeat=False. A run another worker holds is FailedPrecondition
        naming the holder; a WAITING or ended run comes back as it is, with
        a handle that holds no lease (its durable steps still replay).
        retry (a reel.RetryPolicy) and labels are used only when the run is
        created. Retried after UNAVAILABLE: beginning again returns the
        same run."""
        req = journal_pb2.BeginRunRequest(app=app, user=user, session=session,
                                          invocation_id=invocation_id,
                                          lease_owner=owner or default_owner(),
                                          lease_ttl_ms=_core.ttl_ms(ttl),
                                          labels=_core.labels_dict(labels),
                                          retry=_core.retry_pb(retry))
        sent = [0.0]
        info = RunInfo._from_pb(self._c._call("journal", "BeginRun", req, safe=True, sent=sent))
        return Run(self._c, info, ttl, sent[0], heartbeat)

    def claim(self, run_id: str, *, owner: Optional[str] = None, ttl: float = 30.0,
              heartbeat: bool = True, expected_epoch: Optional[int] = None) -> Run:
        """Takes a RUNNABLE run, or a RUNNING one whose lease expired, with
        a new epoch: the previous holder is fenced off. Of concurrent
        claimers exactly one wins; the others get FailedPrecondition.
        expected_epoch: only if the run's epoch is still that one (a
        compare-and-swap on the lease), else FailedPrecondition."""
        req = journal_pb2.ClaimRunRequest(run_id=run_id, lease_owner=owner or default_owner(),
                                          lease_ttl_ms=_core.ttl_ms(ttl),
                                          expected_epoch=expected_epoch or 0)
        sent = [0.0]
        info = RunInfo._from_pb(self._c._call("journal", "ClaimRun", req, sent=sent))
        return Run(self._c, info, ttl, sent[0], heartbeat)

    def claim_next(self, app: str, *, owner: Optional[str] = None, ttl: float = 30.0,
                   wait: Optional[float] = 30.0, heartbeat: bool = True) -> Optional[Run]:
        """The app's oldest claimable run (RUNNABLE and due: new, woken by
        a signal or a timer, or whose worker's lease expired), leased to
        this worker with a new epoch; or None when none became claimable
        within `wait` seconds (None: wait for ever; 0: answer at once).
        The wait is reeld's long poll, woken by the commit that makes a run
        claimable; each claimable run goes to exactly one caller. Not
        retried: a claim whose answer was lost holds its run until the
        lease's TTL, then the run is claimable again."""
        if wait is not None:
            wait = _core.seconds(wait, "wait (None: for ever)")
        owner = owner or default_owner()
        end = None if wait is None else time.monotonic() + wait
        while True:
            left = _core.CLAIM_WAIT_MAX if end is None else \
                min(_core.CLAIM_WAIT_MAX, max(0.0, end - time.monotonic()))
            req = journal_pb2.ClaimNextRunRequest(app=app, lease_owner=owner,
                                                  lease_ttl_ms=_core.ttl_ms(ttl),
                                                  wait_ms=int(left * 1000))
            sent = [0.0]
            resp = self._c._call("journal", "ClaimNextRun", req,
                                 timeout=left + (self._c._s.timeout or _AWAIT_MARGIN),
                                 sent=sent)
            if resp.found:
                # The lease began when the run was claimed, waited_ms after
                # the request arrived (so no sooner than sent + that).
                return Run(self._c, RunInfo._from_pb(resp.run), ttl,
                           _core.claimed_at(sent[0], resp.waited_ms), heartbeat)
            if end is not None and time.monotonic() >= end:
                return None

    def resume(self, run_id: str) -> RunInfo:
        """Makes a PAUSED run (its retries exhausted) RUNNABLE again, its
        attempts reset; FailedPrecondition for a run that is not PAUSED."""
        return RunInfo._from_pb(self._c._call("journal", "ResumeRun",
                                              journal_pb2.ResumeRunRequest(run_id=run_id)))

    def submit(self, app: str, user: str, session: str, invocation_id: str, *,
               labels: Optional[Dict[str, str]] = None,
               retry: Optional[_core.RetryPolicy] = None) -> RunInfo:
        """Creates the run for a worker to do and returns it RUNNABLE
        (reason SIGNAL) for claim_next and the worker helper: begins it and
        parks it at once on a "reel.submit" signal already sent (the
        signal stays in the run's mailbox, unconsumed). Idempotent: a run
        that exists comes back as it is, untouched; should two submits
        race, the loser's BeginRun leases the run and it parks it again.
        Retried after UNAVAILABLE."""
        for info in self.list(app, user, session):
            if info.invocation_id == invocation_id:
                return info
        # A short lease: should this process die before parking the run,
        # its expiry makes the run claimable soon anyway.
        run = self.begin(app, user, session, invocation_id, labels=labels, retry=retry,
                         heartbeat=False, owner=f"submit:{default_owner()}", ttl=5.0)
        if run.info.status != RunStatus.RUNNING:
            return run.info
        self._c.signals.send(run.run_id, _core.SUBMIT_SIGNAL, signal_id=_core.SUBMIT_SIGNAL)
        try:
            return run.suspend(_core.SUBMIT_SIGNAL)
        except errors.LeaseLost:
            return self.get(run.run_id)      # a worker has it already

    def get(self, run_id: str) -> RunInfo:
        return RunInfo._from_pb(self._c._call("journal", "GetRun",
                                              journal_pb2.GetRunRequest(run_id=run_id),
                                              safe=True))

    def list(self, app: str = "", user: str = "", session: str = "", *,
             status: Union[RunStatus, str, None] = None, page_size: int = 0
             ) -> Iterator[RunInfo]:
        """Runs in creation order, filtered (user needs app, session needs
        user), page by page."""
        req = journal_pb2.ListRunsRequest(app=app, user=user, session=session,
                                          status=_core.status_value(status) if status else 0,
                                          limit=page_size)
        while True:
            resp = self._c._call("journal", "ListRuns", req, safe=True)
            for r in resp.runs:
                yield RunInfo._from_pb(r)
            if not resp.more:
                return
            req.start_after = resp.next_start_after

    def recoverable(self, app: str = "", *, page_size: int = 0) -> Iterator[RunInfo]:
        """Runs that need a worker (RUNNABLE, or RUNNING with an expired
        lease), of one app or all, oldest first: claim them."""
        req = journal_pb2.ListRunsToRecoverRequest(app=app, limit=page_size)
        while True:
            resp = self._c._call("journal", "ListRunsToRecover", req, safe=True)
            for r in resp.runs:
                yield RunInfo._from_pb(r)
            if not resp.more:
                return
            req.start_after = resp.next_start_after


class Signals:
    """Durable point-to-point signals to runs: `client.signals`."""

    def __init__(self, client: Client):
        self._c = client

    def _send(self, req) -> SendResult:
        if not req.signal_id:
            req.signal_id = uuid.uuid4().hex   # makes the send safe to retry
        resp = self._c._call("signals", "SendSignal", req, safe=True)
        return SendResult(Signal._from_pb(resp.signal), resp.duplicate,
                          RunStatus(resp.run_status) if resp.run_status else resp.run_status)

    def send(self, run_id: str, name: str, payload: Any = None, *,
             signal_id: Optional[str] = None, deliver_at: Any = None,
             delay: Optional[float] = None) -> SendResult:
        """Stores a signal in the run's mailbox (delivered in send order per
        name, each to exactly one awaiter) and wakes a run WAITING on it.
        signal_id deduplicates (a resend is stored once, duplicate=True,
        and the original comes back); without one a random id is made, so a
        retry after UNAVAILABLE is safe. payload: a Python object sent as
        JSON, RawJSON, or None. deliver_at (an aware datetime, or Unix
        seconds) or delay (seconds from now): the signal is stored as
        scheduled (`signal.scheduled`) and delivered then by reeld's
        durable timer, exactly as if sent then; `cancel` removes it
        before."""
        return self._send(signals_pb2.SendSignalRequest(
            run_id=run_id, name=name, payload=encode_optional_json(payload, "payload"),
            signal_id=signal_id or "", deliver_at_ms=_core.deliver_at_ms(deliver_at, delay)))

    def send_to_session(self, app: str, user: str, session: str, name: str,
                        payload: Any = None, *, signal_id: Optional[str] = None,
                        deliver_at: Any = None, delay: Optional[float] = None) -> SendResult:
        """As send, to the session's newest run that has not ended."""
        return self._send(signals_pb2.SendSignalRequest(
            app=app, user=user, session=session, name=name,
            payload=encode_optional_json(payload, "payload"), signal_id=signal_id or "",
            deliver_at_ms=_core.deliver_at_ms(deliver_at, delay)))

    def cancel(self, run_id: str, signal_id: str) -> Signal:
        """Removes a scheduled signal before its delivery and returns it;
        FailedPrecondition once it was delivered, NotFound for an id the
        run has no signal of. Not retried (a lost answer may have removed
        it: list the run's signals to know)."""
        return Signal._from_pb(self._c._call("signals", "CancelSignal",
                                             signals_pb2.CancelSignalRequest(
                                                 run_id=run_id, signal_id=signal_id)))

    def wait(self, run_id: str, name: str, *, epoch: int, timeout: float = 0.0
             ) -> Optional[Signal]:
        """One AwaitSignal: consumes the oldest pending signal of the name
        (journaling it in the run, in the same commit), waiting up to
        timeout seconds (cut to reeld's cap), or None. The caller must hold
        the run's lease (epoch). Not retried: a lost answer may have
        consumed a signal; Run.wait_for_signal resolves that case."""
        timeout = _core.await_seconds(timeout, "timeout")
        req = signals_pb2.AwaitSignalRequest(run_id=run_id, name=name, lease_epoch=epoch,
                                             timeout_ms=int(timeout * 1000))
        limit = None if self._c._s.timeout is None else self._c._s.timeout + timeout
        resp = self._c._call("signals", "AwaitSignal", req, lease=True, timeout=limit)
        return Signal._from_pb(resp.signal) if resp.delivered else None

    def list(self, run_id: str, name: str = "", *, include_consumed: bool = False,
             page_size: int = 0) -> Iterator[Signal]:
        """The run's signals: pending first (in send order), then consumed."""
        req = signals_pb2.ListSignalsRequest(run_id=run_id, name=name,
                                             include_consumed=include_consumed,
                                             limit=page_size)
        while True:
            resp = self._c._call("signals", "ListSignals", req, safe=True)
            for s in resp.signals:
                yield Signal._from_pb(s)
            if not resp.more:
                return
            req.after_seq = resp.next_after_seq
            req.after_consumed = resp.next_after_consumed


class Tail(_Resumable):
    """`events.tail`'s iterator of WAL events in revision order, across
    reconnects and reeld restarts, each revision once (see reel._core).
    With a consumer and ack=True, an event counts as handled once the
    next one is asked for (or `ack()` is called), and handled events are
    acknowledged: at most once a second while events flow, when the stream
    is idle, and on close. A new process resumes after the last
    acknowledgement, so events it had not acknowledged come again (at
    least once)."""

    def __init__(self, client: Client, cursor: _core.TailCursor):
        self._cursor = cursor
        super().__init__(client)

    @property
    def revision(self) -> int:
        """The last revision delivered (events or PROGRESS)."""
        return self._cursor.last

    @property
    def acked(self) -> int:
        return self._cursor.acked

    def ack(self, revision: Optional[int] = None) -> Consumer:
        """Acknowledges everything up to revision (default: the event last
        returned, and all before it) now. Retried: acks never move back."""
        cur = self._cursor
        if not cur.consumer:
            raise ValueError("ack: this tail has no consumer")
        rev = revision if revision is not None else max(cur.done, cur.held or 0)
        resp = self._c._call("wal", "AckEvents", cur.ack_request(rev), safe=True)
        cur.acked_to(rev)
        return Consumer._from_pb(resp.consumer)

    def close(self) -> None:
        """Ends the stream and acknowledges (auto mode) what was handled,
        unless the stream ended with an error (reeld gone): that error is
        what the caller sees, and the events after the last acknowledgement
        come again, as after a crash."""
        super().close()
        cur = self._cursor
        if (not self._failed and cur.auto_ack and cur.consumer
                and cur.done > cur.acked):
            self.ack(cur.done)

    def _auto_ack(self) -> None:
        if self._cursor.ack_due():
            try:
                self.ack(self._cursor.done)
            except (errors.Unavailable, errors.DeadlineExceeded):
                # reeld away longer than a call's timeout: the tail rides
                # it out as its stream does, and acks once reeld is back.
                self._cursor.ack_put_off()

    def _run(self) -> Iterator[Event]:
        cur = self._cursor
        clock = _core.ReconnectClock(self._c._s.reconnect_timeout)
        try:
            while not self._closed:
                try:
                    self._call = self._c._stream("wal", "SubscribeEventBatches", cur.request())
                    for batch in self._call:
                        clock.ok()
                        for pb in batch.events:
                            ev = cur.feed(pb)
                            self._auto_ack()
                            if ev is None:
                                continue
                            yield ev
                            cur.release_held()
                            self._auto_ack()
                    return
                except grpc.RpcError as e:
                    if self._closed:
                        return
                    err = self._c._error(e, "SubscribeEventBatches")
                    if not _core.stream_resumable(err):
                        raise self._c._explain(err) from None
                    if not self._reconnect(clock, err):
                        return
        finally:
            with contextlib.suppress(ReferenceError):   # its handle is gone
                if self._call is not None:
                    self._call.cancel()


class Events:
    """The WAL tail: every committed change, in order: `client.events`."""

    def __init__(self, client: Client):
        self._c = client

    def tail(self, subjects: str = "", *, consumer: Optional[str] = None,
             from_revision: int = 0, ack: Optional[bool] = None, takeover: bool = False,
             progress: bool = False) -> Tail:
        """Every event whose subject matches the pattern (`kv.app.>`,
        `journal.*.step`; "" for all) after from_revision (0: the oldest
        retained), then each new one as it commits. consumer: a durable
        consumer whose cursor reeld keeps (a new one starts at
        from_revision, an existing one after its last acknowledgement); ack
        (default True with a consumer) acknowledges handled events
        automatically. takeover: replace a subscriber reeld still thinks
        holds the consumer (a crashed process's). progress: also yield the
        PROGRESS events reeld sends while idle."""
        if ack is None:
            ack = consumer is not None
        return Tail(self._c, _core.TailCursor(subjects, consumer, from_revision, takeover, ack,
                                              progress))

    def head(self) -> Head:
        resp = self._c._call("wal", "GetHead", wal_pb2.GetHeadRequest(), safe=True)
        return Head(resp.head_revision, resp.oldest_revision)

    def ack(self, consumer: str, revision: int) -> Consumer:
        resp = self._c._call("wal", "AckEvents", wal_pb2.AckEventsRequest(
            consumer=consumer, revision=revision), safe=True)
        return Consumer._from_pb(resp.consumer)

    def consumers(self, *, page_size: int = 0) -> Iterator[Consumer]:
        req = wal_pb2.ListConsumersRequest(limit=page_size)
        while True:
            resp = self._c._call("wal", "ListConsumers", req, safe=True)
            for c in resp.consumers:
                yield Consumer._from_pb(c)
            if not resp.more:
                return
            req.start_after = resp.next_start_after

    def delete_consumer(self, name: str) -> None:
        self._c._call("wal", "DeleteConsumer", wal_pb2.DeleteConsumerRequest(name=name))


class Worker:
    """`client.worker(app, fn, owner=, concurrency=)`: runs the app's runs.

    `run()` keeps `concurrency` threads each in a claim_next loop; for each
    run claimed it calls fn(run) with the Run handle (heartbeating) and
    ends the run COMPLETED with fn's return value (JSON) unless fn ended
    or suspended it itself. The run's code replays: `run.step`,
    `run.sleep` and `run.wait_for_signal` return what the journal holds,
    so a run taken over from a dead worker (its lease expired) goes on
    where it was. What fn raises decides the run's fate:

    - `reel.Suspended` (run.sleep, run.wait_for_signal parked it): nothing
      more; a worker takes it again when it is woken.
    - `LeaseLost`: another worker has the run; this one lets it go.
    - `Unavailable`, `DeadlineExceeded` (reeld unreachable for longer than
      the client's retries): the run is left as it is; its lease expires
      and a worker runs it again (reeld's retry policy: backoff, PAUSED
      after max attempts).
    - anything else: on_error="fail" (the default) ends the run FAILED with
      {"error": the exception's class, "message": its text};
      on_error="retry" leaves it like Unavailable.

    The claim loop rides out reeld restarts (it retries after UNAVAILABLE
    with backoff). `stop()` (from any thread) ends the loops after the
    runs in hand; a loop waiting in claim_next notices within `poll`
    seconds. Counters: `completed`, `failed` (ended FAILED or CANCELLED,
    by fn or for its exception), `parked`, `left`; run(max_runs=N)
returns once N runs ended here."""

    def __init__(self, client: Client, app: str, fn: Callable[[Run], Any], *,
                 owner: Optional[str], concurrency: int, ttl: float, poll: float,
                 on_error: str):
        if concurrency < 1:
            raise ValueError("concurrency: at least 1")
        if on_error not in ("fail", "retry"):
            raise ValueError("on_error: 'fail' or 'retry'")
        poll = _core.seconds(poll, "poll", positive=True)
        _core.ttl_ms(ttl)
        self._c = client
        self.app = app
        self.fn = fn
        self.owner = owner or default_owner()
        self.concurrency = concurrency
        self.ttl = ttl
        self.poll = poll
        self.on_error = on_error
        self._stop = threading.Event()
        self._mu = threading.Lock()
        self._taken = 0                   # claims and runs in hand
        self._max: Optional[int] = None
        self.completed = self.failed = self.parked = self.left = 0

    def stop(self) -> None:
        self._stop.set()

    def run(self, *, max_runs: Optional[int] = None) -> None:
        """Works until stop() (or, with max_runs, until that many runs
        ended here, completed or failed: a parked or left run comes back
        and does not count). Blocks; the loops run on their own threads and
        this one waits for them. An exception other than the ones above
        escaping the claim loop (e.g. PermissionDenied) stops the worker and
        is raised here."""
        self._max = max_runs
        errs = []
        # Not Thread.join(): a join that Ctrl-C interrupts marks its thread
        # stopped (CPython 3.11), so a second one would return at once.
        done = threading.Condition()
        left = [self.concurrency]

        def loop():
            try:
                self._loop()
            except BaseException as e:      # raised by run(), not lost
                errs.append(e)
                self._stop.set()
            finally:
                with done:
                    left[0] -= 1
                    done.notify_all()

        def wait() -> None:
            with done:
                while left[0] > 0:
                    done.wait(1.0)

        threads = [threading.Thread(target=loop, daemon=True, name=f"reel-worker-{i}")
                   for i in range(self.concurrency)]
        for t in threads:
            t.start()
        try:
            wait()
        except BaseException as e:
            # Ctrl-C (KeyboardInterrupt) in run(): no new claims, as after
            # stop(); a run in hand ends as its code does, and then this
            # raises. A second Ctrl-C leaves at once: a run still in hand
            # is claimable again once its lease runs out.
            self._stop.set()
            try:
                wait()
            except BaseException:
                pass
            raise e
        if errs:
            raise errs[0]

    def _take(self) -> bool:
        with self._mu:
            ended = self.completed + self.failed
            if self._stop.is_set() or (self._max is not None and
                                       ended + self._taken >= self._max):
                return False
            self._taken += 1
            return True

    def _untake(self) -> None:
        with self._mu:
            self._taken -= 1

    def _count(self, what: str) -> None:
        with self._mu:
            self._taken -= 1
            setattr(self, what, getattr(self, what) + 1)
            if self._max is not None and self.completed + self.failed >= self._max:
                self._stop.set()

    def _loop(self) -> None:
        attempt = 0
        while self._take():
            try:
                run = self._c.runs.claim_next(self.app, owner=self.owner, ttl=self.ttl,
                                              wait=self.poll)
            except (errors.Unavailable, errors.DeadlineExceeded):
                self._untake()
                self._stop.wait(_core.backoff(attempt))
                attempt += 1
                continue
            except BaseException:
                self._untake()
                raise
            attempt = 0
            if run is None:
                self._untake()
                continue
            self._count(self._handle(run))

    def _handle(self, run: Run) -> str:
        """Runs fn on one run; what became of it (a counter's name)."""
        with run:
            try:
                result = self.fn(run)
                if run.info.status == RunStatus.RUNNING:
                    # A result that cannot be sent is fn's TypeError.
                    result = RawJSON(encode_optional_json(result, "result"))
            except errors.Suspended:
                return "parked"
            except (errors.LeaseLost, errors.Unavailable, errors.DeadlineExceeded):
                return "left"
            except Exception as e:
                if self.on_error == "retry":
                    return "left"
                try:
                    run.end(_core.failure_result(e), status=RunStatus.FAILED)
                except errors.ReelError:
                    return "left"         # its lease expires; it is run again
                return "failed"
            if run.info.status != RunStatus.RUNNING:
                return _ended_as(run.info.status)
            try:
                run.end(result)
            except errors.ReelError:
                return "left"
            return "completed"


class ArtifactWatch(_Resumable):
    """`workspace.watch`'s iterator of ArtifactEvents: the snapshot
    (CURRENT), one BOOTSTRAP_DONE, then every put and delete as it
    commits, across reconnects and reeld restarts without a gap or a
    repeat (see reel._core.ArtifactWatchCursor)."""

    def __init__(self, client: Client, cursor: _core.ArtifactWatchCursor):
        self._cursor = cursor
        super().__init__(client)

    @property
    def revision(self) -> Optional[int]:
        """Where a new watch would resume (from_revision=), once known."""
        c = self._cursor
        return c.revision if c.positioned or c.bootstrapped else None

    def _history(self, req) -> Iterator[ArtifactEvent]:
        """The changes a positioned watch replays, up to its BOOTSTRAP_DONE."""
        call = self._c._stream("workspace", "WatchArtifacts", req)
        try:
            for pb in call:
                if pb.type == workspace_pb2.ArtifactEvent.BOOTSTRAP_DONE:
                    return
                yield ArtifactEvent._from_pb(pb)
        except grpc.RpcError as e:
            raise self._c._error(e, "WatchArtifacts") from None
        finally:
            call.cancel()

    def _run(self) -> Iterator[ArtifactEvent]:
        cur = self._cursor
        clock = _core.ReconnectClock(self._c._s.reconnect_timeout)
        try:
            while not self._closed:
                try:
                    self._call = self._c._stream("workspace", "WatchArtifacts", cur.request())
                    for pb in self._call:
                        clock.ok()
                        for item in cur.feed(pb):
                            if isinstance(item, str):
                                key = item
                                item = self._lookup(clock, lambda: cur.vanished_event(
                                    key, self._c.workspace.list(cur.namespace, key,
                                                                include_deleted=True),
                                    lambda: self._history(cur.history_request(key))))
                            yield item
                    return
                except grpc.RpcError as e:
                    if self._closed:
                        return
                    err = self._c._error(e, "WatchArtifacts")
                    if not _core.stream_resumable(err):
                        raise self._c._explain(err) from None
                    if not self._reconnect(clock, err):
                        return
        finally:
            with contextlib.suppress(ReferenceError):   # its handle is gone
                if self._call is not None:
                    self._call.cancel()


class Workspace:
    """Binary artifacts beside the KV, streamed in chunks: `client.workspace`.

    An artifact is a namespace and a key ("reports/q3.pdf"); each put
    writes the next version and each delete a tombstone, as KV values do.
    Bytes travel in chunks of at most 1 MiB both ways, so neither side
    holds an artifact in memory unless the caller asks for bytes."""

    def __init__(self, client: Client):
        self._c = client

    def put(self, namespace: str, key: str, data: Any, *, content_type: str = "",
            metadata: Optional[Dict[str, str]] = None, create: bool = False,
            if_version: Optional[int] = None, chunk_size: int = _core.CHUNK_MAX) -> Artifact:
        """Stores data as the key's next version and returns its record
        (version, size, sha256, ...) once the commit is synced. data: bytes,
        str (sent as UTF-8; content_type defaults to text/plain), a binary
        file object (read from its position) or a path (os.PathLike), or an
        iterator of bytes; sent in chunks of chunk_size. Bytes and text go
        with their size and SHA-256, which reeld checks; a regular file's
        size goes too (reeld refuses one over its limit before a byte); an
        iterator's bytes are checked against the record (DataLoss if reeld
        stored others). create=True: only if the key is missing or deleted
        (AlreadyExists); if_version=N: only at version N (Conflict). If
        anything fails (the source raises: that exception; a refusal; a lost
        connection) nothing of the upload is visible. Not retried: the
        source cannot be read twice."""
        up = _core.Upload(namespace, key, data, content_type=content_type, metadata=metadata,
                          create=create, if_version=if_version, chunk_size=chunk_size)
        raised: list = []

        def messages():
            try:
                yield from up.messages()
            except BaseException as e:      # gRPC cancels the upload; raised below
                raised.append(e)
                raise

        fn = self._c._rpc.workspace.PutArtifact
        try:
            resp = self._c._invoke("PutArtifact", fn, messages(), timeout=None,
                                   metadata=self._c._s.metadata,
                                   wait_for_ready=self._c._s.wait_for_ready)
        except grpc.RpcError as e:
            if raised:
                raise raised[0] from None
            raise self._c._explain(self._c._error(e, "PutArtifact")) from None
        finally:
            up.close()
        return up.check(Artifact._from_pb(resp.artifact))

    def get(self, namespace: str, key: str, *, out: Any = None, version: int = 0,
            offset: int = 0, length: int = 0) -> Union[bytes, Artifact]:
        """The artifact's bytes (the current version, or a retained
        `version`; from `offset`, `length` bytes, 0 for all). Without out,
        returns them as bytes; with out (a path, or a binary file object
        with write()), streams them there a chunk at a time and returns the
        record. A whole artifact is checked against its SHA-256 (DataLoss;
        a path then is not written). A path is written whole or not at all
        (a temporary file beside it, renamed at the end). A stream that
        breaks (UNAVAILABLE) resumes from the next byte of the same
        version. NotFound when missing, deleted, or the version is gone."""
        dl = _core.Download(namespace, key, version, offset, length)
        if out is None:
            parts: list = []
            self._download(dl, parts.append)
            return b"".join(parts)
        if isinstance(out, (str, os.PathLike)):
            path = os.fspath(out)
            tmp = f"{path}.{uuid.uuid4().hex[:8]}.part"
            try:
                with open(tmp, "wb") as f:
                    art = self._download(dl, f.write)
                os.replace(tmp, path)
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.remove(tmp)
            return art
        return self._download(dl, out.write)

    def _download(self, dl: _core.Download, sink: Callable[[bytes], Any]) -> Artifact:
        # As the other streams: after UNAVAILABLE (reeld down or restarting)
        # it asks again, from the next byte of the same version, for up to
        # reconnect_timeout of failures in a row; each chunk resets that.
        clock = _core.ReconnectClock(self._c._s.reconnect_timeout)
        while True:
            call = None
            try:
                call = self._c._stream("workspace", "GetArtifact", dl.request())
                for pb in call:
                    chunk = dl.feed(pb)
                    if chunk:
                        sink(chunk)
                        clock.ok()
                return dl.finish()
            except grpc.RpcError as e:
                err = self._c._error(e, "GetArtifact")
                if not _core.stream_resumable(err):
                    raise self._c._explain(err) from None
            finally:
                if call is not None:
                    call.cancel()
            err = self._c._explain(err)
            if _diagnose.settings_mistake(err):
                raise err
            time.sleep(clock.failed(err))

    def stat(self, namespace: str, key: str, *, version: int = 0) -> Optional[Artifact]:
        """The current record (or a retained version's), None when the key
        is missing or deleted; NotFound for a version not retained."""
        try:
            resp = self._c._call("workspace", "StatArtifact", workspace_pb2.StatArtifactRequest(
                namespace=namespace, key=key, version=version), safe=True)
        except errors.NotFound:
            if version:
                raise
            return None
        return Artifact._from_pb(resp.artifact)

    def list(self, namespace: str, prefix: str = "", *, start_after: str = "",
             include_deleted: bool = False, page_size: int = 0) -> Iterator[Artifact]:
        """The namespace's artifacts whose keys start with prefix, in key
        order, page by page (with include_deleted, tombstones too)."""
        req = _core.list_artifacts_request(namespace, prefix, start_after, include_deleted,
                                           page_size)
        while True:
            resp = self._c._call("workspace", "ListArtifacts", req, safe=True)
            for a in resp.artifacts:
                yield Artifact._from_pb(a)
            if not resp.more:
                return
            req.start_after = resp.next_start_after

    def delete(self, namespace: str, key: str, *, if_version: Optional[int] = None
               ) -> Optional[Artifact]:
        """Deletes the key (a tombstone at version+1; every version's bytes
        are freed) and returns the tombstone, or None when there was
        nothing to delete. if_version=N: only at version N, else Conflict.
        Not retried."""
        resp = self._c._call("workspace", "DeleteArtifact",
                             _core.delete_artifact_request(namespace, key, if_version))
        return Artifact._from_pb(resp.artifact) if resp.existed else None

    def watch(self, namespace: str, prefix: str = "", *, from_revision: Optional[int] = None,
              now: bool = False) -> ArtifactWatch:
        """The namespace's artifacts whose keys start with prefix: each live
        one as it is (CURRENT), one BOOTSTRAP_DONE, then every put and
        delete (the tombstone) as it commits; the records, never the bytes.
        now=True: only what commits from now on (BOOTSTRAP_DONE first);
        from_revision=R: every change after revision R first (reeld keeps
        the last 1,048,576 revisions' history: OutOfRange before). Resumes
        by itself after a lost connection or a reeld restart, without
        losing or repeating an event."""
        if now and from_revision is not None:
            raise ValueError("watch: give from_revision or now, not both")
        if now:
            from_revision = self._c.status().revision
        return ArtifactWatch(self._c, _core.ArtifactWatchCursor(namespace, prefix,
                                                                from_revision))
