/**
 * The relay over a Unix socket, wired to the platform's kernel peer identity: {@link listenRelay}
 * for the relay helper, {@link connectRelay} for the app. Clients need nothing new: they
 * `connect({ app, path: <the relay's socket>, serverPolicies })` as to any app, and the client
 * checks the relay through the kernel before sending anything.
 *
 * On macOS the relay's primary transport is XPC (`listenXpc`, see docs/macos.md); this Unix-socket
 * form is the fallback (before macOS 12, or to debug), where peers are identified by the kernel
 * with audit tokens and admitted by code signature (`requireCodeSignature`). It runs on Linux
 * too, where the tests exercise it end to end.
 *
 * @module
 */

import { createError, throwIfAborted } from '../errors.js';
import { loadPlatform, type Platform } from '../platform/platform.js';
import { prepareEndpointDirectory, resolveEndpoint } from './endpoint.js';
import {
  createRelay,
  type Relay,
  type RelayListenerOptions,
  type RelayOptions,
  relayListener,
} from './relay.js';
import type { PeerIdentity, TransportListener } from './transport.js';
import {
  connectUnixSocket,
  identifySameUserServer,
  identifySocketWith,
  listenUnixSocket,
} from './unix-socket.js';

/** The default frame limit between clients and the app: Bridgekeeper's own default. */
const CLIENT_FRAME_BYTES = 1024 * 1024;
/** Room for the relay's envelope around a client's largest message. */
const ENVELOPE_BYTES = 64 * 1024;

/** Where a relay is: its name (an endpoint like an app's) or an explicit socket path. */
export interface RelayLocation {
  /**
   * The relay's name: its socket is where an app of that name would listen
   * (`resolveEndpoint(name).path`: `$XDG_RUNTIME_DIR/<name>/agent.sock` on Linux,
   * `$TMPDIR/<name>/agent.sock` on macOS). Give `name` or `path`.
   */
  name?: string;
  /** The relay's socket path, instead of `name`. */
  path?: string;
}

/** Options for {@link listenRelay}: where, plus every {@link RelayOptions} but the listener. */
export interface ListenRelayOptions
  extends RelayLocation,
    Omit<RelayOptions, 'listener' | 'releasePeer'> {
  /**
   * The largest frame the relay accepts from a peer. Default 1 MiB + 64 KiB: the clients' 1 MiB
   * default plus room for the envelope the app's messages travel in. Raise it together with the
   * app's and the clients' `maxFrameBytes`.
   */
  maxFrameBytes?: number;
  /** The OS services that identify peers; default: the module for this OS. */
  platform?: Platform;
  /** Cancels starting. */
  signal?: AbortSignal;
}

/**
 * Starts a relay on a Unix socket: creates the private directory of its endpoint (or checks the
 * one given), listens, identifies every peer through the kernel before reading from it, and
 * runs {@link createRelay} on that listener.
 *
 * @throws (rejects with) `ERR_INVALID_ARGUMENT` for neither or both of `name` and `path`, or bad
 * relay options; `ERR_ALREADY_RUNNING` when a relay already answers there; the endpoint errors of
 * `server.listen` (`ERR_ENDPOINT_INSECURE`, `ERR_ENDPOINT_PATH_TOO_LONG`, …);
 * `ERR_UNSUPPORTED_PLATFORM` without kernel peer identity; `ERR_ABORTED`/`ERR_TIMEOUT` on
 * `signal`.
 * @example
 * ```ts
 * const relay = await listenRelay({
 *   name: 'example-secrets-relay',
 *   appPolicies: [requireCodeSignature({ requirement: APP_REQUIREMENT })],
 *   clientPolicies: [sameUser(), requireCodeSignature({ requirement: CLI_REQUIREMENT })],
 * });
 * process.on('SIGTERM', () => relay.close());
 * ```
 */
export async function listenRelay(options: ListenRelayOptions): Promise<Relay> {
  const { signal } = options ?? {};
  const path = await relayPath(options, 'listenRelay', true);
  throwIfAborted(signal, 'Starting the relay');
  const platform = options.platform ?? (await loadPlatform());
  const listener = await listenUnixSocket({
    path,
    maxFrameBytes: options.maxFrameBytes ?? CLIENT_FRAME_BYTES + ENVELOPE_BYTES,
    identify: identifySocketWith(platform, 'ERR_PEER_UNKNOWN'),
    release: (peer: PeerIdentity) => platform.releasePeer(peer),
    name: options.name ?? 'the relay',
    ...(signal ? { signal } : {}),
  });
  const {
    name: _name,
    path: _path,
    platform: _platform,
    maxFrameBytes: _max,
    signal: _signal,
    ...rest
  } = options;
  try {
    return createRelay({
      ...rest,
      listener,
      releasePeer: (peer) => platform.releasePeer(peer),
    });
  } catch (error) {
    await listener.close();
    throw error;
  }
}

/** Options for {@link connectRelay}: where, plus the {@link RelayListenerOptions}. */
export interface ConnectRelayOptions extends RelayLocation, RelayListenerOptions {
  /** The OS services that identify the relay; default: the module for this OS. */
  platform?: Platform;
  /** Limit for connecting and registering together. Default 5 s. */
  timeoutMs?: number;
}

/**
 * The app's side: connects to a relay, checks through the kernel that it runs as this user and
 * passes `relayPolicies` before sending anything, registers as the app, and returns the listener
 * to serve its clients with: `server.listen({ listener })`. When the relay goes away the
 * listener reports `ERR_ENDPOINT_LOST` through `server.on('error')` (reconnect then).
 *
 * @throws (rejects with) `ERR_INVALID_ARGUMENT` for neither or both of `name` and `path`, or no
 * `relayPolicies`; `ERR_APP_UNAVAILABLE` when no relay listens there; `ERR_SERVER_REJECTED` when
 * the process there runs as another user or fails `relayPolicies`; the errors of
 * `relayListener` (`ERR_ALREADY_RUNNING` when another app is registered, `ERR_PEER_REJECTED`,
 * …); `ERR_TIMEOUT`/`ERR_ABORTED`.
 * @example
 * ```ts
 * const server = createServer({ app: 'example-secrets', prompt: await autoPromptBackend() });
 * await server.listen({
 *   listener: await connectRelay({
 *     name: 'example-secrets-relay',
 *     relayPolicies: [requireCodeSignature({ requirement: RELAY_REQUIREMENT })],
 *   }),
 * });
 * ```
 */
export async function connectRelay(options: ConnectRelayOptions): Promise<TransportListener> {
  const path = await relayPath(options, 'connectRelay', false);
  const timeoutMs = options.timeoutMs ?? 5_000;
  if (typeof timeoutMs !== 'number' || !Number.isFinite(timeoutMs) || timeoutMs <= 0) {
    throw createError(
      'ERR_INVALID_ARGUMENT',
      `connectRelay: timeoutMs must be a positive number of milliseconds, not ${String(options.timeoutMs)}.`,
    );
  }
  const signals = [AbortSignal.timeout(timeoutMs)];
  if (options.signal) signals.push(options.signal);
  const signal = AbortSignal.any(signals);
  throwIfAborted(signal, 'Connecting to the relay');
  const platform = options.platform ?? (await loadPlatform());
  const transport = await connectUnixSocket(path, {
    signal,
    maxFrameBytes: options.maxFrameBytes ?? CLIENT_FRAME_BYTES + ENVELOPE_BYTES,
    identify: identifySameUserServer(platform, path, "the relay's"),
    release: (peer) => platform.releasePeer(peer),
  });
  const relayPeer = transport.peer;
  if (relayPeer) transport.onClose(() => platform.releasePeer(relayPeer));
  return relayListener(transport, {
    relayPolicies: options.relayPolicies,
    ...(options.maxFrameBytes === undefined ? {} : { maxFrameBytes: options.maxFrameBytes }),
    signal,
  });
}

/** The socket path of a {@link RelayLocation}, creating the endpoint directory for a listener. */
async function relayPath(
  location: RelayLocation | undefined,
  caller: string,
  listening: boolean,
): Promise<string> {
  const { name, path } = location ?? {};
  if ((name === undefined) === (path === undefined)) {
    throw createError(
      'ERR_INVALID_ARGUMENT',
      `${caller} needs the relay's name (e.g. 'example-secrets-relay') or its socket path, not both.`,
    );
  }
  if (path !== undefined) {
    if (typeof path !== 'string' || path === '') {
      throw createError('ERR_INVALID_ARGUMENT', `${caller}: path must be a non-empty string.`);
    }
    return path;
  }
  if (typeof name !== 'string' || name === '') {
    throw createError('ERR_INVALID_ARGUMENT', `${caller}: name must be a non-empty string.`);
  }
  const endpoint = resolveEndpoint(name);
  if (listening) await prepareEndpointDirectory(endpoint.directory);
  return endpoint.path;
}
