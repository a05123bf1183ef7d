/**
 * The authorizer decides whether a terminal session may use an account right now, and asks the
 * person — through a {@link PromptBackend} — when it may not yet.
 *
 * Grants are keyed on (session credential, account): approving one terminal does not approve
 * another, and approving one account does not approve the next. A grant lives while the app is
 * unlocked, for `idleTimeoutMs` after its last use (10 minutes) and at most `maxLifetimeMs` after
 * it was granted (12 hours), measured on the monotonic and the wall clock alike. Prompts are
 * single-flight (concurrent requests for one grant share one prompt), shown one at a time in
 * FIFO order, and a denial starts a short cool-down so a script in a loop cannot flood the person
 * with prompts.
 *
 * Locking revokes everything, including approvals not yet given: a prompt that goes on screen
 * while the app is locked unlocks it when approved (the prompt says so), but once `lock()` is
 * called after a prompt went on screen — whether the app was unlocked or already locked —
 * approving that prompt no longer grants anything or unlocks the app.
 *
 * @module
 */

import { AuthorizationError, abortError, type BridgekeeperError, createError } from '../errors.js';
import type {
  AccountRef,
  ClientClaims,
  ProcessDescription,
  PromptBackend,
  PromptRequest,
} from '../prompt/prompt-backend.js';
import type { Disposable } from '../transport/transport.js';
import { Emitter } from '../util/emitter.js';
import { createLog } from '../util/log.js';
import { type Clock, systemClock } from './clock.js';
import type { SessionCredential, SessionScope } from './credentials.js';
import { type ExpiryReason, type Grant, type GrantInfo, GrantStore } from './grant-store.js';

export type { ExpiryReason, GrantInfo } from './grant-store.js';

const log = createLog('bridgekeeper:authorizer');

/** Default idle timeout: 10 minutes without use ends a grant. */
export const DEFAULT_IDLE_TIMEOUT_MS = 10 * 60_000;
/** Default hard limit: 12 hours after the person approved, however much the grant is used. */
export const DEFAULT_MAX_LIFETIME_MS = 12 * 3_600_000;
/**
 * Default cool-down after a denial: 5 seconds. Long enough to absorb the burst of retries from a
 * script or a tool that spawns many short processes after the person said no (users report
 * 14 prompts in 30 minutes from such tools); short enough that a person who refused by mistake
 * can simply run the command again.
 */
export const DEFAULT_DENIAL_COOLDOWN_MS = 5_000;

/**
 * How long a prompt whose requesters all left may keep the screen while its backend takes it
 * down. A backend should settle promptly once its signal fires; one that never does must not
 * block every later prompt.
 */
const ABANDONED_PROMPT_GRACE_MS = 2_000;

/** Options for {@link Authorizer}. */
export interface AuthorizerOptions {
  /** Asks the person. */
  prompt: PromptBackend;
  /** Source of time; default {@link systemClock}. Tests pass a `FakeClock`. */
  clock?: Clock;
  /** A grant unused for this long expires. Default {@link DEFAULT_IDLE_TIMEOUT_MS} (10 minutes). */
  idleTimeoutMs?: number;
  /** A grant expires this long after it was granted, however much it is used. Must be ≥ `idleTimeoutMs`. Default {@link DEFAULT_MAX_LIFETIME_MS} (12 hours). */
  maxLifetimeMs?: number;
  /** After a denial, the same (session, account) is refused without prompting for this long; 0 turns it off. Default {@link DEFAULT_DENIAL_COOLDOWN_MS} (5 s). */
  denialCooldownMs?: number;
  /** Whether the app starts locked. Default false. */
  locked?: boolean;
  /**
   * The app's unlock hook: run when a prompt that went on screen while the app was locked is
   * approved, before the grant is created. If it throws, the request is refused
   * (`ERR_PROMPT_FAILED`) and the app stays locked. If `lock()` is called while it runs (even
   * after an `unlock()`), the approval no longer counts: no grant is created, the authorizer does
   * not unlock, and the request is refused with `ERR_AUTHORIZATION_CANCELLED`.
   */
  unlock?: (info: { account: AccountRef; sessionId: string }) => void | Promise<void>;
}

/** One request to use an account, as the server hands it over after verifying the peer. */
export interface AuthorizationRequest {
  /** The caller's session credential, derived by the server from the kernel-verified peer. */
  session: SessionCredential;
  /** The account the caller wants. */
  account: AccountRef;
  /** What the client said about itself; passed to the backend to be shown labelled, or not at all. */
  claims?: ClientClaims;
  /** The peer process, for backends that check it themselves (polkit). */
  subject?: PromptRequest['subject'];
}

/** Options for {@link Authorizer.authorize}. */
export interface AuthorizeOptions {
  /** Withdraws this request. When every request sharing a prompt has withdrawn, the prompt is cancelled. */
  signal?: AbortSignal;
  /** Called once when the prompt for this request is on screen (at once if it joins a prompt already showing). */
  onPrompt?: () => void;
  /**
   * Called once when the request has to wait for other prompts first, with how many are ahead
   * of it (1 = it is next after the prompt on screen).
   */
  onQueued?: (position: number) => void;
}

/** Why a request was refused: the four prompt results other than a grant, plus `cooldown` (refused without prompting after a recent denial). */
export type DenialReason = 'denied' | 'cancelled' | 'unavailable' | 'failed' | 'cooldown';

/** Why a grant was revoked: `revoke` — {@link Authorizer.revoke}; `lock` — {@link Authorizer.lock}. */
export type RevocationReason = 'revoke' | 'lock';

/** The grant an event is about. No secrets. */
export interface GrantEvent {
  readonly sessionId: string;
  readonly scope: SessionScope;
  readonly account: AccountRef;
  readonly process: ProcessDescription;
}

/** Events of an {@link Authorizer}, for an audit log or a live view. Payloads carry no secrets. */
export type AuthorizerEvents = {
  /** The person approved; the grant now exists. `unlocked` is true when this prompt also unlocked the app. */
  granted: GrantEvent & { readonly backend: string; readonly unlocked: boolean };
  /** A request was refused (every waiter of one prompt counts once). */
  denied: GrantEvent & {
    readonly reason: DenialReason;
    /** The error code behind the refusal (`ERR_ABORTED` when every requester went away). */
    readonly code: string;
    /** The backend's explanation, if it gave one. */
    readonly detail?: string;
    /** For `cooldown`: when the app will ask again. */
    readonly retryAfterMs?: number;
  };
  /** A live grant was used (authorize on an existing grant, or tryUse); its idle timer restarted. */
  used: GrantEvent;
  /** A grant ran out. */
  expired: GrantEvent & { readonly reason: ExpiryReason };
  /** A grant was taken away. */
  revoked: GrantEvent & { readonly reason: RevocationReason };
  /** The app locked; every grant was revoked just before. */
  locked: Record<string, never>;
  /**
   * The app unlocked: `app` through {@link Authorizer.unlock}; `prompt` by approving a prompt that
   * went on screen while the app was locked (with no `lock()` since).
   */
  unlocked: { readonly by: 'app' | 'prompt' };
  /** A prompt went on screen. */
  prompt: GrantEvent & { readonly backend: string; readonly unlocks: boolean };
};

interface Waiter {
  readonly resolve: () => void;
  readonly reject: (error: BridgekeeperError) => void;
  readonly options: AuthorizeOptions;
  detach: (() => void) | undefined;
  settled: boolean;
}

/**
 * `queued` → `showing` (the backend is asking) → `finishing` (the answer is in; the unlock hook
 * may run) → `done`. A flight whose waiters all left, or that close() ended, goes to `done` at once.
 */
type FlightState = 'queued' | 'showing' | 'finishing' | 'done';

interface Flight {
  readonly key: string;
  readonly session: SessionCredential;
  readonly account: AccountRef;
  readonly claims: ClientClaims;
  readonly subject: PromptRequest['subject'];
  readonly waiters: Set<Waiter>;
  readonly controller: AbortController;
  state: FlightState;
  /** The lock epoch when the prompt went on screen; a different one at approval voids it. */
  epoch: number;
}

/**
 * Why a refusal happened beyond the prompt's own result: `unlockFailed` — approved, but the unlock
 * hook threw; `lockedDuringPrompt` — approved, but `lock()` was called after the prompt went on screen.
 */
type RefusalContext = 'prompt' | 'unlockFailed' | 'lockedDuringPrompt';

type Verdict =
  | { readonly result: 'granted' }
  | { readonly result: 'denied' | 'cancelled' | 'unavailable'; readonly detail: string | undefined }
  | { readonly result: 'failed'; readonly detail: string | undefined; readonly cause: unknown };

const PROMPT_RESULTS = new Set(['granted', 'denied', 'cancelled', 'unavailable']);

/**
 * Decides, per (session, account), whether a caller may use an account, and asks the person when
 * it may not yet.
 *
 * `authorize()` only decides: once it resolved, the caller's request goes ahead even if the grant
 * is revoked or expires a moment later (as the seed says, a running process may finish its
 * task); every new request is checked again.
 *
 * @throws `ERR_INVALID_ARGUMENT` from the constructor for a missing backend or a duration that is
 * not a positive finite number (or a lifetime shorter than the idle timeout).
 *
 * @example
 * ```ts
 * import { Authorizer } from 'bridgekeeper';
 *
 * const authorizer = new Authorizer({
 *   prompt: polkitBackend,
 *   locked: true,
 *   unlock: async () => vault.unlockWithOsKey(),
 * });
 * authorizer.on('granted', (g) => audit.write(`granted ${g.account.displayName} to ${g.process.host}`));
 *
 * // In the server, before the handler runs:
 * await authorizer.authorize(
 *   { session: credential, account: { id: 'work', displayName: 'Work' } },
 *   { signal: connectionSignal, onPrompt: () => notifyClient('look at your screen') },
 * );
 * ```
 */
export class Authorizer {
  readonly #backend: PromptBackend;
  readonly #clock: Clock;
  readonly #cooldownMs: number;
  readonly #unlockHook: AuthorizerOptions['unlock'];
  readonly #store: GrantStore;
  readonly #emitter = new Emitter<AuthorizerEvents>((error) => {
    log('an event listener threw: %O', error);
  });
  readonly #flights = new Map<string, Flight>();
  readonly #queue: Flight[] = [];
  readonly #cooldowns = new Map<string, number>();
  /** The flight that holds the screen: showing, finishing, or abandoned and being taken down. */
  #slot: Flight | undefined;
  #cancelGrace: (() => void) | undefined;
  #locked: boolean;
  /**
   * Incremented by every `lock()` call, even when already locked. A prompt remembers the epoch it
   * went on screen in; a lock since then voids its approval.
   */
  #lockEpoch = 0;
  #closed = false;

  constructor(options: AuthorizerOptions) {
    if (typeof options !== 'object' || options === null) {
      throw createError(
        'ERR_INVALID_ARGUMENT',
        'new Authorizer(options) needs an options object with a prompt backend.',
      );
    }
    const backend = options.prompt as Partial<PromptBackend> | undefined;
    if (
      typeof backend !== 'object' ||
      backend === null ||
      typeof backend.prompt !== 'function' ||
      typeof backend.id !== 'string'
    ) {
      throw createError(
        'ERR_INVALID_ARGUMENT',
        'Authorizer options.prompt must be a PromptBackend (an object with an id and a prompt() method), such as the PolKit or Windows Hello backend.',
      );
    }
    const idle = options.idleTimeoutMs ?? DEFAULT_IDLE_TIMEOUT_MS;
    const max = options.maxLifetimeMs ?? DEFAULT_MAX_LIFETIME_MS;
    const cooldown = options.denialCooldownMs ?? DEFAULT_DENIAL_COOLDOWN_MS;
    assertDuration(idle, 'idleTimeoutMs', false);
    assertDuration(max, 'maxLifetimeMs', false);
    assertDuration(cooldown, 'denialCooldownMs', true);
    if (max < idle) {
      throw createError(
        'ERR_INVALID_ARGUMENT',
        `Authorizer maxLifetimeMs (${max}) must be at least idleTimeoutMs (${idle}).`,
      );
    }
    if (options.unlock !== undefined && typeof options.unlock !== 'function') {
      throw createError('ERR_INVALID_ARGUMENT', 'Authorizer options.unlock must be a function.');
    }
    this.#backend = options.prompt;
    this.#clock = options.clock ?? systemClock;
    this.#cooldownMs = cooldown;
    this.#unlockHook = options.unlock;
    this.#locked = options.locked === true;
    this.#store = new GrantStore({
      clock: this.#clock,
      idleTimeoutMs: idle,
      maxLifetimeMs: max,
      onExpired: (grant, reason) => {
        log('grant expired (%s): session %s account %s', reason, grant.sessionId, grant.account.id);
        this.#emitter.emit('expired', { ...grantEvent(grant), reason });
      },
    });
  }

  /**
   * True while the app is locked: no grant exists, and a prompt shown from now on unlocks it when
   * approved (unless `lock()` is called again before the approval takes effect).
   */
  get locked(): boolean {
    return this.#locked;
  }

  /**
   * Resolves once the session may use the account: at once if a live grant exists (refreshing
   * its last use), otherwise after the person approved a prompt. Never throws synchronously.
   *
   * @throws (rejects with) `ERR_AUTHORIZATION_DENIED` — the person refused (a cool-down starts);
   * `ERR_AUTHORIZATION_COOLDOWN` — refused moments ago, with `retryAfterMs`;
   * `ERR_AUTHORIZATION_CANCELLED` — the prompt was dismissed; `ERR_PROMPT_UNAVAILABLE` — no
   * backend can ask; `ERR_PROMPT_FAILED` — the backend broke or the unlock hook threw;
   * `ERR_ABORTED` / `ERR_TIMEOUT` — the signal fired; `ERR_CLOSED` — the authorizer closed;
   * `ERR_INVALID_ARGUMENT` — a malformed request.
   *
   * @example
   * ```ts
   * await authorizer.authorize(
   *   { session, account: { id: 'work', displayName: 'Work' }, claims: { name: 'deploy-script' } },
   *   { signal: AbortSignal.timeout(60_000), onQueued: (ahead) => console.log(`${ahead} prompt(s) ahead`) },
   * );
   * ```
   */
  authorize(request: AuthorizationRequest, options: AuthorizeOptions = {}): Promise<void> {
    try {
      return this.#authorize(request, options ?? {});
    } catch (error) {
      return Promise.reject(error);
    }
  }

  /**
   * The synchronous fast path: when a live grant for (session, account) exists, refreshes it,
   * emits `used` and returns true. Otherwise returns false (expiring the grant if it just ran
   * out); the caller then goes through {@link Authorizer.authorize}.
   *
   * @example
   * ```ts
   * if (!authorizer.tryUse(session.id, 'work')) await authorizer.authorize({ session, account });
   * ```
   */
  tryUse(sessionId: string, accountId: string): boolean {
    if (this.#closed || this.#locked) return false;
    const grant = this.#store.use(sessionId, accountId);
    if (grant === undefined) return false;
    this.#emitUsed(grant);
    return true;
  }

  /**
   * The app locked: revokes every grant at once (`revoked` with reason `lock` for each, then
   * `locked`). It also voids every approval not yet given: a prompt already on screen (or whose
   * approval is waiting for the unlock hook) stays, but approving it creates no grant and does not
   * unlock the app; its requests are refused with `ERR_AUTHORIZATION_CANCELLED` (the person never
   * saw that approving would unlock the app, and the lock revoked everything before it). Calling it
   * while already locked emits nothing but still voids those approvals.
   *
   * @example
   * ```ts
   * powerMonitor.on('lock-screen', () => authorizer.lock());
   * ```
   */
  lock(): void {
    if (this.#closed) return;
    // Even when already locked: a prompt on screen, or an unlock hook running, must not unlock.
    this.#lockEpoch++;
    if (this.#locked) {
      log('lock() while locked; pending approvals voided');
      return;
    }
    this.#locked = true;
    const revoked = this.#store.clear();
    log('locked; %d grant(s) revoked', revoked.length);
    if (this.#emitter.has('revoked')) {
      for (const grant of revoked)
        this.#emitter.emit('revoked', { ...grantEvent(grant), reason: 'lock' });
    }
    this.#emitter.emit('locked', {});
  }

  /**
   * The app unlocked by its own means (the person typed the master password in the app).
   * Emits `unlocked`. Idempotent.
   *
   * @example
   * ```ts
   * await vault.unlock(password);
   * authorizer.unlock();
   * ```
   */
  unlock(): void {
    if (this.#closed || !this.#locked) return;
    this.#locked = false;
    log('unlocked by the app');
    this.#emitter.emit('unlocked', { by: 'app' });
  }

  /**
   * The live grants with their remaining time. Grants found expired are removed (emitting
   * `expired`) and left out.
   *
   * @example
   * ```ts
   * for (const g of authorizer.listGrants()) {
   *   console.log(`${g.process.host} → ${g.account.displayName}: ${Math.round(g.expiresInMs / 1000)} s left`);
   * }
   * ```
   */
  listGrants(): GrantInfo[] {
    if (this.#closed) return [];
    return this.#store.liveGrants().map((grant) => this.#store.info(grant));
  }

  /**
   * Revokes one grant (`accountId` given) or every grant of a session, emitting `revoked` with
   * reason `revoke` for each. Returns how many live grants were revoked. Requests already
   * authorized are not affected; the session's next request prompts again.
   *
   * @throws `ERR_INVALID_ARGUMENT` when `filter.sessionId` is not a string.
   *
   * @example
   * ```ts
   * authorizer.revoke({ sessionId: grant.sessionId, accountId: grant.account.id });
   * ```
   */
  revoke(filter: { sessionId: string; accountId?: string }): number {
    if (typeof filter !== 'object' || filter === null || typeof filter.sessionId !== 'string') {
      throw createError(
        'ERR_INVALID_ARGUMENT',
        'revoke() needs { sessionId: string, accountId?: string }.',
      );
    }
    if (filter.accountId !== undefined && typeof filter.accountId !== 'string') {
      throw createError('ERR_INVALID_ARGUMENT', 'revoke() accountId must be a string when given.');
    }
    if (this.#closed) return 0;
    const grants = this.#store.liveGrantsOf(filter.sessionId, filter.accountId);
    for (const grant of grants) this.#store.remove(grant);
    log('revoked %d grant(s) of session %s', grants.length, filter.sessionId);
    for (const grant of grants)
      this.#emitter.emit('revoked', { ...grantEvent(grant), reason: 'revoke' });
    return grants.length;
  }

  /**
   * Subscribes to an event; dispose the result to unsubscribe. A listener that throws does not
   * affect the authorizer or other listeners.
   *
   * @example
   * ```ts
   * const sub = authorizer.on('expired', (e) => console.log(`${e.account.displayName}: ${e.reason}`));
   * sub.dispose();
   * ```
   */
  on<E extends keyof AuthorizerEvents>(
    event: E,
    listener: (payload: AuthorizerEvents[E]) => void,
  ): Disposable {
    return this.#emitter.on(event, listener);
  }

  /**
   * Shuts the authorizer down: queued and showing prompts are cancelled (their `authorize()`
   * calls reject with `ERR_CLOSED`), grants and cool-downs are dropped without events, timers
   * stop, listeners are removed. Idempotent; `authorize()` afterwards rejects with `ERR_CLOSED`.
   *
   * @example
   * ```ts
   * process.on('SIGTERM', () => authorizer.close());
   * ```
   */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    log('closing: %d prompt(s) pending, %d grant(s) dropped', this.#flights.size, this.#store.size);
    const flights = [...this.#flights.values()];
    this.#flights.clear();
    this.#queue.length = 0;
    for (const flight of flights) {
      flight.state = 'done';
      const error = closedError(flight.account.displayName);
      for (const waiter of flight.waiters) this.#settle(waiter, error);
      flight.waiters.clear();
    }
    // The prompt holding the screen (showing, or abandoned and being taken down) comes down.
    this.#slot?.controller.abort(closedError(this.#slot.account.displayName));
    this.#slot = undefined;
    this.#cancelGrace?.();
    this.#cancelGrace = undefined;
    this.#store.clear();
    this.#store.dispose();
    this.#cooldowns.clear();
    this.#emitter.clear();
  }

  #authorize(request: AuthorizationRequest, options: AuthorizeOptions): Promise<void> {
    assertRequest(request);
    const { session, account } = request;
    if (this.#closed) throw closedError(account.displayName);
    const signal = options.signal;
    if (
      signal !== undefined &&
      (typeof signal !== 'object' ||
        signal === null ||
        typeof signal.addEventListener !== 'function')
    ) {
      throw createError(
        'ERR_INVALID_ARGUMENT',
        'authorize() options.signal must be an AbortSignal.',
      );
    }
    if (signal?.aborted) throw abortError(signal, `Authorization for "${account.displayName}"`);

    if (!this.#locked) {
      const grant = this.#store.use(session.id, account.id);
      if (grant !== undefined) {
        this.#emitUsed(grant);
        return Promise.resolve();
      }
    }

    const key = grantKey(session.id, account.id);
    const existing = this.#flights.get(key);
    if (existing !== undefined) return this.#join(existing, options);

    const retryAfterMs = this.#cooldownRemaining(key);
    if (retryAfterMs > 0) {
      const error = new AuthorizationError(
        'ERR_AUTHORIZATION_COOLDOWN',
        `Access to "${account.displayName}" was refused moments ago, so the app will not ask again for ${Math.ceil(retryAfterMs / 1000)} s. Wait, then run the command again.`,
        { retryAfterMs },
      );
      log('refused during cool-down: session %s account %s', session.id, account.id);
      this.#emitter.emit('denied', {
        ...requestEvent(session, account),
        reason: 'cooldown',
        code: error.code,
        retryAfterMs,
      });
      throw error;
    }

    const flight: Flight = {
      key,
      session,
      account,
      claims: request.claims ?? {},
      subject: request.subject,
      waiters: new Set(),
      controller: new AbortController(),
      state: 'queued',
      epoch: this.#lockEpoch,
    };
    this.#flights.set(key, flight);
    const promise = this.#addWaiter(flight, options);
    this.#queue.push(flight);
    this.#pump();
    if (flight.state === 'queued') {
      const position = this.#queue.indexOf(flight) + 1;
      log('prompt queued at position %d: session %s account %s', position, session.id, account.id);
      for (const waiter of flight.waiters) callSafely(waiter.options.onQueued, position);
    }
    return promise;
  }

  #join(flight: Flight, options: AuthorizeOptions): Promise<void> {
    const promise = this.#addWaiter(flight, options);
    if (flight.state === 'showing') {
      callSafely(options.onPrompt);
    } else if (flight.state === 'queued') {
      callSafely(options.onQueued, this.#queue.indexOf(flight) + 1);
    }
    return promise;
  }

  #addWaiter(flight: Flight, options: AuthorizeOptions): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const waiter: Waiter = { resolve, reject, options, detach: undefined, settled: false };
      const signal = options.signal;
      if (signal !== undefined) {
        const onAbort = (): void => {
          if (waiter.settled) return;
          flight.waiters.delete(waiter);
          this.#settle(
            waiter,
            abortError(signal, `Authorization for "${flight.account.displayName}"`),
          );
          if (flight.waiters.size === 0) this.#abandon(flight);
        };
        signal.addEventListener('abort', onAbort, { once: true });
        waiter.detach = () => signal.removeEventListener('abort', onAbort);
      }
      flight.waiters.add(waiter);
    });
  }

  #settle(waiter: Waiter, error?: BridgekeeperError): void {
    if (waiter.settled) return;
    waiter.settled = true;
    waiter.detach?.();
    waiter.detach = undefined;
    if (error === undefined) waiter.resolve();
    else waiter.reject(error);
  }

  /** Every waiter of `flight` left: take its prompt off the queue or off the screen. */
  #abandon(flight: Flight): void {
    const state = flight.state;
    if (state === 'done') return;
    flight.state = 'done';
    this.#flights.delete(flight.key);
    log(
      'every requester left (%s): session %s account %s',
      state,
      flight.session.id,
      flight.account.id,
    );
    if (state === 'queued') {
      const index = this.#queue.indexOf(flight);
      if (index !== -1) this.#queue.splice(index, 1);
    } else if (state === 'showing') {
      flight.controller.abort(
        createError('ERR_ABORTED', 'Every request waiting for this prompt went away.'),
      );
      // Keep the screen until the backend confirms the prompt is down, but not forever.
      this.#cancelGrace = this.#clock.setTimer(() => {
        this.#cancelGrace = undefined;
        log('backend %s did not settle after abort; moving on', this.#backend.id);
        this.#release(flight);
      }, ABANDONED_PROMPT_GRACE_MS);
    }
    // A finishing flight releases the screen itself once its unlock hook returns.
    this.#emitter.emit('denied', {
      ...requestEvent(flight.session, flight.account),
      reason: 'cancelled',
      code: 'ERR_ABORTED',
      detail: 'every request waiting for the prompt went away',
    });
  }

  /** Shows queued prompts while the screen is free. */
  #pump(): void {
    while (this.#slot === undefined && !this.#closed) {
      const flight = this.#queue.shift();
      if (flight === undefined) return;
      this.#show(flight);
    }
  }

  #show(flight: Flight): void {
    const { session, account } = flight;
    // The grant may exist by now (another request got it while this one waited).
    const grant = this.#locked ? undefined : this.#store.use(session.id, account.id);
    if (grant !== undefined) {
      flight.state = 'done';
      this.#flights.delete(flight.key);
      for (const waiter of flight.waiters) {
        this.#emitUsed(grant);
        this.#settle(waiter);
      }
      return;
    }

    flight.state = 'showing';
    flight.epoch = this.#lockEpoch;
    this.#slot = flight;
    const unlocks = this.#locked;
    const request: PromptRequest = {
      account,
      process: session.process,
      claims: flight.claims,
      sessionId: session.id,
      ...(flight.subject === undefined ? {} : { subject: flight.subject }),
      unlocks,
    };
    log(
      'prompting (%s): session %s account %s unlocks=%s',
      this.#backend.id,
      session.id,
      account.id,
      unlocks,
    );
    let answer: Promise<unknown>;
    let shown = true;
    try {
      answer = Promise.resolve(this.#backend.prompt(request, { signal: flight.controller.signal }));
    } catch (error) {
      shown = false;
      answer = Promise.reject(error);
    }
    if (shown) {
      this.#emitter.emit('prompt', {
        ...requestEvent(session, account),
        backend: this.#backend.id,
        unlocks,
      });
      for (const waiter of [...flight.waiters]) callSafely(waiter.options.onPrompt);
    }
    answer
      .then(
        (outcome) => this.#onAnswer(flight, parseOutcome(outcome)),
        (error: unknown) =>
          this.#onAnswer(flight, { result: 'failed', detail: describe(error), cause: error }),
      )
      .catch((error: unknown) => {
        // Nothing in #onAnswer should throw; if it ever does, fail closed instead of leaving
        // the waiters hanging and the screen taken.
        log('internal error while finishing a prompt: %O', error);
        if (flight.state === 'showing' || flight.state === 'finishing') {
          this.#refuse(flight, { result: 'failed', detail: 'internal error', cause: error });
        } else {
          this.#release(flight);
        }
      });
  }

  async #onAnswer(flight: Flight, verdict: Verdict): Promise<void> {
    if (flight.state !== 'showing') {
      // Abandoned or closed: whatever the backend says, nobody is waiting for it.
      this.#release(flight);
      return;
    }
    flight.state = 'finishing';
    const { session, account } = flight;
    log('prompt answered %s: session %s account %s', verdict.result, session.id, account.id);

    if (verdict.result !== 'granted') {
      this.#refuse(flight, verdict);
      return;
    }
    if (this.#lockEpoch !== flight.epoch) {
      this.#refuseLockedDuringPrompt(flight);
      return;
    }

    let unlocked = false;
    if (this.#locked) {
      try {
        await this.#unlockHook?.({ account, sessionId: session.id });
      } catch (error) {
        log('unlock hook threw; refusing: %O', error);
        if (this.#closed) return;
        if (flight.state === 'finishing') {
          this.#refuse(
            flight,
            { result: 'failed', detail: 'the app could not be unlocked', cause: error },
            'unlockFailed',
          );
        } else {
          this.#release(flight);
        }
        return;
      }
      if (this.#closed) return;
      // lock() while the hook ran (even after an unlock() by the app) voids the approval: the app
      // stays as the app left it, and nothing is granted.
      if (this.#lockEpoch !== flight.epoch) {
        if (flight.state === 'finishing') this.#refuseLockedDuringPrompt(flight);
        else this.#release(flight);
        return;
      }
      // The hook succeeded, so the app is unlocked whether or not anyone still waits.
      if (this.#locked) {
        this.#locked = false;
        unlocked = true;
        this.#emitter.emit('unlocked', { by: 'prompt' });
      }
      if (flight.state !== 'finishing') {
        this.#release(flight);
        return;
      }
    }

    const grant = this.#store.add(session, account);
    flight.state = 'done';
    this.#flights.delete(flight.key);
    this.#emitter.emit('granted', { ...grantEvent(grant), backend: this.#backend.id, unlocked });
    for (const waiter of flight.waiters) this.#settle(waiter);
    flight.waiters.clear();
    this.#release(flight);
  }

  /** The person approved, but `lock()` was called after the prompt went on screen. */
  #refuseLockedDuringPrompt(flight: Flight): void {
    log(
      'approval voided by lock() after the prompt went on screen: session %s account %s',
      flight.session.id,
      flight.account.id,
    );
    this.#refuse(
      flight,
      { result: 'cancelled', detail: 'the app was locked while the prompt was open' },
      'lockedDuringPrompt',
    );
  }

  #refuse(
    flight: Flight,
    verdict: Exclude<Verdict, { result: 'granted' }>,
    context: RefusalContext = 'prompt',
  ): void {
    const { session, account } = flight;
    if (verdict.result === 'failed' && context === 'prompt') {
      // The backend's own error stays here, in the `denied` event's detail and in the error's
      // `cause`; the message (which reaches clients) does not carry it.
      log('prompt backend %s failed: %O', this.#backend.id, verdict.cause);
    }
    const error = refusalError(verdict, account, this.#backend.id, this.#cooldownMs, context);
    flight.state = 'done';
    this.#flights.delete(flight.key);
    if (verdict.result === 'denied' && this.#cooldownMs > 0) this.#startCooldown(flight.key);
    this.#emitter.emit('denied', {
      ...requestEvent(session, account),
      reason: verdict.result,
      code: error.code,
      ...(verdict.detail === undefined ? {} : { detail: verdict.detail }),
    });
    for (const waiter of flight.waiters) this.#settle(waiter, error);
    flight.waiters.clear();
    this.#release(flight);
  }

  /** The flight no longer needs the screen: let the next prompt show. */
  #release(flight: Flight): void {
    if (this.#slot !== flight) return;
    this.#slot = undefined;
    this.#cancelGrace?.();
    this.#cancelGrace = undefined;
    this.#pump();
  }

  #emitUsed(grant: Grant): void {
    if (this.#emitter.has('used')) this.#emitter.emit('used', grantEvent(grant));
  }

  #cooldownRemaining(key: string): number {
    const until = this.#cooldowns.get(key);
    if (until === undefined) return 0;
    const remaining = until - this.#clock.monotonicNow();
    if (remaining > 0) return remaining;
    this.#cooldowns.delete(key);
    return 0;
  }

  #startCooldown(key: string): void {
    const now = this.#clock.monotonicNow();
    // Denials need a person's answer each, so this map stays small; prune it as it grows.
    for (const [other, until] of this.#cooldowns) if (until <= now) this.#cooldowns.delete(other);
    this.#cooldowns.set(key, now + this.#cooldownMs);
  }
}

function grantKey(sessionId: string, accountId: string): string {
  // NUL cannot be confused with anything in a session id, so no two pairs share a key.
  return `${sessionId}\u0000${accountId}`;
}

function grantEvent(grant: Grant): GrantEvent {
  return {
    sessionId: grant.sessionId,
    scope: grant.scope,
    account: grant.account,
    process: grant.process,
  };
}

function requestEvent(session: SessionCredential, account: AccountRef): GrantEvent {
  return { sessionId: session.id, scope: session.scope, account, process: session.process };
}

function assertDuration(value: unknown, name: string, zeroAllowed: boolean): void {
  const ok =
    typeof value === 'number' && Number.isFinite(value) && (zeroAllowed ? value >= 0 : value > 0);
  if (!ok) {
    throw createError(
      'ERR_INVALID_ARGUMENT',
      `Authorizer ${name} must be a ${zeroAllowed ? 'non-negative' : 'positive'} finite number of milliseconds (got ${String(value)}).`,
    );
  }
}

function assertRequest(request: AuthorizationRequest): void {
  const session = (request as Partial<AuthorizationRequest> | undefined)?.session;
  const account = (request as Partial<AuthorizationRequest> | undefined)?.account;
  if (
    typeof session !== 'object' ||
    session === null ||
    typeof session.id !== 'string' ||
    session.id === '' ||
    typeof session.process !== 'object' ||
    session.process === null
  ) {
    throw createError(
      'ERR_INVALID_ARGUMENT',
      'authorize() needs request.session: the SessionCredential the server derived for the peer (id, scope, process).',
    );
  }
  if (
    typeof account !== 'object' ||
    account === null ||
    typeof account.id !== 'string' ||
    typeof account.displayName !== 'string'
  ) {
    throw createError(
      'ERR_INVALID_ARGUMENT',
      'authorize() needs request.account: { id: string, displayName: string }.',
    );
  }
}

function parseOutcome(outcome: unknown): Verdict {
  if (typeof outcome === 'object' && outcome !== null) {
    const { result, detail } = outcome as { result?: unknown; detail?: unknown };
    if (typeof result === 'string' && PROMPT_RESULTS.has(result)) {
      if (result === 'granted') return { result: 'granted' };
      if (detail === undefined || typeof detail === 'string') {
        return {
          result: result as 'denied' | 'cancelled' | 'unavailable',
          detail: detail === undefined ? undefined : detail.slice(0, 500),
        };
      }
    }
  }
  // Fail closed: anything but a well-formed outcome is a broken backend, never a grant.
  return {
    result: 'failed',
    detail: 'the backend returned a malformed outcome',
    cause: new TypeError(`Malformed prompt outcome: ${describe(outcome)}`),
  };
}

function describe(value: unknown): string {
  if (value instanceof Error) return value.message;
  try {
    const text = JSON.stringify(value);
    return (text ?? String(value)).slice(0, 200);
  } catch {
    return String(value).slice(0, 200);
  }
}

function refusalError(
  verdict: Exclude<Verdict, { result: 'granted' }>,
  account: AccountRef,
  backend: string,
  cooldownMs: number,
  context: RefusalContext,
): AuthorizationError {
  const name = account.displayName;
  if (context === 'lockedDuringPrompt') {
    return new AuthorizationError(
      'ERR_AUTHORIZATION_CANCELLED',
      `The app was locked while the prompt for access to "${name}" was open, so that approval no longer counts. Run the command again and confirm the new prompt.`,
    );
  }
  const because = verdict.detail === undefined ? '' : ` (${verdict.detail})`;
  switch (verdict.result) {
    case 'denied':
      return new AuthorizationError(
        'ERR_AUTHORIZATION_DENIED',
        `Access to "${name}" was refused at the prompt${because}. If that was a mistake, run the command again${cooldownMs > 0 ? ` after ${Math.ceil(cooldownMs / 1000)} s` : ''} and confirm the prompt.`,
      );
    case 'cancelled':
      return new AuthorizationError(
        'ERR_AUTHORIZATION_CANCELLED',
        `The prompt for access to "${name}" was dismissed before anyone answered${because}. Run the command again and confirm the prompt.`,
      );
    case 'unavailable':
      return new AuthorizationError(
        'ERR_PROMPT_UNAVAILABLE',
        `No prompt backend can ask you for access to "${name}" on this machine (the "${backend}" backend is unavailable${because}). On Linux, make sure polkitd runs and a polkit authentication agent is active in your session (desktops start one; in a terminal, run pkttyagent); on Windows, set up Windows Hello under Settings > Accounts > Sign-in options; on macOS, set up Touch ID or a login password.`,
      );
    case 'failed':
      // The backend's error text stays out of the message, which reaches clients; it is the
      // error's `cause` and the `denied` event's detail, and the debug log has it.
      return new AuthorizationError(
        'ERR_PROMPT_FAILED',
        context === 'unlockFailed'
          ? `The prompt for "${name}" was approved, but the app could not be unlocked, so access was refused. Unlock the app, then run the command again.`
          : `The prompt for access to "${name}" could not be shown (the prompt backend failed). Try again; if it keeps failing, check the app's log.`,
        { cause: verdict.cause },
      );
  }
}

function closedError(displayName: string): BridgekeeperError {
  return createError(
    'ERR_CLOSED',
    `The app is shutting down, so access to "${displayName}" was not granted. Start the app again, then run the command again.`,
  );
}

function callSafely<A extends unknown[]>(
  callback: ((...args: A) => void) | undefined,
  ...args: A
): void {
  if (callback === undefined) return;
  try {
    callback(...args);
  } catch (error) {
    log('an authorize() callback threw: %O', error);
  }
}
