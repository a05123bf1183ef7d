/**
 * The simplest server-side credential provider: one session per peer process (pid + start
 * time). Used where no platform module places a peer in a terminal session — the in-memory
 * transport, embedding, tests. Still derived only from the OS-reported (or test-set) identity.
 *
 * @module
 */

import { createError } from '../errors.js';
import type { PeerIdentity } from '../transport/transport.js';
import type { SessionCredential, SessionCredentialProvider } from './credentials.js';

/**
 * A provider that gives every peer process its own `process`-scoped session, keyed on its pid
 * and start time.
 *
 * @throws `ERR_PEER_UNKNOWN` (from `derive`) when the identity has no pid or no start time.
 * @example
 * ```ts
 * const server = createServer({ app: 'demo', prompt, credentials: perProcessCredentials() });
 * ```
 */
export function perProcessCredentials(): SessionCredentialProvider {
  return {
    async derive(peer: PeerIdentity): Promise<SessionCredential> {
      if (peer.pid === undefined || peer.startTime === undefined) {
        throw createError(
          'ERR_PEER_UNKNOWN',
          'The peer has no verified pid and start time, so it cannot be placed in a session.',
        );
      }
      return {
        id: `process:${peer.pid}:${peer.startTime}`,
        scope: 'process',
        process: {
          host: peer.executable ?? `process ${peer.pid}`,
          pid: peer.pid,
          ...(peer.executable === undefined ? {} : { executable: peer.executable }),
        },
      };
    },
  };
}
