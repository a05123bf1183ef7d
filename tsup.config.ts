import { defineConfig } from 'tsup';

export default defineConfig({
  entry: { index: 'src/index.ts', testing: 'src/testing.ts' },
  format: ['esm', 'cjs'],
  dts: true,
  sourcemap: true,
  clean: true,
  target: 'node20',
  platform: 'node',
  splitting: true,
  external: ['koffi'],
  // import.meta.url in the CommonJS build (src/util/log.ts resolves `debug` from it).
  shims: true,
});
