import { closeSync, openSync, readFileSync, readlinkSync, realpathSync } from 'node:fs';
import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PeerError, PlatformError } from '../../../src/errors.js';
import {
  type LinuxBindings,
  loadLinuxBindings,
  type PeerCredentials,
} from '../../../src/platform/linux/bindings.js';
import {
  identifySocketPeer,
  releasePeer,
  verifyPeer,
  verifyPeerSync,
} from '../../../src/platform/linux/identity.js';
import { createLinuxPlatform } from '../../../src/platform/linux/index.js';
import type { PeerIdentity } from '../../../src/transport/transport.js';
import {
  CLIENT,
  EXEC_CLIENT,
  hasCommand,
  kernelHasPeerPidfd,
  type PeerServer,
  socketFd,
  spawnProcess,
  startPeerServer,
  startTimeOf,
} from '../../fixtures/linux/peer-server.js';

function peerError(run: () => unknown): PeerError {
  try {
    run();
  } catch (error) {
    expect(error).toBeInstanceOf(PeerError);
    return error as PeerError;
  }
  throw new Error('expected a PeerError');
}

async function until(condition: () => boolean, what: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

/** The pid an open pidfd of ours refers to, from the kernel's fdinfo. */
function pidOfPidfd(pidfd: number): number | undefined {
  const match = /^Pid:\s+(-?\d+)$/m.exec(readFileSync(`/proc/self/fdinfo/${pidfd}`, 'latin1'));
  return match ? Number(match[1]) : undefined;
}

const isLinux = process.platform === 'linux';
let bindings: LinuxBindings;
let server: PeerServer<void>;
const node = realpathSync(process.execPath);

beforeAll(async () => {
  if (!isLinux) return;
  bindings = await loadLinuxBindings();
  server = await startPeerServer(bindings, async () => {});
});

afterAll(async () => {
  await server?.close();
});

/** Starts a held client and returns it with the identity the server took at connect. */
async function heldClient(token: string) {
  const spawned = spawnProcess(process.execPath, [CLIENT, server.path, token, '--hold']);
  const connection = await server.connection(token);
  return { ...spawned, connection, peer: connection.peer };
}

describe.skipIf(!isLinux)('identifySocketPeer on real sockets (Linux only)', () => {
  it('names a spawned client: pid, uid, gid, start time, executable and a pidfd for it', async () => {
    const client = await heldClient('identify');
    try {
      const { peer } = client;
      expect(peer.source).toBe('so_peercred');
      expect(peer.pid).toBe(client.child.pid);
      expect(peer.uid).toBe(process.getuid?.());
      expect(peer.gid).toBe(process.getgid?.());
      expect(peer.startTime).toBe(startTimeOf(client.child.pid as number));
      expect(peer.executable).toBe(node);
      expect(Object.isFrozen(peer)).toBe(true);
      expect(peer.pidfd !== undefined).toBe(kernelHasPeerPidfd);
      if (peer.pidfd !== undefined) {
        // The pidfd refers to the client process itself.
        expect(pidOfPidfd(peer.pidfd)).toBe(client.child.pid);
      }
    } finally {
      client.child.kill('SIGKILL');
      await client.exited;
    }
  });

  it('names the server from the client side (the listening process: us)', async () => {
    const socket = net.connect(server.path);
    await new Promise((resolve) => socket.once('connect', resolve));
    try {
      const peer = identifySocketPeer(bindings, socketFd(socket));
      expect(peer.pid).toBe(process.pid);
      expect(peer.uid).toBe(process.getuid?.());
      expect(peer.startTime).toBe(startTimeOf(process.pid));
      expect(peer.executable).toBe(node);
      verifyPeerSync(bindings, peer);
      releasePeer(bindings, peer);
    } finally {
      socket.destroy();
    }
  });

  it('names a server in another process from the client side', async () => {
    const path = `${server.path}.other`;
    const serverChild = spawnProcess(process.execPath, [
      '-e',
      `require('net').createServer(() => {}).listen(${JSON.stringify(path)}, () => console.log('listening'))`,
    ]);
    try {
      await until(() => hasSocket(path), 'the child server to listen');
      const socket = net.connect(path);
      await new Promise((resolve) => socket.once('connect', resolve));
      const peer = identifySocketPeer(bindings, socketFd(socket));
      expect(peer.pid).toBe(serverChild.child.pid);
      releasePeer(bindings, peer);
      socket.destroy();
    } finally {
      serverChild.child.kill('SIGKILL');
      await serverChild.exited;
    }
  });

  it('throws ERR_PEER_UNKNOWN for a descriptor that is not a socket', () => {
    const fd = openSync('/proc/self/stat', 'r');
    let error: PeerError;
    try {
      error = peerError(() => identifySocketPeer(bindings, fd));
    } finally {
      closeSync(fd);
    }
    expect(error.code).toBe('ERR_PEER_UNKNOWN');
    expect(error.cause).toBeInstanceOf(PlatformError);
    expect((error.cause as PlatformError).code).toBe('ERR_PLATFORM');
    expect(peerError(() => identifySocketPeer(bindings, -1)).code).toBe('ERR_PEER_UNKNOWN');
  });
});

function hasSocket(path: string): boolean {
  try {
    return readFileSync('/proc/net/unix', 'latin1').includes(path);
  } catch {
    return false;
  }
}

describe.skipIf(!isLinux)('verifyPeer (Linux only)', () => {
  it('passes while the client lives, then ERR_PEER_CHANGED once it exits', async () => {
    const client = await heldClient('verify-exit');
    await verifyPeer(bindings, client.peer);
    verifyPeerSync(bindings, client.peer);
    client.child.kill('SIGKILL');
    await client.exited;
    const error = peerError(() => verifyPeerSync(bindings, client.peer));
    expect(error.code).toBe('ERR_PEER_CHANGED');
    expect(error.message).toMatch(/has exited/);
    expect(error.message).toMatch(/must reconnect/);
    await expect(verifyPeer(bindings, client.peer)).rejects.toMatchObject({
      code: 'ERR_PEER_CHANGED',
    });
  });

  it.skipIf(!hasCommand('python3'))(
    'detects a client that execs another program after connecting (needs python3)',
    async () => {
      const spawned = spawnProcess('python3', [EXEC_CLIENT, server.path, 'exec']);
      try {
        const { peer } = await server.connection('exec');
        expect(peer.executable).toMatch(/python/);
        const pid = spawned.child.pid as number;
        await until(() => {
          try {
            return readlinkSync(`/proc/${pid}/exe`).endsWith('/sleep');
          } catch {
            return false;
          }
        }, 'the client to exec sleep');
        // Same process (same pid, same start time, still alive), other program.
        expect(startTimeOf(pid)).toBe(peer.startTime);
        const error = peerError(() => verifyPeerSync(bindings, peer));
        expect(error.code).toBe('ERR_PEER_CHANGED');
        expect(error.message).toMatch(/exec'd another program/);
        expect(error.message).toMatch(/now \/.*sleep/);
        // A copy of the identity (no recorded inode, no owned pidfd) is caught by the path check.
        const copy: PeerIdentity = { ...peer };
        expect(peerError(() => verifyPeerSync(bindings, copy)).code).toBe('ERR_PEER_CHANGED');
      } finally {
        spawned.child.kill('SIGKILL');
        await spawned.exited;
      }
    },
  );

  it('detects pid reuse: a live pid whose start time is not the one identified', async () => {
    const client = await heldClient('verify-reuse');
    try {
      const reused: PeerIdentity = { ...client.peer, pidfd: undefined, startTime: '1' };
      const error = peerError(() => verifyPeerSync(bindings, reused));
      expect(error.code).toBe('ERR_PEER_CHANGED');
      expect(error.message).toMatch(/pid now belongs to another process/);
      // The genuine identity still verifies.
      verifyPeerSync(bindings, client.peer);
    } finally {
      client.child.kill('SIGKILL');
      await client.exited;
    }
  });

  it('refuses an identity without pid or start time as ERR_PEER_UNKNOWN', () => {
    expect(peerError(() => verifyPeerSync(bindings, { source: 'memory' })).code).toBe(
      'ERR_PEER_UNKNOWN',
    );
    expect(peerError(() => verifyPeerSync(bindings, { pid: process.pid, source: 'x' })).code).toBe(
      'ERR_PEER_UNKNOWN',
    );
  });
});

describe.skipIf(!isLinux)('releasePeer (Linux only)', () => {
  it('closes the pidfd once; a second release is harmless', async () => {
    const client = await heldClient('release');
    try {
      const { peer } = client;
      expect(peer.pidfd !== undefined).toBe(kernelHasPeerPidfd);
      releasePeer(bindings, peer);
      if (peer.pidfd !== undefined) {
        // The fd is closed (or now belongs to something else, not to this peer's process).
        let owner: number | undefined;
        try {
          owner = pidOfPidfd(peer.pidfd);
        } catch {
          owner = undefined;
        }
        expect(owner).not.toBe(client.child.pid);
      }
      expect(() => releasePeer(bindings, peer)).not.toThrow();
      // Verification still works through /proc once the pidfd is gone.
      verifyPeerSync(bindings, peer);
      client.child.kill('SIGKILL');
      await client.exited;
      expect(peerError(() => verifyPeerSync(bindings, peer)).code).toBe('ERR_PEER_CHANGED');
    } finally {
      client.child.kill('SIGKILL');
    }
  });
});

/** Fake bindings around a real pid: what the kernel would say, scripted. */
function fakeBindings(options: {
  credentials?: () => PeerCredentials;
  pidfd?: () => number | undefined;
  alive?: (pidfd: number) => boolean;
}): LinuxBindings & { closed: number[] } {
  const closed: number[] = [];
  return {
    closed,
    getPeerCredentials: () => options.credentials?.() ?? { pid: process.pid, uid: 0, gid: 0 },
    getPeerPidfd: () => options.pidfd?.(),
    pidfdIsAlive: (pidfd) => options.alive?.(pidfd) ?? true,
    closeFd: (fd) => {
      closed.push(fd);
    },
  };
}

describe.skipIf(!isLinux)(
  'identifySocketPeer with fake bindings over real /proc (Linux only)',
  () => {
    it('maps a getsockopt failure (ERR_PLATFORM) to ERR_PEER_UNKNOWN, keeping the cause', () => {
      const failure = new PlatformError('ERR_PLATFORM', 'Reading SO_PEERCRED failed: ENOTCONN.');
      const fake = fakeBindings({
        credentials: () => {
          throw failure;
        },
      });
      const error = peerError(() => identifySocketPeer(fake, 3));
      expect(error.code).toBe('ERR_PEER_UNKNOWN');
      expect(error.cause).toBe(failure);
    });

    it('without SO_PEERPIDFD (kernel < 6.5) still identifies and verifies through /proc', async () => {
      const spawned = spawnProcess(process.execPath, ['-e', 'setTimeout(() => {}, 20000)']);
      const pid = spawned.child.pid as number;
      await until(() => {
        try {
          return readlinkSync(`/proc/${pid}/exe`) === node;
        } catch {
          return false;
        }
      }, 'the child to start');
      const fake = fakeBindings({
        credentials: () => ({ pid, uid: 1000, gid: 1000 }),
        pidfd: () => undefined,
        alive: () => {
          throw new Error('no pidfd may be polled');
        },
      });
      const peer = identifySocketPeer(fake, 3);
      expect(peer).toEqual({
        pid,
        uid: 1000,
        gid: 1000,
        startTime: startTimeOf(pid),
        executable: node,
        source: 'so_peercred',
      });
      verifyPeerSync(fake, peer);
      releasePeer(fake, peer);
      expect(fake.closed).toEqual([]);
      spawned.child.kill('SIGKILL');
      await spawned.exited;
      expect(peerError(() => verifyPeerSync(fake, peer)).code).toBe('ERR_PEER_CHANGED');
    });

    it('refuses pid 0 (a peer outside our pid namespace)', () => {
      const fake = fakeBindings({ credentials: () => ({ pid: 0, uid: 0, gid: 0 }) });
      expect(peerError(() => identifySocketPeer(fake, 3)).message).toMatch(/no usable process id/);
    });

    it('fails closed when the peer is already gone, and closes the pidfd it was given', async () => {
      const spawned = spawnProcess('true', []);
      const pid = spawned.child.pid as number;
      await spawned.exited;
      const fake = fakeBindings({ credentials: () => ({ pid, uid: 0, gid: 0 }), pidfd: () => 41 });
      const error = peerError(() => identifySocketPeer(fake, 3));
      expect(error.code).toBe('ERR_PEER_UNKNOWN');
      expect(error.message).toMatch(/exited before it could be identified/);
      expect(fake.closed).toEqual([41]);
    });

    it('fails closed when the pidfd shows the peer exited during the /proc reads', () => {
      const fake = fakeBindings({ pidfd: () => 42, alive: () => false });
      expect(peerError(() => identifySocketPeer(fake, 3)).code).toBe('ERR_PEER_UNKNOWN');
      expect(fake.closed).toEqual([42]);
    });

    it('maps an SO_PEERPIDFD failure to ERR_PEER_UNKNOWN', () => {
      const fake = fakeBindings({
        pidfd: () => {
          throw new PlatformError('ERR_PLATFORM', 'Reading SO_PEERPIDFD failed: ESRCH.');
        },
      });
      expect(peerError(() => identifySocketPeer(fake, 3)).code).toBe('ERR_PEER_UNKNOWN');
    });

    it('uses the pidfd for liveness and never touches an fd number it no longer owns', () => {
      let alive = true;
      const polled: number[] = [];
      const fake = fakeBindings({
        pidfd: () => 50,
        alive: (pidfd) => {
          polled.push(pidfd);
          return alive;
        },
      });
      const first = identifySocketPeer(fake, 3);
      expect(first.pidfd).toBe(50);
      releasePeer(fake, first);
      expect(fake.closed).toEqual([50]);
      // The kernel hands the same number to the next connection's pidfd.
      const second = identifySocketPeer(fake, 4);
      expect(second.pidfd).toBe(50);
      releasePeer(fake, first);
      expect(fake.closed).toEqual([50]);
      // Verifying the released identity must not poll fd 50 (it is the second peer's now).
      polled.length = 0;
      verifyPeerSync(fake, first);
      expect(polled).toEqual([]);
      // The owner's pidfd is used: a dead pidfd means the peer exited.
      alive = false;
      expect(peerError(() => verifyPeerSync(fake, second)).message).toMatch(/has exited/);
      expect(polled).toEqual([50]);
      // A copy does not own the pidfd either.
      releasePeer(fake, { ...second });
      expect(fake.closed).toEqual([50]);
      releasePeer(fake, second);
      releasePeer(fake, second);
      expect(fake.closed).toEqual([50, 50]);
    });
  },
);

describe.skipIf(!isLinux)('createLinuxPlatform (Linux only)', () => {
  it('wires the real bindings: id linux, identify, verify, derive, release', async () => {
    const platform = await createLinuxPlatform();
    expect(platform.id).toBe('linux');
    const socket = net.connect(server.path);
    await new Promise((resolve) => socket.once('connect', resolve));
    try {
      const peer = platform.identifySocketPeer(socketFd(socket));
      expect(peer.pid).toBe(process.pid);
      await platform.verifyPeer(peer);
      const credential = await platform.credentials.derive(peer);
      expect(credential.id).toMatch(/^(tty|proc):[0-9a-f]{32}$/);
      expect(credential.process.pid).toBe(process.pid);
      platform.releasePeer(peer);
      platform.releasePeer(peer);
    } finally {
      socket.destroy();
    }
  });
});
