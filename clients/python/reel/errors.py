"""Errors: one exception class per gRPC status code, carrying reeld's message.

Every failed call raises a subclass of `ReelError` named after its code
(`NotFound`, `InvalidArgument`, ...; ABORTED is `Conflict`), whose `message`
is the server's text unchanged (it names the field and the limit for bad
input) and whose `code` is the `grpc.StatusCode`. Two are refined:

- `Conflict` (ABORTED) and `AlreadyExists` parse the current version out of
  reeld's message into `current_version` when it names one (a KV write whose
  precondition failed), so a caller can re-read or retry without parsing.
- `LeaseLost` (a `FailedPrecondition`) is raised by a `Run` handle's writes
  once the run's lease is no longer this handle's: the server refused an
  epoch, or the handle's heartbeats could not renew the lease before it
  expired. `from_server` says which.

`ReplayMismatch` is the one error that comes from the client alone: a
resumed run's code asked for a step its journal records differently.
"""
from __future__ import annotations

import re
from typing import Optional

import grpc

__all__ = [
    "ReelError", "Cancelled", "Unknown", "InvalidArgument", "DeadlineExceeded",
    "NotFound", "AlreadyExists", "PermissionDenied", "ResourceExhausted",
    "FailedPrecondition", "Conflict", "Aborted", "OutOfRange", "Unimplemented",
    "Internal", "Unavailable", "DataLoss", "Unauthenticated", "LeaseLost",
    "ReplayMismatch", "Suspended", "from_rpc_error",
]


class ReelError(Exception):
    """A call failed. `code` is the gRPC status code (None for errors found
    by the client itself), `message` the server's text."""

    code: Optional[grpc.StatusCode] = None

    def __init__(self, message: str, *, method: str = ""):
        self.message = message
        self.method = method
        super().__init__(message)

    def __str__(self) -> str:
        name = self.code.name if self.code is not None else type(self).__name__
        where = f"{self.method}: " if self.method else ""
        return f"{where}{name}: {self.message}"


class Cancelled(ReelError):
    code = grpc.StatusCode.CANCELLED


class Unknown(ReelError):
    code = grpc.StatusCode.UNKNOWN


class InvalidArgument(ReelError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class DeadlineExceeded(ReelError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


class NotFound(ReelError):
    code = grpc.StatusCode.NOT_FOUND


_CURRENT_VERSION = re.compile(r"current version (\d+)")


def _current_version(message: str) -> Optional[int]:
    m = _CURRENT_VERSION.search(message)
    return int(m.group(1)) if m else None


class AlreadyExists(ReelError):
    """Create-only on something that exists, or an idempotency key reused
    with other content. `current_version` is the key's version for a KV
    create (`put(..., create=True)`), else None."""

    code = grpc.StatusCode.ALREADY_EXISTS

    def __init__(self, message: str, *, method: str = ""):
        super().__init__(message, method=method)
        self.current_version = _current_version(message)


class PermissionDenied(ReelError):
    code = grpc.StatusCode.PERMISSION_DENIED


class ResourceExhausted(ReelError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class FailedPrecondition(ReelError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class Conflict(ReelError):
    """ABORTED: a version precondition failed (nothing was written), or a
    durable consumer's stream was taken over. `current_version` is the
    key's version when reeld names it ("expected version 1, current version
    2"), so `cas` and `update` callers can re-read and retry."""

    code = grpc.StatusCode.ABORTED

    def __init__(self, message: str, *, method: str = ""):
        super().__init__(message, method=method)
        self.current_version = _current_version(message)


Aborted = Conflict


class OutOfRange(ReelError):
    code = grpc.StatusCode.OUT_OF_RANGE


class Unimplemented(ReelError):
    code = grpc.StatusCode.UNIMPLEMENTED


class Internal(ReelError):
    code = grpc.StatusCode.INTERNAL


class Unavailable(ReelError):
    code = grpc.StatusCode.UNAVAILABLE


class DataLoss(ReelError):
    code = grpc.StatusCode.DATA_LOSS


class Unauthenticated(ReelError):
    code = grpc.StatusCode.UNAUTHENTICATED


class LeaseLost(FailedPrecondition):
    """The run's lease is not this handle's any more; the handle writes
    nothing from then on. `from_server` is True when reeld refused the epoch
    (another worker claimed the run, or it ended or was parked), False when
    the handle's own clock saw the lease expire without a renewal."""

    def __init__(self, message: str, *, method: str = "", from_server: bool = True):
        super().__init__(message, method=method)
        self.from_server = from_server


class ReplayMismatch(ReelError):
    """A resumed run asked for a durable step its journal records
    differently (another step name at that position): the run's code is not
    the code that wrote the journal, and going on would repeat or skip
    work."""


class Suspended(BaseException):
    """Not an error: `run.sleep` or `run.wait_for_signal` parked the run
    (WAITING, no lease) until reeld's timer fires or the signal arrives,
    when a worker claims it again and the call returns from the journal.
    The worker helper catches it and takes the next run; code that drives
    a run itself lets it end the run's code. A BaseException, like
    asyncio.CancelledError, so that `except Exception` in the run's code
    does not swallow it. `run_id`, `waiting_on` (the signal name) and
    `info` (the run as parked) say what happened."""

    def __init__(self, run_id: str, waiting_on: str, info=None):
        self.run_id = run_id
        self.waiting_on = waiting_on
        self.info = info
        super().__init__(f"run {run_id} parked: WAITING on {waiting_on!r}")

    def __reduce__(self):
        # Across processes (a pool running runs' code) as it was made.
        return (type(self), (self.run_id, self.waiting_on, self.info))


_BY_CODE = {cls.code: cls for cls in (
    Cancelled, Unknown, InvalidArgument, DeadlineExceeded, NotFound, AlreadyExists,
    PermissionDenied, ResourceExhausted, FailedPrecondition, Conflict, OutOfRange,
    Unimplemented, Internal, Unavailable, DataLoss, Unauthenticated)}


# What grpcio says of a call this process cancelled (or whose channel it
# closed).
_LOCAL_CANCELS = frozenset(("Locally cancelled by application!", "Channel closed!"))


# What gRPC says of a message over a size limit: reeld's receive limit
# (its --max-message-bytes), this client's own receive limit, or this
# client's send limit (max_message_bytes).
_TOO_LARGE = re.compile(r"^(Received|Sent) message larger than max \((\d+) vs\. (\d+)\)$")


def _too_large(details: str, request_size: Optional[int],
               method: str) -> Optional[ReelError]:
    """A clear error for a message over a size limit, or None (not one, or
    a request whose size is not known): a request over reeld's or this
    client's limit is InvalidArgument, as any other input over a limit; an
    answer over this client's, ResourceExhausted. A stream's (no request
    size: its request is small) received message is an answer: a batch of
    events, say, each under the limit and together over it."""
    m = _TOO_LARGE.match(details or "")
    if m is None:
        return None
    size, limit = m.group(2), m.group(3)
    if request_size is None:
        if m.group(1) != "Received":
            return None
        return ResourceExhausted(f"answer: {size} bytes, more than this client takes "
                                 f"in one message (max_message_bytes), at most {limit}: "
                                 f"make it at least reeld's --max-response-bytes",
                                 method=method)
    if int(size) != request_size and m.group(1) == "Sent":
        return None
    if int(size) != request_size:
        return ResourceExhausted(f"answer: {size} bytes, more than this client takes "
                                 f"in one message (max_message_bytes), at most {limit}",
                                 method=method)
    whose = ("more than this client sends in one message (max_message_bytes)"
             if m.group(1) == "Sent"
             else "more than reeld takes in one message (its --max-message-bytes)")
    return InvalidArgument(f"request: {size} bytes, {whose}, at most {limit}; values "
                           f"and payloads have smaller limits of their own (1 MiB "
                           f"by default): store large data as a workspace artifact",
                           method=method)


def from_rpc_error(err: grpc.RpcError, *, method: str = "", lease: bool = False,
                   request_size: Optional[int] = None) -> ReelError:
    """The ReelError for a failed gRPC call (grpc.RpcError or
    grpc.aio.AioRpcError). With lease=True (a write under a run's lease),
    FAILED_PRECONDITION is LeaseLost: reeld answers it there only when the
    epoch presented is not the run's current lease. request_size (the
    serialized request's bytes) tells a request over a message size limit,
    InvalidArgument as any other input over a limit, from an answer over
    this client's."""
    code = err.code() if hasattr(err, "code") else grpc.StatusCode.UNKNOWN
    details = err.details() if hasattr(err, "details") else str(err)
    message = details or (code.name if code is not None else "unknown error")
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        big = _too_large(details, request_size, method)
        if big is not None:
            return big
    if lease and code == grpc.StatusCode.FAILED_PRECONDITION:
        return LeaseLost(message, method=method, from_server=True)
    # Not cancelled by this process (grpcio words those): a reeld shutting
    # down cancels what is still in flight. As UNAVAILABLE: the server went
    # away, and whether the call took effect is unknown.
    if code == grpc.StatusCode.CANCELLED and details not in _LOCAL_CANCELS:
        return Unavailable(f"cancelled by the server ({message}): it is going away",
                           method=method)
    cls = _BY_CODE.get(code, Unknown)
    return cls(message, method=method)
