"""What the client returns: plain, immutable records converted from reel.v1's
messages, and how values travel.

Values, payloads and results are JSON on the wire and in reeld. The client
sends any Python object `json.dumps` takes (compactly, UTF-8, no NaN), or,
wrapped in `RawJSON`, JSON text the caller already has, sent byte for byte.
Records keep the stored text (`value_json`, `payload_json`, ...) exactly as
reeld returned it, and decode it with `json.loads` on first access
(`value`, `payload`, ...): read the text when numbers must keep every digit
(a JSON float becomes a Python float).
"""
from __future__ import annotations

import enum
import json
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Dict, Optional, Union

__all__ = [
    "RawJSON", "Entry", "EventType", "ValueEvent", "RunStatus", "RunInfo",
    "JournalEntry", "Signal", "SendResult", "WalEventType", "Event", "Consumer", "Artifact",
    "ArtifactEvent", "ArtifactEventType",
    "Head", "ServerStatus", "DELETE",
]


@dataclass(frozen=True)
class RawJSON:
    """JSON text sent as it is (reeld checks it is valid JSON and stores it
    byte for byte): `kv.put(ns, key, RawJSON('{"a":1}'))`."""

    text: str


class _Delete:
    """`update`'s function returns DELETE to delete the key."""

    def __repr__(self) -> str:
        return "reel.DELETE"


DELETE = _Delete()


def encode_json(value: Any, what: str) -> str:
    """The JSON text for value; TypeError naming `what` if it has none."""
    if isinstance(value, RawJSON):
        text = value.text
        if not isinstance(text, str):
            raise TypeError(f"{what}: RawJSON holds a {type(text).__name__}, not a str")
    else:
        try:
            text = json.dumps(value, ensure_ascii=False, allow_nan=False,
                              separators=(",", ":"))
        except (TypeError, ValueError) as e:
            raise TypeError(f"{what}: cannot be sent as JSON: {e}") from None
        except RecursionError:
            # reeld takes 512 levels; Python's encoder stops near 1000.
            raise TypeError(f"{what}: cannot be sent as JSON: nested deeper than "
                            f"Python's encoder goes (reeld takes at most 512 levels)"
                            ) from None
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as e:
            raise TypeError(f"{what}: cannot be sent as JSON: a lone surrogate "
                            f"({text[e.start]!r} at character {e.start}) is not UTF-8 "
                            f"text") from None
    return text


def encode_optional_json(value: Any, what: str) -> str:
    """As encode_json, but None is "" (reeld's "none" for payloads and
    results, where JSON null would be stored as null)."""
    return "" if value is None else encode_json(value, what)


def decode_json(text: str) -> Any:
    """The Python value of stored JSON text; None for "" (none)."""
    return json.loads(text) if text else None


@dataclass(frozen=True)
class Entry:
    """A key's current state (or its tombstone, deleted=True)."""

    namespace: str
    key: str
    value_json: str          # as stored; "" for a tombstone
    version: int             # grows by one with every set and delete
    deleted: bool
    revision: int            # the global revision of the change that wrote it
    updated_at_ms: int
    writer: str

    @cached_property
    def value(self) -> Any:
        """The value decoded from JSON (None for a tombstone)."""
        return decode_json(self.value_json)

    @classmethod
    def _from_pb(cls, pb) -> "Entry":
        return cls(pb.namespace, pb.key, pb.value, pb.version, pb.deleted, pb.revision,
                   pb.updated_at_ms, pb.writer)


class EventType(enum.IntEnum):
    """What a ValueEvent is (reel.v1.ValueEvent.Type)."""

    PUT = 1
    DELETE = 2
    BOOTSTRAP_DONE = 3   # end of the replayed part: what follows is live


@dataclass(frozen=True)
class ValueEvent:
    """A transition of one key, with the value and version before it. A
    BOOTSTRAP_DONE event carries only `revision`: where live changes begin."""

    type: EventType
    namespace: str
    key: str
    value_json: str          # the new value ("" for DELETE)
    version: int
    prev_value_json: str     # the value before ("" if there was none)
    prev_version: int        # 0 if the key never existed
    deleted: bool
    revision: int
    ts_ms: int
    writer: str

    @property
    def bootstrap_done(self) -> bool:
        return self.type == EventType.BOOTSTRAP_DONE

    @cached_property
    def value(self) -> Any:
        return decode_json(self.value_json)

    @cached_property
    def prev_value(self) -> Any:
        return decode_json(self.prev_value_json)

    @classmethod
    def _from_pb(cls, pb) -> "ValueEvent":
        return cls(EventType(pb.type) if pb.type in (1, 2, 3) else pb.type, pb.namespace,
                   pb.key, pb.value, pb.version, pb.prev_value, pb.prev_version, pb.deleted,
                   pb.revision, pb.ts_ms, pb.writer)


class RunStatus(enum.IntEnum):
    """A run's status (reel.v1.Run.Status)."""

    RUNNABLE = 1     # needs a worker
    RUNNING = 2      # leased to a worker
    WAITING = 3      # parked until a signal arrives; no lease
    COMPLETED = 4    # terminal
    FAILED = 5       # terminal
    CANCELLED = 6    # terminal
    PAUSED = 7       # retries exhausted: nobody's work until runs.resume or end

    @property
    def terminal(self) -> bool:
        return self in (RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED)


@dataclass(frozen=True)
class RunInfo:
    """A run as reeld stores it."""

    run_id: str
    app: str
    user: str
    session: str
    invocation_id: str
    status: RunStatus
    next_seq: int                # the seq the next append gets
    lease_owner: str             # "" when no lease is held
    lease_epoch: int             # the fencing token
    lease_expires_at_ms: int
    waiting_on: str
    labels: Dict[str, str]
    result_json: str             # "" until EndRun sets one
    created_at_ms: int
    updated_at_ms: int
    ended_at_ms: int
    resumed: bool                # BeginRun found an existing run
    attempt: int = 0             # claims so far (BeginRun counts one); resume resets it
    not_before_ms: int = 0       # a RUNNABLE run is claimable from then (backoff); 0 at once
    reason: str = ""             # why it last changed status: LEASE_EXPIRED, SIGNAL, ...

    @cached_property
    def result(self) -> Any:
        return decode_json(self.result_json)

    @classmethod
    def _from_pb(cls, pb) -> "RunInfo":
        return cls(pb.run_id, pb.app, pb.user, pb.session, pb.invocation_id,
                   RunStatus(pb.status) if 1 <= pb.status <= 7 else pb.status, pb.next_seq,
                   pb.lease_owner, pb.lease_epoch, pb.lease_expires_at_ms, pb.waiting_on,
                   dict(pb.labels), pb.result, pb.created_at_ms, pb.updated_at_ms,
                   pb.ended_at_ms, pb.resumed, pb.attempt, pb.not_before_ms, pb.reason)


@dataclass(frozen=True)
class JournalEntry:
    """One entry of a run's journal."""

    run_id: str
    seq: int                 # 1, 2, 3, ... gapless per run
    kind: str
    payload_json: str
    idempotency_key: str
    lease_epoch: int         # the epoch that wrote it
    revision: int
    ts_ms: int
    duplicate: bool = False  # an append's retry: this is the original entry

    @cached_property
    def payload(self) -> Any:
        return decode_json(self.payload_json)

    @classmethod
    def _from_pb(cls, pb, duplicate: bool = False) -> "JournalEntry":
        return cls(pb.run_id, pb.seq, pb.kind, pb.payload, pb.idempotency_key, pb.lease_epoch,
                   pb.revision, pb.ts_ms, duplicate)


@dataclass(frozen=True)
class Signal:
    """A signal to a run. A signal a resumed run's `wait_for_signal` returns
    from its journal has run_id, name, payload_json, signal_id and
    journal_seq; the rest is 0."""

    run_id: str
    name: str
    payload_json: str        # "" for none
    signal_id: str
    seq: int = 0             # per run, in send order
    revision: int = 0
    sent_at_ms: int = 0
    consumed_at_ms: int = 0  # 0 while pending
    journal_seq: int = 0     # the journal entry recording its delivery
    scheduled: bool = False  # sent with a future deliver_at: not delivered yet
    deliver_at_ms: int = 0   # when it is (or was) delivered; 0: when sent

    @cached_property
    def payload(self) -> Any:
        return decode_json(self.payload_json)

    @classmethod
    def _from_pb(cls, pb) -> "Signal":
        return cls(pb.run_id, pb.name, pb.payload, pb.signal_id, pb.seq, pb.revision,
                   pb.sent_at_ms, pb.consumed_at_ms, pb.journal_seq, pb.scheduled,
                   pb.deliver_at_ms)


@dataclass(frozen=True)
class Artifact:
    """One version of a workspace artifact (or its tombstone), as reeld
    stores it: the record, never the bytes. `sha256` is the hex digest
    reeld computed ("" for a tombstone)."""

    namespace: str
    key: str
    version: int
    size: int                # bytes
    sha256: str
    content_type: str
    metadata: Dict[str, str]
    revision: int            # the revision of the change that wrote it
    created_at_ms: int       # when the key was first put (since a tombstone)
    updated_at_ms: int       # this version's commit time
    deleted: bool            # a tombstone
    chunk_size: int          # bytes per stored chunk

    @classmethod
    def _from_pb(cls, pb) -> "Artifact":
        return cls(pb.namespace, pb.key, pb.version, pb.size, pb.sha256.hex(),
                   pb.content_type, dict(pb.metadata), pb.revision, pb.created_at_ms,
                   pb.updated_at_ms, pb.deleted, pb.chunk_size)


class ArtifactEventType(enum.IntEnum):
    """What an artifact watch event is (reel.v1.ArtifactEvent.Type)."""

    PUT = 1
    DELETE = 2           # artifact is the tombstone
    CURRENT = 3          # the snapshot: the artifact as it is
    BOOTSTRAP_DONE = 4   # no artifact: live from `revision` on


@dataclass(frozen=True)
class ArtifactEvent:
    """One event of `workspace.watch`: a put, a delete (the tombstone), an
    artifact of the snapshot (CURRENT), or BOOTSTRAP_DONE (no artifact)."""

    type: ArtifactEventType
    revision: int
    artifact: Optional[Artifact]

    @property
    def bootstrap_done(self) -> bool:
        return self.type == ArtifactEventType.BOOTSTRAP_DONE

    @property
    def key(self) -> str:
        return self.artifact.key if self.artifact is not None else ""

    @classmethod
    def _from_pb(cls, pb) -> "ArtifactEvent":
        return cls(ArtifactEventType(pb.type) if 1 <= pb.type <= 4 else pb.type, pb.revision,
                   Artifact._from_pb(pb.artifact) if pb.HasField("artifact") else None)


@dataclass(frozen=True)
class SendResult:
    """What SendSignal did: the stored signal (the original one when
    `duplicate`), and the run's status after the send."""

    signal: Signal
    duplicate: bool
    run_status: RunStatus


class WalEventType(enum.IntEnum):
    """What a WAL event is (reel.v1.Event.Type)."""

    JOURNAL_APPENDED = 1
    RUN_CHANGED = 2
    VALUE_CHANGED = 3
    SIGNAL_SENT = 4
    SIGNAL_CONSUMED = 5
    PROGRESS = 6     # no body: caught up to `revision`
    ARTIFACT_CHANGED = 7   # artifact: a workspace put, or a tombstone


@dataclass(frozen=True)
class Event:
    """One committed change from the WAL tail, with its module's record as
    the body (one of entry, run, value, signal, artifact; none for
    PROGRESS). A type this client does not know (a newer reeld's) comes as
    its number, its body as None."""

    revision: int
    subject: str
    type: WalEventType
    ts_ms: int
    entry: Optional[JournalEntry] = None
    run: Optional[RunInfo] = None
    value: Optional[ValueEvent] = None
    signal: Optional[Signal] = None
    artifact: Optional[Artifact] = None

    @property
    def body(self) -> Union[JournalEntry, RunInfo, ValueEvent, Signal, Artifact, None]:
        return self.entry or self.run or self.value or self.signal or self.artifact

    # The body's oneof field in reel.v1.Event: this record's field and type.
    _BODIES = {"entry": JournalEntry, "run": RunInfo, "value": ValueEvent, "signal": Signal,
               "artifact": Artifact}

    @classmethod
    def _from_pb(cls, pb) -> "Event":
        which = pb.WhichOneof("body")
        known = pb.type in WalEventType._value2member_map_
        body = {which: cls._BODIES[which]._from_pb(getattr(pb, which))} \
            if which in cls._BODIES else {}
        return cls(pb.revision, pb.subject, WalEventType(pb.type) if known else pb.type,
                   pb.ts_ms, **body)


@dataclass(frozen=True)
class Consumer:
    """A durable WAL consumer and how far behind it is (see reel.v1.Consumer)."""

    name: str
    acked_revision: int
    pending: int
    pending_exact: bool
    active: bool
    subject_pattern: str
    created_at_ms: int
    acked_at_ms: int
    behind_revisions: int
    holding_bytes: int
    invalidated: bool
    invalidated_at_ms: int
    invalidated_reason: str

    @classmethod
    def _from_pb(cls, pb) -> "Consumer":
        return cls(pb.name, pb.acked_revision, pb.pending, pb.pending_exact, pb.active,
                   pb.subject_pattern, pb.created_at_ms, pb.acked_at_ms, pb.behind_revisions,
                   pb.holding_bytes, pb.invalidated, pb.invalidated_at_ms,
                   pb.invalidated_reason)


@dataclass(frozen=True)
class Head:
    head_revision: int       # the last committed revision
    oldest_revision: int     # the oldest retained event (0 if none)


@dataclass(frozen=True)
class ServerStatus:
    """Admin.GetStatus: what the server is and how it is doing."""

    version: str
    format_version: int
    revision: int
    data_dir: str
    started_at_ms: int
    uptime_ms: int
    writable: bool
    write_error: str
    open_calls: int
    signal_max_wait_ms: int
    # The data dir's disk (admin only: 0 and False for a tenant's token).
    disk_free_bytes: int = 0
    disk_low: bool = False  # below --min-free-disk-bytes: writes that add data refused
    # Client connections open, and the most taken at once (admin only).
    connections: int = 0
    max_connections: int = 0

    @classmethod
    def _from_pb(cls, pb) -> "ServerStatus":
        return cls(pb.version, pb.format_version, pb.revision, pb.data_dir, pb.started_at_ms,
                   pb.uptime_ms, pb.writable, pb.write_error, pb.open_calls,
                   pb.signal_max_wait_ms, pb.disk_free_bytes, pb.disk_low,
                   pb.connections, pb.max_connections)

