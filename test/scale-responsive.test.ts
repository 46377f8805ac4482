// A big sync does not stop the process from answering: while the daemon's path (object index → model →
// BPF maps) programs 30,000 Services (× 4 endpoints: 150,000 service entries, 120,000 backends) and
// later re-reads and compares them all (the periodic full sync), an HTTP health endpoint in the same
// process keeps answering. Kernel reads and writes run on libuv workers and the model build and the
// encoding and comparing loops yield to the event loop.
import { test } from "node:test";
import assert from "node:assert/strict";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { BpfDataplane } from "../src/dataplane/bpf/index.js";
import { cleanup } from "../src/dataplane/bpf/status.js";
import { PrivateBpffs } from "../src/lab/proxy.js";
import { buildNodeModelFromAsync, ModelCache } from "../src/model/index.js";
import { ObjectIndex } from "../src/sources/object-index.js";
import { cluster } from "../bench/objects.js";

assert.equal(process.getuid?.(), 0, "loads BPF maps: run as root");

const N = 30_000;
const E = 4;

/** Polls GET /healthz back to back while `work` runs; returns the slowest answer and the work's duration. */
async function whileProbing(
  url: string,
  work: () => Promise<unknown>,
): Promise<{ maxMs: number; p99Ms: number; answers: number; workMs: number }> {
  const lat: number[] = [];
  let done = false;
  const probe = (async () => {
    while (!done) {
      const t = performance.now();
      const res = await fetch(url, { signal: AbortSignal.timeout(30_000) });
      await res.text();
      lat.push(performance.now() - t);
      await new Promise((r) => setTimeout(r, 5));
    }
  })();
  const t0 = performance.now();
  await work();
  const workMs = performance.now() - t0;
  done = true;
  await probe;
  lat.sort((a, b) => a - b);
  return {
    maxMs: lat.at(-1) ?? Infinity,
    p99Ms: lat[Math.floor(lat.length * 0.99)] ?? Infinity,
    answers: lat.length,
    workMs,
  };
}

test(
  "/healthz keeps answering during a 30,000-Service sync and the full re-read after it",
  { timeout: 300_000 },
  async () => {
    const server = createServer((_, res) => res.end("ok"));
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/healthz`;
    const bpffs = PrivateBpffs.create("responsive");
    const dp = new BpfDataplane({
      nodeName: "node-a",
      bpffs: bpffs.path,
      devices: [],
      podInterfaces: [],
      clusterCIDRs: [],
    });
    try {
      await dp.start();
      // Validated objects, as a source holds them (made before probing: validation is the source's work).
      const objects = cluster(N, E);
      const index = new ObjectIndex();
      const cache = new ModelCache();
      // A source fills its index one event at a time; here all at once, before probing.
      index.replaceAll(objects.services, objects.endpointSlices, objects.nodes);
      for (const [what, full] of [
        ["first sync", false],
        ["periodic full sync", true],
      ] as const) {
        let res: Awaited<ReturnType<BpfDataplane["sync"]>> | undefined;
        const r = await whileProbing(url, async () => {
          const m = await buildNodeModelFromAsync(index, cache, { nodes: objects.nodes, nodeName: "node-a" });
          res = await dp.sync(m, { full });
        });
        console.log(
          `${what}: ${Math.round(r.workMs)} ms; /healthz answered ${r.answers} times, p99 ${r.p99Ms.toFixed(1)} ms, max ${r.maxMs.toFixed(1)} ms`,
        );
        assert.equal(res!.notProgrammed?.length ?? 0, 0);
        // Masters and slots, backends, rev-NAT and metadata, and the node address NodePorts are served on.
        if (!full) assert.equal(res!.upserts, N * (1 + E) + N * E + 2 * N + 1);
        // Blocked for the whole sync, /healthz would answer once or twice, after it; it must keep answering.
        assert.ok(r.answers >= 10, `${r.answers} answers during ${Math.round(r.workMs)} ms`);
        assert.ok(
          r.maxMs < Math.max(500, r.workMs / 4),
          `slowest /healthz ${r.maxMs.toFixed(0)} ms during a ${r.workMs.toFixed(0)} ms sync`,
        );
      }
    } finally {
      await dp.stop();
      cleanup(bpffs.path);
      bpffs.release();
      server.close();
    }
  },
);
