/**
 * The seed's macOS design end to end, with fakes only at the OS boundary: a relay helper offering
 * two XPC mach services (one for clients, one for the app), the app and two CLIs connecting to
 * it, code-signing requirements checked by (fake) libxpc in every direction, the macOS platform
 * module deriving terminal sessions from (fake) `kinfo_proc` and re-checking each client per
 * request, and LocalAuthentication asking through (fake) `LAContext`. Everything above the
 * bindings is the real code: createRelay, connectXpc/listenXpc, requireCodeSignature,
 * createDarwinPlatform, the LocalAuthentication backend and its Objective-C layer, the server,
 * the client and the authorizer.
 *
 * The fakes: test/support/fake-xpc.ts (libxpc + launchd), test/platform/darwin/fake-darwin.ts
 * (the process table), test/platform/darwin/fake-objc.ts (the Objective-C runtime). None of this
 * has run on a Mac.
 */

import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { type Client, connect } from '../../src/client.js';
import { describeProcess } from '../../src/platform/darwin/identity.js';
import { createDarwinPlatform } from '../../src/platform/darwin/index.js';
import { createLocalAuthenticationBindings } from '../../src/platform/darwin/local-authentication.js';
import { requireCodeSignature } from '../../src/policy/code-signature.js';
import { sameUser } from '../../src/policy/peer-policy.js';
import { localAuthenticationPromptBackend } from '../../src/prompt/local-authentication.js';
import { createServer, type Server } from '../../src/server.js';
import { createRelay, type Relay, relayListener } from '../../src/transport/relay.js';
import { connectXpc, listenXpc } from '../../src/transport/xpc.js';
import { FakeDarwinBindings, PATHS } from '../platform/darwin/fake-darwin.js';
import { FakeObjC } from '../platform/darwin/fake-objc.js';
import { FakeXpc, FakeXpcWorld } from '../support/fake-xpc.js';

const TEAM = 'anchor apple generic and certificate leaf[subject.OU] = "ABCDE12345"';
const RELAY = `${TEAM} and identifier "com.example.secrets.relay"`;
const APP = `${TEAM} and identifier "com.example.secrets"`;
const CLI = `${TEAM} and identifier "com.example.secrets.cli"`;
const SERVICE = 'com.example.secrets.relay';
const APP_SERVICE = `${SERVICE}.app`;
const uid = process.getuid?.() ?? 501;

/** The processes of the fake Mac. */
const PID = {
  terminal: 50,
  login1: 100,
  zsh1: 101,
  cli1: 200,
  cli1b: 201,
  login2: 110,
  zsh2: 111,
  cli2: 210,
  relay: 400,
  app: 500,
  unsigned: 600,
  squatter: 700,
} as const;

/**
 * What libxpc does with a message from a peer that fails a requirement is not documented for
 * plain messages (an error event, or a silent drop): every test runs under both.
 */
const MODES = ['error', 'drop'] as const;
let mode: (typeof MODES)[number];
let world: FakeXpcWorld;
let mac: FakeDarwinBindings;
let objc: FakeObjC;
let relay: Relay;
let server: Server;
const cleanups: Array<() => unknown> = [];

function fakeProcess(pid: number, satisfies: string[]): FakeXpc {
  return new FakeXpc(world, { pid, euid: uid, satisfies });
}

const identify = (pid: number) => describeProcess(mac, pid);

async function setUp(): Promise<void> {
  world = new FakeXpcWorld({ requirementFailure: mode });
  world.register(SERVICE);
  world.register(APP_SERVICE);
  mac = new FakeDarwinBindings();
  mac.spawn({ pid: PID.terminal, path: PATHS.terminal, uid });
  // Two Terminal windows, each a login session on its own tty.
  mac.spawn({
    pid: PID.login1,
    parent: PID.terminal,
    path: PATHS.login,
    setsid: true,
    tty: 0x1000003,
  });
  mac.spawn({ pid: PID.zsh1, parent: PID.login1, path: PATHS.zsh });
  mac.spawn({ pid: PID.cli1, parent: PID.zsh1, path: PATHS.cli });
  mac.spawn({ pid: PID.cli1b, parent: PID.zsh1, path: PATHS.cli });
  mac.spawn({
    pid: PID.login2,
    parent: PID.terminal,
    path: PATHS.login,
    setsid: true,
    tty: 0x1000004,
  });
  mac.spawn({ pid: PID.zsh2, parent: PID.login2, path: PATHS.zsh });
  mac.spawn({ pid: PID.cli2, parent: PID.zsh2, path: PATHS.cli });
  mac.spawn({
    pid: PID.relay,
    path: '/Applications/Secrets.app/Contents/MacOS/secrets-relay',
    uid,
  });
  mac.spawn({ pid: PID.app, path: '/Applications/Secrets.app/Contents/MacOS/Secrets', uid });
  mac.spawn({ pid: PID.unsigned, parent: PID.zsh1, path: '/tmp/evil', uid });
  mac.spawn({ pid: PID.squatter, path: '/tmp/squatter', uid });

  // The relay helper (a launch agent): clients at SERVICE, the app at APP_SERVICE.
  const relayXpc = fakeProcess(PID.relay, [RELAY]);
  const listener = await listenXpc({
    service: SERVICE,
    requirement: CLI,
    bindings: relayXpc,
    identify,
    probeTimeoutMs: 500,
  });
  const appListener = await listenXpc({
    service: APP_SERVICE,
    requirement: APP,
    bindings: relayXpc,
    identify,
  });
  relay = createRelay({
    listener,
    appListener,
    appPolicies: [requireCodeSignature({ requirement: APP })],
    clientPolicies: [sameUser(), requireCodeSignature({ requirement: CLI })],
  });

  // The app: Touch ID through LocalAuthentication, sessions from kinfo_proc.
  objc = new FakeObjC();
  server = createServer({
    app: 'secrets',
    platform: await createDarwinPlatform({ bindings: mac }),
    prompt: localAuthenticationPromptBackend({
      bindings: createLocalAuthenticationBindings(objc, objc.blocks),
    }),
  });
  server.handle(
    'secret',
    {
      params: (raw) => raw as { account: string },
      account: ({ account }) => ({ id: account, displayName: account.toUpperCase() }),
    },
    ({ account }, context) => ({ account, pid: context.peer?.pid, source: context.peer?.source }),
  );
  const appTransport = await connectXpc({
    service: APP_SERVICE,
    requirement: RELAY,
    bindings: fakeProcess(PID.app, [APP]),
    identify,
  });
  await server.listen({
    listener: await relayListener(appTransport, {
      relayPolicies: [requireCodeSignature({ requirement: RELAY })],
    }),
  });
}

async function tearDown(): Promise<void> {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  await server.close();
  await relay.close();
  await world.idle();
  world.assertNoLeaks();
}

async function cli(pid: number, satisfies = [CLI]): Promise<Client> {
  const client = await connect({
    app: 'secrets',
    transport: await connectXpc({
      service: SERVICE,
      requirement: RELAY,
      bindings: fakeProcess(pid, satisfies),
      identify,
    }),
    serverPolicies: [requireCodeSignature({ requirement: RELAY })],
  });
  cleanups.push(() => client.close());
  return client;
}

/** Answers the next LocalAuthentication sheet once it is up: success, or an `LAError` code. */
async function answerNextSheet(answer: true | number): Promise<string> {
  const before = objc.evaluations.length;
  await expect.poll(() => objc.evaluations.length, { timeout: 5_000 }).toBe(before + 1);
  const evaluation = objc.evaluations.at(-1)!;
  objc.reply(evaluation.context, answer === true ? { ok: true } : { ok: false, code: answer });
  return evaluation.reason;
}

describe.each(MODES)(
  'the macOS design, end to end through fake libxpc (failing messages: %s), kinfo_proc and LAContext',
  (failing) => {
    beforeEach(async () => {
      mode = failing;
      await setUp();
    });
    afterEach(tearDown);

    it('asks once per terminal window; the app sees the CLI itself, relayed over XPC', async () => {
      const first = await cli(PID.cli1);
      const asked = first.request('secret', { account: 'work' });
      const reason = await answerNextSheet(true);
      expect(reason).toContain('“WORK”');
      expect(reason).toContain('Terminal');
      await expect(asked).resolves.toEqual({ account: 'work', pid: PID.cli1, source: 'relay:xpc' });

      // Another CLI in the same window: the same terminal session, no second sheet.
      const sibling = await cli(PID.cli1b);
      await expect(sibling.request('secret', { account: 'work' })).resolves.toMatchObject({
        pid: PID.cli1b,
      });
      expect(objc.evaluations).toHaveLength(1);

      // A CLI in the other window is asked again.
      const other = await cli(PID.cli2);
      const again = other.request('secret', { account: 'work' });
      await answerNextSheet(true);
      await expect(again).resolves.toMatchObject({ pid: PID.cli2 });
      expect(objc.evaluations).toHaveLength(2);
    });

    it('a failed fingerprint is a denial, a cancelled sheet a cancellation; neither makes a grant', async () => {
      const client = await cli(PID.cli1);
      const failed = client.request('secret', { account: 'work' });
      await answerNextSheet(-1); // LAErrorAuthenticationFailed
      await expect(failed).rejects.toMatchObject({ code: 'ERR_AUTHORIZATION_DENIED' });
      const cancelled = client.request('secret', { account: 'home' });
      await answerNextSheet(-2); // LAErrorUserCancel
      await expect(cancelled).rejects.toMatchObject({ code: 'ERR_AUTHORIZATION_CANCELLED' });
      expect(server.authorizer.listGrants()).toEqual([]);
    });

    it('a program without the CLI’s signature never reaches the app: libxpc drops it at the relay', async () => {
      const unsignedXpc = fakeProcess(PID.unsigned, []);
      // Refused at once (error), or dropped after the relay's probe timeout (drop).
      await expect(
        connectXpc({
          service: SERVICE,
          requirement: RELAY,
          bindings: unsignedXpc,
          identify,
          timeoutMs: 3_000,
        }),
      ).rejects.toMatchObject({ code: 'ERR_APP_UNAVAILABLE' });
      expect(unsignedXpc.sent).toEqual({ frame: 0, probe: 1, 'probe-ack': 0 });
      expect(relay.channels).toBe(0);
    });

    it('a CLI sends nothing but the probe to a squatter without the relay’s signature', async () => {
      // The genuine relay is gone and something else holds the service name.
      await relay.close();
      const squatter = fakeProcess(PID.squatter, []);
      const fake = await listenXpc({ service: SERVICE, bindings: squatter, identify });
      fake.onConnection((transport) => transport.onMessage(() => {}));
      cleanups.push(() => fake.close());
      const cliXpc = fakeProcess(PID.cli1, [CLI]);
      // Refused (error), or the ack never arrives (drop): either way nothing else was sent.
      await expect(
        connectXpc({
          service: SERVICE,
          requirement: RELAY,
          bindings: cliXpc,
          identify,
          timeoutMs: 500,
        }),
      ).rejects.toMatchObject({ code: mode === 'error' ? 'ERR_SERVER_REJECTED' : 'ERR_TIMEOUT' });
      expect(cliXpc.sent).toEqual({ frame: 0, probe: 1, 'probe-ack': 0 });
    });

    it('defence in depth: if the relay’s view of a CLI went stale (its pid reused), the app refuses it', async () => {
      const client = await cli(PID.cli1);
      const asked = client.request('secret', { account: 'work' });
      await answerNextSheet(true);
      await asked;
      // On a Mac the CLI's exit ends its XPC connection first; here the process table changes
      // under an open channel, to show that the app re-checks what the relay announced, per request.
      mac.exit(PID.cli1);
      mac.spawn({ pid: PID.cli1, parent: PID.zsh1, path: '/tmp/evil', uid });
      await expect(client.request('secret', { account: 'work' })).rejects.toMatchObject({
        code: 'ERR_PEER_CHANGED',
      });
    });
  },
);
