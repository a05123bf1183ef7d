/**
 * The `debug` package is loaded only when someone may listen (src/util/log.ts): a CLI that never
 * sets DEBUG does not pay for it, and DEBUG=bridgekeeper:* still shows the logs.
 */

import { spawnSync } from 'node:child_process';
import { createRequire } from 'node:module';
import { describe, expect, it } from 'vitest';
import { repoRoot } from '../support/import-graph.js';

const tsx = createRequire(import.meta.url).resolve('tsx');

// An in-memory server and client that exchange one request; both log as they go.
const script = `
import { createRequire } from 'node:module';
import { connect, createServer } from 'bridgekeeper';
import { MemoryListener, ScriptedPromptBackend } from 'bridgekeeper/testing';
const server = createServer({ app: 'log-test', prompt: new ScriptedPromptBackend() });
server.handle('ping', {}, () => 'pong');
const listener = new MemoryListener();
await server.listen({ listener });
const client = await connect({ app: 'log-test', transport: await listener.connect() });
if ((await client.request('ping')) !== 'pong') throw new Error('no pong');
await client.close();
await server.close();
const loaded = Object.keys(createRequire(import.meta.url).cache).some((k) =>
  /[\\\\/]node_modules[\\\\/]debug[\\\\/]/.test(k));
process.stdout.write(JSON.stringify({ loaded }));
`;

function run(debug: string | undefined): { loaded: boolean; stderr: string } {
  const env: NodeJS.ProcessEnv = { ...process.env, DEBUG_COLORS: 'no' };
  if (debug === undefined) delete env.DEBUG;
  else env.DEBUG = debug;
  const child = spawnSync(
    process.execPath,
    ['--import', tsx, '--input-type=module', '-e', script],
    {
      cwd: repoRoot,
      env,
      encoding: 'utf8',
      timeout: 30_000,
    },
  );
  expect(child.status, child.stderr).toBe(0);
  return { ...(JSON.parse(child.stdout) as { loaded: boolean }), stderr: child.stderr };
}

describe('debug logging', () => {
  it('does not load the debug package when DEBUG is not set', () => {
    const result = run(undefined);
    expect(result.loaded).toBe(false);
    expect(result.stderr).toBe('');
  });

  it('logs under bridgekeeper:* namespaces when DEBUG names them', () => {
    const result = run('bridgekeeper:*');
    expect(result.loaded).toBe(true);
    expect(result.stderr).toMatch(/bridgekeeper:server /);
  });
});
