// bench/nats_objstore.js: NATS JetStream's Object Store, the peer of
// reel-bench ws: one put and one get of each size, timed end to end.
//
//   node bench/nats_objstore.js nats://127.0.0.1:4222 1,64,1024
//
// Needs the `nats` npm package (bench/run.sh installs it into its work dir
// and sets NODE_PATH). Prints one JSON line per size: {"mib", "upload_mb_s",
// "download_mb_s"} (MB/s: 10^6 bytes a second). The object store chunks
// objects itself (128 KiB by default); nats-server -js syncs its store on a
// timer, not per put: its puts are not durable when acknowledged.
const { connect } = require("nats");

const CHUNK = 1 << 20;

function source(bytes) {
  const chunk = new Uint8Array(CHUNK);
  for (let i = 0; i < CHUNK; i++) chunk[i] = (i * 2654435761) >>> 13 & 0xff;
  let left = bytes;
  return new ReadableStream({
    pull(controller) {
      if (left <= 0) { controller.close(); return; }
      const n = Math.min(left, CHUNK);
      left -= n;
      controller.enqueue(n === CHUNK ? chunk.slice() : chunk.slice(0, n));
    },
  });
}

async function main() {
  const [url, sizes] = [process.argv[2], (process.argv[3] || "1,64").split(",").map(Number)];
  const nc = await connect({ servers: url });
  const js = nc.jetstream({ timeout: 120000 });
  const os = await js.views.os("reelbench", { storage: "file" });
  for (const mib of sizes) {
    const bytes = mib * CHUNK;
    const name = `size-${mib}-MiB`;
    let t0 = process.hrtime.bigint();
    await os.put({ name }, source(bytes));
    const up = Number(process.hrtime.bigint() - t0) / 1e9;
    t0 = process.hrtime.bigint();
    const r = await os.get(name);
    let got = 0;
    const reader = r.data.getReader();
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      got += value.length;
    }
    await r.error;
    const down = Number(process.hrtime.bigint() - t0) / 1e9;
    if (got !== bytes) throw new Error(`${name}: got ${got} bytes of ${bytes}`);
    console.log(JSON.stringify({ mib, upload_mb_s: bytes / up / 1e6, download_mb_s: bytes / down / 1e6 }));
  }
  await nc.drain();
}

main().catch((e) => { console.error(`nats_objstore: ${e.message}`); process.exit(1); });
