"""reel for Python: the client of reeld (KV with compare-and-swap and
watches, runs and journals with durable steps and sleeps, the worker
helper, signals, the workspace, the event tail).

    import reel

    with reel.connect("127.0.0.1:7878") as client:
        client.kv.put("app", "config", {"mode": "fast"})
        with client.kv.cas("app", "config") as entry:
            entry.value = {**entry.value, "mode": "safe"}
        for ev in client.kv.watch("app", "pipeline.*.raw"):
            ...

`reel.connect` is the synchronous client, `reel.aio.connect` the asyncio one
with the same names (awaited, and `async for` / `async with`). Errors are
the exceptions of reel.errors, named after gRPC's codes (NotFound,
Conflict for ABORTED, LeaseLost, Unavailable, ...). The whole API is in
clients/python/README.md.
"""
from reel import errors
from reel._core import TLS, RetryPolicy
from reel.client import (KV, Client, Events, Follow, Journal, Run, Runs, Signals, Tail, Watch,
                         Worker, Workspace, connect)
from reel._core import CasEntry
from reel.errors import (AlreadyExists, Cancelled, Conflict, DataLoss, DeadlineExceeded,
                         FailedPrecondition, Internal, InvalidArgument, LeaseLost, NotFound,
                         OutOfRange, PermissionDenied, ReelError, ReplayMismatch,
                         ResourceExhausted, Suspended, Unauthenticated, Unavailable,
                         Unimplemented, Unknown, Aborted)
from reel.types import (DELETE, Artifact, ArtifactEvent, ArtifactEventType, Consumer, Entry,
                        Event, EventType, Head, JournalEntry, RawJSON, RunInfo, RunStatus,
                        SendResult, ServerStatus, Signal, ValueEvent, WalEventType)

__version__ = "0.1.0"

__all__ = [
    "connect", "Client", "KV", "Runs", "Run", "Journal", "Signals", "Events", "Watch", "Tail",
    "Follow", "Worker", "Workspace", "CasEntry", "TLS", "RetryPolicy", "errors",
    "ReelError", "Cancelled", "Unknown", "InvalidArgument", "DeadlineExceeded", "NotFound",
    "AlreadyExists", "PermissionDenied", "ResourceExhausted", "FailedPrecondition", "Conflict",
    "Aborted", "OutOfRange", "Unimplemented", "Internal", "Unavailable", "DataLoss",
    "Unauthenticated", "LeaseLost", "ReplayMismatch", "Suspended",
    "RawJSON", "DELETE", "Entry", "EventType", "ValueEvent", "RunStatus", "RunInfo",
    "JournalEntry", "Artifact", "ArtifactEvent", "ArtifactEventType", "Signal", "SendResult",
    "WalEventType", "Event", "Consumer", "Head",
    "ServerStatus",
]
