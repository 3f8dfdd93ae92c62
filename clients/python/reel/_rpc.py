"""reeld's methods, bound to a channel, straight from the protos' service
descriptors: no hand-written table to drift from api/reel/v1/*.proto.

`bind(channel)` works for a grpc.Channel and a grpc.aio.Channel alike (they
share the multi-callable factory names) and returns one namespace per
service (`kv`, `journal`, `signals`, `wal`, `admin`, `workspace`,
`health`) whose attributes are the methods by their proto names
(`kv.SetValue`, `wal.SubscribeEventBatches`, `workspace.PutArtifact`):
unary or streaming on either side as the proto says.
"""
from __future__ import annotations

from types import SimpleNamespace

from reel._health import health_pb2
from reel.v1 import admin_pb2, journal_pb2, kv_pb2, signals_pb2, wal_pb2, workspace_pb2

_MODULES = (admin_pb2, journal_pb2, kv_pb2, signals_pb2, wal_pb2, workspace_pb2, health_pb2)
_SERVICES = {
    "kv": (kv_pb2, "KV"),
    "journal": (journal_pb2, "Journal"),
    "signals": (signals_pb2, "Signals"),
    "wal": (wal_pb2, "Wal"),
    "admin": (admin_pb2, "Admin"),
    "workspace": (workspace_pb2, "Workspace"),
    "health": (health_pb2, "Health"),
}


def _message_class(desc):
    for mod in _MODULES:
        if mod.DESCRIPTOR.name == desc.file.name:
            return getattr(mod, desc.name)
    raise LookupError(f"no generated module holds {desc.full_name}")


def bind(channel) -> SimpleNamespace:
    services = {}
    for attr, (mod, name) in _SERVICES.items():
        methods = {}
        for m in mod.DESCRIPTOR.services_by_name[name].methods:
            req, resp = _message_class(m.input_type), _message_class(m.output_type)
            factory = {(False, False): channel.unary_unary,
                       (False, True): channel.unary_stream,
                       (True, False): channel.stream_unary,
                       (True, True): channel.stream_stream}[
                           (m.client_streaming, m.server_streaming)]
            methods[m.name] = factory(f"/{m.containing_service.full_name}/{m.name}",
                                      request_serializer=req.SerializeToString,
                                      response_deserializer=resp.FromString)
        services[attr] = SimpleNamespace(**methods)
    return SimpleNamespace(**services)
