// Files shipped with the package (BPF objects, addon, compiled tools), found relative to
// this module: src/paths.ts (tsx) and dist/paths.js (compiled) both sit one level below the root.
import { fileURLToPath } from "node:url";
import { dirname, join } from "node:path";

export const PACKAGE_ROOT = join(dirname(fileURLToPath(import.meta.url)), "..");

export function packagePath(rel: string): string {
  return join(PACKAGE_ROOT, rel);
}
