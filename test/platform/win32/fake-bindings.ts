/**
 * A fake of the Windows bindings for tests on any OS: a process table (pids, parents, creation
 * times, images, user SIDs), process handles that keep an exited process's pid from reuse (as
 * Windows does) and whose values are reused after close, pipes by fd, Authenticode results by
 * path, and a scriptable Windows Hello.
 */

import {
  type SignatureCheck,
  type UserConsentAvailability,
  type UserConsentBindings,
  type UserConsentResult,
  type Win32Bindings,
  Win32Error,
  type Win32Handle,
} from '../../../src/platform/win32/bindings.js';

/** The SID fake processes run as unless told otherwise. */
export const USER_SID = 'S-1-5-21-1111111111-2222222222-3333333333-1001';
/** Another user's SID. */
export const OTHER_SID = 'S-1-5-21-1111111111-2222222222-3333333333-1002';

/** A FILETIME near 2026, in 100-ns units. */
export const BASE_TIME = 134_000_000_000_000_000n;

/** One process in the fake table. */
export interface FakeProcess {
  readonly pid: number;
  parentPid: number | undefined;
  created: bigint;
  image: string | undefined;
  sid: string | undefined;
  running: boolean;
}

/** What {@link FakeWin32.spawn} takes. */
export interface SpawnOptions {
  readonly pid: number;
  readonly parent?: number;
  readonly image?: string;
  readonly sid?: string | null;
  /** Creation time; default: one tick (1 ms) after the previous spawn. */
  readonly created?: bigint;
}

type HelloAnswer<T> = T | Error | 'hang' | ((signal: AbortSignal | undefined) => Promise<T>);

/** A scriptable `UserConsentVerifier`. */
export class FakeUserConsent implements UserConsentBindings {
  availability: HelloAnswer<UserConsentAvailability> = 'available';
  result: HelloAnswer<UserConsentResult> = 'verified';
  /** Each dialog requested: the owner window, the message and the signal it got. */
  readonly requests: { window: Win32Handle; message: string; signal: AbortSignal | undefined }[] =
    [];
  availabilityChecks = 0;

  checkAvailability(options?: { signal?: AbortSignal }): Promise<UserConsentAvailability> {
    this.availabilityChecks++;
    return answer(this.availability, options?.signal);
  }

  requestVerification(
    window: Win32Handle,
    message: string,
    options?: { signal?: AbortSignal },
  ): Promise<UserConsentResult> {
    this.requests.push({ window, message, signal: options?.signal });
    return answer(this.result, options?.signal);
  }
}

function aborted(): Win32Error {
  const error = new Win32Error('IAsyncInfo::Cancel', 0x800704c7, 'The operation was aborted.');
  return error;
}

/** What the real binding rejects with on an aborted signal. */
function abortedCheck(signal: AbortSignal): Error {
  return signal.reason instanceof Error ? signal.reason : new Error('The check was aborted.');
}

function answer<T>(script: HelloAnswer<T>, signal: AbortSignal | undefined): Promise<T> {
  if (typeof script === 'function') {
    return (script as (signal: AbortSignal | undefined) => Promise<T>)(signal);
  }
  if (script instanceof Error) return Promise.reject(script);
  if (script === 'hang') {
    // Like the real binding: pending until the signal cancels the operation.
    return new Promise<T>((_, reject) => {
      if (signal?.aborted) reject(aborted());
      signal?.addEventListener('abort', () => reject(aborted()), { once: true });
    });
  }
  return Promise.resolve(script as T);
}

/** The fake. Methods not needed by the logic under test throw. */
export class FakeWin32 implements Win32Bindings {
  selfPid = 100;
  selfSid: string | Error = USER_SID;
  readonly processes = new Map<number, FakeProcess>();
  readonly descriptions = new Map<string, string | Error>();
  readonly signatures = new Map<string, SignatureCheck | Error>();
  /**
   * How long `verifySignature` takes, in ms (a timer: the JS thread stays free, as with the real
   * worker-thread call); `Infinity` never settles unless aborted.
   */
  signatureDelayMs = 0;
  /** Signature checks running now, and the most that ran at once. */
  signaturesInFlight = 0;
  maxSignaturesInFlight = 0;
  /** The signal each signature check got. */
  readonly signatureSignals: (AbortSignal | undefined)[] = [];
  /** Pipe handles by fd, with the pids at each end. */
  readonly pipes = new Map<number, { handle: Win32Handle; client: number; server: number }>();
  readonly userConsent = new FakeUserConsent();
  /** Calls per method name. */
  readonly calls = new Map<string, number>();
  /** Runs before a method's body: tests change the world mid-derivation here. */
  before: ((method: string, ...args: unknown[]) => void) | undefined;
  /** Makes a method throw. */
  readonly failing = new Map<string, Error>();

  readonly #handles = new Map<Win32Handle, FakeProcess>();
  readonly #free: Win32Handle[] = [];
  #nextHandle = 0x40n;
  #clock = BASE_TIME;

  /** Adds a running process. */
  spawn(options: SpawnOptions): FakeProcess {
    const existing = this.processes.get(options.pid);
    if (existing) throw new Error(`fake: pid ${options.pid} is in use`);
    this.#clock += 10_000n;
    const process: FakeProcess = {
      pid: options.pid,
      parentPid: options.parent,
      created: options.created ?? this.#clock,
      image: options.image,
      sid: options.sid === null ? undefined : (options.sid ?? USER_SID),
      running: true,
    };
    this.processes.set(process.pid, process);
    return process;
  }

  /** Ends a process; its pid is free for reuse once no handle holds it. */
  exit(pid: number): void {
    const process = this.processes.get(pid);
    if (!process) throw new Error(`fake: no pid ${pid}`);
    process.running = false;
    this.#reap(process);
  }

  /** Handles open now (process handles the fake handed out and nobody closed). */
  openHandles(): number {
    return this.#handles.size;
  }

  /** Whether `handle` is an open process handle to `pid`. */
  handleIsFor(handle: Win32Handle, pid: number): boolean {
    return this.#handles.get(handle)?.pid === pid;
  }

  count(method: string): number {
    return this.calls.get(method) ?? 0;
  }

  #enter(method: string, ...args: unknown[]): void {
    this.calls.set(method, this.count(method) + 1);
    this.before?.(method, ...args);
    const failure = this.failing.get(method);
    if (failure) throw failure;
  }

  #reap(process: FakeProcess): void {
    if (process.running) return;
    for (const held of this.#handles.values()) if (held === process) return;
    if (this.processes.get(process.pid) === process) this.processes.delete(process.pid);
  }

  #process(handle: Win32Handle, call: string): FakeProcess {
    const process = this.#handles.get(handle);
    if (!process) throw new Win32Error(call, 6); // ERROR_INVALID_HANDLE
    return process;
  }

  currentProcessId(): number {
    this.#enter('currentProcessId');
    return this.selfPid;
  }

  processUserSid(process: Win32Handle | 'self'): string {
    this.#enter('processUserSid', process);
    if (process === 'self') {
      if (this.selfSid instanceof Error) throw this.selfSid;
      return this.selfSid;
    }
    const sid = this.#process(process, 'OpenProcessToken').sid;
    if (sid === undefined) throw new Win32Error('OpenProcessToken', 5);
    return sid;
  }

  openProcess(pid: number): Win32Handle | undefined {
    this.#enter('openProcess', pid);
    const process = this.processes.get(pid);
    if (!process) return undefined;
    const handle = this.#free.pop() ?? this.#nextHandle++ * 4n;
    this.#handles.set(handle, process);
    return handle;
  }

  processIsRunning(process: Win32Handle): boolean {
    this.#enter('processIsRunning', process);
    return this.#process(process, 'WaitForSingleObject').running;
  }

  processCreationTime(process: Win32Handle): string {
    this.#enter('processCreationTime', process);
    return String(this.#process(process, 'GetProcessTimes').created);
  }

  processImagePath(process: Win32Handle): string | undefined {
    this.#enter('processImagePath', process);
    return this.#process(process, 'QueryFullProcessImageNameW').image;
  }

  parentProcessId(process: Win32Handle): number | undefined {
    this.#enter('parentProcessId', process);
    return this.#process(process, 'NtQueryInformationProcess').parentPid;
  }

  fileDescription(path: string): string | undefined {
    this.#enter('fileDescription', path);
    const description = this.descriptions.get(path);
    if (description instanceof Error) throw description;
    return description;
  }

  closeHandle(handle: Win32Handle): void {
    this.#enter('closeHandle', handle);
    const process = this.#handles.get(handle);
    if (!process) {
      // Pipe handles belong to their fd; anything else is a double close.
      throw new Win32Error('CloseHandle', 6);
    }
    this.#handles.delete(handle);
    this.#free.push(handle);
    this.#reap(process);
  }

  async verifySignature(
    path: string,
    options: { signal?: AbortSignal } = {},
  ): Promise<SignatureCheck> {
    const { signal } = options;
    this.#enter('verifySignature', path);
    this.signatureSignals.push(signal);
    if (signal?.aborted) throw abortedCheck(signal);
    const check = this.signatures.get(path);
    this.signaturesInFlight++;
    this.maxSignaturesInFlight = Math.max(this.maxSignaturesInFlight, this.signaturesInFlight);
    try {
      if (this.signatureDelayMs > 0) {
        await new Promise<void>((resolve, reject) => {
          const timer = Number.isFinite(this.signatureDelayMs)
            ? setTimeout(done, this.signatureDelayMs)
            : undefined;
          function done(): void {
            signal?.removeEventListener('abort', onAbort);
            resolve();
          }
          function onAbort(): void {
            clearTimeout(timer);
            reject(abortedCheck(signal!));
          }
          signal?.addEventListener('abort', onAbort, { once: true });
        });
      }
    } finally {
      this.signaturesInFlight--;
    }
    if (check instanceof Error) throw check;
    return check ?? { status: 0x800b0100 };
  }

  /** Adds a connected pipe held as `fd`. */
  addPipe(fd: number, ends: { client: number; server: number }): void {
    this.pipes.set(fd, { handle: 0x7000_0000n + BigInt(fd), ...ends });
  }

  fdToHandle(fd: number): Win32Handle {
    this.#enter('fdToHandle', fd);
    const pipe = this.pipes.get(fd);
    if (!pipe) throw new Win32Error('uv_get_osfhandle', 6);
    return pipe.handle;
  }

  #pipe(handle: Win32Handle, call: string) {
    for (const pipe of this.pipes.values()) if (pipe.handle === handle) return pipe;
    throw new Win32Error(call, 6);
  }

  pipeClientProcessId(pipe: Win32Handle): number {
    this.#enter('pipeClientProcessId', pipe);
    return this.#pipe(pipe, 'GetNamedPipeClientProcessId').client;
  }

  pipeServerProcessId(pipe: Win32Handle): number {
    this.#enter('pipeServerProcessId', pipe);
    return this.#pipe(pipe, 'GetNamedPipeServerProcessId').server;
  }

  createPipeInstance(): Win32Handle {
    throw new Error('fake: createPipeInstance is not faked');
  }

  waitForClient(): () => void {
    throw new Error('fake: waitForClient is not faked');
  }

  openPipe(): Win32Handle {
    throw new Error('fake: openPipe is not faked');
  }

  handleToFd(): number {
    throw new Error('fake: handleToFd is not faked');
  }
}

/** Image paths used across the tests. */
export const IMAGES = {
  node: 'C:\\Program Files\\nodejs\\node.exe',
  cli: 'C:\\Program Files\\Contoso\\contoso.exe',
  cmd: 'C:\\Windows\\System32\\cmd.exe',
  powershell: 'C:\\Windows\\System32\\WindowsPowerShell\\v1.0\\powershell.exe',
  pwsh: 'C:\\Program Files\\PowerShell\\7\\pwsh.exe',
  terminal:
    'C:\\Program Files\\WindowsApps\\Microsoft.WindowsTerminal_1.21.2361.0_x64__8wekyb3d8bbwe\\WindowsTerminal.exe',
  code: 'C:\\Users\\wendy\\AppData\\Local\\Programs\\Microsoft VS Code\\Code.exe',
  explorer: 'C:\\Windows\\explorer.exe',
  fancy: 'C:\\Tools\\FancyTerm\\fancyterm.exe',
  make: 'C:\\Tools\\make.exe',
} as const;
