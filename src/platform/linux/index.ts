/**
 * The Linux platform module: peer identity through `SO_PEERCRED` / `SO_PEERPIDFD`, session
 * credentials from `/proc`, and prompt descriptions from the process tree.
 *
 * Loaded only through `loadPlatform()`'s dynamic import; {@link createLinuxPlatform} is the one
 * place that loads koffi.
 *
 * @module
 */

import type { Platform } from '../platform.js';
import { type LinuxBindings, loadLinuxBindings } from './bindings.js';
import { createLinuxCredentialProvider } from './credentials.js';
import { identifySocketPeer, releasePeer, verifyPeer } from './identity.js';
import type { ProcReader } from './proc.js';

export type { ErrnoError, LinuxBindings, PeerCredentials } from './bindings.js';
export { errnoError, loadLinuxBindings } from './bindings.js';
export type { LinuxCredentialOptions, LinuxSession } from './credentials.js';
export {
  createLinuxCredentialProvider,
  deriveLinuxSession,
  describeOwnSession,
} from './credentials.js';
export { identifySocketPeer, releasePeer, verifyPeer, verifyPeerSync } from './identity.js';
export type { ProcIds, ProcReader, ProcStat, ProcStatus } from './proc.js';
export {
  parseBootId,
  parseProcStat,
  parseProcStatus,
  readBootId,
  readExecutable,
  readProcStat,
  readProcStatus,
  systemProc,
  ttyName,
} from './proc.js';
export type { SessionPlacement } from './process-description.js';
export { describeProcess, knownHostName, programName } from './process-description.js';

/** Dependencies of {@link createLinuxPlatform}, for tests and embedders; all optional. */
export interface LinuxPlatformOptions {
  /** Native bindings to use instead of loading koffi (fakes in tests). */
  readonly bindings?: LinuxBindings;
  /** Where processes are read from. Default: the real `/proc`. */
  readonly proc?: ProcReader;
}

/**
 * Creates the Linux {@link Platform} (`id: 'linux'`), loading koffi on first use.
 *
 * @throws `ERR_UNSUPPORTED_PLATFORM` when koffi or libc cannot be loaded.
 *
 * @example
 * ```ts
 * const platform = await createLinuxPlatform();
 * const peer = platform.identifySocketPeer((socket as any)._handle.fd);
 * const credential = await platform.credentials.derive(peer);
 * ```
 */
export async function createLinuxPlatform(options: LinuxPlatformOptions = {}): Promise<Platform> {
  const bindings = options.bindings ?? (await loadLinuxBindings());
  const credentials = createLinuxCredentialProvider({
    bindings,
    ...(options.proc === undefined ? {} : { proc: options.proc }),
  });
  return Object.freeze({
    id: 'linux',
    identifySocketPeer: (fd: number) => identifySocketPeer(bindings, fd),
    credentials,
    verifyPeer: (peer) => verifyPeer(bindings, peer),
    releasePeer: (peer) => releasePeer(bindings, peer),
  } satisfies Platform);
}
