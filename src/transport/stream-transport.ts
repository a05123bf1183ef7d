/**
 * Turns a connected Node socket (a Unix domain socket, or a Windows named pipe wrapped in a
 * socket) into a message {@link Transport} using the frames of `framing.ts`.
 *
 * @module
 */

import type { Socket } from 'node:net';
import { BridgekeeperError, createError } from '../errors.js';
import { createLog } from '../util/log.js';
import { checkMaxFrameBytes, encodeFrame, FrameDecoder } from './framing.js';
import type { CloseInfo, Disposable, Message, PeerIdentity, Transport } from './transport.js';
import { closedForSending, TransportEvents } from './transport-events.js';

export { reportListenerError } from './transport-events.js';

const debug = createLog('bridgekeeper:transport');

/** How long {@link Transport.close} waits for the other side by default, in milliseconds. */
export const DEFAULT_CLOSE_TIMEOUT_MS = 2000;

/** Unsent bytes above which a stream transport stops reading by default (1 MiB). */
export const DEFAULT_HIGH_WATER_BYTES = 1024 * 1024;

/** Unsent bytes a stream transport holds at most by default (16 MiB). */
export const DEFAULT_MAX_BUFFERED_BYTES = 16 * 1024 * 1024;

/** The 4-byte length prefix in front of every frame. */
const FRAME_HEADER_BYTES = 4;

/** Options for {@link createStreamTransport}. */
export interface StreamTransportOptions {
  /** The peer as the OS reported it when the socket was accepted or connected. */
  peer?: PeerIdentity;
  /**
   * Largest frame payload accepted from the other side, and sent to it; default 1 MiB. A larger
   * declared length closes the connection with `ERR_FRAME_TOO_LARGE`.
   */
  maxFrameBytes?: number;
  /**
   * How long `close()` waits for unsent data to drain and the other side to close its end
   * before it cuts the connection; default {@link DEFAULT_CLOSE_TIMEOUT_MS}.
   */
  closeTimeoutMs?: number;
  /**
   * Once more than this many bytes wait to be sent (the other side reads slower than we answer),
   * the transport stops reading from it until they have all been sent, so a peer that pipelines
   * requests without reading the replies only ever costs this much; default
   * {@link DEFAULT_HIGH_WATER_BYTES}.
   */
  highWaterBytes?: number;
  /**
   * The most bytes allowed to wait to be sent. A `send()` that would go over it destroys the
   * transport and throws `ERR_SEND_BUFFER_FULL`: the other side stopped reading. At least
   * `highWaterBytes` and `maxFrameBytes + 4`; default {@link DEFAULT_MAX_BUFFERED_BYTES}, or
   * more when either of those needs it.
   */
  maxBufferedBytes?: number;
}

/** The limits of a stream transport, checked and with defaults applied. */
interface StreamLimits {
  readonly maxFrameBytes: number;
  readonly closeTimeoutMs: number;
  readonly highWaterBytes: number;
  readonly maxBufferedBytes: number;
}

function checkByteCount(name: string, value: number): void {
  if (!Number.isSafeInteger(value) || value < 1) {
    throw createError(
      'ERR_INVALID_ARGUMENT',
      `${name} must be a positive whole number of bytes, not ${String(value)}.`,
    );
  }
}

/**
 * Checks the options of {@link createStreamTransport} and applies their defaults, so that the
 * listener and connector can refuse bad ones before any connection exists.
 *
 * @throws `ERR_INVALID_ARGUMENT` for a bad `maxFrameBytes`, `closeTimeoutMs`, `highWaterBytes`
 *   or `maxBufferedBytes`.
 * @internal
 */
export function checkStreamTransportOptions(
  options: Omit<StreamTransportOptions, 'peer'>,
): StreamLimits {
  const maxFrameBytes = checkMaxFrameBytes(options.maxFrameBytes);
  const closeTimeoutMs = options.closeTimeoutMs ?? DEFAULT_CLOSE_TIMEOUT_MS;
  if (!Number.isFinite(closeTimeoutMs) || closeTimeoutMs < 0) {
    throw createError(
      'ERR_INVALID_ARGUMENT',
      `closeTimeoutMs must be a non-negative number of milliseconds, not ${String(closeTimeoutMs)}.`,
    );
  }
  const highWaterBytes = options.highWaterBytes ?? DEFAULT_HIGH_WATER_BYTES;
  checkByteCount('highWaterBytes', highWaterBytes);
  // The largest frame must always fit, or a peer that reads could still see its connection cut.
  const minBuffered = Math.max(highWaterBytes, maxFrameBytes + FRAME_HEADER_BYTES);
  const maxBufferedBytes =
    options.maxBufferedBytes ?? Math.max(DEFAULT_MAX_BUFFERED_BYTES, minBuffered);
  checkByteCount('maxBufferedBytes', maxBufferedBytes);
  if (maxBufferedBytes < minBuffered) {
    throw createError(
      'ERR_INVALID_ARGUMENT',
      `maxBufferedBytes (${maxBufferedBytes}) must be at least highWaterBytes (${highWaterBytes}) ` +
        `and maxFrameBytes + 4 (${maxFrameBytes + FRAME_HEADER_BYTES}), so that the largest message always fits.`,
    );
  }
  return { maxFrameBytes, closeTimeoutMs, highWaterBytes, maxBufferedBytes };
}

/**
 * A {@link Transport} over a stream, with a view of its send buffer.
 */
export interface StreamTransport extends Transport {
  /** Bytes sent but not yet handed to the operating system (the socket's `writableLength`). */
  readonly bufferedBytes: number;
}

/** Messages held for a subscriber before reading pauses. */
const MAX_QUEUED_MESSAGES = 128;

/** Errors that mean the other end vanished rather than that something here broke. */
const CONNECTION_LOST = new Set(['ECONNRESET', 'EPIPE', 'ECONNABORTED', 'ENOTCONN', 'ETIMEDOUT']);

function socketError(error: Error): Error {
  if (error instanceof BridgekeeperError) return error;
  const code = (error as NodeJS.ErrnoException).code;
  if (code !== undefined && CONNECTION_LOST.has(code)) {
    return createError(
      'ERR_APP_UNAVAILABLE',
      `The other end of the connection went away abruptly (${code}). ` +
        'If it was the app, check that it is still running, then try again.',
      { cause: error },
    );
  }
  return createError(
    'ERR_PLATFORM',
    `The connection failed with an operating-system error (${code ?? error.message}).`,
    { cause: error },
  );
}

class SocketTransport implements StreamTransport {
  readonly peer: PeerIdentity | undefined;
  readonly #socket: Socket;
  readonly #decoder: FrameDecoder;
  readonly #maxFrameBytes: number;
  readonly #closeTimeoutMs: number;
  readonly #highWaterBytes: number;
  readonly #maxBufferedBytes: number;
  /**
   * Queues messages decoded while nobody was subscribed (or while sends are blocked); reading
   * begins on the first onMessage subscription.
   */
  readonly #events = new TransportEvents<Message>();
  #flushScheduled = false;
  /** Whether reading is held back because too many messages wait for a subscriber. */
  #heldBack = false;
  /**
   * Whether reading is held back because more than highWaterBytes wait to be sent; cleared once
   * the send buffer is empty again (what 'drain' means, but also below the socket's own mark).
   */
  #sendBlocked = false;
  #corked = false;
  #local = false;
  #error: Error | undefined;
  #closeTimer: NodeJS.Timeout | undefined;

  constructor(socket: Socket, options: StreamTransportOptions) {
    this.#socket = socket;
    this.peer = options.peer;
    const limits = checkStreamTransportOptions(options);
    this.#maxFrameBytes = limits.maxFrameBytes;
    this.#closeTimeoutMs = limits.closeTimeoutMs;
    this.#highWaterBytes = limits.highWaterBytes;
    this.#maxBufferedBytes = limits.maxBufferedBytes;
    this.#decoder = new FrameDecoder({ maxFrameBytes: this.#maxFrameBytes });

    // Not one byte is read before the first onMessage subscriber: a server checks the peer
    // first and may drop it unread. A 'data' listener does not resume a paused socket.
    socket.pause();
    socket.on('data', (chunk: Buffer) => this.#onData(chunk));
    socket.on('end', () => this.#onEnd());
    socket.on('error', (error: Error) => {
      this.#error ??= socketError(error);
    });
    socket.on('close', () => this.#finish());
    if (socket.destroyed) {
      this.#events.state = 'closing';
      this.#error ??= createError(
        'ERR_APP_UNAVAILABLE',
        'The connection was already closed when it was handed over.',
      );
      if (socket.closed) queueMicrotask(() => this.#finish());
    }
  }

  get closed(): boolean {
    return this.#events.state !== 'open';
  }

  get bufferedBytes(): number {
    return this.#socket.writableLength;
  }

  send(message: Message): void {
    if (this.#events.state !== 'open' || this.#socket.destroyed) {
      throw closedForSending();
    }
    const frame = encodeFrame(message, this.#maxFrameBytes);
    const waiting = this.#socket.writableLength;
    if (waiting + frame.length > this.#maxBufferedBytes) {
      // The other side stopped reading (or reads far slower than it asks): holding on would
      // grow this process without bound for a peer that may never read again.
      const error = createError(
        'ERR_SEND_BUFFER_FULL',
        `Cannot send: the other side stopped reading; ${waiting} bytes were waiting to be sent to it, ` +
          `and this message (${frame.length} bytes) would go over the limit of ${this.#maxBufferedBytes} bytes ` +
          '(maxBufferedBytes); the connection was closed.',
      );
      debug('closing a connection: %d bytes waiting to be sent', waiting);
      this.destroy(error);
      throw error;
    }
    // Frames sent in one tick leave in one writev instead of one system call each.
    if (!this.#corked) {
      this.#corked = true;
      this.#socket.cork();
      process.nextTick(() => {
        this.#corked = false;
        this.#socket.uncork();
      });
    }
    this.#socket.write(frame, this.#afterWrite);
    if (!this.#sendBlocked && this.#socket.writableLength > this.#highWaterBytes) {
      // Every message read may produce a reply: stop reading until the replies are gone.
      debug('pausing reading: %d bytes waiting to be sent', this.#socket.writableLength);
      this.#sendBlocked = true;
      this.#updateReading();
    }
  }

  /**
   * Runs as each write completes. Node's 'drain' only fires past the socket's own high-water
   * mark, which may be above ours, so an empty buffer is checked here instead.
   */
  readonly #afterWrite = (): void => {
    if (!this.#sendBlocked || this.#socket.writableLength > 0) return;
    this.#sendBlocked = false;
    if (this.#events.state !== 'open') return;
    debug('resuming reading: everything was sent');
    // Messages that arrived in the chunk that was being read when reading paused go first.
    if (this.#events.queue.length > 0 && this.#events.hasMessageListeners) this.#scheduleFlush();
    else this.#updateReading();
  };

  /** Reads from the socket exactly when nothing holds reading back. */
  #updateReading(): void {
    // Before the first subscriber nothing is read; once closing, close() drains on its own.
    if (!this.#events.started || this.#events.state !== 'open') return;
    if (this.#heldBack || this.#sendBlocked) this.#socket.pause();
    else this.#socket.resume();
  }

  onMessage(listener: (message: Message) => void): Disposable {
    return this.#events.onMessage(listener, (first) => {
      if (this.#events.queue.length > 0) this.#scheduleFlush();
      if (first) this.#updateReading();
    });
  }

  onClose(listener: (info: CloseInfo) => void): Disposable {
    return this.#events.onClose(listener);
  }

  close(): Promise<void> {
    if (this.#events.state === 'open') {
      this.#events.state = 'closing';
      this.#local = true;
      this.#events.dropQueue();
      // end() flushes what was sent, then sends FIN; the other side answers with its own FIN,
      // which only arrives if we read, so drain and discard from here on.
      this.#socket.end();
      this.#socket.resume();
      this.#closeTimer = setTimeout(() => {
        debug(
          'close: the other side did not finish within %d ms; cutting the connection',
          this.#closeTimeoutMs,
        );
        this.#socket.destroy();
      }, this.#closeTimeoutMs);
      this.#closeTimer.unref();
    }
    return this.#events.closed;
  }

  destroy(error?: Error): void {
    if (this.#events.state === 'closed') return;
    if (this.#events.state === 'open') {
      this.#events.state = 'closing';
      this.#local = true;
    }
    if (error !== undefined) this.#error ??= error;
    this.#events.dropQueue();
    this.#socket.destroy();
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  #onData(chunk: Buffer): void {
    if (this.#events.state !== 'open') return;
    try {
      this.#decoder.decode(chunk, this.#deliver);
    } catch (error) {
      // Only the decoder throws here (listener errors are reported separately): the peer broke
      // the framing, so nothing more it sends can be trusted to line up.
      debug('closing a connection: %s', (error as BridgekeeperError).code);
      this.#events.state = 'closing';
      this.#error ??= error as Error;
      this.#events.dropQueue();
      this.#socket.destroy();
    }
  }

  readonly #deliver = (message: Message): void => {
    const events = this.#events;
    if (events.state !== 'open') return;
    // While sends are blocked, the rest of the chunk being decoded waits too: pausing the
    // socket only stops the next chunk.
    if (!events.hasMessageListeners || events.queue.length > 0 || this.#sendBlocked) {
      events.queue.push(message);
      // Reading goes on with nobody subscribed, so a close is still noticed, but a peer that
      // keeps sending meanwhile is held back rather than buffered without bound.
      if (events.queue.length >= MAX_QUEUED_MESSAGES && !this.#heldBack) {
        this.#heldBack = true;
        this.#updateReading();
      }
      return;
    }
    events.emit(message);
  };

  #scheduleFlush(): void {
    if (this.#flushScheduled) return;
    this.#flushScheduled = true;
    // Not synchronously inside onMessage(): the subscriber has not even got its disposable yet.
    queueMicrotask(() => {
      this.#flushScheduled = false;
      // Whatever is left stays queued, in order, for the next subscriber or the next drain.
      this.#events.deliverQueued(
        (message) => message,
        () => !this.#sendBlocked,
      );
      if (this.#heldBack && this.#events.queue.length === 0) this.#heldBack = false;
      this.#updateReading();
    });
  }

  #onEnd(): void {
    if (this.#events.state === 'open') {
      this.#events.state = 'closing';
      if (this.#decoder.bufferedBytes > 0) {
        this.#error ??= createError(
          'ERR_PROTOCOL',
          `The other side closed the connection in the middle of a message (${this.#decoder.bufferedBytes} bytes of it arrived). ` +
            'It may have crashed or been killed; try again.',
        );
      }
    }
    // Node ends our side by itself unless the socket allows half-open connections.
    if (this.#socket.allowHalfOpen) this.#socket.end();
  }

  #finish(): void {
    if (this.#events.state === 'closed') return;
    clearTimeout(this.#closeTimer);
    const info: CloseInfo =
      this.#error === undefined
        ? { local: this.#local }
        : { error: this.#error, local: this.#local };
    if (info.error)
      debug('connection closed with %s', (info.error as BridgekeeperError).code ?? info.error.name);
    this.#events.finish(info);
  }
}

/**
 * Wraps a connected socket as a message {@link Transport}: 4-byte big-endian length + UTF-8
 * JSON frames, read only once someone subscribes to messages.
 *
 * The socket must not be read by anyone else. It is paused here and resumed on the first
 * `onMessage` subscription; messages that arrive while nobody is subscribed wait for the next
 * subscriber (reading pauses while 128 are waiting). The other end
 * closing cleanly closes the transport with no error; a reset, a frame over `maxFrameBytes`
 * (`ERR_FRAME_TOO_LARGE`), broken framing or JSON (`ERR_PROTOCOL`) close it with that error.
 * An exception thrown by a subscriber does not stop the transport; it is rethrown
 * asynchronously, as an EventEmitter listener's would be.
 *
 * Sending never blocks, but it is bounded: while more than `highWaterBytes` wait to be sent,
 * no further incoming message is processed (reading resumes once they are all sent), and a
 * `send()` that would leave more than `maxBufferedBytes` waiting destroys the transport and
 * throws `ERR_SEND_BUFFER_FULL`.
 *
 * @throws `ERR_INVALID_ARGUMENT` for a bad `maxFrameBytes`, `closeTimeoutMs`, `highWaterBytes`
 *   or `maxBufferedBytes`.
 * @example
 * ```ts
 * const socket = net.connect(path);
 * socket.pause();
 * socket.once('connect', () => {
 *   const transport = createStreamTransport(socket, {});
 *   transport.onMessage((message) => console.log(message));
 *   transport.send({ jsonrpc: '2.0', id: 1, method: 'hello' });
 * });
 * ```
 */
export function createStreamTransport(
  socket: Socket,
  options: StreamTransportOptions = {},
): StreamTransport {
  return new SocketTransport(socket, options);
}

/**
 * The limits every stream connection gets, on both ends, as a listener or connector takes them
 * (Unix sockets, named pipes); they go to {@link createStreamTransport} as given.
 */
export interface ConnectionLimits {
  /** Largest frame payload accepted from and sent to the other side; default 1 MiB. */
  maxFrameBytes?: number;
  /** How long a connection's `close()` waits for the other side to finish; default 2 s. */
  closeTimeoutMs?: number;
  /**
   * Unsent bytes on a connection above which it stops reading from the other side until they
   * are sent; default 1 MiB. See {@link StreamTransportOptions.highWaterBytes}.
   */
  highWaterBytes?: number;
  /**
   * Unsent bytes on a connection above which it is closed with `ERR_SEND_BUFFER_FULL`;
   * default 16 MiB. See {@link StreamTransportOptions.maxBufferedBytes}.
   */
  maxBufferedBytes?: number;
}

/** The {@link ConnectionLimits} of a listener's or connector's options, as given. @internal */
export function streamLimitsOf(
  options: {
    readonly [K in keyof ConnectionLimits]?: ConnectionLimits[K] | undefined;
  },
): StreamTransportOptions {
  const result: StreamTransportOptions = {};
  if (options.maxFrameBytes !== undefined) result.maxFrameBytes = options.maxFrameBytes;
  if (options.closeTimeoutMs !== undefined) result.closeTimeoutMs = options.closeTimeoutMs;
  if (options.highWaterBytes !== undefined) result.highWaterBytes = options.highWaterBytes;
  if (options.maxBufferedBytes !== undefined) result.maxBufferedBytes = options.maxBufferedBytes;
  return result;
}

/** Releases an identity nobody else will, never letting a failing `release` escape. @internal */
export function releaseQuietly(
  release: ((peer: PeerIdentity) => void) | undefined,
  peer: PeerIdentity | undefined,
): void {
  if (release === undefined || peer === undefined) return;
  try {
    release(peer);
  } catch (error) {
    debug('releasing a peer identity failed: %s', (error as Error).message ?? error);
  }
}
