/**
 * The app the socket fuzzing in test/adversarial/fuzz.test.ts attacks: a real server on a real
 * Unix socket in a 0700 temporary directory, with one method that needs an account (approved
 * by a scripted prompt, except the account `denied`) and several that do not; a well-behaved
 * client that keeps using it meanwhile; and the recorders the tests assert on.
 */

import { chmod, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { type Client, connect, createServer, HandlerError, type Server } from 'bridgekeeper';
import { ScriptedPromptBackend } from 'bridgekeeper/testing';

export const APP = 'bk-fuzz';
export const APP_VERSION = '9.9.9-fuzz';

/** A detail a crashing handler holds; it must never reach a client (docs/protocol.md §6). */
export const SECRET_DETAIL = 'fuzz-handler-internal-detail-7f3a';

/** Accounts the app knows, by id: names that trip object lookups are ordinary ids here. */
export const ACCOUNTS = new Map<string, string>([
  ['work', 'Acme Corp (work)'],
  ['home', 'Home'],
  ['denied', 'Refused at the prompt'],
  ['__proto__', 'Account "__proto__"'],
  ['constructor', 'Account "constructor"'],
  ['toString', 'Account "toString"'],
  ...Array.from({ length: 200 }, (_, n) => [`acct-${n}`, `Account ${n}`] as [string, string]),
]);

/** What the server did that the tests check afterwards. */
export interface AppRecord {
  /**
   * `error` events the fuzz cases provoke on purpose, counted: a handler that crashes
   * (`fuzz.fail`), a result too large or too deep to send (`fuzz.echo`).
   */
  provokedErrors: number;
  /** Any other `error` event, kept whole. */
  unexpectedErrors: { context: string; error: unknown }[];
  /** `fuzz.wait` handlers running now. */
  waitsRunning: number;
}

export interface FuzzApp {
  server: Server;
  path: string;
  record: AppRecord;
  close(): Promise<void>;
}

/**
 * Starts the app. Its handshake timeout is long (60 s), so that a connection the fuzzer
 * expects to be closed at once is not closed by the timeout instead: a missed close shows as a
 * hang in the case that caused it.
 */
export async function startFuzzApp(): Promise<FuzzApp> {
  const directory = await mkdtemp(join(tmpdir(), 'bk-fuzz-'));
  await chmod(directory, 0o700);
  const path = join(directory, 'agent.sock');
  const record: AppRecord = { provokedErrors: 0, unexpectedErrors: [], waitsRunning: 0 };
  const prompt = new ScriptedPromptBackend({
    decide: ({ account }) => ({ result: account.id === 'denied' ? 'denied' : 'granted' }),
  });
  const server = createServer({
    app: APP,
    version: APP_VERSION,
    prompt,
    handshakeTimeoutMs: 60_000,
  });
  server.on('error', ({ context, error }) => {
    const provoked =
      (context === 'handler' && error instanceof Error && error.message.includes(SECRET_DETAIL)) ||
      context === 'sending a result';
    if (provoked) record.provokedErrors += 1;
    else record.unexpectedErrors.push({ context, error });
  });

  server.handle('fuzz.echo', (params) => ({ params: params === undefined ? null : params }));
  server.handle(
    'fuzz.account',
    {
      params: (raw: unknown) => {
        if (
          typeof raw !== 'object' ||
          raw === null ||
          Array.isArray(raw) ||
          typeof (raw as { account?: unknown }).account !== 'string'
        ) {
          throw new Error('fuzz.account needs { account: string }.');
        }
        return raw as { account: string };
      },
      account: ({ account }) => {
        const displayName = ACCOUNTS.get(account);
        if (displayName === undefined) {
          throw new HandlerError('ACCOUNT_NOT_FOUND', 'No such account.');
        }
        return { id: account, displayName };
      },
    },
    (_params, context) => ({ account: context.account?.id }),
  );
  server.handle('fuzz.wait', (_params, context) => {
    record.waitsRunning += 1;
    return new Promise((_resolve, reject) => {
      context.signal.addEventListener(
        'abort',
        () => {
          record.waitsRunning -= 1;
          reject(context.signal.reason);
        },
        { once: true },
      );
    });
  });
  server.handle('fuzz.fail', () => {
    throw new Error(`handler crashed: ${SECRET_DETAIL}`);
  });
  server.handle('fuzz.app-error', () => {
    throw new HandlerError('FUZZ_APP_ERROR', 'The app refused this.', { data: { hint: 'fuzz' } });
  });

  await server.listen({ path });
  return {
    server,
    path,
    record,
    close: async () => {
      server.destroy();
      await server.close();
      await rm(directory, { recursive: true, force: true });
    },
  };
}

/** A client that uses the app the way it should, over and over, and checks every answer. */
export interface WellBehavedClient {
  readonly answered: number;
  readonly failures: string[];
  readonly session: { id: string; scope: string };
  /** Stops after the request in progress and closes the connection. */
  stop(): Promise<void>;
}

export async function startWellBehavedClient(path: string): Promise<WellBehavedClient> {
  const client: Client = await connect({ app: APP, path, name: 'well-behaved', version: '1.0.0' });
  const failures: string[] = [];
  let answered = 0;
  let stopping = false;
  const loop = (async () => {
    for (let n = 0; !stopping; n++) {
      try {
        const params = { n, text: 'é€😀\u2028', nested: [{ __ok: true }] };
        const echo = await client.request('fuzz.echo', params);
        if (JSON.stringify(echo) !== JSON.stringify({ params })) {
          failures.push(`fuzz.echo #${n} answered ${JSON.stringify(echo)}`);
        }
        answered += 1;
        const account = ['work', 'home', `acct-${n % 200}`][n % 3]!;
        const used = await client.request('fuzz.account', { account });
        if (JSON.stringify(used) !== JSON.stringify({ account })) {
          failures.push(`fuzz.account(${account}) #${n} answered ${JSON.stringify(used)}`);
        }
        answered += 1;
      } catch (error) {
        failures.push(`request #${n} failed: ${(error as Error).stack ?? String(error)}`);
        return;
      }
    }
  })();
  return {
    get answered() {
      return answered;
    },
    failures,
    session: client.session,
    stop: async () => {
      stopping = true;
      await loop;
      await client.close();
    },
  };
}

/** Records unhandled rejections and uncaught exceptions while installed. */
export function recordProcessFaults(): { faults: string[]; uninstall(): void } {
  const faults: string[] = [];
  const onRejection = (reason: unknown) => {
    faults.push(`unhandledRejection: ${(reason as Error)?.stack ?? String(reason)}`);
  };
  const onException = (error: Error) => {
    faults.push(`uncaughtException: ${error.stack ?? String(error)}`);
  };
  process.on('unhandledRejection', onRejection);
  process.on('uncaughtException', onException);
  return {
    faults,
    uninstall: () => {
      process.off('unhandledRejection', onRejection);
      process.off('uncaughtException', onException);
    },
  };
}

type Gc = () => void;
let gcFunction: Gc | undefined | null = null;

/** Node's gc(), when it can be had (global, or enabled at run time); undefined otherwise. */
export function collectGarbage(): boolean {
  if (gcFunction === null) {
    gcFunction = (globalThis as { gc?: Gc }).gc;
    if (!gcFunction) {
      try {
        setFlagsFromString('--expose-gc');
        gcFunction = runInNewContext('gc') as Gc;
      } catch {
        gcFunction = undefined;
      }
    }
  }
  if (!gcFunction) return false;
  gcFunction();
  gcFunction();
  return true;
}

export interface MemorySample {
  heapUsed: number;
  arrayBuffers: number;
  rss: number;
  collected: boolean;
}

export async function sampleMemory(): Promise<MemorySample> {
  // Let closes and timers that release buffers run first.
  await new Promise((resolve) => setTimeout(resolve, 50));
  const collected = collectGarbage();
  const { heapUsed, arrayBuffers, rss } = process.memoryUsage();
  return { heapUsed, arrayBuffers, rss, collected };
}
