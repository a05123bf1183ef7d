/**
 * Frame-level fuzzing material for test/adversarial/fuzz.test.ts: a reference decoder written
 * from docs/protocol.md §2 (independent of src/transport/framing.ts), generators of valid and
 * malformed frames, and a driver that feeds a stream to a decoder in arbitrary chunks and
 * records what it did.
 */

import fc from 'fast-check';

/** The two errors a frame decoder may throw (docs/protocol.md §2). */
export type FramingCode = 'ERR_PROTOCOL' | 'ERR_FRAME_TOO_LARGE';

export const DEFAULT_LIMIT = 1024 * 1024;
const UINT32_MAX = 0xffff_ffff;

const strictUtf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/** A frame around raw payload bytes, with an optional declared length that differs from it. */
export function frame(payload: Uint8Array, declared = payload.length): Uint8Array {
  const out = new Uint8Array(4 + payload.length);
  new DataView(out.buffer).setUint32(0, declared, false);
  out.set(payload, 4);
  return out;
}

export const utf8 = (text: string): Uint8Array => new TextEncoder().encode(text);

export function concat(parts: readonly Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((sum, part) => sum + part.length, 0));
  let offset = 0;
  for (const part of parts) {
    out.set(part, offset);
    offset += part.length;
  }
  return out;
}

/** What a correct decoder makes of a whole stream, per docs/protocol.md §2. */
export interface ReferenceOutcome {
  /** Each message, with the stream offset at which it is complete. */
  messages: { value: unknown; end: number }[];
  /** The first malformed frame: its code, and how many bytes of the stream reveal it. */
  error?: { code: FramingCode; at: number };
  /** Bytes of an unfinished frame left at the end (when there is no error). */
  leftover: number;
}

export function referenceDecode(stream: Uint8Array, limit: number): ReferenceOutcome {
  const view = new DataView(stream.buffer, stream.byteOffset, stream.byteLength);
  const messages: ReferenceOutcome['messages'] = [];
  let offset = 0;
  for (;;) {
    if (stream.length - offset < 4) return { messages, leftover: stream.length - offset };
    const length = view.getUint32(offset, false);
    if (length > limit)
      return { messages, leftover: 0, error: { code: 'ERR_FRAME_TOO_LARGE', at: offset + 4 } };
    if (length === 0)
      return { messages, leftover: 0, error: { code: 'ERR_PROTOCOL', at: offset + 4 } };
    if (stream.length - offset - 4 < length) return { messages, leftover: stream.length - offset };
    const end = offset + 4 + length;
    const protocolError = {
      messages,
      leftover: 0,
      error: { code: 'ERR_PROTOCOL' as const, at: end },
    };
    let value: unknown;
    try {
      value = JSON.parse(strictUtf8.decode(stream.subarray(offset + 4, end)));
    } catch {
      return protocolError;
    }
    if (typeof value !== 'object' || value === null || Array.isArray(value)) return protocolError;
    messages.push({ value, end });
    offset = end;
  }
}

/** A decoder under test: FrameDecoder's `decode` and `push` shapes. */
export interface DecoderUnderTest {
  decode(chunk: Buffer, onMessage: (message: unknown) => void): void;
  push(chunk: Buffer): unknown[];
  readonly bufferedBytes: number;
  readonly error: unknown;
}

/** What the decoder did with a stream fed in chunks. */
export interface Observed {
  /** Messages emitted, re-serialized, with the index of the chunk during which each came. */
  messages: { json: string; chunk: number }[];
  /** Each chunk's throw, if it threw (undefined when it did not). */
  thrown: unknown[];
}

/** Cuts `stream` at `cuts` (any numbers; taken modulo length + 1, sorted; repeats give empty chunks). */
export function chunksOf(stream: Uint8Array, cuts: readonly number[]): Buffer[] {
  const points = cuts.map((cut) => cut % (stream.length + 1)).sort((a, b) => a - b);
  const chunks: Buffer[] = [];
  let from = 0;
  for (const point of [...points, stream.length]) {
    chunks.push(Buffer.from(stream.subarray(from, point)));
    from = point;
  }
  return chunks;
}

/** Feeds every chunk (even after a throw, to check the decoder stays poisoned). */
export function feed(
  decoder: DecoderUnderTest,
  chunks: readonly Buffer[],
  mode: 'decode' | 'push',
): Observed {
  const observed: Observed = { messages: [], thrown: [] };
  chunks.forEach((chunk, index) => {
    try {
      if (mode === 'decode') {
        decoder.decode(chunk, (message) => {
          observed.messages.push({ json: JSON.stringify(message), chunk: index });
        });
      } else {
        for (const message of decoder.push(chunk)) {
          observed.messages.push({ json: JSON.stringify(message), chunk: index });
        }
      }
      observed.thrown.push(undefined);
    } catch (error) {
      observed.thrown.push(error ?? new Error('threw a nullish value'));
    }
  });
  return observed;
}

/** The chunk index holding stream byte `at - 1` (the chunk that completes `at` bytes). */
export function chunkCompleting(chunks: readonly Buffer[], at: number): number {
  let total = 0;
  for (const [index, chunk] of chunks.entries()) {
    total += chunk.length;
    if (total >= at && chunk.length > 0) return index;
  }
  return chunks.length - 1;
}

// ---------------------------------------------------------------------------------------------
// Generators

/** Object keys, including the ones prototype pollution uses. */
export const keyArb = fc.oneof(
  { weight: 4, arbitrary: fc.string({ maxLength: 6 }) },
  {
    weight: 1,
    arbitrary: fc.constantFrom(
      '__proto__',
      'constructor',
      'prototype',
      'toString',
      'jsonrpc',
      'id',
    ),
  },
);

/** Single characters that trip UTF-8 and JSON handling: U+FFFD itself, BOM, separators, astral. */
const trickyChar = fc.constantFrom(
  '\uFFFD',
  '\uFEFF',
  '\u2028',
  '\u0000',
  '\u007f',
  'é',
  '€',
  '😀',
  '"',
  '\\',
  '\ud800',
  '\udfff',
);

export const textArb = fc.string({
  maxLength: 24,
  unit: fc.oneof(trickyChar, fc.string({ unit: 'binary', minLength: 1, maxLength: 1 })),
});

/** An object whose keys are own properties even when named `__proto__` (as JSON.parse makes them). */
export function objectFrom(
  entries: readonly (readonly [string, unknown])[],
): Record<string, unknown> {
  const object: Record<string, unknown> = {};
  for (const [key, value] of entries) {
    Object.defineProperty(object, key, {
      value,
      enumerable: true,
      writable: true,
      configurable: true,
    });
  }
  return object;
}

const { json: jsonArb } = fc.letrec<{ json: unknown; object: Record<string, unknown> }>((tie) => ({
  json: fc.oneof(
    { depthSize: 'small', withCrossShrink: true },
    fc.constant(null),
    fc.boolean(),
    fc.integer(),
    fc.double({ noNaN: true, noDefaultInfinity: true }),
    textArb,
    fc.array(tie('json'), { maxLength: 4 }),
    tie('object'),
  ),
  object: fc
    .array(fc.tuple(keyArb, tie('json')), { maxLength: 4 })
    .map((entries) => objectFrom(entries)),
}));

/** Any JSON value (strings with tricky characters, objects with prototype-named keys). */
export const jsonValueArb = jsonArb;

/** JSON text of an object, possibly with whitespace around and inside it. */
export const objectTextArb = fc
  .tuple(
    fc.array(fc.tuple(keyArb, jsonArb), { maxLength: 5 }).map((entries) => objectFrom(entries)),
    fc.constantFrom(undefined, 0, 2, '\t'),
    fc.constantFrom('', ' ', '\n', '\r\n\t '),
  )
  .map(([object, indent, pad]) => `${pad}${JSON.stringify(object, null, indent)}${pad}`);

/** A payload that looks almost right but is not valid UTF-8 (or has a BOM, which JSON forbids). */
const badUtf8PayloadArb = fc
  .tuple(
    textArb,
    fc.constantFrom(
      [0x80], // lone continuation byte
      [0xc0, 0x80], // overlong NUL
      [0xe0, 0x80, 0x80], // overlong
      [0xed, 0xa0, 0x80], // UTF-16 surrogate encoded in UTF-8
      [0xf4, 0x90, 0x80, 0x80], // above U+10FFFF
      [0xff],
      [0xfe],
      [0xe2, 0x82], // truncated 3-byte sequence
      [0xf0, 0x9f, 0x94], // truncated 4-byte sequence
      [0xc3], // truncated 2-byte sequence
    ),
    textArb,
  )
  .map(([before, bad, after]) =>
    concat([
      utf8(`{"k":${JSON.stringify(before).slice(0, -1)}`),
      Uint8Array.from(bad),
      utf8(`${JSON.stringify(after).slice(1)}}`),
    ]),
  );

const bomPayloadArb = objectTextArb.map((text) =>
  concat([Uint8Array.from([0xef, 0xbb, 0xbf]), utf8(text)]),
);

/** Text that is not JSON at all, or not quite. */
const badJsonTextArb = fc.oneof(
  fc.constantFrom(
    '{',
    '}',
    '{"a":}',
    '{"a":1,}',
    "{'a':1}",
    '{"a":NaN}',
    '{"a":Infinity}',
    '{"a":1}x',
    '{"a":1}{"b":2}',
    '{"a":"\u0001"}',
    '{"a":01}',
    '{"a":.5}',
    '{"a":"\\x41"}',
    '{a:1}',
    ' ',
    '\u0000',
    '{"a":1}]',
    '[[[[{}',
  ),
  // A proper prefix of an object's compact JSON text: the closing brace is missing.
  fc
    .tuple(fc.array(fc.tuple(keyArb, jsonArb), { minLength: 1, maxLength: 3 }), fc.nat())
    .map(([entries, cut]) => {
      const text = JSON.stringify(objectFrom(entries));
      return text.slice(0, cut % text.length);
    })
    .filter((text) => text.length > 0 && text.trim().length > 0),
  objectTextArb.chain((text) =>
    fc.constantFrom('x', ',', '}', 'null', '{}').map((junk) => `${text}${junk}`),
  ),
);

/** JSON text whose top level is not an object (batches included). */
const nonObjectTextArb = fc.oneof(
  jsonArb
    .filter((value) => typeof value !== 'object' || value === null || Array.isArray(value))
    .map((value) => JSON.stringify(value)),
  fc.array(objectTextArb, { maxLength: 3 }).map((texts) => `[${texts.join(',')}]`), // a JSON-RPC batch
  fc.constantFrom('null', 'true', '0', '-1e400', '""', '"{}"', '[]'),
);

/** One piece of a stream, with what a correct decoder must make of it. */
export type Segment =
  | { kind: 'valid'; bytes: Uint8Array; json: string; why: string }
  | { kind: 'bad'; bytes: Uint8Array; code: FramingCode; detectAt: number; why: string };

/** A complete frame carrying `payload`, classified against `limit`. */
function payloadSegment(
  payload: Uint8Array,
  limit: number,
  intent: 'valid' | 'bad',
  why: string,
): Segment {
  const bytes = frame(payload);
  if (payload.length > limit)
    return {
      kind: 'bad',
      bytes,
      code: 'ERR_FRAME_TOO_LARGE',
      detectAt: 4,
      why: `${why}, over the limit`,
    };
  if (payload.length === 0)
    return { kind: 'bad', bytes, code: 'ERR_PROTOCOL', detectAt: 4, why: 'empty frame' };
  if (intent === 'bad')
    return { kind: 'bad', bytes, code: 'ERR_PROTOCOL', detectAt: bytes.length, why };
  const text = strictUtf8.decode(payload);
  return { kind: 'valid', bytes, json: JSON.stringify(JSON.parse(text)), why };
}

/** A frame of exactly `size` payload bytes holding a valid object (size ≥ 8). */
function paddedObject(size: number): Uint8Array {
  return utf8(`{"p":"${'x'.repeat(size - 8)}"}`);
}

/** Generators for segments, against a decoder with limit `limit`. */
export function segmentArb(limit: number): fc.Arbitrary<Segment> {
  const tooLargeDeclared = fc.oneof(
    fc.integer({ min: limit + 1, max: Math.min(UINT32_MAX, limit + 64) }),
    fc
      .constantFrom(0x7fff_ffff, 0x8000_0000, UINT32_MAX, 0x0100_0000, 0x0010_0001)
      .filter((n) => n > limit),
    fc.integer({ min: limit + 1, max: UINT32_MAX }),
  );
  const nearLimit =
    limit <= 64 * 1024
      ? [
          {
            weight: 2,
            arbitrary: fc
              .integer({ min: Math.max(8, limit - 2), max: Math.max(8, limit + 2) })
              .map((size) =>
                payloadSegment(
                  paddedObject(size),
                  limit,
                  'valid',
                  `padded object of ${size} bytes`,
                ),
              ),
          },
        ]
      : [];
  return fc.oneof(
    {
      weight: 8,
      arbitrary: objectTextArb.map((text) => payloadSegment(utf8(text), limit, 'valid', 'object')),
    },
    ...nearLimit,
    {
      weight: 1,
      arbitrary: fc.tuple(tooLargeDeclared, fc.uint8Array({ maxLength: 16 })).map(
        ([declared, tail]): Segment => ({
          kind: 'bad',
          bytes: concat([frame(new Uint8Array(0), declared), tail]),
          code: 'ERR_FRAME_TOO_LARGE',
          detectAt: 4,
          why: `declares ${declared} bytes`,
        }),
      ),
    },
    {
      weight: 1,
      arbitrary: fc.uint8Array({ maxLength: 8 }).map(
        (tail): Segment => ({
          kind: 'bad',
          bytes: concat([frame(new Uint8Array(0)), tail]),
          code: 'ERR_PROTOCOL',
          detectAt: 4,
          why: 'declares 0 bytes',
        }),
      ),
    },
    {
      weight: 1,
      arbitrary: badUtf8PayloadArb.map((payload) =>
        payloadSegment(payload, limit, 'bad', 'invalid UTF-8'),
      ),
    },
    {
      weight: 1,
      arbitrary: bomPayloadArb.map((payload) => payloadSegment(payload, limit, 'bad', 'UTF-8 BOM')),
    },
    {
      weight: 1,
      arbitrary: badJsonTextArb.map((text) =>
        payloadSegment(utf8(text), limit, 'bad', `not JSON: ${JSON.stringify(text.slice(0, 40))}`),
      ),
    },
    {
      weight: 1,
      arbitrary: nonObjectTextArb.map((text) =>
        payloadSegment(utf8(text), limit, 'bad', `not an object: ${text.slice(0, 40)}`),
      ),
    },
  );
}

/** Limits to decode against: tiny (so ordinary frames cross them), small, and the default. */
export const limitArb = fc.oneof(
  { weight: 3, arbitrary: fc.integer({ min: 1, max: 96 }) },
  { weight: 2, arbitrary: fc.integer({ min: 97, max: 4096 }) },
  { weight: 1, arbitrary: fc.constant(DEFAULT_LIMIT) },
);

/** Where to cut a stream into chunks (none: one chunk; many: down to single bytes). */
export const cutsArb = fc.oneof(
  fc.array(fc.nat(), { maxLength: 6 }),
  fc.array(fc.nat(), { minLength: 20, maxLength: 200 }),
);

/** Bytes with no structure promised: random bytes, plausible headers with small lengths, real frames. */
export function garbageStreamArb(limit: number): fc.Arbitrary<Uint8Array> {
  const piece = fc.oneof(
    { weight: 3, arbitrary: fc.uint8Array({ maxLength: 40 }) },
    {
      weight: 3,
      arbitrary: fc
        .tuple(
          fc.integer({ min: 0, max: Math.min(limit + 4, 80) }),
          fc.uint8Array({ maxLength: 80 }),
        )
        .map(([declared, bytes]) => concat([frame(new Uint8Array(0), declared), bytes])),
    },
    { weight: 3, arbitrary: objectTextArb.map((text) => frame(utf8(text))) },
    {
      weight: 1,
      arbitrary: fc
        .tuple(objectTextArb, fc.nat(), fc.integer({ min: 0, max: 255 }))
        .map(([text, at, byte]) => {
          // A real frame with one byte flipped: header, brace, quote or a multibyte sequence.
          const bytes = frame(utf8(text));
          bytes[at % bytes.length] = byte;
          return bytes;
        }),
    },
    { weight: 1, arbitrary: segmentArb(limit).map((segment) => segment.bytes) },
  );
  return fc.array(piece, { maxLength: 8 }).map(concat);
}
