// End to end: a pod interface created while the daemon runs gets the program from the netlink
// notification, before the pod's first packet. The pod is wired the way a CNI does it (veth, peer
// moved into the pod, addresses, routes, up) in one quick sequence, and its very first datagram to
// a ClusterIP must come back translated. With only the 1 s safety-net poll most of them would not.
// An address added to the node serves NodePorts as soon as the kernel reports it (kube-proxy follows the
// node's addresses for nodePortAddresses), not at the next syncPeriod, and stops serving once removed.
import { describe, test, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Lab } from "../src/lab/netns.js";
import { echoRequest, startEchoServer, UPSTREAM } from "../src/lab/index.js";
import { PrivateBpffs, ProxyNode } from "../src/lab/proxy.js";
import { DNS, endpointSlice, manifest, node, service } from "./fixtures/k8s-objects.js";

assert.equal(process.getuid?.(), 0, "end-to-end tests build namespaces and load BPF: run them as root");

const VIP = "10.96.0.10";
const WEB = "10.244.1.5";
const WEB_VIP = "10.96.0.80";
const HTTP = { name: "http", port: 80, targetPort: 8080, protocol: "TCP", nodePort: 30080 } as const;
const NEW_ADDR = "192.0.2.50";

function manifests(): string {
  return manifest([
    service("dns", VIP, [DNS]),
    endpointSlice("dns", [DNS], [{ ip: WEB, node: "node-a" }]),
    service("web", WEB_VIP, [HTTP], { spec: { type: "NodePort" } }),
    endpointSlice("web", [HTTP], [{ ip: WEB, node: "node-a" }]),
    node("node-a", "192.0.2.11"),
  ]);
}

// One datagram from a connected socket: only an answer from VIP:53 is accepted, so an answer proves
// the request was translated and the reply reverse-translated.
const FIRST_PACKET = `
const s = require("node:dgram").createSocket("udp4");
const t = setTimeout(() => { console.log("timeout"); process.exit(0); }, 2000);
s.on("message", (m) => { clearTimeout(t); console.log(m.toString().trim().split(" ")[0]); process.exit(0); });
s.connect(53, process.argv[1], (e) => e ? (console.log(e.code), process.exit(0)) : s.send("q\\n"));
`;

function sh(script: string): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile("sh", ["-ec", script], { timeout: 30_000 }, (err, stdout, stderr) =>
      err ? reject(new Error(`${err.message}\n${stderr}`)) : resolve(stdout),
    );
  });
}

describe("pod interfaces from netlink notifications", { timeout: 120_000 }, () => {
  let lab: Lab;
  let dir: string;
  let bpffs: PrivateBpffs;
  let proxy: ProxyNode | undefined;
  const extraNs: string[] = [];

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "bpfproxy-links-"));
    writeFileSync(join(dir, "services.yaml"), manifests());
    lab = await Lab.create({
      prefix: `bpxln${process.pid}-`,
      nodes: [{ name: "node-a", ip: "192.0.2.11", podCIDR: "10.244.1.0/24", pods: [{ name: "web-1", ip: WEB }] }],
    });
    await startEchoServer(lab, "web-1", { name: "web-1", udp: [5353], tcp: [8080] });
    bpffs = PrivateBpffs.create("links-a");
    // A periodic sync an hour away: only the address notification can make a new address serve NodePorts.
    proxy = await ProxyNode.start(lab, "node-a", {
      manifestDir: dir,
      bpffs: bpffs.path,
      extraArgs: ["--sync-period", "1h", "--min-sync-period", "0s"],
    });
    await proxy.waitForStatus((s) => s.frontends.some((f) => f.address === VIP && f.backends.length === 1), 10_000);
  });

  after(async () => {
    await proxy?.stop().catch(() => undefined);
    await proxy?.cleanup().catch(() => undefined);
    for (const n of extraNs)
      await sh(`ip netns pids ${n} | xargs -r kill -9; ip netns del ${n}`).catch(() => undefined);
    await lab?.destroy();
    bpffs?.release();
    rmSync(dir, { recursive: true, force: true });
  });

  for (let i = 1; i <= 3; i++) {
    test(`new pod ${i}: its first datagram to a ClusterIP is translated`, async () => {
      const node = lab.nsName("node-a");
      const pod = lab.nsName(`late${i}`);
      extraNs.push(pod);
      const ip = `10.244.1.${50 + i}`;
      const gw = lab.podGateway("node-a");
      const iface = `lxclate${i}`;
      const answer = await sh(`
        ip netns add ${pod}
        ip -n ${node} link add ${iface} type veth peer name eth0 netns ${pod}
        ip -n ${node} addr add ${gw}/32 dev ${iface}
        ip -n ${node} link set ${iface} up
        ip -n ${node} route add ${ip}/32 dev ${iface}
        ip -n ${pod} link set lo up
        ip -n ${pod} addr add ${ip}/32 dev eth0
        ip -n ${pod} link set eth0 up
        ip -n ${pod} route add ${gw} dev eth0 scope link
        ip -n ${pod} route add default via ${gw} dev eth0
        ip netns exec ${pod} node -e '${FIRST_PACKET}' ${VIP}
      `);
      assert.equal(answer.trim(), "web-1", "the first datagram was answered through the ClusterIP");
      const st = await proxy!.status();
      assert.ok(st.attachments.some((a) => a.interface === iface && a.program === "bpx_from_pod"));
    });
  }

  test("an address added to the node serves NodePorts at once, and stops when removed", async () => {
    const node = lab.nsName("node-a");
    const servesNew = (st: Awaited<ReturnType<ProxyNode["status"]>>) =>
      st.frontends.some((f) => f.address === NEW_ADDR && f.port === HTTP.nodePort);
    assert.ok(!servesNew(await proxy!.status()), "the address is not the node's yet");
    await sh(`ip -n ${node} addr add ${NEW_ADDR}/24 dev eth0`);
    try {
      const added = Date.now();
      await proxy!.waitForStatus(servesNew, 3_000);
      const [r] = await echoRequest(lab, UPSTREAM, { tcp: `${NEW_ADDR}:${HTTP.nodePort}` });
      assert.ok(r?.ok, `NodePort on the new address answered: ${JSON.stringify(r)}`);
      assert.equal(r?.reply?.split(" ")[0], "web-1");
      assert.ok(Date.now() - added < 10_000);
    } finally {
      await sh(`ip -n ${node} addr del ${NEW_ADDR}/24 dev eth0`);
    }
    await proxy!.waitForStatus((st) => !servesNew(st), 3_000);
  });
});
