// Objects shaped like a real API server's (issue 18 item 7): what kubectl, Helm and the EndpointSlice controller
// leave on them — labels, annotations (kubectl's last-applied-configuration), managedFields, ownerReferences,
// targetRef, zone and hints — for N Services × E endpoints (bench/realistic-serve.ts).
import { clusterIP, podIP } from "./objects.js";

const NS = "bench";
const uid = (kind: string, i: number, j = 0) =>
  `${kind.padEnd(8, "0").slice(0, 8)}-${(i >>> 0).toString(16).padStart(4, "0").slice(-4)}-4${j
    .toString(16)
    .padStart(3, "0")
    .slice(-3)}-8000-${i.toString(16).padStart(12, "0")}`;
const TIME = "2026-12-01T10:00:00Z";

/** A Service as a Helm chart applied with kubectl leaves it: labels, last-applied annotation, managedFields. */
export function realisticService(i: number): Record<string, unknown> {
  const name = `svc-${i}`;
  const labels = {
    app: name,
    "app.kubernetes.io/name": name,
    "app.kubernetes.io/instance": `release-${i % 97}`,
    "app.kubernetes.io/managed-by": "Helm",
    "app.kubernetes.io/version": "1.27.3",
    "helm.sh/chart": `chart-${i % 53}-4.2.1`,
  };
  const spec = {
    type: "ClusterIP",
    clusterIP: clusterIP(i),
    clusterIPs: [clusterIP(i)],
    ipFamilies: ["IPv4"],
    ipFamilyPolicy: "SingleStack",
    internalTrafficPolicy: "Cluster",
    sessionAffinity: "None",
    selector: { "app.kubernetes.io/name": name, "app.kubernetes.io/instance": `release-${i % 97}` },
    ports: [{ name: "http", port: 80, targetPort: 8080, protocol: "TCP" }],
  };
  const lastApplied = { apiVersion: "v1", kind: "Service", metadata: { name, namespace: NS, labels }, spec };
  return {
    apiVersion: "v1",
    kind: "Service",
    metadata: {
      name,
      namespace: NS,
      labels,
      annotations: {
        "kubectl.kubernetes.io/last-applied-configuration": JSON.stringify(lastApplied),
        "meta.helm.sh/release-name": `release-${i % 97}`,
        "meta.helm.sh/release-namespace": NS,
      },
      managedFields: [
        {
          manager: "helm",
          operation: "Update",
          apiVersion: "v1",
          time: TIME,
          fieldsType: "FieldsV1",
          fieldsV1: {
            "f:metadata": {
              "f:annotations": { ".": {}, "f:meta.helm.sh/release-name": {}, "f:meta.helm.sh/release-namespace": {} },
              "f:labels": Object.fromEntries([".", ...Object.keys(labels).map((k) => `f:${k}`)].map((k) => [k, {}])),
            },
            "f:spec": {
              "f:internalTrafficPolicy": {},
              "f:ports": { ".": {}, 'k:{"port":80,"protocol":"TCP"}': { ".": {}, "f:name": {}, "f:port": {} } },
              "f:selector": {},
              "f:sessionAffinity": {},
              "f:type": {},
            },
          },
        },
      ],
    },
    spec,
  };
}

/** An EndpointSlice as the EndpointSlice controller writes it, E endpoints on three zones. */
export function realisticSlice(i: number, endpoints: number): Record<string, unknown> {
  const svc = `svc-${i}`;
  const zones = ["zone-a", "zone-b", "zone-c"];
  const eps = Array.from({ length: endpoints }, (_, j) => {
    const zone = zones[j % 3]!;
    return {
      addresses: [podIP(i, j)],
      conditions: { ready: true, serving: true, terminating: false },
      hints: { forZones: [{ name: zone }] },
      nodeName: `node-${(i * 7 + j) % 200}`,
      targetRef: {
        kind: "Pod",
        namespace: NS,
        name: `${svc}-7d9f8b6c5-${j.toString(36).padStart(5, "x")}`,
        uid: uid("pod", i, j),
      },
      zone,
    };
  });
  return {
    apiVersion: "discovery.k8s.io/v1",
    kind: "EndpointSlice",
    addressType: "IPv4",
    metadata: {
      name: `${svc}-a1b2c`,
      namespace: NS,
      generateName: `${svc}-`,
      labels: {
        "kubernetes.io/service-name": svc,
        "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io",
        app: svc,
        "app.kubernetes.io/name": svc,
        "app.kubernetes.io/instance": `release-${i % 97}`,
        "app.kubernetes.io/managed-by": "Helm",
      },
      annotations: { "endpoints.kubernetes.io/last-change-trigger-time": TIME },
      ownerReferences: [
        {
          apiVersion: "v1",
          kind: "Service",
          name: svc,
          uid: uid("service", i),
          controller: true,
          blockOwnerDeletion: true,
        },
      ],
      managedFields: [
        {
          manager: "kube-controller-manager",
          operation: "Update",
          apiVersion: "discovery.k8s.io/v1",
          time: TIME,
          fieldsType: "FieldsV1",
          fieldsV1: {
            "f:addressType": {},
            "f:endpoints": {},
            "f:metadata": {
              "f:annotations": { ".": {}, "f:endpoints.kubernetes.io/last-change-trigger-time": {} },
              "f:generateName": {},
              "f:labels": {
                ".": {},
                "f:endpointslice.kubernetes.io/managed-by": {},
                "f:kubernetes.io/service-name": {},
              },
              "f:ownerReferences": { ".": {}, [`k:{"uid":"${uid("service", i)}"}`]: {} },
            },
            "f:ports": {},
          },
        },
      ],
    },
    ports: [{ name: "http", port: 8080, protocol: "TCP" }],
    endpoints: eps,
  };
}

export function nodeObject(): Record<string, unknown> {
  return {
    apiVersion: "v1",
    kind: "Node",
    metadata: {
      name: "node-a",
      labels: { "kubernetes.io/hostname": "node-a", "topology.kubernetes.io/zone": "zone-a" },
    },
    spec: { podCIDR: "10.244.1.0/24", podCIDRs: ["10.244.1.0/24"] },
    status: { addresses: [{ type: "InternalIP", address: "192.0.2.11" }] },
  };
}
