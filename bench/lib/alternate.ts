/**
 * Alternating in-process measurement, for fixtures that time our code and its baseline in the
 * same process: each side is warmed up, then the two take turns so drift affects both alike.
 *
 * @module
 */

/**
 * Calls `ours` and `baseline` alternately: 3 times each to warm up (JIT), then `rounds` times
 * each, recording what every measured call returns (ours first in each round).
 */
export function alternateRuns(
  ours: () => number,
  baseline: () => number,
  rounds: number,
): { oursRuns: number[]; baselineRuns: number[] } {
  for (let index = 0; index < 3; index++) {
    ours();
    baseline();
  }
  const oursRuns: number[] = [];
  const baselineRuns: number[] = [];
  for (let round = 0; round < rounds; round++) {
    oursRuns.push(ours());
    baselineRuns.push(baseline());
  }
  return { oursRuns, baselineRuns };
}
