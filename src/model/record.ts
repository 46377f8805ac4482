// One Service's frontends and backends on this node as one compact record: the model's output for the data
// plane. A full sync at 30k Services would otherwise hold one object per frontend and per backend (and make
// as many again as garbage on every build); here a Service is one Uint32Array plus a few shared references.
//
// Layout of `data` (u32 words):
//   [0] frontends n, [1] backend sets s
//   frontend rows, FE_WORDS each: address (IPv4 as a number, else an index into `strs`), bits (below),
//     port name index (into `ports`), backend set, retained set, affinity index | source ranges index << 16
//   set starts: s + 1 words, set k is backends [start k, start k+1)
//   backends, 2 words each: address (as above), port | flags << 16 | weight code << 20 (0: weight 1, else weight + 1;
//     bpfproxy.io/backend-weights, model/weights.ts)
// Set 0 is always the empty set. A Service's frontends of one family and port share their backend sets (the
// ClusterIP and the NodePorts of a port point at the same set instead of copies).
//
// The public shapes (Frontend, FrontendExtras, BackendModel: render, status, explain, IPVS) are made from a
// record on demand (frontends(), extras()); the BPF encoder reads the words directly.
import { compareAddresses, ipv4FromNumber, ipv4ToNumber } from "../k8s/ip.js";
import type {
  Algorithm,
  BackendModel,
  Frontend,
  FrontendExtras,
  ForwardingMode,
  FrontendType,
  Protocol,
  Scope,
  SessionAffinity,
} from "./types.js";
import type { ModelEndpoint } from "./topology.js";

export const FRONTEND_TYPES: readonly FrontendType[] = ["ClusterIP", "NodePort", "LoadBalancer", "ExternalIP"];
const PROTOCOLS: readonly Protocol[] = ["TCP", "UDP", "SCTP"];
const ALGORITHMS: readonly Algorithm[] = ["random", "maglev", "least-conn"];

const FE_WORDS = 6;
const HEADER = 2;
// Frontend bits (word 1).
const PORT_MASK = 0xffff;
const TYPE_SHIFT = 16; // 2 bits
const PROTO_SHIFT = 18; // 2 bits
const SCOPE_INTERNAL = 1 << 20;
/** The address is a string of `strs` (IPv6, or anything that is not an IPv4 dotted quad). */
const ADDR_STRING = 1 << 21;
const DROP_WHEN_EMPTY = 1 << 22;
const EXTERNAL_LOCAL = 1 << 23;
const ALGO_SHIFT = 24; // 2 bits
/** Forwarding mode (docs/dsr.md), 2 bits: 0 snat (the default, absent from the public shape), 1 dsr, 2 hybrid. */
const FWD_SHIFT = 26;
const FWD_MODES: readonly ForwardingMode[] = ["snat", "dsr", "hybrid"];
/** Backend flags (high half of a backend's second word). */
export const BACKEND_TERMINATING = 1;
export const BACKEND_NODE_LOCAL = 2;
const BACKEND_ADDR_STRING = 4;
/** The weight code (bits 20..30 of a backend's second word): 0 is weight 1, so unweighted sets are unchanged. */
const WEIGHT_SHIFT = 20;
const WEIGHT_MASK = 0x7ff;

const NO_RANGES: readonly string[] = [];
const NO_STRINGS: readonly string[] = [];
const ONLY_NO_RANGES: readonly (readonly string[])[] = [NO_RANGES];
/** sessionAffinity None: one object for every frontend that has it. */
export const AFFINITY_NONE: SessionAffinity = Object.freeze({ type: "None" });
const ONLY_NONE: readonly SessionAffinity[] = [AFFINITY_NONE];

export class ServiceRecord {
  constructor(
    /** "namespace/name" */
    readonly service: string,
    readonly data: Uint32Array,
    /** Port names by index (the Service's ports themselves, when built by the model). */
    readonly ports: readonly { readonly name: string }[],
    /** Addresses that are not IPv4 numbers (IPv6, canonical), by index. */
    readonly strs: readonly string[],
    readonly affinities: readonly SessionAffinity[],
    /** Source-range lists by index; 0 is the empty list. */
    readonly ranges: readonly (readonly string[])[],
  ) {}

  /** Number of frontends. */
  get size(): number {
    return this.data[0]!;
  }

  private bitsOf(i: number): number {
    return this.data[HEADER + i * FE_WORDS + 1]!;
  }

  /** The frontend's address is an IPv4 number (addressNumber); else a string (IPv6). */
  addressIsIPv4(i: number): boolean {
    return (this.bitsOf(i) & ADDR_STRING) === 0;
  }
  addressNumber(i: number): number {
    return this.data[HEADER + i * FE_WORDS]!;
  }
  address(i: number): string {
    const w = this.data[HEADER + i * FE_WORDS]!;
    return this.addressIsIPv4(i) ? ipv4FromNumber(w) : this.strs[w]!;
  }
  port(i: number): number {
    return this.bitsOf(i) & PORT_MASK;
  }
  typeIndex(i: number): number {
    return (this.bitsOf(i) >>> TYPE_SHIFT) & 3;
  }
  type(i: number): FrontendType {
    return FRONTEND_TYPES[this.typeIndex(i)]!;
  }
  protocol(i: number): Protocol {
    return PROTOCOLS[(this.bitsOf(i) >>> PROTO_SHIFT) & 3]!;
  }
  scope(i: number): Scope {
    return this.bitsOf(i) & SCOPE_INTERNAL ? "internal" : "external";
  }
  algorithm(i: number): Algorithm {
    return ALGORITHMS[(this.bitsOf(i) >>> ALGO_SHIFT) & 3]!;
  }
  dropWhenEmpty(i: number): boolean {
    return (this.bitsOf(i) & DROP_WHEN_EMPTY) !== 0;
  }
  externalPolicyLocal(i: number): boolean {
    return (this.bitsOf(i) & EXTERNAL_LOCAL) !== 0;
  }
  /** bpfproxy.io/forwarding-mode / lbMode where it applies; "snat" elsewhere. */
  forwardingMode(i: number): ForwardingMode {
    return FWD_MODES[(this.bitsOf(i) >>> FWD_SHIFT) & 3]!;
  }
  portName(i: number): string {
    return this.ports[this.data[HEADER + i * FE_WORDS + 2]!]!.name;
  }
  /** The backend set new connections may use, and the set kept for existing flows only. */
  backendSet(i: number): number {
    return this.data[HEADER + i * FE_WORDS + 3]!;
  }
  retainedSet(i: number): number {
    return this.data[HEADER + i * FE_WORDS + 4]!;
  }
  sessionAffinity(i: number): SessionAffinity {
    return this.affinities[this.data[HEADER + i * FE_WORDS + 5]! & 0xffff]!;
  }
  sourceRanges(i: number): readonly string[] {
    return this.ranges[this.data[HEADER + i * FE_WORDS + 5]! >>> 16]!;
  }

  private get setBase(): number {
    return HEADER + this.data[0]! * FE_WORDS;
  }
  private get backendBase(): number {
    return this.setBase + this.data[1]! + 1;
  }
  /** Backends [start, end) of set s (indices for the backend accessors). */
  setStart(s: number): number {
    return this.data[this.setBase + s]!;
  }
  setEnd(s: number): number {
    return this.data[this.setBase + s + 1]!;
  }
  setSize(s: number): number {
    return this.setEnd(s) - this.setStart(s);
  }
  /** Backend j: its address is an IPv4 number (backendNumber); else a string. */
  backendIsIPv4(j: number): boolean {
    return ((this.data[this.backendBase + 2 * j + 1]! >>> 16) & BACKEND_ADDR_STRING) === 0;
  }
  backendNumber(j: number): number {
    return this.data[this.backendBase + 2 * j]!;
  }
  backendAddress(j: number): string {
    const w = this.data[this.backendBase + 2 * j]!;
    return this.backendIsIPv4(j) ? ipv4FromNumber(w) : this.strs[w]!;
  }
  backendPort(j: number): number {
    return this.data[this.backendBase + 2 * j + 1]! & 0xffff;
  }
  /** BACKEND_TERMINATING | BACKEND_NODE_LOCAL. */
  backendFlags(j: number): number {
    return (this.data[this.backendBase + 2 * j + 1]! >>> 16) & 3;
  }
  /** Backend j's weight (bpfproxy.io/backend-weights): 1 unless the Service gives another, 0 = no new flows. */
  backendWeight(j: number): number {
    const c = (this.data[this.backendBase + 2 * j + 1]! >>> WEIGHT_SHIFT) & WEIGHT_MASK;
    return c === 0 ? 1 : c - 1;
  }
  /** Every frontend address and backend address is IPv4 (the encoder's fast path). */
  get allIPv4(): boolean {
    return this.strs.length === 0;
  }
  /** Read from the words (false: an ObjectRecord, read from frontend objects). */
  readonly compact: boolean = true;
  /** Backends new connections may use / kept for existing flows only, of frontend i. */
  backendCount(i: number): number {
    return this.setSize(this.backendSet(i));
  }
  retainedCount(i: number): number {
    return this.setSize(this.retainedSet(i));
  }

  /** The frontend key two Services can claim (address, port, protocol, scope): a number for IPv4. */
  claimKey(i: number): number | string {
    const bits = this.bitsOf(i);
    const low = ((bits & PORT_MASK) * 4 + ((bits >>> PROTO_SHIFT) & 3)) * 2 + (bits & SCOPE_INTERNAL ? 1 : 0);
    if (bits & ADDR_STRING) return `${this.strs[this.addressNumber(i)]!}|${low}`;
    return this.addressNumber(i) * 524288 + low; // 32 + 19 bits: exact
  }

  private backend(j: number): BackendModel {
    const f = this.backendFlags(j);
    const weight = this.backendWeight(j);
    return {
      address: this.backendAddress(j),
      port: this.backendPort(j),
      state: f & BACKEND_TERMINATING ? "terminating" : "active",
      nodeLocal: (f & BACKEND_NODE_LOCAL) !== 0,
      ...(weight !== 1 ? { weight } : {}),
    };
  }

  /** Set s as BackendModel objects (new ones on every call). */
  backends(s: number): BackendModel[] {
    const out: BackendModel[] = [];
    for (let j = this.setStart(s); j < this.setEnd(s); j++) out.push(this.backend(j));
    return out;
  }

  /** Frontend i in its public shape (docs/cli.md: field order as in types.ts). */
  frontend(i: number, sets?: Map<number, BackendModel[]>): Frontend {
    const s = this.backendSet(i);
    let backends = sets?.get(s);
    if (!backends) {
      backends = this.backends(s);
      sets?.set(s, backends);
    }
    return {
      service: this.service,
      portName: this.portName(i),
      type: this.type(i),
      address: this.address(i),
      port: this.port(i),
      protocol: this.protocol(i),
      scope: this.scope(i),
      sessionAffinity: this.sessionAffinity(i),
      algorithm: this.algorithm(i),
      ...(this.forwardingMode(i) !== "snat" ? { forwardingMode: this.forwardingMode(i) } : {}),
      backends,
    };
  }

  /** Frontend i's extras. */
  extras(i: number): FrontendExtras {
    return {
      retainedBackends: this.backends(this.retainedSet(i)),
      dropWhenEmpty: this.dropWhenEmpty(i),
      sourceRanges: this.sourceRanges(i) as string[],
      ...(this.externalPolicyLocal(i) ? { externalPolicyLocal: true } : {}),
    };
  }

  /** Every frontend in its public shape (the backend lists of a shared set shared, as the model shares them). */
  frontends(): Frontend[] {
    const sets = new Map<number, BackendModel[]>();
    const out: Frontend[] = [];
    for (let i = 0; i < this.size; i++) out.push(this.frontend(i, sets));
    return out;
  }

  extrasList(): FrontendExtras[] {
    const out: FrontendExtras[] = [];
    for (let i = 0; i < this.size; i++) out.push(this.extras(i));
    return out;
  }

  /**
   * Unchanged since `other` was handed out: the very same record (the model cache hands back the same record
   * for an unchanged Service); for records over frontend objects, the very same objects.
   */
  sameAs(other: ServiceRecord): boolean {
    return this === other;
  }

  /** The same record with only the frontends at `keep` (ascending): those a conflict left to this Service. */
  subset(keep: readonly number[]): ServiceRecord {
    const n = this.size;
    const rest = this.data.subarray(HEADER + n * FE_WORDS);
    const data = new Uint32Array(HEADER + keep.length * FE_WORDS + rest.length);
    data[0] = keep.length;
    data[1] = this.data[1]!;
    keep.forEach((i, k) =>
      data.set(this.data.subarray(HEADER + i * FE_WORDS, HEADER + (i + 1) * FE_WORDS), HEADER + k * FE_WORDS),
    );
    data.set(rest, HEADER + keep.length * FE_WORDS);
    return new ServiceRecord(this.service, data, this.ports, this.strs, this.affinities, this.ranges);
  }
}

// ---------------------------------------------------------------------------------------------------------
// Building records. One builder at a time (the model is synchronous between yields): scratch arrays reused.

const typeIndex = (t: FrontendType) => FRONTEND_TYPES.indexOf(t);

export class RecordBuilder {
  private fe: number[] = [];
  private setStarts: number[] = [0, 0];
  private bAddr: number[] = [];
  private bWord: number[] = [];
  private strs: string[] = [];
  private strIndex: Map<string, number> | undefined;
  private affinities: SessionAffinity[] = [];
  private ranges: (readonly string[])[] = [NO_RANGES];
  private keys = new Float64Array(64);

  reset(): void {
    this.fe.length = 0;
    this.setStarts.length = 2;
    this.setStarts[0] = 0;
    this.setStarts[1] = 0;
    this.bAddr.length = 0;
    this.bWord.length = 0;
    // Lists a record took were replaced in finish(): these are the builder's own.
    this.strs.length = 0;
    this.strIndex = undefined;
    this.affinities.length = 0;
    this.ranges.length = 1;
  }

  get frontendCount(): number {
    return this.fe.length / FE_WORDS;
  }

  private str(s: string): number {
    this.strIndex ??= new Map();
    let i = this.strIndex.get(s);
    if (i === undefined) {
      this.strIndex.set(s, (i = this.strs.length));
      this.strs.push(s);
    }
    return i;
  }

  /** Index of an affinity (compared by identity, then by value). */
  affinity(a: SessionAffinity): number {
    for (let i = 0; i < this.affinities.length; i++) {
      const b = this.affinities[i]!;
      if (
        b === a ||
        (b.type === a.type && (a.type !== "ClientIP" || (b as typeof a).timeoutSeconds === a.timeoutSeconds))
      )
        return i;
    }
    this.affinities.push(a);
    return this.affinities.length - 1;
  }

  /** Index of a source-range list (0: none). */
  rangeList(r: readonly string[]): number {
    if (r.length === 0) return 0;
    const i = this.ranges.indexOf(r);
    if (i >= 0) return i;
    this.ranges.push(r);
    return this.ranges.length - 1;
  }

  private pushBackend(address: string, port: number, flags: number, weight = 1): void {
    if (weight !== 1) flags |= ((weight + 1) & WEIGHT_MASK) << (WEIGHT_SHIFT - 16);
    const a = ipv4ToNumber(address);
    if (Number.isNaN(a)) {
      this.bAddr.push(this.str(address));
      this.bWord.push((port & 0xffff) | ((flags | BACKEND_ADDR_STRING) << 16));
    } else {
      this.bAddr.push(a);
      this.bWord.push((port & 0xffff) | (flags << 16));
    }
  }

  private closeSet(): number {
    this.setStarts.push(this.bAddr.length);
    return this.setStarts.length - 2;
  }

  /**
   * A set of endpoints as backends, sorted by address then port (stable; IPv4 numerically first): "active"
   * when ready, else "terminating". Empty → set 0. `weights`: by address (model/weights.ts), others weigh 1.
   */
  endpointSet(eps: readonly ModelEndpoint[] | null, weights?: ReadonlyMap<string, number>): number {
    if (!eps || eps.length === 0) return 0;
    for (const ep of sortedEndpoints(eps, this)) {
      const flags = (ep.ready ? 0 : BACKEND_TERMINATING) | (ep.isLocal ? BACKEND_NODE_LOCAL : 0);
      // The address string only when weights are given: a packed endpoint makes it on demand.
      const weight = weights?.size ? (weights.get(ep.address) ?? 1) : 1;
      if (ep.addr4 === undefined || weight !== 1) this.pushBackend(ep.address, ep.port, flags, weight);
      else {
        this.bAddr.push(ep.addr4);
        this.bWord.push((ep.port & 0xffff) | (flags << 16));
      }
    }
    return this.closeSet();
  }

  /** A set of BackendModel objects in the order given. */
  backendSet(list: readonly BackendModel[]): number {
    if (list.length === 0) return 0;
    for (const b of list)
      this.pushBackend(
        b.address,
        b.port,
        (b.state === "terminating" ? BACKEND_TERMINATING : 0) | (b.nodeLocal ? BACKEND_NODE_LOCAL : 0),
        b.weight ?? 1,
      );
    return this.closeSet();
  }

  /** Two sets hold the same backends (address, port, state, nodeLocal, weight), in the same order. */
  sameSet(a: number, b: number): boolean {
    if (a === b) return true;
    const n = this.setStarts[a + 1]! - this.setStarts[a]!;
    if (n !== this.setStarts[b + 1]! - this.setStarts[b]!) return false;
    for (let k = 0; k < n; k++) {
      const x = this.setStarts[a]! + k;
      const y = this.setStarts[b]! + k;
      if (this.bAddr[x] !== this.bAddr[y] || this.bWord[x] !== this.bWord[y]) return false;
    }
    return true;
  }

  /** Scratch numeric keys (no typed array per set). */
  scratch(n: number): Float64Array {
    if (this.keys.length < n) this.keys = new Float64Array(Math.max(n, this.keys.length * 2));
    return this.keys;
  }

  frontend(f: {
    type: FrontendType;
    address: string;
    port: number;
    protocol: Protocol;
    scope: Scope;
    portIndex: number;
    algorithm: Algorithm;
    affinity: number;
    backends: number;
    retained: number;
    ranges: number;
    dropWhenEmpty: boolean;
    externalPolicyLocal: boolean;
    forwardingMode?: ForwardingMode;
  }): void {
    const a = ipv4ToNumber(f.address);
    const isString = Number.isNaN(a);
    this.fe.push(
      isString ? this.str(f.address) : a,
      (f.port & PORT_MASK) |
        (typeIndex(f.type) << TYPE_SHIFT) |
        (Math.max(0, PROTOCOLS.indexOf(f.protocol)) << PROTO_SHIFT) |
        (f.scope === "internal" ? SCOPE_INTERNAL : 0) |
        (isString ? ADDR_STRING : 0) |
        (f.dropWhenEmpty ? DROP_WHEN_EMPTY : 0) |
        (f.externalPolicyLocal ? EXTERNAL_LOCAL : 0) |
        (Math.max(0, ALGORITHMS.indexOf(f.algorithm)) << ALGO_SHIFT) |
        (Math.max(0, FWD_MODES.indexOf(f.forwardingMode ?? "snat")) << FWD_SHIFT),
      f.portIndex,
      f.backends,
      f.retained,
      f.affinity | (f.ranges << 16),
    );
  }

  /**
   * The record of what was added, its frontends in `order` (indices as added; default: as added). Resets the
   * builder.
   */
  finish(service: string, ports: readonly { readonly name: string }[], order?: readonly number[]): ServiceRecord {
    const n = order ? order.length : this.frontendCount;
    const sets = this.setStarts.length - 1;
    const nb = this.bAddr.length;
    const data = new Uint32Array(HEADER + n * FE_WORDS + sets + 1 + 2 * nb);
    data[0] = n;
    data[1] = sets;
    for (let k = 0; k < n; k++) {
      const i = order ? order[k]! : k;
      for (let w = 0; w < FE_WORDS; w++) data[HEADER + k * FE_WORDS + w] = this.fe[i * FE_WORDS + w]!;
    }
    let at = HEADER + n * FE_WORDS;
    for (let s = 0; s <= sets; s++) data[at++] = this.setStarts[s]!;
    for (let j = 0; j < nb; j++) {
      data[at++] = this.bAddr[j]!;
      data[at++] = this.bWord[j]!;
    }
    // The usual lists are shared by every record that has them (no array per Service).
    const affinities =
      this.affinities.length === 1 && this.affinities[0] === AFFINITY_NONE ? ONLY_NONE : this.affinities;
    const strs = this.strs.length ? this.strs : NO_STRINGS;
    const ranges = this.ranges.length === 1 ? ONLY_NO_RANGES : this.ranges;
    const r = new ServiceRecord(service, data, ports, strs, affinities, ranges);
    // The record keeps what it took: the builder goes on with new lists.
    if (strs === this.strs) this.strs = [];
    if (affinities === this.affinities) this.affinities = [];
    if (ranges === this.ranges) this.ranges = [NO_RANGES];
    this.reset();
    return r;
  }

  /** Sort key material for frontend k as added (for ordering within a Service). */
  frontendFields(k: number): {
    portIndex: number;
    type: number;
    address: string | number;
    isString: boolean;
    scopeInternal: boolean;
    port: number;
    proto: number;
  } {
    const bits = this.fe[k * FE_WORDS + 1]!;
    const isString = (bits & ADDR_STRING) !== 0;
    return {
      portIndex: this.fe[k * FE_WORDS + 2]!,
      type: (bits >>> TYPE_SHIFT) & 3,
      address: isString ? this.strs[this.fe[k * FE_WORDS]!]! : this.fe[k * FE_WORDS]!,
      isString,
      scopeInternal: (bits & SCOPE_INTERNAL) !== 0,
      port: bits & PORT_MASK,
      proto: (bits >>> PROTO_SHIFT) & 3,
    };
  }

  /** Frontend k's claim key as ServiceRecord.claimKey computes it. */
  frontendKey(k: number): number | string {
    const bits = this.fe[k * FE_WORDS + 1]!;
    const low = ((bits & PORT_MASK) * 4 + ((bits >>> PROTO_SHIFT) & 3)) * 2 + (bits & SCOPE_INTERNAL ? 1 : 0);
    if (bits & ADDR_STRING) return `${this.strs[this.fe[k * FE_WORDS]!]!}|${low}`;
    return this.fe[k * FE_WORDS]! * 524288 + low;
  }

  /** Frontend type priority for de-duplication within a Service. */
  frontendType(k: number): number {
    return (this.fe[k * FE_WORDS + 1]! >>> TYPE_SHIFT) & 3;
  }
}

/** Endpoints sorted by address then port (stable), parsing each IPv4 address once; usually already in order. */
function sortedEndpoints(eps: readonly ModelEndpoint[], b: RecordBuilder): readonly ModelEndpoint[] {
  const n = eps.length;
  if (n < 2) return eps;
  const keys = b.scratch(n);
  let sorted = true;
  for (let i = 0; i < n; i++) {
    const a = eps[i]!.addr4 ?? ipv4ToNumber(eps[i]!.address);
    if (Number.isNaN(a)) return [...eps].sort((x, y) => compareAddresses(x.address, y.address) || x.port - y.port);
    keys[i] = a * 131072 + eps[i]!.port; // exact: 49 bits
    if (i > 0 && keys[i - 1]! > keys[i]!) sorted = false;
  }
  if (sorted) return eps;
  const order = Array.from({ length: n }, (_, i) => i).sort((x, y) => keys[x]! - keys[y]! || x - y);
  return order.map((i) => eps[i]!);
}

/**
 * A record over frontend objects as they are (tests' hand-made models, a model built without a cache): every
 * accessor reads the objects, and the encoder takes its object path for them (`compact` false), so what such a
 * model holds is encoded exactly as given.
 */
export class ObjectRecord extends ServiceRecord {
  override readonly compact = false;
  constructor(
    service: string,
    private readonly fes: readonly Frontend[],
    private readonly xs: readonly (FrontendExtras | undefined)[],
  ) {
    super(service, new Uint32Array(HEADER), [], [], [], [NO_RANGES]);
  }
  override get size(): number {
    return this.fes.length;
  }
  override addressIsIPv4(i: number): boolean {
    return !Number.isNaN(ipv4ToNumber(this.fes[i]!.address));
  }
  override addressNumber(i: number): number {
    return ipv4ToNumber(this.fes[i]!.address);
  }
  override address(i: number): string {
    return this.fes[i]!.address;
  }
  override port(i: number): number {
    return this.fes[i]!.port;
  }
  override typeIndex(i: number): number {
    return FRONTEND_TYPES.indexOf(this.fes[i]!.type);
  }
  override type(i: number): FrontendType {
    return this.fes[i]!.type;
  }
  override protocol(i: number): Protocol {
    return this.fes[i]!.protocol;
  }
  override scope(i: number): Scope {
    return this.fes[i]!.scope;
  }
  override algorithm(i: number): Algorithm {
    return this.fes[i]!.algorithm;
  }
  override dropWhenEmpty(i: number): boolean {
    return this.xs[i]?.dropWhenEmpty === true;
  }
  override externalPolicyLocal(i: number): boolean {
    return this.xs[i]?.externalPolicyLocal === true;
  }
  override forwardingMode(i: number): ForwardingMode {
    return this.fes[i]!.forwardingMode ?? "snat";
  }
  override portName(i: number): string {
    return this.fes[i]!.portName;
  }
  override sessionAffinity(i: number): SessionAffinity {
    return this.fes[i]!.sessionAffinity;
  }
  override sourceRanges(i: number): readonly string[] {
    return this.xs[i]?.sourceRanges ?? NO_RANGES;
  }
  override backendCount(i: number): number {
    return this.fes[i]!.backends.length;
  }
  override retainedCount(i: number): number {
    return this.xs[i]?.retainedBackends.length ?? 0;
  }
  override frontend(i: number): Frontend {
    return this.fes[i]!;
  }
  override extras(i: number): FrontendExtras {
    return this.xs[i]!;
  }
  override frontends(): Frontend[] {
    return [...this.fes];
  }
  override extrasList(): FrontendExtras[] {
    return this.xs as FrontendExtras[];
  }
  override sameAs(other: ServiceRecord): boolean {
    return (
      other === this || (other instanceof ObjectRecord && sameRefs(this.fes, other.fes) && sameRefs(this.xs, other.xs))
    );
  }
  override claimKey(): number | string {
    throw new Error("ObjectRecord: no claim keys");
  }
  override subset(): ServiceRecord {
    throw new Error("ObjectRecord: no subsets");
  }
}

const sameRefs = <T>(a: readonly T[], b: readonly T[]) => a.length === b.length && a.every((x, i) => x === b[i]);

/** Records of hand-made frontends (tests, a model without records): grouped by Service, in the order given. */
export function recordsFromFrontends(
  frontends: readonly Frontend[],
  extras: readonly (FrontendExtras | undefined)[],
): Map<string, ServiceRecord> {
  const groups = new Map<string, { fes: Frontend[]; xs: (FrontendExtras | undefined)[] }>();
  frontends.forEach((fe, i) => {
    let g = groups.get(fe.service);
    if (!g) groups.set(fe.service, (g = { fes: [], xs: [] }));
    g.fes.push(fe);
    g.xs.push(extras[i]);
  });
  const out = new Map<string, ServiceRecord>();
  for (const [service, g] of groups) out.set(service, new ObjectRecord(service, g.fes, g.xs));
  return out;
}
