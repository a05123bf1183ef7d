/**
 * The grant store's heap and single timer, checked against a naive model over random operations:
 * the timer must expire every grant whose monotonic deadline has passed, never a live one, and
 * lazy checks must agree with the rules exactly.
 */
import { describe, expect, it } from 'vitest';
import type { AccountRef } from '../../src/prompt/prompt-backend.js';
import type { SessionCredential } from '../../src/session/credentials.js';
import { type ExpiryReason, type Grant, GrantStore } from '../../src/session/grant-store.js';
import { FakeClock } from '../../src/testing/fake-clock.js';

const IDLE = 1_000;
const MAX = 5_000;

interface Model {
  createdMono: number;
  createdWall: number;
  lastMono: number;
  lastWall: number;
}

function expiredNow(m: Model, mono: number, wall: number): boolean {
  return (
    wall < m.lastWall ||
    mono < m.lastMono ||
    mono - m.createdMono >= MAX ||
    wall - m.createdWall >= MAX ||
    mono - m.lastMono >= IDLE ||
    wall - m.lastWall >= IDLE
  );
}

function monoDeadline(m: Model): number {
  return Math.min(m.lastMono + IDLE, m.createdMono + MAX);
}

/** Small deterministic PRNG (mulberry32). */
function random(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4_294_967_296;
  };
}

const accounts: AccountRef[] = ['a', 'b', 'c'].map((id) => ({ id, displayName: id.toUpperCase() }));
const credential = (id: string): SessionCredential => ({
  id,
  scope: 'terminal',
  process: { host: 'tmux' },
});

describe('GrantStore against a model', () => {
  it.each([
    [1, 12],
    [2, 12],
    [3, 12],
    [4, 12],
    [5, 60],
    [6, 60],
    [7, 200],
    [8, 200],
  ])('random operations, seed %i, %i sessions', (seed, sessions) => {
    const rand = random(seed);
    const clock = new FakeClock({ monotonic: 10_000, wall: 50_000 });
    const events: Array<{ key: string; reason: ExpiryReason }> = [];
    const store = new GrantStore({
      clock,
      idleTimeoutMs: IDLE,
      maxLifetimeMs: MAX,
      onExpired: (grant: Grant, reason) =>
        events.push({ key: `${grant.sessionId}/${grant.account.id}`, reason }),
    });
    const model = new Map<string, Model>();

    const settleEvents = (): void => {
      const mono = clock.monotonicNow();
      const wall = clock.wallNow();
      for (const event of events.splice(0)) {
        const m = model.get(event.key);
        expect(m, `expired event for unknown grant ${event.key}`).toBeDefined();
        expect(expiredNow(m!, mono, wall), `${event.key} expired while still valid`).toBe(true);
        model.delete(event.key);
      }
    };

    for (let step = 0; step < 4_000; step++) {
      const session = `s${Math.floor(rand() * sessions)}`;
      const account = accounts[Math.floor(rand() * accounts.length)]!;
      const key = `${session}/${account.id}`;
      const op = rand();
      if (op < 0.3) {
        store.add(credential(session), account);
        settleEvents();
        model.set(key, {
          createdMono: clock.monotonicNow(),
          createdWall: clock.wallNow(),
          lastMono: clock.monotonicNow(),
          lastWall: clock.wallNow(),
        });
      } else if (op < 0.6) {
        const m = model.get(key);
        const shouldLive = m !== undefined && !expiredNow(m, clock.monotonicNow(), clock.wallNow());
        const grant = store.use(session, account.id);
        expect(grant !== undefined, `use(${key})`).toBe(shouldLive);
        settleEvents();
        if (grant !== undefined && m !== undefined) {
          m.lastMono = clock.monotonicNow();
          m.lastWall = clock.wallNow();
        }
        if (!shouldLive) expect(model.has(key)).toBe(false);
      } else if (op < 0.65) {
        // Revoke one grant or a whole session: removals from the middle of the heap.
        const live = store.liveGrantsOf(session, rand() < 0.5 ? account.id : undefined);
        settleEvents();
        for (const grant of live) store.remove(grant);
        for (const grant of live) model.delete(`${grant.sessionId}/${grant.account.id}`);
      } else if (op < 0.95) {
        // Small steps land between deadlines, where a mis-ordered heap shows.
        clock.advance(Math.floor(rand() < 0.5 ? rand() * 20 : rand() * IDLE * 0.6));
        settleEvents();
        // The timer must have caught every grant whose monotonic deadline has passed.
        for (const [k, m] of model) {
          expect(monoDeadline(m) > clock.monotonicNow(), `${k} outlived its deadline`).toBe(true);
        }
      } else {
        clock.jumpWall(Math.floor(rand() * IDLE * 0.5));
      }
      expect(clock.pendingTimers).toBe(model.size === 0 && store.size === 0 ? 0 : 1);
      store.assertConsistent();
    }

    // Finally, lazy listing agrees with the model exactly.
    const live = store.liveGrants();
    settleEvents();
    const mono = clock.monotonicNow();
    const wall = clock.wallNow();
    const expected = [...model].filter(([, m]) => !expiredNow(m, mono, wall)).map(([k]) => k);
    expect(live.map((g) => `${g.sessionId}/${g.account.id}`).sort()).toEqual(expected.sort());
    expect(store.size).toBe(live.length);
  });

  it('add replaces an existing grant for the same key; an expired one is reported first', () => {
    const clock = new FakeClock();
    const expired: ExpiryReason[] = [];
    const store = new GrantStore({
      clock,
      idleTimeoutMs: IDLE,
      maxLifetimeMs: MAX,
      onExpired: (_grant, reason) => expired.push(reason),
    });
    const first = store.add(credential('s'), accounts[0]!);
    clock.advance(500);
    const second = store.add(credential('s'), accounts[0]!);
    expect(second).not.toBe(first);
    expect(store.size).toBe(1);
    expect(expired).toEqual([]);
    expect(store.info(second).lifetimeRemainingMs).toBe(MAX);
    clock.jumpWall(IDLE);
    store.add(credential('s'), accounts[0]!);
    expect(expired).toEqual(['idle']);
    expect(store.size).toBe(1);
  });

  it('info never reports negative remaining time', () => {
    const clock = new FakeClock();
    const store = new GrantStore({
      clock,
      idleTimeoutMs: IDLE,
      maxLifetimeMs: MAX,
      onExpired: () => {},
    });
    const grant = store.add(credential('s'), accounts[0]!);
    clock.jumpWall(10 * MAX);
    expect(store.info(grant)).toMatchObject({
      idleRemainingMs: 0,
      lifetimeRemainingMs: 0,
      expiresInMs: 0,
    });
  });
});

/** setTimeout's limit: Node turns a longer delay into 1 ms. */
const TIMEOUT_MAX = 2_147_483_647;
const DAY = 86_400_000;

/**
 * A FakeClock whose timers behave like Node's setTimeout for long delays (over 2^31 − 1 ms they
 * fire after 1 ms), and which records every delay it was asked for. More than 100 timer firings
 * throw, so a spinning timer fails the test instead of hanging it.
 */
function nodeLikeClock() {
  const clock = new FakeClock({ monotonic: 10_000 });
  const delays: number[] = [];
  let fired = 0;
  const nodeLike = {
    monotonicNow: () => clock.monotonicNow(),
    wallNow: () => clock.wallNow(),
    setTimer(callback: () => void, ms: number): () => void {
      delays.push(ms);
      return clock.setTimer(
        () => {
          // Fail the test instead of hanging it if the timer spins.
          if (++fired > 100) throw new Error('the expiry timer spins');
          callback();
        },
        ms > TIMEOUT_MAX ? 1 : ms,
      );
    },
  };
  return { clock, nodeLike, delays, fired: () => fired };
}

describe('GrantStore timer delays', () => {
  it('caps the timer at 2^31 − 1 ms for grants longer than ~24.8 days, so it does not spin', () => {
    const { clock, nodeLike, delays, fired } = nodeLikeClock();
    const expired: ExpiryReason[] = [];
    const store = new GrantStore({
      clock: nodeLike,
      idleTimeoutMs: 30 * DAY,
      maxLifetimeMs: 60 * DAY,
      onExpired: (_grant, reason) => expired.push(reason),
    });
    store.add(credential('s'), accounts[0]!);
    expect(delays).toEqual([TIMEOUT_MAX]);
    // With an uncapped delay, Node fires every millisecond: a thousand sweeps per second.
    clock.advance(1_000);
    expect(fired()).toBe(0);
    store.assertConsistent();

    // The capped timer fires early, finds nothing due and re-arms for the rest.
    clock.advance(TIMEOUT_MAX - 1_000);
    expect(fired()).toBe(1);
    expect(expired).toEqual([]);
    expect(store.size).toBe(1);
    expect(delays).toEqual([TIMEOUT_MAX, 30 * DAY - TIMEOUT_MAX]);
    store.assertConsistent();

    clock.advance(30 * DAY - TIMEOUT_MAX - 1);
    expect(expired).toEqual([]);
    clock.advance(1);
    expect(expired).toEqual(['idle']);
    expect(store.size).toBe(0);
    expect(clock.pendingTimers).toBe(0);
    expect(delays.every((ms) => ms <= TIMEOUT_MAX)).toBe(true);
  });

  it('expires a long grant exactly on time with a plain FakeClock, every delay capped', () => {
    const clock = new FakeClock();
    const delays: number[] = [];
    const recording = {
      monotonicNow: () => clock.monotonicNow(),
      wallNow: () => clock.wallNow(),
      setTimer: (callback: () => void, ms: number) => {
        delays.push(ms);
        return clock.setTimer(callback, ms);
      },
    };
    const expired: ExpiryReason[] = [];
    const store = new GrantStore({
      clock: recording,
      idleTimeoutMs: 100 * DAY,
      maxLifetimeMs: 365 * DAY,
      onExpired: (_grant, reason) => expired.push(reason),
    });
    const grant = store.add(credential('s'), accounts[0]!);
    clock.advance(50 * DAY);
    expect(store.use('s', 'a')).toBe(grant);
    clock.advance(100 * DAY - 1);
    expect(expired).toEqual([]);
    expect(clock.pendingTimers).toBe(1);
    store.assertConsistent();
    clock.advance(1);
    expect(expired).toEqual(['idle']);
    expect(clock.pendingTimers).toBe(0);
    expect(delays.length).toBeGreaterThan(2);
    expect(Math.max(...delays)).toBe(TIMEOUT_MAX);
  });

  it('several long grants each expire on time across capped hops', () => {
    const { clock, nodeLike, delays, fired } = nodeLikeClock();
    const expired: string[] = [];
    const store = new GrantStore({
      clock: nodeLike,
      idleTimeoutMs: 40 * DAY,
      maxLifetimeMs: 40 * DAY,
      onExpired: (grant) => expired.push(grant.sessionId),
    });
    store.add(credential('first'), accounts[0]!);
    clock.advance(20 * DAY);
    store.add(credential('second'), accounts[0]!);
    store.assertConsistent();
    clock.advance(20 * DAY - 1);
    expect(expired).toEqual([]);
    clock.advance(1);
    expect(expired).toEqual(['first']);
    store.assertConsistent();
    clock.advance(20 * DAY - 1);
    expect(expired).toEqual(['first']);
    clock.advance(1);
    expect(expired).toEqual(['first', 'second']);
    expect(clock.pendingTimers).toBe(0);
    expect(delays.every((ms) => ms <= TIMEOUT_MAX)).toBe(true);
    // One early hop per grant at most, never a spin.
    expect(fired()).toBeLessThanOrEqual(4);
  });
});

describe('Grant process descriptions', () => {
  const grantFor = (process: SessionCredential['process']): Grant => {
    const store = new GrantStore({
      clock: new FakeClock(),
      idleTimeoutMs: IDLE,
      maxLifetimeMs: MAX,
      onExpired: () => {},
    });
    return store.add({ id: 's', scope: 'process', process }, accounts[0]!);
  };

  it.each([
    { host: 'GNOME Terminal' },
    { host: 'kitty', program: 'node', pid: 42, executable: '/usr/bin/node' },
    { host: 'SSH session', program: '', executable: '', commandLine: ['node', '', 'read', 'x y'] },
    { host: 'tmux', pid: 7, commandLine: ['only'] },
    // Kept as they are, not packed: a NUL, an empty command line, a field of a custom provider.
    { host: 'tmux', program: 'a\0b', commandLine: ['x'] },
    { host: 'tmux', commandLine: [] },
    { host: 'tmux', program: 'node', window: 'Terminal 3' },
  ])('reads back %j exactly as the session gave it', (process) => {
    expect(grantFor(process as SessionCredential['process']).process).toEqual(process);
  });
});
