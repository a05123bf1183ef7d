/**
 * The transport contract on the named-pipe transport, over a minimal fake Win32Bindings whose
 * pipe handles are real Unix socket pairs (libc `socketpair` through koffi), so the framing,
 * `new net.Socket({ fd })` and the listener's instance pool run for real on Linux. The fuller
 * fake, with its error simulations, is in test/transport/named-pipe.test.ts.
 */
import {
  WIN32_ERRORS,
  type Win32Bindings,
  Win32Error,
  type Win32Handle,
} from '../../src/platform/win32/bindings.js';
import { listenNamedPipe, namedPipeConnector, pipeName } from '../../src/transport/named-pipe.js';
import { loadLibc } from '../transport/socketpair.js';
import { runTransportContract } from './transport-contract.js';

const libc = await loadLibc();

interface Handle {
  readonly server: boolean;
  readonly name: string;
  connected: boolean;
  fd?: number;
  wait?: { done: (error?: Win32Error) => void; active: boolean };
  gone: boolean;
}

/** Windows named pipes, as far as the transport relies on them, for one process and user. */
class MinimalPipes {
  readonly handles = new Map<Win32Handle, Handle>();
  readonly misuse: string[] = [];
  #next = 0x100n;

  readonly bindings: Win32Bindings;

  constructor(readonly sid: string) {
    const notFaked = (): never => {
      throw new Error('not part of the fake');
    };
    this.bindings = {
      currentProcessId: () => process.pid,
      processUserSid: () => sid,
      createPipeInstance: (name, options) => {
        if (options.first && this.#instances(name).length > 0) {
          throw new Win32Error('CreateNamedPipeW', WIN32_ERRORS.accessDenied);
        }
        return this.#add({ server: true, name: name.toLowerCase(), connected: false, gone: false });
      },
      waitForClient: (pipe, done) => {
        const handle = this.#live(pipe, 'waitForClient');
        const wait = { done, active: true };
        handle.wait = wait;
        if (handle.connected) setImmediate(() => this.#complete(handle, wait));
        return () => {
          wait.active = false;
        };
      },
      openPipe: (name) => {
        const instances = this.#instances(name);
        if (instances.length === 0) throw new Win32Error('CreateFileW', WIN32_ERRORS.fileNotFound);
        const free = instances.find((handle) => !handle.connected);
        if (free === undefined) throw new Win32Error('CreateFileW', WIN32_ERRORS.pipeBusy);
        const fds = Buffer.alloc(8);
        // AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC
        if (libc!.socketpair(1, 1 | 0o2000000, 0, fds) !== 0) throw new Error('socketpair failed');
        free.connected = true;
        free.fd = fds.readInt32LE(0);
        const wait = free.wait;
        if (wait?.active) setImmediate(() => this.#complete(free, wait));
        return this.#add({
          server: false,
          name: free.name,
          connected: true,
          fd: fds.readInt32LE(4),
          gone: false,
        });
      },
      pipeClientProcessId: () => process.pid,
      pipeServerProcessId: () => process.pid,
      handleToFd: (pipe) => {
        const handle = this.#live(pipe, 'handleToFd');
        if (handle.fd === undefined) throw new Win32Error('uv_open_osfhandle', 6);
        handle.gone = true;
        return handle.fd;
      },
      fdToHandle: notFaked,
      closeHandle: (pipe) => {
        const handle = this.#live(pipe, 'closeHandle');
        if (handle.wait?.active) this.misuse.push(`closeHandle(${pipe}) with a wait not cancelled`);
        handle.gone = true;
        if (handle.fd !== undefined) libc!.close(handle.fd);
      },
      openProcess: notFaked,
      processIsRunning: notFaked,
      processCreationTime: notFaked,
      processImagePath: notFaked,
      parentProcessId: notFaked,
      fileDescription: notFaked,
      verifySignature: notFaked,
      userConsent: { checkAvailability: notFaked, requestVerification: notFaked },
    };
  }

  /** Closes the socket-pair ends still owned by a handle; reports misuse. */
  dispose(): void {
    for (const handle of this.handles.values()) {
      if (handle.gone) continue;
      handle.gone = true;
      if (handle.fd !== undefined) libc!.close(handle.fd);
    }
    if (this.misuse.length > 0) throw new Error(`pipe API misused: ${this.misuse.join('; ')}`);
  }

  #add(handle: Handle): Win32Handle {
    const id = this.#next++;
    this.handles.set(id, handle);
    return id;
  }

  #live(pipe: Win32Handle, call: string): Handle {
    const handle = this.handles.get(pipe);
    if (handle === undefined || handle.gone) {
      this.misuse.push(`${call}(${pipe}) on a handle that is closed or handed to an fd`);
      throw new Win32Error(call, 6);
    }
    return handle;
  }

  #instances(name: string): Handle[] {
    return [...this.handles.values()].filter(
      (handle) => handle.server && !handle.gone && handle.name === name.toLowerCase(),
    );
  }

  #complete(handle: Handle, wait: { done: () => void; active: boolean }): void {
    if (!wait.active || handle.wait !== wait) return;
    wait.active = false;
    wait.done();
  }
}

const SID = 'S-1-5-21-1111111111-2222222222-3333333333-1001';
let apps = 0;

runTransportContract(
  'named pipe over a fake Win32Bindings',
  async () => {
    const pipes = new MinimalPipes(SID);
    const name = pipeName(`contract-${++apps}`, SID);
    const listener = await listenNamedPipe({ name, bindings: pipes.bindings });
    const connector = namedPipeConnector({ bindings: pipes.bindings });
    return {
      listener,
      connect: (options) => connector.connect(name, options),
      cleanup: async () => pipes.dispose(),
    };
  },
  { skipBecause: libc === undefined ? 'needs Linux libc socketpair through koffi' : undefined },
);
