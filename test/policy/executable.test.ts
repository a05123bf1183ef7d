import { type ChildProcess, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  copyFileSync,
  mkdtempSync,
  readFileSync,
  readlinkSync,
  realpathSync,
  renameSync,
  rmSync,
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
    this.duringHash?.(pid);
    await new Promise((resolve) => setTimeout(resolve, this.hashDelayMs));
    if (this.failHash) throw this.failHash;
    return { fingerprint: file.fingerprint, sha256: sha256(file.content) };
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

  it('hashes the file the process runs, not the file now at its path', async () => {
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
    expect(machine.reads).toEqual([90]);
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
