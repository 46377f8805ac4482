// The IPv6 and DSR programs the entries tail-call (bpf/lib/tail.h): the tc entries' in bpx_tail_v1, XDP's in
// bpx_xdp_tail_v1 (a PROG_ARRAY holds one program type). Their slots are filled right after load, before
// any program is attached. The maps are pinned, so a restarted daemon's new programs replace an earlier
// run's in place.
import type * as native from "../../native/index.js";
import { MAP_NAMES, TAIL_CALL_PROGRAMS, XDP_TAIL_CALL_PROGRAMS, u32Key } from "./abi.js";

/** Writes every tail-called program (IPv6, DSR) of `obj` into its slot of its tail-call map. */
export function fillTailCalls(obj: native.BpfObject): void {
  for (const [map, programs] of [
    [MAP_NAMES.tailCalls, TAIL_CALL_PROGRAMS],
    [MAP_NAMES.xdpTailCalls, XDP_TAIL_CALL_PROGRAMS],
  ] as const) {
    const slots = obj.map(map);
    for (const [slot, name] of Object.entries(programs))
      slots.update(u32Key.encode(Number(slot)), u32Key.encode(obj.program(name).fd));
  }
}
