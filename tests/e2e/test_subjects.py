"""WAL subjects name exactly one thing, against a real reeld.

Subjects are `kv.<namespace>.<key>`, `journal.<run_id>.<kind>`,
`run.<run_id>.<STATUS>` and `signal.<run_id>.<name>.<sent|consumed>`. A
namespace is one token (`[A-Za-z0-9_:/-]`), and no key, kind or signal name
has an empty, `*` or `>` token, so each subject parses back to the one thing
its event is about and a filter reads it as written. These tests check the
rules at every KV method and at the journal's and signals' entry points, and
parse the subjects of tricky names back against the events' bodies.
"""
import json

import grpc
import pytest

from reel.v1 import journal_pb2 as J
from reel.v1 import kv_pb2 as K
from reel.v1 import signals_pb2 as S
from reel.v1 import wal_pb2 as W
from conftest import stream, unary

INVALID = grpc.StatusCode.INVALID_ARGUMENT
CHARSET = "[A-Za-z0-9_:/-]"
T = 10   # seconds: the bound on any single call


class Client:
    def __init__(self, ch):
        u = lambda svc, m, req, resp: unary(ch, f"/reel.v1.{svc}/{m}", req, resp)
        self.set = u("KV", "SetValue", K.SetValueRequest, K.SetValueResponse)
        self.get = u("KV", "GetValue", K.GetValueRequest, K.GetValueResponse)
        self.delete = u("KV", "DeleteValue", K.DeleteValueRequest, K.DeleteValueResponse)
        self.list = u("KV", "ListValues", K.ListValuesRequest, K.ListValuesResponse)
        self.history = u("KV", "ValueHistory", K.ValueHistoryRequest, K.ValueHistoryResponse)
        self.watch = stream(ch, "/reel.v1.KV/WatchValue", K.WatchValueRequest, K.ValueEvent)
        self.watches = stream(ch, "/reel.v1.KV/WatchValues", K.WatchValuesRequest,
                              K.WatchValuesEvent)
        self.begin = u("Journal", "BeginRun", J.BeginRunRequest, J.Run)
        self.append = u("Journal", "Append", J.AppendRequest, J.AppendResponse)
        self.suspend = u("Journal", "SuspendRun", J.SuspendRunRequest, J.Run)
        self.send = u("Signals", "SendSignal", S.SendSignalRequest, S.SendSignalResponse)
        self.await_ = u("Signals", "AwaitSignal", S.AwaitSignalRequest, S.AwaitSignalResponse)
        self.head = u("Wal", "GetHead", W.GetHeadRequest, W.GetHeadResponse)
        self.sub = stream(ch, "/reel.v1.Wal/SubscribeEvents", W.SubscribeEventsRequest,
                          W.Event)

    def revision(self):
        return self.head(W.GetHeadRequest(), timeout=T).head_revision

    def put(self, ns, key, value="1"):
        return self.set(K.SetValueRequest(namespace=ns, key=key, value=value), timeout=T)

    def events(self, until, pattern=""):
        """Events up to revision `until` (PROGRESS left out), through a filter."""
        call = self.sub(W.SubscribeEventsRequest(subject_pattern=pattern), timeout=30)
        out = []
        try:
            for ev in call:
                if ev.type != W.Event.Type.PROGRESS:
                    out.append(ev)
                if ev.revision >= until:
                    break
        finally:
            call.cancel()
        return out


@pytest.fixture
def c(channel):
    return Client(channel)


def rpc_error(fn, *args, **kw):
    with pytest.raises(grpc.RpcError) as e:
        r = fn(*args, timeout=T, **kw)
        raise AssertionError(f"expected an error, got {r!r:.300}")
    return e.value


def stream_error(call):
    with pytest.raises(grpc.RpcError) as e:
        for ev in call:
            raise AssertionError(f"expected an error, got {ev!r:.300}")
    return e.value


def parse(subject):
    """The one thing a subject names, by the grammar alone."""
    t = subject.split(".")
    assert all(t), f"empty token in {subject!r}"
    assert "*" not in t and ">" not in t, f"wildcard token in {subject!r}"
    if t[0] in ("kv", "journal"):
        assert len(t) >= 3, subject
        return (t[0], t[1], ".".join(t[2:]))
    if t[0] == "run":
        assert len(t) == 3, subject
        return ("run", t[1], t[2])
    assert t[0] == "signal" and len(t) >= 4 and t[-1] in ("sent", "consumed"), subject
    return ("signal", t[1], ".".join(t[2:-1]), t[-1])


def about(ev):
    """The thing an event's body says it is about, in parse()'s form."""
    T_ = W.Event.Type
    if ev.type == T_.VALUE_CHANGED:
        return ("kv", ev.value.namespace, ev.value.key)
    if ev.type == T_.JOURNAL_APPENDED:
        return ("journal", ev.entry.run_id, ev.entry.kind)
    if ev.type == T_.RUN_CHANGED:
        return ("run", ev.run.run_id, J.Run.Status.Name(ev.run.status))
    return ("signal", ev.signal.run_id, ev.signal.name,
            "sent" if ev.type == T_.SIGNAL_SENT else "consumed")


# --------------------------------------------------------------------------
# KV namespaces and keys

BAD_NAMESPACES = ["a.b", "*", ">", "a.>", "a*", "a b", "ünï", "a\tb", "", "n" * 257]


@pytest.mark.parametrize("ns", BAD_NAMESPACES, ids=repr)
def test_bad_namespaces_are_invalid_on_every_kv_method(c, ns):
    c.put("app", "k")
    calls = [
        lambda **kw: c.set(K.SetValueRequest(namespace=ns, key="k", value="1"), **kw),
        lambda **kw: c.delete(K.DeleteValueRequest(namespace=ns, key="k"), **kw),
        lambda **kw: c.get(K.GetValueRequest(namespace=ns, key="k"), **kw),
        lambda **kw: c.list(K.ListValuesRequest(namespace=ns), **kw),
        lambda **kw: c.history(K.ValueHistoryRequest(namespace=ns, key="k"), **kw),
    ]
    for call in calls:
        e = rpc_error(call)
        assert e.code() == INVALID, e.details()
        assert e.details().startswith("namespace: ") and CHARSET in e.details(), e.details()
    e = stream_error(c.watch(K.WatchValueRequest(namespace=ns, key="k"), timeout=T))
    assert e.code() == INVALID and CHARSET in e.details(), e.details()
    e = stream_error(c.watches(K.WatchValuesRequest(watches=[
        K.WatchValueRequest(namespace="app", key="k"),
        K.WatchValueRequest(namespace=ns, key="k")]), timeout=T))
    assert e.code() == INVALID, e.details()
    assert e.details().startswith("watches[1]: namespace: "), e.details()
    assert c.revision() == 1, "nothing may be written"


def test_the_namespace_rule_allows_what_it_says(c):
    for ns in ("app", "Tenant_1:billing/eu-west", "a-b", "a:b", "a/b", "0", "n" * 256):
        r = c.put(ns, "k")
        assert r.entry.namespace == ns
        assert c.get(K.GetValueRequest(namespace=ns, key="k"), timeout=T).found


@pytest.mark.parametrize("key", ["a..b", ".a", "a.", ".", "..", "a.*", "*.a", ">", "a.>"],
                         ids=repr)
def test_keys_with_an_empty_or_wildcard_token_are_invalid(c, key):
    for call in (lambda: c.set(K.SetValueRequest(namespace="app", key=key, value="1"),
                               timeout=T),
                 lambda: c.delete(K.DeleteValueRequest(namespace="app", key=key),
                                  timeout=T)):
        with pytest.raises(grpc.RpcError) as e:
            call()
        assert e.value.code() == INVALID, e.value.details()
        assert e.value.details().startswith("key: "), e.value.details()
    assert c.revision() == 0


def test_two_names_can_no_longer_share_a_subject(c):
    c.put("a", "b.c")
    e = rpc_error(c.set, K.SetValueRequest(namespace="a.b", key="c", value="1"))
    assert e.code() == INVALID and "namespace" in e.details(), e.details()
    evs = c.events(c.revision())
    assert [(e.subject, about(e)) for e in evs] == [("kv.a.b.c", ("kv", "a", "b.c"))]


def test_a_namespace_filter_gets_that_namespace_only(c):
    """`kv.a.>` is namespace a: not a.b (refused), nor any a-like neighbour."""
    for ns in ("a", "ab", "a-b", "a:b", "a/b", "b"):
        c.put(ns, "x.y")
    with pytest.raises(grpc.RpcError):
        c.put("a.b", "x")
    c.put("a", "z")
    head = c.revision()
    got = [e for e in c.events(head, "kv.a.>") if e.revision <= head]
    assert [(e.value.namespace, e.value.key) for e in got] == [("a", "x.y"), ("a", "z")]
    got = [e for e in c.events(head, "kv.*.x.y") if e.revision <= head]
    assert [e.value.namespace for e in got] == ["a", "ab", "a-b", "a:b", "a/b", "b"]


# --------------------------------------------------------------------------
# Journal kinds and signal names


def begin(c, inv="i"):
    return c.begin(J.BeginRunRequest(app="a", user="u", session="s", invocation_id=inv,
                                     lease_owner="w"), timeout=T)


def test_kinds_and_signal_names_with_an_empty_token_are_invalid(c):
    run = begin(c)
    rev = c.revision()
    for bad in ("a..b", ".a", "a.", "."):
        e = rpc_error(c.append, J.AppendRequest(run_id=run.run_id, lease_epoch=1, kind=bad,
                                                payload="{}"))
        assert e.code() == INVALID and e.details().startswith("kind: "), e.details()
        e = rpc_error(c.send, S.SendSignalRequest(run_id=run.run_id, name=bad))
        assert e.code() == INVALID and e.details().startswith("name: "), e.details()
        e = rpc_error(c.suspend, J.SuspendRunRequest(run_id=run.run_id, lease_epoch=1,
                                                     waiting_on=bad))
        assert e.code() == INVALID and e.details().startswith("waiting_on: "), e.details()
    assert c.revision() == rev


# --------------------------------------------------------------------------
# Every subject parses back to its event


def test_subjects_of_tricky_names_parse_back_to_their_events(c):
    keys = ["a", "a.b", "b/c.d:e", "x*y.z>w", "ü.日本", "sent", "1.2.3.4.5.6.7.8"]
    for ns in ("t-1:x/y_Z", "a", "a-b"):
        for k in keys:
            c.put(ns, k, json.dumps(k))
    c.delete(K.DeleteValueRequest(namespace="a", key="a.b"), timeout=T)
    run = begin(c)
    other = begin(c, "j")
    for kind in ("tool.call", "a-b_c.d", "x", "sent", "signal.sent"):
        c.append(J.AppendRequest(run_id=run.run_id, lease_epoch=1, kind=kind, payload="{}"),
                 timeout=T)
    for name in ("approve", "step.1:done", "sent", "x.consumed", "A-b_c"):
        c.send(S.SendSignalRequest(run_id=run.run_id, name=name), timeout=T)
        c.send(S.SendSignalRequest(run_id=other.run_id, name=name), timeout=T)
        r = c.await_(S.AwaitSignalRequest(run_id=run.run_id, name=name, lease_epoch=1),
                     timeout=T)
        assert r.delivered
    head = c.revision()
    evs = c.events(head)
    assert [e.revision for e in evs] == list(range(1, head + 1))
    named = {}
    for e in evs:
        thing = parse(e.subject)
        assert thing == about(e), (e.subject, about(e))
        assert named.setdefault(e.subject, thing) == thing
    kinds = {t[0] for t in named.values()}
    assert kinds == {"kv", "journal", "run", "signal"}, kinds
    # One subject per key (its delete shares it), one per run and status.
    assert sum(1 for t in named.values() if t[0] == "kv") == 3 * len(keys)
    assert sorted(t[1:] for t in named.values() if t[0] == "run") == \
        sorted([(run.run_id, "RUNNING"), (other.run_id, "RUNNING")])
    assert ("signal", run.run_id, "x.consumed", "sent") in named.values()
    assert ("signal", run.run_id, "x.consumed", "consumed") in named.values()
    assert ("journal", run.run_id, "signal.sent") in named.values()
    assert ("journal", run.run_id, "signal") in named.values()
