/**
 * A parser for macOS's `struct kinfo_proc`, the record `sysctl({CTL_KERN, KERN_PROC,
 * KERN_PROC_PID, pid})` fills in for one process. It is what the session credential is derived
 * from: the start time (`p_starttime`), the parent (`e_ppid`) and the controlling terminal
 * (`e_tdev`), all from the kernel.
 *
 * Layout: 64-bit macOS (x86_64 and arm64 share the LP64 layout and are both little-endian).
 * `struct kinfo_proc { struct extern_proc kp_proc; struct eproc kp_eproc; }`, 648 bytes. The
 * offsets below are computed by hand from Apple's headers (`<sys/sysctl.h>`, `<sys/proc.h>`,
 * `<sys/vm.h>`, `<sys/_types/_timeval.h>`), with `long`, pointers and `u_quad_t` 8 bytes and
 * 8-aligned, `int`, `pid_t`, `uid_t`, `dev_t` (`__int32_t`), `sigset_t`, `fixpt_t`, `boolean_t`
 * and `suseconds_t` 4 bytes:
 *
 * `struct extern_proc` (296 bytes, at 0):
 * | field | offset | arithmetic |
 * |---|---|---|
 * | `p_un` (union: two pointers / `struct timeval p_starttime`) | 0 | timeval = `tv_sec` 8 + `tv_usec` 4 + pad 4 = 16 |
 * | `p_starttime.tv_sec` (`long`) | 0 | |
 * | `p_starttime.tv_usec` (`__int32_t`) | 8 | |
 * | `p_vmspace`, `p_sigacts` (pointers) | 16, 24 | |
 * | `p_flag` (`int`) | 32 | 24 + 8 |
 * | `p_stat` (`char`) | 36 | 32 + 4 |
 * | `p_pid` (`pid_t`) | 40 | 37 aligned to 4 |
 * | `p_oppid`, `p_dupfd` | 44, 48 | |
 * | `user_stack`, `exit_thread` (pointers) | 56, 64 | 52 aligned to 8 |
 * | `p_debugger`, `sigwait`, `p_estcpu`, `p_cpticks`, `p_pctcpu` | 72 … 88 | 5 × 4 |
 * | `p_wchan`, `p_wmesg` (pointers) | 96, 104 | 92 aligned to 8 |
 * | `p_swtime`, `p_slptime` | 112, 116 | |
 * | `p_realtimer` (`struct itimerval`, 2 timevals) | 120 | 32 bytes |
 * | `p_rtime` (timeval) | 152 | |
 * | `p_uticks`, `p_sticks`, `p_iticks` (`u_quad_t`) | 168, 176, 184 | |
 * | `p_traceflag` | 192 | |
 * | `p_tracep` (pointer) | 200 | 196 aligned to 8 |
 * | `p_siglist` | 208 | |
 * | `p_textvp` (pointer) | 216 | 212 aligned to 8 |
 * | `p_holdcnt`, `p_sigmask`, `p_sigignore`, `p_sigcatch` | 224 … 236 | 4 × 4 |
 * | `p_priority`, `p_usrpri`, `p_nice` (1 byte each) | 240, 241, 242 | |
 * | `p_comm[MAXCOMLEN + 1]` (17 bytes) | 243 | ends at 260 |
 * | `p_pgrp`, `p_addr` (pointers) | 264, 272 | 260 aligned to 8 |
 * | `p_xstat`, `p_acflag` (`u_short`) | 280, 282 | |
 * | `p_ru` (pointer) | 288 | 284 aligned to 8; ends at 296 |
 *
 * `struct eproc` (352 bytes, at 296; offsets below are absolute):
 * | field | offset | arithmetic |
 * |---|---|---|
 * | `e_paddr`, `e_sess` (pointers; `e_sess` is a kernel address, useless here) | 296, 304 | |
 * | `e_pcred` (`struct _pcred`: `pc_lock[72]`, `pc_ucred` ptr, 4 ids, `p_refcnt`; 100 → 104) | 312 | `p_ruid` at 312 + 80 = 392 |
 * | `e_ucred` (`struct _ucred`: `cr_ref`, `cr_uid`, `cr_ngroups` short, `cr_groups[16]`; 76) | 416 | `cr_uid` at 420 |
 * | `e_vm` (`struct vmspace`: int, ptr, int[5], ptr[3]; 64) | 496 | 492 aligned to 8 |
 * | `e_ppid`, `e_pgid` | 560, 564 | 496 + 64 |
 * | `e_jobc` (`short`) | 568 | |
 * | `e_tdev` (`dev_t`) | 572 | 570 aligned to 4 |
 * | `e_tpgid` | 576 | |
 * | `e_tsess` (pointer) | 584 | 580 aligned to 8 |
 * | `e_wmesg[8]` | 592 | |
 * | `e_xsize`, `e_xrssize`, `e_xccount`, `e_xswrss` | 600, 604, 606, 608 | |
 * | `e_flag` (`int32_t`: `EPROC_CTTY`, `EPROC_SLEADER`) | 612 | 610 aligned to 4 |
 * | `e_login[12]` | 616 | |
 * | `e_spare[4]` | 628 | ends at 644, padded to 648 |
 *
 * The same transcription compiled with gcc on Linux x86_64 reports these offsets and a size of
 * 648, which checks the arithmetic, not Apple's headers: that needs a Mac. If a field here were
 * misplaced on a real Mac, `p_pid` would not read back as the pid asked for, and the credential
 * provider refuses such a record (fail closed) instead of trusting its other fields.
 *
 * The session id is not in `kinfo_proc`: `e_sess` is a kernel pointer. It comes from
 * `getsid(pid)` (libSystem), which macOS answers for any process, not just the caller's session.
 *
 * @module
 */

import { PlatformError } from '../../errors.js';

/** `sizeof(struct kinfo_proc)` on 64-bit macOS. */
export const KINFO_PROC_SIZE = 648;

/** Byte offsets of the fields read, in `struct kinfo_proc` (see the module comment). */
export const KINFO_OFFSETS = Object.freeze({
  startSeconds: 0,
  startMicros: 8,
  flag: 32,
  stat: 36,
  pid: 40,
  comm: 243,
  ruid: 392,
  uid: 420,
  ppid: 560,
  pgid: 564,
  tdev: 572,
  tpgid: 576,
  eflag: 612,
} as const);

/** `MAXCOMLEN + 1`: the bytes of `p_comm`, NUL-terminated when shorter. */
export const COMM_BYTES = 17;

/** `NODEV`, `(dev_t)-1`: `e_tdev` of a process without a controlling terminal. */
export const NODEV = -1;

/** `p_stat` values (`<sys/proc.h>`). */
export const PROC_STAT = Object.freeze({
  /** Being created by fork. */
  SIDL: 1,
  /** Runnable. */
  SRUN: 2,
  /** Sleeping on an address. */
  SSLEEP: 3,
  /** Stopped (debugging or job control). */
  SSTOP: 4,
  /** Exited, not yet waited for by its parent. */
  SZOMB: 5,
} as const);

/** `p_flag` bit: the process has a controlling terminal (`P_CONTROLT`). */
export const P_CONTROLT = 0x2;
/** `e_flag` bit: the controlling tty vnode is active (`EPROC_CTTY`). */
export const EPROC_CTTY = 0x1;
/** `e_flag` bit: the process is its session's leader (`EPROC_SLEADER`). */
export const EPROC_SLEADER = 0x2;

/** The fields of one `struct kinfo_proc` that Bridgekeeper reads. */
export interface KinfoProc {
  /** `p_pid`. */
  readonly pid: number;
  /** `p_stat`: one of {@link PROC_STAT}. */
  readonly stat: number;
  /** `p_flag` (`P_*` bits). */
  readonly flag: number;
  /** `p_starttime.tv_sec`: seconds since 1970. */
  readonly startSeconds: number;
  /** `p_starttime.tv_usec`. */
  readonly startMicros: number;
  /**
   * The start time as microseconds since 1970, in a decimal string: `PeerIdentity.startTime`
   * on macOS. With the pid it names one process instance.
   */
  readonly startTime: string;
  /** `p_comm`: the first 16 bytes of the executable's name (UTF-8, up to the first NUL). */
  readonly comm: string;
  /** `e_pcred.p_ruid`: the real user id. */
  readonly ruid: number;
  /** `e_ucred.cr_uid`: the effective user id. */
  readonly uid: number;
  /** `e_ppid`: the parent's pid. */
  readonly ppid: number;
  /** `e_pgid`: the process group. */
  readonly pgid: number;
  /** `e_tdev`: the controlling terminal's device, or {@link NODEV} (-1) when there is none. */
  readonly tdev: number;
  /** `e_tpgid`: the terminal's foreground process group (-1 or 0 without a terminal). */
  readonly tpgid: number;
  /** `e_flag` (`EPROC_*` bits). */
  readonly eflag: number;
}

/**
 * Parses the `struct kinfo_proc` that `sysctl(KERN_PROC_PID)` returned. Pure: the caller does
 * the system call (and treats a zero-length answer as "no such process").
 *
 * @param bytes the record, at least {@link KINFO_PROC_SIZE} bytes; bytes after that are ignored.
 * @throws `ERR_PLATFORM` when `bytes` is shorter than a `kinfo_proc`, or its start time is not a
 * valid `timeval` (a truncated or foreign record must never be read as a process).
 *
 * @example
 * ```ts
 * const info = parseKinfoProc(buffer);
 * if (info.tdev !== NODEV) console.log(`pid ${info.pid} has a terminal`);
 * ```
 */
export function parseKinfoProc(bytes: Buffer): KinfoProc {
  if (!Buffer.isBuffer(bytes) || bytes.length < KINFO_PROC_SIZE) {
    throw new PlatformError(
      'ERR_PLATFORM',
      `sysctl(KERN_PROC_PID) returned ${Buffer.isBuffer(bytes) ? bytes.length : 'no'} bytes; a ` +
        `64-bit macOS kinfo_proc has ${KINFO_PROC_SIZE}. This build of macOS is not supported.`,
    );
  }
  const o = KINFO_OFFSETS;
  const startSeconds = bytes.readBigInt64LE(o.startSeconds);
  const startMicros = bytes.readInt32LE(o.startMicros);
  if (startSeconds < 0n || startMicros < 0 || startMicros > 999_999) {
    // A timeval the kernel would never write: the record is not laid out as this parser reads it.
    throw new PlatformError(
      'ERR_PLATFORM',
      `sysctl(KERN_PROC_PID) returned a start time of ${startSeconds} s ${startMicros} µs, which ` +
        'no process has: this build of macOS lays out kinfo_proc differently and is not supported.',
    );
  }
  const commBytes = bytes.subarray(o.comm, o.comm + COMM_BYTES);
  const nul = commBytes.indexOf(0);
  return {
    pid: bytes.readInt32LE(o.pid),
    stat: bytes.readInt8(o.stat),
    flag: bytes.readInt32LE(o.flag),
    startSeconds: Number(startSeconds),
    startMicros,
    startTime: (startSeconds * 1_000_000n + BigInt(startMicros)).toString(),
    comm: commBytes.toString('utf8', 0, nul === -1 ? COMM_BYTES : nul),
    ruid: bytes.readUInt32LE(o.ruid),
    uid: bytes.readUInt32LE(o.uid),
    ppid: bytes.readInt32LE(o.ppid),
    pgid: bytes.readInt32LE(o.pgid),
    tdev: bytes.readInt32LE(o.tdev),
    tpgid: bytes.readInt32LE(o.tpgid),
    eflag: bytes.readInt32LE(o.eflag),
  };
}

/** True when `info` describes a process that has exited (a zombie awaiting its parent). */
export function hasExited(info: KinfoProc): boolean {
  return info.stat === PROC_STAT.SZOMB;
}
