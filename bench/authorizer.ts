/**
 * authorizer: `tryUse()` on a live grant while 100,000 grants are held (ops/s), against a bare
 * `Map` get + set over the same keys; and the heap each grant retains. In a child process run
 * with --expose-gc.
 *
 * @module
 */

import { Child, stopAll } from './lib/child.js';
import type { BenchContext, BenchResult } from './lib/shared.js';
import { median, medianRatio, round } from './lib/stats.js';

const GRANTS = 100_000;

export async function authorizer(context: BenchContext): Promise<BenchResult> {
  const rounds = context.quick ? 3 : 15;
  const child = Child.start(
    context.build,
    'authorizer-child',
    { grants: GRANTS, rounds, opsPerSlice: context.quick ? 100_000 : 500_000 },
    { label: 'authorizer', nodeArgs: ['--expose-gc'], profileDir: context.profileDir },
  );
  try {
    const result = await child.next<{
      type: string;
      oursRuns: number[];
      baselineRuns: number[];
      bytesPerGrant: number;
      sessionBytes: number;
      mapBytesPerEntry: number;
      setupMs: number;
      missed: number;
    }>('result', 120_000);
    const ours = median(result.oursRuns);
    const baseline = median(result.baselineRuns);
    const ratio = medianRatio(result.oursRuns, result.baselineRuns);
    const opsMet = ours >= 1_000_000;
    const bytesMet = result.bytesPerGrant <= 400;
    return {
      name: 'authorizer',
      ours: round(ours),
      baseline: round(baseline),
      ratio: round(ratio, 2),
      unit: 'tryUse ops/s (100,000 grants held)',
      runs: rounds,
      target: '≥ 1,000,000 ops/s; ≤ 400 bytes per grant',
      checked: `${(ours / 1e6).toFixed(2)} M ops/s; ${Math.round(result.bytesPerGrant)} B/grant`,
      met: opsMet && bytesMet,
      baselineIs: 'a bare Map get + set over the same 100,000 session ids, same random order',
      details: {
        grants: GRANTS,
        opsMet,
        bytesMet,
        bytesPerGrant: Math.round(result.bytesPerGrant),
        // The connection's whole credential, for comparison: a grant keeps its id and a packed
        // copy of its process description, not the objects themselves.
        sessionCredentialBytes: Math.round(result.sessionBytes),
        baselineMapBytesPerEntry: Math.round(result.mapBytesPerEntry),
        grantsCreatedPerSecond: Math.round(GRANTS / (result.setupMs / 1000)),
      },
      lost: result.missed,
    };
  } finally {
    await stopAll([child]);
  }
}
