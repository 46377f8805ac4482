// zod schemas for the subset of Kubernetes objects bpfproxy uses: Service (v1), EndpointSlice
// (discovery.k8s.io/v1), Endpoints (v1, converted to slices by endpoints.ts) and Node (v1).
//
// Every object crosses one of these schemas exactly once, at the source. Parsing also normalises: API
// defaults are applied (protocol TCP, targetPort = port, session affinity timeout 10800 s, ...), `null`
// lists become empty lists (the apiserver serialises an empty EndpointSlice as `"endpoints": null`), and
// fields we do not use are stripped so that the caches stay small.
//
// What is checked is what the data plane depends on: names, IP literals, CIDRs, port ranges, protocols,
// and the Service port invariants the apiserver enforces (unique port names, unique (port, protocol),
// names required when there is more than one port). Values we only pass through (trafficDistribution,
// ipFamilies, appProtocol) are accepted as any string so that a newer apiserver does not make us drop a
// whole Service.
//
// IP literals: IPv4 must be a dotted quad without leading zeros (net.isIPv4). IPv6 literals are accepted
// wherever a dual-stack object may carry one; the model programs IPv4 only and ignores the rest.

import { z } from "zod";
import { isCIDR, isIP, isIPv4, isIPv6 } from "./ip.js";
import { compactSlice, keptAnnotations, keptLabels, sharedPorts } from "./packed.js";

/** Short, bounded reason codes: the `reason` label of bpfproxy_invalid_objects_total. */
export type InvalidCode =
  | "missing_field"
  | "bad_name"
  | "bad_ip"
  | "bad_cidr"
  | "port_out_of_range"
  | "bad_port_name"
  | "bad_protocol"
  | "duplicate_port"
  | "bad_value"
  | "unsupported_version"
  | "not_an_object"
  | "parse_error";

/** kube-apiserver's default for sessionAffinityConfig.clientIP.timeoutSeconds (3 hours). */
export const DEFAULT_AFFINITY_TIMEOUT_SECONDS = 10800;

// ---------------------------------------------------------------------------------------------------------
// Building blocks

const DNS_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const DNS_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
/** IANA_SVC_NAME: what a named targetPort / container port name must look like. */
const IANA_SVC_NAME = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;

function reasonParams(reason: InvalidCode): { params: { reason: InvalidCode } } {
  return { params: { reason } };
}

/** A list that may be absent or null; parses to [] then. */
function list<T extends z.ZodType>(item: T) {
  return z
    .array(item)
    .nullish()
    .transform((v) => v ?? []);
}

/** A string map (labels, annotations) that may be absent or null. */
const stringMap = z
  .record(z.string(), z.string())
  .nullish()
  .transform((v): Record<string, string> => v ?? {});

/** Labels and annotations as kept: only the keys bpfproxy reads (labels.ts), so the caches stay small. */
const keptLabelMap = stringMap.transform(keptLabels);
const keptAnnotationMap = stringMap.transform(keptAnnotations);

const objectName = z
  .string({ error: "name is required" })
  .min(1, { message: "name is required" })
  .max(253, { message: "name longer than 253 characters" })
  .refine((s) => DNS_SUBDOMAIN.test(s), { message: "name is not a DNS subdomain", ...reasonParams("bad_name") });

const namespaceName = z
  .string({ error: "namespace is required" })
  .min(1, { message: "namespace is required" })
  .max(63, { message: "namespace longer than 63 characters" })
  .refine((s) => DNS_LABEL.test(s), { message: "namespace is not a DNS label", ...reasonParams("bad_name") });

/**
 * No resourceVersion or uid: the model never reads them, and the reflector keeps each object's resourceVersion
 * itself (what a relist diffs against); 60k objects are ~6 MiB smaller without them. Zod drops keys not named.
 */
const namespacedMetadata = z.object({
  name: objectName,
  namespace: namespaceName,
  labels: keptLabelMap,
  annotations: keptAnnotationMap,
});

/**
 * A Service's name is a DNS-1035 label of at most 63 characters, as the API server requires. The limit matters
 * to the data plane too: bpx_svc_meta.service (char[BPX_NAME_LEN = 128] in bpf/lib/lb.h) holds
 * "namespace/name", at most 63 + 1 + 63 = 127 bytes with its NUL. A longer name (from a manifest folder, which
 * no API server checked) is refused here with the object's name, instead of failing every sync when encoded.
 */
const DNS1035_LABEL = /^[a-z]([-a-z0-9]*[a-z0-9])?$/;
const serviceMetadata = namespacedMetadata.extend({
  name: z
    .string({ error: "name is required" })
    .min(1, { message: "name is required" })
    .max(63, {
      message:
        "Service name longer than 63 characters (the API server's limit; the data plane stores namespace/name in 127 bytes)",
      ...reasonParams("bad_name"),
    })
    .refine((s) => DNS1035_LABEL.test(s), {
      message: "Service name is not a DNS-1035 label (lower case letters, digits and '-', starting with a letter)",
      ...reasonParams("bad_name"),
    }),
});

const clusterMetadata = z.object({
  name: objectName,
  labels: keptLabelMap,
  annotations: keptAnnotationMap,
  resourceVersion: z.string().optional(),
  uid: z.string().optional(),
});

const ipAddress = z.string().refine(isIP, { message: "not a valid IP address", ...reasonParams("bad_ip") });
const ipv4Address = z.string().refine(isIPv4, { message: "not a valid IPv4 address", ...reasonParams("bad_ip") });
const ipv6Address = z.string().refine(isIPv6, { message: "not a valid IPv6 address", ...reasonParams("bad_ip") });

/** An optional string field; absent and null read as "". */
const stringOrEmpty = () =>
  z
    .string()
    .nullish()
    .transform((v) => v ?? "");

const portNumber = z
  .number({ error: "port must be a number" })
  .int({ message: "port must be an integer" })
  .min(1, { message: "port must be in 1..65535" })
  .max(65535, { message: "port must be in 1..65535" });

/** 0 means "not set" (nodePort, healthCheckNodePort). */
const optionalPortNumber = z
  .number()
  .int({ message: "port must be an integer" })
  .min(0, { message: "port must be in 0..65535" })
  .max(65535, { message: "port must be in 0..65535" })
  .nullish()
  .transform((v) => v ?? 0);

export const protocolSchema = z
  .enum(["TCP", "UDP", "SCTP"], { error: "protocol must be TCP, UDP or SCTP" })
  .nullish()
  .transform((v) => v ?? "TCP");

// ---------------------------------------------------------------------------------------------------------
// Service

const servicePortSchema = z
  .object({
    name: stringOrEmpty(),
    protocol: protocolSchema,
    port: portNumber,
    targetPort: z.union([z.number(), z.string()]).nullish(),
    nodePort: optionalPortNumber,
    appProtocol: z.string().nullish(),
  })
  .superRefine((p, ctx) => {
    if (p.name !== "" && (p.name.length > 63 || !DNS_LABEL.test(p.name))) {
      ctx.addIssue({
        code: "custom",
        path: ["name"],
        message: `port name "${p.name}" is not a DNS label`,
        ...reasonParams("bad_port_name"),
      });
    }
    const tp = p.targetPort;
    if (typeof tp === "number") {
      if (!Number.isInteger(tp) || tp < 1 || tp > 65535) {
        ctx.addIssue({
          code: "custom",
          path: ["targetPort"],
          message: "targetPort must be in 1..65535",
          ...reasonParams("port_out_of_range"),
        });
      }
    } else if (typeof tp === "string") {
      if (tp.length === 0 || tp.length > 15 || !IANA_SVC_NAME.test(tp) || !/[a-z]/.test(tp)) {
        ctx.addIssue({
          code: "custom",
          path: ["targetPort"],
          message: `targetPort "${tp}" is neither a port number nor a valid port name`,
          ...reasonParams("bad_port_name"),
        });
      }
    }
  })
  .transform((p) => ({
    name: p.name,
    protocol: p.protocol,
    port: p.port,
    /** Defaults to `port`, as the apiserver does. A string is a named port resolved by the slices. */
    targetPort: p.targetPort ?? p.port,
    nodePort: p.nodePort,
    ...(p.appProtocol ? { appProtocol: p.appProtocol } : {}),
  }));

const serviceSpecSchema = z.object({
  type: z
    .enum(["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"], {
      error: "type must be ClusterIP, NodePort, LoadBalancer or ExternalName",
    })
    .nullish()
    .transform((v) => v ?? "ClusterIP"),
  clusterIP: stringOrEmpty().refine((s) => s === "" || s === "None" || isIP(s), {
    message: "clusterIP is neither an IP nor None",
    ...reasonParams("bad_ip"),
  }),
  clusterIPs: list(
    z.string().refine((s) => s === "None" || isIP(s), {
      message: "clusterIPs entry is neither an IP nor None",
      ...reasonParams("bad_ip"),
    }),
  ),
  ipFamilies: list(z.string()),
  ipFamilyPolicy: z.string().nullish(),
  ports: list(servicePortSchema),
  selector: z.record(z.string(), z.string()).nullish(),
  externalIPs: list(ipAddress),
  loadBalancerIP: stringOrEmpty().refine((s) => s === "" || isIP(s), {
    message: "loadBalancerIP is not an IP",
    ...reasonParams("bad_ip"),
  }),
  loadBalancerSourceRanges: list(
    z
      .string()
      .refine(isCIDR, { message: "loadBalancerSourceRanges entry is not a CIDR", ...reasonParams("bad_cidr") })
      .transform((s) => s.trim()),
  ),
  loadBalancerClass: z.string().nullish(),
  allocateLoadBalancerNodePorts: z.boolean().nullish(),
  sessionAffinity: z
    .enum(["None", "ClientIP"], { error: "sessionAffinity must be None or ClientIP" })
    .nullish()
    .transform((v) => v ?? "None"),
  sessionAffinityConfig: z
    .object({
      clientIP: z
        .object({
          timeoutSeconds: z
            .number()
            .int({ message: "timeoutSeconds must be an integer" })
            .min(1, { message: "timeoutSeconds must be in 1..86400" })
            .max(86400, { message: "timeoutSeconds must be in 1..86400" })
            .nullish(),
        })
        .nullish(),
    })
    .nullish(),
  externalTrafficPolicy: z
    .enum(["Cluster", "Local"], { error: "externalTrafficPolicy must be Cluster or Local" })
    .nullish()
    .transform((v) => v ?? "Cluster"),
  internalTrafficPolicy: z
    .enum(["Cluster", "Local"], { error: "internalTrafficPolicy must be Cluster or Local" })
    .nullish()
    .transform((v) => v ?? "Cluster"),
  healthCheckNodePort: optionalPortNumber,
  /** Any string: unknown values are ignored by the model (no topology), not rejected. */
  trafficDistribution: z.string().nullish(),
  externalName: z.string().nullish(),
  publishNotReadyAddresses: z.boolean().nullish(),
});

const loadBalancerIngressSchema = z.object({
  ip: stringOrEmpty().refine((s) => s === "" || isIP(s), {
    message: "ingress ip is not an IP",
    ...reasonParams("bad_ip"),
  }),
  hostname: z.string().nullish(),
  /** "VIP" (default) or "Proxy"; kube-proxy programs only VIP-mode ingress IPs. */
  ipMode: z.enum(["VIP", "Proxy"], { error: "ipMode must be VIP or Proxy" }).nullish(),
});

export const serviceSchema = z
  .object({
    apiVersion: z.string().optional(),
    kind: z.string().optional(),
    metadata: serviceMetadata,
    spec: serviceSpecSchema,
    status: z
      .object({
        loadBalancer: z.object({ ingress: list(loadBalancerIngressSchema) }).nullish(),
      })
      .nullish(),
  })
  .superRefine((svc, ctx) => {
    const spec = svc.spec;
    if (spec.type === "ExternalName") {
      if (!spec.externalName) {
        ctx.addIssue({
          code: "custom",
          path: ["spec", "externalName"],
          message: "externalName is required for type ExternalName",
          ...reasonParams("missing_field"),
        });
      }
      return;
    }
    if (spec.clusterIPs.length > 0 && spec.clusterIP !== "" && spec.clusterIPs[0] !== spec.clusterIP) {
      ctx.addIssue({
        code: "custom",
        path: ["spec", "clusterIPs"],
        message: "clusterIPs[0] must equal clusterIP",
        ...reasonParams("bad_ip"),
      });
    }
    const headless = spec.clusterIP === "None" || spec.clusterIPs[0] === "None";
    if (!headless && spec.ports.length === 0) {
      ctx.addIssue({
        code: "custom",
        path: ["spec", "ports"],
        message: "a non-headless Service needs at least one port",
        ...reasonParams("missing_field"),
      });
    }
    const names = new Set<string>();
    const portProtos = new Set<string>();
    spec.ports.forEach((p, i) => {
      if (spec.ports.length > 1 && p.name === "") {
        ctx.addIssue({
          code: "custom",
          path: ["spec", "ports", i, "name"],
          message: "every port needs a name when there is more than one",
          ...reasonParams("missing_field"),
        });
      }
      if (p.name !== "" && names.has(p.name)) {
        ctx.addIssue({
          code: "custom",
          path: ["spec", "ports", i, "name"],
          message: `duplicate port name "${p.name}"`,
          ...reasonParams("duplicate_port"),
        });
      }
      names.add(p.name);
      const pp = `${p.port}/${p.protocol}`;
      if (portProtos.has(pp)) {
        ctx.addIssue({
          code: "custom",
          path: ["spec", "ports", i],
          message: `duplicate port ${pp}`,
          ...reasonParams("duplicate_port"),
        });
      }
      portProtos.add(pp);
    });
  })
  .transform((svc) => {
    const spec = svc.spec;
    const clusterIPs = spec.clusterIPs.length > 0 ? spec.clusterIPs : spec.clusterIP !== "" ? [spec.clusterIP] : [];
    const timeoutSeconds = spec.sessionAffinityConfig?.clientIP?.timeoutSeconds ?? DEFAULT_AFFINITY_TIMEOUT_SECONDS;
    const ingress = svc.status?.loadBalancer?.ingress ?? [];
    return {
      metadata: svc.metadata,
      spec: {
        type: spec.type,
        clusterIP: clusterIPs[0] ?? "",
        clusterIPs,
        ipFamilies: sharedList(spec.ipFamilies),
        ports: sharedPorts(spec.ports),
        hasSelector: spec.selector != null && Object.keys(spec.selector).length > 0,
        externalIPs: sharedList(spec.externalIPs),
        loadBalancerIP: spec.loadBalancerIP,
        loadBalancerSourceRanges: sharedList(spec.loadBalancerSourceRanges),
        allocateLoadBalancerNodePorts: spec.allocateLoadBalancerNodePorts ?? true,
        sessionAffinity: spec.sessionAffinity,
        /** Meaningful only with sessionAffinity ClientIP. */
        sessionAffinityTimeoutSeconds: timeoutSeconds,
        externalTrafficPolicy: spec.externalTrafficPolicy,
        internalTrafficPolicy: spec.internalTrafficPolicy,
        healthCheckNodePort: spec.healthCheckNodePort,
        trafficDistribution: spec.trafficDistribution ?? "",
        externalName: spec.externalName ?? "",
        publishNotReadyAddresses: spec.publishNotReadyAddresses ?? false,
      },
      status:
        ingress.length === 0
          ? NO_STATUS
          : {
              loadBalancer: {
                ingress: ingress.map((i) => ({ ip: i.ip, hostname: i.hostname ?? "", ipMode: i.ipMode ?? "VIP" })),
              },
            },
    };
  });

/** What most Services have, shared by all of them (read-only: frozen): 30k Services are ~250 B each smaller. */
const NO_STATUS: { loadBalancer: { ingress: { ip: string; hostname: string; ipMode: "VIP" | "Proxy" }[] } } =
  Object.freeze({ loadBalancer: Object.freeze({ ingress: Object.freeze([]) as never[] }) });
const EMPTY_LIST = Object.freeze([]) as never[];
const IPV4_ONLY = Object.freeze(["IPv4"]) as string[];
function sharedList(l: string[]): string[] {
  if (l.length === 0) return EMPTY_LIST;
  if (l.length === 1 && l[0] === "IPv4") return IPV4_ONLY;
  return l;
}

export type Service = z.output<typeof serviceSchema>;
export type ServicePort = Service["spec"]["ports"][number];

// ---------------------------------------------------------------------------------------------------------
// EndpointSlice (discovery.k8s.io/v1)

const endpointConditionsSchema = z
  .object({
    ready: z.boolean().nullish(),
    serving: z.boolean().nullish(),
    terminating: z.boolean().nullish(),
  })
  .nullish()
  // The API's "unknown means ready/serving" rule, as kube-proxy reads it.
  .transform((c) => ({
    ready: c?.ready ?? true,
    serving: c?.serving ?? true,
    terminating: c?.terminating ?? false,
  }));

const namedList = list(z.object({ name: z.string() })).transform((l) => l.map((e) => e.name));

const endpointSchema = z
  .object({
    addresses: z.array(z.string(), { error: "endpoint addresses are required" }).min(1, {
      message: "an endpoint needs at least one address",
    }),
    conditions: endpointConditionsSchema,
    hostname: z.string().nullish(),
    nodeName: z.string().nullish(),
    zone: z.string().nullish(),
    hints: z.object({ forZones: namedList, forNodes: namedList }).nullish(),
  })
  .transform((e) => ({
    addresses: e.addresses,
    conditions: e.conditions,
    nodeName: e.nodeName ?? "",
    zone: e.zone ?? "",
    hints: { forZones: e.hints?.forZones ?? [], forNodes: e.hints?.forNodes ?? [] },
  }));

const endpointPortSchema = z.object({
  // The API defaults a missing name to "" and a missing protocol to TCP.
  name: stringOrEmpty(),
  protocol: protocolSchema,
  /** null = "all ports", which kube-proxy (and we) ignore. */
  port: portNumber.nullish().transform((v) => v ?? null),
  appProtocol: z.string().nullish(),
});

const endpointSliceBase = z
  .object({
    apiVersion: z.string().optional(),
    kind: z.string().optional(),
    metadata: namespacedMetadata,
    addressType: z.enum(["IPv4", "IPv6", "FQDN"], { error: "addressType must be IPv4, IPv6 or FQDN" }),
    endpoints: list(endpointSchema),
    ports: list(endpointPortSchema),
  })
  .superRefine((s, ctx) => {
    const check = s.addressType === "IPv4" ? ipv4Address : s.addressType === "IPv6" ? ipv6Address : undefined;
    if (!check) return;
    s.endpoints.forEach((e, i) => {
      e.addresses.forEach((a, j) => {
        if (!check.safeParse(a).success) {
          ctx.addIssue({
            code: "custom",
            path: ["endpoints", i, "addresses", j],
            message: `"${a}" is not a valid ${s.addressType} address`,
            ...reasonParams("bad_ip"),
          });
        }
      });
    });
  })
  .transform((s) => ({
    metadata: s.metadata,
    addressType: s.addressType,
    endpoints: s.endpoints,
    ports: s.ports.map((p) => ({ name: p.name, protocol: p.protocol, port: p.port })),
  }));

/** Validated slices come out compact (packed.ts): what a source keeps is this, with no second copy. */
export const endpointSliceSchema = endpointSliceBase.transform(compactSlice);

export type EndpointSlice = z.output<typeof endpointSliceBase>;
export type SliceEndpoint = EndpointSlice["endpoints"][number];
export type SlicePort = EndpointSlice["ports"][number];

// ---------------------------------------------------------------------------------------------------------
// Endpoints (v1), for selector-less Services written by hand. Converted to slices by endpoints.ts.

const endpointAddressSchema = z.object({
  ip: ipAddress,
  hostname: z.string().nullish(),
  nodeName: z.string().nullish(),
});

export const endpointsSchema = z.object({
  apiVersion: z.string().optional(),
  kind: z.string().optional(),
  metadata: namespacedMetadata,
  subsets: list(
    z.object({
      addresses: list(endpointAddressSchema),
      notReadyAddresses: list(endpointAddressSchema),
      ports: list(
        z.object({
          name: stringOrEmpty(),
          protocol: protocolSchema,
          port: portNumber,
        }),
      ),
    }),
  ),
});

export type Endpoints = z.output<typeof endpointsSchema>;

// ---------------------------------------------------------------------------------------------------------
// Node

export const nodeSchema = z
  .object({
    apiVersion: z.string().optional(),
    kind: z.string().optional(),
    metadata: clusterMetadata.extend({
      // Set while the Node is being deleted: /healthz then reports the node not eligible (kube-proxy).
      deletionTimestamp: z.string().nullish(),
    }),
    spec: z
      .object({
        // Only the key decides eligibility (the cluster autoscaler's ToBeDeleted taint); value and effect
        // are kept for `render`/debugging.
        taints: list(z.object({ key: z.string(), value: z.string().nullish(), effect: z.string().nullish() })),
        // detectLocalMode NodeCIDR: sources inside the node's pod CIDRs are local traffic.
        podCIDR: z.string().nullish(),
        podCIDRs: list(z.string()),
      })
      .nullish(),
    status: z
      .object({
        addresses: list(z.object({ type: z.string(), address: z.string() })),
      })
      .nullish(),
  })
  .superRefine((n, ctx) => {
    // detectLocalMode NodeCIDR writes these into bpx_config (at most MAX_CLUSTER_CIDRS = 4 IPv4 CIDRs): a value
    // that is not a CIDR, or more than the API server allows (one per family), would fail every sync there.
    const cidrs = [
      ...(n.spec?.podCIDR ? [{ path: ["spec", "podCIDR"], v: n.spec.podCIDR }] : []),
      ...(n.spec?.podCIDRs ?? []).map((v, i) => ({ path: ["spec", "podCIDRs", i], v })),
    ];
    for (const { path, v } of cidrs) {
      if (!isCIDR(v))
        ctx.addIssue({ code: "custom", path, message: `podCIDR "${v}" is not a CIDR`, ...reasonParams("bad_cidr") });
    }
    const podCIDRs = n.spec?.podCIDRs ?? [];
    const v4 = podCIDRs.filter((c) => isCIDR(c) && !c.includes(":")).length;
    if (v4 > 1 || podCIDRs.length - v4 > 1)
      ctx.addIssue({
        code: "custom",
        path: ["spec", "podCIDRs"],
        message: `podCIDRs may hold at most one CIDR per IP family, got ${JSON.stringify(podCIDRs)}`,
        ...reasonParams("bad_cidr"),
      });
    (n.status?.addresses ?? []).forEach((a, i) => {
      if ((a.type === "InternalIP" || a.type === "ExternalIP") && !isIP(a.address)) {
        ctx.addIssue({
          code: "custom",
          path: ["status", "addresses", i, "address"],
          message: `${a.type} "${a.address}" is not a valid IP address`,
          ...reasonParams("bad_ip"),
        });
      }
    });
  })
  .transform((n) => ({
    metadata: {
      name: n.metadata.name,
      labels: n.metadata.labels,
      annotations: n.metadata.annotations,
      resourceVersion: n.metadata.resourceVersion,
      uid: n.metadata.uid,
      deletionTimestamp: n.metadata.deletionTimestamp ?? undefined,
    },
    spec: {
      taints: (n.spec?.taints ?? []).map((t) => ({ key: t.key, value: t.value ?? "", effect: t.effect ?? "" })),
      // podCIDRs wins; podCIDR alone is what older API servers set.
      podCIDRs: n.spec?.podCIDRs?.length ? n.spec.podCIDRs : n.spec?.podCIDR ? [n.spec.podCIDR] : [],
    },
    status: { addresses: n.status?.addresses ?? [] },
  }));

export type Node = z.output<typeof nodeSchema>;
