/**
 * The launchd agent definition (an XML property list) that starts the relay helper
 * (`createRelay`) in the person's login session on macOS, in either of the two places macOS
 * takes it from:
 *
 * - **Inside the app bundle**, `Contents/Library/LaunchAgents/<label>.plist`, registered by the
 *   app with `SMAppService.agent(plistName:).register()` (macOS 13+). The executable is named
 *   relative to the bundle (`BundleProgram`), so the app can be moved; the person sees and can
 *   switch it off in System Settings → General → Login Items.
 * - **In the person's home**, `~/Library/LaunchAgents/<label>.plist`, loaded with
 *   `launchctl bootstrap gui/$(id -u) <file>` (any macOS version). The executable is an
 *   absolute path (`Program`).
 *
 * Why `RunAtLoad` and `KeepAlive` default to true: the relay of today listens on a Unix socket
 * it creates itself (through `listenUnixSocket`, which checks the directory's owner and mode), so
 * nothing would start it on demand.
 *
 * Why no launchd-managed socket (`Sockets`): launchd would create the socket file itself, with
 * none of `listenUnixSocket`'s checks (owner, mode 0700, no stale or squatted file), and the relay
 * would need `launch_activate_socket` (libSystem, through the macOS binding module) to receive it — a binding that
 * does not exist and could not be run here. On-demand start is the only thing it would add, and
 * `RunAtLoad` + `KeepAlive` cover that for a small, idle process.
 *
 * `MachServices` (default: one service named like the label) is for the XPC transport, which is
 * not written yet: pass `machServices: []` to leave it out until then. launchd starts a job when
 * someone looks up one of its mach services, which does no harm to a job that runs anyway.
 *
 * Nothing in this file has been loaded by a real launchd: the output follows `launchd.plist(5)`
 * and Apple's `SMAppService` documentation and is checked here as text only.
 *
 * @module
 */

import { homedir } from 'node:os';
import { posix } from 'node:path';
import { createError } from '../errors.js';

/** The per-user agents directory, relative to the home directory. */
export const LAUNCH_AGENTS_DIRECTORY = 'Library/LaunchAgents';

/** Where `SMAppService.agent(plistName:)` looks for the definition, relative to the app bundle. */
export const BUNDLE_LAUNCH_AGENTS_DIRECTORY = 'Contents/Library/LaunchAgents';

/** Options for {@link launchdAgentPlist}. Give exactly one of `program` and `bundleProgram`. */
export interface LaunchdAgentPlistOptions {
  /**
   * The job's label, reverse-DNS (`com.example.secrets-agent.relay`): ASCII letters, digits and
   * `-` in dot-separated parts, at least two parts, at most 255 characters, not under `com.apple.`.
   * It is also the file name (`<label>.plist`).
   */
  label: string;
  /**
   * The absolute path of the relay helper, for `~/Library/LaunchAgents`
   * (`/Applications/Example.app/Contents/MacOS/example-relay`). Becomes `Program`.
   */
  program?: string;
  /**
   * The relay helper's path relative to the app bundle (`Contents/MacOS/example-relay`), for a
   * definition shipped in the bundle and registered with `SMAppService` (macOS 13+). Becomes
   * `BundleProgram`.
   */
  bundleProgram?: string;
  /**
   * Arguments after the program name. When given, `ProgramArguments` is written with the program
   * (or bundle program) as `argv[0]` followed by these.
   */
  programArguments?: readonly string[];
  /** Mach service names to register (for the XPC transport). Default `[label]`; `[]` leaves the key out. */
  machServices?: readonly string[];
  /** Start the job when it is loaded (at login). Default `true`. */
  runAtLoad?: boolean;
  /** Restart the job whenever it exits. Default `true`. */
  keepAlive?: boolean;
  /**
   * Bundle ids of the app the job belongs to (`AssociatedBundleIdentifiers`), so that macOS 13+
   * shows the app's name for a `~/Library/LaunchAgents` job in Login Items. Not needed with
   * `bundleProgram` (the job then belongs to its bundle).
   */
  associatedBundleIdentifiers?: readonly string[];
}

const LABEL_PART = /^[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?$/;

/**
 * True when `label` is a reverse-DNS name this module accepts for a label or a mach service:
 * ASCII letters, digits and `-` in at least two dot-separated parts (no part empty or starting or
 * ending with `-`), at most 255 characters.
 */
export function isValidLaunchdLabel(label: unknown): label is string {
  if (typeof label !== 'string' || label.length > 255) return false;
  const parts = label.split('.');
  return parts.length >= 2 && parts.every((part) => LABEL_PART.test(part));
}

/**
 * Where a per-user agent definition belongs: `<home>/Library/LaunchAgents/<label>.plist`. (For a
 * definition inside the app bundle the place is `Contents/Library/LaunchAgents/<label>.plist`,
 * see {@link BUNDLE_LAUNCH_AGENTS_DIRECTORY}.)
 *
 * @param options.home The home directory; default `os.homedir()`.
 * @throws `ERR_INVALID_ARGUMENT` for a label that is not reverse-DNS (see {@link isValidLaunchdLabel})
 *   or a home that is not an absolute path.
 * @example
 * ```ts
 * launchdAgentPlistPath('com.example.secrets-agent.relay', { home: '/Users/alice' });
 * // '/Users/alice/Library/LaunchAgents/com.example.secrets-agent.relay.plist'
 * ```
 */
export function launchdAgentPlistPath(label: string, options: { home?: string } = {}): string {
  assertLabel(label, 'label');
  const home = options.home ?? homedir();
  if (typeof home !== 'string' || !posix.isAbsolute(home) || hasControl(home)) {
    throw createError(
      'ERR_INVALID_ARGUMENT',
      `launchdAgentPlistPath: home must be an absolute path (got ${JSON.stringify(home)}).`,
    );
  }
  return posix.join(home, LAUNCH_AGENTS_DIRECTORY, `${label}.plist`);
}

/**
 * Generates the launchd agent definition (XML property list) that runs the relay helper in the
 * person's login session. Write it to {@link launchdAgentPlistPath}`(label)` (with `program`) or
 * ship it as `Contents/Library/LaunchAgents/<label>.plist` in the app bundle (with
 * `bundleProgram`, registered through `SMAppService`). See `docs/macos.md`.
 *
 * @throws `ERR_INVALID_ARGUMENT` when the label or a mach service name is not reverse-DNS, the
 *   label is under `com.apple.`, neither or both of `program` and `bundleProgram` are given,
 *   `program` is not absolute, `bundleProgram` is not a plain path under `Contents/`, a string
 *   is empty or holds control characters, a mach service is listed twice, a flag is not a
 *   boolean, or `sockets` is given (not supported; see the module comment).
 * @example
 * ```ts
 * import { writeFileSync } from 'node:fs';
 * import { launchdAgentPlist, launchdAgentPlistPath } from 'bridgekeeper';
 *
 * const label = 'com.example.secrets-agent.relay';
 * writeFileSync(
 *   launchdAgentPlistPath(label),
 *   launchdAgentPlist({ label, program: '/Applications/Example.app/Contents/MacOS/example-relay' }),
 *   { mode: 0o644 },
 * );
 * ```
 */
export function launchdAgentPlist(options: LaunchdAgentPlistOptions): string {
  if (typeof options !== 'object' || options === null) {
    throw createError(
      'ERR_INVALID_ARGUMENT',
      'launchdAgentPlist(options) needs { label, program } or { label, bundleProgram }.',
    );
  }
  if ('sockets' in options) {
    throw createError(
      'ERR_INVALID_ARGUMENT',
      'launchdAgentPlist does not write launchd-managed sockets: the relay creates and checks its own socket with listenUnixSocket. Remove `sockets`.',
    );
  }
  const { label } = options;
  assertLabel(label, 'label');
  if (label.toLowerCase().startsWith('com.apple.')) {
    throw createError(
      'ERR_INVALID_ARGUMENT',
      `launchd label "${label}" is under com.apple., which Apple reserves: use your own reverse-DNS domain, e.g. "com.example.app.relay".`,
    );
  }
  const lines = [
    '<?xml version="1.0" encoding="UTF-8"?>',
    '<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">',
    '<plist version="1.0">',
    '<dict>',
    ...entry('Label', string(label)),
  ];
  const executable = executableEntry(options);
  lines.push(...entry(executable.key, string(executable.path)));
  if (options.programArguments !== undefined) {
    const args = list(options.programArguments, 'programArguments', { allowEmptyItems: true });
    lines.push(...entry('ProgramArguments', array([executable.path, ...args])));
  }
  const machServices = list(options.machServices ?? [label], 'machServices');
  for (const name of machServices) assertLabel(name, 'mach service name');
  if (new Set(machServices).size !== machServices.length) {
    throw createError(
      'ERR_INVALID_ARGUMENT',
      'launchdAgentPlist machServices lists a name twice: list each mach service once.',
    );
  }
  if (machServices.length > 0) {
    lines.push(
      ...entry('MachServices', [
        '<dict>',
        ...machServices.flatMap((name) => entry(name, ['<true/>'])),
        '</dict>',
      ]),
    );
  }
  lines.push(...entry('RunAtLoad', flag(options.runAtLoad, 'runAtLoad')));
  lines.push(...entry('KeepAlive', flag(options.keepAlive, 'keepAlive')));
  if (options.associatedBundleIdentifiers !== undefined) {
    const ids = list(options.associatedBundleIdentifiers, 'associatedBundleIdentifiers');
    for (const id of ids) assertLabel(id, 'bundle identifier');
    if (ids.length > 0) lines.push(...entry('AssociatedBundleIdentifiers', array(ids)));
  }
  lines.push('</dict>', '</plist>', '');
  return lines.join('\n');
}

function executableEntry(options: LaunchdAgentPlistOptions): { key: string; path: string } {
  const { program, bundleProgram } = options;
  if ((program === undefined) === (bundleProgram === undefined)) {
    throw createError(
      'ERR_INVALID_ARGUMENT',
      'launchdAgentPlist needs exactly one of `program` (an absolute path, for ~/Library/LaunchAgents) and `bundleProgram` (a path inside the app bundle such as "Contents/MacOS/relay", for SMAppService).',
    );
  }
  if (program !== undefined) {
    if (typeof program !== 'string' || !posix.isAbsolute(program) || hasControl(program)) {
      throw createError(
        'ERR_INVALID_ARGUMENT',
        `launchdAgentPlist program must be an absolute path such as "/Applications/Example.app/Contents/MacOS/relay" (got ${JSON.stringify(program)}); for a path inside the bundle use \`bundleProgram\`.`,
      );
    }
    return { key: 'Program', path: program };
  }
  const parts = typeof bundleProgram === 'string' ? bundleProgram.split('/') : [];
  if (
    typeof bundleProgram !== 'string' ||
    hasControl(bundleProgram) ||
    parts[0] !== 'Contents' ||
    parts.length < 2 ||
    parts.some((part) => part === '' || part === '.' || part === '..')
  ) {
    throw createError(
      'ERR_INVALID_ARGUMENT',
      `launchdAgentPlist bundleProgram must be a path relative to the app bundle, under Contents/, without "." or ".." parts, such as "Contents/MacOS/relay" (got ${JSON.stringify(bundleProgram)}).`,
    );
  }
  return { key: 'BundleProgram', path: bundleProgram };
}

function assertLabel(value: unknown, what: string): asserts value is string {
  if (!isValidLaunchdLabel(value)) {
    throw createError(
      'ERR_INVALID_ARGUMENT',
      `${JSON.stringify(value)} is not a valid launchd ${what}: use reverse-DNS, ASCII letters, digits and "-" in dot-separated parts, like "com.example.app.relay" (at most 255 characters).`,
    );
  }
}

function list(
  value: unknown,
  name: string,
  { allowEmptyItems = false }: { allowEmptyItems?: boolean } = {},
): string[] {
  if (!Array.isArray(value)) {
    throw createError(
      'ERR_INVALID_ARGUMENT',
      `launchdAgentPlist ${name} must be an array of strings.`,
    );
  }
  return value.map((item: unknown) => {
    if (typeof item !== 'string' || hasControl(item) || (!allowEmptyItems && item === '')) {
      throw createError(
        'ERR_INVALID_ARGUMENT',
        `launchdAgentPlist ${name} must hold ${allowEmptyItems ? '' : 'non-empty '}strings without control characters (got ${JSON.stringify(item)}).`,
      );
    }
    return item;
  });
}

function flag(value: unknown, name: string): string[] {
  if (value === undefined || value === true) return ['<true/>'];
  if (value === false) return ['<false/>'];
  throw createError(
    'ERR_INVALID_ARGUMENT',
    `launchdAgentPlist ${name} must be true or false (got ${JSON.stringify(value)}).`,
  );
}

/** `<key>` plus the value's lines, indented one level inside the enclosing dict. */
function entry(key: string, value: string[]): string[] {
  return [`\t<key>${escapeXml(key)}</key>`, ...value.map(indent)];
}

function indent(line: string): string {
  return `\t${line}`;
}

function string(value: string): string[] {
  return [`<string>${escapeXml(value)}</string>`];
}

function array(values: readonly string[]): string[] {
  return ['<array>', ...values.flatMap(string).map(indent), '</array>'];
}

/** C0 controls (tab, newline included) and DEL: none belongs in a label, path or argument, and most are not even legal XML 1.0. */
function hasControl(value: string): boolean {
  return [...value].some((char) => {
    const code = char.codePointAt(0) ?? 0;
    return code < 0x20 || code === 0x7f || code === 0xfffe || code === 0xffff;
  });
}

function escapeXml(value: string): string {
  return value.replaceAll('&', '&amp;').replaceAll('<', '&lt;').replaceAll('>', '&gt;');
}
