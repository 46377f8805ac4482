// bpfproxy's side of the conn-rate suite, run by bench/conn-rate.ts inside the lab's node namespace (as the
// daemon would run there):
//   program BPFFS N TARGET IP[,IP...] [CGROUP]
//                                       N Services × 10 endpoints, Service TARGET's endpoints replaced by the
//                                       given (real) pods; programs attached to the pod veths (lxc*) and eth0,
//                                       maps written; prints {"ms": ...} and exits (tc keeps the programs).
//                                       With CGROUP: socket load balancing in pod mode on that cgroup too.
//   program-bypass ...                  the same with bypassNetfilter (--bypass-netfilter).
//   program6 BPFFS N TARGET IP6[,IP6...] the same with every Service dual-stack (bench/objects.ts dualStack),
//                                       Service TARGET's IPv6 endpoints replaced by the given pods.
//   cleanup BPFFS                       detaches and unpins (bpfproxy cleanup).
import { cluster, dualStack, endpointSliceWith } from "./objects.js";
import { buildNodeModel, ModelCache } from "../src/model/index.js";
import { BpfDataplane } from "../src/dataplane/bpf/index.js";
import { cleanup } from "../src/dataplane/bpf/status.js";

const [mode, bpffs, nArg, targetArg, ipsArg, cgroupPath] = process.argv.slice(2);

async function main(): Promise<void> {
  if (mode === "cleanup") {
    cleanup(bpffs!);
    return;
  }
  const n = Number(nArg);
  const target = Number(targetArg);
  const v6 = mode === "program6";
  const snap = v6 ? dualStack(cluster(n, 10), 10) : cluster(n, 10);
  // The IPv6 slices follow the IPv4 ones (dualStack): Service i's is at n + i.
  snap.endpointSlices[v6 ? n + target : target] = endpointSliceWith(target, ipsArg!.split(","), v6 ? 6 : 4);
  // The daemon's options for detectLocalMode ClusterCIDR with the lab's pods inside 10.128.0.0/9; no XDP
  // (the measured path is pod → ClusterIP, which tc carries).
  const dp = new BpfDataplane({
    nodeName: "node-a",
    bpffs: bpffs!,
    devices: ["eth0"],
    podInterfaces: ["lxc*"],
    clusterCIDRs: v6 ? ["10.128.0.0/9", "fd00:200::/32"] : ["10.128.0.0/9"],
    detectLocal: true,
    xdp: "off",
    bypassNetfilter: mode === "program-bypass",
    ...(cgroupPath ? { cgroupPath, socketLBPodNamespaces: true } : {}),
  });
  await dp.start();
  await dp.refreshAttachments();
  const t0 = performance.now();
  const r = await dp.sync(buildNodeModel({ ...snap, nodeName: "node-a", cache: new ModelCache() }), { full: true });
  const ms = performance.now() - t0;
  await dp.stop();
  const attached = dp.attachments().length;
  const want = cgroupPath ? 8 : 4;
  if (attached < want)
    throw new Error(`expected ${want} attachments (tc on eth0 and the pod veth; socket hooks), got ${attached}`);
  if (r.skipped.length || r.notProgrammed?.length)
    throw new Error(`not everything was programmed: ${JSON.stringify(r).slice(0, 500)}`);
  await dp.stop();
  console.log(JSON.stringify({ ms, attachments: attached }));
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
