// End to end: an L3 device (tun: no Ethernet header, skb->protocol IPv4, mac_len 0, as wireguard and ipip)
// carrying NodePort traffic (issue 16 item 8, docs/flows.md "L3 devices"). The external client reaches node-a
// only through a tunnel: a tun device on each side, joined by a tiny userspace relay over UDP on the fabric (what
// wireguard-go does, without the crypto; this kernel has no ipip module). node-a runs bpfproxy with
// --devices eth0,tun0, so tun0 gets the programs built for packets that start at the IPv4 header
// (bpx_from_l3dev, bpx_reverse_l3). A NodePort on the tunnel address answers over TCP and
// UDP, translated by bpfproxy (the TCP handshake could not complete otherwise: nothing listens on the node).
// Once per family: over IPv6 the tunnel carries IPv6 (skb->protocol IPv6), so the L3 programs tail-call
// bpx_v6_from_l3dev and bpx_v6_reverse_l3 (docs/ipv6.md), for an IPv6 single-stack NodePort on the tunnel's
// IPv6 address on a dual-stack node.
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
const NODE_IP6 = "2001:db8::a";
const EXT_IP = "198.51.100.10";
const EXT_IP6 = "2001:db8:100::10";
const POD = { 4: "10.244.1.5", 6: "fd00:10:244:1::5" };
/** The tunnel's own addresses, of the family under test (the relay runs over the IPv4 fabric either way). */
const TUN = {
  4: { node: "172.16.0.1", ext: "172.16.0.2", len: 30 },
  6: { node: "fd00:172:16::1", ext: "fd00:172:16::2", len: 126 },
};
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

for (const family of [4, 6] as const) {
  const v6 = family === 6;
  const { node: TUN_NODE, ext: TUN_EXT, len: TUN_LEN } = TUN[family];
  const hp = (a: string, port: number) => (v6 ? `[${a}]:${port}` : `${a}:${port}`);

  describe(`NodePort over an L3 (tun) device, IPv${family}`, { timeout: 120_000 }, () => {
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
            v6 ? "fd00:96::10" : "10.96.0.10",
            [
              { ...HTTP, nodePort: NP.tcp },
              { ...DNS, nodePort: NP.udp },
            ],
            {
              spec: { type: "NodePort", ...(v6 ? { ipFamilyPolicy: "SingleStack", ipFamilies: ["IPv6"] } : {}) },
            },
          ),
          {
            ...endpointSlice("web", [HTTP, DNS], [{ ip: POD[family], node: "node-a", ready: true }]),
            addressType: v6 ? "IPv6" : "IPv4",
          },
          node("node-a", NODE_IP),
        ]),
      );
      lab = await Lab.create({
        prefix: `bpxl3${family}${process.pid}-`,
        nodes: [
          v6
            ? {
                name: "node-a",
                ip: NODE_IP,
                podCIDR: "10.244.1.0/24",
                ip6: NODE_IP6,
                podCIDR6: "fd00:10:244:1::/64",
                pods: [{ name: "web-1", ip: POD[4], ip6: POD[6] }],
              }
            : { name: "node-a", ip: NODE_IP, podCIDR: "10.244.1.0/24", pods: [{ name: "web-1", ip: POD[4] }] },
        ],
        external: v6 ? { name: "ext", ip: EXT_IP, ip6: EXT_IP6 } : { name: "ext", ip: EXT_IP },
      });
      const tunnel = async (ns: string, local: string, remote: string, addr: string) => {
        await lab.run(ns, ["ip", "tuntap", "add", "dev", "tun0", "mode", "tun"]);
        // Room for the relay's 28 bytes of IPv4 + UDP on the fabric's 1500.
        await lab.run(ns, ["ip", "link", "set", "tun0", "mtu", "1400"]);
        // No duplicate address detection: the tunnel has one peer, and the address is usable at once.
        await lab.run(ns, ["ip", "addr", "add", `${addr}/${TUN_LEN}`, "dev", "tun0", ...(v6 ? ["nodad"] : [])]);
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
      await startEchoServer(lab, "web-1", { name: "web-1", tcp: [8080], udp: [5353], ...(v6 ? { bind: "::" } : {}) });
      bpffs = PrivateBpffs.create(`l3dev-a${family}`);
      proxy = await ProxyNode.start(lab, "node-a", { manifestDir: dir, bpffs: bpffs.path, devices: ["eth0", "tun0"] });
      await proxy.waitForStatus(
        (s) => s.frontends.some((f) => f.address === TUN_NODE && f.port === NP.tcp && f.backends.length === 1),
        10_000,
      );
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
        const r = await echoRequest(lab, "ext", { [proto]: hp(TUN_NODE, NP[proto]), count: 20, timeoutMs: 2000 });
        const failed = r.filter((x) => !x.ok || !x.reply!.startsWith("web-1 "));
        assert.deepEqual(failed, [], `${failed.length}/20 failed`);
        // Cluster policy: masqueraded to the node's address (of the family), answered from the NodePort.
        const peers = new Set(r.map((x) => x.reply!.trim().split(" ")[1]!.replace(/:\d+$/, "")));
        assert.deepEqual([...peers], [v6 ? `[${NODE_IP6}]` : NODE_IP], "the backend saw the node's address");
        const after = (await proxy!.status()).counters;
        const translated = (after.translated_new?.packets ?? 0) - (before.translated_new?.packets ?? 0);
        assert.ok(translated >= 20, `bpfproxy translated the new flows (${translated})`);
      });
    }
  });
}
