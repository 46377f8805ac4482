/**
 * A small Kubernetes API server for bpfproxy's tests (docs/lab.md). Node's http module only; JSON only.
 *
 *   const s = await startApiServer({ host: "127.0.0.1", port: 0 });
 *   s.url                       // http://127.0.0.1:PORT
 *   s.store.create(obj)         // direct access: create/update/apply/patch/delete/get/list/waitFor/onChange
 *   s.forceGone()               // every open watch ends with ERROR 410 Expired; older RVs and continue tokens get 410
 *   s.dropWatches()             // destroy every watch connection mid-stream
 *   s.silenceWatches({newWatches}) // open watches (and, until cancel(), new ones) send nothing and stay open (half-open)
 *   await s.stop(); ...; await s.start()   // down and back on the SAME port; the store (and its history) is kept,
 *                                          // and can be changed while the server is down
 *   s.requests / s.countRequests({verb: "list", resource: "services"}) / s.failRequests(filter, {code: 503})
 *   s.failRequests(filter, {delayMs, slowOnly: true}) // answer late (a slow list); {code: 503, times: 5}: a 5xx burst
 *   s.writeKubeconfig() / s.kubeConfigOptions()   // for kubectl / client-node's KubeConfig.loadFromOptions
 *
 * Served: core/v1 namespaces, services (+/status), endpoints, nodes (+/status), events; discovery.k8s.io/v1
 * endpointslices; events.k8s.io/v1 events (the same objects as core/v1 events, converted). Discovery: /api, /apis,
 * /api/v1, /apis/G, /apis/G/V, aggregated discovery v2/v2beta1 when asked for, /version, /healthz, /openapi/v3 (paths
 * only, no schemas; no /openapi/v2).
 *
 * Semantics, as the real apiserver: one global resourceVersion; create fills uid, creationTimestamp,
 * resourceVersion, generateName; Services get defaults and a ClusterIP (and NodePorts) allocated from
 * serviceCIDRs / nodePortRange, and keep them when an update leaves them out; PUT checks resourceVersion (409);
 * no-op updates write nothing; status only changes through /status; finalizers defer deletion; deleting a
 * namespace deletes its content; objects in a namespace that does not exist are refused (404) over HTTP (direct
 * store access creates the namespace). PATCH: merge, strategic (lists merged by key where the real types do:
 * Service ports by port, conditions/addresses by type, ...), JSON patch, apply (approximated by a merge patch).
 * list: labelSelector (full syntax), fieldSelector (metadata.name, metadata.namespace and each type's own fields;
 * others 400), limit/continue from a consistent snapshot. watch: from a resourceVersion the history (historyLimit
 * events) is replayed; an older one gets an ERROR event with a 410 Expired Status; no resourceVersion or "0"
 * starts with synthetic ADDED events for the current state; sendInitialEvents; BOOKMARKs every
 * bookmarkIntervalMs with allowWatchBookmarks; timeoutSeconds; selector transitions become ADDED/DELETED.
 * Table output (kubectl get) for every resource.
 *
 * kubectl 1.32, with a kubeconfig from writeKubeconfig() and its own --cache-dir: create/replace/delete/apply -f,
 * apply --dry-run=client|server, apply --server-side, get (tables, -o json|yaml|name, -A, -w), describe, label,
 * patch (all three types), api-resources all work without extra flags. Not supported: kubectl commands whose
 * typed clients send protobuf bodies (`kubectl create namespace|service|deployment`, `expose`): they get
 * 415 UnsupportedMediaType; use a manifest with create/apply -f instead. No authentication, no admission webhooks,
 * no CRDs, no pods/apps: add types with the extraResources option.
 */
export { ApiServer, startApiServer } from "./server.js";
export type { ApiServerOptions, FaultOptions, RequestFilter, RequestRecord, Verb, WatchInfo } from "./server.js";
export { Store, timestamp } from "./store.js";
export type {
  DeleteOptions,
  EventType,
  ListOptions,
  ListResult,
  PatchType,
  ResourceRef,
  StoreEvent,
  StoreOptions,
  WriteOptions,
} from "./store.js";
export { ApiError, statusObject } from "./errors.js";
export type { Obj } from "./errors.js";
export { builtinResources } from "./resources.js";
export type { ResourceDef, ResourceContext, TableColumn } from "./resources.js";
