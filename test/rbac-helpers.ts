// The RBAC a ClusterRole grants and the RBAC the code needs, in one form ("group/resource verb"), for
// test/deploy.test.ts (manifests, Helm chart) and test/image.test.ts (the requests the image's daemon makes).
import assert from "node:assert/strict";
import { readdir, readFile } from "node:fs/promises";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import type { V1ClusterRole } from "@kubernetes/client-node";

/** A ClusterRole's rules as sorted "group/resource verb" lines (one per combination it grants). */
export function grants(role: V1ClusterRole): string[] {
  const out = new Set<string>();
  for (const r of role.rules ?? [])
    for (const g of r.apiGroups ?? [])
      for (const res of r.resources ?? []) for (const v of r.verbs) out.add(`${g}/${res} ${v}`);
  return [...out].sort();
}

/**
 * What the code asks the API server for, read from src/: every resource path literal ("/api/v1/X",
 * "/apis/G/V/X") gets "list" and "watch", because the only caller is src/sources/kubernetes.ts, which runs
 * each resource through the list/watch Reflector of src/sources/reflector.ts (a paged GET list, then a GET
 * ?watch), the one place that sends requests. The function fails, rather than guessing, when the code does
 * anything else: another file with API paths, client-node imports or HTTP requests, a non-GET request, or
 * client-node's typed API clients (which could write).
 */
export async function apiCallsOfTheCode(): Promise<string[]> {
  const srcDir = fileURLToPath(new URL("../src/", import.meta.url));
  const files = (await readdir(srcDir, { recursive: true })).filter((f) => f.endsWith(".ts"));
  const out = new Set<string>();
  // client-node.ts only loads KubeConfig (credentials, TLS) for the reflector; the typed-client check below holds it.
  const allowed = [
    join("sources", "kubernetes.ts"),
    join("sources", "reflector.ts"),
    join("sources", "client-node.ts"),
  ];
  let requests = 0;
  for (const f of files) {
    // Comments may name paths as examples; only code counts.
    const text = (await readFile(join(srcDir, f), "utf8")).replace(/^\s*(\/\/|\/?\*).*$/gm, "");
    const paths = [...text.matchAll(/"\/api(?:s\/([a-z0-9.-]+))?\/v[0-9a-z]+\/([a-z]+)"/g)];
    const usesClient = /from "@kubernetes\/client-node"/.test(text);
    const sends = /\bfetch\(/.test(text);
    if (!paths.length && !usesClient && !sends) continue;
    assert.ok(allowed.includes(f), `${f} talks to the API server: extend this derivation`);
    assert.doesNotMatch(text, /makeApiClient|KubernetesObjectApi|\b[A-Z][A-Za-z0-9]*V1Api\b/, "typed API clients");
    if (sends) {
      assert.equal(f, join("sources", "reflector.ts"), `${f} sends requests`);
      const methods = [...text.matchAll(/method: "([A-Z]+)"/g)].map((m) => m[1]);
      assert.deepEqual([...new Set(methods)], ["GET"], "the reflector only reads");
      requests++;
    }
    if (paths.length)
      assert.match(text, /new Reflector\(/, `${f} names API paths but does not run them through the Reflector`);
    for (const m of paths) for (const v of ["list", "watch"]) out.add(`${m[1] ?? ""}/${m[2]} ${v}`);
  }
  assert.equal(requests, 1, "one file sends the API requests");
  assert.ok(out.size > 0, "found the API calls");
  return [...out].sort();
}
