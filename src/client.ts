/**
 * The CLI / script side: find the app, check that it is the app, say hello, make requests.
 *
 * @module
 */

import type { Socket } from 'node:net';
import {
  abortError,
  BridgekeeperError,
  createError,
  isErrorCode,
  throwIfAborted,
} from './errors.js';
import type { Platform } from './platform/platform.js';
import { loadPlatform } from './platform/platform.js';
import { evaluatePolicies, type PeerPolicy } from './policy/peer-policy.js';
import {
  type ClosingNoticeParams,
  classifyMessage,
  fromWireError,
  type HelloParams,
  type HelloResult,
  isParams,
  METHODS,
  notification,
  PROTOCOL_VERSION,
  type PromptNoticeParams,
  type QueuedNoticeParams,
  type RequestId,
  request as requestMessage,
} from './protocol/messages.js';
import type { SessionScope } from './session/credentials.js';
import { resolveEndpoint } from './transport/endpoint.js';
import type { Disposable, Message, PeerIdentity, Transport } from './transport/transport.js';
import { connectUnixSocket, identifySameUserServer } from './transport/unix-socket.js';
import { Emitter } from './util/emitter.js';
import { createLog } from './util/log.js';

const debug = createLog('bridgekeeper:client');

/** Options for {@link connect}. */
export interface ConnectOptions {
  /** The app's name, as given to `createServer`; locates its endpoint. */
  app: string;
  /** Socket path, when the app listens somewhere other than its default endpoint. */
  path?: string;
  /** An already-open transport to use instead of a socket (the in-memory pair, a named pipe, …). */
  transport?: Transport;
  /** This client's name, sent in the hello (shown to the person only labelled as the client's claim). */
  name?: string;
  /** This client's version, sent in the hello. */
  version?: string;
  /** Why this client wants access, sent in the hello (shown only as the client's claim). */
  reason?: string;
  /**
   * Check through the kernel that the process listening on the endpoint runs as this user,
   * before sending anything (so a squatter gets nothing). Default true on sockets.
   */
  verifyServer?: boolean;
  /**
   * More checks of the server process, run on its kernel-reported identity before anything is
   * sent (after the same-user check of `verifyServer`): for example
   * `allowExecutables(['/opt/secrets-agent/agent'])`. Any rejection fails with `ERR_SERVER_REJECTED`.
   */
  serverPolicies?: readonly PeerPolicy[];
  /** The OS services to use; default: the module for this OS, loaded when needed. */
  platform?: Platform;
  /** A hint appended to "app unavailable" errors, e.g. "Start it with `secrets-agent serve`." */
  unavailableHint?: string;
  /** Limit for connecting and the handshake together. Default 5 s. */
  timeoutMs?: number;
  /**
   * Largest frame this client accepts from the app, in bytes. Default 1 MiB. Raise it together
   * with the app's `maxFrameBytes` when results can be larger.
   */
  maxFrameBytes?: number;
  signal?: AbortSignal;
}

/** Options for {@link Client.request}. */
export interface RequestOptions {
  /** Cancels the request (the server is told, and its prompt is taken down if nobody else waits). */
  signal?: AbortSignal;
  /**
   * Gives up after this long. Default 5 minutes, long enough for a person to find and answer
   * a prompt; `0` means no limit.
   */
  timeoutMs?: number;
}

/** An authorization prompt for one of this client's requests is on screen. */
export interface PromptNotice {
  readonly method: string;
  readonly account: { readonly id: string; readonly displayName: string };
  /** The backend showing it (`polkit`, `windows-hello`, `local-authentication`, `scripted`). */
  readonly backend: string;
}

/** One of this client's requests waits behind another session's prompt. */
export interface QueuedNotice {
  readonly method: string;
  readonly position: number;
}

/** Events of a {@link Client}. */
export interface ClientEvents {
  prompt: PromptNotice;
  queued: QueuedNotice;
  /** The server announced it is closing the connection. */
  closing: ClosingNoticeParams;
  /** The connection is gone. */
  close: { error?: Error };
}

/** A connection to the app. Create with {@link connect}. */
export interface Client {
  /** The session the app placed this client in (`terminal`: this terminal window; `process`: this process's parent only). */
  readonly session: { readonly id: string; readonly scope: SessionScope };
  /** Who answered. */
  readonly server: { readonly name: string; readonly version: string; readonly protocol: number };
  /** The server process as the kernel reported it, when checked. */
  readonly serverPeer: PeerIdentity | undefined;
  /** True once the connection is gone. */
  readonly closed: boolean;
  /**
   * Calls a method on the app. If the method needs an account the session has not been
   * authorized for, the app prompts the person first; listen to `prompt` to tell them where to look.
   *
   * @throws `ERR_AUTHORIZATION_DENIED`, `ERR_AUTHORIZATION_CANCELLED`, `ERR_AUTHORIZATION_COOLDOWN`,
   * `ERR_PROMPT_UNAVAILABLE`, `ERR_PROMPT_FAILED`, `ERR_METHOD_NOT_FOUND`, `ERR_INVALID_PARAMS`,
   * `ERR_INTERNAL`, `ERR_PEER_CHANGED`, `ERR_APP_UNAVAILABLE` (the app went away), `ERR_TIMEOUT`,
   * `ERR_ABORTED`, `ERR_CLOSED`; a `RemoteError` with the app's own code.
   */
  request<R = unknown>(method: string, params?: unknown, options?: RequestOptions): Promise<R>;
  /** Subscribes to client events. */
  on<E extends keyof ClientEvents>(
    event: E,
    listener: (payload: ClientEvents[E]) => void,
  ): Disposable;
  /** Closes the connection once pending requests are answered. Idempotent. */
  close(): Promise<void>;
  /** Closes at once; pending requests reject with `ERR_CLOSED` (or `error`). Idempotent. */
  destroy(error?: Error): void;
  [Symbol.asyncDispose](): Promise<void>;
}

const DEFAULT_REQUEST_TIMEOUT_MS = 5 * 60_000;

/** `ERR_APP_UNAVAILABLE` with the app's own hint on how to start it appended; others as they are. */
function withUnavailableHint(error: unknown, hint: string | undefined): unknown {
  if (hint && error instanceof BridgekeeperError && error.code === 'ERR_APP_UNAVAILABLE') {
    return createError('ERR_APP_UNAVAILABLE', `${error.message} ${hint}`, { cause: error.cause });
  }
  return error;
}

/**
 * Whether `params` goes on the wire as JSON-RPC params (absent, an object or an array) — judged
 * by what `JSON.stringify` will write: a Date (its `toJSON` gives a string) or a boxed number does
 * not, though `typeof` says object.
 */
function isJsonParams(params: unknown): boolean {
  if (!isParams(params)) return false;
  if (params === undefined || Array.isArray(params)) return true;
  if (
    params instanceof Number ||
    params instanceof String ||
    params instanceof Boolean ||
    params instanceof BigInt
  ) {
    return false;
  }
  const toJSON = (params as { toJSON?: unknown }).toJSON;
  if (typeof toJSON !== 'function') return true;
  const json: unknown = toJSON.call(params, '');
  return json !== undefined && isParams(json);
}

/**
 * A CLI installed setgid (docs/setgid-cli.md) is only a boundary if same-user code cannot run
 * code inside it. Node answers SIGUSR1 — which the same user may send to a setgid process — by
 * opening its inspector, and the inspector runs any code with the group's gid. So a setgid
 * process refuses to connect unless the inspector is off (a Node built without it, or started
 * with `--disable-sigusr1`, e.g. through a single executable's `execArgv`).
 */
function refuseInsecureSetgid(): void {
  const egid = process.getegid?.();
  const gid = process.getgid?.();
  if (egid === undefined || gid === undefined || egid === gid) return;
  // NODE_OPTIONS does not count: Node ignores it in a setgid process.
  const sigusr1Disabled = process.execArgv.includes('--disable-sigusr1');
  if (!process.features.inspector || sigusr1Disabled) return;
  throw createError(
    'ERR_UNSUPPORTED_PLATFORM',
    'This program runs setgid, but its Node has the inspector enabled: any program of the same user ' +
      'could send it SIGUSR1 and run code with its group. Build it with the inspector off ' +
      '(a single executable with execArgv ["--disable-sigusr1"], or a Node built --without-inspector). ' +
      'See docs/setgid-cli.md.',
  );
}

/**
 * Connects to the app, checks it, and completes the handshake.
 *
 * @throws `ERR_APP_UNAVAILABLE` when the app is not running; `ERR_SERVER_REJECTED` when the
 * endpoint belongs to another user; `ERR_CONNECTION_LIMIT`; `ERR_UNSUPPORTED_VERSION`;
 * `ERR_PEER_REJECTED`/`ERR_PEER_UNKNOWN` when the app refuses this process; `ERR_PROTOCOL`;
 * `ERR_TIMEOUT`; `ERR_ABORTED`.
 * @example
 * ```ts
 * import { connect } from 'bridgekeeper';
 *
 * await using client = await connect({ app: 'secrets-agent', name: 'my-cli' });
 * client.on('prompt', ({ account }) => console.error(`Approve access to ${account.displayName} in the dialog…`));
 * const secret = await client.request('secrets.read', { account: 'work', item: 'db' });
 * ```
 */
export async function connect(options: ConnectOptions): Promise<Client> {
  if (!options || typeof options.app !== 'string' || options.app.length === 0) {
    throw createError('ERR_INVALID_ARGUMENT', 'connect needs the `app` name.');
  }
  const timeoutMs = options.timeoutMs ?? 5_000;
  const ownTimeout = AbortSignal.timeout(timeoutMs);
  const signals = [ownTimeout];
  if (options.signal) signals.push(options.signal);
  const signal = AbortSignal.any(signals);
  throwIfAborted(signal, 'Connecting to the app');

  refuseInsecureSetgid();
  let transport: Transport;
  let releaseServerPeer: (() => void) | undefined;
  let where: string;
  if (options.transport) {
    transport = options.transport;
    where = 'the given transport';
    if (options.verifyServer !== false) {
      // The same check as on a socket, on whatever identity the transport reports: a transport
      // that cannot say who is on the other end does not pass.
      const uid = process.getuid?.();
      const peer = transport.peer;
      if (!peer || (uid !== undefined && peer.uid !== uid)) {
        transport.destroy();
        throw createError(
          'ERR_SERVER_REJECTED',
          peer
            ? `The process on the other end of the transport runs as uid ${peer.uid}, not as you (uid ${uid}). Nothing was sent to it.`
            : 'The transport does not say who is on the other end, so the app cannot be checked. Nothing was sent. Pass verifyServer: false only if the transport itself guarantees it.',
        );
      }
    }
  } else if (
    !options.path &&
    (options.platform ?? (process.platform === 'win32' ? await loadPlatform() : undefined))
      ?.defaultEndpoint
  ) {
    // The OS's own endpoint (Windows: a named pipe): the server is identified through the OS
    // before anything is sent, and must run as this user.
    const platform = (options.platform ?? (await loadPlatform())) as Platform;
    const endpoint = platform.defaultEndpoint!;
    where = endpoint.address(options.app);
    transport = await endpoint
      .connect(options.app, {
        signal,
        ...(options.maxFrameBytes ? { maxFrameBytes: options.maxFrameBytes } : {}),
      })
      .catch((error: unknown) => {
        throw withUnavailableHint(error, options.unavailableHint);
      });
    const serverPeer = transport.peer;
    if (serverPeer) releaseServerPeer = () => platform.releasePeer(serverPeer);
    if (options.verifyServer !== false) {
      const verdict = await evaluatePolicies(
        [endpoint.sameUser()],
        serverPeer,
        'the app could not be identified',
      );
      if (!verdict.allowed) {
        transport.destroy();
        releaseServerPeer?.();
        throw createError(
          'ERR_SERVER_REJECTED',
          `The process at ${where} is not running as you (${verdict.reason}). Nothing was sent ` +
            "to it. Something may be squatting on the app's endpoint: stop it, or check the app.",
        );
      }
    }
  } else {
    const path = options.path ?? resolveEndpoint(options.app).path;
    where = path;
    let identify: ((socket: Socket) => PeerIdentity) | undefined;
    let platform: Platform | undefined;
    if (options.verifyServer !== false) {
      platform = options.platform ?? (await loadPlatform());
      identify = identifySameUserServer(platform, path, "the app's");
    }
    try {
      transport = await connectUnixSocket(path, {
        signal,
        ...(identify && platform
          ? { identify, release: (peer: PeerIdentity) => platform.releasePeer(peer) }
          : {}),
        ...(options.maxFrameBytes ? { maxFrameBytes: options.maxFrameBytes } : {}),
      });
    } catch (error) {
      throw withUnavailableHint(error, options.unavailableHint);
    }
    const serverPeer = transport.peer;
    if (platform && serverPeer) releaseServerPeer = () => platform.releasePeer(serverPeer);
  }
  if (options.serverPolicies?.length) {
    // Nothing has been sent yet: the transport writes only when the client says hello.
    const verdict = await evaluatePolicies(
      options.serverPolicies,
      transport.peer,
      'the server could not be identified',
    );
    if (!verdict.allowed) {
      transport.destroy();
      releaseServerPeer?.();
      throw createError(
        'ERR_SERVER_REJECTED',
        `The process at ${where} failed the check "${verdict.policy}" (${verdict.reason}). ` +
          'Nothing was sent to it. Check which program runs there.',
      );
    }
  }
  const client = new BridgekeeperClient(transport, options, releaseServerPeer);
  const helloSent = !signal.aborted;
  try {
    await client.hello(signal);
  } catch (error) {
    client.destroy();
    if (
      helloSent &&
      ownTimeout.aborted &&
      error instanceof BridgekeeperError &&
      error.code === 'ERR_TIMEOUT' &&
      error.cause === ownTimeout.reason
    ) {
      // connect()'s own limit ran out while the hello was unanswered: something accepted the
      // connection but never answered. Say where, and what to check. (The app closing the
      // handshake, or the caller's own signal, keep their own message.)
      throw createError(
        'ERR_TIMEOUT',
        `The process at ${where} accepted the connection but did not answer the handshake in ` +
          `time (limit ${timeoutMs} ms). Check that the app there is responsive and is the app you meant.`,
        { cause: error },
      );
    }
    throw error;
  }
  return client;
}

interface Pending {
  method: string;
  resolve(value: unknown): void;
  reject(error: Error): void;
}

class BridgekeeperClient implements Client {
  readonly #transport: Transport;
  readonly #options: ConnectOptions;
  readonly #pending = new Map<RequestId, Pending>();
  readonly #events = new Emitter<ClientEvents>((error) => debug('event listener threw: %O', error));
  #nextId = 1;
  #session: Client['session'] | undefined;
  #server: Client['server'] | undefined;
  #closing: ClosingNoticeParams | undefined;
  #closeError: Error | undefined;
  #closePromise: Promise<void> | undefined;

  constructor(transport: Transport, options: ConnectOptions, releaseServerPeer?: () => void) {
    this.#transport = transport;
    this.#options = options;
    transport.onMessage((message) => this.#receive(message));
    transport.onClose(({ error, local }) => {
      releaseServerPeer?.();
      this.#onTransportClose(error, local);
    });
  }

  get session(): Client['session'] {
    return this.#session!;
  }

  get server(): Client['server'] {
    return this.#server!;
  }

  get serverPeer(): PeerIdentity | undefined {
    return this.#transport.peer;
  }

  get closed(): boolean {
    return this.#transport.closed;
  }

  async hello(signal: AbortSignal): Promise<void> {
    const params: HelloParams = {
      protocol: { min: PROTOCOL_VERSION.min, max: PROTOCOL_VERSION.max },
      client: { name: this.#options.name ?? 'bridgekeeper-client' },
    };
    if (this.#options.version) params.client.version = this.#options.version;
    if (this.#options.reason) params.reason = this.#options.reason;
    const result = (await this.#call(
      METHODS.hello,
      params,
      signal,
      'The handshake',
    )) as HelloResult;
    if (
      typeof result !== 'object' ||
      result === null ||
      typeof result.protocol !== 'number' ||
      result.protocol < PROTOCOL_VERSION.min ||
      result.protocol > PROTOCOL_VERSION.max ||
      typeof result.session?.id !== 'string' ||
      (result.session.scope !== 'terminal' && result.session.scope !== 'process') ||
      typeof result.server?.name !== 'string'
    ) {
      throw createError(
        'ERR_PROTOCOL',
        'The app answered the handshake with something this client does not understand.',
      );
    }
    this.#session = { id: result.session.id, scope: result.session.scope };
    this.#server = {
      name: result.server.name,
      version: String(result.server.version ?? ''),
      protocol: result.protocol,
    };
    debug(
      'connected to %s %s, session scope %s',
      this.#server.name,
      this.#server.version,
      this.#session.scope,
    );
  }

  request<R = unknown>(method: string, params?: unknown, options: RequestOptions = {}): Promise<R> {
    const timeoutMs = options.timeoutMs ?? DEFAULT_REQUEST_TIMEOUT_MS;
    return this.#call(
      method,
      params,
      options.signal,
      `The request "${method}"`,
      timeoutMs,
    ) as Promise<R>;
  }

  /**
   * Sends one request. The time limit is a plain timer rather than `AbortSignal.timeout` +
   * `AbortSignal.any`, which cost ~10 µs per request on the hot path (measured by the rtt bench).
   */
  #call(
    method: string,
    params: unknown,
    signal: AbortSignal | undefined,
    what: string,
    timeoutMs = 0,
  ): Promise<unknown> {
    if (this.#transport.closed || this.#closePromise) {
      return Promise.reject(this.#closeError ?? createError('ERR_CLOSED', 'The client is closed.'));
    }
    if (signal?.aborted) return Promise.reject(abortError(signal, what));
    if (!isJsonParams(params)) {
      // Sent as is, it would be a protocol error that closes the connection for every request.
      return Promise.reject(
        createError(
          'ERR_INVALID_ARGUMENT',
          `${what} needs params that are an object or an array (JSON-RPC), not ${params === null ? 'null' : typeof params}; wrap the value, e.g. { value: ... }.`,
        ),
      );
    }
    const id = this.#nextId++;
    return new Promise<unknown>((resolve, reject) => {
      let onAbort: (() => void) | undefined;
      let timer: NodeJS.Timeout | undefined;
      const settle = () => {
        this.#pending.delete(id);
        if (onAbort) signal?.removeEventListener('abort', onAbort);
        if (timer) clearTimeout(timer);
      };
      this.#pending.set(id, {
        method,
        resolve: (value) => {
          settle();
          resolve(value);
        },
        reject: (error) => {
          settle();
          reject(error);
        },
      });
      const giveUp = (error: BridgekeeperError) => {
        const pending = this.#pending.get(id);
        if (!pending) return;
        // Tell the app, so it stops work and takes its prompt down if nobody else waits.
        this.#trySend(notification(METHODS.cancel, { id }));
        pending.reject(error);
      };
      if (signal) {
        onAbort = () => giveUp(abortError(signal, what));
        signal.addEventListener('abort', onAbort, { once: true });
      }
      if (timeoutMs > 0 && Number.isFinite(timeoutMs)) {
        timer = setTimeout(
          () => giveUp(createError('ERR_TIMEOUT', `${what} timed out after ${timeoutMs} ms.`)),
          timeoutMs,
        );
      }
      try {
        this.#transport.send(requestMessage(id, method, params));
      } catch (error) {
        this.#pending.get(id)?.reject(
          error instanceof BridgekeeperError
            ? error
            : createError('ERR_APP_UNAVAILABLE', 'The request could not be sent to the app.', {
                cause: error,
              }),
        );
      }
    });
  }

  #trySend(message: Message): void {
    try {
      if (!this.#transport.closed) this.#transport.send(message);
    } catch {
      // The connection is going; the close handler rejects what is pending.
    }
  }

  #receive(message: Message): void {
    const incoming = classifyMessage(message);
    if (incoming.kind === 'response') {
      const { id } = incoming.message;
      const pending = id === null ? undefined : this.#pending.get(id);
      if (!pending) {
        debug('response for unknown request id %o', id);
        return;
      }
      if ('error' in incoming.message)
        pending.reject(fromWireError(incoming.message.error, pending.method));
      else pending.resolve(incoming.message.result);
      return;
    }
    if (incoming.kind === 'notification') {
      const { method, params } = incoming.message;
      if (method === METHODS.prompt) {
        const notice = params as PromptNoticeParams;
        const pending = this.#pending.get(notice?.requestId);
        if (!pending || typeof notice.account?.displayName !== 'string') return;
        this.#events.emit('prompt', {
          method: pending.method,
          account: { id: String(notice.account.id), displayName: notice.account.displayName },
          backend: String(notice.backend),
        });
      } else if (method === METHODS.queued) {
        const notice = params as QueuedNoticeParams;
        const pending = this.#pending.get(notice?.requestId);
        if (!pending || typeof notice.position !== 'number') return;
        this.#events.emit('queued', { method: pending.method, position: notice.position });
      } else if (method === METHODS.closing) {
        const notice = params as Partial<ClosingNoticeParams>;
        this.#closing = {
          reason: String(notice?.reason ?? 'unknown'),
          message: String(notice?.message ?? 'The app closed the connection.'),
          ...(typeof notice?.code === 'string' ? { code: notice.code } : {}),
        };
        this.#events.emit('closing', this.#closing);
      }
      return;
    }
    // Requests from the server, or garbage: this protocol has none; drop the connection.
    debug('unexpected message from the app: %s', incoming.kind);
    this.destroy(
      createError('ERR_PROTOCOL', 'The app sent a message this client does not understand.'),
    );
  }

  #onTransportClose(error: Error | undefined, local: boolean): void {
    let reason: Error;
    if (this.#closeError) reason = this.#closeError;
    else if (this.#closing?.code === 'ERR_CONNECTION_LIMIT') {
      reason = createError('ERR_CONNECTION_LIMIT', this.#closing.message);
    } else if (
      this.#closing?.code !== undefined &&
      this.#closing.code !== 'ERR_APP_UNAVAILABLE' &&
      isErrorCode(this.#closing.code)
    ) {
      reason = createError(
        this.#closing.code,
        `The app closed the connection: ${this.#closing.message}`,
      );
    } else if (local) {
      reason = createError('ERR_CLOSED', 'The client was closed.');
    } else if (error instanceof BridgekeeperError && error.code !== 'ERR_APP_UNAVAILABLE') {
      reason = error;
    } else {
      const appName = this.#server?.name ?? this.#options.app;
      reason = createError(
        'ERR_APP_UNAVAILABLE',
        this.#closing
          ? `${appName} closed the connection: ${this.#closing.message}`
          : `The connection to ${appName} was lost (the app quit or crashed). Start it again, then retry.`,
        error ? { cause: error } : {},
      );
    }
    this.#closeError ??= reason;
    for (const pending of [...this.#pending.values()]) pending.reject(reason);
    this.#events.emit('close', error ? { error } : {});
  }

  close(): Promise<void> {
    this.#closePromise ??= (async () => {
      if (this.#pending.size > 0) {
        await Promise.allSettled(
          [...this.#pending.values()].map(
            (pending) =>
              new Promise<void>((resolve) => {
                const { resolve: done, reject: failed } = pending;
                pending.resolve = (value) => {
                  done(value);
                  resolve();
                };
                pending.reject = (error) => {
                  failed(error);
                  resolve();
                };
              }),
          ),
        );
      }
      this.#closeError ??= createError('ERR_CLOSED', 'The client was closed.');
      await this.#transport.close();
    })();
    return this.#closePromise;
  }

  destroy(error?: Error): void {
    this.#closeError ??= error ?? createError('ERR_CLOSED', 'The client was destroyed.');
    this.#closePromise ??= Promise.resolve();
    this.#transport.destroy(error);
  }

  on<E extends keyof ClientEvents>(
    event: E,
    listener: (payload: ClientEvents[E]) => void,
  ): Disposable {
    return this.#events.on(event, listener);
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}
