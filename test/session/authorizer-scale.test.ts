/**
 * Holding 100,000 grants stays cheap: one timer, exact expiry in bulk, a small heap footprint per
 * grant and a fast `tryUse`. The precise numbers belong to the benchmarks; these checks catch the
 * regressions that matter (a timer per grant, an O(n) use, a heavy grant record).
 */
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import type { PromptBackend } from '../../src/prompt/prompt-backend.js';
import { Authorizer } from '../../src/session/authorizer.js';
import type { SessionCredential } from '../../src/session/credentials.js';
import { FakeClock } from '../../src/testing/fake-clock.js';

const N = 100_000;
const IDLE = 10 * 60_000;

const grantAll: PromptBackend = {
  id: 'grant-all',
  isAvailable: async () => true,
  prompt: async () => ({ result: 'granted' }),
};

describe('Authorizer at 100,000 grants', () => {
  it('keeps one timer, and expires exactly the unused grants when their time comes', async () => {
    const clock = new FakeClock();
    const authorizer = new Authorizer({ prompt: grantAll, clock });
    const process_ = { host: 'GNOME Terminal' };
    const account = { id: 'work', displayName: 'Work' };
    for (let i = 0; i < N; i++) {
      const session: SessionCredential = { id: `s${i}`, scope: 'terminal', process: process_ };
      await authorizer.authorize({ session, account });
    }
    expect(clock.pendingTimers).toBe(1);
    let expired = 0;
    authorizer.on('expired', () => expired++);

    clock.advance(IDLE / 2);
    for (let i = 0; i < N; i += 2) expect(authorizer.tryUse(`s${i}`, 'work')).toBe(true);
    clock.advance(IDLE / 2 - 1);
    expect(expired).toBe(0);
    clock.advance(1);
    expect(expired).toBe(N / 2);
    expect(authorizer.tryUse('s1', 'work')).toBe(false);
    expect(authorizer.tryUse('s0', 'work')).toBe(true);
    expect(clock.pendingTimers).toBe(1);

    authorizer.lock();
    expect(authorizer.listGrants()).toEqual([]);
    expect(clock.pendingTimers).toBe(0);
  });

  it('costs well under 400 bytes of heap per grant, and tryUse stays fast (child node --expose-gc)', async () => {
    const authorizerUrl = new URL('../../src/session/authorizer.ts', import.meta.url).href;
    const script = `
      const { Authorizer } = await import(${JSON.stringify(authorizerUrl)});
      const N = ${N};
      const backend = { id: 'x', isAvailable: async () => true, prompt: async () => ({ result: 'granted' }) };
      const authorizer = new Authorizer({ prompt: backend });
      const account = { id: 'work', displayName: 'Work' };
      const proc = { host: 'GNOME Terminal', program: 'cli', pid: 1 };
      // Credentials exist per connection anyway; build them first so only the grants are counted.
      const sessions = Array.from({ length: N }, (_, i) => ({
        id: 'linux:tty34817:sid' + i + ':start123456789:boot0123456789abcdef', scope: 'terminal', process: proc,
      }));
      global.gc(); global.gc();
      const before = process.memoryUsage().heapUsed;
      for (const session of sessions) await authorizer.authorize({ session, account });
      global.gc(); global.gc();
      const bytesPerGrant = (process.memoryUsage().heapUsed - before) / N;
      const id = sessions[N >> 1].id;
      let best = 0;
      for (let round = 0; round < 3; round++) {
        const start = performance.now();
        for (let i = 0; i < 500_000; i++) if (!authorizer.tryUse(id, 'work')) throw new Error('lost grant');
        best = Math.max(best, 500_000 / ((performance.now() - start) / 1000));
      }
      process.stdout.write(JSON.stringify({ grants: authorizer.listGrants().length, bytesPerGrant, usesPerSecond: best }));
    `;
    const { stdout } = await promisify(execFile)(
      process.execPath,
      ['--expose-gc', '--import', 'tsx', '--input-type=module', '-e', script],
      { cwd: fileURLToPath(new URL('../..', import.meta.url)), timeout: 60_000 },
    );
    const result = JSON.parse(stdout) as {
      grants: number;
      bytesPerGrant: number;
      usesPerSecond: number;
    };
    expect(result.grants).toBe(N);
    // Measured ~210 bytes here; the target is 400.
    expect(result.bytesPerGrant).toBeLessThan(400);
    // Measured ~5,000,000/s here; the target (1,000,000/s) is checked by the benchmarks. This
    // bound only catches an O(n) lookup (which would give ~10,000/s) without flaking under load.
    expect(result.usesPerSecond).toBeGreaterThan(250_000);
  }, 60_000);
});
