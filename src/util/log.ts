/**
 * Debug logging through the `debug` package, loaded only when someone may be listening.
 *
 * `require('debug')` costs ~7 ms, a third of importing the package root, and a CLI that runs
 * before every command pays it on each start. So the package is loaded on the first log call,
 * and only when the `DEBUG` environment variable is set or the app has already loaded `debug`
 * itself (then `debug.enable('bridgekeeper:*')` at run time works too). Otherwise a log call
 * costs one property check.
 *
 * Namespaces: `bridgekeeper:server`, `bridgekeeper:client`, `bridgekeeper:authorizer`, …
 * (`DEBUG=bridgekeeper:* node app.js`). Nothing logged carries a secret or a payload.
 *
 * @internal
 */

import { createRequire } from 'node:module';

/** A namespaced logger with `debug`'s printf-style format (`%s`, `%d`, `%O`). */
export type Log = (format: string, ...args: unknown[]) => void;

type DebugFactory = (namespace: string) => Log;

// undefined: not decided yet; null: nobody listens, stay silent.
let factory: DebugFactory | null | undefined;

function loadFactory(): DebugFactory | null {
  const require = createRequire(import.meta.url);
  try {
    const resolved = require.resolve('debug');
    if (!process.env.DEBUG && !require.cache[resolved]) return null;
    return require('debug') as DebugFactory;
  } catch {
    return null; // `debug` missing from an odd install: logging is optional, never fatal
  }
}

/**
 * Creates a logger for `namespace`. Creating one costs nothing; `debug` is loaded on the first
 * call, if at all.
 */
export function createLog(namespace: string): Log {
  let log: Log | undefined;
  return (format, ...args) => {
    if (factory === undefined) factory = loadFactory();
    if (factory === null) return;
    log ??= factory(namespace);
    log(format, ...args);
  };
}
