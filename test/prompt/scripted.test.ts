import { describe, expect, it } from 'vitest';
import type { PromptRequest } from '../../src/prompt/prompt-backend.js';
import { ScriptedPromptBackend } from '../../src/prompt/scripted.js';
import { FakeClock } from '../../src/testing/fake-clock.js';

function request(account = 'work'): PromptRequest {
  return {
    account: { id: account, displayName: account.toUpperCase() },
    process: { host: 'xterm', program: 'cli', pid: 4242 },
    claims: { name: 'test-cli' },
    sessionId: 'session-1',
    unlocks: false,
  };
}

const live = (): { signal: AbortSignal } => ({ signal: new AbortController().signal });

/** Resolves with 'pending' if `promise` has not settled after the microtask queue drained. */
async function stateOf(promise: Promise<unknown>): Promise<unknown> {
  const marker = Symbol('pending');
  const result = await Promise.race([promise, new Promise((r) => setImmediate(() => r(marker)))]);
  return result === marker ? 'pending' : result;
}

describe('ScriptedPromptBackend', () => {
  it('has id scripted by default, or the given id', () => {
    expect(new ScriptedPromptBackend().id).toBe('scripted');
    expect(new ScriptedPromptBackend({ id: 'demo' }).id).toBe('demo');
  });

  it('answers the script in order, accepting strings and outcome objects', async () => {
    const backend = new ScriptedPromptBackend({
      outcomes: [
        'granted',
        { result: 'denied', detail: 'wrong finger' },
        'cancelled',
        'unavailable',
      ],
    });
    expect(backend.remainingOutcomes).toBe(4);
    expect(await backend.prompt(request(), live())).toEqual({ result: 'granted' });
    expect(await backend.prompt(request(), live())).toEqual({
      result: 'denied',
      detail: 'wrong finger',
    });
    expect(await backend.prompt(request(), live())).toEqual({ result: 'cancelled' });
    expect(await backend.prompt(request(), live())).toEqual({ result: 'unavailable' });
    expect(backend.remainingOutcomes).toBe(0);
  });

  it('fails closed: denies once the script runs out', async () => {
    const backend = new ScriptedPromptBackend({ outcomes: ['granted'] });
    await backend.prompt(request(), live());
    const outcome = await backend.prompt(request(), live());
    expect(outcome.result).toBe('denied');
    expect(await new ScriptedPromptBackend().prompt(request(), live())).toMatchObject({
      result: 'denied',
    });
  });

  it('uses decide after the script, with the request', async () => {
    const backend = new ScriptedPromptBackend({
      outcomes: ['denied'],
      decide: async (req) => ({ result: req.account.id === 'home' ? 'granted' : 'denied' }),
    });
    expect((await backend.prompt(request('home'), live())).result).toBe('denied');
    expect((await backend.prompt(request('home'), live())).result).toBe('granted');
    expect((await backend.prompt(request('work'), live())).result).toBe('denied');
  });

  it('rejects when decide throws, as a broken backend does', async () => {
    const backend = new ScriptedPromptBackend({
      decide: () => {
        throw new Error('D-Bus went away');
      },
    });
    await expect(backend.prompt(request(), live())).rejects.toThrow('D-Bus went away');
  });

  it('addOutcomes appends to the script', async () => {
    const backend = new ScriptedPromptBackend();
    backend.addOutcomes('granted', { result: 'cancelled', detail: 'Escape' });
    expect((await backend.prompt(request(), live())).result).toBe('granted');
    expect(await backend.prompt(request(), live())).toEqual({
      result: 'cancelled',
      detail: 'Escape',
    });
  });

  it('rejects malformed outcomes and delays with ERR_INVALID_ARGUMENT', () => {
    expect(() => new ScriptedPromptBackend({ outcomes: ['yes' as never] })).toThrow(
      expect.objectContaining({ code: 'ERR_INVALID_ARGUMENT' }),
    );
    expect(() => new ScriptedPromptBackend({ outcomes: [{ result: 'ok' } as never] })).toThrow(
      expect.objectContaining({ code: 'ERR_INVALID_ARGUMENT' }),
    );
    expect(() => new ScriptedPromptBackend({ delayMs: -1 })).toThrow(
      expect.objectContaining({ code: 'ERR_INVALID_ARGUMENT' }),
    );
    expect(() => new ScriptedPromptBackend().addOutcomes(null as never)).toThrow(
      expect.objectContaining({ code: 'ERR_INVALID_ARGUMENT' }),
    );
  });

  it('records every shown request and calls onPrompt with it', async () => {
    const seen: PromptRequest[] = [];
    const backend = new ScriptedPromptBackend({
      outcomes: ['granted', 'granted'],
      onPrompt: (req) => seen.push(req),
    });
    const first = request('a');
    const second = request('b');
    await backend.prompt(first, live());
    await backend.prompt(second, live());
    expect(backend.requests).toEqual([first, second]);
    expect(seen).toEqual([first, second]);
  });

  it('is unavailable when configured so: isAvailable false, prompts answer unavailable', async () => {
    const backend = new ScriptedPromptBackend({ available: false, outcomes: ['granted'] });
    expect(await backend.isAvailable()).toBe(false);
    expect((await backend.prompt(request(), live())).result).toBe('unavailable');
    expect(backend.requests).toHaveLength(0);
    expect(backend.remainingOutcomes).toBe(1);
    backend.available = true;
    expect(await backend.isAvailable({ signal: AbortSignal.abort() })).toBe(true);
    expect((await backend.prompt(request(), live())).result).toBe('granted');
  });

  it('shows nothing for an already-aborted signal', async () => {
    const backend = new ScriptedPromptBackend({ outcomes: ['granted'] });
    const outcome = await backend.prompt(request(), { signal: AbortSignal.abort() });
    expect(outcome.result).toBe('cancelled');
    expect(backend.requests).toHaveLength(0);
    expect(backend.remainingOutcomes).toBe(1);
  });

  it('waits delayMs on the injected clock, and cancels promptly during the delay', async () => {
    const clock = new FakeClock();
    const backend = new ScriptedPromptBackend({
      outcomes: ['granted', 'granted'],
      delayMs: 1_000,
      clock,
    });
    const first = backend.prompt(request(), live());
    expect(await stateOf(first)).toBe('pending');
    clock.advance(999);
    expect(await stateOf(first)).toBe('pending');
    clock.advance(1);
    expect(await first).toEqual({ result: 'granted' });

    const controller = new AbortController();
    const second = backend.prompt(request(), { signal: controller.signal });
    clock.advance(500);
    controller.abort();
    expect((await second).result).toBe('cancelled');
    expect(clock.pendingTimers).toBe(0);
  });

  it('cancels a slow decide when the signal fires', async () => {
    const backend = new ScriptedPromptBackend({ decide: () => new Promise(() => {}) });
    const controller = new AbortController();
    const pending = backend.prompt(request(), { signal: controller.signal });
    expect(await stateOf(pending)).toBe('pending');
    controller.abort();
    expect((await pending).result).toBe('cancelled');
  });

  describe('manual mode', () => {
    it('hands out prompts in order and resolves with what the test answers', async () => {
      const backend = new ScriptedPromptBackend({ manual: true });
      const a = backend.prompt(request('a'), live());
      const b = backend.prompt(request('b'), live());
      expect(backend.pending.map((p) => p.request.account.id)).toEqual(['a', 'b']);
      const first = await backend.nextPrompt();
      const second = await backend.nextPrompt();
      expect(first.request.account.id).toBe('a');
      expect(second.request.account.id).toBe('b');
      expect(second.respond({ result: 'denied', detail: 'no' })).toBe(true);
      expect(await b).toEqual({ result: 'denied', detail: 'no' });
      expect(await stateOf(a)).toBe('pending');
      expect(first.respond('granted')).toBe(true);
      expect(first.respond('denied')).toBe(false);
      expect(await a).toEqual({ result: 'granted' });
      expect(backend.pending).toHaveLength(0);
    });

    it('nextPrompt waits for the next prompt to be shown', async () => {
      const backend = new ScriptedPromptBackend({ manual: true });
      const next = backend.nextPrompt();
      expect(await stateOf(next)).toBe('pending');
      const outcome = backend.prompt(request('late'), live());
      const shown = await next;
      expect(shown.request.account.id).toBe('late');
      shown.respond('granted');
      expect((await outcome).result).toBe('granted');
    });

    it('nextPrompt honours its own signal', async () => {
      const backend = new ScriptedPromptBackend({ manual: true });
      const controller = new AbortController();
      const next = backend.nextPrompt({ signal: controller.signal });
      controller.abort();
      await expect(next).rejects.toMatchObject({ code: 'ERR_ABORTED' });
      // The abandoned claim does not swallow the next prompt.
      void backend.prompt(request('x'), live());
      expect((await backend.nextPrompt()).request.account.id).toBe('x');
    });

    it('a prompt aborted on screen resolves cancelled, shows its signal aborted, and ignores answers', async () => {
      const backend = new ScriptedPromptBackend({ manual: true });
      const controller = new AbortController();
      const outcome = backend.prompt(request(), { signal: controller.signal });
      const shown = await backend.nextPrompt();
      expect(shown.signal.aborted).toBe(false);
      controller.abort();
      expect((await outcome).result).toBe('cancelled');
      expect(shown.signal.aborted).toBe(true);
      expect(shown.settled).toBe(true);
      expect(shown.respond('granted')).toBe(false);
      expect(backend.pending).toHaveLength(0);
    });

    it('fail() makes prompt() reject', async () => {
      const backend = new ScriptedPromptBackend({ manual: true });
      const outcome = backend.prompt(request(), live());
      (await backend.nextPrompt()).fail(new Error('agent crashed'));
      await expect(outcome).rejects.toThrow('agent crashed');
    });
  });
});
