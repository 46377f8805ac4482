// End to end: socket-level load balancing for processes on the node (host network). A process in
// the node's namespace and in a cgroup the test made reaches a ClusterIP (TCP, connected and
// unconnected UDP) and a NodePort, sees the Service's address as its peer, and is refused at once by
// a Service without endpoints. As on a node, where the DaemonSet attaches at the cgroup root, the
// cgroup also holds processes of other network namespaces (a pod, an outside client): by default
// their sockets are not translated and tc serves them (ClientIP affinity holds, a NodePort is reached
// without a route to the pods); with --socket-lb-pod-namespaces a pod's sockets are translated except
// where only tc keeps the Service's semantics (affinity). A connected UDP socket whose backend is
// removed is ended (bpf_sock_destroy). The programs go on a child of a private cgroup2 mount only, and
// `bpfproxy cleanup` takes them off. Everything is removed after, also on failure.
import { describe, test, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFile, execFileSync, spawn, type ChildProcess } from "node:child_process";
import { mkdirSync, mkdtempSync, rmdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Lab } from "../src/lab/netns.js";
import { startEchoServer } from "../src/lab/index.js";
import { PrivateBpffs, ProxyNode } from "../src/lab/proxy.js";
import * as native from "../src/native/index.js";
import { SOCK_HOOKS } from "../src/dataplane/bpf/sock.js";
import { MAP_NAMES, sockRevNatKey, sockRevNatValue } from "../src/dataplane/bpf/abi.js";
import { DNS, HTTP, endpointSlice, manifest, node, service } from "./fixtures/k8s-objects.js";

assert.equal(process.getuid?.(), 0, "end-to-end tests build namespaces, cgroups and load BPF: run them as root");

const VIP = "10.96.0.10";
const VIP_EMPTY = "10.96.0.20";
const VIP_STICKY = "10.96.0.30";
const VIP_TERM = "10.96.0.40";
const CLIENT_POD = { name: "client", ip: "10.244.1.9" };
const EXT = { name: "ext", ip: "198.51.100.10" };
// Ports only the Service "term" uses: removing its endpoint removes the backend itself.
const TERM_PORT = { name: "dns", port: 53, targetPort: 5354, protocol: "UDP" as const };
const NODE_IP = "192.0.2.11";
const NODE_PORT = 30080;
const PODS = { "web-1": "10.244.1.5", "web-2": "10.244.1.6", "web-3": "10.244.2.5" };

const STICKY = {
  sessionAffinity: "ClientIP",
  sessionAffinityConfig: { clientIP: { timeoutSeconds: 10800 } },
};

function manifests(termBackends: (keyof typeof PODS)[] = ["web-1", "web-2"]): string {
  return manifest([
    service("sticky", VIP_STICKY, [HTTP], { spec: STICKY }),
    endpointSlice(
      "sticky",
      [HTTP],
      Object.entries(PODS).map(([n, ip]) => ({ ip, node: n === "web-3" ? "node-b" : "node-a" })),
    ),
    service("term", VIP_TERM, [TERM_PORT]),
    endpointSlice(
      "term",
      [TERM_PORT],
      termBackends.map((n) => ({ ip: PODS[n], node: "node-a" })),
    ),
    service("web", VIP, [{ ...HTTP, nodePort: NODE_PORT }, DNS], { spec: { type: "NodePort" } }),
    endpointSlice(
      "web",
      [HTTP, DNS],
      [
        { ip: PODS["web-1"], node: "node-a" },
        { ip: PODS["web-2"], node: "node-a" },
        { ip: PODS["web-3"], node: "node-b" },
      ],
    ),
    service("empty", VIP_EMPTY, [HTTP, DNS]),
    endpointSlice("empty", [HTTP, DNS], []),
    node("node-a", NODE_IP),
    node("node-b", "192.0.2.12"),
  ]);
}

// The host process: what it sent, what answered, and what the socket API says the peer is.
const CLIENT = `
const net = require("node:net"), dgram = require("node:dgram");
const [vip, empty, nodeIp, nodePort] = process.argv.slice(1);
const first = (s) => s.toString().trim().split(" ")[0];
const tcp = (host, port) => new Promise((resolve) => {
  const s = net.connect({ host, port: Number(port) });
  const t = setTimeout(() => { s.destroy(); resolve({ error: "timeout" }); }, 3000);
  s.on("connect", () => s.write("hi\\n"));
  s.on("data", (d) => { clearTimeout(t); const peer = s.remoteAddress + ":" + s.remotePort; s.destroy(); resolve({ name: first(d), peer }); });
  s.on("error", (e) => { clearTimeout(t); resolve({ error: e.code }); });
});
const udp = (host, port, connected) => new Promise((resolve) => {
  const s = dgram.createSocket("udp4");
  const t = setTimeout(() => { s.close(); resolve({ error: "timeout" }); }, 3000);
  s.on("message", (m, rinfo) => {
    clearTimeout(t);
    const peer = connected ? s.remoteAddress().address + ":" + s.remoteAddress().port : rinfo.address + ":" + rinfo.port;
    s.close();
    resolve({ name: first(m), peer });
  });
  s.on("error", (e) => { clearTimeout(t); s.close(); resolve({ error: e.code }); });
  if (connected) s.connect(Number(port), host, (e) => { if (!e) return s.send("q\\n"); clearTimeout(t); s.close(); resolve({ error: e.code }); });
  else s.send("q\\n", Number(port), host);
});
(async () => {
  const out = { tcp: [], udpUnconnected: [], udpConnected: [], nodePort: [], empty: {} };
  for (let i = 0; i < 24; i++) out.tcp.push(await tcp(vip, 80));
  for (let i = 0; i < 12; i++) out.udpUnconnected.push(await udp(vip, 53, false));
  for (let i = 0; i < 12; i++) out.udpConnected.push(await udp(vip, 53, true));
  for (let i = 0; i < 6; i++) out.nodePort.push(await tcp(nodeIp, nodePort));
  const t0 = Date.now();
  out.empty = { tcp: await tcp(empty, 80), udp: await udp(empty, 53, true), ms: Date.now() - t0 };
  console.log(JSON.stringify(out));
})();
`;

type Result = { name?: string; peer?: string; error?: string };

// One unconnected UDP socket: 20 datagrams to host:port (each answered), then 20 more when a line
// arrives on stdin; prints how many of each batch were answered.
const UDP_SENDER = `
const dgram = require("node:dgram");
const [host, port] = process.argv.slice(1);
const s = dgram.createSocket("udp4");
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

// A client in another network namespace (a pod, an outside host): n TCP connections, one at a time.
const TCP_CLIENT = `
const net = require("node:net");
const [host, port, n] = process.argv.slice(1);
const tcp = () => new Promise((resolve) => {
  const s = net.connect({ host, port: Number(port) });
  const t = setTimeout(() => { s.destroy(); resolve({ error: "timeout" }); }, 3000);
  s.on("connect", () => s.write("hi\\n"));
  s.on("data", (d) => { clearTimeout(t); s.destroy(); resolve({ name: d.toString().trim().split(" ")[0] }); });
  s.on("error", (e) => { clearTimeout(t); resolve({ error: e.code }); });
});
(async () => { const out = []; for (let i = 0; i < Number(n); i++) out.push(await tcp()); console.log(JSON.stringify(out)); })();
`;

// A connected UDP socket that asks once, then again when a line arrives on stdin: what the second
// datagram gets after its backend was removed.
const UDP_HOLDER = `
const dgram = require("node:dgram");
const [host, port] = process.argv.slice(1);
const s = dgram.createSocket("udp4");
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

describe("socket-level load balancing for node processes", { timeout: 180_000 }, () => {
  let lab: Lab;
  let dir: string;
  let bpffs: PrivateBpffs;
  let proxy: ProxyNode | undefined;
  let cgRoot: string;
  let cgroup: string;
  let mounted = false;
  const holders: ChildProcess[] = [];

  /** The shell line that runs `script` in a lab namespace from inside the test's cgroup. */
  function inCgroup(ns: string, script: string, args: (string | number)[]): string {
    return `echo $$ > ${cgroup}/cgroup.procs && exec ip netns exec ${lab.nsName(ns)} node -e '${script.replace(/'/g, "'\\''")}' ${args.join(" ")}`;
  }

  function runClient<T>(ns: string, script: string, args: (string | number)[]): Promise<T> {
    return new Promise((resolve, reject) => {
      execFile(
        "sh",
        ["-c", inCgroup(ns, script, args)],
        { timeout: 90_000, maxBuffer: 1 << 20 },
        (err, stdout, stderr) => {
          if (err) reject(new Error(`client in ${ns} failed: ${err.message}\n${stderr}`));
          else resolve(JSON.parse(stdout) as T);
        },
      );
    });
  }

  /** Runs the client in node-a's namespace from inside the test's cgroup. */
  function hostClient(): Promise<Record<string, unknown>> {
    return runClient("node-a", CLIENT, [VIP, VIP_EMPTY, NODE_IP, NODE_PORT]);
  }

  /** n TCP connections from another namespace (in the same cgroup); the backends that answered. */
  function tcpFrom(ns: string, host: string, port: number, n: number): Promise<Result[]> {
    return runClient<Result[]>(ns, TCP_CLIENT, [host, port, n]);
  }

  /** Entries of the socket programs' reverse map: one per socket they translated (LRU, far from full here). */
  function sockRevNatEntries(): number {
    const m = native.BpfMap.openPinned(join(bpffs.path, MAP_NAMES.sockRevNat), { readOnly: true });
    try {
      return m.entries().count;
    } finally {
      m.close();
    }
  }

  async function startProxy(extraArgs: string[] = []): Promise<ProxyNode> {
    const p = await ProxyNode.start(lab, "node-a", {
      manifestDir: dir,
      bpffs: bpffs.path,
      extraArgs: ["--cgroup-path", cgroup, ...extraArgs],
    });
    // status answers from the pins alone: a restarted daemon has attached only once it says so.
    await p.waitForLog(/socket load balancing attached/, 20_000);
    await p.waitForStatus(
      (s) =>
        s.frontends.some((f) => f.address === VIP && f.backends.length === 3) &&
        s.frontends.some((f) => f.address === VIP_STICKY && f.backends.length === 3) &&
        s.frontends.some((f) => f.address === VIP_TERM && f.backends.length === 2),
      10_000,
    );
    return p;
  }

  before(async () => {
    cgRoot = mkdtempSync(join(tmpdir(), "bpxsock-cgroup-"));
    execFileSync("mount", ["-t", "cgroup2", "none", cgRoot], { timeout: 10_000 });
    mounted = true;
    cgroup = join(cgRoot, `bpfproxy-test-${process.pid}`);
    mkdirSync(cgroup);
    dir = mkdtempSync(join(tmpdir(), "bpfproxy-sock-"));
    writeFileSync(join(dir, "services.yaml"), manifests());
    lab = await Lab.create({
      prefix: `bpxsk${process.pid}-`,
      nodes: [
        {
          name: "node-a",
          ip: NODE_IP,
          podCIDR: "10.244.1.0/24",
          pods: [{ name: "web-1", ip: PODS["web-1"] }, { name: "web-2", ip: PODS["web-2"] }, CLIENT_POD],
        },
        { name: "node-b", ip: "192.0.2.12", podCIDR: "10.244.2.0/24", pods: [{ name: "web-3", ip: PODS["web-3"] }] },
      ],
      external: EXT,
    });
    for (const pod of Object.keys(PODS))
      await startEchoServer(lab, pod, { name: pod, tcp: [8080], udp: [5353, TERM_PORT.targetPort] });
    bpffs = PrivateBpffs.create("sock-a");
    proxy = await startProxy();
  });

  after(async () => {
    await proxy?.stop().catch(() => undefined);
    await proxy?.cleanup().catch(() => undefined);
    await lab?.destroy();
    bpffs?.release();
    rmSync(dir, { recursive: true, force: true });
    for (const c of holders) c.kill("SIGKILL");
    if (cgroup) {
      // Anything still attached goes with the cgroup directory.
      try {
        rmdirSync(cgroup);
      } catch {
        /* already gone or still busy: the umount below detaches it anyway */
      }
    }
    if (mounted) execFileSync("umount", ["-l", cgRoot], { timeout: 10_000 });
    rmSync(cgRoot, { recursive: true, force: true });
  });

  test("status lists the four socket hooks on the configured cgroup only", async () => {
    const st = await proxy!.status();
    const hooks = st.attachments.filter((a) => a.hook.startsWith("cgroup-"));
    assert.deepEqual(
      hooks.map((a) => [a.interface, a.hook, a.program]).sort(),
      SOCK_HOOKS.map((h) => [cgroup, h.hook, h.program]).sort(),
    );
  });

  test("a node process reaches ClusterIPs and NodePorts, sees the Service as its peer, and is refused by an empty Service", async () => {
    const out = (await hostClient()) as Record<string, Result[]> & { empty: { tcp: Result; udp: Result; ms: number } };
    const names = (rs: Result[]) => new Set(rs.map((r) => r.name ?? `error:${r.error}`));
    const peers = (rs: Result[]) => new Set(rs.map((r) => r.peer ?? `error:${r.error}`));

    assert.deepEqual(
      [...names(out.tcp!)].sort(),
      ["web-1", "web-2", "web-3"],
      "TCP reaches every backend, local and remote",
    );
    assert.deepEqual([...peers(out.tcp!)], [`${VIP}:80`], "getpeername shows the ClusterIP");
    for (const kind of ["udpUnconnected", "udpConnected"] as const) {
      assert.ok(
        [...names(out[kind]!)].every((n) => n.startsWith("web-")),
        `${kind}: every datagram answered: ${[...names(out[kind]!)].join(", ")}`,
      );
      assert.ok(names(out[kind]!).size >= 2, `${kind}: spread over backends`);
      assert.deepEqual([...peers(out[kind]!)], [`${VIP}:53`], `${kind}: the answer comes from the ClusterIP`);
    }
    assert.ok(
      [...names(out.nodePort!)].every((n) => n.startsWith("web-")),
      `NodePort answered: ${[...names(out.nodePort!)].join(", ")}`,
    );
    assert.deepEqual([...peers(out.nodePort!)], [`${NODE_IP}:${NODE_PORT}`], "NodePort peer is the node address");

    assert.equal(out.empty.tcp.error, "EPERM", "TCP to a Service without endpoints is refused");
    assert.equal(out.empty.udp.error, "EPERM", "UDP to a Service without endpoints is refused");
    assert.ok(out.empty.ms < 1000, `refused at once (${out.empty.ms} ms)`);
  });

  test("an unconnected UDP socket writes its reverse entry once per backend, not per datagram", async () => {
    const child = spawn("sh", ["-c", inCgroup("node-a", UDP_SENDER, [VIP, 53])], { stdio: ["pipe", "pipe", "pipe"] });
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
    // Mark every entry that names the ClusterIP's DNS port (pad byte 6, which no program writes but a
    // full update would reset); the socket's next datagrams go to backends it has used already.
    const m = native.BpfMap.openPinned(join(bpffs.path, MAP_NAMES.sockRevNat));
    const mark = (): number => {
      const { keys, values, count } = m.entries();
      const ks = sockRevNatKey.size;
      const vs = sockRevNatValue.size;
      let marked = 0;
      for (let i = 0; i < count; i++) {
        const v = Buffer.from(values.subarray(i * vs, (i + 1) * vs));
        const fe = sockRevNatValue.decode(v);
        if (fe.address !== VIP || fe.port !== 53) continue;
        v[6] = 1;
        m.update(Buffer.from(keys.subarray(i * ks, (i + 1) * ks)), v);
        marked++;
      }
      return marked;
    };
    const stillMarked = (): { marked: number; total: number } => {
      const { values, count } = m.entries();
      const vs = sockRevNatValue.size;
      let marked = 0;
      let total = 0;
      for (let i = 0; i < count; i++) {
        const v = values.subarray(i * vs, (i + 1) * vs);
        const fe = sockRevNatValue.decode(Buffer.from(v));
        if (fe.address !== VIP || fe.port !== 53) continue;
        total++;
        if (v[6] === 1) marked++;
      }
      return { marked, total };
    };
    try {
      const marked = mark();
      assert.ok(marked >= 2, `entries of the socket's backends (${marked})`);
      child.stdin.write("go\n");
      assert.deepEqual(await lines(2), [20, 20], "the next 20 are answered too");
      const after = stillMarked();
      // A backend the first 20 never picked (p < 0.1 %) would add an unmarked entry: allowed.
      assert.ok(after.total >= marked, "entries are not lost");
      assert.equal(after.marked, marked, "no existing entry was written again");
    } finally {
      m.close();
    }
  });

  test("by default a pod in the cgroup is left to tc: ClientIP affinity keeps one backend for 20 connections", async () => {
    const before = sockRevNatEntries();
    const sticky = await tcpFrom(CLIENT_POD.name, VIP_STICKY, 80, 20);
    const plain = await tcpFrom(CLIENT_POD.name, VIP, 80, 12);
    assert.equal(sockRevNatEntries(), before, "no socket of the pod was translated at connect()");
    const names = new Set(sticky.map((r) => r.name ?? `error:${r.error}`));
    assert.equal(names.size, 1, `one backend for every connection: ${[...names].join(", ")}`);
    assert.match([...names][0]!, /^web-/);
    assert.ok(
      plain.every((r) => r.name?.startsWith("web-")),
      `the pod reaches a ClusterIP through tc: ${JSON.stringify(plain)}`,
    );
  });

  test("by default a process in another namespace reaches a NodePort through tc (it has no route to the pods)", async () => {
    const out = await tcpFrom(EXT.name, NODE_IP, NODE_PORT, 10);
    assert.ok(
      out.every((r) => r.name?.startsWith("web-")),
      `every connection answered by a backend: ${JSON.stringify(out)}`,
    );
  });

  test("a connected UDP socket whose backend is removed is ended (bpf_sock_destroy)", async (t) => {
    const child = spawn("sh", ["-c", inCgroup("node-a", UDP_HOLDER, [VIP_TERM, TERM_PORT.port])], {
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
    const [first] = await lines(1);
    const m = /^answer (web-[12])$/.exec(first!);
    assert.ok(m, `the first datagram is answered by a backend of "term": ${first}`);
    const used = m[1] as "web-1" | "web-2";
    const other = used === "web-1" ? "web-2" : "web-1";
    writeFileSync(join(dir, "services.yaml"), manifests([other]));
    // The backend comes back afterwards, also when an assertion failed: the next test needs both.
    t.after(async () => {
      writeFileSync(join(dir, "services.yaml"), manifests());
      await proxy!.waitForStatus(
        (s) => s.frontends.some((f) => f.address === VIP_TERM && f.backends.length === 2),
        10_000,
      );
    });
    await proxy!.waitForStatus(
      (s) => s.frontends.some((f) => f.address === VIP_TERM && f.backends.length === 1),
      10_000,
    );
    await proxy!.waitForLog(/ended sockets connected to removed backends/, 10_000);
    child.stdin.write("go\n");
    const all = await lines(2);
    console.log(`# UDP client after the removal: ${JSON.stringify(out)}`);
    const second = all[all.length - 1]!;
    // The pod behind the removed backend still answers on its address: only ending the socket stops it.
    assert.notEqual(second, `answer ${used}`, `the removed backend ${used} still got the datagram: ${all.join(" | ")}`);
    assert.ok(
      /^error E[A-Z]+$/.test(second) || /^event error E[A-Z]+$/m.test(out),
      `the socket reports an error: ${JSON.stringify(out)}`,
    );
    assert.ok(proxy!.logs.includes(`${PODS[used]}:${TERM_PORT.targetPort}`), "the log names the ended socket's peer");
  });

  test("pod mode (--socket-lb-pod-namespaces): a pod's sockets are translated, ClientIP affinity is still tc's", async () => {
    await proxy!.stop();
    proxy = await startProxy(["--socket-lb-pod-namespaces"]);
    const before = sockRevNatEntries();
    const plain = await tcpFrom(CLIENT_POD.name, VIP, 80, 12);
    const translated = sockRevNatEntries() - before;
    assert.ok(
      plain.every((r) => r.name?.startsWith("web-")),
      `the pod reaches the ClusterIP: ${JSON.stringify(plain)}`,
    );
    assert.ok(translated >= 12, `each of the pod's 12 sockets was translated at connect() (${translated} new entries)`);
    assert.ok(new Set(plain.map((r) => r.name)).size >= 2, "spread over backends");

    const mid = sockRevNatEntries();
    const sticky = await tcpFrom(CLIENT_POD.name, VIP_STICKY, 80, 20);
    assert.equal(sockRevNatEntries(), mid, "a ClientIP-affinity Service is left to tc");
    const names = new Set(sticky.map((r) => r.name ?? `error:${r.error}`));
    assert.equal(names.size, 1, `one backend for every connection: ${[...names].join(", ")}`);
    assert.match([...names][0]!, /^web-/);
  });

  test("cleanup takes the socket programs off the cgroup", async () => {
    await proxy!.stop();
    await proxy!.cleanup();
    for (const h of SOCK_HOOKS) assert.deepEqual(native.cgroupQuery(cgroup, h.attachType), [], `${h.hook} detached`);
  });
});
