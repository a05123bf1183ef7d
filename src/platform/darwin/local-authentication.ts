/**
 * `LAContext` through the Objective-C runtime: the native half of the LocalAuthentication prompt
 * backend (`src/prompt/local-authentication.ts`), written over {@link ObjCNative}, a handful of
 * typed `objc_msgSend` shapes, so that every decision here — which objects are created and
 * released, which autorelease pool drains when, when the reply block is disposed, what an
 * `NSError` from another domain means — is tested with a fake Objective-C runtime on any OS.
 * `src/platform/darwin/bindings.ts` declares the real functions through koffi.
 *
 * The calls, as Objective-C would write them:
 * - `canEvaluatePolicy`: `@autoreleasepool { LAContext *c = [[LAContext alloc] init];
 *   NSError *e = nil; BOOL ok = [c canEvaluatePolicy:policy error:&e]; … [c release]; }`.
 * - `evaluatePolicy`: `LAContext *c = [[LAContext alloc] init]; NSString *r = [[NSString alloc]
 *   initWithUTF8String:reason]; [c evaluatePolicy:policy localizedReason:r reply:block];
 *   [r release];` — the block, `^(BOOL success, NSError *error)`, is built with `./blocks.ts` and
 *   runs on a LocalAuthentication queue; koffi runs it on the JS thread while that queue waits.
 *   The `NSError` is read inside the block (it is only valid during the call), in a pool of its
 *   own. The context is released on the next turn of the event loop, after the framework's
 *   thread has returned from the block, and the block is disposed after its one call.
 * - On abort: `[c invalidate]`, after which LocalAuthentication replies `LAErrorAppCancel`.
 *
 * Nothing here has run on a Mac (see docs/macos.md); the selectors, `LAErrorDomain` and the
 * ownership rules are Apple's documented ones.
 *
 * @module
 * @internal
 */

import { BridgekeeperError, createError, errorMessage, PlatformError } from '../../errors.js';
import type {
  LocalAuthenticationBindings,
  LocalAuthenticationPolicy,
  LocalAuthenticationResult,
} from '../../prompt/local-authentication.js';
import { createLog } from '../../util/log.js';
import type { BlockFactory, ObjCBlock } from './blocks.js';

const debug = createLog('bridgekeeper:darwin:local-authentication');

/** An Objective-C object or class pointer as koffi 3 returns it: `null` for `nil`. */
export type ObjCPointer = bigint | null;

/**
 * The Objective-C runtime calls {@link createLocalAuthenticationBindings} makes: `objc_getClass`,
 * `sel_registerName`, and `objc_msgSend` declared once per shape used (on arm64 a message must
 * be sent through a prototype that matches the method exactly). The real one is declared in
 * `bindings.ts`; tests pass a fake runtime.
 */
export interface ObjCNative {
  objc_getClass(name: string): ObjCPointer;
  sel_registerName(name: string): ObjCPointer;
  /** `id objc_msgSend(id, SEL)`: `alloc`, `init`, `new`, `domain`. */
  sendId(receiver: bigint, selector: bigint): ObjCPointer;
  /** `void objc_msgSend(id, SEL)`: `release`, `invalidate`, `drain`. */
  sendVoid(receiver: bigint, selector: bigint): void;
  /** `id objc_msgSend(id, SEL, const char *)`: `initWithUTF8String:`. */
  sendIdCString(receiver: bigint, selector: bigint, text: string): ObjCPointer;
  /** `BOOL objc_msgSend(id, SEL, NSInteger, NSError **)`: `canEvaluatePolicy:error:`. */
  sendBoolIntegerOut(receiver: bigint, selector: bigint, value: number, out: Buffer): number;
  /** `void objc_msgSend(id, SEL, NSInteger, id, id)`: `evaluatePolicy:localizedReason:reply:`. */
  sendVoidIntegerIdId(
    receiver: bigint,
    selector: bigint,
    value: number,
    object: bigint,
    block: bigint,
  ): void;
  /** `NSInteger objc_msgSend(id, SEL)`: `-[NSError code]`. */
  sendInteger(receiver: bigint, selector: bigint): number | bigint;
  /** `BOOL objc_msgSend(id, SEL, id)`: `isEqualToString:`. */
  sendBoolId(receiver: bigint, selector: bigint, object: bigint): number;
  /** `const char *objc_msgSend(id, SEL)`: `UTF8String` (copied into a JS string at once). */
  sendCString(receiver: bigint, selector: bigint): string | null;
  /** The value of `LAErrorDomain` (an `NSString *`). */
  readonly laErrorDomain: bigint;
}

/** The signature of the reply block: the block, `BOOL success`, `NSError *error`. */
export const REPLY_BLOCK_SIGNATURE = 'void reply(void *block, int8_t success, void *error)';

/** `LAErrorAppCancel`: what an invalidated context replies, and the answer to an early abort. */
const APP_CANCEL = -9;

const isNil = (pointer: ObjCPointer): pointer is null => pointer === null || pointer === 0n;

function machineryError(message: string, cause?: unknown): PlatformError {
  return new PlatformError(
    'ERR_PLATFORM',
    `LocalAuthentication: ${message}`,
    cause === undefined ? {} : { cause },
  );
}

/**
 * Builds the {@link LocalAuthenticationBindings} the prompt backend uses over an Objective-C
 * runtime and a block factory. Classes and selectors are looked up once, here.
 *
 * @throws `ERR_PLATFORM` when `LAContext`, `NSString` or `NSAutoreleasePool` is not a class the
 * runtime knows (LocalAuthentication or Foundation did not load).
 *
 * @internal use `loadDarwinBindings().localAuthentication`.
 */
export function createLocalAuthenticationBindings(
  objc: ObjCNative,
  blocks: BlockFactory,
): LocalAuthenticationBindings {
  const classOf = (name: string): bigint => {
    const found = objc.objc_getClass(name);
    if (isNil(found)) {
      throw machineryError(
        `the Objective-C class ${name} is missing; LocalAuthentication.framework or Foundation did not load.`,
      );
    }
    return found;
  };
  const selector = (name: string): bigint => {
    const found = objc.sel_registerName(name);
    if (isNil(found)) throw machineryError(`the selector ${name} could not be registered.`);
    return found;
  };
  const LAContext = classOf('LAContext');
  const NSString = classOf('NSString');
  const NSAutoreleasePool = classOf('NSAutoreleasePool');
  const SEL = {
    alloc: selector('alloc'),
    init: selector('init'),
    new: selector('new'),
    release: selector('release'),
    drain: selector('drain'),
    initWithUTF8String: selector('initWithUTF8String:'),
    canEvaluatePolicy: selector('canEvaluatePolicy:error:'),
    evaluatePolicy: selector('evaluatePolicy:localizedReason:reply:'),
    invalidate: selector('invalidate'),
    domain: selector('domain'),
    code: selector('code'),
    isEqualToString: selector('isEqualToString:'),
    UTF8String: selector('UTF8String'),
  } as const;

  const release = (object: bigint): void => objc.sendVoid(object, SEL.release);

  /** Runs `body` inside an autorelease pool of its own, drained on every path. */
  const inPool = <T>(body: () => T): T => {
    const pool = objc.sendId(NSAutoreleasePool, SEL.new);
    if (isNil(pool)) throw machineryError('an autorelease pool could not be created.');
    try {
      return body();
    } finally {
      objc.sendVoid(pool, SEL.drain);
    }
  };

  /** `[[LAContext alloc] init]`, owned by the caller. */
  const newContext = (): bigint => {
    const allocated = objc.sendId(LAContext, SEL.alloc);
    if (isNil(allocated)) throw machineryError('[LAContext alloc] returned nil.');
    const context = objc.sendId(allocated, SEL.init);
    if (isNil(context)) throw machineryError('[LAContext init] returned nil.');
    return context;
  };

  /**
   * What an `NSError` says, as a {@link LocalAuthenticationResult}: only an error in
   * `LAErrorDomain` is an answer; a missing error or another domain is a broken call.
   */
  const answerOf = (error: bigint | null, call: string): LocalAuthenticationResult => {
    if (isNil(error)) throw machineryError(`${call} failed without an NSError.`);
    const code = Number(objc.sendInteger(error, SEL.code));
    const domain = objc.sendId(error, SEL.domain);
    if (isNil(domain) || objc.sendBoolId(domain, SEL.isEqualToString, objc.laErrorDomain) === 0) {
      const name = isNil(domain) ? 'no domain' : (objc.sendCString(domain, SEL.UTF8String) ?? '?');
      throw machineryError(
        `${call} failed with an error from ${name} (code ${code}), not from LocalAuthentication.`,
      );
    }
    return { ok: false, code };
  };

  return {
    canEvaluatePolicy(policy: LocalAuthenticationPolicy): LocalAuthenticationResult {
      return inPool(() => {
        const context = newContext();
        try {
          const errorOut = Buffer.alloc(8);
          const yes = objc.sendBoolIntegerOut(context, SEL.canEvaluatePolicy, policy, errorOut);
          if (yes !== 0) return { ok: true };
          return answerOf(errorOut.readBigUInt64LE(0), 'canEvaluatePolicy:error:');
        } finally {
          release(context);
        }
      });
    },

    evaluatePolicy(policy, reason, { signal }): Promise<LocalAuthenticationResult> {
      if (signal.aborted) return Promise.resolve({ ok: false, code: APP_CANCEL });
      // An empty reason makes LocalAuthentication raise an Objective-C exception, which would
      // abort the process on its way through koffi.
      if (typeof reason !== 'string' || reason.trim() === '' || reason.includes('\0')) {
        return Promise.reject(
          createError(
            'ERR_INVALID_ARGUMENT',
            'The LocalAuthentication reason must be a non-empty string without NUL characters.',
          ),
        );
      }
      return new Promise((resolve, reject) => {
        let context: bigint;
        let text: bigint;
        try {
          ({ context, text } = inPool(() => {
            const created = newContext();
            const allocated = objc.sendId(NSString, SEL.alloc);
            const string = isNil(allocated)
              ? null
              : objc.sendIdCString(allocated, SEL.initWithUTF8String, reason);
            if (isNil(string)) {
              release(created);
              throw machineryError('the reason could not be made into an NSString.');
            }
            return { context: created, text: string };
          }));
        } catch (error) {
          reject(asPlatformError(error));
          return;
        }

        let replied = false;
        let block: ObjCBlock | undefined;
        const onAbort = (): void => {
          if (replied) return;
          // Nobody waits for the reply any more: it must not keep the process alive. The block
          // stays registered, since LocalAuthentication still calls it.
          block?.unref();
          debug('aborted: invalidating the LAContext');
          try {
            inPool(() => objc.sendVoid(context, SEL.invalidate));
          } catch (error) {
            // The reply may still come; if it does not, the backend already settled on abort.
            debug('invalidate failed: %s', errorMessage(error));
          }
        };
        try {
          block = blocks.makeBlock(REPLY_BLOCK_SIGNATURE, (success: number, error: ObjCPointer) => {
            if (replied) return;
            replied = true;
            signal.removeEventListener('abort', onAbort);
            let outcome: LocalAuthenticationResult | undefined;
            let failure: unknown;
            try {
              outcome = inPool(() =>
                success !== 0
                  ? { ok: true }
                  : answerOf(error, 'evaluatePolicy:localizedReason:reply:'),
              );
            } catch (caught) {
              failure = caught;
            }
            // The framework's thread is still inside this call: let it return before the block's
            // callback goes and before the context it belongs to is released.
            block?.dispose();
            setImmediate(() => release(context));
            if (failure === undefined) resolve(outcome!);
            else reject(asPlatformError(failure));
          });
        } catch (error) {
          // No block (no callback slot left): nothing was handed to the framework.
          release(text);
          release(context);
          reject(asPlatformError(error));
          return;
        }
        const reply = block;

        signal.addEventListener('abort', onAbort, { once: true });
        try {
          inPool(() =>
            objc.sendVoidIntegerIdId(context, SEL.evaluatePolicy, policy, text, reply.pointer),
          );
        } catch (error) {
          // The call never reached the framework (koffi refused it): nothing will reply.
          signal.removeEventListener('abort', onAbort);
          if (!replied) {
            replied = true;
            reply.dispose();
            release(context);
          }
          reject(asPlatformError(error));
        } finally {
          // The context keeps its own reference to the reason.
          release(text);
        }
      });
    },
  };
}

function asPlatformError(error: unknown): BridgekeeperError {
  if (error instanceof BridgekeeperError) return error;
  return machineryError(errorMessage(error), error);
}
