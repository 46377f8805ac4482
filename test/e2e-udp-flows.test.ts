// End to end: a UDP stream (one connected socket, a datagram every 50 ms) across its backend leaving
// the Service. kube-proxy deletes the UDP conntrack entries of an endpoint that stops serving, so the
// stream's next datagrams go to a serving backend; without that the stream stays on the old backend
// (still running here and still answering) for as long as it keeps sending. Checked for a removed
// endpoint and for one that turns not ready, over IPv4 and over IPv6 (an IPv6 Service, IPv6 EndpointSlice and
// the IPv6 conntrack map). Real daemon in private namespaces; removed after.
import { describe, test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import type { ChildProcess } from "node:child_process";
import { Lab } from "../src/lab/netns.js";
import { startEchoServer } from "../src/lab/index.js";
import { PrivateBpffs, ProxyNode } from "../src/lab/proxy.js";
import { DNS, endpointSlice, manifest, node, service } from "./fixtures/k8s-objects.js";

assert.equal(process.getuid?.(), 0, "end-to-end tests build namespaces and load BPF: run them as root");

type Family = "IPv4" | "IPv6";
const VIP: Record<Family, string> = { IPv4: "10.96.0.10", IPv6: "fd00:96::10" };
const KEEP_VIP: Record<Family, string> = { IPv4: "10.96.0.11", IPv6: "fd00:96::11" };
const PODS: Record<string, { ip: string; ip6: string }> = {
  "web-1": { ip: "10.244.1.5", ip6: "fd00:10:244:1::5" },
  "web-2": { ip: "10.244.1.6", ip6: "fd00:10:244:1::6" },
  "web-3": { ip: "10.244.1.7", ip6: "fd00:10:244:1::7" },
};

/**
 * "dns" with the given endpoints, and "dns-keep" (another ClusterIP) always with all three: a backend leaving
 * "dns" stays in the data plane for "dns-keep", so only the stale-flow flush (not the removal of the backend
 * itself, which ends every flow to it) can move the stream.
 */
function manifests(family: Family, endpoints: { name: string; ready: boolean }[]): string {
  const v6 = family === "IPv6";
  const pair = (name: string, vip: string, eps: { name: string; ready: boolean }[]) => {
    const svc = service(name, vip, [DNS], v6 ? { spec: { ipFamilies: ["IPv6"], ipFamilyPolicy: "SingleStack" } } : {});
    const slice = endpointSlice(
      name,
      [DNS],
      eps.map((e) => ({ ip: v6 ? PODS[e.name]!.ip6 : PODS[e.name]!.ip, node: "node-a", ready: e.ready })),
    );
    return [svc, v6 ? { ...slice, addressType: "IPv6" } : slice];
  };
  const all = Object.keys(PODS).map((name) => ({ name, ready: true }));
  return manifest([
    ...pair("dns", VIP[family], endpoints),
    ...pair("dns-keep", KEEP_VIP[family], all),
    node("node-a", "192.0.2.11"),
  ]);
}

// One connected socket: only answers from VIP:53 arrive. Prints the answering backend per datagram.
const STREAM = `
const s = require("node:dgram").createSocket(process.argv[1].includes(":") ? "udp6" : "udp4");
s.on("message", (m) => console.log(m.toString().trim().split(" ")[0]));
s.connect(53, process.argv[1], () => setInterval(() => s.send("q\\n"), 50));
`;

class Stream {
  readonly answers: { at: number; name: string }[] = [];
  constructor(readonly child: ChildProcess) {
    createInterface({ input: child.stdout! }).on("line", (l) => this.answers.push({ at: Date.now(), name: l.trim() }));
  }
  /** Waits (bounded) until an answer after `since` satisfies pred. */
  async waitFor(
    pred: (name: string) => boolean,
    since: number,
    timeoutMs: number,
  ): Promise<{ at: number; name: string } | undefined> {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      const hit = this.answers.find((a) => a.at >= since && pred(a.name));
      if (hit) return hit;
      await new Promise((r) => setTimeout(r, 25));
    }
    return undefined;
  }
  last(): string | undefined {
    return this.answers.at(-1)?.name;
  }
}

for (const family of ["IPv4", "IPv6"] as const)
  describe(`UDP flows when their backend stops serving (${family})`, { timeout: 120_000 }, () => {
    const vip = VIP[family];
    let lab: Lab;
    let dir: string;
    let bpffs: PrivateBpffs;
    let proxy: ProxyNode | undefined;
    const write = (eps: { name: string; ready: boolean }[]) =>
      writeFileSync(join(dir, "services.yaml"), manifests(family, eps));
    const all = () => Object.keys(PODS).map((name) => ({ name, ready: true }));

    before(async () => {
      dir = mkdtempSync(join(tmpdir(), "bpfproxy-udpflows-"));
      write(all());
      lab = await Lab.create({
        prefix: `bpxuf${family === "IPv6" ? 6 : 4}${process.pid}-`,
        nodes: [
          {
            name: "node-a",
            ip: "192.0.2.11",
            podCIDR: "10.244.1.0/24",
            ...(family === "IPv6" ? { ip6: "2001:db8::a", podCIDR6: "fd00:10:244:1::/64" } : {}),
            pods: [
              ...Object.entries(PODS).map(([name, a]) => ({
                name,
                ip: a.ip,
                ...(family === "IPv6" ? { ip6: a.ip6 } : {}),
              })),
              { name: "client", ip: "10.244.1.20", ...(family === "IPv6" ? { ip6: "fd00:10:244:1::20" } : {}) },
            ],
          },
        ],
      });
      for (const pod of Object.keys(PODS))
        await startEchoServer(lab, pod, { name: pod, udp: [5353], ...(family === "IPv6" ? { bind: "::" } : {}) });
      bpffs = PrivateBpffs.create(`udpflows-${family}`);
      proxy = await ProxyNode.start(lab, "node-a", { manifestDir: dir, bpffs: bpffs.path });
      await proxy.waitForStatus((s) => s.frontends.some((f) => f.address === vip && f.backends.length === 3), 10_000);
    });

    after(async () => {
      await proxy?.stop().catch(() => undefined);
      await proxy?.cleanup().catch(() => undefined);
      await lab?.destroy();
      bpffs?.release();
      rmSync(dir, { recursive: true, force: true });
    });

    for (const how of ["removed", "not ready"] as const) {
      test(`backend ${how}: the stream moves to a serving backend within one sync`, async () => {
        write(all());
        await proxy!.waitForStatus(
          (s) => s.frontends.some((f) => f.address === vip && f.backends.length === 3),
          10_000,
        );
        const stream = new Stream(lab.spawn("client", ["node", "-e", STREAM, vip]));
        try {
          const first = await stream.waitFor(() => true, 0, 5000);
          assert.ok(first, "the stream is answered");
          const old = first.name;
          const t0 = Date.now();
          write(
            how === "removed"
              ? all().filter((e) => e.name !== old)
              : all().map((e) => ({ ...e, ready: e.name !== old })),
          );
          const moved = await stream.waitFor((n) => n !== old, t0, 5000);
          assert.ok(moved, `the stream left ${old} (last answer: ${stream.last()})`);
          // And it stays off the old backend.
          const after = Date.now();
          await new Promise((r) => setTimeout(r, 600));
          const later = stream.answers.filter((a) => a.at > after);
          assert.ok(later.length >= 5, "still answered");
          assert.deepEqual(
            later.filter((a) => a.name === old),
            [],
            `no answer from ${old} after the move`,
          );
          assert.equal(new Set(later.map((a) => a.name)).size, 1, "one backend for the stream");
          console.log(`# ${family} ${how}: moved after ${moved.at - t0} ms`);
        } finally {
          stream.child.kill("SIGKILL");
        }
      });
    }
  });
