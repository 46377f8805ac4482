// BpfError helpers shared by the addon wrapper and FakeMap (which must fail the same way).
import { constants as osConstants } from "node:os";
import type { BpfError } from "./types.js";

const errnoNumbers = osConstants.errno as Record<string, number>;

/** A BpfError like the addon throws: message "<op>: <text> (<code>)". */
export function bpfError(op: string, code: string, detail?: string): BpfError {
  const errno = code === "ENOTSUPP" ? 524 : (errnoNumbers[code] ?? 0);
  const e = new Error(`${op}: ${detail ?? "failed"} (${code})`) as BpfError;
  e.code = code;
  e.errno = errno;
  e.op = op;
  return e;
}

export function isBpfError(e: unknown): e is BpfError {
  return (
    e instanceof Error &&
    typeof (e as BpfError).code === "string" &&
    typeof (e as BpfError).errno === "number" &&
    typeof (e as BpfError).op === "string"
  );
}

/** True when e is a BpfError with this errno name. */
export function hasErrno(e: unknown, code: string): boolean {
  return isBpfError(e) && e.code === code;
}
