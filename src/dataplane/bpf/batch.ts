// Batch writes to a map: a small one goes straight to the kernel from the event loop, a big one to a
// libuv worker. Handing a write to a worker and back cost 5–12 ms now and then on a 2-core node (most of
// the one-change benchmark's tail), while writing a few hundred entries takes well under a millisecond;
// big writes (full syncs: 20 000-entry chunks) still leave the event loop free.
import type { MapHandle } from "../../native/index.js";

/** Entries up to which a batch is written on the event loop. */
export const SYNC_BATCH_MAX = 256;

export async function updateBatch(map: MapHandle, keys: Buffer, values: Buffer, count: number): Promise<void> {
  if (count <= SYNC_BATCH_MAX) map.updateBatch(keys, values, count);
  else await map.updateBatchAsync(keys, values, count);
}

/** Deletes the keys (absent ones are skipped); returns how many were deleted. */
export async function deleteBatch(map: MapHandle, keys: Buffer, count: number): Promise<number> {
  if (count <= SYNC_BATCH_MAX) return map.deleteBatch(keys, count);
  return map.deleteBatchAsync(keys, count);
}
