/**
 * The XPC transport (src/transport/xpc.ts) through the fake libxpc of test/support/fake-xpc.ts:
 * the handshake and every way it fails, on both sides; the transport's limits, protocol errors
 * and ends; identities and `xpcPeerRequirement`; and the fake itself (it must catch misuse, or
 * the other tests prove little). After every test, every fake connection must have ended
 * properly: a handler, one resume, one `invalid`, no misuse.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { type BridgekeeperError, createError } from '../../src/errors.js';
import type {
  CloseInfo,
  Message,
  PeerIdentity,
  Transport,
  TransportListener,
} from '../../src/transport/transport.js';
import {
  connectXpc,
  listenXpc,
  XPC_KEYS,
  type XpcConnection,
  type XpcConnectOptions,
  type XpcEvent,
  type XpcListenOptions,
  xpcPeerRequirement,
} from '../../src/transport/xpc.js';
import { FakeXpc, FakeXpcWorld, type FakeXpcWorldOptions } from '../support/fake-xpc.js';
import { closed, rejectionOf, sleep } from './helpers.js';

const SERVER_REQUIREMENT = 'identifier "com.example.secrets.relay" and anchor apple generic';
const CLIENT_REQUIREMENT = 'identifier "com.example.secrets.cli" and anchor apple generic';
const SERVER_PID = 4100;
const CLIENT_PID = 4200;

let world: FakeXpcWorld;
let service: string;
let serviceNumber = 0;
const cleanups: Array<() => unknown> = [];

function newWorld(options: FakeXpcWorldOptions = {}): void {
  world = new FakeXpcWorld(options);
  service = `com.example.unit${++serviceNumber}.relay`;
  world.register(service);
}

beforeEach(() => newWorld());

afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  await world.idle();
  world.assertNoLeaks();
});

function serverProcess(options: { pid?: number; satisfies?: string[] } = {}): FakeXpc {
  return new FakeXpc(world, {
    pid: options.pid ?? SERVER_PID,
    euid: 501,
    satisfies: options.satisfies ?? [SERVER_REQUIREMENT],
  });
}

function clientProcess(options: { pid?: number; satisfies?: string[] } = {}): FakeXpc {
  return new FakeXpc(world, {
    pid: options.pid ?? CLIENT_PID,
    euid: 501,
    satisfies: options.satisfies ?? [CLIENT_REQUIREMENT],
  });
}

async function listen(
  bindings: FakeXpc,
  options: Partial<XpcListenOptions> = {},
): Promise<TransportListener> {
  const listener = await listenXpc({ service, bindings, ...options });
  // A killed process's listener never hears its 'invalid': nothing to wait for then.
  cleanups.push(() => (bindings.alive ? listener.close() : undefined));
  return listener;
}

async function connect(
  bindings: FakeXpc,
  options: Partial<XpcConnectOptions> = {},
): Promise<Transport> {
  const transport = await connectXpc({ service, bindings, ...options });
  cleanups.push(() => transport.destroy());
  return transport;
}

/** Every connection accepted by `listener`, in order, as they arrive. */
function accepted(listener: TransportListener): Transport[] {
  const transports: Transport[] = [];
  listener.onConnection((transport) => {
    transports.push(transport);
    cleanups.push(() => transport.destroy());
  });
  return transports;
}

/** Resolves once `condition` holds; fails after a generous deadline. */
async function until(condition: () => boolean, what: string, ms = 5000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`${what} did not happen within ${ms} ms`);
    await sleep(1);
  }
}

function collect(transport: Transport): Message[] {
  const messages: Message[] = [];
  transport.onMessage((message) => messages.push(message));
  return messages;
}

/** The binding calls made on one connection, in order (`setEventHandler`, `resume`, `send probe`, …). */
function callsOn(id: XpcConnection): string[] {
  return world.calls
    .map((line) => line.split(' '))
    .filter((parts) => parts[2] === String(id))
    .map((parts) => [parts[1], ...parts.slice(3)].join(' '));
}

function connectionOf(owner: FakeXpc, role: 'listener' | 'client' | 'accepted'): XpcConnection {
  const found = world.connections({ owner, role });
  expect(found, `${role} connections of pid ${owner.pid}`).toHaveLength(1);
  return found[0]!.id;
}

/** A connected pair over the fake: requirements enforced both ways. */
async function pair(
  options: { server?: Partial<XpcListenOptions>; client?: Partial<XpcConnectOptions> } = {},
) {
  const serverFake = serverProcess();
  const clientFake = clientProcess();
  const listener = await listen(serverFake, { requirement: CLIENT_REQUIREMENT, ...options.server });
  const transports = accepted(listener);
  const client = await connect(clientFake, { requirement: SERVER_REQUIREMENT, ...options.client });
  await until(() => transports.length === 1, 'accepting the connection');
  return { serverFake, clientFake, listener, client, server: transports[0]!, transports };
}

/**
 * A hand-written XPC server on `fake` (no Bridgekeeper): `onPeer` sees each peer's events and
 * may answer through `fake`. Its connections are cancelled at cleanup unless already ended.
 */
function rogueServer(
  fake: FakeXpc,
  onPeer: (connection: XpcConnection, event: XpcEvent) => void,
): { peers: XpcConnection[] } {
  const peers: XpcConnection[] = [];
  const listener = fake.createMachService(service, { listener: true });
  fake.setEventHandler(listener, (event) => {
    if (event.type !== 'connection') return;
    const peer = event.connection;
    peers.push(peer);
    fake.setEventHandler(peer, (peerEvent) => onPeer(peer, peerEvent));
    fake.resume(peer);
  });
  fake.resume(listener);
  cleanups.push(() => {
    for (const id of [...peers, listener]) cancelIfLive(fake, id);
  });
  return { peers };
}

/** A hand-written XPC client on `fake`; cancelled at cleanup unless already ended. */
function rogueClient(
  fake: FakeXpc,
  onEvent: (connection: XpcConnection, event: XpcEvent) => void = () => {},
): XpcConnection {
  const connection = fake.createMachService(service, { listener: false });
  fake.setEventHandler(connection, (event) => onEvent(connection, event));
  fake.resume(connection);
  cleanups.push(() => cancelIfLive(fake, connection));
  return connection;
}

function cancelIfLive(fake: FakeXpc, id: XpcConnection): void {
  const info = world.connection(id);
  if (fake.alive && info.invalidDelivered === 0 && info.cancels === 0) fake.cancel(id);
}

const frame = (value: unknown): XpcEvent => ({
  type: 'message',
  kind: 'frame',
  payload: Buffer.from(JSON.stringify(value)),
});

// ---- options --------------------------------------------------------------------------------

describe('options', () => {
  it.each([
    ['an empty name', ''],
    ['a single label', 'relay'],
    ['an empty label', 'com..example'],
    ['a NUL', 'com.example\0.relay'],
    ['an underscore', 'com.example.my_relay'],
    ['128 characters', `com.${'a'.repeat(124)}`],
    ['a number', 42],
  ])('refuses a service name with %s, before creating anything', async (_, name) => {
    const fake = clientProcess();
    const error = await rejectionOf(connectXpc({ service: name as string, bindings: fake }));
    expect(error.code).toBe('ERR_INVALID_ARGUMENT');
    expect(error.message).toContain('reverse-DNS');
    expect((await rejectionOf(listenXpc({ service: name as string, bindings: fake }))).code).toBe(
      'ERR_INVALID_ARGUMENT',
    );
    expect(world.calls).toEqual([]);
  });

  it('accepts a 127-character service name', async () => {
    const name = `com.${'a'.repeat(123)}`;
    expect(name).toHaveLength(127);
    world.register(name);
    const listener = await listenXpc({ service: name, bindings: serverProcess() });
    cleanups.push(() => listener.close());
    expect(listener.address).toBe(name);
    const transports = accepted(listener);
    await connect(clientProcess(), { service: name, requirement: SERVER_REQUIREMENT });
    await until(() => transports.length === 1, 'accepting');
  });

  it.each([
    ['an empty requirement', { requirement: '' }],
    ['a blank requirement', { requirement: '   ' }],
    ['a requirement with NUL', { requirement: 'anchor apple\0' }],
    ['a requirement that is not a string', { requirement: 42 }],
    ['identify that is not a function', { identify: {} }],
    ['maxFrameBytes 0', { maxFrameBytes: 0 }],
    ['fractional maxFrameBytes', { maxFrameBytes: 1.5 }],
    ['bindings that are neither bindings nor a loader', { bindings: 42 }],
    ['bindings without their methods', { bindings: { send() {} } }],
  ])('refuses %s on both sides', async (_, extra) => {
    const fake = clientProcess();
    const options = { service, bindings: fake, ...extra } as unknown as XpcConnectOptions;
    expect((await rejectionOf(connectXpc(options))).code).toBe('ERR_INVALID_ARGUMENT');
    expect((await rejectionOf(listenXpc(options as XpcListenOptions))).code).toBe(
      'ERR_INVALID_ARGUMENT',
    );
    expect(world.calls).toEqual([]);
  });

  it.each([0, -1, Number.NaN, Number.POSITIVE_INFINITY, 2 ** 31])(
    'refuses a timeoutMs / probeTimeoutMs of %s',
    async (value) => {
      const fake = clientProcess();
      expect(
        (await rejectionOf(connectXpc({ service, bindings: fake, timeoutMs: value }))).code,
      ).toBe('ERR_INVALID_ARGUMENT');
      expect(
        (await rejectionOf(listenXpc({ service, bindings: fake, probeTimeoutMs: value }))).code,
      ).toBe('ERR_INVALID_ARGUMENT');
    },
  );

  it.skipIf(process.platform === 'darwin')(
    'without bindings uses the macOS ones: off macOS, ERR_UNSUPPORTED_PLATFORM on both sides',
    async () => {
      const options = { service };
      expect((await rejectionOf(connectXpc(options))).code).toBe('ERR_UNSUPPORTED_PLATFORM');
      expect((await rejectionOf(listenXpc(options))).code).toBe('ERR_UNSUPPORTED_PLATFORM');
      expect(world.calls).toEqual([]);
    },
  );

  it('refuses missing options', async () => {
    expect((await rejectionOf(connectXpc(undefined as never))).code).toBe('ERR_INVALID_ARGUMENT');
    expect((await rejectionOf(listenXpc(null as never))).code).toBe('ERR_INVALID_ARGUMENT');
  });

  it('reports a loader that fails: its own code kept, anything else ERR_PLATFORM', async () => {
    const unsupported = createError('ERR_UNSUPPORTED_PLATFORM', 'XPC exists only on macOS.');
    const kept = await rejectionOf(
      connectXpc({
        service,
        bindings: () => {
          throw unsupported;
        },
      }),
    );
    expect(kept).toBe(unsupported);
    const boom = new Error('dlopen failed');
    const wrapped = await rejectionOf(listenXpc({ service, bindings: () => Promise.reject(boom) }));
    expect(wrapped.code).toBe('ERR_PLATFORM');
    expect(wrapped.cause).toBe(boom);
  });

  it('reports ERR_PLATFORM when libxpc returns no connection', async () => {
    const fake = serverProcess();
    fake.failNextCreate = true;
    expect((await rejectionOf(listenXpc({ service, bindings: fake }))).code).toBe('ERR_PLATFORM');
    fake.failNextCreate = true;
    expect((await rejectionOf(connectXpc({ service, bindings: fake }))).code).toBe('ERR_PLATFORM');
  });

  it('exports the dictionary keys, frozen', () => {
    expect(XPC_KEYS).toEqual({
      frame: 'bridgekeeper.frame',
      probe: 'bridgekeeper.probe',
      'probe-ack': 'bridgekeeper.probe-ack',
    });
    expect(Object.isFrozen(XPC_KEYS)).toBe(true);
  });
});

// ---- the handshake --------------------------------------------------------------------------

describe('handshake', () => {
  it('connects in the documented order and sends nothing but the probe before the ack', async () => {
    const { serverFake, clientFake, client, server } = await pair();
    const clientConnection = connectionOf(clientFake, 'client');
    expect(callsOn(clientConnection)).toEqual([
      'create client',
      'setEventHandler',
      `setPeerRequirement ${SERVER_REQUIREMENT}`,
      'resume',
      'send probe',
    ]);
    const serverConnection = connectionOf(serverFake, 'accepted');
    expect(callsOn(serverConnection)).toEqual([
      `setPeerRequirement ${CLIENT_REQUIREMENT}`,
      'setEventHandler',
      'resume',
      'send probe-ack',
    ]);
    expect(clientFake.sent).toEqual({ frame: 0, probe: 1, 'probe-ack': 0 });
    expect(serverFake.sent).toEqual({ frame: 0, probe: 0, 'probe-ack': 1 });
    expect(client.peer).toEqual({ pid: SERVER_PID, uid: 501, source: 'xpc' });
    expect(server.peer).toEqual({ pid: CLIENT_PID, uid: 501, source: 'xpc' });
    expect(Object.isFrozen(client.peer)).toBe(true);
    expect(Object.isFrozen(server.peer)).toBe(true);
    // And then it carries messages both ways.
    const atServer = collect(server);
    const atClient = collect(client);
    client.send({ hello: 'server' });
    server.send({ hello: 'client' });
    await until(() => atServer.length === 1 && atClient.length === 1, 'the exchange');
    expect(atServer).toEqual([{ hello: 'server' }]);
    expect(atClient).toEqual([{ hello: 'client' }]);
  });

  it('adds what identify says, but keeps the pid, uid and source from libxpc', async () => {
    const identify = (pid: number): Partial<PeerIdentity> => ({
      startTime: `start-of-${pid}`,
      executable: `/bin/${pid}`,
      gid: 20,
      source: 'forged',
    });
    const { client, server } = await pair({ server: { identify }, client: { identify } });
    expect(client.peer).toEqual({
      startTime: `start-of-${SERVER_PID}`,
      executable: `/bin/${SERVER_PID}`,
      gid: 20,
      pid: SERVER_PID,
      uid: 501,
      source: 'xpc',
    });
    expect(server.peer?.pid).toBe(CLIENT_PID);
    expect(server.peer?.source).toBe('xpc');
  });

  it('xpcPeerRequirement names the requirement for identities made with one, never for copies', async () => {
    const { client, server } = await pair();
    expect(xpcPeerRequirement(client.peer!)).toBe(SERVER_REQUIREMENT);
    expect(xpcPeerRequirement(server.peer!)).toBe(CLIENT_REQUIREMENT);
    expect(xpcPeerRequirement({ ...client.peer! })).toBeUndefined();
    expect(xpcPeerRequirement(structuredClone(server.peer!))).toBeUndefined();
    expect(xpcPeerRequirement({ pid: SERVER_PID, uid: 501, source: 'xpc' })).toBeUndefined();
    expect(xpcPeerRequirement(undefined as never)).toBeUndefined();
  });

  it('xpcPeerRequirement is undefined for identities of connections without a requirement', async () => {
    const serverFake = serverProcess();
    const listener = await listen(serverFake);
    const transports = accepted(listener);
    const client = await connect(clientProcess());
    await until(() => transports.length === 1, 'accepting');
    expect(client.peer?.pid).toBe(SERVER_PID);
    expect(xpcPeerRequirement(client.peer!)).toBeUndefined();
    expect(xpcPeerRequirement(transports[0]!.peer!)).toBeUndefined();
  });

  it('the client refuses a server that does not satisfy its requirement: only the probe was sent', async () => {
    const listener = await listen(serverProcess({ satisfies: [] }));
    const transports = accepted(listener);
    const clientFake = clientProcess();
    const error = await rejectionOf(
      connectXpc({ service, bindings: clientFake, requirement: SERVER_REQUIREMENT }),
    );
    expect(error.code).toBe('ERR_SERVER_REJECTED');
    expect(error.message).toContain('does not satisfy the code-signing requirement');
    expect(error.message).toContain(JSON.stringify(SERVER_REQUIREMENT));
    expect(error.message).toContain('Nothing was sent');
    expect(clientFake.sent).toEqual({ frame: 0, probe: 1, 'probe-ack': 0 });
    const clientConnection = world.connection(connectionOf(clientFake, 'client'));
    expect(clientConnection.delivered[0]).toBe('error:peer-requirement');
    expect(clientConnection.cancels).toBe(1);
    // The server (which requires nothing) did accept; it sees the client go.
    await until(() => transports.length === 1, 'the server accepting');
    expect(await closed(transports[0]!)).toEqual({ local: false });
  });

  it('the listener drops a client that does not satisfy its requirement, unseen', async () => {
    const serverFake = serverProcess();
    const listener = await listen(serverFake, { requirement: CLIENT_REQUIREMENT });
    const transports = accepted(listener);
    const clientFake = clientProcess({ satisfies: [] });
    const error = await rejectionOf(connectXpc({ service, bindings: clientFake }));
    expect(error.code).toBe('ERR_APP_UNAVAILABLE');
    await world.idle();
    expect(transports).toEqual([]);
    const peer = world.connection(connectionOf(serverFake, 'accepted'));
    expect(peer.delivered).toEqual(['error:peer-requirement', 'error:invalid']);
    expect(serverFake.sent['probe-ack']).toBe(0);
  });

  it('reports an unregistered service as ERR_APP_UNAVAILABLE with what to check', async () => {
    world.unregister(service);
    const error = await rejectionOf(connectXpc({ service, bindings: clientProcess() }));
    expect(error.code).toBe('ERR_APP_UNAVAILABLE');
    expect(error.message).toContain(`No process offers the XPC service ${service}`);
    expect(error.message).toContain(`launchctl print gui/$UID/${service}`);
  });

  it('reports a registered service nobody listens on as ERR_APP_UNAVAILABLE', async () => {
    expect((await rejectionOf(connectXpc({ service, bindings: clientProcess() }))).code).toBe(
      'ERR_APP_UNAVAILABLE',
    );
  });

  it.each<[string, (fake: FakeXpc, peer: XpcConnection) => void]>([
    ['a frame', (fake, peer) => fake.send(peer, 'frame', Buffer.from('{"early":true}'))],
    ['a probe', (fake, peer) => fake.send(peer, 'probe')],
    [
      'a foreign dictionary',
      () => {
        // What the binding reports for a dictionary without our keys.
        const client = world.connections({ role: 'client' })[0]!;
        client.owner.inject(client.id, { type: 'message', kind: 'unknown' });
      },
    ],
  ])(
    'refuses a server that sends %s before the ack (ERR_PROTOCOL), sending nothing',
    async (_, act) => {
      const serverFake = serverProcess();
      rogueServer(serverFake, (peer, event) => {
        if (event.type === 'message' && event.kind === 'probe') act(serverFake, peer);
      });
      const clientFake = clientProcess();
      const error = await rejectionOf(
        connectXpc({ service, bindings: clientFake, requirement: SERVER_REQUIREMENT }),
      );
      expect(error.code).toBe('ERR_PROTOCOL');
      expect(error.message).toContain('before answering the handshake');
      expect(clientFake.sent).toEqual({ frame: 0, probe: 1, 'probe-ack': 0 });
      expect(world.connection(connectionOf(clientFake, 'client')).cancels).toBe(1);
    },
  );

  it('reports a server that dies before answering as ERR_APP_UNAVAILABLE, and never sends again', async () => {
    const serverFake = serverProcess();
    rogueServer(serverFake, (_peer, event) => {
      if (event.type === 'message' && event.kind === 'probe') serverFake.kill();
    });
    const clientFake = clientProcess();
    const error = await rejectionOf(connectXpc({ service, bindings: clientFake }));
    expect(error.code).toBe('ERR_APP_UNAVAILABLE');
    expect(error.message).toContain('exited');
    const connection = world.connection(connectionOf(clientFake, 'client'));
    await world.idle();
    expect(connection.delivered).toEqual(['error:interrupted', 'error:invalid']);
    expect(connection.cancels).toBe(1);
    expect(clientFake.sent).toEqual({ frame: 0, probe: 1, 'probe-ack': 0 });
  });

  it('refuses a server libxpc reports no pid for (ERR_SERVER_REJECTED)', async () => {
    await listen(serverProcess({ pid: 0 }));
    const clientFake = clientProcess();
    const error = await rejectionOf(connectXpc({ service, bindings: clientFake }));
    expect(error.code).toBe('ERR_SERVER_REJECTED');
    expect(error.message).toContain('no process');
    expect(error.message).toContain('Nothing was sent');
    expect(clientFake.sent).toEqual({ frame: 0, probe: 1, 'probe-ack': 0 });
  });

  it('drops a client libxpc reports no pid for, unseen and unanswered', async () => {
    const serverFake = serverProcess();
    const listener = await listen(serverFake);
    const transports = accepted(listener);
    const error = await rejectionOf(connectXpc({ service, bindings: clientProcess({ pid: 0 }) }));
    expect(error.code).toBe('ERR_APP_UNAVAILABLE');
    await world.idle();
    expect(transports).toEqual([]);
    expect(serverFake.sent['probe-ack']).toBe(0);
  });

  it('refuses a server identify() cannot describe (ERR_SERVER_REJECTED, cause kept)', async () => {
    await listen(serverProcess());
    const failure = new Error('no such process');
    const error = await rejectionOf(
      connectXpc({
        service,
        bindings: clientProcess(),
        identify: () => {
          throw failure;
        },
      }),
    );
    expect(error.code).toBe('ERR_SERVER_REJECTED');
    expect(error.message).toContain('no such process');
    expect((error.cause as BridgekeeperError).code).toBe('ERR_PEER_UNKNOWN');
    expect((error.cause as BridgekeeperError).cause).toBe(failure);
  });

  it.each<[string, (pid: number) => unknown]>([
    [
      'throws',
      () => {
        throw new Error('gone');
      },
    ],
    ['returns nothing', () => undefined],
    ['returns a promise', async (pid) => ({ pid })],
    ['describes another process', (pid) => ({ pid: pid + 1 })],
    ['describes another user', () => ({ uid: 0 })],
  ])('drops a client when identify() %s, before answering it', async (_, identify) => {
    const serverFake = serverProcess();
    const listener = await listen(serverFake, { identify: identify as never });
    const transports = accepted(listener);
    expect((await rejectionOf(connectXpc({ service, bindings: clientProcess() }))).code).toBe(
      'ERR_APP_UNAVAILABLE',
    );
    await world.idle();
    expect(transports).toEqual([]);
    expect(serverFake.sent['probe-ack']).toBe(0);
  });

  it('times out with ERR_TIMEOUT when the server never answers, and cancels', async () => {
    rogueServer(serverProcess(), () => {});
    const clientFake = clientProcess();
    const error = await rejectionOf(connectXpc({ service, bindings: clientFake, timeoutMs: 50 }));
    expect(error.code).toBe('ERR_TIMEOUT');
    expect(error.message).toContain('did not answer within 50 ms');
    expect(world.connection(connectionOf(clientFake, 'client')).cancels).toBe(1);
  });

  it('rejects with ERR_ABORTED when aborted during the handshake, and cancels', async () => {
    const probes: XpcConnection[] = [];
    rogueServer(serverProcess(), (peer, event) => {
      if (event.type === 'message' && event.kind === 'probe') probes.push(peer);
    });
    const clientFake = clientProcess();
    const controller = new AbortController();
    const attempt = connectXpc({ service, bindings: clientFake, signal: controller.signal });
    await until(() => probes.length === 1, 'the probe arriving');
    controller.abort();
    expect((await rejectionOf(attempt)).code).toBe('ERR_ABORTED');
    expect(world.connection(connectionOf(clientFake, 'client')).cancels).toBe(1);
  });

  it('rejects with ERR_TIMEOUT when a timeout signal fires during the handshake', async () => {
    rogueServer(serverProcess(), () => {});
    const clientFake = clientProcess();
    const error = await rejectionOf(
      connectXpc({ service, bindings: clientFake, signal: AbortSignal.timeout(30) }),
    );
    expect(error.code).toBe('ERR_TIMEOUT');
    expect(world.connection(connectionOf(clientFake, 'client')).cancels).toBe(1);
  });

  it('creates nothing for a signal aborted before the call', async () => {
    const controller = new AbortController();
    controller.abort();
    const clientFake = clientProcess();
    expect(
      (await rejectionOf(connectXpc({ service, bindings: clientFake, signal: controller.signal })))
        .code,
    ).toBe('ERR_ABORTED');
    expect(
      (await rejectionOf(listenXpc({ service, bindings: clientFake, signal: controller.signal })))
        .code,
    ).toBe('ERR_ABORTED');
    expect(world.calls).toEqual([]);
  });

  it('needs macOS 12 for a requirement: ERR_UNSUPPORTED_PLATFORM, the connection resumed and cancelled, nothing sent', async () => {
    const clientFake = new FakeXpc(world, {
      pid: CLIENT_PID,
      euid: 501,
      peerRequirements: 'unsupported',
    });
    const error = await rejectionOf(
      connectXpc({ service, bindings: clientFake, requirement: SERVER_REQUIREMENT }),
    );
    expect(error.code).toBe('ERR_UNSUPPORTED_PLATFORM');
    expect(error.message).toContain('macOS 12');
    expect(callsOn(connectionOf(clientFake, 'client'))).toEqual([
      'create client',
      'setEventHandler',
      `setPeerRequirement ${SERVER_REQUIREMENT}`,
      'cancel',
      'resume',
    ]);
    expect(clientFake.sent).toEqual({ frame: 0, probe: 0, 'probe-ack': 0 });
  });

  it('reports a requirement libxpc cannot compile as ERR_INVALID_ARGUMENT', async () => {
    world.uncompilable.add('anchor apple generic and (');
    const error = await rejectionOf(
      connectXpc({ service, bindings: clientProcess(), requirement: 'anchor apple generic and (' }),
    );
    expect(error.code).toBe('ERR_INVALID_ARGUMENT');
    expect(error.message).toContain('does not compile');
  });

  it('ignores termination-imminent while connecting; any other XPC error is ERR_PLATFORM', async () => {
    const clientFake = clientProcess();
    const serverFake = serverProcess();
    let mode: 'imminent' | 'other' = 'imminent';
    rogueServer(serverFake, (peer, event) => {
      if (event.type !== 'message' || event.kind !== 'probe') return;
      const client = world.connections({ owner: clientFake, role: 'client' }).at(-1)!;
      if (mode === 'imminent') {
        clientFake.inject(client.id, { type: 'error', error: 'termination-imminent' });
        serverFake.send(peer, 'probe-ack');
      } else {
        clientFake.inject(client.id, { type: 'error', error: 'other' });
      }
    });
    const transport = await connect(clientFake);
    expect(transport.peer?.pid).toBe(SERVER_PID);
    mode = 'other';
    expect((await rejectionOf(connectXpc({ service, bindings: clientFake }))).code).toBe(
      'ERR_PLATFORM',
    );
  });
});

// ---- the listener ---------------------------------------------------------------------------

describe('listener', () => {
  it('drops a client that sends no probe within probeTimeoutMs, unseen', async () => {
    const listener = await listen(serverProcess(), { probeTimeoutMs: 50 });
    const transports = accepted(listener);
    const rogue = rogueClient(clientProcess());
    await until(
      () => world.connection(rogue).invalidDelivered === 1,
      'the silent client being cut off',
    );
    expect(transports).toEqual([]);
  });

  it.each<[string, (fake: FakeXpc, connection: XpcConnection) => void]>([
    ['a frame', (fake, c) => fake.send(c, 'frame', Buffer.from('{"sneaky":true}'))],
    ['a probe-ack', (fake, c) => fake.send(c, 'probe-ack')],
  ])('drops a client that sends %s before its probe, unseen and unanswered', async (_, act) => {
    const serverFake = serverProcess();
    const listener = await listen(serverFake);
    const transports = accepted(listener);
    const clientFake = clientProcess();
    const rogue = rogueClient(clientFake);
    act(clientFake, rogue);
    clientFake.send(rogue, 'probe');
    await until(() => world.connection(rogue).invalidDelivered === 1, 'the client being cut off');
    expect(transports).toEqual([]);
    expect(serverFake.sent['probe-ack']).toBe(0);
  });

  it('drops a client that sends a foreign dictionary first', async () => {
    const serverFake = serverProcess();
    const listener = await listen(serverFake);
    const transports = accepted(listener);
    const rogue = rogueClient(clientProcess());
    await until(() => world.connections({ role: 'accepted' }).length === 1, 'the connection');
    const peer = world.connections({ role: 'accepted' })[0]!.id;
    await until(() => world.connection(peer).resumes === 1, 'the listener resuming it');
    serverFake.inject(peer, { type: 'message', kind: 'unknown' });
    await until(() => world.connection(rogue).invalidDelivered === 1, 'the client being cut off');
    expect(transports).toEqual([]);
  });

  it('forgets a client that goes away before its probe', async () => {
    const listener = await listen(serverProcess());
    const transports = accepted(listener);
    const clientFake = clientProcess();
    const rogue = rogueClient(clientFake);
    clientFake.cancel(rogue);
    await world.idle();
    expect(transports).toEqual([]);
    expect(world.connections({ role: 'accepted' })[0]?.delivered.at(-1)).toBe('error:invalid');
  });

  it('refuses every client (handler, cancel, resume) when the requirement cannot be set, and says so once', async () => {
    const serverFake = new FakeXpc(world, {
      pid: SERVER_PID,
      euid: 501,
      peerRequirements: 'unsupported',
    });
    const listener = await listen(serverFake, { requirement: CLIENT_REQUIREMENT });
    const transports = accepted(listener);
    const errors: Error[] = [];
    listener.onError!((error) => errors.push(error));
    for (let attempt = 0; attempt < 2; attempt++) {
      expect((await rejectionOf(connectXpc({ service, bindings: clientProcess() }))).code).toBe(
        'ERR_APP_UNAVAILABLE',
      );
    }
    await world.idle();
    expect(transports).toEqual([]);
    expect(errors).toHaveLength(1);
    expect((errors[0] as BridgekeeperError).code).toBe('ERR_UNSUPPORTED_PLATFORM');
    expect(errors[0]!.message).toContain('Every client');
    for (const peer of world.connections({ role: 'accepted' })) {
      expect(callsOn(peer.id)).toEqual([
        `setPeerRequirement ${CLIENT_REQUIREMENT}`,
        'setEventHandler',
        'cancel',
        'resume',
      ]);
    }
  });

  it('reports ERR_ENDPOINT_LOST when its service is not registered, once', async () => {
    world.unregister(service);
    const listener = await listen(serverProcess());
    const early: Error[] = [];
    listener.onError!((error) => early.push(error));
    await world.idle();
    expect(early).toHaveLength(1);
    expect((early[0] as BridgekeeperError).code).toBe('ERR_ENDPOINT_LOST');
    expect(early[0]!.message).toContain('MachServices');
    const late: Error[] = [];
    listener.onError!((error) => late.push(error));
    await world.idle();
    expect(late).toHaveLength(0); // told to the first subscriber, not again
  });

  it('holds ERR_ENDPOINT_LOST for a subscriber that arrives after it happened', async () => {
    world.unregister(service);
    const listener = await listen(serverProcess());
    await world.idle();
    const errors: Error[] = [];
    listener.onError!((error) => errors.push(error));
    expect(errors).toHaveLength(0); // asynchronously
    await sleep(0);
    expect(errors.map((error) => (error as BridgekeeperError).code)).toEqual(['ERR_ENDPOINT_LOST']);
  });

  it('reports ERR_ENDPOINT_LOST once when the service goes away; open connections go on', async () => {
    const { listener, client, server } = await pair();
    const errors: Error[] = [];
    listener.onError!((error) => errors.push(error));
    world.unregister(service);
    await world.idle();
    expect(errors.map((error) => (error as BridgekeeperError).code)).toEqual(['ERR_ENDPOINT_LOST']);
    const atClient = collect(client);
    server.onMessage((message) => server.send({ echo: message.n }));
    client.send({ n: 1 });
    await until(() => atClient.length === 1, 'the echo');
    expect(atClient).toEqual([{ echo: 1 }]);
    expect((await rejectionOf(connectXpc({ service, bindings: clientProcess() }))).code).toBe(
      'ERR_APP_UNAVAILABLE',
    );
  });

  it('does not report its own close as ERR_ENDPOINT_LOST; close() resolves once libxpc ended it', async () => {
    const serverFake = serverProcess();
    const listener = await listenXpc({ service, bindings: serverFake });
    const errors: Error[] = [];
    listener.onError!((error) => errors.push(error));
    const connection = world.connection(connectionOf(serverFake, 'listener'));
    const closing = listener.close();
    expect(connection.invalidDelivered).toBe(0);
    await closing;
    expect(connection.invalidDelivered).toBe(1);
    await listener.close();
    await world.idle();
    expect(errors).toEqual([]);
  });

  it('close() ends peers still in their handshake and connections nobody took yet', async () => {
    const serverFake = serverProcess();
    const listener = await listenXpc({ service, bindings: serverFake });
    // One held (nobody subscribed yet), one mid-handshake (no probe yet).
    const heldClient = await connect(clientProcess());
    const silent = rogueClient(clientProcess({ pid: 4300 }));
    await until(() => world.connections({ role: 'accepted' }).length === 2, 'both arriving');
    await world.idle();
    await listener.close();
    expect(await closed(heldClient)).toEqual({ local: false });
    await until(() => world.connection(silent).invalidDelivered === 1, 'the silent one cut off');
  });

  it('leaves a delivered connection open when the listener closes', async () => {
    const { listener, client, server } = await pair();
    await listener.close();
    const atServer = collect(server);
    client.send({ still: 'here' });
    await until(() => atServer.length === 1, 'a message after the listener closed');
    expect(atServer).toEqual([{ still: 'here' }]);
  });
});

// ---- the transport --------------------------------------------------------------------------

describe('transport', () => {
  it('refuses to send a message over maxFrameBytes, sends nothing and stays open', async () => {
    const { clientFake, client, server } = await pair({ client: { maxFrameBytes: 100 } });
    const atServer = collect(server);
    const error = (() => {
      try {
        client.send({ text: 'x'.repeat(100) });
      } catch (caught) {
        return caught as BridgekeeperError;
      }
      throw new Error('expected a throw');
    })();
    expect(error.code).toBe('ERR_FRAME_TOO_LARGE');
    expect(clientFake.sent.frame).toBe(0);
    expect(client.closed).toBe(false);
    // Exactly at the limit passes: {"text":"…"} is 11 bytes of JSON around the text.
    client.send({ text: 'y'.repeat(89) });
    await until(() => atServer.length === 1, 'the message at the limit');
    expect((atServer[0]!.text as string).length).toBe(89);
  });

  it('closes with ERR_FRAME_TOO_LARGE on an incoming message over maxFrameBytes', async () => {
    const { client, server } = await pair({ server: { maxFrameBytes: 100 } });
    const atServer = collect(server);
    const serverClosed = closed(server);
    const clientClosed = closed(client);
    client.send({ n: 1 });
    client.send({ text: 'x'.repeat(200) });
    client.send({ n: 2 });
    const info = await serverClosed;
    expect((info.error as BridgekeeperError).code).toBe('ERR_FRAME_TOO_LARGE');
    expect(info.local).toBe(false);
    expect(atServer).toEqual([{ n: 1 }]);
    expect(await clientClosed).toEqual({ local: false });
  });

  it.each<[string, XpcEvent]>([
    [
      'bytes that are not UTF-8',
      { type: 'message', kind: 'frame', payload: Buffer.from([0x7b, 0xff, 0x7d]) },
    ],
    ['text that is not JSON', { type: 'message', kind: 'frame', payload: Buffer.from('{nope') }],
    ['an array', frame([1, 2])],
    ['null', frame(null)],
    ['a string', frame('hello')],
    ['an empty frame', { type: 'message', kind: 'frame', payload: Buffer.alloc(0) }],
    ['a frame without data', { type: 'message', kind: 'frame' }],
    ['a foreign dictionary', { type: 'message', kind: 'unknown' }],
    ['a second probe', { type: 'message', kind: 'probe' }],
    ['a second probe-ack', { type: 'message', kind: 'probe-ack' }],
  ])('closes with ERR_PROTOCOL on %s, after delivering what came before', async (_, event) => {
    const { serverFake, client, server } = await pair();
    const atServer = collect(server);
    const serverClosed = closed(server);
    client.send({ before: true });
    await until(() => atServer.length === 1, 'the first message');
    serverFake.inject(connectionOf(serverFake, 'accepted'), event);
    serverFake.inject(connectionOf(serverFake, 'accepted'), frame({ after: true }));
    const info = await serverClosed;
    expect((info.error as BridgekeeperError).code).toBe('ERR_PROTOCOL');
    if (event.type === 'message' && event.kind !== 'frame') {
      expect(info.error!.message).toContain('after the handshake');
    }
    expect(atServer).toEqual([{ before: true }]);
    expect(world.connection(connectionOf(serverFake, 'accepted')).cancels).toBe(1);
    await closed(client);
  });

  it('closes the client with ERR_APP_UNAVAILABLE when the server process dies mid-stream, and never sends again', async () => {
    const { serverFake, clientFake, client, server } = await pair();
    const atClient = collect(client);
    const clientClosed = closed(client);
    for (let n = 0; n < 5; n++) server.send({ n });
    await until(() => atClient.length === 5, 'the first messages');
    serverFake.kill();
    const info = await clientClosed;
    expect((info.error as BridgekeeperError).code).toBe('ERR_APP_UNAVAILABLE');
    expect(info.local).toBe(false);
    expect(() => client.send({ late: true })).toThrow(/closed/);
    const connection = world.connection(connectionOf(clientFake, 'client'));
    expect(connection.delivered.slice(-2)).toEqual(['error:interrupted', 'error:invalid']);
    expect(connection.cancels).toBe(1);
    expect(clientFake.sent.frame).toBe(0);
  });

  it('closes the server end like a hang-up when the client process dies mid-stream', async () => {
    const { clientFake, client, server } = await pair();
    const atServer = collect(server);
    const serverClosed = closed(server);
    client.send({ n: 1 });
    await until(() => atServer.length === 1, 'the first message');
    clientFake.kill();
    expect(await serverClosed).toEqual({ local: false });
  });

  it('closes with ERR_PEER_CHANGED when the peer stops satisfying the requirement', async () => {
    const { clientFake, client } = await pair();
    const clientClosed = closed(client);
    clientFake.inject(connectionOf(clientFake, 'client'), {
      type: 'error',
      error: 'peer-requirement',
    });
    const info = await clientClosed;
    expect((info.error as BridgekeeperError).code).toBe('ERR_PEER_CHANGED');
  });

  it('ignores termination-imminent; closes with ERR_PLATFORM on any other XPC error', async () => {
    const { serverFake, clientFake, client, server } = await pair();
    const atServer = collect(server);
    const serverClosed = closed(server);
    serverFake.inject(connectionOf(serverFake, 'accepted'), {
      type: 'error',
      error: 'termination-imminent',
    });
    client.send({ n: 1 });
    await until(() => atServer.length === 1, 'a message after termination-imminent');
    expect(server.closed).toBe(false);
    serverFake.inject(connectionOf(serverFake, 'accepted'), { type: 'error', error: 'other' });
    expect(((await serverClosed).error as BridgekeeperError).code).toBe('ERR_PLATFORM');
    await closed(client);
    expect(clientFake.alive).toBe(true);
  });

  it('delivers 1,000 messages in order both ways', async () => {
    const { client, server } = await pair();
    const atServer = collect(server);
    const atClient = collect(client);
    for (let seq = 0; seq < 1000; seq++) {
      client.send({ seq });
      server.send({ seq });
    }
    await until(() => atServer.length === 1000 && atClient.length === 1000, '2,000 messages');
    expect(atServer.map((message) => message.seq)).toEqual([...Array(1000).keys()]);
    expect(atClient.map((message) => message.seq)).toEqual([...Array(1000).keys()]);
  });

  it('close() resolves only once libxpc delivered invalid, and tells subscribers then', async () => {
    const { clientFake, client, server } = await pair();
    server.onMessage(() => {});
    const connection = world.connection(connectionOf(clientFake, 'client'));
    // How many 'invalid' libxpc had delivered when each thing happened.
    let atNotify = -1;
    let info: CloseInfo | undefined;
    client.onClose((closeInfo) => {
      atNotify = connection.invalidDelivered;
      info = closeInfo;
    });
    let atResolve = -1;
    const closing = client.close().then(() => {
      atResolve = connection.invalidDelivered;
    });
    expect(client.closed).toBe(true);
    // Cancelled inside a send barrier, so what was sent before close() is not discarded.
    expect({ barriers: connection.barriers, cancels: connection.cancels }).toEqual({
      barriers: 1,
      cancels: 0,
    });
    expect(connection.invalidDelivered).toBe(0); // libxpc delivers it later
    await closing;
    expect(connection.cancels).toBe(1);
    expect(atResolve).toBe(1);
    expect(atNotify).toBe(1);
    expect(info).toEqual({ local: true });
    await client.close();
    expect(connection.cancels).toBe(1);
  });

  it('destroy(error) cancels at once; subscribers see the error once invalid arrived', async () => {
    const { clientFake, client, server } = await pair();
    const serverClosed = closed(server);
    server.onMessage(() => {});
    const failure = new Error('gave up');
    client.destroy(failure);
    client.destroy(new Error('ignored'));
    expect(world.connection(connectionOf(clientFake, 'client')).cancels).toBe(1);
    expect(await closed(client)).toEqual({ error: failure, local: true });
    expect(await serverClosed).toEqual({ local: false });
  });

  it('cuts off a peer that sends more than 1,024 messages before anyone reads them', async () => {
    const { client, server } = await pair();
    const serverClosed = closed(server);
    for (let n = 0; n < 1025; n++) client.send({ n });
    const info = await serverClosed;
    expect((info.error as BridgekeeperError).code).toBe('ERR_SEND_BUFFER_FULL');
    expect(info.error!.message).toContain('not read yet');
  });

  it('holds up to 1,024 unread messages and delivers them in order to the first subscriber', async () => {
    const { client, server } = await pair();
    for (let n = 0; n < 1024; n++) client.send({ n });
    await world.idle();
    expect(server.closed).toBe(false);
    const atServer = collect(server);
    await until(() => atServer.length === 1024, 'the held messages');
    expect(atServer.map((message) => message.n)).toEqual([...Array(1024).keys()]);
  });

  it('cuts off a peer whose unread messages exceed 16 MiB', async () => {
    const { client, server } = await pair();
    const serverClosed = closed(server);
    const text = 'z'.repeat(1_000_000);
    for (let n = 0; n < 17; n++) client.send({ n, text });
    expect(((await serverClosed).error as BridgekeeperError).code).toBe('ERR_SEND_BUFFER_FULL');
  });
});

// ---- what differs where Apple's documentation leaves room -----------------------------------

describe('documented uncertainties (see the module comment)', () => {
  it('if a server cancel reaches the client as interrupted, its orderly close looks like ERR_APP_UNAVAILABLE', async () => {
    newWorld({ remoteCancel: 'interrupted' });
    const { clientFake, client, server } = await pair();
    const clientClosed = closed(client);
    await server.close();
    const info = await clientClosed;
    expect((info.error as BridgekeeperError).code).toBe('ERR_APP_UNAVAILABLE');
    // And the client never sends on the interrupted connection (libxpc would relaunch).
    expect(world.connection(connectionOf(clientFake, 'client')).cancels).toBe(1);
  });

  it('where cancel discards what was not sent yet (as Apple documents), close() still delivers the last messages: it cancels after a barrier', async () => {
    newWorld({ cancelDiscardsUnsent: true });
    const { clientFake, client, server } = await pair();
    const atServer = collect(server);
    const serverClosed = closed(server);
    client.send({ n: 1 });
    client.send({ n: 2 });
    await client.close();
    expect(await serverClosed).toEqual({ local: false });
    expect(atServer).toEqual([{ n: 1 }, { n: 2 }]);
    const state = world.connection(connectionOf(clientFake, 'client'));
    expect({ barriers: state.barriers, cancels: state.cancels }).toEqual({
      barriers: 1,
      cancels: 1,
    });
  });

  it('destroy() cancels at once, without a barrier: there, unsent messages may be lost', async () => {
    newWorld({ cancelDiscardsUnsent: true });
    const { clientFake, client, server } = await pair();
    const atServer = collect(server);
    const serverClosed = closed(server);
    client.send({ n: 1 });
    client.destroy();
    expect(await serverClosed).toEqual({ local: false });
    expect(atServer).toEqual([]);
    expect(world.connection(connectionOf(clientFake, 'client')).barriers).toBe(0);
  });
});

// ---- the fake itself ------------------------------------------------------------------------

describe('the fake libxpc catches misuse', () => {
  let own: FakeXpcWorld;
  let fake: FakeXpc;

  beforeEach(() => {
    own = new FakeXpcWorld();
    own.register('com.example.fake');
    fake = new FakeXpc(own, { pid: 9, euid: 501 });
  });

  it('throws on a handler set twice, a resume twice, a requirement after resume, and records it', () => {
    const connection = fake.createMachService('com.example.fake', { listener: true });
    fake.setEventHandler(connection, () => {});
    expect(() => fake.setEventHandler(connection, () => {})).toThrow(/setEventHandler twice/);
    fake.resume(connection);
    expect(() => fake.resume(connection)).toThrow(/resume twice/);
    expect(() => fake.setPeerRequirement(connection, 'x')).toThrow(/after resume/);
    expect(own.misuse).toHaveLength(3);
    expect(() => own.assertNoLeaks()).toThrow(/misuse/);
  });

  it('throws on any call after invalid, and on a send after cancel or before resume', async () => {
    const connection = fake.createMachService('com.example.nobody', { listener: false });
    fake.setEventHandler(connection, () => {});
    expect(() => fake.send(connection, 'probe')).toThrow(/before resume/);
    fake.resume(connection);
    await own.idle();
    expect(own.connection(connection).delivered).toEqual(['error:invalid']);
    expect(() => fake.cancel(connection)).toThrow(/after its 'invalid'/);
    expect(() => fake.send(connection, 'probe')).toThrow(/after its 'invalid'/);
    expect(() => fake.peerPid(connection)).toThrow(/after its 'invalid'/);
    const other = fake.createMachService('com.example.nobody', { listener: false });
    fake.setEventHandler(other, () => {});
    fake.resume(other);
    fake.cancel(other);
    expect(() => fake.send(other, 'probe')).toThrow(/after cancel/);
  });

  it('finds a peer connection that was never resumed, and one that never ended', async () => {
    const listener = fake.createMachService('com.example.fake', { listener: true });
    fake.setEventHandler(listener, () => {}); // ignores its connections: a leak
    fake.resume(listener);
    const client = new FakeXpc(own, { pid: 10, euid: 501 });
    const connection = client.createMachService('com.example.fake', { listener: false });
    client.setEventHandler(connection, () => {});
    client.resume(connection);
    await own.idle();
    expect(() => own.assertNoLeaks()).toThrow(/accepted connection .* never got an event handler/);
    expect(() => own.assertNoLeaks()).toThrow(/client connection .* got 'invalid' 0 times/);
  });

  it('turns a message from a peer that fails the requirement into peer-requirement, dropping it', async () => {
    const listener = fake.createMachService('com.example.fake', { listener: true });
    const events: string[] = [];
    fake.setEventHandler(listener, (event) => {
      if (event.type !== 'connection') return;
      fake.setPeerRequirement(event.connection, 'R');
      fake.setEventHandler(event.connection, (peerEvent) =>
        events.push(
          peerEvent.type === 'message'
            ? `message:${peerEvent.kind}`
            : String(peerEvent.type === 'error' && peerEvent.error),
        ),
      );
      fake.resume(event.connection);
    });
    fake.resume(listener);
    const liar = new FakeXpc(own, { pid: 11, euid: 501, satisfies: ['not R'] });
    const honest = new FakeXpc(own, { pid: 12, euid: 501, satisfies: ['R'] });
    for (const peerProcess of [liar, honest]) {
      const connection = peerProcess.createMachService('com.example.fake', { listener: false });
      peerProcess.setEventHandler(connection, () => {});
      peerProcess.resume(connection);
      peerProcess.send(connection, 'probe');
    }
    await own.idle();
    expect(events.sort()).toEqual(['message:probe', 'peer-requirement']);
  });
});

// ---- found in review: floods, drop semantics, a barrier that never runs, pid reuse ----------

describe('where libxpc drops a message that fails the requirement (instead of reporting it)', () => {
  it('a client facing a squatter times out, says a signature mismatch may be why, and sent only the probe', async () => {
    newWorld({ requirementFailure: 'drop' });
    rogueServer(serverProcess({ satisfies: [] }), () => {});
    const clientFake = clientProcess();
    const error = await rejectionOf(
      connectXpc({
        service,
        requirement: SERVER_REQUIREMENT,
        bindings: clientFake,
        timeoutMs: 200,
      }),
    );
    expect(error.code).toBe('ERR_TIMEOUT');
    expect(error.message).toMatch(/does not satisfy the code-signing requirement/);
    expect(clientFake.sent).toEqual({ frame: 0, probe: 1, 'probe-ack': 0 });
  });

  it('peers that never get through wait at most probeTimeoutMs, and at most maxPendingPeers of them', async () => {
    newWorld({ requirementFailure: 'drop' });
    const listener = await listen(serverProcess(), {
      requirement: CLIENT_REQUIREMENT,
      probeTimeoutMs: 3_000,
      maxPendingPeers: 3,
    });
    const transports = accepted(listener);
    // Five unsigned peers: their probes are dropped; three wait, two are refused at once.
    const outcomes = Array.from({ length: 5 }, (_, index) =>
      rejectionOf(
        connectXpc({
          service,
          bindings: clientProcess({ pid: 5000 + index, satisfies: [] }),
          timeoutMs: 15_000,
        }),
      ),
    );
    const started = Date.now();
    const settled = await Promise.all(
      outcomes.map(async (outcome) => ({ code: (await outcome).code, ms: Date.now() - started })),
    );
    expect(settled.map(({ code }) => code)).toEqual(Array(5).fill('ERR_APP_UNAVAILABLE'));
    // Two refused at once; three dropped after the probe timeout, well before their own timeout.
    const early = settled.filter(({ ms }) => ms < 1_500);
    const late = settled.filter(({ ms }) => ms >= 1_500 && ms < 12_000);
    expect({ early: early.length, late: late.length }).toEqual({ early: 2, late: 3 });
    expect(world.connections({ role: 'accepted' }).filter((c) => c.invalidDelivered === 0)).toEqual(
      [],
    );
    // A signed client is served afterwards.
    await connect(clientProcess(), { requirement: SERVER_REQUIREMENT });
    await until(() => transports.length === 1, 'accepting the signed client');
  });

  it('refuses a bad maxPendingPeers', async () => {
    for (const value of [0, -1, 1.5, Number.NaN]) {
      expect(
        (
          await rejectionOf(
            listenXpc({ service, bindings: serverProcess(), maxPendingPeers: value }),
          )
        ).code,
      ).toBe('ERR_INVALID_ARGUMENT');
    }
  });
});

describe('close() when the send barrier never runs', () => {
  it('cancels anyway after a bounded wait, and resolves', async () => {
    newWorld({ barrier: 'never' });
    const { clientFake, client } = await pair();
    const started = Date.now();
    await client.close();
    const waited = Date.now() - started;
    expect(waited).toBeGreaterThanOrEqual(1_900);
    expect(waited).toBeLessThan(10_000);
    const state = world.connection(connectionOf(clientFake, 'client'));
    expect({ barriers: state.barriers, cancels: state.cancels }).toEqual({
      barriers: 1,
      cancels: 1,
    });
  });
});

describe('identify gets when the connection was made', () => {
  it('on both sides, so a process that started later (a reused pid) can be refused', async () => {
    const seen: Array<{ side: string; pid: number; connectedAt: number }> = [];
    const before = Date.now();
    const { server, client } = await pair({
      server: {
        identify: (pid, { connectedAt }) => {
          seen.push({ side: 'server', pid, connectedAt });
          return {};
        },
      },
      client: {
        identify: (pid, { connectedAt }) => {
          seen.push({ side: 'client', pid, connectedAt });
          return {};
        },
      },
    });
    expect(server.peer?.pid).toBe(CLIENT_PID);
    expect(client.peer?.pid).toBe(SERVER_PID);
    expect(seen.map(({ side, pid }) => ({ side, pid }))).toEqual([
      { side: 'server', pid: CLIENT_PID },
      { side: 'client', pid: SERVER_PID },
    ]);
    for (const { connectedAt } of seen) {
      expect(connectedAt).toBeGreaterThanOrEqual(before);
      expect(connectedAt).toBeLessThanOrEqual(Date.now());
    }
  });

  it('a peer whose process started after the connection is refused (identify throws)', async () => {
    const listener = await listen(serverProcess(), {
      requirement: CLIENT_REQUIREMENT,
      identify: (_pid, { connectedAt }) => {
        // What describeProcess does with a start time after connectedAt.
        if (connectedAt > 0) throw new Error('started after the connection was made');
        return {};
      },
    });
    accepted(listener);
    const error = await rejectionOf(
      connectXpc({ service, requirement: SERVER_REQUIREMENT, bindings: clientProcess() }),
    );
    expect(error.code).toBe('ERR_APP_UNAVAILABLE');
  });
});
