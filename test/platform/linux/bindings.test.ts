import { closeSync, openSync, readFileSync } from 'node:fs';
import net from 'node:net';
import { constants } from 'node:os';
import { describe, expect, it } from 'vitest';
import { PlatformError } from '../../../src/errors.js';
import {
  createLinuxBindings,
  errnoError,
  loadLinuxBindings,
  type NativeLibc,
} from '../../../src/platform/linux/bindings.js';
import { kernelHasPeerPidfd, socketFd, spawnProcess } from '../../fixtures/linux/peer-server.js';

const { errno } = constants;

/** A scripted libc: each call returns what the script says and sets errno. */
function scriptedLibc(script: {
  getsockopt?: (name: number, value: Buffer, length: Buffer) => number;
  poll?: (fds: Buffer) => number;
  close?: (fd: number) => number;
}): NativeLibc & { calls: string[]; lastErrno: number } {
  const libc = {
    calls: [] as string[],
    lastErrno: 0,
    getsockopt(_fd: number, _level: number, name: number, value: Buffer, length: Buffer) {
      libc.calls.push(`getsockopt:${name}`);
      return script.getsockopt?.(name, value, length) ?? -1;
    },
    close(fd: number) {
      libc.calls.push(`close:${fd}`);
      return script.close?.(fd) ?? 0;
    },
    poll(fds: Buffer) {
      libc.calls.push('poll');
      return script.poll?.(fds) ?? 0;
    },
    errno: () => libc.lastErrno,
  };
  return libc;
}

function caught(run: () => unknown): PlatformError {
  try {
    run();
  } catch (error) {
    expect(error).toBeInstanceOf(PlatformError);
    return error as PlatformError;
  }
  throw new Error('expected a throw');
}

describe('createLinuxBindings over a scripted libc', () => {
  it('turns a failing getsockopt into ERR_PLATFORM with the errno as cause', () => {
    const libc = scriptedLibc({});
    libc.lastErrno = errno.ENOTSOCK;
    const error = caught(() => createLinuxBindings(libc).getPeerCredentials(5));
    expect(error.code).toBe('ERR_PLATFORM');
    expect(error.cause).toMatchObject({
      errno: errno.ENOTSOCK,
      code: 'ENOTSOCK',
      syscall: 'getsockopt',
    });
    expect(error.message).toMatch(/SO_PEERCRED.*ENOTSOCK/);
  });

  it('rejects a struct ucred of the wrong size', () => {
    const libc = scriptedLibc({
      getsockopt: (_name, _value, length) => {
        length.writeUInt32LE(8, 0);
        return 0;
      },
    });
    expect(caught(() => createLinuxBindings(libc).getPeerCredentials(5)).message).toMatch(
      /8 bytes, expected 12/,
    );
  });

  it('reports SO_PEERPIDFD as unsupported on ENOPROTOOPT (kernel < 6.5) and stops asking', () => {
    const libc = scriptedLibc({});
    libc.lastErrno = errno.ENOPROTOOPT;
    const bindings = createLinuxBindings(libc);
    expect(bindings.getPeerPidfd(5)).toBeUndefined();
    expect(bindings.getPeerPidfd(6)).toBeUndefined();
    expect(libc.calls).toEqual(['getsockopt:77']);
  });

  it('throws for other SO_PEERPIDFD failures (a vanished peer)', () => {
    const libc = scriptedLibc({});
    libc.lastErrno = errno.ESRCH;
    const error = caught(() => createLinuxBindings(libc).getPeerPidfd(5));
    expect(error.cause).toMatchObject({ code: 'ESRCH' });
  });

  it('reads liveness from poll: not readable = alive, readable = exited, POLLNVAL = error', () => {
    let revents = 0;
    let ready = 0;
    const libc = scriptedLibc({
      poll: (fds) => {
        expect(fds.readInt16LE(4)).toBe(1); // asks for POLLIN
        fds.writeInt16LE(revents, 6);
        return ready;
      },
    });
    const bindings = createLinuxBindings(libc);
    expect(bindings.pidfdIsAlive(9)).toBe(true);
    ready = 1;
    revents = 0x11; // POLLIN | POLLHUP
    expect(bindings.pidfdIsAlive(9)).toBe(false);
    revents = 0x20; // POLLNVAL
    expect(caught(() => bindings.pidfdIsAlive(9)).cause).toMatchObject({ code: 'EBADF' });
    ready = -1;
    libc.lastErrno = errno.EINVAL;
    expect(caught(() => bindings.pidfdIsAlive(9)).cause).toMatchObject({ code: 'EINVAL' });
  });

  it('retries a poll interrupted by a signal (EINTR) instead of calling the peer changed', () => {
    let interruptions = 2;
    const libc = scriptedLibc({
      poll: (fds) => {
        if (interruptions > 0) {
          interruptions--;
          libc.lastErrno = errno.EINTR;
          return -1;
        }
        libc.lastErrno = 0;
        fds.writeInt16LE(0, 6);
        return 0;
      },
    });
    expect(createLinuxBindings(libc).pidfdIsAlive(9)).toBe(true);
    expect(libc.calls.filter((call) => call === 'poll')).toHaveLength(3);
    // A signal storm that never lets poll finish is still an error, not a verdict either way.
    const stormy = scriptedLibc({ poll: () => -1 });
    stormy.lastErrno = errno.EINTR;
    expect(caught(() => createLinuxBindings(stormy).pidfdIsAlive(9)).cause).toMatchObject({
      code: 'EINTR',
    });
  });

  it('treats EINTR from close as done, other close errors as ERR_PLATFORM', () => {
    const libc = scriptedLibc({ close: () => -1 });
    libc.lastErrno = errno.EINTR;
    const bindings = createLinuxBindings(libc);
    expect(() => bindings.closeFd(9)).not.toThrow();
    libc.lastErrno = errno.EBADF;
    expect(caught(() => bindings.closeFd(9)).cause).toMatchObject({
      code: 'EBADF',
      syscall: 'close',
    });
  });

  it('names errnos like Node does', () => {
    expect(errnoError('getsockopt', errno.ENOPROTOOPT)).toMatchObject({
      code: 'ENOPROTOOPT',
      errno: errno.ENOPROTOOPT,
      syscall: 'getsockopt',
    });
    expect(errnoError('x', 99999).code).toBe('E99999');
  });
});

describe.skipIf(process.platform !== 'linux')(
  'loadLinuxBindings (real koffi, real kernel; Linux only)',
  () => {
    it('resolves to one shared object', async () => {
      expect(await loadLinuxBindings()).toBe(await loadLinuxBindings());
    });

    it('fails with ENOTSOCK on a file descriptor that is not a socket', async () => {
      const bindings = await loadLinuxBindings();
      const fd = openSync('/proc/self/stat', 'r');
      try {
        const error = caught(() => bindings.getPeerCredentials(fd));
        expect(error.cause).toMatchObject({ code: 'ENOTSOCK' });
      } finally {
        closeSync(fd);
      }
    });

    it('reads SO_PEERCRED and SO_PEERPIDFD of a real peer, and polls its pidfd until it exits', async () => {
      const bindings = await loadLinuxBindings();
      const server = net.createServer();
      const dir = `/tmp/bk-bind-${process.pid}.sock`;
      await new Promise<void>((resolve) => server.listen(dir, resolve));
      try {
        const accepted = new Promise<net.Socket>((resolve) => server.once('connection', resolve));
        const child = spawnProcess(process.execPath, [
          '-e',
          `require('net').connect(${JSON.stringify(dir)}); setTimeout(() => {}, 20000)`,
        ]);
        const socket = await accepted;
        const credentials = bindings.getPeerCredentials(socketFd(socket));
        expect(credentials).toEqual({
          pid: child.child.pid,
          uid: process.getuid?.(),
          gid: process.getgid?.(),
        });
        const pidfd = bindings.getPeerPidfd(socketFd(socket));
        if (!kernelHasPeerPidfd) {
          expect(pidfd).toBeUndefined();
          return;
        }
        if (pidfd === undefined) throw new Error('SO_PEERPIDFD gave no pidfd on a kernel ≥ 6.5');
        expect(readFileSync(`/proc/self/fdinfo/${pidfd}`, 'latin1')).toMatch(
          new RegExp(`^Pid:\\s+${child.child.pid}$`, 'm'),
        );
        expect(bindings.pidfdIsAlive(pidfd)).toBe(true);
        child.child.kill('SIGKILL');
        await child.exited;
        expect(bindings.pidfdIsAlive(pidfd)).toBe(false);
        bindings.closeFd(pidfd);
        expect(caught(() => bindings.pidfdIsAlive(pidfd)).cause).toMatchObject({ code: 'EBADF' });
        socket.destroy();
      } finally {
        await new Promise((resolve) => server.close(resolve));
      }
    });
  },
);
