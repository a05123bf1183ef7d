/**
 * Grant lifetime: the idle timeout, the hard limit, both clocks, the expiry timer, listing and
 * revoking. Every test runs on the fake clock, so the boundaries are exact.
 */
import { describe, expect, it } from 'vitest';
import type { AccountRef, PromptRequest } from '../../src/prompt/prompt-backend.js';
import { ScriptedPromptBackend } from '../../src/prompt/scripted.js';
import {
  Authorizer,
  type AuthorizerOptions,
  DEFAULT_DENIAL_COOLDOWN_MS,
  DEFAULT_IDLE_TIMEOUT_MS,
  DEFAULT_MAX_LIFETIME_MS,
} from '../../src/session/authorizer.js';
import type { SessionCredential } from '../../src/session/credentials.js';
import { FakeClock } from '../../src/testing/fake-clock.js';
import { recordingAuthorizer } from './harness.js';

const IDLE = 10 * 60_000;
const MAX = 12 * 3_600_000;
const WORK: AccountRef = { id: 'work', displayName: 'Work' };
const HOME: AccountRef = { id: 'home', displayName: 'Home' };

function session(id: string, pid = 1000): SessionCredential {
  return { id, scope: 'terminal', process: { host: 'GNOME Terminal', program: 'cli', pid } };
}

function setup(options: Partial<AuthorizerOptions> = {}) {
  const clock = new FakeClock({ monotonic: 1_000, wall: 1_700_000_000_000 });
  const backend = new ScriptedPromptBackend({ decide: () => ({ result: 'granted' }) });
  const { authorizer, events, named } = recordingAuthorizer(backend, clock, options);
  const grant = (credential: SessionCredential, account: AccountRef = WORK) =>
    authorizer.authorize({ session: credential, account });
  return { clock, backend, authorizer, events, grant, named };
}

describe('Authorizer options', () => {
  it('has the documented defaults', () => {
    expect(DEFAULT_IDLE_TIMEOUT_MS).toBe(IDLE);
    expect(DEFAULT_MAX_LIFETIME_MS).toBe(MAX);
    expect(DEFAULT_DENIAL_COOLDOWN_MS).toBe(5_000);
  });

  it.each([
    ['idle 0', { idleTimeoutMs: 0 }],
    ['idle negative', { idleTimeoutMs: -1 }],
    ['idle NaN', { idleTimeoutMs: Number.NaN }],
    ['idle infinite', { idleTimeoutMs: Number.POSITIVE_INFINITY }],
    ['max 0', { maxLifetimeMs: 0 }],
    ['max infinite', { maxLifetimeMs: Number.POSITIVE_INFINITY }],
    ['max below idle', { idleTimeoutMs: 10_000, maxLifetimeMs: 9_999 }],
    ['cooldown negative', { denialCooldownMs: -1 }],
    ['cooldown NaN', { denialCooldownMs: Number.NaN }],
    ['unlock not a function', { unlock: 'yes' as never }],
  ])('rejects %s with ERR_INVALID_ARGUMENT', (_name, options) => {
    expect(() => new Authorizer({ prompt: new ScriptedPromptBackend(), ...options })).toThrow(
      expect.objectContaining({ code: 'ERR_INVALID_ARGUMENT' }),
    );
  });

  it('rejects a missing or malformed backend with ERR_INVALID_ARGUMENT', () => {
    expect(() => new Authorizer({} as never)).toThrow(
      expect.objectContaining({ code: 'ERR_INVALID_ARGUMENT' }),
    );
    expect(() => new Authorizer({ prompt: { id: 'x' } as never })).toThrow(
      expect.objectContaining({ code: 'ERR_INVALID_ARGUMENT' }),
    );
    expect(() => new Authorizer(undefined as never)).toThrow(
      expect.objectContaining({ code: 'ERR_INVALID_ARGUMENT' }),
    );
  });

  it('accepts max equal to idle', () => {
    const { authorizer } = setup({ idleTimeoutMs: 5_000, maxLifetimeMs: 5_000 });
    expect(authorizer.locked).toBe(false);
  });

  it('uses 10 minutes idle and 12 hours max by default', async () => {
    const { clock, authorizer, grant } = setup();
    await grant(session('s1'));
    const [info] = authorizer.listGrants();
    expect(info?.idleRemainingMs).toBe(IDLE);
    expect(info?.lifetimeRemainingMs).toBe(MAX);
    clock.advance(IDLE - 1);
    expect(authorizer.tryUse('s1', 'work')).toBe(true);
  });
});

describe('Authorizer grants: idle timeout', () => {
  it('is valid at idle - 1 ms', async () => {
    const { clock, authorizer, grant, named } = setup();
    await grant(session('s1'));
    clock.advance(IDLE - 1);
    expect(authorizer.tryUse('s1', 'work')).toBe(true);
    expect(named('expired')).toHaveLength(0);
  });

  it('is expired at exactly idle, with one expired event (reason idle)', async () => {
    const { clock, authorizer, grant, named } = setup();
    await grant(session('s1'));
    clock.advance(IDLE);
    expect(authorizer.tryUse('s1', 'work')).toBe(false);
    expect(authorizer.listGrants()).toEqual([]);
    expect(authorizer.tryUse('s1', 'work')).toBe(false);
    expect(named('expired')).toEqual([
      {
        sessionId: 's1',
        scope: 'terminal',
        account: WORK,
        process: session('s1').process,
        reason: 'idle',
      },
    ]);
  });

  it('is expired at idle by the lazy check too (wall-only jump, no timer involved)', async () => {
    const { clock, authorizer, grant, named } = setup();
    await grant(session('s1'));
    clock.jumpWall(IDLE - 1);
    expect(authorizer.listGrants()).toHaveLength(1);
    clock.jumpWall(1);
    expect(clock.pendingTimers).toBe(1);
    expect(authorizer.listGrants()).toEqual([]);
    expect(named('expired').map((e) => e.reason)).toEqual(['idle']);
  });

  it('refreshes on each tryUse, emitting used', async () => {
    const { clock, authorizer, grant, named } = setup();
    await grant(session('s1'));
    for (let i = 0; i < 10; i++) {
      clock.advance(IDLE - 1);
      expect(authorizer.tryUse('s1', 'work')).toBe(true);
    }
    expect(named('used')).toHaveLength(10);
    expect(named('used')[0]).toEqual({
      sessionId: 's1',
      scope: 'terminal',
      account: WORK,
      process: session('s1').process,
    });
    clock.advance(IDLE);
    expect(authorizer.tryUse('s1', 'work')).toBe(false);
  });

  it('refreshes on authorize of an existing grant, without prompting', async () => {
    const { clock, backend, authorizer, grant, named } = setup();
    await grant(session('s1'));
    clock.advance(IDLE - 1);
    await grant(session('s1'));
    clock.advance(IDLE - 1);
    expect(authorizer.tryUse('s1', 'work')).toBe(true);
    expect(backend.requests).toHaveLength(1);
    expect(named('used')).toHaveLength(2);
  });

  it('prompts again once expired', async () => {
    const { clock, backend, grant, named } = setup();
    await grant(session('s1'));
    clock.advance(IDLE);
    await grant(session('s1'));
    expect(backend.requests).toHaveLength(2);
    expect(named('granted')).toHaveLength(2);
  });
});

describe('Authorizer grants: hard limit', () => {
  it('expires at maxLifetime despite constant use (valid at max - 1)', async () => {
    const { clock, authorizer, grant, named } = setup();
    await grant(session('s1'));
    let elapsed = 0;
    const step = IDLE - 1;
    while (elapsed + step < MAX - 1) {
      clock.advance(step);
      elapsed += step;
      expect(authorizer.tryUse('s1', 'work')).toBe(true);
    }
    clock.advance(MAX - 1 - elapsed);
    expect(authorizer.tryUse('s1', 'work')).toBe(true);
    clock.advance(1);
    expect(authorizer.tryUse('s1', 'work')).toBe(false);
    expect(named('expired').map((e) => e.reason)).toEqual(['lifetime']);
  });

  it('expires on the wall clock hard limit (a sleep longer than the limit)', async () => {
    const { clock, authorizer, grant, named } = setup({ idleTimeoutMs: MAX });
    await grant(session('s1'));
    clock.jumpWall(MAX);
    expect(authorizer.tryUse('s1', 'work')).toBe(false);
    expect(named('expired').map((e) => e.reason)).toEqual(['lifetime']);
  });

  it('expires on the monotonic hard limit while the wall clock lags behind', async () => {
    const { clock, authorizer, grant, named } = setup({
      idleTimeoutMs: 60_000,
      maxLifetimeMs: 600_000,
    });
    await grant(session('s1'));
    // Each step: 50 s of monotonic time, the wall clock 0.9 s less (slewed, within the slack that
    // is not yet a step back); 9.9 s behind at the end.
    for (let elapsed = 50_000; elapsed < 600_000; elapsed += 50_000) {
      clock.advance(50_000);
      clock.jumpWall(-900);
      expect(authorizer.tryUse('s1', 'work')).toBe(true);
    }
    expect(authorizer.listGrants()[0]?.lifetimeRemainingMs).toBe(50_000);
    clock.advance(50_000);
    expect(authorizer.tryUse('s1', 'work')).toBe(false);
    expect(named('expired').map((e) => e.reason)).toEqual(['lifetime']);
  });
});

describe('Authorizer grants: clocks', () => {
  it('a wall clock set back since the last use expires the grant (reason clock)', async () => {
    const { clock, authorizer, grant, named } = setup();
    await grant(session('s1'));
    clock.advance(1_000);
    clock.jumpWall(-1_001);
    expect(authorizer.tryUse('s1', 'work')).toBe(false);
    expect(named('expired').map((e) => e.reason)).toEqual(['clock']);
  });

  it('even a 1 ms backwards step after a use expires it', async () => {
    const { clock, authorizer, grant, named } = setup();
    await grant(session('s1'));
    clock.advance(5_000);
    expect(authorizer.tryUse('s1', 'work')).toBe(true);
    clock.jumpWall(-1);
    expect(authorizer.listGrants()).toEqual([]);
    expect(named('expired').map((e) => e.reason)).toEqual(['clock']);
  });

  it('a wall clock that did not move is fine', async () => {
    const { clock, authorizer, grant } = setup();
    await grant(session('s1'));
    clock.advance(1_000);
    clock.jumpWall(-1_000);
    expect(authorizer.tryUse('s1', 'work')).toBe(true);
  });

  it('a forward wall jump (suspend) beyond idle expires it; one just short does not', async () => {
    const { clock, authorizer, grant, named } = setup();
    await grant(session('s1'));
    await grant(session('s2'));
    clock.jumpWall(IDLE - 1);
    expect(authorizer.tryUse('s1', 'work')).toBe(true);
    clock.jumpWall(8 * 3_600_000);
    expect(authorizer.tryUse('s1', 'work')).toBe(false);
    expect(authorizer.tryUse('s2', 'work')).toBe(false);
    expect(named('expired').map((e) => e.reason)).toEqual(['idle', 'idle']);
    expect(clock.monotonicNow()).toBe(1_000);
  });

  it('monotonic says idle while the wall clock says not: expired', async () => {
    const { clock, authorizer, grant, named } = setup();
    await grant(session('s1'));
    clock.advance(IDLE / 2);
    clock.jumpWall(-900); // the wall clock 0.9 s behind: within the slack, not a step back
    const [info] = authorizer.listGrants();
    expect(info?.idleRemainingMs).toBe(IDLE / 2);
    clock.advance(IDLE / 2 - 1);
    expect(authorizer.listGrants()).toHaveLength(1);
    clock.advance(1);
    expect(authorizer.tryUse('s1', 'work')).toBe(false);
    expect(named('expired').map((e) => e.reason)).toEqual(['idle']);
  });

  it('a wall clock set back since the last use expires the grant even when it still reads later', async () => {
    const { clock, authorizer, grant, named } = setup();
    await grant(session('s1'));
    clock.jumpWall(8 * 60_000); // asleep 8 min (the monotonic clock does not count it)
    clock.advance(5 * 60_000); // awake 5 min
    clock.jumpWall(-9 * 60_000); // NTP steps the wall clock back 9 min
    // 13 real minutes since the last use; the wall clock says 4, the monotonic one 5.
    expect(authorizer.tryUse('s1', 'work')).toBe(false);
    expect(named('expired').map((e) => e.reason)).toEqual(['clock']);
  });

  it('a wall clock that falls behind the monotonic one by up to 1 s + a tenth of the time is slewed, not set back', async () => {
    const { clock, authorizer, grant, named } = setup();
    await grant(session('s1'));
    // chrony slews by up to 8.3 %: a 1.5 s correction over 30 s between two uses.
    clock.advance(30_000);
    clock.jumpWall(-1_500);
    expect(authorizer.tryUse('s1', 'work')).toBe(true);
    clock.advance(60_000);
    clock.jumpWall(-7_000); // 1 s + 6 s: still a slew
    expect(authorizer.tryUse('s1', 'work')).toBe(true);
    clock.advance(60_000);
    clock.jumpWall(-7_001);
    expect(authorizer.tryUse('s1', 'work')).toBe(false);
    expect(named('expired').map((e) => e.reason)).toEqual(['clock']);
  });

  it('wall says idle while monotonic says not: expired', async () => {
    const { clock, authorizer, grant, named } = setup();
    await grant(session('s1'));
    clock.advance(IDLE / 2);
    clock.jumpWall(IDLE / 2 - 1);
    expect(authorizer.listGrants()[0]?.idleRemainingMs).toBe(1);
    clock.jumpWall(1);
    expect(authorizer.tryUse('s1', 'work')).toBe(false);
    expect(named('expired').map((e) => e.reason)).toEqual(['idle']);
  });
});

describe('Authorizer grants: expiry timer', () => {
  it('fires expired without any call, at the exact idle deadline', async () => {
    const { clock, grant, named } = setup();
    await grant(session('s1'));
    expect(clock.pendingTimers).toBe(1);
    clock.advance(IDLE - 1);
    expect(named('expired')).toHaveLength(0);
    clock.advance(1);
    expect(named('expired').map((e) => [e.sessionId, e.reason])).toEqual([['s1', 'idle']]);
    expect(clock.pendingTimers).toBe(0);
  });

  it('follows refreshes: a used grant expires idle after its last use', async () => {
    const { clock, authorizer, grant, named } = setup();
    await grant(session('s1'));
    clock.advance(IDLE / 2);
    authorizer.tryUse('s1', 'work');
    clock.advance(IDLE / 2);
    expect(named('expired')).toHaveLength(0);
    expect(clock.pendingTimers).toBe(1);
    clock.advance(IDLE / 2 - 1);
    expect(named('expired')).toHaveLength(0);
    clock.advance(1);
    expect(named('expired')).toHaveLength(1);
  });

  it('keeps one timer for many grants and expires each at its own time, in order', async () => {
    const { clock, grant, named } = setup();
    for (let i = 0; i < 100; i++) {
      await grant(session(`s${i}`));
      clock.advance(1_000);
      expect(clock.pendingTimers).toBe(1);
    }
    // s0 was granted 100 s ago.
    clock.advance(IDLE - 100_000);
    expect(named('expired').map((e) => e.sessionId)).toEqual(['s0']);
    clock.advance(49_500);
    expect(named('expired')).toHaveLength(50);
    clock.advance(IDLE);
    expect(named('expired').map((e) => e.sessionId)).toEqual(
      Array.from({ length: 100 }, (_, i) => `s${i}`),
    );
    expect(clock.pendingTimers).toBe(0);
  });

  it('reschedules by the wall clock too, once the timer sees it ran ahead', async () => {
    const { clock, authorizer, grant, named } = setup();
    await grant(session('s1'));
    clock.advance(IDLE / 2);
    authorizer.tryUse('s1', 'work');
    clock.jumpWall(IDLE / 4);
    // The timer set at grant time fires now; the grant is still valid (3/4 idle by the wall clock).
    clock.advance(IDLE / 2);
    expect(named('expired')).toHaveLength(0);
    clock.advance(IDLE / 4 - 1);
    expect(named('expired')).toHaveLength(0);
    clock.advance(1);
    expect(named('expired').map((e) => e.reason)).toEqual(['idle']);
  });

  it('fires lifetime expiry from the timer', async () => {
    const { clock, authorizer, grant, named } = setup({
      idleTimeoutMs: 60_000,
      maxLifetimeMs: 90_000,
    });
    await grant(session('s1'));
    clock.advance(59_000);
    authorizer.tryUse('s1', 'work');
    clock.advance(30_999);
    expect(named('expired')).toHaveLength(0);
    clock.advance(1);
    expect(named('expired').map((e) => e.reason)).toEqual(['lifetime']);
  });

  it('stops the timer when the last grant goes', async () => {
    const { clock, authorizer, grant } = setup();
    await grant(session('s1'));
    await grant(session('s1'), HOME);
    expect(clock.pendingTimers).toBe(1);
    authorizer.revoke({ sessionId: 's1' });
    expect(clock.pendingTimers).toBe(0);
  });

  it('durations over ~24.8 days: every timer delay is capped at 2^31 − 1 ms, expiry stays exact', async () => {
    const DAY = 86_400_000;
    const clock = new FakeClock({ monotonic: 1_000 });
    const delays: number[] = [];
    const recording = {
      monotonicNow: () => clock.monotonicNow(),
      wallNow: () => clock.wallNow(),
      setTimer: (callback: () => void, ms: number) => {
        delays.push(ms);
        return clock.setTimer(callback, ms);
      },
    };
    const authorizer = new Authorizer({
      prompt: new ScriptedPromptBackend({ decide: () => ({ result: 'granted' }) }),
      clock: recording,
      idleTimeoutMs: 30 * DAY,
      maxLifetimeMs: 90 * DAY,
    });
    const expired: string[] = [];
    authorizer.on('expired', (e) => expired.push(e.reason));
    await authorizer.authorize({ session: session('s1'), account: WORK });
    expect(delays).toEqual([2_147_483_647]);
    clock.advance(30 * DAY - 1);
    expect(expired).toEqual([]);
    expect(authorizer.listGrants()).toHaveLength(1);
    clock.advance(1);
    expect(expired).toEqual(['idle']);
    expect(clock.pendingTimers).toBe(0);
    expect(delays.every((ms) => ms <= 2_147_483_647)).toBe(true);
    authorizer.close();
  });

  it('emits expired only once per grant (timer and lazy checks agree)', async () => {
    const { clock, authorizer, grant, named } = setup();
    await grant(session('s1'));
    clock.advance(IDLE);
    authorizer.tryUse('s1', 'work');
    authorizer.listGrants();
    authorizer.revoke({ sessionId: 's1' });
    clock.advance(IDLE);
    expect(named('expired')).toHaveLength(1);
    expect(named('revoked')).toHaveLength(0);
  });
});

describe('Authorizer grants: keys', () => {
  it('two accounts in one session are authorized separately', async () => {
    const { backend, authorizer, grant } = setup();
    await grant(session('s1'), WORK);
    expect(authorizer.tryUse('s1', 'home')).toBe(false);
    await grant(session('s1'), HOME);
    expect(backend.requests.map((r) => r.account.id)).toEqual(['work', 'home']);
    expect(authorizer.tryUse('s1', 'work')).toBe(true);
    expect(authorizer.tryUse('s1', 'home')).toBe(true);
  });

  it('two sessions are authorized separately, even with the same pid (no per-pid cache: goldwarden #64)', async () => {
    const { backend, authorizer, grant } = setup();
    await grant(session('s1', 4242));
    expect(authorizer.tryUse('s2', 'work')).toBe(false);
    await grant(session('s2', 4242));
    expect(backend.requests.map((r) => r.sessionId)).toEqual(['s1', 's2']);
  });

  it('another process of the same session (a subshell) shares the grant', async () => {
    const { backend, grant } = setup();
    await grant(session('s1', 100));
    await grant(session('s1', 200));
    expect(backend.requests).toHaveLength(1);
  });

  it('session and account ids that look alike do not collide', async () => {
    const { backend, authorizer, grant } = setup();
    await grant(session('a'), { id: 'b\u0000c', displayName: 'X' });
    expect(authorizer.tryUse('a\u0000b', 'c')).toBe(false);
    await grant(session('a\u0000b'), { id: 'c', displayName: 'Y' });
    expect(backend.requests).toHaveLength(2);
  });

  it('unknown session or account: tryUse false, no event', () => {
    const { authorizer, events } = setup();
    expect(authorizer.tryUse('nobody', 'work')).toBe(false);
    expect(events).toEqual([]);
  });
});

describe('Authorizer grants: listGrants and revoke', () => {
  it('lists live grants with their remaining times', async () => {
    const { clock, authorizer, grant } = setup();
    const wall0 = clock.wallNow();
    await grant(session('s1'));
    clock.advance(1_000);
    await grant(session('s2'), HOME);
    clock.advance(2_000);
    const list = authorizer.listGrants();
    expect(list).toHaveLength(2);
    const s1 = list.find((g) => g.sessionId === 's1');
    const s2 = list.find((g) => g.sessionId === 's2');
    expect(s1).toEqual({
      sessionId: 's1',
      scope: 'terminal',
      account: WORK,
      process: session('s1').process,
      createdAt: wall0,
      lastUsedAt: wall0,
      idleRemainingMs: IDLE - 3_000,
      lifetimeRemainingMs: MAX - 3_000,
      expiresInMs: IDLE - 3_000,
    });
    expect(s2).toMatchObject({
      account: HOME,
      createdAt: wall0 + 1_000,
      idleRemainingMs: IDLE - 2_000,
      lifetimeRemainingMs: MAX - 2_000,
    });
    authorizer.tryUse('s1', 'work');
    expect(authorizer.listGrants().find((g) => g.sessionId === 's1')).toMatchObject({
      createdAt: wall0,
      lastUsedAt: wall0 + 3_000,
      idleRemainingMs: IDLE,
      lifetimeRemainingMs: MAX - 3_000,
    });
  });

  it('listing does not refresh a grant', async () => {
    const { clock, authorizer, grant } = setup();
    await grant(session('s1'));
    clock.advance(IDLE - 1);
    expect(authorizer.listGrants()).toHaveLength(1);
    clock.advance(1);
    expect(authorizer.tryUse('s1', 'work')).toBe(false);
  });

  it('expiresInMs is the lifetime remaining near the hard limit', async () => {
    const { clock, authorizer, grant } = setup({ idleTimeoutMs: 60_000, maxLifetimeMs: 100_000 });
    await grant(session('s1'));
    clock.advance(50_000);
    authorizer.tryUse('s1', 'work');
    clock.advance(30_000);
    authorizer.tryUse('s1', 'work');
    expect(authorizer.listGrants()[0]).toMatchObject({
      idleRemainingMs: 60_000,
      lifetimeRemainingMs: 20_000,
      expiresInMs: 20_000,
    });
  });

  it('revokes one grant, or a whole session, and counts them', async () => {
    const { authorizer, grant, named } = setup();
    await grant(session('s1'), WORK);
    await grant(session('s1'), HOME);
    await grant(session('s2'), WORK);
    expect(authorizer.revoke({ sessionId: 's1', accountId: 'work' })).toBe(1);
    expect(authorizer.tryUse('s1', 'work')).toBe(false);
    expect(authorizer.tryUse('s1', 'home')).toBe(true);
    expect(authorizer.revoke({ sessionId: 's1', accountId: 'work' })).toBe(0);
    expect(authorizer.revoke({ sessionId: 's1' })).toBe(1);
    expect(authorizer.tryUse('s1', 'home')).toBe(false);
    expect(authorizer.tryUse('s2', 'work')).toBe(true);
    expect(authorizer.revoke({ sessionId: 'nobody' })).toBe(0);
    expect(named('revoked').map((e) => [e.sessionId, e.account.id, e.reason])).toEqual([
      ['s1', 'work', 'revoke'],
      ['s1', 'home', 'revoke'],
    ]);
  });

  it('revoking a session with several accounts removes them all', async () => {
    const { authorizer, grant } = setup();
    for (const id of ['a', 'b', 'c', 'd']) await grant(session('s1'), { id, displayName: id });
    await grant(session('s2'), { id: 'b', displayName: 'b' });
    expect(authorizer.revoke({ sessionId: 's1', accountId: 'c' })).toBe(1);
    expect(authorizer.revoke({ sessionId: 's1' })).toBe(3);
    expect(authorizer.listGrants().map((g) => [g.sessionId, g.account.id])).toEqual([['s2', 'b']]);
  });

  it('does not count an expired grant as revoked', async () => {
    const { clock, authorizer, grant, named } = setup();
    await grant(session('s1'));
    clock.jumpWall(IDLE);
    expect(authorizer.revoke({ sessionId: 's1' })).toBe(0);
    expect(named('expired')).toHaveLength(1);
  });

  it('rejects a malformed filter with ERR_INVALID_ARGUMENT', () => {
    const { authorizer } = setup();
    expect(() => authorizer.revoke({} as never)).toThrow(
      expect.objectContaining({ code: 'ERR_INVALID_ARGUMENT' }),
    );
    expect(() => authorizer.revoke({ sessionId: 's', accountId: 3 as never })).toThrow(
      expect.objectContaining({ code: 'ERR_INVALID_ARGUMENT' }),
    );
  });

  it('a request already authorized is not undone by a revoke; the next one prompts again', async () => {
    const { backend, authorizer, grant } = setup();
    authorizer.on('granted', (g) => authorizer.revoke({ sessionId: g.sessionId }));
    await expect(grant(session('s1'))).resolves.toBeUndefined();
    expect(authorizer.tryUse('s1', 'work')).toBe(false);
    await grant(session('s1'));
    expect(backend.requests).toHaveLength(2);
  });

  it('passes the verified process and the claims to the backend', async () => {
    const { backend, authorizer } = setup();
    const credential = session('s1', 77);
    await authorizer.authorize({
      session: credential,
      account: WORK,
      claims: { name: 'deploy', reason: 'ship it' },
      subject: { pid: 77, startTime: '12345', uid: 1000 },
    });
    expect(backend.requests[0]).toEqual<PromptRequest>({
      account: WORK,
      process: credential.process,
      claims: { name: 'deploy', reason: 'ship it' },
      sessionId: 's1',
      subject: { pid: 77, startTime: '12345', uid: 1000 },
      unlocks: false,
    });
  });
});
