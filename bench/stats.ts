// Pure helpers of the benchmark harness (no kernel, no processes): percentiles, the Markdown tables the
// suites print, and the parser of ApacheBench's output. Unit-tested in test/bench-harness.test.ts.

export type Row = Record<string, number | string | null>;

/** The p-quantile (0 ≤ p ≤ 1) of xs by the nearest-rank method: the smallest value with at least p·n values ≤ it. */
export function pct(xs: readonly number[], p: number): number {
  if (xs.length === 0) throw new Error("pct of no values");
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil(p * s.length) - 1))]!;
}

/** A table cell: null is a baseline that was given up on, integers and values ≥ 100 without decimals. */
export function fmt(v: number | string | null | undefined): string {
  if (v === null || v === undefined) return "timeout";
  if (typeof v !== "number") return v;
  if (Number.isInteger(v) || Math.abs(v) >= 100) return v.toFixed(0);
  if (Math.abs(v) < 1) return v.toFixed(2);
  return v.toFixed(1);
}

/** A Markdown table of rows, columns in the order of the first row's keys. */
export function markdownTable(rows: readonly Row[]): string {
  const cols = Object.keys(rows[0] ?? {});
  const lines = [`| ${cols.join(" | ")} |`, `|${cols.map(() => "---").join("|")}|`];
  for (const r of rows) lines.push(`| ${cols.map((c) => fmt(r[c])).join(" | ")} |`);
  return lines.join("\n");
}

export interface AbResult {
  complete: number;
  failed: number;
  non2xx: number;
  seconds: number;
  /** Connections per second: ab without -k opens one connection per request. */
  perSec: number;
  /** Connect + request + response + close, in milliseconds, from ab's -e percentile file. */
  p50Ms: number;
  p99Ms: number;
}

/**
 * ApacheBench's summary (stdout) and its `-e` CSV ("Percentage served,Time in ms" then "p,ms" per percent):
 * the CSV carries each percentile with microsecond resolution, where the summary rounds to whole ms.
 */
export function parseAb(stdout: string, csv: string): AbResult {
  const num = (re: RegExp, what: string, dflt?: number): number => {
    const m = re.exec(stdout);
    if (!m) {
      if (dflt !== undefined) return dflt;
      throw new Error(`ab output has no ${what}: ${stdout.slice(0, 400)}`);
    }
    return Number(m[1]);
  };
  const perc = new Map<number, number>();
  for (const line of csv.split("\n")) {
    const m = /^(\d+),([\d.]+)$/.exec(line.trim());
    if (m) perc.set(Number(m[1]), Number(m[2]));
  }
  if (!perc.has(50) || !perc.has(99) || !perc.has(100))
    throw new Error(`ab percentile file lacks 50, 99 or 100: ${csv.slice(0, 200)}`);
  // ab reads one past its sorted samples for the top percentiles of a small run (index 0.5 + n·p/100 = n):
  // such a value is garbage, larger than the longest request.
  if (perc.get(99)! > perc.get(100)! || perc.get(50)! > perc.get(99)!)
    throw new Error(
      `ab percentiles out of order (too few requests for a p99?): 50→${perc.get(50)} 99→${perc.get(99)} 100→${perc.get(100)}`,
    );
  return {
    complete: num(/Complete requests:\s+(\d+)/, "Complete requests"),
    failed: num(/Failed requests:\s+(\d+)/, "Failed requests"),
    non2xx: num(/Non-2xx responses:\s+(\d+)/, "Non-2xx responses", 0),
    seconds: num(/Time taken for tests:\s+([\d.]+) seconds/, "Time taken"),
    perSec: num(/Requests per second:\s+([\d.]+)/, "Requests per second"),
    p50Ms: perc.get(50)!,
    p99Ms: perc.get(99)!,
  };
}

/** Of several runs, the one with the median rate (the lower middle one for an even count). */
export function medianRun(runs: readonly AbResult[]): AbResult {
  if (runs.length === 0) throw new Error("no runs");
  return [...runs].sort((a, b) => a.perSec - b.perSec)[Math.floor((runs.length - 1) / 2)]!;
}
