'use strict';
// The demo's scenario on Windows: the reference secrets agent (examples/secrets-agent) and its
// CLI as separate node.exe processes, over the agent's named pipe, with the scripted prompt (the
// transcript says so). Each CLI run is a real process; "another terminal" is another invoking
// process, as Windows sessions are keyed. Transpiled by run-under-wine.sh into .tmp/wine/examples.
const assert = require('node:assert/strict');
const path = require('node:path');
const { spawn } = require('node:child_process');
const { test, after } = require('node:test');

const examples = path.join(__dirname, '..', '..', '.tmp', 'wine', 'examples', 'secrets-agent');
const app = `bk-wine-demo-${process.pid}`;
const env = { ...process.env, BK_SECRETS_APP: app };

/** Runs a command to completion; resolves with its exit code and output. */
function run(command, args, timeoutMs = 60_000) {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (chunk) => {
      stdout += chunk;
    });
    child.stderr.setEncoding('utf8').on('data', (chunk) => {
      stderr += chunk;
    });
    const timer = setTimeout(() => {
      child.kill();
      reject(new Error(`${args.join(' ')} timed out; stderr: ${stderr}`));
    }, timeoutMs);
    // 'close', not 'exit': only then has everything the child wrote been read.
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout: stdout.trim(), stderr: stderr.trim() });
    });
  });
}

/** The CLI, run by this process (terminal A). */
const cli = (...args) => run(process.execPath, [path.join(examples, 'cli.js'), ...args]);
/** The CLI, run by another invoking process (terminal B: another shell). */
const cliInAnotherShell = (...args) =>
  run(process.execPath, [
    '-e',
    `const r = require('node:child_process').spawnSync(process.execPath, ${JSON.stringify([
      path.join(examples, 'cli.js'),
      ...args,
    ])}, { stdio: 'inherit' }); process.exit(r.status ?? 1);`,
  ]);

let agent;
let agentLog = '';
const prompts = () => agentLog.split('\n').filter((line) => line.startsWith('[prompt]'));

async function startAgent() {
  agent = spawn(
    process.execPath,
    [
      path.join(examples, 'agent.js'),
      '--app',
      app,
      '--prompt',
      'scripted',
      '--answers',
      'granted,granted,granted',
    ],
    { env, stdio: ['ignore', 'ignore', 'pipe'] },
  );
  agent.stderr.setEncoding('utf8').on('data', (chunk) => {
    agentLog += chunk;
  });
  const started = Date.now();
  while (!/listening at \\\\\.\\pipe\\/.test(agentLog)) {
    if (agent.exitCode !== null || Date.now() - started > 60_000) {
      throw new Error(`the agent did not start: ${agentLog}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

after(() => agent?.kill());

test('the demo: read, read again, another terminal, another account, grants, lock — on the agent’s named pipe', async () => {
  await startAgent();
  assert.match(agentLog, /scripted prompt: approvals are simulated/);

  // 1. First read in terminal A: the agent asks the person.
  const first = await cli('read', 'work/db/password');
  assert.equal(first.code, 0, first.stderr);
  assert.equal(first.stdout, 'correct-horse-battery-staple');
  assert.equal(prompts().length, 1);
  assert.match(prompts()[0], /Acme Corp \(work\)/);

  // 2. Second read in the same terminal: no prompt.
  const second = await cli('read', 'work/db/username');
  assert.equal(second.stdout, 'app_rw');
  assert.equal(prompts().length, 1);

  // 3. Terminal B (another invoking process) is another session: asked again.
  const other = await cliInAnotherShell('read', 'work/db/password');
  assert.equal(other.code, 0, other.stderr);
  assert.equal(other.stdout, 'correct-horse-battery-staple');
  assert.equal(prompts().length, 2);

  // 4. Another account in terminal A: asked for that account.
  const personal = await cli('read', 'personal/email/username');
  assert.equal(personal.stdout, 'wendy@example.org');
  assert.equal(prompts().length, 3);

  // 5. Live authorizations: three.
  const grants = await cli('grants');
  assert.equal(grants.code, 0, grants.stderr);
  assert.match(grants.stdout, /Acme Corp \(work\)/);

  // 6. Lock: every authorization is revoked; the next read is refused (the script ran out of
  // approvals, so the scripted person now says no) — never served on an old grant.
  const lock = await cli('lock');
  assert.equal(lock.code, 0, lock.stderr);
  const afterLock = await cli('read', 'work/db/password');
  assert.notEqual(afterLock.code, 0);
  assert.equal(afterLock.stdout, '');
  assert.equal(prompts().length, 4);
});
