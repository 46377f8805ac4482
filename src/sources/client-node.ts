// @kubernetes/client-node, loaded only for what bpfproxy uses it for: KubeConfig (kubeconfig and in-cluster
// loading, credentials and exec plugins, TLS, proxies). Importing the package, or even its config.js, loads every
// generated API client and model (RSS 41 → 111 MiB, issue 18); a resolve hook (client-node-hooks.ts) gives
// config.js a module with the two generated names it needs instead, which leaves about 15 MiB (the hook's thread
// included). Loaded on first use, so the folder source never loads it.
import { register } from "node:module";
import type { KubeConfig } from "@kubernetes/client-node";
import { log } from "../log.js";

let loading: Promise<typeof KubeConfig> | undefined;

export function loadKubeConfigClass(): Promise<typeof KubeConfig> {
  return (loading ??= (async () => {
    try {
      const ext = import.meta.url.endsWith(".ts") ? ".ts" : ".js";
      register(new URL(`./client-node-hooks${ext}`, import.meta.url));
    } catch (err) {
      // Only memory is at stake: config.js then loads the generated code as usual.
      log.warn("could not install the client-node import hook; loading all of client-node", { error: String(err) });
    }
    return (await import("@kubernetes/client-node/dist/config.js")).KubeConfig;
  })());
}
