// NodePorts outside the reserved NodePort range are reported once per Service and port: the host may take such a
// port as an ephemeral one, and that connection's replies would be taken for NodePort traffic.
import { test } from "node:test";
import assert from "node:assert/strict";
import { NodePortsOutsideRange } from "../src/dataplane/bpf/reserved-ports.js";

test("a NodePort outside the range is reported once per Service and port; inside, and other types, never", () => {
  const seen: string[] = [];
  const check = new NodePortsOutsideRange({ min: 30000, max: 32767 }, (svc, port) => seen.push(`${svc}:${port}`));
  const fe = (service: string, type: "ClusterIP" | "NodePort" | "LoadBalancer", port: number) => ({
    service,
    type,
    port,
  });
  check.note([
    fe("default/in", "NodePort", 30000),
    fe("default/in", "NodePort", 32767),
    fe("default/low", "NodePort", 29999),
    fe("default/high", "NodePort", 32768),
    fe("default/cluster", "ClusterIP", 80),
    fe("default/lb", "LoadBalancer", 443),
  ]);
  assert.deepEqual(seen, ["default/low:29999", "default/high:32768"]);
  check.note([fe("default/low", "NodePort", 29999), fe("default/low", "NodePort", 20000)]);
  assert.deepEqual(seen, ["default/low:29999", "default/high:32768", "default/low:20000"], "new ports only");
});
