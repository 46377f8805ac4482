// End to end: socket-level load balancing over IPv6 (issue 17 item 5). On a dual-stack lab the daemon runs on
// node-a with --cgroup-path on a child of a private cgroup2 mount; processes in that cgroup (node-a's own
// namespace, and a pod's in pod mode) reach an IPv6 ClusterIP over TCP and UDP with the choice made at
// connect()/sendmsg() (bpx_sock_conn6, bpx_sock_send6): the packets leave addressed to the backend, so the tc
// programs translate nothing, and getpeername (bpx_sock_peer6) and recvfrom (bpx_sock_recv6) show the
// ClusterIP. A dual-stack AF_INET6 socket pointed at an IPv4-mapped ClusterIP (::ffff:10.96.0.10) is
// translated with the IPv4 maps. Frontends without backends are refused at once (EPERM), as over IPv4. A
// connected UDP socket whose backend the daemon removes is ended, over IPv6 and IPv4-mapped (a dual-stack
// Service from the manifest). Every Service is dual-stack, served by the daemon from its objects. Everything lives in namespaces and a
// cgroup the test makes and removes, also on failure; every wait is bounded.
import { after, before, describe, test, type TestContext } from "node:test";
import assert from "node:assert/strict";
import { execFile, execFileSync, spawn, type ChildProcess } from "node:child_process";
import { mkdirSync, mkdtempSync, rmdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Lab } from "../src/lab/netns.js";
import { startEchoServer } from "../src/lab/index.js";
import { PrivateBpffs, ProxyNode } from "../src/lab/proxy.js";
import * as native from "../src/native/index.js";
import { SOCK_HOOKS, SOCK_OBJECT_PATH, attachSocketLb } from "../src/dataplane/bpf/sock.js";
import { MAP_NAMES, sockRevNat6Key, sockRevNat6Value } from "../src/dataplane/bpf/abi.js";
import { DNS, HTTP, endpointSlice, manifest, node, service, type PortSpec } from "./fixtures/k8s-objects.js";

assert.equal(process.getuid?.(), 0, "end-to-end tests build namespaces, cgroups and load BPF: run them as root");

const VIP6 = "fd00:96::10";
const VIP6_EMPTY = "fd00:96::20";
const VIP6_TERM = "fd00:96::40";
const VIP4 = "10.96.0.10";
const VIP4_EMPTY = "10.96.0.20";
const VIP4_TERM = "10.96.0.40";
const mapped = (v4: string) => `::ffff:${v4}`;
const NODE_IP = "192.0.2.11";
const PODS = {
  "web-1": { ip: "10.244.1.5", ip6: "fd00:10:244:1::5", node: "node-a" },
  "web-2": { ip: "10.244.1.6", ip6: "fd00:10:244:1::6", node: "node-a" },
  "web-3": { ip: "10.244.2.5", ip6: "fd00:10:244:2::5", node: "node-b" },
};
type Pod = keyof typeof PODS;
const CLIENT_POD = { name: "client", ip: "10.244.1.9", ip6: "fd00:10:244:1::9" };
// Ports only the "term" Services use: removing a backend of theirs removes the backend itself.
const TERM_PORT = { name: "dns", port: 53, targetPort: 5354, protocol: "UDP" as const };

/** A RequireDualStack Service with both ClusterIPs and an IPv4 and an IPv6 EndpointSlice of the same pods. */
function dualStack(name: string, vip4: string, vip6: string, ports: PortSpec[], pods: Pod[]): unknown[] {
  return [
    service(name, vip4, ports, {
      spec: { ipFamilyPolicy: "RequireDualStack", ipFamilies: ["IPv4", "IPv6"], clusterIPs: [vip4, vip6] },
    }),
    endpointSlice(
      name,
      ports,
      pods.map((n) => ({ ip: PODS[n].ip, node: PODS[n].node })),
    ),
    {
      ...endpointSlice(
        name,
        ports,
        pods.map((n) => ({ ip: PODS[n].ip6, node: PODS[n].node })),
      ),
      addressType: "IPv6",
      metadata: { name: `${name}-6`, namespace: "default", labels: { "kubernetes.io/service-name": name } },
    },
  ];
}

/** The daemon serves both ClusterIPs of each Service, each from its own family's slice. */
function manifests(termBackends: Pod[] = ["web-1", "web-2"]): string {
  return manifest([
    ...dualStack("web", VIP4, VIP6, [HTTP, DNS], ["web-1", "web-2", "web-3"]),
    ...dualStack("empty", VIP4_EMPTY, VIP6_EMPTY, [HTTP, DNS], []),
    ...dualStack("term", VIP4_TERM, VIP6_TERM, [TERM_PORT], termBackends),
    node("node-a", NODE_IP),
    node("node-b", "192.0.2.12"),
  ]);
}

// A client: runs each step of its plan one attempt at a time and prints, per step, what answered (the
// echo server's name) and what the socket API says the peer is ("[address]:port"): getpeername for TCP and
// connected UDP, recvfrom's source for unconnected UDP. `family` is the UDP socket's ("udp6" = AF_INET6,
// dual-stack); TCP sockets take the address's family, AF_INET6 for an IPv4-mapped one.
const CLIENT = `
const net = require("node:net"), dgram = require("node:dgram");
const plan = JSON.parse(process.argv[1]);
const first = (s) => s.toString().trim().split(" ")[0];
const tcp = (host, port) => new Promise((resolve) => {
  const s = net.connect({ host, port });
  const t = setTimeout(() => { s.destroy(); resolve({ error: "timeout" }); }, 3000);
  s.on("connect", () => s.write("hi\\n"));
  s.on("data", (d) => { clearTimeout(t); const peer = "[" + s.remoteAddress + "]:" + s.remotePort; s.destroy(); resolve({ name: first(d), peer }); });
  s.on("error", (e) => { clearTimeout(t); resolve({ error: e.code }); });
});
const udp = (host, port, connected) => new Promise((resolve) => {
  const s = dgram.createSocket("udp6");
  const t = setTimeout(() => { s.close(); resolve({ error: "timeout" }); }, 3000);
  s.on("message", (m, rinfo) => {
    clearTimeout(t);
    const r = connected ? s.remoteAddress() : rinfo;
    s.close();
    resolve({ name: first(m), peer: "[" + r.address + "]:" + r.port });
  });
  s.on("error", (e) => { clearTimeout(t); s.close(); resolve({ error: e.code }); });
  if (connected) s.connect(port, host, (e) => { if (!e) return s.send("q\\n"); clearTimeout(t); s.close(); resolve({ error: e.code }); });
  else s.send("q\\n", port, host);
});
(async () => {
  const out = [];
  for (const step of plan) {
    const t0 = Date.now();
    const rs = [];
    for (let i = 0; i < step.n; i++)
      rs.push(step.kind === "tcp" ? await tcp(step.host, step.port) : await udp(step.host, step.port, step.kind === "udpc"));
    out.push({ results: rs, ms: Date.now() - t0 });
  }
  console.log(JSON.stringify(out));
})();
`;

// A connected dual-stack UDP socket that asks once, then again when a line arrives on stdin: what the second
// datagram gets after its backend was removed.
const UDP_HOLDER = `
const dgram = require("node:dgram");
const [host, port] = process.argv.slice(1);
const s = dgram.createSocket("udp6");
let pending;
const settle = (r) => { if (pending) { const p = pending; pending = undefined; p(r); } };
s.on("message", (m) => settle("answer " + m.toString().trim().split(" ")[0]));
s.on("error", (e) => { if (pending) settle("error " + e.code); else console.log("event error " + e.code); });
const ask = () => new Promise((resolve) => {
  pending = resolve;
  setTimeout(() => settle("timeout"), 2000);
  try { s.send("q\\n", (e) => { if (e) settle("error " + e.code); }); } catch (e) { settle("error " + e.code); }
});
s.connect(Number(port), host, async () => {
  console.log(await ask());
  process.stdin.once("data", async () => { console.log(await ask()); process.exit(0); });
});
`;

// One unconnected IPv6 UDP socket: 20 datagrams to host:port (each answered), then 20 more when a line arrives
// on stdin; prints how many of each batch were answered.
const UDP_SENDER = `
const dgram = require("node:dgram");
const [host, port] = process.argv.slice(1);
const s = dgram.createSocket("udp6");
let waiting;
s.on("message", () => { if (waiting) { const w = waiting; waiting = undefined; w(true); } });
const ask = () => new Promise((resolve) => {
  waiting = resolve;
  setTimeout(() => { if (waiting === resolve) { waiting = undefined; resolve(false); } }, 2000);
  s.send("q\\n", Number(port), host);
});
const batch = async () => { let n = 0; for (let i = 0; i < 20; i++) if (await ask()) n++; return n; };
(async () => {
  console.log(await batch());
  process.stdin.once("data", async () => { console.log(await batch()); process.exit(0); });
})();
`;

type Kind = "tcp" | "udp" | "udpc";
type Result = { name?: string; peer?: string; error?: string };
type Step = { kind: Kind; host: string; port: number; n: number };

describe("socket-level load balancing over IPv6 and IPv4-mapped addresses", { timeout: 240_000 }, () => {
  let lab: Lab;
  let dir: string;
  let bpffs: PrivateBpffs;
  let proxy: ProxyNode | undefined;
  let cgRoot: string;
  let cgroup: string;
  let mounted = false;
  const holders: ChildProcess[] = [];

  function inCgroup(ns: string, script: string, args: (string | number)[]): string {
    const q = (s: string) => `'${s.replace(/'/g, "'\\''")}'`;
    return `echo $$ > ${cgroup}/cgroup.procs && exec ip netns exec ${lab.nsName(ns)} node -e ${q(script)} ${args.map((a) => q(String(a))).join(" ")}`;
  }

  /** Runs the plan in a lab namespace from inside the test's cgroup; the results of each step. */
  function run(ns: string, plan: Step[]): Promise<{ results: Result[]; ms: number }[]> {
    return new Promise((resolve, reject) => {
      execFile(
        "sh",
        ["-c", inCgroup(ns, CLIENT, [JSON.stringify(plan)])],
        { timeout: 90_000, maxBuffer: 1 << 20 },
        (err, stdout, stderr) => {
          if (err) reject(new Error(`client in ${ns} failed: ${err.message}\n${stderr}`));
          else resolve(JSON.parse(stdout) as { results: Result[]; ms: number }[]);
        },
      );
    });
  }

  function entries(name: string): number {
    const m = native.BpfMap.openPinned(join(bpffs.path, name), { readOnly: true });
    try {
      return m.entries().count;
    } finally {
      m.close();
    }
  }

  async function translatedByTc(): Promise<number> {
    return (await proxy!.status()).counters.translated_new?.packets ?? 0;
  }

  async function startProxy(extraArgs: string[] = []): Promise<ProxyNode> {
    const p = await ProxyNode.start(lab, "node-a", {
      manifestDir: dir,
      bpffs: bpffs.path,
      devices: ["eth0"],
      extraArgs: ["--cgroup-path", cgroup, ...extraArgs],
    });
    await p.waitForLog(/socket load balancing attached/, 20_000);
    await p.waitForStatus(
      (s) =>
        s.frontends.some((f) => f.address === VIP4 && f.backends.length === 3) &&
        s.frontends.some((f) => f.address === VIP6 && f.backends.length === 3) &&
        s.frontends.some((f) => f.address === VIP4_TERM && f.backends.length === 2) &&
        s.frontends.some((f) => f.address === VIP6_TERM && f.backends.length === 2),
      10_000,
    );
    return p;
  }

  /** A connected dual-stack UDP socket of node-a's namespace in the cgroup, asking once now and once on `next()`. */
  function holder(host: string, port: number) {
    const child = spawn("sh", ["-c", inCgroup("node-a", UDP_HOLDER, [host, port])], {
      stdio: ["pipe", "pipe", "pipe"],
    });
    holders.push(child);
    let out = "";
    let err = "";
    child.stdout.setEncoding("utf8").on("data", (d: string) => (out += d));
    child.stderr.setEncoding("utf8").on("data", (d: string) => (err += d));
    const lines = async (n: number): Promise<string[]> => {
      const deadline = Date.now() + 10_000;
      // "event error" lines (an error the socket reported by itself) are not answers.
      const answers = () => out.split("\n").filter((l) => l && !l.startsWith("event "));
      while (answers().length < n) {
        if (Date.now() > deadline)
          throw new Error(`UDP client: ${n} lines expected, got ${JSON.stringify(out)}; ${err}`);
        await new Promise((r) => setTimeout(r, 50));
      }
      return answers();
    };
    return {
      first: async () => (await lines(1))[0]!,
      next: async () => {
        child.stdin.write("go\n");
        const all = await lines(2);
        return { second: all[all.length - 1]!, out };
      },
    };
  }

  before(async () => {
    cgRoot = mkdtempSync(join(tmpdir(), "bpxsock6-cgroup-"));
    execFileSync("mount", ["-t", "cgroup2", "none", cgRoot], { timeout: 10_000 });
    mounted = true;
    cgroup = join(cgRoot, `bpfproxy-test-${process.pid}`);
    mkdirSync(cgroup);
    dir = mkdtempSync(join(tmpdir(), "bpfproxy-sock6-"));
    writeFileSync(join(dir, "services.yaml"), manifests());
    const pods = (n: string) =>
      Object.entries(PODS)
        .filter(([, p]) => p.node === n)
        .map(([name, p]) => ({ name, ip: p.ip, ip6: p.ip6 }));
    lab = await Lab.create({
      prefix: `bpxs6${process.pid}-`,
      nodes: [
        {
          name: "node-a",
          ip: NODE_IP,
          podCIDR: "10.244.1.0/24",
          ip6: "2001:db8::a",
          podCIDR6: "fd00:10:244:1::/64",
          pods: [...pods("node-a"), CLIENT_POD],
        },
        {
          name: "node-b",
          ip: "192.0.2.12",
          podCIDR: "10.244.2.0/24",
          ip6: "2001:db8::b",
          podCIDR6: "fd00:10:244:2::/64",
          pods: pods("node-b"),
        },
      ],
    });
    for (const pod of Object.keys(PODS))
      await startEchoServer(lab, pod, { name: pod, tcp: [8080], udp: [5353, TERM_PORT.targetPort], bind: "::" });
    bpffs = PrivateBpffs.create("sock6-a");
    proxy = await startProxy();
  });

  after(async () => {
    for (const c of holders) c.kill("SIGKILL");
    await proxy?.stop().catch(() => undefined);
    await proxy?.cleanup().catch(() => undefined);
    await lab?.destroy();
    bpffs?.release();
    rmSync(dir, { recursive: true, force: true });
    if (cgroup) {
      try {
        rmdirSync(cgroup);
      } catch {
        /* already gone or still busy: the umount below detaches it anyway */
      }
    }
    if (mounted) execFileSync("umount", ["-l", cgRoot], { timeout: 10_000 });
    rmSync(cgRoot, { recursive: true, force: true });
  });

  const names = (rs: Result[]) => new Set(rs.map((r) => r.name ?? `error:${r.error}`));
  const peers = (rs: Result[]) => new Set(rs.map((r) => r.peer ?? `error:${r.error}`));

  test("status lists the eight socket hooks (IPv4 and IPv6) on the configured cgroup", async () => {
    const st = await proxy!.status();
    const hooks = st.attachments.filter((a) => a.hook.startsWith("cgroup-"));
    assert.equal(SOCK_HOOKS.length, 8);
    assert.deepEqual(
      hooks.map((a) => [a.interface, a.hook, a.program]).sort(),
      SOCK_HOOKS.map((h) => [cgroup, h.hook, h.program]).sort(),
    );
  });

  test("a node process reaches an IPv6 ClusterIP with the choice made at the socket; tc translates nothing", async () => {
    const tcBefore = await translatedByTc();
    const revBefore = entries(MAP_NAMES.sockRevNat6);
    const [tcp, udp, udpc, emptyTcp, emptyUdp] = await run("node-a", [
      { kind: "tcp", host: VIP6, port: 80, n: 24 },
      { kind: "udp", host: VIP6, port: 53, n: 12 },
      { kind: "udpc", host: VIP6, port: 53, n: 12 },
      { kind: "tcp", host: VIP6_EMPTY, port: 80, n: 1 },
      { kind: "udpc", host: VIP6_EMPTY, port: 53, n: 1 },
    ]);
    assert.deepEqual([...names(tcp!.results)].sort(), ["web-1", "web-2", "web-3"], "TCP reaches every backend");
    assert.deepEqual([...peers(tcp!.results)], [`[${VIP6}]:80`], "getpeername shows the ClusterIP");
    for (const [kind, r] of [
      ["unconnected UDP (recvfrom)", udp!],
      ["connected UDP (getpeername)", udpc!],
    ] as const) {
      assert.ok(
        [...names(r.results)].every((n) => n.startsWith("web-")),
        `${kind}: every datagram answered: ${[...names(r.results)].join(", ")}`,
      );
      assert.ok(names(r.results).size >= 2, `${kind}: spread over backends`);
      assert.deepEqual([...peers(r.results)], [`[${VIP6}]:53`], `${kind}: the answer reads as the ClusterIP's`);
    }
    assert.deepEqual(emptyTcp!.results, [{ error: "EPERM" }], "TCP to an IPv6 frontend without backends is refused");
    assert.deepEqual(emptyUdp!.results, [{ error: "EPERM" }], "UDP to an IPv6 frontend without backends is refused");
    assert.ok(emptyTcp!.ms + emptyUdp!.ms < 1000, `refused at once (${emptyTcp!.ms + emptyUdp!.ms} ms)`);
    assert.equal(
      (await translatedByTc()) - tcBefore,
      0,
      "no packet was translated by tc: they left addressed to a backend",
    );
    const added = entries(MAP_NAMES.sockRevNat6) - revBefore;
    assert.ok(added >= 24 + 12, `one reverse entry per translated socket in ${MAP_NAMES.sockRevNat6} (${added})`);
  });

  test("an unconnected IPv6 UDP socket writes its reverse entry once per backend, not per datagram", async () => {
    const child = spawn("sh", ["-c", inCgroup("node-a", UDP_SENDER, [VIP6, 53])], { stdio: ["pipe", "pipe", "pipe"] });
    holders.push(child);
    let out = "";
    let err = "";
    child.stdout.setEncoding("utf8").on("data", (d: string) => (out += d));
    child.stderr.setEncoding("utf8").on("data", (d: string) => (err += d));
    const lines = async (n: number): Promise<number[]> => {
      const deadline = Date.now() + 20_000;
      while (out.split("\n").filter(Boolean).length < n) {
        if (Date.now() > deadline)
          throw new Error(`UDP sender: ${n} lines expected, got ${JSON.stringify(out)}; ${err}`);
        await new Promise((r) => setTimeout(r, 50));
      }
      return out.split("\n").filter(Boolean).map(Number);
    };
    assert.deepEqual(await lines(1), [20], "the first 20 datagrams are answered");
    // Mark every entry naming the ClusterIP's DNS port (pad byte 18, which no program writes but a full
    // update would reset); the socket's next datagrams go to backends it has used already.
    const m = native.BpfMap.openPinned(join(bpffs.path, MAP_NAMES.sockRevNat6));
    const vs = sockRevNat6Value.size;
    const ks = sockRevNat6Key.size;
    const ours = (v: Buffer) => {
      const fe = sockRevNat6Value.decode(v);
      return fe.address === VIP6 && fe.port === 53;
    };
    try {
      let marked = 0;
      {
        const { keys, values, count } = m.entries();
        for (let i = 0; i < count; i++) {
          const v = Buffer.from(values.subarray(i * vs, (i + 1) * vs));
          if (!ours(v)) continue;
          v[18] = 1;
          m.update(Buffer.from(keys.subarray(i * ks, (i + 1) * ks)), v);
          marked++;
        }
      }
      assert.ok(marked >= 2, `entries of the socket's backends (${marked})`);
      child.stdin.write("go\n");
      assert.deepEqual(await lines(2), [20, 20], "the next 20 are answered too");
      const { values, count } = m.entries();
      let still = 0;
      let total = 0;
      for (let i = 0; i < count; i++) {
        const v = Buffer.from(values.subarray(i * vs, (i + 1) * vs));
        if (!ours(v)) continue;
        total++;
        if (v[18] === 1) still++;
      }
      // A backend the first 20 never picked (p < 0.1 %) would add an unmarked entry: allowed.
      assert.ok(total >= marked, "entries are not lost");
      assert.equal(still, marked, "no existing entry was written again");
    } finally {
      m.close();
    }
  });

  test("a dual-stack socket reaches an IPv4 ClusterIP by its IPv4-mapped address, translated with the IPv4 maps", async () => {
    const rev4Before = entries(MAP_NAMES.sockRevNat);
    const rev6Before = entries(MAP_NAMES.sockRevNat6);
    const [tcp, udp, udpc, emptyTcp, emptyUdp] = await run("node-a", [
      { kind: "tcp", host: mapped(VIP4), port: 80, n: 12 },
      { kind: "udp", host: mapped(VIP4), port: 53, n: 6 },
      { kind: "udpc", host: mapped(VIP4), port: 53, n: 6 },
      { kind: "tcp", host: mapped(VIP4_EMPTY), port: 80, n: 1 },
      { kind: "udpc", host: mapped(VIP4_EMPTY), port: 53, n: 1 },
    ]);
    assert.ok(
      [...names(tcp!.results)].every((n) => n.startsWith("web-")) && names(tcp!.results).size >= 2,
      `TCP answered by backends: ${[...names(tcp!.results)].join(", ")}`,
    );
    assert.deepEqual([...peers(tcp!.results)], [`[${mapped(VIP4)}]:80`], "getpeername shows the mapped ClusterIP");
    for (const [kind, r] of [
      ["unconnected UDP", udp!],
      ["connected UDP", udpc!],
    ] as const) {
      assert.ok(
        [...names(r.results)].every((n) => n.startsWith("web-")),
        `${kind}: every datagram answered: ${[...names(r.results)].join(", ")}`,
      );
      assert.deepEqual([...peers(r.results)], [`[${mapped(VIP4)}]:53`], `${kind}: the answer reads as the ClusterIP's`);
    }
    assert.deepEqual(
      emptyTcp!.results,
      [{ error: "EPERM" }],
      "TCP to an empty IPv4 Service by its mapped address is refused",
    );
    assert.deepEqual(
      emptyUdp!.results,
      [{ error: "EPERM" }],
      "UDP to an empty IPv4 Service by its mapped address is refused",
    );
    assert.ok(entries(MAP_NAMES.sockRevNat) - rev4Before >= 12 + 6, "the reverse entries are IPv4 ones");
    assert.equal(entries(MAP_NAMES.sockRevNat6), rev6Before, "no IPv6 reverse entry for an IPv4-mapped peer");
  });

  /**
   * A connected UDP socket to `target` (the "term" Service's `vip`) is answered, the daemon then drops the
   * backend that answered from the manifest: the socket is ended, its next send fails, and the log names the
   * ended socket's peer (`peer` of the pod).
   */
  async function endedWhenRemoved(
    t: TestContext,
    target: string,
    vip: string,
    peer: (pod: Pod) => string,
    what: string,
  ): Promise<void> {
    const h = holder(target, TERM_PORT.port);
    const first = await h.first();
    const m = /^answer (web-[12])$/.exec(first);
    assert.ok(m, `the first datagram is answered by a backend of "term": ${first}`);
    const used = m[1] as Pod;
    const other: Pod = used === "web-1" ? "web-2" : "web-1";
    const logsBefore = proxy!.logs.length;
    const backendsAre = (n: number) =>
      proxy!.waitForStatus((s) => s.frontends.some((f) => f.address === vip && f.backends.length === n), 10_000);
    writeFileSync(join(dir, "services.yaml"), manifests([other]));
    t.after(async () => {
      writeFileSync(join(dir, "services.yaml"), manifests());
      await backendsAre(2);
    });
    await backendsAre(1);
    await proxy!.waitForLog(/ended sockets connected to removed backends/, 10_000);
    const { second, out } = await h.next();
    assert.notEqual(second, `answer ${used}`, `the removed backend ${used} still got the datagram: ${out}`);
    assert.ok(
      /^error E[A-Z]+$/.test(second) || /^event error E[A-Z]+$/m.test(out),
      `the socket reports an error: ${JSON.stringify(out)}`,
    );
    assert.ok(proxy!.logs.slice(logsBefore).includes(peer(used)), `the log names the ended socket's ${what} peer`);
  }

  test("a connected IPv6 UDP socket is ended (bpf_sock_destroy) when the daemon removes its IPv6 backend", (t) =>
    endedWhenRemoved(t, VIP6_TERM, VIP6_TERM, (p) => `[${PODS[p].ip6}]:${TERM_PORT.targetPort}`, "IPv6"));

  test("a dual-stack UDP socket connected to an IPv4-mapped ClusterIP is ended when the daemon removes its backend", (t) =>
    endedWhenRemoved(t, mapped(VIP4_TERM), VIP4_TERM, (p) => `${PODS[p].ip}:${TERM_PORT.targetPort}`, "(IPv4)"));

  test("pod mode: a pod's IPv6 sockets are translated at connect() and sendmsg(), and tc translates nothing", async () => {
    await proxy!.stop();
    proxy = await startProxy(["--socket-lb-pod-namespaces"]);
    const tcBefore = await translatedByTc();
    const revBefore = entries(MAP_NAMES.sockRevNat6);
    const [tcp, udp, udpc] = await run(CLIENT_POD.name, [
      { kind: "tcp", host: VIP6, port: 80, n: 12 },
      { kind: "udp", host: VIP6, port: 53, n: 6 },
      { kind: "udpc", host: VIP6, port: 53, n: 6 },
    ]);
    for (const [kind, r, port] of [
      ["TCP", tcp!, 80],
      ["unconnected UDP", udp!, 53],
      ["connected UDP", udpc!, 53],
    ] as const) {
      assert.ok(
        [...names(r.results)].every((n) => n.startsWith("web-")),
        `${kind}: every attempt answered: ${[...names(r.results)].join(", ")}`,
      );
      assert.deepEqual([...peers(r.results)], [`[${VIP6}]:${port}`], `${kind}: the peer reads as the ClusterIP`);
    }
    assert.ok(names(tcp!.results).size >= 2, "TCP spread over backends");
    const added = entries(MAP_NAMES.sockRevNat6) - revBefore;
    assert.ok(added >= 12 + 6, `each socket translated at the socket (${added} new reverse entries)`);
    // The pod's packets cross its veth's tc ingress, which would translate a packet to the ClusterIP.
    assert.equal((await translatedByTc()) - tcBefore, 0, "tc translated none of the pod's packets");
  });

  test("cleanup takes all eight socket programs off the cgroup", async () => {
    await proxy!.stop();
    await proxy!.cleanup();
    for (const h of SOCK_HOOKS) assert.deepEqual(native.cgroupQuery(cgroup, h.attachType), [], `${h.hook} detached`);
  });
});

// All or nothing: when one hook cannot be attached (here connect6, held by another program attached with
// BPF_F_ALLOW_MULTI, beside which an exclusive attachment is refused), start fails and the hooks attached
// before it are taken off again: no IPv4-only half stays behind. On a child of a private cgroup2 mount.
describe("attaching the socket programs is all or nothing", { timeout: 60_000 }, () => {
  let cgRoot: string;
  let cgroup: string;
  let mounted = false;
  let bpffs: PrivateBpffs | undefined;
  let other: PrivateBpffs | undefined;
  let foreign: native.BpfObject | undefined;

  before(() => {
    cgRoot = mkdtempSync(join(tmpdir(), "bpxsock6-attach-"));
    execFileSync("mount", ["-t", "cgroup2", "none", cgRoot], { timeout: 10_000 });
    mounted = true;
    cgroup = join(cgRoot, `bpfproxy-attach-${process.pid}`);
    mkdirSync(cgroup);
    bpffs = PrivateBpffs.create("sock6-attach");
    other = PrivateBpffs.create("sock6-other");
  });

  after(() => {
    if (foreign) {
      try {
        native.cgroupDetach(cgroup, foreign.program("bpx_sock_conn6").fd, native.constants.BPF_CGROUP_INET6_CONNECT);
      } catch {
        /* not attached: the attach itself failed */
      }
      foreign.close();
    }
    bpffs?.release();
    other?.release();
    try {
      rmdirSync(cgroup);
    } catch {
      /* the umount below detaches anything left */
    }
    if (mounted) execFileSync("umount", ["-l", cgRoot], { timeout: 10_000 });
    rmSync(cgRoot, { recursive: true, force: true });
  });

  test("a hook that cannot be attached fails the attach and leaves none of the eight behind", () => {
    // Another program on connect6, shared (ALLOW_MULTI): the same object loaded apart, on its own pins.
    foreign = new native.BpfObject(SOCK_OBJECT_PATH, { pinRoot: other!.path });
    foreign.load();
    const foreignId = foreign.program("bpx_sock_conn6").info.id;
    native.cgroupAttach(
      cgroup,
      foreign.program("bpx_sock_conn6").fd,
      native.constants.BPF_CGROUP_INET6_CONNECT,
      native.constants.BPF_F_ALLOW_MULTI,
    );
    assert.throws(() => attachSocketLb(bpffs!.path, cgroup), "the exclusive connect6 attach is refused");
    for (const h of SOCK_HOOKS) {
      const ids = native.cgroupQuery(cgroup, h.attachType);
      if (h.hook === "cgroup-connect6") assert.deepEqual(ids, [foreignId], "the other tool's program stays");
      else assert.deepEqual(ids, [], `${h.hook}: nothing of ours left attached`);
    }
  });
});
