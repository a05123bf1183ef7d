import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ERROR_CODES } from 'bridgekeeper';
import { describe, expect, it } from 'vitest';
import { repoRoot as root, staticImportClosure } from './support/import-graph.js';

describe('package root', () => {
  it.each(['src/index.ts', 'src/testing.ts'])(
    '%s loads no native code and no platform module statically',
    (entry) => {
      const closure = [...staticImportClosure(entry)];
      expect(closure.filter((file) => file.includes('koffi'))).toEqual([]);
      expect(closure.filter((file) => /src\/platform\/(linux|darwin|win32)\//.test(file))).toEqual(
        [],
      );
      // Sanity: the walk does see the modules it should.
      expect(
        closure.some(
          (file) => file.endsWith('src/server.ts') || file.endsWith('src/prompt/scripted.ts'),
        ),
      ).toBe(true);
    },
  );

  it('names koffi only under src/platform/ (one binding module per OS touches the FFI)', () => {
    const files = (readdirSync(join(root, 'src'), { recursive: true }) as string[])
      .map((file) => file.replaceAll('\\', '/'))
      .filter((file) => file.endsWith('.ts') && !file.startsWith('platform/'));
    expect(files.length).toBeGreaterThan(30);
    const naming = files.filter((file) =>
      /koffi/i.test(readFileSync(join(root, 'src', file), 'utf8')),
    );
    expect(naming).toEqual([]);
  });

  it('pins the list of error codes (codes are only ever added)', () => {
    expect(Object.keys(ERROR_CODES)).toEqual([
      'ERR_INVALID_ARGUMENT',
      'ERR_CLOSED',
      'ERR_ABORTED',
      'ERR_TIMEOUT',
      'ERR_APP_UNAVAILABLE',
      'ERR_ALREADY_RUNNING',
      'ERR_UNSAFE_ENDPOINT',
      'ERR_ENDPOINT_PATH_TOO_LONG',
      'ERR_FRAME_TOO_LARGE',
      'ERR_TRANSPORT_CLOSED',
      'ERR_CONNECTION_LIMIT',
      'ERR_PROTOCOL',
      'ERR_UNSUPPORTED_VERSION',
      'ERR_METHOD_NOT_FOUND',
      'ERR_INVALID_PARAMS',
      'ERR_INTERNAL',
      'ERR_PEER_REJECTED',
      'ERR_PEER_CHANGED',
      'ERR_PEER_UNKNOWN',
      'ERR_SERVER_REJECTED',
      'ERR_AUTHORIZATION_DENIED',
      'ERR_AUTHORIZATION_CANCELLED',
      'ERR_AUTHORIZATION_COOLDOWN',
      'ERR_PROMPT_UNAVAILABLE',
      'ERR_PROMPT_FAILED',
      'ERR_UNSUPPORTED_PLATFORM',
      'ERR_PLATFORM',
      'ERR_SEND_BUFFER_FULL',
      'ERR_ENDPOINT_LOST',
    ]);
  });
});

describe('README', () => {
  it.each(['app.ts', 'cli.ts'])(
    'shows examples/quick-start/%s as it is (so the typecheck covers the quick start)',
    (file) => {
      const readme = readFileSync(join(root, 'README.md'), 'utf8');
      const source = readFileSync(join(root, 'examples/quick-start', file), 'utf8');
      // The first line of the file says where it comes from; the rest is in the README.
      expect(readme).toContain(source.split('\n').slice(1).join('\n').trimEnd());
    },
  );
});
