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
 * {@link DarwinBindings.localAuthentication} binds the Objective-C runtime (libobjc), Foundation
 * and LocalAuthentication.framework on its first use, and builds its reply blocks with
 * `./blocks.ts` over libSystem's block runtime; the logic is in `./local-authentication.ts`.
 *
 * Every C prototype bound here is in {@link DARWIN_DECLARATIONS}, which the tests parse with koffi
 * on Linux: a typo in a type name fails there, not on a person's Mac.
 *
 * @module
 */

import { createError, PlatformError } from '../../errors.js';
import type { LocalAuthenticationBindings } from '../../prompt/local-authentication.js';
import type { XpcBindings } from '../../transport/xpc.js';
import { isCodeRequirementText } from '../../util/code-requirement.js';
import { loadOnce } from '../../util/load-once.js';
import { createLog } from '../../util/log.js';
import { type BlockFactory, type BlocksKoffi, createBlockFactory } from './blocks.js';
import type { DarwinProcessReader } from './credentials.js';
import { type KinfoProc, parseKinfoProc } from './kinfo.js';
import { createLocalAuthenticationBindings, type ObjCNative } from './local-authentication.js';
import { createXpcBindings, type XpcNative } from './xpc.js';

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
   * `LAContext` calls for the LocalAuthentication prompt backend. The Objective-C runtime and the
   * frameworks are bound on the first call; when they cannot be, both calls fail with
   * `ERR_UNSUPPORTED_PLATFORM`, which the backend reports as "no prompt available" — never as a
   * grant.
   */
  readonly localAuthentication: LocalAuthenticationBindings;
  /**
   * libxpc for the XPC transport, bound on the first call; when it cannot be, every call fails
   * with `ERR_UNSUPPORTED_PLATFORM`.
   */
  readonly xpc: XpcBindings;
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
export function createDarwinBindings(
  native: DarwinNative,
  options: {
    /** Binds LocalAuthentication on first use; default: every call fails `ERR_UNSUPPORTED_PLATFORM`. */
    localAuthentication?: () => LocalAuthenticationBindings;
    /** Binds libxpc on first use; default: every call fails `ERR_UNSUPPORTED_PLATFORM`. */
    xpc?: () => XpcBindings;
  } = {},
): DarwinBindings {
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

  const bound = lazily(options.localAuthentication, 'LocalAuthentication');
  const xpc = lazily(options.xpc, 'libxpc');

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
      if (!isCodeRequirementText(requirement)) {
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
      canEvaluatePolicy: (policy) => bound().canEvaluatePolicy(policy),
      evaluatePolicy: async (policy, reason, evaluateOptions) =>
        bound().evaluatePolicy(policy, reason, evaluateOptions),
    },

    xpc: {
      createMachService: (name, serviceOptions) => xpc().createMachService(name, serviceOptions),
      setEventHandler: (connection, handler, handlerOptions) =>
        xpc().setEventHandler(connection, handler, handlerOptions),
      setPeerRequirement: (connection, requirement) =>
        xpc().setPeerRequirement(connection, requirement),
      resume: (connection) => xpc().resume(connection),
      send: (connection, kind, payload) => xpc().send(connection, kind, payload),
      cancel: (connection) => xpc().cancel(connection),
      barrier: (connection, done) => xpc().barrier(connection, done),
      peerPid: (connection) => xpc().peerPid(connection),
      peerEuid: (connection) => xpc().peerEuid(connection),
    },
  };
}

/** A getter that binds on first use and keeps the result; a failure is retried next time. */
function lazily<T>(bind: (() => T) | undefined, what: string): () => T {
  let value: T | undefined;
  return () => {
    if (value !== undefined) return value;
    if (!bind) {
      throw createError(
        'ERR_UNSUPPORTED_PLATFORM',
        `These macOS bindings were made without ${what}; use loadDarwinBindings().`,
      );
    }
    value = bind();
    return value;
  };
}

type NativeFunction = (...args: never[]) => unknown;

interface KoffiLibrary {
  func(definition: string): NativeFunction;
  symbol(name: string): unknown;
}

interface Koffi extends BlocksKoffi {
  load(path: string): KoffiLibrary;
  decode(pointer: unknown, type: string): unknown;
  view(pointer: unknown, length: number): ArrayBuffer;
  errno(): number;
}

/**
 * Every library and C prototype these bindings declare through koffi, by library. `objc_msgSend`
 * appears once per method shape it is called with: on arm64 it must be called through a
 * prototype that matches the method exactly (`BOOL` is declared `int8_t`, which reads `bool` on
 * arm64 and `signed char` on x86_64 alike; `NSInteger` is `long`).
 */
export const DARWIN_DECLARATIONS = Object.freeze({
  libSystem: Object.freeze({
    path: '/usr/lib/libSystem.B.dylib',
    functions: Object.freeze({
      getsockopt: 'int getsockopt(int fd, int level, int name, void *value, void *length)',
      sysctl:
        'int sysctl(void *name, uint32 namelen, void *old, void *oldlen, void *value, size_t valuelen)',
      sysctlbyname:
        'int sysctlbyname(const char *name, void *old, void *oldlen, void *value, size_t valuelen)',
      getsid: 'int getsid(int pid)',
      proc_pidpath: 'int proc_pidpath(int pid, void *buffer, uint32 size)',
    }),
  }),
  coreFoundation: Object.freeze({
    path: '/System/Library/Frameworks/CoreFoundation.framework/CoreFoundation',
    functions: Object.freeze({
      CFDataCreate: 'void *CFDataCreate(void *allocator, void *bytes, long length)',
      CFStringCreateWithCString:
        'void *CFStringCreateWithCString(void *allocator, const char *text, uint32 encoding)',
      CFDictionaryCreate:
        'void *CFDictionaryCreate(void *allocator, void *keys, void *values, long count, void *keyCallBacks, void *valueCallBacks)',
      CFRelease: 'void CFRelease(void *object)',
    }),
  }),
  security: Object.freeze({
    path: '/System/Library/Frameworks/Security.framework/Security',
    functions: Object.freeze({
      SecCodeCopyGuestWithAttributes:
        'int32 SecCodeCopyGuestWithAttributes(void *host, void *attributes, uint32 flags, void *guest)',
      SecRequirementCreateWithString:
        'int32 SecRequirementCreateWithString(void *text, uint32 flags, void *requirement)',
      SecCodeCheckValidity:
        'int32 SecCodeCheckValidity(void *code, uint32 flags, void *requirement)',
    }),
  }),
  objc: Object.freeze({
    path: '/usr/lib/libobjc.A.dylib',
    functions: Object.freeze({
      objc_getClass: 'void *objc_getClass(const char *name)',
      sel_registerName: 'void *sel_registerName(const char *name)',
      sendId: 'void *objc_msgSend(void *receiver, void *selector)',
      sendVoid: 'void objc_msgSend(void *receiver, void *selector)',
      sendIdCString: 'void *objc_msgSend(void *receiver, void *selector, const char *text)',
      sendBoolIntegerOut:
        'int8_t objc_msgSend(void *receiver, void *selector, long value, void *out)',
      sendVoidIntegerIdId:
        'void objc_msgSend(void *receiver, void *selector, long value, void *object, void *block)',
      sendInteger: 'long objc_msgSend(void *receiver, void *selector)',
      sendBoolId: 'int8_t objc_msgSend(void *receiver, void *selector, void *object)',
      sendCString: 'const char *objc_msgSend(void *receiver, void *selector)',
    }),
  }),
  foundation: Object.freeze({
    path: '/System/Library/Frameworks/Foundation.framework/Foundation',
    functions: Object.freeze({}),
  }),
  localAuthentication: Object.freeze({
    path: '/System/Library/Frameworks/LocalAuthentication.framework/LocalAuthentication',
    functions: Object.freeze({}),
  }),
  xpc: Object.freeze({
    path: '/usr/lib/system/libxpc.dylib',
    functions: Object.freeze({
      xpc_connection_create_mach_service:
        'void *xpc_connection_create_mach_service(const char *name, void *queue, uint64_t flags)',
      xpc_connection_set_event_handler:
        'void xpc_connection_set_event_handler(void *connection, void *handler)',
      xpc_connection_resume: 'void xpc_connection_resume(void *connection)',
      xpc_connection_cancel: 'void xpc_connection_cancel(void *connection)',
      xpc_connection_send_barrier:
        'void xpc_connection_send_barrier(void *connection, void *barrier)',
      xpc_connection_send_message:
        'void xpc_connection_send_message(void *connection, void *message)',
      xpc_connection_get_pid: 'int xpc_connection_get_pid(void *connection)',
      xpc_connection_get_euid: 'uint32_t xpc_connection_get_euid(void *connection)',
      xpc_dictionary_create: 'void *xpc_dictionary_create(void *keys, void *values, size_t count)',
      xpc_dictionary_set_data:
        'void xpc_dictionary_set_data(void *dictionary, const char *key, void *bytes, size_t length)',
      xpc_dictionary_set_bool:
        'void xpc_dictionary_set_bool(void *dictionary, const char *key, bool value)',
      xpc_dictionary_get_data:
        'void *xpc_dictionary_get_data(void *dictionary, const char *key, void *length)',
      xpc_dictionary_get_value: 'void *xpc_dictionary_get_value(void *dictionary, const char *key)',
      xpc_get_type: 'void *xpc_get_type(void *object)',
      xpc_retain: 'void *xpc_retain(void *object)',
      xpc_release: 'void xpc_release(void *object)',
    }),
  }),
  /** macOS 12 and later: bound when present. */
  xpcSince12: Object.freeze({
    path: '/usr/lib/system/libxpc.dylib',
    functions: Object.freeze({
      xpc_connection_set_peer_code_signing_requirement:
        'int xpc_connection_set_peer_code_signing_requirement(void *connection, const char *requirement)',
    }),
  }),
});

type Declarations = typeof DARWIN_DECLARATIONS;
type Bound<L extends keyof Declarations> = {
  [F in keyof Declarations[L]['functions']]: NativeFunction;
};

function bindLibrary<L extends keyof Declarations>(
  koffi: Koffi,
  name: L,
): { library: KoffiLibrary; functions: Bound<L> } {
  const { path, functions } = DARWIN_DECLARATIONS[name];
  const library = koffi.load(path);
  const bound: Record<string, NativeFunction> = {};
  for (const [key, definition] of Object.entries(functions)) bound[key] = library.func(definition);
  return { library, functions: bound as Bound<L> };
}

/** The value of a global pointer constant (`NSString *const`, `CFStringRef`) a library exports. */
function pointerConstant(koffi: Koffi, library: KoffiLibrary, symbol: string): bigint {
  const value = koffi.decode(library.symbol(symbol), 'void *');
  if (typeof value !== 'bigint' || value === 0n) throw new Error(`${symbol} is NULL`);
  return value;
}

/**
 * Loads koffi and binds libSystem, CoreFoundation and Security.framework, once per process
 * (LocalAuthentication and the Objective-C runtime on first use).
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
  return loadDarwinOnce();
}

const loadDarwinOnce = loadOnce(() => bindDarwin());

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
    const system = bindLibrary(koffi, 'libSystem');
    const cf = bindLibrary(koffi, 'coreFoundation');
    const security = bindLibrary(koffi, 'security');
    const native = {
      ...system.functions,
      errno: () => koffi.errno(),
      ...cf.functions,
      ...security.functions,
      guestAttributeAudit: pointerConstant(koffi, security.library, 'kSecGuestAttributeAudit'),
      dictionaryKeyCallBacks: cf.library.symbol('kCFTypeDictionaryKeyCallBacks') as bigint,
      dictionaryValueCallBacks: cf.library.symbol('kCFTypeDictionaryValueCallBacks') as bigint,
    } as unknown as DarwinNative;
    let blocks: BlockFactory | undefined;
    const blockFactory = () =>
      (blocks ??= createBlockFactory(koffi, {
        lib: system.library,
        globalBlockIsa: system.library.symbol('_NSConcreteGlobalBlock') as bigint,
      }));
    return createDarwinBindings(native, {
      localAuthentication: () => bindLocalAuthentication(koffi, blockFactory),
      xpc: () => bindXpc(koffi, blockFactory),
    });
  } catch (error) {
    throw new PlatformError(
      'ERR_UNSUPPORTED_PLATFORM',
      `Could not load koffi, libSystem, CoreFoundation or Security.framework on ${process.platform}-${process.arch}; ` +
        `check that the koffi package and its @koromix/koffi-darwin-${process.arch} binary installed.`,
      { cause: error },
    );
  }
}

/** Binds libobjc, Foundation and LocalAuthentication, with blocks over libSystem's runtime. */
function bindLocalAuthentication(
  koffi: Koffi,
  blockFactory: () => BlockFactory,
): LocalAuthenticationBindings {
  try {
    const objc = bindLibrary(koffi, 'objc');
    // Loading the frameworks registers their classes (NSString, NSAutoreleasePool, LAContext).
    bindLibrary(koffi, 'foundation');
    const la = bindLibrary(koffi, 'localAuthentication');
    const native = {
      ...objc.functions,
      laErrorDomain: pointerConstant(koffi, la.library, 'LAErrorDomain'),
    } as unknown as ObjCNative;
    debug('bound LocalAuthentication');
    return createLocalAuthenticationBindings(native, blockFactory());
  } catch (error) {
    if (error instanceof PlatformError) throw error;
    throw new PlatformError(
      'ERR_UNSUPPORTED_PLATFORM',
      'Could not load LocalAuthentication.framework or the Objective-C runtime; Touch ID prompts ' +
        'need macOS 10.15 or later.',
      { cause: error },
    );
  }
}

/** Binds libxpc for the XPC transport, with handler blocks over libSystem's runtime. */
function bindXpc(koffi: Koffi, blockFactory: () => BlockFactory): XpcBindings {
  try {
    const xpc = bindLibrary(koffi, 'xpc');
    let since12: Partial<Bound<'xpcSince12'>> = {};
    try {
      since12 = bindLibrary(koffi, 'xpcSince12').functions;
    } catch (error) {
      debug('no xpc_connection_set_peer_code_signing_requirement (before macOS 12): %O', error);
    }
    const symbol = (name: string): bigint => xpc.library.symbol(name) as bigint;
    let peerRequirement: bigint | undefined;
    try {
      peerRequirement = symbol('_xpc_error_peer_code_signing_requirement');
    } catch {
      peerRequirement = undefined;
    }
    const native = {
      ...xpc.functions,
      ...since12,
      copyBytes: (pointer: bigint, length: number) =>
        // One copy: the view is XPC's memory, freed after the handler returns.
        Buffer.from(new Uint8Array(koffi.view(pointer, length))),
      types: {
        dictionary: symbol('_xpc_type_dictionary'),
        error: symbol('_xpc_type_error'),
        connection: symbol('_xpc_type_connection'),
      },
      errors: {
        interrupted: symbol('_xpc_error_connection_interrupted'),
        invalid: symbol('_xpc_error_connection_invalid'),
        terminationImminent: symbol('_xpc_error_termination_imminent'),
        ...(peerRequirement ? { peerRequirement } : {}),
      },
    } as unknown as XpcNative;
    debug('bound libxpc');
    return createXpcBindings(native, blockFactory());
  } catch (error) {
    if (error instanceof PlatformError) throw error;
    throw new PlatformError('ERR_UNSUPPORTED_PLATFORM', 'Could not load libxpc.', {
      cause: error,
    });
  }
}
