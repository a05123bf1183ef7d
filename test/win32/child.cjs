'use strict';
// A second process for the Windows suite.
//   node child.cjs pipe-client NAME   connects to pipe NAME with the bindings, sends
//                                     {"pid", "serverPid"} as one line, prints the echo, exits
//   node child.cjs bk-client APP [PUBLISHER]
//                                     connect() to APP through the public API (the app's
//                                     executable signed by PUBLISHER, if given), request the secret,
//                                     print {result, session, serverPid, pid, ppid} as one line
//   node child.cjs via-parent APP     run a bk-client child (a different invoking parent)
//   node child.cjs sleep              prints "ready", then idles until killed
const net = require('node:net');
const { loadBindings } = require('./support.cjs');

async function pipeClient(name) {
  const win32 = await loadBindings();
  let handle;
  for (const started = Date.now(); ; ) {
    try {
      handle = win32.openPipe(name);
      break;
    } catch (error) {
      // The server may not have created the next instance yet.
      if (![2, 231].includes(error.winerror) || Date.now() - started > 10_000) throw error;
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  }
  const serverPid = win32.pipeServerProcessId(handle);
  const socket = new net.Socket({ fd: win32.handleToFd(handle), readable: true, writable: true });
  socket.setEncoding('utf8');
  let received = '';
  socket.on('data', (chunk) => {
    received += chunk;
    if (received.includes('\n')) socket.end();
  });
  socket.write(`${JSON.stringify({ pid: process.pid, serverPid })}\n`);
  await new Promise((resolve, reject) => {
    socket.on('close', resolve);
    socket.on('error', reject);
  });
  process.stdout.write(`${received.trim()}\n`);
}

async function bkClient(app, publisher) {
  const { connect, requireAuthenticode } = require('../../dist/index.cjs');
  // With a publisher: the app's executable must be signed by it (the seed's check of the app).
  const serverPolicies = publisher ? [requireAuthenticode({ publisher })] : [];
  const client = await connect({ app, name: 'win32-e2e', serverPolicies });
  try {
    const result = await client.request('secret', { account: 'work' });
    process.stdout.write(
      `${JSON.stringify({ result, session: client.session, serverPid: client.serverPeer?.pid, pid: process.pid, ppid: process.ppid })}\n`,
    );
  } finally {
    await client.close();
  }
}

const [mode, name] = process.argv.slice(2);
if (mode === 'pipe-client') {
  pipeClient(name).catch((error) => {
    process.stderr.write(`${error.stack}\n`);
    process.exitCode = 1;
  });
} else if (mode === 'bk-client') {
  // The public API, as a CLI would use it: connect to app NAME, ask for the secret, print
  // what happened as one JSON line.
  bkClient(name, process.argv[4]).catch((error) => {
    process.stdout.write(
      `${JSON.stringify({ error: { code: error.code, message: error.message } })}\n`,
    );
  });
} else if (mode === 'via-parent') {
  // An intermediate process (another invoking parent, as a new shell would be): runs a
  // bk-client child and passes its line on.
  const { spawn } = require('node:child_process');
  const child = spawn(process.execPath, [__filename, 'bk-client', name], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  child.stdout.pipe(process.stdout);
} else if (mode === 'sleep') {
  process.stdout.write('ready\n');
  setInterval(() => {}, 60_000);
} else {
  process.stderr.write(`unknown mode ${mode}\n`);
  process.exitCode = 64;
}
