import { describe, expect, it } from 'vitest';
import { identifySocketPeer } from '../../src/platform/darwin/identity.js';
import { requireCodeSignature } from '../../src/policy/code-signature.js';
import { runPolicy } from '../../src/policy/peer-policy.js';
import { connectXpc, listenXpc } from '../../src/transport/xpc.js';
import { auditToken, FakeDarwinBindings, PATHS } from '../platform/darwin/fake-darwin.js';
import { FakeXpc, FakeXpcWorld } from '../support/fake-xpc.js';

const TEAM = 'anchor apple generic and certificate leaf[subject.OU] = "ABCDE12345"';

function setup() {
  const fake = new FakeDarwinBindings();
  fake.spawn({ pid: 200, path: PATHS.cli });
  fake.connect(7, 200, auditToken(200, { pidversion: 9 }));
  return { fake, peer: identifySocketPeer(fake, 7) };
}

describe('requireCodeSignature', () => {
  it('admits a peer whose audit token satisfies the requirement', async () => {
    const { fake, peer } = setup();
    const policy = requireCodeSignature({ requirement: TEAM, bindings: fake });
    expect(policy.name).toBe(`code-signature:${TEAM}`);
    await expect(policy.check(peer)).resolves.toEqual({ allowed: true });
    expect(fake.checks).toEqual([{ token: auditToken(200, { pidversion: 9 }), requirement: TEAM }]);
  });

  it('refuses, saying why, for each code-signing failure', async () => {
    const { fake, peer } = setup();
    const policy = requireCodeSignature({ requirement: TEAM, bindings: fake });
    for (const [status, reason] of [
      [-67050, /does not satisfy the code-signing requirement/],
      [-67062, /is not signed/],
      [-67061, /invalid signature/],
      [-67065, /no longer running/],
      [-67052, /requirement does not compile/],
      [-12345, /OSStatus -12345/],
    ] as const) {
      fake.codeRequirement = () => ({ ok: false, status });
      const decision = await policy.check(peer);
      expect(decision).toMatchObject({ allowed: false, reason: expect.stringMatching(reason) });
    }
  });

  it('fails closed on contradictory or missing answers and on errors', async () => {
    const { fake, peer } = setup();
    const policy = requireCodeSignature({ requirement: TEAM, bindings: fake });
    fake.codeRequirement = () => ({ ok: true, status: -67050 });
    await expect(policy.check(peer)).resolves.toMatchObject({ allowed: false });
    fake.codeRequirement = () => ({ ok: false, status: 0 });
    await expect(policy.check(peer)).resolves.toMatchObject({ allowed: false });
    fake.codeRequirement = () => undefined as never;
    await expect(policy.check(peer)).resolves.toMatchObject({ allowed: false });
    fake.codeRequirement = () => {
      throw new Error('CoreFoundation could not create a CFData');
    };
    await expect(policy.check(peer)).resolves.toMatchObject({
      allowed: false,
      reason: expect.stringMatching(/could not be checked.*CFData/),
    });
  });

  it('refuses a peer without an audit token (a copy, another platform, in-memory)', async () => {
    const { fake, peer } = setup();
    const policy = requireCodeSignature({ requirement: TEAM, bindings: fake });
    for (const other of [
      { ...peer },
      { pid: 200, uid: 501, source: 'so_peercred' },
      { source: 'memory' },
    ]) {
      await expect(policy.check(other)).resolves.toMatchObject({
        allowed: false,
        reason: expect.stringMatching(/no audit token/),
      });
    }
    // Says why for an XPC peer without a requirement, and for a relayed one.
    await expect(policy.check({ pid: 200, source: 'xpc' })).resolves.toMatchObject({
      allowed: false,
      reason: expect.stringMatching(/without a code-signing requirement/),
    });
    await expect(policy.check({ pid: 200, source: 'relay:xpc' })).resolves.toMatchObject({
      allowed: false,
      reason: expect.stringMatching(/came through a relay/),
    });
    expect(fake.checks).toHaveLength(0);
  });

  it('refuses when the native bindings cannot load (not macOS)', async () => {
    if (process.platform === 'darwin') return;
    const { peer } = setup();
    const decision = await runPolicy(requireCodeSignature({ requirement: TEAM }), peer);
    expect(decision).toMatchObject({
      allowed: false,
      reason: expect.stringMatching(/could not be checked/),
    });
  });

  it('validates the requirement at construction', () => {
    for (const options of [
      undefined,
      null,
      {},
      { requirement: '' },
      { requirement: '  ' },
      { requirement: 'a\0b' },
      { requirement: 7 },
    ]) {
      expect(() => requireCodeSignature(options as never)).toThrow(
        expect.objectContaining({ code: 'ERR_INVALID_ARGUMENT' }),
      );
    }
  });

  it('admits an XPC peer whose connection libxpc checks against exactly this requirement', async () => {
    const world = new FakeXpcWorld();
    world.register('com.example.relay');
    const relayRequirement = `${TEAM} and identifier "com.example.relay"`;
    const server = new FakeXpc(world, { pid: 400, euid: 501, satisfies: [relayRequirement] });
    const client = new FakeXpc(world, { pid: 200, euid: 501 });
    const listener = await listenXpc({ service: 'com.example.relay', bindings: server });
    listener.onConnection(() => {});
    const transport = await connectXpc({
      service: 'com.example.relay',
      requirement: relayRequirement,
      bindings: client,
    });
    const fake = new FakeDarwinBindings();
    const check = (requirement: string, peer = transport.peer!) =>
      requireCodeSignature({ requirement, bindings: fake }).check(peer);
    await expect(check(relayRequirement)).resolves.toEqual({ allowed: true });
    // Another requirement (even a weaker one) is not what libxpc checks: refused.
    await expect(check(TEAM)).resolves.toMatchObject({
      allowed: false,
      reason: expect.stringMatching(/another code-signing requirement/),
    });
    // A copy of the identity proves nothing.
    await expect(check(relayRequirement, { ...transport.peer! })).resolves.toMatchObject({
      allowed: false,
    });
    expect(fake.checks).toHaveLength(0);
    transport.destroy();
    await listener.close();
    await world.idle();
  });
});
