/**
 * `npm run demo`: a narrated scenario on real sockets, real processes and real terminals (ptys
 * made by util-linux `script`). The agent's prompt is the scripted backend — the transcript
 * says so — because a demo cannot put a finger on a fingerprint reader.
 *
 * Each step checks what it claims (prompt or no prompt, exit code) and the demo exits 1 if
 * the library did not behave as narrated.
 */

import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const tsxLoader = createRequire(import.meta.url).resolve('tsx');
const IDLE_SECONDS = 5;
const APP = 'bk-demo';

const bold = (text: string) => (process.stdout.isTTY ? `\x1b[1m${text}\x1b[0m` : text);
const dim = (text: string) => (process.stdout.isTTY ? `\x1b[2m${text}\x1b[0m` : text);
const say = (text = '') => process.stdout.write(`${text}\n`);
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

function requireTool(tool: string, why: string): void {
  try {
    execFileSync('sh', ['-c', `command -v ${tool}`], { stdio: 'ignore' });
  } catch {
    say(`The demo needs \`${tool}\` (${why}); install util-linux / bsdutils.`);
    process.exit(1);
  }
}

/** A real terminal: a pty from `script`, running bash, fed one command at a time. */
class Terminal {
  readonly #child: ChildProcess;
  #buffer = '';
  #seq = 0;

  constructor(
    readonly name: string,
    env: NodeJS.ProcessEnv,
  ) {
    this.#child = spawn('script', ['-qfec', 'bash --norc --noprofile', '/dev/null'], {
      cwd: root,
      env,
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    this.#child.stdout!.setEncoding('utf8');
    this.#child.stdout!.on('data', (chunk: string) => {
      this.#buffer += chunk;
    });
    this.#child.stdin!.write(
      'stty -echo; PS1=; PS2=; bind "set enable-bracketed-paste off" 2>/dev/null\n',
    );
  }

  /** Runs a command line in this terminal; resolves with its output (stdout+stderr, as the person sees it) and exit code. */
  async run(command: string, timeoutMs = 30_000): Promise<{ output: string; code: number }> {
    const id = ++this.#seq;
    const begin = `__BK_BEGIN_${id}__`;
    const end = new RegExp(`__BK_END_${id}__ (\\d+)`);
    this.#child.stdin!.write(`echo ${begin}; ${command}; echo __BK_END_${id}__ $?\n`);
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const start = this.#buffer.indexOf(begin);
      const match = start === -1 ? null : end.exec(this.#buffer.slice(start));
      if (match) {
        const text = this.#buffer.slice(start + begin.length, start + match.index);
        this.#buffer = this.#buffer.slice(start + match.index + match[0].length);
        const output = text
          // biome-ignore lint/suspicious/noControlCharactersInRegex: strips the terminal's escape sequences.
          .replace(/\x1b\[[0-9;?]*[A-Za-z]/g, '')
          .replace(/\r/g, '')
          .trim();
        return { output, code: Number(match[1]) };
      }
      if (Date.now() > deadline)
        throw new Error(`terminal ${this.name}: "${command}" did not finish`);
      await sleep(20);
    }
  }

  close(): void {
    this.#child.stdin!.end('exit\n');
    setTimeout(() => this.#child.kill('SIGKILL'), 2_000).unref();
  }
}

async function main(): Promise<void> {
  if (process.platform !== 'linux') {
    say(
      'The demo runs on Linux (it uses ptys from util-linux `script` and Linux peer credentials).',
    );
    process.exit(1);
  }
  requireTool('script', 'it gives each demo terminal a real pty');
  requireTool('setsid', 'it starts a process in a new session');

  const work = mkdtempSync(join(tmpdir(), 'bk-demo-'));
  const runtimeDir = join(work, 'run');
  const bin = join(work, 'bin');
  mkdirSync(runtimeDir, { mode: 0o700 });
  mkdirSync(bin);
  const cli = join(root, 'examples/secrets-agent/cli.ts');
  writeFileSync(
    join(bin, 'bk-secrets'),
    `#!/bin/sh\nexec "${process.execPath}" --import "${tsxLoader}" "${cli}" "$@"\n`,
  );
  chmodSync(join(bin, 'bk-secrets'), 0o755);
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    XDG_RUNTIME_DIR: runtimeDir,
    BK_SECRETS_APP: APP,
    PATH: `${bin}:${process.env.PATH ?? ''}`,
    TERM: 'dumb',
  };

  say(bold('Bridgekeeper demo: a secrets agent and its CLI'));
  say(dim('Real Unix socket, real processes, real terminals (ptys). The authorization prompt is'));
  say(dim('the SCRIPTED backend: it answers from a list instead of asking a person.'));
  say(dim('The terminals are ptys the demo opens itself, so prompts name their host "node" (the'));
  say(dim('demo); in a desktop terminal they name it: "GNOME Terminal", "kitty", "tmux", …'));
  say();

  const answers = ['granted', 'granted', 'granted', 'granted', 'granted', 'denied'];
  const agentLog: string[] = [];
  const agent = spawn(
    process.execPath,
    [
      '--import',
      tsxLoader,
      join(root, 'examples/secrets-agent/agent.ts'),
      '--app',
      APP,
      '--prompt',
      'scripted',
      '--answers',
      answers.join(','),
      '--idle',
      `${IDLE_SECONDS}s`,
    ],
    { cwd: root, env, stdio: ['ignore', 'inherit', 'pipe', 'ipc'] },
  );
  agent.stderr!.setEncoding('utf8');
  let partial = '';
  agent.stderr!.on('data', (chunk: string) => {
    partial += chunk;
    const lines = partial.split('\n');
    partial = lines.pop() ?? '';
    for (const line of lines) {
      agentLog.push(line);
      say(`   ${dim('agent │')} ${line}`);
    }
  });
  const ready = await new Promise<string>((resolve, reject) => {
    agent.once('message', (message: { ready?: string }) => resolve(String(message.ready)));
    agent.once('exit', (code) =>
      reject(new Error(`the agent exited (${code}) before it was ready`)),
    );
  });
  say(
    dim(`   (agent pid ${agent.pid}, socket ${ready}, idle timeout ${IDLE_SECONDS}s for the demo)`),
  );

  const terminalA = new Terminal('A', env);
  const terminalB = new Terminal('B', env);
  let failures = 0;
  const prompts = () => agentLog.filter((line) => line.startsWith('[prompt]')).length;

  async function step(
    title: string,
    terminal: Terminal,
    command: string,
    expect: { prompt: boolean; code?: number },
  ): Promise<void> {
    say();
    say(bold(title));
    const before = prompts();
    say(`   ${terminal.name}$ ${command}`);
    const { output, code } = await terminal.run(command);
    for (const line of output.split('\n').filter(Boolean)) say(`      ${line}`);
    await sleep(150); // let the agent's log lines for this step arrive
    const prompted = prompts() > before;
    const okPrompt = prompted === expect.prompt;
    const okCode = code === (expect.code ?? 0);
    const verdict = okPrompt && okCode ? '✓' : '✗';
    say(
      `   ${verdict} ${prompted ? 'prompted' : 'no prompt'}, exit ${code}` +
        (okPrompt && okCode
          ? ''
          : `  (expected ${expect.prompt ? 'a prompt' : 'no prompt'}, exit ${expect.code ?? 0})`),
    );
    if (!(okPrompt && okCode)) failures++;
  }

  try {
    await step(
      '1. First read in terminal A: the agent asks the person',
      terminalA,
      'bk-secrets read work/db/password',
      {
        prompt: true,
      },
    );
    await step(
      '2. Second read in the same terminal: no prompt',
      terminalA,
      'bk-secrets read work/db/username',
      {
        prompt: false,
      },
    );
    await step(
      '3. A subshell in the same terminal shares the authorization',
      terminalA,
      "bash -c 'bk-secrets read work/deploy-token/token'",
      { prompt: false },
    );
    await step('4. Which session is this?', terminalA, 'bk-secrets whoami', { prompt: false });
    await step(
      '5. A new session (setsid, no terminal) is a different session: prompt again',
      terminalA,
      'setsid -w bk-secrets read work/db/password',
      { prompt: true },
    );
    await step(
      '6. Another terminal window (terminal B): prompt again',
      terminalB,
      'bk-secrets read work/db/password',
      {
        prompt: true,
      },
    );
    await step('7. Live authorizations', terminalA, 'bk-secrets grants', { prompt: false });
    await step('8. Lock the agent: every authorization is revoked', terminalA, 'bk-secrets lock', {
      prompt: false,
    });
    await step(
      '9. The next read prompts again (and a success unlocks)',
      terminalA,
      'bk-secrets read work/db/password',
      {
        prompt: true,
      },
    );
    say();
    say(bold(`10. Idle timeout: waiting ${IDLE_SECONDS + 1}s without using the grant…`));
    await sleep((IDLE_SECONDS + 1) * 1000);
    await step('    …the next read prompts again', terminalA, 'bk-secrets read work/db/password', {
      prompt: true,
    });
    await step(
      '11. Secrets as environment variables for a child process (no prompt: granted just now)',
      terminalA,
      `bk-secrets run --env DB_PASSWORD=work/db/password -- sh -c 'echo "the child got a \${#DB_PASSWORD}-character DB_PASSWORD"'`,
      { prompt: false },
    );
    await step(
      '12. The person refuses: a clear error, exit 1',
      terminalA,
      'bk-secrets read personal/email/password',
      { prompt: true, code: 1 },
    );
  } finally {
    terminalA.close();
    terminalB.close();
    agent.kill('SIGTERM');
    await new Promise((resolve) => agent.once('exit', resolve));
    rmSync(work, { recursive: true, force: true });
  }
  say();
  if (failures > 0) {
    say(bold(`${failures} step(s) did not behave as narrated.`));
    process.exit(1);
  }
  say(bold('Every step behaved as narrated.'));
  say(dim('Run the tests with: npm test'));
}

main().catch((error: unknown) => {
  say(`demo failed: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}`);
  process.exit(1);
});
