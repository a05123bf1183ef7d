/**
 * The reference app: a small secrets agent built only on Bridgekeeper's public API.
 *
 *   node --import tsx examples/secrets-agent/agent.ts --prompt scripted [--answers granted,denied]
 *        [--vault file.json] [--idle 10m] [--max 12h] [--app bk-secrets]
 *
 * Methods (see cli.ts for the other side):
 *   vault.accounts                       list account ids and display names (no authorization)
 *   vault.read     { ref }               one field; authorizes the ref's account
 *   vault.readMany { account, refs }     several fields of one account, for `run`
 *   agent.lock / agent.status / agent.grants / agent.revoke
 */

import { parseArgs } from 'node:util';
import {
  type AccountRef,
  createServer,
  HandlerError,
  type PromptOutcome,
  type PromptRequest,
  type Server,
} from 'bridgekeeper';
import { ScriptedPromptBackend } from 'bridgekeeper/testing';
import { parseSecretRef, type SecretRef, Vault } from './vault.js';

export const DEFAULT_APP = 'bk-secrets';

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
  /** Scripted answers, in order; once used up, every prompt is denied. */
  answers?: PromptOutcome['result'][];
  idleTimeoutMs?: number;
  maxLifetimeMs?: number;
  log?: (line: string) => void;
}

/** Builds the agent's server (not yet listening). */
export function createAgent(options: AgentOptions): Server {
  const log = options.log ?? ((line: string) => process.stderr.write(`${line}\n`));
  const vault = options.vault;
  const prompt = new ScriptedPromptBackend({
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
      idle: { type: 'string', default: '10m' },
      max: { type: 'string', default: '12h' },
    },
  });
  if (values.prompt !== 'scripted') {
    process.stderr.write(
      'secrets-agent: choose how the person is asked with --prompt. Only "scripted" exists so far\n' +
        '(answers from --answers, for demos and tests; not for real secrets). OS prompts (polkit,\n' +
        'Windows Hello, Touch ID) come as their backends land.\n',
    );
    process.exit(2);
  }
  const answers = (values.answers ?? '')
    .split(',')
    .map((answer) => answer.trim())
    .filter(Boolean) as PromptOutcome['result'][];
  const server = createAgent({
    app: values.app ?? DEFAULT_APP,
    vault: await Vault.load(values.vault),
    answers,
    idleTimeoutMs: parseDuration(values.idle ?? '10m'),
    maxLifetimeMs: parseDuration(values.max ?? '12h'),
  });
  const address = await server.listen();
  process.stderr.write(
    `[agent] listening at ${address} (scripted prompt: approvals are simulated, answers: ${answers.join(',') || 'deny all'})\n`,
  );
  // Tell a parent process (the demo) that we are ready.
  process.send?.({ ready: address });
  const stop = () => {
    void server.close().then(() => process.exit(0));
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

if (import.meta.url === `file://${process.argv[1]}`) {
  main().catch((error: unknown) => {
    process.stderr.write(
      `secrets-agent: ${error instanceof Error ? error.message : String(error)}\n`,
    );
    process.exit(1);
  });
}
