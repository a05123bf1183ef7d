/**
 * Wire frames for stream transports: a 4-byte big-endian unsigned length, then that many bytes
 * of UTF-8 JSON whose top level is an object.
 *
 * The decoder checks a declared length against its limit as soon as the four length bytes are
 * in, so a peer that announces 4 GiB costs nothing. Whole frames are parsed straight out of the
 * chunk they arrived in; only a frame split across chunks is copied, once, into a buffer of
 * exactly its size.
 *
 * @module
 */

import { type BridgekeeperError, createError } from '../errors.js';
import type { Message } from './transport.js';

/** The default largest payload, in bytes, a frame may declare (1 MiB). */
export const DEFAULT_MAX_FRAME_BYTES = 1024 * 1024;

/** The largest payload the 4-byte length prefix can express. */
const MAX_UINT32 = 0xffff_ffff;

const HEADER_BYTES = 4;

/** Size of the shared buffer small frames are carved from, like Buffer's own pool but larger. */
const SLAB_BYTES = 64 * 1024;
/** Payloads whose worst-case UTF-8 size is at most this are written into the slab. */
const SLAB_MAX_PAYLOAD = 16 * 1024;
// Allocated on first use, not at import: starting "full" makes the first frame allocate it.
let slab = Buffer.alloc(0);
let slabOffset = SLAB_BYTES;

/**
 * A Buffer view into the slab. Buffer#subarray goes through the species constructor and costs
 * twice as much; this is how Node builds its own pooled Buffers (a Uint8Array subclass whose
 * prototype is Buffer.prototype), so `Buffer.isBuffer` and every Buffer method work on it.
 */
class SlabView extends Uint8Array {}
Object.setPrototypeOf(SlabView.prototype, Buffer.prototype);
// As on Node's own Buffers, so `frame.constructor` and subarray()/slice() give plain Buffers.
Object.defineProperty(SlabView.prototype, 'constructor', {
  value: Buffer,
  writable: true,
  configurable: true,
});

/**
 * Buffer's per-encoding methods behind `write` and `toString`. They are not in Node's typings
 * but have been on Buffer.prototype in every Node release; calling them directly skips argument
 * checks that, on a small frame, cost about as much as the copy itself.
 */
interface BufferEncodingMethods {
  utf8Write?(string: string, offset: number, length: number): number;
  utf8Slice?(start: number, end: number): string;
}

const bufferMethods = Buffer.prototype as unknown as BufferEncodingMethods;

const writeUtf8: (buffer: Buffer, string: string, offset: number, length: number) => number =
  typeof bufferMethods.utf8Write === 'function'
    ? (buffer, string, offset, length) =>
        (buffer as unknown as Required<BufferEncodingMethods>).utf8Write(string, offset, length)
    : (buffer, string, offset, length) => buffer.write(string, offset, length, 'utf8');

const readUtf8: (buffer: Buffer, start: number, end: number) => string =
  typeof bufferMethods.utf8Slice === 'function'
    ? (buffer, start, end) =>
        (buffer as unknown as Required<BufferEncodingMethods>).utf8Slice(start, end)
    : (buffer, start, end) => buffer.toString('utf8', start, end);

const NOT_OUR_PROTOCOL =
  'Check that the program on the other end of the connection speaks the Bridgekeeper protocol.';

/** `{` — a serialized message must start with it, or its top level is not an object. */
const OPEN_BRACE = 0x7b;

function isPlainObject(value: unknown): value is Message {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/**
 * Checks a `maxFrameBytes` option.
 *
 * @throws `ERR_INVALID_ARGUMENT` unless it is an integer from 1 to 2^32 − 1.
 * @internal
 */
export function checkMaxFrameBytes(value: number | undefined): number {
  if (value === undefined) return DEFAULT_MAX_FRAME_BYTES;
  if (!Number.isInteger(value) || value < 1 || value > MAX_UINT32) {
    throw createError(
      'ERR_INVALID_ARGUMENT',
      `maxFrameBytes must be an integer from 1 to ${MAX_UINT32}, not ${String(value)}.`,
    );
  }
  return value;
}

/**
 * Serializes a message to its JSON text, with the checks every transport applies so that the
 * in-memory pair fails exactly where a socket would.
 *
 * @throws `ERR_INVALID_ARGUMENT` when the message cannot be serialized (a BigInt, a cycle) or
 *   does not serialize to a JSON object.
 * @internal
 */
export function serializeMessage(message: Message): string {
  let json: string | undefined;
  try {
    json = JSON.stringify(message);
  } catch (error) {
    throw createError(
      'ERR_INVALID_ARGUMENT',
      `The message cannot be sent because it cannot be serialized as JSON (${(error as Error).message}). ` +
        'Send only plain JSON data: no BigInt values or circular references.',
      { cause: error },
    );
  }
  // A toJSON method can turn the top level into anything; the wire only carries objects.
  if (typeof json !== 'string' || json.charCodeAt(0) !== OPEN_BRACE) {
    throw createError(
      'ERR_INVALID_ARGUMENT',
      'The message cannot be sent because it does not serialize to a JSON object. Send a plain object.',
    );
  }
  return json;
}

/**
 * Encodes one message as a frame: 4-byte big-endian payload length, then the UTF-8 JSON.
 *
 * @param maxFrameBytes - refuse payloads longer than this (default 1 MiB), since the peer would
 *   drop the connection on receiving one.
 * @throws `ERR_INVALID_ARGUMENT` when the message is not serializable to a JSON object;
 *   `ERR_FRAME_TOO_LARGE` when its payload is longer than `maxFrameBytes`.
 * @example
 * ```ts
 * socket.write(encodeFrame({ jsonrpc: '2.0', id: 1, method: 'hello' }));
 * ```
 */
export function encodeFrame(message: Message, maxFrameBytes = DEFAULT_MAX_FRAME_BYTES): Buffer {
  const json = serializeMessage(message);
  const worstCase = json.length * 3;
  if (worstCase > SLAB_MAX_PAYLOAD) {
    const length = Buffer.byteLength(json, 'utf8');
    if (length > maxFrameBytes) throw frameTooLarge(length, maxFrameBytes);
    const frame = Buffer.allocUnsafe(HEADER_BYTES + length);
    frame.writeUInt32BE(length, 0);
    writeUtf8(frame, json, HEADER_BYTES, length);
    return frame;
  }
  // Writing into a slab at the worst-case size saves a separate Buffer.byteLength pass and a
  // pool allocation: on small messages they cost a sizeable part of the stringify+parse time.
  if (slabOffset + HEADER_BYTES + worstCase > SLAB_BYTES) {
    slab = Buffer.allocUnsafeSlow(SLAB_BYTES);
    slabOffset = 0;
  }
  const start = slabOffset;
  const length = writeUtf8(slab, json, start + HEADER_BYTES, worstCase);
  if (length > maxFrameBytes) throw frameTooLarge(length, maxFrameBytes);
  // Keep the next frame 8-byte aligned, as Buffer's own pool does.
  slabOffset = (start + HEADER_BYTES + length + 7) & ~7;
  slab[start] = length >>> 24;
  slab[start + 1] = (length >>> 16) & 0xff;
  slab[start + 2] = (length >>> 8) & 0xff;
  slab[start + 3] = length & 0xff;
  return new SlabView(slab.buffer, slab.byteOffset + start, HEADER_BYTES + length) as Buffer;
}

function frameTooLarge(length: number, maxFrameBytes: number): BridgekeeperError {
  return createError(
    'ERR_FRAME_TOO_LARGE',
    `The message is ${length} bytes as JSON, over the frame limit of ${maxFrameBytes} bytes. ` +
      'Send smaller messages (split large data), or raise maxFrameBytes on both ends.',
  );
}

/** Options for {@link FrameDecoder}. */
export interface FrameDecoderOptions {
  /** Largest payload a frame may declare; default {@link DEFAULT_MAX_FRAME_BYTES}. */
  maxFrameBytes?: number;
}

/**
 * Turns a byte stream back into messages. Feed it chunks in order with {@link FrameDecoder.push}
 * (returns the messages completed by the chunk) or {@link FrameDecoder.decode} (calls back for
 * each, so messages before a bad frame are still delivered before the error is thrown).
 *
 * After any error the decoder is poisoned: the stream is out of sync, so every later call throws
 * the same error.
 *
 * @example
 * ```ts
 * const decoder = new FrameDecoder({ maxFrameBytes: 64 * 1024 });
 * socket.on('data', (chunk) => {
 *   for (const message of decoder.push(chunk)) handle(message);
 * });
 * ```
 */
export class FrameDecoder {
  readonly #maxFrameBytes: number;
  // Strict UTF-8 check, for the rare frame the fast path in #parse flags.
  readonly #text = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });
  /** Length bytes of a frame whose header was split across chunks. */
  readonly #header = Buffer.alloc(HEADER_BYTES);
  #headerFill = 0;
  /** Payload of a frame split across chunks, allocated at its declared (checked) size. */
  #body: Buffer | undefined;
  #bodyFill = 0;
  #error: BridgekeeperError | undefined;

  /** @throws `ERR_INVALID_ARGUMENT` for a `maxFrameBytes` outside 1 … 2^32 − 1. */
  constructor(options: FrameDecoderOptions = {}) {
    this.#maxFrameBytes = checkMaxFrameBytes(options.maxFrameBytes);
  }

  /** The largest payload this decoder accepts. */
  get maxFrameBytes(): number {
    return this.#maxFrameBytes;
  }

  /** Bytes of an unfinished frame held so far (0 between frames). */
  get bufferedBytes(): number {
    return this.#headerFill + (this.#body === undefined ? 0 : HEADER_BYTES + this.#bodyFill);
  }

  /** The error that poisoned this decoder, if any. */
  get error(): BridgekeeperError | undefined {
    return this.#error;
  }

  /**
   * Decodes a chunk and returns the messages it completed, in order.
   *
   * @throws `ERR_FRAME_TOO_LARGE` for a declared length over the limit; `ERR_PROTOCOL` for a
   *   zero length, invalid UTF-8, invalid JSON, or a top level that is not an object. Messages
   *   completed earlier in the same chunk are lost with the throw; use
   *   {@link FrameDecoder.decode} to receive them.
   */
  push(chunk: Buffer): Message[] {
    const messages: Message[] = [];
    this.decode(chunk, (message) => {
      messages.push(message);
    });
    return messages;
  }

  /**
   * Decodes a chunk, calling `onMessage` for each message it completes, in order.
   *
   * @throws the same errors as {@link FrameDecoder.push}, after delivering every message that
   *   preceded the bad frame.
   */
  decode(chunk: Buffer, onMessage: (message: Message) => void): void {
    if (this.#error) throw this.#error;
    try {
      this.#decode(chunk, onMessage);
    } catch (error) {
      // Only our own errors poison the decoder; an exception from onMessage is the caller's.
      if (error === this.#error) {
        this.#header.fill(0);
        this.#headerFill = 0;
        this.#body = undefined;
        this.#bodyFill = 0;
      }
      throw error;
    }
  }

  #decode(chunk: Buffer, onMessage: (message: Message) => void): void {
    const end = chunk.length;
    let offset = 0;

    if (this.#body !== undefined) {
      offset = this.#fillBody(chunk, 0, onMessage);
      if (this.#body !== undefined) return;
    } else if (this.#headerFill > 0) {
      while (this.#headerFill < HEADER_BYTES && offset < end) {
        this.#header[this.#headerFill++] = chunk[offset++]!;
      }
      if (this.#headerFill < HEADER_BYTES) return;
      this.#headerFill = 0;
      const length = this.#checkLength(this.#header.readUInt32BE(0));
      if (end - offset >= length) {
        onMessage(this.#parse(chunk, offset, offset + length));
        offset += length;
      } else {
        this.#body = Buffer.allocUnsafe(length);
        this.#bodyFill = 0;
        this.#fillBody(chunk, offset, onMessage);
        return;
      }
    }

    // The common case: whole frames parsed in place, no copy.
    const maxFrameBytes = this.#maxFrameBytes;
    while (end - offset >= HEADER_BYTES) {
      const length =
        ((chunk[offset]! << 24) >>> 0) +
        ((chunk[offset + 1]! << 16) | (chunk[offset + 2]! << 8) | chunk[offset + 3]!);
      if (length > maxFrameBytes || length === 0) this.#checkLength(length);
      offset += HEADER_BYTES;
      if (end - offset >= length) {
        onMessage(this.#parse(chunk, offset, offset + length));
        offset += length;
      } else {
        this.#body = Buffer.allocUnsafe(length);
        this.#bodyFill = 0;
        this.#fillBody(chunk, offset, onMessage);
        return;
      }
    }
    while (offset < end) this.#header[this.#headerFill++] = chunk[offset++]!;
  }

  /** Copies from `chunk` into the pending body; returns the offset after what it consumed. */
  #fillBody(chunk: Buffer, offset: number, onMessage: (message: Message) => void): number {
    const body = this.#body!;
    const take = Math.min(body.length - this.#bodyFill, chunk.length - offset);
    body.set(chunk.subarray(offset, offset + take), this.#bodyFill);
    this.#bodyFill += take;
    if (this.#bodyFill < body.length) return offset + take;
    this.#body = undefined;
    this.#bodyFill = 0;
    onMessage(this.#parse(body, 0, body.length));
    return offset + take;
  }

  #checkLength(length: number): number {
    if (length > this.#maxFrameBytes) {
      throw this.#fail(
        'ERR_FRAME_TOO_LARGE',
        `The other side sent a frame declaring ${length} bytes, over the limit of ${this.#maxFrameBytes} bytes; ` +
          'the connection was closed without reading it. If such large messages are expected, raise maxFrameBytes on both ends.',
      );
    }
    if (length === 0) {
      throw this.#fail(
        'ERR_PROTOCOL',
        `The other side sent an empty frame; every frame must carry a JSON object. ${NOT_OUR_PROTOCOL}`,
      );
    }
    return length;
  }

  #parse(bytes: Buffer, start: number, stop: number): Message {
    // Buffer#toString replaces bad bytes with U+FFFD instead of failing, and is much faster
    // than TextDecoder on small payloads. Any invalid sequence therefore shows up as U+FFFD;
    // only then (or for a payload that really contains U+FFFD) is the strict decoder asked.
    let text = readUtf8(bytes, start, stop);
    if (text.indexOf('\uFFFD') !== -1) {
      try {
        text = this.#text.decode(bytes.subarray(start, stop));
      } catch (error) {
        throw this.#fail(
          'ERR_PROTOCOL',
          `The other side sent a frame that is not valid UTF-8. ${NOT_OUR_PROTOCOL}`,
          error,
        );
      }
    }
    let value: unknown;
    try {
      value = JSON.parse(text);
    } catch (error) {
      throw this.#fail(
        'ERR_PROTOCOL',
        `The other side sent a frame that is not valid JSON. ${NOT_OUR_PROTOCOL}`,
        error,
      );
    }
    if (!isPlainObject(value)) {
      const kind =
        value === null ? 'null' : Array.isArray(value) ? 'an array' : `a ${typeof value}`;
      throw this.#fail(
        'ERR_PROTOCOL',
        `The other side sent ${kind} where a JSON object was expected. ${NOT_OUR_PROTOCOL}`,
      );
    }
    return value;
  }

  #fail(
    code: 'ERR_PROTOCOL' | 'ERR_FRAME_TOO_LARGE',
    message: string,
    cause?: unknown,
  ): BridgekeeperError {
    this.#error = createError(code, message, cause === undefined ? {} : { cause });
    return this.#error;
  }
}
