/**
 * The Windows platform module: peer identity from named pipes (`GetNamedPipeClientProcessId`
 * and a process handle held per connection), session credentials keyed on the invoking process,
 * and prompt descriptions from the parent chain.
 *
 * Loaded only through a dynamic import; {@link createWin32Platform} loads the native bindings
 * (koffi) unless it is given bindings, as tests do.
 *
 * @module
 */

import { sameUserSid } from '../../policy/authenticode.js';
import { connectNamedPipe, listenNamedPipe, pipeName } from '../../transport/named-pipe.js';
import type { PeerIdentity } from '../../transport/transport.js';
import type { Platform, PlatformEndpoint } from '../platform.js';
import { loadWin32Bindings, type Win32Bindings } from './bindings.js';
import { createWin32CredentialProvider } from './credentials.js';
import { identifyPipePeer, identifySocketPeer, releasePeer, verifyPeer } from './identity.js';

export type {
  PipeInstanceOptions,
  SignatureCheck,
  UserConsentAvailability,
  UserConsentBindings,
  UserConsentResult,
  Win32Bindings,
  Win32Handle,
} from './bindings.js';
export { HRESULTS, loadWin32Bindings, WIN32_ERRORS, Win32Error } from './bindings.js';
export type { Win32CredentialOptions, Win32Session } from './credentials.js';
export { createWin32CredentialProvider, deriveWin32Session } from './credentials.js';
export type { IdentifyPipePeerOptions } from './identity.js';
export {
  identifyPipePeer,
  identifySocketPeer,
  NAMED_PIPE_SOURCE,
  releasePeer,
  verifyPeer,
  verifyPeerSync,
} from './identity.js';
export type { DescribedProcess, HostAnchor } from './process-description.js';
export {
  describeWin32Process,
  knownHostName,
  programName,
  shellName,
} from './process-description.js';

/** Dependencies of {@link createWin32Platform}; all optional. */
export interface Win32PlatformOptions {
  /** Native bindings to use instead of loading koffi (fakes in tests). */
  readonly bindings?: Win32Bindings;
}

/**
 * Creates the Windows {@link Platform} (`id: 'win32'`). Without `bindings` it loads the native
 * ones ({@link loadWin32Bindings}) now, once per process: `identifySocketPeer` is synchronous
 * and must find them loaded.
 *
 * @throws (rejects with) `ERR_UNSUPPORTED_PLATFORM` when koffi or a system DLL cannot be loaded.
 *
 * @example
 * ```ts
 * const platform = await createWin32Platform();
 * const peer = platform.identifySocketPeer(fd);
 * const credential = await platform.credentials.derive(peer);
 * ```
 */
export async function createWin32Platform(options: Win32PlatformOptions = {}): Promise<Platform> {
  const bindings = options.bindings ?? (await loadWin32Bindings());
  const credentials = createWin32CredentialProvider({ bindings });
  const release = (peer: PeerIdentity) => releasePeer(bindings, peer);
  const defaultEndpoint: PlatformEndpoint = {
    address: (app) => pipeName(app, bindings.processUserSid('self')),
    listen: (app, listenOptions) =>
      listenNamedPipe({
        name: pipeName(app, bindings.processUserSid('self')),
        bindings,
        app,
        maxFrameBytes: listenOptions.maxFrameBytes,
        ...(listenOptions.signal ? { signal: listenOptions.signal } : {}),
        // The client, from the pipe itself, before a byte is read.
        identify: (pipe) => identifyPipePeer(bindings, bindings.pipeClientProcessId(pipe)),
        release,
      }),
    connect: (app, connectOptions) =>
      connectNamedPipe(pipeName(app, bindings.processUserSid('self')), {
        bindings,
        ...(connectOptions.maxFrameBytes ? { maxFrameBytes: connectOptions.maxFrameBytes } : {}),
        ...(connectOptions.signal ? { signal: connectOptions.signal } : {}),
        // The server, before anything is written.
        identify: (pipe) => identifyPipePeer(bindings, bindings.pipeServerProcessId(pipe)),
        release,
      }),
    sameUser: () => sameUserSid({ bindings }),
  };
  return Object.freeze({
    id: 'win32',
    identifySocketPeer: (fd: number) => identifySocketPeer(bindings, fd),
    credentials,
    verifyPeer: (peer) => verifyPeer(bindings, peer),
    releasePeer: release,
    defaultEndpoint,
  } satisfies Platform);
}
