// End to end: socket-level load balancing for processes on the node (host network). A process in
// the node's namespace and in a cgroup the test made reaches a ClusterIP (TCP, connected and
// unconnected UDP) and a NodePort, sees the Service's address as its peer, and is refused at once by
// a Service without endpoints. The programs go on a child of a private cgroup2 mount only, and
// `bpfproxy cleanup` takes them off. Everything is removed after, also on failure.
import { describe, test, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFile, execFileSync } from "node:child_process";
import { mkdirSync, mkdtempSync, rmdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Lab } from "../src/lab/netns.js";
import { startEchoServer } from "../src/lab/index.js";
import { PrivateBpffs, ProxyNode } from "../src/lab/proxy.js";
import * as native from "../src/native/index.js";
import { SOCK_HOOKS } from "../src/dataplane/sock.js";
import { DNS, HTTP, endpointSlice, manifest, node, service } from "./fixtures/k8s-objects.js";

assert.equal(process.getuid?.(), 0, "end-to-end tests build namespaces, cgroups and load BPF: run them as root");

const VIP = "10.96.0.10";
const VIP_EMPTY = "10.96.0.20";
const NODE_IP = "192.0.2.11";
const NODE_PORT = 30080;
const PODS = { "web-1": "10.244.1.5", "web-2": "10.244.1.6", "web-3": "10.244.2.5" };

function manifests(): string {
  return manifest([
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

describe("socket-level load balancing for node processes", { timeout: 180_000 }, () => {
  let lab: Lab;
  let dir: string;
  let bpffs: PrivateBpffs;
  let proxy: ProxyNode | undefined;
  let cgRoot: string;
  let cgroup: string;
  let mounted = false;

  /** Runs the client in node-a's namespace from inside the test's cgroup. */
  function hostClient(): Promise<Record<string, unknown>> {
    const script = `echo $$ > ${cgroup}/cgroup.procs && exec ip netns exec ${lab.nsName("node-a")} node -e '${CLIENT.replace(/'/g, "'\\''")}' ${VIP} ${VIP_EMPTY} ${NODE_IP} ${NODE_PORT}`;
    return new Promise((resolve, reject) => {
      execFile("sh", ["-c", script], { timeout: 90_000, maxBuffer: 1 << 20 }, (err, stdout, stderr) => {
        if (err) reject(new Error(`host client failed: ${err.message}\n${stderr}`));
        else resolve(JSON.parse(stdout) as Record<string, unknown>);
      });
    });
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
          pods: [
            { name: "web-1", ip: PODS["web-1"] },
            { name: "web-2", ip: PODS["web-2"] },
          ],
        },
        { name: "node-b", ip: "192.0.2.12", podCIDR: "10.244.2.0/24", pods: [{ name: "web-3", ip: PODS["web-3"] }] },
      ],
    });
    for (const pod of Object.keys(PODS)) await startEchoServer(lab, pod, { name: pod, tcp: [8080], udp: [5353] });
    bpffs = PrivateBpffs.create("sock-a");
    proxy = await ProxyNode.start(lab, "node-a", {
      manifestDir: dir,
      bpffs: bpffs.path,
      extraArgs: ["--cgroup-path", cgroup],
    });
    await proxy.waitForStatus((s) => s.frontends.some((f) => f.address === VIP && f.backends.length === 3), 10_000);
  });

  after(async () => {
    await proxy?.stop().catch(() => undefined);
    await proxy?.cleanup().catch(() => undefined);
    await lab?.destroy();
    bpffs?.release();
    rmSync(dir, { recursive: true, force: true });
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

  test("cleanup takes the socket programs off the cgroup", async () => {
    await proxy!.stop();
    await proxy!.cleanup();
    for (const h of SOCK_HOOKS) assert.deepEqual(native.cgroupQuery(cgroup, h.attachType), [], `${h.hook} detached`);
  });
});
