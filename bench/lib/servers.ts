/**
 * The server pair the round-trip benchmarks measure against each other: the Bridgekeeper bench
 * server and the raw echo baseline, each in its own process.
 *
 * @module
 */

import path from 'node:path';
import { Child } from './child.js';
import type { BenchContext } from './shared.js';

export interface ServerPair {
  /** The Bridgekeeper server's socket path. */
  bkPath: string;
  /** The raw echo server's socket path. */
  echoPath: string;
  server: Child;
  echo: Child;
}

/**
 * Starts `bk-server` on `<tmp>/<prefix>-bk.sock` (profiled when the run profiles) and
 * `echo-server` on `<tmp>/<prefix>-echo.sock`, labelled `<label> server` and
 * `<label> echo server`; adds both to `children` (for stopAll) and resolves once both are ready.
 */
export async function startServerPair(
  context: BenchContext,
  prefix: string,
  label: string,
  children: Child[],
): Promise<ServerPair> {
  const bkPath = path.join(context.tmp, `${prefix}-bk.sock`);
  const echoPath = path.join(context.tmp, `${prefix}-echo.sock`);
  const server = Child.start(
    context.build,
    'bk-server',
    { path: bkPath, profiling: context.profileDir !== undefined },
    { label: `${label} server`, profileDir: context.profileDir },
  );
  const echo = Child.start(
    context.build,
    'echo-server',
    { path: echoPath },
    { label: `${label} echo server` },
  );
  children.push(server, echo);
  await Promise.all([server.next('ready'), echo.next('ready')]);
  return { bkPath, echoPath, server, echo };
}
