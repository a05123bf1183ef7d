/**
 * Attacks on the relay (src/transport/relay.ts) found in review, each fixed: a same-user process
 * posing as the relay, a client overflowing the app's shared connection within its message
 * quota, a client frame that fits the relay but not the app. Real Unix sockets on Linux.
 */

import { type ChildProcess, spawn } from 'node:child_process';
import { chmodSync, mkdtempSync, readFileSync, readlinkSync, rmSync } from 'node:fs';
import { connect as netConnect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { loadPlatform, type Platform } from '../../src/platform/platform.js';
import { peerPredicate } from '../../src/policy/peer-policy.js';
import { ScriptedPromptBackend } from '../../src/prompt/scripted.js';
import { createServer } from '../../src/server.js';
import { createRelay, type Relay, relayListener } from '../../src/transport/relay.js';
import type { Message, Transport } from '../../src/transport/transport.js';
import { connectUnixSocket, listenUnixSocket, socketFd } from '../../src/transport/unix-socket.js';

const isLinux = process.platform === 'linux';
let dir: string;
let socketPath: string;
let platform: Platform;
const cleanups: (() => unknown)[] = [];
const children: ChildProcess[] = [];

beforeEach(async () => {
  dir = mkdtempSync(join(tmpdir(), 'bk-relay-review-'));
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

async function startRelay(listenOptions: { maxFrameBytes?: number } = {}): Promise<Relay> {
  const listener = await listenUnixSocket({
    path: socketPath,
    identify,
    release: (peer) => platform.releasePeer(peer),
    ...listenOptions,
  });
  const relay = createRelay({
    listener,
    appPolicies: [peerPredicate('is-test-process', (peer) => peer.pid === process.pid)],
    releasePeer: (peer) => platform.releasePeer(peer),
  });
  cleanups.push(() => relay.close());
  return relay;
}

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

const hello = {
  jsonrpc: '2.0',
  id: 1,
  method: 'bridgekeeper.hello',
  params: { protocol: { min: 1, max: 1 }, client: { name: 'raw' } },
};

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
    const relay = await startRelay();
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
    const relay = await startRelay({ maxFrameBytes: 1024 * 1024 + 4096 });
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
