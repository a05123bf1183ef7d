import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PeerError } from '../../../src/errors.js';
import { type LinuxBindings, loadLinuxBindings } from '../../../src/platform/linux/bindings.js';
import {
  createLinuxCredentialProvider,
  deriveLinuxSession,
  describeOwnSession,
} from '../../../src/platform/linux/credentials.js';
import { identifySocketPeer, releasePeer } from '../../../src/platform/linux/identity.js';
import type { ProcReader, ProcStat } from '../../../src/platform/linux/proc.js';
import type { PeerIdentity } from '../../../src/transport/transport.js';
import { socketFd } from '../../fixtures/linux/peer-server.js';
import { rejectionOf as rejection } from '../../support/assertions.js';

const BOOT = '11111111-2222-3333-4444-555555555555';
const PTS1 = (136 << 8) | 1;
const PTS2 = (136 << 8) | 2;

interface FakeProcess {
  stat: ProcStat;
  exe?: string;
}

/** A scripted /proc: processes by pid, with a hook that runs before each stat read. */
class FakeProc implements ProcReader {
  readonly processes = new Map<number, FakeProcess>();
  bootId = BOOT;
  beforeRead: (pid: number, reads: number) => void = () => {};
  readonly reads: number[] = [];

  add(pid: number, fields: Partial<Omit<ProcStat, 'pid'>> & { exe?: string } = {}): FakeProc {
    const { exe, ...stat } = fields;
    this.processes.set(pid, {
      stat: {
        pid,
        comm: 'proc',
        state: 'S',
        ppid: 1,
        pgrp: pid,
        session: pid,
        ttyNr: 0,
        tpgid: -1,
        startTime: String(1000 + pid),
        ...stat,
      },
      ...(exe === undefined ? {} : { exe }),
    });
    return this;
  }

  update(pid: number, fields: Partial<ProcStat>): void {
    const entry = this.processes.get(pid);
    if (entry) entry.stat = { ...entry.stat, ...fields };
  }

  async readStat(pid: number): Promise<ProcStat | undefined> {
    this.beforeRead(pid, this.reads.filter((read) => read === pid).length);
    this.reads.push(pid);
    return this.processes.get(pid)?.stat;
  }

  async readExecutable(pid: number): Promise<string | undefined> {
    return this.processes.get(pid)?.exe;
  }

  async readBootId(): Promise<string> {
    return this.bootId;
  }
}

/** A peer identity as identifySocketPeer would give it for a fake process. */
function peerOf(proc: FakeProc, pid: number, uid = 1000): PeerIdentity {
  const entry = proc.processes.get(pid);
  if (!entry) throw new Error(`no fake process ${pid}`);
  return { pid, uid, gid: uid, startTime: entry.stat.startTime, source: 'so_peercred' };
}

/**
 * A terminal: emulator 50 → leader shell 100 (session 100 on PTS1) → children.
 */
function terminal(proc: FakeProc, base: number, tty: number): FakeProc {
  return proc
    .add(base - 50, { comm: 'gnome-terminal-', exe: '/usr/libexec/gnome-terminal-server' })
    .add(base, { comm: 'bash', exe: '/usr/bin/bash', ppid: base - 50, session: base, ttyNr: tty })
    .add(base + 1, { comm: 'node', exe: '/usr/bin/node', ppid: base, session: base, ttyNr: tty })
    .add(base + 2, { comm: 'bash', exe: '/usr/bin/bash', ppid: base, session: base, ttyNr: tty })
    .add(base + 3, {
      comm: 'node',
      exe: '/usr/bin/node',
      ppid: base + 2,
      session: base,
      ttyNr: tty,
    });
}

async function derive(proc: FakeProc, peer: PeerIdentity) {
  return createLinuxCredentialProvider({ proc }).derive(peer);
}

describe('terminal scope', () => {
  it('gives every process of one terminal session the same credential', async () => {
    const proc = terminal(new FakeProc(), 100, PTS1);
    const direct = await derive(proc, peerOf(proc, 101));
    const subshellChild = await derive(proc, peerOf(proc, 103));
    const leader = await derive(proc, peerOf(proc, 100));
    expect(direct.scope).toBe('terminal');
    expect(direct.id).toMatch(/^tty:[0-9a-f]{32}$/);
    expect(subshellChild.id).toBe(direct.id);
    expect(leader.id).toBe(direct.id);
    expect(direct.process).toMatchObject({ host: 'GNOME Terminal', program: 'node', pid: 101 });
  });

  it('separates terminals, reused ttys and session ids, reboots and users', async () => {
    const proc = terminal(terminal(new FakeProc(), 100, PTS1), 200, PTS2);
    const one = await derive(proc, peerOf(proc, 101));
    const two = await derive(proc, peerOf(proc, 201));
    expect(two.id).not.toBe(one.id);

    // The same pty and the same session id, but a new leader (start time differs): a new window
    // that happens to reuse both numbers must not inherit the old grant.
    const reused = terminal(new FakeProc(), 100, PTS1);
    reused.update(100, { startTime: '999999' });
    expect((await derive(reused, peerOf(reused, 101))).id).not.toBe(one.id);

    const rebooted = terminal(new FakeProc(), 100, PTS1);
    rebooted.bootId = '99999999-2222-3333-4444-555555555555';
    expect((await derive(rebooted, peerOf(rebooted, 101))).id).not.toBe(one.id);

    expect((await derive(proc, peerOf(proc, 101, 1001))).id).not.toBe(one.id);
  });

  it('keeps the raw fields out of the id', async () => {
    const proc = terminal(new FakeProc(), 100, PTS1);
    const { id } = await derive(proc, peerOf(proc, 101));
    for (const raw of [BOOT, '1100', String(PTS1)]) expect(id).not.toContain(raw);
  });

  it('narrows to the process scope when the session leader is gone', async () => {
    const proc = terminal(new FakeProc(), 100, PTS1);
    const terminalId = (await derive(proc, peerOf(proc, 103))).id;
    proc.processes.delete(100);
    const session = await deriveLinuxSession(peerOf(proc, 103), { proc });
    expect(session).toMatchObject({ scope: 'process', basis: 'invoking-parent', anchorPid: 102 });
    expect(session.note).toMatch(/session leader 100 of \/dev\/pts\/1 could not be verified/);
    expect(session.id).not.toBe(terminalId);
    // Two processes of that session with different parents no longer share anything.
    const sibling = await deriveLinuxSession(peerOf(proc, 101), { proc });
    expect(sibling.id).not.toBe(session.id);
  });

  it('narrows when the leader pid now belongs to a process of another session or tty', async () => {
    const proc = terminal(new FakeProc(), 100, PTS1);
    proc.update(100, { session: 7 });
    expect((await deriveLinuxSession(peerOf(proc, 101), { proc })).scope).toBe('process');
    const other = terminal(new FakeProc(), 100, PTS1);
    other.update(100, { ttyNr: PTS2 });
    expect((await deriveLinuxSession(peerOf(other, 101), { proc: other })).scope).toBe('process');
    const zombie = terminal(new FakeProc(), 100, PTS1);
    zombie.update(100, { state: 'Z' });
    expect((await deriveLinuxSession(peerOf(zombie, 101), { proc: zombie })).scope).toBe('process');
  });

  it('fails closed when the peer leaves its terminal mid-derivation (leader exit hangs up the tty)', async () => {
    const proc = terminal(new FakeProc(), 100, PTS1);
    proc.beforeRead = (pid, reads) => {
      if (pid === 101 && reads === 1) proc.update(101, { ttyNr: 0 });
    };
    const error = await rejection(derive(proc, peerOf(proc, 101)));
    expect(error.code).toBe('ERR_PEER_UNKNOWN');
    expect(error.message).toMatch(/left its terminal session/);
  });
});

describe('process scope (no controlling terminal)', () => {
  function tree(): FakeProc {
    return new FakeProc()
      .add(10, { comm: 'code', exe: '/usr/share/code/code' })
      .add(20, { comm: 'bash', exe: '/usr/bin/bash', ppid: 10 })
      .add(21, { comm: 'node', exe: '/usr/bin/node', ppid: 20, session: 5 })
      .add(22, { comm: 'node', exe: '/usr/bin/node', ppid: 20, session: 5 })
      .add(30, { comm: 'bash', exe: '/usr/bin/bash', ppid: 10 })
      .add(31, { comm: 'node', exe: '/usr/bin/node', ppid: 30, session: 5 });
  }

  it('keys on the invoking parent: same parent shares, another parent does not', async () => {
    const proc = tree();
    const a = await derive(proc, peerOf(proc, 21));
    const b = await derive(proc, peerOf(proc, 22));
    const c = await derive(proc, peerOf(proc, 31));
    expect(a.scope).toBe('process');
    expect(a.id).toMatch(/^proc:[0-9a-f]{32}$/);
    expect(b.id).toBe(a.id);
    expect(c.id).not.toBe(a.id);
    expect(a.process.host).toBe('Visual Studio Code');
  });

  it('does not match a later parent that reuses the pid', async () => {
    const proc = tree();
    const before = await derive(proc, peerOf(proc, 21));
    proc.update(20, { startTime: '777777' });
    expect((await derive(proc, peerOf(proc, 21))).id).not.toBe(before.id);
  });

  it('never keys on init: an orphan gets a credential of its own', async () => {
    const proc = new FakeProc()
      .add(40, { comm: 'node', exe: '/usr/bin/node', ppid: 1 })
      .add(41, { comm: 'node', exe: '/usr/bin/node', ppid: 1 });
    const a = await deriveLinuxSession(peerOf(proc, 40), { proc });
    const b = await deriveLinuxSession(peerOf(proc, 41), { proc });
    expect(a).toMatchObject({ scope: 'process', basis: 'self', anchorPid: 40 });
    expect(a.note).toMatch(/no invoking parent/);
    expect(b.id).not.toBe(a.id);
  });

  it('keys on the process itself when its parent is already gone', async () => {
    const proc = tree();
    proc.processes.delete(20);
    const session = await deriveLinuxSession(peerOf(proc, 21), { proc });
    expect(session).toMatchObject({ basis: 'self', anchorPid: 21 });
    expect(session.note).toMatch(/invoking parent 20 exited/);
  });

  it('fails closed when the peer is re-parented while its parent is read', async () => {
    const proc = tree();
    proc.beforeRead = (pid) => {
      if (pid === 20) proc.update(21, { ppid: 1 });
    };
    const error = await rejection(derive(proc, peerOf(proc, 21)));
    expect(error.code).toBe('ERR_PEER_UNKNOWN');
    expect(error.message).toMatch(/lost its parent/);
  });
});

describe('failing closed (polkit CVE-2021-3560)', () => {
  it('refuses a peer that is gone, replaced, or a zombie', async () => {
    const proc = terminal(new FakeProc(), 100, PTS1);
    const peer = peerOf(proc, 101);
    proc.update(101, { state: 'Z' });
    expect((await rejection(derive(proc, peer))).code).toBe('ERR_PEER_UNKNOWN');
    proc.update(101, { state: 'S', startTime: '5' });
    const replaced = await rejection(derive(proc, peer));
    expect(replaced.code).toBe('ERR_PEER_UNKNOWN');
    expect(replaced.message).toMatch(/pid now belongs to another process/);
    proc.processes.delete(101);
    expect((await rejection(derive(proc, peer))).message).toMatch(/exited/);
  });

  it('refuses a peer that vanishes between the first and the confirming read', async () => {
    const proc = terminal(new FakeProc(), 100, PTS1);
    proc.beforeRead = (pid, reads) => {
      if (pid === 101 && reads === 1) proc.processes.delete(101);
    };
    const error = await rejection(derive(proc, peerOf(proc, 101)));
    expect(error).toBeInstanceOf(PeerError);
    expect(error.code).toBe('ERR_PEER_UNKNOWN');
  });

  it('refuses identities without pid, start time or uid', async () => {
    const proc = terminal(new FakeProc(), 100, PTS1);
    const full = peerOf(proc, 101);
    for (const peer of [
      { ...full, pid: undefined },
      { ...full, startTime: undefined },
      { ...full, uid: undefined },
    ]) {
      expect((await rejection(derive(proc, peer))).code).toBe('ERR_PEER_UNKNOWN');
    }
  });

  it('turns an unexpected /proc failure into ERR_PEER_UNKNOWN with the cause', async () => {
    const proc = terminal(new FakeProc(), 100, PTS1);
    const failure = new Error('EIO');
    proc.readBootId = async () => {
      throw failure;
    };
    const error = await rejection(derive(proc, peerOf(proc, 101)));
    expect(error.code).toBe('ERR_PEER_UNKNOWN');
    expect(error.cause).toBe(failure);
  });

  it('honours an aborted signal', async () => {
    const proc = terminal(new FakeProc(), 100, PTS1);
    const provider = createLinuxCredentialProvider({ proc });
    const error = await rejection(
      provider.derive(peerOf(proc, 101), { signal: AbortSignal.abort() }),
    );
    expect(error.code).toBe('ERR_ABORTED');
  });
});

describe.skipIf(process.platform !== 'linux')('with real processes (Linux only)', () => {
  let bindings: LinuxBindings;
  let server: net.Server;
  let path: string;

  beforeAll(async () => {
    bindings = await loadLinuxBindings();
    path = `/tmp/bk-cred-${process.pid}.sock`;
    server = net.createServer();
    await new Promise<void>((resolve) => server.listen(path, resolve));
  });

  afterAll(async () => {
    await new Promise((resolve) => server.close(resolve));
  });

  async function selfPeer(
    using: LinuxBindings,
  ): Promise<{ peer: PeerIdentity; socket: net.Socket }> {
    const socket = net.connect(path);
    await new Promise((resolve) => socket.once('connect', resolve));
    return { peer: identifySocketPeer(using, socketFd(socket)), socket };
  }

  it('derives for this process what describeOwnSession previews', async () => {
    const { peer, socket } = await selfPeer(bindings);
    try {
      const credential = await createLinuxCredentialProvider({ bindings }).derive(peer);
      const own = await describeOwnSession();
      expect(own.credential.id).toBe(credential.id);
      expect(own.credential.scope).toBe(credential.scope);
      expect(own.session.pid).toBe(process.pid);
      expect(credential.process.pid).toBe(process.pid);
    } finally {
      releasePeer(bindings, peer);
      socket.destroy();
    }
  });

  it('fails closed when the pidfd says the peer exited during derivation', async () => {
    let alive = true;
    const scripted: LinuxBindings = {
      ...bindings,
      getPeerPidfd: () => 12345,
      pidfdIsAlive: () => alive,
      closeFd: () => {},
    };
    const { peer, socket } = await selfPeer(scripted);
    try {
      alive = false;
      const error = await rejection(
        createLinuxCredentialProvider({ bindings: scripted }).derive(peer),
      );
      expect(error.code).toBe('ERR_PEER_UNKNOWN');
      expect(error.message).toMatch(/exited while its session was derived/);
    } finally {
      releasePeer(scripted, peer);
      socket.destroy();
    }
  });
});

describe('host names are cached per session', () => {
  it('walks the process tree once per session, not once per connection', async () => {
    const { createLinuxCredentialProvider } = await import(
      '../../../src/platform/linux/credentials.js'
    );
    const { systemProc } = await import('../../../src/platform/linux/proc.js');
    const { spawn } = await import('node:child_process');
    let statReads = 0;
    const counting = {
      ...systemProc,
      readStat: (pid: number) => {
        statReads++;
        return systemProc.readStat(pid);
      },
    };
    const provider = createLinuxCredentialProvider({ proc: counting });
    const child = spawn('sleep', ['30'], { stdio: 'ignore' });
    try {
      await new Promise((resolve) => setTimeout(resolve, 50));
      const { readProcStat } = await import('../../../src/platform/linux/proc.js');
      const stat = await readProcStat(child.pid!);
      const peer = {
        pid: child.pid!,
        uid: process.getuid!(),
        startTime: stat!.startTime,
        source: 'test',
      };
      const first = await provider.derive(peer);
      const afterFirst = statReads;
      const second = await provider.derive(peer);
      const secondReads = statReads - afterFirst;
      expect(second).toEqual(first);
      // The second derivation re-reads what proves the session, but not the ancestors.
      expect(secondReads).toBeLessThan(afterFirst);
    } finally {
      child.kill('SIGKILL');
    }
  });
});
