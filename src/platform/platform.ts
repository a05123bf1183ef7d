/**
 * What the server and client need from the operating system, behind one small interface. Each
 * OS module under `src/platform/<os>/` implements it; only those modules (their `bindings.ts`)
 * load native code, and only when first used.
 *
 * @module
 */

import { createError } from '../errors.js';
import type { PeerPolicy } from '../policy/peer-policy.js';
import type { SessionCredentialProvider } from '../session/credentials.js';
import type { PeerIdentity, Transport, TransportListener } from '../transport/transport.js';
import { loadOnce } from '../util/load-once.js';

/** The OS services Bridgekeeper uses. */
export interface Platform {
  /** `linux`, `darwin`, `win32`. */
  readonly id: string;
  /**
   * Reads the identity of the process on the other end of a connected Unix socket, from the
   * kernel. Used by the server on each accepted connection and by the client on the server.
   *
   * @throws `ERR_PEER_UNKNOWN` when the kernel does not say.
   */
  identifySocketPeer(fd: number): PeerIdentity;
  /** Derives session credentials from verified peer identities. */
  readonly credentials: SessionCredentialProvider;
  /**
   * Checks that the peer is still the very process that connected (alive, same start time,
   * same executable). Called before every authorized request.
   *
   * @throws `ERR_PEER_CHANGED` when it is not.
   */
  verifyPeer(peer: PeerIdentity): Promise<void>;
  /** Releases what an identity holds (a pidfd). Idempotent. */
  releasePeer(peer: PeerIdentity): void;
  /**
   * The OS's own endpoint, where it is not a Unix socket (Windows: a named pipe named from the
   * app and the user's SID). Absent: the server and client use the Unix socket at
   * `$XDG_RUNTIME_DIR/<app>/agent.sock`.
   */
  readonly defaultEndpoint?: PlatformEndpoint;
}

/** A platform's own endpoint kind: where the app listens and clients connect by default. */
export interface PlatformEndpoint {
  /** Where `app` listens, e.g. `\\.\pipe\bridgekeeper-<app>-<SID>`. */
  address(app: string): string;
  /**
   * Listens for the app, identifying every peer through the OS before a byte is read.
   *
   * @throws `ERR_ALREADY_RUNNING` when another process holds the endpoint.
   */
  listen(
    app: string,
    options: { maxFrameBytes: number; signal?: AbortSignal },
  ): Promise<TransportListener>;
  /**
   * Connects to the app; the transport's `peer` is the server, identified through the OS before
   * anything was sent.
   *
   * @throws `ERR_APP_UNAVAILABLE` when the app is not running.
   */
  connect(
    app: string,
    options: { maxFrameBytes?: number; signal?: AbortSignal },
  ): Promise<Transport>;
  /** The policy that admits only this user's processes (the default on both sides). */
  sameUser(): PeerPolicy;
}

/**
 * Loads the platform module for this OS, once. Dynamic import keeps native code out of the
 * package root.
 *
 * @throws `ERR_UNSUPPORTED_PLATFORM` on an OS without a module.
 */
export function loadPlatform(): Promise<Platform> {
  return loadPlatformOnce();
}

const loadPlatformOnce = loadOnce(async (): Promise<Platform> => {
  switch (process.platform) {
    case 'linux': {
      const linux = await import('./linux/index.js');
      return linux.createLinuxPlatform();
    }
    case 'darwin': {
      const darwin = await import('./darwin/index.js');
      return darwin.createDarwinPlatform();
    }
    case 'win32': {
      const win32 = await import('./win32/index.js');
      return win32.createWin32Platform();
    }
    default:
      throw createError(
        'ERR_UNSUPPORTED_PLATFORM',
        `Bridgekeeper has no peer-identity support for ${process.platform} yet. ` +
          'Use the in-memory transport (bridgekeeper/testing) or pass your own platform to createServer/connect.',
      );
  }
});
