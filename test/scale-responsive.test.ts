// A big sync does not stop the process from answering: while the BPF data plane programs 30,000
// Services (× 4 endpoints: 150,000 service entries, 120,000 backends) and later re-reads and compares
// them all (the periodic full sync), an HTTP health endpoint in the same process keeps answering. Kernel
// reads and writes run on libuv workers and the encoding and comparing loops yield to the event loop.
import { test } from "node:test";
import assert from "node:assert/strict";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { BpfDataplane } from "../src/dataplane/bpf.js";
import { cleanup } from "../src/dataplane/status.js";
import { PrivateBpffs } from "../src/lab/proxy.js";
import type { Frontend, NodeModel } from "../src/model/types.js";

assert.equal(process.getuid?.(), 0, "loads BPF maps: run as root");

const N = 30_000;
const E = 4;

function model(): NodeModel {
  const frontends: Frontend[] = [];
  for (let i = 0; i < N; i++) {
    frontends.push({
      service: `bench/svc-${String(i).padStart(5, "0")}`,
      portName: "http",
      type: "ClusterIP",
      address: `10.${96 + (i >> 16)}.${(i >> 8) & 0xff}.${i & 0xff}`,
      port: 80,
      protocol: "TCP",
      scope: "internal",
      sessionAffinity: { type: "None" },
      algorithm: "random",
      backends: Array.from({ length: E }, (_, j) => ({
        address: `10.${128 + (i >> 14)}.${(i >> 6) & 0xff}.${((i & 0x3f) << 2) | j}`,
        port: 8080,
        state: "active" as const,
        nodeLocal: false,
      })),
    });
  }
  return { node: "node-a", frontends, extras: frontends.map(() => ({ retainedBackends: [], sourceRanges: [] })) };
}

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
      const m = model();
      for (const [what, full] of [
        ["first sync", false],
        ["periodic full sync", true],
      ] as const) {
        let res: Awaited<ReturnType<BpfDataplane["sync"]>> | undefined;
        const r = await whileProbing(url, async () => (res = await dp.sync(m, { full })));
        console.log(
          `${what}: ${Math.round(r.workMs)} ms; /healthz answered ${r.answers} times, p99 ${r.p99Ms.toFixed(1)} ms, max ${r.maxMs.toFixed(1)} ms`,
        );
        assert.equal(res!.notProgrammed?.length ?? 0, 0);
        if (!full) assert.equal(res!.upserts, N * (1 + E) + N * E + 2 * N);
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
