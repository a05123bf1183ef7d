import { spawn } from 'node:child_process';
import { once } from 'node:events';
import {
  chown,
  link,
  lstat,
  readdir,
  readFile,
  symlink,
  unlink,
  writeFile,
} from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { BridgekeeperError } from '../../src/errors.js';
import { encodeFrame } from '../../src/transport/framing.js';
import type {
  Message,
  PeerIdentity,
  Transport,
  TransportListener,
} from '../../src/transport/transport.js';
import {
  connectUnixSocket,
  listenUnixSocket,
  unixSocketConnector,
} from '../../src/transport/unix-socket.js';
import {
  closed,
  countingIdentity,
  makeTempDirectory,
  PAD,
  rawClosed,
  rawConnect,
  rejectionOf,
  removeDirectory,
  runCleanups,
  runningAsRoot,
  SMALL_LIMITS,
  settled,
  sleep,
} from './helpers.js';

const isRoot = runningAsRoot(
  'unix-socket.test: not running as root, so the other-user socket test is skipped',
);

function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  return Promise.race([
    promise,
    sleep(ms).then(() => {
      throw new Error(`${what} did not happen within ${ms} ms`);
    }),
  ]);
}

function nextMessage(transport: Transport): Promise<Message> {
  return new Promise((resolve) => {
    const subscription = transport.onMessage((message) => {
      subscription.dispose();
      resolve(message);
    });
  });
}

function nextConnection(listener: TransportListener): Promise<Transport> {
  return new Promise((resolve) => {
    const subscription = listener.onConnection((transport) => {
      subscription.dispose();
      resolve(transport);
    });
  });
}

/** Echoes every message back on every connection. */
function serveEcho(listener: TransportListener): Transport[] {
  const connections: Transport[] = [];
  listener.onConnection((transport) => {
    connections.push(transport);
    transport.onMessage((message) => transport.send({ echo: message }));
  });
  return connections;
}

async function roundTrip(socketPath: string, message: Message): Promise<Message> {
  const client = await connectUnixSocket(socketPath);
  try {
    const reply = nextMessage(client);
    client.send(message);
    return await within(reply, 5000, 'the echo');
  } finally {
    client.destroy();
  }
}

/** Sends 16 KiB messages until send() throws (or 100 of them went), and returns what it threw. */
function sendUntilThrow(transport: Transport): BridgekeeperError | undefined {
  for (let attempt = 0; attempt < 100; attempt++) {
    try {
      transport.send({ attempt, pad: PAD });
    } catch (error) {
      return error as BridgekeeperError;
    }
  }
  return undefined;
}

/** Starts `node -e script` and waits until it prints "ready". */
async function startChild(script: string): Promise<ReturnType<typeof spawn>> {
  const child = spawn(process.execPath, ['-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
  let output = '';
  await within(
    new Promise<void>((resolve, reject) => {
      child.stdout!.on('data', (chunk: Buffer) => {
        output += chunk.toString();
        if (output.includes('ready')) resolve();
      });
      child.once('exit', (code) =>
        reject(new Error(`child exited with ${code} before it was ready`)),
      );
    }),
    10_000,
    'the child process starting',
  );
  return child;
}

const listenScript = (socketPath: string): string =>
  `const net = require('node:net');
   net.createServer((s) => s.on('error', () => {})).listen(${JSON.stringify(socketPath)}, () => console.log('ready'));`;

describe('unix socket transport', () => {
  let directory: string;
  let socketPath: string;
  const cleanups: Array<() => unknown> = [];

  beforeEach(async () => {
    directory = await makeTempDirectory('bk-unix-');
    socketPath = path.join(directory, 'agent.sock');
  });

  afterEach(async () => {
    await runCleanups(cleanups);
    await removeDirectory(directory);
  });

  const listen = async (
    options: Partial<Parameters<typeof listenUnixSocket>[0]> = {},
  ): Promise<TransportListener> => {
    const listener = await listenUnixSocket({ path: socketPath, ...options });
    cleanups.push(() => listener.close());
    return listener;
  };

  describe('publishing the socket', () => {
    it('publishes a 0600 socket at the path and leaves no temporary name behind', async () => {
      const listener = await listen();
      expect(listener.address).toBe(socketPath);
      const stats = await lstat(socketPath);
      expect(stats.isSocket()).toBe(true);
      expect(stats.mode & 0o777).toBe(0o600);
      expect(await readdir(directory)).toEqual(['agent.sock']);
      serveEcho(listener);
      expect(await roundTrip(socketPath, { ping: 1 })).toEqual({ echo: { ping: 1 } });
    });

    it('removes its socket on close, and close is idempotent', async () => {
      const listener = await listen();
      await listener.close();
      await listener.close();
      expect(await readdir(directory)).toEqual([]);
      const error = await rejectionOf(connectUnixSocket(socketPath));
      expect(error.code).toBe('ERR_APP_UNAVAILABLE');
    });

    it('refuses a regular file at the socket path and leaves it alone', async () => {
      await writeFile(socketPath, 'precious');
      const error = await rejectionOf(listenUnixSocket({ path: socketPath }));
      expect(error.code).toBe('ERR_UNSAFE_ENDPOINT');
      expect(error.message).toContain(socketPath);
      expect(await readFile(socketPath, 'utf8')).toBe('precious');
      expect(await readdir(directory)).toEqual(['agent.sock']);
    });

    it('refuses a symbolic link at the socket path, even one to a live socket', async () => {
      const other = await listenUnixSocket({ path: path.join(directory, 'real.sock') });
      cleanups.push(() => other.close());
      await symlink(path.join(directory, 'real.sock'), socketPath);
      const error = await rejectionOf(listenUnixSocket({ path: socketPath }));
      expect(error.code).toBe('ERR_UNSAFE_ENDPOINT');
      expect(error.message).toContain('symbolic link');
      expect((await lstat(socketPath)).isSymbolicLink()).toBe(true);
    });

    it.skipIf(!isRoot)(
      "refuses another user's socket at the path (needs root to chown)",
      async () => {
        const child = await startChild(listenScript(socketPath));
        cleanups.push(() => child.kill('SIGKILL'));
        await chown(socketPath, 65534, 65534);
        const error = await rejectionOf(listenUnixSocket({ path: socketPath }));
        expect(error.code).toBe('ERR_UNSAFE_ENDPOINT');
        expect(error.message).toContain('65534');
      },
    );

    it('removes a stale socket left by a SIGKILLed server and starts', async () => {
      const child = await startChild(listenScript(socketPath));
      child.kill('SIGKILL');
      await once(child, 'exit');
      expect((await lstat(socketPath)).isSocket()).toBe(true);
      const stale = await lstat(socketPath);
      const listener = await listen();
      const fresh = await lstat(socketPath);
      expect(fresh.ino).not.toBe(stale.ino);
      serveEcho(listener);
      expect(await roundTrip(socketPath, { after: 'stale' })).toEqual({ echo: { after: 'stale' } });
      expect(await readdir(directory)).toEqual(['agent.sock']);
    });

    it('refuses with ERR_ALREADY_RUNNING while another server in this process answers; the first keeps serving', async () => {
      const first = await listen({ identify: () => ({ pid: 4242, source: 'test' }) });
      serveEcho(first);
      const before = await lstat(socketPath);
      const error = await rejectionOf(
        listenUnixSocket({
          path: socketPath,
          name: 'my-agent',
          identify: () => ({ pid: 4242, source: 'test' }),
        }),
      );
      expect(error.code).toBe('ERR_ALREADY_RUNNING');
      expect(error.message).toContain('my-agent');
      expect(error.message).toContain('pid 4242');
      expect(error.message).toContain(socketPath);
      expect((await lstat(socketPath)).ino).toBe(before.ino);
      expect(await readdir(directory)).toEqual(['agent.sock']);
      expect(await roundTrip(socketPath, { still: 'here' })).toEqual({ echo: { still: 'here' } });
    });

    it('refuses with ERR_ALREADY_RUNNING while a server in another process answers', async () => {
      const child = await startChild(listenScript(socketPath));
      cleanups.push(() => child.kill('SIGKILL'));
      const error = await rejectionOf(listenUnixSocket({ path: socketPath }));
      expect(error.code).toBe('ERR_ALREADY_RUNNING');
      const socket = await rawConnect(socketPath);
      socket.destroy();
    });

    it('lets exactly one of several servers started at once win', async () => {
      const results = await Promise.allSettled(
        Array.from({ length: 5 }, () => listenUnixSocket({ path: socketPath })),
      );
      const winners = results.filter((result) => result.status === 'fulfilled');
      expect(winners).toHaveLength(1);
      for (const result of results) {
        if (result.status === 'rejected')
          expect((result.reason as BridgekeeperError).code).toBe('ERR_ALREADY_RUNNING');
      }
      const winner = (winners[0] as PromiseFulfilledResult<TransportListener>).value;
      cleanups.push(() => winner.close());
      serveEcho(winner);
      expect(await roundTrip(socketPath, { n: 1 })).toEqual({ echo: { n: 1 } });
      expect(await readdir(directory)).toEqual(['agent.sock']);
    });

    it("does not delete a successor's socket on close", async () => {
      const first = await listen();
      // Someone removed the first server's socket and a successor published its own.
      await unlink(socketPath);
      const second = await listen();
      serveEcho(second);
      const successor = await lstat(socketPath);
      await first.close();
      expect((await lstat(socketPath)).ino).toBe(successor.ino);
      expect(await roundTrip(socketPath, { to: 'successor' })).toEqual({
        echo: { to: 'successor' },
      });
    });

    it('refuses a path longer than the OS allows with ERR_ENDPOINT_PATH_TOO_LONG', async () => {
      const long = path.join(directory, `${'s'.repeat(120)}.sock`);
      const error = await rejectionOf(listenUnixSocket({ path: long }));
      expect(error.code).toBe('ERR_ENDPOINT_PATH_TOO_LONG');
      expect(error.message).toContain(long);
      expect((await rejectionOf(connectUnixSocket(long))).code).toBe('ERR_ENDPOINT_PATH_TOO_LONG');
    });

    it('rejects with ERR_ABORTED for an aborted signal and leaves nothing behind', async () => {
      const error = await rejectionOf(
        listenUnixSocket({ path: socketPath, signal: AbortSignal.abort() }),
      );
      expect(error.code).toBe('ERR_ABORTED');
      expect(await readdir(directory)).toEqual([]);
    });

    it('fails with ERR_PLATFORM when the directory does not exist', async () => {
      const error = await rejectionOf(
        listenUnixSocket({ path: path.join(directory, 'missing', 'agent.sock') }),
      );
      expect(error.code).toBe('ERR_PLATFORM');
      expect(error.message).toContain('does not exist');
    });
  });

  describe('accepted connections', () => {
    it('closes only the connection that declares an oversize frame, with ERR_FRAME_TOO_LARGE', async () => {
      const listener = await listen({ maxFrameBytes: 1024 });
      const connections = serveEcho(listener);
      const good = await connectUnixSocket(socketPath);
      cleanups.push(() => good.destroy());
      const raw = await rawConnect(socketPath);
      await within(
        (async () => {
          while (connections.length < 2) await sleep(2);
        })(),
        5000,
        'both connections arriving',
      );
      const rawEnd = connections[1]!;
      const rawEndClosed = closed(rawEnd);
      const header = Buffer.alloc(4);
      header.writeUInt32BE(2 * 1024 * 1024, 0);
      raw.write(header);
      const info = await within(rawEndClosed, 5000, 'the oversize connection closing');
      expect((info.error as BridgekeeperError).code).toBe('ERR_FRAME_TOO_LARGE');
      expect(info.local).toBe(false);
      await within(rawClosed(raw), 5000, 'the raw client seeing the close');
      // The other connection is unaffected.
      const reply = nextMessage(good);
      good.send({ still: 'fine' });
      expect(await within(reply, 5000, 'the echo')).toEqual({ echo: { still: 'fine' } });
    });

    it('closes a connection that sends garbage with ERR_PROTOCOL', async () => {
      const listener = await listen();
      const accepted = nextConnection(listener);
      const raw = await rawConnect(socketPath);
      const transport = await accepted;
      const info = closed(transport);
      transport.onMessage(() => {
        throw new Error('no message expected');
      });
      raw.write(Buffer.concat([Buffer.from([0, 0, 0, 12]), Buffer.from('GET / HTTP/')]));
      raw.write('1.1\r\n\r\n');
      expect(((await within(info, 5000, 'the close')).error as BridgekeeperError).code).toBe(
        'ERR_PROTOCOL',
      );
      await within(rawClosed(raw), 5000, 'the raw client seeing the close');
    });

    it('reads nothing from a connection until its first onMessage subscriber', async () => {
      const listener = await listen();
      const accepted = nextConnection(listener);
      const raw = await rawConnect(socketPath);
      const transport = await accepted;
      raw.write(Buffer.concat([Buffer.from([0, 0, 0, 5]), Buffer.from('nope!')]));
      await sleep(50);
      expect(transport.closed).toBe(false);
      const info = closed(transport);
      transport.onMessage(() => {});
      expect(((await within(info, 5000, 'the close')).error as BridgekeeperError).code).toBe(
        'ERR_PROTOCOL',
      );
      raw.destroy();
    });

    it('closes with ERR_PROTOCOL when the client goes away in the middle of a frame', async () => {
      const listener = await listen();
      const accepted = nextConnection(listener);
      const raw = await rawConnect(socketPath);
      const transport = await accepted;
      const info = closed(transport);
      transport.onMessage(() => {});
      const frame = encodeFrame({ text: 'cut short' });
      raw.end(frame.subarray(0, frame.length - 3));
      const result = await within(info, 5000, 'the close');
      expect((result.error as BridgekeeperError).code).toBe('ERR_PROTOCOL');
      expect(result.error!.message).toContain('middle of a message');
    });

    it('closes with ERR_APP_UNAVAILABLE when the client resets the connection', async () => {
      const listener = await listen();
      const accepted = nextConnection(listener);
      const raw = await rawConnect(socketPath);
      raw.pause();
      const transport = await accepted;
      const info = closed(transport);
      transport.onMessage(() => {});
      transport.send({ fill: 'x'.repeat(200_000) });
      await sleep(20);
      raw.destroy();
      await sleep(20);
      for (let attempt = 0; attempt < 50 && !transport.closed; attempt++) {
        transport.send({ more: attempt });
        await sleep(5);
      }
      const result = await within(info, 5000, 'the close');
      expect((result.error as BridgekeeperError).code).toBe('ERR_APP_UNAVAILABLE');
      expect(result.local).toBe(false);
    });

    it('gives each transport the identity identify() returns', async () => {
      let calls = 0;
      const listener = await listen({
        identify: (socket) => {
          calls++;
          expect(socket).toBeInstanceOf(net.Socket);
          return { pid: 1000 + calls, uid: 7, startTime: '99', source: 'test' };
        },
      });
      const accepted = nextConnection(listener);
      const client = await connectUnixSocket(socketPath);
      cleanups.push(() => client.destroy());
      const transport = await accepted;
      expect(transport.peer).toEqual({ pid: 1001, uid: 7, startTime: '99', source: 'test' });
    });

    it('drops a connection whose peer cannot be identified, reporting nothing', async () => {
      let refuse = true;
      const listener = await listen({
        identify: () => {
          if (refuse) throw new Error('no SO_PEERCRED');
          return { source: 'test' };
        },
      });
      const seen: Transport[] = [];
      listener.onConnection((transport) => seen.push(transport));
      const client = await connectUnixSocket(socketPath);
      const clientClosed = closed(client);
      client.onMessage(() => {});
      const info = await within(clientClosed, 5000, 'the client seeing the drop');
      expect(info.local).toBe(false);
      expect(seen).toHaveLength(0);
      refuse = false;
      const second = await connectUnixSocket(socketPath);
      cleanups.push(() => second.destroy());
      await within(
        (async () => {
          while (seen.length === 0) await sleep(2);
        })(),
        5000,
        'the identified connection',
      );
      expect(seen[0]!.peer).toEqual({ source: 'test' });
    });

    it('refuses to send a message over maxFrameBytes, keeping the connection', async () => {
      const listener = await listen();
      serveEcho(listener);
      const client = await connectUnixSocket(socketPath, { maxFrameBytes: 64 });
      cleanups.push(() => client.destroy());
      const error = (() => {
        try {
          client.send({ text: 'x'.repeat(100) });
        } catch (caught) {
          return caught as BridgekeeperError;
        }
        throw new Error('expected a throw');
      })();
      expect(error.code).toBe('ERR_FRAME_TOO_LARGE');
      const reply = nextMessage(client);
      client.send({ ok: 1 });
      expect(await within(reply, 5000, 'the echo')).toEqual({ echo: { ok: 1 } });
    });

    it('close() gives up waiting for a client that never closes, after closeTimeoutMs', async () => {
      const listener = await listen({ closeTimeoutMs: 100 });
      const accepted = nextConnection(listener);
      const raw = await rawConnect(socketPath);
      raw.pause(); // never reads, so never answers the FIN
      const transport = await accepted;
      const started = Date.now();
      await within(transport.close(), 3000, 'close() finishing');
      expect(Date.now() - started).toBeLessThan(2000);
      expect(await closed(transport)).toEqual({ local: true });
      raw.destroy();
    });

    it('keeps connections working after the listener closes', async () => {
      const listener = await listen();
      serveEcho(listener);
      const client = await connectUnixSocket(socketPath);
      cleanups.push(() => client.destroy());
      await listener.close();
      const reply = nextMessage(client);
      client.send({ after: 'listener close' });
      expect(await within(reply, 5000, 'the echo')).toEqual({ echo: { after: 'listener close' } });
    });
  });

  describe('send buffer limits', () => {
    it('stops reading a client that does not read its replies, then closes it with ERR_SEND_BUFFER_FULL, with the limits given to listenUnixSocket', async () => {
      const listener = await listen(SMALL_LIMITS);
      const accepted = nextConnection(listener);
      const raw = await rawConnect(socketPath);
      raw.pause(); // reads nothing from here on
      const transport = await accepted;
      const info = closed(transport);
      let delivered = 0;
      transport.onMessage((message) => {
        delivered++;
        transport.send({ seq: message.seq, pad: PAD });
      });
      raw.write(Buffer.concat(Array.from({ length: 1000 }, (_, seq) => encodeFrame({ seq }))));
      const settledAt = await settled(() => delivered);
      expect(settledAt).toBeGreaterThan(0);
      expect(settledAt).toBeLessThan(1000);
      expect(transport.closed).toBe(false);
      // What the server sends on its own is capped.
      const error = sendUntilThrow(transport);
      expect(error?.code).toBe('ERR_SEND_BUFFER_FULL');
      const result = await within(info, 5000, 'the close');
      expect(result).toEqual({ error, local: true });
      expect(delivered).toBe(settledAt);
      await within(rawClosed(raw), 5000, 'the raw client seeing the close');
    });

    it('closes a connection to a server that does not read with ERR_SEND_BUFFER_FULL, with the limits given to connectUnixSocket', async () => {
      const listener = await listen();
      // The server end never subscribes, so it never reads.
      const accepted = nextConnection(listener);
      const client = await connectUnixSocket(socketPath, SMALL_LIMITS);
      cleanups.push(() => client.destroy());
      const info = closed(client);
      await within(accepted, 5000, 'the server seeing the connection');
      const error = sendUntilThrow(client);
      expect(error?.code).toBe('ERR_SEND_BUFFER_FULL');
      expect((await within(info, 5000, 'the close')).error).toBe(error);
    });

    it('refuses bad transport options up front, in listenUnixSocket and connectUnixSocket', async () => {
      for (const bad of [
        { highWaterBytes: 0 },
        { maxBufferedBytes: 1024 },
        { highWaterBytes: 4096, maxBufferedBytes: 2048, maxFrameBytes: 1024 },
        { closeTimeoutMs: -1 },
      ]) {
        const error = await rejectionOf(listenUnixSocket({ path: socketPath, ...bad }));
        expect(error.code, JSON.stringify(bad)).toBe('ERR_INVALID_ARGUMENT');
      }
      expect(await readdir(directory)).toEqual([]);
      const listener = await listen();
      const seen: Transport[] = [];
      listener.onConnection((transport) => seen.push(transport));
      const ids = countingIdentity();
      for (const bad of [
        { highWaterBytes: 0 },
        { maxBufferedBytes: 1024 },
        { closeTimeoutMs: -1 },
      ]) {
        const error = await rejectionOf(
          connectUnixSocket(socketPath, { ...bad, identify: ids.identify, release: ids.release }),
        );
        expect(error.code, JSON.stringify(bad)).toBe('ERR_INVALID_ARGUMENT');
      }
      // Refused before connecting: no identity was made, and the server saw nothing.
      expect(ids.made).toHaveLength(0);
      expect(ids.released).toHaveLength(0);
      await sleep(50);
      expect(seen).toHaveLength(0);
    });
  });

  describe('releasing peer identities', () => {
    it('releases, once each, the identities of connections still waiting for a subscriber when the listener closes, and no other', async () => {
      const ids = countingIdentity();
      const listener = await listen({ identify: ids.identify, release: ids.release });
      const delivered: Transport[] = [];
      const subscription = listener.onConnection((transport) => delivered.push(transport));
      const first = await connectUnixSocket(socketPath);
      cleanups.push(() => first.destroy());
      await within(
        (async () => {
          while (delivered.length < 1) await sleep(2);
        })(),
        5000,
        'the first connection being delivered',
      );
      subscription.dispose();
      // Nobody is subscribed now: these wait in the listener.
      const waiting = await Promise.all([
        connectUnixSocket(socketPath),
        connectUnixSocket(socketPath),
      ]);
      const waitingClosed = waiting.map((client) => {
        cleanups.push(() => client.destroy());
        client.onMessage(() => {});
        return closed(client);
      });
      await within(
        (async () => {
          while (ids.made.length < 3) await sleep(2);
        })(),
        5000,
        'the server identifying all three',
      );
      expect(ids.released).toHaveLength(0);
      await listener.close();
      expect(ids.released).toHaveLength(2);
      // The delivered connection's identity is its owner's to release.
      expect(ids.timesReleased(delivered[0]!.peer!)).toBe(0);
      for (const peer of ids.made.filter((peer) => peer !== delivered[0]!.peer)) {
        expect(ids.timesReleased(peer)).toBe(1);
      }
      for (const info of waitingClosed) {
        expect((await within(info, 5000, 'a waiting client seeing the close')).local).toBe(false);
      }
      expect(delivered[0]!.closed).toBe(false);
      // Closing again releases nothing more.
      await listener.close();
      expect(ids.released).toHaveLength(2);
    });

    it('releases the identity from its probe of a live server', async () => {
      const first = await listen();
      serveEcho(first);
      const ids = countingIdentity();
      const error = await rejectionOf(
        listenUnixSocket({ path: socketPath, identify: ids.identify, release: ids.release }),
      );
      expect(error.code).toBe('ERR_ALREADY_RUNNING');
      expect(ids.made).toHaveLength(1);
      expect(ids.timesReleased(ids.made[0]!)).toBe(1);
    });

    it('leaves the identity of a connected transport to the caller, and releases none when identify throws', async () => {
      const listener = await listen();
      serveEcho(listener);
      const ids = countingIdentity();
      const client = await connectUnixSocket(socketPath, {
        identify: ids.identify,
        release: ids.release,
      });
      cleanups.push(() => client.destroy());
      expect(client.peer).toBe(ids.made[0]);
      await client.close();
      expect(ids.released).toHaveLength(0);
      const refusal = new BridgekeeperError('ERR_SERVER_REJECTED', 'not our server');
      const error = await rejectionOf(
        connectUnixSocket(socketPath, {
          identify: () => {
            throw refusal;
          },
          release: ids.release,
        }),
      );
      expect(error).toBe(refusal);
      expect(ids.released).toHaveLength(0);
    });
  });

  describe('connecting', () => {
    it('reports ERR_APP_UNAVAILABLE when nothing is listening, with the OS error as cause', async () => {
      const error = await rejectionOf(connectUnixSocket(socketPath));
      expect(error.code).toBe('ERR_APP_UNAVAILABLE');
      expect(error.message).toBe(
        `Nothing is listening at ${socketPath}. Start the app, then try again.`,
      );
      expect((error.cause as NodeJS.ErrnoException).code).toBe('ENOENT');
    });

    it('reports ERR_APP_UNAVAILABLE for a stale socket and for a regular file', async () => {
      const child = await startChild(listenScript(socketPath));
      child.kill('SIGKILL');
      await once(child, 'exit');
      const stale = await rejectionOf(connectUnixSocket(socketPath));
      expect(stale.code).toBe('ERR_APP_UNAVAILABLE');
      expect((stale.cause as NodeJS.ErrnoException).code).toBe('ECONNREFUSED');
      const file = path.join(directory, 'file.sock');
      await writeFile(file, '');
      expect((await rejectionOf(connectUnixSocket(file))).code).toBe('ERR_APP_UNAVAILABLE');
    });

    it('reaches the server through a hard link to its socket, as published', async () => {
      const listener = await listen();
      serveEcho(listener);
      const alias = path.join(directory, 'alias.sock');
      await link(socketPath, alias);
      expect(await roundTrip(alias, { via: 'link' })).toEqual({ echo: { via: 'link' } });
    });

    it('runs identify on the connected socket and reports its identity as transport.peer', async () => {
      const listener = await listen();
      serveEcho(listener);
      const server: PeerIdentity = { pid: 1, uid: 0, startTime: '5', source: 'test' };
      const client = await connectUnixSocket(socketPath, { identify: () => server });
      cleanups.push(() => client.destroy());
      expect(client.peer).toEqual(server);
    });

    it('rejects with what identify throws, and the server sees the connection go', async () => {
      const listener = await listen();
      const accepted = nextConnection(listener);
      const refusal = new BridgekeeperError('ERR_SERVER_REJECTED', 'not our server');
      const error = await rejectionOf(
        connectUnixSocket(socketPath, {
          identify: () => {
            throw refusal;
          },
        }),
      );
      expect(error).toBe(refusal);
      const transport = await within(accepted, 5000, 'the server seeing the attempt');
      const info = closed(transport);
      transport.onMessage(() => {
        throw new Error('nothing was sent');
      });
      expect((await within(info, 5000, 'the close')).local).toBe(false);
    });

    it('rejects with ERR_TIMEOUT for a timed-out signal', async () => {
      const listener = await listen();
      serveEcho(listener);
      const signal = AbortSignal.timeout(1);
      await sleep(10);
      expect((await rejectionOf(connectUnixSocket(socketPath, { signal }))).code).toBe(
        'ERR_TIMEOUT',
      );
    });

    it('connects through unixSocketConnector with its defaults', async () => {
      const listener = await listen();
      serveEcho(listener);
      const connector = unixSocketConnector({ identify: () => ({ source: 'connector' }) });
      const client = await connector.connect(socketPath);
      cleanups.push(() => client.destroy());
      expect(client.peer).toEqual({ source: 'connector' });
      expect((await rejectionOf(connector.connect(path.join(directory, 'none.sock')))).code).toBe(
        'ERR_APP_UNAVAILABLE',
      );
    });
  });
});
