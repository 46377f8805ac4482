// Profiling harness for bench/datapath.ts: runs one kind of packet through bpx_from_pod (and, for the
// default stack path, bpx_reverse on its output) many times, so `perf record -g` sees nothing else in
// the kernel's BPF_PROG_TEST_RUN:
//   perf record -e cpu-clock -g -o dp.data -- node --import tsx bench/datapath-profile.ts syn 10000
//   perf script -i dp.data | node --import tsx bench/datapath-profile.ts --fold
// kinds: syn (new flows, single runs), est (one established ACK, repeated).
import { readFileSync } from "node:fs";
import { BpfObject } from "../src/native/index.js";
import { Prefilter } from "../src/dataplane/bpf/prefilter.js";
import { PrivateBpffs } from "../src/lab/proxy.js";
import { LbReconciler } from "../src/dataplane/bpf/reconcile.js";
import { MAP_NAMES } from "../src/dataplane/bpf/abi.js";
import { packagePath } from "../src/paths.js";
import { buildPacket, TCP_FLAGS } from "../test/fixtures/packets.js";
import type { Frontend, NodeModel } from "../src/model/types.js";

/** Leaf kernel symbol of each sample under bpf_test_run, as shares (reads `perf script` on stdin). */
function fold(): void {
  const text = readFileSync(0, "utf8");
  const counts = new Map<string, number>();
  let total = 0;
  for (const block of text.split("\n\n")) {
    const lines = block.split("\n").filter((l) => /^\s+[0-9a-f]+ /.test(l));
    if (!lines.some((l) => l.includes("bpf_test_run"))) continue;
    const sym = lines[0]!
      .trim()
      .split(/\s+/)[1]!
      .replace(/\+0x[0-9a-f]+$/, "");
    counts.set(sym, (counts.get(sym) ?? 0) + 1);
    total++;
  }
  console.log(`${total} samples under bpf_test_run`);
  for (const [s, c] of [...counts].sort((a, b) => b[1] - a[1]).slice(0, 40))
    console.log(`${((100 * c) / total).toFixed(1).padStart(5)}%  ${s}`);
}

async function run(kind: string, n: number): Promise<void> {
  const frontends: Frontend[] = [];
  for (let i = 0; i < n; i++)
    frontends.push({
      service: `bench/svc-${i}`,
      portName: "http",
      type: "ClusterIP",
      address: `10.${96 + (i >> 16)}.${(i >> 8) & 0xff}.${i & 0xff}`,
      port: 80,
      protocol: "TCP",
      scope: "internal",
      sessionAffinity: { type: "None" },
      algorithm: "random",
      backends: [0, 1].map((b) => ({
        address: `10.244.${(i >> 8) & 0xff}.${i & 0xff}`,
        port: 8080 + b,
        state: "active" as const,
        nodeLocal: true,
      })),
    });
  const a = frontends[n - 2]!;
  const b = frontends[n - 1]!;
  a.backends = [{ address: b.address, port: 80, state: "active", nodeLocal: true }];
  b.backends = [{ address: a.address, port: 80, state: "active", nodeLocal: true }];
  const m: NodeModel = {
    node: "bench",
    frontends,
    extras: frontends.map(() => ({ retainedBackends: [], sourceRanges: [] })),
  };
  const bpffs = PrivateBpffs.create("bench-prof");
  const obj = new BpfObject(process.env.BPX_OBJ ?? packagePath("bpf/bpfproxy.o"), { pinRoot: bpffs.path });
  try {
    obj.load();
    const rec = new LbReconciler({
      services: obj.map(MAP_NAMES.services),
      backends: obj.map(MAP_NAMES.backends),
      revNat: obj.map(MAP_NAMES.revNat),
      svcMeta: obj.map(MAP_NAMES.svcMeta),
      maglev: obj.map(MAP_NAMES.maglev),
      affinityMatch: obj.map(MAP_NAMES.affinityMatch),
      services6: obj.map(MAP_NAMES.services6),
      backends6: obj.map(MAP_NAMES.backends6),
    });
    await rec.restore();
    const pf = new Prefilter(obj.map(MAP_NAMES.prefilter));
    pf.restore();
    // The data plane's order: the pre-filter covers the encoded entries before they are written.
    await rec.apply(m, { beforeWrite: (bits, complete) => pf.before(bits, m.nodePortIPs ?? [], complete) });
    await pf.after();
    const prog = obj.program("bpx_from_pod");
    const tcp = (daddr: string, sport: number, flags: number) =>
      buildPacket({
        proto: "tcp",
        saddr: "10.244.200.7",
        daddr,
        sport,
        dport: 80,
        flags,
        payload: flags === TCP_FLAGS.SYN ? undefined : Buffer.alloc(64),
      });
    let total = 0;
    let runs = 0;
    if (kind === "syn") {
      for (let i = 0; i < 200_000; i++) {
        total += (
          await prog.testRun({ data: tcp(frontends[i % n]!.address, 1024 + (i % 60000), TCP_FLAGS.SYN), repeat: 1 })
        ).durationNs;
        runs++;
      }
    } else {
      await prog.testRun({ data: tcp(a.address, 40000, TCP_FLAGS.SYN), repeat: 2 }); // both flows of the pair
      for (let i = 0; i < 50; i++) {
        total += (await prog.testRun({ data: tcp(a.address, 40000, TCP_FLAGS.ACK), repeat: 1_000_000 })).durationNs;
        runs++;
      }
    }
    console.log(`${kind}: ${Math.round(total / runs)} ns per run`);
  } finally {
    obj.close();
    bpffs.release();
  }
}

if (process.argv[2] === "--fold") fold();
else await run(process.argv[2] ?? "syn", Number(process.argv[3] ?? 10_000));
