'use strict';
// Authenticode (WinVerifyTrust) and Windows Hello (WinRT) through the real bindings.
const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const v8 = require('node:v8');
const vm = require('node:vm');
const { after, test } = require('node:test');
const { loadBindings, underWine, windowsOnly } = require('./support.cjs');

const TRUST_E_NOSIGNATURE = 0x800b0100;
const TRUST_E_BAD_DIGEST = 0x80096010;
const REGDB_E_CLASSNOTREG = 0x80040154;

const scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'bridgekeeper-trust-'));
after(() => fs.rmSync(scratch, { recursive: true, force: true }));

/** Runs `run` while a 5 ms interval probes the event loop; returns its result and the max gap. */
async function probed(run) {
  let last = performance.now();
  let maxGap = 0;
  let ticks = 0;
  const probe = setInterval(() => {
    const now = performance.now();
    maxGap = Math.max(maxGap, now - last);
    last = now;
    ticks++;
  }, 5);
  const started = performance.now();
  try {
    const result = await run();
    return { result, maxGap, ticks, elapsed: performance.now() - started };
  } finally {
    clearInterval(probe);
  }
}

test('node.exe is signed and intact; the signer is the OpenJS Foundation', async () => {
  const win32 = await loadBindings();
  const pending = win32.verifySignature(process.execPath);
  assert.ok(pending instanceof Promise);
  const check = await pending;
  assert.equal(check.status, 0);
  assert.match(check.signer ?? '', /OpenJS/);
});

test('the verification runs off the JS thread: the event loop keeps ticking', async (t) => {
  const win32 = await loadBindings();
  await win32.verifySignature(process.execPath); // warm: DLLs and providers loaded
  const { result, maxGap, ticks, elapsed } = await probed(() =>
    win32.verifySignature(process.execPath),
  );
  t.diagnostic(
    `one verify: ${elapsed.toFixed(0)} ms, ${ticks} ticks, max gap ${maxGap.toFixed(1)} ms`,
  );
  assert.equal(result.status, 0);
  // The synchronous call froze the loop for the whole verification (≈600 ms under Wine).
  assert.ok(maxGap < Math.max(100, elapsed / 3), `event loop blocked for ${maxGap} ms`);
  assert.ok(ticks >= 3, `only ${ticks} ticks in ${elapsed} ms`);
});

test('concurrent verifications run in parallel', async (t) => {
  const win32 = await loadBindings();
  const one = await probed(() => win32.verifySignature(process.execPath));
  const four = await probed(() =>
    Promise.all([1, 2, 3, 4].map(() => win32.verifySignature(process.execPath))),
  );
  t.diagnostic(
    `one: ${one.elapsed.toFixed(0)} ms; four at once: ${four.elapsed.toFixed(0)} ms, ` +
      `max gap ${four.maxGap.toFixed(1)} ms`,
  );
  for (const check of four.result) assert.equal(check.status, 0);
  assert.ok(
    four.maxGap < Math.max(100, four.elapsed / 3),
    `event loop blocked for ${four.maxGap} ms`,
  );
});

test('buffers stay alive while the worker thread reads them (forced collections)', async () => {
  const win32 = await loadBindings();
  v8.setFlagsFromString('--expose-gc');
  const gc = vm.runInNewContext('gc');
  const tampered = path.join(scratch, 'node-gc.exe');
  const bytes = fs.readFileSync(process.execPath);
  bytes[0x1000] ^= 0xff;
  fs.writeFileSync(tampered, bytes);
  for (let round = 0; round < 3; round++) {
    const checks = [win32.verifySignature(process.execPath), win32.verifySignature(tampered)];
    // Collect and reuse memory while the calls run: a path buffer collected early would be
    // overwritten, and the check would fail or name another file.
    const churn = setInterval(() => {
      gc();
      for (let i = 0; i < 64; i++) Buffer.alloc(256, 0x41 + i);
    }, 1);
    try {
      const [good, bad] = await Promise.all(checks);
      assert.equal(good.status, 0);
      assert.match(good.signer ?? '', /OpenJS/);
      assert.deepEqual(bad, { status: TRUST_E_BAD_DIGEST });
    } finally {
      clearInterval(churn);
    }
  }
  // The token SID read (userSidOfToken) under the same pressure.
  gc();
  assert.match(win32.processUserSid('self'), /^S-1-5-/);
});

test('an aborted signal rejects with ERR_ABORTED; aborting mid-flight rejects at once', async () => {
  const win32 = await loadBindings();
  const controller = new AbortController();
  controller.abort();
  await assert.rejects(win32.verifySignature(process.execPath, { signal: controller.signal }), {
    code: 'ERR_ABORTED',
  });
  const midway = new AbortController();
  const pending = win32.verifySignature(process.execPath, { signal: midway.signal });
  const started = performance.now();
  setTimeout(() => midway.abort(), 20);
  await assert.rejects(pending, { code: 'ERR_ABORTED' });
  assert.ok(performance.now() - started < 300, 'the abort did not reject promptly');
  // The abandoned call finishes and closes its state; later calls work.
  const again = await win32.verifySignature(process.execPath);
  assert.equal(again.status, 0);
});

test('a copy of node.exe with one byte changed fails with TRUST_E_BAD_DIGEST', async () => {
  const win32 = await loadBindings();
  const tampered = path.join(scratch, 'node-tampered.exe');
  const bytes = fs.readFileSync(process.execPath);
  bytes[0x1000] ^= 0xff; // inside the first section, which the Authenticode hash covers
  fs.writeFileSync(tampered, bytes);
  assert.deepEqual(await win32.verifySignature(tampered), { status: TRUST_E_BAD_DIGEST });
});

test('an unsigned DLL, and a file that is no PE at all, fail with TRUST_E_NOSIGNATURE', async () => {
  const win32 = await loadBindings();
  const koffiDir = path.dirname(require.resolve('@koromix/koffi-win32-x64'));
  const unsigned = path.join(koffiDir, 'win32_x64', 'koffi.node');
  assert.ok(fs.existsSync(unsigned), unsigned);
  assert.deepEqual(await win32.verifySignature(unsigned), { status: TRUST_E_NOSIGNATURE });
  const garbage = path.join(scratch, 'garbage.exe');
  fs.writeFileSync(garbage, 'MZ but not a portable executable');
  assert.deepEqual(await win32.verifySignature(garbage), { status: TRUST_E_NOSIGNATURE });
});

test('a binary signed by a self-signed (untrusted) certificate is refused', {
  skip: windowsOnly('Wine accepts self-signed signers'),
}, async () => {
  // Needs a test binary signed with a throwaway certificate (signtool on Windows); none is
  // built here, so this stays a marker for the Windows run.
  assert.fail('not implemented: needs a self-signed test binary');
});

test('Windows Hello under Wine: checkAvailability fails with REGDB_E_CLASSNOTREG', {
  skip: underWine ? false : 'Wine-only expectation',
}, async () => {
  const win32 = await loadBindings();
  await assert.rejects(win32.userConsent.checkAvailability(), (error) => {
    assert.equal(error.name, 'Win32Error');
    assert.equal(error.code, 'ERR_PLATFORM');
    assert.equal(error.winerror, REGDB_E_CLASSNOTREG);
    assert.equal(error.call, 'RoGetActivationFactory');
    assert.match(error.message, /Windows Hello is not available/);
    return true;
  });
  // Not cached as a success: the next call fails the same way.
  await assert.rejects(win32.userConsent.checkAvailability(), { winerror: REGDB_E_CLASSNOTREG });
  await assert.rejects(win32.userConsent.requestVerification(0n, 'Test'), {
    winerror: REGDB_E_CLASSNOTREG,
  });
});

test('Windows Hello: an aborted signal rejects with ERR_ABORTED before touching WinRT', async () => {
  const win32 = await loadBindings();
  const controller = new AbortController();
  controller.abort();
  await assert.rejects(win32.userConsent.checkAvailability({ signal: controller.signal }), {
    code: 'ERR_ABORTED',
  });
  await assert.rejects(
    win32.userConsent.requestVerification(0n, 'Test', { signal: controller.signal }),
    { code: 'ERR_ABORTED' },
  );
});

test('Windows Hello: availability is one of the documented values', {
  skip: windowsOnly('Wine has no WinRT UserConsentVerifier'),
}, async () => {
  const win32 = await loadBindings();
  const values = ['available', 'device-not-present', 'not-configured-for-user'];
  values.push('disabled-by-policy', 'device-busy');
  assert.ok(values.includes(await win32.userConsent.checkAvailability()));
});

test('Windows Hello: the real verification dialog, owned by a window', {
  skip: 'Windows-only, needs a person at a Windows Hello device: not automatable',
}, () => {});
