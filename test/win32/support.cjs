'use strict';
// Shared by the Windows suite (run by node.exe under Wine, or on Windows): finds the built
// bindings in dist/ and says whether this is Wine.
const fs = require('node:fs');
const path = require('node:path');

const repo = path.join(__dirname, '..', '..');
const dist = path.join(repo, 'dist');

/**
 * The built CommonJS chunk of dist/ that exports `loadWin32Bindings` (tsup emits the win32
 * platform module, which loadPlatform() imports dynamically, as dist/win32-<hash>.cjs).
 */
function bindingsModule() {
  for (const file of fs.readdirSync(dist).filter((name) => name.endsWith('.cjs'))) {
    const full = path.join(dist, file);
    if (!fs.readFileSync(full, 'utf8').includes('RegisterWaitForSingleObject')) continue;
    const exported = require(full);
    const load = Object.values(exported).find(
      (value) => typeof value === 'function' && value.name === 'loadWin32Bindings',
    );
    if (load) return { file, loadWin32Bindings: load };
  }
  throw new Error(
    `No built chunk in ${dist} exports loadWin32Bindings: run "npm run build" ` +
      '(src/platform/win32/index.ts re-exports it; loadPlatform() imports that module).',
  );
}

/** The real bindings, loaded once per process. */
function loadBindings() {
  return bindingsModule().loadWin32Bindings();
}

/** True under Wine (which does not enforce some Windows security behaviour). */
const underWine =
  process.env.WINEPREFIX !== undefined ||
  fs.existsSync(path.join(process.env.SystemRoot ?? 'C:\\windows', 'system32', 'winecfg.exe'));

/** The skip reason for a test of behaviour only real Windows has, or false on real Windows. */
const windowsOnly = (reason) => (underWine ? `Windows-only, not run under Wine: ${reason}` : false);

/** A pipe name unique to this process and call. */
let counter = 0;
const uniquePipeName = (label) => `bridgekeeper-test-${label}-${process.pid}-${++counter}`;

/** Resolves with the first line a child prints on stdout, rejects on exit or timeout. */
function firstLine(child, timeoutMs = 30_000) {
  return new Promise((resolve, reject) => {
    let text = '';
    let errors = '';
    const timer = setTimeout(() => {
      cleanup();
      reject(new Error(`no line from child ${child.pid} in ${timeoutMs} ms; stderr: ${errors}`));
    }, timeoutMs);
    const onData = (chunk) => {
      text += chunk;
      const end = text.indexOf('\n');
      if (end >= 0) {
        cleanup();
        resolve(text.slice(0, end).trim());
      }
    };
    const onError = (chunk) => {
      errors += chunk;
    };
    const onExit = (code) => {
      cleanup();
      reject(new Error(`child exited (${code}) before printing a line; stderr: ${errors}`));
    };
    const cleanup = () => {
      clearTimeout(timer);
      child.stdout.off('data', onData);
      child.stderr.off('data', onError);
      child.off('close', onExit);
    };
    child.stdout.setEncoding('utf8').on('data', onData);
    child.stderr.setEncoding('utf8').on('data', onError);
    // 'close', not 'exit': a line written just before exiting may not have been read at 'exit'.
    child.on('close', onExit);
  });
}

module.exports = { repo, loadBindings, underWine, windowsOnly, uniquePipeName, firstLine };
