/**
 * The wire protocol: JSON-RPC 2.0 message shapes, the `hello` handshake, Bridgekeeper's
 * notifications and the mapping between errors and wire error objects. `docs/protocol.md`
 * describes the same thing for people writing a client in another language; keep them in step.
 *
 * @module
 */

import {
  AuthorizationError,
  BridgekeeperError,
  createError,
  HandlerError,
  isErrorCode,
  RemoteError,
} from '../errors.js';
import type { Message } from '../transport/transport.js';

/** Protocol versions this build speaks. */
export const PROTOCOL_VERSION = { min: 1, max: 1 } as const;

/** Methods and notifications reserved by Bridgekeeper. Apps may not register `bridgekeeper.*`. */
export const METHODS = {
  /** Request, client → server, first message of every connection. */
  hello: 'bridgekeeper.hello',
  /** Notification, client → server: stop working on a pending request. */
  cancel: 'bridgekeeper.cancel',
  /** Notification, server → client: an authorization prompt for a pending request is on screen. */
  prompt: 'bridgekeeper.prompt',
  /** Notification, server → client: a pending request waits behind another session's prompt. */
  queued: 'bridgekeeper.queued',
  /** Notification, server → client: the server is about to close this connection, and why. */
  closing: 'bridgekeeper.closing',
} as const;

/** The reserved method prefix. */
export const RESERVED_PREFIX = 'bridgekeeper.';

/** JSON-RPC error numbers used on the wire. */
export const RPC_ERROR = {
  invalidRequest: -32600,
  methodNotFound: -32601,
  invalidParams: -32602,
  internal: -32603,
  /** An app error: a {@link HandlerError} thrown by a handler; `data.code` is the app's code. */
  application: -32000,
  /** Authorization refused, cancelled, cooling down, or no prompt available. */
  authorization: -32001,
  /** The peer is not (or no longer) acceptable. */
  peer: -32002,
  /** Any other Bridgekeeper error (`data.code` says which). */
  bridgekeeper: -32003,
} as const;

/** A request id: a string or an integer. */
export type RequestId = string | number;

/** A JSON-RPC request. */
export interface RpcRequest {
  jsonrpc: '2.0';
  id: RequestId;
  method: string;
  params?: unknown;
}

/** A JSON-RPC notification (no id, no answer). */
export interface RpcNotification {
  jsonrpc: '2.0';
  method: string;
  params?: unknown;
}

/** The `error` member of a JSON-RPC error response. */
export interface WireError {
  code: number;
  message: string;
  data?: {
    /** Stable string code: one of Bridgekeeper's `ERR_*` codes, or the app's own. */
    code: string;
    /** For `ERR_AUTHORIZATION_COOLDOWN`: when to try again. */
    retryAfterMs?: number;
    /** For app errors: the data the handler attached. */
    data?: unknown;
  };
}

/** A JSON-RPC response. */
export type RpcResponse =
  | { jsonrpc: '2.0'; id: RequestId; result: unknown }
  | { jsonrpc: '2.0'; id: RequestId | null; error: WireError };

/** Parameters of `bridgekeeper.hello`. */
export interface HelloParams {
  protocol: { min: number; max: number };
  client: { name: string; version?: string };
  /** Free-text reason the client gives; shown to the person only labelled as the client's claim. */
  reason?: string;
}

/** Result of `bridgekeeper.hello`. */
export interface HelloResult {
  protocol: number;
  server: { name: string; version: string };
  /** The session the server placed this connection in. */
  session: { id: string; scope: 'terminal' | 'process' };
  limits: { maxFrameBytes: number };
}

/** Parameters of the `bridgekeeper.prompt` notification. */
export interface PromptNoticeParams {
  requestId: RequestId;
  account: { id: string; displayName: string };
  backend: string;
}

/** Parameters of the `bridgekeeper.queued` notification. */
export interface QueuedNoticeParams {
  requestId: RequestId;
  position: number;
}

/** Parameters of the `bridgekeeper.closing` notification. */
export interface ClosingNoticeParams {
  /** `shutdown`, `protocol-error`, `handshake-timeout`, `connection-limit`, `peer-changed`. */
  reason: string;
  /** Stable error code matching the reason, when there is one. */
  code?: string;
  message: string;
}

/** Classified incoming message. */
export type IncomingMessage =
  | { kind: 'request'; message: RpcRequest }
  | { kind: 'notification'; message: RpcNotification }
  | { kind: 'response'; message: RpcResponse }
  | { kind: 'invalid'; reason: string; id?: RequestId };

function isRequestId(value: unknown): value is RequestId {
  return (
    (typeof value === 'string' && value.length <= 256) ||
    (typeof value === 'number' && Number.isSafeInteger(value))
  );
}

/** JSON-RPC params: absent, an object or an array. @internal */
export function isParams(value: unknown): boolean {
  return value === undefined || (typeof value === 'object' && value !== null);
}

/**
 * Classifies a decoded message as request / notification / response, or says why it is not
 * a valid JSON-RPC 2.0 message.
 *
 * @internal
 */
export function classifyMessage(message: Message): IncomingMessage {
  if (message.jsonrpc !== '2.0') return { kind: 'invalid', reason: 'jsonrpc must be "2.0"' };
  const hasId = Object.hasOwn(message, 'id');
  if (typeof message.method === 'string') {
    if (message.method.length === 0 || message.method.length > 256) {
      return { kind: 'invalid', reason: 'method must be 1–256 characters' };
    }
    if (!isParams(message.params)) {
      return { kind: 'invalid', reason: 'params must be an object or an array' };
    }
    if (!hasId) return { kind: 'notification', message: message as unknown as RpcNotification };
    if (!isRequestId(message.id)) {
      return { kind: 'invalid', reason: 'id must be a string or an integer' };
    }
    return { kind: 'request', message: message as unknown as RpcRequest };
  }
  if (Object.hasOwn(message, 'method'))
    return { kind: 'invalid', reason: 'method must be a string' };
  if (hasId && (Object.hasOwn(message, 'result') || Object.hasOwn(message, 'error'))) {
    if (message.id !== null && !isRequestId(message.id)) {
      return { kind: 'invalid', reason: 'id must be a string or an integer' };
    }
    if (Object.hasOwn(message, 'error')) {
      const error = message.error as Partial<WireError> | null;
      if (
        typeof error !== 'object' ||
        error === null ||
        typeof error.code !== 'number' ||
        typeof error.message !== 'string'
      ) {
        return { kind: 'invalid', reason: 'error must have a numeric code and a message' };
      }
    }
    return { kind: 'response', message: message as unknown as RpcResponse };
  }
  return { kind: 'invalid', reason: 'not a request, notification or response' };
}

/** @internal */
export function request(id: RequestId, method: string, params?: unknown): Message {
  return params === undefined
    ? { jsonrpc: '2.0', id, method }
    : { jsonrpc: '2.0', id, method, params };
}

/** @internal */
export function notification(method: string, params?: unknown): Message {
  return params === undefined ? { jsonrpc: '2.0', method } : { jsonrpc: '2.0', method, params };
}

/** @internal */
export function resultResponse(id: RequestId, result: unknown): Message {
  return { jsonrpc: '2.0', id, result: result === undefined ? null : result };
}

/** @internal */
export function errorResponse(id: RequestId | null, error: WireError): Message {
  return { jsonrpc: '2.0', id, error };
}

const AUTHORIZATION_CODES = new Set([
  'ERR_AUTHORIZATION_DENIED',
  'ERR_AUTHORIZATION_CANCELLED',
  'ERR_AUTHORIZATION_COOLDOWN',
  'ERR_PROMPT_UNAVAILABLE',
  'ERR_PROMPT_FAILED',
]);

const PEER_CODES = new Set(['ERR_PEER_REJECTED', 'ERR_PEER_CHANGED', 'ERR_PEER_UNKNOWN']);

/**
 * Turns an error thrown while serving a request into the wire error the client sees. Only
 * {@link HandlerError}s and Bridgekeeper's own errors carry their message across; anything else
 * becomes a generic `ERR_INTERNAL` so that app internals never leak to a client.
 *
 * @internal
 */
export function toWireError(error: unknown): WireError {
  if (error instanceof HandlerError) {
    const data: WireError['data'] = { code: error.code };
    if (error.data !== undefined) data.data = error.data;
    return { code: RPC_ERROR.application, message: error.message, data };
  }
  if (error instanceof BridgekeeperError) {
    const data: NonNullable<WireError['data']> = { code: error.code };
    if (error instanceof AuthorizationError && error.retryAfterMs !== undefined) {
      data.retryAfterMs = error.retryAfterMs;
    }
    let code: number = RPC_ERROR.bridgekeeper;
    if (AUTHORIZATION_CODES.has(error.code)) code = RPC_ERROR.authorization;
    else if (PEER_CODES.has(error.code)) code = RPC_ERROR.peer;
    else if (error.code === 'ERR_METHOD_NOT_FOUND') code = RPC_ERROR.methodNotFound;
    else if (error.code === 'ERR_INVALID_PARAMS') code = RPC_ERROR.invalidParams;
    else if (error.code === 'ERR_PROTOCOL') code = RPC_ERROR.invalidRequest;
    else if (error.code === 'ERR_INTERNAL') code = RPC_ERROR.internal;
    return { code, message: error.message, data };
  }
  return {
    code: RPC_ERROR.internal,
    message: 'The app failed while handling this request. Its log has the details.',
    data: { code: 'ERR_INTERNAL' },
  };
}

/**
 * Turns a wire error back into an error to throw on the client: Bridgekeeper's own codes give
 * the matching class; app codes give a {@link RemoteError}.
 *
 * @internal
 */
export function fromWireError(wire: WireError, method: string): BridgekeeperError {
  const message = typeof wire.message === 'string' ? wire.message : 'The app reported an error.';
  const code = typeof wire.data?.code === 'string' ? wire.data.code : undefined;
  if (code !== undefined && isErrorCode(code)) {
    const retryAfterMs =
      typeof wire.data?.retryAfterMs === 'number' ? wire.data.retryAfterMs : undefined;
    return createError(code, message, retryAfterMs === undefined ? {} : { retryAfterMs });
  }
  if (code !== undefined && wire.code === RPC_ERROR.application) {
    return new RemoteError(code, message, { data: wire.data?.data });
  }
  switch (wire.code) {
    case RPC_ERROR.methodNotFound:
      return createError('ERR_METHOD_NOT_FOUND', `The app has no method "${method}". ${message}`);
    case RPC_ERROR.invalidParams:
      return createError('ERR_INVALID_PARAMS', message);
    case RPC_ERROR.invalidRequest:
      return createError('ERR_PROTOCOL', message);
    default:
      return createError('ERR_INTERNAL', message);
  }
}
