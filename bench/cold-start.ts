/**
 * cold_start: wall time of a fresh CLI process that imports the built package (dist/), connects,
 * handshakes, makes one authorized request (on an existing grant) and exits, against `node -e 0`
 * — and, on its own, the time to import the package root. Rounds alternate the three processes.
 *
 * @module
 */

import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, statSync } from 'node:fs';
import path from 'node:path';
import { Child, stopAll, timeProcess } from './lib/child.js';
import { FIXTURES, ROOT } from './lib/paths.js';
import { type BenchContext, type BenchResult, METHOD, PARAMS } from './lib/shared.js';
import { median, medianRatio, round } from './lib/stats.js';

const DIST = path.join(ROOT, 'dist', 'index.js');

function newestSource(directory: string): number {
  let newest = 0;
  for (const entry of readdirSync(directory, { withFileTypes: true })) {
    const full = path.join(directory, entry.name);
    newest = Math.max(newest, entry.isDirectory() ? newestSource(full) : statSync(full).mtimeMs);
  }
  return newest;
}

/** Builds dist/ when it is missing; tells whether it is older than src/. */
export function ensureDist(context: BenchContext, force: boolean): { stale: boolean } {
  if (force || !existsSync(DIST)) {
    context.log(
      force
        ? 'cold_start: building dist/ (--build)'
        : 'cold_start: dist/ is missing; running npm run build',
    );
    const build = spawnSync('npm', ['run', 'build'], {
      cwd: ROOT,
      stdio: ['ignore', 'ignore', 'inherit'],
    });
    if (build.status !== 0) throw new Error(`npm run build failed (exit ${build.status})`);
  }
  const stale = newestSource(path.join(ROOT, 'src')) > statSync(DIST).mtimeMs;
  if (stale) {
    context.log(
      'cold_start: WARNING: dist/ is older than src/; it measures the last build (run with --build to rebuild first)',
    );
  }
  return { stale };
}

interface Phases {
  started: number;
  imported: number;
  connected: number;
  answered: number;
  closed: number;
}

export async function coldStart(context: BenchContext, forceBuild = false): Promise<BenchResult> {
  const { stale } = ensureDist(context, forceBuild);
  const socket = path.join(context.tmp, 'cold.sock');
  const rounds = context.quick ? 4 : 20;
  const server = Child.start(
    context.build,
    'bk-server',
    { path: socket },
    { label: 'cold_start server' },
  );
  try {
    await server.next('ready');
    const cli = [path.join(FIXTURES, 'cold-cli.mjs'), socket, METHOD, JSON.stringify(PARAMS)];
    const importOnly = [path.join(FIXTURES, 'import-only.mjs')];
    const runCli = async (): Promise<{ ms: number; phases: Phases }> => {
      const run = await timeProcess(cli, { capture: true });
      if (run.code !== 0) throw new Error(`the cold CLI exited with code ${run.code}`);
      return { ms: run.ms, phases: JSON.parse(run.stdout) as Phases };
    };
    const runImport = async (): Promise<number> => {
      const run = await timeProcess(importOnly, { capture: true });
      if (run.code !== 0) throw new Error(`the import-only process exited with code ${run.code}`);
      return (JSON.parse(run.stdout) as { importMs: number }).importMs;
    };
    const runNode = async (): Promise<number> => {
      const run = await timeProcess(['-e', '0']);
      if (run.code !== 0) throw new Error(`node -e 0 exited with code ${run.code}`);
      return run.ms;
    };
    // Warm the page cache; the first CLI run creates the grant (the scripted prompt grants once).
    for (let index = 0; index < (context.quick ? 1 : 2); index++) {
      await runNode();
      await runCli();
      await runImport();
    }
    context.log(`cold_start: ${rounds} rounds of node -e 0 / CLI / import alone`);
    const ours: number[] = [];
    const baseline: number[] = [];
    const imports: number[] = [];
    const phases: Phases[] = [];
    for (let index = 0; index < rounds; index++) {
      baseline.push(await runNode());
      const run = await runCli();
      ours.push(run.ms);
      phases.push(run.phases);
      imports.push(await runImport());
    }
    const state = await server.request<{ type: string; prompts: number; denied: number }>(
      { type: 'state' },
      'state',
    );
    if (state.prompts !== 1 || state.denied !== 0) {
      throw new Error(
        `expected exactly one prompt (the grant) and no denial, saw ${state.prompts} prompts and ${state.denied} denials`,
      );
    }
    const ratio = medianRatio(ours, baseline);
    const phase = (from: keyof Phases, to: keyof Phases): number =>
      round(median(phases.map((p) => p[to] - p[from])), 1);
    return {
      name: 'cold_start',
      ours: round(median(ours), 1),
      baseline: round(median(baseline), 1),
      ratio: round(ratio, 2),
      unit: 'ms wall',
      runs: rounds,
      target: '≤ 1.25',
      checked: `ratio ${ratio.toFixed(2)}`,
      met: ratio <= 1.25,
      baselineIs: '`node -e 0`',
      details: {
        importPackageRootMs: round(median(imports), 1),
        extraMs: round(median(ours) - median(baseline), 1),
        phasesMs: {
          nodeStartToScript: round(median(phases.map((p) => p.started)), 1),
          importPackage: phase('started', 'imported'),
          connectAndHandshake: phase('imported', 'connected'),
          request: phase('connected', 'answered'),
          close: phase('answered', 'closed'),
        },
        distStale: stale,
      },
      lost: 0,
    };
  } finally {
    await stopAll([server]);
  }
}
