/**
 * Real processes for the adversarial tests: the integration app and client run as their own
 * processes, the adversarial raw clients, and a registry that kills whatever a test started.
 * The spawning itself is the Linux fixtures' (test/fixtures/linux/peer-server.ts).
 */

import { execFileSync, type SpawnOptions } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { expect } from 'vitest';
import { hasCommand, type Spawned, spawnProcess } from '../../fixtures/linux/peer-server.js';

export {
  hasCommand,
  runInPty,
  type Spawned,
  shellQuote,
} from '../../fixtures/linux/peer-server.js';

export const isRoot = process.getuid?.() === 0;
export const isLinux = process.platform === 'linux';

/** The tsx loader, for running the TypeScript fixtures as processes. */
export const TSX = createRequire(import.meta.url).resolve('tsx');

/** A file under test/fixtures/adversarial/. */
export const adversarialFixture = (name: string): string =>
  fileURLToPath(new URL(`../../fixtures/adversarial/${name}`, import.meta.url));

/** A file under test/fixtures/integration/. */
export const integrationFixture = (name: string): string =>
  fileURLToPath(new URL(`../../fixtures/integration/${name}`, import.meta.url));

/**
 * The real python executable (not a version manager's shell shim, which would fork helpers and
 * make `/proc/<pid>/exe` a shell for a while), or undefined without python3 and perl.
 */
export const python: string | undefined = (() => {
  if (!hasCommand('python3') || !hasCommand('perl')) return undefined;
  try {
    return execFileSync('python3', ['-c', 'import sys; print(sys.executable)'], {
      encoding: 'utf8',
    }).trim();
  } catch {
    return undefined;
  }
})();

/** The processes a test started; `killAll()` (in afterEach) SIGKILLs those still running. */
export class Processes {
  readonly #running = new Set<Spawned>();

  /** Spawns a process (stdout and stderr collected into `output`) and tracks it. */
  spawn(command: string, args: readonly string[], options: SpawnOptions = {}): Spawned {
    const spawned = spawnProcess(command, args, options);
    this.track(spawned);
    return spawned;
  }

  /** Tracks a process started elsewhere until it exits. */
  track(spawned: Spawned): Spawned {
    this.#running.add(spawned);
    void spawned.exited.finally(() => this.#running.delete(spawned)).catch(() => {});
    return spawned;
  }

  async killAll(): Promise<void> {
    const running = [...this.#running];
    for (const spawned of running) spawned.child.kill('SIGKILL');
    await Promise.all(running.map((spawned) => spawned.exited.catch(() => {})));
  }
}

/** The JSON lines (those starting with `{`) a process printed. */
export function jsonLines<T = Record<string, unknown>>(output: string): T[] {
  return output
    .split(/\r?\n/)
    .filter((line) => line.startsWith('{'))
    .map((line) => JSON.parse(line) as T);
}

/** The integration app (test/fixtures/integration/app.ts) running as its own process. */
export interface AppProcess extends Spawned {
  /** Session ids it prompted for, in order (its scripted prompt grants each). */
  readonly prompts: () => string[];
}

/**
 * Starts the integration app on `socketPath` and waits until it listens. Its methods: `echo`,
 * `hang` (never answers), `secret` (needs account "work"; every prompt is granted and printed).
 */
export async function startAppProcess(
  processes: Processes,
  socketPath: string,
): Promise<AppProcess> {
  const spawned = processes.spawn(
    process.execPath,
    ['--import', TSX, integrationFixture('app.ts'), socketPath],
    { stdio: ['ignore', 'pipe', 'pipe', 'ipc'] },
  );
  let stdout = '';
  spawned.child.stdout!.on('data', (chunk: string) => {
    stdout += chunk;
  });
  await new Promise<void>((resolve, reject) => {
    spawned.child.once('message', () => resolve());
    void spawned.exited.then((result) =>
      reject(new Error(`the app exited before listening (${result.code}): ${result.output}`)),
    );
  });
  return {
    ...spawned,
    prompts: () =>
      stdout
        .split('\n')
        .filter((line) => line.startsWith('PROMPT '))
        .map((line) => line.slice('PROMPT '.length)),
  };
}

/** What the integration client (test/fixtures/integration/client.ts) printed. */
export interface ClientOutcome {
  ok: boolean;
  result?: unknown;
  session?: { id: string; scope: string };
  /** The client's own view of its session (describeOwnSession). */
  own?: string;
  code?: string;
  message?: string;
}

/** The command line of the integration client calling `method`, as a list of words. */
export function clientArgs(socketPath: string, method: string): string[] {
  return ['--import', TSX, integrationFixture('client.ts'), socketPath, method];
}

/** Starts the integration client (a real process) calling `method`; `outcome` is what it printed. */
export function startClientProcess(
  processes: Processes,
  socketPath: string,
  method: string,
): Spawned & { outcome: Promise<ClientOutcome> } {
  const spawned = processes.spawn(process.execPath, clientArgs(socketPath, method));
  const outcome = spawned.exited.then(({ output }) => {
    const [line] = jsonLines<ClientOutcome>(output);
    if (!line) throw new Error(`the client printed no outcome: ${output}`);
    return line;
  });
  outcome.catch(() => {});
  return { ...spawned, outcome };
}

/** One event printed by test/fixtures/adversarial/raw-client.cjs. */
export interface RawEvent {
  conversation: number;
  frame?: {
    id?: unknown;
    method?: string;
    params?: Record<string, unknown>;
    result?: unknown;
    error?: { code: number; message: string; data?: { code?: string } };
  };
  error?: string;
  closed?: true;
}

/**
 * Runs test/fixtures/adversarial/raw-client.cjs: each conversation (a list of JSON-RPC messages
 * written by hand) on its own connection, from one real process. Resolves with what it printed.
 */
export async function runRawClient(
  processes: Processes,
  socketPath: string,
  conversations: readonly (readonly object[])[],
): Promise<{ pid: number; events: RawEvent[] }> {
  const spawned = processes.spawn(process.execPath, [
    adversarialFixture('raw-client.cjs'),
    socketPath,
    JSON.stringify(conversations),
  ]);
  const { code, output } = await spawned.exited;
  if (code !== 0) throw new Error(`raw-client exited with ${code}: ${output}`);
  return { pid: spawned.child.pid!, events: jsonLines<RawEvent>(output) };
}

/** The lines of `output` that start with `tag` (and a space), without the tag. */
export function taggedLines(output: string, tag: string): string[] {
  return output
    .split('\n')
    .filter((line) => line.startsWith(`${tag} `))
    .map((line) => line.slice(tag.length + 1));
}

/** The uid (and gid) the squatter runs as: nobody. */
export const NOBODY = 65534;

/**
 * Starts test/fixtures/integration/squatter.cjs as uid 65534 (needs root and setpriv): it listens
 * at `path` and keeps in `report` how many bytes clients sent it. Resolves once it listens (it
 * writes 0 to the report then); `path` and `report` must be in directories that uid may write.
 */
export async function startSquatter(
  processes: Processes,
  path: string,
  report: string,
): Promise<Spawned> {
  const squatter = processes.spawn('setpriv', [
    '--reuid',
    String(NOBODY),
    '--regid',
    String(NOBODY),
    '--clear-groups',
    process.execPath,
    integrationFixture('squatter.cjs'),
    path,
    report,
  ]);
  await expect.poll(() => existsSync(report), { timeout: 10_000 }).toBe(true);
  expect(squatter.child.exitCode).toBeNull();
  return squatter;
}

/** How many bytes the squatter has received so far. */
export const bytesReceived = (report: string): number => Number(readFileSync(report, 'utf8'));
