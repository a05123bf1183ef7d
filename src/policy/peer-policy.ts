/**
 * Peer policies decide, from the OS-reported identity alone, whether a process may talk to the
 * app at all. The server runs them before it reads a single byte from a connection; a peer that
 * fails one is disconnected.
 *
 * @module
 */

import type { PeerIdentity } from '../transport/transport.js';

/** A policy's verdict. */
export type PolicyDecision =
  | { readonly allowed: true }
  | {
      readonly allowed: false /** Why, for the app's event and log (never sent to the peer). */;
      readonly reason: string;
    };

/** Decides whether a peer may connect. Throwing counts as a rejection. */
export interface PeerPolicy {
  /** Short name for logs and events (`same-user`, `group:onepassword-cli`, …). */
  readonly name: string;
  check(peer: PeerIdentity): PolicyDecision | Promise<PolicyDecision>;
}

const ALLOW = Object.freeze({ allowed: true } as const);

/**
 * Admits only processes of the same user as this process (same uid on Unix). A peer whose uid
 * the OS did not report is rejected.
 *
 * @example
 * ```ts
 * createServer({ app: 'my-agent', prompt, peerPolicies: [sameUser()] });
 * ```
 */
export function sameUser(options: { uid?: number } = {}): PeerPolicy {
  const expected = options.uid ?? process.getuid?.();
  return {
    name: 'same-user',
    check(peer) {
      if (expected === undefined) {
        // No uids here (Windows): this policy cannot tell, so it refuses. Doubt is a denial.
        return {
          allowed: false,
          reason: 'this platform has no uids; use its own same-user policy',
        };
      }
      if (peer.uid === undefined)
        return { allowed: false, reason: 'the OS did not report the peer uid' };
      if (peer.uid !== expected) {
        return {
          allowed: false,
          reason: `peer uid ${peer.uid} is not this user's uid ${expected}`,
        };
      }
      return ALLOW;
    },
  };
}

/**
 * A policy from a predicate over the peer identity.
 *
 * @example
 * ```ts
 * const onlyNode = peerPredicate('node-only', (peer) => peer.executable?.endsWith('/node') ?? false);
 * ```
 */
export function peerPredicate(
  name: string,
  predicate: (peer: PeerIdentity) => boolean | Promise<boolean>,
): PeerPolicy {
  return {
    name,
    async check(peer) {
      return (await predicate(peer))
        ? ALLOW
        : { allowed: false, reason: `predicate "${name}" refused` };
    },
  };
}

/**
 * Runs one policy, turning everything but a clear `{ allowed: true }` into a rejection: a thrown
 * error, a rejected promise, or a result that is not a decision. Fail closed.
 *
 * @internal
 */
export async function runPolicy(policy: PeerPolicy, peer: PeerIdentity): Promise<PolicyDecision> {
  let decision: unknown;
  try {
    decision = await policy.check(peer);
  } catch (error) {
    return {
      allowed: false,
      reason: `policy threw: ${error instanceof Error ? error.message : String(error)}`,
    };
  }
  if (typeof decision !== 'object' || decision === null) {
    return { allowed: false, reason: 'policy returned no decision' };
  }
  const { allowed, reason } = decision as { allowed?: unknown; reason?: unknown };
  if (allowed === true) return ALLOW;
  return {
    allowed: false,
    reason: typeof reason === 'string' && reason.length > 0 ? reason : 'policy gave no reason',
  };
}

/** Result of running a list of peer policies: the first failing policy, if any. */
export type PolicyVerdict =
  | { readonly allowed: true }
  | { readonly allowed: false; readonly policy: string; readonly reason: string };

/**
 * Runs policies in order; the first rejection (or thrown error) wins. Fail closed: a peer the
 * transport could not identify fails any non-empty list, with `unidentified` as the reason.
 *
 * @internal
 */
export async function evaluatePolicies(
  policies: readonly PeerPolicy[],
  peer: PeerIdentity | undefined,
  unidentified = 'the peer could not be identified',
): Promise<PolicyVerdict> {
  if (peer === undefined) {
    return policies.length === 0
      ? ALLOW
      : { allowed: false, policy: 'identity', reason: unidentified };
  }
  for (const policy of policies) {
    const decision = await runPolicy(policy, peer);
    if (!decision.allowed) return { allowed: false, policy: policy.name, reason: decision.reason };
  }
  return ALLOW;
}
