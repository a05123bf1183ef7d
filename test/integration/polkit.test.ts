/**
 * The polkit backend against a REAL polkitd on a real system bus (started by
 * test/support/polkit.ts when none runs), with a non-root test user and subject processes:
 * rules that say YES and NO, a challenge nobody answers, pkttyagent in a pty typing the right
 * and a wrong password, cancellation mid-prompt, polkitd killed mid-check, a wrong start time,
 * and an app and a CLI as separate non-root processes, where the prompt's subject is the real
 * peer.
 */

import { type ChildProcess, spawn } from 'node:child_process';
import { chownSync, mkdtempSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { autoPromptBackend } from '../../src/prompt/auto.js';
import { dbusPolkitBinding } from '../../src/prompt/polkit/dbus-binding.js';
import { createPolkitBackend, type PolkitBackend } from '../../src/prompt/polkit/polkit-backend.js';
import type { PromptOutcome, PromptRequest } from '../../src/prompt/prompt-backend.js';
import { Authorizer } from '../../src/session/authorizer.js';
import type { SessionCredential } from '../../src/session/credentials.js';
import {
  POLKIT_REQUIREMENTS,
  type PolkitEnvironment,
  polkitSkipReason,
  SYSTEM_BUS_ADDRESS,
  setupPolkit,
  TEST_ACTIONS,
  type TestAgent,
  type TestSubject,
} from '../support/polkit.js';

const skipReason = polkitSkipReason();
const skip = skipReason !== undefined;
const needs = `(${POLKIT_REQUIREMENTS}${skip ? `; skipped here: ${skipReason}` : ''})`;
if (skip) console.log(`polkit integration tests skipped: ${skipReason}`);

let env: PolkitEnvironment;
const backends: PolkitBackend[] = [];
const subjects: TestSubject[] = [];
const agents: TestAgent[] = [];
const children: ChildProcess[] = [];

beforeAll(async () => {
  if (!skip) env = await setupPolkit();
}, 240_000);

afterAll(async () => {
  await env?.teardown();
}, 60_000);

afterEach(async () => {
  for (const agent of agents.splice(0)) agent.stop();
  for (const subject of subjects.splice(0)) subject.kill();
  for (const child of children.splice(0)) child.kill('SIGKILL');
  await Promise.all(backends.splice(0).map((backend) => backend.close()));
});

function backend(actionId: string): PolkitBackend {
  const created = createPolkitBackend({ actionId });
  backends.push(created);
  return created;
}

async function subject(): Promise<TestSubject> {
  const spawned = await env.spawnSubject();
  subjects.push(spawned);
  return spawned;
}

async function agent(of: TestSubject, password?: string): Promise<TestAgent> {
  const started = await env.startAgent(of, password);
  agents.push(started);
  return started;
}

function request(of: TestSubject, overrides: Partial<PromptRequest> = {}): PromptRequest {
  return {
    account: { id: 'work', displayName: 'Work' },
    process: { host: 'GNOME Terminal', program: 'bk-secrets', pid: of.pid },
    claims: {},
    sessionId: `process:${of.pid}:${of.startTime}`,
    subject: { pid: of.pid, startTime: of.startTime, uid: of.uid },
    unlocks: false,
    ...overrides,
  };
}

const live = () => new AbortController().signal;

async function timed<T>(promise: Promise<T>): Promise<{ value: T; ms: number }> {
  const started = performance.now();
  const value = await promise;
  return { value, ms: performance.now() - started };
}

describe('polkit backend against a real polkitd', () => {
  it.skipIf(skip)(`a rule that says YES for the non-root subject → granted ${needs}`, async () => {
    const of = await subject();
    expect(of.uid).not.toBe(0);
    const outcome = await backend(TEST_ACTIONS.yes).prompt(request(of), { signal: live() });
    expect(outcome).toEqual({ result: 'granted' });
  });

  it.skipIf(skip)(`a rule that says NO → denied ${needs}`, async () => {
    const of = await subject();
    const outcome = await backend(TEST_ACTIONS.no).prompt(request(of), { signal: live() });
    expect(outcome.result).toBe('denied');
  });

  it.skipIf(skip)(
    `auth_self with no authentication agent → unavailable at once, saying no agent is running ${needs}`,
    async () => {
      const of = await subject();
      const { value: outcome, ms } = await timed(
        backend(TEST_ACTIONS.challenge).prompt(request(of), { signal: live() }),
      );
      expect(outcome.result).toBe('unavailable');
      expect((outcome as { detail?: string }).detail).toMatch(
        /no polkit authentication agent is running/,
      );
      expect(ms).toBeLessThan(1_000);
    },
  );

  it.skipIf(skip)(
    `auth_self answered by pkttyagent with the right password → granted; the dialog names the account and the process ${needs}`,
    async () => {
      const of = await subject();
      const tty = await agent(of, env.password);
      const { value: outcome, ms } = await timed(
        backend(TEST_ACTIONS.challenge).prompt(request(of), { signal: live() }),
      );
      expect(outcome).toEqual({ result: 'granted' });
      // The message from the generated action file, filled in from the details.
      expect(tty.output).toContain(
        'Authentication is required to let bk-secrets in GNOME Terminal use Work',
      );
      expect(tty.output).toContain(`Authenticating as: ${env.user.name}`);
      console.log(`polkit AUTH_SELF with the right password: granted in ${ms.toFixed(0)} ms`);
    },
  );

  it.skipIf(skip)(
    `auth_self answered by pkttyagent with a wrong password → denied ${needs}`,
    async () => {
      const of = await subject();
      const tty = await agent(of, `${env.password}-wrong`);
      const { value: outcome, ms } = await timed(
        backend(TEST_ACTIONS.challenge).prompt(request(of), { signal: live() }),
      );
      expect(outcome.result).toBe('denied');
      // The agent's own output may trail polkit's answer by a moment.
      await tty.printed('AUTHENTICATION FAILED', 5_000);
      console.log(`polkit AUTH_SELF with a wrong password: denied in ${ms.toFixed(0)} ms`);
    },
  );

  it.skipIf(skip)(
    `cancellation mid-prompt: the signal → CancelCheckAuthorization, polkit ends the check, outcome cancelled within 1 s ${needs}`,
    async () => {
      const of = await subject();
      const tty = await agent(of);
      const polkit = backend(TEST_ACTIONS.challenge);
      const controller = new AbortController();
      const pending = polkit.prompt(request(of), { signal: controller.signal });
      await tty.promptShown();
      const { value: outcome, ms } = await timed(
        (async () => {
          controller.abort();
          return pending;
        })(),
      );
      expect(outcome.result).toBe('cancelled');
      expect(ms).toBeLessThan(1_000);
      // The dialog is down: polkit hands the same agent the next request, and it completes.
      tty.stop();
      await agent(of, env.password);
      const next = await polkit.prompt(request(of), { signal: live() });
      expect(next).toEqual({ result: 'granted' });
    },
  );

  it.skipIf(skip)(
    `cancellation on the wire: polkit accepts CancelCheckAuthorization and answers the pending check at once ${needs}`,
    async () => {
      const of = await subject();
      const tty = await agent(of);
      const authority = await dbusPolkitBinding.connect({
        address: SYSTEM_BUS_ADDRESS,
        signal: AbortSignal.timeout(2_000),
      });
      try {
        const pending = authority.checkAuthorization(
          { pid: of.pid, startTime: BigInt(of.startTime), uid: of.uid },
          TEST_ACTIONS.challenge,
          { account: 'Work', process: 'test' },
          1,
          'bk-cancel-test',
        );
        await tty.promptShown();
        const started = performance.now();
        await authority.cancelCheckAuthorization('bk-cancel-test');
        const result = await pending.catch((error: unknown) => error);
        expect(performance.now() - started).toBeLessThan(500);
        // polkitd 122 answers "not authorized" once the agent took the dialog down (other
        // versions answer org.freedesktop.PolicyKit1.Error.Cancelled); never authorized.
        if (result instanceof Error) {
          expect(result).toMatchObject({ dbusName: 'org.freedesktop.PolicyKit1.Error.Cancelled' });
        } else {
          expect(result).toMatchObject({ isAuthorized: false });
        }
      } finally {
        authority.close();
      }
    },
  );

  it.skipIf(skip)(
    `the client leaving mid-prompt: the authorizer aborts, polkit's check is cancelled, nothing is granted ${needs}`,
    async () => {
      const of = await subject();
      const tty = await agent(of);
      const authorizer = new Authorizer({ prompt: backend(TEST_ACTIONS.challenge) });
      const session: SessionCredential = {
        id: `process:${of.pid}:${of.startTime}`,
        scope: 'process',
        process: { host: 'GNOME Terminal', program: 'bk-secrets' },
      };
      const connection = new AbortController();
      const denied: string[] = [];
      authorizer.on('denied', (event) => denied.push(event.code));
      const pending = authorizer
        .authorize(
          {
            session,
            account: { id: 'work', displayName: 'Work' },
            subject: { pid: of.pid, startTime: of.startTime, uid: of.uid },
          },
          { signal: connection.signal },
        )
        .catch((error: unknown) => error);
      await tty.promptShown();
      connection.abort();
      await expect(pending).resolves.toMatchObject({ code: 'ERR_ABORTED' });
      expect(denied).toEqual(['ERR_ABORTED']);
      expect(authorizer.listGrants()).toEqual([]);
      authorizer.close();
    },
  );

  it.skipIf(skip)(
    `polkitd killed mid-check → the backend rejects; the authorizer answers ERR_PROMPT_FAILED, never a grant ${needs}`,
    async (context) => {
      if (!env.startedPolkitd) {
        context.skip('polkitd was already running, not started by the test setup: not killing it');
      }
      const of = await subject();
      const tty = await agent(of);
      const polkit = backend(TEST_ACTIONS.challenge);
      const authorizer = new Authorizer({ prompt: polkit });
      const session: SessionCredential = {
        id: `process:${of.pid}:${of.startTime}`,
        scope: 'process',
        process: { host: 'GNOME Terminal' },
      };
      const direct = polkit
        .prompt(request(of), { signal: live() })
        .then((outcome: PromptOutcome) => outcome)
        .catch((error: unknown) => error);
      await tty.promptShown();
      const viaAuthorizer = authorizer
        .authorize({
          session,
          account: { id: 'work', displayName: 'Work' },
          subject: { pid: of.pid, startTime: of.startTime, uid: of.uid },
        })
        .catch((error: unknown) => error);
      // Let the authorizer's check reach polkitd too (it queues behind the agent's dialog).
      await new Promise((resolve) => setTimeout(resolve, 200));
      try {
        await env.killPolkitd();
        const [directError, authorizerError] = await Promise.all([direct, viaAuthorizer]);
        expect(directError).toMatchObject({ code: 'ERR_PLATFORM' });
        expect(String((directError as Error).message)).toMatch(
          /NoReply|disconnected|ServiceUnknown/,
        );
        expect(authorizerError).toMatchObject({ code: 'ERR_PROMPT_FAILED' });
        expect(authorizer.listGrants()).toEqual([]);
      } finally {
        authorizer.close();
        await env.startPolkitd();
      }
      // With polkitd back, the same backend works again.
      const again = await backend(TEST_ACTIONS.yes).prompt(request(of), { signal: live() });
      expect(again).toEqual({ result: 'granted' });
    },
  );

  it.skipIf(skip)(
    `a wrong start time → ERR_PEER_CHANGED (and ERR_PROMPT_FAILED through the authorizer), never granted, even where the right one is ${needs}`,
    async () => {
      const of = await subject();
      const polkit = backend(TEST_ACTIONS.yes);
      await expect(polkit.prompt(request(of), { signal: live() })).resolves.toEqual({
        result: 'granted',
      });
      const wrong = { pid: of.pid, startTime: String(BigInt(of.startTime) + 1n), uid: of.uid };
      await expect(
        polkit.prompt(request(of, { subject: wrong }), { signal: live() }),
      ).rejects.toMatchObject({ code: 'ERR_PEER_CHANGED' });
      const authorizer = new Authorizer({ prompt: polkit });
      await expect(
        authorizer.authorize({
          session: { id: 'wrong-start', scope: 'process', process: { host: 'x' } },
          account: { id: 'work', displayName: 'Work' },
          subject: wrong,
        }),
      ).rejects.toMatchObject({ code: 'ERR_PROMPT_FAILED' });
      expect(authorizer.listGrants()).toEqual([]);
      authorizer.close();
    },
  );

  it.skipIf(skip)(
    `a subject that exited before the check → rejected, never granted ${needs}`,
    async () => {
      const of = await subject();
      of.kill();
      await new Promise((resolve) => setTimeout(resolve, 100));
      const outcome = await backend(TEST_ACTIONS.yes)
        .prompt(request(of), { signal: live() })
        .catch((error: unknown) => error);
      expect(outcome).not.toEqual({ result: 'granted' });
      expect(outcome).toMatchObject({ code: 'ERR_PEER_CHANGED' });
    },
  );

  it.skipIf(skip)(
    `isAvailable, diagnose and autoPromptBackend see the installed action, and say which file is missing otherwise ${needs}`,
    async () => {
      await expect(backend(TEST_ACTIONS.yes).isAvailable()).resolves.toBe(true);
      await expect(backend(TEST_ACTIONS.yes).diagnose()).resolves.toMatchObject({
        available: true,
        owner: `unix-user:${env.user.name}`,
        detailsAllowed: true,
      });
      const missing = backend('org.bridgekeeper.test.not-installed');
      await expect(missing.isAvailable()).resolves.toBe(false);
      await expect(missing.diagnose()).resolves.toMatchObject({ problem: 'action-missing' });
      const auto = await autoPromptBackend({ polkit: { actionId: TEST_ACTIONS.yes } });
      expect(auto.id).toBe('polkit');
      await (auto as PolkitBackend).close();
      const error = await autoPromptBackend({
        polkit: { actionId: 'org.bridgekeeper.test.not-installed' },
      }).catch((e: unknown) => e);
      expect(error).toMatchObject({ code: 'ERR_PROMPT_UNAVAILABLE' });
      expect(String((error as Error).message)).toContain(
        '/usr/share/polkit-1/actions/org.bridgekeeper.test.not-installed.policy',
      );
    },
  );
});

describe('end to end: a non-root app and CLI, the prompt about the real peer', () => {
  const tsx = createRequire(import.meta.url).resolve('tsx');
  const fixture = (name: string) =>
    fileURLToPath(new URL(`../fixtures/polkit/${name}`, import.meta.url));
  let dir: string | undefined;

  afterEach(() => {
    if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
    dir = undefined;
  });

  /** Runs a fixture as the test user; resolves with its stdout lines as they come. */
  function runAsTestUser(args: string[]): { child: ChildProcess; lines: string[] } {
    const child = spawn(
      'setpriv',
      [
        `--reuid=${env.user.uid}`,
        `--regid=${env.user.gid}`,
        '--init-groups',
        process.execPath,
        '--import',
        tsx,
        ...args,
      ],
      {
        cwd: fileURLToPath(new URL('../../', import.meta.url)),
        stdio: ['ignore', 'pipe', 'inherit'],
        env: { PATH: process.env.PATH, HOME: dir, XDG_RUNTIME_DIR: dir },
      },
    );
    children.push(child);
    const lines: string[] = [];
    let buffer = '';
    child.stdout!.setEncoding('utf8').on('data', (chunk: string) => {
      buffer += chunk;
      const parts = buffer.split('\n');
      buffer = parts.pop() ?? '';
      lines.push(...parts.filter(Boolean));
    });
    return { child, lines };
  }

  async function startApp(actionId: string) {
    dir = mkdtempSync(join(tmpdir(), 'bk-polkit-e2e-'));
    chownSync(dir, env.user.uid, env.user.gid);
    const socket = join(dir, 'agent.sock');
    const app = runAsTestUser([fixture('app.ts'), socket, actionId]);
    const ready = await new Promise<string>((resolve, reject) => {
      const timer = setInterval(() => {
        const line = app.lines.find((candidate) => candidate.startsWith('READY '));
        if (line) {
          clearInterval(timer);
          resolve(line.slice(6));
        }
      }, 10);
      app.child.once('exit', (code) => {
        clearInterval(timer);
        reject(new Error(`app exited early (${code})`));
      });
    });
    return { ...app, socket, ready: JSON.parse(ready) as { pid: number; uid: number } };
  }

  async function runClient(socket: string): Promise<{
    ok: boolean;
    pid: number;
    code?: string;
    result?: { peerPid: number };
  }> {
    const client = runAsTestUser([fixture('client.ts'), socket]);
    // 'close', not 'exit': only then has everything the client wrote been read.
    await new Promise<void>((resolve) => client.child.once('close', () => resolve()));
    return JSON.parse(client.lines.at(-1) ?? '{}');
  }

  it.skipIf(skip)(
    `the app (non-root, an owner of the action) asks polkit about the connecting CLI process, with the account and process as details ${needs}`,
    async () => {
      const app = await startApp(TEST_ACTIONS.record);
      expect(app.ready.uid).toBe(env.user.uid);
      const before = env.records().length;
      const client = await runClient(app.socket);
      expect(client).toMatchObject({ ok: true, result: { peerPid: client.pid } });
      const seen = env.records().slice(before);
      expect(seen).toHaveLength(1);
      // polkit's subject is the peer (the CLI), not the app that asked.
      expect(seen[0]).toMatchObject({
        action: TEST_ACTIONS.record,
        pid: client.pid,
        user: env.user.name,
        account: 'Work (e2e)',
      });
      expect(seen[0]?.pid).not.toBe(app.ready.pid);
      expect(seen[0]?.process).not.toBe('');
      expect(app.lines.some((line) => line.startsWith('GRANTED '))).toBe(true);
    },
  );

  it.skipIf(skip)(
    `without the owner annotation polkit refuses the details; the backend asks again without them ${needs}`,
    async () => {
      const app = await startApp(TEST_ACTIONS.recordNoOwner);
      const before = env.records().length;
      const client = await runClient(app.socket);
      expect(client).toMatchObject({ ok: true });
      const seen = env.records().slice(before);
      expect(seen).toEqual([
        expect.objectContaining({ pid: client.pid, account: '', process: '' }),
      ]);
    },
  );
});
