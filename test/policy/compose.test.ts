import { describe, expect, it } from 'vitest';
import { BridgekeeperError } from '../../src/errors.js';
import { allOf, anyOf } from '../../src/policy/compose.js';
import { requireGroup } from '../../src/policy/group.js';
import {
  evaluatePolicies,
  type PeerPolicy,
  peerPredicate,
  runPolicy,
  sameUser,
} from '../../src/policy/peer-policy.js';
import type { PeerIdentity } from '../../src/transport/transport.js';

const peer: PeerIdentity = {
  pid: 4321,
  uid: 1000,
  gid: 4242,
  startTime: '123456',
  executable: '/usr/bin/my-cli',
  source: 'test',
};

/** A policy that records that it ran. */
function recording(name: string, allowed: boolean, log: string[]): PeerPolicy {
  return {
    name,
    check() {
      log.push(name);
      return allowed ? { allowed: true } : { allowed: false, reason: `${name} says no` };
    },
  };
}

/**
 * requireGroup reads /etc/passwd to refuse a gid that is some user's primary group (daemon's 1,
 * bin's 2 on Debian); an empty one keeps these tests independent of the machine's users.
 */
const noPasswd = { readFile: async (): Promise<string> => '' };

const throwing: PeerPolicy = {
  name: 'broken',
  check() {
    throw new Error('cannot open /etc/nothing');
  },
};

describe('runPolicy', () => {
  it.each([
    ['a thrown Error', () => Promise.reject(new Error('boom')), 'policy threw: boom'],
    ['a thrown string', () => Promise.reject('boom'), 'policy threw: boom'],
    ['undefined', () => undefined, 'policy returned no decision'],
    ['true (not a decision)', () => true, 'policy returned no decision'],
    ['{ allowed: "yes" }', () => ({ allowed: 'yes' }), 'policy gave no reason'],
    ['a rejection without a reason', () => ({ allowed: false }), 'policy gave no reason'],
  ])('counts %s as a rejection', async (_label, check, reason) => {
    const policy = { name: 'odd', check } as unknown as PeerPolicy;
    expect(await runPolicy(policy, peer)).toEqual({ allowed: false, reason });
    expect(await evaluatePolicies([policy], peer)).toEqual({
      allowed: false,
      policy: 'odd',
      reason,
    });
  });
});

describe('allOf', () => {
  it('admits only when every policy does, stopping at the first refusal (which it names)', async () => {
    const log: string[] = [];
    const policy = allOf(
      recording('cheap', true, log),
      recording('refuses', false, log),
      recording('costly', true, log),
    );
    expect(policy.name).toBe('all-of(cheap, refuses, costly)');
    expect(await policy.check(peer)).toEqual({
      allowed: false,
      reason: 'refuses: refuses says no',
    });
    expect(log).toEqual(['cheap', 'refuses']);
    expect(await allOf(recording('a', true, log), recording('b', true, log)).check(peer)).toEqual({
      allowed: true,
    });
  });

  it('counts a policy that throws as a refusal', async () => {
    expect(await allOf(sameUser({ uid: 1000 }), throwing).check(peer)).toEqual({
      allowed: false,
      reason: 'broken: policy threw: cannot open /etc/nothing',
    });
  });

  it('combines real policies: same user and the setgid group', async () => {
    const policy = allOf(sameUser({ uid: 1000 }), requireGroup(4242, noPasswd));
    expect(await policy.check(peer)).toEqual({ allowed: true });
    expect(await policy.check({ ...peer, gid: 1000 })).toEqual({
      allowed: false,
      reason: 'group:4242: peer gid 1000 is not gid 4242',
    });
    expect(await policy.check({ ...peer, uid: 0 })).toEqual({
      allowed: false,
      reason: "same-user: peer uid 0 is not this user's uid 1000",
    });
  });
});

describe('anyOf', () => {
  it('admits when one policy does, stopping there', async () => {
    const log: string[] = [];
    const policy = anyOf(
      recording('no', false, log),
      recording('yes', true, log),
      recording('never-asked', true, log),
    );
    expect(policy.name).toBe('any-of(no, yes, never-asked)');
    expect(await policy.check(peer)).toEqual({ allowed: true });
    expect(log).toEqual(['no', 'yes']);
  });

  it("lists every policy's reason when none admits, a throw included", async () => {
    const policy = anyOf(
      requireGroup(999, noPasswd),
      throwing,
      peerPredicate('node-only', () => false),
    );
    expect(await policy.check(peer)).toEqual({
      allowed: false,
      reason:
        'none admitted the peer: group:999: peer gid 4242 is not gid 999; ' +
        'broken: policy threw: cannot open /etc/nothing; ' +
        'node-only: predicate "node-only" refused',
    });
  });

  it('nests: (setgid group) or (same user and a known binary)', async () => {
    const policy = anyOf(
      requireGroup(999, noPasswd),
      allOf(
        sameUser({ uid: 1000 }),
        peerPredicate('my-cli', (p) => p.executable === '/usr/bin/my-cli'),
      ),
    );
    expect(policy.name).toBe('any-of(group:999, all-of(same-user, my-cli))');
    expect(await policy.check(peer)).toEqual({ allowed: true });
    expect(await policy.check({ ...peer, executable: '/usr/bin/python3' })).toEqual({
      allowed: false,
      reason:
        'none admitted the peer: group:999: peer gid 4242 is not gid 999; ' +
        'all-of(same-user, my-cli): my-cli: predicate "my-cli" refused',
    });
  });

  it('is what evaluatePolicies reports for a composite', async () => {
    expect(
      await evaluatePolicies([anyOf(requireGroup(1, noPasswd), requireGroup(2, noPasswd))], peer),
    ).toEqual({
      allowed: false,
      policy: 'any-of(group:1, group:2)',
      reason:
        'none admitted the peer: group:1: peer gid 4242 is not gid 1; group:2: peer gid 4242 is not gid 2',
    });
  });
});

describe('building compositions', () => {
  it.each([
    ['allOf()', () => allOf()],
    ['anyOf()', () => anyOf()],
    ['allOf(undefined)', () => allOf(undefined as unknown as PeerPolicy)],
    ['anyOf({})', () => anyOf({} as PeerPolicy)],
  ])('%s throws ERR_INVALID_ARGUMENT', (_label, build) => {
    let caught: unknown;
    try {
      build();
    } catch (error) {
      caught = error;
    }
    expect(caught).toBeInstanceOf(BridgekeeperError);
    expect((caught as BridgekeeperError).code).toBe('ERR_INVALID_ARGUMENT');
  });
});
