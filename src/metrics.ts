// The process's Prometheus registry. Every bpfproxy metric registers here (served on
// --metrics-bind-address by the daemon); modules add their own metrics next to this one.

import { Counter, Registry } from "prom-client";

export const registry = new Registry();

/** Objects rejected by validation (or files that failed to parse), by kind and short reason code. */
export const invalidObjectsTotal = new Counter({
  name: "bpfproxy_invalid_objects_total",
  help: "Kubernetes objects skipped because they failed validation, by kind and reason.",
  labelNames: ["kind", "reason"] as const,
  registers: [registry],
});
