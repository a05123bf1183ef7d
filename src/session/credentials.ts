/**
 * Session credentials: a non-secret id of "the terminal session this process runs in" (Linux,
 * macOS) or "the process that invoked it" (Windows, and anywhere without a terminal). Grants
 * are keyed on it, so that approving one terminal window does not approve another.
 *
 * The server always derives the credential from the kernel-verified peer identity. A client may
 * compute its own for diagnostics, but the server never takes it from the wire.
 *
 * @module
 */

import type { ProcessDescription } from '../prompt/prompt-backend.js';
import type { PeerIdentity } from '../transport/transport.js';

/**
 * How wide a credential reaches: `terminal` covers every process in one terminal session
 * (subshells included); `process` covers one invoking process only (no terminal, or Windows).
 */
export type SessionScope = 'terminal' | 'process';

/** The server's verdict on which session a connection belongs to. */
export interface SessionCredential {
  /**
   * Opaque, stable id; equal for two connections exactly when they belong to the same session.
   * Not secret, and unique across reboots and pid/tty reuse (it includes a start time and, on
   * Linux, the boot id).
   */
  readonly id: string;
  /** How wide it reaches. */
  readonly scope: SessionScope;
  /** The process being authorized, as the person knows it, for the prompt. */
  readonly process: ProcessDescription;
}

/** Options for {@link SessionCredentialProvider.derive}. */
export interface DeriveCredentialOptions {
  signal?: AbortSignal;
}

/**
 * Derives a connection's session credential from its verified peer identity. The platform
 * modules provide the real ones; tests and embedders can supply their own.
 */
export interface SessionCredentialProvider {
  /**
   * @throws `ERR_PEER_UNKNOWN` when the peer cannot be placed in a session (it vanished, the
   * identity lacks a pid, …). The server treats that as a rejection: doubt is a denial.
   */
  derive(peer: PeerIdentity, options?: DeriveCredentialOptions): Promise<SessionCredential>;
}
