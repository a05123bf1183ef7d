import { describe, expect, it } from 'vitest';
import { loadOnce } from '../../src/util/load-once.js';

describe('loadOnce', () => {
  it('shares one attempt among concurrent and later callers once it succeeded', async () => {
    let calls = 0;
    const load = loadOnce(async () => ++calls);
    const [a, b] = await Promise.all([load(), load()]);
    expect([a, b, await load()]).toEqual([1, 1, 1]);
    expect(calls).toBe(1);
  });

  it('forgets a failed attempt (rejected or thrown), so the next call tries again', async () => {
    let calls = 0;
    const load = loadOnce(() => {
      calls++;
      if (calls === 1) return Promise.reject(new Error('no koffi'));
      if (calls === 2) throw new Error('thrown');
      return Promise.resolve('bound');
    });
    await expect(load()).rejects.toThrow('no koffi');
    await expect(load()).rejects.toThrow('thrown');
    await expect(load()).resolves.toBe('bound');
    await expect(load()).resolves.toBe('bound');
    expect(calls).toBe(3);
  });
});
