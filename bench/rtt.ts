/**
 * rtt: one authorized request round trip on an existing grant (~200-byte params), client in
 * another process, against the real Linux platform (SO_PEERCRED identity, per-request
 * verifyPeer). Baseline: a raw Node Unix-socket echo server, in its own process, of the same
 * framed bytes. Rounds alternate ours / baseline inside one client process.
 *
 * @module
 */

import { Child, stopAll } from './lib/child.js';
import { startServerPair } from './lib/servers.js';
import type { BenchContext, BenchResult } from './lib/shared.js';
import { median, medianRatio, round } from './lib/stats.js';

interface RoundStats {
  p50: number;
  p99: number;
}

export async function rtt(context: BenchContext): Promise<BenchResult> {
  const rounds = context.quick ? 6 : 30;
  const perRound = context.quick ? 300 : 1000;
  const children: Child[] = [];
  try {
    const { bkPath, echoPath, server, echo } = await startServerPair(
      context,
      'rtt',
      'rtt',
      children,
    );
    type State = { type: string; prompts: number; denied: number; cpu: number };
    const serverBefore = await server.request<State>({ type: 'state' }, 'state');
    const echoBefore = await echo.request<State>({ type: 'state' }, 'state');
    context.log(`rtt: ${rounds} rounds × ${perRound} requests each, alternating`);
    const client = Child.start(
      context.build,
      'rtt-client',
      { bkPath, echoPath, rounds, perRound, warmup: context.quick ? 1000 : 2000 },
      { label: 'rtt client', profileDir: context.profileDir },
    );
    children.push(client);
    const result = await client.next<{
      type: string;
      rounds: Array<{ ours: RoundStats; baseline: RoundStats }>;
      lost: number;
      requests: number;
      clientCpuUs: { ours: number; baseline: number };
    }>('result', 180_000);
    const state = await server.request<State>({ type: 'state' }, 'state');
    const echoAfter = await echo.request<State>({ type: 'state' }, 'state');
    if (state.prompts !== 1 || state.denied !== 0) {
      throw new Error(
        `expected exactly one prompt (the grant) and no denial, saw ${state.prompts} prompts and ${state.denied} denials`,
      );
    }
    const ours50 = result.rounds.map((r) => r.ours.p50);
    const base50 = result.rounds.map((r) => r.baseline.p50);
    const ours99 = result.rounds.map((r) => r.ours.p99);
    const base99 = result.rounds.map((r) => r.baseline.p99);
    const ratio = medianRatio(ours50, base50);
    return {
      name: 'rtt',
      ours: round(median(ours50), 1),
      baseline: round(median(base50), 1),
      ratio: round(ratio, 2),
      unit: 'µs p50',
      runs: result.rounds.length,
      target: 'p50 ratio ≤ 1.3',
      checked: `p50 ratio ${ratio.toFixed(2)}`,
      met: ratio <= 1.3,
      baselineIs: 'raw node:net Unix-socket framed echo of the same bytes, cross-process',
      details: {
        requestsPerRound: perRound,
        p99: round(median(ours99), 1),
        baselineP99: round(median(base99), 1),
        p99Ratio: round(medianRatio(ours99, base99), 2),
        extraUsP50: round(median(ours50) - median(base50), 1),
        p50RangeOverRounds: [round(Math.min(...ours50), 1), round(Math.max(...ours50), 1)],
        baselineP50RangeOverRounds: [round(Math.min(...base50), 1), round(Math.max(...base50), 1)],
        cpuUsPerRequest: {
          server: round((state.cpu - serverBefore.cpu) / result.requests, 1),
          baselineServer: round((echoAfter.cpu - echoBefore.cpu) / result.requests, 1),
          client: round(result.clientCpuUs.ours, 1),
          baselineClient: round(result.clientCpuUs.baseline, 1),
        },
      },
      lost: result.lost,
    };
  } finally {
    await stopAll(children);
  }
}
