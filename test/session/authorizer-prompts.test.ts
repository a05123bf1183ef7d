/**
 * Prompting: single flight, one prompt on screen at a time, FIFO queue, cancellation, cool-down,
 * outcomes and failures, close().
 */
import { describe, expect, it } from 'vitest';
import { AuthorizationError, BridgekeeperError } from '../../src/errors.js';
import type {
  AccountRef,
  PromptBackend,
  PromptOptions,
  PromptOutcome,
  PromptRequest,
} from '../../src/prompt/prompt-backend.js';
import { ScriptedPromptBackend } from '../../src/prompt/scripted.js';
import type { AuthorizeOptions, AuthorizerOptions } from '../../src/session/authorizer.js';
import type { SessionCredential } from '../../src/session/credentials.js';
import { FakeClock } from '../../src/testing/fake-clock.js';
import { flush, recordingAuthorizer } from './harness.js';

const WORK: AccountRef = { id: 'work', displayName: 'Work' };
const HOME: AccountRef = { id: 'home', displayName: "Wendy Appleseed's Family" };

function session(id: string, pid = 1000): SessionCredential {
  return { id, scope: 'terminal', process: { host: 'iTerm2', program: 'op', pid } };
}

/** Records whether a promise settled, without awaiting it. */
function track<T>(promise: Promise<T>) {
  const state: { settled: boolean; value?: T; error?: unknown } = { settled: false };
  promise.then(
    (value) => Object.assign(state, { settled: true, value }),
    (error: unknown) => Object.assign(state, { settled: true, error }),
  );
  return state;
}

function setup(options: Partial<AuthorizerOptions> = {}, backend?: PromptBackend) {
  const clock = new FakeClock();
  const scripted = new ScriptedPromptBackend({ manual: true });
  const { authorizer, events, named } = recordingAuthorizer(backend ?? scripted, clock, options);
  const ask = (id: string, account: AccountRef = WORK, opts?: AuthorizeOptions) =>
    authorizer.authorize({ session: session(id), account }, opts);
  return { clock, backend: scripted, authorizer, events, ask, named };
}

/** A backend the test fully controls, which ignores aborts unless told otherwise. */
class ControlledBackend implements PromptBackend {
  readonly id = 'controlled';
  readonly calls: Array<{
    request: PromptRequest;
    signal: AbortSignal;
    resolve: (outcome: unknown) => void;
    reject: (error: unknown) => void;
  }> = [];
  async isAvailable(): Promise<boolean> {
    return true;
  }
  prompt(request: PromptRequest, options: PromptOptions): Promise<PromptOutcome> {
    return new Promise((resolve, reject) => {
      this.calls.push({
        request,
        signal: options.signal,
        resolve: resolve as (outcome: unknown) => void,
        reject,
      });
    });
  }
}

async function expectCode(promise: Promise<unknown>, code: string): Promise<BridgekeeperError> {
  const error = await promise.then(
    () => {
      throw new Error(`expected a rejection with ${code}`);
    },
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(BridgekeeperError);
  expect((error as BridgekeeperError).code).toBe(code);
  return error as BridgekeeperError;
}

describe('Authorizer prompts: single flight', () => {
  it('200 concurrent requests for one grant share one prompt', async () => {
    const { backend, ask, authorizer, named } = setup();
    let prompted = 0;
    const all = Array.from({ length: 200 }, () => ask('s1', WORK, { onPrompt: () => prompted++ }));
    expect(backend.requests).toHaveLength(1);
    expect(prompted).toBe(200);
    (await backend.nextPrompt()).respond('granted');
    await Promise.all(all);
    expect(backend.requests).toHaveLength(1);
    expect(named('prompt')).toHaveLength(1);
    expect(named('granted')).toHaveLength(1);
    expect(authorizer.listGrants()).toHaveLength(1);
  });

  it('a denial reaches every waiter of the shared prompt', async () => {
    const { backend, ask, named } = setup();
    const all = Array.from({ length: 20 }, () => ask('s1'));
    (await backend.nextPrompt()).respond('denied');
    const results = await Promise.allSettled(all);
    expect(results.every((r) => r.status === 'rejected')).toBe(true);
    for (const r of results) {
      expect((r as PromiseRejectedResult).reason.code).toBe('ERR_AUTHORIZATION_DENIED');
    }
    expect(named('denied')).toHaveLength(1);
  });

  it('a request joining a prompt already on screen gets onPrompt at once', async () => {
    const { backend, ask } = setup();
    const first = ask('s1');
    await backend.nextPrompt();
    let prompted = 0;
    let queued = 0;
    const second = ask('s1', WORK, { onPrompt: () => prompted++, onQueued: () => queued++ });
    expect(prompted).toBe(1);
    expect(queued).toBe(0);
    backend.pending[0]!.respond('granted');
    await Promise.all([first, second]);
  });
});

describe('Authorizer prompts: one at a time, FIFO', () => {
  it('50 sessions: prompts strictly one at a time, in arrival order, with queue positions', async () => {
    const { backend, ask, named } = setup();
    const queued: Array<[number, number]> = [];
    const prompted: number[] = [];
    const requests = Array.from({ length: 50 }, (_, i) =>
      track(
        ask(`s${i}`, WORK, {
          onQueued: (position) => queued.push([i, position]),
          onPrompt: () => prompted.push(i),
        }),
      ),
    );
    expect(queued).toEqual(Array.from({ length: 49 }, (_, i) => [i + 1, i + 1]));
    for (let i = 0; i < 50; i++) {
      await flush();
      expect(backend.pending).toHaveLength(1);
      const shown = await backend.nextPrompt();
      expect(shown.request.sessionId).toBe(`s${i}`);
      expect(prompted).toEqual(Array.from({ length: i + 1 }, (_, k) => k));
      expect(requests[i]!.settled).toBe(false);
      shown.respond('granted');
      await flush();
      expect(requests[i]!.settled).toBe(true);
      expect(requests[i]!.error).toBeUndefined();
    }
    expect(named('prompt').map((p) => p.sessionId)).toEqual(
      Array.from({ length: 50 }, (_, i) => `s${i}`),
    );
    expect(named('granted')).toHaveLength(50);
  });

  it('the same session asking for two accounts gets two prompts, one after the other', async () => {
    const { backend, ask } = setup();
    const work = ask('s1', WORK);
    let position = 0;
    const home = ask('s1', HOME, { onQueued: (p) => (position = p) });
    expect(position).toBe(1);
    expect(backend.pending).toHaveLength(1);
    (await backend.nextPrompt()).respond('granted');
    await work;
    await flush();
    const second = await backend.nextPrompt();
    expect(second.request.account).toEqual(HOME);
    second.respond('granted');
    await home;
  });

  it('a request joining a queued prompt learns its position and is prompted with it', async () => {
    const { backend, ask } = setup();
    const a = ask('a');
    const b1 = ask('b');
    const c = ask('c');
    const positions: number[] = [];
    let prompted = false;
    const b2 = ask('b', WORK, {
      onQueued: (p) => positions.push(p),
      onPrompt: () => (prompted = true),
    });
    const c2 = ask('c', WORK, { onQueued: (p) => positions.push(p) });
    expect(positions).toEqual([1, 2]);
    (await backend.nextPrompt()).respond('granted');
    await a;
    await flush();
    expect(prompted).toBe(true);
    (await backend.nextPrompt()).respond('granted');
    await Promise.all([b1, b2]);
    await flush();
    (await backend.nextPrompt()).respond('granted');
    await Promise.all([c, c2]);
    expect(backend.requests.map((r) => r.sessionId)).toEqual(['a', 'b', 'c']);
  });

  it('a failing prompt does not stall the queue', async () => {
    const { backend, ask } = setup();
    const a = ask('a');
    const b = ask('b');
    (await backend.nextPrompt()).fail(new Error('agent crashed'));
    await expectCode(a, 'ERR_PROMPT_FAILED');
    (await backend.nextPrompt()).respond('granted');
    await b;
  });
});

describe('Authorizer prompts: cool-down after a denial', () => {
  it('refuses at once with retryAfterMs, no prompt, until the cool-down ends', async () => {
    const { clock, backend, ask, named } = setup();
    const first = ask('s1');
    (await backend.nextPrompt()).respond('denied');
    const denied = await expectCode(first, 'ERR_AUTHORIZATION_DENIED');
    expect(denied).toBeInstanceOf(AuthorizationError);
    expect(denied.message).toContain('"Work"');

    const cooled = await expectCode(ask('s1'), 'ERR_AUTHORIZATION_COOLDOWN');
    expect((cooled as AuthorizationError).retryAfterMs).toBe(5_000);
    expect(cooled.message).toContain('"Work"');
    clock.advance(4_999);
    const later = await expectCode(ask('s1'), 'ERR_AUTHORIZATION_COOLDOWN');
    expect((later as AuthorizationError).retryAfterMs).toBe(1);
    expect(backend.requests).toHaveLength(1);

    clock.advance(1);
    const again = ask('s1');
    expect(backend.requests).toHaveLength(2);
    (await backend.nextPrompt()).respond('granted');
    await again;
    expect(named('denied').map((d) => [d.reason, d.code])).toEqual([
      ['denied', 'ERR_AUTHORIZATION_DENIED'],
      ['cooldown', 'ERR_AUTHORIZATION_COOLDOWN'],
      ['cooldown', 'ERR_AUTHORIZATION_COOLDOWN'],
    ]);
    expect(named('denied')[1]?.retryAfterMs).toBe(5_000);
  });

  it('applies only to the same session and account', async () => {
    const { backend, ask } = setup();
    const first = ask('s1', WORK);
    (await backend.nextPrompt()).respond('denied');
    await expectCode(first, 'ERR_AUTHORIZATION_DENIED');
    const otherAccount = ask('s1', HOME);
    const otherSession = ask('s2', WORK);
    (await backend.nextPrompt()).respond('granted');
    await otherAccount;
    await flush();
    (await backend.nextPrompt()).respond('granted');
    await otherSession;
  });

  it('follows denialCooldownMs, and 0 turns it off', async () => {
    const custom = setup({ denialCooldownMs: 30_000 });
    const a = custom.ask('s1');
    (await custom.backend.nextPrompt()).respond('denied');
    await expectCode(a, 'ERR_AUTHORIZATION_DENIED');
    custom.clock.advance(29_999);
    await expectCode(custom.ask('s1'), 'ERR_AUTHORIZATION_COOLDOWN');

    const off = setup({ denialCooldownMs: 0 });
    const b = off.ask('s1');
    (await off.backend.nextPrompt()).respond('denied');
    await expectCode(b, 'ERR_AUTHORIZATION_DENIED');
    const c = off.ask('s1');
    expect(off.backend.requests).toHaveLength(2);
    (await off.backend.nextPrompt()).respond('granted');
    await c;
  });

  it.each([
    ['cancelled', 'ERR_AUTHORIZATION_CANCELLED'],
    ['unavailable', 'ERR_PROMPT_UNAVAILABLE'],
  ] as const)('starts no cool-down after %s', async (result, code) => {
    const { backend, ask } = setup();
    const a = ask('s1');
    (await backend.nextPrompt()).respond(result);
    await expectCode(a, code);
    const b = ask('s1');
    expect(backend.requests).toHaveLength(2);
    (await backend.nextPrompt()).respond('granted');
    await b;
  });
});

describe('Authorizer prompts: outcomes', () => {
  it('cancelled → ERR_AUTHORIZATION_CANCELLED naming the account', async () => {
    const { backend, ask, named } = setup();
    const a = ask('s1', HOME);
    (await backend.nextPrompt()).respond({ result: 'cancelled', detail: 'Escape pressed' });
    const error = await expectCode(a, 'ERR_AUTHORIZATION_CANCELLED');
    expect(error).toBeInstanceOf(AuthorizationError);
    expect(error.message).toContain("Wendy Appleseed's Family");
    expect(named('denied')[0]).toMatchObject({ reason: 'cancelled', detail: 'Escape pressed' });
  });

  it('unavailable → ERR_PROMPT_UNAVAILABLE saying what to install or configure', async () => {
    const scripted = new ScriptedPromptBackend({ available: false });
    const { ask, named } = setup({}, scripted);
    const error = await expectCode(ask('s1'), 'ERR_PROMPT_UNAVAILABLE');
    expect(error.message).toContain('"Work"');
    expect(error.message).toMatch(/No prompt backend/);
    expect(error.message).toMatch(/polkit/i);
    expect(error.message).toMatch(/Windows Hello/);
    expect(named('denied')[0]?.reason).toBe('unavailable');
  });

  it('a backend that rejects → ERR_PROMPT_FAILED with the cause, no grant', async () => {
    const controlled = new ControlledBackend();
    const { ask, authorizer, named } = setup({}, controlled);
    const a = ask('s1');
    const cause = new Error('org.freedesktop.DBus.Error.NoReply');
    controlled.calls[0]!.reject(cause);
    const error = await expectCode(a, 'ERR_PROMPT_FAILED');
    expect(error.cause).toBe(cause);
    expect(error.message).toContain('"Work"');
    expect(authorizer.listGrants()).toEqual([]);
    expect(named('denied')[0]?.reason).toBe('failed');
  });

  it('a backend that throws synchronously → ERR_PROMPT_FAILED (authorize never throws)', async () => {
    const broken: PromptBackend = {
      id: 'broken',
      isAvailable: async () => true,
      prompt: () => {
        throw new Error('koffi: symbol not found');
      },
    };
    const { ask, named } = setup({}, broken);
    let promise: Promise<void> | undefined;
    expect(() => {
      promise = ask('s1');
    }).not.toThrow();
    const error = await expectCode(promise!, 'ERR_PROMPT_FAILED');
    expect((error.cause as Error).message).toBe('koffi: symbol not found');
    expect(named('prompt')).toHaveLength(0);
  });

  it.each([
    ['undefined', undefined],
    ['null', null],
    ['a bare string', 'granted'],
    ['true', true],
    ['an unknown result', { result: 'yes' }],
    ['an upper-case result', { result: 'GRANTED' }],
    ['a non-string detail', { result: 'denied', detail: 42 }],
    ['an array', ['granted']],
  ])('a backend returning %s → ERR_PROMPT_FAILED, never a grant', async (_name, garbage) => {
    const controlled = new ControlledBackend();
    const { ask, authorizer, named } = setup({}, controlled);
    const a = ask('s1');
    controlled.calls[0]!.resolve(garbage);
    const error = await expectCode(a, 'ERR_PROMPT_FAILED');
    expect(error.cause).toBeInstanceOf(TypeError);
    expect(authorizer.listGrants()).toEqual([]);
    expect(authorizer.tryUse('s1', 'work')).toBe(false);
    expect(named('granted')).toHaveLength(0);
    // No cool-down after a failure: the next request asks again.
    void ask('s1').catch(() => {});
    await flush();
    expect(controlled.calls).toHaveLength(2);
  });

  it.each([
    ['rejects', 'reject'],
    ['throws synchronously', 'throw'],
    ['returns a malformed outcome', 'garbage'],
  ] as const)(
    'a backend that %s: ERR_PROMPT_FAILED message is generic; the backend error stays in cause and detail',
    async (_name, how) => {
      const secret = 'org.freedesktop.DBus.Error.NoReply: /run/user/1000/bus token=hunter2';
      const controlled = new ControlledBackend();
      const backend: PromptBackend =
        how === 'throw'
          ? {
              id: 'broken',
              isAvailable: async () => true,
              prompt: () => {
                throw new Error(secret);
              },
            }
          : controlled;
      const { ask, named } = setup({}, backend);
      const a = ask('s1', HOME);
      if (how === 'reject') controlled.calls[0]!.reject(new Error(secret));
      if (how === 'garbage') controlled.calls[0]!.resolve({ result: secret });
      const error = await expectCode(a, 'ERR_PROMPT_FAILED');
      expect(error.message).toBe(
        `The prompt for access to "Wendy Appleseed's Family" could not be shown (the prompt backend failed). Try again; if it keeps failing, check the app's log.`,
      );
      expect(error.message).not.toContain('hunter2');
      expect(error.message).not.toContain('DBus');
      expect(String((error.cause as Error).message)).toContain('hunter2');
      expect(named('denied')[0]).toMatchObject({ reason: 'failed', code: 'ERR_PROMPT_FAILED' });
      expect(named('denied')[0]?.detail).toContain(how === 'garbage' ? 'malformed' : 'hunter2');
    },
  );

  it('a granted outcome with extra fields still grants (shape is what counts)', async () => {
    const controlled = new ControlledBackend();
    const { ask, authorizer } = setup({}, controlled);
    const a = ask('s1');
    controlled.calls[0]!.resolve({ result: 'granted', method: 'fingerprint' });
    await a;
    expect(authorizer.tryUse('s1', 'work')).toBe(true);
  });

  it('rejects malformed requests without throwing synchronously', async () => {
    const { authorizer } = setup();
    for (const bad of [
      undefined,
      null,
      {},
      { session: session('s1') },
      { session: { id: '', scope: 'terminal', process: { host: 'x' } }, account: WORK },
      { session: { id: 's1', scope: 'terminal' }, account: WORK },
      { session: session('s1'), account: { id: 'work' } },
      { session: session('s1'), account: { id: 7, displayName: 'x' } },
    ]) {
      let promise: Promise<void> | undefined;
      expect(() => {
        promise = authorizer.authorize(bad as never);
      }).not.toThrow();
      await expectCode(promise!, 'ERR_INVALID_ARGUMENT');
    }
  });

  it('rejects a signal that is not an AbortSignal, showing nothing', async () => {
    const { backend, authorizer } = setup();
    await expectCode(
      authorizer.authorize({ session: session('s1'), account: WORK }, { signal: {} as never }),
      'ERR_INVALID_ARGUMENT',
    );
    expect(backend.requests).toHaveLength(0);
  });

  it('sends the backend the request with process, claims, session id, subject and unlocks', async () => {
    const { backend, authorizer } = setup();
    const credential = session('s9', 31337);
    const promise = authorizer.authorize({
      session: credential,
      account: HOME,
      claims: { name: 'my-cli', version: '1.2.3', reason: 'backup' },
      subject: { pid: 31337, startTime: '99', uid: 501 },
    });
    const shown = await backend.nextPrompt();
    expect(shown.request).toEqual({
      account: HOME,
      process: credential.process,
      claims: { name: 'my-cli', version: '1.2.3', reason: 'backup' },
      sessionId: 's9',
      subject: { pid: 31337, startTime: '99', uid: 501 },
      unlocks: false,
    });
    shown.respond('granted');
    await promise;
    // Without claims the backend gets an empty object, never undefined.
    authorizer.revoke({ sessionId: 's9' });
    const bare = authorizer.authorize({ session: credential, account: HOME });
    const second = await backend.nextPrompt();
    expect(second.request.claims).toEqual({});
    expect('subject' in second.request).toBe(false);
    second.respond('granted');
    await bare;
  });

  it('emits prompt with the backend id when the prompt goes on screen', async () => {
    const { backend, ask, named } = setup();
    const a = ask('s1');
    expect(named('prompt')).toEqual([
      {
        sessionId: 's1',
        scope: 'terminal',
        account: WORK,
        process: session('s1').process,
        backend: 'scripted',
        unlocks: false,
      },
    ]);
    (await backend.nextPrompt()).respond('granted');
    await a;
    expect(named('granted')[0]).toMatchObject({
      sessionId: 's1',
      backend: 'scripted',
      unlocked: false,
    });
  });

  it('a throwing event listener or callback breaks nothing', async () => {
    const { backend, authorizer } = setup();
    authorizer.on('prompt', () => {
      throw new Error('listener bug');
    });
    authorizer.on('granted', () => {
      throw new Error('listener bug');
    });
    const a = authorizer.authorize(
      { session: session('s1'), account: WORK },
      {
        onPrompt: () => {
          throw new Error('callback bug');
        },
      },
    );
    (await backend.nextPrompt()).respond('granted');
    await expect(a).resolves.toBeUndefined();
  });

  it('event subscriptions can be disposed', async () => {
    const { backend, authorizer } = setup();
    let count = 0;
    const subscription = authorizer.on('prompt', () => count++);
    subscription.dispose();
    const a = authorizer.authorize({ session: session('s1'), account: WORK });
    (await backend.nextPrompt()).respond('granted');
    await a;
    expect(count).toBe(0);
  });
});

describe('Authorizer prompts: cancellation', () => {
  it('an already-aborted signal rejects at once and shows nothing', async () => {
    const { backend, ask, named } = setup();
    await expectCode(ask('s1', WORK, { signal: AbortSignal.abort() }), 'ERR_ABORTED');
    expect(backend.requests).toHaveLength(0);
    expect(named('prompt')).toHaveLength(0);
  });

  it('a timeout signal rejects with ERR_TIMEOUT', async () => {
    const { ask } = setup();
    const controller = new AbortController();
    const a = ask('s1', WORK, { signal: controller.signal });
    controller.abort(new DOMException('The operation timed out.', 'TimeoutError'));
    await expectCode(a, 'ERR_TIMEOUT');
  });

  it('one of two waiters aborting does not cancel the prompt', async () => {
    const { backend, ask, authorizer } = setup();
    const controller = new AbortController();
    const leaving = ask('s1', WORK, { signal: controller.signal });
    const staying = ask('s1');
    const shown = await backend.nextPrompt();
    controller.abort();
    await expectCode(leaving, 'ERR_ABORTED');
    expect(shown.signal.aborted).toBe(false);
    shown.respond('granted');
    await staying;
    expect(authorizer.tryUse('s1', 'work')).toBe(true);
  });

  it('all waiters of a showing prompt leaving cancels it: the backend sees the abort', async () => {
    const { backend, ask, authorizer, named } = setup();
    const c1 = new AbortController();
    const c2 = new AbortController();
    const a = ask('s1', WORK, { signal: c1.signal });
    const b = ask('s1', WORK, { signal: c2.signal });
    const shown = await backend.nextPrompt();
    c1.abort();
    expect(shown.signal.aborted).toBe(false);
    c2.abort();
    expect(shown.signal.aborted).toBe(true);
    await expectCode(a, 'ERR_ABORTED');
    await expectCode(b, 'ERR_ABORTED');
    expect(shown.respond('granted')).toBe(false);
    await flush();
    expect(authorizer.listGrants()).toEqual([]);
    expect(named('denied').map((d) => d.reason)).toEqual(['cancelled']);
    expect(named('granted')).toHaveLength(0);
  });

  it('no grant from a cancelled prompt even if the backend says granted late', async () => {
    const controlled = new ControlledBackend();
    const { ask, authorizer, named } = setup({}, controlled);
    const controller = new AbortController();
    const a = ask('s1', WORK, { signal: controller.signal });
    controller.abort();
    await expectCode(a, 'ERR_ABORTED');
    expect(controlled.calls[0]!.signal.aborted).toBe(true);
    controlled.calls[0]!.resolve({ result: 'granted' });
    await flush();
    expect(authorizer.tryUse('s1', 'work')).toBe(false);
    expect(authorizer.listGrants()).toEqual([]);
    expect(named('granted')).toHaveLength(0);
    // A new request prompts afresh (no cool-down for a cancellation).
    const b = ask('s1');
    await flush();
    expect(controlled.calls).toHaveLength(2);
    controlled.calls[1]!.resolve({ result: 'granted' });
    await b;
  });

  it('keeps the screen until the cancelled prompt is down, or a grace period passes', async () => {
    const controlled = new ControlledBackend();
    const { clock, ask } = setup({}, controlled);
    const controller = new AbortController();
    const a = ask('s1', WORK, { signal: controller.signal });
    const b = ask('s2');
    controller.abort();
    await expectCode(a, 'ERR_ABORTED');
    await flush();
    // The first prompt has not confirmed it is gone: the second waits.
    expect(controlled.calls).toHaveLength(1);
    clock.advance(1_999);
    expect(controlled.calls).toHaveLength(1);
    clock.advance(1);
    expect(controlled.calls.map((c) => c.request.sessionId)).toEqual(['s1', 's2']);
    controlled.calls[1]!.resolve({ result: 'granted' });
    await b;
    // The first backend call settling late changes nothing.
    controlled.calls[0]!.resolve({ result: 'granted' });
    await flush();
  });

  it('a cancelled prompt that settles promptly frees the screen at once', async () => {
    const { backend, ask } = setup();
    const controller = new AbortController();
    const a = ask('s1', WORK, { signal: controller.signal });
    const b = ask('s2');
    await backend.nextPrompt();
    controller.abort();
    await expectCode(a, 'ERR_ABORTED');
    await flush();
    const next = await backend.nextPrompt();
    expect(next.request.sessionId).toBe('s2');
    next.respond('granted');
    await b;
  });

  it('all waiters of a queued prompt leaving removes it from the queue; the backend never sees it', async () => {
    const { backend, ask, named } = setup();
    const first = ask('s1');
    const c = new AbortController();
    const q1 = ask('s2', WORK, { signal: c.signal });
    const q2 = ask('s2', WORK, { signal: c.signal });
    const third = ask('s3');
    c.abort();
    await expectCode(q1, 'ERR_ABORTED');
    await expectCode(q2, 'ERR_ABORTED');
    expect(named('denied')).toEqual([
      expect.objectContaining({ sessionId: 's2', reason: 'cancelled' }),
    ]);
    (await backend.nextPrompt()).respond('granted');
    await first;
    await flush();
    const next = await backend.nextPrompt();
    expect(next.request.sessionId).toBe('s3');
    next.respond('granted');
    await third;
    expect(backend.requests.map((r) => r.sessionId)).toEqual(['s1', 's3']);
  });

  it('after a queued prompt was abandoned, a new request for it queues afresh', async () => {
    const { backend, ask } = setup();
    const first = ask('s1');
    const c = new AbortController();
    const gone = ask('s2', WORK, { signal: c.signal });
    c.abort();
    await expectCode(gone, 'ERR_ABORTED');
    let position = 0;
    const again = ask('s2', WORK, { onQueued: (p) => (position = p) });
    expect(position).toBe(1);
    (await backend.nextPrompt()).respond('granted');
    await first;
    await flush();
    (await backend.nextPrompt()).respond('granted');
    await again;
  });
});

describe('Authorizer close()', () => {
  it('rejects queued and showing requests with ERR_CLOSED and aborts the prompt on screen', async () => {
    const { clock, backend, ask, authorizer } = setup();
    const showing = ask('s1');
    const queued = ask('s2');
    const shown = await backend.nextPrompt();
    authorizer.close();
    const error = await expectCode(showing, 'ERR_CLOSED');
    expect(error.message).toContain('"Work"');
    await expectCode(queued, 'ERR_CLOSED');
    expect(shown.signal.aborted).toBe(true);
    await flush();
    expect(backend.requests).toHaveLength(1);
    expect(clock.pendingTimers).toBe(0);
  });

  it('drops grants and stops timers; later calls are inert; idempotent', async () => {
    const { clock, backend, ask, authorizer, events } = setup();
    const a = ask('s1');
    (await backend.nextPrompt()).respond('granted');
    await a;
    expect(clock.pendingTimers).toBe(1);
    const before = events.length;
    authorizer.close();
    authorizer.close();
    expect(clock.pendingTimers).toBe(0);
    expect(authorizer.listGrants()).toEqual([]);
    expect(authorizer.tryUse('s1', 'work')).toBe(false);
    expect(authorizer.revoke({ sessionId: 's1' })).toBe(0);
    authorizer.lock();
    authorizer.unlock();
    await expectCode(ask('s1'), 'ERR_CLOSED');
    expect(backend.requests).toHaveLength(1);
    expect(events.length).toBe(before);
  });

  it('a backend answering after close creates nothing', async () => {
    const controlled = new ControlledBackend();
    const { ask, authorizer } = setup({}, controlled);
    const a = ask('s1');
    authorizer.close();
    await expectCode(a, 'ERR_CLOSED');
    controlled.calls[0]!.resolve({ result: 'granted' });
    await flush();
    expect(authorizer.listGrants()).toEqual([]);
  });
});
