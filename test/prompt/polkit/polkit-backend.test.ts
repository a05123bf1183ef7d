/**
 * The polkit backend's logic, with a fake D-Bus binding playing polkitd: the mapping of every
 * answer, the subject, the details, cancellation, connection reuse and availability.
 */

import { describe, expect, it } from 'vitest';
import { BridgekeeperError } from '../../../src/errors.js';
import { PolkitBusError } from '../../../src/prompt/polkit/dbus-binding.js';
import {
  createPolkitBackend,
  type PolkitBackendOptions,
  promptDetails,
} from '../../../src/prompt/polkit/polkit-backend.js';
import type { PromptRequest } from '../../../src/prompt/prompt-backend.js';
import { Authorizer } from '../../../src/session/authorizer.js';
import type { SessionCredential } from '../../../src/session/credentials.js';
import {
  ACTION_ID,
  AUTHORIZED,
  action,
  CHALLENGE,
  type CheckScript,
  FakeBinding,
  type FakeBindingOptions,
  NOT_AUTHORIZED,
  replyError,
} from './fake-binding.js';

const SUBJECT = { pid: 4242, startTime: '123456', uid: 1000 };

function request(overrides: Partial<PromptRequest> = {}): PromptRequest {
  return {
    account: { id: 'work', displayName: 'Work' },
    process: { host: 'GNOME Terminal', program: 'bk-secrets', pid: SUBJECT.pid },
    claims: { name: 'deploy-script', reason: 'deploying' },
    sessionId: 'terminal:abc',
    subject: SUBJECT,
    unlocks: false,
    ...overrides,
  };
}

function setup(
  bindingOptions: FakeBindingOptions = {},
  options: Partial<PolkitBackendOptions> = {},
) {
  const binding = new FakeBinding(bindingOptions);
  const backend = createPolkitBackend({ actionId: ACTION_ID, ...options }, { binding });
  return { binding, backend };
}

const answer =
  (result: ReturnType<CheckScript>): CheckScript =>
  () =>
    result;

const live = () => new AbortController().signal;

describe('polkit backend: what polkit answered → the outcome', () => {
  it('authorized → granted (no detail)', async () => {
    const { backend } = setup({ script: answer(AUTHORIZED) });
    expect(backend.id).toBe('polkit');
    await expect(backend.prompt(request(), { signal: live() })).resolves.toEqual({
      result: 'granted',
    });
  });

  it('not authorized → denied', async () => {
    const { backend } = setup({ script: answer(NOT_AUTHORIZED) });
    const outcome = await backend.prompt(request(), { signal: live() });
    expect(outcome.result).toBe('denied');
  });

  it('not authorized with a challenge (no agent answered) → unavailable, saying no authentication agent is running', async () => {
    const { backend } = setup({ script: answer(CHALLENGE) });
    const outcome = await backend.prompt(request(), { signal: live() });
    expect(outcome.result).toBe('unavailable');
    expect(outcome.result !== 'granted' && outcome.detail).toMatch(
      /no polkit authentication agent is running/,
    );
  });

  it('dismissed by the person (polkit.dismissed) → cancelled', async () => {
    const { backend } = setup({
      script: answer({ ...NOT_AUTHORIZED, details: { 'polkit.dismissed': 'true' } }),
    });
    const outcome = await backend.prompt(request(), { signal: live() });
    expect(outcome).toMatchObject({ result: 'cancelled' });
  });

  it('org.freedesktop.PolicyKit1.Error.Cancelled → cancelled', async () => {
    const { backend } = setup({
      script: answer(replyError('org.freedesktop.PolicyKit1.Error.Cancelled', 'cancelled')),
    });
    await expect(backend.prompt(request(), { signal: live() })).resolves.toMatchObject({
      result: 'cancelled',
    });
  });

  it('action not registered → unavailable naming the file to install', async () => {
    const { backend } = setup({
      script: answer(
        replyError(
          'org.freedesktop.PolicyKit1.Error.Failed',
          `Action ${ACTION_ID} is not registered`,
        ),
      ),
    });
    const outcome = await backend.prompt(request(), { signal: live() });
    expect(outcome.result).toBe('unavailable');
    expect(outcome.result !== 'granted' && outcome.detail).toContain(
      `/usr/share/polkit-1/actions/${ACTION_ID}.policy`,
    );
  });

  it.each([
    'org.freedesktop.DBus.Error.ServiceUnknown',
    'org.freedesktop.DBus.Error.NameHasNoOwner',
  ])('%s (polkitd not running) → unavailable', async (name) => {
    const { backend } = setup({ script: answer(replyError(name, 'no polkitd')) });
    const outcome = await backend.prompt(request(), { signal: live() });
    expect(outcome).toMatchObject({ result: 'unavailable' });
    expect(outcome.result !== 'granted' && outcome.detail).toMatch(/polkitd is not running/);
  });

  it('no system bus → unavailable naming the address', async () => {
    const { backend } = setup(
      { connect: new PolkitBusError('unreachable', 'connect ENOENT') },
      { busAddress: 'unix:path=/nonexistent/bus' },
    );
    const outcome = await backend.prompt(request(), { signal: live() });
    expect(outcome).toMatchObject({ result: 'unavailable' });
    expect(outcome.result !== 'granted' && outcome.detail).toContain('unix:path=/nonexistent/bus');
  });

  it('polkitd dies mid-check (NoReply) → rejects ERR_PLATFORM with the D-Bus error as cause', async () => {
    const noReply = replyError(
      'org.freedesktop.DBus.Error.NoReply',
      'Message recipient disconnected from message bus without replying',
    );
    const { backend } = setup({ script: answer(noReply) });
    const error = await backend.prompt(request(), { signal: live() }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(BridgekeeperError);
    expect(error).toMatchObject({ code: 'ERR_PLATFORM', cause: noReply });
  });

  it('the bus connection drops mid-check → rejects ERR_PLATFORM', async () => {
    const { backend, binding } = setup();
    const pending = backend.prompt(request(), { signal: live() });
    await binding.authorities[0]?.nextCheck(0);
    binding.authority.close();
    await expect(pending).rejects.toMatchObject({ code: 'ERR_PLATFORM' });
  });

  it('a wrong start time ("has been replaced") → rejects ERR_PEER_CHANGED, never a grant', async () => {
    const { backend } = setup({
      script: answer(
        replyError(
          'org.freedesktop.PolicyKit1.Error.Failed',
          'process with PID 4242 has been replaced',
        ),
      ),
    });
    await expect(backend.prompt(request(), { signal: live() })).rejects.toMatchObject({
      code: 'ERR_PEER_CHANGED',
    });
  });

  it('a subject that exited (polkitd cannot read /proc/<pid>) → rejects ERR_PEER_CHANGED', async () => {
    const { backend } = setup({
      script: answer(
        replyError(
          'org.gtk.GDBus.UnmappedGError.Quark._g_2dfile_2derror_2dquark.Code4',
          'Failed to open file “/proc/4242/status”: No such file or directory',
        ),
      ),
    });
    await expect(backend.prompt(request(), { signal: live() })).rejects.toMatchObject({
      code: 'ERR_PEER_CHANGED',
    });
  });

  it.each([
    ['a malformed reply', new PolkitBusError('malformed', 'CheckAuthorization returned garbage')],
    ['an unknown polkit error', replyError('org.freedesktop.PolicyKit1.Error.Failed', 'boom')],
    [
      'another user (not an owner)',
      replyError(
        'org.freedesktop.PolicyKit1.Error.NotAuthorized',
        'Only trusted callers (e.g. uid 0 or an action owner) can use CheckAuthorization() for subjects belonging to other identities',
      ),
    ],
    ['access denied by the bus', replyError('org.freedesktop.DBus.Error.AccessDenied', 'no')],
  ])('%s → rejects ERR_PLATFORM', async (_name, failure) => {
    const { backend } = setup({ script: answer(failure) });
    await expect(backend.prompt(request(), { signal: live() })).rejects.toMatchObject({
      code: 'ERR_PLATFORM',
    });
  });

  it('through the authorizer, a broken polkit is ERR_PROMPT_FAILED and never a grant', async () => {
    const { backend } = setup({
      script: answer(replyError('org.freedesktop.DBus.Error.NoReply', 'polkitd went away')),
    });
    const authorizer = new Authorizer({ prompt: backend, denialCooldownMs: 0 });
    const session: SessionCredential = {
      id: 'terminal:abc',
      scope: 'terminal',
      process: { host: 'GNOME Terminal' },
    };
    await expect(
      authorizer.authorize({
        session,
        account: { id: 'work', displayName: 'Work' },
        subject: SUBJECT,
      }),
    ).rejects.toMatchObject({ code: 'ERR_PROMPT_FAILED' });
    expect(authorizer.listGrants()).toEqual([]);
    authorizer.close();
  });
});

describe('polkit backend: the subject is the peer process', () => {
  it('sends pid, start time (as uint64) and uid, with AllowUserInteraction', async () => {
    const { backend, binding } = setup({ script: answer(AUTHORIZED) });
    await backend.prompt(request(), { signal: live() });
    const [check] = binding.checks;
    expect(check?.subject).toEqual({ pid: 4242, startTime: 123456n, uid: 1000 });
    expect(check?.actionId).toBe(ACTION_ID);
    expect(check?.flags).toBe(1);
  });

  it('keeps start times beyond 2^53 exact', async () => {
    const { backend, binding } = setup({ script: answer(AUTHORIZED) });
    await backend.prompt(request({ subject: { ...SUBJECT, startTime: '18446744073709551615' } }), {
      signal: live(),
    });
    expect(binding.checks[0]?.subject.startTime).toBe(18446744073709551615n);
  });

  it.each([
    ['no subject', undefined],
    ['no start time', { pid: 4242, uid: 1000 }],
    ['no uid', { pid: 4242, startTime: '1' }],
    ['a non-numeric start time', { pid: 4242, startTime: '12abc', uid: 1000 }],
    ['a start time beyond uint64', { pid: 4242, startTime: '18446744073709551616', uid: 1000 }],
    ['pid 0', { pid: 0, startTime: '1', uid: 1000 }],
    ['a negative uid', { pid: 4242, startTime: '1', uid: -1 }],
  ])('refuses %s with ERR_PEER_UNKNOWN, without asking polkit', async (_name, subject) => {
    const { backend, binding } = setup({ script: answer(AUTHORIZED) });
    await expect(
      backend.prompt(request({ subject: subject as PromptRequest['subject'] }), {
        signal: live(),
      }),
    ).rejects.toMatchObject({ code: 'ERR_PEER_UNKNOWN' });
    expect(binding.checks).toEqual([]);
  });
});

describe('polkit backend: details', () => {
  it('sends the account display name and the process (program in host), nothing the client claimed', async () => {
    const { backend, binding } = setup({ script: answer(AUTHORIZED) });
    await backend.prompt(request(), { signal: live() });
    expect(binding.checks[0]?.details).toEqual({
      account: 'Work',
      process: 'bk-secrets in GNOME Terminal',
    });
  });

  it('adds the client claims only when asked, labelled as unverified', () => {
    const details = promptDetails(request(), true);
    expect(details['client-claims']).toBe(
      'unverified, the client says: it is "deploy-script"; reason: "deploying"',
    );
    expect(Object.keys(promptDetails(request()))).toEqual(['account', 'process']);
  });

  it('says when approving unlocks the app', () => {
    expect(promptDetails(request({ unlocks: true })).unlocks).toMatch(/unlocks the app/);
  });

  it('strips control characters, line breaks and bidi overrides, and bounds the length', () => {
    const details = promptDetails(
      request({
        account: { id: 'x', displayName: 'Work\nApprove everything\u202Eevil\u0007' },
        process: { host: `GNOME\r\nTerminal${'x'.repeat(500)}`, program: 'bk' },
      }),
    );
    expect(details.account).toBe('Work Approve everythingevil');
    expect(details.process).not.toMatch(/[\r\n]/);
    expect([...(details.process ?? '')].length).toBeLessThanOrEqual(200);
    expect(details.process?.endsWith('…')).toBe(true);
  });

  it('names the host alone when the program is the host or unknown', () => {
    expect(promptDetails(request({ process: { host: 'SSH session' } })).process).toBe(
      'SSH session',
    );
    expect(promptDetails(request({ process: { host: 'code', program: 'code' } })).process).toBe(
      'code',
    );
  });

  it('never sends polkit.* keys, whatever the request holds', () => {
    const details = promptDetails(
      request({ claims: { name: 'polkit.message', reason: 'polkit.message' } }),
      true,
    );
    expect(Object.keys(details).some((key) => key.startsWith('polkit.'))).toBe(false);
  });

  it('when polkit refuses details (not an action owner), asks again without them and stops sending them', async () => {
    const { backend, binding } = setup({
      script: (check) =>
        Object.keys(check.details).length > 0
          ? replyError(
              'org.freedesktop.PolicyKit1.Error.NotAuthorized',
              'Only trusted callers (e.g. uid 0 or an action owner) can use CheckAuthorization() and pass details',
            )
          : AUTHORIZED,
    });
    await expect(backend.prompt(request(), { signal: live() })).resolves.toEqual({
      result: 'granted',
    });
    await backend.prompt(request(), { signal: live() });
    expect(binding.checks.map((check) => Object.keys(check.details).length)).toEqual([2, 0, 0]);
  });

  it('sends no details with details: false', async () => {
    const { backend, binding } = setup({ script: answer(AUTHORIZED) }, { details: false });
    await backend.prompt(request(), { signal: live() });
    expect(binding.checks[0]?.details).toEqual({});
  });
});

describe('polkit backend: cancellation', () => {
  it('an aborted signal → CancelCheckAuthorization with the check’s cancellation id → cancelled', async () => {
    const { backend, binding } = setup();
    const controller = new AbortController();
    const pending = backend.prompt(request(), { signal: controller.signal });
    const check = await binding.authorities[0]!.nextCheck(0);
    controller.abort();
    await expect(pending).resolves.toMatchObject({ result: 'cancelled' });
    expect(binding.authority.cancels).toEqual([check.cancellationId]);
    expect(check.settled).toBe(true);
  });

  it('never grants after the signal fired, even if polkit says yes as it is cancelled', async () => {
    const { backend, binding } = setup();
    const controller = new AbortController();
    const pending = backend.prompt(request(), { signal: controller.signal });
    const check = await binding.authorities[0]!.nextCheck(0);
    binding.authority.ignoreCancels = true;
    controller.abort();
    check.resolve(AUTHORIZED);
    await expect(pending).resolves.toMatchObject({ result: 'cancelled' });
  });

  it('settles cancelled after the grace period when polkit never answers the cancelled check', async () => {
    const { backend, binding } = setup({}, { cancelGraceMs: 30 });
    const controller = new AbortController();
    const pending = backend.prompt(request(), { signal: controller.signal });
    await binding.authorities[0]!.nextCheck(0);
    binding.authority.ignoreCancels = true;
    const started = performance.now();
    controller.abort();
    await expect(pending).resolves.toMatchObject({ result: 'cancelled' });
    expect(performance.now() - started).toBeLessThan(500);
  });

  it('an already-aborted signal → cancelled without connecting', async () => {
    const { backend, binding } = setup({ script: answer(AUTHORIZED) });
    await expect(backend.prompt(request(), { signal: AbortSignal.abort() })).resolves.toMatchObject(
      { result: 'cancelled' },
    );
    expect(binding.connects).toEqual([]);
  });

  it('aborted while connecting → cancelled, and no check is sent', async () => {
    const { backend, binding } = setup({ connect: 'hang' });
    const controller = new AbortController();
    const pending = backend.prompt(request(), { signal: controller.signal });
    controller.abort();
    await expect(pending).resolves.toMatchObject({ result: 'cancelled' });
    expect(binding.checks).toEqual([]);
  });

  it('gives concurrent checks distinct cancellation ids and cancels only the aborted one', async () => {
    const { backend, binding } = setup();
    const first = new AbortController();
    const a = backend.prompt(request(), { signal: first.signal });
    const b = backend.prompt(request(), { signal: live() });
    const [checkA, checkB] = await Promise.all([
      binding.authorities[0]!.nextCheck(0),
      binding.authorities[0]!.nextCheck(1),
    ]);
    expect(checkA.cancellationId).not.toBe(checkB.cancellationId);
    first.abort();
    await expect(a).resolves.toMatchObject({ result: 'cancelled' });
    expect(binding.authority.cancels).toEqual([checkA.cancellationId]);
    checkB.resolve(AUTHORIZED);
    await expect(b).resolves.toEqual({ result: 'granted' });
  });
});

describe('polkit backend: connection', () => {
  it('shares one system bus connection between prompts, and reopens it after it dropped', async () => {
    const { backend, binding } = setup({ script: answer(AUTHORIZED) });
    await backend.prompt(request(), { signal: live() });
    await backend.prompt(request(), { signal: live() });
    expect(binding.connects).toHaveLength(1);
    binding.authority.close();
    await backend.prompt(request(), { signal: live() });
    expect(binding.connects).toHaveLength(2);
    await backend.close();
    await backend.close();
    expect(binding.authority.closed).toBe(true);
  });

  it('connects to DBUS_SYSTEM_BUS_ADDRESS by default, else the standard path, with a time limit', async () => {
    const saved = process.env.DBUS_SYSTEM_BUS_ADDRESS;
    try {
      delete process.env.DBUS_SYSTEM_BUS_ADDRESS;
      const standard = setup({ script: answer(AUTHORIZED) });
      await standard.backend.isAvailable();
      expect(standard.binding.connects[0]?.address).toBe('unix:path=/run/dbus/system_bus_socket');
      expect(standard.binding.connects[0]?.signal).toBeInstanceOf(AbortSignal);
      process.env.DBUS_SYSTEM_BUS_ADDRESS = 'unix:path=/tmp/other-bus';
      const fromEnv = setup({ script: answer(AUTHORIZED) });
      await fromEnv.backend.isAvailable();
      expect(fromEnv.binding.connects[0]?.address).toBe('unix:path=/tmp/other-bus');
    } finally {
      if (saved === undefined) delete process.env.DBUS_SYSTEM_BUS_ADDRESS;
      else process.env.DBUS_SYSTEM_BUS_ADDRESS = saved;
    }
  });
});

describe('polkit backend: isAvailable and diagnose', () => {
  it('is available when the bus and polkitd answer and the action is installed', async () => {
    const { backend } = setup();
    await expect(backend.isAvailable()).resolves.toBe(true);
    const diagnosis = await backend.diagnose();
    expect(diagnosis).toMatchObject({
      available: true,
      actionId: ACTION_ID,
      owner: 'unix-user:root',
    });
  });

  it('is not available when the action is not installed, and says which file to install', async () => {
    const { backend } = setup({ actions: [action('org.other.action')] });
    await expect(backend.isAvailable()).resolves.toBe(false);
    const diagnosis = await backend.diagnose();
    expect(diagnosis).toMatchObject({ available: false, problem: 'action-missing' });
    expect(diagnosis.detail).toContain(`/usr/share/polkit-1/actions/${ACTION_ID}.policy`);
  });

  it('is not available without a system bus', async () => {
    const { backend } = setup({ connect: new PolkitBusError('unreachable', 'ENOENT') });
    await expect(backend.isAvailable()).resolves.toBe(false);
    await expect(backend.diagnose()).resolves.toMatchObject({ problem: 'bus-unreachable' });
  });

  it('is not available when polkitd does not own its name', async () => {
    const { backend, binding } = setup();
    await backend.isAvailable();
    binding.authority.enumerate = replyError('org.freedesktop.DBus.Error.ServiceUnknown', 'none');
    await expect(backend.diagnose()).resolves.toMatchObject({ problem: 'polkitd-unavailable' });
  });

  it('answers false within its time limit when polkitd hangs', async () => {
    const { backend, binding } = setup({}, { timeoutMs: 50 });
    await backend.isAvailable();
    binding.authority.enumerate = 'hang';
    const started = performance.now();
    await expect(backend.isAvailable()).resolves.toBe(false);
    expect(performance.now() - started).toBeLessThan(1_000);
    await expect(backend.diagnose()).resolves.toMatchObject({ problem: 'timeout' });
  });

  it('answers false at once for an aborted signal', async () => {
    const { backend, binding } = setup();
    await expect(backend.isAvailable({ signal: AbortSignal.abort() })).resolves.toBe(false);
    expect(binding.connects).toEqual([]);
  });

  it('never throws, even when the binding throws synchronously', async () => {
    const binding = new FakeBinding();
    binding.connect = () => {
      throw new Error('broken binding');
    };
    const backend = createPolkitBackend({ actionId: ACTION_ID }, { binding });
    await expect(backend.isAvailable()).resolves.toBe(false);
  });
});

describe('createPolkitBackend options', () => {
  it.each([
    ['a missing action id', {}],
    ['an uppercase action id', { actionId: 'Com.Example.Use' }],
    ['an action id without a dot', { actionId: 'useaccount' }],
    ['a zero timeout', { actionId: ACTION_ID, timeoutMs: 0 }],
    ['a negative cancel grace', { actionId: ACTION_ID, cancelGraceMs: -1 }],
  ])('rejects %s with ERR_INVALID_ARGUMENT', (_name, options) => {
    expect(() => createPolkitBackend(options as PolkitBackendOptions)).toThrow(
      expect.objectContaining({ code: 'ERR_INVALID_ARGUMENT' }),
    );
  });

  it('tells where its action file belongs', () => {
    const backend = createPolkitBackend({ actionId: ACTION_ID });
    expect(backend.actionFilePath).toBe(`/usr/share/polkit-1/actions/${ACTION_ID}.policy`);
  });
});
