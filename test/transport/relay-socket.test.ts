/**
 * listenRelay / connectRelay: the relay over a Unix socket wired to the platform's kernel peer
 * identity, end to end on Linux — a relay, an app server registered through it, and a client in
 * a child process that connects with the ordinary `connect()` and is served, with the pid the
 * app sees being the child's (from the kernel, via the relay), not the relay's.
 */

import { spawn } from 'node:child_process';
import { chmodSync, mkdtempSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { connect } from '../../src/client.js';
import { peerPredicate } from '../../src/policy/peer-policy.js';
import { ScriptedPromptBackend } from '../../src/prompt/scripted.js';
import { createServer } from '../../src/server.js';
import { connectRelay, listenRelay } from '../../src/transport/relay-socket.js';

const isLinux = process.platform === 'linux';
const tsx = createRequire(import.meta.url).resolve('tsx');
const clientFixture = fileURLToPath(new URL('../fixtures/integration/client.ts', import.meta.url));
const thisProcess = peerPredicate('this-process', (peer) => peer.pid === process.pid);

let dir: string;
let path: string;
const cleanups: (() => unknown)[] = [];

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'bk-relay-socket-'));
  chmodSync(dir, 0o700);
  path = join(dir, 'relay.sock');
});

afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  rmSync(dir, { recursive: true, force: true });
});

function runClient(
  method: string,
): Promise<{ ok: boolean; result?: unknown; code?: string; pid: number }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', tsx, clientFixture, path, method], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let output = '';
    child.stdout!.setEncoding('utf8').on('data', (chunk: string) => {
      output += chunk;
    });
    child.once('error', reject);
    child.once('close', () => {
      try {
        resolve({ ...JSON.parse(output.trim().split('\n').at(-1)!), pid: child.pid! });
      } catch {
        reject(new Error(`the client printed no result: ${output}`));
      }
    });
  });
}

describe.skipIf(!isLinux)('listenRelay / connectRelay (Linux, kernel peer identity)', () => {
  it('serves a client in another process through the relay; the app sees that process', async () => {
    const events: string[] = [];
    const relay = await listenRelay({
      path,
      appPolicies: [thisProcess],
      onEvent: (event) => events.push(event.type),
    });
    cleanups.push(() => relay.close());
    const server = createServer({
      app: 'bk-integration',
      prompt: new ScriptedPromptBackend({ decide: () => ({ result: 'granted' }) }),
    });
    cleanups.push(() => server.destroy());
    server.handle('whoami', (_params, context) => ({
      pid: context.peer?.pid,
      source: context.peer?.source,
    }));
    await server.listen({ listener: await connectRelay({ path, relayPolicies: [thisProcess] }) });
    expect(relay.appConnected).toBe(true);

    const outcome = await runClient('whoami');
    expect(outcome).toMatchObject({ ok: true, result: { pid: outcome.pid } });
    expect(outcome.pid).not.toBe(process.pid);
    expect((outcome.result as { source: string }).source).toMatch(/^relay:/);
    expect(events).toEqual(
      expect.arrayContaining(['app-registered', 'channel-opened', 'channel-closed']),
    );
  });

  it('a client in this process connects with the ordinary connect() to the relay', async () => {
    const relay = await listenRelay({ path, appPolicies: [thisProcess] });
    cleanups.push(() => relay.close());
    const server = createServer({
      app: 'bk-relay',
      prompt: new ScriptedPromptBackend({ decide: () => ({ result: 'granted' }) }),
    });
    cleanups.push(() => server.destroy());
    server.handle('echo', (params) => params);
    await server.listen({ listener: await connectRelay({ path, relayPolicies: [thisProcess] }) });
    const client = await connect({ app: 'bk-relay', path });
    cleanups.push(() => client.close());
    await expect(client.request('echo', { a: 1 })).resolves.toEqual({ a: 1 });
  });

  it('the app refuses a relay that fails relayPolicies, before sending anything', async () => {
    const relay = await listenRelay({ path, appPolicies: [thisProcess] });
    cleanups.push(() => relay.close());
    await expect(
      connectRelay({
        path,
        relayPolicies: [peerPredicate('never', () => false)],
      }),
    ).rejects.toMatchObject({ code: 'ERR_SERVER_REJECTED' });
    expect(relay.appConnected).toBe(false);
  });

  it('a second relay on the same path is ERR_ALREADY_RUNNING; no relay there is ERR_APP_UNAVAILABLE', async () => {
    await expect(connectRelay({ path, relayPolicies: [thisProcess] })).rejects.toMatchObject({
      code: 'ERR_APP_UNAVAILABLE',
    });
    const relay = await listenRelay({ path, appPolicies: [thisProcess] });
    cleanups.push(() => relay.close());
    await expect(listenRelay({ path, appPolicies: [thisProcess] })).rejects.toMatchObject({
      code: 'ERR_ALREADY_RUNNING',
    });
  });

  it('reports ERR_ENDPOINT_LOST on the app server when the relay goes away', async () => {
    const relay = await listenRelay({ path, appPolicies: [thisProcess] });
    const server = createServer({
      app: 'bk-relay',
      prompt: new ScriptedPromptBackend({ decide: () => ({ result: 'granted' }) }),
    });
    cleanups.push(() => server.destroy());
    const lost = new Promise<unknown>((resolve) =>
      server.on('error', ({ error }) => resolve(error)),
    );
    await server.listen({ listener: await connectRelay({ path, relayPolicies: [thisProcess] }) });
    await relay.close();
    await expect(lost).resolves.toMatchObject({ code: 'ERR_ENDPOINT_LOST' });
  });

  it('takes a name (the endpoint of that name) or a path, not both or neither', async () => {
    await expect(listenRelay({ appPolicies: [thisProcess] })).rejects.toMatchObject({
      code: 'ERR_INVALID_ARGUMENT',
    });
    await expect(
      connectRelay({ name: 'x', path, relayPolicies: [thisProcess] }),
    ).rejects.toMatchObject({ code: 'ERR_INVALID_ARGUMENT' });
    await expect(listenRelay({ path, appPolicies: [] })).rejects.toMatchObject({
      code: 'ERR_INVALID_ARGUMENT',
    });
    await expect(
      connectRelay({ path, relayPolicies: [thisProcess], timeoutMs: -1 }),
    ).rejects.toMatchObject({ code: 'ERR_INVALID_ARGUMENT' });
  });
});
