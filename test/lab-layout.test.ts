// docs/lab.md says the lab ships in dist/ because `bpfproxy demo` needs it, and that the daemon never loads it.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import { join, relative } from "node:path";
import { packagePath } from "../src/paths.js";

const SRC = packagePath("src");
const IMPORT = /\b(?:from|import)\s*\(?\s*"([^"]+)"/g;

function sources(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((d) =>
    d.isDirectory() ? sources(join(dir, d.name)) : d.name.endsWith(".ts") ? [join(dir, d.name)] : [],
  );
}

test("only the demo imports the lab, and the CLI loads the demo only for `bpfproxy demo`", () => {
  const importers: string[] = [];
  for (const file of sources(SRC)) {
    const rel = relative(SRC, file);
    if (rel.startsWith("lab/")) continue;
    for (const [, spec] of readFileSync(file, "utf8").matchAll(IMPORT))
      if (/(^|\/)lab\//.test(spec!)) importers.push(rel);
  }
  assert.deepEqual([...new Set(importers)], ["demo.ts"]);

  const cli = readFileSync(join(SRC, "cli.ts"), "utf8");
  assert.doesNotMatch(cli, /^import .*demo\.js/m, "cli.ts must not import the demo statically");
  const at = cli.indexOf('await import("./demo.js")');
  assert.ok(at > 0, "cli.ts loads the demo with a dynamic import");
  assert.match(cli.slice(cli.lastIndexOf("case ", at), at), /^case "demo"/, "inside the demo command only");
});
