/**
 * Wrapping an accepted or connected socket whose peer was identified, shared by the Unix socket
 * and named-pipe transports.
 *
 * @module
 * @internal
 */

import type { Socket } from 'node:net';
import {
  createStreamTransport,
  releaseQuietly,
  type StreamTransport,
  type StreamTransportOptions,
} from './stream-transport.js';
import type { PeerIdentity } from './transport.js';

/**
 * `createStreamTransport` for a socket whose peer a listener or connector identified: if
 * it fails, the socket is destroyed and the identity released before the error is thrown, so
 * nothing leaks. @internal
 */
export function streamTransportFor(
  socket: Socket,
  options: StreamTransportOptions,
  peer: PeerIdentity | undefined,
  release: ((peer: PeerIdentity) => void) | undefined,
): StreamTransport {
  try {
    return createStreamTransport(socket, peer === undefined ? options : { ...options, peer });
  } catch (error) {
    socket.destroy();
    releaseQuietly(release, peer);
    throw error;
  }
}
