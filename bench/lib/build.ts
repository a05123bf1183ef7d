/**
 * Builds the fixtures, with the current src/, into the run's temporary directory: the same
 * esbuild settings as `tsup.config.ts` (ESM, node20, code splitting, `debug` and `koffi` left
 * external), so the children run exactly the code the package ships — and not through tsx, whose
 * `keepNames` wraps every closure in a `__name()` call that the shipped build does not have.
 *
 * @module
 */

import { symlinkSync } from 'node:fs';
import path from 'node:path';
import { FIXTURES, ROOT } from './paths.js';

/** Fixtures that run as child processes (`bench/fixtures/<name>.ts`). */
export const FIXTURE_NAMES = [
  'bk-server',
  'echo-server',
  'rtt-client',
  'load-client',
  'accept-server',
  'accept-client',
  'conn-client',
  'authorizer-child',
  'frames-child',
] as const;

/** Builds into `<tmp>/build` and returns that directory. */
export async function buildFixtures(tmp: string): Promise<string> {
  const outDir = path.join(tmp, 'build');
  // The build leaves `debug` and `koffi` as bare imports, as dist/ does; they resolve through
  // this link to the project's node_modules.
  symlinkSync(path.join(ROOT, 'node_modules'), path.join(tmp, 'node_modules'), 'dir');
  const { build } = await import('tsup');
  const entry: Record<string, string> = {};
  for (const name of FIXTURE_NAMES) entry[name] = path.join(FIXTURES, `${name}.ts`);
  await build({
    entry,
    outDir,
    format: ['esm'],
    target: 'node20',
    platform: 'node',
    splitting: true,
    sourcemap: false,
    dts: false,
    clean: true,
    external: ['koffi', 'debug'],
    silent: true,
    config: false,
    tsconfig: path.join(ROOT, 'tsconfig.json'),
  });
  return outDir;
}
