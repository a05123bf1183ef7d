/**
 * The session this very process belongs to, computed by the same rules the server applies to
 * its peers — for a CLI's `whoami`-style diagnostics ("this terminal is one session; approving
 * it covers its subshells"). The server never uses it: grants follow only the server's own
 * derivation from the kernel's view of the peer.
 *
 * @module
 */

import { createError } from '../errors.js';
import type { SessionCredential } from './credentials.js';

/**
 * Computes this process's own session credential, as the app would derive it for a connection
 * from this process. Loads no native code.
 *
 * @throws `ERR_UNSUPPORTED_PLATFORM` where Bridgekeeper has no session rules yet;
 *   `ERR_PEER_UNKNOWN` when the OS would not say.
 * @example
 * ```ts
 * import { connect, describeOwnSession } from 'bridgekeeper';
 *
 * const mine = await describeOwnSession();
 * const client = await connect({ app: 'secrets-agent' });
 * console.log(mine.id === client.session.id ? 'as expected' : 'the app sees this process differently');
 * ```
 */
export async function describeOwnSession(
  options: { signal?: AbortSignal } = {},
): Promise<SessionCredential> {
  switch (process.platform) {
    case 'linux': {
      const linux = await import('../platform/linux/credentials.js');
      return (await linux.describeOwnSession(options.signal ? { signal: options.signal } : {}))
        .credential;
    }
    default:
      throw createError(
        'ERR_UNSUPPORTED_PLATFORM',
        `Bridgekeeper has no session rules for ${process.platform} yet, so it cannot describe this process's session.`,
      );
  }
}
