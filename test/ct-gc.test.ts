// The conntrack garbage collector on a real bpx_ct_v3 (bpfproxy.o loaded into a private bpffs): entries idle
// past their lifetime (read from bpx_ct_config_v1, the BPF code's rule) are deleted, fresh ones and ones whose
// state gives them a longer life are kept, an entry refreshed between the batch read and the delete is kept,
// the per-pass cap holds, and the metrics count the work. Needs root.
import assert from "node:assert/strict";
import { mkdirSync, rmSync } from "node:fs";
import { after, before, test } from "node:test";
import * as abi from "../src/dataplane/bpf/abi.js";
import { ctConfigValue } from "../src/dataplane/bpf/index.js";
import {
  ConntrackGC,
  ctExpired,
  effectiveLifetimes,
  endFlowsOfRemovedBackends,
  endFlowsOfRemovedBackends6,
} from "../src/dataplane/bpf/ct-gc.js";
import { DEFAULT_CONNTRACK } from "../src/config.js";
import { registry } from "../src/metrics.js";
import { BpfObject } from "../src/native/index.js";
import { PrivateBpffs } from "../src/lab/proxy.js";

const SEC = 1_000_000_000n;
let bpffs: PrivateBpffs | undefined;
let n = 0;

before(() => {
  if (process.getuid?.() !== 0) throw new Error("test/ct-gc.test.ts loads BPF maps: run it as root");
  bpffs = PrivateBpffs.create("ctgc");
});
after(() => bpffs?.release());

function open(): { obj: BpfObject; close: () => void } {
  const dir = `${bpffs!.path}/gc-${++n}`;
  mkdirSync(dir);
  const obj = new BpfObject("bpf/bpfproxy.o", { pinRoot: dir });
  obj.load();
  return {
    obj,
    close: () => {
      obj.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

const key = (sport: number, proto: number, dir = abi.CT_DIR_FORWARD): abi.CtKey => ({
  saddr: "10.244.1.10",
  daddr: "10.96.0.10",
  sport,
  dport: 80,
  proto,
  dir,
});

async function metric(name: string, labels: Record<string, string> = {}): Promise<number> {
  const m = (await registry.getMetricsAsJSON()).find((x) => x.name === name);
  const v = (m?.values ?? []).find((x) =>
    Object.entries(labels).every(([k, val]) => (x.labels as Record<string, unknown>)[k] === val),
  );
  return Number(v?.value ?? 0);
}

test("expired entries are deleted by the rule and lifetimes of the BPF code; fresh and longer-lived ones stay", async () => {
  const { obj, close } = open();
  try {
    const ct = obj.map(abi.MAP_NAMES.conntrack);
    const cfgMap = obj.map(abi.MAP_NAMES.ctConfig);
    cfgMap.update(
      abi.u32Key.encode(0),
      abi.ctConfig.encode(
        ctConfigValue({ ...DEFAULT_CONNTRACK, udpMs: 5_000, tcpCloseWaitMs: 90_000, tcpEstablishedMs: 100_000 }),
      ),
    );
    const now = process.hrtime.bigint();
    const put = (k: abi.CtKey, ageSec: number, flags: number) =>
      ct.update(
        abi.ctKey.encode(k),
        abi.ctEntry.encode({ lastSeenNs: now - BigInt(ageSec) * SEC, backendId: 1, revNatId: 1, flags }),
      );
    const E = abi.CT_F_SEEN_REPLY;
    const expired = [
      put(key(1, abi.IPPROTO_UDP), 6, 0), // one-way UDP past udpTimeout (5 s, from the config map)
      put(key(1, abi.IPPROTO_UDP, abi.CT_DIR_REPLY), 6, 0),
      put(key(2, abi.IPPROTO_TCP), 61, 0), // SYN_SENT past 60 s
      put(key(3, abi.IPPROTO_TCP), 11, E | abi.CT_F_CLOSING), // RST seen, past 10 s
      put(key(4, abi.IPPROTO_TCP), 121, E | abi.CT_F_FIN_FORWARD | abi.CT_F_FIN_REPLY), // TIME_WAIT past 120 s
      put(key(5, abi.IPPROTO_TCP), 91, E | abi.CT_F_FIN_REPLY), // half closed past tcpCloseWaitTimeout (90 s)
      put(key(6, abi.IPPROTO_TCP), 101, E), // established past 100 s
    ].length;
    const kept = [
      put(key(11, abi.IPPROTO_UDP), 4, 0), // within udpTimeout
      put(key(12, abi.IPPROTO_UDP), 100, E), // UDP stream within 120 s
      put(key(13, abi.IPPROTO_TCP), 89, E | abi.CT_F_FIN_FORWARD), // half closed within 90 s
      put(key(14, abi.IPPROTO_TCP), 99, E), // established within tcpEstablishedTimeout (100 s)
      put(key(15, abi.IPPROTO_TCP), 119, E | abi.CT_F_FIN_FORWARD | abi.CT_F_FIN_REPLY),
    ].length;
    const runs0 = await metric("bpfproxy_conntrack_gc_runs_total", { status: "ok" });
    const tcp0 = await metric("bpfproxy_conntrack_gc_deleted_entries_total", { proto: "tcp" });
    const udp0 = await metric("bpfproxy_conntrack_gc_deleted_entries_total", { proto: "udp" });

    const gc = new ConntrackGC({ conntrack: ct, ctConfig: cfgMap, intervalMs: 60_000, yieldEvery: 2 });
    const res = await gc.runOnce();
    assert.deepEqual(res.deleted, { tcp: 5, udp: 2 }, "deleted per protocol");
    assert.equal(res.scanned, expired + kept);
    assert.deepEqual(res.alive, { tcp: 3, udp: 2 });
    const left = ct.entries();
    const sports = new Set<number>();
    for (let i = 0; i < left.count; i++) sports.add(abi.ctKey.decode(left.keys, i * abi.ctKey.size).sport);
    assert.deepEqual(
      [...sports].sort((a, b) => a - b),
      [11, 12, 13, 14, 15],
      "exactly the live entries remain",
    );

    assert.equal(await metric("bpfproxy_conntrack_gc_runs_total", { status: "ok" }), runs0 + 1);
    assert.equal(await metric("bpfproxy_conntrack_gc_deleted_entries_total", { proto: "tcp" }), tcp0 + 5);
    assert.equal(await metric("bpfproxy_conntrack_gc_deleted_entries_total", { proto: "udp" }), udp0 + 2);
    assert.equal(await metric("bpfproxy_conntrack_gc_entries", { proto: "tcp" }), 3);
    assert.equal(await metric("bpfproxy_conntrack_gc_entries", { proto: "udp" }), 2);
    const text = await registry.metrics();
    assert.match(text, /bpfproxy_conntrack_gc_duration_seconds_count \d+/);
    assert.doesNotMatch(text, /10\.244\.1\.10/, "/metrics never shows conntrack contents");
  } finally {
    close();
  }
});

test("an entry refreshed after the batch read is re-checked and kept; the per-pass cap holds", async () => {
  const { obj, close } = open();
  try {
    const ct = obj.map(abi.MAP_NAMES.conntrack);
    const cfgMap = obj.map(abi.MAP_NAMES.ctConfig);
    const real = process.hrtime.bigint();
    for (let i = 0; i < 10; i++)
      ct.update(
        abi.ctKey.encode(key(100 + i, abi.IPPROTO_UDP)),
        abi.ctEntry.encode({ lastSeenNs: real - 40n * SEC, backendId: 1, revNatId: 1, flags: 0 }),
      );
    // The clock the GC reads: the first call (during the batch decode) "refreshes" sport 100 as a packet would.
    let calls = 0;
    const gc = new ConntrackGC({
      conntrack: ct,
      ctConfig: cfgMap,
      intervalMs: 60_000,
      maxDeletesPerPass: 4,
      now: () => {
        if (calls++ === 0)
          ct.update(
            abi.ctKey.encode(key(100, abi.IPPROTO_UDP)),
            abi.ctEntry.encode({ lastSeenNs: process.hrtime.bigint(), backendId: 1, revNatId: 1, flags: 0 }),
          );
        return process.hrtime.bigint();
      },
    });
    const first = await gc.runOnce();
    assert.equal(first.deleted.udp, 4, "cap of 4 per pass");
    assert.equal(first.capped, true);
    assert.ok(ct.lookup(abi.ctKey.encode(key(100, abi.IPPROTO_UDP))), "the refreshed entry was kept");
    const second = await gc.runOnce();
    assert.equal(second.deleted.udp, 4);
    const third = await gc.runOnce();
    assert.equal(third.deleted.udp, 1, "the rest");
    assert.equal(ct.entries().count, 1, "only the refreshed entry is left");
  } finally {
    close();
  }
});

test("the TypeScript rule matches the C defaults for zero config fields", () => {
  const l = effectiveLifetimes(undefined);
  const now = 1_000_000n * SEC;
  assert.equal(ctExpired(now - 31n * SEC, 0, abi.IPPROTO_UDP, now, l), true, "udp 30 s");
  assert.equal(ctExpired(now - 29n * SEC, 0, abi.IPPROTO_UDP, now, l), false);
  assert.equal(
    ctExpired(now - 3599n * SEC, abi.CT_F_SEEN_REPLY | abi.CT_F_FIN_FORWARD, abi.IPPROTO_TCP, now, l),
    false,
  );
  assert.equal(ctExpired(now - 86_401n * SEC, abi.CT_F_SEEN_REPLY, abi.IPPROTO_TCP, now, l), true, "24 h");
  // A last_seen_ns after `now` (a packet stamped it after the clock was read) is not expired, as in C.
  assert.equal(ctExpired(now + SEC, 0, abi.IPPROTO_UDP, now, l), false, "signed age");
});

test("a flow's two entries are collected together: both when both are idle, neither while one is fresh", async () => {
  const { obj, close } = open();
  try {
    const ct = obj.map(abi.MAP_NAMES.conntrack);
    const now = process.hrtime.bigint();
    const fwd = (sport: number): abi.CtKey => ({
      saddr: "10.244.1.10",
      daddr: "10.96.0.10",
      sport,
      dport: 53,
      proto: abi.IPPROTO_UDP,
      dir: abi.CT_DIR_FORWARD,
    });
    const rep = (sport: number): abi.CtKey => ({
      saddr: "10.244.2.20",
      daddr: "10.244.1.10",
      sport: 5353,
      dport: sport,
      proto: abi.IPPROTO_UDP,
      dir: abi.CT_DIR_REPLY,
    });
    const put = (k: abi.CtKey, ageSec: number) =>
      ct.update(
        abi.ctKey.encode(k),
        abi.ctEntry.encode({ lastSeenNs: now - BigInt(ageSec) * SEC, backendId: 7, revNatId: 3, flags: 0 }),
      );
    // Flow 1: both idle past udpTimeout (30 s). Flow 2: forward idle, reply fresh (a push-only backend).
    // Flow 3: reply idle, forward fresh (a push-only client).
    put(fwd(1), 40);
    put(rep(1), 40);
    put(fwd(2), 40);
    put(rep(2), 1);
    put(fwd(3), 1);
    put(rep(3), 40);
    const gc = new ConntrackGC({ conntrack: ct, ctConfig: obj.map(abi.MAP_NAMES.ctConfig), intervalMs: 60_000 });
    const res = await gc.runOnce();
    assert.equal(res.deleted.udp, 2, "flow 1's two entries");
    const has = (k: abi.CtKey) => ct.lookup(abi.ctKey.encode(k)) !== null;
    assert.ok(!has(fwd(1)) && !has(rep(1)), "flow 1 gone (both entries)");
    assert.ok(has(fwd(2)) && has(rep(2)), "flow 2 kept whole: its reply entry is fresh");
    assert.ok(has(fwd(3)) && has(rep(3)), "flow 3 kept whole: its forward entry is fresh");
  } finally {
    close();
  }
});

test("NAT entries are collected with their flow: gone with its conntrack entry, kept while it lives", async () => {
  const { obj, close } = open();
  try {
    const ct = obj.map(abi.MAP_NAMES.conntrack);
    const nat = obj.map(abi.MAP_NAMES.nat);
    const now = process.hrtime.bigint();
    const NODE = "192.0.2.11";
    const BE = "10.244.2.20";
    const flow = (client: string, port: number, ctAgeSec: number | undefined, natAgeSec = 10) => {
      if (ctAgeSec !== undefined)
        ct.update(
          abi.ctKey.encode({ saddr: client, daddr: NODE, sport: 40000, dport: 30053, proto: abi.IPPROTO_UDP, dir: 0 }),
          abi.ctEntry.encode({ lastSeenNs: now - BigInt(ctAgeSec) * SEC, backendId: 2, revNatId: 2, flags: 1 }),
        );
      const lastSeenNs = now - BigInt(natAgeSec) * SEC;
      const common = {
        lastSeenNs,
        frontendAddr: NODE,
        frontendPort: 30053,
        backendId: 2,
        flags: abi.NAT_E_MASQUERADED,
      };
      nat.update(
        abi.natKey.encode({ saddr: client, daddr: NODE, sport: 40000, dport: 30053, proto: abi.IPPROTO_UDP, dir: 0 }),
        abi.natEntry.encode({ ...common, addr: NODE, port }),
      );
      nat.update(
        abi.natKey.encode({ saddr: BE, daddr: NODE, sport: 5353, dport: port, proto: abi.IPPROTO_UDP, dir: 1 }),
        abi.natEntry.encode({ ...common, addr: client, port: 40000 }),
      );
    };
    flow("198.51.100.10", 2000, 1); // live stream
    flow("198.51.100.11", 2001, 121); // stream idle past 120 s: conntrack and NAT go
    flow("198.51.100.12", 2002, undefined); // no conntrack at all (lost): NAT goes
    flow("198.51.100.13", 2003, undefined, 1); // just created, conntrack not written yet: kept (grace)
    const gc = new ConntrackGC({
      conntrack: ct,
      nat,
      ctConfig: obj.map(abi.MAP_NAMES.ctConfig),
      intervalMs: 60_000,
    });
    const before = await metric("bpfproxy_snat_gc_deleted_entries_total");
    const res = await gc.runOnce();
    assert.equal(res.natDeleted, 4, "two flows' forward and reply NAT entries");
    assert.equal(nat.entries().count, 4, "the live flow's and the new flow's entries stay");
    const natHas = (port: number) =>
      nat.lookup(
        abi.natKey.encode({ saddr: BE, daddr: NODE, sport: 5353, dport: port, proto: abi.IPPROTO_UDP, dir: 1 }),
      ) !== null;
    assert.ok(natHas(2000) && natHas(2003) && !natHas(2001) && !natHas(2002));
    assert.equal((await metric("bpfproxy_snat_gc_deleted_entries_total")) - before, 4, "metric");
  } finally {
    close();
  }
});

test("a masqueraded flow's third NAT entry (the stack path's backend -> client key) lives and goes with its flow", async () => {
  const { obj, close } = open();
  try {
    const ct = obj.map(abi.MAP_NAMES.conntrack);
    const nat = obj.map(abi.MAP_NAMES.nat);
    const now = process.hrtime.bigint();
    const NODE = "192.0.2.11";
    const BE = "10.244.2.20";
    const P = abi.IPPROTO_UDP;
    const common = { lastSeenNs: now - 10n * SEC, frontendAddr: NODE, frontendPort: 30053, backendId: 2 };
    const M = abi.NAT_E_MASQUERADED;
    const stackKey = (client: string) =>
      abi.natKey.encode({ saddr: BE, daddr: client, sport: 5353, dport: 40000, proto: P, dir: 1 });
    // nat_create's three entries: forward (client -> frontend), reply (backend -> node:port), stack (backend -> client).
    const flow = (client: string, port: number, ctAgeSec: number | undefined) => {
      if (ctAgeSec !== undefined)
        ct.update(
          abi.ctKey.encode({ saddr: client, daddr: NODE, sport: 40000, dport: 30053, proto: P, dir: 0 }),
          abi.ctEntry.encode({ lastSeenNs: now - BigInt(ctAgeSec) * SEC, backendId: 2, revNatId: 2, flags: 1 }),
        );
      nat.update(
        abi.natKey.encode({ saddr: client, daddr: NODE, sport: 40000, dport: 30053, proto: P, dir: 0 }),
        abi.natEntry.encode({ ...common, flags: M, addr: NODE, port }),
      );
      nat.update(
        abi.natKey.encode({ saddr: BE, daddr: NODE, sport: 5353, dport: port, proto: P, dir: 1 }),
        abi.natEntry.encode({ ...common, flags: M, addr: client, port: 40000 }),
      );
      nat.update(stackKey(client), abi.natEntry.encode({ ...common, flags: M, addr: client, port: 40000 }));
    };
    flow("198.51.100.20", 3000, 1); // live: all three stay
    flow("198.51.100.21", 3001, 121); // idle past udp_stream: all three go
    // Port 3002 now belongs to .23 (its reply entry names .23), while .22's forward and conntrack entries still
    // name it: .22's stack entry fails the owner check both ways and goes, as BPF would refuse to use it.
    flow("198.51.100.22", 3002, 1);
    flow("198.51.100.23", 3002, 1);
    const gc = new ConntrackGC({ conntrack: ct, nat, ctConfig: obj.map(abi.MAP_NAMES.ctConfig), intervalMs: 60_000 });
    const res = await gc.runOnce();
    const has = (k: Buffer) => nat.lookup(k) !== null;
    assert.ok(has(stackKey("198.51.100.20")), "the live flow's stack entry stays (it is not a stale reply entry)");
    assert.ok(!has(stackKey("198.51.100.21")), "the gone flow's stack entry goes with it");
    assert.ok(!has(stackKey("198.51.100.22")), "a stack entry whose port another client holds goes");
    assert.ok(has(stackKey("198.51.100.23")), "the port's owner keeps its stack entry");
    assert.equal(res.natDeleted, 4, "the gone flow's three entries and the displaced client's stack entry");
    assert.equal(nat.entries().count, 7);
  } finally {
    close();
  }
});

test("the flows of removed backends are ended: forward entries naming a removed backend lose its address, nothing else changes", async () => {
  const { obj, close } = open();
  try {
    const ct = obj.map(abi.MAP_NAMES.conntrack);
    const backends = obj.map(abi.MAP_NAMES.backends);
    const now = process.hrtime.bigint();
    const entry = (backendId: number, backendAddr: string): abi.CtEntry => ({
      lastSeenNs: now,
      backendId,
      revNatId: 1,
      flags: abi.CT_F_SEEN_REPLY,
      backendAddr,
      backendPort: 8080,
    });
    // Backend 1 is gone; backend 2's id was given to another address since its flow started; backend 3's
    // id is reused for the same address and port (the same backend, its flow keeps it); backend 4 is not removed.
    backends.update(
      abi.u32Key.encode(2),
      abi.backend.encode({ address: "10.244.9.9", port: 8080, proto: 6, flags: 0 }),
    );
    backends.update(
      abi.u32Key.encode(3),
      abi.backend.encode({ address: "10.244.1.3", port: 8080, proto: 6, flags: 0 }),
    );
    ct.update(abi.ctKey.encode(key(1001, abi.IPPROTO_TCP)), abi.ctEntry.encode(entry(1, "10.244.1.1")));
    ct.update(abi.ctKey.encode(key(1002, abi.IPPROTO_TCP)), abi.ctEntry.encode(entry(2, "10.244.1.2")));
    ct.update(abi.ctKey.encode(key(1003, abi.IPPROTO_TCP)), abi.ctEntry.encode(entry(3, "10.244.1.3")));
    ct.update(abi.ctKey.encode(key(1004, abi.IPPROTO_TCP)), abi.ctEntry.encode(entry(4, "10.244.1.4")));
    const reply = key(1001, abi.IPPROTO_TCP, abi.CT_DIR_REPLY);
    ct.update(abi.ctKey.encode(reply), abi.ctEntry.encode(entry(1, "10.244.1.1")));

    assert.equal(await endFlowsOfRemovedBackends(ct, backends, new Set([1, 2, 3])), 2);
    const at = (k: abi.CtKey) => abi.ctEntry.decode(ct.lookup(abi.ctKey.encode(k))!);
    assert.equal(at(key(1001, abi.IPPROTO_TCP)).backendAddr, "0.0.0.0", "removed backend: ended");
    assert.equal(at(key(1002, abi.IPPROTO_TCP)).backendAddr, "0.0.0.0", "id reused for another address: ended");
    assert.equal(at(key(1003, abi.IPPROTO_TCP)).backendAddr, "10.244.1.3", "id reused for the same backend: kept");
    assert.equal(at(key(1004, abi.IPPROTO_TCP)).backendAddr, "10.244.1.4", "backend not removed: kept");
    assert.equal(at(reply).backendAddr, "10.244.1.1", "reply entries are left as they are");
    const ended = at(key(1001, abi.IPPROTO_TCP));
    assert.deepEqual(
      { ...ended, backendAddr: "10.244.1.1", backendPort: 8080 },
      { ...entry(1, "10.244.1.1"), nextSeq: 0, xflags: 0, srcIfindex: 0 },
      "only the address and port changed",
    );
  } finally {
    close();
  }
});

test("IPv6: NAT entries (bpx_snat6_v1) are collected with their flow, and a reply entry its client's newer flow displaced goes", async () => {
  const { obj, close } = open();
  try {
    const ct6 = obj.map(abi.MAP_NAMES.conntrack6);
    const nat6 = obj.map(abi.MAP_NAMES.nat6);
    const now = process.hrtime.bigint();
    const NODE = "2001:db8::11";
    const FE = "2001:db8::11"; // a NodePort on the node's own address
    const BE = "fd00:10:244:2::20";
    const P = abi.IPPROTO_TCP;
    // nat6_create's two entries (bpf/lib/nat6.h): forward keyed client -> backend (as the stack forwards it), reply
    // keyed backend -> node address and the allocated port; the flow's conntrack forward entry is client -> frontend.
    const fwdKey = (client: string) =>
      abi.ct6Key.encode({ saddr: client, daddr: BE, sport: 40000, dport: 8080, proto: P, dir: abi.CT_DIR_FORWARD });
    const replyKey = (port: number) =>
      abi.ct6Key.encode({ saddr: BE, daddr: NODE, sport: 8080, dport: port, proto: P, dir: abi.CT_DIR_REPLY });
    const common = (natAgeSec: number) => ({
      lastSeenNs: now - BigInt(natAgeSec) * SEC,
      frontendAddr: FE,
      frontendPort: 30080,
      backendId: 4,
    });
    const flow = (client: string, port: number, ct: "live" | "none" | "other-backend", natAgeSec = 10) => {
      if (ct !== "none")
        ct6.update(
          abi.ct6Key.encode({
            saddr: client,
            daddr: FE,
            sport: 40000,
            dport: 30080,
            proto: P,
            dir: abi.CT_DIR_FORWARD,
          }),
          abi.ct6Entry.encode({
            lastSeenNs: now - SEC,
            backendId: ct === "live" ? 4 : 5,
            revNatId: 2,
            flags: abi.CT_F_SEEN_REPLY,
            addr: BE,
            port: 8080,
          }),
        );
      nat6.update(fwdKey(client), abi.nat6Entry.encode({ ...common(natAgeSec), addr: NODE, port }));
      nat6.update(replyKey(port), abi.nat6Entry.encode({ ...common(natAgeSec), addr: client, port: 40000 }));
    };
    flow("2001:db8:1::10", 2000, "live");
    flow("2001:db8:1::11", 2001, "none"); // its conntrack entries are gone: both NAT entries go
    flow("2001:db8:1::12", 2002, "other-backend"); // the 4-tuple now names another backend: both go
    flow("2001:db8:1::13", 2003, "none", 1); // just created, conntrack not written yet: kept (grace)
    // A reply entry for the live client on another port: its forward entry names 2000, so this one was left behind.
    nat6.update(replyKey(2004), abi.nat6Entry.encode({ ...common(10), addr: "2001:db8:1::10", port: 40000 }));
    const gc = new ConntrackGC({
      conntrack: obj.map(abi.MAP_NAMES.conntrack),
      conntrack6: ct6,
      nat6,
      ctConfig: obj.map(abi.MAP_NAMES.ctConfig),
      intervalMs: 60_000,
    });
    const before = await metric("bpfproxy_snat_gc_deleted_entries_total");
    const res = await gc.runOnce();
    const has = (k: Buffer) => nat6.lookup(k) !== null;
    assert.ok(has(fwdKey("2001:db8:1::10")) && has(replyKey(2000)), "the live flow keeps both entries");
    assert.ok(has(fwdKey("2001:db8:1::13")) && has(replyKey(2003)), "a flow in its grace keeps both entries");
    for (const c of ["2001:db8:1::11", "2001:db8:1::12"]) assert.ok(!has(fwdKey(c)), `${c}: forward entry deleted`);
    for (const p of [2001, 2002, 2004]) assert.ok(!has(replyKey(p)), `reply entry of port ${p} deleted`);
    assert.equal(res.natDeleted, 5);
    assert.equal(nat6.entries().count, 4);
    assert.equal((await metric("bpfproxy_snat_gc_deleted_entries_total")) - before, 5, "metric");
  } finally {
    close();
  }
});

test("IPv6: bpx_ct6_v1 is collected by the same rules, a flow's two entries together", async () => {
  const { obj, close } = open();
  try {
    const ct6 = obj.map(abi.MAP_NAMES.conntrack6);
    obj
      .map(abi.MAP_NAMES.ctConfig)
      .update(abi.u32Key.encode(0), abi.ctConfig.encode(ctConfigValue({ ...DEFAULT_CONNTRACK, udpMs: 5_000 })));
    const now = process.hrtime.bigint();
    const client = "fd00:10:244:1::10";
    const be = "fd00:10:244:2::10";
    // A flow's forward key (client -> frontend) and reply key (backend -> client), as ct6_create writes them.
    const flow = (sport: number, proto: number, fwdAge: number, replyAge: number, flags = 0) => {
      const fwd = { saddr: client, daddr: "fd00:96::50", sport, dport: 80, proto, dir: abi.CT_DIR_FORWARD };
      const rep = { saddr: be, daddr: client, sport: 8080, dport: sport, proto, dir: abi.CT_DIR_REPLY };
      const e = (age: number, addr: string, port: number) =>
        abi.ct6Entry.encode({ lastSeenNs: now - BigInt(age) * SEC, backendId: 7, revNatId: 3, flags, addr, port });
      ct6.update(abi.ct6Key.encode(fwd), e(fwdAge, be, 8080));
      ct6.update(abi.ct6Key.encode(rep), e(replyAge, "fd00:96::50", 80));
      return [abi.ct6Key.encode(fwd), abi.ct6Key.encode(rep)];
    };
    const expired = flow(1, abi.IPPROTO_UDP, 6, 6); // one-way UDP past 5 s
    const fresh = flow(2, abi.IPPROTO_UDP, 1, 1);
    const half = flow(3, abi.IPPROTO_UDP, 6, 1); // its reply is fresh: the flow lives
    const synSent = flow(4, abi.IPPROTO_TCP, 61, 61); // SYN_SENT past 60 s
    const established = flow(5, abi.IPPROTO_TCP, 61, 61, abi.CT_F_SEEN_REPLY); // established lives 24 h
    const gc = new ConntrackGC({
      conntrack: obj.map(abi.MAP_NAMES.conntrack),
      conntrack6: ct6,
      ctConfig: obj.map(abi.MAP_NAMES.ctConfig),
      intervalMs: 60_000,
    });
    const res = await gc.runOnce();
    for (const k of [...expired, ...synSent]) assert.equal(ct6.lookup(k), null, "expired pair deleted");
    for (const k of [...fresh, ...half, ...established]) assert.notEqual(ct6.lookup(k), null, "live pair kept");
    assert.deepEqual(res.deleted, { tcp: 2, udp: 2 });
    assert.equal(res.scanned, 10);
  } finally {
    close();
  }
});

test("IPv6: the flows of a removed backend lose both entries; an id given to the same address again keeps them", async () => {
  const { obj, close } = open();
  try {
    const ct6 = obj.map(abi.MAP_NAMES.conntrack6);
    const backends6 = obj.map(abi.MAP_NAMES.backends6);
    const now = process.hrtime.bigint();
    const flow = (sport: number, backendId: number, be: string) => {
      const fwd = {
        saddr: "fd00:10:244:1::10",
        daddr: "fd00:96::50",
        sport,
        dport: 80,
        proto: 6,
        dir: abi.CT_DIR_FORWARD,
      };
      const rep = { saddr: be, daddr: fwd.saddr, sport: 8080, dport: sport, proto: 6, dir: abi.CT_DIR_REPLY };
      const e = (addr: string, port: number) =>
        abi.ct6Entry.encode({ lastSeenNs: now, backendId, revNatId: 3, flags: abi.CT_F_SEEN_REPLY, addr, port });
      ct6.update(abi.ct6Key.encode(fwd), e(be, 8080));
      ct6.update(abi.ct6Key.encode(rep), e("fd00:96::50", 80));
      return [abi.ct6Key.encode(fwd), abi.ct6Key.encode(rep)];
    };
    const gone = flow(1, 7, "fd00:10:244:2::10"); // backend 7's entry is deleted
    const same = flow(2, 8, "fd00:10:244:2::11"); // id 8 released and given to the same backend again
    const other = flow(3, 9, "fd00:10:244:2::12"); // not released
    backends6.update(
      abi.u32Key.encode(8),
      abi.backend6.encode({ address: "fd00:10:244:2::11", port: 8080, proto: 6, flags: 0 }),
    );
    const ended = await endFlowsOfRemovedBackends6(ct6, backends6, new Set([7, 8]));
    assert.equal(ended, 1);
    for (const k of gone) assert.equal(ct6.lookup(k), null);
    for (const k of [...same, ...other]) assert.notEqual(ct6.lookup(k), null);
  } finally {
    close();
  }
});
