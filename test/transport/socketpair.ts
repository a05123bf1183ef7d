/**
 * libc `socketpair` and `close` through koffi, for the named-pipe tests' fake Win32Bindings:
 * their pipe handles are real connected Unix socket pairs, so `new net.Socket({ fd })`, the
 * framing and the listener's instance pool run for real on Linux. `undefined` elsewhere.
 */

export interface Libc {
  socketpair(domain: number, type: number, protocol: number, fds: Buffer): number;
  close(fd: number): number;
}

interface KoffiLike {
  load(path: string): { func(definition: string): unknown };
}

export async function loadLibc(): Promise<Libc | undefined> {
  if (process.platform !== 'linux') return undefined;
  try {
    const koffi = ((await import('koffi')) as unknown as { default: KoffiLike }).default;
    const lib = koffi.load('libc.so.6');
    return {
      socketpair: lib.func(
        'int socketpair(int domain, int type, int protocol, void *sv)',
      ) as Libc['socketpair'],
      close: lib.func('int close(int fd)') as Libc['close'],
    };
  } catch {
    return undefined;
  }
}
