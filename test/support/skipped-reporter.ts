/**
 * Lists every skipped test at the end of a run, so a person running `npm test` without root
 * (or without tmux, python3, …) sees what did not run. Each conditional skip names its reason
 * in the test's title.
 */

import { relative } from 'node:path';
import type { Reporter, TestModule } from 'vitest/node';

export default class SkippedReporter implements Reporter {
  onTestRunEnd(testModules: ReadonlyArray<TestModule>): void {
    const skipped: string[] = [];
    for (const module of testModules) {
      for (const test of module.children.allTests('skipped')) {
        skipped.push(`  - ${relative(process.cwd(), module.moduleId)} › ${test.fullName}`);
      }
    }
    if (skipped.length === 0) {
      process.stdout.write('\nNo tests were skipped.\n');
      return;
    }
    process.stdout.write(
      `\n${skipped.length} test(s) skipped; each title says what it needs:\n${skipped.join('\n')}\n`,
    );
  }
}
