/**
 * The relay end to end on Linux over real Unix sockets, with peers identified by the kernel
 * (SO_PEERCRED through the Linux platform module): a real app server behind the relay, real
 * clients in this process (`connect()`) and in child processes (raw frames), so that the pid the
 * app sees is provably the client's and not the relay's.
 */

import { type ChildProcess, spawn } from 'node:child_process';
import { chmodSync, mkdtempSync, readFileSync, readlinkSync, rmSync } from 'node:fs';
import { connect as netConnect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { connect } from '../../src/client.js';
import type { BridgekeeperError } from '../../src/errors.js';
import { loadPlatform, type Platform } from '../../src/platform/platform.js';
import { peerPredicate } from '../../src/policy/peer-policy.js';
import { ScriptedPromptBackend } from '../../src/prompt/scripted.js';
import { createServer, type Server } from '../../src/server.js';
import {
  createRelay,
  type Relay,
  type RelayEvent,
  relayListener,
} from '../../src/transport/relay.js';
import type { Message, Transport, TransportListener } from '../../src/transport/transport.js';
import { connectUnixSocket, listenUnixSocket, socketFd } from '../../src/transport/unix-socket.js';

const isLinux = process.platform === 'linux';

let dir: string;
let socketPath: string;
let platform: Platform;
const cleanups: (() => unknown)[] = [];
const children: ChildProcess[] = [];

beforeEach(async () => {
  dir = mkdtempSync(join(tmpdir(), 'bk-relay-'));
  chmodSync(dir, 0o700);
  socketPath = join(dir, 'relay.sock');
  platform = await loadPlatform();
});

afterEach(async () => {
  for (const child of children.splice(0)) child.kill('SIGKILL');
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  rmSync(dir, { recursive: true, force: true });
});

const identify = (socket: Socket) => platform.identifySocketPeer(socketFd(socket)!);

/** The listener, with a record of which accepted transports ever had onMessage called. */
interface Spied {
  listener: TransportListener;
  read: Set<Transport>;
  accepted: Transport[];
}

async function listen(maxFrameBytes?: number): Promise<Spied> {
  const inner = await listenUnixSocket({
    path: socketPath,
    identify,
    release: (peer) => platform.releasePeer(peer),
    ...(maxFrameBytes ? { maxFrameBytes } : {}),
  });
  const read = new Set<Transport>();
  const accepted: Transport[] = [];
  const listener: TransportListener = {
    address: inner.address,
    onConnection: (subscriber) =>
      inner.onConnection((transport) => {
        accepted.push(transport);
        const spy = new Proxy(transport, {
          get(target, key) {
            if (key === 'onMessage') {
              return (fn: (m: Message) => void) => {
                read.add(transport);
                return target.onMessage(fn);
              };
            }
            const value = Reflect.get(target, key, target);
            return typeof value === 'function' ? value.bind(target) : value;
          },
        });
        subscriber(spy);
      }),
    close: () => inner.close(),
    [Symbol.asyncDispose]: () => inner.close(),
  };
  return { listener, read, accepted };
}

interface Setup {
  relay: Relay;
  events: RelayEvent[];
  spied: Spied;
}

async function startRelay(
  options: { clientPids?: Set<number>; maxPendingMessages?: number; maxFrameBytes?: number } = {},
): Promise<Setup> {
  const spied = await listen(options.maxFrameBytes);
  const events: RelayEvent[] = [];
  const relay = createRelay({
    listener: spied.listener,
    // Only this very process may be the app; children never.
    appPolicies: [peerPredicate('is-test-process', (peer) => peer.pid === process.pid)],
    ...(options.clientPids
      ? {
          clientPolicies: [
            peerPredicate('listed-client', (peer) => options.clientPids!.has(peer.pid ?? -1)),
          ],
        }
      : {}),
    releasePeer: (peer) => platform.releasePeer(peer),
    onEvent: (event) => events.push(event),
    ...(options.maxPendingMessages ? { maxPendingMessages: options.maxPendingMessages } : {}),
  });
  cleanups.push(() => relay.close());
  return { relay, events, spied };
}

/** The relay is this test process: the app checks that, as a real app checks the relay's signature. */
const relayIsThisProcess = peerPredicate(
  'relay-is-this-process',
  (peer) => peer.pid === process.pid,
);
const relayPolicies = [relayIsThisProcess];

async function connectApp(): Promise<TransportListener> {
  const transport = await connectUnixSocket(socketPath, { identify });
  const listener = await relayListener(transport, {
    relayPolicies,
    signal: AbortSignal.timeout(5000),
  });
  cleanups.push(() => transport.destroy());
  return listener;
}

async function startApp(): Promise<{
  server: Server;
  prompt: ScriptedPromptBackend;
  listener: TransportListener;
}> {
  const prompt = new ScriptedPromptBackend({ decide: () => ({ result: 'granted' }) });
  const server = createServer({ app: 'bk-relay-test', prompt });
  server.handle(
    'secret',
    { account: () => ({ id: 'work', displayName: 'Work' }) },
    (_params, context) => ({ pid: context.peer?.pid, source: context.peer?.source }),
  );
  server.handle('echo', (params) => params);
  const listener = await connectApp();
  await server.listen({ listener });
  cleanups.push(() => server.close());
  return { server, prompt, listener };
}

async function connectClient() {
  const transport = await connectUnixSocket(socketPath, { identify });
  const client = await connect({ app: 'bk-relay-test', transport });
  cleanups.push(() => client.close());
  return client;
}

/** A client in a child process: sends the given messages as frames, prints every frame it gets. */
const RAW_CLIENT = `
const net = require('node:net');
const [path, ...messages] = process.argv.slice(1);
const socket = net.connect(path, () => {
  for (const m of messages) {
    const body = Buffer.from(m);
    const head = Buffer.alloc(4);
    head.writeUInt32BE(body.length);
    socket.write(Buffer.concat([head, body]));
  }
});
let buffer = Buffer.alloc(0);
socket.on('data', (chunk) => {
  buffer = Buffer.concat([buffer, chunk]);
  while (buffer.length >= 4) {
    const n = buffer.readUInt32BE(0);
    if (buffer.length < 4 + n) break;
    process.stdout.write(buffer.subarray(4, 4 + n).toString() + '\\n');
    buffer = buffer.subarray(4 + n);
  }
});
socket.on('error', (e) => process.stdout.write(JSON.stringify({ socketError: e.code }) + '\\n'));
socket.on('close', () => { process.stdout.write('"CLOSED"\\n'); setTimeout(() => process.exit(0), 10); });
`;

interface RawClient {
  pid: number;
  /** Every frame received, up to and including the "CLOSED" marker. */
  lines: () => unknown[];
  until: (predicate: (lines: unknown[]) => boolean) => Promise<unknown[]>;
}

function rawClient(messages: Message[]): RawClient {
  const child = spawn(
    process.execPath,
    ['-e', RAW_CLIENT, socketPath, ...messages.map((m) => JSON.stringify(m))],
    { stdio: ['ignore', 'pipe', 'inherit'] },
  );
  children.push(child);
  const lines: unknown[] = [];
  let text = '';
  const waiters = new Set<() => void>();
  child.stdout!.setEncoding('utf8').on('data', (chunk: string) => {
    text += chunk;
    let index = text.indexOf('\n');
    while (index >= 0) {
      lines.push(JSON.parse(text.slice(0, index)));
      text = text.slice(index + 1);
      index = text.indexOf('\n');
    }
    for (const wake of waiters) wake();
  });
  return {
    pid: child.pid!,
    lines: () => lines,
    until: (predicate) =>
      new Promise((resolve) => {
        const check = () => {
          if (predicate(lines)) {
            waiters.delete(check);
            resolve(lines);
          }
        };
        waiters.add(check);
        check();
      }),
  };
}

const hello = {
  jsonrpc: '2.0',
  id: 1,
  method: 'bridgekeeper.hello',
  params: { protocol: { min: 1, max: 1 }, client: { name: 'raw' } },
};
const closed = (lines: unknown[]) => lines.includes('CLOSED');

function frame(message: unknown): Buffer {
  const body = Buffer.from(JSON.stringify(message));
  const head = Buffer.alloc(4);
  head.writeUInt32BE(body.length);
  return Buffer.concat([head, body]);
}

/** An app that registers over a raw socket, then reads nothing until told to. */
async function rawApp(): Promise<Socket> {
  const socket = netConnect(socketPath);
  cleanups.push(() => socket.destroy());
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', resolve);
    socket.once('error', reject);
  });
  socket.write(
    frame({
      jsonrpc: '2.0',
      id: 1,
      method: 'bridgekeeper.relay.register-app',
      params: { protocol: 1 },
    }),
  );
  await new Promise<void>((resolve) => socket.once('data', () => resolve()));
  return socket;
}

describe.skipIf(!isLinux)('relay over Unix sockets', () => {
  it('passes a request that needs an account from connect() to a real server, which prompts', async () => {
    await startRelay();
    const { prompt } = await startApp();
    const client = await connectClient();
    const result = (await client.request('secret', {})) as { pid: number; source: string };
    expect(result).toEqual({ pid: process.pid, source: 'relay:so_peercred' });
    expect(prompt.requests).toHaveLength(1);
    expect(prompt.requests[0]!.account.id).toBe('work');
  });

  it("gives the app the client's own pid, not the relay's (client in another process)", async () => {
    const { relay } = await startRelay();
    await startApp();
    const child = rawClient([hello, { jsonrpc: '2.0', id: 2, method: 'secret', params: {} }]);
    const lines = await child.until((l) => l.some((m) => (m as Message).id === 2));
    const answer = lines.find((m) => (m as Message).id === 2) as Message;
    expect(answer.result).toEqual({ pid: child.pid, source: 'relay:so_peercred' });
    expect(child.pid).not.toBe(process.pid);
    expect(relay.channels).toBe(1);
  });

  it('refuses a client that fails clientPolicies without reading any of its bytes', async () => {
    const { events, spied } = await startRelay({ clientPids: new Set([process.pid]) });
    const { server } = await startApp();
    const connections: unknown[] = [];
    server.on('connection', (c) => connections.push(c));
    const child = rawClient([hello, { jsonrpc: '2.0', id: 2, method: 'echo', params: {} }]);
    const lines = await child.until(closed);
    expect(lines[0]).toMatchObject({
      method: 'bridgekeeper.closing',
      params: { reason: 'peer-rejected', code: 'ERR_PEER_REJECTED' },
    });
    expect(lines.filter((m) => (m as Message).id !== undefined)).toEqual([]);
    const refused = spied.accepted.find((t) => t.peer?.pid === child.pid)!;
    expect(refused).toBeDefined();
    expect(spied.read.has(refused)).toBe(false);
    expect(events).toContainEqual(
      expect.objectContaining({
        type: 'peer-rejected',
        policy: 'listed-client',
        code: 'ERR_PEER_REJECTED',
      }),
    );
    expect(connections).toEqual([]);
  });

  it('does not let a peer that fails appPolicies register as the app', async () => {
    const { relay, events } = await startRelay();
    const child = rawClient([
      { jsonrpc: '2.0', id: 1, method: 'bridgekeeper.relay.register-app', params: { protocol: 1 } },
    ]);
    const lines = await child.until(closed);
    expect(lines[0]).toMatchObject({ id: 1, error: { data: { code: 'ERR_PEER_REJECTED' } } });
    expect(relay.appConnected).toBe(false);
    expect(events).toContainEqual(
      expect.objectContaining({ type: 'peer-rejected', policy: 'app' }),
    );
  });

  it('refuses a second app while the first is connected, and keeps serving the first', async () => {
    const { relay } = await startRelay();
    await startApp();
    const second = await connectUnixSocket(socketPath, { identify });
    await expect(relayListener(second, { relayPolicies })).rejects.toMatchObject({
      code: 'ERR_ALREADY_RUNNING',
    });
    expect(second.closed).toBe(true);
    expect(relay.appConnected).toBe(true);
    const client = await connectClient();
    expect(await client.request('echo', { still: 'served' })).toEqual({ still: 'served' });
  });

  it('closes every client with ERR_APP_UNAVAILABLE when the app disconnects, and refuses new ones', async () => {
    const { relay } = await startRelay();
    // The app side without a server: a listener that never answers, so requests stay pending.
    const appTransport = await connectUnixSocket(socketPath, { identify });
    const listener = await relayListener(appTransport, { relayPolicies });
    const accepted: Transport[] = [];
    listener.onConnection((t) => {
      accepted.push(t);
      t.onMessage(() => {});
    });
    const clientTransports = await Promise.all([
      connectUnixSocket(socketPath, { identify }),
      connectUnixSocket(socketPath, { identify }),
    ]);
    const notices: Message[][] = [[], []];
    const closes = clientTransports.map(
      (t, i) =>
        new Promise<void>((resolve) => {
          t.onMessage((m) => notices[i]!.push(m));
          t.onClose(() => resolve());
        }),
    );
    for (const t of clientTransports) t.send(hello);
    await expect.poll(() => accepted.length).toBe(2);
    appTransport.destroy();
    await Promise.all(closes);
    for (const list of notices) {
      expect(list).toEqual([
        {
          jsonrpc: '2.0',
          method: 'bridgekeeper.closing',
          params: expect.objectContaining({ code: 'ERR_APP_UNAVAILABLE' }),
        },
      ]);
    }
    await expect.poll(() => relay.appConnected).toBe(false);
    expect(relay.channels).toBe(0);
    // A new client now: told the app is not running.
    await expect(connectClient()).rejects.toMatchObject({ code: 'ERR_APP_UNAVAILABLE' });
  });

  it('a connect() client sees ERR_APP_UNAVAILABLE when the app goes away', async () => {
    await startRelay();
    const appTransport = await connectUnixSocket(socketPath, { identify });
    const prompt = new ScriptedPromptBackend({ manual: true });
    const server = createServer({ app: 'bk-relay-test', prompt });
    server.handle('secret', { account: () => ({ id: 'work', displayName: 'Work' }) }, () => 'x');
    await server.listen({ listener: await relayListener(appTransport, { relayPolicies }) });
    const client = await connectClient();
    const pending = client.request('secret', {});
    await prompt.nextPrompt();
    appTransport.destroy();
    const error = (await pending.catch((e: unknown) => e)) as BridgekeeperError;
    expect(error.code).toBe('ERR_APP_UNAVAILABLE');
    await server.close();
  });

  it('keeps channels apart and in order', async () => {
    await startRelay();
    const listener = await connectApp();
    // An echo app that tags every answer with the pid and channel it came from.
    let next = 0;
    listener.onConnection((t) => {
      const tag = ++next;
      t.onMessage((m) => t.send({ ...m, tag }));
    });
    const clients = await Promise.all(
      [0, 1, 2].map(() => connectUnixSocket(socketPath, { identify })),
    );
    const received: Message[][] = clients.map(() => []);
    for (const [i, t] of clients.entries()) t.onMessage((m) => received[i]!.push(m));
    const COUNT = 300;
    for (let n = 0; n < COUNT; n++) {
      for (const [i, t] of clients.entries()) t.send({ client: i, n });
    }
    await expect
      .poll(() => received.map((r) => r.length), { timeout: 10_000 })
      .toEqual([COUNT, COUNT, COUNT]);
    received.forEach((list, i) => {
      expect(list.map((m) => m.client)).toEqual(Array(COUNT).fill(i));
      expect(list.map((m) => m.n)).toEqual([...Array(COUNT).keys()]);
      expect(new Set(list.map((m) => m.tag)).size).toBe(1);
    });
    expect(new Set(received.map((list) => list[0]!.tag)).size).toBe(3);
    for (const t of clients) await t.close();
  });

  it('closes a channel whose messages the app does not take, and only that one', async () => {
    const { relay } = await startRelay({ maxPendingMessages: 8 });
    const listener = await connectApp();
    const app: Transport[] = [];
    listener.onConnection((t) => {
      app.push(t);
      // The first client's channel is never read; the second is echoed.
      if (app.length === 2) t.onMessage((m) => t.send(m));
    });
    const stuck = await connectUnixSocket(socketPath, { identify });
    const stuckMessages: Message[] = [];
    const stuckClosed = new Promise<void>((resolve) => stuck.onClose(() => resolve()));
    stuck.onMessage((m) => stuckMessages.push(m));
    stuck.send({ n: 0 });
    await expect.poll(() => app.length).toBe(1);
    const fine = await connectUnixSocket(socketPath, { identify });
    const fineMessages: Message[] = [];
    fine.onMessage((m) => fineMessages.push(m));
    fine.send({ ok: 1 });
    await expect.poll(() => fineMessages).toEqual([{ ok: 1 }]);
    for (let n = 1; n <= 20; n++) if (!stuck.closed) stuck.send({ n });
    await stuckClosed;
    expect(stuckMessages).toEqual([
      expect.objectContaining({
        method: 'bridgekeeper.closing',
        params: expect.objectContaining({ code: 'ERR_SEND_BUFFER_FULL' }),
      }),
    ]);
    await expect.poll(() => app[0]!.closed).toBe(true);
    fine.send({ ok: 2 });
    await expect.poll(() => fineMessages).toEqual([{ ok: 1 }, { ok: 2 }]);
    expect(relay.channels).toBe(1);
    await fine.close();
  });

  it('closes the app side when a client closes, and the client when the app side closes', async () => {
    const { relay } = await startRelay();
    const listener = await connectApp();
    const app: Transport[] = [];
    listener.onConnection((t) => {
      app.push(t);
      t.onMessage((m) => {
        if (m.bye) void t.close();
      });
    });
    const a = await connectUnixSocket(socketPath, { identify });
    a.send({ hi: 1 });
    await expect.poll(() => app.length).toBe(1);
    const appClose = new Promise((resolve) => app[0]!.onClose(resolve));
    await a.close();
    expect(await appClose).toEqual({ local: false });
    const b = await connectUnixSocket(socketPath, { identify });
    const bClosed = new Promise((resolve) => b.onClose(resolve));
    b.onMessage(() => {});
    b.send({ bye: true });
    await bClosed;
    await expect.poll(() => relay.channels).toBe(0);
  });
});

describe('the app side', () => {
  it('refuses to trust a relay without relayPolicies (a same-user check alone lets any process pose as the relay)', async () => {
    const { relay } = await startRelay();
    void relay;
    const transport = await connectUnixSocket(socketPath, { identify });
    cleanups.push(() => transport.destroy());
    for (const options of [undefined, {}, { relayPolicies: [] }]) {
      await expect(
        relayListener(transport, options as unknown as { relayPolicies: [] }),
      ).rejects.toMatchObject({ code: 'ERR_INVALID_ARGUMENT' });
    }
  });
});

/*
 * Attacks found in review, each fixed: a same-user process posing as the relay, a client
 * overflowing the app's shared connection within its message quota, a client frame that fits
 * the relay but not the app.
 */
describe.skipIf(!isLinux)('relay: attacks found in review', () => {
  it('the app does not take forged client identities from a same-user process posing as the relay', async () => {
    // A same-user process (the attacker) listens where the app expects its relay.
    const victim = spawn('sleep', ['30'], { stdio: 'ignore' });
    children.push(victim);
    await new Promise((resolve) => victim.once('spawn', resolve));
    const stat = readFileSync(`/proc/${victim.pid}/stat`, 'utf8');
    const startTime = stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19]!;
    const forged = {
      pid: victim.pid!,
      uid: process.getuid!(),
      gid: process.getgid!(),
      startTime,
      executable: readlinkSync(`/proc/${victim.pid}/exe`),
      source: 'relay:so_peercred',
    };
    const fake = await listenUnixSocket({ path: socketPath, identify });
    cleanups.push(() => fake.close());
    fake.onConnection((app: Transport) => {
      app.onMessage((m: Message) => {
        if (m.method === 'bridgekeeper.relay.register-app') {
          app.send({ jsonrpc: '2.0', id: m.id, result: { protocol: 1, maxPendingMessages: 1024 } });
          app.send({
            jsonrpc: '2.0',
            method: 'bridgekeeper.relay.open',
            params: { channel: 1, peer: forged },
          });
          for (const message of [hello, { jsonrpc: '2.0', id: 2, method: 'secret', params: {} }]) {
            app.send({
              jsonrpc: '2.0',
              method: 'bridgekeeper.relay.message',
              params: { channel: 1, message },
            });
          }
        }
      });
    });

    const served: number[] = [];
    const prompt = new ScriptedPromptBackend({ decide: () => ({ result: 'granted' }) });
    const server = createServer({ app: 'bk-relay-review', prompt });
    server.handle('secret', { account: () => ({ id: 'work', displayName: 'Work' }) }, (_p, ctx) => {
      served.push(ctx.peer?.pid ?? -1);
      return 'secret';
    });
    cleanups.push(() => server.close());
    const transport = await connectUnixSocket(socketPath, { identify });
    cleanups.push(() => transport.destroy());
    // The app names its relay (here: a pid no fake can have; a real app: a code-signing
    // requirement); relayListener refuses to run without such a policy at all.
    const realRelay = peerPredicate('the real relay', (peer) => peer.pid === 0x7fffffff);
    const registered = await relayListener(transport, { relayPolicies: [realRelay] }).then(
      (listener) => server.listen({ listener }).then(() => true),
      () => false,
    );
    await new Promise((resolve) => setTimeout(resolve, 500));
    // The app must not have served the attacker's request as the victim process.
    expect({ registered, served }).toEqual({ registered: false, served: [] });
  });

  it('one client cannot unregister the app (and drop every other client) by a burst within its message quota', async () => {
    const { relay } = await startRelay();
    const app = await rawApp();
    app.pause(); // The app is briefly busy (GC, App Nap, a slow handler) and reads nothing.
    expect(relay.appConnected).toBe(true);

    const bystander = await connectUnixSocket(socketPath, { identify });
    cleanups.push(() => bystander.destroy());
    bystander.onMessage(() => {});
    bystander.send(hello);

    const flooder = await connectUnixSocket(socketPath, { identify });
    cleanups.push(() => flooder.destroy());
    flooder.onMessage(() => {});
    // 40 messages of 512 KiB: far under maxPendingMessages (1024) and maxFrameBytes (1 MiB).
    const pad = 'x'.repeat(512 * 1024);
    // Paced, so the client's own socket never backs up: the relay reads them all.
    for (let n = 0; n < 40 && !flooder.closed; n++) {
      flooder.send({ jsonrpc: '2.0', method: 'x', params: { pad } });
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    await new Promise((resolve) => setTimeout(resolve, 1000));
    app.resume();
    await new Promise((resolve) => setTimeout(resolve, 200));
    // At worst the flooding client is closed; the app and the other client must stay.
    expect({ app: relay.appConnected, bystanderOpen: !bystander.closed }).toEqual({
      app: true,
      bystanderOpen: true,
    });
  });

  it('a client frame that fits the relay but not the app connection closes only that client', async () => {
    // docs/protocol.md §9: "give the relay's listener a slightly larger maxFrameBytes than the clients'".
    const { relay } = await startRelay({ maxFrameBytes: 1024 * 1024 + 4096 });
    const prompt = new ScriptedPromptBackend({ decide: () => ({ result: 'granted' }) });
    const server = createServer({ app: 'bk-relay-review', prompt });
    server.handle('echo', (params) => params);
    cleanups.push(() => server.close());
    const appTransport = await connectUnixSocket(socketPath, { identify }); // default 1 MiB limit
    cleanups.push(() => appTransport.destroy());
    await server.listen({
      listener: await relayListener(appTransport, {
        relayPolicies: [peerPredicate('relay-is-this-process', (peer) => peer.pid === process.pid)],
      }),
    });

    const bystander = await connectUnixSocket(socketPath, { identify });
    cleanups.push(() => bystander.destroy());
    bystander.onMessage(() => {});
    bystander.send(hello);
    await expect.poll(() => relay.channels).toBe(1);

    // A raw client: a 1 MiB + 1000 byte frame is within the relay's limit, not the app's.
    const attacker = netConnect(socketPath);
    cleanups.push(() => attacker.destroy());
    attacker.on('error', () => {});
    attacker.on('data', () => {});
    await new Promise((resolve) => attacker.once('connect', resolve));
    attacker.write(
      frame({ jsonrpc: '2.0', method: 'x', params: { pad: 'y'.repeat(1024 * 1024 + 1000) } }),
    );
    await new Promise((resolve) => setTimeout(resolve, 1000));
    expect({ app: relay.appConnected, bystanderOpen: !bystander.closed }).toEqual({
      app: true,
      bystanderOpen: true,
    });
  });
});

describe.skipIf(!isLinux)(
  'relay with an app listener of its own (one role per listener, as on XPC)',
  () => {
    /** A relay whose app listens at `<dir>/app.sock`; anyone passes appPolicies and clientPolicies. */
    async function startSplitRelay() {
      const appPath = join(dir, 'app.sock');
      const listener = await listenUnixSocket({ path: socketPath, identify });
      const appListener = await listenUnixSocket({ path: appPath, identify });
      const events: RelayEvent[] = [];
      const everyone = peerPredicate('everyone', () => true);
      const relay = createRelay({
        listener,
        appListener,
        appPolicies: [everyone],
        clientPolicies: [everyone],
        releasePeer: (peer) => platform.releasePeer(peer),
        onEvent: (event) => events.push(event),
      });
      cleanups.push(() => relay.close());
      return { relay, events, appPath };
    }

    it('takes the app only through the app listener, and clients only through the other', async () => {
      const { relay, events, appPath } = await startSplitRelay();

      // Registering through the clients' listener fails, though the app policies would pass.
      const wrongDoor = await connectUnixSocket(socketPath, { identify });
      cleanups.push(() => wrongDoor.destroy());
      await expect(relayListener(wrongDoor, { relayPolicies })).rejects.toMatchObject({
        code: 'ERR_PEER_REJECTED',
      });
      expect(relay.appConnected).toBe(false);

      const appTransport = await connectUnixSocket(appPath, { identify });
      cleanups.push(() => appTransport.destroy());
      const server = createServer({
        app: 'bk-relay-test',
        prompt: new ScriptedPromptBackend({ decide: () => ({ result: 'granted' }) }),
      });
      cleanups.push(() => server.close());
      server.handle('echo', (params) => params);
      await server.listen({ listener: await relayListener(appTransport, { relayPolicies }) });
      expect(relay.appConnected).toBe(true);

      const client = await connect({
        app: 'bk-relay-test',
        transport: await connectUnixSocket(socketPath, { identify }),
      });
      cleanups.push(() => client.close());
      await expect(client.request('echo', { x: 1 })).resolves.toEqual({ x: 1 });

      // A client at the app's door: a first message other than registering closes it, unforwarded.
      const stray = await connectUnixSocket(appPath, { identify });
      cleanups.push(() => stray.destroy());
      const closing = new Promise<Message>((resolve) => stray.onMessage(resolve));
      stray.send({ jsonrpc: '2.0', id: 0, method: 'bridgekeeper.hello', params: {} });
      await expect(closing).resolves.toMatchObject({
        method: 'bridgekeeper.closing',
        params: { code: 'ERR_PEER_REJECTED' },
      });
      expect(relay.channels).toBe(1);
      expect(events).toContainEqual(
        expect.objectContaining({
          type: 'peer-rejected',
          policy: 'client',
          reason: 'it may be the app but did not register, and it is not allowed as a client',
        }),
      );
    });

    it('closes both listeners on close()', async () => {
      const { relay, appPath } = await startSplitRelay();
      await relay.close();
      await expect(connectUnixSocket(appPath, { identify })).rejects.toMatchObject({
        code: 'ERR_APP_UNAVAILABLE',
      });
      await expect(connectUnixSocket(socketPath, { identify })).rejects.toMatchObject({
        code: 'ERR_APP_UNAVAILABLE',
      });
    });
  },
);

describe.skipIf(!isLinux)('relay listeners, from review', () => {
  it('refuses appListener === listener', async () => {
    const listener = await listenUnixSocket({ path: socketPath, identify });
    cleanups.push(() => listener.close());
    expect(() =>
      createRelay({
        listener,
        appListener: listener,
        appPolicies: [peerPredicate('everyone', () => true)],
      }),
    ).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARGUMENT' }));
  });

  it('reports a listener that lost its endpoint as a listener-error event', async () => {
    const listener = await listenUnixSocket({ path: socketPath, identify });
    const events: RelayEvent[] = [];
    const relay = createRelay({
      listener,
      appPolicies: [peerPredicate('everyone', () => true)],
      onEvent: (event) => events.push(event),
    });
    cleanups.push(() => relay.close());
    rmSync(socketPath);
    await expect
      .poll(() => events.find((event) => event.type === 'listener-error'), { timeout: 5_000 })
      .toMatchObject({ type: 'listener-error', app: false, error: { code: 'ERR_ENDPOINT_LOST' } });
  });

  it('a client flood that fills maxConnections does not keep the app from registering at its own listener', async () => {
    const appPath = join(dir, 'app.sock');
    const listener = await listenUnixSocket({ path: socketPath, identify });
    const appListener = await listenUnixSocket({ path: appPath, identify });
    const relay = createRelay({
      listener,
      appListener,
      appPolicies: [peerPredicate('everyone', () => true)],
      clientPolicies: [peerPredicate('everyone', () => true)],
      maxConnections: 3,
    });
    cleanups.push(() => relay.close());
    const flood = await Promise.all(
      Array.from({ length: 4 }, () => connectUnixSocket(socketPath, { identify })),
    );
    for (const transport of flood) {
      transport.onMessage(() => {});
      cleanups.push(() => transport.destroy());
    }
    // The fourth is over the limit and is told so.
    await expect.poll(() => flood.filter((t) => t.closed).length, { timeout: 5_000 }).toBe(1);
    const appTransport = await connectUnixSocket(appPath, { identify });
    cleanups.push(() => appTransport.destroy());
    await relayListener(appTransport, { relayPolicies });
    expect(relay.appConnected).toBe(true);
  });
});
