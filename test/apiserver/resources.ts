// The API resources the test apiserver serves, with the per-type behaviour of the real registry that bpfproxy can
// observe: defaulting, ClusterIP/NodePort allocation, validation, selectable fields, event version conversion.
import { isIP } from "node:net";
import { type FieldError, type Obj } from "./errors.js";
import { type ListStrategy, defaultListStrategies } from "./patch.js";
import { type FieldGetter } from "./selectors.js";

export interface TableColumn {
  name: string;
  type: "string" | "integer" | "number" | "boolean" | "date";
  format?: string;
  description?: string;
  priority?: number;
}

/** What a resource's hooks may consult: the other stored objects and the cluster's configuration. */
export interface ResourceContext {
  listStored(storage: string): Obj[];
  serviceCIDRs: string[];
  nodePortRange: [number, number];
}

export interface ResourceDef {
  group: string;
  version: string;
  /** plural, lower case: "services" */
  resource: string;
  singular: string;
  kind: string;
  listKind: string;
  namespaced: boolean;
  shortNames?: string[];
  categories?: string[];
  verbs: string[];
  /** "status" etc. Served at .../NAME/status for get, update, patch. */
  subresources?: string[];
  /** Storage shared between versions of one resource (core and events.k8s.io events). */
  storage: string;
  allowCreateOnUpdate?: boolean;
  /** DELETE answers with the deleted object rather than a Status. */
  returnDeletedObject?: boolean;
  /** status is reset on create (Services) */
  resetStatusOnCreate?: boolean;
  /** Field selectors this resource supports, beyond metadata.name and metadata.namespace. */
  fields?: Record<string, FieldGetter>;
  listStrategies?: Record<string, ListStrategy>;
  nameRule?: "subdomain" | "label1123" | "label1035" | "path";
  toServed?(stored: Obj): Obj;
  toStored?(served: Obj): Obj;
  prepareCreate?(obj: Obj, ctx: ResourceContext): void;
  prepareUpdate?(obj: Obj, old: Obj, ctx: ResourceContext): void;
  validate?(obj: Obj, old: Obj | undefined, ctx: ResourceContext): FieldError[];
  table?: { columns: TableColumn[]; cells(obj: Obj, now: number): unknown[] };
}

export const apiVersionOf = (d: Pick<ResourceDef, "group" | "version">) =>
  d.group ? `${d.group}/${d.version}` : d.version;

const ALL_VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"];

// ---------- time and table helpers ----------

export function humanDuration(ms: number): string {
  const s = Math.floor(ms / 1000);
  if (s < 0) return "0s";
  if (s < 120) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 10) return s % 60 === 0 ? `${m}m` : `${m}m${s % 60}s`;
  if (m < 180) return `${m}m`;
  const h = Math.floor(m / 60);
  if (h < 8) return m % 60 === 0 ? `${h}h` : `${h}h${m % 60}m`;
  if (h < 48) return `${h}h`;
  const d = Math.floor(h / 24);
  if (h < 24 * 8) return h % 24 === 0 ? `${d}d` : `${d}d${h % 24}h`;
  if (d < 365 * 2) return `${d}d`;
  return `${Math.floor(d / 365)}y`;
}

export function age(ts: string | undefined, now: number): string {
  if (!ts) return "<unknown>";
  const t = Date.parse(ts);
  return Number.isNaN(t) ? "<unknown>" : humanDuration(now - t);
}

const NAME_COL: TableColumn = {
  name: "Name",
  type: "string",
  format: "name",
  description: "Name must be unique within a namespace.",
};
const AGE_COL: TableColumn = {
  name: "Age",
  type: "string",
  description: "CreationTimestamp is a timestamp representing the server time when this object was created.",
};

// ---------- IP and port allocation ----------

export function ipToBigInt(ip: string): { v: bigint; family: 4 | 6 } {
  if (isIP(ip) === 4) return { v: ip.split(".").reduce((a, o) => (a << 8n) + BigInt(Number(o)), 0n), family: 4 };
  if (isIP(ip) !== 6) throw new Error(`not an IP: ${ip}`);
  let s = ip;
  const v4 = s.match(/(\d+\.\d+\.\d+\.\d+)$/);
  if (v4) {
    const n = ipToBigInt(v4[1]!).v;
    s = s.slice(0, -v4[1]!.length) + `${(n >> 16n).toString(16)}:${(n & 0xffffn).toString(16)}`;
  }
  const [head, tail] = s.includes("::") ? s.split("::") : [s, undefined];
  const h = head ? head.split(":") : [];
  const t = tail !== undefined && tail !== "" ? tail.split(":") : [];
  const groups = tail === undefined ? h : [...h, ...Array(8 - h.length - t.length).fill("0"), ...t];
  return { v: groups.reduce((a, g) => (a << 16n) + BigInt(parseInt(g, 16)), 0n), family: 6 };
}

export function bigIntToIp(v: bigint, family: 4 | 6): string {
  if (family === 4) return [24n, 16n, 8n, 0n].map((sh) => String((v >> sh) & 255n)).join(".");
  const groups: string[] = [];
  for (let i = 7; i >= 0; i--) groups.push(((v >> BigInt(i * 16)) & 0xffffn).toString(16));
  return new URL(`http://[${groups.join(":")}]/`).hostname.slice(1, -1);
}

export function parseCIDR(cidr: string): { base: bigint; bits: number; family: 4 | 6; size: bigint } {
  const [ip, len] = cidr.split("/");
  const { v, family } = ipToBigInt(ip!);
  const total = family === 4 ? 32 : 128;
  const bits = Number(len);
  const size = 1n << BigInt(total - bits);
  return { base: (v / size) * size, bits, family, size };
}

export function cidrContains(cidr: string, ip: string): boolean {
  if (isIP(ip) === 0) return false;
  const c = parseCIDR(cidr);
  const p = ipToBigInt(ip);
  return p.family === c.family && p.v >= c.base && p.v < c.base + c.size;
}

function usedClusterIPs(ctx: ResourceContext, exceptUid?: string): Set<string> {
  const used = new Set<string>();
  for (const s of ctx.listStored("services")) {
    if (exceptUid && s.metadata?.uid === exceptUid) continue;
    for (const ip of s.spec?.clusterIPs ?? [s.spec?.clusterIP]) if (ip && ip !== "None") used.add(ip);
  }
  return used;
}

function allocateIP(cidr: string, used: Set<string>): string {
  const c = parseCIDR(cidr);
  const span = c.size > 65536n ? 65536n : c.size;
  // like the real allocator, skip the network address; start a little above .1 (kept for the kubernetes service)
  for (let i = 10n; i < span + 10n; i++) {
    const off = i % span;
    if (off === 0n || (c.family === 4 && off === c.size - 1n)) continue;
    const ip = bigIntToIp(c.base + off, c.family);
    if (!used.has(ip)) return ip;
  }
  throw new Error(`service CIDR ${cidr} is full`);
}

function usedNodePorts(ctx: ResourceContext, exceptUid?: string): Set<number> {
  const used = new Set<number>();
  for (const s of ctx.listStored("services")) {
    if (exceptUid && s.metadata?.uid === exceptUid) continue;
    for (const p of s.spec?.ports ?? []) if (p.nodePort) used.add(p.nodePort);
    if (s.spec?.healthCheckNodePort) used.add(s.spec.healthCheckNodePort);
  }
  return used;
}

function allocatePort(ctx: ResourceContext, used: Set<number>): number {
  const [lo, hi] = ctx.nodePortRange;
  for (let p = lo; p <= hi; p++)
    if (!used.has(p)) {
      used.add(p);
      return p;
    }
  throw new Error("node port range is full");
}

// ---------- Service ----------

const needsNodePorts = (spec: Obj) =>
  spec.type === "NodePort" || (spec.type === "LoadBalancer" && spec.allocateLoadBalancerNodePorts !== false);

function defaultService(obj: Obj, ctx: ResourceContext): void {
  const spec = (obj.spec ??= {});
  spec.type ??= "ClusterIP";
  spec.sessionAffinity ??= "None";
  for (const p of spec.ports ?? []) {
    p.protocol ??= "TCP";
    if (p.targetPort === undefined || p.targetPort === 0 || p.targetPort === "") p.targetPort = p.port;
  }
  if (spec.sessionAffinity === "ClientIP") spec.sessionAffinityConfig ??= { clientIP: { timeoutSeconds: 10800 } };
  if (spec.type === "LoadBalancer") spec.allocateLoadBalancerNodePorts ??= true;
  if (spec.type !== "ExternalName") {
    spec.internalTrafficPolicy ??= "Cluster";
    if (spec.type === "NodePort" || spec.type === "LoadBalancer") spec.externalTrafficPolicy ??= "Cluster";
  }
  void ctx;
}

function allocateService(obj: Obj, ctx: ResourceContext, errs: FieldError[]): void {
  const spec = obj.spec;
  const uid = obj.metadata?.uid;
  if (spec.type === "ExternalName") {
    delete spec.clusterIP;
    delete spec.clusterIPs;
  } else {
    const used = usedClusterIPs(ctx, uid);
    if (!spec.clusterIP && Array.isArray(spec.clusterIPs) && spec.clusterIPs.length)
      spec.clusterIP = spec.clusterIPs[0];
    if (spec.clusterIP === "None") {
      spec.clusterIPs = ["None"];
      spec.ipFamilies ??= [isIP(ctx.serviceCIDRs[0]!.split("/")[0]!) === 6 ? "IPv6" : "IPv4"];
      spec.ipFamilyPolicy ??= "SingleStack";
    } else {
      const policy = (spec.ipFamilyPolicy ??= "SingleStack");
      const wantFamilies: string[] = spec.ipFamilies ?? [];
      let ips: string[] =
        spec.clusterIPs && spec.clusterIPs.length ? [...spec.clusterIPs] : spec.clusterIP ? [spec.clusterIP] : [];
      for (const [i, ip] of ips.entries()) {
        if (isIP(ip) === 0)
          errs.push({
            type: "FieldValueInvalid",
            field: `spec.clusterIPs[${i}]`,
            value: ip,
            detail: "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
          });
        else if (!ctx.serviceCIDRs.some((c) => cidrContains(c, ip)))
          errs.push({
            type: "FieldValueInvalid",
            field: `spec.clusterIPs[${i}]`,
            value: ip,
            detail: `failed to allocate IP ${ip}: the provided IP (${ip}) is not in the valid range. The range of valid IPs is ${ctx.serviceCIDRs.join(",")}`,
          });
        else if (used.has(ip))
          errs.push({
            type: "FieldValueInvalid",
            field: `spec.clusterIPs[${i}]`,
            value: ip,
            detail: `failed to allocate IP ${ip}: provided IP is already allocated`,
          });
      }
      const familyOf = (ip: string) => (isIP(ip) === 6 ? "IPv6" : "IPv4");
      const cidrFor = (fam: string) => ctx.serviceCIDRs.find((c) => familyOf(c.split("/")[0]!) === fam);
      let families = ips.length
        ? ips.map(familyOf)
        : wantFamilies.length
          ? [...wantFamilies]
          : [familyOf(ctx.serviceCIDRs[0]!.split("/")[0]!)];
      if (policy !== "SingleStack" && families.length < 2) {
        const other = families[0] === "IPv4" ? "IPv6" : "IPv4";
        if (cidrFor(other)) families.push(other);
        else if (policy === "RequireDualStack")
          errs.push({
            type: "FieldValueInvalid",
            field: "spec.ipFamilyPolicy",
            value: policy,
            detail: "this cluster is not configured for dual-stack services",
          });
      }
      if (policy === "SingleStack") families = families.slice(0, 1);
      for (const [i, fam] of families.entries()) {
        if (ips[i]) continue;
        const cidr = cidrFor(fam);
        if (!cidr) {
          errs.push({
            type: "FieldValueInvalid",
            field: `spec.ipFamilies[${i}]`,
            value: fam,
            detail: "not configured on this cluster",
          });
          continue;
        }
        ips[i] = allocateIP(cidr, used);
        used.add(ips[i]);
      }
      ips = ips.slice(0, families.length);
      spec.clusterIP = ips[0];
      spec.clusterIPs = ips;
      spec.ipFamilies = families;
    }
  }
  const ports: Obj[] = spec.ports ?? [];
  const usedPorts = usedNodePorts(ctx, uid);
  const [lo, hi] = ctx.nodePortRange;
  if (needsNodePorts(spec)) {
    for (const [i, p] of ports.entries()) {
      if (p.nodePort) {
        if (p.nodePort < lo || p.nodePort > hi)
          errs.push({
            type: "FieldValueInvalid",
            field: `spec.ports[${i}].nodePort`,
            value: p.nodePort,
            detail: `provided port is not in the valid range. The range of valid ports is ${lo}-${hi}`,
          });
        else if (usedPorts.has(p.nodePort) && !ports.slice(0, i).some((q) => q.nodePort === p.nodePort))
          errs.push({
            type: "FieldValueInvalid",
            field: `spec.ports[${i}].nodePort`,
            value: p.nodePort,
            detail: "provided port is already allocated",
          });
        usedPorts.add(p.nodePort);
      }
    }
    for (const p of ports) if (!p.nodePort) p.nodePort = allocatePort(ctx, usedPorts);
  } else if (spec.type === "ClusterIP" || spec.type === "ExternalName") {
    for (const p of ports) delete p.nodePort;
  }
  if (spec.type === "LoadBalancer" && spec.externalTrafficPolicy === "Local") {
    if (!spec.healthCheckNodePort) spec.healthCheckNodePort = allocatePort(ctx, usedPorts);
  } else delete spec.healthCheckNodePort;
}

function validateService(obj: Obj, old: Obj | undefined): FieldError[] {
  const errs: FieldError[] = [];
  const spec = obj.spec ?? {};
  const types = ["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"];
  if (!types.includes(spec.type))
    errs.push({
      type: "FieldValueNotSupported",
      field: "spec.type",
      value: spec.type,
      detail: `supported values: ${types.map((t) => `"${t}"`).join(", ")}`,
    });
  const ports: Obj[] = spec.ports ?? [];
  if (!Array.isArray(spec.ports) || ports.length === 0) {
    if (spec.type !== "ExternalName" && spec.clusterIP !== "None")
      errs.push({ type: "FieldValueRequired", field: "spec.ports", detail: "" });
  }
  const seenNames = new Set<string>();
  const seenPorts = new Set<string>();
  for (const [i, p] of ports.entries()) {
    if (ports.length > 1 && !p.name)
      errs.push({ type: "FieldValueRequired", field: `spec.ports[${i}].name`, detail: "" });
    if (p.name) {
      if (seenNames.has(p.name))
        errs.push({ type: "FieldValueDuplicate", field: `spec.ports[${i}].name`, value: p.name, detail: "" });
      seenNames.add(p.name);
    }
    if (!Number.isInteger(p.port) || p.port < 1 || p.port > 65535)
      errs.push({
        type: "FieldValueInvalid",
        field: `spec.ports[${i}].port`,
        value: p.port,
        detail: "must be between 1 and 65535, inclusive",
      });
    if (!["TCP", "UDP", "SCTP"].includes(p.protocol))
      errs.push({
        type: "FieldValueNotSupported",
        field: `spec.ports[${i}].protocol`,
        value: p.protocol,
        detail: `supported values: "SCTP", "TCP", "UDP"`,
      });
    const key = `${p.port}/${p.protocol}`;
    if (seenPorts.has(key))
      errs.push({ type: "FieldValueDuplicate", field: `spec.ports[${i}]`, value: key, detail: "" });
    seenPorts.add(key);
  }
  if (spec.type === "ExternalName" && !spec.externalName)
    errs.push({ type: "FieldValueRequired", field: "spec.externalName", detail: "" });
  if (
    old &&
    old.spec?.type !== "ExternalName" &&
    spec.type !== "ExternalName" &&
    old.spec?.clusterIP &&
    spec.clusterIP &&
    old.spec.clusterIP !== spec.clusterIP
  )
    errs.push({
      type: "FieldValueInvalid",
      field: "spec.clusterIPs[0]",
      value: spec.clusterIP,
      detail: "may not change once set",
    });
  return errs;
}

/** The real registry's patchAllocatedValues: an update that leaves them out keeps the allocated IPs and ports. */
function carryServiceAllocations(obj: Obj, old: Obj): void {
  const spec = (obj.spec ??= {});
  const ospec = old.spec ?? {};
  if (spec.type !== "ExternalName" && ospec.type !== "ExternalName") {
    if (!spec.clusterIP && !spec.clusterIPs?.length) {
      spec.clusterIP = ospec.clusterIP;
      spec.clusterIPs = ospec.clusterIPs;
      if (!spec.ipFamilies) spec.ipFamilies = ospec.ipFamilies;
      if (!spec.ipFamilyPolicy) spec.ipFamilyPolicy = ospec.ipFamilyPolicy;
    }
  }
  if (needsNodePorts(spec) && needsNodePorts(ospec)) {
    for (const p of spec.ports ?? []) {
      if (p.nodePort) continue;
      const o = (ospec.ports ?? []).find(
        (q: Obj) => q.port === p.port && (q.protocol ?? "TCP") === (p.protocol ?? "TCP"),
      );
      if (o?.nodePort) p.nodePort = o.nodePort;
    }
  }
  if (
    spec.type === "LoadBalancer" &&
    spec.externalTrafficPolicy === "Local" &&
    !spec.healthCheckNodePort &&
    ospec.healthCheckNodePort
  )
    spec.healthCheckNodePort = ospec.healthCheckNodePort;
}

function servicePorts(spec: Obj): string {
  const ports: Obj[] = spec.ports ?? [];
  if (!ports.length) return "<none>";
  return ports.map((p) => (p.nodePort ? `${p.port}:${p.nodePort}/${p.protocol}` : `${p.port}/${p.protocol}`)).join(",");
}

function externalIP(spec: Obj, status: Obj): string {
  switch (spec.type) {
    case "ExternalName":
      return spec.externalName ?? "<none>";
    case "LoadBalancer": {
      const ing = (status?.loadBalancer?.ingress ?? []).map((i: Obj) => i.ip ?? i.hostname);
      const all = [...ing, ...(spec.externalIPs ?? [])];
      return all.length ? all.join(",") : "<pending>";
    }
    default:
      return spec.externalIPs?.length ? spec.externalIPs.join(",") : "<none>";
  }
}

const selectorString = (sel: Obj | undefined) =>
  sel && Object.keys(sel).length
    ? Object.entries(sel)
        .map(([k, v]) => `${k}=${v}`)
        .join(",")
    : "<none>";

// ---------- Events: core/v1 is the storage form, events.k8s.io/v1 is converted ----------

const EVENT_RENAMES: [string, string][] = [
  ["regarding", "involvedObject"],
  ["note", "message"],
  ["reportingController", "reportingComponent"],
  ["deprecatedSource", "source"],
  ["deprecatedFirstTimestamp", "firstTimestamp"],
  ["deprecatedLastTimestamp", "lastTimestamp"],
  ["deprecatedCount", "count"],
];

function renameKeys(o: Obj, pairs: [string, string][], apiVersion: string): Obj {
  const out: Obj = {};
  for (const [k, v] of Object.entries(o)) {
    const hit = pairs.find(([a]) => a === k);
    out[hit ? hit[1] : k] = v;
  }
  out.apiVersion = apiVersion;
  out.kind = "Event";
  return out;
}

const eventsV1ToCore = (o: Obj) => renameKeys(o, EVENT_RENAMES, "v1");
const coreToEventsV1 = (o: Obj) =>
  renameKeys(
    o,
    EVENT_RENAMES.map(([a, b]) => [b, a]),
    "events.k8s.io/v1",
  );

function validateEventsV1(obj: Obj): FieldError[] {
  const errs: FieldError[] = [];
  // checked on the events.k8s.io form, as the real validation does for events created through that group
  if (!obj.eventTime) errs.push({ type: "FieldValueRequired", field: "eventTime", detail: "" });
  for (const f of ["reportingController", "reportingInstance", "action", "reason"] as const) {
    if (!obj[f]) errs.push({ type: "FieldValueRequired", field: f, detail: "" });
  }
  if (obj.type && obj.type !== "Normal" && obj.type !== "Warning")
    errs.push({
      type: "FieldValueInvalid",
      field: "type",
      value: obj.type,
      detail: "has invalid value, must be Normal or Warning",
    });
  return errs;
}

const eventCoreFields: Record<string, FieldGetter> = {
  "involvedObject.kind": "involvedObject.kind",
  "involvedObject.namespace": "involvedObject.namespace",
  "involvedObject.name": "involvedObject.name",
  "involvedObject.uid": "involvedObject.uid",
  "involvedObject.apiVersion": "involvedObject.apiVersion",
  "involvedObject.resourceVersion": "involvedObject.resourceVersion",
  "involvedObject.fieldPath": "involvedObject.fieldPath",
  reason: "reason",
  reportingComponent: "reportingComponent",
  source: "source.component",
  type: "type",
};

const eventTable: ResourceDef["table"] = {
  columns: [
    { name: "Last Seen", type: "string" },
    { name: "Type", type: "string" },
    { name: "Reason", type: "string" },
    { name: "Object", type: "string" },
    { name: "Message", type: "string" },
  ],
  cells: (o, now) => {
    const regarding = o.involvedObject ?? o.regarding ?? {};
    return [
      age(o.lastTimestamp ?? o.deprecatedLastTimestamp ?? o.eventTime ?? o.metadata?.creationTimestamp, now),
      o.type ?? "",
      o.reason ?? "",
      `${String(regarding.kind ?? "").toLowerCase()}/${regarding.name ?? ""}`,
      o.message ?? o.note ?? "",
    ];
  },
};

// ---------- the built-in resources ----------

export function builtinResources(): ResourceDef[] {
  const core = (
    d: Omit<ResourceDef, "group" | "version" | "verbs" | "listKind" | "storage"> & Partial<ResourceDef>,
  ): ResourceDef => ({
    group: "",
    version: "v1",
    verbs: ALL_VERBS,
    listKind: `${d.kind}List`,
    storage: d.resource,
    ...d,
  });
  return [
    core({
      resource: "namespaces",
      singular: "namespace",
      kind: "Namespace",
      namespaced: false,
      shortNames: ["ns"],
      subresources: ["status", "finalize"],
      verbs: ["create", "delete", "get", "list", "patch", "update", "watch"],
      returnDeletedObject: true,
      nameRule: "label1123",
      fields: { "status.phase": "status.phase" },
      prepareCreate: (o) => {
        o.metadata.labels = { ...(o.metadata.labels ?? {}), "kubernetes.io/metadata.name": o.metadata.name };
        o.spec ??= {};
        o.spec.finalizers ??= ["kubernetes"];
        o.status = { phase: "Active" };
      },
      prepareUpdate: (o) => {
        o.metadata.labels = { ...(o.metadata.labels ?? {}), "kubernetes.io/metadata.name": o.metadata.name };
      },
      table: {
        columns: [NAME_COL, { name: "Status", type: "string" }, AGE_COL],
        cells: (o, now) => [o.metadata.name, o.status?.phase ?? "", age(o.metadata.creationTimestamp, now)],
      },
    }),
    core({
      resource: "services",
      singular: "service",
      kind: "Service",
      namespaced: true,
      shortNames: ["svc"],
      categories: ["all"],
      subresources: ["status"],
      returnDeletedObject: true,
      resetStatusOnCreate: true,
      nameRule: "label1035",
      fields: { "spec.clusterIP": "spec.clusterIP", "spec.type": "spec.type" },
      listStrategies: { "spec.ports": { mergeKey: "port" }, "status.conditions": { mergeKey: "type" } },
      prepareCreate: (o, ctx) => {
        defaultService(o, ctx);
        o.status ??= { loadBalancer: {} };
      },
      prepareUpdate: (o, old, ctx) => {
        defaultService(o, ctx);
        carryServiceAllocations(o, old);
      },
      validate: (o, old, ctx) => {
        const errs = validateService(o, old);
        if (errs.length === 0) allocateService(o, ctx, errs);
        return errs;
      },
      table: {
        columns: [
          NAME_COL,
          { name: "Type", type: "string" },
          { name: "Cluster-IP", type: "string" },
          { name: "External-IP", type: "string" },
          { name: "Port(s)", type: "string" },
          AGE_COL,
          { name: "Selector", type: "string", priority: 1 },
        ],
        cells: (o, now) => [
          o.metadata.name,
          o.spec?.type ?? "",
          o.spec?.clusterIP || "<none>",
          externalIP(o.spec ?? {}, o.status ?? {}),
          servicePorts(o.spec ?? {}),
          age(o.metadata.creationTimestamp, now),
          selectorString(o.spec?.selector),
        ],
      },
    }),
    core({
      resource: "endpoints",
      singular: "endpoints",
      kind: "Endpoints",
      namespaced: true,
      shortNames: ["ep"],
      allowCreateOnUpdate: true,
      prepareCreate: (o) => defaultEndpoints(o),
      prepareUpdate: (o) => defaultEndpoints(o),
      validate: (o) => {
        const errs: FieldError[] = [];
        for (const [i, ss] of (o.subsets ?? []).entries()) {
          for (const [j, a] of [...(ss.addresses ?? []), ...(ss.notReadyAddresses ?? [])].entries())
            if (isIP(a.ip ?? "") === 0)
              errs.push({
                type: "FieldValueInvalid",
                field: `subsets[${i}].addresses[${j}].ip`,
                value: a.ip ?? "",
                detail: "must be a valid IP address",
              });
        }
        return errs;
      },
      table: {
        columns: [NAME_COL, { name: "Endpoints", type: "string" }, AGE_COL],
        cells: (o, now) => {
          const eps: string[] = [];
          for (const ss of o.subsets ?? [])
            for (const a of ss.addresses ?? [])
              for (const p of ss.ports ?? [{}]) eps.push(p.port ? `${a.ip}:${p.port}` : a.ip);
          const shown =
            eps.length > 3 ? `${eps.slice(0, 3).join(",")} + ${eps.length - 3} more...` : eps.join(",") || "<none>";
          return [o.metadata.name, shown, age(o.metadata.creationTimestamp, now)];
        },
      },
    }),
    core({
      resource: "nodes",
      singular: "node",
      kind: "Node",
      namespaced: false,
      shortNames: ["no"],
      subresources: ["status"],
      fields: { "spec.unschedulable": (o: Obj) => String(o.spec?.unschedulable === true) },
      listStrategies: { "status.conditions": { mergeKey: "type" }, "status.addresses": { mergeKey: "type" } },
      table: {
        columns: [
          NAME_COL,
          { name: "Status", type: "string" },
          { name: "Roles", type: "string" },
          AGE_COL,
          { name: "Version", type: "string" },
        ],
        cells: (o, now) => {
          const ready = (o.status?.conditions ?? []).find((c: Obj) => c.type === "Ready");
          let status = ready ? (ready.status === "True" ? "Ready" : "NotReady") : "Unknown";
          if (o.spec?.unschedulable) status += ",SchedulingDisabled";
          const roles = Object.keys(o.metadata.labels ?? {})
            .filter((k) => k.startsWith("node-role.kubernetes.io/"))
            .map((k) => k.slice("node-role.kubernetes.io/".length));
          return [
            o.metadata.name,
            status,
            roles.join(",") || "<none>",
            age(o.metadata.creationTimestamp, now),
            o.status?.nodeInfo?.kubeletVersion ?? "",
          ];
        },
      },
    }),
    core({
      resource: "events",
      singular: "event",
      kind: "Event",
      namespaced: true,
      shortNames: ["ev"],
      allowCreateOnUpdate: true,
      nameRule: "path",
      fields: eventCoreFields,
      table: eventTable,
    }),
    {
      group: "discovery.k8s.io",
      version: "v1",
      resource: "endpointslices",
      singular: "endpointslice",
      kind: "EndpointSlice",
      listKind: "EndpointSliceList",
      namespaced: true,
      verbs: ALL_VERBS,
      storage: "endpointslices.discovery.k8s.io",
      prepareCreate: (o) => defaultEndpointSlice(o),
      prepareUpdate: (o) => defaultEndpointSlice(o),
      validate: (o) => validateEndpointSlice(o),
      table: {
        columns: [
          NAME_COL,
          { name: "AddressType", type: "string" },
          { name: "Ports", type: "string" },
          { name: "Endpoints", type: "string" },
          AGE_COL,
        ],
        cells: (o, now) => {
          const ports = (o.ports ?? []).map((p: Obj) => String(p.port ?? "")).join(",") || "<unset>";
          const addrs: string[] = (o.endpoints ?? []).flatMap((e: Obj) => e.addresses ?? []);
          const shown =
            addrs.length > 3
              ? `${addrs.slice(0, 3).join(",")} + ${addrs.length - 3} more...`
              : addrs.join(",") || "<unset>";
          return [o.metadata.name, o.addressType ?? "", ports, shown, age(o.metadata.creationTimestamp, now)];
        },
      },
    },
    {
      group: "events.k8s.io",
      version: "v1",
      resource: "events",
      singular: "event",
      kind: "Event",
      listKind: "EventList",
      namespaced: true,
      // the real group also lists "ev"; left out so that `kubectl get ev` does not warn about the ambiguity
      verbs: ALL_VERBS,
      storage: "events",
      allowCreateOnUpdate: true,
      nameRule: "path",
      fields: {
        "regarding.kind": "regarding.kind",
        "regarding.namespace": "regarding.namespace",
        "regarding.name": "regarding.name",
        "regarding.uid": "regarding.uid",
        "regarding.apiVersion": "regarding.apiVersion",
        "regarding.resourceVersion": "regarding.resourceVersion",
        "regarding.fieldPath": "regarding.fieldPath",
        reason: "reason",
        reportingController: "reportingController",
        type: "type",
      },
      toServed: coreToEventsV1,
      toStored: eventsV1ToCore,
      validate: (o) => validateEventsV1(coreToEventsV1(o)),
      table: eventTable,
    },
  ];
}

function defaultEndpoints(o: Obj): void {
  for (const ss of o.subsets ?? []) for (const p of ss.ports ?? []) p.protocol ??= "TCP";
}

function defaultEndpointSlice(o: Obj): void {
  for (const p of o.ports ?? []) {
    p.name ??= "";
    p.protocol ??= "TCP";
  }
}

function validateEndpointSlice(o: Obj): FieldError[] {
  const errs: FieldError[] = [];
  const types = ["IPv4", "IPv6", "FQDN"];
  if (!o.addressType) errs.push({ type: "FieldValueRequired", field: "addressType", detail: "" });
  else if (!types.includes(o.addressType))
    errs.push({
      type: "FieldValueNotSupported",
      field: "addressType",
      value: o.addressType,
      detail: `supported values: "FQDN", "IPv4", "IPv6"`,
    });
  for (const [i, e] of (o.endpoints ?? []).entries()) {
    const addrs: unknown[] = e.addresses ?? [];
    if (addrs.length < 1 || addrs.length > 100)
      errs.push({
        type: addrs.length ? "FieldValueTooLong" : "FieldValueRequired",
        field: `endpoints[${i}].addresses`,
        detail: "must contain at least 1 address",
      });
    for (const [j, a] of addrs.entries()) {
      const ok =
        o.addressType === "IPv4"
          ? isIP(String(a)) === 4
          : o.addressType === "IPv6"
            ? isIP(String(a)) === 6
            : typeof a === "string" && a.length > 0;
      if (!ok)
        errs.push({
          type: "FieldValueInvalid",
          field: `endpoints[${i}].addresses[${j}]`,
          value: a,
          detail: `must be a valid ${o.addressType} address`,
        });
    }
  }
  for (const [i, p] of (o.ports ?? []).entries()) {
    if (p.port !== undefined && p.port !== null && (!Number.isInteger(p.port) || p.port < 0 || p.port > 65535))
      errs.push({
        type: "FieldValueInvalid",
        field: `ports[${i}].port`,
        value: p.port,
        detail: "must be between 0 and 65535, inclusive",
      });
  }
  return errs;
}

export const NAME_PATTERNS: Record<NonNullable<ResourceDef["nameRule"]>, { re: RegExp; max: number; text: string }> = {
  subdomain: {
    re: /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/,
    max: 253,
    text: "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')",
  },
  label1123: {
    re: /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/,
    max: 63,
    text: "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')",
  },
  label1035: {
    re: /^[a-z]([-a-z0-9]*[a-z0-9])?$/,
    max: 63,
    text: "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')",
  },
  path: { re: /^[^/%]+$/, max: 253, text: "may not contain '/' or '%'" },
};

export function listStrategiesFor(def: ResourceDef): Record<string, ListStrategy> {
  return { ...defaultListStrategies, ...(def.listStrategies ?? {}) };
}
