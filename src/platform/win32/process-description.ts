/**
 * Describes the process being authorized the way the person knows it on Windows: not
 * "node.exe", but the window hosting it — "Windows Terminal", "Visual Studio Code", "Windows
 * PowerShell", "Command Prompt" — found by walking up the parent chain from the invoking process,
 * with every fact read from Windows through process handles (image paths, parent pids, creation
 * times), never from anything the client says.
 *
 * Parent pids on Windows are recorded at creation and never updated: a parent that exited may
 * have its pid reused by an unrelated process. So each step of the walk must be older than the
 * step below it (its creation time not later than the child's), or the walk stops there.
 *
 * Names come from the image's file name (which the process cannot change). Only for a host this
 * module does not know is the image's version resource (`FileDescription`) shown; that text is
 * whatever the program's author wrote, so it is cleaned to one bounded line.
 *
 * @module
 */

import { win32 } from 'node:path';
import type { ProcessDescription } from '../../prompt/prompt-backend.js';
import { createLog } from '../../util/log.js';
import type { Win32Bindings, Win32Handle } from './bindings.js';
import { parseFileTime } from './identity.js';

const debug = createLog('bridgekeeper:win32');

/** Most steps a walk up the parent chain takes; a deeper chain is named by its fallback. */
export const MAX_WALK_STEPS = 32;

/** Longest host name taken from a version resource. */
const MAX_NAME_LENGTH = 80;

/** Programs that host sessions, by lower-case image file name, with the name people know. */
const KNOWN_HOSTS: ReadonlyMap<string, string> = new Map([
  ['windowsterminal.exe', 'Windows Terminal'],
  ['wt.exe', 'Windows Terminal'],
  ['openconsole.exe', 'Windows Terminal'],
  ['code.exe', 'Visual Studio Code'],
  ['code - insiders.exe', 'Visual Studio Code - Insiders'],
  ['vscodium.exe', 'VSCodium'],
  ['cursor.exe', 'Cursor'],
  ['windsurf.exe', 'Windsurf'],
  ['devenv.exe', 'Visual Studio'],
  ['idea64.exe', 'IntelliJ IDEA'],
  ['pycharm64.exe', 'PyCharm'],
  ['webstorm64.exe', 'WebStorm'],
  ['rider64.exe', 'Rider'],
  ['goland64.exe', 'GoLand'],
  ['clion64.exe', 'CLion'],
  ['phpstorm64.exe', 'PhpStorm'],
  ['rustrover64.exe', 'RustRover'],
  ['zed.exe', 'Zed'],
  ['sublime_text.exe', 'Sublime Text'],
  ['wezterm-gui.exe', 'WezTerm'],
  ['alacritty.exe', 'Alacritty'],
  ['conemu.exe', 'ConEmu'],
  ['conemu64.exe', 'ConEmu'],
  ['mintty.exe', 'mintty'],
  ['hyper.exe', 'Hyper'],
  ['tabby.exe', 'Tabby'],
  ['warp.exe', 'Warp'],
  ['sshd.exe', 'SSH session'],
  ['sshd-session.exe', 'SSH session'],
]);

/**
 * Shells and console hosts: what the person sees when no terminal or IDE sits above them (a
 * console window opened from the Start menu or Explorer is the shell's own). A walk passes
 * through them looking for a host above, and falls back to the topmost one.
 */
const SHELLS: ReadonlyMap<string, string> = new Map([
  ['cmd.exe', 'Command Prompt'],
  ['powershell.exe', 'Windows PowerShell'],
  ['powershell_ise.exe', 'Windows PowerShell ISE'],
  ['pwsh.exe', 'PowerShell'],
  ['bash.exe', 'Bash'],
  ['sh.exe', 'sh'],
  ['zsh.exe', 'zsh'],
  ['fish.exe', 'fish'],
  ['nu.exe', 'Nushell'],
  ['wsl.exe', 'WSL'],
  ['conhost.exe', 'Console Window Host'],
]);

/** Wrappers that are never the host: a walk passes through them without naming them. */
const PASS_THROUGH: ReadonlySet<string> = new Set([
  'sudo.exe',
  'runas.exe',
  'gsudo.exe',
  'wslhost.exe',
  'winpty-agent.exe',
  'winpty.exe',
]);

/**
 * The desktop and the system: a walk that reaches one of these has passed every host there is
 * (Explorer started the console window, a service started the process), and stops.
 */
export const BOUNDARIES: ReadonlySet<string> = new Set([
  'explorer.exe',
  'svchost.exe',
  'services.exe',
  'wininit.exe',
  'winlogon.exe',
  'userinit.exe',
  'csrss.exe',
  'smss.exe',
  'lsass.exe',
  'sihost.exe',
  'runtimebroker.exe',
  'taskhostw.exe',
  'taskeng.exe',
  'startmenuexperiencehost.exe',
  'shellexperiencehost.exe',
]);

/** pid 0 is the idle process and pid 4 the kernel ("System"): nobody's host. */
function isSystemPid(pid: number): boolean {
  return pid === 0 || pid === 4;
}

/**
 * The file name of an image path (`C:\Program Files\nodejs\node.exe` → `node.exe`), for either
 * path style; `undefined` for none.
 */
export function programName(image: string | undefined): string | undefined {
  if (image === undefined || image === '') return undefined;
  // Image paths may come as NT paths (\Device\HarddiskVolume3\…) or with \\?\: the name is last.
  const name = win32.basename(image);
  return name === '' ? undefined : name;
}

function key(image: string | undefined): string | undefined {
  return programName(image)?.toLowerCase();
}

/**
 * The name people know for a session-hosting program (a terminal, an IDE, an SSH server), from
 * its image path, or `undefined` when Bridgekeeper does not know it. Case-insensitive, as
 * Windows file names are.
 *
 * @example
 * ```ts
 * knownHostName('C:\\Program Files\\WindowsApps\\Microsoft.WindowsTerminal_1.21\\WindowsTerminal.exe');
 * // 'Windows Terminal'
 * ```
 */
export function knownHostName(image: string | undefined): string | undefined {
  const name = key(image);
  return name === undefined ? undefined : KNOWN_HOSTS.get(name);
}

/**
 * The name people know for a shell or console host (`cmd.exe` → "Command Prompt"), or
 * `undefined` when the image is not one.
 *
 * @example
 * ```ts
 * shellName('C:\\Windows\\System32\\WindowsPowerShell\\v1.0\\powershell.exe'); // 'Windows PowerShell'
 * ```
 */
export function shellName(image: string | undefined): string | undefined {
  const name = key(image);
  return name === undefined ? undefined : SHELLS.get(name);
}

/** One line of plain text, bounded: no control or bidirectional-override characters. */
function cleanName(value: string): string {
  let text = '';
  for (const char of value) {
    const code = char.codePointAt(0) ?? 0;
    const control =
      code < 0x20 ||
      (code >= 0x7f && code <= 0x9f) ||
      code === 0x2028 ||
      code === 0x2029 ||
      code === 0x200e ||
      code === 0x200f ||
      (code >= 0x202a && code <= 0x202e) ||
      (code >= 0x2066 && code <= 0x2069);
    text += control ? ' ' : char;
  }
  const chars = [...text.replace(/\s+/g, ' ').trim()];
  return chars.length > MAX_NAME_LENGTH
    ? `${chars.slice(0, MAX_NAME_LENGTH - 1).join('')}…`
    : chars.join('');
}

/** The name to show for a program Bridgekeeper does not know: its FileDescription, else its file name. */
function describedName(bindings: Win32Bindings, image: string): string | undefined {
  let description: string | undefined;
  try {
    description = bindings.fileDescription(image);
  } catch (error) {
    debug('no version resource for %s: %O', image, error);
  }
  const cleaned = description === undefined ? '' : cleanName(description);
  return cleaned !== '' ? cleaned : programName(image);
}

interface Step {
  readonly created: bigint;
  readonly image: string | undefined;
  readonly parent: number | undefined;
}

/** Reads one process through a handle closed right after; `undefined` when it cannot be opened. */
function readStep(bindings: Win32Bindings, pid: number): Step | undefined {
  let handle: Win32Handle | undefined;
  try {
    handle = bindings.openProcess(pid);
    if (handle === undefined) return undefined;
    const created = parseFileTime(bindings.processCreationTime(handle));
    if (created === undefined) return undefined;
    return {
      created,
      image: bindings.processImagePath(handle),
      parent: bindings.parentProcessId(handle),
    };
  } catch (error) {
    debug('cannot read pid %d: %O', pid, error);
    return undefined;
  } finally {
    if (handle !== undefined) {
      try {
        bindings.closeHandle(handle);
      } catch (error) {
        debug('closing a handle to pid %d failed: %O', pid, error);
      }
    }
  }
}

/**
 * Finds the host by walking up from `start`, whose child was created at `childCreated`. A known
 * host wins at once; else the program just above the topmost shell (an unknown terminal), else
 * that shell, else the first program seen. Bounded by {@link MAX_WALK_STEPS}, never visits a pid
 * twice, and stops at a parent younger than its child (a reused pid), at the desktop or system
 * processes, and at a process it cannot open.
 */
function findHost(
  bindings: Win32Bindings,
  start: number,
  childCreated: bigint,
): string | undefined {
  const visited = new Set<number>();
  let shell: string | undefined;
  let aboveShell: string | undefined;
  let first: string | undefined;
  let pid: number | undefined = start;
  let created = childCreated;
  for (let steps = 0; steps < MAX_WALK_STEPS; steps++) {
    if (pid === undefined || isSystemPid(pid) || visited.has(pid)) break;
    visited.add(pid);
    const step = readStep(bindings, pid);
    if (!step || step.created > created) {
      if (step) debug('pid %d is younger than its child: a reused parent pid; stopping', pid);
      break;
    }
    const known = knownHostName(step.image);
    if (known) return known;
    const name = key(step.image);
    if (name !== undefined && BOUNDARIES.has(name)) break;
    const asShell = shellName(step.image);
    if (asShell !== undefined) {
      shell = asShell;
      aboveShell = undefined;
    } else if (step.image !== undefined && !(name !== undefined && PASS_THROUGH.has(name))) {
      const described = describedName(bindings, step.image);
      if (shell !== undefined) aboveShell ??= described;
      first ??= described;
    }
    created = step.created;
    pid = step.parent;
  }
  return aboveShell ?? shell ?? first;
}

/** The process whose description is wanted: the verified peer. */
export interface DescribedProcess {
  readonly pid: number;
  /** Its creation time (FILETIME, decimal). */
  readonly startTime: string;
  /** Its image path, when Windows reported one. */
  readonly executable?: string;
}

/** Where the walk for the host starts: the invoking process the session is keyed on. */
export interface HostAnchor {
  readonly pid: number;
}

/**
 * Describes a process for the authorization prompt, from verified data only: `program` is the
 * file name of its image, `host` the window the person knows (see the module comment), found
 * from `anchor` — the invoking process its session is keyed on — upwards. Without an anchor (the
 * invoker is gone) or when nothing above can be read, `host` is the program itself.
 *
 * Never throws: what cannot be read is left out.
 *
 * @param options.knownHost the host already named for this session; skips the walk.
 *
 * @example
 * ```ts
 * describeWin32Process(bindings, peerFacts, { pid: parentPid });
 * // { host: 'Windows Terminal', program: 'node.exe', pid: 4242, executable: 'C:\\…\\node.exe' }
 * ```
 */
export function describeWin32Process(
  bindings: Win32Bindings,
  subject: DescribedProcess,
  anchor: HostAnchor | undefined,
  options: { knownHost?: string } = {},
): ProcessDescription {
  const program = programName(subject.executable);
  let host = options.knownHost;
  const created = parseFileTime(subject.startTime);
  if (host === undefined && anchor !== undefined && created !== undefined) {
    host = findHost(bindings, anchor.pid, created);
  }
  host ??= program ?? `pid ${subject.pid}`;
  debug('pid %d (%s) is hosted by %s', subject.pid, program, host);
  return {
    host,
    ...(program === undefined ? {} : { program }),
    pid: subject.pid,
    ...(subject.executable === undefined ? {} : { executable: subject.executable }),
  };
}
