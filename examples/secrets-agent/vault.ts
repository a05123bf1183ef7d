/**
 * The reference app's data: accounts with display names and items of fields, in memory,
 * seeded from a JSON file or the built-in sample. A real app would keep these encrypted; the
 * point here is the authorization around them.
 */

import { readFile } from 'node:fs/promises';
import { HandlerError } from 'bridgekeeper';

export interface VaultAccount {
  id: string;
  displayName: string;
  items: Record<string, Record<string, string>>;
}

export interface VaultData {
  accounts: VaultAccount[];
}

/** A secret reference: `account/item/field`. */
export interface SecretRef {
  account: string;
  item: string;
  field: string;
}

const SEGMENT = /^[A-Za-z0-9._-]{1,128}$/;

/** Parses `account/item/field` (optionally prefixed `bk://`). */
export function parseSecretRef(text: string): SecretRef {
  const parts = text.replace(/^bk:\/\//, '').split('/');
  if (parts.length !== 3 || !parts.every((part) => SEGMENT.test(part))) {
    throw new HandlerError(
      'BAD_REFERENCE',
      `"${text}" is not a secret reference. Write account/item/field, e.g. work/db/password.`,
    );
  }
  const [account, item, field] = parts as [string, string, string];
  return { account, item, field };
}

export class Vault {
  readonly #accounts = new Map<string, VaultAccount>();

  constructor(data: VaultData) {
    if (!data || !Array.isArray(data.accounts)) {
      throw new Error('A vault file needs an "accounts" array.');
    }
    for (const account of data.accounts) {
      if (typeof account.id !== 'string' || !SEGMENT.test(account.id)) {
        throw new Error(`Account id ${JSON.stringify(account.id)} is not valid.`);
      }
      if (typeof account.displayName !== 'string' || account.displayName.length === 0) {
        throw new Error(`Account "${account.id}" needs a displayName.`);
      }
      this.#accounts.set(account.id, account);
    }
  }

  static async load(path?: string): Promise<Vault> {
    const file = path ?? new URL('./sample-vault.json', import.meta.url);
    return new Vault(JSON.parse(await readFile(file, 'utf8')) as VaultData);
  }

  /** The account, or a HandlerError the client sees as ACCOUNT_NOT_FOUND. */
  account(id: unknown): VaultAccount {
    const account = typeof id === 'string' ? this.#accounts.get(id) : undefined;
    if (!account) {
      throw new HandlerError(
        'ACCOUNT_NOT_FOUND',
        `There is no account "${String(id)}". List them with: bk-secrets accounts`,
      );
    }
    return account;
  }

  accounts(): Array<{ id: string; displayName: string }> {
    return [...this.#accounts.values()].map(({ id, displayName }) => ({ id, displayName }));
  }

  read(ref: SecretRef): string {
    const account = this.account(ref.account);
    const item = Object.hasOwn(account.items, ref.item) ? account.items[ref.item] : undefined;
    if (!item) {
      throw new HandlerError(
        'ITEM_NOT_FOUND',
        `Account "${account.id}" has no item "${ref.item}".`,
      );
    }
    const value = Object.hasOwn(item, ref.field) ? item[ref.field] : undefined;
    if (value === undefined) {
      throw new HandlerError(
        'FIELD_NOT_FOUND',
        `Item "${ref.item}" has no field "${ref.field}" (it has: ${Object.keys(item).join(', ')}).`,
      );
    }
    return value;
  }
}
