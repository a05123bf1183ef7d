import { beforeEach, describe, expect, it } from 'vitest';
import { PeerError } from '../../../src/errors.js';
import { Win32Error } from '../../../src/platform/win32/bindings.js';
import {
  createWin32CredentialProvider,
  deriveWin32Session,
} from '../../../src/platform/win32/credentials.js';
import { identifyPipePeer, releasePeer } from '../../../src/platform/win32/identity.js';
import type { PeerIdentity } from '../../../src/transport/transport.js';
import { FakeWin32, IMAGES, OTHER_SID } from './fake-bindings.js';

let fake: FakeWin32;

beforeEach(() => {
  fake = new FakeWin32();
  fake.spawn({ pid: 100, image: IMAGES.node }); // the server
  fake.spawn({ pid: 8, image: IMAGES.explorer });
  fake.spawn({ pid: 200, parent: 8, image: IMAGES.terminal });
  fake.spawn({ pid: 300, parent: 200, image: IMAGES.pwsh }); // tab 1
  fake.spawn({ pid: 400, parent: 200, image: IMAGES.pwsh }); // tab 2
});

function cli(pid: number, parent: number, sid?: string): PeerIdentity {
  fake.spawn({ pid, parent, image: IMAGES.cli, ...(sid ? { sid } : {}) });
  return identifyPipePeer(fake, pid);
}

async function unknownError(promise: Promise<unknown>): Promise<PeerError> {
  const error = await promise.then(
    () => {
      throw new Error('expected a rejection');
    },
    (caught: unknown) => caught,
  );
  expect(error).toBeInstanceOf(PeerError);
  expect((error as PeerError).code).toBe('ERR_PEER_UNKNOWN');
  return error as PeerError;
}

describe('the Windows session credential', () => {
  it('is shared by the tools one shell runs, with the host the person knows', async () => {
    const provider = createWin32CredentialProvider({ bindings: fake });
    const first = await provider.derive(cli(1000, 300));
    const second = await provider.derive(cli(1004, 300));
    expect(first.id).toMatch(/^proc:[0-9a-f]{32}$/);
    expect(first.id).toBe(second.id);
    expect(first.scope).toBe('process');
    expect(first.process).toEqual({
      host: 'Windows Terminal',
      program: 'contoso.exe',
      pid: 1000,
      executable: IMAGES.cli,
    });
  });

  it('differs per tab, per subshell and per user', async () => {
    const provider = createWin32CredentialProvider({ bindings: fake });
    const tab1 = (await provider.derive(cli(1000, 300))).id;
    const tab2 = (await provider.derive(cli(1004, 400))).id;
    fake.spawn({ pid: 500, parent: 300, image: IMAGES.cmd }); // a subshell in tab 1
    const subshell = (await provider.derive(cli(1008, 500))).id;
    const otherUser = (await provider.derive(cli(1012, 300, OTHER_SID))).id;
    expect(new Set([tab1, tab2, subshell, otherUser]).size).toBe(4);
  });

  it('is keyed on the parent instance: a new shell with the old pid is another session', async () => {
    const provider = createWin32CredentialProvider({ bindings: fake });
    const before = (await provider.derive(cli(1000, 300))).id;
    fake.exit(1000);
    fake.exit(300);
    fake.spawn({ pid: 300, parent: 200, image: IMAGES.pwsh });
    const after = (await provider.derive(cli(1004, 300))).id;
    expect(after).not.toBe(before);
  });

  it('narrows to the peer itself when the parent is gone', async () => {
    const peer = cli(1000, 300);
    const sibling = cli(1004, 300);
    fake.exit(300);
    const session = await deriveWin32Session(fake, peer);
    expect(session).toMatchObject({ basis: 'self', anchorPid: 1000, pid: 1000, scope: 'process' });
    expect(session.note).toMatch(/exited/);
    const other = await deriveWin32Session(fake, sibling);
    expect(other.id).not.toBe(session.id);
    // The host is then the program itself.
    const credential = await createWin32CredentialProvider({ bindings: fake }).derive(peer);
    expect(credential.process.host).toBe('contoso.exe');
  });

  it('narrows when the parent exited but is still held open by someone', async () => {
    const peer = cli(1000, 300);
    const held = fake.openProcess(300)!;
    fake.exit(300);
    expect((await deriveWin32Session(fake, peer)).basis).toBe('self');
    fake.closeHandle(held);
  });

  it('narrows when the parent pid now belongs to a younger process (pid reuse)', async () => {
    const peer = cli(1000, 300);
    fake.exit(300);
    fake.spawn({ pid: 300, image: IMAGES.pwsh }); // created after the peer
    const session = await deriveWin32Session(fake, peer);
    expect(session.basis).toBe('self');
    expect(session.note).toMatch(/reused/);
  });

  it('narrows when the parent cannot be read', async () => {
    const peer = cli(1000, 300);
    fake.before = (method, handle) => {
      if (method === 'processCreationTime' && fake.handleIsFor(handle as bigint, 300)) {
        throw new Win32Error('GetProcessTimes', 5);
      }
    };
    const session = await deriveWin32Session(fake, peer);
    expect(session).toMatchObject({ basis: 'self', note: 'invoking parent 300 could not be read' });
    fake.before = undefined;
    expect(fake.openHandles()).toBe(1);
  });

  it('takes a parent created in the same clock tick as the peer', async () => {
    fake.spawn({ pid: 600, parent: 200, image: IMAGES.cmd, created: 134_100_000_000_000_000n });
    fake.spawn({ pid: 1000, parent: 600, image: IMAGES.cli, created: 134_100_000_000_000_000n });
    const session = await deriveWin32Session(fake, identifyPipePeer(fake, 1000));
    expect(session).toMatchObject({ basis: 'invoking-parent', anchorPid: 600 });
  });

  it('narrows without a parent pid (pid 0 under Wine, the system process, or itself)', async () => {
    for (const parent of [0, 4]) {
      const peer = cli(1000 + parent, parent);
      expect((await deriveWin32Session(fake, peer)).basis).toBe('self');
    }
    fake.spawn({ pid: 1100, image: IMAGES.cli });
    fake.processes.get(1100)!.parentPid = 1100;
    expect((await deriveWin32Session(fake, identifyPipePeer(fake, 1100))).basis).toBe('self');
  });

  it('fails closed when the peer exits while the parent is read', async () => {
    const peer = cli(1000, 300);
    fake.before = (method, pid) => {
      if (method === 'openProcess' && pid === 300) fake.exit(1000);
    };
    const error = await unknownError(deriveWin32Session(fake, peer));
    expect(error.message).toMatch(/exited/);
  });

  it('fails closed for a copy of an identity whose pid went to another process', async () => {
    const peer = cli(1000, 300);
    const copy = { ...peer };
    releasePeer(fake, peer);
    fake.exit(1000);
    await unknownError(createWin32CredentialProvider({ bindings: fake }).derive(copy));
    fake.spawn({ pid: 1000, parent: 300, image: IMAGES.cli });
    await unknownError(createWin32CredentialProvider({ bindings: fake }).derive(copy));
    expect(fake.openHandles()).toBe(0);
  });

  it('fails closed when the identity lacks a pid, creation time or SID', async () => {
    const provider = createWin32CredentialProvider({ bindings: fake });
    const peer = cli(1000, 300);
    const { sid: _sid, ...withoutSid } = peer;
    await unknownError(provider.derive(withoutSid));
    await unknownError(provider.derive({ ...peer, startTime: 'yesterday' }));
    await unknownError(provider.derive({ source: 'named_pipe' }));
  });

  it('fails closed with ERR_PEER_UNKNOWN when Windows fails', async () => {
    const peer = cli(1000, 300);
    fake.failing.set('parentProcessId', new Win32Error('NtQueryInformationProcess', 5));
    const error = await unknownError(
      createWin32CredentialProvider({ bindings: fake }).derive(peer),
    );
    expect(error.cause).toBeInstanceOf(Win32Error);
  });

  it('honours an aborted signal', async () => {
    const peer = cli(1000, 300);
    await expect(
      createWin32CredentialProvider({ bindings: fake }).derive(peer, {
        signal: AbortSignal.abort(),
      }),
    ).rejects.toMatchObject({ code: 'ERR_ABORTED' });
  });

  it('leaks no handle and walks the parent chain once per session', async () => {
    const provider = createWin32CredentialProvider({ bindings: fake });
    const peers = [cli(1000, 300), cli(1004, 300)];
    const held = fake.openHandles();
    await provider.derive(peers[0]!);
    const walked = fake.count('parentProcessId');
    await provider.derive(peers[1]!);
    // Only the peer's own parent is read the second time: the host comes from the cache.
    expect(fake.count('parentProcessId') - walked).toBe(1);
    expect(fake.openHandles()).toBe(held);
    for (const peer of peers) releasePeer(fake, peer);
    expect(fake.openHandles()).toBe(0);
  });
});
