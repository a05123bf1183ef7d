import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const root = fileURLToPath(new URL('../../../', import.meta.url));
const probe = fileURLToPath(new URL('../../fixtures/linux/lazy-load-probe.mjs', import.meta.url));
const linuxIndex = fileURLToPath(new URL('../../../src/platform/linux/index.ts', import.meta.url));

describe('loading the Linux platform module', () => {
  it.skipIf(process.platform !== 'linux')(
    'loads no native code at import; createLinuxPlatform() loads koffi (Linux only)',
    () => {
      // A fresh process, so nothing this test runner loaded earlier counts.
      const output = execFileSync(process.execPath, ['--import', 'tsx', probe, linuxIndex], {
        cwd: root,
        encoding: 'utf8',
      });
      const result = JSON.parse(output.trim().split('\n').at(-1) ?? '{}') as {
        atImport: string[];
        afterCreate: string[];
        id: string;
      };
      expect(result.atImport).toEqual([]);
      expect(result.afterCreate.some((file) => /koffi/.test(file))).toBe(true);
      expect(result.id).toBe('linux');
    },
  );
});
