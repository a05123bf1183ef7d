import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { repoRoot as root, staticImportClosure } from '../../support/import-graph.js';

const DBUS_CLIENT = '@jellybrick/dbus-next';

function sourceFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) =>
    entry.isDirectory()
      ? sourceFiles(join(dir, entry.name))
      : entry.name.endsWith('.ts')
        ? [join(dir, entry.name)]
        : [],
  );
}

describe('the D-Bus client loads lazily', () => {
  it.each(['src/prompt/polkit/index.ts', 'src/prompt/auto.ts'])(
    '%s imports no D-Bus client statically',
    (entry) => {
      const closure = staticImportClosure(entry);
      expect([...closure].filter((file) => file.includes(DBUS_CLIENT))).toEqual([]);
      expect([...closure].some((file) => file.endsWith('dbus-binding.ts'))).toBe(true);
    },
  );

  it('only src/prompt/polkit/dbus-binding.ts mentions the D-Bus client, through import()', () => {
    const mentions = sourceFiles(join(root, 'src')).filter((file) =>
      readFileSync(file, 'utf8').includes(`'${DBUS_CLIENT}'`),
    );
    expect(mentions.map((file) => file.slice(root.length + 1))).toEqual([
      'src/prompt/polkit/dbus-binding.ts',
    ]);
    const binding = readFileSync(join(root, 'src/prompt/polkit/dbus-binding.ts'), 'utf8');
    expect(binding).toMatch(new RegExp(`import\\('${DBUS_CLIENT}'\\)`));
    expect(binding).not.toMatch(new RegExp(`^import [^(]*from '${DBUS_CLIENT}'`, 'm'));
  });
});
