/**
 * The macOS code-signature policy: the peer process satisfies a code-signing requirement, checked
 * by Security.framework against the audit token the kernel gave for the connection. Works in
 * either direction: on the server for clients (`peerPolicies`), on the client for the server
 * (`serverPolicies`).
 *
 * @module
 */

import { createError, errorMessage } from '../errors.js';
import type { PeerIdentity } from '../transport/transport.js';
import { isCodeRequirementText } from '../util/code-requirement.js';
import { createLog } from '../util/log.js';
import type { PeerPolicy, PolicyDecision } from './peer-policy.js';

const debug = createLog('bridgekeeper:policy');

/** What a requirement check returned: the same shape as the macOS bindings' `CodeRequirementCheck`. */
export interface CodeSignatureCheck {
  readonly ok: boolean;
  readonly status: number;
}

/**
 * The part of the macOS bindings (`DarwinBindings`) this policy uses. Declared here,
 * structurally, so that tests pass fakes and the native bindings load only on the first check.
 */
export interface CodeSignatureBindings {
  /**
   * Checks the process an audit token names against a requirement (`SecCodeCopyGuestWithAttributes`
   * + `SecRequirementCreateWithString` + `SecCodeCheckValidity`).
   */
  checkCodeRequirement(auditToken: Buffer, requirement: string): CodeSignatureCheck;
}

/** Options for {@link requireCodeSignature}. */
export interface RequireCodeSignatureOptions {
  /**
   * A requirement in Apple's code-signing requirement language, e.g.
   * `anchor apple generic and certificate leaf[subject.OU] = "TEAMID"` (signed through Apple by
   * that team) or an app's designated requirement (`codesign -d -r- /Applications/X.app`).
   */
  readonly requirement: string;
  /** Native bindings (tests pass fakes). Default: loaded on the first check. */
  readonly bindings?: CodeSignatureBindings;
}

/** Code-signing `OSStatus` values (`<Security/CSCommon.h>`), with what they mean for a person. */
const STATUS_MEANINGS: ReadonlyMap<number, string> = new Map([
  [-67050, 'does not satisfy the code-signing requirement'],
  [-67062, 'is not signed'],
  [-67061, 'has an invalid signature (it was changed after it was signed)'],
  [-67060, 'has a signature that cannot be verified'],
  [-67065, 'is no longer running (the audit token names no process)'],
  [-67063, 'is no longer valid (its code was modified while it ran)'],
  [-67068, 'has no code on disk that Security.framework can find'],
  [-67052, 'could not be checked: the configured requirement does not compile'],
  [-67051, 'could not be checked: the configured requirement is not supported by this macOS'],
]);

const ALLOW: PolicyDecision = Object.freeze({ allowed: true });

function reject(reason: string): PolicyDecision {
  return { allowed: false, reason };
}

async function loadBindings(
  given: CodeSignatureBindings | undefined,
): Promise<CodeSignatureBindings> {
  if (given !== undefined) return given;
  // loadDarwinBindings loads once (and tries again after a failure).
  return (await import('../platform/darwin/bindings.js')).loadDarwinBindings();
}

/**
 * Admits only peers whose running code satisfies `requirement`, as Security.framework judges it
 * from the audit token the macOS platform module captured when it identified the connection
 * (`LOCAL_PEERTOKEN`). The token names one process instance (pid and pid version), so the check
 * is about the very process that connected: one that exited and whose pid was reused is not
 * found and refused. `SecCodeCheckValidity` checks the running code's dynamic validity and its
 * signature on disk against the requirement.
 *
 * Over the XPC transport, where no audit token is public, a peer is admitted when libxpc enforces
 * exactly this requirement on its connection (`requirement` of `connectXpc`/`listenXpc`:
 * `xpc_connection_set_peer_code_signing_requirement`, which checks every message).
 *
 * Refused, with a reason that says what failed: a peer that was not identified by the macOS
 * platform module (no audit token: another platform, the in-memory transport, or a copy of the
 * identity object), a peer that is unsigned, signed by someone else, modified, or gone, and any
 * error (fail closed). Decisions are not cached: a check costs one round of Security.framework
 * calls on the JS thread, once per connection.
 *
 * Use it on the server for clients and on the client for the server (`serverPolicies`), after
 * `sameUser()`. Pin a team (`certificate leaf[subject.OU] = "TEAMID"`) or a designated
 * requirement; `anchor apple generic` alone admits every Developer ID program.
 *
 * @throws `ERR_INVALID_ARGUMENT` at construction when `requirement` is missing, empty, or
 * contains NUL. Never throws from a check.
 *
 * @example
 * ```ts
 * const client = await connect({
 *   app: 'my-agent',
 *   serverPolicies: [
 *     sameUser(),
 *     requireCodeSignature({
 *       requirement: 'anchor apple generic and certificate leaf[subject.OU] = "ABCDE12345"',
 *     }),
 *   ],
 * });
 * ```
 */
export function requireCodeSignature(options: RequireCodeSignatureOptions): PeerPolicy {
  if (typeof options !== 'object' || options === null) {
    throw createError(
      'ERR_INVALID_ARGUMENT',
      'requireCodeSignature needs { requirement }: a code-signing requirement string.',
    );
  }
  const { requirement } = options;
  if (!isCodeRequirementText(requirement)) {
    throw createError(
      'ERR_INVALID_ARGUMENT',
      'requireCodeSignature needs a non-empty requirement without NUL characters, e.g. ' +
        '\'anchor apple generic and certificate leaf[subject.OU] = "TEAMID"\'.',
    );
  }
  return {
    name: `code-signature:${requirement}`,
    async check(peer: PeerIdentity) {
      // Imported on use: the package root loads no platform module.
      const { peerAuditToken } = await import('../platform/darwin/identity.js');
      const token = peerAuditToken(peer);
      if (token === undefined) {
        // An XPC peer: libxpc itself checks every message from it against the requirement its
        // connection was given, so exactly that requirement is as good as a check here.
        const { xpcPeerRequirement } = await import('../transport/xpc.js');
        const enforced = xpcPeerRequirement(peer);
        if (enforced === requirement) return ALLOW;
        if (enforced !== undefined) {
          return reject(
            'the peer’s XPC connection enforces another code-signing requirement than this one',
          );
        }
        if (peer.source === 'xpc') {
          return reject(
            'the peer’s XPC connection was made without a code-signing requirement: give ' +
              'connectXpc/listenXpc this `requirement`',
          );
        }
        if (peer.source.startsWith('relay:')) {
          return reject(
            'the peer came through a relay, which checks clients’ signatures itself (its ' +
              'clientPolicies); check the relay with relayPolicies',
          );
        }
        return reject(
          'the peer has no audit token: it was not identified through LOCAL_PEERTOKEN on macOS',
        );
      }
      let result: CodeSignatureCheck;
      try {
        const bindings = await loadBindings(options.bindings);
        result = bindings.checkCodeRequirement(token, requirement);
      } catch (error) {
        debug('code-signature check of pid %s failed: %O', peer.pid, error);
        return reject(`the code signature could not be checked (${errorMessage(error)})`);
      }
      if (typeof result !== 'object' || result === null) {
        return reject('Security.framework gave no answer');
      }
      const { ok, status } = result;
      if (ok === true && status === 0) return ALLOW;
      const who = `the peer process (pid ${peer.pid ?? 'unknown'})`;
      if (typeof status !== 'number' || status === 0) {
        return reject(`${who} was not confirmed to satisfy the code-signing requirement`);
      }
      const meaning =
        STATUS_MEANINGS.get(status) ?? `failed the code-signing check (OSStatus ${status})`;
      return reject(`${who} ${meaning}`);
    },
  };
}
