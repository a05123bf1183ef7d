/**
 * Identity release when wrapping a connected socket fails after `identify` ran. Options are
 * checked before connecting, so nothing real makes createStreamTransport throw there any more;
 * this file makes it throw on demand to cover that path on both ends.
 */

import { once } from 'node:events';
import { mkdtemp, rm } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import type { PeerIdentity, Transport } from '../../src/transport/transport.js';
import { connectUnixSocket, listenUnixSocket } from '../../src/transport/unix-socket.js';

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

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

function countingIdentity(): {
  made: PeerIdentity[];
  released: PeerIdentity[];
  identify: () => PeerIdentity;
  release: (peer: PeerIdentity) => void;
} {
  const made: PeerIdentity[] = [];
  const released: PeerIdentity[] = [];
  return {
    made,
    released,
    identify: () => {
      const peer: PeerIdentity = {
        pid: 20_000 + made.length,
        pidfd: 200 + made.length,
        source: 'test',
      };
      made.push(peer);
      return peer;
    },
    release: (peer) => {
      released.push(peer);
    },
  };
}

describe('unix socket transport: releasing identities when the transport cannot be created', () => {
  let directory: string;
  let socketPath: string;
  const cleanups: Array<() => unknown> = [];

  beforeEach(async () => {
    directory = await mkdtemp(path.join(os.tmpdir(), 'bk-release-'));
    socketPath = path.join(directory, 'agent.sock');
    failures.remaining = 0;
  });

  afterEach(async () => {
    failures.remaining = 0;
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
    await rm(directory, { recursive: true, force: true });
  });

  it('the listener releases the identity of a connection it drops, once, and delivers the next', async () => {
    const ids = countingIdentity();
    const listener = await listenUnixSocket({
      path: socketPath,
      identify: ids.identify,
      release: ids.release,
    });
    cleanups.push(() => listener.close());
    const seen: Transport[] = [];
    listener.onConnection((transport) => seen.push(transport));

    failures.remaining = 1;
    const dropped = net.connect(socketPath);
    dropped.on('error', () => {});
    dropped.resume();
    await once(dropped, 'close');
    expect(failures.remaining).toBe(0);
    expect(ids.made).toHaveLength(1);
    expect(ids.released).toEqual([ids.made[0]]);
    expect(ids.released[0]).toBe(ids.made[0]);

    const kept = net.connect(socketPath);
    kept.on('error', () => {});
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
    const ids = countingIdentity();

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
