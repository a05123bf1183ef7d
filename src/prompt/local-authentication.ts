/**
 * The macOS prompt backend: LocalAuthentication's `-[LAContext evaluatePolicy:localizedReason:reply:]`,
 * which shows the system's own Touch ID / Apple Watch sheet, or asks for the login password.
 *
 * Which policy (values from `LAPublicDefines.h`, see {@link LA_POLICY}):
 * 1. `LAPolicyDeviceOwnerAuthenticationWithBiometricsOrWatch` (4: Touch ID or a paired Apple
 *    Watch) when `canEvaluatePolicy` says it can be evaluated;
 * 2. otherwise, when biometrics are missing, not enrolled, locked out or disconnected (and no
 *    watch is near), `LAPolicyDeviceOwnerAuthentication` (2: the device password), as the seed
 *    says. The same fallback is taken when the biometric sheet ends because biometry went away
 *    meanwhile, or because the person chose "Use Password…" (`LAErrorUserFallback`).
 *
 * LocalAuthentication says only that the person at the Mac is its owner; what they agree to is
 * the reason text, so it names the account and the process from verified data ("allow node in
 * Terminal to use “Work”"), never what the client says about itself.
 *
 * How each `LAError` maps (codes from `LAPublicDefines.h`, see {@link LA_ERROR}); every
 * non-granted outcome carries a `detail` saying what to do:
 * - success → `granted`;
 * - `authenticationFailed` (-1), `biometryLockout` (-8) during the sheet → `denied`: the
 *   challenge was failed, and the denial cool-down then slows further guessing;
 * - `userCancel` (-2), `systemCancel` (-4), `appCancel` (-9) → `cancelled`;
 * - `userFallback` (-3) → the password prompt (only from the biometric policy; otherwise
 *   `cancelled`);
 * - `biometryNotAvailable` (-6), `biometryNotEnrolled` (-7), `watchNotAvailable` (-11, also
 *   `companionNotAvailable`), `biometryNotPaired` (-12), `biometryDisconnected` (-13) → the
 *   password prompt; should the password policy report one, `unavailable`;
 * - `passcodeNotSet` (-5), `notInteractive` (-1004), `invalidContext` (-10),
 *   `invalidDimensions` (-14) → `unavailable`: nobody refused anything;
 * - any other code, or a binding that breaks → rejects (`ERR_PLATFORM`), which the authorizer
 *   turns into a refusal: fail closed.
 *
 * Aborting the signal invalidates the context (the sheet goes away) and settles at once with
 * `cancelled`; an answer that arrives after the abort is ignored, even a success.
 *
 * @module
 */

import { BridgekeeperError, createError, errorMessage } from '../errors.js';
import { loadOnce } from '../util/load-once.js';
import { createLog } from '../util/log.js';
import type {
  PromptBackend,
  PromptOptions,
  PromptOutcome,
  PromptRequest,
} from './prompt-backend.js';
import {
  ABORTED,
  availableFrom,
  cleanPromptText,
  customPromptText,
  processForPrompt,
  untilAborted,
} from './prompt-text.js';

const debug = createLog('bridgekeeper:local-authentication');

/** Longest reason text passed to LocalAuthentication. */
const MAX_REASON_LENGTH = 300;

/**
 * `LAPolicy` values (`kLAPolicy…` in `LocalAuthentication/LAPublicDefines.h`). Only the two this
 * backend uses.
 */
export const LA_POLICY = Object.freeze({
  /** `LAPolicyDeviceOwnerAuthentication`: biometry, Apple Watch or the device password. */
  deviceOwnerAuthentication: 2,
  /**
   * `LAPolicyDeviceOwnerAuthenticationWithBiometricsOrWatch` (macOS 10.15+; renamed
   * `…WithBiometricsOrCompanion` in macOS 15, same value): Touch ID or a paired Apple Watch.
   */
  deviceOwnerAuthenticationWithBiometricsOrWatch: 4,
} as const);

/** A policy this backend evaluates. */
export type LocalAuthenticationPolicy = (typeof LA_POLICY)[keyof typeof LA_POLICY];

/** `LAError` codes (`kLAError…` in `LocalAuthentication/LAPublicDefines.h`). */
export const LA_ERROR = Object.freeze({
  authenticationFailed: -1,
  userCancel: -2,
  userFallback: -3,
  systemCancel: -4,
  passcodeNotSet: -5,
  biometryNotAvailable: -6,
  biometryNotEnrolled: -7,
  biometryLockout: -8,
  appCancel: -9,
  invalidContext: -10,
  /** Also `companionNotAvailable` (macOS 15). */
  watchNotAvailable: -11,
  biometryNotPaired: -12,
  biometryDisconnected: -13,
  invalidDimensions: -14,
  notInteractive: -1004,
} as const);

/** What LocalAuthentication answered: success, or the `code` of an `NSError` in `LAErrorDomain`. */
export type LocalAuthenticationResult =
  | { readonly ok: true }
  | { readonly ok: false /** An `LAError` code. */; readonly code: number };

/**
 * The native calls this backend makes, as a small typed interface: the real implementation (in
 * the macOS platform module) talks to LocalAuthentication.framework through the Objective-C
 * runtime; tests pass fakes. Declared here, structurally, so that importing the package root
 * never reaches the platform module.
 *
 * Contract of an implementation:
 * - Both calls use a fresh `LAContext` each (`[[LAContext alloc] init]`, released afterwards): a
 *   context that was invalidated cannot be used again.
 * - A result of `{ ok: false, code }` is only ever an `NSError` whose domain is `LAErrorDomain`,
 *   with its `code` unchanged; an error from any other domain, or a missing one on failure, is
 *   not an answer: the call throws (or rejects) with `ERR_PLATFORM`.
 * - Any failure of the machinery itself (a class or selector missing, the FFI failing) throws or
 *   rejects with `ERR_PLATFORM`; when the framework or the FFI cannot be loaded at all (not
 *   macOS), with `ERR_UNSUPPORTED_PLATFORM`. Never a made-up `{ ok: … }`.
 */
export interface LocalAuthenticationBindings {
  /**
   * `-[LAContext canEvaluatePolicy:error:]`, synchronous: `{ ok: true }` when it returned `YES`,
   * else the `LAError` code it set.
   */
  canEvaluatePolicy(policy: LocalAuthenticationPolicy): LocalAuthenticationResult;
  /**
   * `-[LAContext evaluatePolicy:localizedReason:reply:]` with `reason` as an `NSString` and, as
   * `reply:`, an Objective-C block made with the macOS blocks module (`makeBlock`) whose
   * function takes `(BOOL success, NSError *error)`. It:
   * - resolves with `{ ok: true }` when the reply says `success == YES` (and only then), else
   *   with the reply error's code (see the interface's contract about its domain);
   * - keeps the process alive (a ref'd handle) from the call until the reply arrives, so a CLI
   *   waiting for Touch ID does not exit;
   * - disposes the block only after its one reply has run (the reply arrives on a
   *   LocalAuthentication thread; a block called after it was released crashes the process);
   * - when `signal` fires before the reply, calls `-[LAContext invalidate]`, which takes the
   *   sheet down and makes the reply arrive with `LAErrorAppCancel` (-9); it still waits for that
   *   reply before disposing the block, and resolves with it. An already-aborted signal: the
   *   policy is not evaluated at all and the call resolves `{ ok: false, code: -9 }`.
   */
  evaluatePolicy(
    policy: LocalAuthenticationPolicy,
    reason: string,
    options: { signal: AbortSignal },
  ): Promise<LocalAuthenticationResult>;
}

/** Options for {@link localAuthenticationPromptBackend}. */
export interface LocalAuthenticationBackendOptions {
  /**
   * Native bindings (tests pass fakes), or a function that loads them on first use. Default: the
   * macOS bindings (`LAContext` through the platform module's FFI), loaded on first use; off macOS the backend
   * reports `unsupported`.
   */
  bindings?:
    | LocalAuthenticationBindings
    | (() => LocalAuthenticationBindings | Promise<LocalAuthenticationBindings>);
  /**
   * The reason shown in the sheet, which macOS shows after the app's name ("“Secrets” is trying
   * to …"). Default {@link localAuthenticationReason}. Build it from `request.account` and
   * `request.process` (verified); if it shows `request.claims`, label them as what the client
   * says. It is cleaned to one line of at most 300 characters; an empty one gives the default.
   */
  reason?: (request: PromptRequest) => string;
}

/**
 * Why LocalAuthentication cannot prompt: `passcode-not-set` (no login password, so not even the
 * password policy works), `not-interactive` (no one can see a sheet: no GUI session),
 * `unsupported` (not macOS, or no native bindings), `error` (anything else).
 */
export type LocalAuthenticationProblem =
  | 'passcode-not-set'
  | 'not-interactive'
  | 'unsupported'
  | 'error';

/** What {@link LocalAuthenticationBackend.diagnose} found. */
export interface LocalAuthenticationDiagnosis {
  readonly available: boolean;
  /** The policy a prompt would evaluate now, when available. */
  readonly policy?: LocalAuthenticationPolicy;
  /** Why not, when not. */
  readonly problem?: LocalAuthenticationProblem;
  /** A sentence for a person: what was found, and what to do about it. */
  readonly detail: string;
}

/** The LocalAuthentication prompt backend: a {@link PromptBackend} with a diagnosis. */
export interface LocalAuthenticationBackend extends PromptBackend {
  /** Always `local-authentication`. */
  readonly id: 'local-authentication';
  /** Asks LocalAuthentication which policy it can evaluate now. Never throws. */
  diagnose(options?: { signal?: AbortSignal }): Promise<LocalAuthenticationDiagnosis>;
}

type Mapping =
  | { readonly name: string; readonly action: 'fallback' }
  | {
      readonly name: string;
      readonly action: 'denied' | 'cancelled' | 'unavailable';
      readonly detail: string;
    };

const TOUCH_ID_SETTINGS = 'System Settings > Touch ID & Password';

/** Every documented `LAError` code: what it means for a prompt that was evaluated. */
const MAPPING: ReadonlyMap<number, Mapping> = new Map<number, Mapping>([
  [
    LA_ERROR.authenticationFailed,
    {
      name: 'LAErrorAuthenticationFailed',
      action: 'denied',
      detail: 'macOS could not verify you (wrong fingerprint or password)',
    },
  ],
  [
    LA_ERROR.userCancel,
    { name: 'LAErrorUserCancel', action: 'cancelled', detail: 'the macOS prompt was cancelled' },
  ],
  [LA_ERROR.userFallback, { name: 'LAErrorUserFallback', action: 'fallback' }],
  [
    LA_ERROR.systemCancel,
    {
      name: 'LAErrorSystemCancel',
      action: 'cancelled',
      detail:
        'macOS took the prompt down (another window came to the front, or the screen locked): try again',
    },
  ],
  [
    LA_ERROR.passcodeNotSet,
    {
      name: 'LAErrorPasscodeNotSet',
      action: 'unavailable',
      detail: `this Mac account has no login password: set one under ${TOUCH_ID_SETTINGS} or Users & Groups`,
    },
  ],
  [LA_ERROR.biometryNotAvailable, { name: 'LAErrorBiometryNotAvailable', action: 'fallback' }],
  [LA_ERROR.biometryNotEnrolled, { name: 'LAErrorBiometryNotEnrolled', action: 'fallback' }],
  [
    LA_ERROR.biometryLockout,
    {
      name: 'LAErrorBiometryLockout',
      action: 'denied',
      detail:
        'Touch ID is locked after too many failed attempts: enter your password once (at the lock screen or in System Settings) to unlock it',
    },
  ],
  [
    LA_ERROR.appCancel,
    {
      name: 'LAErrorAppCancel',
      action: 'cancelled',
      detail: 'the request was cancelled; the macOS prompt was taken down with it',
    },
  ],
  [
    LA_ERROR.invalidContext,
    {
      name: 'LAErrorInvalidContext',
      action: 'unavailable',
      detail: 'the LocalAuthentication context was already invalidated: try again',
    },
  ],
  [LA_ERROR.watchNotAvailable, { name: 'LAErrorWatchNotAvailable', action: 'fallback' }],
  [LA_ERROR.biometryNotPaired, { name: 'LAErrorBiometryNotPaired', action: 'fallback' }],
  [LA_ERROR.biometryDisconnected, { name: 'LAErrorBiometryDisconnected', action: 'fallback' }],
  [
    LA_ERROR.invalidDimensions,
    {
      name: 'LAErrorInvalidDimensions',
      action: 'unavailable',
      detail:
        'LocalAuthentication refused the prompt (LAErrorInvalidDimensions): report this to the app’s developers',
    },
  ],
  [
    LA_ERROR.notInteractive,
    {
      name: 'LAErrorNotInteractive',
      action: 'unavailable',
      detail:
        'macOS cannot show a prompt here (no one is logged in at the screen, or the app runs without a GUI session): run the app in your logged-in desktop session',
    },
  ],
]);

/** Detail when the password policy itself reports that biometry is missing (it should not). */
const FALLBACK_FAILED =
  'macOS can neither use Touch ID or an Apple Watch nor ask for your password here';

const CANCELLED_BEFORE: PromptOutcome = Object.freeze({
  result: 'cancelled',
  detail: 'the request was cancelled before macOS was asked',
});
const CANCELLED_BY_SIGNAL: PromptOutcome = Object.freeze({
  result: 'cancelled',
  detail: 'the request was cancelled; the macOS prompt was taken down with it',
});

/**
 * Creates the LocalAuthentication prompt backend (id `local-authentication`). Nothing native is
 * loaded until the first `prompt()`, `isAvailable()` or `diagnose()`.
 *
 * @throws `ERR_INVALID_ARGUMENT` for options that are not an object, `bindings` that are neither
 * bindings nor a function, or a `reason` that is not a function. `prompt()` rejects with
 * `ERR_PLATFORM` when LocalAuthentication answers with a code this module does not know or the
 * bindings break, with `ERR_INVALID_ARGUMENT` when `reason(request)` does not return a string.
 *
 * @example
 * ```ts
 * const prompt = localAuthenticationPromptBackend();
 * if (!(await prompt.isAvailable())) console.error((await prompt.diagnose()).detail);
 * const server = createServer({ app: 'secrets-agent', prompt });
 * ```
 */
export function localAuthenticationPromptBackend(
  options: LocalAuthenticationBackendOptions = {},
): LocalAuthenticationBackend {
  return new LocalAuthenticationPromptBackend(options);
}

class LocalAuthenticationPromptBackend implements LocalAuthenticationBackend {
  readonly id = 'local-authentication' as const;
  readonly #reason: (request: PromptRequest) => string;
  /** The bindings, loaded on first use; a failed load is tried again next time. */
  readonly #load: () => Promise<LocalAuthenticationBindings>;

  constructor(options: LocalAuthenticationBackendOptions) {
    if (typeof options !== 'object' || options === null) {
      throw createError(
        'ERR_INVALID_ARGUMENT',
        'localAuthenticationPromptBackend(options) takes an object ({ bindings, reason }).',
      );
    }
    const { bindings, reason } = options;
    if (reason !== undefined && typeof reason !== 'function') {
      throw createError(
        'ERR_INVALID_ARGUMENT',
        'localAuthenticationPromptBackend: reason must be a function (request) => string.',
      );
    }
    this.#reason = reason ?? localAuthenticationReason;
    if (typeof bindings === 'function') {
      this.#load = loadOnce(async () => bindings());
    } else if (bindings === undefined) {
      // Imported on use: the package root loads no platform module. loadDarwinBindings loads
      // once (and tries again after a failure); off macOS it rejects with
      // ERR_UNSUPPORTED_PLATFORM before any native code is loaded.
      this.#load = async () =>
        (await (await import('../platform/darwin/bindings.js')).loadDarwinBindings())
          .localAuthentication;
    } else {
      if (
        typeof bindings !== 'object' ||
        bindings === null ||
        typeof bindings.canEvaluatePolicy !== 'function' ||
        typeof bindings.evaluatePolicy !== 'function'
      ) {
        throw createError(
          'ERR_INVALID_ARGUMENT',
          'localAuthenticationPromptBackend: bindings must have canEvaluatePolicy and evaluatePolicy, or be a function that loads them.',
        );
      }
      this.#load = () => Promise.resolve(bindings);
    }
  }

  isAvailable(options: { signal?: AbortSignal } = {}): Promise<boolean> {
    return availableFrom(() => this.diagnose(options), debug);
  }

  async diagnose(options: { signal?: AbortSignal } = {}): Promise<LocalAuthenticationDiagnosis> {
    if (options?.signal?.aborted) {
      return { available: false, problem: 'error', detail: 'the check was aborted' };
    }
    try {
      const choice = this.#choose(await untilAborted(this.#load(), options?.signal));
      if ('outcome' in choice) {
        const { outcome } = choice;
        const detail = 'detail' in outcome ? (outcome.detail ?? '') : '';
        return { available: false, problem: problemFor(choice.code), detail };
      }
      return {
        available: true,
        policy: choice.policy,
        detail:
          choice.policy === LA_POLICY.deviceOwnerAuthenticationWithBiometricsOrWatch
            ? 'macOS can verify you with Touch ID or your Apple Watch'
            : `macOS will ask for your login password (Touch ID and Apple Watch are not available: set them up under ${TOUCH_ID_SETTINGS})`,
      };
    } catch (error) {
      if (error === ABORTED) {
        return { available: false, problem: 'error', detail: 'the check was aborted' };
      }
      if (isUnsupported(error)) {
        return { available: false, problem: 'unsupported', detail: UNSUPPORTED };
      }
      return {
        available: false,
        problem: 'error',
        detail: `LocalAuthentication's availability check failed: ${errorMessage(error)}`,
      };
    }
  }

  async prompt(request: PromptRequest, options: PromptOptions): Promise<PromptOutcome> {
    const signal = options?.signal;
    if (signal?.aborted) return CANCELLED_BEFORE;
    const reason = this.#reasonFor(request);

    let bindings: LocalAuthenticationBindings;
    try {
      bindings = await untilAborted(this.#load(), signal);
    } catch (error) {
      if (error === ABORTED) return CANCELLED_BEFORE;
      if (isUnsupported(error)) return { result: 'unavailable', detail: UNSUPPORTED };
      throw failure(error);
    }
    if (signal?.aborted) return CANCELLED_BEFORE;

    // Availability first: a sheet that cannot verify anyone is not shown at all.
    let choice: Choice;
    try {
      choice = this.#choose(bindings);
    } catch (error) {
      // LocalAuthentication.framework or the Objective-C runtime could not be bound.
      if (isUnsupported(error)) return { result: 'unavailable', detail: UNSUPPORTED };
      throw failure(error);
    }
    if ('outcome' in choice) return choice.outcome;

    let policy = choice.policy;
    for (;;) {
      debug('evaluating policy %d', policy);
      const pending = bindings.evaluatePolicy(policy, reason, { signal: signal ?? neverAborted() });
      // After an abort the reply (LAErrorAppCancel) has no one waiting for it.
      pending.catch((error: unknown) => debug('evaluation failed after the abort: %O', error));
      let result: LocalAuthenticationResult;
      try {
        result = await untilAborted(pending, signal);
      } catch (error) {
        if (error === ABORTED || signal?.aborted) return CANCELLED_BY_SIGNAL;
        throw failure(error);
      }
      // Once the signal fired nothing is granted, whatever came back.
      if (signal?.aborted) return CANCELLED_BY_SIGNAL;
      if (isSuccess(result)) return { result: 'granted' };
      const code = codeOf(result);
      const mapping = MAPPING.get(code);
      if (mapping === undefined) throw unknownCode(code, 'evaluatePolicy');
      debug('policy %d answered %s', policy, mapping.name);
      if (mapping.action === 'fallback') {
        if (policy === LA_POLICY.deviceOwnerAuthenticationWithBiometricsOrWatch) {
          // Biometry went away, or the person chose "Use Password…": ask for the password.
          policy = LA_POLICY.deviceOwnerAuthentication;
          continue;
        }
        return code === LA_ERROR.userFallback
          ? { result: 'cancelled', detail: 'the macOS prompt was cancelled' }
          : { result: 'unavailable', detail: `${FALLBACK_FAILED} (${mapping.name})` };
      }
      return { result: mapping.action, detail: mapping.detail };
    }
  }

  /** The policy to evaluate, or why none can be. Throws for an unknown code. */
  #choose(bindings: LocalAuthenticationBindings): Choice {
    const preferred = LA_POLICY.deviceOwnerAuthenticationWithBiometricsOrWatch;
    const first = checked(bindings.canEvaluatePolicy(preferred));
    if (isSuccess(first)) return { policy: preferred };
    const firstMapping = MAPPING.get(codeOf(first));
    if (firstMapping === undefined) throw unknownCode(codeOf(first), 'canEvaluatePolicy');
    // Lockout too: the password unlocks Touch ID, which is what the password policy asks for.
    const biometryMissing =
      firstMapping.action === 'fallback' || codeOf(first) === LA_ERROR.biometryLockout;
    if (!biometryMissing) return { code: codeOf(first), outcome: preCheckOutcome(firstMapping) };
    debug('biometric policy unavailable (%s): falling back to the password', firstMapping.name);
    const fallback = LA_POLICY.deviceOwnerAuthentication;
    const second = checked(bindings.canEvaluatePolicy(fallback));
    if (isSuccess(second)) return { policy: fallback };
    const secondMapping = MAPPING.get(codeOf(second));
    if (secondMapping === undefined) throw unknownCode(codeOf(second), 'canEvaluatePolicy');
    return { code: codeOf(second), outcome: preCheckOutcome(secondMapping) };
  }

  #reasonFor(request: PromptRequest): string {
    const text = customPromptText(
      this.#reason(request),
      MAX_REASON_LENGTH,
      'localAuthenticationPromptBackend: reason(request)',
    );
    return text || localAuthenticationReason(request);
  }
}

type Choice =
  | { readonly policy: LocalAuthenticationPolicy }
  | { readonly code: number; readonly outcome: PromptOutcome };

const UNSUPPORTED =
  'LocalAuthentication needs macOS 10.15 or later and the macOS native bindings, which could not be loaded';

/**
 * The default reason: which process wants which account, from verified data only, and whether
 * approving unlocks the app. macOS shows it after the app's name ("“Secrets” is trying to …"),
 * so it starts with a verb. One line, at most 300 characters.
 *
 * @example
 * ```ts
 * localAuthenticationReason({
 *   account: { id: 'work', displayName: 'Work' },
 *   process: { host: 'Terminal', program: 'node' },
 *   unlocks: false,
 * });
 * // 'allow node in Terminal to use “Work”'
 * ```
 */
export function localAuthenticationReason(
  request: Pick<PromptRequest, 'account' | 'process' | 'unlocks'>,
): string {
  const account = cleanPromptText(request.account?.displayName ?? '', 100) || 'an account';
  // 60 + 60 + 100 for the account: the whole stays under 300, so the end is never cut off.
  let text = `allow ${processForPrompt(request.process, 60) || 'a process'} to use “${account}”`;
  if (request.unlocks) text += ' (this also unlocks the app)';
  return cleanPromptText(text, MAX_REASON_LENGTH);
}

/** A canEvaluatePolicy outcome for a code that does not lead to the password policy. */
function preCheckOutcome(mapping: Mapping): PromptOutcome {
  if (mapping.action === 'unavailable') return { result: 'unavailable', detail: mapping.detail };
  return { result: 'unavailable', detail: `${FALLBACK_FAILED} (${mapping.name})` };
}

function problemFor(code: number): LocalAuthenticationProblem {
  if (code === LA_ERROR.passcodeNotSet) return 'passcode-not-set';
  if (code === LA_ERROR.notInteractive) return 'not-interactive';
  return 'error';
}

/** The result, after checking that it is one (a binding that returns junk is broken). */
function checked(result: LocalAuthenticationResult): LocalAuthenticationResult {
  if (isSuccess(result)) return result;
  codeOf(result);
  return result;
}

function isSuccess(result: unknown): boolean {
  if (typeof result !== 'object' || result === null) {
    throw createError(
      'ERR_PLATFORM',
      `LocalAuthentication bindings gave no result (${String(result)}); access is refused.`,
    );
  }
  return (result as { ok?: unknown }).ok === true;
}

function codeOf(result: LocalAuthenticationResult): number {
  const code = (result as { ok?: unknown; code?: unknown }).code;
  if (
    (result as { ok?: unknown }).ok !== false ||
    typeof code !== 'number' ||
    !Number.isInteger(code)
  ) {
    throw createError(
      'ERR_PLATFORM',
      `LocalAuthentication bindings gave a malformed result (${safeJson(result)}); access is refused.`,
    );
  }
  return code;
}

function unknownCode(code: number, call: string): BridgekeeperError {
  return createError(
    'ERR_PLATFORM',
    `LocalAuthentication's ${call} failed with an unknown LAError code ${code}; access is refused.`,
  );
}

function isUnsupported(error: unknown): boolean {
  return error instanceof BridgekeeperError && error.code === 'ERR_UNSUPPORTED_PLATFORM';
}

function failure(error: unknown): BridgekeeperError {
  if (error instanceof BridgekeeperError) return error;
  return createError('ERR_PLATFORM', `LocalAuthentication failed: ${errorMessage(error)}`, {
    cause: error,
  });
}

/** A signal that never fires, for bindings that always want one. */
function neverAborted(): AbortSignal {
  return new AbortController().signal;
}

function safeJson(value: unknown): string {
  try {
    return JSON.stringify(value) ?? String(value);
  } catch {
    return String(value);
  }
}
