// kube-proxy's rule layouts for the same synthetic cluster as bench/objects.ts, as iptables-restore and
// nft -f input: the chains and rules kube-proxy's iptables and nftables proxiers write for ClusterIP
// Services (service dispatch, per-Service chain with masquerade mark and random endpoint choice, per-endpoint
// chain with hairpin mark and DNAT). Used only by the benchmarks, inside a network namespace they create.
import { createHash } from "node:crypto";
import { clusterIP, podIP } from "./objects.js";

const CLUSTER_CIDR = "10.128.0.0/9";
const hash = (s: string) =>
  createHash("sha256")
    .update(s)
    .digest("base64")
    .replace(/[^A-Za-z0-9]/g, "")
    .slice(0, 16)
    .toUpperCase();

export interface Svc {
  i: number;
  endpoints: string[];
}

export function svcs(n: number, e: number): Svc[] {
  return Array.from({ length: n }, (_, i) => ({ i, endpoints: Array.from({ length: e }, (_, j) => podIP(i, j)) }));
}

const svcName = (i: number) => `bench/svc-${i}:http`;
const svcChain = (i: number) => `KUBE-SVC-${hash(svcName(i) + "tcp")}`;
const sepChain = (i: number, ep: string) => `KUBE-SEP-${hash(svcName(i) + "tcp" + ep)}`;

function svcRules(s: Svc, out: string[]): void {
  const name = svcName(s.i);
  const chain = svcChain(s.i);
  out.push(
    `-A ${chain} -m comment --comment "${name} cluster IP" -m tcp -p tcp -d ${clusterIP(s.i)}/32 --dport 80 ! -s ${CLUSTER_CIDR} -j KUBE-MARK-MASQ`,
  );
  s.endpoints.forEach((ep, k) => {
    const left = s.endpoints.length - k;
    const prob = left > 1 ? ` -m statistic --mode random --probability ${(1 / left).toFixed(10)}` : "";
    out.push(`-A ${chain} -m comment --comment "${name} -> ${ep}:8080"${prob} -j ${sepChain(s.i, ep)}`);
  });
  for (const ep of s.endpoints) {
    const sep = sepChain(s.i, ep);
    out.push(`-A ${sep} -m comment --comment ${name} -s ${ep}/32 -j KUBE-MARK-MASQ`);
    out.push(`-A ${sep} -m comment --comment ${name} -m tcp -p tcp -j DNAT --to-destination ${ep}:8080`);
  }
}

function servicesChain(all: Svc[], out: string[]): void {
  for (const s of all) {
    out.push(
      `-A KUBE-SERVICES -m comment --comment "${svcName(s.i)} cluster IP" -m tcp -p tcp -d ${clusterIP(s.i)}/32 --dport 80 -j ${svcChain(s.i)}`,
    );
  }
  out.push(
    `-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must be the last rule in this chain" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS`,
  );
}

/**
 * The full nat table kube-proxy's iptables proxier restores (iptables-restore --noflush input). With `hooks`,
 * also the jumps from the built-in chains that kube-proxy installs once at start (PREROUTING and OUTPUT to
 * KUBE-SERVICES, POSTROUTING to KUBE-POSTROUTING), so that traffic is actually translated (conn-rate).
 */
export function iptablesFull(all: Svc[], opts: { hooks?: boolean } = {}): string {
  const out = [
    "*nat",
    ":KUBE-SERVICES - [0:0]",
    ":KUBE-NODEPORTS - [0:0]",
    ":KUBE-POSTROUTING - [0:0]",
    ":KUBE-MARK-MASQ - [0:0]",
  ];
  for (const s of all) {
    out.push(`:${svcChain(s.i)} - [0:0]`);
    for (const ep of s.endpoints) out.push(`:${sepChain(s.i, ep)} - [0:0]`);
  }
  out.push(
    "-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN",
    "-A KUBE-POSTROUTING -j MARK --xor-mark 0x4000",
    '-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE --random-fully',
    "-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000",
  );
  servicesChain(all, out);
  for (const s of all) svcRules(s, out);
  if (opts.hooks)
    out.push(
      '-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
      '-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
      '-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING',
    );
  out.push("COMMIT", "");
  return out.join("\n");
}

/**
 * A partial restore as kube-proxy (MinimizeIPTablesRestore) sends for one changed Service: KUBE-SERVICES
 * rewritten whole, the changed Service's chains, the new endpoint chain, and the removed one deleted.
 */
export function iptablesOneChange(all: Svc[], changed: Svc, removedEp: string): string {
  const out = ["*nat", ":KUBE-SERVICES - [0:0]", `:${svcChain(changed.i)} - [0:0]`];
  for (const ep of changed.endpoints) out.push(`:${sepChain(changed.i, ep)} - [0:0]`);
  out.push(`:${sepChain(changed.i, removedEp)} - [0:0]`);
  servicesChain(all, out);
  svcRules(changed, out);
  out.push(`-X ${sepChain(changed.i, removedEp)}`, "COMMIT", "");
  return out.join("\n");
}

const nftSvcChain = (i: number) => `service-${hash(svcName(i) + "tcp").slice(0, 8)}-bench/svc-${i}/tcp/http`;
const nftEpChain = (i: number, ep: string) =>
  `endpoint-${hash(svcName(i) + ep).slice(0, 8)}-bench/svc-${i}/tcp/http__${ep}/8080`;

function nftSvc(s: Svc, out: string[], fresh: boolean): void {
  const chain = nftSvcChain(s.i);
  out.push(`add chain ip kube-proxy ${chain}`);
  if (!fresh) out.push(`flush chain ip kube-proxy ${chain}`);
  out.push(
    `add rule ip kube-proxy ${chain} ip daddr ${clusterIP(s.i)} tcp dport 80 ip saddr != ${CLUSTER_CIDR} jump mark-for-masquerade`,
  );
  out.push(
    `add rule ip kube-proxy ${chain} numgen random mod ${s.endpoints.length} vmap { ${s.endpoints.map((ep, k) => `${k} : goto ${nftEpChain(s.i, ep)}`).join(", ")} }`,
  );
}

function nftEp(i: number, ep: string, out: string[]): void {
  const chain = nftEpChain(i, ep);
  out.push(`add chain ip kube-proxy ${chain}`);
  out.push(`add rule ip kube-proxy ${chain} ip saddr ${ep} jump mark-for-masquerade`);
  out.push(`add rule ip kube-proxy ${chain} meta l4proto tcp dnat to ${ep}:8080`);
}

/** kube-proxy's nftables proxier's full transaction (nft -f input). */
export function nftFull(all: Svc[]): string {
  const out = [
    "add table ip kube-proxy",
    "add chain ip kube-proxy mark-for-masquerade",
    "add rule ip kube-proxy mark-for-masquerade mark set mark or 0x4000",
    "add map ip kube-proxy service-ips { type ipv4_addr . inet_proto . inet_service : verdict ; }",
    "add chain ip kube-proxy services",
    "add rule ip kube-proxy services ip daddr . meta l4proto . th dport vmap @service-ips",
    "add chain ip kube-proxy nat-prerouting { type nat hook prerouting priority -100 ; }",
    "add rule ip kube-proxy nat-prerouting jump services",
    "add chain ip kube-proxy nat-output { type nat hook output priority -100 ; }",
    "add rule ip kube-proxy nat-output jump services",
  ];
  for (const s of all) {
    for (const ep of s.endpoints) nftEp(s.i, ep, out);
    nftSvc(s, out, true);
    out.push(`add element ip kube-proxy service-ips { ${clusterIP(s.i)} . tcp . 80 : goto ${nftSvcChain(s.i)} }`);
  }
  return out.join("\n") + "\n";
}

/**
 * kube-proxy's nftables transaction for one changed Service: the new endpoint chain added and the Service
 * chain rewritten. The stale endpoint chain is not deleted here: kube-proxy deletes stale chains in a later
 * sync (the vmap still references it until this transaction commits), so that cost is not part of the change.
 */
export function nftOneChange(changed: Svc, addedEp: string, _removedEp: string): string {
  const out: string[] = [];
  nftEp(changed.i, addedEp, out);
  nftSvc(changed, out, false);
  return out.join("\n") + "\n";
}
