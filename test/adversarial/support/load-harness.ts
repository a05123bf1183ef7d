/**
 * What the exhaustion, load and prompt-storm tests share: a private socket directory, child
 * processes that are always killed (their whole process group when detached), messages from
 * them over IPC or as JSON lines on stdout, waiting with a deadline, and the server's memory
 * after a full garbage collection.
 */

import { type ChildProcess, spawn } from 'node:child_process';
import { chmodSync, mkdtempSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';

export const tsx = createRequire(import.meta.url).resolve('tsx');

/** Absolute path of a script in test/fixtures/adversarial/. */
export const fixture = (name: string): string =>
  fileURLToPath(new URL(`../../fixtures/adversarial/${name}`, import.meta.url));

export const sleep = (ms: number): Promise<void> =>
  new Promise((resolve) => setTimeout(resolve, ms));

/** A new directory, mode 0700, for one test's socket; `remove()` deletes it. */
export function socketDirectory(prefix: string): { path: string; socket: string; remove(): void } {
  const path = mkdtempSync(join(tmpdir(), prefix));
  chmodSync(path, 0o700);
  return {
    path,
    socket: join(path, 'agent.sock'),
    remove: () => rmSync(path, { recursive: true, force: true }),
  };
}

/** Polls `check` every 10 ms until it returns true; throws after `ms` naming `what`. */
export async function waitFor(check: () => boolean, ms: number, what: string): Promise<void> {
  const deadline = performance.now() + ms;
  while (!check()) {
    if (performance.now() > deadline)
      throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await sleep(10);
  }
}

/** A child process whose IPC messages and stdout JSON lines are collected as they come. */
export class Child {
  readonly process: ChildProcess;
  readonly messages: Array<Record<string, unknown>> = [];
  readonly lines: Array<Record<string, unknown>> = [];
  /** Its exit code, once it has exited and everything it wrote has been read. */
  readonly exited: Promise<number | null>;
  /**
   * Set once the process has exited AND its stdio and IPC channel are closed: only then can no
   * message still be on its way. (`exit` can come before the last IPC message is read — a child
   * that sends "done" and exits at once races its own message.)
   */
  closed = false;
  /** Whether it leads its own process group (killed as a group). */
  readonly group: boolean;
  stderr = '';
  #waiters: Array<() => void> = [];

  constructor(child: ChildProcess, group = false) {
    this.process = child;
    this.group = group;
    child.on('message', (message) => {
      this.messages.push(message as Record<string, unknown>);
      this.#wake();
    });
    let partial = '';
    child.stdout?.setEncoding('utf8').on('data', (chunk: string) => {
      partial += chunk;
      const parts = partial.split('\n');
      partial = parts.pop() ?? '';
      for (const line of parts) {
        if (line.startsWith('{')) this.lines.push(JSON.parse(line) as Record<string, unknown>);
      }
      this.#wake();
    });
    child.stderr?.setEncoding('utf8').on('data', (chunk: string) => {
      this.stderr += chunk;
    });
    this.exited = new Promise((resolve) => {
      child.once('close', (code) => {
        this.closed = true;
        this.#wake();
        resolve(code);
      });
    });
  }

  get pid(): number {
    return this.process.pid!;
  }

  #wake(): void {
    for (const waiter of this.#waiters.splice(0)) waiter();
  }

  /** Resolves with the first IPC message of this `type`, failing if the child exits first. */
  async message<T = Record<string, unknown>>(type: string, ms: number): Promise<T> {
    const deadline = performance.now() + ms;
    for (;;) {
      const found = this.messages.find((message) => message.type === type);
      if (found) return found as T;
      if (this.closed) {
        throw new Error(
          `child ${this.pid} exited (${this.process.exitCode ?? this.process.signalCode}) before sending "${type}"; stderr: ${this.stderr.slice(-2000)}`,
        );
      }
      const left = deadline - performance.now();
      if (left <= 0) {
        throw new Error(
          `child ${this.pid} sent no "${type}" within ${ms} ms; stderr: ${this.stderr.slice(-2000)}`,
        );
      }
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, Math.min(left, 1_000));
        this.#waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
  }

  send(message: Record<string, unknown>): void {
    this.process.send?.(message);
  }
}

/** Children started by one test; `killAll()` (from afterEach) kills every one still running. */
export class Children {
  readonly #all: Child[] = [];

  /** `node --import tsx <fixture> …args`, with an IPC channel. */
  tsx(name: string, args: string[]): Child {
    return this.#track(
      spawn(process.execPath, ['--import', tsx, fixture(name), ...args], {
        stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
      }),
    );
  }

  /** `node <fixture> …args` (a plain JavaScript fixture: starts in tens of ms), with IPC. */
  node(name: string, args: string[]): Child {
    return this.#track(
      spawn(process.execPath, [fixture(name), ...args], {
        stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
      }),
    );
  }

  /**
   * `sh -c '<node> <fixture> …args; exit $?'` in a new session (no controlling terminal), so the
   * node process has a parent of its own — the shell — and no terminal: the Linux credential
   * provider then places it in a session keyed on that shell alone. Output comes as JSON lines.
   */
  nodeInOwnSession(name: string, args: string[]): Child {
    const quote = (value: string) => `'${value.replaceAll("'", "'\\''")}'`;
    const command = [process.execPath, fixture(name), ...args].map(quote).join(' ');
    return this.#track(
      // `; exit $?` keeps the shell from exec'ing node in its place.
      spawn('sh', ['-c', `${command}; exit $?`], {
        stdio: ['ignore', 'pipe', 'pipe'],
        detached: true,
      }),
      true,
    );
  }

  #track(spawned: ChildProcess, group = false): Child {
    const child = new Child(spawned, group);
    this.#all.push(child);
    return child;
  }

  async killAll(): Promise<void> {
    const all = this.#all.splice(0);
    for (const child of all) {
      if (child.process.exitCode !== null || child.process.signalCode !== null) continue;
      try {
        if (child.group) process.kill(-child.pid, 'SIGKILL');
        else child.process.kill('SIGKILL');
      } catch {
        // Already gone.
      }
    }
    await Promise.all(all.map((child) => child.exited));
  }
}

let collectGarbage: (() => void) | undefined;

/** The process's memory after a full garbage collection (twice, so weak references settle). */
export function memoryAfterGc(): NodeJS.MemoryUsage {
  if (!collectGarbage) {
    setFlagsFromString('--expose-gc');
    collectGarbage = runInNewContext('gc') as () => void;
  }
  collectGarbage();
  collectGarbage();
  return process.memoryUsage();
}

export const mib = (bytes: number): number => Math.round((bytes / 1024 / 1024) * 10) / 10;
