/**
 * Describes the process being authorized the way the person knows it: not "node", but the
 * terminal or app hosting its session — "GNOME Terminal", "tmux", "SSH session", "Visual Studio
 * Code" — built only from what the kernel reports (`/proc/<pid>/stat` and `/proc/<pid>/exe`),
 * never from anything the client says (polkit refuses caller-supplied details "otherwise you'd be
 * able to spoof the dialog").
 *
 * Names come from the executable's base name first (a process cannot change it without exec'ing
 * another file) and from `comm` second (needed for processes whose executable we cannot read —
 * another user's `sshd` — or that run in an interpreter, such as Terminator in Python). `comm`
 * can be set by the process itself (`prctl(PR_SET_NAME)`), so a same-user program could pose as
 * a terminal; same-user code is outside the threat model, as the design notes say.
 *
 * @module
 */

import { basename } from 'node:path';
import type { ProcessDescription } from '../../prompt/prompt-backend.js';
import type { SessionScope } from '../../session/credentials.js';
import { createLog } from '../../util/log.js';
import { hasExited, type ProcReader, type ProcStat, systemProc } from './proc.js';

const debug = createLog('bridgekeeper:linux');

/** Where a process's session is anchored, as the credential derivation found it. */
export type SessionPlacement =
  /** A terminal session: the host is found from the session leader's parent upwards. */
  | { readonly scope: Extract<SessionScope, 'terminal'>; readonly leaderPid: number }
  /** No terminal: the host is found from the invoking process (`anchorPid`) upwards. */
  | { readonly scope: Extract<SessionScope, 'process'>; readonly anchorPid: number };

/** Most steps a walk up the process tree takes; a tree deeper than this is named by its fallback. */
export const MAX_WALK_STEPS = 32;

/** Programs that host sessions, by executable base name (or `comm`), with the name people know. */
const KNOWN_HOSTS: ReadonlyArray<readonly [string, string]> = [
  ['gnome-terminal-server', 'GNOME Terminal'],
  ['gnome-terminal', 'GNOME Terminal'],
  ['kgx', 'GNOME Console'],
  ['gnome-console', 'GNOME Console'],
  ['ptyxis', 'Ptyxis'],
  ['ptyxis-agent', 'Ptyxis'],
  ['konsole', 'Konsole'],
  ['yakuake', 'Yakuake'],
  ['kitty', 'kitty'],
  ['alacritty', 'Alacritty'],
  ['xterm', 'XTerm'],
  ['uxterm', 'XTerm'],
  ['urxvt', 'rxvt-unicode'],
  ['urxvtd', 'rxvt-unicode'],
  ['rxvt', 'rxvt'],
  ['st', 'st'],
  ['wezterm-gui', 'WezTerm'],
  ['wezterm-mux-server', 'WezTerm'],
  ['wezterm', 'WezTerm'],
  ['foot', 'foot'],
  ['footclient', 'foot'],
  ['tilix', 'Tilix'],
  ['xfce4-terminal', 'Xfce Terminal'],
  ['terminator', 'Terminator'],
  ['mate-terminal', 'MATE Terminal'],
  ['lxterminal', 'LXTerminal'],
  ['qterminal', 'QTerminal'],
  ['terminology', 'Terminology'],
  ['guake', 'Guake'],
  ['tilda', 'Tilda'],
  ['ghostty', 'Ghostty'],
  ['contour', 'Contour'],
  ['rio', 'Rio'],
  ['cool-retro-term', 'Cool Retro Term'],
  ['warp', 'Warp'],
  ['warp-terminal', 'Warp'],
  ['hyper', 'Hyper'],
  ['tabby', 'Tabby'],
  ['tmux', 'tmux'],
  ['tmux: server', 'tmux'],
  ['screen', 'GNU Screen'],
  ['SCREEN', 'GNU Screen'],
  ['zellij', 'Zellij'],
  ['sshd', 'SSH session'],
  ['sshd-session', 'SSH session'],
  ['mosh-server', 'Mosh session'],
  ['code', 'Visual Studio Code'],
  ['code-oss', 'Visual Studio Code'],
  ['code-insiders', 'Visual Studio Code'],
  ['codium', 'VSCodium'],
  ['cursor', 'Cursor'],
  ['zed', 'Zed'],
  ['zed-editor', 'Zed'],
  ['emacs', 'Emacs'],
];

const HOST_BY_NAME = new Map<string, string>();
const HOST_BY_COMM = new Map<string, string>();
for (const [name, host] of KNOWN_HOSTS) {
  HOST_BY_NAME.set(name, host);
  // comm holds at most 15 bytes: "gnome-terminal-server" shows as "gnome-terminal-".
  HOST_BY_COMM.set(name.slice(0, 15), host);
}

/**
 * Programs that sit between a terminal and the session without being what the person looks at:
 * shells and wrappers. A walk continues through them to the host above.
 */
const PASS_THROUGH = new Set([
  'bash',
  'sh',
  'dash',
  'zsh',
  'fish',
  'ksh',
  'mksh',
  'tcsh',
  'csh',
  'nu',
  'elvish',
  'xonsh',
  'busybox',
  'sudo',
  'su',
  'doas',
  'run0',
  'login',
  'script',
  'setsid',
  'nohup',
  'env',
  'timeout',
  'nice',
  'ionice',
  'stdbuf',
  'unbuffer',
  'flock',
  'sg',
  'newgrp',
  'time',
]);

function executableBase(executable: string | undefined): string | undefined {
  if (executable === undefined) return undefined;
  const path = executable.endsWith(' (deleted)') ? executable.slice(0, -10) : executable;
  return basename(path);
}

/**
 * The name people know for a session-hosting program, from its executable and `comm`, or
 * `undefined` when it is not one Bridgekeeper knows.
 *
 * @example
 * ```ts
 * knownHostName('/usr/libexec/gnome-terminal-server', 'gnome-terminal-'); // 'GNOME Terminal'
 * knownHostName('/usr/bin/tmux', 'tmux: server'); // 'tmux'
 * ```
 */
export function knownHostName(
  executable: string | undefined,
  comm: string | undefined,
): string | undefined {
  const base = executableBase(executable);
  if (base !== undefined) {
    const byName = HOST_BY_NAME.get(base);
    if (byName) return byName;
    // VS Code and its forks run as Electron; their install path gives them away.
    if ((base === 'electron' || base === 'code') && /code/i.test(executable ?? '')) {
      return 'Visual Studio Code';
    }
  }
  if (comm !== undefined) {
    const byComm = HOST_BY_COMM.get(comm) ?? HOST_BY_NAME.get(comm);
    if (byComm) return byComm;
    // sshd names its per-connection processes "sshd: user@pts/0" through its process title.
    if (comm.startsWith('sshd')) return 'SSH session';
  }
  return undefined;
}

/**
 * The short name of a program: its executable's base name, from the kernel's `exe` link, or
 * `comm` only when the executable cannot be read (another user's process). `comm` is never
 * preferred over a readable executable: a process sets its own `comm` (`prctl(PR_SET_NAME)`;
 * Node 24 renames its main thread "MainThread"), so it is the process's claim, not a fact.
 */
export function programName(executable: string | undefined, comm: string | undefined): string {
  return executableBase(executable) ?? comm ?? 'unknown';
}

function isPassThrough(executable: string | undefined, comm: string): boolean {
  const base = executableBase(executable);
  return (base !== undefined && PASS_THROUGH.has(base)) || PASS_THROUGH.has(comm);
}

interface Step {
  readonly stat: ProcStat;
  readonly executable: string | undefined;
}

async function readStep(proc: ProcReader, pid: number): Promise<Step | undefined> {
  if (pid <= 0) return undefined;
  const stat = await proc.readStat(pid);
  if (!stat || hasExited(stat)) return undefined;
  return { stat, executable: await proc.readExecutable(pid) };
}

/**
 * Finds the host's name by walking up from `start`: the first known host wins. A terminal walk
 * passes only through shells and wrappers (the first other program *is* the terminal, known or
 * not); a process walk passes through anything, so an IDE task's `bash → make → code` still
 * finds the IDE. Bounded by {@link MAX_WALK_STEPS} and by pid 1, and never visits a pid twice,
 * so a tree that changes under it cannot make it loop.
 */
async function findHost(
  proc: ProcReader,
  start: number,
  scope: SessionScope,
): Promise<string | undefined> {
  const visited = new Set<number>();
  let first: string | undefined;
  let firstOther: string | undefined;
  let pid = start;
  for (let steps = 0; steps < MAX_WALK_STEPS && pid > 0 && !visited.has(pid); steps++) {
    visited.add(pid);
    const step = await readStep(proc, pid);
    if (!step) break;
    const known = knownHostName(step.executable, step.stat.comm);
    if (known) return known;
    // init is nobody's host (it only counts above when it is a known one, as in a container).
    if (pid === 1) break;
    const name = programName(step.executable, step.stat.comm);
    first ??= name;
    if (!isPassThrough(step.executable, step.stat.comm)) {
      if (scope === 'terminal') return name;
      firstOther ??= name;
    }
    pid = step.stat.ppid;
  }
  return firstOther ?? first;
}

/**
 * Describes a process for the authorization prompt, from verified data only.
 *
 * `host` is what the person sees hosting the session: for a terminal session, the program above
 * the session leader (through shells and wrappers such as `sudo` or `script`); without a
 * terminal, the first known host above the invoking process, else the first program there that
 * is not a shell. When nothing can be read it falls back to the peer's own program name.
 *
 * @param pid the peer's process id.
 * @param session where its session is anchored (from the credential derivation).
 * @param options.knownHost the host already named for this session; skips the walk.
 *
 * @example
 * ```ts
 * await describeProcess(4242, { scope: 'terminal', leaderPid: 4200 });
 * // { host: 'GNOME Terminal', program: 'mycli', pid: 4242, executable: '/usr/bin/node' }
 * ```
 */
export async function describeProcess(
  pid: number,
  session: SessionPlacement,
  options: { proc?: ProcReader; knownHost?: string } = {},
): Promise<ProcessDescription> {
  const proc = options.proc ?? systemProc;
  const peer = await readStep(proc, pid);
  const program = peer ? programName(peer.executable, peer.stat.comm) : undefined;

  let host: string | undefined = options.knownHost;
  if (host !== undefined) {
    // Named already for this session (the caller caches it by session id).
  } else if (session.scope === 'terminal') {
    const leader = session.leaderPid === pid ? peer : await readStep(proc, session.leaderPid);
    if (leader) host = await findHost(proc, leader.stat.ppid, 'terminal');
  } else {
    // Keyed on the peer itself (orphaned): its parent is init or a subreaper; start there.
    const start = session.anchorPid === pid ? (peer?.stat.ppid ?? 0) : session.anchorPid;
    host = await findHost(proc, start, 'process');
  }
  host ??= program ?? `pid ${pid}`;
  debug('pid %d (%s) is hosted by %s', pid, program, host);

  const commandLine = peer ? await proc.readCommandLine?.(pid) : undefined;
  return {
    host,
    ...(program === undefined ? {} : { program }),
    pid,
    ...(peer?.executable === undefined ? {} : { executable: peer.executable }),
    ...(commandLine === undefined ? {} : { commandLine }),
  };
}
