// Module resolve hook (node:module register), installed by client-node.ts: when client-node's config.js imports
// its generated code (./gen/index.js: every API client and model), it gets client-node-gen.ts instead, which
// holds the two names config.js uses. Every other import resolves as usual.
interface ResolveContext {
  parentURL?: string;
}
type NextResolve = (specifier: string, context: ResolveContext) => Promise<{ url: string }>;

const GEN = new URL(`./client-node-gen${import.meta.url.endsWith(".ts") ? ".ts" : ".js"}`, import.meta.url).href;

export async function resolve(
  specifier: string,
  context: ResolveContext,
  next: NextResolve,
): Promise<{ url: string; shortCircuit?: boolean }> {
  if (specifier === "./gen/index.js" && context.parentURL?.endsWith("/@kubernetes/client-node/dist/config.js"))
    return { url: GEN, shortCircuit: true };
  return next(specifier, context);
}
