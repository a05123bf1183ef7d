import { describe, expect, it } from 'vitest';
import { BridgekeeperError, createError } from '../../src/errors.js';
import {
  LA_ERROR,
  LA_POLICY,
  type LocalAuthenticationBindings,
  type LocalAuthenticationPolicy,
  type LocalAuthenticationResult,
  localAuthenticationPromptBackend,
  localAuthenticationReason,
} from '../../src/prompt/local-authentication.js';
import type { PromptRequest } from '../../src/prompt/prompt-backend.js';
import { runPromptBackendContract, sampleRequest } from '../contract/prompt-backend-contract.js';

const BIO = LA_POLICY.deviceOwnerAuthenticationWithBiometricsOrWatch;
const PASSWORD = LA_POLICY.deviceOwnerAuthentication;

type Answer =
  | LocalAuthenticationResult
  | 'hang'
  | Error
  | (() => Promise<LocalAuthenticationResult>);

/**
 * A fake LAContext pair that behaves as the bindings' contract says: an abort "invalidates" the
 * context and the reply then arrives with LAErrorAppCancel.
 */
class FakeLocalAuthentication implements LocalAuthenticationBindings {
  /** canEvaluatePolicy answers per policy (default: both can be evaluated). */
  can = new Map<number, LocalAuthenticationResult | Error>();
  /** evaluatePolicy answers per policy (default: success). */
  answers = new Map<number, Answer>();
  readonly checks: number[] = [];
  readonly evaluations: { policy: number; reason: string; signal: AbortSignal }[] = [];
  invalidated = 0;

  canEvaluatePolicy(policy: LocalAuthenticationPolicy): LocalAuthenticationResult {
    this.checks.push(policy);
    const answer = this.can.get(policy) ?? { ok: true };
    if (answer instanceof Error) throw answer;
    return answer;
  }

  evaluatePolicy(
    policy: LocalAuthenticationPolicy,
    reason: string,
    { signal }: { signal: AbortSignal },
  ): Promise<LocalAuthenticationResult> {
    this.evaluations.push({ policy, reason, signal });
    // `has`, not `??`: a binding that resolves `undefined` must be faked too.
    const answer = (this.answers.has(policy) ? this.answers.get(policy) : { ok: true }) as Answer;
    if (answer instanceof Error) return Promise.reject(answer);
    if (typeof answer === 'function') return answer();
    return new Promise((resolve) => {
      const invalidate = () => {
        this.invalidated += 1;
        resolve({ ok: false, code: LA_ERROR.appCancel });
      };
      if (signal.aborted) return invalidate();
      signal.addEventListener('abort', invalidate, { once: true });
      if (answer !== 'hang') setTimeout(() => resolve(answer), 1);
    });
  }
}

function request(overrides: Partial<PromptRequest> = {}): PromptRequest {
  return {
    account: { id: 'work', displayName: 'Work' },
    process: { host: 'Terminal', program: 'contoso', pid: 4242 },
    claims: { name: 'deploy-bot', reason: 'I am your bank' },
    sessionId: 'tty:ttys003',
    subject: { pid: 4242 },
    unlocks: false,
    ...overrides,
  };
}

const live = () => ({ signal: new AbortController().signal });
const fail = (code: number): LocalAuthenticationResult => ({ ok: false, code });

async function rejection(promise: Promise<unknown>): Promise<BridgekeeperError> {
  const error = await promise.then(
    () => {
      throw new Error('expected a rejection');
    },
    (caught: unknown) => caught,
  );
  expect(error).toBeInstanceOf(BridgekeeperError);
  return error as BridgekeeperError;
}

async function until(condition: () => boolean): Promise<void> {
  while (!condition()) await new Promise((resolve) => setTimeout(resolve, 1));
}

runPromptBackendContract('local-authentication (faked LAContext)', {
  create(behaviour) {
    const bindings = new FakeLocalAuthentication();
    bindings.answers.set(
      BIO,
      behaviour === 'granted'
        ? { ok: true }
        : behaviour === 'denied'
          ? fail(LA_ERROR.authenticationFailed)
          : 'hang',
    );
    const backend = localAuthenticationPromptBackend({ bindings });
    return {
      backend,
      promptsShown: () => bindings.evaluations.length,
      shown: () => until(() => bindings.evaluations.length > 0),
    };
  },
  request: () => ({ ...sampleRequest(), process: { host: 'Terminal', program: 'node' } }),
});

describe('local-authentication LAError mapping', () => {
  it('uses Touch ID / Apple Watch (policy 4) when it can be evaluated', async () => {
    const bindings = new FakeLocalAuthentication();
    const outcome = await localAuthenticationPromptBackend({ bindings }).prompt(request(), live());
    expect(outcome).toEqual({ result: 'granted' });
    expect(bindings.checks).toEqual([BIO]);
    expect(bindings.evaluations.map((e) => e.policy)).toEqual([BIO]);
  });

  it.each([
    [LA_ERROR.authenticationFailed, 'denied', /could not verify you/],
    [LA_ERROR.userCancel, 'cancelled', /cancelled/],
    [LA_ERROR.systemCancel, 'cancelled', /try again/],
    [LA_ERROR.passcodeNotSet, 'unavailable', /no login password/],
    [LA_ERROR.biometryLockout, 'denied', /enter your password once/],
    [LA_ERROR.appCancel, 'cancelled', /cancelled/],
    [LA_ERROR.invalidContext, 'unavailable', /invalidated: try again/],
    [LA_ERROR.invalidDimensions, 'unavailable', /report this/],
    [LA_ERROR.notInteractive, 'unavailable', /logged-in desktop session/],
  ] as const)('maps evaluatePolicy code %i to %s', async (code, result, detail) => {
    const bindings = new FakeLocalAuthentication();
    bindings.answers.set(BIO, fail(code));
    const outcome = await localAuthenticationPromptBackend({ bindings }).prompt(request(), live());
    expect(outcome.result).toBe(result);
    expect((outcome as { detail?: string }).detail).toMatch(detail);
    expect(bindings.evaluations).toHaveLength(1);
  });

  it.each([
    LA_ERROR.userFallback,
    LA_ERROR.biometryNotAvailable,
    LA_ERROR.biometryNotEnrolled,
    LA_ERROR.watchNotAvailable,
    LA_ERROR.biometryNotPaired,
    LA_ERROR.biometryDisconnected,
  ])('falls back to the password prompt when the biometric sheet ends with %i', async (code) => {
    const bindings = new FakeLocalAuthentication();
    bindings.answers.set(BIO, fail(code));
    bindings.answers.set(PASSWORD, fail(LA_ERROR.authenticationFailed));
    const backend = localAuthenticationPromptBackend({ bindings });
    expect((await backend.prompt(request(), live())).result).toBe('denied');
    expect(bindings.evaluations.map((e) => e.policy)).toEqual([BIO, PASSWORD]);
    bindings.answers.set(PASSWORD, { ok: true });
    expect(await backend.prompt(request(), live())).toEqual({ result: 'granted' });
  });

  it('does not fall back twice: the password policy reporting those codes is not a grant', async () => {
    const bindings = new FakeLocalAuthentication();
    bindings.answers.set(BIO, fail(LA_ERROR.userFallback));
    bindings.answers.set(PASSWORD, fail(LA_ERROR.biometryNotAvailable));
    const backend = localAuthenticationPromptBackend({ bindings });
    expect(await backend.prompt(request(), live())).toEqual({
      result: 'unavailable',
      detail: expect.stringMatching(/LAErrorBiometryNotAvailable/),
    });
    bindings.answers.set(PASSWORD, fail(LA_ERROR.userFallback));
    expect((await backend.prompt(request(), live())).result).toBe('cancelled');
    expect(bindings.evaluations.map((e) => e.policy)).toEqual([BIO, PASSWORD, BIO, PASSWORD]);
  });

  it.each([
    LA_ERROR.biometryNotAvailable,
    LA_ERROR.biometryNotEnrolled,
    LA_ERROR.biometryLockout,
    LA_ERROR.watchNotAvailable,
    LA_ERROR.biometryNotPaired,
    LA_ERROR.biometryDisconnected,
  ])('asks for the password when canEvaluatePolicy(4) fails with %i', async (code) => {
    const bindings = new FakeLocalAuthentication();
    bindings.can.set(BIO, fail(code));
    const backend = localAuthenticationPromptBackend({ bindings });
    expect(await backend.prompt(request(), live())).toEqual({ result: 'granted' });
    expect(bindings.checks).toEqual([BIO, PASSWORD]);
    expect(bindings.evaluations.map((e) => e.policy)).toEqual([PASSWORD]);
    expect(await backend.diagnose()).toMatchObject({
      available: true,
      policy: PASSWORD,
      detail: expect.stringMatching(/login password/),
    });
  });

  it.each([
    [LA_ERROR.passcodeNotSet, 'passcode-not-set', /no login password/],
    [LA_ERROR.notInteractive, 'not-interactive', /GUI session/],
    [LA_ERROR.invalidContext, 'error', /invalidated/],
  ] as const)(
    'shows no prompt when canEvaluatePolicy fails with %i',
    async (code, problem, detail) => {
      for (const policies of [[BIO], [BIO, PASSWORD]]) {
        const bindings = new FakeLocalAuthentication();
        bindings.can.set(
          BIO,
          policies.length === 1 ? fail(code) : fail(LA_ERROR.biometryNotEnrolled),
        );
        bindings.can.set(PASSWORD, fail(code));
        const backend = localAuthenticationPromptBackend({ bindings });
        const outcome = await backend.prompt(request(), live());
        expect(outcome.result).toBe('unavailable');
        expect((outcome as { detail?: string }).detail).toMatch(detail);
        expect(bindings.evaluations).toHaveLength(0);
        expect(await backend.isAvailable()).toBe(false);
        expect(await backend.diagnose()).toMatchObject({ available: false, problem });
      }
    },
  );

  it('says so when even the password policy reports missing biometry', async () => {
    const bindings = new FakeLocalAuthentication();
    bindings.can.set(BIO, fail(LA_ERROR.biometryNotAvailable));
    bindings.can.set(PASSWORD, fail(LA_ERROR.biometryNotAvailable));
    const outcome = await localAuthenticationPromptBackend({ bindings }).prompt(request(), live());
    expect(outcome.result).toBe('unavailable');
    expect(bindings.evaluations).toHaveLength(0);
  });

  it('rejects (fail closed) on unknown codes, malformed results and broken bindings', async () => {
    const bindings = new FakeLocalAuthentication();
    const backend = localAuthenticationPromptBackend({ bindings });
    for (const answer of [
      fail(-99),
      fail(1),
      { ok: false } as never,
      { ok: 'yes' } as never,
      { ok: false, code: 1.5 } as never,
      undefined as never,
      new TypeError('koffi exploded'),
    ]) {
      bindings.answers.set(BIO, answer);
      const error = await rejection(backend.prompt(request(), live()));
      expect(error.code).toBe('ERR_PLATFORM');
    }
    bindings.answers.set(BIO, { ok: true });
    bindings.can.set(BIO, fail(-42));
    expect((await rejection(backend.prompt(request(), live()))).code).toBe('ERR_PLATFORM');
    bindings.can.set(BIO, fail(LA_ERROR.biometryNotAvailable));
    bindings.can.set(PASSWORD, fail(-42));
    expect((await rejection(backend.prompt(request(), live()))).code).toBe('ERR_PLATFORM');
    bindings.can.set(BIO, new Error('objc_msgSend broke'));
    expect((await rejection(backend.prompt(request(), live()))).code).toBe('ERR_PLATFORM');
    expect(await backend.isAvailable()).toBe(false);
    expect(await backend.diagnose()).toMatchObject({ available: false, problem: 'error' });
  });

  it('reports unavailable with the default bindings off macOS, or when they or the framework cannot load', async () => {
    const frameworkMissing = {
      canEvaluatePolicy: () => {
        throw createError('ERR_UNSUPPORTED_PLATFORM', 'LocalAuthentication.framework did not load');
      },
      evaluatePolicy: () => Promise.reject(new Error('never called')),
    };
    for (const backend of [
      ...(process.platform === 'darwin' ? [] : [localAuthenticationPromptBackend()]),
      localAuthenticationPromptBackend({
        bindings: () => {
          throw createError('ERR_UNSUPPORTED_PLATFORM', 'not macOS');
        },
      }),
      localAuthenticationPromptBackend({ bindings: frameworkMissing }),
    ]) {
      expect(await backend.isAvailable()).toBe(false);
      expect(await backend.diagnose()).toMatchObject({ available: false, problem: 'unsupported' });
      expect((await backend.prompt(request(), live())).result).toBe('unavailable');
    }
    const broken = localAuthenticationPromptBackend({
      bindings: () => Promise.reject(new Error('dlopen failed')),
    });
    expect((await rejection(broken.prompt(request(), live()))).code).toBe('ERR_PLATFORM');
  });

  it('loads bindings lazily, once', async () => {
    let loads = 0;
    const bindings = new FakeLocalAuthentication();
    const backend = localAuthenticationPromptBackend({
      bindings: async () => {
        loads += 1;
        return bindings;
      },
    });
    expect(loads).toBe(0);
    expect(await backend.isAvailable()).toBe(true);
    expect(await backend.prompt(request(), live())).toEqual({ result: 'granted' });
    expect(loads).toBe(1);
  });
});

describe('local-authentication abort', () => {
  it('invalidates the context on abort and settles cancelled', async () => {
    const bindings = new FakeLocalAuthentication();
    bindings.answers.set(BIO, 'hang');
    const controller = new AbortController();
    const pending = localAuthenticationPromptBackend({ bindings }).prompt(request(), {
      signal: controller.signal,
    });
    await until(() => bindings.evaluations.length > 0);
    controller.abort();
    expect((await pending).result).toBe('cancelled');
    expect(bindings.evaluations[0]!.signal).toBe(controller.signal);
    expect(bindings.invalidated).toBe(1);
  });

  it('never grants after the abort, even if LocalAuthentication says success', async () => {
    const bindings = new FakeLocalAuthentication();
    const controller = new AbortController();
    bindings.answers.set(
      BIO,
      () =>
        new Promise((resolve) => {
          controller.signal.addEventListener('abort', () => resolve({ ok: true }));
        }),
    );
    const pending = localAuthenticationPromptBackend({ bindings }).prompt(request(), {
      signal: controller.signal,
    });
    await until(() => bindings.evaluations.length > 0);
    controller.abort();
    expect((await pending).result).toBe('cancelled');
  });

  it('does not start the password prompt after an abort during the biometric one', async () => {
    const bindings = new FakeLocalAuthentication();
    const controller = new AbortController();
    bindings.answers.set(
      BIO,
      () =>
        new Promise((resolve) => {
          controller.signal.addEventListener('abort', () => resolve(fail(LA_ERROR.userFallback)));
        }),
    );
    const pending = localAuthenticationPromptBackend({ bindings }).prompt(request(), {
      signal: controller.signal,
    });
    await until(() => bindings.evaluations.length > 0);
    controller.abort();
    expect((await pending).result).toBe('cancelled');
    await new Promise((resolve) => setTimeout(resolve, 5));
    expect(bindings.evaluations).toHaveLength(1);
  });

  it('shows nothing for an already-aborted signal', async () => {
    const bindings = new FakeLocalAuthentication();
    const backend = localAuthenticationPromptBackend({ bindings });
    expect((await backend.prompt(request(), { signal: AbortSignal.abort() })).result).toBe(
      'cancelled',
    );
    expect(bindings.checks).toHaveLength(0);
    expect(bindings.evaluations).toHaveLength(0);
    expect(await backend.diagnose({ signal: AbortSignal.abort() })).toMatchObject({
      available: false,
    });
  });
});

describe('local-authentication reason', () => {
  it('names the account and "program in host", never the client claims', async () => {
    const bindings = new FakeLocalAuthentication();
    await localAuthenticationPromptBackend({ bindings }).prompt(request(), live());
    const { reason } = bindings.evaluations[0]!;
    expect(reason).toBe('allow contoso in Terminal to use “Work”');
    expect(reason).not.toMatch(/deploy-bot|bank/);
  });

  it('uses the same reason for the password prompt', async () => {
    const bindings = new FakeLocalAuthentication();
    bindings.answers.set(BIO, fail(LA_ERROR.userFallback));
    await localAuthenticationPromptBackend({ bindings }).prompt(request(), live());
    expect(bindings.evaluations.map((e) => e.reason)).toEqual([
      'allow contoso in Terminal to use “Work”',
      'allow contoso in Terminal to use “Work”',
    ]);
  });

  it('says when approving unlocks the app, and cleans what it shows', () => {
    expect(
      localAuthenticationReason(
        request({
          unlocks: true,
          account: { id: 'x', displayName: 'Work\n\u202eOK to proceed\u0007' },
          process: { host: 'Terminal\u2066', program: 'con\u200ftoso' },
        }),
      ),
    ).toBe('allow contoso in Terminal to use “Work OK to proceed” (this also unlocks the app)');
    expect(localAuthenticationReason(request({ process: { host: 'iTerm2' } }))).toBe(
      'allow iTerm2 to use “Work”',
    );
    expect(
      localAuthenticationReason(
        request({ account: { id: 'x', displayName: '' }, process: { host: '' } }),
      ),
    ).toBe('allow a process to use “an account”');
  });

  it('bounds each part and the whole', () => {
    const reason = localAuthenticationReason(
      request({
        account: { id: 'x', displayName: 'A'.repeat(500) },
        process: { host: 'H'.repeat(500), program: 'P'.repeat(500) },
        unlocks: true,
      }),
    );
    expect([...reason].length).toBeLessThanOrEqual(300);
    expect(reason).toMatch(
      /^allow P{59}… in H{59}… to use “A{99}…” \(this also unlocks the app\)$/,
    );
  });

  it('takes the app’s own reason, cleaned and bounded; an empty one falls back', async () => {
    const bindings = new FakeLocalAuthentication();
    const backend = localAuthenticationPromptBackend({
      bindings,
      reason: (r) => `unlock ${r.account.displayName}\r\n${'!'.repeat(400)}`,
    });
    await backend.prompt(request(), live());
    const { reason } = bindings.evaluations[0]!;
    expect(reason.startsWith('unlock Work !!!')).toBe(true);
    expect([...reason].length).toBe(300);
    const fallback = localAuthenticationPromptBackend({ bindings, reason: () => ' \u202e ' });
    await fallback.prompt(request(), live());
    expect(bindings.evaluations[1]!.reason).toBe('allow contoso in Terminal to use “Work”');
    const broken = localAuthenticationPromptBackend({ bindings, reason: () => 42 as never });
    expect((await rejection(broken.prompt(request(), live()))).code).toBe('ERR_INVALID_ARGUMENT');
    expect(bindings.evaluations).toHaveLength(2);
  });

  it('rejects bad options', () => {
    for (const options of [
      null as never,
      { reason: 'hi' as never },
      { bindings: {} as never },
      { bindings: { canEvaluatePolicy() {} } as never },
    ]) {
      expect(() => localAuthenticationPromptBackend(options)).toThrow(
        expect.objectContaining({ code: 'ERR_INVALID_ARGUMENT' }),
      );
    }
    expect(localAuthenticationPromptBackend().id).toBe('local-authentication');
  });
});
