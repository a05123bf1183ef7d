/**
 * Windows hardening found in security review: publisher patterns that cannot be bypassed by
 * alternation, the desktop shell never keying a session, and connect()'s hint kept on the named
 * pipe. (A look-alike host executable named like a known terminal is an accepted risk on every
 * platform: docs/security.md.)
 */

import { describe, expect, it } from 'vitest';
import { connect } from '../../../src/client.js';
import { createError } from '../../../src/errors.js';
import type { Platform } from '../../../src/platform/platform.js';
import { createWin32CredentialProvider } from '../../../src/platform/win32/credentials.js';
import { identifyPipePeer, releasePeer } from '../../../src/platform/win32/identity.js';
import { requireAuthenticode } from '../../../src/policy/authenticode.js';
import type { PeerIdentity } from '../../../src/transport/transport.js';
import { FakeWin32, IMAGES, USER_SID } from './fake-bindings.js';

function signedPeer(executable: string): PeerIdentity {
  return {
    pid: 300,
    sid: USER_SID,
    startTime: '134000000000010000',
    executable,
    source: 'named_pipe',
  };
}

describe('requireAuthenticode publisher patterns', () => {
  // A top-level alternation passes a "starts with ^, ends with $" check, yet each branch is
  // anchored at one end only: the pattern is compiled as ^(?:…)$.
  it('a pattern with a top-level alternation anchors every branch at both ends', async () => {
    const fake = new FakeWin32();
    const evil = 'C:\\Users\\wendy\\Downloads\\evil.exe';
    const good = 'C:\\Program Files\\Contoso\\cli.exe';
    fake.signatures.set(evil, { status: 0, signer: 'Contoso Ltd Phishing Division' });
    fake.signatures.set(good, { status: 0, signer: 'Contoso Inc' });
    const policy = requireAuthenticode({ publisher: /^Contoso Ltd|Contoso Inc$/, bindings: fake });
    expect((await policy.check(signedPeer(evil))).allowed).toBe(false);
    expect((await policy.check({ ...signedPeer(good), pid: 301 })).allowed).toBe(true);
  });

  it('refuses the m flag, under which ^ and $ match at line breaks', () => {
    expect(() => requireAuthenticode({ publisher: /^Contoso Inc$/m })).toThrow(/m flag/);
  });
});

describe('Windows session credentials', () => {
  // explorer.exe is treated as "the desktop" (a boundary) by the host walk, but the credential
  // provider keys the session on it like on a shell: every program the person starts from
  // Explorer, the Start menu, Win+R or a shortcut shares one grant.
  it('two programs started from Explorer are not one session', async () => {
    const fake = new FakeWin32();
    fake.spawn({ pid: 100, image: IMAGES.node }); // the app
    fake.spawn({ pid: 50, image: IMAGES.explorer });
    fake.spawn({ pid: 300, parent: 50, image: IMAGES.cli });
    fake.spawn({ pid: 301, parent: 50, image: IMAGES.make });
    const provider = createWin32CredentialProvider({ bindings: fake });
    const a = identifyPipePeer(fake, 300);
    const b = identifyPipePeer(fake, 301);
    try {
      const first = await provider.derive(a);
      const second = await provider.derive(b);
      expect(first.id).not.toBe(second.id);
    } finally {
      releasePeer(fake, a);
      releasePeer(fake, b);
    }
  });
});

describe('connect() on the Windows endpoint', () => {
  // The Unix-socket branch appends `unavailableHint` to ERR_APP_UNAVAILABLE; the named-pipe
  // branch drops it, so the person is not told how to start the app.
  it('keeps unavailableHint on ERR_APP_UNAVAILABLE', async () => {
    const hint = 'Start it with `contoso serve`.';
    const platform: Platform = {
      id: 'win32',
      identifySocketPeer: () => {
        throw new Error('not used');
      },
      credentials: {
        derive: () => Promise.reject(new Error('not used')),
      },
      verifyPeer: async () => {},
      releasePeer: () => {},
      defaultEndpoint: {
        address: (app) => `\\\\.\\pipe\\bridgekeeper-${app}-${USER_SID}`,
        listen: () => Promise.reject(new Error('not used')),
        connect: () =>
          Promise.reject(
            createError(
              'ERR_APP_UNAVAILABLE',
              'Nothing is listening at \\\\.\\pipe\\bridgekeeper-contoso. Start the app, then try again.',
            ),
          ),
        sameUser: () => ({ name: 'same-user', check: async () => ({ allowed: true }) }),
      },
    };
    await expect(
      connect({ app: 'contoso', platform, unavailableHint: hint, timeoutMs: 1000 }),
    ).rejects.toMatchObject({
      code: 'ERR_APP_UNAVAILABLE',
      message: expect.stringContaining(hint),
    });
  });
});
