/**
 * The macOS platform module: peer identity from Unix sockets (`LOCAL_PEERPID`, the audit token
 * from `LOCAL_PEERTOKEN`, `kinfo_proc`), session credentials from `sysctl(KERN_PROC_PID)`, and
 * code-signing checks through Security.framework. The endpoint is the Unix socket, as on Linux.
 *
 * Loaded only through a dynamic import; {@link createDarwinPlatform} loads the native bindings
 * (koffi) unless it is given bindings, as tests do.
 *
 * @module
 */

import type { PeerIdentity } from '../../transport/transport.js';
import type { Platform } from '../platform.js';
import { type DarwinBindings, loadDarwinBindings } from './bindings.js';
import { createDarwinCredentialProvider } from './credentials.js';
import { identifySocketPeer, releasePeer, verifyPeer } from './identity.js';

export type {
  CodeRequirementCheck,
  DarwinBindings,
  DarwinNative,
  DarwinPointer,
} from './bindings.js';
export {
  AUDIT_TOKEN_SIZE,
  createDarwinBindings,
  DARWIN_CONSTANTS,
  loadDarwinBindings,
} from './bindings.js';
export type {
  DarwinCredentialOptions,
  DarwinProcessReader,
  DarwinSession,
} from './credentials.js';
export { createDarwinCredentialProvider, deriveDarwinSession } from './credentials.js';
export type { DarwinPeerReader, IdentifySocketPeerOptions } from './identity.js';
export {
  identifySocketPeer,
  LOCAL_PEERPID_SOURCE,
  peerAuditToken,
  releasePeer,
  verifyPeer,
  verifyPeerSync,
} from './identity.js';

/** Dependencies of {@link createDarwinPlatform}; all optional. */
export interface DarwinPlatformOptions {
  /** Native bindings to use instead of loading koffi (fakes in tests). */
  readonly bindings?: DarwinBindings;
}

/**
 * Creates the macOS {@link Platform} (`id: 'darwin'`), without a `defaultEndpoint`: server and
 * client use the Unix socket. Without `bindings` it loads the native ones
 * ({@link loadDarwinBindings}) now, once per process: `identifySocketPeer` is synchronous and
 * must find them loaded.
 *
 * @throws (rejects with) `ERR_UNSUPPORTED_PLATFORM` when this is not macOS, or koffi or a system
 * library cannot be loaded.
 *
 * @example
 * ```ts
 * const platform = await createDarwinPlatform();
 * const peer = platform.identifySocketPeer(fd);
 * const credential = await platform.credentials.derive(peer);
 * ```
 */
export async function createDarwinPlatform(options: DarwinPlatformOptions = {}): Promise<Platform> {
  const bindings = options.bindings ?? (await loadDarwinBindings());
  const credentials = createDarwinCredentialProvider({ bindings });
  return Object.freeze({
    id: 'darwin',
    identifySocketPeer: (fd: number) => identifySocketPeer(bindings, fd),
    credentials,
    verifyPeer: (peer: PeerIdentity) => verifyPeer(bindings, peer),
    releasePeer: (peer: PeerIdentity) => releasePeer(peer),
  } satisfies Platform);
}
