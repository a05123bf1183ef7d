/**
 * A prompt backend that answers from a script instead of asking a person: for demos, for this
 * package's tests, and for people testing their own apps and CLIs without an OS prompt.
 *
 * @module
 */

import { createError } from '../errors.js';
import type { Clock } from '../session/clock.js';
import type {
  PromptBackend,
  PromptOptions,
  PromptOutcome,
  PromptRequest,
} from './prompt-backend.js';

/** An outcome, or just its result (`'granted'` is short for `{ result: 'granted' }`). */
export type ScriptedOutcome = PromptOutcome | PromptOutcome['result'];

/** Options for {@link ScriptedPromptBackend}. */
export interface ScriptedPromptOptions {
  /** The backend id reported to the authorizer and in events. Default `scripted`. */
  id?: string;
  /** Answers for successive prompts, in order. */
  outcomes?: ScriptedOutcome[];
  /** Decides prompts once `outcomes` is used up. May be async; throwing makes `prompt()` reject (a broken backend). */
  decide?: (request: PromptRequest) => PromptOutcome | Promise<PromptOutcome>;
  /** How long each prompt "stays on screen" before its scripted answer. Default 0. */
  delayMs?: number;
  /** What {@link ScriptedPromptBackend.isAvailable} says; when false, prompts answer `unavailable`. Default true. */
  available?: boolean;
  /** Called with each request as its prompt goes on screen. */
  onPrompt?: (request: PromptRequest) => void;
  /** When true, nothing is answered automatically: the test answers each prompt through {@link ScriptedPromptBackend.nextPrompt}. */
  manual?: boolean;
  /** Clock for `delayMs` (pass a `FakeClock` to control it). Default: real timers that keep the process alive while a prompt waits. */
  clock?: Clock;
}

/** A prompt on the scripted "screen", waiting for the test to answer it (manual mode). */
export interface ScriptedPrompt {
  /** What the backend was asked. */
  readonly request: PromptRequest;
  /** The authorizer's signal for this prompt: aborted when every requester left. */
  readonly signal: AbortSignal;
  /** True once answered, failed, or cancelled through the signal. */
  readonly settled: boolean;
  /** Answers the prompt. Returns false (and does nothing) if it was already settled. */
  respond(outcome: ScriptedOutcome): boolean;
  /** Makes `prompt()` reject with `error`, as a broken backend would. Returns false if already settled. */
  fail(error: unknown): boolean;
}

const RESULTS: ReadonlySet<string> = new Set(['granted', 'denied', 'cancelled', 'unavailable']);

function toOutcome(outcome: ScriptedOutcome, where: string): PromptOutcome {
  if (typeof outcome === 'string') {
    if (RESULTS.has(outcome)) return { result: outcome } as PromptOutcome;
  } else if (
    typeof outcome === 'object' &&
    outcome !== null &&
    typeof outcome.result === 'string' &&
    RESULTS.has(outcome.result)
  ) {
    return outcome;
  }
  throw createError(
    'ERR_INVALID_ARGUMENT',
    `${where}: ${JSON.stringify(outcome)} is not a prompt outcome; use 'granted', 'denied', 'cancelled', 'unavailable' or { result, detail }.`,
  );
}

const CANCELLED: PromptOutcome = Object.freeze({
  result: 'cancelled',
  detail: 'the prompt was cancelled through its signal',
});

class PendingPrompt implements ScriptedPrompt {
  readonly request: PromptRequest;
  readonly signal: AbortSignal;
  settled = false;
  readonly #resolve: (outcome: PromptOutcome) => void;
  readonly #reject: (error: unknown) => void;
  readonly #onSettled: (prompt: PendingPrompt) => void;

  constructor(
    request: PromptRequest,
    signal: AbortSignal,
    resolve: (outcome: PromptOutcome) => void,
    reject: (error: unknown) => void,
    onSettled: (prompt: PendingPrompt) => void,
  ) {
    this.request = request;
    this.signal = signal;
    this.#resolve = resolve;
    this.#reject = reject;
    this.#onSettled = onSettled;
  }

  respond(outcome: ScriptedOutcome): boolean {
    const parsed = toOutcome(outcome, 'ScriptedPrompt.respond()');
    if (this.settled) return false;
    this.settled = true;
    this.#onSettled(this);
    this.#resolve(parsed);
    return true;
  }

  fail(error: unknown): boolean {
    if (this.settled) return false;
    this.settled = true;
    this.#onSettled(this);
    this.#reject(error);
    return true;
  }
}

/**
 * A {@link PromptBackend} that answers from a script.
 *
 * Each prompt takes the next entry of `outcomes`; once those are used up, `decide` answers; with
 * neither, the answer is `denied` — a test or demo that runs out of script fails closed, never
 * open. In `manual` mode nothing is answered automatically: the test picks up each prompt with
 * {@link ScriptedPromptBackend.nextPrompt} and answers it.
 *
 * Like a real backend it honours the AbortSignal: when it fires, the prompt resolves
 * `{ result: 'cancelled' }` at once (during `delayMs` too), and a signal that is already aborted
 * shows nothing. {@link ScriptedPromptBackend.requests} records every prompt that was shown.
 *
 * @throws `ERR_INVALID_ARGUMENT` from the constructor for a malformed outcome or `delayMs`.
 *
 * @example
 * ```ts
 * import { ScriptedPromptBackend } from 'bridgekeeper/testing';
 *
 * // Automatic: grant the first prompt, deny the second, then deny everything (script exhausted).
 * const scripted = new ScriptedPromptBackend({ outcomes: ['granted', 'denied'] });
 *
 * // Manual: the test plays the person.
 * const manual = new ScriptedPromptBackend({ manual: true });
 * const done = authorizer.authorize({ session, account });
 * const shown = await manual.nextPrompt();
 * console.log(shown.request.account.displayName, shown.request.process.host);
 * shown.respond('granted');
 * await done;
 * ```
 */
export class ScriptedPromptBackend implements PromptBackend {
  /** The backend id. */
  readonly id: string;
  /** What {@link ScriptedPromptBackend.isAvailable} answers; change it to simulate a backend going away. */
  available: boolean;
  /** Every request whose prompt was shown, in order. */
  readonly requests: PromptRequest[] = [];
  readonly #outcomes: PromptOutcome[];
  readonly #decide: ScriptedPromptOptions['decide'];
  readonly #delayMs: number;
  readonly #onPrompt: ScriptedPromptOptions['onPrompt'];
  readonly #manual: boolean;
  readonly #clock: Clock | undefined;
  readonly #pending: PendingPrompt[] = [];
  /** Shown prompts not yet handed to the test by nextPrompt(). */
  readonly #unclaimed: PendingPrompt[] = [];
  readonly #claimants: Array<(prompt: PendingPrompt) => void> = [];

  constructor(options: ScriptedPromptOptions = {}) {
    this.id = options.id ?? 'scripted';
    this.available = options.available ?? true;
    this.#outcomes = (options.outcomes ?? []).map((outcome, index) =>
      toOutcome(outcome, `ScriptedPromptBackend outcomes[${index}]`),
    );
    this.#decide = options.decide;
    const delayMs = options.delayMs ?? 0;
    if (typeof delayMs !== 'number' || !Number.isFinite(delayMs) || delayMs < 0) {
      throw createError(
        'ERR_INVALID_ARGUMENT',
        `ScriptedPromptBackend delayMs must be a non-negative finite number (got ${String(delayMs)}).`,
      );
    }
    this.#delayMs = delayMs;
    this.#onPrompt = options.onPrompt;
    this.#manual = options.manual === true;
    this.#clock = options.clock;
  }

  /** Manual mode: the prompts on screen that nobody answered yet, oldest first. */
  get pending(): readonly ScriptedPrompt[] {
    return [...this.#pending];
  }

  /** How many scripted outcomes are left before `decide` (or the fail-closed `denied`) takes over. */
  get remainingOutcomes(): number {
    return this.#outcomes.length;
  }

  /**
   * Appends answers to the script.
   *
   * @throws `ERR_INVALID_ARGUMENT` for a malformed outcome.
   */
  addOutcomes(...outcomes: ScriptedOutcome[]): void {
    for (const outcome of outcomes) {
      this.#outcomes.push(toOutcome(outcome, 'ScriptedPromptBackend.addOutcomes()'));
    }
  }

  /**
   * Manual mode: resolves with the oldest shown prompt not yet handed out by an earlier call
   * (waiting for one if there is none). A prompt cancelled meanwhile is still handed out, with
   * `settled` true and its `signal` aborted, so a test can see that it was cancelled.
   *
   * @throws (rejects with) `ERR_ABORTED` / `ERR_TIMEOUT` when `options.signal` fires first.
   */
  nextPrompt(options: { signal?: AbortSignal } = {}): Promise<ScriptedPrompt> {
    const ready = this.#unclaimed.shift();
    if (ready !== undefined) return Promise.resolve(ready);
    return new Promise<ScriptedPrompt>((resolve, reject) => {
      const signal = options.signal;
      const claim = (prompt: PendingPrompt): void => {
        signal?.removeEventListener('abort', onAbort);
        resolve(prompt);
      };
      const onAbort = (): void => {
        const index = this.#claimants.indexOf(claim);
        if (index !== -1) this.#claimants.splice(index, 1);
        const reason: unknown = signal?.reason;
        reject(
          reason instanceof Error && reason.name === 'TimeoutError'
            ? createError('ERR_TIMEOUT', 'No prompt was shown in time.', { cause: reason })
            : createError('ERR_ABORTED', 'Waiting for the next prompt was aborted.', {
                cause: reason,
              }),
        );
      };
      if (signal?.aborted) {
        onAbort();
        return;
      }
      signal?.addEventListener('abort', onAbort, { once: true });
      this.#claimants.push(claim);
    });
  }

  /** Resolves {@link ScriptedPromptBackend.available}. Never throws, whatever the signal. */
  async isAvailable(_options?: { signal?: AbortSignal }): Promise<boolean> {
    return this.available === true;
  }

  /**
   * Answers from the script (or waits for the test, in manual mode). Resolves `unavailable` when
   * `available` is false, `cancelled` when the signal fires. Rejects only when `decide` throws or
   * a manual prompt is answered with {@link ScriptedPrompt.fail}.
   */
  prompt(request: PromptRequest, options: PromptOptions): Promise<PromptOutcome> {
    const signal = options?.signal;
    if (signal?.aborted) return Promise.resolve(CANCELLED);
    if (!this.available) {
      return Promise.resolve({
        result: 'unavailable',
        detail: 'the scripted backend is configured as unavailable',
      });
    }
    this.requests.push(request);
    try {
      this.#onPrompt?.(request);
    } catch {
      // A throwing observer must not change the answer.
    }
    if (this.#manual) return this.#manualPrompt(request, signal);
    const scripted = this.#outcomes.shift();
    return this.#automaticPrompt(request, signal, scripted);
  }

  #manualPrompt(request: PromptRequest, signal: AbortSignal | undefined): Promise<PromptOutcome> {
    return new Promise<PromptOutcome>((resolve, reject) => {
      const prompt = new PendingPrompt(
        request,
        signal ?? new AbortController().signal,
        resolve,
        reject,
        (settled) => {
          signal?.removeEventListener('abort', onAbort);
          const index = this.#pending.indexOf(settled);
          if (index !== -1) this.#pending.splice(index, 1);
        },
      );
      const onAbort = (): void => {
        prompt.respond(CANCELLED);
      };
      this.#pending.push(prompt);
      if (signal?.aborted) prompt.respond(CANCELLED);
      else signal?.addEventListener('abort', onAbort, { once: true });
      const claimant = this.#claimants.shift();
      if (claimant !== undefined) claimant(prompt);
      else this.#unclaimed.push(prompt);
    });
  }

  async #automaticPrompt(
    request: PromptRequest,
    signal: AbortSignal | undefined,
    scripted: PromptOutcome | undefined,
  ): Promise<PromptOutcome> {
    const cancelled = this.#whenAborted(signal);
    try {
      if (this.#delayMs > 0) {
        const waited = await Promise.race([this.#sleep(this.#delayMs, signal), cancelled.promise]);
        if (waited === 'aborted') return CANCELLED;
      }
      if (scripted !== undefined) return scripted;
      if (this.#decide !== undefined) {
        const decision = await Promise.race([
          Promise.resolve().then(() => this.#decide!(request)),
          cancelled.promise,
        ]);
        return decision === 'aborted' ? CANCELLED : decision;
      }
      return {
        result: 'denied',
        detail: 'the scripted backend ran out of outcomes (fails closed)',
      };
    } finally {
      cancelled.dispose();
    }
  }

  #whenAborted(signal: AbortSignal | undefined): { promise: Promise<'aborted'>; dispose(): void } {
    if (signal === undefined) return { promise: new Promise(() => {}), dispose() {} };
    // onPrompt may have aborted it synchronously.
    if (signal.aborted) return { promise: Promise.resolve('aborted'), dispose() {} };
    let onAbort: () => void = () => {};
    const promise = new Promise<'aborted'>((resolve) => {
      onAbort = () => resolve('aborted');
      signal.addEventListener('abort', onAbort, { once: true });
    });
    return { promise, dispose: () => signal.removeEventListener('abort', onAbort) };
  }

  #sleep(ms: number, signal: AbortSignal | undefined): Promise<'slept'> {
    return new Promise<'slept'>((resolve) => {
      let cancel: () => void;
      const done = (): void => {
        signal?.removeEventListener('abort', cancel);
        resolve('slept');
      };
      if (this.#clock !== undefined) {
        cancel = this.#clock.setTimer(done, ms);
      } else {
        // A real timer that keeps the process alive: a demo waiting on a prompt must not exit.
        const timer = setTimeout(done, ms);
        cancel = () => clearTimeout(timer);
      }
      signal?.addEventListener('abort', cancel, { once: true });
    });
  }
}
