// `bpfproxy render`: the desired state for one node, computed from a manifest folder without touching the
// kernel, and its stable JSON form (docs/cli.md). `status -o json` prints the same `frontends` shape.

import { buildNodeModel } from "./model/build.js";
import { sortFrontends } from "./model/order.js";
import type { Frontend, ModelConfig, NodeModel, RenderedState } from "./model/types.js";
import { loadFolderSync } from "./sources/folder.js";

export interface RenderOptions extends Partial<Omit<ModelConfig, "nodeName">> {
  /** Default "bpf". */
  mode?: RenderedState["mode"];
}

/** The printable part of a node model. */
export function toRenderedState(model: NodeModel, mode: RenderedState["mode"] = "bpf"): RenderedState {
  return { node: model.node, mode, frontends: model.frontends };
}

/** Reads `path` once and renders the model for `nodeName`. Throws if the folder does not exist. */
export function renderFromFolder(path: string, nodeName: string, options: RenderOptions = {}): RenderedState {
  const snap = loadFolderSync(path);
  const { mode, ...config } = options;
  const model = buildNodeModel({ ...snap, nodeName, config: { ...config, nodeName } });
  return toRenderedState(model, mode ?? "bpf");
}

/** Copies a frontend with its keys in the documented order (and nothing else). */
function orderedFrontend(f: Frontend): Frontend {
  return {
    service: f.service,
    portName: f.portName,
    type: f.type,
    address: f.address,
    port: f.port,
    protocol: f.protocol,
    scope: f.scope,
    sessionAffinity:
      f.sessionAffinity.type === "ClientIP"
        ? { type: "ClientIP", timeoutSeconds: f.sessionAffinity.timeoutSeconds }
        : { type: "None" },
    algorithm: f.algorithm,
    ...(f.forwardingMode ? { forwardingMode: f.forwardingMode } : {}),
    backends: f.backends.map((b) => ({ address: b.address, port: b.port, state: b.state, nodeLocal: b.nodeLocal })),
  };
}

/**
 * The JSON text of a rendered state: keys in docs/cli.md order, frontends and backends in the stable sort
 * order, two-space indentation, no trailing newline. Does not modify `state`.
 */
export function renderJSON(state: RenderedState): string {
  const frontends = sortFrontends(state.frontends.map(orderedFrontend));
  return JSON.stringify({ node: state.node, mode: state.mode, frontends }, null, 2);
}
