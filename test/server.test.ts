import {
  AuthorizationError,
  type Client,
  connect,
  createServer,
  HandlerError,
  type PeerIdentity,
  type PromptOutcome,
  type PromptRequest,
  RemoteError,
  type Server,
  type ServerOptions,
} from 'bridgekeeper';
import { FakeClock, MemoryListener, ScriptedPromptBackend } from 'bridgekeeper/testing';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { createMemoryPair } from '../src/transport/memory.js';
import type { Message, Transport } from '../src/transport/transport.js';
import { rejectionOf as rejection } from './support/assertions.js';

const uid = process.getuid?.() ?? 0;
const gid = process.getgid?.() ?? 0;

function peer(pid: number, extra: Partial<PeerIdentity> = {}): PeerIdentity {
  return { pid, uid, gid, startTime: String(1000 + pid), source: 'memory', ...extra };
}

/** A prompt backend whose answers the test gives one by one. */
class ManualPrompt {
  readonly id = 'manual';
  readonly requests: PromptRequest[] = [];
  readonly aborted: PromptRequest[] = [];
  #waiting: Array<{ request: PromptRequest; answer: (outcome: PromptOutcome) => void }> = [];
  #arrivals: Array<() => void> = [];

  async isAvailable(): Promise<boolean> {
    return true;
  }

  prompt(request: PromptRequest, { signal }: { signal: AbortSignal }): Promise<PromptOutcome> {
    this.requests.push(request);
    return new Promise((resolve) => {
      const entry = { request, answer: resolve };
      this.#waiting.push(entry);
      signal.addEventListener('abort', () => {
        this.aborted.push(request);
        this.#waiting = this.#waiting.filter((waiting) => waiting !== entry);
        resolve({ result: 'cancelled' });
      });
      for (const arrival of this.#arrivals.splice(0)) arrival();
    });
  }

  async next(): Promise<{ request: PromptRequest; answer: (outcome: PromptOutcome) => void }> {
    while (this.#waiting.length === 0)
      await new Promise<void>((resolve) => this.#arrivals.push(resolve));
    return this.#waiting.shift()!;
  }
}

interface Harness {
  server: Server;
  listener: MemoryListener;
  clock: FakeClock;
  open(options?: { peer?: PeerIdentity; name?: string }): Promise<Client>;
}

const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

async function harness(options: Partial<ServerOptions> = {}): Promise<Harness> {
  const clock = new FakeClock();
  const server = createServer({
    app: 'test-app',
    version: '1.2.3',
    prompt: new ScriptedPromptBackend({ outcomes: ['granted', 'granted', 'granted', 'granted'] }),
    clock,
    ...options,
  });
  server.handle('echo', (params) => params);
  server.handle(
    'secret',
    {
      account: (params: { account: string }) => ({
        id: params.account,
        displayName: `Account ${params.account}`,
      }),
    },
    (params, context) => ({ account: context.account?.id, session: context.session.id, params }),
  );
  const listener = new MemoryListener();
  await server.listen({ listener });
  cleanups.push(() => server.destroy());
  return {
    server,
    listener,
    clock,
    async open({ peer: identity = peer(4242), name = 'test-cli' } = {}) {
      const client = await connect({
        app: 'test-app',
        name,
        transport: await listener.connect({ peer: identity }),
      });
      cleanups.push(() => client.destroy());
      return client;
    },
  };
}

describe('handshake', () => {
  it('answers with the protocol version, the server and the session it derived', async () => {
    const { open } = await harness();
    const client = await open();
    expect(client.server).toEqual({ name: 'test-app', version: '1.2.3', protocol: 1 });
    expect(client.session).toEqual({ id: 'process:4242:5242', scope: 'process' });
  });

  it('derives the session on the server: a forged session in the hello changes nothing', async () => {
    const { listener } = await harness();
    const transport = await listener.connect({ peer: peer(7) });
    const replies: Message[] = [];
    transport.onMessage((message) => replies.push(message));
    transport.send({
      jsonrpc: '2.0',
      id: 1,
      method: 'bridgekeeper.hello',
      params: {
        protocol: { min: 1, max: 1 },
        client: { name: 'x' },
        session: { id: 'process:4242:5242', scope: 'terminal' },
      },
    });
    await expect.poll(() => replies.length).toBe(1);
    expect((replies[0]!.result as { session: unknown }).session).toEqual({
      id: 'process:7:1007',
      scope: 'process',
    });
    await transport.close();
  });

  it('refuses a client with no common protocol version', async () => {
    const { listener } = await harness();
    const transport = await listener.connect();
    const replies: Message[] = [];
    transport.onMessage((message) => replies.push(message));
    transport.send({
      jsonrpc: '2.0',
      id: 1,
      method: 'bridgekeeper.hello',
      params: { protocol: { min: 2, max: 5 }, client: { name: 'future' } },
    });
    await expect.poll(() => transport.closed).toBe(true);
    const error = replies.find((message) => message.id === 1)?.error as { data: { code: string } };
    expect(error.data.code).toBe('ERR_UNSUPPORTED_VERSION');
  });

  it('closes a connection that sends no hello within the timeout', async () => {
    const { listener, clock, server } = await harness({ handshakeTimeoutMs: 5_000 });
    const transport = await listener.connect();
    const notices: Message[] = [];
    transport.onMessage((message) => notices.push(message));
    await expect.poll(() => server.connectionCount).toBe(1);
    clock.advance(4_999);
    await new Promise((resolve) => setTimeout(resolve, 10));
    expect(transport.closed).toBe(false);
    clock.advance(1);
    await expect.poll(() => transport.closed).toBe(true);
    expect(notices[0]).toMatchObject({
      method: 'bridgekeeper.closing',
      params: { reason: 'handshake-timeout' },
    });
  });

  it('closes a connection whose first request is not hello, and keeps serving others', async () => {
    const { listener, open } = await harness();
    const good = await open();
    const bad = await listener.connect();
    bad.onMessage(() => {});
    bad.send({ jsonrpc: '2.0', id: 1, method: 'echo', params: {} });
    await expect.poll(() => bad.closed).toBe(true);
    expect(await good.request('echo', { still: 'here' })).toEqual({ still: 'here' });
  });

  it.each([
    ['not JSON-RPC 2.0', { jsonrpc: '1.0', id: 1, method: 'bridgekeeper.hello' }],
    ['a response', { jsonrpc: '2.0', id: 1, result: 1 }],
    ['a bad id', { jsonrpc: '2.0', id: { x: 1 }, method: 'bridgekeeper.hello' }],
    ['scalar params', { jsonrpc: '2.0', id: 1, method: 'bridgekeeper.hello', params: 3 }],
    [
      'a malformed hello',
      { jsonrpc: '2.0', id: 1, method: 'bridgekeeper.hello', params: { client: 1 } },
    ],
  ])('closes a connection that sends %s (ERR_PROTOCOL)', async (_, message) => {
    const { listener } = await harness();
    const transport = await listener.connect();
    const received: Message[] = [];
    transport.onMessage((incoming) => received.push(incoming));
    transport.send(message);
    await expect.poll(() => transport.closed).toBe(true);
    const closing = received.find((incoming) => incoming.method === 'bridgekeeper.closing');
    expect(closing?.params).toMatchObject({ code: 'ERR_PROTOCOL' });
  });
});

describe('requests', () => {
  it('refuses params that are not an object or an array locally, and the connection stays usable', async () => {
    const { open } = await harness();
    const client = await open();
    const pending = client.request('echo', { still: 'served' });
    // What JSON.stringify writes counts: a Date becomes a string, a boxed number a number.
    for (const params of [1, 'text', true, null, new Date(0), Object(1), { toJSON: () => 2 }]) {
      const error = await rejection(client.request('echo', params));
      expect(error.code).toBe('ERR_INVALID_ARGUMENT');
      expect(error.message).toMatch(/object or an array/);
    }
    expect(await pending).toEqual({ still: 'served' });
    expect(await client.request('echo', [1, 2])).toEqual([1, 2]);
  });

  it('runs methods without an account with no prompt', async () => {
    const prompt = new ManualPrompt();
    const { open } = await harness({ prompt });
    const client = await open();
    expect(await client.request('echo', { a: [1, 2] })).toEqual({ a: [1, 2] });
    expect(prompt.requests).toHaveLength(0);
  });

  it('prompts once per (session, account), tells the client, then serves without prompting', async () => {
    const prompt = new ManualPrompt();
    const { open } = await harness({ prompt });
    const client = await open();
    const notices: unknown[] = [];
    client.on('prompt', (notice) => notices.push(notice));
    const first = client.request('secret', { account: 'work' });
    const shown = await prompt.next();
    expect(shown.request.account).toEqual({ id: 'work', displayName: 'Account work' });
    expect(shown.request.claims).toEqual({ name: 'test-cli' });
    expect(shown.request.subject).toEqual({ pid: 4242, startTime: '5242', uid });
    await expect.poll(() => notices.length).toBe(1);
    expect(notices[0]).toEqual({
      method: 'secret',
      account: { id: 'work', displayName: 'Account work' },
      backend: 'manual',
    });
    shown.answer({ result: 'granted' });
    expect(await first).toMatchObject({ account: 'work', session: 'process:4242:5242' });
    expect(await client.request('secret', { account: 'work' })).toMatchObject({ account: 'work' });
    expect(prompt.requests).toHaveLength(1);
  });

  it('authorizes each account separately, and each session separately', async () => {
    const { open, server } = await harness();
    const a = await open({ peer: peer(1) });
    const b = await open({ peer: peer(2) });
    await a.request('secret', { account: 'work' });
    await a.request('secret', { account: 'personal' });
    await b.request('secret', { account: 'work' });
    const grants = server.authorizer
      .listGrants()
      .map((grant) => `${grant.sessionId}/${grant.account.id}`);
    expect(grants.sort()).toEqual([
      'process:1:1001/personal',
      'process:1:1001/work',
      'process:2:1002/work',
    ]);
  });

  it('shares one prompt between concurrent requests of one session', async () => {
    const prompt = new ManualPrompt();
    const { open } = await harness({ prompt });
    const client = await open();
    const calls = Array.from({ length: 20 }, () => client.request('secret', { account: 'work' }));
    (await prompt.next()).answer({ result: 'granted' });
    await Promise.all(calls);
    expect(prompt.requests).toHaveLength(1);
  });

  it('sends a denial as ERR_AUTHORIZATION_DENIED, then cools down without prompting', async () => {
    const prompt = new ManualPrompt();
    const { open } = await harness({ prompt, denialCooldownMs: 5_000 });
    const client = await open();
    const call = client.request('secret', { account: 'work' });
    (await prompt.next()).answer({ result: 'denied' });
    const denied = await rejection(call);
    expect(denied).toBeInstanceOf(AuthorizationError);
    expect(denied.code).toBe('ERR_AUTHORIZATION_DENIED');
    expect(denied.message).toContain('Account work');
    const cooling = await rejection(client.request('secret', { account: 'work' }));
    expect(cooling.code).toBe('ERR_AUTHORIZATION_COOLDOWN');
    expect((cooling as AuthorizationError).retryAfterMs).toBeGreaterThan(0);
    expect(prompt.requests).toHaveLength(1);
  });

  it('prompts again after the idle timeout and after lock', async () => {
    const prompt = new ManualPrompt();
    const { open, clock, server } = await harness({ prompt, idleTimeoutMs: 60_000 });
    const client = await open();
    const grant = async () => {
      const call = client.request('secret', { account: 'work' });
      (await prompt.next()).answer({ result: 'granted' });
      await call;
    };
    await grant();
    clock.advance(59_999);
    await client.request('secret', { account: 'work' });
    clock.advance(60_000);
    const afterIdle = client.request('secret', { account: 'work' });
    const shown = await prompt.next();
    shown.answer({ result: 'granted' });
    await afterIdle;
    server.lock();
    const afterLock = client.request('secret', { account: 'work' });
    const lockedPrompt = await prompt.next();
    expect(lockedPrompt.request.unlocks).toBe(true);
    lockedPrompt.answer({ result: 'granted' });
    await afterLock;
    expect(server.authorizer.locked).toBe(false);
    expect(prompt.requests).toHaveLength(3);
  });

  it('maps handler errors: HandlerError keeps its code, anything else becomes ERR_INTERNAL without details', async () => {
    const { open, server } = await harness();
    server.handle('missing', () => {
      throw new HandlerError('ITEM_NOT_FOUND', 'No item named "db".', { data: { item: 'db' } });
    });
    server.handle('crash', () => {
      throw new Error('database password is hunter2');
    });
    const errors: unknown[] = [];
    server.on('error', ({ error }) => errors.push(error));
    const client = await open();
    const missing = await rejection(client.request('missing'));
    expect(missing).toBeInstanceOf(RemoteError);
    expect(missing).toMatchObject({
      code: 'ITEM_NOT_FOUND',
      message: 'No item named "db".',
      data: { item: 'db' },
    });
    const crash = await rejection(client.request('crash'));
    expect(crash.code).toBe('ERR_INTERNAL');
    expect(crash.message).not.toContain('hunter2');
    expect(errors).toHaveLength(1);
  });

  it('answers unknown methods with ERR_METHOD_NOT_FOUND and bad params with ERR_INVALID_PARAMS', async () => {
    const { open, server } = await harness();
    server.handle(
      'typed',
      {
        params: (raw) => {
          if (typeof (raw as { n?: unknown })?.n !== 'number')
            throw new Error('n must be a number');
          return raw as { n: number };
        },
      },
      (params) => params.n * 2,
    );
    const client = await open();
    expect((await rejection(client.request('nope'))).code).toBe('ERR_METHOD_NOT_FOUND');
    const invalid = await rejection(client.request('typed', { n: 'x' }));
    expect(invalid).toMatchObject({ code: 'ERR_INVALID_PARAMS', message: 'n must be a number' });
    expect(await client.request('typed', { n: 21 })).toBe(42);
  });

  it('refuses to register reserved or duplicate method names', async () => {
    const { server } = await harness();
    expect(() => server.handle('bridgekeeper.hello', () => 1)).toThrow(/reserved/);
    expect(() => server.handle('echo', () => 1)).toThrow(/already registered/);
  });
});

describe('cancellation and disconnects', () => {
  it('cancels the prompt when the only waiting client aborts, and creates no grant', async () => {
    const prompt = new ManualPrompt();
    const { open, server } = await harness({ prompt });
    const client = await open();
    const controller = new AbortController();
    const call = client.request('secret', { account: 'work' }, { signal: controller.signal });
    const shown = await prompt.next();
    controller.abort();
    expect((await rejection(call)).code).toBe('ERR_ABORTED');
    await expect.poll(() => prompt.aborted.length).toBe(1);
    shown.answer({ result: 'granted' });
    expect(server.authorizer.listGrants()).toHaveLength(0);
  });

  it('cancels the prompt when the client disconnects mid-prompt', async () => {
    const prompt = new ManualPrompt();
    const { open, server } = await harness({ prompt });
    const client = await open();
    const call = client.request('secret', { account: 'work' });
    call.catch(() => {});
    await prompt.next();
    client.destroy();
    await expect.poll(() => prompt.aborted.length).toBe(1);
    expect(server.authorizer.listGrants()).toHaveLength(0);
  });

  it("aborts the handler's signal when the client disconnects", async () => {
    const { open, server } = await harness();
    let aborted = false;
    let started!: () => void;
    const running = new Promise<void>((resolve) => {
      started = resolve;
    });
    server.handle('slow', (_params, context) => {
      started();
      return new Promise((resolve) => {
        context.signal.addEventListener('abort', () => {
          aborted = true;
          resolve(null);
        });
      });
    });
    const client = await open();
    client.request('slow').catch(() => {});
    await running;
    client.destroy();
    await expect.poll(() => aborted).toBe(true);
  });

  it('rejects pending requests with ERR_APP_UNAVAILABLE when the app goes away', async () => {
    const { open, server } = await harness();
    server.handle('hang', () => new Promise(() => {}));
    const client = await open();
    const call = client.request('hang');
    await new Promise((resolve) => setTimeout(resolve, 10));
    server.destroy();
    const error = await rejection(call);
    expect(error.code).toBe('ERR_APP_UNAVAILABLE');
    expect((await rejection(client.request('echo'))).code).toBe('ERR_APP_UNAVAILABLE');
  });

  it('close() lets requests in flight finish, then tells clients', async () => {
    const { open, server } = await harness();
    let finish!: (value: string) => void;
    server.handle('work', () => new Promise<string>((resolve) => (finish = resolve)));
    const client = await open();
    const closing: unknown[] = [];
    client.on('closing', (notice) => closing.push(notice));
    const call = client.request('work');
    await expect.poll(() => typeof finish).toBe('function');
    const closed = server.close();
    finish('done');
    expect(await call).toBe('done');
    await closed;
    expect(closing).toEqual([
      { reason: 'shutdown', code: 'ERR_APP_UNAVAILABLE', message: 'The app is shutting down.' },
    ]);
    expect((await rejection(client.request('echo'))).code).toBe('ERR_APP_UNAVAILABLE');
  });

  it('times a request out with ERR_TIMEOUT and tells the server to stop', async () => {
    const { open, server } = await harness();
    let cancelled = false;
    server.handle(
      'hang',
      (_p, context) =>
        new Promise(() => {
          context.signal.addEventListener('abort', () => {
            cancelled = true;
          });
        }),
    );
    const client = await open();
    expect((await rejection(client.request('hang', undefined, { timeoutMs: 30 }))).code).toBe(
      'ERR_TIMEOUT',
    );
    await expect.poll(() => cancelled).toBe(true);
  });
});

describe('peer admission', () => {
  it('rejects a peer of another user before reading anything, and reports who and why', async () => {
    const { listener, server } = await harness();
    let handled = 0;
    server.handle('count', () => ++handled);
    const rejected: unknown[] = [];
    server.on('peer-rejected', (event) => rejected.push(event));
    const error = await rejection(
      connect({
        app: 'test-app',
        transport: await listener.connect({ peer: peer(9, { uid: uid + 1 }) }),
        timeoutMs: 500,
      }),
    );
    expect(error.code).toBe('ERR_PEER_REJECTED');
    expect(error.message).not.toContain('uid');
    expect(rejected).toEqual([
      expect.objectContaining({
        policy: 'same-user',
        code: 'ERR_PEER_REJECTED',
        reason: expect.stringContaining(`uid ${uid + 1}`),
      }),
    ]);
    expect(handled).toBe(0);
  });

  it('runs custom peer policies and refuses peers it cannot identify', async () => {
    const { listener, server } = await harness({
      peerPolicies: [
        {
          name: 'even-pids',
          check: (p) =>
            p.pid! % 2 === 0 ? { allowed: true } : { allowed: false, reason: 'odd pid' },
        },
      ],
    });
    const rejected: Array<{ policy: string }> = [];
    server.on('peer-rejected', (event) => rejected.push(event));
    await connect({ app: 'test-app', transport: await listener.connect({ peer: peer(10) }) });
    await rejection(
      connect({
        app: 'test-app',
        transport: await listener.connect({ peer: peer(11) }),
        timeoutMs: 500,
      }),
    );
    await rejection(
      connect({
        app: 'test-app',
        transport: await listener.connect({ peer: peer(12, { startTime: undefined }) }),
        timeoutMs: 500,
      }),
    );
    expect(rejected.map((event) => event.policy)).toEqual(['even-pids', 'session']);
  });

  it('refuses connections over the limit with ERR_CONNECTION_LIMIT and keeps serving the others', async () => {
    const { open } = await harness({ maxConnections: 2 });
    const a = await open({ peer: peer(1) });
    await open({ peer: peer(2) });
    const error = await rejection(open({ peer: peer(3) }));
    expect(error.code).toBe('ERR_CONNECTION_LIMIT');
    expect(await a.request('echo', { ok: true })).toEqual({ ok: true });
  });
});

describe('transport pair', () => {
  it('serves a transport handed to accept()', async () => {
    const { server } = await harness();
    const [clientEnd, serverEnd]: [Transport, Transport] = createMemoryPair({
      clientPeer: peer(77),
    });
    server.accept(serverEnd);
    const client = await connect({ app: 'test-app', transport: clientEnd });
    expect(client.session.id).toBe('process:77:1077');
    await client.close();
  });
});

describe('review fixes', () => {
  it('answers ERR_INTERNAL (and tells the app) when a result is not JSON, instead of hanging', async () => {
    const { open, server } = await harness();
    server.handle('bigint', () => ({ n: 10n }));
    server.handle('cycle', () => {
      const cycle: Record<string, unknown> = {};
      cycle.self = cycle;
      return cycle;
    });
    const errors: Array<{ context: string }> = [];
    server.on('error', (event) => errors.push(event));
    const client = await open();
    for (const method of ['bigint', 'cycle']) {
      const error = await rejection(client.request(method, undefined, { timeoutMs: 2_000 }));
      expect(error.code).toBe('ERR_INTERNAL');
    }
    expect(errors.map((event) => event.context)).toEqual(['sending a result', 'sending a result']);
    expect(await client.request('echo', { ok: 1 })).toEqual({ ok: 1 });
  });

  it('closes the connection of a client that reuses an id still in flight (no id gets two answers)', async () => {
    const { listener, server } = await harness();
    server.handle('hang', () => new Promise(() => {}));
    const transport = await listener.connect();
    const received: Message[] = [];
    transport.onMessage((message) => received.push(message));
    transport.send({
      jsonrpc: '2.0',
      id: 1,
      method: 'bridgekeeper.hello',
      params: { protocol: { min: 1, max: 1 }, client: { name: 'x' } },
    });
    transport.send({ jsonrpc: '2.0', id: 7, method: 'hang' });
    transport.send({ jsonrpc: '2.0', id: 7, method: 'hang' });
    await expect.poll(() => transport.closed).toBe(true);
    expect(received.filter((message) => message.id === 7)).toEqual([]);
    expect(received.at(-1)).toMatchObject({
      method: 'bridgekeeper.closing',
      params: { code: 'ERR_PROTOCOL' },
    });
  });

  it('close() takes prompts down at once, refuses new requests, and lets running handlers finish', async () => {
    const prompt = new ManualPrompt();
    const { open, server } = await harness({ prompt });
    let finish!: (value: string) => void;
    server.handle('work', () => new Promise<string>((resolve) => (finish = resolve)));
    const a = await open({ peer: peer(1) });
    const b = await open({ peer: peer(2) });
    const running = a.request('work');
    await expect.poll(() => typeof finish).toBe('function');
    const waiting = b.request('secret', { account: 'work' });
    await prompt.next();
    const closed = server.close();
    const refused = await rejection(waiting);
    expect(refused.code).toBe('ERR_APP_UNAVAILABLE');
    await expect.poll(() => prompt.aborted.length).toBe(1);
    expect((await rejection(a.request('echo'))).code).toBe('ERR_APP_UNAVAILABLE');
    finish('done');
    expect(await running).toBe('done');
    await closed;
    expect(server.authorizer.listGrants()).toEqual([]);
  });

  it('close() destroys what is left after closeTimeoutMs', async () => {
    const { open, server } = await harness({ closeTimeoutMs: 50 });
    server.handle('forever', () => new Promise(() => {}));
    const client = await open();
    const call = client.request('forever');
    await new Promise((resolve) => setTimeout(resolve, 10));
    const started = performance.now();
    await server.close();
    expect(performance.now() - started).toBeLessThan(1_000);
    expect((await rejection(call)).code).toBe('ERR_APP_UNAVAILABLE');
  });

  it('turns a credentials provider that throws synchronously into a rejected peer, not a crash', async () => {
    const { listener, server } = await harness({
      credentials: {
        derive() {
          throw new Error('cannot place this pid');
        },
      },
    });
    const rejected: Array<{ policy: string; code: string }> = [];
    server.on('peer-rejected', (event) => rejected.push(event));
    const error = await rejection(
      connect({ app: 'test-app', transport: await listener.connect(), timeoutMs: 1_000 }),
    );
    expect(error.code).toBe('ERR_PEER_UNKNOWN');
    expect(rejected).toEqual([
      expect.objectContaining({ policy: 'session', code: 'ERR_PEER_UNKNOWN' }),
    ]);
  });

  it('refuses to authorize an account whose display name is malformed (an app bug)', async () => {
    const prompt = new ManualPrompt();
    const { open, server } = await harness({ prompt });
    server.handle(
      'bad-account',
      { account: () => ({ id: 'x', displayName: 'y'.repeat(201) }) },
      () => 1,
    );
    server.handle('empty-account', { account: () => '' }, () => 1);
    const client = await open();
    expect((await rejection(client.request('bad-account'))).code).toBe('ERR_INTERNAL');
    expect((await rejection(client.request('empty-account'))).code).toBe('ERR_INTERNAL');
    expect(prompt.requests).toHaveLength(0);
  });
});

describe('client checks of the server', () => {
  it('checks a given transport too: verifyServer needs a same-user peer, serverPolicies run on it', async () => {
    const { listener } = await harness();
    const noPeer = await rejection(
      connect({ app: 'test-app', transport: await listener.connect({ serverPeer: undefined }) }),
    );
    expect(noPeer.code).toBe('ERR_SERVER_REJECTED');
    const otherUser = await rejection(
      connect({
        app: 'test-app',
        transport: await listener.connect({ serverPeer: peer(1, { uid: uid + 1 }) }),
      }),
    );
    expect(otherUser.code).toBe('ERR_SERVER_REJECTED');
    let ran = 0;
    const refused = await rejection(
      connect({
        app: 'test-app',
        transport: await listener.connect(),
        serverPolicies: [
          {
            name: 'never',
            check: () => {
              ran++;
              return { allowed: false, reason: 'test' };
            },
          },
        ],
      }),
    );
    expect(refused.code).toBe('ERR_SERVER_REJECTED');
    expect(ran).toBe(1);
    const unchecked = await connect({
      app: 'test-app',
      transport: await listener.connect({ serverPeer: undefined }),
      verifyServer: false,
    });
    expect(await unchecked.request('echo', [1])).toEqual([1]);
    await unchecked.close();
  });

  it('refuses to run setgid with the inspector on (SIGUSR1 would let same-user code in)', async () => {
    const { listener } = await harness();
    const getegid = vi.spyOn(process, 'getegid').mockReturnValue((process.getgid?.() ?? 0) + 4242);
    try {
      const error = await rejection(
        connect({ app: 'test-app', transport: await listener.connect() }),
      );
      expect(error.code).toBe('ERR_UNSUPPORTED_PLATFORM');
      expect(error.message).toContain('SIGUSR1');
      process.execArgv.push('--disable-sigusr1');
      try {
        const client = await connect({ app: 'test-app', transport: await listener.connect() });
        await client.close();
      } finally {
        process.execArgv.pop();
      }
    } finally {
      getegid.mockRestore();
    }
  });
});
