// Backend weights (bpfproxy.io/backend-weights, docs/leastconn.md) as service-map slots. A weighted backend
// takes a run of consecutive slots, as many as its weight after dividing every weight by their greatest
// common divisor, so a uniformly random slot (lb.h, lb6.h, the socket program) is a weighted random backend
// with no change to BPF. Each slot of a run carries the run (count: its length, affinity_timeout: its first
// slot, 0-based; master-only fields otherwise): least-conn (leastconn.h) draws its second candidate outside
// the first's run and compares active flows per slot. Unweighted frontends keep one slot per backend with
// both fields 0, the encoding from before weights.

/** Slots one weighted frontend may take (unless it has more backends with a weight above 0). */
export const MAX_WEIGHTED_SLOTS = 1024;

const gcd = (a: number, b: number): number => {
  while (b) [a, b] = [b, a % b];
  return a;
};

/**
 * Each backend's number of slots for these weights (0 for weight 0), or undefined when every weight is 1 (one slot
 * each, the unweighted encoding). Exact in ratio when the reduced weights add up to at most `bound` (or the
 * number of backends with a weight, if larger); else scaled to about `bound` slots, every backend with a weight
 * keeping at least one.
 */
export function slotRuns(weights: readonly number[], bound = MAX_WEIGHTED_SLOTS): number[] | undefined {
  if (weights.every((w) => w === 1)) return undefined;
  let g = 0;
  let positive = 0;
  for (const w of weights) {
    if (w === 0) continue;
    g = gcd(g, w);
    positive++;
  }
  if (positive === 0) return weights.map(() => 0);
  const runs = weights.map((w) => w / g);
  const total = runs.reduce((a, b) => a + b, 0);
  const limit = Math.max(bound, positive);
  if (total <= limit) return runs;
  const scaled = runs.map((r) => (r === 0 ? 0 : Math.max(1, Math.round((r * limit) / total))));
  // The slot number is 16 bits: past it, one slot each (no weights) rather than no service.
  return scaled.reduce((a, b) => a + b, 0) <= 0xffff ? scaled : weights.map((w) => (w > 0 ? 1 : 0));
}
