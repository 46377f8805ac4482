// Link notifications: `ip -o monitor link` (iproute2) prints one line per RTM_NEWLINK/RTM_DELLINK
// of the current network namespace as the kernel sends it, so a new pod veth gets the programs
// within milliseconds of its creation, before the pod can send (a CNI still has to move the peer,
// address it and bring it up). If the monitor dies it is restarted with backoff; the daemon keeps
// a poll as well, so a missed notification is repaired within a second.
import { spawn, type ChildProcess } from "node:child_process";
import { createInterface } from "node:readline";
import { log } from "../log.js";

export interface LinkWatcher {
  stop(): void;
}

const RESTART_MIN_MS = 500;
const SETTLE_MS = 300;
const RESTART_MAX_MS = 30_000;

/** Calls onChange (coalesced to one call per burst of lines) whenever a link appears, changes or goes. */
export function watchLinks(
  onChange: () => void,
  command: readonly string[] = ["ip", "-o", "monitor", "link"],
): LinkWatcher {
  let child: ChildProcess | undefined;
  let stopped = false;
  let backoff = RESTART_MIN_MS;
  let restartTimer: NodeJS.Timeout | undefined;
  let queued = false;

  const notify = () => {
    if (queued) return;
    queued = true;
    setImmediate(() => {
      queued = false;
      if (!stopped) onChange();
    });
  };

  const start = () => {
    const c = spawn(command[0]!, command.slice(1), { stdio: ["ignore", "pipe", "pipe"] });
    // Links made between the spawn and the monitor's subscription send nothing: look once it surely listens.
    const settle = setTimeout(notify, SETTLE_MS);
    c.once("close", () => clearTimeout(settle));
    child = c;
    const startedAt = Date.now();
    createInterface({ input: c.stdout }).on("line", notify);
    c.stderr.setEncoding("utf8").on("data", (d: string) => log.warn("link monitor", { stderr: d.trim() }));
    c.once("error", (err) => log.warn("link monitor failed to start", { error: err.message }));
    c.once("close", (code, signal) => {
      if (stopped) return;
      if (Date.now() - startedAt > RESTART_MAX_MS) backoff = RESTART_MIN_MS;
      log.warn("link monitor exited; restarting", { code, signal, retryInMs: backoff });
      restartTimer = setTimeout(start, backoff);
      backoff = Math.min(backoff * 2, RESTART_MAX_MS);
      notify(); // links may have changed while nobody listened
    });
  };
  start();

  return {
    stop() {
      stopped = true;
      if (restartTimer) clearTimeout(restartTimer);
      child?.kill("SIGTERM");
    },
  };
}
