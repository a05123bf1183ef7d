/**
 * A clock that tests move by hand, so that idle timeouts, hard limits and clock jumps can be
 * tested exactly (to the millisecond) and instantly.
 *
 * @module
 */

import { createError } from '../errors.js';
import type { Clock } from '../session/clock.js';

/** Options for {@link FakeClock}. */
export interface FakeClockOptions {
  /** Initial monotonic time in ms. Default 0. */
  monotonic?: number;
  /** Initial wall time in ms since the epoch. Default 1_700_000_000_000 (2023-11-14), fixed so tests are repeatable. */
  wall?: number;
}

interface FakeTimer {
  readonly due: number;
  readonly seq: number;
  readonly callback: () => void;
}

const DEFAULT_WALL = 1_700_000_000_000;

function assertFiniteNumber(value: unknown, what: string): asserts value is number {
  if (typeof value !== 'number' || !Number.isFinite(value)) {
    throw createError('ERR_INVALID_ARGUMENT', `${what} must be a finite number of milliseconds.`);
  }
}

/**
 * A {@link Clock} whose time moves only when the test says so.
 *
 * {@link FakeClock.advance} moves both clocks together, as time does while the machine is awake,
 * and fires the timers that fall due on the way — in order of due time, synchronously, each one
 * seeing the clock at its own due time. {@link FakeClock.setWall} and {@link FakeClock.jumpWall}
 * move the wall clock alone: backwards as when someone sets the clock back, forwards as after a
 * suspend (Linux's monotonic clock does not count sleep). They fire no timers, because the
 * monotonic time that timers follow did not move.
 *
 * @throws `ERR_INVALID_ARGUMENT` from the constructor and the moving methods for a time that is
 * not a finite number, or a negative `advance`.
 *
 * @example
 * ```ts
 * import { FakeClock } from 'bridgekeeper/testing';
 *
 * const clock = new FakeClock({ wall: Date.UTC(2025, 0, 1) });
 * let fired = 0;
 * clock.setTimer(() => fired++, 1_000);
 * clock.advance(999); // fired === 0
 * clock.advance(1);   // fired === 1, clock.monotonicNow() === 1_000
 * clock.jumpWall(8 * 3_600_000); // the laptop slept for 8 hours: wall moves, monotonic does not
 * ```
 */
export class FakeClock implements Clock {
  #monotonic: number;
  #wall: number;
  #seq = 0;
  // Kept sorted by (due, seq); tests hold few timers, so insertion into an array is enough.
  #timers: FakeTimer[] = [];

  constructor(options: FakeClockOptions = {}) {
    const monotonic = options.monotonic ?? 0;
    const wall = options.wall ?? DEFAULT_WALL;
    assertFiniteNumber(monotonic, 'FakeClock monotonic');
    assertFiniteNumber(wall, 'FakeClock wall');
    this.#monotonic = monotonic;
    this.#wall = wall;
  }

  /** Current monotonic time in ms. */
  monotonicNow(): number {
    return this.#monotonic;
  }

  /** Current wall time in ms since the epoch. */
  wallNow(): number {
    return this.#wall;
  }

  /**
   * Schedules `callback` `ms` milliseconds of monotonic time from now (a negative or NaN delay
   * counts as 0: it fires on the next {@link FakeClock.advance}, even `advance(0)`).
   * Returns a function that cancels it.
   */
  setTimer(callback: () => void, ms: number): () => void {
    // NaN counts as 0, as setTimeout does; Infinity never fires.
    const delay = Number.isNaN(ms) ? 0 : Math.max(ms, 0);
    const timer: FakeTimer = { due: this.#monotonic + delay, seq: this.#seq++, callback };
    let index = this.#timers.length;
    while (index > 0) {
      const before = this.#timers[index - 1]!;
      if (before.due <= timer.due) break;
      index--;
    }
    this.#timers.splice(index, 0, timer);
    return () => {
      const at = this.#timers.indexOf(timer);
      if (at !== -1) this.#timers.splice(at, 1);
    };
  }

  /** How many timers are scheduled and not yet fired or cancelled. */
  get pendingTimers(): number {
    return this.#timers.length;
  }

  /**
   * Moves both clocks forward by `ms`, firing every timer that falls due on the way (including
   * timers that those callbacks schedule inside the window). An exception from a callback
   * propagates; the clock then stays at that timer's due time.
   *
   * @throws `ERR_INVALID_ARGUMENT` when `ms` is negative or not finite.
   */
  advance(ms: number): void {
    assertFiniteNumber(ms, 'FakeClock.advance(ms)');
    if (ms < 0) {
      throw createError(
        'ERR_INVALID_ARGUMENT',
        'FakeClock.advance(ms) cannot go backwards: a monotonic clock never does. Use setWall() or jumpWall() to move the wall clock back.',
      );
    }
    const target = this.#monotonic + ms;
    for (;;) {
      const next = this.#timers[0];
      if (next === undefined || next.due > target) break;
      this.#timers.shift();
      this.#moveTo(Math.max(next.due, this.#monotonic));
      next.callback();
    }
    this.#moveTo(target);
  }

  /**
   * Sets the wall clock alone (someone changed the system time). Fires no timers.
   *
   * @throws `ERR_INVALID_ARGUMENT` when `ms` is not finite.
   */
  setWall(ms: number): void {
    assertFiniteNumber(ms, 'FakeClock.setWall(ms)');
    this.#wall = ms;
  }

  /**
   * Moves the wall clock alone by `deltaMs`: negative for a clock set back, positive for a
   * suspend (the monotonic clock does not count sleep). Fires no timers.
   *
   * @throws `ERR_INVALID_ARGUMENT` when `deltaMs` is not finite.
   */
  jumpWall(deltaMs: number): void {
    assertFiniteNumber(deltaMs, 'FakeClock.jumpWall(deltaMs)');
    this.#wall += deltaMs;
  }

  #moveTo(monotonic: number): void {
    this.#wall += monotonic - this.#monotonic;
    this.#monotonic = monotonic;
  }
}
