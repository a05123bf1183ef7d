/**
 * Prompt storms against a real server on a real Unix socket, with clients in real processes and
 * the scripted prompt backend in manual mode playing the person (it counts and times every
 * prompt it is asked to show):
 *
 * - 200 concurrent requests from one session for one account share exactly one prompt, and all
 *   200 get their own result once it is approved (then 200 more need none);
 * - 50 processes, each in a session of its own (no terminal, each with its own parent: the Linux
 *   credential provider keys such a session on the invoking parent), asking for one account at
 *   once: 50 prompts, shown strictly one at a time in the order the requests queued, all answered;
 * - after a denial, the same session's retries are refused at once with
 *   ERR_AUTHORIZATION_COOLDOWN and no prompt for the cool-down (300 ms here), then prompt again;
 *   another session is not cooled down by it.
 */

import { connect, createServer, type Server, type ServerOptions } from 'bridgekeeper';
import { ScriptedPromptBackend } from 'bridgekeeper/testing';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { rejectionOf } from '../support/assertions.js';
import { countCases } from './support/cases.js';
import { type Child, Children, sleep, socketDirectory, waitFor } from './support/load-harness.js';

const APP = 'bk-adversarial';
const METHOD = 'storm.read';

let directory: ReturnType<typeof socketDirectory>;
let children: Children;
const cleanups: Array<() => unknown> = [];

beforeEach(() => {
  directory = socketDirectory('bk-storm-');
  children = new Children();
});

afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  await children.killAll();
  directory.remove();
});

/**
 * A server whose `storm.read` needs the account "work" and echoes the request's nonce, with a
 * manual scripted backend; `maxOnScreen` is the most prompts it ever had showing at once.
 */
async function startServer(options: Partial<ServerOptions> = {}): Promise<{
  server: Server;
  backend: ScriptedPromptBackend;
  onScreen: { max: number };
}> {
  const onScreen = { max: 0 };
  const backend: ScriptedPromptBackend = new ScriptedPromptBackend({
    manual: true,
    // Called as a prompt goes on screen; `pending` then holds the ones still showing before it.
    onPrompt: () => {
      onScreen.max = Math.max(onScreen.max, backend.pending.length + 1);
    },
  });
  const server = createServer({ app: APP, prompt: backend, ...options });
  server.handle(
    METHOD,
    { account: () => ({ id: 'work', displayName: 'Acme Corp (work)' }) },
    (params) => ({ nonce: (params as { nonce: string }).nonce }),
  );
  cleanups.push(() => server.destroy());
  await server.listen({ path: directory.socket });
  return { server, backend, onScreen };
}

const nextPrompt = (backend: ScriptedPromptBackend, ms = 20_000) =>
  backend.nextPrompt({ signal: AbortSignal.timeout(ms) });

type Line = Record<string, unknown> & { event: string };
const linesOf = (child: Child) => child.lines as Line[];

describe('prompt storm', () => {
  it('gives 200 concurrent requests from one session exactly one prompt, and every one its result after approval', async ({
    task,
  }) => {
    const { backend, onScreen } = await startServer();
    const storm = children.tsx('storm-client.ts', [
      JSON.stringify({ path: directory.socket, method: METHOD, connections: 4, perConnection: 50 }),
    ]);
    const { sessions } = await storm.message<{ sessions: Array<{ id: string }> }>('ready', 30_000);
    // Four connections, one process: one session.
    expect(new Set(sessions.map((session) => session.id)).size).toBe(1);

    storm.send({ type: 'go', wave: 1 });
    const prompt = await nextPrompt(backend);
    // Every one of the 200 requests is waiting on that one prompt (each was told it is up)…
    await storm.message('prompted-1', 20_000);
    expect(backend.requests).toHaveLength(1);
    expect(backend.pending).toHaveLength(1);
    expect(prompt.request.account).toEqual({ id: 'work', displayName: 'Acme Corp (work)' });
    expect(prompt.request.sessionId).toBe(sessions[0]!.id);
    // …and none has an answer yet.
    expect(storm.messages.some((message) => message.type === 'done-1')).toBe(false);
    prompt.respond('granted');
    const first = await storm.message('done-1', 20_000);
    expect(first).toEqual({
      type: 'done-1',
      answered: 200,
      mismatched: 0,
      promptNotices: 200,
      errors: [],
    });
    countCases(task, 200);

    // With the grant live, 200 more need no prompt at all.
    storm.send({ type: 'go', wave: 2 });
    const second = await storm.message('done-2', 20_000);
    expect(second).toEqual({
      type: 'done-2',
      answered: 200,
      mismatched: 0,
      promptNotices: 0,
      errors: [],
    });
    countCases(task, 200);
    expect(backend.requests).toHaveLength(1);
    expect(onScreen.max).toBe(1);
    storm.send({ type: 'close' });
    await storm.exited;
  }, 60_000);

  it('shows the prompts of 50 sessions asking at once one at a time, in the order they queued, and answers all 50', async ({
    task,
  }) => {
    const sessionsWanted = 50;
    const { backend, onScreen } = await startServer();
    const clients = Array.from({ length: sessionsWanted }, (_, index) =>
      children.nodeInOwnSession('session-client.mjs', [directory.socket, METHOD, `s${index}`]),
    );
    // Wait until every request is either on screen or queued behind it.
    await waitFor(
      () =>
        clients.every((client) =>
          linesOf(client).some((line) => line.event === 'prompt' || line.event === 'queued'),
        ),
      60_000,
      'every client to be prompted or queued',
    );
    const hellos = clients.map((client) => linesOf(client).find((line) => line.event === 'hello')!);
    const sessionIds = hellos.map((hello) => (hello.session as { id: string }).id);
    // Each really is its own session: its own parent, no terminal, so a process-scope session.
    expect(new Set(hellos.map((hello) => hello.ppid)).size).toBe(sessionsWanted);
    expect(new Set(sessionIds).size).toBe(sessionsWanted);
    for (const hello of hellos) expect(hello.session).toMatchObject({ scope: 'process' });
    // One on screen, the other 49 queued behind it at positions 1…49.
    const positionOf = new Map<string, number>();
    clients.forEach((client, index) => {
      const queued = linesOf(client).find((line) => line.event === 'queued');
      positionOf.set(sessionIds[index]!, queued ? (queued.position as number) : 0);
    });
    expect([...positionOf.values()].sort((a, b) => a - b)).toEqual(
      Array.from({ length: sessionsWanted }, (_, index) => index),
    );

    const order: string[] = [];
    for (let index = 0; index < sessionsWanted; index++) {
      const prompt = await nextPrompt(backend);
      // Only this one is on screen.
      expect(backend.pending).toHaveLength(1);
      order.push(prompt.request.sessionId);
      // Give a second prompt every chance to appear while this one is up.
      if (index % 10 === 0) await sleep(50);
      expect(backend.pending).toHaveLength(1);
      prompt.respond('granted');
      countCases(task, 1);
    }
    expect(order).toEqual(
      [...positionOf].sort(([, a], [, b]) => a - b).map(([sessionId]) => sessionId),
    );
    expect(backend.requests).toHaveLength(sessionsWanted);
    expect(onScreen.max).toBe(1);
    await Promise.all(clients.map((client) => client.exited));
    clients.forEach((client, index) => {
      const events = linesOf(client);
      expect(events.at(-1), `client ${index}`).toEqual({
        event: 'result',
        result: { nonce: `s${index}` },
      });
      // Each was told when its own prompt went on screen.
      expect(events.filter((line) => line.event === 'prompt')).toHaveLength(1);
    });
  }, 90_000);

  it('refuses a denied session with ERR_AUTHORIZATION_COOLDOWN and no prompt for the cool-down (300 ms here), then prompts again', async ({
    task,
  }) => {
    const cooldownMs = 300;
    const { server, backend } = await startServer({ denialCooldownMs: cooldownMs });
    const timeline: Array<{ at: number; event: string; retryAfterMs?: number }> = [];
    server.authorizer.on('denied', (event) => {
      timeline.push({
        at: performance.now(),
        event: event.reason,
        ...(event.retryAfterMs === undefined ? {} : { retryAfterMs: event.retryAfterMs }),
      });
    });
    server.authorizer.on('prompt', () => timeline.push({ at: performance.now(), event: 'prompt' }));
    const client = await connect({ app: APP, path: directory.socket, name: 'retrying-client' });
    cleanups.push(() => client.destroy());
    let onPromptNotice: (() => void) | undefined;
    client.on('prompt', () => onPromptNotice?.());

    const first = client.request(METHOD, { nonce: 'first' });
    (await nextPrompt(backend)).respond('denied');
    expect((await rejectionOf(first)).code).toBe('ERR_AUTHORIZATION_DENIED');

    // Retries right away, all at once: refused without a prompt, saying when to try again.
    const burst = await Promise.all(
      Array.from({ length: 10 }, (_, index) =>
        rejectionOf(client.request(METHOD, { nonce: `burst-${index}` })),
      ),
    );
    for (const error of burst) {
      expect(error.code).toBe('ERR_AUTHORIZATION_COOLDOWN');
      expect(error.message).toContain('was refused moments ago');
      expect(error.message).toContain('Wait, then run the command again.');
      const retryAfterMs = (error as { retryAfterMs?: number }).retryAfterMs;
      expect(retryAfterMs).toBeGreaterThan(0);
      expect(retryAfterMs).toBeLessThanOrEqual(cooldownMs);
    }
    expect(backend.requests).toHaveLength(1);
    countCases(task, burst.length);

    // Then one retry every 20 ms until one is prompted: that happens once the cool-down is over.
    let refusedLater = 0;
    let granted: unknown;
    for (let attempt = 0; granted === undefined; attempt++) {
      if (attempt > 500) throw new Error('no prompt within 500 retries');
      const prompted = new Promise<'prompted'>((resolve) => {
        onPromptNotice = () => resolve('prompted');
      });
      const retry = client.request(METHOD, { nonce: `retry-${attempt}` }).then(
        (result) => ({ result }),
        (error: { code?: string }) => ({ error }),
      );
      const outcome = await Promise.race([retry, prompted]);
      if (outcome === 'prompted') {
        (await nextPrompt(backend)).respond('granted');
        const answered = await retry;
        expect(answered).toEqual({ result: { nonce: `retry-${attempt}` } });
        granted = answered;
      } else {
        expect(outcome).toMatchObject({ error: { code: 'ERR_AUTHORIZATION_COOLDOWN' } });
        refusedLater++;
        await sleep(20);
      }
      countCases(task, 1);
    }
    expect(backend.requests).toHaveLength(2);
    console.info(
      `[prompt-storm] cool-down ${cooldownMs} ms: ${burst.length} immediate retries and ${refusedLater} paced ones refused, then a prompt`,
    );

    // On the server's own clock: every refusal fell inside the cool-down, the prompt after it.
    const denial = timeline.find((entry) => entry.event === 'denied')!;
    const refusals = timeline.filter((entry) => entry.event === 'cooldown');
    const prompts = timeline.filter((entry) => entry.event === 'prompt');
    expect(refusals).toHaveLength(burst.length + refusedLater);
    expect(prompts).toHaveLength(2);
    const slackMs = 5;
    for (const refusal of refusals) {
      expect(refusal.at - denial.at).toBeLessThan(cooldownMs + slackMs);
      expect(refusal.retryAfterMs! + (refusal.at - denial.at)).toBeGreaterThan(
        cooldownMs - slackMs,
      );
    }
    expect(prompts[1]!.at - denial.at).toBeGreaterThan(cooldownMs - slackMs);
  }, 60_000);

  it("does not cool down another session after one session's denial (default 5 s cool-down)", async () => {
    const { server, backend } = await startServer();
    let otherPromptAt: number | undefined;
    const client = await connect({ app: APP, path: directory.socket, name: 'denied-client' });
    cleanups.push(() => client.destroy());
    const first = client.request(METHOD, { nonce: 'denied' });
    (await nextPrompt(backend)).respond('denied');
    expect((await rejectionOf(first)).code).toBe('ERR_AUTHORIZATION_DENIED');
    const deniedAt = performance.now();

    // A process in another session asks for the same account during this session's cool-down.
    const other = children.nodeInOwnSession('session-client.mjs', [
      directory.socket,
      METHOD,
      'other-session',
    ]);
    server.authorizer.on('prompt', () => {
      otherPromptAt = performance.now();
    });
    const prompt = await nextPrompt(backend);
    expect(prompt.request.sessionId).not.toBe(client.session.id);
    prompt.respond('granted');
    await other.exited;
    expect(linesOf(other).at(-1)).toEqual({ event: 'result', result: { nonce: 'other-session' } });
    // It was asked while the first session was still cooling down.
    expect(otherPromptAt! - deniedAt).toBeLessThan(5_000);
    expect(backend.requests).toHaveLength(2);
  }, 30_000);
});
