import { describe, expect, it } from 'vitest';
import { BridgekeeperError } from '../../src/errors.js';
import { DEFAULT_MAX_FRAME_BYTES, encodeFrame, FrameDecoder } from '../../src/transport/framing.js';
import type { Message } from '../../src/transport/transport.js';

/** A frame around raw payload bytes, bypassing the encoder's checks. */
function rawFrame(payload: Buffer | string, declared?: number): Buffer {
  const body = typeof payload === 'string' ? Buffer.from(payload, 'utf8') : payload;
  const header = Buffer.alloc(4);
  header.writeUInt32BE(declared ?? body.length, 0);
  return Buffer.concat([header, body]);
}

function codeOf(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (error) {
    expect(error).toBeInstanceOf(BridgekeeperError);
    return (error as BridgekeeperError).code;
  }
  return undefined;
}

const samples: Message[] = [
  { jsonrpc: '2.0', id: 1, method: 'hello', params: { versions: [1] } },
  { text: 'ü€🔑 multi-byte', nested: { deep: [null, true, 1.5, 'x'] } },
  { a: 'x'.repeat(300) },
];

describe('encodeFrame', () => {
  it('writes a 4-byte big-endian length and the UTF-8 JSON', () => {
    const message = { text: 'é€' };
    const frame = encodeFrame(message);
    const json = JSON.stringify(message);
    expect(frame.readUInt32BE(0)).toBe(Buffer.byteLength(json));
    expect(frame.length).toBe(4 + Buffer.byteLength(json));
    expect(frame.subarray(4).toString('utf8')).toBe(json);
  });

  it('encodes large messages outside the shared slab too', () => {
    const message = { text: '€'.repeat(20_000) };
    const frame = encodeFrame(message);
    expect(frame.readUInt32BE(0)).toBe(frame.length - 4);
    expect(JSON.parse(frame.subarray(4).toString('utf8'))).toEqual(message);
  });

  it('gives consecutive frames their own bytes, as ordinary Buffers', () => {
    const first = encodeFrame({ n: 1 });
    const second = encodeFrame({ n: 2 });
    expect(Buffer.isBuffer(first)).toBe(true);
    expect(first.constructor).toBe(Buffer);
    expect(Object.getPrototypeOf(first.subarray(4))).toBe(Buffer.prototype);
    expect(Buffer.concat([first, second]).length).toBe(first.length + second.length);
    expect(JSON.parse(first.subarray(4).toString())).toEqual({ n: 1 });
    expect(JSON.parse(second.subarray(4).toString())).toEqual({ n: 2 });
  });

  it('refuses payloads over the limit with ERR_FRAME_TOO_LARGE, small and large', () => {
    expect(codeOf(() => encodeFrame({ text: 'x'.repeat(100) }, 50))).toBe('ERR_FRAME_TOO_LARGE');
    expect(codeOf(() => encodeFrame({ text: 'x'.repeat(DEFAULT_MAX_FRAME_BYTES) }))).toBe(
      'ERR_FRAME_TOO_LARGE',
    );
    const exact = JSON.stringify({ t: '' }).length;
    expect(encodeFrame({ t: 'x' }, exact + 1).length).toBe(4 + exact + 1);
  });

  it('refuses what is not serializable to a JSON object with ERR_INVALID_ARGUMENT', () => {
    expect(codeOf(() => encodeFrame({ n: 1n } as unknown as Message))).toBe('ERR_INVALID_ARGUMENT');
    expect(codeOf(() => encodeFrame([1, 2] as unknown as Message))).toBe('ERR_INVALID_ARGUMENT');
    expect(codeOf(() => encodeFrame({ toJSON: () => 'str' } as unknown as Message))).toBe(
      'ERR_INVALID_ARGUMENT',
    );
    expect(codeOf(() => encodeFrame({ toJSON: () => undefined } as unknown as Message))).toBe(
      'ERR_INVALID_ARGUMENT',
    );
  });
});

describe('FrameDecoder', () => {
  it('decodes a stream split at every possible byte', () => {
    const stream = Buffer.concat(samples.map((message) => encodeFrame(message)));
    for (let split = 0; split <= stream.length; split++) {
      const decoder = new FrameDecoder();
      const got = [
        ...decoder.push(stream.subarray(0, split)),
        ...decoder.push(stream.subarray(split)),
      ];
      expect(got, `split at ${split}`).toEqual(samples);
      expect(decoder.bufferedBytes).toBe(0);
    }
  });

  it('decodes a stream split at every pair of points (three chunks)', () => {
    const stream = Buffer.concat(samples.slice(0, 2).map((message) => encodeFrame(message)));
    for (let first = 0; first <= stream.length; first += 3) {
      for (let second = first; second <= stream.length; second += 5) {
        const decoder = new FrameDecoder();
        const got = [
          ...decoder.push(stream.subarray(0, first)),
          ...decoder.push(stream.subarray(first, second)),
          ...decoder.push(stream.subarray(second)),
        ];
        expect(got).toEqual(samples.slice(0, 2));
      }
    }
  });

  it('decodes a stream fed one byte at a time', () => {
    const stream = Buffer.concat(samples.map((message) => encodeFrame(message)));
    const decoder = new FrameDecoder();
    const got: Message[] = [];
    for (let index = 0; index < stream.length; index++) {
      got.push(...decoder.push(stream.subarray(index, index + 1)));
    }
    expect(got).toEqual(samples);
  });

  it('decodes many frames from one chunk, in order', () => {
    const messages = Array.from({ length: 500 }, (_, seq) => ({ seq, text: `m${seq}` }));
    const decoder = new FrameDecoder();
    expect(decoder.push(Buffer.concat(messages.map((message) => encodeFrame(message))))).toEqual(
      messages,
    );
  });

  it('reports progress through bufferedBytes', () => {
    const frame = encodeFrame({ text: 'hello' });
    const decoder = new FrameDecoder();
    expect(decoder.push(frame.subarray(0, 2))).toEqual([]);
    expect(decoder.bufferedBytes).toBe(2);
    expect(decoder.push(frame.subarray(2, 9))).toEqual([]);
    expect(decoder.bufferedBytes).toBe(9);
    expect(decoder.push(frame.subarray(9))).toEqual([{ text: 'hello' }]);
    expect(decoder.bufferedBytes).toBe(0);
  });

  it('rejects a declared 4 GiB frame from its header alone, without allocating it', () => {
    const decoder = new FrameDecoder();
    const before = process.memoryUsage().arrayBuffers;
    const header = Buffer.from([0xff, 0xff, 0xff, 0xff]);
    expect(decoder.push(header.subarray(0, 3))).toEqual([]);
    let caught: unknown;
    try {
      decoder.push(header.subarray(3));
    } catch (error) {
      caught = error;
    }
    expect((caught as BridgekeeperError).code).toBe('ERR_FRAME_TOO_LARGE');
    expect((caught as Error).message).toContain('4294967295');
    expect(decoder.bufferedBytes).toBe(0);
    expect(process.memoryUsage().arrayBuffers - before).toBeLessThan(1024 * 1024);
  });

  it('rejects an oversize header that arrives with payload bytes behind it', () => {
    const decoder = new FrameDecoder({ maxFrameBytes: 16 });
    const frame = rawFrame('{"a":"xxxxxxxxxxxxxxxx"}');
    expect(codeOf(() => decoder.push(frame))).toBe('ERR_FRAME_TOO_LARGE');
  });

  it('accepts exactly maxFrameBytes and rejects one more', () => {
    const exact = '{"a":"xxxx"}';
    const limit = Buffer.byteLength(exact);
    expect(new FrameDecoder({ maxFrameBytes: limit }).push(rawFrame(exact))).toEqual([
      { a: 'xxxx' },
    ]);
    const over = '{"a":"xxxxx"}';
    expect(codeOf(() => new FrameDecoder({ maxFrameBytes: limit }).push(rawFrame(over)))).toBe(
      'ERR_FRAME_TOO_LARGE',
    );
    // The default limit, at the boundary, split across chunks.
    const big = `{"a":"${'y'.repeat(DEFAULT_MAX_FRAME_BYTES - 8)}"}`;
    expect(Buffer.byteLength(big)).toBe(DEFAULT_MAX_FRAME_BYTES);
    const frame = rawFrame(big);
    const decoder = new FrameDecoder();
    expect(decoder.push(frame.subarray(0, 70_000))).toEqual([]);
    expect(decoder.push(frame.subarray(70_000))).toHaveLength(1);
    expect(codeOf(() => new FrameDecoder().push(rawFrame(`${big} `)))).toBe('ERR_FRAME_TOO_LARGE');
  });

  it('rejects a zero-length frame with ERR_PROTOCOL', () => {
    expect(codeOf(() => new FrameDecoder().push(Buffer.alloc(4)))).toBe('ERR_PROTOCOL');
  });

  it.each([
    ['a lone continuation byte', [0x7b, 0x22, 0x61, 0x22, 0x3a, 0x22, 0x80, 0x22, 0x7d]],
    ['an overlong encoding', [0x7b, 0x22, 0x61, 0x22, 0x3a, 0x22, 0xc0, 0xaf, 0x22, 0x7d]],
    ['an encoded surrogate', [0x7b, 0x22, 0x61, 0x22, 0x3a, 0x22, 0xed, 0xa0, 0x80, 0x22, 0x7d]],
    [
      'a code point over U+10FFFF',
      [0x7b, 0x22, 0x61, 0x22, 0x3a, 0x22, 0xf4, 0x90, 0x80, 0x80, 0x22, 0x7d],
    ],
    ['a truncated sequence', [0x7b, 0x22, 0x61, 0x22, 0x3a, 0x22, 0xe2, 0x82, 0x22, 0x7d]],
    ['byte 0xFF', [0x7b, 0x22, 0x61, 0x22, 0x3a, 0x22, 0xff, 0x22, 0x7d]],
  ])('rejects invalid UTF-8 (%s) with ERR_PROTOCOL', (_, bytes) => {
    expect(codeOf(() => new FrameDecoder().push(rawFrame(Buffer.from(bytes))))).toBe(
      'ERR_PROTOCOL',
    );
  });

  it('accepts a payload that really contains U+FFFD', () => {
    expect(new FrameDecoder().push(rawFrame('{"a":"\uFFFD"}'))).toEqual([{ a: '\uFFFD' }]);
  });

  it('rejects a byte-order mark', () => {
    expect(codeOf(() => new FrameDecoder().push(rawFrame('\uFEFF{"a":1}')))).toBe('ERR_PROTOCOL');
  });

  it.each([
    ['invalid JSON', '{"a":'],
    ['trailing garbage', '{"a":1} x'],
    ['an array', '[1,2]'],
    ['null', 'null'],
    ['a string', '"text"'],
    ['a number', '42'],
    ['a boolean', 'true'],
  ])('rejects %s with ERR_PROTOCOL', (_, payload) => {
    expect(codeOf(() => new FrameDecoder().push(rawFrame(payload)))).toBe('ERR_PROTOCOL');
  });

  it('is poisoned after an error: every later push throws the same error', () => {
    const decoder = new FrameDecoder();
    let first: unknown;
    try {
      decoder.push(rawFrame('[]'));
    } catch (error) {
      first = error;
    }
    expect((first as BridgekeeperError).code).toBe('ERR_PROTOCOL');
    expect(decoder.error).toBe(first);
    expect(() => decoder.push(encodeFrame({ fine: true }))).toThrow(first as Error);
    expect(() => decoder.push(Buffer.alloc(0))).toThrow(first as Error);
  });

  it('delivers the messages before a bad frame through decode(), then throws', () => {
    const decoder = new FrameDecoder();
    const got: Message[] = [];
    const stream = Buffer.concat([encodeFrame({ n: 1 }), encodeFrame({ n: 2 }), rawFrame('nope')]);
    expect(() => decoder.decode(stream, (message) => got.push(message))).toThrow(BridgekeeperError);
    expect(got).toEqual([{ n: 1 }, { n: 2 }]);
  });

  it('does not poison itself when the callback throws', () => {
    const decoder = new FrameDecoder();
    expect(() =>
      decoder.decode(encodeFrame({ n: 1 }), () => {
        throw new Error('listener bug');
      }),
    ).toThrow('listener bug');
    expect(decoder.error).toBeUndefined();
    expect(decoder.push(encodeFrame({ n: 2 }))).toEqual([{ n: 2 }]);
  });

  it('validates maxFrameBytes', () => {
    for (const bad of [0, -1, 1.5, 2 ** 32, Number.NaN]) {
      expect(codeOf(() => new FrameDecoder({ maxFrameBytes: bad }))).toBe('ERR_INVALID_ARGUMENT');
    }
    expect(new FrameDecoder({ maxFrameBytes: 2 ** 32 - 1 }).maxFrameBytes).toBe(2 ** 32 - 1);
    expect(new FrameDecoder().maxFrameBytes).toBe(DEFAULT_MAX_FRAME_BYTES);
  });

  it('keeps property names such as __proto__ as plain data', () => {
    const [message] = new FrameDecoder().push(rawFrame('{"__proto__":{"polluted":true}}'));
    expect(({} as { polluted?: boolean }).polluted).toBeUndefined();
    expect(Object.hasOwn(message!, '__proto__')).toBe(true);
  });
});
