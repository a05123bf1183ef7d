/**
 * Objective-C blocks built from JavaScript functions, for the macOS APIs that take one:
 * LocalAuthentication's `evaluatePolicy:localizedReason:reply:` and libxpc's event handlers.
 *
 * A block is a small struct (Clang's Block ABI): `isa`, `flags`, `reserved`, `invoke` (the
 * function the caller runs, with the block itself as first argument) and a `descriptor`
 * (`reserved`, `size`). This module writes one by hand: `isa` is `_NSConcreteGlobalBlock`,
 * `flags` is `BLOCK_IS_GLOBAL`, and `invoke` is a `koffi.register`ed callback. The runtime's
 * `_Block_copy` returns a global block itself instead of copying it, and `_Block_release`
 * leaves it alone, so the struct below is the one every copy points at; an API that keeps the
 * block (every asynchronous one does) calls it later, from its own thread. koffi runs a
 * callback that arrives on a foreign thread on the JS thread, while that thread waits.
 *
 * Lifecycle, which the caller owns:
 * 1. {@link BlockFactory.makeBlock} registers the callback and, by default, refs the event loop
 *    (a callback from a native thread does not keep Node alive; without the ref, a CLI waiting
 *    for a Touch ID answer would simply exit).
 * 2. Pass {@link ObjCBlock.pointer} to the native API.
 * 3. Call {@link ObjCBlock.dispose} once the block can no longer be called: after the one
 *    reply of a one-shot API (it may be called from inside the function), or after the
 *    connection that holds an event handler was cancelled and its last event arrived. Disposing
 *    unrefs the loop at once and, a moment later (so the native thread that made the last call
 *    has returned from it), points the block's `invoke` at a shared no-op and unregisters the
 *    callback. The block's own memory (48 bytes) is never freed: the runtime may still
 *    `_Block_release` a copy it kept, and reads the block's flags to do so. A `void` block
 *    called after it was disposed then does nothing; one returning a value keeps its callback
 *    registered instead (a leaked callback slot), since a no-op cannot return its value.
 *
 * This file touches koffi only through the instance and the loaded block runtime it is given
 * (libSystem on macOS, `libBlocksRuntime.so.0` on Linux, where the tests run it for real);
 * `src/platform/darwin/bindings.ts` loads them lazily.
 *
 * @module
 * @internal
 */

import { BridgekeeperError, PlatformError } from '../../errors.js';
import { createLog } from '../../util/log.js';

const debug = createLog('bridgekeeper:darwin:blocks');

/** Byte offset of `invoke` in a block literal (after `isa`, `flags`, `reserved`). */
const INVOKE_OFFSET = 16;

/** `BLOCK_IS_GLOBAL` from the Block ABI: `_Block_copy` returns the block itself. */
export const BLOCK_IS_GLOBAL = 1 << 28;

/**
 * How long {@link ObjCBlock.dispose} waits before unregistering the callback, so that a native
 * thread whose call just ran on the JS thread has returned through koffi's trampoline.
 */
export const UNREGISTER_DELAY_MS = 1_000;

// Native code holds only a block's address: its memory stays reachable from this module-level
// set for the life of the process, whether or not anyone keeps the ObjCBlock or factory.
const live = new Set<Buffer>();

/** A koffi type object, as far as this module reads it. */
interface KoffiType {
  proto?: { arguments: Array<{ type?: { primitive?: string } }> };
}

/** The parts of koffi this module uses (its `default` export satisfies it). */
export interface BlocksKoffi {
  proto(definition: string): KoffiType;
  pointer(type: KoffiType): KoffiType;
  struct(members: Record<string, string>): KoffiType;
  sizeof(type: KoffiType): number;
  encode(buffer: Buffer, offset: number, type: KoffiType, value: unknown): void;
  address(value: unknown): bigint;
  register(callback: (...args: never[]) => unknown, type: KoffiType): bigint;
  unregister(callback: bigint): void;
}

/** The loaded block runtime: libSystem on macOS, `libBlocksRuntime.so.0` on Linux. */
export interface BlockRuntime {
  /** The library, as `koffi.load` returned it. */
  lib: { func(definition: string): (...args: never[]) => unknown };
  /** The address of `_NSConcreteGlobalBlock` (`lib.symbol('_NSConcreteGlobalBlock')`). */
  globalBlockIsa: bigint;
}

/** A block that native code may call; see the module's lifecycle notes. */
export interface ObjCBlock {
  /** The block's address, to pass to the native API. */
  readonly pointer: bigint;
  /** Whether {@link dispose} was called. */
  readonly disposed: boolean;
  /**
   * Releases the block: unrefs the event loop now and unregisters the callback after
   * {@link UNREGISTER_DELAY_MS}. Call it only once no native code will call the block again;
   * calling it from inside the block's function is fine. Idempotent.
   */
  dispose(): void;
  /**
   * Stops keeping the process alive, without disposing: for a block native code may still call
   * but nobody waits for any more (a reply after its request was abandoned). Idempotent.
   */
  unref(): void;
}

/** Options for {@link BlockFactory.makeBlock}. */
export interface MakeBlockOptions {
  /**
   * Keep the process alive (a ref'd timer) until {@link ObjCBlock.dispose}. Default `true`:
   * calls from native threads do not count as pending work for Node.
   */
  keepAlive?: boolean;
}

/** Builds blocks against one koffi instance and one block runtime. */
export interface BlockFactory {
  /**
   * Makes a global block whose `invoke` calls `fn` on the JS thread.
   *
   * @param signature The koffi prototype of `invoke`, the block pointer first, e.g.
   *   `'void reply(void *block, bool success, void *error)'`.
   * @param fn Receives `invoke`'s arguments after the block pointer, and returns its result.
   *   An exception it throws is rethrown on a later turn of the event loop (never into native
   *   code); the native caller then gets `undefined` as the result.
   * @throws `ERR_INVALID_ARGUMENT` when `signature` does not parse or its first parameter is
   *   not a pointer.
   */
  makeBlock(
    signature: string,
    fn: (...args: never[]) => unknown,
    options?: MakeBlockOptions,
  ): ObjCBlock;
}

/**
 * Creates a {@link BlockFactory}, checking once that the runtime treats a block made here as a
 * global block (`_Block_copy` returns the same pointer), so a wrong `isa` or layout fails here
 * rather than as a crash in a native thread.
 *
 * @throws `ERR_UNSUPPORTED_PLATFORM` when pointers are not 64-bit, `globalBlockIsa` is null, or
 *   the runtime copied the probe block (it would then call a copy this module does not own).
 */
export function createBlockFactory(koffi: BlocksKoffi, runtime: BlockRuntime): BlockFactory {
  // Anonymous: koffi's named types are process-wide, and a second factory would clash.
  const literal = koffi.struct({
    isa: 'void *',
    flags: 'int32_t',
    reserved: 'int32_t',
    invoke: 'void *',
    descriptor: 'void *',
  });
  const descriptor = koffi.struct({
    reserved: 'unsigned long',
    size: 'unsigned long',
  });
  const literalSize = koffi.sizeof(literal);
  if (koffi.sizeof('void *' as unknown as KoffiType) !== 8 || literalSize !== 32) {
    throw new PlatformError(
      'ERR_UNSUPPORTED_PLATFORM',
      'Objective-C blocks are only supported on 64-bit systems; use a 64-bit Node.',
    );
  }
  if (!runtime.globalBlockIsa) {
    throw new PlatformError(
      'ERR_UNSUPPORTED_PLATFORM',
      'The block runtime has no _NSConcreteGlobalBlock; check that the right library was loaded ' +
        '(libSystem on macOS, libBlocksRuntime.so.0 on Linux).',
    );
  }
  const blockCopy = runtime.lib.func('void *_Block_copy(void *block)') as (b: bigint) => unknown;
  const blockRelease = runtime.lib.func('void _Block_release(void *block)') as (b: bigint) => void;
  const protos = new Map<string, KoffiType>();
  // What a disposed void block's invoke points at: registered once, never unregistered.
  const noop = koffi.register(() => undefined, koffi.pointer(koffi.proto('void (void *block)')));

  // One allocation per block: the literal, then its descriptor.
  const write = (invoke: bigint): Buffer => {
    const memory = Buffer.alloc(literalSize + koffi.sizeof(descriptor));
    const base = koffi.address(memory);
    koffi.encode(memory, 0, literal, {
      isa: runtime.globalBlockIsa,
      flags: BLOCK_IS_GLOBAL,
      reserved: 0,
      invoke,
      descriptor: base + BigInt(literalSize),
    });
    koffi.encode(memory, literalSize, descriptor, { reserved: 0, size: literalSize });
    return memory;
  };

  // The probe: a global block is never copied, so a copy that comes back different means this
  // runtime would call memory we do not control.
  const probe = write(0n);
  const probeAddress = koffi.address(probe);
  const copied = toAddress(blockCopy(probeAddress));
  if (copied !== probeAddress) {
    throw new PlatformError(
      'ERR_UNSUPPORTED_PLATFORM',
      'The block runtime copied a global block instead of returning it; Objective-C blocks ' +
        'cannot be built on this system.',
    );
  }
  blockRelease(copied);

  return {
    makeBlock(signature, fn, options = {}) {
      let type = protos.get(signature);
      try {
        type ??= koffi.proto(anonymous(signature));
      } catch (error) {
        throw new BridgekeeperError(
          'ERR_INVALID_ARGUMENT',
          `The block signature "${signature}" is not a C prototype koffi understands.`,
          { cause: error },
        );
      }
      protos.set(signature, type);
      if (type.proto?.arguments[0]?.type?.primitive !== 'Pointer') {
        throw new BridgekeeperError(
          'ERR_INVALID_ARGUMENT',
          `The block signature "${signature}" must take the block pointer as its first parameter.`,
        );
      }

      const returnsVoid = /^\s*void\s+(?!\*)/.test(signature);
      let disposed = false;
      const invoke = (_block: unknown, ...args: never[]): unknown => {
        if (disposed) {
          debug('a disposed block was called; ignoring the call');
          return undefined;
        }
        try {
          return fn(...args);
        } catch (error) {
          // Never unwind into native frames: report it on a later turn instead.
          setImmediate(() => {
            throw error;
          });
          return undefined;
        }
      };
      const callback = koffi.register(invoke, koffi.pointer(type));
      const memory = write(callback);
      live.add(memory);
      const pointer = koffi.address(memory);
      let keepAlive = options.keepAlive === false ? undefined : setInterval(() => {}, 2 ** 30);
      debug('made block %s', pointer.toString(16));

      return {
        pointer,
        get disposed() {
          return disposed;
        },
        unref() {
          if (keepAlive) clearInterval(keepAlive);
          keepAlive = undefined;
        },
        dispose() {
          if (disposed) return;
          disposed = true;
          if (keepAlive) clearInterval(keepAlive);
          keepAlive = undefined;
          // Unref'd: a process that has nothing else to do may exit meanwhile, and the callback
          // slot goes with it.
          setTimeout(() => {
            if (!returnsVoid) {
              debug(
                'block %s returns a value: its callback stays registered',
                pointer.toString(16),
              );
              return;
            }
            koffi.encode(memory, INVOKE_OFFSET, 'void *' as unknown as KoffiType, noop);
            koffi.unregister(callback);
            debug('disposed block %s', pointer.toString(16));
          }, UNREGISTER_DELAY_MS).unref();
        },
      };
    },
  };
}

/**
 * Drops the function name from a prototype (`void reply(void *b)` → `void (void *b)`): koffi's
 * named types are process-wide, and a second factory (or a reused name) would clash.
 */
function anonymous(signature: string): string {
  const match = /^([^()]*?)([A-Za-z_]\w*)\s*\(/.exec(signature);
  if (!match || !/\S/.test(match[1]!)) return signature; // already anonymous
  return `${match[1]!.trimEnd()} ${signature.slice(match[0].length - 1)}`;
}

function toAddress(value: unknown): bigint | undefined {
  if (typeof value === 'bigint') return value;
  if (typeof value === 'number') return BigInt(value);
  return undefined; // null: a NULL pointer
}
