/**
 * Adversarial: lying about who is calling. A client claims another session, pid, uid or
 * credential in its hello; a connection outlives its process and the pid is handed to another
 * process running the same program; a process execs another program on a connection it opened.
 * All with real processes on a real socket (the pid reuse inside a fresh pid namespace).
 *
 * What must hold: the server places a connection only by what the kernel says about the peer,
 * never by its claims, so a grant of session A is never used by a process of session B, whatever
 * B says; a connection whose peer is gone or replaced is refused with ERR_PEER_CHANGED, and the
 * process that now has the pid inherits nothing; a program exec'd on a connection gets
 * ERR_PEER_CHANGED and no secret, and the handler never runs for it.
 */

import { execFileSync } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createServer, type Server, type ServerEvents } from 'bridgekeeper';
import { ScriptedPromptBackend } from 'bridgekeeper/testing';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { countCases } from './support/cases.js';
import {
  adversarialFixture,
  type ClientOutcome,
  clientArgs,
  hasCommand,
  isLinux,
  isRoot,
  jsonLines,
  NOBODY,
  Processes,
  python,
  type RawEvent,
  runInPty,
  runRawClient,
  shellQuote,
  startClientProcess,
  TSX,
  taggedLines,
} from './support/process-children.js';

const hasScript = isLinux && hasCommand('script');
/** Root, and a kernel and container that let us make a pid namespace with its own /proc. */
const canUnsharePid = ((): boolean => {
  if (!isLinux || !isRoot || !hasCommand('unshare')) return false;
  try {
    execFileSync('unshare', ['--pid', '--fork', '--mount-proc', '--kill-child', 'true'], {
      stdio: 'ignore',
    });
    return true;
  } catch {
    return false;
  }
})();

const SECRET = 'the-secret';
const processes = new Processes();
const servers: Server[] = [];
let dir: string;
let socketPath: string;

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'bk-adv-identity-'));
  socketPath = join(dir, 'agent.sock');
});

afterEach(async () => {
  await processes.killAll();
  for (const server of servers.splice(0)) server.destroy();
  await rm(dir, { recursive: true, force: true });
});

/**
 * The app in this process on a real socket. Its scripted prompt grants the first prompt and
 * denies every later one (no cool-down, so each later request is asked about again). `secret`
 * needs account "work" and records who it served.
 */
async function startApp(): Promise<{
  server: Server;
  prompt: ScriptedPromptBackend;
  served: Array<{ pid: number | undefined; session: string }>;
  connections: Array<ServerEvents['connection']>;
}> {
  const prompt = new ScriptedPromptBackend({ outcomes: ['granted'] });
  const server = createServer({ app: 'bk-integration', prompt, denialCooldownMs: 0 });
  servers.push(server);
  const served: Array<{ pid: number | undefined; session: string }> = [];
  const connections: Array<ServerEvents['connection']> = [];
  server.on('connection', (event) => connections.push(event));
  server.handle('echo', (params) => params);
  server.handle(
    'secret',
    { account: () => ({ id: 'work', displayName: 'Work' }) },
    (_params, context) => {
      served.push({ pid: context.peer?.pid, session: context.session.id });
      return { value: SECRET, session: context.session.id };
    },
  );
  await server.listen({ path: socketPath });
  return { server, prompt, served, connections };
}

const hello = (id: number, params: Record<string, unknown>) => ({
  jsonrpc: '2.0',
  id,
  method: 'bridgekeeper.hello',
  params: { protocol: { min: 1, max: 1 }, ...params },
});

/**
 * Session A (a genuine client, in its own pty or under its own invoking shell) is granted; then
 * one process of session B says it is A in every way a hello could put it, one connection per
 * forgery, and asks for the same account.
 */
async function forgedHelloAttack(
  where: 'a real pty' | 'another invoking process',
  task: Parameters<typeof countCases>[0],
): Promise<void> {
  const { server, prompt, served, connections } = await startApp();

  // Session A: a genuine client, in its own pty or under its own invoking shell, is granted.
  const command = [process.execPath, ...clientArgs(socketPath, 'secret')].map(shellQuote).join(' ');
  const a = processes.track(
    where === 'a real pty' ? runInPty(command) : processes.spawn('sh', ['-c', `${command}; true`]),
  );
  const [aOutcome] = jsonLines<ClientOutcome>((await a.exited).output);
  expect(aOutcome).toMatchObject({ ok: true, result: { value: SECRET } });
  const sessionA = aOutcome!.session!.id;
  const aPeer = connections[0]!.peer!;
  expect(server.authorizer.listGrants().map((grant) => grant.sessionId)).toEqual([sessionA]);

  // The kernel's answer for B, from a genuine sibling of B (spawned the same way).
  const sibling = await startClientProcess(processes, socketPath, 'echo').outcome;
  const sessionB = sibling.session!.id;
  expect(sibling.own).toBe(sessionB);
  expect(sessionB).not.toBe(sessionA);

  // B says it is A in every way a hello could put it.
  const claimsOfA = {
    session: { id: sessionA, scope: 'terminal' },
    sessionId: sessionA,
    credential: { id: sessionA, scope: 'terminal' },
    pid: aPeer.pid,
    uid: NOBODY,
    gid: NOBODY,
    startTime: aPeer.startTime,
    peer: { ...aPeer, uid: NOBODY },
  };
  const forgeries: Array<Record<string, unknown>> = [
    { client: { name: 'forger' }, session: claimsOfA.session },
    { client: { name: 'forger' }, sessionId: sessionA, credential: claimsOfA.credential },
    {
      client: { name: 'forger', session: sessionA, sessionId: sessionA, pid: aPeer.pid },
    },
    {
      client: { name: 'forger' },
      pid: aPeer.pid,
      uid: NOBODY,
      gid: NOBODY,
      startTime: aPeer.startTime,
      peer: claimsOfA.peer,
    },
    { client: { name: 'forger', version: '1.0' }, reason: `I am ${sessionA}`, ...claimsOfA },
  ];
  const conversations = forgeries.map((params) => [
    hello(1, params),
    { jsonrpc: '2.0', id: 2, method: 'secret', params: claimsOfA },
  ]);
  const b = await runRawClient(processes, socketPath, conversations);

  for (const [index] of forgeries.entries()) {
    const frames = b.events
      .filter((event) => event.conversation === index && event.frame)
      .map((event) => event.frame!);
    const helloResult = frames.find((frame) => frame.id === 1)?.result as
      | { session?: { id: string } }
      | undefined;
    expect(helloResult?.session?.id, `forgery ${index}`).toBe(sessionB);
    // Asked, not served: the app put a prompt up for B's own session, and the person said no.
    expect(frames.map((frame) => frame.method ?? frame.id)).toEqual([1, 'bridgekeeper.prompt', 2]);
    expect(frames.at(-1)?.error?.data?.code, `forgery ${index}`).toBe('ERR_AUTHORIZATION_DENIED');
    countCases(task, 1);
  }
  expect(JSON.stringify(b.events)).not.toContain(SECRET);

  // What the server recorded for B is the kernel's view only: its pid and uid, its session,
  // and of its claims nothing but the labelled name, version and reason.
  const bConnections = connections.filter((event) => event.peer?.pid === b.pid);
  expect(bConnections).toHaveLength(forgeries.length);
  for (const event of bConnections) {
    expect(event.peer?.uid).toBe(process.getuid!());
    expect(event.session.id).toBe(sessionB);
    expect(
      Object.keys(event.claims).every((key) => ['name', 'version', 'reason'].includes(key)),
    ).toBe(true);
  }
  const bPrompts = prompt.requests.slice(1);
  expect(bPrompts).toHaveLength(forgeries.length);
  for (const request of bPrompts) {
    expect(request.sessionId).toBe(sessionB);
    expect(request.subject?.pid).toBe(b.pid);
    expect(request.process.pid).toBe(b.pid);
  }
  expect(served.map((entry) => entry.session)).toEqual([sessionA]);
  expect(server.authorizer.listGrants().map((grant) => grant.sessionId)).toEqual([sessionA]);
}

describe.skipIf(!isLinux)('forged identity claims in the hello (Linux)', () => {
  it.skipIf(!hasScript)(
    'a process of session B claiming session A (granted in a real pty) is placed by the kernel and asked, never served on A’s grant (needs util-linux script)',
    ({ task }) => forgedHelloAttack('a real pty', task),
    30_000,
  );

  it(
    'a process of session B claiming session A (granted under another invoking process) is placed by the kernel and asked, never served on A’s grant',
    ({ task }) => forgedHelloAttack('another invoking process', task),
    30_000,
  );
});

/** What test/fixtures/adversarial/pid-reuse.ts reports. */
interface PidReuseReport {
  withoutPidfd: boolean;
  attempts: number;
  p1: {
    pid: number;
    startTime: string;
    executable: string;
    session: string;
    result: { result?: { value?: string } };
  };
  q: {
    pid: number;
    startTime: string;
    executable: string;
    session: string;
    result: { result?: unknown; error?: { data?: { code?: string } } };
  };
  cFrames: NonNullable<RawEvent['frame']>[];
  handledAfterC: number;
  handled: Array<{ pid: number; session: string }>;
  connections: Array<{ pid: number; startTime: string; pidfd: boolean; session: string }>;
  prompts: Array<{ sessionId: string; pid: number }>;
  grants: string[];
}

/**
 * The frames answer the request with an ERR_PEER_CHANGED error response (so a client in any
 * language learns which request was refused), then a closing notice with the same code, and
 * carry no result.
 */
function expectPeerChanged(frames: NonNullable<RawEvent['frame']>[]): void {
  expect(frames.filter((frame) => frame.result !== undefined)).toEqual([]);
  const answered = frames.findIndex((frame) => frame.error?.data?.code === 'ERR_PEER_CHANGED');
  const closing = frames.findIndex(
    (frame) => frame.method === 'bridgekeeper.closing' && frame.params?.code === 'ERR_PEER_CHANGED',
  );
  expect(answered, JSON.stringify(frames)).toBeGreaterThanOrEqual(0);
  expect(closing, JSON.stringify(frames)).toBeGreaterThan(answered);
  expect(JSON.stringify(frames)).not.toContain(SECRET);
}

describe.skipIf(!canUnsharePid || !python)(
  'pid reuse, for real in a new pid namespace (needs root, unshare, python3 and perl)',
  () => {
    const kernels = [
      { how: 'with the kernel’s pidfd, SO_PEERPIDFD', flags: [] },
      {
        how: 'SO_PEERPIDFD withheld at the binding boundary as on kernels before 6.5: start times only',
        flags: ['--no-pidfd'],
      },
    ];
    for (const { how, flags } of kernels) {
      it(`a connection whose peer died and whose pid went to the same program is refused, and the new process inherits no grant (${how})`, async () => {
        const run = processes.spawn('unshare', [
          '--pid',
          '--fork',
          '--mount-proc',
          '--kill-child',
          process.execPath,
          '--import',
          TSX,
          adversarialFixture('pid-reuse.ts'),
          `--python=${python}`,
          `--dir=${dir}`,
          ...flags,
        ]);
        const { code, output } = await run.exited;
        expect(code, output).toBe(0);
        const [line] = taggedLines(output, 'REPORT');
        const report = JSON.parse(line!) as PidReuseReport;

        // The premise: Q really has P1's pid and runs the same program; only the start time
        // (and the pidfd, when there is one) tell them apart.
        expect(report.q.pid).toBe(report.p1.pid);
        expect(report.q.executable).toBe(report.p1.executable);
        expect(report.q.startTime).not.toBe(report.p1.startTime);
        expect(report.connections[0]!.pidfd).toBe(flags.length === 0);
        // P1 itself was served.
        expect(report.p1.result.result?.value).toBe(SECRET);

        // C, on P1's connection after P1 died: refused, and the handler did not run again.
        expectPeerChanged(report.cFrames);
        expect(report.handledAfterC).toBe(1);

        // Q, with P1's pid, on its own connection: its own session, asked, and denied.
        expect(report.q.session).not.toBe(report.p1.session);
        expect(report.prompts).toEqual([
          { sessionId: report.p1.session, pid: report.p1.pid },
          { sessionId: report.q.session, pid: report.q.pid },
        ]);
        expect(report.q.result.error?.data?.code).toBe('ERR_AUTHORIZATION_DENIED');
        expect(report.handled).toEqual([{ pid: report.p1.pid, session: report.p1.session }]);
        expect(report.grants).toEqual([report.p1.session]);
      }, 30_000);
    }
  },
);

describe.skipIf(!isLinux || !python)('exec after connect (needs python3 and perl)', () => {
  const states = [
    { state: 'holding a grant', mode: 'exec-after-grant' },
    { state: 'before any request', mode: 'exec-without-grant' },
  ];
  for (const { state, mode } of states) {
    it(`a process that connects (${state}) and execs another program on the socket: ERR_PEER_CHANGED, no secret, the handler never runs for it`, async () => {
      const { server, prompt, served } = await startApp();
      const client = processes.spawn(python!, [
        adversarialFixture('raw-client.py'),
        socketPath,
        mode,
      ]);
      const { output } = await client.exited;
      const [helloLine] = taggedLines(output, 'HELLO');
      const session = (JSON.parse(helloLine!) as { result: { session: { id: string } } }).result
        .session.id;
      const before = mode === 'exec-after-grant' ? 1 : 0;
      if (before) {
        // Control: before the exec, the process was served as it should be.
        const [result] = taggedLines(output, 'RESULT');
        expect(JSON.parse(result!)).toMatchObject({ result: { value: SECRET } });
        expect(server.authorizer.listGrants().map((grant) => grant.sessionId)).toEqual([session]);
      }
      const afterExec = taggedLines(output, 'AFTER-EXEC').map(
        (frame) => JSON.parse(frame) as NonNullable<RawEvent['frame']>,
      );
      // perl ran, sent its request, and the app closed the connection on it.
      expect(output).toContain('AFTER-EXEC-EOF');
      expectPeerChanged(afterExec);
      expect(served).toHaveLength(before);
      // Refused before the person was asked about the new program.
      expect(prompt.requests).toHaveLength(before);
    }, 20_000);
  }
});
