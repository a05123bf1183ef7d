/**
 * Reading `/proc`: plain parsers over text (tested with fixtures) and small readers.
 *
 * Everything the Linux platform knows about a process — its session, controlling terminal,
 * start time, parent — comes from here, i.e. from the kernel, never from the process's own
 * file descriptors or environment (sudo CVE-2013-1776 trusted the tty of fd 0–2).
 *
 * @module
 */

import { closeSync, openSync, readFileSync, readlinkSync, readSync, statSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { PlatformError } from '../../errors.js';

/** The fields of `/proc/<pid>/stat` Bridgekeeper uses. */
export interface ProcStat {
  /** Field 1: process id. */
  readonly pid: number;
  /** Field 2: the command name (≤ 15 bytes), without the surrounding parentheses. Settable by the process itself. */
  readonly comm: string;
  /** Field 3: one-letter state (`R`, `S`, `D`, `Z` zombie, `X` dead, …). */
  readonly state: string;
  /** Field 4: parent process id (0 for pid 1 and kthreadd). */
  readonly ppid: number;
  /** Field 5: process group id. */
  readonly pgrp: number;
  /** Field 6: session id (the pid of the session leader). */
  readonly session: number;
  /** Field 7: the controlling terminal's device number (0 when there is none). */
  readonly ttyNr: number;
  /** Field 8: the terminal's foreground process group (-1 when there is none). */
  readonly tpgid: number;
  /**
   * Field 22: start time in clock ticks since boot, as a decimal string: it is an unsigned
   * 64-bit value, so it is never squeezed through a JS number.
   */
  readonly startTime: string;
}

/** Index of each field in the list that follows the last `)` (field 3 is index 0). */
const AFTER_COMM = { state: 0, ppid: 1, pgrp: 2, session: 3, ttyNr: 4, tpgid: 5, startTime: 19 };

function malformed(what: string, detail: string, text: string): PlatformError {
  const sample = text.length > 120 ? `${text.slice(0, 120)}…` : text;
  return new PlatformError(
    'ERR_PLATFORM',
    `Malformed ${what}: ${detail} (got ${JSON.stringify(sample)}).`,
  );
}

function integerField(
  fields: readonly string[],
  index: number,
  name: string,
  text: string,
): number {
  const raw = fields[index];
  if (raw === undefined || !/^-?\d+$/.test(raw)) {
    throw malformed('/proc/<pid>/stat', `field "${name}" is missing or not an integer`, text);
  }
  return Number(raw);
}

/**
 * Parses the text of `/proc/<pid>/stat`.
 *
 * The command name may itself contain spaces and parentheses (`1234 (a) b (c)) S 1 …`), so the
 * fields are split only after the **last** `)`.
 *
 * @throws `ERR_PLATFORM` when the text is not a stat line (fields missing or not numbers).
 *
 * @example
 * ```ts
 * const stat = parseProcStat('4242 (my (odd) cmd) S 1 4242 4242 34817 4242 …');
 * stat.comm; // 'my (odd) cmd'
 * ```
 */
export function parseProcStat(text: string): ProcStat {
  const open = text.indexOf(' (');
  const close = text.lastIndexOf(')');
  if (open <= 0 || close < open) {
    throw malformed('/proc/<pid>/stat', 'no "pid (comm)" prefix', text);
  }
  const pidText = text.slice(0, open);
  if (!/^\d+$/.test(pidText)) throw malformed('/proc/<pid>/stat', 'the pid is not a number', text);
  const fields = text
    .slice(close + 1)
    .trim()
    .split(' ');
  const state = fields[AFTER_COMM.state];
  if (state === undefined || !/^[A-Za-z]$/.test(state)) {
    throw malformed('/proc/<pid>/stat', 'the state field is missing', text);
  }
  const startTime = fields[AFTER_COMM.startTime];
  if (startTime === undefined || !/^\d+$/.test(startTime)) {
    throw malformed('/proc/<pid>/stat', 'field 22 (starttime) is missing or not a number', text);
  }
  return {
    pid: Number(pidText),
    comm: text.slice(open + 2, close),
    state,
    ppid: integerField(fields, AFTER_COMM.ppid, 'ppid', text),
    pgrp: integerField(fields, AFTER_COMM.pgrp, 'pgrp', text),
    session: integerField(fields, AFTER_COMM.session, 'session', text),
    ttyNr: integerField(fields, AFTER_COMM.ttyNr, 'tty_nr', text),
    tpgid: integerField(fields, AFTER_COMM.tpgid, 'tpgid', text),
    startTime,
  };
}

/** The four ids of a `Uid:` or `Gid:` line of `/proc/<pid>/status`. */
export interface ProcIds {
  readonly real: number;
  readonly effective: number;
  readonly saved: number;
  readonly fs: number;
}

/** The fields of `/proc/<pid>/status` Bridgekeeper uses. */
export interface ProcStatus {
  /** `Name:` — the command name, as escaped by the kernel. */
  readonly name: string;
  /** `PPid:` — parent process id. */
  readonly ppid: number;
  /** `Uid:` — real, effective, saved and filesystem user ids. */
  readonly uid: ProcIds;
  /** `Gid:` — real, effective, saved and filesystem group ids. */
  readonly gid: ProcIds;
}

function parseIds(line: string | undefined, name: string, text: string): ProcIds {
  const values = line?.trim().split(/\s+/);
  if (values?.length !== 4 || !values.every((value) => /^\d+$/.test(value))) {
    throw malformed('/proc/<pid>/status', `the ${name}: line is missing or malformed`, text);
  }
  const [real, effective, saved, fs] = values.map(Number) as [number, number, number, number];
  return { real, effective, saved, fs };
}

/**
 * Parses the text of `/proc/<pid>/status` (Name, PPid, Uid and Gid lines).
 *
 * @throws `ERR_PLATFORM` when one of those lines is missing or malformed.
 *
 * @example
 * ```ts
 * parseProcStatus(readFileSync('/proc/self/status', 'utf8')).uid.effective;
 * ```
 */
export function parseProcStatus(text: string): ProcStatus {
  const lines = new Map<string, string>();
  for (const line of text.split('\n')) {
    const colon = line.indexOf(':');
    if (colon > 0 && !lines.has(line.slice(0, colon))) {
      lines.set(line.slice(0, colon), line.slice(colon + 1));
    }
  }
  const name = lines.get('Name');
  if (name === undefined) throw malformed('/proc/<pid>/status', 'the Name: line is missing', text);
  const ppid = lines.get('PPid')?.trim();
  if (ppid === undefined || !/^\d+$/.test(ppid)) {
    throw malformed('/proc/<pid>/status', 'the PPid: line is missing or malformed', text);
  }
  return {
    // The kernel separates the key with a tab; the name itself may start with spaces.
    name: name.replace(/^\t/, ''),
    ppid: Number(ppid),
    uid: parseIds(lines.get('Uid'), 'Uid', text),
    gid: parseIds(lines.get('Gid'), 'Gid', text),
  };
}

/**
 * Parses `/proc/sys/kernel/random/boot_id`: a random UUID the kernel draws at each boot.
 * Start times count clock ticks since boot, so the boot id is what keeps a session credential
 * from matching a different session after a reboot.
 *
 * @throws `ERR_PLATFORM` when the text is not a UUID.
 */
export function parseBootId(text: string): string {
  const id = text.trim().toLowerCase();
  if (!/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/.test(id)) {
    throw malformed('/proc/sys/kernel/random/boot_id', 'not a UUID', text);
  }
  return id;
}

/** Major and minor numbers of a device encoded as in `tty_nr` (the kernel's `new_encode_dev`). */
export function decodeDevice(device: number): { major: number; minor: number } {
  return { major: (device >>> 8) & 0xfff, minor: (device & 0xff) | ((device >>> 12) & 0xfff00) };
}

/**
 * Names the terminal device behind a `tty_nr`, for diagnostics only (the credential uses the
 * number): `/dev/pts/N` for pseudo-terminals, `/dev/ttyN` for virtual consoles, `/dev/ttySN`
 * for serial ports, else `char device MAJOR:MINOR`.
 *
 * @returns the name, or `undefined` when `ttyNr` is 0 (no controlling terminal).
 *
 * @example
 * ```ts
 * ttyName(34817); // '/dev/pts/1'
 * ```
 */
export function ttyName(ttyNr: number): string | undefined {
  if (ttyNr === 0) return undefined;
  const { major, minor } = decodeDevice(ttyNr);
  // Unix98 pseudo-terminal slaves use majors 136–143, 256 minors each.
  if (major >= 136 && major <= 143) return `/dev/pts/${(major - 136) * 256 + minor}`;
  if (major === 4 && minor < 64) return `/dev/tty${minor}`;
  if (major === 4) return `/dev/ttyS${minor - 64}`;
  if (major === 5 && minor === 1) return '/dev/console';
  if (major === 188) return `/dev/ttyUSB${minor}`;
  if (major === 166) return `/dev/ttyACM${minor}`;
  return `char device ${major}:${minor}`;
}

/** True for a process that has exited (a zombie awaiting its parent, or dead). */
export function hasExited(stat: ProcStat): boolean {
  return stat.state === 'Z' || stat.state === 'X' || stat.state === 'x';
}

function isGone(error: unknown): boolean {
  const code = (error as NodeJS.ErrnoException | undefined)?.code;
  // ESRCH: the process died between open() and read().
  return code === 'ENOENT' || code === 'ESRCH';
}

function isUnreadable(error: unknown): boolean {
  const code = (error as NodeJS.ErrnoException | undefined)?.code;
  return isGone(error) || code === 'EACCES' || code === 'EPERM';
}

function readFailed(path: string, error: unknown): PlatformError {
  return new PlatformError('ERR_PLATFORM', `Reading ${path} failed.`, { cause: error });
}

function checkPid(pid: number): void {
  if (!Number.isSafeInteger(pid) || pid <= 0) {
    throw new PlatformError('ERR_PLATFORM', `Not a process id: ${String(pid)}.`);
  }
}

/**
 * Reads and parses `/proc/<pid>/stat`.
 *
 * procfs files are generated in memory and never wait on a disk, so this reads synchronously
 * under the promise: a thread-pool round trip per open/read/close (~100 µs together) would cost
 * ten times the read itself (~8 µs).
 *
 * @returns the parsed stat, or `undefined` when there is no such process (it exited or was reaped).
 * @throws `ERR_PLATFORM` on any other read error or a malformed file.
 */
export async function readProcStat(pid: number): Promise<ProcStat | undefined> {
  return readProcStatSync(pid);
}

const syncBuffer = Buffer.allocUnsafe(4096);

/**
 * Synchronous {@link readProcStat}, for the per-connection hot path: one open/read/close into a
 * reused buffer costs ~8 µs here, half of `readFileSync`.
 *
 * @returns the parsed stat, or `undefined` when there is no such process.
 * @throws `ERR_PLATFORM` on any other read error or a malformed file.
 */
export function readProcStatSync(pid: number): ProcStat | undefined {
  checkPid(pid);
  const path = `/proc/${pid}/stat`;
  let text: string;
  try {
    const fd = openSync(path, 'r');
    try {
      const bytesRead = readSync(fd, syncBuffer, 0, syncBuffer.length, 0);
      text = syncBuffer.toString('latin1', 0, bytesRead);
    } finally {
      closeSync(fd);
    }
  } catch (error) {
    if (isGone(error)) return undefined;
    throw readFailed(path, error);
  }
  return parseProcStat(text);
}

/**
 * Reads `/proc/<pid>/status`.
 *
 * @returns the parsed status, or `undefined` when there is no such process.
 * @throws `ERR_PLATFORM` on any other read error or a malformed file.
 */
export async function readProcStatus(pid: number): Promise<ProcStatus | undefined> {
  checkPid(pid);
  const path = `/proc/${pid}/status`;
  let text: string;
  try {
    // Synchronous for the same reason as readProcStat.
    text = readFileSync(path, 'utf8');
  } catch (error) {
    if (isGone(error)) return undefined;
    throw readFailed(path, error);
  }
  return parseProcStatus(text);
}

let bootId: Promise<string> | undefined;

/**
 * The current boot id. Read once and cached: it cannot change while this process runs.
 *
 * @throws `ERR_PLATFORM` when the file cannot be read or is malformed.
 */
export function readBootId(): Promise<string> {
  bootId ??= readFile('/proc/sys/kernel/random/boot_id', 'latin1').then(parseBootId, (error) => {
    throw readFailed('/proc/sys/kernel/random/boot_id', error);
  });
  bootId.catch(() => {
    bootId = undefined;
  });
  return bootId;
}

/**
 * The absolute path of a process's executable (`readlink /proc/<pid>/exe`). The kernel appends
 * ` (deleted)` when the file was removed or replaced after the process started.
 *
 * @returns the path, or `undefined` when it cannot be read: another user's process, a
 * non-dumpable (setuid/setgid) one, a kernel thread, or a process that is gone.
 * @throws `ERR_PLATFORM` on unexpected errors.
 */
export async function readExecutable(pid: number): Promise<string | undefined> {
  return readExecutableSync(pid);
}

/**
 * Synchronous {@link readExecutable} (~3 µs).
 *
 * @returns the path, or `undefined` when it cannot be read.
 * @throws `ERR_PLATFORM` on unexpected errors.
 */
export function readExecutableSync(pid: number): string | undefined {
  checkPid(pid);
  try {
    return readlinkSync(`/proc/${pid}/exe`);
  } catch (error) {
    if (isUnreadable(error)) return undefined;
    throw readFailed(`/proc/${pid}/exe`, error);
  }
}

/** Bounds on a command line kept for a prompt: the person reads it, so it stays short. */
export const COMMAND_LINE_LIMITS = { args: 32, argChars: 200, totalChars: 1_000 } as const;

/**
 * A process's command line (`/proc/<pid>/cmdline`), bounded by {@link COMMAND_LINE_LIMITS}
 * (an argument cut short ends in "…", and "…" stands for arguments left out).
 *
 * The kernel reads it from the process's own memory, which the process may rewrite after exec
 * (Node's `process.title` does): it says what the process was started as, unless it chose to
 * say otherwise. Show it as detail next to the executable, never instead of it.
 *
 * @returns the arguments, or `undefined` when they cannot be read (gone, another user's, a kernel thread).
 */
export async function readCommandLine(pid: number): Promise<string[] | undefined> {
  checkPid(pid);
  let text: string;
  try {
    // Asynchronous, unlike the other /proc reads: the kernel copies these pages out of the
    // peer's own memory, which a hostile peer could back with something slow (FUSE, userfaultfd).
    text = await readFile(`/proc/${pid}/cmdline`, 'utf8');
  } catch (error) {
    if (isUnreadable(error)) return undefined;
    throw readFailed(`/proc/${pid}/cmdline`, error);
  }
  if (text.length === 0) return undefined;
  const all = text.endsWith('\0') ? text.slice(0, -1).split('\0') : text.split('\0');
  const args: string[] = [];
  let total = 0;
  for (const arg of all) {
    const clipped =
      arg.length > COMMAND_LINE_LIMITS.argChars
        ? `${arg.slice(0, COMMAND_LINE_LIMITS.argChars - 1)}…`
        : arg;
    if (
      args.length === COMMAND_LINE_LIMITS.args ||
      total + clipped.length > COMMAND_LINE_LIMITS.totalChars
    ) {
      args.push('…');
      break;
    }
    args.push(clipped);
    total += clipped.length;
  }
  return args;
}

/**
 * The device and inode of the file a process executes (`stat` through `/proc/<pid>/exe`), as
 * `"dev:ino"`. Unlike the path, it survives the file being deleted or replaced on disk (a
 * package upgrade) and changes whenever the process execs another file.
 *
 * @returns the key, or `undefined` when it cannot be read (same cases as {@link readExecutableSync}).
 * @throws `ERR_PLATFORM` on unexpected errors.
 */
export function readExecutableKeySync(pid: number): string | undefined {
  checkPid(pid);
  try {
    const stats = statSync(`/proc/${pid}/exe`, { bigint: true });
    return `${stats.dev}:${stats.ino}`;
  } catch (error) {
    if (isUnreadable(error)) return undefined;
    throw readFailed(`/proc/${pid}/exe`, error);
  }
}

/** Where the credential and description logic reads processes from; tests pass scripted fakes. */
export interface ProcReader {
  /** `/proc/<pid>/stat`, or `undefined` when there is no such process. */
  readStat(pid: number): Promise<ProcStat | undefined>;
  /** `readlink /proc/<pid>/exe`, or `undefined` when unreadable or gone. */
  readExecutable(pid: number): Promise<string | undefined>;
  /** The boot id (cached). */
  readBootId(): Promise<string>;
  /** `/proc/<pid>/cmdline`, bounded; optional so that simple fakes need not provide it. */
  readCommandLine?(pid: number): Promise<string[] | undefined>;
}

/** The real `/proc`. */
export const systemProc: ProcReader = {
  readStat: readProcStat,
  readExecutable,
  readBootId,
  readCommandLine,
};
