/**
 * Child processes for the benchmarks: servers, clients and micro-benchmarks each run in a
 * process of their own and talk to the runner over Node's IPC channel with `{ type, ... }`
 * messages.
 *
 * @module
 */

import { type ChildProcess, spawn } from 'node:child_process';
import path from 'node:path';
import { FIXTURES, ROOT } from './paths.js';

/** A message from or to a child. */
export interface ChildMessage {
  type: string;
  [key: string]: unknown;
}

/** Options for {@link Child.start}. */
export interface ChildOptions {
  /** Extra Node flags (`--expose-gc`, …). */
  nodeArgs?: string[];
  /** Raise the open-file limit to this before Node starts (through `sh -c 'ulimit -n …; exec node'`). */
  openFiles?: number;
  /** Write a CPU profile to this directory when the child exits. */
  profileDir?: string | undefined;
  /** Label for error messages. */
  label?: string;
  /**
   * Run the fixture's TypeScript source through tsx instead of the build (for fixtures that load
   * modules which may not exist yet, where milliseconds are measured, not microseconds).
   */
  source?: boolean;
}

/** Environment for children: the runner's, minus DEBUG (enabled debug output would be measured). */
function childEnv(): NodeJS.ProcessEnv {
  const env = { ...process.env };
  delete env.DEBUG;
  return env;
}

/** A running fixture process. */
export class Child {
  readonly process: ChildProcess;
  readonly label: string;
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  readonly #inbox: ChildMessage[] = [];
  readonly #waiters: Array<{
    type: string;
    resolve: (message: ChildMessage) => void;
    reject: (error: Error) => void;
  }> = [];
  #exit: { code: number | null; signal: NodeJS.Signals | null } | undefined;
  #failure: Error | undefined;

  private constructor(child: ChildProcess, label: string) {
    this.process = child;
    this.label = label;
    child.on('message', (message: ChildMessage) => this.#receive(message));
    this.exited = new Promise((resolve) => {
      child.on('exit', (code, signal) => {
        this.#exit = { code, signal };
        this.#fail(
          new Error(`${label} exited (code ${code}, signal ${signal}) before it answered`),
        );
        resolve({ code, signal });
      });
      child.on('error', (error) => {
        this.#fail(new Error(`${label} could not run: ${error.message}`));
      });
    });
  }

  /**
   * Starts the built fixture `<build>/<name>.js` (see `build.ts`) with plain `node`, passing
   * `args` as one JSON argument.
   */
  static start(build: string, name: string, args: unknown, options: ChildOptions = {}): Child {
    const nodeArgs = [...(options.nodeArgs ?? [])];
    if (options.source) nodeArgs.push('--import', 'tsx');
    if (options.profileDir) nodeArgs.push('--cpu-prof', `--cpu-prof-dir=${options.profileDir}`);
    const script = options.source
      ? path.join(FIXTURES, `${name}.ts`)
      : path.join(build, `${name}.js`);
    const argv = [...nodeArgs, script, JSON.stringify(args ?? {})];
    const stdio: ['ignore', 'inherit', 'inherit', 'ipc'] = ['ignore', 'inherit', 'inherit', 'ipc'];
    const child =
      options.openFiles === undefined
        ? spawn(process.execPath, argv, { cwd: ROOT, env: childEnv(), stdio })
        : spawn(
            'sh',
            [
              '-c',
              // Raise the soft limit; if the hard limit is lower, raise it as far as allowed.
              `ulimit -n ${options.openFiles} 2>/dev/null || ulimit -n "$(ulimit -Hn)"; exec "$0" "$@"`,
              process.execPath,
              ...argv,
            ],
            { cwd: ROOT, env: childEnv(), stdio },
          );
    return new Child(child, options.label ?? name);
  }

  /** Sends a message. */
  send(message: ChildMessage): void {
    if (this.#exit === undefined && this.process.connected) this.process.send(message);
  }

  /**
   * The next message of `type` (one that already arrived counts). Rejects when the child reports
   * `{ type: 'error' }`, exits first, or nothing comes within `timeoutMs`.
   */
  next<T extends ChildMessage = ChildMessage>(type: string, timeoutMs = 60_000): Promise<T> {
    const index = this.#inbox.findIndex((message) => message.type === type);
    if (index !== -1) return Promise.resolve(this.#inbox.splice(index, 1)[0] as T);
    if (this.#failure) return Promise.reject(this.#failure);
    const promise = new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        const at = this.#waiters.indexOf(waiter);
        if (at !== -1) this.#waiters.splice(at, 1);
        reject(new Error(`${this.label}: no "${type}" message within ${timeoutMs} ms`));
      }, timeoutMs);
      const waiter = {
        type,
        resolve: (message: ChildMessage) => {
          clearTimeout(timer);
          resolve(message as T);
        },
        reject: (error: Error) => {
          clearTimeout(timer);
          reject(error);
        },
      };
      this.#waiters.push(waiter);
    });
    // Whoever awaits it still sees a rejection; one nobody awaits any more (the other half of a
    // Promise.all that already failed) must not crash the runner as an unhandled rejection.
    promise.catch(() => {});
    return promise;
  }

  /** Sends `message` and waits for the reply of type `replyType`. */
  request<T extends ChildMessage = ChildMessage>(
    message: ChildMessage,
    replyType: string,
    timeoutMs?: number,
  ): Promise<T> {
    const reply = this.next<T>(replyType, timeoutMs);
    this.send(message);
    return reply;
  }

  /**
   * Asks the child to exit (`{ type: 'exit' }`), so CPU profiles get written; kills it by its pid
   * if it has not exited within `timeoutMs`.
   */
  async stop(timeoutMs = 5_000): Promise<void> {
    if (this.#exit !== undefined) return;
    this.send({ type: 'exit' });
    const timer = setTimeout(() => this.kill(), timeoutMs);
    await this.exited;
    clearTimeout(timer);
  }

  /** Kills the child (SIGKILL), by its own pid. */
  kill(): void {
    if (this.#exit === undefined) this.process.kill('SIGKILL');
  }

  #receive(message: ChildMessage): void {
    if (message?.type === 'error') {
      this.#fail(new Error(`${this.label}: ${String(message.message)}`));
      return;
    }
    const index = this.#waiters.findIndex((waiter) => waiter.type === message.type);
    if (index !== -1) {
      this.#waiters.splice(index, 1)[0]!.resolve(message);
      return;
    }
    this.#inbox.push(message);
  }

  #fail(error: Error): void {
    this.#failure ??= error;
    for (const waiter of this.#waiters.splice(0)) waiter.reject(this.#failure);
  }
}

/** Stops every child, in parallel; never throws. */
export async function stopAll(children: ReadonlyArray<Child | undefined>): Promise<void> {
  await Promise.allSettled(children.map((child) => child?.stop()));
}

/** Runs a plain command to completion and resolves its wall time in milliseconds. */
export function timeProcess(
  args: string[],
  options: { capture?: boolean } = {},
): Promise<{ ms: number; code: number | null; stdout: string }> {
  return new Promise((resolve, reject) => {
    const start = performance.now();
    const child = spawn(process.execPath, args, {
      cwd: ROOT,
      env: childEnv(),
      stdio: ['ignore', options.capture ? 'pipe' : 'ignore', 'inherit'],
    });
    let stdout = '';
    child.stdout?.setEncoding('utf8');
    child.stdout?.on('data', (chunk: string) => {
      stdout += chunk;
    });
    child.on('error', reject);
    // Wall time ends at exit; the result waits for 'close' so that all of stdout is in.
    let ms = 0;
    child.on('exit', () => {
      ms = performance.now() - start;
    });
    child.on('close', (code) => {
      resolve({ ms, code, stdout });
    });
  });
}
