// Health endpoints with kube-proxy's semantics: the proxy's own /healthz and /livez (:10256) and the
// per-service healthCheckNodePort servers.
export {
  ProxierHealth,
  DEFAULT_HEALTHZ_BIND_ADDRESS,
  DEFAULT_HEALTHZ_PORT,
  TO_BE_DELETED_TAINT,
  type ProxierHealthOptions,
  type ProxyHealthBody,
  type ProxierFamilyHealth,
  type NodeLike,
} from "./proxier-health.js";
export {
  ServiceHealthServers,
  serviceHealthBody,
  healthCheckBindAddresses,
  type ServiceHealthEntry,
  type ServiceHealthOptions,
  type ServiceHealthSyncResult,
} from "./service-health.js";
export { parseBindAddress, joinHostPort, listenHTTP, closeHTTP, goJSONTime, type HostPort } from "./http.js";
