/**
 * Prints one line per adversarial category at the end of a run: how many cases were tried and
 * how many failed. A category is a file `test/adversarial/<category>.test.ts`. A test that tries
 * many cases (a fast-check property, a flood of connections) says how many with
 * `countCases(task, n)` from `test/adversarial/support/cases.ts`; any other test counts as one
 * case. A failed test counts as one failure (fast-check stops at the first counterexample).
 */

import { basename, relative } from 'node:path';
import type { Reporter, TestModule } from 'vitest/node';

interface Tally {
  tests: number;
  cases: number;
  failures: number;
  skipped: number;
}

export default class AdversarialReporter implements Reporter {
  onTestRunEnd(testModules: ReadonlyArray<TestModule>): void {
    const categories = new Map<string, Tally>();
    for (const module of testModules) {
      const path = relative(process.cwd(), module.moduleId);
      if (!path.startsWith('test/adversarial/') || !path.endsWith('.test.ts')) continue;
      const category = basename(path, '.test.ts');
      const tally = categories.get(category) ?? { tests: 0, cases: 0, failures: 0, skipped: 0 };
      categories.set(category, tally);
      for (const test of module.children.allTests()) {
        const state = test.result().state;
        if (state === 'skipped' || state === 'pending') {
          tally.skipped += 1;
          continue;
        }
        tally.tests += 1;
        tally.cases += test.meta().adversarialCases ?? 1;
        if (state === 'failed') tally.failures += 1;
      }
    }
    if (categories.size === 0) return;
    const lines = [...categories]
      .sort(([a], [b]) => a.localeCompare(b))
      .map(
        ([category, t]) =>
          `  ${category.padEnd(14)} ${t.cases.toLocaleString('en-US')} cases tried in ${t.tests} tests, ` +
          `${t.failures} failed${t.skipped ? `, ${t.skipped} skipped` : ''}`,
      );
    process.stdout.write(`\nAdversarial suite, per category:\n${lines.join('\n')}\n`);
  }
}
