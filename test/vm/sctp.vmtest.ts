// Runs INSIDE the test VM (test/vm-ipvs.test.ts boots it) on Debian's 6.1 kernel, which has SCTP and IPVS: SCTP
// Services end to end through the daemon in --mode=bpf (docs/sctp.md), with a real SCTP client and server
// (test/vm/sctp-echo.py: association set-up, data both ways, shutdown) in private network namespaces.
//   - "sig-bpf": port = targetPort = nodePort, so ClusterIP, NodePort and LoadBalancer IP are translated by
//     BPF (addresses only) and IPVS holds nothing for them;
//   - "sig-ipvs": targetPort differs (a port rewrite BPF leaves alone): every frontend is an IPVS virtual
//     service, while the same daemon's TCP stays in BPF.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import YAML from "yaml";
import { Lab } from "../../src/lab/netns.js";
import { echoRequest, startEchoServer } from "../../src/lab/index.js";
import { PrivateBpffs, ProxyNode } from "../../src/lab/proxy.js";
import type { DataplaneStatus } from "../../src/dataplane/types.js";

assert.equal(process.getuid?.(), 0, "run as root (inside the test VM)");

const A = "node-a";
const NODE_A = "192.0.2.11";
const EXT = "198.51.100.10";
const POD = { sig1: "10.244.1.5", sig2: "10.244.1.6", client: "10.244.1.20" };
const BPF_SVC = { ip: "10.96.0.30", lb: "203.0.113.30", port: 30868 };
const IPVS_SVC = { ip: "10.96.0.31", lb: "203.0.113.31", port: 3868, target: 9000, nodePort: 30869 };
const HELPER = join(import.meta.dirname, "sctp-echo.py");
const SCALE = Math.max(1, Number(process.env.BPFPROXY_LAB_TIMEOUT_SCALE) || 1);
// The system's interpreter: a version manager's shim in PATH costs seconds per start under emulation.
const PYTHON = existsSync("/usr/bin/python3") ? "/usr/bin/python3" : "python3";

function manifests(): string {
  const docs: unknown[] = [];
  const eps = [POD.sig1, POD.sig2].map((ip) => ({
    addresses: [ip],
    nodeName: A,
    conditions: { ready: true, serving: true, terminating: false },
  }));
  for (const [name, s, port, target, nodePort] of [
    ["sig-bpf", BPF_SVC, BPF_SVC.port, BPF_SVC.port, BPF_SVC.port],
    ["sig-ipvs", IPVS_SVC, IPVS_SVC.port, IPVS_SVC.target, IPVS_SVC.nodePort],
  ] as const) {
    docs.push({
      apiVersion: "v1",
      kind: "Service",
      metadata: { name, namespace: "default" },
      spec: {
        type: "LoadBalancer",
        clusterIP: s.ip,
        clusterIPs: [s.ip],
        ports: [
          { name: "sig", port, targetPort: target, nodePort, protocol: "SCTP" },
          // TCP beside it stays in BPF.
          { name: "http", port: 80, targetPort: 8080, nodePort: nodePort + 100, protocol: "TCP" },
        ],
      },
      status: { loadBalancer: { ingress: [{ ip: s.lb }] } },
    });
    docs.push({
      apiVersion: "discovery.k8s.io/v1",
      kind: "EndpointSlice",
      addressType: "IPv4",
      metadata: { name: `${name}-1`, namespace: "default", labels: { "kubernetes.io/service-name": name } },
      ports: [
        { name: "sig", port: target, protocol: "SCTP" },
        { name: "http", port: 8080, protocol: "TCP" },
      ],
      endpoints: eps,
    });
  }
  docs.push({
    apiVersion: "v1",
    kind: "Node",
    metadata: { name: A },
    status: { addresses: [{ type: "InternalIP", address: NODE_A }] },
  });
  return docs.map((d) => YAML.stringify(d)).join("---\n");
}

const fe = (s: DataplaneStatus, addr: string, port: number, proto: string) =>
  s.frontends.find((f) => f.address === addr && f.port === port && f.protocol === proto);

describe(
  "SCTP Services in --mode=bpf on this kernel (BPF where only addresses change, IPVS for the rest)",
  { timeout: 600_000 },
  () => {
    let lab: Lab;
    let bpffs: PrivateBpffs;
    let proxy: ProxyNode | undefined;
    let dir: string;

    /** One association from `from` to addr:port: the answer line, and whether the shutdown completed. */
    async function associate(from: string, addr: string, port: number, msg: string) {
      const r = await lab.exec(from, [PYTHON, HELPER, "client", addr, String(port), msg, String(8 * SCALE)], {
        timeoutMs: 20_000 * SCALE,
      });
      assert.equal(
        r.code,
        0,
        `SCTP client ${from} -> ${addr}:${port}: ${r.timedOut ? "timeout" : `exit ${r.code}`} ${r.stdout} ${r.stderr}`,
      );
      const [answer = "", closed = ""] = r.stdout.trim().split("\n");
      const [backend = "", peer = "", echoed = ""] = answer.split(" ");
      return { backend, peer: peer.split(":")[0]!, echoed, shutdown: closed === "shutdown complete" };
    }

    /** `n` associations: the backends that answered and the client addresses they saw (every one must succeed). */
    async function associations(from: string, addr: string, port: number, n: number) {
      const backends = new Set<string>();
      const peers = new Set<string>();
      for (let i = 0; i < n; i++) {
        const r = await associate(from, addr, port, `hello-${i}`);
        assert.equal(r.echoed, `hello-${i}`, `${addr}:${port} association ${i}: data both ways`);
        assert.ok(r.shutdown, `${addr}:${port} association ${i}: shutdown completed`);
        backends.add(r.backend);
        peers.add(r.peer);
      }
      return { backends: [...backends].sort(), peers: [...peers].sort() };
    }

    before(async () => {
      delete process.env.BPFPROXY_TEST_NO_BPF;
      dir = mkdtempSync(join(tmpdir(), "bpfproxy-vm-sctp-"));
      mkdirSync(join(dir, "manifests"));
      writeFileSync(join(dir, "manifests", "services.yaml"), manifests());
      lab = await Lab.create({
        prefix: `bpxsctp${process.pid}-`,
        nodes: [
          {
            name: A,
            ip: NODE_A,
            podCIDR: "10.244.1.0/24",
            pods: [
              { name: "sig-1", ip: POD.sig1 },
              { name: "sig-2", ip: POD.sig2 },
              { name: "client", ip: POD.client },
            ],
          },
        ],
        external: { name: "ext", ip: EXT },
      });
      await lab.run("ext", ["ip", "route", "add", "203.0.113.0/24", "via", NODE_A]);
      for (const pod of ["sig-1", "sig-2"]) {
        const child = lab.spawn(pod, [PYTHON, HELPER, "server", pod, String(BPF_SVC.port), String(IPVS_SVC.target)]);
        await new Promise<void>((resolve, reject) => {
          const t = setTimeout(() => reject(new Error(`${pod}: SCTP server did not start`)), 20_000 * SCALE);
          let err = "";
          child.stderr!.on("data", (d: Buffer) => (err += d.toString()));
          child.stdout!.on("data", (d: Buffer) => {
            if (d.toString().includes("listening")) {
              clearTimeout(t);
              resolve();
            }
          });
          child.once("exit", (code) => {
            clearTimeout(t);
            reject(new Error(`${pod}: SCTP server exited (${code}): ${err}`));
          });
        });
        await startEchoServer(lab, pod, { name: pod, tcp: [8080], timeoutMs: 60_000 });
      }
      bpffs = PrivateBpffs.create("vm-sctp");
      proxy = await ProxyNode.start(lab, A, {
        manifestDir: join(dir, "manifests"),
        bpffs: bpffs.path,
        startTimeoutMs: 120_000,
      });
      await proxy.waitForStatus((s) => fe(s, BPF_SVC.ip, BPF_SVC.port, "SCTP")?.backends.length === 2, 120_000);
    });

    after(async () => {
      await proxy?.stop().catch(() => undefined);
      await proxy?.cleanup().catch(() => undefined);
      await lab?.destroy();
      bpffs?.release();
      rmSync(dir, { recursive: true, force: true });
    });

    test("the daemon runs bpf; the port-keeping SCTP frontends are in its maps, the others are IPVS virtual services", async () => {
      const st = await proxy!.status();
      assert.equal(st.mode, "bpf");
      for (const [addr, port] of [
        [BPF_SVC.ip, BPF_SVC.port],
        [BPF_SVC.lb, BPF_SVC.port],
        [NODE_A, BPF_SVC.port],
      ] as const)
        assert.ok(fe(st, addr, port, "SCTP"), `BPF serves ${addr}:${port}/SCTP`);
      assert.equal(fe(st, IPVS_SVC.ip, IPVS_SVC.port, "SCTP"), undefined, "the port rewrite is not in BPF");
      const ipvs = await lab.run(A, ["ipvsadm", "-Ln"]);
      for (const vs of [
        `${IPVS_SVC.ip}:${IPVS_SVC.port}`,
        `${IPVS_SVC.lb}:${IPVS_SVC.port}`,
        `${NODE_A}:${IPVS_SVC.nodePort}`,
      ]) {
        // ipvsadm pads the protocol to 4 columns: "SCTP 10.96.0.31:3868 rr".
        const block = ipvs.split(/\n(?=TCP|UDP|SCTP)/).find((b) => b.startsWith(`SCTP ${vs} `)) ?? "";
        assert.match(block, new RegExp(`-> ${POD.sig1}:${IPVS_SVC.target}\\s+Masq`), `${vs} in\n${ipvs}`);
        assert.match(block, new RegExp(`-> ${POD.sig2}:${IPVS_SVC.target}\\s+Masq`), `${vs} in\n${ipvs}`);
      }
      // Only SCTP went to IPVS: no TCP virtual service, and nothing of sig-bpf.
      assert.doesNotMatch(ipvs, /^(TCP|UDP) /m, ipvs);
      assert.doesNotMatch(ipvs, new RegExp(`:${BPF_SVC.port} `), ipvs);
    });

    test("without a Service: an SCTP association from the client pod straight to each backend (the lab's SCTP works)", async () => {
      for (const ip of [POD.sig1, POD.sig2]) {
        const r = await associate("client", ip, IPVS_SVC.target, "direct");
        assert.deepEqual([r.echoed, r.peer, r.shutdown], ["direct", POD.client, true]);
      }
    });

    for (const [name, svc, nodePort] of [
      ["BPF", BPF_SVC, BPF_SVC.port],
      ["IPVS", IPVS_SVC, IPVS_SVC.nodePort],
    ] as const) {
      test(`${name}: ClusterIP from a pod reaches both backends, which see the pod's address`, async () => {
        const r = await associations("client", svc.ip, svc.port, 6);
        assert.deepEqual(r.backends, ["sig-1", "sig-2"]);
        assert.deepEqual(r.peers, [POD.client], "in-cluster traffic is not masqueraded");
      });

      test(`${name}: NodePort and LoadBalancer IP from outside (externalTrafficPolicy Cluster) reach a backend, masqueraded`, async () => {
        for (const [addr, port] of [
          [NODE_A, nodePort],
          [svc.lb, svc.port],
        ] as const) {
          const r = await associations("ext", addr, port, 4);
          assert.ok(r.backends.length >= 1 && r.backends.every((b) => b.startsWith("sig-")), `${addr}:${port}`);
          assert.ok(!r.peers.includes(EXT), `${addr}:${port}: backends saw ${r.peers.join(", ")}, not the node`);
        }
      });
    }

    test("TCP of the same Services stays in BPF and works beside SCTP", async () => {
      const res = await echoRequest(lab, "client", { tcp: `${IPVS_SVC.ip}:80`, count: 4 });
      assert.deepEqual(
        res.filter((r) => !r.ok),
        [],
      );
      const st = await proxy!.status();
      assert.ok(fe(st, IPVS_SVC.ip, 80, "TCP"), "TCP :80 of sig-ipvs is a BPF frontend");
    });
  },
);
