// Kubernetes object subset used by bpfproxy: schemas, validation, conversions, well-known labels.
export * from "./schemas.js";
export * from "./validate.js";
export * from "./endpoints.js";
export * from "./labels.js";
export * from "./ip.js";
export * from "./family.js";
