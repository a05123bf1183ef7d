/**
 * A fake polkit D-Bus binding: the test plays polkitd, answering each CheckAuthorization as it
 * likes, and sees every call, cancellation and connection.
 */

import type {
  PolkitActionDescription,
  PolkitAuthority,
  PolkitBinding,
  PolkitCheckResult,
  PolkitConnectOptions,
  PolkitSubject,
} from '../../../src/prompt/polkit/dbus-binding.js';
import { PolkitBusError } from '../../../src/prompt/polkit/dbus-binding.js';

/** One CheckAuthorization the fake received. */
export interface FakeCheck {
  readonly subject: PolkitSubject;
  readonly actionId: string;
  readonly details: Readonly<Record<string, string>>;
  readonly flags: number;
  readonly cancellationId: string;
  /** Answers the call. */
  resolve(result: PolkitCheckResult): void;
  /** Fails the call. */
  reject(error: unknown): void;
  readonly settled: boolean;
}

/** How the fake answers checks by itself; return undefined to leave the call pending. */
export type CheckScript = (check: FakeCheck) => PolkitCheckResult | Error | undefined;

export const AUTHORIZED: PolkitCheckResult = {
  isAuthorized: true,
  isChallenge: false,
  details: {},
};
export const NOT_AUTHORIZED: PolkitCheckResult = {
  isAuthorized: false,
  isChallenge: false,
  details: {},
};
export const CHALLENGE: PolkitCheckResult = { isAuthorized: false, isChallenge: true, details: {} };

/** A D-Bus error reply, as the real binding reports it. */
export function replyError(dbusName: string, text: string): PolkitBusError {
  return new PolkitBusError('reply', `CheckAuthorization: ${dbusName}: ${text}`, { dbusName });
}

export class FakeAuthority implements PolkitAuthority {
  readonly checks: FakeCheck[] = [];
  readonly cancels: string[] = [];
  actions: PolkitActionDescription[];
  /** How EnumerateActions answers: the list, an error, or 'hang'. */
  enumerate: 'list' | 'hang' | Error = 'list';
  /** When true, CancelCheckAuthorization does not make polkit answer the check. */
  ignoreCancels = false;
  #closed = false;
  readonly #script: CheckScript | undefined;
  readonly #waiters: Array<(check: FakeCheck) => void> = [];

  constructor(script: CheckScript | undefined, actions: PolkitActionDescription[]) {
    this.#script = script;
    this.actions = actions;
  }

  get closed(): boolean {
    return this.#closed;
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const check of this.checks) {
      if (!check.settled) check.reject(new PolkitBusError('disconnected', 'connection closed'));
    }
  }

  /** Resolves with the next check (or the one already received at that index). */
  nextCheck(index = this.checks.length): Promise<FakeCheck> {
    const existing = this.checks[index];
    if (existing) return Promise.resolve(existing);
    return new Promise((resolve) => {
      this.#waiters.push((check) => {
        if (this.checks.indexOf(check) === index) resolve(check);
        else void this.nextCheck(index).then(resolve);
      });
    });
  }

  checkAuthorization(
    subject: PolkitSubject,
    actionId: string,
    details: Readonly<Record<string, string>>,
    flags: number,
    cancellationId: string,
  ): Promise<PolkitCheckResult> {
    if (this.#closed) {
      return Promise.reject(new PolkitBusError('disconnected', 'connection closed'));
    }
    return new Promise<PolkitCheckResult>((resolve, reject) => {
      let settled = false;
      const check: FakeCheck = {
        subject,
        actionId,
        details: { ...details },
        flags,
        cancellationId,
        resolve: (result) => {
          if (settled) return;
          settled = true;
          resolve(result);
        },
        reject: (error) => {
          if (settled) return;
          settled = true;
          reject(error);
        },
        get settled() {
          return settled;
        },
      };
      this.checks.push(check);
      for (const waiter of this.#waiters.splice(0)) waiter(check);
      const answer = this.#script?.(check);
      if (answer instanceof Error) check.reject(answer);
      else if (answer !== undefined) check.resolve(answer);
    });
  }

  async cancelCheckAuthorization(cancellationId: string): Promise<void> {
    this.cancels.push(cancellationId);
    const check = this.checks.find((candidate) => candidate.cancellationId === cancellationId);
    if (check === undefined || check.settled) {
      throw replyError('org.freedesktop.PolicyKit1.Error.Failed', 'No such cancellation_id');
    }
    // What polkitd 122 does when an agent shows the dialog: the check answers "not authorized".
    if (!this.ignoreCancels) check.resolve(NOT_AUTHORIZED);
  }

  enumerateActions(_locale: string): Promise<PolkitActionDescription[]> {
    if (this.enumerate === 'hang') return new Promise(() => {});
    if (this.enumerate instanceof Error) return Promise.reject(this.enumerate);
    return Promise.resolve(this.actions);
  }
}

export interface FakeBindingOptions {
  script?: CheckScript;
  /** Actions EnumerateActions lists. Default: one, `org.example.app.use-account`, owned by root. */
  actions?: PolkitActionDescription[];
  /** Make connect() fail with this error (or hang with 'hang'). */
  connect?: Error | 'hang';
}

export const ACTION_ID = 'org.example.app.use-account';

export function action(
  actionId = ACTION_ID,
  annotations: Record<string, string> = { 'org.freedesktop.policykit.owner': 'unix-user:root' },
): PolkitActionDescription {
  return {
    actionId,
    description: 'Use an account',
    message: 'Authentication is required to let $(process) use $(account)',
    vendorName: 'Example',
    annotations,
  };
}

export class FakeBinding implements PolkitBinding {
  readonly authorities: FakeAuthority[] = [];
  readonly connects: PolkitConnectOptions[] = [];
  options: FakeBindingOptions;

  constructor(options: FakeBindingOptions = {}) {
    this.options = options;
  }

  /** The most recent connection. */
  get authority(): FakeAuthority {
    const last = this.authorities.at(-1);
    if (!last) throw new Error('no connection yet');
    return last;
  }

  /** Every check on every connection, in order. */
  get checks(): FakeCheck[] {
    return this.authorities.flatMap((authority) => authority.checks);
  }

  connect(options: PolkitConnectOptions): Promise<PolkitAuthority> {
    this.connects.push(options);
    const failure = this.options.connect;
    if (failure === 'hang') {
      return new Promise((_resolve, reject) => {
        options.signal?.addEventListener('abort', () =>
          reject(new PolkitBusError('unreachable', 'timed out')),
        );
      });
    }
    if (failure instanceof Error) return Promise.reject(failure);
    const authority = new FakeAuthority(this.options.script, this.options.actions ?? [action()]);
    this.authorities.push(authority);
    return Promise.resolve(authority);
  }
}
