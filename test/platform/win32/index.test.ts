import { describe, expect, it } from 'vitest';
import { createWin32Platform } from '../../../src/platform/win32/index.js';
import { FakeWin32, IMAGES } from './fake-bindings.js';

describe('createWin32Platform', () => {
  it('wires identity, credentials, verification and release to the bindings', async () => {
    const fake = new FakeWin32();
    fake.spawn({ pid: 100, image: IMAGES.node });
    fake.spawn({ pid: 200, image: IMAGES.terminal });
    fake.spawn({ pid: 300, parent: 200, image: IMAGES.pwsh });
    fake.spawn({ pid: 400, parent: 300, image: IMAGES.cli });
    fake.addPipe(5, { client: 400, server: 100 });
    const platform = await createWin32Platform({ bindings: fake });
    expect(platform.id).toBe('win32');
    expect(Object.isFrozen(platform)).toBe(true);

    const peer = platform.identifySocketPeer(5);
    expect(peer).toMatchObject({ pid: 400, source: 'named_pipe', executable: IMAGES.cli });
    const credential = await platform.credentials.derive(peer);
    expect(credential).toMatchObject({ scope: 'process', process: { host: 'Windows Terminal' } });
    await expect(platform.verifyPeer(peer)).resolves.toBeUndefined();
    fake.exit(400);
    await expect(platform.verifyPeer(peer)).rejects.toMatchObject({ code: 'ERR_PEER_CHANGED' });
    platform.releasePeer(peer);
    platform.releasePeer(peer);
    expect(fake.openHandles()).toBe(0);
  });

  it.skipIf(process.platform === 'win32')(
    'rejects with ERR_UNSUPPORTED_PLATFORM when the native bindings cannot load (not Windows)',
    async () => {
      await expect(createWin32Platform()).rejects.toMatchObject({
        code: 'ERR_UNSUPPORTED_PLATFORM',
      });
    },
  );
});
