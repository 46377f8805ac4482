// Runs bpfproxy itself inside a lab node namespace, as a DaemonSet pod would run on a node:
// the daemon, `status` and `cleanup`, all through the real CLI. Used by the demo and the
// end-to-end tests.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { ChildProcess } from "node:child_process";
import * as native from "../native/index.js";
import { packagePath } from "../paths.js";
import type { Lab } from "./netns.js";
import type { DataplaneStatus } from "../dataplane/types.js";

export function cliCommand(): string[] {
  return [process.execPath, packagePath("dist/cli.js")];
}

/**
 * A bpffs of our own outside /sys (`ip netns exec` remounts /sys, so pins there would not be
 * shared between the daemon and `status`). Mounted in this mount namespace, which the
 * namespaced processes inherit.
 */
export class PrivateBpffs {
  private constructor(readonly path: string) {}

  static create(tag: string): PrivateBpffs {
    const base = mkdtempSync(join(tmpdir(), `bpfproxy-${tag}-`));
    native.mountBpffs(base);
    return new PrivateBpffs(base);
  }

  release(): void {
    try {
      native.umount(this.path);
    } catch {
      // already unmounted
    }
    rmSync(this.path, { recursive: true, force: true });
  }
}

export interface ProxyNodeOptions {
  /** Standalone manifest folder; or kubeconfig for the Kubernetes API. */
  manifestDir?: string;
  kubeconfig?: string;
  bpffs: string;
  podInterfaces?: string[];
  devices?: string[];
  clusterCIDRs?: string[];
  extraArgs?: string[];
  /** How long start() waits for the first status; default 15000 (slower machines, e.g. emulated VMs, need more). */
  startTimeoutMs?: number;
  /** Runs the daemon under this command prefix (e.g. setpriv with a reduced capability set). */
  wrapper?: string[];
}

export class ProxyNode {
  private output = "";
  private exited = false;

  private constructor(
    private readonly lab: Lab,
    readonly node: string,
    readonly bpffs: string,
    readonly child: ChildProcess,
  ) {
    child.stdout?.setEncoding("utf8").on("data", (d: string) => (this.output += d));
    child.stderr?.setEncoding("utf8").on("data", (d: string) => (this.output += d));
    child.once("exit", () => (this.exited = true));
  }

  /** Starts `bpfproxy run` in the node's namespace and waits until its maps are pinned. */
  static async start(lab: Lab, node: string, o: ProxyNodeOptions): Promise<ProxyNode> {
    const args = [
      ...(o.wrapper ?? []),
      ...cliCommand(),
      "run",
      ...(o.kubeconfig !== undefined ? ["--kubeconfig", o.kubeconfig] : ["--source", `dir:${o.manifestDir}`]),
      "--hostname-override",
      node,
      "--bpffs",
      o.bpffs,
      "--pod-interfaces",
      (o.podInterfaces ?? ["lxc*"]).join(","),
      "--devices",
      (o.devices ?? ["eth0"]).join(","),
      "--cluster-cidr",
      (o.clusterCIDRs ?? ["10.244.0.0/16"]).join(","),
      "--v",
      "1",
      ...(o.extraArgs ?? []),
    ];
    const p = new ProxyNode(lab, node, o.bpffs, lab.spawn(node, args));
    await p.waitForStatus(() => true, o.startTimeoutMs ?? 15_000);
    return p;
  }

  get logs(): string {
    return this.output;
  }

  async status(): Promise<DataplaneStatus> {
    // Generous: under software emulation (the VM suite) on a loaded host the CLI's start-up alone took 6-11 s.
    const r = await this.lab.exec(this.node, [...cliCommand(), "status", "--bpffs", this.bpffs, "-o", "json"], {
      timeoutMs: 60_000,
    });
    if (r.code !== 0) throw new Error(`bpfproxy status failed: ${r.stderr.trim()}`);
    return JSON.parse(r.stdout) as DataplaneStatus;
  }

  async statusTable(): Promise<string> {
    return this.lab.run(this.node, [...cliCommand(), "status", "--bpffs", this.bpffs], { timeoutMs: 60_000 });
  }

  /** Polls status until pred holds; bounded. */
  async waitForStatus(pred: (s: DataplaneStatus) => boolean, timeoutMs = 5000): Promise<DataplaneStatus> {
    const deadline = Date.now() + timeoutMs;
    let last: unknown;
    for (;;) {
      if (this.exited) throw new Error(`bpfproxy on ${this.node} exited:\n${this.output}`);
      try {
        const st = await this.status();
        if (pred(st)) return st;
        last = st.frontends;
      } catch (err) {
        last = (err as Error).message;
      }
      if (Date.now() > deadline)
        throw new Error(
          `bpfproxy on ${this.node}: condition not met after ${timeoutMs} ms; last: ${JSON.stringify(last)}\nlogs:\n${this.output}`,
        );
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  /** Waits (bounded) until the daemon's output matches `re`: for steps that finish after status first answers. */
  async waitForLog(re: RegExp, timeoutMs = 10_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!re.test(this.output)) {
      if (this.exited) throw new Error(`bpfproxy on ${this.node} exited:\n${this.output}`);
      if (Date.now() > deadline)
        throw new Error(`bpfproxy on ${this.node}: no log line ${re} after ${timeoutMs} ms\nlogs:\n${this.output}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  /** SIGTERM and wait (bounded) for the daemon to exit; the data plane stays. */
  async stop(timeoutMs = 5000): Promise<void> {
    if (this.exited) return;
    const done = new Promise<void>((resolve) => this.child.once("exit", () => resolve()));
    // The daemon runs under `ip netns exec`, which execs it: the pid is the daemon's.
    this.child.kill("SIGTERM");
    const timer = setTimeout(() => this.child.kill("SIGKILL"), timeoutMs);
    await done;
    clearTimeout(timer);
  }

  /** `bpfproxy cleanup` in the node namespace. */
  async cleanup(): Promise<string> {
    // A bound as status()'s: in the VM suite on a loaded host the CLI's start-up alone passed 15 s.
    return this.lab.run(this.node, [...cliCommand(), "cleanup", "--bpffs", this.bpffs], { timeoutMs: 60_000 });
  }
}

export interface LabParts {
  /** Closed first (e.g. taps: their agents hold lab namespaces). */
  closers?: Array<{ close(): void } | undefined>;
  proxies?: Array<ProxyNode | undefined>;
  lab?: Lab;
  bpffs?: Array<PrivateBpffs | undefined>;
  /** Temporary folders (manifests) removed last. */
  dirs?: Array<string | undefined>;
}

/**
 * Tears down what an end-to-end file built, in order: closers, each daemon stopped and its data plane cleaned
 * up, the lab, the private bpffs mounts, the folders. Every step runs even when an earlier one failed (a
 * namespace that would not go must not leave a mount behind); the lab's error is rethrown at the end.
 * A daemon's stop or cleanup failing is not: releasing its private bpffs afterwards removes its pins anyway.
 * Parts that were never made (undefined) are skipped, so after() can pass whatever before() got to.
 */
export async function teardownLab(parts: LabParts): Promise<void> {
  const errors: unknown[] = [];
  for (const c of parts.closers ?? []) {
    try {
      c?.close();
    } catch (e) {
      errors.push(e);
    }
  }
  for (const p of parts.proxies ?? []) {
    await p?.stop().catch(() => undefined);
    await p?.cleanup().catch(() => undefined);
  }
  await parts.lab?.destroy().catch((e: unknown) => errors.push(e));
  for (const b of parts.bpffs ?? []) b?.release();
  for (const d of parts.dirs ?? []) if (d !== undefined) rmSync(d, { recursive: true, force: true });
  if (errors.length === 1) throw errors[0];
  if (errors.length > 1) throw new AggregateError(errors, "lab teardown failed");
}
