/**
 * `npm run bench`: Bridgekeeper's figures, each as a ratio against a baseline measured in the
 * same run on the same machine, interleaved, with medians over repeated runs. Prints a table and
 * writes bench/results.json.
 *
 *   npm run bench                      full suite (≤ 3 minutes on 2 cores)
 *   npm run bench -- --quick           fewer rounds, shorter runs (< 30 s); every benchmark runs
 *   npm run bench -- --only=rtt,frames run some benchmarks only
 *   npm run bench -- --profile[=DIR]   write CPU profiles of the children (default bench/profiles)
 *                                      and print their top functions
 *   npm run bench -- --build           run `npm run build` first (cold_start measures dist/)
 *
 * Figures are not asserted: the exit code is non-zero only when a benchmark crashes or a request
 * is lost.
 *
 * @module
 */

import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { accept } from './accept.js';
import { authorizer } from './authorizer.js';
import { coldStart } from './cold-start.js';
import { connections } from './connections.js';
import { frames } from './frames.js';
import { buildFixtures } from './lib/build.js';
import { ROOT } from './lib/paths.js';
import { summarizeProfiles } from './lib/profile-summary.js';
import type { Bench, BenchContext, BenchResult } from './lib/shared.js';
import { formatNumber } from './lib/stats.js';
import { polkit } from './polkit.js';
import { rtt } from './rtt.js';
import { throughput } from './throughput.js';

const argv = process.argv.slice(2);
const flag = (name: string): string | boolean | undefined => {
  for (const arg of argv) {
    if (arg === `--${name}`) return true;
    if (arg.startsWith(`--${name}=`)) return arg.slice(name.length + 3);
  }
  return undefined;
};
const known = ['quick', 'only', 'profile', 'build'];
for (const arg of argv) {
  const name = arg.replace(/^--/, '').split('=')[0]!;
  if (!arg.startsWith('--') || !known.includes(name)) {
    console.error(
      `Unknown argument ${arg}. Use --quick, --only=NAME[,NAME], --profile[=DIR], --build.`,
    );
    process.exit(2);
  }
}

const quick = flag('quick') === true;
const forceBuild = flag('build') === true;
const profileFlag = flag('profile');
const profileRoot =
  profileFlag === undefined
    ? undefined
    : path.resolve(
        typeof profileFlag === 'string' ? profileFlag : path.join(ROOT, 'bench', 'profiles'),
      );

const BENCHMARKS: Array<[string, Bench]> = [
  ['rtt', rtt],
  ['throughput', throughput],
  ['cold_start', (context) => coldStart(context, forceBuild)],
  ['accept', accept],
  ['authorizer', authorizer],
  ['connections', connections],
  ['frames', frames],
  ['polkit', polkit],
];
const onlyFlag = flag('only');
const only =
  typeof onlyFlag === 'string' ? onlyFlag.split(',').map((name) => name.trim()) : undefined;
for (const name of only ?? []) {
  if (!BENCHMARKS.some(([known]) => known === name)) {
    console.error(
      `No benchmark "${name}". Known: ${BENCHMARKS.map(([known]) => known).join(', ')}.`,
    );
    process.exit(2);
  }
}

function log(message: string): void {
  process.stderr.write(`${message}\n`);
}

function failed(name: string, error: unknown): BenchResult {
  return {
    name,
    ours: null,
    baseline: null,
    ratio: null,
    unit: '',
    runs: 0,
    target: '',
    checked: 'crashed',
    met: null,
    baselineIs: '',
    details: {},
    error: error instanceof Error ? error.message : String(error),
  };
}

function table(results: BenchResult[]): string {
  const rows = [
    ['benchmark', 'ours', 'baseline', 'unit', 'ratio', 'target', 'result', 'runs'],
    ...results.map((r) => [
      r.name,
      formatNumber(r.ours),
      formatNumber(r.baseline),
      r.unit,
      r.ratio === null ? '—' : r.ratio.toFixed(2),
      r.target,
      r.error
        ? `CRASHED: ${r.error.split('\n')[0]!.slice(0, 100)}`
        : r.skipped
          ? `skipped: ${r.skipped}`
          : `${r.met === null ? '' : r.met ? 'met' : 'MISSED'} (${r.checked})`,
      String(r.runs),
    ]),
  ];
  const widths = rows[0]!.map((_, column) => Math.max(...rows.map((row) => row[column]!.length)));
  const line = (row: string[]): string =>
    `| ${row.map((cell, column) => cell.padEnd(widths[column]!)).join(' | ')} |`;
  return [
    line(rows[0]!),
    `|${widths.map((width) => '-'.repeat(width + 2)).join('|')}|`,
    ...rows.slice(1).map(line),
  ].join('\n');
}

function detailLine(value: unknown): string {
  if (typeof value === 'number') return formatNumber(value);
  if (Array.isArray(value)) return value.map(detailLine).join(', ');
  if (value !== null && typeof value === 'object') {
    return `{ ${Object.entries(value)
      .map(([key, inner]) => `${key}: ${detailLine(inner)}`)
      .join(', ')} }`;
  }
  return String(value);
}

const started = performance.now();
const tmp = mkdtempSync(path.join(os.tmpdir(), 'bridgekeeper-bench-'));
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => {
    // The children see their IPC channel close and exit on their own.
    rmSync(tmp, { recursive: true, force: true });
    process.exit(130);
  });
}
const results: BenchResult[] = [];
let exitCode = 0;
try {
  log(`building the fixtures (current src/) into ${tmp}/build`);
  let build: string;
  try {
    build = await buildFixtures(tmp);
  } catch (error) {
    log(
      `could not build the fixtures from src/: ${error instanceof Error ? error.message : error}`,
    );
    process.exitCode = 1;
    throw error;
  }
  for (const [name, bench] of BENCHMARKS) {
    if (only && !only.includes(name)) continue;
    const profileDir = profileRoot ? path.join(profileRoot, name) : undefined;
    if (profileDir) {
      rmSync(profileDir, { recursive: true, force: true });
      mkdirSync(profileDir, { recursive: true });
    }
    const context: BenchContext = { quick, tmp, build, log, profileDir };
    const benchStarted = performance.now();
    let result: BenchResult;
    try {
      result = await bench(context);
    } catch (error) {
      result = failed(name, error);
      log(`${name}: CRASHED: ${error instanceof Error ? (error.stack ?? error.message) : error}`);
    }
    if (result.error || (result.lost ?? 0) > 0) exitCode = 1;
    if ((result.lost ?? 0) > 0) log(`${name}: ${result.lost} request(s) lost`);
    results.push(result);
    log(`${name}: done in ${((performance.now() - benchStarted) / 1000).toFixed(1)} s`);
    if (profileDir) for (const line of summarizeProfiles(profileDir)) log(line);
  }
} finally {
  rmSync(tmp, { recursive: true, force: true });
}

const seconds = (performance.now() - started) / 1000;
const cpu = os.cpus();
const meta = {
  generatedAt: new Date().toISOString(),
  mode: quick ? 'quick' : 'full',
  ...(only ? { only } : {}),
  node: process.version,
  platform: `${process.platform} ${os.release()} ${process.arch}`,
  cpus: `${cpu.length} × ${cpu[0]?.model ?? 'unknown'}`,
  seconds: Math.round(seconds * 10) / 10,
};
const outFile = path.join(ROOT, 'bench', 'results.json');
writeFileSync(outFile, `${JSON.stringify({ ...meta, benchmarks: results }, null, 2)}\n`);

process.stdout.write(
  `\nBridgekeeper benchmarks (${meta.mode}) — Node ${meta.node}, ${meta.platform}, ${meta.cpus}\n\n`,
);
process.stdout.write(`${table(results)}\n\n`);
for (const result of results) {
  const details = Object.entries(result.details)
    .map(([key, value]) => `${key} ${detailLine(value)}`)
    .join('; ');
  if (result.baselineIs || details) {
    process.stdout.write(
      `- ${result.name}: baseline = ${result.baselineIs || '—'}${details ? `. ${details}` : ''}\n`,
    );
  }
}
process.stdout.write(
  `\nRatios are ours / baseline (medians of per-round ratios where rounds are paired). ` +
    `Wrote ${path.relative(ROOT, outFile)} in ${seconds.toFixed(1)} s.\n`,
);
if (exitCode !== 0) {
  process.stdout.write('A benchmark crashed or lost a request: exiting with status 1.\n');
}
process.exit(exitCode);
