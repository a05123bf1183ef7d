'use strict';
// Named pipes through the real bindings: instances, overlapped waits for clients, pids from the
// kernel both ways, and HANDLE → fd → net.Socket.
const assert = require('node:assert/strict');
const { spawn } = require('node:child_process');
const net = require('node:net');
const path = require('node:path');
const { test } = require('node:test');
const { loadBindings, uniquePipeName, windowsOnly, firstLine } = require('./support.cjs');

const ERROR_FILE_NOT_FOUND = 2;
const ERROR_ACCESS_DENIED = 5;

/** Promise of the next waitForClient completion on `pipe`. */
function clientConnects(win32, pipe) {
  return new Promise((resolve, reject) => {
    win32.waitForClient(pipe, (error) => (error ? reject(error) : resolve()));
  });
}

function userOnly(win32) {
  return `D:P(A;;GA;;;${win32.processUserSid('self')})`;
}

/** Reads one line from a socket. */
function readLine(socket) {
  return new Promise((resolve, reject) => {
    let text = '';
    socket.setEncoding('utf8');
    const onData = (chunk) => {
      text += chunk;
      if (text.includes('\n')) {
        socket.off('data', onData);
        resolve(text.trim());
      }
    };
    socket.on('data', onData);
    socket.once('error', reject);
  });
}

const socketFor = (win32, handle) =>
  new net.Socket({ fd: win32.handleToFd(handle), readable: true, writable: true });

test('a second node.exe connects; each side learns the other pid from the kernel; echo through net.Socket', async () => {
  const win32 = await loadBindings();
  const name = uniquePipeName('echo');
  const pipe = win32.createPipeInstance(name, { first: true, securityDescriptor: userOnly(win32) });
  const connected = clientConnects(win32, pipe);
  const child = spawn(process.execPath, [path.join(__dirname, 'child.cjs'), 'pipe-client', name], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const exited = new Promise((resolve) => child.on('exit', resolve));
  const reply = firstLine(child);
  await connected;
  const clientPid = win32.pipeClientProcessId(pipe);
  assert.equal(clientPid, child.pid);

  const server = socketFor(win32, pipe);
  const serverClosed = new Promise((resolve) => server.on('close', resolve));
  const hello = JSON.parse(await readLine(server));
  server.end(`${JSON.stringify({ ...hello, clientPidSeen: clientPid })}\n`);
  const echoed = JSON.parse(await reply);
  assert.deepEqual(echoed, { pid: child.pid, serverPid: process.pid, clientPidSeen: child.pid });
  assert.equal(await exited, 0);
  server.resume();
  await serverClosed;
});

test('a pending wait alone keeps the event loop alive until a client comes', async () => {
  const win32 = await loadBindings();
  const name = uniquePipeName('alive');
  const pipe = win32.createPipeInstance(name, { first: true, securityDescriptor: userOnly(win32) });
  const connected = clientConnects(win32, pipe);
  // Nothing of the child holds the loop: no stdio pipes, unref'd. Only the wait does.
  const child = spawn(process.execPath, [path.join(__dirname, 'child.cjs'), 'pipe-client', name], {
    stdio: 'ignore',
  });
  child.unref();
  await connected;
  assert.equal(win32.pipeClientProcessId(pipe), child.pid);
  const server = socketFor(win32, pipe);
  const closed = new Promise((resolve) => server.on('close', resolve));
  server.end(`${await readLine(server)}\n`);
  server.resume();
  await closed;
});

test('a client that connected before the wait began (ERROR_PIPE_CONNECTED) completes it', async () => {
  const win32 = await loadBindings();
  const name = uniquePipeName('early');
  const pipe = win32.createPipeInstance(name, { first: true, securityDescriptor: userOnly(win32) });
  const client = win32.openPipe(name);
  await clientConnects(win32, pipe);
  assert.equal(win32.pipeClientProcessId(pipe), process.pid);
  assert.equal(win32.pipeServerProcessId(client), process.pid);
  win32.closeHandle(client);
  win32.closeHandle(pipe);
});

test('several pending waits complete independently; data flows on every connection', async () => {
  const win32 = await loadBindings();
  const name = uniquePipeName('many');
  const count = 6;
  const pipes = [];
  const waits = [];
  for (let i = 0; i < count; i++) {
    const pipe = win32.createPipeInstance(name, {
      first: i === 0,
      securityDescriptor: userOnly(win32),
    });
    pipes.push(pipe);
    let calls = 0;
    waits.push(
      new Promise((resolve, reject) => {
        win32.waitForClient(pipe, (error) => {
          calls++;
          if (calls > 1) reject(new Error('done called twice'));
          else if (error) reject(error);
          else resolve(pipe);
        });
      }),
    );
  }
  // Let the waits register before the clients come, so the thread-pool path is the one taken.
  await new Promise((resolve) => setTimeout(resolve, 50));
  const clients = [];
  for (let i = 0; i < count; i++) clients.push(win32.openPipe(`\\\\.\\pipe\\${name}`));
  const served = await Promise.all(waits);
  assert.deepEqual(new Set(served), new Set(pipes));

  const servers = pipes.map((pipe) => socketFor(win32, pipe));
  for (const server of servers) {
    readLine(server).then((line) => server.end(`echo ${line}\n`));
  }
  const replies = await Promise.all(
    clients.map((client, i) => {
      const socket = socketFor(win32, client);
      const line = readLine(socket);
      socket.write(`client ${i}\n`);
      return line.then((text) => {
        socket.end();
        return text;
      });
    }),
  );
  assert.deepEqual(
    replies,
    clients.map((_, i) => `echo client ${i}`),
  );
});

test('a cancelled wait never calls back and does not hold the event loop', async () => {
  const win32 = await loadBindings();
  const name = uniquePipeName('cancel');
  const pipe = win32.createPipeInstance(name, { first: true, securityDescriptor: userOnly(win32) });
  let called = false;
  const cancel = win32.waitForClient(pipe, () => {
    called = true;
  });
  cancel();
  cancel(); // idempotent
  await new Promise((resolve) => setTimeout(resolve, 200));
  assert.equal(called, false);
  win32.closeHandle(pipe);
  assert.throws(() => win32.openPipe(name), {
    code: 'ERR_PLATFORM',
    winerror: ERROR_FILE_NOT_FOUND,
  });
  // If the cancelled wait still held a ref'd timer, node --test would time out on this file.
});

test('openPipe with nothing listening fails with ERROR_FILE_NOT_FOUND', async () => {
  const win32 = await loadBindings();
  assert.throws(
    () => win32.openPipe(uniquePipeName('nobody')),
    (error) => {
      assert.equal(error.name, 'Win32Error');
      assert.equal(error.code, 'ERR_PLATFORM');
      assert.equal(error.winerror, ERROR_FILE_NOT_FOUND);
      assert.equal(error.call, 'CreateFileW');
      assert.match(error.message, /is the app running/);
      return true;
    },
  );
});

test('fdToHandle gives back the HANDLE behind a handleToFd descriptor', async () => {
  const win32 = await loadBindings();
  const name = uniquePipeName('fd');
  const pipe = win32.createPipeInstance(name, { first: true, securityDescriptor: userOnly(win32) });
  const client = win32.openPipe(name);
  await clientConnects(win32, pipe);
  const fd = win32.handleToFd(client);
  assert.equal(win32.fdToHandle(fd), client);
  const socket = new net.Socket({ fd, readable: true, writable: true });
  socket.destroy();
  win32.closeHandle(pipe);
});

test('createPipeInstance refuses a descriptor without a DACL, or with a NULL DACL', async () => {
  const win32 = await loadBindings();
  for (const securityDescriptor of ['', 'O:BA', 'D:NO_ACCESS_CONTROL']) {
    assert.throws(
      () => win32.createPipeInstance(uniquePipeName('sd'), { first: true, securityDescriptor }),
      { code: 'ERR_INVALID_ARGUMENT' },
    );
  }
  assert.throws(() => win32.createPipeInstance('a\\b', { first: true, securityDescriptor: 'D:' }), {
    code: 'ERR_INVALID_ARGUMENT',
  });
});

test('FILE_FLAG_FIRST_PIPE_INSTANCE: a second first instance of a name fails with ERROR_ACCESS_DENIED', {
  skip: windowsOnly('Wine does not enforce FILE_FLAG_FIRST_PIPE_INSTANCE'),
}, async () => {
  const win32 = await loadBindings();
  const name = uniquePipeName('squat');
  const pipe = win32.createPipeInstance(name, { first: true, securityDescriptor: userOnly(win32) });
  assert.throws(
    () => win32.createPipeInstance(name, { first: true, securityDescriptor: userOnly(win32) }),
    { code: 'ERR_PLATFORM', winerror: ERROR_ACCESS_DENIED },
  );
  win32.closeHandle(pipe);
});

test("a pipe whose DACL admits only SYSTEM refuses this user's client with ERROR_ACCESS_DENIED", {
  skip: windowsOnly('Wine does not enforce pipe DACLs'),
}, async () => {
  const win32 = await loadBindings();
  const name = uniquePipeName('dacl');
  const pipe = win32.createPipeInstance(name, {
    first: true,
    securityDescriptor: 'D:P(A;;GA;;;SY)',
  });
  assert.throws(() => win32.openPipe(name), {
    code: 'ERR_PLATFORM',
    winerror: ERROR_ACCESS_DENIED,
  });
  win32.closeHandle(pipe);
});
