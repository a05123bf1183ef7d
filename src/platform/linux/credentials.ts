/**
 * Session credentials on Linux, derived by the server from the kernel-verified peer.
 *
 * - **Terminal** (`scope: 'terminal'`): the peer has a controlling terminal. The id covers the
 *   boot id, the peer's uid, the terminal device (`tty_nr`), the session id and the **session
 *   leader's start time**. Every process of that terminal session — subshells, their children —
 *   shares it; another window or tab (another pty and session), a `setsid`, or a reboot does not,
 *   and a reused pty number or session id does not match an old grant because the leader's start
 *   time differs.
 * - **Process** (`scope: 'process'`): no controlling terminal (IDE task, cron, GUI launcher). The
 *   id covers the boot id, the peer's uid and the invoking parent's pid + start time (sudo's
 *   "ppid" mode), so every tool one parent invokes shares it and nothing else does.
 *
 * Everything is read for the **peer pid** from `/proc` — never from the peer's fds 0–2 or its
 * environment (sudo CVE-2013-1776 took the tty from stdin). Doubt never widens a credential:
 *
 * - the session leader is gone, or `/proc/<sid>` is not the leader of that session on that tty
 *   (it exited and its pid was reused) → the narrower process scope;
 * - the parent is pid 1, the parent is gone, or the peer was re-parented while we looked → the
 *   peer's own pid + start time (the narrowest scope there is), never init's, which would pool
 *   every orphan of the machine into one session;
 * - the peer itself vanished, was replaced, or turned into a zombie mid-derivation →
 *   `ERR_PEER_UNKNOWN` (polkit CVE-2021-3560 granted when the caller vanished mid-check).
 *
 * Ids are `tty:` or `proc:` followed by 32 hex digits: the first 128 bits of a SHA-256 over a
 * versioned domain tag and the fields above. They are not secret; hashing just keeps pids, start
 * times and the boot id out of logs and events that show them. Two ids are equal exactly when all
 * their fields are. A `proc:` id names one process instance (the anchor): an orphan keyed on
 * itself and the children it invokes later share it — both act on that process's authority.
 *
 * Known limit: a no-terminal peer whose parent is a subreaper (`systemd --user` adopting
 * orphans, or launching services) shares that subreaper's credential with everything else it
 * parents, as in sudo's ppid mode; the kernel does not say whether a parent is a subreaper.
 *
 * @module
 */

import { throwIfAborted } from '../../errors.js';
import type {
  DeriveCredentialOptions,
  SessionCredential,
  SessionCredentialProvider,
  SessionScope,
} from '../../session/credentials.js';
import { failClosed, HostCache, hashSessionId, peerUnknown } from '../../session/session-id.js';
import type { PeerIdentity } from '../../transport/transport.js';
import { createLog } from '../../util/log.js';
import type { LinuxBindings } from './bindings.js';
import { peerAliveByPidfd } from './identity.js';
import { hasExited, type ProcReader, type ProcStat, systemProc, ttyName } from './proc.js';
import { describeProcess, type SessionPlacement } from './process-description.js';

const debug = createLog('bridgekeeper:linux');

/** Versioned, so a change of derivation can never make an old id match a new one. */
const ID_DOMAIN = 'bridgekeeper/linux/session/v1';

/** Dependencies of the Linux credential provider; all optional. */
export interface LinuxCredentialOptions {
  /**
   * The native bindings, to ask a peer's pidfd whether it is still alive. Without them, liveness
   * is checked through `/proc` alone.
   */
  readonly bindings?: LinuxBindings;
  /** Where processes are read from. Default: the real `/proc`. */
  readonly proc?: ProcReader;
}

/**
 * Where a process belongs, with the facts the id was built from (for diagnostics; the id is what
 * grants compare).
 */
export interface LinuxSession {
  /** The credential id: `tty:<hex>` or `proc:<hex>`. */
  readonly id: string;
  /** How wide it reaches. */
  readonly scope: SessionScope;
  /** Which rule produced it. */
  readonly basis: 'terminal' | 'invoking-parent' | 'self';
  /** The process the session was derived for. */
  readonly pid: number;
  /** Terminal scope: the session id (= the session leader's pid). */
  readonly sessionId?: number;
  /** Terminal scope: the controlling terminal's device number (`tty_nr`). */
  readonly ttyNr?: number;
  /** Terminal scope: the controlling terminal's device name (`/dev/pts/3`), for diagnostics. */
  readonly tty?: string;
  /** Process scope: the process the id is keyed on (the invoking parent, or the peer itself). */
  readonly anchorPid?: number;
  /** Why a narrower scope than the obvious one was chosen, if it was. */
  readonly note?: string;
}

function hashId(prefix: 'tty' | 'proc', fields: readonly (string | number)[]): string {
  return hashSessionId(ID_DOMAIN, prefix, fields);
}

interface Subject {
  readonly pid: number;
  readonly startTime: string;
  readonly uid: number;
  /** Whether the subject still runs, from a pidfd; `undefined` when there is none to ask. */
  readonly aliveByPidfd: () => boolean | undefined;
}

/**
 * Derives the session of a process, from `/proc`. Shared by the provider (for peers) and
 * {@link describeOwnSession}.
 */
async function deriveSession(
  subject: Subject,
  proc: ProcReader,
  signal: AbortSignal | undefined,
): Promise<{ session: LinuxSession; placement: SessionPlacement }> {
  const { pid, startTime, uid } = subject;
  const bootId = await proc.readBootId();
  throwIfAborted(signal, 'Deriving the session credential');

  const readSubject = async (): Promise<ProcStat> => {
    const stat = await proc.readStat(pid);
    if (!stat || hasExited(stat)) {
      throw peerUnknown(`The client process (pid ${pid}) exited while its session was derived.`);
    }
    if (stat.startTime !== startTime) {
      throw peerUnknown(
        `The client process (pid ${pid}) is gone: its pid now belongs to another process.`,
      );
    }
    return stat;
  };

  // Fields read from other processes only count if the subject is still the same process with the
  // same terminal, session and parent afterwards: then nothing moved underneath us.
  const confirm = async (first: ProcStat, keep: 'terminal' | 'parent' | 'self'): Promise<void> => {
    throwIfAborted(signal, 'Deriving the session credential');
    const again = await readSubject();
    if (keep === 'terminal' && (again.ttyNr !== first.ttyNr || again.session !== first.session)) {
      throw peerUnknown(
        `The client process (pid ${pid}) left its terminal session while its session was derived.`,
      );
    }
    if (keep === 'parent' && again.ppid !== first.ppid) {
      // Re-parented: the parent we read may already be another process with the same pid.
      throw peerUnknown(
        `The client process (pid ${pid}) lost its parent while its session was derived.`,
      );
    }
    if (subject.aliveByPidfd() === false) {
      throw peerUnknown(`The client process (pid ${pid}) exited while its session was derived.`);
    }
  };

  const stat = await readSubject();
  let note: string | undefined;

  if (stat.ttyNr !== 0) {
    const sid = stat.session;
    const leader = sid > 0 ? await proc.readStat(sid) : undefined;
    if (
      leader &&
      !hasExited(leader) &&
      leader.pid === sid &&
      leader.session === sid &&
      leader.ttyNr === stat.ttyNr
    ) {
      await confirm(stat, 'terminal');
      return {
        session: {
          id: hashId('tty', [bootId, uid, stat.ttyNr, sid, leader.startTime]),
          scope: 'terminal',
          basis: 'terminal',
          pid,
          sessionId: sid,
          ttyNr: stat.ttyNr,
          tty: ttyName(stat.ttyNr) ?? String(stat.ttyNr),
        },
        placement: { scope: 'terminal', leaderPid: sid },
      };
    }
    // Without a verified leader there is no start time to pin the session to, and a session id
    // alone can be reused: fall back to the narrower per-process scope rather than guess.
    note = `session leader ${sid} of ${ttyName(stat.ttyNr)} could not be verified`;
    debug('pid %d: %s; using process scope', pid, note);
  }

  const ppid = stat.ppid;
  if (ppid > 1) {
    const parent = await proc.readStat(ppid);
    if (parent && !hasExited(parent)) {
      await confirm(stat, 'parent');
      return {
        session: {
          id: hashId('proc', [bootId, uid, ppid, parent.startTime]),
          scope: 'process',
          basis: 'invoking-parent',
          pid,
          anchorPid: ppid,
          ...(note === undefined ? {} : { note }),
        },
        placement: { scope: 'process', anchorPid: ppid },
      };
    }
    note = `${note === undefined ? '' : `${note}; `}invoking parent ${ppid} exited`;
  } else {
    note = `${note === undefined ? '' : `${note}; `}no invoking parent (re-parented to pid ${ppid})`;
  }
  // Orphaned: init (or a subreaper) is nobody's invoker; key on the subject alone.
  debug('pid %d: %s; keying the session on the process itself', pid, note);
  await confirm(stat, 'self');
  return {
    session: {
      id: hashId('proc', [bootId, uid, pid, startTime]),
      scope: 'process',
      basis: 'self',
      pid,
      anchorPid: pid,
      note,
    },
    placement: { scope: 'process', anchorPid: pid },
  };
}

async function toCredential(
  result: { session: LinuxSession; placement: SessionPlacement },
  pid: number,
  proc: ProcReader,
  hosts?: HostCache,
): Promise<SessionCredential> {
  const id = result.session.id;
  const describe = (knownHost: string | undefined) =>
    describeProcess(pid, result.placement, {
      proc,
      ...(knownHost === undefined ? {} : { knownHost }),
    });
  const process = await (hosts ? hosts.describe(id, describe) : describe(undefined));
  return { id, scope: result.session.scope, process };
}

/**
 * Derives the {@link LinuxSession} of a verified peer, with the facts behind its id (the provider
 * returns only the id, scope and description).
 *
 * @throws `ERR_PEER_UNKNOWN` when the peer lacks pid, uid or start time, or vanishes, is
 * replaced, or changes session mid-derivation. `ERR_ABORTED` / `ERR_TIMEOUT` on signal.
 */
export async function deriveLinuxSession(
  peer: PeerIdentity,
  options: LinuxCredentialOptions & DeriveCredentialOptions = {},
): Promise<LinuxSession> {
  return (await derivePeer(peer, options)).session;
}

async function derivePeer(
  peer: PeerIdentity,
  options: LinuxCredentialOptions & DeriveCredentialOptions,
): Promise<{ session: LinuxSession; placement: SessionPlacement }> {
  const { pid, startTime, uid } = peer;
  if (pid === undefined || startTime === undefined || uid === undefined) {
    throw peerUnknown(
      'The peer identity lacks a pid, start time or uid from the kernel; it cannot be placed in a session.',
    );
  }
  throwIfAborted(options.signal, 'Deriving the session credential');
  const bindings = options.bindings;
  try {
    return await deriveSession(
      {
        pid,
        startTime,
        uid,
        aliveByPidfd: () => (bindings ? peerAliveByPidfd(bindings, peer) : undefined),
      },
      options.proc ?? systemProc,
      options.signal,
    );
  } catch (error) {
    throw failClosed(pid, error);
  }
}

/**
 * Creates the server-side {@link SessionCredentialProvider} for Linux (see the module comment for
 * the rules). `derive` costs about four `/proc` reads plus the description walk.
 *
 * @throws from `derive`: `ERR_PEER_UNKNOWN` when the peer cannot be placed (fail closed),
 * `ERR_ABORTED` / `ERR_TIMEOUT` on signal.
 *
 * @example
 * ```ts
 * const credentials = createLinuxCredentialProvider({ bindings: await loadLinuxBindings() });
 * const { id, scope, process } = await credentials.derive(peer);
 * ```
 */
export function createLinuxCredentialProvider(
  options: LinuxCredentialOptions = {},
): SessionCredentialProvider {
  const proc = options.proc ?? systemProc;
  const hosts = new HostCache();
  return {
    async derive(peer, deriveOptions = {}) {
      const result = await derivePeer(peer, { ...options, ...deriveOptions });
      try {
        return await toCredential(result, result.session.pid, proc, hosts);
      } catch (error) {
        throw failClosed(peer.pid, error);
      }
    },
  };
}

/**
 * The session this process itself belongs to, by the same rules the server applies to peers —
 * for a CLI's `whoami`-style diagnostics. Only the server's derivation counts for grants; this is
 * a preview (it reads `/proc/self`, never fds 0–2).
 *
 * @throws `ERR_PEER_UNKNOWN` when `/proc` cannot be read.
 *
 * @example
 * ```ts
 * const { session, credential } = await describeOwnSession();
 * console.log(`${credential.scope} session ${session.tty ?? ''} (${credential.process.host})`);
 * ```
 */
export async function describeOwnSession(
  options: { proc?: ProcReader; signal?: AbortSignal } = {},
): Promise<{ session: LinuxSession; credential: SessionCredential }> {
  const proc = options.proc ?? systemProc;
  const pid = process.pid;
  try {
    const self = await proc.readStat(pid);
    if (!self) throw peerUnknown('Could not read /proc for this process.');
    const result = await deriveSession(
      {
        pid,
        startTime: self.startTime,
        uid: process.geteuid?.() ?? 0,
        aliveByPidfd: () => undefined,
      },
      proc,
      options.signal,
    );
    return { session: result.session, credential: await toCredential(result, pid, proc) };
  } catch (error) {
    throw failClosed(pid, error);
  }
}
