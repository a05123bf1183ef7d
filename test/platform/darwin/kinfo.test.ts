/**
 * The `struct kinfo_proc` parser (src/platform/darwin/kinfo.ts), with hand-built records.
 *
 * The records are written by a small encoder (test/platform/darwin/fake-darwin.ts) that places
 * each field at the offsets kinfo.ts documents. So these tests check that the parser reads what
 * the documented layout says, in the right widths, signs and byte order — consistency, not
 * Apple's layout itself, which only a Mac can confirm.
 */

import { describe, expect, it } from 'vitest';
import { PlatformError } from '../../../src/errors.js';
import {
  COMM_BYTES,
  EPROC_SLEADER,
  hasExited,
  KINFO_OFFSETS,
  KINFO_PROC_SIZE,
  NODEV,
  P_CONTROLT,
  PROC_STAT,
  parseKinfoProc,
} from '../../../src/platform/darwin/kinfo.js';
import { encodeKinfo } from './fake-darwin.js';

function platformError(run: () => unknown): PlatformError {
  let caught: unknown;
  try {
    run();
  } catch (error) {
    caught = error;
  }
  expect(caught).toBeInstanceOf(PlatformError);
  expect((caught as PlatformError).code).toBe('ERR_PLATFORM');
  return caught as PlatformError;
}

describe('parseKinfoProc', () => {
  it('documents a 648-byte record whose fields lie inside it without overlapping', () => {
    expect(KINFO_PROC_SIZE).toBe(648);
    const widths: Record<keyof typeof KINFO_OFFSETS, number> = {
      startSeconds: 8,
      startMicros: 4,
      flag: 4,
      stat: 1,
      pid: 4,
      comm: COMM_BYTES,
      ruid: 4,
      uid: 4,
      ppid: 4,
      pgid: 4,
      tdev: 4,
      tpgid: 4,
      eflag: 4,
    };
    const spans = Object.entries(KINFO_OFFSETS)
      .map(([name, at]) => ({ name, at, end: at + widths[name as keyof typeof widths] }))
      .sort((a, b) => a.at - b.at);
    for (const [i, span] of spans.entries()) {
      expect(span.end).toBeLessThanOrEqual(KINFO_PROC_SIZE);
      if (i > 0) expect(span.at).toBeGreaterThanOrEqual(spans[i - 1]?.end ?? 0);
    }
    // Spot checks against the arithmetic in the module comment: eproc starts at 296.
    expect(KINFO_OFFSETS.ppid).toBe(296 + 264);
    expect(KINFO_OFFSETS.tdev).toBe(296 + 276);
    expect(KINFO_OFFSETS.eflag).toBe(296 + 316);
  });

  it('reads every field at its documented offset, width, sign and byte order', () => {
    const bytes = encodeKinfo({
      pid: 70_123,
      ppid: 70_001,
      pgid: 70_100,
      stat: PROC_STAT.SSLEEP,
      flag: P_CONTROLT | 0x4000,
      startSeconds: 1_760_000_123n,
      startMicros: 654_321,
      comm: 'zsh',
      ruid: 501,
      uid: 0,
      tdev: 0x1000_0003,
      tpgid: 70_123,
      eflag: EPROC_SLEADER,
    });
    expect(parseKinfoProc(bytes)).toEqual({
      pid: 70_123,
      stat: PROC_STAT.SSLEEP,
      flag: P_CONTROLT | 0x4000,
      startSeconds: 1_760_000_123,
      startMicros: 654_321,
      startTime: '1760000123654321',
      comm: 'zsh',
      ruid: 501,
      uid: 0,
      ppid: 70_001,
      pgid: 70_100,
      tdev: 0x1000_0003,
      tpgid: 70_123,
      eflag: EPROC_SLEADER,
    });
  });

  it('reads raw little-endian bytes without the encoder', () => {
    const bytes = Buffer.alloc(KINFO_PROC_SIZE);
    bytes.set([0x39, 0x30, 0x00, 0x00], 40); // p_pid 12345
    bytes.set([0xff, 0xff, 0xff, 0xff], 572); // e_tdev NODEV
    bytes.set([0x15, 0xcd, 0x5b, 0x07], 0); // tv_sec 123456789
    bytes.set([0x01, 0x00, 0x00, 0x00], 8); // tv_usec 1
    bytes.set([0x05], 36); // SZOMB
    bytes.write('launchd\0', 243, 'latin1');
    const info = parseKinfoProc(bytes);
    expect(info.pid).toBe(12_345);
    expect(info.tdev).toBe(NODEV);
    expect(info.startTime).toBe('123456789000001');
    expect(info.comm).toBe('launchd');
    expect(hasExited(info)).toBe(true);
  });

  it('keeps NODEV negative and pads the start time to microseconds', () => {
    const info = parseKinfoProc(encodeKinfo({ pid: 5, tdev: NODEV, startMicros: 7 }));
    expect(info.tdev).toBe(-1);
    expect(info.startTime).toBe('1760000000000007');
    expect(hasExited(info)).toBe(false);
  });

  it('stops comm at its NUL, and reads all 17 bytes when there is none', () => {
    expect(parseKinfoProc(encodeKinfo({ pid: 5, comm: 'a(b) c' })).comm).toBe('a(b) c');
    expect(parseKinfoProc(encodeKinfo({ pid: 5, comm: '' })).comm).toBe('');
    const full = parseKinfoProc(encodeKinfo({ pid: 5, comm: 'x'.repeat(40) }));
    expect(full.comm).toBe('x'.repeat(COMM_BYTES));
    expect(parseKinfoProc(encodeKinfo({ pid: 5, comm: 'größe' })).comm).toBe('größe');
  });

  it('ignores bytes past the record', () => {
    const bytes = Buffer.concat([encodeKinfo({ pid: 9 }), Buffer.alloc(16, 0xff)]);
    expect(parseKinfoProc(bytes).pid).toBe(9);
  });

  it('refuses a short record with ERR_PLATFORM', () => {
    const bytes = encodeKinfo({ pid: 9 });
    expect(platformError(() => parseKinfoProc(bytes.subarray(0, 647))).message).toMatch(/647/);
    platformError(() => parseKinfoProc(Buffer.alloc(0)));
    // A 32-bit-era record (492 bytes) is not one either.
    platformError(() => parseKinfoProc(Buffer.alloc(492)));
    platformError(() => parseKinfoProc('not a buffer' as unknown as Buffer));
  });

  it('refuses a start time no kernel writes, as a sign of a foreign layout', () => {
    platformError(() => parseKinfoProc(encodeKinfo({ pid: 9, startMicros: 1_000_000 })));
    platformError(() => parseKinfoProc(encodeKinfo({ pid: 9, startMicros: -1 })));
    platformError(() => parseKinfoProc(encodeKinfo({ pid: 9, startSeconds: -5n })));
  });
});
