/**
 * Case counting for the adversarial summary (test/support/adversarial-reporter.ts).
 */

import type { TaskMeta } from 'vitest';

declare module 'vitest' {
  interface TaskMeta {
    /** How many cases this test tried; the reporter counts 1 when absent. */
    adversarialCases?: number;
  }
}

/** Adds `n` tried cases to the running test's count. Call it as cases run, not only at the end. */
export function countCases(task: { meta: TaskMeta }, n: number): void {
  task.meta.adversarialCases = (task.meta.adversarialCases ?? 0) + n;
}
