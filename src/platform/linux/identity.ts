/**
 * Peer identity on Linux: who is on the other end of a Unix socket, from the kernel, and whether
 * it is still the same process later.
 *
 * At connect the kernel records the peer's pid/uid/gid (`SO_PEERCRED`) and, since Linux 6.5,
 * hands out a pidfd for exactly that process (`SO_PEERPIDFD`). A pid alone can be reused once the
 * process exits, and pid + start time without the uid is forgeable (polkit CVE-2013-4288,
 * CVE-2019-6133), so an identity carries all of them, plus the executable: a process can exec
 * another program after connecting, keeping the socket, so each authorized request re-checks.
 *
 * @module
 */

import { BridgekeeperError, PeerError } from '../../errors.js';
import type { PeerIdentity } from '../../transport/transport.js';
import { createLog } from '../../util/log.js';
import type { LinuxBindings } from './bindings.js';
import { hasExited, readExecutableKeySync, readExecutableSync, readProcStatSync } from './proc.js';

const debug = createLog('bridgekeeper:linux');

/** What an identity holds that {@link PeerIdentity} has no field for. */
interface PeerState {
  /** `dev:ino` of the executable at connect, when readable. */
  readonly executableKey: string | undefined;
}

/** Identities this module created, with their private state. */
const peerStates = new WeakMap<PeerIdentity, PeerState>();

/**
 * Per bindings object: open pidfd → the identity that owns it. Ownership is by object, not by
 * number: after a release the kernel reuses the fd number, and a second release of the old
 * identity (or a poll through it) must never touch the new owner's fd.
 */
const pidfdOwners = new WeakMap<LinuxBindings, Map<number, PeerIdentity>>();

function ownersOf(bindings: LinuxBindings): Map<number, PeerIdentity> {
  let owners = pidfdOwners.get(bindings);
  if (!owners) {
    owners = new Map();
    pidfdOwners.set(bindings, owners);
  }
  return owners;
}

/**
 * The pidfd of `peer` if it is still open and owned by this very identity object, else
 * `undefined` (none was offered, it was released, or `peer` is a copy).
 *
 * @internal
 */
export function ownedPidfd(bindings: LinuxBindings, peer: PeerIdentity): number | undefined {
  const pidfd = peer.pidfd;
  if (pidfd === undefined) return undefined;
  return pidfdOwners.get(bindings)?.get(pidfd) === peer ? pidfd : undefined;
}

function unknown(message: string, cause?: unknown): PeerError {
  return new PeerError('ERR_PEER_UNKNOWN', message, cause === undefined ? {} : { cause });
}

/**
 * Identifies the process on the other end of a connected Unix socket, from the kernel: pid, uid
 * and gid (`SO_PEERCRED`), a pidfd where the kernel offers one (`SO_PEERPIDFD`), the start time
 * (`/proc/<pid>/stat` field 22) and the executable (`/proc/<pid>/exe`, where readable).
 *
 * Synchronous and cheap (~20 µs), because it runs on every accepted connection. Works in both
 * directions: on an accepted socket it names the client, on a client socket the server (the
 * process that called `listen()`).
 *
 * The returned object owns the pidfd: pass **that object** to {@link releasePeer} when the
 * connection ends (a copy does not own it). With a pidfd, the start time and executable read from
 * `/proc` are confirmed to be the peer's (it was still alive after the reads, so its pid was not
 * reused in between); without one (kernel < 6.5) a peer that exits right after connecting could
 * in theory have its pid reused before the read — the window `SO_PEERPIDFD` closes.
 *
 * @param fd the socket's file descriptor (`socket._handle.fd` for a `net.Socket`).
 * @throws `ERR_PEER_UNKNOWN` when the kernel does not name the peer (not a Unix socket, the peer
 * has no pid in our pid namespace, the peer already exited); `cause` holds the OS error.
 *
 * @example
 * ```ts
 * const bindings = await loadLinuxBindings();
 * server.on('connection', (socket) => {
 *   const peer = identifySocketPeer(bindings, (socket as any)._handle.fd);
 *   socket.on('close', () => releasePeer(bindings, peer));
 * });
 * ```
 */
export function identifySocketPeer(bindings: LinuxBindings, fd: number): PeerIdentity {
  if (!Number.isInteger(fd) || fd < 0) {
    throw unknown(`Cannot identify the peer: ${String(fd)} is not an open socket descriptor.`);
  }
  let credentials: ReturnType<LinuxBindings['getPeerCredentials']>;
  try {
    credentials = bindings.getPeerCredentials(fd);
  } catch (error) {
    throw unknown('The kernel did not report who is on the other end of the socket.', error);
  }
  const { pid, uid, gid } = credentials;
  if (!Number.isInteger(pid) || pid <= 0) {
    // 0: the peer lives in a pid namespace we cannot see into; a pid we cannot check is no identity.
    throw unknown(`The kernel reported no usable process id for the peer (pid ${pid}).`);
  }

  let pidfd: number | undefined;
  try {
    pidfd = bindings.getPeerPidfd(fd);
  } catch (error) {
    throw unknown(`Could not open a pidfd for the peer (pid ${pid}); it may have exited.`, error);
  }

  try {
    const stat = readProcStatSync(pid);
    if (!stat || hasExited(stat)) {
      throw unknown(`The peer (pid ${pid}) exited before it could be identified.`);
    }
    const executable = readExecutableSync(pid);
    const executableKey = executable === undefined ? undefined : readExecutableKeySync(pid);
    // Reads first, liveness last: if the pidfd still shows the process running now, the pid was
    // not reused during the reads, so the start time and executable are the peer's own.
    if (pidfd !== undefined && !bindings.pidfdIsAlive(pidfd)) {
      throw unknown(`The peer (pid ${pid}) exited before it could be identified.`);
    }
    const identity: PeerIdentity = Object.freeze({
      pid,
      uid,
      gid,
      startTime: stat.startTime,
      ...(executable === undefined ? {} : { executable }),
      ...(pidfd === undefined ? {} : { pidfd }),
      source: 'so_peercred',
    });
    peerStates.set(identity, { executableKey });
    if (pidfd !== undefined) ownersOf(bindings).set(pidfd, identity);
    return identity;
  } catch (error) {
    if (pidfd !== undefined) closeQuietly(bindings, pidfd);
    if (error instanceof PeerError) throw error;
    throw unknown(`Could not read the peer's process (pid ${pid}) from /proc.`, error);
  }
}

function closeQuietly(bindings: LinuxBindings, fd: number): void {
  try {
    bindings.closeFd(fd);
  } catch (error) {
    debug('closing pidfd %d failed: %O', fd, error);
  }
}

function changed(peer: PeerIdentity, what: string): PeerError {
  return new PeerError(
    'ERR_PEER_CHANGED',
    `The client process (pid ${peer.pid}) ${what} since it connected, so this connection no ` +
      'longer speaks for it. The client must reconnect to be identified again.',
  );
}

function stripDeleted(path: string): string {
  return path.endsWith(' (deleted)') ? path.slice(0, -' (deleted)'.length) : path;
}

/**
 * Checks that the peer is still the very process that connected: alive (through its pidfd when
 * it has one, else `/proc/<pid>/stat`), with the same start time (its pid was not reused), and
 * running the same executable (it did not exec another program while keeping the socket — the
 * check compares the executable's device and inode, so an upgrade of the file on disk is not
 * mistaken for an exec). Call it before every authorized request.
 *
 * Exec detection needs the executable to have been readable at connect; for another user's or a
 * non-dumpable (setuid/setgid) process it was not, and only liveness and start time are checked.
 *
 * @throws `ERR_PEER_CHANGED` when the process exited, was replaced by another with the same pid,
 * or exec'd another program. `ERR_PEER_UNKNOWN` when `peer` lacks a pid or start time, or /proc
 * cannot be read.
 *
 * @example
 * ```ts
 * verifyPeerSync(bindings, transport.peer); // throws once the client has exec'd or exited
 * ```
 */
export function verifyPeerSync(bindings: LinuxBindings, peer: PeerIdentity): void {
  const { pid, startTime } = peer;
  if (pid === undefined || startTime === undefined) {
    throw unknown('The peer identity has no pid and start time, so it cannot be verified.');
  }
  const pidfd = ownedPidfd(bindings, peer);
  const state = peerStates.get(peer);
  try {
    if (pidfd === undefined) {
      // No pidfd to vouch for the pid: compare start times, before and after the exe read.
      checkStat(peer, pid, startTime);
    }
    checkExecutable(peer, pid, state);
    if (pidfd !== undefined) {
      if (!bindings.pidfdIsAlive(pidfd)) throw changed(peer, 'has exited');
    } else {
      checkStat(peer, pid, startTime);
    }
  } catch (error) {
    if (error instanceof BridgekeeperError) throw error;
    throw unknown(`Could not re-check the peer (pid ${pid}).`, error);
  }
}

function checkStat(peer: PeerIdentity, pid: number, startTime: string): void {
  const stat = readProcStatSync(pid);
  if (!stat || hasExited(stat)) throw changed(peer, 'has exited');
  if (stat.startTime !== startTime) {
    throw changed(
      peer,
      `has exited and its pid now belongs to another process (start time ${startTime} → ${stat.startTime})`,
    );
  }
}

function checkExecutable(peer: PeerIdentity, pid: number, state: PeerState | undefined): void {
  if (state?.executableKey !== undefined) {
    const key = readExecutableKeySync(pid);
    if (key === state.executableKey) return;
    const now = readExecutableSync(pid);
    throw changed(
      peer,
      key === undefined && now === undefined
        ? 'has exited or become unreadable'
        : `has exec'd another program (was ${peer.executable ?? 'unknown'}, now ${now ?? 'unreadable'})`,
    );
  }
  if (peer.executable !== undefined) {
    // A copy of an identity, without the inode we recorded: compare paths, ignoring the
    // " (deleted)" the kernel appends when the file was replaced on disk.
    const now = readExecutableSync(pid);
    if (now === undefined || stripDeleted(now) !== stripDeleted(peer.executable)) {
      throw changed(
        peer,
        `has exec'd another program (was ${peer.executable}, now ${now ?? 'unreadable'})`,
      );
    }
  }
}

/**
 * Async form of {@link verifyPeerSync}, as `Platform.verifyPeer` wants it.
 *
 * @throws `ERR_PEER_CHANGED`, `ERR_PEER_UNKNOWN` as {@link verifyPeerSync}.
 */
export async function verifyPeer(bindings: LinuxBindings, peer: PeerIdentity): Promise<void> {
  verifyPeerSync(bindings, peer);
}

/**
 * Closes the pidfd an identity holds. Idempotent, and safe against fd reuse: only the identity
 * object that {@link identifySocketPeer} returned owns its pidfd, so releasing it twice, or
 * releasing a copy, never closes an fd number the kernel has since given to someone else.
 */
export function releasePeer(bindings: LinuxBindings, peer: PeerIdentity): void {
  const pidfd = ownedPidfd(bindings, peer);
  if (pidfd === undefined) return;
  pidfdOwners.get(bindings)?.delete(pidfd);
  closeQuietly(bindings, pidfd);
}

/**
 * Whether the peer is still running, through its pidfd: `true`/`false`, or `undefined` when the
 * identity holds no open pidfd (then the caller must check `/proc`).
 *
 * @internal
 */
export function peerAliveByPidfd(bindings: LinuxBindings, peer: PeerIdentity): boolean | undefined {
  const pidfd = ownedPidfd(bindings, peer);
  return pidfd === undefined ? undefined : bindings.pidfdIsAlive(pidfd);
}
