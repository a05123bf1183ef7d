/**
 * A fake of the macOS process reader for tests on any OS: a process table (pids, parents,
 * sessions, controlling terminals, start times, executables) whose `kinfo` answers go through
 * real `struct kinfo_proc` bytes — written by {@link encodeKinfo} at the offsets
 * src/platform/darwin/kinfo.ts documents and read back by `parseKinfoProc` — so the credential
 * tests exercise the parser too. That checks the two agree, not that they match Apple's layout:
 * only a Mac can tell that.
 */

import type {
  CodeRequirementCheck,
  DarwinBindings,
} from '../../../src/platform/darwin/bindings.js';
import type { DarwinProcessReader } from '../../../src/platform/darwin/credentials.js';
import {
  COMM_BYTES,
  KINFO_OFFSETS,
  KINFO_PROC_SIZE,
  type KinfoProc,
  NODEV,
  PROC_STAT,
  parseKinfoProc,
} from '../../../src/platform/darwin/kinfo.js';

/** The fields {@link encodeKinfo} writes. */
export interface KinfoFields {
  readonly pid: number;
  readonly ppid?: number;
  readonly pgid?: number;
  readonly stat?: number;
  readonly flag?: number;
  readonly startSeconds?: bigint;
  readonly startMicros?: number;
  readonly comm?: string | Buffer;
  readonly ruid?: number;
  readonly uid?: number;
  readonly tdev?: number;
  readonly tpgid?: number;
  readonly eflag?: number;
}

/**
 * Writes a 648-byte `struct kinfo_proc` with `fields` at the documented offsets; every other byte
 * is 0xA5, so a parser reading the wrong place sees garbage rather than a lucky zero.
 */
export function encodeKinfo(fields: KinfoFields, size = KINFO_PROC_SIZE): Buffer {
  const bytes = Buffer.alloc(size, 0xa5);
  const o = KINFO_OFFSETS;
  bytes.writeBigInt64LE(fields.startSeconds ?? 1_760_000_000n, o.startSeconds);
  bytes.writeInt32LE(fields.startMicros ?? 0, o.startMicros);
  bytes.writeInt32LE(fields.flag ?? 0, o.flag);
  bytes.writeInt8(fields.stat ?? PROC_STAT.SRUN, o.stat);
  bytes.writeInt32LE(fields.pid, o.pid);
  const comm = Buffer.isBuffer(fields.comm) ? fields.comm : Buffer.from(fields.comm ?? '', 'utf8');
  bytes.fill(0, o.comm, o.comm + COMM_BYTES);
  comm.copy(bytes, o.comm, 0, Math.min(comm.length, COMM_BYTES));
  bytes.writeUInt32LE(fields.ruid ?? 501, o.ruid);
  bytes.writeUInt32LE(fields.uid ?? 501, o.uid);
  bytes.writeInt32LE(fields.ppid ?? 1, o.ppid);
  bytes.writeInt32LE(fields.pgid ?? fields.pid, o.pgid);
  bytes.writeInt32LE(fields.tdev ?? NODEV, o.tdev);
  bytes.writeInt32LE(fields.tpgid ?? 0, o.tpgid);
  bytes.writeInt32LE(fields.eflag ?? 0, o.eflag);
  return bytes;
}

/** Executable paths of the programs the tests run. */
export const PATHS = {
  terminal: '/System/Applications/Utilities/Terminal.app/Contents/MacOS/Terminal',
  iterm: '/Applications/iTerm.app/Contents/MacOS/iTerm2',
  itermServer: '/Applications/iTerm.app/Contents/MacOS/iTermServer-3.5.0',
  code: '/Applications/Visual Studio Code.app/Contents/Frameworks/Code Helper (Plugin).app/Contents/MacOS/Code Helper (Plugin)',
  login: '/usr/bin/login',
  zsh: '/bin/zsh',
  bash: '/bin/bash',
  make: '/usr/bin/make',
  sshd: '/usr/sbin/sshd',
  cli: '/opt/homebrew/bin/mycli',
} as const;

/** One process of the fake table. */
export interface FakeProc {
  readonly pid: number;
  ppid: number;
  sid: number;
  tdev: number;
  /** Start time in µs since 1970. */
  readonly start: bigint;
  readonly path: string | undefined;
  readonly uid: number;
  zombie: boolean;
}

/** What {@link FakeDarwin.spawn} takes. */
export interface SpawnOptions {
  readonly pid: number;
  /** The parent; 1 (launchd) by default. The child inherits its session and terminal. */
  readonly parent?: number;
  readonly path?: string;
  /** Calls `setsid()` first: a new session led by itself, with no controlling terminal. */
  readonly setsid?: boolean;
  /** Then opens this terminal as its controlling terminal (a login on a new pty). */
  readonly tty?: number;
  readonly uid?: number;
}

/** A macOS process table behind {@link DarwinProcessReader}. */
export class FakeDarwin implements DarwinProcessReader {
  readonly procs = new Map<number, FakeProc>();
  boot: string | undefined = '5C7A3D4E-1F2B-4C3D-9E8F-0A1B2C3D4E5F';
  /** The clock new processes start at, in µs; each spawn advances it by a millisecond and a bit. */
  clock = 1_760_000_000_123_456n;
  /** Called before every `kinfo` read, to change the table mid-derivation. */
  onKinfo: ((pid: number) => void) | undefined;
  /** Every `kinfo` call, in order. */
  readonly reads: number[] = [];

  spawn(options: SpawnOptions): FakeProc {
    const parentPid = options.parent ?? 1;
    const parent = this.procs.get(parentPid);
    this.clock += 1_001n;
    const proc: FakeProc = {
      pid: options.pid,
      ppid: parentPid,
      sid: options.setsid ? options.pid : (parent?.sid ?? 1),
      tdev: options.setsid ? NODEV : (parent?.tdev ?? NODEV),
      start: this.clock,
      path: options.path,
      uid: options.uid ?? parent?.uid ?? 501,
      zombie: false,
    };
    if (options.tty !== undefined) proc.tdev = options.tty;
    this.procs.set(proc.pid, proc);
    return proc;
  }

  /** Exits `pid`: its children go to launchd; with `zombie`, it stays in the table as SZOMB. */
  exit(pid: number, zombie = false): void {
    for (const proc of this.procs.values()) if (proc.ppid === pid) proc.ppid = 1;
    if (zombie) {
      const proc = this.procs.get(pid);
      if (proc) proc.zombie = true;
    } else {
      this.procs.delete(pid);
    }
  }

  get(pid: number): FakeProc {
    const proc = this.procs.get(pid);
    if (!proc) throw new Error(`no fake process ${pid}`);
    return proc;
  }

  /** The bytes sysctl(KERN_PROC_PID) would return for `pid`, or undefined for none. */
  kinfoBytes(pid: number): Buffer | undefined {
    const proc = this.procs.get(pid);
    if (!proc) return undefined;
    return encodeKinfo({
      pid: proc.pid,
      ppid: proc.ppid,
      stat: proc.zombie ? PROC_STAT.SZOMB : PROC_STAT.SRUN,
      startSeconds: proc.start / 1_000_000n,
      startMicros: Number(proc.start % 1_000_000n),
      comm: (proc.path ?? 'unknown').split('/').at(-1) ?? '',
      uid: proc.uid,
      ruid: proc.uid,
      tdev: proc.tdev,
    });
  }

  kinfo(pid: number): KinfoProc | undefined {
    this.reads.push(pid);
    this.onKinfo?.(pid);
    const bytes = this.kinfoBytes(pid);
    return bytes === undefined ? undefined : parseKinfoProc(bytes);
  }

  sessionId(pid: number): number | undefined {
    return this.procs.get(pid)?.sid;
  }

  executablePath(pid: number): string | undefined {
    const proc = this.procs.get(pid);
    return proc && !proc.zombie ? proc.path : undefined;
  }

  bootSessionUuid(): string | undefined {
    return this.boot;
  }
}

/**
 * Writes a 32-byte `audit_token_t` naming `pid` (`val[5]`), with `euid` (`val[1]`) and
 * `pidversion` (`val[7]`).
 */
export function auditToken(
  pid: number,
  options: { euid?: number; pidversion?: number } = {},
): Buffer {
  const token = Buffer.alloc(32);
  token.writeUInt32LE(options.euid ?? 501, 4);
  token.writeInt32LE(pid, 20);
  token.writeInt32LE(options.pidversion ?? 7, 28);
  return token;
}

/**
 * {@link FakeDarwin} with connected sockets and Security.framework: the whole `DarwinBindings`.
 * `sockets` maps an fd to the peer pid and token; `codeRequirement` decides requirement checks.
 */
export class FakeDarwinBindings extends FakeDarwin implements DarwinBindings {
  readonly sockets = new Map<number, { pid: number; token: Buffer }>();
  /** Answers `checkCodeRequirement`; allows everything by default. */
  codeRequirement: (token: Buffer, requirement: string) => CodeRequirementCheck = () => ({
    ok: true,
    status: 0,
  });
  /** Called during `executablePath`, to change the table mid-identification. */
  onPath: ((pid: number) => void) | undefined;
  readonly checks: Array<{ token: Buffer; requirement: string }> = [];

  connect(fd: number, pid: number, token = auditToken(pid)): void {
    this.sockets.set(fd, { pid, token });
  }

  getPeerPid(fd: number): number {
    const socket = this.sockets.get(fd);
    if (!socket) throw new Error(`EBADF: fd ${fd}`);
    return socket.pid;
  }

  getPeerToken(fd: number): Buffer {
    const socket = this.sockets.get(fd);
    if (!socket) throw new Error(`EBADF: fd ${fd}`);
    return Buffer.from(socket.token);
  }

  override executablePath(pid: number): string | undefined {
    this.onPath?.(pid);
    return super.executablePath(pid);
  }

  checkCodeRequirement(token: Buffer, requirement: string): CodeRequirementCheck {
    this.checks.push({ token: Buffer.from(token), requirement });
    return this.codeRequirement(token, requirement);
  }

  readonly localAuthentication = {
    canEvaluatePolicy(): never {
      throw new Error('not faked');
    },
    evaluatePolicy(): Promise<never> {
      return Promise.reject(new Error('not faked'));
    },
  };

  /** Not faked here: test/support/fake-xpc.ts fakes libxpc for the XPC transport. */
  readonly xpc = new Proxy({} as DarwinBindings['xpc'], {
    get(_target, name) {
      return () => {
        throw new Error(`xpc.${String(name)} is not faked in FakeDarwinBindings`);
      };
    },
  });
}
