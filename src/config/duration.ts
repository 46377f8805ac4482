// Go durations (metav1.Duration in the file, and the duration flags): parsed to and printed from milliseconds.
const UNIT_MS: Record<string, number> = {
  ns: 1e-6,
  us: 1e-3,
  "\u00b5s": 1e-3, // µ (micro sign)
  "\u03bcs": 1e-3, // μ (Greek mu)
  ms: 1,
  s: 1000,
  m: 60_000,
  h: 3_600_000,
};

/**
 * Parses a Go duration (time.ParseDuration) into milliseconds: "300ms", "1.5h", "2h45m", "1m0s",
 * "1h2m3.5s", "-1.5s", ".5s", "0". Units ns, us (µs, μs), ms, s, m, h; every number needs a unit
 * except a lone "0". Throws an Error saying what is wrong.
 */
export function parseDuration(input: string): number {
  const bad = (why: string) => new Error(`invalid duration ${JSON.stringify(input)}: ${why}`);
  let s = input;
  let sign = 1;
  if (s.startsWith("-") || s.startsWith("+")) {
    if (s[0] === "-") sign = -1;
    s = s.slice(1);
  }
  if (s === "0") return 0;
  if (s === "") throw bad("empty");
  let total = 0;
  const re = /^(\d*)(?:\.(\d*))?([a-zA-Z\u00b5\u03bc]+)/;
  while (s !== "") {
    const m = re.exec(s);
    if (!m) throw bad(/^[\d.]/.test(s) ? "missing unit (use ns, us, ms, s, m or h)" : "expected a number");
    const [whole, intPart, fracPart, unit] = m;
    if (intPart === "" && (fracPart === undefined || fracPart === "")) throw bad("expected a number");
    const perUnit = UNIT_MS[unit!]; // the unit group is not optional
    if (perUnit === undefined) throw bad(`unknown unit ${JSON.stringify(unit)} (use ns, us, ms, s, m or h)`);
    total += Number(`${intPart || "0"}.${fracPart || "0"}`) * perUnit;
    s = s.slice(whole.length);
  }
  if (!Number.isFinite(total)) throw bad("out of range");
  return sign * total;
}

/** Formats milliseconds the way Go prints a time.Duration ("1m0s", "1.5s", "500ms", "0s"). */
export function formatDuration(ms: number): string {
  if (ms === 0) return "0s";
  const neg = ms < 0;
  let rest = Math.abs(ms);
  let out: string;
  if (rest < 1000) {
    out = `${+rest.toFixed(6)}ms`;
  } else {
    const h = Math.floor(rest / 3_600_000);
    rest -= h * 3_600_000;
    const m = Math.floor(rest / 60_000);
    rest -= m * 60_000;
    const sec = `${+(rest / 1000).toFixed(9)}s`;
    out = h > 0 ? `${h}h${m}m${sec}` : m > 0 ? `${m}m${sec}` : sec;
  }
  return neg ? `-${out}` : out;
}
