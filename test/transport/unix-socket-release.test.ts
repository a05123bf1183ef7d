/**
 * Identity release when wrapping a connected socket fails after `identify` ran. Options are
 * checked before connecting, so nothing real makes createStreamTransport throw there any more;
 * this file makes it throw on demand to cover that path on both ends.
 */

import { once } from 'node:events';
import net from 'node:net';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import type { Transport } from '../../src/transport/transport.js';
import { connectUnixSocket, listenUnixSocket } from '../../src/transport/unix-socket.js';
import {
  countingIdentity,
  makeTempDirectory,
  rawClosed,
  rawSocket,
  removeDirectory,
  runCleanups,
  sleep,
} from './helpers.js';

const failures = vi.hoisted(() => ({ remaining: 0 }));
const simulated = new Error('simulated createStreamTransport failure');

vi.mock('../../src/transport/stream-transport.js', async (importOriginal) => {
  const actual = await importOriginal<typeof import('../../src/transport/stream-transport.js')>();
  return {
    ...actual,
    createStreamTransport: (...args: Parameters<typeof actual.createStreamTransport>) => {
      if (failures.remaining > 0) {
        failures.remaining--;
        throw simulated;
      }
      return actual.createStreamTransport(...args);
    },
  };
});

describe('unix socket transport: releasing identities when the transport cannot be created', () => {
  let directory: string;
  let socketPath: string;
  const cleanups: Array<() => unknown> = [];

  beforeEach(async () => {
    directory = await makeTempDirectory('bk-release-');
    socketPath = path.join(directory, 'agent.sock');
    failures.remaining = 0;
  });

  afterEach(async () => {
    failures.remaining = 0;
    await runCleanups(cleanups);
    await removeDirectory(directory);
  });

  it('the listener releases the identity of a connection it drops, once, and delivers the next', async () => {
    const ids = countingIdentity(20_000, 200);
    const listener = await listenUnixSocket({
      path: socketPath,
      identify: ids.identify,
      release: ids.release,
    });
    cleanups.push(() => listener.close());
    const seen: Transport[] = [];
    listener.onConnection((transport) => seen.push(transport));

    failures.remaining = 1;
    const dropped = rawSocket(socketPath);
    await rawClosed(dropped);
    expect(failures.remaining).toBe(0);
    expect(ids.made).toHaveLength(1);
    expect(ids.released).toEqual([ids.made[0]]);
    expect(ids.released[0]).toBe(ids.made[0]);

    const kept = rawSocket(socketPath);
    cleanups.push(() => kept.destroy());
    while (seen.length === 0) await sleep(2);
    expect(seen[0]!.peer).toBe(ids.made[1]);
    // A delivered transport's identity is its owner's to release.
    expect(ids.released).toHaveLength(1);
  });

  it('connectUnixSocket releases the identity identify returned when it then fails, once', async () => {
    const server = net.createServer((socket) => socket.on('error', () => {}));
    server.listen(socketPath);
    await once(server, 'listening');
    cleanups.push(() => new Promise((resolve) => server.close(resolve)));
    const ids = countingIdentity(20_000, 200);

    failures.remaining = 1;
    await expect(
      connectUnixSocket(socketPath, { identify: ids.identify, release: ids.release }),
    ).rejects.toBe(simulated);
    expect(ids.made).toHaveLength(1);
    expect(ids.released).toHaveLength(1);
    expect(ids.released[0]).toBe(ids.made[0]);

    const client = await connectUnixSocket(socketPath, {
      identify: ids.identify,
      release: ids.release,
    });
    cleanups.push(() => client.destroy());
    expect(client.peer).toBe(ids.made[1]);
    expect(ids.released).toHaveLength(1);
  });
});
