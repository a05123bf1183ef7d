import { beforeEach, describe, expect, it } from 'vitest';
import { BridgekeeperError } from '../../src/errors.js';
import { type Win32Bindings, Win32Error } from '../../src/platform/win32/bindings.js';
import { identifyPipePeer } from '../../src/platform/win32/identity.js';
import {
  requireAuthenticode,
  sameUserSid,
  type WindowsPolicyBindings,
} from '../../src/policy/authenticode.js';
import { allOf } from '../../src/policy/compose.js';
import { runPolicy } from '../../src/policy/peer-policy.js';
import type { WindowsHelloBindings } from '../../src/prompt/windows-hello.js';
import type { PeerIdentity } from '../../src/transport/transport.js';
import { FakeWin32, IMAGES, OTHER_SID, USER_SID } from '../platform/win32/fake-bindings.js';

// The policies and the Hello backend declare the bindings they use structurally, so that the
// package root never imports the platform module; the real bindings must fit both.
const _fits = (bindings: Win32Bindings): [WindowsPolicyBindings, WindowsHelloBindings] => [
  bindings,
  bindings,
];
void _fits;

let fake: FakeWin32;

beforeEach(() => {
  fake = new FakeWin32();
});

function peer(overrides: Partial<PeerIdentity> = {}): PeerIdentity {
  return {
    pid: 300,
    sid: USER_SID,
    startTime: '134000000000010000',
    executable: IMAGES.cli,
    source: 'named_pipe',
    ...overrides,
  };
}

function invalid(run: () => unknown): BridgekeeperError {
  try {
    run();
  } catch (error) {
    expect(error).toBeInstanceOf(BridgekeeperError);
    expect((error as BridgekeeperError).code).toBe('ERR_INVALID_ARGUMENT');
    return error as BridgekeeperError;
  }
  throw new Error('expected ERR_INVALID_ARGUMENT');
}

describe('requireAuthenticode', () => {
  it('admits a trusted signature from the configured publisher', async () => {
    fake.signatures.set(IMAGES.cli, { status: 0, signer: 'Contoso Ltd' });
    const policy = requireAuthenticode({ publisher: 'Contoso Ltd', bindings: fake });
    expect(policy.name).toBe('authenticode:"Contoso Ltd"');
    expect(await policy.check(peer())).toEqual({ allowed: true });
    expect(fake.calls.get('verifySignature')).toBe(1);
  });

  it('admits any name of a list, and an anchored pattern (stateless even with /g)', async () => {
    fake.signatures.set(IMAGES.cli, { status: 0, signer: 'Contoso Ltd' });
    const list = requireAuthenticode({ publisher: ['Fabrikam', 'Contoso Ltd'], bindings: fake });
    expect((await list.check(peer())).allowed).toBe(true);
    const pattern = requireAuthenticode({
      publisher: /^Contoso (Ltd|Inc)$/g,
      bindings: fake,
      maxCached: 0,
    });
    for (let i = 0; i < 3; i++) expect((await pattern.check(peer())).allowed).toBe(true);
  });

  it.each([
    [0x800b0100, /is not signed/],
    [0x80096010, /was changed after it was signed/],
    [0x800b0004, /publisher Windows does not trust/],
    [0x800b0109, /root Windows does not trust/],
    [0x800b010c, /revoked/],
    [2, /not found/],
    [0x80092026, /failed Authenticode verification \(0x80092026\)/],
    [-2146762496, /is not signed/], // the same HRESULT as a signed 32-bit number
  ])('refuses status %s, saying what failed', async (status, reason) => {
    fake.signatures.set(IMAGES.cli, { status, signer: 'Contoso Ltd' });
    const decision = await requireAuthenticode({
      publisher: 'Contoso Ltd',
      bindings: fake,
    }).check(peer());
    expect(decision.allowed).toBe(false);
    if (!decision.allowed) {
      expect(decision.reason).toMatch(reason);
      expect(decision.reason).toContain(IMAGES.cli);
    }
  });

  it('refuses another publisher, naming both', async () => {
    fake.signatures.set(IMAGES.cli, { status: 0, signer: 'Contoso Ltd Evil Twin' });
    const decision = await requireAuthenticode({ publisher: 'Contoso Ltd', bindings: fake }).check(
      peer(),
    );
    expect(decision).toEqual({
      allowed: false,
      reason: `${IMAGES.cli} is signed by "Contoso Ltd Evil Twin", not by "Contoso Ltd"`,
    });
  });

  it('refuses a trusted signature without a signer name', async () => {
    fake.signatures.set(IMAGES.cli, { status: 0 });
    const decision = await requireAuthenticode({ publisher: 'Contoso Ltd', bindings: fake }).check(
      peer(),
    );
    expect(decision.allowed).toBe(false);
  });

  it('refuses a peer without an absolute executable path', async () => {
    const policy = requireAuthenticode({ publisher: 'Contoso Ltd', bindings: fake });
    const { executable: _executable, ...bare } = peer();
    expect((await policy.check(bare)).allowed).toBe(false);
    expect((await policy.check(peer({ executable: 'contoso.exe' }))).allowed).toBe(false);
    expect(fake.count('verifySignature')).toBe(0);
  });

  it('fails closed when the check throws or returns nonsense, and does not cache that', async () => {
    const policy = requireAuthenticode({ publisher: 'Contoso Ltd', bindings: fake });
    fake.signatures.set(IMAGES.cli, new Win32Error('WinVerifyTrust', 0x80070005));
    const decision = await policy.check(peer());
    expect(decision.allowed).toBe(false);
    if (!decision.allowed) expect(decision.reason).toMatch(/could not be checked/);
    fake.signatures.set(IMAGES.cli, { status: 0, signer: 'Contoso Ltd' });
    expect((await policy.check(peer())).allowed).toBe(true);

    const broken = requireAuthenticode({
      publisher: 'Contoso Ltd',
      bindings: { ...fake, verifySignature: () => undefined as never, processUserSid: () => '' },
    });
    expect((await broken.check(peer())).allowed).toBe(false);
  });

  it('caches per process instance only', async () => {
    fake.signatures.set(IMAGES.cli, { status: 0, signer: 'Contoso Ltd' });
    const policy = requireAuthenticode({ publisher: 'Contoso Ltd', bindings: fake });
    await policy.check(peer());
    await policy.check(peer());
    expect(fake.count('verifySignature')).toBe(1);
    // Another process of the same program, or the same pid reused: checked again.
    await policy.check(peer({ pid: 301 }));
    await policy.check(peer({ startTime: '134000000000020000' }));
    expect(fake.count('verifySignature')).toBe(3);
    // A refusal is cached too (the image of a process never changes)…
    fake.signatures.set(IMAGES.node, { status: 0x800b0100 });
    const node = peer({ pid: 302, executable: IMAGES.node });
    await policy.check(node);
    await policy.check(node);
    expect(fake.count('verifySignature')).toBe(4);
    // …and an identity without pid and creation time is never cached.
    const { pid: _pid, startTime: _startTime, ...anonymous } = peer();
    await policy.check(anonymous);
    await policy.check(anonymous);
    expect(fake.count('verifySignature')).toBe(6);
  });

  it('runs concurrent checks in parallel, without holding the JS thread', async () => {
    fake.signatures.set(IMAGES.cli, { status: 0, signer: 'Contoso Ltd' });
    fake.signatureDelayMs = 300;
    const policy = requireAuthenticode({ publisher: 'Contoso Ltd', bindings: fake });
    // A probe on the event loop: it must keep ticking while both checks are pending.
    let ticks = 0;
    let maxGap = 0;
    let last = performance.now();
    const probe = setInterval(() => {
      const now = performance.now();
      maxGap = Math.max(maxGap, now - last);
      last = now;
      ticks++;
    }, 10);
    const started = performance.now();
    try {
      const decisions = await Promise.all([
        policy.check(peer({ pid: 301 })),
        policy.check(peer({ pid: 302 })),
      ]);
      const elapsed = performance.now() - started;
      expect(decisions).toEqual([{ allowed: true }, { allowed: true }]);
      expect(fake.maxSignaturesInFlight).toBe(2);
      // Serialised checks would take 600 ms or more.
      expect(elapsed).toBeLessThan(550);
      expect(ticks).toBeGreaterThan(5);
      expect(maxGap).toBeLessThan(150);
    } finally {
      clearInterval(probe);
    }
    // The signal reaches the bindings.
    expect(fake.signatureSignals).toHaveLength(2);
    for (const signal of fake.signatureSignals) expect(signal).toBeInstanceOf(AbortSignal);
  });

  it('refuses a check that takes longer than timeoutMs, aborts it, and does not cache that', async () => {
    fake.signatures.set(IMAGES.cli, { status: 0, signer: 'Contoso Ltd' });
    fake.signatureDelayMs = Number.POSITIVE_INFINITY;
    const policy = requireAuthenticode({
      publisher: 'Contoso Ltd',
      bindings: fake,
      timeoutMs: 50,
    });
    const started = performance.now();
    const decision = await policy.check(peer());
    expect(performance.now() - started).toBeLessThan(1000);
    expect(decision).toEqual({
      allowed: false,
      reason: `the signature check of ${IMAGES.cli} timed out after 50 ms (is the file on a slow or unreachable drive?)`,
    });
    expect(fake.signatureSignals[0]?.aborted).toBe(true);
    expect(fake.signaturesInFlight).toBe(0);
    // Not cached: the next check of the same process runs again.
    fake.signatureDelayMs = 0;
    expect(await policy.check(peer())).toEqual({ allowed: true });
    expect(fake.count('verifySignature')).toBe(2);
  });

  it('times out even when the bindings ignore the signal', async () => {
    let release: (() => void) | undefined;
    const stuck: WindowsPolicyBindings = {
      processUserSid: () => USER_SID,
      verifySignature: () =>
        new Promise((resolve) => {
          release = () => resolve({ status: 0, signer: 'Contoso Ltd' });
        }),
    };
    const policy = requireAuthenticode({
      publisher: 'Contoso Ltd',
      bindings: stuck,
      timeoutMs: 30,
    });
    const decision = await policy.check(peer());
    expect(decision.allowed).toBe(false);
    if (!decision.allowed) expect(decision.reason).toMatch(/timed out after 30 ms/);
    release?.(); // the late result is dropped
  });

  it('bounds its cache', async () => {
    fake.signatures.set(IMAGES.cli, { status: 0, signer: 'Contoso Ltd' });
    const policy = requireAuthenticode({ publisher: 'Contoso Ltd', bindings: fake, maxCached: 2 });
    for (const pid of [1, 2, 3, 1]) await policy.check(peer({ pid }));
    expect(fake.count('verifySignature')).toBe(4);
  });

  it('refuses (never throws) when the native bindings cannot be loaded', async () => {
    if (process.platform === 'win32') return;
    const decision = await runPolicy(requireAuthenticode({ publisher: 'Contoso Ltd' }), peer());
    expect(decision.allowed).toBe(false);
    if (!decision.allowed) expect(decision.reason).toMatch(/could not be checked/);
  });

  it('rejects bad configuration at construction', () => {
    invalid(() => requireAuthenticode(undefined as never));
    invalid(() => requireAuthenticode({ publisher: '' }));
    invalid(() => requireAuthenticode({ publisher: '  ' }));
    invalid(() => requireAuthenticode({ publisher: [] }));
    invalid(() => requireAuthenticode({ publisher: ['Contoso', ''] }));
    invalid(() => requireAuthenticode({ publisher: 42 as never }));
    expect(invalid(() => requireAuthenticode({ publisher: /Contoso/ })).message).toMatch(
      /anchored/,
    );
    invalid(() => requireAuthenticode({ publisher: /^Contoso/ }));
    invalid(() => requireAuthenticode({ publisher: /^Contoso\$/ }));
    invalid(() => requireAuthenticode({ publisher: 'Contoso', maxCached: -1 }));
    invalid(() => requireAuthenticode({ publisher: 'Contoso', timeoutMs: 0 }));
    invalid(() => requireAuthenticode({ publisher: 'Contoso', timeoutMs: Number.NaN }));
    invalid(() => requireAuthenticode({ publisher: 'Contoso', timeoutMs: '10' as never }));
  });

  it('composes with sameUserSid, both directions alike', async () => {
    fake.signatures.set(IMAGES.cli, { status: 0, signer: 'Contoso Ltd' });
    const policy = allOf(
      sameUserSid({ bindings: fake }),
      requireAuthenticode({ publisher: 'Contoso Ltd', bindings: fake }),
    );
    expect((await policy.check(peer())).allowed).toBe(true);
    const decision = await policy.check(peer({ sid: OTHER_SID }));
    expect(decision.allowed).toBe(false);
    if (!decision.allowed) expect(decision.reason).toMatch(/^same-user: /);
  });

  it('checks a real identity from the platform module', async () => {
    fake.spawn({ pid: 300, image: IMAGES.cli });
    fake.signatures.set(IMAGES.cli, { status: 0, signer: 'Contoso Ltd' });
    const identity = identifyPipePeer(fake, 300);
    const policy = requireAuthenticode({ publisher: 'Contoso Ltd', bindings: fake });
    expect((await policy.check(identity)).allowed).toBe(true);
  });
});

describe('sameUserSid', () => {
  it("admits our own user's SID (case-insensitively), read once, lazily", async () => {
    const policy = sameUserSid({ bindings: fake });
    expect(policy.name).toBe('same-user');
    expect(fake.count('processUserSid')).toBe(0);
    expect(await policy.check(peer())).toEqual({ allowed: true });
    expect(await policy.check(peer({ sid: USER_SID.toLowerCase() }))).toEqual({ allowed: true });
    expect(fake.count('processUserSid')).toBe(1);
  });

  it('refuses another user, and a peer without a SID', async () => {
    const policy = sameUserSid({ bindings: fake });
    expect(await policy.check(peer({ sid: OTHER_SID }))).toEqual({
      allowed: false,
      reason: `the peer runs as ${OTHER_SID}, not as this user (${USER_SID})`,
    });
    const { sid: _sid, ...bare } = peer();
    expect((await policy.check(bare)).allowed).toBe(false);
    expect((await policy.check(peer({ sid: 'root' }))).allowed).toBe(false);
  });

  it('takes an explicit SID, and refuses one that is not a SID', async () => {
    const policy = sameUserSid({ sid: OTHER_SID, bindings: fake });
    expect((await policy.check(peer({ sid: OTHER_SID }))).allowed).toBe(true);
    expect((await policy.check(peer())).allowed).toBe(false);
    expect(fake.count('processUserSid')).toBe(0);
    invalid(() => sameUserSid({ sid: 'wendy' }));
  });

  it('refuses when our own SID cannot be read, and tries again next time', async () => {
    fake.selfSid = new Win32Error('OpenProcessToken', 5);
    const policy = sameUserSid({ bindings: fake });
    const decision = await policy.check(peer());
    expect(decision.allowed).toBe(false);
    if (!decision.allowed) expect(decision.reason).toMatch(/could not be read/);
    fake.selfSid = USER_SID;
    expect((await policy.check(peer())).allowed).toBe(true);
  });
});
