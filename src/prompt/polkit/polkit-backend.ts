/**
 * The Linux prompt backend: asks polkit whether the peer process may use the account, and
 * polkit's authentication agent asks the person (password or fingerprint).
 *
 * The subject is the peer process as the kernel identified it (pid, start time and uid — pid
 * alone can be reused; polkit CVE-2013-4288, CVE-2019-6133). The account's display name and the
 * process description travel as polkit details, which fill in `$(account)` and `$(process)` in
 * the action's message; polkit accepts them only from root and from the action's owners (the
 * `org.freedesktop.policykit.owner` annotation that {@link polkitActionFile} writes).
 *
 * How polkit's answers map to outcomes:
 * - authorized → `granted`;
 * - not authorized, dismissed by the person → `cancelled`;
 * - not authorized, challenge (no authentication agent took it) → `unavailable`;
 * - not authorized → `denied`;
 * - `org.freedesktop.PolicyKit1.Error.Cancelled` → `cancelled`;
 * - no system bus, no polkitd, or the action not installed → `unavailable`, saying what to install;
 * - any other D-Bus or polkitd error — including polkitd dying mid-check and a process that
 *   "has been replaced" (wrong start time) — rejects, which the authorizer turns into
 *   `ERR_PROMPT_FAILED`: fail closed (polkit CVE-2021-3560 failed open there).
 *
 * @module
 */

import { userInfo } from 'node:os';
import { BridgekeeperError, createError } from '../../errors.js';
import { createLog } from '../../util/log.js';
import type {
  ClientClaims,
  ProcessDescription,
  PromptBackend,
  PromptOptions,
  PromptOutcome,
  PromptRequest,
} from '../prompt-backend.js';
import { availableFrom, cleanPromptText, processForPrompt } from '../prompt-text.js';
import { isValidPolkitActionId, polkitActionFilePath } from './action-file.js';
import {
  ALLOW_USER_INTERACTION,
  DEFAULT_SYSTEM_BUS_ADDRESS,
  dbusPolkitBinding,
  type PolkitAuthority,
  type PolkitBinding,
  PolkitBusError,
  type PolkitCheckResult,
  type PolkitSubject,
} from './dbus-binding.js';

const debug = createLog('bridgekeeper:polkit');

/** Default bound for connecting to the system bus, and for `isAvailable()` / `diagnose()`. */
export const DEFAULT_POLKIT_TIMEOUT_MS = 2_000;

/**
 * Default time to wait, after the signal fired and the check was cancelled, for polkit to
 * confirm that the dialog is down (its reply to the cancelled check: ~1–3 ms measured here).
 */
export const DEFAULT_POLKIT_CANCEL_GRACE_MS = 800;

/** Longest detail value sent to polkit; dialogs wrap or cut long lines anyway. */
const MAX_DETAIL_LENGTH = 200;

const POLKIT_ERROR = 'org.freedesktop.PolicyKit1.Error';
const NO_OWNER_ERRORS: ReadonlySet<string> = new Set([
  'org.freedesktop.DBus.Error.ServiceUnknown',
  'org.freedesktop.DBus.Error.NameHasNoOwner',
]);

/** Options for {@link createPolkitBackend}. */
export interface PolkitBackendOptions {
  /**
   * The app's polkit action id, e.g. `com.example.secrets-agent.use-account`. Its action file
   * must be installed as `/usr/share/polkit-1/actions/<actionId>.policy`
   * ({@link polkitActionFile} writes it).
   */
  actionId: string;
  /**
   * D-Bus address of the system bus. Default: `DBUS_SYSTEM_BUS_ADDRESS`, else
   * `unix:path=/run/dbus/system_bus_socket`. polkit's password helper always uses the default
   * path, so prompts that need a password only work on the bus at that path.
   */
  busAddress?: string;
  /**
   * Send the account's display name and the process description as polkit details (for
   * `$(account)` and `$(process)` in the message). Default true. When polkit refuses them (the
   * app's user is not an owner of the action), the backend asks again without them and logs why.
   */
  details?: boolean;
  /**
   * Also send what the client claims about itself (its name, its reason), in a detail labelled
   * as unverified. Default false: only data the server verified is shown.
   */
  includeClientClaims?: boolean;
  /** Bound for connecting to the system bus, and for `isAvailable()` / `diagnose()`, in ms. Default 2 000. */
  timeoutMs?: number;
  /** How long to wait for polkit to take the dialog down after the signal fired, in ms. Default 800. */
  cancelGraceMs?: number;
}

/** What {@link createPolkitBackend} takes besides its options: the D-Bus binding (tests pass a fake). */
export interface PolkitBackendDependencies {
  /** Default: the real binding, which loads the D-Bus client on first use. */
  binding?: PolkitBinding;
}

/**
 * Why polkit cannot prompt: `bus-unreachable` — no system bus; `polkitd-unavailable` — nothing
 * owns `org.freedesktop.PolicyKit1`; `action-missing` — the app's action file is not installed;
 * `timeout` — no answer in time; `error` — something else failed (see `detail`).
 */
export type PolkitProblem =
  | 'bus-unreachable'
  | 'polkitd-unavailable'
  | 'action-missing'
  | 'timeout'
  | 'error';

/** What {@link PolkitBackend.diagnose} found. */
export interface PolkitDiagnosis {
  /** True when the bus answers, polkitd answers, and the action is installed. */
  readonly available: boolean;
  /** Why not, when not. */
  readonly problem?: PolkitProblem;
  /** A sentence for a person: what was found, and what to do about it. */
  readonly detail: string;
  readonly busAddress: string;
  readonly actionId: string;
  /** The installed action's `org.freedesktop.policykit.owner` annotation, if it has one. */
  readonly owner?: string;
  /**
   * Whether polkit will take details from this process: it runs as root or as one of the
   * action's owners. When false, the dialog shows `$(account)` and `$(process)` unfilled.
   */
  readonly detailsAllowed?: boolean;
}

/** The polkit prompt backend: a {@link PromptBackend} with a diagnosis and a connection to close. */
export interface PolkitBackend extends PromptBackend {
  /** Always `polkit`. */
  readonly id: 'polkit';
  /** The action id the backend checks. */
  readonly actionId: string;
  /** Where the action file must be installed. */
  readonly actionFilePath: string;
  /**
   * Checks the system bus, polkitd and the installed action, within `timeoutMs`. Never throws;
   * says what is missing in `detail`.
   */
  diagnose(options?: { signal?: AbortSignal }): Promise<PolkitDiagnosis>;
  /** Closes the system bus connection (a later prompt opens a new one). Idempotent. */
  close(): Promise<void>;
  [Symbol.asyncDispose](): Promise<void>;
}

const CANCELLED_BEFORE: PromptOutcome = Object.freeze({
  result: 'cancelled',
  detail: 'the request was cancelled before polkit was asked',
});
const CANCELLED_BY_SIGNAL: PromptOutcome = Object.freeze({
  result: 'cancelled',
  detail: 'the request was cancelled; the polkit check was cancelled with it',
});

/**
 * Creates the polkit prompt backend (id `polkit`).
 *
 * Connecting is lazy: nothing touches D-Bus until the first `prompt()`, `isAvailable()` or
 * `diagnose()`. One system-bus connection is shared by all prompts and reopened if it drops.
 *
 * @throws `ERR_INVALID_ARGUMENT` for an invalid action id or timeout. `prompt()` rejects with
 * `ERR_PEER_UNKNOWN` when the request has no subject pid, start time and uid,
 * `ERR_PEER_CHANGED` when polkit says the process was replaced, and `ERR_PLATFORM` (with the
 * D-Bus error as `cause`) when polkitd or the bus fails mid-check.
 *
 * @example
 * ```ts
 * import { createServer } from 'bridgekeeper';
 * import { createPolkitBackend } from 'bridgekeeper';
 *
 * const prompt = createPolkitBackend({ actionId: 'com.example.secrets-agent.use-account' });
 * if (!(await prompt.isAvailable())) console.error((await prompt.diagnose()).detail);
 * const server = createServer({ app: 'secrets-agent', prompt });
 * ```
 */
export function createPolkitBackend(
  options: PolkitBackendOptions,
  dependencies: PolkitBackendDependencies = {},
): PolkitBackend {
  return new PolkitPromptBackend(options, dependencies);
}

class PolkitPromptBackend implements PolkitBackend {
  readonly id = 'polkit' as const;
  readonly actionId: string;
  readonly actionFilePath: string;
  readonly #binding: PolkitBinding;
  readonly #busAddress: string;
  readonly #sendDetails: boolean;
  readonly #includeClaims: boolean;
  readonly #timeoutMs: number;
  readonly #cancelGraceMs: number;
  #connection: Promise<PolkitAuthority> | undefined;
  /** polkit refused our details once (we are not an owner of the action): stop sending them. */
  #detailsRefused = false;
  #nextCancellationId = 0;

  constructor(options: PolkitBackendOptions, dependencies: PolkitBackendDependencies) {
    if (typeof options !== 'object' || options === null) {
      throw createError(
        'ERR_INVALID_ARGUMENT',
        'createPolkitBackend(options) needs { actionId }: the id of the action file the app installs.',
      );
    }
    if (!isValidPolkitActionId(options.actionId)) {
      throw createError(
        'ERR_INVALID_ARGUMENT',
        `createPolkitBackend: ${JSON.stringify(options.actionId)} is not a polkit action id (lowercase letters, digits, "." and "-", namespaced like "com.example.app.use-account").`,
      );
    }
    this.actionId = options.actionId;
    this.actionFilePath = polkitActionFilePath(options.actionId);
    this.#binding = dependencies.binding ?? dbusPolkitBinding;
    this.#busAddress =
      options.busAddress ?? process.env.DBUS_SYSTEM_BUS_ADDRESS ?? DEFAULT_SYSTEM_BUS_ADDRESS;
    this.#sendDetails = options.details !== false;
    this.#includeClaims = options.includeClientClaims === true;
    this.#timeoutMs = duration(options.timeoutMs, DEFAULT_POLKIT_TIMEOUT_MS, 'timeoutMs');
    this.#cancelGraceMs = duration(
      options.cancelGraceMs,
      DEFAULT_POLKIT_CANCEL_GRACE_MS,
      'cancelGraceMs',
    );
  }

  isAvailable(options?: { signal?: AbortSignal }): Promise<boolean> {
    return availableFrom(() => this.diagnose(options), debug);
  }

  async diagnose(options: { signal?: AbortSignal } = {}): Promise<PolkitDiagnosis> {
    const base = { busAddress: this.#busAddress, actionId: this.actionId };
    const outer = options?.signal;
    if (outer?.aborted) {
      return { ...base, available: false, problem: 'error', detail: 'the check was aborted' };
    }
    const signal = outer
      ? AbortSignal.any([outer, AbortSignal.timeout(this.#timeoutMs)])
      : AbortSignal.timeout(this.#timeoutMs);
    let actions: Awaited<ReturnType<PolkitAuthority['enumerateActions']>>;
    try {
      const authority = await untilAborted(this.#connect(), signal);
      actions = await untilAborted(authority.enumerateActions(''), signal);
    } catch (error) {
      if (error === ABORTED) {
        const timedOut = outer?.aborted !== true;
        return {
          ...base,
          available: false,
          problem: timedOut ? 'timeout' : 'error',
          detail: timedOut
            ? `neither the system bus at ${this.#busAddress} nor polkitd answered within ${this.#timeoutMs} ms`
            : 'the check was aborted',
        };
      }
      const unavailable = this.#unavailableFor(error);
      return {
        ...base,
        available: false,
        problem: unavailable?.problem ?? 'error',
        detail: unavailable?.detail ?? `asking polkit failed: ${message(error)}`,
      };
    }
    const action = actions.find((candidate) => candidate.actionId === this.actionId);
    if (action === undefined) {
      return {
        ...base,
        available: false,
        problem: 'action-missing',
        detail: this.#actionMissingDetail(),
      };
    }
    const owner = action.annotations['org.freedesktop.policykit.owner'];
    const detailsAllowed = mayPassDetails(owner);
    if (!detailsAllowed) {
      debug(
        'action %s does not name this user as its owner: polkit will refuse the details for $(account) and $(process)',
        this.actionId,
      );
    }
    return {
      ...base,
      available: true,
      detail: detailsAllowed
        ? `polkitd answers and the action ${this.actionId} is installed`
        : `polkitd answers and the action ${this.actionId} is installed, but it does not name this user as its owner, so the prompt cannot name the account and the process (regenerate ${this.actionFilePath} with polkitActionFile({ owner }))`,
      ...(owner === undefined ? {} : { owner }),
      detailsAllowed,
    };
  }

  async prompt(request: PromptRequest, options: PromptOptions): Promise<PromptOutcome> {
    const signal = options?.signal;
    if (signal?.aborted) return CANCELLED_BEFORE;
    const subject = toSubject(request?.subject);
    let authority: PolkitAuthority;
    try {
      authority = await untilAborted(this.#connect(), signal);
    } catch (error) {
      if (error === ABORTED) return CANCELLED_BEFORE;
      return this.#outcomeForError(error);
    }
    if (signal?.aborted) return CANCELLED_BEFORE;
    const details = this.#sendDetails && !this.#detailsRefused;
    return this.#check(authority, subject, request, signal, details);
  }

  async close(): Promise<void> {
    const connection = this.#connection;
    this.#connection = undefined;
    if (connection === undefined) return;
    try {
      (await connection).close();
    } catch {
      // It never connected; nothing to close.
    }
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  async #check(
    authority: PolkitAuthority,
    subject: PolkitSubject,
    request: PromptRequest,
    signal: AbortSignal | undefined,
    withDetails: boolean,
  ): Promise<PromptOutcome> {
    const cancellationId = `bridgekeeper-${process.pid}-${++this.#nextCancellationId}`;
    const details = withDetails ? promptDetails(request, this.#includeClaims) : {};
    debug(
      'CheckAuthorization %s for pid %d uid %d (account %s, %s details, id %s)',
      this.actionId,
      subject.pid,
      subject.uid,
      request.account?.id,
      withDetails ? 'with' : 'without',
      cancellationId,
    );
    const settled = authority
      .checkAuthorization(subject, this.actionId, details, ALLOW_USER_INTERACTION, cancellationId)
      .then(
        (result): Settled => ({ ok: true, result }),
        (error: unknown): Settled => ({ ok: false, error }),
      );
    const abort = whenAborted(signal);
    const first = await Promise.race([settled, abort.promise]);
    abort.dispose();

    if (first === ABORTED || signal?.aborted) {
      // Once the signal fired nothing is granted, whatever polkit says.
      debug('signal fired: CancelCheckAuthorization %s', cancellationId);
      authority.cancelCheckAuthorization(cancellationId).catch((error: unknown) => {
        // Usually "no such cancellation id": the check finished as we cancelled it.
        debug('CancelCheckAuthorization %s: %s', cancellationId, message(error));
      });
      // Hold the screen until polkit confirms the dialog is down, but not for long.
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([
        settled,
        new Promise<void>((resolve) => {
          timer = setTimeout(resolve, this.#cancelGraceMs);
        }),
      ]);
      clearTimeout(timer);
      return CANCELLED_BY_SIGNAL;
    }

    if (first.ok) {
      const outcome = outcomeForResult(first.result);
      debug('CheckAuthorization %s answered: %s', cancellationId, outcome.result);
      return outcome;
    }
    if (withDetails && refusedDetails(first.error)) {
      this.#detailsRefused = true;
      debug(
        'polkit refused the details (this user is not an owner of %s); asking without them. Regenerate %s with polkitActionFile({ owner }) so the prompt names the account and process.',
        this.actionId,
        this.actionFilePath,
      );
      if (signal?.aborted) return CANCELLED_BEFORE;
      return this.#check(authority, subject, request, signal, false);
    }
    return this.#outcomeForError(first.error);
  }

  /** Maps an error to a refusal outcome when it means "cannot ask here"; throws otherwise. */
  #outcomeForError(error: unknown): PromptOutcome {
    const unavailable = this.#unavailableFor(error);
    if (unavailable !== undefined) {
      debug('unavailable: %s', unavailable.detail);
      return { result: 'unavailable', detail: unavailable.detail };
    }
    if (error instanceof PolkitBusError && error.dbusName === `${POLKIT_ERROR}.Cancelled`) {
      return { result: 'cancelled', detail: 'polkit cancelled the check' };
    }
    throw failure(error);
  }

  #unavailableFor(error: unknown): { problem: PolkitProblem; detail: string } | undefined {
    if (!(error instanceof PolkitBusError)) return undefined;
    if (error.kind === 'unreachable') {
      return {
        problem: 'bus-unreachable',
        detail: `no D-Bus system bus answers at ${this.#busAddress} (polkit needs dbus and polkitd running)`,
      };
    }
    if (error.kind !== 'reply' || error.dbusName === undefined) return undefined;
    if (NO_OWNER_ERRORS.has(error.dbusName)) {
      return {
        problem: 'polkitd-unavailable',
        detail:
          'polkitd is not running: nothing owns org.freedesktop.PolicyKit1 on the system bus (install and start polkit)',
      };
    }
    if (error.dbusName === `${POLKIT_ERROR}.Failed` && /is not registered/i.test(error.message)) {
      return { problem: 'action-missing', detail: this.#actionMissingDetail() };
    }
    return undefined;
  }

  #actionMissingDetail(): string {
    return `the polkit action ${this.actionId} is not installed: install ${this.actionFilePath} (generate it with polkitActionFile(); see docs/polkit.md)`;
  }

  #connect(): Promise<PolkitAuthority> {
    const current = this.#connection;
    if (current !== undefined) {
      // Reuse a live connection; a lost one is replaced below.
      return current.then((authority) => (authority.closed ? this.#reconnect(current) : authority));
    }
    return this.#reconnect(undefined);
  }

  #reconnect(stale: Promise<PolkitAuthority> | undefined): Promise<PolkitAuthority> {
    if (this.#connection !== stale) return this.#connect();
    const connecting = this.#binding.connect({
      address: this.#busAddress,
      signal: AbortSignal.timeout(this.#timeoutMs),
    });
    this.#connection = connecting;
    connecting.catch(() => {
      // Try again next time instead of remembering the failure.
      if (this.#connection === connecting) this.#connection = undefined;
    });
    return connecting;
  }
}

type Settled = { ok: true; result: PolkitCheckResult } | { ok: false; error: unknown };

const ABORTED = Symbol('aborted');

function whenAborted(signal: AbortSignal | undefined): {
  promise: Promise<typeof ABORTED>;
  dispose(): void;
} {
  if (signal === undefined) return { promise: new Promise(() => {}), dispose() {} };
  if (signal.aborted) return { promise: Promise.resolve(ABORTED), dispose() {} };
  let onAbort: () => void = () => {};
  const promise = new Promise<typeof ABORTED>((resolve) => {
    onAbort = () => resolve(ABORTED);
    signal.addEventListener('abort', onAbort, { once: true });
  });
  return { promise, dispose: () => signal.removeEventListener('abort', onAbort) };
}

/** Resolves like `promise`, or rejects with {@link ABORTED} when `signal` fires first. */
async function untilAborted<T>(promise: Promise<T>, signal: AbortSignal | undefined): Promise<T> {
  const abort = whenAborted(signal);
  try {
    const first = await Promise.race([promise, abort.promise]);
    if (first === ABORTED) throw ABORTED;
    return first as T;
  } finally {
    abort.dispose();
  }
}

function outcomeForResult(result: PolkitCheckResult): PromptOutcome {
  if (result.isAuthorized) return { result: 'granted' };
  const dismissed = result.details['polkit.dismissed'];
  if (dismissed !== undefined && dismissed !== '' && dismissed !== 'false') {
    return { result: 'cancelled', detail: 'the authentication dialog was dismissed' };
  }
  if (result.isChallenge) {
    return {
      result: 'unavailable',
      detail:
        'no polkit authentication agent is running for this session to ask you (desktops start one; in a terminal, run pkttyagent)',
    };
  }
  return {
    result: 'denied',
    detail: 'polkit refused: authentication failed or a polkit rule said no',
  };
}

function refusedDetails(error: unknown): boolean {
  return (
    error instanceof PolkitBusError &&
    error.dbusName === `${POLKIT_ERROR}.NotAuthorized` &&
    /pass details/i.test(error.message)
  );
}

function failure(error: unknown): BridgekeeperError {
  if (error instanceof BridgekeeperError) return error;
  const text = message(error);
  // polkitd reads /proc/<pid> to check the subject: "has been replaced" for a wrong start time
  // (exec'd or pid reused), a GIO file error on /proc/<pid>/status for a process that exited.
  if (
    error instanceof PolkitBusError &&
    error.kind === 'reply' &&
    /has been replaced|no such process|\/proc\/\d+\//i.test(text)
  ) {
    return createError(
      'ERR_PEER_CHANGED',
      `polkit could not check the calling process: it is no longer the one that connected (${text}).`,
      { cause: error },
    );
  }
  if (
    error instanceof PolkitBusError &&
    error.dbusName === `${POLKIT_ERROR}.NotAuthorized` &&
    /other identities/i.test(text)
  ) {
    return createError(
      'ERR_PLATFORM',
      `polkit refused to check a process of another user: list the app's user as an owner of the action (polkitActionFile({ owner })). (${text})`,
      { cause: error },
    );
  }
  return createError('ERR_PLATFORM', `polkit check failed: ${text}`, { cause: error });
}

function toSubject(subject: PromptRequest['subject'] | undefined): PolkitSubject {
  const pid = subject?.pid;
  const startTime = subject?.startTime;
  const uid = subject?.uid;
  if (
    typeof pid !== 'number' ||
    !Number.isSafeInteger(pid) ||
    pid <= 0 ||
    pid > 0xffff_ffff ||
    typeof startTime !== 'string' ||
    !/^\d{1,20}$/.test(startTime) ||
    typeof uid !== 'number' ||
    !Number.isSafeInteger(uid) ||
    uid < 0 ||
    uid > 0x7fff_ffff
  ) {
    // Without all three polkit would look the process up itself, by pid: racy and forgeable.
    throw createError(
      'ERR_PEER_UNKNOWN',
      "The polkit backend needs the peer process's pid, start time and uid from the kernel; this request has no complete subject.",
    );
  }
  const ticks = BigInt(startTime);
  if (ticks > 0xffff_ffff_ffff_ffffn) {
    throw createError('ERR_PEER_UNKNOWN', 'The peer process start time is out of range.');
  }
  return { pid, startTime: ticks, uid };
}

/**
 * The details the polkit backend sends with a check, which polkit substitutes into the action's
 * message (`$(account)`, `$(process)`). Values are built from verified data and cleaned to one
 * bounded line; the client's claims only appear, labelled as unverified, when asked for. Keys
 * never start with `polkit.` (polkit reserves those; `polkit.message` would replace the message).
 *
 * @example
 * ```ts
 * promptDetails({
 *   account: { id: 'work', displayName: 'Work' },
 *   process: { host: 'GNOME Terminal', program: 'bk-secrets' },
 *   claims: { name: 'deploy' },
 *   unlocks: false,
 * });
 * // { account: 'Work', process: 'bk-secrets in GNOME Terminal' }
 * ```
 */
export function promptDetails(
  request: Pick<PromptRequest, 'account' | 'process' | 'claims' | 'unlocks'>,
  includeClientClaims = false,
): Record<string, string> {
  const details: Record<string, string> = {
    account: clean(request.account?.displayName ?? '') || 'an account',
    process: describeProcess(request.process),
  };
  if (request.unlocks) details.unlocks = 'approving also unlocks the app';
  if (includeClientClaims) {
    const claims = describeClaims(request.claims);
    if (claims !== undefined) details['client-claims'] = `unverified, the client says: ${claims}`;
  }
  return details;
}

function describeProcess(process: ProcessDescription | undefined): string {
  return clean(processForPrompt(process, MAX_DETAIL_LENGTH)) || 'a process';
}

function describeClaims(claims: ClientClaims | undefined): string | undefined {
  const parts: string[] = [];
  const name = clean(claims?.name ?? '');
  const version = clean(claims?.version ?? '');
  const reason = clean(claims?.reason ?? '');
  if (name !== '') parts.push(`it is "${name}${version === '' ? '' : ` ${version}`}"`);
  if (reason !== '') parts.push(`reason: "${reason}"`);
  return parts.length === 0 ? undefined : parts.join('; ');
}

/** One line of plain text for the dialog, bounded (see cleanPromptText). */
function clean(value: string): string {
  return cleanPromptText(value, MAX_DETAIL_LENGTH);
}

/** Whether polkit takes details from this process for an action with this owner annotation. */
function mayPassDetails(owner: string | undefined): boolean {
  const uid = process.getuid?.();
  if (uid === 0) return true;
  if (owner === undefined || uid === undefined) return false;
  const tokens = owner.split(/\s+/);
  if (tokens.includes(`unix-user:${uid}`)) return true;
  try {
    return tokens.includes(`unix-user:${userInfo().username}`);
  } catch {
    return false;
  }
}

function duration(value: unknown, fallback: number, name: string): number {
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || !Number.isFinite(value) || value <= 0) {
    throw createError(
      'ERR_INVALID_ARGUMENT',
      `createPolkitBackend ${name} must be a positive number of milliseconds (got ${String(value)}).`,
    );
  }
  return value;
}

function message(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
