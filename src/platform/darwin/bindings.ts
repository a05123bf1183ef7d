/**
 * The macOS calls Bridgekeeper needs that Node does not expose, bound through koffi: libSystem
 * (`getsockopt` with `LOCAL_PEERPID` / `LOCAL_PEERTOKEN`, `sysctl(KERN_PROC_PID)`, `getsid`,
 * `proc_pidpath`, `sysctlbyname`), CoreFoundation and Security.framework (code-signing
 * requirements checked against a peer's audit token).
 *
 * This is the only file under `src/platform/darwin/` that loads koffi, and it does so lazily,
 * the first time {@link loadDarwinBindings} is called, so importing the package root never loads
 * native code. The logic (peer identity, session credentials, the code-signature policy) takes a
 * {@link DarwinBindings} as a parameter and is tested with fakes on any OS. The buffer handling
 * of the bindings themselves is in {@link createDarwinBindings}, over a {@link DarwinNative} of raw
 * functions, so it is tested with a fake libSystem too; only the koffi declarations in
 * `bindDarwin` are untested off a Mac.
 *
 * Pointer arguments are declared `void *` and only ever receive Buffers allocated here with the
 * size the kernel writes (koffi 3 does not type-check pointers: a wrong one crashes), or
 * CoreFoundation references (`bigint`) this file obtained.
 *
 * Not done yet: {@link DarwinBindings.localAuthentication} needs the Objective-C runtime
 * (`objc_getClass`, `objc_msgSend`) and a reply block from `./blocks.ts`; until it is written,
 * both of its calls fail with `ERR_UNSUPPORTED_PLATFORM`, which the LocalAuthentication backend
 * reports as "no prompt available" — never as a grant.
 *
 * @module
 */

import { createError, PlatformError } from '../../errors.js';
import type { LocalAuthenticationBindings } from '../../prompt/local-authentication.js';
import { createLog } from '../../util/log.js';
import type { DarwinProcessReader } from './credentials.js';
import { type KinfoProc, parseKinfoProc } from './kinfo.js';

const debug = createLog('bridgekeeper:darwin');

/** `sizeof(audit_token_t)`: eight 32-bit words (`<bsm/audit.h>`). */
export const AUDIT_TOKEN_SIZE = 32;

/** `struct sockaddr`-level constants of `<sys/un.h>` and `<sys/sysctl.h>` used here. */
export const DARWIN_CONSTANTS = Object.freeze({
  /** `SOL_LOCAL`: the option level of Unix-domain sockets. */
  SOL_LOCAL: 0,
  /** `LOCAL_PEERPID`: the peer's pid (`pid_t`). */
  LOCAL_PEERPID: 2,
  /** `LOCAL_PEERTOKEN`: the peer's `audit_token_t`. */
  LOCAL_PEERTOKEN: 6,
  CTL_KERN: 1,
  KERN_PROC: 14,
  KERN_PROC_PID: 1,
  /** `PROC_PIDPATHINFO_MAXSIZE` (`4 * MAXPATHLEN`). */
  PROC_PIDPATHINFO_MAXSIZE: 4096,
  /** `kCFStringEncodingUTF8`. */
  kCFStringEncodingUTF8: 0x0800_0100,
  /** `kSecCSDefaultFlags`. */
  kSecCSDefaultFlags: 0,
} as const);

/** Darwin errno values this file acts on (`<sys/errno.h>`). */
const ERRNO = { ENOENT: 2, ESRCH: 3 } as const;

/** Bytes of the buffer for `kinfo_proc` (larger than the 648 expected, so a bigger one still fits). */
const KINFO_BUFFER_SIZE = 1024;

/** What {@link DarwinBindings.checkCodeRequirement} found. */
export interface CodeRequirementCheck {
  /** True only when every call returned `errSecSuccess` (0). */
  readonly ok: boolean;
  /**
   * The first `OSStatus` that was not 0 (e.g. `errSecCSReqFailed` -67050, `errSecCSUnsigned`
   * -67062, `errSecCSNoSuchCode` -67065 when the process is gone, `errSecCSReqInvalid` -67052
   * for a requirement that does not compile), or 0.
   */
  readonly status: number;
}

/**
 * The typed native surface of the macOS platform module: the process reader the credential
 * provider uses, plus peer identity, code signing and LocalAuthentication. The real one comes
 * from {@link loadDarwinBindings}; tests pass fakes.
 */
export interface DarwinBindings extends DarwinProcessReader {
  /**
   * The pid of the process on the other end of a connected Unix socket (`getsockopt(fd,
   * SOL_LOCAL, LOCAL_PEERPID)`), as the kernel recorded it at connect.
   *
   * @throws `ERR_PLATFORM` when `getsockopt` fails (`cause` holds the errno).
   */
  getPeerPid(fd: number): number;
  /**
   * The peer's audit token (`getsockopt(fd, SOL_LOCAL, LOCAL_PEERTOKEN)`): 32 bytes that name
   * the process instance (pid and pid version), for Security.framework.
   *
   * @throws `ERR_PLATFORM` when `getsockopt` fails or returns another size.
   */
  getPeerToken(fd: number): Buffer;
  /**
   * Checks the process an audit token names against a code-signing requirement in Apple's
   * requirement language: `SecCodeCopyGuestWithAttributes(NULL, {kSecGuestAttributeAudit:
   * token})`, `SecRequirementCreateWithString`, `SecCodeCheckValidity`, every object released.
   * Because the token carries the pid version, a process that exited and whose pid was reused
   * is not found (`errSecCSNoSuchCode`) rather than checked in its place. Synchronous.
   *
   * @throws `ERR_INVALID_ARGUMENT` when `auditToken` is not 32 bytes or `requirement` is empty or
   * contains NUL; `ERR_PLATFORM` when CoreFoundation cannot allocate an object.
   */
  checkCodeRequirement(auditToken: Buffer, requirement: string): CodeRequirementCheck;
  /**
   * `LAContext` calls for the LocalAuthentication prompt backend. **Not implemented yet**: both
   * calls fail with `ERR_UNSUPPORTED_PLATFORM` (see the module comment).
   */
  readonly localAuthentication: LocalAuthenticationBindings;
}

/** A pointer as koffi 3 returns it: `null` for NULL. */
export type DarwinPointer = bigint | null;

/**
 * The raw C functions (and symbol values) {@link createDarwinBindings} works with: what koffi
 * binds on a Mac, or a fake in tests. Arguments are as C takes them; out-parameters are Buffers.
 */
export interface DarwinNative {
  getsockopt(fd: number, level: number, name: number, value: Buffer, length: Buffer): number;
  sysctl(
    name: Buffer,
    nameLength: number,
    old: Buffer,
    oldLength: Buffer,
    value: null,
    valueLength: number,
  ): number;
  sysctlbyname(
    name: string,
    old: Buffer,
    oldLength: Buffer,
    value: null,
    valueLength: number,
  ): number;
  getsid(pid: number): number;
  proc_pidpath(pid: number, buffer: Buffer, size: number): number;
  /** `errno` of the last call. */
  errno(): number;
  CFDataCreate(allocator: null, bytes: Buffer, length: number): DarwinPointer;
  CFStringCreateWithCString(allocator: null, text: string, encoding: number): DarwinPointer;
  CFDictionaryCreate(
    allocator: null,
    keys: Buffer,
    values: Buffer,
    count: number,
    keyCallBacks: bigint,
    valueCallBacks: bigint,
  ): DarwinPointer;
  CFRelease(object: bigint): void;
  SecCodeCopyGuestWithAttributes(
    host: null,
    attributes: bigint,
    flags: number,
    guest: Buffer,
  ): number;
  SecRequirementCreateWithString(text: bigint, flags: number, requirement: Buffer): number;
  SecCodeCheckValidity(code: bigint, flags: number, requirement: bigint): number;
  /** The value of `kSecGuestAttributeAudit` (a `CFStringRef`). */
  readonly guestAttributeAudit: bigint;
  /** The address of `kCFTypeDictionaryKeyCallBacks`. */
  readonly dictionaryKeyCallBacks: bigint;
  /** The address of `kCFTypeDictionaryValueCallBacks`. */
  readonly dictionaryValueCallBacks: bigint;
}

function errnoError(call: string, errno: number, doing: string): PlatformError {
  const cause = Object.assign(new Error(`${call} failed: errno ${errno}`), {
    errno,
    syscall: call,
  });
  return new PlatformError('ERR_PLATFORM', `${doing}: ${call} failed (errno ${errno}).`, {
    cause,
  });
}

const isNull = (pointer: DarwinPointer): pointer is null => pointer === null || pointer === 0n;

/**
 * Builds {@link DarwinBindings} over raw functions. Every call is synchronous on the JS thread,
 * so the scratch Buffers are reused safely.
 *
 * @internal exported for tests (a fake libSystem); use {@link loadDarwinBindings}.
 */
export function createDarwinBindings(native: DarwinNative): DarwinBindings {
  const C = DARWIN_CONSTANTS;
  const option = Buffer.alloc(AUDIT_TOKEN_SIZE);
  const optionLength = Buffer.alloc(4);
  const mib = Buffer.alloc(16);
  const sizeOut = Buffer.alloc(8);
  const pathBuffer = Buffer.alloc(C.PROC_PIDPATHINFO_MAXSIZE);

  const peerOption = (fd: number, name: number, size: number, what: string): Buffer => {
    option.fill(0);
    optionLength.writeUInt32LE(size, 0);
    if (native.getsockopt(fd, C.SOL_LOCAL, name, option, optionLength) !== 0) {
      throw errnoError('getsockopt', native.errno(), `Reading ${what} of socket ${fd} failed`);
    }
    const got = optionLength.readUInt32LE(0);
    if (got !== size) {
      throw new PlatformError(
        'ERR_PLATFORM',
        `getsockopt(${what}) returned ${got} bytes, expected ${size}; this macOS is not supported.`,
      );
    }
    return Buffer.from(option.subarray(0, size));
  };

  const unsupported = () =>
    createError(
      'ERR_UNSUPPORTED_PLATFORM',
      'LocalAuthentication through koffi is not implemented yet in this version of Bridgekeeper; ' +
        'pass your own LocalAuthenticationBindings or another prompt backend.',
    );

  return {
    getPeerPid(fd) {
      return peerOption(fd, C.LOCAL_PEERPID, 4, 'LOCAL_PEERPID').readInt32LE(0);
    },

    getPeerToken(fd) {
      return peerOption(fd, C.LOCAL_PEERTOKEN, AUDIT_TOKEN_SIZE, 'LOCAL_PEERTOKEN');
    },

    kinfo(pid): KinfoProc | undefined {
      mib.writeInt32LE(C.CTL_KERN, 0);
      mib.writeInt32LE(C.KERN_PROC, 4);
      mib.writeInt32LE(C.KERN_PROC_PID, 8);
      mib.writeInt32LE(pid, 12);
      const record = Buffer.alloc(KINFO_BUFFER_SIZE);
      sizeOut.writeBigUInt64LE(BigInt(KINFO_BUFFER_SIZE), 0);
      if (native.sysctl(mib, 4, record, sizeOut, null, 0) !== 0) {
        const errno = native.errno();
        if (errno === ERRNO.ESRCH) return undefined;
        throw errnoError('sysctl', errno, `Reading kinfo_proc of pid ${pid} failed`);
      }
      const length = Number(sizeOut.readBigUInt64LE(0));
      // No such process: sysctl succeeds and writes nothing.
      if (length === 0) return undefined;
      return parseKinfoProc(record.subarray(0, Math.min(length, KINFO_BUFFER_SIZE)));
    },

    sessionId(pid) {
      const sid = native.getsid(pid);
      if (sid >= 0) return sid;
      const errno = native.errno();
      if (errno === ERRNO.ESRCH) return undefined;
      throw errnoError('getsid', errno, `Reading the session of pid ${pid} failed`);
    },

    executablePath(pid) {
      const length = native.proc_pidpath(pid, pathBuffer, pathBuffer.length);
      if (length <= 0) {
        debug('proc_pidpath(%d) failed: errno %d', pid, native.errno());
        return undefined;
      }
      const end = pathBuffer.indexOf(0);
      return pathBuffer.toString('utf8', 0, Math.min(length, end === -1 ? length : end));
    },

    bootSessionUuid() {
      const value = Buffer.alloc(64);
      sizeOut.writeBigUInt64LE(BigInt(value.length), 0);
      if (native.sysctlbyname('kern.bootsessionuuid', value, sizeOut, null, 0) !== 0) {
        const errno = native.errno();
        if (errno === ERRNO.ENOENT) return undefined;
        throw errnoError('sysctlbyname', errno, 'Reading kern.bootsessionuuid failed');
      }
      const length = Math.min(Number(sizeOut.readBigUInt64LE(0)), value.length);
      const end = value.indexOf(0);
      const text = value.toString('utf8', 0, end === -1 || end > length ? length : end);
      return text === '' ? undefined : text;
    },

    checkCodeRequirement(auditToken, requirement) {
      if (!Buffer.isBuffer(auditToken) || auditToken.length !== AUDIT_TOKEN_SIZE) {
        throw createError(
          'ERR_INVALID_ARGUMENT',
          `An audit token has ${AUDIT_TOKEN_SIZE} bytes; got ${Buffer.isBuffer(auditToken) ? auditToken.length : typeof auditToken}.`,
        );
      }
      if (
        typeof requirement !== 'string' ||
        requirement.trim() === '' ||
        requirement.includes('\0')
      ) {
        throw createError(
          'ERR_INVALID_ARGUMENT',
          'A code-signing requirement must be a non-empty string without NUL characters.',
        );
      }
      const owned: bigint[] = [];
      const keep = (pointer: DarwinPointer, what: string): bigint => {
        if (isNull(pointer)) {
          throw new PlatformError('ERR_PLATFORM', `CoreFoundation could not create ${what}.`);
        }
        owned.push(pointer);
        return pointer;
      };
      try {
        const data = keep(native.CFDataCreate(null, auditToken, AUDIT_TOKEN_SIZE), 'a CFData');
        const keys = Buffer.alloc(8);
        const values = Buffer.alloc(8);
        keys.writeBigUInt64LE(native.guestAttributeAudit, 0);
        values.writeBigUInt64LE(data, 0);
        const attributes = keep(
          native.CFDictionaryCreate(
            null,
            keys,
            values,
            1,
            native.dictionaryKeyCallBacks,
            native.dictionaryValueCallBacks,
          ),
          'a CFDictionary',
        );
        const out = Buffer.alloc(8);
        let status = native.SecCodeCopyGuestWithAttributes(
          null,
          attributes,
          C.kSecCSDefaultFlags,
          out,
        );
        if (status !== 0) return { ok: false, status };
        const code = keep(out.readBigUInt64LE(0), 'a SecCode');
        const text = keep(
          native.CFStringCreateWithCString(null, requirement, C.kCFStringEncodingUTF8),
          'a CFString',
        );
        out.fill(0);
        status = native.SecRequirementCreateWithString(text, C.kSecCSDefaultFlags, out);
        if (status !== 0) return { ok: false, status };
        const compiled = keep(out.readBigUInt64LE(0), 'a SecRequirement');
        status = native.SecCodeCheckValidity(code, C.kSecCSDefaultFlags, compiled);
        return { ok: status === 0, status };
      } finally {
        for (const object of owned.reverse()) native.CFRelease(object);
      }
    },

    localAuthentication: {
      canEvaluatePolicy() {
        throw unsupported();
      },
      async evaluatePolicy() {
        throw unsupported();
      },
    },
  };
}

type NativeFunction = (...args: never[]) => unknown;

interface Koffi {
  load(path: string): {
    func(definition: string): NativeFunction;
    symbol(name: string): unknown;
  };
  decode(pointer: unknown, type: string): unknown;
  errno(): number;
}

const LIBSYSTEM = '/usr/lib/libSystem.B.dylib';
const CORE_FOUNDATION = '/System/Library/Frameworks/CoreFoundation.framework/CoreFoundation';
const SECURITY = '/System/Library/Frameworks/Security.framework/Security';

let loading: Promise<DarwinBindings> | undefined;

/**
 * Loads koffi and binds libSystem, CoreFoundation and Security.framework, once per process.
 *
 * @throws (rejects with) `ERR_UNSUPPORTED_PLATFORM` when this is not 64-bit macOS, or koffi or a
 * system library cannot be loaded.
 *
 * @example
 * ```ts
 * const bindings = await loadDarwinBindings();
 * const pid = bindings.getPeerPid(fd);
 * ```
 */
export function loadDarwinBindings(): Promise<DarwinBindings> {
  loading ??= bindDarwin();
  loading.catch(() => {
    loading = undefined;
  });
  return loading;
}

async function bindDarwin(): Promise<DarwinBindings> {
  if (process.platform !== 'darwin' || (process.arch !== 'x64' && process.arch !== 'arm64')) {
    throw new PlatformError(
      'ERR_UNSUPPORTED_PLATFORM',
      `The macOS bindings need 64-bit macOS (x64 or arm64); this is ${process.platform}-${process.arch}.`,
    );
  }
  try {
    // koffi is CommonJS at heart; its ESM entry re-exports the API as the default export.
    const koffi = ((await import('koffi')) as unknown as { default: Koffi }).default;
    const system = koffi.load(LIBSYSTEM);
    const cf = koffi.load(CORE_FOUNDATION);
    const security = koffi.load(SECURITY);
    const f = <T>(library: ReturnType<Koffi['load']>, definition: string) =>
      library.func(definition) as unknown as T;
    const auditKey = koffi.decode(security.symbol('kSecGuestAttributeAudit'), 'void *');
    if (typeof auditKey !== 'bigint' || auditKey === 0n) {
      throw new Error('kSecGuestAttributeAudit is NULL');
    }
    const native: DarwinNative = {
      getsockopt: f(
        system,
        'int getsockopt(int fd, int level, int name, void *value, void *length)',
      ),
      sysctl: f(
        system,
        'int sysctl(void *name, uint32 namelen, void *old, void *oldlen, void *value, size_t valuelen)',
      ),
      sysctlbyname: f(
        system,
        'int sysctlbyname(const char *name, void *old, void *oldlen, void *value, size_t valuelen)',
      ),
      getsid: f(system, 'int getsid(int pid)'),
      proc_pidpath: f(system, 'int proc_pidpath(int pid, void *buffer, uint32 size)'),
      errno: () => koffi.errno(),
      CFDataCreate: f(cf, 'void *CFDataCreate(void *allocator, void *bytes, long length)'),
      CFStringCreateWithCString: f(
        cf,
        'void *CFStringCreateWithCString(void *allocator, const char *text, uint32 encoding)',
      ),
      CFDictionaryCreate: f(
        cf,
        'void *CFDictionaryCreate(void *allocator, void *keys, void *values, long count, void *keyCallBacks, void *valueCallBacks)',
      ),
      CFRelease: f(cf, 'void CFRelease(void *object)'),
      SecCodeCopyGuestWithAttributes: f(
        security,
        'int32 SecCodeCopyGuestWithAttributes(void *host, void *attributes, uint32 flags, void *guest)',
      ),
      SecRequirementCreateWithString: f(
        security,
        'int32 SecRequirementCreateWithString(void *text, uint32 flags, void *requirement)',
      ),
      SecCodeCheckValidity: f(
        security,
        'int32 SecCodeCheckValidity(void *code, uint32 flags, void *requirement)',
      ),
      guestAttributeAudit: auditKey,
      dictionaryKeyCallBacks: cf.symbol('kCFTypeDictionaryKeyCallBacks') as bigint,
      dictionaryValueCallBacks: cf.symbol('kCFTypeDictionaryValueCallBacks') as bigint,
    };
    return createDarwinBindings(native);
  } catch (error) {
    throw new PlatformError(
      'ERR_UNSUPPORTED_PLATFORM',
      `Could not load koffi, libSystem, CoreFoundation or Security.framework on ${process.platform}-${process.arch}; ` +
        `check that the koffi package and its @koromix/koffi-darwin-${process.arch} binary installed.`,
      { cause: error },
    );
  }
}
