/**
 * The Unix socket listener notices when its socket file is removed or made unreachable while it
 * runs, and says so once (ERR_ENDPOINT_LOST).
 */

import { mkdirSync, mkdtempSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { BridgekeeperError } from 'bridgekeeper';
import { afterEach, describe, expect, it } from 'vitest';
import { listenUnixSocket } from '../../src/transport/unix-socket.js';

const cleanups: Array<() => unknown> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

const tick = (ms = 0) => new Promise((resolve) => setTimeout(resolve, ms));

describe('the socket file lost while the app runs', () => {
  it('reports ERR_ENDPOINT_LOST once when the socket file is removed', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'bk-lost-'));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    const listener = await listenUnixSocket({ path: path.join(dir, 'agent.sock') });
    cleanups.push(() => listener.close());
    const errors: Error[] = [];
    listener.onError?.((error) => errors.push(error));
    rmSync(path.join(dir, 'agent.sock'));
    await tick(200);
    writeFileSync(path.join(dir, 'other'), '');
    await tick(100);
    expect(errors.map((e) => (e as BridgekeeperError).code)).toEqual(['ERR_ENDPOINT_LOST']);
  });

  it('the directory moved away and a file put in its place (lstat ENOTDIR) goes unreported', async () => {
    const parent = mkdtempSync(path.join(tmpdir(), 'bk-lost-'));
    cleanups.push(() => rmSync(parent, { recursive: true, force: true }));
    const dir = path.join(parent, 'app');
    mkdirSync(dir, { mode: 0o700 });
    const socketPath = path.join(dir, 'agent.sock');
    const listener = await listenUnixSocket({ path: socketPath });
    cleanups.push(() => listener.close());
    const errors: Error[] = [];
    listener.onError?.((error) => errors.push(error));
    renameSync(dir, `${dir}.old`);
    writeFileSync(dir, '');
    await tick(300);
    // Unreachable now:
    const code = await new Promise<string | undefined>((resolve) => {
      const socket = net.connect({ path: socketPath });
      socket.once('connect', () => {
        socket.destroy();
        resolve(undefined);
      });
      socket.once('error', (error: NodeJS.ErrnoException) => resolve(error.code));
    });
    expect(code).toBe('ENOTDIR');
    expect(errors.map((e) => (e as BridgekeeperError).code)).toEqual(['ERR_ENDPOINT_LOST']);
  });
});
