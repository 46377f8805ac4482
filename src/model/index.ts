// The per-node service model: pure functions from validated objects to frontends and backends.
export * from "./types.js";
export * from "./order.js";
export * from "./topology.js";
export * from "./build.js";
export * from "./health.js";
export * from "./local.js";
export * from "./record.js";
export * from "./weights.js";
