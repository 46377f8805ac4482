// Human-readable tables for `render` and `status` (-o table, the default).
import type { Frontend } from "./model/types.js";
import type { DataplaneStatus } from "./dataplane/types.js";

export function table(header: string[], rows: string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)));
  const line = (cells: string[]) =>
    cells
      .map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i]!)))
      .join("  ")
      .trimEnd();
  return [line(header), ...rows.map(line)].join("\n") + "\n";
}

/** "address:port", an IPv6 address in brackets (RFC 3986) so the port stays readable. */
export function hostPort(address: string, port: number): string {
  return address.includes(":") ? `[${address}]:${port}` : `${address}:${port}`;
}

export function formatFrontendsTable(frontends: Frontend[]): string {
  if (frontends.length === 0) return "no frontends\n";
  return table(
    ["SERVICE", "PORT", "TYPE", "FRONTEND", "SCOPE", "MODE", "AFFINITY", "BACKENDS"],
    frontends.map((f) => [
      f.service,
      f.portName || "-",
      f.type,
      `${hostPort(f.address, f.port)}/${f.protocol}`,
      f.scope,
      // Forwarding of external flows to other nodes (docs/dsr.md); "-": not an external Cluster-policy frontend.
      f.forwardingMode ?? "-",
      f.sessionAffinity.type === "ClientIP" ? `ClientIP ${f.sessionAffinity.timeoutSeconds}s` : "None",
      f.backends.length === 0
        ? "(none: new connections rejected)"
        : f.backends
            .map((b) => `${hostPort(b.address, b.port)}${b.state === "terminating" ? " (terminating)" : ""}`)
            .join(", "),
    ]),
  );
}

export function formatStatus(st: DataplaneStatus): string {
  const parts = [
    `node: ${st.node}    mode: ${st.mode}${st.reason ? `    (${st.reason})` : ""}\n`,
    "\nFrontends\n",
    formatFrontendsTable(st.frontends),
  ];
  parts.push("\nAttached programs\n");
  parts.push(
    st.attachments.length === 0
      ? "none\n"
      : table(
          ["INTERFACE", "HOOK", "PROGRAM", "ID"],
          st.attachments.map((a) => [a.interface, a.hook, a.program, String(a.programId)]),
        ),
  );
  parts.push("\nData path counters\n");
  const counters = Object.entries(st.counters).filter(([, c]) => c.packets > 0);
  parts.push(
    counters.length === 0
      ? "all zero\n"
      : table(
          ["REASON", "PACKETS", "BYTES"],
          counters.map(([n, c]) => [n, String(c.packets), String(c.bytes)]),
        ),
  );
  parts.push("\nPer frontend (packets clients sent)\n");
  const fc = st.frontendCounters ?? [];
  parts.push(
    fc.length === 0
      ? "none yet\n"
      : table(
          ["SERVICE", "TYPE", "FRONTEND", "PROTO", "PACKETS", "BYTES"],
          fc.map((c) => [
            c.service,
            c.type,
            hostPort(c.address, c.port),
            c.protocol,
            String(c.packets),
            String(c.bytes),
          ]),
        ),
  );
  if (st.snat) parts.push(`\nSNAT table: ${st.snat.entries} of ${st.snat.max} entries\n`);
  parts.push("\nMaps\n");
  parts.push(
    table(
      ["MAP", "ENTRIES", "MAX"],
      Object.entries(st.maps).map(([n, m]) => [n, String(m.entries), String(m.max)]),
    ),
  );
  return parts.join("");
}
