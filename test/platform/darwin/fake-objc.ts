/**
 * A fake Objective-C runtime with `LAContext`, `NSString`, `NSError` and `NSAutoreleasePool`, for
 * the LocalAuthentication bindings (src/platform/darwin/local-authentication.ts). It models what
 * makes such code crash or leak on a Mac and throws instead:
 * - reference counts: `alloc` gives +1, `release` −1; a message to a freed object throws;
 * - autorelease pools: a stack per thread (one here); an autoreleased object made with no pool
 *   throws ("leaks"); `drain` of a pool that is not the top one throws;
 * - the reply block's `NSError` is valid only during the call (freed when it returns);
 * - a block called after it was disposed throws (a crash on a Mac);
 * - `LAContext` retains its reason string and releases it when freed.
 * It also counts what happened so tests can assert ownership on every path.
 */

import type { BlockFactory, ObjCBlock } from '../../../src/platform/darwin/blocks.js';
import type { ObjCNative, ObjCPointer } from '../../../src/platform/darwin/local-authentication.js';

export const LA_ERROR_DOMAIN = 'com.apple.LocalAuthentication';

type Kind = 'class' | 'LAContext' | 'NSString' | 'NSError' | 'NSAutoreleasePool';

interface FakeObject {
  readonly id: bigint;
  readonly kind: Kind;
  refs: number;
  freed: boolean;
  /** NSString: its text. NSError: its domain's text. Class: its name. */
  text?: string;
  /** NSError: its code and domain object. */
  code?: number;
  domain?: bigint;
  /** LAContext: the reason it retained, whether it was invalidated, its pending reply block. */
  reason?: bigint;
  invalidated?: boolean;
  pendingBlock?: bigint;
  initialized?: boolean;
}

/** What `canEvaluatePolicy:error:` or a reply answers in the fake. */
export type FakeAnswer =
  | { readonly ok: true }
  | { readonly ok: false; readonly code?: number; readonly domain?: string | null };

/** Blocks made through {@link FakeBlocks}, callable as a LocalAuthentication thread would. */
export class FakeBlocks implements BlockFactory {
  readonly blocks = new Map<
    bigint,
    {
      signature: string;
      fn: (...args: never[]) => unknown;
      disposed: number;
      calls: number;
      unrefs: number;
    }
  >();
  #next = 0x9000n;

  makeBlock(signature: string, fn: (...args: never[]) => unknown): ObjCBlock {
    const pointer = this.#next++;
    const record = { signature, fn, disposed: 0, calls: 0, unrefs: 0 };
    this.blocks.set(pointer, record);
    return {
      pointer,
      get disposed() {
        return record.disposed > 0;
      },
      dispose() {
        record.disposed++;
      },
      unref() {
        record.unrefs++;
      },
    };
  }

  /** Calls a block as native code would; throws (a crash on a Mac) if it was disposed. */
  call(pointer: bigint, ...args: unknown[]): unknown {
    const record = this.blocks.get(pointer);
    if (!record) throw new Error(`crash: no block at ${pointer}`);
    if (record.disposed > 0) throw new Error('crash: a disposed block was called');
    record.calls++;
    return (record.fn as (...a: unknown[]) => unknown)(...args);
  }
}

/** The fake runtime. */
export class FakeObjC implements ObjCNative {
  readonly objects = new Map<bigint, FakeObject>();
  readonly selectors = new Map<string, bigint>();
  readonly pools: bigint[] = [];
  /** Every message sent, as `Class-or-kind selector`. */
  readonly sent: string[] = [];
  /** What canEvaluatePolicy answers, per policy (default: ok). */
  readonly canEvaluate = new Map<number, FakeAnswer>();
  /** evaluatePolicy calls: the context, the policy, the reason text, the block. */
  readonly evaluations: Array<{
    context: bigint;
    policy: number;
    reason: string;
    reasonObject: bigint;
    block: bigint;
  }> = [];
  /** When set, an invalidate makes the context reply LAErrorAppCancel on a later turn. */
  replyOnInvalidate = true;
  /** Classes that exist (remove one to test a missing framework). */
  readonly classes = new Set(['LAContext', 'NSString', 'NSAutoreleasePool']);
  readonly laErrorDomain: bigint;
  readonly blocks: FakeBlocks;
  #next = 0x1000n;

  constructor(blocks = new FakeBlocks()) {
    this.blocks = blocks;
    this.laErrorDomain = this.#make('NSString', { text: LA_ERROR_DOMAIN, refs: 1 });
    for (const name of ['LAContext', 'NSString', 'NSAutoreleasePool']) {
      this.#make('class', { text: name, refs: 1 });
    }
  }

  #make(kind: Kind, fields: Partial<FakeObject> = {}): bigint {
    const id = this.#next++;
    this.objects.set(id, { id, kind, refs: 1, freed: false, ...fields });
    return id;
  }

  #live(id: bigint, what: string): FakeObject {
    const object = this.objects.get(id);
    if (!object) throw new Error(`crash: ${what} sent to ${id}, which is not an object`);
    if (object.freed) throw new Error(`crash: ${what} sent to a freed ${object.kind}`);
    return object;
  }

  #autorelease(id: bigint): void {
    const pool = this.pools.at(-1);
    if (pool === undefined)
      throw new Error('leak: an object was autoreleased with no pool in place');
    (this.objects.get(pool) as FakeObject & { held?: bigint[] }).held ??= [];
    (this.objects.get(pool) as FakeObject & { held: bigint[] }).held.push(id);
  }

  #release(id: bigint): void {
    const object = this.#live(id, 'release');
    object.refs--;
    if (object.refs > 0) return;
    object.freed = true;
    if (object.kind === 'LAContext' && object.reason !== undefined) this.#release(object.reason);
  }

  /** An NSError in `domain` (autoreleased into the current pool unless `temporary`). */
  makeError(code: number, domain: string | null): bigint {
    const domainObject =
      domain === null
        ? undefined
        : domain === LA_ERROR_DOMAIN
          ? this.laErrorDomain
          : this.#make('NSString', { text: domain });
    return this.#make('NSError', {
      code,
      ...(domainObject === undefined ? {} : { domain: domainObject }),
    });
  }

  /** Live objects of a kind (not freed), e.g. to check that every LAContext was released. */
  live(kind: Kind): FakeObject[] {
    return [...this.objects.values()].filter((object) => object.kind === kind && !object.freed);
  }

  classNamed(name: string): bigint {
    return [...this.objects.values()].find((o) => o.kind === 'class' && o.text === name)!.id;
  }

  /**
   * Replies to the evaluation of `context` as a LocalAuthentication thread would: the NSError is
   * made for the call and freed when it returns.
   */
  reply(context: bigint, answer: FakeAnswer): void {
    const object = this.#live(context, 'reply');
    const block = object.pendingBlock;
    if (block === undefined) throw new Error('no evaluation is pending on this context');
    object.pendingBlock = undefined;
    let error: bigint | null = null;
    if (!answer.ok && answer.code !== undefined) {
      error = this.makeError(
        answer.code,
        answer.domain === undefined ? LA_ERROR_DOMAIN : answer.domain,
      );
    }
    try {
      this.blocks.call(block, answer.ok ? 1 : 0, error);
    } finally {
      if (error !== null) this.objects.get(error)!.freed = true;
    }
  }

  // --- ObjCNative ---

  objc_getClass(name: string): ObjCPointer {
    if (!this.classes.has(name)) return null;
    return this.classNamed(name);
  }

  sel_registerName(name: string): ObjCPointer {
    let id = this.selectors.get(name);
    if (id === undefined) {
      id = 0x5000n + BigInt(this.selectors.size);
      this.selectors.set(name, id);
    }
    return id;
  }

  #selector(id: bigint): string {
    for (const [name, value] of this.selectors) if (value === id) return name;
    throw new Error(`crash: unrecognized selector ${id}`);
  }

  #note(receiver: FakeObject, selector: string): void {
    this.sent.push(`${receiver.kind === 'class' ? receiver.text : receiver.kind} ${selector}`);
  }

  sendId(receiver: bigint, selector: bigint): ObjCPointer {
    const object = this.#live(receiver, 'a message');
    const name = this.#selector(selector);
    this.#note(object, name);
    if (object.kind === 'class' && name === 'alloc') {
      return this.#make(object.text as Kind);
    }
    if (object.kind === 'class' && object.text === 'NSAutoreleasePool' && name === 'new') {
      const pool = this.#make('NSAutoreleasePool');
      this.pools.push(pool);
      return pool;
    }
    if (object.kind === 'LAContext' && name === 'init') {
      object.initialized = true;
      return receiver;
    }
    if (object.kind === 'NSError' && name === 'domain') return object.domain ?? null;
    throw new Error(`crash: ${object.kind} does not respond to ${name} (as id)`);
  }

  sendVoid(receiver: bigint, selector: bigint): void {
    const object = this.#live(receiver, 'a message');
    const name = this.#selector(selector);
    this.#note(object, name);
    if (name === 'release') {
      this.#release(receiver);
      return;
    }
    if (object.kind === 'NSAutoreleasePool' && name === 'drain') {
      if (this.pools.at(-1) !== receiver)
        throw new Error('crash: drained a pool that is not the top one');
      this.pools.pop();
      const held = (object as FakeObject & { held?: bigint[] }).held ?? [];
      for (const id of held) this.#release(id);
      object.freed = true;
      return;
    }
    if (object.kind === 'LAContext' && name === 'invalidate') {
      object.invalidated = true;
      if (this.replyOnInvalidate && object.pendingBlock !== undefined) {
        setImmediate(() => {
          if (object.pendingBlock !== undefined) this.reply(receiver, { ok: false, code: -9 });
        });
      }
      return;
    }
    throw new Error(`crash: ${object.kind} does not respond to ${name} (as void)`);
  }

  sendIdCString(receiver: bigint, selector: bigint, text: string): ObjCPointer {
    const object = this.#live(receiver, 'a message');
    const name = this.#selector(selector);
    this.#note(object, name);
    if (object.kind !== 'NSString' || name !== 'initWithUTF8String:') {
      throw new Error(`crash: ${object.kind} does not respond to ${name} (with a C string)`);
    }
    object.text = text;
    return receiver;
  }

  sendBoolIntegerOut(receiver: bigint, selector: bigint, value: number, out: Buffer): number {
    const object = this.#live(receiver, 'a message');
    const name = this.#selector(selector);
    this.#note(object, name);
    if (object.kind !== 'LAContext' || name !== 'canEvaluatePolicy:error:' || !object.initialized) {
      throw new Error(
        `crash: ${object.kind} does not respond to ${name} (BOOL, NSInteger, NSError **)`,
      );
    }
    if (out.length !== 8) throw new Error('crash: NSError ** out-parameter is not 8 bytes');
    const answer = this.canEvaluate.get(value) ?? { ok: true };
    if (answer.ok) return 1;
    if (answer.code !== undefined) {
      const error = this.makeError(
        answer.code,
        answer.domain === undefined ? LA_ERROR_DOMAIN : answer.domain,
      );
      this.#autorelease(error);
      out.writeBigUInt64LE(error, 0);
    }
    return 0;
  }

  sendVoidIntegerIdId(
    receiver: bigint,
    selector: bigint,
    value: number,
    reason: bigint,
    block: bigint,
  ): void {
    const object = this.#live(receiver, 'a message');
    const name = this.#selector(selector);
    this.#note(object, name);
    if (object.kind !== 'LAContext' || name !== 'evaluatePolicy:localizedReason:reply:') {
      throw new Error(`crash: ${object.kind} does not respond to ${name}`);
    }
    const text = this.#live(reason, 'retain');
    if (text.kind !== 'NSString') throw new Error('crash: the reason is not an NSString');
    text.refs++;
    object.reason = reason;
    object.pendingBlock = block;
    this.evaluations.push({
      context: receiver,
      policy: value,
      reason: text.text ?? '',
      reasonObject: reason,
      block,
    });
  }

  sendInteger(receiver: bigint, selector: bigint): number | bigint {
    const object = this.#live(receiver, 'a message');
    const name = this.#selector(selector);
    this.#note(object, name);
    if (object.kind !== 'NSError' || name !== 'code') throw new Error(`crash: ${name} (NSInteger)`);
    // koffi may hand a 64-bit integer back as a BigInt.
    return BigInt(object.code ?? 0);
  }

  sendBoolId(receiver: bigint, selector: bigint, other: bigint): number {
    const object = this.#live(receiver, 'a message');
    const name = this.#selector(selector);
    this.#note(object, name);
    if (object.kind !== 'NSString' || name !== 'isEqualToString:') {
      throw new Error(`crash: ${object.kind} does not respond to ${name}`);
    }
    return object.text === this.#live(other, 'isEqualToString: argument').text ? 1 : 0;
  }

  sendCString(receiver: bigint, selector: bigint): string | null {
    const object = this.#live(receiver, 'a message');
    const name = this.#selector(selector);
    this.#note(object, name);
    if (object.kind !== 'NSString' || name !== 'UTF8String') {
      throw new Error(`crash: ${object.kind} does not respond to ${name}`);
    }
    return object.text ?? null;
  }
}
