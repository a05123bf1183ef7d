/**
 * A walk over the static import graph of the sources, for tests that check which modules an
 * entry point loads eagerly (dynamic import() is how platform code and optional clients load
 * lazily, so the walk does not follow it).
 */
import { readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The repository's root directory. */
export const repoRoot = join(dirname(fileURLToPath(import.meta.url)), '../..');

/**
 * Follows static imports and re-exports from `entry` (a path relative to the repository root).
 * Returns the absolute paths of every source file reached, plus `pkg:<specifier>` for each
 * package imported by name.
 */
export function staticImportClosure(entry: string): Set<string> {
  const seen = new Set<string>();
  const queue = [resolve(repoRoot, entry)];
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
