// `bpfproxy explain <dst-ip>:<port>[/tcp|udp] [--from <src-ip>[:<port>]] [--on-node [--device IF] | --from-pod IF]
// [--bpffs DIR] [-o table|json]`: why a connection does (or does not) reach a Service, in the order an
// operator asks: the frontend, the endpoints, the packet. docs/cli.md documents the JSON shape.
import { parseArgs } from "node:util";
import { canonicalIP, isIPv4, isIPv6 } from "../k8s/ip.js";
import { UsageError } from "../usage.js";
import { hostPort } from "../format.js";
import { askDaemon } from "./server.js";
import type { ModelExplanation } from "./model.js";
import { explainPacket, type PacketExplanation } from "./packet.js";

/** Default client when --from is not given: a documentation address (outside any cluster CIDR). */
export const DEFAULT_CLIENT = "203.0.113.1";
export const DEFAULT_CLIENT6 = "2001:db8:ffff::1";
export const DEFAULT_CLIENT_PORT = 40000;

export type Cause =
  | "no-such-address"
  | "no-such-port"
  | "wrong-protocol"
  | "not-a-nodeport-address"
  | "external-ip-not-allowed"
  | "not-programmed-map-full"
  | "source-range-refused"
  | "no-endpoints"
  | "all-endpoints-not-ready"
  | "no-local-endpoints"
  | "no-selected-endpoints"
  | "stale-conntrack-backend-removed"
  | "datapath-drop"
  | "datapath-reject";

export interface Explanation {
  query: {
    dst: string;
    port: number;
    protocol: "TCP" | "UDP";
    src: string;
    sport: number;
    from: "device" | "pod";
    interface?: string;
  };
  model: ModelExplanation;
  /** null when the program could not be run (no bpfproxy program here, e.g. the IPVS mode): see packetError. */
  packet: PacketExplanation | null;
  packetError: string | null;
  /** Why the connection does not work as asked, most basic first; empty when it reaches a backend. */
  causes: Cause[];
}

/** "[v6]" or "v4" with an optional port: the address and the port's text (undefined when absent). */
function splitHostPort(s: string): { host: string; port: string | undefined } | undefined {
  const v6 = /^\[([0-9a-fA-F:.]+)\](?::(\d{1,5}))?$/.exec(s);
  if (v6) return isIPv6(v6[1]!) ? { host: v6[1]!, port: v6[2] } : undefined;
  // A bare IPv6 address (no port) is allowed where the port is optional.
  if (isIPv6(s)) return { host: s, port: undefined };
  const v4 = /^(\d{1,3}(?:\.\d{1,3}){3})(?::(\d{1,5}))?$/.exec(s);
  return v4 && isIPv4(v4[1]!) ? { host: v4[1]!, port: v4[2] } : undefined;
}

/** An address as the data plane and the model spell it (RFC 5952 for IPv6). */
const canonical = (a: string) => (isIPv6(a) ? canonicalIP(a) : a);

export function parseTarget(s: string): { dst: string; port: number; protocol: "TCP" | "UDP" } {
  const m = /^(.*?)(?:\/(tcp|udp))?$/i.exec(s.trim())!;
  const hp = splitHostPort(m[1]!);
  if (!hp || hp.port === undefined)
    throw new UsageError(
      `explain: expected <ipv4>:<port> or [<ipv6>]:<port>, then [/tcp|udp], got ${JSON.stringify(s)}`,
    );
  const port = Number(hp.port);
  if (port < 1 || port > 65535) throw new UsageError(`explain: port must be 1-65535, got ${port}`);
  return { dst: canonical(hp.host), port, protocol: (m[2] ?? "tcp").toUpperCase() as "TCP" | "UDP" };
}

/** The client: --from, or a documentation address of the target's family (outside any cluster CIDR). */
export function parseFrom(s: string | undefined, family: 4 | 6 = 4): { src: string; sport: number } {
  if (s === undefined) return { src: family === 6 ? DEFAULT_CLIENT6 : DEFAULT_CLIENT, sport: DEFAULT_CLIENT_PORT };
  const hp = splitHostPort(s.trim());
  if (!hp)
    throw new UsageError(`--from: expected <ipv4>[:<port>] or <ipv6> or [<ipv6>]:<port>, got ${JSON.stringify(s)}`);
  const sport = hp.port === undefined ? DEFAULT_CLIENT_PORT : Number(hp.port);
  if (sport < 1 || sport > 65535) throw new UsageError(`--from: port must be 1-65535, got ${sport}`);
  return { src: canonical(hp.host), sport };
}

export function causesOf(m: ModelExplanation, p: PacketExplanation | null): Cause[] {
  const out: Cause[] = [];
  if (m.noMatch) out.push(m.noMatch.reason);
  if (m.frontend) {
    if (m.notProgrammed) out.push("not-programmed-map-full");
    if (m.sourceRangeAllows === false) out.push("source-range-refused");
    if (m.frontend.backends.length === 0) {
      const eps = m.endpoints;
      if (eps.length === 0) out.push("no-endpoints");
      else if (m.endpointSet === "local" && eps.some((e) => e.reason === "not-local")) out.push("no-local-endpoints");
      else if (eps.every((e) => e.reason === "not-ready")) out.push("all-endpoints-not-ready");
      else out.push("no-selected-endpoints");
    }
  }
  if (p) {
    // The flow's backend is gone from the maps, or no longer an endpoint of the Service at all.
    const known = new Set(m.endpoints.map((e) => hostPort(e.address, e.port)));
    const fwd = p.existing.conntrack.filter(
      (e) => e.dir === "forward" && e.daddr === p.packet.dst && e.dport === p.packet.dport,
    );
    if (fwd.some((e) => e.backend === null || (m.frontend !== null && !known.has(e.backend))))
      out.push("stale-conntrack-backend-removed");
    if (out.length === 0 && p.verdict === "drop") out.push("datapath-drop");
    if (out.length === 0 && p.verdict === "reject") out.push("datapath-reject");
  }
  return out;
}

export async function explain(
  target: { dst: string; port: number; protocol: "TCP" | "UDP" },
  from: { src: string; sport: number },
  o: { fromPod?: string; device?: string; bpffs: string },
): Promise<Explanation> {
  const model = await askDaemon({ ...target, src: from.src, fromPod: o.fromPod !== undefined });
  let packet: PacketExplanation | null = null;
  let packetError: string | null = null;
  try {
    packet = await explainPacket({
      src: from.src,
      sport: from.sport,
      dst: target.dst,
      dport: target.port,
      protocol: target.protocol,
      fromPod: o.fromPod,
      device: o.device,
      bpffs: o.bpffs,
    });
  } catch (err) {
    // The model part still answers; the packet part says why it is missing.
    packetError = (err as Error).message;
  }
  return {
    query: {
      ...target,
      ...from,
      from: o.fromPod !== undefined ? "pod" : "device",
      ...(packet ? { interface: packet.interface } : {}),
    },
    model,
    packet,
    packetError,
    causes: causesOf(model, packet),
  };
}

const REASON_TEXT: Record<string, string> = {
  "not-ready": "not ready",
  "terminating-with-ready-peers": "terminating (ready peers exist)",
  "other-zone": "another zone under topology hints",
  "other-node": "another node under topology hints (PreferSameNode)",
  "not-local": "not local under Local traffic policy",
  "other-family": "other address family than the frontend's",
};

export function formatExplanation(e: Explanation): string {
  const L: string[] = [];
  const m = e.model;
  const q = e.query;
  L.push(
    `${hostPort(q.src, q.sport)} -> ${hostPort(q.dst, q.port)}/${q.protocol.toLowerCase()} entering ${q.from} ${q.interface ?? ""}`.trimEnd(),
  );
  L.push("");
  L.push("Frontend:");
  if (!m.frontend) L.push(`  none: ${m.noMatch?.reason} (${m.noMatch?.detail})`);
  else {
    const f = m.frontend;
    L.push(
      `  ${f.service} port ${f.portName || "(unnamed)"}: ${f.type} ${hostPort(f.address, f.port)}/${f.protocol} scope ${f.scope}` +
        `, ${f.algorithm}, affinity ${f.sessionAffinity.type}`,
    );
    if (f.sourceRanges.length)
      L.push(`  source ranges ${f.sourceRanges.join(", ")}: ${m.sourceRangeAllows ? "admit" : "refuse"} ${q.src}`);
    if (m.notProgrammed) L.push(`  NOT PROGRAMMED: map full (${m.notProgrammed.maps.join(", ")}); raise --map-sizes`);
  }
  if (m.frontend) {
    L.push("");
    L.push(
      `Endpoints (${m.endpointSet} set${m.matchesLastSync === false ? "; objects changed since the last sync" : ""}):`,
    );
    if (m.endpoints.length === 0) L.push("  none");
    for (const ep of m.endpoints)
      L.push(
        `  ${ep.selected ? "+" : "-"} ${hostPort(ep.address, ep.port)} node ${ep.nodeName || "?"}${ep.zone ? ` zone ${ep.zone}` : ""}` +
          `${ep.selected ? "" : `: ${REASON_TEXT[ep.reason ?? ""] ?? ep.reason}`}`,
      );
    if (m.frontend.algorithm === "random" && m.frontend.backends.length > 1)
      L.push(`  random choice among ${m.frontend.backends.map((b) => hostPort(b.address, b.port)).join(", ")}`);
  }
  const p = e.packet;
  L.push("");
  if (!p) {
    L.push(`Packet: not run: ${e.packetError}`);
    L.push("");
    L.push(e.causes.length ? `Causes: ${e.causes.join(", ")}` : "No cause found in the model.");
    return L.join("\n") + "\n";
  }
  L.push(
    `Packet (${p.program} on ${p.interface}${p.sameProgram ? "" : ", object differs from the attached program"}):`,
  );
  for (const c of p.existing.conntrack)
    L.push(
      `  conntrack ${c.dir} ${hostPort(c.saddr, c.sport)} -> ${hostPort(c.daddr, c.dport)}: backend ${c.backend ?? `#${c.backendId} (gone)`}`,
    );
  for (const n of p.existing.nat)
    L.push(`  nat ${hostPort(n.saddr, n.sport)} -> ${hostPort(n.daddr, n.dport)}: ${hostPort(n.addr, n.port)}`);
  for (const a of p.existing.affinity) L.push(`  affinity: backend ${a.backend ?? "(gone)"}`);
  L.push(`  ${p.packet.tcpFlags ?? "datagram"}: ${p.verdict}${p.dropReason ? ` (${p.dropReason})` : ""}`);
  if (p.backend) L.push(`  backend ${hostPort(p.backend.address, p.backend.port)}`);
  const rw = Object.entries(p.rewrites).map(([k, v]) => `${k}=${v}`);
  if (rw.length) L.push(`  rewrites ${rw.join(" ")}`);
  if (p.masquerade)
    L.push(`  masquerade to ${p.masquerade.address} ports ${p.masquerade.portMin}-${p.masquerade.portMax}`);
  if (p.reply) L.push(`  answered with ${p.reply}`);
  L.push(`  counters: ${p.reasons.join(", ") || "none"}`);
  L.push("");
  L.push(e.causes.length ? `Causes: ${e.causes.join(", ")}` : "Reachable.");
  return L.join("\n") + "\n";
}

/** The subcommand (its own flags: explain takes a positional target). */
export async function runExplain(argv: string[], defaultBpffs: string): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    strict: true,
    options: {
      from: { type: "string" },
      "on-node": { type: "boolean" },
      "from-pod": { type: "string" },
      device: { type: "string" },
      bpffs: { type: "string" },
      output: { type: "string", short: "o" },
    },
  });
  if (positionals.length !== 1)
    throw new UsageError("explain: one target <ipv4>:<port> or [<ipv6>]:<port>, then [/tcp|udp], is required");
  if (values["on-node"] && values["from-pod"] !== undefined)
    throw new UsageError("explain: --on-node and --from-pod are alternatives");
  const fmt = values.output ?? "table";
  if (fmt !== "table" && fmt !== "json") throw new UsageError(`-o must be table or json, got ${JSON.stringify(fmt)}`);
  const target = parseTarget(positionals[0]!);
  const from = parseFrom(values.from, isIPv6(target.dst) ? 6 : 4);
  if (isIPv6(from.src) !== isIPv6(target.dst))
    throw new UsageError("explain: --from and the target must be of one address family");
  const e = await explain(target, from, {
    fromPod: values["from-pod"],
    device: values.device,
    bpffs: values.bpffs ?? defaultBpffs,
  });
  process.stdout.write(fmt === "json" ? JSON.stringify(e, null, 2) + "\n" : formatExplanation(e));
  return e.packet ? 0 : 1;
}
