/**
 * Peer identity on macOS: who is on the other end of a Unix socket, from the kernel, and whether
 * it is still the same process later.
 *
 * The socket names the peer's pid (`LOCAL_PEERPID`) and its audit token (`LOCAL_PEERTOKEN`).
 * Around the pid the identity carries the process's start time (`p_starttime` of its
 * `kinfo_proc`, µs since 1970 as a decimal string — the unit of `./credentials.ts`), its
 * effective uid (`cr_uid`) and its executable (`proc_pidpath`). The start time is read again
 * after the other reads, so a pid that was reused while they ran is refused.
 *
 * The audit token is not a `PeerIdentity` field (it is not JSON and means nothing off macOS): it
 * is kept here, per identity **object**, and handed to the code-signature policy through
 * {@link peerAuditToken}. A token names one process instance (pid + pid version), so
 * Security.framework checks the very process that connected, or nothing.
 *
 * macOS holds no per-connection resource (no pidfd), so {@link releasePeer} does nothing.
 *
 * @module
 */

import { PeerError } from '../../errors.js';
import type { PeerIdentity } from '../../transport/transport.js';
import { createLog } from '../../util/log.js';
import type { DarwinProcessReader } from './credentials.js';
import { hasExited, type KinfoProc } from './kinfo.js';

const debug = createLog('bridgekeeper:darwin');

/** `PeerIdentity.source` of identities from this module. */
export const LOCAL_PEERPID_SOURCE = 'local_peerpid';

/** Bytes of an `audit_token_t`. */
const TOKEN_SIZE = 32;
/** Byte offset of the pid in an audit token (`val[5]`, what libbsm's `audit_token_to_pid` reads). */
const TOKEN_PID_OFFSET = 20;

/** What identifying a socket peer needs from the native bindings. */
export interface DarwinPeerReader extends DarwinProcessReader {
  /** `getsockopt(LOCAL_PEERPID)`. @throws `ERR_PLATFORM` */
  getPeerPid(fd: number): number;
  /** `getsockopt(LOCAL_PEERTOKEN)`: 32 bytes. @throws `ERR_PLATFORM` */
  getPeerToken(fd: number): Buffer;
}

/** The audit token of each identity this module made. */
const tokens = new WeakMap<PeerIdentity, Buffer>();

/**
 * The audit token captured when `peer` was identified (a copy), or `undefined` when `peer` is
 * not an object {@link identifySocketPeer} returned (a copy of one, or from another platform).
 * For policies that ask Security.framework about the peer.
 */
export function peerAuditToken(peer: PeerIdentity): Buffer | undefined {
  const token = tokens.get(peer);
  return token === undefined ? undefined : Buffer.from(token);
}

function unknown(message: string, cause?: unknown): PeerError {
  return new PeerError('ERR_PEER_UNKNOWN', message, cause === undefined ? {} : { cause });
}

function changed(peer: PeerIdentity, what: string): PeerError {
  return new PeerError(
    'ERR_PEER_CHANGED',
    `The peer process (pid ${peer.pid}) ${what} since it connected, so this connection no ` +
      'longer speaks for it. Reconnect to be identified again.',
  );
}

/** The live `kinfo_proc` of `pid`, or `undefined` when it is gone or a zombie. */
function live(reader: DarwinProcessReader, pid: number): KinfoProc | undefined {
  const info = reader.kinfo(pid);
  if (info === undefined || hasExited(info)) return undefined;
  if (info.pid !== pid) {
    throw unknown(
      `sysctl(KERN_PROC_PID) answered for pid ${info.pid} when asked about ${pid}: this macOS ` +
        'lays out kinfo_proc differently and is not supported.',
    );
  }
  return info;
}

function pathOf(reader: DarwinProcessReader, pid: number): string | undefined {
  try {
    return reader.executablePath(pid);
  } catch (error) {
    debug('proc_pidpath(%d) failed: %O', pid, error);
    return undefined;
  }
}

/** Options for {@link identifySocketPeer}. */
export interface IdentifySocketPeerOptions {
  /**
   * When the connection was made (`Date.now()`). A process started after that cannot be the one
   * that connected: the peer exited and its pid was reused, and identifying is refused.
   */
  readonly connectedAt?: number;
}

/**
 * Identifies the process on the other end of a connected Unix socket `fd`: pid
 * (`LOCAL_PEERPID`), effective uid and start time (`kinfo_proc`), executable (`proc_pidpath`,
 * left out when macOS does not say) and `source: 'local_peerpid'`. The audit token
 * (`LOCAL_PEERTOKEN`) is kept for {@link peerAuditToken}; its pid must be the socket's pid.
 *
 * Synchronous and cheap (a handful of system calls), because it runs on every connection, in
 * both directions. The `kinfo_proc` is read again after the executable path, and its start time
 * must not have changed: a pid reused during identification is refused, never described.
 *
 * @throws `ERR_PEER_UNKNOWN` when `fd` is not a descriptor, the kernel does not report the peer,
 * the token names another pid, the process exited (or is a zombie), started after
 * `connectedAt`, or changed while it was read; `cause` holds the underlying error.
 *
 * @example
 * ```ts
 * const peer = identifySocketPeer(bindings, (socket as any)._handle.fd);
 * ```
 */
export function identifySocketPeer(
  bindings: DarwinPeerReader,
  fd: number,
  options: IdentifySocketPeerOptions = {},
): PeerIdentity {
  if (!Number.isInteger(fd) || fd < 0) {
    throw unknown(`Cannot identify the peer: ${String(fd)} is not an open socket descriptor.`);
  }
  let pid: number;
  let token: Buffer;
  try {
    pid = bindings.getPeerPid(fd);
    token = bindings.getPeerToken(fd);
  } catch (error) {
    throw unknown('macOS did not report which process is on the other end of the socket.', error);
  }
  if (!Number.isSafeInteger(pid) || pid <= 0) {
    throw unknown(`The socket reported no usable process id for its peer (${String(pid)}).`);
  }
  if (!Buffer.isBuffer(token) || token.length !== TOKEN_SIZE) {
    throw unknown(`The socket reported no usable audit token for its peer (pid ${pid}).`);
  }
  const tokenPid = token.readInt32LE(TOKEN_PID_OFFSET);
  if (tokenPid !== pid) {
    throw unknown(
      `The socket's audit token names pid ${tokenPid}, its LOCAL_PEERPID pid ${pid}: refusing a peer the kernel describes inconsistently.`,
    );
  }
  const identity: PeerIdentity = Object.freeze({
    ...describeProcess(bindings, pid, options),
    source: LOCAL_PEERPID_SOURCE,
  });
  tokens.set(identity, Buffer.from(token));
  return identity;
}

/**
 * What `kinfo_proc` and `proc_pidpath` say about the live process `pid`: its pid, effective uid,
 * start time and (when macOS says) executable — the same consistency rules as
 * {@link identifySocketPeer} (read twice; a pid reused meanwhile is refused). For transports that
 * learn only a pid from the OS, such as XPC (`xpc_connection_get_pid`).
 *
 * @throws `ERR_PEER_UNKNOWN` when the process exited (or is a zombie), started after
 * `connectedAt`, changed while it was read, or macOS fails to answer.
 */
export function describeProcess(
  reader: DarwinProcessReader,
  pid: number,
  options: IdentifySocketPeerOptions = {},
): Omit<PeerIdentity, 'source'> {
  if (!Number.isSafeInteger(pid) || pid <= 0) {
    throw unknown(`Cannot describe process ${String(pid)}: not a process id.`);
  }
  try {
    const first = live(reader, pid);
    if (first === undefined) {
      throw unknown(`The peer process (pid ${pid}) exited before it could be identified.`);
    }
    if (
      options.connectedAt !== undefined &&
      BigInt(first.startTime) > BigInt(Math.trunc(options.connectedAt) + 1) * 1000n
    ) {
      throw unknown(
        `The process now holding pid ${pid} started after the connection was made: the peer ` +
          'exited and its pid was reused.',
      );
    }
    const executable = pathOf(reader, pid);
    const again = live(reader, pid);
    if (again === undefined || again.startTime !== first.startTime) {
      throw unknown(
        `The peer process (pid ${pid}) exited, or its pid was reused, while it was being identified.`,
      );
    }
    return {
      pid,
      uid: first.uid,
      startTime: first.startTime,
      ...(executable === undefined ? {} : { executable }),
    };
  } catch (error) {
    if (error instanceof PeerError) throw error;
    throw unknown(`Could not read the peer process (pid ${pid}).`, error);
  }
}

/**
 * Checks that the peer is still the very process that connected: running (not a zombie), with
 * the same start time (its pid was not reused) and the same executable (it did not exec another
 * program). The start time is read again after the path, so a pid reused between the reads is
 * caught too. Call it before every authorized request.
 *
 * @throws `ERR_PEER_CHANGED` when the process exited, another process holds its pid, or it runs
 * another executable. `ERR_PEER_UNKNOWN` when `peer` lacks a pid or start time, or macOS fails
 * to answer (`cause` holds the error).
 *
 * @example
 * ```ts
 * verifyPeerSync(bindings, transport.peer); // throws once the client has exited
 * ```
 */
export function verifyPeerSync(bindings: DarwinProcessReader, peer: PeerIdentity): void {
  const { pid, startTime } = peer;
  if (
    pid === undefined ||
    !Number.isSafeInteger(pid) ||
    pid <= 0 ||
    typeof startTime !== 'string' ||
    !/^\d{1,20}$/.test(startTime)
  ) {
    throw unknown('The peer identity has no pid and start time, so it cannot be verified.');
  }
  try {
    const sameProcess = (when: string): void => {
      const info = live(bindings, pid);
      if (info === undefined) throw changed(peer, `has exited${when}`);
      if (info.startTime !== startTime) {
        throw changed(
          peer,
          `has exited and its pid now belongs to another process (started ${startTime} → ${info.startTime})`,
        );
      }
    };
    sameProcess('');
    if (peer.executable !== undefined) {
      const path = pathOf(bindings, pid);
      if (path !== peer.executable) {
        throw changed(
          peer,
          path === undefined
            ? 'has exited or become unreadable'
            : `runs another program (was ${peer.executable}, now ${path})`,
        );
      }
      sameProcess(' while it was checked');
    }
  } catch (error) {
    if (error instanceof PeerError) throw error;
    throw unknown(`Could not re-check the peer process (pid ${pid}).`, error);
  }
}

/**
 * Async form of {@link verifyPeerSync}, as `Platform.verifyPeer` wants it.
 *
 * @throws `ERR_PEER_CHANGED`, `ERR_PEER_UNKNOWN` as {@link verifyPeerSync}.
 */
export async function verifyPeer(bindings: DarwinProcessReader, peer: PeerIdentity): Promise<void> {
  verifyPeerSync(bindings, peer);
}

/**
 * Releases what an identity holds: nothing on macOS (no pidfd; the audit token is dropped with
 * the identity object). Exists for `Platform.releasePeer`. Idempotent.
 */
export function releasePeer(_peer: PeerIdentity): void {}
