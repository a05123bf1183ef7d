/**
 * The executable policy: admit a peer only when the program it runs — as the kernel reports it —
 * is one of a list, and optionally only when that program's bytes hash to a pinned SHA-256.
 *
 * @module
 */

import { createHash } from 'node:crypto';
import { readlinkSync, statSync } from 'node:fs';
import { open, realpath } from 'node:fs/promises';
import path from 'node:path';
import createDebug from 'debug';
import { createError } from '../errors.js';
import type { PeerPolicy, PolicyDecision } from './peer-policy.js';

const debug = createDebug('bridgekeeper:policy');

/** What the kernel appends to `/proc/<pid>/exe` once the file was removed or replaced on disk. */
const DELETED = ' (deleted)';

/** Bytes read per step while hashing: the event loop runs between steps. */
const HASH_CHUNK_BYTES = 256 * 1024;

/** Default number of file hashes a policy remembers. */
const DEFAULT_MAX_CACHED_HASHES = 64;

/**
 * What identifies one version of a file without reading it: its device and inode, and its size,
 * modification and change times (ns). The change time cannot be set by an unprivileged user
 * (`touch -d` sets only mtime/atime, and bumps ctime), so a rewrite in place — even one that
 * restores the size and mtime — gives a new fingerprint.
 */
export interface ExecutableFingerprint {
  readonly dev: bigint;
  readonly ino: bigint;
  readonly size: bigint;
  readonly mtimeNs: bigint;
  readonly ctimeNs: bigint;
}

/** A hash of the file a process runs, and the fingerprint of the very file that was read. */
export interface ExecutableDigest {
  /** The file's fingerprint, the same before and after reading it. */
  readonly fingerprint: ExecutableFingerprint;
  /** Lower-case hex SHA-256 of the file's bytes. */
  readonly sha256: string;
}

/**
 * Where {@link allowExecutables} reads files and processes from. The default reads `/proc`
 * (Linux); tests pass a fake to count reads and to fabricate replaced binaries.
 */
export interface ExecutableReader {
  /** The canonical path of a configured path (`realpath`). */
  realpath(path: string): Promise<string>;
  /**
   * The fingerprint of the file process `pid` runs (a `stat` through `/proc/<pid>/exe`, which
   * follows to the mapped file even when its path was replaced), or `undefined` when it cannot
   * be read (the process is gone, or belongs to someone we may not inspect).
   */
  fingerprint(pid: number): Promise<ExecutableFingerprint | undefined>;
  /**
   * Reads the whole file process `pid` runs — opened through `/proc/<pid>/exe`, never through
   * its path — and hashes it without blocking the event loop. Throws when the file changed while
   * it was read; `undefined` when it cannot be opened.
   */
  sha256(pid: number): Promise<ExecutableDigest | undefined>;
  /** `readlink /proc/<pid>/exe`, or `undefined` when unreadable or gone. */
  executablePath(pid: number): Promise<string | undefined>;
  /** The process's start time (`/proc/<pid>/stat` field 22), or `undefined` when it is gone. */
  startTime(pid: number): Promise<string | undefined>;
}

function errnoCode(error: unknown): string | undefined {
  return (error as NodeJS.ErrnoException | undefined)?.code;
}

function unreadable(error: unknown): boolean {
  const code = errnoCode(error);
  return (
    code === 'ENOENT' ||
    code === 'ESRCH' ||
    code === 'EACCES' ||
    code === 'EPERM' ||
    code === 'ENOTDIR'
  );
}

function fingerprintOf(stats: {
  dev: bigint;
  ino: bigint;
  size: bigint;
  mtimeNs: bigint;
  ctimeNs: bigint;
}): ExecutableFingerprint {
  return {
    dev: stats.dev,
    ino: stats.ino,
    size: stats.size,
    mtimeNs: stats.mtimeNs,
    ctimeNs: stats.ctimeNs,
  };
}

/** The cache key of a fingerprint. */
export function fingerprintKey(fingerprint: ExecutableFingerprint): string {
  const { dev, ino, size, mtimeNs, ctimeNs } = fingerprint;
  return `${dev}:${ino}:${size}:${mtimeNs}:${ctimeNs}`;
}

type ProcModule = typeof import('../platform/linux/proc.js');
let procModule: Promise<ProcModule> | undefined;

/** The `/proc` readers, loaded on first use so that importing the package loads no platform module. */
function loadProc(): Promise<ProcModule> {
  procModule ??= import('../platform/linux/proc.js');
  return procModule;
}

/**
 * The real file system and `/proc` (Linux). `/proc` is in memory, so its reads are synchronous
 * under the promise (as in the Linux platform module); only the executable's own bytes are read
 * asynchronously, in 256 KiB steps.
 */
export const systemExecutableReader: ExecutableReader = {
  realpath: (configured) => realpath(configured),

  async fingerprint(pid) {
    try {
      return fingerprintOf(statSync(`/proc/${pid}/exe`, { bigint: true }));
    } catch (error) {
      if (unreadable(error)) return undefined;
      throw error;
    }
  },

  async sha256(pid) {
    let handle: Awaited<ReturnType<typeof open>>;
    try {
      // Opening the magic link opens the file the process has mapped, even when the path now
      // names another file (an upgrade) or nothing (a deletion).
      handle = await open(`/proc/${pid}/exe`, 'r');
    } catch (error) {
      if (unreadable(error)) return undefined;
      throw error;
    }
    try {
      const before = fingerprintOf(await handle.stat({ bigint: true }));
      const hash = createHash('sha256');
      const buffer = Buffer.allocUnsafe(HASH_CHUNK_BYTES);
      let position = 0;
      for (;;) {
        const { bytesRead } = await handle.read(buffer, 0, buffer.length, position);
        if (bytesRead === 0) break;
        hash.update(buffer.subarray(0, bytesRead));
        position += bytesRead;
      }
      const after = fingerprintOf(await handle.stat({ bigint: true }));
      if (fingerprintKey(before) !== fingerprintKey(after) || BigInt(position) !== before.size) {
        throw new Error(`the file changed while it was read (${position} of ${before.size} bytes)`);
      }
      return { fingerprint: before, sha256: hash.digest('hex') };
    } finally {
      await handle.close();
    }
  },

  async executablePath(pid) {
    try {
      return readlinkSync(`/proc/${pid}/exe`);
    } catch (error) {
      if (unreadable(error)) return undefined;
      throw error;
    }
  },

  async startTime(pid) {
    const proc = await loadProc();
    const stat = proc.readProcStatSync(pid);
    return stat === undefined || proc.hasExited(stat) ? undefined : stat.startTime;
  },
};

/** Options for {@link allowExecutables}. */
export interface AllowExecutablesOptions {
  /**
   * SHA-256 (hex) per configured path: a peer running that path is admitted only when the file
   * it actually runs hashes to this value. Keys must be paths from the list, spelled as there;
   * paths without an entry are checked by path alone.
   */
  sha256?: Record<string, string>;
  /** File hashes remembered, by fingerprint (least recently used go first). Default 64. */
  maxCachedHashes?: number;
  /** Where files and processes are read from. Default {@link systemExecutableReader}. */
  reader?: ExecutableReader;
}

/** The configured paths, canonical, each with the hashes it must match (none: path only). */
type AllowedExecutables = Map<string, Set<string> | undefined>;

function invalid(message: string): never {
  throw createError('ERR_INVALID_ARGUMENT', message);
}

function reject(reason: string): PolicyDecision {
  return { allowed: false, reason };
}

function short(hash: string): string {
  return `${hash.slice(0, 16)}…`;
}

/**
 * Admits only peers running one of `paths`, as the kernel reports the peer's executable
 * (`PeerIdentity.executable`, from `/proc/<pid>/exe` at connect). A peer whose executable the OS
 * did not report — another user's process, or a setuid/setgid one, whose `/proc/<pid>/exe` a
 * non-root app may not read — is refused, and so is one whose executable was deleted or replaced
 * on disk after it started (the kernel's `" (deleted)"` suffix). The configured paths are
 * resolved with `realpath` once, at the first check (a path that does not exist then is
 * compared as written).
 *
 * With `options.sha256`, the file the process **actually runs** is hashed too — opened through
 * `/proc/<pid>/exe`, which reaches the mapped file even after its path was replaced — and
 * compared. Afterwards the policy confirms that the pid still has the peer's start time and
 * still runs the same path, so neither a pid reused meanwhile nor an exec in between passes.
 * Hash checks need `/proc` (Linux); elsewhere they refuse.
 *
 * Cost (measured on a 2-vCPU Linux VM, Node 20, x86-64 with SHA extensions): by path alone a
 * check is a set lookup, ~0.2 µs (the first check also runs `realpath` on each configured path).
 * With a hash, the first check of each version of a binary reads and hashes the whole file:
 * ~100–150 ms for the 99 MB Node binary from the page cache, ~160–210 ms from disk; a
 * synchronous `readFileSync` + hash of the same file blocks for ~140 ms. Here the file is read
 * asynchronously, 256 KiB per step, and each step's hash takes ~0.25 ms, so the event loop keeps
 * running (longest stall measured < 3 ms once warm). Connections that arrive meanwhile wait for
 * that one hash rather than start their own. Hashes are then cached by the file's fingerprint
 * (device, inode, size, mtime, ctime), so every later check of the same file costs a `stat`, a
 * `readlink` and a read of `/proc/<pid>/stat`: ~20–25 µs. A new version of the file (a new
 * inode, or a rewrite in place) gives a new fingerprint and one more full hash; a binary that
 * failed its pin is cached too, so knocking again costs no second hash. A hash is only as strong
 * as the fingerprint: a file rewritten in place keeping device, inode, size, mtime **and** ctime
 * (which only a clock change by root can arrange) would keep its cached hash.
 *
 * @param paths absolute paths of the allowed executables.
 * @throws `ERR_INVALID_ARGUMENT` at construction: no paths, a relative path, a `sha256` key that is
 * not one of `paths`, or a value that is not 64 hex digits. Never throws from a check.
 *
 * @example
 * ```ts
 * createServer({
 *   app: 'my-agent',
 *   prompt,
 *   peerPolicies: [
 *     allowExecutables(['/usr/bin/my-cli'], {
 *       sha256: { '/usr/bin/my-cli': '9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08' },
 *     }),
 *   ],
 * });
 * ```
 */
export function allowExecutables(
  paths: readonly string[],
  options: AllowExecutablesOptions = {},
): PeerPolicy {
  if (!Array.isArray(paths) || paths.length === 0) {
    invalid('allowExecutables needs at least one executable path.');
  }
  for (const configured of paths) {
    if (
      typeof configured !== 'string' ||
      !path.isAbsolute(configured) ||
      configured.includes('\0')
    ) {
      invalid(`allowExecutables needs absolute paths, not ${JSON.stringify(configured)}.`);
    }
  }
  const pinned = new Map<string, string>();
  for (const [key, value] of Object.entries(options.sha256 ?? {})) {
    if (!paths.includes(key)) {
      invalid(
        `allowExecutables: the sha256 entry for ${JSON.stringify(key)} names no path in the list (${paths.join(', ')}).`,
      );
    }
    if (typeof value !== 'string' || !/^[0-9a-fA-F]{64}$/.test(value)) {
      invalid(
        `allowExecutables: the sha256 for ${key} must be 64 hex digits, not ${JSON.stringify(value)}.`,
      );
    }
    pinned.set(key, value.toLowerCase());
  }
  const maxCached = options.maxCachedHashes ?? DEFAULT_MAX_CACHED_HASHES;
  if (!Number.isSafeInteger(maxCached) || maxCached < 0) {
    invalid(`allowExecutables: maxCachedHashes must be a non-negative integer, not ${maxCached}.`);
  }
  const reader = options.reader ?? systemExecutableReader;
  const configuredPaths = [...paths];

  let resolved: Promise<AllowedExecutables> | undefined;
  const allowedExecutables = (): Promise<AllowedExecutables> => {
    resolved ??= (async () => {
      const allowed: AllowedExecutables = new Map();
      for (const configured of configuredPaths) {
        let canonical: string;
        try {
          canonical = await reader.realpath(configured);
        } catch (error) {
          debug(
            'allowExecutables: cannot resolve %s (%s); comparing it as written',
            configured,
            errnoCode(error) ?? error,
          );
          canonical = path.normalize(configured);
        }
        const hash = pinned.get(configured);
        const hashes = allowed.get(canonical);
        // Two spellings of one file: a pin on either applies (the stricter rule wins).
        if (hash === undefined) {
          if (!allowed.has(canonical)) allowed.set(canonical, undefined);
        } else if (hashes !== undefined) {
          hashes.add(hash);
        } else {
          allowed.set(canonical, new Set([hash]));
        }
      }
      return allowed;
    })();
    return resolved;
  };

  /** sha256 by fingerprint key, in least-recently-used order. */
  const cache = new Map<string, string>();
  /** Hashes being computed, by the fingerprint key seen before opening. */
  const hashing = new Map<string, Promise<ExecutableDigest | undefined>>();

  const remember = (key: string, sha256: string): void => {
    if (maxCached === 0) return;
    cache.delete(key);
    cache.set(key, sha256);
    while (cache.size > maxCached) cache.delete(cache.keys().next().value!);
  };

  /** The hash of the file `pid` runs, from the cache when its fingerprint is known. */
  const digestOf = async (pid: number): Promise<string | undefined | { changed: string }> => {
    const fingerprint = await reader.fingerprint(pid);
    if (fingerprint === undefined) return undefined;
    const key = fingerprintKey(fingerprint);
    const cached = cache.get(key);
    if (cached !== undefined) {
      remember(key, cached);
      return cached;
    }
    let pending = hashing.get(key);
    if (pending === undefined) {
      const started = performance.now();
      pending = reader.sha256(pid).then((digest) => {
        if (digest !== undefined) {
          remember(fingerprintKey(digest.fingerprint), digest.sha256);
          debug(
            'hashed the executable of pid %d (%s bytes) in %d ms',
            pid,
            digest.fingerprint.size,
            Math.round(performance.now() - started),
          );
        }
        return digest;
      });
      hashing.set(key, pending);
      const forget = (): void => {
        hashing.delete(key);
      };
      pending.then(forget, forget);
    }
    const digest = await pending;
    if (digest === undefined) return undefined;
    if (fingerprintKey(digest.fingerprint) !== key) {
      // The file opened is not the one stat'd a moment before: an exec, or a pid reused.
      return { changed: 'its executable changed while it was being checked' };
    }
    return digest.sha256;
  };

  return {
    name: `executable:${configuredPaths.join(',')}`,
    async check(peer): Promise<PolicyDecision> {
      const executable = peer.executable;
      if (executable === undefined) {
        return reject(
          "the OS did not report the peer's executable (another user's process, or a setuid/setgid one, cannot be inspected)",
        );
      }
      if (executable.endsWith(DELETED)) {
        return reject(
          `the peer's executable ${executable.slice(0, -DELETED.length)} was deleted or replaced on disk after the process started; restart it`,
        );
      }
      const allowed = await allowedExecutables();
      if (!allowed.has(executable)) {
        return reject(
          `${executable} is not an allowed executable (allowed: ${[...allowed.keys()].join(', ')})`,
        );
      }
      const expected = allowed.get(executable);
      if (expected === undefined) return { allowed: true };

      const { pid, startTime } = peer;
      if (pid === undefined || startTime === undefined) {
        return reject("checking the executable's sha256 needs the peer's pid and start time");
      }
      let digest: Awaited<ReturnType<typeof digestOf>>;
      try {
        digest = await digestOf(pid);
      } catch (error) {
        return reject(
          `could not hash the executable of pid ${pid}: ${error instanceof Error ? error.message : String(error)}`,
        );
      }
      if (digest === undefined) {
        return reject(
          `the executable of pid ${pid} could not be read (the process may have exited)`,
        );
      }
      // Last, as in the platform's own identification: if the pid still has the peer's start
      // time and still runs the same path now, what was hashed was the peer's program.
      const [nowStartTime, nowExecutable] = await Promise.all([
        reader.startTime(pid),
        reader.executablePath(pid),
      ]);
      if (nowStartTime !== startTime) {
        return reject(`the peer (pid ${pid}) exited while its executable was being checked`);
      }
      if (typeof digest === 'object') return reject(`the peer (pid ${pid}): ${digest.changed}`);
      if (nowExecutable !== executable) {
        return reject(
          nowExecutable?.endsWith(DELETED)
            ? `the peer's executable ${executable} was replaced on disk while it was being checked`
            : `the peer (pid ${pid}) now runs ${nowExecutable ?? 'something unreadable'}, not ${executable}`,
        );
      }
      if (!expected.has(digest)) {
        return reject(
          `the running ${executable} has sha256 ${short(digest)}, not the configured ${[...expected].map(short).join(' or ')}`,
        );
      }
      return { allowed: true };
    },
  };
}
