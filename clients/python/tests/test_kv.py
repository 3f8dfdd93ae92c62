"""KV through the client, sync and async: values as Python objects and as
raw JSON, preconditions and their exceptions, tombstones, paging, history,
cas and update under concurrent writers."""
import asyncio
import re
import threading

import pytest

import reel
import reel.aio


def test_put_get_delete_round_trip_python_values_and_raw_json(client):
    e = client.kv.put("app", "config", {"mode": "fast", "n": [1, 2.5, None, True]})
    assert (e.version, e.deleted, e.namespace, e.key) == (1, False, "app", "config")
    assert e.revision >= 1
    got = client.kv.get("app", "config")
    assert got.value == {"mode": "fast", "n": [1, 2.5, None, True]}
    assert got.value_json == '{"mode":"fast","n":[1,2.5,null,true]}'
    # JSON the caller already has goes byte for byte, big numbers included.
    raw = '{"big": 9007199254740993, "f": 0.30000000000000004}'
    assert client.kv.put("app", "raw", reel.RawJSON(raw)).version == 1
    assert client.kv.get("app", "raw").value_json == raw
    assert client.kv.get("app", "raw").value["big"] == 9007199254740993
    # A str is a JSON string, not JSON text.
    client.kv.put("app", "greeting", "hello")
    assert client.kv.get("app", "greeting").value_json == '"hello"'
    tomb = client.kv.delete("app", "config")
    assert (tomb.deleted, tomb.version) == (True, 2)
    assert client.kv.get("app", "config") is None
    assert client.kv.get("app", "config", include_deleted=True).version == 2
    assert client.kv.delete("app", "config") is None          # nothing to delete
    assert client.kv.get("app", "never") is None
    assert client.kv.get("app", "never", include_deleted=True) is None


def test_values_that_are_not_json_are_refused_before_sending(client):
    with pytest.raises(TypeError, match="value: cannot be sent as JSON"):
        client.kv.put("app", "k", {1, 2})
    with pytest.raises(TypeError, match="value"):
        client.kv.put("app", "k", float("nan"))
    with pytest.raises(reel.InvalidArgument, match="value"):
        client.kv.put("app", "k", reel.RawJSON("{not json"))
    assert client.kv.get("app", "k") is None


def test_a_value_over_any_message_limit_is_an_invalid_argument_saying_so(client, reeld):
    """Past reeld's 1 MiB value rule, a value also passes gRPC's message
    limits: reeld's (4 MiB), or a client's own max_message_bytes. Each is
    InvalidArgument saying whose limit it is, like the value rule, not
    gRPC's bare RESOURCE_EXHAUSTED; an answer over the client's own limit
    says it is the answer."""
    with pytest.raises(reel.InvalidArgument, match=r"value: 2097154 bytes exceeds the limit of 1048576 "
                                                r"bytes \(reeld's --kv-max-value-bytes\)"):
        client.kv.put("app", "k", "x" * (2 << 20))
    with pytest.raises(reel.InvalidArgument) as e:
        client.kv.put("app", "k", "x" * (5 << 20))
    assert re.match(r"SetValue: INVALID_ARGUMENT: request: 52428\d\d bytes, more than "
                    r"reeld takes in one message \(its --max-message-bytes\), at most "
                    r"4194304; .*workspace artifact$", str(e.value)), str(e.value)
    client.kv.put("app", "big", "x" * 200000)
    with reel.connect(reeld.addr, max_message_bytes=100000) as small:
        with pytest.raises(reel.InvalidArgument, match=r"request: 150\d\d\d bytes, more "
                           r"than this client sends in one message \(max_message_bytes\), "
                           r"at most 100000"):
            small.kv.put("app", "k", "x" * 150000)
        with pytest.raises(reel.ResourceExhausted, match=r"answer: 2000\d\d bytes, more "
                           r"than this client takes in one message"):
            small.kv.get("app", "big")

    async def main():
        async with reel.aio.connect(reeld.addr) as a:
            with pytest.raises(reel.InvalidArgument, match=r"request: 52428\d\d bytes, more than reeld"):
                await a.kv.put("app", "k", "x" * (5 << 20))
    asyncio.run(main())
    assert client.kv.get("app", "k") is None


def test_preconditions_raise_named_exceptions_with_the_current_version(client):
    assert client.kv.put("app", "c", 1, create=True).version == 1
    assert client.kv.put("app", "c", 2, if_version=1).version == 2
    with pytest.raises(reel.Conflict) as conflict:
        client.kv.put("app", "c", 3, if_version=1)
    assert conflict.value.current_version == 2
    assert conflict.value.code.name == "ABORTED"
    assert "expected version 1, current version 2" in str(conflict.value)
    with pytest.raises(reel.AlreadyExists) as exists:
        client.kv.put("app", "c", 3, create=True)
    assert exists.value.current_version == 2
    with pytest.raises(reel.Conflict):
        client.kv.delete("app", "c", if_version=1)
    assert client.kv.get("app", "c").value == 2
    with pytest.raises(ValueError, match="not both"):
        client.kv.put("app", "c", 3, create=True, if_version=2)
    with pytest.raises(reel.InvalidArgument, match="namespace"):
        client.kv.put("bad.ns", "c", 1)


def test_list_follows_pages_and_history_gives_transitions(client):
    for i in range(25):
        client.kv.put("app", f"item.{i:02d}", {"i": i})
    client.kv.put("app", "other", 0)
    client.kv.delete("app", "item.03")
    keys = [e.key for e in client.kv.list("app", "item.", page_size=4)]
    assert keys == [f"item.{i:02d}" for i in range(25) if i != 3]
    with_tombs = list(client.kv.list("app", "item.", page_size=4, include_deleted=True))
    assert [e.key for e in with_tombs if e.deleted] == ["item.03"]
    assert [e.key for e in client.kv.list("app", start_after="item.23")] == ["item.24", "other"]
    for v in range(5):
        client.kv.put("app", "h", v)
    hist = list(client.kv.history("app", "h", page_size=2))
    assert [(h.version, h.value, h.prev_value, h.prev_version) for h in hist] == \
        [(1, 0, None, 0), (2, 1, 0, 1), (3, 2, 1, 2), (4, 3, 2, 3), (5, 4, 3, 4)]
    assert [h.version for h in client.kv.history("app", "h", from_version=3)] == [4, 5]


def test_cas_writes_on_exit_with_the_version_read(client):
    with client.kv.cas("app", "counter") as entry:
        assert (entry.exists, entry.version, entry.value) == (False, 0, None)
        entry.value = 1
    assert entry.result.version == 1
    with client.kv.cas("app", "counter") as entry:
        assert (entry.exists, entry.version, entry.value) == (True, 1, 1)
        entry.value = entry.value + 1
    assert (entry.result.version, entry.result.value) == (2, 2)


def test_cas_conflict_carries_the_current_version_and_writes_nothing(client):
    client.kv.put("app", "counter", 1)
    with pytest.raises(reel.Conflict) as err:
        with client.kv.cas("app", "counter") as entry:
            client.kv.put("app", "counter", 100)
            entry.value = entry.value + 1
    assert err.value.current_version == 2
    assert client.kv.get("app", "counter").value == 100
    # A block that raises writes nothing; one that sets nothing writes nothing.
    with pytest.raises(RuntimeError):
        with client.kv.cas("app", "counter") as entry:
            entry.value = 5
            raise RuntimeError("changed my mind")
    with client.kv.cas("app", "counter") as entry:
        pass
    assert entry.result is None
    assert client.kv.get("app", "counter").version == 2
    with client.kv.cas("app", "counter") as entry:
        entry.delete()
    assert entry.result.deleted and client.kv.get("app", "counter") is None
    # A deleted key's CAS presents the tombstone's version.
    with client.kv.cas("app", "counter") as entry:
        assert (entry.exists, entry.version) == (False, 3)
        entry.value = 7
    assert entry.result.version == 4


def test_update_under_concurrent_writers_loses_no_increment(reeld):
    threads, each = 8, 25
    errors = []

    def worker():
        with reel.connect(reeld.addr) as c:
            try:
                for _ in range(each):
                    c.kv.update("app", "counter", lambda v: (v or 0) + 1, retries=1000)
            except Exception as e:   # reported below
                errors.append(e)

    ts = [threading.Thread(target=worker) for _ in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert errors == []
    with reel.connect(reeld.addr) as c:
        got = c.kv.get("app", "counter")
    assert got.value == threads * each
    assert got.version == threads * each


def test_update_gives_up_after_its_retries_with_the_last_conflict(client):
    client.kv.put("app", "hot", 0)
    calls = []

    def bump(v):
        calls.append(v)
        client.kv.put("app", "hot", v + 100)         # always gets in between
        return v + 1

    with pytest.raises(reel.Conflict) as err:
        client.kv.update("app", "hot", bump, retries=2)
    assert len(calls) == 3
    assert err.value.current_version == client.kv.get("app", "hot").version
    assert client.kv.update("app", "hot", lambda v: reel.DELETE).deleted
    assert client.kv.get("app", "hot") is None


async def test_async_kv_calls_cas_and_update(reeld):
    async with reel.aio.connect(reeld.addr) as c:
        e = await c.kv.put("app", "a", {"x": 1}, create=True)
        assert e.version == 1
        assert (await c.kv.get("app", "a")).value == {"x": 1}
        with pytest.raises(reel.AlreadyExists):
            await c.kv.put("app", "a", {"x": 2}, create=True)
        with pytest.raises(reel.Conflict) as err:
            async with c.kv.cas("app", "a") as entry:
                await c.kv.put("app", "a", {"x": 50})
                entry.value = {"x": entry.value["x"] + 1}
        assert err.value.current_version == 2
        async with c.kv.cas("app", "a") as entry:
            entry.value = {"x": entry.value["x"] + 1}
        assert entry.result.version == 3 and entry.result.value == {"x": 51}
        for i in range(7):
            await c.kv.put("app", f"p.{i}", i)
        assert [e.key async for e in c.kv.list("app", "p.", page_size=3)] == \
            [f"p.{i}" for i in range(7)]
        assert [h.version async for h in c.kv.history("app", "a", page_size=1)] == [1, 2, 3]
        assert (await c.kv.delete("app", "a")).version == 4
        assert await c.kv.get("app", "a") is None


async def test_async_update_under_concurrent_writers_loses_no_increment(reeld):
    tasks, each = 8, 20

    async def bump(v):
        await asyncio.sleep(0)      # let the others in between read and write
        return (v or 0) + 1

    async def worker():
        async with reel.aio.connect(reeld.addr) as c:
            for _ in range(each):
                await c.kv.update("app", "counter", bump, retries=1000)

    await asyncio.gather(*(worker() for _ in range(tasks)))
    async with reel.aio.connect(reeld.addr) as c:
        got = await c.kv.get("app", "counter")
    assert (got.value, got.version) == (tasks * each, tasks * each)

    async with reel.aio.connect(reeld.addr) as c:
        await c.kv.put("app", "hot", 0)

        async def meddle(v):
            await c.kv.put("app", "hot", v + 100)
            return v + 1

        with pytest.raises(reel.Conflict):
            await c.kv.update("app", "hot", meddle, retries=1)
