/**
 * Locking: lock() revokes everything; a prompt that went on screen while locked unlocks the app
 * through the app's hook when approved; a hook that fails leaves the app locked and refuses the
 * request; any lock() after a prompt went on screen (or while the hook runs) voids its approval.
 */
import { describe, expect, it } from 'vitest';
import { BridgekeeperError } from '../../src/errors.js';
import type { AccountRef } from '../../src/prompt/prompt-backend.js';
import { ScriptedPromptBackend } from '../../src/prompt/scripted.js';
import type { AuthorizerEvents, AuthorizerOptions } from '../../src/session/authorizer.js';
import type { SessionCredential } from '../../src/session/credentials.js';
import { FakeClock } from '../../src/testing/fake-clock.js';
import { flush, recordingAuthorizer } from './harness.js';

const WORK: AccountRef = { id: 'work', displayName: 'Work' };
const HOME: AccountRef = { id: 'home', displayName: 'Home' };

function session(id: string): SessionCredential {
  return {
    id,
    scope: 'process',
    process: { host: 'Windows Terminal', program: 'cli.exe', pid: 7 },
  };
}

function setup(options: Partial<AuthorizerOptions> = {}) {
  const clock = new FakeClock();
  const backend = new ScriptedPromptBackend({ manual: true });
  const { authorizer, events } = recordingAuthorizer(backend, clock, options);
  const ask = (id: string, account: AccountRef = WORK) =>
    authorizer.authorize({ session: session(id), account });
  const approve = async (id: string, account: AccountRef = WORK) => {
    const promise = ask(id, account);
    (await backend.nextPrompt()).respond('granted');
    await promise;
  };
  return { clock, backend, authorizer, events, ask, approve };
}

async function codeOf(promise: Promise<unknown>): Promise<string> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(BridgekeeperError);
  return (error as BridgekeeperError).code;
}

describe('Authorizer lock()', () => {
  it('revokes every grant at once: revoked (lock) per grant, then locked', async () => {
    const { clock, authorizer, events, approve } = setup();
    await approve('s1', WORK);
    await approve('s1', HOME);
    await approve('s2', WORK);
    events.length = 0;
    authorizer.lock();
    expect(authorizer.locked).toBe(true);
    expect(events.map(([name]) => name)).toEqual(['revoked', 'revoked', 'revoked', 'locked']);
    const revoked = events.slice(0, 3).map(([, payload]) => payload as AuthorizerEvents['revoked']);
    expect(revoked.map((r) => r.reason)).toEqual(['lock', 'lock', 'lock']);
    expect(revoked.map((r) => `${r.sessionId}/${r.account.id}`).sort()).toEqual([
      's1/home',
      's1/work',
      's2/work',
    ]);
    expect(authorizer.listGrants()).toEqual([]);
    expect(authorizer.tryUse('s1', 'work')).toBe(false);
    expect(clock.pendingTimers).toBe(0);
  });

  it('is idempotent', () => {
    const { authorizer, events } = setup();
    authorizer.lock();
    authorizer.lock();
    expect(events.map(([name]) => name)).toEqual(['locked']);
  });

  it('every request while locked prompts, marked unlocks: true', async () => {
    const { backend, authorizer, ask, events } = setup({ locked: true });
    expect(authorizer.locked).toBe(true);
    const a = ask('s1');
    const shown = await backend.nextPrompt();
    expect(shown.request.unlocks).toBe(true);
    expect(events.find(([name]) => name === 'prompt')?.[1]).toMatchObject({ unlocks: true });
    shown.respond('granted');
    await a;
  });

  it('a prompt approved while locked runs the unlock hook, unlocks, then grants', async () => {
    const calls: Array<{ account: AccountRef; sessionId: string }> = [];
    const { authorizer, events, approve } = setup({
      locked: true,
      unlock: (info) => {
        calls.push(info);
      },
    });
    await approve('s1');
    expect(calls).toEqual([{ account: WORK, sessionId: 's1' }]);
    expect(authorizer.locked).toBe(false);
    expect(events.map(([name]) => name)).toEqual(['prompt', 'unlocked', 'granted']);
    expect(events[1]?.[1]).toEqual({ by: 'prompt' });
    expect(events[2]?.[1]).toMatchObject({ unlocked: true });
    expect(authorizer.tryUse('s1', 'work')).toBe(true);
  });

  it('waits for an async unlock hook before resolving', async () => {
    let finish: () => void = () => {};
    const { backend, authorizer, ask } = setup({
      locked: true,
      unlock: () => new Promise<void>((resolve) => (finish = resolve)),
    });
    let done = false;
    const a = ask('s1').then(() => (done = true));
    (await backend.nextPrompt()).respond('granted');
    await flush();
    expect(done).toBe(false);
    expect(authorizer.locked).toBe(true);
    expect(authorizer.listGrants()).toEqual([]);
    finish();
    await a;
    expect(authorizer.locked).toBe(false);
    expect(authorizer.listGrants()).toHaveLength(1);
  });

  it('an unlock hook that throws refuses with ERR_PROMPT_FAILED and stays locked', async () => {
    const { backend, authorizer, ask, events } = setup({
      locked: true,
      unlock: async () => {
        throw new Error('keychain unavailable');
      },
    });
    const a = ask('s1');
    (await backend.nextPrompt()).respond('granted');
    const error = await a.catch((e: unknown) => e as BridgekeeperError);
    expect(error).toMatchObject({ code: 'ERR_PROMPT_FAILED' });
    expect((error as BridgekeeperError).message).toContain('"Work"');
    expect(((error as BridgekeeperError).cause as Error).message).toBe('keychain unavailable');
    expect(authorizer.locked).toBe(true);
    expect(authorizer.listGrants()).toEqual([]);
    expect(events.map(([name]) => name)).toEqual(['prompt', 'denied']);
    expect(events[1]?.[1]).toMatchObject({ reason: 'failed', code: 'ERR_PROMPT_FAILED' });
    // No cool-down: the person may try again at once.
    const again = ask('s1');
    expect(backend.requests).toHaveLength(2);
    (await backend.nextPrompt()).respond('denied');
    expect(await codeOf(again)).toBe('ERR_AUTHORIZATION_DENIED');
  });

  it('without a hook, a prompt approved while locked just unlocks', async () => {
    const { authorizer, approve } = setup({ locked: true });
    await approve('s1');
    expect(authorizer.locked).toBe(false);
  });

  it('a prompt on screen when the app locks stays on screen, but its approval no longer counts', async () => {
    // Changed with the lock-epoch rule: this approval used to unlock the app and create a grant.
    let hookRuns = 0;
    const { backend, authorizer, ask, approve, events } = setup({ unlock: () => void hookRuns++ });
    await approve('s0');
    const a = ask('s1');
    const shown = await backend.nextPrompt();
    expect(shown.request.unlocks).toBe(false);
    authorizer.lock();
    expect(shown.signal.aborted).toBe(false);
    expect(authorizer.tryUse('s0', 'work')).toBe(false);
    shown.respond('granted');
    expect(await codeOf(a)).toBe('ERR_AUTHORIZATION_CANCELLED');
    expect(hookRuns).toBe(0);
    expect(authorizer.locked).toBe(true);
    expect(authorizer.listGrants()).toEqual([]);
    expect(events.filter(([name]) => name === 'unlocked')).toEqual([]);
  });

  it('unlock() by the app emits unlocked (by app) and is idempotent', () => {
    const { authorizer, events } = setup({ locked: true });
    authorizer.unlock();
    authorizer.unlock();
    expect(authorizer.locked).toBe(false);
    expect(events).toEqual([['unlocked', { by: 'app' }]]);
  });

  it('a denial while locked leaves the app locked', async () => {
    let hookRuns = 0;
    const { backend, authorizer, ask } = setup({ locked: true, unlock: () => void hookRuns++ });
    const a = ask('s1');
    (await backend.nextPrompt()).respond('denied');
    expect(await codeOf(a)).toBe('ERR_AUTHORIZATION_DENIED');
    expect(hookRuns).toBe(0);
    expect(authorizer.locked).toBe(true);
  });

  it('if every requester leaves while the unlock hook runs: unlocked, but no grant', async () => {
    let finish: () => void = () => {};
    const { backend, authorizer, events } = setup({
      locked: true,
      unlock: () => new Promise<void>((resolve) => (finish = resolve)),
    });
    const controller = new AbortController();
    const a = authorizer.authorize(
      { session: session('s1'), account: WORK },
      { signal: controller.signal },
    );
    (await backend.nextPrompt()).respond('granted');
    await flush();
    controller.abort();
    expect(await codeOf(a)).toBe('ERR_ABORTED');
    finish();
    await flush();
    expect(authorizer.locked).toBe(false);
    expect(authorizer.listGrants()).toEqual([]);
    expect(events.filter(([name]) => name === 'granted')).toHaveLength(0);
    // The next prompt can show: the screen was released.
    const b = authorizer.authorize({ session: session('s2'), account: WORK });
    (await backend.nextPrompt()).respond('granted');
    await b;
  });

  it('close() while the unlock hook runs rejects with ERR_CLOSED and creates nothing', async () => {
    let finish: () => void = () => {};
    const { backend, authorizer, ask } = setup({
      locked: true,
      unlock: () => new Promise<void>((resolve) => (finish = resolve)),
    });
    const a = ask('s1');
    (await backend.nextPrompt()).respond('granted');
    await flush();
    authorizer.close();
    expect(await codeOf(a)).toBe('ERR_CLOSED');
    finish();
    await flush();
    expect(authorizer.listGrants()).toEqual([]);
  });
});

/** Rejection of a request whose approval a lock() voided. */
async function expectVoidedByLock(promise: Promise<unknown>): Promise<BridgekeeperError> {
  const error = await promise.then(
    () => {
      throw new Error('expected ERR_AUTHORIZATION_CANCELLED');
    },
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(BridgekeeperError);
  const bk = error as BridgekeeperError;
  expect(bk.code).toBe('ERR_AUTHORIZATION_CANCELLED');
  expect(bk.message).toContain('"Work"');
  expect(bk.message).toMatch(/locked while the prompt .*was open/);
  expect(bk.message).toMatch(/run the command again/i);
  return bk;
}

/** A locked authorizer whose unlock hook waits until the test calls `finish()`. */
function setupWithSlowHook() {
  const hook: { runs: number; finish: () => void; fail: (error: Error) => void } = {
    runs: 0,
    finish: () => {},
    fail: () => {},
  };
  const env = setup({
    locked: true,
    unlock: () =>
      new Promise<void>((resolve, reject) => {
        hook.runs++;
        hook.finish = resolve;
        hook.fail = reject;
      }),
  });
  return { ...env, hook };
}

/** setupWithSlowHook(), then `a` asks for s1 and is approved: the unlock hook is now running. */
async function approvedWhileHookRuns() {
  const env = setupWithSlowHook();
  const a = env.ask('s1');
  (await env.backend.nextPrompt()).respond('granted');
  await flush();
  return { ...env, a };
}

describe('Authorizer lock() voids approvals given after it (lock epoch)', () => {
  it('lock() while the unlock hook runs: no grant, stays locked, ERR_AUTHORIZATION_CANCELLED', async () => {
    const { backend, authorizer, ask, events, hook } = setupWithSlowHook();
    const a = ask('s1');
    const b = ask('s1');
    (await backend.nextPrompt()).respond('granted');
    await flush();
    expect(hook.runs).toBe(1);
    authorizer.lock(); // already locked: a no-op before the fix
    hook.finish();
    await expectVoidedByLock(a);
    await expectVoidedByLock(b);
    expect(authorizer.locked).toBe(true);
    expect(authorizer.listGrants()).toEqual([]);
    expect(authorizer.tryUse('s1', 'work')).toBe(false);
    expect(events.map(([name]) => name)).toEqual(['prompt', 'denied']);
    expect(events[1]?.[1]).toMatchObject({
      reason: 'cancelled',
      code: 'ERR_AUTHORIZATION_CANCELLED',
      detail: 'the app was locked while the prompt was open',
    });
    // No cool-down, and the next prompt says it unlocks the app.
    const again = ask('s1');
    const next = await backend.nextPrompt();
    expect(next.request.unlocks).toBe(true);
    next.respond('granted');
    await flush();
    hook.finish();
    await again;
    expect(authorizer.locked).toBe(false);
    expect(authorizer.tryUse('s1', 'work')).toBe(true);
  });

  it('unlock() then lock() by the app while the unlock hook runs: no grant, stays locked', async () => {
    const { authorizer, events, hook, a } = await approvedWhileHookRuns();
    authorizer.unlock();
    authorizer.lock();
    hook.finish();
    await expectVoidedByLock(a);
    expect(authorizer.locked).toBe(true);
    expect(authorizer.listGrants()).toEqual([]);
    expect(events.map(([name]) => name)).toEqual(['prompt', 'unlocked', 'locked', 'denied']);
    expect(events[1]?.[1]).toEqual({ by: 'app' });
    expect(events.filter(([name]) => name === 'granted')).toEqual([]);
  });

  it('lock() then unlock() by the app while the hook runs: no grant; the app stays as the app left it', async () => {
    const { authorizer, events, hook, a } = await approvedWhileHookRuns();
    authorizer.lock();
    authorizer.unlock();
    hook.finish();
    await expectVoidedByLock(a);
    expect(authorizer.locked).toBe(false);
    expect(authorizer.listGrants()).toEqual([]);
    expect(events.filter(([name]) => name === 'unlocked').map(([, p]) => p)).toEqual([
      { by: 'app' },
    ]);
  });

  it('an app already locked when the prompt showed, locked again before approval: voided, hook not run', async () => {
    let hookRuns = 0;
    const { backend, authorizer, ask, events } = setup({
      locked: true,
      unlock: () => void hookRuns++,
    });
    const a = ask('s1');
    const shown = await backend.nextPrompt();
    expect(shown.request.unlocks).toBe(true);
    authorizer.lock();
    expect(events.filter(([name]) => name === 'locked')).toEqual([]); // still idempotent
    shown.respond('granted');
    await expectVoidedByLock(a);
    expect(hookRuns).toBe(0);
    expect(authorizer.locked).toBe(true);
    expect(authorizer.listGrants()).toEqual([]);
  });

  it('lock() then unlock() by the app while the prompt shows: the approval is still voided', async () => {
    const { backend, authorizer, ask, events } = setup();
    const a = ask('s1');
    const shown = await backend.nextPrompt();
    authorizer.lock();
    authorizer.unlock();
    shown.respond('granted');
    await expectVoidedByLock(a);
    expect(authorizer.locked).toBe(false);
    expect(authorizer.listGrants()).toEqual([]);
    expect(events.filter(([name]) => name === 'granted')).toEqual([]);
  });

  it('a prompt queued before lock() but shown after it unlocks the app when approved', async () => {
    let hookRuns = 0;
    const { backend, authorizer, ask } = setup({ unlock: () => void hookRuns++ });
    const a = ask('s1');
    const b = ask('s2');
    const first = await backend.nextPrompt();
    authorizer.lock();
    first.respond('granted');
    await expectVoidedByLock(a);
    const second = await backend.nextPrompt();
    expect(second.request.sessionId).toBe('s2');
    expect(second.request.unlocks).toBe(true);
    second.respond('granted');
    await b;
    expect(hookRuns).toBe(1);
    expect(authorizer.locked).toBe(false);
    expect(authorizer.listGrants().map((g) => g.sessionId)).toEqual(['s2']);
  });

  it('every requester left and lock() was called while the hook ran: stays locked, screen released', async () => {
    const { backend, authorizer, hook, events } = setupWithSlowHook();
    const controller = new AbortController();
    const a = authorizer.authorize(
      { session: session('s1'), account: WORK },
      { signal: controller.signal },
    );
    (await backend.nextPrompt()).respond('granted');
    await flush();
    controller.abort();
    expect(await codeOf(a)).toBe('ERR_ABORTED');
    authorizer.lock();
    hook.finish();
    await flush();
    expect(authorizer.locked).toBe(true);
    expect(authorizer.listGrants()).toEqual([]);
    expect(events.filter(([name]) => name === 'unlocked' || name === 'granted')).toEqual([]);
    const b = authorizer.authorize({ session: session('s2'), account: WORK });
    (await backend.nextPrompt()).respond('granted');
    await flush();
    hook.finish();
    await b;
    expect(authorizer.locked).toBe(false);
  });

  it('an unlock hook that throws after lock() still refuses with ERR_PROMPT_FAILED and stays locked', async () => {
    const { authorizer, hook, a } = await approvedWhileHookRuns();
    authorizer.lock();
    hook.fail(new Error('vault sealed'));
    expect(await codeOf(a)).toBe('ERR_PROMPT_FAILED');
    expect(authorizer.locked).toBe(true);
    expect(authorizer.listGrants()).toEqual([]);
  });

  it('a prompt shown while locked and approved with no lock() since still unlocks (as before)', async () => {
    const { authorizer, events, hook, a } = await approvedWhileHookRuns();
    hook.finish();
    await a;
    expect(authorizer.locked).toBe(false);
    expect(events.map(([name]) => name)).toEqual(['prompt', 'unlocked', 'granted']);
  });
});
