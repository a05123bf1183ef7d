/**
 * The group policy: the seed's Linux model, where the CLI is installed setgid to a dedicated
 * group and the app admits a process only when its effective gid — as the kernel recorded it at
 * `connect()` (`SO_PEERCRED`) — is that group's.
 *
 * @module
 */

import { readFile } from 'node:fs/promises';
import { createError } from '../errors.js';
import { createLog } from '../util/log.js';
import type { PeerPolicy, PolicyDecision } from './peer-policy.js';

const debug = createLog('bridgekeeper:policy');

/** One group of an `/etc/group` file, as glibc reads it. */
export interface GroupEntry {
  /** The group name. */
  readonly name: string;
  /** The numeric group id. */
  readonly gid: number;
  /** Users listed as members (4th field), in file order. */
  readonly members: readonly string[];
  /** 1-based line number, for messages. */
  readonly line: number;
  /**
   * Why another reader of the file (musl, shadow-utils, an older Bridgekeeper) may read this line
   * differently from glibc, which this entry follows; absent for a plain `name:password:gid:members`
   * line. {@link requireGroup} refuses a group whose line has any.
   */
  readonly quirks?: readonly string[];
}

/** Largest gid: `(gid_t)-1` is reserved as "no group". */
const MAX_GID = 0xffff_fffe;

/** `ULONG_MAX` on 64-bit Linux: what `strtoul` returns on overflow. */
const ULONG_MAX = 2n ** 64n - 1n;

/** C's `isspace()` in the C locale. */
function isCSpace(char: string | undefined): boolean {
  return (
    char === ' ' ||
    char === '\t' ||
    char === '\n' ||
    char === '\v' ||
    char === '\f' ||
    char === '\r'
  );
}

/** A C string: everything before the first NUL. */
function cString(text: string): string {
  const nul = text.indexOf('\0');
  return nul === -1 ? text : text.slice(0, nul);
}

/**
 * `strtoul(text, &end, 10)` as glibc does it (64-bit `unsigned long`): leading white space, an
 * optional sign (a `-` negates modulo 2^64), decimal digits; `ULONG_MAX` on overflow. `undefined`
 * when no digit was converted (`end == text`).
 */
function strtoul(text: string): { value: bigint; end: number } | undefined {
  const match = /^[ \t\n\v\f\r]*([+-]?)(\d+)/.exec(text);
  if (!match) return undefined;
  let value = BigInt(match[2]!);
  if (value > ULONG_MAX) value = ULONG_MAX;
  else if (match[1] === '-') value = (2n ** 64n - value) % 2n ** 64n;
  return { value, end: match[0].length };
}

/**
 * The line glibc's `__nss_readline` hands to the parser, or `undefined` for a line it skips
 * (blank, or a `#` comment after leading white space). It strips leading white space with a
 * `memmove` of `strlen` bytes that leaves the old tail in place, which matters only for a last
 * line without a newline; the parser then stops at the first newline or NUL.
 */
function glibcLine(raw: string, hasNewline: boolean): string | undefined {
  const buffer = hasNewline ? `${raw}\n` : raw;
  let start = 0;
  while (isCSpace(buffer[start])) start++;
  const first = buffer[start];
  if (first === undefined || first === '\0' || first === '#') return undefined;
  let text = buffer;
  if (start > 0) {
    const moved = cString(buffer.slice(start));
    text = moved + buffer.slice(moved.length);
  }
  text = cString(text);
  const newline = text.indexOf('\n');
  return newline === -1 ? text : text.slice(0, newline);
}

/** glibc's `parse_list` for the member field: `,`-separated, leading blanks skipped, empties dropped. */
function parseMembers(text: string): string[] {
  const members: string[] = [];
  let position = 0;
  while (position < text.length) {
    while (isCSpace(text[position])) position++;
    let end = text.indexOf(',', position);
    if (end === -1) end = text.length;
    if (end > position) members.push(text.slice(position, end));
    position = end + 1;
  }
  return members;
}

/** One line of a group file that glibc would hand to its parser. */
interface ScannedLine {
  readonly line: number;
  /** The name as glibc reads it (after leading white space, up to the first `:`). */
  readonly name: string;
  /** A NIS compat line (`+…` / `-…`), which `getgrnam` in `files` mode never returns. */
  readonly compat: boolean;
  /** The group glibc reads from it, or why glibc skips the line. */
  readonly result: { readonly entry: GroupEntry } | { readonly malformed: string };
}

/**
 * glibc's group line parser (`nss_files`/`fgetgrent`, glibc 2.36): `name:password:gid[:members]`
 * where the gid is read by `strtoul` and must fit 32 bits, the member field is the whole rest of
 * the line, and a missing member field is no member.
 */
function parseGroupLine(text: string, rawLine: string, line: number): ScannedLine {
  const colon = text.indexOf(':');
  const name = colon === -1 ? text : text.slice(0, colon);
  const compat = name.startsWith('+') || name.startsWith('-');
  const malformed = (why: string): ScannedLine => ({
    line,
    name,
    compat,
    result: { malformed: why },
  });
  let rest = colon === -1 ? '' : text.slice(colon + 1);
  if (compat && rest === '') {
    return { line, name, compat, result: { entry: { name, gid: 0, members: [], line } } };
  }
  const passwordEnd = rest.indexOf(':');
  rest = passwordEnd === -1 ? '' : rest.slice(passwordEnd + 1);
  if (passwordEnd === -1) return malformed('no gid field');
  const number = strtoul(rest);
  let gid: bigint;
  if (number === undefined) {
    // Compat lines may leave the gid empty (INT_FIELD_MAYBE_NULL), others may not.
    if (!compat || rest === '') {
      const field = rest.split(':')[0];
      return malformed(
        field === '' ? 'an empty gid field' : `the gid field "${field}" is not a number`,
      );
    }
    gid = 0n;
  } else {
    gid = number.value;
  }
  const end = number?.end ?? 0;
  const gidText = rest.slice(0, end);
  const after = rest[end];
  if (after !== undefined && after !== ':') {
    return malformed(`the gid field "${rest.split(':')[0]}" is not a number`);
  }
  if (gid > 0xffff_ffffn) return malformed(`gid ${gidText.trim()} does not fit 32 bits`);
  const memberText = after === ':' ? rest.slice(end + 1) : '';

  const quirks: string[] = [];
  if (isCSpace(rawLine[0])) {
    quirks.push('white space before the name, which glibc skips and musl and shadow-utils keep');
  }
  if (rawLine.includes('\0')) quirks.push('a NUL byte, where glibc stops reading the line');
  if (rawLine.includes('\r')) quirks.push('a carriage return (a CRLF file?)');
  if (name === '') quirks.push('an empty name');
  if (!/^\d+$/.test(gidText)) {
    quirks.push(`the gid is written "${gidText}", which glibc reads as ${gid} and musl skips`);
  }
  if (gid > BigInt(MAX_GID)) quirks.push(`gid ${gid} is (gid_t)-1, which no process can have`);
  if (after === undefined) {
    quirks.push('no member field (`name:x:gid` without the last `:`), a line musl skips');
  } else if (memberText.includes(':')) {
    quirks.push('more than four fields (a `:` in the member field), a line shadow-utils rejects');
  }
  const entry: GroupEntry = {
    name,
    gid: Number(gid),
    members: parseMembers(memberText),
    line,
    ...(quirks.length > 0 ? { quirks } : {}),
  };
  return { line, name, compat, result: { entry } };
}

/** Every line of a group file that glibc's parser sees, parsed or not. */
function scanGroupFile(text: string): ScannedLine[] {
  const scanned: ScannedLine[] = [];
  const lines = text.split('\n');
  for (let index = 0; index < lines.length; index++) {
    const raw = lines[index]!;
    const hasNewline = index < lines.length - 1;
    const content = glibcLine(raw, hasNewline);
    if (content === undefined) continue;
    scanned.push(parseGroupLine(content, raw, index + 1));
  }
  return scanned;
}

/**
 * Parses the text of an `/etc/group` file (`name:password:gid:member,member`) the way glibc does
 * (`fgetgrent`, and `getgrnam` with `group: files` in `nsswitch.conf`), so that a name resolves
 * here to the gid the rest of the system sees.
 *
 * Like glibc it skips blank lines, `#` comments (also after white space) and lines it cannot
 * parse (no gid field, a gid that is not a number or does not fit 32 bits), and it accepts what
 * glibc accepts: white space before the name, a gid written with white space or a `+` sign, a
 * line without the member field (`name:x:42`), a `:` inside the member field, a carriage return
 * kept in the last member. Such lines carry {@link GroupEntry.quirks}. NIS compat lines (`+`,
 * `+name`, `-name`, `+@netgroup`) are left out: `getgrnam` in `files` mode never returns them.
 * Duplicate names are all returned, in file order.
 *
 * @example
 * ```ts
 * parseGroupFile('root:x:0:\nmy-cli:x:4242:\n')[1]; // { name: 'my-cli', gid: 4242, members: [], line: 2 }
 * ```
 */
export function parseGroupFile(text: string): GroupEntry[] {
  const groups: GroupEntry[] = [];
  for (const scanned of scanGroupFile(text)) {
    if (!scanned.compat && 'entry' in scanned.result) groups.push(scanned.result.entry);
  }
  return groups;
}

/**
 * The first group named `name` in an `/etc/group` text, or `undefined`: what glibc's `getgrnam`
 * returns with `group: files`. Use {@link lookupGroup} to also learn whether that answer is
 * unambiguous.
 *
 * @example
 * ```ts
 * findGroup(readFileSync('/etc/group', 'utf8'), 'onepassword-cli')?.gid;
 * ```
 */
export function findGroup(text: string, name: string): GroupEntry | undefined {
  const matches = parseGroupFile(text).filter((group) => group.name === name);
  const first = matches[0];
  if (first && matches.length > 1) {
    debug(
      'group "%s" is defined %d times; getgrnam returns line %d (gid %d)',
      name,
      matches.length,
      first.line,
      first.gid,
    );
  }
  return first;
}

/** What {@link lookupGroup} found: the one clean definition of a group, or why there is none. */
export type GroupLookup =
  | { readonly found: true; readonly entry: GroupEntry }
  | { readonly found: false; readonly reason: string };

/**
 * Looks a group up in an `/etc/group` text strictly: it is found only when exactly one line
 * names it, that line is a plain `name:password:gid:members` line that glibc, musl and
 * shadow-utils all read alike (no {@link GroupEntry.quirks}), no NIS compat line names it
 * (`+name`, `-name`) and no compat wildcard (`+`, `+@netgroup`) comes before it (under
 * `nsswitch.conf`'s `compat` mode NIS could define it first). Anything else is a refusal with a
 * reason: when readers may disagree about a group's gid, no gid is safe to trust.
 *
 * @param file the file's path, for messages.
 *
 * @example
 * ```ts
 * lookupGroup('dup:x:4247\ndup:x:1002:\n', 'dup');
 * // { found: false, reason: 'group "dup" is defined 2 times in /etc/group (lines 1, 2): …' }
 * ```
 */
export function lookupGroup(text: string, name: string, file = '/etc/group'): GroupLookup {
  const scanned = scanGroupFile(text);
  const refuse = (reason: string): GroupLookup => ({ found: false, reason });

  const compatReference = scanned.find((line) => line.compat && line.name.slice(1) === name);
  if (compatReference) {
    return refuse(
      `${file} line ${compatReference.line} (${compatReference.name}) refers to group "${name}" in NIS (nsswitch "compat" mode), so its gid may come from elsewhere; remove that line and restart the app`,
    );
  }
  const definitions = scanned.filter((line) => !line.compat && line.name === name);
  if (definitions.length === 0) {
    debug('group "%s" is not in %s: every peer will be refused', name, file);
    return refuse(
      `group "${name}" does not exist in ${file}, so no process can be in it; create the group and restart the app`,
    );
  }
  if (definitions.length > 1) {
    return refuse(
      `group "${name}" is defined ${definitions.length} times in ${file} (lines ${definitions.map((line) => line.line).join(', ')}), so it is unclear which gid is meant; the group must be defined exactly once: remove the other lines and restart the app`,
    );
  }
  const definition = definitions[0]!;
  if ('malformed' in definition.result) {
    return refuse(
      `${file} line ${definition.line}, which defines group "${name}", is malformed (${definition.result.malformed}); glibc skips it and other readers may not, so it is unclear which gid is meant: fix it and restart the app`,
    );
  }
  const entry = definition.result.entry;
  if (entry.quirks) {
    return refuse(
      `${file} line ${entry.line}, which defines group "${name}", can be read more than one way (${entry.quirks.join('; ')}); write it as ${name}:x:<gid>: and restart the app`,
    );
  }
  const wildcard = scanned.find(
    (line) =>
      line.compat && line.line < entry.line && (line.name.length === 1 || line.name[1] === '@'),
  );
  if (wildcard) {
    return refuse(
      `${file} line ${wildcard.line} (${wildcard.name}) includes NIS groups before line ${entry.line} defines "${name}"; under nsswitch "compat" mode NIS could define the group first, so move the definition above it and restart the app`,
    );
  }
  return { found: true, entry };
}

/** A user of an `/etc/passwd` text whose primary gid is the one asked for. */
interface PrimaryGroupUser {
  readonly name: string;
  readonly line: number;
}

/**
 * Users whose primary gid (4th field of `/etc/passwd`) is `gid`, read leniently so that a line
 * any reader could take for that gid counts: white space and a sign around the number are
 * allowed, as glibc's `strtoul` allows them, and NIS compat lines are included.
 */
function usersWithPrimaryGid(text: string, gid: number): PrimaryGroupUser[] {
  const users: PrimaryGroupUser[] = [];
  const lines = text.split('\n');
  for (let index = 0; index < lines.length; index++) {
    const raw = lines[index]!;
    let start = 0;
    while (isCSpace(raw[start])) start++;
    const line = raw.slice(start);
    if (line === '' || line.startsWith('#')) continue;
    const fields = line.split(':');
    const field = fields[3];
    if (field === undefined) continue;
    const number = /^[ \t\n\v\f\r]*[+-]?\d+[ \t\n\v\f\r]*$/.test(field)
      ? strtoul(field)
      : undefined;
    if (number?.value === BigInt(gid)) users.push({ name: fields[0]!, line: index + 1 });
  }
  return users;
}

/** Options for {@link requireGroup}. */
export interface RequireGroupOptions {
  /** The group database to read a name from. Default `/etc/group`. */
  groupFile?: string;
  /** The user database, searched for users whose primary group is the group. Default `/etc/passwd`. */
  passwdFile?: string;
  /** Reads the group and passwd files (tests pass fixtures). Default: `fs.promises.readFile(path, 'utf8')`. */
  readFile?: (path: string) => Promise<string>;
}

type Resolution =
  | { readonly found: true; readonly gid: number }
  | {
      readonly found: false;
      readonly reason: string;
      /** A read error: not an answer, so the next check tries again. */
      readonly retry: boolean;
    };

/**
 * Admits only peers whose **effective gid** (`SO_PEERCRED`) is `group`'s: the model of a CLI
 * installed setgid to a dedicated group (`chgrp my-cli /usr/bin/my-cli && chmod g+s …`), which
 * only that binary's processes run with. This is the one policy here that separates two programs
 * of the same user, and only with a hardened setgid binary (inspector off, no extra Node options,
 * children started without the group: see docs/setgid-cli.md) — `allowExecutables` does not.
 *
 * A name is looked up in `/etc/group` — parsed as glibc parses it, no NSS — on the first check,
 * once; every later check reuses the result. **Every** peer is refused (with a reason, never a
 * throw) when the group does not exist there, when its definition is ambiguous — the name is
 * defined more than once, its line is malformed or can be read more than one way, or a NIS
 * compat line may define it (see {@link lookupGroup}) — or when a user's **primary** gid is the
 * group's (`/etc/passwd` field 4, searched for names and numeric gids alike): every process of
 * that user runs with that egid, so the group is not dedicated. Fix the files and restart the
 * app. A group that lives only in NIS/LDAP/sssd is not seen: pass its numeric gid instead. A read
 * error is also a refusal, and the next check reads again.
 *
 * The model holds only if nothing else can get that egid, and this policy checks only part of
 * that:
 * - members listed in `/etc/group` are only logged (debug `bridgekeeper:policy`): their
 *   `newgrp`/`sg` shells get the egid, so the group must have no members and no group password;
 * - users and groups from NIS/LDAP/sssd are not seen;
 * - a gid inside a range of `/etc/subgid` is reachable by that range's owner, who can map it
 *   into a user namespace with `newgidmap` and run anything with it (the kernel reports the
 *   mapped gid): keep the group's gid outside every subordinate range (system groups, below
 *   1000, are; `useradd` hands out ranges from 100000);
 * - only the CLI may be setgid to the group, and root can always get any gid.
 *
 * Supplementary groups are ignored on purpose — membership is not the test, running the setgid
 * binary is. A setgid process is not dumpable, so a non-root app cannot read its
 * `/proc/<pid>/exe`: do not combine this with `allowExecutables` unless the app runs as root.
 * Needs a platform with gids (not Windows).
 *
 * @param group the group's name (named `group:<name>` in events) or its numeric gid (`group:<gid>`).
 * @throws `ERR_INVALID_ARGUMENT` at construction for an empty name or a gid that is not an integer
 * in 0–4294967294. Never throws from a check.
 *
 * @example
 * ```ts
 * createServer({ app: 'my-agent', prompt, peerPolicies: [requireGroup('my-cli')] });
 * ```
 */
export function requireGroup(
  group: string | number,
  options: RequireGroupOptions = {},
): PeerPolicy {
  const groupFile = options.groupFile ?? '/etc/group';
  const passwdFile = options.passwdFile ?? '/etc/passwd';
  const read = options.readFile ?? ((path: string) => readFile(path, 'utf8'));
  if (typeof group === 'number') {
    if (!Number.isSafeInteger(group) || group < 0 || group > MAX_GID) {
      throw createError(
        'ERR_INVALID_ARGUMENT',
        `requireGroup needs a gid in 0–${MAX_GID} or a group name, not ${String(group)}.`,
      );
    }
  } else if (typeof group !== 'string' || group.length === 0 || /[:\n]/.test(group)) {
    throw createError(
      'ERR_INVALID_ARGUMENT',
      `requireGroup needs a group name (no ":" or newline) or a numeric gid, not ${JSON.stringify(group)}.`,
    );
  }
  const label = typeof group === 'number' ? `gid ${group}` : `group "${group}"`;

  /** Reads a file; a failure is a refusal to retry. */
  const readText = async (
    path: string,
    purpose: string,
  ): Promise<{ text: string } | { failure: Resolution }> => {
    try {
      const text = await read(path);
      if (typeof text !== 'string') throw new Error('the reader returned no text');
      return { text };
    } catch (error) {
      const code = (error as NodeJS.ErrnoException | undefined)?.code;
      return {
        failure: {
          found: false,
          retry: true,
          reason: `could not read ${path} to ${purpose} (${code ?? (error instanceof Error ? error.message : String(error))})`,
        },
      };
    }
  };

  const lookUp = async (): Promise<Resolution> => {
    let gid: number;
    if (typeof group === 'number') {
      gid = group;
    } else {
      const groups = await readText(groupFile, `look up group "${group}"`);
      if ('failure' in groups) return groups.failure;
      const lookup = lookupGroup(groups.text, group, groupFile);
      if (!lookup.found) return { found: false, retry: false, reason: lookup.reason };
      gid = lookup.entry.gid;
      if (lookup.entry.members.length > 0) {
        debug(
          'group "%s" has members (%s): their `newgrp %s` shells pass this policy too',
          group,
          lookup.entry.members.join(', '),
          group,
        );
      }
    }
    const passwd = await readText(passwdFile, `check that no user has ${label} as primary group`);
    if ('failure' in passwd) return passwd.failure;
    const users = usersWithPrimaryGid(passwd.text, gid);
    if (users.length > 0) {
      const named = users
        .slice(0, 3)
        .map((user) => `"${user.name}" (line ${user.line})`)
        .join(', ');
      const more = users.length > 3 ? ` and ${users.length - 3} more` : '';
      const subject = typeof group === 'number' ? `gid ${gid}` : `gid ${gid} of group "${group}"`;
      debug('%s is the primary group of %s%s: every peer will be refused', subject, named, more);
      return {
        found: false,
        retry: false,
        reason: `${subject} is the primary group of user ${named}${more} in ${passwdFile}: every process of ${users.length === 1 ? 'that user' : 'those users'} runs with it, so it is not a group dedicated to the CLI; give ${users.length === 1 ? 'the user' : 'them'} another primary group (or the CLI a dedicated group) and restart the app`,
      };
    }
    return { found: true, gid };
  };

  let cached: Promise<Resolution> | undefined;
  const resolve = (): Promise<Resolution> => {
    if (cached) return cached;
    const attempt = lookUp().catch(
      (error: unknown): Resolution => ({
        found: false,
        retry: true,
        reason: `could not look up ${label}: ${error instanceof Error ? error.message : String(error)}`,
      }),
    );
    cached = attempt;
    // A read error is not an answer: forget it, so the next check reads again. (Cleared after
    // the assignment above, whatever the reader did: a reader that throws synchronously must not
    // leave its failure cached.)
    void attempt.then((resolution) => {
      if (!resolution.found && resolution.retry && cached === attempt) cached = undefined;
    });
    return attempt;
  };

  return {
    name: `group:${group}`,
    async check(peer): Promise<PolicyDecision> {
      const resolution = await resolve();
      if (!resolution.found) return { allowed: false, reason: resolution.reason };
      if (peer.gid === undefined) {
        return { allowed: false, reason: 'the OS did not report the peer gid' };
      }
      if (peer.gid !== resolution.gid) {
        return {
          allowed: false,
          reason:
            typeof group === 'number'
              ? `peer gid ${peer.gid} is not gid ${resolution.gid}`
              : `peer gid ${peer.gid} is not the gid ${resolution.gid} of group "${group}"`,
        };
      }
      return { allowed: true };
    },
  };
}
