/**
 * A relay between the app and its clients, for macOS: the seed's "Browser Helper" that both the
 * app and its CLI connect to, that checks both and passes messages between them. Written against
 * {@link TransportListener}/{@link Transport} only, so it runs (and is tested) over Unix sockets.
 *
 * Roles. Every peer connects to the relay's listener (or, with `appListener`, the app to a
 * listener of its own, and only there). Before a single message of a peer is read, the relay
 * runs `appPolicies` and `clientPolicies` on its OS-reported identity; a peer that passes
 * neither is sent `bridgekeeper.closing` (`ERR_PEER_REJECTED`) and closed unread.
 * The peer's first message then says what it is: the app registers (only a peer that passed
 * `appPolicies` may, and only while no other app is registered); anything else makes it a client
 * (only if it passed `clientPolicies`), and that first message is its first channel message.
 *
 * Design: the app keeps ONE connection to the relay, over which the relay multiplexes every
 * client as a numbered channel. Chosen over "one app connection per client" because it needs no
 * round trip (and no second accept path with its own identity check) per client, the app is
 * verified once, and ordering, flow control and teardown are per channel in one place. Channel
 * ids are never reused, so a late message for a closed channel can never reach another client.
 *
 * Protocol between the relay and the app (JSON-RPC 2.0 over the app's connection):
 * - app → relay, first message, a request:
 *   `{"jsonrpc":"2.0","id":1,"method":"bridgekeeper.relay.register-app","params":{"protocol":1,"maxFrameBytes":1048576}}`
 *   answered `{"jsonrpc":"2.0","id":1,"result":{"protocol":1,"maxPendingMessages":1024}}`, or with
 *   an error (`data.code` `ERR_PEER_REJECTED`, `ERR_ALREADY_RUNNING`, `ERR_UNSUPPORTED_VERSION`)
 *   after which the relay closes the connection.
 * - relay → app: `bridgekeeper.relay.open` `{"channel":<n>,"peer":<PeerIdentity>}` — a client
 *   connected; `peer` is the relay's kernel-verified view of it (pid, uid, gid, startTime,
 *   executable; never a pidfd), its `source` prefixed `relay:`.
 * - both ways: `bridgekeeper.relay.message` `{"channel":<n>,"message":<object>}`, in order.
 * - both ways: `bridgekeeper.relay.close` `{"channel":<n>}` — that side closed the channel.
 * - app → relay: `bridgekeeper.relay.ack` `{"channel":<n>,"count":<k>}` — k more messages of the
 *   channel were handed to the app's server. The relay holds at most `maxPendingMessages`
 *   unacknowledged messages per channel; a client that goes over is closed (`bridgekeeper.closing`,
 *   `ERR_SEND_BUFFER_FULL`), so one flooding client can neither grow memory nor starve the others.
 *
 * Clients speak the ordinary Bridgekeeper protocol and do not see the relay, except that the relay
 * itself may close them: `ERR_PEER_REJECTED` (policy), `ERR_APP_UNAVAILABLE` (no app registered,
 * or the app disconnected), `ERR_FRAME_TOO_LARGE`, `ERR_SEND_BUFFER_FULL`, `ERR_TIMEOUT` (no first
 * message in time), `ERR_CONNECTION_LIMIT`, all as `bridgekeeper.closing` notices.
 *
 * Frame limits: a client message travels to the app inside an envelope, so give the connection
 * between relay and app some headroom over the clients' limit (listen with a larger
 * `maxFrameBytes` than clients use). A message that does not fit closes only its channel.
 *
 * @module
 */

import { abortError, createError, isErrorCode, throwIfAborted } from '../errors.js';
import { evaluatePolicies, type PeerPolicy, sameUser } from '../policy/peer-policy.js';
import {
  type ClosingNoticeParams,
  errorResponse,
  fromWireError,
  METHODS,
  notification,
  request,
  resultResponse,
  toWireError,
  type WireError,
} from '../protocol/messages.js';
import { createLog } from '../util/log.js';
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

const debug = createLog('bridgekeeper:relay');

/** The methods of the relay protocol (see the module comment). */
export const RELAY_METHODS = {
  registerApp: 'bridgekeeper.relay.register-app',
  open: 'bridgekeeper.relay.open',
  message: 'bridgekeeper.relay.message',
  close: 'bridgekeeper.relay.close',
  ack: 'bridgekeeper.relay.ack',
} as const;

/** The relay protocol version this build speaks. */
export const RELAY_PROTOCOL_VERSION = 1;

/** Unacknowledged messages a channel may have by default. */
export const DEFAULT_RELAY_MAX_PENDING = 1024;

/** Events the relay reports, for the relay process's log. */
export type RelayEvent =
  | {
      readonly type: 'peer-rejected';
      readonly peer: PeerIdentity | undefined;
      readonly policy: string;
      readonly reason: string;
      readonly code: string;
    }
  | { readonly type: 'app-registered'; readonly peer: PeerIdentity }
  | { readonly type: 'app-disconnected'; readonly peer: PeerIdentity | undefined }
  | { readonly type: 'channel-opened'; readonly channel: number; readonly peer: PeerIdentity }
  | { readonly type: 'channel-closed'; readonly channel: number; readonly code?: string }
  /**
   * A listener of the relay reported a problem (`ERR_ENDPOINT_LOST`: its socket was removed, or
   * its XPC service ended): `app` says whether it was the app's own listener. New peers cannot
   * reach it; restart the relay.
   */
  | { readonly type: 'listener-error'; readonly app: boolean; readonly error: Error };

/** Options for {@link createRelay}. */
export interface RelayOptions {
  /** Where app and clients connect, with peers identified by the OS (`listenUnixSocket` with `identify`). */
  listener: TransportListener;
  /**
   * A second listener for the app alone. When given, only a peer that arrives here may register
   * as the app, and peers of `listener` can only be clients. For transports that check peers per
   * endpoint, such as XPC, where each mach service enforces one code-signing requirement: the
   * relay offers `<label>` to clients and `<label>.app` to the app.
   */
  appListener?: TransportListener;
  /**
   * Who may be the app, e.g. a code-signing requirement or `allowExecutables([...])`. Required and
   * non-empty: a relay that let anyone register would hand every client to them.
   */
  appPolicies: readonly PeerPolicy[];
  /** Who may be a client. Default: `[sameUser()]`. */
  clientPolicies?: readonly PeerPolicy[];
  /** Releases what an identity holds (a pidfd) once its connection closed; e.g. `platform.releasePeer`. */
  releasePeer?: (peer: PeerIdentity) => void;
  /** Unacknowledged messages per channel before the client is closed; default {@link DEFAULT_RELAY_MAX_PENDING}. */
  maxPendingMessages?: number;
  /**
   * Connections held at once at `listener` (app, clients, peers not yet identified); default
   * 1024. An `appListener` holds at most 8 more of its own, so a client flood cannot lock the app out.
   */
  maxConnections?: number;
  /** How long an admitted peer may take to send its first message; default 10 000 ms. */
  firstMessageTimeoutMs?: number;
  /** Called for each {@link RelayEvent}; exceptions are rethrown asynchronously. */
  onEvent?: (event: RelayEvent) => void;
}

/** A running relay. */
export interface Relay {
  /** The listener's address. */
  readonly address: string;
  /** Whether an app is registered now. */
  readonly appConnected: boolean;
  /** Open client channels. */
  readonly channels: number;
  /** Stops accepting, tells every client the relay is shutting down, closes everything. Idempotent. */
  close(): Promise<void>;
  [Symbol.asyncDispose](): Promise<void>;
}

type Role = 'admitting' | 'unknown' | 'app' | 'client' | 'refused';

interface Peer {
  readonly transport: Transport;
  /** It came through the app's own listener (`appListener`). */
  readonly viaAppListener: boolean;
  role: Role;
  mayBeApp: boolean;
  mayBeClient: boolean;
  channel?: Channel;
  timer?: NodeJS.Timeout;
}

interface Channel {
  readonly id: number;
  readonly client: Peer;
  pending: number;
  /** Sizes (bytes) of the unacknowledged messages, oldest first. */
  readonly pendingSizes: number[];
  pendingBytes: number;
}

/** Unacknowledged bytes one channel may have: a client within its message count cannot fill the app's connection. */
const MAX_PENDING_BYTES_PER_CHANNEL = 4 * 1024 * 1024;
/** Unacknowledged bytes of all channels together: half of what the app's connection buffers before it is dropped. */
const MAX_PENDING_BYTES = 8 * 1024 * 1024;
/** Connections the app's own listener (`appListener`) holds at once: the app, and a few more. */
const APP_LISTENER_CONNECTIONS = 8;

/** The frame size the app receives when it does not say (Bridgekeeper's default). */
const DEFAULT_APP_MAX_FRAME_BYTES = 1024 * 1024;

function checkCount(name: string, value: number | undefined, fallback: number): number {
  const result = value ?? fallback;
  if (!Number.isSafeInteger(result) || result < 1) {
    throw createError(
      'ERR_INVALID_ARGUMENT',
      `${name} must be a positive whole number, not ${String(value)}.`,
    );
  }
  return result;
}

function sendClosing(transport: Transport, notice: ClosingNoticeParams): void {
  try {
    if (!transport.closed) transport.send(notification(METHODS.closing, notice));
  } catch {
    // Closing anyway; the peer learns from the close itself.
  }
}

function isChannelId(value: unknown): value is number {
  return typeof value === 'number' && Number.isSafeInteger(value) && value > 0;
}

function paramsOf(message: Message): Record<string, unknown> | undefined {
  const params = message.params;
  return typeof params === 'object' && params !== null && !Array.isArray(params)
    ? (params as Record<string, unknown>)
    : undefined;
}

/** The identity handed to the app: what the relay verified, without process-local handles. */
function relayedPeer(peer: PeerIdentity): PeerIdentity {
  return {
    ...(peer.pid === undefined ? {} : { pid: peer.pid }),
    ...(peer.uid === undefined ? {} : { uid: peer.uid }),
    ...(peer.gid === undefined ? {} : { gid: peer.gid }),
    ...(peer.sid === undefined ? {} : { sid: peer.sid }),
    ...(peer.startTime === undefined ? {} : { startTime: peer.startTime }),
    ...(peer.executable === undefined ? {} : { executable: peer.executable }),
    source: `relay:${peer.source}`,
  };
}

const APP_GONE: ClosingNoticeParams = {
  reason: 'app-unavailable',
  code: 'ERR_APP_UNAVAILABLE',
  message: 'The app disconnected from the relay. Start the app again, then retry.',
};

class RelayImpl implements Relay {
  readonly #listener: TransportListener;
  readonly #appListener: TransportListener | undefined;
  readonly #appPolicies: readonly PeerPolicy[];
  readonly #clientPolicies: readonly PeerPolicy[];
  readonly #release: ((peer: PeerIdentity) => void) | undefined;
  readonly #maxPending: number;
  readonly #maxConnections: number;
  readonly #firstMessageTimeoutMs: number;
  readonly #onEvent: ((event: RelayEvent) => void) | undefined;
  readonly #peers = new Set<Peer>();
  /** Peers in #peers that came through the app's own listener. */
  #appPeers = 0;
  readonly #channels = new Map<number, Channel>();
  #app: Peer | undefined;
  /** The largest frame the registered app accepts (it says so when it registers). */
  #appMaxFrameBytes = DEFAULT_APP_MAX_FRAME_BYTES;
  /** Unacknowledged bytes of every channel together. */
  #pendingBytes = 0;
  #nextChannel = 1;
  #closing: Promise<void> | undefined;

  constructor(options: RelayOptions) {
    if (!options || typeof options.listener?.onConnection !== 'function') {
      throw createError('ERR_INVALID_ARGUMENT', 'createRelay needs a `listener`.');
    }
    if (!Array.isArray(options.appPolicies) || options.appPolicies.length === 0) {
      throw createError(
        'ERR_INVALID_ARGUMENT',
        'createRelay needs at least one of `appPolicies` (who may register as the app), such as a code-signing requirement.',
      );
    }
    if (
      options.appListener !== undefined &&
      typeof options.appListener?.onConnection !== 'function'
    ) {
      throw createError('ERR_INVALID_ARGUMENT', 'createRelay: appListener must be a listener.');
    }
    if (options.appListener === options.listener) {
      throw createError(
        'ERR_INVALID_ARGUMENT',
        'createRelay: appListener must be another listener than `listener` (an endpoint only the app uses).',
      );
    }
    this.#listener = options.listener;
    this.#appListener = options.appListener;
    this.#appPolicies = [...options.appPolicies];
    this.#clientPolicies = [...(options.clientPolicies ?? [sameUser()])];
    this.#release = options.releasePeer;
    this.#maxPending = checkCount(
      'maxPendingMessages',
      options.maxPendingMessages,
      DEFAULT_RELAY_MAX_PENDING,
    );
    this.#maxConnections = checkCount('maxConnections', options.maxConnections, 1024);
    this.#firstMessageTimeoutMs = checkCount(
      'firstMessageTimeoutMs',
      options.firstMessageTimeoutMs,
      10_000,
    );
    this.#onEvent = options.onEvent;
    this.#listener.onConnection((transport) => this.#accept(transport, false));
    this.#appListener?.onConnection((transport) => this.#accept(transport, true));
    this.#listener.onError?.((error) => this.#emit({ type: 'listener-error', app: false, error }));
    this.#appListener?.onError?.((error) =>
      this.#emit({ type: 'listener-error', app: true, error }),
    );
  }

  get address(): string {
    return this.#listener.address;
  }

  get appConnected(): boolean {
    return this.#app !== undefined;
  }

  get channels(): number {
    return this.#channels.size;
  }

  #emit(event: RelayEvent): void {
    if (!this.#onEvent) return;
    try {
      this.#onEvent(event);
    } catch (error) {
      reportListenerError(error);
    }
  }

  #releaseQuietly(peer: PeerIdentity | undefined): void {
    if (!peer || !this.#release) return;
    try {
      this.#release(peer);
    } catch (error) {
      debug('releasing a peer failed: %O', error);
    }
  }

  #dismiss(peer: Peer, notice: ClosingNoticeParams): void {
    peer.role = 'refused';
    if (peer.timer) clearTimeout(peer.timer);
    sendClosing(peer.transport, notice);
    void peer.transport.close();
  }

  #accept(transport: Transport, viaAppListener: boolean): void {
    // The app's own listener has a small budget of its own, so a flood of clients cannot keep
    // the app from registering again.
    const full = viaAppListener
      ? this.#appPeers >= APP_LISTENER_CONNECTIONS
      : this.#peers.size - this.#appPeers >= this.#maxConnections;
    if (this.#closing || full) {
      if (!this.#closing) {
        sendClosing(transport, {
          reason: 'connection-limit',
          code: 'ERR_CONNECTION_LIMIT',
          message: `The relay is serving its maximum of ${this.#maxConnections} connections. Close some clients and try again.`,
        });
      }
      transport.onClose(() => this.#releaseQuietly(transport.peer));
      void transport.close();
      return;
    }
    const peer: Peer = {
      transport,
      viaAppListener,
      role: 'admitting',
      mayBeApp: false,
      mayBeClient: false,
    };
    this.#peers.add(peer);
    if (viaAppListener) this.#appPeers++;
    transport.onClose(() => this.#closed(peer));
    void this.#admit(peer).catch((error: unknown) => {
      // #admit handles its own failures; anything here is a bug: fail closed.
      debug('admitting a peer failed: %O', error);
      transport.destroy();
    });
  }

  async #admit(peer: Peer): Promise<void> {
    const identity = peer.transport.peer;
    let refusal: { policy: string; reason: string } | undefined;
    if (identity === undefined) {
      refusal = { policy: 'identity', reason: 'the transport reported no peer identity' };
    } else {
      // With an app listener, each listener admits one role only.
      const notHere = (role: string) =>
        Promise.resolve({
          allowed: false,
          policy: 'listener',
          reason: `this listener does not take the ${role}`,
        } as const);
      const appHere = this.#appListener === undefined || peer.viaAppListener;
      const clientHere = !peer.viaAppListener;
      const [asApp, asClient] = await Promise.all([
        appHere ? evaluatePolicies(this.#appPolicies, identity) : notHere('app'),
        clientHere ? evaluatePolicies(this.#clientPolicies, identity) : notHere('clients'),
      ]);
      peer.mayBeApp = asApp.allowed;
      peer.mayBeClient = asClient.allowed;
      if (!asApp.allowed && !asClient.allowed) refusal = clientHere ? asClient : asApp;
    }
    if (peer.transport.closed) return;
    if (this.#closing) {
      void peer.transport.close();
      return;
    }
    if (refusal) {
      debug('peer rejected by %s: %s (pid %s)', refusal.policy, refusal.reason, identity?.pid);
      this.#emit({ type: 'peer-rejected', peer: identity, ...refusal, code: 'ERR_PEER_REJECTED' });
      // Not one of its bytes was read, and none ever will be.
      this.#dismiss(peer, {
        reason: 'peer-rejected',
        code: 'ERR_PEER_REJECTED',
        message: 'The relay refused this process. Its log says which policy refused it.',
      });
      return;
    }
    peer.role = 'unknown';
    peer.timer = setTimeout(() => {
      if (peer.role !== 'unknown') return;
      this.#dismiss(peer, {
        reason: 'handshake-timeout',
        code: 'ERR_TIMEOUT',
        message: `No message within ${this.#firstMessageTimeoutMs} ms.`,
      });
    }, this.#firstMessageTimeoutMs);
    peer.timer.unref?.();
    peer.transport.onMessage((message) => this.#receive(peer, message));
  }

  #receive(peer: Peer, message: Message): void {
    switch (peer.role) {
      case 'unknown':
        if (peer.timer) clearTimeout(peer.timer);
        if (message.method === RELAY_METHODS.registerApp) this.#register(peer, message);
        else this.#openChannel(peer, message);
        return;
      case 'client':
        if (peer.channel) this.#forward(peer.channel, message);
        return;
      case 'app':
        this.#fromApp(peer, message);
        return;
      default:
        return;
    }
  }

  #register(peer: Peer, message: Message): void {
    const id = message.id;
    const identity = peer.transport.peer!;
    const refuse = (
      code:
        | 'ERR_PEER_REJECTED'
        | 'ERR_ALREADY_RUNNING'
        | 'ERR_UNSUPPORTED_VERSION'
        | 'ERR_PROTOCOL',
      text: string,
    ): void => {
      peer.role = 'refused';
      try {
        if (typeof id === 'string' || typeof id === 'number') {
          peer.transport.send(errorResponse(id, toWireError(createError(code, text))));
        }
      } catch {
        // Closing anyway.
      }
      void peer.transport.close();
    };
    if (!peer.mayBeApp) {
      debug('a peer that may not be the app tried to register (pid %s)', identity.pid);
      this.#emit({
        type: 'peer-rejected',
        peer: identity,
        policy: 'app',
        reason: 'it is not allowed to register as the app',
        code: 'ERR_PEER_REJECTED',
      });
      refuse('ERR_PEER_REJECTED', 'This process may not register as the app with the relay.');
      return;
    }
    if (typeof id !== 'string' && typeof id !== 'number') {
      refuse('ERR_PROTOCOL', 'register-app must be a request (with an id).');
      return;
    }
    if (paramsOf(message)?.protocol !== RELAY_PROTOCOL_VERSION) {
      refuse(
        'ERR_UNSUPPORTED_VERSION',
        `The relay speaks relay protocol ${RELAY_PROTOCOL_VERSION} only; update the app or the relay.`,
      );
      return;
    }
    if (this.#app) {
      refuse(
        'ERR_ALREADY_RUNNING',
        `Another app${this.#app.transport.peer?.pid === undefined ? '' : ` (pid ${this.#app.transport.peer.pid})`} is registered with the relay. Quit it first.`,
      );
      return;
    }
    const announced = paramsOf(message)?.maxFrameBytes;
    peer.role = 'app';
    this.#app = peer;
    this.#appMaxFrameBytes =
      typeof announced === 'number' && Number.isSafeInteger(announced) && announced > 0
        ? announced
        : DEFAULT_APP_MAX_FRAME_BYTES;
    peer.transport.send(
      resultResponse(id, {
        protocol: RELAY_PROTOCOL_VERSION,
        maxPendingMessages: this.#maxPending,
      }),
    );
    debug('app registered (pid %s)', identity.pid);
    this.#emit({ type: 'app-registered', peer: identity });
  }

  #openChannel(peer: Peer, first: Message): void {
    const identity = peer.transport.peer!;
    if (!peer.mayBeClient) {
      this.#emit({
        type: 'peer-rejected',
        peer: identity,
        policy: 'client',
        reason: 'it may be the app but did not register, and it is not allowed as a client',
        code: 'ERR_PEER_REJECTED',
      });
      this.#dismiss(peer, {
        reason: 'peer-rejected',
        code: 'ERR_PEER_REJECTED',
        message: 'The relay refused this process. Its log says which policy refused it.',
      });
      return;
    }
    const app = this.#app;
    if (!app || app.transport.closed) {
      this.#dismiss(peer, {
        reason: 'app-unavailable',
        code: 'ERR_APP_UNAVAILABLE',
        message:
          'The app is not running (it is not connected to the relay). Start it, then try again.',
      });
      return;
    }
    const channel: Channel = {
      id: this.#nextChannel++,
      client: peer,
      pending: 0,
      pendingSizes: [],
      pendingBytes: 0,
    };
    try {
      app.transport.send(
        notification(RELAY_METHODS.open, { channel: channel.id, peer: relayedPeer(identity) }),
      );
    } catch {
      this.#dismiss(peer, APP_GONE);
      return;
    }
    peer.role = 'client';
    peer.channel = channel;
    this.#channels.set(channel.id, channel);
    this.#emit({ type: 'channel-opened', channel: channel.id, peer: identity });
    this.#forward(channel, first);
  }

  /** Client → app. */
  #forward(channel: Channel, message: Message): void {
    if (!this.#channels.has(channel.id)) return;
    if (channel.pending >= this.#maxPending) {
      debug('channel %d: %d messages unacknowledged, closing it', channel.id, channel.pending);
      this.#closeChannel(channel, true, {
        reason: 'overloaded',
        code: 'ERR_SEND_BUFFER_FULL',
        message: `The app is not keeping up: ${channel.pending} messages of this client wait for it. Send fewer requests at once.`,
      });
      return;
    }
    const app = this.#app;
    const envelope = notification(RELAY_METHODS.message, { channel: channel.id, message });
    // Measured here, against the APP's frame limit and the bytes waiting for it: a frame the app
    // cannot take, or a burst that would overflow its connection, closes this client only —
    // never the app's connection, which every other client shares.
    const bytes = Buffer.byteLength(JSON.stringify(envelope)) + 4;
    if (bytes > this.#appMaxFrameBytes) {
      this.#closeChannel(channel, true, {
        reason: 'protocol-error',
        code: 'ERR_FRAME_TOO_LARGE',
        message: `A message of ${bytes} bytes is too large for the app (at most ${this.#appMaxFrameBytes} through the relay). Send smaller messages.`,
      });
      return;
    }
    if (
      channel.pendingBytes + bytes > MAX_PENDING_BYTES_PER_CHANNEL ||
      this.#pendingBytes + bytes > MAX_PENDING_BYTES
    ) {
      debug('channel %d: %d bytes unacknowledged, closing it', channel.id, channel.pendingBytes);
      this.#closeChannel(channel, true, {
        reason: 'overloaded',
        code: 'ERR_SEND_BUFFER_FULL',
        message: `The app is not keeping up: ${channel.pendingBytes} bytes of this client wait for it. Send less at once.`,
      });
      return;
    }
    try {
      if (!app) throw createError('ERR_TRANSPORT_CLOSED', 'No app.');
      app.transport.send(envelope);
      channel.pending++;
      channel.pendingSizes.push(bytes);
      channel.pendingBytes += bytes;
      this.#pendingBytes += bytes;
    } catch (error) {
      const tooLarge = isCode(error, 'ERR_FRAME_TOO_LARGE');
      this.#closeChannel(
        channel,
        true,
        tooLarge
          ? {
              reason: 'protocol-error',
              code: 'ERR_FRAME_TOO_LARGE',
              message: 'A message was too large to pass through the relay. Send smaller messages.',
            }
          : APP_GONE,
      );
    }
  }

  /** Forgets the sizes of `count` acknowledged (or dropped) messages of a channel. */
  #forgetPending(channel: Channel, count: number): void {
    const sizes = channel.pendingSizes.splice(0, count);
    let freed = 0;
    for (const size of sizes) freed += size;
    channel.pendingBytes -= freed;
    this.#pendingBytes -= freed;
  }

  #fromApp(app: Peer, message: Message): void {
    const params = paramsOf(message);
    const id = params?.channel;
    const method = message.method;
    if (
      !isChannelId(id) ||
      (method !== RELAY_METHODS.message &&
        method !== RELAY_METHODS.close &&
        method !== RELAY_METHODS.ack)
    ) {
      debug('the app sent a message the relay does not understand; dropping it');
      app.transport.destroy(
        createError('ERR_PROTOCOL', 'The app sent a message the relay protocol does not have.'),
      );
      return;
    }
    // A channel closed meanwhile (ids are never reused): nothing to do.
    const channel = this.#channels.get(id);
    if (!channel) return;
    if (method === RELAY_METHODS.ack) {
      const count = params?.count;
      if (typeof count === 'number' && Number.isSafeInteger(count) && count > 0) {
        channel.pending = Math.max(0, channel.pending - count);
        this.#forgetPending(channel, count);
      }
      return;
    }
    if (method === RELAY_METHODS.close) {
      this.#closeChannel(channel, false);
      return;
    }
    const inner = params?.message;
    if (typeof inner !== 'object' || inner === null || Array.isArray(inner)) {
      app.transport.destroy(
        createError('ERR_PROTOCOL', 'The app relayed a message that is not an object.'),
      );
      return;
    }
    try {
      channel.client.transport.send(inner as Message);
    } catch (error) {
      this.#closeChannel(
        channel,
        true,
        isCode(error, 'ERR_FRAME_TOO_LARGE')
          ? {
              reason: 'protocol-error',
              code: 'ERR_FRAME_TOO_LARGE',
              message: "The app's answer was too large for this connection.",
            }
          : undefined,
      );
    }
  }

  /** Ends a channel once: tells the app (unless it closed it), sends `notice` to the client, closes it. */
  #closeChannel(channel: Channel, tellApp: boolean, notice?: ClosingNoticeParams): void {
    if (!this.#channels.delete(channel.id)) return;
    this.#forgetPending(channel, channel.pendingSizes.length);
    const app = this.#app;
    if (tellApp && app && !app.transport.closed) {
      try {
        app.transport.send(notification(RELAY_METHODS.close, { channel: channel.id }));
      } catch {
        // The app's connection is going; its close handler ends the rest.
      }
    }
    const client = channel.client;
    client.role = 'refused';
    if (notice) sendClosing(client.transport, notice);
    void client.transport.close();
    this.#emit({
      type: 'channel-closed',
      channel: channel.id,
      ...(notice?.code === undefined ? {} : { code: notice.code }),
    });
  }

  #closed(peer: Peer): void {
    if (this.#peers.delete(peer) && peer.viaAppListener) this.#appPeers--;
    if (peer.timer) clearTimeout(peer.timer);
    if (peer.channel) this.#closeChannel(peer.channel, true);
    if (this.#app === peer) {
      this.#app = undefined;
      debug('the app disconnected; closing %d channels', this.#channels.size);
      for (const channel of [...this.#channels.values()]) {
        this.#closeChannel(channel, false, APP_GONE);
      }
      this.#emit({ type: 'app-disconnected', peer: peer.transport.peer });
    }
    this.#releaseQuietly(peer.transport.peer);
  }

  close(): Promise<void> {
    this.#closing ??= (async () => {
      await Promise.all([this.#listener.close(), this.#appListener?.close()]);
      const waits: Promise<void>[] = [];
      for (const peer of [...this.#peers]) {
        if (peer.role !== 'app') {
          sendClosing(peer.transport, {
            reason: 'shutdown',
            code: 'ERR_APP_UNAVAILABLE',
            message: 'The relay is shutting down.',
          });
        }
        waits.push(peer.transport.close());
      }
      await Promise.allSettled(waits);
    })();
    return this.#closing;
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}

function isCode(error: unknown, code: string): boolean {
  return typeof error === 'object' && error !== null && (error as { code?: unknown }).code === code;
}

/**
 * Starts a relay on `listener`: the app and its clients all connect there; each is checked by
 * the OS-reported identity before anything of it is read, and each client gets its own channel
 * to the one registered app (see the module comment for the protocol).
 *
 * @throws `ERR_INVALID_ARGUMENT` without a listener, with no `appPolicies`, or a bad limit.
 * @example
 * ```ts
 * const platform = await loadPlatform();
 * const listener = await listenUnixSocket({
 *   path, identify: (s) => platform.identifySocketPeer(socketFd(s)!), release: platform.releasePeer,
 * });
 * const relay = createRelay({
 *   listener, appPolicies: [allowExecutables(['/Applications/My.app/Contents/MacOS/My'])],
 *   releasePeer: (peer) => platform.releasePeer(peer),
 * });
 * ```
 */
export function createRelay(options: RelayOptions): Relay {
  return new RelayImpl(options);
}

// ---------------------------------------------------------------------------------------------
// The app's side.

/** Options for {@link relayListener}. */
export interface RelayListenerOptions {
  /**
   * Checks of the relay process (`transport.peer`) before anything is sent to it: the app
   * trusts the relay's word on who each client is, so it must know the relay is the real one
   * (a code-signing requirement, `allowExecutables`). Required and non-empty: with only the
   * same-user check, any process of the user could pose as the relay and announce clients with
   * another process's identity. The same user is checked as well, always.
   */
  relayPolicies: readonly PeerPolicy[];
  /**
   * The largest frame the app's connection to the relay accepts (its `maxFrameBytes`), told to
   * the relay so that it refuses larger client messages itself instead of sending what would
   * break the app's connection. Default 1 MiB, Bridgekeeper's default.
   */
  maxFrameBytes?: number;
  /** Cancels registering; the transport is destroyed. */
  signal?: AbortSignal;
}

class RelayedTransport implements Transport {
  readonly peer: PeerIdentity;
  readonly #owner: RelayedListener;
  readonly #channel: number;
  readonly #events = new TransportEvents<Message>();
  #flushScheduled = false;
  /** A close is on its way (either side); it takes effect in a microtask. */
  #ending = false;
  /** This side closed: nothing more may be sent. */
  #localEnding = false;

  constructor(owner: RelayedListener, channel: number, peer: PeerIdentity) {
    this.#owner = owner;
    this.#channel = channel;
    this.peer = peer;
  }

  get closed(): boolean {
    return this.#events.state !== 'open';
  }

  send(message: Message): void {
    if (this.#events.state !== 'open' || this.#localEnding) {
      throw closedForSending();
    }
    this.#owner.send(notification(RELAY_METHODS.message, { channel: this.#channel, message }));
  }

  onMessage(listener: (message: Message) => void): Disposable {
    return this.#events.onMessage(listener, () => this.#scheduleFlush());
  }

  onClose(listener: (info: CloseInfo) => void): Disposable {
    return this.#events.onClose(listener);
  }

  /** A message from the relay for this channel. */
  receive(message: Message): void {
    if (this.#events.state !== 'open' || this.#ending) return;
    if (this.#events.queue.length >= this.#owner.maxPending) {
      // The relay should never send this many unacknowledged: it is broken; fail closed.
      this.destroy(createError('ERR_PROTOCOL', 'The relay sent more messages than it may.'));
      return;
    }
    this.#events.queue.push(message);
    this.#scheduleFlush();
  }

  #scheduleFlush(): void {
    if (this.#flushScheduled || !this.#events.hasMessageListeners) return;
    this.#flushScheduled = true;
    queueMicrotask(() => {
      this.#flushScheduled = false;
      this.#flush();
    });
  }

  #flush(): void {
    let delivered = 0;
    const queue = this.#events.queue;
    while (
      queue.length > 0 &&
      this.#events.state === 'open' &&
      this.#events.hasMessageListeners &&
      queue === this.#events.queue
    ) {
      this.#events.emit(queue.shift()!);
      delivered++;
    }
    if (delivered > 0) this.#owner.ack(this.#channel, delivered);
  }

  /** The relay closed the channel (the client left), or the relay connection went. */
  remoteClose(error?: Error): void {
    if (this.#events.state !== 'open' || this.#ending) return;
    this.#ending = true;
    queueMicrotask(() => {
      if (this.#events.hasMessageListeners) this.#flush();
      this.#end(error === undefined ? { local: false } : { error, local: false }, false);
    });
  }

  #end(info: CloseInfo, tellRelay: boolean): void {
    if (this.#events.state === 'closed') return;
    this.#events.state = 'closing';
    this.#events.dropQueue();
    this.#owner.channelEnded(this.#channel, tellRelay);
    this.#events.finish(info);
  }

  close(): Promise<void> {
    if (this.#events.state === 'open' && !this.#ending) {
      this.#ending = true;
      this.#localEnding = true;
      // The close travels behind everything sent before it, on the same ordered connection.
      queueMicrotask(() => this.#end({ local: true }, true));
    }
    return this.#events.closed;
  }

  destroy(error?: Error): void {
    if (this.#events.state !== 'open' || this.#localEnding) return;
    this.#ending = true;
    this.#localEnding = true;
    queueMicrotask(() =>
      this.#end(error === undefined ? { local: true } : { error, local: true }, true),
    );
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}

class RelayedListener implements TransportListener {
  readonly address: string;
  readonly maxPending: number;
  readonly #relay: Transport;
  readonly #channels = new Map<number, RelayedTransport>();
  readonly #connections = new ConnectionEvents(() => !this.#closed);
  readonly #errorListeners = new Set<(error: Error) => void>();
  readonly #acks = new Map<number, number>();
  #acksScheduled = false;
  #closed = false;

  constructor(relay: Transport, maxPending: number) {
    this.#relay = relay;
    this.maxPending = maxPending;
    this.address = `relay:${relay.peer?.pid ?? 'unknown'}`;
    relay.onClose(({ error }) => this.#relayClosed(error));
  }

  send(message: Message): void {
    this.#relay.send(message);
  }

  ack(channel: number, count: number): void {
    this.#acks.set(channel, (this.#acks.get(channel) ?? 0) + count);
    if (this.#acksScheduled) return;
    this.#acksScheduled = true;
    queueMicrotask(() => {
      this.#acksScheduled = false;
      for (const [id, n] of this.#acks) {
        if (!this.#channels.has(id) || this.#relay.closed) continue;
        try {
          this.#relay.send(notification(RELAY_METHODS.ack, { channel: id, count: n }));
        } catch (error) {
          debug('could not acknowledge channel %d: %O', id, error);
        }
      }
      this.#acks.clear();
    });
  }

  channelEnded(channel: number, tellRelay: boolean): void {
    this.#channels.delete(channel);
    this.#acks.delete(channel);
    if (tellRelay && !this.#relay.closed) {
      try {
        this.#relay.send(notification(RELAY_METHODS.close, { channel }));
      } catch {
        // The relay connection is going; the relay ends the channel itself.
      }
    }
    if (this.#closed && this.#channels.size === 0) void this.#relay.close();
  }

  receive(message: Message): void {
    const params = paramsOf(message);
    const id = params?.channel;
    if (!isChannelId(id)) {
      this.#relay.destroy(
        createError('ERR_PROTOCOL', 'The relay sent a message without a channel.'),
      );
      return;
    }
    switch (message.method) {
      case RELAY_METHODS.open: {
        const peer = parsePeer(params?.peer);
        if (this.#closed || !peer || this.#channels.has(id)) {
          this.#tellClosed(id);
          return;
        }
        const transport = new RelayedTransport(this, id, peer);
        this.#channels.set(id, transport);
        this.#connections.deliver(transport);
        return;
      }
      case RELAY_METHODS.message: {
        const inner = params?.message;
        const transport = this.#channels.get(id);
        if (!transport) return;
        if (typeof inner !== 'object' || inner === null || Array.isArray(inner)) {
          transport.destroy(
            createError('ERR_PROTOCOL', 'The relay passed on a message that is not an object.'),
          );
          return;
        }
        transport.receive(inner as Message);
        return;
      }
      case RELAY_METHODS.close:
        this.#channels.get(id)?.remoteClose();
        return;
      default:
        this.#relay.destroy(
          createError('ERR_PROTOCOL', 'The relay sent a message this app does not understand.'),
        );
    }
  }

  #tellClosed(id: number): void {
    try {
      this.#relay.send(notification(RELAY_METHODS.close, { channel: id }));
    } catch {
      // Going anyway.
    }
  }

  #relayClosed(error: Error | undefined): void {
    const lost = createError(
      'ERR_APP_UNAVAILABLE',
      'The connection to the relay was lost; clients reached through it are gone.',
      error === undefined ? {} : { cause: error },
    );
    for (const transport of [...this.#channels.values()]) transport.remoteClose(lost);
    if (!this.#closed) {
      const endpointLost = createError(
        'ERR_ENDPOINT_LOST',
        'The connection to the relay closed, so new clients cannot reach the app. Reconnect to the relay and register again.',
        error === undefined ? {} : { cause: error },
      );
      for (const listener of this.#errorListeners) {
        try {
          listener(endpointLost);
        } catch (listenerError) {
          reportListenerError(listenerError);
        }
      }
    }
    this.#closed = true;
  }

  onConnection(listener: (transport: Transport) => void): Disposable {
    return this.#connections.onConnection(listener);
  }

  onError(listener: (error: Error) => void): Disposable {
    const entry = (error: Error): void => listener(error);
    this.#errorListeners.add(entry);
    return toDisposable(() => this.#errorListeners.delete(entry));
  }

  /**
   * Stops taking new clients; the relay connection closes once the channels already open have
   * closed (they are their owner's, as with any listener).
   */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#connections.close((transport) => void transport.close());
    if (this.#channels.size === 0) await this.#relay.close();
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}

const OPTIONAL_NUMBERS = ['pid', 'uid', 'gid'] as const;

/** The identity from an `open` notice, or undefined when malformed (the channel is refused). */
function parsePeer(value: unknown): PeerIdentity | undefined {
  if (typeof value !== 'object' || value === null) return undefined;
  const raw = value as Record<string, unknown>;
  if (typeof raw.source !== 'string' || !raw.source.startsWith('relay:')) return undefined;
  const peer: Record<string, unknown> = { source: raw.source };
  for (const key of OPTIONAL_NUMBERS) {
    const field = raw[key];
    if (field === undefined) continue;
    if (typeof field !== 'number' || !Number.isSafeInteger(field) || field < 0) return undefined;
    peer[key] = field;
  }
  for (const key of ['sid', 'startTime', 'executable'] as const) {
    const field = raw[key];
    if (field === undefined) continue;
    if (typeof field !== 'string') return undefined;
    peer[key] = field;
  }
  return Object.freeze(peer) as unknown as PeerIdentity;
}

/**
 * Registers the app with a relay over `transport` (the app's connection to it) and returns a
 * {@link TransportListener} whose connections are the relay's clients, each carrying the
 * client's identity as the relay verified it — so the app serves them unchanged:
 * `server.listen({ listener: await relayListener(transport) })`.
 *
 * The app trusts the relay's word on who each client is, so the relay itself is checked first
 * (`relayPolicies`). Peers arrive with `source` `relay:<how the relay identified them>`; the
 * server re-checks them through the OS by pid and start time like any other peer.
 *
 * @throws `ERR_SERVER_REJECTED` when the relay fails `relayPolicies` (nothing was sent to it);
 *   `ERR_PEER_REJECTED` when the relay does not let this process be the app;
 *   `ERR_ALREADY_RUNNING` when another app is registered; `ERR_UNSUPPORTED_VERSION`;
 *   `ERR_APP_UNAVAILABLE` when the relay closes the connection first; `ERR_ABORTED`/`ERR_TIMEOUT`
 *   on `signal`. On any failure the transport is closed.
 * @example
 * ```ts
 * const transport = await connectUnixSocket(relayPath, { identify, signal: AbortSignal.timeout(5000) });
 * await server.listen({ listener: await relayListener(transport, { relayPolicies: [relayIsSigned] }) });
 * ```
 */
export async function relayListener(
  transport: Transport,
  options: RelayListenerOptions,
): Promise<TransportListener> {
  const { signal } = options ?? {};
  try {
    if (!Array.isArray(options?.relayPolicies) || options.relayPolicies.length === 0) {
      throw createError(
        'ERR_INVALID_ARGUMENT',
        'relayListener needs relayPolicies that say which program the relay is (a code-signing ' +
          'requirement, allowExecutables): the app takes its word on who each client is, so a ' +
          'same-user check alone would let any process of the user pose as the relay.',
      );
    }
    throwIfAborted(signal, 'Registering with the relay');
    if (transport.closed) {
      throw createError('ERR_APP_UNAVAILABLE', 'The connection to the relay is already closed.');
    }
    const verdict = await evaluatePolicies(
      [sameUser(), ...options.relayPolicies],
      transport.peer,
      'no identity for the relay',
    );
    if (!verdict.allowed) {
      throw createError(
        'ERR_SERVER_REJECTED',
        `The relay process was refused by policy "${verdict.policy}" (${verdict.reason}); nothing was sent to it.`,
      );
    }
    throwIfAborted(signal, 'Registering with the relay');
  } catch (error) {
    transport.destroy();
    throw error;
  }

  return new Promise<TransportListener>((resolve, reject) => {
    let listener: RelayedListener | undefined;
    let settled = false;
    const fail = (error: Error): void => {
      if (settled) return;
      settled = true;
      cleanup();
      transport.destroy();
      reject(error);
    };
    const onAbort = (): void => fail(abortError(signal!, 'Registering with the relay'));
    const closeSubscription = transport.onClose(({ error }) =>
      fail(
        createError(
          'ERR_APP_UNAVAILABLE',
          'The relay closed the connection before the app was registered.',
          error === undefined ? {} : { cause: error },
        ),
      ),
    );
    const cleanup = (): void => {
      signal?.removeEventListener('abort', onAbort);
      closeSubscription.dispose();
    };
    signal?.addEventListener('abort', onAbort, { once: true });
    transport.onMessage((message) => {
      if (listener) {
        listener.receive(message);
        return;
      }
      if (settled) return;
      if (message.id !== 1) {
        fail(
          createError('ERR_PROTOCOL', 'The relay answered something other than the registration.'),
        );
        return;
      }
      if ('error' in message) {
        fail(fromWireError(message.error as WireError, RELAY_METHODS.registerApp));
        return;
      }
      const result = message.result as
        | { protocol?: unknown; maxPendingMessages?: unknown }
        | undefined;
      const maxPending = result?.maxPendingMessages;
      if (
        result?.protocol !== RELAY_PROTOCOL_VERSION ||
        typeof maxPending !== 'number' ||
        !Number.isSafeInteger(maxPending) ||
        maxPending < 1
      ) {
        fail(
          createError(
            'ERR_UNSUPPORTED_VERSION',
            'The relay speaks another relay protocol version.',
          ),
        );
        return;
      }
      settled = true;
      cleanup();
      listener = new RelayedListener(transport, maxPending);
      debug('registered with the relay');
      resolve(listener);
    });
    try {
      transport.send(
        request(1, RELAY_METHODS.registerApp, {
          protocol: RELAY_PROTOCOL_VERSION,
          maxFrameBytes: options.maxFrameBytes ?? DEFAULT_APP_MAX_FRAME_BYTES,
        }),
      );
    } catch (error) {
      fail(
        isErrorCode((error as { code?: string }).code ?? '')
          ? (error as Error)
          : createError('ERR_APP_UNAVAILABLE', 'Could not reach the relay.', { cause: error }),
      );
    }
  });
}
