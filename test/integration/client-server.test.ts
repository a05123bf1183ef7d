/**
 * End to end over real Unix sockets, with the app and its clients as separate real processes:
 * clients in real ptys, under setsid, an app that is restarted, and a squatter of
 * another user on the app's path.
 */

import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import {
  chmodSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  realpathSync,
  rmSync,
} from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { type BridgekeeperError, connect, createServer, peerPredicate } from 'bridgekeeper';
import { ScriptedPromptBackend } from 'bridgekeeper/testing';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';

const tsx = createRequire(import.meta.url).resolve('tsx');
const fixture = (name: string) =>
  fileURLToPath(new URL(`../fixtures/integration/${name}`, import.meta.url));
const isRoot = process.getuid?.() === 0;
const has = (command: string) => {
  try {
    execFileSync('sh', ['-c', `command -v ${command}`], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
};
const hasScript = has('script');
const hasSetpriv = has('setpriv');
const quote = (value: string) => `'${value.replaceAll("'", "'\\''")}'`;

let dir: string;
let socketPath: string;
const children: ChildProcess[] = [];

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'bk-int-'));
  chmodSync(dir, 0o700);
  socketPath = join(dir, 'agent.sock');
});

afterEach(() => {
  for (const child of children.splice(0)) child.kill('SIGKILL');
  rmSync(dir, { recursive: true, force: true });
});

interface App {
  child: ChildProcess;
  prompts: string[];
  exited: Promise<void>;
}

async function startApp(): Promise<App> {
  const child = spawn(process.execPath, ['--import', tsx, fixture('app.ts'), socketPath], {
    stdio: ['ignore', 'pipe', 'inherit', 'ipc'],
  });
  children.push(child);
  const prompts: string[] = [];
  child.stdout!.setEncoding('utf8').on('data', (chunk: string) => {
    for (const line of chunk.split('\n'))
      if (line.startsWith('PROMPT ')) prompts.push(line.slice(7));
  });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  await new Promise<void>((resolve, reject) => {
    child.once('message', () => resolve());
    child.once('exit', (code) => reject(new Error(`app exited early (${code})`)));
  });
  return { child, prompts, exited };
}

interface ClientResult {
  ok: boolean;
  result?: { session: string; scope: string };
  session?: { id: string; scope: string };
  /** The client's own computation of its session (describeOwnSession). */
  own?: string;
  code?: string;
}

const clientCommand = (method: string) =>
  `${quote(process.execPath)} --import ${quote(tsx)} ${quote(fixture('client.ts'))} ${quote(socketPath)} ${method}`;

/** Runs a shell command line inside a fresh real pty; returns the JSON lines the clients printed. */
function inPty(commandLine: string): Promise<ClientResult[]> {
  return new Promise((resolve, reject) => {
    const child = spawn('script', ['-qfec', commandLine, '/dev/null'], {
      stdio: ['pipe', 'pipe', 'inherit'],
    });
    children.push(child);
    let output = '';
    child.stdout!.setEncoding('utf8').on('data', (chunk: string) => {
      output += chunk;
    });
    child.once('error', reject);
    // 'close', not 'exit': only then has everything the child wrote been read.
    child.once('close', () =>
      resolve(
        output
          .split(/\r?\n/)
          .filter((line) => line.startsWith('{'))
          .map((line) => JSON.parse(line) as ClientResult),
      ),
    );
  });
}

describe('real app process, real clients', () => {
  // The app SIGKILLed mid-request: test/adversarial/faults.test.ts.

  it('says how to start the app when it is not running (no socket, and a stale socket)', async () => {
    const missing = await connect({
      app: 'bk-integration',
      path: socketPath,
      unavailableHint: 'Start it with: bk serve',
    }).catch((error: unknown) => error as BridgekeeperError);
    expect(missing).toMatchObject({ code: 'ERR_APP_UNAVAILABLE' });
    expect((missing as Error).message).toContain('Start it with: bk serve');
    const app = await startApp();
    app.child.kill('SIGKILL');
    await app.exited;
    const stale = await connect({ app: 'bk-integration', path: socketPath }).catch(
      (error: unknown) => error,
    );
    expect(stale).toMatchObject({ code: 'ERR_APP_UNAVAILABLE' });
  });

  it('refuses to start a second app on the same endpoint (ERR_ALREADY_RUNNING) and the first keeps serving', async () => {
    const app = await startApp();
    const second = createServer({ app: 'bk-integration', prompt: new ScriptedPromptBackend() });
    await expect(second.listen({ path: socketPath })).rejects.toMatchObject({
      code: 'ERR_ALREADY_RUNNING',
    });
    await expect(second.listen({ path: socketPath })).rejects.toThrow(String(app.child.pid));
    const client = await connect({ app: 'bk-integration', path: socketPath });
    expect(await client.request('echo', { still: 'serving' })).toEqual({ still: 'serving' });
    await client.close();
  });

  it('keeps no grant across an app restart', async () => {
    const run = () =>
      new Promise<ClientResult>((resolve, reject) => {
        const child = spawn(
          process.execPath,
          ['--import', tsx, fixture('client.ts'), socketPath, 'secret'],
          {
            stdio: ['ignore', 'pipe', 'inherit'],
          },
        );
        let output = '';
        child.stdout!.setEncoding('utf8').on('data', (chunk: string) => {
          output += chunk;
        });
        child.once('error', reject);
        child.once('close', () => resolve(JSON.parse(output) as ClientResult));
      });
    const first = await startApp();
    const a = await run();
    const b = await run();
    expect(a).toMatchObject({ ok: true, session: { scope: 'process' } });
    expect(b.session).toEqual(a.session);
    expect(first.prompts).toHaveLength(1);
    first.child.kill('SIGKILL');
    await first.exited;
    const restarted = await startApp();
    const c = await run();
    expect(c.session).toEqual(a.session);
    expect(restarted.prompts).toEqual([a.session!.id]);
  });

  it.skipIf(!hasScript)(
    'places clients by terminal: same pty shares a session, another pty or setsid does not (needs util-linux script)',
    async () => {
      const app = await startApp();
      const [first, second, detached] = await inPty(
        `${clientCommand('secret')}; ${clientCommand('secret')}; setsid -w ${clientCommand('secret')}`,
      );
      const [otherTerminal] = await inPty(clientCommand('secret'));
      expect(first).toMatchObject({ ok: true, session: { scope: 'terminal' } });
      expect(second!.session).toEqual(first!.session);
      expect(detached).toMatchObject({ ok: true, session: { scope: 'process' } });
      expect(detached!.session!.id).not.toBe(first!.session!.id);
      expect(otherTerminal).toMatchObject({ ok: true, session: { scope: 'terminal' } });
      expect(otherTerminal!.session!.id).not.toBe(first!.session!.id);
      // The session the handler saw is the one the hello reported.
      expect(first!.result!.session).toBe(first!.session!.id);
      // The client's own diagnostic view agrees with the server's, in each kind of session.
      for (const result of [first, second, detached, otherTerminal])
        expect(result!.own).toBe(result!.session!.id);
      // One prompt per session: the second client in the first pty needed none.
      expect(app.prompts).toEqual([
        first!.session!.id,
        detached!.session!.id,
        otherTerminal!.session!.id,
      ]);
    },
  );

  it.each(['default listener', 'custom listener'])(
    'releases every pidfd it takes, on both sides (%s)',
    async (kind) => {
      const pidfds = () =>
        readdirSync('/proc/self/fd').filter((fd) => {
          try {
            return readlinkSync(`/proc/self/fd/${fd}`).includes('pidfd');
          } catch {
            return false;
          }
        }).length;
      const server = createServer({ app: 'bk-integration', prompt: new ScriptedPromptBackend() });
      server.handle('echo', (params) => params);
      if (kind === 'default listener') {
        await server.listen({ path: socketPath });
      } else {
        // A listener the app built itself, with kernel identities: the server must still
        // re-check and release them (it loads the platform module for them).
        const { loadLinuxBindings } = await import('../../src/platform/linux/bindings.js');
        const { identifySocketPeer } = await import('../../src/platform/linux/identity.js');
        const { listenUnixSocket } = await import('../../src/transport/unix-socket.js');
        const bindings = await loadLinuxBindings();
        const listener = await listenUnixSocket({
          path: socketPath,
          identify: (socket) =>
            identifySocketPeer(
              bindings,
              (socket as unknown as { _handle: { fd: number } })._handle.fd,
            ),
        });
        await server.listen({ listener });
      }
      const before = pidfds();
      for (let i = 0; i < 20; i++) {
        const client = await connect({ app: 'bk-integration', path: socketPath });
        await client.request('echo', [i]);
        await client.close();
      }
      await expect.poll(() => server.connectionCount).toBe(0);
      expect(pidfds()).toBe(before);
      await server.close();
    },
  );

  it('checks the server with serverPolicies before sending anything', async () => {
    const server = createServer({ app: 'bk-integration', prompt: new ScriptedPromptBackend() });
    server.handle('echo', (params) => params);
    const handshakes: unknown[] = [];
    server.on('connection', (event) => handshakes.push(event));
    await server.listen({ path: socketPath });
    const error = await connect({
      app: 'bk-integration',
      path: socketPath,
      serverPolicies: [
        peerPredicate('agent-binary', (peer) => peer.executable === '/opt/agent/agent'),
      ],
    }).catch((caught: unknown) => caught);
    expect(error).toMatchObject({ code: 'ERR_SERVER_REJECTED' });
    expect((error as Error).message).toContain('agent-binary');
    const ok = await connect({
      app: 'bk-integration',
      path: socketPath,
      serverPolicies: [
        peerPredicate(
          'same-executable',
          (peer) => peer.executable === realpathSync(process.execPath),
        ),
      ],
    });
    expect(await ok.request('echo', ['ok'])).toEqual(['ok']);
    await ok.close();
    // Only the accepted client ever completed a hello.
    expect(handshakes).toHaveLength(1);
    await server.close();
  });

  it('answers ERR_INTERNAL when a result exceeds the frame limit, and the connection stays usable', async () => {
    const server = createServer({
      app: 'bk-integration',
      prompt: new ScriptedPromptBackend(),
      maxFrameBytes: 64 * 1024,
    });
    server.handle('huge', () => 'x'.repeat(200 * 1024));
    server.handle('echo', (params) => params);
    const errors: unknown[] = [];
    server.on('error', (event) => errors.push(event));
    await server.listen({ path: socketPath });
    const client = await connect({ app: 'bk-integration', path: socketPath });
    await expect(client.request('huge', undefined, { timeoutMs: 2_000 })).rejects.toMatchObject({
      code: 'ERR_INTERNAL',
    });
    expect(errors).toHaveLength(1);
    expect(await client.request('echo', [1])).toEqual([1]);
    await client.close();
    await server.close();
  });

  it.skipIf(!has('python3') || !has('perl'))(
    "does not hand an approved result to a program the client exec'd while the prompt was up (needs python3, perl)",
    async () => {
      const prompt = new ScriptedPromptBackend({ manual: true });
      const server = createServer({ app: 'bk-integration', prompt });
      server.handle(
        'secret',
        { account: () => ({ id: 'work', displayName: 'Work' }) },
        () => 'the-secret',
      );
      await server.listen({ path: socketPath });
      const child = spawn('python3', [fixture('exec-during-prompt.py'), socketPath], {
        stdio: ['ignore', 'pipe', 'inherit'],
      });
      children.push(child);
      let output = '';
      child.stdout!.setEncoding('utf8').on('data', (chunk: string) => {
        output += chunk;
      });
      const exited = new Promise((resolve) => child.once('exit', resolve));
      const shown = await prompt.nextPrompt();
      expect(shown.request.process.program).toMatch(/^python/);
      // Answer only once the client really is another program.
      await expect
        .poll(() => {
          try {
            return realpathSync(`/proc/${child.pid}/exe`);
          } catch {
            return '';
          }
        })
        .toMatch(/perl/);
      shown.respond('granted');
      await exited;
      expect(output).toContain('AFTER EXEC');
      expect(output).toContain('ERR_PEER_CHANGED');
      expect(output).not.toContain('the-secret');
      await server.close();
    },
  );

  it.skipIf(!isRoot || !hasSetpriv)(
    "refuses a squatter of another user on the app's path before sending it a byte (needs root and setpriv)",
    async () => {
      chmodSync(dir, 0o777);
      const report = join(dir, 'bytes');
      const squatter = spawn(
        'setpriv',
        [
          '--reuid',
          '65534',
          '--regid',
          '65534',
          '--clear-groups',
          process.execPath,
          fixture('squatter.cjs'),
          socketPath,
          report,
        ],
        { stdio: ['ignore', 'pipe', 'inherit'] },
      );
      children.push(squatter);
      await new Promise<void>((resolve) => squatter.stdout!.once('data', () => resolve()));
      const error = await connect({ app: 'bk-integration', path: socketPath }).catch(
        (caught: unknown) => caught,
      );
      expect(error).toMatchObject({ code: 'ERR_SERVER_REJECTED' });
      expect((error as Error).message).toContain('uid 65534');
      await new Promise((resolve) => setTimeout(resolve, 200));
      expect(readFileSync(report, 'utf8')).toBe('0');
      // Control: the same squatter does receive bytes from a client that skips the check.
      await connect({
        app: 'bk-integration',
        path: socketPath,
        verifyServer: false,
        timeoutMs: 300,
      }).catch(() => {});
      await expect
        .poll(() => Number(readFileSync(report, 'utf8')), { timeout: 5_000 })
        .toBeGreaterThan(0);
    },
  );
});
