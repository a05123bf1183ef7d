import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const root = join(dirname(fileURLToPath(import.meta.url)), '../../..');
const DBUS_CLIENT = '@jellybrick/dbus-next';

/** Follows static imports from an entry file (dynamic import() is how the D-Bus client loads). */
function staticImports(entry: string): Set<string> {
  const seen = new Set<string>();
  const queue = [resolve(root, entry)];
  while (queue.length > 0) {
    const file = queue.pop()!;
    if (seen.has(file)) continue;
    seen.add(file);
    const source = readFileSync(file, 'utf8');
    for (const match of source.matchAll(/^\s*(?:import|export)\s[^;]*?from\s+'([^']+)'/gm)) {
      const specifier = match[1]!;
      if (specifier.startsWith('.')) {
        queue.push(resolve(dirname(file), specifier.replace(/\.js$/, '.ts')));
      } else {
        seen.add(`pkg:${specifier}`);
      }
    }
  }
  return seen;
}

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
      const closure = staticImports(entry);
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
