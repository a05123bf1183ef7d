/**
 * Session credentials on macOS, derived by the server from the kernel-verified peer, by the same
 * rules as on Linux (see `src/platform/linux/credentials.ts`):
 *
 * - **Terminal** (`scope: 'terminal'`): the peer has a controlling terminal (`e_tdev` of its
 *   `kinfo_proc` is not `NODEV`). The id covers the boot session UUID (`kern.bootsessionuuid`),
 *   the peer's uid, the terminal device, the session id (`getsid`) and the **session leader's
 *   start time** (`p_starttime`). Every process of that terminal session — subshells, their
 *   children — shares it; another window or tab, a `setsid`, or a reboot does not, and a reused
 *   tty or session id does not match an old grant because the leader's start time differs.
 * - **Process** (`scope: 'process'`): no controlling terminal (an app's helper, a launchd job, an
 *   IDE task). The id covers the boot session UUID, the peer's uid and the invoking parent's pid +
 *   start time (sudo's "ppid" mode).
 *
 * Everything is read for the **peer pid** through `sysctl(KERN_PROC_PID)` and `getsid` — never
 * from the peer's fds 0–2 or its environment (sudo CVE-2013-1776). Doubt never widens a credential:
 *
 * - the session leader is gone, is not its session's leader (`getsid(leader) ≠ leader`), has
 *   another terminal, or started after the peer (its pid was reused) → the process scope;
 * - the parent is pid 1 (launchd: every app the person opens from the Dock is its child), is
 *   gone, or started after the peer (its pid was reused) → the peer's own pid + start time;
 * - the peer itself vanished, was replaced, turned into a zombie, or changed terminal, session or
 *   parent while we looked (it is read again after the others) → `ERR_PEER_UNKNOWN` (polkit
 *   CVE-2021-3560 granted when the caller vanished mid-check);
 * - a `kinfo_proc` whose `p_pid` is not the pid asked for (a layout this code does not know) is
 *   never trusted: for the peer that is `ERR_PEER_UNKNOWN`, for others a narrower scope.
 *
 * Start times are absolute (µs since 1970), so the boot session UUID only guards against a clock
 * set back across a reboot; it is in the id because it costs nothing.
 *
 * Ids are `tty:` or `proc:` + 32 hex digits (see `hashSessionId`), under their own domain tag, so
 * a macOS id never equals a Linux one.
 *
 * @module
 */

import { posix } from 'node:path';
import { PlatformError, throwIfAborted } from '../../errors.js';
import type { ProcessDescription } from '../../prompt/prompt-backend.js';
import type {
  DeriveCredentialOptions,
  SessionCredential,
  SessionCredentialProvider,
  SessionScope,
} from '../../session/credentials.js';
import { failClosed, HostCache, hashSessionId, peerUnknown } from '../../session/session-id.js';
import type { PeerIdentity } from '../../transport/transport.js';
import { createLog } from '../../util/log.js';
import { hasExited, type KinfoProc, NODEV } from './kinfo.js';

const debug = createLog('bridgekeeper:darwin');

/** Versioned, so a change of derivation can never make an old id match a new one. */
const ID_DOMAIN = 'bridgekeeper/darwin/session/v1';

/** Most steps a walk up the process tree takes when naming the host. */
const MAX_WALK_STEPS = 32;

/**
 * What the credential provider needs from macOS, one synchronous call each. The native
 * implementation (`src/platform/darwin/bindings.ts`, through koffi) is the only one that touches
 * libSystem; tests pass a fake process table.
 */
export interface DarwinProcessReader {
  /**
   * The process's `kinfo_proc` (`sysctl({CTL_KERN, KERN_PROC, KERN_PROC_PID, pid})`, parsed by
   * `parseKinfoProc`), or `undefined` when there is no such process (sysctl returned 0 bytes).
   *
   * @throws `ERR_PLATFORM` when sysctl fails or the record cannot be parsed.
   */
  kinfo(pid: number): KinfoProc | undefined;
  /**
   * The process's session id (`getsid(pid)`: the pid of the session's leader), or `undefined`
   * when there is no such process (`ESRCH`).
   */
  sessionId(pid: number): number | undefined;
  /**
   * The process's executable path (`proc_pidpath`), or `undefined` when it cannot be read (the
   * process exited, or may not be inspected).
   */
  executablePath(pid: number): string | undefined;
  /**
   * This boot's session UUID (`sysctlbyname("kern.bootsessionuuid")`), or `undefined` when macOS
   * does not report one.
   */
  bootSessionUuid(): string | undefined;
}

/** Dependencies of the macOS credential provider. */
export interface DarwinCredentialOptions {
  /** How processes are read (the native bindings, or a fake in tests). */
  readonly bindings: DarwinProcessReader;
}

/**
 * Where a process belongs, with the facts the id was built from (for diagnostics; the id is what
 * grants compare).
 */
export interface DarwinSession {
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
  /** Terminal scope: the controlling terminal's device number (`e_tdev`). */
  readonly tdev?: number;
  /** Process scope: the process the id is keyed on (the invoking parent, or the peer itself). */
  readonly anchorPid?: number;
  /** Why a narrower scope than the obvious one was chosen, if it was. */
  readonly note?: string;
}

/**
 * The `kinfo_proc` of `pid`, checked to be about `pid`.
 *
 * @throws `ERR_PLATFORM` when the record names another pid (a layout this code does not know).
 */
function readProc(reader: DarwinProcessReader, pid: number): KinfoProc | undefined {
  const info = reader.kinfo(pid);
  if (info !== undefined && info.pid !== pid) {
    throw new PlatformError(
      'ERR_PLATFORM',
      `The kinfo_proc macOS returned for pid ${pid} names pid ${info.pid}: this build of macOS ` +
        'lays it out differently, and Bridgekeeper does not support it.',
    );
  }
  return info;
}

/** Like {@link readProc} for a process other than the peer: what cannot be read is absent. */
function readOther(reader: DarwinProcessReader, pid: number): KinfoProc | undefined {
  try {
    const info = readProc(reader, pid);
    return info === undefined || hasExited(info) ? undefined : info;
  } catch (error) {
    debug('cannot read pid %d: %O', pid, error);
    return undefined;
  }
}

function sessionOf(reader: DarwinProcessReader, pid: number): number | undefined {
  try {
    return reader.sessionId(pid);
  } catch (error) {
    debug('getsid(%d) failed: %O', pid, error);
    return undefined;
  }
}

/** True when `a` started after `b`: then `a` cannot be `b`'s parent or session leader. */
function startedAfter(a: KinfoProc, b: KinfoProc): boolean {
  return BigInt(a.startTime) > BigInt(b.startTime);
}

/** Where the session is anchored, for naming its host. */
type Placement = { readonly leaderPid: number } | { readonly anchorPid: number };

interface Derived {
  readonly session: DarwinSession;
  readonly placement: Placement;
  /** The peer's own record, as last read. */
  readonly subject: KinfoProc;
}

function derive(
  reader: DarwinProcessReader,
  peer: PeerIdentity,
  signal: AbortSignal | undefined,
): Derived {
  const { pid, startTime, uid } = peer;
  if (pid === undefined || startTime === undefined || uid === undefined) {
    throw peerUnknown(
      'The peer identity lacks a pid, start time or uid from the kernel; it cannot be placed in a session.',
    );
  }
  throwIfAborted(signal, 'Deriving the session credential');
  const boot = reader.bootSessionUuid();
  if (!boot) {
    throw peerUnknown(
      'macOS did not report its boot session UUID (sysctl kern.bootsessionuuid), so no session ' +
        'credential can be derived.',
    );
  }
  const hashId = (prefix: 'tty' | 'proc', fields: readonly (string | number)[]): string =>
    hashSessionId(ID_DOMAIN, prefix, [boot, uid, ...fields]);

  const readSubject = (): KinfoProc => {
    const info = readProc(reader, pid);
    if (info === undefined || hasExited(info)) {
      throw peerUnknown(`The client process (pid ${pid}) exited while its session was derived.`);
    }
    if (info.startTime !== startTime) {
      throw peerUnknown(
        `The client process (pid ${pid}) is gone: its pid now belongs to another process.`,
      );
    }
    return info;
  };

  // What was read about other processes only counts if the peer is still the same process, with
  // the same terminal, session and parent, afterwards: then nothing moved underneath us.
  const confirm = (first: KinfoProc, keep: 'terminal' | 'parent' | 'self', sid?: number) => {
    throwIfAborted(signal, 'Deriving the session credential');
    const again = readSubject();
    if (keep === 'terminal' && (again.tdev !== first.tdev || reader.sessionId(pid) !== sid)) {
      throw peerUnknown(
        `The client process (pid ${pid}) left its terminal session while its session was derived.`,
      );
    }
    if (keep === 'parent' && again.ppid !== first.ppid) {
      throw peerUnknown(
        `The client process (pid ${pid}) lost its parent while its session was derived.`,
      );
    }
    return again;
  };

  const stat = readSubject();
  let note: string | undefined;

  if (stat.tdev !== NODEV) {
    const sid = reader.sessionId(pid);
    const leader = sid !== undefined && sid > 0 ? readOther(reader, sid) : undefined;
    if (sid !== undefined && leader) {
      if (sessionOf(reader, sid) !== sid) {
        note = `process ${sid} no longer leads the session`;
      } else if (leader.tdev !== stat.tdev) {
        note = `session leader ${sid} has another terminal`;
      } else if (startedAfter(leader, stat)) {
        note = `session leader ${sid} started after the client: its pid was reused`;
      } else {
        const subject = confirm(stat, 'terminal', sid);
        return {
          session: {
            id: hashId('tty', [stat.tdev, sid, leader.startTime]),
            scope: 'terminal',
            basis: 'terminal',
            pid,
            sessionId: sid,
            tdev: stat.tdev,
          },
          placement: { leaderPid: sid },
          subject,
        };
      }
    } else {
      note = `session leader ${sid ?? 'unknown'} is gone`;
    }
    // Without a verified leader there is no start time to pin the session to, and a session id
    // alone can be reused: fall back to the narrower per-process scope rather than guess.
    debug('pid %d: %s; using process scope', pid, note);
  }

  const join = (more: string) => (note === undefined ? more : `${note}; ${more}`);
  const ppid = stat.ppid;
  if (ppid > 1) {
    const parent = readOther(reader, ppid);
    if (parent && !startedAfter(parent, stat)) {
      const subject = confirm(stat, 'parent');
      return {
        session: {
          id: hashId('proc', [ppid, parent.startTime]),
          scope: 'process',
          basis: 'invoking-parent',
          pid,
          anchorPid: ppid,
          ...(note === undefined ? {} : { note }),
        },
        placement: { anchorPid: ppid },
        subject,
      };
    }
    note = join(
      parent
        ? `invoking parent ${ppid} started after the client: its pid was reused`
        : `invoking parent ${ppid} exited`,
    );
  } else {
    note = join(`no invoking parent (parent pid ${ppid})`);
  }
  // launchd (or nothing) is nobody's invoker: key on the peer alone.
  debug('pid %d: %s; keying the session on the process itself', pid, note);
  const subject = confirm(stat, 'self');
  return {
    session: {
      id: hashId('proc', [pid, startTime]),
      scope: 'process',
      basis: 'self',
      pid,
      anchorPid: pid,
      note,
    },
    placement: { anchorPid: pid },
    subject,
  };
}

/** Programs that sit between a terminal and the session: a walk continues through them. */
const PASS_THROUGH = new Set([
  'bash',
  'sh',
  'dash',
  'zsh',
  'fish',
  'ksh',
  'tcsh',
  'csh',
  'nu',
  'login',
  'sudo',
  'su',
  'doas',
  'script',
  'env',
  'nohup',
  'caffeinate',
  'arch',
  'time',
  'nice',
  'timeout',
]);

/** Session hosts that are not app bundles, by executable base name. */
const CLI_HOSTS = new Map([
  ['tmux', 'tmux'],
  ['screen', 'GNU Screen'],
  ['zellij', 'Zellij'],
  ['sshd', 'SSH session'],
  ['sshd-session', 'SSH session'],
  ['mosh-server', 'Mosh session'],
]);

/**
 * The name people know for a host: the outermost app bundle in its path (`/Applications/iTerm.app/
 * Contents/MacOS/iTermServer-3.5` → "iTerm"; a Visual Studio Code helper deep inside the bundle →
 * "Visual Studio Code"), or a known terminal multiplexer or SSH server.
 */
function hostName(executable: string | undefined, comm: string): string | undefined {
  if (executable !== undefined) {
    const bundle = executable.split('/').find((part) => part.length > 4 && part.endsWith('.app'));
    if (bundle !== undefined) return bundle.slice(0, -4);
    const known = CLI_HOSTS.get(posix.basename(executable));
    if (known) return known;
  }
  if (CLI_HOSTS.has(comm)) return CLI_HOSTS.get(comm);
  return comm.startsWith('sshd') ? 'SSH session' : undefined;
}

function programName(executable: string | undefined, comm: string): string {
  return executable === undefined ? comm : posix.basename(executable);
}

function pathOf(reader: DarwinProcessReader, pid: number): string | undefined {
  try {
    return reader.executablePath(pid);
  } catch (error) {
    debug('proc_pidpath(%d) failed: %O', pid, error);
    return undefined;
  }
}

/**
 * Names the host by walking up from `start`: the first known host wins. A terminal walk passes
 * only through shells and wrappers (the first other program *is* the terminal); a process walk
 * passes through anything. Bounded, stops at launchd, never visits a pid twice.
 */
function findHost(
  reader: DarwinProcessReader,
  start: number,
  terminal: boolean,
): string | undefined {
  const visited = new Set<number>();
  let first: string | undefined;
  let firstOther: string | undefined;
  let pid = start;
  for (let steps = 0; steps < MAX_WALK_STEPS && pid > 1 && !visited.has(pid); steps++) {
    visited.add(pid);
    const info = readOther(reader, pid);
    if (!info) break;
    const executable = pathOf(reader, pid);
    const known = hostName(executable, info.comm);
    if (known) return known;
    const name = programName(executable, info.comm);
    first ??= name;
    if (!PASS_THROUGH.has(name) && !PASS_THROUGH.has(info.comm)) {
      if (terminal) return name;
      firstOther ??= name;
    }
    pid = info.ppid;
  }
  return firstOther ?? first;
}

function describe(
  reader: DarwinProcessReader,
  derived: Derived,
  knownHost: string | undefined,
): ProcessDescription {
  const { subject, placement, session } = derived;
  const executable = pathOf(reader, session.pid);
  const program = programName(executable, subject.comm);
  let host = knownHost;
  if (host === undefined) {
    if ('leaderPid' in placement) {
      const leader =
        placement.leaderPid === session.pid ? subject : readOther(reader, placement.leaderPid);
      if (leader) host = findHost(reader, leader.ppid, true);
    } else {
      // Keyed on the peer itself: its parent is launchd or gone; nothing above names a host.
      const start = placement.anchorPid === session.pid ? subject.ppid : placement.anchorPid;
      host = findHost(reader, start, false);
    }
  }
  host ??= program;
  debug('pid %d (%s) is hosted by %s', session.pid, program, host);
  return {
    host,
    program,
    pid: session.pid,
    ...(executable === undefined ? {} : { executable }),
  };
}

/**
 * Derives the {@link DarwinSession} of a verified peer, with the facts behind its id (the
 * provider returns only the id, scope and description).
 *
 * @throws `ERR_PEER_UNKNOWN` when the peer lacks pid, uid or start time (`PeerIdentity.startTime`
 * is `p_starttime` in µs since 1970, as `KinfoProc.startTime`), when it vanishes, is replaced, or
 * changes terminal, session or parent mid-derivation, or when macOS fails to answer (`cause` holds
 * the error). `ERR_ABORTED` / `ERR_TIMEOUT` on signal.
 *
 * @example
 * ```ts
 * const session = deriveDarwinSession(bindings, peer);
 * console.log(session.basis, session.sessionId ?? session.anchorPid);
 * ```
 */
export function deriveDarwinSession(
  bindings: DarwinProcessReader,
  peer: PeerIdentity,
  options: DeriveCredentialOptions = {},
): DarwinSession {
  try {
    return derive(bindings, peer, options.signal).session;
  } catch (error) {
    throw failClosed(peer.pid, error);
  }
}

/**
 * Creates the server-side {@link SessionCredentialProvider} for macOS (see the module comment for
 * the rules). `derive` costs a few sysctl and getsid calls, plus the walk up the process tree that
 * names the host (cached per session).
 *
 * @throws from `derive`: `ERR_PEER_UNKNOWN` when the peer cannot be placed (fail closed),
 * `ERR_ABORTED` / `ERR_TIMEOUT` on signal.
 *
 * @example
 * ```ts
 * const credentials = createDarwinCredentialProvider({ bindings });
 * const { id, scope, process } = await credentials.derive(peer);
 * ```
 */
export function createDarwinCredentialProvider(
  options: DarwinCredentialOptions,
): SessionCredentialProvider {
  const { bindings } = options;
  const hosts = new HostCache();
  return {
    async derive(peer, deriveOptions = {}): Promise<SessionCredential> {
      try {
        const derived = derive(bindings, peer, deriveOptions.signal);
        const id = derived.session.id;
        const process = await hosts.describe(id, (knownHost) =>
          describe(bindings, derived, knownHost),
        );
        return { id, scope: derived.session.scope, process };
      } catch (error) {
        throw failClosed(peer.pid, error);
      }
    },
  };
}
