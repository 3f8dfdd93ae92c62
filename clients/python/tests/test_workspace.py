"""client.workspace against a real reeld: put from bytes, text, files,
paths and iterators (streamed in chunks); get as bytes, into a file object
or a path, by range and version; stat, list, delete; preconditions; a
source failing mid-upload leaves nothing; a download resumes across a
reeld restart; a download whose bytes do not match its record is
DataLoss. Sync and async."""
import hashlib
import io
import os

import pytest

import reel
import reel.aio
from reel import _core
from reel.v1 import workspace_pb2

NS = "docs"
MIB = 1 << 20


def _data(n, seed=1):
    out = bytearray()
    block = hashlib.sha256(str(seed).encode()).digest()
    while len(out) < n:
        block = hashlib.sha256(block).digest()
        out += block * 64
    return bytes(out[:n])


def test_put_from_every_source_and_get_it_back(client, tmp_path):
    data = _data(3 * MIB + 123)
    a = client.workspace.put(NS, "reports/q3.bin", data, content_type="application/pdf",
                             metadata={"owner": "ana"})
    assert (a.version, a.size, a.sha256) == (1, len(data), hashlib.sha256(data).hexdigest())
    assert (a.content_type, a.metadata, a.deleted) == ("application/pdf", {"owner": "ana"}, False)
    assert client.workspace.get(NS, "reports/q3.bin") == data

    t = client.workspace.put(NS, "notes.txt", "héllo")
    assert t.content_type == "text/plain; charset=utf-8"
    assert client.workspace.get(NS, "notes.txt") == "héllo".encode()

    path = tmp_path / "src.bin"
    path.write_bytes(data)
    assert client.workspace.put(NS, "from-path", path).sha256 == a.sha256
    with open(path, "rb") as f:
        f.seek(100)
        assert client.workspace.put(NS, "from-file", f).size == len(data) - 100
    assert client.workspace.get(NS, "from-file") == data[100:]
    pieces = (data[i:i + 300_000] for i in range(0, len(data), 300_000))
    it = client.workspace.put(NS, "from-iter", pieces, chunk_size=64 * 1024)
    assert (it.size, it.sha256) == (len(data), a.sha256)

    # Into a file object, into a path, a range, a retained version.
    buf = io.BytesIO()
    assert client.workspace.get(NS, "from-iter", out=buf).version == 1
    assert buf.getvalue() == data
    out = tmp_path / "out" / "copy.bin"
    out.parent.mkdir()
    assert client.workspace.get(NS, "from-path", out=out).size == len(data)
    assert out.read_bytes() == data
    assert os.listdir(out.parent) == ["copy.bin"]              # no temporary left
    assert client.workspace.get(NS, "reports/q3.bin", offset=MIB - 5, length=10) == \
        data[MIB - 5:MIB + 5]
    v2 = client.workspace.put(NS, "notes.txt", b"v2")
    assert v2.version == 2
    assert client.workspace.stat(NS, "notes.txt").version == 2
    with pytest.raises(reel.NotFound, match="versions-keep"):
        client.workspace.get(NS, "notes.txt", version=1)


def test_stat_list_delete_and_preconditions(client):
    for k in ("a/1", "a/2", "b/1"):
        client.workspace.put(NS, k, k.encode())
    assert [x.key for x in client.workspace.list(NS, page_size=1)] == ["a/1", "a/2", "b/1"]
    assert [x.key for x in client.workspace.list(NS, "a/")] == ["a/1", "a/2"]
    with pytest.raises(reel.AlreadyExists):
        client.workspace.put(NS, "a/1", b"again", create=True)
    with pytest.raises(reel.Conflict) as err:
        client.workspace.put(NS, "a/1", b"again", if_version=5)
    assert err.value.current_version == 1
    assert client.workspace.get(NS, "a/1") == b"a/1"              # nothing written
    with pytest.raises(reel.Conflict):
        client.workspace.delete(NS, "a/2", if_version=3)
    tomb = client.workspace.delete(NS, "a/2", if_version=1)
    assert (tomb.deleted, tomb.version) == (True, 2)
    assert client.workspace.delete(NS, "a/2") is None
    assert client.workspace.stat(NS, "a/2") is None
    assert client.workspace.stat(NS, "never") is None
    assert [x.key for x in client.workspace.list(NS)] == ["a/1", "b/1"]
    assert [(x.key, x.deleted) for x in client.workspace.list(NS, "a/", include_deleted=True)] \
        == [("a/1", False), ("a/2", True)]
    assert client.workspace.put(NS, "a/2", b"back", create=True).version == 3
    with pytest.raises(reel.NotFound, match="deleted"):
        client.workspace.get(NS, "b/1") if client.workspace.delete(NS, "b/1") else None


def test_a_source_that_fails_mid_upload_leaves_nothing(client, tmp_path):
    def broken():
        yield _data(2 * MIB)
        raise RuntimeError("the source broke")

    with pytest.raises(RuntimeError, match="the source broke"):
        client.workspace.put(NS, "half", broken())
    assert client.workspace.stat(NS, "half") is None
    assert list(client.workspace.list(NS, include_deleted=True)) == []
    # A path is written whole or not at all.
    (tmp_path / "out").mkdir()
    out = tmp_path / "out" / "missing.bin"
    with pytest.raises(reel.NotFound):
        client.workspace.get(NS, "half", out=out)
    assert list(out.parent.iterdir()) == []


def test_bad_sources_are_refused_naming_the_argument(client, tmp_path):
    kinds = r"data must be bytes, a str, a binary file, a path \(os.PathLike\), or an iterable"
    with pytest.raises(TypeError, match=r"data: must be bytes, a str, .* not int"):
        client.workspace.put(NS, "k", 42)
    with pytest.raises(TypeError, match=r"data: must be bytes, a str, .* not dict"):
        client.workspace.put(NS, "k", {"a": 1})
    with pytest.raises(TypeError, match="the iterator gave a str, not bytes; " + kinds):
        client.workspace.put(NS, "k", iter(["text"]))
    (tmp_path / "t.txt").write_text("text")
    with open(tmp_path / "t.txt") as text:
        with pytest.raises(TypeError, match="text mode; " + kinds):
            client.workspace.put(NS, "k", text)
    assert client.workspace.stat(NS, "k") is None
    with pytest.raises(ValueError, match="not both"):
        client.workspace.put(NS, "k", b"x", create=True, if_version=1)
    with pytest.raises(TypeError, match="metadata"):
        client.workspace.put(NS, "k", b"x", metadata={"n": 1})
    with pytest.raises(reel.InvalidArgument, match="key"):
        client.workspace.put(NS, "a//b", b"x")


def test_a_download_resumes_across_a_reeld_restart(reeld, client):
    data = _data(12 * MIB, seed=2)
    client.workspace.put(NS, "big", data)
    got = bytearray()

    def sink(chunk):
        if not got:
            reeld.restart()          # the stream breaks after its first chunk
        got.extend(chunk)

    streams = []
    real = client._stream

    def counting(service, method, req):
        streams.append(req.offset)
        return real(service, method, req)

    client._stream = counting
    art = client.workspace.get(NS, "big", out=type("Sink", (), {"write": staticmethod(sink)}))
    assert art.version == 1 and bytes(got) == data
    assert len(streams) >= 2 and streams[0] == 0 and 0 < streams[1] < len(data)


def test_bytes_that_do_not_match_the_record_are_data_loss():
    rec = workspace_pb2.Artifact(namespace=NS, key="k", version=1, size=3,
                                 sha256=hashlib.sha256(b"abc").digest())
    dl = _core.Download(NS, "k", 0, 0, 0)
    dl.feed(workspace_pb2.GetArtifactResponse(artifact=rec))
    dl.feed(workspace_pb2.GetArtifactResponse(chunk=b"abd"))
    with pytest.raises(reel.DataLoss, match="sha256"):
        dl.finish()
    short = _core.Download(NS, "k", 0, 0, 0)
    short.feed(workspace_pb2.GetArtifactResponse(artifact=rec))
    short.feed(workspace_pb2.GetArtifactResponse(chunk=b"ab"))
    with pytest.raises(reel.DataLoss, match="2 bytes came, 3 expected"):
        short.finish()
    # Resumed, it asks for the same version from the next byte.
    assert (short.request().version, short.request().offset) == (1, 2)


async def test_async_workspace(reeld, tmp_path):
    data = _data(2 * MIB + 7, seed=3)
    async with reel.aio.connect(reeld.addr) as c:
        async def agen():
            for i in range(0, len(data), 500_000):
                yield data[i:i + 500_000]

        a = await c.workspace.put(NS, "x", agen())
        assert (a.size, a.sha256) == (len(data), hashlib.sha256(data).hexdigest())
        assert await c.workspace.get(NS, "x") == data
        src = tmp_path / "src"
        src.write_bytes(data)
        assert (await c.workspace.put(NS, "x", src)).version == 2
        out = tmp_path / "out"
        assert (await c.workspace.get(NS, "x", out=out)).version == 2
        assert out.read_bytes() == data
        assert await c.workspace.get(NS, "x", offset=3, length=4) == data[3:7]
        assert (await c.workspace.stat(NS, "x")).version == 2
        assert [x.key async for x in c.workspace.list(NS)] == ["x"]

        async def broken():
            yield b"x" * 1000
            raise RuntimeError("async source broke")

        with pytest.raises(RuntimeError, match="async source broke"):
            await c.workspace.put(NS, "half", broken())
        assert await c.workspace.stat(NS, "half") is None
        assert (await c.workspace.delete(NS, "x")).deleted
        assert await c.workspace.stat(NS, "x") is None
        assert await c.workspace.delete(NS, "x") is None


def _kinds(events):
    return [(e.type.name, e.key, e.artifact.version if e.artifact else None) for e in events]


def test_watch_snapshot_then_live_resumes_across_a_restart(reeld, client):
    client.workspace.put(NS, "w/a", b"1")
    client.workspace.put(NS, "w/b", b"2")
    client.workspace.put(NS, "other", b"x")
    with client.workspace.watch(NS, "w/") as w:
        first = [next(w) for _ in range(3)]
        assert _kinds(first) == [("CURRENT", "w/a", 1), ("CURRENT", "w/b", 1),
                                 ("BOOTSTRAP_DONE", "", None)]
        client.workspace.put(NS, "w/a", b"11")
        ev = next(w)
        assert _kinds([ev]) == [("PUT", "w/a", 2)] and ev.artifact.size == 2
        reeld.restart()
        client.workspace.delete(NS, "w/b")
        client.workspace.put(NS, "w/c", b"3")
        after = [next(w) for _ in range(2)]
        assert _kinds(after) == [("DELETE", "w/b", 2), ("PUT", "w/c", 1)]
        assert w.reconnects >= 1 and w.revision == after[-1].revision
        resume_at = ev.revision
    # Another watch from a revision gets what came after it, then goes live.
    with client.workspace.watch(NS, "w/", from_revision=resume_at) as again:
        got = [next(again) for _ in range(3)]
        assert _kinds(got) == [("DELETE", "w/b", 2), ("PUT", "w/c", 1),
                               ("BOOTSTRAP_DONE", "", None)]
    with client.workspace.watch(NS, "w/", now=True) as live:
        assert next(live).bootstrap_done
        client.workspace.put(NS, "w/d", b"4")
        assert _kinds([next(live)]) == [("PUT", "w/d", 1)]
    with pytest.raises(ValueError, match="not both"):
        client.workspace.watch(NS, now=True, from_revision=1)


def test_a_watch_interrupted_in_its_snapshot_skips_what_it_gave_and_reports_deletes(client):
    """The cursor alone: a second snapshot after a reconnect."""
    def cur_ev(key, version, rev):
        return workspace_pb2.ArtifactEvent(
            type=workspace_pb2.ArtifactEvent.CURRENT, revision=rev,
            artifact=workspace_pb2.Artifact(namespace=NS, key=key, version=version,
                                            revision=rev))

    done = workspace_pb2.ArtifactEvent(type=workspace_pb2.ArtifactEvent.BOOTSTRAP_DONE,
                                       revision=9)
    cur = _core.ArtifactWatchCursor(NS, "", None)
    cur.request()
    assert len(cur.feed(cur_ev("a", 1, 1))) == 1
    assert len(cur.feed(cur_ev("b", 1, 2))) == 1
    # The stream breaks; the new snapshot has a unchanged, b gone, c new.
    assert cur.request().start == workspace_pb2.WatchArtifactsRequest.START_SNAPSHOT
    assert cur.feed(cur_ev("a", 1, 1)) == []
    assert [e.key for e in cur.feed(cur_ev("c", 1, 5))] == ["c"]
    out = cur.feed(done)
    assert out[0] == "b" and out[1].bootstrap_done
    tomb = reel.Artifact(NS, "b", 2, 0, "", "", {}, 7, 0, 0, True, 0)
    assert cur.vanished_event("b", [tomb]).type == reel.ArtifactEventType.DELETE
    with pytest.raises(reel.OutOfRange):
        cur.vanished_event("b", [])
    # b put again after the snapshot (revision 12 > 9): its tombstone is
    # overwritten, and the delete comes from b's changes after the version
    # given (revision 2 on), up to the snapshot's revision.
    live = reel.Artifact(NS, "b", 3, 1, "", "", {}, 12, 0, 0, False, 0)
    assert cur.history_request("b").from_revision == 2
    history = [reel.ArtifactEvent(reel.ArtifactEventType.PUT, 4,
                                  reel.Artifact(NS, "b2", 1, 1, "", "", {}, 4, 0, 0, False, 0)),
               reel.ArtifactEvent(reel.ArtifactEventType.DELETE, 7, tomb),
               reel.ArtifactEvent(reel.ArtifactEventType.PUT, 12, live)]
    ev = cur.vanished_event("b", [live], lambda: history)
    assert ev.type == reel.ArtifactEventType.DELETE and ev.revision == 7
    with pytest.raises(reel.OutOfRange):   # that history gone too
        cur.vanished_event("b", [live], lambda: history[2:])
    assert cur.request().start == workspace_pb2.WatchArtifactsRequest.START_FROM_REVISION


def test_a_watchs_snapshot_lookup_is_tried_again_while_reeld_is_away(client):
    """The reads a watch resumed in its snapshot makes (a tombstone, a
    history) are tried again after Unavailable, within the reconnect
    limit, as its stream is: the event they find cannot come from the next
    stream."""
    tries = []

    def read():
        tries.append(1)
        if len(tries) == 1:
            raise reel.Unavailable("reeld is away")
        return "found"
    with client.workspace.watch(NS, "w/") as w:
        clock = _core.ReconnectClock(5.0)
        assert w._lookup(clock, read) == "found"
        assert len(tries) == 2 and w.reconnects == 1
    with client.kv.watch("n", "k") as w:
        tries.clear()
        assert w._lookup(_core.ReconnectClock(5.0), read) == "found"


async def test_async_watch(reeld):
    async with reel.aio.connect(reeld.addr) as c:
        await c.workspace.put(NS, "a", b"1")
        w = await c.workspace.watch(NS)
        async with w:
            it = w.__aiter__()
            assert _kinds([await it.__anext__(), await it.__anext__()]) == \
                [("CURRENT", "a", 1), ("BOOTSTRAP_DONE", "", None)]
            await c.workspace.delete(NS, "a")
            assert _kinds([await it.__anext__()]) == [("DELETE", "a", 2)]


def _download_while_reeld_is_down(reeld, get):
    """Runs get() while reeld is down for 2.5 s; what it returned or raised."""
    import threading
    import time
    got = []
    reeld.stop()
    t = threading.Thread(target=lambda: got.append(_outcome(get)))
    t.start()
    time.sleep(2.5)
    reeld.start()
    t.join(60)
    assert not t.is_alive()
    return got[0]


def _outcome(fn):
    try:
        return fn()
    except Exception as e:          # returned: the test shows it
        return e


def test_a_download_waits_for_a_reeld_that_is_down(reeld, client):
    data = _data(3 * MIB, seed=4)
    client.workspace.put(NS, "down", data)
    assert _download_while_reeld_is_down(reeld, lambda: client.workspace.get(NS, "down")) == data


async def test_async_a_download_waits_for_a_reeld_that_is_down(reeld):
    import asyncio
    data = _data(3 * MIB, seed=5)
    async with reel.aio.connect(reeld.addr) as c:
        await c.workspace.put(NS, "down", data)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, reeld.stop)
        get = asyncio.ensure_future(c.workspace.get(NS, "down"))
        await asyncio.sleep(2.5)
        await loop.run_in_executor(None, reeld.start)
        assert await asyncio.wait_for(get, 60) == data


async def test_async_a_workspace_watch_opens_with_async_with(reeld):
    """`async with client.workspace.watch(...)` was a TypeError (a
    coroutine is no context manager): only `async with await ...`."""
    async with reel.aio.connect(reeld.addr) as c:
        await c.workspace.put(NS, "a", b"1")
        async with c.workspace.watch(NS, now=True) as w:
            assert isinstance(w, reel.aio.ArtifactWatch)
            assert _kinds([await anext(w)]) == [("BOOTSTRAP_DONE", "", None)]
            await c.workspace.delete(NS, "a")
            assert _kinds([await anext(w)]) == [("DELETE", "a", 2)]
        with pytest.raises(StopAsyncIteration):      # the block closed it
            await anext(w)
