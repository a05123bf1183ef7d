/**
 * The reference CLI for the secrets agent, built only on Bridgekeeper's public API.
 *
 *   bk-secrets read <account>/<item>/<field>
 *   bk-secrets run [--env NAME=account/item/field]... -- <command> [args...]
 *       (also resolves variables already set to bk://account/item/field)
 *   bk-secrets accounts | whoami | status | lock | grants
 *   bk-secrets revoke (--all | --this-session | --session <id>) [--account <id>]
 *
 * Run it with: node --import tsx examples/secrets-agent/cli.ts <command>
 */

import { spawn } from 'node:child_process';
import { parseArgs } from 'node:util';
import { BridgekeeperError, type Client, connect, describeOwnSession } from 'bridgekeeper';

const APP = process.env.BK_SECRETS_APP ?? 'bk-secrets';

const USAGE = `usage: bk-secrets <command>
  read <account>/<item>/<field>      print one secret
  run [--env NAME=ref]... -- <cmd>   run <cmd> with secrets in its environment
                                     (variables set to bk://account/item/field are resolved too)
  accounts                           list accounts
  whoami                             show which session the agent placed this terminal in
  status | lock | grants             agent state, lock it, live authorizations
  revoke (--all | --this-session | --session <id>) [--account <id>]`;

class UsageError extends Error {}

async function open(): Promise<Client> {
  const client = await connect({
    app: APP,
    name: 'bk-secrets',
    version: '0.1.0',
    unavailableHint:
      'Start it with: npm run agent (or node --import tsx examples/secrets-agent/agent.ts --prompt scripted).',
  });
  client.on('prompt', ({ account, backend }) => {
    process.stderr.write(
      `bk-secrets: approve access to "${account.displayName}" in the ${backend} prompt…\n`,
    );
  });
  client.on('queued', ({ position }) => {
    process.stderr.write(
      `bk-secrets: waiting for ${position} other authorization prompt(s) first…\n`,
    );
  });
  return client;
}

function formatDuration(ms: number): string {
  const seconds = Math.max(0, Math.round(ms / 1000));
  if (seconds < 60) return `${seconds}s`;
  const minutes = Math.floor(seconds / 60);
  if (minutes < 60) return `${minutes}m${String(seconds % 60).padStart(2, '0')}s`;
  return `${Math.floor(minutes / 60)}h${String(minutes % 60).padStart(2, '0')}m`;
}

async function runCommand(client: Client, args: string[]): Promise<number> {
  const dash = args.indexOf('--');
  if (dash === -1 || dash === args.length - 1) throw new UsageError('run needs -- <command>');
  const { values } = parseArgs({
    args: args.slice(0, dash),
    options: { env: { type: 'string', multiple: true } },
  });
  const wanted = new Map<string, string>();
  for (const [name, value] of Object.entries(process.env)) {
    if (value?.startsWith('bk://')) wanted.set(name, value);
  }
  for (const pair of values.env ?? []) {
    const eq = pair.indexOf('=');
    if (eq <= 0) throw new UsageError(`--env wants NAME=account/item/field, not "${pair}"`);
    wanted.set(pair.slice(0, eq), pair.slice(eq + 1));
  }
  // One request per account, so each account is authorized (and prompted for) on its own.
  const byAccount = new Map<string, Array<[string, string]>>();
  for (const [name, ref] of wanted) {
    const account = ref.replace(/^bk:\/\//, '').split('/')[0] ?? '';
    byAccount.set(account, [...(byAccount.get(account) ?? []), [name, ref]]);
  }
  const env: NodeJS.ProcessEnv = { ...process.env };
  for (const [account, entries] of byAccount) {
    const { values: secrets } = await client.request<{ values: string[] }>('vault.readMany', {
      account,
      refs: entries.map(([, ref]) => ref),
    });
    entries.forEach(([name], index) => {
      env[name] = secrets[index];
    });
  }
  await client.close();
  const [command, ...rest] = args.slice(dash + 1) as [string, ...string[]];
  const child = spawn(command, rest, { stdio: 'inherit', env });
  return new Promise((resolve) => {
    child.on('error', (error) => {
      process.stderr.write(`bk-secrets: cannot run ${command}: ${error.message}\n`);
      resolve(127);
    });
    child.on('exit', (code, signal) => resolve(code ?? (signal ? 128 : 1)));
  });
}

async function main(argv: string[]): Promise<number> {
  const [command, ...args] = argv;
  if (!command || command === 'help' || command === '--help') {
    process.stdout.write(`${USAGE}\n`);
    return command ? 0 : 2;
  }
  const client = await open();
  try {
    switch (command) {
      case 'read': {
        if (args.length !== 1) throw new UsageError('read needs one reference: account/item/field');
        const { value } = await client.request<{ value: string }>('vault.read', { ref: args[0] });
        process.stdout.write(`${value}\n`);
        return 0;
      }
      case 'run':
        return await runCommand(client, args);
      case 'accounts': {
        const accounts =
          await client.request<Array<{ id: string; displayName: string }>>('vault.accounts');
        for (const account of accounts)
          process.stdout.write(`${account.id}\t${account.displayName}\n`);
        return 0;
      }
      case 'whoami': {
        const { session, server } = client;
        const scope =
          session.scope === 'terminal'
            ? 'this terminal session (subshells included)'
            : 'this process only (no terminal: each invocation from a new parent asks again)';
        process.stdout.write(
          `agent:   ${server.name} ${server.version}\nsession: ${session.id}\nscope:   ${scope}\n`,
        );
        // The CLI's own computation, for diagnostics only: the agent decided from the kernel's view.
        const mine = await describeOwnSession().catch(() => undefined);
        if (mine) {
          process.stdout.write(
            mine.id === session.id
              ? `host:    ${mine.process.host} (this process computes the same session)\n`
              : `note:    this process computes session ${mine.id}; the agent's view is the one that counts\n`,
          );
        }
        return 0;
      }
      case 'status': {
        const status = await client.request<Record<string, unknown>>('agent.status');
        for (const [key, value] of Object.entries(status))
          process.stdout.write(`${key}: ${String(value)}\n`);
        return 0;
      }
      case 'lock':
        await client.request('agent.lock');
        process.stdout.write('locked: every authorization revoked\n');
        return 0;
      case 'grants': {
        const grants =
          await client.request<
            Array<{
              session: string;
              scope: string;
              account: string;
              host: string;
              expiresInMs: number;
              lifetimeRemainingMs: number;
            }>
          >('agent.grants');
        if (grants.length === 0) process.stdout.write('no live authorizations\n');
        for (const grant of grants) {
          const mine = grant.session === client.session.id ? ' (this session)' : '';
          process.stdout.write(
            `${grant.account}\t${grant.scope} ${grant.host}${mine}\tidle expiry in ${formatDuration(grant.expiresInMs)}, hard limit in ${formatDuration(grant.lifetimeRemainingMs)}\t${grant.session}\n`,
          );
        }
        return 0;
      }
      case 'revoke': {
        const { values } = parseArgs({
          args,
          options: {
            all: { type: 'boolean' },
            'this-session': { type: 'boolean' },
            session: { type: 'string' },
            account: { type: 'string' },
          },
        });
        const { revoked } = await client.request<{ revoked: number }>('agent.revoke', {
          all: values.all === true,
          thisSession: values['this-session'] === true,
          ...(values.session ? { session: values.session } : {}),
          ...(values.account ? { account: values.account } : {}),
        });
        process.stdout.write(`revoked ${revoked} authorization(s)\n`);
        return 0;
      }
      default:
        throw new UsageError(`unknown command "${command}"`);
    }
  } finally {
    await client.close();
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (error: unknown) => {
    if (error instanceof UsageError) {
      process.stderr.write(`bk-secrets: ${error.message}\n${USAGE}\n`);
      process.exitCode = 2;
    } else if (error instanceof BridgekeeperError) {
      process.stderr.write(`bk-secrets: ${error.message} [${error.code}]\n`);
      process.exitCode = 1;
    } else {
      process.stderr.write(
        `bk-secrets: ${error instanceof Error ? error.message : String(error)}\n`,
      );
      process.exitCode = 1;
    }
  },
);
