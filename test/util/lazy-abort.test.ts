import { describe, expect, it } from 'vitest';
import { LazyAbortController } from '../../src/util/lazy-abort.js';

describe('LazyAbortController', () => {
  it('gives a signal that fires when aborted after it was taken', () => {
    const cancellation = new LazyAbortController();
    const signal = cancellation.signal;
    const seen: unknown[] = [];
    signal.addEventListener('abort', () => seen.push(signal.reason));
    expect(signal.aborted).toBe(false);
    cancellation.abort('left');
    expect(cancellation.aborted).toBe(true);
    expect(seen).toEqual(['left']);
    expect(cancellation.signal).toBe(signal);
  });

  it('gives an already aborted signal, with the first reason, when taken after the abort', () => {
    const cancellation = new LazyAbortController();
    expect(cancellation.aborted).toBe(false);
    cancellation.abort('first');
    cancellation.abort('second');
    expect(cancellation.signal.aborted).toBe(true);
    expect(cancellation.signal.reason).toBe('first');
  });
});
