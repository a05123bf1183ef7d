/**
 * The adversarial suite's child-process harness must not call a child's last message lost when
 * the child's `exit` is seen before that message is read from the IPC channel: Node may report
 * `exit` first (SIGCHLD and the channel's data arrive on different descriptors), and CI once
 * failed the load test that way — "exited (0) before sending done" from a child that had sent it.
 * Driven with a stand-in ChildProcess so the order of events is chosen, not hoped for.
 */

import type { ChildProcess } from 'node:child_process';
import { EventEmitter } from 'node:events';
import { describe, expect, it } from 'vitest';
import { Child } from '../adversarial/support/load-harness.js';

class StandInProcess extends EventEmitter {
  exitCode: number | null = null;
  signalCode: NodeJS.Signals | null = null;
  pid = 4242;
  exit(code: number): void {
    this.exitCode = code;
    this.emit('exit', code, null);
  }
}

describe('Child.message', () => {
  it('still receives a message read after the exit was reported, before the channel closed', async () => {
    const stand = new StandInProcess();
    const child = new Child(stand as unknown as ChildProcess);
    stand.exit(0);
    const waiting = child.message('done', 5_000);
    await new Promise((resolve) => setTimeout(resolve, 20));
    stand.emit('message', { type: 'done', value: 1 });
    stand.emit('close', 0, null);
    await expect(waiting).resolves.toEqual({ type: 'done', value: 1 });
  });

  it('fails at once, naming the exit, when the channel closed without the message', async () => {
    const stand = new StandInProcess();
    const child = new Child(stand as unknown as ChildProcess);
    const waiting = child.message('done', 5_000);
    stand.exit(3);
    stand.emit('close', 3, null);
    const started = performance.now();
    await expect(waiting).rejects.toThrow('child 4242 exited (3) before sending "done"');
    expect(performance.now() - started).toBeLessThan(1_000);
  });
});
