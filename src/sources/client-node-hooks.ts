// Module resolve hook (node:module register), installed by client-node.ts: when client-node's config.js imports
// its generated code (./gen/index.js: every API client and model), it gets client-node-gen.ts instead, which
// holds the two names config.js uses. Every other import resolves as usual.
interface ResolveContext {
  parentURL?: string;
}
type NextResolve = (specifier: string, context: ResolveContext) => Promise<{ url: string }>;

// Resolved by the next hook in line (a TypeScript loader maps .js to .ts in tests), not short-circuited.
const GEN = new URL("./client-node-gen.js", import.meta.url).href;

export function resolve(specifier: string, context: ResolveContext, next: NextResolve): Promise<{ url: string }> {
  if (specifier === "./gen/index.js" && context.parentURL?.endsWith("/@kubernetes/client-node/dist/config.js"))
    return next(GEN, context);
  return next(specifier, context);
}
