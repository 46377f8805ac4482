// The SNAT port range is kept out of the node's own ephemeral ports through net.ipv4.ip_local_reserved_ports
// (per network namespace): a host connection that took a port of the range toward a backend would have its
// replies reverse-translated to a masqueraded flow's client. The file holds a comma-separated list of ports and
// ranges ("8080,61000-65535"); other entries are kept.
// A container's /proc/sys is read-only unless it is privileged, so the DaemonSet reserves the range from a
// privileged init container (`bpfproxy reserve-ports`, reserveOnNode) in the node's network namespace
// (hostNetwork); the daemon then finds it reserved and writes nothing. Pod sysctls cannot do it: the kubelet
// refuses network sysctls for hostNetwork pods.
import { readFileSync, writeFileSync } from "node:fs";
import type { Frontend } from "../../model/types.js";

export const RESERVED_PORTS_PATH = "/proc/sys/net/ipv4/ip_local_reserved_ports";

export interface PortRange {
  min: number;
  max: number;
}

/** "1,3-5" → sorted, merged ranges. */
export function parsePortList(text: string): PortRange[] {
  const out: PortRange[] = [];
  for (const part of text.split(",")) {
    const t = part.trim();
    if (!t) continue;
    const m = /^(\d+)(?:-(\d+))?$/.exec(t);
    if (!m) throw new Error(`ip_local_reserved_ports: cannot read ${JSON.stringify(t)}`);
    const min = Number(m[1]);
    out.push({ min, max: m[2] === undefined ? min : Number(m[2]) });
  }
  return mergeRanges(out);
}

function mergeRanges(ranges: PortRange[]): PortRange[] {
  const sorted = [...ranges].sort((a, b) => a.min - b.min);
  const out: PortRange[] = [];
  for (const r of sorted) {
    const last = out[out.length - 1];
    if (last && r.min <= last.max + 1) last.max = Math.max(last.max, r.max);
    else out.push({ ...r });
  }
  return out;
}

export function formatPortList(ranges: PortRange[]): string {
  return ranges.map((r) => (r.min === r.max ? `${r.min}` : `${r.min}-${r.max}`)).join(",");
}

/** The list with `add` in it. */
export function addRange(list: PortRange[], add: PortRange): PortRange[] {
  return mergeRanges([...list, add]);
}

/** The list without any port of `del`. */
export function removeRange(list: PortRange[], del: PortRange): PortRange[] {
  const out: PortRange[] = [];
  for (const r of list) {
    if (r.max < del.min || r.min > del.max) out.push({ ...r });
    else {
      if (r.min < del.min) out.push({ min: r.min, max: del.min - 1 });
      if (r.max > del.max) out.push({ min: del.max + 1, max: r.max });
    }
  }
  return out;
}

/** Adds the range to this network namespace's reserved ports (idempotent). Returns the new list. */
export function reservePorts(range: PortRange, path = RESERVED_PORTS_PATH): string {
  const now = parsePortList(readFileSync(path, "utf8"));
  const next = formatPortList(addRange(now, range));
  if (next !== formatPortList(now)) writeFileSync(path, next);
  return next;
}

/** Removes the range from this network namespace's reserved ports, keeping every other entry. */
export function releasePorts(range: PortRange, path = RESERVED_PORTS_PATH): string {
  const now = parsePortList(readFileSync(path, "utf8"));
  const next = formatPortList(removeRange(now, range));
  // An empty list is written as a newline (the kernel refuses an empty write on some versions).
  if (next !== formatPortList(now)) writeFileSync(path, next === "" ? "\n" : next);
  return next;
}

/** `bpfproxy reserve-ports`: reservePorts, failing with what to do when /proc/sys is not writable here. */
export function reserveOnNode(range: PortRange, path = RESERVED_PORTS_PATH): string {
  try {
    return reservePorts(range, path);
  } catch (err) {
    throw new Error(
      `cannot reserve ${range.min}-${range.max} in ${path}: ${(err as Error).message} ` +
        "(run it in the node's network namespace where /proc/sys is writable: a privileged container with hostNetwork)",
      { cause: err },
    );
  }
}

/**
 * NodePorts outside the reserved NodePort range (a cluster whose --service-node-port-range differs from
 * bpfproxy.nodePortRange): the host may take them as ephemeral ports, and such a connection's replies would be
 * taken for NodePort traffic. One warning per Service and port.
 */
export class NodePortsOutsideRange {
  private readonly warned = new Set<string>();

  constructor(
    private readonly range: PortRange,
    private readonly warn: (service: string, nodePort: number) => void,
  ) {}

  note(frontends: Iterable<Pick<Frontend, "service" | "type" | "port">>): void {
    for (const fe of frontends) {
      if (fe.type !== "NodePort" || (fe.port >= this.range.min && fe.port <= this.range.max)) continue;
      const key = `${fe.service}:${fe.port}`;
      if (this.warned.has(key)) continue;
      this.warned.add(key);
      this.warn(fe.service, fe.port);
    }
  }
}
