/**
 * Combining peer policies: all of them, or any of them.
 *
 * @module
 */

import { createError } from '../errors.js';
import { type PeerPolicy, type PolicyDecision, runPolicy } from './peer-policy.js';

function checkPolicies(kind: string, policies: readonly PeerPolicy[]): void {
  if (policies.length === 0) {
    // allOf() would admit everyone and anyOf() no one; both are more likely a mistake than a wish.
    throw createError('ERR_INVALID_ARGUMENT', `${kind}() needs at least one policy.`);
  }
  for (const policy of policies) {
    if (
      typeof policy !== 'object' ||
      policy === null ||
      typeof policy.check !== 'function' ||
      typeof policy.name !== 'string'
    ) {
      throw createError(
        'ERR_INVALID_ARGUMENT',
        `${kind}() takes peer policies ({ name, check }), not ${String(policy)}.`,
      );
    }
  }
}

/**
 * A policy that admits a peer only when **every** one of `policies` does. They run in order and
 * stop at the first rejection, so put cheap policies (uid, gid) before costly ones (executable
 * hashes). A policy that throws counts as a rejection. The reason names the policy that refused:
 * `group:my-cli: peer gid 1000 is not …`.
 *
 * @throws `ERR_INVALID_ARGUMENT` when given no policies or something that is not a policy.
 *
 * @example
 * ```ts
 * const cli = allOf(requireGroup('my-cli'), allowExecutables(['/usr/bin/my-cli']));
 * ```
 */
export function allOf(...policies: PeerPolicy[]): PeerPolicy {
  checkPolicies('allOf', policies);
  const list = [...policies];
  return {
    name: `all-of(${list.map((policy) => policy.name).join(', ')})`,
    async check(peer): Promise<PolicyDecision> {
      for (const policy of list) {
        const decision = await runPolicy(policy, peer);
        if (!decision.allowed)
          return { allowed: false, reason: `${policy.name}: ${decision.reason}` };
      }
      return { allowed: true };
    },
  };
}

/**
 * A policy that admits a peer when **at least one** of `policies` does. They run in order and
 * stop at the first that admits; a policy that throws counts as a rejection. When none admits,
 * the reason lists each policy's: `none admitted the peer: group:my-cli: …; executable:/usr/bin/node: …`.
 *
 * @throws `ERR_INVALID_ARGUMENT` when given no policies or something that is not a policy.
 *
 * @example
 * ```ts
 * // The setgid CLI, or the app's own helper binary.
 * const trusted = anyOf(requireGroup('my-cli'), allowExecutables(['/opt/my-app/helper']));
 * ```
 */
export function anyOf(...policies: PeerPolicy[]): PeerPolicy {
  checkPolicies('anyOf', policies);
  const list = [...policies];
  return {
    name: `any-of(${list.map((policy) => policy.name).join(', ')})`,
    async check(peer): Promise<PolicyDecision> {
      const reasons: string[] = [];
      for (const policy of list) {
        const decision = await runPolicy(policy, peer);
        if (decision.allowed) return { allowed: true };
        reasons.push(`${policy.name}: ${decision.reason}`);
      }
      return { allowed: false, reason: `none admitted the peer: ${reasons.join('; ')}` };
    },
  };
}
