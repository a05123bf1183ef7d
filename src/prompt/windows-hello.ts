/**
 * The Windows prompt backend: Windows Hello (face, fingerprint or PIN) through WinRT's
 * `UserConsentVerifier`, owned by the app's window through
 * `IUserConsentVerifierInterop::RequestVerificationForWindowAsync` so that the dialog comes to
 * the front (called without an owner, it tends to open behind other windows).
 *
 * Windows Hello says only whether the person at the keyboard is the signed-in user; what they
 * are agreeing to is the message, so it names the account and the process from verified data
 * ("node.exe in Windows Terminal wants to use “Work”"), never what the client says about itself.
 *
 * How the answers map to outcomes (each `detail` says what to do):
 * - `verified` → `granted`;
 * - `canceled` → `cancelled`;
 * - `device-not-present`, `not-configured-for-user`, `disabled-by-policy` → `unavailable`;
 * - `device-busy` → `unavailable`: nobody refused anything, so it must not count as a denial
 *   (which would start the denial cool-down); the person can simply try again;
 * - `retries-exhausted` → `denied`: the challenge was failed, which is what a denial is, and the
 *   cool-down then slows further guessing;
 * - WinRT or the class missing (`0x80040154`, as under Wine and on Server Core) → `unavailable`;
 * - any other error, or an answer this module does not know → rejects (`ERR_PLATFORM`), which
 *   the authorizer turns into a refusal: fail closed.
 *
 * Availability is checked before each prompt. Aborting the signal cancels the WinRT operation
 * and settles at once with `cancelled`; an answer that arrives after the abort is ignored. The
 * backend never starts another program (a shell-out's exit code is not consent: under Wine
 * `powershell.exe` is a stub that exits 0).
 *
 * @module
 */

import { BridgekeeperError, createError, errorMessage } from '../errors.js';
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

const debug = createLog('bridgekeeper:windows-hello');

/** `REGDB_E_CLASSNOTREG` (`HRESULTS.classNotRegistered` in the Windows bindings). */
const CLASS_NOT_REGISTERED = 0x80040154;

/** Default bound for the availability check, in `isAvailable()`, `diagnose()` and `prompt()`. */
export const DEFAULT_WINDOWS_HELLO_TIMEOUT_MS = 2_000;

/** Longest message shown in the dialog. */
const MAX_MESSAGE_LENGTH = 300;

/** `UserConsentVerifierAvailability`, as the Windows bindings report it. */
export type WindowsHelloAvailability =
  | 'available'
  | 'device-not-present'
  | 'not-configured-for-user'
  | 'disabled-by-policy'
  | 'device-busy';

/** `UserConsentVerificationResult`, as the Windows bindings report it. */
export type WindowsHelloResult =
  | 'verified'
  | 'device-not-present'
  | 'not-configured-for-user'
  | 'disabled-by-policy'
  | 'device-busy'
  | 'retries-exhausted'
  | 'canceled';

/**
 * The part of the Windows bindings (`Win32Bindings` from the Windows platform module) this
 * backend uses. Declared here, structurally, so that importing the package root never reaches
 * the platform module.
 */
export interface WindowsHelloBindings {
  readonly userConsent: {
    checkAvailability(options?: { signal?: AbortSignal }): Promise<WindowsHelloAvailability>;
    requestVerification(
      window: bigint,
      message: string,
      options?: { signal?: AbortSignal },
    ): Promise<WindowsHelloResult>;
  };
}

/**
 * The window that owns the dialog: an `HWND` as a bigint, or the Buffer Electron's
 * `BrowserWindow.getNativeWindowHandle()` returns, or a function giving either (for apps whose
 * window is created later or re-created). `0n` or `undefined`: no owner window.
 */
export type WindowsHelloWindow = bigint | Buffer | (() => bigint | Buffer | undefined);

/** Options for {@link windowsHelloPromptBackend}. */
export interface WindowsHelloBackendOptions {
  /**
   * The app's window, so the dialog opens in front of it. Without one the dialog has no owner and
   * may open behind other windows.
   */
  window?: WindowsHelloWindow;
  /** Native bindings (tests pass fakes). Default: loaded on first use. */
  bindings?: WindowsHelloBindings;
  /**
   * The text of the dialog. Default {@link windowsHelloMessage}. Build it from `request.account`
   * and `request.process` (verified); if it shows `request.claims`, label them as what the
   * client says. It is cleaned to one line of at most 300 characters.
   */
  message?: (request: PromptRequest) => string;
  /** Bound for each availability check, in ms. Default 2 000. */
  timeoutMs?: number;
}

/**
 * Why Windows Hello cannot prompt: the four `UserConsentVerifierAvailability` refusals,
 * `winrt-missing` (the WinRT class is not registered), `unsupported` (not Windows, or the native
 * bindings did not load), `timeout`, `error`.
 */
export type WindowsHelloProblem =
  | 'device-not-present'
  | 'not-configured-for-user'
  | 'disabled-by-policy'
  | 'device-busy'
  | 'winrt-missing'
  | 'unsupported'
  | 'timeout'
  | 'error';

/** What {@link WindowsHelloBackend.diagnose} found. */
export interface WindowsHelloDiagnosis {
  readonly available: boolean;
  /** Why not, when not. */
  readonly problem?: WindowsHelloProblem;
  /** A sentence for a person: what was found, and what to do about it. */
  readonly detail: string;
}

/** The Windows Hello prompt backend: a {@link PromptBackend} with a diagnosis. */
export interface WindowsHelloBackend extends PromptBackend {
  /** Always `windows-hello`. */
  readonly id: 'windows-hello';
  /** Asks WinRT whether Windows Hello can verify the user now. Never throws. */
  diagnose(options?: { signal?: AbortSignal }): Promise<WindowsHelloDiagnosis>;
}

/** Details for a person, per availability refusal. */
const UNAVAILABLE_DETAIL: Readonly<Record<Exclude<WindowsHelloProblem, 'error'>, string>> = {
  'device-not-present':
    'this PC has no Windows Hello sign-in method (face, fingerprint or PIN): set one up under Settings > Accounts > Sign-in options',
  'not-configured-for-user':
    'Windows Hello is not set up for your account: set up a PIN, face or fingerprint under Settings > Accounts > Sign-in options',
  'disabled-by-policy':
    'Windows Hello is turned off by a policy on this PC: ask your administrator to allow it',
  'device-busy':
    'the Windows Hello device is busy with another prompt: finish or close that prompt, then try again',
  'winrt-missing':
    'Windows Hello is not available on this system (WinRT UserConsentVerifier missing)',
  unsupported: 'Windows Hello needs Windows and its native bindings',
  timeout: 'Windows Hello did not answer in time',
};

const CANCELLED_BEFORE: PromptOutcome = Object.freeze({
  result: 'cancelled',
  detail: 'the request was cancelled before Windows Hello was asked',
});
const CANCELLED_BY_SIGNAL: PromptOutcome = Object.freeze({
  result: 'cancelled',
  detail: 'the request was cancelled; the Windows Hello prompt was cancelled with it',
});

/**
 * Creates the Windows Hello prompt backend (id `windows-hello`). Nothing native is loaded until
 * the first `prompt()`, `isAvailable()` or `diagnose()`.
 *
 * @throws `ERR_INVALID_ARGUMENT` for a window that is not an HWND (a bigint, a 4- or 8-byte
 * Buffer, or a function giving one), a `message` that is not a function, or a bad `timeoutMs`.
 * `prompt()` rejects with `ERR_PLATFORM` when WinRT fails, with `ERR_INVALID_ARGUMENT` when the
 * window function or `message` gives something unusable.
 *
 * @example
 * ```ts
 * import { BrowserWindow } from 'electron';
 * const win = new BrowserWindow();
 * const prompt = windowsHelloPromptBackend({ window: () => win.getNativeWindowHandle() });
 * if (!(await prompt.isAvailable())) console.error((await prompt.diagnose()).detail);
 * const server = createServer({ app: 'secrets-agent', prompt });
 * ```
 */
export function windowsHelloPromptBackend(
  options: WindowsHelloBackendOptions = {},
): WindowsHelloBackend {
  return new WindowsHelloPromptBackend(options);
}

class WindowsHelloPromptBackend implements WindowsHelloBackend {
  readonly id = 'windows-hello' as const;
  readonly #window: WindowsHelloWindow | undefined;
  readonly #message: (request: PromptRequest) => string;
  readonly #timeoutMs: number;
  /** The bindings, loaded on first use; a failed load is tried again next time. */
  readonly #load: () => Promise<WindowsHelloBindings>;

  constructor(options: WindowsHelloBackendOptions) {
    if (typeof options !== 'object' || options === null) {
      throw createError(
        'ERR_INVALID_ARGUMENT',
        'windowsHelloPromptBackend(options) takes an object ({ window, message }).',
      );
    }
    const window = options.window;
    if (window !== undefined && typeof window !== 'function') toHwnd(window);
    this.#window = window;
    if (options.message !== undefined && typeof options.message !== 'function') {
      throw createError(
        'ERR_INVALID_ARGUMENT',
        'windowsHelloPromptBackend: message must be a function (request) => string.',
      );
    }
    this.#message = options.message ?? windowsHelloMessage;
    const timeoutMs = options.timeoutMs ?? DEFAULT_WINDOWS_HELLO_TIMEOUT_MS;
    if (typeof timeoutMs !== 'number' || !Number.isFinite(timeoutMs) || timeoutMs <= 0) {
      throw createError(
        'ERR_INVALID_ARGUMENT',
        `windowsHelloPromptBackend: timeoutMs must be a positive number of milliseconds (got ${String(timeoutMs)}).`,
      );
    }
    this.#timeoutMs = timeoutMs;
    const { bindings } = options;
    this.#load =
      bindings !== undefined
        ? () => Promise.resolve(bindings)
        : // loadWin32Bindings loads once (and tries again after a failure).
          async () => (await import('../platform/win32/bindings.js')).loadWin32Bindings();
  }

  isAvailable(options: { signal?: AbortSignal } = {}): Promise<boolean> {
    return availableFrom(() => this.diagnose(options), debug);
  }

  async diagnose(options: { signal?: AbortSignal } = {}): Promise<WindowsHelloDiagnosis> {
    const outer = options?.signal;
    if (outer?.aborted)
      return { available: false, problem: 'error', detail: 'the check was aborted' };
    const signal = this.#bounded(outer);
    try {
      const bindings = await untilAborted(this.#load(), signal);
      const availability = await untilAborted(
        bindings.userConsent.checkAvailability({ signal }),
        signal,
      );
      if (availability === 'available') {
        return { available: true, detail: 'Windows Hello can verify you on this PC' };
      }
      const problem = availabilityProblem(availability);
      return { available: false, problem, detail: detailFor(problem, availability) };
    } catch (error) {
      if (error === ABORTED || signal.aborted) {
        const timedOut = outer?.aborted !== true;
        return {
          available: false,
          problem: timedOut ? 'timeout' : 'error',
          detail: timedOut
            ? `Windows Hello did not answer within ${this.#timeoutMs} ms`
            : 'the check was aborted',
        };
      }
      const problem = unavailableProblem(error);
      if (problem !== undefined) {
        return { available: false, problem, detail: UNAVAILABLE_DETAIL[problem] };
      }
      return {
        available: false,
        problem: 'error',
        detail: `Windows Hello's availability check failed: ${errorMessage(error)}`,
      };
    }
  }

  async prompt(request: PromptRequest, options: PromptOptions): Promise<PromptOutcome> {
    const signal = options?.signal;
    if (signal?.aborted) return CANCELLED_BEFORE;
    const message = this.#messageFor(request);
    const window = this.#resolveWindow();

    let bindings: WindowsHelloBindings;
    try {
      bindings = await untilAborted(this.#load(), signal);
    } catch (error) {
      if (error === ABORTED) return CANCELLED_BEFORE;
      const problem = unavailableProblem(error);
      if (problem !== undefined)
        return { result: 'unavailable', detail: UNAVAILABLE_DETAIL[problem] };
      throw failure(error);
    }

    // Availability first: a dialog that cannot verify anyone is not shown at all.
    const checkSignal = this.#bounded(signal);
    let availability: WindowsHelloAvailability;
    try {
      availability = await untilAborted(
        bindings.userConsent.checkAvailability({ signal: checkSignal }),
        checkSignal,
      );
    } catch (error) {
      if (signal?.aborted) return CANCELLED_BEFORE;
      if (error === ABORTED || checkSignal.aborted) {
        return { result: 'unavailable', detail: UNAVAILABLE_DETAIL.timeout };
      }
      const problem = unavailableProblem(error);
      if (problem !== undefined)
        return { result: 'unavailable', detail: UNAVAILABLE_DETAIL[problem] };
      throw failure(error);
    }
    if (signal?.aborted) return CANCELLED_BEFORE;
    if (availability !== 'available') {
      const problem = availabilityProblem(availability);
      debug('unavailable: %s', availability);
      return { result: 'unavailable', detail: detailFor(problem, availability) };
    }

    debug('asking Windows Hello (owner window %s)', window === 0n ? 'none' : 'set');
    const pending = bindings.userConsent.requestVerification(
      window,
      message,
      signal ? { signal } : {},
    );
    // After an abort the operation's rejection (ERR_ABORTED) has no one waiting for it.
    pending.catch((error: unknown) => debug('verification settled after the abort: %O', error));
    let result: WindowsHelloResult;
    try {
      result = await untilAborted(pending, signal);
    } catch (error) {
      if (error === ABORTED || signal?.aborted) return CANCELLED_BY_SIGNAL;
      const problem = unavailableProblem(error);
      if (problem !== undefined)
        return { result: 'unavailable', detail: UNAVAILABLE_DETAIL[problem] };
      throw failure(error);
    }
    // Once the signal fired nothing is granted, whatever came back.
    if (signal?.aborted) return CANCELLED_BY_SIGNAL;
    const outcome = outcomeFor(result);
    debug('Windows Hello answered %s: %s', String(result), outcome.result);
    return outcome;
  }

  #bounded(signal: AbortSignal | undefined): AbortSignal {
    const timeout = AbortSignal.timeout(this.#timeoutMs);
    return signal ? AbortSignal.any([signal, timeout]) : timeout;
  }

  #messageFor(request: PromptRequest): string {
    const text = customPromptText(
      this.#message(request),
      MAX_MESSAGE_LENGTH,
      'windowsHelloPromptBackend: message(request)',
    );
    return text || windowsHelloMessage(request);
  }

  #resolveWindow(): bigint {
    const window = typeof this.#window === 'function' ? this.#window() : this.#window;
    return window === undefined ? 0n : toHwnd(window);
  }
}

/**
 * The default dialog text: which process wants which account, from verified data only, and
 * whether approving unlocks the app. One line, at most 300 characters.
 *
 * @example
 * ```ts
 * windowsHelloMessage({
 *   account: { id: 'work', displayName: 'Work' },
 *   process: { host: 'Windows Terminal', program: 'node.exe' },
 *   claims: { name: 'deploy' },
 *   sessionId: 'proc:…',
 *   unlocks: false,
 * });
 * // 'node.exe in Windows Terminal wants to use “Work”.'
 * ```
 */
export function windowsHelloMessage(
  request: Pick<PromptRequest, 'account' | 'process' | 'unlocks'>,
): string {
  const account = cleanPromptText(request.account?.displayName ?? '', 100) || 'an account';
  let text = `${processForPrompt(request.process, 100) || 'A process'} wants to use “${account}”.`;
  if (request.unlocks) text += ' Approving also unlocks the app.';
  return cleanPromptText(text, MAX_MESSAGE_LENGTH);
}

/** An HWND from a bigint or Electron's native window handle Buffer. */
function toHwnd(window: bigint | Buffer): bigint {
  if (typeof window === 'bigint') {
    if (window >= 0n && window <= 0xffff_ffff_ffff_ffffn) return window;
  } else if (Buffer.isBuffer(window)) {
    if (window.length === 8) return window.readBigUInt64LE(0);
    if (window.length === 4) return BigInt(window.readUInt32LE(0));
  }
  throw createError(
    'ERR_INVALID_ARGUMENT',
    'windowsHelloPromptBackend: window must be an HWND (a bigint) or the Buffer from BrowserWindow.getNativeWindowHandle().',
  );
}

function availabilityProblem(
  availability: string,
): Exclude<WindowsHelloProblem, 'error'> | 'error' {
  switch (availability) {
    case 'device-not-present':
    case 'not-configured-for-user':
    case 'disabled-by-policy':
    case 'device-busy':
      return availability;
    default:
      return 'error';
  }
}

function detailFor(problem: WindowsHelloProblem, availability: string): string {
  return problem === 'error'
    ? `Windows Hello reported an unknown availability (${JSON.stringify(availability)})`
    : UNAVAILABLE_DETAIL[problem];
}

function outcomeFor(result: WindowsHelloResult): PromptOutcome {
  switch (result) {
    case 'verified':
      return { result: 'granted' };
    case 'canceled':
      return { result: 'cancelled', detail: 'the Windows Hello prompt was cancelled' };
    case 'device-not-present':
    case 'not-configured-for-user':
    case 'disabled-by-policy':
    case 'device-busy':
      return { result: 'unavailable', detail: UNAVAILABLE_DETAIL[result] };
    case 'retries-exhausted':
      return {
        result: 'denied',
        detail: 'Windows Hello could not verify you: too many failed attempts',
      };
    default:
      // Fail closed on an answer we do not know.
      throw createError(
        'ERR_PLATFORM',
        `Windows Hello gave an unknown answer (${JSON.stringify(result)}); access is refused.`,
      );
  }
}

/** The problem an error means when it means "cannot ask here", else `undefined`. */
function unavailableProblem(error: unknown): 'winrt-missing' | 'unsupported' | undefined {
  const winerror = (error as { winerror?: unknown } | undefined)?.winerror;
  if (typeof winerror === 'number' && winerror >>> 0 === CLASS_NOT_REGISTERED) {
    return 'winrt-missing';
  }
  if (error instanceof BridgekeeperError && error.code === 'ERR_UNSUPPORTED_PLATFORM') {
    return 'unsupported';
  }
  return undefined;
}

function failure(error: unknown): BridgekeeperError {
  if (error instanceof BridgekeeperError) return error;
  return createError('ERR_PLATFORM', `Windows Hello failed: ${errorMessage(error)}`, {
    cause: error,
  });
}
