/**
 * connections: 5,000 connections open at once, from several client processes, each making one
 * authorized request; every one must be answered. Reports the server's memory per connection
 * (RSS and V8 heap, after a full GC, with every connection open, against the same server before
 * they connected). Baseline, for scale: a raw `node:net` echo server holding as many sockets,
 * each echoing one frame.
 *
 * @module
 */

import path from 'node:path';
import { Child, stopAll } from './lib/child.js';
import type { BenchContext, BenchResult } from './lib/shared.js';
import { median, round } from './lib/stats.js';

/** The figure; `--quick` opens fewer, to stay within its time. */
const CONNECTIONS = 5_000;
const QUICK_CONNECTIONS = 2_000;
const CLIENTS = 5;
const OPEN_FILES = 20_000;

interface Memory {
  rss: number;
  heapUsed: number;
  external: number;
  arrayBuffers: number;
}

interface RoundResult {
  answered: number;
  kibPerConnection: number;
  heapKibPerConnection: number;
  connectMs: number;
  requestMs: number;
  errors: string[];
}

async function runRound(
  context: BenchContext,
  kind: 'ours' | 'baseline',
  index: number,
  total: number,
): Promise<RoundResult> {
  const socket = path.join(context.tmp, `conn-${kind}-${index}.sock`);
  const children: Child[] = [];
  try {
    const server =
      kind === 'ours'
        ? Child.start(
            context.build,
            'bk-server',
            {
              path: socket,
              maxConnections: total + 1_000,
              profiling: context.profileDir !== undefined,
            },
            {
              label: 'connections server',
              nodeArgs: ['--expose-gc'],
              openFiles: OPEN_FILES,
              profileDir: context.profileDir,
            },
          )
        : Child.start(
            context.build,
            'echo-server',
            { path: socket },
            { label: 'connections echo server', nodeArgs: ['--expose-gc'], openFiles: OPEN_FILES },
          );
    children.push(server);
    await server.next('ready');
    const spawnClients = (count: number, clients: number): Child[] =>
      Array.from({ length: clients }, (_, at) =>
        Child.start(
          context.build,
          'conn-client',
          { path: socket, count: count / clients, concurrency: 40, kind },
          { label: `connections client ${at + 1}`, openFiles: OPEN_FILES },
        ),
      );
    type Connected = { type: string; opened: number; errors: string[]; ms: number };
    type Answered = { type: string; answered: number; errors: string[]; ms: number };
    // Warm up: load the platform module, compile the hot paths, create the grant.
    const warm = spawnClients(20, 1);
    children.push(...warm);
    await warm[0]!.next<Connected>('connected');
    await warm[0]!.request<Answered>({ type: 'request' }, 'answered');
    await stopAll(warm);
    type State = { type: string; memory: Memory; connections: number; prompts?: number };
    const settle = async (): Promise<State> => {
      // Let closed connections finish closing before memory is read.
      for (let tries = 0; tries < 50; tries++) {
        const state = await server.request<State>({ type: 'state' }, 'state');
        if (state.connections === 0) return state;
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
      throw new Error('the warm-up connections did not close');
    };
    const before = await settle();

    const clients = spawnClients(total, CLIENTS);
    children.push(...clients);
    const connected = await Promise.all(
      clients.map((client) => client.next<Connected>('connected', 120_000)),
    );
    const opened = connected.reduce((sum, reply) => sum + reply.opened, 0);
    const errors = connected.flatMap((reply) => reply.errors);
    const answers = await Promise.all(
      clients.map((client) => client.request<Answered>({ type: 'request' }, 'answered', 120_000)),
    );
    const answered = answers.reduce((sum, reply) => sum + reply.answered, 0);
    errors.push(...answers.flatMap((reply) => reply.errors));
    const after = await server.request<State>({ type: 'state' }, 'state');
    if (after.connections !== opened) {
      errors.push(`the server holds ${after.connections} connections, the clients ${opened}`);
    }
    if (kind === 'ours' && after.prompts !== 1) {
      errors.push(`expected exactly one prompt (the grant), saw ${after.prompts}`);
    }
    return {
      answered,
      kibPerConnection: (after.memory.rss - before.memory.rss) / total / 1024,
      heapKibPerConnection: (after.memory.heapUsed - before.memory.heapUsed) / total / 1024,
      connectMs: Math.max(...connected.map((reply) => reply.ms)),
      requestMs: Math.max(...answers.map((reply) => reply.ms)),
      errors,
    };
  } finally {
    await stopAll(children);
  }
}

export async function connections(context: BenchContext): Promise<BenchResult> {
  const rounds = context.quick ? 1 : 2;
  const total = context.quick ? QUICK_CONNECTIONS : CONNECTIONS;
  context.log(
    `connections: ${total} concurrent connections from ${CLIENTS} processes, ${rounds} round(s) each`,
  );
  const ours: RoundResult[] = [];
  const baseline: RoundResult[] = [];
  for (let index = 0; index < rounds; index++) {
    ours.push(await runRound(context, 'ours', index, total));
    baseline.push(await runRound(context, 'baseline', index, total));
  }
  const answered = Math.min(...ours.map((r) => r.answered));
  const baselineAnswered = Math.min(...baseline.map((r) => r.answered));
  const errors = [...new Set([...ours, ...baseline].flatMap((r) => r.errors))];
  if (baselineAnswered !== total) {
    throw new Error(
      `the raw baseline answered ${baselineAnswered} of ${total}: ${errors.join('; ')}`,
    );
  }
  const kib = median(ours.map((r) => r.kibPerConnection));
  const baseKib = median(baseline.map((r) => r.kibPerConnection));
  return {
    name: 'connections',
    ours: round(kib, 1),
    baseline: round(baseKib, 1),
    ratio: round(kib / baseKib, 2),
    unit: 'KiB server RSS per connection',
    runs: rounds,
    target: `all ${total.toLocaleString('en-US')} answered; report KiB per connection`,
    checked: `${answered} of ${total} answered`,
    met: answered === total && errors.length === 0,
    baselineIs: 'raw node:net echo server holding as many sockets (for scale; no target)',
    details: {
      connections: total,
      clientProcesses: CLIENTS,
      heapKibPerConnection: round(median(ours.map((r) => r.heapKibPerConnection)), 2),
      baselineHeapKibPerConnection: round(median(baseline.map((r) => r.heapKibPerConnection)), 2),
      connectAllMs: Math.round(median(ours.map((r) => r.connectMs))),
      baselineConnectAllMs: Math.round(median(baseline.map((r) => r.connectMs))),
      requestAllMs: Math.round(median(ours.map((r) => r.requestMs))),
      baselineRequestAllMs: Math.round(median(baseline.map((r) => r.requestMs))),
      ...(errors.length > 0 ? { errors: errors.slice(0, 5) } : {}),
    },
    lost: total - answered,
  };
}
