import { spawn } from 'node:child_process';
import { readFileSync, realpathSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { PlatformError } from '../../../src/errors.js';
import {
  decodeDevice,
  hasExited,
  parseBootId,
  parseProcStat,
  parseProcStatus,
  readBootId,
  readExecutable,
  readExecutableKeySync,
  readExecutableSync,
  readProcStat,
  readProcStatSync,
  readProcStatus,
  ttyName,
} from '../../../src/platform/linux/proc.js';

const fixture = (name: string): string =>
  readFileSync(new URL(`../../fixtures/linux/${name}`, import.meta.url), 'latin1');

function expectPlatformError(run: () => unknown, message: RegExp): void {
  let caught: unknown;
  try {
    run();
  } catch (error) {
    caught = error;
  }
  expect(caught).toBeInstanceOf(PlatformError);
  expect((caught as PlatformError).code).toBe('ERR_PLATFORM');
  expect((caught as PlatformError).message).toMatch(message);
}

describe('parseProcStat', () => {
  it('splits after the last ")" when comm holds spaces, parentheses and a ")"', () => {
    // Captured from a real process running a copy of sleep named "a) b (c)) d".
    const stat = parseProcStat(fixture('stat-odd-comm.txt'));
    expect(stat).toEqual({
      pid: 5466,
      comm: 'a) b (c)) d',
      state: 'S',
      ppid: 5465,
      pgrp: 5461,
      session: 2267,
      ttyNr: 0,
      tpgid: -1,
      startTime: '69921',
    });
  });

  it('reads a process on a pseudo-terminal', () => {
    const stat = parseProcStat(fixture('stat-pts.txt'));
    expect(stat).toMatchObject({ comm: 'cat', session: 5515, ttyNr: 34816, tpgid: 5515 });
    expect(ttyName(stat.ttyNr)).toBe('/dev/pts/0');
  });

  it('reads a kernel thread (no parent, no session, no tty)', () => {
    const stat = parseProcStat(fixture('stat-kthread.txt'));
    expect(stat).toMatchObject({ pid: 2, comm: 'kthreadd', ppid: 0, session: 0, ttyNr: 0 });
    expect(stat.startTime).toBe('26');
    expect(hasExited(stat)).toBe(false);
  });

  it('reads a zombie and reports it as exited', () => {
    const stat = parseProcStat(fixture('stat-zombie.txt'));
    expect(stat).toMatchObject({ pid: 5513, comm: 'python3', state: 'Z', startTime: '69956' });
    expect(hasExited(stat)).toBe(true);
  });

  it('parses comm that looks like more fields, and a trailing newline', () => {
    const fields = 'S 1 10 10 34817 10 0 0 0 0 0 0 0 0 0 20 0 1 0 12345 0 0';
    const stat = parseProcStat(`77 () S 1 2 3 4 5 6 (x)) ${fields}\n`);
    expect(stat.comm).toBe(') S 1 2 3 4 5 6 (x)');
    expect(stat).toMatchObject({ pid: 77, ppid: 1, session: 10, ttyNr: 34817, startTime: '12345' });
  });

  it('keeps start times beyond 2^53 exact, as strings', () => {
    const big = '18446744073709551615';
    const stat = parseProcStat(`9 (x) S 1 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 ${big} 0 0`);
    expect(stat.startTime).toBe(big);
    expect(BigInt(stat.startTime)).toBe(2n ** 64n - 1n);
  });

  it('throws a clear error when fields are missing', () => {
    expectPlatformError(
      () => parseProcStat('1234 (truncated) S 1 2 3'),
      /Malformed \/proc\/<pid>\/stat: field 22 \(starttime\) is missing/,
    );
    expectPlatformError(() => parseProcStat('no parentheses here'), /no "pid \(comm\)" prefix/);
    expectPlatformError(() => parseProcStat('abc (x) S 1 2 3'), /the pid is not a number/);
    expectPlatformError(() => parseProcStat('1 (x)'), /the state field is missing/);
    expectPlatformError(
      () => parseProcStat('1 (x) S one 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 5 0'),
      /field "ppid" is missing or not an integer/,
    );
    expectPlatformError(() => parseProcStat(''), /no "pid \(comm\)" prefix/);
  });
});

describe('parseProcStatus', () => {
  it('reads Name, PPid, Uid and Gid (real, effective, saved, fs)', () => {
    expect(parseProcStatus(fixture('status-odd-comm.txt'))).toEqual({
      name: 'a) b (c)) d',
      ppid: 5465,
      uid: { real: 0, effective: 0, saved: 0, fs: 0 },
      gid: { real: 0, effective: 0, saved: 0, fs: 0 },
    });
    expect(parseProcStatus(fixture('status-zombie.txt'))).toMatchObject({
      name: 'python3',
      ppid: 5472,
    });
    expect(parseProcStatus(fixture('status-kthread.txt'))).toMatchObject({
      name: 'kthreadd',
      ppid: 0,
    });
  });

  it('keeps distinct real, effective, saved and fs ids apart', () => {
    const text =
      'Name:\tsetuid-thing\nPPid:\t10\nUid:\t1000\t0\t0\t0\nGid:\t1000\t1001\t1002\t1003\n';
    expect(parseProcStatus(text)).toEqual({
      name: 'setuid-thing',
      ppid: 10,
      uid: { real: 1000, effective: 0, saved: 0, fs: 0 },
      gid: { real: 1000, effective: 1001, saved: 1002, fs: 1003 },
    });
  });

  it('throws a clear error when a line is missing', () => {
    expectPlatformError(
      () => parseProcStatus('Name:\tx\nPPid:\t1\nGid:\t0\t0\t0\t0\n'),
      /Uid: line/,
    );
    expectPlatformError(() => parseProcStatus('PPid:\t1\n'), /Name: line is missing/);
    expectPlatformError(() => parseProcStatus('Name:\tx\nUid:\t0\t0\t0\t0\n'), /PPid: line/);
    expectPlatformError(
      () => parseProcStatus('Name:\tx\nPPid:\t1\nUid:\t0\t0\t0\nGid:\t0\t0\t0\t0\n'),
      /Uid: line is missing or malformed/,
    );
  });
});

describe('boot id', () => {
  it('parses the fixture and rejects what is not a UUID', () => {
    expect(parseBootId(fixture('boot_id.txt'))).toBe('44cd9a28-e7f7-4991-b18c-0751d9d0cbc0');
    expectPlatformError(() => parseBootId('not-a-uuid\n'), /not a UUID/);
    expectPlatformError(() => parseBootId(''), /not a UUID/);
  });

  it.skipIf(process.platform !== 'linux')('reads the real boot id, once (Linux only)', async () => {
    const first = await readBootId();
    expect(first).toBe(readFileSync('/proc/sys/kernel/random/boot_id', 'latin1').trim());
    expect(readBootId()).toBe(readBootId());
  });
});

describe('ttyName', () => {
  it('names pseudo-terminals, consoles and serial ports from tty_nr', () => {
    expect(ttyName(0)).toBeUndefined();
    expect(ttyName((136 << 8) | 5)).toBe('/dev/pts/5');
    expect(ttyName((137 << 8) | 3)).toBe('/dev/pts/259');
    // Minors above 255 spill into bits 20–31 (new_encode_dev).
    expect(ttyName((136 << 8) | (0x100 << 12) | 2)).toBe('/dev/pts/258');
    expect(ttyName((4 << 8) | 2)).toBe('/dev/tty2');
    expect(ttyName((4 << 8) | 65)).toBe('/dev/ttyS1');
    expect(ttyName((5 << 8) | 1)).toBe('/dev/console');
    expect(ttyName((204 << 8) | 64)).toBe('char device 204:64');
    expect(decodeDevice((136 << 8) | (0x100 << 12) | 2)).toEqual({ major: 136, minor: 258 });
  });
});

describe.skipIf(process.platform !== 'linux')('readers of the real /proc (Linux only)', () => {
  it('read this process from /proc', async () => {
    const stat = await readProcStat(process.pid);
    expect(stat?.pid).toBe(process.pid);
    expect(stat?.ppid).toBe(process.ppid);
    expect(readProcStatSync(process.pid)?.startTime).toBe(stat?.startTime);
    const status = await readProcStatus(process.pid);
    expect(status?.uid.effective).toBe(process.geteuid?.());
    expect(status?.ppid).toBe(process.ppid);
    const exe = realpathSync(process.execPath);
    expect(await readExecutable(process.pid)).toBe(exe);
    expect(readExecutableSync(process.pid)).toBe(exe);
    expect(readExecutableKeySync(process.pid)).toMatch(/^\d+:\d+$/);
  });

  it('return undefined for a process that is gone', async () => {
    const child = spawn('true');
    const pid = child.pid as number;
    await new Promise((resolve) => child.on('close', resolve));
    expect(await readProcStat(pid)).toBeUndefined();
    expect(readProcStatSync(pid)).toBeUndefined();
    expect(await readProcStatus(pid)).toBeUndefined();
    expect(await readExecutable(pid)).toBeUndefined();
    expect(readExecutableKeySync(pid)).toBeUndefined();
  });

  it('return undefined for an executable the kernel will not show (kernel thread)', async () => {
    expect(await readExecutable(2)).toBeUndefined();
    expect(readExecutableSync(2)).toBeUndefined();
  });

  it('reject what is not a pid', async () => {
    await expect(readProcStat(0)).rejects.toMatchObject({ code: 'ERR_PLATFORM' });
    expect(() => readProcStatSync(-1)).toThrow(/Not a process id/);
    await expect(readExecutable(1.5)).rejects.toMatchObject({ code: 'ERR_PLATFORM' });
  });
});

describe('readCommandLine', () => {
  it('reads a real process’s arguments and bounds what a prompt would show', async () => {
    const { spawn } = await import('node:child_process');
    const { readCommandLine, COMMAND_LINE_LIMITS } = await import(
      '../../../src/platform/linux/proc.js'
    );
    const long = 'x'.repeat(COMMAND_LINE_LIMITS.argChars + 50);
    const many = Array.from({ length: 40 }, (_, index) => `a${index}`);
    // sh keeps its own arguments ($0 and the positional ones) in its command line while it waits.
    const shell = (...args: string[]) => spawn('sh', ['-c', 'sleep 30; :', ...args]);
    const children = [shell('name', 'with space'), shell('name', long), shell('name', ...many)];
    try {
      await new Promise((resolve) => setTimeout(resolve, 100));
      expect(await readCommandLine(children[0]!.pid!)).toEqual([
        'sh',
        '-c',
        'sleep 30; :',
        'name',
        'with space',
      ]);
      const clipped = await readCommandLine(children[1]!.pid!);
      expect(clipped?.[4]).toHaveLength(COMMAND_LINE_LIMITS.argChars);
      expect(clipped?.[4]?.endsWith('…')).toBe(true);
      const bounded = await readCommandLine(children[2]!.pid!);
      expect(bounded).toHaveLength(COMMAND_LINE_LIMITS.args + 1);
      expect(bounded?.at(-1)).toBe('…');
      expect(await readCommandLine(2 ** 22 + 12345)).toBeUndefined();
    } finally {
      for (const child of children) child.kill('SIGKILL');
    }
  });
});
