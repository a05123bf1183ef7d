/**
 * Time, injected. Grants are measured with both a monotonic and a wall clock: the monotonic
 * clock cannot be set back, and the wall clock keeps counting while the machine sleeps (Linux's
 * CLOCK_MONOTONIC does not), so a laptop that slept all night wakes up with its grants expired.
 *
 * @module
 */

/** A source of time. All values are milliseconds. */
export interface Clock {
  /** Milliseconds from an arbitrary origin; never goes backwards. */
  monotonicNow(): number;
  /** Milliseconds since the Unix epoch; may jump in either direction. */
  wallNow(): number;
  /**
   * Calls `callback` after `ms` milliseconds (of this clock). The returned function cancels it.
   * Timers from the system clock do not keep the process alive.
   */
  setTimer(callback: () => void, ms: number): () => void;
}

/** The real clock: `performance.now()` and `Date.now()`. */
export const systemClock: Clock = {
  monotonicNow: () => performance.now(),
  wallNow: () => Date.now(),
  setTimer(callback, ms) {
    const timer = setTimeout(callback, ms);
    timer.unref();
    return () => clearTimeout(timer);
  },
};
