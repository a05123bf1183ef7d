'use strict';
// End to end on Windows through the public API of the built package: an app (this process)
// listening on its named pipe, CLIs in other node.exe processes connecting to it. The pipe, the
// pids both ways, the user SIDs, the invoking-process session credential and the re-checks all
// run on the real Windows API (under Wine in CI); the prompt is scripted.
const assert = require('node:assert/strict');
const path = require('node:path');
const { spawn } = require('node:child_process');
const { test } = require('node:test');
const { createServer, requireAuthenticode } = require('../../dist/index.cjs');
const { firstLine, windowsOnly } = require('./support.cjs');

const child = path.join(__dirname, 'child.cjs');
let counter = 0;
const uniqueApp = () => `bk-e2e-${process.pid}-${++counter}`;

/** An app whose prompt approves and records every request. */
async function startApp(app, peerPolicies = []) {
  const prompts = [];
  const served = [];
  const server = createServer({
    app,
    peerPolicies,
    prompt: {
      id: 'scripted',
      isAvailable: async () => true,
      prompt: async (request) => {
        prompts.push(request);
        return { result: 'granted' };
      },
    },
  });
  server.handle(
    'secret',
    { account: (params) => ({ id: params.account, displayName: 'Work' }) },
    (_params, context) => {
      served.push({ pid: context.peer?.pid, session: context.session.id });
      return { value: 'correct-horse' };
    },
  );
  const address = await server.listen();
  return { server, address, prompts, served };
}

/** Runs one CLI process (mode bk-client or via-parent) and returns its JSON line. */
async function runClient(mode, app, ...rest) {
  const process = spawn(globalThis.process.execPath, [child, mode, app, ...rest], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const exited = new Promise((resolve) => process.on('exit', resolve));
  const line = JSON.parse(await firstLine(process, 60_000));
  await exited;
  return { ...line, childPid: process.pid };
}

test('a CLI in another process gets the secret over the named pipe after one prompt; both ends see each other’s pid', async () => {
  const app = uniqueApp();
  const { server, address, prompts, served } = await startApp(app);
  try {
    assert.match(address, /^\\\\\.\\pipe\\bridgekeeper-bk-e2e-\d+-\d+-S-1-5-21-/i);
    const first = await runClient('bk-client', app);
    assert.equal(first.error, undefined, JSON.stringify(first.error));
    assert.deepEqual(first.result, { value: 'correct-horse' });
    assert.equal(first.serverPid, process.pid, 'the client identified the app by its pid');
    assert.equal(served[0].pid, first.childPid, 'the app identified the client by its pid');
    assert.equal(first.session.scope, 'process');
    assert.equal(prompts.length, 1);
    // The prompt names verified data: the program from the client's image, not its claims.
    assert.equal(prompts[0].process.program?.toLowerCase(), 'node.exe');
    assert.equal(prompts[0].sessionId, first.session.id);
    assert.deepEqual(
      prompts[0].claims,
      { name: 'win32-e2e' },
      'claims are passed on as claims only',
    );
    assert.equal(prompts[0].subject?.pid, first.childPid);

    // Another CLI run by the same invoking process (this one): same session, no new prompt.
    const second = await runClient('bk-client', app);
    assert.deepEqual(second.result, { value: 'correct-horse' });
    assert.equal(second.session.id, first.session.id);
    assert.equal(prompts.length, 1);
  } finally {
    await server.close();
  }
});

test('a CLI run by another invoking process (a new shell) is another session and is asked again', async () => {
  const app = uniqueApp();
  const { server, prompts } = await startApp(app);
  try {
    const direct = await runClient('bk-client', app);
    const viaShell = await runClient('via-parent', app);
    assert.equal(direct.error, undefined, JSON.stringify(direct.error));
    assert.equal(viaShell.error, undefined, JSON.stringify(viaShell.error));
    assert.notEqual(viaShell.ppid, process.pid);
    assert.notEqual(viaShell.session.id, direct.session.id);
    assert.equal(prompts.length, 2);
  } finally {
    await server.close();
  }
});

test('a CLI finds nothing listening once the app closed: ERR_APP_UNAVAILABLE naming the pipe', async () => {
  const app = uniqueApp();
  const { server, address } = await startApp(app);
  await server.close();
  const line = await runClient('bk-client', app);
  assert.equal(line.error?.code, 'ERR_APP_UNAVAILABLE');
  assert.ok(line.error.message.includes(address), line.error.message);
});

test('a second app on the same pipe name is refused (ERR_ALREADY_RUNNING)', {
  skip: windowsOnly('Wine does not enforce FILE_FLAG_FIRST_PIPE_INSTANCE'),
}, async () => {
  const app = uniqueApp();
  const { server } = await startApp(app);
  try {
    await assert.rejects(startApp(app), { code: 'ERR_ALREADY_RUNNING' });
  } finally {
    await server.close();
  }
});

test('Authenticode both ways: the app admits a CLI signed by the expected publisher and refuses another; the CLI checks the app the same way', async () => {
  // node.exe is signed by the OpenJS Foundation; both sides run it.
  const app = uniqueApp();
  const { server, prompts, served } = await startApp(app, [
    requireAuthenticode({ publisher: 'OpenJS Foundation' }),
  ]);
  try {
    const admitted = await runClient('bk-client', app, 'OpenJS Foundation');
    assert.equal(admitted.error, undefined, JSON.stringify(admitted.error));
    assert.deepEqual(admitted.result, { value: 'correct-horse' });
    // The CLI refuses an app not signed by the publisher it expects, before sending anything.
    const wrongApp = await runClient('bk-client', app, 'Contoso Ltd');
    assert.equal(wrongApp.error?.code, 'ERR_SERVER_REJECTED');
    assert.match(wrongApp.error.message, /Contoso Ltd/);
    assert.equal(served.length, 1);
    assert.equal(prompts.length, 1);
  } finally {
    await server.close();
  }
  const strict = uniqueApp();
  const refusing = await startApp(strict, [requireAuthenticode({ publisher: 'Contoso Ltd' })]);
  try {
    const refused = await runClient('bk-client', strict);
    assert.equal(refused.error?.code, 'ERR_PEER_REJECTED');
    assert.equal(refusing.served.length, 0);
    assert.equal(refusing.prompts.length, 0);
  } finally {
    await refusing.server.close();
  }
});

test('ten CLIs of one session at once (more than the thread pool\u2019s four): one prompt, all served', async () => {
  const app = uniqueApp();
  const { server, prompts, served } = await startApp(app);
  try {
    const lines = await Promise.all(Array.from({ length: 10 }, () => runClient('bk-client', app)));
    for (const line of lines) {
      assert.equal(line.error, undefined, JSON.stringify(line.error));
      assert.deepEqual(line.result, { value: 'correct-horse' });
    }
    assert.equal(new Set(lines.map((line) => line.session.id)).size, 1);
    assert.equal(prompts.length, 1);
    assert.equal(served.length, 10);
  } finally {
    await server.close();
  }
});
