import { describe, expect, it } from 'vitest';
import { AuthorizationError } from '../../../src/errors.js';
import { autoPromptBackend } from '../../../src/prompt/auto.js';
import { PolkitBusError } from '../../../src/prompt/polkit/dbus-binding.js';
import { FakeUserConsent } from '../../platform/win32/fake-bindings.js';
import { ACTION_ID, action, FakeBinding, replyError } from './fake-binding.js';

const polkit = { actionId: ACTION_ID };

async function failure(promise: Promise<unknown>): Promise<AuthorizationError> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(AuthorizationError);
  return error as AuthorizationError;
}

describe('autoPromptBackend', () => {
  it('picks polkit on Linux when it can prompt', async () => {
    const binding = new FakeBinding();
    const backend = await autoPromptBackend(
      { polkit },
      { platform: 'linux', polkitBinding: binding },
    );
    expect(backend.id).toBe('polkit');
  });

  it('says which action file to install, and how to generate it, when the action is missing', async () => {
    const binding = new FakeBinding({ actions: [action('org.other.action')] });
    const error = await failure(
      autoPromptBackend({ polkit }, { platform: 'linux', polkitBinding: binding }),
    );
    expect(error.code).toBe('ERR_PROMPT_UNAVAILABLE');
    expect(error.message).toContain(`/usr/share/polkit-1/actions/${ACTION_ID}.policy`);
    expect(error.message).toContain(`polkitActionFile({ actionId: '${ACTION_ID}'`);
    expect(error.message).toContain('pkttyagent');
    // The connection it opened to find out is closed again.
    expect(binding.authority.closed).toBe(true);
  });

  it('says to install and start D-Bus and polkit when there is no system bus', async () => {
    const binding = new FakeBinding({ connect: new PolkitBusError('unreachable', 'ENOENT') });
    const error = await failure(
      autoPromptBackend(
        { polkit: { ...polkit, busAddress: 'unix:path=/x' } },
        { platform: 'linux', polkitBinding: binding },
      ),
    );
    expect(error.code).toBe('ERR_PROMPT_UNAVAILABLE');
    expect(error.message).toContain('unix:path=/x');
    expect(error.message).toMatch(/apt install dbus polkitd/);
    expect(error.message).toContain(`/usr/share/polkit-1/actions/${ACTION_ID}.policy`);
  });

  it('says to install and start polkit when polkitd does not answer', async () => {
    const binding = new FakeBinding();
    const connect = binding.connect.bind(binding);
    binding.connect = async (options) => {
      const authority = await connect(options);
      binding.authority.enumerate = replyError('org.freedesktop.DBus.Error.ServiceUnknown', 'x');
      return authority;
    };
    const error = await failure(
      autoPromptBackend({ polkit }, { platform: 'linux', polkitBinding: binding }),
    );
    expect(error.code).toBe('ERR_PROMPT_UNAVAILABLE');
    expect(error.message).toMatch(/polkitd does not answer/);
    expect(error.message).toMatch(/systemctl start polkit/);
  });

  it('needs the polkit action id on Linux', async () => {
    await expect(autoPromptBackend({}, { platform: 'linux' })).rejects.toMatchObject({
      code: 'ERR_INVALID_ARGUMENT',
    });
  });

  it('picks Windows Hello on Windows when it can verify the user', async () => {
    const consent = new FakeUserConsent();
    const backend = await autoPromptBackend(
      {},
      { platform: 'win32', windowsHelloBindings: { userConsent: consent } },
    );
    expect(backend.id).toBe('windows-hello');
    expect(consent.availabilityChecks).toBeGreaterThan(0);
  });

  it('says why Windows Hello cannot ask (not set up for the user), never a silent grant', async () => {
    const consent = new FakeUserConsent();
    consent.availability = 'not-configured-for-user';
    const error = await failure(
      autoPromptBackend({}, { platform: 'win32', windowsHelloBindings: { userConsent: consent } }),
    );
    expect(error.code).toBe('ERR_PROMPT_UNAVAILABLE');
    expect(error.message).toMatch(/Windows Hello/);
  });

  it('picks LocalAuthentication on macOS when the Mac can verify its owner', async () => {
    const checked: number[] = [];
    const backend = await autoPromptBackend(
      {},
      {
        platform: 'darwin',
        localAuthenticationBindings: {
          canEvaluatePolicy: (policy) => {
            checked.push(policy);
            return { ok: true };
          },
          evaluatePolicy: async () => ({ ok: true }),
        },
      },
    );
    expect(backend.id).toBe('local-authentication');
    expect(checked).toEqual([4]);
  });

  it('says why macOS cannot ask (no login password), never a silent grant', async () => {
    const error = await failure(
      autoPromptBackend(
        {},
        {
          platform: 'darwin',
          localAuthenticationBindings: {
            canEvaluatePolicy: () => ({ ok: false, code: -5 }),
            evaluatePolicy: async () => ({ ok: true }),
          },
        },
      ),
    );
    expect(error.code).toBe('ERR_PROMPT_UNAVAILABLE');
    expect(error.message).toMatch(/no login password/);
  });

  it('has no backend on freebsd: ERR_PROMPT_UNAVAILABLE, never a silent grant', async () => {
    const error = await failure(autoPromptBackend({ polkit }, { platform: 'freebsd' }));
    expect(error.code).toBe('ERR_PROMPT_UNAVAILABLE');
    expect(error.message).toContain('freebsd');
  });
});
