/**
 * The real D-Bus binding against a private bus (a session-type dbus-daemon in a temp dir, no
 * root needed) with a stand-in for polkitd that the test controls: what goes on the wire, how
 * replies and errors come back, and that pending calls fail — never hang — when polkitd or the
 * bus goes away.
 */

import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Message, type MessageBus, sessionBus, type Variant } from '@jellybrick/dbus-next';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  dbusPolkitBinding,
  type PolkitAuthority,
  PolkitBusError,
} from '../../../src/prompt/polkit/dbus-binding.js';

const hasDbusDaemon = (() => {
  try {
    execFileSync('sh', ['-c', 'command -v dbus-daemon'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
})();

const SUBJECT = { pid: 4242, startTime: 18446744073709551615n, uid: 1000 };

let dir: string;
let daemon: ChildProcess | undefined;
let address: string;
const cleanups: Array<() => void> = [];

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'bk-dbus-'));
});

afterEach(() => {
  for (const cleanup of cleanups.splice(0)) {
    try {
      cleanup();
    } catch {
      // Best effort.
    }
  }
  daemon?.kill('SIGKILL');
  daemon = undefined;
  rmSync(dir, { recursive: true, force: true });
});

/** Starts a private dbus-daemon; resolves with its address. */
async function startBus(): Promise<string> {
  const child = spawn(
    'dbus-daemon',
    ['--session', '--nofork', '--print-address', `--address=unix:path=${join(dir, 'bus')}`],
    { stdio: ['ignore', 'pipe', 'ignore'] },
  );
  daemon = child;
  return new Promise((resolve, reject) => {
    let output = '';
    child.stdout!.setEncoding('utf8').on('data', (chunk: string) => {
      output += chunk;
      if (output.includes('\n')) resolve(output.trim());
    });
    child.once('exit', (code) => reject(new Error(`dbus-daemon exited (${code})`)));
  });
}

interface FakePolkitd {
  bus: MessageBus;
  calls: Message[];
  /** How the next calls are answered; 'hang' leaves them pending. */
  reply: (message: Message) => Message | 'hang';
}

/** Owns org.freedesktop.PolicyKit1 on the private bus and answers as the test says. */
async function startFakePolkitd(busAddress: string): Promise<FakePolkitd> {
  const bus = sessionBus({ busAddress });
  (bus as unknown as import('node:events').EventEmitter).on('error', () => {});
  cleanups.push(() => bus.disconnect());
  const fake: FakePolkitd = {
    bus,
    calls: [],
    reply: (message) =>
      Message.newMethodReturn(message, '(bba{ss})', [[true, false, { seen: 'yes' }]]),
  };
  bus.addMethodHandler((message) => {
    if (message.interface !== 'org.freedesktop.PolicyKit1.Authority') return false;
    fake.calls.push(message);
    const answer = fake.reply(message);
    if (answer !== 'hang') bus.send(answer);
    return true;
  });
  await bus.requestName('org.freedesktop.PolicyKit1', 0);
  return fake;
}

async function connect(): Promise<PolkitAuthority> {
  const authority = await dbusPolkitBinding.connect({
    address,
    signal: AbortSignal.timeout(2_000),
  });
  cleanups.push(() => authority.close());
  return authority;
}

describe('D-Bus binding: connecting', () => {
  it('rejects as unreachable when no bus listens at the address', async () => {
    const error = await dbusPolkitBinding
      .connect({ address: `unix:path=${dir}/missing`, signal: AbortSignal.timeout(2_000) })
      .catch((e: unknown) => e);
    expect(error).toBeInstanceOf(PolkitBusError);
    expect(error).toMatchObject({ kind: 'unreachable' });
  });

  it('rejects as unreachable within its signal when the socket never completes the handshake', async () => {
    const silent: Server = createServer(() => {});
    const path = join(dir, 'silent');
    await new Promise<void>((resolve) => silent.listen(path, resolve));
    cleanups.push(() => silent.close());
    const started = performance.now();
    const error = await dbusPolkitBinding
      .connect({ address: `unix:path=${path}`, signal: AbortSignal.timeout(200) })
      .catch((e: unknown) => e);
    expect(error).toMatchObject({ kind: 'unreachable' });
    expect(performance.now() - started).toBeLessThan(1_500);
  });
});

describe.skipIf(!hasDbusDaemon)('D-Bus binding against a private bus (needs dbus-daemon)', () => {
  beforeEach(async () => {
    address = await startBus();
  });

  it('sends CheckAuthorization with a unix-process subject (pid u, start-time t, uid i), details, flags and cancellation id', async () => {
    const polkitd = await startFakePolkitd(address);
    const authority = await connect();
    const result = await authority.checkAuthorization(
      SUBJECT,
      'org.example.app.use-account',
      { account: 'Work', process: 'bk in GNOME Terminal' },
      1,
      'cancel-1',
    );
    expect(result).toEqual({ isAuthorized: true, isChallenge: false, details: { seen: 'yes' } });
    const call = polkitd.calls[0]!;
    expect(call.member).toBe('CheckAuthorization');
    expect(call.path).toBe('/org/freedesktop/PolicyKit1/Authority');
    expect(call.signature).toBe('(sa{sv})sa{ss}us');
    const [subject, actionId, details, flags, cancellationId] = call.body as [
      [string, Record<string, Variant>],
      string,
      Record<string, string>,
      number,
      string,
    ];
    expect(subject[0]).toBe('unix-process');
    expect(subject[1].pid).toMatchObject({ signature: 'u', value: 4242 });
    expect(subject[1]['start-time']).toMatchObject({ signature: 't', value: SUBJECT.startTime });
    expect(subject[1].uid).toMatchObject({ signature: 'i', value: 1000 });
    expect(actionId).toBe('org.example.app.use-account');
    expect(details).toEqual({ account: 'Work', process: 'bk in GNOME Terminal' });
    expect(flags).toBe(1);
    expect(cancellationId).toBe('cancel-1');
  });

  it('reports polkit errors with their D-Bus name', async () => {
    const polkitd = await startFakePolkitd(address);
    polkitd.reply = (message) =>
      Message.newError(
        message,
        'org.freedesktop.PolicyKit1.Error.Failed',
        'Action x.y is not registered',
      );
    const authority = await connect();
    const error = await authority
      .checkAuthorization(SUBJECT, 'x.y', {}, 1, 'c')
      .catch((e: unknown) => e);
    expect(error).toMatchObject({
      kind: 'reply',
      dbusName: 'org.freedesktop.PolicyKit1.Error.Failed',
    });
    expect((error as Error).message).toContain('is not registered');
  });

  it('rejects a reply of the wrong shape instead of reading it as a grant', async () => {
    const polkitd = await startFakePolkitd(address);
    polkitd.reply = (message) => Message.newMethodReturn(message, 's', ['yes']);
    const authority = await connect();
    await expect(authority.checkAuthorization(SUBJECT, 'x.y', {}, 1, 'c')).rejects.toMatchObject({
      kind: 'malformed',
    });
  });

  it('reports ServiceUnknown when nothing owns org.freedesktop.PolicyKit1', async () => {
    const authority = await connect();
    await expect(authority.enumerateActions('')).rejects.toMatchObject({
      kind: 'reply',
      dbusName: 'org.freedesktop.DBus.Error.ServiceUnknown',
    });
  });

  it('reads EnumerateActions with annotations, and sends CancelCheckAuthorization', async () => {
    const polkitd = await startFakePolkitd(address);
    polkitd.reply = (message) =>
      message.member === 'EnumerateActions'
        ? Message.newMethodReturn(message, 'a(ssssssuuua{ss})', [
            [
              [
                'org.example.app.use-account',
                'Use an account',
                'Authentication is required',
                'Example',
                '',
                '',
                2,
                2,
                2,
                { 'org.freedesktop.policykit.owner': 'unix-user:alice' },
              ],
            ],
          ])
        : Message.newMethodReturn(message, '', []);
    const authority = await connect();
    await expect(authority.enumerateActions('')).resolves.toEqual([
      {
        actionId: 'org.example.app.use-account',
        description: 'Use an account',
        message: 'Authentication is required',
        vendorName: 'Example',
        annotations: { 'org.freedesktop.policykit.owner': 'unix-user:alice' },
      },
    ]);
    await authority.cancelCheckAuthorization('cancel-7');
    expect(polkitd.calls.at(-1)?.member).toBe('CancelCheckAuthorization');
    expect(polkitd.calls.at(-1)?.body).toEqual(['cancel-7']);
  });

  it('a pending check fails with NoReply when polkitd leaves the bus mid-check', async () => {
    const polkitd = await startFakePolkitd(address);
    polkitd.reply = () => 'hang';
    const authority = await connect();
    const pending = authority.checkAuthorization(SUBJECT, 'x.y', {}, 1, 'c');
    await new Promise((resolve) => setTimeout(resolve, 50));
    polkitd.bus.disconnect();
    await expect(pending).rejects.toMatchObject({
      kind: 'reply',
      dbusName: 'org.freedesktop.DBus.Error.NoReply',
    });
  });

  it('a pending check fails (never hangs) when the bus itself dies', async () => {
    const polkitd = await startFakePolkitd(address);
    polkitd.reply = () => 'hang';
    const authority = await connect();
    const pending = authority.checkAuthorization(SUBJECT, 'x.y', {}, 1, 'c');
    await new Promise((resolve) => setTimeout(resolve, 50));
    daemon?.kill('SIGKILL');
    await expect(pending).rejects.toMatchObject({ kind: 'disconnected' });
    expect(authority.closed).toBe(true);
  });

  it('close() fails pending calls and every later call as disconnected', async () => {
    const polkitd = await startFakePolkitd(address);
    polkitd.reply = () => 'hang';
    const authority = await connect();
    const pending = authority.checkAuthorization(SUBJECT, 'x.y', {}, 1, 'c');
    authority.close();
    authority.close();
    await expect(pending).rejects.toMatchObject({ kind: 'disconnected' });
    await expect(authority.enumerateActions('')).rejects.toMatchObject({ kind: 'disconnected' });
  });
});
