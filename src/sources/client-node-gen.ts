// What client-node's config.js takes from its generated code (gen/index.js), and nothing else: createConfiguration
// and ServerConfiguration, used only by KubeConfig.makeApiClient. Served in place of gen/index.js by
// client-node-hooks.ts, so loading KubeConfig does not load every generated API and model (~35 MiB of RSS).
export { createConfiguration } from "@kubernetes/client-node/dist/gen/configuration.js";
export { ServerConfiguration } from "@kubernetes/client-node/dist/gen/servers.js";
