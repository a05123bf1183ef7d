import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vitest/config';

export default defineConfig({
  resolve: {
    alias: {
      'bridgekeeper/testing': fileURLToPath(new URL('./src/testing.ts', import.meta.url)),
      bridgekeeper: fileURLToPath(new URL('./src/index.ts', import.meta.url)),
    },
  },
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 20_000,
    hookTimeout: 30_000,
    pool: 'forks',
    reporters: [
      'default',
      './test/support/skipped-reporter.ts',
      './test/support/adversarial-reporter.ts',
    ],
  },
});
