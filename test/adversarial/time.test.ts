/**
 * Time: attacks the grant lifecycle of the Authorizer with random sequences of requests and
 * clock movements on a FakeClock, and checks every step against a reference model
 * (support/time-model.ts, written from BRIEF §2 "Grants" and the Authorizer/GrantStore docs).
 *
 * Each sequence mixes, over 3 sessions × 2 accounts: authorize (prompts when needed; the person
 * approves or denies, maybe after minutes, while other things happen: uses, clock movements,
 * lock, unlock, revoke, listing); tryUse; both clocks advancing (small steps, steps landing
 * exactly on or 1 ms around the 10 min idle timeout, the 12 h hard limit and the 5 s cool-down,
 * long steps, and keep-alive runs that use a grant every few minutes up to and past 12 h); the
 * wall clock alone jumping forward (a suspend) or back (an NTP step, a person), also exactly onto
 * the boundaries; lock(); unlock(); revoke one grant or a session; listGrants().
 *
 * What must hold, after every step:
 * - CORE INVARIANT (checked on its own, from the authorizer's own events and the clock, apart
 *   from the model): no grant is ever usable after lock() (nor created by approving a prompt that
 *   was on screen when lock() was called), after its idle timeout, after its hard limit (each by
 *   either clock; at exactly the limit it is gone), once the wall clock went back since its last
 *   use (reads earlier, or fell more than wallStepBackSlackMs behind the monotonic clock; the
 *   model says what no on-demand check can see), or after it was revoked or reported expired.
 * - The authorizer agrees with the model: tryUse's answer, authorize's outcome (granted, refused
 *   with which code, cool-down's retryAfterMs, whether a prompt went up and whether it unlocks),
 *   listGrants() with the exact remaining times, revoke()'s count, `locked`, when the unlock hook
 *   runs, and the events (kinds, keys, reasons) emitted by each step.
 *
 * Reproduce: BK_FUZZ_SEED=<seed> (default fixed, printed in the title); fast-check prints the
 * seed, the path and the shrunk sequence of a failure, and the message carries the concrete
 * trace (each step with the clock after it). BK_FUZZ_RUNS=<n> scales the runs as in fuzz.test.ts
 * (default 5000 there): this file runs 0.4 × n sequences, 2,000 by default; cases = sequences.
 */

import { Authorizer, BridgekeeperError, type GrantInfo } from 'bridgekeeper';
import { FakeClock, ScriptedPromptBackend } from 'bridgekeeper/testing';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { EVENT_NAMES, type Recorded } from '../session/harness.js';
import { countCases } from './support/cases.js';
import {
  ACCOUNTS,
  type AccountName,
  COOLDOWN_MS,
  type GrantTimes,
  IDLE_MS,
  keyOf,
  MAX_MS,
  type PredictedEvent,
  type PredictedOutcome,
  SESSIONS,
  type SessionName,
  TimeModel,
  wallStepBackSlackMs,
} from './support/time-model.js';

const SEED = Number(process.env.BK_FUZZ_SEED ?? 20_250_611);
const SEQUENCES = Math.max(10, Math.round(Number(process.env.BK_FUZZ_RUNS ?? 5000) * 0.4));

// ---------------------------------------------------------------------------------------------
// The steps

type SimpleStep =
  | { op: 'tryUse'; session: SessionName; account: AccountName }
  | { op: 'advance'; ms: number }
  /** Advance both clocks to `offsetMs` around a moment of one grant (or its cool-down), by monotonic time. */
  | {
      op: 'advanceTo';
      session: SessionName;
      account: AccountName;
      moment: 'idle' | 'lifetime' | 'cooldown';
      offsetMs: number;
    }
  /** Wall clock alone: positive = a suspend, negative = set back. */
  | { op: 'jumpWall'; ms: number }
  /** Wall clock alone, to `offsetMs` around a moment of one grant, by wall time. */
  | {
      op: 'jumpWallTo';
      session: SessionName;
      account: AccountName;
      moment: 'lastUse' | 'idle' | 'lifetime';
      offsetMs: number;
    }
  | { op: 'lock' }
  | { op: 'unlock' }
  | { op: 'revoke'; session: SessionName; account: AccountName | undefined }
  | { op: 'list' };

type Step =
  | SimpleStep
  | {
      op: 'authorize';
      session: SessionName;
      account: AccountName;
      answer: 'granted' | 'denied';
      /** What happens while the prompt is on screen (when one goes up). */
      whilePromptShows: SimpleStep[];
    }
  /** `times` × (advance `everyMs`, then tryUse): a script that keeps a grant busy. */
  | { op: 'keepAlive'; session: SessionName; account: AccountName; everyMs: number; times: number }
  /**
   * Keeps the grant busy (a use every `everyMs`) up to its hard limit, then advances to
   * `offsetMs` around the limit and tries it: the 12 h limit met without the idle timeout.
   */
  | {
      op: 'keepAliveToLimit';
      session: SessionName;
      account: AccountName;
      everyMs: number;
      offsetMs: number;
    };

const MINUTE = 60_000;
const HOUR = 3_600_000;

// Few keys, unevenly: so that requests often meet a grant that exists.
const sessionArb = fc.oneof(
  { weight: 4, arbitrary: fc.constant<SessionName>('s1') },
  { weight: 2, arbitrary: fc.constant<SessionName>('s2') },
  { weight: 1, arbitrary: fc.constant<SessionName>('s3') },
);
const accountArb = fc.oneof(
  { weight: 3, arbitrary: fc.constant<AccountName>('work') },
  { weight: 1, arbitrary: fc.constant<AccountName>('home') },
);
const offsetArb = fc.constantFrom(-1, 0, 1);

const advanceMsArb = fc.oneof(
  fc.constantFrom(
    0,
    1,
    999,
    COOLDOWN_MS - 1,
    COOLDOWN_MS,
    MINUTE,
    IDLE_MS - 1,
    IDLE_MS,
    IDLE_MS + 1,
    2 * IDLE_MS,
    HOUR,
    MAX_MS - IDLE_MS,
    MAX_MS - 1,
    MAX_MS,
    13 * HOUR,
  ),
  fc.integer({ min: 0, max: 15 * MINUTE }),
);

const wallJumpMsArb = fc.oneof(
  // Set back: an NTP step of a second, a minute, an hour, a day.
  fc.constantFrom(-1, -1_000, -MINUTE, -(IDLE_MS - 1), -HOUR, -24 * HOUR),
  // Forward: a suspend of a few minutes, just under or over the idle timeout, a night, 13 h.
  fc.constantFrom(1, 5 * MINUTE, IDLE_MS - 1, IDLE_MS, 8 * HOUR, 13 * HOUR),
  fc.integer({ min: -15 * MINUTE, max: 15 * MINUTE }),
);

const simpleStepArb: fc.Arbitrary<SimpleStep> = fc.oneof(
  {
    weight: 4,
    arbitrary: fc.record({
      op: fc.constant('tryUse' as const),
      session: sessionArb,
      account: accountArb,
    }),
  },
  { weight: 3, arbitrary: fc.record({ op: fc.constant('advance' as const), ms: advanceMsArb }) },
  {
    weight: 3,
    arbitrary: fc.record({
      op: fc.constant('advanceTo' as const),
      session: sessionArb,
      account: accountArb,
      moment: fc.constantFrom('idle' as const, 'lifetime' as const, 'cooldown' as const),
      offsetMs: offsetArb,
    }),
  },
  { weight: 2, arbitrary: fc.record({ op: fc.constant('jumpWall' as const), ms: wallJumpMsArb }) },
  {
    weight: 2,
    arbitrary: fc.record({
      op: fc.constant('jumpWallTo' as const),
      session: sessionArb,
      account: accountArb,
      moment: fc.constantFrom('lastUse' as const, 'idle' as const, 'lifetime' as const),
      offsetMs: offsetArb,
    }),
  },
  { weight: 1, arbitrary: fc.constant({ op: 'lock' as const }) },
  { weight: 1, arbitrary: fc.constant({ op: 'unlock' as const }) },
  {
    weight: 1,
    arbitrary: fc.record({
      op: fc.constant('revoke' as const),
      session: sessionArb,
      account: fc.option(accountArb, { nil: undefined }),
    }),
  },
  { weight: 2, arbitrary: fc.constant({ op: 'list' as const }) },
);

const stepArb: fc.Arbitrary<Step> = fc.oneof(
  { weight: 10, arbitrary: simpleStepArb },
  {
    weight: 5,
    arbitrary: fc.record({
      op: fc.constant('authorize' as const),
      session: sessionArb,
      account: accountArb,
      answer: fc.constantFrom('granted' as const, 'granted' as const, 'denied' as const),
      whilePromptShows: fc.oneof(
        { weight: 3, arbitrary: fc.constant<SimpleStep[]>([]) },
        { weight: 1, arbitrary: fc.array(simpleStepArb, { minLength: 1, maxLength: 3 }) },
      ),
    }),
  },
  {
    weight: 1,
    arbitrary: fc.record({
      op: fc.constant('keepAlive' as const),
      session: sessionArb,
      account: accountArb,
      everyMs: fc.constantFrom(MINUTE, 5 * MINUTE, IDLE_MS - 1, IDLE_MS),
      times: fc.integer({ min: 1, max: 80 }),
    }),
  },
  {
    weight: 1,
    arbitrary: fc.record({
      op: fc.constant('keepAliveToLimit' as const),
      session: sessionArb,
      account: accountArb,
      everyMs: fc.constantFrom(IDLE_MS - 1, 7 * MINUTE),
      offsetMs: offsetArb,
    }),
  },
);

const initialArb = fc.record({
  mono: fc.integer({ min: 0, max: 1_000_000_000 }),
  wall: fc.integer({ min: 1_000_000_000_000, max: 2_000_000_000_000 }),
  locked: fc.boolean(),
});

type Initial = { mono: number; wall: number; locked: boolean };

// ---------------------------------------------------------------------------------------------
// The core invariant, kept apart from the model: a ledger fed by the authorizer's own events and
// by the test's calls, judged with the clock alone.

interface LedgerEntry extends GrantTimes {
  /** Why it may not be used any more, once something ended it. */
  ended: string | undefined;
}

class UseLedger {
  readonly violations: string[] = [];
  readonly #entries = new Map<string, LedgerEntry>();
  readonly #clock: FakeClock;
  /** Keys whose prompt was on screen when lock() was called: approving it must grant nothing. */
  readonly #voidedByLock = new Set<string>();

  constructor(clock: FakeClock) {
    this.#clock = clock;
  }

  granted(key: string): void {
    if (this.#voidedByLock.has(key)) {
      this.violations.push(
        `${key} was granted by approving a prompt that was on screen when lock() was called`,
      );
    }
    const mono = this.#clock.monotonicNow();
    const wall = this.#clock.wallNow();
    this.#entries.set(key, {
      createdMono: mono,
      createdWall: wall,
      lastMono: mono,
      lastWall: wall,
      ended: undefined,
    });
  }

  /** The authorizer let `key` be used now (tryUse true, or authorize resolved on a live grant). */
  used(key: string, how: string): void {
    const mono = this.#clock.monotonicNow();
    const wall = this.#clock.wallNow();
    const entry = this.#entries.get(key);
    const broken = (why: string) => this.violations.push(`${key} usable (${how}) ${why}`);
    if (entry === undefined) {
      broken('without ever being granted');
      return;
    }
    if (entry.ended !== undefined) broken(`after ${entry.ended}`);
    const monoIdle = mono - entry.lastMono;
    const wallIdle = wall - entry.lastWall;
    if (monoIdle >= IDLE_MS)
      broken(`after its idle timeout: ${monoIdle} ms monotonic since last use`);
    if (wallIdle >= IDLE_MS) broken(`after its idle timeout: ${wallIdle} ms wall since last use`);
    if (mono - entry.createdMono >= MAX_MS) {
      broken(`after its hard limit: ${mono - entry.createdMono} ms monotonic since granted`);
    }
    if (wall - entry.createdWall >= MAX_MS) {
      broken(`after its hard limit: ${wall - entry.createdWall} ms wall since granted`);
    }
    if (wallIdle < 0 || wallIdle < monoIdle - wallStepBackSlackMs(monoIdle)) {
      broken(
        `after the wall clock went back since its last use (wall ${wallIdle} ms, monotonic ${monoIdle} ms since)`,
      );
    }
    entry.lastMono = mono;
    entry.lastWall = wall;
  }

  ended(key: string, why: string): void {
    const entry = this.#entries.get(key);
    if (entry !== undefined && entry.ended === undefined) entry.ended = why;
  }

  lockCalled(promptOnScreen: string | undefined): void {
    for (const key of this.#entries.keys()) this.ended(key, 'lock()');
    if (promptOnScreen !== undefined) this.#voidedByLock.add(promptOnScreen);
  }

  promptClosed(): void {
    this.#voidedByLock.clear();
  }
}

// ---------------------------------------------------------------------------------------------
// Running a sequence against the authorizer and the model

const DENIAL_CODES = {
  denied: 'ERR_AUTHORIZATION_DENIED',
  cancelled: 'ERR_AUTHORIZATION_CANCELLED',
  cooldown: 'ERR_AUTHORIZATION_COOLDOWN',
} as const;

function credential(session: SessionName) {
  return {
    id: session,
    scope: 'terminal' as const,
    process: { host: 'GNOME Terminal', program: 'cli', pid: 1000 + SESSIONS.indexOf(session) },
  };
}

function account(id: AccountName) {
  return { id, displayName: id === 'work' ? 'Work' : 'Home' };
}

/** One line per event, the same for the model and the authorizer; `expired` reasons apart. */
function predictedLine(event: PredictedEvent): string {
  switch (event.name) {
    case 'expired':
      return `expired ${event.key}`;
    case 'used':
      return `used ${event.key}`;
    case 'granted-app':
      return `granted ${event.key} unlocked=false`;
    case 'granted-unlocking':
      return `granted ${event.key} unlocked=true`;
    case 'revoked':
      return `revoked ${event.key} ${event.reason}`;
    case 'denied':
      return `denied ${event.key} ${event.reason} ${DENIAL_CODES[event.reason]}${
        event.retryAfterMs === undefined ? '' : ` retryAfterMs=${event.retryAfterMs}`
      }`;
    case 'prompt':
      return `prompt ${event.key} unlocks=${event.unlocks}`;
    case 'locked':
      return 'locked';
    case 'unlocked':
      return `unlocked by ${event.by}`;
  }
}

function actualLine([name, payload]: Recorded): string {
  if (name === 'locked') return 'locked';
  if (name === 'unlocked') return `unlocked by ${payload.by}`;
  const key = keyOf(payload.sessionId, payload.account.id);
  switch (name) {
    case 'expired':
      return `expired ${key}`;
    case 'used':
      return `used ${key}`;
    case 'granted':
      return `granted ${key} unlocked=${payload.unlocked}`;
    case 'revoked':
      return `revoked ${key} ${payload.reason}`;
    case 'denied':
      return `denied ${key} ${payload.reason} ${payload.code}${
        payload.retryAfterMs === undefined ? '' : ` retryAfterMs=${payload.retryAfterMs}`
      }`;
    case 'prompt':
      return `prompt ${key} unlocks=${payload.unlocks}`;
  }
}

function outcomeOf(result: PromiseSettledResult<void>): PredictedOutcome {
  if (result.status === 'fulfilled') return { ok: true };
  const error = result.reason as unknown;
  if (!(error instanceof BridgekeeperError)) {
    return { ok: false, code: `not a BridgekeeperError: ${String(error)}` };
  }
  const retryAfterMs = (error as { retryAfterMs?: number }).retryAfterMs;
  return retryAfterMs === undefined
    ? { ok: false, code: error.code }
    : { ok: false, code: error.code, retryAfterMs };
}

function infoOf(grant: GrantInfo) {
  return {
    key: keyOf(grant.sessionId, grant.account.id),
    createdAt: grant.createdAt,
    lastUsedAt: grant.lastUsedAt,
    idleRemainingMs: grant.idleRemainingMs,
    lifetimeRemainingMs: grant.lifetimeRemainingMs,
    expiresInMs: grant.expiresInMs,
  };
}

class SequenceRun {
  readonly clock: FakeClock;
  readonly backend = new ScriptedPromptBackend({ manual: true });
  readonly authorizer: Authorizer;
  readonly model: TimeModel;
  readonly ledger: UseLedger;
  readonly events: Recorded[] = [];
  /** What ran so far, one line per operation with the clock after it: the concrete counterexample. */
  readonly trace: string[] = [];
  unlockHookCalls = 0;
  #promptKey: string | undefined;

  constructor(initial: Initial) {
    this.clock = new FakeClock({ monotonic: initial.mono, wall: initial.wall });
    this.model = new TimeModel(initial);
    this.ledger = new UseLedger(this.clock);
    this.authorizer = new Authorizer({
      prompt: this.backend,
      clock: this.clock,
      locked: initial.locked,
      unlock: () => {
        this.unlockHookCalls++;
      },
    });
    for (const name of EVENT_NAMES) {
      this.authorizer.on(name, (payload) => {
        const event = [name, payload] as Recorded;
        this.events.push(event);
        // Listener errors are swallowed by the authorizer: record, never throw here.
        if (event[0] === 'granted') {
          this.ledger.granted(keyOf(event[1].sessionId, event[1].account.id));
        } else if (event[0] === 'expired') {
          this.ledger.ended(
            keyOf(event[1].sessionId, event[1].account.id),
            'it was reported expired',
          );
        } else if (event[0] === 'revoked') {
          this.ledger.ended(keyOf(event[1].sessionId, event[1].account.id), 'it was revoked');
        }
      });
    }
    this.trace.push(
      `start mono=${initial.mono} wall=${initial.wall} locked=${initial.locked} (idle ${IDLE_MS} ms, max ${MAX_MS} ms, cool-down ${COOLDOWN_MS} ms)`,
    );
  }

  close(): void {
    for (const prompt of this.backend.pending) prompt.respond('denied');
    this.authorizer.close();
  }

  #note(line: string): void {
    this.trace.push(`${line}  → mono=${this.clock.monotonicNow()} wall=${this.clock.wallNow()}`);
  }

  /** The concrete counterexample: what ran, with the clocks after each operation. */
  traceText(): string {
    return `concrete trace (last 60 operations):\n  ${this.trace.slice(-60).join('\n  ')}`;
  }

  /**
   * The core invariant, on its own: the ledger saw no use of a grant after lock(), its idle
   * timeout, its hard limit, a wall clock gone back, a revoke or an expiry.
   */
  #assertInvariant(where: string): void {
    expect(this.ledger.violations, `CORE INVARIANT broken at ${where}`).toEqual([]);
  }

  /** Compares the events emitted since `from` with the model's prediction, and the invariant. */
  #check(from: number, predicted: PredictedEvent[], where: string): void {
    this.#assertInvariant(where);
    const actual = this.events.slice(from);
    expect(actual.map(actualLine).sort(), `events of ${where}`).toEqual(
      predicted.map(predictedLine).sort(),
    );
    for (const event of actual) {
      if (event[0] !== 'expired') continue;
      const key = keyOf(event[1].sessionId, event[1].account.id);
      const expected = predicted.find((p) => p.name === 'expired' && p.key === key);
      const reasons = expected?.name === 'expired' ? expected.reasons : [];
      expect(reasons, `expiry reason of ${key} at ${where}`).toContain(event[1].reason);
    }
    const names = actual.map(([name]) => name);
    const locked = names.indexOf('locked');
    if (locked !== -1) {
      expect(names.lastIndexOf('revoked'), `revoked before locked at ${where}`).toBeLessThan(
        locked,
      );
    }
    const unlockedByPrompt = actual.findIndex((e) => e[0] === 'unlocked' && e[1].by === 'prompt');
    if (unlockedByPrompt !== -1) {
      expect(names.indexOf('granted'), `unlocked before granted at ${where}`).toBeGreaterThan(
        unlockedByPrompt,
      );
    }
    expect(this.clock.monotonicNow(), `monotonic clock at ${where}`).toBe(this.model.mono);
    expect(this.clock.wallNow(), `wall clock at ${where}`).toBe(this.model.wall);
    expect(this.authorizer.locked, `locked at ${where}`).toBe(this.model.locked);
  }

  async run(steps: readonly Step[]): Promise<void> {
    for (const [index, step] of steps.entries()) {
      const label = `step ${index}`;
      try {
        if (step.op === 'authorize') await this.#authorize(step, label);
        else if (step.op === 'keepAlive') this.#keepAlive(step, label);
        else if (step.op === 'keepAliveToLimit') this.#keepAliveToLimit(step, label);
        else this.#simple(step, label);
      } catch (error) {
        // Built only on failure: the step, then the concrete trace.
        if (error instanceof Error) {
          error.message += `\n${label} was ${JSON.stringify(step)}\n${this.traceText()}\n`;
        }
        throw error;
      }
    }
  }

  #simple(step: SimpleStep, label: string): void {
    const from = this.events.length;
    switch (step.op) {
      case 'tryUse': {
        const key = keyOf(step.session, step.account);
        const result = this.authorizer.tryUse(step.session, step.account);
        if (result) this.ledger.used(key, 'tryUse');
        const predicted = this.model.tryUse(key);
        this.#note(`tryUse ${key} = ${result}`);
        this.#assertInvariant(label);
        expect(result, `tryUse at ${label}`).toBe(predicted.result);
        this.#check(from, predicted.events, label);
        return;
      }
      case 'advance':
        this.#advance(step.ms, label);
        return;
      case 'advanceTo': {
        const key = keyOf(step.session, step.account);
        const grant = this.model.grant(key);
        let moment: number | undefined;
        if (step.moment === 'cooldown') moment = this.model.cooldownUntil(key);
        else if (grant !== undefined) {
          moment = step.moment === 'idle' ? grant.lastMono + IDLE_MS : grant.createdMono + MAX_MS;
        }
        const ms = moment === undefined ? 0 : Math.max(0, moment + step.offsetMs - this.model.mono);
        this.#advance(ms, label);
        return;
      }
      case 'jumpWall':
        this.#jumpWall(step.ms, label);
        return;
      case 'jumpWallTo': {
        const grant = this.model.grant(keyOf(step.session, step.account));
        let delta = 0;
        if (grant !== undefined) {
          const moment =
            step.moment === 'lastUse'
              ? grant.lastWall
              : step.moment === 'idle'
                ? grant.lastWall + IDLE_MS
                : grant.createdWall + MAX_MS;
          delta = moment + step.offsetMs - this.model.wall;
        }
        this.#jumpWall(delta, label);
        return;
      }
      case 'lock': {
        this.ledger.lockCalled(this.#promptKey);
        this.authorizer.lock();
        this.#note('lock()');
        this.#check(from, this.model.lock(), label);
        return;
      }
      case 'unlock': {
        this.authorizer.unlock();
        this.#note('unlock()');
        this.#check(from, this.model.unlock(), label);
        return;
      }
      case 'revoke': {
        const count = this.authorizer.revoke(
          step.account === undefined
            ? { sessionId: step.session }
            : { sessionId: step.session, accountId: step.account },
        );
        for (const account of ACCOUNTS) {
          if (step.account === undefined || step.account === account) {
            this.ledger.ended(keyOf(step.session, account), 'revoke()');
          }
        }
        const predicted = this.model.revoke(step.session, step.account);
        this.#note(`revoke ${step.session}/${step.account ?? '*'} = ${count}`);
        expect(count, `revoke count at ${label}`).toBe(predicted.count);
        this.#check(from, predicted.events, label);
        return;
      }
      case 'list': {
        const listed = this.authorizer.listGrants().map(infoOf);
        listed.sort((a, b) => a.key.localeCompare(b.key));
        const predicted = this.model.list();
        this.#note(`listGrants = ${JSON.stringify(listed)}`);
        expect(listed, `listGrants at ${label}`).toEqual(predicted.grants);
        this.#check(from, predicted.events, label);
        return;
      }
    }
  }

  #advance(ms: number, label: string): void {
    const from = this.events.length;
    this.clock.advance(ms);
    this.#note(`advance(${ms})`);
    this.#check(from, this.model.advance(ms), label);
  }

  #jumpWall(ms: number, label: string): void {
    const from = this.events.length;
    this.clock.jumpWall(ms);
    this.#note(`jumpWall(${ms})`);
    this.#check(from, this.model.jumpWall(ms), label);
  }

  #keepAlive(step: Extract<Step, { op: 'keepAlive' }>, label: string): void {
    for (let round = 0; round < step.times; round++) {
      const where = `${label} round ${round}`;
      this.#advance(step.everyMs, where);
      this.#simple({ op: 'tryUse', session: step.session, account: step.account }, where);
    }
  }

  #keepAliveToLimit(step: Extract<Step, { op: 'keepAliveToLimit' }>, label: string): void {
    const key = keyOf(step.session, step.account);
    const tryUse = { op: 'tryUse' as const, session: step.session, account: step.account };
    for (let round = 0; ; round++) {
      const grant = this.model.grant(key);
      if (grant === undefined || this.model.locked) return;
      const limit = grant.createdMono + MAX_MS;
      if (this.model.mono + step.everyMs >= limit) break;
      this.#advance(step.everyMs, `${label} round ${round}`);
      this.#simple(tryUse, `${label} round ${round}`);
    }
    const { session, account, offsetMs } = step;
    this.#simple({ op: 'advanceTo', session, account, moment: 'lifetime', offsetMs }, label);
    this.#simple(tryUse, `${label} at the limit`);
  }

  async #authorize(step: Extract<Step, { op: 'authorize' }>, label: string): Promise<void> {
    const key = keyOf(step.session, step.account);
    const from = this.events.length;
    const hookCallsBefore = this.unlockHookCalls;
    const settled = this.authorizer
      .authorize({ session: credential(step.session), account: account(step.account) })
      .then(
        (): PromiseSettledResult<void> => ({ status: 'fulfilled', value: undefined }),
        (reason: unknown): PromiseSettledResult<void> => ({ status: 'rejected', reason }),
      );
    const begun = this.model.beginAuthorize(key);
    const shown = this.backend.pending;
    this.#note(`authorize ${key}: ${shown.length} prompt(s) on screen`);
    // Without a prompt it settles on its own: judge the use it allowed before anything else.
    const outcome = shown.length === 0 ? outcomeOf(await settled) : undefined;
    if (outcome !== undefined) {
      if (outcome.ok) this.ledger.used(key, 'authorize without a prompt');
      this.#note(`authorize ${key} settled ${JSON.stringify(outcome)}`);
    }
    this.#assertInvariant(label);
    expect(shown.length, `prompts on screen after authorize at ${label}`).toBe(
      begun.start.kind === 'prompt' ? 1 : 0,
    );
    this.#check(from, begun.events, `${label} (before any answer)`);

    if (begun.start.kind !== 'prompt') {
      expect(outcome, `authorize outcome at ${label}`).toEqual(
        begun.start.kind === 'used'
          ? { ok: true }
          : {
              ok: false,
              code: 'ERR_AUTHORIZATION_COOLDOWN',
              retryAfterMs: begun.start.retryAfterMs,
            },
      );
      return;
    }

    this.#promptKey = key;
    try {
      for (const [index, during] of step.whilePromptShows.entries()) {
        this.#simple(during, `${label} while the prompt shows, #${index}`);
      }
      const fromAnswer = this.events.length;
      shown[0]!.respond(step.answer);
      const outcome = outcomeOf(await settled);
      const answered = this.model.answer(step.answer);
      this.#note(
        `person answered ${step.answer}; authorize ${key} settled ${JSON.stringify(outcome)}`,
      );
      expect(outcome, `authorize outcome at ${label}`).toEqual(answered.outcome);
      expect(this.unlockHookCalls - hookCallsBefore, `unlock hook calls at ${label}`).toBe(
        answered.unlockHookRuns ? 1 : 0,
      );
      this.#check(fromAnswer, answered.events, `${label} (after the answer)`);
    } finally {
      this.#promptKey = undefined;
      this.ledger.promptClosed();
    }
  }
}

async function runSequence(initial: Initial, steps: readonly Step[]): Promise<void> {
  const run = new SequenceRun(initial);
  try {
    await run.run(steps);
  } finally {
    run.close();
  }
}

// ---------------------------------------------------------------------------------------------

describe('time: grants against a reference model on a fake clock', () => {
  it(`${SEQUENCES} random sequences (cases = sequences; seed ${SEED}): authorize/approve/deny, tryUse, ` +
    'clock steps across 10 min and 12 h, wall jumps both ways, lock, unlock, revoke, list', async ({
    task,
  }) => {
    let counted = 0;
    await fc.assert(
      fc.asyncProperty(
        initialArb,
        fc.array(stepArb, { minLength: 1, maxLength: 40 }),
        async (initial, steps) => {
          if (counted < SEQUENCES) {
            counted++;
            countCases(task, 1);
          }
          await runSequence(initial, steps);
        },
      ),
      { seed: SEED, numRuns: SEQUENCES },
    );
  }, 120_000);
});
