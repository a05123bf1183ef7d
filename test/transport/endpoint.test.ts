import { chmod, chown, lstat, mkdir, stat, symlink, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { BridgekeeperError } from '../../src/errors.js';
import {
  checkSocketFile,
  MAX_SOCKET_PATH_BYTES,
  prepareEndpointDirectory,
  resolveEndpoint,
} from '../../src/transport/endpoint.js';
import { makeTempDirectory, rejectionOf, removeDirectory, runningAsRoot } from './helpers.js';

const isRoot = runningAsRoot(
  'endpoint.test: not running as root, so the other-user ownership test is skipped',
);

function errorOf(fn: () => unknown): BridgekeeperError {
  try {
    fn();
  } catch (error) {
    expect(error).toBeInstanceOf(BridgekeeperError);
    return error as BridgekeeperError;
  }
  throw new Error('expected a throw');
}

describe('resolveEndpoint', () => {
  it('uses $XDG_RUNTIME_DIR/<app>/agent.sock on Linux', () => {
    const endpoint = resolveEndpoint('my-agent', {
      platform: 'linux',
      env: { XDG_RUNTIME_DIR: '/run/user/1000' },
      uid: 1000,
    });
    expect(endpoint).toEqual({
      directory: '/run/user/1000/my-agent',
      path: '/run/user/1000/my-agent/agent.sock',
      base: '/run/user/1000',
    });
  });

  it('ignores a trailing slash on the variable', () => {
    const endpoint = resolveEndpoint('a', {
      platform: 'linux',
      env: { XDG_RUNTIME_DIR: '/run/user/7/' },
    });
    expect(endpoint.path).toBe('/run/user/7/a/agent.sock');
  });

  it('falls back to <tmpdir>/bridgekeeper-<uid>/<app> when XDG_RUNTIME_DIR is unset', () => {
    const endpoint = resolveEndpoint('my-agent', {
      platform: 'linux',
      env: {},
      uid: 1234,
      tmpdir: '/tmp',
    });
    expect(endpoint).toEqual({
      directory: '/tmp/bridgekeeper-1234/my-agent',
      path: '/tmp/bridgekeeper-1234/my-agent/agent.sock',
      base: '/tmp',
    });
  });

  it('falls back when XDG_RUNTIME_DIR is empty or relative', () => {
    for (const value of ['', 'run/user/1000', './x']) {
      const endpoint = resolveEndpoint('app', {
        platform: 'linux',
        env: { XDG_RUNTIME_DIR: value },
        uid: 5,
        tmpdir: '/var/tmp',
      });
      expect(endpoint.path).toBe('/var/tmp/bridgekeeper-5/app/agent.sock');
    }
  });

  it('uses the process uid and os.tmpdir() by default', () => {
    const uid = process.getuid?.();
    const endpoint = resolveEndpoint('app', { platform: 'linux', env: {} });
    expect(endpoint.directory).toBe(path.join(os.tmpdir(), `bridgekeeper-${uid}`, 'app'));
  });

  it('uses $TMPDIR on macOS, with the same fallback', () => {
    expect(
      resolveEndpoint('my-agent', {
        platform: 'darwin',
        env: { TMPDIR: '/var/folders/xy/abc123/T/', XDG_RUNTIME_DIR: '/ignored' },
        uid: 501,
      }).path,
    ).toBe('/var/folders/xy/abc123/T/my-agent/agent.sock');
    expect(
      resolveEndpoint('my-agent', { platform: 'darwin', env: {}, uid: 501, tmpdir: '/tmp' }).path,
    ).toBe('/tmp/bridgekeeper-501/my-agent/agent.sock');
  });

  it.each(['', '.hidden', '-dash', 'with space', 'slash/name', '..', 'ünïcode', 'a'.repeat(65)])(
    'rejects the app name %j with ERR_INVALID_ARGUMENT',
    (name) => {
      expect(errorOf(() => resolveEndpoint(name, { platform: 'linux', env: {} })).code).toBe(
        'ERR_INVALID_ARGUMENT',
      );
    },
  );

  it('accepts names of 1 to 64 allowed characters', () => {
    expect(resolveEndpoint('a', { platform: 'linux', env: { XDG_RUNTIME_DIR: '/r' } }).path).toBe(
      '/r/a/agent.sock',
    );
    const long = `A${'b.c_d-9'.repeat(9)}`.slice(0, 64);
    expect(
      resolveEndpoint(long, { platform: 'linux', env: { XDG_RUNTIME_DIR: '/r' } }).directory,
    ).toBe(`/r/${long}`);
  });

  it('exports the per-platform limits', () => {
    expect(MAX_SOCKET_PATH_BYTES.linux).toBe(107);
    expect(MAX_SOCKET_PATH_BYTES.darwin).toBe(103);
  });

  it('accepts a path of exactly 107 bytes on Linux and refuses 108', () => {
    // '/x/' + dir + '/' + app + '/agent.sock'
    const fixed = '/app/agent.sock'.length;
    const dirFor = (total: number): string => `/${'d'.repeat(total - fixed - 1)}`;
    const ok = resolveEndpoint('app', { platform: 'linux', env: { XDG_RUNTIME_DIR: dirFor(107) } });
    expect(Buffer.byteLength(ok.path)).toBe(107);
    const error = errorOf(() =>
      resolveEndpoint('app', { platform: 'linux', env: { XDG_RUNTIME_DIR: dirFor(108) } }),
    );
    expect(error.code).toBe('ERR_ENDPOINT_PATH_TOO_LONG');
    expect(error.message).toContain(`${dirFor(108)}/app/agent.sock`);
    expect(error.message).toContain('108 bytes');
    expect(error.message).toContain('107');
    expect(error.message).toMatch(/shorter app name/);
    expect(error.message).toMatch(/XDG_RUNTIME_DIR/);
  });

  it('counts bytes, not characters, and uses the macOS limit of 103', () => {
    const dir = `/${'é'.repeat(44)}`; // 89 bytes, 45 characters
    const error = errorOf(() =>
      resolveEndpoint('app', { platform: 'darwin', env: { TMPDIR: dir } }),
    );
    expect(error.code).toBe('ERR_ENDPOINT_PATH_TOO_LONG');
    expect(error.message).toContain('104 bytes');
    expect(error.message).toContain('103');
    expect(error.message).toMatch(/TMPDIR/);
  });

  it('refuses Windows with ERR_UNSUPPORTED_PLATFORM', () => {
    expect(errorOf(() => resolveEndpoint('app', { platform: 'win32', env: {} })).code).toBe(
      'ERR_UNSUPPORTED_PLATFORM',
    );
  });
});

describe('prepareEndpointDirectory', () => {
  let root: string;
  let originalUmask: number;

  beforeEach(async () => {
    root = await makeTempDirectory('bk-endpoint-');
    originalUmask = process.umask();
  });

  afterEach(async () => {
    process.umask(originalUmask);
    await removeDirectory(root);
  });

  const modeOf = async (target: string): Promise<number> => (await lstat(target)).mode & 0o7777;

  it('creates the fallback layout with mode 0700 at every level it creates, whatever the umask', async () => {
    process.umask(0);
    const endpoint = resolveEndpoint('app', { platform: 'linux', env: {}, tmpdir: root });
    await prepareEndpointDirectory(endpoint.directory, { base: endpoint.base });
    expect(await modeOf(path.dirname(endpoint.directory))).toBe(0o700);
    expect(await modeOf(endpoint.directory)).toBe(0o700);
    expect(path.basename(path.dirname(endpoint.directory))).toBe(
      `bridgekeeper-${process.getuid?.()}`,
    );
  });

  it('finds the base itself when given only the directory (the temp-dir fallback)', async () => {
    process.umask(0o022);
    const endpoint = resolveEndpoint('app', { platform: 'linux', env: {}, tmpdir: root });
    await prepareEndpointDirectory(endpoint.directory, { tmpdir: root, env: {} });
    expect(await modeOf(path.dirname(endpoint.directory))).toBe(0o700);
    // The strict check covers the bridgekeeper-<uid> level too when it already exists.
    await chmod(path.dirname(endpoint.directory), 0o755);
    const error = await rejectionOf(
      prepareEndpointDirectory(endpoint.directory, { tmpdir: root, env: {} }),
    );
    expect(error.code).toBe('ERR_UNSAFE_ENDPOINT');
    expect(error.message).toContain(path.dirname(endpoint.directory));
  });

  it('finds $XDG_RUNTIME_DIR as the base when the directory is under it', async () => {
    const runtime = path.join(root, 'runtime');
    await mkdir(runtime, { mode: 0o700 });
    const endpoint = resolveEndpoint('app', {
      platform: 'linux',
      env: { XDG_RUNTIME_DIR: runtime },
    });
    await prepareEndpointDirectory(endpoint.directory, {
      env: { XDG_RUNTIME_DIR: runtime },
      platform: 'linux',
    });
    expect(await modeOf(endpoint.directory)).toBe(0o700);
  });

  it('accepts an existing private directory and is idempotent', async () => {
    const directory = path.join(root, 'app');
    await mkdir(directory, { mode: 0o700 });
    await prepareEndpointDirectory(directory, { base: root });
    await prepareEndpointDirectory(directory, { base: root });
    expect(await modeOf(directory)).toBe(0o700);
  });

  it('refuses an existing directory with mode 0777, says how to fix it, and leaves its mode alone', async () => {
    const directory = path.join(root, 'app');
    await mkdir(directory);
    await chmod(directory, 0o777);
    const error = await rejectionOf(prepareEndpointDirectory(directory, { base: root }));
    expect(error.code).toBe('ERR_UNSAFE_ENDPOINT');
    expect(error.message).toContain(directory);
    expect(error.message).toContain('0777');
    expect(error.message).toContain(`chmod 700 ${directory}`);
    expect(await modeOf(directory)).toBe(0o777);
  });

  it('refuses group-readable modes too (0750)', async () => {
    const directory = path.join(root, 'app');
    await mkdir(directory);
    await chmod(directory, 0o750);
    expect((await rejectionOf(prepareEndpointDirectory(directory, { base: root }))).code).toBe(
      'ERR_UNSAFE_ENDPOINT',
    );
  });

  it('refuses a symbolic link in place of the directory, even to a private directory', async () => {
    const real = path.join(root, 'real');
    await mkdir(real, { mode: 0o700 });
    const directory = path.join(root, 'app');
    await symlink(real, directory);
    const error = await rejectionOf(prepareEndpointDirectory(directory, { base: root }));
    expect(error.code).toBe('ERR_UNSAFE_ENDPOINT');
    expect(error.message).toContain('symbolic link');
    expect(error.message).toContain(directory);
  });

  it('refuses a symbolic link at an intermediate level', async () => {
    const real = path.join(root, 'real');
    await mkdir(real, { mode: 0o700 });
    await symlink(real, path.join(root, 'bridgekeeper-x'));
    const error = await rejectionOf(
      prepareEndpointDirectory(path.join(root, 'bridgekeeper-x', 'app'), { base: root }),
    );
    expect(error.code).toBe('ERR_UNSAFE_ENDPOINT');
    expect(error.message).toContain(path.join(root, 'bridgekeeper-x'));
  });

  it('refuses a regular file in place of the directory', async () => {
    const directory = path.join(root, 'app');
    await writeFile(directory, 'not a directory');
    expect((await rejectionOf(prepareEndpointDirectory(directory, { base: root }))).code).toBe(
      'ERR_UNSAFE_ENDPOINT',
    );
  });

  it('refuses a base that others can write to unless it is sticky', async () => {
    const shared = path.join(root, 'shared');
    await mkdir(shared);
    await chmod(shared, 0o777);
    const error = await rejectionOf(
      prepareEndpointDirectory(path.join(shared, 'app'), { base: shared }),
    );
    expect(error.code).toBe('ERR_UNSAFE_ENDPOINT');
    expect(error.message).toContain(shared);
    expect(error.message).toContain('sticky');
    await chmod(shared, 0o1777);
    await prepareEndpointDirectory(path.join(shared, 'app'), { base: shared });
    expect(await modeOf(path.join(shared, 'app'))).toBe(0o700);
  });

  it('refuses a base that does not exist', async () => {
    const missing = path.join(root, 'missing');
    const error = await rejectionOf(
      prepareEndpointDirectory(path.join(missing, 'app'), { base: missing }),
    );
    expect(error.code).toBe('ERR_UNSAFE_ENDPOINT');
    expect(error.message).toContain('does not exist');
  });

  it('refuses a relative directory', async () => {
    expect((await rejectionOf(prepareEndpointDirectory('relative/app'))).code).toBe(
      'ERR_INVALID_ARGUMENT',
    );
  });

  it.skipIf(!isRoot)(
    'refuses a directory owned by another user (uid 65534; needs root to chown)',
    async () => {
      const directory = path.join(root, 'app');
      await mkdir(directory, { mode: 0o700 });
      await chown(directory, 65534, 65534);
      const error = await rejectionOf(prepareEndpointDirectory(directory, { base: root }));
      expect(error.code).toBe('ERR_UNSAFE_ENDPOINT');
      expect(error.message).toContain('65534');
      expect(error.message).toContain(directory);
      expect((await stat(directory)).uid).toBe(65534);
    },
  );

  it.skipIf(!isRoot)(
    'refuses a base owned by another user who could swap the directory (needs root to chown)',
    async () => {
      const foreign = path.join(root, 'foreign');
      await mkdir(foreign, { mode: 0o755 });
      await chown(foreign, 65534, 65534);
      const error = await rejectionOf(
        prepareEndpointDirectory(path.join(foreign, 'app'), { base: foreign }),
      );
      expect(error.code).toBe('ERR_UNSAFE_ENDPOINT');
      expect(error.message).toContain('65534');
    },
  );
});

describe('checkSocketFile', () => {
  let root: string;

  beforeEach(async () => {
    root = await makeTempDirectory('bk-socketfile-');
  });

  afterEach(async () => {
    await removeDirectory(root);
  });

  it('returns undefined when nothing is there', async () => {
    expect(await checkSocketFile(path.join(root, 'agent.sock'))).toBeUndefined();
  });

  it('refuses a regular file and a symbolic link', async () => {
    const file = path.join(root, 'file');
    await writeFile(file, '');
    expect((await rejectionOf(checkSocketFile(file))).code).toBe('ERR_UNSAFE_ENDPOINT');
    const link = path.join(root, 'link');
    await symlink(file, link);
    const error = await rejectionOf(checkSocketFile(link));
    expect(error.code).toBe('ERR_UNSAFE_ENDPOINT');
    expect(error.message).toContain('symbolic link');
  });
});
