'use strict';
// Process facts through the real bindings: token user, creation time, image, parent, liveness,
// version resources.
const assert = require('node:assert/strict');
const { spawn } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { test } = require('node:test');
const { loadBindings, firstLine } = require('./support.cjs');

const FILETIME_UNIX_EPOCH_MS = 11_644_473_600_000n;
const fileTimeToMs = (text) => Number(BigInt(text) / 10_000n - FILETIME_UNIX_EPOCH_MS);

test('currentProcessId and processUserSid of this process', async () => {
  const win32 = await loadBindings();
  assert.equal(win32.currentProcessId(), process.pid);
  assert.match(win32.processUserSid('self'), /^S-1-5-21-\d+-\d+-\d+-\d+$/);
});

test('a spawned child: creation time, image path, parent, user, liveness', async () => {
  const win32 = await loadBindings();
  const before = Date.now();
  const child = spawn(process.execPath, [path.join(__dirname, 'child.cjs'), 'sleep'], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const exited = new Promise((resolve) => child.on('exit', resolve));
  assert.equal(await firstLine(child), 'ready');
  const handle = win32.openProcess(child.pid);
  assert.notEqual(handle, undefined);
  try {
    assert.equal(win32.processIsRunning(handle), true);
    const created = win32.processCreationTime(handle);
    assert.match(created, /^\d+$/);
    const createdMs = fileTimeToMs(created);
    assert.ok(
      createdMs >= before - 2000 && createdMs <= Date.now() + 2000,
      `creation ${new Date(createdMs).toISOString()} not within the spawn`,
    );
    assert.equal(win32.processImagePath(handle)?.toLowerCase(), process.execPath.toLowerCase());
    assert.equal(win32.parentProcessId(handle), process.pid);
    assert.equal(win32.processUserSid(handle), win32.processUserSid('self'));

    child.kill();
    await exited;
    assert.equal(win32.processIsRunning(handle), false);
    // The open handle pins the process object: the same creation time, no pid reuse.
    assert.equal(win32.processCreationTime(handle), created);
  } finally {
    win32.closeHandle(handle);
  }
});

test('this process: creation time before now, parent is process.ppid', async () => {
  const win32 = await loadBindings();
  const handle = win32.openProcess(process.pid);
  assert.notEqual(handle, undefined);
  try {
    assert.ok(fileTimeToMs(win32.processCreationTime(handle)) <= Date.now() + 1000);
    assert.equal(win32.parentProcessId(handle), process.ppid);
    assert.equal(win32.processIsRunning(handle), true);
  } finally {
    win32.closeHandle(handle);
  }
});

test('openProcess of a pid that does not exist gives undefined', async () => {
  const win32 = await loadBindings();
  assert.equal(win32.openProcess(999_996), undefined);
});

test('closeHandle of something that is not a handle throws ERROR_INVALID_HANDLE', async () => {
  const win32 = await loadBindings();
  assert.throws(() => win32.closeHandle(0x7ff0n), { code: 'ERR_PLATFORM', winerror: 6 });
});

test('fileDescription reads the version resource', async () => {
  const win32 = await loadBindings();
  assert.match(win32.fileDescription(process.execPath) ?? '', /Node\.js/);
  assert.equal(win32.fileDescription(path.join(os.tmpdir(), 'no-such-file.exe')), undefined);
  const plain = path.join(os.tmpdir(), `bridgekeeper-plain-${process.pid}.txt`);
  fs.writeFileSync(plain, 'no version resource here');
  try {
    assert.equal(win32.fileDescription(plain), undefined);
  } finally {
    fs.rmSync(plain, { force: true });
  }
});
