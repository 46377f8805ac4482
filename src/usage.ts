// Errors in what the user typed, and parsing of the value forms kube-proxy's flags use.

/** A mistake in flags or arguments: printed with the usage text, exit code 2. */
export class UsageError extends Error {}

/** Go-style durations as kube-proxy takes them: "500ms", "1s", "1m30s". */
export function durationMs(s: string): number {
  const re = /(\d+(?:\.\d+)?)(ms|s|m|h)/g;
  let total = 0;
  let consumed = 0;
  for (const m of s.matchAll(re)) {
    total += Number(m[1]) * { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[m[2] as "ms" | "s" | "m" | "h"];
    consumed += m[0].length;
  }
  if (consumed !== s.length || s.length === 0) throw new UsageError(`not a duration: ${JSON.stringify(s)}`);
  return total;
}

