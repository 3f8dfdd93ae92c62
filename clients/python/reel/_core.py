"""What the synchronous and the asyncio clients share: connection settings,
requests, and the state machines that make streams resumable and runs
replayable. Nothing here does I/O; `reel.client` and `reel.aio` drive these
objects with blocking and with awaiting calls, so each mechanism exists
once.

Watch resume (WatchCursor). reeld's watch has two parts: a replay (a
snapshot of the matching keys, or the versions or revisions after a
cursor), BOOTSTRAP_DONE with the revision S where live begins, then every
later change in revision order. Once a watch has a revision cursor (after
BOOTSTRAP_DONE, or from its first event when replaying by version or
revision), a reconnect asks for FROM_REVISION cursor: reeld replays exactly
the changes after it, so nothing is lost or repeated, and the new stream's
BOOTSTRAP_DONE is swallowed (the caller saw one already). A snapshot has no
such cursor: its entries come in key order, each with the revision that
wrote it. A reconnect during a snapshot therefore takes a new snapshot and
skips each (key, version) already yielded; a key yielded before whose
version changed is yielded again (its newer state); a key yielded before
that the new snapshot lacks was deleted meanwhile, and its DELETE (the last
change at or before the new snapshot's revision) is read from the key's
history and yielded before BOOTSTRAP_DONE. Only the snapshot phase keeps
the yielded keys, and drops them at BOOTSTRAP_DONE.

Tail resume (TailCursor). Without a consumer, a reconnect subscribes after
the last revision the stream delivered (events or PROGRESS). With a durable
consumer, reeld resumes after the consumer's acknowledged revision, so
events up to what this process already delivered come again: they are
skipped, and the caller sees each revision once, in order. A reconnect
takes over the consumer: the subscriber it replaces is this process's own
broken stream, which reeld may not have noticed yet. Acknowledgements
(auto mode) cover what the caller has finished, which is every event
before the one it holds: at most one AckEvents a second while events flow,
one when the stream goes idle (a PROGRESS event), and one on close.

Replay (Replay). A run's durable steps are journaled as kind "step" with
the idempotency key "step:<n>:<name>" (n counts the handle's step calls
from 0), so a resumed run finds step n's result by its position and name,
and an append retried after a lost answer writes nothing twice. A signal
that `wait_for_signal` consumes is journaled by reeld itself (kind
"signal", in the same commit as the consumption); a wait that timed out is
journaled by the client (kind "signal.timeout"), or, for a parked wait, by
reeld when SuspendRun's timeout fires (kind "signal" with "timed_out":
true), so the k-th wait for a name gets the k-th recorded outcome for that
name on every replay. The n-th run.sleep is a signal named and identified
"reel.sleep.<n>" that the run sends itself for delivery by reeld's timer:
its "signal" entry in the journal says the sleep is over, and its fixed id
makes a resend after a crash return the original (and its time).
"""
from __future__ import annotations

import dataclasses
import functools
import datetime
import hashlib
import io
import json
import math
import os
import random
import threading
import time
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Tuple, Union

import grpc
from google.protobuf.descriptor import FieldDescriptor

from reel import errors
from reel.types import (Artifact, ArtifactEvent, ArtifactEventType, Entry, Event, EventType,
                        JournalEntry, RunStatus, Signal, ValueEvent, encode_json)
from reel.v1 import journal_pb2, kv_pb2, wal_pb2, workspace_pb2

DEFAULT_ADDR = "127.0.0.1:7878"
DEFAULT_PORT = 7878
STEP_KIND = "step"
SIGNAL_KIND = "signal"
SIGNAL_TIMEOUT_KIND = "signal.timeout"
# An idempotency key is at most 256 bytes; "step:<n>:" takes up to 26.
STEP_NAME_MAX = 200
# run.sleep's n-th call waits for the signal of this name (and id) that it
# sends to its own run, delivered by reeld's timer.
SLEEP_PREFIX = "reel.sleep."
# runs.submit parks the new run on this name, with the signal already
# there, which makes it RUNNABLE for a worker at once.
SUBMIT_SIGNAL = "reel.submit"
# ClaimNextRun's wait_ms is at most 5 minutes; a longer wait is several.
CLAIM_WAIT_MAX = 300.0


# The largest PEM file read (as reelctl and the C client library).
PEM_MAX_BYTES = 1 << 20
# The longest token sent (as the C client library).
TOKEN_MAX_BYTES = 4096

PEM = Union[bytes, str, "os.PathLike[str]", None]


@dataclasses.dataclass(frozen=True)
class TLS:
    """TLS for the channel. Without `ca`, the system's roots verify the
    server; `cert` and `key` present a client certificate (mTLS; give both
    or neither); `server_name` overrides the name checked against the
    server's certificate. Each of ca, cert, key is the PEM itself (bytes,
    or a str starting with "-----BEGIN") or the path of a PEM file (a str
    or a path), read when the client is created."""

    ca: PEM = None
    cert: PEM = None
    key: PEM = dataclasses.field(default=None, repr=False)   # never in a log line
    server_name: Optional[str] = None

    @classmethod
    def from_env(cls) -> Optional["TLS"]:
        """TLS as reelctl reads it from the environment: REEL_TLS_CA,
        REEL_TLS_CERT and REEL_TLS_KEY (files), or REEL_TLS=1 (true, yes,
        on; any case) for the system's roots; None when none is set. Any
        other REEL_TLS is a ValueError, never read as off."""
        flag = os.environ.get("REEL_TLS", "").lower()
        on = flag in ("1", "true", "yes", "on")
        if not on and flag not in ("", "0", "false", "no", "off"):
            raise ValueError(f"REEL_TLS: {os.environ['REEL_TLS']!r} is not 1, true, yes, "
                             "on, 0, false, no or off")
        files = {f: os.environ.get(v) or None for f, v in
                 (("ca", "REEL_TLS_CA"), ("cert", "REEL_TLS_CERT"), ("key", "REEL_TLS_KEY"))}
        if not on and not any(files.values()):
            return None
        return cls(**files)

    def load(self) -> Tuple[Optional[bytes], Optional[bytes], Optional[bytes]]:
        """(ca, cert, key) as PEM bytes, files read; ValueError naming the
        field (and the file, never a key's content) for what is unusable."""
        if (self.cert is None) != (self.key is None):
            raise ValueError("tls: cert and key go together: give both or neither")
        pem = tuple(_pem(f"tls.{name}", getattr(self, name))
                    for name in ("ca", "cert", "key"))
        _check_pems(*pem, **{name: _named(f"tls.{name}", getattr(self, name))
                             for name in ("ca", "cert", "key")})
        return pem


def _named(field: str, v: PEM) -> str:
    """field, and the file's path when v is one."""
    if v is None or isinstance(v, bytes) or \
            (isinstance(v, str) and v.lstrip().startswith("-----BEGIN")):
        return field
    return f"{field} {os.fspath(v)}"


class _Encrypted(Exception):
    pass


def _no_passphrase():
    raise _Encrypted()


def _check_pems(ca_pem: Optional[bytes], cert_pem: Optional[bytes],
                key_pem: Optional[bytes], ca: str, cert: str, key: str) -> None:
    """What gRPC would only log, then call the server unreachable (a call
    waits out its deadline): a CA or certificate that does not read, a key
    that does not or is not the certificate's. ValueError naming it; the
    key is read from memory, never asked a passphrase for."""
    import ssl
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    for name, data in ((ca, ca_pem), (cert, cert_pem)):
        if data is None:
            continue
        try:
            ctx.load_verify_locations(cadata=data.decode("ascii", "replace"))
        except ssl.SSLError as e:
            raise ValueError(f"{name}: holds no certificate that reads") from e
    if cert_pem is None or not hasattr(os, "memfd_create"):
        return
    fds = [os.memfd_create("reel-tls"), os.memfd_create("reel-tls")]
    try:
        for fd, data in zip(fds, (cert_pem, key_pem)):
            os.write(fd, data)
        ctx.load_cert_chain(f"/proc/self/fd/{fds[0]}", f"/proc/self/fd/{fds[1]}",
                            password=_no_passphrase)
    except _Encrypted:
        raise ValueError(f"{key}: the key is encrypted; give it without a "
                         "passphrase") from None
    except ssl.SSLError as e:
        if e.reason == "KEY_VALUES_MISMATCH":
            raise ValueError(f"{key}: is not the key of the certificate in "
                             f"{cert}") from None
        raise ValueError(f"{key}: holds no private key that reads") from None
    except OSError:
        return   # no /proc: gRPC will say what it can
    finally:
        for fd in fds:
            os.close(fd)


def _pem(field: str, v: PEM) -> Optional[bytes]:
    if v is None or isinstance(v, bytes):
        if v is not None and not v:
            raise ValueError(f"{field}: empty")
        return v
    if isinstance(v, str) and v.lstrip().startswith("-----BEGIN"):
        return v.encode()
    if not isinstance(v, (str, os.PathLike)):
        raise TypeError(f"{field}: PEM bytes or a file's path, not {type(v).__name__}")
    path = os.fspath(v)
    try:
        with open(path, "rb") as f:
            data = f.read(PEM_MAX_BYTES + 1)
    except OSError as e:
        raise ValueError(f"{field}: cannot read {path}: {e.strerror}") from e
    if not data or len(data) > PEM_MAX_BYTES:
        raise ValueError(f"{field}: {path} is " +
                         ("empty" if not data else f"over the limit of {PEM_MAX_BYTES} bytes"))
    return data


def check_token(token: str) -> str:
    """The token, if it can go into a header: 1 to 4096 bytes of printable
    ASCII without spaces. The message never repeats the token."""
    if not isinstance(token, str):
        raise TypeError(f"token: a str, not {type(token).__name__}")
    raw = token.encode("utf-8", "surrogatepass")
    if not 1 <= len(raw) <= TOKEN_MAX_BYTES:
        raise ValueError(f"token: {len(raw)} bytes, expected 1 to {TOKEN_MAX_BYTES}")
    for i, b in enumerate(raw):
        if b <= 0x20 or b > 0x7E:
            raise ValueError(f"token: byte {i} is not printable ASCII without spaces")
    return token


@dataclasses.dataclass(frozen=True)
class Settings:
    """How a client talks to reeld (see reel.connect)."""

    target: str
    token: Optional[str] = dataclasses.field(repr=False)    # never in a log line
    tls: Optional[TLS]
    pem: Tuple[Optional[bytes], Optional[bytes], Optional[bytes]] = \
        dataclasses.field(repr=False)
    timeout: float
    wait_for_ready: bool
    retries: int
    reconnect_timeout: Optional[float]
    max_message_bytes: Optional[int]
    options: Tuple[Tuple[str, Any], ...]

    @property
    def metadata(self) -> Tuple[Tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.token}"),) if self.token else ()

    def channel_options(self) -> List[Tuple[str, Any]]:
        # A restarted reeld is found within a few seconds: gRPC's default
        # reconnect backoff starts at 1 s and grows to 2 minutes.
        # gRPC's own retries are off: with them, a server-streaming call
        # started while the channel is in TRANSIENT_FAILURE after reeld's
        # GOAWAY (a clean stop) neither fails nor starts, ever (grpcio
        # 1.51), so a watch or download begun while reeld was down hung
        # after it came back. The client retries itself: safe calls, and
        # streams resume.
        opts = {"grpc.initial_reconnect_backoff_ms": 100,
                "grpc.min_reconnect_backoff_ms": 100,
                "grpc.max_reconnect_backoff_ms": 2000,
                "grpc.enable_retries": 0}
        if self.max_message_bytes is not None:
            opts["grpc.max_receive_message_length"] = self.max_message_bytes
            opts["grpc.max_send_message_length"] = self.max_message_bytes
        if self.tls is not None and self.tls.server_name:
            opts["grpc.ssl_target_name_override"] = self.tls.server_name
        opts.update(dict(self.options))
        return list(opts.items())

    def credentials(self) -> Optional[grpc.ChannelCredentials]:
        if self.tls is None:
            return None
        ca, cert, key = self.pem
        return grpc.ssl_channel_credentials(root_certificates=ca, private_key=key,
                                            certificate_chain=cert)


def target(addr: Optional[str]) -> str:
    """The gRPC target for addr (as reelctl reads it): None is $REEL_ADDR or
    127.0.0.1:7878; a host without a port means port 7878; an IPv6 address
    goes in brackets."""
    if addr is not None and not isinstance(addr, str):
        raise TypeError(f"addr: a \"host:port\" string, not {type(addr).__name__}")
    addr = addr or os.environ.get("REEL_ADDR") or DEFAULT_ADDR
    if addr.startswith(("http://", "https://")):
        raise ValueError(f"addr: {addr!r}: give host:port (a gRPC address, not a URL); "
                         "for TLS pass tls=")
    if addr.isdigit():   # else a host named "7000", and a DNS failure
        raise ValueError(f"addr: {addr!r} is a port alone: write host:port "
                         f"('127.0.0.1:{addr}' on this machine)")
    if "://" in addr or addr.startswith(("unix:", "dns:", "ipv4:", "ipv6:")):
        return addr
    if addr.startswith("["):
        end = addr.find("]")
        if end < 0:
            raise ValueError(f"addr: {addr!r}: an IPv6 address needs its closing ]")
        if not addr[end + 1:].startswith(":"):
            return f"{addr}:{DEFAULT_PORT}"
        _check_port(addr, addr[end + 2:])
        return addr
    if addr.count(":") > 1:
        raise ValueError(f"addr: {addr!r}: put an IPv6 address in brackets ([::1]:7878)")
    if ":" not in addr:
        return f"{addr}:{DEFAULT_PORT}"
    _check_port(addr, addr.rsplit(":", 1)[1])
    return addr


def _check_port(addr: str, port: str) -> None:
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"addr: {addr!r}: the port must be 1-65535")


def settings(addr, token, tls, timeout, wait_for_ready, retries, reconnect_timeout,
             max_message_bytes, options) -> Settings:
    """The client's settings; as reelctl, a token not given is $REEL_TOKEN
    and TLS not given comes from REEL_TLS_CA, REEL_TLS_CERT, REEL_TLS_KEY
    and REEL_TLS=1 (tls=False and token="" turn them off)."""
    if tls is None:
        tls = TLS.from_env()
    if tls is True:
        tls = TLS()
    elif tls is False:
        tls = None
    elif tls is not None and not isinstance(tls, TLS):
        raise TypeError("tls: pass True, False, None or reel.TLS(...)")
    if token is None:
        token = os.environ.get("REEL_TOKEN") or None
    if token:
        check_token(token)
    if timeout is not None and \
            seconds(timeout, "timeout", positive=True) > DEADLINE_MAX_S:
        raise ValueError(f"timeout: at most {DEADLINE_MAX_S:.0f} seconds per call, not "
                         f"{timeout!r} (None: no deadline)")
    if reconnect_timeout is not None:
        seconds(reconnect_timeout, "reconnect_timeout")
    if retries < 0:
        raise ValueError("retries: must be 0 or more")
    pem = tls.load() if tls is not None else (None, None, None)
    return Settings(target(addr), token or None, tls, pem, timeout, wait_for_ready, retries,
                    reconnect_timeout, max_message_bytes, tuple(options or ()))


# ---- Requests -------------------------------------------------------------
#
# Every request is built with req_pb(), so an argument protobuf cannot take (a
# key that is an int, text with a lone surrogate, a negative version) is a
# TypeError or ValueError naming the argument, before anything is sent.

# Request fields whose argument has another name.
_ARG_NAMES = {"limit": "page_size", "lease_owner": "owner", "lease_ttl_ms": "ttl",
              "wait_ms": "wait", "timeout_ms": "timeout", "lease_epoch": "epoch",
              "subject_pattern": "subjects", "idempotency_key": "key",
              "expected_version": "if_version"}

# Fields a request cannot go without: None for one of them is a TypeError
# (protobuf would send it empty, and reeld name it only by its length). In a
# list or a watch, the others are filters, and None is no filter.
_NAMES = frozenset(("namespace", "key", "app", "run_id", "name", "user", "session",
                    "invocation_id"))
_SCOPES = frozenset(("namespace", "run_id"))

_EXPECTED = {
    FieldDescriptor.CPPTYPE_STRING: "a str",
    FieldDescriptor.CPPTYPE_BOOL: "a bool",
    FieldDescriptor.CPPTYPE_ENUM: "an int",
    FieldDescriptor.CPPTYPE_INT32: "an int", FieldDescriptor.CPPTYPE_INT64: "an int",
    FieldDescriptor.CPPTYPE_UINT32: "an int", FieldDescriptor.CPPTYPE_UINT64: "an int",
    FieldDescriptor.CPPTYPE_FLOAT: "a number", FieldDescriptor.CPPTYPE_DOUBLE: "a number",
}


def _bad_field(cls, name: str, value: Any, err: Exception) -> Exception:
    arg = _ARG_NAMES.get(name, name)
    field = cls.DESCRIPTOR.fields_by_name.get(name)
    if isinstance(err, UnicodeError):
        where = f" (character {err.start})" if isinstance(err, UnicodeEncodeError) else ""
        return ValueError(f"{arg}: not valid Unicode text: a lone surrogate{where} "
                          f"cannot be sent as UTF-8")
    if isinstance(err, TypeError):
        if field is not None and field.type == FieldDescriptor.TYPE_BYTES:
            expected = "bytes"
        elif field is not None and field.cpp_type == FieldDescriptor.CPPTYPE_MESSAGE:
            expected = f"a {field.message_type.name}"
        else:
            expected = _EXPECTED.get(field.cpp_type, "another type") if field else "another type"
        return TypeError(f"{arg}: {expected}, not {type(value).__name__}")
    return ValueError(f"{arg}: {value!r} cannot be sent: {err}")


def req_pb(cls, **fields):
    """cls(**fields); an argument protobuf refuses is a TypeError or a
    ValueError naming it (see above), and so is None for a name and a bool
    for a number (which protobuf would take as 0 or 1)."""
    names = _SCOPES if cls.DESCRIPTOR.name.startswith(("List", "Watch")) else _NAMES
    for name, value in fields.items():
        if value is None and name in names:
            raise TypeError(f"{_ARG_NAMES.get(name, name)}: a str, not None")
        if isinstance(value, bool):
            field = cls.DESCRIPTOR.fields_by_name.get(name)
            if field is not None and field.cpp_type != FieldDescriptor.CPPTYPE_BOOL:
                raise _bad_field(cls, name, value, TypeError())
    try:
        return cls(**fields)
    except (TypeError, ValueError) as e:
        for name, value in fields.items():
            try:
                cls(**{name: value})
            except (TypeError, ValueError) as one:
                raise _bad_field(cls, name, value, one) from None
        raise


class checked:
    """A reel.v1 module whose request classes build with req_pb: the
    clients' `kv_pb2.SetValueRequest(namespace=ns, key=5)` is a TypeError
    naming `key`. Everything else is the module's own."""

    def __init__(self, module):
        self._module = module

    def __getattr__(self, name: str):
        value = getattr(self._module, name)
        if name.endswith("Request") and isinstance(value, type):
            return functools.partial(req_pb, value)
        return value


def client_closed(method: str = "") -> errors.Cancelled:
    """What a call on a closed client raises."""
    return errors.Cancelled("client is closed", method=method)


def failure_result(e: BaseException) -> Dict[str, str]:
    """The result of a run the worker helper ends FAILED because its code
    raised e: {"error": the class's name, "message": its text}, the text
    made sendable (a lone surrogate escaped) whatever it holds."""
    try:
        message = str(e)
    except Exception:                       # a broken __str__
        message = f"<{type(e).__name__} whose str() failed>"
    message = message.encode("utf-8", "backslashreplace").decode("utf-8")
    return {"error": type(e).__name__, "message": message}

def backoff(attempt: int) -> float:
    """Seconds to wait before retry number `attempt` (0-based): 50 ms
    doubling to 2 s, with jitter so clients that failed together do not
    come back together."""
    return min(2.0, 0.05 * (2 ** min(attempt, 6))) * random.uniform(0.5, 1.0)


def conflict_pause(attempt: int) -> float:
    """A short random pause between CAS attempts, growing with contention."""
    return random.uniform(0, min(0.05, 0.001 * (2 ** min(attempt, 6))))


def ended_as(info, status) -> bool:
    """Whether a run already ended with this status: then run.end() on its
    handle (a replay of a finished script, or a second end) returns the
    run as it ended instead of failing on a lease it cannot hold."""
    want = status_value(status)
    return int(info.status) == want and RunStatus(want).terminal


def status_value(status) -> int:
    """A RunStatus, or its name in any case, as the proto's number."""
    if isinstance(status, str):
        try:
            return int(RunStatus[status.upper()])
        except KeyError:
            raise ValueError(f"status: unknown run status {status!r}") from None
    return int(RunStatus(status))


def claimed_at(sent: float, waited_ms: int) -> float:
    """When a long-polled claim's lease began, on this process's monotonic
    clock: the request's send plus reeld's wait before it claimed (the
    request arrived no sooner than it was sent), never in the future."""
    return min(time.monotonic(), sent + max(0, waited_ms) / 1000.0)


def unary_retryable(err: errors.ReelError) -> bool:
    """Errors a call that is safe to repeat may be retried on: the server
    went away or is restarting."""
    return isinstance(err, errors.Unavailable)


# How reeld refuses a write its queue has no room for (--write-queue, or
# --write-queue-bytes): refused before anything was written.
QUEUE_FULL = "write queue is full"


def queue_full(err: errors.ReelError) -> bool:
    """A write reeld refused unqueued: nothing was written, so any call,
    a write that is not safe to repeat included, may be sent again after a
    backoff."""
    return isinstance(err, errors.ResourceExhausted) and err.message.startswith(QUEUE_FULL)


# In the message of a stream reeld cancelled because its reader took nothing
# of the last message sent for a while, when other streams waited for room
# (the stream budget, --max-stream-backlog-bytes): resumable.
EVICTED = "read nothing of its last message"


def stream_resumable(err: errors.ReelError) -> bool:
    """Stream ends a resumable stream reconnects after: a lost connection
    or a server shutting down (both UNAVAILABLE), or reeld cancelling a
    stream this side read too slowly while others waited for room (an
    iteration that took its time over each item)."""
    return isinstance(err, errors.Unavailable) or (
        isinstance(err, errors.ResourceExhausted) and EVICTED in err.message)


class ReconnectClock:
    """How long a stream has been failing to reconnect, against the
    client's reconnect_timeout (None: forever)."""

    def __init__(self, limit: Optional[float]):
        self.limit = limit
        self.since: Optional[float] = None
        self.attempt = 0

    def ok(self) -> None:
        self.since = None
        self.attempt = 0

    def failed(self, err: errors.ReelError) -> float:
        """The pause before the next attempt; raises err when the failures
        have lasted past the limit."""
        now = time.monotonic()
        if self.since is None:
            self.since = now
        if self.limit is not None and now - self.since >= self.limit:
            raise err
        pause = backoff(self.attempt)
        self.attempt += 1
        if self.limit is not None:
            pause = min(pause, max(0.0, self.since + self.limit - now))
        return pause


# ---- KV -------------------------------------------------------------------

def precondition(create: bool, if_version: Optional[int]) -> Dict[str, int]:
    """A write's precondition fields: create=True (the key must be missing)
    or if_version=N (its version must be N), for req_pb to check."""
    if create:
        return {"precondition": kv_pb2.PRECONDITION_ABSENT}
    if if_version is None:
        return {}
    return {"precondition": kv_pb2.PRECONDITION_VERSION, "expected_version": if_version}


def set_request(namespace: str, key: str, value_json: str, create: bool,
                if_version: Optional[int], writer: Optional[str]) -> kv_pb2.SetValueRequest:
    if create and if_version is not None:
        raise ValueError("put: give create=True or if_version=N, not both")
    return req_pb(kv_pb2.SetValueRequest, namespace=namespace, key=key, value=value_json,
                  writer=writer or "", **precondition(create, if_version))


def delete_request(namespace: str, key: str, if_version: Optional[int],
                   writer: Optional[str]) -> kv_pb2.DeleteValueRequest:
    return req_pb(kv_pb2.DeleteValueRequest, namespace=namespace, key=key, writer=writer or "",
                  **precondition(False, if_version))


class CasEntry:
    """The entry `kv.cas` hands to its block: the value read and its
    version. Assign `value` (or call `delete()`) to write on exit; leave it
    alone to write nothing. After the write, `result` is the entry written
    (the tombstone for a delete)."""

    def __init__(self, namespace: str, key: str, read: Optional[Entry], version: int):
        self.namespace = namespace
        self.key = key
        self.entry = read                 # the live entry read, or None
        self.version = version            # its version; 0 missing, a tombstone's when deleted
        self._value = read.value if read is not None else None
        self._op: Optional[str] = None
        self.result: Optional[Entry] = None

    @property
    def exists(self) -> bool:
        return self.entry is not None

    @property
    def value(self) -> Any:
        return self._value

    @value.setter
    def value(self, v: Any) -> None:
        self._value = v
        self._op = "put"

    def delete(self) -> None:
        self._op = "delete"

    def __repr__(self) -> str:
        return (f"CasEntry({self.namespace!r}, {self.key!r}, version={self.version}, "
                f"value={self._value!r})")


def read_version(resp: kv_pb2.GetValueResponse) -> Tuple[Optional[Entry], int]:
    """(the live entry or None, the version a CAS must present)."""
    if resp.found:
        e = Entry._from_pb(resp.entry)
        return e, e.version
    return None, resp.entry.version if resp.HasField("entry") else 0


_START = {
    "snapshot": kv_pb2.WatchValueRequest.SNAPSHOT,
    "now": kv_pb2.WatchValueRequest.NOW,
    "version": kv_pb2.WatchValueRequest.FROM_VERSION,
    "revision": kv_pb2.WatchValueRequest.FROM_REVISION,
}


@dataclasses.dataclass(frozen=True)
class Vanished:
    """A key a resumed snapshot no longer holds: its DELETE at or before
    `upto` (the new snapshot's revision) must be read from its history."""

    key: str
    version: int
    upto: int


class WatchCursor:
    """One logical watch over any number of streams (see the module's
    docstring). Not thread-safe: one iterator drives it."""

    def __init__(self, namespace: str, key: str, *, from_revision: Optional[int],
                 from_version: Optional[int], now: bool):
        given = [n for n, v in (("from_revision", from_revision),
                                ("from_version", from_version)) if v is not None]
        if now:
            given.append("now")
        if len(given) > 1:
            raise ValueError(f"watch: give one start, not {' and '.join(given)}")
        req_pb(kv_pb2.WatchValueRequest, namespace=namespace, key=key)   # refused now
        self.namespace, self.key = namespace, key
        self.mode = ("revision" if from_revision is not None else
                     "version" if from_version is not None else "now" if now else "snapshot")
        self.from_version = from_version or 0
        self.revision = from_revision or 0
        self.positioned = self.mode == "revision"
        self.bootstrapped = False
        self.streams = 0
        self._yielded: Optional[Dict[str, int]] = {} if self.mode == "snapshot" else None
        self._present: set = set()

    @property
    def resume_revision(self) -> Optional[int]:
        return self.revision if self.positioned or self.bootstrapped else None

    def request(self) -> kv_pb2.WatchValueRequest:
        self.streams += 1
        req = req_pb(kv_pb2.WatchValueRequest, namespace=self.namespace, key=self.key)
        if self.positioned or self.bootstrapped:
            req.start = _START["revision"]
            req.from_revision = self.revision
        else:
            req.start = _START[self.mode]
            if self.mode == "version":
                req.from_version = self.from_version
            self._present = set()
        return req

    def feed(self, pb) -> List[Union[ValueEvent, Vanished]]:
        """What to hand the caller for one event off the stream, in order."""
        if pb.type == kv_pb2.ValueEvent.BOOTSTRAP_DONE:
            first = not self.bootstrapped
            self.revision = max(self.revision, pb.revision)
            self.bootstrapped = True
            if not first:
                return []
            out: List[Union[ValueEvent, Vanished]] = []
            if self._yielded is not None:
                if self.streams > 1:
                    out = [Vanished(k, v, pb.revision) for k, v in sorted(self._yielded.items())
                           if k not in self._present]
                self._yielded = None
                self._present = set()
            out.append(ValueEvent._from_pb(pb))
            return out
        if not self.bootstrapped and self._yielded is not None:
            self._present.add(pb.key)
            if self._yielded.get(pb.key) == pb.version:
                return []
            self._yielded[pb.key] = pb.version
            return [ValueEvent._from_pb(pb)]
        if self.positioned and pb.revision <= self.revision:
            return []
        self.revision = pb.revision
        self.positioned = True
        return [ValueEvent._from_pb(pb)]

    @staticmethod
    def vanished_event(v: Vanished, history: Iterable[ValueEvent]) -> ValueEvent:
        """The DELETE that removed v.key by v.upto, from its history after
        the version already yielded; OutOfRange if that history is gone."""
        last = None
        for ev in history:
            if ev.revision > v.upto:
                break
            last = ev
        if last is None or last.type != EventType.DELETE:
            raise errors.OutOfRange(
                f"watch: key {v.key!r} was deleted while the watch reconnected during its "
                f"snapshot, and its history after version {v.version} up to revision "
                f"{v.upto} is no longer retained")
        return last


# ---- Journal --------------------------------------------------------------

class FollowCursor:
    """SubscribeRun over reconnects: resumes after the last seq delivered."""

    def __init__(self, run_id: str, from_seq: int):
        req_pb(journal_pb2.SubscribeRunRequest, run_id=run_id, from_seq=from_seq)
        self.run_id = run_id
        self.seq = from_seq

    def request(self) -> journal_pb2.SubscribeRunRequest:
        return req_pb(journal_pb2.SubscribeRunRequest, run_id=self.run_id, from_seq=self.seq)

    def feed(self, pb) -> Optional[JournalEntry]:
        if pb.seq <= self.seq:
            return None
        self.seq = pb.seq
        return JournalEntry._from_pb(pb)


class Lease:
    """A Run handle's view of its lease, on the monotonic clock: valid until
    `ttl` after the last successful BeginRun, ClaimRun or Heartbeat was
    *sent* (reeld counts from when it received it, which is later). Once lost
    it stays lost. Thread-safe (the sync client's heartbeat thread and the
    caller's thread share it)."""

    def __init__(self, ttl: float, sent_at: float):
        self.ttl = ttl
        self._mu = threading.Lock()
        self._deadline = sent_at + ttl
        self._lost: Optional[errors.LeaseLost] = None
        self._released: Optional[str] = None
        self.lost_event = threading.Event()

    @property
    def deadline(self) -> float:
        with self._mu:
            return self._deadline

    def renewed(self, sent_at: float) -> None:
        with self._mu:
            if self._lost is None:
                self._deadline = max(self._deadline, sent_at + self.ttl)

    def lose(self, err: errors.LeaseLost) -> errors.LeaseLost:
        with self._mu:
            if self._lost is None:
                self._lost = err
                self.lost_event.set()
            return self._lost

    def release(self, why: str) -> None:
        """The handle holds no lease now (the run ended or was parked, or
        was not RUNNING when the handle got it): why says so."""
        with self._mu:
            if self._released is None:
                self._released = why

    @property
    def lost(self) -> Optional[errors.LeaseLost]:
        with self._mu:
            return self._lost

    def check(self, run_id: str, epoch: int) -> None:
        """Raises LeaseLost unless the lease is still this handle's."""
        with self._mu:
            if self._lost is None and self._released is not None:
                self._lost = errors.LeaseLost(f"run {run_id}: this handle holds no lease: "
                                              f"{self._released}", from_server=False)
            if self._lost is None and time.monotonic() >= self._deadline:
                self._lost = errors.LeaseLost(
                    f"run {run_id}: the lease (epoch {epoch}) expired without a renewal "
                    f"({self.ttl:g} s after the last heartbeat that reached reeld); "
                    f"another worker may hold the run now", from_server=False)
            if self._lost is not None:
                self.lost_event.set()
                raise self._lost

    def until_expiry(self) -> float:
        """Seconds until the lease expires unless renewed (<= 0: expired)."""
        with self._mu:
            return self._deadline - time.monotonic()


@dataclasses.dataclass
class _Outcome:
    delivered: Optional[Signal]      # None: the wait timed out


class Replay:
    """What a run's journal says its durable steps and signal waits did
    (see the module's docstring), and the positions the handle's calls have
    reached. Loaded once, from the journal as it was when the handle first
    needed it: after that only this handle writes to the run."""

    def __init__(self, run_id: str):
        self.run_id = run_id
        self.loaded = False
        self.steps: Dict[int, Tuple[str, Any]] = {}
        self.outcomes: Dict[str, List[_Outcome]] = {}
        self.step_n = 0
        self.sleep_n = 0
        self.wait_n: Dict[str, int] = {}

    def load(self, entries: Iterable[JournalEntry]) -> None:
        for e in entries:
            if e.kind == STEP_KIND and e.idempotency_key.startswith("step:"):
                p = e.payload
                try:
                    self.steps[int(p["n"])] = (str(p["step"]), p.get("result"))
                except (KeyError, TypeError, ValueError):
                    raise errors.ReplayMismatch(
                        f"run {self.run_id}: journal entry {e.seq} has a step's key "
                        f"({e.idempotency_key!r}) but not a step's payload: it was not "
                        f"written by run.step") from None
            elif e.kind == SIGNAL_KIND and isinstance(e.payload, dict) and \
                    e.payload.get("timed_out"):
                # reeld's own record of a suspension's timeout (SuspendRun.timeout_ms).
                self.outcomes.setdefault(e.payload.get("name", ""), []).append(_Outcome(None))
            elif e.kind == SIGNAL_KIND:
                sig = signal_from_entry(self.run_id, e)
                self.outcomes.setdefault(sig.name, []).append(_Outcome(sig))
            elif e.kind == SIGNAL_TIMEOUT_KIND:
                self.outcomes.setdefault(e.payload["name"], []).append(_Outcome(None))
        self.loaded = True

    def next_step(self, name: str) -> int:
        if not isinstance(name, str) or not name:
            raise ValueError("step: name must be a non-empty string")
        if len(name.encode()) > STEP_NAME_MAX:
            raise ValueError(f"step: name is {len(name.encode())} bytes, at most "
                             f"{STEP_NAME_MAX}")
        n = self.step_n
        self.step_n += 1
        return n

    def step_failed(self, n: int) -> None:
        """Step n's fn raised (nothing journaled): its position is given
        back if no step took one since, so that code retrying the step
        takes the same position, in the first run and on replay."""
        if self.step_n == n + 1:
            self.step_n = n

    def recorded_step(self, n: int, name: str) -> Tuple[bool, Any]:
        """(True, result) if step n is journaled; ReplayMismatch if under
        another name."""
        if n not in self.steps:
            return False, None
        have, result = self.steps[n]
        if have != name:
            raise errors.ReplayMismatch(
                f"run {self.run_id}: step {n} is {have!r} in the journal, but the code now "
                f"calls {name!r} there: resume the run with the code that began it")
        return True, result

    def next_sleep(self) -> Tuple[str, bool]:
        """(the signal name of the handle's next sleep, whether the journal
        shows it done)."""
        name = f"{SLEEP_PREFIX}{self.sleep_n}"
        self.sleep_n += 1
        return name, bool(self.outcomes.get(name))

    def next_wait(self, name: str) -> Tuple[int, Optional[_Outcome]]:
        n = self.wait_n.get(name, 0)
        self.wait_n[name] = n + 1
        got = self.outcomes.get(name, [])
        return n, (got[n] if n < len(got) else None)

    def wait_abandoned(self, name: str, n: int) -> None:
        """The n-th wait for name was given up before it had an answer
        (its task cancelled): the next wait for name is the n-th again, and
        finds in the journal whatever the abandoned one consumed."""
        if self.wait_n.get(name) == n + 1:
            self.wait_n[name] = n


def step_key(n: int, name: str) -> str:
    return f"step:{n}:{name}"


def step_payload(n: int, name: str, result: Any) -> Tuple[str, Any]:
    """(the journal payload, the result as the journal will return it): a
    step returns the JSON round trip of fn's result on its first run too, so
    a resumed run sees exactly what the first one saw."""
    text = encode_json({"step": name, "n": n, "result": result}, f"step {name!r}: result")
    return text, json.loads(text)["result"]


def timeout_key(name: str, n: int) -> str:
    return f"signal.timeout:{n}:{name}"


def signal_entry_for(entries: Iterable[JournalEntry], name: str) -> Optional[JournalEntry]:
    for e in entries:
        if e.kind == SIGNAL_KIND and e.payload.get("name") == name:
            return e
    return None


def signal_from_entry(run_id: str, e: JournalEntry) -> Signal:
    """The signal a "signal" journal entry records. reeld writes it as
    {"name":N,"signal_id":"I","payload":P} with P as sent (null for none),
    and escapes every quote inside I, so P's text is what follows the first
    '","payload":' and is returned byte for byte."""
    p = e.payload
    text = e.payload_json
    mark = '","payload":'
    at = text.find(mark)
    raw = text[at + len(mark):-1] if at >= 0 and text.endswith("}") else ""
    if raw == "null":
        raw = ""
    return Signal(run_id, p["name"], raw, p.get("signal_id", ""), journal_seq=e.seq)


# ---- The WAL tail ---------------------------------------------------------

class TailCursor:
    """One logical subscription over any number of streams (see the
    module's docstring). Not thread-safe: one iterator drives it, and
    `ack` is called from that iterator's thread or task."""

    ACK_INTERVAL = 1.0

    def __init__(self, pattern: str, consumer: Optional[str], from_revision: int,
                 takeover: bool, ack: bool, progress: bool):
        if ack and not consumer:
            raise ValueError("tail: ack=True needs a consumer name (an anonymous tail "
                             "keeps no cursor on the server)")
        req_pb(wal_pb2.SubscribeEventsRequest, from_revision=from_revision,
               subject_pattern=pattern or "", consumer=consumer or "")
        self.pattern = pattern or ""
        self.consumer = consumer or ""
        self.from_revision = from_revision
        self.takeover = takeover
        self.auto_ack = ack
        self.progress = progress
        self.last = from_revision if not consumer else 0   # delivered so far
        self.held: Optional[int] = None    # the event the caller holds
        self.done = 0                      # handled: may be acknowledged
        self.acked = 0
        self.acked_at = time.monotonic()
        self.streams = 0
        self.idle = False

    def request(self) -> wal_pb2.SubscribeEventsRequest:
        self.streams += 1
        if self.consumer:
            return req_pb(wal_pb2.SubscribeEventsRequest,
                from_revision=self.from_revision, subject_pattern=self.pattern,
                consumer=self.consumer, takeover=self.takeover or self.streams > 1)
        return req_pb(wal_pb2.SubscribeEventsRequest, from_revision=self.last,
                      subject_pattern=self.pattern)

    def release_held(self) -> None:
        """The caller asked for the next event: the one it held is done."""
        if self.held is not None:
            self.done = max(self.done, self.held)
            self.held = None

    def feed(self, pb) -> Optional[Event]:
        """The event to yield, or None (a repeat, or a PROGRESS not asked for)."""
        if pb.type == wal_pb2.Event.PROGRESS:
            # Everything up to it was delivered or did not match, and the
            # caller has finished what was delivered (it is asking for more).
            self.last = max(self.last, pb.revision)
            if self.held is None:
                self.done = max(self.done, pb.revision)
            self.idle = True
            if not self.progress:
                return None
            return Event._from_pb(pb)
        if pb.revision <= self.last:
            return None
        self.last = pb.revision
        self.idle = False
        self.held = pb.revision
        return Event._from_pb(pb)

    def ack_due(self) -> bool:
        if not (self.auto_ack and self.consumer) or self.done <= self.acked:
            return False
        return self.idle or time.monotonic() - self.acked_at >= self.ACK_INTERVAL

    def ack_request(self, revision: Optional[int] = None) -> wal_pb2.AckEventsRequest:
        return req_pb(wal_pb2.AckEventsRequest, consumer=self.consumer,
                      revision=self.done if revision is None else revision)

    def acked_to(self, revision: int) -> None:
        self.acked = max(self.acked, revision)
        self.done = max(self.done, revision)
        self.acked_at = time.monotonic()

    def ack_put_off(self) -> None:
        """An automatic ack failed because reeld is away: the next is due
        an interval later (the stream reconnects meanwhile; what was not
        acked comes again at worst)."""
        self.acked_at = time.monotonic()
        self.idle = False



def seconds(value: Any, what: str, *, positive: bool = False) -> float:
    """A duration argument in seconds: a finite int or float, 0 or more
    (more than 0 if positive); anything else is a TypeError or ValueError
    naming it (None, a bool, NaN and infinity included)."""
    more = "more than 0" if positive else "0 or more"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{what}: seconds as a number, {more}; not {type(value).__name__}")
    if not math.isfinite(value) or value < 0 or (positive and value == 0):
        raise ValueError(f"{what}: seconds as a finite number, {more}; not {value!r}")
    return float(value)


def deliver_at_ms(deliver_at, delay) -> int:
    """SendSignal's deliver_at_ms: deliver_at is an aware datetime or Unix
    seconds, delay seconds from now; neither is 0 (now)."""
    if deliver_at is not None and delay is not None:
        raise ValueError("send: give deliver_at or delay, not both")
    if delay is not None:
        delay = seconds(delay, "delay")
        return int((time.time() + delay) * 1000) if delay > 0 else 0
    if deliver_at is None:
        return 0
    if isinstance(deliver_at, datetime.datetime):
        if deliver_at.tzinfo is None:
            raise ValueError("deliver_at: give a datetime with its timezone (a naive one "
                             "could mean any time)")
        return int(deliver_at.timestamp() * 1000)
    if isinstance(deliver_at, bool) or not isinstance(deliver_at, (int, float)):
        raise TypeError("deliver_at: a datetime with a timezone, or Unix seconds")
    if not math.isfinite(deliver_at):
        raise ValueError(f"deliver_at: Unix seconds as a finite number, not {deliver_at!r}")
    return int(deliver_at * 1000)


# The longest AwaitSignal reeld holds (its --signal-max-wait-ms, at most
# a day): a longer timeout is cut to it, as reeld would, before it becomes
# a gRPC deadline (one of 1e10 s ends the call at once).
AWAIT_MAX_S = 86400.0

# The longest per-call deadline (connect's timeout): None is no deadline.
DEADLINE_MAX_S = 1e6


def await_seconds(value: Any, what: str) -> float:
    """An AwaitSignal's timeout: seconds() cut to AWAIT_MAX_S."""
    return min(seconds(value, what), AWAIT_MAX_S)


def timeout_ms(value: Optional[float], what: str) -> int:
    """A durable timeout in whole ms, at least 1 (0 means none to reeld)."""
    if value is None:
        return 0
    return max(1, int(round(seconds(value, what) * 1000)))


def retry_pb(retry) -> Optional[journal_pb2.RetryPolicy]:
    if retry is None:
        return None
    if not isinstance(retry, RetryPolicy):
        raise TypeError("retry: pass reel.RetryPolicy(...)")
    return journal_pb2.RetryPolicy(
        initial_interval_ms=int(round((retry.initial_interval or 0) * 1000)),
        multiplier=float(retry.multiplier or 0),
        max_interval_ms=int(round((retry.max_interval or 0) * 1000)),
        max_attempts=int(retry.max_attempts or 0))


@dataclasses.dataclass(frozen=True)
class RetryPolicy:
    """How reeld retries a run whose leases keep expiring without progress
    (runs.begin/submit's retry=): the first expiry is claimable at once, the
    n-th in a row waits initial_interval * multiplier^(n-2) seconds, at
    most max_interval, and the max_attempts-th in a row with no append since
    the first makes it PAUSED (runs.resume). None takes reeld's --retry-* default."""

    initial_interval: Optional[float] = None
    multiplier: Optional[float] = None
    max_interval: Optional[float] = None
    max_attempts: Optional[int] = None


def labels_dict(labels: Optional[Dict[str, str]], what: str = "labels") -> Dict[str, str]:
    out = dict(labels or {})
    for k, v in out.items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise TypeError(f"{what}: keys and values must be strings")
    return out


def ttl_ms(value: float, what: str = "ttl") -> int:
    """A lease's TTL in whole ms (reeld takes 1 ms to 24 h)."""
    return max(1, int(round(seconds(value, what, positive=True) * 1000)))


# ---- The workspace --------------------------------------------------------
#
# Upload turns what workspace.put takes into PutArtifact's messages: the
# header, then chunks of at most 1 MiB (reeld's limit per message), hashing
# what it sends. Bytes and text are known whole, so the header carries their
# size and SHA-256 and reeld refuses to store anything else; a file's size is
# declared when it is a regular file (reeld refuses one over its limit before
# a byte); an iterator's bytes are checked against the record reeld returns.
# Download keeps a GetArtifact's place: the record (whose version it pins),
# the bytes received, the digest so far, so a stream that breaks is asked
# again from the next byte of the same version.

CHUNK_MAX = 1 << 20
# What workspace.put's data may be, for the TypeError of anything else.
DATA_KINDS = "bytes, a str, a binary file, a path (os.PathLike), or an iterable of bytes"


class Upload:
    """One workspace.put: its header and its byte source (see above).
    Not thread-safe."""

    def __init__(self, namespace: str, key: str, data: Any, *, content_type: str,
                 metadata: Optional[Dict[str, str]], create: bool,
                 if_version: Optional[int], chunk_size: int):
        if create and if_version is not None:
            raise ValueError("put: give create=True or if_version=N, not both")
        if not 1 <= chunk_size <= CHUNK_MAX:
            raise ValueError(f"chunk_size: 1 to {CHUNK_MAX} bytes")
        self.chunk_size = chunk_size
        self.sha = hashlib.sha256()
        self.sent = 0
        self.whole: Optional[bytes] = None
        self.file = None
        self.owned = False
        self.items = None
        size = None
        if isinstance(data, str):
            data = data.encode("utf-8")
            content_type = content_type or "text/plain; charset=utf-8"
        # The header's checks first: a bad argument leaves no file open.
        meta = labels_dict(metadata, "metadata")
        header = req_pb(workspace_pb2.ArtifactHeader, namespace=namespace, key=key,
                        content_type=content_type, metadata=meta,
                        **precondition(create, if_version))
        if isinstance(data, (bytes, bytearray, memoryview)):
            self.whole = bytes(data)
            size = len(self.whole)
        elif isinstance(data, os.PathLike):
            self.file = open(data, "rb")
            self.owned = True
        elif isinstance(data, io.TextIOBase):
            raise TypeError(f"data: a file opened in text mode; data must be {DATA_KINDS} "
                            f"(open the file with 'rb')")
        elif hasattr(data, "read"):
            self.file = data
        elif isinstance(data, (dict, set, frozenset)) or not (
                hasattr(data, "__iter__") or hasattr(data, "__aiter__")):
            raise TypeError(f"data: must be {DATA_KINDS}, not {type(data).__name__}")
        else:
            self.items = data
        if self.file is not None:
            try:
                size = _file_size(self.file)
            except BaseException:
                if self.owned:
                    self.file.close()
                raise
        self.header = header
        if size is not None:
            self.header.has_size = True
            self.header.size = size
        if self.whole is not None:
            self.header.sha256 = hashlib.sha256(self.whole).digest()

    def first(self) -> workspace_pb2.PutArtifactRequest:
        return workspace_pb2.PutArtifactRequest(header=self.header)

    def split(self, piece: Any) -> List[workspace_pb2.PutArtifactRequest]:
        """One piece of the source as chunk messages, counted and hashed."""
        if isinstance(piece, str) or not isinstance(piece, (bytes, bytearray, memoryview)):
            source = "the file's read()" if self.file is not None else "the iterator"
            raise TypeError(f"data: {source} gave a {type(piece).__name__}, not bytes; "
                            f"data must be {DATA_KINDS}")
        piece = bytes(piece)
        self.sha.update(piece)
        self.sent += len(piece)
        return [workspace_pb2.PutArtifactRequest(chunk=piece[i:i + self.chunk_size])
                for i in range(0, len(piece), self.chunk_size)]

    def messages(self) -> Iterator[workspace_pb2.PutArtifactRequest]:
        """All of it, for a blocking caller."""
        yield self.first()
        if self.whole is not None:
            yield from self.split(self.whole)
        elif self.file is not None:
            while True:
                piece = self.file.read(self.chunk_size)
                if not piece:
                    break
                yield from self.split(piece)
        else:
            for piece in self.items:
                yield from self.split(piece)

    def close(self) -> None:
        if self.owned:
            self.file.close()

    def check(self, art: Artifact) -> Artifact:
        """The stored record, if it holds what was sent: a mismatch (bytes
        changed on the way, which reeld could not check) is DataLoss."""
        if art.size != self.sent or art.sha256 != self.sha.hexdigest():
            raise errors.DataLoss(
                f"artifact {art.namespace}/{art.key} version {art.version} was stored with "
                f"{art.size} bytes, sha256 {art.sha256}, but {self.sent} bytes with sha256 "
                f"{self.sha.hexdigest()} were sent", method="PutArtifact")
        return art


def _file_size(f) -> Optional[int]:
    """The bytes left in a regular file from its position, or None."""
    try:
        st = os.fstat(f.fileno())
        import stat as _stat
        if not _stat.S_ISREG(st.st_mode):
            return None
        return max(0, st.st_size - f.tell())
    except (AttributeError, OSError, ValueError):
        return None


class Download:
    """One workspace.get across reconnects (see above). Not thread-safe."""

    def __init__(self, namespace: str, key: str, version: int, offset: int, length: int):
        if version < 0 or offset < 0 or length < 0:
            raise ValueError("get: version, offset and length are 0 or more")
        self.namespace, self.key = namespace, key
        self.version, self.offset, self.length = version, offset, length
        self.artifact: Optional[Artifact] = None
        self.received = 0
        self.sha = hashlib.sha256()
        self.request()          # a bad argument is refused before the first stream

    def request(self) -> workspace_pb2.GetArtifactRequest:
        version = self.artifact.version if self.artifact is not None else self.version
        length = self.length - self.received if self.length else 0
        return req_pb(workspace_pb2.GetArtifactRequest, namespace=self.namespace, key=self.key,
                      version=version,
                      offset=self.offset + self.received,
                      length=length)

    @property
    def whole(self) -> bool:
        a = self.artifact
        return a is not None and self.offset == 0 and \
            (self.length == 0 or self.length >= a.size)

    def feed(self, pb) -> Optional[bytes]:
        if pb.WhichOneof("part") == "artifact":
            if self.artifact is None:
                self.artifact = Artifact._from_pb(pb.artifact)
            return None
        self.received += len(pb.chunk)
        self.sha.update(pb.chunk)
        return pb.chunk

    def finish(self) -> Artifact:
        """The record, once every byte asked for came and (for the whole
        artifact) matches its SHA-256; DataLoss otherwise."""
        a = self.artifact
        if a is None:
            raise errors.DataLoss(f"artifact {self.namespace}/{self.key}: the stream ended "
                                  f"without its record", method="GetArtifact")
        want = max(0, a.size - self.offset)
        if self.length:
            want = min(want, self.length)
        if self.received != want:
            raise errors.DataLoss(f"artifact {a.namespace}/{a.key} version {a.version}: "
                                  f"{self.received} bytes came, {want} expected",
                                  method="GetArtifact")
        if self.whole and self.sha.hexdigest() != a.sha256:
            raise errors.DataLoss(f"artifact {a.namespace}/{a.key} version {a.version}: the "
                                  f"bytes' sha256 is {self.sha.hexdigest()}, the record's "
                                  f"{a.sha256}", method="GetArtifact")
        return a


def list_artifacts_request(namespace: str, prefix: str, start_after: str,
                           include_deleted: bool, page_size: int):
    return req_pb(workspace_pb2.ListArtifactsRequest, namespace=namespace, prefix=prefix,
                  start_after=start_after, limit=page_size,
                  include_deleted=include_deleted)


def delete_artifact_request(namespace: str, key: str, if_version: Optional[int]):
    return req_pb(workspace_pb2.DeleteArtifactRequest, namespace=namespace, key=key,
                  **precondition(False, if_version))


class ArtifactWatchCursor:
    """One logical workspace.watch over any number of WatchArtifacts
    streams, as WatchCursor for the KV: once it has a revision (after
    BOOTSTRAP_DONE, or from the start with from_revision, which now=True
    is too, at the head read first) a reconnect asks for the changes after
    it and swallows the new BOOTSTRAP_DONE. A snapshot interrupted is taken
    again, skipping each (key, version) yielded; a key yielded that the new
    snapshot lacks was deleted meanwhile, and its tombstone (from a list
    with include_deleted) is yielded as a DELETE before BOOTSTRAP_DONE."""

    def __init__(self, namespace: str, prefix: str, from_revision: Optional[int]):
        req_pb(workspace_pb2.WatchArtifactsRequest, namespace=namespace, prefix=prefix,
               from_revision=from_revision or 0)
        self.namespace, self.prefix = namespace, prefix
        self.revision = from_revision or 0
        self.positioned = from_revision is not None
        self.bootstrapped = False
        self.streams = 0
        self._yielded: Optional[Dict[str, int]] = None if self.positioned else {}
        self._yielded_rev: Dict[str, int] = {}   # the revision of each yielded version
        self._present: set = set()

    def request(self) -> workspace_pb2.WatchArtifactsRequest:
        self.streams += 1
        req = req_pb(workspace_pb2.WatchArtifactsRequest, namespace=self.namespace,
                     prefix=self.prefix)
        if self.positioned or self.bootstrapped:
            req.start = workspace_pb2.WatchArtifactsRequest.START_FROM_REVISION
            req.from_revision = self.revision
        else:
            req.start = workspace_pb2.WatchArtifactsRequest.START_SNAPSHOT
            self._present = set()
        return req

    def feed(self, pb) -> List[Union[ArtifactEvent, str]]:
        """What to hand the caller, in order; a str is a key whose DELETE
        must be looked up (see the class)."""
        if pb.type == workspace_pb2.ArtifactEvent.BOOTSTRAP_DONE:
            first = not self.bootstrapped
            self.revision = max(self.revision, pb.revision)
            self.bootstrapped = True
            if not first:
                return []
            out: List[Union[ArtifactEvent, str]] = []
            if self._yielded is not None:
                if self.streams > 1:
                    out = sorted(k for k in self._yielded if k not in self._present)
                self._yielded = None
            out.append(ArtifactEvent._from_pb(pb))
            return out
        if pb.type == workspace_pb2.ArtifactEvent.CURRENT and self._yielded is not None:
            key = pb.artifact.key
            self._present.add(key)
            if self._yielded.get(key) == pb.artifact.version:
                return []
            self._yielded[key] = pb.artifact.version
            self._yielded_rev[key] = pb.artifact.revision
            return [ArtifactEvent._from_pb(pb)]
        if self.positioned and pb.revision <= self.revision:
            return []
        self.revision = pb.revision
        self.positioned = True
        return [ArtifactEvent._from_pb(pb)]

    def history_request(self, key: str) -> workspace_pb2.WatchArtifactsRequest:
        """A watch of key's changes after the version yielded, for a
        tombstone a put has overwritten since (see vanished_event)."""
        return req_pb(workspace_pb2.WatchArtifactsRequest, namespace=self.namespace,
                      prefix=key, start=workspace_pb2.WatchArtifactsRequest.START_FROM_REVISION,
                      from_revision=self._yielded_rev.get(key, 0))

    def vanished_event(self, key: str, records: Iterable[Artifact],
                       history: Optional[Callable[[], Iterable[ArtifactEvent]]] = None
                       ) -> ArtifactEvent:
        """The DELETE of a key the new snapshot lacks, from its tombstone;
        or, when the key was put again after the snapshot (its record
        live, newer than the snapshot), from history(): its changes after
        the version yielded, up to the snapshot's revision."""
        for a in records:
            if a.key != key:
                continue
            if a.deleted and a.revision <= self.revision:
                return ArtifactEvent(ArtifactEventType.DELETE, a.revision, a)
            if a.revision > self.revision and history is not None:
                last = None
                for ev in history():
                    if ev.revision > self.revision:
                        break
                    if ev.artifact is not None and ev.artifact.key == key:
                        last = ev
                if last is not None and last.type == ArtifactEventType.DELETE:
                    return last
        raise errors.OutOfRange(
            f"workspace watch: artifact {self.namespace}/{key} was deleted while the watch "
            f"reconnected during its snapshot, and its tombstone up to revision "
            f"{self.revision} is not there any more")
