/**
 * The Linux system calls Bridgekeeper needs that Node does not expose, bound through koffi.
 *
 * This is the only file under `src/platform/linux/` that touches koffi, and it loads it lazily
 * with a dynamic `import()` the first time {@link loadLinuxBindings} is called, so importing the
 * package root never loads native code (`require('koffi')` costs ~11 ms). Every logic module
 * takes a {@link LinuxBindings} as a parameter, so tests can pass fakes.
 *
 * koffi 3 does not type-check pointer arguments (a wrong pointer crashes the process rather than
 * throwing), so every native call here goes through a typed wrapper that only ever passes
 * Buffers this module allocated, with their real sizes.
 *
 * @module
 */

import { endianness, constants as osConstants } from 'node:os';
import { PlatformError } from '../../errors.js';
import { loadOnce } from '../../util/load-once.js';
import { createLog } from '../../util/log.js';

const debug = createLog('bridgekeeper:linux');

/** What `SO_PEERCRED` reports for the process on the other end of a Unix socket. */
export interface PeerCredentials {
  /** Process id of the peer at `connect()`/`listen()` time, in our pid namespace (0 if it has none there). */
  readonly pid: number;
  /** Effective user id of the peer at `connect()`/`listen()` time. */
  readonly uid: number;
  /** Effective group id of the peer at `connect()`/`listen()` time. */
  readonly gid: number;
}

/**
 * The typed native surface of the Linux platform module. The real one comes from
 * {@link loadLinuxBindings}; tests pass fakes.
 */
export interface LinuxBindings {
  /**
   * Reads the peer's pid, uid and gid from a connected Unix socket (`SO_PEERCRED`).
   *
   * @throws `ERR_PLATFORM` when `getsockopt` fails; `cause` is an errno error.
   */
  getPeerCredentials(fd: number): PeerCredentials;
  /**
   * Opens a pidfd for the peer of a connected Unix socket (`SO_PEERPIDFD`, Linux ≥ 6.5). The
   * caller owns the returned fd and must close it with {@link LinuxBindings.closeFd}.
   *
   * @returns the pidfd, or `undefined` when the kernel does not offer `SO_PEERPIDFD`.
   * @throws `ERR_PLATFORM` when the kernel offers it but the call fails (the peer is gone, …).
   */
  getPeerPidfd(fd: number): number | undefined;
  /**
   * Tells whether the process behind a pidfd is still running, without blocking: a pidfd polls
   * readable once its process has exited (zombie or reaped).
   *
   * @throws `ERR_PLATFORM` when `poll` fails or the fd is not open.
   */
  pidfdIsAlive(pidfd: number): boolean;
  /**
   * Closes a file descriptor this module handed out.
   *
   * @throws `ERR_PLATFORM` when `close` fails (other than `EINTR`, after which Linux has
   * already released the fd).
   */
  closeFd(fd: number): void;
}

const SOL_SOCKET = 1;
const SO_PEERCRED = 17;
const SO_PEERPIDFD = 77;
const POLLIN = 0x001;
const POLLNVAL = 0x020;
const ENOPROTOOPT = osConstants.errno.ENOPROTOOPT;
const EINTR = osConstants.errno.EINTR;

// The kernel writes these structs in native byte order (koffi also runs on big-endian ppc64).
const LITTLE = endianness() === 'LE';
const readI32 = (b: Buffer, o: number): number => (LITTLE ? b.readInt32LE(o) : b.readInt32BE(o));
const readU32 = (b: Buffer, o: number): number => (LITTLE ? b.readUInt32LE(o) : b.readUInt32BE(o));
const readI16 = (b: Buffer, o: number): number => (LITTLE ? b.readInt16LE(o) : b.readInt16BE(o));
const writeI32 = (b: Buffer, v: number, o: number): number =>
  LITTLE ? b.writeInt32LE(v, o) : b.writeInt32BE(v, o);
const writeU32 = (b: Buffer, v: number, o: number): number =>
  LITTLE ? b.writeUInt32LE(v, o) : b.writeUInt32BE(v, o);
const writeI16 = (b: Buffer, v: number, o: number): number =>
  LITTLE ? b.writeInt16LE(v, o) : b.writeInt16BE(v, o);

const ERRNO_NAMES = new Map<number, string>(
  Object.entries(osConstants.errno).map(([name, value]) => [value, name]),
);

/** An `Error` shaped like Node's system errors (`errno`, `code`, `syscall`), used as `cause`. */
export interface ErrnoError extends Error {
  readonly errno: number;
  readonly code: string;
  readonly syscall: string;
}

/**
 * Builds a Node-style system error for `errno`, to put in a {@link PlatformError}'s `cause`.
 *
 * @example
 * ```ts
 * errnoError('getsockopt', 92).code; // 'ENOPROTOOPT'
 * ```
 */
export function errnoError(syscall: string, errno: number): ErrnoError {
  const code = ERRNO_NAMES.get(errno) ?? `E${errno}`;
  const error = new Error(`${syscall} failed: ${code} (errno ${errno})`) as Error & {
    errno: number;
    code: string;
    syscall: string;
  };
  error.errno = errno;
  error.code = code;
  error.syscall = syscall;
  return error;
}

function platformError(syscall: string, errno: number, what: string): PlatformError {
  const cause = errnoError(syscall, errno);
  return new PlatformError('ERR_PLATFORM', `${what}: ${cause.code} (errno ${errno}).`, { cause });
}

type NativeFunction = (...args: unknown[]) => unknown;

interface Koffi {
  load(path: string | null): { func(definition: string): NativeFunction };
  errno(): number;
}

/**
 * Loads koffi and binds the libc functions the Linux platform needs. Resolves to the same object
 * on every call; a failed load is retried on the next call.
 *
 * @throws `ERR_UNSUPPORTED_PLATFORM` when koffi or libc cannot be loaded (wrong OS or
 * architecture, missing `@koromix/koffi-linux-*` package).
 *
 * @example
 * ```ts
 * const bindings = await loadLinuxBindings();
 * const { pid, uid } = bindings.getPeerCredentials(socket._handle.fd);
 * ```
 */
export function loadLinuxBindings(): Promise<LinuxBindings> {
  return loadLinuxOnce();
}

const loadLinuxOnce = loadOnce(async (): Promise<LinuxBindings> => {
  let koffi: Koffi;
  let libc: ReturnType<Koffi['load']>;
  try {
    // koffi is CommonJS at heart; its ESM entry re-exports the API as the default export.
    koffi = ((await import('koffi')) as unknown as { default: Koffi }).default;
    libc = loadLibc(koffi);
  } catch (error) {
    throw new PlatformError(
      'ERR_UNSUPPORTED_PLATFORM',
      `Could not load koffi or libc for ${process.platform}-${process.arch}; ` +
        'check that the koffi package and its @koromix/koffi-linux-* binary installed.',
      { cause: error },
    );
  }
  return createBindings(koffi, libc);
});

function loadLibc(koffi: Koffi): ReturnType<Koffi['load']> {
  try {
    return koffi.load('libc.so.6');
  } catch (error) {
    // musl (Alpine) has no libc.so.6; the symbols are in the global scope of the node binary.
    debug('libc.so.6 not loadable (%s); using the global symbol scope', (error as Error).message);
    return koffi.load(null);
  }
}

/**
 * The raw libc calls behind {@link LinuxBindings}, as koffi exposes them: pointers are Buffers,
 * results are C return values, `errno()` reads the thread's errno after a failed call.
 *
 * @internal Exported so tests can drive the errno handling with a scripted libc.
 */
export interface NativeLibc {
  getsockopt(fd: number, level: number, name: number, value: Buffer, length: Buffer): number;
  close(fd: number): number;
  poll(fds: Buffer, count: number, timeout: number): number;
  errno(): number;
}

function createBindings(koffi: Koffi, libc: ReturnType<Koffi['load']>): LinuxBindings {
  // Pointer arguments are declared `void *` and always receive Buffers allocated in
  // createLinuxBindings with the exact size the kernel writes: koffi 3 would not stop a wrong
  // pointer from crashing us.
  return createLinuxBindings({
    getsockopt: libc.func(
      'int getsockopt(int fd, int level, int optname, void *optval, void *optlen)',
    ) as NativeLibc['getsockopt'],
    close: libc.func('int close(int fd)') as NativeLibc['close'],
    poll: libc.func('int poll(void *fds, unsigned long nfds, int timeout)') as NativeLibc['poll'],
    errno: () => koffi.errno(),
  });
}

/**
 * Builds {@link LinuxBindings} over raw libc calls.
 *
 * @internal Used by {@link loadLinuxBindings}; tests pass a scripted {@link NativeLibc}.
 */
export function createLinuxBindings(native: NativeLibc): LinuxBindings {
  const { getsockopt, close, poll } = native;
  // Reused between calls: every call is synchronous on the JS thread, so nothing can interleave.
  const value = Buffer.alloc(12);
  const length = Buffer.alloc(4);
  const pollfd = Buffer.alloc(8);
  let peerPidfdSupported = true;

  return {
    getPeerCredentials(fd) {
      writeU32(length, 12, 0);
      if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, value, length) !== 0) {
        throw platformError('getsockopt', native.errno(), 'Reading SO_PEERCRED failed');
      }
      if (readU32(length, 0) !== 12) {
        throw new PlatformError(
          'ERR_PLATFORM',
          `SO_PEERCRED returned ${readU32(length, 0)} bytes, expected 12 (struct ucred).`,
        );
      }
      return { pid: readI32(value, 0), uid: readU32(value, 4), gid: readU32(value, 8) };
    },

    getPeerPidfd(fd) {
      if (!peerPidfdSupported) return undefined;
      writeU32(length, 4, 0);
      if (getsockopt(fd, SOL_SOCKET, SO_PEERPIDFD, value, length) !== 0) {
        const errno = native.errno();
        if (errno === ENOPROTOOPT) {
          // Kernels before 6.5: remember, so later connections skip the failing call.
          peerPidfdSupported = false;
          debug('SO_PEERPIDFD not supported by this kernel; identities carry no pidfd');
          return undefined;
        }
        throw platformError('getsockopt', errno, 'Reading SO_PEERPIDFD failed');
      }
      return readI32(value, 0);
    },

    pidfdIsAlive(pidfd) {
      writeI32(pollfd, pidfd, 0);
      writeI16(pollfd, POLLIN, 4);
      writeI16(pollfd, 0, 6);
      // A signal landing during poll (SIGCHLD, SIGPROF, the app's own) is not a verdict on the
      // peer: retry, or a healthy client would be dropped as "changed".
      let ready = poll(pollfd, 1, 0);
      for (let tries = 0; ready < 0 && native.errno() === EINTR && tries < 16; tries++) {
        ready = poll(pollfd, 1, 0);
      }
      if (ready < 0) throw platformError('poll', native.errno(), 'Polling a pidfd failed');
      const revents = readI16(pollfd, 6);
      if (revents & POLLNVAL) {
        throw platformError('poll', osConstants.errno.EBADF, `Polling pidfd ${pidfd} failed`);
      }
      return ready === 0;
    },

    closeFd(fd) {
      if (close(fd) !== 0) {
        const errno = native.errno();
        if (errno !== EINTR) throw platformError('close', errno, `Closing fd ${fd} failed`);
      }
    },
  };
}
