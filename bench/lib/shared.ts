/**
 * What the benchmark modules, their child-process fixtures and the runner share: the request
 * every round-trip benchmark sends, its exact wire bytes for the raw baselines, and the shape of
 * a result.
 *
 * @module
 */

/** The app name every benchmark server uses. */
export const APP = 'bench';
/** The authorized method: resolves the `work` account, then echoes its params. */
export const METHOD = 'bench.read';
/** The account every request asks for. */
export const ACCOUNT = { id: 'work', displayName: 'Work (benchmark)' } as const;

/** Params of every authorized request: exactly 200 bytes of JSON. */
export const PARAMS = Object.freeze({
  account: 'work',
  item: 'databases/production/primary',
  fields: ['username', 'password', 'host', 'port'],
  note: 'n'.repeat(87),
});

if (JSON.stringify(PARAMS).length !== 200) {
  throw new Error(`PARAMS is ${JSON.stringify(PARAMS).length} bytes, expected 200`);
}

/**
 * The request exactly as the Bridgekeeper client serializes it (JSON-RPC 2.0, `params` last),
 * with a six-digit id like the ones a long run reaches: the raw baselines send these bytes.
 */
export function requestJson(id: number): string {
  return JSON.stringify({ jsonrpc: '2.0', id, method: METHOD, params: PARAMS });
}

/** A length-prefixed frame (4-byte big-endian length, then the UTF-8 JSON), as on the wire. */
export function frameOf(json: string): Buffer {
  const body = Buffer.from(json, 'utf8');
  const frame = Buffer.allocUnsafe(4 + body.length);
  frame.writeUInt32BE(body.length, 0);
  body.copy(frame, 4);
  return frame;
}

/** One benchmark's outcome, as written to `bench/results.json`. */
export interface BenchResult {
  /** Benchmark name (`rtt`, `throughput`, …). */
  name: string;
  /** Our figure, in `unit`. */
  ours: number | null;
  /** The baseline's figure, in `unit`, measured in the same run, interleaved with ours. */
  baseline: number | null;
  /** ours / baseline (median of the per-round ratios where rounds are paired). */
  ratio: number | null;
  /** Unit of `ours` and `baseline`. */
  unit: string;
  /** Paired rounds (or samples) the medians were taken over. */
  runs: number;
  /** The target from the issue, in words. */
  target: string;
  /** The figure the target is checked against, in words (e.g. `ratio 1.21`, `+48 µs`). */
  checked: string;
  /** Whether the target was met; null when there is none or the benchmark was skipped. */
  met: boolean | null;
  /** What the baseline is. */
  baselineIs: string;
  /** Further figures (p99, import time, heap bytes, …). */
  details: Record<string, unknown>;
  /** Why the benchmark did not run, when it did not. */
  skipped?: string;
  /** What crashed, when it crashed. */
  error?: string;
  /** Requests sent but never answered (any lost request fails the run). */
  lost?: number;
}

/** What every benchmark module gets from the runner. */
export interface BenchContext {
  /** `--quick`: fewer rounds, shorter durations; every benchmark still runs. */
  quick: boolean;
  /** A private temporary directory for sockets. */
  tmp: string;
  /** Where the fixtures were built (with the current src/), as plain ESM for plain `node`. */
  build: string;
  /** Progress output (stderr), so stdout keeps only the table. */
  log(message: string): void;
  /** Write a CPU profile of the children of this benchmark to this directory, if set. */
  profileDir: string | undefined;
}

/** A benchmark module's entry point. */
export type Bench = (context: BenchContext) => Promise<BenchResult>;
