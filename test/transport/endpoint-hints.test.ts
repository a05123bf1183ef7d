/**
 * File-system errors while preparing the endpoint say what to do, and only what fits the step
 * that failed.
 */

import { spawnSync } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';

const uid = process.getuid?.() ?? 0;
const repoRoot = path.resolve(import.meta.dirname, '../..');
const cleanups: Array<() => unknown> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

describe('file-system errors at start', () => {
  it.skipIf(uid !== 0)(
    'EACCES while resolving/checking (not creating) says "You may not create files in its directory"',
    () => {
      const top = mkdtempSync(path.join(tmpdir(), 'bk-hints-'));
      cleanups.push(() => rmSync(top, { recursive: true, force: true }));
      chmodSync(top, 0o700); // root's, not searchable by uid 65534
      const base = path.join(top, 'base');
      mkdirSync(base, { mode: 0o700 });
      const tsx = createRequire(import.meta.url).resolve('tsx');
      const script = `
        import { prepareEndpointDirectory } from ${JSON.stringify(path.join(repoRoot, 'src/transport/endpoint.ts'))};
        try { await prepareEndpointDirectory(${JSON.stringify(path.join(base, 'app'))}, { base: ${JSON.stringify(base)} }); }
        catch (e) { process.stdout.write(e.message); }`;
      const child = spawnSync(
        'setpriv',
        [
          '--reuid=65534',
          '--regid=65534',
          '--clear-groups',
          process.execPath,
          '--import',
          tsx,
          '--input-type=module',
          '-e',
          script,
        ],
        { cwd: tmpdir(), encoding: 'utf8', timeout: 30_000 },
      );
      expect(child.stdout).toMatch(/EACCES/);
      // The failing step read a path; nothing was being created.
      expect(child.stdout).not.toMatch(/You may not create files in its directory/);
      expect(child.stdout).toMatch(/check the owner and mode of each/);
    },
  );
});
