/**
 * throughput: 8 client processes, each keeping a window of authorized requests in flight on one
 * connection, for a fixed time. Baseline: the same 8 processes pipelining the same frames to the
 * raw echo server. Runs alternate ours / baseline with all clients started together.
 *
 * @module
 */

import { Child, stopAll } from './lib/child.js';
import { startServerPair } from './lib/servers.js';
import type { BenchContext, BenchResult } from './lib/shared.js';
import { median, medianRatio, round } from './lib/stats.js';

const CLIENTS = 8;
const WINDOW = 32;

export async function throughput(context: BenchContext): Promise<BenchResult> {
  const rounds = context.quick ? 2 : 3;
  const ms = context.quick ? 500 : 5_000;
  const children: Child[] = [];
  try {
    const { bkPath, echoPath, server, echo } = await startServerPair(
      context,
      'tp',
      'throughput',
      children,
    );
    const clients: Child[] = [];
    for (let index = 0; index < CLIENTS; index++) {
      clients.push(
        Child.start(
          context.build,
          'load-client',
          { bkPath, echoPath, window: WINDOW, warmupMs: context.quick ? 150 : 500 },
          { label: `throughput client ${index + 1}`, profileDir: context.profileDir },
        ),
      );
    }
    children.push(...clients);
    await Promise.all(clients.map((client) => client.next('ready')));
    context.log(
      `throughput: ${CLIENTS} clients × ${WINDOW} in flight, ${rounds} rounds of ${ms / 1000} s each, alternating`,
    );

    const ours: number[] = [];
    const baseline: number[] = [];
    const cpu = {
      ours: { server: [] as number[], clients: [] as number[], serverBusy: [] as number[] },
      baseline: { server: [] as number[], clients: [] as number[], serverBusy: [] as number[] },
    };
    let lost = 0;
    type State = { type: string; cpu: number };
    type Done = { type: string; count: number; answered: number; lost: number; cpu: number };
    const runAll = async (target: 'ours' | 'baseline'): Promise<number> => {
      const serving = target === 'ours' ? server : echo;
      const before = await serving.request<State>({ type: 'state' }, 'state');
      const started = performance.now();
      const replies = await Promise.all(
        clients.map((client) =>
          client.request<Done>({ type: 'run', target, ms }, 'done', ms + 30_000),
        ),
      );
      const elapsed = performance.now() - started;
      const after = await serving.request<State>({ type: 'state' }, 'state');
      let count = 0;
      let answered = 0;
      let clientCpu = 0;
      for (const reply of replies) {
        count += reply.count;
        answered += reply.answered;
        lost += reply.lost;
        clientCpu += reply.cpu;
      }
      cpu[target].server.push((after.cpu - before.cpu) / answered);
      cpu[target].clients.push(clientCpu / answered);
      cpu[target].serverBusy.push((after.cpu - before.cpu) / 1000 / elapsed);
      return count / (ms / 1000);
    };
    for (let index = 0; index < rounds; index++) {
      ours.push(await runAll('ours'));
      baseline.push(await runAll('baseline'));
    }
    const state = await server.request<{ type: string; prompts: number; denied: number }>(
      { type: 'state' },
      'state',
    );
    if (state.prompts !== 1 || state.denied !== 0) {
      throw new Error(
        `expected exactly one prompt (the grant) and no denial, saw ${state.prompts} prompts and ${state.denied} denials`,
      );
    }
    const ratio = medianRatio(ours, baseline);
    return {
      name: 'throughput',
      ours: round(median(ours)),
      baseline: round(median(baseline)),
      ratio: round(ratio, 2),
      unit: 'requests/s',
      runs: rounds,
      target: '≥ 0.7 of raw',
      checked: `ratio ${ratio.toFixed(2)}`,
      met: ratio >= 0.7,
      baselineIs: `raw node:net framed echo, same ${CLIENTS} processes × ${WINDOW} pipelined frames`,
      details: {
        clients: CLIENTS,
        window: WINDOW,
        secondsPerRun: ms / 1000,
        oursRuns: ours.map((value) => Math.round(value)),
        baselineRuns: baseline.map((value) => Math.round(value)),
        cpuUsPerRequest: {
          server: round(median(cpu.ours.server), 1),
          baselineServer: round(median(cpu.baseline.server), 2),
          clients: round(median(cpu.ours.clients), 1),
          baselineClients: round(median(cpu.baseline.clients), 2),
        },
        serverCpuBusy: {
          ours: `${Math.round(100 * median(cpu.ours.serverBusy))}%`,
          baseline: `${Math.round(100 * median(cpu.baseline.serverBusy))}%`,
        },
      },
      lost,
    };
  } finally {
    await stopAll(children);
  }
}
