/**
 * libxpc for the XPC transport (`src/transport/xpc.ts`): the {@link XpcBindings} it uses, built
 * over {@link XpcNative}, the raw C functions and symbols koffi binds in `bindings.ts`. What is
 * decided here — which XPC objects are retained and released, how an event object becomes an
 * {@link XpcEvent}, when the handler block may go — is tested with a fake libxpc on any OS.
 *
 * Ownership (libxpc is not ARC here; Apple's rules for C):
 * - `xpc_connection_create_mach_service` returns a connection we own; a connection handed to a
 *   listener's handler is NOT ours: it is retained here before the handler returns.
 * - Every connection we own is released after its last event, `XPC_ERROR_CONNECTION_INVALID`,
 *   on the next turn of the event loop (libxpc is still inside the handler when it arrives).
 * - An event object is valid only during the handler call: a message's data is copied out then.
 * - A message dictionary we build is released right after `xpc_connection_send_message`, which
 *   retains what it needs.
 * - The handler block is disposed after `XPC_ERROR_CONNECTION_INVALID` (libxpc releases its copy
 *   of the handler then, and calls it no more); a barrier block after its one call.
 *
 * Never run on a Mac (see docs/macos.md).
 *
 * @module
 * @internal
 */

import { createError, errorMessage, PlatformError } from '../../errors.js';
import {
  XPC_KEYS,
  type XpcBindings,
  type XpcConnection,
  type XpcEvent,
  type XpcMessageKind,
} from '../../transport/xpc.js';
import { isCodeRequirementText } from '../../util/code-requirement.js';
import { createLog } from '../../util/log.js';
import type { BlockFactory } from './blocks.js';

const debug = createLog('bridgekeeper:darwin:xpc');

/** `EINVAL` on Darwin: what libxpc returns for a requirement that does not compile. */
const EINVAL = 22;

/** `XPC_CONNECTION_MACH_SERVICE_LISTENER` (`<xpc/connection.h>`). */
export const XPC_CONNECTION_MACH_SERVICE_LISTENER = 1;

/** The signature of an `xpc_handler_t` block: the block, then the event object. */
export const XPC_HANDLER_SIGNATURE = 'void handler(void *block, void *object)';

/** The signature of a `dispatch_block_t` (the barrier): the block alone. */
export const XPC_BARRIER_SIGNATURE = 'void barrier(void *block)';

/** A pointer as koffi 3 returns it: `null` for NULL. */
type Pointer = bigint | null;

/**
 * The raw libxpc functions and symbol addresses {@link createXpcBindings} works with, as C
 * takes them; koffi binds them on a Mac (`bindings.ts`), tests pass a fake.
 */
export interface XpcNative {
  xpc_connection_create_mach_service(name: string, queue: null, flags: number): Pointer;
  xpc_connection_set_event_handler(connection: bigint, block: bigint): void;
  /** Absent before macOS 12 (the symbol does not exist). Returns 0 or an errno. */
  xpc_connection_set_peer_code_signing_requirement?: (
    connection: bigint,
    requirement: string,
  ) => number;
  xpc_connection_resume(connection: bigint): void;
  xpc_connection_cancel(connection: bigint): void;
  xpc_connection_send_barrier(connection: bigint, block: bigint): void;
  xpc_connection_send_message(connection: bigint, message: bigint): void;
  xpc_connection_get_pid(connection: bigint): number;
  xpc_connection_get_euid(connection: bigint): number;
  xpc_dictionary_create(keys: null, values: null, count: number): Pointer;
  xpc_dictionary_set_data(dictionary: bigint, key: string, bytes: Buffer, length: number): void;
  xpc_dictionary_set_bool(dictionary: bigint, key: string, value: boolean): void;
  /** Writes the length (`size_t`) to `length`; returns a pointer into the dictionary, or NULL. */
  xpc_dictionary_get_data(dictionary: bigint, key: string, length: Buffer): Pointer;
  xpc_dictionary_get_value(dictionary: bigint, key: string): Pointer;
  xpc_get_type(object: bigint): Pointer;
  xpc_retain(object: bigint): Pointer;
  xpc_release(object: bigint): void;
  /** A copy of `length` bytes at `pointer` (`koffi.view`). */
  copyBytes(pointer: bigint, length: number): Buffer;
  /** `XPC_TYPE_DICTIONARY`, `XPC_TYPE_ERROR`, `XPC_TYPE_CONNECTION`: symbol addresses. */
  readonly types: {
    readonly dictionary: bigint;
    readonly error: bigint;
    readonly connection: bigint;
  };
  /** The `XPC_ERROR_*` objects (symbol addresses); `peerRequirement` is absent before macOS 12. */
  readonly errors: {
    readonly interrupted: bigint;
    readonly invalid: bigint;
    readonly terminationImminent: bigint;
    readonly peerRequirement?: bigint;
  };
}

const isNull = (pointer: Pointer): pointer is null => pointer === null || pointer === 0n;

/** The order in which a dictionary's keys are looked at: data first (a frame). */
const KINDS: readonly XpcMessageKind[] = ['frame', 'probe', 'probe-ack'];

/**
 * Builds the {@link XpcBindings} of the XPC transport over raw libxpc and a block factory.
 *
 * @internal use `loadDarwinBindings().xpc`.
 */
export function createXpcBindings(native: XpcNative, blocks: BlockFactory): XpcBindings {
  /** Connections with a handler, until their last event. */
  const handled = new Set<bigint>();
  const lengthOut = Buffer.alloc(8);

  const decode = (object: bigint, maxFrameBytes: number): XpcEvent => {
    const type = native.xpc_get_type(object);
    if (type === native.types.dictionary) {
      for (const kind of KINDS) {
        const key = XPC_KEYS[kind];
        if (kind === 'frame') {
          lengthOut.fill(0);
          const bytes = native.xpc_dictionary_get_data(object, key, lengthOut);
          if (isNull(bytes)) continue;
          const length = Number(lengthOut.readBigUInt64LE(0));
          // Over the limit: reported by its length, never copied.
          if (length > maxFrameBytes) return { type: 'message', kind, oversize: length };
          return { type: 'message', kind, payload: native.copyBytes(bytes, length) };
        }
        if (!isNull(native.xpc_dictionary_get_value(object, key))) return { type: 'message', kind };
      }
      return { type: 'message', kind: 'unknown' };
    }
    if (type === native.types.error) {
      const { errors } = native;
      if (object === errors.invalid) return { type: 'error', error: 'invalid' };
      if (object === errors.interrupted) return { type: 'error', error: 'interrupted' };
      if (object === errors.terminationImminent) {
        return { type: 'error', error: 'termination-imminent' };
      }
      if (errors.peerRequirement !== undefined && object === errors.peerRequirement) {
        return { type: 'error', error: 'peer-requirement' };
      }
      return { type: 'error', error: 'other' };
    }
    if (type === native.types.connection) {
      // Valid only during this call: retained for the transport, released after its last event.
      const connection = native.xpc_retain(object);
      if (isNull(connection)) return { type: 'error', error: 'other' };
      return { type: 'connection', connection };
    }
    return { type: 'message', kind: 'unknown' };
  };

  return {
    createMachService(name, { listener }) {
      if (typeof name !== 'string' || name === '' || name.includes('\0')) {
        throw createError('ERR_INVALID_ARGUMENT', 'An XPC service name is a non-empty string.');
      }
      const connection = native.xpc_connection_create_mach_service(
        name,
        null,
        listener ? XPC_CONNECTION_MACH_SERVICE_LISTENER : 0,
      );
      if (isNull(connection)) {
        throw new PlatformError(
          'ERR_PLATFORM',
          `libxpc could not create a connection for the mach service ${name}.`,
        );
      }
      return connection;
    },

    setEventHandler(connection, handler, options = {}) {
      if (handled.has(connection)) {
        throw createError('ERR_INVALID_ARGUMENT', 'This XPC connection already has a handler.');
      }
      const maxFrameBytes = options.maxFrameBytes ?? Number.POSITIVE_INFINITY;
      let ended = false;
      // Made before the connection counts as handled: when it fails (no callback slot left), a
      // later attempt may still install a handler.
      const block = blocks.makeBlock(XPC_HANDLER_SIGNATURE, (object: Pointer) => {
        if (ended || isNull(object)) return;
        let event: XpcEvent;
        try {
          event = decode(object, maxFrameBytes);
        } catch (error) {
          debug('could not decode an XPC event: %s', errorMessage(error));
          event = { type: 'error', error: 'other' };
        }
        const last = event.type === 'error' && event.error === 'invalid';
        if (last) ended = true;
        try {
          handler(event);
        } finally {
          if (last) {
            handled.delete(connection);
            block.dispose();
            // libxpc is still inside this call: release on the next turn.
            setImmediate(() => native.xpc_release(connection));
          }
        }
      });
      handled.add(connection);
      native.xpc_connection_set_event_handler(connection, block.pointer);
    },

    setPeerRequirement(connection, requirement) {
      if (native.xpc_connection_set_peer_code_signing_requirement === undefined) {
        throw createError(
          'ERR_UNSUPPORTED_PLATFORM',
          'Checking an XPC peer’s code signature needs macOS 12 or later ' +
            '(xpc_connection_set_peer_code_signing_requirement).',
        );
      }
      if (!isCodeRequirementText(requirement)) {
        throw createError(
          'ERR_INVALID_ARGUMENT',
          'A code-signing requirement must be a non-empty string without NUL characters.',
        );
      }
      const status = native.xpc_connection_set_peer_code_signing_requirement(
        connection,
        requirement,
      );
      if (status === EINVAL) {
        throw createError(
          'ERR_INVALID_ARGUMENT',
          `libxpc refused the code-signing requirement (EINVAL): it does not compile. ` +
            `Check it with: codesign --verify --test-requirement='=${requirement}' <a signed program>`,
        );
      }
      if (status !== 0) {
        throw new PlatformError(
          'ERR_PLATFORM',
          `libxpc could not set the code-signing requirement (error ${status}).`,
        );
      }
    },

    resume(connection) {
      native.xpc_connection_resume(connection);
    },

    send(connection, kind, payload) {
      const dictionary = native.xpc_dictionary_create(null, null, 0);
      if (isNull(dictionary)) {
        throw new PlatformError('ERR_PLATFORM', 'libxpc could not create a message dictionary.');
      }
      try {
        if (kind === 'frame') {
          const bytes = payload ?? Buffer.alloc(0);
          native.xpc_dictionary_set_data(dictionary, XPC_KEYS.frame, bytes, bytes.length);
        } else {
          native.xpc_dictionary_set_bool(dictionary, XPC_KEYS[kind], true);
        }
        native.xpc_connection_send_message(connection, dictionary);
      } finally {
        native.xpc_release(dictionary);
      }
    },

    cancel(connection) {
      native.xpc_connection_cancel(connection);
    },

    barrier(connection, done) {
      let ran = false;
      const block = blocks.makeBlock(XPC_BARRIER_SIGNATURE, () => {
        if (ran) return;
        ran = true;
        // Called once: libxpc releases its copy after this call returns.
        block.dispose();
        done();
      });
      native.xpc_connection_send_barrier(connection, block.pointer);
    },

    peerPid: (connection: XpcConnection) => native.xpc_connection_get_pid(connection),
    peerEuid: (connection: XpcConnection) => native.xpc_connection_get_euid(connection),
  };
}
