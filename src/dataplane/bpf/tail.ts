// The IPv6 and DSR programs the tc entries tail-call (bpf/lib/tail.h): their slots in bpx_tail_v1 are filled
// right after load, before any program is attached. The map is pinned, so a restarted daemon's new programs
// replace an earlier run's in place.
import type * as native from "../../native/index.js";
import { MAP_NAMES, TAIL_CALL_PROGRAMS, u32Key } from "./abi.js";

/** Writes every tail-called program (IPv6, DSR) of `obj` into its slot of the tail-call map. */
export function fillTailCalls(obj: native.BpfObject): void {
  const slots = obj.map(MAP_NAMES.tailCalls);
  for (const [slot, name] of Object.entries(TAIL_CALL_PROGRAMS))
    slots.update(u32Key.encode(Number(slot)), u32Key.encode(obj.program(name).fd));
}
