/**
 * Windows peer policies: the peer runs as the same user (its token's SID), and the peer's
 * executable carries a valid Authenticode signature from a configured publisher. Both work in
 * either direction: on the server for clients (`peerPolicies`), on the client for the server
 * (`serverPolicies`).
 *
 * @module
 */

import { win32 } from 'node:path';
import { createError, errorMessage } from '../errors.js';
import type { PeerIdentity } from '../transport/transport.js';
import { createLog } from '../util/log.js';
import type { PeerPolicy, PolicyDecision } from './peer-policy.js';

const debug = createLog('bridgekeeper:policy');

/**
 * What `WinVerifyTrust` said about a file: `status` 0 (signed, intact, trusted) or the HRESULT,
 * and the signer's subject name when trusted. The same shape as the Windows bindings'
 * `SignatureCheck`.
 */
export interface AuthenticodeCheck {
  readonly status: number;
  readonly signer?: string;
}

/**
 * The part of the Windows bindings (`Win32Bindings` from the Windows platform module) these
 * policies use. Declared here, structurally, so that importing the package root never reaches
 * the platform module.
 */
export interface WindowsPolicyBindings {
  /** The string SID of this process's user. */
  processUserSid(process: 'self'): string;
  /**
   * `WinVerifyTrust` on a file, off the JS thread; rejects on `signal` (`ERR_ABORTED` /
   * `ERR_TIMEOUT`).
   */
  verifySignature(path: string, options?: { signal?: AbortSignal }): Promise<AuthenticodeCheck>;
}

/** The native bindings, loaded on first use so that importing the package loads no native code. */
async function loadBindings(
  given: WindowsPolicyBindings | undefined,
): Promise<WindowsPolicyBindings> {
  if (given !== undefined) return given;
  // loadWin32Bindings loads once (and tries again after a failure).
  return (await import('../platform/win32/bindings.js')).loadWin32Bindings();
}

const ALLOW: PolicyDecision = Object.freeze({ allowed: true });

function reject(reason: string): PolicyDecision {
  return { allowed: false, reason };
}

/** A string SID: `S-1-<authority>-<sub>…`. */
const SID_PATTERN = /^S-1-\d+(-\d+)+$/i;

/** Options for {@link sameUserSid}. */
export interface SameUserSidOptions {
  /** The SID peers must run as. Default: this process's user (its token's `TokenUser`). */
  readonly sid?: string;
  /** Native bindings (tests pass fakes). Default: loaded on the first check. */
  readonly bindings?: WindowsPolicyBindings;
}

/**
 * Admits only processes that run as the same Windows user as this process: the SID of the
 * peer's token (`PeerIdentity.sid`, read by the platform module at connect) equals ours. The
 * Windows counterpart of `sameUser()`, which compares uids and so refuses everyone on
 * Windows. A peer whose SID Windows did not report is refused.
 *
 * On the server it belongs first in the policy list (the server's default on Windows); on the
 * client, in `serverPolicies`, it refuses a pipe served by another user's process before
 * anything is sent.
 *
 * @throws `ERR_INVALID_ARGUMENT` at construction when `sid` is not a string SID. Never throws
 * from a check: a failure to read our own SID refuses the peer.
 *
 * @example
 * ```ts
 * createServer({ app: 'my-agent', prompt, peerPolicies: [sameUserSid()] });
 * ```
 */
export function sameUserSid(options: SameUserSidOptions = {}): PeerPolicy {
  if (options.sid !== undefined && !SID_PATTERN.test(options.sid)) {
    throw createError(
      'ERR_INVALID_ARGUMENT',
      `sameUserSid: ${JSON.stringify(options.sid)} is not a SID (S-1-5-21-…).`,
    );
  }
  let expected: string | undefined = options.sid?.toUpperCase();
  return {
    name: 'same-user',
    async check(peer) {
      if (expected === undefined) {
        try {
          const bindings = await loadBindings(options.bindings);
          expected = bindings.processUserSid('self').toUpperCase();
        } catch (error) {
          debug('sameUserSid: cannot read our own SID: %O', error);
          return reject(`this process's user SID could not be read (${errorMessage(error)})`);
        }
      }
      if (typeof peer.sid !== 'string' || !SID_PATTERN.test(peer.sid)) {
        return reject('Windows did not report the peer user SID');
      }
      if (peer.sid.toUpperCase() !== expected) {
        return reject(`the peer runs as ${peer.sid}, not as this user (${expected})`);
      }
      return ALLOW;
    },
  };
}

/** Which publishers are accepted: one name, a list, or an anchored pattern. */
export type PublisherMatcher = string | readonly string[] | RegExp;

/** Options for {@link requireAuthenticode}. */
export interface RequireAuthenticodeOptions {
  /**
   * The accepted signer: the signing certificate's subject name as Windows shows it
   * (`CertGetNameStringW` simple name, e.g. `OpenJS Foundation`), compared exactly; a list of
   * such names; or a RegExp, which must be anchored (`^…$`) so that `/Contoso/` cannot admit
   * "Not Contoso Ltd".
   */
  readonly publisher: PublisherMatcher;
  /** Native bindings (tests pass fakes). Default: loaded on the first check. */
  readonly bindings?: WindowsPolicyBindings;
  /** Decisions remembered, per process instance (least recently used go first). Default 256. */
  readonly maxCached?: number;
  /**
   * How long one signature check may take, in milliseconds, before the peer is refused (a file
   * on a slow or unreachable network share). Default 10 000.
   */
  readonly timeoutMs?: number;
}

const DEFAULT_MAX_CACHED = 256;
const DEFAULT_TIMEOUT_MS = 10_000;

/** HRESULTs `WinVerifyTrust` returns, with what they mean for a person. */
const TRUST_FAILURES: ReadonlyMap<number, string> = new Map([
  [0x800b0100, 'is not signed'],
  [0x80096010, 'was changed after it was signed'],
  [0x800b0004, 'is signed, but by a publisher Windows does not trust'],
  [0x800b0109, 'is signed by a certificate that chains to a root Windows does not trust'],
  [0x800b010c, 'is signed with a certificate that was revoked'],
  [0x800b0101, 'is signed with a certificate that expired (and has no valid timestamp)'],
  [0x800b0111, 'is signed by a publisher this computer explicitly distrusts'],
  [0x80096019, 'is signed with a certificate not valid for code signing'],
  [2, 'was not found on disk'],
  [3, 'was not found on disk'],
  [5, 'could not be read (access denied)'],
]);

function hex(status: number): string {
  return `0x${(status >>> 0).toString(16).padStart(8, '0')}`;
}

function compilePublisher(publisher: PublisherMatcher): {
  test: (signer: string) => boolean;
  label: string;
} {
  if (typeof publisher === 'string') {
    if (publisher.trim() === '') {
      throw createError('ERR_INVALID_ARGUMENT', 'requireAuthenticode needs a non-empty publisher.');
    }
    return { test: (signer) => signer === publisher, label: JSON.stringify(publisher) };
  }
  if (publisher instanceof RegExp) {
    const { source } = publisher;
    if (!source.startsWith('^') || !source.endsWith('$') || source.endsWith('\\$')) {
      throw createError(
        'ERR_INVALID_ARGUMENT',
        `requireAuthenticode: the publisher pattern ${String(publisher)} must be anchored (^…$), or it admits any signer whose name merely contains it.`,
      );
    }
    if (publisher.flags.includes('m')) {
      throw createError(
        'ERR_INVALID_ARGUMENT',
        `requireAuthenticode: the publisher pattern ${String(publisher)} must not use the m flag: ^ and $ would then match at line breaks.`,
      );
    }
    // Wrapped as ^(?:…)$ so that a top-level alternation (/^Contoso Ltd|Contoso Inc$/) anchors
    // every branch at both ends; a fresh copy without g/y, which keep state between tests.
    const pattern = new RegExp(`^(?:${source})$`, publisher.flags.replace(/[gy]/g, ''));
    return { test: (signer) => pattern.test(signer), label: String(pattern) };
  }
  if (Array.isArray(publisher) && publisher.length > 0) {
    const names = new Set<string>();
    for (const name of publisher) {
      if (typeof name !== 'string' || name.trim() === '') {
        throw createError(
          'ERR_INVALID_ARGUMENT',
          `requireAuthenticode: publisher names must be non-empty strings, not ${JSON.stringify(name)}.`,
        );
      }
      names.add(name);
    }
    return {
      test: (signer) => names.has(signer),
      label: [...names].map((name) => JSON.stringify(name)).join(' or '),
    };
  }
  throw createError(
    'ERR_INVALID_ARGUMENT',
    'requireAuthenticode needs { publisher }: a signer name, a list of names, or an anchored RegExp.',
  );
}

/**
 * Runs `run` with a signal that aborts after `timeoutMs`, and resolves `'timed out'` then even
 * when `run` ignores the signal (a native call cannot be interrupted).
 */
function withTimeout<T>(
  run: (signal: AbortSignal) => Promise<T>,
  timeoutMs: number,
): Promise<T | 'timed out'> {
  const controller = new AbortController();
  let timer: NodeJS.Timeout | undefined;
  const expired = new Promise<'timed out'>((resolve) => {
    timer = setTimeout(() => {
      resolve('timed out');
      controller.abort(createError('ERR_TIMEOUT', `Timed out after ${timeoutMs} ms.`));
    }, timeoutMs);
  });
  let running: Promise<T>;
  try {
    running = run(controller.signal);
  } catch (error) {
    running = Promise.reject(error);
  }
  // A rejection that loses the race (the abort after the timeout) is not unhandled.
  running.catch(() => {});
  return Promise.race([running, expired]).finally(() => clearTimeout(timer));
}

/**
 * Admits only peers whose executable carries a valid Authenticode signature from the configured
 * publisher: `WinVerifyTrust` (no UI, no revocation check: that needs the network) on the image path
 * Windows reported for the peer (`PeerIdentity.executable`) must return 0 — signed, intact, and
 * chaining to a root this computer trusts — **and** the signing certificate's subject name must
 * match `publisher`. Anything else refuses, with a reason that says what failed: not signed,
 * changed since it was signed, an untrusted certificate, another publisher, or an error (fail
 * closed). System programs signed through a catalog (cmd.exe, powershell.exe) have no embedded
 * signature and are reported as not signed.
 *
 * Use it on the server for clients and on the client for the server (`serverPolicies`), after
 * {@link sameUserSid}.
 *
 * **What it checks is the file at the path the process was started from**, at the time of the
 * check, not the image mapped in the process: a program of the same user can run one image while
 * a signed file sits at its path (renaming, process herpaderping or ghosting), and the pid itself
 * is not an identity against same-user code on Windows (docs/security.md, Windows). Install the
 * signed programs where the user cannot write (`C:\Program Files`), and treat this, like the
 * executable policy on Linux, as a statement of which program is expected, not as a wall between
 * programs of the same user. Name your own publisher: a general one such as the OpenJS
 * Foundation (node.exe) admits every script the user runs with it. The subject name is not
 * unique across certificate holders in principle; a CA validated it for the signing certificate.
 *
 * Cost: `WinVerifyTrust` hashes the whole file (hundreds of ms for a large binary such as
 * node.exe). It runs on a libuv worker thread, so the event loop stays responsive and
 * concurrent checks run in parallel; a check that takes longer than `timeoutMs` (default 10 s,
 * e.g. an executable on an unreachable network share) refuses the peer, while the native call
 * finishes in the background (it holds one libuv worker thread until then). Decisions are
 * cached per process instance (pid + creation time + path; `maxCached`, least recently used
 * first), which is exact: a process's image never changes. A new process of the same program
 * is checked again. Errors and timeouts are not cached.
 *
 * @throws `ERR_INVALID_ARGUMENT` at construction for a missing or empty publisher, an
 * unanchored pattern, or a bad `maxCached` / `timeoutMs`. Never throws from a check.
 *
 * @example
 * ```ts
 * const client = await connect({
 *   app: 'my-agent',
 *   serverPolicies: [sameUserSid(), requireAuthenticode({ publisher: 'Contoso Ltd' })],
 * });
 * ```
 */
export function requireAuthenticode(options: RequireAuthenticodeOptions): PeerPolicy {
  if (typeof options !== 'object' || options === null) {
    throw createError(
      'ERR_INVALID_ARGUMENT',
      'requireAuthenticode needs { publisher }: the name on the signing certificate.',
    );
  }
  const matcher = compilePublisher(options.publisher);
  const maxCached = options.maxCached ?? DEFAULT_MAX_CACHED;
  if (!Number.isSafeInteger(maxCached) || maxCached < 0) {
    throw createError(
      'ERR_INVALID_ARGUMENT',
      `requireAuthenticode: maxCached must be a non-negative integer, not ${String(maxCached)}.`,
    );
  }
  const timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  if (typeof timeoutMs !== 'number' || !Number.isFinite(timeoutMs) || timeoutMs <= 0) {
    throw createError(
      'ERR_INVALID_ARGUMENT',
      `requireAuthenticode: timeoutMs must be a positive number of milliseconds, not ${String(timeoutMs)}.`,
    );
  }
  const cache = new Map<string, PolicyDecision>();
  const remember = (key: string, decision: PolicyDecision): PolicyDecision => {
    if (maxCached === 0) return decision;
    cache.delete(key);
    cache.set(key, decision);
    if (cache.size > maxCached) {
      const oldest = cache.keys().next().value;
      if (oldest !== undefined) cache.delete(oldest);
    }
    return decision;
  };

  const decide = (path: string, check: AuthenticodeCheck): PolicyDecision => {
    const status = check.status >>> 0;
    if (status !== 0) {
      const what =
        TRUST_FAILURES.get(status) ?? `failed Authenticode verification (${hex(status)})`;
      return reject(`its executable ${path} ${what}`);
    }
    if (typeof check.signer !== 'string' || check.signer === '') {
      return reject(`Windows reported no signer name for ${path}`);
    }
    if (!matcher.test(check.signer)) {
      return reject(`${path} is signed by "${check.signer}", not by ${matcher.label}`);
    }
    return ALLOW;
  };

  return {
    name: `authenticode:${matcher.label}`,
    async check(peer: PeerIdentity) {
      const path = peer.executable;
      if (typeof path !== 'string' || path === '') {
        return reject("Windows did not report the peer's executable");
      }
      if (!win32.isAbsolute(path) || path.includes('\0')) {
        return reject(`the peer's executable path ${JSON.stringify(path)} is not absolute`);
      }
      const key =
        peer.pid !== undefined && peer.startTime !== undefined
          ? `${peer.pid}\0${peer.startTime}\0${path}`
          : undefined;
      const cached = key === undefined ? undefined : cache.get(key);
      if (cached !== undefined && key !== undefined) return remember(key, cached);
      let check: AuthenticodeCheck | 'timed out';
      try {
        const bindings = await loadBindings(options.bindings);
        check = await withTimeout(
          (signal) => bindings.verifySignature(path, { signal }),
          timeoutMs,
        );
      } catch (error) {
        debug('requireAuthenticode: verifying %s failed: %O', path, error);
        return reject(`the signature of ${path} could not be checked (${errorMessage(error)})`);
      }
      if (check === 'timed out') {
        debug('requireAuthenticode: verifying %s timed out after %d ms', path, timeoutMs);
        return reject(
          `the signature check of ${path} timed out after ${timeoutMs} ms (is the file on a slow or unreachable drive?)`,
        );
      }
      if (typeof check !== 'object' || check === null || typeof check.status !== 'number') {
        return reject(`the signature check of ${path} gave no result`);
      }
      const decision = decide(path, check);
      debug('requireAuthenticode: %s → %s', path, decision.allowed ? 'allowed' : 'refused');
      return key === undefined ? decision : remember(key, decision);
    },
  };
}
