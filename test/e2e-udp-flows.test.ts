// End to end: a UDP stream (one connected socket, a datagram every 50 ms) across its backend leaving
// the Service. kube-proxy deletes the UDP conntrack entries of an endpoint that stops serving, so the
// stream's next datagrams go to a serving backend; without that the stream stays on the old backend
// (still running here and still answering) for as long as it keeps sending. Checked for a removed
// endpoint and for one that turns not ready. Real daemon in private namespaces; removed after.
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

const VIP = "10.96.0.10";
const PODS: Record<string, string> = { "web-1": "10.244.1.5", "web-2": "10.244.1.6", "web-3": "10.244.1.7" };

function manifests(endpoints: { name: string; ready: boolean }[]): string {
  return manifest([
    service("dns", VIP, [DNS]),
    endpointSlice(
      "dns",
      [DNS],
      endpoints.map((e) => ({ ip: PODS[e.name]!, node: "node-a", ready: e.ready })),
    ),
    node("node-a", "192.0.2.11"),
  ]);
}

// One connected socket: only answers from VIP:53 arrive. Prints the answering backend per datagram.
const STREAM = `
const s = require("node:dgram").createSocket("udp4");
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

describe("UDP flows when their backend stops serving", { timeout: 120_000 }, () => {
  let lab: Lab;
  let dir: string;
  let bpffs: PrivateBpffs;
  let proxy: ProxyNode | undefined;
  const write = (eps: { name: string; ready: boolean }[]) => writeFileSync(join(dir, "services.yaml"), manifests(eps));
  const all = () => Object.keys(PODS).map((name) => ({ name, ready: true }));

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "bpfproxy-udpflows-"));
    write(all());
    lab = await Lab.create({
      prefix: `bpxuf${process.pid}-`,
      nodes: [
        {
          name: "node-a",
          ip: "192.0.2.11",
          podCIDR: "10.244.1.0/24",
          pods: [...Object.entries(PODS).map(([name, ip]) => ({ name, ip })), { name: "client", ip: "10.244.1.20" }],
        },
      ],
    });
    for (const pod of Object.keys(PODS)) await startEchoServer(lab, pod, { name: pod, udp: [5353] });
    bpffs = PrivateBpffs.create("udpflows-a");
    proxy = await ProxyNode.start(lab, "node-a", { manifestDir: dir, bpffs: bpffs.path });
    await proxy.waitForStatus((s) => s.frontends.some((f) => f.address === VIP && f.backends.length === 3), 10_000);
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
      await proxy!.waitForStatus((s) => s.frontends.some((f) => f.address === VIP && f.backends.length === 3), 10_000);
      const stream = new Stream(lab.spawn("client", ["node", "-e", STREAM, VIP]));
      try {
        const first = await stream.waitFor(() => true, 0, 5000);
        assert.ok(first, "the stream is answered");
        const old = first.name;
        const t0 = Date.now();
        write(
          how === "removed" ? all().filter((e) => e.name !== old) : all().map((e) => ({ ...e, ready: e.name !== old })),
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
        console.log(`# ${how}: moved after ${moved.at - t0} ms`);
      } finally {
        stream.child.kill("SIGKILL");
      }
    });
  }
});
