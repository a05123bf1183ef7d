/**
 * Windows named-pipe transport: a listener for the app and a connector for clients, on top of
 * {@link Win32Bindings}.
 *
 * Node's own pipe sockets hide the HANDLE, so the server could never learn who connected. The
 * listener therefore creates every pipe instance itself (`CreateNamedPipeW`: the first one with
 * `FILE_FLAG_FIRST_PIPE_INSTANCE`, a security descriptor that admits only the current user, remote
 * clients rejected), keeps a small pool of them waiting for clients without blocking the event
 * loop or the libuv thread pool, identifies each client on the raw HANDLE before a byte is read,
 * and only then hands the HANDLE to libuv as a socket framed like a Unix socket. The client opens
 * the pipe itself too, so it can identify the server before it writes anything.
 *
 * @module
 */

import { closeSync } from 'node:fs';
import net, { type Socket } from 'node:net';
import { abortError, createError, throwIfAborted } from '../errors.js';
import {
  WIN32_ERRORS,
  type Win32Bindings,
  Win32Error,
  type Win32Handle,
} from '../platform/win32/bindings.js';
import { createLog } from '../util/log.js';
import { streamTransportFor } from './identified-socket.js';
import {
  type ConnectionLimits,
  checkStreamTransportOptions,
  releaseQuietly,
  type StreamTransportOptions,
  streamLimitsOf,
} from './stream-transport.js';
import type {
  ConnectTransportOptions,
  Disposable,
  PeerIdentity,
  Transport,
  TransportConnector,
  TransportListener,
} from './transport.js';
import { ConnectionEvents } from './transport-events.js';

const debug = createLog('bridgekeeper:transport');

/** What every local pipe name starts with. */
export const PIPE_NAME_PREFIX = '\\\\.\\pipe\\';

/** The longest pipe name Windows accepts, prefix included (characters). */
export const MAX_PIPE_NAME_CHARS = 256;

/** Pipe instances a listener keeps waiting for clients by default. */
export const DEFAULT_PIPE_INSTANCES = 4;

/** How long a client keeps retrying a pipe whose instances are all taken, by default (ms). */
export const DEFAULT_BUSY_TIMEOUT_MS = 5000;

/** First and longest pause between two attempts on a busy pipe (ms). */
const BUSY_RETRY_MIN_MS = 5;
const BUSY_RETRY_MAX_MS = 50;

/** Pause before the listener tries again after creating or waiting on an instance failed (ms). */
const INSTANCE_RETRY_MS = 100;

/** Most instances a listener may keep waiting; each one is a kernel object and a wait. */
const MAX_PIPE_INSTANCES = 64;

/** Same rule as `resolveEndpoint` for socket endpoints. */
const APP_NAME = /^[a-z0-9][a-z0-9._-]{0,63}$/i;

/** A string SID, `S-1-<authority>-<sub-authority>…`. */
const SID = /^S-1-\d+(?:-\d+)+$/i;

/** Closes a HANDLE nobody else owns, never letting a failure escape. */
function closeHandleQuietly(bindings: Win32Bindings, handle: Win32Handle): void {
  try {
    bindings.closeHandle(handle);
  } catch (error) {
    debug('closing a pipe handle failed: %s', (error as Error).message ?? error);
  }
}

function winerrorOf(error: unknown): number | undefined {
  return error instanceof Win32Error ? error.winerror : undefined;
}

/**
 * Wraps a connected pipe HANDLE as a Node socket that reads nothing until resumed. Consumes the
 * HANDLE either way: on failure it is closed (through its fd once `handleToFd` took it).
 */
function socketFromHandle(bindings: Win32Bindings, handle: Win32Handle): Socket {
  let fd: number;
  try {
    fd = bindings.handleToFd(handle);
  } catch (error) {
    closeHandleQuietly(bindings, handle);
    throw error;
  }
  // `pauseOnCreate` (Node's own option for stdio sockets, not in its typings): without it the
  // constructor starts reading at once, before the transport has a subscriber.
  const options: net.SocketConstructorOpts & { pauseOnCreate: boolean } = {
    fd,
    readable: true,
    writable: true,
    pauseOnCreate: true,
  };
  try {
    return new net.Socket(options);
  } catch (error) {
    // The fd owns the HANDLE now: closing the fd closes it.
    try {
      closeSync(fd);
    } catch (closeError) {
      debug('closing the fd of a pipe failed: %s', (closeError as Error).message);
    }
    throw error;
  }
}

/**
 * Checks a full pipe name (`\\.\pipe\…`).
 *
 * @throws `ERR_INVALID_ARGUMENT`, `ERR_ENDPOINT_PATH_TOO_LONG`.
 */
function checkPipeName(name: unknown, caller: string): asserts name is string {
  if (
    typeof name !== 'string' ||
    !name.toLowerCase().startsWith(PIPE_NAME_PREFIX) ||
    name.length === PIPE_NAME_PREFIX.length ||
    name.includes('\\', PIPE_NAME_PREFIX.length) ||
    name.includes('\0')
  ) {
    throw createError(
      'ERR_INVALID_ARGUMENT',
      `${caller} needs a local pipe name like \\\\.\\pipe\\bridgekeeper-my-agent-S-1-5-21-…, not ${JSON.stringify(name)}. ` +
        'Use pipeName() to build it.',
    );
  }
  if (name.length > MAX_PIPE_NAME_CHARS) {
    throw createError(
      'ERR_ENDPOINT_PATH_TOO_LONG',
      `The pipe name ${name} is ${name.length} characters long, over the Windows limit of ${MAX_PIPE_NAME_CHARS}. Use a shorter app name.`,
    );
  }
}

/**
 * The name of an app's pipe for one user: `\\.\pipe\bridgekeeper-<app>-<sid>`. The user's SID
 * is part of the name so that each user's instance of the app has a pipe of its own. Windows
 * compares pipe names without regard to case, so the name is returned in one canonical case
 * (app lower case, SID upper case): `My-Agent` and `my-agent` are the same pipe.
 *
 * @param app - the app's name: 1–64 letters, digits, `.`, `_`, `-`, starting with a letter or
 *   digit (the rule of `resolveEndpoint`).
 * @param userSid - the string SID of the user the app runs as (`processUserSid('self')`).
 * @throws `ERR_INVALID_ARGUMENT` for a bad app name or SID; `ERR_ENDPOINT_PATH_TOO_LONG` over
 *   {@link MAX_PIPE_NAME_CHARS}.
 * @example
 * ```ts
 * const bindings = await loadWin32Bindings();
 * const name = pipeName('my-agent', bindings.processUserSid('self'));
 * // \\.\pipe\bridgekeeper-my-agent-S-1-5-21-…-1001
 * ```
 */
export function pipeName(app: string, userSid: string): string {
  if (typeof app !== 'string' || !APP_NAME.test(app)) {
    throw createError(
      'ERR_INVALID_ARGUMENT',
      `The app name ${JSON.stringify(app)} cannot name an endpoint. Use 1 to 64 letters, digits, ".", "_" or "-", starting with a letter or digit.`,
    );
  }
  if (typeof userSid !== 'string' || !SID.test(userSid)) {
    throw createError(
      'ERR_INVALID_ARGUMENT',
      `${JSON.stringify(userSid)} is not a Windows user SID (S-1-5-21-…). Pass the SID of the user the app runs as.`,
    );
  }
  const name = `${PIPE_NAME_PREFIX}bridgekeeper-${app.toLowerCase()}-${userSid.toUpperCase()}`;
  checkPipeName(name, 'pipeName');
  return name;
}

/**
 * The security descriptor of the app's pipe: a protected DACL that grants the user, and nobody
 * else (not SYSTEM, not Administrators), full access.
 *
 * @internal
 */
export function pipeSecurityDescriptor(userSid: string): string {
  if (typeof userSid !== 'string' || !SID.test(userSid)) {
    throw createError(
      'ERR_PLATFORM',
      `Could not build the pipe's security descriptor: ${JSON.stringify(userSid)} is not a SID.`,
    );
  }
  return `D:P(A;;GA;;;${userSid})`;
}

/** Options for {@link listenNamedPipe}. */
export interface ListenNamedPipeOptions extends ConnectionLimits {
  /** The full pipe name, `\\.\pipe\…`; build it with {@link pipeName}. */
  name: string;
  /** The Windows API ({@link loadWin32Bindings}), or a fake in tests. */
  bindings: Win32Bindings;
  /**
   * Reads the client's identity from the kernel, synchronously, on the connected pipe HANDLE
   * (`GetNamedPipeClientProcessId` and the process's facts) before a byte is read from it. The
   * HANDLE stays the listener's: do not close or keep it. Throwing drops that client without
   * reporting it.
   */
  identify?: (pipe: Win32Handle) => PeerIdentity;
  /**
   * Releases what an identity from `identify` holds (an open process handle). Called exactly
   * once for every identity that does not end up in a delivered transport: a connection whose
   * transport could not be created, and connections still waiting for an `onConnection`
   * subscriber when the listener closes. The identity of a delivered transport is the
   * subscriber's to release.
   */
  release?: (peer: PeerIdentity) => void;
  /**
   * Pipe instances kept waiting for clients; default {@link DEFAULT_PIPE_INSTANCES}. Each
   * connection takes one and is replaced at once, so this bounds how many clients can be
   * connecting at the same moment (others retry on `ERROR_PIPE_BUSY`), not how many are served.
   * At most 64.
   */
  instances?: number;
  /** Cancels setting up the listener (not the listener once it is running). */
  signal?: AbortSignal;
  /** The app's name, for error messages ("another instance of <app> …"). */
  app?: string;
}

/** One pipe instance the listener created and has not handed over yet. */
interface PipeInstance {
  readonly handle: Win32Handle;
  /** Cancels the wait for a client, once waiting. */
  cancel?: () => void;
  /** Starts the wait later, after failures. */
  timer?: NodeJS.Timeout;
}

class NamedPipeListener implements TransportListener {
  readonly address: string;
  readonly #bindings: Win32Bindings;
  readonly #securityDescriptor: string;
  readonly #identify: ((pipe: Win32Handle) => PeerIdentity) | undefined;
  readonly #release: ((peer: PeerIdentity) => void) | undefined;
  readonly #transportOptions: StreamTransportOptions;
  readonly #size: number;
  readonly #connections = new ConnectionEvents(() => !this.#closing);
  /** Instances created and not yet handed over or closed. */
  readonly #pool = new Set<PipeInstance>();
  /** Timers that will try again to create an instance that could not be created. */
  readonly #retries = new Set<NodeJS.Timeout>();
  /** Waits that failed in a row; from the second on, the next wait starts after a pause. */
  #failures = 0;
  #closing: Promise<void> | undefined;

  constructor(securityDescriptor: string, options: ListenNamedPipeOptions, size: number) {
    this.address = options.name;
    this.#bindings = options.bindings;
    this.#securityDescriptor = securityDescriptor;
    this.#identify = options.identify;
    this.#release = options.release;
    this.#transportOptions = streamLimitsOf(options);
    this.#size = size;
  }

  /**
   * Takes the first instance (created with `first: true`), fills the pool, then starts waiting
   * on every instance.
   *
   * @internal
   */
  start(first: Win32Handle): void {
    const instances = [this.#adopt(first)];
    while (this.#pool.size + this.#retries.size < this.#size) {
      const instance = this.#createInstance();
      if (instance) instances.push(instance);
    }
    for (const instance of instances) this.#startWait(instance, 0);
  }

  onConnection(listener: (transport: Transport) => void): Disposable {
    return this.#connections.onConnection(listener);
  }

  close(): Promise<void> {
    this.#closing ??= this.#close();
    return this.#closing;
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  async #close(): Promise<void> {
    for (const timer of this.#retries) clearTimeout(timer);
    this.#retries.clear();
    const pool = [...this.#pool];
    this.#pool.clear();
    for (const instance of pool) {
      clearTimeout(instance.timer);
      // The wait first: its callback must never see a closed (or reused) HANDLE.
      try {
        instance.cancel?.();
      } catch (error) {
        debug('cancelling a wait for a pipe client failed: %s', (error as Error).message);
      }
      closeHandleQuietly(this.#bindings, instance.handle);
    }
    // Never delivered, so nobody else will release their identities.
    this.#connections.close((transport) => {
      transport.destroy();
      releaseQuietly(this.#release, transport.peer);
    });
    debug('stopped listening at %s', this.address);
  }

  /**
   * Creates one more instance in the pool, not waited on yet; when Windows refuses, tries again
   * (and then waits on it) after a pause.
   */
  #createInstance(): PipeInstance | undefined {
    if (this.#closing) return undefined;
    let handle: Win32Handle;
    try {
      handle = this.#bindings.createPipeInstance(this.address, {
        first: false,
        securityDescriptor: this.#securityDescriptor,
      });
    } catch (error) {
      debug(
        'could not create a pipe instance at %s (%s); trying again in %d ms',
        this.address,
        (error as Error).message,
        INSTANCE_RETRY_MS,
      );
      const timer = setTimeout(() => {
        this.#retries.delete(timer);
        this.#startWait(this.#createInstance(), 0);
      }, INSTANCE_RETRY_MS);
      this.#retries.add(timer);
      return undefined;
    }
    return this.#adopt(handle);
  }

  #adopt(handle: Win32Handle): PipeInstance {
    const instance: PipeInstance = { handle };
    this.#pool.add(instance);
    return instance;
  }

  #startWait(instance: PipeInstance | undefined, delayMs: number): void {
    if (instance === undefined) return;
    if (delayMs > 0) {
      instance.timer = setTimeout(() => {
        instance.timer = undefined;
        this.#wait(instance);
      }, delayMs);
    } else {
      this.#wait(instance);
    }
  }

  #wait(instance: PipeInstance): void {
    if (!this.#pool.has(instance)) return;
    let cancel: () => void;
    try {
      cancel = this.#bindings.waitForClient(instance.handle, (error) =>
        this.#onWaitDone(instance, error),
      );
    } catch (error) {
      this.#onWaitDone(
        instance,
        error instanceof Win32Error ? error : new Win32Error('ConnectNamedPipe', 0, String(error)),
      );
      return;
    }
    // The callback may already have run (a client was connected before the wait began).
    if (this.#pool.has(instance)) instance.cancel = cancel;
  }

  #onWaitDone(instance: PipeInstance, error: Win32Error | undefined): void {
    // Not in the pool: cancelled by close(), whose HANDLE is closed already.
    if (!this.#pool.delete(instance)) return;
    // The replacement is created before anything else, so the name is never left without an
    // instance (another program could take it) and the next client does not find every
    // instance busy. It is waited on only once this client is dealt with: a wait may report a
    // client at once, and that one's accept must not run inside this one's.
    const replacement = this.#createInstance();
    if (error !== undefined) {
      this.#failures++;
      debug('waiting for a client at %s failed: %s', this.address, error.message);
      closeHandleQuietly(this.#bindings, instance.handle);
      this.#startWait(replacement, this.#failures > 1 ? INSTANCE_RETRY_MS : 0);
      return;
    }
    this.#failures = 0;
    this.#accept(instance.handle);
    this.#startWait(replacement, 0);
  }

  /** A client is connected on `handle`: identify it, then hand it over as a transport. */
  #accept(handle: Win32Handle): void {
    if (this.#closing) {
      closeHandleQuietly(this.#bindings, handle);
      return;
    }
    let peer: PeerIdentity | undefined;
    if (this.#identify) {
      try {
        peer = this.#identify(handle);
      } catch (error) {
        debug(
          'dropped a pipe client that could not be identified: %s',
          (error as { code?: string }).code ?? error,
        );
        closeHandleQuietly(this.#bindings, handle);
        return;
      }
    }
    let socket: Socket;
    try {
      socket = socketFromHandle(this.#bindings, handle);
    } catch (error) {
      debug('dropped a pipe client: %s', (error as Error).message);
      releaseQuietly(this.#release, peer);
      return;
    }
    let transport: Transport;
    try {
      transport = streamTransportFor(socket, this.#transportOptions, peer, this.#release);
    } catch (error) {
      debug('dropped a pipe client: %s', (error as Error).message);
      return;
    }
    this.#connections.deliver(transport);
  }
}

/**
 * Listens on a Windows named pipe and yields a {@link Transport} per client.
 *
 * Creates the first pipe instance with `FILE_FLAG_FIRST_PIPE_INSTANCE`, so it fails when anything
 * else already holds the name (a second instance of the app, or a squatter), and every instance
 * with a protected DACL that admits only the current user; remote clients are rejected. Keeps
 * `instances` instances waiting for clients (no thread-pool thread per wait), replaces each as
 * soon as a client takes it, identifies the client on the pipe HANDLE with `identify` before a
 * byte is read, and frames the connection like a Unix socket. Connections are held until the
 * first `onConnection` subscriber; a transport is not read until its first `onMessage`
 * subscriber.
 *
 * @throws `ERR_ALREADY_RUNNING` when the pipe name is taken; `ERR_INVALID_ARGUMENT` for a bad
 *   name or option; `ERR_ENDPOINT_PATH_TOO_LONG`; `ERR_ABORTED`/`ERR_TIMEOUT` on `signal`;
 *   `ERR_PLATFORM` when Windows refuses otherwise (the error from the bindings is the `cause`).
 * @example
 * ```ts
 * const bindings = await loadWin32Bindings();
 * const listener = await listenNamedPipe({
 *   name: pipeName('my-agent', bindings.processUserSid('self')),
 *   bindings,
 *   app: 'my-agent',
 * });
 * listener.onConnection((transport) => {
 *   transport.onMessage((message) => transport.send({ echo: message }));
 * });
 * ```
 */
export async function listenNamedPipe(options: ListenNamedPipeOptions): Promise<TransportListener> {
  if (!options || typeof options !== 'object') {
    throw createError('ERR_INVALID_ARGUMENT', 'listenNamedPipe needs its options.');
  }
  checkPipeName(options.name, 'listenNamedPipe');
  if (!options.bindings) {
    throw createError(
      'ERR_INVALID_ARGUMENT',
      'listenNamedPipe needs the Windows `bindings` (loadWin32Bindings()).',
    );
  }
  const size = options.instances ?? DEFAULT_PIPE_INSTANCES;
  if (!Number.isSafeInteger(size) || size < 1 || size > MAX_PIPE_INSTANCES) {
    throw createError(
      'ERR_INVALID_ARGUMENT',
      `instances must be a whole number from 1 to ${MAX_PIPE_INSTANCES}, not ${String(size)}.`,
    );
  }
  throwIfAborted(options.signal, 'Listening');
  // Checked now: a bad option would otherwise drop every connection, one by one.
  checkStreamTransportOptions(options);
  const { bindings, name } = options;
  const securityDescriptor = pipeSecurityDescriptor(bindings.processUserSid('self'));

  let first: Win32Handle;
  try {
    first = bindings.createPipeInstance(name, { first: true, securityDescriptor });
  } catch (error) {
    const code = winerrorOf(error);
    if (code === WIN32_ERRORS.accessDenied || code === WIN32_ERRORS.pipeBusy) {
      const who = options.app ? `Another instance of ${options.app}` : 'Another instance';
      throw createError(
        'ERR_ALREADY_RUNNING',
        `${who} is already running and listening at ${name} (or another program holds that pipe name). ` +
          'Use that instance, or quit it before starting a new one.',
        { cause: error },
      );
    }
    throw createError(
      'ERR_PLATFORM',
      `Could not create the pipe ${name} (${code === undefined ? (error as Error).message : `Windows error ${code}`}).`,
      { cause: error },
    );
  }
  const listener = new NamedPipeListener(securityDescriptor, options, size);
  listener.start(first);
  debug('listening at %s with %d pipe instances', name, size);
  return listener;
}

/** Options for {@link connectNamedPipe} and {@link namedPipeConnector}. */
export interface ConnectNamedPipeOptions extends ConnectionLimits {
  /** The Windows API ({@link loadWin32Bindings}), or a fake in tests. */
  bindings: Win32Bindings;
  /** Cancels connecting, including the retries on a busy pipe. */
  signal?: AbortSignal;
  /**
   * How long to keep retrying while every pipe instance is taken (`ERROR_PIPE_BUSY`) before
   * giving up with `ERR_APP_UNAVAILABLE`; default {@link DEFAULT_BUSY_TIMEOUT_MS}.
   */
  busyTimeoutMs?: number;
  /**
   * Checks the server through the kernel on the opened pipe HANDLE
   * (`GetNamedPipeServerProcessId` and the process's facts) before anything is written, and
   * returns its identity for `transport.peer`. Throw (e.g. `ERR_SERVER_REJECTED`) to refuse it.
   * The HANDLE stays the connector's: do not close or keep it.
   */
  identify?: (pipe: Win32Handle) => PeerIdentity;
  /**
   * Releases what an identity from `identify` holds when connecting fails after `identify`
   * returned it; called exactly once then. The identity of a returned transport is the
   * caller's to release.
   */
  release?: (peer: PeerIdentity) => void;
}

/** Turns a failed `openPipe` into what the person reads. */
function openError(name: string, error: unknown): Error {
  const code = winerrorOf(error);
  if (code === undefined) return error as Error;
  let message: string;
  switch (code) {
    case WIN32_ERRORS.fileNotFound:
      message = `Nothing is listening at ${name}. Start the app, then try again.`;
      break;
    case WIN32_ERRORS.accessDenied:
      message =
        `Access denied connecting to ${name}: the app may be running as another user. ` +
        'Start it as yourself, then try again.';
      break;
    default:
      message = `Could not connect to the app at ${name} (Windows error ${code}). Check that it is running, then try again.`;
  }
  return createError('ERR_APP_UNAVAILABLE', message, { cause: error });
}

/**
 * Connects to a Windows named pipe and returns it as a {@link Transport}.
 *
 * Opens the pipe itself (`CreateFileW`), retrying on a short timer while every instance is
 * taken (never `WaitNamedPipeW`, which would block the thread), identifies the server with
 * `identify` before anything is written, then frames the connection like a Unix socket.
 *
 * @throws `ERR_APP_UNAVAILABLE` when nothing listens at `name`, the pipe refuses this user, or
 *   it stays busy for `busyTimeoutMs` (the bindings' error is the `cause`);
 *   `ERR_ABORTED`/`ERR_TIMEOUT` on `signal`; `ERR_INVALID_ARGUMENT`;
 *   `ERR_ENDPOINT_PATH_TOO_LONG`; whatever `identify` throws.
 * @example
 * ```ts
 * const bindings = await loadWin32Bindings();
 * const transport = await connectNamedPipe(pipeName('my-agent', bindings.processUserSid('self')), {
 *   bindings,
 *   signal: AbortSignal.timeout(5000),
 * });
 * transport.onMessage((message) => console.log(message));
 * transport.send({ jsonrpc: '2.0', id: 1, method: 'hello' });
 * ```
 */
export function connectNamedPipe(
  name: string,
  options: ConnectNamedPipeOptions,
): Promise<Transport> {
  const { signal, identify, release } = options ?? {};
  const busyTimeoutMs = options?.busyTimeoutMs ?? DEFAULT_BUSY_TIMEOUT_MS;
  try {
    checkPipeName(name, 'connectNamedPipe');
    if (!options?.bindings) {
      throw createError(
        'ERR_INVALID_ARGUMENT',
        'connectNamedPipe needs the Windows `bindings` (loadWin32Bindings()).',
      );
    }
    if (!Number.isFinite(busyTimeoutMs) || busyTimeoutMs < 0) {
      throw createError(
        'ERR_INVALID_ARGUMENT',
        `busyTimeoutMs must be a non-negative number of milliseconds, not ${String(busyTimeoutMs)}.`,
      );
    }
    throwIfAborted(signal, `Connecting to ${name}`);
    checkStreamTransportOptions(options);
  } catch (error) {
    return Promise.reject(error);
  }
  const { bindings } = options;
  const transportOptions = streamLimitsOf(options);
  const deadline = Date.now() + busyTimeoutMs;
  return new Promise((resolve, reject) => {
    let settled = false;
    let timer: NodeJS.Timeout | undefined;
    let delay = BUSY_RETRY_MIN_MS;
    let busy = 0;
    const finish = (): boolean => {
      if (settled) return false;
      settled = true;
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
      return true;
    };
    const onAbort = (): void => {
      if (finish()) reject(abortError(signal!, `Connecting to ${name}`));
    };
    const connected = (handle: Win32Handle): void => {
      let peer: PeerIdentity | undefined;
      try {
        // Before handleToFd: nothing can be written to a server that identify refuses.
        if (identify) peer = identify(handle);
      } catch (error) {
        closeHandleQuietly(bindings, handle);
        // identify() keeps what it made when it throws.
        reject(error);
        return;
      }
      let socket: Socket;
      try {
        socket = socketFromHandle(bindings, handle);
      } catch (error) {
        releaseQuietly(release, peer);
        reject(
          createError(
            'ERR_PLATFORM',
            `Could not use the connection to ${name} (${(error as Error).message}).`,
            { cause: error },
          ),
        );
        return;
      }
      try {
        resolve(streamTransportFor(socket, transportOptions, peer, release));
      } catch (error) {
        reject(error);
      }
    };
    const attempt = (): void => {
      timer = undefined;
      if (settled) return;
      let handle: Win32Handle;
      try {
        handle = bindings.openPipe(name);
      } catch (error) {
        if (winerrorOf(error) === WIN32_ERRORS.pipeBusy) {
          busy++;
          const now = Date.now();
          if (now < deadline) {
            // A timer, not WaitNamedPipeW: waiting must not hold a thread.
            timer = setTimeout(attempt, Math.min(delay, deadline - now));
            delay = Math.min(delay * 2, BUSY_RETRY_MAX_MS);
            return;
          }
          if (finish()) {
            reject(
              createError(
                'ERR_APP_UNAVAILABLE',
                `The app at ${name} stayed too busy to accept a connection for ${busyTimeoutMs} ms (${busy} attempts). Try again in a moment.`,
                { cause: error },
              ),
            );
          }
          return;
        }
        if (finish()) reject(openError(name, error));
        return;
      }
      finish();
      if (busy > 0) debug('connected to %s after %d busy attempts', name, busy);
      connected(handle);
    };
    signal?.addEventListener('abort', onAbort, { once: true });
    // Asynchronously, like a socket connect: a caller that aborts right after calling has
    // opened nothing.
    timer = setTimeout(attempt, 0);
  });
}

/**
 * A {@link TransportConnector} for Windows named pipes, with defaults for every connection.
 *
 * @example
 * ```ts
 * const connector = namedPipeConnector({ bindings: await loadWin32Bindings() });
 * const transport = await connector.connect(name, { signal: AbortSignal.timeout(5000) });
 * ```
 */
export function namedPipeConnector(
  defaults: Omit<ConnectNamedPipeOptions, 'signal'>,
): TransportConnector {
  return {
    connect(address: string, options: ConnectTransportOptions = {}): Promise<Transport> {
      return connectNamedPipe(
        address,
        options.signal ? { ...defaults, signal: options.signal } : defaults,
      );
    },
  };
}
