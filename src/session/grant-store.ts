/**
 * The live grants of an authorizer: who may use which account, since when, and until
 * when. Kept apart from the authorizer so the bookkeeping that must stay cheap at 100,000 grants
 * (lookups, refreshes, one timer for every expiry) can be read on its own.
 *
 * @module
 */

import type { AccountRef, ProcessDescription } from '../prompt/prompt-backend.js';
import type { Clock } from './clock.js';
import type { SessionCredential, SessionScope } from './credentials.js';

/**
 * The longest delay `setTimeout` honours (2^31 − 1 ms, about 24.8 days). Node turns a longer one
 * into 1 ms, which would make the expiry timer fire, find nothing due and re-arm in a tight loop
 * for durations over that; so no timer is set for longer, and the sweep re-arms when it fires early.
 *
 * @internal
 */
export const MAX_TIMER_DELAY_MS = 2_147_483_647;

/**
 * How far the wall clock may fall behind the monotonic clock, `monoElapsedMs` after a grant's
 * last use, before that counts as a step back: 1 s (`Date.now()` counts whole milliseconds) plus
 * a tenth of the time elapsed, because time daemons slew the wall clock instead of stepping it —
 * ntpd and systemd-timesyncd by up to 500 ppm, chrony by up to 83,333 ppm (8.3 %) by default. A
 * real step back (a person, an NTP step) is larger; a smaller one shortens nothing by more than
 * a tenth.
 *
 * @internal
 */
export function wallClockSlackMs(monoElapsedMs: number): number {
  return 1_000 + monoElapsedMs / 10;
}

/**
 * Why a grant expired: `idle` — nothing used it for the idle timeout, by either clock;
 * `lifetime` — the hard limit since it was granted passed, by either clock; `clock` — the wall
 * clock went backwards since the last use: it reads earlier than then, or it advanced more than
 * 1 s plus a tenth of the elapsed time less than the monotonic clock (or the monotonic clock went back,
 * which only a broken clock does), so the time since that use cannot be trusted.
 */
export type ExpiryReason = 'idle' | 'lifetime' | 'clock';

/** A live grant as `Authorizer.listGrants()` reports it. No secrets. */
export interface GrantInfo {
  /** The session credential's id. */
  readonly sessionId: string;
  /** Whether the session is a whole terminal or a single process. */
  readonly scope: SessionScope;
  /** The account the session may use. */
  readonly account: AccountRef;
  /** The process that was authorized, as the prompt showed it. */
  readonly process: ProcessDescription;
  /** Wall time (ms since the epoch) when the person granted it. */
  readonly createdAt: number;
  /** Wall time (ms since the epoch) of the last authorized use. */
  readonly lastUsedAt: number;
  /** Milliseconds until it expires if nothing uses it (the smaller of the monotonic and wall counts). */
  readonly idleRemainingMs: number;
  /** Milliseconds until the hard limit, however much it is used. */
  readonly lifetimeRemainingMs: number;
  /** The smaller of the two: when it expires unless used. */
  readonly expiresInMs: number;
}

/**
 * One grant. A class (not an object literal) so every grant shares one hidden class and its
 * time fields stay unboxed doubles updated in place: a refresh allocates nothing.
 *
 * @internal
 */
export class Grant {
  readonly sessionId: string;
  readonly scope: SessionScope;
  readonly account: AccountRef;
  /** The process description, packed by {@link packProcess}; read it through `process`. */
  readonly #host: string;
  readonly #pid: number | undefined;
  readonly #packed: string | ProcessDescription;
  readonly createdMono: number;
  readonly createdWall: number;
  lastMono: number;
  lastWall: number;
  /** Monotonic time at or before which the grant cannot expire; its place in the timer heap. */
  heapKey: number;
  /** Index in the heap array, -1 once removed. */
  heapIndex: number;
  /** Next grant of the same session (other accounts): sessions hold one or two, so a list beats a Map per session. */
  next: Grant | undefined;

  constructor(session: SessionCredential, account: AccountRef, mono: number, wall: number) {
    this.sessionId = session.id;
    this.scope = session.scope;
    this.account = account;
    const packed = packProcess(session.process);
    this.#host = session.process.host;
    this.#pid = session.process.pid;
    this.#packed = packed;
    this.createdMono = mono;
    this.createdWall = wall;
    this.lastMono = mono;
    this.lastWall = wall;
    this.heapKey = mono;
    this.heapIndex = -1;
    this.next = undefined;
  }

  /** The process that was authorized, as the prompt showed it (a new object on each read). */
  get process(): ProcessDescription {
    return typeof this.#packed === 'string'
      ? unpackProcess(this.#host, this.#pid, this.#packed)
      : this.#packed;
  }
}

/*
 * A grant keeps its process description packed: the host string (shared between sessions), the
 * pid, and the rest as one NUL-joined string. A grant can outlive its connection for hours, and
 * the object, its command-line array and their strings cost ~400 bytes a grant against ~100
 * packed (bench/authorizer). A description that does not pack losslessly (a field holding a NUL,
 * an empty command line, fields this module does not know) is kept as it is.
 */
const PACKABLE_KEYS = new Set(['host', 'program', 'pid', 'executable', 'commandLine']);
const HAS_PROGRAM = 1;
const HAS_EXECUTABLE = 2;
const HAS_COMMAND_LINE = 4;

function packProcess(description: ProcessDescription): string | ProcessDescription {
  const { host, program, pid, executable, commandLine } = description;
  const fields = [program, executable, ...(commandLine ?? [])];
  if (
    typeof host !== 'string' ||
    (pid !== undefined && typeof pid !== 'number') ||
    (commandLine !== undefined && (!Array.isArray(commandLine) || commandLine.length === 0)) ||
    Object.keys(description).some((key) => !PACKABLE_KEYS.has(key)) ||
    fields.some(
      (field) => field !== undefined && (typeof field !== 'string' || field.includes('\0')),
    )
  ) {
    return description;
  }
  const flags =
    (program === undefined ? 0 : HAS_PROGRAM) |
    (executable === undefined ? 0 : HAS_EXECUTABLE) |
    (commandLine === undefined ? 0 : HAS_COMMAND_LINE);
  return [String(flags), program ?? '', executable ?? '', ...(commandLine ?? [])].join('\0');
}

function unpackProcess(host: string, pid: number | undefined, packed: string): ProcessDescription {
  const [flagText, program, executable, ...commandLine] = packed.split('\0');
  const flags = Number(flagText);
  return Object.freeze({
    host,
    ...(flags & HAS_PROGRAM ? { program } : {}),
    ...(pid === undefined ? {} : { pid }),
    ...(flags & HAS_EXECUTABLE ? { executable } : {}),
    ...(flags & HAS_COMMAND_LINE ? { commandLine: Object.freeze(commandLine) } : {}),
  }) as ProcessDescription;
}

/** @internal */
export interface GrantStoreOptions {
  readonly clock: Clock;
  readonly idleTimeoutMs: number;
  readonly maxLifetimeMs: number;
  /** Called once for each grant the store expires (lazily or from its timer), after removing it. */
  readonly onExpired: (grant: Grant, reason: ExpiryReason) => void;
}

/**
 * Grants keyed by (session id, account id), with expiry scheduled by one timer.
 *
 * Expiry uses a binary min-heap of grants ordered by `heapKey`, a monotonic time before which the
 * grant certainly cannot expire. A use only moves the real deadline later, so it does not touch
 * the heap (that keeps `use` at a map lookup and two clock reads); when the timer reaches a grant
 * that was used meanwhile, its key is recomputed and it sinks back into the heap. Each grant is
 * thus revisited at most once per idle period, at O(log n).
 *
 * The timer follows the monotonic clock, which on Linux does not count suspend, so the wall-clock
 * checks (a night of sleep, a clock set back) happen on the next use or listing, not by timer.
 * Its delay never exceeds {@link MAX_TIMER_DELAY_MS}; a later deadline is reached in hops.
 *
 * @internal
 */
export class GrantStore {
  readonly #clock: Clock;
  readonly #idle: number;
  readonly #max: number;
  readonly #onExpired: (grant: Grant, reason: ExpiryReason) => void;
  readonly #sessions = new Map<string, Grant>();
  readonly #heap: Grant[] = [];
  #timerAt = Number.POSITIVE_INFINITY;
  #cancelTimer: (() => void) | undefined;
  #sweeping = false;

  constructor(options: GrantStoreOptions) {
    this.#clock = options.clock;
    this.#idle = options.idleTimeoutMs;
    this.#max = options.maxLifetimeMs;
    this.#onExpired = options.onExpired;
  }

  /** Number of grants held, including any that expired but were not yet noticed. */
  get size(): number {
    return this.#heap.length;
  }

  /**
   * Returns the valid grant for (session, account) after refreshing its last use, or undefined.
   * A grant found expired is removed and reported through `onExpired`.
   */
  use(sessionId: string, accountId: string): Grant | undefined {
    let grant = this.#sessions.get(sessionId);
    while (grant !== undefined && grant.account.id !== accountId) grant = grant.next;
    if (grant === undefined) return undefined;
    const mono = this.#clock.monotonicNow();
    const wall = this.#clock.wallNow();
    const reason = this.#expiryReason(grant, mono, wall);
    if (reason !== undefined) {
      this.#expire(grant, reason);
      return undefined;
    }
    grant.lastMono = mono;
    grant.lastWall = wall;
    return grant;
  }

  /**
   * Records a new grant, replacing any earlier one for the same key (an expired one is reported
   * as expired first; a live one is dropped silently, because the person has just approved anew).
   */
  add(session: SessionCredential, account: AccountRef): Grant {
    const mono = this.#clock.monotonicNow();
    const wall = this.#clock.wallNow();
    let existing = this.#sessions.get(session.id);
    while (existing !== undefined && existing.account.id !== account.id) existing = existing.next;
    if (existing !== undefined) {
      const reason = this.#expiryReason(existing, mono, wall);
      if (reason !== undefined) this.#expire(existing, reason);
      else this.remove(existing);
    }
    const grant = new Grant(session, account, mono, wall);
    grant.heapKey = this.#deadline(grant, mono, wall);
    grant.next = this.#sessions.get(session.id);
    this.#sessions.set(session.id, grant);
    this.#heapPush(grant);
    this.#arm();
    return grant;
  }

  /** Removes one grant (no event). Harmless if it is already gone. */
  remove(grant: Grant): void {
    if (grant.heapIndex === -1) return;
    this.#unlink(grant);
    this.#heapRemove(grant.heapIndex);
    grant.heapIndex = -1;
    if (this.#heap.length === 0) this.#disarm();
  }

  /**
   * Grants of one session (one account of it, if given), checked lazily: the expired ones are
   * removed and reported through `onExpired`; the live ones are returned (not removed).
   */
  liveGrantsOf(sessionId: string, accountId?: string): Grant[] {
    const found: Grant[] = [];
    for (let grant = this.#sessions.get(sessionId); grant !== undefined; grant = grant.next) {
      if (accountId === undefined || grant.account.id === accountId) found.push(grant);
    }
    return this.#keepLive(found);
  }

  /** Every live grant, expiring the expired ones on the way. */
  liveGrants(): Grant[] {
    return this.#keepLive([...this.#heap]);
  }

  /** What {@link GrantInfo} reports for a live grant. */
  info(grant: Grant): GrantInfo {
    const mono = this.#clock.monotonicNow();
    const wall = this.#clock.wallNow();
    const idleRemainingMs = Math.max(
      0,
      Math.min(grant.lastMono + this.#idle - mono, grant.lastWall + this.#idle - wall),
    );
    const lifetimeRemainingMs = Math.max(
      0,
      Math.min(grant.createdMono + this.#max - mono, grant.createdWall + this.#max - wall),
    );
    return {
      sessionId: grant.sessionId,
      scope: grant.scope,
      account: grant.account,
      process: grant.process,
      createdAt: grant.createdWall,
      lastUsedAt: grant.lastWall,
      idleRemainingMs,
      lifetimeRemainingMs,
      expiresInMs: Math.min(idleRemainingMs, lifetimeRemainingMs),
    };
  }

  /** Removes every grant (no events) and returns them, in no particular order. */
  clear(): Grant[] {
    const all = this.#heap.splice(0, this.#heap.length);
    for (const grant of all) {
      grant.heapIndex = -1;
      grant.next = undefined;
    }
    this.#sessions.clear();
    this.#disarm();
    return all;
  }

  #keepLive(candidates: Grant[]): Grant[] {
    const mono = this.#clock.monotonicNow();
    const wall = this.#clock.wallNow();
    const live: Grant[] = [];
    const expired: Array<[Grant, ExpiryReason]> = [];
    for (const grant of candidates) {
      const reason = this.#expiryReason(grant, mono, wall);
      if (reason === undefined) live.push(grant);
      else expired.push([grant, reason]);
    }
    // Expire after the scan: a listener may change the store.
    for (const [grant, reason] of expired) this.#expire(grant, reason);
    return live.filter((grant) => grant.heapIndex !== -1);
  }

  #expiryReason(grant: Grant, mono: number, wall: number): ExpiryReason | undefined {
    // Time since the last use cannot be trusted when a clock went backwards: fail closed, as sudo
    // does with time stamps from the future. Backwards also means the wall clock advanced less
    // than the monotonic one since the last use (only a step back does that; a suspend makes it
    // advance more): 8 min asleep, 5 min awake and a 9 min step back leave the wall clock 4 min
    // past the last use after 13 real minutes.
    const monoElapsed = mono - grant.lastMono;
    if (
      wall < grant.lastWall ||
      monoElapsed < 0 ||
      wall - grant.lastWall < monoElapsed - wallClockSlackMs(monoElapsed)
    ) {
      return 'clock';
    }
    if (mono - grant.createdMono >= this.#max || wall - grant.createdWall >= this.#max) {
      return 'lifetime';
    }
    if (mono - grant.lastMono >= this.#idle || wall - grant.lastWall >= this.#idle) return 'idle';
    return undefined;
  }

  /** Monotonic time at which a grant valid now would expire if left unused. */
  #deadline(grant: Grant, mono: number, wall: number): number {
    const deadline = Math.min(
      grant.lastMono + this.#idle,
      grant.createdMono + this.#max,
      mono + (grant.lastWall + this.#idle - wall),
      mono + (grant.createdWall + this.#max - wall),
    );
    // A valid grant has time left, but rounding could hide it and spin the sweep.
    return deadline > mono ? deadline : mono + 1;
  }

  #expire(grant: Grant, reason: ExpiryReason): void {
    this.remove(grant);
    this.#onExpired(grant, reason);
  }

  #unlink(grant: Grant): void {
    const head = this.#sessions.get(grant.sessionId);
    if (head === grant) {
      if (grant.next === undefined) this.#sessions.delete(grant.sessionId);
      else this.#sessions.set(grant.sessionId, grant.next);
    } else {
      let previous = head;
      while (previous !== undefined && previous.next !== grant) previous = previous.next;
      if (previous !== undefined) previous.next = grant.next;
    }
    grant.next = undefined;
  }

  #onTimer(): void {
    this.#cancelTimer = undefined;
    this.#timerAt = Number.POSITIVE_INFINITY;
    this.#sweeping = true;
    try {
      const mono = this.#clock.monotonicNow();
      const wall = this.#clock.wallNow();
      for (;;) {
        const top = this.#heap[0];
        if (top === undefined || top.heapKey > mono) break;
        const reason = this.#expiryReason(top, mono, wall);
        if (reason !== undefined) {
          this.#expire(top, reason);
        } else {
          top.heapKey = this.#deadline(top, mono, wall);
          this.#siftDown(0);
        }
      }
    } finally {
      this.#sweeping = false;
    }
    this.#arm();
  }

  #arm(): void {
    if (this.#sweeping) return;
    const top = this.#heap[0];
    if (top === undefined) {
      this.#disarm();
      return;
    }
    if (top.heapKey >= this.#timerAt) return;
    this.#cancelTimer?.();
    const now = this.#clock.monotonicNow();
    // Capped: a deadline further away than setTimeout can count is reached in several hops,
    // each firing early, sweeping nothing and re-arming.
    const delay = Math.min(Math.max(0, top.heapKey - now), MAX_TIMER_DELAY_MS);
    this.#timerAt = Math.min(top.heapKey, now + delay);
    this.#cancelTimer = this.#clock.setTimer(() => this.#onTimer(), delay);
  }

  #disarm(): void {
    this.#cancelTimer?.();
    this.#cancelTimer = undefined;
    this.#timerAt = Number.POSITIVE_INFINITY;
  }

  #heapPush(grant: Grant): void {
    grant.heapIndex = this.#heap.length;
    this.#heap.push(grant);
    this.#siftUp(grant.heapIndex);
  }

  #heapRemove(index: number): void {
    const heap = this.#heap;
    const last = heap.pop()!;
    if (index === heap.length) return;
    heap[index] = last;
    last.heapIndex = index;
    this.#siftDown(index);
    this.#siftUp(last.heapIndex);
  }

  #siftUp(index: number): void {
    const heap = this.#heap;
    const grant = heap[index]!;
    while (index > 0) {
      const parentIndex = (index - 1) >> 1;
      const parent = heap[parentIndex]!;
      if (parent.heapKey <= grant.heapKey) break;
      heap[index] = parent;
      parent.heapIndex = index;
      index = parentIndex;
    }
    heap[index] = grant;
    grant.heapIndex = index;
  }

  #siftDown(index: number): void {
    const heap = this.#heap;
    const length = heap.length;
    const grant = heap[index]!;
    for (;;) {
      const left = 2 * index + 1;
      if (left >= length) break;
      const right = left + 1;
      let child = left;
      if (right < length && heap[right]!.heapKey < heap[left]!.heapKey) child = right;
      const smaller = heap[child]!;
      if (smaller.heapKey >= grant.heapKey) break;
      heap[index] = smaller;
      smaller.heapIndex = index;
      index = child;
    }
    heap[index] = grant;
    grant.heapIndex = index;
  }

  /**
   * Checks the internal invariants (heap order, heap indexes, session lists, the timer) and
   * throws on the first violation. For tests; O(n).
   *
   * @internal
   */
  assertConsistent(): void {
    const heap = this.#heap;
    let listed = 0;
    for (const [sessionId, head] of this.#sessions) {
      if (head === undefined) throw new Error(`session ${sessionId} has an empty list`);
      for (let grant: Grant | undefined = head; grant !== undefined; grant = grant.next) {
        if (grant.sessionId !== sessionId)
          throw new Error(`grant of ${grant.sessionId} listed under ${sessionId}`);
        if (heap[grant.heapIndex] !== grant)
          throw new Error(`grant ${sessionId}/${grant.account.id} not at its heap index`);
        listed++;
      }
    }
    if (listed !== heap.length)
      throw new Error(`${listed} grants listed, ${heap.length} in the heap`);
    for (let index = 1; index < heap.length; index++) {
      const parent = heap[(index - 1) >> 1]!;
      if (parent.heapKey > heap[index]!.heapKey) throw new Error(`heap order broken at ${index}`);
    }
    const top = heap[0];
    if (top === undefined ? this.#cancelTimer !== undefined : this.#timerAt > top.heapKey) {
      throw new Error('the timer is not armed for the earliest grant');
    }
  }

  /** Stops the timer. The store stays usable; the authorizer calls this on close after `clear`. */
  dispose(): void {
    this.#disarm();
  }
}
