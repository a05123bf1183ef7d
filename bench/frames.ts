/**
 * frames: encode + decode throughput of the wire frames (length prefix + UTF-8 JSON) against
 * `JSON.stringify` + `JSON.parse` of the same messages. In a child process of its own.
 *
 * @module
 */

import { Child, stopAll } from './lib/child.js';
import type { BenchContext, BenchResult } from './lib/shared.js';
import { median, medianRatio, round } from './lib/stats.js';

export async function frames(context: BenchContext): Promise<BenchResult> {
  const rounds = context.quick ? 3 : 15;
  const child = Child.start(
    context.build,
    'frames-child',
    { rounds, opsPerSlice: context.quick ? 40_000 : 100_000 },
    { label: 'frames', profileDir: context.profileDir },
  );
  try {
    const result = await child.next<{
      type: string;
      oursRuns: number[];
      baselineRuns: number[];
      averageBytes: number;
    }>('result', 120_000);
    const ratio = medianRatio(result.oursRuns, result.baselineRuns);
    return {
      name: 'frames',
      ours: round(median(result.oursRuns)),
      baseline: round(median(result.baselineRuns)),
      ratio: round(ratio, 2),
      unit: 'messages/s (encode + decode)',
      runs: rounds,
      target: '≥ 0.8',
      checked: `ratio ${ratio.toFixed(2)}`,
      met: ratio >= 0.8,
      baselineIs: 'JSON.stringify + JSON.parse of the same messages',
      details: { averageMessageBytes: Math.round(result.averageBytes) },
      lost: 0,
    };
  } finally {
    await stopAll([child]);
  }
}
