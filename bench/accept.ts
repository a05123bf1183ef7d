/**
 * accept: what one connection costs the server for peer identity (SO_PEERCRED, SO_PEERPIDFD,
 * /proc), the Linux session credential and the peer policies (same user, allowed executable),
 * against the same Bridgekeeper server accepting with none of them. A client in another process
 * opens connections one at a time (connect, hello, close); rounds alternate the two servers.
 *
 * @module
 */

import path from 'node:path';
import { Child, stopAll } from './lib/child.js';
import type { BenchContext, BenchResult } from './lib/shared.js';
import { median, round } from './lib/stats.js';

export async function accept(context: BenchContext): Promise<BenchResult> {
  const fullPath = path.join(context.tmp, 'accept-full.sock');
  const barePath = path.join(context.tmp, 'accept-bare.sock');
  const rounds = context.quick ? 4 : 16;
  const perRound = context.quick ? 100 : 250;
  const children: Child[] = [];
  try {
    const server = Child.start(
      context.build,
      'accept-server',
      { fullPath, barePath, profiling: context.profileDir !== undefined },
      { label: 'accept server', profileDir: context.profileDir },
    );
    const client = Child.start(context.build, 'accept-client', {}, { label: 'accept client' });
    children.push(server, client);
    await Promise.all([server.next('ready'), client.next('ready')]);
    type Cpu = { type: string; usage: NodeJS.CpuUsage; rejected: number };
    const run = async (socket: string, count: number): Promise<{ wall: number; cpu: number }> => {
      const before = await server.request<Cpu>({ type: 'cpu' }, 'cpu');
      const done = await client.request<{ type: string; times: number[] }>(
        { type: 'run', path: socket, count },
        'done',
        120_000,
      );
      const after = await server.request<Cpu>({ type: 'cpu' }, 'cpu');
      if (after.rejected > 0) throw new Error(`${after.rejected} connections were rejected`);
      const cpu = after.usage.user + after.usage.system - before.usage.user - before.usage.system;
      return { wall: median(done.times), cpu: cpu / count };
    };
    await run(fullPath, 50);
    await run(barePath, 50);
    context.log(`accept: ${rounds} rounds × ${perRound} connections each, alternating`);
    const full: Array<{ wall: number; cpu: number }> = [];
    const bare: Array<{ wall: number; cpu: number }> = [];
    for (let index = 0; index < rounds; index++) {
      full.push(await run(fullPath, perRound));
      bare.push(await run(barePath, perRound));
    }
    const extras = full.map((f, index) => f.wall - bare[index]!.wall);
    const cpuExtras = full.map((f, index) => f.cpu - bare[index]!.cpu);
    const extra = median(extras);
    const ours = median(full.map((f) => f.wall));
    const baseline = median(bare.map((b) => b.wall));
    return {
      name: 'accept',
      ours: round(ours, 1),
      baseline: round(baseline, 1),
      ratio: round(ours / baseline, 2),
      unit: 'µs per connection (connect + hello + close)',
      runs: rounds,
      target: '≤ 100 µs extra per connection',
      checked: `+${extra.toFixed(0)} µs`,
      met: extra <= 100,
      baselineIs:
        'the same Bridgekeeper server without peer identity, session credential or policies',
      details: {
        connectionsPerRound: perRound,
        extraUs: round(extra, 1),
        serverCpuUsPerConnection: round(median(full.map((f) => f.cpu)), 1),
        baselineServerCpuUsPerConnection: round(median(bare.map((b) => b.cpu)), 1),
        extraServerCpuUs: round(median(cpuExtras), 1),
        policies: ['same-user (default)', 'allowExecutables([node])'],
      },
      lost: 0,
    };
  } finally {
    await stopAll(children);
  }
}
