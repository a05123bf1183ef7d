import { beforeEach, describe, expect, it } from 'vitest';
import { PeerError } from '../../../src/errors.js';
import { Win32Error } from '../../../src/platform/win32/bindings.js';
import {
  identifyPipePeer,
  identifySocketPeer,
  ownedProcessHandle,
  releasePeer,
  verifyPeer,
  verifyPeerSync,
} from '../../../src/platform/win32/identity.js';
import type { PeerIdentity } from '../../../src/transport/transport.js';
import { BASE_TIME, FakeWin32, IMAGES, USER_SID } from './fake-bindings.js';

function peerError(run: () => unknown): PeerError {
  try {
    run();
  } catch (error) {
    expect(error).toBeInstanceOf(PeerError);
    return error as PeerError;
  }
  throw new Error('expected a PeerError');
}

/** FILETIME of a `Date.now()` value. */
function fileTime(ms: number): bigint {
  return (BigInt(ms) + 11_644_473_600_000n) * 10_000n;
}

let fake: FakeWin32;

beforeEach(() => {
  fake = new FakeWin32();
  fake.spawn({ pid: 100, image: IMAGES.node }); // this process: the server
  fake.spawn({ pid: 200, image: IMAGES.pwsh });
  fake.spawn({ pid: 300, parent: 200, image: IMAGES.cli });
});

describe('identifyPipePeer', () => {
  it('names the process from Windows: pid, user SID, creation time, image, source', () => {
    const peer = identifyPipePeer(fake, 300);
    expect(peer).toEqual({
      pid: 300,
      sid: USER_SID,
      startTime: String(fake.processes.get(300)!.created),
      executable: IMAGES.cli,
      source: 'named_pipe',
    });
    expect(Object.isFrozen(peer)).toBe(true);
    // It holds one handle to that process, like a pidfd.
    expect(fake.openHandles()).toBe(1);
    expect(fake.handleIsFor(ownedProcessHandle(fake, peer)!, 300)).toBe(true);
  });

  it('keeps the pid from reuse while it holds the handle, and says the process exited', () => {
    const peer = identifyPipePeer(fake, 300);
    fake.exit(300);
    // Held by our handle: Windows does not give the pid away.
    expect(() => fake.spawn({ pid: 300, image: IMAGES.node })).toThrow(/in use/);
    expect(peerError(() => verifyPeerSync(fake, peer)).code).toBe('ERR_PEER_CHANGED');
    releasePeer(fake, peer);
    expect(fake.processes.has(300)).toBe(false);
  });

  it('refuses pids that are no process ids', () => {
    for (const pid of [0, -1, 1.5, Number.NaN, 2 ** 32]) {
      expect(peerError(() => identifyPipePeer(fake, pid)).code).toBe('ERR_PEER_UNKNOWN');
    }
    expect(fake.count('openProcess')).toBe(0);
  });

  it('fails closed when the process is gone or cannot be opened', () => {
    const error = peerError(() => identifyPipePeer(fake, 999));
    expect(error.code).toBe('ERR_PEER_UNKNOWN');
    expect(error.message).toMatch(/pid 999/);
    fake.failing.set('openProcess', new Win32Error('OpenProcess', 5));
    const denied = peerError(() => identifyPipePeer(fake, 300));
    expect(denied.code).toBe('ERR_PEER_UNKNOWN');
    expect(denied.cause).toBeInstanceOf(Win32Error);
  });

  it('fails closed, closing its handle, when the process exits during the reads', () => {
    fake.before = (method) => {
      if (method === 'processImagePath') fake.exit(300);
    };
    expect(peerError(() => identifyPipePeer(fake, 300)).code).toBe('ERR_PEER_UNKNOWN');
    expect(fake.openHandles()).toBe(0);
  });

  it('fails closed, closing its handle, when the creation time cannot be read', () => {
    fake.failing.set('processCreationTime', new Win32Error('GetProcessTimes', 5));
    const error = peerError(() => identifyPipePeer(fake, 300));
    expect(error.code).toBe('ERR_PEER_UNKNOWN');
    expect(error.cause).toBeInstanceOf(Win32Error);
    expect(fake.openHandles()).toBe(0);
  });

  it('leaves out the SID when the token cannot be read (policies then refuse)', () => {
    fake.spawn({ pid: 400, image: IMAGES.cli, sid: null });
    const peer = identifyPipePeer(fake, 400);
    expect(peer.sid).toBeUndefined();
    expect(peer.startTime).toBeDefined();
  });

  it('leaves out the executable when Windows does not report it', () => {
    fake.spawn({ pid: 400 });
    expect(identifyPipePeer(fake, 400).executable).toBeUndefined();
  });

  it('refuses a process created after the connection (its pid was reused)', () => {
    const connectedAt = Date.UTC(2026, 0, 1);
    fake.spawn({ pid: 500, image: IMAGES.cli, created: fileTime(connectedAt) + 50_000n });
    const error = peerError(() => identifyPipePeer(fake, 500, { connectedAt }));
    expect(error.code).toBe('ERR_PEER_UNKNOWN');
    expect(error.message).toMatch(/reused/);
    expect(fake.openHandles()).toBe(0);
    // Created before the connection: fine.
    fake.spawn({ pid: 501, image: IMAGES.cli, created: fileTime(connectedAt) - 10_000n });
    expect(identifyPipePeer(fake, 501, { connectedAt }).pid).toBe(501);
  });
});

describe('releasePeer', () => {
  it('closes the handle once; a second release and a copy do nothing', () => {
    const peer = identifyPipePeer(fake, 300);
    releasePeer(fake, { ...peer });
    expect(fake.openHandles()).toBe(1);
    releasePeer(fake, peer);
    expect(fake.openHandles()).toBe(0);
    expect(fake.count('closeHandle')).toBe(1);
    releasePeer(fake, peer);
    expect(fake.count('closeHandle')).toBe(1);
  });

  it('never closes a handle value Windows reused for another identity', () => {
    const first = identifyPipePeer(fake, 300);
    const handle = ownedProcessHandle(fake, first);
    releasePeer(fake, first);
    const second = identifyPipePeer(fake, 200);
    // The fake, like Windows, hands out the freed value again.
    expect(ownedProcessHandle(fake, second)).toBe(handle);
    releasePeer(fake, first);
    expect(fake.handleIsFor(handle!, 200)).toBe(true);
    expect(() => verifyPeerSync(fake, second)).not.toThrow();
  });

  it('survives a failing CloseHandle', () => {
    const peer = identifyPipePeer(fake, 300);
    fake.failing.set('closeHandle', new Win32Error('CloseHandle', 6));
    expect(() => releasePeer(fake, peer)).not.toThrow();
    expect(ownedProcessHandle(fake, peer)).toBeUndefined();
  });
});

describe('identifySocketPeer', () => {
  it('names the client on a server pipe (the client pid is not ours)', () => {
    fake.addPipe(7, { client: 300, server: 100 });
    expect(identifySocketPeer(fake, 7).pid).toBe(300);
    expect(fake.count('pipeServerProcessId')).toBe(0);
  });

  it('names the server on a client pipe (the client pid is ours)', () => {
    fake.selfPid = 300;
    fake.addPipe(8, { client: 300, server: 200 });
    expect(identifySocketPeer(fake, 8).pid).toBe(200);
  });

  it('fails closed when the fd is no pipe or Windows does not answer', () => {
    expect(peerError(() => identifySocketPeer(fake, -1)).code).toBe('ERR_PEER_UNKNOWN');
    expect(peerError(() => identifySocketPeer(fake, 9)).code).toBe('ERR_PEER_UNKNOWN');
    fake.addPipe(9, { client: 300, server: 100 });
    fake.failing.set('pipeClientProcessId', new Win32Error('GetNamedPipeClientProcessId', 1));
    const error = peerError(() => identifySocketPeer(fake, 9));
    expect(error.code).toBe('ERR_PEER_UNKNOWN');
    expect(error.cause).toBeInstanceOf(Win32Error);
  });
});

describe('verifyPeer', () => {
  it('passes while the process runs, through the handle it holds', async () => {
    const peer = identifyPipePeer(fake, 300);
    const opens = fake.count('openProcess');
    await expect(verifyPeer(fake, peer)).resolves.toBeUndefined();
    expect(fake.count('openProcess')).toBe(opens);
  });

  it('says ERR_PEER_CHANGED once the process exited', async () => {
    const peer = identifyPipePeer(fake, 300);
    fake.exit(300);
    await expect(verifyPeer(fake, peer)).rejects.toMatchObject({ code: 'ERR_PEER_CHANGED' });
  });

  it('checks a copy by opening the pid: another process with the pid is ERR_PEER_CHANGED', () => {
    const peer = identifyPipePeer(fake, 300);
    const copy: PeerIdentity = { ...peer };
    expect(() => verifyPeerSync(fake, copy)).not.toThrow();
    releasePeer(fake, peer);
    fake.exit(300);
    expect(peerError(() => verifyPeerSync(fake, copy)).message).toMatch(/has exited/);
    fake.spawn({ pid: 300, image: IMAGES.cli });
    const error = peerError(() => verifyPeerSync(fake, copy));
    expect(error.code).toBe('ERR_PEER_CHANGED');
    expect(error.message).toMatch(/another process/);
    // The handle it opened for the check is closed again.
    expect(fake.openHandles()).toBe(0);
  });

  it('says ERR_PEER_CHANGED when the image differs', () => {
    const peer = identifyPipePeer(fake, 300);
    fake.processes.get(300)!.image = IMAGES.node;
    expect(peerError(() => verifyPeerSync(fake, peer)).code).toBe('ERR_PEER_CHANGED');
    fake.processes.get(300)!.image = undefined;
    expect(peerError(() => verifyPeerSync(fake, peer)).code).toBe('ERR_PEER_CHANGED');
  });

  it('says ERR_PEER_CHANGED when the creation time differs', () => {
    const peer = identifyPipePeer(fake, 300);
    fake.processes.get(300)!.created = BASE_TIME + 1n;
    expect(peerError(() => verifyPeerSync(fake, peer)).code).toBe('ERR_PEER_CHANGED');
  });

  it('fails closed with ERR_PEER_UNKNOWN when the identity is incomplete or Windows fails', () => {
    expect(peerError(() => verifyPeerSync(fake, { pid: 300, source: 'x' })).code).toBe(
      'ERR_PEER_UNKNOWN',
    );
    expect(
      peerError(() => verifyPeerSync(fake, { pid: 300, startTime: 'soon', source: 'x' })).code,
    ).toBe('ERR_PEER_UNKNOWN');
    const peer = identifyPipePeer(fake, 300);
    fake.failing.set('processCreationTime', new Win32Error('GetProcessTimes', 6));
    const error = peerError(() => verifyPeerSync(fake, peer));
    expect(error.code).toBe('ERR_PEER_UNKNOWN');
    expect(error.cause).toBeInstanceOf(Win32Error);
  });
});
