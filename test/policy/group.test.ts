import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { BridgekeeperError } from '../../src/errors.js';
import { findGroup, parseGroupFile, requireGroup } from '../../src/policy/group.js';
import type { PeerIdentity } from '../../src/transport/transport.js';

const fixture = (name: string): string =>
  readFileSync(new URL(`../fixtures/policies/${name}`, import.meta.url), 'utf8');

const peer = (fields: Partial<PeerIdentity> = {}): PeerIdentity => ({
  pid: 4321,
  uid: 1000,
  gid: 1000,
  startTime: '123456',
  executable: '/usr/bin/my-cli',
  source: 'test',
  ...fields,
});

/** A group file reader that counts how often it is called. */
function countingReader(text: string | Error) {
  const calls: string[] = [];
  return {
    calls,
    readFile: async (path: string): Promise<string> => {
      calls.push(path);
      await new Promise((resolve) => setTimeout(resolve, 5));
      if (text instanceof Error) throw text;
      return text;
    },
  };
}

describe('parseGroupFile', () => {
  it('reads a plain Debian /etc/group, members included', () => {
    const groups = parseGroupFile(fixture('group-debian.txt'));
    expect(groups).toHaveLength(12);
    expect(groups[0]).toEqual({ name: 'root', gid: 0, members: [], line: 1 });
    expect(groups.find((group) => group.name === 'adm')).toEqual({
      name: 'adm',
      gid: 4,
      members: ['syslog', 'alice'],
      line: 5,
    });
    expect(findGroup(fixture('group-debian.txt'), 'onepassword-cli')?.gid).toBe(999);
  });

  it('skips comments, blank lines, NIS compat lines and malformed lines; keeps duplicates in order', () => {
    const groups = parseGroupFile(fixture('group-messy.txt'));
    expect(groups.map(({ name, gid, members }) => ({ name, gid, members }))).toEqual([
      { name: 'root', gid: 0, members: [] },
      { name: 'my-cli', gid: 4242, members: [] },
      { name: 'my-cli', gid: 4343, members: [] },
      // An empty entry between commas is no member.
      { name: 'staff', gid: 50, members: ['alice', 'bob'] },
      // CRLF line endings: the CR is not part of the last member.
      { name: 'crlf', gid: 81, members: ['carol'] },
      { name: 'last-no-newline', gid: 82, members: [] },
    ]);
    // Line numbers are the file's, for messages.
    expect(groups[1]!.line).toBe(10);
  });

  it('finds the first of duplicate names (as getgrnam does), never a commented-out or NIS entry', () => {
    const text = fixture('group-messy.txt');
    expect(findGroup(text, 'my-cli')).toMatchObject({ gid: 4242, line: 10 });
    // "+my-cli:x:4444:" is a reference to NIS, "-wheel" an exclusion, "+@admins" a netgroup.
    expect(findGroup(text, '+my-cli')).toBeUndefined();
    expect(findGroup(text, 'wheel')).toBeUndefined();
    expect(findGroup(text, '+@admins')).toBeUndefined();
    for (const name of ['no-gid', 'bad-gid', 'huge-gid', 'three-fields', 'five', 'space name']) {
      expect(findGroup(text, name)).toBeUndefined();
    }
  });

  it('handles an empty file and a file of nothing but comments', () => {
    expect(parseGroupFile('')).toEqual([]);
    expect(parseGroupFile('# nothing here\n\n#root:x:0:\n')).toEqual([]);
  });
});

describe('requireGroup', () => {
  it('admits a peer whose egid is the named group, and refuses others with a reason that says why', async () => {
    const reader = countingReader(fixture('group-debian.txt'));
    const policy = requireGroup('onepassword-cli', reader);
    expect(policy.name).toBe('group:onepassword-cli');
    expect(await policy.check(peer({ gid: 999 }))).toEqual({ allowed: true });
    expect(await policy.check(peer({ gid: 1000 }))).toEqual({
      allowed: false,
      reason: 'peer gid 1000 is not the gid 999 of group "onepassword-cli"',
    });
    // Only the effective gid counts: being uid 0 changes nothing.
    expect(await policy.check(peer({ uid: 0, gid: 0 }))).toMatchObject({ allowed: false });
  });

  it('reads /etc/group lazily and once, even for concurrent first checks', async () => {
    const reader = countingReader(fixture('group-debian.txt'));
    const policy = requireGroup('onepassword-cli', { ...reader, groupFile: '/fixture/group' });
    expect(reader.calls).toEqual([]);
    const decisions = await Promise.all(
      Array.from({ length: 10 }, (_, index) => policy.check(peer({ gid: 995 + index }))),
    );
    expect(decisions.filter((decision) => decision.allowed)).toHaveLength(1);
    await policy.check(peer({ gid: 999 }));
    expect(reader.calls).toEqual(['/fixture/group']);
  });

  it('fails closed for a group that does not exist: every peer refused, naming the group, no throw', async () => {
    const reader = countingReader(fixture('group-debian.txt'));
    const policy = requireGroup('no-such-group', reader);
    for (const gid of [0, 999, 1000, 65534]) {
      const decision = await policy.check(peer({ gid }));
      expect(decision.allowed).toBe(false);
      expect(decision).toMatchObject({ reason: expect.stringContaining('"no-such-group"') });
      expect(decision).toMatchObject({ reason: expect.stringContaining('does not exist') });
    }
    // "Not found" is an answer: it is not looked up again.
    expect(reader.calls).toHaveLength(1);
  });

  it('refuses when the group file cannot be read, and reads it again on the next check', async () => {
    const error = Object.assign(new Error('EACCES: permission denied'), { code: 'EACCES' });
    const reader = countingReader(error);
    const policy = requireGroup('onepassword-cli', reader);
    const decision = await policy.check(peer({ gid: 999 }));
    expect(decision).toEqual({
      allowed: false,
      reason: 'could not read /etc/group to look up group "onepassword-cli" (EACCES)',
    });
    await policy.check(peer({ gid: 999 }));
    expect(reader.calls).toHaveLength(2);
  });

  it('refuses a peer whose gid the OS did not report', async () => {
    const policy = requireGroup(4242);
    const { gid: _gid, ...withoutGid } = peer();
    expect(await policy.check(withoutGid)).toEqual({
      allowed: false,
      reason: 'the OS did not report the peer gid',
    });
  });

  it('takes a numeric gid without reading any file', async () => {
    const reader = countingReader(new Error('must not be read'));
    const policy = requireGroup(4242, reader);
    expect(policy.name).toBe('group:4242');
    expect(await policy.check(peer({ gid: 4242 }))).toEqual({ allowed: true });
    expect(await policy.check(peer({ gid: 4243 }))).toEqual({
      allowed: false,
      reason: 'peer gid 4243 is not gid 4242',
    });
    expect(reader.calls).toEqual([]);
  });

  it('treats a numeric-looking string as a name, not a gid', async () => {
    const policy = requireGroup('999', countingReader(fixture('group-debian.txt')));
    expect(await policy.check(peer({ gid: 999 }))).toMatchObject({ allowed: false });
  });

  it('reads the real /etc/group by default', async () => {
    const policy = requireGroup('root');
    expect(await policy.check(peer({ gid: 0 }))).toEqual({ allowed: true });
  });

  it.each([[''], ['a:b'], ['a\nb'], [-1], [1.5], [2 ** 32 - 1], [Number.NaN]])(
    'refuses to build from %j (ERR_INVALID_ARGUMENT)',
    (group) => {
      let caught: unknown;
      try {
        requireGroup(group);
      } catch (error) {
        caught = error;
      }
      expect(caught).toBeInstanceOf(BridgekeeperError);
      expect((caught as BridgekeeperError).code).toBe('ERR_INVALID_ARGUMENT');
    },
  );
});
