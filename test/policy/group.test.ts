import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BridgekeeperError } from '../../src/errors.js';
import { findGroup, lookupGroup, parseGroupFile, requireGroup } from '../../src/policy/group.js';
import type { PeerIdentity } from '../../src/transport/transport.js';

const hasGlibcCompiler = ((): boolean => {
  const header = (process.report?.getReport() as { header?: { glibcVersionRuntime?: string } })
    ?.header;
  if (header?.glibcVersionRuntime === undefined) return false;
  try {
    execFileSync('sh', ['-c', 'command -v gcc'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
})();

const fixturePath = (name: string): string =>
  fileURLToPath(new URL(`../fixtures/policies/${name}`, import.meta.url));
const fixture = (name: string): string => readFileSync(fixturePath(name), 'utf8');

const peer = (fields: Partial<PeerIdentity> = {}): PeerIdentity => ({
  pid: 4321,
  uid: 1000,
  gid: 1000,
  startTime: '123456',
  executable: '/usr/bin/my-cli',
  source: 'test',
  ...fields,
});

/** The Debian fixtures: /etc/group, and an /etc/passwd where no user's primary gid is 999. */
const debianFiles = (): Record<string, string> => ({
  '/etc/group': fixture('group-debian.txt'),
  '/etc/passwd': fixture('passwd-debian.txt'),
});

/**
 * A reader that counts how often it is called: one text (or error) for every path, or one per
 * path (a path not listed is ENOENT).
 */
function countingReader(files: string | Error | Record<string, string | Error>) {
  const calls: string[] = [];
  return {
    calls,
    readFile: async (path: string): Promise<string> => {
      calls.push(path);
      await new Promise((resolve) => setTimeout(resolve, 5));
      const text =
        typeof files === 'string' || files instanceof Error
          ? files
          : (files[path] ??
            Object.assign(new Error(`ENOENT: ${path}`), { code: 'ENOENT' as const }));
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

  it('skips comments, blank lines, NIS compat lines and lines glibc cannot parse; keeps duplicates in order', () => {
    const groups = parseGroupFile(fixture('group-messy.txt'));
    expect(groups.map(({ name, gid, members }) => ({ name, gid, members }))).toEqual([
      { name: 'root', gid: 0, members: [] },
      { name: 'my-cli', gid: 4242, members: [] },
      { name: 'my-cli', gid: 4343, members: [] },
      // An empty entry between commas is no member.
      { name: 'staff', gid: 50, members: ['alice', 'bob'] },
      // glibc reads these four, so they are groups; each is flagged as a quirk (below).
      { name: 'huge-gid', gid: 4294967295, members: [] },
      { name: 'three-fields', gid: 77, members: [] },
      { name: '', gid: 79, members: [] },
      { name: 'space name', gid: 80, members: [] },
      // CRLF line endings: glibc keeps the CR in the last member (and flags the line).
      { name: 'crlf', gid: 81, members: ['carol\r'] },
      { name: 'last-no-newline', gid: 82, members: [] },
    ]);
    // Line numbers are the file's, for messages.
    expect(groups[1]!.line).toBe(10);
    expect(groups.filter((group) => group.quirks).map((group) => group.name)).toEqual([
      'huge-gid',
      'three-fields',
      '',
      'crlf',
    ]);
  });

  it('finds the first of duplicate names (as getgrnam does), never a commented-out or NIS entry', () => {
    const text = fixture('group-messy.txt');
    expect(findGroup(text, 'my-cli')).toMatchObject({ gid: 4242, line: 10 });
    // "+my-cli:x:4444:" is a reference to NIS, "-wheel" an exclusion, "+@admins" a netgroup.
    expect(findGroup(text, '+my-cli')).toBeUndefined();
    expect(findGroup(text, 'wheel')).toBeUndefined();
    expect(findGroup(text, '+@admins')).toBeUndefined();
    // glibc skips these lines: no gid, a gid that is no number, a password field where the gid is.
    for (const name of ['no-gid', 'bad-gid', 'five']) {
      expect(findGroup(text, name)).toBeUndefined();
    }
    // And reads these, as getgrnam would return them.
    expect(findGroup(text, 'three-fields')).toMatchObject({ gid: 77, line: 16 });
    expect(findGroup(text, 'space name')).toMatchObject({ gid: 80, line: 19 });
    expect(findGroup(text, 'huge-gid')).toMatchObject({ gid: 4294967295 });
  });

  it('follows glibc where a strict parser would skip the first of two definitions', () => {
    // The reviewer's case: getgrnam("dup") returns 4247, the first line, which has no member field.
    expect(findGroup('dup:x:4247\ndup:x:1002:\n', 'dup')).toMatchObject({ gid: 4247, line: 1 });
    expect(findGroup('  dup:x:4201:\ndup:x:1002:\n', 'dup')).toMatchObject({ gid: 4201 });
    expect(findGroup('dup:x:+4245:\ndup:x:1002:\n', 'dup')).toMatchObject({ gid: 4245 });
    expect(findGroup('dup:x: 4246:\ndup:x:1002:\n', 'dup')).toMatchObject({ gid: 4246 });
    expect(findGroup('dup:x:4249:a:b\ndup:x:1002:\n', 'dup')).toMatchObject({
      gid: 4249,
      members: ['a:b'],
    });
    // What glibc rejects is rejected here too: the second line is the first definition.
    for (const gid of ['4248 ', '-1', '4294967296', '0x10', '', '12a']) {
      expect(findGroup(`dup:x:${gid}:\ndup:x:1002:\n`, 'dup')).toMatchObject({ gid: 1002 });
    }
    // glibc stops at a NUL byte; the rest of that line is not read.
    expect(findGroup('dup:x:4260:alice\0,bob\n', 'dup')).toMatchObject({ members: ['alice'] });
    expect(findGroup('dup\0:x:4261:\ndup:x:1002:\n', 'dup')).toMatchObject({ gid: 1002 });
  });

  it('handles an empty file and a file of nothing but comments', () => {
    expect(parseGroupFile('')).toEqual([]);
    expect(parseGroupFile('# nothing here\n\n#root:x:0:\n')).toEqual([]);
  });

  describe.skipIf(!hasGlibcCompiler)('agrees with glibc fgetgrent(3) (needs gcc and glibc)', () => {
    let dir: string;
    let probe: string;
    beforeAll(() => {
      dir = mkdtempSync(join(tmpdir(), 'bk-fgetgrent-'));
      probe = join(dir, 'fgetgrent');
      execFileSync('gcc', ['-o', probe, fixturePath('fgetgrent.c')]);
    });
    afterAll(() => rmSync(dir, { recursive: true, force: true }));

    /** What fgetgrent reads from `path`, without the NIS compat entries getgrnam never returns. */
    const glibcGroups = (path: string) =>
      execFileSync(probe, [path], { encoding: 'utf8' })
        .split('\n')
        .filter((line) => line !== '')
        .map((line) => JSON.parse(line) as { name: string; gid: number; members: string[] })
        .filter((group) => !group.name.startsWith('+') && !group.name.startsWith('-'));

    const ours = (text: string) =>
      parseGroupFile(text).map(({ name, gid, members }) => ({ name, gid, members }));

    it.each([['group-glibc.txt'], ['group-messy.txt'], ['group-debian.txt']])(
      'reads %s as glibc does',
      (name) => {
        const expected = glibcGroups(fixturePath(name));
        expect(expected.length).toBeGreaterThan(0);
        expect(ours(fixture(name))).toEqual(expected);
      },
    );

    it('reads NUL bytes, an indented last line without a newline and a CRLF file as glibc does', () => {
      const text =
        'a\0b:x:1:\nnul:x:2:alice\0bob\nc:x:3:\0\n  d\0:x:4:\r\ncrlf:x:5:m\r\n  last:x:6:';
      const file = join(dir, 'group');
      writeFileSync(file, text, 'latin1');
      expect(ours(text)).toEqual(glibcGroups(file));
      expect(ours(text).at(-1)).toEqual({ name: 'last', gid: 6, members: ['6:'] });
    });
  });
});

describe('lookupGroup', () => {
  it('finds a group defined once on a plain line', () => {
    expect(lookupGroup(fixture('group-debian.txt'), 'onepassword-cli')).toEqual({
      found: true,
      entry: { name: 'onepassword-cli', gid: 999, members: [], line: 12 },
    });
    // A NIS wildcard after the definition changes nothing, even in compat mode.
    expect(lookupGroup('my-cli:x:4242:\n+\n', 'my-cli')).toMatchObject({ found: true });
  });

  it('refuses a name that also has malformed or compat lines, counting every line that names it', () => {
    const text = fixture('group-messy.txt');
    expect(lookupGroup(text, 'my-cli')).toEqual({
      found: false,
      reason:
        '/etc/group line 6 (+my-cli) refers to group "my-cli" in NIS (nsswitch "compat" mode), so its gid may come from elsewhere; remove that line and restart the app',
    });
    expect(lookupGroup('a:x:1:\na:x:oops:\n', 'a', '/fixture/group')).toEqual({
      found: false,
      reason:
        'group "a" is defined 2 times in /fixture/group (lines 1, 2), so it is unclear which gid is meant; the group must be defined exactly once: remove the other lines and restart the app',
    });
    expect(lookupGroup(text, 'huge-gid')).toMatchObject({
      found: false,
      reason: expect.stringContaining('gid 4294967295 is (gid_t)-1, which no process can have'),
    });
    expect(lookupGroup(text, 'no-gid')).toMatchObject({
      found: false,
      reason: expect.stringContaining('line 13, which defines group "no-gid", is malformed'),
    });
  });
});

describe('requireGroup', () => {
  it('admits a peer whose egid is the named group, and refuses others with a reason that says why', async () => {
    const reader = countingReader(debianFiles());
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

  it('reads /etc/group and /etc/passwd lazily and once, even for concurrent first checks', async () => {
    const reader = countingReader({
      '/fixture/group': fixture('group-debian.txt'),
      '/fixture/passwd': fixture('passwd-debian.txt'),
    });
    const policy = requireGroup('onepassword-cli', {
      ...reader,
      groupFile: '/fixture/group',
      passwdFile: '/fixture/passwd',
    });
    expect(reader.calls).toEqual([]);
    const decisions = await Promise.all(
      Array.from({ length: 10 }, (_, index) => policy.check(peer({ gid: 995 + index }))),
    );
    expect(decisions.filter((decision) => decision.allowed)).toHaveLength(1);
    await policy.check(peer({ gid: 999 }));
    expect(reader.calls).toEqual(['/fixture/group', '/fixture/passwd']);
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
    const policy = requireGroup(4242, countingReader(debianFiles()));
    const { gid: _gid, ...withoutGid } = peer();
    expect(await policy.check(withoutGid)).toEqual({
      allowed: false,
      reason: 'the OS did not report the peer gid',
    });
  });

  it('takes a numeric gid without reading /etc/group (only /etc/passwd, once)', async () => {
    const reader = countingReader({
      '/etc/group': new Error('must not be read'),
      '/etc/passwd': fixture('passwd-debian.txt'),
    });
    const policy = requireGroup(4242, reader);
    expect(policy.name).toBe('group:4242');
    expect(await policy.check(peer({ gid: 4242 }))).toEqual({ allowed: true });
    expect(await policy.check(peer({ gid: 4243 }))).toEqual({
      allowed: false,
      reason: 'peer gid 4243 is not gid 4242',
    });
    expect(reader.calls).toEqual(['/etc/passwd']);
  });

  it('treats a numeric-looking string as a name, not a gid', async () => {
    const policy = requireGroup('999', countingReader(debianFiles()));
    expect(await policy.check(peer({ gid: 999 }))).toMatchObject({ allowed: false });
  });

  it('reads the real /etc/group and /etc/passwd by default', async () => {
    // root's primary gid is 0 on every Linux: the group of the same name is not dedicated.
    const policy = requireGroup('root');
    expect(await policy.check(peer({ gid: 0 }))).toMatchObject({
      allowed: false,
      reason: expect.stringMatching(
        /^gid 0 of group "root" is the primary group of user "root" \(line \d+\)(, .*)? in \/etc\/passwd/,
      ),
    });
    // With a passwd file where no user has gid 0, the real /etc/group's root (gid 0) is admitted.
    const noRootUser = requireGroup('root', { passwdFile: fixturePath('passwd-no-gid-0.txt') });
    expect(await noRootUser.check(peer({ gid: 0 }))).toEqual({ allowed: true });
  });

  it('refuses everyone when the group is defined more than once (glibc would use the first line, a strict parser the second)', async () => {
    const reader = countingReader({
      '/etc/group': 'root:x:0:\ndup:x:4247\ndup:x:1002:\n',
      '/etc/passwd': fixture('passwd-debian.txt'),
    });
    const policy = requireGroup('dup', reader);
    for (const gid of [4247, 1002, 1000]) {
      expect(await policy.check(peer({ gid }))).toEqual({
        allowed: false,
        reason:
          'group "dup" is defined 2 times in /etc/group (lines 2, 3), so it is unclear which gid is meant; the group must be defined exactly once: remove the other lines and restart the app',
      });
    }
    // A refusal of the file's content is an answer: not read again.
    expect(reader.calls).toEqual(['/etc/group']);
  });

  it.each([
    ['dup:x:4247', 'no member field'],
    ['  dup:x:4247:', 'white space before the name'],
    ['dup:x:+4247:', 'the gid is written "+4247"'],
    ['dup:x:4247:alice:bob', 'more than four fields'],
    ['dup:x:4247:\r', 'a carriage return'],
    ['dup:x:4247x:', 'is malformed (the gid field "4247x" is not a number)'],
    ['dup:x::', 'is malformed'],
    ['+dup:x:4247:\ndup:x:4247:', '(+dup) refers to group "dup" in NIS'],
    ['+\ndup:x:4247:', '(+) includes NIS groups before line 2 defines "dup"'],
  ])('refuses everyone when the line of the group is ambiguous: %j', async (text, reason) => {
    const policy = requireGroup('dup', {
      readFile: async (path) => (path === '/etc/group' ? `${text}\n` : ''),
    });
    for (const gid of [4247, 0]) {
      const decision = await policy.check(peer({ gid }));
      expect(decision).toMatchObject({ allowed: false, reason: expect.stringContaining(reason) });
    }
  });

  it('refuses everyone when a user has the group as primary group, naming the user', async () => {
    const passwd = `${fixture('passwd-debian.txt')}mallory:x:1001:999::/home/mallory:/bin/sh\n`;
    const byName = requireGroup(
      'onepassword-cli',
      countingReader({ '/etc/group': fixture('group-debian.txt'), '/etc/passwd': passwd }),
    );
    const expected = {
      allowed: false,
      reason:
        'gid 999 of group "onepassword-cli" is the primary group of user "mallory" (line 8) in /etc/passwd: every process of that user runs with it, so it is not a group dedicated to the CLI; give the user another primary group (or the CLI a dedicated group) and restart the app',
    };
    // Every peer, the CLI's own included: which of its processes are "the CLI" cannot be told.
    expect(await byName.check(peer({ gid: 999 }))).toEqual(expected);
    expect(await byName.check(peer({ uid: 1001, gid: 999 }))).toEqual(expected);
    // A numeric gid is checked the same way: requireGroup(1000) would admit all of alice.
    const byGid = requireGroup(1000, countingReader(debianFiles()));
    expect(await byGid.check(peer({ gid: 1000 }))).toEqual({
      allowed: false,
      reason:
        'gid 1000 is the primary group of user "alice" (line 7) in /etc/passwd: every process of that user runs with it, so it is not a group dedicated to the CLI; give the user another primary group (or the CLI a dedicated group) and restart the app',
    });
  });

  it('finds a primary-gid user however the gid is written, and names several', async () => {
    const passwd = [
      'a:x:1:+4242:::',
      '  b:x:2: 4242 :::',
      'c:x:3:04242',
      'd:x:4:4242\r',
      '+e:::4242:::',
      '#f:x:5:4242:::',
      'g:x:6:42420:::',
      'h:x:7:4242x:::',
    ].join('\n');
    const policy = requireGroup(4242, { readFile: async () => passwd });
    expect(await policy.check(peer({ gid: 4242 }))).toEqual({
      allowed: false,
      reason:
        'gid 4242 is the primary group of user "a" (line 1), "b" (line 2), "c" (line 3) and 2 more in /etc/passwd: every process of those users runs with it, so it is not a group dedicated to the CLI; give them another primary group (or the CLI a dedicated group) and restart the app',
    });
  });

  it('refuses when /etc/passwd cannot be read, and reads it again on the next check', async () => {
    const reader = countingReader({
      '/etc/group': fixture('group-debian.txt'),
      '/etc/passwd': Object.assign(new Error('EACCES: permission denied'), { code: 'EACCES' }),
    });
    const policy = requireGroup('onepassword-cli', reader);
    expect(await policy.check(peer({ gid: 999 }))).toEqual({
      allowed: false,
      reason:
        'could not read /etc/passwd to check that no user has group "onepassword-cli" as primary group (EACCES)',
    });
    await policy.check(peer({ gid: 999 }));
    expect(reader.calls).toEqual(['/etc/group', '/etc/passwd', '/etc/group', '/etc/passwd']);
  });

  it('reads again after a reader that throws synchronously (the failure is not cached)', async () => {
    let calls = 0;
    const files = debianFiles();
    const policy = requireGroup('onepassword-cli', {
      readFile: (path) => {
        calls++;
        if (calls === 1)
          throw Object.assign(new Error('EMFILE: too many open files'), { code: 'EMFILE' });
        return Promise.resolve(files[path]!);
      },
    });
    expect(await policy.check(peer({ gid: 999 }))).toEqual({
      allowed: false,
      reason: 'could not read /etc/group to look up group "onepassword-cli" (EMFILE)',
    });
    expect(await policy.check(peer({ gid: 999 }))).toEqual({ allowed: true });
    expect(calls).toBe(3);
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
