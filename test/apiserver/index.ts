// A small Kubernetes API server for bpfproxy's tests. See server.ts for the controls, store.ts for direct access.
export { ApiServer, startApiServer } from "./server.js";
export type { ApiServerOptions, FaultOptions, RequestFilter, RequestRecord, Verb, WatchInfo } from "./server.js";
export { Store, timestamp } from "./store.js";
export type { EventType, ListOptions, ListResult, PatchType, ResourceRef, StoreEvent, StoreOptions } from "./store.js";
export { ApiError, statusObject } from "./errors.js";
export type { Obj } from "./errors.js";
export type { ResourceDef, ResourceContext, TableColumn } from "./resources.js";
