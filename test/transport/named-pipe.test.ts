/**
 * The named-pipe transport over a fake Win32Bindings whose pipe "handles" are backed by real
 * Unix socket pairs (libc `socketpair` through koffi), so `new net.Socket({ fd })` and the
 * framing run for real on Linux. The fake models what the transport relies on from Windows:
 * a name exists while one of its server instances is open, `FILE_FLAG_FIRST_PIPE_INSTANCE`
 * refuses a taken name, the DACL refuses other users, a client takes an instance that is not
 * connected yet or gets `ERROR_PIPE_BUSY`. It also catches misuse: a HANDLE closed twice, used
 * after `handleToFd` took it, or closed while a wait on it was not cancelled.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { type BridgekeeperError, createError } from '../../src/errors.js';
import {
  type PipeInstanceOptions,
  WIN32_ERRORS,
  type Win32Bindings,
  Win32Error,
  type Win32Handle,
} from '../../src/platform/win32/bindings.js';
import {
  connectNamedPipe,
  listenNamedPipe,
  namedPipeConnector,
  pipeName,
} from '../../src/transport/named-pipe.js';
import type {
  Message,
  PeerIdentity,
  Transport,
  TransportListener,
} from '../../src/transport/transport.js';
import { closed, rejectionOf, sleep } from './helpers.js';
import { loadLibc } from './socketpair.js';

const libc = await loadLibc();
const AF_UNIX = 1;
const SOCK_STREAM = 1;
const SOCK_CLOEXEC = 0o2000000;

function socketPair(): [number, number] {
  const fds = Buffer.alloc(8);
  if (libc!.socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) !== 0) {
    throw new Error('socketpair failed');
  }
  return [fds.readInt32LE(0), fds.readInt32LE(4)];
}

// ---- the fake ------------------------------------------------------------------------------

interface FakeProcess {
  pid: number;
  sid: string;
}

interface ServerHandle {
  readonly kind: 'server';
  readonly id: Win32Handle;
  readonly key: string;
  readonly owner: FakeProcess;
  readonly options: PipeInstanceOptions;
  state: 'listening' | 'connected';
  fd?: number;
  client?: FakeProcess;
  wait?: { done: (error?: Win32Error) => void; cancelled: boolean };
  closed: boolean;
  converted: boolean;
}

interface ClientHandle {
  readonly kind: 'client';
  readonly id: Win32Handle;
  readonly server: FakeProcess;
  readonly fd: number;
  /** What was done with this handle, in order. */
  readonly log: string[];
  closed: boolean;
  converted: boolean;
}

type FakeHandle = ServerHandle | ClientHandle;

class FakePipeSystem {
  readonly handles = new Map<Win32Handle, FakeHandle>();
  /** Every createPipeInstance call that succeeded. */
  readonly created: Array<{ name: string; pid: number } & PipeInstanceOptions> = [];
  /** Misuse of the API by the code under test; must stay empty. */
  readonly misuse: string[] = [];
  openCalls = 0;
  busyAnswers = 0;
  /** The next this-many openPipe calls answer ERROR_PIPE_BUSY. */
  busyNext = 0;
  /** The next this-many waits fail with this error code. */
  failWaits: { count: number; code: number } = { count: 0, code: 0 };
  /** Run `done` synchronously inside waitForClient when a client is already connected. */
  syncConnectedWait = false;
  /** Clients that connect to the next created instances at once, before any wait on them. */
  connectOnCreate: FakeProcess[] = [];
  /** The client handles of those connections. */
  readonly earlyClients: Win32Handle[] = [];
  cancels = 0;
  maxListening = 0;
  #next = 0x100n;

  bindingsFor(process: FakeProcess): Win32Bindings {
    const notFaked = (what: string) => (): never => {
      throw new Error(`${what} is not part of the fake`);
    };
    return {
      currentProcessId: () => process.pid,
      processUserSid: (target) => {
        if (target !== 'self') throw new Error('the fake only knows its own SID');
        return process.sid;
      },
      createPipeInstance: (name, options) => this.#create(process, name, options),
      waitForClient: (pipe, done) => this.#waitForClient(pipe, done),
      openPipe: (name) => this.#open(process, name),
      pipeClientProcessId: (pipe) => {
        const handle = this.#server(pipe, 'pipeClientProcessId');
        if (handle.client === undefined) throw new Win32Error('GetNamedPipeClientProcessId', 233);
        return handle.client.pid;
      },
      pipeServerProcessId: (pipe) => {
        const handle = this.#live(pipe, 'pipeServerProcessId');
        if (handle.kind !== 'client') throw new Error('pipeServerProcessId on a server handle');
        handle.log.push('pipeServerProcessId');
        return handle.server.pid;
      },
      handleToFd: (pipe) => {
        const handle = this.#live(pipe, 'handleToFd');
        if (handle.fd === undefined) throw new Win32Error('uv_open_osfhandle', 6);
        handle.converted = true;
        if (handle.kind === 'client') handle.log.push('handleToFd');
        return handle.fd;
      },
      fdToHandle: notFaked('fdToHandle'),
      closeHandle: (pipe) => {
        const handle = this.#live(pipe, 'closeHandle');
        if (handle.kind === 'server' && handle.wait && !handle.wait.cancelled) {
          this.misuse.push(`closeHandle(${pipe}) while a wait on it was not cancelled`);
        }
        if (handle.kind === 'client') handle.log.push('closeHandle');
        handle.closed = true;
        if (handle.fd !== undefined) libc!.close(handle.fd);
      },
      openProcess: notFaked('openProcess'),
      processIsRunning: notFaked('processIsRunning'),
      processCreationTime: notFaked('processCreationTime'),
      processImagePath: notFaked('processImagePath'),
      parentProcessId: notFaked('parentProcessId'),
      fileDescription: notFaked('fileDescription'),
      verifySignature: notFaked('verifySignature'),
      userConsent: {
        checkAvailability: notFaked('checkAvailability'),
        requestVerification: notFaked('requestVerification'),
      },
    };
  }

  /** Server instances of `name` that are still open (not closed, not handed to an fd). */
  instances(name: string): ServerHandle[] {
    const key = name.toLowerCase();
    return [...this.handles.values()].filter(
      (handle): handle is ServerHandle =>
        handle.kind === 'server' && handle.key === key && !handle.closed && !handle.converted,
    );
  }

  /** Waits that were started and neither completed nor cancelled. */
  pendingWaits(): number {
    return [...this.handles.values()].filter(
      (handle) => handle.kind === 'server' && handle.wait !== undefined && !handle.wait.cancelled,
    ).length;
  }

  /** Handles neither closed nor owned by an fd. */
  openHandles(): FakeHandle[] {
    return [...this.handles.values()].filter((handle) => !handle.closed && !handle.converted);
  }

  /** Closes every socket-pair end still owned by a handle (test cleanup). */
  dispose(): void {
    for (const handle of this.openHandles()) {
      handle.closed = true;
      if (handle.fd !== undefined) libc!.close(handle.fd);
    }
  }

  #live(pipe: Win32Handle, call: string): FakeHandle {
    const handle = this.handles.get(pipe);
    if (handle === undefined) {
      this.misuse.push(`${call}(${pipe}): no such handle`);
      throw new Win32Error(call, 6);
    }
    if (handle.closed || handle.converted) {
      this.misuse.push(
        `${call}(${pipe}) after it was ${handle.closed ? 'closed' : 'handed to an fd'}`,
      );
      throw new Win32Error(call, 6);
    }
    return handle;
  }

  #server(pipe: Win32Handle, call: string): ServerHandle {
    const handle = this.#live(pipe, call);
    if (handle.kind !== 'server') throw new Error(`${call} on a client handle`);
    return handle;
  }

  #create(process: FakeProcess, name: string, options: PipeInstanceOptions): Win32Handle {
    if (options.first && this.instances(name).length > 0) {
      throw new Win32Error('CreateNamedPipeW', WIN32_ERRORS.accessDenied);
    }
    const id = this.#next++;
    this.handles.set(id, {
      kind: 'server',
      id,
      key: name.toLowerCase(),
      owner: process,
      options: { ...options },
      state: 'listening',
      closed: false,
      converted: false,
    });
    this.created.push({ name, pid: process.pid, ...options });
    this.#countListening(name);
    const early = this.connectOnCreate.shift();
    if (early !== undefined) this.earlyClients.push(this.#open(early, name));
    return id;
  }

  #countListening(name: string): void {
    const listening = this.instances(name).filter((each) => each.state === 'listening').length;
    this.maxListening = Math.max(this.maxListening, listening);
  }

  #waitForClient(pipe: Win32Handle, done: (error?: Win32Error) => void): () => void {
    const handle = this.#server(pipe, 'waitForClient');
    if (handle.wait && !handle.wait.cancelled) {
      this.misuse.push(`waitForClient(${pipe}) twice`);
    }
    const wait = { done, cancelled: false };
    handle.wait = wait;
    const cancel = (): void => {
      if (wait.cancelled) return;
      wait.cancelled = true;
      this.cancels++;
    };
    if (this.failWaits.count > 0) {
      this.failWaits.count--;
      const code = this.failWaits.code;
      setImmediate(() => this.#complete(handle, wait, new Win32Error('ConnectNamedPipe', code)));
    } else if (handle.state === 'connected') {
      if (this.syncConnectedWait) this.#complete(handle, wait);
      else setImmediate(() => this.#complete(handle, wait));
    }
    return cancel;
  }

  #complete(
    handle: ServerHandle,
    wait: { done: (error?: Win32Error) => void; cancelled: boolean },
    error?: Win32Error,
  ): void {
    if (wait.cancelled || handle.wait !== wait) return;
    // Done: nothing left to cancel.
    wait.cancelled = true;
    wait.done(error);
  }

  #open(process: FakeProcess, name: string): Win32Handle {
    this.openCalls++;
    if (this.busyNext > 0) {
      this.busyNext--;
      this.busyAnswers++;
      throw new Win32Error('CreateFileW', WIN32_ERRORS.pipeBusy);
    }
    const instances = this.instances(name);
    if (instances.length === 0) throw new Win32Error('CreateFileW', WIN32_ERRORS.fileNotFound);
    const first = [...this.handles.values()].find(
      (handle): handle is ServerHandle =>
        handle.kind === 'server' && handle.key === name.toLowerCase() && handle.options.first,
    );
    const granted = [
      ...(first?.options.securityDescriptor ?? '').matchAll(/\(A;;GA;;;([^)]+)\)/g),
    ].map((match) => match[1]);
    if (!granted.includes(process.sid)) {
      throw new Win32Error('CreateFileW', WIN32_ERRORS.accessDenied);
    }
    const free = instances.find((each) => each.state === 'listening');
    if (free === undefined) {
      this.busyAnswers++;
      throw new Win32Error('CreateFileW', WIN32_ERRORS.pipeBusy);
    }
    const [serverFd, clientFd] = socketPair();
    free.state = 'connected';
    free.fd = serverFd;
    free.client = process;
    const id = this.#next++;
    this.handles.set(id, {
      kind: 'client',
      id,
      server: free.owner,
      fd: clientFd,
      log: ['openPipe'],
      closed: false,
      converted: false,
    });
    const wait = free.wait;
    if (wait && !wait.cancelled) setImmediate(() => this.#complete(free, wait));
    return id;
  }
}

// ---- helpers -------------------------------------------------------------------------------

const USER: FakeProcess = { pid: 4000, sid: 'S-1-5-21-1111111111-2222222222-3333333333-1001' };
const OTHER_USER: FakeProcess = {
  pid: 4100,
  sid: 'S-1-5-21-1111111111-2222222222-3333333333-1002',
};
const NAME = pipeName('my-agent', USER.sid);

function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  return Promise.race([
    promise,
    sleep(ms).then(() => {
      throw new Error(`${what} did not happen within ${ms} ms`);
    }),
  ]);
}

function nextMessage(transport: Transport): Promise<Message> {
  return new Promise((resolve, reject) => {
    const subscription = transport.onMessage((message) => {
      subscription.dispose();
      resolve(message);
    });
    transport.onClose((info) => reject(info.error ?? new Error('closed')));
  });
}

/** Identities that name the pid the fake's kernel reports, and count releases. */
function pipeIdentity(
  lookup: (pipe: Win32Handle) => number,
  source: string,
): {
  made: PeerIdentity[];
  released: PeerIdentity[];
  handles: Win32Handle[];
  identify: (pipe: Win32Handle) => PeerIdentity;
  release: (peer: PeerIdentity) => void;
} {
  const made: PeerIdentity[] = [];
  const released: PeerIdentity[] = [];
  const handles: Win32Handle[] = [];
  return {
    made,
    released,
    handles,
    identify: (pipe) => {
      handles.push(pipe);
      const peer: PeerIdentity = { pid: lookup(pipe), source };
      made.push(peer);
      return peer;
    },
    release: (peer) => {
      released.push(peer);
    },
  };
}

// ---- tests ---------------------------------------------------------------------------------

describe('pipeName', () => {
  it('names the pipe from the app and the user SID', () => {
    expect(pipeName('my-agent', USER.sid)).toBe(
      '\\\\.\\pipe\\bridgekeeper-my-agent-S-1-5-21-1111111111-2222222222-3333333333-1001',
    );
  });

  it('returns one canonical case, since Windows compares pipe names without case', () => {
    expect(pipeName('My-Agent', USER.sid.toLowerCase())).toBe(pipeName('my-agent', USER.sid));
  });

  it.each(['', '-agent', '../agent', 'a\\b', 'a b', 'x'.repeat(65)])(
    'refuses the app name %j with ERR_INVALID_ARGUMENT, like resolveEndpoint',
    (app) => {
      let caught: unknown;
      try {
        pipeName(app, USER.sid);
      } catch (error) {
        caught = error;
      }
      expect((caught as BridgekeeperError).code).toBe('ERR_INVALID_ARGUMENT');
    },
  );

  it.each(['', 'S-1', 'S-1-5-21-x', 'S-1-5\\x', 'bob'])(
    'refuses %j as a SID with ERR_INVALID_ARGUMENT',
    (sid) => {
      expect(() => pipeName('my-agent', sid)).toThrow(/not a Windows user SID/);
    },
  );

  it('fits the 256-character limit for the longest app name and a long SID', () => {
    const name = pipeName('a'.repeat(64), `S-1-5-21-${'4294967295-'.repeat(14)}1001`);
    expect(name.length).toBeLessThanOrEqual(256);
  });

  it('refuses a name over 256 characters with ERR_ENDPOINT_PATH_TOO_LONG', () => {
    let caught: unknown;
    try {
      pipeName('a'.repeat(64), `S-1-5-21-${'4294967295-'.repeat(16)}1001`);
    } catch (error) {
      caught = error;
    }
    expect((caught as BridgekeeperError).code).toBe('ERR_ENDPOINT_PATH_TOO_LONG');
  });
});

describe.skipIf(libc === undefined)(
  'named-pipe transport over a fake Win32Bindings (needs Linux libc socketpair through koffi)',
  () => {
    let system: FakePipeSystem;
    const listeners: TransportListener[] = [];
    const transports: Transport[] = [];

    const server = (options: Partial<Parameters<typeof listenNamedPipe>[0]> = {}) =>
      listenNamedPipe({ name: NAME, bindings: system.bindingsFor(USER), ...options }).then(
        (listener) => {
          listeners.push(listener);
          return listener;
        },
      );

    const client = (
      process: FakeProcess = { pid: 5000, sid: USER.sid },
      options: Partial<Parameters<typeof connectNamedPipe>[1]> = {},
    ) =>
      connectNamedPipe(NAME, { bindings: system.bindingsFor(process), ...options }).then(
        (transport) => {
          transports.push(transport);
          return transport;
        },
      );

    const accepted = (listener: TransportListener): Promise<Transport> =>
      new Promise((resolve) => {
        const subscription = listener.onConnection((transport) => {
          subscription.dispose();
          transports.push(transport);
          resolve(transport);
        });
      });

    afterEach(async () => {
      for (const transport of transports.splice(0)) transport.destroy();
      for (const listener of listeners.splice(0)) await listener.close();
      await sleep(5);
      expect(system.misuse).toEqual([]);
      system.dispose();
    });

    it('creates the first instance with first: true, all with a DACL for the user only, and keeps a pool of 4 waiting', async () => {
      system = new FakePipeSystem();
      const listener = await server();
      expect(listener.address).toBe(NAME);
      expect(system.created).toEqual([
        { name: NAME, pid: USER.pid, first: true, securityDescriptor: `D:P(A;;GA;;;${USER.sid})` },
        ...Array.from({ length: 3 }, () => ({
          name: NAME,
          pid: USER.pid,
          first: false,
          securityDescriptor: `D:P(A;;GA;;;${USER.sid})`,
        })),
      ]);
      expect(system.pendingWaits()).toBe(4);
    });

    it('carries messages both ways and reports the pids the kernel gives, on both ends', async () => {
      system = new FakePipeSystem();
      const serverBindings = system.bindingsFor(USER);
      const clientPeer = pipeIdentity((pipe) => serverBindings.pipeClientProcessId(pipe), 'pipe');
      const listener = await server({ identify: clientPeer.identify, release: clientPeer.release });
      const atServer = accepted(listener);
      const me = { pid: 5001, sid: USER.sid };
      const clientBindings = system.bindingsFor(me);
      const serverPeer = pipeIdentity((pipe) => clientBindings.pipeServerProcessId(pipe), 'pipe');
      const transport = await client(me, {
        identify: serverPeer.identify,
        release: serverPeer.release,
      });
      const serverEnd = await within(atServer, 2000, 'the connection reaching the server');
      expect(transport.peer).toEqual({ pid: USER.pid, source: 'pipe' });
      expect(serverEnd.peer).toEqual({ pid: 5001, source: 'pipe' });

      serverEnd.onMessage((message) => serverEnd.send({ echo: message }));
      const reply = nextMessage(transport);
      transport.send({ hello: 'pipe', text: 'ü€🔑' });
      expect(await within(reply, 2000, 'the echo')).toEqual({
        echo: { hello: 'pipe', text: 'ü€🔑' },
      });
      // Delivered identities are their owners' to release.
      expect(clientPeer.released).toEqual([]);
      expect(serverPeer.released).toEqual([]);
      // The instance that was taken was replaced at once.
      expect(system.pendingWaits()).toBe(4);
    });

    it('refuses a second server on the same name with ERR_ALREADY_RUNNING, and the first one keeps serving', async () => {
      system = new FakePipeSystem();
      const listener = await server({ app: 'my-agent' });
      const error = await rejectionOf(
        listenNamedPipe({
          name: pipeName('MY-AGENT', USER.sid),
          bindings: system.bindingsFor({ pid: 4001, sid: USER.sid }),
          app: 'my-agent',
        }),
      );
      expect(error.code).toBe('ERR_ALREADY_RUNNING');
      expect(error.message).toContain('Another instance of my-agent is already running');
      expect(error.message).toContain(NAME);
      expect(error.message).toMatch(/quit it before starting a new one/);
      expect(error.cause).toBeInstanceOf(Win32Error);
      // The refused server created nothing.
      expect(system.created.filter((each) => each.pid === 4001)).toEqual([]);

      const atServer = accepted(listener);
      await client();
      await within(atServer, 2000, 'the first server accepting');
    });

    it('lets a new server take the name once the first one closed', async () => {
      system = new FakePipeSystem();
      const first = await server();
      await first.close();
      expect(system.instances(NAME)).toEqual([]);
      await server();
    });

    it('rejects a client with ERR_APP_UNAVAILABLE when nothing listens', async () => {
      system = new FakePipeSystem();
      const error = await rejectionOf(client());
      expect(error.code).toBe('ERR_APP_UNAVAILABLE');
      expect(error.message).toBe(`Nothing is listening at ${NAME}. Start the app, then try again.`);
      expect((error.cause as Win32Error).winerror).toBe(WIN32_ERRORS.fileNotFound);
    });

    it('rejects a client of another user (refused by the DACL) with ERR_APP_UNAVAILABLE', async () => {
      system = new FakePipeSystem();
      await server();
      const error = await rejectionOf(client(OTHER_USER));
      expect(error.code).toBe('ERR_APP_UNAVAILABLE');
      expect(error.message).toMatch(/Access denied .*another user/);
    });

    it('retries a busy pipe on a timer and then connects', async () => {
      system = new FakePipeSystem();
      const listener = await server();
      const atServer = accepted(listener);
      system.busyNext = 3;
      const started = Date.now();
      await client();
      await within(atServer, 2000, 'the server accepting');
      expect(system.busyAnswers).toBe(3);
      expect(system.openCalls).toBe(4);
      expect(Date.now() - started).toBeLessThan(1000);
    });

    it('gives up on a pipe that stays busy after busyTimeoutMs with ERR_APP_UNAVAILABLE', async () => {
      system = new FakePipeSystem();
      await server();
      system.busyNext = Number.POSITIVE_INFINITY;
      const error = await rejectionOf(client(undefined, { busyTimeoutMs: 100 }));
      expect(error.code).toBe('ERR_APP_UNAVAILABLE');
      expect(error.message).toMatch(/too busy .* Try again in a moment/);
      expect((error.cause as Win32Error).winerror).toBe(WIN32_ERRORS.pipeBusy);
    });

    it('rejects with ERR_ABORTED when aborted while the pipe is busy, and stops retrying', async () => {
      system = new FakePipeSystem();
      await server();
      system.busyNext = Number.POSITIVE_INFINITY;
      const controller = new AbortController();
      const attempt = client(undefined, { signal: controller.signal, busyTimeoutMs: 60_000 });
      await sleep(40);
      expect(system.busyAnswers).toBeGreaterThan(0);
      controller.abort();
      const error = await rejectionOf(attempt);
      expect(error.code).toBe('ERR_ABORTED');
      const calls = system.openCalls;
      await sleep(120);
      expect(system.openCalls).toBe(calls);
    });

    it('rejects with ERR_TIMEOUT when a timeout signal fires while the pipe is busy', async () => {
      system = new FakePipeSystem();
      await server();
      system.busyNext = Number.POSITIVE_INFINITY;
      const error = await rejectionOf(
        client(undefined, { signal: AbortSignal.timeout(50), busyTimeoutMs: 60_000 }),
      );
      expect(error.code).toBe('ERR_TIMEOUT');
    });

    it('serves 50 concurrent clients with a pool of 4 instances', async () => {
      system = new FakePipeSystem();
      const serverBindings = system.bindingsFor(USER);
      const clientPeer = pipeIdentity((pipe) => serverBindings.pipeClientProcessId(pipe), 'pipe');
      const listener = await server({ identify: clientPeer.identify, instances: 4 });
      listener.onConnection((transport) => {
        transports.push(transport);
        transport.onMessage((message) =>
          transport.send({ echo: message.id, pid: transport.peer?.pid }),
        );
      });
      const clients = await within(
        Promise.all(
          Array.from({ length: 50 }, (_, id) => client({ pid: 6000 + id, sid: USER.sid })),
        ),
        10_000,
        '50 connections',
      );
      const replies = await within(
        Promise.all(
          clients.map((transport, id) => {
            const reply = nextMessage(transport);
            transport.send({ id });
            return reply;
          }),
        ),
        10_000,
        '50 replies',
      );
      expect(replies).toEqual(clients.map((_, id) => ({ echo: id, pid: 6000 + id })));
      expect(system.maxListening).toBe(4);
      // 50 clients at once against 4 instances: some had to retry.
      expect(system.busyAnswers).toBeGreaterThan(0);
      expect(system.pendingWaits()).toBe(4);
    });

    it("drops a client the server's identify refuses before a byte is read, and keeps serving", async () => {
      system = new FakePipeSystem();
      const serverBindings = system.bindingsFor(USER);
      const refused: Win32Handle[] = [];
      const released: PeerIdentity[] = [];
      const listener = await server({
        identify: (pipe) => {
          const pid = serverBindings.pipeClientProcessId(pipe);
          if (pid === 6666) {
            refused.push(pipe);
            throw createError('ERR_PEER_REJECTED', 'not allowed');
          }
          return { pid, source: 'pipe' };
        },
        release: (peer) => released.push(peer),
      });
      const delivered: Transport[] = [];
      listener.onConnection((transport) => {
        transports.push(transport);
        delivered.push(transport);
      });
      const intruder = await client({ pid: 6666, sid: USER.sid });
      intruder.send({ secret: 'request' });
      // A transport reads (and so sees the other end go) only once subscribed.
      intruder.onMessage(() => {});
      const info = await within(closed(intruder), 2000, 'the refused client seeing the close');
      expect(info.local).toBe(false);
      expect(refused).toHaveLength(1);
      const handle = system.handles.get(refused[0]!) as ServerHandle;
      // Closed without ever becoming an fd: nothing could have read from it.
      expect(handle.closed).toBe(true);
      expect(handle.converted).toBe(false);
      expect(delivered).toHaveLength(0);
      expect(released).toEqual([]);

      const friend = await client({ pid: 6001, sid: USER.sid });
      await within(
        (async () => {
          while (delivered.length === 0) await sleep(2);
        })(),
        2000,
        'the next client being delivered',
      );
      expect(delivered[0]!.peer).toEqual({ pid: 6001, source: 'pipe' });
      expect(friend.closed).toBe(false);
      expect(system.pendingWaits()).toBe(4);
    });

    it('close() cancels every wait, closes the idle instances, is idempotent, and refuses new clients', async () => {
      system = new FakePipeSystem();
      const listener = await server();
      const atServer = accepted(listener);
      const open = await client();
      const serverEnd = await within(atServer, 2000, 'the server accepting');
      await Promise.all([listener.close(), listener.close()]);
      await listener.close();
      expect(system.pendingWaits()).toBe(0);
      expect(system.cancels).toBe(4);
      expect(system.instances(NAME)).toEqual([]);
      expect(system.openHandles()).toEqual([]);
      expect((await rejectionOf(client())).code).toBe('ERR_APP_UNAVAILABLE');
      // The connection made before the close still works.
      serverEnd.onMessage((message) => serverEnd.send({ echo: message.n }));
      const reply = nextMessage(open);
      open.send({ n: 7 });
      expect(await within(reply, 2000, 'a reply after close()')).toEqual({ echo: 7 });
    });

    it('close() destroys connections nobody subscribed to and releases their identities once', async () => {
      system = new FakePipeSystem();
      const serverBindings = system.bindingsFor(USER);
      const clientPeer = pipeIdentity((pipe) => serverBindings.pipeClientProcessId(pipe), 'pipe');
      const listener = await server({ identify: clientPeer.identify, release: clientPeer.release });
      const first = await client();
      const second = await client();
      await within(
        (async () => {
          while (clientPeer.made.length < 2) await sleep(2);
        })(),
        2000,
        'both clients being identified',
      );
      await listener.close();
      expect(clientPeer.released).toEqual(clientPeer.made);
      first.onMessage(() => {});
      second.onMessage(() => {});
      await within(closed(first), 2000, 'the first held client closing');
      await within(closed(second), 2000, 'the second held client closing');
    });

    it('close() while a client is connected but not yet accepted closes that instance without a callback', async () => {
      system = new FakePipeSystem();
      const serverBindings = system.bindingsFor(USER);
      const identified: Win32Handle[] = [];
      const listener = await server({
        identify: (pipe) => {
          identified.push(pipe);
          return { pid: serverBindings.pipeClientProcessId(pipe), source: 'pipe' };
        },
      });
      const clientBindings = system.bindingsFor({ pid: 5004, sid: USER.sid });
      // Connected in the fake; the wait's callback is queued but has not run.
      const raw = clientBindings.openPipe(NAME);
      await listener.close();
      await sleep(10);
      expect(identified).toEqual([]);
      expect(system.pendingWaits()).toBe(0);
      expect(system.openHandles().map((handle) => handle.id)).toEqual([raw]);
      clientBindings.closeHandle(raw);
    });

    it('identifies the server before anything is written, and writes nothing to a refused server', async () => {
      system = new FakePipeSystem();
      const listener = await server();
      const received: Message[] = [];
      const serverClosed: Promise<unknown>[] = [];
      listener.onConnection((transport) => {
        transports.push(transport);
        serverClosed.push(closed(transport));
        transport.onMessage((message) => received.push(message));
      });
      const me = { pid: 5002, sid: USER.sid };
      const clientBindings = system.bindingsFor(me);
      const seen: Win32Handle[] = [];
      const released: PeerIdentity[] = [];
      const error = await rejectionOf(
        client(me, {
          identify: (pipe) => {
            seen.push(pipe);
            const pid = clientBindings.pipeServerProcessId(pipe);
            throw createError('ERR_SERVER_REJECTED', `server pid ${pid} refused`);
          },
          release: (peer) => released.push(peer),
        }),
      );
      expect(error.code).toBe('ERR_SERVER_REJECTED');
      expect(error.message).toBe(`server pid ${USER.pid} refused`);
      const handle = system.handles.get(seen[0]!) as ClientHandle;
      expect(handle.log).toEqual(['openPipe', 'pipeServerProcessId', 'closeHandle']);
      expect(released).toEqual([]);
      // The server saw a connection that closed without a single message.
      await within(
        (async () => {
          while (serverClosed.length === 0) await sleep(2);
        })(),
        2000,
        'the server seeing the connection',
      );
      await within(serverClosed[0]!, 2000, 'the server end closing');
      expect(received).toEqual([]);

      // And when the server passes, identify runs before the handle becomes writable.
      const accepting = await client(me, {
        identify: (pipe) => ({ pid: clientBindings.pipeServerProcessId(pipe), source: 'pipe' }),
      });
      expect(accepting.peer).toEqual({ pid: USER.pid, source: 'pipe' });
      const last = [...system.handles.values()].filter(
        (each): each is ClientHandle => each.kind === 'client',
      );
      expect(last.at(-1)!.log).toEqual(['openPipe', 'pipeServerProcessId', 'handleToFd']);
    });

    it('replaces an instance whose wait failed and keeps serving', async () => {
      system = new FakePipeSystem();
      system.failWaits = { count: 2, code: 232 };
      const listener = await server();
      await sleep(150);
      // Both failed instances were closed and replaced.
      expect(system.created).toHaveLength(6);
      expect(system.instances(NAME)).toHaveLength(4);
      expect(system.pendingWaits()).toBe(4);
      const atServer = accepted(listener);
      await client();
      await within(atServer, 2000, 'accepting after failed waits');
    });

    it('takes clients that connected before the wait began, when the wait reports them at once', async () => {
      system = new FakePipeSystem();
      system.syncConnectedWait = true;
      // Each of the first three instances has a client before the listener waits on it.
      system.connectOnCreate = [7001, 7002, 7003].map((pid) => ({ pid, sid: USER.sid }));
      const serverBindings = system.bindingsFor(USER);
      const delivered: Transport[] = [];
      const listener = await server({
        instances: 2,
        identify: (pipe) => ({ pid: serverBindings.pipeClientProcessId(pipe), source: 'pipe' }),
      });
      listener.onConnection((transport) => {
        transports.push(transport);
        delivered.push(transport);
      });
      await sleep(10);
      // Which instance a client takes is Windows' choice: no order across instances.
      expect(delivered.map((transport) => transport.peer?.pid).sort()).toEqual([7001, 7002, 7003]);
      expect(system.pendingWaits()).toBe(2);
      expect(system.instances(NAME)).toHaveLength(2);
      for (const handle of system.earlyClients) system.bindingsFor(USER).closeHandle(handle);
      for (const transport of delivered) transport.onMessage(() => {});
      await within(
        Promise.all(delivered.map((transport) => closed(transport))),
        2000,
        'the early connections closing',
      );
    });

    it('refuses bad options before touching the API', async () => {
      system = new FakePipeSystem();
      const bindings = system.bindingsFor(USER);
      for (const name of [
        '',
        'my-agent',
        '\\\\.\\pipe\\',
        '\\\\.\\pipe\\a\\b',
        `\\\\.\\pipe\\${'x'.repeat(300)}`,
      ]) {
        const error = await rejectionOf(listenNamedPipe({ name, bindings }));
        expect(['ERR_INVALID_ARGUMENT', 'ERR_ENDPOINT_PATH_TOO_LONG']).toContain(error.code);
      }
      expect(
        (await rejectionOf(listenNamedPipe({ name: NAME, bindings, instances: 0 }))).code,
      ).toBe('ERR_INVALID_ARGUMENT');
      expect(
        (await rejectionOf(listenNamedPipe({ name: NAME, bindings, maxFrameBytes: -1 }))).code,
      ).toBe('ERR_INVALID_ARGUMENT');
      expect((await rejectionOf(connectNamedPipe('nope', { bindings }))).code).toBe(
        'ERR_INVALID_ARGUMENT',
      );
      const aborted = new AbortController();
      aborted.abort();
      expect(
        (await rejectionOf(listenNamedPipe({ name: NAME, bindings, signal: aborted.signal }))).code,
      ).toBe('ERR_ABORTED');
      expect(system.created).toEqual([]);
      expect(system.openCalls).toBe(0);
    });

    it('namedPipeConnector passes its defaults and the signal', async () => {
      system = new FakePipeSystem();
      const listener = await server();
      const atServer = accepted(listener);
      const connector = namedPipeConnector({
        bindings: system.bindingsFor({ pid: 5003, sid: USER.sid }),
      });
      const transport = await connector.connect(NAME);
      transports.push(transport);
      await within(atServer, 2000, 'accepting');
      const controller = new AbortController();
      controller.abort();
      expect((await rejectionOf(connector.connect(NAME, { signal: controller.signal }))).code).toBe(
        'ERR_ABORTED',
      );
    });
  },
);
