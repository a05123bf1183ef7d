import { describe, expect, it } from 'vitest';
import {
  identifySocketPeer,
  LOCAL_PEERPID_SOURCE,
  peerAuditToken,
  releasePeer,
  verifyPeer,
  verifyPeerSync,
} from '../../../src/platform/darwin/identity.js';
import { auditToken, FakeDarwinBindings, PATHS } from './fake-darwin.js';

function setup() {
  const fake = new FakeDarwinBindings();
  fake.spawn({ pid: 100, path: PATHS.zsh, setsid: true, tty: 0x1000005 });
  const cli = fake.spawn({ pid: 200, parent: 100, path: PATHS.cli, uid: 502 });
  fake.connect(7, 200);
  return { fake, cli };
}

describe('identifySocketPeer (macOS)', () => {
  it('reads pid, uid, start time and executable from the kernel, and keeps the audit token', () => {
    const { fake, cli } = setup();
    const peer = identifySocketPeer(fake, 7);
    expect(peer).toEqual({
      pid: 200,
      uid: 502,
      startTime: cli.start.toString(),
      executable: PATHS.cli,
      source: LOCAL_PEERPID_SOURCE,
    });
    expect(Object.isFrozen(peer)).toBe(true);
    expect(peerAuditToken(peer)).toEqual(auditToken(200));
    // A copy gets no token: the token belongs to the identity object, not to its fields.
    expect(peerAuditToken({ ...peer })).toBeUndefined();
    // Callers get a copy; changing it changes nothing.
    peerAuditToken(peer)?.fill(0);
    expect(peerAuditToken(peer)).toEqual(auditToken(200));
  });

  it('leaves the executable out when proc_pidpath does not answer', () => {
    const { fake } = setup();
    fake.executablePath = () => {
      throw new Error('EPERM');
    };
    const peer = identifySocketPeer(fake, 7);
    expect(peer.executable).toBeUndefined();
    expect(peer.pid).toBe(200);
  });

  it('refuses a bad fd and a socket the kernel says nothing about', () => {
    const { fake } = setup();
    expect(() => identifySocketPeer(fake, -1)).toThrow(
      expect.objectContaining({ code: 'ERR_PEER_UNKNOWN' }),
    );
    expect(() => identifySocketPeer(fake, 9)).toThrow(
      expect.objectContaining({ code: 'ERR_PEER_UNKNOWN', cause: expect.any(Error) }),
    );
  });

  it('refuses a pid of 0 and a token of the wrong size or naming another pid', () => {
    const { fake } = setup();
    fake.connect(8, 0, auditToken(0));
    expect(() => identifySocketPeer(fake, 8)).toThrow(
      expect.objectContaining({ code: 'ERR_PEER_UNKNOWN' }),
    );
    fake.connect(8, 200, Buffer.alloc(16));
    expect(() => identifySocketPeer(fake, 8)).toThrow(/audit token/);
    fake.connect(8, 200, auditToken(201));
    expect(() => identifySocketPeer(fake, 8)).toThrow(/names pid 201/);
  });

  it('refuses a peer that has exited or is a zombie', () => {
    const { fake } = setup();
    fake.exit(200, true);
    expect(() => identifySocketPeer(fake, 7)).toThrow(
      expect.objectContaining({ code: 'ERR_PEER_UNKNOWN' }),
    );
    fake.exit(200);
    expect(() => identifySocketPeer(fake, 7)).toThrow(/exited before/);
  });

  it('refuses a pid reused during identification (start time read again after the path)', () => {
    const { fake } = setup();
    fake.onPath = (pid) => {
      fake.onPath = undefined;
      fake.exit(pid);
      fake.spawn({ pid, path: PATHS.cli });
    };
    expect(() => identifySocketPeer(fake, 7)).toThrow(
      expect.objectContaining({
        code: 'ERR_PEER_UNKNOWN',
        message: expect.stringMatching(/reused/),
      }),
    );
  });

  it('refuses a peer that exits during identification', () => {
    const { fake } = setup();
    fake.onPath = (pid) => fake.exit(pid);
    expect(() => identifySocketPeer(fake, 7)).toThrow(
      expect.objectContaining({ code: 'ERR_PEER_UNKNOWN' }),
    );
  });

  it('refuses a process that started after the connection (connectedAt)', () => {
    const { fake, cli } = setup();
    const startedMs = Number(cli.start / 1000n);
    expect(() => identifySocketPeer(fake, 7, { connectedAt: startedMs - 5 })).toThrow(
      /started after/,
    );
    expect(identifySocketPeer(fake, 7, { connectedAt: startedMs }).pid).toBe(200);
  });

  it('refuses a kinfo_proc that answers for another pid, and wraps sysctl errors', () => {
    const { fake } = setup();
    const real = fake.kinfo.bind(fake);
    fake.kinfo = (pid) => {
      const info = real(pid);
      return info && { ...info, pid: pid + 1 };
    };
    expect(() => identifySocketPeer(fake, 7)).toThrow(/kinfo_proc differently/);
    fake.kinfo = () => {
      throw new Error('sysctl: EIO');
    };
    expect(() => identifySocketPeer(fake, 7)).toThrow(
      expect.objectContaining({ code: 'ERR_PEER_UNKNOWN', cause: expect.any(Error) }),
    );
  });
});

describe('verifyPeer (macOS)', () => {
  it('passes while the same process runs, and fails once it exits', async () => {
    const { fake } = setup();
    const peer = identifySocketPeer(fake, 7);
    await expect(verifyPeer(fake, peer)).resolves.toBeUndefined();
    // A copy is checked on its fields (macOS holds nothing per identity).
    expect(() => verifyPeerSync(fake, { ...peer })).not.toThrow();
    fake.exit(200, true);
    await expect(verifyPeer(fake, peer)).rejects.toMatchObject({ code: 'ERR_PEER_CHANGED' });
    fake.exit(200);
    await expect(verifyPeer(fake, peer)).rejects.toMatchObject({ code: 'ERR_PEER_CHANGED' });
  });

  it('fails when the pid now belongs to another process', () => {
    const { fake } = setup();
    const peer = identifySocketPeer(fake, 7);
    fake.exit(200);
    fake.spawn({ pid: 200, path: PATHS.cli });
    expect(() => verifyPeerSync(fake, peer)).toThrow(
      expect.objectContaining({
        code: 'ERR_PEER_CHANGED',
        message: expect.stringMatching(/another process/),
      }),
    );
  });

  it('fails when the process runs another executable (exec) or its path cannot be read', () => {
    const { fake } = setup();
    const peer = identifySocketPeer(fake, 7);
    const proc = fake.get(200);
    fake.procs.set(200, { ...proc, path: PATHS.bash });
    expect(() => verifyPeerSync(fake, peer)).toThrow(/runs another program/);
    fake.procs.set(200, { ...proc, path: undefined });
    expect(() => verifyPeerSync(fake, peer)).toThrow(/unreadable/);
  });

  it('catches a pid reused between the start-time check and the path read', () => {
    const { fake } = setup();
    const peer = identifySocketPeer(fake, 7);
    fake.onPath = (pid) => {
      fake.onPath = undefined;
      fake.exit(pid);
      fake.spawn({ pid, path: PATHS.cli });
    };
    expect(() => verifyPeerSync(fake, peer)).toThrow(
      expect.objectContaining({ code: 'ERR_PEER_CHANGED' }),
    );
  });

  it('refuses identities without pid or start time, and wraps errors as ERR_PEER_UNKNOWN', () => {
    const { fake } = setup();
    expect(() => verifyPeerSync(fake, { source: 'memory' })).toThrow(
      expect.objectContaining({ code: 'ERR_PEER_UNKNOWN' }),
    );
    expect(() => verifyPeerSync(fake, { pid: 200, startTime: 'soon', source: 'x' })).toThrow(
      expect.objectContaining({ code: 'ERR_PEER_UNKNOWN' }),
    );
    const peer = identifySocketPeer(fake, 7);
    fake.kinfo = () => {
      throw new Error('EIO');
    };
    expect(() => verifyPeerSync(fake, peer)).toThrow(
      expect.objectContaining({ code: 'ERR_PEER_UNKNOWN' }),
    );
  });

  it('releasePeer is a no-op and idempotent', () => {
    const { fake } = setup();
    const peer = identifySocketPeer(fake, 7);
    releasePeer(peer);
    releasePeer(peer);
    expect(() => verifyPeerSync(fake, peer)).not.toThrow();
  });
});
