/**
 * Session credentials on Windows, derived by the server from the verified peer.
 *
 * Windows has no terminal session to key on, so — as the design says — a credential names the
 * **invoking process**: the peer's parent, by pid and creation time (`scope: 'process'`), with
 * the peer's user SID. Every tool one PowerShell or Command Prompt runs shares it; another
 * window, another tab, and a subshell (a new process) do not, and need their own approval.
 *
 * Everything is read through process handles from Windows — never from the client's words.
 * Parent pids on Windows are recorded at creation and never change, even after the parent exits
 * and its pid goes to another process, so doubt never widens a credential:
 *
 * - the parent cannot be opened or read, has exited, or was created **after** the peer (the pid
 *   now belongs to another process) → the peer's own pid + creation time: the narrowest scope;
 * - the peer itself exits or is replaced while we look → `ERR_PEER_UNKNOWN` (polkit
 *   CVE-2021-3560 granted when the caller vanished mid-check); it is re-checked after the parent
 *   was read.
 *
 * A parent created in the same clock tick as the peer (creation times are equal) is taken as
 * the parent: Windows stamps creation times with the system time, whose tick can be ~15 ms, and a
 * shell that starts a tool at once must not lose its session to that.
 *
 * Ids are `proc:` followed by 32 hex digits: the first 128 bits of a SHA-256 over a versioned
 * domain tag, the user SID and the anchor's pid and creation time. Creation times are absolute
 * (FILETIME), so no boot id is needed. They are not secret; hashing keeps SIDs and pids out of
 * logs and events that show ids.
 *
 * @module
 */

import { win32 } from 'node:path';
import { throwIfAborted } from '../../errors.js';
import type {
  DeriveCredentialOptions,
  SessionCredential,
  SessionCredentialProvider,
} from '../../session/credentials.js';
import { failClosed, HostCache, hashSessionId, peerUnknown } from '../../session/session-id.js';
import type { PeerIdentity } from '../../transport/transport.js';
import { createLog } from '../../util/log.js';
import type { Win32Bindings, Win32Handle } from './bindings.js';
import { ownedProcessHandle, parseFileTime } from './identity.js';
import { BOUNDARIES, describeWin32Process } from './process-description.js';

const debug = createLog('bridgekeeper:win32');

/** Versioned, so a change of derivation can never make an old id match a new one. */
const ID_DOMAIN = 'bridgekeeper/win32/session/v1';

/** Dependencies of the Windows credential provider. */
export interface Win32CredentialOptions {
  /** The native bindings (tests pass fakes). */
  readonly bindings: Win32Bindings;
}

/**
 * Where a process belongs, with the facts the id was built from (for diagnostics; the id is what
 * grants compare).
 */
export interface Win32Session {
  /** The credential id: `proc:<hex>`. */
  readonly id: string;
  /** Always `process` on Windows. */
  readonly scope: 'process';
  /** Which rule produced it: keyed on the invoking parent, or on the peer itself. */
  readonly basis: 'invoking-parent' | 'self';
  /** The process the session was derived for. */
  readonly pid: number;
  /** The process the id is keyed on (the invoking parent, or the peer itself). */
  readonly anchorPid: number;
  /** Why the peer itself was chosen, when it was. */
  readonly note?: string;
}

function hashId(fields: readonly (string | number)[]): string {
  return hashSessionId(ID_DOMAIN, 'proc', fields);
}

function closeQuietly(bindings: Win32Bindings, handle: Win32Handle): void {
  try {
    bindings.closeHandle(handle);
  } catch (error) {
    debug('closing process handle %s failed: %O', handle, error);
  }
}

/** The parent a session may be keyed on, or why none may. */
function readAnchor(
  bindings: Win32Bindings,
  pid: number,
  ppid: number | undefined,
  created: bigint,
): { pid: number; startTime: string } | { note: string } {
  if (ppid === undefined || ppid === 0 || ppid === 4 || ppid === pid) {
    return { note: `no invoking parent (parent pid ${ppid ?? 'unknown'})` };
  }
  let handle: Win32Handle | undefined;
  try {
    handle = bindings.openProcess(ppid);
    if (handle === undefined) return { note: `invoking parent ${ppid} exited` };
    const startTime = bindings.processCreationTime(handle);
    const parentCreated = parseFileTime(startTime);
    if (parentCreated === undefined) {
      return { note: `invoking parent ${ppid} has no readable creation time` };
    }
    if (parentCreated > created) {
      return { note: `invoking parent ${ppid} exited and its pid was reused` };
    }
    if (!bindings.processIsRunning(handle)) return { note: `invoking parent ${ppid} exited` };
    // The desktop or a service manager is nobody's shell: every program started from Explorer,
    // the Start menu or a scheduled task would share one grant. Key on the peer itself instead.
    const image = bindings.processImagePath(handle);
    const name = image === undefined ? undefined : win32.basename(image).toLowerCase();
    if (name !== undefined && BOUNDARIES.has(name)) {
      return {
        note: `invoking parent ${ppid} is ${name}, which starts every program of the desktop`,
      };
    }
    return { pid: ppid, startTime };
  } catch (error) {
    // What cannot be read about the parent narrows the session; it never fails the peer.
    debug('pid %d: cannot read its parent %d: %O', pid, ppid, error);
    return { note: `invoking parent ${ppid} could not be read` };
  } finally {
    if (handle !== undefined) closeQuietly(bindings, handle);
  }
}

interface Derived {
  readonly session: Win32Session;
  /** The facts the description is built from. */
  readonly subject: { pid: number; startTime: string; executable?: string };
  readonly anchor: { pid: number } | undefined;
}

function derive(bindings: Win32Bindings, peer: PeerIdentity, signal?: AbortSignal): Derived {
  const { pid, startTime, sid } = peer;
  const created = parseFileTime(startTime);
  if (pid === undefined || startTime === undefined || created === undefined || !sid) {
    throw peerUnknown(
      'The peer identity lacks a pid, creation time or user SID from Windows; it cannot be placed in a session.',
    );
  }
  throwIfAborted(signal, 'Deriving the session credential');
  const owned = ownedProcessHandle(bindings, peer);
  const handle = owned ?? bindings.openProcess(pid);
  if (handle === undefined) {
    throw peerUnknown(`The client process (pid ${pid}) exited while its session was derived.`);
  }
  try {
    // The peer must be the process that connected before and after the parent is read: then the
    // parent pid read in between is its own.
    const confirm = (): void => {
      if (bindings.processCreationTime(handle) !== startTime) {
        throw peerUnknown(
          `The client process (pid ${pid}) is gone: its pid now belongs to another process.`,
        );
      }
      if (!bindings.processIsRunning(handle)) {
        throw peerUnknown(`The client process (pid ${pid}) exited while its session was derived.`);
      }
    };
    confirm();
    const ppid = bindings.parentProcessId(handle);
    const anchor = readAnchor(bindings, pid, ppid, created);
    throwIfAborted(signal, 'Deriving the session credential');
    confirm();
    const subject = {
      pid,
      startTime,
      ...(peer.executable === undefined ? {} : { executable: peer.executable }),
    };
    if ('pid' in anchor) {
      return {
        session: {
          id: hashId([sid.toUpperCase(), anchor.pid, anchor.startTime]),
          scope: 'process',
          basis: 'invoking-parent',
          pid,
          anchorPid: anchor.pid,
        },
        subject,
        anchor: { pid: anchor.pid },
      };
    }
    debug('pid %d: %s; keying the session on the process itself', pid, anchor.note);
    return {
      session: {
        id: hashId([sid.toUpperCase(), pid, startTime]),
        scope: 'process',
        basis: 'self',
        pid,
        anchorPid: pid,
        note: anchor.note,
      },
      subject,
      anchor: undefined,
    };
  } finally {
    if (owned === undefined) closeQuietly(bindings, handle);
  }
}

/**
 * Derives the {@link Win32Session} of a verified peer, with the facts behind its id (the provider
 * returns only the id, scope and description).
 *
 * @throws `ERR_PEER_UNKNOWN` when the peer lacks pid, creation time or SID, or exits or is
 * replaced mid-derivation, or Windows fails to answer. `ERR_ABORTED` / `ERR_TIMEOUT` on signal.
 *
 * @example
 * ```ts
 * const session = await deriveWin32Session(bindings, peer);
 * console.log(session.basis, session.anchorPid);
 * ```
 */
export async function deriveWin32Session(
  bindings: Win32Bindings,
  peer: PeerIdentity,
  options: DeriveCredentialOptions = {},
): Promise<Win32Session> {
  try {
    return derive(bindings, peer, options.signal).session;
  } catch (error) {
    throw failClosed(peer.pid, error);
  }
}

/**
 * Creates the server-side {@link SessionCredentialProvider} for Windows (see the module comment
 * for the rules). `derive` costs a few handle reads for the peer and its parent, plus the walk
 * up the parent chain that names the host (cached per session).
 *
 * @throws from `derive`: `ERR_PEER_UNKNOWN` when the peer cannot be placed (fail closed),
 * `ERR_ABORTED` / `ERR_TIMEOUT` on signal.
 *
 * @example
 * ```ts
 * const credentials = createWin32CredentialProvider({ bindings: await loadWin32Bindings() });
 * const { id, scope, process } = await credentials.derive(peer);
 * ```
 */
export function createWin32CredentialProvider(
  options: Win32CredentialOptions,
): SessionCredentialProvider {
  const { bindings } = options;
  const hosts = new HostCache();
  return {
    async derive(peer, deriveOptions = {}): Promise<SessionCredential> {
      try {
        const { session, subject, anchor } = derive(bindings, peer, deriveOptions.signal);
        const process = await hosts.describe(session.id, (knownHost) =>
          describeWin32Process(
            bindings,
            subject,
            anchor,
            knownHost === undefined ? {} : { knownHost },
          ),
        );
        return { id: session.id, scope: session.scope, process };
      } catch (error) {
        throw failClosed(peer.pid, error);
      }
    },
  };
}
