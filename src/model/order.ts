// The stable order of rendered output (docs/cli.md): frontends by service, portName,
// type, address, scope (then port, protocol, which never tie in valid input); backends by address then
// port. IPv4 addresses compare numerically, other strings by code unit.
import type { BackendModel, Frontend } from "./types.js";

export function compareAddress(a: string, b: string): number {
  const pa = a.split(".").map(Number);
  const pb = b.split(".").map(Number);
  if (pa.length === 4 && pb.length === 4 && [...pa, ...pb].every(Number.isInteger)) {
    for (let i = 0; i < 4; i++) if (pa[i] !== pb[i]) return pa[i]! - pb[i]!;
    return 0;
  }
  return a < b ? -1 : a > b ? 1 : 0;
}

const str = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);

export function compareBackends(a: BackendModel, b: BackendModel): number {
  return compareAddress(a.address, b.address) || a.port - b.port;
}

export function compareFrontends(a: Frontend, b: Frontend): number {
  return str(a.service, b.service) || str(a.portName, b.portName) || str(a.type, b.type) ||
    compareAddress(a.address, b.address) || str(a.scope, b.scope) || a.port - b.port || str(a.protocol, b.protocol);
}

/** Sorts frontends and each one's backends in place; returns the same array. */
export function sortFrontends(frontends: Frontend[]): Frontend[] {
  for (const f of frontends) f.backends.sort(compareBackends);
  return frontends.sort(compareFrontends);
}
