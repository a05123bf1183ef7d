/**
 * The group policy: the seed's Linux model, where the CLI is installed setgid to a dedicated
 * group and the app admits a process only when its effective gid — as the kernel recorded it at
 * `connect()` (`SO_PEERCRED`) — is that group's.
 *
 * @module
 */

import { readFile } from 'node:fs/promises';
import createDebug from 'debug';
import { createError } from '../errors.js';
import type { PeerPolicy, PolicyDecision } from './peer-policy.js';

const debug = createDebug('bridgekeeper:policy');

/** One group of an `/etc/group` file. */
export interface GroupEntry {
  /** The group name. */
  readonly name: string;
  /** The numeric group id. */
  readonly gid: number;
  /** Users listed as members (4th field), in file order. */
  readonly members: readonly string[];
  /** 1-based line number, for messages. */
  readonly line: number;
}

/** Largest gid: `(gid_t)-1` is reserved as "no group". */
const MAX_GID = 0xffff_fffe;

/**
 * Parses the text of an `/etc/group` file (`name:password:gid:member,member`).
 *
 * Lenient in what it skips, strict in what it keeps: blank lines, `#` comments, NIS compat lines
 * (`+`, `+name`, `-name`, `+@netgroup`: references to a directory this parser does not consult)
 * and malformed lines (not four fields, an empty name, a gid that is not a decimal number in
 * 0–4294967294) are skipped, never guessed at. Duplicate names are all returned in file order;
 * {@link findGroup} takes the first, as glibc's `getgrnam` does.
 *
 * @example
 * ```ts
 * parseGroupFile('root:x:0:\nmy-cli:x:4242:\n')[1]; // { name: 'my-cli', gid: 4242, members: [], line: 2 }
 * ```
 */
export function parseGroupFile(text: string): GroupEntry[] {
  const groups: GroupEntry[] = [];
  const lines = text.split('\n');
  for (let index = 0; index < lines.length; index++) {
    const line = (lines[index] ?? '').replace(/\r$/, '');
    if (line.trim() === '' || line.startsWith('#')) continue;
    if (line.startsWith('+') || line.startsWith('-')) continue;
    const fields = line.split(':');
    if (fields.length !== 4) continue;
    const [name, , gidText, memberText] = fields as [string, string, string, string];
    if (name === '' || /\s/.test(name)) continue;
    if (!/^\d{1,10}$/.test(gidText)) continue;
    const gid = Number(gidText);
    if (gid > MAX_GID) continue;
    const members = memberText === '' ? [] : memberText.split(',').filter((m) => m !== '');
    groups.push({ name, gid, members, line: index + 1 });
  }
  return groups;
}

/**
 * The first group named `name` in an `/etc/group` text, or `undefined`.
 *
 * @example
 * ```ts
 * findGroup(readFileSync('/etc/group', 'utf8'), 'onepassword-cli')?.gid;
 * ```
 */
export function findGroup(text: string, name: string): GroupEntry | undefined {
  const matches = parseGroupFile(text).filter((group) => group.name === name);
  const first = matches[0];
  if (first && matches.some((group) => group.gid !== first.gid)) {
    debug(
      'group "%s" is defined %d times with different gids; using line %d (gid %d), as getgrnam does',
      name,
      matches.length,
      first.line,
      first.gid,
    );
  }
  return first;
}

/** Options for {@link requireGroup}. */
export interface RequireGroupOptions {
  /** The group database to read a name from. Default `/etc/group`. */
  groupFile?: string;
  /** Reads the group file (tests pass fixtures). Default: `fs.promises.readFile(path, 'utf8')`. */
  readFile?: (path: string) => Promise<string>;
}

type Resolution =
  | { readonly found: true; readonly gid: number }
  | { readonly found: false; readonly reason: string };

/**
 * Admits only peers whose **effective gid** (`SO_PEERCRED`) is `group`'s: the model of a CLI
 * installed setgid to a dedicated group (`chgrp my-cli /usr/bin/my-cli && chmod g+s …`), which
 * only that binary's processes run with.
 *
 * A name is looked up in `/etc/group` — plain parsing, no NSS — on the first check, once; every
 * later check reuses the result. A group that does not exist there makes **every** peer fail
 * (with a reason naming the group) rather than throw; create it and restart the app. A group
 * that lives only in NIS/LDAP/sssd is not seen: pass its numeric gid instead. A read error (not
 * "no such group") is also a rejection, and the next check reads again.
 *
 * The model holds only if nothing else can get that egid: the group must have no members and
 * no group password (otherwise `newgrp`/`sg` give any of their shells the egid), and only the CLI
 * may be setgid to it. Supplementary groups are ignored on purpose — membership is not the
 * test, running the setgid binary is. A setgid process is not dumpable, so its executable is
 * unreadable to a non-root app: do not combine this with `allowExecutables` unless the app runs
 * as root. Needs a platform with gids (not Windows).
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
  const read = options.readFile ?? ((path: string) => readFile(path, 'utf8'));
  let resolve: () => Promise<Resolution>;
  if (typeof group === 'number') {
    if (!Number.isSafeInteger(group) || group < 0 || group > MAX_GID) {
      throw createError(
        'ERR_INVALID_ARGUMENT',
        `requireGroup needs a gid in 0–${MAX_GID} or a group name, not ${String(group)}.`,
      );
    }
    const resolution: Resolution = { found: true, gid: group };
    resolve = async () => resolution;
  } else {
    if (typeof group !== 'string' || group.length === 0 || /[:\n]/.test(group)) {
      throw createError(
        'ERR_INVALID_ARGUMENT',
        `requireGroup needs a group name (no ":" or newline) or a numeric gid, not ${JSON.stringify(group)}.`,
      );
    }
    let pending: Promise<Resolution> | undefined;
    resolve = () => {
      pending ??= (async (): Promise<Resolution> => {
        let text: string;
        try {
          text = await read(groupFile);
        } catch (error) {
          // Not cached: a transient read error must not lock everyone out until a restart.
          pending = undefined;
          const code = (error as NodeJS.ErrnoException | undefined)?.code;
          return {
            found: false,
            reason: `could not read ${groupFile} to look up group "${group}" (${code ?? (error instanceof Error ? error.message : String(error))})`,
          };
        }
        const entry = findGroup(text, group);
        if (!entry) {
          debug('group "%s" is not in %s: every peer will be refused', group, groupFile);
          return {
            found: false,
            reason: `group "${group}" does not exist in ${groupFile}, so no process can be in it; create the group and restart the app`,
          };
        }
        if (entry.members.length > 0) {
          debug(
            'group "%s" has members (%s): their `newgrp %s` shells pass this policy too',
            group,
            entry.members.join(', '),
            group,
          );
        }
        return { found: true, gid: entry.gid };
      })();
      return pending;
    };
  }
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
