// Change tracking between two node models, per Service, in the spirit of kube-proxy's
// ServiceChangeTracker: keep the previous and current entries of each Service and report which Services'
// entries differ, so the reconciler can rewrite only those.

import type { Frontend, FrontendExtras, NodeModel } from "./types.js";

/** One Service's part of a NodeModel: its frontends (in model order) and their extras. */
export interface ServiceEntries {
  frontends: Frontend[];
  extras: FrontendExtras[];
}

export interface ServiceChange {
  /** undefined: the Service is new on this node. */
  previous: ServiceEntries | undefined;
  /** undefined: the Service is gone from this node. */
  current: ServiceEntries | undefined;
}

/** Splits a model by Service key. */
export function groupByService(model: NodeModel): Map<string, ServiceEntries> {
  const out = new Map<string, ServiceEntries>();
  model.frontends.forEach((f, i) => {
    let g = out.get(f.service);
    if (!g) out.set(f.service, (g = { frontends: [], extras: [] }));
    g.frontends.push(f);
    g.extras.push(model.extras[i] ?? { retainedBackends: [], sourceRanges: [] });
  });
  return out;
}

/** Canonical text of a Service's entries. The model is sorted, so equal content gives equal text. */
function fingerprint(e: ServiceEntries): string {
  return JSON.stringify(e);
}

/** Keys of Services whose entries differ between two models (added, removed or changed). */
export function changedServices(previous: NodeModel | undefined, current: NodeModel): Set<string> {
  const a = previous ? groupByService(previous) : new Map<string, ServiceEntries>();
  const b = groupByService(current);
  const out = new Set<string>();
  for (const [k, v] of b) {
    const p = a.get(k);
    if (!p || fingerprint(p) !== fingerprint(v)) out.add(k);
  }
  for (const k of a.keys()) if (!b.has(k)) out.add(k);
  return out;
}

/**
 * Keeps the last applied entries per Service. `update(model)` takes the next full model and returns the
 * keys whose entries changed since the previous call; `changes()` gives previous/current for each of them.
 * The first update reports every Service.
 */
export class ServiceChangeTracker {
  private entries = new Map<string, { entries: ServiceEntries; fp: string }>();
  private last = new Map<string, ServiceChange>();

  update(model: NodeModel): Set<string> {
    const next = new Map<string, { entries: ServiceEntries; fp: string }>();
    for (const [k, e] of groupByService(model)) next.set(k, { entries: e, fp: fingerprint(e) });
    const changes = new Map<string, ServiceChange>();
    for (const [k, cur] of next) {
      const prev = this.entries.get(k);
      if (!prev || prev.fp !== cur.fp) changes.set(k, { previous: prev?.entries, current: cur.entries });
    }
    for (const [k, prev] of this.entries) {
      if (!next.has(k)) changes.set(k, { previous: prev.entries, current: undefined });
    }
    this.entries = next;
    this.last = changes;
    return new Set(changes.keys());
  }

  /** previous/current of each Service reported by the last update. */
  changes(): ReadonlyMap<string, ServiceChange> {
    return this.last;
  }

  /** The current entries of a Service, if it has any on this node. */
  get(key: string): ServiceEntries | undefined {
    return this.entries.get(key)?.entries;
  }

  /** Keys of every Service with entries on this node, sorted. */
  keys(): string[] {
    return [...this.entries.keys()].sort();
  }

  /** Forget everything (the next update reports every Service again). */
  reset(): void {
    this.entries.clear();
    this.last = new Map();
  }
}
