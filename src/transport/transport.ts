/**
 * The message-based transport contract every Bridgekeeper transport implements.
 *
 * Three kinds fit it: byte streams that Bridgekeeper frames itself (Unix domain sockets, and
 * Windows named pipes once their handle is wrapped in a Node socket), transports that create
 * their own OS handles (the Windows pipe server, through FFI), and message-native transports
 * (macOS XPC). The contract is therefore about whole messages, never bytes.
 *
 * @module
 */

/** A subscription or resource that can be released. Disposing twice is harmless. */
export interface Disposable {
  dispose(): void;
  [Symbol.dispose](): void;
}

/** Wraps a function as a {@link Disposable} that runs it at most once. */
export function toDisposable(release: () => void): Disposable {
  let done = false;
  const dispose = (): void => {
    if (done) return;
    done = true;
    release();
  };
  return { dispose, [Symbol.dispose]: dispose };
}

/** A JSON object: what a transport carries. */
export type Message = { [key: string]: unknown };

/**
 * Who is on the other end of a connection, as reported by the operating system — never by the
 * peer itself. Fields the platform cannot provide are left undefined; policies treat a missing
 * field they need as a rejection.
 */
export interface PeerIdentity {
  /** Process id of the peer, from the kernel (`SO_PEERCRED`, `LOCAL_PEERPID`, `GetNamedPipeClientProcessId`). */
  readonly pid?: number;
  /** Effective user id of the peer (Unix). */
  readonly uid?: number;
  /** Effective group id of the peer (Unix). */
  readonly gid?: number;
  /** The user's SID (Windows). */
  readonly sid?: string;
  /**
   * Start time of the peer process, in the platform's own unit (clock ticks since boot on
   * Linux, a FILETIME on Windows), as a decimal string so it survives JSON. Always travels with
   * `pid`: a pid alone can be reused.
   */
  readonly startTime?: string;
  /** Absolute path of the peer's executable, where the OS lets us read it. */
  readonly executable?: string;
  /** A pidfd for the peer (Linux ≥ 6.5 `SO_PEERPIDFD`), which stays tied to that exact process. */
  readonly pidfd?: number;
  /** Which mechanism filled this in (`so_peercred`, `memory`, …), for logs and diagnostics. */
  readonly source: string;
}

/** Why a transport closed, as passed to {@link Transport.onClose} subscribers. */
export interface CloseInfo {
  /** The error that closed it, or undefined for an orderly close from either side. */
  readonly error?: Error;
  /** True when this side called `close()` or `destroy()`. */
  readonly local: boolean;
}

/**
 * One connection that carries whole JSON messages in both directions.
 *
 * Incoming messages are held until the first {@link Transport.onMessage} subscriber arrives, and
 * a stream transport does not read a single byte from the OS before that — so a server can check
 * {@link Transport.peer} first and drop a peer it does not like without ever reading from it.
 * Subscribing to {@link Transport.onClose} after the transport closed still reports the close.
 */
export interface Transport {
  /** The peer as the OS reports it, or undefined where the transport cannot tell. */
  readonly peer: PeerIdentity | undefined;
  /** True once the transport has closed (from either side). */
  readonly closed: boolean;
  /**
   * Sends one message. Messages arrive in order.
   *
   * @throws `ERR_TRANSPORT_CLOSED` if the transport is closed.
   */
  send(message: Message): void;
  /** Subscribes to incoming messages; starts reading on the first subscription. */
  onMessage(listener: (message: Message) => void): Disposable;
  /** Subscribes to the close of the transport; called once, asynchronously. */
  onClose(listener: (info: CloseInfo) => void): Disposable;
  /** Flushes what was sent, then closes. Idempotent; resolves once closed. */
  close(): Promise<void>;
  /** Closes at once, dropping anything unsent; subscribers see `error`. Idempotent. */
  destroy(error?: Error): void;
  [Symbol.asyncDispose](): Promise<void>;
}

/**
 * Accepts connections for a server. Connections are held until the first
 * {@link TransportListener.onConnection} subscriber arrives.
 */
export interface TransportListener {
  /** Where clients reach this listener (a socket path, a pipe name, a mach service name). */
  readonly address: string;
  /** Subscribes to new connections. */
  onConnection(listener: (transport: Transport) => void): Disposable;
  /**
   * Subscribes to problems of the listener itself, after it started: its endpoint was removed or
   * replaced (`ERR_ENDPOINT_LOST`), so new clients cannot reach it. Optional: a listener that
   * cannot lose its endpoint (the in-memory one) need not offer it.
   */
  onError?(listener: (error: Error) => void): Disposable;
  /** Stops accepting and releases the endpoint; open connections are left to their owner. Idempotent. */
  close(): Promise<void>;
  [Symbol.asyncDispose](): Promise<void>;
}

/** Options for opening a client connection. */
export interface ConnectTransportOptions {
  /** Cancels the attempt. */
  signal?: AbortSignal;
}

/** Opens client connections to one kind of transport. */
export interface TransportConnector {
  /**
   * Connects to `address`.
   *
   * @throws `ERR_APP_UNAVAILABLE` when nothing listens there, `ERR_ABORTED`/`ERR_TIMEOUT` on signal.
   */
  connect(address: string, options?: ConnectTransportOptions): Promise<Transport>;
}
