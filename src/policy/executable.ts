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
import { createError, errorMessage } from '../errors.js';
import { createLog } from '../util/log.js';
import type { PeerPolicy, PolicyDecision } from './peer-policy.js';

const debug = createLog('bridgekeeper:policy');

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
  /**
   * The fingerprint of the file at `path` in **this** process's mount namespace (a `stat`, which
   * follows symlinks), or `undefined` when there is no such file.
   */
  fileFingerprint(path: string): Promise<ExecutableFingerprint | undefined>;
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
 * under the promise (as in the Linux platform module), and so is the `stat` of a configured path
 * (a local file: a few µs); only the executable's own bytes are read asynchronously, in 256 KiB
 * steps.
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

  async fileFingerprint(file) {
    try {
      return fingerprintOf(statSync(file, { bigint: true }));
    } catch (error) {
      if (unreadable(error)) return undefined;
      throw error;
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

/**
 * Whole-file hashes run one at a time, process-wide, whichever policy asks: each reads a file of
 * up to ~100 MB through a 256 KiB buffer, and running several at once would only share the same
 * event loop while holding a buffer each. At most this many more wait in line; beyond that a
 * check is refused (and may simply be tried again).
 *
 * @internal
 */
export const MAX_WAITING_HASHES = 16;

/** A first-in, first-out lane for one job at a time, with a bounded queue. */
class HashLane {
  private busy = false;
  private readonly waiting: Array<() => void> = [];

  constructor(private readonly maxWaiting: number) {}

  async run<T>(job: () => Promise<T>): Promise<T> {
    if (this.busy) {
      if (this.waiting.length >= this.maxWaiting) {
        throw new Error(
          `${this.waiting.length} other executables are already waiting to be hashed; try again shortly`,
        );
      }
      // Woken by the job before it, which hands the lane over without releasing it.
      await new Promise<void>((resolve) => this.waiting.push(resolve));
    } else {
      this.busy = true;
    }
    try {
      return await job();
    } finally {
      const next = this.waiting.shift();
      if (next) next();
      else this.busy = false;
    }
  }
}

const hashLane = new HashLane(MAX_WAITING_HASHES);

/** Options for {@link allowExecutables}. */
export interface AllowExecutablesOptions {
  /**
   * SHA-256 (hex) per configured path: a peer running that path is admitted only when the file
   * it actually runs hashes to this value. Keys must be paths from the list, spelled as there;
   * paths without an entry are checked by path and file identity alone.
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
 * Admits only peers running one of `paths`: the kernel's path of the peer's executable
 * (`PeerIdentity.executable`, from `/proc/<pid>/exe` at connect) must be one of them, **and** the
 * file the process runs must be the very file at that path in this app's mount namespace (same
 * device and inode: `stat /proc/<pid>/exe` against `stat <path>`, the latter re-read on every
 * check so that an upgraded file is followed). The path alone is not enough, because the kernel
 * reports it relative to the **peer's** mount namespace: a process of the same user can
 * `unshare -Ur -m`, bind-mount any binary over an allowed path and run it, and its
 * `/proc/<pid>/exe` then reads as the allowed path.
 *
 * **What this does not do: separate programs of the same user.** Code running as the same user
 * can run the allowed binary itself with `LD_PRELOAD`, `NODE_OPTIONS` or another interpreter
 * option, or `ptrace` it, and make it do anything — a pinned hash does not change that, since the
 * file is the genuine one. This policy filters out callers that are other programs by accident or
 * by ordinary means, and it states which program is expected; only `requireGroup` with a hardened
 * setgid binary (see docs/setgid-cli.md) keeps other same-user code out.
 *
 * A peer whose executable the OS did not report — another user's process, or a setuid/setgid
 * one, whose `/proc/<pid>/exe` a non-root app may not read (so this cannot check a setgid CLI
 * unless the app runs as root) — is refused, and so is one whose executable was deleted or
 * replaced on disk after it started (the kernel's `" (deleted)"` suffix). The configured paths
 * are resolved with `realpath` once, at the first check (a path that does not exist then is
 * compared as written). Each check then confirms that the pid still has the peer's start time
 * and still runs the same path, so a pid reused meanwhile does not pass. Needs `/proc` (Linux);
 * elsewhere every check refuses.
 *
 * With `options.sha256`, the file the process **actually runs** is hashed too — opened through
 * `/proc/<pid>/exe`, which reaches the mapped file even after its path was replaced — and
 * compared, and the start time and path are confirmed again afterwards, so neither a pid reused
 * nor an exec during the hash passes.
 *
 * Cost (measured on a 2-vCPU Linux VM, Node 20, x86-64 with SHA extensions): a check by path
 * costs two `stat`s (of `/proc/<pid>/exe` and of the configured file), a `readlink` and a read of
 * `/proc/<pid>/stat`: ~30 µs (the first check also runs `realpath` on each configured path). Like
 * the `/proc` reads, the `stat` of the configured file is synchronous, cheap on a local file
 * system: keep allowed executables off network file systems. With a hash, the first check of
 * each version of a binary reads and hashes the whole file: ~100–150 ms for the 99 MB Node
 * binary from the page cache, ~160–210 ms from disk; a synchronous `readFileSync` + hash of the
 * same file blocks for ~140 ms. Here the file is read asynchronously, 256 KiB per step, and each
 * step's hash takes ~0.25 ms, so the event loop keeps running (longest stall measured < 3 ms
 * once warm). One file is hashed at a time in the whole process (at most 16 more wait; a check
 * beyond that is refused), and connections that arrive meanwhile wait for the hash of their file
 * rather than start their own. Only a file that is the one at its configured path is ever
 * hashed. Hashes are then cached by the file's fingerprint (device, inode, size, mtime, ctime;
 * `maxCachedHashes`, least recently used first), so every later check of the same file costs
 * ~50 µs. A new version of the file (a new inode, or a rewrite in place) gives a new fingerprint
 * and one more full hash; a binary that failed its pin is cached too, so knocking again costs no
 * second hash. A hash is only as strong as the fingerprint: a file rewritten in place keeping
 * device, inode, size, mtime **and** ctime (which only a clock change by root can arrange) would
 * keep its cached hash.
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
  /**
   * Hashes being computed or waiting for the lane, by the fingerprint key seen before opening.
   * Bounded by the lane: at most one running and {@link MAX_WAITING_HASHES} waiting.
   */
  const hashing = new Map<string, Promise<ExecutableDigest | undefined>>();

  const remember = (key: string, sha256: string): void => {
    if (maxCached === 0) return;
    cache.delete(key);
    cache.set(key, sha256);
    while (cache.size > maxCached) cache.delete(cache.keys().next().value!);
  };

  /** The hash of the file `pid` runs (`running`), from the cache when it is known. */
  const digestOf = async (
    pid: number,
    running: ExecutableFingerprint,
  ): Promise<string | undefined | { changed: string }> => {
    const key = fingerprintKey(running);
    const cached = cache.get(key);
    if (cached !== undefined) {
      remember(key, cached);
      return cached;
    }
    let pending = hashing.get(key);
    if (pending === undefined) {
      pending = hashLane.run(async () => {
        const started = performance.now();
        const digest = await reader.sha256(pid);
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

  /**
   * Why the peer is not (or no longer) the process that runs `executable` as the file at that
   * path here, or `undefined` when it is. Reads first, liveness last: when the pid still has the
   * peer's start time afterwards, what was read was the peer's.
   */
  const mismatch = async (
    pid: number,
    startTime: string,
    executable: string,
    running: ExecutableFingerprint,
  ): Promise<string | undefined> => {
    const [onDisk, nowExecutable, nowStartTime] = await Promise.all([
      reader.fileFingerprint(executable),
      reader.executablePath(pid),
      reader.startTime(pid),
    ]);
    if (nowStartTime !== startTime) {
      return `the peer (pid ${pid}) exited while its executable was being checked`;
    }
    if (nowExecutable !== executable) {
      return nowExecutable?.endsWith(DELETED)
        ? `the peer's executable ${executable} was replaced on disk while it was being checked`
        : `the peer (pid ${pid}) now runs ${nowExecutable ?? 'something unreadable'}, not ${executable}`;
    }
    if (onDisk === undefined) {
      return `${executable} does not exist in this app's file system (or may not be stat'd by it): the peer runs a file of that name from another mount namespace`;
    }
    if (onDisk.dev !== running.dev || onDisk.ino !== running.ino) {
      return `the peer runs a file named ${executable} that is not the file at that path (device:inode ${running.dev}:${running.ino}, not ${onDisk.dev}:${onDisk.ino}): a bind mount in another mount namespace, or a different file system`;
    }
    return undefined;
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

      const { pid, startTime } = peer;
      if (pid === undefined || startTime === undefined) {
        return reject(
          expected === undefined
            ? "checking the peer's executable needs the peer's pid and start time"
            : "checking the executable's sha256 needs the peer's pid and start time",
        );
      }
      try {
        // The file the process runs, whatever its path says: `/proc/<pid>/exe` leads to it.
        const running = await reader.fingerprint(pid);
        if (running === undefined) {
          return reject(
            `the executable of pid ${pid} could not be read (the process may have exited)`,
          );
        }
        const problem = await mismatch(pid, startTime, executable, running);
        if (problem !== undefined) return reject(problem);
        if (expected === undefined) return { allowed: true };

        let digest: Awaited<ReturnType<typeof digestOf>>;
        try {
          digest = await digestOf(pid, running);
        } catch (error) {
          return reject(`could not hash the executable of pid ${pid}: ${errorMessage(error)}`);
        }
        if (digest === undefined) {
          return reject(
            `the executable of pid ${pid} could not be read (the process may have exited)`,
          );
        }
        // Again after the hash, which took a while: the same process, still running that path.
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
      } catch (error) {
        return reject(`could not check the executable of pid ${pid}: ${errorMessage(error)}`);
      }
    },
  };
}
