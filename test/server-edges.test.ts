/**
 * Server and client edge cases found in review: a peer that changes while other requests are in
 * flight, handler signals taken after a cancel, and whose timeout a connect() error reports.
 */

import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { type BridgekeeperError, connect, createServer, type PeerIdentity } from 'bridgekeeper';
import {
  FakeClock,
  MemoryListener,
  perProcessCredentials,
  ScriptedPromptBackend,
} from 'bridgekeeper/testing';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { createError } from '../src/errors.js';
import type { Platform } from '../src/platform/platform.js';
import type { Message, Transport } from '../src/transport/transport.js';

const uid = process.getuid?.() ?? 0;
const gid = process.getgid?.() ?? 0;

const cleanups: Array<() => unknown> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

const tick = (ms = 0) => new Promise((resolve) => setTimeout(resolve, ms));

function deferred<T = void>() {
  let resolve!: (value: T) => void;
  const promise = new Promise<T>((r) => {
    resolve = r;
  });
  return { promise, resolve };
}

async function rejection(promise: Promise<unknown>): Promise<BridgekeeperError> {
  try {
    await promise;
  } catch (error) {
    return error as BridgekeeperError;
  }
  throw new Error('expected a rejection');
}

describe('a peer that changes mid-connection', () => {
  it('no other in-flight result leaves once the peer changed, nothing runs after it, the failing request gets its ERR_PEER_CHANGED', async () => {
    let changed = false;
    const platform: Platform = {
      id: 'fake',
      identifySocketPeer: () => {
        throw new Error('unused');
      },
      credentials: perProcessCredentials(),
      verifyPeer: async () => {
        if (changed) throw createError('ERR_PEER_CHANGED', 'The peer changed (test).');
      },
      releasePeer: () => {},
    };
    const server = createServer({
      app: 'edge-app',
      prompt: new ScriptedPromptBackend({ outcomes: ['granted'] }),
      platform,
      clock: new FakeClock(),
    });
    cleanups.push(() => server.destroy());
    const slowSecret = deferred<string>();
    const slowPlain = deferred<string>();
    const ran: string[] = [];
    server.handle('secret', { account: () => 'work' }, () => {
      ran.push('secret');
      return 'SECRET';
    });
    server.handle('slow-secret', { account: () => 'work' }, async () => {
      ran.push('slow-secret');
      return slowSecret.promise;
    });
    server.handle('slow-plain', async () => {
      ran.push('slow-plain');
      return slowPlain.promise;
    });
    const listener = new MemoryListener();
    await server.listen({ listener });
    const peer: PeerIdentity = { pid: 77, uid, gid, startTime: '9', source: 'fake' };
    const raw: Transport = await listener.connect({ peer });
    type Frame = {
      id?: unknown;
      result?: unknown;
      method?: string;
      params?: { code?: string };
      error?: { data?: { code?: string } };
    };
    const frames: Frame[] = [];
    raw.onMessage((message: Message) => frames.push(message as Frame));
    const send = (id: number, method: string, params: unknown = {}) =>
      raw.send({ jsonrpc: '2.0', id, method, params } as Message);
    send(0, 'bridgekeeper.hello', { protocol: { min: 1, max: 1 }, client: { name: 'raw' } });
    send(1, 'secret');
    await tick(20);
    expect(frames.find((f) => f.id === 1)?.result).toBe('SECRET');
    send(2, 'slow-secret');
    send(3, 'slow-plain');
    await tick(20);
    changed = true;
    send(4, 'secret');
    await tick(20);
    // sent after the change was detected: never run
    if (!raw.closed) send(5, 'slow-plain');
    slowSecret.resolve('LATE-SECRET');
    slowPlain.resolve('LATE-PLAIN');
    await tick(50);
    const four = frames.findIndex((f) => f.id === 4);
    const closing = frames.findIndex(
      (f) => f.method === 'bridgekeeper.closing' && f.params?.code === 'ERR_PEER_CHANGED',
    );
    expect(frames[four]?.error?.data?.code).toBe('ERR_PEER_CHANGED');
    expect(closing).toBeGreaterThan(four);
    expect(JSON.stringify(frames)).not.toContain('LATE-');
    expect(ran.sort()).toEqual(['secret', 'slow-plain', 'slow-secret']);
    expect(raw.closed).toBe(true);
  });
});

describe('connect() timeouts say whose limit ran out', () => {
  it("keeps the app's own handshake timeout (it closed the connection), not connect()'s limit", async () => {
    const server = createServer({
      app: 'edge-app',
      prompt: new ScriptedPromptBackend(),
      handshakeTimeoutMs: 50,
      // the app is slow to place the peer: its handshake timer fires while the hello waits
      credentials: {
        derive: async (peer) => {
          await tick(300);
          return perProcessCredentials().derive(peer);
        },
      },
    });
    cleanups.push(() => server.destroy());
    const listener = new MemoryListener();
    await server.listen({ listener });
    const started = Date.now();
    const error = await rejection(
      connect({ app: 'edge-app', transport: await listener.connect() }),
    );
    const elapsed = Date.now() - started;
    expect(error.code).toBe('ERR_TIMEOUT');
    expect(elapsed).toBeLessThan(1_000);
    // The app closed the connection after ~50 ms ("No hello within 50 ms."); connect()'s own
    // 5 s limit did not run out, so its message must not claim it did.
    expect(error.message).not.toMatch(/limit 5000 ms/);
  });

  it("a caller's own AbortSignal.timeout(100) is reported with connect()'s 5000 ms limit", async () => {
    const listener = new MemoryListener();
    listener.onConnection(() => {}); // accepts, never answers
    cleanups.push(() => listener.close());
    const error = await rejection(
      connect({
        app: 'edge-app',
        transport: await listener.connect(),
        signal: AbortSignal.timeout(100),
      }),
    );
    expect(error.code).toBe('ERR_TIMEOUT');
    expect(error.message).not.toMatch(/limit 5000 ms/);
  });
});

describe('request signals', () => {
  it('a handler that takes context.signal only after the client cancelled gets an aborted signal', async () => {
    const server = createServer({ app: 'edge-app', prompt: new ScriptedPromptBackend() });
    cleanups.push(() => server.destroy());
    const entered = deferred();
    const gate = deferred();
    const seen = deferred<boolean>();
    server.handle('slow', async (_params, context) => {
      entered.resolve();
      await gate.promise;
      seen.resolve(context.signal.aborted);
      return 'x';
    });
    const listener = new MemoryListener();
    await server.listen({ listener });
    const client = await connect({ app: 'edge-app', transport: await listener.connect() });
    cleanups.push(() => client.destroy());
    const controller = new AbortController();
    const request = client.request('slow', {}, { signal: controller.signal });
    await entered.promise;
    controller.abort();
    await rejection(request);
    await tick(20);
    gate.resolve();
    expect(await seen.promise).toBe(true);
  });
});

describe('an app that does not listen for errors', () => {
  it('still hears that its socket file was removed: a process warning', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'bk-edges-'));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    const server = createServer({ app: 'edge-app', prompt: new ScriptedPromptBackend() });
    cleanups.push(() => server.destroy());
    const socketPath = await server.listen({ path: path.join(dir, 'agent.sock') });
    const warnings: Error[] = [];
    const onWarning = (warning: Error) => warnings.push(warning);
    process.on('warning', onWarning);
    cleanups.push(() => process.off('warning', onWarning));
    rmSync(socketPath);
    await vi.waitFor(() => expect(warnings).toHaveLength(1), { timeout: 5_000 });
    expect(warnings[0]?.name).toBe('BridgekeeperWarning');
    expect(warnings[0]?.message).toContain(`${socketPath} was removed`);
  });
});
