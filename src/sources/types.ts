// What every object source (the Kubernetes API, the manifest folder) hands to the daemon: validated
// objects, a "synced" signal, and change notifications. Objects in a snapshot have crossed the zod schemas
// in src/k8s exactly once; invalid ones never appear here.

import type { EndpointSlice, Node, Service } from "../k8s/schemas.js";
import type { ObjectIndex } from "./object-index.js";

export interface ObjectSnapshot {
  services: Service[];
  /** Includes slices converted from Endpoints (v1) objects. */
  endpointSlices: EndpointSlice[];
  nodes: Node[];
}

export interface Source {
  /** Begins listing/reading and watching. Rejects only for a configuration error (e.g. missing folder). */
  start(): Promise<void>;
  /** Resolves once the first complete view is available (never before); the daemon writes nothing until then. */
  synced(): Promise<void>;
  /** The current objects. Treat as read-only; a new snapshot object is made after each change. */
  snapshot(): ObjectSnapshot;
  /** The same Services and slices indexed by Service key with a change log (syncs then cost O(change)). */
  index(): ObjectIndex;
  /** "change": the snapshot changed. Listeners take no arguments and should only schedule a sync. */
  on(event: "change", listener: () => void): this;
  off(event: "change", listener: () => void): this;
  /** Stops watching and releases every handle. */
  stop(): Promise<void>;
}
