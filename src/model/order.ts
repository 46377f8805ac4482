// The stable order of rendered output (docs/cli.md): frontends by service, portName,
// type, address, scope (then port, protocol, which never tie in valid input); backends by address then
// port. IPv4 addresses compare numerically and before other strings, which compare by code unit.
import { compareAddresses } from "../k8s/ip.js";
import type { BackendModel, Frontend } from "./types.js";

const str = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);

export function compareBackends(a: BackendModel, b: BackendModel): number {
  return compareAddresses(a.address, b.address) || a.port - b.port;
}

export function compareFrontends(a: Frontend, b: Frontend): number {
  return (
    str(a.service, b.service) ||
    str(a.portName, b.portName) ||
    str(a.type, b.type) ||
    compareAddresses(a.address, b.address) ||
    str(a.scope, b.scope) ||
    a.port - b.port ||
    str(a.protocol, b.protocol)
  );
}

/** Sorts frontends and each one's backends in place; returns the same array. */
export function sortFrontends(frontends: Frontend[]): Frontend[] {
  for (const f of frontends) f.backends.sort(compareBackends);
  return frontends.sort(compareFrontends);
}
