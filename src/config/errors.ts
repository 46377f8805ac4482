// A problem in the configuration, named by its field path; every check collects problems and throws them at once.

export type Problems = Array<{ path: string; reason: string }>;

/** A problem in the configuration (file or flags); the message names the field path and the reason. */
export class ConfigError extends Error {
  constructor(
    message: string,
    readonly problems: Problems = [],
  ) {
    super(message);
    this.name = "ConfigError";
  }
}

/** A zod issue path as the file spells it: "ipvs.excludeCIDRs[1]". */
export function formatPath(path: ReadonlyArray<PropertyKey>): string {
  let out = "";
  for (const p of path) {
    if (typeof p === "number") out += `[${p}]`;
    else out += out ? `.${String(p)}` : String(p);
  }
  return out || "(top level)";
}

export function throwProblems(origin: string, problems: Problems): never {
  const lines = problems.map((p) => `  ${p.path}: ${p.reason}`);
  throw new ConfigError(`invalid configuration in ${origin}:\n${lines.join("\n")}`, problems);
}
