/**
 * Session credentials of real clients in real pseudo-terminals, new sessions and no terminal at
 * all, derived by a real Unix-socket server through SO_PEERCRED and /proc.
 */

import { execFileSync } from 'node:child_process';
import { closeSync, openSync, readlinkSync, realpathSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  createLinuxCredentialProvider,
  deriveLinuxSession,
  type LinuxBindings,
  type LinuxSession,
  loadLinuxBindings,
  programName,
  readProcStat,
} from '../../src/platform/linux/index.js';
import type { SessionCredential } from '../../src/session/credentials.js';
import {
  CLIENT,
  clientCommand,
  hasCommand,
  type PeerServer,
  runInPty,
  type Spawned,
  shellQuote,
  spawnProcess,
  startPeerServer,
} from '../fixtures/linux/peer-server.js';

const isLinux = process.platform === 'linux';
const hasScript = isLinux && hasCommand('script');
const hasTmux = isLinux && hasCommand('tmux');
const hasSetsid = isLinux && hasCommand('setsid');
const trace = process.env.BK_TRACE === '1';

interface Derived {
  readonly credential: SessionCredential;
  readonly session: LinuxSession;
  /** Where the client's fd 0 pointed while it was being identified (to check a test's premise). */
  readonly stdin: string | undefined;
}

function stdinOf(pid: number | undefined): string | undefined {
  try {
    return readlinkSync(`/proc/${pid}/fd/0`);
  } catch {
    return undefined;
  }
}

let bindings: LinuxBindings;
let server: PeerServer<Derived>;
let tokenCounter = 0;
const running = new Set<Spawned>();

/** A token unique to this run (the server only uses it to tell clients apart). */
function token(name: string): string {
  tokenCounter += 1;
  return `${name}-${process.pid}-${tokenCounter}`;
}

async function derivedFor(tokenValue: string): Promise<Derived & { pid: number }> {
  const connection = await server.connection(tokenValue);
  if (!connection.outcome.ok) throw connection.outcome.error;
  if (trace) console.log(tokenValue, connection.peer.pid, connection.outcome.value);
  return { ...connection.outcome.value, pid: connection.peer.pid as number };
}

function track(spawned: Spawned): Spawned {
  running.add(spawned);
  void spawned.exited.finally(() => running.delete(spawned));
  return spawned;
}

/** Runs a command line in a new pty and waits for it to finish successfully. */
async function inPty(command: string, env?: NodeJS.ProcessEnv): Promise<void> {
  const result = await track(runInPty(command, env)).exited;
  expect(result.code, `script exited with ${result.code}: ${result.output}`).toBe(0);
}

describe.skipIf(!isLinux)('Linux session credentials of real clients (Linux only)', () => {
  beforeAll(async () => {
    bindings = await loadLinuxBindings();
    const provider = createLinuxCredentialProvider({ bindings });
    server = await startPeerServer(bindings, async (peer) => ({
      credential: await provider.derive(peer),
      session: await deriveLinuxSession(peer, { bindings }),
      stdin: stdinOf(peer.pid),
    }));
  });

  afterAll(async () => {
    for (const spawned of running) spawned.child.kill('SIGKILL');
    await Promise.all([...running].map((spawned) => spawned.exited.catch(() => {})));
    await server?.close();
  });

  describe.skipIf(!hasScript)('in real ptys (needs util-linux script)', () => {
    it('gives two different terminals two different terminal credentials', async () => {
      const a = token('pty-a');
      const b = token('pty-b');
      // Concurrently, so the two sessions hold two different ptys at the same time.
      await Promise.all([
        inPty(clientCommand(server.path, a)),
        inPty(clientCommand(server.path, b)),
      ]);
      const first = await derivedFor(a);
      const second = await derivedFor(b);
      expect(first.credential.scope).toBe('terminal');
      expect(second.credential.scope).toBe('terminal');
      expect(first.session.tty).toMatch(/^\/dev\/pts\/\d+$/);
      expect(second.session.tty).not.toBe(first.session.tty);
      expect(second.credential.id).not.toBe(first.credential.id);
    });

    it('does not let a later terminal on the same pty number inherit the credential', async () => {
      const a = token('pty-seq-a');
      const b = token('pty-seq-b');
      await inPty(clientCommand(server.path, a));
      await inPty(clientCommand(server.path, b));
      const first = await derivedFor(a);
      const second = await derivedFor(b);
      expect(second.session.sessionId).not.toBe(first.session.sessionId);
      // Whether or not the kernel reused the pty number, the ids differ (leader start time).
      expect(second.credential.id).not.toBe(first.credential.id);
    });

    it('shares one credential between a direct child, a subshell and a grandchild', async () => {
      const direct = token('direct');
      const subshell = token('subshell');
      const grandchild = token('grandchild');
      // "; true" keeps each bash from exec'ing its last command, so the client really is a
      // child (and grandchild) of the subshells.
      await inPty(
        [
          clientCommand(server.path, direct),
          `bash -c ${shellQuote(`${clientCommand(server.path, subshell)}; true`)}`,
          `bash -c ${shellQuote(`bash -c ${shellQuote(`${clientCommand(server.path, grandchild)}; true`)}; true`)}`,
        ].join('; '),
      );
      const d = await derivedFor(direct);
      const s = await derivedFor(subshell);
      const g = await derivedFor(grandchild);
      expect(d.credential.scope).toBe('terminal');
      expect(s.credential.id).toBe(d.credential.id);
      expect(g.credential.id).toBe(d.credential.id);
      expect(new Set([d.pid, s.pid, g.pid]).size).toBe(3);
      expect(g.session.sessionId).toBe(d.session.sessionId);
    });

    it.skipIf(!hasSetsid)(
      'gives a setsid inside the pty a different, process-scoped credential (needs setsid)',
      async () => {
        const inside = token('in-pty');
        const detached = token('setsid');
        await inPty(
          `${clientCommand(server.path, inside)}; setsid -w ${clientCommand(server.path, detached)}`,
        );
        const a = await derivedFor(inside);
        const b = await derivedFor(detached);
        expect(a.credential.scope).toBe('terminal');
        expect(b.credential.scope).toBe('process');
        expect(b.credential.id).not.toBe(a.credential.id);
      },
    );

    it('takes the terminal from the kernel, not from fds 0-2 or the environment (sudo CVE-2013-1776)', async () => {
      // Terminal B stays open, holding its client connected.
      const holder = token('holder-b');
      track(runInPty(clientCommand(server.path, holder, true)));
      const b = await derivedFor(holder);
      const ttyB = b.session.tty as string;
      expect(ttyB).toMatch(/^\/dev\/pts\/\d+$/);

      // In terminal A: one plain client, and one whose stdin, stdout and stderr are terminal B
      // and whose environment claims terminal B.
      const plain = token('plain-a');
      const forged = token('forged-a');
      const q = shellQuote(ttyB);
      await inPty(
        `${clientCommand(server.path, plain)}; ${clientCommand(server.path, forged)} <${q} >${q} 2>&1`,
        { ...process.env, TTY: ttyB, SSH_TTY: ttyB, GPG_TTY: ttyB, TMUX: '/tmp/forged,1,0' },
      );
      const a = await derivedFor(plain);
      const f = await derivedFor(forged);
      // The premise: the forged client's stdin really was terminal B, the plain one's was A.
      expect(f.stdin).toBe(ttyB);
      expect(a.stdin).toBe(a.session.tty);
      expect(a.session.tty).not.toBe(ttyB);
      expect(f.session.tty).toBe(a.session.tty);
      expect(f.credential.id).toBe(a.credential.id);
      expect(f.credential.id).not.toBe(b.credential.id);

      // Without any controlling terminal, stdio on terminal B does not make it one.
      const noTty = token('no-tty-forged');
      const fd = openSync(ttyB, 'r+');
      try {
        const spawned = track(
          spawnProcess(process.execPath, [CLIENT, server.path, noTty], {
            detached: true,
            stdio: [fd, fd, fd],
            env: { ...process.env, TTY: ttyB },
          }),
        );
        await spawned.exited;
      } finally {
        closeSync(fd);
      }
      const n = await derivedFor(noTty);
      expect(n.stdin).toBe(ttyB);
      expect(n.credential.scope).toBe('process');
      expect(n.credential.id).not.toBe(b.credential.id);
    });

    it('names the fallback host when the terminal is not a known one', async () => {
      const t = token('host-fallback');
      await inPty(clientCommand(server.path, t));
      const { credential } = await derivedFor(t);
      // script is a wrapper, so the host is whatever started it: this test process.
      const self = await readProcStat(process.pid);
      expect(credential.process).toMatchObject({
        host: programName(realpathSync(process.execPath), self?.comm),
        program: 'node',
        executable: realpathSync(process.execPath),
      });
    });
  });

  describe('without a terminal', () => {
    it('keys on the invoking parent: two clients of one parent share, two parents do not', async () => {
      const one = token('parent-one-a');
      const two = token('parent-one-b');
      const other = token('parent-two');
      // detached: a new session without a controlling terminal.
      const parent = (script: string) =>
        track(spawnProcess('bash', ['-c', script], { detached: true }));
      await parent(`${clientCommand(server.path, one)}; ${clientCommand(server.path, two)}; true`)
        .exited;
      await parent(`${clientCommand(server.path, other)}; true`).exited;
      const a = await derivedFor(one);
      const b = await derivedFor(two);
      const c = await derivedFor(other);
      expect(a.credential.scope).toBe('process');
      expect(a.session.basis).toBe('invoking-parent');
      expect(b.credential.id).toBe(a.credential.id);
      expect(c.credential.id).not.toBe(a.credential.id);
      expect(b.session.anchorPid).toBe(a.session.anchorPid);
    });

    it('keys a client spawned without a tty on this process (its parent)', async () => {
      const t = token('direct-no-tty');
      await track(spawnProcess(process.execPath, [CLIENT, server.path, t], { detached: true }))
        .exited;
      const { credential, session } = await derivedFor(t);
      expect(credential.scope).toBe('process');
      expect(session.anchorPid).toBe(process.pid);
    });

    it('fails closed (ERR_PEER_UNKNOWN) when the client is gone before its session is derived', async () => {
      const t = token('vanishing');
      const provider = createLinuxCredentialProvider({ bindings });
      const local = await startPeerServer(bindings, async () => {});
      try {
        const spawned = track(
          spawnProcess(process.execPath, [CLIENT, local.path, t, '--hold'], { detached: true }),
        );
        const { peer } = await local.connection(t);
        spawned.child.kill('SIGKILL');
        await spawned.exited;
        await expect(provider.derive(peer)).rejects.toMatchObject({ code: 'ERR_PEER_UNKNOWN' });
      } finally {
        await local.close();
      }
    });
  });

  describe.skipIf(!hasTmux)('inside tmux (needs tmux)', () => {
    it('names tmux as the host of a client in a tmux pane', async () => {
      const t = token('tmux');
      const socketName = `bk-test-${process.pid}`;
      const env: NodeJS.ProcessEnv = { ...process.env, TERM: 'xterm-256color' };
      delete env.TMUX;
      try {
        execFileSync(
          'tmux',
          [
            '-L',
            socketName,
            '-f',
            '/dev/null',
            'new-session',
            '-d',
            '-x',
            '80',
            '-y',
            '24',
            `${clientCommand(server.path, t)}; sleep 5`,
          ],
          { env, stdio: 'ignore' },
        );
        const { credential, session } = await derivedFor(t);
        expect(credential.scope).toBe('terminal');
        expect(session.tty).toMatch(/^\/dev\/pts\/\d+$/);
        expect(credential.process.host).toBe('tmux');
      } finally {
        try {
          execFileSync('tmux', ['-L', socketName, 'kill-server'], { env, stdio: 'ignore' });
        } catch {
          // Already gone.
        }
      }
    });
  });
});
