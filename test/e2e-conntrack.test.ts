// End to end: the conntrack lifecycle with real sockets through a ClusterIP (docs/conntrack.md).
//  - A TCP connection half-closed by the client (shutdown(SHUT_WR)) idles 15 s; then the server sends and the
//    client receives everything and a clean end. (Before: one FIN cut both entries to 10 s, the client's ACK
//    chose a backend again, and with several backends the connection was usually reset.)
//  - kube-proxy's conntrack.udpTimeout set to 2 s: a one-way UDP flow's entries are removed by the garbage
//    collector soon after, an answered UDP flow (udpStreamTimeout 30 s) stays, and the GC metrics count it.
// Both run over IPv4 and over IPv6 (IPv6 single-stack Services, bpx_ct6_v1).
// Real daemon in private namespaces (removed after); every wait is bounded.
import { describe, test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Lab } from "../src/lab/netns.js";
import { PrivateBpffs, ProxyNode } from "../src/lab/proxy.js";
import { BpfMap } from "../src/native/index.js";
import * as abi from "../src/dataplane/bpf/abi.js";
import { DNS, HTTP, endpointSlice, manifest, node, service, type PortSpec } from "./fixtures/k8s-objects.js";

assert.equal(process.getuid?.(), 0, "end-to-end tests build namespaces and load BPF: run them as root");

const ADDR = {
  IPv4: { vip: "10.96.0.10", sinkVip: "10.96.0.11", client: "10.244.1.20" },
  IPv6: { vip: "fd00:96::10", sinkVip: "fd00:96::11", client: "fd00:10:244:1::20" },
} as const;
const PODS: Record<string, { ip: string; ip6: string }> = {
  "web-1": { ip: "10.244.1.5", ip6: "fd00:10:244:1::5" },
  "web-2": { ip: "10.244.1.6", ip6: "fd00:10:244:1::6" },
  "web-3": { ip: "10.244.1.7", ip6: "fd00:10:244:1::7" },
  "web-4": { ip: "10.244.1.8", ip6: "fd00:10:244:1::8" },
};
// UDP to a port nothing listens on: the flow never sees a reply (udpTimeout applies).
const SINK: PortSpec = { name: "sink", port: 9999, targetPort: 9999, protocol: "UDP" };

// "client-closes": waits for the client's FIN, stays quiet 15 s, then sends two pieces 300 ms apart and closes.
// "server-closes": closes its side at once, and reports what the client sends later.
const SERVER = `
const name = process.argv[1];
require("node:net").createServer({ allowHalfOpen: true }, (c) => {
  let got = "";
  c.on("data", (d) => {
    got += d;
    if (got === "server-closes\\n") c.end("bye-" + name + "\\n");
  });
  c.on("error", (e) => console.log("server-error " + e.code));
  c.on("end", () => {
    if (got.startsWith("server-closes")) return console.log("received " + JSON.stringify(got));
    setTimeout(() => {
      c.write("late1-" + name + "\\n");
      setTimeout(() => c.end("late2-" + name + "\\n"), 300);
    }, 15000);
  });
}).listen(8080, () => console.log("listening"));
require("node:dgram").createSocket("udp6").on("message", function (m, r) { this.send(name, r.port, r.address); }).bind(5353);
`;

// client-closes: sends and half-closes at once. server-closes: after the server's FIN, idles 15 s, then sends
// and closes. Prints what arrived and how the connection ended.
const CLIENT_SCRIPT = `
const mode = process.argv[2];
const s = require("node:net").connect({ host: process.argv[1], port: 80, allowHalfOpen: true });
let data = "", error = "";
const t = setTimeout(() => { error = "timeout"; s.destroy(); }, 30000);
s.on("connect", () => { s.write(mode + "\\n"); if (mode === "client-closes") s.end(); });
s.on("end", () => { if (mode === "server-closes") setTimeout(() => s.end("late-from-client\\n"), 15000); });
s.on("data", (d) => (data += d));
s.on("error", (e) => (error = e.code || String(e)));
s.on("close", () => { clearTimeout(t); console.log(JSON.stringify({ data, error })); });
`;

const UDP_SCRIPT = `
const s = require("node:dgram").createSocket(process.argv[1].includes(":") ? "udp6" : "udp4");
const [addr, port, sport] = [process.argv[1], Number(process.argv[2]), Number(process.argv[3])];
s.bind(sport, () => {
  s.send("q", port, addr);
  const t = setTimeout(() => { console.log("no-answer"); s.close(); }, 1500);
  s.on("message", (m) => { clearTimeout(t); console.log(m.toString()); s.close(); });
});
`;

for (const family of ["IPv4", "IPv6"] as const)
  describe(`conntrack lifecycle end to end (${family})`, { timeout: 150_000 }, () => {
    const v6 = family === "IPv6";
    const { vip: VIP, sinkVip: SINK_VIP, client: CLIENT } = ADDR[family];
    let lab: Lab;
    let dir: string;
    let bpffs: PrivateBpffs;
    let proxy: ProxyNode | undefined;
    let serverOutput = "";

    const ctEntries = (): { proto: number; sport: number; dport: number }[] => {
      const m = BpfMap.openPinned(join(bpffs.path, v6 ? abi.MAP_NAMES.conntrack6 : abi.MAP_NAMES.conntrack), {
        readOnly: true,
      });
      try {
        const { keys, count } = m.entries();
        const codec = v6 ? abi.ct6Key : abi.ctKey;
        return Array.from({ length: count }, (_, i) => codec.decode(keys, i * codec.size));
      } finally {
        m.close();
      }
    };
    async function metric(name: string, labels: string): Promise<number> {
      const r = await lab.exec("node-a", [
        process.execPath,
        "-e",
        `fetch("http://127.0.0.1:10249/metrics").then(async (r) => console.log(await r.text()), (e) => { console.error(String(e)); process.exit(1); })`,
      ]);
      assert.equal(r.code, 0, r.stderr);
      assert.doesNotMatch(r.stdout, new RegExp(CLIENT.replaceAll(".", "\\.")), "/metrics never dumps conntrack");
      const line = r.stdout.split("\n").find((l) => l.startsWith(name) && l.includes(labels));
      return line ? Number(line.split(" ").pop()) : 0;
    }

    before(async () => {
      dir = mkdtempSync(join(tmpdir(), "bpfproxy-ct-"));
      const eps = Object.values(PODS).map((a) => ({ ip: v6 ? a.ip6 : a.ip, node: "node-a", ready: true }));
      const family6 = v6 ? { spec: { ipFamilies: ["IPv6"], ipFamilyPolicy: "SingleStack" } } : {};
      const slice6 = <T>(sl: T): T => (v6 ? { ...sl, addressType: "IPv6" } : sl);
      writeFileSync(
        join(dir, "services.yaml"),
        manifest([
          service("web", VIP, [HTTP, DNS], family6),
          slice6(endpointSlice("web", [HTTP, DNS], eps)),
          service("sink", SINK_VIP, [SINK], family6),
          slice6(endpointSlice("sink", [SINK], eps.slice(0, 1))),
          node("node-a", "192.0.2.11"),
        ]),
      );
      const config = join(dir, "config.yaml");
      writeFileSync(
        config,
        [
          "apiVersion: kubeproxy.config.k8s.io/v1alpha1",
          "kind: KubeProxyConfiguration",
          "conntrack:",
          "  udpTimeout: 2s",
          "  udpStreamTimeout: 30s",
          "bpfproxy:",
          "  conntrackGCInterval: 1s",
          "",
        ].join("\n"),
      );
      lab = await Lab.create({
        prefix: `bpxct${v6 ? 6 : 4}${process.pid}-`,
        nodes: [
          {
            name: "node-a",
            ip: "192.0.2.11",
            podCIDR: "10.244.1.0/24",
            ...(v6 ? { ip6: "2001:db8::a", podCIDR6: "fd00:10:244:1::/64" } : {}),
            pods: [
              ...Object.entries(PODS).map(([name, a]) => ({ name, ip: a.ip, ...(v6 ? { ip6: a.ip6 } : {}) })),
              { name: "client", ip: ADDR.IPv4.client, ...(v6 ? { ip6: ADDR.IPv6.client } : {}) },
            ],
          },
        ],
      });
      for (const pod of Object.keys(PODS)) {
        const child = lab.spawn(pod, [process.execPath, "-e", SERVER, pod]);
        child.stdout!.on("data", (d: Buffer) => (serverOutput += d.toString()));
        await new Promise<void>((resolve, reject) => {
          const t = setTimeout(() => reject(new Error(`server in ${pod} did not start`)), 10_000);
          child.stdout!.on("data", (d: Buffer) => {
            if (d.toString().includes("listening")) {
              clearTimeout(t);
              resolve();
            }
          });
        });
      }
      bpffs = PrivateBpffs.create(`ct-${family}`);
      proxy = await ProxyNode.start(lab, "node-a", {
        manifestDir: dir,
        bpffs: bpffs.path,
        extraArgs: ["--config", config, "--healthz-bind-address", "", "--metrics-bind-address", "127.0.0.1:10249"],
      });
      await proxy.waitForStatus((s) => s.frontends.some((f) => f.address === VIP && f.backends.length === 4), 10_000);
    });

    after(async () => {
      await proxy?.stop().catch(() => undefined);
      await proxy?.cleanup().catch(() => undefined);
      await lab?.destroy();
      bpffs?.release();
      rmSync(dir, { recursive: true, force: true });
    });

    test("conntrack.udpTimeout: a one-way UDP flow is collected after 2 s, an answered one (udpStreamTimeout) stays", async () => {
      const deleted0 = await metric("bpfproxy_conntrack_gc_deleted_entries_total", 'proto="udp"');
      const runs0 = await metric("bpfproxy_conntrack_gc_runs_total", 'status="ok"');
      const answered = await lab.run("client", [process.execPath, "-e", UDP_SCRIPT, VIP, "53", "41001"]);
      assert.match(answered, /^web-\d/, "the UDP Service answers");
      const sent = Date.now();
      const oneWay = await lab.run("client", [process.execPath, "-e", UDP_SCRIPT, SINK_VIP, "9999", "41002"]);
      assert.match(oneWay, /no-answer/);
      const flow = (sport: number) => (k: { proto: number; sport: number; dport: number }) =>
        k.proto === abi.IPPROTO_UDP && (k.sport === sport || k.dport === sport);
      assert.equal(ctEntries().filter(flow(41002)).length, 2, "the one-way flow is tracked (forward + reply)");
      while (ctEntries().some(flow(41002))) {
        assert.ok(Date.now() - sent < 10_000, "one-way flow removed within udpTimeout + GC interval + slack");
        await new Promise((r) => setTimeout(r, 100));
      }
      const took = Date.now() - sent;
      assert.ok(took >= 2_000, `not removed before its 2 s lifetime (${took} ms after the datagram)`);
      assert.equal(ctEntries().filter(flow(41001)).length, 2, "the answered flow lives on (udpStreamTimeout 30 s)");
      assert.ok((await metric("bpfproxy_conntrack_gc_deleted_entries_total", 'proto="udp"')) >= deleted0 + 2);
      assert.ok((await metric("bpfproxy_conntrack_gc_runs_total", 'status="ok"')) > runs0);
      console.log(`# ${family}: one-way UDP flow collected ${took} ms after its last datagram`);
    });

    test("half-closed TCP connections idle 15 s, then the open side sends: everything arrives, clean ends", async () => {
      const before = (await proxy!.status()).counters;
      const run = (mode: string) =>
        lab
          .run("client", [process.execPath, "-e", CLIENT_SCRIPT, VIP, mode], { timeoutMs: 40_000 })
          .then((out) => JSON.parse(out.trim().split("\n").pop()!) as { data: string; error: string });
      // Both at once: the client half-closes one, the server the other.
      const [a, b] = await Promise.all([run("client-closes"), run("server-closes")]);

      assert.equal(a.error, "", `client-closes: ended without error (got ${a.error}; data ${JSON.stringify(a.data)})`);
      const lines = a.data.trim().split("\n");
      assert.equal(lines.length, 2, `client-closes: both late pieces arrived: ${JSON.stringify(a.data)}`);
      const name = lines[0]!.replace("late1-", "");
      assert.deepEqual(lines, [`late1-${name}`, `late2-${name}`], "from the same backend, in order");

      assert.equal(b.error, "", `server-closes: ended without error (got ${b.error}; data ${JSON.stringify(b.data)})`);
      assert.match(b.data, /^bye-web-\d\n$/);
      const deadline = Date.now() + 5_000;
      while (!serverOutput.includes("late-from-client") && Date.now() < deadline)
        await new Promise((r) => setTimeout(r, 100));
      assert.match(serverOutput, /received "server-closes\\nlate-from-client\\n"/, "the server got the late data");

      const after = (await proxy!.status()).counters;
      const delta = (k: string) => (after[k]?.packets ?? 0) - (before[k]?.packets ?? 0);
      assert.equal(delta("reject_no_conntrack"), 0, "no segment was reset as untracked");
      assert.equal(delta("backend_reselect"), 0, "no connection chose again");
    });
  });
