// Per-Service traffic without a kernel (issue 19 item 3): the metrics' cardinality cap, `status --rate`'s
// arithmetic and table, the monitor's event decoding, and the reconciler telling the data plane which ids it
// released (their per-CPU counter slots are zeroed so a reused id starts from zero).
import { test } from "node:test";
import assert from "node:assert/strict";
import { FakeMap } from "../src/native/fake-map.js";
import { LbReconciler, type LbMaps } from "../src/dataplane/bpf/reconcile.js";
import {
  MAP_CODECS,
  MAP_NAMES,
  EV_DROP,
  EV_NEW_FLOW,
  COUNTER_REASONS,
  event,
  event6,
} from "../src/dataplane/bpf/abi.js";
import { backendSeries, serviceSeries } from "../src/metrics.js";
import { formatRates, formatStats, trafficRates } from "../src/stats-format.js";
import { decodeEventRecord, describeEvent, formatEvent } from "../src/monitor.js";
import { parseIpvsStats } from "../src/dataplane/ipvs/netlink.js";
import type { DataplaneStatus } from "../src/dataplane/types.js";
import type { Frontend, NodeModel } from "../src/model/types.js";
import { frontendName } from "../src/dataplane/bpf/desired.js";

type FC = DataplaneStatus["frontendCounters"][number];
const fc = (service: string, address: string, packets: number, connections: number, drops = {}): FC => ({
  service,
  portName: "http",
  type: "ClusterIP",
  address,
  port: 80,
  protocol: "TCP",
  packets,
  bytes: packets * 100,
  connections,
  drops,
});

test("service series sum a Service port's frontends and keep the busiest up to the cap", () => {
  const list = [
    fc("default/a", "10.96.0.1", 10, 1, { no_backend: 1 }),
    { ...fc("default/a", "0.0.0.0", 5, 2, { no_backend: 2 }), type: "NodePort" },
    fc("default/b", "10.96.0.2", 100, 3),
    fc("default/c", "10.96.0.3", 1, 1),
  ];
  const { series, omitted } = serviceSeries(list, 2);
  assert.equal(omitted, 1);
  assert.deepEqual(
    series.map((s) => [s.service, s.port, s.packets, s.connections, s.drops.no_backend ?? 0]),
    [
      ["default/b", "http", 100, 3, 0],
      ["default/a", "http", 15, 3, 3],
    ],
  );
  const be = (address: string, packets: number) => ({
    services: ["default/a"],
    address,
    port: 8080,
    protocol: "TCP",
    connections: 1,
    packets,
    bytes: 0,
  });
  const b = backendSeries([be("10.244.0.1", 1), be("10.244.0.2", 9), be("10.244.0.3", 5)], 2);
  assert.deepEqual(
    b.series.map((x) => x.address),
    ["10.244.0.2", "10.244.0.3"],
  );
  assert.equal(b.omitted, 1);
});

test("status --rate: per second between two readings; a counter that went backwards counts from zero", () => {
  const st = (list: FC[]): DataplaneStatus => ({
    node: "n",
    mode: "bpf",
    frontends: [],
    attachments: [],
    counters: {},
    conntrack: { entries: 0, max: 0 },
    snat: { entries: 0, max: 0 },
    frontendCounters: list,
    backendCounters: [],
    maps: {},
  });
  const r = trafficRates(
    st([fc("default/a", "10.96.0.1", 100, 10, { no_backend: 4 }), fc("default/b", "10.96.0.2", 50, 5)]),
    st([fc("default/a", "10.96.0.1", 300, 30, { no_backend: 8 }), fc("default/b", "10.96.0.2", 20, 2)]),
    2,
  );
  assert.deepEqual(
    r.frontends.map((f) => [f.service, f.connectionsPerSecond, f.packetsPerSecond, f.bytesPerSecond, f.dropsPerSecond]),
    [
      ["default/a", 10, 100, 10000, 2],
      ["default/b", 1, 10, 1000, 0],
    ],
  );
  assert.match(formatRates(r), /default\/a:http\s+ClusterIP\s+10\.96\.0\.1:80\/TCP\s+10\s+100\s+10000\s+2/);
  assert.match(
    formatStats(st([fc("default/a", "10.96.0.1", 7, 3, { no_backend: 2, source_range: 0 })])),
    /3\s+7\s+700\s+no_backend=2$/m,
  );
});

test("a ring-buffer record decodes into the monitor's line and JSON", () => {
  const rec = event.encode({
    tsNs: 1_000_000_000n,
    revNatId: 7,
    backendId: 3,
    saddr: "10.244.1.20",
    daddr: "10.96.0.21",
    backendAddr: "10.244.1.5",
    ifindex: 4,
    sport: 40000,
    dport: 80,
    backendPort: 8080,
    type: EV_NEW_FLOW,
    reason: COUNTER_REASONS.translated_new,
    proto: 6,
  });
  const meta = { service: "default/web", portName: "http", type: 0, algorithm: 0, affinity: 0 };
  const e = describeEvent(event.decode(rec), meta, Date.parse("2026-01-01T00:00:01Z"), 1_500_000_000n, "lxc1");
  assert.deepEqual(e, {
    time: "2026-01-01T00:00:00.500Z",
    type: "new-flow",
    reason: "translated_new",
    service: "default/web",
    portName: "http",
    frontendType: "ClusterIP",
    client: "10.244.1.20:40000",
    frontend: "10.96.0.21:80",
    protocol: "TCP",
    interface: "lxc1",
    backend: "10.244.1.5:8080",
  });
  assert.equal(
    formatEvent(e),
    "2026-01-01T00:00:00.500Z NEW  default/web:http 10.244.1.20:40000 -> 10.96.0.21:80/TCP -> backend 10.244.1.5:8080 on lxc1",
  );
  const drop = describeEvent(
    { ...event.decode(rec), type: EV_DROP, reason: COUNTER_REASONS.drop_source_range },
    undefined,
    0,
    1_000_000_000n,
    "eth0",
  );
  assert.equal(drop.type, "drop");
  assert.equal(drop.reason, "drop_source_range");
  assert.equal(drop.service, "<frontend 7>");
  assert.equal(drop.backend, undefined);
  // Dropped before a frontend matched (frontend id 0): no Service, "-" in the line.
  const early = describeEvent(
    { ...event.decode(rec), revNatId: 0, type: EV_DROP, reason: COUNTER_REASONS.drop_pod_source },
    undefined,
    0,
    1_000_000_000n,
    "lxc2",
  );
  assert.equal(early.service, "");
  assert.match(formatEvent(early), / DROP drop_pod_source - 10\.244\.1\.20:40000 -> 10\.96\.0\.21:80\/TCP on lxc2$/);
});

test("an IPv6 record (struct bpx_event6) is told from an IPv4 one by its length and shown with brackets", () => {
  assert.equal(event.size, 48);
  assert.equal(event6.size, 80);
  const rec = event6.encode({
    tsNs: 1_000_000_000n,
    revNatId: 9,
    backendId: 4,
    saddr: "fd00:10:244:1::20",
    daddr: "fd00:96::21",
    backendAddr: "fd00:10:244:1::5",
    ifindex: 4,
    sport: 40000,
    dport: 80,
    backendPort: 8080,
    type: EV_NEW_FLOW,
    reason: COUNTER_REASONS.translated_new,
    proto: 17,
  });
  const meta = { service: "default/web", portName: "dns", type: 0, algorithm: 0, affinity: 0 };
  const decoded = decodeEventRecord(rec);
  assert.equal(decoded?.saddr, "fd00:10:244:1::20");
  const e = describeEvent(decoded, meta, Date.parse("2026-01-01T00:00:01Z"), 1_500_000_000n, "lxc1");
  assert.deepEqual(
    [e.client, e.frontend, e.backend, e.protocol],
    ["[fd00:10:244:1::20]:40000", "[fd00:96::21]:80", "[fd00:10:244:1::5]:8080", "UDP"],
  );
  assert.equal(
    formatEvent(e),
    "2026-01-01T00:00:00.500Z NEW  default/web:dns [fd00:10:244:1::20]:40000 -> [fd00:96::21]:80/UDP -> backend [fd00:10:244:1::5]:8080 on lxc1",
  );
  // An IPv4 record still decodes as one; anything shorter is no record.
  const v4 = event.encode({
    ...event6.decode(rec),
    saddr: "10.244.1.20",
    daddr: "10.96.0.21",
    backendAddr: "10.244.1.5",
  });
  assert.equal(decodeEventRecord(v4)?.daddr, "10.96.0.21");
  assert.equal(decodeEventRecord(v4.subarray(0, 40)), undefined);
});

test("the reconciler reports the frontend and backend ids it releases", async () => {
  const mk = (name: keyof typeof MAP_CODECS) =>
    new FakeMap({ name, keySize: MAP_CODECS[name].key.size, valueSize: MAP_CODECS[name].value.size, maxEntries: 4096 });
  const maps: LbMaps = {
    services: mk(MAP_NAMES.services),
    backends: mk(MAP_NAMES.backends),
    revNat: mk(MAP_NAMES.revNat),
    svcMeta: mk(MAP_NAMES.svcMeta),
    maglev: mk(MAP_NAMES.maglev),
    affinityMatch: mk(MAP_NAMES.affinityMatch),
    services6: mk(MAP_NAMES.services6),
    backends6: mk(MAP_NAMES.backends6),
  };
  const released: string[] = [];
  const rec = new LbReconciler(maps, { onIdReleased: (kind, id) => released.push(`${kind}:${id}`) });
  const fe = (service: string, address: string, backends: string[]): Frontend => ({
    service,
    portName: "http",
    type: "ClusterIP",
    address,
    port: 80,
    protocol: "TCP",
    scope: "internal",
    sessionAffinity: { type: "None" },
    algorithm: "random",
    backends: backends.map((a) => ({ address: a, port: 8080, state: "active" as const, nodeLocal: true })),
  });
  const model = (frontends: Frontend[]): NodeModel => ({
    node: "n",
    frontends,
    extras: frontends.map(() => ({ retainedBackends: [], sourceRanges: [] })),
  });
  await rec.restore();
  await rec.apply(
    model([fe("default/a", "10.96.0.1", ["10.244.0.1", "10.244.0.2"]), fe("default/b", "10.96.0.2", ["10.244.0.3"])]),
  );
  const idOf = (addr: string) => {
    const { keys, values, count } = maps.backends.entries();
    for (let i = 0; i < count; i++)
      if (values.subarray(i * 8, i * 8 + 4).join(".") === addr) return keys.readUInt32LE(i * 4);
    return -1;
  };
  const gone = idOf("10.244.0.3");
  const revB = rec.revNatIdOf(frontendName("10.96.0.2", 80, 6));
  assert.deepEqual(released, []);
  await rec.apply(model([fe("default/a", "10.96.0.1", ["10.244.0.1", "10.244.0.2"])]));
  assert.ok(gone > 0);
  assert.ok(revB !== undefined && revB > 0);
  assert.deepEqual(released.sort(), [`backend:${gone}`, `frontend:${revB}`].sort());
});

test("IPVS stats: the 64-bit nest when present, else the 32-bit one", () => {
  const attr = (type: number, data: Buffer) => {
    const len = 4 + data.length;
    const out = Buffer.alloc((len + 3) & ~3);
    out.writeUInt16LE(len, 0);
    out.writeUInt16LE(type, 2);
    data.copy(out, 4);
    return out;
  };
  const u64 = (t: number, v: bigint) => {
    const b = Buffer.alloc(8);
    b.writeBigUInt64LE(v);
    return attr(t, b);
  };
  const u32 = (t: number, v: number) => {
    const b = Buffer.alloc(4);
    b.writeUInt32LE(v);
    return attr(t, b);
  };
  // IPVS_STATS_ATTR_CONNS 1, INPKTS 2, OUTPKTS 3, INBYTES 4, OUTBYTES 5, CPS 6 (ignored)
  const s64 = Buffer.concat([
    u64(1, 5_000_000_000n),
    u64(2, 12n),
    u64(3, 10n),
    u64(4, 1234n),
    u64(5, 999n),
    u64(6, 7n),
  ]);
  const s32 = Buffer.concat([u32(1, 3), u32(2, 4), u32(3, 5), u32(4, 6), u32(5, 7)]);
  assert.deepEqual(parseIpvsStats(s64, s32), {
    conns: 5_000_000_000,
    inPkts: 12,
    outPkts: 10,
    inBytes: 1234,
    outBytes: 999,
  });
  assert.deepEqual(parseIpvsStats(undefined, s32), { conns: 3, inPkts: 4, outPkts: 5, inBytes: 6, outBytes: 7 });
  assert.deepEqual(parseIpvsStats(undefined, undefined), { conns: 0, inPkts: 0, outPkts: 0, inBytes: 0, outBytes: 0 });
});
