// Mode selection, IPVS settings, and the IPVS data plane's sync against a fake kernel (this machine's kernel
// has no IPVS: the data plane with real traffic is tested inside a VM, test/vm-ipvs.test.ts), plus the
// node addresses NodePorts are served on (a network namespace of its own).
import { test } from "node:test";
import assert from "node:assert/strict";
import { chooseMode, DISABLE_BPF_ENV, probeBpf } from "../src/dataplane/probe.js";
import { parseConfigText } from "../src/config.js";
import { existsSync, mkdtempSync, rmSync, statSync, watch, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { basename, dirname, join, resolve } from "node:path";
import { IpvsDataplane, readState, runCommand, type IpvsHost } from "../src/dataplane/ipvs/index.js";
import type * as nl from "../src/dataplane/ipvs/netlink.js";
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
  const f = {
    table,
    addrs,
    runs,
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
    sysctl: () => undefined,
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
): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), "bpfproxy-ipvs-state-"));
  const f = fakeHost();
  const stateFile = join(dir, "state.json");
  const dp = new IpvsDataplane({
    bpffs: "/x",
    devices: [],
    podInterfaces: [],
    clusterCIDRs: ["10.244.0.0/16"],
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
