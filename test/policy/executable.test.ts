import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  appendFileSync,
  copyFileSync,
  mkdtempSync,
  readFileSync,
  readlinkSync,
  realpathSync,
  renameSync,
  rmSync,
  statSync,
  symlinkSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { BridgekeeperError } from '../../src/errors.js';
import {
  allowExecutables,
  type ExecutableDigest,
  type ExecutableFingerprint,
  type ExecutableReader,
  MAX_WAITING_HASHES,
  systemExecutableReader,
} from '../../src/policy/executable.js';
import type { PeerIdentity } from '../../src/transport/transport.js';

const sha256 = (data: string | Buffer): string => createHash('sha256').update(data).digest('hex');

interface FakeFile {
  readonly content: string;
  readonly fingerprint: ExecutableFingerprint;
}

interface FakeProcess {
  file: FakeFile;
  path: string;
  startTime: string;
}

let nextInode = 100n;

/**
 * A fake machine: files by path, processes that map a file (which stays theirs when the path is
 * replaced, as on Linux), and a count of every whole-file read.
 */
class FakeMachine implements ExecutableReader {
  readonly files = new Map<string, FakeFile>();
  readonly processes = new Map<number, FakeProcess>();
  readonly links = new Map<string, string>();
  readonly reads: number[] = [];
  realpathCalls = 0;
  /** Runs inside sha256(), after the file was opened: lets a test change the world mid-hash. */
  duringHash: ((pid: number) => void) | undefined;
  hashDelayMs = 5;
  failHash: Error | undefined;
  /** Hashes running now, and the most that ever ran at once. */
  activeHashes = 0;
  maxActiveHashes = 0;
  /** Paths stat'd through fileFingerprint(), in order. */
  readonly stats: string[] = [];

  install(path: string, content: string): FakeFile {
    nextInode += 1n;
    const file = {
      content,
      fingerprint: {
        dev: 2049n,
        ino: nextInode,
        size: BigInt(content.length),
        mtimeNs: 1_700_000_000_000_000_000n + nextInode,
        ctimeNs: 1_700_000_000_000_000_000n + nextInode,
      },
    };
    // Like rename(2) over the old name: processes running the old file keep it, "(deleted)".
    for (const process of this.processes.values()) {
      if (process.path === path) process.path = `${path} (deleted)`;
    }
    this.files.set(path, file);
    return file;
  }

  /** Rewrites a file in place (new mtime/ctime, same inode). */
  touch(path: string): void {
    const file = this.files.get(path)!;
    const fingerprint = {
      ...file.fingerprint,
      mtimeNs: file.fingerprint.mtimeNs + 1n,
      ctimeNs: file.fingerprint.ctimeNs + 1n,
    };
    const updated = { content: file.content, fingerprint };
    this.files.set(path, updated);
    for (const process of this.processes.values()) {
      if (process.file === file) process.file = updated;
    }
  }

  run(pid: number, path: string, startTime = `${pid}00`): PeerIdentity {
    const file = this.files.get(path);
    if (!file) throw new Error(`no file ${path}`);
    this.processes.set(pid, { file, path, startTime });
    return { pid, uid: 1000, gid: 1000, startTime, executable: path, source: 'test' };
  }

  /**
   * A process in its own mount namespace, where `path` is a bind mount of another file: the
   * kernel reports `path` as its executable, but the file it runs is `content`, a file of its
   * own (another inode) that is not at `path` here.
   */
  runElsewhere(pid: number, path: string, content: string): PeerIdentity {
    nextInode += 1n;
    const file = {
      content,
      fingerprint: {
        dev: 2050n,
        ino: nextInode,
        size: BigInt(content.length),
        mtimeNs: 1_700_000_000_000_000_000n + nextInode,
        ctimeNs: 1_700_000_000_000_000_000n + nextInode,
      },
    };
    const startTime = `${pid}00`;
    this.processes.set(pid, { file, path, startTime });
    return { pid, uid: 1000, gid: 1000, startTime, executable: path, source: 'test' };
  }

  async realpath(path: string): Promise<string> {
    this.realpathCalls++;
    const target = this.links.get(path) ?? path;
    if (!this.files.has(target)) {
      throw Object.assign(new Error(`ENOENT: ${path}`), { code: 'ENOENT' });
    }
    return target;
  }

  async fingerprint(pid: number): Promise<ExecutableFingerprint | undefined> {
    return this.processes.get(pid)?.file.fingerprint;
  }

  async sha256(pid: number): Promise<ExecutableDigest | undefined> {
    const process = this.processes.get(pid);
    if (!process) return undefined;
    // Reads the file the process maps, never its path.
    const file = process.file;
    this.reads.push(pid);
    this.activeHashes++;
    this.maxActiveHashes = Math.max(this.maxActiveHashes, this.activeHashes);
    try {
      this.duringHash?.(pid);
      await new Promise((resolve) => setTimeout(resolve, this.hashDelayMs));
      if (this.failHash) throw this.failHash;
      return { fingerprint: file.fingerprint, sha256: sha256(file.content) };
    } finally {
      this.activeHashes--;
    }
  }

  async fileFingerprint(path: string): Promise<ExecutableFingerprint | undefined> {
    this.stats.push(path);
    return this.files.get(this.links.get(path) ?? path)?.fingerprint;
  }

  async executablePath(pid: number): Promise<string | undefined> {
    return this.processes.get(pid)?.path;
  }

  async startTime(pid: number): Promise<string | undefined> {
    return this.processes.get(pid)?.startTime;
  }
}

const CLI = '/usr/bin/my-cli';
const CLI_V1 = 'my-cli version 1';
const CLI_V2 = 'my-cli version 2';

function expectInvalid(build: () => unknown, message: RegExp): void {
  let caught: unknown;
  try {
    build();
  } catch (error) {
    caught = error;
  }
  expect(caught).toBeInstanceOf(BridgekeeperError);
  expect((caught as BridgekeeperError).code).toBe('ERR_INVALID_ARGUMENT');
  expect((caught as Error).message).toMatch(message);
}

describe('allowExecutables by path', () => {
  it('admits a configured executable and refuses others, listing what is allowed', async () => {
    const machine = new FakeMachine();
    machine.install(CLI, CLI_V1);
    machine.install('/usr/bin/python3.11', 'python');
    const policy = allowExecutables([CLI], { reader: machine });
    expect(policy.name).toBe(`executable:${CLI}`);
    expect(await policy.check(machine.run(10, CLI))).toEqual({ allowed: true });
    expect(await policy.check(machine.run(11, '/usr/bin/python3.11'))).toEqual({
      allowed: false,
      reason: `/usr/bin/python3.11 is not an allowed executable (allowed: ${CLI})`,
    });
    // By path alone nothing is read.
    expect(machine.reads).toEqual([]);
  });

  it('refuses a peer whose executable the OS did not report', async () => {
    const policy = allowExecutables([CLI], { reader: new FakeMachine() });
    const decision = await policy.check({ pid: 12, uid: 1000, gid: 1000, source: 'test' });
    expect(decision).toMatchObject({ allowed: false });
    expect(decision).toMatchObject({
      reason: expect.stringContaining("did not report the peer's executable"),
    });
  });

  it('refuses a binary that was replaced on disk after it started (" (deleted)")', async () => {
    const machine = new FakeMachine();
    machine.install(CLI, CLI_V1);
    const peer = machine.run(13, CLI);
    machine.install(CLI, CLI_V2);
    const policy = allowExecutables([CLI], { reader: machine });
    expect(await policy.check({ ...peer, executable: `${CLI} (deleted)` })).toEqual({
      allowed: false,
      reason: `the peer's executable ${CLI} was deleted or replaced on disk after the process started; restart it`,
    });
  });

  it('compares against the canonical path of each configured path, resolved once', async () => {
    const machine = new FakeMachine();
    machine.install('/opt/my-cli/1.2/my-cli', CLI_V1);
    machine.links.set('/usr/local/bin/my-cli', '/opt/my-cli/1.2/my-cli');
    const policy = allowExecutables(['/usr/local/bin/my-cli', '/not/installed/yet'], {
      reader: machine,
    });
    for (let i = 0; i < 5; i++) {
      expect(await policy.check(machine.run(20 + i, '/opt/my-cli/1.2/my-cli'))).toEqual({
        allowed: true,
      });
    }
    // A path that did not resolve is compared as written.
    machine.install('/not/installed/yet', 'x');
    expect(await policy.check(machine.run(30, '/not/installed/yet'))).toEqual({ allowed: true });
    expect(machine.realpathCalls).toBe(2);
  });

  it('refuses to build without absolute paths, or with a sha256 for a path not in the list', () => {
    expectInvalid(() => allowExecutables([]), /at least one/);
    expectInvalid(() => allowExecutables(['bin/my-cli']), /absolute/);
    expectInvalid(() => allowExecutables(['']), /absolute/);
    expectInvalid(
      () => allowExecutables([CLI], { sha256: { '/usr/bin/my-cl1': sha256('x') } }),
      /names no path in the list/,
    );
    expectInvalid(() => allowExecutables([CLI], { sha256: { [CLI]: 'abc' } }), /64 hex digits/);
    expectInvalid(() => allowExecutables([CLI], { maxCachedHashes: -1 }), /maxCachedHashes/);
  });
});

describe('allowExecutables with sha256', () => {
  let machine: FakeMachine;
  beforeEach(() => {
    machine = new FakeMachine();
    machine.install(CLI, CLI_V1);
  });

  it('admits the pinned binary and refuses another build at the same path', async () => {
    const policy = allowExecutables([CLI], {
      sha256: { [CLI]: sha256(CLI_V1).toUpperCase() },
      reader: machine,
    });
    expect(await policy.check(machine.run(40, CLI))).toEqual({ allowed: true });
    machine.install(CLI, CLI_V2);
    const decision = await policy.check(machine.run(41, CLI));
    expect(decision).toEqual({
      allowed: false,
      reason: `the running ${CLI} has sha256 ${sha256(CLI_V2).slice(0, 16)}…, not the configured ${sha256(CLI_V1).slice(0, 16)}…`,
    });
  });

  it('hashes each version of a binary once: a second check does not read it again', async () => {
    const policy = allowExecutables([CLI], { sha256: { [CLI]: sha256(CLI_V1) }, reader: machine });
    expect(await policy.check(machine.run(50, CLI))).toEqual({ allowed: true });
    expect(machine.reads).toEqual([50]);
    // Another process of the same file, and the first one again: no read.
    expect(await policy.check(machine.run(51, CLI))).toEqual({ allowed: true });
    expect(await policy.check(machine.run(50, CLI))).toEqual({ allowed: true });
    expect(machine.reads).toEqual([50]);
  });

  it('shares one read among concurrent checks of the same file', async () => {
    machine.hashDelayMs = 30;
    const policy = allowExecutables([CLI], { sha256: { [CLI]: sha256(CLI_V1) }, reader: machine });
    const decisions = await Promise.all(
      Array.from({ length: 8 }, (_, index) => policy.check(machine.run(60 + index, CLI))),
    );
    expect(decisions.every((decision) => decision.allowed)).toBe(true);
    expect(machine.reads).toHaveLength(1);
  });

  it('hashes again once the file changes in place (new mtime/ctime), and caches a mismatch too', async () => {
    const policy = allowExecutables([CLI], { sha256: { [CLI]: sha256(CLI_V2) }, reader: machine });
    expect(await policy.check(machine.run(70, CLI))).toMatchObject({ allowed: false });
    expect(await policy.check(machine.run(71, CLI))).toMatchObject({ allowed: false });
    // A refused binary knocking again is not hashed again.
    expect(machine.reads).toEqual([70]);
    machine.touch(CLI);
    expect(await policy.check(machine.run(72, CLI))).toMatchObject({ allowed: false });
    expect(machine.reads).toEqual([70, 72]);
  });

  it('forgets the least recently used hashes beyond maxCachedHashes', async () => {
    machine.install('/usr/bin/other', 'other');
    const policy = allowExecutables([CLI, '/usr/bin/other'], {
      sha256: { [CLI]: sha256(CLI_V1), '/usr/bin/other': sha256('other') },
      maxCachedHashes: 1,
      reader: machine,
    });
    await policy.check(machine.run(80, CLI));
    await policy.check(machine.run(81, '/usr/bin/other'));
    await policy.check(machine.run(82, '/usr/bin/other'));
    await policy.check(machine.run(83, CLI));
    expect(machine.reads).toEqual([80, 81, 83]);
  });

  it('refuses a process whose file was replaced at its path since, without hashing either file', async () => {
    // The process started from version 1; version 2 was installed at the path since. Its
    // identity was captured before the replacement, so it still names the plain path.
    const peer = machine.run(90, CLI);
    machine.install(CLI, CLI_V2);
    const pinnedToNew = allowExecutables([CLI], {
      sha256: { [CLI]: sha256(CLI_V2) },
      reader: machine,
    });
    const decision = await pinnedToNew.check(peer);
    expect(decision).toEqual({
      allowed: false,
      reason: `the peer's executable ${CLI} was replaced on disk while it was being checked`,
    });
    // The file it runs is not the one at the path: refused before any hash (the real-process
    // test below shows that the hash, when taken, is of the file the process maps).
    expect(machine.reads).toEqual([]);
  });

  it('refuses when the pid was reused while hashing (another start time)', async () => {
    const policy = allowExecutables([CLI], { sha256: { [CLI]: sha256(CLI_V1) }, reader: machine });
    const peer = machine.run(100, CLI);
    machine.duringHash = (pid) => {
      // The peer exits and a new process of the same binary gets its pid.
      machine.run(pid, CLI, 'another-start-time');
    };
    expect(await policy.check(peer)).toEqual({
      allowed: false,
      reason: 'the peer (pid 100) exited while its executable was being checked',
    });
  });

  it("refuses when the peer exec'd another program while it was being hashed", async () => {
    machine.install('/usr/bin/evil', 'evil');
    const policy = allowExecutables([CLI], { sha256: { [CLI]: sha256(CLI_V1) }, reader: machine });
    const peer = machine.run(110, CLI);
    machine.duringHash = (pid) => {
      const process = machine.processes.get(pid)!;
      process.file = machine.files.get('/usr/bin/evil')!;
      process.path = '/usr/bin/evil';
    };
    expect(await policy.check(peer)).toEqual({
      allowed: false,
      reason: 'the peer (pid 110) now runs /usr/bin/evil, not /usr/bin/my-cli',
    });
  });

  it('refuses when the file opened is not the file stat’d just before (exec between the two)', async () => {
    machine.install('/usr/bin/other', 'other');
    const policy = allowExecutables([CLI], { sha256: { [CLI]: sha256(CLI_V1) }, reader: machine });
    const peer = machine.run(115, CLI);
    const realSha256 = machine.sha256.bind(machine);
    machine.sha256 = async (pid) => {
      const digest = await realSha256(pid);
      return digest && { ...digest, fingerprint: machine.files.get('/usr/bin/other')!.fingerprint };
    };
    expect(await policy.check(peer)).toEqual({
      allowed: false,
      reason: 'the peer (pid 115): its executable changed while it was being checked',
    });
  });

  it('refuses (never throws) when hashing fails, and tries again on the next check', async () => {
    const policy = allowExecutables([CLI], { sha256: { [CLI]: sha256(CLI_V1) }, reader: machine });
    machine.failHash = new Error('the file changed while it was read (10 of 16 bytes)');
    expect(await policy.check(machine.run(120, CLI))).toEqual({
      allowed: false,
      reason:
        'could not hash the executable of pid 120: the file changed while it was read (10 of 16 bytes)',
    });
    machine.failHash = undefined;
    expect(await policy.check(machine.run(121, CLI))).toEqual({ allowed: true });
    expect(machine.reads).toEqual([120, 121]);
  });

  it('refuses a peer that is gone, or that has no pid and start time to tie the hash to', async () => {
    const policy = allowExecutables([CLI], { sha256: { [CLI]: sha256(CLI_V1) }, reader: machine });
    const peer = machine.run(130, CLI);
    machine.processes.delete(130);
    expect(await policy.check(peer)).toEqual({
      allowed: false,
      reason: 'the executable of pid 130 could not be read (the process may have exited)',
    });
    const { startTime: _startTime, ...noStartTime } = machine.run(131, CLI);
    expect(await policy.check(noStartTime)).toEqual({
      allowed: false,
      reason: "checking the executable's sha256 needs the peer's pid and start time",
    });
  });

  it('checks by path alone the paths that have no sha256 entry', async () => {
    machine.install('/usr/bin/helper', 'helper');
    const policy = allowExecutables([CLI, '/usr/bin/helper'], {
      sha256: { [CLI]: sha256(CLI_V1) },
      reader: machine,
    });
    expect(await policy.check(machine.run(140, '/usr/bin/helper'))).toEqual({ allowed: true });
    expect(machine.reads).toEqual([]);
  });

  it('applies a pin given for any spelling of the same file', async () => {
    machine.links.set('/usr/local/bin/my-cli', CLI);
    const policy = allowExecutables(['/usr/local/bin/my-cli', CLI], {
      sha256: { '/usr/local/bin/my-cli': sha256(CLI_V2) },
      reader: machine,
    });
    expect(await policy.check(machine.run(150, CLI))).toMatchObject({ allowed: false });
  });
});

describe('allowExecutables: the file at the path, not only the path', () => {
  let machine: FakeMachine;
  beforeEach(() => {
    machine = new FakeMachine();
    machine.install(CLI, CLI_V1);
  });

  it('refuses a process whose reported path is allowed but whose file is not the one at that path (another mount namespace)', async () => {
    const byPath = allowExecutables([CLI], { reader: machine });
    const impostor = machine.runElsewhere(200, CLI, 'anything at all');
    const decision = await byPath.check(impostor);
    expect(decision).toMatchObject({ allowed: false });
    expect(decision).toMatchObject({
      reason: expect.stringMatching(
        /^the peer runs a file named \/usr\/bin\/my-cli that is not the file at that path \(device:inode 2050:\d+, not 2049:\d+\)/,
      ),
    });
    // The genuine file, run here, passes the same policy.
    expect(await byPath.check(machine.run(201, CLI))).toEqual({ allowed: true });
  });

  it('refuses a byte-identical copy too, even with a pinned hash, and never hashes it', async () => {
    const pinned = allowExecutables([CLI], { sha256: { [CLI]: sha256(CLI_V1) }, reader: machine });
    const copy = machine.runElsewhere(210, CLI, CLI_V1);
    expect(await pinned.check(copy)).toMatchObject({
      allowed: false,
      reason: expect.stringContaining('that is not the file at that path'),
    });
    expect(machine.reads).toEqual([]);
  });

  it('refuses when the reported path does not exist here at all', async () => {
    machine.install('/opt/tool', 'tool');
    const policy = allowExecutables(['/opt/tool'], { reader: machine });
    const peer = machine.run(220, '/opt/tool');
    machine.files.delete('/opt/tool');
    expect(await policy.check(peer)).toEqual({
      allowed: false,
      reason:
        "/opt/tool does not exist in this app's file system (or may not be stat'd by it): the peer runs a file of that name from another mount namespace",
    });
  });

  it('stats the configured file on every check, so an upgraded file is followed', async () => {
    const policy = allowExecutables([CLI], { reader: machine });
    expect(await policy.check(machine.run(230, CLI))).toEqual({ allowed: true });
    machine.install(CLI, CLI_V2);
    expect(await policy.check(machine.run(231, CLI))).toEqual({ allowed: true });
    expect(machine.stats).toEqual([CLI, CLI]);
  });

  it('refuses a path-only peer that has no pid and start time to tie its file to', async () => {
    const policy = allowExecutables([CLI], { reader: machine });
    const { pid: _pid, ...noPid } = machine.run(240, CLI);
    expect(await policy.check(noPid)).toEqual({
      allowed: false,
      reason: "checking the peer's executable needs the peer's pid and start time",
    });
  });

  it('refuses (never throws) when the configured file cannot be stat’d', async () => {
    const policy = allowExecutables([CLI], { reader: machine });
    machine.fileFingerprint = async () => {
      throw Object.assign(new Error('EIO: i/o error'), { code: 'EIO' });
    };
    expect(await policy.check(machine.run(250, CLI))).toEqual({
      allowed: false,
      reason: 'could not check the executable of pid 250: EIO: i/o error',
    });
  });
});

describe('allowExecutables hashing queue', () => {
  it('hashes one file at a time, across policies; the others wait their turn', async () => {
    const machine = new FakeMachine();
    const tools = ['/opt/a', '/opt/b', '/opt/c', '/opt/d'];
    for (const tool of tools) machine.install(tool, `content of ${tool}`);
    const pins = Object.fromEntries(tools.map((tool) => [tool, sha256(`content of ${tool}`)]));
    const first = allowExecutables(tools, { sha256: pins, reader: machine });
    const second = allowExecutables(tools, { sha256: pins, reader: machine });
    const decisions = await Promise.all([
      ...tools.map((tool, index) => first.check(machine.run(300 + index, tool))),
      ...tools.map((tool, index) => second.check(machine.run(310 + index, tool))),
    ]);
    expect(decisions.every((decision) => decision.allowed)).toBe(true);
    expect(machine.maxActiveHashes).toBe(1);
    expect(machine.reads).toHaveLength(8);
  });

  it('lets at most MAX_WAITING_HASHES hashes wait: one more is refused, and admitted once the queue drains', async () => {
    const machine = new FakeMachine();
    machine.hashDelayMs = 2;
    const count = MAX_WAITING_HASHES + 2;
    const tools = Array.from({ length: count }, (_, index) => `/opt/tool-${index}`);
    for (const tool of tools) machine.install(tool, `content of ${tool}`);
    const pins = Object.fromEntries(tools.map((tool) => [tool, sha256(`content of ${tool}`)]));
    const policy = allowExecutables(tools, { sha256: pins, reader: machine });
    const peers = tools.map((tool, index) => machine.run(400 + index, tool));
    const decisions = await Promise.all(peers.map((peer) => policy.check(peer)));
    // One hashing, MAX_WAITING_HASHES waiting, the last refused without being read.
    expect(decisions.slice(0, -1).every((decision) => decision.allowed)).toBe(true);
    expect(decisions.at(-1)).toEqual({
      allowed: false,
      reason: `could not hash the executable of pid ${400 + count - 1}: ${MAX_WAITING_HASHES} other executables are already waiting to be hashed; try again shortly`,
    });
    expect(machine.reads).toHaveLength(count - 1);
    expect(machine.maxActiveHashes).toBe(1);
    expect(await policy.check(peers.at(-1)!)).toEqual({ allowed: true });
  });

  it('keeps the queue moving when a hash fails', async () => {
    const machine = new FakeMachine();
    machine.install('/opt/a', 'a');
    machine.install('/opt/b', 'b');
    const policy = allowExecutables(['/opt/a', '/opt/b'], {
      sha256: { '/opt/a': sha256('a'), '/opt/b': sha256('b') },
      reader: machine,
    });
    const realSha256 = machine.sha256.bind(machine);
    machine.sha256 = async (pid) => {
      if (pid === 500) throw new Error('the file changed while it was read');
      return realSha256(pid);
    };
    const [failed, passed] = await Promise.all([
      policy.check(machine.run(500, '/opt/a')),
      policy.check(machine.run(501, '/opt/b')),
    ]);
    expect(failed).toMatchObject({ allowed: false });
    expect(passed).toEqual({ allowed: true });
  });
});

/** Root, and a kernel and container that let a child unshare its mount namespace. */
const canUnshareMounts = ((): boolean => {
  if (process.platform !== 'linux' || process.getuid?.() !== 0) return false;
  try {
    execFileSync('unshare', ['-m', '--propagation', 'private', 'true'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
})();

describe.skipIf(process.platform !== 'linux')('allowExecutables on real processes (Linux)', () => {
  let dir: string;
  const children: ChildProcess[] = [];
  const sleepBinary = realpathSync('/bin/sleep');
  const trueBinary = realpathSync('/bin/true');

  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'bk-exe-'));
  });
  afterEach(() => {
    for (const child of children.splice(0)) child.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  });

  /** Starts `binary` (a copy of sleep) and waits until the kernel reports it running it. */
  async function start(binary: string): Promise<PeerIdentity> {
    const child = spawn(binary, ['30'], { stdio: 'ignore' });
    children.push(child);
    const pid = child.pid!;
    await expect.poll(() => safeReadlink(`/proc/${pid}/exe`)).toBe(binary);
    return identityOf(pid);
  }

  function safeReadlink(path: string): string | undefined {
    try {
      return readlinkSync(path);
    } catch {
      return undefined;
    }
  }

  function identityOf(pid: number): PeerIdentity {
    const stat = readFileSync(`/proc/${pid}/stat`, 'latin1');
    const startTime = stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19]!;
    return {
      pid,
      uid: process.getuid!(),
      gid: process.getgid!(),
      startTime,
      executable: readlinkSync(`/proc/${pid}/exe`),
      source: 'test',
    };
  }

  it('hashes a running binary through /proc/<pid>/exe and admits it when the hash matches', async () => {
    const tool = join(dir, 'tool');
    copyFileSync(sleepBinary, tool);
    const peer = await start(tool);
    const expected = sha256(readFileSync(sleepBinary));
    // Configured through a symlink: compared after realpath.
    symlinkSync(tool, join(dir, 'tool-link'));
    const policy = allowExecutables([join(dir, 'tool-link')], {
      sha256: { [join(dir, 'tool-link')]: expected },
    });
    expect(await policy.check(peer)).toEqual({ allowed: true });
    const wrong = allowExecutables([tool], { sha256: { [tool]: sha256('something else') } });
    expect(await wrong.check(peer)).toMatchObject({
      allowed: false,
      reason: expect.stringContaining(`has sha256 ${expected.slice(0, 16)}`),
    });
  });

  it('a replaced binary: the hash is of the old file the process runs; the policy refuses it', async () => {
    const tool = join(dir, 'tool');
    copyFileSync(sleepBinary, tool);
    const before = await start(tool);
    // An upgrade: the new file is renamed over the old path while the process runs.
    copyFileSync(trueBinary, join(dir, 'tool.new'));
    renameSync(join(dir, 'tool.new'), tool);
    const running = await systemExecutableReader.sha256(before.pid!);
    expect(running?.sha256).toBe(sha256(readFileSync(sleepBinary)));
    expect(running?.sha256).not.toBe(sha256(readFileSync(tool)));
    // Identified after the replacement: the kernel says " (deleted)".
    const after = identityOf(before.pid!);
    expect(after.executable).toBe(`${tool} (deleted)`);
    const pinnedToOld = allowExecutables([tool], {
      sha256: { [tool]: sha256(readFileSync(sleepBinary)) },
    });
    const pinnedToNew = allowExecutables([tool], {
      sha256: { [tool]: sha256(readFileSync(tool)) },
    });
    for (const policy of [pinnedToOld, pinnedToNew, allowExecutables([tool])]) {
      expect(await policy.check(after)).toMatchObject({
        allowed: false,
        reason: expect.stringContaining('was deleted or replaced on disk'),
      });
    }
    // Identified before the replacement, checked after: the re-read path shows it.
    for (const policy of [pinnedToOld, pinnedToNew]) {
      expect(await policy.check(before)).toMatchObject({
        allowed: false,
        reason: expect.stringContaining('was replaced on disk while it was being checked'),
      });
    }
  });

  it.skipIf(!canUnshareMounts)(
    'refuses a process running another file bind-mounted over the allowed path in its own mount namespace (needs root and unshare)',
    async () => {
      const tool = join(dir, 'tool');
      copyFileSync(sleepBinary, tool);
      // Impostors: sleep with bytes appended (it still runs; another hash), and an exact copy.
      const impostor = join(dir, 'impostor');
      copyFileSync(sleepBinary, impostor);
      appendFileSync(impostor, 'not the allowed tool');
      const twin = join(dir, 'twin');
      copyFileSync(sleepBinary, twin);

      /** Runs `file` as `tool`: in a new mount namespace where `file` is bind-mounted over it. */
      async function startDisguised(file: string): Promise<PeerIdentity> {
        const child = spawn(
          'unshare',
          [
            '-m',
            '--propagation',
            'private',
            'sh',
            '-c',
            'mount --bind "$0" "$1" && exec "$1" 30',
            file,
            tool,
          ],
          { stdio: 'ignore' },
        );
        children.push(child);
        const pid = child.pid!;
        await expect.poll(() => safeReadlink(`/proc/${pid}/exe`)).toBe(tool);
        return identityOf(pid);
      }

      const genuine = await start(tool);
      const disguised = await startDisguised(impostor);
      const disguisedTwin = await startDisguised(twin);
      // What the kernel reports is the allowed path; the file behind it is another.
      expect(disguised.executable).toBe(tool);
      expect(statSync(`/proc/${disguised.pid}/exe`).ino).toBe(statSync(impostor).ino);
      expect(statSync(`/proc/${genuine.pid}/exe`).ino).toBe(statSync(tool).ino);

      const byPath = allowExecutables([tool]);
      expect(await byPath.check(genuine)).toEqual({ allowed: true });
      for (const peer of [disguised, disguisedTwin]) {
        expect(await byPath.check(peer)).toMatchObject({
          allowed: false,
          reason: expect.stringContaining(`a file named ${tool} that is not the file at that path`),
        });
      }
      // A pin does not tell the exact copy apart (same bytes); the file identity does.
      const pinned = allowExecutables([tool], {
        sha256: { [tool]: sha256(readFileSync(sleepBinary)) },
      });
      expect(await pinned.check(genuine)).toEqual({ allowed: true });
      expect(await pinned.check(disguisedTwin)).toMatchObject({
        allowed: false,
        reason: expect.stringContaining('that is not the file at that path'),
      });
      // The bind mounts stayed in the children's namespaces.
      expect(sha256(readFileSync(tool))).toBe(sha256(readFileSync(sleepBinary)));
    },
  );

  it('refuses a process that has exited', async () => {
    const tool = join(dir, 'tool');
    copyFileSync(sleepBinary, tool);
    const peer = await start(tool);
    const child = children.pop()!;
    const exited = new Promise((resolve) => child.once('exit', resolve));
    child.kill('SIGKILL');
    await exited;
    const policy = allowExecutables([tool], {
      sha256: { [tool]: sha256(readFileSync(sleepBinary)) },
    });
    expect(await policy.check(peer)).toEqual({
      allowed: false,
      reason: `the executable of pid ${peer.pid} could not be read (the process may have exited)`,
    });
  });
});
