#!/usr/bin/env python3
"""A reactive pipeline with no orchestrator: stages that watch KV keys.

    python3 examples/reactive_pipeline.py --addr 127.0.0.1:7878 --docs 5

Documents arrive as `pipeline.<id>.raw` keys. A cleaning stage watches
`pipeline.*.raw` and writes `pipeline.<id>.clean`; a counting stage watches
`pipeline.*.clean` and records each document's word count in one summary
key with `kv.update` (a compare-and-swap loop, so stages on several
machines never lose each other's updates). Every stage starts from a
snapshot of the keys it watches, so a stage that restarts catches up on
what it missed, and each write is idempotent (the same input writes the
same output), so catching up twice does no harm. Here the three stages are
tasks of one process (asyncio client); the program ends once the summary
counts every document, and prints it.
"""
import argparse
import asyncio
import json

import reel
import reel.aio


async def ingest(kv, ns, docs):
    for i in range(docs):
        text = f"  Document {i} SAYS hello to the Pipeline number {i}  "
        await kv.put(ns, f"pipeline.doc{i}.raw", {"id": f"doc{i}", "text": text})


async def clean(kv, ns):
    async for ev in kv.watch(ns, "pipeline.*.raw"):
        if ev.type != reel.EventType.PUT:
            continue                 # BOOTSTRAP_DONE, or a raw document deleted
        doc = ev.value
        words = doc["text"].lower().split()
        await kv.put(ns, f"pipeline.{doc['id']}.clean", {"id": doc["id"], "words": words})


async def count(kv, ns, docs):
    async for ev in kv.watch(ns, "pipeline.*.clean"):
        if ev.type != reel.EventType.PUT:
            continue
        doc = ev.value

        def add(summary):
            summary = dict(summary or {})
            summary[doc["id"]] = len(doc["words"])
            return summary

        summary = (await kv.update(ns, "pipeline.summary", add)).value
        # Every document of this run counted (an earlier run with more
        # documents left its own in the summary too).
        if all(f"doc{i}" in summary for i in range(docs)):
            return summary


async def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    ap.add_argument("--addr", default=None, help="reeld's address (default $REEL_ADDR or "
                                                 "127.0.0.1:7878)")
    ap.add_argument("--ns", default="demo", help="the KV namespace to use")
    ap.add_argument("--docs", type=int, default=5, help="how many documents to feed in")
    args = ap.parse_args()
    if args.docs < 1:
        ap.error(f"--docs: {args.docs}: feed at least 1 document")
    async with reel.aio.connect(args.addr) as client:
        stages = [asyncio.create_task(clean(client.kv, args.ns))]
        counting = asyncio.create_task(count(client.kv, args.ns, args.docs))
        await ingest(client.kv, args.ns, args.docs)
        summary = await counting
        for t in stages:
            t.cancel()
        await asyncio.gather(*stages, return_exceptions=True)
    print(json.dumps(summary, sort_keys=True))


if __name__ == "__main__":
    asyncio.run(main())
