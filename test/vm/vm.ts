// Runs a script inside a VM booted from Debian's generic kernel (test/vm/setup.sh, test/vm/run.sh) and
// collects what it left in its results folder. Throws, with the console's tail, when the VM could not be
// prepared or started or the script never finished: a missing VM is a failure, never a skip.
import { spawn } from "node:child_process";
import { mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

export const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), "../..");

export interface VmRun {
  /** Exit status of the script inside the VM. */
  exitStatus: number;
  /** Serial console (kernel messages, the script's stdout/stderr). */
  console: string;
  /** Files the script wrote into its results folder (name → content). */
  files: Map<string, string>;
  /** Seconds from starting qemu until the guest ran the script. */
  bootSeconds: number;
  /** Seconds for the whole run (setup, boot, script, power-off). */
  totalSeconds: number;
}

/** `script` is a path relative to the repository (the VM sees this machine's root read-only); `inputs` are
 * files placed in the results folder before boot (the script finds them in $VM_RESULTS). */
export async function runInVm(
  script: string,
  opts: { timeoutSeconds?: number; env?: Record<string, string>; inputs?: Record<string, string> } = {},
): Promise<VmRun> {
  const timeout = opts.timeoutSeconds ?? 600;
  const results = join(repoRoot, ".vm-cache", `results-${process.pid}-${Date.now()}`);
  rmSync(results, { recursive: true, force: true });
  mkdirSync(results, { recursive: true });
  for (const [name, text] of Object.entries(opts.inputs ?? {})) writeFileSync(join(results, name), text);
  const t0 = Date.now();
  let bootAt = 0;
  let out = "";
  const code = await new Promise<number>((res, rej) => {
    const child = spawn("bash", [join(repoRoot, "test/vm/run.sh"), join(repoRoot, script), results, String(timeout)], {
      stdio: ["ignore", "pipe", "pipe"],
      env: { ...process.env, ...opts.env },
    });
    const onData = (d: Buffer): void => {
      out += d.toString("utf8");
      if (!bootAt && out.includes("VMINIT: running")) bootAt = Date.now();
    };
    child.stdout.on("data", onData);
    child.stderr.on("data", onData);
    // run.sh bounds qemu with `timeout`; this is only a backstop if that machinery hangs itself.
    const guard = setTimeout(() => child.kill("SIGKILL"), (timeout + 900) * 1000);
    child.once("error", (e) => {
      clearTimeout(guard);
      rej(e);
    });
    child.once("exit", (c, sig) => {
      clearTimeout(guard);
      res(c ?? (sig ? 128 : 1));
    });
  });
  const files = new Map<string, string>();
  for (const f of readdirSync(results)) files.set(f, readFileSync(join(results, f), "utf8"));
  rmSync(results, { recursive: true, force: true });
  const tail = out.split("\n").slice(-40).join("\n");
  if (!files.has("exit-status")) {
    throw new Error(
      `vm: the script did not finish inside the VM (runner exit ${code}${code === 124 ? ", timed out" : ""}); console tail:\n${tail}`,
    );
  }
  return {
    exitStatus: Number(files.get("exit-status")!.trim()),
    console: out,
    files,
    bootSeconds: bootAt ? (bootAt - t0) / 1000 : NaN,
    totalSeconds: (Date.now() - t0) / 1000,
  };
}
