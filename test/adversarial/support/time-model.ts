/**
 * A reference model of the Authorizer's grant lifecycle in time, for the model-based test in
 * test/adversarial/time.test.ts. Plain TypeScript, written from BRIEF §2 "Grants" and the
 * Authorizer / GrantStore doc comments, sharing no code with src/.
 *
 * What it encodes:
 * - A grant for (session, account) is valid at a moment (mono, wall) iff the app is unlocked,
 *   mono and wall are each less than the idle timeout past its last use, each less than the
 *   hard limit past its creation, and since its last use the wall clock has neither gone back
 *   nor fallen more than {@link wallStepBackSlackMs} behind the monotonic clock. "Less
 *   than": at exactly 10 min idle (or exactly 12 h) the grant is gone.
 * - A use (tryUse, or authorize on a live grant) refreshes the last use on both clocks; the
 *   creation time never moves.
 * - Grants are checked when the authorizer looks at them: a use or authorize of that key,
 *   listGrants() (all), revoke() (those it targets), and its expiry timer. A grant found expired
 *   is removed with an `expired` event and never comes back. The timer follows the monotonic
 *   clock: each grant is looked at when the monotonic time reaches the moment it would expire if
 *   both clocks kept moving together (recomputed there when it was used meanwhile); a wall clock
 *   moved alone is seen on the next use or listing (GrantStore docs).
 * - lock() revokes every grant held (`revoked`/lock each, then `locked`), whether or not it
 *   had already run out unnoticed, and voids the approval of a prompt on screen; a prompt shown
 *   while locked unlocks the app (hook, `unlocked`/prompt) when approved with no lock() since.
 * - A denial refuses the same (session, account) without prompting for 5 s of monotonic time
 *   (`retryAfterMs` = what is left; at exactly 5 s it prompts again).
 *
 * @module
 */

/** Idle timeout (BRIEF: 10 min). */
export const IDLE_MS = 10 * 60_000;
/** Hard limit (BRIEF: 12 h). */
export const MAX_MS = 12 * 3_600_000;
/** Cool-down after a denial (5 s). */
export const COOLDOWN_MS = 5_000;

export const SESSIONS = ['s1', 's2', 's3'] as const;
export const ACCOUNTS = ['work', 'home'] as const;
export type SessionName = (typeof SESSIONS)[number];
export type AccountName = (typeof ACCOUNTS)[number];
export type ExpiryReason = 'idle' | 'lifetime' | 'clock';

/** `s1/work`: how keys appear in events and messages. */
export function keyOf(session: string, account: string): string {
  return `${session}/${account}`;
}

/**
 * How far the wall clock may fall behind the monotonic clock, `monoSinceUseMs` after a grant's
 * last use, before that counts as a step back (BRIEF: "treat a wall clock that moved backwards as
 * expiry"). A suspend only makes the wall clock advance more than the monotonic one; a step back
 * makes it advance less, even when it still reads later than at the last use. 1 s allows for
 * whole-millisecond wall readings, a tenth of the elapsed time for time daemons slewing the clock
 * (chrony: up to 8.3 %). No reading can see a step back that a later forward jump (a suspend) hid
 * before the authorizer next looked at the grant: it reads the clocks only when called, and the
 * expiry timer follows the monotonic clock.
 */
export function wallStepBackSlackMs(monoSinceUseMs: number): number {
  return 1_000 + monoSinceUseMs / 10;
}

/** The times the model keeps for one grant. */
export interface GrantTimes {
  readonly createdMono: number;
  readonly createdWall: number;
  lastMono: number;
  lastWall: number;
}

interface ModelGrant extends GrantTimes {
  /** Monotonic time at which the expiry timer looks at this grant next. */
  timerAt: number;
}

/**
 * Every reason the grant is not valid at (mono, wall); empty when it is valid. More than one
 * may apply; the authorizer may report any of them.
 */
export function expiryReasons(grant: GrantTimes, mono: number, wall: number): ExpiryReason[] {
  const reasons: ExpiryReason[] = [];
  const wallSinceUse = wall - grant.lastWall;
  const monoSinceUse = mono - grant.lastMono;
  if (
    wallSinceUse < 0 ||
    monoSinceUse < 0 ||
    wallSinceUse < monoSinceUse - wallStepBackSlackMs(monoSinceUse)
  ) {
    reasons.push('clock');
  }
  if (mono - grant.createdMono >= MAX_MS || wall - grant.createdWall >= MAX_MS) {
    reasons.push('lifetime');
  }
  if (monoSinceUse >= IDLE_MS || wallSinceUse >= IDLE_MS) reasons.push('idle');
  return reasons;
}

/** An event the model predicts. `expired` lists every reason that applies. */
export type PredictedEvent =
  | { readonly name: 'expired'; readonly key: string; readonly reasons: readonly ExpiryReason[] }
  | { readonly name: 'used' | 'granted-app' | 'granted-unlocking'; readonly key: string }
  | { readonly name: 'revoked'; readonly key: string; readonly reason: 'lock' | 'revoke' }
  | {
      readonly name: 'denied';
      readonly key: string;
      readonly reason: 'denied' | 'cancelled' | 'cooldown';
      readonly retryAfterMs?: number;
    }
  | { readonly name: 'prompt'; readonly key: string; readonly unlocks: boolean }
  | { readonly name: 'locked' }
  | { readonly name: 'unlocked'; readonly by: 'app' | 'prompt' };

/** A live grant as listGrants() must report it (the fields the model knows). */
export interface PredictedGrantInfo {
  readonly key: string;
  readonly createdAt: number;
  readonly lastUsedAt: number;
  readonly idleRemainingMs: number;
  readonly lifetimeRemainingMs: number;
  readonly expiresInMs: number;
}

/** How an authorize() call ends. */
export type PredictedOutcome =
  | { readonly ok: true }
  | { readonly ok: false; readonly code: string; readonly retryAfterMs?: number };

/** What authorize() does before anyone answers. */
export type AuthorizeStart =
  | { readonly kind: 'used' }
  | { readonly kind: 'cooldown'; readonly retryAfterMs: number }
  | { readonly kind: 'prompt'; readonly unlocks: boolean };

interface OpenPrompt {
  readonly key: string;
  readonly shownWhileLocked: boolean;
  lockedSinceShown: boolean;
}

/** The reference model. Each method applies one operation and returns what it predicts. */
export class TimeModel {
  mono: number;
  wall: number;
  locked: boolean;
  readonly #grants = new Map<string, ModelGrant>();
  readonly #cooldownUntil = new Map<string, number>();
  #prompt: OpenPrompt | undefined;

  constructor(initial: { mono: number; wall: number; locked: boolean }) {
    this.mono = initial.mono;
    this.wall = initial.wall;
    this.locked = initial.locked;
  }

  /** The grant record held for `key` (live or run out unnoticed), for the tests' own arithmetic. */
  grant(key: string): Readonly<GrantTimes> | undefined {
    return this.#grants.get(key);
  }

  /** Monotonic time at which an unfinished cool-down for `key` ends. */
  cooldownUntil(key: string): number | undefined {
    return this.#cooldownUntil.get(key);
  }

  /** Whether the grant for `key` is valid right now (without looking at it, as the authorizer would). */
  isValid(key: string): boolean {
    const grant = this.#grants.get(key);
    return (
      !this.locked && grant !== undefined && expiryReasons(grant, this.mono, this.wall).length === 0
    );
  }

  tryUse(key: string): { result: boolean; events: PredictedEvent[] } {
    const events: PredictedEvent[] = [];
    if (this.locked) return { result: false, events };
    const grant = this.#look(key, events);
    if (grant === undefined) return { result: false, events };
    grant.lastMono = this.mono;
    grant.lastWall = this.wall;
    events.push({ name: 'used', key });
    return { result: true, events };
  }

  /** Both clocks move together; the expiry timer looks at grants as their moments come. */
  advance(ms: number): PredictedEvent[] {
    const events: PredictedEvent[] = [];
    const target = this.mono + ms;
    for (;;) {
      let nextKey: string | undefined;
      let next: ModelGrant | undefined;
      for (const [key, grant] of this.#grants) {
        if (grant.timerAt <= target && (next === undefined || grant.timerAt < next.timerAt)) {
          nextKey = key;
          next = grant;
        }
      }
      if (next === undefined || nextKey === undefined) break;
      this.#moveTo(Math.max(next.timerAt, this.mono));
      const reasons = expiryReasons(next, this.mono, this.wall);
      if (reasons.length > 0) {
        this.#grants.delete(nextKey);
        events.push({ name: 'expired', key: nextKey, reasons });
      } else {
        next.timerAt = this.#timerMoment(next);
      }
    }
    this.#moveTo(target);
    return events;
  }

  /** The wall clock moves alone (suspend forward, NTP step or a person back). Nothing looks. */
  jumpWall(deltaMs: number): PredictedEvent[] {
    this.wall += deltaMs;
    return [];
  }

  lock(): PredictedEvent[] {
    if (this.#prompt !== undefined) this.#prompt.lockedSinceShown = true;
    if (this.locked) return [];
    this.locked = true;
    const events: PredictedEvent[] = [];
    for (const key of this.#grants.keys()) events.push({ name: 'revoked', key, reason: 'lock' });
    this.#grants.clear();
    events.push({ name: 'locked' });
    return events;
  }

  unlock(): PredictedEvent[] {
    if (!this.locked) return [];
    this.locked = false;
    return [{ name: 'unlocked', by: 'app' }];
  }

  revoke(session: string, account?: string): { count: number; events: PredictedEvent[] } {
    const events: PredictedEvent[] = [];
    const live: string[] = [];
    for (const key of [...this.#grants.keys()]) {
      const [grantSession, grantAccount] = key.split('/');
      if (grantSession !== session || (account !== undefined && grantAccount !== account)) continue;
      if (this.#look(key, events) !== undefined) live.push(key);
    }
    for (const key of live) {
      this.#grants.delete(key);
      events.push({ name: 'revoked', key, reason: 'revoke' });
    }
    return { count: live.length, events };
  }

  list(): { grants: PredictedGrantInfo[]; events: PredictedEvent[] } {
    const events: PredictedEvent[] = [];
    const grants: PredictedGrantInfo[] = [];
    for (const key of [...this.#grants.keys()]) {
      const grant = this.#look(key, events);
      if (grant === undefined) continue;
      const idleRemainingMs = Math.max(
        0,
        Math.min(grant.lastMono + IDLE_MS - this.mono, grant.lastWall + IDLE_MS - this.wall),
      );
      const lifetimeRemainingMs = Math.max(
        0,
        Math.min(grant.createdMono + MAX_MS - this.mono, grant.createdWall + MAX_MS - this.wall),
      );
      grants.push({
        key,
        createdAt: grant.createdWall,
        lastUsedAt: grant.lastWall,
        idleRemainingMs,
        lifetimeRemainingMs,
        expiresInMs: Math.min(idleRemainingMs, lifetimeRemainingMs),
      });
    }
    grants.sort((a, b) => a.key.localeCompare(b.key));
    return { grants, events };
  }

  /** authorize() up to the point where a person would have to answer. */
  beginAuthorize(key: string): { start: AuthorizeStart; events: PredictedEvent[] } {
    const events: PredictedEvent[] = [];
    if (this.#prompt !== undefined) throw new Error('the model runs one prompt at a time');
    if (!this.locked) {
      const grant = this.#look(key, events);
      if (grant !== undefined) {
        grant.lastMono = this.mono;
        grant.lastWall = this.wall;
        events.push({ name: 'used', key });
        return { start: { kind: 'used' }, events };
      }
    }
    const until = this.#cooldownUntil.get(key);
    if (until !== undefined) {
      const retryAfterMs = until - this.mono;
      if (retryAfterMs > 0) {
        events.push({ name: 'denied', key, reason: 'cooldown', retryAfterMs });
        return { start: { kind: 'cooldown', retryAfterMs }, events };
      }
      this.#cooldownUntil.delete(key);
    }
    this.#prompt = { key, shownWhileLocked: this.locked, lockedSinceShown: false };
    events.push({ name: 'prompt', key, unlocks: this.locked });
    return { start: { kind: 'prompt', unlocks: this.locked }, events };
  }

  /** The person answers the prompt beginAuthorize() put on screen. */
  answer(answer: 'granted' | 'denied'): {
    outcome: PredictedOutcome;
    events: PredictedEvent[];
    unlockHookRuns: boolean;
  } {
    const prompt = this.#prompt;
    if (prompt === undefined) throw new Error('no prompt on screen');
    this.#prompt = undefined;
    const { key } = prompt;
    if (answer === 'denied') {
      this.#cooldownUntil.set(key, this.mono + COOLDOWN_MS);
      return {
        outcome: { ok: false, code: 'ERR_AUTHORIZATION_DENIED' },
        events: [{ name: 'denied', key, reason: 'denied' }],
        unlockHookRuns: false,
      };
    }
    if (prompt.lockedSinceShown) {
      return {
        outcome: { ok: false, code: 'ERR_AUTHORIZATION_CANCELLED' },
        events: [{ name: 'denied', key, reason: 'cancelled' }],
        unlockHookRuns: false,
      };
    }
    const events: PredictedEvent[] = [];
    // The hook runs only if the app is still locked: unlock() by the app meanwhile makes it moot.
    const unlockHookRuns = this.locked;
    if (this.locked) {
      this.locked = false;
      events.push({ name: 'unlocked', by: 'prompt' });
    }
    const grant: ModelGrant = {
      createdMono: this.mono,
      createdWall: this.wall,
      lastMono: this.mono,
      lastWall: this.wall,
      timerAt: 0,
    };
    grant.timerAt = this.#timerMoment(grant);
    this.#grants.set(key, grant);
    events.push({ name: unlockHookRuns ? 'granted-unlocking' : 'granted-app', key });
    return { outcome: { ok: true }, events, unlockHookRuns };
  }

  /** The authorizer looks at `key`: a grant found run out is removed with an `expired` event. */
  #look(key: string, events: PredictedEvent[]): ModelGrant | undefined {
    const grant = this.#grants.get(key);
    if (grant === undefined) return undefined;
    const reasons = expiryReasons(grant, this.mono, this.wall);
    if (reasons.length === 0) return grant;
    this.#grants.delete(key);
    events.push({ name: 'expired', key, reasons });
    return undefined;
  }

  /** When the timer looks next: the moment the grant runs out if both clocks move together. */
  #timerMoment(grant: GrantTimes): number {
    const offset = this.wall - this.mono;
    const moment = Math.min(
      grant.lastMono + IDLE_MS,
      grant.createdMono + MAX_MS,
      grant.lastWall + IDLE_MS - offset,
      grant.createdWall + MAX_MS - offset,
    );
    return Math.max(moment, this.mono + 1);
  }

  #moveTo(mono: number): void {
    this.wall += mono - this.mono;
    this.mono = mono;
  }
}
