#!/usr/bin/env python3
"""A workspace hand-off between two agents: one produces files, the other
picks them up as they are announced.

    python3 examples/workspace_handoff.py write --count 1        # waits for hand-offs
    python3 examples/workspace_handoff.py research --topic tides --size 5000000

`research` is a run (app "handoff", session = the topic) that streams a
dataset it generates into the workspace (`research/<topic>/data.bin`, in
chunks: never whole in memory), writes a short report beside it, and hands
both off by putting `handoff.<topic>` in the KV: each file's key, version
and SHA-256. Each upload and the hand-off is a durable step, so a research
run that is resumed after a crash, or run again once done, does not upload
or announce again (run again at once after a crash, it waits the few
seconds until the crashed worker's lease runs out). `write` (asyncio) watches
`handoff.>` (a topic may hold dots, so not `handoff.*`): for each hand-off
it streams the dataset to a local file at the version named (a later put
cannot change what it reads), checks its
SHA-256 against the hand-off, reads the report, and writes its summary to
`summaries/<topic>.json` in the workspace, printing it; `--count` makes it
stop after that many. The KV carries the small, watchable announcement;
the workspace carries the bytes.
"""
import argparse
import asyncio
import hashlib
import json
import os
import sys
import tempfile

import reel
import reel.aio

APP, USER, NS = "handoff", "agents", "lab"


def dataset(topic, size):
    """size bytes derived from the topic, generated a block at a time."""
    block = hashlib.sha256(topic.encode()).digest()
    left = size
    while left > 0:
        block = hashlib.sha256(block).digest()
        piece = (block * 2048)[:min(left, 65536)]
        left -= len(piece)
        yield piece


def begin(client, topic, ttl=5.0):
    """The topic's run, begun or resumed. A run whose worker crashed is
    still leased to it until its lease (ttl seconds, heartbeated while the
    worker lives) runs out: wait for that rather than fail."""
    import time
    deadline = time.monotonic() + 3 * ttl
    while True:
        try:
            return client.runs.begin(APP, USER, topic, "research", ttl=ttl)
        except reel.FailedPrecondition as e:
            if time.monotonic() > deadline:
                raise
            print(f"waiting for the lease of a stopped worker to run out ({e})",
                  file=sys.stderr, flush=True)
            time.sleep(1.0)


def research(client, args):
    topic = args.topic
    with begin(client, topic) as run:
        def upload_data():
            a = client.workspace.put(NS, f"research/{topic}/data.bin", dataset(topic, args.size),
                                     content_type="application/octet-stream",
                                     metadata={"topic": topic, "run": run.run_id})
            return {"key": a.key, "version": a.version, "sha256": a.sha256, "size": a.size}

        def upload_report():
            text = f"# {topic}\n\nThe dataset holds {args.size} bytes about {topic}.\n"
            a = client.workspace.put(NS, f"research/{topic}/report.md", text,
                                     content_type="text/markdown")
            return {"key": a.key, "version": a.version, "sha256": a.sha256, "size": a.size}

        def hand_off():
            # Announced once: a worker that crashed after its put but
            # before the step was journaled finds its own hand-off there.
            key = f"handoff.{topic}"
            value = {"data": data, "report": report, "by": run.run_id}
            cur = client.kv.get(NS, key)
            if cur is not None and cur.value == value:
                return cur.version
            return client.kv.put(NS, key, value).version

        data = run.step("upload-data", upload_data)
        report = run.step("upload-report", upload_report)
        run.step("hand-off", hand_off)
        run.end({"handed_off": [data["key"], report["key"]]})
    print(f"handed off {topic}: {data['key']} v{data['version']}", flush=True)
    return 0


async def take(client, topic, handoff, workdir):
    data, report = handoff["data"], handoff["report"]
    local = os.path.join(workdir, f"{topic}.bin")
    rec = await client.workspace.get(NS, data["key"], version=data["version"], out=local)
    digest = hashlib.sha256()
    with open(local, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    if digest.hexdigest() != data["sha256"] or rec.sha256 != data["sha256"]:
        raise reel.DataLoss(f"{data['key']}: not the bytes handed off")
    text = (await client.workspace.get(NS, report["key"], version=report["version"])).decode()
    summary = {"topic": topic, "bytes": os.path.getsize(local), "sha256": data["sha256"],
               "report_words": len(text.split()), "from_run": handoff["by"]}
    await client.workspace.put(NS, f"summaries/{topic}.json", json.dumps(summary),
                               content_type="application/json")
    return summary


async def write(args):
    async with reel.aio.connect(args.addr) as client:
        print("writer ready", flush=True)
        done = 0
        with tempfile.TemporaryDirectory() as workdir:
            async with client.kv.watch(NS, "handoff.>") as watch:
                async for ev in watch:
                    if ev.type != reel.EventType.PUT:
                        continue
                    topic = ev.key.split(".", 1)[1]
                    print(json.dumps(await take(client, topic, ev.value, workdir)), flush=True)
                    done += 1
                    if args.count and done >= args.count:
                        return 0
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("mode", choices=["research", "write"])
    ap.add_argument("--addr", default=None, help="reeld (default $REEL_ADDR or 127.0.0.1:7878)")
    ap.add_argument("--topic", default="tides")
    ap.add_argument("--size", type=int, default=5_000_000, help="research: dataset bytes")
    ap.add_argument("--count", type=int, default=0, help="write: stop after N (0: never)")
    args = ap.parse_args()
    if args.mode == "write":
        return asyncio.run(write(args))
    with reel.connect(args.addr) as client:
        return research(client, args)


if __name__ == "__main__":
    sys.exit(main())
