/**
 * The LocalAuthentication bindings (src/platform/darwin/local-authentication.ts) over a fake
 * Objective-C runtime that throws where a Mac would crash or leak (test/platform/darwin/fake-objc.ts):
 * every LAContext and reason string released once, every autorelease pool drained, the reply's
 * NSError read only during the reply, the reply block disposed only after its one call,
 * `invalidate` on abort, and only an `LAErrorDomain` error taken as an answer. Then the prompt
 * backend on top of them, end to end. Never run on a Mac: see docs/macos.md.
 */

import { afterEach, describe, expect, it } from 'vitest';
import { BridgekeeperError } from '../../../src/errors.js';
import {
  createLocalAuthenticationBindings,
  REPLY_BLOCK_SIGNATURE,
} from '../../../src/platform/darwin/local-authentication.js';
import {
  LA_ERROR,
  LA_POLICY,
  localAuthenticationPromptBackend,
} from '../../../src/prompt/local-authentication.js';
import type { PromptRequest } from '../../../src/prompt/prompt-backend.js';
import { FakeObjC } from './fake-objc.js';

const BIO = LA_POLICY.deviceOwnerAuthenticationWithBiometricsOrWatch;
const PASSWORD = LA_POLICY.deviceOwnerAuthentication;
const live = () => new AbortController().signal;
const tick = () => new Promise((resolve) => setImmediate(resolve));

let objc: FakeObjC;

/** Everything the bindings made is gone: contexts, reason strings, pools. */
function expectNothingHeld(): void {
  expect(objc.live('LAContext')).toEqual([]);
  for (const evaluation of objc.evaluations) {
    expect(objc.objects.get(evaluation.reasonObject)?.freed, 'reason string released').toBe(true);
  }
  expect(objc.pools).toEqual([]);
  expect(objc.live('NSAutoreleasePool')).toEqual([]);
}

afterEach(async () => {
  // Releases scheduled for the next turn have run by now.
  await tick();
  expectNothingHeld();
});

function bindings() {
  objc = new FakeObjC();
  return createLocalAuthenticationBindings(objc, objc.blocks);
}

describe('canEvaluatePolicy', () => {
  it('answers ok when the context says YES, in a pool, releasing the context', () => {
    const la = bindings();
    expect(la.canEvaluatePolicy(BIO)).toEqual({ ok: true });
    expect(objc.sent).toEqual([
      'NSAutoreleasePool new',
      'LAContext alloc',
      'LAContext init',
      'LAContext canEvaluatePolicy:error:',
      'LAContext release',
      'NSAutoreleasePool drain',
    ]);
  });

  it('answers the LAError code of the NSError it set (autoreleased, drained with the pool)', () => {
    const la = bindings();
    objc.canEvaluate.set(BIO, { ok: false, code: LA_ERROR.biometryNotEnrolled });
    expect(la.canEvaluatePolicy(BIO)).toEqual({ ok: false, code: LA_ERROR.biometryNotEnrolled });
    expect(objc.live('NSError')).toEqual([]);
    expect(objc.sent).toContain('LAContext canEvaluatePolicy:error:');
  });

  it('throws ERR_PLATFORM for an error from another domain, naming it', () => {
    const la = bindings();
    objc.canEvaluate.set(PASSWORD, { ok: false, code: 4, domain: 'NSCocoaErrorDomain' });
    expect(() => la.canEvaluatePolicy(PASSWORD)).toThrow(
      expect.objectContaining({
        code: 'ERR_PLATFORM',
        message: expect.stringContaining('NSCocoaErrorDomain (code 4)'),
      }),
    );
  });

  it('throws ERR_PLATFORM for NO without an error, and for an error without a domain', () => {
    const la = bindings();
    objc.canEvaluate.set(BIO, { ok: false });
    expect(() => la.canEvaluatePolicy(BIO)).toThrow(
      expect.objectContaining({
        code: 'ERR_PLATFORM',
        message: expect.stringContaining('without an NSError'),
      }),
    );
    objc.canEvaluate.set(BIO, { ok: false, code: -6, domain: null });
    expect(() => la.canEvaluatePolicy(BIO)).toThrow(
      expect.objectContaining({
        code: 'ERR_PLATFORM',
        message: expect.stringContaining('no domain'),
      }),
    );
  });
});

describe('evaluatePolicy', () => {
  it('passes the policy and the reason as an NSString, and resolves ok only on success == YES', async () => {
    const la = bindings();
    const answer = la.evaluatePolicy(BIO, 'allow node in Terminal to use “Work”', {
      signal: live(),
    });
    expect(objc.evaluations).toMatchObject([
      { policy: BIO, reason: 'allow node in Terminal to use “Work”' },
    ]);
    const [evaluation] = objc.evaluations;
    const block = objc.blocks.blocks.get(evaluation!.block)!;
    expect(block.signature).toBe(REPLY_BLOCK_SIGNATURE);
    // The reason is released by us at once; the context still holds it.
    expect(objc.objects.get(evaluation!.reasonObject)).toMatchObject({ refs: 1, freed: false });
    expect(block.disposed).toBe(0);
    objc.reply(evaluation!.context, { ok: true });
    await expect(answer).resolves.toEqual({ ok: true });
    expect(block).toMatchObject({ calls: 1, disposed: 1 });
  });

  it('reads the reply NSError during the reply (it is freed afterwards) and resolves its code', async () => {
    const la = bindings();
    const answer = la.evaluatePolicy(PASSWORD, 'why', { signal: live() });
    objc.reply(objc.evaluations[0]!.context, { ok: false, code: LA_ERROR.userCancel });
    await expect(answer).resolves.toEqual({ ok: false, code: LA_ERROR.userCancel });
  });

  it('keeps the context until the turn after the reply: the framework thread is still in the block', async () => {
    const la = bindings();
    const answer = la.evaluatePolicy(BIO, 'why', { signal: live() });
    const { context } = objc.evaluations[0]!;
    objc.reply(context, { ok: true });
    expect(objc.objects.get(context)?.freed).toBe(false);
    await answer;
    await tick();
    expect(objc.objects.get(context)?.freed).toBe(true);
  });

  it('rejects ERR_PLATFORM when the reply says NO without an error, or with a foreign one', async () => {
    const la = bindings();
    const first = la.evaluatePolicy(BIO, 'why', { signal: live() });
    objc.reply(objc.evaluations[0]!.context, { ok: false });
    await expect(first).rejects.toMatchObject({ code: 'ERR_PLATFORM' });
    const second = la.evaluatePolicy(BIO, 'why', { signal: live() });
    objc.reply(objc.evaluations[1]!.context, {
      ok: false,
      code: -1,
      domain: 'NSOSStatusErrorDomain',
    });
    await expect(second).rejects.toMatchObject({
      code: 'ERR_PLATFORM',
      message: expect.stringContaining('NSOSStatusErrorDomain'),
    });
  });

  it('invalidates the context on abort and waits for its LAErrorAppCancel reply before disposing the block', async () => {
    const la = bindings();
    objc.replyOnInvalidate = false;
    const controller = new AbortController();
    const answer = la.evaluatePolicy(BIO, 'why', { signal: controller.signal });
    const { context, block } = objc.evaluations[0]!;
    controller.abort();
    expect(objc.sent.filter((line) => line === 'LAContext invalidate')).toHaveLength(1);
    await tick();
    // Not disposed yet: LocalAuthentication still holds the block and will call it.
    expect(objc.blocks.blocks.get(block)!.disposed).toBe(0);
    objc.reply(context, { ok: false, code: LA_ERROR.appCancel });
    await expect(answer).resolves.toEqual({ ok: false, code: LA_ERROR.appCancel });
    expect(objc.blocks.blocks.get(block)!.disposed).toBe(1);
  });

  it('does not invalidate after the reply came', async () => {
    const la = bindings();
    const controller = new AbortController();
    const answer = la.evaluatePolicy(BIO, 'why', { signal: controller.signal });
    objc.reply(objc.evaluations[0]!.context, { ok: true });
    await answer;
    controller.abort();
    expect(objc.sent).not.toContain('LAContext invalidate');
  });

  it('evaluates nothing for an already-aborted signal', async () => {
    const la = bindings();
    const controller = new AbortController();
    controller.abort();
    await expect(la.evaluatePolicy(BIO, 'why', { signal: controller.signal })).resolves.toEqual({
      ok: false,
      code: LA_ERROR.appCancel,
    });
    expect(objc.sent).toEqual([]);
  });

  it('releases everything and rejects when the call itself fails (nothing will reply)', async () => {
    const la = bindings();
    const original = objc.sendVoidIntegerIdId.bind(objc);
    objc.sendVoidIntegerIdId = () => {
      throw new TypeError('koffi: unexpected argument');
    };
    await expect(la.evaluatePolicy(BIO, 'why', { signal: live() })).rejects.toMatchObject({
      code: 'ERR_PLATFORM',
      message: expect.stringContaining('koffi: unexpected argument'),
    });
    objc.sendVoidIntegerIdId = original;
    const [block] = objc.blocks.blocks.values();
    expect(block).toMatchObject({ calls: 0, disposed: 1 });
    // No evaluation registered the reason: check it directly.
    expect(objc.live('NSString').map((s) => s.text)).toEqual(['com.apple.LocalAuthentication']);
  });

  it('refuses a reason with NUL, or an empty one (an Objective-C exception on a Mac), before creating anything', async () => {
    const la = bindings();
    for (const reason of ['a\0b', '', '   ']) {
      await expect(la.evaluatePolicy(BIO, reason, { signal: live() })).rejects.toMatchObject({
        code: 'ERR_INVALID_ARGUMENT',
      });
    }
    expect(objc.sent).toEqual([]);
  });

  it('releases what it made and rejects ERR_PLATFORM when no reply block can be made', async () => {
    const la = bindings();
    objc.blocks.makeBlock = () => {
      throw new Error('too many callbacks');
    };
    await expect(la.evaluatePolicy(BIO, 'why', { signal: live() })).rejects.toMatchObject({
      code: 'ERR_PLATFORM',
      message: expect.stringContaining('too many callbacks'),
    });
    expect(objc.sent).not.toContain('LAContext evaluatePolicy:localizedReason:reply:');
    expect(objc.live('NSString').map((string) => string.text)).toEqual([
      'com.apple.LocalAuthentication',
    ]);
  });

  it('stops keeping the process alive once aborted, but keeps the block for the reply', async () => {
    const la = bindings();
    objc.replyOnInvalidate = false;
    const controller = new AbortController();
    const answer = la.evaluatePolicy(BIO, 'why', { signal: controller.signal });
    const { context, block } = objc.evaluations[0]!;
    controller.abort();
    expect(objc.blocks.blocks.get(block)).toMatchObject({ unrefs: 1, disposed: 0 });
    objc.reply(context, { ok: false, code: LA_ERROR.appCancel });
    await expect(answer).resolves.toEqual({ ok: false, code: LA_ERROR.appCancel });
    expect(objc.blocks.blocks.get(block)).toMatchObject({ disposed: 1 });
  });
});

describe('createLocalAuthenticationBindings', () => {
  it('throws ERR_PLATFORM when LocalAuthentication did not load (no LAContext class)', () => {
    objc = new FakeObjC();
    objc.classes.delete('LAContext');
    expect(() => createLocalAuthenticationBindings(objc, objc.blocks)).toThrow(
      expect.objectContaining({
        code: 'ERR_PLATFORM',
        message: expect.stringContaining('LAContext'),
      }),
    );
  });
});

describe('the prompt backend over these bindings', () => {
  const request = (): PromptRequest => ({
    account: { id: 'work', displayName: 'Work' },
    process: { host: 'Terminal', program: 'node', pid: 4242 },
    claims: {},
    sessionId: 'tty:ttys003',
    subject: { pid: 4242 },
    unlocks: false,
  });

  it('falls back to the password when Touch ID is not enrolled, and grants on its success', async () => {
    const la = bindings();
    objc.canEvaluate.set(BIO, { ok: false, code: LA_ERROR.biometryNotEnrolled });
    const backend = localAuthenticationPromptBackend({ bindings: la });
    const outcome = backend.prompt(request(), { signal: live() });
    await until(() => objc.evaluations.length === 1);
    expect(objc.evaluations[0]).toMatchObject({ policy: PASSWORD });
    expect(objc.evaluations[0]!.reason).toContain('“Work”');
    objc.reply(objc.evaluations[0]!.context, { ok: true });
    await expect(outcome).resolves.toMatchObject({ result: 'granted' });
  });

  it('is denied on a failed fingerprint, and never granted when the machinery breaks', async () => {
    const la = bindings();
    const backend = localAuthenticationPromptBackend({ bindings: la });
    const denied = backend.prompt(request(), { signal: live() });
    await until(() => objc.evaluations.length === 1);
    objc.reply(objc.evaluations[0]!.context, { ok: false, code: LA_ERROR.authenticationFailed });
    await expect(denied).resolves.toMatchObject({ result: 'denied' });

    const broken = backend.prompt(request(), { signal: live() });
    await until(() => objc.evaluations.length === 2);
    objc.reply(objc.evaluations[1]!.context, { ok: false, code: 7, domain: 'NSCocoaErrorDomain' });
    await expect(broken).rejects.toBeInstanceOf(BridgekeeperError);
  });
});

async function until(check: () => boolean, ms = 2_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) throw new Error('timed out');
    await new Promise((resolve) => setTimeout(resolve, 1));
  }
}
