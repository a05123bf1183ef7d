/**
 * Errors thrown by Bridgekeeper.
 *
 * Match on `error.code`, never on the message: codes are only ever added, never changed or
 * removed, and `test/errors.test.ts` pins the list. Messages are written for the person who
 * reads them and may change.
 *
 * Every class is branded with `Symbol.for`, so `instanceof` works even when two copies of the
 * package are loaded (an ESM and a CJS build in one process, say).
 *
 * @module
 */

/** Every error code Bridgekeeper itself uses, with the class that carries it. */
export const ERROR_CODES = {
  /** A required argument or option is missing or malformed. */
  ERR_INVALID_ARGUMENT: 'BridgekeeperError',
  /** The object was closed (or destroyed) before or during the call. */
  ERR_CLOSED: 'BridgekeeperError',
  /** The operation was cancelled through its AbortSignal. */
  ERR_ABORTED: 'BridgekeeperError',
  /** The operation did not finish within its time limit. */
  ERR_TIMEOUT: 'BridgekeeperError',

  /** The app is not running, not reachable, or went away while a call was pending. */
  ERR_APP_UNAVAILABLE: 'TransportError',
  /** Another instance of the app already listens on the endpoint. */
  ERR_ALREADY_RUNNING: 'TransportError',
  /** The endpoint directory or socket file is owned by someone else, too permissive, or not what it should be. */
  ERR_UNSAFE_ENDPOINT: 'TransportError',
  /** The endpoint path is longer than the operating system allows for a socket address. */
  ERR_ENDPOINT_PATH_TOO_LONG: 'TransportError',
  /** A frame declared a length over the configured limit; the connection was closed before allocating it. */
  ERR_FRAME_TOO_LARGE: 'TransportError',
  /** A message was sent on a transport that is already closed. */
  ERR_TRANSPORT_CLOSED: 'TransportError',
  /** The server refused the connection because it already serves its maximum number of connections. */
  ERR_CONNECTION_LIMIT: 'TransportError',

  /** The other side broke the wire protocol (bad UTF-8, bad JSON, wrong message shape). */
  ERR_PROTOCOL: 'ProtocolError',
  /** Client and server share no protocol version. */
  ERR_UNSUPPORTED_VERSION: 'ProtocolError',
  /** The server has no handler for the method (JSON-RPC -32601). */
  ERR_METHOD_NOT_FOUND: 'ProtocolError',
  /** The handler rejected the parameters (JSON-RPC -32602). */
  ERR_INVALID_PARAMS: 'ProtocolError',
  /** The server failed while handling the request; details stay in the server's log. */
  ERR_INTERNAL: 'ProtocolError',

  /** A peer policy rejected the process on the other end of the connection. */
  ERR_PEER_REJECTED: 'PeerError',
  /** The peer process is no longer the one that connected (it exited, exec'd, or its pid was reused). */
  ERR_PEER_CHANGED: 'PeerError',
  /** The peer could not be identified through the kernel; treated as a denial. */
  ERR_PEER_UNKNOWN: 'PeerError',
  /** The client's check of the server failed (another user's process, or the wrong program, on the app's endpoint). */
  ERR_SERVER_REJECTED: 'PeerError',

  /** The person refused the authorization prompt. */
  ERR_AUTHORIZATION_DENIED: 'AuthorizationError',
  /** The prompt was dismissed or cancelled before the person answered. */
  ERR_AUTHORIZATION_CANCELLED: 'AuthorizationError',
  /** The same session was refused this account moments ago; the app waits before asking again. */
  ERR_AUTHORIZATION_COOLDOWN: 'AuthorizationError',
  /** No prompt backend can ask the person on this machine. */
  ERR_PROMPT_UNAVAILABLE: 'AuthorizationError',
  /** The prompt backend failed; treated as a denial. */
  ERR_PROMPT_FAILED: 'AuthorizationError',

  /** This operating system (or this build of it) is not supported for the requested feature. */
  ERR_UNSUPPORTED_PLATFORM: 'PlatformError',
  /** An operating-system call failed; `cause` holds the errno / HRESULT / OSStatus. */
  ERR_PLATFORM: 'PlatformError',

  // New codes go at the end of this list; test/package.test.ts pins the order.
  /** The other side stopped reading and too much data waited to be sent to it; the connection was closed. */
  ERR_SEND_BUFFER_FULL: 'TransportError',
  /** The app's endpoint (its socket file) was removed or replaced while it ran: new clients cannot reach it. */
  ERR_ENDPOINT_LOST: 'TransportError',
} as const;

/** A stable error code used by Bridgekeeper. */
export type ErrorCode = keyof typeof ERROR_CODES;

const BRAND = Symbol.for('bridgekeeper.error.classes');

type Branded = { [BRAND]?: readonly string[] };

function brandedClasses(value: unknown): readonly string[] | undefined {
  if (typeof value !== 'object' || value === null) return undefined;
  const classes = (value as Branded)[BRAND];
  return Array.isArray(classes) ? classes : undefined;
}

/** Options accepted by every Bridgekeeper error constructor. */
export interface BridgekeeperErrorOptions {
  /** The underlying error (an OS error with errno, an HRESULT, …). */
  cause?: unknown;
}

/**
 * Base class of every error Bridgekeeper throws.
 *
 * @example
 * ```ts
 * import { BridgekeeperError } from 'bridgekeeper';
 * try {
 *   await client.request('secrets.read', { account: 'work', item: 'db' });
 * } catch (error) {
 *   if (error instanceof BridgekeeperError && error.code === 'ERR_AUTHORIZATION_DENIED') {
 *     console.error('Access was refused.');
 *   }
 * }
 * ```
 */
export class BridgekeeperError extends Error {
  /** Stable, machine-readable code. Match on this, not on `message`. */
  readonly code: string;

  constructor(code: string, message: string, options: BridgekeeperErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    const chain: string[] = [];
    for (
      let proto: unknown = new.target;
      typeof proto === 'function' && proto !== Error;
      proto = Object.getPrototypeOf(proto)
    ) {
      const brand = (proto as unknown as { brand?: string }).brand;
      if (brand && !chain.includes(brand)) chain.push(brand);
    }
    Object.defineProperty(this, BRAND, { value: chain, enumerable: false });
    Object.defineProperty(this, 'name', {
      value: new.target.name,
      enumerable: false,
      configurable: true,
      writable: true,
    });
  }

  /** @internal */
  static readonly brand: string = 'BridgekeeperError';

  static override [Symbol.hasInstance](value: unknown): boolean {
    const classes = brandedClasses(value);
    if (!classes) return false;
    // biome-ignore lint/complexity/noThisInStatic: `this` is the subclass being tested against.
    return classes.includes((this as unknown as { brand: string }).brand);
  }
}

/** Endpoint, socket and framing errors (`ERR_APP_UNAVAILABLE`, `ERR_FRAME_TOO_LARGE`, …). */
export class TransportError extends BridgekeeperError {
  /** @internal */
  static override readonly brand: string = 'TransportError';
}

/** Wire-protocol errors (`ERR_PROTOCOL`, `ERR_UNSUPPORTED_VERSION`, `ERR_METHOD_NOT_FOUND`, …). */
export class ProtocolError extends BridgekeeperError {
  /** @internal */
  static override readonly brand: string = 'ProtocolError';
}

/** Errors about the process on the other end (`ERR_PEER_REJECTED`, `ERR_SERVER_REJECTED`, …). */
export class PeerError extends BridgekeeperError {
  /** @internal */
  static override readonly brand: string = 'PeerError';
}

/** The person was not asked, or did not agree (`ERR_AUTHORIZATION_DENIED`, `ERR_PROMPT_UNAVAILABLE`, …). */
export class AuthorizationError extends BridgekeeperError {
  /** Milliseconds until the app will ask again, for `ERR_AUTHORIZATION_COOLDOWN`. */
  readonly retryAfterMs: number | undefined;

  constructor(
    code: string,
    message: string,
    options: BridgekeeperErrorOptions & { retryAfterMs?: number } = {},
  ) {
    super(code, message, options);
    this.retryAfterMs = options.retryAfterMs;
  }

  /** @internal */
  static override readonly brand: string = 'AuthorizationError';
}

/** Operating-system errors (`ERR_PLATFORM`, `ERR_UNSUPPORTED_PLATFORM`); `cause` holds the OS error. */
export class PlatformError extends BridgekeeperError {
  /** @internal */
  static override readonly brand: string = 'PlatformError';
}

/**
 * An error the app's handler chose to report, with the app's own code (for example
 * `ITEM_NOT_FOUND`). Thrown on the client, where `code` is whatever the server's handler used;
 * the server side throws {@link HandlerError} to produce one.
 */
export class RemoteError extends BridgekeeperError {
  /** Extra JSON data the handler attached, if any. */
  readonly data: unknown;

  constructor(
    code: string,
    message: string,
    options: BridgekeeperErrorOptions & { data?: unknown } = {},
  ) {
    super(code, message, options);
    this.data = options.data;
  }

  /** @internal */
  static override readonly brand: string = 'RemoteError';
}

/**
 * Thrown by a server handler to send the client an error with an app-defined code and message.
 * A {@link BridgekeeperError} a handler throws reaches the client with its code and message;
 * any other error reaches it only as `ERR_INTERNAL`, so nothing from inside the app leaks by
 * accident.
 *
 * @example
 * ```ts
 * server.handle('secrets.read', { account: (p) => p.account }, async (params) => {
 *   const item = vault.find(params.item);
 *   if (!item) throw new HandlerError('ITEM_NOT_FOUND', `No item named "${params.item}".`);
 *   return item.value;
 * });
 * ```
 */
export class HandlerError extends BridgekeeperError {
  /** Extra JSON data sent to the client with the error. */
  readonly data: unknown;

  constructor(
    code: string,
    message: string,
    options: BridgekeeperErrorOptions & { data?: unknown } = {},
  ) {
    super(code, message, options);
    this.data = options.data;
  }

  /** @internal */
  static override readonly brand: string = 'HandlerError';
}

/** Class name → constructor, to rebuild an error of the right class from its code. */
const CLASS_BY_NAME = {
  BridgekeeperError,
  TransportError,
  ProtocolError,
  PeerError,
  AuthorizationError,
  PlatformError,
} as const;

/**
 * Builds the error of the right class for one of Bridgekeeper's own codes.
 *
 * @internal
 */
export function createError(
  code: ErrorCode,
  message: string,
  options: BridgekeeperErrorOptions & { retryAfterMs?: number } = {},
): BridgekeeperError {
  const Class = CLASS_BY_NAME[ERROR_CODES[code]];
  return new Class(code, message, options);
}

/** True when `code` is one of Bridgekeeper's own codes. */
/**
 * The message of anything thrown, for reasons and logs (a non-Error becomes its string).
 *
 * @internal
 */
export function errorMessage(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

export function isErrorCode(code: unknown): code is ErrorCode {
  return typeof code === 'string' && Object.hasOwn(ERROR_CODES, code);
}

/**
 * Turns an AbortSignal's reason into the error to throw: `ERR_TIMEOUT` for a timeout signal,
 * a `BridgekeeperError` reason as it is, `ERR_ABORTED` otherwise.
 *
 * @internal
 */
export function abortError(signal: AbortSignal, what = 'The operation'): BridgekeeperError {
  const reason: unknown = signal.reason;
  if (reason instanceof BridgekeeperError) return reason;
  if (reason instanceof Error && reason.name === 'TimeoutError') {
    return createError('ERR_TIMEOUT', `${what} timed out.`, { cause: reason });
  }
  return createError('ERR_ABORTED', `${what} was aborted.`, { cause: reason });
}

/**
 * Throws {@link abortError} if the signal has fired.
 *
 * @internal
 */
export function throwIfAborted(signal: AbortSignal | undefined, what?: string): void {
  if (signal?.aborted) throw abortError(signal, what);
}
