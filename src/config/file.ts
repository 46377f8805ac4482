// Reading a config file: YAML or JSON text → schema check → the settings it gives (sections.ts).
import { readFile } from "node:fs/promises";
import { parse as parseYAML } from "yaml";
import { log } from "../log.js";
import { CONFIG_KIND } from "./defaults.js";
import { ConfigError, formatPath, throwProblems, type Problems } from "./errors.js";
import { mergeConfig } from "./merge.js";
import { kubeProxyConfigurationSchema } from "./schema.js";
import { toPartial } from "./sections.js";
import type { EffectiveConfig, ParsedConfigFile } from "./types.js";

/**
 * Parses and validates the text of a config file (YAML or JSON). Throws ConfigError naming every bad
 * field path. `origin` names the file in messages.
 */
export function parseConfigText(text: string, origin = "config"): ParsedConfigFile {
  let raw: unknown;
  try {
    raw = parseYAML(text, { uniqueKeys: true });
  } catch (err) {
    throw new ConfigError(`invalid configuration in ${origin}: not valid YAML/JSON: ${(err as Error).message}`);
  }
  if (raw === null || typeof raw !== "object" || Array.isArray(raw)) {
    throw new ConfigError(`invalid configuration in ${origin}: expected a ${CONFIG_KIND} object`);
  }
  const r = kubeProxyConfigurationSchema.safeParse(raw);
  if (!r.success) {
    const problems: Problems = [];
    for (const issue of r.error.issues) {
      if (issue.code === "unrecognized_keys") {
        for (const k of issue.keys) problems.push({ path: formatPath([...issue.path, k]), reason: "unknown field" });
      } else {
        problems.push({ path: formatPath(issue.path), reason: issue.message });
      }
    }
    throwProblems(origin, problems);
  }
  return toPartial(r.data, origin);
}

/** Reads and validates a config file; logs its warnings. Returns only what the file sets. */
export async function readConfigFile(path: string): Promise<ParsedConfigFile> {
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (err) {
    throw new ConfigError(`cannot read config file ${path}: ${(err as Error).message}`);
  }
  const parsed = parseConfigText(text, path);
  for (const w of parsed.warnings) log.warn(`config ${path}: ${w}`);
  return parsed;
}

/** Reads a config file and fills every unset field with its default (no flags). */
export async function loadConfigFile(path: string): Promise<EffectiveConfig> {
  return mergeConfig((await readConfigFile(path)).config, {});
}
