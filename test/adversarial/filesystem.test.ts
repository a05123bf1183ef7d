/**
 * Adversarial: squatting on the app's endpoint in the file system. Before the app starts,
 * someone has prepared its runtime directory or socket path: owned by another user, writable by
 * everyone, a symbolic link elsewhere, a regular file, a FIFO or a directory where the socket
 * goes, another user's socket (stale or live), or another user's tree in the shared temp-dir
 * fallback. And a server of another uid listening on the path a client connects to.
 *
 * What must hold: `listen()` at the default endpoint refuses with ERR_UNSAFE_ENDPOINT naming the
 * offending path, and leaves every squatted file exactly as it was (same inode, owner, mode,
 * content, link target; nothing created, nothing removed); `connect()` refuses a server of
 * another uid with ERR_SERVER_REJECTED before sending it a single byte.
 */

import { execFileSync } from 'node:child_process';
import { chmodSync, chownSync, mkdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { lstat, mkdtemp, readdir, readFile, readlink } from 'node:fs/promises';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect, createServer, type Server } from 'bridgekeeper';
import { ScriptedPromptBackend } from 'bridgekeeper/testing';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { rejectionOf } from '../support/assertions.js';
import {
  bytesReceived,
  hasCommand,
  isLinux,
  isRoot,
  NOBODY,
  Processes,
  startSquatter,
} from './support/process-children.js';

const APP = 'bk-adv-squat';
const hasSetpriv = hasCommand('setpriv');

const processes = new Processes();
const servers: Server[] = [];
const listeners: net.Server[] = [];
/** The test's own directory: the runtime dir, and anything a link points to, live in it. */
let dir: string;
/** $XDG_RUNTIME_DIR for the test. */
let runtime: string;
/** Where the app's endpoint directory and socket go. */
let appDir: string;
let socketPath: string;

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'bk-adv-fs-'));
  runtime = join(dir, 'runtime');
  mkdirSync(runtime, { mode: 0o700 });
  appDir = join(runtime, APP);
  socketPath = join(appDir, 'agent.sock');
  vi.stubEnv('XDG_RUNTIME_DIR', runtime);
});

afterEach(async () => {
  for (const server of servers.splice(0)) server.destroy();
  for (const listener of listeners.splice(0)) listener.close();
  await processes.killAll();
  vi.unstubAllEnvs();
  execFileSync('rm', ['-rf', dir]);
});

/**
 * Everything about a tree that a squatter set up and the app must not touch: type, inode, owner,
 * mode, a file's content, a link's target, a directory's entries (recursively).
 */
async function snapshot(path: string): Promise<unknown> {
  let stats: Awaited<ReturnType<typeof lstat>>;
  try {
    stats = await lstat(path);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return 'absent';
    throw error;
  }
  const type = stats.isSymbolicLink()
    ? 'symlink'
    : stats.isDirectory()
      ? 'directory'
      : stats.isSocket()
        ? 'socket'
        : stats.isFIFO()
          ? 'fifo'
          : stats.isFile()
            ? 'file'
            : 'other';
  const entry: Record<string, unknown> = {
    type,
    ino: stats.ino,
    uid: stats.uid,
    gid: stats.gid,
    mode: (stats.mode & 0o7777).toString(8),
  };
  if (type === 'symlink') entry.target = await readlink(path);
  if (type === 'file') entry.content = await readFile(path, 'utf8');
  if (type === 'directory') {
    const children: Record<string, unknown> = {};
    for (const name of (await readdir(path)).sort()) {
      children[name] = await snapshot(join(path, name));
    }
    entry.children = children;
  }
  return entry;
}

/** A plain listener of ours at `path` (to point links at). */
async function ownListener(path: string): Promise<void> {
  const listener = net.createServer((socket) => socket.destroy());
  listeners.push(listener);
  await new Promise<void>((resolve) => listener.listen(path, resolve));
}

/**
 * Starts the app at its default endpoint on the squatted tree: it must refuse with
 * ERR_UNSAFE_ENDPOINT naming `offending`, and leave the whole test directory as it was.
 */
async function expectRefusal(offending: string): Promise<string> {
  const before = await snapshot(dir);
  const server = createServer({ app: APP, prompt: new ScriptedPromptBackend() });
  servers.push(server);
  const error = await rejectionOf(server.listen());
  expect(error.code).toBe('ERR_UNSAFE_ENDPOINT');
  expect(error.message).toContain(offending);
  expect(await snapshot(dir)).toEqual(before);
  return error.message;
}

interface Squat {
  readonly name: string;
  /** Prepares the squatted tree; returns the path the refusal must name. */
  readonly arrange: () => Promise<string> | string;
}

const squats: Squat[] = [
  {
    name: 'the app dir has mode 0777 (anyone can put a socket in it)',
    arrange: () => {
      mkdirSync(appDir);
      chmodSync(appDir, 0o777);
      return appDir;
    },
  },
  {
    name: 'the app dir is group-writable (0770)',
    arrange: () => {
      mkdirSync(appDir);
      chmodSync(appDir, 0o770);
      return appDir;
    },
  },
  {
    name: 'the runtime dir has mode 0777 without the sticky bit (anyone can swap the app dir)',
    arrange: () => {
      chmodSync(runtime, 0o777);
      return runtime;
    },
  },
  {
    name: 'the app dir is a symbolic link to another directory of ours',
    arrange: () => {
      const elsewhere = join(dir, 'elsewhere');
      mkdirSync(elsewhere, { mode: 0o700 });
      symlinkSync(elsewhere, appDir);
      return appDir;
    },
  },
  {
    name: 'the app dir is a regular file',
    arrange: () => {
      writeFileSync(appDir, 'squatted');
      return appDir;
    },
  },
  {
    name: 'a regular file where the socket goes',
    arrange: () => {
      mkdirSync(appDir, { mode: 0o700 });
      writeFileSync(socketPath, 'precious data');
      return socketPath;
    },
  },
  {
    name: 'a symbolic link to a file elsewhere where the socket goes',
    arrange: () => {
      mkdirSync(appDir, { mode: 0o700 });
      writeFileSync(join(dir, 'target.txt'), 'precious data');
      symlinkSync(join(dir, 'target.txt'), socketPath);
      return socketPath;
    },
  },
  {
    name: 'a symbolic link to a live socket elsewhere where the socket goes',
    arrange: async () => {
      mkdirSync(appDir, { mode: 0o700 });
      await ownListener(join(dir, 'decoy.sock'));
      symlinkSync(join(dir, 'decoy.sock'), socketPath);
      return socketPath;
    },
  },
  {
    name: 'a FIFO where the socket goes',
    arrange: () => {
      mkdirSync(appDir, { mode: 0o700 });
      execFileSync('mkfifo', ['-m', '600', socketPath]);
      return socketPath;
    },
  },
  {
    name: 'a directory where the socket goes',
    arrange: () => {
      mkdirSync(appDir, { mode: 0o700 });
      mkdirSync(socketPath);
      writeFileSync(join(socketPath, 'inside'), 'kept');
      return socketPath;
    },
  },
];

describe.skipIf(!isLinux)('the endpoint is squatted before the app starts (Linux)', () => {
  for (const { name, arrange } of squats) {
    it(`refuses when ${name}, and leaves it as it was`, async () => {
      const offending = await arrange();
      await expectRefusal(offending);
    });
  }

  it('control: the same app starts on a clean runtime dir and a sticky world-writable one', async () => {
    const server = createServer({ app: APP, prompt: new ScriptedPromptBackend() });
    servers.push(server);
    expect(await server.listen()).toBe(socketPath);
    await server.close();
    chmodSync(runtime, 0o1777);
    const again = createServer({ app: APP, prompt: new ScriptedPromptBackend() });
    servers.push(again);
    expect(await again.listen()).toBe(socketPath);
  });
});

describe.skipIf(!isLinux || !isRoot)('squatted by another user (needs root to chown)', () => {
  const foreign: Squat[] = [
    {
      name: 'the runtime dir belongs to uid 65534',
      arrange: () => {
        chownSync(runtime, NOBODY, NOBODY);
        return runtime;
      },
    },
    {
      name: 'the app dir belongs to uid 65534',
      arrange: () => {
        mkdirSync(appDir, { mode: 0o700 });
        chownSync(appDir, NOBODY, NOBODY);
        return appDir;
      },
    },
    {
      name: 'a stale socket of uid 65534 is where the socket goes (it must not be removed as stale)',
      arrange: async () => {
        mkdirSync(appDir, { mode: 0o700 });
        const listener = net.createServer();
        await new Promise<void>((resolve) => listener.listen(socketPath, resolve));
        // Closing a listener unlinks its path; keep a second name so the dead socket stays.
        execFileSync('ln', [socketPath, join(appDir, 'keep')]);
        await new Promise<void>((resolve) => listener.close(() => resolve()));
        execFileSync('mv', [join(appDir, 'keep'), socketPath]);
        chownSync(socketPath, NOBODY, NOBODY);
        return socketPath;
      },
    },
  ];

  for (const { name, arrange } of foreign) {
    it(`refuses when ${name}, and leaves it as it was`, async () => {
      const offending = await arrange();
      const message = await expectRefusal(offending);
      expect(message).toContain(String(NOBODY));
    });
  }

  it.skipIf(!hasSetpriv)(
    'a live server of uid 65534 on the path: the app refuses it (not "already running") and the client refuses it before sending a byte (needs setpriv)',
    async () => {
      // The misconfiguration that let it in: everyone could enter and write the app dir. It
      // is private again now, with the squatter's live socket left inside.
      chmodSync(dir, 0o711);
      chmodSync(runtime, 0o711);
      mkdirSync(appDir);
      chmodSync(appDir, 0o777);
      const reports = join(dir, 'reports');
      mkdirSync(reports);
      chmodSync(reports, 0o777);
      const report = join(reports, 'bytes');
      await startSquatter(processes, socketPath, report);
      chmodSync(appDir, 0o700);
      chmodSync(runtime, 0o700);
      expect((await lstat(socketPath)).uid).toBe(NOBODY);
      await expectRefusal(socketPath);

      const error = await rejectionOf(connect({ app: APP }));
      expect(error.code).toBe('ERR_SERVER_REJECTED');
      expect(error.message).toContain(`uid ${NOBODY}`);
      await new Promise((resolve) => setTimeout(resolve, 200));
      expect(bytesReceived(report)).toBe(0);
      // Control: a client that skips the check does reach it (so 0 above means nothing was sent).
      await connect({ app: APP, verifyServer: false, timeoutMs: 300 }).catch(() => {});
      await expect.poll(() => bytesReceived(report), { timeout: 5_000 }).toBeGreaterThan(0);
    },
  );

  it.skipIf(!hasSetpriv)(
    'the temp-dir fallback: uid 65534 made <tmpdir>/bridgekeeper-0/<app> and listens there; the app refuses, the client sends nothing (needs setpriv)',
    async () => {
      // No XDG_RUNTIME_DIR: the endpoint falls back under the shared, sticky temp dir.
      vi.stubEnv('XDG_RUNTIME_DIR', undefined);
      const shared = join(dir, 'tmp');
      mkdirSync(shared);
      chmodSync(shared, 0o1777);
      chmodSync(dir, 0o711);
      vi.stubEnv('TMPDIR', shared);
      const userDir = join(shared, `bridgekeeper-${process.getuid!()}`);
      const squatDir = join(userDir, APP);
      mkdirSync(squatDir, { recursive: true, mode: 0o700 });
      chownSync(userDir, NOBODY, NOBODY);
      chownSync(squatDir, NOBODY, NOBODY);
      const report = join(shared, 'bytes');
      await startSquatter(processes, join(squatDir, 'agent.sock'), report);

      const before = await snapshot(shared);
      const server = createServer({ app: APP, prompt: new ScriptedPromptBackend() });
      servers.push(server);
      const refusal = await rejectionOf(server.listen());
      expect(refusal.code).toBe('ERR_UNSAFE_ENDPOINT');
      expect(refusal.message).toContain(userDir);
      expect(refusal.message).toContain(String(NOBODY));
      // The report file changes only if something connected and wrote.
      expect(await snapshot(shared)).toEqual(before);

      const error = await rejectionOf(connect({ app: APP }));
      expect(error.code).toBe('ERR_SERVER_REJECTED');
      await new Promise((resolve) => setTimeout(resolve, 200));
      expect(bytesReceived(report)).toBe(0);
    },
  );
});
