import { describe, expect, it } from 'vitest';
import { BridgekeeperError } from '../../src/errors.js';
import { HRESULTS, Win32Error } from '../../src/platform/win32/bindings.js';
import type { PromptRequest } from '../../src/prompt/prompt-backend.js';
import { windowsHelloMessage, windowsHelloPromptBackend } from '../../src/prompt/windows-hello.js';
import { runPromptBackendContract, sampleRequest } from '../contract/prompt-backend-contract.js';
import { FakeUserConsent } from '../platform/win32/fake-bindings.js';

function fakeHello(): { userConsent: FakeUserConsent } {
  return { userConsent: new FakeUserConsent() };
}

function request(overrides: Partial<PromptRequest> = {}): PromptRequest {
  return {
    account: { id: 'work', displayName: 'Work' },
    process: { host: 'Windows Terminal', program: 'contoso.exe', pid: 4242 },
    claims: { name: 'deploy-bot', reason: 'I am your bank' },
    sessionId: 'proc:0123',
    subject: { pid: 4242, startTime: '134000000000010000' },
    unlocks: false,
    ...overrides,
  };
}

const live = () => ({ signal: new AbortController().signal });

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

runPromptBackendContract('windows-hello (faked WinRT)', {
  create(behaviour) {
    const bindings = fakeHello();
    bindings.userConsent.result =
      behaviour === 'granted' ? 'verified' : behaviour === 'denied' ? 'retries-exhausted' : 'hang';
    const backend = windowsHelloPromptBackend({ bindings, window: 0x1234n });
    return {
      backend,
      promptsShown: () => bindings.userConsent.requests.length,
      shown: async () => {
        while (bindings.userConsent.requests.length === 0) {
          await new Promise((resolve) => setTimeout(resolve, 1));
        }
      },
    };
  },
  request: () => ({
    ...sampleRequest(),
    process: { host: 'Windows Terminal', program: 'node.exe' },
  }),
});

describe('windows-hello outcomes', () => {
  it.each([
    ['verified', 'granted', undefined],
    ['canceled', 'cancelled', /cancelled/],
    ['device-not-present', 'unavailable', /Settings > Accounts > Sign-in options/],
    ['not-configured-for-user', 'unavailable', /not set up for your account/],
    ['disabled-by-policy', 'unavailable', /administrator/],
    ['device-busy', 'unavailable', /try again/],
    ['retries-exhausted', 'denied', /too many failed attempts/],
  ] as const)('maps %s to %s', async (answer, result, detail) => {
    const bindings = fakeHello();
    bindings.userConsent.result = answer;
    const outcome = await windowsHelloPromptBackend({ bindings }).prompt(request(), live());
    expect(outcome.result).toBe(result);
    if (detail === undefined) expect(outcome).toEqual({ result: 'granted' });
    else expect((outcome as { detail?: string }).detail).toMatch(detail);
  });

  it.each([
    ['device-not-present', /no Windows Hello sign-in method/],
    ['not-configured-for-user', /not set up for your account/],
    ['disabled-by-policy', /turned off by a policy/],
    ['device-busy', /busy/],
  ] as const)('checks availability first: %s shows no dialog', async (availability, detail) => {
    const bindings = fakeHello();
    bindings.userConsent.availability = availability;
    const backend = windowsHelloPromptBackend({ bindings });
    const outcome = await backend.prompt(request(), live());
    expect(outcome.result).toBe('unavailable');
    expect((outcome as { detail?: string }).detail).toMatch(detail);
    expect(bindings.userConsent.requests).toHaveLength(0);
    expect(await backend.isAvailable()).toBe(false);
    expect(await backend.diagnose()).toMatchObject({ available: false, problem: availability });
  });

  it('says plainly when WinRT has no UserConsentVerifier (0x80040154, as under Wine)', async () => {
    const bindings = fakeHello();
    const missing = new Win32Error('RoGetActivationFactory', HRESULTS.classNotRegistered);
    bindings.userConsent.availability = missing;
    const backend = windowsHelloPromptBackend({ bindings });
    expect(await backend.prompt(request(), live())).toEqual({
      result: 'unavailable',
      detail: 'Windows Hello is not available on this system (WinRT UserConsentVerifier missing)',
    });
    expect(await backend.isAvailable()).toBe(false);
    expect(await backend.diagnose()).toMatchObject({ available: false, problem: 'winrt-missing' });
    // The same error from the request itself.
    bindings.userConsent.availability = 'available';
    bindings.userConsent.result = missing;
    expect((await backend.prompt(request(), live())).result).toBe('unavailable');
  });

  it('rejects (fail closed) on any other error, and on an unknown answer', async () => {
    const bindings = fakeHello();
    const backend = windowsHelloPromptBackend({ bindings });
    bindings.userConsent.result = new Win32Error('RequestVerificationForWindowAsync', 0x80070057);
    expect((await rejection(backend.prompt(request(), live()))).code).toBe('ERR_PLATFORM');
    bindings.userConsent.result = new TypeError('koffi exploded');
    const wrapped = await rejection(backend.prompt(request(), live()));
    expect(wrapped.code).toBe('ERR_PLATFORM');
    expect(wrapped.cause).toBeInstanceOf(TypeError);
    bindings.userConsent.result = 'maybe' as never;
    expect((await rejection(backend.prompt(request(), live()))).code).toBe('ERR_PLATFORM');
    bindings.userConsent.result = 'verified';
    bindings.userConsent.availability = new Error('WinRT broke');
    expect((await rejection(backend.prompt(request(), live()))).code).toBe('ERR_PLATFORM');
    expect(await backend.isAvailable()).toBe(false);
    expect(await backend.diagnose()).toMatchObject({ available: false, problem: 'error' });
  });

  it('never grants after the abort, even if Windows says verified', async () => {
    const bindings = fakeHello();
    const controller = new AbortController();
    bindings.userConsent.result = () =>
      new Promise((resolve) => {
        controller.signal.addEventListener('abort', () => resolve('verified'));
      });
    const pending = windowsHelloPromptBackend({ bindings }).prompt(request(), {
      signal: controller.signal,
    });
    await new Promise((resolve) => setTimeout(resolve, 5));
    controller.abort();
    expect((await pending).result).toBe('cancelled');
  });

  it('passes the abort to WinRT, so the dialog is cancelled', async () => {
    const bindings = fakeHello();
    bindings.userConsent.result = 'hang';
    const controller = new AbortController();
    const pending = windowsHelloPromptBackend({ bindings }).prompt(request(), {
      signal: controller.signal,
    });
    while (bindings.userConsent.requests.length === 0) {
      await new Promise((resolve) => setTimeout(resolve, 1));
    }
    controller.abort();
    expect((await pending).result).toBe('cancelled');
    expect(bindings.userConsent.requests[0]!.signal?.aborted).toBe(true);
  });

  it('bounds the availability check', async () => {
    const bindings = fakeHello();
    bindings.userConsent.availability = () => new Promise(() => {});
    const backend = windowsHelloPromptBackend({ bindings, timeoutMs: 20 });
    expect(await backend.prompt(request(), live())).toEqual({
      result: 'unavailable',
      detail: 'Windows Hello did not answer in time',
    });
    expect(await backend.diagnose()).toMatchObject({ available: false, problem: 'timeout' });
    expect(bindings.userConsent.requests).toHaveLength(0);
  });

  it('reports unavailable without native bindings (not Windows)', async () => {
    if (process.platform === 'win32') return;
    const backend = windowsHelloPromptBackend();
    expect(await backend.isAvailable()).toBe(false);
    expect(await backend.diagnose()).toMatchObject({ available: false, problem: 'unsupported' });
    expect((await backend.prompt(request(), live())).result).toBe('unavailable');
  });
});

describe('windows-hello dialog', () => {
  it('names the account and "program in host", never the client claims', async () => {
    const bindings = fakeHello();
    await windowsHelloPromptBackend({ bindings }).prompt(request(), live());
    const { message } = bindings.userConsent.requests[0]!;
    expect(message).toBe('contoso.exe in Windows Terminal wants to use “Work”.');
    expect(message).not.toMatch(/deploy-bot|bank/);
  });

  it('says when approving unlocks the app, and cleans what it shows', () => {
    expect(
      windowsHelloMessage(
        request({
          unlocks: true,
          account: { id: 'x', displayName: 'Work\n\u202eOK to proceed' },
          process: { host: 'Windows Terminal', program: 'contoso.exe' },
        }),
      ),
    ).toBe(
      'contoso.exe in Windows Terminal wants to use “Work OK to proceed”. Approving also unlocks the app.',
    );
    expect(windowsHelloMessage(request({ process: { host: 'PowerShell' } }))).toBe(
      'PowerShell wants to use “Work”.',
    );
  });

  it('takes the app’s own message, cleaned and bounded; an empty one falls back', async () => {
    const bindings = fakeHello();
    const backend = windowsHelloPromptBackend({
      bindings,
      message: (r) => `Unlock ${r.account.displayName}?\r\n${'!'.repeat(400)}`,
    });
    await backend.prompt(request(), live());
    const { message } = bindings.userConsent.requests[0]!;
    expect(message.startsWith('Unlock Work? !!!')).toBe(true);
    expect([...message].length).toBe(300);
    const fallback = windowsHelloPromptBackend({ bindings, message: () => '  ' });
    await fallback.prompt(request(), live());
    expect(bindings.userConsent.requests[1]!.message).toMatch(/wants to use “Work”/);
    const broken = windowsHelloPromptBackend({ bindings, message: () => 42 as never });
    expect((await rejection(broken.prompt(request(), live()))).code).toBe('ERR_INVALID_ARGUMENT');
  });

  it('owns the dialog by the app window: a bigint, an Electron Buffer, a function, or none', async () => {
    const windows: bigint[] = [];
    const eight = Buffer.alloc(8);
    eight.writeBigUInt64LE(0x0001_0000_0abcn);
    const four = Buffer.alloc(4);
    four.writeUInt32LE(0x5678);
    for (const window of [0x1234n, eight, four, () => 0x9999n, () => undefined, undefined]) {
      const bindings = fakeHello();
      await windowsHelloPromptBackend({ bindings, ...(window ? { window } : {}) }).prompt(
        request(),
        live(),
      );
      windows.push(bindings.userConsent.requests[0]!.window);
    }
    expect(windows).toEqual([0x1234n, 0x0001_0000_0abcn, 0x5678n, 0x9999n, 0n, 0n]);
  });

  it('rejects a window that is not an HWND', async () => {
    for (const window of [Buffer.alloc(3), -1n, 'hwnd' as never]) {
      expect(() => windowsHelloPromptBackend({ window })).toThrow(
        expect.objectContaining({ code: 'ERR_INVALID_ARGUMENT' }),
      );
    }
    const bindings = fakeHello();
    const backend = windowsHelloPromptBackend({ bindings, window: () => Buffer.alloc(2) });
    expect((await rejection(backend.prompt(request(), live()))).code).toBe('ERR_INVALID_ARGUMENT');
    expect(bindings.userConsent.requests).toHaveLength(0);
  });

  it('rejects bad options', () => {
    for (const options of [
      { message: 'hi' as never },
      { timeoutMs: 0 },
      { timeoutMs: Number.NaN },
    ]) {
      expect(() => windowsHelloPromptBackend(options)).toThrow(
        expect.objectContaining({ code: 'ERR_INVALID_ARGUMENT' }),
      );
    }
    expect(windowsHelloPromptBackend().id).toBe('windows-hello');
  });
});
