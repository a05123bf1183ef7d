/**
 * The macOS session credential (src/platform/darwin/credentials.ts), over a fake process table
 * whose answers travel as `kinfo_proc` bytes through the real parser (see fake-darwin.ts). What
 * macOS itself reports (sysctl, getsid, proc_pidpath) is not exercised: that needs a Mac.
 */

import { beforeEach, describe, expect, it } from 'vitest';
import { PeerError } from '../../../src/errors.js';
import {
  createDarwinCredentialProvider,
  deriveDarwinSession,
} from '../../../src/platform/darwin/credentials.js';
import type { SessionCredentialProvider } from '../../../src/session/credentials.js';
import type { PeerIdentity } from '../../../src/transport/transport.js';
import { FakeDarwin, PATHS } from './fake-darwin.js';

const TTY1 = 0x1000_0003; // /dev/ttys003
const TTY2 = 0x1000_0004;

let fake: FakeDarwin;
let provider: SessionCredentialProvider;

/** The identity the socket layer would report for `pid` (LOCAL_PEERPID + LOCAL_PEERCRED). */
function peerOf(pid: number): PeerIdentity {
  const proc = fake.get(pid);
  return { pid, uid: proc.uid, startTime: proc.start.toString(), source: 'local_peerpid' };
}

function cli(pid: number, parent: number): PeerIdentity {
  fake.spawn({ pid, parent, path: PATHS.cli });
  return peerOf(pid);
}

async function unknownError(promise: Promise<unknown>): Promise<PeerError> {
  const error = await promise.then(
    () => {
      throw new Error('expected a rejection');
    },
    (caught: unknown) => caught,
  );
  expect(error).toBeInstanceOf(PeerError);
  expect((error as PeerError).code).toBe('ERR_PEER_UNKNOWN');
  return error as PeerError;
}

beforeEach(() => {
  fake = new FakeDarwin();
  provider = createDarwinCredentialProvider({ bindings: fake });
  fake.spawn({ pid: 300, path: PATHS.terminal }); // Terminal.app, child of launchd
  fake.spawn({ pid: 400, parent: 300, path: PATHS.login, setsid: true, tty: TTY1 }); // window 1
  fake.spawn({ pid: 401, parent: 400, path: PATHS.zsh });
  fake.spawn({ pid: 500, parent: 300, path: PATHS.login, setsid: true, tty: TTY2 }); // window 2
  fake.spawn({ pid: 501, parent: 500, path: PATHS.zsh });
});

describe('the macOS session credential, with a terminal', () => {
  it('is shared by every process of one terminal session, subshells included', async () => {
    const first = await provider.derive(cli(1000, 401));
    fake.spawn({ pid: 402, parent: 401, path: PATHS.bash }); // a subshell
    fake.spawn({ pid: 403, parent: 402, path: PATHS.make });
    const nested = await provider.derive(cli(1001, 403));
    expect(first.id).toMatch(/^tty:[0-9a-f]{32}$/);
    expect(first.scope).toBe('terminal');
    expect(nested.id).toBe(first.id);
    expect(first.process).toEqual({
      host: 'Terminal',
      program: 'mycli',
      pid: 1000,
      executable: PATHS.cli,
    });
    expect(deriveDarwinSession(fake, peerOf(1001))).toMatchObject({
      basis: 'terminal',
      sessionId: 400,
      tdev: TTY1,
    });
  });

  it('differs for another window or tab', async () => {
    const one = await provider.derive(cli(1000, 401));
    const two = await provider.derive(cli(1001, 501));
    expect(two.scope).toBe('terminal');
    expect(two.id).not.toBe(one.id);
  });

  it('differs after setsid: the process leaves the terminal and is keyed on its parent', async () => {
    const inTerminal = await provider.derive(cli(1000, 401));
    fake.spawn({ pid: 1001, parent: 401, path: PATHS.cli, setsid: true });
    const detached = await provider.derive(peerOf(1001));
    expect(detached.scope).toBe('process');
    expect(detached.id).not.toBe(inTerminal.id);
    expect(deriveDarwinSession(fake, peerOf(1001))).toMatchObject({
      basis: 'invoking-parent',
      anchorPid: 401,
    });
  });

  it('does not match a reused tty and session id whose leader started later', async () => {
    const old = await provider.derive(cli(1000, 401));
    fake.exit(1000);
    fake.exit(401);
    fake.exit(400);
    // A new window gets the same pty and, by chance, the same leader pid.
    fake.spawn({ pid: 400, parent: 300, path: PATHS.login, setsid: true, tty: TTY1 });
    fake.spawn({ pid: 401, parent: 400, path: PATHS.zsh });
    const reused = await provider.derive(cli(1000, 401));
    expect(reused.scope).toBe('terminal');
    expect(reused.id).not.toBe(old.id);
  });

  it('narrows to the process scope when the leader is gone', async () => {
    const peer = cli(1000, 401);
    fake.exit(400);
    const session = deriveDarwinSession(fake, peer);
    expect(session).toMatchObject({ scope: 'process', basis: 'invoking-parent', anchorPid: 401 });
    expect(session.note).toMatch(/leader 400 is gone/);
  });

  it('narrows when the leader pid now belongs to a younger process', async () => {
    const peer = cli(1000, 401);
    // The leader exits; its pid goes to a process started after the client that (impossibly on a
    // sane kernel, but a layout or race could make it look so) shows the same session and tty.
    fake.exit(400);
    fake.spawn({ pid: 400, parent: 300, path: PATHS.login, setsid: true, tty: TTY1 });
    fake.get(1000).sid = 400;
    const session = deriveDarwinSession(fake, peer);
    expect(session).toMatchObject({ scope: 'process', anchorPid: 401 });
    expect(session.note).toMatch(/started after the client/);
  });

  it('narrows when the leader has another terminal, or no longer leads the session', async () => {
    const peer = cli(1000, 401);
    fake.get(400).tdev = TTY2;
    expect(deriveDarwinSession(fake, peer).note).toMatch(/another terminal/);
    fake.get(400).tdev = TTY1;
    fake.get(400).sid = 300;
    expect(deriveDarwinSession(fake, peer).note).toMatch(/no longer leads/);
  });

  it('takes the terminal from the kernel record of the peer, not anything it says', async () => {
    const peer = cli(1000, 401);
    const claimed = { ...peer, tty: '/dev/ttys004' } as PeerIdentity;
    expect((await provider.derive(claimed)).id).toBe((await provider.derive(peer)).id);
  });

  it('differs for another uid and after a reboot', async () => {
    const peer = cli(1000, 401);
    const id = (await provider.derive(peer)).id;
    expect((await provider.derive({ ...peer, uid: 502 })).id).not.toBe(id);
    fake.boot = '00000000-1111-2222-3333-444444444444';
    expect((await provider.derive(peer)).id).not.toBe(id);
  });

  it('names the app bundle that hosts the session (iTerm through its server)', async () => {
    fake.spawn({ pid: 600, path: PATHS.iterm });
    fake.spawn({ pid: 601, parent: 600, path: PATHS.itermServer });
    fake.spawn({ pid: 602, parent: 601, path: PATHS.login, setsid: true, tty: 0x1000_0009 });
    fake.spawn({ pid: 603, parent: 602, path: PATHS.zsh });
    expect((await provider.derive(cli(1000, 603))).process.host).toBe('iTerm');
  });

  it('names an SSH session', async () => {
    fake.spawn({ pid: 700, path: PATHS.sshd });
    fake.spawn({ pid: 701, parent: 700, path: PATHS.zsh, setsid: true, tty: 0x1000_000a });
    expect((await provider.derive(cli(1000, 701))).process.host).toBe('SSH session');
  });
});

describe('the macOS session credential, without a terminal', () => {
  beforeEach(() => {
    fake.spawn({ pid: 800, path: PATHS.code }); // an editor started from the Dock
    fake.spawn({ pid: 801, parent: 800, path: PATHS.zsh, setsid: true }); // its task shell
    fake.spawn({ pid: 802, parent: 800, path: PATHS.zsh, setsid: true }); // another task
  });

  it('is keyed on the invoking parent: shared by its tools, not by another parent', async () => {
    const one = await provider.derive(cli(1000, 801));
    const two = await provider.derive(cli(1001, 801));
    const other = await provider.derive(cli(1002, 802));
    expect(one.scope).toBe('process');
    expect(one.id).toMatch(/^proc:[0-9a-f]{32}$/);
    expect(two.id).toBe(one.id);
    expect(other.id).not.toBe(one.id);
    expect(one.process.host).toBe('Visual Studio Code');
  });

  it('does not match a parent pid reused by a later process', async () => {
    const old = await provider.derive(cli(1000, 801));
    fake.exit(1000);
    fake.exit(801);
    fake.spawn({ pid: 801, parent: 800, path: PATHS.zsh, setsid: true });
    expect((await provider.derive(cli(1000, 801))).id).not.toBe(old.id);
  });

  it('keys on the peer itself when its parent pid belongs to a younger process', async () => {
    const peer = cli(1000, 801);
    fake.procs.delete(801); // exited without re-parenting being seen yet
    fake.spawn({ pid: 801, parent: 800, path: PATHS.zsh, setsid: true });
    const session = deriveDarwinSession(fake, peer);
    expect(session).toMatchObject({ basis: 'self', anchorPid: 1000 });
    expect(session.note).toMatch(/started after the client/);
  });

  it('keys on the peer itself under launchd, and when its parent is gone', async () => {
    const underLaunchd = cli(1000, 1);
    expect(deriveDarwinSession(fake, underLaunchd)).toMatchObject({ basis: 'self' });
    const other = cli(1001, 1);
    expect((await provider.derive(underLaunchd)).id).not.toBe((await provider.derive(other)).id);
    const orphan = cli(1002, 802);
    fake.procs.delete(802);
    expect(deriveDarwinSession(fake, orphan).note).toMatch(/parent 802 exited/);
  });
});

describe('the macOS session credential fails closed', () => {
  it('when the peer is gone, a zombie, or its pid was reused', async () => {
    const peer = cli(1000, 401);
    fake.exit(1000, true);
    await unknownError(provider.derive(peer));
    fake.exit(1000);
    await unknownError(provider.derive(peer));
    fake.spawn({ pid: 1000, parent: 401, path: PATHS.cli });
    expect((await unknownError(provider.derive(peer))).message).toMatch(/another process/);
  });

  it('when the peer vanishes while its session leader is read', async () => {
    const peer = cli(1000, 401);
    fake.onKinfo = (pid) => {
      if (pid === 400) fake.exit(1000);
    };
    await unknownError(provider.derive(peer));
  });

  it('when the peer changes session, or is re-parented, mid-derivation', async () => {
    const peer = cli(1000, 401);
    fake.onKinfo = (pid) => {
      if (pid === 400) fake.get(1000).sid = 1000;
    };
    expect((await unknownError(provider.derive(peer))).message).toMatch(/terminal session/);

    fake.spawn({ pid: 1001, parent: 401, path: PATHS.cli, setsid: true });
    fake.onKinfo = (pid) => {
      if (pid === 401) fake.get(1001).ppid = 1;
    };
    expect((await unknownError(provider.derive(peerOf(1001)))).message).toMatch(/parent/);
  });

  it('when the identity lacks a pid, uid or start time', async () => {
    const peer = cli(1000, 401);
    const { uid: _uid, ...noUid } = peer;
    const { startTime: _start, ...noStart } = peer;
    await unknownError(provider.derive(noUid));
    await unknownError(provider.derive(noStart));
    await unknownError(provider.derive({ source: 'memory' }));
  });

  it('when macOS reports no boot session UUID', async () => {
    const peer = cli(1000, 401);
    fake.boot = undefined;
    expect((await unknownError(provider.derive(peer))).message).toMatch(/bootsessionuuid/);
  });

  it('when the record names another pid (a layout this code does not know)', async () => {
    const peer = cli(1000, 401);
    const real = fake.kinfo.bind(fake);
    fake.kinfo = (pid) => {
      const info = real(pid);
      return info && { ...info, pid: pid + 1 };
    };
    const error = await unknownError(provider.derive(peer));
    expect((error.cause as { code?: string }).code).toBe('ERR_PLATFORM');
  });

  it('when reading the peer throws', async () => {
    const peer = cli(1000, 401);
    fake.kinfo = () => {
      throw new Error('sysctl: EPERM');
    };
    await unknownError(provider.derive(peer));
  });

  it('and honours an aborted signal', async () => {
    const peer = cli(1000, 401);
    const controller = new AbortController();
    controller.abort();
    await expect(provider.derive(peer, { signal: controller.signal })).rejects.toMatchObject({
      code: 'ERR_ABORTED',
    });
  });
});
