// Small statistics for timings: the benchmark harness and the demo take medians of the same kind.

/** The q-quantile of xs (0 ≤ q ≤ 1), interpolating between neighbours; xs is not modified. */
export function quantile(xs: number[], q: number): number {
  const s = [...xs].sort((a, b) => a - b);
  const pos = (s.length - 1) * q, lo = Math.floor(pos), hi = Math.ceil(pos);
  return s[lo] + (s[hi] - s[lo]) * (pos - lo);
}

export const median = (xs: number[]): number => quantile(xs, 0.5);
