import { describe, expect, it } from 'vitest';
import { FakeClock } from '../../src/testing/fake-clock.js';

describe('FakeClock', () => {
  it('starts at the given times, or at 0 and a fixed wall time', () => {
    expect(new FakeClock({ monotonic: 5, wall: 10 }).monotonicNow()).toBe(5);
    expect(new FakeClock({ monotonic: 5, wall: 10 }).wallNow()).toBe(10);
    const clock = new FakeClock();
    expect(clock.monotonicNow()).toBe(0);
    expect(clock.wallNow()).toBe(new FakeClock().wallNow());
  });

  it('advance moves both clocks', () => {
    const clock = new FakeClock({ monotonic: 100, wall: 1_000 });
    clock.advance(250);
    expect(clock.monotonicNow()).toBe(350);
    expect(clock.wallNow()).toBe(1_250);
  });

  it('fires due timers in order, each seeing its own due time', () => {
    const clock = new FakeClock({ monotonic: 0, wall: 1_000 });
    const seen: Array<[string, number, number]> = [];
    clock.setTimer(() => seen.push(['b', clock.monotonicNow(), clock.wallNow()]), 20);
    clock.setTimer(() => seen.push(['a', clock.monotonicNow(), clock.wallNow()]), 10);
    clock.setTimer(() => seen.push(['c', clock.monotonicNow(), clock.wallNow()]), 20);
    clock.setTimer(() => seen.push(['late', clock.monotonicNow(), clock.wallNow()]), 31);
    expect(clock.pendingTimers).toBe(4);
    clock.advance(30);
    expect(seen).toEqual([
      ['a', 10, 1_010],
      ['b', 20, 1_020],
      ['c', 20, 1_020],
    ]);
    expect(clock.monotonicNow()).toBe(30);
    expect(clock.pendingTimers).toBe(1);
    clock.advance(1);
    expect(seen.at(-1)).toEqual(['late', 31, 1_031]);
    expect(clock.pendingTimers).toBe(0);
  });

  it('fires a timer exactly at its due time, not before', () => {
    const clock = new FakeClock();
    let fired = 0;
    clock.setTimer(() => fired++, 1_000);
    clock.advance(999);
    expect(fired).toBe(0);
    clock.advance(1);
    expect(fired).toBe(1);
  });

  it('fires timers scheduled by callbacks when they fall inside the window', () => {
    const clock = new FakeClock();
    const at: number[] = [];
    const tick = (): void => {
      at.push(clock.monotonicNow());
      if (at.length < 5) clock.setTimer(tick, 10);
    };
    clock.setTimer(tick, 10);
    clock.advance(35);
    expect(at).toEqual([10, 20, 30]);
    clock.advance(100);
    expect(at).toEqual([10, 20, 30, 40, 50]);
  });

  it('cancels timers, and cancelling twice is harmless', () => {
    const clock = new FakeClock();
    let fired = 0;
    const cancel = clock.setTimer(() => fired++, 10);
    cancel();
    cancel();
    expect(clock.pendingTimers).toBe(0);
    clock.advance(100);
    expect(fired).toBe(0);
  });

  it('treats a zero, negative or NaN delay as due now (fires on the next advance)', () => {
    const clock = new FakeClock();
    let fired = 0;
    clock.setTimer(() => fired++, 0);
    clock.setTimer(() => fired++, -5);
    clock.setTimer(() => fired++, Number.NaN);
    expect(fired).toBe(0);
    clock.advance(0);
    expect(fired).toBe(3);
  });

  it('never fires an infinite timer', () => {
    const clock = new FakeClock();
    let fired = 0;
    clock.setTimer(() => fired++, Number.POSITIVE_INFINITY);
    clock.advance(1e15);
    expect(fired).toBe(0);
    expect(clock.pendingTimers).toBe(1);
  });

  it('setWall and jumpWall move the wall clock alone and fire nothing', () => {
    const clock = new FakeClock({ monotonic: 0, wall: 10_000 });
    let fired = 0;
    clock.setTimer(() => fired++, 10);
    clock.jumpWall(-5_000);
    expect(clock.wallNow()).toBe(5_000);
    clock.jumpWall(8 * 3_600_000);
    expect(clock.wallNow()).toBe(5_000 + 8 * 3_600_000);
    clock.setWall(42);
    expect(clock.wallNow()).toBe(42);
    expect(clock.monotonicNow()).toBe(0);
    expect(fired).toBe(0);
    clock.advance(10);
    expect(clock.wallNow()).toBe(52);
    expect(fired).toBe(1);
  });

  it('propagates a throwing callback and stays at its due time', () => {
    const clock = new FakeClock();
    let later = 0;
    clock.setTimer(() => {
      throw new Error('boom');
    }, 10);
    clock.setTimer(() => later++, 20);
    expect(() => clock.advance(50)).toThrow('boom');
    expect(clock.monotonicNow()).toBe(10);
    clock.advance(10);
    expect(later).toBe(1);
  });

  it('rejects negative and non-finite moves with ERR_INVALID_ARGUMENT', () => {
    const clock = new FakeClock();
    expect(() => clock.advance(-1)).toThrow(
      expect.objectContaining({ code: 'ERR_INVALID_ARGUMENT' }),
    );
    expect(() => clock.advance(Number.NaN)).toThrow(
      expect.objectContaining({ code: 'ERR_INVALID_ARGUMENT' }),
    );
    expect(() => clock.setWall(Number.POSITIVE_INFINITY)).toThrow(
      expect.objectContaining({ code: 'ERR_INVALID_ARGUMENT' }),
    );
    expect(() => clock.jumpWall(Number.NaN)).toThrow(
      expect.objectContaining({ code: 'ERR_INVALID_ARGUMENT' }),
    );
    expect(() => new FakeClock({ wall: Number.NaN })).toThrow(
      expect.objectContaining({ code: 'ERR_INVALID_ARGUMENT' }),
    );
  });
});
