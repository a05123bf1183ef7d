/**
 * Load: 100,000 requests — 5 client processes × 10 connections × 2,000 requests, 32 in flight
 * per connection — against one real server on a real Unix socket. Half the connections use the
 * library's client, half speak the protocol on raw sockets and so see every frame the server
 * sends. 1% of the requests ask for a fresh account no session holds a grant for, so each needs
 * a prompt (the scripted backend approves); the rest use an account granted during a warm-up.
 * Every request carries a unique nonce that the handler echoes.
 *
 * What must hold: no request lost, answered twice, or answered with another request's nonce
 * (checked by the clients, and by the handler, which must see each nonce exactly once); exactly
 * one prompt per fresh-account request — 1,000 — each for that request's account, and a prompt
 * notice to exactly those requests.
 */

import { randomBytes } from 'node:crypto';
import { createServer, HandlerError } from 'bridgekeeper';
import { ScriptedPromptBackend } from 'bridgekeeper/testing';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { ConnectionStats } from '../fixtures/adversarial/load-client.js';
import { countCases } from './support/cases.js';
import { Children, socketDirectory } from './support/load-harness.js';

const PROCESSES = 5;
const CONNECTIONS_PER_PROCESS = 10;
const REQUESTS_PER_CONNECTION = 2_000;
const WINDOW = 32;
const PROMPT_EVERY = 100;
const TOTAL = PROCESSES * CONNECTIONS_PER_PROCESS * REQUESTS_PER_CONNECTION;
const EXPECTED_PROMPTS = TOTAL / PROMPT_EVERY;

let directory: ReturnType<typeof socketDirectory>;
let children: Children;
const cleanups: Array<() => unknown> = [];

beforeEach(() => {
  directory = socketDirectory('bk-load-');
  children = new Children();
});

afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  await children.killAll();
  directory.remove();
});

describe('load', () => {
  it(`answers ${TOTAL.toLocaleString('en-US')} pipelined requests from ${PROCESSES} processes × ${CONNECTIONS_PER_PROCESS} connections with none lost, duplicated or mismatched, and exactly ${EXPECTED_PROMPTS.toLocaleString('en-US')} prompts`, async ({
    task,
  }) => {
    const runId = randomBytes(4).toString('hex');
    const freshPrefix = `fresh.${runId}.`;
    const backend = new ScriptedPromptBackend({ decide: () => ({ result: 'granted' }) });
    const server = createServer({ app: 'bk-adversarial', prompt: backend });
    cleanups.push(() => server.destroy());
    /** How many times the handler ran for each nonce. */
    const handled = new Map<string, number>();
    server.handle(
      'load.echo',
      {
        params: (raw) => {
          const value = raw as { nonce?: unknown; account?: unknown };
          if (typeof value?.nonce !== 'string' || typeof value.account !== 'string') {
            throw new Error('load.echo needs { nonce, account }');
          }
          return value as { nonce: string; account: string };
        },
        account: ({ account }) => {
          if (account === 'shared') return { id: 'shared', displayName: 'Shared load account' };
          if (account.startsWith(freshPrefix)) return { id: account, displayName: 'Fresh account' };
          throw new HandlerError('ACCOUNT_NOT_FOUND', `No account "${account}".`);
        },
      },
      ({ nonce }, context) => {
        handled.set(nonce, (handled.get(nonce) ?? 0) + 1);
        return { nonce, account: context.account!.id };
      },
    );
    await server.listen({ path: directory.socket });

    const clients = Array.from({ length: PROCESSES }, (_, processIndex) =>
      children.tsx('load-client.ts', [
        JSON.stringify({
          path: directory.socket,
          runId,
          processIndex,
          connections: CONNECTIONS_PER_PROCESS,
          requests: REQUESTS_PER_CONNECTION,
          window: WINDOW,
          promptEvery: PROMPT_EVERY,
          deadlineMs: 120_000,
        }),
      ]),
    );
    const ready = await Promise.all(
      clients.map((client) => client.message<{ sessions: string[] }>('ready', 60_000)),
    );
    // The warm-up granted the shared account: one prompt per session the clients are in.
    const sessions = new Set(ready.flatMap((each) => each.sessions));
    expect(backend.requests.map((request) => request.account.id)).toEqual(
      Array.from(sessions, () => 'shared'),
    );
    const promptsBefore = backend.requests.length;
    const handledBefore = handled.size;

    const started = performance.now();
    for (const client of clients) client.send({ type: 'go' });
    const reports = await Promise.all(
      clients.map(async (client) => {
        const report = await client.message<{ stats: ConnectionStats[]; ms: number }>(
          'done',
          120_000,
        );
        countCases(
          task,
          report.stats.reduce((sum, each) => sum + each.sent, 0),
        );
        return report;
      }),
    );
    const seconds = (performance.now() - started) / 1000;
    const stats = reports.flatMap((report) => report.stats);
    const sum = (key: keyof ConnectionStats) =>
      stats.reduce((total, each) => total + (each[key] as number), 0);
    const totals = {
      sent: sum('sent'),
      answered: sum('answered'),
      lost: sum('lost'),
      duplicated: sum('duplicated'),
      mismatched: sum('mismatched'),
      promptsExpected: sum('promptsExpected'),
      promptNotices: sum('promptNotices'),
    };
    const runPrompts = backend.requests.slice(promptsBefore);
    console.info(
      `[load] ${totals.sent} requests in ${seconds.toFixed(1)} s (${Math.round(totals.sent / seconds)} req/s), ` +
        `${runPrompts.length} prompts, ${sessions.size} session(s)`,
    );

    expect(
      stats.flatMap((each) => each.errors),
      'errors the clients saw',
    ).toEqual([]);
    expect(totals).toEqual({
      sent: TOTAL,
      answered: TOTAL,
      lost: 0,
      duplicated: 0,
      mismatched: 0,
      promptsExpected: EXPECTED_PROMPTS,
      promptNotices: EXPECTED_PROMPTS,
    });
    // The handler saw every nonce of the run exactly once.
    expect(handled.size - handledBefore).toBe(TOTAL);
    const handledTwice = [...handled].filter(([, count]) => count !== 1);
    expect(handledTwice).toEqual([]);
    for (let p = 0; p < PROCESSES; p++) {
      for (let c = 0; c < CONNECTIONS_PER_PROCESS; c++) {
        for (let r = 0; r < REQUESTS_PER_CONNECTION; r++) {
          const nonce = `${runId}.p${p}.c${c}.r${r}`;
          if (!handled.has(nonce)) expect.fail(`the handler never saw ${nonce}`);
        }
      }
    }
    // Exactly one prompt per fresh-account request, each for its own account.
    const prompted = runPrompts.map((request) => request.account.id);
    expect(prompted).toHaveLength(EXPECTED_PROMPTS);
    expect(new Set(prompted).size).toBe(EXPECTED_PROMPTS);
    for (const account of prompted) {
      const r = Number(account.slice(account.lastIndexOf('.r') + 2));
      expect(account.startsWith(freshPrefix) && r % PROMPT_EVERY === PROMPT_EVERY - 1).toBe(true);
    }
  }, 150_000);
});
