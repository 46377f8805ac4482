// End to end: an L3 device (tun: no Ethernet header, skb->protocol IPv4, mac_len 0, as wireguard and ipip)
// carrying NodePort traffic (issue 16 item 8, docs/flows.md "L3 devices"). The external client reaches node-a
// only through a tunnel: a tun device on each side, joined by a tiny userspace relay over UDP on the fabric (what
// wireguard-go does, without the crypto; this kernel has no ipip module). node-a runs bpfproxy with
// --devices eth0,tun0, so tun0 gets the programs built for packets that start at the IPv4 header
// (bpx_from_l3dev, bpx_reverse_l3). A NodePort on the tunnel address answers over TCP and
// UDP, translated by bpfproxy (the TCP handshake could not complete otherwise: nothing listens on the node).
// Everything lives in namespaces the lab makes and removes; every wait is bounded.
import { describe, test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Lab } from "../src/lab/netns.js";
import { echoRequest, startEchoServer } from "../src/lab/index.js";
import { PrivateBpffs, ProxyNode } from "../src/lab/proxy.js";
import { DNS, HTTP, endpointSlice, manifest, node, service } from "./fixtures/k8s-objects.js";

assert.equal(process.getuid?.(), 0, "end-to-end tests build namespaces and load BPF: run them as root");

const NODE_IP = "192.0.2.11";
const EXT_IP = "198.51.100.10";
const TUN_NODE = "172.16.0.1";
const TUN_EXT = "172.16.0.2";
const NP = { tcp: 30080, udp: 30053 };
const RELAY_PORT = 47000;

// Attaches to tun device argv[1] and relays its packets to argv[3]:RELAY over UDP from argv[2], and back.
const RELAY = `
import fcntl, os, select, socket, struct, sys
name, local, remote, port = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
fd = os.open("/dev/net/tun", os.O_RDWR)
fcntl.ioctl(fd, 0x400454ca, struct.pack("16sH", name.encode(), 0x0001 | 0x1000))  # TUNSETIFF: IFF_TUN|IFF_NO_PI
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((local, port))
print("ready", flush=True)
while True:
    r, _, _ = select.select([fd, s], [], [])
    if fd in r: s.sendto(os.read(fd, 65535), (remote, port))
    if s in r: os.write(fd, s.recv(65535))
`;

describe("NodePort over an L3 (tun) device", { timeout: 120_000 }, () => {
  let lab: Lab;
  let dir: string;
  let bpffs: PrivateBpffs;
  let proxy: ProxyNode | undefined;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "bpfproxy-l3dev-"));
    writeFileSync(
      join(dir, "services.yaml"),
      manifest([
        service(
          "web",
          "10.96.0.10",
          [
            { ...HTTP, nodePort: NP.tcp },
            { ...DNS, nodePort: NP.udp },
          ],
          {
            spec: { type: "NodePort" },
          },
        ),
        endpointSlice("web", [HTTP, DNS], [{ ip: "10.244.1.5", node: "node-a", ready: true }]),
        node("node-a", NODE_IP),
      ]),
    );
    lab = await Lab.create({
      prefix: `bpxl3${process.pid}-`,
      nodes: [{ name: "node-a", ip: NODE_IP, podCIDR: "10.244.1.0/24", pods: [{ name: "web-1", ip: "10.244.1.5" }] }],
      external: { name: "ext", ip: EXT_IP },
    });
    const tunnel = async (ns: string, local: string, remote: string, addr: string) => {
      await lab.run(ns, ["ip", "tuntap", "add", "dev", "tun0", "mode", "tun"]);
      // Room for the relay's 28 bytes of IPv4 + UDP on the fabric's 1500.
      await lab.run(ns, ["ip", "link", "set", "tun0", "mtu", "1400"]);
      await lab.run(ns, ["ip", "addr", "add", `${addr}/30`, "dev", "tun0"]);
      await lab.run(ns, ["ip", "link", "set", "tun0", "up"]);
      const relay = lab.spawn(ns, ["python3", "-c", RELAY, "tun0", local, remote, String(RELAY_PORT)]);
      await new Promise<void>((resolve, reject) => {
        const t = setTimeout(() => reject(new Error(`tun relay in ${ns} did not start`)), 10_000);
        relay.stdout!.on("data", (d: Buffer) => {
          if (d.toString().includes("ready")) {
            clearTimeout(t);
            resolve();
          }
        });
        relay.once("exit", (code) => reject(new Error(`tun relay in ${ns} exited (${code})`)));
      });
    };
    await tunnel("node-a", NODE_IP, EXT_IP, TUN_NODE);
    await tunnel("ext", EXT_IP, NODE_IP, TUN_EXT);
    await startEchoServer(lab, "web-1", { name: "web-1", tcp: [8080], udp: [5353] });
    bpffs = PrivateBpffs.create("l3dev-a");
    proxy = await ProxyNode.start(lab, "node-a", { manifestDir: dir, bpffs: bpffs.path, devices: ["eth0", "tun0"] });
    await proxy.waitForStatus((s) => s.frontends.some((f) => f.port === NP.tcp && f.backends.length === 1), 10_000);
  });

  after(async () => {
    await proxy?.stop().catch(() => undefined);
    await proxy?.cleanup().catch(() => undefined);
    await lab?.destroy();
    bpffs?.release();
    rmSync(dir, { recursive: true, force: true });
  });

  test("tun0 carries the L3 programs", async () => {
    const st = await proxy!.status();
    const on = (hook: string) => st.attachments.find((a) => a.interface === "tun0" && a.hook === hook)?.program;
    assert.equal(on("tc-ingress"), "bpx_from_l3dev");
    assert.equal(on("tc-egress"), "bpx_reverse_l3");
    assert.equal(
      st.attachments.find((a) => a.interface === "eth0" && a.hook === "tc-ingress")?.program,
      "bpx_from_device",
    );
  });

  for (const proto of ["tcp", "udp"] as const) {
    test(`${proto}: a NodePort on the tunnel address answers 20 of 20 through the tunnel`, async () => {
      const before = (await proxy!.status()).counters;
      const r = await echoRequest(lab, "ext", { [proto]: `${TUN_NODE}:${NP[proto]}`, count: 20, timeoutMs: 2000 });
      const failed = r.filter((x) => !x.ok || !x.reply!.startsWith("web-1 "));
      assert.deepEqual(failed, [], `${failed.length}/20 failed`);
      const after = (await proxy!.status()).counters;
      const translated = (after.translated_new?.packets ?? 0) - (before.translated_new?.packets ?? 0);
      assert.ok(translated >= 20, `bpfproxy translated the new flows (${translated})`);
    });
  }
});
