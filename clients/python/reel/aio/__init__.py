"""The asyncio client: `reel.aio.connect(addr)`, on grpc.aio.

The same names as the synchronous client (reel.client), awaited:
`await client.kv.put(...)`, `async with client.kv.cas(...) as entry`,
`async for ev in client.kv.watch(...)`, `await run.step(...)`. The same
guarantees, retries and resumption hold (the state machines are shared, in
reel._core). Create and use a client inside one running event loop; a Run
handle heartbeats in a task of that loop. Functions handed to `update`,
`step` and a worker may be plain or `async`; plain ones given to `step`
and a worker run in a thread, so that one that blocks does not stop the
heartbeats.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import inspect
import os
import time
import uuid
import weakref
from typing import (Any, AsyncIterator, Awaitable, Callable, Coroutine, Dict, Generator, List,
                    Optional, Sequence, Tuple, TypeVar, Union)

import grpc
import grpc.aio

from reel import _core, _diagnose, _rpc, errors
from reel._core import TLS, CasEntry, Settings
from reel._health import health_pb2
from reel.client import _AWAIT_MARGIN, _ended_as, _status_name, default_owner
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
    """An asyncio client of the reeld at addr; the arguments are
    reel.connect's. Use it as `async with reel.aio.connect(...) as client`
    or close it with `await client.close()`."""
    return Client(_core.settings(addr, token, tls, timeout, wait_for_ready, retries,
                                 reconnect_timeout, max_message_bytes, options))


_T = TypeVar("_T")


class _Opening(Coroutine[Any, Any, _T]):
    """What runs.begin, claim, claim_next and workspace.watch return: a
    coroutine, awaited for the handle (`run = await client.runs.begin(...)`,
    asyncio.create_task takes it too), and an async context manager that
    awaits it and enters the handle, as `with client.runs.begin(...)` in
    the sync client (`async with client.runs.begin(...) as run`). A
    claim_next that claimed nothing enters as None."""

    __slots__ = ("_coro", "_got")

    def __init__(self, coro: Coroutine[Any, Any, _T]):
        self._coro = coro
        self._got: Any = None

    def __await__(self) -> Generator[Any, None, _T]:
        return self._coro.__await__()

    def send(self, value: Any) -> Any:
        return self._coro.send(value)

    def throw(self, *args: Any) -> Any:
        return self._coro.throw(*args)

    def close(self) -> None:
        self._coro.close()

    async def __aenter__(self) -> _T:
        self._got = await self._coro
        if self._got is None:
            return None  # type: ignore[return-value]
        return await self._got.__aenter__()

    async def __aexit__(self, *exc: Any) -> Any:
        got, self._got = self._got, None
        if got is not None:
            return await got.__aexit__(*exc)
        return None


def _opens(fn: Callable[..., Coroutine[Any, Any, _T]]) -> Callable[..., _Opening[_T]]:
    """A coroutine method that hands back a handle, made to return an
    _Opening of it (its signature and docstring kept)."""
    @functools.wraps(fn)
    def opening(*args: Any, **kwargs: Any) -> _Opening[_T]:
        return _Opening(fn(*args, **kwargs))
    return opening


async def _maybe_await(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


async def _off_the_loop(fn: Callable[..., Any], *args: Any,
                        _pool: Optional[concurrent.futures.Executor] = None,
                        **kwargs: Any) -> Any:
    """fn(*args, **kwargs) for a step or a worker: a coroutine function on
    the loop; any other function in a thread (_pool, else the loop's
    default executor), since one that blocks (time.sleep, a sync HTTP call)
    would block the loop and with it the run's heartbeats, and lose the
    lease. A thread cannot be cancelled: a cancel ends the wait, and the
    function runs on to its end. What the function returns is awaited if
    it is awaitable (a lambda calling an async function)."""
    if inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
            getattr(fn, "__call__", None)):
        return await fn(*args, **kwargs)
    call = functools.partial(fn, *args, **kwargs)
    if _pool is None:
        return await _maybe_await(await asyncio.to_thread(call))
    return await _maybe_await(
        await asyncio.get_running_loop().run_in_executor(_pool, call))


class Client:
    """A connection to one reeld, for one event loop."""

    def __init__(self, settings: Settings):
        if not isinstance(settings, Settings):
            raise TypeError(f"Client: use reel.aio.connect(addr, token=..., tls=...), which makes "
                            f"its settings; not Client({type(settings).__name__})")
        try:
            # grpc.aio binds the channel to this loop: every call checks it.
            self._loop = asyncio.get_running_loop()
        except RuntimeError:
            raise RuntimeError(
                "reel.aio.connect(): call it inside the event loop that uses the client "
                "(in an async function run by asyncio.run, say): a client made outside "
                "it is bound to another loop, and its first call would fail") from None
        self._s = settings
        creds = settings.credentials()
        opts = settings.channel_options()
        self._channel = (grpc.aio.secure_channel(settings.target, creds, options=opts)
                         if creds is not None else
                         grpc.aio.insecure_channel(settings.target, options=opts))
        self._rpc = _rpc.bind(self._channel)
        self._diag = _diagnose.Diagnoser(settings)
        self._cap: Optional[float] = None
        self._closed = False
        self._runs: "weakref.WeakSet[Run]" = weakref.WeakSet()   # heartbeating
        # Open watches, tails and follows: close() cancels their calls
        # itself (grpc.aio's channel close finds only a task's top frame).
        self._streams: "weakref.WeakSet[_Resumable]" = weakref.WeakSet()
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
        """A worker for the app's runs: `await worker.run()` (see Worker)."""
        return Worker(self, app, fn, owner=owner, concurrency=concurrency, ttl=ttl, poll=poll,
                      on_error=on_error)

    async def close(self) -> None:
        """Closes the channel: Run handles stop heartbeating (quietly),
        open streams and calls in flight in other tasks end with
        `reel.Cancelled`, and every call from then on raises it ("client
        is closed"), as in the synchronous client."""
        self._closed = True
        tasks = []
        for run in list(self._runs):
            task, run._hb = run._hb, None
            if task is not None and task is not asyncio.current_task():
                task.cancel()
                tasks.append(task)
        await asyncio.gather(*tasks, return_exceptions=True)
        for stream in list(self._streams):
            # _stop too: a stream between reconnect attempts has no call to
            # cancel, and slept out its pause (up to 2 s) before its reader
            # heard of the close. Its read ends now as a cancelled call's
            # does, a few turns of the loop after this returns: not waited
            # for here, since that would end the readers' tasks too, before
            # close() returns, and a reader nobody awaits (a task left to
            # asyncio.run's end, which cancels it quietly) would be
            # reported as an exception never retrieved.
            stream._stop.set()
            if stream._call is not None:
                stream._call.cancel()
        await self._channel.close()

    def _closed_under(self) -> bool:
        """A CancelledError met in a call or a stream comes from close():
        closing the channel cancels what is in flight in every task (and
        grpc.aio may cancel the waiting task itself, so the task's own
        cancellation count cannot tell the two apart)."""
        return self._closed

    def _error(self, e: grpc.RpcError, method: str, lease: bool = False,
               req=None) -> errors.ReelError:
        if self._closed:
            return _core.client_closed(method)
        return errors.from_rpc_error(
            e, method=method, lease=lease,
            request_size=req.ByteSize() if req is not None else None)

    async def _explain(self, err: errors.ReelError) -> errors.ReelError:
        """See reel.client.Client._explain; the look at the server runs in
        a thread, never on the event loop."""
        if self._closed or not isinstance(err, (errors.Unavailable, errors.DeadlineExceeded)):
            return err
        try:
            ready = self._channel.get_state(False) == grpc.ChannelConnectivity.READY
        except Exception:
            ready = True
        if ready:
            return err
        fresh, d = self._diag.cached()
        if not fresh:
            d = await asyncio.get_running_loop().run_in_executor(None, self._diag.look)
        return _diagnose.explain(err, d)

    async def _refuse_if_mistaken(self, method: str) -> None:
        """See reel.client.Client._refuse_if_mistaken."""
        if not self._s.wait_for_ready or self._closed:
            return
        try:
            state = self._channel.get_state(False)
        except Exception:
            return
        if state not in (grpc.ChannelConnectivity.TRANSIENT_FAILURE,
                         grpc.ChannelConnectivity.CONNECTING):
            return
        fresh, d = self._diag.cached()
        if not fresh and state == grpc.ChannelConnectivity.TRANSIENT_FAILURE:
            d = await asyncio.get_running_loop().run_in_executor(None, self._diag.look)
        err = _diagnose.refusal(method, d)
        if err is not None:
            raise err

    def _own_loop(self, method: str) -> None:
        """A call from another event loop than the client's (a client kept
        from an earlier asyncio.run) is refused saying so: grpc.aio fails
        it with "Event loop is closed" or "attached to a different loop"."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        if loop is not self._loop:
            raise RuntimeError(
                f"{method}: this reel.aio client was made in another event loop, and is "
                f"bound to it: call reel.aio.connect() inside the event loop that uses the "
                f"client (a client per asyncio.run)")

    def _invoke(self, method: str, fn, *args, **kwargs):
        """fn(*args, **kwargs), a gRPC call's start: on a closed client
        Cancelled("client is closed"), not grpc's UsageError."""
        if self._closed:
            raise _core.client_closed(method)
        self._own_loop(method)
        try:
            return fn(*args, **kwargs)
        except grpc.aio.UsageError:
            if self._closed:
                raise _core.client_closed(method) from None
            raise

    async def __aenter__(self) -> "Client":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def _reachable(self, timeout: Optional[float]) -> float:
        """See reel.client.Client._reachable."""
        end = None if timeout is None else time.monotonic() + timeout
        # In slices: a close() meanwhile ends the wait.
        while self._s.wait_for_ready and not self._closed:
            step = 0.25 if end is None else min(0.25, end - time.monotonic())
            if step <= 0:
                break                       # the call says what happened
            try:
                await asyncio.wait_for(self._channel.channel_ready(), step)
                break
            except asyncio.TimeoutError:
                pass
        return time.monotonic()

    async def _call(self, service: str, method: str, req, *, safe: bool = False,
                    lease: bool = False, timeout: Optional[float] = None,
                    sent: Optional[List[float]] = None):
        """See reel.client.Client._call."""
        fn = getattr(getattr(self._rpc, service), method)
        deadline = timeout if timeout is not None else self._s.timeout
        attempt = 0
        if not self._closed:
            self._own_loop(method)          # before the channel is looked at
        await self._refuse_if_mistaken(method)
        while True:
            try:
                if sent is not None:
                    sent[:] = [await self._reachable(deadline)]
                return await self._invoke(method, fn, req, timeout=deadline,
                                          metadata=self._s.metadata,
                                          wait_for_ready=self._s.wait_for_ready)
            except grpc.RpcError as e:
                err = self._error(e, method, lease, req)
            except (asyncio.CancelledError, grpc.aio.UsageError):
                if self._closed_under():        # close() in another task
                    raise _core.client_closed(method) from None
                raise
            if not ((safe and _core.unary_retryable(err)) or _core.queue_full(err)) \
                    or attempt >= self._s.retries:
                raise await self._explain(err)
            await asyncio.sleep(_core.backoff(attempt))
            attempt += 1

    def _stream(self, service: str, method: str, req):
        fn = getattr(getattr(self._rpc, service), method)
        return self._invoke(method, fn, req, metadata=self._s.metadata)

    async def status(self) -> ServerStatus:
        return ServerStatus._from_pb(
            await self._call("admin", "GetStatus", admin_pb2.GetStatusRequest(), safe=True))

    async def health(self, service: str = "") -> str:
        resp = await self._call("health", "Check",
                                health_pb2.HealthCheckRequest(service=service), safe=True)
        return health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status)

    async def _signal_cap(self) -> float:
        if self._cap is None:
            self._cap = (await self.status()).signal_max_wait_ms / 1000.0 or 300.0
        return self._cap


async def _read(it: AsyncIterator) -> Any:
    try:
        return await it.__anext__()
    except ReferenceError:
        # The stream's handle was freed while this read waited (its reader
        # dropped it or was cancelled), and its __del__ cancelled the read:
        # the generator met the cancel through its gone handle. A cancel,
        # not an error for asyncio.run's end to report.
        raise asyncio.CancelledError() from None
    except errors.Cancelled:
        # This read's own task cancelled (asyncio.run ending, which cancels
        # what is left) while its client closed: a cancellation, not an
        # error for asyncio to report as never retrieved.
        task = asyncio.current_task()
        if task is not None and getattr(task, "cancelling", lambda: 0)():
            raise asyncio.CancelledError() from None
        raise


def _retrieved(fut: asyncio.Future) -> None:
    """A read's outcome is taken even when no one awaits it any more (its
    handle was closed or dropped): asyncio then has nothing to warn of."""
    if not fut.cancelled():
        fut.exception()


class _Resumable:
    """What watch, tail and follow share (see reel.client._Resumable)."""

    # Streams that break are opened again (a Watch made with resume=False
    # is not): _lookup reads it too, for every kind.
    _resume = True

    def __init__(self, client: Client):
        self._c = client
        self._call = None
        self._closed = False
        self._stop = asyncio.Event()
        self._failed = False   # the stream ended with an error
        self.reconnects = 0
        # The read in progress: a task of its own, so that a cancelled wait
        # for the next event (asyncio.wait_for(anext(w), t)) cancels the
        # wait, not the stream; the next __anext__ takes what it reads.
        self._next: Optional[asyncio.Future] = None
        self._reading = False
        # Through a weak proxy, as reel.client._Resumable: a handle nobody
        # holds is freed at once and __del__ cancels its stream.
        self._it = type(self)._run(weakref.proxy(self))
        client._streams.add(self)

    def __del__(self) -> None:
        self._closed = True
        call = self._call
        if call is not None:
            with contextlib.suppress(Exception):
                call.cancel()
        nxt = self._next
        if nxt is not None:
            with contextlib.suppress(Exception):
                nxt.cancel()

    def __aiter__(self):
        return self

    async def __anext__(self):
        """The next item. A cancelled wait for it (asyncio.wait_for timing
        out, the reading task cancelled) cancels that wait only: the read
        goes on and the next __anext__, from any task, gets its item. A
        stream that nothing else holds then ends, as one dropped does."""
        if self._reading:
            raise RuntimeError("this stream is being read by another task: "
                               "read a stream from one task at a time")
        if self._next is None:
            if self._closed:
                raise StopAsyncIteration
            self._next = asyncio.ensure_future(_read(self._it))
            self._next.add_done_callback(_retrieved)
        nxt = self._next
        self._reading = True
        try:
            item = await asyncio.shield(nxt)
        except asyncio.CancelledError:
            self._reading = False
            if nxt.cancelled():
                self._next = None       # close() ended the read
                if self._closed:
                    raise StopAsyncIteration from None
            # (Otherwise this wait only is cancelled: the read goes on.)
            # The stream is not held by this frame any more: the
            # CancelledError's traceback holds the frame, and a task kept
            # after it was cancelled (in a list, a gather's result) kept
            # the stream open on reeld through it. One nothing else holds
            # ends now, as one dropped does.
            del self
            raise
        except StopAsyncIteration:
            self._reading = False
            self._next = None
            raise
        except Exception:
            self._reading = False
            self._next = None
            self._failed = True
            raise
        except BaseException:
            self._reading = False
            raise
        self._reading = False
        self._next = None
        return item

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def close(self) -> None:
        """Ends the stream; the iterator then stops."""
        self._closed = True
        self._stop.set()
        if self._call is not None:
            self._call.cancel()
        nxt = self._next
        if nxt is not None and not nxt.done():
            nxt.cancel()
            await asyncio.wait([nxt])        # its generator sees the close
        with contextlib.suppress(RuntimeError):   # being iterated in another task
            await self._it.aclose()

    async def _reconnect(self, clock: _core.ReconnectClock, err: errors.ReelError) -> bool:
        err = await self._c._explain(err)
        if _diagnose.settings_mistake(err):
            raise err
        pause = clock.failed(err)
        self.reconnects += 1
        try:
            await asyncio.wait_for(self._stop.wait(), pause)
        except asyncio.TimeoutError:
            return True
        if self._c._closed_under():     # client.close(), as for a call it cancels
            raise _core.client_closed(self._method)
        return False

    async def _lookup(self, clock: _core.ReconnectClock, fn) -> Any:
        """await fn() (a read a resumed snapshot needs), tried again while
        reeld is unreachable, within the reconnect limit as a stream is."""
        while True:
            try:
                return await fn()
            except errors.Unavailable as err:
                if not (self._resume and await self._reconnect(clock, err)):
                    raise

    def _run(self):
        raise NotImplementedError


class Watch(_Resumable):
    """See reel.client.Watch; iterate with `async for`."""

    _method = "WatchValueBatches"

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

    async def _vanished(self, item: _core.Vanished) -> ValueEvent:
        history = [ev async for ev in self._c.kv.history(self._cursor.namespace, item.key,
                                                          from_version=item.version)
                   if ev.revision <= item.upto]
        return _core.WatchCursor.vanished_event(item, history)

    async def _run(self) -> AsyncIterator[ValueEvent]:
        clock = _core.ReconnectClock(self._c._s.reconnect_timeout)
        try:
            while not self._closed:
                try:
                    self._call = self._c._stream("kv", "WatchValueBatches", self._cursor.request())
                    async for batch in self._call:
                        clock.ok()
                        for pb in batch.events:
                            for item in self._cursor.feed(pb):
                                if isinstance(item, _core.Vanished):
                                    v = item
                                    item = await self._lookup(clock,
                                                              lambda: self._vanished(v))
                                yield item
                    return
                except grpc.RpcError as e:
                    if self._closed:
                        return
                    err = self._c._error(e, "WatchValueBatches")
                    if not (self._resume and _core.stream_resumable(err)):
                        raise (await self._c._explain(err)) from None
                    if not await self._reconnect(clock, err):
                        return
                except asyncio.CancelledError:
                    if self._closed:
                        return
                    if self._c._closed_under():      # client.close(), in another task
                        raise _core.client_closed(self._method) from None
                    raise
        finally:
            with contextlib.suppress(ReferenceError):   # its handle is gone
                if self._call is not None:
                    self._call.cancel()


class KV:
    """See reel.client.KV: the same calls, awaited."""

    def __init__(self, client: Client):
        self._c = client

    async def get(self, namespace: str, key: str, *, include_deleted: bool = False
                  ) -> Optional[Entry]:
        resp = await self._c._call("kv", "GetValue",
                                   kv_pb2.GetValueRequest(namespace=namespace, key=key),
                                   safe=True)
        if resp.found:
            return Entry._from_pb(resp.entry)
        if include_deleted and resp.HasField("entry") and resp.entry.deleted:
            return Entry._from_pb(resp.entry)
        return None

    async def put(self, namespace: str, key: str, value: Any, *, create: bool = False,
                  if_version: Optional[int] = None, writer: Optional[str] = None) -> Entry:
        req = _core.set_request(namespace, key, encode_json(value, "value"), create, if_version,
                                writer)
        return Entry._from_pb((await self._c._call("kv", "SetValue", req)).entry)

    async def delete(self, namespace: str, key: str, *, if_version: Optional[int] = None,
                     writer: Optional[str] = None) -> Optional[Entry]:
        resp = await self._c._call("kv", "DeleteValue",
                                   _core.delete_request(namespace, key, if_version, writer))
        return Entry._from_pb(resp.entry) if resp.existed else None

    async def list(self, namespace: str, prefix: str = "", *, start_after: str = "",
                   include_deleted: bool = False, page_size: int = 0) -> AsyncIterator[Entry]:
        req = kv_pb2.ListValuesRequest(namespace=namespace, prefix=prefix,
                                       start_after=start_after, limit=page_size,
                                       include_deleted=include_deleted)
        while True:
            resp = await self._c._call("kv", "ListValues", req, safe=True)
            for e in resp.entries:
                yield Entry._from_pb(e)
            if not resp.more:
                return
            req.start_after = resp.next_start_after

    async def history(self, namespace: str, key: str, *, from_version: int = 0,
                      page_size: int = 0) -> AsyncIterator[ValueEvent]:
        req = kv_pb2.ValueHistoryRequest(namespace=namespace, key=key,
                                         from_version=from_version, limit=page_size)
        while True:
            resp = await self._c._call("kv", "ValueHistory", req, safe=True)
            for e in resp.events:
                yield ValueEvent._from_pb(e)
            if not resp.more:
                return
            req.from_version = resp.next_from_version

    async def _read(self, namespace: str, key: str) -> CasEntry:
        resp = await self._c._call("kv", "GetValue",
                                   kv_pb2.GetValueRequest(namespace=namespace, key=key),
                                   safe=True)
        read, version = _core.read_version(resp)
        return CasEntry(namespace, key, read, version)

    async def _write(self, entry: CasEntry, writer: Optional[str]) -> None:
        if entry._op == "put":
            entry.result = await self.put(entry.namespace, entry.key, entry.value,
                                          if_version=entry.version, writer=writer)
        elif entry._op == "delete":
            entry.result = await self.delete(entry.namespace, entry.key,
                                             if_version=entry.version, writer=writer)

    @contextlib.asynccontextmanager
    async def cas(self, namespace: str, key: str, *, writer: Optional[str] = None
                  ) -> AsyncIterator[CasEntry]:
        entry = await self._read(namespace, key)
        yield entry
        await self._write(entry, writer)

    async def update(self, namespace: str, key: str,
                     fn: Callable[[Any], Union[Any, Awaitable[Any]]], *, retries: int = 10,
                     writer: Optional[str] = None) -> Optional[Entry]:
        attempt = 0
        while True:
            entry = await self._read(namespace, key)
            new = await _maybe_await(fn(entry.value))
            if new is DELETE:
                entry.delete()
            else:
                entry.value = new
            try:
                await self._write(entry, writer)
                return entry.result
            except errors.Conflict:
                if attempt >= retries:
                    raise
            await asyncio.sleep(_core.conflict_pause(attempt))
            attempt += 1

    def watch(self, namespace: str, key: str, *, from_revision: Optional[int] = None,
              from_version: Optional[int] = None, now: bool = False,
              resume: bool = True) -> Watch:
        cursor = _core.WatchCursor(namespace, key, from_revision=from_revision,
                                   from_version=from_version, now=now)
        return Watch(self._c, cursor, resume)


class Follow(_Resumable):
    """See reel.client.Follow; iterate with `async for`."""

    _method = "SubscribeRun"

    def __init__(self, client: Client, cursor: _core.FollowCursor):
        self._cursor = cursor
        super().__init__(client)

    @property
    def seq(self) -> int:
        return self._cursor.seq

    async def _run(self) -> AsyncIterator[JournalEntry]:
        clock = _core.ReconnectClock(self._c._s.reconnect_timeout)
        try:
            while not self._closed:
                try:
                    self._call = self._c._stream("journal", "SubscribeRun",
                                                 self._cursor.request())
                    async for pb in self._call:
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
                        raise (await self._c._explain(err)) from None
                    if not await self._reconnect(clock, err):
                        return
                except asyncio.CancelledError:
                    if self._closed:
                        return
                    if self._c._closed_under():      # client.close(), in another task
                        raise _core.client_closed(self._method) from None
                    raise
        finally:
            with contextlib.suppress(ReferenceError):   # its handle is gone
                if self._call is not None:
                    self._call.cancel()


class Journal:
    """See reel.client.Journal."""

    def __init__(self, client: Client):
        self._c = client

    async def read(self, run_id: str, from_seq: int = 0, *, page_size: int = 0
                   ) -> AsyncIterator[JournalEntry]:
        req = journal_pb2.ReadJournalRequest(run_id=run_id, from_seq=from_seq, limit=page_size)
        while True:
            resp = await self._c._call("journal", "ReadJournal", req, safe=True)
            for e in resp.entries:
                yield JournalEntry._from_pb(e)
            if not resp.more:
                return
            req.from_seq = resp.next_from_seq

    def follow(self, run_id: str, from_seq: int = 0) -> Follow:
        return Follow(self._c, _core.FollowCursor(run_id, from_seq))


class Run:
    """See reel.client.Run. Heartbeats run in a task of the loop that
    created the handle; `await run.close()` (or `async with run`) stops it."""

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
        self._replay_mu = asyncio.Lock()
        # See reel.client.Run: a step's append that got no answer.
        self._steps_unsure: Optional[int] = None
        self._wait_mu = asyncio.Lock()
        # name -> the journal's last seq before a wait for it was given up:
        # what that wait may have consumed is after it.
        self._abandoned: Dict[str, int] = {}
        self._last_seq = info.next_seq - 1
        self._lost_event = asyncio.Event()
        self._hb: Optional[asyncio.Task] = None
        if info.status != RunStatus.RUNNING:
            self._lease.release(f"the run is {_status_name(info.status)}")
        elif heartbeat:
            self._hb = asyncio.get_running_loop().create_task(
                Run._heartbeats_of(weakref.ref(self)),
                name=f"reel-heartbeat-{self.run_id}")
            client._runs.add(self)          # client.close() stops the heartbeats

    async def __aenter__(self) -> "Run":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"Run({self.run_id!r}, epoch={self.epoch}, status={self.info.status!r})"

    @property
    def resumed(self) -> bool:
        return self.info.resumed

    @property
    def lease_lost(self) -> Optional[errors.LeaseLost]:
        return self._lease.lost

    async def wait_lease_lost(self, timeout: Optional[float] = None) -> bool:
        """Waits until the lease is lost (True) or timeout passes (False)."""
        end = None if timeout is None else time.monotonic() + timeout
        while True:
            try:
                self._check()
            except errors.LeaseLost:
                return True
            wait = max(0.0, self._lease.until_expiry())
            if end is not None:
                left = end - time.monotonic()
                if left <= 0:
                    return False
                wait = min(wait, left)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._lost_event.wait(), wait)

    async def close(self) -> None:
        """Stops heartbeating (the run is left as it is). A cancel of the
        task calling it is raised, as by any await."""
        task, self._hb = self._hb, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            # asyncio.wait, not `await task` under suppress(CancelledError):
            # cancelling the task that waits here cancels what it waits
            # for, so that CancelledError could be this task's own, and was
            # swallowed with the heartbeat's. wait() ends with the heartbeat
            # task and raises nothing but this task's cancellation.
            await asyncio.wait([task])
            if not task.cancelled():
                task.result()               # what it failed with, as before

    def _lose(self, err: errors.LeaseLost) -> errors.LeaseLost:
        got = self._lease.lose(err)
        self._lost_event.set()
        return got

    @staticmethod
    async def _heartbeats_of(ref: "weakref.ref[Run]") -> None:
        """Holds the handle weakly between heartbeats (see
        reel.client.Run): a handle nobody holds stops heartbeating."""
        attempt: Optional[int] = 0
        while attempt is not None:
            run = ref()
            if run is None:
                return
            pause = max(0.01, run.ttl / 3) if attempt == 0 else _core.backoff(attempt)
            del run
            await asyncio.sleep(pause)
            run = ref()
            if run is None:
                return
            attempt = await run._heartbeat(attempt)
            del run

    async def _heartbeat(self, attempt: int) -> Optional[int]:
        """One heartbeat: the next attempt's number (0 after a renewal), or
        None to stop."""
        try:
            self._lease.check(self.run_id, self.epoch)
        except errors.LeaseLost as e:
            self._lose(e)
            return None
        sent = [time.monotonic()]
        left = self._lease.deadline - sent[0]
        limit = left if self._c._s.timeout is None else min(left, self._c._s.timeout)
        try:
            info = RunInfo._from_pb(await self._c._call(
                "journal", "Heartbeat", journal_pb2.HeartbeatRequest(
                    run_id=self.run_id, lease_epoch=self.epoch,
                    lease_ttl_ms=_core.ttl_ms(self.ttl)),
                lease=True, timeout=max(0.001, limit), sent=sent))
        except errors.LeaseLost as e:
            self._lose(e)
            return None
        except (errors.Unavailable, errors.DeadlineExceeded):
            return attempt + 1
        except errors.ReelError as e:
            if self._c._closed:             # client.close(): stop, quietly
                return None
            self._lose(errors.LeaseLost(
                f"run {self.run_id}: a heartbeat failed, so the lease cannot be kept: {e}",
                method="Heartbeat", from_server=False))
            return None
        self._lease.renewed(sent[0])
        self.info = info
        return 0

    def _check(self) -> None:
        try:
            self._lease.check(self.run_id, self.epoch)
        except errors.LeaseLost as e:
            raise self._lose(e) from None

    async def _write(self, service: str, method: str, req, *, safe: bool = False,
                     timeout: Optional[float] = None, sent: Optional[List[float]] = None):
        self._check()
        try:
            return await self._c._call(service, method, req, safe=safe, lease=True,
                                       timeout=timeout, sent=sent)
        except errors.LeaseLost as e:
            raise self._lose(e) from None

    def _saw(self, seq: int) -> None:
        self._last_seq = max(self._last_seq, seq)

    async def heartbeat(self) -> RunInfo:
        sent = [time.monotonic()]
        info = RunInfo._from_pb(await self._write(
            "journal", "Heartbeat", journal_pb2.HeartbeatRequest(
                run_id=self.run_id, lease_epoch=self.epoch,
                lease_ttl_ms=_core.ttl_ms(self.ttl)), safe=True, sent=sent))
        self._lease.renewed(sent[0])
        self.info = info
        return info

    async def append(self, kind: str, payload: Any = None, *, key: Optional[str] = None,
                     expected_seq: Optional[int] = None) -> JournalEntry:
        req = journal_pb2.AppendRequest(run_id=self.run_id, lease_epoch=self.epoch, kind=kind,
                                        payload=encode_json(payload, "payload"),
                                        idempotency_key=key or "",
                                        expected_seq=expected_seq or 0)
        resp = await self._write("journal", "Append", req, safe=bool(key))
        e = JournalEntry._from_pb(resp.entry, resp.duplicate)
        self._saw(e.seq)
        return e

    def read(self, from_seq: int = 0, *, page_size: int = 0) -> AsyncIterator[JournalEntry]:
        return self._c.journal.read(self.run_id, from_seq, page_size=page_size)

    def follow(self, from_seq: int = 0) -> Follow:
        return self._c.journal.follow(self.run_id, from_seq)

    async def suspend(self, waiting_on: str, *, timeout: Optional[float] = None) -> RunInfo:
        """See reel.client.Run.suspend."""
        info = RunInfo._from_pb(await self._write(
            "journal", "SuspendRun", journal_pb2.SuspendRunRequest(
                run_id=self.run_id, lease_epoch=self.epoch, waiting_on=waiting_on,
                timeout_ms=_core.timeout_ms(timeout, "timeout"))))
        self._lease.release(f"it suspended the run (WAITING on {waiting_on!r})")
        self.info = info
        await self.close()
        return info

    async def end(self, result: Any = None, *,
                  status: Union[RunStatus, str] = RunStatus.COMPLETED) -> RunInfo:
        if _core.ended_as(self.info, status):
            await self.close()
            return self.info
        info = RunInfo._from_pb(await self._write(
            "journal", "EndRun", journal_pb2.EndRunRequest(
                run_id=self.run_id, lease_epoch=self.epoch, status=_core.status_value(status),
                result=encode_optional_json(result, "result"))))
        self._lease.release(f"it ended the run ({_status_name(info.status)})")
        self.info = info
        await self.close()
        return info

    async def _ensure_replay(self) -> None:
        async with self._replay_mu:
            if not self._replay.loaded:
                entries = [e async for e in self._c.journal.read(self.run_id)]
                self._replay.load(entries)
                if entries:
                    self._saw(entries[-1].seq)

    async def step(self, name: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """See reel.client.Run.step; fn may be a coroutine function, run on
        the loop; a plain function runs in a thread (asyncio.to_thread), so
        one that blocks does not stop the heartbeats (a cancelled step
        cannot stop that thread: it finishes, its result unused). Steps
        started together (asyncio.gather) take their positions in the
        order they are called."""
        n = self._replay.next_step(name)
        try:
            await self._ensure_replay()
            await self._recheck_steps()
            found, result = self._replay.recorded_step(n, name)
            if found:
                return result
            self._check()
            value = await _off_the_loop(fn, *args, **kwargs)
            text, result = _core.step_payload(n, name, value)
            after = self._last_seq
            try:
                await self.append(_core.STEP_KIND, RawJSON(text),
                                  key=_core.step_key(n, name))
            except BaseException:
                # No answer is not "not written": see reel.client.Run.step.
                if self._steps_unsure is None:
                    self._steps_unsure = after
                raise
            return result
        except BaseException:
            self._replay.step_failed(n)
            raise

    async def _recheck_steps(self) -> None:
        """After a step's append that got no answer: the steps journaled
        since, read from reeld."""
        async with self._replay_mu:
            after = self._steps_unsure
            if after is None:
                return
            read = [e async for e in self._c.journal.read(self.run_id, after)]
            self._replay.load([e for e in read if e.kind == _core.STEP_KIND])
            self._steps_unsure = None
            if read:
                self._saw(read[-1].seq)

    async def wait_for_signal(self, name: str, timeout: Optional[float] = None, *,
                              park: bool = True) -> Optional[Signal]:
        """See reel.client.Run.wait_for_signal: park=True parks the run
        (raising reel.Suspended) with reeld's timer for the timeout;
        park=False waits in this task holding the lease."""
        if timeout is not None:
            timeout = _core.seconds(timeout, "timeout")
        await self._ensure_replay()
        async with self._wait_mu:
            n, outcome = self._replay.next_wait(name)
            if outcome is not None:
                return outcome.delivered
            if name in self._abandoned:
                entries = [e async for e in
                           self._c.journal.read(self.run_id, self._abandoned.pop(name))]
                got = _core.signal_entry_for(entries, name)
                if got is not None:
                    self._saw(got.seq)
                    return _core.signal_from_entry(self.run_id, got)
            floor = self._last_seq
            try:
                if not park or (timeout is not None and timeout <= 0):
                    return await self._block(name, n, timeout)
                got = await self._block(name, n, 0.0, record_timeout=False)
            except asyncio.CancelledError:
                # Given up (asyncio.wait_for, a cancel): the next wait is
                # this one again, and finds what it may have consumed.
                self._replay.wait_abandoned(name, n)
                self._abandoned[name] = floor
                raise
            if got is not None:
                return got
            await self._park(name, timeout)

    async def sleep(self, seconds: float, *, park: bool = True) -> None:
        """See reel.client.Run.sleep: a signal to this run delivered by
        reeld's durable timer; parks the run (reel.Suspended) or, with
        park=False, waits in this task holding the lease."""
        seconds = _core.seconds(seconds, "sleep")
        await self._ensure_replay()
        async with self._wait_mu:
            name, done = self._replay.next_sleep()
            if done:
                return
            self._check()
            sent = await self._c.signals.send(self.run_id, name, None, signal_id=name,
                                              delay=seconds)
            if park and sent.signal.scheduled:
                await self._park(name, None)
            await self._block(name, -1, None, record_timeout=False)

    async def _park(self, name: str, timeout: Optional[float]) -> None:
        info = await self.suspend(name, timeout=timeout)
        raise errors.Suspended(self.run_id, name, info)

    async def _block(self, name: str, n: int, timeout: Optional[float], *,
                     record_timeout: bool = True) -> Optional[Signal]:
        """See reel.client.Run._block."""
        end = None if timeout is None else time.monotonic() + max(0.0, timeout)
        cap = await self._c._signal_cap()
        attempt = 0
        while True:
            left = None if end is None else max(0.0, end - time.monotonic())
            wait = cap if left is None else min(cap, left)
            floor = self._last_seq
            req = signals_pb2.AwaitSignalRequest(run_id=self.run_id, name=name,
                                                 lease_epoch=self.epoch,
                                                 timeout_ms=int(wait * 1000))
            try:
                resp = await self._write("signals", "AwaitSignal", req,
                                         timeout=wait + (self._c._s.timeout or _AWAIT_MARGIN))
            except (errors.Unavailable, errors.DeadlineExceeded):
                entries = [e async for e in self._c.journal.read(self.run_id, floor)]
                got = _core.signal_entry_for(entries, name)
                if got is not None:
                    self._saw(got.seq)
                    return _core.signal_from_entry(self.run_id, got)
                await asyncio.sleep(_core.backoff(attempt))
                attempt += 1
                continue
            if resp.delivered:
                self._saw(resp.journal_seq)
                return Signal._from_pb(resp.signal)
            if end is not None and time.monotonic() >= end:
                if record_timeout:
                    await self.append(_core.SIGNAL_TIMEOUT_KIND, {"name": name, "n": n},
                                      key=_core.timeout_key(name, n))
                return None


class Runs:
    """See reel.client.Runs. begin, claim and claim_next are awaited for
    the Run (`run = await client.runs.begin(...)`), or opened with `async
    with client.runs.begin(...) as run` (the handle closed at the end of
    the block, as `with` in the sync client); `async with await ...` works
    as well."""

    def __init__(self, client: Client):
        self._c = client

    @_opens
    async def begin(self, app: str, user: str, session: str, invocation_id: str, *,
                    owner: Optional[str] = None, ttl: float = 30.0,
                    labels: Optional[Dict[str, str]] = None, heartbeat: bool = True,
                    retry: Optional[_core.RetryPolicy] = None) -> Run:
        req = journal_pb2.BeginRunRequest(app=app, user=user, session=session,
                                          invocation_id=invocation_id,
                                          lease_owner=owner or default_owner(),
                                          lease_ttl_ms=_core.ttl_ms(ttl),
                                          labels=_core.labels_dict(labels),
                                          retry=_core.retry_pb(retry))
        sent = [0.0]
        info = RunInfo._from_pb(await self._c._call("journal", "BeginRun", req, safe=True,
                                                    sent=sent))
        return Run(self._c, info, ttl, sent[0], heartbeat)

    @_opens
    async def claim(self, run_id: str, *, owner: Optional[str] = None, ttl: float = 30.0,
                    heartbeat: bool = True, expected_epoch: Optional[int] = None) -> Run:
        req = journal_pb2.ClaimRunRequest(run_id=run_id, lease_owner=owner or default_owner(),
                                          lease_ttl_ms=_core.ttl_ms(ttl),
                                          expected_epoch=expected_epoch or 0)
        sent = [0.0]
        info = RunInfo._from_pb(await self._c._call("journal", "ClaimRun", req, sent=sent))
        return Run(self._c, info, ttl, sent[0], heartbeat)

    @_opens
    async def claim_next(self, app: str, *, owner: Optional[str] = None, ttl: float = 30.0,
                         wait: Optional[float] = 30.0, heartbeat: bool = True
                         ) -> Optional[Run]:
        """See reel.client.Runs.claim_next. Cancelling the task while it
        waits claims nothing (unless the claim was already applied: then
        the run is claimable again after the lease's TTL)."""
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
            resp = await self._c._call("journal", "ClaimNextRun", req,
                                       timeout=left + (self._c._s.timeout or _AWAIT_MARGIN),
                                       sent=sent)
            if resp.found:
                return Run(self._c, RunInfo._from_pb(resp.run), ttl,
                           _core.claimed_at(sent[0], resp.waited_ms), heartbeat)
            if end is not None and time.monotonic() >= end:
                return None

    async def resume(self, run_id: str) -> RunInfo:
        """See reel.client.Runs.resume."""
        return RunInfo._from_pb(await self._c._call(
            "journal", "ResumeRun", journal_pb2.ResumeRunRequest(run_id=run_id)))

    async def submit(self, app: str, user: str, session: str, invocation_id: str, *,
                     labels: Optional[Dict[str, str]] = None,
                     retry: Optional[_core.RetryPolicy] = None) -> RunInfo:
        """See reel.client.Runs.submit."""
        async for info in self.list(app, user, session):
            if info.invocation_id == invocation_id:
                return info
        run = await self.begin(app, user, session, invocation_id, labels=labels, retry=retry,
                               heartbeat=False, owner=f"submit:{default_owner()}", ttl=5.0)
        if run.info.status != RunStatus.RUNNING:
            return run.info
        await self._c.signals.send(run.run_id, _core.SUBMIT_SIGNAL,
                                   signal_id=_core.SUBMIT_SIGNAL)
        try:
            return await run.suspend(_core.SUBMIT_SIGNAL)
        except errors.LeaseLost:
            return await self.get(run.run_id)

    async def get(self, run_id: str) -> RunInfo:
        return RunInfo._from_pb(await self._c._call(
            "journal", "GetRun", journal_pb2.GetRunRequest(run_id=run_id), safe=True))

    async def list(self, app: str = "", user: str = "", session: str = "", *,
                   status: Union[RunStatus, str, None] = None, page_size: int = 0
                   ) -> AsyncIterator[RunInfo]:
        req = journal_pb2.ListRunsRequest(app=app, user=user, session=session,
                                          status=_core.status_value(status) if status else 0,
                                          limit=page_size)
        while True:
            resp = await self._c._call("journal", "ListRuns", req, safe=True)
            for r in resp.runs:
                yield RunInfo._from_pb(r)
            if not resp.more:
                return
            req.start_after = resp.next_start_after

    async def recoverable(self, app: str = "", *, page_size: int = 0
                          ) -> AsyncIterator[RunInfo]:
        req = journal_pb2.ListRunsToRecoverRequest(app=app, limit=page_size)
        while True:
            resp = await self._c._call("journal", "ListRunsToRecover", req, safe=True)
            for r in resp.runs:
                yield RunInfo._from_pb(r)
            if not resp.more:
                return
            req.start_after = resp.next_start_after


class Signals:
    """See reel.client.Signals."""

    def __init__(self, client: Client):
        self._c = client

    async def _send(self, req) -> SendResult:
        if not req.signal_id:
            req.signal_id = uuid.uuid4().hex
        resp = await self._c._call("signals", "SendSignal", req, safe=True)
        return SendResult(Signal._from_pb(resp.signal), resp.duplicate,
                          RunStatus(resp.run_status) if resp.run_status else resp.run_status)

    async def send(self, run_id: str, name: str, payload: Any = None, *,
                   signal_id: Optional[str] = None, deliver_at: Any = None,
                   delay: Optional[float] = None) -> SendResult:
        """See reel.client.Signals.send."""
        return await self._send(signals_pb2.SendSignalRequest(
            run_id=run_id, name=name, payload=encode_optional_json(payload, "payload"),
            signal_id=signal_id or "", deliver_at_ms=_core.deliver_at_ms(deliver_at, delay)))

    async def send_to_session(self, app: str, user: str, session: str, name: str,
                              payload: Any = None, *, signal_id: Optional[str] = None,
                              deliver_at: Any = None, delay: Optional[float] = None
                              ) -> SendResult:
        return await self._send(signals_pb2.SendSignalRequest(
            app=app, user=user, session=session, name=name,
            payload=encode_optional_json(payload, "payload"), signal_id=signal_id or "",
            deliver_at_ms=_core.deliver_at_ms(deliver_at, delay)))

    async def cancel(self, run_id: str, signal_id: str) -> Signal:
        """See reel.client.Signals.cancel."""
        return Signal._from_pb(await self._c._call(
            "signals", "CancelSignal",
            signals_pb2.CancelSignalRequest(run_id=run_id, signal_id=signal_id)))

    async def wait(self, run_id: str, name: str, *, epoch: int, timeout: float = 0.0
                   ) -> Optional[Signal]:
        timeout = _core.await_seconds(timeout, "timeout")
        req = signals_pb2.AwaitSignalRequest(run_id=run_id, name=name, lease_epoch=epoch,
                                             timeout_ms=int(timeout * 1000))
        limit = None if self._c._s.timeout is None else self._c._s.timeout + timeout
        resp = await self._c._call("signals", "AwaitSignal", req, lease=True, timeout=limit)
        return Signal._from_pb(resp.signal) if resp.delivered else None

    async def list(self, run_id: str, name: str = "", *, include_consumed: bool = False,
                   page_size: int = 0) -> AsyncIterator[Signal]:
        req = signals_pb2.ListSignalsRequest(run_id=run_id, name=name,
                                             include_consumed=include_consumed,
                                             limit=page_size)
        while True:
            resp = await self._c._call("signals", "ListSignals", req, safe=True)
            for s in resp.signals:
                yield Signal._from_pb(s)
            if not resp.more:
                return
            req.after_seq = resp.next_after_seq
            req.after_consumed = resp.next_after_consumed


class Tail(_Resumable):
    """See reel.client.Tail; iterate with `async for`, close with
    `await tail.close()` (or `async with`)."""

    _method = "SubscribeEventBatches"

    def __init__(self, client: Client, cursor: _core.TailCursor):
        self._cursor = cursor
        super().__init__(client)

    @property
    def revision(self) -> int:
        return self._cursor.last

    @property
    def acked(self) -> int:
        return self._cursor.acked

    async def ack(self, revision: Optional[int] = None) -> Consumer:
        cur = self._cursor
        if not cur.consumer:
            raise ValueError("ack: this tail has no consumer")
        rev = revision if revision is not None else max(cur.done, cur.held or 0)
        resp = await self._c._call("wal", "AckEvents", cur.ack_request(rev), safe=True)
        cur.acked_to(rev)
        return Consumer._from_pb(resp.consumer)

    async def close(self) -> None:
        """See reel.client.Tail.close."""
        await super().close()
        cur = self._cursor
        if (not self._failed and cur.auto_ack and cur.consumer
                and cur.done > cur.acked):
            await self.ack(cur.done)

    async def _auto_ack(self) -> None:
        if self._cursor.ack_due():
            try:
                await self.ack(self._cursor.done)
            except (errors.Unavailable, errors.DeadlineExceeded):
                # As the sync tail: acked once reeld is back.
                self._cursor.ack_put_off()

    async def _run(self) -> AsyncIterator[Event]:
        cur = self._cursor
        clock = _core.ReconnectClock(self._c._s.reconnect_timeout)
        try:
            while not self._closed:
                try:
                    self._call = self._c._stream("wal", "SubscribeEventBatches", cur.request())
                    async for batch in self._call:
                        clock.ok()
                        for pb in batch.events:
                            ev = cur.feed(pb)
                            await self._auto_ack()
                            if ev is None:
                                continue
                            yield ev
                            cur.release_held()
                            await self._auto_ack()
                    return
                except grpc.RpcError as e:
                    if self._closed:
                        return
                    err = self._c._error(e, "SubscribeEventBatches")
                    if not _core.stream_resumable(err):
                        raise (await self._c._explain(err)) from None
                    if not await self._reconnect(clock, err):
                        return
                except asyncio.CancelledError:
                    if self._closed:
                        return
                    if self._c._closed_under():      # client.close(), in another task
                        raise _core.client_closed(self._method) from None
                    raise
        finally:
            with contextlib.suppress(ReferenceError):   # its handle is gone
                if self._call is not None:
                    self._call.cancel()


class Events:
    """See reel.client.Events."""

    def __init__(self, client: Client):
        self._c = client

    def tail(self, subjects: str = "", *, consumer: Optional[str] = None,
             from_revision: int = 0, ack: Optional[bool] = None, takeover: bool = False,
             progress: bool = False) -> Tail:
        if ack is None:
            ack = consumer is not None
        return Tail(self._c, _core.TailCursor(subjects, consumer, from_revision, takeover, ack,
                                              progress))

    async def head(self) -> Head:
        resp = await self._c._call("wal", "GetHead", wal_pb2.GetHeadRequest(), safe=True)
        return Head(resp.head_revision, resp.oldest_revision)

    async def ack(self, consumer: str, revision: int) -> Consumer:
        resp = await self._c._call("wal", "AckEvents", wal_pb2.AckEventsRequest(
            consumer=consumer, revision=revision), safe=True)
        return Consumer._from_pb(resp.consumer)

    async def consumers(self, *, page_size: int = 0) -> AsyncIterator[Consumer]:
        req = wal_pb2.ListConsumersRequest(limit=page_size)
        while True:
            resp = await self._c._call("wal", "ListConsumers", req, safe=True)
            for c in resp.consumers:
                yield Consumer._from_pb(c)
            if not resp.more:
                return
            req.start_after = resp.next_start_after

    async def delete_consumer(self, name: str) -> None:
        await self._c._call("wal", "DeleteConsumer", wal_pb2.DeleteConsumerRequest(name=name))


class Worker:
    """See reel.client.Worker: `await worker.run(max_runs=None)` keeps
    `concurrency` tasks each in a claim_next loop, calling fn(run) per run,
    with the same outcomes: an async fn on the loop, a plain one in a
    thread (as Run.step's). `stop()` cancels the loops
    waiting in claim_next at once; runs in hand are finished first. An
    error escaping a loop stops the worker the same way and run() raises
    it once the other loops' runs in hand ended; cancelling run() cancels
    the loops, runs in hand too."""

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
        self._stopped = False
        self._pool: Optional[concurrent.futures.ThreadPoolExecutor] = None
        self._claims: set = set()
        self._taken = 0
        self._max: Optional[int] = None
        self.completed = self.failed = self.parked = self.left = 0

    def stop(self) -> None:
        self._stopped = True
        for t in list(self._claims):
            t.cancel()

    async def run(self, *, max_runs: Optional[int] = None) -> None:
        self._max = max_runs
        errs: List[BaseException] = []

        def ended(loop: asyncio.Future) -> None:
            # A loop that failed stops the others as stop() does, as in the
            # sync worker: no new claims, the runs in hand end as their
            # code does; run() raises the error once they have. A loop
            # cancelled from inside (fn raising CancelledError) counts too.
            err = asyncio.CancelledError() if loop.cancelled() else loop.exception()
            if err is not None:
                errs.append(err)
                self.stop()

        # A plain fn's threads: one per loop, not the loop's default
        # executor's few (CPUs + 4), shared with everything else.
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=self.concurrency, thread_name_prefix="reel-worker")
        loops = [asyncio.ensure_future(self._loop()) for _ in range(self.concurrency)]
        for t in loops:
            t.add_done_callback(ended)
        try:
            await asyncio.wait(loops)
        except BaseException:
            # run() itself cancelled: the loops are, runs in hand with them.
            self.stop()
            for t in loops:
                t.cancel()
            await asyncio.wait(loops)
            raise
        finally:
            # A plain fn still running after a cancel finishes in its
            # thread; nothing waits for it here.
            self._pool.shutdown(wait=False)
        if errs:
            raise errs[0]

    def _take(self) -> bool:
        if self._stopped or (self._max is not None and
                             self.completed + self.failed + self._taken >= self._max):
            return False
        self._taken += 1
        return True

    def _count(self, what: str) -> None:
        self._taken -= 1
        setattr(self, what, getattr(self, what) + 1)
        if self._max is not None and self.completed + self.failed >= self._max:
            self.stop()

    async def _loop(self) -> None:
        attempt = 0
        while self._take():
            claim = asyncio.ensure_future(self._c.runs.claim_next(
                self.app, owner=self.owner, ttl=self.ttl, wait=self.poll))
            self._claims.add(claim)
            try:
                run = await claim
            except asyncio.CancelledError:
                self._taken -= 1
                if self._stopped:
                    return
                raise
            except (errors.Unavailable, errors.DeadlineExceeded):
                self._taken -= 1
                await asyncio.sleep(_core.backoff(attempt))
                attempt += 1
                continue
            except BaseException:
                self._taken -= 1
                raise
            finally:
                self._claims.discard(claim)
            attempt = 0
            if run is None:
                self._taken -= 1
                continue
            self._count(await self._handle(run))

    async def _handle(self, run: Run) -> str:
        async with run:
            try:
                result = await _off_the_loop(self.fn, run, _pool=self._pool)
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
                    await run.end(_core.failure_result(e), status=RunStatus.FAILED)
                except errors.ReelError:
                    return "left"
                return "failed"
            if run.info.status != RunStatus.RUNNING:
                return _ended_as(run.info.status)
            try:
                await run.end(result)
            except errors.ReelError:
                return "left"
            return "completed"


class ArtifactWatch(_Resumable):
    """See reel.client.ArtifactWatch; iterate with `async for`."""

    _method = "WatchArtifacts"

    def __init__(self, client: Client, cursor: _core.ArtifactWatchCursor):
        self._cursor = cursor
        super().__init__(client)

    @property
    def revision(self) -> Optional[int]:
        c = self._cursor
        return c.revision if c.positioned or c.bootstrapped else None

    async def _history(self, req) -> List[ArtifactEvent]:
        """The changes a positioned watch replays, up to its BOOTSTRAP_DONE."""
        call = self._c._stream("workspace", "WatchArtifacts", req)
        out: List[ArtifactEvent] = []
        try:
            async for pb in call:
                if pb.type == workspace_pb2.ArtifactEvent.BOOTSTRAP_DONE:
                    break
                out.append(ArtifactEvent._from_pb(pb))
        except grpc.RpcError as e:
            raise self._c._error(e, "WatchArtifacts") from None
        finally:
            call.cancel()
        return out

    async def _run(self) -> AsyncIterator[ArtifactEvent]:
        cur = self._cursor
        clock = _core.ReconnectClock(self._c._s.reconnect_timeout)
        try:
            while not self._closed:
                try:
                    self._call = self._c._stream("workspace", "WatchArtifacts", cur.request())
                    async for pb in self._call:
                        clock.ok()
                        for item in cur.feed(pb):
                            if isinstance(item, str):
                                key = item

                                async def tomb():
                                    records = [a async for a in self._c.workspace.list(
                                        cur.namespace, key, include_deleted=True)]
                                    history = None
                                    if any(a.key == key and a.revision > cur.revision
                                           for a in records):   # put again since
                                        events = await self._history(
                                            cur.history_request(key))
                                        history = lambda: events   # noqa: E731
                                    return cur.vanished_event(key, records, history)
                                item = await self._lookup(clock, tomb)
                            yield item
                    return
                except grpc.RpcError as e:
                    if self._closed:
                        return
                    err = self._c._error(e, "WatchArtifacts")
                    if not _core.stream_resumable(err):
                        raise (await self._c._explain(err)) from None
                    if not await self._reconnect(clock, err):
                        return
                except asyncio.CancelledError:
                    if self._closed:
                        return
                    if self._c._closed_under():      # client.close(), in another task
                        raise _core.client_closed(self._method) from None
                    raise
        finally:
            with contextlib.suppress(ReferenceError):   # its handle is gone
                if self._call is not None:
                    self._call.cancel()


class Workspace:
    """See reel.client.Workspace: the same calls, awaited. put also takes
    an async iterator of bytes; a file (or path) is read in a thread, a
    chunk at a time, and so is a path written by get."""

    def __init__(self, client: Client):
        self._c = client

    async def put(self, namespace: str, key: str, data: Any, *, content_type: str = "",
                  metadata: Optional[Dict[str, str]] = None, create: bool = False,
                  if_version: Optional[int] = None, chunk_size: int = _core.CHUNK_MAX
                  ) -> Artifact:
        up = _core.Upload(namespace, key, data, content_type=content_type, metadata=metadata,
                          create=create, if_version=if_version, chunk_size=chunk_size)
        raised: list = []
        loop = asyncio.get_running_loop()

        async def messages():
            try:
                yield up.first()
                if up.whole is not None:
                    for m in up.split(up.whole):
                        yield m
                elif up.file is not None:
                    while True:
                        piece = await loop.run_in_executor(None, up.file.read, up.chunk_size)
                        if not piece:
                            break
                        for m in up.split(piece):
                            yield m
                elif hasattr(up.items, "__aiter__"):
                    async for piece in up.items:
                        for m in up.split(piece):
                            yield m
                else:
                    for piece in up.items:
                        for m in up.split(piece):
                            yield m
            except BaseException as e:      # the upload is cancelled; raised below
                raised.append(e)
                raise

        try:
            call = self._c._invoke("PutArtifact", self._c._rpc.workspace.PutArtifact,
                                   messages(), timeout=None, metadata=self._c._s.metadata,
                                   wait_for_ready=self._c._s.wait_for_ready)
        except BaseException:
            up.close()
            raise
        try:
            resp = await call
        except grpc.RpcError as e:
            if raised:
                raise raised[0] from None
            raise (await self._c._explain(self._c._error(e, "PutArtifact"))) from None
        except asyncio.CancelledError:
            # grpc.aio cancels the call when the source raises: that error is
            # the caller's; otherwise this task itself was cancelled.
            call.cancel()
            if raised:
                raise raised[0] from None
            if self._c._closed_under():
                raise _core.client_closed("PutArtifact") from None
            raise
        finally:
            up.close()
        if raised:          # the source failed but the call was not told in time
            raise raised[0]
        return up.check(Artifact._from_pb(resp.artifact))

    async def get(self, namespace: str, key: str, *, out: Any = None, version: int = 0,
                  offset: int = 0, length: int = 0) -> Union[bytes, Artifact]:
        dl = _core.Download(namespace, key, version, offset, length)
        if out is None:
            parts: list = []
            await self._download(dl, parts.append)
            return b"".join(parts)
        loop = asyncio.get_running_loop()
        if isinstance(out, (str, os.PathLike)):
            path = os.fspath(out)
            tmp = f"{path}.{uuid.uuid4().hex[:8]}.part"
            try:
                f = open(tmp, "wb")
                try:
                    art = await self._download(
                        dl, lambda b: loop.run_in_executor(None, f.write, b))
                finally:
                    f.close()
                os.replace(tmp, path)
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.remove(tmp)
            return art
        return await self._download(dl, out.write)

    async def _download(self, dl: _core.Download, sink: Callable[[bytes], Any]) -> Artifact:
        # See reel.client.Workspace._download: reconnects as the streams do.
        clock = _core.ReconnectClock(self._c._s.reconnect_timeout)
        while True:
            call = None
            try:
                call = self._c._stream("workspace", "GetArtifact", dl.request())
                async for pb in call:
                    chunk = dl.feed(pb)
                    if chunk:
                        await _maybe_await(sink(chunk))
                        clock.ok()
                return dl.finish()
            except grpc.RpcError as e:
                err = self._c._error(e, "GetArtifact")
                if not _core.stream_resumable(err):
                    raise (await self._c._explain(err)) from None
            except asyncio.CancelledError:
                if self._c._closed_under():
                    raise _core.client_closed("GetArtifact") from None
                raise
            finally:
                if call is not None:
                    call.cancel()
            err = await self._c._explain(err)
            if _diagnose.settings_mistake(err):
                raise err
            await asyncio.sleep(clock.failed(err))

    async def stat(self, namespace: str, key: str, *, version: int = 0) -> Optional[Artifact]:
        try:
            resp = await self._c._call("workspace", "StatArtifact",
                                       workspace_pb2.StatArtifactRequest(
                                           namespace=namespace, key=key, version=version),
                                       safe=True)
        except errors.NotFound:
            if version:
                raise
            return None
        return Artifact._from_pb(resp.artifact)

    async def list(self, namespace: str, prefix: str = "", *, start_after: str = "",
                   include_deleted: bool = False, page_size: int = 0
                   ) -> AsyncIterator[Artifact]:
        req = _core.list_artifacts_request(namespace, prefix, start_after, include_deleted,
                                           page_size)
        while True:
            resp = await self._c._call("workspace", "ListArtifacts", req, safe=True)
            for a in resp.artifacts:
                yield Artifact._from_pb(a)
            if not resp.more:
                return
            req.start_after = resp.next_start_after

    async def delete(self, namespace: str, key: str, *, if_version: Optional[int] = None
                     ) -> Optional[Artifact]:
        resp = await self._c._call("workspace", "DeleteArtifact",
                                   _core.delete_artifact_request(namespace, key, if_version))
        return Artifact._from_pb(resp.artifact) if resp.existed else None

    @_opens
    async def watch(self, namespace: str, prefix: str = "", *,
                    from_revision: Optional[int] = None, now: bool = False) -> ArtifactWatch:
        """See reel.client.Workspace.watch (awaited: now=True reads the
        head first); iterate the result with `async for`. As runs.begin,
        `async with client.workspace.watch(...) as w` awaits it too."""
        if now and from_revision is not None:
            raise ValueError("watch: give from_revision or now, not both")
        if now:
            from_revision = (await self._c.status()).revision
        return ArtifactWatch(self._c, _core.ArtifactWatchCursor(namespace, prefix,
                                                                from_revision))
