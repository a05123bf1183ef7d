/**
 * A real polkitd for the tests: a system bus at the default path and polkitd (started here as
 * root when none runs, following BRIEF §3), test actions and rules, a non-root test user with a
 * password, non-root subject processes, and `pkttyagent` agents in real ptys that type the
 * password like a person would.
 *
 * Only what this module started is stopped, and only the files it created are removed: a bus
 * or polkitd that already ran is reused and left alone. Test files that use it run one after
 * another (a lock directory), because the system bus and polkitd exist once per machine.
 *
 * @module
 */

import { type ChildProcess, execFileSync, spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import {
  chmodSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  rmdirSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { polkitActionFile, polkitActionFilePath } from '../../src/prompt/polkit/action-file.js';
import {
  dbusPolkitBinding,
  type PolkitAuthority,
  PolkitBusError,
} from '../../src/prompt/polkit/dbus-binding.js';

export const POLKITD = '/usr/lib/polkit-1/polkitd';
export const SYSTEM_BUS_SOCKET = '/run/dbus/system_bus_socket';
export const SYSTEM_BUS_ADDRESS = `unix:path=${SYSTEM_BUS_SOCKET}`;
export const TEST_USER = 'bk-polkit-test';

/** The test actions: what the test rules answer for the test user's processes. */
export const TEST_ACTIONS = {
  /** A rule says YES. */
  yes: 'org.bridgekeeper.test.yes',
  /** A rule says NO. */
  no: 'org.bridgekeeper.test.no',
  /** No rule: the action's default, auth_self, asks an agent. */
  challenge: 'org.bridgekeeper.test.challenge',
  /** A rule records the subject and details, and says YES only when the account detail came. */
  record: 'org.bridgekeeper.test.record',
  /** Like `record`, says YES either way, and names nobody the app runs as as owner (details are refused). */
  recordNoOwner: 'org.bridgekeeper.test.record-no-owner',
} as const;

const RULES_FILE = '/etc/polkit-1/rules.d/10-bridgekeeper-test.rules';
const STATE_DIR = '/run/bridgekeeper-polkit-test';
const RECORD_FILE = `${STATE_DIR}/record.log`;
const LOCK_DIR = '/run/bridgekeeper-polkit-test.lock';

/** What the tests need, in one phrase for test titles. */
export const POLKIT_REQUIREMENTS =
  'needs Linux, root, polkitd, dbus-daemon, pkttyagent, script, setpriv and useradd';

function has(command: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${command}`], { stdio: 'ignore' }).status === 0;
}

/** Why the real-polkitd tests cannot run here, or undefined when they can. */
export function polkitSkipReason(): string | undefined {
  if (process.platform !== 'linux') return 'not Linux';
  if (process.getuid?.() !== 0) {
    return 'not root (starting polkitd, installing a test action and rules and adding a test user need root)';
  }
  if (!existsSync(POLKITD)) return `polkitd is not installed (${POLKITD}; apt install polkitd)`;
  const missing = [
    'dbus-daemon',
    'pkttyagent',
    'script',
    'setpriv',
    'stty',
    'useradd',
    'userdel',
    'chpasswd',
  ].filter((command) => !has(command));
  if (missing.length > 0) return `missing ${missing.join(', ')}`;
  return undefined;
}

/** A non-root process to be the subject of checks. */
export interface TestSubject {
  readonly pid: number;
  /** Clock ticks since boot, as the kernel reports it (what the server puts in the request). */
  readonly startTime: string;
  readonly uid: number;
  kill(): void;
}

/** A `pkttyagent` for one subject, in a pty, running as the test user. */
export interface TestAgent {
  /** Everything it printed so far. */
  readonly output: string;
  /** Resolves once it asks for the password (the dialog is "on screen"). */
  promptShown(): Promise<void>;
  /** Resolves once it has printed `text`. */
  printed(text: string, timeoutMs?: number): Promise<void>;
  stop(): void;
}

/** One line the `record` rule wrote: what polkit saw. */
export interface RecordedCheck {
  readonly action: string;
  readonly pid: number;
  readonly user: string;
  readonly account: string;
  readonly process: string;
}

/** The running test environment. */
export interface PolkitEnvironment {
  readonly user: { readonly name: string; readonly uid: number; readonly gid: number };
  readonly password: string;
  /** True when this setup started the bus (false: one ran already, and is left alone). */
  readonly startedBus: boolean;
  /** True when this setup started polkitd, so a test may kill and restart it. */
  readonly startedPolkitd: boolean;
  spawnSubject(): Promise<TestSubject>;
  /** Starts an agent for `subject`; it types `password` at each prompt (never, when undefined). */
  startAgent(subject: TestSubject, password?: string): Promise<TestAgent>;
  /** What the `record` rule saw, oldest first. */
  records(): RecordedCheck[];
  /** Kills the polkitd this setup started (SIGKILL), and waits for it to be gone. */
  killPolkitd(): Promise<void>;
  /** Starts polkitd again after {@link PolkitEnvironment.killPolkitd}. */
  startPolkitd(): Promise<void>;
  teardown(): Promise<void>;
}

interface Owned {
  bus?: ChildProcess;
  polkitd?: ChildProcess;
  files: string[];
  dirs: string[];
  user?: string;
  lock: boolean;
  children: Set<ChildProcess>;
  /** pkttyagent processes (grandchildren, behind script), with the start time that identifies them. */
  agents: Map<number, string | undefined>;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

async function until<T>(
  what: string,
  probe: () => T | undefined | Promise<T | undefined>,
  timeoutMs = 10_000,
  intervalMs = 25,
): Promise<T> {
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (performance.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms: ${what}`);
    await sleep(intervalMs);
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Serializes test files that use the one system bus and polkitd of this machine. */
async function acquireLock(): Promise<void> {
  await until(
    'the polkit test lock (another test file uses polkitd)',
    () => {
      try {
        mkdirSync(LOCK_DIR, { mode: 0o700 });
        writeFileSync(join(LOCK_DIR, 'pid'), String(process.pid));
        return true;
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
        let holder = Number.NaN;
        try {
          holder = Number(readFileSync(join(LOCK_DIR, 'pid'), 'utf8'));
        } catch {
          // Being created right now; look again.
          return undefined;
        }
        if (Number.isInteger(holder) && !alive(holder)) {
          // Its holder died without releasing it.
          rmSync(LOCK_DIR, { recursive: true, force: true });
        }
        return undefined;
      }
    },
    180_000,
    50,
  );
}

function releaseLock(): void {
  try {
    if (readFileSync(join(LOCK_DIR, 'pid'), 'utf8') === String(process.pid)) {
      rmSync(LOCK_DIR, { recursive: true, force: true });
    }
  } catch {
    // Not ours, or gone.
  }
}

/** Runs a user-database command, retrying while another test holds /etc/passwd's lock. */
async function userdb(command: string, args: string[], input?: string): Promise<void> {
  for (let attempt = 0; ; attempt++) {
    const result = spawnSync(command, args, { input, encoding: 'utf8' });
    if (result.status === 0) return;
    const message = `${command} ${args.join(' ')}: ${result.stderr || result.error?.message || `exit ${result.status}`}`;
    if (attempt >= 50 || !/lock|try again|busy/i.test(message)) throw new Error(message);
    await sleep(100);
  }
}

function lookupUser(name: string): { uid: number; gid: number } | undefined {
  const result = spawnSync('getent', ['passwd', name], { encoding: 'utf8' });
  if (result.status !== 0) return undefined;
  const fields = result.stdout.trim().split(':');
  return { uid: Number(fields[2]), gid: Number(fields[3]) };
}

function procStat(pid: number): string[] | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  } catch {
    return undefined;
  }
}

/** Field 22 of /proc/<pid>/stat: the start time in clock ticks since boot. */
export function startTimeOf(pid: number): string | undefined {
  return procStat(pid)?.[19];
}

function exeOf(pid: number): string | undefined {
  try {
    return basename(readlinkSync(`/proc/${pid}/exe`));
  } catch {
    return undefined;
  }
}

function uidOf(pid: number): number | undefined {
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    const line = /^Uid:\s+(\d+)/m.exec(status);
    return line ? Number(line[1]) : undefined;
  } catch {
    return undefined;
  }
}

function childrenOf(pid: number): number[] {
  const found: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    if (procStat(Number(entry))?.[1] === String(pid)) found.push(Number(entry));
  }
  return found;
}

/** A copy of the standard system bus config for a bus run by hand as root (BRIEF §3). */
function systemBusConfig(): string {
  const standard = readFileSync('/usr/share/dbus-1/system.conf', 'utf8');
  return (
    standard
      .replace(/^\s*<user>[^<]*<\/user>\s*$/m, '')
      .replace(/^\s*<fork\/>\s*$/m, '')
      .replace(/^\s*<pidfile>[^<]*<\/pidfile>\s*$/m, '')
      .replace(/^\s*<syslog\/>\s*$/m, '')
      .replace(/^\s*<servicehelper>[^<]*<\/servicehelper>\s*$/m, '')
      .replace(/^\s*<standard_system_servicedirs\/>\s*$/m, '')
      // Relative to the original file's directory, which the copy does not live in.
      .replace(
        '<includedir>system.d</includedir>',
        '<includedir>/usr/share/dbus-1/system.d</includedir>',
      )
  );
}

function rules(user: string): string {
  const json = (value: string) => JSON.stringify(value);
  return `// Installed by Bridgekeeper's test setup (test/support/polkit.ts); removed when its tests end.
polkit.addRule(function (action, subject) {
  if (action.id.indexOf("org.bridgekeeper.test.") !== 0) return polkit.Result.NOT_HANDLED;
  if (subject.user !== ${json(user)}) return polkit.Result.NOT_HANDLED;
  if (action.id === ${json(TEST_ACTIONS.yes)}) return polkit.Result.YES;
  if (action.id === ${json(TEST_ACTIONS.no)}) return polkit.Result.NO;
  if (action.id === ${json(TEST_ACTIONS.record)} || action.id === ${json(TEST_ACTIONS.recordNoOwner)}) {
    var line = JSON.stringify({
      action: action.id,
      pid: subject.pid,
      user: subject.user,
      account: action.lookup("account") || "",
      process: action.lookup("process") || ""
    });
    polkit.spawn(["/bin/sh", "-c", 'printf "%s\\\\n" "$1" >> ${RECORD_FILE}', "sh", line]);
    if (action.id === ${json(TEST_ACTIONS.recordNoOwner)}) return polkit.Result.YES;
    return action.lookup("account") ? polkit.Result.YES : polkit.Result.NO;
  }
  return polkit.Result.NOT_HANDLED;
});
`;
}

async function tryConnect(timeoutMs: number): Promise<PolkitAuthority | undefined> {
  try {
    return await dbusPolkitBinding.connect({
      address: SYSTEM_BUS_ADDRESS,
      signal: AbortSignal.timeout(timeoutMs),
    });
  } catch {
    return undefined;
  }
}

/** Whether polkitd answers and lists every test action. */
async function polkitdReady(): Promise<'ready' | 'no-polkitd' | 'no-actions' | 'no-bus'> {
  const authority = await tryConnect(1_000);
  if (authority === undefined) return 'no-bus';
  try {
    const actions = await authority.enumerateActions('');
    const ids = new Set(actions.map((action) => action.actionId));
    return Object.values(TEST_ACTIONS).every((id) => ids.has(id)) ? 'ready' : 'no-actions';
  } catch (error) {
    if (error instanceof PolkitBusError && error.kind === 'reply') return 'no-polkitd';
    return 'no-bus';
  } finally {
    authority.close();
  }
}

function spawnDaemon(command: string, args: string[], owned: Owned): ChildProcess {
  const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let log = '';
  const keep = (chunk: Buffer) => {
    log = (log + chunk.toString('utf8')).slice(-4_000);
  };
  child.stdout?.on('data', keep);
  child.stderr?.on('data', keep);
  (child as ChildProcess & { log: () => string }).log = () => log;
  owned.children.add(child);
  child.once('exit', () => owned.children.delete(child));
  return child;
}

async function stop(child: ChildProcess | undefined): Promise<void> {
  if (child === undefined || child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), 2_000);
  await exited;
  clearTimeout(timer);
}

/**
 * Sets up the environment (see the module comment). Call from `beforeAll` with a long timeout:
 * it waits for other test files that use polkitd to finish.
 *
 * @throws when it cannot (the reason says what failed); call {@link polkitSkipReason} first.
 */
export async function setupPolkit(): Promise<PolkitEnvironment> {
  const reason = polkitSkipReason();
  if (reason !== undefined) throw new Error(`cannot set up polkit: ${reason}`);
  await acquireLock();
  const owned: Owned = {
    files: [],
    dirs: [],
    lock: true,
    children: new Set(),
    agents: new Map(),
  };
  const emergency = () => cleanupSync(owned);
  process.once('exit', emergency);
  try {
    return await prepare(owned, emergency);
  } catch (error) {
    process.off('exit', emergency);
    await teardownOwned(owned);
    throw error;
  }
}

async function prepare(owned: Owned, emergency: () => void): Promise<PolkitEnvironment> {
  // The test user.
  const password = `bk-${randomBytes(12).toString('base64url')}`;
  if (lookupUser(TEST_USER) === undefined) {
    await userdb('useradd', [
      '--no-create-home',
      '--home-dir',
      '/nonexistent',
      '--shell',
      '/usr/sbin/nologin',
      '--user-group',
      TEST_USER,
    ]);
    owned.user = TEST_USER;
  }
  await userdb('chpasswd', [], `${TEST_USER}:${password}\n`);
  const ids = lookupUser(TEST_USER);
  if (ids === undefined) throw new Error(`user ${TEST_USER} was not created`);
  const user = { name: TEST_USER, ...ids };

  // State directory, with the file the record rule appends to (polkitd runs as its own user).
  if (!existsSync(STATE_DIR)) {
    mkdirSync(STATE_DIR, { mode: 0o755 });
    owned.dirs.push(STATE_DIR);
  }
  writeFileSync(RECORD_FILE, '');
  chmodSync(RECORD_FILE, 0o666);
  owned.files.push(RECORD_FILE);

  // Test actions (generated by our own generator) and rules, before polkitd starts.
  for (const [key, actionId] of Object.entries(TEST_ACTIONS)) {
    const path = polkitActionFilePath(actionId);
    writeFileSync(
      path,
      polkitActionFile({
        actionId,
        owner: key === 'recordNoOwner' ? 'nobody' : [TEST_USER],
        vendor: 'Bridgekeeper tests',
      }),
      { mode: 0o644 },
    );
    owned.files.push(path);
  }
  if (!existsSync('/etc/polkit-1/rules.d')) throw new Error('/etc/polkit-1/rules.d does not exist');
  writeFileSync(RULES_FILE, rules(TEST_USER), { mode: 0o644 });
  owned.files.push(RULES_FILE);

  // The system bus.
  const existing = await tryConnect(1_000);
  existing?.close();
  if (existing === undefined) {
    if (!existsSync('/run/dbus')) {
      mkdirSync('/run/dbus', { mode: 0o755 });
      owned.dirs.push('/run/dbus');
    }
    const configDir = mkdtempSync(join(tmpdir(), 'bk-system-bus-'));
    owned.dirs.push(configDir);
    const config = join(configDir, 'system.conf');
    writeFileSync(config, systemBusConfig());
    owned.files.push(config);
    const bus = spawnDaemon(
      'dbus-daemon',
      [`--config-file=${config}`, '--nofork', '--print-address'],
      owned,
    );
    owned.bus = bus;
    await new Promise<void>((resolve, reject) => {
      let output = '';
      bus.stdout?.on('data', (chunk: Buffer) => {
        output += chunk.toString('utf8');
        if (output.includes('\n')) resolve();
      });
      bus.once('exit', (code) =>
        reject(
          new Error(
            `dbus-daemon exited (${code}): ${(bus as ChildProcess & { log: () => string }).log()}`,
          ),
        ),
      );
    });
  }

  // polkitd.
  const startPolkitd = async (): Promise<void> => {
    const polkitd = spawnDaemon(POLKITD, [], owned);
    owned.polkitd = polkitd;
    await until('polkitd to answer with the test actions', async () => {
      if (polkitd.exitCode !== null) {
        throw new Error(
          `polkitd exited (${polkitd.exitCode}): ${(polkitd as ChildProcess & { log: () => string }).log()}`,
        );
      }
      return (await polkitdReady()) === 'ready' ? true : undefined;
    });
  };
  const state = await polkitdReady();
  if (state === 'no-bus') throw new Error('the system bus does not answer');
  if (state === 'no-polkitd') await startPolkitd();
  else
    await until('polkitd to load the test actions', async () =>
      (await polkitdReady()) === 'ready' ? true : undefined,
    );

  const environment: PolkitEnvironment = {
    user,
    password,
    startedBus: owned.bus !== undefined,
    startedPolkitd: owned.polkitd !== undefined,
    spawnSubject: () => spawnSubject(user, owned),
    startAgent: (subject, agentPassword) => startAgent(user, subject, agentPassword, owned),
    records: () =>
      readFileSync(RECORD_FILE, 'utf8')
        .split('\n')
        .filter(Boolean)
        .map((line) => JSON.parse(line) as RecordedCheck),
    killPolkitd: async () => {
      const polkitd = owned.polkitd;
      if (polkitd === undefined) throw new Error('polkitd was not started by the test setup');
      const exited = new Promise<void>((resolve) => polkitd.once('exit', () => resolve()));
      polkitd.kill('SIGKILL');
      await exited;
      owned.polkitd = undefined;
    },
    startPolkitd,
    teardown: async () => {
      process.off('exit', emergency);
      await teardownOwned(owned);
    },
  };

  // When a bus or polkitd already ran, the rules file may not be loaded yet: wait for a YES.
  const probe = await environment.spawnSubject();
  try {
    await until('polkitd to load the test rules', async () => {
      const authority = await tryConnect(1_000);
      if (authority === undefined) return undefined;
      try {
        const result = await authority.checkAuthorization(
          { pid: probe.pid, startTime: BigInt(probe.startTime), uid: probe.uid },
          TEST_ACTIONS.yes,
          {},
          0,
          '',
        );
        return result.isAuthorized ? true : undefined;
      } catch {
        return undefined;
      } finally {
        authority.close();
      }
    });
  } finally {
    probe.kill();
  }
  return environment;
}

async function spawnSubject(
  user: { uid: number; gid: number },
  owned: Owned,
): Promise<TestSubject> {
  const child = spawn(
    'setpriv',
    [`--reuid=${user.uid}`, `--regid=${user.gid}`, '--init-groups', 'sleep', '600'],
    { stdio: 'ignore' },
  );
  owned.children.add(child);
  child.once('exit', () => owned.children.delete(child));
  const pid = child.pid;
  if (pid === undefined) throw new Error('could not spawn a subject process');
  // Wait for the exec: only then does the process run as the test user, for good.
  await until(
    'the subject to become a non-root sleep',
    () => (exeOf(pid) === 'sleep' && uidOf(pid) === user.uid ? true : undefined),
    5_000,
    5,
  );
  const startTime = startTimeOf(pid);
  if (startTime === undefined) throw new Error('the subject exited at once');
  return { pid, startTime, uid: user.uid, kill: () => child.kill('SIGKILL') };
}

async function startAgent(
  user: { uid: number; gid: number },
  subject: TestSubject,
  password: string | undefined,
  owned: Owned,
): Promise<TestAgent> {
  // pkttyagent closes --notify-fd once it has registered with polkitd; fd 3 no longer being
  // /dev/zero is how we know the agent is ready (script keeps its own descriptors, so a pipe
  // would never report the close, and the number 3 is reused by the agent's next open()).
  const command = `exec pkttyagent --process ${subject.pid},${subject.startTime} --notify-fd 3 3</dev/zero`;
  const child = spawn(
    'setpriv',
    [
      `--reuid=${user.uid}`,
      `--regid=${user.gid}`,
      '--init-groups',
      'script',
      '-qfec',
      command,
      '/dev/null',
    ],
    {
      stdio: ['pipe', 'pipe', 'pipe'],
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin', SHELL: '/bin/sh', LANG: 'C', TERM: 'dumb' },
    },
  );
  owned.children.add(child);
  child.once('exit', () => owned.children.delete(child));
  let output = '';
  let answeredUpTo = 0;
  const listeners = new Set<() => void>();
  const onOutput = (chunk: Buffer) => {
    output += chunk.toString('utf8');
    for (const listener of [...listeners]) listener();
  };
  child.stdout?.on('data', onOutput);
  child.stderr?.on('data', onOutput);
  const scriptPid = child.pid;
  if (scriptPid === undefined) throw new Error('could not spawn pkttyagent');

  const agentPid = await until(
    'pkttyagent to start',
    () => {
      if (child.exitCode !== null) throw new Error(`pkttyagent exited early: ${output}`);
      return childrenOf(scriptPid).find((pid) => exeOf(pid) === 'pkttyagent');
    },
    5_000,
    5,
  );
  owned.agents.set(agentPid, startTimeOf(agentPid));
  await until(
    'pkttyagent to register with polkitd',
    () => {
      if (!alive(agentPid)) throw new Error(`pkttyagent exited: ${output}`);
      let target: string | undefined;
      try {
        target = readlinkSync(`/proc/${agentPid}/fd/3`);
      } catch {
        target = undefined;
      }
      return target === '/dev/zero' ? undefined : true;
    },
    5_000,
    5,
  );

  const printed = (text: string, timeoutMs = 10_000): Promise<void> =>
    new Promise((resolve, reject) => {
      const check = () => {
        if (!output.includes(text)) return;
        listeners.delete(check);
        clearTimeout(timer);
        resolve();
      };
      const timer = setTimeout(() => {
        listeners.delete(check);
        reject(
          new Error(
            `pkttyagent did not print ${JSON.stringify(text)}; it printed ${JSON.stringify(output)}`,
          ),
        );
      }, timeoutMs);
      listeners.add(check);
      check();
    });

  if (password !== undefined) {
    // Types the password at each new prompt — after the agent turned echo off, because turning it
    // off flushes whatever was typed before (a person would not type that fast either).
    let typing = false;
    const answer = async () => {
      const prompt = output.indexOf('Password:', answeredUpTo);
      if (prompt === -1 || typing) return;
      typing = true;
      answeredUpTo = prompt + 'Password:'.length;
      try {
        const tty = readlinkSync(`/proc/${agentPid}/fd/0`);
        await until(
          'pkttyagent to turn echo off',
          () => {
            const result = spawnSync('stty', ['-F', tty], { encoding: 'utf8' });
            return /(^|\s)-echo(\s|$)/.test(result.stdout) ? true : undefined;
          },
          5_000,
          5,
        );
        child.stdin?.write(`${password}\n`);
      } catch {
        // The agent went away; the test sees it in the outcome.
      } finally {
        typing = false;
      }
    };
    listeners.add(() => void answer());
  }

  return {
    get output() {
      return output;
    },
    promptShown: () => printed('Password:'),
    printed,
    stop: () => {
      // script's child (pkttyagent) runs in its own session; stop it first, then script.
      killAgent(owned, agentPid);
      child.kill('SIGKILL');
    },
  };
}

/** Kills an agent this setup started, if that pid still is that process. */
function killAgent(owned: Owned, pid: number): void {
  const started = owned.agents.get(pid);
  owned.agents.delete(pid);
  if (started !== undefined && startTimeOf(pid) === started) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // Already gone.
    }
  }
}

async function teardownOwned(owned: Owned): Promise<void> {
  for (const pid of [...owned.agents.keys()]) killAgent(owned, pid);
  for (const child of [...owned.children]) {
    if (child !== owned.bus && child !== owned.polkitd) child.kill('SIGKILL');
  }
  await stop(owned.polkitd);
  owned.polkitd = undefined;
  await stop(owned.bus);
  owned.bus = undefined;
  for (const file of owned.files.splice(0)) rmSync(file, { force: true });
  for (const dir of owned.dirs.splice(0).reverse()) {
    try {
      rmdirSync(dir);
    } catch {
      // Not empty: something else put files there; leave it.
    }
  }
  if (owned.user !== undefined) {
    await userdb('userdel', [owned.user]).catch(() => {});
    owned.user = undefined;
  }
  if (owned.lock) {
    releaseLock();
    owned.lock = false;
  }
}

/** Last resort when the test process exits without teardown: synchronous, best effort. */
function cleanupSync(owned: Owned): void {
  for (const pid of [...owned.agents.keys()]) killAgent(owned, pid);
  for (const child of owned.children) child.kill('SIGKILL');
  for (const file of owned.files) rmSync(file, { force: true });
  for (const dir of [...owned.dirs].reverse()) {
    try {
      rmdirSync(dir);
    } catch {
      // Leave it.
    }
  }
  if (owned.user !== undefined) {
    try {
      execFileSync('userdel', [owned.user], { stdio: 'ignore' });
    } catch {
      // Leave it.
    }
  }
  if (owned.lock) releaseLock();
}
