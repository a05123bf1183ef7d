import { realpathSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import type { ProcReader, ProcStat } from '../../../src/platform/linux/proc.js';
import { readProcStat } from '../../../src/platform/linux/proc.js';
import {
  describeProcess,
  knownHostName,
  MAX_WALK_STEPS,
  programName,
} from '../../../src/platform/linux/process-description.js';

/** A scripted /proc from a list of [pid, ppid, comm, exe?]. */
function fakeProc(rows: ReadonlyArray<readonly [number, number, string, string?]>) {
  const stats = new Map<number, ProcStat>();
  const exes = new Map<number, string>();
  for (const [pid, ppid, comm, exe] of rows) {
    stats.set(pid, {
      pid,
      comm,
      state: 'S',
      ppid,
      pgrp: pid,
      session: pid,
      ttyNr: 0,
      tpgid: -1,
      startTime: String(pid),
    });
    if (exe !== undefined) exes.set(pid, exe);
  }
  const reads: number[] = [];
  const proc: ProcReader & { reads: number[] } = {
    reads,
    async readStat(pid) {
      reads.push(pid);
      return stats.get(pid);
    },
    async readExecutable(pid) {
      return exes.get(pid);
    },
    async readBootId() {
      return '11111111-2222-3333-4444-555555555555';
    },
  };
  return proc;
}

describe('knownHostName', () => {
  it.each([
    ['/usr/libexec/gnome-terminal-server', 'gnome-terminal-', 'GNOME Terminal'],
    [undefined, 'gnome-terminal-', 'GNOME Terminal'],
    ['/usr/bin/konsole', 'konsole', 'Konsole'],
    ['/usr/bin/kitty', 'kitty', 'kitty'],
    ['/usr/bin/alacritty', 'alacritty', 'Alacritty'],
    ['/usr/bin/xterm', 'xterm', 'XTerm'],
    ['/usr/bin/tmux', 'tmux: server', 'tmux'],
    [undefined, 'tmux: server', 'tmux'],
    ['/usr/bin/screen', 'screen', 'GNU Screen'],
    [undefined, 'sshd', 'SSH session'],
    [undefined, 'sshd-session', 'SSH session'],
    ['/usr/sbin/sshd', 'sshd', 'SSH session'],
    ['/usr/share/code/code', 'code', 'Visual Studio Code'],
    ['/usr/lib/code-oss/code-oss', 'code-oss', 'Visual Studio Code'],
    ['/opt/vscode/electron', 'electron', 'Visual Studio Code'],
    ['/usr/bin/wezterm-gui', 'wezterm-gui', 'WezTerm'],
    ['/usr/bin/foot', 'foot', 'foot'],
    ['/usr/bin/tilix', 'tilix', 'Tilix'],
    ['/usr/bin/xfce4-terminal', 'xfce4-terminal', 'Xfce Terminal'],
    ['/usr/bin/python3.11', 'terminator', 'Terminator'],
    ['/usr/bin/gnome-terminal-server (deleted)', 'gnome-terminal-', 'GNOME Terminal'],
  ])('%s (%s) → %s', (exe, comm, host) => {
    expect(knownHostName(exe, comm)).toBe(host);
  });

  it('knows nothing about shells, interpreters or an unrelated electron app', () => {
    expect(knownHostName('/usr/bin/bash', 'bash')).toBeUndefined();
    expect(knownHostName('/usr/bin/node', 'node')).toBeUndefined();
    expect(knownHostName('/opt/slack/electron', 'electron')).toBeUndefined();
  });
});

describe('programName', () => {
  it('names the executable, never the self-set comm, and comm only when the executable is unreadable', () => {
    expect(programName('/usr/local/bin/op', 'op')).toBe('op');
    // comm is the process's own claim (prctl; Node 24 calls its main thread "MainThread").
    expect(programName('/usr/bin/node', 'mycli')).toBe('node');
    expect(programName('/usr/bin/node', 'MainThread')).toBe('node');
    expect(programName('/usr/bin/python3.11', 'deploy.py')).toBe('python3.11');
    expect(programName(undefined, 'sshd')).toBe('sshd');
    expect(programName('/usr/bin/sleep (deleted)', 'sleep')).toBe('sleep');
    // A renamed process (prctl) cannot hide its executable.
    expect(programName('/usr/bin/evil', 'gnome-terminal-')).toBe('evil');
  });
});

describe('describeProcess', () => {
  it('names the terminal above the session leader', async () => {
    const proc = fakeProc([
      [1, 0, 'systemd', '/usr/lib/systemd/systemd'],
      [50, 1, 'gnome-terminal-', '/usr/libexec/gnome-terminal-server'],
      [100, 50, 'bash', '/usr/bin/bash'],
      [101, 100, 'mycli', '/usr/bin/node'],
    ]);
    expect(await describeProcess(101, { scope: 'terminal', leaderPid: 100 }, { proc })).toEqual({
      host: 'GNOME Terminal',
      program: 'node',
      pid: 101,
      executable: '/usr/bin/node',
    });
  });

  it('names tmux and SSH sessions', async () => {
    const tmux = fakeProc([
      [60, 1, 'tmux: server', '/usr/bin/tmux'],
      [100, 60, 'zsh', '/usr/bin/zsh'],
      [101, 100, 'node', '/usr/bin/node'],
    ]);
    expect(
      (await describeProcess(101, { scope: 'terminal', leaderPid: 100 }, { proc: tmux })).host,
    ).toBe('tmux');
    // Another user's sshd: its executable is unreadable, its comm is not.
    const ssh = fakeProc([
      [70, 1, 'sshd-session'],
      [100, 70, 'bash', '/usr/bin/bash'],
      [101, 100, 'node', '/usr/bin/node'],
    ]);
    expect(
      (await describeProcess(101, { scope: 'terminal', leaderPid: 100 }, { proc: ssh })).host,
    ).toBe('SSH session');
  });

  it('walks through shells and wrappers (sudo, script) to the terminal', async () => {
    const proc = fakeProc([
      [40, 1, 'konsole', '/usr/bin/konsole'],
      [41, 40, 'bash', '/usr/bin/bash'],
      [42, 41, 'sudo', '/usr/bin/sudo'],
      [100, 42, 'bash', '/usr/bin/bash'],
      [101, 100, 'node', '/usr/bin/node'],
    ]);
    expect((await describeProcess(101, { scope: 'terminal', leaderPid: 100 }, { proc })).host).toBe(
      'Konsole',
    );
  });

  it('stops at the first unknown program above a terminal session: that is the terminal', async () => {
    const proc = fakeProc([
      [30, 1, 'code', '/usr/share/code/code'],
      [31, 30, 'bash', '/usr/bin/bash'],
      [40, 31, 'cool-term', '/opt/cool-term/cool-term'],
      [100, 40, 'bash', '/usr/bin/bash'],
      [101, 100, 'node', '/usr/bin/node'],
    ]);
    expect((await describeProcess(101, { scope: 'terminal', leaderPid: 100 }, { proc })).host).toBe(
      'cool-term',
    );
  });

  it('without a terminal, finds the app above the invoking process', async () => {
    const proc = fakeProc([
      [10, 1, 'code', '/usr/share/code/code'],
      [20, 10, 'make', '/usr/bin/make'],
      [21, 20, 'sh', '/usr/bin/dash'],
      [22, 21, 'node', '/usr/bin/node'],
    ]);
    expect(await describeProcess(22, { scope: 'process', anchorPid: 21 }, { proc })).toMatchObject({
      host: 'Visual Studio Code',
      program: 'node',
    });
  });

  it('without a terminal or a known app, names the first program that is not a shell', async () => {
    const proc = fakeProc([
      [1, 0, 'systemd', '/usr/lib/systemd/systemd'],
      [10, 1, 'cron', '/usr/sbin/cron'],
      [21, 10, 'sh', '/usr/bin/dash'],
      [22, 21, 'backup', '/usr/local/bin/backup'],
    ]);
    expect((await describeProcess(22, { scope: 'process', anchorPid: 21 }, { proc })).host).toBe(
      'cron',
    );
  });

  it('never names init as the host; an orphan falls back to its own program', async () => {
    const proc = fakeProc([
      [1, 0, 'systemd', '/usr/lib/systemd/systemd'],
      [22, 1, 'backup', '/usr/local/bin/backup'],
    ]);
    expect((await describeProcess(22, { scope: 'process', anchorPid: 22 }, { proc })).host).toBe(
      'backup',
    );
  });

  it('falls back to the program when the leader is gone', async () => {
    const proc = fakeProc([[101, 100, 'mycli', '/usr/bin/node']]);
    expect(await describeProcess(101, { scope: 'terminal', leaderPid: 100 }, { proc })).toEqual({
      host: 'node',
      program: 'node',
      pid: 101,
      executable: '/usr/bin/node',
    });
  });

  it('describes a peer that is already gone by its pid only', async () => {
    const proc = fakeProc([]);
    expect(await describeProcess(101, { scope: 'process', anchorPid: 100 }, { proc })).toEqual({
      host: 'pid 101',
      pid: 101,
    });
  });

  it('terminates on a cycle in the process tree (a race can show one)', async () => {
    const proc = fakeProc([
      [10, 11, 'bash', '/usr/bin/bash'],
      [11, 10, 'bash', '/usr/bin/bash'],
      [22, 10, 'node', '/usr/bin/node'],
    ]);
    const description = await describeProcess(22, { scope: 'process', anchorPid: 10 }, { proc });
    expect(description.host).toBe('bash');
    expect(proc.reads.length).toBeLessThan(6);
  });

  it(`stops after ${MAX_WALK_STEPS} steps up a deep tree`, async () => {
    const rows: Array<[number, number, string, string]> = [[1, 0, 'code', '/usr/share/code/code']];
    for (let pid = 2; pid <= 200; pid++) rows.push([pid, pid - 1, 'bash', '/usr/bin/bash']);
    rows.push([1000, 200, 'node', '/usr/bin/node']);
    const proc = fakeProc(rows);
    const description = await describeProcess(1000, { scope: 'process', anchorPid: 200 }, { proc });
    // The known app at the top is beyond the bound; the walk gives up with the fallback.
    expect(description.host).toBe('bash');
    expect(proc.reads.length).toBeLessThanOrEqual(MAX_WALK_STEPS + 1);
  });

  it.skipIf(process.platform !== 'linux')(
    'describes this very process from the real /proc (Linux only)',
    async () => {
      const self = await readProcStat(process.pid);
      const description = await describeProcess(
        process.pid,
        { scope: 'process', anchorPid: process.ppid },
        {},
      );
      expect(description.pid).toBe(process.pid);
      expect(description.executable).toBe(realpathSync(process.execPath));
      expect(description.program).toBe(programName(description.executable, self?.comm));
      expect(description.host.length).toBeGreaterThan(0);
    },
  );
});
