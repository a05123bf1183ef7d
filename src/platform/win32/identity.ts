/**
 * Peer identity on Windows: who is on the other end of a named pipe, from the kernel, and whether
 * it is still the same process later.
 *
 * The pipe names the peer's pid (`GetNamedPipeClientProcessId` / `GetNamedPipeServerProcessId`).
 * An identity opens the process right away and keeps the handle open for as long as the
 * connection lives, like a pidfd on Linux: while a handle to a process is open, Windows does not
 * give its pid to another process, so every later read through the handle is about that very
 * process. Around the pid the identity carries the creation time (`GetProcessTimes`, which with
 * the pid names one process instance), the user SID of its token, and its image path.
 *
 * A Windows process cannot exec another program, so its image path never changes; a re-check
 * still compares it, and the creation time, so that a copy of an identity (which holds no handle)
 * cannot be satisfied by another process that got the pid.
 *
 * @module
 */

import { PeerError } from '../../errors.js';
import type { PeerIdentity } from '../../transport/transport.js';
import { createLog } from '../../util/log.js';
import type { Win32Bindings, Win32Handle } from './bindings.js';

const debug = createLog('bridgekeeper:win32');

/** `PeerIdentity.source` of identities from this module. */
export const NAMED_PIPE_SOURCE = 'named_pipe';

/** Milliseconds from 1601-01-01 (the FILETIME epoch) to 1970-01-01. */
const FILETIME_EPOCH_OFFSET_MS = 11_644_473_600_000n;

/**
 * Per bindings object: open process handle → the identity that owns it. Ownership is by object,
 * not by number: after a release Windows reuses handle values, and a second release of the old
 * identity (or a check through it) must never touch the new owner's handle.
 */
const handleOwners = new WeakMap<Win32Bindings, Map<Win32Handle, PeerIdentity>>();

/** The handle each identity holds (what {@link PeerIdentity} has no field for). */
const handles = new WeakMap<PeerIdentity, Win32Handle>();

function ownersOf(bindings: Win32Bindings): Map<Win32Handle, PeerIdentity> {
  let owners = handleOwners.get(bindings);
  if (!owners) {
    owners = new Map();
    handleOwners.set(bindings, owners);
  }
  return owners;
}

/**
 * The process handle of `peer` if it is still open and owned by this very identity object, else
 * `undefined` (released, or `peer` is a copy or came from elsewhere).
 *
 * @internal
 */
export function ownedProcessHandle(
  bindings: Win32Bindings,
  peer: PeerIdentity,
): Win32Handle | undefined {
  const handle = handles.get(peer);
  if (handle === undefined) return undefined;
  return handleOwners.get(bindings)?.get(handle) === peer ? handle : undefined;
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

function closeQuietly(bindings: Win32Bindings, handle: Win32Handle): void {
  try {
    bindings.closeHandle(handle);
  } catch (error) {
    debug('closing process handle %s failed: %O', handle, error);
  }
}

/**
 * A FILETIME (100-ns intervals since 1601) as a bigint, or `undefined` when `value` is not a
 * plain decimal string.
 *
 * @internal
 */
export function parseFileTime(value: string | undefined): bigint | undefined {
  if (typeof value !== 'string' || !/^\d{1,20}$/.test(value)) return undefined;
  return BigInt(value);
}

/** A `Date.now()`-style time as a FILETIME. */
function fileTimeOfMs(ms: number): bigint {
  return (BigInt(Math.trunc(ms)) + FILETIME_EPOCH_OFFSET_MS) * 10_000n;
}

/** Options for {@link identifyPipePeer}. */
export interface IdentifyPipePeerOptions {
  /**
   * When the pipe connection was made (`Date.now()` when the wait for the client completed, or
   * when the client's open returned). A process created after that cannot be the one that
   * connected: its pid was reused after the real peer exited, and identifying is refused.
   */
  readonly connectedAt?: number;
}

/**
 * Identifies the process with id `pid` — the pid a named pipe reported for its other end — and
 * opens a handle to it that the identity keeps: pid, creation time (`startTime`, a FILETIME as
 * a decimal string), the user SID of its token (`sid`), its image path (`executable`) and
 * `source: 'named_pipe'`.
 *
 * Synchronous and cheap (a handful of system calls), because it runs on every connection, in both
 * directions. Reads go through the handle and the process is confirmed to be still running after
 * them. A pid names the peer only while the peer runs: if it exited after connecting and before
 * this opened it, another process could hold the pid by now — call this as soon as the pipe
 * reports the pid, and pass `connectedAt` so a process created later is refused.
 *
 * `sid` is left out when the token cannot be read (another user's or an elevated process), and
 * `executable` when the image path cannot: policies that need them then refuse the peer.
 *
 * The returned object owns the process handle: pass **that object** to {@link releasePeer} when
 * the connection ends (a copy does not own it).
 *
 * @throws `ERR_PEER_UNKNOWN` when `pid` is not a process id, the process cannot be opened (it
 * exited, or we may not open it), its creation time cannot be read, it exited during the reads,
 * or it was created after `connectedAt`; `cause` holds the Windows error.
 *
 * @example
 * ```ts
 * const peer = identifyPipePeer(bindings, bindings.pipeClientProcessId(pipe), { connectedAt });
 * socket.on('close', () => releasePeer(bindings, peer));
 * ```
 */
export function identifyPipePeer(
  bindings: Win32Bindings,
  pid: number,
  options: IdentifyPipePeerOptions = {},
): PeerIdentity {
  if (!Number.isSafeInteger(pid) || pid <= 0 || pid > 0xffff_ffff) {
    throw unknown(`The pipe reported no usable process id for its peer (${String(pid)}).`);
  }
  let handle: Win32Handle | undefined;
  try {
    handle = bindings.openProcess(pid);
  } catch (error) {
    throw unknown(`Could not open the peer process (pid ${pid}).`, error);
  }
  if (handle === undefined) {
    throw unknown(
      `The peer process (pid ${pid}) exited before it could be identified, or may not be opened.`,
    );
  }
  try {
    const startTime = bindings.processCreationTime(handle);
    const created = parseFileTime(startTime);
    if (created === undefined) {
      throw unknown(`Windows reported no usable creation time for the peer (pid ${pid}).`);
    }
    if (options.connectedAt !== undefined && created > fileTimeOfMs(options.connectedAt + 1)) {
      throw unknown(
        `The process now holding pid ${pid} started after the pipe connection was made: the peer ` +
          'exited and its pid was reused.',
      );
    }
    const executable = bindings.processImagePath(handle);
    let sid: string | undefined;
    try {
      sid = bindings.processUserSid(handle);
    } catch (error) {
      debug('pid %d: cannot read the token user: %O', pid, error);
    }
    if (!bindings.processIsRunning(handle)) {
      throw unknown(`The peer process (pid ${pid}) exited before it could be identified.`);
    }
    const identity: PeerIdentity = Object.freeze({
      pid,
      ...(sid === undefined ? {} : { sid }),
      startTime,
      ...(executable === undefined ? {} : { executable }),
      source: NAMED_PIPE_SOURCE,
    });
    handles.set(identity, handle);
    ownersOf(bindings).set(handle, identity);
    return identity;
  } catch (error) {
    closeQuietly(bindings, handle);
    if (error instanceof PeerError) throw error;
    throw unknown(`Could not read the peer process (pid ${pid}).`, error);
  }
}

/**
 * Identifies the process on the other end of a named pipe that Node holds as file descriptor
 * `fd` (a pipe handle given to libuv): the client's pid when that is not this process, else the
 * server's. So it names the client on a server's pipe instance and the server on a client's
 * pipe. See {@link identifyPipePeer} for what the identity holds.
 *
 * @throws `ERR_PEER_UNKNOWN` when `fd` is no pipe, the pipe names no peer, or the peer cannot be
 * identified.
 *
 * @example
 * ```ts
 * const peer = identifySocketPeer(bindings, (socket as any)._handle.fd);
 * ```
 */
export function identifySocketPeer(bindings: Win32Bindings, fd: number): PeerIdentity {
  if (!Number.isInteger(fd) || fd < 0) {
    throw unknown(`Cannot identify the peer: ${String(fd)} is not an open pipe descriptor.`);
  }
  let pid: number;
  try {
    const pipe = bindings.fdToHandle(fd);
    const client = bindings.pipeClientProcessId(pipe);
    pid = client === bindings.currentProcessId() ? bindings.pipeServerProcessId(pipe) : client;
  } catch (error) {
    throw unknown('Windows did not report which process is on the other end of the pipe.', error);
  }
  return identifyPipePeer(bindings, pid);
}

/**
 * Checks that the peer is still the very process that connected: still running, with the same
 * creation time (its pid was not reused) and the same image path. Through the handle the
 * identity holds when it has one; a copy of an identity is checked by opening the pid afresh.
 * Call it before every authorized request.
 *
 * @throws `ERR_PEER_CHANGED` when the process exited, another process holds its pid, or it runs
 * another image. `ERR_PEER_UNKNOWN` when `peer` lacks a pid or creation time, or Windows fails
 * to answer (`cause` holds the error).
 *
 * @example
 * ```ts
 * verifyPeerSync(bindings, transport.peer); // throws once the client has exited
 * ```
 */
export function verifyPeerSync(bindings: Win32Bindings, peer: PeerIdentity): void {
  const { pid, startTime } = peer;
  if (pid === undefined || parseFileTime(startTime) === undefined) {
    throw unknown('The peer identity has no pid and creation time, so it cannot be verified.');
  }
  const owned = ownedProcessHandle(bindings, peer);
  let handle = owned;
  try {
    if (handle === undefined) {
      handle = bindings.openProcess(pid);
      if (handle === undefined) throw changed(peer, 'has exited');
    }
    const now = bindings.processCreationTime(handle);
    if (now !== startTime) {
      throw changed(
        peer,
        `has exited and its pid now belongs to another process (created ${startTime} → ${now})`,
      );
    }
    if (peer.executable !== undefined) {
      const image = bindings.processImagePath(handle);
      if (image !== peer.executable) {
        throw changed(
          peer,
          image === undefined
            ? 'has exited or become unreadable'
            : `runs another program (was ${peer.executable}, now ${image})`,
        );
      }
    }
    if (!bindings.processIsRunning(handle)) throw changed(peer, 'has exited');
  } catch (error) {
    // A Win32Error is a BridgekeeperError too (ERR_PLATFORM): only our own verdicts pass as they are.
    if (error instanceof PeerError) throw error;
    throw unknown(`Could not re-check the peer process (pid ${pid}).`, error);
  } finally {
    if (owned === undefined && handle !== undefined) closeQuietly(bindings, handle);
  }
}

/**
 * Async form of {@link verifyPeerSync}, as `Platform.verifyPeer` wants it.
 *
 * @throws `ERR_PEER_CHANGED`, `ERR_PEER_UNKNOWN` as {@link verifyPeerSync}.
 */
export async function verifyPeer(bindings: Win32Bindings, peer: PeerIdentity): Promise<void> {
  verifyPeerSync(bindings, peer);
}

/**
 * Closes the process handle an identity holds. Idempotent, and safe against handle reuse: only
 * the identity object that {@link identifyPipePeer} returned owns its handle, so releasing it
 * twice, or releasing a copy, never closes a handle value Windows has since given to someone else.
 */
export function releasePeer(bindings: Win32Bindings, peer: PeerIdentity): void {
  const handle = ownedProcessHandle(bindings, peer);
  if (handle === undefined) return;
  handleOwners.get(bindings)?.delete(handle);
  handles.delete(peer);
  closeQuietly(bindings, handle);
}
