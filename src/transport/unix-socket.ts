/**
 * Unix domain socket transport: a listener for the app and a connector for clients.
 *
 * The listener publishes its socket atomically: it listens on a temporary name in the same
 * directory and hard-links that to the final path, which fails if anything is already there.
 * Two servers can therefore never both end up listening on the path, and one never removes the
 * other's socket: a leftover socket is removed only after a connect to it is refused, and on
 * close the listener unlinks the path only if it still names the very socket it published.
 *
 * @module
 */

import { randomBytes } from 'node:crypto';
import { type FSWatcher, watch } from 'node:fs';
import { chmod, link, lstat, stat, unlink } from 'node:fs/promises';
import net, { type Server, type Socket } from 'node:net';
import path from 'node:path';
import { abortError, createError, throwIfAborted } from '../errors.js';
import { createLog } from '../util/log.js';
import { checkSocketFile, checkSocketPathLength, fileSystemHint } from './endpoint.js';
import { streamTransportFor } from './identified-socket.js';
import {
  type ConnectionLimits,
  checkStreamTransportOptions,
  releaseQuietly,
  type StreamTransportOptions,
  streamLimitsOf,
} from './stream-transport.js';
import {
  type ConnectTransportOptions,
  type Disposable,
  type PeerIdentity,
  type Transport,
  type TransportConnector,
  type TransportListener,
  toDisposable,
} from './transport.js';
import { ConnectionEvents } from './transport-events.js';

const debug = createLog('bridgekeeper:transport');

/** How long probing an existing socket may take before it counts as alive. */
const PROBE_TIMEOUT_MS = 1000;

/** Link attempts before giving up, when stale sockets keep reappearing. */
const MAX_PUBLISH_ATTEMPTS = 3;

/** Options for {@link listenUnixSocket}. */
export interface ListenUnixSocketOptions extends ConnectionLimits {
  /** Where to listen; its directory must exist (see `prepareEndpointDirectory`). */
  path: string;
  /**
   * Reads the peer's identity from the kernel, synchronously, for each accepted socket before a
   * byte is read from it. Throwing drops that connection without reporting it.
   */
  identify?: (socket: Socket) => PeerIdentity;
  /**
   * Releases what an identity from `identify` holds (a pidfd). Called exactly once for every
   * identity that does not end up in a delivered transport: the listener's own probe of an
   * existing socket, a connection whose transport could not be created, and connections still
   * waiting for an `onConnection` subscriber when the listener closes. The identity of a
   * delivered transport (`transport.peer`) is the subscriber's to release.
   */
  release?: (peer: PeerIdentity) => void;
  /** Cancels setting up the listener (not the listener once it is running). */
  signal?: AbortSignal;
  /** The app's name, for error messages ("another instance of <name> …"). */
  name?: string;
}

interface FileIdentity {
  readonly dev: number;
  readonly ino: number;
}

function errnoCode(error: unknown): string | undefined {
  return (error as NodeJS.ErrnoException | undefined)?.code;
}

/**
 * A name for the temporary socket, no longer than the final name, so that the final path
 * fitting the OS limit means the temporary one does too.
 */
function temporaryPath(finalPath: string): string {
  const length = Math.max(8, path.basename(finalPath).length);
  const name = `.${randomBytes(length)
    .toString('hex')
    .slice(0, length - 1)}`;
  return path.join(path.dirname(finalPath), name);
}

class UnixSocketListener implements TransportListener {
  readonly address: string;
  readonly #server: Server;
  readonly #identify: ((socket: Socket) => PeerIdentity) | undefined;
  readonly #release: ((peer: PeerIdentity) => void) | undefined;
  readonly #transportOptions: StreamTransportOptions;
  readonly #connections = new ConnectionEvents(() => !this.#closing);
  readonly #errors = new Set<(error: Error) => void>();
  #published: FileIdentity | undefined;
  #watcher: FSWatcher | undefined;
  #lost = false;
  #checking = false;
  #checkAgain = false;
  #closing: Promise<void> | undefined;

  constructor(server: Server, address: string, options: ListenUnixSocketOptions) {
    this.#server = server;
    this.address = address;
    this.#identify = options.identify;
    this.#release = options.release;
    this.#transportOptions = streamLimitsOf(options);
    server.on('connection', (socket: Socket) => this.#accept(socket));
    server.on('error', (error: Error) => {
      debug('listener at %s: %s', address, errnoCode(error) ?? error.message);
    });
  }

  /** @internal */
  setPublished(identity: FileIdentity): void {
    this.#published = identity;
    this.#watchEndpoint();
  }

  onConnection(listener: (transport: Transport) => void): Disposable {
    return this.#connections.onConnection(listener);
  }

  onError(listener: (error: Error) => void): Disposable {
    this.#errors.add(listener);
    return toDisposable(() => this.#errors.delete(listener));
  }

  /**
   * Watches the socket's directory so that the app learns when its socket file is removed (a
   * temp cleaner, a person) or replaced: it keeps serving the connections it has, but new clients
   * would be told nothing listens, or reach whatever took the path. Reported once. Only the
   * socket's own directory is watched: a directory further up renamed or replaced goes unseen
   * until an event in the socket's directory (the runtime directory is the user's own).
   */
  #watchEndpoint(): void {
    try {
      this.#watcher = watch(path.dirname(this.address), { persistent: false }, () => {
        void this.#checkEndpoint();
      });
      this.#watcher.on('error', (error) => {
        debug('watching %s stopped: %s', this.address, errnoCode(error) ?? error.message);
        this.#watcher?.close();
      });
    } catch (error) {
      // Not every file system can be watched; the endpoint then goes unwatched, as before.
      debug('cannot watch %s: %s', this.address, errnoCode(error) ?? String(error));
    }
  }

  async #checkEndpoint(): Promise<void> {
    // One check at a time; events that arrive meanwhile ask for one more after it.
    if (this.#checking) {
      this.#checkAgain = true;
      return;
    }
    this.#checking = true;
    try {
      do {
        this.#checkAgain = false;
        await this.#checkEndpointOnce();
      } while (this.#checkAgain && !this.#lost && !this.#closing);
    } finally {
      this.#checking = false;
    }
  }

  async #checkEndpointOnce(): Promise<void> {
    const published = this.#published;
    if (this.#closing || this.#lost || published === undefined) return;
    let what: string | undefined;
    try {
      const stats = await lstat(this.address);
      if (stats.dev !== published.dev || stats.ino !== published.ino) what = 'replaced';
    } catch (error) {
      // ENOENT: removed; anything else (a directory on the path replaced by a file, its mode
      // changed): clients cannot reach it either.
      const code = errnoCode(error);
      what = code === 'ENOENT' ? 'removed' : `made unreachable (${code ?? 'unknown error'})`;
    }
    if (what === undefined || this.#closing || this.#lost) return;
    this.#lost = true;
    this.#watcher?.close();
    const error = createError(
      'ERR_ENDPOINT_LOST',
      `The app's socket ${this.address} was ${what} while the app ran: clients already connected ` +
        'are still served, but new ones cannot reach the app. Close the server and listen again ' +
        '(restart the app) to publish a new socket.',
    );
    debug('%s', error.message);
    for (const listener of [...this.#errors]) {
      try {
        listener(error);
      } catch (listenerError) {
        debug('endpoint error listener threw: %O', listenerError);
      }
    }
  }

  close(): Promise<void> {
    this.#closing ??= this.#close();
    return this.#closing;
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  async #close(): Promise<void> {
    // Stops accepting at once; the callback would wait for every open connection, which
    // belong to their owners now, so it is not awaited.
    this.#server.close();
    this.#watcher?.close();
    const published = this.#published;
    if (published !== undefined) {
      try {
        const stats = await lstat(this.address);
        // Someone else may have removed our socket and published their own meanwhile.
        if (stats.dev === published.dev && stats.ino === published.ino) await unlink(this.address);
        else debug('close: %s is no longer our socket; leaving it', this.address);
      } catch (error) {
        if (errnoCode(error) !== 'ENOENT')
          debug('close: could not remove %s: %s', this.address, errnoCode(error));
      }
    }
    // Never delivered, so nobody else will release their identities.
    this.#connections.close((transport) => {
      transport.destroy();
      releaseQuietly(this.#release, transport.peer);
    });
  }

  #accept(socket: Socket): void {
    if (this.#closing) {
      socket.destroy();
      return;
    }
    let peer: PeerIdentity | undefined;
    if (this.#identify) {
      try {
        peer = this.#identify(socket);
      } catch (error) {
        debug(
          'dropped a connection whose peer could not be identified: %s',
          (error as { code?: string }).code ?? error,
        );
        socket.destroy();
        return;
      }
    }
    let transport: Transport;
    try {
      transport = streamTransportFor(socket, this.#transportOptions, peer, this.#release);
    } catch (error) {
      debug('dropped a connection: %s', (error as Error).message);
      return;
    }
    this.#connections.deliver(transport);
  }
}

function listenOn(
  server: Server,
  temporary: string,
  finalPath: string,
  signal: AbortSignal | undefined,
): Promise<void> {
  return new Promise((resolve, reject) => {
    const cleanup = (): void => {
      server.off('listening', onListening);
      server.off('error', onError);
      signal?.removeEventListener('abort', onAbort);
    };
    const onListening = (): void => {
      cleanup();
      resolve();
    };
    const onError = (error: Error): void => {
      cleanup();
      const code = errnoCode(error);
      // libuv reports a missing directory as EACCES too; that case was ruled out before.
      const hint = fileSystemHint(code);
      reject(
        createError(
          'ERR_PLATFORM',
          `Could not listen at ${finalPath} (${code ?? error.message}).${hint}`,
          {
            cause: error,
          },
        ),
      );
    };
    const onAbort = (): void => {
      cleanup();
      server.close();
      reject(abortError(signal!, 'Listening'));
    };
    server.once('listening', onListening);
    server.once('error', onError);
    signal?.addEventListener('abort', onAbort, { once: true });
    server.listen(temporary);
  });
}

async function checkDirectory(finalPath: string): Promise<void> {
  const directory = path.dirname(finalPath);
  try {
    if ((await stat(directory)).isDirectory()) return;
  } catch (error) {
    if (errnoCode(error) !== 'ENOENT') {
      throw createError('ERR_PLATFORM', `Could not examine ${directory} (${errnoCode(error)}).`, {
        cause: error,
      });
    }
  }
  throw createError(
    'ERR_PLATFORM',
    `Could not listen at ${finalPath}: the directory ${directory} does not exist. ` +
      'Create it first (prepareEndpointDirectory does, safely).',
  );
}

type ProbeResult = { alive: true; pid?: number } | { alive: false; gone: boolean };

/** Connects to an existing socket to learn whether a server still answers there. */
function probe(
  socketPath: string,
  identify: ((socket: Socket) => PeerIdentity) | undefined,
  release: ((peer: PeerIdentity) => void) | undefined,
): Promise<ProbeResult> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ path: socketPath });
    socket.pause();
    const timer = setTimeout(() => {
      socket.destroy();
      // Something holds the socket but does not answer: never remove what might be alive.
      resolve({ alive: true });
    }, PROBE_TIMEOUT_MS);
    socket.once('connect', () => {
      clearTimeout(timer);
      let pid: number | undefined;
      try {
        const peer = identify?.(socket);
        pid = peer?.pid;
        if (peer) release?.(peer);
      } catch {
        // The pid only decorates the message.
      }
      socket.destroy();
      resolve(pid === undefined ? { alive: true } : { alive: true, pid });
    });
    socket.once('error', (error) => {
      clearTimeout(timer);
      socket.destroy();
      const code = errnoCode(error);
      if (code === 'ECONNREFUSED') resolve({ alive: false, gone: false });
      else if (code === 'ENOENT') resolve({ alive: false, gone: true });
      // A full backlog means a live server that is busy.
      else if (code === 'EAGAIN') resolve({ alive: true });
      else {
        reject(
          createError(
            'ERR_PLATFORM',
            `Could not tell whether another instance is listening at ${socketPath} (${code ?? error.message}).`,
            { cause: error },
          ),
        );
      }
    });
  });
}

/** Links the listening temporary socket to its final path, dealing with what is already there. */
async function publish(
  temporary: string,
  finalPath: string,
  uid: number,
  options: ListenUnixSocketOptions,
): Promise<void> {
  for (let attempt = 1; ; attempt++) {
    throwIfAborted(options.signal, 'Listening');
    try {
      await link(temporary, finalPath);
      return;
    } catch (error) {
      if (errnoCode(error) !== 'EEXIST') {
        throw createError(
          'ERR_PLATFORM',
          `Could not publish the socket at ${finalPath} (${errnoCode(error)}).`,
          {
            cause: error,
          },
        );
      }
    }
    if (attempt >= MAX_PUBLISH_ATTEMPTS) {
      throw createError(
        'ERR_ALREADY_RUNNING',
        `Could not take over ${finalPath}: a socket keeps reappearing there. Another instance may be starting at the same time; try again.`,
      );
    }
    const existing = await checkSocketFile(finalPath, { uid });
    if (existing === undefined) continue;
    const state = await probe(finalPath, options.identify, options.release);
    if (state.alive) {
      const who = options.name ? `Another instance of ${options.name}` : 'Another instance';
      const pid = state.pid === undefined ? '' : ` (pid ${state.pid})`;
      throw createError(
        'ERR_ALREADY_RUNNING',
        `${who} is already running${pid} and listening at ${finalPath}. Use that instance, or quit it before starting a new one.`,
      );
    }
    if (state.gone) continue;
    // Refused: a socket whose server died without cleaning up. Remove exactly that one.
    try {
      const again = await lstat(finalPath);
      if (again.dev === existing.dev && again.ino === existing.ino) {
        debug('removing the stale socket at %s', finalPath);
        await unlink(finalPath);
      }
    } catch (error) {
      if (errnoCode(error) !== 'ENOENT') {
        throw createError(
          'ERR_PLATFORM',
          `Could not remove the stale socket at ${finalPath} (${errnoCode(error)}).`,
          {
            cause: error,
          },
        );
      }
    }
  }
}

async function removeQuietly(file: string): Promise<void> {
  try {
    await unlink(file);
  } catch (error) {
    // libuv removes the name it bound to when the server closes; either of us may be first.
    if (errnoCode(error) !== 'ENOENT') debug('could not remove %s: %s', file, errnoCode(error));
  }
}

/**
 * Listens on a Unix domain socket and yields a {@link Transport} per accepted connection.
 *
 * Publishes the socket atomically (mode 0600, hard-linked from a temporary name), refuses to
 * touch anything at the path that is not this user's socket, replaces a stale socket only when
 * nothing answers on it, and on close removes the path only if it is still its own socket.
 * Accepted sockets are not read until their transport gets an `onMessage` subscriber. Prepare
 * the directory first with `prepareEndpointDirectory`.
 *
 * @throws `ERR_UNSAFE_ENDPOINT` when a regular file, a symbolic link, a directory or another
 *   user's socket is at `path`; `ERR_ALREADY_RUNNING` when a server answers there;
 *   `ERR_ENDPOINT_PATH_TOO_LONG`; `ERR_ABORTED`/`ERR_TIMEOUT` on `signal`; `ERR_PLATFORM` when
 *   the OS refuses (a missing directory, no permission).
 * @example
 * ```ts
 * const endpoint = resolveEndpoint('my-agent');
 * await prepareEndpointDirectory(endpoint.directory, { base: endpoint.base });
 * const listener = await listenUnixSocket({ path: endpoint.path, name: 'my-agent' });
 * listener.onConnection((transport) => {
 *   transport.onMessage((message) => transport.send({ echo: message }));
 * });
 * ```
 */
export async function listenUnixSocket(
  options: ListenUnixSocketOptions,
): Promise<TransportListener> {
  if (!options || typeof options.path !== 'string' || options.path.length === 0) {
    throw createError('ERR_INVALID_ARGUMENT', 'listenUnixSocket needs the socket `path`.');
  }
  throwIfAborted(options.signal, 'Listening');
  // Checked now: a bad option would otherwise drop every connection, one by one.
  checkStreamTransportOptions(options);
  const uid = process.getuid?.();
  if (uid === undefined) {
    throw createError(
      'ERR_UNSUPPORTED_PLATFORM',
      'Unix domain sockets are not available here; on Windows, use a named pipe.',
    );
  }
  const finalPath = path.resolve(options.path);
  checkSocketPathLength(finalPath);
  const temporary = temporaryPath(finalPath);
  checkSocketPathLength(
    temporary,
    process.platform,
    'Use a longer socket file name or a shorter directory.',
  );

  await checkDirectory(finalPath);
  throwIfAborted(options.signal, 'Listening');

  const server = net.createServer({ pauseOnConnect: true });
  const listener = new UnixSocketListener(server, finalPath, options);
  let bound = false;
  try {
    await listenOn(server, temporary, finalPath, options.signal);
    bound = true;
    // Before the socket has its public name: nobody else may ever connect through it.
    await chmod(temporary, 0o600);
    const stats = await lstat(temporary);
    await publish(temporary, finalPath, uid, options);
    listener.setPublished({ dev: stats.dev, ino: stats.ino });
    await removeQuietly(temporary);
  } catch (error) {
    server.close();
    if (bound) await removeQuietly(temporary);
    throw error;
  }
  debug('listening at %s', finalPath);
  return listener;
}

function connectError(socketPath: string, error: Error): Error {
  const code = errnoCode(error);
  let message: string;
  switch (code) {
    case 'ENOENT':
    case 'ECONNREFUSED':
    case 'ENOTSOCK':
    case 'ENOTDIR':
      message = `Nothing is listening at ${socketPath}. Start the app, then try again.`;
      break;
    case 'EACCES':
    case 'EPERM':
      message =
        `Permission denied connecting to ${socketPath}: the app may be running as another user. ` +
        'Start it as yourself, then try again.';
      break;
    case 'EAGAIN':
      message = `The app at ${socketPath} is too busy to accept a connection. Try again in a moment.`;
      break;
    default:
      message = `Could not connect to the app at ${socketPath} (${code ?? error.message}). Check that it is running, then try again.`;
  }
  return createError('ERR_APP_UNAVAILABLE', message, { cause: error });
}

/** Options for {@link connectUnixSocket} and {@link unixSocketConnector}. */
export interface ConnectUnixSocketOptions extends ConnectionLimits {
  /** Cancels connecting; the socket is destroyed. */
  signal?: AbortSignal;
  /**
   * Checks the server through the kernel on the connected socket before anything is sent, and
   * returns its identity for `transport.peer`. Throw (e.g. `ERR_SERVER_REJECTED`) to refuse it.
   */
  identify?: (socket: Socket) => PeerIdentity;
  /**
   * Releases what an identity from `identify` holds (a pidfd) when connecting fails after
   * `identify` returned it; called exactly once then. The identity of a returned transport
   * (`transport.peer`) is the caller's to release.
   */
  release?: (peer: PeerIdentity) => void;
}

/**
 * Connects to a Unix domain socket and returns it as a {@link Transport}.
 *
 * @throws `ERR_APP_UNAVAILABLE` when nothing listens at `path` (the OS error is the `cause`);
 *   `ERR_ABORTED`/`ERR_TIMEOUT` on `signal`; `ERR_ENDPOINT_PATH_TOO_LONG`; whatever `identify`
 *   throws.
 * @example
 * ```ts
 * const transport = await connectUnixSocket(resolveEndpoint('my-agent').path, {
 *   signal: AbortSignal.timeout(5000),
 * });
 * transport.onMessage((message) => console.log(message));
 * transport.send({ jsonrpc: '2.0', id: 1, method: 'hello' });
 * ```
 */
export function connectUnixSocket(
  socketPath: string,
  options: ConnectUnixSocketOptions = {},
): Promise<Transport> {
  const { signal, identify, release } = options;
  try {
    if (typeof socketPath !== 'string' || socketPath.length === 0) {
      throw createError('ERR_INVALID_ARGUMENT', 'connectUnixSocket needs the socket path.');
    }
    throwIfAborted(signal, `Connecting to ${socketPath}`);
    checkSocketPathLength(socketPath);
    checkStreamTransportOptions(options);
  } catch (error) {
    return Promise.reject(error);
  }
  const transportOptions = streamLimitsOf(options);
  return new Promise((resolve, reject) => {
    const socket = net.connect({ path: socketPath });
    // Paused before it connects, so Node does not start reading when it does.
    socket.pause();
    const cleanup = (): void => {
      socket.off('connect', onConnect);
      socket.off('error', onError);
      signal?.removeEventListener('abort', onAbort);
    };
    const onConnect = (): void => {
      cleanup();
      let peer: PeerIdentity | undefined;
      try {
        if (identify) peer = identify(socket);
      } catch (error) {
        // identify() keeps what it made when it throws: nothing to release.
        socket.destroy();
        reject(error);
        return;
      }
      try {
        resolve(streamTransportFor(socket, transportOptions, peer, release));
      } catch (error) {
        reject(error);
      }
    };
    const onError = (error: Error): void => {
      cleanup();
      socket.destroy();
      reject(connectError(socketPath, error));
    };
    const onAbort = (): void => {
      cleanup();
      socket.destroy();
      reject(abortError(signal!, `Connecting to ${socketPath}`));
    };
    socket.once('connect', onConnect);
    socket.once('error', onError);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

/**
 * A {@link TransportConnector} for Unix domain sockets, with defaults for every connection.
 *
 * @example
 * ```ts
 * const connector = unixSocketConnector({ maxFrameBytes: 256 * 1024 });
 * const transport = await connector.connect('/run/user/1000/my-agent/agent.sock');
 * ```
 */
export function unixSocketConnector(
  defaults: Omit<ConnectUnixSocketOptions, 'signal'> = {},
): TransportConnector {
  return {
    connect(address: string, options: ConnectTransportOptions = {}): Promise<Transport> {
      return connectUnixSocket(
        address,
        options.signal ? { ...defaults, signal: options.signal } : defaults,
      );
    },
  };
}

/**
 * The OS file descriptor under a connected Node socket, for the kernel calls that identify the
 * peer (`getsockopt(SO_PEERCRED)`). Node does not expose it publicly; `undefined` when this
 * Node or this socket has none.
 *
 * @internal
 */
export function socketFd(socket: Socket): number | undefined {
  const fd = (socket as unknown as { _handle?: { fd?: unknown } })._handle?.fd;
  return typeof fd === 'number' && fd >= 0 ? fd : undefined;
}

/** The part of a platform module that identifies socket peers (`Platform`). */
interface SocketPeerIdentifier {
  identifySocketPeer(fd: number): PeerIdentity;
  releasePeer(peer: PeerIdentity): void;
}

/**
 * Identifies the process on the other end of a connected Unix socket through `platform`; a
 * socket without a file descriptor fails with `code`.
 *
 * @internal
 */
export function identifySocketWith(
  platform: SocketPeerIdentifier,
  code: 'ERR_PEER_UNKNOWN' | 'ERR_SERVER_REJECTED',
): (socket: Socket) => PeerIdentity {
  return (socket) => {
    const fd = socketFd(socket);
    if (fd === undefined) {
      throw createError(code, 'The socket exposes no file descriptor to identify its peer with.');
    }
    return platform.identifySocketPeer(fd);
  };
}

/**
 * Identifies the server a client connected to at `socketPath`, through `platform`, and refuses
 * it (`ERR_SERVER_REJECTED`, its identity released) unless it runs as this user — before anything
 * is sent. `endpoint` names what should listen there, for the message ("the app's").
 *
 * @internal
 */
export function identifySameUserServer(
  platform: SocketPeerIdentifier,
  socketPath: string,
  endpoint: string,
): (socket: Socket) => PeerIdentity {
  const identify = identifySocketWith(platform, 'ERR_SERVER_REJECTED');
  const uid = process.getuid?.();
  return (socket) => {
    const peer = identify(socket);
    if (uid !== undefined && peer.uid !== uid) {
      platform.releasePeer(peer);
      throw createError(
        'ERR_SERVER_REJECTED',
        `The process listening at ${socketPath} runs as uid ${peer.uid}, not as you (uid ${uid}). ` +
          `Nothing was sent to it. Something may be squatting on ${endpoint} endpoint: stop it, or check the path.`,
      );
    }
    return peer;
  };
}
