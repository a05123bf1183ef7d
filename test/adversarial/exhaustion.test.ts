/**
 * Resource exhaustion against a real server on a real Unix socket, with the attackers as raw
 * sockets speaking (or abusing) the wire protocol:
 *
 * - a frame that declares up to 4 GiB: the connection is closed before the payload is allocated
 *   (no Buffer of that size is ever requested, memory does not move), and a good client is served
 *   before, between and after;
 * - slowloris: hellos trickled at one byte a second are cut off when the handshake timeout
 *   (set to 2 s here; 5 s by default) passes, while a good client is served throughout;
 * - a flood of 2,000 connections from another process against `maxConnections: 500`: exactly the
 *   connections over the limit are refused, each with a `bridgekeeper.closing` notice
 *   (ERR_CONNECTION_LIMIT) that tells a person what to do; a client connected before the flood
 *   keeps being served, a new one is refused with that message through `connect()`; once the
 *   flood closes, the connection count, the open file descriptors and the heap return to where
 *   they were, and RSS within a bound;
 * - a flood from a process the peer policies refuse: every connection is refused for that
 *   (ERR_PEER_REJECTED), and refused connections the attacker keeps half-open do not hold slots
 *   that accepted clients need.
 */

import { readdirSync, readFileSync } from 'node:fs';
import {
  type BridgekeeperError,
  type Client,
  connect,
  createServer,
  peerPredicate,
  type Server,
  type ServerOptions,
} from 'bridgekeeper';
import { ScriptedPromptBackend } from 'bridgekeeper/testing';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  type ClosingNotice,
  connectRaw,
  encodeFrame,
  helloRequest,
  RawConnection,
} from '../fixtures/adversarial/raw-protocol.mjs';
import { rejectionOf } from '../support/assertions.js';
import { countCases } from './support/cases.js';
import {
  Children,
  memoryAfterGc,
  mib,
  sleep,
  socketDirectory,
  waitFor,
} from './support/load-harness.js';

const APP = 'bk-adversarial';
const MiB = 1024 * 1024;

/** The soft limit on open files: the flood needs a few thousand descriptors in this process. */
function openFileLimit(): number {
  const line = readFileSync('/proc/self/limits', 'utf8')
    .split('\n')
    .find((each) => each.startsWith('Max open files'));
  const soft = line?.split(/\s{2,}/)[1];
  return soft === 'unlimited' ? Number.POSITIVE_INFINITY : Number(soft);
}
const enoughFiles = openFileLimit() >= 8_192;

const openDescriptors = (): number => readdirSync('/proc/self/fd').length;

let directory: ReturnType<typeof socketDirectory>;
let children: Children;
const cleanups: Array<() => unknown> = [];

beforeEach(() => {
  directory = socketDirectory('bk-exhaust-');
  children = new Children();
});

afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) {
    try {
      await cleanup();
    } catch {
      // Keep cleaning up.
    }
  }
  await children.killAll();
  directory.remove();
});

async function startServer(options: Partial<ServerOptions> = {}): Promise<Server> {
  const server = createServer({
    app: APP,
    prompt: new ScriptedPromptBackend({ decide: () => ({ result: 'granted' }) }),
    ...options,
  });
  server.handle('echo', (params) => params);
  cleanups.push(() => server.destroy());
  await server.listen({ path: directory.socket });
  return server;
}

async function goodClient(): Promise<Client> {
  const client = await connect({ app: APP, path: directory.socket, name: 'good-client' });
  cleanups.push(() => client.destroy());
  return client;
}

async function rawConnection(): Promise<RawConnection> {
  const connection = new RawConnection(await connectRaw(directory.socket));
  cleanups.push(() => connection.destroy());
  return connection;
}

/** Rejects if `promise` does not settle within `ms`. */
async function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      promise,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`${what}: nothing within ${ms} ms`)), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Records every Buffer allocation of at least `threshold` bytes made in this process (the
 * server's included) until `restore()`.
 */
function watchLargeAllocations(threshold: number): { sizes: number[]; restore(): void } {
  const sizes: number[] = [];
  const methods = ['alloc', 'allocUnsafe', 'allocUnsafeSlow'] as const;
  const originals = methods.map((name) => Buffer[name]);
  for (const [index, name] of methods.entries()) {
    const original = originals[index] as (size: number, ...rest: unknown[]) => Buffer;
    (Buffer as unknown as Record<string, unknown>)[name] = (size: number, ...rest: unknown[]) => {
      if (size >= threshold) sizes.push(size);
      return original.call(Buffer, size, ...rest);
    };
  }
  return {
    sizes,
    restore: () => {
      for (const [index, name] of methods.entries()) {
        (Buffer as unknown as Record<string, unknown>)[name] = originals[index];
      }
    },
  };
}

describe('exhaustion', () => {
  it('closes a connection whose frame declares up to 4 GiB before allocating it, and keeps serving a good client', async ({
    task,
  }) => {
    const server = await startServer();
    const disconnects: Array<string | undefined> = [];
    server.on('disconnect', ({ error }) => {
      disconnects.push((error as BridgekeeperError | undefined)?.code);
    });
    const good = await goodClient();
    expect(await good.request('echo', { warm: 'up' })).toEqual({ warm: 'up' });
    const before = memoryAfterGc();
    let peakRss = before.rss;
    let peakArrayBuffers = before.arrayBuffers;
    const sampler = setInterval(() => {
      const now = process.memoryUsage();
      peakRss = Math.max(peakRss, now.rss);
      peakArrayBuffers = Math.max(peakArrayBuffers, now.arrayBuffers);
    }, 2);
    const allocations = watchLargeAllocations(MiB);
    let cases = 0;
    try {
      for (const declared of [0xffff_ffff, 0x8000_0000, MiB + 1]) {
        for (const phase of ['before hello', 'after hello'] as const) {
          for (const delivery of ['whole header', 'header byte by byte', 'header + 64 KiB']) {
            const what = `${declared} bytes declared ${phase}, ${delivery}`;
            const attacker = await rawConnection();
            if (phase === 'after hello') await attacker.hello('attacker');
            const expectedDisconnects = disconnects.length + 1;
            const header = Buffer.alloc(4);
            header.writeUInt32BE(declared, 0);
            if (delivery === 'whole header') {
              attacker.socket.write(header);
            } else if (delivery === 'header byte by byte') {
              for (const byte of header) {
                if (attacker.socket.destroyed) break;
                attacker.socket.write(Buffer.from([byte]));
                await sleep(20);
              }
            } else {
              attacker.socket.write(Buffer.concat([header, Buffer.alloc(64 * 1024, 0x7b)]));
            }
            await within(attacker.closed, 5_000, `${what}: the server closing the connection`);
            await waitFor(
              () => disconnects.length >= expectedDisconnects,
              5_000,
              `${what}: the server's disconnect event`,
            );
            expect(disconnects.at(-1), what).toBe('ERR_FRAME_TOO_LARGE');
            expect(await good.request('echo', { after: what })).toEqual({ after: what });
            cases++;
            countCases(task, 1);
          }
        }
      }
    } finally {
      clearInterval(sampler);
      allocations.restore();
    }
    const after = memoryAfterGc();
    console.info(
      `[exhaustion] oversize frames (${cases} cases): rss ${mib(before.rss)} → peak ${mib(peakRss)} → ${mib(after.rss)} MiB; ` +
        `arrayBuffers ${mib(before.arrayBuffers)} → peak ${mib(peakArrayBuffers)} → ${mib(after.arrayBuffers)} MiB`,
    );
    // No Buffer of a declared size (or anything near it) was ever asked for…
    expect(allocations.sizes).toEqual([]);
    // …and memory never moved by anything near even the smallest declared size (1 MiB + 1 × 18).
    expect(peakArrayBuffers - before.arrayBuffers).toBeLessThan(16 * MiB);
    expect(peakRss - before.rss).toBeLessThan(64 * MiB);
    expect(after.heapUsed - before.heapUsed).toBeLessThan(16 * MiB);
    // A client that arrives afterwards is served too.
    const later = await goodClient();
    expect(await later.request('echo', { later: true })).toEqual({ later: true });
  }, 60_000);

  it('cuts off hellos trickled at one byte a second when the handshake timeout (2 s here) passes, serving a good client meanwhile', async ({
    task,
  }) => {
    const timeoutMs = 2_000;
    const server = await startServer({ handshakeTimeoutMs: timeoutMs });
    const good = await goodClient();
    const hello = encodeFrame(helloRequest('slowloris'));

    interface Attacker {
      kind: string;
      connection: RawConnection;
      connectedAt: number;
      closedAt?: number;
      bytesSent: number;
      bytesTotal: number;
    }
    /** Sends the first `burst` bytes of `bytes` at once, then `perTick` every `tickMs` until closed. */
    const trickle = async (
      kind: string,
      bytes: Buffer,
      burst: number,
      perTick = 1,
      tickMs = 1_000,
    ): Promise<Attacker> => {
      const connection = await rawConnection();
      const attacker: Attacker = {
        kind,
        connection,
        connectedAt: performance.now(),
        bytesSent: 0,
        bytesTotal: bytes.length,
      };
      const write = (count: number) => {
        if (connection.socket.destroyed || connection.socket.writableEnded) return;
        const end = Math.min(bytes.length, attacker.bytesSent + count);
        if (end === attacker.bytesSent) return;
        connection.socket.write(bytes.subarray(attacker.bytesSent, end));
        attacker.bytesSent = end;
      };
      write(burst);
      const timer = setInterval(() => write(perTick), tickMs);
      void connection.closed.then(() => {
        attacker.closedAt = performance.now();
        clearInterval(timer);
      });
      cleanups.push(() => clearInterval(timer));
      return attacker;
    };
    const attackers = await Promise.all([
      // The hello, one byte a second from the first.
      ...Array.from({ length: 20 }, () => trickle('hello, one byte a second', hello, 1)),
      // Nothing at all.
      trickle('silent', hello, 0, 0),
      // The length prefix at once, then the payload one byte a second.
      ...Array.from({ length: 5 }, () => trickle('header at once, payload trickled', hello, 4)),
      // All of the hello but its last byte, which comes 300 ms later: slow, but in time.
      ...Array.from({ length: 5 }, () =>
        trickle('all but the last byte, 300 ms later', hello, hello.length - 1, 1, 300),
      ),
    ]);
    // Not that last variant: its hello completes well within the timeout.
    const slow = attackers.filter((each) => each.kind !== 'all but the last byte, 300 ms later');
    const completing = attackers.filter((each) => !slow.includes(each));

    // The good client is served throughout, and a new one is admitted while they hang on.
    let served = 0;
    const serving = (async () => {
      while (slow.some((each) => each.closedAt === undefined)) {
        expect(await good.request('echo', { served })).toEqual({ served });
        served++;
        await sleep(100);
      }
    })();
    await sleep(1_000);
    const newcomer = await goodClient();
    expect(await newcomer.request('echo', { newcomer: true })).toEqual({ newcomer: true });
    await within(
      Promise.all(slow.map((each) => each.connection.closed)),
      timeoutMs + 10_000,
      'the slow connections being closed',
    );
    await serving;

    for (const attacker of slow) {
      const lived = attacker.closedAt! - attacker.connectedAt;
      expect(lived, attacker.kind).toBeGreaterThanOrEqual(timeoutMs - 50);
      expect(lived, attacker.kind).toBeLessThan(timeoutMs + 8_000);
      expect(attacker.bytesSent, attacker.kind).toBeLessThan(attacker.bytesTotal);
      expect(attacker.connection.closingNotices, attacker.kind).toEqual([
        {
          reason: 'handshake-timeout',
          code: 'ERR_TIMEOUT',
          message: `No hello within ${timeoutMs} ms.`,
        } satisfies ClosingNotice,
      ]);
    }
    // The one that completed its hello in time is still connected and was answered.
    for (const attacker of completing) {
      expect(attacker.closedAt, attacker.kind).toBeUndefined();
      expect(attacker.bytesSent).toBe(attacker.bytesTotal);
    }
    expect(served).toBeGreaterThanOrEqual(3);
    expect(server.connectionCount).toBe(2 + completing.length);
    countCases(task, attackers.length);
  }, 30_000);

  it.skipIf(!enoughFiles)(
    'refuses the connections over maxConnections (500) of a 2,000-connection flood with ERR_CONNECTION_LIMIT, serves a client already connected, and gives memory back (needs 8,192 open files)',
    async ({ task }) => {
      const limit = 500;
      const flood = 2_000;
      const server = await startServer({ maxConnections: limit });
      const legitimate = await goodClient();
      expect(await legitimate.request('echo', { before: 'flood' })).toEqual({ before: 'flood' });
      expect(server.connectionCount).toBe(1);
      const before = memoryAfterGc();
      const descriptorsBefore = openDescriptors();

      let peakDescriptors = descriptorsBefore;
      const sampler = setInterval(() => {
        peakDescriptors = Math.max(peakDescriptors, openDescriptors());
      }, 20);
      cleanups.push(() => clearInterval(sampler));
      const attacker = children.node('flood.mjs', [directory.socket, String(flood), '64']);
      // The client connected before the flood keeps making requests while it comes in.
      let floodIn = false;
      let servedDuringFlood = 0;
      const serving = (async () => {
        while (!floodIn) {
          expect(await legitimate.request('echo', { n: servedDuringFlood })).toEqual({
            n: servedDuringFlood,
          });
          servedDuringFlood++;
          await sleep(10);
        }
      })();
      const opened = await attacker
        .message<{
          served: number;
          refused: number;
          other: Record<string, number>;
          refusalMessages: string[];
          refusalReasons: string[];
          eagain: number;
          openedMs: number;
          classifiedMs: number;
        }>('opened', 60_000)
        .finally(() => {
          floodIn = true;
        });
      await serving;
      expect(servedDuringFlood).toBeGreaterThan(0);
      countCases(task, flood);
      // Exactly the connections over the limit were refused: the legitimate client holds one.
      expect(opened.other).toEqual({});
      expect(opened.served).toBe(limit - 1);
      expect(opened.refused).toBe(flood - (limit - 1));
      expect(opened.refusalReasons).toEqual(['connection-limit']);
      expect(opened.refusalMessages).toEqual([
        `The app is serving its maximum of ${limit} connections. Close some clients and try again.`,
      ]);
      expect(server.connectionCount).toBe(limit);
      // The refused connections the flood holds half-open are cut by the server (after its 2 s
      // close timeout): what stays open is the served connections (a socket and a pidfd each).
      await waitFor(
        () => openDescriptors() <= descriptorsBefore + 2 * (limit - 1) + 16,
        15_000,
        `the refused connections to be cut (${openDescriptors()} descriptors open, ${descriptorsBefore} before the flood)`,
      );
      const during = memoryAfterGc();

      // The client connected before the flood is served while the flood holds every other slot…
      for (let index = 0; index < 20; index++) {
        expect(await legitimate.request('echo', { during: index })).toEqual({ during: index });
      }
      // …and a client arriving now is refused, with a reason a person can act on.
      const refused = await rejectionOf(
        connect({ app: APP, path: directory.socket, name: 'late-client' }),
      );
      expect(refused.code).toBe('ERR_CONNECTION_LIMIT');
      expect(refused.message).toBe(
        `The app is serving its maximum of ${limit} connections. Close some clients and try again.`,
      );
      expect(server.connectionCount).toBe(limit);

      attacker.send({ type: 'close' });
      await attacker.message('closed', 30_000);
      await waitFor(() => server.connectionCount === 1, 10_000, 'the flood connections to close');
      // New clients are admitted again.
      const later = await goodClient();
      expect(await later.request('echo', { after: 'flood' })).toEqual({ after: 'flood' });
      await later.close();
      await legitimate.close();
      await waitFor(() => server.connectionCount === 0, 10_000, 'every connection to close');
      await waitFor(
        () => openDescriptors() <= descriptorsBefore,
        15_000,
        `the open descriptors (${openDescriptors()} now) to return to ${descriptorsBefore}`,
      );
      clearInterval(sampler);
      const after = memoryAfterGc();
      console.info(
        `[exhaustion] flood of ${flood} against maxConnections ${limit} (opened in ${opened.openedMs} ms, ` +
          `${opened.eagain} EAGAIN retries): server rss ${mib(before.rss)} → ${mib(during.rss)} → ${mib(after.rss)} MiB, ` +
          `heap ${mib(before.heapUsed)} → ${mib(during.heapUsed)} → ${mib(after.heapUsed)} MiB, ` +
          `open descriptors ${descriptorsBefore} → peak ${peakDescriptors} → ${openDescriptors()}`,
      );
      expect(after.heapUsed - before.heapUsed).toBeLessThan(4 * MiB);
      expect(after.rss - before.rss).toBeLessThan(48 * MiB);
      // File descriptors stay bounded during the flood: the served connections (a socket and a
      // pidfd each) and at most `limit` refused ones still flushing their notice.
      expect(peakDescriptors).toBeLessThanOrEqual(descriptorsBefore + 3 * limit + 64);
    },
    90_000,
  );

  it.skipIf(!enoughFiles)(
    'does not let a process the peer policies refuse hold connection slots or pile up descriptors: right after 2,000 refused connections (kept half-open), an accepted client gets in under maxConnections 50 (needs 8,192 open files)',
    async ({ task }) => {
      const limit = 50;
      const flood = 2_000;
      let refusedPid = -1;
      const server = await startServer({
        maxConnections: limit,
        peerPolicies: [peerPredicate('not-the-flood', (peer) => peer.pid !== refusedPid)],
      });
      const descriptorsBefore = openDescriptors();
      let peakDescriptors = descriptorsBefore;
      const sampler = setInterval(() => {
        peakDescriptors = Math.max(peakDescriptors, openDescriptors());
      }, 20);
      cleanups.push(() => clearInterval(sampler));
      const attacker = children.node('flood.mjs', [directory.socket, String(flood), '64']);
      refusedPid = attacker.pid;
      const opened = await attacker.message<{
        served: number;
        refused: number;
        other: Record<string, number>;
      }>('opened', 60_000);
      countCases(task, flood);
      // Refused for what it is, every time — never served, never for a lack of slots it took
      // itself. The server keeps at most `limit` refused connections open while their notice
      // flushes (file descriptors are bounded too), so past that the oldest are cut: those see
      // the close without the notice, never another reason.
      expect(opened.served).toBe(0);
      expect(opened.refused).toBe(0);
      const { 'closing ERR_PEER_REJECTED': notified = 0, ...cut } = opened.other;
      expect(
        Object.keys(cut).filter((outcome) => !/^closed without a notice/.test(outcome)),
      ).toEqual([]);
      expect(notified + Object.values(cut).reduce((sum, n) => sum + n, 0)).toBe(flood);
      expect(notified).toBeGreaterThanOrEqual(limit);
      clearInterval(sampler);
      expect(peakDescriptors).toBeLessThanOrEqual(descriptorsBefore + limit + 64);
      // The flood is over (every connection was refused) but it keeps its ends open: the server
      // must not count them against the limit while it waits for them to close.
      const client = await connect({ app: APP, path: directory.socket, name: 'accepted-client' });
      cleanups.push(() => client.destroy());
      expect(await client.request('echo', { admitted: true })).toEqual({ admitted: true });
      expect(server.connectionCount).toBe(1);
    },
    60_000,
  );
});
