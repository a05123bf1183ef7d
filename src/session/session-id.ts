/**
 * Pieces every platform's session-credential provider shares: how a session id is made from
 * its facts, the cache of host names per session, and failing closed.
 *
 * @module
 * @internal
 */

import { createHash } from 'node:crypto';
import { BridgekeeperError, PeerError } from '../errors.js';

/** `ERR_PEER_UNKNOWN`: the peer cannot be placed in a session (fail closed). */
export function peerUnknown(message: string, cause?: unknown): PeerError {
  return new PeerError('ERR_PEER_UNKNOWN', message, cause === undefined ? {} : { cause });
}

/**
 * What deriving a session throws: a peer error or an abort as it is, anything else (an OS call
 * that failed) as `ERR_PEER_UNKNOWN` with it as the cause — never a session on doubt.
 */
export function failClosed(pid: number | undefined, error: unknown): BridgekeeperError {
  if (error instanceof PeerError) return error;
  if (
    error instanceof BridgekeeperError &&
    (error.code === 'ERR_ABORTED' || error.code === 'ERR_TIMEOUT')
  ) {
    return error;
  }
  return peerUnknown(`Could not place the client process (pid ${pid}) in a session.`, error);
}

/**
 * A session id: `<prefix>:` + the first 32 hex digits of the SHA-256 of the domain, prefix and
 * fields. The raw fields (tty, pids, start times, boot id, uid or SID) stay out of the id.
 *
 * Written into one buffer and read back as one flat string: a slice of the hex digest, or
 * `${prefix}:${hex}`, would be a V8 sliced or cons string keeping its parts alive (~100 bytes
 * more) for as long as a grant holds the id.
 */
export function hashSessionId(
  domain: string,
  prefix: string,
  fields: readonly (string | number)[],
): string {
  const digest = createHash('sha256')
    .update([domain, prefix, ...fields.map(String)].join('\0'))
    .digest();
  const id = Buffer.allocUnsafe(prefix.length + 1 + 32);
  id.write(`${prefix}:`, 0, 'latin1');
  id.write(digest.toString('hex', 0, 16), prefix.length + 1, 'latin1');
  return id.toString('latin1');
}

/**
 * Host names by session id. The id pins the session's anchor (terminal and leader, or the
 * invoking process) with its start time, so the walk up the process tree that names the host —
 * the costliest part of placing a connection — gives the same answer for every connection of a
 * session. Bounded; the least recently used goes first.
 */
export class HostCache {
  static readonly LIMIT = 256;
  readonly #hosts = new Map<string, string>();

  get(id: string): string | undefined {
    const host = this.#hosts.get(id);
    if (host !== undefined) {
      // Most recently used last, so the oldest goes first when full.
      this.#hosts.delete(id);
      this.#hosts.set(id, host);
    }
    return host;
  }

  /**
   * Describes the process of session `id` with `describe`, which is given the host already known
   * for that session (if any) so it can skip the walk that finds it; remembers the host the
   * description names when it was not known.
   */
  async describe<D extends { readonly host: string }>(
    id: string,
    describe: (knownHost: string | undefined) => D | Promise<D>,
  ): Promise<D> {
    const knownHost = this.get(id);
    const description = await describe(knownHost);
    if (knownHost === undefined) this.set(id, description.host);
    return description;
  }

  set(id: string, host: string): void {
    this.#hosts.set(id, host);
    if (this.#hosts.size > HostCache.LIMIT) {
      const oldest = this.#hosts.keys().next().value;
      if (oldest !== undefined) this.#hosts.delete(oldest);
    }
  }
}
