/**
 * Adversarial: faults. The app is SIGKILLed mid-request or restarted, a client is SIGKILLed while
 * its prompt is on screen, the app's socket file is deleted or replaced under it, and its runtime
 * directory is full or read-only when it starts. All with real processes and real sockets.
 *
 * What must hold: a client learns at once that the app is gone (ERR_APP_UNAVAILABLE, within a
 * second); a prompt whose requester died is taken down and grants nothing; no grant outlives the
 * app; a server whose socket file was tampered with keeps serving the connections it has, never
 * crashes, and never deletes a file that is no longer its socket; new clients get a stable code;
 * an app that cannot create its socket fails to start with a stable code, and starts once fixed.
 */

import { once } from 'node:events';
import { chmodSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { lstat, mkdtemp } from 'node:fs/promises';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  type AuthorizerEvents,
  BridgekeeperError,
  type Client,
  connect,
  createServer,
  type Server,
} from 'bridgekeeper';
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
  startAppProcess,
  startClientProcess,
  startSquatter,
} from './support/process-children.js';
import { canMount, exhaustInodes, fillBlocks, Mounts } from './support/process-mounts.js';

const hasSetpriv = hasCommand('setpriv');
const APP = 'bk-integration';

const processes = new Processes();
const mounts = new Mounts();
const servers: Server[] = [];
const clients: Client[] = [];
let dir: string;
let socketPath: string;

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'bk-adv-faults-'));
  socketPath = join(dir, 'agent.sock');
});

afterEach(async () => {
  for (const client of clients.splice(0)) client.destroy();
  for (const server of servers.splice(0)) server.destroy();
  await processes.killAll();
  try {
    mounts.unmountAll();
  } finally {
    vi.unstubAllEnvs();
    rmSync(dir, { recursive: true, force: true });
  }
});

/** An in-process app on a real socket, whose `error` events and authorizer events are recorded. */
async function startServer(
  options: { app?: string; prompt?: ScriptedPromptBackend } = {},
): Promise<{
  server: Server;
  errors: unknown[];
  events: Array<[keyof AuthorizerEvents, unknown]>;
  handled: string[];
}> {
  const prompt = options.prompt ?? new ScriptedPromptBackend({ outcomes: ['granted'] });
  const server = createServer({ app: options.app ?? APP, prompt });
  servers.push(server);
  const errors: unknown[] = [];
  server.on('error', (event) => errors.push(event));
  const events: Array<[keyof AuthorizerEvents, unknown]> = [];
  for (const name of ['granted', 'denied', 'prompt', 'revoked'] as const) {
    server.authorizer.on(name, (payload) => events.push([name, payload]));
  }
  const handled: string[] = [];
  server.handle('echo', (params) => params);
  server.handle(
    'secret',
    { account: () => ({ id: 'work', displayName: 'Work' }) },
    (_params, context) => {
      handled.push(context.session.id);
      return { session: context.session.id, scope: context.session.scope };
    },
  );
  await server.listen({ path: socketPath });
  return { server, errors, events, handled };
}

async function connectClient(options: { timeoutMs?: number } = {}): Promise<Client> {
  const client = await connect({ app: APP, path: socketPath, ...options });
  clients.push(client);
  return client;
}

describe.skipIf(!isLinux)('a process dies mid-flight (Linux)', () => {
  it('the app SIGKILLed while a slow handler runs: the pending request fails with ERR_APP_UNAVAILABLE within a second', async () => {
    const app = await startAppProcess(processes, socketPath);
    const client = await connectClient();
    expect(client.serverPeer?.pid).toBe(app.child.pid);
    expect(await client.request('echo', ['warm'])).toEqual(['warm']);
    const outcome = client.request('hang').then(
      () => 'answered',
      (error: unknown) => error,
    );
    // Let the request reach the handler, which never answers.
    await new Promise((resolve) => setTimeout(resolve, 100));
    const killedAt = performance.now();
    app.child.kill('SIGKILL');
    const error = await outcome;
    const elapsed = performance.now() - killedAt;
    expect(error).toBeInstanceOf(BridgekeeperError);
    expect((error as BridgekeeperError).code).toBe('ERR_APP_UNAVAILABLE');
    expect(elapsed).toBeLessThan(1_000);
    expect(client.closed).toBe(true);
    // Later requests on the dead connection and new connections fail the same way.
    expect((await rejectionOf(client.request('echo', []))).code).toBe('ERR_APP_UNAVAILABLE');
    await app.exited;
    expect((await rejectionOf(connect({ app: APP, path: socketPath }))).code).toBe(
      'ERR_APP_UNAVAILABLE',
    );
  });

  it('a client SIGKILLed while its prompt is on screen: the prompt is cancelled, no grant exists, and the next client of the session gets a new prompt', async () => {
    const prompt = new ScriptedPromptBackend({ manual: true }); // hangs until answered or aborted
    const { server, events, handled, errors } = await startServer({ prompt });
    const victim = startClientProcess(processes, socketPath, 'secret');
    const first = await prompt.nextPrompt({ signal: AbortSignal.timeout(15_000) });
    expect(first.request.process.pid).toBe(victim.child.pid);
    expect(first.signal.aborted).toBe(false);

    victim.child.kill('SIGKILL');
    await victim.exited;
    await expect.poll(() => first.signal.aborted, { timeout: 5_000 }).toBe(true);
    expect(first.settled).toBe(true);
    expect(prompt.pending).toEqual([]);
    // A late "yes" to the prompt that was taken down counts for nothing.
    expect(first.respond('granted')).toBe(false);
    expect(server.authorizer.listGrants()).toEqual([]);
    expect(events.map(([name]) => name)).toEqual(['prompt', 'denied']);
    expect(events[1]![1]).toMatchObject({
      sessionId: first.request.sessionId,
      reason: 'cancelled',
      code: 'ERR_ABORTED',
    });
    expect(handled).toEqual([]);

    // Another client of the same session (same invoking parent) is asked again: no grant, and
    // no cool-down either (the person never said no).
    const next = startClientProcess(processes, socketPath, 'secret');
    const second = await prompt.nextPrompt({ signal: AbortSignal.timeout(15_000) });
    expect(second).not.toBe(first);
    expect(second.request.sessionId).toBe(first.request.sessionId);
    expect(second.request.process.pid).toBe(next.child.pid);
    second.respond('granted');
    expect(await next.outcome).toMatchObject({
      ok: true,
      session: { id: first.request.sessionId },
    });
    expect(handled).toEqual([first.request.sessionId]);
    expect(server.authorizer.listGrants().map((grant) => grant.sessionId)).toEqual([
      first.request.sessionId,
    ]);
    expect(errors).toEqual([]);
  });

  it.each(['SIGKILL', 'SIGTERM'] as const)(
    'the app restarted (%s): no grant survives, and a session that had one is asked again',
    async (signal) => {
      const first = await startAppProcess(processes, socketPath);
      const a = await startClientProcess(processes, socketPath, 'secret').outcome;
      const b = await startClientProcess(processes, socketPath, 'secret').outcome;
      expect(a).toMatchObject({ ok: true });
      // Control: before the restart the grant holds (same session, no second prompt).
      expect(b.session).toEqual(a.session);
      expect(first.prompts()).toEqual([a.session!.id]);

      first.child.kill(signal);
      await first.exited;
      const restarted = await startAppProcess(processes, socketPath);
      const c = await startClientProcess(processes, socketPath, 'secret').outcome;
      expect(c).toMatchObject({ ok: true, session: a.session });
      expect(restarted.prompts()).toEqual([a.session!.id]);
    },
  );
});

/** What a tampered path holds, to compare before and after the server closes. */
async function fingerprint(path: string): Promise<string> {
  try {
    const stats = await lstat(path);
    const kind = stats.isSocket() ? 'socket' : stats.isFile() ? 'file' : 'other';
    const content = stats.isFile() ? readFileSync(path, 'utf8') : '';
    return `${kind} ino=${stats.ino} uid=${stats.uid} mode=${(stats.mode & 0o7777).toString(8)} ${content}`;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return 'nothing';
    throw error;
  }
}

/** The `method` of each frame in what a raw listener received. */
function methodsOf(received: Buffer[]): unknown[] {
  const methods: unknown[] = [];
  for (let rest = Buffer.concat(received); rest.length >= 4; ) {
    const length = rest.readUInt32BE(0);
    methods.push(JSON.parse(rest.subarray(4, 4 + length).toString('utf8')).method);
    rest = rest.subarray(4 + length);
  }
  return methods;
}

describe.skipIf(!isLinux)('the socket file is tampered with while the app runs (Linux)', () => {
  /**
   * Starts the app with one client connected, tampers with the socket path, then checks what
   * must always hold: the connected client is still served, the app reported the lost endpoint
   * once (an `error` event, ERR_ENDPOINT_LOST, naming the path), and its close() leaves whatever
   * now sits at the path exactly as it was.
   */
  async function tamper(
    attack: () => Promise<void> | void,
    newClient: () => Promise<void>,
  ): Promise<void> {
    const { server, errors } = await startServer();
    const existing = await connectClient();
    expect(await existing.request('echo', ['before'])).toEqual(['before']);
    await attack();
    await newClient();
    expect(await existing.request('echo', ['after'])).toEqual(['after']);
    expect(server.connectionCount).toBeGreaterThanOrEqual(1);
    const before = await fingerprint(socketPath);
    await vi.waitFor(() => expect(errors).toHaveLength(1), { timeout: 5_000 });
    const [lost] = errors as Array<{ error: BridgekeeperError; context: string }>;
    expect(lost?.context).toBe('endpoint');
    expect(lost?.error.code).toBe('ERR_ENDPOINT_LOST');
    expect(lost?.error.message).toMatch(
      new RegExp(
        `socket ${socketPath.replaceAll(/[.*+?^${}()|[\]\\]/g, '\\$&')} was (removed|replaced)`,
      ),
    );
    await existing.close();
    await server.close();
    expect(await fingerprint(socketPath)).toBe(before);
    expect(errors).toHaveLength(1);
  }

  it('deleted: connected clients keep working; new clients get ERR_APP_UNAVAILABLE', async () => {
    await tamper(
      () => rmSync(socketPath),
      async () => {
        const error = await rejectionOf(connect({ app: APP, path: socketPath }));
        expect(error.code).toBe('ERR_APP_UNAVAILABLE');
        expect(error.message).toContain(socketPath);
      },
    );
  });

  it('replaced by a regular file: connected clients keep working; new clients get ERR_APP_UNAVAILABLE; close() leaves the file', async () => {
    await tamper(
      () => {
        rmSync(socketPath);
        writeFileSync(socketPath, 'not a socket');
      },
      async () => {
        const error = await rejectionOf(connect({ app: APP, path: socketPath }));
        expect(error.code).toBe('ERR_APP_UNAVAILABLE');
      },
    );
    expect(readFileSync(socketPath, 'utf8')).toBe('not a socket');
  });

  it('replaced by a listener of the same user that never answers: new clients get ERR_TIMEOUT and send it nothing but a hello; close() leaves its socket', async () => {
    const received: Buffer[] = [];
    const mute = net.createServer((socket) => socket.on('data', (chunk) => received.push(chunk)));
    const side = join(dir, 'mute.sock');
    mute.listen(side);
    await once(mute, 'listening');
    try {
      await tamper(
        () => renameSync(side, socketPath),
        async () => {
          const error = await rejectionOf(
            connect({ app: APP, path: socketPath, timeoutMs: 1_000 }),
          );
          expect(error.code).toBe('ERR_TIMEOUT');
          expect(error.message).toContain(socketPath);
          expect(error.message).toMatch(/did not answer the handshake in time .*responsive/);
          // Same user, so the client cannot tell it from the app: it said hello (and, giving
          // up, may have cancelled it), nothing more.
          const methods = methodsOf(received);
          expect(methods[0]).toBe('bridgekeeper.hello');
          expect(methods.slice(1).every((method) => method === 'bridgekeeper.cancel')).toBe(true);
        },
      );
      expect((await lstat(socketPath)).isSocket()).toBe(true);
    } finally {
      mute.close();
    }
  });

  it('replaced by another app of the same user: new clients reach the newcomer; the first app’s close() leaves its socket', async () => {
    let successor: Server | undefined;
    await tamper(
      async () => {
        rmSync(socketPath);
        successor = (await startServer({ app: 'bk-adv-successor' })).server;
      },
      async () => {
        const client = await connectClient();
        expect(client.server.name).toBe('bk-adv-successor');
      },
    );
    // The newcomer still serves at the path the first app gave up.
    const after = await connectClient();
    expect(after.server.name).toBe('bk-adv-successor');
    expect(await after.request('echo', ['still here'])).toEqual(['still here']);
    await successor?.close();
  });

  it.skipIf(!isRoot || !hasSetpriv)(
    'replaced by a listener of another uid: new clients get ERR_SERVER_REJECTED and send it nothing; close() leaves its socket (needs root and setpriv)',
    async () => {
      // The squatter binds in a directory it may write to; root moves its socket into place.
      chmodSync(dir, 0o711);
      const squatDir = join(dir, 'squat');
      mkdirSync(squatDir);
      chmodSync(squatDir, 0o777);
      const side = join(squatDir, 'agent.sock');
      const report = join(squatDir, 'bytes');
      await startSquatter(processes, side, report);
      await tamper(
        () => renameSync(side, socketPath),
        async () => {
          const error = await rejectionOf(connect({ app: APP, path: socketPath }));
          expect(error.code).toBe('ERR_SERVER_REJECTED');
          expect(error.message).toContain(`uid ${NOBODY}`);
        },
      );
      expect((await lstat(socketPath)).uid).toBe(NOBODY);
      await new Promise((resolve) => setTimeout(resolve, 200));
      expect(bytesReceived(report)).toBe(0);
    },
  );
});

describe.skipIf(!canMount)(
  'the runtime dir cannot take a socket when the app starts (needs root to mount)',
  () => {
    const APP_DIR = 'bk-adv-faults';
    let base: string;

    beforeEach(() => {
      base = join(dir, 'runtime');
      mkdirSync(base, { mode: 0o700 });
      vi.stubEnv('XDG_RUNTIME_DIR', base);
    });

    /**
     * listen() at the default endpoint must fail with ERR_PLATFORM naming the path, the OS error
     * and what to do; once the file system is fixed, the same server starts and serves.
     */
    async function refusesThenRecovers(
      errno: string,
      failingPath: string,
      fix: () => void,
    ): Promise<void> {
      const server = createServer({ app: APP_DIR, prompt: new ScriptedPromptBackend() });
      servers.push(server);
      server.handle('echo', (params) => params);
      const error = await rejectionOf(server.listen());
      expect(error.code).toBe('ERR_PLATFORM');
      expect(error.message).toContain(failingPath);
      expect(error.message).toContain(errno);
      // …and says what to do about it.
      expect(error.message).toMatch(
        errno === 'EROFS'
          ? /read-only: set XDG_RUNTIME_DIR \(or the `path` option\) to a writable directory/
          : /full \(no space or no inodes left\): free some, or set XDG_RUNTIME_DIR/,
      );
      expect((error.cause as NodeJS.ErrnoException).code).toBe(errno);
      fix();
      const address = await server.listen();
      expect(address).toBe(join(base, APP_DIR, 'agent.sock'));
      const client = await connect({ app: APP_DIR });
      clients.push(client);
      expect(await client.request('echo', ['up'])).toEqual(['up']);
    }

    /** Frees a few inodes: enough for the app dir and the socket. */
    const freeInodes = (directory: string): void => {
      for (let i = 0; i < 3; i++) rmSync(join(directory, `filler-${i}`));
    };

    it('read-only (a read-only tmpfs), the app dir not yet made: ERR_PLATFORM (EROFS)', async () => {
      mounts.tmpfs(base, 'ro,size=64k,mode=0700');
      await refusesThenRecovers('EROFS', join(base, APP_DIR), () => mounts.remount(base, 'rw'));
    });

    it('read-only (mount -o ro,bind) over an existing app dir: ERR_PLATFORM (EROFS)', async () => {
      mkdirSync(join(base, APP_DIR), { mode: 0o700 });
      mounts.readOnly(base);
      await refusesThenRecovers('EROFS', join(base, APP_DIR, 'agent.sock'), () =>
        mounts.unmountAll(),
      );
    });

    it('full (a tiny tmpfs with no inode left), the app dir not yet made: ERR_PLATFORM (ENOSPC)', async () => {
      mounts.tmpfs(base, 'size=64k,nr_inodes=16,mode=0700');
      expect(exhaustInodes(base)).toBeGreaterThan(0);
      await refusesThenRecovers('ENOSPC', join(base, APP_DIR), () => freeInodes(base));
    });

    it('full (a tiny tmpfs with no inode left) with the app dir made: ERR_PLATFORM (ENOSPC)', async () => {
      mounts.tmpfs(base, 'size=64k,nr_inodes=16,mode=0700');
      mkdirSync(join(base, APP_DIR), { mode: 0o700 });
      expect(exhaustInodes(base)).toBeGreaterThan(0);
      await refusesThenRecovers('ENOSPC', join(base, APP_DIR, 'agent.sock'), () =>
        freeInodes(base),
      );
    });

    it('full of data but with inodes free: a socket needs no data blocks, so the app starts and serves', async () => {
      mounts.tmpfs(base, 'size=64k,mode=0700');
      fillBlocks(base);
      const server = createServer({ app: APP_DIR, prompt: new ScriptedPromptBackend() });
      servers.push(server);
      server.handle('echo', (params) => params);
      await server.listen();
      const client = await connect({ app: APP_DIR });
      clients.push(client);
      expect(await client.request('echo', ['up'])).toEqual(['up']);
    });
  },
);
