// `--mode auto`: asks the kernel (libbpf's feature probes, through the addon) for every program type, map
// type and helper the BPF data plane uses. All there → bpf; anything missing → ipvs, with the reason.
import { mkdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import * as native from "../native/index.js";

const PROG = { SCHED_CLS: 3 } as const;

/** Program types the data plane loads (tc programs on pod interfaces and devices). */
const PROG_TYPES: Record<string, number> = { "sched_cls (tc)": PROG.SCHED_CLS };
/** Map types declared in bpf/lib/*.h. */
const MAP_TYPES: Record<string, number> = { hash: 1, array: 2, percpu_array: 6, lru_hash: 9 };
/** Helpers the tc programs call (bpf/*.c, bpf/lib/*.h), checked from a tc program. */
const TC_HELPERS: Record<string, number> = {
  map_lookup_elem: 1,
  map_update_elem: 2,
  ktime_get_ns: 5,
  get_prandom_u32: 7,
  skb_store_bytes: 9,
  l3_csum_replace: 10,
  l4_csum_replace: 11,
  redirect: 23,
  skb_load_bytes: 26,
  csum_diff: 28,
  skb_change_tail: 38,
  skb_pull_data: 39,
};

/** Set to 1 to make BPF look unavailable (tests of the automatic choice). */
export const DISABLE_BPF_ENV = "BPFPROXY_TEST_NO_BPF";

export interface BpfProbe {
  ok: boolean;
  /** What is missing (empty when ok). */
  missing: string[];
}

export function probeBpf(): BpfProbe {
  if (process.env[DISABLE_BPF_ENV] === "1") return { ok: false, missing: [`BPF disabled by ${DISABLE_BPF_ENV}=1`] };
  const missing: string[] = [];
  const check = (what: string, r: () => number) => {
    let v: number;
    try {
      v = r();
    } catch (err) {
      missing.push(`${what} (${(err as Error).message})`);
      return;
    }
    if (v !== 1) missing.push(v < 0 ? `${what} (probe failed: errno ${-v})` : what);
  };
  for (const [n, t] of Object.entries(PROG_TYPES)) check(`program type ${n}`, () => native.probeProgType(t));
  for (const [n, t] of Object.entries(MAP_TYPES)) check(`map type ${n}`, () => native.probeMapType(t));
  for (const [n, h] of Object.entries(TC_HELPERS))
    check(`helper bpf_${n} in tc programs`, () => native.probeHelper(PROG.SCHED_CLS, h));
  return { ok: missing.length === 0, missing };
}

export interface ModeChoice {
  mode: "bpf" | "ipvs";
  reason: string;
}

/** Resolves the configured mode; `auto` picks bpf when the kernel has everything it needs. */
export function chooseMode(configured: "auto" | "bpf" | "ipvs", probe: () => BpfProbe = probeBpf): ModeChoice {
  if (configured !== "auto") return { mode: configured, reason: `mode ${configured} configured` };
  const p = probe();
  if (p.ok) return { mode: "bpf", reason: "auto: the kernel has every BPF feature bpfproxy needs" };
  return { mode: "ipvs", reason: `auto: BPF unavailable (${p.missing.join("; ")})` };
}

/** Where the daemon records the mode it chose and why, per network namespace, for `bpfproxy status`. */
export function modeFile(): string {
  let ino = 0;
  try {
    ino = statSync("/proc/self/ns/net").ino;
  } catch {
    /* no procfs: one file for all */
  }
  return `/run/bpfproxy/mode-netns-${ino}.json`;
}

export function saveModeChoice(c: ModeChoice): void {
  try {
    mkdirSync("/run/bpfproxy", { recursive: true });
    writeFileSync(modeFile(), JSON.stringify(c) + "\n");
  } catch {
    /* status then shows no reason */
  }
}

export function readModeChoice(): ModeChoice | undefined {
  try {
    return JSON.parse(readFileSync(modeFile(), "utf8")) as ModeChoice;
  } catch {
    return undefined;
  }
}

export function forgetModeChoice(): void {
  rmSync(modeFile(), { force: true });
}
