// Leveled logging in the spirit of klog: --v N sets verbosity, errors always print.
// Lines go to stderr so that command output on stdout stays machine-readable.

let verbosity = 0;

export function setVerbosity(v: number): void {
  verbosity = v;
}

function emit(level: string, msg: string, fields?: Record<string, unknown>): void {
  const extra = fields
    ? " " +
      Object.entries(fields)
        .map(([k, v]) => `${k}=${JSON.stringify(v)}`)
        .join(" ")
    : "";
  process.stderr.write(`${level}${new Date().toISOString()} ${msg}${extra}\n`);
}

export const log = {
  info(msg: string, fields?: Record<string, unknown>): void {
    emit("I", msg, fields);
  },
  warn(msg: string, fields?: Record<string, unknown>): void {
    emit("W", msg, fields);
  },
  error(msg: string, fields?: Record<string, unknown>): void {
    emit("E", msg, fields);
  },
  /** Printed only at --v >= level. */
  v(level: number, msg: string, fields?: Record<string, unknown>): void {
    if (verbosity >= level) emit("I", msg, fields);
  },
};
