/**
 * The macOS XPC transport: a client ({@link connectXpc}) and a listener ({@link listenXpc}) for a
 * launchd mach service, written against {@link XpcBindings} — a 1:1 typed view of libxpc
 * (`<xpc/connection.h>`) that the macOS platform module implements through FFI and tests
 * replace with a fake. This file loads no native code.
 *
 * **Nothing here has run on a Mac.** It is written from Apple's headers and documentation and
 * tested on Linux through a fake libxpc (`test/support/fake-xpc.ts`). What that fake models is
 * what this module assumes; the assumptions are listed below, each marked as documented by
 * Apple or not.
 *
 * ## The handshake: probe, then probe-ack
 *
 * libxpc checks a code-signing requirement (`xpc_connection_set_peer_code_signing_requirement`,
 * macOS 12+) on the messages a connection *receives*: a message from a peer that does not
 * satisfy it is not delivered — the handler gets `XPC_ERROR_PEER_CODE_SIGNING_REQUIREMENT`
 * instead, or (Apple documents the error for replies only) nothing at all. Both are handled: a
 * client then times out (`ERR_TIMEOUT`, naming a signature mismatch as a possible cause), and a
 * listener drops the peer after `probeTimeoutMs`, holding at most `maxPendingPeers` of them.
 * Sending proves nothing about the receiver,
 * so a client cannot know that the server is genuine until the server has said something. Hence:
 *
 * 1. the client creates its connection, installs the handler, sets its `requirement` (the one
 *    the server must satisfy) before resuming, resumes, and sends one `probe` — a dictionary
 *    with `bridgekeeper.probe = true` and nothing else;
 * 2. the listener sets its own `requirement` on each accepted peer connection before resuming
 *    it, waits for that peer's probe (anything else first, or nothing within `probeTimeoutMs`:
 *    the peer is cancelled, never surfaced), identifies it, and answers `probe-ack`;
 * 3. the client's libxpc delivers the ack only if the server satisfies the client's
 *    requirement, so the ack is the proof. Only then does {@link connectXpc} resolve. Until
 *    then nothing but the probe, which carries no data, has been sent to the server.
 *
 * The peer's identity (pid and effective uid from `xpc_connection_get_pid`/`_get_euid`, plus
 * whatever `identify(pid)` adds) is read in the same handler call that received the probe (on
 * the listener) or the ack (on the client), so libxpc's "sender of the last message" is that
 * peer. Identities are frozen; those of connections that had a `requirement` set are
 * remembered, by object, in a module-level WeakMap that {@link xpcPeerRequirement} reads — so a
 * policy can rely on "libxpc enforces exactly this requirement on every message from this
 * peer" for the very object this module made, and never for a copy.
 *
 * ## Dictionary keys
 *
 * Every message is an XPC dictionary carrying exactly one of {@link XPC_KEYS}:
 * `bridgekeeper.frame` (data: the UTF-8 JSON of one message), `bridgekeeper.probe` (bool true),
 * `bridgekeeper.probe-ack` (bool true). The binding reports any other dictionary, or any
 * object that is not a dictionary, as kind `unknown`, which is a protocol error at every stage.
 *
 * ## What libxpc guarantees, as Apple documents it (unverified here)
 *
 * - Messages on one connection arrive in the order they were sent (`xpc_connection_send_message`:
 *   "Messages are delivered in FIFO order"); the handler runs for one event at a time per
 *   connection, and `XPC_ERROR_CONNECTION_INVALID` is its last event, after `xpc_connection_cancel`
 *   or when the service cannot be found. After it this module never calls the bindings on that
 *   connection again.
 * - `XPC_ERROR_CONNECTION_INTERRUPTED` means the remote process exited. A client connection to a
 *   mach service stays usable after it, and the next message would make launchd start the
 *   service again: a new process that never answered our probe. So this module never sends on
 *   an interrupted connection: it closes the transport and cancels the connection.
 * - A peer connection handed to a listener must get a handler and be resumed even to refuse it
 *   (this module does handler, cancel, resume): releasing a suspended connection crashes.
 *
 * ## What is ASSUMED, and where Apple's documentation says otherwise
 *
 * - **`close()` flushes through a barrier.** Apple documents that after `xpc_connection_cancel`
 *   "any messages that have not yet been sent will be discarded", so `close()` sets
 *   `xpc_connection_send_barrier` and cancels inside it, once everything sent before has been
 *   sent; `destroy()` cancels at once. Should the barrier not run within 2 s (a peer that does
 *   not read), `close()` cancels anyway.
 * - **How the client learns that the server closed.** This module treats `invalid` on an
 *   established client connection as an orderly close by the server (no error) and
 *   `interrupted` as the server process dying (`ERR_APP_UNAVAILABLE`). Apple documents
 *   `interrupted` as "the remote service exited" and does not say what a client connection gets
 *   when the server only cancels its end; if it is `interrupted` (the connection stays usable
 *   for a relaunch), a server's orderly close reaches the client as `ERR_APP_UNAVAILABLE`.
 *   The fake models both (its `remoteCancel` option).
 * - A listener connection gets `invalid` when its service name is not in the launchd job's
 *   `MachServices` (or the process was not started by launchd for that job).
 * - Events reach JavaScript on the JS thread, in order per connection, and a connection keeps
 *   the process alive until its `invalid` (the binding's job).
 * - The pid is only a pid: Apple warns that it can be reused. Policies that need more than a
 *   pid should rely on {@link xpcPeerRequirement}, which libxpc enforces on every message.
 *
 * @module
 */

import {
  abortError,
  BridgekeeperError,
  createError,
  errorMessage,
  isErrorCode,
  throwIfAborted,
} from '../errors.js';
import { isCodeRequirementText } from '../util/code-requirement.js';
import { createLog } from '../util/log.js';
import { checkMaxFrameBytes, serializeMessage } from './framing.js';
import { isValidLaunchdLabel } from './launchd.js';
import {
  type CloseInfo,
  type Disposable,
  type Message,
  type PeerIdentity,
  type Transport,
  type TransportListener,
  toDisposable,
} from './transport.js';
import {
  ConnectionEvents,
  closedForSending,
  reportListenerError,
  TransportEvents,
} from './transport-events.js';

const debug = createLog('bridgekeeper:xpc');

// ---- the native surface ---------------------------------------------------------------------

/** An xpc_connection_t as the bindings hand it out (a pointer; fakes use any unique bigint). */
export type XpcConnection = bigint;

/** Which Bridgekeeper key an XPC message dictionary carries. */
export type XpcMessageKind = 'frame' | 'probe' | 'probe-ack';

export type XpcEvent =
  /** A dictionary arrived. `kind` from its key; 'unknown' when it has none of ours (or is not a
   *  dictionary). `payload`: the bytes of a 'frame' (copied out of the XPC object). */
  | {
      readonly type: 'message';
      readonly kind: XpcMessageKind | 'unknown';
      readonly payload?: Buffer;
      /** A frame over the handler's `maxFrameBytes`: its length. Its bytes were not copied. */
      readonly oversize?: number;
    }
  /** On a listener: a new peer connection (the bindings retained it for us). It MUST get a
   *  handler and be resumed exactly once, even to refuse it (handler, cancel, resume):
   *  libxpc crashes when a suspended connection is released. */
  | { readonly type: 'connection'; readonly connection: XpcConnection }
  /** XPC_ERROR_CONNECTION_INTERRUPTED / _INVALID / XPC_ERROR_TERMINATION_IMMINENT /
   *  XPC_ERROR_PEER_CODE_SIGNING_REQUIREMENT / anything else. 'invalid' is always the LAST event a
   *  connection gets (after cancel, when the service is not registered, or the peer is gone);
   *  after it the bindings dispose the handler block and release the connection. */
  | {
      readonly type: 'error';
      readonly error:
        | 'interrupted'
        | 'invalid'
        | 'termination-imminent'
        | 'peer-requirement'
        | 'other';
    };

export interface XpcBindings {
  /** xpc_connection_create_mach_service(name, NULL, listener ? XPC_CONNECTION_MACH_SERVICE_LISTENER : 0).
   *  Returned suspended. @throws ERR_PLATFORM when libxpc returns NULL. */
  createMachService(name: string, options: { listener: boolean }): XpcConnection;
  /** Installs the handler (once per connection). Events arrive on the JS thread, in order per
   *  connection; the process is kept alive until 'invalid'. */
  setEventHandler(
    connection: XpcConnection,
    handler: (event: XpcEvent) => void,
    options?: { readonly maxFrameBytes?: number },
  ): void;
  /** Before resume. @throws ERR_UNSUPPORTED_PLATFORM (macOS < 12: function missing),
   *  ERR_INVALID_ARGUMENT (libxpc said EINVAL: the requirement does not compile). */
  setPeerRequirement(connection: XpcConnection, requirement: string): void;
  resume(connection: XpcConnection): void;
  /** Builds a dictionary with one of our keys (payload as data for 'frame'), sends it, releases
   *  it. Asynchronous in libxpc: never blocks, never reports failure (a dead peer shows up as an
   *  error event). */
  send(connection: XpcConnection, kind: XpcMessageKind, payload?: Buffer): void;
  /** xpc_connection_cancel; 'invalid' follows as the last event. Idempotent in libxpc. */
  cancel(connection: XpcConnection): void;
  /**
   * xpc_connection_send_barrier: `done` runs (on the JS thread) once every message sent on the
   * connection before it has been sent — Apple's way to cancel without losing them, since
   * cancel discards what is not sent yet. Runs even if the connection was cancelled meanwhile.
   */
  barrier(connection: XpcConnection, done: () => void): void;
  /** xpc_connection_get_pid / _get_euid: the peer that sent the last message received (0 before any). */
  peerPid(connection: XpcConnection): number;
  peerEuid(connection: XpcConnection): number;
}

/**
 * The dictionary key of each message kind, for the binding to build and read dictionaries with
 * (see the module comment): `frame` holds data, `probe` and `probe-ack` hold bool true.
 */
export const XPC_KEYS: Readonly<Record<XpcMessageKind, string>> = Object.freeze({
  frame: 'bridgekeeper.frame',
  probe: 'bridgekeeper.probe',
  'probe-ack': 'bridgekeeper.probe-ack',
});

// ---- options --------------------------------------------------------------------------------

/** How long {@link connectXpc} waits for the server's probe-ack by default, in milliseconds. */
export const DEFAULT_XPC_CONNECT_TIMEOUT_MS = 5000;

/** How long {@link listenXpc} waits for a new peer's probe by default, in milliseconds. */
export const DEFAULT_XPC_PROBE_TIMEOUT_MS = 5_000;

/** Peers a listener holds in their handshake at once by default; more are refused at once. */
export const DEFAULT_XPC_MAX_PENDING_PEERS = 256;

/** The longest mach service name accepted (launchd's limit is 128 bytes with the NUL). */
export const MAX_XPC_SERVICE_NAME_LENGTH = 127;

/** Incoming messages held for a first (or next) `onMessage` subscriber before the peer is cut off. */
const MAX_HELD_MESSAGES = 1024;

/** How long `close()` waits for the send barrier before it cancels anyway. */
const CLOSE_FLUSH_TIMEOUT_MS = 2_000;

/** Bytes of incoming messages held for a subscriber before the peer is cut off (at least one frame). */
const MAX_HELD_BYTES = 16 * 1024 * 1024;

/** The longest delay `setTimeout` takes. */
const MAX_TIMER_MS = 2_147_483_647;

/** Where the bindings come from: the bindings themselves, or a loader called once per call. */
export type XpcBindingsSource = XpcBindings | (() => XpcBindings | Promise<XpcBindings>);

/**
 * What the platform adds to the pid and uid libxpc reports (start time, executable, …).
 * `connectedAt` (`Date.now()` when the connection was made): a process that started after it
 * cannot be the peer — its pid was reused — and must be refused (throw).
 */
export type XpcIdentify = (pid: number, context: { connectedAt: number }) => Partial<PeerIdentity>;

/** Options for {@link connectXpc}. */
export interface XpcConnectOptions {
  /** The mach service name of the app's helper, reverse-DNS (`com.example.secrets.relay`). */
  service: string;
  /**
   * A code-signing requirement the SERVER must satisfy, checked by libxpc on every message it
   * sends us (macOS 12+), e.g.
   * `anchor apple generic and identifier "com.example.secrets.relay" and certificate leaf[subject.OU] = "ABCDE12345"`.
   * Without it, whatever process holds the service name is accepted.
   */
  requirement?: string;
  /**
   * libxpc, or a function that loads it. Default: the macOS platform module's, with
   * `identify` from `kinfo_proc`; off macOS connecting fails with `ERR_UNSUPPORTED_PLATFORM`.
   */
  bindings?: XpcBindingsSource;
  /**
   * Describes the server process from its pid (start time, executable), synchronously; the
   * transport adds pid and uid from libxpc. Throwing means the server is unknown: refused.
   */
  identify?: XpcIdentify;
  /** Largest message, as UTF-8 JSON bytes, sent or accepted; default 1 MiB. */
  maxFrameBytes?: number;
  /** How long to wait for the server's answer; default 5000 ms. */
  timeoutMs?: number;
  /** Cancels connecting. */
  signal?: AbortSignal;
}

/** Options for {@link listenXpc}. */
export interface XpcListenOptions {
  /** The mach service name, as listed under `MachServices` in this process's launchd job. */
  service: string;
  /**
   * A code-signing requirement every PEER must satisfy, set on each accepted connection before
   * it is resumed; libxpc checks it on every message the peer sends (macOS 12+).
   */
  requirement?: string;
  /**
   * libxpc, or a function that loads it. Default: the macOS platform module's, with
   * `identify` from `kinfo_proc`; off macOS listening fails with `ERR_UNSUPPORTED_PLATFORM`.
   */
  bindings?: XpcBindingsSource;
  /** Describes a peer process from its pid; throwing refuses that peer. */
  identify?: XpcIdentify;
  /** Largest message, as UTF-8 JSON bytes, sent or accepted; default 1 MiB. */
  maxFrameBytes?: number;
  /** How long a new peer has to send its probe; default 5000 ms. */
  probeTimeoutMs?: number;
  /**
   * Peers held in their handshake at once; default 256. Connecting costs nothing and libxpc may
   * drop the messages of a peer that fails `requirement` without telling us, so such peers wait
   * for `probeTimeoutMs`: beyond this many, new ones are refused at once.
   */
  maxPendingPeers?: number;
  /** Cancels setting up the listener (not the listener once it is running). */
  signal?: AbortSignal;
}

interface ConnectionSettings {
  readonly service: string;
  readonly requirement: string | undefined;
  readonly identify: XpcIdentify | undefined;
  readonly maxFrameBytes: number;
}

function invalid(message: string): BridgekeeperError {
  return createError('ERR_INVALID_ARGUMENT', message);
}

function shown(value: unknown): string {
  const text = typeof value === 'string' ? JSON.stringify(value) : String(value);
  return text.length > 140 ? `${text.slice(0, 137)}...` : text;
}

function checkSettings(options: unknown, caller: string): ConnectionSettings {
  if (typeof options !== 'object' || options === null) {
    throw invalid(`${caller} needs its options: { service, bindings }.`);
  }
  const { service, requirement, identify, maxFrameBytes, bindings } = options as Record<
    string,
    unknown
  >;
  if (
    typeof service !== 'string' ||
    service.length > MAX_XPC_SERVICE_NAME_LENGTH ||
    service.includes('\0') ||
    !isValidLaunchdLabel(service)
  ) {
    throw invalid(
      `${caller} needs the mach service name of the app's helper, reverse-DNS like "com.example.secrets.relay" ` +
        `(ASCII letters, digits and "-" in dot-separated parts, at most ${MAX_XPC_SERVICE_NAME_LENGTH} characters), not ${shown(service)}.`,
    );
  }
  if (requirement !== undefined && !isCodeRequirementText(requirement)) {
    throw invalid(
      `${caller}: requirement must be a non-empty code-signing requirement without NUL characters, e.g. ` +
        `'anchor apple generic and certificate leaf[subject.OU] = "TEAMID"', or left out; not ${shown(requirement)}.`,
    );
  }
  if (identify !== undefined && typeof identify !== 'function') {
    throw invalid(`${caller}: identify must be a function (pid) => identity, or left out.`);
  }
  if (
    bindings !== undefined &&
    typeof bindings !== 'function' &&
    (typeof bindings !== 'object' || bindings === null)
  ) {
    throw invalid(
      `${caller} needs the libxpc \`bindings\` (from the macOS platform module), or a function that loads them.`,
    );
  }
  return {
    service,
    requirement: requirement as string | undefined,
    identify: identify as XpcIdentify | undefined,
    maxFrameBytes: checkMaxFrameBytes(maxFrameBytes as number | undefined),
  };
}

function checkTimeout(name: string, value: unknown, fallback: number): number {
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || !Number.isFinite(value) || value <= 0 || value > MAX_TIMER_MS) {
    throw invalid(
      `${name} must be a positive number of milliseconds (at most ${MAX_TIMER_MS}), not ${shown(value)}.`,
    );
  }
  return value;
}

const BINDING_METHODS = [
  'createMachService',
  'setEventHandler',
  'setPeerRequirement',
  'resume',
  'send',
  'cancel',
  'barrier',
  'peerPid',
  'peerEuid',
] as const;

async function loadBindings(source: XpcBindingsSource, caller: string): Promise<XpcBindings> {
  let bindings: unknown = source;
  if (typeof source === 'function') {
    try {
      bindings = await source();
    } catch (error) {
      if (error instanceof BridgekeeperError) throw error;
      throw createError('ERR_PLATFORM', `Could not load libxpc (${errorMessage(error)}).`, {
        cause: error,
      });
    }
  }
  if (
    typeof bindings !== 'object' ||
    bindings === null ||
    BINDING_METHODS.some(
      (method) => typeof (bindings as Record<string, unknown>)[method] !== 'function',
    )
  ) {
    throw invalid(
      `${caller}: the libxpc bindings lack ${BINDING_METHODS.join('/')}; pass the macOS platform module's XPC bindings.`,
    );
  }
  return bindings as XpcBindings;
}

/**
 * The bindings to use, and `identify`: the given ones, or by default the macOS platform module's
 * libxpc with `identify` from `kinfo_proc` (pid, uid, start time, executable), loaded on use.
 */
async function bindingsFor(
  options: { bindings?: XpcBindingsSource },
  settings: ConnectionSettings,
  caller: string,
): Promise<{ bindings: XpcBindings; identify: XpcIdentify | undefined }> {
  if (options.bindings !== undefined) {
    return { bindings: await loadBindings(options.bindings, caller), identify: settings.identify };
  }
  // Imported on use: the package root loads no platform module. Off macOS this rejects with
  // ERR_UNSUPPORTED_PLATFORM before any native code is loaded.
  const [{ loadDarwinBindings }, { describeProcess }] = await Promise.all([
    import('../platform/darwin/bindings.js'),
    import('../platform/darwin/identity.js'),
  ]);
  const darwin = await loadDarwinBindings();
  return {
    bindings: darwin.xpc,
    identify: settings.identify ?? ((pid, context) => describeProcess(darwin, pid, context)),
  };
}

/** An error from a binding call, as the caller sees it: ours as they are, anything else ERR_PLATFORM. */
function platformError(error: unknown, what: string): BridgekeeperError {
  if (error instanceof BridgekeeperError) return error;
  return createError('ERR_PLATFORM', `${what} failed (${errorMessage(error)}).`, { cause: error });
}

// ---- identities -----------------------------------------------------------------------------

/** Identities this module made for connections that had a requirement set, with that requirement. */
const REQUIREMENTS = new WeakMap<PeerIdentity, string>();

/**
 * The code-signing requirement libxpc enforces on every message from the peer `peer` describes,
 * when `peer` is an identity this module made for an XPC connection that had a `requirement`
 * set; undefined for anything else, including a copy of such an identity.
 *
 * @example
 * ```ts
 * const transport = await connectXpc({ service, requirement, bindings });
 * xpcPeerRequirement(transport.peer!); // === requirement
 * xpcPeerRequirement({ ...transport.peer! }); // undefined: a copy proves nothing
 * ```
 */
export function xpcPeerRequirement(peer: PeerIdentity): string | undefined {
  if (typeof peer !== 'object' || peer === null) return undefined;
  return REQUIREMENTS.get(peer);
}

function isPid(value: unknown): value is number {
  return typeof value === 'number' && Number.isSafeInteger(value) && value > 0;
}

function isUid(value: unknown): value is number {
  return typeof value === 'number' && Number.isSafeInteger(value) && value >= 0;
}

/**
 * Reads who sent the message just received and builds its frozen identity.
 *
 * @throws `ERR_PEER_UNKNOWN` when libxpc reports no process (pid 0) or `identify` fails, returns
 *   something that is not an identity, or describes another process or user.
 */
function identifyPeer(
  channel: XpcChannel,
  identify: XpcIdentify | undefined,
  connectedAt: number,
): PeerIdentity {
  let pid: unknown;
  let euid: unknown;
  try {
    pid = channel.bindings.peerPid(channel.connection);
    euid = channel.bindings.peerEuid(channel.connection);
  } catch (error) {
    throw createError(
      'ERR_PEER_UNKNOWN',
      `libxpc could not tell who sent it (${errorMessage(error)})`,
      {
        cause: error,
      },
    );
  }
  if (!isPid(pid)) {
    throw createError('ERR_PEER_UNKNOWN', `libxpc reported no process for it (pid ${String(pid)})`);
  }
  if (!isUid(euid)) {
    throw createError('ERR_PEER_UNKNOWN', `libxpc reported no user for it (euid ${String(euid)})`);
  }
  let extra: Partial<PeerIdentity> = {};
  if (identify !== undefined) {
    let result: unknown;
    try {
      result = identify(pid, { connectedAt });
    } catch (error) {
      throw createError(
        'ERR_PEER_UNKNOWN',
        `pid ${pid} could not be identified (${errorMessage(error)})`,
        {
          cause: error,
        },
      );
    }
    if (typeof result !== 'object' || result === null) {
      throw createError('ERR_PEER_UNKNOWN', `identify(${pid}) returned no identity`);
    }
    if (typeof (result as { then?: unknown }).then === 'function') {
      throw createError(
        'ERR_PEER_UNKNOWN',
        `identify(${pid}) returned a promise; it must be synchronous`,
      );
    }
    const described = result as Partial<PeerIdentity>;
    if (described.pid !== undefined && described.pid !== pid) {
      throw createError(
        'ERR_PEER_UNKNOWN',
        `identify(${pid}) described another process (pid ${String(described.pid)})`,
      );
    }
    if (described.uid !== undefined && described.uid !== euid) {
      throw createError(
        'ERR_PEER_UNKNOWN',
        `identify(${pid}) described another user (uid ${String(described.uid)}, libxpc says ${euid})`,
      );
    }
    extra = described;
  }
  // The kernel's pid and uid, and the source, win over anything identify() says.
  return Object.freeze({ ...extra, pid, uid: euid, source: 'xpc' });
}

// ---- one connection -------------------------------------------------------------------------

const MESSAGE_KINDS: ReadonlySet<unknown> = new Set(['frame', 'probe', 'probe-ack']);
const ERROR_NAMES: ReadonlySet<unknown> = new Set([
  'interrupted',
  'invalid',
  'termination-imminent',
  'peer-requirement',
  'other',
]);
const OTHER_ERROR: XpcEvent = Object.freeze({ type: 'error', error: 'other' });

/** An event as this module acts on it, whatever shape the binding passed. */
function normalizeEvent(event: unknown): XpcEvent {
  if (typeof event !== 'object' || event === null) return OTHER_ERROR;
  const { type, kind, payload, connection, error } = event as Record<string, unknown>;
  if (type === 'message') {
    if (!MESSAGE_KINDS.has(kind)) return { type: 'message', kind: 'unknown' };
    if (kind === 'frame' && Buffer.isBuffer(payload)) return { type: 'message', kind, payload };
    const { oversize } = event as { oversize?: unknown };
    if (kind === 'frame' && typeof oversize === 'number' && Number.isSafeInteger(oversize)) {
      return { type: 'message', kind, oversize };
    }
    return { type: 'message', kind: kind as XpcMessageKind };
  }
  if (type === 'connection' && typeof connection === 'bigint') return { type, connection };
  if (type === 'error' && ERROR_NAMES.has(error)) return event as XpcEvent;
  return OTHER_ERROR;
}

/**
 * One xpc_connection_t: its handler, routed to whoever owns the connection at the moment (the
 * handshake, then the transport), and the rule that nothing touches it after `invalid`.
 */
class XpcChannel {
  readonly bindings: XpcBindings;
  readonly connection: XpcConnection;
  /** Resolves once `invalid` arrived: libxpc is done with the connection. */
  readonly ended: Promise<void>;
  #route: (event: XpcEvent) => void;
  #invalid = false;
  #cancelled = false;
  /** A barrier is set; cancel follows it. */
  #draining = false;
  #drainTimer: NodeJS.Timeout | undefined;
  #resolveEnded!: () => void;

  constructor(bindings: XpcBindings, connection: XpcConnection, route: (event: XpcEvent) => void) {
    this.bindings = bindings;
    this.connection = connection;
    this.#route = route;
    this.ended = new Promise((resolve) => {
      this.#resolveEnded = resolve;
    });
  }

  /** True once `invalid` arrived. */
  get invalid(): boolean {
    return this.#invalid;
  }

  /** True once this side asked for the end (`cancel`) or the end came (`invalid`). */
  get ending(): boolean {
    return this.#cancelled || this.#invalid;
  }

  /** The handler installed with `setEventHandler`. Never throws into the binding. */
  readonly handle = (event: XpcEvent): void => {
    if (this.#invalid) {
      debug('an event arrived after invalid; ignored');
      return;
    }
    const checked = normalizeEvent(event);
    if (checked.type === 'error' && checked.error === 'invalid') {
      this.#invalid = true;
      clearTimeout(this.#drainTimer);
      this.#resolveEnded();
    }
    try {
      this.#route(checked);
    } catch (error) {
      // A bug here must neither reach libxpc's thread nor leave the connection half-used.
      debug('handling an XPC event failed: %s', errorMessage(error));
      this.cancel();
      reportListenerError(error);
    }
  };

  route(route: (event: XpcEvent) => void): void {
    this.#route = route;
  }

  /**
   * Cancels once every message sent so far has been sent (`xpc_connection_send_barrier`, then
   * cancel inside it), or at once if the barrier cannot be set. Never throws.
   */
  cancelAfterSends(): void {
    if (this.ending || this.#draining) return;
    this.#draining = true;
    // A barrier that never runs (a peer that does not read) must not keep the connection open.
    this.#drainTimer = setTimeout(() => {
      debug('the send barrier did not run within %d ms; cancelling', CLOSE_FLUSH_TIMEOUT_MS);
      this.cancel();
    }, CLOSE_FLUSH_TIMEOUT_MS);
    this.#drainTimer.unref();
    try {
      this.bindings.barrier(this.connection, () => this.cancel());
    } catch (error) {
      debug('xpc_connection_send_barrier failed: %s', errorMessage(error));
      this.cancel();
    }
  }

  /** xpc_connection_cancel, at most once and never after `invalid`; never throws. */
  cancel(): void {
    clearTimeout(this.#drainTimer);
    if (this.#invalid || this.#cancelled) return;
    this.#cancelled = true;
    try {
      this.bindings.cancel(this.connection);
    } catch (error) {
      debug('xpc_connection_cancel failed: %s', errorMessage(error));
    }
  }

  /** Sends one message; the caller makes sure the connection is not ending. */
  send(kind: XpcMessageKind, payload?: Buffer): void {
    if (this.ending)
      throw new Error(`internal: sending ${kind} on an XPC connection that is ending`);
    this.bindings.send(this.connection, kind, payload);
  }
}

/**
 * Refuses a peer connection handed to a listener: handler, cancel, resume — libxpc must see it
 * resumed before it releases it. Never throws.
 */
function refuse(bindings: XpcBindings, connection: XpcConnection, why: string): void {
  debug('refusing an XPC peer: %s', why);
  const channel = new XpcChannel(bindings, connection, () => {});
  try {
    bindings.setEventHandler(connection, channel.handle);
  } catch (error) {
    debug('could not install a handler on a refused peer: %s', errorMessage(error));
    return;
  }
  channel.cancel();
  try {
    bindings.resume(connection);
  } catch (error) {
    debug('could not resume a refused peer: %s', errorMessage(error));
  }
}

// ---- the transport --------------------------------------------------------------------------

/** A message held for a subscriber, with its size on the wire. */
interface HeldMessage {
  readonly message: Message;
  readonly bytes: number;
}

const NOT_OUR_PROTOCOL =
  'Check that the program on the other end of the connection speaks the Bridgekeeper protocol.';

const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/** The message in a frame's bytes. @throws `ERR_PROTOCOL`. */
function decodeFrame(payload: Buffer): Message {
  let text: string;
  try {
    text = utf8.decode(payload);
  } catch (error) {
    throw createError(
      'ERR_PROTOCOL',
      `The other side sent a message that is not valid UTF-8. ${NOT_OUR_PROTOCOL}`,
      {
        cause: error,
      },
    );
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (error) {
    throw createError(
      'ERR_PROTOCOL',
      `The other side sent a message that is not valid JSON. ${NOT_OUR_PROTOCOL}`,
      {
        cause: error,
      },
    );
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    const kind = value === null ? 'null' : Array.isArray(value) ? 'an array' : `a ${typeof value}`;
    throw createError(
      'ERR_PROTOCOL',
      `The other side sent ${kind} where a JSON object was expected. ${NOT_OUR_PROTOCOL}`,
    );
  }
  return value as Message;
}

interface TransportSettings {
  readonly service: string;
  readonly side: 'client' | 'server';
  readonly maxFrameBytes: number;
}

/**
 * A {@link Transport} over an XPC connection whose handshake is done. It closes when libxpc says
 * the connection is `invalid`, and only then: `close()` resolves, and close subscribers are told,
 * once libxpc is done with the connection.
 */
class XpcTransport implements Transport {
  readonly peer: PeerIdentity;
  readonly #channel: XpcChannel;
  readonly #settings: TransportSettings;
  readonly #maxHeldBytes: number;
  readonly #events = new TransportEvents<HeldMessage>();
  #heldBytes = 0;
  #flushScheduled = false;
  #local = false;
  #error: Error | undefined;

  constructor(channel: XpcChannel, settings: TransportSettings, peer: PeerIdentity) {
    this.#channel = channel;
    this.#settings = settings;
    this.peer = peer;
    this.#maxHeldBytes = Math.max(MAX_HELD_BYTES, settings.maxFrameBytes);
    channel.route(this.#onEvent);
  }

  get closed(): boolean {
    return this.#events.state !== 'open';
  }

  send(message: Message): void {
    if (this.#events.state !== 'open') {
      throw closedForSending();
    }
    const json = serializeMessage(message);
    const length = Buffer.byteLength(json, 'utf8');
    const max = this.#settings.maxFrameBytes;
    if (length > max) {
      // As a stream transport does: refused before anything is sent, the connection stays open.
      throw createError(
        'ERR_FRAME_TOO_LARGE',
        `The message is ${length} bytes as JSON, over the frame limit of ${max} bytes. ` +
          'Send smaller messages (split large data), or raise maxFrameBytes on both ends.',
      );
    }
    try {
      this.#channel.send('frame', Buffer.from(json, 'utf8'));
    } catch (error) {
      const failure = platformError(error, 'Sending an XPC message');
      this.destroy(failure);
      throw failure;
    }
  }

  onMessage(listener: (message: Message) => void): Disposable {
    return this.#events.onMessage(listener, () => {
      if (this.#events.queue.length > 0) this.#scheduleFlush();
    });
  }

  onClose(listener: (info: CloseInfo) => void): Disposable {
    return this.#events.onClose(listener);
  }

  close(): Promise<void> {
    if (this.#events.state === 'open') {
      this.#events.state = 'closing';
      this.#local = true;
      this.#dropHeld();
      // Apple documents that cancel discards what is not sent yet: cancel after a barrier.
      this.#channel.cancelAfterSends();
    }
    return this.#events.closed;
  }

  destroy(error?: Error): void {
    if (this.#events.state !== 'open') return;
    this.#events.state = 'closing';
    this.#local = true;
    if (error !== undefined) this.#error = error;
    this.#dropHeld();
    this.#channel.cancel();
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  readonly #onEvent = (event: XpcEvent): void => {
    switch (event.type) {
      case 'message':
        this.#onMessage(event.kind, event.payload, event.oversize);
        return;
      case 'connection':
        // Only listeners get these; refused so that libxpc can release it.
        refuse(this.#channel.bindings, event.connection, 'a connection event on a peer connection');
        return;
      case 'error':
        this.#onError(event.error);
        return;
    }
  };

  #onMessage(
    kind: XpcMessageKind | 'unknown',
    payload: Buffer | undefined,
    oversize: number | undefined,
  ): void {
    // Closing: what still arrives is never delivered.
    if (this.#events.state !== 'open') return;
    if (kind !== 'frame') {
      const what =
        kind === 'unknown' ? 'a message that is not a Bridgekeeper message' : `a second ${kind}`;
      this.#fail(
        createError(
          'ERR_PROTOCOL',
          `The other side sent ${what} after the handshake. ${NOT_OUR_PROTOCOL}`,
        ),
      );
      return;
    }
    const max = this.#settings.maxFrameBytes;
    if (oversize !== undefined) {
      this.#fail(
        createError(
          'ERR_FRAME_TOO_LARGE',
          `The other side sent a message of ${oversize} bytes, over the limit of ${max} bytes; ` +
            'the connection was closed. If such large messages are expected, raise maxFrameBytes on both ends.',
        ),
      );
      return;
    }
    if (payload === undefined) {
      this.#fail(
        createError(
          'ERR_PROTOCOL',
          `The other side sent a message without data. ${NOT_OUR_PROTOCOL}`,
        ),
      );
      return;
    }
    if (payload.length > max) {
      this.#fail(
        createError(
          'ERR_FRAME_TOO_LARGE',
          `The other side sent a message of ${payload.length} bytes, over the limit of ${max} bytes; ` +
            'the connection was closed. If such large messages are expected, raise maxFrameBytes on both ends.',
        ),
      );
      return;
    }
    let message: Message;
    try {
      message = decodeFrame(payload);
    } catch (error) {
      this.#fail(error as Error);
      return;
    }
    this.#deliver(message, payload.length);
  }

  #deliver(message: Message, bytes: number): void {
    const events = this.#events;
    if (events.hasMessageListeners && events.queue.length === 0) {
      events.emit(message);
      return;
    }
    // libxpc cannot be told to stop reading, so what waits for a subscriber is bounded instead.
    if (events.queue.length >= MAX_HELD_MESSAGES || this.#heldBytes + bytes > this.#maxHeldBytes) {
      this.#fail(
        createError(
          'ERR_SEND_BUFFER_FULL',
          `The other side sent ${events.queue.length + 1} messages (${this.#heldBytes + bytes} bytes) that were not read yet, ` +
            `over the limit of ${MAX_HELD_MESSAGES} messages or ${this.#maxHeldBytes} bytes; the connection was closed. ` +
            'Subscribe to messages (onMessage) before the other side sends many.',
        ),
      );
      return;
    }
    events.queue.push({ message, bytes });
    this.#heldBytes += bytes;
    if (events.hasMessageListeners) this.#scheduleFlush();
  }

  #scheduleFlush(): void {
    if (this.#flushScheduled) return;
    this.#flushScheduled = true;
    // Not synchronously inside onMessage(): the subscriber has not even got its disposable yet.
    queueMicrotask(() => {
      this.#flushScheduled = false;
      this.#events.deliverQueued((held) => held.message);
      this.#heldBytes = this.#events.queue.reduce((sum, held) => sum + held.bytes, 0);
    });
  }

  #dropHeld(): void {
    this.#events.dropQueue();
    this.#heldBytes = 0;
  }

  /** The peer broke something: close with `error` (not `local`), cancel, wait for `invalid`. */
  #fail(error: Error): void {
    if (this.#events.state !== 'open') return;
    debug(
      'closing an XPC connection (%s): %s',
      this.#settings.side,
      (error as BridgekeeperError).code ?? error.name,
    );
    this.#events.state = 'closing';
    this.#error = error;
    this.#dropHeld();
    this.#channel.cancel();
  }

  #onError(error: Exclude<XpcEvent, { type: 'message' | 'connection' }>['error']): void {
    const { service, side } = this.#settings;
    switch (error) {
      case 'invalid': {
        // The last event: libxpc is done with the connection. Not cancelled by us: the other end
        // closed (or went away), as a socket's orderly end.
        if (this.#events.state === 'open') {
          this.#events.state = 'closing';
          this.#dropHeld();
        }
        const info: CloseInfo =
          this.#error === undefined
            ? { local: this.#local }
            : { error: this.#error, local: this.#local };
        this.#events.finish(info);
        return;
      }
      case 'interrupted':
        if (side === 'client') {
          // The server process died. libxpc would start the service again on the next message,
          // but that would be a new process that never answered our probe: never send again.
          this.#fail(
            createError(
              'ERR_APP_UNAVAILABLE',
              `The process offering the XPC service ${service} exited while connected; what it held for this connection is gone. ` +
                'Connect again (launchd starts it again if it is still registered).',
            ),
          );
        } else if (this.#events.state === 'open') {
          // A client that went away: like a socket whose peer hung up.
          this.#events.state = 'closing';
          this.#dropHeld();
          this.#channel.cancel();
        }
        return;
      case 'peer-requirement':
        // The peer passed the requirement at the handshake and fails it now; libxpc dropped its
        // message, so the stream has a hole: nothing more from it can be trusted.
        this.#fail(
          createError(
            'ERR_PEER_CHANGED',
            `The ${side === 'client' ? `process offering the XPC service ${service}` : 'client'} no longer satisfies the ` +
              'code-signing requirement (its code changed, or another program took its place); its message was dropped and the connection closed.',
          ),
        );
        return;
      case 'termination-imminent':
        debug('XPC_ERROR_TERMINATION_IMMINENT on a connection of %s; ignored', service);
        return;
      case 'other':
        this.#fail(
          createError(
            'ERR_PLATFORM',
            `XPC reported an unexpected error on the connection to ${service}; the connection was closed. Connect again.`,
          ),
        );
        return;
    }
  }
}

// ---- the client -----------------------------------------------------------------------------

/** What `setPeerRequirement` threw, as the caller sees it; `whom` is who must satisfy it. */
function requirementError(error: unknown, service: string, whom: string): BridgekeeperError {
  const code = error instanceof BridgekeeperError ? error.code : undefined;
  if (code === 'ERR_UNSUPPORTED_PLATFORM') {
    return createError(
      'ERR_UNSUPPORTED_PLATFORM',
      `Checking the code signature of ${whom} needs macOS 12 or later ` +
        '(xpc_connection_set_peer_code_signing_requirement). Update macOS.',
      { cause: error },
    );
  }
  if (code === 'ERR_INVALID_ARGUMENT') {
    return createError(
      'ERR_INVALID_ARGUMENT',
      `libxpc refused the code-signing requirement for ${whom}: it does not compile. ` +
        'Check its syntax (man csreq), e.g. \'anchor apple generic and certificate leaf[subject.OU] = "TEAMID"\'.',
      { cause: error },
    );
  }
  return platformError(error, `Setting the code-signing requirement for ${service}`);
}

/**
 * Connects to the mach service `service` over XPC and returns a {@link Transport} once the
 * process offering it has answered the handshake (see the module comment): nothing but a probe
 * without data is sent before that, so with a `requirement` the server is proven genuine before
 * anything is sent to it. `transport.peer` is the server's identity (pid and uid from libxpc,
 * plus what `identify` adds, `source: 'xpc'`). On any failure the connection is cancelled.
 *
 * @throws `ERR_APP_UNAVAILABLE` when no process offers the service (or it refused us, or exited
 *   before answering); `ERR_SERVER_REJECTED` when it does not satisfy `requirement`, or cannot be
 *   identified (pid 0, `identify` threw); `ERR_PROTOCOL` when it sends anything but the ack first;
 *   `ERR_TIMEOUT` after `timeoutMs`; `ERR_ABORTED`/`ERR_TIMEOUT` on `signal`;
 *   `ERR_UNSUPPORTED_PLATFORM` for a `requirement` before macOS 12; `ERR_INVALID_ARGUMENT` for
 *   bad options or a requirement libxpc cannot compile; `ERR_PLATFORM` when libxpc fails.
 * @example
 * ```ts
 * const transport = await connectXpc({
 *   service: 'com.example.secrets.relay',
 *   requirement:
 *     'anchor apple generic and identifier "com.example.secrets.relay" and certificate leaf[subject.OU] = "ABCDE12345"',
 *   bindings: xpcBindings, // the macOS platform module's libxpc bindings
 *   signal: AbortSignal.timeout(10_000),
 * });
 * transport.onMessage((message) => console.log(message));
 * transport.send({ jsonrpc: '2.0', id: 1, method: 'hello' });
 * ```
 */
export async function connectXpc(options: XpcConnectOptions): Promise<Transport> {
  const settings = checkSettings(options, 'connectXpc');
  const timeoutMs = checkTimeout('timeoutMs', options.timeoutMs, DEFAULT_XPC_CONNECT_TIMEOUT_MS);
  const { signal } = options;
  const what = `Connecting to the XPC service ${settings.service}`;
  throwIfAborted(signal, what);
  const { bindings, identify } = await bindingsFor(options, settings, 'connectXpc');
  throwIfAborted(signal, what);
  return handshakeAsClient(bindings, { ...settings, identify }, timeoutMs, signal);
}

function handshakeAsClient(
  bindings: XpcBindings,
  settings: ConnectionSettings,
  timeoutMs: number,
  signal: AbortSignal | undefined,
): Promise<Transport> {
  const { service, requirement, identify } = settings;
  const what = `Connecting to the XPC service ${service}`;
  return new Promise<Transport>((resolve, reject) => {
    const connectedAt = Date.now();
    let connection: XpcConnection;
    try {
      connection = bindings.createMachService(service, { listener: false });
    } catch (error) {
      reject(platformError(error, `Creating an XPC connection to ${service}`));
      return;
    }
    let settled = false;
    let timer: NodeJS.Timeout | undefined;
    const finish = (): boolean => {
      if (settled) return false;
      settled = true;
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
      return true;
    };
    const fail = (error: BridgekeeperError): void => {
      if (!finish()) return;
      debug('connecting to %s failed: %s', service, error.code);
      // Whatever arrives until `invalid` is ignored.
      channel.route(() => {});
      channel.cancel();
      reject(error);
    };
    const onAbort = (): void => fail(abortError(signal!, what));
    const refused = (reason: string, cause?: unknown): BridgekeeperError =>
      createError(
        'ERR_SERVER_REJECTED',
        `The process offering the XPC service ${service} is refused: ${reason}. Nothing was sent to it. Try again; ` +
          'if it keeps happening, the app may not be installed correctly.',
        cause === undefined ? {} : { cause },
      );

    const accept = (): void => {
      let peer: PeerIdentity;
      try {
        peer = identifyPeer(channel, identify, connectedAt);
      } catch (error) {
        fail(refused(errorMessage(error), error));
        return;
      }
      if (!finish()) return;
      if (requirement !== undefined) REQUIREMENTS.set(peer, requirement);
      const transport = new XpcTransport(
        channel,
        { service, side: 'client', maxFrameBytes: settings.maxFrameBytes },
        peer,
      );
      debug(
        'connected to %s (pid %d%s)',
        service,
        peer.pid,
        requirement === undefined ? '' : ', requirement enforced',
      );
      resolve(transport);
    };

    const channel = new XpcChannel(bindings, connection, (event) => {
      switch (event.type) {
        case 'message':
          if (event.kind === 'probe-ack') accept();
          else {
            const sent =
              event.kind === 'unknown'
                ? 'a message that is not a Bridgekeeper message'
                : `a ${event.kind}`;
            fail(
              createError(
                'ERR_PROTOCOL',
                `The process offering the XPC service ${service} sent ${sent} before answering the handshake; ` +
                  `nothing was sent to it. ${NOT_OUR_PROTOCOL}`,
              ),
            );
          }
          return;
        case 'connection':
          refuse(bindings, event.connection, 'a connection event on a client connection');
          fail(
            createError(
              'ERR_PLATFORM',
              `libxpc handed a connection to the client connection of ${service}.`,
            ),
          );
          return;
        case 'error':
          switch (event.error) {
            case 'invalid':
              fail(
                createError(
                  'ERR_APP_UNAVAILABLE',
                  `No process offers the XPC service ${service}, or it refused this program: is the app's helper registered ` +
                    `with launchd (launchctl print gui/$UID/${service})? Start the app, then try again.`,
                ),
              );
              return;
            case 'interrupted':
              fail(
                createError(
                  'ERR_APP_UNAVAILABLE',
                  `The process offering the XPC service ${service} exited (or dropped the connection) before it answered. ` +
                    `Check that the app's helper is running (launchctl print gui/$UID/${service}), then try again.`,
                ),
              );
              return;
            case 'peer-requirement':
              fail(
                createError(
                  'ERR_SERVER_REJECTED',
                  `The process offering the XPC service ${service} does not satisfy the code-signing requirement ` +
                    `${JSON.stringify(requirement)}: it is not the app's genuine helper. Nothing was sent to it. ` +
                    'Reinstall the app; if it was just updated, check that the requirement matches its helper (codesign -d -r- <helper>).',
                ),
              );
              return;
            case 'termination-imminent':
              debug('XPC_ERROR_TERMINATION_IMMINENT while connecting to %s; ignored', service);
              return;
            case 'other':
              fail(
                createError(
                  'ERR_PLATFORM',
                  `XPC reported an unexpected error while connecting to ${service}. Try again; if it persists, restart the app.`,
                ),
              );
              return;
          }
      }
    });

    try {
      bindings.setEventHandler(connection, channel.handle, {
        maxFrameBytes: settings.maxFrameBytes,
      });
    } catch (error) {
      // Without a handler the connection can be neither resumed nor cancelled safely.
      settled = true;
      reject(platformError(error, `Installing the XPC event handler for ${service}`));
      return;
    }
    if (requirement !== undefined) {
      try {
        bindings.setPeerRequirement(connection, requirement);
      } catch (error) {
        settled = true;
        channel.route(() => {});
        channel.cancel();
        try {
          bindings.resume(connection);
        } catch (resumeError) {
          debug('could not resume a cancelled connection: %s', errorMessage(resumeError));
        }
        reject(requirementError(error, service, `the process offering the XPC service ${service}`));
        return;
      }
    }
    try {
      bindings.resume(connection);
    } catch (error) {
      settled = true;
      channel.cancel();
      reject(platformError(error, `Resuming the XPC connection to ${service}`));
      return;
    }
    signal?.addEventListener('abort', onAbort, { once: true });
    timer = setTimeout(
      () =>
        fail(
          createError(
            'ERR_TIMEOUT',
            `The XPC service ${service} did not answer within ${timeoutMs} ms. Check that the app's helper is running ` +
              `and responsive (launchctl print gui/$UID/${service}), then try again.` +
              (requirement === undefined
                ? ''
                : ' libxpc may also have dropped its answer because the process holding the service ' +
                  'does not satisfy the code-signing requirement: nothing but an empty probe was sent to it.'),
          ),
        ),
      timeoutMs,
    );
    try {
      channel.send('probe');
    } catch (error) {
      fail(platformError(error, `Sending the XPC probe to ${service}`));
    }
  });
}

// ---- the listener ---------------------------------------------------------------------------

/** A peer connection waiting for its probe. */
interface PendingPeer {
  readonly channel: XpcChannel;
  /** When libxpc handed the connection over (`Date.now()`). */
  readonly connectedAt: number;
  timer: NodeJS.Timeout | undefined;
  done: boolean;
}

class XpcListener implements TransportListener {
  readonly address: string;
  readonly #bindings: XpcBindings;
  readonly #settings: ConnectionSettings;
  readonly #probeTimeoutMs: number;
  readonly #maxPendingPeers: number;
  readonly #connections = new ConnectionEvents(() => !this.#closed);
  readonly #errorListeners = new Set<(error: Error) => void>();
  /** Errors reported while nobody listened for them, for the first subscriber. */
  #unheard: Error[] = [];
  readonly #pending = new Set<PendingPeer>();
  #channel!: XpcChannel;
  #closed = false;
  #lost = false;
  #requirementReported = false;
  #closing: Promise<void> | undefined;

  constructor(
    bindings: XpcBindings,
    settings: ConnectionSettings,
    probeTimeoutMs: number,
    maxPendingPeers: number,
  ) {
    this.address = settings.service;
    this.#bindings = bindings;
    this.#settings = settings;
    this.#probeTimeoutMs = probeTimeoutMs;
    this.#maxPendingPeers = maxPendingPeers;
  }

  /** @internal Creates, handles and resumes the listener connection. */
  start(): void {
    const bindings = this.#bindings;
    const service = this.address;
    let connection: XpcConnection;
    try {
      connection = bindings.createMachService(service, { listener: true });
    } catch (error) {
      throw platformError(error, `Creating the XPC listener for ${service}`);
    }
    this.#channel = new XpcChannel(bindings, connection, this.#onEvent);
    try {
      bindings.setEventHandler(connection, this.#channel.handle);
    } catch (error) {
      throw platformError(error, `Installing the XPC event handler for ${service}`);
    }
    try {
      bindings.resume(connection);
    } catch (error) {
      this.#channel.cancel();
      throw platformError(error, `Resuming the XPC listener for ${service}`);
    }
  }

  onConnection(listener: (transport: Transport) => void): Disposable {
    return this.#connections.onConnection(listener);
  }

  onError(listener: (error: Error) => void): Disposable {
    const entry = (error: Error): void => listener(error);
    this.#errorListeners.add(entry);
    if (this.#unheard.length > 0) {
      const unheard = this.#unheard;
      this.#unheard = [];
      queueMicrotask(() => {
        for (const error of unheard) {
          if (!this.#errorListeners.has(entry)) return;
          try {
            entry(error);
          } catch (listenerError) {
            reportListenerError(listenerError);
          }
        }
      });
    }
    return toDisposable(() => this.#errorListeners.delete(entry));
  }

  close(): Promise<void> {
    this.#closing ??= this.#close();
    return this.#closing;
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  async #close(): Promise<void> {
    this.#closed = true;
    this.#channel.cancel();
    // Peers still in their handshake were never handed to anyone: nobody else will end them.
    for (const pending of this.#pending) this.#drop(pending, 'the listener closed');
    this.#pending.clear();
    this.#connections.close((transport) => transport.destroy());
    this.#errorListeners.clear();
    this.#unheard = [];
    await this.#channel.ended;
    debug('stopped listening on %s', this.address);
  }

  #report(error: Error): void {
    debug('%s', error.message);
    if (this.#errorListeners.size === 0) {
      this.#unheard.push(error);
      return;
    }
    for (const listener of [...this.#errorListeners]) {
      try {
        listener(error);
      } catch (listenerError) {
        reportListenerError(listenerError);
      }
    }
  }

  readonly #onEvent = (event: XpcEvent): void => {
    switch (event.type) {
      case 'connection':
        this.#accept(event.connection);
        return;
      case 'message':
        debug('the listener connection of %s received a message; ignored', this.address);
        return;
      case 'error':
        if (event.error === 'invalid') {
          if (this.#closed || this.#lost) return;
          this.#lost = true;
          this.#report(
            createError(
              'ERR_ENDPOINT_LOST',
              `This process cannot (or can no longer) take connections for the XPC service ${this.address}: launchd did not ` +
                `give it that service. Check that the launchd job that starts this process lists ${this.address} under ` +
                'MachServices and that this process is the one launchd started for it (launchctl print gui/$UID/<label>); ' +
                'clients already connected are still served. Close the listener and restart the helper.',
            ),
          );
        } else {
          debug('the listener connection of %s got %s; ignored', this.address, event.error);
        }
        return;
    }
  };

  #accept(connection: XpcConnection): void {
    const bindings = this.#bindings;
    if (this.#closed) {
      refuse(bindings, connection, 'the listener is closed');
      return;
    }
    if (this.#pending.size >= this.#maxPendingPeers) {
      refuse(bindings, connection, `${this.#pending.size} peers are already in their handshake`);
      return;
    }
    const { requirement } = this.#settings;
    if (requirement !== undefined) {
      try {
        bindings.setPeerRequirement(connection, requirement);
      } catch (error) {
        refuse(bindings, connection, 'its code-signing requirement could not be set');
        if (!this.#requirementReported) {
          this.#requirementReported = true;
          const cause = requirementError(error, this.address, `the clients of ${this.address}`);
          this.#report(
            createError(
              isErrorCode(cause.code) ? cause.code : 'ERR_PLATFORM',
              `Every client of the XPC service ${this.address} is refused: ${cause.message}`,
              { cause: error },
            ),
          );
        }
        return;
      }
    }
    const channel = new XpcChannel(bindings, connection, () => {});
    const pending: PendingPeer = {
      channel,
      connectedAt: Date.now(),
      timer: undefined,
      done: false,
    };
    channel.route((event) => this.#onHandshakeEvent(pending, event));
    try {
      bindings.setEventHandler(connection, channel.handle, {
        maxFrameBytes: this.#settings.maxFrameBytes,
      });
    } catch (error) {
      debug('could not install a handler on a new XPC peer: %s', errorMessage(error));
      return;
    }
    this.#pending.add(pending);
    pending.timer = setTimeout(
      () => this.#drop(pending, `it sent no probe within ${this.#probeTimeoutMs} ms`),
      this.#probeTimeoutMs,
    );
    pending.timer.unref();
    try {
      bindings.resume(connection);
    } catch (error) {
      this.#drop(pending, `it could not be resumed (${errorMessage(error)})`);
    }
  }

  /** Ends a peer still in its handshake, without telling anyone but the log. */
  #drop(pending: PendingPeer, why: string): void {
    if (pending.done) return;
    pending.done = true;
    clearTimeout(pending.timer);
    this.#pending.delete(pending);
    pending.channel.route(() => {});
    pending.channel.cancel();
    debug('dropped an XPC peer of %s: %s', this.address, why);
  }

  #onHandshakeEvent(pending: PendingPeer, event: XpcEvent): void {
    if (pending.done) return;
    switch (event.type) {
      case 'message':
        if (event.kind === 'probe') this.#completeHandshake(pending);
        else
          this.#drop(
            pending,
            `it sent ${event.kind === 'unknown' ? 'a foreign message' : `a ${event.kind}`} before its probe`,
          );
        return;
      case 'connection':
        refuse(this.#bindings, event.connection, 'a connection event on a peer connection');
        this.#drop(pending, 'libxpc handed a connection to it');
        return;
      case 'error':
        if (event.error === 'termination-imminent') {
          debug('XPC_ERROR_TERMINATION_IMMINENT on a new peer of %s; ignored', this.address);
          return;
        }
        // `invalid` (it went away; cancel does nothing then), `peer-requirement` (it does not
        // satisfy the requirement), `interrupted`, anything else.
        this.#drop(pending, `XPC reported ${event.error}`);
        return;
    }
  }

  #completeHandshake(pending: PendingPeer): void {
    const { channel } = pending;
    let peer: PeerIdentity;
    try {
      // Right after the probe arrived: libxpc's "last sender" is this peer.
      peer = identifyPeer(channel, this.#settings.identify, pending.connectedAt);
    } catch (error) {
      this.#drop(pending, `it could not be identified: ${errorMessage(error)}`);
      return;
    }
    try {
      channel.send('probe-ack');
    } catch (error) {
      this.#drop(pending, `the probe-ack could not be sent (${errorMessage(error)})`);
      return;
    }
    pending.done = true;
    clearTimeout(pending.timer);
    this.#pending.delete(pending);
    const { requirement, maxFrameBytes } = this.#settings;
    if (requirement !== undefined) REQUIREMENTS.set(peer, requirement);
    const transport = new XpcTransport(
      channel,
      { service: this.address, side: 'server', maxFrameBytes },
      peer,
    );
    debug('accepted an XPC peer of %s (pid %d)', this.address, peer.pid);
    this.#connections.deliver(transport);
  }
}

/**
 * Listens on the mach service `service` (listed under `MachServices` in the launchd job that
 * started this process) and yields a {@link Transport} per client that completed the handshake
 * (see the module comment): each new peer connection gets `requirement` before it is resumed,
 * must send its probe first and within `probeTimeoutMs`, and is identified before it is answered
 * and handed over; peers that fail any of that are cancelled and never surfaced. Connections are
 * held until the first `onConnection` subscriber. `address` is the service name.
 *
 * When libxpc ends the listener connection while it is open — the service is not (or no longer)
 * this process's — `onError` subscribers get `ERR_ENDPOINT_LOST` (one subscribing later still
 * hears of it). If `requirement` cannot be set on peers (macOS < 12, or it does not compile),
 * every client is refused and `onError` says so once. `close()` cancels the listener and the
 * peers still in their handshake; open connections are left to their owner.
 *
 * @throws `ERR_INVALID_ARGUMENT` for bad options; `ERR_ABORTED`/`ERR_TIMEOUT` on `signal`;
 *   `ERR_PLATFORM` when libxpc fails.
 * @example
 * ```ts
 * const listener = await listenXpc({
 *   service: 'com.example.secrets.relay',
 *   requirement:
 *     'anchor apple generic and identifier "com.example.secrets" and certificate leaf[subject.OU] = "ABCDE12345"',
 *   bindings: xpcBindings, // the macOS platform module's libxpc bindings
 * });
 * listener.onError?.((error) => console.error(error.message));
 * listener.onConnection((transport) => {
 *   transport.onMessage((message) => transport.send({ echo: message }));
 * });
 * ```
 */
export async function listenXpc(options: XpcListenOptions): Promise<TransportListener> {
  const settings = checkSettings(options, 'listenXpc');
  const probeTimeoutMs = checkTimeout(
    'probeTimeoutMs',
    options.probeTimeoutMs,
    DEFAULT_XPC_PROBE_TIMEOUT_MS,
  );
  const maxPendingPeers = options.maxPendingPeers ?? DEFAULT_XPC_MAX_PENDING_PEERS;
  if (!Number.isSafeInteger(maxPendingPeers) || maxPendingPeers < 1) {
    throw invalid(
      `listenXpc: maxPendingPeers must be a positive whole number, not ${shown(options.maxPendingPeers)}.`,
    );
  }
  const what = `Listening on the XPC service ${settings.service}`;
  throwIfAborted(options.signal, what);
  const { bindings, identify } = await bindingsFor(options, settings, 'listenXpc');
  throwIfAborted(options.signal, what);
  const listener = new XpcListener(
    bindings,
    { ...settings, identify },
    probeTimeoutMs,
    maxPendingPeers,
  );
  listener.start();
  debug('listening on %s', settings.service);
  return listener;
}
