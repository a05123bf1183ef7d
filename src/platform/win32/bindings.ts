/**
 * The Windows API calls Bridgekeeper needs that Node does not expose, bound through koffi
 * (kernel32, advapi32, ntdll, version, wintrust, crypt32, combase and node.exe's own libuv
 * exports).
 *
 * This is the only file under `src/platform/win32/` that touches koffi, and it loads it lazily
 * the first time {@link loadWin32Bindings} is called, so importing the package root never loads
 * native code. Every logic module (the named-pipe transport, peer identity, session credentials,
 * the Authenticode policy, the Windows Hello backend) takes a {@link Win32Bindings} as a
 * parameter, so it is tested with fakes on any OS, and for real under Wine.
 *
 * Handles are koffi 3 pointers: `bigint`. A function that fails throws a {@link Win32Error}
 * (`ERR_PLATFORM`) carrying the Windows error code (`GetLastError`) or HRESULT.
 *
 * @module
 */

import { abortError, createError, PlatformError, throwIfAborted } from '../../errors.js';
import type { WindowsHelloAvailability, WindowsHelloResult } from '../../prompt/windows-hello.js';
import { loadOnce } from '../../util/load-once.js';
import { createLog } from '../../util/log.js';

/** A Windows HANDLE (or other pointer-sized value), as koffi 3 returns it. */
export type Win32Handle = bigint;

/** Win32 error codes the logic above the bindings acts on. */
export const WIN32_ERRORS = {
  fileNotFound: 2,
  accessDenied: 5,
  invalidParameter: 87,
  pipeBusy: 231,
  pipeConnected: 535,
  ioPending: 997,
} as const;

/** HRESULTs the logic above the bindings acts on. */
export const HRESULTS = {
  /** REGDB_E_CLASSNOTREG: the WinRT class is not registered (Wine, Windows Server Core). */
  classNotRegistered: 0x80040154,
  /** TRUST_E_NOSIGNATURE */
  noSignature: 0x800b0100,
  /** TRUST_E_BAD_DIGEST: the file was changed after it was signed. */
  badDigest: 0x80096010,
  /** TRUST_E_SUBJECT_NOT_TRUSTED */
  notTrusted: 0x800b0004,
  /** CERT_E_UNTRUSTEDROOT */
  untrustedRoot: 0x800b0109,
} as const;

/** A failed Windows call: `ERR_PLATFORM`, with the numeric code. */
export class Win32Error extends PlatformError {
  /** `GetLastError()` value, or the HRESULT (as an unsigned 32-bit number). */
  readonly winerror: number;
  /** The Windows function that failed. */
  readonly call: string;

  constructor(call: string, winerror: number, message?: string) {
    super(
      'ERR_PLATFORM',
      message ?? `${call} failed (Windows error ${winerror} / 0x${winerror.toString(16)}).`,
    );
    this.name = 'Win32Error';
    this.call = call;
    this.winerror = winerror;
  }
}

/** Options for one named-pipe instance. */
export interface PipeInstanceOptions {
  /**
   * The first instance of a name: adds `FILE_FLAG_FIRST_PIPE_INSTANCE`, so creating it fails
   * (`ERROR_ACCESS_DENIED`) when another process already owns the name — the squatting defence.
   * (Wine does not enforce it.)
   */
  readonly first: boolean;
  /** The pipe's security descriptor in SDDL, e.g. `D:P(A;;GA;;;S-1-5-21-…)`: the user only. */
  readonly securityDescriptor: string;
}

/** The result of `WinVerifyTrust` on a file, and who signed it when it is trusted. */
export interface SignatureCheck {
  /** The HRESULT `WinVerifyTrust` returned, unsigned: 0 = signed by a trusted publisher and intact. */
  readonly status: number;
  /** The signer certificate's subject simple name (`CertGetNameStringW`), when `status` is 0. */
  readonly signer?: string;
}

/** `UserConsentVerifierAvailability` values (the Windows Hello backend's own type). */
export type UserConsentAvailability = WindowsHelloAvailability;

/** `UserConsentVerificationResult` values (the Windows Hello backend's own type). */
export type UserConsentResult = WindowsHelloResult;

/** Windows Hello through WinRT's `UserConsentVerifier`. */
export interface UserConsentBindings {
  /**
   * `UserConsentVerifier.CheckAvailabilityAsync()`, awaited without blocking the event loop.
   *
   * @throws {@link Win32Error} when WinRT or the class is missing (`0x80040154` under Wine), or
   * on `signal` (`ERR_ABORTED`).
   */
  checkAvailability(options?: { signal?: AbortSignal }): Promise<UserConsentAvailability>;
  /**
   * `IUserConsentVerifierInterop::RequestVerificationForWindowAsync(window, message)`: the
   * Windows Hello dialog, owned by `window` so it comes to the front. Aborting `signal` cancels
   * the operation (`IAsyncInfo::Cancel`) and rejects with `ERR_ABORTED`.
   *
   * @throws {@link Win32Error} when the call fails.
   */
  requestVerification(
    window: Win32Handle,
    message: string,
    options?: { signal?: AbortSignal },
  ): Promise<UserConsentResult>;
}

/**
 * The typed native surface of the Windows platform module. The real one comes from
 * {@link loadWin32Bindings}; tests pass fakes.
 */
export interface Win32Bindings {
  /** This process's id. */
  currentProcessId(): number;
  /**
   * The string SID of the user a process runs as (its token's `TokenUser`), e.g.
   * `S-1-5-21-…-1001`. `'self'` for this process.
   *
   * @throws {@link Win32Error} when the token cannot be read.
   */
  processUserSid(process: Win32Handle | 'self'): string;

  /**
   * Creates one instance of a named pipe: duplex, overlapped, byte mode,
   * `PIPE_REJECT_REMOTE_CLIENTS`, unlimited instances, with the given security descriptor.
   *
   * @throws {@link Win32Error} (`ERROR_ACCESS_DENIED` when `first` and the name is taken).
   */
  createPipeInstance(name: string, options: PipeInstanceOptions): Win32Handle;
  /**
   * Waits for a client to connect to a pipe instance without blocking the event loop or
   * Node's thread pool (overlapped `ConnectNamedPipe` + `RegisterWaitForSingleObject`); `done`
   * runs once on the JS thread. While waiting, the event loop is kept alive. Returns a function
   * that cancels the wait (`done` is then not called).
   */
  waitForClient(pipe: Win32Handle, done: (error?: Win32Error) => void): () => void;
  /**
   * Opens the client end of a pipe (`CreateFileW`, overlapped).
   *
   * @throws {@link Win32Error}: `ERROR_FILE_NOT_FOUND` when nothing listens, `ERROR_PIPE_BUSY`
   * when every instance is taken (retry shortly), `ERROR_ACCESS_DENIED` when the pipe's
   * security descriptor refuses this user.
   */
  openPipe(name: string): Win32Handle;
  /** `GetNamedPipeClientProcessId`. @throws {@link Win32Error} */
  pipeClientProcessId(pipe: Win32Handle): number;
  /** `GetNamedPipeServerProcessId`. @throws {@link Win32Error} */
  pipeServerProcessId(pipe: Win32Handle): number;
  /**
   * Gives a HANDLE to libuv as a file descriptor (`uv_open_osfhandle`, exported by node.exe),
   * for `new net.Socket({ fd })`. The fd owns the handle from then on.
   */
  handleToFd(handle: Win32Handle): number;
  /** The HANDLE behind a file descriptor (`uv_get_osfhandle`); the fd still owns it. */
  fdToHandle(fd: number): Win32Handle;
  /** `CloseHandle`. @throws {@link Win32Error} */
  closeHandle(handle: Win32Handle): void;

  /**
   * Opens a process for querying and waiting (`PROCESS_QUERY_LIMITED_INFORMATION |
   * SYNCHRONIZE`). While the handle is open the pid cannot be reused.
   *
   * @returns the handle, or `undefined` when there is no such process (or it may not be opened).
   */
  openProcess(pid: number): Win32Handle | undefined;
  /** Whether the process still runs (`WaitForSingleObject(process, 0)` times out). */
  processIsRunning(process: Win32Handle): boolean;
  /** Creation time (`GetProcessTimes`): 100-ns intervals since 1601, as a decimal string. */
  processCreationTime(process: Win32Handle): string;
  /** Full path of the process's image (`QueryFullProcessImageNameW`), or `undefined`. */
  processImagePath(process: Win32Handle): string | undefined;
  /** The parent's pid (`NtQueryInformationProcess`), or `undefined`. */
  parentProcessId(process: Win32Handle): number | undefined;
  /** The `FileDescription` of an executable's version resource ("Windows Terminal"), or `undefined`. */
  fileDescription(path: string): string | undefined;

  /**
   * `WinVerifyTrust` (Authenticode, `WINTRUST_ACTION_GENERIC_VERIFY_V2`, no UI, cached URLs
   * only) on a file, and the signer's name when it is trusted. The verification hashes the whole
   * file (≈0.6 s for node.exe), so it runs on a libuv worker thread: the event loop (an
   * Electron main thread) stays responsive and concurrent checks run in parallel.
   *
   * Aborting `signal` rejects at once; the native call cannot be interrupted and finishes on its
   * worker thread (its result is then discarded and its state closed).
   *
   * @throws {@link Win32Error} when koffi cannot start the call (too many native calls queued),
   * `ERR_ABORTED` / `ERR_TIMEOUT` on `signal`. A file that is unsigned, tampered with or not
   * trusted is not an error: it resolves with that HRESULT as `status`.
   */
  verifySignature(path: string, options?: { signal?: AbortSignal }): Promise<SignatureCheck>;
  /** Windows Hello (WinRT). */
  readonly userConsent: UserConsentBindings;
}

/**
 * Loads koffi and binds the Windows API, once.
 *
 * @throws `ERR_UNSUPPORTED_PLATFORM` when koffi or a system DLL cannot be loaded.
 */
export function loadWin32Bindings(): Promise<Win32Bindings> {
  return loadWin32Once();
}

const loadWin32Once = loadOnce(() => bindWin32());

// ---------------------------------------------------------------------------------------------
// The koffi implementation. Everything below is internal.
//
// Structs are Buffers laid out by hand for 64-bit Windows (x64, arm64: one calling convention,
// 8-byte pointers), passed as `void *`: koffi 3 does not type-check pointers, so only Buffers
// allocated here, with their real sizes, are ever passed. Types are anonymous (koffi keeps one
// registry of named types per process, and an app can load both the ESM and the CJS build).
// `GetLastError()` is read right after the failing call, before anything else runs on the thread.

type Koffi = typeof import('koffi').default;
type KoffiType = ReturnType<Koffi['proto']>;
type Library = ReturnType<Koffi['load']>;
/** An out-parameter: koffi writes the value into element 0. */
type Out<T> = [T];
/** A pointer koffi returned: `null` for NULL. */
type Pointer = bigint | null;
/**
 * A koffi function that can also run on a libuv worker thread: `.async(...args, callback)`.
 * koffi keeps no reference to the arguments of an async call: the caller keeps every Buffer
 * alive until the callback.
 */
type NativeFunction<F extends (...args: never[]) => unknown> = F & {
  async(...args: [...Parameters<F>, (error: unknown, result: ReturnType<F>) => void]): void;
};

/**
 * The last buffers handed to {@link holdReachable}. Storing them is a side effect the compiler
 * cannot drop, so they stay reachable at least until that point (and until the next call).
 */
const retained: { values: readonly unknown[] } = { values: [] };

/**
 * Keeps `values` reachable up to this call. For buffers native code reads only through
 * addresses written into other buffers (WINTRUST_DATA → WINTRUST_FILE_INFO → the path), or a
 * pointer into a buffer (a SID inside TOKEN_USER): nothing else holds them, and a collection
 * before the native call would free memory it is about to read. Call it after the last native
 * call that reads them.
 */
function holdReachable(...values: unknown[]): void {
  retained.values = values;
}

const debug = createLog('bridgekeeper:win32');

const INVALID_HANDLE_VALUE = 0xffff_ffff_ffff_ffffn;
const POINTER_SIZE = 8;

// Win32 constants (winbase.h, winnt.h, winerror.h …).
const ERROR_INVALID_HANDLE = 6;
const ERROR_INSUFFICIENT_BUFFER = 122;
const ERROR_MOD_NOT_FOUND = 126;
const ERROR_NOT_FOUND = 1168;
const PIPE_ACCESS_DUPLEX = 0x3;
const FILE_FLAG_OVERLAPPED = 0x4000_0000;
const FILE_FLAG_FIRST_PIPE_INSTANCE = 0x0008_0000;
const PIPE_TYPE_BYTE = 0x0;
const PIPE_READMODE_BYTE = 0x0;
const PIPE_WAIT = 0x0;
const PIPE_REJECT_REMOTE_CLIENTS = 0x8;
const PIPE_UNLIMITED_INSTANCES = 255;
const PIPE_BUFFER_SIZE = 64 * 1024;
const PIPE_PREFIX = '\\\\.\\pipe\\';
const PIPE_NAME_MAX = 256;
const GENERIC_READ = 0x8000_0000;
const GENERIC_WRITE = 0x4000_0000;
const OPEN_EXISTING = 3;
// A client never lets the server impersonate it beyond identification.
const SECURITY_SQOS_PRESENT = 0x0010_0000;
const SECURITY_IDENTIFICATION = 0x0001_0000;
const SDDL_REVISION_1 = 1;
const TOKEN_QUERY = 0x0008;
const TOKEN_USER_CLASS = 1;
const PROCESS_QUERY_LIMITED_INFORMATION = 0x1000;
const SYNCHRONIZE = 0x0010_0000;
const WAIT_OBJECT_0 = 0;
const WAIT_TIMEOUT = 258;
const INFINITE = 0xffff_ffff;
const WT_EXECUTEONLYONCE = 0x8;
const STATUS_PENDING = 0x103n;
const PROCESS_BASIC_INFORMATION_CLASS = 0;
const PROCESS_BASIC_INFORMATION_SIZE = 48;
const PARENT_PID_OFFSET = 40; // PROCESS_BASIC_INFORMATION.InheritedFromUniqueProcessId
const OVERLAPPED_SIZE = 32;
const OVERLAPPED_EVENT_OFFSET = 24;
const SECURITY_ATTRIBUTES_SIZE = 24;
/** How long cancelling a pending ConnectNamedPipe may take before its buffers are given up. */
const CANCEL_WAIT_MS = 5000;

// WinVerifyTrust (wintrust.h).
const WTD_UI_NONE = 2;
const WTD_REVOKE_NONE = 0;
const WTD_CHOICE_FILE = 1;
const WTD_STATEACTION_VERIFY = 1;
const WTD_STATEACTION_CLOSE = 2;
// No network fetches (AIA, CRLs) on a local authorization path: what is not cached fails closed.
const WTD_CACHE_ONLY_URL_RETRIEVAL = 0x1000;
const WINTRUST_FILE_INFO_SIZE = 32;
const WINTRUST_DATA_SIZE = 88;
const WTD_STATE_DATA_OFFSET = 56;
const CRYPT_PROVIDER_CERT_CERT_OFFSET = 8; // CRYPT_PROVIDER_CERT.pCert
const CERT_NAME_SIMPLE_DISPLAY_TYPE = 4;

// WinRT / COM.
const RO_INIT_MULTITHREADED = 1;
const RPC_E_CHANGED_MODE = 0x8001_0106;
const E_UNEXPECTED = 0x8000_ffff;
const HRESULT_ERROR_CANCELLED = 0x8007_04c7;
const USER_CONSENT_VERIFIER_CLASS = 'Windows.Security.Credentials.UI.UserConsentVerifier';
/** How often a pending WinRT operation's status is read. */
const ASYNC_POLL_MS = 50;
// Vtable slots. Every WinRT interface starts with IInspectable's six: QueryInterface, AddRef,
// Release, GetIids, GetRuntimeClassName, GetTrustLevel.
const SLOT_QUERY_INTERFACE = 0;
const SLOT_RELEASE = 2;
const SLOT_CHECK_AVAILABILITY_ASYNC = 6; // IUserConsentVerifierStatics
const SLOT_REQUEST_VERIFICATION_FOR_WINDOW_ASYNC = 6; // IUserConsentVerifierInterop
const SLOT_GET_STATUS = 7; // IAsyncInfo: get_Id 6, get_Status 7, get_ErrorCode 8, Cancel 9, Close 10
const SLOT_GET_ERROR_CODE = 8;
const SLOT_CANCEL = 9;
const SLOT_CLOSE = 10;
const SLOT_GET_RESULTS = 8; // IAsyncOperation<T>: put_Completed 6, get_Completed 7, GetResults 8
const ASYNC_STARTED = 0;
const ASYNC_COMPLETED = 1;
const ASYNC_CANCELED = 2;

/** A GUID in its in-memory layout (Data1–3 little-endian, Data4 as bytes). */
function guid(text: string): Buffer {
  const hex = text.replace(/-/g, '');
  const bytes = Buffer.from(hex, 'hex');
  if (bytes.length !== 16) throw new Error(`Bad GUID ${text}`);
  const out = Buffer.alloc(16);
  out.writeUInt32LE(bytes.readUInt32BE(0), 0);
  out.writeUInt16LE(bytes.readUInt16BE(4), 4);
  out.writeUInt16LE(bytes.readUInt16BE(6), 6);
  bytes.copy(out, 8, 8);
  return out;
}

const WINTRUST_ACTION_GENERIC_VERIFY_V2 = guid('00AAC56B-CD44-11D0-8CC2-00C04FC295EE');
const IID_IASYNC_INFO = guid('00000036-0000-0000-C000-000000000046');
const IID_IUSER_CONSENT_VERIFIER_STATICS = guid('AF4F3F91-564C-4DDC-B8B5-973447627C65');
const IID_IUSER_CONSENT_VERIFIER_INTEROP = guid('39E050C3-4E74-441A-8DC0-B81104DF949C');
// IAsyncOperation<UserConsentVerificationResult>: the parameterized IID from the WinRT signature
// pinterface({9fc2b0bb-e446-44e2-aa61-9cab8f636af2};enum(Windows.Security.Credentials.UI.UserConsentVerificationResult;i4)).
const IID_IASYNC_OPERATION_VERIFICATION_RESULT = guid('FD596FFD-2318-558F-9DBE-D21DF43764A5');

/** `UserConsentVerifierAvailability`, by value. */
const AVAILABILITY: readonly UserConsentAvailability[] = [
  'available',
  'device-not-present',
  'not-configured-for-user',
  'disabled-by-policy',
  'device-busy',
];
/** `UserConsentVerificationResult`, by value. */
const VERIFICATION_RESULT: readonly UserConsentResult[] = [
  'verified',
  'device-not-present',
  'not-configured-for-user',
  'disabled-by-policy',
  'device-busy',
  'retries-exhausted',
  'canceled',
];

interface Kernel32 {
  GetLastError(): number;
  CloseHandle(handle: Win32Handle): number;
  GetCurrentProcess(): Win32Handle;
  GetCurrentProcessId(): number;
  LocalFree(memory: bigint): Pointer;
  CreateNamedPipeW(
    name: string,
    openMode: number,
    pipeMode: number,
    maxInstances: number,
    outBufferSize: number,
    inBufferSize: number,
    defaultTimeout: number,
    securityAttributes: Buffer,
  ): Pointer;
  ConnectNamedPipe(pipe: Win32Handle, overlapped: Buffer): number;
  GetOverlappedResult(
    handle: Win32Handle,
    overlapped: Buffer,
    transferred: Out<number>,
    wait: number,
  ): number;
  CancelIoEx(handle: Win32Handle, overlapped: Buffer): number;
  CreateEventW(attributes: null, manualReset: number, initialState: number, name: null): Pointer;
  RegisterWaitForSingleObject(
    waitHandle: Out<Pointer>,
    object: Win32Handle,
    callback: bigint,
    context: bigint,
    milliseconds: number,
    flags: number,
  ): number;
  UnregisterWaitEx(waitHandle: Win32Handle, completionEvent: null): number;
  CreateFileW(
    name: string,
    access: number,
    shareMode: number,
    securityAttributes: null,
    disposition: number,
    flags: number,
    template: null,
  ): Pointer;
  GetNamedPipeClientProcessId(pipe: Win32Handle, pid: Out<number>): number;
  GetNamedPipeServerProcessId(pipe: Win32Handle, pid: Out<number>): number;
  OpenProcess(access: number, inheritHandle: number, pid: number): Pointer;
  WaitForSingleObject(handle: Win32Handle, milliseconds: number): number;
  GetProcessTimes(
    process: Win32Handle,
    creation: Buffer,
    exit: Buffer,
    kernel: Buffer,
    user: Buffer,
  ): number;
  QueryFullProcessImageNameW(
    process: Win32Handle,
    flags: number,
    name: Buffer,
    size: Out<number>,
  ): number;
}

interface Advapi32 {
  OpenProcessToken(process: Win32Handle, access: number, token: Out<Pointer>): number;
  GetTokenInformation(
    token: Win32Handle,
    infoClass: number,
    info: Buffer | null,
    length: number,
    returnLength: Out<number>,
  ): number;
  ConvertSidToStringSidW(sid: bigint, text: Out<Pointer>): number;
  ConvertStringSecurityDescriptorToSecurityDescriptorW(
    sddl: string,
    revision: number,
    descriptor: Out<Pointer>,
    size: null,
  ): number;
}

interface Ntdll {
  NtQueryInformationProcess(
    process: Win32Handle,
    infoClass: number,
    info: Buffer,
    length: number,
    returnLength: null,
  ): number;
}

interface Version {
  GetFileVersionInfoSizeW(path: string, handle: null): number;
  GetFileVersionInfoW(path: string, handle: number, length: number, data: Buffer): number;
  VerQueryValueW(block: Buffer, subBlock: string, value: Out<Pointer>, length: Out<number>): number;
}

interface Trust {
  WinVerifyTrust: NativeFunction<(window: null, action: Buffer, data: Buffer) => number>;
  WTHelperProvDataFromStateData(state: bigint): Pointer;
  WTHelperGetProvSignerFromChain(
    providerData: bigint,
    signerIndex: number,
    counterSigner: number,
    counterSignerIndex: number,
  ): Pointer;
  WTHelperGetProvCertFromChain(signer: bigint, certIndex: number): Pointer;
  CertGetNameStringW(
    certificate: bigint,
    type: number,
    flags: number,
    typeParameter: null,
    name: Buffer | null,
    length: number,
  ): number;
}

interface Combase {
  RoInitialize(type: number): number;
  WindowsCreateString(text: string, length: number, hstring: Out<Pointer>): number;
  WindowsDeleteString(hstring: Pointer): number;
  RoGetActivationFactory(classId: Pointer, iid: Buffer, factory: Out<Pointer>): number;
}

interface Libuv {
  uv_open_osfhandle(handle: Win32Handle): number;
  uv_get_osfhandle(fd: number): Pointer;
}

/** Binds `definitions` (koffi prototypes, keyed by function name) from `library`. */
function bind<T>(library: Library, definitions: Record<keyof T, string>): T {
  const out: Record<string, unknown> = {};
  for (const [name, definition] of Object.entries(definitions)) {
    out[name] = library.func(definition as string);
  }
  return out as T;
}

const isNull = (handle: Pointer): handle is null =>
  handle === null || handle === 0n || handle === INVALID_HANDLE_VALUE;

const hex = (code: number): string => `0x${(code >>> 0).toString(16).padStart(8, '0')}`;

/** A `Win32Error` whose message says what was being done and what failed. */
function win32Error(call: string, code: number, doing: string, hint = ''): Win32Error {
  const unsigned = code >>> 0;
  const number = unsigned >= 0x8000_0000 ? `HRESULT ${hex(unsigned)}` : `Windows error ${unsigned}`;
  return new Win32Error(
    call,
    unsigned,
    `${doing}: ${call} failed (${number}).${hint && ` ${hint}`}`,
  );
}

/** `\\.\pipe\NAME` for a bare NAME; a full pipe path as it is. */
function pipePath(name: string): string {
  const path = name.startsWith(PIPE_PREFIX) ? name : `${PIPE_PREFIX}${name}`;
  const bare = path.slice(PIPE_PREFIX.length);
  if (bare.length === 0 || bare.includes('\\') || path.length > PIPE_NAME_MAX) {
    throw createError(
      'ERR_INVALID_ARGUMENT',
      `"${name}" is not a usable pipe name: it must be non-empty, contain no backslash, and be ` +
        `at most ${PIPE_NAME_MAX} characters with the ${PIPE_PREFIX} prefix.`,
    );
  }
  return path;
}

async function bindWin32(): Promise<Win32Bindings> {
  if (process.platform !== 'win32' || (process.arch !== 'x64' && process.arch !== 'arm64')) {
    throw new PlatformError(
      'ERR_UNSUPPORTED_PLATFORM',
      `The Windows bindings need 64-bit Windows (x64 or arm64); this is ${process.platform}-${process.arch}.`,
    );
  }
  let koffi: Koffi;
  let libraries: {
    kernel32: Library;
    advapi32: Library;
    ntdll: Library;
    version: Library;
    wintrust: Library;
    crypt32: Library;
  };
  try {
    // koffi is CommonJS at heart; its ESM entry re-exports the API as the default export.
    koffi = (await import('koffi')).default;
    libraries = {
      kernel32: koffi.load('kernel32.dll'),
      advapi32: koffi.load('advapi32.dll'),
      ntdll: koffi.load('ntdll.dll'),
      version: koffi.load('version.dll'),
      wintrust: koffi.load('wintrust.dll'),
      crypt32: koffi.load('crypt32.dll'),
    };
  } catch (error) {
    throw new PlatformError(
      'ERR_UNSUPPORTED_PLATFORM',
      `Could not load koffi or a Windows system DLL for ${process.platform}-${process.arch}; ` +
        `check that the koffi package and its @koromix/koffi-win32-${process.arch} binary installed.`,
      { cause: error },
    );
  }
  return createWin32Bindings(koffi, libraries);
}

function createWin32Bindings(
  koffi: Koffi,
  libraries: {
    kernel32: Library;
    advapi32: Library;
    ntdll: Library;
    version: Library;
    wintrust: Library;
    crypt32: Library;
  },
): Win32Bindings {
  const k32 = bind<Kernel32>(libraries.kernel32, {
    GetLastError: 'uint32 __stdcall GetLastError()',
    CloseHandle: 'int __stdcall CloseHandle(void *handle)',
    GetCurrentProcess: 'void * __stdcall GetCurrentProcess()',
    GetCurrentProcessId: 'uint32 __stdcall GetCurrentProcessId()',
    LocalFree: 'void * __stdcall LocalFree(void *memory)',
    CreateNamedPipeW:
      'void * __stdcall CreateNamedPipeW(const char16_t *name, uint32 openMode, uint32 pipeMode, ' +
      'uint32 maxInstances, uint32 outBufferSize, uint32 inBufferSize, uint32 defaultTimeout, ' +
      'void *securityAttributes)',
    ConnectNamedPipe: 'int __stdcall ConnectNamedPipe(void *pipe, void *overlapped)',
    GetOverlappedResult:
      'int __stdcall GetOverlappedResult(void *handle, void *overlapped, _Out_ uint32 *transferred, int wait)',
    CancelIoEx: 'int __stdcall CancelIoEx(void *handle, void *overlapped)',
    CreateEventW:
      'void * __stdcall CreateEventW(void *attributes, int manualReset, int initialState, const char16_t *name)',
    RegisterWaitForSingleObject:
      'int __stdcall RegisterWaitForSingleObject(_Out_ void **waitHandle, void *object, void *callback, ' +
      'void *context, uint32 milliseconds, uint32 flags)',
    UnregisterWaitEx: 'int __stdcall UnregisterWaitEx(void *waitHandle, void *completionEvent)',
    CreateFileW:
      'void * __stdcall CreateFileW(const char16_t *name, uint32 access, uint32 shareMode, ' +
      'void *securityAttributes, uint32 disposition, uint32 flags, void *template)',
    GetNamedPipeClientProcessId:
      'int __stdcall GetNamedPipeClientProcessId(void *pipe, _Out_ uint32 *pid)',
    GetNamedPipeServerProcessId:
      'int __stdcall GetNamedPipeServerProcessId(void *pipe, _Out_ uint32 *pid)',
    OpenProcess: 'void * __stdcall OpenProcess(uint32 access, int inheritHandle, uint32 pid)',
    WaitForSingleObject: 'uint32 __stdcall WaitForSingleObject(void *handle, uint32 milliseconds)',
    GetProcessTimes:
      'int __stdcall GetProcessTimes(void *process, void *creation, void *exit, void *kernel, void *user)',
    QueryFullProcessImageNameW:
      'int __stdcall QueryFullProcessImageNameW(void *process, uint32 flags, void *name, _Inout_ uint32 *size)',
  });
  const advapi = bind<Advapi32>(libraries.advapi32, {
    OpenProcessToken:
      'int __stdcall OpenProcessToken(void *process, uint32 access, _Out_ void **token)',
    GetTokenInformation:
      'int __stdcall GetTokenInformation(void *token, int infoClass, void *info, uint32 length, _Out_ uint32 *returnLength)',
    ConvertSidToStringSidW: 'int __stdcall ConvertSidToStringSidW(void *sid, _Out_ void **text)',
    ConvertStringSecurityDescriptorToSecurityDescriptorW:
      'int __stdcall ConvertStringSecurityDescriptorToSecurityDescriptorW(const char16_t *sddl, ' +
      'uint32 revision, _Out_ void **descriptor, void *size)',
  });
  const ntdll = bind<Ntdll>(libraries.ntdll, {
    NtQueryInformationProcess:
      'int32 __stdcall NtQueryInformationProcess(void *process, int infoClass, void *info, uint32 length, void *returnLength)',
  });
  const version = bind<Version>(libraries.version, {
    GetFileVersionInfoSizeW:
      'uint32 __stdcall GetFileVersionInfoSizeW(const char16_t *path, void *handle)',
    GetFileVersionInfoW:
      'int __stdcall GetFileVersionInfoW(const char16_t *path, uint32 handle, uint32 length, void *data)',
    VerQueryValueW:
      'int __stdcall VerQueryValueW(void *block, const char16_t *subBlock, _Out_ void **value, _Out_ uint32 *length)',
  });
  const trust: Trust = {
    ...bind<Pick<Trust, Exclude<keyof Trust, 'CertGetNameStringW'>>>(libraries.wintrust, {
      WinVerifyTrust: 'int32 __stdcall WinVerifyTrust(void *window, void *action, void *data)',
      WTHelperProvDataFromStateData: 'void * __stdcall WTHelperProvDataFromStateData(void *state)',
      WTHelperGetProvSignerFromChain:
        'void * __stdcall WTHelperGetProvSignerFromChain(void *providerData, uint32 signerIndex, ' +
        'int counterSigner, uint32 counterSignerIndex)',
      WTHelperGetProvCertFromChain:
        'void * __stdcall WTHelperGetProvCertFromChain(void *signer, uint32 certIndex)',
    }),
    ...bind<Pick<Trust, 'CertGetNameStringW'>>(libraries.crypt32, {
      CertGetNameStringW:
        'uint32 __stdcall CertGetNameStringW(void *certificate, uint32 type, uint32 flags, ' +
        'void *typeParameter, void *name, uint32 length)',
    }),
  };

  // libuv's own exports from the running executable (node.exe), bound on first use.
  let libuv: Libuv | undefined;
  const uv = (): Libuv => {
    if (libuv) return libuv;
    try {
      libuv = bind<Libuv>(koffi.load(process.execPath), {
        uv_open_osfhandle: 'int uv_open_osfhandle(void *handle)',
        uv_get_osfhandle: 'void * uv_get_osfhandle(int fd)',
      });
    } catch (error) {
      debug('libuv exports of %s: %s', process.execPath, (error as Error).message);
      throw new Win32Error(
        'GetProcAddress',
        ERROR_NOT_FOUND,
        `${process.execPath} does not export libuv's uv_open_osfhandle/uv_get_osfhandle, which ` +
          'the named-pipe transport needs; run under a Node.js build that exports them (node.exe does).',
      );
    }
    return libuv;
  };

  const lastError = (): number => k32.GetLastError();

  function closeQuietly(handle: Pointer, what: string): void {
    if (isNull(handle)) return;
    if (!k32.CloseHandle(handle)) debug('CloseHandle(%s) failed: %d', what, lastError());
  }

  function readWideString(pointer: bigint, length = -1): string {
    return koffi.decode(pointer, 'char16_t', length) as string;
  }

  // --- process token -------------------------------------------------------------------------

  function userSidOfToken(token: Win32Handle): string {
    const needed: Out<number> = [0];
    advapi.GetTokenInformation(token, TOKEN_USER_CLASS, null, 0, needed);
    if (needed[0] === 0) {
      throw win32Error('GetTokenInformation', lastError(), 'Reading the process token user');
    }
    const info = Buffer.alloc(needed[0]);
    if (!advapi.GetTokenInformation(token, TOKEN_USER_CLASS, info, info.length, needed)) {
      throw win32Error('GetTokenInformation', lastError(), 'Reading the process token user');
    }
    // TOKEN_USER { SID_AND_ATTRIBUTES User { PSID Sid; … } }: the SID lies inside `info`.
    const sid = info.readBigUInt64LE(0);
    const text: Out<Pointer> = [null];
    const converted = advapi.ConvertSidToStringSidW(sid, text);
    const error = converted ? 0 : lastError();
    holdReachable(info); // `sid` points into `info`: reachable until ConvertSidToStringSidW returned
    if (!converted || isNull(text[0])) {
      throw win32Error('ConvertSidToStringSidW', error, 'Formatting the token user SID');
    }
    try {
      return readWideString(text[0]);
    } finally {
      k32.LocalFree(text[0]);
    }
  }

  // --- waiting for pipe clients ----------------------------------------------------------------

  interface PendingWait {
    readonly pipe: Win32Handle;
    readonly event: Win32Handle;
    /** The OVERLAPPED the kernel writes when the connect completes: alive until then. */
    readonly overlapped: Buffer;
    readonly wait: Win32Handle;
    readonly done: (error?: Win32Error) => void;
  }
  const waits = new Map<bigint, PendingWait>();
  // Buffers of cancelled connects that did not finish in CANCEL_WAIT_MS: the kernel may still
  // write them, so they are never freed.
  const abandoned: Buffer[] = [];
  let nextWaitId = 1n;
  let keepAlive: NodeJS.Timeout | undefined;
  let waitCallback: bigint | undefined;

  // A callback arriving from a Windows thread-pool thread does not keep the event loop alive:
  // a ref'd timer does, while any wait is pending.
  const holdLoop = (): void => {
    if (waits.size > 0) keepAlive ??= setInterval(() => {}, 2 ** 30);
    else if (keepAlive) {
      clearInterval(keepAlive);
      keepAlive = undefined;
    }
  };

  // One callback for every wait, registered once and never unregistered: a wait being torn down
  // may still call it. koffi queues the call to the JS thread while the pool thread waits, so it
  // only schedules the real work.
  const callbackPointer = (): bigint => {
    if (waitCallback === undefined) {
      const proto = koffi.proto('__stdcall', null, 'void', ['void *', 'uint8']);
      waitCallback = koffi.register((context: Pointer) => {
        if (context !== null) setImmediate(completeWait, BigInt(context));
      }, koffi.pointer(proto));
    }
    return waitCallback;
  };

  function completeWait(id: bigint): void {
    const entry = waits.get(id);
    if (!entry) return; // cancelled meanwhile
    waits.delete(id);
    holdLoop();
    const transferred: Out<number> = [0];
    const ok = k32.GetOverlappedResult(entry.pipe, entry.overlapped, transferred, 0);
    const error = ok ? 0 : lastError();
    // Non-blocking: a blocking UnregisterWaitEx on the JS thread would deadlock against a
    // callback that waits for the JS thread.
    k32.UnregisterWaitEx(entry.wait, null);
    closeQuietly(entry.event, 'connect event');
    if (ok || error === WIN32_ERRORS.pipeConnected) entry.done();
    else entry.done(win32Error('ConnectNamedPipe', error, 'Waiting for a pipe client'));
  }

  /** Cancels a pending connect and waits (bounded) until the kernel is done with `overlapped`. */
  function cancelConnect(pipe: Win32Handle, event: Win32Handle, overlapped: Buffer): void {
    if (!k32.CancelIoEx(pipe, overlapped)) {
      const error = lastError();
      if (error !== ERROR_NOT_FOUND) debug('CancelIoEx failed: %d', error);
    }
    if (overlapped.readBigUInt64LE(0) === STATUS_PENDING) {
      const result = k32.WaitForSingleObject(event, CANCEL_WAIT_MS);
      if (result !== WAIT_OBJECT_0 && overlapped.readBigUInt64LE(0) === STATUS_PENDING) {
        debug('a cancelled ConnectNamedPipe did not finish; keeping its buffers');
        abandoned.push(overlapped);
        return; // the event stays open too: the kernel may still set it
      }
    }
    closeQuietly(event, 'connect event');
  }

  function settleSoon(done: (error?: Win32Error) => void, error?: Win32Error): () => void {
    let cancelled = false;
    setImmediate(() => {
      if (!cancelled) done(error);
    });
    return () => {
      cancelled = true;
    };
  }

  function waitForClient(pipe: Win32Handle, done: (error?: Win32Error) => void): () => void {
    const event = k32.CreateEventW(null, 1, 0, null);
    if (isNull(event)) {
      return settleSoon(done, win32Error('CreateEventW', lastError(), 'Waiting for a pipe client'));
    }
    const overlapped = Buffer.alloc(OVERLAPPED_SIZE);
    overlapped.writeBigUInt64LE(event, OVERLAPPED_EVENT_OFFSET);
    const connected = k32.ConnectNamedPipe(pipe, overlapped);
    const error = connected ? 0 : lastError();
    if (error !== WIN32_ERRORS.ioPending) {
      closeQuietly(event, 'connect event');
      // ERROR_PIPE_CONNECTED: a client connected between CreateNamedPipe and ConnectNamedPipe.
      const failed = connected || error === WIN32_ERRORS.pipeConnected ? undefined : error;
      return settleSoon(
        done,
        failed === undefined
          ? undefined
          : win32Error('ConnectNamedPipe', failed, 'Waiting for a pipe client'),
      );
    }
    const id = nextWaitId++;
    const waitHandle: Out<Pointer> = [null];
    if (
      !k32.RegisterWaitForSingleObject(
        waitHandle,
        event,
        callbackPointer(),
        id,
        INFINITE,
        WT_EXECUTEONLYONCE,
      ) ||
      isNull(waitHandle[0])
    ) {
      const failed = lastError();
      cancelConnect(pipe, event, overlapped);
      return settleSoon(
        done,
        win32Error('RegisterWaitForSingleObject', failed, 'Waiting for a pipe client'),
      );
    }
    waits.set(id, { pipe, event, overlapped, wait: waitHandle[0], done });
    holdLoop();
    return () => {
      const entry = waits.get(id);
      if (!entry) return;
      waits.delete(id);
      holdLoop();
      k32.UnregisterWaitEx(entry.wait, null);
      cancelConnect(entry.pipe, entry.event, entry.overlapped);
    };
  }

  // --- Windows Hello (WinRT) -------------------------------------------------------------------

  const comProto = {
    queryInterface: koffi.proto('__stdcall', null, 'int32', [
      'void *',
      'void *',
      koffi.out(koffi.pointer('void *')),
    ]),
    release: koffi.proto('__stdcall', null, 'uint32', ['void *']),
    noArguments: koffi.proto('__stdcall', null, 'int32', ['void *']),
    getPointer: koffi.proto('__stdcall', null, 'int32', [
      'void *',
      koffi.out(koffi.pointer('void *')),
    ]),
    getInt32: koffi.proto('__stdcall', null, 'int32', [
      'void *',
      koffi.out(koffi.pointer('int32')),
    ]),
    requestForWindow: koffi.proto('__stdcall', null, 'int32', [
      'void *',
      'void *',
      'void *',
      'void *',
      koffi.out(koffi.pointer('void *')),
    ]),
  };

  /** Calls vtable slot `slot` of COM object `object`, passing `object` as `this`. */
  function comCall(object: bigint, slot: number, proto: KoffiType, ...args: unknown[]): number {
    const vtable = koffi.decode(object, 'void *') as Pointer;
    if (vtable === null)
      throw new Win32Error('COM call', E_UNEXPECTED, 'A COM object has no vtable.');
    const method = koffi.decode(vtable, slot * POINTER_SIZE, 'void *') as Pointer;
    if (method === null)
      throw new Win32Error('COM call', E_UNEXPECTED, 'A COM vtable slot is empty.');
    return koffi.call(method, proto, object, ...args) as number;
  }

  function release(object: Pointer): void {
    if (object !== null) comCall(object, SLOT_RELEASE, comProto.release);
  }

  function queryInterface(object: bigint, iid: Buffer, name: string): bigint {
    const out: Out<Pointer> = [null];
    const hr = comCall(object, SLOT_QUERY_INTERFACE, comProto.queryInterface, iid, out);
    if (hr < 0 || out[0] === null) {
      throw win32Error(`QueryInterface(${name})`, hr < 0 ? hr : E_UNEXPECTED, 'Using WinRT');
    }
    return out[0];
  }

  let combase: Combase | undefined;
  let roInitialized = false;
  let verifierStatics: bigint | undefined;

  /** `IUserConsentVerifierStatics`, activated once. */
  function userConsentVerifier(): bigint {
    if (verifierStatics !== undefined) return verifierStatics;
    if (!combase) {
      try {
        combase = bind<Combase>(koffi.load('combase.dll'), {
          RoInitialize: 'int32 __stdcall RoInitialize(int type)',
          WindowsCreateString:
            'int32 __stdcall WindowsCreateString(const char16_t *text, uint32 length, _Out_ void **hstring)',
          WindowsDeleteString: 'int32 __stdcall WindowsDeleteString(void *hstring)',
          RoGetActivationFactory:
            'int32 __stdcall RoGetActivationFactory(void *classId, void *iid, _Out_ void **factory)',
        });
      } catch (error) {
        debug('combase.dll: %s', (error as Error).message);
        throw new Win32Error(
          'LoadLibrary(combase.dll)',
          ERROR_MOD_NOT_FOUND,
          'Windows Hello is not available: this Windows has no WinRT (combase.dll).',
        );
      }
    }
    if (!roInitialized) {
      const hr = combase.RoInitialize(RO_INIT_MULTITHREADED);
      // S_FALSE: already initialized; RPC_E_CHANGED_MODE: the app made this thread an STA
      // (Electron does); WinRT works in either.
      if (hr < 0 && hr >>> 0 !== RPC_E_CHANGED_MODE) {
        throw win32Error('RoInitialize', hr, 'Starting WinRT for Windows Hello');
      }
      roInitialized = true;
    }
    const classId = hstring(USER_CONSENT_VERIFIER_CLASS);
    const factory: Out<Pointer> = [null];
    let hr: number;
    try {
      hr = combase.RoGetActivationFactory(classId, IID_IUSER_CONSENT_VERIFIER_STATICS, factory);
    } finally {
      combase.WindowsDeleteString(classId);
    }
    if (hr < 0 || factory[0] === null) {
      throw win32Error(
        'RoGetActivationFactory',
        hr < 0 ? hr : E_UNEXPECTED,
        'Windows Hello is not available',
        `This Windows has no ${USER_CONSENT_VERIFIER_CLASS} (Windows Server Core, Wine); use another prompt backend.`,
      );
    }
    verifierStatics = factory[0];
    return verifierStatics;
  }

  function hstring(text: string): Pointer {
    const out: Out<Pointer> = [null];
    const hr = combase!.WindowsCreateString(text, text.length, out);
    if (hr < 0) throw win32Error('WindowsCreateString', hr, 'Using WinRT');
    return out[0]; // null is the valid empty HSTRING
  }

  /**
   * Awaits a WinRT `IAsyncOperation<enum>` by polling `IAsyncInfo::get_Status` on a ref'd timer
   * (no completion-handler COM object needed), then reads `GetResults`. Takes over `operation`
   * (released when done). Resolves `'canceled'` when the operation was cancelled by someone else.
   */
  function awaitOperation(
    operation: bigint,
    call: string,
    signal: AbortSignal | undefined,
  ): Promise<number | 'canceled'> {
    let info: bigint;
    try {
      info = queryInterface(operation, IID_IASYNC_INFO, 'IAsyncInfo');
    } catch (error) {
      release(operation);
      return Promise.reject(error);
    }
    return new Promise((resolve, reject) => {
      let timer: NodeJS.Timeout | undefined;
      let settled = false;
      const finish = (settle: () => void): void => {
        if (settled) return;
        settled = true;
        if (timer) clearInterval(timer);
        signal?.removeEventListener('abort', onAbort);
        try {
          comCall(info, SLOT_CLOSE, comProto.noArguments);
        } catch (error) {
          debug('IAsyncInfo::Close: %s', (error as Error).message);
        }
        release(info);
        release(operation);
        settle();
      };
      const onAbort = (): void => {
        try {
          const hr = comCall(info, SLOT_CANCEL, comProto.noArguments);
          if (hr < 0) debug('IAsyncInfo::Cancel failed: %s', hex(hr));
        } finally {
          finish(() => reject(abortError(signal!, 'Windows Hello')));
        }
      };
      const poll = (): void => {
        try {
          const status: Out<number> = [0];
          let hr = comCall(info, SLOT_GET_STATUS, comProto.getInt32, status);
          if (hr < 0) throw win32Error('IAsyncInfo::get_Status', hr, `Waiting for ${call}`);
          if (status[0] === ASYNC_STARTED) return;
          if (status[0] === ASYNC_COMPLETED) {
            const value: Out<number> = [0];
            hr = comCall(operation, SLOT_GET_RESULTS, comProto.getInt32, value);
            if (hr < 0) throw win32Error('IAsyncOperation::GetResults', hr, `Reading ${call}`);
            finish(() => resolve(value[0]));
          } else if (status[0] === ASYNC_CANCELED) {
            finish(() => resolve('canceled'));
          } else {
            const code: Out<number> = [0];
            hr = comCall(info, SLOT_GET_ERROR_CODE, comProto.getInt32, code);
            const failure = hr < 0 || code[0] >= 0 ? E_UNEXPECTED : code[0];
            throw win32Error(call, failure, 'Windows Hello failed');
          }
        } catch (error) {
          finish(() => reject(error));
        }
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      timer = setInterval(poll, ASYNC_POLL_MS);
      poll();
    });
  }

  const userConsent: UserConsentBindings = {
    async checkAvailability(options = {}) {
      const { signal } = options;
      throwIfAborted(signal, 'Checking Windows Hello');
      const statics = userConsentVerifier();
      const operation: Out<Pointer> = [null];
      const hr = comCall(statics, SLOT_CHECK_AVAILABILITY_ASYNC, comProto.getPointer, operation);
      if (hr < 0 || operation[0] === null) {
        throw win32Error(
          'CheckAvailabilityAsync',
          hr < 0 ? hr : E_UNEXPECTED,
          'Checking Windows Hello',
        );
      }
      const value = await awaitOperation(operation[0], 'CheckAvailabilityAsync', signal);
      if (value === 'canceled') {
        throw win32Error(
          'CheckAvailabilityAsync',
          HRESULT_ERROR_CANCELLED,
          'Checking Windows Hello',
        );
      }
      const availability = AVAILABILITY[value];
      if (availability === undefined) {
        throw new Win32Error(
          'CheckAvailabilityAsync',
          E_UNEXPECTED,
          `Windows Hello reported an unknown availability (${value}); treating it as unavailable.`,
        );
      }
      return availability;
    },

    async requestVerification(window, message, options = {}) {
      const { signal } = options;
      throwIfAborted(signal, 'Windows Hello');
      const statics = userConsentVerifier();
      const interop = queryInterface(
        statics,
        IID_IUSER_CONSENT_VERIFIER_INTEROP,
        'IUserConsentVerifierInterop',
      );
      const operation: Out<Pointer> = [null];
      let hr: number;
      try {
        const text = hstring(message);
        try {
          hr = comCall(
            interop,
            SLOT_REQUEST_VERIFICATION_FOR_WINDOW_ASYNC,
            comProto.requestForWindow,
            window,
            text,
            IID_IASYNC_OPERATION_VERIFICATION_RESULT,
            operation,
          );
        } finally {
          combase!.WindowsDeleteString(text);
        }
      } finally {
        release(interop);
      }
      if (hr < 0 || operation[0] === null) {
        throw win32Error(
          'RequestVerificationForWindowAsync',
          hr < 0 ? hr : E_UNEXPECTED,
          'Asking for Windows Hello',
        );
      }
      const value = await awaitOperation(operation[0], 'RequestVerificationForWindowAsync', signal);
      if (value === 'canceled') return 'canceled';
      const result = VERIFICATION_RESULT[value];
      if (result === undefined) {
        throw new Win32Error(
          'RequestVerificationForWindowAsync',
          E_UNEXPECTED,
          `Windows Hello returned an unknown result (${value}); treating it as a failure.`,
        );
      }
      return result;
    },
  };

  // --- the bindings ----------------------------------------------------------------------------

  return {
    currentProcessId: () => k32.GetCurrentProcessId(),

    processUserSid(process) {
      const target = process === 'self' ? k32.GetCurrentProcess() : process;
      const token: Out<Pointer> = [null];
      if (!advapi.OpenProcessToken(target, TOKEN_QUERY, token) || isNull(token[0])) {
        throw win32Error('OpenProcessToken', lastError(), 'Reading the user a process runs as');
      }
      try {
        return userSidOfToken(token[0]);
      } finally {
        closeQuietly(token[0], 'process token');
      }
    },

    createPipeInstance(name, options) {
      const path = pipePath(name);
      const sddl = options.securityDescriptor;
      // Fail closed: no DACL would mean the default DACL, a NULL DACL would admit everyone.
      if (!/(^|\))D:/.test(sddl) || /NO_ACCESS_CONTROL/i.test(sddl)) {
        throw createError(
          'ERR_INVALID_ARGUMENT',
          `The pipe's security descriptor must carry a DACL ("D:…") that is not NO_ACCESS_CONTROL; got "${sddl}".`,
        );
      }
      const descriptor: Out<Pointer> = [null];
      if (
        !advapi.ConvertStringSecurityDescriptorToSecurityDescriptorW(
          sddl,
          SDDL_REVISION_1,
          descriptor,
          null,
        ) ||
        isNull(descriptor[0])
      ) {
        throw win32Error(
          'ConvertStringSecurityDescriptorToSecurityDescriptorW',
          lastError(),
          `Reading the pipe's security descriptor "${sddl}"`,
        );
      }
      try {
        const attributes = Buffer.alloc(SECURITY_ATTRIBUTES_SIZE);
        attributes.writeUInt32LE(SECURITY_ATTRIBUTES_SIZE, 0);
        attributes.writeBigUInt64LE(descriptor[0], 8);
        const openMode =
          PIPE_ACCESS_DUPLEX |
          FILE_FLAG_OVERLAPPED |
          (options.first ? FILE_FLAG_FIRST_PIPE_INSTANCE : 0);
        const pipe = k32.CreateNamedPipeW(
          path,
          openMode >>> 0,
          PIPE_TYPE_BYTE | PIPE_READMODE_BYTE | PIPE_WAIT | PIPE_REJECT_REMOTE_CLIENTS,
          PIPE_UNLIMITED_INSTANCES,
          PIPE_BUFFER_SIZE,
          PIPE_BUFFER_SIZE,
          0,
          attributes,
        );
        if (isNull(pipe)) {
          const error = lastError();
          throw win32Error(
            'CreateNamedPipeW',
            error,
            `Creating pipe ${path}`,
            error === WIN32_ERRORS.accessDenied && options.first
              ? 'Another process already owns this pipe name.'
              : '',
          );
        }
        return pipe;
      } finally {
        // The pipe keeps its own copy of the descriptor.
        k32.LocalFree(descriptor[0]);
      }
    },

    waitForClient,

    openPipe(name) {
      const path = pipePath(name);
      const pipe = k32.CreateFileW(
        path,
        (GENERIC_READ | GENERIC_WRITE) >>> 0,
        0,
        null,
        OPEN_EXISTING,
        (FILE_FLAG_OVERLAPPED | SECURITY_SQOS_PRESENT | SECURITY_IDENTIFICATION) >>> 0,
        null,
      );
      if (isNull(pipe)) {
        const error = lastError();
        const hint =
          error === WIN32_ERRORS.fileNotFound
            ? 'Nothing listens on it: is the app running?'
            : error === WIN32_ERRORS.pipeBusy
              ? 'Every instance is taken; retry shortly.'
              : error === WIN32_ERRORS.accessDenied
                ? "The pipe's security descriptor refuses this user."
                : '';
        throw win32Error('CreateFileW', error, `Opening pipe ${path}`, hint);
      }
      return pipe;
    },

    pipeClientProcessId(pipe) {
      const pid: Out<number> = [0];
      if (!k32.GetNamedPipeClientProcessId(pipe, pid)) {
        throw win32Error('GetNamedPipeClientProcessId', lastError(), 'Identifying the pipe client');
      }
      return pid[0];
    },

    pipeServerProcessId(pipe) {
      const pid: Out<number> = [0];
      if (!k32.GetNamedPipeServerProcessId(pipe, pid)) {
        throw win32Error('GetNamedPipeServerProcessId', lastError(), 'Identifying the pipe server');
      }
      return pid[0];
    },

    handleToFd(handle) {
      const fd = uv().uv_open_osfhandle(handle);
      if (fd < 0) {
        throw new Win32Error(
          'uv_open_osfhandle',
          ERROR_INVALID_HANDLE,
          `uv_open_osfhandle refused handle ${hex(Number(handle & 0xffff_ffffn))}: it is not an open handle, or the process ran out of file descriptors.`,
        );
      }
      return fd;
    },

    fdToHandle(fd) {
      const handle = uv().uv_get_osfhandle(fd);
      if (isNull(handle)) {
        throw new Win32Error('uv_get_osfhandle', ERROR_INVALID_HANDLE, `fd ${fd} is not open.`);
      }
      return handle;
    },

    closeHandle(handle) {
      if (!k32.CloseHandle(handle)) {
        throw win32Error('CloseHandle', lastError(), 'Closing a handle');
      }
    },

    openProcess(pid) {
      const handle = k32.OpenProcess(
        (PROCESS_QUERY_LIMITED_INFORMATION | SYNCHRONIZE) >>> 0,
        0,
        pid,
      );
      if (isNull(handle)) {
        debug('OpenProcess(%d) failed: %d', pid, lastError());
        return undefined;
      }
      return handle;
    },

    processIsRunning(process) {
      const result = k32.WaitForSingleObject(process, 0);
      if (result === WAIT_TIMEOUT) return true;
      // Signalled (exited) or WAIT_FAILED: either way not a process we can vouch for.
      if (result !== WAIT_OBJECT_0) debug('WaitForSingleObject failed: %d', lastError());
      return false;
    },

    processCreationTime(process) {
      const creation = Buffer.alloc(8);
      const other = Buffer.alloc(8);
      if (!k32.GetProcessTimes(process, creation, other, other, other)) {
        throw win32Error('GetProcessTimes', lastError(), 'Reading a process creation time');
      }
      return creation.readBigUInt64LE(0).toString();
    },

    processImagePath(process) {
      for (const chars of [1024, 32768]) {
        const name = Buffer.alloc(chars * 2);
        const size: Out<number> = [chars];
        if (k32.QueryFullProcessImageNameW(process, 0, name, size)) {
          return name.toString('utf16le', 0, size[0] * 2);
        }
        const error = lastError();
        if (error !== ERROR_INSUFFICIENT_BUFFER) {
          debug('QueryFullProcessImageNameW failed: %d', error);
          return undefined;
        }
      }
      return undefined;
    },

    parentProcessId(process) {
      const info = Buffer.alloc(PROCESS_BASIC_INFORMATION_SIZE);
      const status = ntdll.NtQueryInformationProcess(
        process,
        PROCESS_BASIC_INFORMATION_CLASS,
        info,
        info.length,
        null,
      );
      if (status !== 0) {
        debug('NtQueryInformationProcess failed: NTSTATUS %s', hex(status));
        return undefined;
      }
      return Number(info.readBigUInt64LE(PARENT_PID_OFFSET));
    },

    fileDescription(path) {
      const size = version.GetFileVersionInfoSizeW(path, null);
      if (size === 0) return undefined;
      const block = Buffer.alloc(size);
      if (!version.GetFileVersionInfoW(path, 0, size, block)) return undefined;
      const base = koffi.address(block);
      // VerQueryValueW returns pointers into `block`: read them from it, bounds-checked.
      const query = (subBlock: string): { offset: number; length: number } | undefined => {
        const value: Out<Pointer> = [null];
        const length: Out<number> = [0];
        if (!version.VerQueryValueW(block, subBlock, value, length) || value[0] === null) {
          return undefined;
        }
        const offset = Number(value[0] - base);
        return offset >= 0 && offset <= size ? { offset, length: length[0] } : undefined;
      };
      const code = (lang: number, codepage: number): string =>
        `${lang.toString(16).padStart(4, '0')}${codepage.toString(16).padStart(4, '0')}`;
      const languages: string[] = [];
      const translation = query('\\VarFileInfo\\Translation');
      if (translation) {
        for (
          let at = translation.offset;
          at + 4 <= translation.offset + translation.length;
          at += 4
        ) {
          if (at + 4 > size) break;
          languages.push(code(block.readUInt16LE(at), block.readUInt16LE(at + 2)));
        }
      }
      // Files without a translation table usually use US English, Unicode or Western.
      languages.push('040904b0', '040904e4');
      for (const language of languages) {
        const found = query(`\\StringFileInfo\\${language}\\FileDescription`);
        if (!found) continue;
        const end = Math.min(size, found.offset + found.length * 2);
        const text = block
          .toString('utf16le', found.offset, end)
          .replace(/\0[\s\S]*$/, '')
          .trim();
        if (text) return text;
      }
      return undefined;
    },

    verifySignature(path, options = {}) {
      const { signal } = options;
      const doing = `Verifying the signature of ${path}`;
      try {
        throwIfAborted(signal, doing);
      } catch (error) {
        return Promise.reject(error);
      }
      const file = Buffer.from(`${path}\0`, 'utf16le');
      const fileInfo = Buffer.alloc(WINTRUST_FILE_INFO_SIZE);
      fileInfo.writeUInt32LE(WINTRUST_FILE_INFO_SIZE, 0);
      fileInfo.writeBigUInt64LE(koffi.address(file), 8); // pcwszFilePath; hFile, pgKnownSubject NULL
      const data = Buffer.alloc(WINTRUST_DATA_SIZE);
      data.writeUInt32LE(WINTRUST_DATA_SIZE, 0);
      data.writeUInt32LE(WTD_UI_NONE, 24);
      data.writeUInt32LE(WTD_REVOKE_NONE, 28);
      data.writeUInt32LE(WTD_CHOICE_FILE, 32);
      data.writeBigUInt64LE(koffi.address(fileInfo), 40);
      data.writeUInt32LE(WTD_STATEACTION_VERIFY, 48);
      data.writeUInt32LE(WTD_CACHE_ONLY_URL_RETRIEVAL, 72);
      return new Promise<SignatureCheck>((resolve, reject) => {
        let settled = false;
        const settle = (finish: () => void): void => {
          if (settled) return;
          settled = true;
          signal?.removeEventListener('abort', onAbort);
          finish();
        };
        // The worker thread cannot be interrupted: an abort only stops waiting for it.
        const onAbort = (): void => settle(() => reject(abortError(signal!, doing)));
        // Runs on the JS thread once the worker thread's WinVerifyTrust returned.
        const verified = (error: unknown, result: number): void => {
          if (error !== null && error !== undefined) {
            // koffi did not run the call: there is no state to close.
            holdReachable(file, fileInfo, data);
            debug('WinVerifyTrust.async failed: %O', error);
            settle(() => reject(callFailed(error)));
            return;
          }
          let check: SignatureCheck | undefined;
          let failure: unknown;
          try {
            const status = result >>> 0;
            if (status !== 0 || settled) check = { status };
            else {
              const signer = signerName(data.readBigUInt64LE(WTD_STATE_DATA_OFFSET));
              check = signer === undefined ? { status } : { status, signer };
            }
          } catch (caught) {
            failure = caught;
          } finally {
            // Frees the state VERIFY kept (fast: no file or network access).
            data.writeUInt32LE(WTD_STATEACTION_CLOSE, 48);
            trust.WinVerifyTrust(null, WINTRUST_ACTION_GENERIC_VERIFY_V2, data);
            // Every buffer WinVerifyTrust read, directly or through an address, stays
            // reachable until VERIFY and CLOSE both returned.
            holdReachable(file, fileInfo, data);
          }
          settle(() => (check === undefined ? reject(failure) : resolve(check)));
        };
        try {
          trust.WinVerifyTrust.async(null, WINTRUST_ACTION_GENERIC_VERIFY_V2, data, verified);
        } catch (error) {
          // "Too many asynchronous calls are running", or arguments koffi refused.
          holdReachable(file, fileInfo, data);
          reject(callFailed(error));
          return;
        }
        signal?.addEventListener('abort', onAbort, { once: true });
      });

      function callFailed(error: unknown): Win32Error {
        return new Win32Error(
          'WinVerifyTrust',
          E_UNEXPECTED,
          `${doing}: koffi could not run WinVerifyTrust on a worker thread (${
            error instanceof Error ? error.message : String(error)
          }); try again when fewer checks are running.`,
        );
      }
    },

    userConsent,
  };

  /** The subject simple name of the first signer's certificate in WinVerifyTrust's state. */
  function signerName(state: bigint): string | undefined {
    if (state === 0n) return undefined;
    const providerData = trust.WTHelperProvDataFromStateData(state);
    if (providerData === null) return undefined;
    const signer = trust.WTHelperGetProvSignerFromChain(providerData, 0, 0, 0);
    if (signer === null) return undefined;
    const providerCert = trust.WTHelperGetProvCertFromChain(signer, 0);
    if (providerCert === null) return undefined;
    const certificate = koffi.decode(
      providerCert,
      CRYPT_PROVIDER_CERT_CERT_OFFSET,
      'void *',
    ) as Pointer;
    if (certificate === null) return undefined;
    const chars = trust.CertGetNameStringW(
      certificate,
      CERT_NAME_SIMPLE_DISPLAY_TYPE,
      0,
      null,
      null,
      0,
    );
    if (chars <= 1) return undefined;
    const name = Buffer.alloc(chars * 2);
    const written = trust.CertGetNameStringW(
      certificate,
      CERT_NAME_SIMPLE_DISPLAY_TYPE,
      0,
      null,
      name,
      chars,
    );
    const text = name.toString('utf16le', 0, Math.max(0, written - 1) * 2);
    return text || undefined;
  }
}
