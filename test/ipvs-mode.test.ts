// Mode selection, IPVS settings, and the IPVS data plane's sync against a fake kernel (this machine's kernel
// has no IPVS: the data plane with real traffic is tested inside a VM, test/vm-ipvs.test.ts), plus the
// node addresses NodePorts are served on (a network namespace of its own).
import { test } from "node:test";
import assert from "node:assert/strict";
import { chooseMode, DISABLE_BPF_ENV, probeBpf } from "../src/dataplane/probe.js";
import { parseConfigText } from "../src/config.js";
import { ipv6ToBytes } from "../src/k8s/ip.js";
import { existsSync, mkdtempSync, rmSync, statSync, watch, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { basename, dirname, join, resolve } from "node:path";
import {
  dummyAddresses,
  IpvsDataplane,
  nftRuleset,
  readState,
  runCommand,
  type IpvsHost,
} from "../src/dataplane/ipvs/index.js";
import * as nl from "../src/dataplane/ipvs/netlink.js";
import type { Frontend, FrontendExtras, NodeModel } from "../src/model/types.js";
import { buildNodeModel, ModelCache } from "../src/model/index.js";
import { Lab } from "../src/lab/netns.js";
import { ep, node, slice, svc } from "./model-helpers.js";

const HEADER = "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\n";

test("auto picks bpf on this kernel: every program type, map type and helper probes as present", () => {
  const p = probeBpf();
  assert.deepEqual(p.missing, []);
  const c = chooseMode("auto");
  assert.equal(c.mode, "bpf");
  assert.match(c.reason, /auto/);
});

test(`auto picks ipvs when BPF is made unavailable (${DISABLE_BPF_ENV}=1), naming why`, () => {
  process.env[DISABLE_BPF_ENV] = "1";
  try {
    const c = chooseMode("auto");
    assert.equal(c.mode, "ipvs");
    assert.match(c.reason, new RegExp(DISABLE_BPF_ENV));
  } finally {
    delete process.env[DISABLE_BPF_ENV];
  }
});

test("auto picks ipvs and lists what is missing when a probe says no", () => {
  const c = chooseMode("auto", () => ({ ok: false, missing: ["helper bpf_csum_diff in tc programs"] }));
  assert.equal(c.mode, "ipvs");
  assert.match(c.reason, /bpf_csum_diff/);
});

test("an explicit mode is used as given", () => {
  assert.equal(
    chooseMode("ipvs", () => {
      throw new Error("must not probe");
    }).mode,
    "ipvs",
  );
  assert.equal(
    chooseMode("bpf", () => {
      throw new Error("must not probe");
    }).mode,
    "bpf",
  );
});

test("kube-proxy's ipvs.* fields map to the IPVS data plane's settings", () => {
  const { config, warnings } = parseConfigText(`${HEADER}mode: ipvs
ipvs:
  scheduler: lc
  strictARP: true
  tcpTimeout: 900s
  tcpFinTimeout: 30s
  udpTimeout: 10s
  excludeCIDRs: ["10.200.0.0/16"]
`);
  assert.equal(config.mode, "ipvs");
  assert.equal(config.ipvsScheduler, "lc");
  assert.equal(config.ipvsStrictARP, true);
  assert.deepEqual(config.ipvsTimeouts, { tcp: 900, tcpFin: 30, udp: 10 });
  assert.deepEqual(config.ipvsExcludeCIDRs, ["10.200.0.0/16"]);
  assert.deepEqual(
    warnings.filter((w) => w.includes("ipvs")),
    [],
  );
});

test("a bad ipvs.excludeCIDRs entry or an unknown scheduler is refused, naming the field", () => {
  assert.throws(() => parseConfigText(`${HEADER}ipvs:\n  excludeCIDRs: ["nope"]\n`), /ipvs\.excludeCIDRs/);
  const base = { bpffs: "/x", devices: [], podInterfaces: [], clusterCIDRs: [], nodeName: "n" };
  assert.throws(() => new IpvsDataplane({ ...base, scheduler: "fifo" }), /ipvs\.scheduler/);
  for (const s of ["", "rr", "wrr", "lc", "wlc", "sh", "dh", "sed", "nq", "mh"])
    assert.doesNotThrow(() => new IpvsDataplane({ ...base, scheduler: s }));
});

// ---- the IPVS data plane's sync against a fake kernel (IPVS table, `ip`, `nft`) -------------------------

type Vs = nl.VirtualServer;
type Rs = nl.RealServer;
const key = (v: Pick<Vs, "protocol" | "address" | "port">) => `${v.protocol}|${v.address}|${v.port}`;

/** An in-memory IPVS table and kube-ipvs0, with the commands the data plane runs recorded. */
function fakeHost() {
  const table = new Map<string, { vs: Vs; dests: Map<string, Rs> }>();
  const addrs = new Set<string>();
  const runs: { cmd: string; args: string[]; input?: string }[] = [];
  const sysctls: string[] = [];
  const f = {
    table,
    addrs,
    runs,
    sysctls,
    /** Real servers ("address:port") whose add fails, as the kernel does when out of memory. */
    failDests: new Set<string>(),
    nftFails: false,
    /** Milliseconds each command takes (the event loop must keep running meanwhile). */
    commandMs: 0,
    nftInputs: () => runs.filter((r) => r.cmd === "nft").map((r) => r.input ?? ""),
  };
  const svc = (v: Pick<Vs, "protocol" | "address" | "port">) => {
    const s = table.get(key(v));
    if (!s) throw new Error("No such service");
    return s;
  };
  const host: IpvsHost = {
    ipvs: {
      ipvsAvailable: () => ({ ok: true, reason: "" }),
      setTimeouts: () => undefined,
      listServices: () => [...table.values()].map((s) => ({ ...s.vs })),
      listDestinations: (v) => [...svc(v).dests.values()].map((r) => ({ ...r })),
      addService: (v) => {
        if (table.has(key(v))) throw new Error("File exists");
        table.set(key(v), { vs: { ...v }, dests: new Map() });
      },
      editService: (v) => void (svc(v).vs = { ...v }),
      deleteService: (v) => {
        svc(v);
        table.delete(key(v));
      },
      addDestination: (v, r) => {
        if (f.failDests.has(`${r.address}:${r.port}`)) throw new Error("Cannot allocate memory");
        svc(v).dests.set(`${r.address}:${r.port}`, { ...r, activeConns: 0, inactConns: 0 });
      },
      editDestination: (v, r) =>
        void svc(v).dests.set(`${r.address}:${r.port}`, { ...r, activeConns: 0, inactConns: 0 }),
      deleteDestination: (v, r) => void svc(v).dests.delete(`${r.address}:${r.port}`),
    },
    run: async (cmd, args, input) => {
      runs.push({ cmd, args, input });
      if (f.commandMs) await new Promise((r) => setTimeout(r, f.commandMs));
      if (cmd === "ip" && args[0] === "-j")
        return { ok: true, out: JSON.stringify([{ addr_info: [...addrs].map((local) => ({ local })) }]), err: "" };
      if (cmd === "ip" && args[1] === "-batch") {
        for (const line of (input ?? "").split("\n").filter(Boolean)) {
          const [, op, cidr] = line.split(" ");
          const a = cidr!.split("/")[0]!;
          if (op === "add") addrs.add(a);
          else addrs.delete(a);
        }
        return { ok: true, out: "", err: "" };
      }
      if (cmd === "nft") return { ok: !f.nftFails, out: "", err: f.nftFails ? "Error: Could not process rule" : "" };
      return { ok: true, out: "", err: "" };
    },
    sysctl: (path, value) => void sysctls.push(`${path}=${value}`),
  };
  return { ...f, host, fake: f };
}

const NODE_A = "192.0.2.11";
const nodeA = node("node-a", { internal: [NODE_A] });
function model(services = [svc({ type: "NodePort" })], eps = [ep("10.244.1.5"), ep("10.244.1.6")]) {
  return buildNodeModel({ services, endpointSlices: [slice(eps)], nodes: [nodeA], nodeName: "node-a" });
}

async function withDataplane(
  fn: (dp: IpvsDataplane, f: ReturnType<typeof fakeHost>, stateFile: string) => Promise<void>,
  opts: { clusterCIDRs?: string[]; excludeCIDRs?: string[] } = {},
): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), "bpfproxy-ipvs-state-"));
  const f = fakeHost();
  const stateFile = join(dir, "state.json");
  const dp = new IpvsDataplane({
    bpffs: "/x",
    devices: [],
    podInterfaces: [],
    clusterCIDRs: opts.clusterCIDRs ?? ["10.244.0.0/16"],
    excludeCIDRs: opts.excludeCIDRs,
    nodeName: "node-a",
    scheduler: "rr",
    host: f.host,
    stateFile,
  });
  try {
    await dp.start();
    await fn(dp, f, stateFile);
  } finally {
    await dp.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

test("a real server that cannot be added fails the sync (counted, retried) but the nftables step still runs", async () => {
  await withDataplane(async (dp, f) => {
    f.fake.failDests.add("10.244.1.6:8080");
    await assert.rejects(dp.sync(model()), /real server: Cannot allocate memory/);
    assert.equal(f.nftInputs().length, 1, "nft ran although a destination failed");
    assert.match(f.nftInputs()[0]!, /table ip bpfproxy-ipvs \{/);
    // Everything else is in place: both virtual services and the other real server.
    assert.deepEqual([...f.table.keys()].sort(), ["TCP|10.96.0.10|80", `TCP|${NODE_A}|30080`]);
    assert.ok(f.table.get("TCP|10.96.0.10|80")!.dests.has("10.244.1.5:8080"));
    assert.deepEqual([...f.addrs], ["10.96.0.10"]);
    // The retry adds what failed once the kernel lets it, and does not run nft again (same rules).
    f.fake.failDests.clear();
    await dp.sync(model());
    assert.ok(f.table.get("TCP|10.96.0.10|80")!.dests.has("10.244.1.6:8080"));
    assert.equal(f.nftInputs().length, 1);
  });
});

test("a failed nft run fails the sync and is run again at the next one", async () => {
  await withDataplane(async (dp, f) => {
    f.fake.nftFails = true;
    await assert.rejects(dp.sync(model()), /nft -f: Error: Could not process rule/);
    assert.equal(f.table.size, 2, "the IPVS table was programmed before");
    f.fake.nftFails = false;
    await dp.sync(model());
    assert.equal(f.nftInputs().length, 2);
  });
});

test("the state file is written once per sync, mode 0600, by rename (also over an old world-readable one)", async () => {
  await withDataplane(async (dp, f, file) => {
    writeFileSync(file, "{}", { mode: 0o644 });
    writeFileSync(file + ".tmp", "left over", { mode: 0o644 });
    const renamed: string[] = [];
    const watcher = watch(dirname(file), (ev, name) => {
      if (ev === "rename" && name === basename(file)) renamed.push(name);
    });
    try {
      await dp.sync(model());
      await new Promise((r) => setTimeout(r, 300)); // inotify events are delivered asynchronously
      assert.equal(renamed.length, 1, "one write per sync");
      assert.equal(statSync(file).mode & 0o777, 0o600);
      assert.ok(!existsSync(file + ".tmp"));
      const st = readState(file)!;
      assert.deepEqual(st.ownedAddresses, [NODE_A]);
      assert.equal(st.frontends.length, 2);
      // A sync with nothing new writes nothing; a changed model writes once.
      await dp.sync(model());
      await dp.sync(model(undefined, [ep("10.244.1.5")]));
      await new Promise((r) => setTimeout(r, 300));
      assert.equal(renamed.length, 2);
      assert.equal(statSync(file).mode & 0o777, 0o600);
    } finally {
      watcher.close();
    }
    assert.equal(f.table.get("TCP|10.96.0.10|80")!.dests.size, 1);
  });
});

test("ip and nft run off the event loop: timers keep firing during a slow command", async () => {
  await withDataplane(async (dp, f) => {
    f.fake.commandMs = 200;
    let ticks = 0;
    const t = setInterval(() => ticks++, 20);
    try {
      await dp.sync(model());
    } finally {
      clearInterval(t);
    }
    // Three commands (list addresses, add addresses, nft) of 200 ms each.
    assert.ok(ticks >= 15, `only ${ticks} timer ticks during the sync`);
  });
  // The real runner: a command that does not finish is killed at its bound and reported, not awaited forever.
  let ticks = 0;
  const t = setInterval(() => ticks++, 20);
  const t0 = Date.now();
  const r = await runCommand("sleep", ["30"], undefined, 400).finally(() => clearInterval(t));
  assert.equal(r.ok, false);
  assert.match(r.err, /sleep killed: no answer within 400 ms/);
  assert.ok(Date.now() - t0 < 5000);
  assert.ok(ticks >= 10, `only ${ticks} timer ticks while sleep ran`);
  const ok = await runCommand("cat", [], "to stdin");
  assert.deepEqual(ok, { ok: true, out: "to stdin", err: "" });
});

// ---- NodePort addresses: kube-ipvs0's addresses are Service IPs, not node addresses ---------------------

test("Service IPs on kube-ipvs0 are not node addresses: no NodePort on them, and a new Service re-renders only itself", async () => {
  const lab = await Lab.create({
    prefix: `bpxipvsaddr${process.pid}-`,
    nodes: [{ name: "node-a", ip: NODE_A, podCIDR: "10.244.1.0/24", pods: [] }],
  });
  try {
    const addresses = async () =>
      JSON.parse(
        await lab.run(
          "node-a",
          [
            process.execPath,
            "--import",
            "tsx",
            "-e",
            `import(${JSON.stringify(resolve("src/model/addresses.ts"))}).then((m) => console.log(JSON.stringify(m.localIPv4Addresses())))`,
          ],
          { timeoutMs: 60_000 },
        ),
      ) as string[];
    // This kernel has no dummy module: a bridge stands in (the name is what counts). Up, as anything on the
    // host may set it (the daemon leaves it down, and Node lists no address of a down interface at all).
    await lab.run("node-a", ["ip", "link", "add", "kube-ipvs0", "type", "bridge"]);
    await lab.run("node-a", ["ip", "link", "set", "kube-ipvs0", "up"]);
    const before = await addresses();
    assert.ok(before.includes(NODE_A), before.join(", "));
    const web = svc({ type: "NodePort" });
    const api = svc({
      name: "api",
      clusterIP: "10.96.0.11",
      type: "NodePort",
      ports: [{ name: "http", port: 80, targetPort: 8080, protocol: "TCP", nodePort: 30081 }],
    });
    const slices = [slice([ep("10.244.1.5")]), slice([ep("10.244.1.7")], { name: "api-1", service: "api" })];
    const cache = new ModelCache();
    const build = (services: (typeof web)[], nodeIPs: string[]) =>
      buildNodeModel({
        services,
        endpointSlices: slices,
        nodes: [nodeA],
        nodeName: "node-a",
        config: { nodeIPs },
        cache,
      });
    build([web], before);
    // What the IPVS data plane does for the first Service: its ClusterIP goes on kube-ipvs0.
    await lab.run("node-a", ["ip", "addr", "add", "10.96.0.10/32", "dev", "kube-ipvs0"]);
    const after = await addresses();
    assert.ok(!after.includes("10.96.0.10"), `kube-ipvs0's address listed as a node address: ${after.join(", ")}`);
    assert.deepEqual(after, before);
    const m = build([web, api], after);
    assert.equal(cache.rendered, 1, "only the new Service is rendered");
    const nodePorts = m.frontends.filter((f) => f.type === "NodePort");
    assert.ok(nodePorts.length >= 2);
    assert.deepEqual(
      nodePorts.filter((f) => f.address.startsWith("10.96.")),
      [],
    );
  } finally {
    await lab.destroy();
  }
});

test("the model's node-facts fingerprint covers what rendering reads: a node address outside nodePortAddresses renders nothing again", () => {
  const cache = new ModelCache();
  const services = [svc({ type: "NodePort" })];
  const endpointSlices = [slice([ep("10.244.1.5")])];
  const build = (nodeIPs: string[]) =>
    buildNodeModel({
      services,
      endpointSlices,
      nodes: [nodeA],
      nodeName: "node-a",
      config: { nodeIPs, nodePortAddresses: ["192.0.2.0/24"] },
      cache,
    });
  build([NODE_A]);
  assert.equal(cache.rendered, 1);
  const m = build([NODE_A, "172.16.0.5"]);
  assert.equal(cache.rendered, 0);
  assert.deepEqual(m.nodeIPs, [NODE_A, "172.16.0.5"], "the model still carries every node address");
  build([NODE_A, "192.0.2.99"]);
  assert.equal(cache.rendered, 1, "a new NodePort address renders again");
});

// ---- IPv6 virtual services (models built by hand until the model emits IPv6 frontends) ------------------

const hex = (s: string) => Buffer.from(s.replace(/\s+/g, ""), "hex");

test("netlink: an IPv6 virtual service is AF_INET6 with its 16-byte address and netmask 128 (a prefix length)", () => {
  const vs: nl.VirtualServer = {
    protocol: "TCP",
    address: "fd00:96::10",
    port: 80,
    scheduler: "rr",
    flags: 0,
    timeout: 0,
  };
  // struct nlattr {u16 len; u16 type} little-endian, payloads padded to 4 bytes (linux/ip_vs.h attribute numbers).
  const want = hex(`
    5400 0180
      0600 0100 0a00 0000
      0600 0200 0600 0000
      1400 0300 fd00 0096 0000 0000 0000 0000 0000 0010
      0600 0400 0050 0000
      0700 0600 7272 0000
      0c00 0700 0000 0000 ffff ffff
      0800 0800 0000 0000
      0800 0900 8000 0000`);
  assert.equal(nl.svcFull(vs).toString("hex"), want.toString("hex"));
  // IPv4 keeps AF_INET, the address in the first 4 of 16 bytes and an all-ones mask.
  const v4 = nl.svcFull({ ...vs, address: "10.96.0.10" });
  assert.equal(v4.subarray(4, 12).toString("hex"), "0600010002000000");
  assert.equal(v4.subarray(20, 40).toString("hex"), "140003000a60000a" + "00".repeat(12));
  assert.equal(v4.subarray(-8).toString("hex"), "08000900ffffffff");
  // What the kernel answers in the same shape decodes to the same service (RFC 5952 text).
  assert.deepEqual(nl.parseService(nl.svcFull(vs)), vs);
  assert.deepEqual(nl.parseService(nl.svcFull({ ...vs, address: "2001:db8:0:0:1:0:0:1" })), {
    ...vs,
    address: "2001:db8::1:0:0:1",
  });
});

test("netlink: an IPv6 real server has its 16-byte address and IPVS_DEST_ATTR_ADDR_FAMILY AF_INET6", () => {
  const rs = { address: "fd00:10:244:1::5", port: 8080, weight: 1, fwd: nl.FWD_MASQ };
  const want = hex(`
    4800 0280
      1400 0100 fd00 0010 0244 0001 0000 0000 0000 0005
      0600 0200 1f90 0000
      0800 0300 0000 0000
      0800 0400 0100 0000
      0800 0500 0000 0000
      0800 0600 0000 0000
      0600 0b00 0a00 0000`);
  assert.equal(nl.destFull(rs).toString("hex"), want.toString("hex"));
  assert.deepEqual(nl.parseDestination(nl.destFull(rs), "fd00:96::10"), {
    address: rs.address,
    port: 8080,
    weight: 1,
    fwd: 0,
    activeConns: 0,
    inactConns: 0,
  });
  assert.equal(
    nl
      .destFull({ ...rs, address: "10.244.1.5" })
      .subarray(-8)
      .toString("hex"),
    "06000b0002000000",
  );
  // Text forms the model may carry: compressed, full, IPv4-embedded.
  assert.equal(ipv6ToBytes("::").toString("hex"), "00".repeat(16));
  assert.equal(ipv6ToBytes("2001:db8::").toString("hex"), "20010db8" + "00".repeat(12));
  assert.equal(ipv6ToBytes("::ffff:192.0.2.1").toString("hex"), "00".repeat(10) + "ffffc0000201");
  assert.equal(ipv6ToBytes("1:2:3:4:5:6:7:8").toString("hex"), "00010002000300040005000600070008");
  assert.throws(() => ipv6ToBytes("10.0.0.1"), /invalid IPv6 address/);
});

const fe = (
  type: Frontend["type"],
  address: string,
  port: number,
  backends: string[],
  service = "default/web",
): Frontend => ({
  service,
  portName: "http",
  type,
  address,
  port,
  protocol: "TCP",
  scope: type === "ClusterIP" ? "internal" : "external",
  sessionAffinity: { type: "None" },
  algorithm: "random",
  backends: backends.map((a) => ({ address: a, port: 8080, state: "active" as const, nodeLocal: true })),
});
const extras = (o: Partial<FrontendExtras> = {}): FrontendExtras => ({ retainedBackends: [], sourceRanges: [], ...o });
/** A dual-stack node's model as the dual-stack model will emit it: each family's frontends with its own backends. */
function dualModel(): NodeModel {
  const frontends = [
    fe("ClusterIP", "10.96.0.10", 80, ["10.244.1.5"]),
    fe("ClusterIP", "fd00:96::10", 80, ["fd00:10:244:1::5", "fd00:10:244:1::6"]),
    fe("NodePort", NODE_A, 30080, ["10.244.1.5"]),
    fe("NodePort", "2001:db8::a", 30080, ["fd00:10:244:1::5", "fd00:10:244:1::6"]),
    fe("LoadBalancer", "2001:db8:200::1", 80, [], "default/lb"),
  ];
  return {
    node: "node-a",
    frontends,
    extras: [
      extras(),
      extras(),
      extras(),
      extras(),
      extras({
        dropWhenEmpty: true,
        externalPolicyLocal: true,
        sourceRanges: ["2001:db8:100::/64", "198.51.100.0/24"],
      }),
    ],
  };
}

test("sync: IPv6 frontends become AF_INET6 virtual services, /128 nodad addresses on kube-ipvs0 and IPv6 forwarding", async () => {
  await withDataplane(
    async (dp, f) => {
      f.addrs.add("fd00:96::99"); // a stale IPv6 Service address: removed
      await dp.sync(dualModel());
      assert.deepEqual([...f.table.keys()].sort(), [
        "TCP|10.96.0.10|80",
        `TCP|${NODE_A}|30080`,
        "TCP|2001:db8:200::1|80",
        "TCP|2001:db8::a|30080",
        "TCP|fd00:96::10|80",
      ]);
      assert.deepEqual([...f.table.get("TCP|fd00:96::10|80")!.dests.keys()].sort(), [
        "fd00:10:244:1::5:8080",
        "fd00:10:244:1::6:8080",
      ]);
      const batch = f.runs
        .find((r) => r.args[1] === "-batch")!
        .input!.split("\n")
        .filter(Boolean)
        .sort();
      assert.deepEqual(batch, [
        "address add 10.96.0.10/32 dev kube-ipvs0",
        "address add 2001:db8:200::1/128 dev kube-ipvs0 nodad",
        "address add fd00:96::10/128 dev kube-ipvs0 nodad",
        "address del fd00:96::99/128 dev kube-ipvs0",
      ]);
      assert.deepEqual([...f.addrs].sort(), ["10.96.0.10", "2001:db8:200::1", "fd00:96::10"]);
      assert.ok(f.sysctls.includes("net/ipv6/conf/all/forwarding=1"), f.sysctls.join(" "));
      // The node's IPv6 address serves NodePorts (owned, as the IPv4 one), and a re-sync changes nothing.
      const n = f.runs.length;
      await dp.sync(dualModel());
      assert.deepEqual(
        f.runs.slice(n).map((r) => r.cmd + " " + r.args.join(" ")),
        ["ip -j addr show dev kube-ipvs0"],
      );
      // An IPv6 frontend gone: its virtual service and address go, the IPv4 ones stay.
      const m = dualModel();
      m.frontends.splice(1, 1);
      m.extras.splice(1, 1);
      await dp.sync(m);
      assert.ok(!f.table.has("TCP|fd00:96::10|80"));
      assert.ok(!f.addrs.has("fd00:96::10"));
      assert.ok(f.table.has("TCP|10.96.0.10|80"));
    },
    { clusterCIDRs: ["10.244.0.0/16", "fd00:10:244::/56"] },
  );
});

test("sync: a model without IPv6 frontends sets no IPv6 sysctl (IPv6 forwarding stops a host accepting router advertisements)", async () => {
  await withDataplane(async (dp, f) => {
    await dp.sync(model());
    assert.ok(!f.sysctls.some((s) => s.startsWith("net/ipv6/")), f.sysctls.join(" "));
  });
});

test("ipvs.excludeCIDRs keeps foreign IPv6 virtual services on owned addresses, and the kernel's fe80:: address on kube-ipvs0 is not a Service address", async () => {
  await withDataplane(
    async (dp, f) => {
      await dp.sync(dualModel());
      for (const address of ["fd00:96::10", "2001:db8::a"])
        f.table.set(`UDP|${address}|9999`, {
          vs: { protocol: "UDP", address, port: 9999, scheduler: "rr", flags: 0, timeout: 0 },
          dests: new Map(),
        });
      await dp.sync(dualModel());
      assert.ok(f.table.has("UDP|fd00:96::10|9999"), "inside fd00:96::/112: kept");
      assert.ok(!f.table.has("UDP|2001:db8::a|9999"), "outside: removed");
    },
    { excludeCIDRs: ["fd00:96::/112"] },
  );
  const out = JSON.stringify([
    {
      ifname: "kube-ipvs0",
      addr_info: [
        { family: "inet", local: "10.96.0.10", scope: "global" },
        { family: "inet6", local: "fd00:96::10", scope: "global" },
        { family: "inet6", local: "fe80::1c2b:3dff:fe4e:5f60", scope: "link" },
      ],
    },
  ]);
  const seen: string[][] = [];
  const addrs = await dummyAddresses(async (_cmd, args) => {
    seen.push(args);
    return { ok: true, out, err: "" };
  });
  assert.deepEqual(addrs, ["10.96.0.10", "fd00:96::10"]);
  assert.deepEqual(seen, [["-j", "addr", "show", "dev", "kube-ipvs0"]], "both families are listed");
});

test("nftables: one transaction with table ip and table ip6 bpfproxy-ipvs, each with its own family's sets, cluster CIDR and source ranges", async () => {
  await withDataplane(
    async (dp, f) => {
      await dp.sync(dualModel());
      assert.equal(f.nftInputs().length, 1);
      assert.equal(
        f.nftInputs()[0],
        `table ip bpfproxy-ipvs
delete table ip bpfproxy-ipvs
table ip bpfproxy-ipvs {
  set internal {
    type ipv4_addr . inet_proto . inet_service
    elements = { 10.96.0.10 . tcp . 80 }
  }
  set external-masq {
    type ipv4_addr . inet_proto . inet_service
    elements = { 192.0.2.11 . tcp . 30080 }
  }
  set drop-empty {
    type ipv4_addr . inet_proto . inet_service
  }
  set hairpin {
    type ipv4_addr . ipv4_addr
    elements = { 10.244.1.5 . 10.244.1.5 }
  }
  chain prerouting {
    type filter hook prerouting priority mangle; policy accept;
    ip daddr . meta l4proto . th dport @drop-empty drop
    ip saddr != { 10.244.0.0/16 } ip daddr . meta l4proto . th dport @internal meta mark set meta mark | 16384
    ip daddr . meta l4proto . th dport @external-masq meta mark set meta mark | 16384
  }
  chain output {
    type route hook output priority mangle; policy accept;
    ip saddr != { 10.244.0.0/16 } ip daddr . meta l4proto . th dport @internal meta mark set meta mark | 16384
    ip daddr . meta l4proto . th dport @external-masq meta mark set meta mark | 16384
  }
  chain postrouting {
    type nat hook postrouting priority srcnat; policy accept;
    meta mark & 16384 == 16384 masquerade
    ip saddr . ip daddr @hairpin masquerade
  }
}
table ip6 bpfproxy-ipvs
delete table ip6 bpfproxy-ipvs
table ip6 bpfproxy-ipvs {
  set internal {
    type ipv6_addr . inet_proto . inet_service
    elements = { fd00:96::10 . tcp . 80 }
  }
  set external-masq {
    type ipv6_addr . inet_proto . inet_service
    elements = { 2001:db8::a . tcp . 30080 }
  }
  set drop-empty {
    type ipv6_addr . inet_proto . inet_service
    elements = { 2001:db8:200::1 . tcp . 80 }
  }
  set hairpin {
    type ipv6_addr . ipv6_addr
    elements = { fd00:10:244:1::5 . fd00:10:244:1::5, fd00:10:244:1::6 . fd00:10:244:1::6 }
  }
  chain prerouting {
    type filter hook prerouting priority mangle; policy accept;
    ip6 daddr . meta l4proto . th dport @drop-empty drop
    ip6 daddr 2001:db8:200::1 meta l4proto tcp th dport 80 ip6 saddr != { 2001:db8:100::/64 } drop
    ip6 saddr != { fd00:10:244::/56 } ip6 daddr . meta l4proto . th dport @internal meta mark set meta mark | 16384
    ip6 daddr . meta l4proto . th dport @external-masq meta mark set meta mark | 16384
  }
  chain output {
    type route hook output priority mangle; policy accept;
    ip6 saddr != { fd00:10:244::/56 } ip6 daddr . meta l4proto . th dport @internal meta mark set meta mark | 16384
    ip6 daddr . meta l4proto . th dport @external-masq meta mark set meta mark | 16384
  }
  chain postrouting {
    type nat hook postrouting priority srcnat; policy accept;
    meta mark & 16384 == 16384 masquerade
    ip6 saddr . ip6 daddr @hairpin masquerade
  }
}
`,
      );
    },
    { clusterCIDRs: ["10.244.0.0/16", "fd00:10:244::/56"] },
  );
  // Without IPv6 frontends the ip6 table is removed in the same transaction; the IPv4 table is as before.
  const v4only = nftRuleset([], ["10.244.0.0/16"], false);
  assert.ok(v4only.endsWith("}\ntable ip6 bpfproxy-ipvs\ndelete table ip6 bpfproxy-ipvs\n"), v4only);
  assert.doesNotMatch(v4only, /ip6 (saddr|daddr)/);
  // masqueradeAll marks all ClusterIP traffic of both families; without --cluster-cidr of a family, none of it.
  const all = nftRuleset(
    dualModel().frontends.map((fr, i) => ({
      vs: { protocol: fr.protocol, address: fr.address, port: fr.port, scheduler: "rr", flags: 0, timeout: 0 },
      frontend: fr,
      extras: dualModel().extras[i]!,
      dests: new Map(),
    })),
    ["10.244.0.0/16"],
    true,
  );
  assert.match(all, /^ {4}ip6 daddr \. meta l4proto \. th dport @internal meta mark set/m);
  assert.match(all, /^ {4}ip daddr \. meta l4proto \. th dport @internal meta mark set/m);
  const noV6Cidr = nftRuleset(
    [
      {
        vs: { protocol: "TCP", address: "fd00:96::10", port: 80, scheduler: "rr", flags: 0, timeout: 0 },
        frontend: fe("ClusterIP", "fd00:96::10", 80, []),
        extras: extras(),
        dests: new Map(),
      },
    ],
    ["10.244.0.0/16"],
    false,
  );
  const ip6Table = noV6Cidr.slice(noV6Cidr.indexOf("table ip6 bpfproxy-ipvs {"));
  assert.match(ip6Table, /^table ip6 /);
  assert.doesNotMatch(ip6Table, /@internal meta mark/, "an IPv4 cluster CIDR never decides for IPv6 sources");
});

test("bpfproxy.io/backend-weights: real servers carry the weights; rr and lc become wrr and wlc, others stay", async () => {
  const weights = { "bpfproxy.io/backend-weights": "10.244.1.5=3, 10.244.1.6=0" };
  const services = [
    svc({ name: "w", clusterIP: "10.96.0.30", annotations: weights }),
    svc({
      name: "wlc",
      clusterIP: "10.96.0.31",
      annotations: { ...weights, "bpfproxy.io/lb-algorithm": "least-conn" },
    }),
    svc({ name: "wmh", clusterIP: "10.96.0.32", annotations: { ...weights, "bpfproxy.io/lb-algorithm": "maglev" } }),
    svc({ name: "plain", clusterIP: "10.96.0.33", annotations: { "bpfproxy.io/lb-algorithm": "least-conn" } }),
  ];
  const slices = services.map((s) =>
    slice([ep("10.244.1.5"), ep("10.244.1.6")], { service: s.metadata.name, name: `${s.metadata.name}-1` }),
  );
  const m = buildNodeModel({ services, endpointSlices: slices, nodes: [nodeA], nodeName: "node-a" });
  await withDataplane(async (dp, f) => {
    await dp.sync(m);
    const at = (vip: string) => f.table.get(`TCP|${vip}|80`)!;
    const weightsOf = (vip: string) =>
      Object.fromEntries([...at(vip).dests.values()].map((r) => [`${r.address}:${r.port}`, r.weight]));
    assert.equal(at("10.96.0.30").vs.scheduler, "wrr");
    assert.equal(at("10.96.0.31").vs.scheduler, "wlc");
    assert.equal(at("10.96.0.32").vs.scheduler, "mh");
    assert.equal(at("10.96.0.33").vs.scheduler, "lc", "unweighted: as before");
    for (const vip of ["10.96.0.30", "10.96.0.31", "10.96.0.32"])
      assert.deepEqual(weightsOf(vip), { "10.244.1.5:8080": 3, "10.244.1.6:8080": 0 });
    assert.deepEqual(weightsOf("10.96.0.33"), { "10.244.1.5:8080": 1, "10.244.1.6:8080": 1 });
  });
});
