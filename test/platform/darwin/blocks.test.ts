/**
 * The Objective-C block machinery of the macOS backends (src/platform/darwin/blocks.ts), run for
 * real on Linux: Debian's libblocksruntime plays libSystem, and a C stand-in
 * (test/fixtures/darwin/block-standin.c) plays LocalAuthentication / libxpc: it copies the
 * block with `_Block_copy` and calls it later from a thread of its own.
 *
 * Keep-alive: while a native thread holds a block, Node sees no pending work, so a process
 * whose only job is to wait for the reply would exit before it arrives. These tests never
 * observe that (the test runner keeps its process alive); they check instead that a block
 * holds a ref'd handle until it is disposed.
 *
 * Needs gcc and libblocksruntime-dev (`Block.h`, `libBlocksRuntime.so.0`); skipped without.
 */

import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { isMainThread } from 'node:worker_threads';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  type BlockFactory,
  type BlocksKoffi,
  createBlockFactory,
  UNREGISTER_DELAY_MS,
} from '../../../src/platform/darwin/blocks.js';

type Native = (...args: unknown[]) => unknown;
interface Library {
  func(definition: string): Native;
  symbol(name: string): unknown;
}
interface TestKoffi extends BlocksKoffi {
  load(path: string): Library;
  stats(): { callbacks: number };
}

const source = fileURLToPath(new URL('../../fixtures/darwin/block-standin.c', import.meta.url));
const hasGcc = spawnSync('gcc', ['--version']).status === 0;
const hasHeader = existsSync('/usr/include/Block.h');

let koffi: TestKoffi | undefined;
let runtimeLib: Library | undefined;
if (process.platform === 'linux') {
  try {
    koffi = ((await import('koffi')) as unknown as { default: TestKoffi }).default;
    runtimeLib = koffi.load('libBlocksRuntime.so.0');
  } catch {
    runtimeLib = undefined;
  }
}
const ready = hasGcc && hasHeader && runtimeLib !== undefined;

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Resolves when `check` holds, polling the event loop; fails after `ms`. */
async function until(check: () => boolean, ms = 5_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) throw new Error('timed out waiting for the block to be called');
    await sleep(5);
  }
}

const timers = () => process.getActiveResourcesInfo().filter((r) => r === 'Timeout').length;

describe.skipIf(!ready)(
  'Objective-C blocks through koffi and libBlocksRuntime (needs gcc, libblocksruntime-dev)',
  () => {
    let dir: string;
    let callLater: (block: bigint, value: number, delayMs: number) => number;
    let callNow: (block: bigint, value: number) => void;
    let gettid: () => number;
    let lastInvokerTid: () => number;
    let factory: BlockFactory;
    const k = koffi!;

    beforeAll(() => {
      dir = mkdtempSync(join(tmpdir(), 'bk-blocks-'));
      const so = join(dir, 'block-standin.so');
      execFileSync('gcc', [
        '-Wall',
        '-Werror',
        '-shared',
        '-fPIC',
        '-o',
        so,
        source,
        '-lBlocksRuntime',
        '-pthread',
      ]);
      const standin = k.load(so);
      callLater = standin.func(
        'int standin_call_later(void *block, int value, int delay_ms)',
      ) as typeof callLater;
      callNow = standin.func('void standin_call_now(void *block, int value)') as typeof callNow;
      gettid = standin.func('long standin_gettid(void)') as typeof gettid;
      lastInvokerTid = standin.func('long standin_last_invoker_tid(void)') as typeof lastInvokerTid;
      factory = createBlockFactory(k, {
        lib: runtimeLib!,
        globalBlockIsa: runtimeLib!.symbol('_NSConcreteGlobalBlock') as bigint,
      });
    });

    afterAll(() => {
      if (dir) rmSync(dir, { recursive: true, force: true });
    });

    it('runs the function on the JS thread when another thread calls the block later', async () => {
      const calls: Array<{ value: number; tid: number; main: boolean; ticks: number }> = [];
      let ticks = 0;
      const ticker = setInterval(() => ticks++, 5);
      const block = factory.makeBlock('void invoke(void *block, int value)', (value: number) => {
        calls.push({ value, tid: gettid(), main: isMainThread, ticks });
      });
      try {
        expect(callLater(block.pointer, 42, 100)).toBe(0);
        expect(calls).toEqual([]); // not called before the native thread gets to it
        await until(() => calls.length === 1);
      } finally {
        clearInterval(ticker);
        block.dispose();
      }
      const [call] = calls;
      expect(call!.value).toBe(42);
      expect(call!.main).toBe(true);
      // The JS thread ran it (its kernel tid is the pid), though a different thread called it.
      expect(call!.tid).toBe(process.pid);
      expect(lastInvokerTid()).not.toBe(process.pid);
      // The event loop kept turning while the native thread slept.
      expect(call!.ticks).toBeGreaterThan(3);
    });

    it('keeps several blocks apart over several calls from several threads', async () => {
      const seen: string[] = [];
      const blocks = [0, 1, 2].map((index) =>
        factory.makeBlock('void invoke(void *block, int value)', (value: number) => {
          expect(isMainThread).toBe(true);
          seen.push(`${index}:${value}`);
        }),
      );
      try {
        const expected: string[] = [];
        for (const [index, block] of blocks.entries()) {
          for (const value of [1, 2, 3]) {
            expect(
              callLater(block.pointer, value * 10 + index, 20 + ((value * 7 + index) % 5) * 15),
            ).toBe(0);
            expected.push(`${index}:${value * 10 + index}`);
          }
        }
        await until(() => seen.length === expected.length);
        await sleep(50); // nothing more arrives
        expect([...seen].sort()).toEqual([...expected].sort());
      } finally {
        for (const block of blocks) block.dispose();
      }
    });

    it('runs the function synchronously when the block is called on the JS thread', () => {
      const values: number[] = [];
      const block = factory.makeBlock('void invoke(void *block, int value)', (value: number) => {
        values.push(value);
      });
      try {
        callNow(block.pointer, 7);
        expect(values).toEqual([7]); // before callNow returned
        expect(lastInvokerTid()).toBe(process.pid);
      } finally {
        block.dispose();
      }
    });

    it("holds a ref'd handle until disposed, and disposes from inside its own last call", async () => {
      await sleep(UNREGISTER_DELAY_MS + 100); // earlier tests' blocks are unregistered by now
      const before = timers();
      const callbacksBefore = k.stats().callbacks;
      let calls = 0;
      const block = factory.makeBlock('void reply(void *block, int value)', () => {
        calls++;
        block.dispose(); // a one-shot reply: this is its last call
      });
      expect(timers()).toBe(before + 1);
      expect(k.stats().callbacks).toBe(callbacksBefore + 1);

      expect(callLater(block.pointer, 1, 20)).toBe(0);
      await until(() => calls === 1);
      expect(block.disposed).toBe(true);
      // The keep-alive is gone; the timer that unregisters the callback is unref'd, so nothing
      // of the block keeps the process alive any more.
      expect(timers()).toBe(before);

      // Until the callback is unregistered, a stray call is ignored rather than run.
      callNow(block.pointer, 2);
      expect(calls).toBe(1);

      await sleep(UNREGISTER_DELAY_MS + 100);
      expect(k.stats().callbacks).toBe(callbacksBefore);
      expect(timers()).toBe(before);

      // After the callback is gone, a late call (from this thread, and from another one through
      // a copy the runtime releases afterwards) reaches the shared no-op: no crash, no call.
      callNow(block.pointer, 3);
      expect(callLater(block.pointer, 4, 10)).toBe(0);
      await sleep(100);
      expect(calls).toBe(1);
    });

    it('holds no handle with keepAlive: false', () => {
      const before = timers();
      const block = factory.makeBlock('void invoke(void *block, int value)', () => {}, {
        keepAlive: false,
      });
      expect(timers()).toBe(before);
      block.dispose();
    });

    it('rejects a signature without the block pointer first, or one koffi cannot parse', () => {
      expect(() => factory.makeBlock('void invoke(int value)', () => {})).toThrow(
        expect.objectContaining({ code: 'ERR_INVALID_ARGUMENT' }),
      );
      expect(() => factory.makeBlock('not a prototype', () => {})).toThrow(
        expect.objectContaining({ code: 'ERR_INVALID_ARGUMENT' }),
      );
    });

    it('refuses a runtime without _NSConcreteGlobalBlock', () => {
      expect(() => createBlockFactory(k, { lib: runtimeLib!, globalBlockIsa: 0n })).toThrow(
        expect.objectContaining({ code: 'ERR_UNSUPPORTED_PLATFORM' }),
      );
    });
  },
);
