/**
 * The app side: accept connections, check who is calling, place each connection in a session,
 * ask the person before a session may use an account, then run the app's handler.
 *
 * @module
 */

import {
  AuthorizationError,
  BridgekeeperError,
  createError,
  HandlerError,
  throwIfAborted,
} from './errors.js';
import type { Platform } from './platform/platform.js';
import { loadPlatform } from './platform/platform.js';
import { evaluatePolicies, type PeerPolicy, sameUser } from './policy/peer-policy.js';
import type { AccountRef, ClientClaims, PromptBackend } from './prompt/prompt-backend.js';
import {
  type ClosingNoticeParams,
  classifyMessage,
  errorResponse,
  type HelloParams,
  type HelloResult,
  METHODS,
  notification,
  PROTOCOL_VERSION,
  RESERVED_PREFIX,
  type RequestId,
  RPC_ERROR,
  type RpcNotification,
  type RpcRequest,
  resultResponse,
  toWireError,
} from './protocol/messages.js';
import { Authorizer, type AuthorizerOptions } from './session/authorizer.js';
import { type Clock, systemClock } from './session/clock.js';
import type { SessionCredential, SessionCredentialProvider } from './session/credentials.js';
import { perProcessCredentials } from './session/peer-credentials.js';
import { prepareEndpointDirectory, resolveEndpoint } from './transport/endpoint.js';
import { DEFAULT_MAX_FRAME_BYTES } from './transport/framing.js';
import type {
  Disposable,
  Message,
  PeerIdentity,
  Transport,
  TransportListener,
} from './transport/transport.js';
import { identifySocketWith, listenUnixSocket } from './transport/unix-socket.js';
import { Emitter } from './util/emitter.js';
import { LazyAbortController } from './util/lazy-abort.js';
import { createLog } from './util/log.js';

const debug = createLog('bridgekeeper:server');

const MEMORY_CREDENTIALS = perProcessCredentials();

/** Options for {@link createServer}. */
export interface ServerOptions {
  /** The app's name: names its endpoint (`$XDG_RUNTIME_DIR/<app>/agent.sock`) and is sent in the handshake. */
  app: string;
  /** The app's version, sent in the handshake. */
  version?: string;
  /** How the person is asked. */
  prompt: PromptBackend;
  /** Idle time after which a grant lapses. Default 10 minutes. */
  idleTimeoutMs?: number;
  /** Hard limit on a grant's life, however busy. Default 12 hours. */
  maxLifetimeMs?: number;
  /** How long a session is refused an account, without a prompt, after the person denied it. Default 5 s. */
  denialCooldownMs?: number;
  /** Start locked (every request prompts, and a successful prompt unlocks). Default false. */
  locked?: boolean;
  /** Called when a prompt succeeds while the app is locked, before the grant is created; throw to refuse. */
  unlock?: AuthorizerOptions['unlock'];
  /**
   * Policies every peer must pass before a byte is read. The same-user policy always runs
   * first unless {@link ServerOptions.allowOtherUsers} is set.
   */
  peerPolicies?: readonly PeerPolicy[];
  /** Admit processes of other users (only the explicit `peerPolicies` then apply). Default false. */
  allowOtherUsers?: boolean;
  /** Derives session credentials. Default: the platform's (terminal sessions on Linux), or per-process for in-memory transports. */
  credentials?: SessionCredentialProvider;
  /** The OS services to use. Default: the module for this OS, loaded on `listen()`. */
  platform?: Platform;
  /** Time for a new connection to complete its `hello`. Default 5 s. */
  handshakeTimeoutMs?: number;
  /** Connections served at once; more are refused with `ERR_CONNECTION_LIMIT`. Default 1024. */
  maxConnections?: number;
  /** Requests one connection may have in flight at once. Default 256. */
  maxRequestsPerConnection?: number;
  /** Largest frame accepted, in bytes. Default 1 MiB. */
  maxFrameBytes?: number;
  /**
   * How long `close()` lets handlers already running finish before it destroys what is left.
   * Default 10 s. Prompts still waiting for the person are cancelled at once.
   */
  closeTimeoutMs?: number;
  /** Time source (tests use the fake clock from `bridgekeeper/testing`). */
  clock?: Clock;
}

/** Options for one method registered with {@link Server.handle}. */
export interface MethodOptions<P> {
  /**
   * Validates and converts the raw params; throw to answer "invalid params" (JSON-RPC -32602).
   * Without it the handler gets the raw JSON value.
   */
  params?: (raw: unknown) => P;
  /**
   * The account this call needs. When given, the server authorizes the connection's session for
   * that account (prompting the person if needed) before the handler runs.
   *
   * Resolve it from the app's own records — look the id up and return `{ id, displayName }` —
   * and throw a {@link HandlerError} for an unknown account. The display name is shown in the
   * prompt as a fact, so it must never be text the client chose. Returning a plain string uses
   * it as both id and display name; only do that for ids the app itself defined.
   * Ids are at most 256 characters and display names at most 200.
   */
  account?: (
    params: P,
    context: ConnectionInfo,
  ) => AccountRef | string | Promise<AccountRef | string>;
}

/** What the server knows about a connection. */
export interface ConnectionInfo {
  /** The peer as the OS reported it. */
  readonly peer: PeerIdentity | undefined;
  /** The session the server placed the connection in. */
  readonly session: SessionCredential;
  /** What the client said about itself in its hello (unverified). */
  readonly claims: ClientClaims;
}

/** Passed to every handler. */
export interface RequestContext extends ConnectionInfo {
  /** The JSON-RPC id of the request. */
  readonly requestId: RequestId;
  /** The account this request was authorized for, when the method names one. */
  readonly account: AccountRef | undefined;
  /** Fires when the client cancels, disconnects, or the server is destroyed. */
  readonly signal: AbortSignal;
}

/** A method handler. Its return value (JSON) is the result; a thrown {@link HandlerError} is sent to the client. */
export type Handler<P, R> = (params: P, context: RequestContext) => R | Promise<R>;

/** Events of a {@link Server}. */
export interface ServerEvents {
  /** A connection completed its handshake. */
  connection: { peer: PeerIdentity | undefined; session: SessionCredential; claims: ClientClaims };
  /** A peer was refused before any of its bytes were read (or could not be identified). */
  'peer-rejected': { peer: PeerIdentity | undefined; policy: string; reason: string; code: string };
  /** A connection ended. */
  disconnect: {
    peer: PeerIdentity | undefined;
    session: SessionCredential | undefined;
    error?: Error;
  };
  /**
   * Something went wrong that is not any single client's fault: a handler crash (`context`
   * `'handler'`), a result that could not be sent, or the endpoint lost while running
   * (`'endpoint'`, code `ERR_ENDPOINT_LOST`: the socket file was removed or replaced; restart
   * listening to publish a new one).
   */
  error: { error: unknown; context: string };
}

/** Options for {@link Server.listen}. */
export interface ListenOptions {
  /** Socket path; default from the app name (see `resolveEndpoint`). */
  path?: string;
  /** Serve this listener instead of a Unix socket (the in-memory listener, a named pipe, …). */
  listener?: TransportListener;
  signal?: AbortSignal;
}

/** The app's server. Create with {@link createServer}. */
export interface Server {
  /**
   * Registers a method. Returns a disposable that unregisters it.
   *
   * @throws `ERR_INVALID_ARGUMENT` for a reserved (`bridgekeeper.*`) or already registered name.
   */
  handle<P = unknown, R = unknown>(
    method: string,
    options: MethodOptions<P>,
    handler: Handler<P, R>,
  ): Disposable;
  handle<R = unknown>(method: string, handler: Handler<unknown, R>): Disposable;
  /**
   * Starts accepting connections; resolves with the address clients use.
   *
   * @throws `ERR_ALREADY_RUNNING`, `ERR_UNSAFE_ENDPOINT`, `ERR_ENDPOINT_PATH_TOO_LONG`, `ERR_UNSUPPORTED_PLATFORM`, `ERR_CLOSED`.
   */
  listen(options?: ListenOptions): Promise<string>;
  /** Serves one already-connected transport (for embedding; `listen` does this for each connection). */
  accept(transport: Transport): void;
  /** Grants, lock state and prompts. */
  readonly authorizer: Authorizer;
  /** Revokes every grant; the next request of every session prompts again (and unlocks on success). */
  lock(): void;
  /** Marks the app unlocked (it unlocked by its own means). */
  unlock(): void;
  /** Subscribes to server events. */
  on<E extends keyof ServerEvents>(
    event: E,
    listener: (payload: ServerEvents[E]) => void,
  ): Disposable;
  /** Number of open connections. */
  readonly connectionCount: number;
  /** Stops accepting, lets requests in flight finish, tells clients, closes. Idempotent. */
  close(): Promise<void>;
  /** Closes everything at once; requests in flight are aborted. Idempotent. */
  destroy(error?: Error): void;
  [Symbol.asyncDispose](): Promise<void>;
}

interface MethodEntry {
  // biome-ignore lint/suspicious/noExplicitAny: handlers of any params type live in one table.
  options: MethodOptions<any>;
  // biome-ignore lint/suspicious/noExplicitAny: see above.
  handler: Handler<any, unknown>;
}

function accountRef(value: AccountRef | string): AccountRef {
  const account = typeof value === 'string' ? { id: value, displayName: value } : value;
  if (
    typeof account !== 'object' ||
    account === null ||
    typeof account.id !== 'string' ||
    typeof account.displayName !== 'string' ||
    account.id.length === 0 ||
    account.id.length > 256 ||
    account.displayName.length === 0 ||
    account.displayName.length > 200
  ) {
    // An app bug; the prompt must not show something malformed, so nothing is authorized.
    throw createError(
      'ERR_INTERNAL',
      "The method's account() returned neither an id (1–256 characters) nor { id, displayName } (display name 1–200 characters).",
    );
  }
  return { id: account.id, displayName: account.displayName };
}

/**
 * Creates the app's server.
 *
 * @example
 * ```ts
 * import { createServer, HandlerError } from 'bridgekeeper';
 * import { ScriptedPromptBackend } from 'bridgekeeper/testing';
 *
 * const server = createServer({ app: 'secrets-agent', prompt: new ScriptedPromptBackend({ outcomes: ['granted'] }) });
 * const accounts = new Map([['work', { id: 'work', displayName: 'Acme Corp (work)' }]]);
 * server.handle(
 *   'secrets.read',
 *   {
 *     account: (params: { account: string }) => {
 *       const account = accounts.get(params.account);
 *       if (!account) throw new HandlerError('ACCOUNT_NOT_FOUND', `No account "${params.account}".`);
 *       return account;
 *     },
 *   },
 *   async () => ({ value: 's3cret' }),
 * );
 * await server.listen();
 * ```
 */
export function createServer(options: ServerOptions): Server {
  return new BridgekeeperServer(options);
}

class BridgekeeperServer implements Server {
  readonly authorizer: Authorizer;
  readonly #options: ServerOptions;
  readonly #methods = new Map<string, MethodEntry>();
  readonly #events = new Emitter<ServerEvents>((error) => debug('event listener threw: %O', error));
  readonly #connections = new Set<Connection>();
  /** Refused or failed connections whose notice is being flushed (each closes within 2 s). */
  readonly #departing = new Set<Transport>();
  readonly #listeners: TransportListener[] = [];
  readonly #policies: readonly PeerPolicy[];
  #platform: Platform | undefined;
  #credentials: SessionCredentialProvider | undefined;
  #closing = false;
  #closed: Promise<void> | undefined;

  constructor(options: ServerOptions) {
    if (!options || typeof options.app !== 'string' || options.app.length === 0) {
      throw createError('ERR_INVALID_ARGUMENT', 'createServer needs an `app` name.');
    }
    if (!options.prompt || typeof options.prompt.prompt !== 'function') {
      throw createError(
        'ERR_INVALID_ARGUMENT',
        'createServer needs a `prompt` backend (for tests: ScriptedPromptBackend from bridgekeeper/testing).',
      );
    }
    this.#options = options;
    this.#platform = options.platform;
    this.#credentials = options.credentials;
    // Same user: by uid, or by the platform's own rule where it has no uids (Windows: SIDs),
    // decided once the platform is known.
    let sameUserPolicy: PeerPolicy | undefined;
    const defaultSameUser: PeerPolicy = {
      name: 'same-user',
      check: (peer) => {
        sameUserPolicy ??= this.#platform?.defaultEndpoint?.sameUser() ?? sameUser();
        return sameUserPolicy.check(peer);
      },
    };
    this.#policies = options.allowOtherUsers
      ? [...(options.peerPolicies ?? [])]
      : [defaultSameUser, ...(options.peerPolicies ?? [])];
    const authorizerOptions: AuthorizerOptions = { prompt: options.prompt };
    if (options.clock) authorizerOptions.clock = options.clock;
    if (options.idleTimeoutMs !== undefined)
      authorizerOptions.idleTimeoutMs = options.idleTimeoutMs;
    if (options.maxLifetimeMs !== undefined)
      authorizerOptions.maxLifetimeMs = options.maxLifetimeMs;
    if (options.denialCooldownMs !== undefined) {
      authorizerOptions.denialCooldownMs = options.denialCooldownMs;
    }
    if (options.locked !== undefined) authorizerOptions.locked = options.locked;
    if (options.unlock) authorizerOptions.unlock = options.unlock;
    this.authorizer = new Authorizer(authorizerOptions);
  }

  get connectionCount(): number {
    return this.#connections.size;
  }

  get appName(): string {
    return this.#options.app;
  }

  get version(): string {
    return this.#options.version ?? '0.0.0';
  }

  get maxFrameBytes(): number {
    return this.#options.maxFrameBytes ?? DEFAULT_MAX_FRAME_BYTES;
  }

  get handshakeTimeoutMs(): number {
    return this.#options.handshakeTimeoutMs ?? 5_000;
  }

  get maxRequestsPerConnection(): number {
    return this.#options.maxRequestsPerConnection ?? 256;
  }

  get platform(): Platform | undefined {
    return this.#platform;
  }

  get closing(): boolean {
    return this.#closing;
  }

  /**
   * The credential provider for a peer: the app's own if it gave one; per-process for
   * in-memory peers; otherwise the platform's, which is loaded if it was not yet.
   *
   * @throws `ERR_UNSUPPORTED_PLATFORM` when the peer came from the OS and no platform module exists.
   */
  async credentialsFor(peer: PeerIdentity): Promise<SessionCredentialProvider> {
    if (this.#credentials) return this.#credentials;
    if (peer.source === 'memory') return MEMORY_CREDENTIALS;
    return (await this.ensurePlatform()).credentials;
  }

  /** Loads the OS module once; needed for any peer the OS identified (to re-check and release it). */
  async ensurePlatform(): Promise<Platform> {
    this.#platform ??= await loadPlatform();
    return this.#platform;
  }

  get events(): Emitter<ServerEvents> {
    return this.#events;
  }

  get authorizerClock(): Clock {
    return this.#options.clock ?? systemClock;
  }

  get promptBackendId(): string {
    return this.#options.prompt.id;
  }

  method(name: string): MethodEntry | undefined {
    return this.#methods.get(name);
  }

  handle(
    method: string,
    optionsOrHandler: MethodOptions<unknown> | Handler<unknown, unknown>,
    maybeHandler?: Handler<unknown, unknown>,
  ): Disposable {
    const [options, handler] =
      typeof optionsOrHandler === 'function'
        ? [{}, optionsOrHandler]
        : [optionsOrHandler ?? {}, maybeHandler];
    if (typeof method !== 'string' || method.length === 0 || method.length > 256) {
      throw createError('ERR_INVALID_ARGUMENT', 'A method name must be 1–256 characters.');
    }
    if (method.startsWith(RESERVED_PREFIX)) {
      throw createError(
        'ERR_INVALID_ARGUMENT',
        `Method names starting with "${RESERVED_PREFIX}" are reserved for the protocol.`,
      );
    }
    if (typeof handler !== 'function') {
      throw createError('ERR_INVALID_ARGUMENT', `handle("${method}") needs a handler function.`);
    }
    if (this.#methods.has(method)) {
      throw createError('ERR_INVALID_ARGUMENT', `A handler for "${method}" is already registered.`);
    }
    const entry: MethodEntry = { options, handler };
    this.#methods.set(method, entry);
    return {
      dispose: () => {
        if (this.#methods.get(method) === entry) this.#methods.delete(method);
      },
      [Symbol.dispose]() {
        this.dispose();
      },
    };
  }

  async listen(options: ListenOptions = {}): Promise<string> {
    throwIfAborted(options.signal, 'listen()');
    if (this.#closing) throw createError('ERR_CLOSED', 'The server is closed.');
    let listener: TransportListener;
    if (!options.listener) this.#platform ??= await loadPlatform();
    const defaultEndpoint = options.path ? undefined : this.#platform?.defaultEndpoint;
    if (options.listener) {
      listener = options.listener;
    } else if (defaultEndpoint) {
      // The OS's own endpoint (Windows: a named pipe), identifying peers through the OS.
      listener = await defaultEndpoint.listen(this.#options.app, {
        maxFrameBytes: this.maxFrameBytes,
        ...(options.signal ? { signal: options.signal } : {}),
      });
    } else {
      const platform = this.#platform!;
      let path = options.path;
      if (!path) {
        const endpoint = resolveEndpoint(this.#options.app);
        await prepareEndpointDirectory(endpoint.directory);
        path = endpoint.path;
      }
      const listenOptions: Parameters<typeof listenUnixSocket>[0] = {
        path,
        maxFrameBytes: this.maxFrameBytes,
        identify: identifySocketWith(platform, 'ERR_PEER_UNKNOWN'),
        release: (peer: PeerIdentity) => platform.releasePeer(peer),
        name: this.#options.app,
      };
      if (options.signal) listenOptions.signal = options.signal;
      listener = await listenUnixSocket(listenOptions);
    }
    if (this.#closing) {
      await listener.close();
      throw createError('ERR_CLOSED', 'The server was closed while it started listening.');
    }
    this.#listeners.push(listener);
    listener.onError?.((error) => {
      // An app that does not listen for errors would otherwise go unreachable in silence.
      if (!this.#events.has('error')) process.emitWarning(error.message, 'BridgekeeperWarning');
      this.#events.emit('error', { error, context: 'endpoint' });
    });
    listener.onConnection((transport) => this.accept(transport));
    debug('listening at %s', listener.address);
    return listener.address;
  }

  get #maxConnections(): number {
    return this.#options.maxConnections ?? 1024;
  }

  accept(transport: Transport): void {
    if (this.#closing) {
      this.dismiss(transport, {
        reason: 'shutdown',
        code: 'ERR_APP_UNAVAILABLE',
        message: 'The app is shutting down.',
      });
      if (transport.peer) this.#platform?.releasePeer(transport.peer);
      return;
    }
    const limit = this.#maxConnections;
    if (this.#connections.size >= limit) {
      debug('refusing connection: %d connections open (limit %d)', this.#connections.size, limit);
      this.dismiss(transport, {
        reason: 'connection-limit',
        code: 'ERR_CONNECTION_LIMIT',
        message: `The app is serving its maximum of ${limit} connections. Close some clients and try again.`,
      });
      if (transport.peer) this.#platform?.releasePeer(transport.peer);
      return;
    }
    const connection = new Connection(this, transport);
    this.#connections.add(connection);
    transport.onClose(({ error }) => {
      this.#connections.delete(connection);
      connection.closed(error);
    });
    connection.admit(this.#policies).catch((error: unknown) => {
      // admit() handles its own failures; anything reaching here is a bug: fail closed.
      this.#events.emit('error', { error, context: 'admitting a connection' });
      transport.destroy();
    });
  }

  /**
   * Tells a connection why it is closed and closes it, no longer counting it as served: a refused
   * peer or a broken client must not hold a slot of `maxConnections` while its notice flushes
   * (up to 2 s), or a refused process could lock everyone else out. The transports departing are
   * bounded too (file descriptors): past `maxConnections` of them, the oldest, which has had the
   * longest to read its notice, is destroyed.
   */
  dismiss(transport: Transport, notice: ClosingNoticeParams, connection?: Connection): void {
    if (connection) this.#connections.delete(connection);
    if (transport.closed) return;
    if (this.#departing.size >= this.#maxConnections) {
      const oldest = this.#departing.values().next().value;
      if (oldest) {
        this.#departing.delete(oldest);
        oldest.destroy();
      }
    }
    sendClosing(transport, notice);
    this.#departing.add(transport);
    transport.onClose(() => this.#departing.delete(transport));
    void transport.close();
  }

  lock(): void {
    this.authorizer.lock();
  }

  unlock(): void {
    this.authorizer.unlock();
  }

  on<E extends keyof ServerEvents>(
    event: E,
    listener: (payload: ServerEvents[E]) => void,
  ): Disposable {
    return this.#events.on(event, listener);
  }

  close(): Promise<void> {
    this.#closed ??= (async () => {
      this.#closing = true;
      // Nobody is asked anything more: prompts waiting or on screen are cancelled now, and the
      // requests behind them are answered "the app is shutting down".
      this.authorizer.close();
      await Promise.allSettled(this.#listeners.map((listener) => listener.close()));
      const drained = Promise.allSettled(
        [...this.#connections].map((connection) => connection.shutdown()),
      );
      const timeoutMs = this.#options.closeTimeoutMs ?? 10_000;
      let timer: NodeJS.Timeout | undefined;
      const expired = new Promise<'timeout'>((resolve) => {
        timer = setTimeout(() => resolve('timeout'), timeoutMs);
      });
      const outcome = await Promise.race([drained, expired]);
      clearTimeout(timer);
      if (outcome === 'timeout') {
        debug('close: handlers still running after %d ms; destroying', timeoutMs);
        for (const connection of this.#connections) {
          connection.destroy(createError('ERR_APP_UNAVAILABLE', 'The app shut down.'));
        }
      }
      debug('closed');
    })();
    return this.#closed;
  }

  destroy(error?: Error): void {
    this.#closing = true;
    for (const listener of this.#listeners) void listener.close();
    for (const connection of this.#connections) connection.destroy(error);
    for (const transport of this.#departing) transport.destroy();
    this.authorizer.close();
    this.#closed ??= Promise.resolve();
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}

function sendClosing(transport: Transport, params: ClosingNoticeParams): void {
  try {
    if (!transport.closed) transport.send(notification(METHODS.closing, params));
  } catch {
    // Closing anyway; a peer that cannot take the notice learns from the close itself.
  }
}

/** `draining`: the server is closing gracefully; requests in flight finish, new ones are refused. */
type ConnectionState =
  | 'admitting'
  | 'awaiting-hello'
  | 'handshaking'
  | 'ready'
  | 'draining'
  | 'closing';

/** One client connection, from admission to close. */
class Connection {
  readonly #server: BridgekeeperServer;
  readonly #transport: Transport;
  readonly #inFlight = new Map<RequestId, LazyAbortController>();
  /** The peer failed a re-check: the connection closes after the failing request's response. */
  #peerChanged = false;
  readonly #backlog: Message[] = [];
  #state: ConnectionState = 'admitting';
  #session: SessionCredential | undefined;
  #sessionPromise: Promise<SessionCredential> | undefined;
  #claims: ClientClaims = {};
  #info: ConnectionInfo | undefined;
  #cancelHandshakeTimer: (() => void) | undefined;
  #drained: (() => void) | undefined;

  constructor(server: BridgekeeperServer, transport: Transport) {
    this.#server = server;
    this.#transport = transport;
  }

  get peer(): PeerIdentity | undefined {
    return this.#transport.peer;
  }

  async admit(policies: readonly PeerPolicy[]): Promise<void> {
    const peer = this.peer;
    if (peer && peer.source !== 'memory') {
      // An OS-identified peer must be re-checked before each authorized request and released
      // at the end; without the platform module neither can happen, so refuse it.
      try {
        await this.#server.ensurePlatform();
      } catch (error) {
        this.#server.events.emit('peer-rejected', {
          peer,
          policy: 'platform',
          reason: error instanceof Error ? error.message : String(error),
          code: 'ERR_PEER_UNKNOWN',
        });
        this.#transport.destroy();
        return;
      }
    }
    const verdict = await evaluatePolicies(
      policies,
      peer,
      'the transport reported no peer identity',
    );
    if (this.#transport.closed || this.#server.closing) {
      if (!this.#transport.closed) void this.#transport.close();
      return;
    }
    if (!verdict.allowed) {
      debug(
        'peer rejected by %s: %s (pid %s uid %s)',
        verdict.policy,
        verdict.reason,
        peer?.pid,
        peer?.uid,
      );
      this.#server.events.emit('peer-rejected', {
        peer,
        policy: verdict.policy,
        reason: verdict.reason,
        code: 'ERR_PEER_REJECTED',
      });
      // Nothing it sent was read before this verdict, and nothing of it is ever decoded; it is
      // told only that it was refused, not why. (Closing drains its bytes unread: a Unix socket
      // closed with unread data resets the peer, which could then lose this notice.)
      this.#server.dismiss(
        this.#transport,
        {
          reason: 'peer-rejected',
          code: 'ERR_PEER_REJECTED',
          message: 'The app refused this process. Its log says which policy refused it.',
        },
        this,
      );
      return;
    }
    // Derive the session while the client's hello is on its way.
    this.#sessionPromise = peer
      ? this.#server.credentialsFor(peer).then((provider) => provider.derive(peer))
      : Promise.reject(createError('ERR_PEER_UNKNOWN', 'The transport reported no peer identity.'));
    this.#sessionPromise.catch(() => {});
    this.#state = 'awaiting-hello';
    const timeout = this.#server.handshakeTimeoutMs;
    const clock = this.#server.authorizerClock;
    this.#cancelHandshakeTimer = clock.setTimer(() => {
      if (this.#state === 'awaiting-hello' || this.#state === 'handshaking') {
        this.#fail('handshake-timeout', 'ERR_TIMEOUT', `No hello within ${timeout} ms.`);
      }
    }, timeout);
    this.#transport.onMessage((message) => this.#receive(message));
  }

  closed(error: Error | undefined): void {
    this.#cancelHandshakeTimer?.();
    for (const controller of this.#inFlight.values()) {
      controller.abort(createError('ERR_ABORTED', 'The client disconnected.'));
    }
    const peer = this.peer;
    if (peer) this.#server.platform?.releasePeer(peer);
    if (this.#state !== 'admitting') {
      this.#server.events.emit('disconnect', {
        peer,
        session: this.#session,
        ...(error ? { error } : {}),
      });
    }
    this.#state = 'closing';
    this.#drained?.();
  }

  /** Graceful: refuse new requests, let in-flight ones finish, say goodbye, close. */
  async shutdown(): Promise<void> {
    if (this.#transport.closed) return;
    this.#state = this.#state === 'ready' ? 'draining' : 'closing';
    if (this.#inFlight.size > 0) {
      await new Promise<void>((resolve) => {
        this.#drained = resolve;
      });
    }
    this.#state = 'closing';
    sendClosing(this.#transport, {
      reason: 'shutdown',
      code: 'ERR_APP_UNAVAILABLE',
      message: 'The app is shutting down.',
    });
    await this.#transport.close();
  }

  destroy(error?: Error): void {
    for (const controller of this.#inFlight.values()) {
      controller.abort(error ?? createError('ERR_CLOSED', 'The server was destroyed.'));
    }
    this.#transport.destroy(error);
  }

  #fail(reason: string, code: string, message: string): void {
    debug('closing connection (pid %s): %s', this.peer?.pid, message);
    this.#state = 'closing';
    this.#server.dismiss(this.#transport, { reason, code, message }, this);
  }

  #receive(message: Message): void {
    if (this.#state === 'closing') return;
    if (this.#state === 'handshaking') {
      this.#backlog.push(message);
      if (this.#backlog.length > this.#server.maxRequestsPerConnection) {
        this.#fail(
          'protocol-error',
          'ERR_PROTOCOL',
          'Too many messages before the handshake finished.',
        );
      }
      return;
    }
    const incoming = classifyMessage(message);
    switch (incoming.kind) {
      case 'invalid':
        this.#fail('protocol-error', 'ERR_PROTOCOL', `Invalid message: ${incoming.reason}.`);
        return;
      case 'response':
        this.#fail('protocol-error', 'ERR_PROTOCOL', 'A client may not send responses.');
        return;
      case 'notification':
        this.#notification(incoming.message);
        return;
      case 'request':
        if (this.#state === 'awaiting-hello') {
          if (incoming.message.method !== METHODS.hello) {
            this.#fail(
              'protocol-error',
              'ERR_PROTOCOL',
              'The first request must be bridgekeeper.hello.',
            );
            return;
          }
          void this.#hello(incoming.message);
          return;
        }
        if (incoming.message.method === METHODS.hello) {
          this.#fail('protocol-error', 'ERR_PROTOCOL', 'bridgekeeper.hello may only be sent once.');
          return;
        }
        if (this.#state === 'draining') {
          this.#reply(
            incoming.message.id,
            undefined,
            createError(
              'ERR_APP_UNAVAILABLE',
              'The app is shutting down. Start it again, then retry.',
            ),
          );
          return;
        }
        void this.#request(incoming.message);
    }
  }

  #notification(message: RpcNotification): void {
    if (message.method !== METHODS.cancel) return;
    if (this.#state !== 'ready' && this.#state !== 'draining') return;
    const params = message.params as { id?: unknown } | undefined;
    const id = params?.id;
    if (typeof id !== 'string' && typeof id !== 'number') return;
    this.#inFlight.get(id)?.abort(createError('ERR_ABORTED', 'The client cancelled the request.'));
  }

  async #hello(message: RpcRequest): Promise<void> {
    this.#state = 'handshaking';
    const params = message.params as Partial<HelloParams> | undefined;
    const range = params?.protocol;
    const client = params?.client;
    if (
      typeof range !== 'object' ||
      range === null ||
      !Number.isSafeInteger(range.min) ||
      !Number.isSafeInteger(range.max) ||
      typeof client !== 'object' ||
      client === null ||
      typeof client.name !== 'string' ||
      (client.version !== undefined && typeof client.version !== 'string') ||
      (params?.reason !== undefined && typeof params.reason !== 'string')
    ) {
      this.#transport.send(
        errorResponse(message.id, {
          code: RPC_ERROR.invalidParams,
          message: 'hello needs { protocol: { min, max }, client: { name, version? }, reason? }.',
          data: { code: 'ERR_PROTOCOL' },
        }),
      );
      this.#fail('protocol-error', 'ERR_PROTOCOL', 'Malformed hello.');
      return;
    }
    const chosen = Math.min(range.max, PROTOCOL_VERSION.max);
    if (chosen < range.min || chosen < PROTOCOL_VERSION.min) {
      this.#transport.send(
        errorResponse(message.id, {
          code: RPC_ERROR.bridgekeeper,
          message: `No common protocol version: the client speaks ${range.min}–${range.max}, the app ${PROTOCOL_VERSION.min}–${PROTOCOL_VERSION.max}. Update the older of the two.`,
          data: { code: 'ERR_UNSUPPORTED_VERSION' },
        }),
      );
      this.#fail('protocol-error', 'ERR_UNSUPPORTED_VERSION', 'No common protocol version.');
      return;
    }
    const claims: { name?: string; version?: string; reason?: string } = {
      name: client.name.slice(0, 200),
    };
    if (client.version !== undefined) claims.version = client.version.slice(0, 100);
    if (typeof params?.reason === 'string') claims.reason = params.reason.slice(0, 500);
    this.#claims = claims;
    let session: SessionCredential;
    try {
      session = await this.#sessionPromise!;
    } catch (error) {
      const code = error instanceof BridgekeeperError ? error.code : 'ERR_PEER_UNKNOWN';
      debug('cannot place peer %s in a session: %O', this.peer?.pid, error);
      this.#server.events.emit('peer-rejected', {
        peer: this.peer,
        policy: 'session',
        reason: error instanceof Error ? error.message : String(error),
        code,
      });
      if (this.#transport.closed) return;
      this.#transport.send(
        errorResponse(message.id, {
          code: RPC_ERROR.peer,
          message:
            'The app could not work out which session this process belongs to, so it refuses the connection. Try again; if it persists, see the app log.',
          data: { code: 'ERR_PEER_UNKNOWN' },
        }),
      );
      this.#fail('peer-unknown', 'ERR_PEER_UNKNOWN', 'Session could not be derived.');
      return;
    }
    if (this.#transport.closed || (this.#state as ConnectionState) === 'closing') return;
    this.#session = session;
    this.#info = { peer: this.peer, session, claims: this.#claims };
    this.#cancelHandshakeTimer?.();
    const result: HelloResult = {
      protocol: chosen,
      server: { name: this.#server.appName, version: this.#server.version },
      session: { id: session.id, scope: session.scope },
      limits: { maxFrameBytes: this.#server.maxFrameBytes },
    };
    this.#transport.send(resultResponse(message.id, result));
    this.#state = 'ready';
    this.#server.events.emit('connection', { peer: this.peer, session, claims: this.#claims });
    const backlog = this.#backlog.splice(0);
    for (const queued of backlog) this.#receive(queued);
  }

  async #request(message: RpcRequest): Promise<void> {
    const { id, method } = message;
    if (this.#inFlight.has(id)) {
      // Answering would give the id two responses; a client that reuses ids is broken.
      this.#fail(
        'protocol-error',
        'ERR_PROTOCOL',
        `Request id ${JSON.stringify(id)} is already in flight.`,
      );
      return;
    }
    if (this.#inFlight.size >= this.#server.maxRequestsPerConnection) {
      this.#reply(
        id,
        undefined,
        createError(
          'ERR_CONNECTION_LIMIT',
          `This connection already has ${this.#inFlight.size} requests in flight. Wait for some to finish.`,
        ),
      );
      return;
    }
    const entry = this.#server.method(method);
    if (!entry) {
      this.#send(
        errorResponse(id, {
          code: RPC_ERROR.methodNotFound,
          message: `The app has no method "${method}".`,
          data: { code: 'ERR_METHOD_NOT_FOUND' },
        }),
      );
      return;
    }
    const cancellation = new LazyAbortController();
    this.#inFlight.set(id, cancellation);
    try {
      const result = await this.#run(id, entry, message.params, cancellation);
      this.#reply(id, result);
    } catch (error) {
      this.#reply(id, undefined, error);
    } finally {
      this.#inFlight.delete(id);
      if (this.#inFlight.size === 0) this.#drained?.();
      if (this.#peerChanged) {
        this.#fail(
          'peer-changed',
          'ERR_PEER_CHANGED',
          'The peer process changed since it connected.',
        );
      }
    }
  }

  async #run(
    id: RequestId,
    entry: MethodEntry,
    raw: unknown,
    cancellation: LazyAbortController,
  ): Promise<unknown> {
    const info = this.#info!;
    let params: unknown = raw;
    if (entry.options.params) {
      try {
        params = entry.options.params(raw);
      } catch (error) {
        throw createError(
          'ERR_INVALID_PARAMS',
          error instanceof Error && error.message
            ? error.message
            : 'The params are not valid for this method.',
        );
      }
    }
    let account: AccountRef | undefined;
    if (entry.options.account) {
      account = accountRef(await entry.options.account(params, info));
      if (cancellation.aborted) throwIfAborted(cancellation.signal);
      // The process must still be the one that connected: before asking the person about it,
      // after they answered (it may have exec'd while the prompt was up), and before the
      // result leaves (it may have exec'd while the handler ran). BRIEF §4.4.
      await this.#verifyPeer();
      // With a live grant nothing waited in between, so the check above still holds.
      if (await this.#authorize(id, account, cancellation)) await this.#verifyPeer();
    }
    if (cancellation.aborted) throwIfAborted(cancellation.signal);
    const result = await entry.handler(params, {
      ...info,
      requestId: id,
      account,
      get signal() {
        return cancellation.signal;
      },
    });
    if (account) await this.#verifyPeer();
    return result;
  }

  async #verifyPeer(): Promise<void> {
    const peer = this.peer;
    const platform = this.#server.platform;
    if (!peer || peer.source === 'memory') return;
    try {
      if (!platform)
        throw createError('ERR_PEER_UNKNOWN', 'No platform module to re-check the peer with.');
      await platform.verifyPeer(peer);
    } catch (error) {
      // Nothing more of this connection runs; it closes once this request's error response is
      // out (#request), so the client learns which request was refused and why.
      this.#peerChanged = true;
      this.#state = 'closing';
      throw error instanceof BridgekeeperError
        ? error
        : createError(
            'ERR_PEER_CHANGED',
            'The calling process is no longer the one that connected.',
            {
              cause: error,
            },
          );
    }
  }

  /** Resolves true when it had to wait for the authorizer (a prompt, or another's prompt). */
  async #authorize(
    id: RequestId,
    account: AccountRef,
    cancellation: LazyAbortController,
  ): Promise<boolean> {
    const info = this.#info!;
    const peer = info.peer;
    const authorizer = this.#server.authorizer;
    if (authorizer.tryUse(info.session.id, account.id)) return false;
    const subject =
      peer?.pid === undefined
        ? undefined
        : {
            pid: peer.pid,
            ...(peer.startTime === undefined ? {} : { startTime: peer.startTime }),
            ...(peer.uid === undefined ? {} : { uid: peer.uid }),
          };
    await authorizer.authorize(
      { session: info.session, account, claims: info.claims, ...(subject ? { subject } : {}) },
      {
        signal: cancellation.signal,
        onPrompt: () =>
          this.#send(
            notification(METHODS.prompt, {
              requestId: id,
              account: { id: account.id, displayName: account.displayName },
              backend: this.#server.promptBackendId,
            }),
          ),
        onQueued: (position) =>
          this.#send(notification(METHODS.queued, { requestId: id, position })),
      },
    );
    return true;
  }

  #reply(id: RequestId, result: unknown, error?: unknown): void {
    if (this.#transport.closed) return;
    if (error === undefined) {
      try {
        this.#transport.send(resultResponse(id, result));
        return;
      } catch (sendError) {
        if (this.#transport.closed) return; // the client left, or stopped reading and was dropped
        // Too large for a frame, or not JSON: the app's bug, reported to the app, not the client.
        this.#server.events.emit('error', { error: sendError, context: 'sending a result' });
        error = createError(
          'ERR_INTERNAL',
          'The app could not send its result (too large or not JSON). Its log has the details.',
        );
      }
    }
    if (
      error instanceof BridgekeeperError &&
      error.code === 'ERR_CLOSED' &&
      (this.#server.closing || this.#state === 'draining')
    ) {
      error = createError(
        'ERR_APP_UNAVAILABLE',
        'The app is shutting down. Start it again, then retry.',
      );
    }
    if (!(error instanceof BridgekeeperError)) {
      debug('handler failed: %O', error);
      this.#server.events.emit('error', { error, context: 'handler' });
    }
    if (error instanceof AuthorizationError) debug('authorization refused: %s', error.code);
    this.#send(errorResponse(id, toWireError(error)));
  }

  #send(message: Message): void {
    if (this.#transport.closed) return;
    try {
      this.#transport.send(message);
    } catch (error) {
      debug('send failed: %O', error);
    }
  }
}
