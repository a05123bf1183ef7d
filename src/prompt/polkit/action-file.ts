/**
 * The polkit action file an app installs so that the polkit backend can ask the person: one
 * action, whose message names the account and the process (`$(account)`, `$(process)`), whose
 * defaults ask the person to authenticate as themselves, and whose owner annotation lets the
 * app's own (non-root) user pass those details to polkit.
 *
 * @module
 */

import { createError } from '../../errors.js';

/** Where polkit reads action files from; distribution packages install them here. */
export const POLKIT_ACTIONS_DIRECTORY = '/usr/share/polkit-1/actions';

/** The message the person sees by default; polkit fills in `$(account)` and `$(process)` from the backend's details. */
export const DEFAULT_POLKIT_MESSAGE = 'Authentication is required to let $(process) use $(account)';

/**
 * What polkit does for a subject that no rule decided, per kind of session. Only the values that
 * ask someone (or refuse) are accepted: `yes` would grant without a prompt, and the `_keep` forms
 * make polkit remember an approval for the process for minutes — for every account, since the
 * account is only a detail — which would bypass Bridgekeeper's per-(session, account) grants.
 */
export type PolkitImplicitAuthorization = 'auth_self' | 'auth_admin' | 'no';

/** Options for {@link polkitActionFile}. */
export interface PolkitActionFileOptions {
  /** The action id, e.g. `com.example.secrets-agent.use-account`: lowercase letters, digits, `.` and `-`, with at least one `.`. */
  actionId: string;
  /**
   * The user (or users) the app runs as: names, uids, or `unix-user:NAME`. polkit lets only
   * root and an action's owners pass details (the account and process in the message) and
   * check processes of other users. polkit 122 compares owners with the caller's user only, so
   * `unix-group:` entries would be ignored; they are refused here.
   */
  owner: string | readonly string[];
  /** The vendor shown by some agents. Default `Bridgekeeper app`. */
  vendor?: string;
  /** The vendor's web site. */
  vendorUrl?: string;
  /** A short description of the action (`pkaction` shows it). Default `Use an account of the app`. */
  description?: string;
  /** The message the person sees; may use `$(account)` and `$(process)`. Default {@link DEFAULT_POLKIT_MESSAGE}. */
  message?: string;
  /** A freedesktop icon name for the dialog. */
  iconName?: string;
  /** Per kind of session; each defaults to `auth_self` (the person's own password or fingerprint). */
  defaults?: {
    allowAny?: PolkitImplicitAuthorization;
    allowInactive?: PolkitImplicitAuthorization;
    allowActive?: PolkitImplicitAuthorization;
  };
}

const ACTION_ID = /^[a-z0-9]+(?:[.-][a-z0-9]+)*$/;
const USER_NAME = /^[A-Za-z_][A-Za-z0-9_.-]{0,31}\$?$/;
const UID = /^\d{1,10}$/;
const IMPLICIT: ReadonlySet<string> = new Set(['auth_self', 'auth_admin', 'no']);

/**
 * True when `actionId` is an id polkit accepts (lowercase ASCII letters, digits, `.` and `-`,
 * at most 255 characters) and is namespaced (has a `.`).
 */
export function isValidPolkitActionId(actionId: unknown): actionId is string {
  return (
    typeof actionId === 'string' &&
    actionId.length <= 255 &&
    actionId.includes('.') &&
    ACTION_ID.test(actionId)
  );
}

/**
 * Where the action file for `actionId` belongs: `/usr/share/polkit-1/actions/<actionId>.policy`.
 *
 * @throws `ERR_INVALID_ARGUMENT` for an id polkit would not accept.
 *
 * @example
 * ```ts
 * polkitActionFilePath('com.example.secrets-agent.use-account');
 * // '/usr/share/polkit-1/actions/com.example.secrets-agent.use-account.policy'
 * ```
 */
export function polkitActionFilePath(actionId: string): string {
  assertActionId(actionId);
  return `${POLKIT_ACTIONS_DIRECTORY}/${actionId}.policy`;
}

/**
 * Generates the text of a polkit action file (`.policy` XML) for the polkit prompt backend.
 * Install it as {@link polkitActionFilePath}`(actionId)`, owned by root, mode 0644; polkitd
 * picks it up without a restart.
 *
 * @throws `ERR_INVALID_ARGUMENT` for an invalid action id, a missing or invalid owner (or a
 * `unix-group:` owner, which polkit ignores), an empty message, or a default that would grant
 * without asking (`yes`, `*_keep`).
 *
 * @example
 * ```ts
 * import { writeFileSync } from 'node:fs';
 * import { polkitActionFile, polkitActionFilePath } from 'bridgekeeper';
 *
 * const actionId = 'com.example.secrets-agent.use-account';
 * writeFileSync(
 *   polkitActionFilePath(actionId),
 *   polkitActionFile({ actionId, owner: 'alice', vendor: 'Example Secrets' }),
 *   { mode: 0o644 },
 * );
 * ```
 */
export function polkitActionFile(options: PolkitActionFileOptions): string {
  if (typeof options !== 'object' || options === null) {
    throw createError(
      'ERR_INVALID_ARGUMENT',
      'polkitActionFile(options) needs { actionId, owner }.',
    );
  }
  assertActionId(options.actionId);
  const owners = ownerIdentities(options.owner);
  const vendor = text(options.vendor ?? 'Bridgekeeper app', 'vendor');
  const description = text(options.description ?? 'Use an account of the app', 'description');
  const message = text(options.message ?? DEFAULT_POLKIT_MESSAGE, 'message');
  const defaults = options.defaults ?? {};
  const allowAny = implicit(defaults.allowAny, 'allowAny');
  const allowInactive = implicit(defaults.allowInactive, 'allowInactive');
  const allowActive = implicit(defaults.allowActive, 'allowActive');
  const lines = [
    '<?xml version="1.0" encoding="UTF-8"?>',
    '<!DOCTYPE policyconfig PUBLIC "-//freedesktop//DTD PolicyKit Policy Configuration 1.0//EN"',
    ' "http://www.freedesktop.org/standards/PolicyKit/1/policyconfig.dtd">',
    `<!-- Generated by Bridgekeeper's polkitActionFile(). Install as ${POLKIT_ACTIONS_DIRECTORY}/${options.actionId}.policy (root, 0644). -->`,
    '<policyconfig>',
    `  <vendor>${escapeXml(vendor)}</vendor>`,
  ];
  if (options.vendorUrl !== undefined) {
    lines.push(`  <vendor_url>${escapeXml(text(options.vendorUrl, 'vendorUrl'))}</vendor_url>`);
  }
  lines.push(
    `  <action id="${options.actionId}">`,
    `    <description>${escapeXml(description)}</description>`,
    `    <message>${escapeXml(message)}</message>`,
  );
  if (options.iconName !== undefined) {
    lines.push(`    <icon_name>${escapeXml(text(options.iconName, 'iconName'))}</icon_name>`);
  }
  lines.push(
    '    <defaults>',
    `      <allow_any>${allowAny}</allow_any>`,
    `      <allow_inactive>${allowInactive}</allow_inactive>`,
    `      <allow_active>${allowActive}</allow_active>`,
    '    </defaults>',
    // Lets the app's (non-root) user pass the details that fill in $(account) and $(process).
    `    <annotate key="org.freedesktop.policykit.owner">${owners.join(' ')}</annotate>`,
    '  </action>',
    '</policyconfig>',
    '',
  );
  return lines.join('\n');
}

function assertActionId(actionId: unknown): asserts actionId is string {
  if (!isValidPolkitActionId(actionId)) {
    throw createError(
      'ERR_INVALID_ARGUMENT',
      `${JSON.stringify(actionId)} is not a polkit action id: use lowercase letters, digits, "." and "-", namespaced like "com.example.app.use-account" (at most 255 characters).`,
    );
  }
}

function ownerIdentities(owner: unknown): string[] {
  const entries = typeof owner === 'string' ? [owner] : Array.isArray(owner) ? owner : [];
  if (entries.length === 0) {
    throw createError(
      'ERR_INVALID_ARGUMENT',
      'polkitActionFile needs `owner`: the user the app runs as (a name or uid). Without it polkit refuses the details that name the account and the process in the prompt.',
    );
  }
  return entries.map((entry: unknown) => {
    if (typeof entry !== 'string') {
      throw createError('ERR_INVALID_ARGUMENT', 'Each polkit owner must be a string.');
    }
    if (entry.startsWith('unix-group:') || entry.startsWith('unix-netgroup:')) {
      throw createError(
        'ERR_INVALID_ARGUMENT',
        `polkit owner "${entry}": polkit compares action owners with the calling user only, so a group owner would be ignored. Name the app's user (or list each user) instead.`,
      );
    }
    const name = entry.startsWith('unix-user:') ? entry.slice('unix-user:'.length) : entry;
    if (!USER_NAME.test(name) && !UID.test(name)) {
      throw createError(
        'ERR_INVALID_ARGUMENT',
        `polkit owner ${JSON.stringify(entry)} is neither a user name nor a uid.`,
      );
    }
    return `unix-user:${name}`;
  });
}

function implicit(value: unknown, name: string): PolkitImplicitAuthorization {
  if (value === undefined) return 'auth_self';
  if (typeof value === 'string' && IMPLICIT.has(value)) return value as PolkitImplicitAuthorization;
  throw createError(
    'ERR_INVALID_ARGUMENT',
    `polkit defaults.${name} must be 'auth_self', 'auth_admin' or 'no' (got ${JSON.stringify(value)}): 'yes' would grant without asking, and the '_keep' forms let polkit reuse one approval for every account for minutes.`,
  );
}

function text(value: unknown, name: string): string {
  // Control characters have no business in a dialog, and a newline could fake extra lines.
  if (
    typeof value !== 'string' ||
    value.trim() === '' ||
    [...value].some((char) => (char.codePointAt(0) ?? 0) < 0x20 || char === '\u007f')
  ) {
    throw createError(
      'ERR_INVALID_ARGUMENT',
      `polkitActionFile ${name} must be a non-empty single line of text.`,
    );
  }
  return value;
}

function escapeXml(value: string): string {
  return value
    .replaceAll('&', '&amp;')
    .replaceAll('<', '&lt;')
    .replaceAll('>', '&gt;')
    .replaceAll('"', '&quot;')
    .replaceAll("'", '&apos;');
}
