// End to end, IPv6 (issue 17, first path): a pod reaches an IPv6 ClusterIP over real TCP and UDP through the
// IPv6 program the tc entries tail-call (bpf/lib/datapath6.h). The daemon runs on node-a of a dual-stack lab
// and fills the tail-call slots at start; this test writes the frontend into the daemon's pinned IPv6 maps with
// the IPv6 encoder (src/dataplane/bpf/lb6.ts), so the path is tested apart from the reconciler (the daemon
// serving IPv6 Services from objects: test/e2e-ipv6-daemon.test.ts; its manifest has no such Service, and only
// a full sync, hourly, would compare these keys). One
// backend is a pod on node-a (its replies come back through bpx_from_pod), one on node-b, which runs no
// bpfproxy (its replies come back to node-a through eth0 and bpx_from_device). Everything lives in namespaces
// the lab makes and removes; every wait is bounded.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Lab } from "../src/lab/netns.js";
import { echoRequest, startEchoServer } from "../src/lab/index.js";
import { PrivateBpffs, ProxyNode } from "../src/lab/proxy.js";
import { BpfMap } from "../src/native/index.js";
import { MAP_NAMES, nat6Config, u32Key } from "../src/dataplane/bpf/abi.js";
import { encodeFrontend6, writeLb6, type Lb6Contents } from "../src/dataplane/bpf/lb6.js";
import { BitCollector } from "../src/dataplane/bpf/prefilter.js";
import type { Frontend } from "../src/model/types.js";
import { manifest, node } from "./fixtures/k8s-objects.js";

assert.equal(process.getuid?.(), 0, "end-to-end tests build namespaces and load BPF: run them as root");

const VIP = "fd00:96::50";
const CLIENT6 = "fd00:10:244:1::10";
const LOCAL_BE = "fd00:10:244:1::11";
const REMOTE_BE = "fd00:10:244:2::10";
/** A frontend without endpoints: rejected as IPv4's (TCP RST, ICMPv6 port unreachable). */
const EMPTY_VIP = "fd00:96::60";
/** A Service whose only endpoint is web-a: web-a reaching it reaches itself (hairpin, masqueraded). */
const SELF_VIP = "fd00:96::70";
const NODE_A6 = "2001:db8::a";

function frontend(protocol: "TCP" | "UDP", port: number, targetPort: number): Frontend {
  return {
    service: "default/web6",
    portName: protocol === "TCP" ? "http" : "dns",
    type: "ClusterIP",
    address: VIP,
    port,
    protocol,
    scope: "internal",
    sessionAffinity: { type: "None" },
    algorithm: "random",
    backends: [LOCAL_BE, REMOTE_BE].map((address) => ({
      address,
      port: targetPort,
      state: "active" as const,
      nodeLocal: address === LOCAL_BE,
    })),
  };
}

describe("IPv6 ClusterIP from a pod through the tail-called IPv6 program", { timeout: 120_000 }, () => {
  let lab: Lab;
  let dir: string;
  let bpffs: PrivateBpffs;
  let proxy: ProxyNode | undefined;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "bpfproxy-ipv6-"));
    writeFileSync(join(dir, "services.yaml"), manifest([node("node-a", "192.0.2.11")]));
    lab = await Lab.create({
      prefix: `bpx6e${process.pid}-`,
      nodes: [
        {
          name: "node-a",
          ip: "192.0.2.11",
          podCIDR: "10.244.1.0/24",
          ip6: "2001:db8::a",
          podCIDR6: "fd00:10:244:1::/64",
          pods: [
            { name: "client", ip: "10.244.1.10", ip6: CLIENT6 },
            { name: "web-a", ip: "10.244.1.11", ip6: LOCAL_BE },
          ],
        },
        {
          name: "node-b",
          ip: "192.0.2.12",
          podCIDR: "10.244.2.0/24",
          ip6: "2001:db8::b",
          podCIDR6: "fd00:10:244:2::/64",
          pods: [{ name: "web-b", ip: "10.244.2.10", ip6: REMOTE_BE }],
        },
      ],
    });
    await startEchoServer(lab, "web-a", { name: "web-a", tcp: [8080], udp: [5353], bind: "::" });
    await startEchoServer(lab, "web-b", { name: "web-b", tcp: [8080], udp: [5353], bind: "::" });
    bpffs = PrivateBpffs.create("ipv6-a");
    proxy = await ProxyNode.start(lab, "node-a", { manifestDir: dir, bpffs: bpffs.path, devices: ["eth0"] });
    await proxy.waitForStatus((s) => s.attachments.filter((a) => a.hook === "tc-ingress").length >= 3, 10_000);
    // The daemon wrote the node's IPv6 address as the IPv6 masquerade source (nat6.ts), beside the IPv4 one.
    const n6 = BpfMap.openPinned(join(bpffs.path, MAP_NAMES.nat6Config));
    try {
      assert.equal(nat6Config.decode(n6.lookup(u32Key.encode(0))!).masqAddr, NODE_A6);
    } finally {
      n6.close();
    }
    // Written apart from the reconciler: the IPv6 pre-filter (bpx_prefilter6_v1, ready after the daemon's first
    // sync) must cover these entries too, as the daemon's own Prefilter does for what it writes.
    const written: Lb6Contents[] = [];
    const put = (maps: Parameters<typeof writeLb6>[0], c: Lb6Contents) => {
      writeLb6(maps, c);
      written.push(c);
    };
    const services6 = BpfMap.openPinned(join(bpffs.path, MAP_NAMES.services6));
    const backends6 = BpfMap.openPinned(join(bpffs.path, MAP_NAMES.backends6));
    try {
      put(
        { services6, backends6 },
        encodeFrontend6(frontend("TCP", 80, 8080), { revNatId: 900, backendIds: [901, 902] }),
      );
      put(
        { services6, backends6 },
        encodeFrontend6(frontend("UDP", 53, 5353), { revNatId: 910, backendIds: [911, 912] }),
      );
      for (const [protocol, revNatId] of [
        ["TCP", 920],
        ["UDP", 930],
      ] as const) {
        const fe = { ...frontend(protocol, protocol === "TCP" ? 80 : 53, 0), address: EMPTY_VIP, backends: [] };
        put({ services6, backends6 }, encodeFrontend6(fe, { revNatId, backendIds: [] }));
      }
      for (const [protocol, port, targetPort, revNatId] of [
        ["TCP", 80, 8080, 940],
        ["UDP", 53, 5353, 950],
      ] as const) {
        const fe = {
          ...frontend(protocol, port, targetPort),
          address: SELF_VIP,
          backends: [{ address: LOCAL_BE, port: targetPort, state: "active" as const, nodeLocal: true }],
        };
        put({ services6, backends6 }, encodeFrontend6(fe, { revNatId, backendIds: [revNatId + 1] }));
      }
    } finally {
      services6.close();
      backends6.close();
    }
    const col = new BitCollector();
    for (const c of written) {
      for (const k of c.services.keys()) col.service6(Buffer.from(k, "latin1"));
      for (const v of c.backends.values()) col.backend6(Buffer.from(v, "latin1"));
    }
    const pf6 = BpfMap.openPinned(join(bpffs.path, MAP_NAMES.prefilter6));
    try {
      for (const b of col.take().bits6!) {
        const key = u32Key.encode(b >>> 6);
        const word = pf6.lookup(key)?.readBigUInt64LE(0) ?? 0n;
        const out = Buffer.alloc(8);
        out.writeBigUInt64LE(word | (1n << BigInt(b & 63)));
        pf6.update(key, out);
      }
    } finally {
      pf6.close();
    }
  });

  after(async () => {
    await proxy?.stop().catch(() => undefined);
    await proxy?.cleanup().catch(() => undefined);
    await lab?.destroy();
    bpffs?.release();
    rmSync(dir, { recursive: true, force: true });
  });

  for (const [proto, port] of [
    ["tcp", 80],
    ["udp", 53],
  ] as const) {
    test(`${proto}: [${VIP}]:${port} answers 20 of 20 from both backends, which see the client's own address`, async () => {
      const before = (await proxy!.status()).counters;
      const r = await echoRequest(lab, "client", { [proto]: `[${VIP}]:${port}`, count: 20, timeoutMs: 2000 });
      const failed = r.filter((x) => !x.ok || !/^web-[ab] \[fd00:10:244:1::10\]:\d+/.test(x.reply ?? ""));
      const counted = async () => {
        const now = (await proxy!.status()).counters;
        return Object.entries(now)
          .map(([k, v]) => [k, (v?.packets ?? 0) - (before[k]?.packets ?? 0)] as const)
          .filter(([, n]) => n > 0)
          .map(([k, n]) => `${k}=${n}`)
          .join(" ");
      };
      assert.deepEqual(failed, [], `${failed.length}/20 failed; counted: ${await counted()}`);
      const names = new Set(r.map((x) => x.reply!.split(" ")[0]));
      assert.deepEqual([...names].sort(), ["web-a", "web-b"], "both backends answered (2^-19 to fail by chance)");
      const after = (await proxy!.status()).counters;
      const delta = (k: string) => (after[k]?.packets ?? 0) - (before[k]?.packets ?? 0);
      assert.ok(delta("translated_new") >= 20, `new flows translated (${delta("translated_new")})`);
      assert.ok(delta("reverse_translated") >= 20, `replies reverse-translated (${delta("reverse_translated")})`);
    });
  }

  test(`a Service without endpoints refuses over IPv6: TCP by RST, UDP by ICMPv6 port unreachable (ECONNREFUSED both)`, async () => {
    const before = (await proxy!.status()).counters;
    const tcp = await echoRequest(lab, "client", { tcp: `[${EMPTY_VIP}]:80`, count: 1, timeoutMs: 2000 });
    assert.equal(tcp[0]?.error, "ECONNREFUSED", `TCP: ${JSON.stringify(tcp)}`);
    const udp = await echoRequest(lab, "client", { udp: `[${EMPTY_VIP}]:53`, count: 1, timeoutMs: 2000 });
    assert.equal(udp[0]?.error, "ECONNREFUSED", `UDP: ${JSON.stringify(udp)}`);
    const after = (await proxy!.status()).counters;
    const sent = (after.reject_no_backend?.packets ?? 0) - (before.reject_no_backend?.packets ?? 0);
    assert.ok(sent >= 2, `rejects counted (${sent})`);
  });

  for (const [proto, port] of [
    ["tcp", 80],
    ["udp", 53],
  ] as const) {
    test(`hairpin, ${proto}: a pod reaches itself through its Service's IPv6 ClusterIP, masqueraded to the node's IPv6 address`, async () => {
      const before = (await proxy!.status()).counters;
      const r = await echoRequest(lab, "web-a", { [proto]: `[${SELF_VIP}]:${port}`, count: 5, timeoutMs: 2000 });
      const bad = r.filter((x) => !x.ok || !x.reply?.startsWith(`web-a [${NODE_A6}]:`));
      const now = (await proxy!.status()).counters;
      const counted = Object.entries(now)
        .map(([k, v]) => [k, (v?.packets ?? 0) - (before[k]?.packets ?? 0)] as const)
        .filter(([, n]) => n > 0)
        .map(([k, n]) => `${k}=${n}`)
        .join(" ");
      assert.deepEqual(bad, [], `5 of 5 answered by web-a itself, seeing ${NODE_A6}: ${JSON.stringify(r)}; ${counted}`);
    });
  }
});
