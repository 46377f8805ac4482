// Runs inside a lab node's network namespace (test/vm/ipvs6.vmtest.ts starts it with `ip netns exec`):
// applies a NodeModel read from a JSON file to the IPVS data plane directly, without the daemon (the model
// does not emit IPv6 frontends yet, so the tests build them by hand), and prints what `bpfproxy status`
// reads back. `cleanup` runs `bpfproxy cleanup`'s IPVS part in that namespace.
//   node --import tsx test/vm/ipvs-apply.ts apply MODEL.json CLUSTER_CIDR[,CLUSTER_CIDR]
//   node --import tsx test/vm/ipvs-apply.ts cleanup
import { readFileSync } from "node:fs";
import { cleanupIpvs, IpvsDataplane, readIpvsStatus } from "../../src/dataplane/ipvs/index.js";
import type { NodeModel } from "../../src/model/types.js";

const [cmd, file, cidrs] = process.argv.slice(2);
if (cmd === "cleanup") {
  console.log(JSON.stringify(await cleanupIpvs()));
} else if (cmd === "apply" && file) {
  const model = JSON.parse(readFileSync(file, "utf8")) as NodeModel;
  const dp = new IpvsDataplane({
    bpffs: "/nonexistent", // unused by the IPVS data plane
    devices: [],
    podInterfaces: [],
    clusterCIDRs: (cidrs ?? "").split(",").filter(Boolean),
    nodeName: model.node,
    scheduler: "rr",
  });
  await dp.start();
  await dp.sync(model);
  await dp.stop();
  console.log(JSON.stringify(await readIpvsStatus()));
} else {
  console.error("usage: ipvs-apply.ts apply MODEL.json CIDRS | cleanup");
  process.exit(2);
}
