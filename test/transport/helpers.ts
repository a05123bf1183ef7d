/**
 * Helpers the transport tests share: temporary directories, raw sockets, waiting, and an
 * identify/release pair that counts what it hands out.
 */
import { once } from 'node:events';
import { mkdtemp, rm } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import type { CloseInfo, PeerIdentity, Transport } from '../../src/transport/transport.js';

export { rejectionOf } from '../support/assertions.js';

/**
 * Whether the tests run as root. When not, logs `skipped` (which names the test file and the
 * root-only test it skips).
 */
export function runningAsRoot(skipped: string): boolean {
  const isRoot = process.getuid?.() === 0;
  if (!isRoot) {
    console.info(skipped);
  }
  return isRoot;
}

export const sleep = (ms: number): Promise<void> =>
  new Promise((resolve) => setTimeout(resolve, ms));

/** A new, empty directory under the system's temporary directory, named from `prefix`. */
export function makeTempDirectory(prefix: string): Promise<string> {
  return mkdtemp(path.join(os.tmpdir(), prefix));
}

/** Removes a directory made by makeTempDirectory, with everything in it. */
export function removeDirectory(directory: string): Promise<void> {
  return rm(directory, { recursive: true, force: true });
}

/** Runs and forgets the cleanups a test registered, last registered first. */
export async function runCleanups(cleanups: Array<() => unknown>): Promise<void> {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
}

export function closed(transport: Transport): Promise<CloseInfo> {
  return new Promise((resolve) => transport.onClose(resolve));
}

/** A raw socket to `socketPath`, connecting, whose errors are ignored. */
export function rawSocket(socketPath: string): net.Socket {
  const socket = net.connect(socketPath);
  socket.on('error', () => {});
  return socket;
}

/** A raw socket to `socketPath`, connected. */
export async function rawConnect(socketPath: string): Promise<net.Socket> {
  const socket = rawSocket(socketPath);
  await once(socket, 'connect');
  return socket;
}

/** Resolves when a raw socket has fully closed. */
export function rawClosed(socket: net.Socket): Promise<void> {
  if (socket.closed) return Promise.resolve();
  socket.resume();
  return once(socket, 'close').then(() => {});
}

/** Waits until `read()` has returned the same value for `quietMs`, and returns that value. */
export async function settled(read: () => number, quietMs = 150, ms = 5000): Promise<number> {
  const deadline = Date.now() + ms;
  let value = read();
  let since = Date.now();
  while (Date.now() - since < quietMs) {
    if (Date.now() > deadline) throw new Error(`the value kept changing for ${ms} ms`);
    await sleep(10);
    const now = read();
    if (now !== value) {
      value = now;
      since = Date.now();
    }
  }
  return value;
}

/** Small limits, so a peer that does not read hits them after a few hundred KiB. */
export const SMALL_LIMITS = {
  maxFrameBytes: 64 * 1024,
  highWaterBytes: 128 * 1024,
  maxBufferedBytes: 512 * 1024,
};
/** A 16 KiB payload. */
export const PAD = 'x'.repeat(16 * 1024);

/**
 * An identify/release pair that hands out a distinct identity per call (pids from `pidBase`,
 * pidfds from `pidfdBase`) and records releases, so a test can check that every identity made
 * is released exactly once, or not at all.
 */
export function countingIdentity(
  pidBase = 10_000,
  pidfdBase = 100,
): {
  made: PeerIdentity[];
  released: PeerIdentity[];
  identify: () => PeerIdentity;
  release: (peer: PeerIdentity) => void;
  timesReleased: (peer: PeerIdentity) => number;
} {
  const made: PeerIdentity[] = [];
  const released: PeerIdentity[] = [];
  return {
    made,
    released,
    identify: () => {
      const peer: PeerIdentity = {
        pid: pidBase + made.length,
        pidfd: pidfdBase + made.length,
        source: 'test',
      };
      made.push(peer);
      return peer;
    },
    release: (peer) => {
      released.push(peer);
    },
    timesReleased: (peer) => released.filter((each) => each === peer).length,
  };
}
