/**
 * The reference app: a small secrets agent built only on Bridgekeeper's public API.
 *
 *   node --import tsx examples/secrets-agent/agent.ts --prompt auto|polkit|scripted
 *        [--answers granted,denied] [--polkit-action ID] [--print-polkit-action]
 *        [--vault file.json] [--idle 10m] [--max 12h] [--app bk-secrets]
 *
 * --prompt auto      the OS's own prompt (polkit on Linux); fails, saying what to install, when
 *                    none can prompt — never falls back to the scripted one
 * --prompt polkit    polkit, with the action --polkit-action (print its file with
 *                    --print-polkit-action, install it under /usr/share/polkit-1/actions/)
 * --prompt scripted  answers from --answers (demos and tests; not for real secrets)
 *
 * Methods (see cli.ts for the other side):
 *   vault.accounts                       list account ids and display names (no authorization)
 *   vault.read     { ref }               one field; authorizes the ref's account
 *   vault.readMany { account, refs }     several fields of one account, for `run`
 *   agent.lock / agent.status / agent.grants / agent.revoke
 */

import { userInfo } from 'node:os';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import {
  type AccountRef,
  autoPromptBackend,
  createPolkitBackend,
  createServer,
  HandlerError,
  type PromptBackend,
  type PromptOutcome,
  type PromptRequest,
  polkitActionFile,
  polkitActionFilePath,
  type Server,
} from 'bridgekeeper';
import { ScriptedPromptBackend } from 'bridgekeeper/testing';
import { parseSecretRef, type SecretRef, Vault } from './vault.js';

export const DEFAULT_APP = 'bk-secrets';
/** The polkit action the agent checks (install its file: --print-polkit-action). */
export const DEFAULT_POLKIT_ACTION = 'org.bridgekeeper.secrets-agent.use-account';

/** Parses `90s`, `10m`, `12h`, or plain milliseconds. */
export function parseDuration(text: string): number {
  const match = /^(\d+(?:\.\d+)?)(ms|s|m|h)?$/.exec(text.trim());
  if (!match) throw new Error(`"${text}" is not a duration (try 90s, 10m, 12h).`);
  const unit = { ms: 1, s: 1_000, m: 60_000, h: 3_600_000 }[match[2] ?? 'ms'] ?? 1;
  return Math.round(Number(match[1]) * unit);
}

/** How the agent describes a prompt in its log: verified data plainly, client claims labelled. */
export function describePrompt(request: PromptRequest): string {
  const who = `${request.process.program ?? 'a process'} (pid ${request.process.pid ?? '?'}) in ${request.process.host}`;
  const command = request.process.commandLine?.join(' ');
  const shown = command && command.length > 120 ? `${command.slice(0, 119)}…` : command;
  const commandLine = shown ? ` [command line: ${shown}]` : '';
  const claim = request.claims.name ? `; it says it is "${request.claims.name}"` : '';
  return `Allow ${who} to use "${request.account.displayName}"?${commandLine}${claim}${request.unlocks ? ' [unlocks the app]' : ''}`;
}

export interface AgentOptions {
  app?: string;
  vault: Vault;
  /** Scripted answers, in order; once used up, every prompt is denied. Ignored with `prompt`. */
  answers?: PromptOutcome['result'][];
  /** A real prompt backend (polkit, or whatever `autoPromptBackend` chose). Default: scripted. */
  prompt?: PromptBackend;
  idleTimeoutMs?: number;
  maxLifetimeMs?: number;
  log?: (line: string) => void;
}

/** Builds the agent's server (not yet listening). */
export function createAgent(options: AgentOptions): Server {
  const log = options.log ?? ((line: string) => process.stderr.write(`${line}\n`));
  const vault = options.vault;
  const prompt =
    options.prompt ??
    new ScriptedPromptBackend({
      outcomes: options.answers ?? [],
      onPrompt: (request) => log(`[prompt] ${describePrompt(request)}`),
    });
  const server = createServer({
    app: options.app ?? DEFAULT_APP,
    version: '0.1.0',
    prompt,
    ...(options.idleTimeoutMs ? { idleTimeoutMs: options.idleTimeoutMs } : {}),
    ...(options.maxLifetimeMs ? { maxLifetimeMs: options.maxLifetimeMs } : {}),
    unlock: ({ account }) =>
      log(`[agent] unlocked by a successful prompt for "${account.displayName}"`),
  });
  const accountOf = (id: unknown): AccountRef => {
    const account = vault.account(id);
    return { id: account.id, displayName: account.displayName };
  };

  server.handle('vault.accounts', () => vault.accounts());

  server.handle(
    'vault.read',
    {
      params: (raw) => parseSecretRef(String((raw as { ref?: unknown } | undefined)?.ref ?? '')),
      account: (ref: SecretRef) => accountOf(ref.account),
    },
    (ref) => ({ value: vault.read(ref) }),
  );

  server.handle(
    'vault.readMany',
    {
      params: (raw) => {
        const { account, refs } = (raw ?? {}) as { account?: unknown; refs?: unknown };
        if (
          typeof account !== 'string' ||
          !Array.isArray(refs) ||
          refs.length === 0 ||
          refs.length > 100
        ) {
          throw new Error(
            'readMany needs { account, refs: ["account/item/field", …] } (1–100 refs).',
          );
        }
        const parsed = refs.map((ref) => parseSecretRef(String(ref)));
        if (parsed.some((ref) => ref.account !== account)) {
          throw new Error('Every ref in one readMany call must be of the same account.');
        }
        return { account, refs: parsed };
      },
      account: (params: { account: string; refs: SecretRef[] }) => accountOf(params.account),
    },
    (params) => ({ values: params.refs.map((ref) => vault.read(ref)) }),
  );

  server.handle('agent.lock', () => {
    server.lock();
    log('[agent] locked: every grant revoked');
    return { locked: true };
  });

  server.handle('agent.status', () => ({
    locked: server.authorizer.locked,
    grants: server.authorizer.listGrants().length,
    connections: server.connectionCount,
    prompt: prompt.id,
  }));

  server.handle('agent.grants', () =>
    server.authorizer.listGrants().map((grant) => ({
      session: grant.sessionId,
      scope: grant.scope,
      account: grant.account.displayName,
      host: grant.process.host,
      expiresInMs: grant.expiresInMs,
      idleRemainingMs: grant.idleRemainingMs,
      lifetimeRemainingMs: grant.lifetimeRemainingMs,
    })),
  );

  server.handle('agent.revoke', (raw, context) => {
    const params = (raw ?? {}) as {
      all?: unknown;
      session?: unknown;
      account?: unknown;
      thisSession?: unknown;
    };
    const account = typeof params.account === 'string' ? params.account : undefined;
    if (params.all === true) {
      let count = 0;
      for (const session of new Set(
        server.authorizer.listGrants().map((grant) => grant.sessionId),
      )) {
        count += server.authorizer.revoke({
          sessionId: session,
          ...(account ? { accountId: account } : {}),
        });
      }
      return { revoked: count };
    }
    const sessionId =
      params.thisSession === true
        ? context.session.id
        : typeof params.session === 'string'
          ? params.session
          : undefined;
    if (!sessionId) {
      throw new HandlerError(
        'BAD_REQUEST',
        'Say which grants to revoke: --all, --this-session or --session <id>.',
      );
    }
    return {
      revoked: server.authorizer.revoke({ sessionId, ...(account ? { accountId: account } : {}) }),
    };
  });

  if (options.prompt) {
    // A real backend shows its own dialog; the log says what it was asked.
    server.authorizer.on('prompt', (event) =>
      log(
        `[prompt] asking through ${event.backend}: may ${event.process.program ?? 'a process'} in ${event.process.host} use "${event.account.displayName}"?`,
      ),
    );
  }
  server.authorizer.on('granted', (event) =>
    log(
      `[agent] granted "${event.account.displayName}" to ${event.scope} session ${short(event.sessionId)}`,
    ),
  );
  server.authorizer.on('denied', (event) =>
    log(
      `[agent] refused "${event.account.displayName}" (${event.reason}) for session ${short(event.sessionId)}`,
    ),
  );
  server.authorizer.on('expired', (event) =>
    log(`[agent] grant for "${event.account.displayName}" expired (${event.reason})`),
  );
  server.on('peer-rejected', (event) =>
    log(`[agent] refused a connection: ${event.policy}: ${event.reason}`),
  );
  return server;
}

function short(sessionId: string): string {
  return sessionId.length > 24 ? `${sessionId.slice(0, 24)}…` : sessionId;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      app: { type: 'string', default: DEFAULT_APP },
      vault: { type: 'string' },
      prompt: { type: 'string' },
      answers: { type: 'string', default: '' },
      'polkit-action': { type: 'string', default: DEFAULT_POLKIT_ACTION },
      'print-polkit-action': { type: 'boolean', default: false },
      idle: { type: 'string', default: '10m' },
      max: { type: 'string', default: '12h' },
    },
  });
  const actionId = values['polkit-action'] ?? DEFAULT_POLKIT_ACTION;
  if (values['print-polkit-action']) {
    // The file to install (as root) at the path printed on stderr.
    process.stderr.write(`secrets-agent: install this as ${polkitActionFilePath(actionId)}\n`);
    process.stdout.write(polkitActionFile({ actionId, owner: userInfo().username }));
    return;
  }
  if (values.prompt !== 'scripted' && values.prompt !== 'polkit' && values.prompt !== 'auto') {
    process.stderr.write(
      'secrets-agent: choose how the person is asked with --prompt:\n' +
        '  auto      the OS prompt (polkit on Linux), or an error saying what to install\n' +
        '  polkit    polkit (needs its action file: see --print-polkit-action)\n' +
        '  scripted  answers from --answers, for demos and tests; not for real secrets\n',
    );
    process.exit(2);
  }
  let prompt: PromptBackend | undefined;
  if (values.prompt === 'auto') {
    prompt = await autoPromptBackend({ polkit: { actionId } }).catch((error: unknown) => {
      throw new Error(
        `${error instanceof Error ? error.message : String(error)} (This agent prints its action file with --print-polkit-action.)`,
      );
    });
  } else if (values.prompt === 'polkit') {
    const polkit = createPolkitBackend({ actionId });
    const diagnosis = await polkit.diagnose();
    if (!diagnosis.available) {
      throw new Error(
        `polkit cannot prompt: ${diagnosis.detail}. Print the action file with --print-polkit-action.`,
      );
    }
    prompt = polkit;
  }
  const answers = (values.answers ?? '')
    .split(',')
    .map((answer) => answer.trim())
    .filter(Boolean) as PromptOutcome['result'][];
  const server = createAgent({
    app: values.app ?? DEFAULT_APP,
    vault: await Vault.load(values.vault),
    answers,
    ...(prompt ? { prompt } : {}),
    idleTimeoutMs: parseDuration(values.idle ?? '10m'),
    maxLifetimeMs: parseDuration(values.max ?? '12h'),
  });
  const address = await server.listen();
  process.stderr.write(
    prompt
      ? `[agent] listening at ${address} (prompt: ${prompt.id} — the operating system asks you)\n`
      : `[agent] listening at ${address} (scripted prompt: approvals are simulated, answers: ${answers.join(',') || 'deny all'})\n`,
  );
  // Tell a parent process (the demo) that we are ready.
  process.send?.({ ready: address });
  const stop = () => {
    void server.close().then(() => process.exit(0));
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

// Run directly (not imported by the demo): compared as URLs, so it also holds for Windows paths.
if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main().catch((error: unknown) => {
    process.stderr.write(
      `secrets-agent: ${error instanceof Error ? error.message : String(error)}\n`,
    );
    process.exit(1);
  });
}
