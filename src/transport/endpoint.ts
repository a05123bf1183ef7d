/**
 * Where an app's Unix socket lives, and making that place safe before anything listens there.
 *
 * The socket sits in a directory of its own that only the user can enter (mode 0700), under
 * `$XDG_RUNTIME_DIR` on Linux, `$TMPDIR` (per-user) on macOS, or `<tmpdir>/bridgekeeper-<uid>`
 * otherwise. Nothing here follows a symbolic link, changes the mode of something it did not
 * create, or trusts a directory that another user could swap out from under it.
 *
 * @module
 */

import type { Stats } from 'node:fs';
import { chmod, lstat, mkdir, realpath, stat } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { createError } from '../errors.js';

/**
 * The longest socket path, in bytes, each OS accepts: `sun_path` holds 108 bytes on Linux and
 * 104 on macOS and the BSDs, including the terminating NUL.
 */
export const MAX_SOCKET_PATH_BYTES: Readonly<Partial<Record<NodeJS.Platform, number>>> =
  Object.freeze({
    linux: 107,
    android: 107,
    sunos: 107,
    darwin: 103,
    freebsd: 103,
    openbsd: 103,
    netbsd: 103,
  });

const APP_NAME = /^[a-z0-9][a-z0-9._-]{0,63}$/i;

/** File name of the socket inside the app's directory. */
const SOCKET_NAME = 'agent.sock';

/** Where {@link resolveEndpoint} puts an app's socket. */
export interface Endpoint {
  /** The directory of the app's socket; {@link prepareEndpointDirectory} creates and checks it. */
  readonly directory: string;
  /** The socket's path. */
  readonly path: string;
  /**
   * The existing, trusted directory the endpoint was placed under (`$XDG_RUNTIME_DIR`,
   * `$TMPDIR`, or the system temp directory). Everything below it is created by Bridgekeeper.
   */
  readonly base: string;
}

/** Options for {@link resolveEndpoint}; each defaults to this process's own value. */
export interface ResolveEndpointOptions {
  env?: NodeJS.ProcessEnv;
  uid?: number;
  platform?: NodeJS.Platform;
  /** The system temp directory, for the fallback location; default `os.tmpdir()`. */
  tmpdir?: string;
}

function currentUid(uid: number | undefined): number {
  const value = uid ?? process.getuid?.();
  if (value === undefined) {
    throw createError(
      'ERR_UNSUPPORTED_PLATFORM',
      'Unix socket endpoints need a Unix user id, which this platform does not have. ' +
        'On Windows, use the named-pipe transport.',
    );
  }
  return value;
}

/**
 * The socket-path limit for a platform.
 *
 * @throws `ERR_UNSUPPORTED_PLATFORM` for a platform without Unix domain socket endpoints.
 * @internal
 */
export function socketPathLimit(platform: NodeJS.Platform = process.platform): number {
  const limit = MAX_SOCKET_PATH_BYTES[platform];
  if (limit === undefined) {
    throw createError(
      'ERR_UNSUPPORTED_PLATFORM',
      `Bridgekeeper has no Unix socket endpoint for ${platform}. On Windows, use the named-pipe transport.`,
    );
  }
  return limit;
}

/**
 * Checks that a socket path fits the OS's address size; a longer one would fail at bind time
 * (or, on older systems, be silently cut short).
 *
 * @param hint - what the person can do about it.
 * @throws `ERR_ENDPOINT_PATH_TOO_LONG` naming the path, its length and the limit.
 * @internal
 */
export function checkSocketPathLength(
  socketPath: string,
  platform: NodeJS.Platform = process.platform,
  hint = 'Use a shorter path.',
): void {
  const limit = socketPathLimit(platform);
  const length = Buffer.byteLength(socketPath);
  if (length > limit) {
    throw createError(
      'ERR_ENDPOINT_PATH_TOO_LONG',
      `The socket path ${socketPath} is ${length} bytes long, over the limit of ${limit} bytes on ${platform}. ${hint}`,
    );
  }
}

/**
 * Works out where an app's socket lives: `$XDG_RUNTIME_DIR/<app>/agent.sock` on Linux,
 * `$TMPDIR/<app>/agent.sock` on macOS, and `<tmpdir>/bridgekeeper-<uid>/<app>/agent.sock` when
 * the variable is unset or not an absolute path. Touches nothing on disk.
 *
 * @throws `ERR_INVALID_ARGUMENT` for an app name that is not 1–64 letters, digits, `.`, `_`, `-`
 *   (starting with a letter or digit); `ERR_ENDPOINT_PATH_TOO_LONG` when the path exceeds
 *   {@link MAX_SOCKET_PATH_BYTES}; `ERR_UNSUPPORTED_PLATFORM` on Windows.
 * @example
 * ```ts
 * const { directory, path } = resolveEndpoint('my-agent');
 * // e.g. /run/user/1000/my-agent/agent.sock
 * ```
 */
export function resolveEndpoint(app: string, options: ResolveEndpointOptions = {}): Endpoint {
  if (typeof app !== 'string' || !APP_NAME.test(app)) {
    throw createError(
      'ERR_INVALID_ARGUMENT',
      `The app name ${JSON.stringify(app)} cannot name an endpoint. Use 1 to 64 letters, digits, ".", "_" or "-", starting with a letter or digit.`,
    );
  }
  const platform = options.platform ?? process.platform;
  socketPathLimit(platform);
  const env = options.env ?? process.env;
  const base = perUserDirectory(platform, env);
  let root: string;
  let directory: string;
  if (base !== undefined) {
    root = base;
    directory = path.posix.join(base, app);
  } else {
    root = options.tmpdir ?? os.tmpdir();
    directory = path.posix.join(root, `bridgekeeper-${currentUid(options.uid)}`, app);
  }
  const socketPath = path.posix.join(directory, SOCKET_NAME);
  checkSocketPathLength(
    socketPath,
    platform,
    platform === 'darwin'
      ? 'Use a shorter app name, or set TMPDIR to a shorter directory that only you can write to.'
      : 'Use a shorter app name, or set XDG_RUNTIME_DIR to a shorter directory that only you can write to.',
  );
  return { directory, path: socketPath, base: root };
}

/** The per-user directory the platform offers through the environment, if usable. */
function perUserDirectory(platform: NodeJS.Platform, env: NodeJS.ProcessEnv): string | undefined {
  // A relative value is invalid per the XDG spec and would depend on the working directory.
  const variable = platform === 'darwin' ? env.TMPDIR : env.XDG_RUNTIME_DIR;
  if (!variable || !path.posix.isAbsolute(variable)) return undefined;
  return path.posix.normalize(variable).replace(/(.)\/+$/, '$1');
}

/** Options for {@link prepareEndpointDirectory}. */
export interface PrepareEndpointOptions extends ResolveEndpointOptions {
  /**
   * The existing directory the endpoint was placed under ({@link Endpoint.base}); everything
   * between it and the endpoint directory must be private to the user. By default, the location
   * {@link resolveEndpoint} would have used (`$XDG_RUNTIME_DIR`, `$TMPDIR` or the system temp
   * directory) if `directory` is inside it, else the parent of `directory`.
   */
  base?: string;
}

function describeMode(mode: number): string {
  return `0${(mode & 0o7777).toString(8).padStart(3, '0')}`;
}

function unsafe(message: string): Error {
  return createError('ERR_UNSAFE_ENDPOINT', message);
}

/**
 * What a person can do about a file-system error while publishing the endpoint, as a sentence
 * to append to the message ('' when there is nothing specific to say).
 *
 * @internal
 */
export function fileSystemHint(code: string | undefined, writing = true): string {
  switch (code) {
    case 'EROFS':
      return ' Its file system is read-only: set XDG_RUNTIME_DIR (or the `path` option) to a writable directory of yours.';
    case 'ENOSPC':
    case 'EDQUOT':
      return ' Its file system is full (no space or no inodes left): free some, or set XDG_RUNTIME_DIR (or the `path` option) to a directory of yours on another one.';
    case 'EACCES':
    case 'EPERM':
      return writing
        ? ' You may not create files in its directory.'
        : ' You may not look into a directory on its path: check the owner and mode of each, or set XDG_RUNTIME_DIR (or the `path` option) to a directory of yours.';
    default:
      return '';
  }
}

function fsFailure(action: string, target: string, error: unknown): Error {
  const code = (error as NodeJS.ErrnoException).code;
  const hint =
    action === 'restrict the mode of' && (code === 'EPERM' || code === 'EACCES')
      ? ' Only its owner may change its mode.'
      : fileSystemHint(code, action === 'create');
  return createError(
    'ERR_PLATFORM',
    `Could not ${action} ${target} (${code ?? 'unknown error'}).${hint}`,
    {
      cause: error,
    },
  );
}

function isInside(parent: string, child: string): boolean {
  const relative = path.relative(parent, child);
  return relative !== '' && !relative.startsWith('..') && !path.isAbsolute(relative);
}

function defaultBase(directory: string, options: PrepareEndpointOptions): string {
  const platform = options.platform ?? process.platform;
  const candidates = [
    perUserDirectory(platform, options.env ?? process.env),
    options.tmpdir ?? os.tmpdir(),
  ];
  let best: string | undefined;
  for (const candidate of candidates) {
    if (candidate === undefined || !isInside(candidate, directory)) continue;
    if (best === undefined || candidate.length > best.length) best = candidate;
  }
  return best ?? path.dirname(directory);
}

/**
 * Checks the trusted base and every directory above it: each must belong to this user or to
 * root, and be writable by nobody else unless sticky (like /tmp) — otherwise another user could
 * rename the app's directory away and put their own in its place.
 */
async function checkBase(base: string, uid: number): Promise<void> {
  let real: string;
  try {
    // Symbolic links above the endpoint are the system's own (macOS /var → /private/var).
    real = await realpath(base);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') {
      throw unsafe(
        `The directory ${base}, where the app's endpoint belongs, does not exist. ` +
          'If it comes from XDG_RUNTIME_DIR or TMPDIR, unset the variable or point it to an existing directory of yours.',
      );
    }
    throw fsFailure('resolve', base, error);
  }
  for (let current = real; ; current = path.dirname(current)) {
    let stats: Stats;
    try {
      stats = await stat(current);
    } catch (error) {
      throw fsFailure('check', current, error);
    }
    if (!stats.isDirectory()) {
      throw unsafe(
        `${current} should be a directory, but it is not. Point XDG_RUNTIME_DIR or TMPDIR to a directory.`,
      );
    }
    if (stats.uid !== uid && stats.uid !== 0) {
      throw unsafe(
        `${current} belongs to uid ${stats.uid}, neither you (uid ${uid}) nor root, so that user could replace the app's endpoint. ` +
          'Set XDG_RUNTIME_DIR (TMPDIR on macOS) to a directory of your own.',
      );
    }
    if ((stats.mode & 0o022) !== 0 && (stats.mode & 0o1000) === 0) {
      throw unsafe(
        `${current} has mode ${describeMode(stats.mode)}: other users can write to it and it is not sticky, so they could replace the app's endpoint. ` +
          `Run \`chmod o-w,g-w ${current}\` (or \`chmod +t\` if it must stay shared), or set XDG_RUNTIME_DIR to a directory of your own.`,
      );
    }
    if (current === path.dirname(current)) return;
  }
}

/** Checks a directory that must be private to the user; `created` if this call made it. */
async function checkPrivateDirectory(
  directory: string,
  uid: number,
  created: boolean,
): Promise<void> {
  let stats: Stats;
  try {
    stats = await lstat(directory);
  } catch (error) {
    throw fsFailure('check', directory, error);
  }
  if (stats.isSymbolicLink()) {
    throw unsafe(
      `${directory} is a symbolic link; the app's endpoint directory must be a real directory, so a link cannot redirect it. ` +
        `Remove the link (\`rm ${directory}\`) and start the app again.`,
    );
  }
  if (!stats.isDirectory()) {
    throw unsafe(
      `${directory} should be the app's endpoint directory, but something else is there. Remove it and start the app again.`,
    );
  }
  if (stats.uid !== uid) {
    throw unsafe(
      `${directory} belongs to uid ${stats.uid}, not to you (uid ${uid}), so that user controls the app's endpoint. ` +
        'Remove the directory (as that user or root) and start the app again.',
    );
  }
  if ((stats.mode & 0o077) !== 0) {
    if (created) {
      // Ours and brand new: only the umask can have left bits on, and we may fix what we made.
      try {
        await chmod(directory, 0o700);
      } catch (error) {
        throw fsFailure('restrict the mode of', directory, error);
      }
      return checkPrivateDirectory(directory, uid, false);
    }
    throw unsafe(
      `${directory} has mode ${describeMode(stats.mode)}, which lets other users reach the app's endpoint. ` +
        `Run \`chmod 700 ${directory}\` and start the app again.`,
    );
  }
}

/**
 * Creates the endpoint directory (and the directories between it and its trusted base) with
 * mode 0700 where missing, then checks, without following symbolic links, that each is a real
 * directory owned by this user with no group or world permissions. The base and its ancestors
 * must belong to this user or root and be writable by others only when sticky (like /tmp).
 * Never changes the mode of a directory it did not create.
 *
 * @throws `ERR_UNSAFE_ENDPOINT` saying which path is wrong and what to do about it;
 *   `ERR_PLATFORM` when a directory cannot be created or read; `ERR_UNSUPPORTED_PLATFORM`
 *   where there are no Unix user ids.
 * @example
 * ```ts
 * const endpoint = resolveEndpoint('my-agent');
 * await prepareEndpointDirectory(endpoint.directory, { base: endpoint.base });
 * const listener = await listenUnixSocket({ path: endpoint.path });
 * ```
 */
export async function prepareEndpointDirectory(
  directory: string,
  options: PrepareEndpointOptions = {},
): Promise<void> {
  const uid = currentUid(options.uid);
  if (!path.isAbsolute(directory)) {
    throw createError(
      'ERR_INVALID_ARGUMENT',
      `The endpoint directory must be an absolute path, not ${directory}.`,
    );
  }
  const target = path.resolve(directory);
  const base = path.resolve(options.base ?? defaultBase(target, options));
  if (!isInside(base, target)) {
    throw createError(
      'ERR_INVALID_ARGUMENT',
      `The endpoint directory ${target} is not inside its base ${base}.`,
    );
  }
  await checkBase(base, uid);
  let current = base;
  for (const part of path.relative(base, target).split(path.sep)) {
    current = path.join(current, part);
    let created = false;
    try {
      await mkdir(current, { mode: 0o700 });
      created = true;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST')
        throw fsFailure('create', current, error);
    }
    await checkPrivateDirectory(current, uid, created);
  }
}

/**
 * Looks at what is at a socket path without following links: `undefined` if nothing, the
 * `lstat` result if it is a socket owned by this user.
 *
 * @throws `ERR_UNSAFE_ENDPOINT` for anything else there (a regular file, a symbolic link,
 *   another user's socket); `ERR_PLATFORM` if the path cannot be examined.
 */
export async function checkSocketFile(
  socketPath: string,
  options: { uid?: number } = {},
): Promise<Stats | undefined> {
  const uid = currentUid(options.uid);
  let stats: Stats;
  try {
    stats = await lstat(socketPath);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw fsFailure('check', socketPath, error);
  }
  if (!stats.isSocket()) {
    const what = stats.isSymbolicLink()
      ? 'a symbolic link'
      : stats.isDirectory()
        ? 'a directory'
        : 'a file that is not a socket';
    throw unsafe(
      `${socketPath} should be the app's socket, but it is ${what}. ` +
        'Bridgekeeper does not remove what it did not create: check what it is, remove it, and start the app again.',
    );
  }
  if (stats.uid !== uid) {
    throw unsafe(
      `The socket ${socketPath} belongs to uid ${stats.uid}, not to you (uid ${uid}). ` +
        "Another user's program may be squatting on the app's endpoint: remove the socket (as root) and start the app again.",
    );
  }
  return stats;
}
