// Bounded-frequency runner in the spirit of kube-proxy's: a requested run happens as soon as
// the minimum interval since the last run allows; requests meanwhile coalesce into one run;
// a periodic run happens at least every maxInterval; a failed run is retried with backoff, and
// requests arriving meanwhile wait for that backoff too (they cannot make a failing write retry
// faster: the next run includes their changes anyway).
import { log } from "../log.js";

export interface SyncRunnerOptions {
  minIntervalMs: number;
  maxIntervalMs: number;
  /** First retry delay after a failure; doubles up to maxIntervalMs. */
  retryMs?: number;
}

export class SyncRunner {
  private timer: NodeJS.Timeout | undefined;
  private lastRun = 0;
  private running = false;
  private pending = false;
  private stopped = false;
  private failures = 0;
  /** After a failure: no run before this time (ms epoch). */
  private notBefore = 0;

  constructor(
    private readonly fn: () => Promise<void>,
    private readonly opts: SyncRunnerOptions,
  ) {}

  /** Asks for a run; several asks before it happens make one run. */
  request(): void {
    if (this.stopped) return;
    if (this.running) {
      this.pending = true;
      return;
    }
    const at = Math.max(this.lastRun + this.opts.minIntervalMs, this.notBefore);
    this.schedule(Math.max(0, at - Date.now()));
  }

  private schedule(ms: number): void {
    if (this.stopped) return;
    if (this.timer) clearTimeout(this.timer);
    this.timer = setTimeout(() => void this.run(), ms);
  }

  private async run(): Promise<void> {
    this.timer = undefined;
    this.running = true;
    this.pending = false;
    this.lastRun = Date.now();
    let next = this.opts.maxIntervalMs;
    try {
      await this.fn();
      this.failures = 0;
      this.notBefore = 0;
    } catch (err) {
      this.failures++;
      next = Math.min(this.opts.maxIntervalMs, (this.opts.retryMs ?? 1000) * 2 ** (this.failures - 1));
      this.notBefore = Date.now() + next;
      log.error("sync failed; will retry", { error: (err as Error).message, retryInMs: next, failures: this.failures });
    } finally {
      this.running = false;
    }
    if (this.pending) this.request();
    else this.schedule(next);
  }

  /** Consecutive failed runs (0 after a success). */
  get consecutiveFailures(): number {
    return this.failures;
  }

  stop(): void {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
  }
}
